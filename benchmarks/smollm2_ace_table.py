"""ACE alone on the SmolLM2 main table's cases, with hyper-parameters changed from the defaults.

    python -m benchmarks.smollm2_ace_table --ace FIELD=VALUE ... --out results/NAME     (10–15 min on 2 cores)

The main table's evaluation (`evaluation.main_table.evaluate_model`: 3 cases per edit count, seeds 0 and 1, no
ablations or chain of thought) is run for ACE only, with `default_hparams("ace", …)` overridden through
`TableConfig.hparams` (dotted names reach nested fields, `editing.override_hparams`). Writes
OUT/per_case.csv, prints the means and the rewrites that were not edited greedily, and, with `--against`, the
paired comparison with an earlier run's ACE rows on the same cases (e.g. results/smollm2-table/main_table_per_case.csv).

Runs recorded in docs/ace.md (the first two when the default was the release's shared z, `variant=ace-paper`):
    --ace variant=attribution rank_layers=False query_target=own value_target_after_query=False
        --out results/smollm2-ace-own
    --ace variant=ace-paper target.subject_kl_factor=0.0 --out results/smollm2-ace-no-subject-kl
    --ace variant=attribution rank_layers=False query_target=own --out results/smollm2-ace-own-query-first
        (the default since 2026-11-27)
"""

import argparse
import logging
import tempfile
from pathlib import Path

import pandas as pd

from ace_interp.editing import default_hparams, parse_overrides
from ace_interp.evaluation.main_table import TableConfig, evaluate_model, paired_comparison

ROOT = Path(__file__).resolve().parents[1]
CASES = ROOT / "assets" / "real_facts" / "smollm2_known.json"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ace", nargs="*", default=[], metavar="FIELD=VALUE", help="ACEHParams overrides")
    p.add_argument("--out", required=True)
    p.add_argument("--against", default=None, metavar="CSV", help="an earlier per-case CSV with ACE rows")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    overrides = parse_overrides(args.ace)

    def ace_hparams(method, bridge):
        return default_hparams("ace", bridge, **overrides) if method == "ace" else None

    out = Path(args.out)
    cfg = TableConfig(models=("smollm2-135m",), methods=("ace",), per_edits=3, ablations=(), cot=False, seeds=(0, 1),
                      out=Path(tempfile.mkdtemp()), hparams=ace_hparams)  # the table's own files are not kept
    df = evaluate_model("smollm2-135m", CASES, cfg)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "per_case.csv", index=False)
    columns = ["multi_hop", "efficacy", "efficacy_prob", "paraphrase", "specificity"]
    print(df.groupby("method")[columns].mean())
    print(df[df.efficacy < 1][["case_id", "seed", "efficacy", "efficacy_prob"]])
    if args.against:
        earlier = pd.read_csv(args.against)
        earlier = earlier[(earlier.method == "ace") & ~earlier.cot.astype(bool)]
        key = ["case_id", "seed"]
        both = pd.concat([df[df.method == "ace"], earlier.assign(method="ace (earlier)")], ignore_index=True)
        both = both[both.set_index(key).index.isin(df.set_index(key).index)]
        print(both.groupby("method")[columns].mean())
        print(paired_comparison(both, "ace", "ace (earlier)"))


if __name__ == "__main__":
    main()
