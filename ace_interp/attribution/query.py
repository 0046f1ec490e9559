"""Query-neuron scores: how strongly a neuron's output vector activates the top value neurons of later layers.

A neuron (l, k) writes v = m^l_k · fc2^l_k into the residual stream. A later layer l' > l reads the
residual through its MLP input norm N^{l'} (`ln2`; for parallel GPT-J blocks `ln1`, which attention and
MLP share) and projects it onto its keys. As for value scores, the norm's divisor is frozen at its value
on the *actual* residual that layer reads at this position (s^{l'} of x^{l'} = h^{l'-1} + A^{l'}, or of
h^{l'-1} for parallel blocks), which makes the norm linear in v and drops its bias (the bias belongs to
the residual, not to v):

    N̂^{l'}(v) = γ^{l'} ⊙ c(v) / s^{l'}            (c = mean-centring for LayerNorm, identity for RMSNorm)
    a^{l'}_j(v) = N̂^{l'}(v) · K^{l'}_j             (the *activation* v contributes to neuron j of layer l')

K^{l'}_j is the key whose pre-activation goes through the nonlinearity (TransformerLens `mlp.hook_pre`):
the sub-key fc1^{l'}_j (column j of `W_in`) for plain MLPs, the gate key (column j of `W_gate`) for gated
MLPs, where m_j = act(x·gate_j) · (x·fc1_j) and the gate decides whether the neuron fires (`key="in"`
uses fc1 for gated MLPs too).

Per prompt, with T the set of its top value neurons (l', j, I_j) (the N highest value scores, frozen
norm, over all layers), the query scores of neuron (l, k) are

    positive[l, k] = Σ_{(l',j) ∈ T, l' > l} max(0, a^{l'}_j(v^l_k))     (summed positive activation)
    inner[l, k]    = Σ_{(l',j) ∈ T, l' > l} a^{l'}_j(v^l_k)             (norm-weighted inner product)
    weighted[l, k] = Σ_{(l',j) ∈ T, l' > l} I_j · a^{l'}_j(v^l_k)       (weighted by the value score)
    share[l, k]    = Σ_{(l',j) ∈ T, l' > l} I_j · a^{l'}_j(v^l_k) / a^{l'}_j(x^{l'})

`share` is Yu & Ananiadou's definition ("Neuron-Level Knowledge Attribution in Large Language Models",
EMNLP 2024; zepingyu0512/neuron-attribution, Llama_view_knowledge.ipynb cell 15, and the ACE notebooks): the
query neuron's share of value neuron j's pre-activation, v·(γ⊙K_j) / x·(γ⊙K_j) (the frozen divisor cancels;
the norm bias is in neither), times j's value score, over the top *30* value neurons. Two definitions are
offered (`definition=`): "inner_product" (ours, the default: T = top 100, ranked by `positive`) and "share"
(T = top 30, ranked by `share`). docs/query-scores.md states both and their measured overlap on SmolLM2.

Neurons of the last layer (no later layers) score 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens.model_bridge import TransformerBridge

from ace_interp.attribution.value import (
    DEFAULT_MEMORY_BUDGET,
    _prepare,
    top_neurons_frame,
    top_value_neurons,
)
from ace_interp.model import NeuronActivations, check_layer, ffn_weight, model_spec, residual_sub_values

KeyKind = Literal["auto", "in", "gate"]
QUERY_AGGREGATES: tuple[str, ...] = ("positive", "inner", "weighted", "share")
QueryDefinition = Literal["inner_product", "share"]
# definition -> (size of T, the aggregate that ranks query neurons). 30: `ffn_subvalue_list_sort[:30]` in
# Yu & Ananiadou's notebooks (zepingyu0512/neuron-attribution) and the ACE release's (yjywdzh/ACE).
QUERY_DEFINITIONS: dict[str, tuple[int, str]] = {"inner_product": (100, "positive"), "share": (30, "share")}


# ----------------------------------------------------------------------------- the MLP input of a layer


def mlp_input_norm(bridge: TransformerBridge, layer: int) -> nn.Module:
    """The HF norm module whose output layer `layer`'s MLP reads (ln2; ln1 for parallel blocks)."""
    block = bridge.blocks[check_layer(bridge, layer)]
    part = getattr(block, "ln1" if model_spec(bridge).parallel_attn_mlp else "ln2", None)
    if part is None:
        raise ValueError(f"layer {layer} has no MLP input norm the bridge exposes")
    return getattr(part, "original_component", None) or part


def mlp_input_resid(acts: NeuronActivations, layer: int, parallel: bool) -> Float[Tensor, "batch d_model"]:
    """The residual layer `layer`'s MLP norm reads: x^l = h^{l-1} + A^l, or h^{l-1} for parallel blocks."""
    j = acts.layers.index(layer)
    return acts.resid_pre[:, j] if parallel else acts.x[:, j]


def _norm_eps(norm: nn.Module) -> float:
    eps = getattr(norm, "eps", None)
    return float(eps if eps is not None else getattr(norm, "variance_epsilon", 1e-6))


def mlp_input_scale(bridge: TransformerBridge, layer: int, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... 1"]:
    """The divisor layer `layer`'s MLP input norm applies to `resid` (sqrt(var + eps) or RMS)."""
    norm = mlp_input_norm(bridge, layer)
    if model_spec(bridge).normalization == "layernorm":
        resid = resid - resid.mean(-1, keepdim=True)
    return (resid.pow(2).mean(-1, keepdim=True) + _norm_eps(norm)).sqrt()


def normalize_mlp_input(
    bridge: TransformerBridge,
    layer: int,
    resid: Float[Tensor, "... d_model"],
    scale: Float[Tensor, "... 1"] | None = None,
    bias: bool = True,
) -> Float[Tensor, "... d_model"]:
    """N^l(resid) = γ ⊙ c(resid) / scale (+ β): the MLP input norm of `layer`, with an optional frozen
    divisor. With `bias=False` it is the linear map N̂^l applied to a vector added to the residual."""
    norm = mlp_input_norm(bridge, layer)
    if scale is None:
        scale = mlp_input_scale(bridge, layer, resid)
    if model_spec(bridge).normalization == "layernorm":
        resid = resid - resid.mean(-1, keepdim=True)
    gamma = norm.weight + 1.0 if getattr(bridge.cfg, "rmsnorm_uses_offset", False) else norm.weight
    out = resid / scale * gamma
    beta = getattr(norm, "bias", None)
    return out + beta if (bias and beta is not None) else out


def activation_keys(bridge: TransformerBridge, layer: int, key: KeyKind = "auto") -> Float[Tensor, "d_model d_mlp"]:
    """K^l: gate keys for gated MLPs and fc1 sub-keys otherwise (`auto`), or explicitly `in` / `gate`."""
    if key not in ("auto", "in", "gate"):
        raise ValueError(f"unknown key kind {key!r}; expected 'auto', 'in' or 'gate'")
    if key == "auto":
        key = "gate" if bridge.cfg.gated_mlp else "in"
    return ffn_weight(bridge, layer, "W_gate" if key == "gate" else "W_in")


def query_activations(
    bridge: TransformerBridge,
    vectors: Float[Tensor, "n d_model"],
    layer: int,
    scale: Float[Tensor, "1"],
    neurons: Sequence[int] | Tensor | None = None,
    key: KeyKind = "auto",
) -> Float[Tensor, "n n_keys"]:
    """a^l_j(v) = N̂^l(v) · K^l_j for each vector v and each neuron j of layer `layer` (all by default),
    with the MLP norm's divisor frozen at `scale`."""
    keys = activation_keys(bridge, layer, key)
    if neurons is not None:
        keys = keys[:, torch.as_tensor(neurons, dtype=torch.long)]
    return normalize_mlp_input(bridge, layer, vectors, scale, bias=False) @ keys


# ----------------------------------------------------------------------------- query scores


@dataclass
class QueryScores:
    """Query scores of every neuron of every layer at one position per prompt (see module docstring).

    value_neurons: the set T per prompt (prompt, layer, neuron, score, rank) the scores were taken against.
    """

    layers: list[int]
    positions: Int[Tensor, " batch"]
    target_ids: Int[Tensor, " batch"]
    value_neurons: pd.DataFrame
    positive: Float[Tensor, "batch n_layers d_mlp"]
    inner: Float[Tensor, "batch n_layers d_mlp"]
    weighted: Float[Tensor, "batch n_layers d_mlp"]
    share: Float[Tensor, "batch n_layers d_mlp"]
    key: str
    definition: str = "inner_product"

    def scores(self, aggregate: str | None = None) -> Float[Tensor, "batch n_layers d_mlp"]:
        """One aggregate (None: the one `definition` ranks by: positive for inner_product, share for share)."""
        aggregate = QUERY_DEFINITIONS[self.definition][1] if aggregate is None else aggregate
        if aggregate not in QUERY_AGGREGATES:
            raise ValueError(f"unknown aggregate {aggregate!r}; expected one of {QUERY_AGGREGATES}")
        return getattr(self, aggregate)

    def top(self, k: int, prompt: int = 0, aggregate: str | None = None) -> pd.DataFrame:
        """The k highest-scoring query neurons of one prompt: layer, neuron, score, rank."""
        return top_neurons_frame(self.scores(aggregate)[prompt], self.layers, k)


def _effective_keys(
    bridge: TransformerBridge, acts: NeuronActivations, b: int, layer: int, neurons: Tensor, key: KeyKind
) -> Float[Tensor, "d_model n"]:
    """Columns e_j with v · e_j = N̂^l(v) · K^l_j: e = c(γ ⊙ K_j) / s (c(v)·u = v·c(u))."""
    parallel = model_spec(bridge).parallel_attn_mlp
    resid = mlp_input_resid(acts, layer, parallel)[b]
    scale = mlp_input_scale(bridge, layer, resid)
    keys = activation_keys(bridge, layer, key)[:, neurons]
    norm = mlp_input_norm(bridge, layer)
    gamma = norm.weight + 1.0 if getattr(bridge.cfg, "rmsnorm_uses_offset", False) else norm.weight
    effective = gamma[:, None] * keys / scale  # c(v)·(γ⊙K)/s ...
    if model_spec(bridge).normalization == "layernorm":
        effective = effective - effective.mean(0, keepdim=True)  # ... = v·c(γ⊙K)/s
    return effective


def query_scores(
    bridge: TransformerBridge,
    prompts: str | Sequence[str],
    targets: str | int | Sequence[str | int],
    n_value_neurons: int | None = None,
    positions: int | Sequence[int] = -1,
    key: KeyKind = "auto",
    value_neurons: pd.DataFrame | None = None,
    activations: NeuronActivations | None = None,
    memory_budget: int | None = DEFAULT_MEMORY_BUDGET,
    definition: QueryDefinition = "inner_product",
) -> QueryScores:
    """Query scores (positive, inner, weighted, share; module docstring) of all neurons, per prompt.

        import ace_interp as ai
        model = ai.load_model("toy-gptj")
        q = ai.query_scores(model, ["anna kovac 's country is"], [" france"], n_value_neurons=50)
        q.positive.shape     # [batch=1, n_layers=6, d_mlp=512]: how much each neuron activates later value neurons
        q.top(10)            # DataFrame: layer, neuron, score, rank of prompt 0's top query neurons
        ai.query_scores(model, ["anna kovac 's country is"], [" france"], definition="share").top(10)
                             # ranked by Yu & Ananiadou's share over the top-30 value neurons

    Shapes: every aggregate is [batch, n_layers, d_mlp]. T is each prompt's top `n_value_neurons` value
    neurons (exact, frozen norm, `top_value_neurons`; None: 100 for "inner_product", 30 for "share"), or the
    rows of `value_neurons` (columns prompt, layer, neuron, score) when given. `definition` also picks the
    aggregate `QueryScores.top` / `scores` rank by when none is named.
    """
    if definition not in QUERY_DEFINITIONS:
        raise ValueError(f"unknown query-score definition {definition!r}; expected one of {sorted(QUERY_DEFINITIONS)}")
    if n_value_neurons is None:
        n_value_neurons = QUERY_DEFINITIONS[definition][0]
    prompts, acts, target_ids = _prepare(bridge, prompts, targets, positions, None, activations)
    layers = list(range(bridge.cfg.n_layers))
    if value_neurons is None:
        value_neurons = top_value_neurons(
            bridge, prompts, target_ids.tolist(), n_value_neurons, positions, memory_budget=memory_budget,
            activations=acts,
        )
    shape = (len(prompts), len(layers), bridge.cfg.d_mlp)
    dtype = torch.promote_types(acts.x.dtype, torch.float32)  # bf16 models: inner products in float32
    positive, inner, weighted, share = (acts.x.new_zeros(shape, dtype=dtype) for _ in range(4))
    parallel = model_spec(bridge).parallel_attn_mlp
    with torch.no_grad():
        for b in range(len(prompts)):
            T = value_neurons[value_neurons["prompt"] == b]
            if T.empty:
                continue
            cols, col_layer, col_score, col_whole = [], [], [], []
            E_device = acts.x.device
            for l, group in T.groupby("layer"):
                l = int(l)
                e = _effective_keys(bridge, acts, b, l, torch.tensor(group["neuron"].to_numpy(), device=E_device), key)
                cols.append(e)
                col_whole.append((mlp_input_resid(acts, l, parallel)[b] @ e).to(dtype))  # a^l_j(x^l): j's whole pre-activation
                col_layer += [l] * len(group)
                col_score += group["score"].tolist()
            E = torch.cat(cols, dim=1).to(dtype)
            col_layer_t = torch.tensor(col_layer, device=E.device)
            col_score_t = torch.tensor(col_score, dtype=E.dtype, device=E.device)
            col_share_t = col_score_t / torch.cat(col_whole)  # I_j / a_j(x): the share formula's weights
            for i, l in enumerate(layers):
                later = col_layer_t > l
                if not later.any():
                    continue
                vectors = (acts.residual_coefficients[b, acts.layers.index(l), :, None] * residual_sub_values(bridge, l)).to(dtype)
                A = vectors @ E[:, later]  # [d_mlp, |T_{>l}|]
                positive[b, i] = A.clamp(min=0).sum(1)
                inner[b, i] = A.sum(1)
                weighted[b, i] = A @ col_score_t[later]
                share[b, i] = A @ col_share_t[later]
    resolved = key if key != "auto" else ("gate" if bridge.cfg.gated_mlp else "in")
    return QueryScores(
        layers, acts.positions, target_ids, value_neurons, positive, inner, weighted, share, resolved, definition
    )
