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
    # ROME and ACE keep what follows the subject in chained edits (docs/ace.md, "Chained edits")
    assert (deep.target.subject_kl_factor > 0) == (method in ("rome", "ace"))
    assert small.target.subject_kl_factor == 0
    if method in ("pmet", "ace"):
        assert deep.spread_accounting == "residual" and not deep.joint_attention
    if method == "ace":  # its value target sees the query write (docs/ace.md, "Chained edits")
        assert deep.value_target_after_query and not small.value_target_after_query
