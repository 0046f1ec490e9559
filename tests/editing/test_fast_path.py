"""The editors' fast path (a plain HF model sharing the bridge's tensors, torch hooks) matches the bridge."""

import pytest
import torch

from ace_interp.editing.covariance import second_moments
from ace_interp.editing.hparams import CovarianceHParams
from ace_interp.editing.memit import SpreadStep, spread_write
from ace_interp.editing.solver import solve_key_value
from ace_interp.editing.hparams import TargetHParams
from ace_interp.editing.targets import compute_targets
from ace_interp.editing.keys import (
    SuffixForward,
    add_at_positions,
    build_batch,
    compute_keys,
    context_templates,
    hf_runner,
    hooks,
    outputs_at_subject,
)
from ace_interp.model import apply_weight_updates, ffn_weight

from edit_cases import FRANCE, SPAIN

PROMPTED = [FRANCE, SPAIN.__class__("{} is a country where people speak", "spain", "japanese")]


def test_runner_shares_parameters_and_matches_bridge_logits(tiny_model):
    bridge = tiny_model
    runner = hf_runner(bridge)
    tokens = bridge.to_tokens("the capital of france is paris")
    with torch.no_grad():
        torch.testing.assert_close(runner.logits(tokens), bridge(tokens), rtol=1e-5, atol=1e-5)
    # a write through the weight layer is seen by the fast path at once
    delta = torch.randn_like(ffn_weight(bridge, 1, "W_out"))
    with apply_weight_updates(bridge, {(1, "W_out"): delta}), torch.no_grad():
        torch.testing.assert_close(runner.logits(tokens), bridge(tokens), rtol=1e-5, atol=1e-5)
    assert hf_runner(bridge) is runner


def test_keys_and_site_outputs_match_bridge_cache(tiny_model):
    bridge = tiny_model
    contexts = context_templates(bridge, n=2, length=4)
    keys = compute_keys(bridge, PROMPTED, [0, 2], contexts)
    batch = build_batch(bridge, PROMPTED, contexts)
    names = {"blocks.0.mlp.hook_post", "blocks.2.mlp.hook_post", "blocks.1.hook_mlp_out", "blocks.1.hook_resid_post"}
    rows = []
    for j in range(batch.n):
        n = int(batch.lengths[j])
        _, cache = bridge.run_with_cache(batch.tokens[j : j + 1, :n], names_filter=lambda name: name in names)
        rows.append({name: cache[name][0, int(batch.lookup[j])] for name in names})
    for layer in (0, 2):
        expected = batch.mean_per_owner(torch.stack([r[f"blocks.{layer}.mlp.hook_post"] for r in rows]), len(PROMPTED))
        torch.testing.assert_close(keys[layer], expected, rtol=1e-5, atol=1e-6)
    bare = build_batch(bridge, PROMPTED, ("",))
    for site, name in (("mlp", "blocks.1.hook_mlp_out"), ("resid", "blocks.1.hook_resid_post")):
        got = outputs_at_subject(bridge, PROMPTED, 1, site)
        for i in range(len(PROMPTED)):
            n = int(bare.lengths[i])
            _, cache = bridge.run_with_cache(bare.tokens[i : i + 1, :n], names_filter=lambda x: x == name)
            torch.testing.assert_close(got[i], cache[name][0, int(bare.lookup[i])], rtol=1e-5, atol=1e-6)


def test_injected_delta_matches_bridge_hook(tiny_model):
    bridge = tiny_model
    runner = hf_runner(bridge)
    batch = build_batch(bridge, PROMPTED[:1], ("",))
    delta = torch.randn(1, bridge.cfg.d_model)
    pos = int(batch.lookup[0])
    with torch.no_grad(), hooks(lambda: add_at_positions(runner.mlp[1], batch.rows, batch.lookup, delta)):
        fast = runner.logits(batch.tokens)

    def add(act, hook):
        act = act.clone()
        act[0, pos] += delta[0]
        return act

    with torch.no_grad():
        slow = bridge.run_with_hooks(batch.tokens, fwd_hooks=[("blocks.1.hook_mlp_out", add)])
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)


def test_resuming_from_a_block_matches_the_full_forward(tiny_model):
    bridge = tiny_model
    runner = hf_runner(bridge)
    assert runner.can_resume()
    batch = build_batch(bridge, PROMPTED, ("",))
    with torch.no_grad():
        full = runner.hidden(batch.tokens)
        for layer in range(bridge.cfg.n_layers):
            resumed = runner.hidden_from(layer, runner.block_input(batch.tokens, layer))
            for j in range(batch.n):  # compare real tokens only
                n = int(batch.lengths[j])
                torch.testing.assert_close(resumed[j, :n], full[j, :n], rtol=1e-5, atol=1e-5)
    assert len(runner.blocks) == bridge.cfg.n_layers  # the block list is restored


def _reference_spread_write(bridge, requests, steps, contexts, cov):
    """The spread write recomputing keys and site outputs from scratch at every step (the definition)."""
    moments = second_moments(bridge, sorted({s.layer for s in steps}), corpus=cov.corpus, n_tokens=cov.n_tokens,
                             progress=False)
    updates, temporary = {}, []
    try:
        for step in steps:
            keys = compute_keys(bridge, requests, [step.layer], contexts)[step.layer]
            current = outputs_at_subject(bridge, requests, step.z_layer, step.site)
            delta = solve_key_value(keys, step.scale * (step.z - current) / step.divisor, moments[step.layer],
                                    cov_weight=cov.cov_weight, ridge=cov.ridge)
            temporary.append(apply_weight_updates(bridge, {(step.layer, "W_out"): delta}))
            key = (step.layer, "W_out")
            updates[key] = updates[key] + delta if key in updates else delta
    finally:
        for e in reversed(temporary):
            e.undo()
    return updates


@pytest.mark.parametrize("order", [(0, 1, 2), (1, 0, 2)])  # ascending (resumed reads) and not (full forwards)
def test_incremental_spread_write_matches_from_scratch_reference(tiny_model, tiny_corpus, order):
    bridge = tiny_model
    contexts = context_templates(bridge, n=2, length=4)
    cov = CovarianceHParams(corpus=tiny_corpus, n_tokens=400, cov_weight=0.5, progress=False)
    gen = torch.Generator().manual_seed(0)
    z = {site: torch.randn(len(PROMPTED), bridge.cfg.d_model, generator=gen) for site in ("mlp", "resid")}
    for site in ("mlp", "resid"):
        steps = [SpreadStep(l, z[site], 2, site, divisor=3 - j, scale=0.7) for j, l in enumerate(order)]
        fast = spread_write(bridge, PROMPTED, steps, contexts, cov).updates
        slow = _reference_spread_write(bridge, PROMPTED, steps, contexts, cov)
        assert fast.keys() == slow.keys()
        for key in slow:
            # float32 forwards resumed from a kept residual differ from full ones by rounding only
            torch.testing.assert_close(fast[key], slow[key], rtol=1e-4, atol=1e-5 * float(slow[key].abs().max()))


def test_suffix_forward_matches_full_forward_values_and_gradients(tiny_model):
    bridge = tiny_model
    runner = hf_runner(bridge)
    contexts = context_templates(bridge, n=2, length=4)
    batch = build_batch(bridge, PROMPTED, contexts, with_target=True)
    for layer in range(bridge.cfg.n_layers):
        suffix = SuffixForward(runner, batch, layer)
        assert suffix.n_tokens_suffix < suffix.n_tokens_full
        outs = {}
        for name, b, run in (("full", batch, lambda: runner.hidden(batch.tokens)), ("suffix", suffix.batch, suffix.hidden)):
            delta = torch.zeros(len(PROMPTED), bridge.cfg.d_model, requires_grad=True)
            with hooks(lambda b=b: add_at_positions(runner.mlp[layer], b.rows, b.lookup, lambda: 3 * delta[b.owner])):
                hidden = run()
            rows, cols = (b.target_ids != -100).nonzero(as_tuple=True)
            lp = runner.head(hidden[rows, cols]).log_softmax(-1).gather(-1, b.target_ids[rows, cols, None])
            lp.sum().backward()
            real = torch.cat([hidden[j, int(b.lookup[j]) : int(b.lookup[j]) + int(b.lengths[j] - b.lookup[j])]
                              for j in range(b.n)])
            outs[name] = (real.detach(), lp.detach(), delta.grad)
        for got, want in zip(outs["suffix"], outs["full"]):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_target_optimisation_on_suffixes_matches_full_rows(tiny_model):
    bridge = tiny_model
    hp = TargetHParams(v_num_grad_steps=4, v_lr=0.1, v_weight_decay=1e-3, decay_power=1, clamp_norm_factor=1000.0)
    contexts = context_templates(bridge, n=2, length=4)
    fast = compute_targets(bridge, PROMPTED, 1, hp, contexts, sites=("attn", "mlp"))
    slow = compute_targets(bridge, PROMPTED, 1, hp, contexts, sites=("attn", "mlp"), suffix_only=False)
    torch.testing.assert_close(torch.tensor(fast.losses), torch.tensor(slow.losses), rtol=1e-4, atol=1e-5)
    for site in ("attn", "mlp"):
        torch.testing.assert_close(fast.targets[site], slow.targets[site], rtol=1e-4, atol=1e-5)


def test_ft_resumed_at_its_layer_matches_the_full_forward(tiny_model):
    """FT's steps run blocks layer.. on the cached block input; the full forward every step is the reference."""
    from dataclasses import replace

    from ace_interp.editing import default_hparams
    from ace_interp.editing.ft import ft_updates

    bridge = tiny_model
    hp = replace(default_hparams("ft", bridge), num_steps=4)
    assert 0 < hp.layer  # blocks below the layer are skipped by the fast path
    fast = ft_updates(bridge, PROMPTED, hp, ("",))
    slow = ft_updates(bridge, PROMPTED, hp, ("",), resume=False)
    key = (hp.layer, "W_out")
    scale = float(slow.updates[key].abs().max())
    assert scale > 0  # the reference moved the weights
    # Adam divides each entry's gradient by its own running norm, so float-rounding differences of entries whose
    # gradient is ~0 move them by up to ~lr per step: compare against the update's own scale
    torch.testing.assert_close(fast.updates[key], slow.updates[key], rtol=0, atol=1e-4 * scale)
    assert fast.info["losses"] == pytest.approx(slow.info["losses"], rel=1e-5)
