"""How many writes the batched protocol makes: one per distinct set of masked edits in a batch (evaluation.batched).

    python -m benchmarks.batched_writes                       # the toy world's 500 cases, k = 100
    python -m benchmarks.batched_writes --cases assets/real_facts/smollm2_known.json

No model is loaded: the writes follow from the case file alone. Two settings side by side, same seed:
"plain" cuts the shuffled cases into batches and draws the unedited cases among all others (the protocol before
2026-12-07); "packed" keeps cases that rewrite one fact two ways in different batches and draws the unedited cases
among those whose path the batch leaves alone (`make_batches`, `unedited_cases`). A write costs one edit of the
batch's ~k·1.6 requests, so the count is the batched protocol's cost per method.
"""

from __future__ import annotations

import argparse
import random

from ace_interp.data.mquake import load_mquake
from ace_interp.evaluation.batched import batch_edits, make_batches, masked_groups, unedited_cases


def writes(cases, batch_size: int, seed: int, pack: bool) -> list[tuple[int, int]]:
    """(cases in the batch, writes) per batch."""
    out = []
    for b, batch in enumerate(make_batches(cases, batch_size, seed, pack=pack)):
        if pack:
            outside = unedited_cases(batch, cases, len(batch), f"{seed}-{b}")
        else:
            ids = {c.case_id for c in batch}
            others = [c for c in cases if c.case_id not in ids]
            outside = random.Random(f"{seed}-{b}").sample(others, min(len(batch), len(others)))
        asked = [(c, True) for c in batch] + [(c, False) for c in outside]
        out.append((len(batch), len(masked_groups(asked, batch_edits(batch)))))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default="assets/world/mquake_cases.json")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    cases = load_mquake(args.cases)
    print(f"{args.cases}: {len(cases)} cases, k = {args.batch_size}, seed {args.seed}")
    for pack in (False, True):
        per_batch = writes(cases, args.batch_size, args.seed, pack)
        print(f"{'packed' if pack else 'plain':>7}: {sum(w for _, w in per_batch):4d} writes per method "
              f"over {len(per_batch)} batches  (cases, writes) per batch: {per_batch}")


if __name__ == "__main__":
    main()
