"""The SmolLM2 main table's chain-of-thought rows, in- and out-of-distribution, added to its direct rows.

    python -m experiments.smollm2_cot [--table results/smollm2-table] [--out results/smollm2-cot]   (64 min on 2 cores)
                                     [--methods ace --earlier results/smollm2-cot/per_case.csv]

`ace main-table` runs chain of thought in the same command (base, PMET and ACE, once with demonstrations of the
evaluated relations and once with demonstrations from other relations: "CoT-OOD"). The SmolLM2 table was run with
`--no-cot` to fit the 2-core machine. This runs only those rows, on the same cases and seeds (`sample_by_edits`
with the table's `--per-edits 3 --seeds 0 1`), and writes OUT/per_case.csv and OUT/main_table.md: the table's
direct rows (TABLE/main_table_per_case.csv) with the chain-of-thought rows below them, ACE's advantage and
the one-edit cases by edited hop (`main_table.table_report`). `--methods` re-runs only some of base, PMET and ACE;
`--earlier` takes the other methods' chain-of-thought rows from an earlier run's per_case.csv (same cases and seeds).
"""

import argparse
import logging
import tempfile
import time
from pathlib import Path

import pandas as pd

from ace_interp.evaluation.main_table import TableConfig, evaluate_model, table_report
from experiments import save_run

ROOT = Path(__file__).resolve().parents[1]
CASES = ROOT / "assets" / "real_facts" / "smollm2_known.json"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", default=str(ROOT / "results" / "smollm2-table"))
    p.add_argument("--out", default=str(ROOT / "results" / "smollm2-cot"))
    p.add_argument("--methods", nargs="+", default=["base", "pmet", "ace"], choices=["base", "pmet", "ace"])
    p.add_argument("--earlier", default=None, metavar="CSV", help="chain-of-thought rows of the methods not re-run")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cot_methods = tuple(None if m == "base" else m for m in args.methods)
    started = time.time()
    cfg = TableConfig(models=("smollm2-135m",), methods=(), per_edits=3, ablations=(), ace_variants=(),
                      cot=True, seeds=(0, 1), cot_methods=cot_methods, out=Path(tempfile.mkdtemp()))
    cot = evaluate_model("smollm2-135m", CASES, cfg)
    if args.earlier:
        earlier = pd.read_csv(args.earlier)
        kept = ~earlier.method.str.split(" ").str[0].isin(args.methods)
        cot = pd.concat([cot, earlier[kept]], ignore_index=True)
    out = save_run(args.out, {"per_case": cot}, started, case_file=CASES, seeds=list(cfg.seeds),
                   table=args.table, earlier=args.earlier)
    direct = pd.read_csv(Path(args.table) / "main_table_per_case.csv")
    table = table_report(pd.concat([direct, cot], ignore_index=True), cfg.seeds)
    (out / "main_table.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
