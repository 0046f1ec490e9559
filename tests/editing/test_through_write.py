"""Target optimisation through the write (`TargetHParams.through_write`, `solver.write_map`): the hook
that stands in for the write during optimisation is the write, so the optimised outcome is the edit's."""

import dataclasses

import pytest
import torch

from ace_interp.editing import edit
from ace_interp.editing.hparams import CovarianceHParams
from ace_interp.editing.keys import add_through_write, build_batch, compute_keys, hf_runner, hooks, target_token_ids
from ace_interp.editing.memit import load_second_moments
from ace_interp.editing.solver import solve_key_value, write_map
from ace_interp.model import apply_weight_updates

from ace_interp.editing import EditRequest
from edit_cases import FRANCE, SPAIN

# the subject comes back at the end of the prompt: its second mention has a key much like the edited one,
# so a write at the first mention also moves the last position (what optimising through the write sees)
REPEATED = EditRequest("{} : the capital of france is", "france", "tokyo", "paris")


def test_write_map_reproduces_the_solver_and_maps_edited_keys_to_their_residuals():
    gen = torch.Generator().manual_seed(0)
    keys = torch.randn(3, 16, generator=gen)
    basis = torch.randn(64, 16, generator=gen)
    second = basis.T @ basis / 64
    residuals = torch.randn(3, 8, generator=gen)
    for weight in (0.0, 2.0):
        mapping = write_map(keys, second, cov_weight=weight)
        solved = solve_key_value(keys, residuals, second, cov_weight=weight)
        torch.testing.assert_close((mapping @ residuals.double()).float(), solved, rtol=1e-5, atol=1e-6)
    # exact interpolation at λ = 0: edited key i picks out residual i
    torch.testing.assert_close(keys.double() @ write_map(keys, second), torch.eye(3, dtype=torch.float64), atol=1e-8, rtol=0)
    # λ > 0 shrinks it
    assert (keys.double() @ write_map(keys, second, cov_weight=2.0)).diagonal().max() < 1


def test_through_write_hook_equals_writing_the_update(tiny_model, tiny_corpus):
    bridge = tiny_model
    runner = hf_runner(bridge)
    layer = 1
    keys = compute_keys(bridge, [FRANCE, SPAIN], [layer])[layer]
    cov = CovarianceHParams(corpus=tiny_corpus, n_tokens=500, progress=False)
    mapping = write_map(keys, load_second_moments(bridge, [layer], cov)[layer], cov_weight=0.5)
    delta = torch.randn(2, bridge.cfg.d_model, generator=torch.Generator().manual_seed(1))
    tokens = build_batch(bridge, [FRANCE, SPAIN]).tokens
    with torch.no_grad():
        with hooks(lambda: add_through_write(runner.down_proj[layer], mapping, lambda: delta)):
            hooked = runner.logits(tokens)
        update = (mapping @ delta.double()).to(delta.dtype)
        with apply_weight_updates(bridge, {(layer, "W_out"): update}):
            written = runner.logits(tokens)
        plain = runner.logits(tokens)
    torch.testing.assert_close(hooked, written, rtol=1e-4, atol=1e-4)
    assert (hooked - plain).abs().max() > 1e-2  # the update does something


@pytest.mark.parametrize("method", ["rome", "memit", "pmet"])
def test_one_layer_edit_realises_the_optimised_probability(tiny_model, fast_hparams, method):
    """With one written layer and no context prefixes, the edited model's p(target_new | prompt) is the
    probability the target optimisation ended with, at every position of the prompt (through the write)."""
    bridge = tiny_model
    hp = fast_hparams(method, bridge)
    hp = dataclasses.replace(hp, target=dataclasses.replace(hp.target, through_write=True, n_context=0, v_num_grad_steps=15))
    if method == "rome":
        hp = dataclasses.replace(hp, layer=1)
    else:
        hp = dataclasses.replace(hp, layers=(1,))
    if method == "pmet":
        hp = dataclasses.replace(hp, joint_attention=False)
    runner = hf_runner(bridge)
    first = target_token_ids(bridge, REPEATED.target_new)[0]
    assert len(target_token_ids(bridge, REPEATED.target_new)) == 1
    with torch.no_grad():
        before = float(runner.logits(bridge.to_tokens(REPEATED.text))[0, -1].float().softmax(-1)[first])
    with edit(bridge, [REPEATED], method, hp) as applied:
        with torch.no_grad():
            p = runner.logits(bridge.to_tokens(REPEATED.text))[0, -1].float().softmax(-1)[first]
        optimised = float(applied.info["target_prob"][0])
    assert optimised > 1.3 * before, (before, optimised)  # the optimisation moved somewhere to compare against
    assert abs(float(p) - optimised) < 2e-3, (float(p), optimised)
