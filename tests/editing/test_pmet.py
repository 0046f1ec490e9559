"""PMET's spread accounting: the reference ("ffn") measures what is left on the last layer's FFN output, so
each layer adds its share on top of the others'; "residual" measures it on the residual, as MEMIT does."""

import dataclasses

import pytest
import torch

from ace_interp.editing import edit
from ace_interp.editing.hparams import CovarianceHParams
from ace_interp.editing.memit import SpreadStep, residual_target, spread_divisors, spread_write
from ace_interp.editing.keys import outputs_at_subject
from ace_interp.model import apply_weight_updates

from edit_cases import FRANCE, SPAIN

LAYERS = (0, 1, 2)


def _residual_shift(bridge, requests, updates, layer):
    """h^layer at the subject's last token after the updates minus before."""
    before = outputs_at_subject(bridge, requests, layer, "resid")
    with apply_weight_updates(bridge, updates):
        after = outputs_at_subject(bridge, requests, layer, "resid")
    return after - before


@pytest.mark.parametrize("accounting", ["ffn", "residual"])
def test_spread_accounting_lands_delta_once_or_once_per_layer_share(tiny_model, tiny_corpus, accounting):
    bridge, requests = tiny_model, [FRANCE, SPAIN]
    z_layer = LAYERS[-1]
    ffn = outputs_at_subject(bridge, requests, z_layer, "mlp")
    gen = torch.Generator().manual_seed(0)
    delta = torch.randn(ffn.shape, generator=gen) * ffn.norm(dim=-1, keepdim=True) / ffn.shape[-1] ** 0.5
    z = ffn + delta
    site = "mlp"
    if accounting == "residual":
        z, site = residual_target(bridge, requests, z_layer, z), "resid"
        torch.testing.assert_close(z - outputs_at_subject(bridge, requests, z_layer, "resid"), delta)
    # a tiny λ: the last layer closes what is left at the edited keys almost exactly
    cov = CovarianceHParams(corpus=tiny_corpus, n_tokens=400, cov_weight=1e-4, progress=False)
    steps = [SpreadStep(l, z, z_layer, site, d) for l, d in zip(LAYERS, spread_divisors(len(LAYERS), "sqrt"))]
    updates = spread_write(bridge, requests, steps, ("",), cov).updates
    shift = _residual_shift(bridge, requests, updates, z_layer)
    along = (shift * delta).sum(-1) / (delta * delta).sum(-1)  # the shift's coefficient along δ
    if accounting == "residual":
        torch.testing.assert_close(shift, delta, rtol=0, atol=0.02 * float(delta.norm(dim=-1).max()))
    else:
        # 1/sqrt(3) + 1/sqrt(2) of δ from layers 0 and 1 come on top of the last layer's δ (≈ 2.3δ in all,
        # less what the earlier writes move F^2 by)
        assert bool((along > 1.5).all()), along


def test_pmet_with_residual_accounting_edits_and_undoes(tiny_model, fast_hparams):
    bridge = tiny_model
    hp = fast_hparams("pmet", bridge)
    hp = dataclasses.replace(hp, spread_accounting="residual")
    before = {k: v.clone() for k, v in bridge.original_model.state_dict().items()}
    with edit(bridge, FRANCE, method="pmet", hparams=hp):
        with torch.no_grad():
            pred = int(bridge(bridge.to_tokens(FRANCE.text))[0, -1].argmax())
        target = bridge.tokenizer(" " + FRANCE.target_new, add_special_tokens=False)["input_ids"][0]
        assert pred == target
    after = bridge.original_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
