"""CPU seconds of the per-case decoding batch (`answers.generate_greedy_each`) on a model's first cases.

    OMP_NUM_THREADS=1 python -m benchmarks.decode_batch --model smollm2-135m --n-cases 8 --out /tmp/answers.json

Each case's questions as an edited case asks them in the main table (`protocol.evaluate_case` with one_batch):
its multi-hop paraphrases under direct, CoT and CoT-OOD prompting, its efficacy clozes and paraphrased hops, here
of the unedited model. Prints one JSON line (questions, CPU seconds); `--out` keeps the generations, so two
checkouts' outputs can be compared byte for byte (`cmp`).
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import time

from ace_interp.data.mquake import load_mquake
from ace_interp.evaluation.answers import generate_greedy_each
from ace_interp.evaluation.protocol import askings_for, case_questions, default_cases
from ace_interp.model import load_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--n-cases", type=int, default=8)
    p.add_argument("--out", default=None, help="write the generations here (JSON)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    bridge = load_model(args.model)
    cases = load_mquake(default_cases(args.model))[: args.n_cases]
    askings = askings_for(bridge, ("direct", "cot", "cot-ood"))
    generations, cpu_seconds = [], 0.0
    for case in cases:
        questions = [q for group in case_questions(case, askings).values() for q in group]
        start = time.process_time()
        generations.append(generate_greedy_each(bridge, [q.prompt for q in questions],
                                                [q.max_new_tokens for q in questions],
                                                [q.stop_at_newline for q in questions]))
        cpu_seconds += time.process_time() - start
    if args.out:
        with open(args.out, "w") as f:
            json.dump(generations, f)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(json.dumps({"commit": commit, "model": args.model, "cases": len(cases),
                      "questions": sum(map(len, generations)), "cpu_seconds": round(cpu_seconds, 1)}))


if __name__ == "__main__":
    main()
