"""Query scores against a direct inner-product loop, and the MLP-input path against the model's own hook_pre."""

import pandas as pd
import pytest
import torch

from ace_interp.attribution import (
    activation_keys,
    mlp_input_norm,
    normalize_mlp_input,
    query_activations,
    query_scores,
    top_value_neurons,
)
from ace_interp.model import neuron_activations, tokenize_prompts

PROMPTS = ["the capital of france is", "the language of spain is spanish and"]
TARGETS = ["paris", "the"]


def mlp_resid(bridge, acts, b, l):
    parallel = bridge.cfg.parallel_attn_mlp
    return acts.resid_pre[b, l] if parallel else acts.resid_pre[b, l] + acts.attn_out[b, l]


def by_hand_norm(bridge, l, v, ref):
    """γ ⊙ c(v) / s(ref), written out from the HF module's parameters."""
    norm = mlp_input_norm(bridge, l)
    layernorm = isinstance(norm, torch.nn.LayerNorm)
    eps = norm.eps if layernorm else norm.variance_epsilon
    c = (lambda t: t - t.mean()) if layernorm else (lambda t: t)
    return c(v) / (c(ref).pow(2).mean() + eps).sqrt() * norm.weight


@torch.no_grad()
def test_mlp_input_path_reproduces_hook_pre(tiny_model):
    """normalize_mlp_input(x^l) @ K^l (+ b_in) is exactly what the model feeds its nonlinearity."""
    bridge = tiny_model
    acts = neuron_activations(bridge, PROMPTS)
    tokens, _ = tokenize_prompts(bridge, PROMPTS)
    _, cache = bridge.run_with_cache(tokens, names_filter=lambda n: n.endswith("mlp.hook_pre"))
    for l in range(bridge.cfg.n_layers):
        resid = torch.stack([mlp_resid(bridge, acts, b, l) for b in range(2)])
        pre = normalize_mlp_input(bridge, l, resid) @ activation_keys(bridge, l)
        b_in = bridge.blocks[l].mlp.__getattr__("gate" if bridge.cfg.gated_mlp else "in").original_component.bias
        if b_in is not None:
            pre = pre + b_in
        actual = cache[f"blocks.{l}.mlp.hook_pre"][torch.arange(2), acts.positions]
        torch.testing.assert_close(pre, actual, atol=1e-5, rtol=1e-5)
        # the module itself agrees with the hand-written norm on the real residual
        torch.testing.assert_close(
            normalize_mlp_input(bridge, l, resid), mlp_input_norm(bridge, l)(resid), atol=1e-5, rtol=1e-5
        )


@torch.no_grad()
def test_query_activations_equal_direct_loop(tiny_model):
    bridge = tiny_model
    acts = neuron_activations(bridge, PROMPTS)
    l_src, l_dst = 0, bridge.cfg.n_layers - 1
    ref_resid = mlp_resid(bridge, acts, 1, l_dst)
    from ace_interp.attribution.query import mlp_input_scale

    scale = mlp_input_scale(bridge, l_dst, ref_resid)
    vectors = acts.coefficients[1, l_src, :8, None] * bridge.W_out[l_src, :8]
    keys = bridge.W_gate[l_dst] if bridge.cfg.gated_mlp else bridge.W_in[l_dst]
    got = query_activations(bridge, vectors, l_dst, scale, neurons=[3, 1, 4])
    for i in range(8):
        nv = by_hand_norm(bridge, l_dst, vectors[i], ref_resid)
        for c, j in enumerate([3, 1, 4]):
            assert float(got[i, c]) == pytest.approx(float(nv @ keys[:, j]), abs=1e-5, rel=1e-4)


@torch.no_grad()
def test_query_scores_equal_direct_loop(tiny_model):
    bridge = tiny_model
    acts = neuron_activations(bridge, PROMPTS)
    T = top_value_neurons(bridge, PROMPTS, TARGETS, k=12, activations=acts)
    q = query_scores(bridge, PROMPTS, TARGETS, value_neurons=T, activations=acts)
    keys = bridge.W_gate if bridge.cfg.gated_mlp else bridge.W_in
    L, d_mlp = bridge.cfg.n_layers, bridge.cfg.d_mlp
    for b in range(2):
        rows = T[T.prompt == b]
        for l in range(L):
            for k in range(0, d_mlp, 7):  # a sample of neurons keeps the Python loop short
                v = acts.coefficients[b, l, k] * bridge.W_out[l, k]
                pos = inner = weighted = 0.0
                for lp, j, s in zip(rows.layer, rows.neuron, rows.score):
                    if lp <= l:
                        continue
                    a = float(by_hand_norm(bridge, lp, v, mlp_resid(bridge, acts, b, lp)) @ keys[lp, :, j])
                    pos += max(a, 0.0)
                    inner += a
                    weighted += s * a
                assert float(q.positive[b, l, k]) == pytest.approx(pos, abs=1e-5, rel=1e-4)
                assert float(q.inner[b, l, k]) == pytest.approx(inner, abs=1e-5, rel=1e-4)
                assert float(q.weighted[b, l, k]) == pytest.approx(weighted, abs=1e-6, rel=1e-4)
    assert q.positive[:, -1].abs().max() == 0  # no later layers
    assert q.positive.abs().max() > 1e-3


def test_query_scores_default_value_set_and_keys(tiny_model):
    q = query_scores(tiny_model, PROMPTS, TARGETS, n_value_neurons=10)
    assert set(q.value_neurons.prompt) == {0, 1} and len(q.value_neurons) == 20
    assert q.key == ("gate" if tiny_model.cfg.gated_mlp else "in")
    assert list(q.top(5).columns) == ["layer", "neuron", "score", "rank"]
    with pytest.raises(ValueError, match="aggregate"):
        q.scores("max")
    q_in = query_scores(tiny_model, PROMPTS, TARGETS, key="in", value_neurons=q.value_neurons)
    if tiny_model.cfg.gated_mlp:
        assert not torch.allclose(q_in.positive, q.positive)
    else:
        torch.testing.assert_close(q_in.positive, q.positive)
        with pytest.raises(Exception, match="gated"):
            query_scores(tiny_model, PROMPTS, TARGETS, key="gate", value_neurons=q.value_neurons)


def test_query_scores_empty_value_set_gives_zeros(tiny_model):
    empty = pd.DataFrame({"prompt": [], "layer": [], "neuron": [], "score": []})
    q = query_scores(tiny_model, PROMPTS, TARGETS, value_neurons=empty)
    assert q.positive.abs().max() == 0


@torch.no_grad()
def test_share_scores_equal_slow_loop(tiny_model):
    """Yu & Ananiadou's share: Σ_j I_j · c(v)·(γ⊙K_j) / c(x)·(γ⊙K_j), one neuron and one value neuron at a time."""
    bridge = tiny_model
    acts = neuron_activations(bridge, PROMPTS)
    q = query_scores(bridge, PROMPTS, TARGETS, activations=acts, definition="share")
    assert q.definition == "share" and (q.value_neurons.groupby("prompt").size() == 30).all()
    keys = bridge.W_gate if bridge.cfg.gated_mlp else bridge.W_in
    L, d_mlp = bridge.cfg.n_layers, bridge.cfg.d_mlp
    for b in range(2):
        rows = q.value_neurons[q.value_neurons.prompt == b]
        for l in range(L):
            for k in range(0, d_mlp, 5):
                v = acts.coefficients[b, l, k] * bridge.W_out[l, k]
                expected = 0.0
                for lp, j, s in zip(rows.layer, rows.neuron, rows.score):
                    if lp <= l:
                        continue
                    norm = mlp_input_norm(bridge, lp)
                    c = (lambda t: t - t.mean()) if isinstance(norm, torch.nn.LayerNorm) else (lambda t: t)
                    gk = norm.weight * keys[lp, :, j]
                    expected += s * float(c(v) @ gk) / float(c(mlp_resid(bridge, acts, b, lp)) @ gk)
                assert float(q.share[b, l, k]) == pytest.approx(expected, abs=1e-5, rel=1e-3)
    assert q.share.abs().max() > 1e-4
    torch.testing.assert_close(q.scores(), q.share)
    assert q.top(5).score.tolist() == q.top(5, aggregate="share").score.tolist()
    with pytest.raises(ValueError, match="definition"):
        query_scores(bridge, PROMPTS, TARGETS, activations=acts, definition="cosine")
