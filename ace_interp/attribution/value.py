"""Value-neuron scores: how much one FFN neuron's output raises the log-probability of the answer.

For a prompt, a target token w and a chosen position, every FFN neuron k of layer l writes

    v^l_k = m^l_k · fc2^l_k                       (coefficient × sub-value, `sub_values`)

into the residual x^l = h^{l-1} + A^l (for parallel GPT-J blocks the same sum: attention and MLP both
read h^{l-1} and both outputs are added to it). Its value score is the log-probability increase

    I(v) = log p(w | x^l + v) − log p(w | x^l),
    log p(· | r) = log_softmax( W_U · N(r) + b_U )     (full vocabulary, exact)

where N is the model's final norm. Two choices for N:

* ``norm="frozen"`` (default): N(r) = γ ⊙ c(r) / s + β with the divisor s frozen at its value on the
  model's *actual* final residual at that position (c = mean-centring for LayerNorm, identity for
  RMSNorm). N is then affine in r, so adding a small vector never rescales everything else.
* ``norm="recomputed"``: s is recomputed on r itself (the exact final norm). On early layers the
  residual x^l is small and renormalising x^l + v inflates scores by tens of nats (see
  docs/attribution.md for the SmolLM2-135M numbers).

Every function here evaluates the full-vocabulary log-softmax; neurons are processed in chunks so that
no `[neurons × vocab]` block exceeds `memory_budget` bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from ace_interp.model.architecture import resolve_layers
from ace_interp.model import (
    NeuronActivations,
    apply_final_norm,
    check_layer,
    final_norm_scale,
    neuron_activations,
    sub_values,
    unembed,
)

log = logging.getLogger(__name__)

NormMode = Literal["frozen", "recomputed"]
NORM_MODES: tuple[str, ...] = ("frozen", "recomputed")
DEFAULT_MEMORY_BUDGET = 256 * 2**20  # bytes for one [chunk × vocab] block of logits (and its logsumexp temp)


# ----------------------------------------------------------------------------- targets


def target_token_ids(
    bridge: TransformerBridge,
    targets: str | int | Sequence[str | int],
    n_prompts: int | None = None,
    leading_space: bool = True,
) -> Int[Tensor, " batch"]:
    """The token id w of each target: ints are taken as ids; strings give their *first* token.

    A string target that does not start with whitespace gets one leading space first when
    `leading_space` is set (answers follow a word: "… is" + " Paris"), matching the BPE convention.
    Leading tokens that decode to whitespace only (a lone "▁"/"Ġ") are skipped when a real token
    follows. A single target is broadcast to `n_prompts` prompts.
    """
    if isinstance(targets, (str, int)):
        targets = [targets] * (n_prompts or 1)
    targets = list(targets)
    if n_prompts is not None and len(targets) != n_prompts:
        raise ValueError(f"got {len(targets)} targets for {n_prompts} prompts")
    ids = []
    for t in targets:
        if isinstance(t, bool) or not isinstance(t, (str, int)):
            raise TypeError(f"a target must be a string or a token id, got {type(t).__name__}")
        if isinstance(t, int):
            if not 0 <= t < bridge.cfg.d_vocab:
                raise ValueError(f"target token id {t} is outside the vocabulary (0..{bridge.cfg.d_vocab - 1})")
            ids.append(t)
            continue
        text = t if (not leading_space or t[:1].isspace()) else " " + t
        toks = bridge.tokenizer.encode(text, add_special_tokens=False) if text.strip() else []
        while len(toks) > 1 and not bridge.tokenizer.decode([toks[0]]).strip():
            toks = toks[1:]
        if not toks or not text.strip():
            raise ValueError(f"target {t!r} tokenises to nothing: give a non-empty answer string or a token id")
        ids.append(int(toks[0]))
    return torch.tensor(ids, dtype=torch.long, device=bridge.cfg.device)


# ----------------------------------------------------------------------------- the core primitive


def _check_norm(norm: str) -> None:
    if norm not in NORM_MODES:
        raise ValueError(f"unknown norm mode {norm!r}; expected one of {NORM_MODES}")


def _rows_per_chunk(bridge: TransformerBridge, memory_budget: int | None, n: int) -> int:
    if memory_budget is None:
        return max(n, 1)
    if memory_budget <= 0:
        raise ValueError(f"memory_budget must be positive (bytes), got {memory_budget}")
    per_row = 2 * bridge.cfg.d_vocab * torch.finfo(bridge.cfg.dtype).bits // 8  # logits + logsumexp temp
    return max(1, int(memory_budget // per_row))


def target_log_prob(
    bridge: TransformerBridge,
    resid: Float[Tensor, "n d_model"],
    target: int,
    scale: Float[Tensor, "1"] | None = None,
    memory_budget: int | None = DEFAULT_MEMORY_BUDGET,
) -> Float[Tensor, " n"]:
    """log p(w | resid) per row: final norm (divisor `scale`, or each row's own when None), unembedding,
    exact full-vocabulary log-softmax, evaluated in chunks of rows that fit `memory_budget` bytes."""
    rows = _rows_per_chunk(bridge, memory_budget, len(resid))
    out = []
    for start in range(0, len(resid), rows):
        logits = unembed(bridge, apply_final_norm(bridge, resid[start : start + rows], scale))
        out.append(logits[:, target] - torch.logsumexp(logits, dim=-1))
    return torch.cat(out) if out else resid.new_zeros(0)


def log_prob_increase(
    bridge: TransformerBridge,
    base: Float[Tensor, " d_model"],
    vectors: Float[Tensor, "n d_model"],
    target: int,
    scale: Float[Tensor, "1"] | None = None,
    memory_budget: int | None = DEFAULT_MEMORY_BUDGET,
) -> Float[Tensor, " n"]:
    """I(v) = log p(w | base + v) − log p(w | base) for each row v of `vectors`.

    `scale` is the frozen final-norm divisor (`final_norm_scale(bridge, final_resid)`); None recomputes
    the norm on each residual. This is the building block of every score in this module and can be
    used directly to check additivity, e.g. I(a + b) against I(a) + I(b).
    """
    with torch.no_grad():
        base_lp = target_log_prob(bridge, base[None], target, scale, None)
        return target_log_prob(bridge, base[None] + vectors, target, scale, memory_budget) - base_lp


# ----------------------------------------------------------------------------- value scores


@dataclass
class ValueScores:
    """Value scores of every neuron of `layers` at one position per prompt.

    scores[b, i, k] = I(m^l_k · fc2^l_k) for l = layers[i] (nats); base_log_probs[b, i] =
    log p(w | x^l) under the same norm mode; target_ids[b] = w.
    """

    layers: list[int]
    positions: Int[Tensor, " batch"]
    target_ids: Int[Tensor, " batch"]
    scores: Float[Tensor, "batch n_layers d_mlp"]
    base_log_probs: Float[Tensor, "batch n_layers"]
    norm: str

    def layer_sums(self) -> Float[Tensor, "batch n_layers"]:
        """Σ_k I(v^l_k) per prompt and layer (not I(F^l): see `additivity_check`)."""
        return self.scores.sum(-1)

    def top(self, k: int, prompt: int = 0) -> pd.DataFrame:
        """The k highest-scoring neurons of one prompt: columns layer, neuron, score, rank."""
        return top_neurons_frame(self.scores[prompt], self.layers, k)

    def to_frame(self, k: int | None = None, prompt_ids: Sequence | None = None) -> pd.DataFrame:
        """Long table (prompt, layer, neuron, score, rank) of each prompt's top-k neurons (all when None)."""
        frames = []
        for b in range(len(self.scores)):
            f = top_neurons_frame(self.scores[b], self.layers, k)
            f.insert(0, "prompt", b if prompt_ids is None else prompt_ids[b])
            frames.append(f)
        return pd.concat(frames, ignore_index=True)


def top_neurons_frame(
    scores: Float[Tensor, "n_layers d_mlp"], layers: Sequence[int], k: int | None
) -> pd.DataFrame:
    """The top-k (layer, neuron) pairs of a score matrix, best first."""
    flat = scores.reshape(-1)
    k = len(flat) if k is None else min(k, len(flat))
    values, idx = flat.topk(k)
    d_mlp = scores.shape[-1]
    return pd.DataFrame(
        {
            "layer": [layers[i] for i in (idx // d_mlp).tolist()],
            "neuron": (idx % d_mlp).tolist(),
            "score": values.tolist(),
            "rank": range(1, k + 1),
        }
    )


def _prepare(
    bridge: TransformerBridge,
    prompts: str | Sequence[str],
    targets,
    positions,
    layers: Sequence[int] | None,
    activations: NeuronActivations | None,
) -> tuple[list[str], NeuronActivations, Tensor]:
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    layers = resolve_layers(bridge, layers)
    target_ids = target_token_ids(bridge, targets, len(prompts))
    if activations is None:
        activations = neuron_activations(bridge, prompts, positions, layers)
    elif activations.layers != layers:
        missing = [l for l in layers if l not in activations.layers]
        if missing:
            raise ValueError(f"the given activations lack layers {missing}")
    if len(activations.final_resid) != len(prompts):
        raise ValueError(f"activations hold {len(activations.final_resid)} prompts, got {len(prompts)} prompts")
    return prompts, activations, target_ids


def _frozen_scale(bridge: TransformerBridge, acts: NeuronActivations, b: int, norm: str) -> Tensor | None:
    return final_norm_scale(bridge, acts.final_resid[b]) if norm == "frozen" else None


def value_scores(
    bridge: TransformerBridge,
    prompts: str | Sequence[str],
    targets: str | int | Sequence[str | int],
    positions: int | Sequence[int] = -1,
    layers: Sequence[int] | None = None,
    norm: NormMode = "frozen",
    memory_budget: int | None = DEFAULT_MEMORY_BUDGET,
    activations: NeuronActivations | None = None,
) -> ValueScores:
    """I(v^l_k) for every neuron k of every layer in `layers` (all by default), per prompt.

    One batched forward collects m^l and x^l (`neuron_activations`; pass `activations` to reuse a run,
    e.g. one taken under ablation hooks). Then for each prompt and layer the d_mlp residuals
    x^l + m^l_k fc2^l_k go through the final norm (frozen divisor s of the actual final residual, or
    recomputed), the unembedding and an exact log-softmax, `memory_budget` bytes of logits at a time
    (None: a whole layer at once). Cost per prompt ≈ n_layers · d_mlp · d_model · d_vocab multiply-adds.
    """
    _check_norm(norm)
    prompts, acts, target_ids = _prepare(bridge, prompts, targets, positions, layers, activations)
    layers = resolve_layers(bridge, layers)
    index = [acts.layers.index(l) for l in layers]
    scores = torch.zeros(len(prompts), len(layers), bridge.cfg.d_mlp, dtype=acts.x.dtype, device=acts.x.device)
    base = torch.zeros(len(prompts), len(layers), dtype=acts.x.dtype, device=acts.x.device)
    with torch.no_grad():
        for i, (l, j) in enumerate(zip(layers, index)):
            fc2 = sub_values(bridge, l)
            for b in range(len(prompts)):
                scale = _frozen_scale(bridge, acts, b, norm)
                x = acts.x[b, j]
                w = int(target_ids[b])
                base[b, i] = target_log_prob(bridge, x[None], w, scale, None)[0]
                vectors = acts.coefficients[b, j, :, None] * fc2
                scores[b, i] = target_log_prob(bridge, x[None] + vectors, w, scale, memory_budget) - base[b, i]
    return ValueScores(layers, acts.positions, target_ids, scores, base, norm)


def value_scores_for(
    bridge: TransformerBridge,
    activations: NeuronActivations,
    prompt: int,
    target: int,
    neurons: Sequence[tuple[int, int]],
    norm: NormMode = "frozen",
    memory_budget: int | None = DEFAULT_MEMORY_BUDGET,
) -> Float[Tensor, " n"]:
    """I(v) for an explicit list of (layer, neuron) pairs of one prompt (same definition as `value_scores`).

    All pairs go through the final norm and unembedding together (chunked by `memory_budget`), whatever
    their layers; log p(w | x^l) is computed once per layer."""
    _check_norm(norm)
    if not neurons:
        return activations.x.new_zeros(0)
    scale = _frozen_scale(bridge, activations, prompt, norm)
    layer_list = sorted({l for l, _ in neurons})
    with torch.no_grad():
        rows = [activations.layers.index(l) for l in layer_list]
        base = target_log_prob(bridge, activations.x[prompt, rows], target, scale, None)
        resid = activations.x.new_empty(len(neurons), activations.x.shape[-1])
        base_of_pair = activations.x.new_empty(len(neurons))
        for i, l in enumerate(layer_list):
            where = [r for r, (pl, _) in enumerate(neurons) if pl == l]
            ks = torch.tensor([neurons[r][1] for r in where], device=resid.device)
            j = rows[i]
            resid[where] = activations.x[prompt, j] + activations.coefficients[prompt, j, ks, None] * sub_values(bridge, l)[ks]
            base_of_pair[where] = base[i]
        return target_log_prob(bridge, resid, target, scale, memory_budget) - base_of_pair


# ----------------------------------------------------------------------------- exact top-k with pruning


def _linear_upper_bounds(
    bridge: TransformerBridge, acts: NeuronActivations, b: int, target: int, layers: Sequence[int], scale: Tensor
) -> Float[Tensor, "n_layers d_mlp"]:
    """An upper bound on I(v) for every neuron, with the frozen norm, from two mat-vecs per layer.

    With s frozen, logits(x + v) = L + Δ(v), Δ(v) = W_U (γ ⊙ c(v) / s) linear in v. By convexity of
    logsumexp, lse(L + Δ) ≥ lse(L) + Σ_i p_i Δ_i with p = softmax(L), hence
        I(v) = Δ_w − [lse(L + Δ) − lse(L)] ≤ Δ_w − E_p[Δ] = v · c(γ ⊙ (u_w − U^T p)) / s.
    The bound is tight to second order for small v.
    """
    from ace_interp.model.architecture import final_norm_module, model_spec, unembed_module

    norm = final_norm_module(bridge)
    gamma = norm.weight + 1.0 if getattr(bridge.cfg, "rmsnorm_uses_offset", False) else norm.weight
    W_U = unembed_module(bridge).weight  # [vocab, d_model]
    cap = getattr(bridge.cfg, "output_logits_soft_cap", -1.0) or -1.0
    if cap > 0:
        raise NotImplementedError("the linear bound assumes no logit soft cap")
    rows = [acts.layers.index(l) for l in layers]
    p = unembed(bridge, apply_final_norm(bridge, acts.x[b, rows], scale)).softmax(-1)  # [n_layers, vocab]
    directions = (W_U[target] - p @ W_U) * gamma / scale
    if model_spec(bridge).normalization == "layernorm":
        directions = directions - directions.mean(-1, keepdim=True)  # c(v)·d = v·c(d)
    return torch.stack(
        [acts.coefficients[b, j] * (sub_values(bridge, l) @ d) for l, j, d in zip(layers, rows, directions)]
    )


def _pruned_search(
    bridge: TransformerBridge,
    acts: NeuronActivations,
    target_ids: Tensor,
    layers: list[int],
    memory_budget: int | None,
    k: int | None,
    threshold: float | None,
) -> pd.DataFrame:
    """Exact scores for the neurons that can matter, visited in decreasing order of the linear bound:
    stop once the next bound is below the k-th best exact score (top-k) or below `threshold`."""
    d_mlp = bridge.cfg.d_mlp
    chunk = max(_rows_per_chunk(bridge, memory_budget, 1), k or 1)
    frames = []
    with torch.no_grad():
        for b in range(len(target_ids)):
            w = int(target_ids[b])
            scale = final_norm_scale(bridge, acts.final_resid[b])
            bounds = _linear_upper_bounds(bridge, acts, b, w, layers, scale).reshape(-1)
            order = bounds.argsort(descending=True)
            exact_idx: list[Tensor] = []
            exact_val: list[Tensor] = []
            cutoff = -float("inf") if threshold is None else threshold
            for start in range(0, len(order), chunk):
                n_done = sum(len(i) for i in exact_idx)
                if (k is None or n_done >= k) and float(bounds[order[start]]) < cutoff:
                    break
                idx = order[start : start + chunk]
                pairs = [(layers[i // d_mlp], i % d_mlp) for i in idx.tolist()]
                exact_idx.append(idx)
                exact_val.append(value_scores_for(bridge, acts, b, w, pairs, "frozen", memory_budget))
                if k is not None and n_done + len(idx) >= k:
                    cutoff = max(cutoff, float(torch.cat(exact_val).topk(k).values[-1]))
            if not exact_idx:  # every bound is below the threshold: no neuron qualifies
                exact_idx, exact_val = [order[:0]], [bounds[:0]]
            idx, val = torch.cat(exact_idx), torch.cat(exact_val)
            log.debug("prompt %d: exact scores for %d of %d neurons", b, len(idx), len(order))
            if threshold is not None:
                keep = val > threshold
                idx, val = idx[keep], val[keep]
            val, pos = val.sort(descending=True)
            if k is not None:
                val, pos = val[:k], pos[:k]
            idx = idx[pos]
            frames.append(
                pd.DataFrame(
                    {
                        "prompt": b,
                        "layer": [layers[i // d_mlp] for i in idx.tolist()],
                        "neuron": (idx % d_mlp).tolist(),
                        "score": val.tolist(),
                        "rank": range(1, len(val) + 1),
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def top_value_neurons(
    bridge: TransformerBridge,
    prompts: str | Sequence[str],
    targets: str | int | Sequence[str | int],
    k: int = 100,
    positions: int | Sequence[int] = -1,
    layers: Sequence[int] | None = None,
    memory_budget: int | None = DEFAULT_MEMORY_BUDGET,
    activations: NeuronActivations | None = None,
) -> pd.DataFrame:
    """The exact top-k value neurons per prompt (frozen norm), computing exact scores only where needed.

    Neurons are visited in order of the upper bound of `_linear_upper_bounds`; once the next bound is
    below the k-th best exact score found so far, no remaining neuron can enter the top k. Returns the
    same rows (prompt, layer, neuron, score, rank) as `value_scores(...).to_frame(k)` (ties aside),
    typically at a small fraction of the cost of the full sweep.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    prompts, acts, target_ids = _prepare(bridge, prompts, targets, positions, layers, activations)
    layers = resolve_layers(bridge, layers)
    return _pruned_search(bridge, acts, target_ids, layers, memory_budget, k, None)


def value_neurons_above(
    bridge: TransformerBridge,
    prompts: str | Sequence[str],
    targets: str | int | Sequence[str | int],
    threshold: float,
    positions: int | Sequence[int] = -1,
    layers: Sequence[int] | None = None,
    memory_budget: int | None = DEFAULT_MEMORY_BUDGET,
    activations: NeuronActivations | None = None,
) -> pd.DataFrame:
    """Every neuron whose value score (frozen norm) exceeds `threshold`, per prompt, exactly: neurons whose
    linear upper bound is below the threshold are never evaluated. Rows: prompt, layer, neuron, score, rank."""
    prompts, acts, target_ids = _prepare(bridge, prompts, targets, positions, layers, activations)
    layers = resolve_layers(bridge, layers)
    return _pruned_search(bridge, acts, target_ids, layers, memory_budget, None, float(threshold))


def top_mean_value_neurons(
    bridge: TransformerBridge,
    prompts: Sequence[str],
    targets: Sequence[str | int],
    count: int,
    positions: int | Sequence[int] = -1,
    memory_budget: int | None = DEFAULT_MEMORY_BUDGET,
    activations: NeuronActivations | None = None,
) -> pd.DataFrame:
    """The `count` neurons with the highest *mean* value score (frozen norm) over `prompts`, exactly,
    without the full sweep. Rows: layer, neuron, score (the mean), rank.

    Each prompt p's exact top-M set (threshold t_p = its M-th best score) is found by pruning; a neuron
    outside every top-M set has mean score ≤ mean_p t_p, so once the count-th best mean among the union
    of the sets (scored exactly on every prompt) reaches mean_p t_p the answer is exact; otherwise M doubles.
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    prompts, acts, target_ids = _prepare(bridge, prompts, targets, positions, None, activations)
    layers = list(range(bridge.cfg.n_layers))
    n_total = len(layers) * bridge.cfg.d_mlp
    if not 1 <= count <= n_total:
        raise ValueError(f"count must be in 1..{n_total}, got {count}")
    M = count
    while True:
        tops = _pruned_search(bridge, acts, target_ids, layers, memory_budget, M, None)
        bound = tops.groupby("prompt").score.min().mean() if M < n_total else -float("inf")
        union = sorted(set(zip(tops.layer.tolist(), tops.neuron.tolist())))
        exact = torch.stack(
            [
                value_scores_for(bridge, acts, b, int(target_ids[b]), union, "frozen", memory_budget)
                for b in range(len(prompts))
            ]
        ).mean(0)
        values, idx = exact.topk(min(count, len(union)))
        if len(union) >= count and float(values[-1]) >= bound:
            break
        M = min(2 * M, n_total)
        log.info("top_mean_value_neurons: not yet exact, retrying with per-prompt top-%d", M)
    return pd.DataFrame(
        {
            "layer": [union[i][0] for i in idx.tolist()],
            "neuron": [union[i][1] for i in idx.tolist()],
            "score": values.tolist(),
            "rank": range(1, len(values) + 1),
        }
    )


# ----------------------------------------------------------------------------- layer-level attribution


@dataclass
class ComponentScores:
    """Layer-level log-probability increases at one position per prompt.

    attention[b, i] = I(A^l) = log p(w | h^{l-1} + A^l) − log p(w | h^{l-1});
    ffn[b, i] = I(F^l) = log p(w | x^l + F^l) − log p(w | x^l) with F^l the whole FFN output (bias
    included).
    """

    layers: list[int]
    target_ids: Int[Tensor, " batch"]
    attention: Float[Tensor, "batch n_layers"]
    ffn: Float[Tensor, "batch n_layers"]
    norm: str


def component_scores(
    bridge: TransformerBridge,
    prompts: str | Sequence[str],
    targets: str | int | Sequence[str | int],
    positions: int | Sequence[int] = -1,
    layers: Sequence[int] | None = None,
    norm: NormMode = "frozen",
    activations: NeuronActivations | None = None,
) -> ComponentScores:
    """Attention-layer and whole-FFN attribution: the value score with A^l (added to h^{l-1}) or F^l
    (added to x^l) in place of a neuron's vector. For parallel blocks A^l is still added to h^{l-1}."""
    _check_norm(norm)
    prompts, acts, target_ids = _prepare(bridge, prompts, targets, positions, layers, activations)
    layers = resolve_layers(bridge, layers)
    attn = torch.zeros(len(prompts), len(layers))
    ffn = torch.zeros(len(prompts), len(layers))
    for b in range(len(prompts)):
        scale = _frozen_scale(bridge, acts, b, norm)
        w = int(target_ids[b])
        for i, l in enumerate(layers):
            j = acts.layers.index(l)
            attn[b, i] = log_prob_increase(bridge, acts.resid_pre[b, j], acts.attn_out[b, j][None], w, scale)[0]
            ffn[b, i] = log_prob_increase(bridge, acts.x[b, j], acts.mlp_out[b, j][None], w, scale)[0]
    return ComponentScores(layers, target_ids, attn, ffn, norm)


def additivity_check(
    bridge: TransformerBridge,
    prompts: str | Sequence[str],
    targets: str | int | Sequence[str | int],
    positions: int | Sequence[int] = -1,
    layers: Sequence[int] | None = None,
    top_k: int | None = None,
    norm: NormMode = "frozen",
    memory_budget: int | None = DEFAULT_MEMORY_BUDGET,
    scores: ValueScores | None = None,
    activations: NeuronActivations | None = None,
) -> pd.DataFrame:
    """Is the value score additive? Per prompt and layer compare

        joint = I(Σ_{k∈S} v_k) = log p(w | x^l + Σ_{k∈S} v_k) − log p(w | x^l)
        sum_of_parts = Σ_{k∈S} I(v_k)

    for S = all neurons of the layer (top_k=None) or the layer's top_k neurons by value score.
    Returns a DataFrame: prompt, layer, n_neurons, joint, sum_of_parts, difference (joint − sum).
    """
    _check_norm(norm)
    prompts, acts, target_ids = _prepare(bridge, prompts, targets, positions, layers, activations)
    layers = resolve_layers(bridge, layers)
    if scores is None:
        scores = value_scores(bridge, prompts, target_ids.tolist(), positions, layers, norm, memory_budget, acts)
    elif scores.norm != norm:
        raise ValueError(f"the given scores use norm={scores.norm!r}, asked for {norm!r}")
    rows = []
    with torch.no_grad():
        for b in range(len(prompts)):
            scale = _frozen_scale(bridge, acts, b, norm)
            for l in layers:
                i, j = scores.layers.index(l), acts.layers.index(l)
                s = scores.scores[b, i]
                chosen = torch.arange(len(s)) if top_k is None else s.topk(min(top_k, len(s))).indices
                total = (acts.coefficients[b, j, chosen, None] * sub_values(bridge, l)[chosen]).sum(0)
                joint = log_prob_increase(bridge, acts.x[b, j], total[None], int(target_ids[b]), scale)[0]
                parts = s[chosen].sum()
                rows.append(
                    dict(prompt=b, layer=l, n_neurons=len(chosen), joint=float(joint), sum_of_parts=float(parts))
                )
    frame = pd.DataFrame(rows)
    frame["difference"] = frame["joint"] - frame["sum_of_parts"]
    return frame
