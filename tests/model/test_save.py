"""save_model: a file in the way is refused, an old checkpoint's shard index does not survive, the config
is the source's own, and plain `transformers` reloads the saved folder with the same logits (issue 26)."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from ace_interp.model import SaveError, apply_weight_updates, ffn_weight, load_model, save_model


def test_save_to_a_file_path_raises(tiny_model_dir, tmp_path):
    bridge = load_model(tiny_model_dir("gptj"), device="cpu")
    target = tmp_path / "model.bin"
    target.write_text("not a folder")
    with pytest.raises(SaveError, match="is a file"):
        save_model(bridge, target)
    assert target.read_text() == "not a folder"


def test_stale_shard_index_is_removed_and_reload_gives_the_new_weights(tiny_model_dir, tmp_path):
    bridge = load_model(tiny_model_dir("gptj"), device="cpu")
    folder = tmp_path / "out"
    folder.mkdir()
    # the leftovers of a sharded checkpoint of some other model, and a user's own file
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": {"x": "model-00001-of-00002.safetensors"}}))
    (folder / "model-00001-of-00002.safetensors").write_bytes(b"old")
    (folder / "notes.txt").write_text("mine")
    w = ffn_weight(bridge, 1, "W_out")
    apply_weight_updates(bridge, {(1, "W_out"): torch.randn_like(w)})
    save_model(bridge, folder)
    assert not (folder / "model.safetensors.index.json").exists()
    assert not (folder / "model-00001-of-00002.safetensors").exists()
    assert (folder / "notes.txt").read_text() == "mine"
    tokens = bridge.to_tokens("a b c")
    hf = AutoModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        torch.testing.assert_close(hf(tokens).logits, bridge(tokens), rtol=1e-5, atol=1e-5)


def test_saved_config_has_the_source_fields_only(tiny_model_dir, tmp_path):
    source = tiny_model_dir("qwen3")
    bridge = load_model(source, device="cpu")
    folder = save_model(bridge, tmp_path / "saved")
    original = json.loads((source / "config.json").read_text())
    saved = json.loads((folder / "config.json").read_text())
    ignore = {"transformers_version"}
    changed = {k for k in set(original) | set(saved) - ignore if original.get(k) != saved.get(k)} - ignore
    assert changed == set(), {k: (original.get(k), saved.get(k)) for k in changed}
    assert not saved.get("output_attentions", False)
