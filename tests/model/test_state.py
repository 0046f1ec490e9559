"""`model.state`: what ace-interp keeps about a model lives in one typed `ModelState`, decided at load time."""

import json
import shutil

import torch

from ace_interp.model import apply_weight_updates, edit_stack, load_model, model_state, save_model
from ace_interp.model.loading import ASSETS
from ace_interp.model.state import SAVED_STATE_FILE, STATE_ATTRIBUTE, TRAINING_FILE, ModelState


def test_a_loaded_model_carries_one_state_object_and_no_other_ace_attributes(tiny_model_dir):
    bridge = load_model(tiny_model_dir("gpt2"), device="cpu")
    state = model_state(bridge)
    assert isinstance(state, ModelState) and state.source == str(tiny_model_dir("gpt2"))
    assert not state.is_toy and state.world is None
    d_model = bridge.cfg.d_model
    edit = apply_weight_updates(bridge, {(0, "b_out"): torch.ones(d_model)})
    assert edit_stack(bridge) is state.weight_edits and state.weight_edits == [edit]
    edit.undo()
    ours = [k for k in vars(bridge) if "ace" in k.lower()]
    assert ours == [STATE_ATTRIBUTE], ours


def test_the_shipped_toys_are_toys_and_find_their_world():
    state = model_state(load_model("toy-gptj", device="cpu"))
    assert state.is_toy and state.world == ASSETS / "world"


def test_a_model_saved_next_to_a_world_is_not_a_toy(tiny_model_dir, tmp_path):
    """The old rule (a sibling world/corpus_sample.txt) made any model saved next to a world a toy."""
    shutil.copytree(ASSETS / "world", tmp_path / "world", ignore=shutil.ignore_patterns("eval_split.json"))
    bridge = load_model(tiny_model_dir("gpt2"), device="cpu")
    save_model(bridge, tmp_path / "mine")
    state = model_state(load_model(tmp_path / "mine", device="cpu"))
    assert not state.is_toy and state.world is None


def test_training_metadata_makes_a_toy_and_an_edited_toy_saved_anywhere_stays_one(tiny_model_dir, tmp_path):
    folder = tmp_path / "trained"
    shutil.copytree(tiny_model_dir("gptj"), folder)
    world_config = json.loads((ASSETS / "world" / "world.json").read_text())["config"]
    (folder / TRAINING_FILE).write_text(json.dumps({"config": {"world": world_config}}))
    bridge = load_model(folder, device="cpu")
    assert model_state(bridge).is_toy and model_state(bridge).world == ASSETS / "world"
    saved = save_model(bridge, tmp_path / "elsewhere" / "edited")
    assert json.loads((saved / SAVED_STATE_FILE).read_text()) == {"world": str(ASSETS / "world"), "prepend_bos": True}
    reloaded = model_state(load_model(saved, device="cpu"))
    assert reloaded.is_toy and reloaded.world == ASSETS / "world"


def test_training_metadata_of_another_world_is_a_toy_without_a_world(tiny_model_dir, tmp_path):
    folder = tmp_path / "trained"
    shutil.copytree(tiny_model_dir("gptj"), folder)
    (folder / TRAINING_FILE).write_text(json.dumps({"config": {"world": {"n_persons": 7, "seed": 99}}}))
    state = model_state(load_model(folder, device="cpu"))
    assert state.is_toy and state.world is None


def test_a_bridge_not_built_by_load_model_gets_an_empty_state(tiny_model):
    vars(tiny_model).pop(STATE_ATTRIBUTE)
    state = model_state(tiny_model)
    assert state == ModelState() and model_state(tiny_model) is state
