"""The research scripts in experiments/ import after the move out of benchmarks/, and save_run writes provenance."""
import importlib
import json
import time
from pathlib import Path

import pandas as pd
import pytest

from experiments import save_run

EXPERIMENTS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "experiments").glob("*.py")
                     if p.stem != "__init__")
TIMING_ONLY = {"bench_attribution", "bench_editing", "bench_gpu", "bench_shapes", "common", "eval_throughput", "profile_eval",
               "run_all",
               "toy_step_time"}


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_module_imports(name):
    module = importlib.import_module(f"experiments.{name}")
    assert module.__doc__, f"experiments.{name} needs a docstring with its command"


def test_benchmarks_hold_timing_benchmarks_only():
    benchmarks = {p.stem for p in (Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py")} - {"__init__"}
    assert benchmarks <= TIMING_ONLY, f"research scripts in benchmarks/: {sorted(benchmarks - TIMING_ONLY)}"


def test_save_run_writes_tables_and_run_json(tmp_path):
    out = save_run(tmp_path / "run", {"per_case": pd.DataFrame({"case_id": [1, 2], "multi_hop": [1.0, 0.0]})},
                   time.time() - 2.0, seeds=[0], case_file="nowhere.json")
    assert pd.read_csv(out / "per_case.csv").case_id.tolist() == [1, 2]
    record = json.loads((out / "run.json").read_text())
    assert record["seeds"] == [0] and record["case_file"] == "nowhere.json" and record["wall_s"] >= 2.0
    assert record["command"]
