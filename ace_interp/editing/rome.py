"""ROME (Meng et al., 2022): a rank-one write of W_out at one layer.

    k  = key at the layer (averaged over context prefixes)
    v* = F^{l}(k) + δ                            (targets.compute_targets, site "mlp" of the same layer)
    Δ  = solve_key_value(k, v* − (k W_out + b_out), C, λ = 0) = C⁻¹k (v* − k W_out − b_out)ᵀ / (kᵀC⁻¹k)

so the edited layer maps k to v* exactly while changing outputs of typical keys least (C-norm). Several
requests in one batch become the minimum-C-norm rank-n interpolation of all their keys (λ = 0).

With `CovarianceHParams(context_keys="each")` every context's key is a row of its own, each asked to move by δ
(`solver` docstring), which makes the write rank-c per request instead of rank-one.

`ROMEHParams(solve="rome")` (the reference preset) is ROME's own formula (rome_main.execute_rome, compute_u,
compute_v): u = C⁻¹k̄ with k̄ the key averaged over the contexts, divided by the bare prompt's key, and the
current output read on the bare prompt; a batch is written one request after another.

    Δ = C⁻¹k̄ (v* − F(k_bare))ᵀ / (k_bareᵀ C⁻¹ k̄)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformer_lens.model_bridge import TransformerBridge

from ace_interp.editing.hparams import ROMEHParams
from ace_interp.editing.keys import compute_keys, outputs_at_subject
from ace_interp.editing.memit import MethodResult, load_second_moments
from ace_interp.editing.requests import EditRequest
from ace_interp.editing.solver import regularised_cholesky, solve_key_value, write_map
from ace_interp.editing.targets import compute_targets
from ace_interp.editing.timing import stage
from ace_interp.model.architecture import check_layer, ffn_weight
from ace_interp.model.weights import apply_weight_updates


def rome_updates(
    bridge: TransformerBridge, requests: Sequence[EditRequest], hp: ROMEHParams, contexts: Sequence[str]
) -> MethodResult:
    layer = check_layer(bridge, hp.layer)
    if hp.solve == "rome":
        return _rome_reference(bridge, requests, hp, contexts, layer)
    if hp.solve != "shared":
        raise ValueError(f"unknown ROME solve {hp.solve!r}; expected 'shared' or 'rome'")
    weight = 0.0 if hp.exact else hp.covariance.cov_weight
    # keys and statistics of the unedited layer: the solve needs them, and so does a target optimised
    # through the write (computed once, before the target)
    with stage("keys"):
        keys = compute_keys(bridge, requests, [layer], contexts, per_context=hp.covariance.per_context_keys,
                            fact_token=hp.target.fact_token)[layer]
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


def _rome_reference(
    bridge: TransformerBridge, requests: Sequence[EditRequest], hp: ROMEHParams, contexts: Sequence[str], layer: int
) -> MethodResult:
    """ROME's released update, request after request on the model the previous ones left (apply_rome_to_model).

    Per request: k̄ = mean key over `contexts` (compute_u), C⁻¹k̄ in float64 without ridge beyond
    `covariance.ridge` (the release inverts C in float32: ≤ 1.2e-4 relative difference in Δ on the parity toy),
    v* from `compute_targets` at the FFN output, and k_bare, F(k_bare) on the bare prompt (compute_v)."""
    second = load_second_moments(bridge, [layer], hp.covariance)[layer]
    factor = regularised_cholesky(second, hp.covariance.ridge)
    total = None
    temporary = []
    probs, losses, values, n_evals, reasons, mean_keys = [], [], [], [], [], []
    try:
        for request in requests:
            with stage("keys"):
                k_mean = compute_keys(bridge, [request], [layer], contexts, fact_token=hp.target.fact_token)[layer][0].to(torch.float64)
                k_bare = compute_keys(bridge, [request], [layer], ("",), fact_token=hp.target.fact_token)[layer][0].to(torch.float64)
                current = outputs_at_subject(bridge, [request], layer, "mlp", fact_token=hp.target.fact_token)[0]
            target = compute_targets(bridge, [request], layer, hp.target, contexts, sites=("mlp",))
            with stage("solve"):
                c_inv_k = torch.cholesky_solve(k_mean[:, None], factor.to(k_mean.device))[:, 0]  # C⁻¹k̄
                residual = (target.targets["mlp"][0] - current).to(torch.float64)
                delta = (torch.outer(c_inv_k, residual) / (k_bare @ c_inv_k)).to(current.dtype)  # [d_mlp, d_model]
                temporary.append(apply_weight_updates(bridge, {(layer, "W_out"): delta}, label="rome request"))
            total = delta if total is None else total + delta
            probs.append(target.target_prob)
            losses.append(target.losses)
            values.append(target.targets["mlp"][0])
            n_evals += target.n_evals
            reasons += target.stop_reasons
            mean_keys.append(k_mean.to(current.dtype))
    finally:
        for e in reversed(temporary):
            e.undo()
    return MethodResult(
        {(layer, "W_out"): total},
        {"target_prob": torch.cat(probs), "target_losses": losses, "keys": torch.stack(mean_keys),
         "values": torch.stack(values), "n_evals": n_evals, "stop_reasons": reasons},
    )
