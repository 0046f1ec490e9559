"""Query → value pathways: per-layer activation curves of query and value neurons and the lag between them.

For each prompt (typically a multi-hop question) take its top-N value neurons and top-N query neurons
(`rank_layers` table: frozen-norm value scores I(v), query scores `positive` by default; see
docs/attribution.md). The curves are the per-layer mass of those neurons,

    V_p(l) = Σ_{(l,k) ∈ V_p} I_p(v^l_k),        Q_p(l) = Σ_{(l,k) ∈ Q_p} Q_p(l, k),

and their shares V_p(l) / Σ_l V_p(l), Q_p(l) / Σ_l Q_p(l). The lag of a prompt is how many layers the
value mass sits after the query mass, measured two ways:

    peak_lag = argmax_l V_p(l) − argmax_l Q_p(l)
    centre_lag = Σ_l l·share_V(l) − Σ_l l·share_Q(l)      (difference of the centres of mass)

A positive lag means the query neurons fire earlier than the value neurons they feed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
from transformer_lens.model_bridge import TransformerBridge

from ace_interp.attribution.layers import rank_layers


@dataclass
class PathwayCurves:
    """curves: prompt, relation, kind (value/query), layer, mass, share (one row per prompt × kind × layer).
    lags: prompt, relation, query_peak, value_peak, peak_lag, query_centre, value_centre, centre_lag."""

    curves: pd.DataFrame
    lags: pd.DataFrame

    def mean_curves(self, relation: str | None = None) -> pd.DataFrame:
        """Mean share per layer and kind over prompts (of one relation, or all): columns layer, query, value."""
        c = self.curves if relation is None else self.curves[self.curves.relation == relation]
        return c.pivot_table(index="layer", columns="kind", values="share", aggfunc="mean").reset_index()

    def lag_distribution(self, which: str = "peak_lag") -> pd.DataFrame:
        """How many prompts have each lag: columns lag, count, fraction (sorted by lag)."""
        if which not in ("peak_lag", "centre_lag"):
            raise ValueError(f"which must be 'peak_lag' or 'centre_lag', got {which!r}")
        values = self.lags[which] if which == "peak_lag" else self.lags[which].round().astype(int)
        counts = values.value_counts().sort_index()
        return pd.DataFrame({"lag": counts.index, "count": counts.to_numpy(), "fraction": (counts / counts.sum()).to_numpy()})


def curves_from_table(table: pd.DataFrame, n_layers: int) -> PathwayCurves:
    """Build the curves and lags from a `LayerRanking.table` (prompt, relation, kind, layer, neuron, score)."""
    needed = {"prompt", "relation", "kind", "layer", "score"}
    if not needed <= set(table.columns):
        raise ValueError(f"the table needs columns {sorted(needed)}, got {sorted(table.columns)}")
    relation_of = table.groupby("prompt").relation.first()
    rows, lags = [], []
    for prompt in sorted(table.prompt.unique()):
        sub = table[table.prompt == prompt]
        centre, peak = {}, {}
        for kind in ("query", "value"):
            mass = sub[sub.kind == kind].groupby("layer").score.sum().reindex(range(n_layers), fill_value=0.0)
            mass = mass.clip(lower=0.0)  # a curve of activation mass: negative entries carry none
            total = float(mass.sum())
            share = mass / total if total > 0 else mass * 0.0
            for layer in range(n_layers):
                rows.append(dict(prompt=prompt, relation=relation_of[prompt], kind=kind, layer=layer,
                                 mass=float(mass[layer]), share=float(share[layer])))
            peak[kind] = int(mass.idxmax()) if total > 0 else None
            centre[kind] = float((share * share.index).sum()) if total > 0 else None
        ok = None not in (peak["query"], peak["value"])
        lags.append(dict(
            prompt=prompt, relation=relation_of[prompt],
            query_peak=peak["query"], value_peak=peak["value"],
            peak_lag=peak["value"] - peak["query"] if ok else None,
            query_centre=centre["query"], value_centre=centre["value"],
            centre_lag=centre["value"] - centre["query"] if ok else None,
        ))
    lag_frame = pd.DataFrame(lags).dropna(subset=["peak_lag"])
    lag_frame["peak_lag"] = lag_frame["peak_lag"].astype(int)
    return PathwayCurves(pd.DataFrame(rows), lag_frame.reset_index(drop=True))


def pathway_curves(
    bridge: TransformerBridge,
    prompts: Sequence[str],
    targets: Sequence[str | int],
    relations: Sequence[str] | None = None,
    positions: int | Sequence[int] = -1,
    n_value_neurons: int = 100,
    n_query_neurons: int = 100,
    aggregate: str = "positive",
) -> PathwayCurves:
    """Query and value activation curves and lags for each prompt (module docstring)."""
    ranking = rank_layers(
        bridge, prompts, targets, relations, positions, n_value_neurons=n_value_neurons,
        n_query_neurons=n_query_neurons, aggregate=aggregate,
    )
    return curves_from_table(ranking.table, bridge.cfg.n_layers)
