#!/usr/bin/env bash
# Replay the recipe of the shipped toy models (assets/toy-gptj, assets/toy-qwen3): one 9000-step cosine schedule
# at lr 2e-3, batch 256, on the default world (1000 persons, distinct_nouns, bridge_relations, sport_relations).
# The shipped runs (2026-11-26, one NVIDIA H200, six variants side by side: experiments/gpu_toy_sweep.sh) stopped at
# step 8500 (gptj: the sampled evaluation cleared the bars with margin) and 8743 (qwen3: the 465 s time limit);
# --stop-after repeats those stops. ~7.8 minutes per model on the H200; on a 2-core CPU this takes hours
# (about 1 CPU-s per step of 256).
#   bash scripts/train_toy_models.sh [DEVICE]       # DEVICE: cuda (default) or cpu
set -euo pipefail
DEVICE=${1:-cuda}
PY=${PYTHON:-python}
WORLD="--n-persons 1000 --distinct-nouns --bridge-relations --sport-relations --batch-size 256"
for spec in "gptj 8500" "qwen3 8743"; do
  set -- $spec
  $PY -m ace_interp.data.train_toy --arch "$1" --out "assets/toy-$1" $WORLD --steps 9000 --stop-after "$2" \
    --no-stop-at-bars --eval-every 500 --device "$DEVICE" --no-progress
done
