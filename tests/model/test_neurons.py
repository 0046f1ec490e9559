"""Neuron-level access matches what the model actually computes, on all three architecture paths."""

import pytest
import torch

from ace_interp.model import (
    ffn_output_from_neurons,
    ffn_weight,
    gate_keys,
    model_spec,
    neuron_activations,
    residual_log_probs,
    sub_keys,
    sub_values,
    tokenize_prompts,
)

PROMPTS = ["the capital of france is", "paris is in a country", "tokyo"]


def test_ffn_output_is_sum_of_neurons(tiny_model):
    acts = neuron_activations(tiny_model, PROMPTS, positions=-1)
    for i, layer in enumerate(acts.layers):
        rebuilt = ffn_output_from_neurons(tiny_model, layer, acts.coefficients[:, i])
        torch.testing.assert_close(rebuilt, acts.mlp_out[:, i], rtol=1e-5, atol=1e-5)


def test_ffn_reconstruction_at_every_position(tiny_model):
    """Not just the last token: rebuild hook_mlp_out at every position of an unpadded prompt."""
    tokens = tiny_model.to_tokens(PROMPTS[0])
    _, cache = tiny_model.run_with_cache(tokens)
    for layer in range(tiny_model.cfg.n_layers):
        m = cache[f"blocks.{layer}.mlp.hook_post"][0]
        rebuilt = ffn_output_from_neurons(tiny_model, layer, m)
        torch.testing.assert_close(rebuilt, cache[f"blocks.{layer}.hook_mlp_out"][0], rtol=1e-5, atol=1e-5)


def test_views_match_bridge_stacked_weights(tiny_model):
    for layer in range(tiny_model.cfg.n_layers):
        torch.testing.assert_close(sub_values(tiny_model, layer), tiny_model.W_out[layer])
        torch.testing.assert_close(sub_keys(tiny_model, layer), tiny_model.W_in[layer])
        if tiny_model.cfg.gated_mlp:
            torch.testing.assert_close(gate_keys(tiny_model, layer), tiny_model.W_gate[layer])
        else:
            assert gate_keys(tiny_model, layer) is None


def test_gated_mlp_coefficients_are_gate_times_up(tiny_model):
    """For gated MLPs, m = act(x W_gate) * (x W_in): check the post-gating convention explicitly."""
    if not tiny_model.cfg.gated_mlp:
        pytest.skip("plain MLP")
    tokens = tiny_model.to_tokens(PROMPTS[0])
    _, cache = tiny_model.run_with_cache(tokens)
    x = cache["blocks.1.ln2.hook_out"][0]
    expected = torch.nn.functional.silu(x @ gate_keys(tiny_model, 1)) * (x @ sub_keys(tiny_model, 1))
    torch.testing.assert_close(cache["blocks.1.mlp.hook_post"][0], expected, rtol=1e-5, atol=1e-5)


def test_residual_decomposition(tiny_model):
    """h^l = h^{l-1} + A^l + F^l for sequential and parallel (GPT-J) blocks alike."""
    acts = neuron_activations(tiny_model, PROMPTS)
    resid_post = acts.x + acts.mlp_out
    torch.testing.assert_close(resid_post[:, :-1], acts.resid_pre[:, 1:], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(resid_post[:, -1], acts.final_resid, rtol=1e-5, atol=1e-5)


def test_parallel_flag(tiny_model):
    spec = model_spec(tiny_model)
    assert spec.parallel_attn_mlp == (spec.architecture == "GPTJForCausalLM")
    assert spec.gated_mlp == (spec.architecture == "Qwen3ForCausalLM")


def test_residual_log_probs_match_model(tiny_model):
    acts = neuron_activations(tiny_model, PROMPTS)
    expected = acts.logits.log_softmax(-1)
    torch.testing.assert_close(residual_log_probs(tiny_model, acts.final_resid), expected, rtol=1e-5, atol=1e-5)


def test_batched_padding_matches_single_prompt_runs(tiny_model):
    batched = neuron_activations(tiny_model, PROMPTS, positions=[-1, 1, 0])
    for i, (prompt, pos) in enumerate(zip(PROMPTS, [-1, 1, 0])):
        single = neuron_activations(tiny_model, prompt, positions=pos)
        torch.testing.assert_close(batched.coefficients[i], single.coefficients[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(batched.logits[i], single.logits[0], rtol=1e-4, atol=1e-4)


def test_bad_positions_and_layers_raise(tiny_model):
    with pytest.raises(IndexError, match="outside prompt"):
        neuron_activations(tiny_model, "tokyo", positions=40)
    with pytest.raises(IndexError, match="unknown layer 7"):
        neuron_activations(tiny_model, "tokyo", layers=[7])
    with pytest.raises(IndexError, match="unknown layer"):
        sub_values(tiny_model, 3)
    with pytest.raises(ValueError, match="no prompts"):
        tokenize_prompts(tiny_model, [])


def test_ffn_weight_unknown_component(tiny_model):
    with pytest.raises(KeyError, match="unknown FFN component"):
        ffn_weight(tiny_model, 0, "W_Q")
