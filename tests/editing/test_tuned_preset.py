"""The tuned preset as data (`presets/<method>/tuned.json`) gives exactly the hyper-parameters the code gave before
the values moved into those files (tests/editing/data/tuned_hparams_frozen.json, frozen from commit b24ef5d's
`tuned_hparams` for the tests' tiny models, both shipped toys, SmolLM2-135M and the shapes of GPT-J-6B, Qwen3-8B
and a few other depths)."""

import dataclasses
import json
from pathlib import Path

import pytest

from ace_interp.editing import default_hparams, load_preset
from ace_interp.editing.hparams import METHODS, hparams_from_size_classes, mapped_layer, preset_value, size_class
from ace_interp.model.architecture import ModelSpec, model_spec

FROZEN = json.loads((Path(__file__).parent / "data" / "tuned_hparams_frozen.json").read_text())
SHAPES = {row["name"]: row for row in FROZEN["shapes"]}


# fields added to the dataclasses after the values were frozen, with the value every tuned preset must give them
ADDED_SINCE_FROZEN = {"ace": {"write_attention": False}}
# nested fields added since, likewise (every method's target optimiser; the shape rule keeps the references' token,
# a calibration may change it afterwards: `hparams.with_fact_sites`)
ADDED_TARGET_FIELDS = {"fact_token": "subject_last"}


def changed_since_frozen(method: str, spec: ModelSpec) -> dict:
    """Deliberate changes since the values were frozen, each measured (docs/findings/2026-12-07-fact-token-calibration.md):
    the ≤ 6-layer class writes MEMIT / PMET at one layer, the released span's last mapped (the shipped toys' layer 1,
    which the span gave them too)."""
    if method in ("memit", "pmet") and spec.n_layers <= 6:
        return {"layers": [mapped_layer(8, spec.n_layers)]}
    return {}


def as_json(hp) -> dict:
    """A dataclass as the frozen file stores it (tuples as lists)."""
    return json.loads(json.dumps(dataclasses.asdict(hp), default=str))


def assert_frozen(hp, method: str, frozen: dict) -> None:
    actual = as_json(hp)
    added = {k: actual.pop(k) for k in set(actual) - set(frozen)}
    assert added == ADDED_SINCE_FROZEN.get(method, {})
    if "target" in actual:
        added_target = {k: actual["target"].pop(k) for k in set(actual["target"]) - set(frozen["target"])}
        assert added_target == ADDED_TARGET_FIELDS
    assert actual == frozen


@pytest.mark.parametrize("name", list(SHAPES))
@pytest.mark.parametrize("method", METHODS)
def test_tuned_preset_file_reproduces_the_frozen_values(name, method):
    row = SHAPES[name]
    spec = ModelSpec(**row["spec"])
    hp = hparams_from_size_classes(method, load_preset(method, "tuned"), spec, row["world_corpus"])
    assert_frozen(hp, method, {**row["hparams"][method], **changed_since_frozen(method, spec)})


def test_the_frozen_table_covers_every_size_class_and_the_world_corpus_exception():
    names = {row["name"] for row in FROZEN["shapes"]}
    assert {"toy-gptj", "toy-qwen3", "smollm2-135m", "GPT-J-6B shape", "Qwen3-8B shape"} <= names
    for method in METHODS:
        doc = load_preset(method, "tuned")
        hit = {size_class(doc, ModelSpec(**row["spec"]))["name"] for row in FROZEN["shapes"]}
        assert hit == {c["name"] for c in doc["size_classes"]}
    toy = SHAPES["toy-gptj"]
    assert toy["world_corpus"] and toy["hparams"]["memit"]["target"]["n_context"] == 0  # toys edit the bare prompt
    assert SHAPES["tiny-gptj (tests' tiny model)"]["hparams"]["memit"]["target"]["n_context"] == 5


@pytest.mark.parametrize("name", ["toy-gptj", "toy-qwen3"])
def test_default_hparams_of_the_shipped_toys_equal_the_frozen_values(name):
    from ace_interp.model import load_model

    bridge = load_model(name, device="cpu")
    assert dataclasses.asdict(model_spec(bridge)) == SHAPES[name]["spec"]
    for method in METHODS:
        assert_frozen(default_hparams(method, bridge), method, SHAPES[name]["hparams"][method])


def test_default_hparams_of_the_tiny_models_equal_the_frozen_values(tiny_model):
    arch = {"GPT2LMHeadModel": "gpt2", "GPTJForCausalLM": "gptj", "Qwen3ForCausalLM": "qwen3"}[model_spec(tiny_model).architecture]
    row = SHAPES[f"tiny-{arch} (tests' tiny model)"]
    for method in METHODS:
        changed = changed_since_frozen(method, model_spec(tiny_model))
        assert_frozen(default_hparams(method, tiny_model), method, {**row["hparams"][method], **changed})


def test_preset_values_evaluate_maps_spans_and_cases():
    spec = ModelSpec(**SHAPES["smollm2-135m"]["spec"])  # 30 layers, d_mlp 1536
    assert preset_value({"map": 5}, spec) == round(5 * 29 / 27) == 5
    assert preset_value({"span": [3, 8]}, spec) == tuple(range(3, 10))
    assert preset_value({"span_ending_at": {"map": 20, "from": 30}, "length": 3}, spec) == (18, 19, 20)
    assert preset_value({"below": {"map": 27, "clip": [1, "last"]}}, spec) == tuple(range(29))  # map 27 -> 29
    assert preset_value({"map": 40, "clip": [1, "last"]}, spec) == 29
    assert preset_value({"per_d_mlp": 0.9, "times": [4, 3]}, spec) == 0.9 * 1536 * 4 / 3
    assert preset_value({"value": [1, 2], "why": "a reason"}, spec) == (1, 2)
    rule = {"cases": [{"when": {"min_layers": 28, "min_d_mlp": 8192}, "value": 100_000}, {"value": 5_000}]}
    assert preset_value(rule, spec) == 5_000
    with pytest.raises(ValueError, match="unknown preset value"):
        preset_value({"nonesuch": 1}, spec)
    with pytest.raises(ValueError, match="unknown size-class condition"):
        preset_value({"cases": [{"when": {"colour": "red"}, "value": 1}]}, spec)


def test_every_tuned_setting_that_departs_from_the_defaults_can_say_why():
    """Each preset file documents its classes, and the settings with a measurement carry it next to the value."""
    for method in METHODS:
        doc = load_preset(method, "tuned")
        assert doc["summary"] and all(c["why"] and "when" in c for c in doc["size_classes"])
        whys = [v["why"] for c in doc["size_classes"] for v in c["fields"].values() if isinstance(v, dict) and "why" in v]
        assert method == "ft" or len(whys) >= 3
