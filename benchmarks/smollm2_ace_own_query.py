"""ACE on SmolLM2 with its query group written towards its own target, on the main table's cases.

    python -m benchmarks.smollm2_ace_own_query            (about 10 min on 2 cores)

ACE on SmolLM2 was `ace-paper` with one shared z, optimised once: its query-group write (layers 3–9) was not seen
by the target optimisation at layer 20 and derailed chained answers (docs/ace.md, "Chained edits"; the default
now re-optimises the value target after the query write, `value_target_after_query`). Here the same
fixed groups run as the `attribution` variant with `query_target="own"` (z_q optimised at the last query layer,
subject KL included). The main table's evaluation (`evaluation.main_table.evaluate_model`, 3 cases per edit
count, seeds 0 and 1, no ablations or CoT) is run for ACE alone, with these hyper-parameters given through
`TableConfig.hparams`. Writes results/smollm2-ace-own/per_case.csv and prints the means.
"""

import logging
from dataclasses import replace
from pathlib import Path

from ace_interp.editing import default_hparams
from ace_interp.evaluation.main_table import TableConfig, evaluate_model

ROOT = Path(__file__).resolve().parents[1]


def own_query_target(method, bridge):
    """ACE's default groups as the attribution variant with the query group's own target; others: defaults."""
    if method != "ace":
        return None
    return replace(default_hparams("ace", bridge), variant="attribution", rank_layers=False, query_target="own")


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    out = ROOT / "results" / "smollm2-ace-own"
    cfg = TableConfig(models=("smollm2-135m",), methods=("ace",), per_edits=3, ablations=(), cot=False, seeds=(0, 1),
                      out=Path("/tmp/smollm2-ace-own"), hparams=own_query_target)
    df = evaluate_model("smollm2-135m", ROOT / "assets" / "real_facts" / "smollm2_known.json", cfg)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "per_case.csv", index=False)
    print(df.groupby("method")[["multi_hop", "efficacy", "efficacy_prob", "paraphrase", "specificity"]].mean())
    print(df[df.efficacy < 1][["case_id", "seed", "efficacy", "efficacy_prob"]])


if __name__ == "__main__":
    main()
