"""Neuron-level access: coefficients, sub-keys, sub-values, residual inputs, and the unembedding.

Notation (ACE paper): the FFN output of layer l is a weighted sum of neurons

    F^l = Σ_k m^l_k · fc2^l_k  (+ b_out)

with m^l the post-activation (post-gating) coefficients (`blocks.{l}.mlp.hook_post`), fc2^l_k row k of
`W_out[l]` (a *sub-value*), fc1^l_k column k of `W_in[l]` (a *sub-key*) and, for gated MLPs, column k of
`W_gate[l]` (a *gate key*). The FFN output is added to x^l = h^{l-1} + A^l: the residual entering the
block (`hook_resid_pre`) plus the attention output (`hook_attn_out`). That holds for sequential blocks
(GPT-2, Llama, Qwen3, where x^l = `hook_resid_mid`) and parallel ones (GPT-J), where attention and MLP
both read h^{l-1} and both outputs are added to it.

Gemma-2/3 renormalise the FFN output before adding it (post_feedforward_layernorm, an RMSNorm with
weight γ' and divisor s' = rms(F_raw)): what reaches the residual is γ' ⊙ F_raw / s'. With s' frozen at
its value on the actual FFN output (as attribution freezes the final norm's divisor), neuron k writes
(m_k / s') · (γ' ⊙ fc2_k): `NeuronActivations.residual_coefficients` (m / s') times
`residual_sub_values` (γ' ⊙ fc2); for every other model these are m and fc2 themselves. The frozen
contributions still sum exactly to the FFN output the model adds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge
from transformer_lens.utilities import get_act_name

from ace_interp.model.architecture import (
    check_layer,
    resolve_layers,
    ffn_output_norm_module,
    ffn_weight,
    final_norm_module,
    model_spec,
    unembed_module,
)

# the final norm's input (the last residual stream); `get_act_name` has no short name for it
FINAL_RESID_HOOK = "ln_final.hook_in"


# ----------------------------------------------------------------------------- weights as neurons


def sub_values(bridge: TransformerBridge, layer: int) -> Float[Tensor, "d_mlp d_model"]:
    """fc2^l_k for every neuron k: the rows of W_out[l] (a view of the live HF weight)."""
    return ffn_weight(bridge, layer, "W_out")


def norm_gamma(bridge: TransformerBridge, norm: torch.nn.Module) -> Float[Tensor, " d_model"]:
    """The multiplier γ of a norm module: its weight, or 1 + weight for Gemma-style offset RMSNorm."""
    return norm.weight + 1.0 if getattr(bridge.cfg, "rmsnorm_uses_offset", False) else norm.weight


def residual_sub_values(bridge: TransformerBridge, layer: int) -> Float[Tensor, "d_mlp d_model"]:
    """What one unit of `NeuronActivations.residual_coefficients` of neuron k writes into the residual:
    γ' ⊙ fc2^l_k under a post-FFN norm (Gemma-2/3; a new tensor), else fc2^l_k (the live weight's view)."""
    fc2 = sub_values(bridge, layer)
    post = ffn_output_norm_module(bridge, layer)
    fc2 = fc2 if post is None else fc2 * norm_gamma(bridge, post)
    return fc2.to(unembed_module(bridge).weight.device)  # a no-op on one device


def residual_sub_values_of(bridge: TransformerBridge, neurons: Sequence[tuple[int, int]]) -> Float[Tensor, "n d_model"]:
    """`residual_sub_values` rows of explicit (layer, neuron) pairs, in their order (each layer computed once)."""
    per_layer = {l: residual_sub_values(bridge, l) for l in dict.fromkeys(l for l, _ in neurons)}
    return torch.stack([per_layer[l][k] for l, k in neurons])


def sub_keys(bridge: TransformerBridge, layer: int) -> Float[Tensor, "d_model d_mlp"]:
    """fc1^l_k for every neuron k: the columns of W_in[l] (a view of the live HF weight)."""
    return ffn_weight(bridge, layer, "W_in")


def gate_keys(bridge: TransformerBridge, layer: int) -> Float[Tensor, "d_model d_mlp"] | None:
    """Gate keys (columns of W_gate[l]) for gated MLPs; None for plain MLPs."""
    if not bridge.cfg.gated_mlp:
        return None
    return ffn_weight(bridge, layer, "W_gate")


# ----------------------------------------------------------------------------- tokens and positions


def tokenize_prompts(
    bridge: TransformerBridge, prompts: str | Sequence[str]
) -> tuple[Int[Tensor, "batch seq"], Int[Tensor, " batch"]]:
    """Tokenise prompts as the bridge does (its BOS convention), right-padded into one batch.

    Returns the token ids and each prompt's length. Right padding keeps every real token at the same
    position (and rotary phase) it has when the prompt runs alone; causal attention never looks at
    the padding that follows it.
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    if len(prompts) == 0:
        raise ValueError("no prompts given")
    rows = [bridge.to_tokens(p)[0] for p in prompts]
    lengths = torch.tensor([len(r) for r in rows])
    pad = bridge.tokenizer.pad_token_id
    pad = pad if pad is not None else 0
    tokens = torch.full((len(rows), int(lengths.max())), pad, dtype=torch.long)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = r
    return tokens.to(bridge.cfg.device), lengths.to(bridge.cfg.device)


def resolve_positions(
    lengths: Int[Tensor, " batch"], positions: int | Sequence[int] = -1
) -> Int[Tensor, " batch"]:
    """Absolute token index per prompt; negative positions count back from each prompt's own end."""
    batch = len(lengths)
    pos = torch.as_tensor([positions] * batch if isinstance(positions, int) else list(positions))
    if len(pos) != batch:
        raise ValueError(f"got {len(pos)} positions for {batch} prompts")
    pos = pos.to(lengths.device)
    absolute = torch.where(pos < 0, lengths + pos, pos)
    bad = (absolute < 0) | (absolute >= lengths)
    if bad.any():
        i = int(bad.nonzero()[0])
        raise IndexError(f"position {int(pos[i])} is outside prompt {i} ({int(lengths[i])} tokens)")
    return absolute


# ----------------------------------------------------------------------------- activations


@dataclass
class NeuronActivations:
    """Activations at one chosen token position per prompt (all layers unless restricted).

    coefficients[b, i, k] = m^{layers[i]}_k, resid_pre = h^{l-1}, attn_out = A^l, and
    final_resid = the residual entering the final norm. `x` (= resid_pre + attn_out) is what the FFN
    output of each layer is added to.
    """

    layers: list[int]
    positions: Int[Tensor, " batch"]
    coefficients: Float[Tensor, "batch n_layers d_mlp"]
    resid_pre: Float[Tensor, "batch n_layers d_model"]
    attn_out: Float[Tensor, "batch n_layers d_model"]
    mlp_out: Float[Tensor, "batch n_layers d_model"]
    final_resid: Float[Tensor, "batch d_model"]
    logits: Float[Tensor, "batch d_vocab"]
    # divisor s' of the post-FFN norm on the actual FFN output (Gemma-2/3); None when the model has none
    ffn_out_scale: Float[Tensor, "batch n_layers 1"] | None = None

    @property
    def x(self) -> Float[Tensor, "batch n_layers d_model"]:
        return self.resid_pre + self.attn_out

    @property
    def residual_coefficients(self) -> Float[Tensor, "batch n_layers d_mlp"]:
        """m / s' (post-FFN norm frozen), the coefficients of `residual_sub_values`; m itself without one."""
        return self.coefficients if self.ffn_out_scale is None else self.coefficients / self.ffn_out_scale


def neuron_activations(
    bridge: TransformerBridge,
    prompts: str | Sequence[str],
    positions: int | Sequence[int] = -1,
    layers: Sequence[int] | None = None,
) -> NeuronActivations:
    """Run prompts once (batched) and collect neuron coefficients and residual inputs at `positions`."""
    layers = resolve_layers(bridge, layers)
    tokens, lengths = tokenize_prompts(bridge, prompts)
    pos = resolve_positions(lengths, positions)
    kinds = ("post", "resid_pre", "attn_out", "mlp_out")  # TransformerLens activation names (`get_act_name`)
    wanted = {FINAL_RESID_HOOK} | {get_act_name(kind, l) for kind in kinds for l in layers}
    post_norm = model_spec(bridge).ffn_output_norm
    if post_norm:
        wanted |= {f"blocks.{l}.ln2_post.hook_in" for l in layers}  # F_raw, the post-FFN norm's input
    with torch.no_grad():
        logits, cache = bridge.run_with_cache(tokens, names_filter=lambda name: name in wanted)
    # with a device_map the layers' activations live on their layers' devices: gather them where the
    # unembedding is, where every score is computed
    home = unembed_module(bridge).weight.device
    pos = pos.to(home)
    rows = torch.arange(len(pos), device=home)

    def at_pos(name: str) -> Tensor:
        return cache[name].to(home)[rows, pos]

    def stack(kind: str) -> Tensor:
        return torch.stack([at_pos(get_act_name(kind, l)) for l in layers], dim=1)

    return NeuronActivations(
        layers=layers,
        positions=pos,
        coefficients=stack("post"),
        resid_pre=stack("resid_pre"),
        attn_out=stack("attn_out"),
        mlp_out=stack("mlp_out"),
        final_resid=at_pos(FINAL_RESID_HOOK),
        logits=logits.to(home)[rows, pos],
        ffn_out_scale=torch.stack(
            [norm_divisor(ffn_output_norm_module(bridge, l), at_pos(f"blocks.{l}.ln2_post.hook_in"), False) for l in layers],
            dim=1,
        ) if post_norm else None,
    )


def mlp_coefficients(
    bridge: TransformerBridge,
    prompts: str | Sequence[str],
    positions: int | Sequence[int] = -1,
    layers: Sequence[int] | None = None,
) -> Float[Tensor, "batch n_layers d_mlp"]:
    """m^l at the chosen position of each prompt, for the chosen layers (all by default)."""
    return neuron_activations(bridge, prompts, positions, layers).coefficients


def ffn_output_from_neurons(
    bridge: TransformerBridge, layer: int, coefficients: Float[Tensor, "... d_mlp"]
) -> Float[Tensor, "... d_model"]:
    """F^l = Σ_k m_k · fc2_k + b_out, rebuilt from neuron coefficients (then the post-FFN norm, if any,
    with its own divisor: what the model adds to the residual)."""
    out = coefficients @ sub_values(bridge, layer)
    bias = ffn_weight(bridge, layer, "b_out")
    out = out if bias is None else out + bias
    post = ffn_output_norm_module(bridge, layer)
    return out if post is None else out / norm_divisor(post, out, False) * norm_gamma(bridge, post)


# ----------------------------------------------------------------------------- final norm + unembedding


def norm_divisor(norm: torch.nn.Module, x: Float[Tensor, "... d"], centred: bool) -> Float[Tensor, "... 1"]:
    """sqrt(mean(c(x)²) + eps) of a norm module (c = mean-centring for LayerNorm, identity for RMSNorm),
    in at least float32 (HF's RMSNorms compute it in float32 whatever the weights' dtype)."""
    eps = getattr(norm, "eps", None) or getattr(norm, "variance_epsilon", 1e-6)
    x = x.to(torch.promote_types(x.dtype, torch.float32))
    if centred:
        x = x - x.mean(-1, keepdim=True)
    return (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()


def final_norm_scale(bridge: TransformerBridge, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... 1"]:
    """The divisor the final norm applies to `resid`: sqrt(var + eps) for LayerNorm, RMS for RMSNorm
    (at least float32)."""
    return norm_divisor(final_norm_module(bridge), resid, model_spec(bridge).normalization == "layernorm")


def apply_final_norm(
    bridge: TransformerBridge,
    resid: Float[Tensor, "... d_model"],
    scale: Float[Tensor, "... 1"] | None = None,
) -> Float[Tensor, "... d_model"]:
    """The final norm on `resid`, optionally with a frozen divisor `scale` instead of resid's own.

    Freezing the scale at the value of the model's actual final residual makes the norm linear in
    the residual, which is what neuron attribution needs (adding a small vector must not rescale
    everything else).
    """
    norm = final_norm_module(bridge)
    is_layernorm = model_spec(bridge).normalization == "layernorm"
    if scale is None:
        scale = final_norm_scale(bridge, resid)
    centred = resid - resid.mean(-1, keepdim=True) if is_layernorm else resid
    out = centred / scale * norm_gamma(bridge, norm)  # Gemma-style RMSNorm multiplies by (1 + w)
    bias = getattr(norm, "bias", None)
    return out if bias is None else out + bias


def unembed(bridge: TransformerBridge, normed: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_vocab"]:
    """Logits from a normalised residual through the model's own lm_head (and soft cap, if any)."""
    head = unembed_module(bridge)
    # the frozen divisor is float32: bring the normalised residual back to the head's dtype (bf16 models)
    logits = F.linear(normed.to(head.weight.dtype), head.weight, getattr(head, "bias", None))
    cap = getattr(bridge.cfg, "output_logits_soft_cap", -1.0) or -1.0
    if cap > 0:
        logits = cap * torch.tanh(logits / cap)
    return logits


def residual_log_probs(
    bridge: TransformerBridge,
    resid: Float[Tensor, "... d_model"],
    scale: Float[Tensor, "... 1"] | None = None,
) -> Float[Tensor, "... d_vocab"]:
    """log p(· | resid): final norm (recomputed, or with a frozen `scale`), unembedding, log-softmax."""
    return unembed(bridge, apply_final_norm(bridge, resid, scale)).log_softmax(-1)
