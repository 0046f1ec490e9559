"""Top-20 overlap of the two query-score definitions (attribution.query) on SmolLM2-135M; docs/query-scores.md.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python scripts/query_definition_overlap.py --out results/query-definitions

For each prompt: ours (`definition="inner_product"`: positive part of N̂(v)·K_j over the top-100 value neurons)
against Yu & Ananiadou's share (`definition="share"`: over the top-30), and the share formula over the same
top-100 (which separates the formula from the size of T). Writes overlap.csv and run.json.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import pandas as pd

from ace_interp.attribution import query_scores
from ace_interp.model import load_model
from ace_interp.provenance import write_run_json

log = logging.getLogger("query_definition_overlap")

DEMO_TWO_HOP = (
    "Q: What is the capital of the country where the Colosseum is located?\nA: Rome\n"
    "Q: What is the official language of the country whose capital is Berlin?\nA: German\n"
    "Q: What is the capital of the country where the Eiffel Tower is located?\nA:"
)
CASES = [
    ("The capital of France is", " Paris"),
    ("The Eiffel Tower is located in the country of", " France"),
    ("The official language of Spain is", " Spanish"),
    ("Tokyo is the capital of", " Japan"),
    (DEMO_TWO_HOP, " Paris"),
]
TOP = 20


def _top_set(scores, layers, k: int = TOP) -> set[tuple[int, int]]:
    from ace_interp.attribution import top_neurons_frame

    frame = top_neurons_frame(scores, layers, k)
    return set(zip(frame.layer.tolist(), frame.neuron.tolist()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--out", default="results/query-definitions")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    start = time.perf_counter()
    bridge = load_model(args.model, device="cpu")
    rows = []
    for prompt, target in CASES:
        ours = query_scores(bridge, prompt, target, definition="inner_product")
        theirs = query_scores(bridge, prompt, target, definition="share")
        a, b = _top_set(ours.scores()[0], ours.layers), _top_set(theirs.scores()[0], theirs.layers)
        same_t = _top_set(ours.share[0], ours.layers)
        rows.append({
            "prompt": prompt.splitlines()[-1], "target": target,
            "overlap_inner_product100_vs_share30": len(a & b),
            "overlap_inner_product100_vs_share100": len(a & same_t),
            "top_layer_inner_product": ours.top(1).layer.iloc[0], "top_layer_share": theirs.top(1).layer.iloc[0],
        })
        log.info("%s", rows[-1])
    frame = pd.DataFrame(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "overlap.csv", index=False)
    write_run_json(out, wall_s=time.perf_counter() - start, model=args.model, top=TOP)
    print(frame.to_markdown(index=False))


if __name__ == "__main__":
    main()
