"""Batched edits on SmolLM2 (k = 10, one batch): efficacy and specificity of target-optimisation variants.

    python -m experiments.smollm2_batch_sweep --methods pmet memit [--variants default "clamp 4"]

The 10 rewrites are the first distinct-subject rewrites of the filtered real-fact cases (as `make bench`); the
specificity facts are the unedited model's known facts of the same relations (`sweep_toy_editing`). Prints one
row per (method, variant): greedy efficacy, p(new) > p(true), specificity, seconds; `per_request.csv` splits each
request's outcome into its target optimisation (mean p(target) over the context prompts when it stopped, why it
stopped, ‖δ‖ and ‖δ‖ / ‖z₀‖ at the target site: the FFN output for PMET, the residual for MEMIT) and the write
(greedy and p(new) > p(true) after it), which tells a target that was never found from one the batch's write did
not realise.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import replace

import pandas as pd

from ace_interp.editing import EditRequest, default_hparams, edit
from ace_interp.evaluation.protocol import edit_efficacy
from experiments.sweep_toy_editing import rewrites_with_specificity, still_answered
from experiments import RESULTS, save_run

VARIANTS = {
    "default": lambda hp: hp,
    "steps x2": lambda hp: replace(hp, target=replace(hp.target, v_num_grad_steps=2 * hp.target.v_num_grad_steps)),
    "clamp 4": lambda hp: replace(hp, target=replace(hp.target, clamp_norm_factor=4.0)),
    "clamp 0.75": lambda hp: replace(hp, target=replace(hp.target, clamp_norm_factor=0.75)),
    "cov_weight /4": lambda hp: replace(hp, covariance=replace(hp.covariance, cov_weight=hp.covariance.cov_weight / 4)),
    # keys averaged over the context prefixes (the reference) instead of one solver row per context
    "averaged keys": lambda hp: replace(hp, covariance=replace(hp.covariance, context_keys="mean")),
    # ACE only: how much of the batch's edit its query group (written first) should carry
    "ace: no query write": lambda hp: replace(hp, query_weight=0.0),
    "ace: query weight 0.5": lambda hp: replace(hp, query_weight=0.5),
    # the release's shared z (the default before 2026-11-27) and the own query target written after the value group
    "ace: release (shared z)": lambda hp: replace(hp, variant="ace-paper"),
    "ace: own query target, value first": lambda hp: replace(hp, variant="attribution", rank_layers=False,
                                                              query_target="own", value_target_after_query=False),
}


def target_and_write(applied, top1, prob) -> list[dict]:
    """Per request of one write: how its target optimisation ended and whether the write realised it."""
    target = applied.info["target"]  # targets.TargetResult: PMET's written site is "mlp", MEMIT's "resid"
    site = "mlp" if "mlp" in target.deltas else "resid"
    norms = target.deltas[site].norm(dim=-1)
    ratios = norms / target.initial[site].norm(dim=-1)
    stops = target.stop_reasons  # one for the whole batch unless the target optimisation ran per request
    n = len(applied.requests)
    return [{"subject": request.subject, "target_new": request.target_new, "target_prob": float(target.target_prob[i]),
             "stop_reason": stops[i] if len(stops) == n else ";".join(stops), "delta_site": site,
             "delta_norm": float(norms[i]), "delta_ratio": float(ratios[i]), "greedy_after_write": bool(top1[i]),
             "new_beats_true_after_write": bool(prob[i])}
            for i, request in enumerate(applied.requests)]


def run(methods, variants, k: int = 10) -> tuple[pd.DataFrame, pd.DataFrame]:
    bridge, style, rws, spec = rewrites_with_specificity("smollm2-135m", k)
    subjects = {r.subject.lower() for r in rws}
    facts = [f for s in spec for f in s if f["subject"].lower() not in subjects]
    requests = [EditRequest.from_rewrite(rw.to_dict()) for rw in rws]
    rows, per_request = [], []
    for method in methods:
        for name in variants:
            hp = VARIANTS[name](default_hparams(method, bridge))
            start = time.perf_counter()
            with edit(bridge, requests, method, hp) as applied:
                top1, prob = edit_efficacy(bridge, rws, style)
                kept = still_answered(bridge, style, facts)
            per_request += [{"method": method, "variant": name, **r} for r in target_and_write(applied, top1, prob)]
            rows.append({"method": method, "variant": name, "efficacy": sum(top1) / k, "p(new)>p(true)": sum(prob) / k,
                         "specificity": sum(kept) / max(1, len(kept)), "n facts": len(kept),
                         "seconds": time.perf_counter() - start})
            print(rows[-1], flush=True)
    frame = pd.DataFrame(rows)
    print(frame.to_markdown(index=False, floatfmt=".2f"))
    return frame, pd.DataFrame(per_request)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["pmet", "memit"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--out", default=str(RESULTS / "smollm2-batch-sweep"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    started = time.time()
    summary, per_request = run(args.methods, args.variants, args.k)
    save_run(args.out, {"summary": summary, "per_request": per_request}, started, k=args.k, model="smollm2-135m",
             methods=args.methods, variants=args.variants)
