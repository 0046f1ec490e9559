"""AlphaEdit: the null-space solve against the paper's formula written out slowly, its projection property,
and edits of a tiny model (single, batched, and a sequence whose memory follows undo)."""

import dataclasses

import pytest
import torch

from ace_interp.editing import AlphaEditMemory, alphaedit_hparams, edit
from ace_interp.editing.covariance import second_moments
from ace_interp.editing.solver import null_space_projection, solve_null_space
from ace_interp.model import hf_parameters

from edit_cases import FRANCE, SPAIN, prediction, target_id


def _random_statistics(d=24, rank=10, seed=0):
    """A second moment with `rank` large directions and the rest tiny, and keys drawn from it."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))[0]
    eigenvalues = torch.cat([torch.rand(rank, generator=g, dtype=torch.float64) + 1.0, torch.full((d - rank,), 1e-4)])
    moment = basis @ torch.diag(eigenvalues) @ basis.T
    preserved = torch.randn(50, rank, generator=g, dtype=torch.float64) @ basis[:, :rank].T  # keys in the big directions
    return moment, basis, rank, preserved, g


def test_projection_keeps_the_small_eigenvalue_directions():
    moment, basis, rank, _, _ = _random_statistics()
    p = null_space_projection(moment, threshold=1e-2)
    torch.testing.assert_close(p @ p, p)
    torch.testing.assert_close(p, basis[:, rank:] @ basis[:, rank:].T)


def test_solve_matches_the_papers_formula_and_leaves_preserved_keys_alone():
    moment, _, _, preserved, g = _random_statistics()
    keys = torch.randn(3, 24, generator=g, dtype=torch.float64)
    residuals = torch.randn(3, 7, generator=g, dtype=torch.float64)
    earlier = torch.randn(4, 24, generator=g, dtype=torch.float64)
    p = null_space_projection(moment, threshold=1e-2)
    delta = solve_null_space(keys, residuals, p, earlier.T @ earlier, l2=10.0)
    # the paper's orientation: W ∈ R^{d_model × d_mlp}, keys as columns; ΔW = R Kᵀ P (K_p K_pᵀ P + K Kᵀ P + αI)⁻¹
    k, r, kp = keys.T, residuals.T, earlier.T
    slow = r @ k.T @ p @ torch.linalg.inv(kp @ kp.T @ p + k @ k.T @ p + 10.0 * torch.eye(24, dtype=torch.float64))
    torch.testing.assert_close(delta, slow.T)
    torch.testing.assert_close((torch.eye(24, dtype=torch.float64) - p) @ delta, torch.zeros_like(delta), atol=1e-10, rtol=0)
    assert (preserved @ delta).abs().max() < 1e-8 * delta.abs().max()


def test_solve_rejects_bad_inputs():
    p = torch.eye(4, dtype=torch.float64)
    with pytest.raises(ValueError, match="l2"):
        solve_null_space(torch.ones(1, 4), torch.ones(1, 2), p, l2=0.0)
    with pytest.raises(ValueError, match="NaN"):
        solve_null_space(torch.full((1, 4), float("nan")), torch.ones(1, 2), p)


def _hparams(bridge, fast_hparams):
    memit = fast_hparams("memit", bridge)
    return alphaedit_hparams(bridge, target=dataclasses.replace(memit.target, through_write=False),
                             covariance=memit.covariance, nullspace_threshold=0.5, relative_threshold=True, l2=1e-6)


def test_alphaedit_edits_inside_the_null_space_and_undoes_exactly(tiny_model, fast_hparams):
    bridge = tiny_model
    hp = _hparams(bridge, fast_hparams)
    before = {k: v.detach().clone() for k, v in hf_parameters(bridge).items()}
    applied = edit(bridge, [FRANCE, SPAIN], method="alphaedit", hparams=hp, on_failure="keep")
    assert [c.success for c in applied.verification.checks] == [True, True]
    assert all(prediction(bridge, r) == target_id(bridge, r) for r in (FRANCE, SPAIN))
    moments = second_moments(bridge, hp.layers, corpus=hp.covariance.corpus, n_tokens=hp.covariance.n_tokens, progress=False)
    for layer in hp.layers:
        threshold = hp.nullspace_threshold * float(moments[layer].diagonal().mean())
        p = null_space_projection(moments[layer], threshold)
        delta = (applied.weight_edit._targets[hp.layers.index(layer)] - applied.weight_edit._snapshots[hp.layers.index(layer)])
        delta = delta.to(torch.float64)
        delta = delta if delta.shape[0] == p.shape[0] else delta.T
        outside = (torch.eye(p.shape[0], dtype=torch.float64) - p) @ delta
        assert outside.norm() < 1e-3 * delta.norm()
    applied.undo()
    assert all(torch.equal(before[k], v) for k, v in hf_parameters(bridge).items())


def test_sequence_memory_keeps_earlier_keys_until_their_edit_is_undone(tiny_model, fast_hparams):
    bridge = tiny_model
    hp = _hparams(bridge, fast_hparams)
    memory = AlphaEditMemory()
    first = edit(bridge, FRANCE, method="alphaedit", hparams=hp, memory=memory, on_failure="keep")
    layer = hp.layers[0]
    gram = memory.preserved_gram(layer)
    assert gram is not None and gram.shape == (bridge.cfg.d_mlp, bridge.cfg.d_mlp)
    second = edit(bridge, SPAIN, method="alphaedit", hparams=hp, memory=memory, on_failure="keep")
    assert len(memory.edits) == 2
    second.undo()
    torch.testing.assert_close(memory.preserved_gram(layer), gram)
    first.undo()
    assert memory.preserved_gram(layer) is None
