"""Where PMET's single edits on SmolLM2 miss: the optimised target against what the written model does.

    python -m benchmarks.smollm2_write_misses [--n 6] [--variants default "one layer through write" ...]
    python -m benchmarks.smollm2_write_misses --evaluate --n 12 --variants default "one layer through write"

Cases: the first `--n` one-edit cases of the filtered real-fact set (`assets/real_facts/smollm2_known.json`)
whose rewrite cloze the unedited model completes with the true answer. Per (variant, case) it prints p(new) at
the end of the target optimisation (`AppliedEdit.info["target_prob"]`, mean over context prefixes), p(new) after
the write on the bare rewrite prompt (every target token), and the greedy continuation. A write that realises
its target keeps the two probabilities close. With `--evaluate` it runs the evaluation protocol instead
(`ace_interp.evaluation.protocol.evaluate`: efficacy, paraphrase, specificity, multi-hop) per variant.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace

import pandas as pd
import torch

from ace_interp.cli import default_cases
from ace_interp.data.mquake import load_mquake
from ace_interp.editing import default_hparams, edit
from ace_interp.evaluation.answers import check_answers, generate_greedy, target_scores
from ace_interp.evaluation.protocol import case_requests, evaluate
from ace_interp.model import load_model


def _target(**fields):
    return lambda hp: replace(hp, target=replace(hp.target, **fields))


VARIANTS = {
    "default": lambda hp: hp,
    "cov_weight /10": lambda hp: replace(hp, covariance=replace(hp.covariance, cov_weight=hp.covariance.cov_weight / 10)),
    "ffn-only target": lambda hp: replace(hp, joint_attention=False),
    "bare prompt only": _target(n_context=0),
    "through write": _target(through_write=True),
    # one written layer, FFN-only, through the write, no contexts: the edited model must equal the optimisation
    "one layer through write": lambda hp: replace(
        hp, layers=(max(hp.layers),), joint_attention=False,
        target=replace(hp.target, through_write=True, n_context=0, clamp_norm_factor=4.0)),
}


def known_one_edit_cases(bridge, n: int):
    cases = [c for c in load_mquake(default_cases("smollm2-135m")) if c.n_edits == 1]
    rws = [c.requested_rewrite[0] for c in cases]
    known = check_answers(bridge, [rw.prompt_text() for rw in rws], [[rw.target_true.text] for rw in rws], 8)[0]
    return [c for c, k in zip(cases, known) if k][:n]


def _per_variant(variants, n: int):
    """(bridge, cases, variant name, PMET hparams) per variant, on one loaded model and one case list."""
    bridge = load_model("smollm2-135m", device="cpu")
    cases = known_one_edit_cases(bridge, n)
    for name in variants:
        yield bridge, cases, name, VARIANTS[name](default_hparams("pmet", bridge))


def run(variants, n: int = 6) -> pd.DataFrame:
    rows = []
    for bridge, cases, name, hp in _per_variant(variants, n):
        for case in cases:
            rw = case.requested_rewrite[0]
            prompt = rw.prompt_text()
            with edit(bridge, case_requests(case), "pmet", hp) as applied:
                after = float(target_scores(bridge, [prompt], [rw.target_new.text])["log_prob"][0])
                greedy = generate_greedy(bridge, [prompt], 6)[0]
            rows.append({"variant": name, "case": case.case_id, "rewrite": f"{prompt} -> {rw.target_new.text}",
                         "p(new) optimised": float(applied.info["target_prob"][0]), "p(new) written": float(torch.tensor(after).exp()),
                         "greedy": greedy, "hit": greedy.strip().lower().startswith(rw.target_new.text.lower())})
            logging.info("%s", rows[-1])
    frame = pd.DataFrame(rows)
    print(frame.to_markdown(index=False, floatfmt=".2f"))
    print(frame.groupby("variant", sort=False).hit.mean().to_markdown(floatfmt=".2f"))
    return frame


def evaluate_variants(variants, n: int = 12) -> pd.DataFrame:
    """Mean protocol metrics of PMET per variant over the same cases."""
    rows = []
    for bridge, cases, name, hp in _per_variant(variants, n):
        per_case = evaluate(bridge, cases, ["pmet"], hparams={"pmet": hp}, progress=False).per_case
        rows.append({"variant": name, "cases": len(per_case),
                     **per_case[["efficacy", "efficacy_prob", "paraphrase", "specificity", "multi_hop"]].mean().to_dict()})
        logging.info("%s", rows[-1])
    frame = pd.DataFrame(rows)
    print(frame.to_markdown(index=False, floatfmt=".2f"))
    return frame


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=6)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--evaluate", action="store_true", help="protocol metrics per variant instead")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    (evaluate_variants if args.evaluate else run)(args.variants, args.n)
