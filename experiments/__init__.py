"""Research experiments: each writes a results folder (`results/NAME/`) with its tables and a `run.json`.

Timing benchmarks live apart, in `benchmarks/` (`make bench`). Every experiment here is run as
`python -m experiments.NAME ...` from the repository root; its docstring gives the command and run time.
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from ace_interp.provenance import write_run_json

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"


def save_run(out: str | Path, tables: Mapping[str, pd.DataFrame], started: float, **provenance) -> Path:
    """Write each table as `out/<name>.csv` and `out/run.json` (command, commit, `provenance` fields, wall time).

    >>> save_run("/tmp/demo-run", {"per_case": pd.DataFrame({"x": [1]})}, time.time(), seeds=[0])  # doctest: +SKIP
    PosixPath('/tmp/demo-run')
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        frame.to_csv(out / f"{name}.csv", index=False)
    write_run_json(out, wall_s=time.time() - started, **provenance)
    return out


def model_sweep_parser(doc: str, out_name: str) -> argparse.ArgumentParser:
    """The arguments every per-model sweep takes: model names or folders, `--cases`, `--out` (results/OUT_NAME)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="model names or folders (a folder named toy-* is asked as a toy)")
    p.add_argument("--cases", default=None,
                   help="MQuAKE-format cases to draw the prompts from (default: the model's, `evaluation.protocol.default_cases`), "
                        "e.g. the world written by `train_toy --write-world` for a toy trained on another world")
    p.add_argument("--out", default=str(RESULTS / out_name))
    return p
