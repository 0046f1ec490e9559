"""FT-L (the constrained fine-tuning baseline of the ROME paper): gradient steps on one layer's W_out.

    ΔW = argmin_{‖ΔW‖_∞ ≤ ε} mean NLL(target_new | prompt)      (Adam; ΔW projected onto the box each step)

The change is optimised as a separate tensor added through a hook on the down-projection
(F = k (W_out + ΔW) + b), with every model parameter frozen; only the final ΔW is written. Blocks below the
edited layer do not depend on ΔW, so (where the architecture allows resuming at a block, `HFRunner.can_resume`)
their output is computed once and every step runs blocks layer.. only (`resume`; the same values as the full
forward, tests/editing/test_fast_path.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformer_lens.model_bridge import TransformerBridge

from ace_interp.editing.hparams import FTHParams
from ace_interp.editing.keys import build_batch, frozen_parameters, hf_runner, hooks
from ace_interp.editing.memit import MethodResult
from ace_interp.editing.requests import EditRequest
from ace_interp.editing.timing import stage
from ace_interp.model.architecture import check_layer, ffn_weight


def ft_updates(
    bridge: TransformerBridge, requests: Sequence[EditRequest], hp: FTHParams, contexts: Sequence[str],
    resume: bool = True,
) -> MethodResult:
    """FT-L's ΔW of `hp.layer`'s W_out for `requests` (module docstring); `resume=False` runs the whole model every
    step (the slow reference the fast path is tested against)."""
    layer = check_layer(bridge, hp.layer)
    runner = hf_runner(bridge)
    w_out = ffn_weight(bridge, layer, "W_out")
    delta = torch.zeros(w_out.shape, dtype=torch.float32, device=w_out.device, requires_grad=True)
    batch = build_batch(bridge, requests, contexts, with_target=True)
    mask = batch.target_ids != -100
    rows, cols = mask.nonzero(as_tuple=True)
    targets = batch.target_ids[rows, cols]

    def add_delta(module, args, output):
        return output + args[0] @ delta.to(output.dtype)

    resume = resume and runner.can_resume()
    resid_in = runner.block_input(batch.tokens, layer) if resume else None

    def hidden():
        return runner.hidden_from(layer, resid_in) if resume else runner.hidden(batch.tokens)

    opt = torch.optim.Adam([delta], lr=hp.lr, weight_decay=hp.weight_decay)
    losses = []
    with stage("targets"), frozen_parameters(runner.model), hooks(lambda: runner.down_proj[layer].register_forward_hook(add_delta)):
        for step in range(hp.num_steps):
            opt.zero_grad()
            lp = runner.head(hidden()[rows, cols]).float().log_softmax(-1)
            loss = -lp.gather(-1, targets.unsqueeze(-1)).mean()
            losses.append(float(loss.detach()))
            if loss.item() < 1e-2:
                break
            loss.backward()
            opt.step()
            with torch.no_grad():
                delta.clamp_(-hp.norm_constraint, hp.norm_constraint)
    return MethodResult({(layer, "W_out"): delta.detach().to(w_out.dtype)}, {"losses": losses})
