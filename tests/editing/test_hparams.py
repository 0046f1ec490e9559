"""Which defaults a model gets: the reference settings on small models, the adapted ones above 6 layers."""

import pytest

from ace_interp.editing import default_hparams
from ace_interp.model import load_model
from ace_interp.model.random_init import build_random_model


@pytest.fixture(scope="module")
def deeper_model(tmp_path_factory):
    """An 8-layer random Llama: neither a small (≤ 6 layers) model nor one of the paper's two."""
    return load_model(build_random_model("llama", tmp_path_factory.mktemp("llama8"), n_layers=8), device="cpu")


@pytest.mark.parametrize("method", ["rome", "memit", "pmet", "ace"])
def test_adapted_defaults_above_six_layers(deeper_model, tiny_model, method):
    deep, small = default_hparams(method, deeper_model), default_hparams(method, tiny_model)
    assert deep.covariance.context_keys == "each"  # one key row per context prefix (docs/ace.md)
    assert small.covariance.context_keys == "mean"  # the reference: keys averaged over contexts
    # every key row realises at least half its residual on adapted models; the reference solve on small ones
    assert (deep.covariance.min_realised, small.covariance.min_realised) == (0.5, 0.0)
    # ROME and ACE keep what follows the subject in chained edits (docs/ace.md, "Chained edits")
    assert (deep.target.subject_kl_factor > 0) == (method in ("rome", "ace"))
    assert small.target.subject_kl_factor == 0
    if method in ("pmet", "ace"):
        assert deep.spread_accounting == "residual" and not deep.joint_attention
    if method == "ace":
        # the query group's own target, written first, and the value target on top of it (docs/ace.md)
        assert deep.variant == "attribution" and deep.query_target in (None, "own") and not deep.rank_layers
        assert deep.value_target_after_query and not small.value_target_after_query
        assert max(deep.query_layers) < min(deep.value_layers)


def test_override_hparams_reaches_nested_fields_and_leaves_the_original(tiny_model):
    from ace_interp.editing import override_hparams

    hp = default_hparams("ace", tiny_model)
    new = override_hparams(hp, query_weight=0.25, **{"target.subject_kl_factor": 0.7, "covariance.n_tokens": 123})
    assert (new.query_weight, new.target.subject_kl_factor, new.covariance.n_tokens) == (0.25, 0.7, 123)
    assert new.target.v_lr == hp.target.v_lr  # untouched nested fields are kept
    assert (hp.query_weight, hp.target.subject_kl_factor) == (1.0, default_hparams("ace", tiny_model).target.subject_kl_factor)
    assert default_hparams("ace", tiny_model, **{"target.v_lr": 0.01}).target.v_lr == 0.01


@pytest.mark.parametrize("name, message", [("no_such_field", "no field 'no_such_field'"),
                                           ("target.no_such_field", "no field 'no_such_field'"),
                                           ("query_weight.x", "not a dataclass")])
def test_override_hparams_rejects_unknown_names(tiny_model, name, message):
    from ace_interp.editing import override_hparams

    with pytest.raises(ValueError, match=message):
        override_hparams(default_hparams("ace", tiny_model), **{name: 1})


def test_parse_overrides_reads_literals_and_keeps_words():
    from ace_interp.editing import parse_overrides

    assert parse_overrides(["query_weight=0.5", "target.subject_kl_factor=0", "rank_layers=False",
                            "query_layers=(3, 4)", "variant=attribution"]) == {
        "query_weight": 0.5, "target.subject_kl_factor": 0, "rank_layers": False, "query_layers": (3, 4),
        "variant": "attribution"}
    with pytest.raises(ValueError, match="FIELD=VALUE"):
        parse_overrides(["query_weight"])


def test_overridden_hparams_builds_only_the_methods_given_overrides(tiny_model):
    from ace_interp.editing import overridden_hparams

    chosen = overridden_hparams(tiny_model, {"ace": ["query_weight=0.5", "implicit_layers=(1,)"], "pmet": []})
    assert list(chosen) == ["ace"]
    assert chosen["ace"] == default_hparams("ace", tiny_model, query_weight=0.5, implicit_layers=(1,))
    assert overridden_hparams(tiny_model, {"ace": [], "pmet": []}) == {}


def test_presets_are_data_files_and_tuned_is_the_default(tiny_model):
    from ace_interp.editing import DEFAULT_PRESET, load_preset, preset_names
    from ace_interp.editing import tuned_hparams

    assert DEFAULT_PRESET == "tuned"
    for method in ("rome", "memit", "pmet", "ace"):
        assert preset_names(method) == ["reference", "tuned"]
        assert load_preset(method, "reference")["released"][0]["source"]["commit"]
        assert default_hparams(method, tiny_model) == default_hparams(method, tiny_model, "tuned") == tuned_hparams(method, tiny_model)
    assert preset_names("ft") == ["tuned"]
    with pytest.raises(ValueError, match="no preset 'reference' for method 'ft'"):
        default_hparams("ft", tiny_model, "reference")
    with pytest.raises(ValueError, match="no preset 'nonesuch'"):
        default_hparams("memit", tiny_model, "nonesuch")


@pytest.mark.parametrize("method", ["rome", "memit", "pmet", "ace"])
def test_reference_preset_runs_the_released_algorithm_and_takes_overrides(tiny_model, method):
    hp = default_hparams(method, tiny_model, "reference", **{"target.v_lr": 0.3})
    t = hp.target
    assert (t.stop_on, t.per_request, t.decay_power, t.kl_factor, t.v_lr) == ("loss", True, 2, 0.0, 0.3)
    assert t.subject_kl_factor == (1.0 if method in ("pmet", "ace") else 0.0625)  # the release's KL, at the subject
    assert hp.covariance.ridge == 0 and hp.covariance.min_realised == 0
    assert hp.covariance.context_keys == ("mean" if method == "rome" else "grouped")
    assert (t.argmax_nll_factor is not None) == (method in ("pmet", "ace"))


def test_grouped_keys_weigh_the_bare_prompt_half():
    """MEMIT's compute_ks: mean within the bare prompt's group and within the prefixes' group, then across them."""
    import torch

    from ace_interp.editing import CovarianceHParams
    from ace_interp.editing.keys import PromptBatch

    contexts = ["", "a. ", "b. ", "c. "]
    weights = CovarianceHParams(context_keys="grouped").key_weights(contexts)
    assert weights == [0.5, 0.5 / 3, 0.5 / 3, 0.5 / 3]
    assert CovarianceHParams(context_keys="mean").key_weights(contexts) is None
    assert CovarianceHParams(context_keys="grouped").key_weights([""]) is None
    values = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(8, 3)  # 2 requests × 4 contexts, in build order
    batch = PromptBatch(tokens=torch.zeros(8, 1, dtype=torch.long), lengths=torch.ones(8, dtype=torch.long),
                        lookup=torch.zeros(8, dtype=torch.long), owner=torch.arange(2).repeat_interleave(4),
                        target_ids=torch.full((8, 1), -100))
    grouped = batch.keys_per_owner(values, 2, per_context=False, weights=weights)
    expected = torch.stack([0.5 * values[4 * i] + 0.5 * values[4 * i + 1 : 4 * i + 4].mean(0) for i in range(2)])
    assert torch.allclose(grouped, expected)
