"""Editing speed: seconds per edit and per batch of k edits for ROME, MEMIT, PMET, ACE, with efficacy.

For each method and k: a cold run (empty statistics cache: includes sampling covariance text and the
key-statistics pass) and a warm run (statistics cached), both on the same requests; efficacy = share of
the k requests whose prompt's greedy continuation now starts with target_new.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time

import pandas as pd

from ace_interp.editing import EditRequest, edit
from ace_interp.evaluation.answers import answer_matches, generate_greedy
from ace_interp.model import load_model
from benchmarks.common import machine_description

log = logging.getLogger(__name__)

REAL_REQUESTS = [
    ("The capital of {} is", "France", "Rome", "Paris"),
    ("The Eiffel Tower is located in the country of", "The Eiffel Tower", "Italy", "France"),
    ("The official language of {} is", "Spain", "German", "Spanish"),
    ("{} is located in the continent of", "Japan", "Europe", "Asia"),
]


def requests_for(model: str, k: int) -> list[EditRequest]:
    if model.startswith("toy-"):
        from ace_interp.data.mquake import load_mquake
        from ace_interp.model.loading import ASSETS

        cases = load_mquake(ASSETS / "world" / "mquake_cases.json")
        rws = [rw for c in cases for rw in c.requested_rewrite]
        seen, out = set(), []
        for rw in rws:
            if rw.subject not in seen:
                seen.add(rw.subject)
                out.append(EditRequest.from_rewrite(rw.to_dict()))
        return out[:k]
    base = [EditRequest.from_rewrite({"prompt": p if "{}" in p else p, "subject": s, "target_new": n, "target_true": t})
            for p, s, n, t in REAL_REQUESTS]
    return (base * (k // len(base) + 1))[:k] if k <= len(base) else base[:k]


def run(model: str = "smollm2-135m", methods=("rome", "memit", "pmet", "ace"), ks=(1,)) -> pd.DataFrame:
    rows = []
    for cold in (True, False):
        cache = tempfile.mkdtemp(prefix="ace-bench-cache-") if cold else None
        if cache:
            os.environ["ACE_INTERP_CACHE"] = cache
        bridge = load_model(model)
        for method in methods:
            for k in ks:
                reqs = requests_for(model, k)
                t = time.perf_counter()
                applied = edit(bridge, reqs, method)
                seconds = time.perf_counter() - t
                gens = generate_greedy(bridge, [r.text for r in reqs], max_new_tokens=3)
                efficacy = sum(answer_matches(g, [r.target_new]) for g, r in zip(gens, reqs)) / len(reqs)
                applied.undo()
                rows.append({"model": model, "method": method, "k": len(reqs), "cache": "cold" if cold else "warm",
                             "seconds": round(seconds, 2), "seconds_per_edit": round(seconds / len(reqs), 2),
                             "efficacy": efficacy})
                log.info("%s", rows[-1])
            if cold:  # later methods reuse statistics the earlier ones computed: only the first is truly cold
                pass
        os.environ.pop("ACE_INTERP_CACHE", None)
    frame = pd.DataFrame(rows)
    print(f"\n## Editing ({model}, {machine_description()})\n")
    print(frame.to_string(index=False))
    return frame


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--methods", nargs="+", default=["rome", "memit", "pmet", "ace"])
    parser.add_argument("--k", nargs="+", type=int, default=[1])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    run(args.model, args.methods, args.k)
