"""Vocabulary projection of neurons: which tokens a neuron's sub-value fc2_k promotes.

The direction a neuron writes is read through the final norm's weight and the unembedding,
W_U (γ ⊙ c(fc2_k)) (c = mean-centring for LayerNorm, identity for RMSNorm; the norm's positive scale does
not change the ranking). A neuron with a negative coefficient writes −fc2_k, so pass its sign.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch
from transformer_lens.model_bridge import TransformerBridge

from ace_interp.model import model_spec, residual_sub_values_of
from ace_interp.model.architecture import final_norm_module, unembed_module


def neuron_logit_directions(
    bridge: TransformerBridge, neurons: Sequence[tuple[int, int]], signs: Sequence[float] | None = None
) -> torch.Tensor:
    """[n, d_vocab]: W_U (γ ⊙ c(sign · fc2_k)) for each (layer, neuron)."""
    norm = final_norm_module(bridge)
    gamma = norm.weight + 1.0 if getattr(bridge.cfg, "rmsnorm_uses_offset", False) else norm.weight
    vectors = residual_sub_values_of(bridge, neurons)
    if signs is not None:
        vectors = vectors * torch.as_tensor(list(signs), dtype=vectors.dtype, device=vectors.device)[:, None]
    if model_spec(bridge).normalization == "layernorm":
        vectors = vectors - vectors.mean(-1, keepdim=True)
    with torch.no_grad():
        return (gamma * vectors) @ unembed_module(bridge).weight.T


def neuron_top_tokens(
    bridge: TransformerBridge, neurons: Sequence[tuple[int, int]], k: int = 10, signs: Sequence[float] | None = None
) -> pd.DataFrame:
    """The k tokens each neuron promotes most: one row per neuron with its tokens as a list."""
    neurons = [(int(l), int(n)) for l, n in neurons]
    directions = neuron_logit_directions(bridge, neurons, signs)
    top = directions.topk(k, dim=-1).indices
    decode = bridge.tokenizer.decode
    return pd.DataFrame(
        {
            "layer": [l for l, _ in neurons],
            "neuron": [n for _, n in neurons],
            "top_tokens": [[decode([i]) for i in row] for row in top.tolist()],
        }
    )
