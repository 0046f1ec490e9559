"""Sweep of the covariance weight λ (MEMIT's mom2_update_weight) on the synthetic-world toy models.

    OMP_NUM_THREADS=1 python -m experiments.sweep_toy_editing --model toy-gptj --rome-lambda \
        --lambdas default 100 20 5 1 0.1 0.01

(On a loaded 2-core machine OMP_NUM_THREADS=1 matters: with torch's default threads the same run was
~5x slower from oversubscription.) The target-value optimisation does not depend on λ, so it is memoised
across the swept λ (`cache_targets`).

For each method and λ: k=1 — each of the first n distinct-subject rewrites of
`assets/world/mquake_cases.json` edited on its own (then undone); k=n — all of them in one batch.
Efficacy = greedy top-1 of target_new on the cloze prompt (`evaluation.protocol.edit_efficacy`);
specificity = of up to 5 unrelated facts per edit of the edited relation (other subjects, not involving
the edited subject or its old/new object) that the unedited model answers, the fraction still answered
(the protocol's definition). λ = "default" runs `default_hparams` unchanged; ROME is exact (λ = 0) by
default, and `--rome-lambda` runs it with `exact=False` at the swept λ instead.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from dataclasses import replace

import pandas as pd

from ace_interp.editing import EditRequest, default_hparams, edit
from ace_interp.evaluation.protocol import SpecificityPool, _check, edit_efficacy, style_for
from ace_interp.model import load_model
from ace_interp.data.mquake import load_mquake
from benchmarks.bench_editing import case_file, rewrites_for
from experiments import RESULTS, save_run


def cache_targets() -> None:
    """λ only enters the solve: memoise the target-value optimisation (deterministic, on the unedited
    model) across the swept λ so each (method, requests) pair optimises its targets once."""
    import ace_interp.editing.ace as ace_mod
    import ace_interp.editing.memit as memit_mod
    import ace_interp.editing.pmet as pmet_mod
    import ace_interp.editing.rome as rome_mod

    memo: dict = {}

    def wrap(module, name):
        fn = getattr(module, name)

        def cached(bridge, requests, layer, hp, contexts=("",), *args, **kwargs):
            if args or kwargs.get("extra_prompts"):
                return fn(bridge, requests, layer, hp, contexts, *args, **kwargs)
            key = (module.__name__, name, tuple(r.describe() for r in requests), layer, repr(hp), tuple(contexts),
                   repr(sorted(kwargs.items())))
            if key not in memo:
                memo[key] = fn(bridge, requests, layer, hp, contexts, **kwargs)
            return memo[key]

        setattr(module, name, cached)

    wrap(rome_mod, "compute_targets")
    wrap(memit_mod, "compute_targets")
    wrap(pmet_mod, "compute_z_pmet")
    wrap(ace_mod, "compute_z_pmet")


def specificity_facts(pool: SpecificityPool, rw, n: int = 5, seed: int = 0) -> list[dict]:
    banned = {rw.subject.lower(), rw.target_new.text.lower(), rw.target_true.text.lower()}
    cands = [f for f in pool.facts.get(rw.relation_id, [])
             if f["subject"].lower() not in banned and not ({a.lower() for a in f["answers"]} & banned)]
    random.Random(seed).shuffle(cands)
    return cands[:n]


def hparams_for(method: str, bridge, lam):
    hp = default_hparams(method, bridge)
    if lam == "default":
        return hp
    if method == "rome":
        return replace(hp, exact=False, covariance=replace(hp.covariance, cov_weight=float(lam)))
    return replace(hp, covariance=replace(hp.covariance, cov_weight=float(lam)))


def rewrites_with_specificity(model: str, n: int):
    """(bridge, style, the first n distinct-subject rewrites, per rewrite its specificity facts that the
    unedited model answers)."""
    bridge = load_model(model)
    style = style_for(model)
    pool = SpecificityPool.from_cases(load_mquake(case_file(model)))
    rws = rewrites_for(model, n)
    spec = [specificity_facts(pool, rw) for rw in rws]
    todo = {f["cloze"]: f for s in spec for f in s}
    for f, ok in zip(todo.values(), _check(bridge, [f["cloze"] for f in todo.values()],
                                           [f["answers"] for f in todo.values()], style)):
        f["known"] = ok
    return bridge, style, rws, [[f for f in s if todo[f["cloze"]]["known"]] for s in spec]


def still_answered(bridge, style, facts) -> list[bool]:
    """Per fact, whether the (edited) model still gives one of its answers."""
    return _check(bridge, [f["cloze"] for f in facts], [f["answers"] for f in facts], style) if facts else []


def run(model: str, methods, lambdas, n: int) -> pd.DataFrame:
    bridge, style, rws, spec = rewrites_with_specificity(model, n)

    rows = []
    for method in methods:
        for lam in lambdas:
            if method == "rome" and lam != "default" and not RUN_ROME_LAMBDA:
                continue
            hp = hparams_for(method, bridge, lam)
            lam_used = 0.0 if (method == "rome" and hp.exact) else hp.covariance.cov_weight
            t = time.perf_counter()
            eff1, spec1 = [], []
            for rw, facts in zip(rws, spec) if not BATCH_ONLY else ():
                with edit(bridge, [EditRequest.from_rewrite(rw.to_dict())], method, hp):
                    eff1 += edit_efficacy(bridge, [rw], style)[0]
                    spec1 += still_answered(bridge, style, facts)
            with edit(bridge, [EditRequest.from_rewrite(rw.to_dict()) for rw in rws], method, hp):
                effk = edit_efficacy(bridge, rws, style)[0]
                batch_facts = [f for s in spec for f in s if f["subject"].lower() not in {r.subject.lower() for r in rws}]
                speck = still_answered(bridge, style, batch_facts)
            row = {"model": model, "method": method, "lambda": lam_used,
                   "eff k=1": sum(eff1) / max(1, len(eff1)), "spec k=1": sum(spec1) / max(1, len(spec1)),
                   f"eff k={n}": sum(effk) / len(effk), f"spec k={n}": sum(speck) / max(1, len(speck)),
                   "n spec": f"{len(spec1)}/{len(speck)}", "s": time.perf_counter() - t}
            print(row, flush=True)
            rows.append(row)
    return pd.DataFrame(rows)


RUN_ROME_LAMBDA = False
BATCH_ONLY = False

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", default=["toy-gptj", "toy-qwen3"])
    parser.add_argument("--methods", nargs="+", default=["rome", "memit", "pmet", "ace"])
    parser.add_argument("--lambdas", nargs="+", default=["default", "100", "20", "5", "1"])
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--rome-lambda", action="store_true")
    parser.add_argument("--batch-only", action="store_true", help="only the k=n batch (no k=1 edits)")
    parser.add_argument("--out", default=str(RESULTS / "sweep-toy-editing"))
    args = parser.parse_args()
    started = time.time()
    RUN_ROME_LAMBDA = args.rome_lambda
    BATCH_ONLY = args.batch_only
    cache_targets()
    frames = [run(m, args.methods, args.lambdas, args.n) for m in args.model]
    load = os.getloadavg()
    print(f"\nload average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(pd.concat(frames).to_markdown(index=False, floatfmt=".2f"))
    save_run(args.out, {"summary": pd.concat(frames)}, started, load_average=list(load))
