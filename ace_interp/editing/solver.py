"""The one key→value least-squares solver every closed-form editor (ROME, MEMIT, PMET, ACE) uses.

TransformerLens orientation: a layer's FFN output is F = k W_out + b_out with k ∈ R^{d_mlp} (a key,
the down-projection input) and W_out ∈ R^{d_mlp × d_model}. Given n edited keys K ∈ R^{n × d_mlp} and the
changes R ∈ R^{n × d_model} their outputs should undergo (R = V − K W_out − b_out for target values V),
the update is

    Δ* = argmin_Δ ‖K Δ − R‖²_F + λ · tr(Δᵀ C Δ),     C = E[k kᵀ] over a text corpus  (MEMIT eq. 14)

i.e. fit the new associations while moving the outputs of typical corpus keys as little as possible
(E‖k Δ‖² = tr(Δᵀ C Δ)). Its closed form is Δ* = (KᵀK + λC)⁻¹ KᵀR; by the push-through identity

    Δ* = C⁻¹ Kᵀ (K C⁻¹ Kᵀ + λ I_n)⁻¹ R,

which needs only an n × n solve besides C⁻¹Kᵀ, and stays defined at λ = 0, where it is the exact,
minimum-C-norm interpolation K Δ = R (ROME's rank-one update for n = 1: Δ = C⁻¹k rᵀ / (kᵀC⁻¹k)).
A small ridge ε·mean(diag C)·I keeps C invertible when the corpus is small or keys are degenerate.

Keys per context. A request's key differs between the context prefixes it is read in; ROME/MEMIT average
them into one row. Given keys [n, c, d_mlp] instead, every (request, context) key is its own row, asked to
move by its request's residual, each weighted 1/c:

    Δ* = argmin_Δ Σ_i Σ_j (1/c) ‖k_ij Δ − r_i‖² + λ · tr(Δᵀ C Δ)

which is the averaged solve whenever a request's keys agree across contexts (k_ij = k_i), and otherwise
also reaches a key unlike the others — on SmolLM2 the key of a subject that follows the BOS token directly
(docs/ace.md, "Keys per context"). In the closed form this is the stacked rows K̃ = K/√c, R̃ = E R/√c
(E repeats each residual c times), so U = Ũ E/√c folds back to an [d_mlp, n] map.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor


class SolverError(ValueError):
    """Inputs to the solver are inconsistent (shapes, non-finite values)."""


def regularised_cholesky(second_moment: Float[Tensor, "d d"], ridge: float = 1e-4) -> Tensor:
    """Cholesky factor (float64) of C + ε·mean(diag C)·I.

    Memory: one float64 d × d copy (the ridge goes onto its diagonal in place, no identity matrix) and the
    factor; at d_mlp 16,384 (GPT-J-6B) each is 2 GiB."""
    scale = second_moment.diagonal().to(torch.float64).mean().clamp_min(1e-12)
    jitter = ridge
    while True:
        a = second_moment.to(torch.float64, copy=True)
        a.diagonal().add_(jitter * scale)
        factor, info = torch.linalg.cholesky_ex(a)
        del a
        if info.item() == 0:
            return factor
        # numerically indefinite: raise the ridge until it factors (ridge 0, the reference solve, starts at 1e-12)
        jitter = max(jitter, 1e-12) * 10
        if jitter > 1.0:
            raise SolverError("the second-moment matrix is not positive semi-definite")


def solve_key_value(
    keys: Float[Tensor, "n d_mlp"] | Float[Tensor, "n c d_mlp"],
    residuals: Float[Tensor, "n d_model"],
    second_moment: Float[Tensor, "d_mlp d_mlp"] | None = None,
    cov_weight: float = 0.0,
    ridge: float = 1e-4,
    cholesky: Tensor | None = None,
    min_realised: float = 0.0,
) -> Float[Tensor, "d_mlp d_model"]:
    """Δ = C⁻¹Kᵀ (K C⁻¹ Kᵀ + λI)⁻¹ R  (= argmin ‖KΔ − R‖² + λ tr(ΔᵀCΔ)); C = I when not given.

    Computed in float64 and returned in `residuals`' dtype. `cholesky` may pass a precomputed
    `regularised_cholesky(second_moment, ridge)`. Keys [n, c, d_mlp]: one row per context (module docstring).
    `min_realised` lowers λ for the key rows it would hold back most (`write_map`).
    """
    if keys.ndim not in (2, 3) or residuals.ndim != 2 or keys.shape[0] != residuals.shape[0]:
        raise SolverError(f"keys {tuple(keys.shape)} and residuals {tuple(residuals.shape)} do not pair up")
    if not torch.isfinite(residuals).all():
        raise SolverError("residuals contain NaN/inf")
    mapping = write_map(keys, second_moment, cov_weight, ridge, cholesky, min_realised)
    return (mapping @ residuals.to(device=keys.device, dtype=torch.float64)).to(residuals.dtype)


def write_map(
    keys: Float[Tensor, "n d_mlp"] | Float[Tensor, "n c d_mlp"],
    second_moment: Float[Tensor, "d_mlp d_mlp"] | None = None,
    cov_weight: float = 0.0,
    ridge: float = 1e-4,
    cholesky: Tensor | None = None,
    min_realised: float = 0.0,
) -> Float[Tensor, "d_mlp n"]:
    """U = C⁻¹Kᵀ (K C⁻¹ Kᵀ + Λ)⁻¹ (float64), so that the solver's update is Δ = U R; Λ = λI by default.

    A key k' then has its output moved by k'Δ = (k'U) R: the write is linear in the residuals R, with
    weights k'U that are ≈ e_i at edited key i (exactly at λ = 0) and small for keys unlike the edited
    ones. `targets.compute_targets(write_map=U)` uses this to optimise R through the write itself.
    Keys [n, c, d_mlp] give every context its own row, weighted 1/c (module docstring); U is still [d_mlp, n].

    `min_realised` = f ∈ [0, 1): a lone key k realises q/(q + λ) of its residual, q = kᵀC⁻¹k, so a key typical
    of the corpus (small q) is held back most (SmolLM2: "China" realised 0.11 of its residual; README). A key row
    below f gets its own λ_j = q_j(1 − f)/f, which realises f; Λ = diag(λ_j). Per row, not per request: a request's
    context rows differ (the bare prompt's subject key is unlike the prefixed ones), and the bare one is what is
    asked. This is the same least squares with row j weighted λ/λ_j:  argmin Σ_j (λ/λ_j)‖k̃_jΔ − r̃_j‖² +
    λ tr(ΔᵀCΔ)  (k̃, r̃ the stacked rows).  f = 0 is the plain solve.
    """
    if not 0 <= min_realised < 1:
        raise SolverError(f"min_realised must be in [0, 1), got {min_realised}")
    if keys.ndim == 3:
        n, c, d = keys.shape
        k = keys.reshape(n * c, d).to(torch.float64) / c**0.5
    elif keys.ndim == 2:
        k = keys.to(torch.float64)
        n, c, d = keys.shape[0], 1, keys.shape[1]
    else:
        raise SolverError(f"keys must be [n, d_mlp] or [n, contexts, d_mlp], got {tuple(keys.shape)}")
    if not cov_weight >= 0:  # also NaN, which would otherwise solve to a silent no-op
        raise SolverError(f"cov_weight (λ) must be a number >= 0, got {cov_weight}")
    if not torch.isfinite(k).all():
        raise SolverError("keys contain NaN/inf")
    if cholesky is None and second_moment is not None:
        if second_moment.shape != (d, d):
            raise SolverError(f"second moment {tuple(second_moment.shape)} does not match keys of width {d}")
        cholesky = regularised_cholesky(second_moment.to(keys.device), ridge)
    if cholesky is None:
        c_inv_kt = k.T.clone()  # C = I
    else:
        c_inv_kt = torch.cholesky_solve(k.T.contiguous(), cholesky.to(keys.device))  # C⁻¹Kᵀ [d, rows]
    lam = torch.full((k.shape[0],), float(cov_weight), dtype=torch.float64, device=k.device)
    if min_realised > 0:
        q = (k * c_inv_kt.T).sum(-1)  # k̃ᵀC⁻¹k̃ per row
        lam = torch.minimum(lam, q * (1 - min_realised) / min_realised)
    gram = k @ c_inv_kt + torch.diag(lam)  # K C⁻¹ Kᵀ + Λ
    inverse, info = torch.linalg.inv_ex(gram)  # (K C⁻¹ Kᵀ + Λ)⁻¹  [rows, rows]
    if info.item() != 0 or not torch.isfinite(inverse).all():
        # λ = 0 with linearly dependent keys (e.g. one subject edited twice): least-norm solution
        inverse = torch.linalg.pinv(gram, hermitian=True)
    rows = c_inv_kt @ inverse
    # Ũ E/√c: each request's c columns summed (c = 1: U itself)
    return rows.reshape(d, n, c).sum(-1) / c**0.5


def null_space_projection(second_moment: Float[Tensor, "d d"], threshold: float) -> Float[Tensor, "d d"]:
    """P = Û Ûᵀ (float64), Û the eigenvectors of C = E[kkᵀ] whose eigenvalues are below `threshold`.

    AlphaEdit (Fang et al., ICLR 2025, eq. 10–11): the keys of knowledge to preserve, K₀, span C's large-
    eigenvalue directions, so K₀ᵀ P ≈ 0 and an update ΔP leaves every preserved key's output unchanged. The
    threshold is absolute, as the reference's `nullspace_threshold` (2e-2 on GPT-J's Wikipedia statistics).
    """
    c = second_moment.to(torch.float64)
    c = (c + c.T) / 2
    eigenvalues, vectors = torch.linalg.eigh(c)
    small = vectors[:, eigenvalues < threshold]
    return small @ small.T


def solve_null_space(
    keys: Float[Tensor, "n d_mlp"] | Float[Tensor, "n c d_mlp"],
    residuals: Float[Tensor, "n d_model"],
    projection: Float[Tensor, "d_mlp d_mlp"],
    preserved_gram: Float[Tensor, "d_mlp d_mlp"] | None = None,
    l2: float = 1.0,
) -> Float[Tensor, "d_mlp d_model"]:
    """AlphaEdit's update in TL orientation: Δ = (P (KᵀK + K_pᵀK_p) + αI)⁻¹ P Kᵀ R.

    The paper writes it for W = W_outᵀ ∈ R^{d_model × d_mlp} with keys as columns, ΔW = R Kᵀ P (K_p K_pᵀ P +
    K Kᵀ P + αI)⁻¹; transposed (P and the Gram matrices are symmetric) this is the form above, with our keys as
    rows. `preserved_gram` = K_pᵀK_p accumulates the keys of earlier edits (kept by `AlphaEditMemory`). Since
    (PM + αI)Δ = PKᵀR gives Δ = P(KᵀR − MΔ)/α, the update lies in P's range: preserved keys k₀ (P k₀ = 0) keep
    their outputs exactly. Keys [n, c, d_mlp]: every context is its own row, with its request's residual.
    """
    if keys.ndim == 3:
        n, c, d = keys.shape
        residuals = residuals.repeat_interleave(c, dim=0)
        keys = keys.reshape(n * c, d)
    if keys.ndim != 2 or residuals.ndim != 2 or keys.shape[0] != residuals.shape[0]:
        raise SolverError(f"keys {tuple(keys.shape)} and residuals {tuple(residuals.shape)} do not pair up")
    if not torch.isfinite(keys).all() or not torch.isfinite(residuals).all():
        raise SolverError("keys or residuals contain NaN/inf")
    if not l2 > 0:
        raise SolverError(f"the AlphaEdit regulariser l2 must be > 0, got {l2}")
    k = keys.to(torch.float64)
    p = projection.to(device=k.device, dtype=torch.float64)
    gram = k.T @ k
    if preserved_gram is not None:
        gram = gram + preserved_gram.to(device=k.device, dtype=torch.float64)
    lhs = p @ gram + l2 * torch.eye(k.shape[1], dtype=torch.float64, device=k.device)
    rhs = p @ k.T @ residuals.to(device=k.device, dtype=torch.float64)
    return torch.linalg.solve(lhs, rhs).to(residuals.dtype)
