"""ACE alone on a main table's cases, with hyper-parameters changed from the defaults.

    python -m experiments.ace_table --ace FIELD=VALUE ... --out results/NAME [--model M] [--against CSV]

The main table's evaluation (`evaluation.main_table.evaluate_model`, no ablations or chain of thought) is run for
ACE only, with `default_hparams("ace", …)` overridden through `TableConfig.hparams` (dotted names reach nested
fields, `editing.override_hparams`), on the cases and seeds the table's command draws for that model: SmolLM2
3 cases per edit count, seeds 0 and 1 (10–15 min on 2 cores); the toys 10 per edit count, seeds 0–2 (2–5 min).
Writes OUT/per_case.csv, prints the means and the rewrites that were not edited greedily, and, with `--against`
(an earlier per-case CSV on the same cases: results/smollm2-table/main_table_per_case.csv, results/toy-table/toy-gptj/per_case.csv),
the paired comparisons with its ACE and PMET rows and the advantage over its PMET per seed.

Runs recorded in docs/ace.md (the first two when the SmolLM2 default was the release's shared z, `variant=ace-paper`):
    --ace variant=attribution rank_layers=False query_target=own value_target_after_query=False
        --out results/smollm2-ace-own
    --ace variant=ace-paper target.subject_kl_factor=0.0 --out results/smollm2-ace-no-subject-kl
    --ace variant=attribution rank_layers=False query_target=own --out results/smollm2-ace-own-query-first
        (the default since 2026-11-27)
    --model toy-gptj --ace "implicit_layers=(4,)" --against results/toy-table/toy-gptj/per_case.csv --out results/toy-gptj-ace-implicit
        (and the same for toy-qwen3: the implicit-subject write on the toy table's cases)
    --ace "implicit_layers=(18,19,20)" --out results/smollm2-ace-implicit-18-20 --add-to results/smollm2-table
        --label "ace +implicit"   (the row `ace main-table` now adds, put into the SmolLM2 table run before it had one)

`--add-to DIR --label NAME` puts the rows, as method NAME, into a table that `ace main-table` wrote to DIR (its
main_table_per_case.csv, replacing earlier rows of that name) and rebuilds DIR/main_table.md from the rows.
"""

import argparse
import logging
import tempfile
import time
from pathlib import Path

import pandas as pd

from ace_interp.cli import add_override_flags
from ace_interp.editing import default_hparams, parse_overrides
from ace_interp.evaluation.main_table import (
    METHODS,
    TableConfig,
    comparison_table,
    evaluate_model,
    paired_comparison,
    table_report,
)
from ace_interp.evaluation.protocol import is_toy_name
from ace_interp.model.loading import ASSETS
from experiments import save_run

# the main table's case files and sampling per model (README: the SmolLM2 and the toy tables' commands)
CASES = {"smollm2-135m": ASSETS / "real_facts" / "smollm2_known.json"}
TOY_CASES = ASSETS / "world" / "mquake_cases.json"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_override_flags(p, ["ace"])
    p.add_argument("--out", required=True)
    p.add_argument("--against", default=None, metavar="CSV", help="an earlier per-case CSV with ACE and PMET rows")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--add-to", default=None, metavar="DIR", help="a main table's folder to put the rows into")
    p.add_argument("--label", default=None, help="the rows' method name in --add-to's table, e.g. 'ace +implicit'")
    args = p.parse_args()
    toy = is_toy_name(args.model)
    logging.basicConfig(level=logging.WARNING)
    overrides = parse_overrides(args.ace)
    started = time.time()

    def ace_hparams(method, bridge):
        return default_hparams("ace", bridge, **overrides) if method == "ace" else None

    out = Path(args.out)
    cfg = TableConfig(models=(args.model,), methods=("ace",), per_edits=10 if toy else 3, ablations=(),
                      ace_variants=(), cot=False, seeds=(0, 1, 2) if toy else (0, 1), out=Path(tempfile.mkdtemp()),  # the table's files are not kept
                      hparams=ace_hparams)
    df = evaluate_model(args.model, TOY_CASES if toy else CASES[args.model], cfg)
    save_run(out, {"per_case": df}, started, hparams={"ace": overrides}, seeds=list(cfg.seeds),
             case_file=TOY_CASES if toy else CASES[args.model])
    columns = ["multi_hop", "efficacy", "efficacy_prob", "paraphrase", "specificity"]
    print(df.groupby("method")[columns].mean())
    print(df[df.efficacy < 1][["case_id", "seed", "efficacy", "efficacy_prob"]])
    if args.against:
        earlier = pd.read_csv(args.against)
        earlier = earlier[earlier.method.isin(["ace", "pmet"]) & ~earlier.cot.astype(bool)]
        key = ["case_id", "seed"]
        both = pd.concat([df.assign(method="ace (now)"), earlier], ignore_index=True)
        both = both[both.set_index(key).index.isin(df.set_index(key).index)]
        print(both.groupby("method")[columns].mean())
        for baseline in ("ace", "pmet"):
            print(paired_comparison(both, "ace (now)", baseline))
        print(comparison_table(both.assign(model=args.model), baseline="pmet"))
    if args.add_to:
        if not args.label or args.label in METHODS:
            p.error("--add-to needs a --label that names none of the table's methods")
        table = Path(args.add_to) / "main_table_per_case.csv"
        rows = pd.read_csv(table)
        rows = pd.concat([rows[rows.method != args.label], df.assign(method=args.label)], ignore_index=True)
        rows.to_csv(table, index=False)
        (table.parent / "main_table.md").write_text(table_report(rows, sorted(int(s) for s in rows.seed.unique())) + "\n")
        print(f"{len(df)} rows put into {table} as {args.label!r}")


if __name__ == "__main__":
    main()
