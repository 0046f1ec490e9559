#!/usr/bin/env bash
# Train toy-model variants in parallel on one GPU (the device tool's machine), one process per variant, and
# pack each run folder into $OUT/<name>.tar (the device tool returns at most 8 files).
#   bash scripts/gpu_toy_sweep.sh TIME_LIMIT_S
# The device image has torch and transformers but not transformer_lens: training needs neither the bridge nor
# ace_interp.model's package __init__, so the launcher registers bare package modules for `ace_interp` and
# `ace_interp.model` (paths only) before importing the training module.
set -u
LIMIT=${1:-290}
OUT=${OUT:-/tmp/out}
RUNS=/tmp/runs; mkdir -p $RUNS $OUT
launch() {  # name, then train_toy arguments
  local name=$1; shift
  PYTHONUNBUFFERED=1 ${PYTHON:-python3} - "$@" ${EXTRA:-} --out $RUNS/$name --device ${DEVICE:-cuda} --no-progress --threads 1 --eval-every ${EVAL_EVERY:-500} \
    --time-limit $LIMIT > $RUNS/$name.log 2>&1 <<'PY' &
import sys, types
for name, path in (("ace_interp", "ace_interp"), ("ace_interp.model", "ace_interp/model")):
    mod = types.ModuleType(name); mod.__path__ = [path]; sys.modules[name] = mod
from ace_interp.data.train_toy import main
sys.exit(main(sys.argv[1:]))
PY
}
nvidia-smi --query-gpu=name,memory.total --format=csv
python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__)"
# sweep 2 (2026-11-26): sports carry P30/P37/P38 (`--sport-relations`), so a person's sport has five
# continuations; one cosine schedule per run instead of the three stages of sweep 1.
W="--n-persons 1000 --distinct-nouns --bridge-relations --sport-relations --batch-size 256"
launch gptj-sport-12k   --arch gptj  $W --steps 12000
launch qwen3-sport-12k  --arch qwen3 $W --steps 12000
launch gptj-sport-9k    --arch gptj  $W --steps 9000
launch qwen3-sport-9k   --arch qwen3 $W --steps 9000
launch gptj-sport-8l    --arch gptj  $W --steps 9000 --n-layers 8
launch qwen3-sport-8l   --arch qwen3 $W --steps 9000 --n-layers 8
wait
for d in $RUNS/*/; do n=$(basename $d); cp $RUNS/$n.log $d/train.log; tar -C $RUNS -cf $OUT/$n.tar $n; done
for f in $RUNS/*.log; do echo "== $f"; grep -E "final|meets bars|Error|error" $f | tail -3; done
