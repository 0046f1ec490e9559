"""`check_hparam_layers`: a hyper-parameter naming a layer the model lacks stops an edit before any computation."""

import pytest
import torch

from ace_interp.editing import check_hparam_layers, default_hparams, edit, override_hparams
from ace_interp.model import hf_parameters

from edit_cases import FRANCE


def test_layer_fields_are_checked_by_name_at_any_depth(tiny_model):
    n = tiny_model.cfg.n_layers
    check_hparam_layers(tiny_model, default_hparams("ace", tiny_model), "ace")  # the defaults fit
    with pytest.raises(ValueError, match=rf"rome.layer = {n}, but the model has {n} layers"):
        check_hparam_layers(tiny_model, override_hparams(default_hparams("rome", tiny_model), layer=n), "rome")
    with pytest.raises(ValueError, match=r"memit.layers = \(0, -99\)"):
        check_hparam_layers(tiny_model, override_hparams(default_hparams("memit", tiny_model), layers=(0, -99)), "memit")
    with pytest.raises(ValueError, match="layers are integer indices"):
        check_hparam_layers(tiny_model, override_hparams(default_hparams("rome", tiny_model), layer="last"))
    # counts and switches whose names end in _layers are not layers
    check_hparam_layers(tiny_model, override_hparams(default_hparams("ace", tiny_model), n_value_layers=99,
                                                     rank_layers=False))


def test_edit_refuses_a_missing_layer_and_leaves_the_model_unchanged(tiny_model):
    before = {k: v.clone() for k, v in hf_parameters(tiny_model).items()}
    hp = override_hparams(default_hparams("rome", tiny_model), layer=99)
    with pytest.raises(ValueError, match="rome.layer = 99"):
        edit(tiny_model, [FRANCE], "rome", hp)
    assert all(torch.equal(v, before[k]) for k, v in hf_parameters(tiny_model).items())
