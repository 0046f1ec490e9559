"""ROME (Meng et al., 2022): a rank-one write of W_out at one layer.

    k  = key at the layer (averaged over context prefixes)
    v* = F^{l}(k) + δ                            (targets.compute_targets, site "mlp" of the same layer)
    Δ  = solve_key_value(k, v* − (k W_out + b_out), C, λ = 0) = C⁻¹k (v* − k W_out − b_out)ᵀ / (kᵀC⁻¹k)

so the edited layer maps k to v* exactly while changing outputs of typical keys least (C-norm). Several
requests in one batch become the minimum-C-norm rank-n interpolation of all their keys (λ = 0).

With `CovarianceHParams(context_keys="each")` every context's key is a row of its own, each asked to move by δ
(`solver` docstring), which makes the write rank-c per request instead of rank-one.
"""

from __future__ import annotations

from collections.abc import Sequence

from transformer_lens.model_bridge import TransformerBridge

from ace_interp.editing.hparams import ROMEHParams
from ace_interp.editing.keys import compute_keys
from ace_interp.editing.memit import MethodResult, load_second_moments
from ace_interp.editing.requests import EditRequest
from ace_interp.editing.solver import solve_key_value, write_map
from ace_interp.editing.targets import compute_targets
from ace_interp.editing.timing import stage
from ace_interp.model.architecture import check_layer, ffn_weight


def rome_updates(
    bridge: TransformerBridge, requests: Sequence[EditRequest], hp: ROMEHParams, contexts: Sequence[str]
) -> MethodResult:
    layer = check_layer(bridge, hp.layer)
    weight = 0.0 if hp.exact else hp.covariance.cov_weight
    # keys and statistics of the unedited layer: the solve needs them, and so does a target optimised
    # through the write (computed once, before the target)
    with stage("keys"):
        keys = compute_keys(bridge, requests, [layer], contexts, per_context=hp.covariance.per_context_keys)[layer]
    second = load_second_moments(bridge, [layer], hp.covariance)[layer]
    mapping = None
    if hp.target.through_write:
        with stage("solve"):
            mapping = write_map(keys, second, cov_weight=weight, ridge=hp.covariance.ridge,
                                min_realised=hp.covariance.min_realised)
    target = compute_targets(bridge, requests, layer, hp.target, contexts, sites=("mlp",), write_map=mapping)
    w_out = ffn_weight(bridge, layer, "W_out")
    b_out = ffn_weight(bridge, layer, "b_out")
    with stage("solve"):
        if keys.ndim == 3:  # one row per context: each context's output moves by the δ added to all of them
            residual = target.deltas["mlp"]
        else:  # v* − F(k̄)
            residual = target.targets["mlp"] - (keys @ w_out + (0 if b_out is None else b_out))
        delta = solve_key_value(keys, residual, second, cov_weight=weight, ridge=hp.covariance.ridge,
                                min_realised=hp.covariance.min_realised)
    return MethodResult(
        {(layer, "W_out"): delta},
        {"target_prob": target.target_prob, "target_losses": target.losses, "keys": keys, "values": target.targets["mlp"]},
    )
