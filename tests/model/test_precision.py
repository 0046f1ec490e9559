"""Half precision and accelerate placement on tiny models: bf16 attribution within a stated tolerance of fp32,
bf16 edits applied and undone bit-exactly, bf16 save/reload, and a per-module device_map keeping neuron views,
hooks and transactional writes working."""

import pytest
import torch

from ace_interp.attribution import top_value_neurons, value_scores
from ace_interp.editing import EditRequest, edit
from ace_interp.model import ffn_weight, hf_parameters, load_model, save_model, sub_values
from ace_interp.model.architecture import hf_model

PROMPTS = ["the capital of france is", "the language of spain is spanish and"]
TARGETS = ["paris", "the"]
# bf16 keeps 8 bits of mantissa: weights and activations round by up to 2^-9 relative, so a score moves by
# a small fraction of the largest score; measured max |I_bf16 − I_fp32| / max |I_fp32|: gpt2 0.016, gptj 0.008,
# qwen3 0.007, gemma3 0.027 (its post-FFN norm rounds too)
BF16_RELATIVE_TOLERANCE = 0.05
BF16_ABSOLUTE_FLOOR = 1e-5


@pytest.mark.parametrize("arch", ["gpt2", "gptj", "qwen3", "gemma3"])
def test_bf16_value_scores_within_tolerance_of_fp32(tiny_model_dir, arch):
    fp32 = load_model(tiny_model_dir(arch), device="cpu")
    bf16 = load_model(tiny_model_dir(arch), device="cpu", dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in hf_model(bf16).parameters())
    s32, s16 = value_scores(fp32, PROMPTS, TARGETS), value_scores(bf16, PROMPTS, TARGETS)
    assert s16.scores.dtype == torch.float32  # scores accumulate in float32 whatever the weights
    scale = float(s32.scores.abs().max())
    assert scale > 1e-3
    assert float((s16.scores - s32.scores).abs().max()) <= BF16_RELATIVE_TOLERANCE * scale + BF16_ABSOLUTE_FLOOR
    # the pruned top-k is exact against the bf16 model's own full sweep
    top = top_value_neurons(bf16, PROMPTS, TARGETS, k=5)
    for b in range(len(PROMPTS)):
        got = top[top.prompt == b]
        assert list(zip(got.layer, got.neuron)) == list(zip(s16.top(5, b).layer, s16.top(5, b).neuron))


@pytest.mark.parametrize("method", ["pmet", "ace"])
def test_bf16_edit_applies_in_weight_dtype_and_undoes_bit_exactly(tiny_model_dir, method):
    bridge = load_model(tiny_model_dir("qwen3"), device="cpu", dtype=torch.bfloat16)
    before = {k: v.clone() for k, v in hf_parameters(bridge).items()}
    applied = edit(bridge, [EditRequest("the capital of {} is", "france", "paris", "berlin")], method)
    after = hf_parameters(bridge)
    changed = [k for k, v in after.items() if not torch.equal(v, before[k])]
    assert changed and all(after[k].dtype == torch.bfloat16 for k in changed)
    applied.undo()
    assert all(torch.equal(v, before[k]) for k, v in hf_parameters(bridge).items())


def test_bf16_save_and_reload(tiny_model_dir, tmp_path):
    bridge = load_model(tiny_model_dir("gptj"), device="cpu", dtype=torch.bfloat16)
    with torch.no_grad():
        sub_values(bridge, 1)[3] += 0.5  # an edited model is what gets saved
    save_model(bridge, tmp_path / "saved")
    again = load_model(tmp_path / "saved", device="cpu", dtype=torch.bfloat16)
    for name, value in hf_parameters(bridge).items():
        assert torch.equal(hf_parameters(again)[name], value), name
    tokens = bridge.to_tokens(PROMPTS[0])
    with torch.no_grad():
        torch.testing.assert_close(again(tokens), bridge(tokens), atol=0, rtol=0)


def test_explicit_device_map_keeps_views_hooks_and_writes(tiny_model_dir):
    folder = tiny_model_dir("qwen3")
    plain = load_model(folder, device="cpu")
    n = plain.cfg.n_layers
    device_map = {"model.embed_tokens": "cpu", "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}
    device_map |= {f"model.layers.{l}": "cpu" for l in range(n)}
    placed = load_model(folder, device_map=device_map)
    # neuron views share storage with the live HF parameters
    assert ffn_weight(placed, 1, "W_out").data_ptr() == hf_model(placed).model.layers[1].mlp.down_proj.weight.data_ptr()
    torch.testing.assert_close(value_scores(placed, PROMPTS, TARGETS).scores, value_scores(plain, PROMPTS, TARGETS).scores)
    before = {k: v.clone() for k, v in hf_parameters(placed).items()}
    applied = edit(placed, [EditRequest("the capital of {} is", "france", "paris", "berlin")], "pmet")
    assert any(not torch.equal(v, before[k]) for k, v in hf_parameters(placed).items())
    applied.undo()
    assert all(torch.equal(v, before[k]) for k, v in hf_parameters(placed).items())
    with pytest.raises(ValueError, match="either device or device_map"):
        load_model(folder, device="cpu", device_map=device_map)


@pytest.mark.parametrize("arch", ["qwen3", "gemma3"])
def test_bf16_layer_ranking_and_ablation_run_in_float32_scores(tiny_model_dir, arch):
    """Query scores mix float32 norm divisors with bf16 weights: they must come out float32 and finite."""
    from ace_interp.ablation import value_ablation_experiment
    from ace_interp.attribution import query_scores, rank_layers

    bridge = load_model(tiny_model_dir(arch), device="cpu", dtype=torch.bfloat16)
    q = query_scores(bridge, PROMPTS, TARGETS, n_value_neurons=10)
    assert q.positive.dtype == torch.float32 and torch.isfinite(q.positive).all() and q.positive.abs().max() > 0
    ranking = rank_layers(bridge, PROMPTS, TARGETS, top_k_layers=2)
    assert len(ranking.value_layers) == 2 and len(ranking.query_layers) == 2
    ablation = value_ablation_experiment(bridge, PROMPTS, TARGETS, fraction=0.05, seeds=(0,))
    assert set(ablation.condition) == {"baseline", "top", "random"} and ablation.mean_log_prob.notna().all()
