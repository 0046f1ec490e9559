"""Value-neuron scores: how much one FFN neuron's output raises the log-probability of the answer.

For a prompt, a target token w and a chosen position, every FFN neuron k of layer l writes

    v^l_k = m^l_k · fc2^l_k                       (coefficient × sub-value, `sub_values`)

(under a post-FFN norm, Gemma-2/3, v^l_k = (m^l_k / s'_l) · (γ' ⊙ fc2^l_k) with the norm's divisor s'_l frozen
at its value on the actual FFN output: `residual_coefficients` × `residual_sub_values`, see model/neurons.py)

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

With the frozen norm (and no logit soft cap) the logits are affine in v, which gives the *projected* path
(`method="projected"`, the default there):

    logits(x + m_k fc2_k) = logits(x) + (m_k / s) · P_l[k],   P_l[k] = W_U (γ ⊙ c(fc2_k))
    I(v_k) = a_k P_l[k, w] − logsumexp_j( log p(j | x) + a_k P_l[k, j] ),   a_k = m_k / s

P_l does not depend on the prompt: one `[d_mlp × vocab]` GEMM per layer (in chunks) serves every prompt
and position of a batch, each of which then costs one element-wise exp/sum pass over the chunk. The
`"direct"` path (norm, unembedding and log-softmax of every x + v, as written in the definition) is kept
for the recomputed norm and soft-capped logits, and as the reference the projected path is tested against.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import pandas as pd
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from ace_interp.model.architecture import final_norm_module, model_spec, resolve_layers, unembed_module
from ace_interp.model import (
    NeuronActivations,
    apply_final_norm,
    check_layer,
    final_norm_scale,
    neuron_activations,
    residual_sub_values,
    residual_sub_values_of,
    unembed,
)

log = logging.getLogger(__name__)

NormMode = Literal["frozen", "recomputed"]
NORM_MODES: tuple[str, ...] = ("frozen", "recomputed")
ScoreMethod = Literal["auto", "projected", "direct"]
SCORE_METHODS: tuple[str, ...] = ("auto", "projected", "direct")
DEFAULT_MEMORY_BUDGET = 256 * 2**20  # bytes for one [chunk × vocab] block of logits (and its logsumexp temp)
# Rows with |Δ| = |a_k| · max_j |P_l[k, j]| ≤ this many nats get lse(log p + Δ) without the max-shift pass:
# every term e^{log p_j + Δ_j} ≤ e^20 (log p ≤ 0) cannot overflow float32, and the sum is ≥ e^{max_j log p_j − 20}
# ≥ e^{−log(vocab) − 20}, far above float32's smallest normal (e^-87). Other rows take the shifted logsumexp.
_UNSHIFTED_EXP_LIMIT = 20.0
# top-k pruning compares float32 bounds with float32 exact scores: a bound within this many nats of the
# cutoff is treated as clearing it, so rounding can never drop a neuron the full sweep would keep
BOUND_SLACK = 1e-4
DEFAULT_HEAD_TOKENS = 16  # the likeliest tokens the top-k bound treats exactly (see `value_upper_bounds`)


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


def _check_method(method: str) -> None:
    if method not in SCORE_METHODS:
        raise ValueError(f"unknown scoring method {method!r}; expected one of {SCORE_METHODS}")


def _soft_capped(bridge: TransformerBridge) -> bool:
    return (getattr(bridge.cfg, "output_logits_soft_cap", -1.0) or -1.0) > 0


def _use_projection(bridge: TransformerBridge, norm: str, method: str) -> bool:
    """Whether scores go through the prompt-independent projections P_l (frozen norm, no soft cap)."""
    _check_norm(norm)
    _check_method(method)
    possible = norm == "frozen" and not _soft_capped(bridge)
    if method == "projected" and not possible:
        raise ValueError("method='projected' needs norm='frozen' and a model without a logit soft cap")
    return possible and method != "direct"


def _score_dtype(bridge: TransformerBridge) -> torch.dtype:
    """Scores, log-probabilities and the exp/sum pass are at least float32 (bf16 log p ≈ −12 has 0.06 steps)."""
    return torch.promote_types(bridge.cfg.dtype, torch.float32)


def _rows_per_chunk(bridge: TransformerBridge, memory_budget: int | None, n: int, extra_blocks: int = 0) -> int:
    """Rows of a `[rows × vocab]` block such that the block and its temporaries fit `memory_budget` bytes:
    logits + logsumexp temp (direct path), or P chunk (model dtype) + the float32 exp/sum block (projected),
    plus `extra_blocks` float32 blocks (per-row log p)."""
    if memory_budget is None:
        return max(n, 1)
    if memory_budget <= 0:
        raise ValueError(f"memory_budget must be positive (bytes), got {memory_budget}")
    bytes_per_entry = bridge.cfg.dtype.itemsize + (1 + extra_blocks) * _score_dtype(bridge).itemsize
    return max(1, int(memory_budget // (bridge.cfg.d_vocab * bytes_per_entry)))


def final_norm_gamma(bridge: TransformerBridge) -> Float[Tensor, " d_model"]:
    """γ of the final norm (1 + w for Gemma-style offset RMSNorm)."""
    weight = final_norm_module(bridge).weight
    return weight + 1.0 if getattr(bridge.cfg, "rmsnorm_uses_offset", False) else weight


def norm_linear_part(bridge: TransformerBridge, vectors: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
    """γ ⊙ c(v): with the divisor s frozen, N(x + v) = N(x) + γ ⊙ c(v) / s (c = mean-centring for
    LayerNorm, identity for RMSNorm; β belongs to N(x))."""
    if model_spec(bridge).normalization == "layernorm":
        vectors = vectors - vectors.mean(-1, keepdim=True)
    return vectors * final_norm_gamma(bridge)


def norm_linear_adjoint(bridge: TransformerBridge, directions: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
    """c(γ ⊙ u), the adjoint of `norm_linear_part`: (γ ⊙ c(v)) · u = v · c(γ ⊙ u) (centring is symmetric)."""
    out = directions * final_norm_gamma(bridge)
    if model_spec(bridge).normalization == "layernorm":
        out = out - out.mean(-1, keepdim=True)
    return out


def _logit_changes(bridge: TransformerBridge, fc2: Float[Tensor, "n d_model"]) -> Float[Tensor, "n d_vocab"]:
    """P[k] = W_U (γ ⊙ c(fc2_k)) for each row (no unembedding bias: it belongs to logits(x))."""
    return F.linear(norm_linear_part(bridge, fc2), unembed_module(bridge).weight)


def sub_value_logits(
    bridge: TransformerBridge, layer: int, neurons: Int[Tensor, " n"] | None = None
) -> Float[Tensor, "n d_vocab"]:
    """P_l[k] = W_U (γ ⊙ c(fc2^l_k)): the logit change per unit of m_k / s under the frozen final norm,
    logits(x + m_k fc2_k) = logits(x) + (m_k / s) P_l[k]. All neurons of the layer when `neurons` is None."""
    fc2 = residual_sub_values(bridge, layer)
    return _logit_changes(bridge, fc2 if neurons is None else fc2[neurons])


def frozen_log_probs(
    bridge: TransformerBridge, resid: Float[Tensor, "*rows d_model"], scale: Float[Tensor, "*rows 1"]
) -> Float[Tensor, "*rows d_vocab"]:
    """log p(· | resid) with the frozen divisor `scale` (broadcast against the rows), in at least float32.

    The log-softmax itself runs in float64: torch's float32 one leaves Σ_j p_j − 1 up to ~1e-5 on a 49k
    vocabulary with logits ~30, an offset every projected score (and bound) would inherit."""
    logits = unembed(bridge, apply_final_norm(bridge, resid, scale))
    return logits.double().log_softmax(-1).to(_score_dtype(bridge))


def _log_mean_exp(
    P: Float[Tensor, "n d_vocab"],
    steps: Float[Tensor, " n"],
    log_probs: Float[Tensor, " d_vocab"] | Float[Tensor, "n d_vocab"],
    reach: Float[Tensor, " n"],
    work: Float[Tensor, "rows d_vocab"],
) -> Float[Tensor, " n"]:
    """log E_p[e^{Δ_k}] = lse_j(log p_j + a_k P[k, j]) per row k (= lse(L + Δ_k) − lse(L)); log p is one
    distribution for all rows, or one per row.

    `work` is a reusable float32 buffer of at least n rows (a fresh [n × vocab] tensor costs page faults on
    every call); `reach` = max_j |P[k, j]| decides which rows may skip the max-shift (`_UNSHIFTED_EXP_LIMIT`).
    The sum is torch's (cascaded) reduction, ~1e-7 relative; a float32 mat-vec Σ_j p_j e^{Δ_j} (MKL sgemv)
    was 15% faster but off by up to 2e-5 on a 49k vocabulary."""
    z = torch.addcmul(log_probs, P, steps[:, None], out=work[: len(P)])  # log p + Δ, Δ = a P
    lse = z.exp_().sum(-1).log_()  # log Σ_j e^{log p_j + Δ_j}; wild rows may overflow here
    wild = (steps.abs() * reach > _UNSHIFTED_EXP_LIMIT).nonzero()[:, 0]
    if len(wild):
        wild_log_probs = log_probs if log_probs.dim() == 1 else log_probs[wild]
        lse[wild] = torch.logsumexp(torch.addcmul(wild_log_probs, steps[wild, None], P[wild]), -1)
    return lse


def _projected_scores(
    bridge: TransformerBridge,
    fc2: Float[Tensor, "n d_model"],
    steps: Float[Tensor, "batch n"],
    log_probs: Float[Tensor, "batch groups d_vocab"],
    targets: Int[Tensor, " batch"],
    memory_budget: int | None,
    group: Int[Tensor, " n"] | None = None,
) -> Float[Tensor, "batch n"]:
    """I(v_k) for the neurons with sub-values `fc2` (rows, any layers) and a batch of prompts:

        I_bk = a_bk P[k, w_b] − log Σ_j p_b(j | x^{l(k)}) e^{a_bk P[k, j]},   P[k] = W_U (γ ⊙ c(fc2_k)),  a_bk = m_bk / s_b

    (log p(w | x + v) − log p(w | x) = Δ_w − [lse(L + Δ) − lse(L)] and lse(L + Δ) − lse(L) = log E_p[e^Δ]).
    Row k reads log_probs[b, group[k]] (the layer it belongs to; group None: the single group 0). Each chunk
    of P is one GEMM, computed once and reused by every prompt of the batch; chunk rows fit `memory_budget`."""
    n = len(fc2)
    rows = _rows_per_chunk(bridge, memory_budget, n, extra_blocks=0 if group is None else 1)
    out = torch.empty_like(steps)
    work = steps.new_empty(min(rows, n), log_probs.shape[-1])  # the float32 exp block, reused
    for start in range(0, n, rows):
        chunk = slice(start, start + rows)
        P = _logit_changes(bridge, fc2[chunk])  # [rows, vocab], shared by the whole batch
        low, high = torch.aminmax(P, dim=-1)
        reach = torch.maximum(high, -low).to(steps.dtype)  # max_j |P[k, j]|
        for b in range(len(steps)):
            a = steps[b, chunk]
            lp = log_probs[b, 0] if group is None else log_probs[b, group[chunk]]
            out[b, chunk] = a * P[:, int(targets[b])] - _log_mean_exp(P, a, lp, reach, work)
    return out


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
    method: ScoreMethod = "auto",
) -> ValueScores:
    """I(v^l_k) for every neuron k of every layer in `layers` (all by default), per prompt.

    One batched forward collects m^l and x^l (`neuron_activations`; pass `activations` to reuse a run,
    e.g. one taken under ablation hooks). Then, `memory_budget` bytes of `[neurons × vocab]` at a time
    (None: a whole layer at once):

    * projected path (`method="auto"` with the frozen norm, or `"projected"`): per layer, chunks of
      P_l = (γ ⊙ c(fc2_l)) W_Uᵀ are computed once for the whole batch, and each prompt costs one
      element-wise exp/sum pass over them (`_projected_scores`). A batch of B prompts costs about one
      prompt's GEMMs (n_layers · d_mlp · d_model · d_vocab multiply-adds) plus B · n_layers · d_mlp · d_vocab
      exponentials.
    * direct path (`"direct"`, and always for the recomputed norm or soft-capped logits): per prompt and
      layer the d_mlp residuals x^l + m^l_k fc2^l_k go through the final norm, the unembedding and an exact
      log-softmax — the GEMMs are repeated for every prompt.

    Both give the same numbers up to float32 rounding (tested). Scores are at least float32.
    """
    projected = _use_projection(bridge, norm, method)
    prompts, acts, target_ids = _prepare(bridge, prompts, targets, positions, layers, activations)
    layers = resolve_layers(bridge, layers)
    index = [acts.layers.index(l) for l in layers]
    dtype = _score_dtype(bridge)
    scores = torch.zeros(len(prompts), len(layers), bridge.cfg.d_mlp, dtype=dtype, device=acts.x.device)
    base = torch.zeros(len(prompts), len(layers), dtype=dtype, device=acts.x.device)
    with torch.no_grad():
        if projected:
            scales = final_norm_scale(bridge, acts.final_resid)  # [batch, 1], frozen per prompt
            for i, j in enumerate(index):
                log_probs = frozen_log_probs(bridge, acts.x[:, j], scales)
                base[:, i] = log_probs.gather(1, target_ids[:, None])[:, 0]
                steps = (acts.residual_coefficients[:, j] / scales).to(dtype)  # a = m / s
                fc2 = residual_sub_values(bridge, layers[i])
                scores[:, i] = _projected_scores(bridge, fc2, steps, log_probs[:, None], target_ids, memory_budget)
            return ValueScores(layers, acts.positions, target_ids, scores, base, norm)
        for i, (l, j) in enumerate(zip(layers, index)):
            fc2 = residual_sub_values(bridge, l)
            for b in range(len(prompts)):
                scale = _frozen_scale(bridge, acts, b, norm)
                x = acts.x[b, j]
                w = int(target_ids[b])
                base[b, i] = target_log_prob(bridge, x[None], w, scale, None)[0]
                vectors = acts.residual_coefficients[b, j, :, None] * fc2
                scores[b, i] = target_log_prob(bridge, x[None] + vectors, w, scale, memory_budget) - base[b, i]
    return ValueScores(layers, acts.positions, target_ids, scores, base, norm)


def _projected_scores_for(
    bridge: TransformerBridge,
    activations: NeuronActivations,
    prompts: Sequence[int],
    target_ids: Int[Tensor, " batch"],
    neurons: Sequence[tuple[int, int]],
    memory_budget: int | None,
    log_probs: Float[Tensor, "batch n_acts_layers d_vocab"] | None = None,
) -> Float[Tensor, "batch n"]:
    """Projected-path I(v) of explicit (layer, neuron) pairs for several prompts of `activations`: the
    pairs' rows of P, whatever their layers, come from one GEMM per chunk shared by all the prompts.
    `log_probs` may hold log p(· | x^l) of these prompts for every layer of `activations` already."""
    acts, device = activations, activations.x.device
    rows = torch.as_tensor(list(prompts), device=device)
    scales = final_norm_scale(bridge, acts.final_resid[rows])  # [batch, 1]
    used = sorted({acts.layers.index(l) for l, _ in neurons})  # activation-layer index j of each layer used
    slot = {j: i for i, j in enumerate(used)}
    if log_probs is None:
        log_probs = frozen_log_probs(bridge, acts.x[rows][:, used], scales[:, None])  # [batch, n_used, vocab]
    else:
        log_probs = log_probs[:, used]
    js = torch.tensor([acts.layers.index(l) for l, _ in neurons], device=device)
    ks = torch.tensor([k for _, k in neurons], device=device)
    fc2 = residual_sub_values_of(bridge, neurons)
    steps = (acts.residual_coefficients[rows[:, None], js, ks] / scales).to(_score_dtype(bridge))  # a = m / s
    group = torch.tensor([slot[int(j)] for j in js], device=device)
    return _projected_scores(bridge, fc2, steps, log_probs, target_ids, memory_budget, group)


def value_scores_for(
    bridge: TransformerBridge,
    activations: NeuronActivations,
    prompt: int,
    target: int,
    neurons: Sequence[tuple[int, int]],
    norm: NormMode = "frozen",
    memory_budget: int | None = DEFAULT_MEMORY_BUDGET,
    method: ScoreMethod = "auto",
) -> Float[Tensor, " n"]:
    """I(v) for an explicit list of (layer, neuron) pairs of one prompt (same definition and paths as
    `value_scores`).

    Projected path: per layer, the rows of P_l for the listed neurons. Direct path: all pairs go through the
    final norm and unembedding together (chunked by `memory_budget`), whatever their layers; log p(w | x^l)
    is computed once per layer."""
    projected = _use_projection(bridge, norm, method)
    if not neurons:
        return activations.x.new_zeros(0, dtype=_score_dtype(bridge))
    with torch.no_grad():
        if projected:
            target_ids = torch.tensor([target], device=activations.x.device)
            return _projected_scores_for(bridge, activations, [prompt], target_ids, neurons, memory_budget)[0]
        scale = _frozen_scale(bridge, activations, prompt, norm)
        layer_list = sorted({l for l, _ in neurons})
        rows = [activations.layers.index(l) for l in layer_list]
        base = target_log_prob(bridge, activations.x[prompt, rows], target, scale, None)
        resid = activations.x.new_empty(len(neurons), activations.x.shape[-1])
        base_of_pair = activations.x.new_empty(len(neurons))
        for i, l in enumerate(layer_list):
            where = [r for r, (pl, _) in enumerate(neurons) if pl == l]
            ks = torch.tensor([neurons[r][1] for r in where], device=resid.device)
            j = rows[i]
            resid[where] = activations.x[prompt, j] + activations.residual_coefficients[prompt, j, ks, None] * residual_sub_values(bridge, l)[ks]
            base_of_pair[where] = base[i]
        return (target_log_prob(bridge, resid, target, scale, memory_budget) - base_of_pair).to(_score_dtype(bridge))


# ----------------------------------------------------------------------------- exact top-k with pruning


@torch.no_grad()
def value_upper_bounds(
    bridge: TransformerBridge,
    acts: NeuronActivations,
    b: int,
    target: int,
    layers: Sequence[int],
    scale: Float[Tensor, "1"],
    head_tokens: int = DEFAULT_HEAD_TOKENS,
) -> Float[Tensor, "n_layers d_mlp"]:
    """An upper bound on I(v) for every neuron of `layers` (frozen norm divisor `scale`) of prompt b, far
    cheaper than the exact scores (see `_upper_bounds`, which does a batch of prompts at once)."""
    rows = [acts.layers.index(l) for l in layers]
    scales = scale.reshape(1, 1)
    log_probs = frozen_log_probs(bridge, acts.x[b : b + 1, rows], scales[:, None])
    targets = torch.tensor([target], device=acts.x.device)
    return _upper_bounds(bridge, acts, [b], targets, layers, scales, log_probs, head_tokens)[0]


def _upper_bounds(
    bridge: TransformerBridge,
    acts: NeuronActivations,
    prompts: Sequence[int],
    targets: Int[Tensor, " batch"],
    layers: Sequence[int],
    scales: Float[Tensor, "batch 1"],
    log_probs: Float[Tensor, "batch n_layers d_vocab"],
    head_tokens: int,
) -> Float[Tensor, "batch n_layers d_mlp"]:
    """Upper bounds on I(v) for every neuron of `layers` and a batch of prompts (frozen norm).

    With s frozen, logits(x + v_k) = L + Δ_k, Δ_k = a_k P_l[k] (`sub_value_logits`), and
    I(v_k) = Δ_kw − lse(log p + Δ_k), p = p(· | x^l). Split the vocabulary into a head S (w and the
    `head_tokens` likeliest other tokens of p) and the tail T with mass q = p(T). Jensen's inequality on the
    tail, Σ_{j∈T} p_j e^{Δ_j} ≥ q · exp(μ) with μ = Σ_{j∈T} (p_j / q) Δ_j, gives

        lse(log p + Δ_k) ≥ log( Σ_{j∈S} p_j e^{Δ_kj} + q e^{μ_k} )   ⇒   I(v_k) ≤ Δ_kw − that.

    Both need only inner products of fc2_k with |S| + 1 directions, since (γ ⊙ c(fc2_k)) · u = fc2_k · c(γ ⊙ u):
    u = u_j (rows of W_U) for j ∈ S, and u = W_Uᵀ p_T / q for μ. One [d_mlp × d_model] × [d_model × batch·(|S|+1)]
    GEMM per layer serves the whole batch. With S = {w} this is close to the plain linear bound
    Δ_w − E_p[Δ]; every head token only tightens it (convexity), and it is exact when S is the whole vocabulary.
    """
    if _soft_capped(bridge):
        raise NotImplementedError("the upper bound assumes logits affine in v (no logit soft cap)")
    dtype = _score_dtype(bridge)
    W_U = unembed_module(bridge).weight  # [vocab, d_model]
    batch, n_layers, vocab = log_probs.shape
    probs = log_probs.exp()
    target_col = targets[:, None, None].expand(batch, n_layers, 1)
    n_head = min(head_tokens, vocab - 1)
    others = probs.scatter(-1, target_col, -1.0).topk(n_head, dim=-1).indices  # likeliest tokens other than w
    heads = torch.cat([target_col, others], -1)  # S, w first: [batch, n_layers, |S|]
    tail = probs.scatter(-1, heads, 0.0)
    tail_mass = tail.sum(-1)  # q, [batch, n_layers]
    tail_dir = (tail.to(W_U.dtype) @ W_U).to(dtype)  # W_Uᵀ p_T, [batch, n_layers, d_model]
    dirs = torch.cat([W_U[heads].to(dtype), tail_dir[:, :, None]], 2)  # [batch, n_layers, |S| + 1, d_model]
    dirs = norm_linear_adjoint(bridge, dirs)
    head_log_probs = log_probs.gather(-1, heads)  # [batch, n_layers, |S|]
    has_tail = tail_mass > 0
    log_tail = torch.where(has_tail, tail_mass, 1.0).log().masked_fill(~has_tail, -float("inf"))
    safe_mass = torch.where(has_tail, tail_mass, 1.0)
    rows = torch.as_tensor(list(prompts), device=log_probs.device)
    out = []
    for i, l in enumerate(layers):
        j = acts.layers.index(l)
        fc2 = residual_sub_values(bridge, l).to(dtype)  # [d_mlp, d_model]
        inner = (fc2 @ dirs[:, i].reshape(-1, dirs.shape[-1]).T).reshape(len(fc2), batch, -1).transpose(0, 1)
        a = (acts.residual_coefficients[rows, j] / scales).to(dtype)  # [batch, d_mlp]
        delta = a[..., None] * inner  # Δ_kj for j ∈ S (column 0 is w), and a_k fc2_k · c(γ ⊙ W_Uᵀ p_T) last
        head = head_log_probs[:, i, None] + delta[..., :-1]
        tail_term = log_tail[:, i, None] + delta[..., -1] / safe_mass[:, i, None]
        out.append(delta[..., 0] - torch.logsumexp(torch.cat([head, tail_term[..., None]], -1), -1))
    return torch.stack(out, 1)


def _pruned_search(
    bridge: TransformerBridge,
    acts: NeuronActivations,
    target_ids: Tensor,
    layers: list[int],
    memory_budget: int | None,
    k: int | None,
    threshold: float | None,
    head_tokens: int = DEFAULT_HEAD_TOKENS,
) -> pd.DataFrame:
    """Exact scores for the neurons that can matter, visited in decreasing order of `_upper_bounds`.

    Top-k: the first round scores the k best-bounded neurons exactly; the k-th best exact score found so
    far is the cutoff, and each further round scores (at most twice as many as the last round) the next
    neurons whose bound still clears it; it stops when the next bound is below the cutoff — no neuron left
    can enter the top k. Threshold: every neuron whose bound clears the threshold is scored, in one round.
    Bounds within `BOUND_SLACK` of the cutoff count as clearing it (float32 rounding). log p(· | x^l) and the
    bounds are computed for groups of prompts at once (float64 log-softmax within `memory_budget`)."""
    d_mlp, vocab = bridge.cfg.d_mlp, bridge.cfg.d_vocab
    n_prompts = len(target_ids)
    # per prompt: [n_layers × vocab] of float64 log-softmax, then float32 p, head-masked p and tail p
    group = n_prompts if memory_budget is None else max(1, memory_budget // (len(acts.layers) * vocab * 16))
    rows = [acts.layers.index(l) for l in layers]
    frames = []
    with torch.no_grad():
        for first in range(0, n_prompts, group):
            prompts = list(range(first, min(n_prompts, first + group)))
            scales = final_norm_scale(bridge, acts.final_resid[prompts])
            log_probs = frozen_log_probs(bridge, acts.x[prompts], scales[:, None])  # every layer of acts
            bounds = _upper_bounds(
                bridge, acts, prompts, target_ids[prompts], layers, scales, log_probs[:, rows], head_tokens
            )
            for i, b in enumerate(prompts):

                def score(pairs, b=b, i=i):
                    return _projected_scores_for(
                        bridge, acts, [b], target_ids[b : b + 1], pairs, memory_budget, log_probs[i : i + 1]
                    )[0]

                frames.append(_prune_one(bounds[i].reshape(-1), score, layers, d_mlp, k, threshold).assign(prompt=b))
    frame = pd.concat(frames, ignore_index=True)
    return frame[["prompt", "layer", "neuron", "score", "rank"]]


def _prune_one(
    bounds: Float[Tensor, " n_neurons"],
    score: Callable[[list[tuple[int, int]]], Float[Tensor, " n"]],
    layers: Sequence[int],
    d_mlp: int,
    k: int | None,
    threshold: float | None,
) -> pd.DataFrame:
    """The rounds of `_pruned_search` for one prompt (bounds over `layers` × d_mlp, flattened):
    `score(pairs)` gives the exact scores of (layer, neuron) pairs. Rows: layer, neuron, score, rank."""
    sorted_bounds, order = bounds.sort(descending=True)
    sorted_bounds = (sorted_bounds + BOUND_SLACK).cpu()
    cutoff = -float("inf") if threshold is None else threshold
    done, values = 0, []
    round_size = k or len(order)
    while done < len(order):
        # bounds are sorted: the neurons that still clear the cutoff are a prefix of those left
        clearing = int((sorted_bounds[done:] >= cutoff).sum())
        if clearing == 0:
            break
        take = min(clearing, round_size)
        values.append(score([(layers[i // d_mlp], i % d_mlp) for i in order[done : done + take].tolist()]))
        done += take
        if k is not None and done >= k:
            cutoff = max(cutoff, float(torch.cat(values).topk(k).values[-1]))
        round_size *= 2
    log.debug("exact scores for %d of %d neurons", done, len(order))
    idx = order[:done]
    val = torch.cat(values) if values else bounds[:0]
    if threshold is not None:
        keep = val > threshold
        idx, val = idx[keep], val[keep]
    val, pos = val.sort(descending=True)
    if k is not None:
        val, pos = val[:k], pos[:k]
    idx = idx[pos].tolist()
    return pd.DataFrame(
        {
            "layer": [layers[i // d_mlp] for i in idx],
            "neuron": [i % d_mlp for i in idx],
            "score": val.tolist(),
            "rank": range(1, len(val) + 1),
        }
    )


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

        import ace_interp as ai
        model = ai.load_model("toy-gptj")
        top = ai.top_value_neurons(model, "anna kovac 's country is", " france", k=20)
        top.head()   # DataFrame, k rows per prompt: prompt, layer, neuron, score (nats), rank

    `prompts`: one string or a list of b; `targets`: one answer (string: its first token; or a token id)
    per prompt; `positions`: the token each prompt is scored at (default the last). A neuron's score is
    I(v) = log p(w | x^l + m^l_k fc2^l_k) − log p(w | x^l) under the frozen final norm (docs/attribution.md).
    Neurons are visited in order of the upper bound of `value_upper_bounds`; once the next bound is
    below the k-th best exact score found so far, no remaining neuron can enter the top k. Returns the
    same rows (prompt, layer, neuron, score, rank) as `value_scores(...).to_frame(k)` (ties aside),
    typically at a small fraction of the cost of the full sweep. Exact scores use the projected path.
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
    upper bound (`value_upper_bounds`) is below the threshold are never evaluated. Rows: prompt, layer, neuron, score, rank."""
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
        with torch.no_grad():  # every prompt on the union, sharing each layer's P_l rows
            exact = _projected_scores_for(bridge, acts, range(len(prompts)), target_ids, union, memory_budget).mean(0)
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
                total = (acts.residual_coefficients[b, j, chosen, None] * residual_sub_values(bridge, l)[chosen]).sum(0)
                joint = log_prob_increase(bridge, acts.x[b, j], total[None], int(target_ids[b]), scale)[0]
                parts = s[chosen].sum()
                rows.append(
                    dict(prompt=b, layer=l, n_neurons=len(chosen), joint=float(joint), sum_of_parts=float(parts))
                )
    frame = pd.DataFrame(rows)
    frame["difference"] = frame["joint"] - frame["sum_of_parts"]
    return frame
