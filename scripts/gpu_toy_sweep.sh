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
  PYTHONUNBUFFERED=1 python3 - "$@" --out $RUNS/$name --device cuda --no-progress --threads 1 --eval-every 200 \
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
launch gptj-500-base    --arch gptj  --n-persons 500  --steps 12000
launch gptj-1000-both   --arch gptj  --n-persons 1000 --distinct-nouns --bridge-relations --batch-size 256 --steps 8000
launch qwen3-1000-both  --arch qwen3 --n-persons 1000 --distinct-nouns --bridge-relations --batch-size 256 --steps 8000
launch gptj-1000-nouns  --arch gptj  --n-persons 1000 --distinct-nouns --batch-size 256 --steps 8000
launch gptj-2000-both   --arch gptj  --n-persons 2000 --distinct-nouns --bridge-relations --batch-size 256 --steps 8000
launch qwen3-2000-both  --arch qwen3 --n-persons 2000 --distinct-nouns --bridge-relations --batch-size 256 --steps 8000
launch gptj-500-both    --arch gptj  --n-persons 500  --distinct-nouns --bridge-relations --batch-size 256 --steps 8000
wait
for d in $RUNS/*/; do n=$(basename $d); cp $RUNS/$n.log $d/train.log; tar -C $RUNS -cf $OUT/$n.tar $n; done
for f in $RUNS/*.log; do echo "== $f"; grep -E "final|meets bars|Error|error" $f | tail -3; done
