"""Does the next hop follow an edit of the question's own subject? ACE against PMET on SmolLM2.

    python -m experiments.smollm2_hop0 [--n 39] [--methods pmet ace] [--ace FIELD=VALUE ...] [--pmet FIELD=VALUE ...]
                                      [--hop 1]

(all 39 cases: 7–9 min per method on a quiet 2-core machine, 2026-11-27)

The cases are the one-edit cases of the filtered real-fact file (`assets/real_facts/smollm2_known.json`) whose
rewrite edits hop 0, the subject the multi-hop questions name. There the edited fact sits where the question puts
it, and whether the following hop uses the new answer is what ACE's query write is for: on the toy models ACE
answered 91% / 100% of such cases against PMET's 45% / 55% (README, main table). The main table samples only a
few of these per seed; this runs all of them once (seed 0 for the specificity facts).

`--hop 1` runs the 31 one-edit cases whose rewrite edits the bridge entity instead (ACE's implicit-subject write,
`--ace "implicit_layers=(…)"`, is meant for those).

Writes results/smollm2-hop{HOP}/per_case.csv, and prints per-method means, the paired comparison (cases only ACE
answers, cases only the baseline answers) and a two-sided sign-test p-value.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import pandas as pd

from ace_interp.cli import add_override_flags
from ace_interp.data.mquake import load_mquake
from ace_interp.editing import overridden_hparams
from ace_interp.evaluation.hops import hop_prompts_for
from ace_interp.evaluation.main_table import paired_comparison
from ace_interp.evaluation.protocol import edited_hop_indices, evaluate, style_for
from ace_interp.model import load_model
from experiments import save_run

ROOT = Path(__file__).resolve().parents[1]
CASES = ROOT / "assets" / "real_facts" / "smollm2_known.json"


def edited_hop_cases(path: Path = CASES, n: int | None = None, hop: int = 0):
    """One-edit cases whose rewrite edits hop `hop` (0: the questions' own subject), in file order."""
    cases = [c for c in load_mquake(path) if c.n_edits == 1 and edited_hop_indices(c) == [hop]]
    return cases[:n] if n else cases


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=None, help="the first N such cases (default: all)")
    p.add_argument("--methods", nargs="+", default=["pmet", "ace"])
    p.add_argument("--hop", type=int, default=0, help="the hop the rewrites edit (1: a bridge entity; 31 cases)")
    p.add_argument("--out", default=None, help="default results/smollm2-hop{HOP}")
    add_override_flags(p, ["pmet", "ace"])  # e.g. --pmet target.subject_kl_factor=0.5
    p.add_argument("--against", default=None, metavar="CSV",
                   help="compare ACE with the non-ACE methods of an earlier run's per_case.csv (same cases) instead "
                        "of re-running them, e.g. results/smollm2-hop0/per_case.csv with --methods ace")
    p.add_argument("--no-hop-prompts", action="store_true",
                   help="give ACE no hop prompts (a control for the attribution variant's own query target)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    started = time.time()
    bridge = load_model("smollm2-135m")
    cases = edited_hop_cases(n=args.n, hop=args.hop)
    hparams = overridden_hparams(bridge, {"ace": args.ace, "pmet": args.pmet}) or None
    # only ACE's attribution variant with its own query target uses the hop prompts (evaluation.hops)
    per_case = evaluate(bridge, cases, [None, *args.methods], style_for("smollm2-135m"), hparams=hparams,
                        hop_prompts=None if args.no_hop_prompts else hop_prompts_for(bridge, CASES), seed=0).per_case
    save_run(args.out or ROOT / "results" / f"smollm2-hop{args.hop}", {"per_case": per_case}, started,
             hparams={"ace": args.ace, "pmet": args.pmet}, case_file=CASES, seeds=[0], hop=args.hop)
    if args.against:
        earlier = pd.read_csv(args.against)
        earlier = earlier[~earlier.method.isin(per_case.method.unique()) & earlier.case_id.isin(per_case.case_id)]
        per_case = pd.concat([per_case, earlier.assign(method=earlier.method + " (earlier)")], ignore_index=True)
    columns = ["multi_hop", "efficacy", "efficacy_prob", "paraphrase", "specificity"]
    print(per_case.groupby("method", sort=False)[columns].mean().round(3).to_string())
    known = per_case[per_case.method == "base"].set_index("case_id").multi_hop > 0
    print(f"{int(known.sum())} of {len(known)} cases answered by the unedited model")
    others = [m for m in per_case.method.unique() if m not in ("ace", "base")]
    if "ace" in args.methods and others:
        baseline = others[0]
        print("all cases:", paired_comparison(per_case, "ace", baseline))
        print("cases the unedited model answers:", paired_comparison(per_case[per_case.case_id.map(known)], "ace", baseline))


if __name__ == "__main__":
    main()
