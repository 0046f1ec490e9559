"""Layer ranking: which layers hold the value neurons and the query neurons of a set of prompts.

For each prompt p (a relation / knowledge type, or the multi-hop questions of a dataset) take its top-N
value neurons V_p (exact, frozen norm) and its top-N query neurons Q_p (query score `aggregate`, default
the summed positive activation of V_p's neurons in later layers; see `attribution.query`). The layer
scores of a relation R with prompts P_R are

    value_score(R, l) = (1/|P_R|) Σ_{p ∈ P_R} Σ_{(l,k) ∈ V_p} I_p(v^l_k)
    query_score(R, l) = (1/|P_R|) Σ_{p ∈ P_R} Σ_{(l,k) ∈ Q_p} Q_p(l, k)

i.e. how much of each prompt's top-neuron mass lies in layer l, averaged over the relation's prompts.
`value_layers` / `query_layers` are the layers sorted by these scores over all prompts (best first,
layers with a positive score only, at most `top_k_layers`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from transformer_lens.model_bridge import TransformerBridge

from ace_interp.attribution.query import query_scores
from ace_interp.attribution.value import DEFAULT_MEMORY_BUDGET, target_token_ids, top_value_neurons
from ace_interp.model import neuron_activations

log = logging.getLogger(__name__)

ALL = "all"


@dataclass
class LayerRanking:
    """Ranked value and query layers of a prompt set.

    value_layers, query_layers: the top layers over all prompts, best first (what the editor consumes).
    table: every prompt's top-N neurons: prompt, relation, kind (value/query), layer, neuron, score, rank
    (sorted by prompt, then value before query, then rank).
    layer_scores: relation ('all' for the whole set), kind, layer, score, n_neurons (top neurons of that
    kind in the layer, summed over the relation's prompts), rank (1 = best layer of that relation/kind).
    """

    value_layers: list[int]
    query_layers: list[int]
    table: pd.DataFrame
    layer_scores: pd.DataFrame
    top_k_layers: int

    def layers(self, kind: str = "value", relation: str = ALL, k: int | None = None) -> list[int]:
        """The ranked layers (positive score, best first) of one relation and kind."""
        if kind not in ("value", "query"):
            raise ValueError(f"kind must be 'value' or 'query', got {kind!r}")
        rows = self.layer_scores[(self.layer_scores.relation == relation) & (self.layer_scores.kind == kind)]
        if rows.empty:
            raise KeyError(f"no layer scores for relation {relation!r}; known: {sorted(self.layer_scores.relation.unique())}")
        rows = rows[rows.score > 0].sort_values("rank")
        return rows.layer.astype(int).tolist()[: k or self.top_k_layers]

    @property
    def relations(self) -> list[str]:
        return [r for r in self.layer_scores.relation.unique() if r != ALL]


def _layer_scores(table: pd.DataFrame, n_layers: int, n_prompts: dict[str, int]) -> pd.DataFrame:
    frames = []
    for relation, n in n_prompts.items():
        sub = table if relation == ALL else table[table.relation == relation]
        for kind in ("value", "query"):
            rows = sub[sub.kind == kind]
            agg = rows.groupby("layer")["score"].agg(["sum", "size"]).reindex(range(n_layers), fill_value=0)
            f = pd.DataFrame(
                {"relation": relation, "kind": kind, "layer": range(n_layers),
                 "score": (agg["sum"] / n).to_numpy(), "n_neurons": agg["size"].to_numpy()}
            )
            f["rank"] = f["score"].rank(ascending=False, method="first").astype(int)
            frames.append(f)
    return pd.concat(frames, ignore_index=True)


def rank_layers(
    bridge: TransformerBridge,
    prompts: Sequence[str],
    targets: Sequence[str | int] | str | int,
    relations: Sequence[str] | None = None,
    positions: int | Sequence[int] = -1,
    top_k_layers: int = 5,
    n_value_neurons: int = 100,
    n_query_neurons: int = 100,
    aggregate: str = "positive",
    batch_size: int = 16,
    memory_budget: int | None = DEFAULT_MEMORY_BUDGET,
) -> LayerRanking:
    """Rank value layers and query layers over `prompts` (module docstring for the formulas).

        import ace_interp as ai
        model = ai.load_model("toy-gptj")
        ranking = ai.rank_layers(model, ["anna kovac 's country is"], [" france"])
        ranking.value_layers, ranking.query_layers   # lists of layer indices, best first
        ranking.table                                # each prompt's top value and query neurons (DataFrame)

    `prompts` (b strings) and `targets` (b answers, or one for all) as in `top_value_neurons`.
    `relations` labels each prompt (e.g. the relation or knowledge type) and gives per-relation layer
    scores in `layer_scores`; the top-level `value_layers` / `query_layers` use all prompts.
    Prompts are processed `batch_size` at a time (one forward per batch).
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    target_ids = target_token_ids(bridge, targets, len(prompts)).tolist()
    relations = [ALL] * len(prompts) if relations is None else [str(r) for r in relations]
    if len(relations) != len(prompts):
        raise ValueError(f"got {len(relations)} relations for {len(prompts)} prompts")
    if isinstance(positions, int):
        positions = [positions] * len(prompts)
    frames = []
    for start in range(0, len(prompts), batch_size):
        sl = slice(start, start + batch_size)
        p, t, pos = prompts[sl], target_ids[sl], list(positions[sl])
        acts = neuron_activations(bridge, p, pos)
        values = top_value_neurons(bridge, p, t, n_value_neurons, pos, memory_budget=memory_budget, activations=acts)
        q = query_scores(bridge, p, t, positions=pos, value_neurons=values, activations=acts)
        values = values.assign(kind="value")
        queries = []
        for b in range(len(p)):
            f = q.top(n_query_neurons, b, aggregate)
            f = f[f.score > 0]  # last-layer and non-activating neurons carry no query signal
            f.insert(0, "prompt", b)
            queries.append(f)
        queries = pd.concat(queries, ignore_index=True).assign(kind="query")
        both = pd.concat([values, queries], ignore_index=True)
        both["prompt"] += start
        frames.append(both)
        log.info("ranked %d/%d prompts", min(start + batch_size, len(prompts)), len(prompts))
    table = pd.concat(frames, ignore_index=True)
    table.insert(1, "relation", [relations[i] for i in table["prompt"]])
    table = table[["prompt", "relation", "kind", "layer", "neuron", "score", "rank"]]
    table = table.sort_values(["prompt", "kind", "rank"], ascending=[True, False, True], ignore_index=True)
    counts = {ALL: len(prompts)} | {r: relations.count(r) for r in dict.fromkeys(relations) if r != ALL}
    layer_scores = _layer_scores(table, bridge.cfg.n_layers, counts)
    ranking = LayerRanking([], [], table, layer_scores, top_k_layers)
    ranking.value_layers = ranking.layers("value")
    ranking.query_layers = ranking.layers("query")
    return ranking
