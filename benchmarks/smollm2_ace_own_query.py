"""ACE on SmolLM2 with its query group written towards its own target, on the main table's cases.

    python -m benchmarks.smollm2_ace_own_query            (about 10 min on 2 cores)

The default ACE on SmolLM2 is `ace-paper` with one shared z: its query-group write (layers 3–9) is not seen by
the target optimisation at layer 20 and derails chained answers (docs/ace.md, "Chained edits"). Here the same
fixed groups run as the `attribution` variant with `query_target="own"` (z_q optimised at the last query layer,
subject KL included). The main table's evaluation (`evaluation.main_table.evaluate_model`, 3 cases per edit
count, seeds 0 and 1, no ablations or CoT) is run for ACE alone, with `default_hparams` patched for "ace" so the
code path is the table's own. Writes results/smollm2-ace-own/per_case.csv and prints the means.
"""

import logging
from dataclasses import replace
from pathlib import Path

import ace_interp.editing as editing
from ace_interp.evaluation.main_table import TableConfig, evaluate_model

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    default = editing.default_hparams

    def own_query_target(method, bridge, **overrides):
        hp = default(method, bridge, **overrides)
        return replace(hp, variant="attribution", rank_layers=False, query_target="own") if method == "ace" else hp

    editing.default_hparams = own_query_target  # `editing.edit` looks the defaults up here
    out = ROOT / "results" / "smollm2-ace-own"
    cfg = TableConfig(models=("smollm2-135m",), methods=("ace",), per_edits=3, ablations=(), cot=False, seeds=(0, 1),
                      out=Path("/tmp/smollm2-ace-own"))
    try:
        df = evaluate_model("smollm2-135m", ROOT / "assets" / "real_facts" / "smollm2_known.json", cfg)
    finally:
        editing.default_hparams = default
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "per_case.csv", index=False)
    print(df.groupby("method")[["multi_hop", "efficacy", "efficacy_prob", "paraphrase", "specificity"]].mean())
    print(df[df.efficacy < 1][["case_id", "seed", "efficacy", "efficacy_prob"]])


if __name__ == "__main__":
    main()
