#!/usr/bin/env bash
# Train toy-model variants in parallel on one GPU (the device tool's machine), one process per variant, and
# pack the logs and metrics into $OUT/logs.tar, and with KEEP_MODELS=1 each run folder into $OUT/<name>.tar
# (the device tool returns at most 8 files).
#   bash experiments/gpu_toy_sweep.sh TIME_LIMIT_S VARIANTS_FILE     (one line per run: name, then train_toy arguments;
#                                                             experiments/sweeps/*.txt; world knobs are the defaults)
# The device image has torch and transformers but not transformer_lens: training needs neither the bridge nor
# ace_interp.model's package __init__, so the launcher registers bare package modules for `ace_interp` and
# `ace_interp.model` (paths only) before importing the training module.
set -u
LIMIT=${1:-290}
VARIANTS=${2:?a variants file, e.g. experiments/sweeps/sweep2.txt}
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
while read -r name args; do
  launch $name $args
done < <(grep -v '^\s*\(#\|$\)' "$VARIANTS")
wait
for d in $RUNS/*/; do n=$(basename $d); cp $RUNS/$n.log $d/train.log; done
# logs and metrics of every run in one tar; whole run folders (models) only with KEEP_MODELS=1 (7 runs at most)
(cd $RUNS && tar -cf $OUT/logs.tar */train.log */*.json)
if [ "${KEEP_MODELS:-0}" = 1 ]; then for d in $RUNS/*/; do n=$(basename $d); tar -C $RUNS -cf $OUT/$n.tar $n; done; fi
for f in $RUNS/*.log; do echo "== $f"; grep -E "final|meets bars|Error|error" $f | tail -3; done
