"""Regenerate every analysis figure for one model and one MQuAKE-format case file.

`make_figures(bridge, cases, out)` (CLI: `ace figures --model toy-gptj --out figures`) writes, under
`out/<model>/`:

  heatmap_value_layers   value-layer score per relation (knowledge types live in consistent layers)
  heatmap_query_layers   query-layer score per relation
  heatmap_attention      attention-layer log-prob increase I(A^l) per relation
  heatmap_ffn            whole-FFN log-prob increase I(F^l) per relation
  pathway_curves         mean query vs value activation per layer over multi-hop questions, with the lag
  lag_histogram          distribution of value-peak − query-peak over the multi-hop questions
  ablation_top_vs_random accuracy drop when zeroing the top 1% value neurons vs random 1% (per relation)
  query_knockout         activated value neurons per later layer, before vs after knocking out the
                         top query neurons of the top query layer (2-hop questions)

plus the numbers behind each figure as CSV and a `summary.json`. Prompts come from the cases: single-hop
cloze prompts (`single_hops[i].cloze` → answer, labelled by relation id) and multi-hop questions (asked
as the prompt style does), so it runs on the synthetic world, the curated real facts, or any MQuAKE file.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from transformer_lens.model_bridge import TransformerBridge

from ace_interp import plotting
from ace_interp.ablation import ablate_neurons, query_knockout_experiment, value_ablation_experiment
from ace_interp.analysis.pathways import curves_from_table
from ace_interp.attribution.layers import rank_layers
from ace_interp.attribution.value import component_scores, value_neurons_above
from ace_interp.data.mquake import MQuAKECase
from ace_interp.model import neuron_activations

log = logging.getLogger(__name__)


@dataclass
class FigureConfig:
    per_relation: int = 12  # single-hop prompts per relation
    n_multi_hop: int = 40  # multi-hop questions for the pathway curves and knockout
    ablation_fraction: float = 0.01
    seeds: tuple[int, ...] = (0, 1, 2)
    knockout_neurons: int = 20
    threshold: float = 0.1  # a value neuron is "activated" when its value score exceeds this (nats)
    png: bool = True

    @classmethod
    def quick(cls) -> "FigureConfig":
        return cls(per_relation=3, n_multi_hop=4, seeds=(0,), knockout_neurons=5, png=False)


def single_hop_prompts(cases: Sequence[MQuAKECase], per_relation: int, n_relations: int | None = None) -> pd.DataFrame:
    """Unique cloze prompts of the cases' original chains: prompt, target (" answer"), relation; at most
    `per_relation` per relation, and with `n_relations` only the relations with the most prompts."""
    rows, seen = [], set()
    for case in cases:
        for hop, triple in zip(case.single_hops, case.orig.triples):
            if hop.cloze not in seen:
                seen.add(hop.cloze)
                rows.append({"prompt": hop.cloze, "target": " " + hop.answer.strip(), "relation": triple[1]})
    frame = pd.DataFrame(rows)
    frame = frame.groupby("relation", sort=True).head(per_relation).reset_index(drop=True)
    if n_relations is not None:
        frame = frame[frame.relation.isin(frame.relation.value_counts().index[:n_relations])]
    return frame


def multi_hop_prompts(cases: Sequence[MQuAKECase], n: int, ask=None) -> pd.DataFrame:
    """The first question of up to n cases (as `ask(case)` phrases it, default the question itself):
    prompt, target (" answer"), relation (the chain's relation path), n_hops."""
    rows = []
    for case in cases[:n]:
        prompt = ask(case) if ask else case.questions[0]
        rows.append({"prompt": prompt, "target": " " + case.answer.strip(),
                     "relation": ">".join(case.relation_ids), "n_hops": case.n_hops})
    return pd.DataFrame(rows)


def activated_value_neurons_by_layer(
    bridge: TransformerBridge, prompts: Sequence[str], targets: Sequence[str], layers: Sequence[int], threshold: float
) -> pd.Series:
    """Mean number of value neurons per layer whose score exceeds `threshold` (honours active hooks)."""
    acts = neuron_activations(bridge, list(prompts), -1, list(layers))
    table = value_neurons_above(bridge, list(prompts), list(targets), threshold, -1, list(layers), activations=acts)
    counts = table.groupby("layer").size().reindex(list(layers), fill_value=0)
    return counts / len(prompts)


def make_figures(
    bridge: TransformerBridge,
    cases: Sequence[MQuAKECase],
    out: str | Path,
    config: FigureConfig | None = None,
    ask_multi_hop=None,
) -> dict:
    """Compute every analysis on `cases` and write figures + CSVs under `out`; returns the summary."""
    config = config or FigureConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"n_layers": bridge.cfg.n_layers}

    def save(fig, name):
        plotting.save_figure(fig, out, name, png=config.png)

    # 1. knowledge types → layers
    single = single_hop_prompts(cases, config.per_relation)
    log.info("ranking layers over %d single-hop prompts (%d relations)", len(single), single.relation.nunique())
    ranking = rank_layers(bridge, single.prompt.tolist(), single.target.tolist(), single.relation.tolist(),
                          top_k_layers=bridge.cfg.n_layers)
    scores = ranking.layer_scores[ranking.layer_scores.relation != "all"]
    scores.to_csv(out / "layer_scores.csv", index=False)
    for kind in ("value", "query"):
        save(plotting.layer_heatmap(scores[scores.kind == kind], title=f"{kind}-neuron score by layer and relation"),
             f"heatmap_{kind}_layers")
    summary["top_value_layer_by_relation"] = {
        r: ranking.layers("value", r, 1)[0] for r in ranking.relations if ranking.layers("value", r, 1)
    }
    comp = component_scores(bridge, single.prompt.tolist(), single.target.tolist())
    comp_frame = pd.concat([
        pd.DataFrame({"relation": single.relation.repeat(len(comp.layers)).to_numpy(),
                      "layer": comp.layers * len(single), "score": getattr(comp, part).reshape(-1).tolist(),
                      "component": part})
        for part in ("attention", "ffn")
    ])
    comp_frame.to_csv(out / "component_scores.csv", index=False)
    save(plotting.layer_heatmap(comp_frame[comp_frame.component == "attention"], title="attention-layer I(A^l) by relation"), "heatmap_attention")
    save(plotting.layer_heatmap(comp_frame[comp_frame.component == "ffn"], title="FFN-layer I(F^l) by relation"), "heatmap_ffn")

    # 2. query → value pathways on multi-hop questions
    multi = multi_hop_prompts(cases, config.n_multi_hop, ask_multi_hop)
    multi_ranking = rank_layers(bridge, multi.prompt.tolist(), multi.target.tolist(), multi.relation.tolist(),
                                top_k_layers=bridge.cfg.n_layers)
    curves = curves_from_table(multi_ranking.table, bridge.cfg.n_layers)
    curves.curves.to_csv(out / "pathway_curves.csv", index=False)
    curves.lags.to_csv(out / "pathway_lags.csv", index=False)
    mean_lag = float(curves.lags.peak_lag.mean())
    save(plotting.query_value_curves(curves.mean_curves(), title="query vs value neurons on multi-hop questions"), "pathway_curves")
    save(plotting.lag_histogram(curves.lags.peak_lag, title=f"value peak − query peak (mean {mean_lag:.2f} layers)"), "lag_histogram")
    summary["mean_peak_lag"] = mean_lag
    summary["mean_centre_lag"] = float(curves.lags.centre_lag.mean())
    summary["top_query_layers_multi_hop"] = multi_ranking.query_layers[:3]
    summary["top_value_layers_multi_hop"] = multi_ranking.value_layers[:3]

    # 3. ablation: top 1% value neurons vs random 1%
    abl = value_ablation_experiment(bridge, single.prompt.tolist(), single.target.tolist(), single.relation.tolist(),
                                    fraction=config.ablation_fraction, seeds=config.seeds)
    abl.to_csv(out / "ablation.csv", index=False)
    bars = (abl[abl.condition != "baseline"].groupby(["relation", "condition"])["accuracy_drop"]
            .agg(["mean", "std"]).reset_index()
            .rename(columns={"relation": "group", "mean": "drop", "std": "drop_std"}))
    bars["condition"] = bars["condition"].map({"top": "top 1% value", "random": "random 1%"})
    bars["drop_std"] = bars["drop_std"].fillna(0.0)
    save(plotting.ablation_bars(bars, title="accuracy drop: top-1% value neurons vs random 1%"), "ablation_top_vs_random")
    summary["ablation_drop_top"] = float(abl[abl.condition == "top"].accuracy_drop.mean())
    summary["ablation_drop_random"] = float(abl[abl.condition == "random"].accuracy_drop.mean())

    # 4. query knockout on 2-hop questions at the top query layer
    two_hop = multi[multi.n_hops == 2] if (multi.n_hops == 2).any() else multi
    q_layer = next((l for l in multi_ranking.query_layers if l < bridge.cfg.n_layers - 1), 0)
    knock = query_knockout_experiment(bridge, two_hop.prompt.tolist(), two_hop.target.tolist(), q_layer,
                                      n_neurons=config.knockout_neurons, threshold=config.threshold)
    later = list(range(q_layer + 1, bridge.cfg.n_layers))
    before = activated_value_neurons_by_layer(bridge, two_hop.prompt, two_hop.target, later, config.threshold)
    with ablate_neurons(bridge, {q_layer: knock.neurons}):
        after = activated_value_neurons_by_layer(bridge, two_hop.prompt, two_hop.target, later, config.threshold)
    counts = pd.DataFrame({"layer": later, "before": before.to_numpy(), "after": after.to_numpy()})
    counts.to_csv(out / "query_knockout.csv", index=False)
    save(plotting.knockout_counts(counts, title=f"knocking out {len(knock.neurons)} top query neurons of layer {q_layer}"),
         "query_knockout")
    summary["knockout_layer"] = q_layer
    summary["knockout"] = knock.summary

    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary
