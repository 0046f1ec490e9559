"""The shared key→value solver: against explicit least squares, and as a closed-form write into a model."""

import pytest
import torch

from ace_interp.editing.covariance import corpus_keys, second_moments
from ace_interp.editing import EditRequest
from ace_interp.editing.hparams import CovarianceHParams
from ace_interp.editing.keys import compute_keys
from ace_interp.editing.solver import SolverError, regularised_cholesky, solve_key_value
from ace_interp.model import apply_weight_updates, ffn_weight

from edit_cases import FRANCE, SPAIN


def _problem(n=3, d=12, m=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    keys = torch.randn(n, d, generator=g, dtype=torch.float64)
    residuals = torch.randn(n, m, generator=g, dtype=torch.float64)
    a = torch.randn(d, 3 * d, generator=g, dtype=torch.float64)
    return keys, residuals, a @ a.T / (3 * d)


@pytest.mark.parametrize("cov_weight", [0.5, 10.0, 1000.0])
def test_solver_matches_explicit_least_squares(cov_weight):
    keys, residuals, c = _problem()
    delta = solve_key_value(keys, residuals, c, cov_weight=cov_weight, ridge=0.0)
    # reference: min ‖KΔ − R‖² + λ‖LᵀΔ‖² (C = LLᵀ) as one stacked ordinary least-squares problem
    chol = torch.linalg.cholesky(c)
    a = torch.cat([keys, cov_weight**0.5 * chol.T])
    b = torch.cat([residuals, torch.zeros(c.shape[0], residuals.shape[1], dtype=torch.float64)])
    reference = torch.linalg.lstsq(a, b).solution
    torch.testing.assert_close(delta, reference, rtol=1e-7, atol=1e-9)


def test_solver_at_zero_weight_interpolates_and_is_rome_for_one_key():
    keys, residuals, c = _problem(n=1)
    delta = solve_key_value(keys, residuals, c, cov_weight=0.0, ridge=0.0)
    torch.testing.assert_close(keys @ delta, residuals)
    c_inv_k = torch.linalg.solve(c, keys[0])
    rome = torch.outer(c_inv_k, residuals[0]) / (keys[0] @ c_inv_k)
    torch.testing.assert_close(delta, rome)
    keys3, residuals3, c3 = _problem(n=3)
    torch.testing.assert_close(keys3 @ solve_key_value(keys3, residuals3, c3, 0.0, ridge=0.0), residuals3)


def test_solver_errors():
    keys, residuals, c = _problem()
    with pytest.raises(SolverError, match="do not pair up"):
        solve_key_value(keys[:2], residuals, c)
    with pytest.raises(SolverError, match="does not match"):
        solve_key_value(keys, residuals, c[:5, :5])
    with pytest.raises(SolverError, match="NaN"):
        solve_key_value(keys * float("nan"), residuals, c)


def test_regularised_cholesky_handles_singular_moment():
    k = torch.randn(3, 10, dtype=torch.float64)
    factor = regularised_cholesky(k.T @ k / 3)  # rank 3 of 10
    assert torch.isfinite(factor).all()


@pytest.mark.parametrize("cov_weight", [0.0, 2.0])
def test_closed_form_write_maps_keys_to_targets_and_spares_corpus_keys(tiny_model, tiny_corpus, cov_weight):
    bridge = tiny_model
    layer = 1
    requests = [FRANCE, SPAIN]
    keys = compute_keys(bridge, requests, [layer])[layer]  # bare prompts: the key is the exact activation
    w_out, b_out = ffn_weight(bridge, layer, "W_out"), ffn_weight(bridge, layer, "b_out")
    current = keys @ w_out + (0 if b_out is None else b_out)
    g = torch.Generator().manual_seed(0)
    targets = current + 0.5 * current.norm(dim=-1, keepdim=True) * torch.randn(current.shape, generator=g)
    c = second_moments(bridge, [layer], corpus=tiny_corpus, n_tokens=1000, progress=False)[layer]
    delta = solve_key_value(keys, targets - current, c, cov_weight=cov_weight)

    hook = f"blocks.{layer}.hook_mlp_out"
    with apply_weight_updates(bridge, {(layer, "W_out"): delta}):
        for i, r in enumerate(requests):
            _, cache = bridge.run_with_cache(bridge.to_tokens(r.text), names_filter=lambda n: n == hook)
            out = cache[hook][0, -1]  # the subject is the prompt's last token
            err = (out - targets[i]).norm() / (targets[i] - current[i]).norm()
            if cov_weight == 0.0:
                assert err < 1e-3, f"request {i}: relative error {err:.2e}"
            else:
                assert err < 0.5, f"request {i}: relative error {err:.2e}"
    # corpus keys move far less than the edited keys (RMS output change per key)
    corpus = corpus_keys(bridge, layer, tiny_corpus, n_tokens=500)
    edited_move = (keys @ delta).norm(dim=-1).pow(2).mean().sqrt()
    corpus_move = (corpus @ delta).norm(dim=-1).pow(2).mean().sqrt()
    assert corpus_move < 0.3 * edited_move, f"corpus keys move {corpus_move:.3g}, edited keys {edited_move:.3g}"


@pytest.mark.parametrize("cov_weight", [0.0, 3.0])
def test_keys_per_context_match_the_weighted_least_squares_definition(cov_weight):
    # min Σ_i Σ_j (1/c)‖k_ij Δ − r_i‖² + λ tr(ΔᵀCΔ), solved as one stacked ordinary least-squares problem
    n, c, d, m = 2, 3, 12, 5
    g = torch.Generator().manual_seed(1)
    keys = torch.randn(n, c, d, generator=g, dtype=torch.float64)
    residuals = torch.randn(n, m, generator=g, dtype=torch.float64)
    _, _, moment = _problem(d=d)
    delta = solve_key_value(keys, residuals, moment, cov_weight=cov_weight, ridge=0.0)
    if cov_weight > 0:  # (at λ = 0 the problem is underdetermined; the solver picks the min-C-norm solution)
        chol = torch.linalg.cholesky(moment)
        a = torch.cat([keys.reshape(n * c, d) / c**0.5, cov_weight**0.5 * chol.T])
        b = torch.cat([residuals.repeat_interleave(c, 0) / c**0.5, torch.zeros(d, m, dtype=torch.float64)])
        reference = torch.linalg.lstsq(a, b).solution
        torch.testing.assert_close(delta, reference, rtol=1e-7, atol=1e-9)
    else:  # interpolation: every context's key moves by its request's residual
        torch.testing.assert_close(torch.einsum("ncd,dm->ncm", keys, delta), residuals[:, None].expand(n, c, m))


def test_keys_per_context_reduce_to_the_averaged_solve_when_contexts_agree():
    keys, residuals, c = _problem()
    repeated = keys[:, None].expand(-1, 4, -1)
    for weight in (0.0, 5.0):
        torch.testing.assert_close(solve_key_value(repeated, residuals, c, weight), solve_key_value(keys, residuals, c, weight))


def test_compute_keys_per_context_are_the_rows_the_mean_averages(tiny_model):
    contexts = ("", "One two. ", "Three four five. ")
    mean = compute_keys(tiny_model, [FRANCE, SPAIN], [0, 1], contexts)
    each = compute_keys(tiny_model, [FRANCE, SPAIN], [0, 1], contexts, per_context=True)
    for layer in (0, 1):
        assert each[layer].shape == (2, 3, mean[layer].shape[-1])
        torch.testing.assert_close(each[layer].mean(1), mean[layer])
        for j, context in enumerate(contexts):  # row j is the key read in context j
            torch.testing.assert_close(each[layer][:, j], compute_keys(tiny_model, [FRANCE, SPAIN], [layer], (context,))[layer])


def test_unknown_context_keys_is_rejected():
    with pytest.raises(ValueError, match="context_keys"):
        CovarianceHParams(context_keys="median").per_context_keys


def test_compute_keys_with_owners_average_each_owners_requests(tiny_model):
    """`owners` groups requests into one key row each: the mean of the group's own keys (ACE's implicit subjects)."""
    rows = [FRANCE, SPAIN, EditRequest("the capital of {}", "the country of berlin", "tokyo")]
    grouped = compute_keys(tiny_model, rows, [0, 1], owners=[0, 1, 0])
    alone = compute_keys(tiny_model, rows, [0, 1])
    for layer in (0, 1):
        torch.testing.assert_close(grouped[layer][0], (alone[layer][0] + alone[layer][2]) / 2)
        torch.testing.assert_close(grouped[layer][1], alone[layer][1])
    with pytest.raises(ValueError, match="without gaps"):
        compute_keys(tiny_model, rows, [0], owners=[0, 2, 0])
    with pytest.raises(ValueError, match="3 requests"):
        compute_keys(tiny_model, rows, [0], owners=[0, 1])


@pytest.mark.parametrize("per_context", [False, True])
def test_min_realised_is_the_row_weighted_least_squares(per_context):
    """`min_realised` = f: a key row that would realise q/(q + λ) < f of its residual gets λ_j = q(1 − f)/f, i.e. it
    weighs λ/λ_j in min Σ_j w_j‖k_jΔ − r_j‖² + λ tr(ΔᵀCΔ); checked against that problem solved as one stacked
    ordinary least squares, and a lone key then realises exactly f."""
    n, c, d, m, lam, f = 3, 2, 12, 5, 50.0, 0.5
    g = torch.Generator().manual_seed(2)
    keys = torch.randn(n, c, d, generator=g, dtype=torch.float64) * torch.tensor([0.2, 1.0, 5.0])[:, None, None]
    residuals = torch.randn(n, m, generator=g, dtype=torch.float64)
    _, _, moment = _problem(d=d)
    if not per_context:
        keys = keys[:, 0]
    rows = keys.reshape(-1, d) / (c**0.5 if per_context else 1.0)
    reps = c if per_context else 1
    q = (rows * torch.linalg.solve(moment, rows.T).T).sum(-1)  # per key row
    lam_j = torch.minimum(torch.full_like(q, lam), q * (1 - f) / f)
    assert (lam_j < lam).any() and (lam_j == lam).any()  # the problem exercises both cases
    weights = lam / lam_j
    chol = torch.linalg.cholesky(moment)
    a = torch.cat([rows * weights[:, None] ** 0.5, lam**0.5 * chol.T])
    b = torch.cat([residuals.repeat_interleave(reps, 0) / reps**0.5 * weights[:, None] ** 0.5,
                   torch.zeros(d, m, dtype=torch.float64)])
    reference = torch.linalg.lstsq(a, b).solution
    delta = solve_key_value(keys, residuals, moment, cov_weight=lam, ridge=0.0, min_realised=f)
    torch.testing.assert_close(delta, reference, rtol=1e-7, atol=1e-9)
    assert torch.equal(solve_key_value(keys, residuals, moment, lam, ridge=0.0, min_realised=0.0),
                       solve_key_value(keys, residuals, moment, lam, ridge=0.0))
    # one key alone: the plain solve realises q/(q + λ) < f of its residual, with the floor exactly f
    lone, r = (keys[:1, 0] if per_context else keys[:1]), residuals[:1]
    q1 = float(lone[0] @ torch.linalg.solve(moment, lone[0]))
    assert q1 / (q1 + lam) < f
    realised = lone @ solve_key_value(lone, r, moment, lam, ridge=0.0, min_realised=f)
    torch.testing.assert_close(realised, f * r)
    with pytest.raises(SolverError, match="min_realised"):
        solve_key_value(keys, residuals, moment, lam, min_realised=1.0)
