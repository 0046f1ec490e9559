"""The editors' fast path (a plain HF model sharing the bridge's tensors, torch hooks) matches the bridge."""

import torch

from ace_interp.editing.keys import (
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
