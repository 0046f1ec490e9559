"""Transactional, undoable in-place writes to the wrapped HF model's weights.

Every editor (FT, ROME, MEMIT, PMET, ACE) ends in `apply_weight_updates`: it validates *all* updates
(known layer and component, matching shape, finite values) before touching anything, snapshots the
tensors it will change, writes them, and checks the results are finite; any failure restores every
snapshot, so an edit either fully applies or not at all. The returned `WeightEdit` undoes the write
bit-for-bit (it copies the snapshots back; subtracting the delta would not be exact in floating point).

Edits stack per model: undo them last-first (`undo_all` does that).

    edit = apply_weight_updates(model, {(12, "W_out"): delta})
    ...
    edit.undo()

    with apply_weight_updates(model, {(12, "W_out"): delta}):   # undone when the block exits
        ...
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from ace_interp.model.architecture import (
    FFN_COMPONENTS,
    UnsupportedModelError,
    attention_output_weight,
    check_layer,
    ffn_weight,
    hf_parameters,
)
from ace_interp.model.state import model_state

# An update target: (layer, TL FFN component name, or "W_O" for the attention output projection) in TL
# orientation, or a HF checkpoint parameter name.
WeightKey = tuple[int, str] | str


class WeightWriteError(ValueError):
    """An update was rejected; no weight was changed."""


def edit_stack(bridge: TransformerBridge) -> list["WeightEdit"]:
    """The edits currently applied to this model, oldest first."""
    return model_state(bridge).weight_edits


def resolve_weight(bridge: TransformerBridge, key: WeightKey) -> Tensor:
    """The live tensor (a view of the HF parameter) an update key names."""
    if isinstance(key, str):
        params = hf_parameters(bridge)
        if key not in params:
            raise WeightWriteError(f"unknown parameter {key!r}; HF names look like {next(iter(params))!r}")
        return params[key]
    layer, component = key
    if component not in (*FFN_COMPONENTS, "W_O"):
        raise WeightWriteError(f"unknown FFN component {component!r}; expected one of {FFN_COMPONENTS} (or 'W_O', the attention output projection)")
    try:
        check_layer(bridge, layer)
    except IndexError as e:
        raise WeightWriteError(str(e)) from None
    if component == "W_O":  # the attention output projection, [d_in, d_model] (ACE's release writes it)
        try:
            return attention_output_weight(bridge, layer)
        except UnsupportedModelError as e:
            raise WeightWriteError(str(e)) from None
    target = ffn_weight(bridge, layer, component)
    if target is None:
        raise WeightWriteError(f"layer {layer} has no {component} (the model's FFN has no such bias)")
    return target


@dataclass
class WeightEdit:
    """A write that has been applied; `undo()` restores the previous weights exactly."""

    bridge: TransformerBridge
    keys: list[WeightKey]
    label: str = ""
    _targets: list[Tensor] = field(default_factory=list, repr=False)
    _snapshots: list[Tensor] = field(default_factory=list, repr=False)
    undone: bool = False

    def undo(self) -> None:
        stack = edit_stack(self.bridge)
        if self.undone:
            raise RuntimeError(f"edit {self.label or self.keys} was already undone")
        if not stack or stack[-1] is not self:
            raise RuntimeError(
                f"edit {self.label or self.keys} is not the latest applied edit: undo later edits first "
                "(or call undo_all)"
            )
        _restore(self._targets, self._snapshots)
        stack.pop()
        self.undone = True
        self._snapshots = []

    def __enter__(self) -> "WeightEdit":
        return self

    def __exit__(self, *exc) -> None:
        if not self.undone:
            self.undo()


def _restore(targets: list[Tensor], snapshots: list[Tensor]) -> None:
    with torch.no_grad():
        for target, snapshot in zip(targets, snapshots):
            target.copy_(snapshot)


def apply_weight_updates(
    bridge: TransformerBridge,
    updates: Mapping[WeightKey, Tensor],
    mode: Literal["add", "set"] = "add",
    label: str = "",
) -> WeightEdit:
    """Apply all `updates` in place (`add` a delta or `set` a value) or, on any problem, none of them."""
    if mode not in ("add", "set"):
        raise WeightWriteError(f"mode must be 'add' or 'set', got {mode!r}")
    if not updates:
        raise WeightWriteError("no updates given")
    targets, values = [], []
    for key, value in updates.items():
        target = resolve_weight(bridge, key)
        if not isinstance(value, Tensor):
            raise WeightWriteError(f"update for {key} is a {type(value).__name__}, not a tensor")
        if tuple(value.shape) != tuple(target.shape):
            raise WeightWriteError(
                f"update for {key} has shape {tuple(value.shape)}, the weight has {tuple(target.shape)}"
            )
        if not torch.isfinite(value).all():
            raise WeightWriteError(f"update for {key} contains NaN or inf")
        if any(t.data_ptr() == target.data_ptr() for t in targets):
            raise WeightWriteError(f"{key} is named twice in one update")
        targets.append(target)
        values.append(value.detach().to(device=target.device, dtype=target.dtype))

    snapshots = [t.detach().clone() for t in targets]
    try:
        with torch.no_grad():
            for target, value in zip(targets, values):
                target.add_(value) if mode == "add" else target.copy_(value)
        bad = [k for k, t in zip(updates, targets) if not torch.isfinite(t).all()]
        if bad:
            raise WeightWriteError(f"the update made {bad[0]} non-finite (overflow); nothing was changed")
    except BaseException:
        _restore(targets, snapshots)
        raise
    edit = WeightEdit(bridge, list(updates), label, targets, snapshots)
    edit_stack(bridge).append(edit)
    return edit


def base_weights(bridge: TransformerBridge) -> dict[str, Tensor]:
    """The HF parameters as they were before the edits in the model's undo stack (`edit_stack`): an edited
    parameter is given by the snapshot its oldest live edit took, any other by the live tensor.

        base_weights(model)["transformer.h.0.mlp.fc_out.weight"]   # [d_model, d_mlp], unedited values
    """
    before: dict[int, Tensor] = {}
    for applied in edit_stack(bridge):
        for target, snapshot in zip(applied._targets, applied._snapshots):
            before.setdefault(target.data_ptr(), snapshot)
    out = {}
    for name, p in hf_parameters(bridge).items():
        snapshot = before.get(p.data_ptr())
        if snapshot is None or snapshot.numel() != p.numel():
            out[name] = p
        else:  # a snapshot of a view (TL's W_out is the HF weight transposed) has the view's shape
            out[name] = snapshot if snapshot.shape == p.shape else snapshot.T
    return out


def undo_all(bridge: TransformerBridge) -> int:
    """Undo every applied edit, newest first; returns how many were undone."""
    stack = edit_stack(bridge)
    n = len(stack)
    while stack:
        stack[-1].undo()
    return n
