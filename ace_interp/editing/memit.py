"""MEMIT (Meng et al., 2023): one residual target z at the last edit layer, spread over a layer range.

    z_i = h^{L}_i + δ_i                                   (targets.compute_z, site "resid", L = max(layers))
    for the j-th of the layers l (ascending):
        K^l = keys at l (averaged over context prefixes), on the model with layers < l already edited
        R   = (z − h^{L}(current model)) / (number of layers left, incl. l)
        Δ^l = solve_key_value(K^l, R, C^l, λ)                 (solver.py)

`spread_write` runs that loop for any list of steps; PMET and ACE use it with the FFN output as the
target site and a square-root divisor. Intermediate writes go through the transactional weight layer
and are undone before returning, so the caller applies all layer deltas as one undoable edit.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from ace_interp.editing.covariance import second_moments
from ace_interp.editing.hparams import CovarianceHParams, MEMITHParams
from ace_interp.editing.keys import IncrementalForward, build_batch, compute_keys, hf_runner, n_owners, outputs_at_subject
from ace_interp.editing.requests import EditRequest
from ace_interp.editing.solver import regularised_cholesky, solve_key_value, write_map
from ace_interp.editing.targets import compute_targets
from ace_interp.editing.timing import stage
from ace_interp.model.weights import apply_weight_updates

log = logging.getLogger(__name__)


@dataclass
class MethodResult:
    """What an editor computed: deltas per (layer, "W_out" | "W_O") in TL orientation [d_key, d_model], and
    diagnostics."""

    updates: dict[tuple[int, str], Float[Tensor, "d_key d_model"]]
    info: dict = field(default_factory=dict)

    @property
    def layers(self) -> list[int]:
        return sorted({l for l, _ in self.updates})


@dataclass
class SpreadStep:
    """Write layer `layer` so the `site` output of `z_layer` moves towards z by (z − current) / divisor."""

    layer: int
    z: Float[Tensor, "n d_model"]
    z_layer: int
    site: str  # "resid", "mlp" or "attn"
    divisor: float
    scale: float = 1.0  # extra factor on the residual (ACE's query_weight)
    # which matrix of `layer` is written: the FFN's W_out (keys: the down-projection's input) or the attention
    # output projection W_O (keys: its input, the heads' concatenated outputs; ACE's release, `write_attention`)
    writes: Literal["W_out", "W_O"] = "W_out"


def spread_divisors(n_layers: int, kind: str) -> list[float]:
    """MEMIT: layers left (L, L−1, …, 1); PMET/ACE: their square roots."""
    left = [n_layers - j for j in range(n_layers)]
    if kind == "linear":
        return [float(x) for x in left]
    if kind == "sqrt":
        return [math.sqrt(x) for x in left]
    raise ValueError(f"unknown spread {kind!r}; expected 'linear' or 'sqrt'")


def load_second_moments(
    bridge: TransformerBridge, layers: Sequence[int], cov: CovarianceHParams, site: str = "mlp"
) -> dict[int, Tensor]:
    with stage("covariance"):
        return second_moments(bridge, layers, corpus=cov.corpus, n_tokens=cov.n_tokens, seq_len=cov.seq_len,
                              progress=cov.progress, site=site)


def target_write_map(
    bridge: TransformerBridge,
    requests: Sequence[EditRequest],
    layer: int,
    contexts: Sequence[str],
    cov: CovarianceHParams,
    cov_weight: float | None = None,
    owners: Sequence[int] | None = None,
    fact_token: str = "subject_last",
) -> Tensor:
    """U = C⁻¹Kᵀ(KC⁻¹Kᵀ + λI)⁻¹ at `layer` for the requests' keys (`solver.write_map`; `owners` as in
    `keys.compute_keys`): the map a target optimised through the write (`TargetHParams.through_write`) is
    added with."""
    with stage("keys"):
        keys = compute_keys(bridge, requests, [layer], contexts, per_context=cov.per_context_keys, owners=owners,
                            weights=cov.key_weights(contexts), fact_token=fact_token)[layer]
    moments = load_second_moments(bridge, [layer], cov)[layer]
    with stage("solve"):
        weight = cov.cov_weight if cov_weight is None else cov_weight
        return write_map(keys, moments, cov_weight=weight, ridge=cov.ridge, min_realised=cov.min_realised)


def residual_target(
    bridge: TransformerBridge,
    requests: Sequence[EditRequest],
    z_layer: int,
    z_mlp: Float[Tensor, "n d_model"],
    fact_token: str = "subject_last",
) -> Float[Tensor, "n d_model"]:
    """An FFN-output target z = F^L + δ re-expressed on the residual after block L: z_h = h^L + (z − F^L),
    at the subject's last token of the bare prompts (where `spread_write` measures what is left)."""
    with torch.no_grad():
        ffn = outputs_at_subject(bridge, requests, z_layer, "mlp", fact_token=fact_token)
        resid = outputs_at_subject(bridge, requests, z_layer, "resid", fact_token=fact_token)
    return resid + (z_mlp - ffn)


def sqrt_spread_steps(
    bridge: TransformerBridge,
    requests: Sequence[EditRequest],
    layers: Sequence[int],
    z_mlp: Float[Tensor, "n d_model"],
    z_layer: int,
    accounting: str = "ffn",
    scale: float = 1.0,
    fact_token: str = "subject_last",
) -> list[SpreadStep]:
    """PMET/ACE's spread of an FFN-output target z over `layers` (divisors sqrt(layers left)), with what is
    left measured on z_layer's FFN output ("ffn", the reference) or on its residual ("residual")."""
    if accounting not in ("ffn", "residual"):
        raise ValueError(f"unknown spread accounting {accounting!r}; expected 'ffn' or 'residual'")
    z, site = (residual_target(bridge, requests, z_layer, z_mlp, fact_token), "resid") if accounting == "residual" else (z_mlp, "mlp")
    return [SpreadStep(l, z, z_layer, site, d, scale) for l, d in zip(layers, spread_divisors(len(layers), "sqrt"))]


def spread_write(
    bridge: TransformerBridge,
    requests: Sequence[EditRequest],
    steps: Sequence[SpreadStep],
    contexts: Sequence[str],
    cov: CovarianceHParams,
    owners: Sequence[int] | None = None,
    solve: Callable[[int, Tensor, Tensor], Tensor] | None = None,
    fact_token: str = "subject_last",
) -> MethodResult:
    """Run the layer-by-layer key→value writes; return the summed deltas (the model is left unchanged).

    `solve(layer, keys, residual) -> delta` replaces the covariance-weighted solve (AlphaEdit's null-space
    solve, `alphaedit.py`); by default `solver.solve_key_value` with the layer's statistics.

    `owners` (as in `keys.compute_keys`) makes the requests of one owner a single key row (their keys and
    current outputs averaged) with one residual, the step's z row of that owner.

    Per step: K^l = keys at l averaged over `contexts` and the current site output at the subject's last
    token of the bare prompts, both on the model with the earlier steps written (`IncrementalForward`
    resumes each from the residual entering the previously written layer; `compute_keys` and
    `outputs_at_subject` are the from-scratch reference the tests compare against).
    """
    runner = hf_runner(bridge)
    if solve is None:
        moments: dict[tuple[int, str], Tensor] = {}
        for writes, site in (("W_out", "mlp"), ("W_O", "attn")):
            layers = sorted({s.layer for s in steps if s.writes == writes})
            if layers:
                moments.update({(l, writes): c for l, c in load_second_moments(bridge, layers, cov, site).items()})
        # one written matrix's float64 factor at a time (8·d_mlp² bytes, 2 GiB at GPT-J's 16,384): factoring every
        # written layer up front held n of them; a matrix met again (not in the released plans) is factored again
        factor_of: dict[tuple[int, str], Tensor] = {}

        def solve(step: SpreadStep, keys: Tensor, residual: Tensor) -> Tensor:
            matrix = (step.layer, step.writes)
            if matrix not in factor_of:
                factor_of.clear()
                with stage("solve"):
                    factor_of[matrix] = regularised_cholesky(moments[matrix], cov.ridge)
            return solve_key_value(keys, residual, cov_weight=cov.cov_weight, cholesky=factor_of[matrix],
                                   min_realised=cov.min_realised)
    elif any(s.writes != "W_out" for s in steps):
        raise ValueError("a custom solve writes W_out only")
    else:
        custom = solve

        def solve(step: SpreadStep, keys: Tensor, residual: Tensor) -> Tensor:
            return custom(step.layer, keys, residual)

    n = n_owners(requests, owners)
    key_batch = build_batch(bridge, requests, contexts, owners=owners, fact_token=fact_token)
    bare = build_batch(bridge, requests, ("",), owners=owners, fact_token=fact_token)
    key_pass, bare_pass = IncrementalForward(runner, key_batch.tokens), IncrementalForward(runner, bare.tokens)
    sites = {"resid": runner.blocks, "mlp": runner.mlp, "attn": runner.attn}

    def current_output(step: SpreadStep) -> Tensor:
        out = bare_pass.read(sites[step.site][step.z_layer], min(step.layer, step.z_layer))
        return bare.mean_per_owner(out[bare.rows, bare.lookup], n)

    def read_keys(step: SpreadStep) -> Tensor:
        module = runner.down_proj[step.layer] if step.writes == "W_out" else runner.attention_output(step.layer)
        m = key_pass.read(module, step.layer, what="input")
        return key_batch.keys_per_owner(m[key_batch.rows, key_batch.lookup], n, cov.per_context_keys,
                                        cov.key_weights(contexts))

    updates: dict[tuple[int, str], Tensor] = {}
    residual_norms = []
    temporary = []
    read_early: dict[tuple[int, str], Tensor] = {}
    try:
        for i, step in enumerate(steps):
            with stage("keys"):
                keys = read_early.pop((step.layer, step.writes), None)
                keys = read_keys(step) if keys is None else keys
                # a layer whose W_O and W_out are both written: ACE's release reads both matrices' keys before
                # writing either (ace_main.py, compute_ks_parallel once per layer)
                for later in steps[i + 1:]:
                    if later.layer != step.layer:
                        break
                    if later.writes != step.writes:
                        read_early[later.layer, later.writes] = read_keys(later)
                current = current_output(step)
            with stage("solve"):
                residual = step.scale * (step.z - current) / step.divisor
                key, delta = (step.layer, step.writes), solve(step, keys, residual)  # TL orientation [d_key, d_model]
                residual_norms.append(float((step.z - current).norm(dim=-1).mean()))
                temporary.append(apply_weight_updates(bridge, {key: delta}, label="spread-write step"))
                key_pass.written(step.layer)
                bare_pass.written(step.layer)
            updates[key] = updates[key] + delta if key in updates else delta
        if steps:
            last = steps[-1]
            with stage("keys"):
                final = current_output(last)
            residual_norms.append(float((last.z - final).norm(dim=-1).mean()))
    finally:
        with stage("solve"):
            for e in reversed(temporary):
                e.undo()
    return MethodResult(updates, {"residual_norms": residual_norms})


def memit_updates(
    bridge: TransformerBridge, requests: Sequence[EditRequest], hp: MEMITHParams, contexts: Sequence[str]
) -> MethodResult:
    layers = sorted(hp.layers)
    z_layer = layers[-1]
    mapping = (target_write_map(bridge, requests, z_layer, contexts, hp.covariance, fact_token=hp.target.fact_token)
               if hp.target.through_write else None)
    target = compute_targets(bridge, requests, z_layer, hp.target, contexts, sites=("resid",), write_map=mapping)
    z = target.targets["resid"]
    divisors = spread_divisors(len(layers), "linear")
    steps = [SpreadStep(l, z, z_layer, "resid", d) for l, d in zip(layers, divisors)]
    result = spread_write(bridge, requests, steps, contexts, hp.covariance, fact_token=hp.target.fact_token)
    result.info.update(target_prob=target.target_prob, target_losses=target.losses, z_layer=z_layer, target=target,
                       n_evals=target.n_evals, stop_reasons=target.stop_reasons)
    return result
