"""cProfile of the per-case MQuAKE evaluation on the first cases of a model's case file (where the time goes).

    OMP_NUM_THREADS=1 python -m benchmarks.profile_eval --model smollm2-135m --n-cases 2 --methods base ft rome memit pmet ace
    OMP_NUM_THREADS=1 python -m benchmarks.profile_eval --methods base ft --n-edits 1 --n-cases 3 --main-table

Every method row is asked direct and with chain of thought of the same edit (`protocol.askings_for`); with
`--main-table` as `ace main-table` asks them (direct, CoT and CoT-OOD, and the held-out perplexity). Prints the edit log (stage seconds per edit: contexts, targets, covariance, keys, solve, verify),
the per-case rows and the `--top` functions by cumulative time; `--out` keeps the raw profile for `pstats`.
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import os
import pstats
import time

from ace_interp.data.mquake import load_mquake
from ace_interp.evaluation.general_ability import heldout_texts
from ace_interp.evaluation.hops import hop_prompts_for
from ace_interp.evaluation.protocol import askings_for, default_cases, evaluate
from ace_interp.model import load_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--n-cases", type=int, default=2)
    p.add_argument("--methods", nargs="+", default=["base", "ft", "rome", "memit", "pmet", "ace"])
    p.add_argument("--n-edits", type=int, default=None, help="only cases with this many edits")
    p.add_argument("--main-table", action="store_true", help="the main table's askings and perplexity sample")
    p.add_argument("--top", type=int, default=45)
    p.add_argument("--out", default=None, help="write the raw cProfile data here")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("ace_interp.editing").setLevel(logging.INFO)  # one line per edit with its stage seconds
    bridge = load_model(args.model)
    path = default_cases(args.model)
    cases = [c for c in load_mquake(path) if args.n_edits in (None, c.n_edits)][: args.n_cases]
    hops = hop_prompts_for(bridge, path)
    askings = askings_for(bridge, ("direct", "cot", "cot-ood") if args.main_table else ("direct", "cot"))
    texts = heldout_texts(bridge) if args.main_table else None
    methods = [None if m == "base" else m for m in args.methods]
    profile = cProfile.Profile()
    start, cpu_start = time.perf_counter(), time.process_time()
    profile.enable()
    result = evaluate(bridge, cases, methods, askings=askings, hop_prompts=hops, progress=False,
                      perplexity_texts=texts)
    profile.disable()
    print(f"evaluate: {time.perf_counter() - start:.1f} s wall, {time.process_time() - cpu_start:.1f} s CPU; "
          f"load average {os.getloadavg()}")
    print(result.per_case[["method", "case_id", "prompting", "multi_hop", "efficacy", "edit_seconds"]].to_string())
    if args.out:
        profile.dump_stats(args.out)
    stats = pstats.Stats(profile)
    print("cumulative s of the item's parts (all cases and rows): " + "; ".join(
        f"{name} {seconds:.1f}" for name, seconds in part_seconds(stats).items()))
    stats.sort_stats("cumulative").print_stats(args.top)


PARTS = {  # (file suffix, function): a part of an evaluated item
    "unedited answers (once per run)": ("evaluation/protocol.py", "unedited_answers"),
    "edit": ("editing/__init__.py", "edit"),
    "asking, one decoding batch per case": ("evaluation/protocol.py", "ask_together"),
    "edit metrics": ("evaluation/protocol.py", "edit_metrics"),
    "perplexity (all calls)": ("model/likelihood.py", "perplexity"),
}


def part_seconds(stats: pstats.Stats) -> dict[str, float]:
    """Cumulative seconds of each of `PARTS` in a profile (0 where it was not called)."""
    totals = {}
    for name, (suffix, function) in PARTS.items():
        totals[name] = sum(cumulative for (file, _, func), (_, _, _, cumulative, _) in stats.stats.items()
                           if func == function and file.endswith(suffix))
    return totals


if __name__ == "__main__":
    main()
