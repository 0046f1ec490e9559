"""The attribution findings of docs/attribution.md (layer order, top-1% vs random-1% value ablation) on any
named model, so that a second architecture is reported beside SmolLM2 from one command.

    python -m experiments.attribution_findings --model gemma3-270m   [--out results/findings-gemma3-270m]
    python -m experiments.attribution_findings --model smollm2-135m  [--seeds 0 1 2] [--dtype float32]
    python -m experiments.attribution_findings --table results/findings-smollm2-135m results/findings-gemma3-270m

The 12 facts are those of docs/attribution.md (6 capitals, 6 official languages). Per model it writes, under
`--out`: `baseline.csv` (greedy answer and log p per fact), `layer_scores.csv` (`rank_layers`), `ablation.csv`
(`value_ablation_experiment`, zero ablation of the top 1% of all FFN neurons by mean value score per relation
vs random 1% sets), `summary.json` (value / query layer order, accuracies with n and Wilson 95% intervals) and
`run.json`. Value scores use the frozen final norm (and, on Gemma-3, the frozen post-FFN norm: docs/scaling.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

from ace_interp.ablation import answer_log_probs, value_ablation_experiment
from ace_interp.attribution import rank_layers
from ace_interp.evaluation.stats import wilson_interval
from ace_interp.model import load_model
from ace_interp.provenance import write_run_json

log = logging.getLogger(__name__)

CAPITALS = [("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Japan", "Tokyo"),
            ("Egypt", "Cairo")]
LANGUAGES = [("France", "French"), ("Germany", "German"), ("Italy", "Italian"), ("Spain", "Spanish"),
             ("Japan", "Japanese"), ("Brazil", "Portuguese")]
SANITY = ("The Eiffel Tower is located in the country of", "France")


def facts() -> tuple[list[str], list[str], list[str]]:
    """The 12 prompts, answers (with a leading space) and relations of docs/attribution.md."""
    prompts = [f"The capital of {c} is" for c, _ in CAPITALS] + [f"The official language of {c} is" for c, _ in LANGUAGES]
    targets = [" " + a for _, a in CAPITALS] + [" " + a for _, a in LANGUAGES]
    return prompts, targets, ["capital"] * len(CAPITALS) + ["language"] * len(LANGUAGES)


def accuracy_with_interval(correct: int, n: int) -> dict:
    low, high = wilson_interval(correct, n)
    return {"correct": correct, "n": n, "accuracy": correct / n, "wilson95": [low, high]}


def comparison_table(folders: list[str | Path]) -> str:
    """Side-by-side Markdown of several runs' summary.json: layer order and the ablation per relation, with the
    exact McNemar p-value of top-1% against each random set where it follows from the counts (top leaves no
    prompt right, so every prompt the random set leaves right is a discordant pair: `sign_test(k, 0)`)."""
    from ace_interp.evaluation.stats import sign_test

    summaries = [json.loads((Path(f) / "summary.json").read_text()) for f in folders]
    rows = ["| | " + " | ".join(s["model"] for s in summaries) + " |", "|---|" + "---|" * len(summaries)]

    def row(label, cells):
        rows.append(f"| {label} | " + " | ".join(cells) + " |")

    row("layers × neurons, vocabulary", [f"{s['shape']['n_layers']} × {s['shape']['d_mlp']:,}, {s['shape']['d_vocab']:,}" for s in summaries])
    row("baseline greedy accuracy (12 facts)", [f"{s['baseline']['correct']}/{s['baseline']['n']} [{s['baseline']['wilson95'][0]:.2f}, {s['baseline']['wilson95'][1]:.2f}]" for s in summaries])
    row("value layers (top 5, all facts)", [str(s["value_layers"]) for s in summaries])
    row("query layers (top 5, all facts)", [str(s["query_layers"]) for s in summaries])
    row("neurons ablated (1%)", [str(s["ablation_neurons"]) for s in summaries])
    for relation in summaries[0]["ablation"]:
        for cond in ("baseline", "top", "random"):
            cells = []
            for s in summaries:
                entries = s["ablation"].get(relation, {}).get(cond, [])
                text = ", ".join(f"{e['correct']}/{e['n']} ({e['mean_log_prob']:.2f})" for e in entries)
                if cond == "random" and entries:
                    top = s["ablation"][relation]["top"][0]
                    if top["correct"] == 0:
                        text += "; p " + ", ".join(f"{sign_test(e['correct'], 0):.3f}" for e in entries)
                cells.append(text or "–")
            row(f"{relation}: {cond} — right/n (mean log p)", cells)
    return "\n".join(rows)


def run(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--out", default=None, help="default results/findings-<model>")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--fraction", type=float, default=0.01)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--table", nargs="+", default=None, metavar="FOLDER",
                        help="print the side-by-side table of finished runs' folders instead of running")
    args = parser.parse_args(argv)
    if args.table:
        print(comparison_table(args.table))
        return {}
    out = Path(args.out or f"results/findings-{args.model}")
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    bridge = load_model(args.model, device="cpu", dtype=getattr(torch, args.dtype))
    prompts, targets, relations = facts()
    sanity = answer_log_probs(bridge, SANITY[0], " " + SANITY[1])
    base = answer_log_probs(bridge, prompts, targets).assign(prompt=prompts, target=targets, relation=relations)
    base.to_csv(out / "baseline.csv", index=False)
    log.info("baseline: %d of %d correct; sanity %r -> %r", int(base.correct.sum()), len(base), SANITY[0],
             bridge.tokenizer.decode([int(sanity.predicted[0])]))
    t = time.perf_counter()
    ranking = rank_layers(bridge, prompts, targets, relations, top_k_layers=5)
    rank_s = time.perf_counter() - t
    ranking.layer_scores.to_csv(out / "layer_scores.csv", index=False)
    t = time.perf_counter()
    ablation = value_ablation_experiment(bridge, prompts, targets, relations, fraction=args.fraction, seeds=args.seeds)
    ablation_s = time.perf_counter() - t
    ablation.to_csv(out / "ablation.csv", index=False)
    per_relation = {}
    for relation, group in ablation.groupby("relation", sort=False):
        n = relations.count(relation)
        per_relation[relation] = {
            cond: [accuracy_with_interval(round(a * n), n) | {"seed": s, "mean_log_prob": lp}
                   for a, s, lp in zip(rows.accuracy, rows.seed, rows.mean_log_prob)]
            for cond, rows in group.groupby("condition", sort=False)
        }
    summary = {
        "model": args.model,
        "shape": {"n_layers": bridge.cfg.n_layers, "d_mlp": bridge.cfg.d_mlp, "d_model": bridge.cfg.d_model,
                  "d_vocab": bridge.cfg.d_vocab},
        "sanity": {"prompt": SANITY[0], "greedy": bridge.tokenizer.decode([int(sanity.predicted[0])])},
        "baseline": accuracy_with_interval(int(base.correct.sum()), len(base)),
        "value_layers": ranking.value_layers,
        "query_layers": ranking.query_layers,
        "by_relation": {r: {"value": ranking.layers("value", r), "query": ranking.layers("query", r)}
                        for r in ranking.relations},
        "ablation_neurons": int(ablation[ablation.condition == "top"].n_neurons.iloc[0]),
        "ablation": per_relation,
        "seconds": {"rank_layers": rank_s, "ablation": ablation_s},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    write_run_json(out, command=["python", "-m", "experiments.attribution_findings", *(argv or [])],
                   seeds=args.seeds, wall_s=time.perf_counter() - start,
                   hparams={"fraction": args.fraction, "dtype": args.dtype, "top_k_layers": 5})
    print(json.dumps(summary, indent=1, default=str))
    return summary


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    torch.set_num_threads(1)
    run(sys.argv[1:])
