"""PMET (Li et al., AAAI 2024): FFN-only write with a jointly optimised attention/FFN target.

    (δ_attn, δ_ffn) = argmin loss (targets.compute_z_pmet at the last layer L: both deltas added at the
                      subject's last token; weight decay ‖δ‖/‖z_0‖^p on each: p = 2 in the release, the
                      reference preset; the tuned preset uses p = 1)
    z = F^{L} + δ_ffn                     only the FFN part is a write target; attention stays unchanged
    for the j-th of the layers l:  R = (z − F^{L}(current)) / sqrt(layers left),  Δ^l = solve(K^l, R, C^l, λ)

`spread_accounting="residual"` measures what is left on the residual after L instead,
R = (h^L + δ_ffn − h^L(current)) / sqrt(layers left), so earlier layers' writes count (docs/ace.md, "Spread
accounting"); the reference's FFN-output accounting adds each layer's share on top of the others'.

Optimising the attention delta alongside lets the FFN delta carry only what FFNs should store
("precise" editing), and the square root spreads more of the change into the early layers than MEMIT's 1/n.

In a parallel block (GPT-J: h + attn(ln h) + mlp(ln h)) both deltas reach the residual only through their sum, so
their NLL and KL gradients are identical; from zero under one Adam they stay equal (cosine 1.000000 in every
parity fixture), and the written FFN half carries about half of the optimised shift. That is the release's real
behaviour (../shared/parity/README.md: reference PMET edits 1 of 8 parity facts on toy-gptj) and why the tuned
preset drops the attention delta on the toys (docs/presets.md).
"""

from __future__ import annotations

from collections.abc import Sequence

from transformer_lens.model_bridge import TransformerBridge

from ace_interp.editing.hparams import PMETHParams
from ace_interp.editing.memit import MethodResult, spread_write, sqrt_spread_steps, target_write_map
from ace_interp.editing.requests import EditRequest
from ace_interp.editing.targets import compute_z_pmet


def pmet_updates(
    bridge: TransformerBridge, requests: Sequence[EditRequest], hp: PMETHParams, contexts: Sequence[str]
) -> MethodResult:
    layers = sorted(hp.layers)
    z_layer = layers[-1]
    mapping = (target_write_map(bridge, requests, z_layer, contexts, hp.covariance, fact_token=hp.target.fact_token)
               if hp.target.through_write else None)
    target = compute_z_pmet(bridge, requests, z_layer, hp.target, contexts, write_map=mapping, joint_attention=hp.joint_attention)
    steps = sqrt_spread_steps(bridge, requests, layers, target.targets["mlp"], z_layer, hp.spread_accounting,
                              fact_token=hp.target.fact_token)
    result = spread_write(bridge, requests, steps, contexts, hp.covariance, fact_token=hp.target.fact_token)
    result.info.update(target_prob=target.target_prob, target_losses=target.losses, z_layer=z_layer, target=target,
                       n_evals=target.n_evals, stop_reasons=target.stop_reasons)
    return result
