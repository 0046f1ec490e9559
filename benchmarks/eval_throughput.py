"""Throughput of the per-case MQuAKE evaluation: case-rows per minute, direct and chain-of-thought columns.

    python -m benchmarks.eval_throughput --model smollm2-135m --n-cases 2 --methods base pmet ace

One case-row = one case under one table row (method), with its direct and chain-of-thought answers. The
rate is given per wall-clock minute and per CPU minute of the process (OMP_NUM_THREADS=1: one thread), the
second being the one to compare on a machine shared with other jobs. The
workload is the main table's: the first `--n-cases` one-edit cases of the model's case file, every method
asked direct and with chain of thought. Run from a checkout of the code to measure; the same script runs on
the code before the per-case protocol asked both settings of one edit (it then calls `evaluate` once per
setting, as `main_table` did: a second edit per case and method), so the before/after numbers in
benchmarks/RESULTS.md come from this one script on one machine. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import time

import pandas as pd

from ace_interp.evaluation.protocol import default_cases
from ace_interp.data.mquake import load_mquake
from ace_interp.evaluation import protocol
from ace_interp.evaluation.hops import hop_prompts_for
from ace_interp.model import load_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--n-cases", type=int, default=2)
    p.add_argument("--methods", nargs="+", default=["base", "pmet", "ace"])
    p.add_argument("--per-case-out", default=None, help="write the per-case rows here (CSV), to compare two codes' verdicts")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    bridge = load_model(args.model)
    path = default_cases(args.model)
    cases = [c for c in load_mquake(path) if c.n_edits == 1][: args.n_cases]
    methods = [None if m == "base" else m for m in args.methods]
    hops = hop_prompts_for(bridge, path)
    start, cpu_start = time.perf_counter(), time.process_time()
    if hasattr(protocol, "askings_for"):  # one edit per case and method serves both settings
        askings = protocol.askings_for(bridge, ("direct", "cot"))
        per_case = protocol.evaluate(bridge, cases, methods, askings=askings, hop_prompts=hops, progress=False).per_case
        code = ("one edit asked direct and CoT" + (", each case's questions in one decoding batch"
                                                   if hasattr(protocol, "ask_together") else ""))
    else:  # the earlier protocol: one evaluate (and one edit per case and method) per setting
        style = protocol.style_for(args.model)
        direct = protocol.evaluate(bridge, cases, methods, style, hop_prompts=hops, progress=False).per_case
        cot = protocol.evaluate(bridge, cases, methods, style, cot=True, n_specificity=0, hop_prompts=hops,
                                progress=False).per_case
        per_case = pd.concat([direct, cot], ignore_index=True)
        code = "before: an edit per setting"
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    if args.per_case_out:
        per_case.to_csv(args.per_case_out, index=False)
    case_rows = len(cases) * len(methods)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(json.dumps({"code": code, "commit": commit, "model": args.model, "cases": len(cases), "methods": args.methods,
                      "case_rows": case_rows, "rows_written": len(per_case), "seconds": round(seconds, 1),
                      "case_rows_per_minute": round(60 * case_rows / seconds, 2), "cpu_seconds": round(cpu_seconds, 1),
                      "case_rows_per_cpu_minute": round(60 * case_rows / cpu_seconds, 2),
                      "load_average": os.getloadavg(), "threads": os.environ.get("OMP_NUM_THREADS")}))


if __name__ == "__main__":
    main()
