#!/usr/bin/env bash
# The one-shot GPU benchmark for a lent device:   bash benchmarks/gpu_check.sh [extra bench_gpu arguments]
#
# The device image has torch, transformers, einops, jaxtyping, pandas, accelerate, ... but no transformer_lens and
# no network, so the wheels that ace-interp needs on top are carried in .whl/ (ignored by git; how to fetch them:
# benchmarks/RESULTS.md, section GPU). This script
#   1. installs transformer_lens (always) and rich / psutil (only where the image lacks them) into $SITE,
#      and, where the image has no `datasets` (its pyarrow is too large to carry), writes a stand-in with the
#      three names transformer_lens imports at start-up (nothing in ace-interp's attribution or editing calls them);
#   2. prints the device and the versions;
#   3. runs `python -m benchmarks.bench_gpu` under a hard wall-clock limit ($GPU_CHECK_LIMIT_S, default 300 s from
#      the start of this script); no benchmark stage starts unless its estimate fits before the limit, and the
#      Markdown table is rewritten to $OUT/bench_gpu.md after every stage (log: $OUT/bench_gpu.log).
# Smoke test without a GPU: OUT=/tmp/out bash benchmarks/gpu_check.sh --dry-run   (CPU, tiny shapes, every stage)
# Writes $OUT/bench_gpu.md and $OUT/bench_gpu.json (seconds and peak memory per stage: attribution, covariance,
# PMET edits, one ACE edit).
set -uo pipefail
start=$(date +%s)
cd "$(dirname "$0")/.."
LIMIT=${GPU_CHECK_LIMIT_S:-300}
PY=${PYTHON:-python3}
SITE=${SITE:-/tmp/site}
OUT=${OUT:-$PWD/outputs/gpu}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

wheels=(.whl/transformer_lens-*.whl)
[ -e "${wheels[0]}" ] || { echo "gpu_check: no .whl/transformer_lens-*.whl (see benchmarks/RESULTS.md, GPU)" >&2; exit 2; }
if ! "$PY" -c "import rich" 2>/dev/null; then wheels+=(.whl/rich-*.whl .whl/markdown_it_py-*.whl .whl/mdurl-*.whl .whl/pygments-*.whl); fi
if ! "$PY" -c "import psutil" 2>/dev/null; then wheels+=(.whl/psutil-*.whl); fi
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${wheels[@]}" \
  || { echo "gpu_check: pip install of ${wheels[*]} failed" >&2; exit 3; }
export PYTHONPATH="$SITE:$PWD"
if ! "$PY" -c "import datasets" 2>/dev/null; then
  mkdir -p "$SITE/datasets"
  printf '%s\n' '"""Stand-in written by benchmarks/gpu_check.sh: this machine has no `datasets`. transformer_lens imports' \
    'these three names at start-up; ace-interp never calls them."""' \
    'from datasets.arrow_dataset import Dataset' 'from datasets.iterable_dataset import IterableDataset' \
    'from datasets.load import load_dataset' > "$SITE/datasets/__init__.py"
  echo 'class Dataset: pass' > "$SITE/datasets/arrow_dataset.py"
  echo 'class IterableDataset: pass' > "$SITE/datasets/iterable_dataset.py"
  printf '%s\n' 'def load_dataset(*args, **kwargs):' \
    '    raise ImportError("datasets is not installed on this machine (gpu_check.sh stand-in)")' > "$SITE/datasets/load.py"
  echo "gpu_check: no datasets on this machine; wrote the stand-in $SITE/datasets"
fi

echo "== device"; (command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv) || echo "no nvidia-smi"
"$PY" - <<'PY'
import sys, importlib.metadata as md, torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "| cuda", torch.version.cuda,
      "| device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
print("transformers", md.version("transformers"), "| transformer_lens", md.version("transformer-lens"))
import ace_interp, transformer_lens  # noqa: F401  -- fail here, not inside the benchmark
print("imports ok")
PY
[ $? -eq 0 ] || { echo "gpu_check: imports failed" >&2; exit 4; }

now=$(date +%s)
left=$((start + LIMIT - now))
echo "== bench_gpu ($left s left of $LIMIT s)"
timeout --signal=INT --kill-after=10 "$((left - 5))" "$PY" -m benchmarks.bench_gpu --deadline "$((start + LIMIT - 10))" \
  --out "$OUT/bench_gpu.md" "$@" 2>&1 | tee "$OUT/bench_gpu.log"
rc=${PIPESTATUS[0]}
echo "== done in $(( $(date +%s) - start )) s (exit $rc); table: $OUT/bench_gpu.md"
exit "$rc"
