"""What ace-interp keeps about a loaded model, in one typed place: `model_state(bridge)`.

    bridge = load_model("toy-gptj")
    state = model_state(bridge)
    state.source          # '/…/assets/toy-gptj' (the folder or hub id it was loaded from)
    state.is_toy          # True: a synthetic-world toy, decided once at load time from its own metadata
    state.world           # Path('/…/assets/world'): the world it was trained on (world.json, corpus_sample.txt)

The state lives on the bridge under one attribute (`STATE_ATTRIBUTE`) and is read only through `model_state`.
Besides what `load_model` records, it holds what later layers cache per model: the edit stack of
`model.weights`, and the plain-HF forward runner and sampled context templates of `editing.keys` (typed
`object` here because the model layer may not import the editing layer; `editing.keys` owns their types).

"Toy or not" comes from the model's own folder, never from its name or its neighbours:
  * `training.json` written by `ace_interp.data.train_toy` (its `config.world` is the world's `WorldConfig`):
    a toy; its world is the first of the model folder, its sibling `world/` and the shipped `assets/world/` whose
    `world.json` has that same config;
  * `ace_interp.json` written by `save_model` for an (edited) toy: `{"world": "<folder>"}`.
Any other folder, and any hub id, is a model trained on running text.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from transformer_lens.model_bridge import TransformerBridge

log = logging.getLogger(__name__)

STATE_ATTRIBUTE = "ace_state"
TRAINING_FILE = "training.json"  # written by data.train_toy next to a toy's weights
SAVED_STATE_FILE = "ace_interp.json"  # written by save_model for a toy, so the edited copy stays one
WORLD_SPEC_FILE = "world.json"


@dataclass
class ModelState:
    """Everything ace-interp attaches to one loaded model."""

    source: str = ""  # the local folder or hub id the weights came from ("" when not loaded by load_model)
    is_toy: bool = False  # a synthetic-world toy model (trained on one fact per sequence)
    world: Path | None = None  # the folder of the toy's world (world.json, corpus_sample.txt); None otherwise
    weight_edits: list = field(default_factory=list)  # model.weights.WeightEdit stack, oldest first
    hf_runner: object | None = None  # editing.keys.HFRunner, built once per bridge
    context_templates: dict = field(default_factory=dict)  # editing.keys.context_templates cache
    fact_sites: dict = field(default_factory=dict)  # editing.calibrate.cached_fact_sites, per statistics setting

    def saved_metadata(self) -> dict | None:
        """What `save_model` writes to `SAVED_STATE_FILE` (None: nothing to write)."""
        return {"world": str(self.world)} if self.is_toy and self.world is not None else None


def model_state(bridge: TransformerBridge) -> ModelState:
    """The bridge's `ModelState` (created empty for a bridge that `load_model` did not build)."""
    state = vars(bridge).get(STATE_ATTRIBUTE)
    if state is None:
        state = ModelState()
        vars(bridge)[STATE_ATTRIBUTE] = state
    return state


def attach_state(bridge: TransformerBridge, state: ModelState) -> ModelState:
    """Make `state` the bridge's state (load_model does this once)."""
    vars(bridge)[STATE_ATTRIBUTE] = state
    return state


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _world_config(folder: Path) -> dict | None:
    spec = _read_json(folder / WORLD_SPEC_FILE)
    return spec.get("config") if isinstance(spec, dict) else None


def state_from_metadata(source: str | os.PathLike, shipped_worlds: Sequence[Path] = ()) -> ModelState:
    """A fresh `ModelState` for `source` (a local folder or a hub id), read from the folder's own metadata;
    `shipped_worlds`: world folders to try after the model's own folder and its sibling `world/`."""
    folder = Path(source)
    if not folder.is_dir():
        return ModelState(source=str(source))
    saved = _read_json(folder / SAVED_STATE_FILE)
    if isinstance(saved, dict) and saved.get("world"):
        world = Path(saved["world"])
        return ModelState(str(source), is_toy=True, world=world if world.is_dir() else None)
    training = _read_json(folder / TRAINING_FILE)
    world_config = (training or {}).get("config", {}).get("world") if isinstance(training, dict) else None
    if world_config is None:
        return ModelState(source=str(source))
    for candidate in (folder, folder.parent / "world", *shipped_worlds):
        if _world_config(candidate) == world_config:
            return ModelState(str(source), is_toy=True, world=candidate)
    log.warning("%s is a synthetic-world toy (%s) but no world.json with its world config was found", folder, TRAINING_FILE)
    return ModelState(str(source), is_toy=True)
