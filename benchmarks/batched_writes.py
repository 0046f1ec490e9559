"""How many writes the batched protocol makes: one per distinct set of masked edits in a batch (evaluation.batched).

    python -m benchmarks.batched_writes                       # the toy world's 500 cases, k = 100
    python -m benchmarks.batched_writes --cases assets/real_facts/smollm2_known.json

No model is loaded: the writes follow from the case file alone. Three settings side by side, same seed: "plain"
cuts the shuffled cases into batches and draws the unedited cases among all others (the protocol before
2026-12-07); the two packings (`make_batches`) keep apart cases that rewrite one fact two ways ("contradictions")
or also cases whose edit contaminates another's edited path ("contamination"), and draw the unedited cases among
those whose path the batch leaves alone (`unedited_cases`). A write costs one edit of its requests, so the
writes and the requests they hold are the batched protocol's cost per method.
"""

from __future__ import annotations

import argparse
import random

from ace_interp.data.mquake import load_mquake
from ace_interp.evaluation.batched import (
    PACKINGS,
    batch_edits,
    make_batches,
    masked_groups,
    unedited_cases,
    written_requests,
)


def writes(cases, batch_size: int, seed: int, packing: str) -> list[tuple[int, int, int]]:
    """(cases in the batch, writes, requests written) per batch."""
    out = []
    for b, batch in enumerate(make_batches(cases, batch_size, seed, packing)):
        if packing != "plain":
            outside = unedited_cases(batch, cases, len(batch), f"{seed}-{b}")
        else:
            ids = {c.case_id for c in batch}
            others = [c for c in cases if c.case_id not in ids]
            outside = random.Random(f"{seed}-{b}").sample(others, min(len(batch), len(others)))
        asked = [(c, True) for c in batch] + [(c, False) for c in outside]
        edits = batch_edits(batch)
        groups = masked_groups(asked, edits)
        out.append((len(batch), len(groups), sum(len(written_requests(edits, masked)) for masked in groups)))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default="assets/world/mquake_cases.json")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    cases = load_mquake(args.cases)
    print(f"{args.cases}: {len(cases)} cases, k = {args.batch_size}, seed {args.seed}")
    for packing in PACKINGS:
        per_batch = writes(cases, args.batch_size, args.seed, packing)
        print(f"{packing:>14}: {sum(w for _, w, _ in per_batch):4d} writes of {sum(r for _, _, r in per_batch):5d} "
              f"requests per method over {len(per_batch)} batches; (cases, writes, requests) per batch: {per_batch}")


if __name__ == "__main__":
    main()
