"""What kind of transformer a bridge wraps, and where its FFN weights really live.

TransformerLens 4's `TransformerBridge` wraps a HuggingFace model and exposes stacked, *copied* weights
(`bridge.W_out` etc.). Edits must land on the HF parameters themselves, so everything here resolves a
TL-named weight (`W_in`, `W_gate`, `W_out`, `b_in`, `b_out`) of layer `l` to a view that shares storage
with the wrapped HF parameter, oriented the TransformerLens way:

    W_in[l], W_gate[l]: [d_model, d_mlp]  (column k = sub-key fc1_k / gate key)
    W_out[l]:           [d_mlp, d_model]  (row k = sub-value fc2_k)

HF stores `nn.Linear` weights as [out, in] (so the TL view is `weight.T`) and GPT-2's `Conv1D` as
[in, out] (the TL view is the weight itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from transformer_lens.model_bridge import TransformerBridge

FFNComponent = Literal["W_in", "W_gate", "W_out", "b_in", "b_out"]
FFN_COMPONENTS: tuple[str, ...] = ("W_in", "W_gate", "W_out", "b_in", "b_out")

# HF model classes whose name ends like this predict the next token.
_CAUSAL_LM_SUFFIXES = ("ForCausalLM", "LMHeadModel")


class UnsupportedModelError(ValueError):
    """The model is not a causal LM with a dense (non-MoE) FFN that ace-interp can take apart."""


@dataclass(frozen=True)
class ModelSpec:
    """The facts about a model that attribution and editing branch on."""

    architecture: str  # HF class name, e.g. "GPTJForCausalLM"
    n_layers: int
    d_model: int
    d_mlp: int
    d_vocab: int
    gated_mlp: bool  # SwiGLU-style: m = act(x W_gate) * (x W_in)
    parallel_attn_mlp: bool  # GPT-J/NeoX: attention and MLP read the same residual
    normalization: Literal["layernorm", "rmsnorm"]
    act_fn: str
    # Gemma-2/3: an RMSNorm between W_out and the residual (post_feedforward_layernorm), so m_k·fc2_k is not
    # what reaches the residual; attribution freezes its divisor (`neurons.residual_sub_values`)
    ffn_output_norm: bool = False

    @property
    def n_neurons(self) -> int:
        return self.n_layers * self.d_mlp

    def summary(self) -> str:
        """A few lines describing the model at the neuron level (`ace info` prints them).

            print(model_spec(load_model("toy-gptj")).summary())
        """
        mlp = "gated " + self.act_fn if self.gated_mlp else self.act_fn
        blocks = "parallel attention+MLP" if self.parallel_attn_mlp else "sequential attention then MLP"
        return "\n".join(
            [
                f"architecture      {self.architecture} ({blocks}, {self.normalization}, {mlp} MLP)",
                f"layers            {self.n_layers}",
                f"d_model           {self.d_model}",
                f"neurons per layer {self.d_mlp}  (total {self.n_neurons:,} FFN neurons)",
                f"vocabulary        {self.d_vocab:,}",
            ]
        )


def _hf_leaf(component: nn.Module) -> nn.Module:
    """The HF module behind a bridge component (the component itself when it is already HF)."""
    return getattr(component, "original_component", None) or component


def hf_model(bridge: TransformerBridge) -> nn.Module:
    """The wrapped HuggingFace model (its parameters are the bridge's parameters)."""
    return bridge.original_model


def check_supported(bridge: TransformerBridge) -> ModelSpec:
    """Return the model's `ModelSpec`, or raise `UnsupportedModelError` saying what is missing."""
    cls_name = type(hf_model(bridge)).__name__
    if not cls_name.endswith(_CAUSAL_LM_SUFFIXES):
        raise UnsupportedModelError(
            f"{cls_name} is not a causal language model: ace-interp needs a *ForCausalLM / *LMHeadModel "
            "(next-token prediction over a vocabulary)."
        )
    cfg = bridge.cfg
    if getattr(cfg, "num_experts", None):
        raise UnsupportedModelError(
            f"{cls_name} has a mixture-of-experts FFN ({cfg.num_experts} experts); neuron-level attribution "
            "and editing here assume one dense FFN per layer."
        )
    if getattr(cfg, "attn_only", False):
        raise UnsupportedModelError(f"{cls_name} is attention-only: it has no FFN neurons.")
    mlp = bridge.blocks[0].mlp
    for part in ("in", "out"):
        leaf = _hf_leaf(getattr(mlp, part)) if hasattr(mlp, part) else None
        if not isinstance(leaf, nn.Linear) and type(leaf).__name__ != "Conv1D":
            raise UnsupportedModelError(
                f"{cls_name}: the FFN has no separate linear '{part}' projection that TransformerLens exposes "
                "(fused or exotic MLPs are not supported)."
            )
    post = _hf_leaf(bridge.blocks[0].ln2_post) if hasattr(bridge.blocks[0], "ln2_post") else None
    if post is not None and not _is_plain_rmsnorm(post):
        raise UnsupportedModelError(
            f"{cls_name}: the FFN output goes through {type(post).__name__} after W_out; value attribution "
            "freezes only an RMSNorm there (Gemma-2/3's post_feedforward_layernorm)."
        )
    norm = "rmsnorm" if str(cfg.normalization_type or "").upper().startswith("RMS") else "layernorm"
    return ModelSpec(
        architecture=cls_name,
        n_layers=cfg.n_layers,
        d_model=cfg.d_model,
        d_mlp=cfg.d_mlp,
        d_vocab=cfg.d_vocab,
        gated_mlp=bool(cfg.gated_mlp),
        parallel_attn_mlp=bool(getattr(cfg, "parallel_attn_mlp", False)),
        normalization=norm,
        act_fn=str(cfg.act_fn),
        ffn_output_norm=post is not None,
    )


def _is_plain_rmsnorm(module: nn.Module) -> bool:
    """An RMSNorm with a weight and no bias (x / sqrt(mean x² + eps) · γ): the only post-FFN transform we freeze."""
    return (
        "RMSNorm" in type(module).__name__
        and getattr(module, "weight", None) is not None
        and getattr(module, "bias", None) is None
    )


def model_spec(bridge: TransformerBridge) -> ModelSpec:
    """The model's `ModelSpec` (layers, widths, MLP and norm kinds); `UnsupportedModelError` when ace-interp
    cannot take it apart."""
    return check_supported(bridge)


def check_layer(bridge: TransformerBridge, layer: int) -> int:
    """Validate a layer index (negative indices count from the end) and return it as non-negative."""
    n = bridge.cfg.n_layers
    if not isinstance(layer, int) or isinstance(layer, bool):
        raise TypeError(f"layer must be an int, got {type(layer).__name__}")
    if not -n <= layer < n:
        raise IndexError(f"unknown layer {layer}: the model has {n} layers (0..{n - 1})")
    return layer % n


def resolve_layers(bridge: TransformerBridge, layers=None) -> list[int]:
    """All layers when `layers` is None, else each one validated (negative indices count from the end)."""
    return list(range(bridge.cfg.n_layers)) if layers is None else [check_layer(bridge, l) for l in layers]


def _ffn_module(bridge: TransformerBridge, layer: int, part: str) -> nn.Module:
    mlp = bridge.blocks[check_layer(bridge, layer)].mlp
    if not hasattr(mlp, part):
        raise UnsupportedModelError(f"layer {layer}'s FFN has no '{part}' projection (is the MLP gated?)")
    return _hf_leaf(getattr(mlp, part))


def _tl_view(module: nn.Module, attr: str) -> torch.Tensor:
    """TL-oriented view of `module.<attr>` sharing storage with the HF parameter."""
    t = getattr(module, attr)
    if attr == "bias" or type(module).__name__ == "Conv1D":
        return t
    return t.T  # nn.Linear stores [out, in]


def ffn_weight(bridge: TransformerBridge, layer: int, component: str) -> torch.Tensor | None:
    """TL-oriented view of one FFN weight of `layer`, sharing storage with the wrapped HF parameter.

    Writing into the returned tensor in place changes the model. Returns None for a bias the model
    does not have; raises for `W_gate` on a non-gated MLP.
    """
    if component not in FFN_COMPONENTS:
        raise KeyError(f"unknown FFN component {component!r}; expected one of {FFN_COMPONENTS}")
    part = {"W_in": "in", "b_in": "in", "W_gate": "gate", "W_out": "out", "b_out": "out"}[component]
    if component == "W_gate" and not bridge.cfg.gated_mlp:
        raise UnsupportedModelError("W_gate exists only for gated MLPs; this model's MLP is not gated")
    module = _ffn_module(bridge, layer, part)
    attr = "bias" if component.startswith("b_") else "weight"
    if getattr(module, attr, None) is None:
        return None
    return _tl_view(module, attr)


def attention_output_weight(bridge: TransformerBridge, layer: int) -> torch.Tensor:
    """TL-oriented view [d_in, d_model] of layer `layer`'s attention output projection (GPT-J `out_proj`,
    Llama/Qwen3 `o_proj`: an nn.Linear), sharing storage with the HF parameter; d_in is the heads' concatenated
    output. ACE's release writes it beside W_out (`ACEHParams.write_attention`)."""
    attn = _hf_leaf(bridge.blocks[check_layer(bridge, layer)].attn)
    out = next((_hf_leaf(getattr(attn, n)) for n in ("o_proj", "out_proj") if getattr(attn, n, None) is not None), None)
    if not isinstance(out, nn.Linear):
        raise UnsupportedModelError(f"layer {layer}'s attention has no Linear output projection (o_proj / out_proj); "
                                    "writing attention is implemented for GPT-J, Llama and Qwen3 models")
    return out.weight.T


def final_norm_module(bridge: TransformerBridge) -> nn.Module:
    return _hf_leaf(bridge.ln_final)


def ffn_output_norm_module(bridge: TransformerBridge, layer: int) -> nn.Module | None:
    """The norm applied to layer `layer`'s FFN output before it reaches the residual (Gemma-2/3's
    `post_feedforward_layernorm`, TransformerLens's `ln2_post`), or None when W_out writes straight into it."""
    block = bridge.blocks[check_layer(bridge, layer)]
    return _hf_leaf(block.ln2_post) if hasattr(block, "ln2_post") else None


def unembed_module(bridge: TransformerBridge) -> nn.Module:
    """The HF output embedding (lm_head) actually used by the forward pass."""
    return _hf_leaf(hf_model(bridge).get_output_embeddings())


_REFERENCE_KEYS: dict[tuple[type, str], tuple[str, ...]] = {}


def _reference_keys(model_class: type, config_json: str, config) -> tuple[str, ...]:
    """The state-dict names a fresh `model_class(config)` has, built once per (class, config contents): building
    even a meta-device model costs ~40 ms, and `hf_parameters` runs on every edit's statistics look-up."""
    key = (model_class, config_json)
    if key not in _REFERENCE_KEYS:
        with torch.device("meta"):
            _REFERENCE_KEYS[key] = tuple(model_class(config).state_dict().keys())
    return _REFERENCE_KEYS[key]


def hf_parameters(bridge: TransformerBridge) -> dict[str, torch.Tensor]:
    """The wrapped model's parameters and buffers under their HuggingFace checkpoint names.

    The bridge nests HF modules as `._original_component` and adds alias entries (split q/k/v, ...);
    the names kept are exactly those a fresh HF model of the same class has, so the result can be saved
    as a HF checkpoint or written to by name.
    """
    model = hf_model(bridge)
    reference_keys = _reference_keys(type(model), model.config.to_json_string(use_diff=False), model.config)
    actual = {
        name.replace("._original_component", ""): t for name, t in model.state_dict(keep_vars=True).items()
    }
    missing = [k for k in reference_keys if k not in actual]
    if missing:
        raise UnsupportedModelError(f"cannot map the bridge's tensors back to HF names; missing {missing[:5]}")
    return {k: actual[k] for k in reference_keys}
