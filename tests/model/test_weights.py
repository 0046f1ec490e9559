"""Transactional weight writes: in place, all-or-nothing, exactly undoable, saveable."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from ace_interp.model import (
    WeightWriteError,
    apply_weight_updates,
    edit_stack,
    ffn_weight,
    hf_parameters,
    load_model,
    save_model,
    undo_all,
)

PROMPT = "the capital of france is"


def _logits(bridge):
    return bridge(bridge.to_tokens(PROMPT))


def _snapshot(bridge):
    return {k: v.detach().clone() for k, v in hf_parameters(bridge).items()}


def _assert_weights_equal(bridge, snapshot):
    for k, v in hf_parameters(bridge).items():
        assert torch.equal(v, snapshot[k]), f"{k} changed"


def test_write_changes_forward_and_undo_is_bit_exact(tiny_model):
    before_logits = _logits(tiny_model)
    before = _snapshot(tiny_model)
    w = ffn_weight(tiny_model, 1, "W_out")
    delta = torch.randn_like(w) * 0.5
    edit = apply_weight_updates(tiny_model, {(1, "W_out"): delta})
    assert not torch.allclose(_logits(tiny_model), before_logits)
    torch.testing.assert_close(ffn_weight(tiny_model, 1, "W_out"), before_key(before, tiny_model, 1) + delta)
    edit.undo()
    _assert_weights_equal(tiny_model, before)
    assert torch.equal(_logits(tiny_model), before_logits)


def before_key(snapshot, bridge, layer):
    """The snapshot's W_out[layer] in TL orientation (found by matching the live view's storage)."""
    live = ffn_weight(bridge, layer, "W_out")
    for k, v in hf_parameters(bridge).items():
        if v.data_ptr() == live.data_ptr():
            return snapshot[k].T if live.shape != v.shape or live.stride() != v.stride() else snapshot[k]
    raise AssertionError("W_out view does not share storage with any HF parameter")


def test_context_manager_undoes(tiny_model):
    before = _snapshot(tiny_model)
    with apply_weight_updates(tiny_model, {(0, "W_out"): torch.ones_like(ffn_weight(tiny_model, 0, "W_out"))}):
        assert not torch.equal(ffn_weight(tiny_model, 0, "W_out"), before_key(before, tiny_model, 0))
    _assert_weights_equal(tiny_model, before)


def test_set_mode_and_hf_named_parameter(tiny_model):
    before = _snapshot(tiny_model)
    name = next(k for k in hf_parameters(tiny_model) if "0" in k and ("o_proj" in k or "out_proj" in k or "c_proj" in k))
    edit = apply_weight_updates(tiny_model, {name: torch.zeros_like(hf_parameters(tiny_model)[name])}, mode="set")
    assert hf_parameters(tiny_model)[name].abs().sum() == 0
    edit.undo()
    _assert_weights_equal(tiny_model, before)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({(1, "W_out"): "shape"}, "shape"),
        ({(1, "W_out"): "nan"}, "NaN or inf"),
        ({(9, "W_out"): "ok"}, "unknown layer 9"),
        ({(1, "W_foo"): "ok"}, "unknown FFN component"),
        ({"no.such.param": "ok"}, "unknown parameter"),
    ],
)
def test_failed_write_leaves_every_weight_untouched(tiny_model, bad, message):
    """A good update listed first and a bad one second: nothing at all may change."""
    before = _snapshot(tiny_model)
    w = ffn_weight(tiny_model, 0, "W_out")
    updates = {(0, "W_out"): torch.ones_like(w)}
    for key, kind in bad.items():
        shape = ffn_weight(tiny_model, 1, "W_out").shape
        updates[key] = {
            "shape": torch.ones(3, 3),
            "nan": torch.full(shape, float("nan")),
            "ok": torch.ones(shape),
        }[kind]
    with pytest.raises(WeightWriteError, match=message):
        apply_weight_updates(tiny_model, updates)
    _assert_weights_equal(tiny_model, before)
    assert edit_stack(tiny_model) == []


def test_overflow_during_write_is_rolled_back(tiny_model):
    before = _snapshot(tiny_model)
    w = ffn_weight(tiny_model, 0, "W_out")
    updates = {(0, "W_out"): torch.ones_like(w), (1, "W_out"): torch.full_like(w, 3e38)}
    with apply_weight_updates(tiny_model, {(1, "W_out"): torch.full_like(w, 3e38)}):
        with pytest.raises(WeightWriteError, match="non-finite"):
            apply_weight_updates(tiny_model, updates)
    _assert_weights_equal(tiny_model, before)


def test_edits_undo_last_first(tiny_model):
    before = _snapshot(tiny_model)
    w = ffn_weight(tiny_model, 0, "W_out")
    first = apply_weight_updates(tiny_model, {(0, "W_out"): torch.ones_like(w)})
    second = apply_weight_updates(tiny_model, {(0, "W_out"): torch.ones_like(w)})
    with pytest.raises(RuntimeError, match="undo later edits first"):
        first.undo()
    second.undo()
    first.undo()
    with pytest.raises(RuntimeError, match="already undone"):
        first.undo()
    _assert_weights_equal(tiny_model, before)
    apply_weight_updates(tiny_model, {(0, "W_out"): torch.ones_like(w)})
    apply_weight_updates(tiny_model, {(1, "W_in"): torch.ones_like(ffn_weight(tiny_model, 1, "W_in"))})
    assert undo_all(tiny_model) == 2
    _assert_weights_equal(tiny_model, before)


def test_edited_model_saves_and_reloads_with_same_logits(tiny_model, tmp_path):
    w = ffn_weight(tiny_model, 2, "W_out")
    apply_weight_updates(tiny_model, {(2, "W_out"): torch.randn_like(w)})
    edited = _logits(tiny_model)
    folder = save_model(tiny_model, tmp_path / "edited")
    hf = AutoModelForCausalLM.from_pretrained(folder)
    tokens = tiny_model.to_tokens(PROMPT)
    torch.testing.assert_close(hf(tokens).logits, edited, rtol=1e-5, atol=1e-5)
    reloaded = load_model(folder, device="cpu")
    assert torch.equal(_logits(reloaded), edited)


def test_hf_parameter_names_are_a_fresh_models_for_each_config(tiny_model_dir):
    """`hf_parameters` remembers a fresh model's state-dict names per (class, config): the names must be what a
    model built from scratch has, and a config with another layer count must get its own."""
    import transformers

    from ace_interp.model import load_model
    from ace_interp.model.architecture import _reference_keys, hf_model

    bridge = load_model(tiny_model_dir("gptj"), device="cpu")
    model = hf_model(bridge)
    with torch.device("meta"):
        expected = list(type(model)(model.config).state_dict())
    assert list(hf_parameters(bridge)) == expected
    smaller = transformers.AutoConfig.for_model(**{**model.config.to_dict(), "n_layer": 1})
    with torch.device("meta"):
        expected_smaller = tuple(type(model)(smaller).state_dict())
    assert _reference_keys(type(model), smaller.to_json_string(use_diff=False), smaller) == expected_smaller
    assert len(expected_smaller) < len(expected)
