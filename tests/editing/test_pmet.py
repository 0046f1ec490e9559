"""PMET's spread accounting: the reference ("ffn") measures what is left on the last layer's FFN output, so
each layer adds its share on top of the others'; "residual" measures it on the residual, as MEMIT does."""

import pytest
import torch

from ace_interp.editing.hparams import CovarianceHParams
from ace_interp.editing import EditRequest
from ace_interp.editing.memit import SpreadStep, residual_target, spread_write, sqrt_spread_steps
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
    if accounting == "residual":
        z_h = residual_target(bridge, requests, z_layer, ffn + delta)
        torch.testing.assert_close(z_h - outputs_at_subject(bridge, requests, z_layer, "resid"), delta)
    # a tiny λ: the last layer closes what is left at the edited keys almost exactly
    cov = CovarianceHParams(corpus=tiny_corpus, n_tokens=400, cov_weight=1e-4, progress=False)
    steps = sqrt_spread_steps(bridge, requests, LAYERS, ffn + delta, z_layer, accounting)
    updates = spread_write(bridge, requests, steps, ("",), cov).updates
    shift = _residual_shift(bridge, requests, updates, z_layer)
    along = (shift * delta).sum(-1) / (delta * delta).sum(-1)  # the shift's coefficient along δ
    if accounting == "residual":
        torch.testing.assert_close(shift, delta, rtol=0, atol=0.02 * float(delta.norm(dim=-1).max()))
    else:
        # 1/sqrt(3) + 1/sqrt(2) of δ from layers 0 and 1 come on top of the last layer's δ (≈ 2.3δ in all,
        # less what the earlier writes move F^2 by)
        assert bool((along > 1.5).all()), along


def test_unknown_spread_accounting_is_rejected(tiny_model):
    with pytest.raises(ValueError, match="spread accounting"):
        sqrt_spread_steps(tiny_model, [FRANCE], LAYERS, torch.zeros(1, tiny_model.cfg.d_model), 2, "both")


def test_spread_write_with_owners_moves_each_owners_mean_output_to_its_target(tiny_model, tiny_corpus):
    """One key row per owner (its requests' keys averaged): with a tiny λ, one layer's write lands the owner's
    mean FFN output on z (the FFN output is affine in the key, so the mean moves by the mean key's change)."""
    bridge, layer = tiny_model, 1
    rows = [FRANCE, EditRequest("the capital of {}", "the country of berlin", "tokyo"), SPAIN]
    owners = [0, 0, 1]
    ffn = outputs_at_subject(bridge, rows, layer, "mlp", owners=owners)
    gen = torch.Generator().manual_seed(1)
    z = ffn + torch.randn(ffn.shape, generator=gen) * ffn.norm(dim=-1, keepdim=True) / ffn.shape[-1] ** 0.5
    cov = CovarianceHParams(corpus=tiny_corpus, n_tokens=400, cov_weight=1e-6, progress=False)
    steps = [SpreadStep(layer, z, layer, "mlp", 1.0)]
    updates = spread_write(bridge, rows, steps, ("",), cov, owners=owners).updates
    with apply_weight_updates(bridge, updates):
        after = outputs_at_subject(bridge, rows, layer, "mlp", owners=owners)
        each = outputs_at_subject(bridge, rows, layer, "mlp")
    torch.testing.assert_close(after, z, rtol=1e-3, atol=1e-3 * float(z.norm(dim=-1).max()))
    assert not torch.allclose(each[0], each[1])  # the group's rows differ; only their mean is pinned


def test_spread_write_keeps_one_cholesky_factor_alive_and_the_same_updates(tiny_model, tiny_corpus, monkeypatch):
    """The solve factors one written layer at a time (memory: one float64 d_mlp² factor, not one per layer);
    the updates equal per-layer solves with each layer's own factor computed up front."""
    import weakref

    from ace_interp.editing import memit
    from ace_interp.editing.solver import regularised_cholesky, solve_key_value

    bridge, requests = tiny_model, [FRANCE, SPAIN]
    cov = CovarianceHParams(corpus=tiny_corpus, n_tokens=400, progress=False)
    ffn = outputs_at_subject(bridge, requests, LAYERS[-1], "mlp")
    steps = sqrt_spread_steps(bridge, requests, LAYERS, 1.1 * ffn, LAYERS[-1], "ffn")
    alive, most_alive = [], [0]

    def counting_cholesky(c, ridge):
        factor = regularised_cholesky(c, ridge)
        alive.append(weakref.ref(factor))
        most_alive[0] = max(most_alive[0], sum(r() is not None for r in alive))
        return factor

    monkeypatch.setattr(memit, "regularised_cholesky", counting_cholesky)
    updates = spread_write(bridge, requests, steps, ("",), cov).updates
    assert len(alive) == len(LAYERS) and most_alive[0] == 1
    moments = memit.load_second_moments(bridge, list(LAYERS), cov)
    factors = {l: regularised_cholesky(c, cov.ridge) for l, c in moments.items()}

    def all_factors_up_front(layer, keys, residual):
        return solve_key_value(keys, residual, cov_weight=cov.cov_weight, cholesky=factors[layer],
                               min_realised=cov.min_realised)

    reference = spread_write(bridge, requests, steps, ("",), cov, solve=all_factors_up_front).updates
    assert updates.keys() == reference.keys()
    for key in updates:
        assert torch.equal(updates[key], reference[key])
