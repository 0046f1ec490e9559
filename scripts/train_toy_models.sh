#!/usr/bin/env bash
# Replay the recipe of the shipped toy models (assets/toy-gptj, assets/toy-qwen3): three stages, the later two
# continuing from the previous one with a fresh warm-up and cosine schedule. The shipped models were trained
# on one NVIDIA H200 (~10 minutes per model); on a 2-core CPU this takes hours (about 1 CPU-s per step of 256).
#   bash scripts/train_toy_models.sh [DEVICE]       # DEVICE: cuda (default) or cpu
# The world is `WorldConfig()` (1000 persons, distinct_nouns, bridge_relations); flags repeat it explicitly.
set -euo pipefail
DEVICE=${1:-cuda}
PY=${PYTHON:-python}
WORLD="--n-persons 1000 --distinct-nouns --bridge-relations --batch-size 256 --device $DEVICE --no-progress"
stage() {  # arch, out, stop-after, then extra flags
  local arch=$1 out=$2 stop=$3; shift 3
  $PY -m ace_interp.data.train_toy --arch "$arch" --out "$out" $WORLD --stop-after "$stop" --no-stop-at-bars "$@" || true
}
for spec in "gptj 6193 5618" "qwen3 6396 5379"; do
  set -- $spec
  arch=$1 s1=$2 s3=$3
  stage $arch /tmp/toy-stage1/$arch $s1 --steps 8000 --eval-every 200
  stage $arch /tmp/toy-stage2/$arch 4500 --steps 4500 --lr 1e-3 --warmup 50 --eval-every 250 --init-from /tmp/toy-stage1/$arch
  stage $arch assets/toy-$arch $s3 --steps 6000 --lr 7e-4 --warmup 50 --eval-every 250 --init-from /tmp/toy-stage2/$arch
done
