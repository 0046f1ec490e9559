"""The attribution findings of docs/attribution.md (layer order, top-1% vs random-1% value ablation) on any
named model, so that a second architecture is reported beside SmolLM2 from one command.

    python -m experiments.attribution_findings --model gemma3-270m   [--out results/findings-gemma3-270m]
    python -m experiments.attribution_findings --model smollm2-135m  [--seeds 0 1 2] [--dtype float32]
    python -m experiments.attribution_findings --table results/findings-smollm2-135m results/findings-gemma3-270m

The 12 facts are those of docs/attribution.md (6 capitals, 6 official languages). Per model it writes, under
`--out`: `baseline.csv` (greedy answer and log p per fact), `layer_scores.csv` (`rank_layers`),
`ablation_per_prompt.csv` (`value_ablation_outcomes`: every fact under zero ablation of the top 1% of all FFN
neurons by mean value score of its relation, and under random 1% sets), `ablation.csv` (the same per relation),
`summary.json` (value / query layer order, accuracies with n and Wilson 95% intervals, paired tests of top
against random: exact McNemar on right/wrong, sign test on per-fact log p; peak memory) and `run.json`. Value scores use the frozen final norm (and, on Gemma-3, the frozen post-FFN norm: docs/scaling.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
from pathlib import Path

import torch

import pandas as pd

from ace_interp.ablation import answer_log_probs, value_ablation_experiment, value_ablation_outcomes
from ace_interp.attribution import rank_layers
from ace_interp.evaluation.stats import paired_test, sign_test, wilson_interval
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


def peak_rss_gib() -> float:
    """This process's peak resident memory so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def paired_comparisons(outcomes: pd.DataFrame) -> dict:
    """Top-1% against each random-1% set on the same facts, per relation and over all facts ("all"):
    right/wrong with the exact McNemar p-value and Newcombe's 95% interval of the accuracy difference
    (random − top), and a sign test on the per-fact log p of the answer (facts where top ablation leaves it
    lower than the random set does, against higher; against the mean over the random sets too)."""
    out = {}
    for relation in ["all", *dict.fromkeys(outcomes.relation)]:
        rows = outcomes if relation == "all" else outcomes[outcomes.relation == relation]
        top = rows[rows.condition == "top"].set_index("prompt").sort_index()
        randoms = rows[rows.condition == "random"]
        entries = []
        for seed, rnd in randoms.groupby("seed", sort=True):
            rnd = rnd.set_index("prompt").loc[top.index]
            test = paired_test(rnd.correct.tolist(), top.correct.tolist())
            lower, higher = int((top.log_prob < rnd.log_prob).sum()), int((top.log_prob > rnd.log_prob).sum())
            entries.append({"seed": int(seed), "n": test.n, "random_correct": int(rnd.correct.sum()),
                            "top_correct": int(top.correct.sum()), "only_random": test.only_a, "only_top": test.only_b,
                            "difference": test.difference, "difference95": [test.difference_low, test.difference_high],
                            "p_mcnemar": test.p_value, "log_p_top_lower": lower, "log_p_top_higher": higher,
                            "p_sign_log_p": sign_test(lower, higher)})
        mean_random = randoms.groupby("prompt").log_prob.mean().loc[top.index]
        lower, higher = int((top.log_prob < mean_random).sum()), int((top.log_prob > mean_random).sum())
        out[relation] = {"per_seed": entries, "mean_random_log_p": {
            "n": len(top), "log_p_top_lower": lower, "log_p_top_higher": higher, "p_sign": sign_test(lower, higher),
            "mean_log_p_top": float(top.log_prob.mean()), "mean_log_p_random": float(mean_random.mean())}}
    return out


def paired_from_counts(summary: dict) -> dict | None:
    """`paired_comparisons`' right/wrong part for a summary written before per-fact outcomes were kept: exact
    only when top ablation leaves no fact right, since then every fact a random set leaves right is a discordant
    pair and the paired table follows from the counts. None otherwise; the per-fact log p tests need the run."""
    ablation = summary["ablation"]
    if any(ablation[r]["top"][0]["correct"] for r in ablation):
        return None
    out = {}
    for relation in ["all", *ablation]:
        rels = list(ablation) if relation == "all" else [relation]
        n = sum(ablation[r]["top"][0]["n"] for r in rels)
        entries = []
        for i, seed_entry in enumerate(ablation[rels[0]]["random"]):
            right = sum(ablation[r]["random"][i]["correct"] for r in rels)
            test = paired_test([1] * right + [0] * (n - right), [0] * n)
            entries.append({"seed": int(seed_entry["seed"]), "n": n, "random_correct": right, "top_correct": 0,
                            "only_random": test.only_a, "only_top": test.only_b, "difference": test.difference,
                            "difference95": [test.difference_low, test.difference_high], "p_mcnemar": test.p_value})
        out[relation] = {"per_seed": entries, "from_counts": True}
    return out


def comparison_table(folders: list[str | Path]) -> str:
    """Side-by-side Markdown of several runs' summary.json: layer order, the ablation per relation, and the
    paired tests of top-1% against the random sets over all facts (`paired_comparisons`)."""
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
                cells.append(text or "–")
            row(f"{relation}: {cond} — right/n (mean log p)", cells)
    for relation in ["all", *summaries[0]["ablation"]]:
        cells = []
        for s in summaries:
            paired = (s.get("paired") or paired_from_counts(s) or {}).get(relation)
            cells.append("–" if paired is None else "; ".join(
                f"{e['random_correct']}→{e['top_correct']}/{e['n']}, diff {e['difference']:.2f} "
                f"[{e['difference95'][0]:.2f}, {e['difference95'][1]:.2f}], p {e['p_mcnemar']:.3g}" for e in paired["per_seed"])
                + (" (from counts)" if paired.get("from_counts") else ""))
        row(f"{relation}: random→top right/n, difference [95%], McNemar p (per seed)", cells)
        cells = []
        for s in summaries:
            paired = s.get("paired", {}).get(relation)
            m = None if paired is None else paired.get("mean_random_log_p")
            cells.append("–" if m is None else f"{m['log_p_top_lower']} lower, {m['log_p_top_higher']} higher of "
                         f"{m['n']} (mean {m['mean_log_p_top']:.2f} vs {m['mean_log_p_random']:.2f}), sign p {m['p_sign']:.3g}")
        row(f"{relation}: log p under top vs mean random, per fact", cells)
    return "\n".join(rows)


def run(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--out", default=None, help="default results/findings-<model>")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--fraction", type=float, default=0.01)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--memory-budget-mib", type=int, default=256,
                        help="bytes of one [rows × vocab] attribution block (and its temporaries), in MiB")
    parser.add_argument("--table", nargs="+", default=None, metavar="FOLDER",
                        help="print the side-by-side table of finished runs' folders instead of running")
    args = parser.parse_args(argv)
    if args.table:
        print(comparison_table(args.table))
        return {}
    out = Path(args.out or f"results/findings-{args.model}")
    out.mkdir(parents=True, exist_ok=True)
    budget = args.memory_budget_mib * 2**20
    start = time.perf_counter()
    bridge = load_model(args.model, device="cpu", dtype=getattr(torch, args.dtype))
    prompts, targets, relations = facts()
    sanity = answer_log_probs(bridge, SANITY[0], " " + SANITY[1])
    base = answer_log_probs(bridge, prompts, targets).assign(prompt=prompts, target=targets, relation=relations)
    base.to_csv(out / "baseline.csv", index=False)
    log.info("baseline: %d of %d correct; sanity %r -> %r", int(base.correct.sum()), len(base), SANITY[0],
             bridge.tokenizer.decode([int(sanity.predicted[0])]))
    t = time.perf_counter()
    ranking = rank_layers(bridge, prompts, targets, relations, top_k_layers=5, memory_budget=budget)
    rank_s = time.perf_counter() - t
    ranking.layer_scores.to_csv(out / "layer_scores.csv", index=False)
    peak_after_rank = peak_rss_gib()
    log.info("rank_layers: %.0f s, peak memory so far %.2f GiB", rank_s, peak_after_rank)
    t = time.perf_counter()
    outcomes = value_ablation_outcomes(bridge, prompts, targets, relations, fraction=args.fraction, seeds=args.seeds,
                                       memory_budget=budget)
    ablation_s = time.perf_counter() - t
    outcomes.to_csv(out / "ablation_per_prompt.csv", index=False)
    ablation = value_ablation_experiment(bridge, prompts, targets, relations, outcomes=outcomes)
    ablation.to_csv(out / "ablation.csv", index=False)
    log.info("ablation: %.0f s, peak memory so far %.2f GiB", ablation_s, peak_rss_gib())
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
        "paired": paired_comparisons(outcomes),
        "seconds": {"rank_layers": rank_s, "ablation": ablation_s},
        "peak_rss_gib": {"after_rank_layers": peak_after_rank, "end": peak_rss_gib()},
        "memory_budget_mib": args.memory_budget_mib,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    write_run_json(out, command=["python", "-m", "experiments.attribution_findings", *(argv or [])],
                   seeds=args.seeds, wall_s=time.perf_counter() - start,
                   hparams={"fraction": args.fraction, "dtype": args.dtype, "top_k_layers": 5,
                            "memory_budget_mib": args.memory_budget_mib})
    print(json.dumps(summary, indent=1, default=str))
    return summary


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    torch.set_num_threads(1)
    run(sys.argv[1:])
