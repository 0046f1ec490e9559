"""AlphaEdit (Fang et al., ICLR 2025): MEMIT's spread of a residual target, solved in the null space of the
knowledge to preserve.

    z_i = h^{L}_i + δ_i                              (targets.compute_targets, site "resid", L = max(layers))
    for the j-th of the layers l (ascending):
        K^l = keys at l, R = (z − h^{L}(current)) / (layers left)              (as MEMIT, memit.spread_write)
        Δ^l = (P^l (K^lᵀK^l + K_pᵀK_p) + αI)⁻¹ P^l K^lᵀ R                      (solver.solve_null_space)

P^l = Û Ûᵀ projects onto the eigenvectors of the layer's key statistics C^l = E[kkᵀ] (of the model as loaded)
whose eigenvalues fall below `nullspace_threshold` (solver.null_space_projection): the corpus keys barely reach
that subspace, so an update inside it leaves their outputs alone. K_p are the keys of the earlier edits of a
sequence, read on the model after each edit (the reference's `cache_c`); `AlphaEditMemory` keeps them, and
drops an edit's keys when that edit is undone. Without a memory each call starts from no earlier edits.

    memory = AlphaEditMemory()
    for batch in batches:
        edit(model, batch, method="alphaedit", memory=memory)

The reference is jianghoucheng/AlphaEdit (AlphaEdit/AlphaEdit_main.py, hparams/AlphaEdit/*.json:
nullspace_threshold 2e-2, L2 10, MEMIT's layers and target settings otherwise).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from ace_interp.editing.hparams import CovarianceHParams, TargetHParams
from ace_interp.editing.keys import compute_keys
from ace_interp.editing.memit import MethodResult, SpreadStep, load_second_moments, spread_divisors, spread_write
from ace_interp.editing.requests import EditRequest
from ace_interp.editing.solver import null_space_projection, solve_null_space
from ace_interp.editing.targets import compute_targets
from ace_interp.editing.timing import stage
from ace_interp.model.weights import WeightEdit


@dataclass
class AlphaEditHParams:
    """MEMIT's layers, target and statistics, plus the null-space threshold and the regulariser α ("L2")."""

    layers: tuple[int, ...]
    target: TargetHParams = field(default_factory=TargetHParams)
    covariance: CovarianceHParams = field(default_factory=CovarianceHParams)
    nullspace_threshold: float = 2e-2  # absolute eigenvalue threshold (reference); see `relative_threshold`
    # True: the threshold is a fraction of C's mean eigenvalue (for models whose activations are scaled unlike
    # GPT-J's, where the absolute 2e-2 may select all or none of the directions)
    relative_threshold: bool = False
    l2: float = 10.0


@dataclass
class AlphaEditMemory:
    """The null-space projections per layer and the keys of earlier edits in a sequence (K_p).

    An edit's keys count only while its write is applied (`WeightEdit.undone` is False), so undoing an edit
    takes its keys out of K_p too.
    """

    projections: dict[tuple[int, float, bool], Tensor] = field(default_factory=dict)
    edits: list[tuple[WeightEdit, dict[int, Tensor]]] = field(default_factory=list)

    def projection(self, layer: int, second_moment: Float[Tensor, "d d"], hp: AlphaEditHParams) -> Tensor:
        key = (layer, hp.nullspace_threshold, hp.relative_threshold)
        if key not in self.projections:
            threshold = hp.nullspace_threshold
            if hp.relative_threshold:
                threshold *= float(second_moment.diagonal().mean())  # trace/d = mean eigenvalue
            self.projections[key] = null_space_projection(second_moment, threshold)
        return self.projections[key]

    def preserved_gram(self, layer: int) -> Float[Tensor, "d d"] | None:
        """K_pᵀK_p at `layer` over the keys of the earlier edits still applied (None when there are none)."""
        keys = [k[layer] for e, k in self.edits if not e.undone and layer in k]
        if not keys:
            return None
        stacked = torch.cat(keys).to(torch.float64)
        return stacked.T @ stacked

    def remember(self, weight_edit: WeightEdit, keys: dict[int, Float[Tensor, "n d_mlp"]]) -> None:
        self.edits = [(e, k) for e, k in self.edits if not e.undone]
        self.edits.append((weight_edit, {l: k.detach().to("cpu", torch.float32) for l, k in keys.items()}))


def alphaedit_updates(
    bridge: TransformerBridge,
    requests: Sequence[EditRequest],
    hp: AlphaEditHParams,
    contexts: Sequence[str],
    memory: AlphaEditMemory,
) -> MethodResult:
    layers = sorted(hp.layers)
    z_layer = layers[-1]
    target = compute_targets(bridge, requests, z_layer, hp.target, contexts, sites=("resid",))
    z = target.targets["resid"]
    moments = load_second_moments(bridge, layers, hp.covariance)
    with stage("solve"):
        projections = {l: memory.projection(l, moments[l], hp) for l in layers}
        grams = {l: memory.preserved_gram(l) for l in layers}

    def solve(layer: int, keys: Tensor, residual: Tensor) -> Tensor:
        return solve_null_space(keys, residual, projections[layer], grams[layer], hp.l2)

    steps = [SpreadStep(l, z, z_layer, "resid", d) for l, d in zip(layers, spread_divisors(len(layers), "linear"))]
    result = spread_write(bridge, requests, steps, contexts, hp.covariance, solve=solve, fact_token=hp.target.fact_token)
    result.info.update(target_prob=target.target_prob, target_losses=target.losses, z_layer=z_layer,
                       null_space_dims={l: int(round(float(projections[l].trace()))) for l in layers})
    return result


def remember_edit(
    bridge: TransformerBridge,
    requests: Sequence[EditRequest],
    hp: AlphaEditHParams,
    contexts: Sequence[str],
    memory: AlphaEditMemory,
    weight_edit: WeightEdit,
) -> None:
    """Add the edited requests' keys, read on the model with the edit applied, to the memory's K_p."""
    with stage("keys"):
        keys = compute_keys(bridge, requests, sorted(hp.layers), contexts, per_context=hp.covariance.per_context_keys,
                            fact_token=hp.target.fact_token)
    memory.remember(weight_edit, {l: k.reshape(-1, k.shape[-1]) for l, k in keys.items()})
