"""cProfile of the per-case MQuAKE evaluation on the first cases of a model's case file (where the time goes).

    OMP_NUM_THREADS=1 python -m benchmarks.profile_eval --model smollm2-135m --n-cases 2 --methods base ft rome memit pmet ace

Every method row is asked direct and with chain of thought of the same edit (`protocol.askings_for`), as the main
table asks them. Prints the edit log (stage seconds per edit: contexts, targets, covariance, keys, solve, verify),
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
from ace_interp.evaluation.hops import hop_prompts_for
from ace_interp.evaluation.protocol import askings_for, default_cases, evaluate
from ace_interp.model import load_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--n-cases", type=int, default=2)
    p.add_argument("--methods", nargs="+", default=["base", "ft", "rome", "memit", "pmet", "ace"])
    p.add_argument("--top", type=int, default=45)
    p.add_argument("--out", default=None, help="write the raw cProfile data here")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("ace_interp.editing").setLevel(logging.INFO)  # one line per edit with its stage seconds
    bridge = load_model(args.model)
    path = default_cases(args.model)
    cases = load_mquake(path)[: args.n_cases]
    hops = hop_prompts_for(bridge, path)
    askings = askings_for(bridge, ("direct", "cot"))
    methods = [None if m == "base" else m for m in args.methods]
    profile = cProfile.Profile()
    start, cpu_start = time.perf_counter(), time.process_time()
    profile.enable()
    result = evaluate(bridge, cases, methods, askings=askings, hop_prompts=hops, progress=False)
    profile.disable()
    print(f"evaluate: {time.perf_counter() - start:.1f} s wall, {time.process_time() - cpu_start:.1f} s CPU; "
          f"load average {os.getloadavg()}")
    print(result.per_case[["method", "case_id", "prompting", "multi_hop", "efficacy", "edit_seconds"]].to_string())
    if args.out:
        profile.dump_stats(args.out)
    pstats.Stats(profile).sort_stats("cumulative").print_stats(args.top)


if __name__ == "__main__":
    main()
