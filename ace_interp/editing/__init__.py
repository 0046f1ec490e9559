"""Knowledge editing: FT, ROME, MEMIT, PMET and ACE over one shared key→value solver.

Every editor splits into *compute keys* (`keys.py`), *compute target values* (`targets.py`) and *solve
and write* (`solver.py` + the transactional `ace_interp.model.apply_weight_updates`). The entry point:

    applied = edit(bridge, [EditRequest("The capital of {} is", "France", "Rome", "Paris")], method="pmet")
    ...
    applied.undo()          # restores the weights bit for bit

`preset="reference"` runs the released algorithm and configuration of the method's paper code, `"tuned"` (the
default) this project's defaults (`hparams.py`, docs/presets.md); `applied.preset` records which.

A batch is validated as a whole before anything is computed; one bad request raises `EditRequestError`
and nothing is written. Every write is then verified (`verify.py`): non-finite logits on an edit prompt undo
it and raise; a request whose target was not reached raises, warns (default) or is kept as `on_failure`
says, and `applied.verification` records each request's check. A `SideEffectMonitor` passed as `monitor`
checks facts the model knew and a perplexity sample after the write (`monitor.py`). Sequences of edits are consecutive `edit` calls (undo newest first, or
`undo_edits`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass

from transformer_lens.model_bridge import TransformerBridge

from ace_interp.editing.ace import ace_updates
from ace_interp.editing.alphaedit import (
    AlphaEditHParams,
    AlphaEditMemory,
    alphaedit_updates,
    remember_edit,
)
from ace_interp.editing.covariance import (
    TextCorpus,
    corpus_from_option,
    default_corpus,
    key_dim_budget,
    model_sampled_corpus,
    second_moments,
)
from ace_interp.editing.ft import ft_updates
from ace_interp.editing.hparams import (
    METHODS,
    ACEHParams,
    CovarianceHParams,
    FTHParams,
    MEMITHParams,
    PMETHParams,
    ROMEHParams,
    TargetHParams,
    DEFAULT_PRESET,
    hparams_from_reference,
    load_preset,
    preset_names,
    reference_fields,
    override_hparams,
    parse_overrides,
)
from ace_interp.editing.presets import (
    alphaedit_hparams,
    default_hparams,
    implicit_subject_layers,
    overridden_hparams,
    tuned_hparams,
)
from ace_interp.editing.keys import compute_keys, context_templates, sampled_contexts
from ace_interp.editing.memit import MethodResult, memit_updates
from ace_interp.editing.monitor import MonitorReading, ProbeSet, SideEffectMonitor, default_probes
from ace_interp.editing.pmet import pmet_updates
from ace_interp.editing.requests import (
    EditRequest,
    EditRequestError,
    HopPrompt,
    ImplicitSubject,
    as_requests,
    validate_requests,
)
from ace_interp.editing.rome import rome_updates
from ace_interp.editing.solver import solve_key_value
from ace_interp.editing.timing import stage, stage_timer
from ace_interp.editing.verify import (
    CRITERIA,
    ON_FAILURE,
    EditVerification,
    EditVerificationError,
    EditWarning,
    RequestCheck,
    act_on_verification,
    check_requests,
)
from ace_interp.editing.targets import compute_targets, compute_z, compute_z_pmet
from ace_interp.model.weights import WeightEdit, apply_weight_updates

log = logging.getLogger(__name__)

_HPARAM_TYPES = {"ft": FTHParams, "rome": ROMEHParams, "memit": MEMITHParams, "pmet": PMETHParams, "ace": ACEHParams,
                 "alphaedit": AlphaEditHParams}
EDIT_METHODS = (*METHODS, "alphaedit")


@dataclass
class AppliedEdit:
    """An edit written into the model: its method, requests, layers, diagnostics and the undoable write."""

    method: str
    requests: list[EditRequest]
    hparams: object
    weight_edit: WeightEdit
    layers: list[int]
    seconds: float
    info: dict = field(default_factory=dict)
    # the preset the hyper-parameters came from ("tuned", "reference"); "custom" when the caller passed hparams
    preset: str = DEFAULT_PRESET
    verification: EditVerification | None = None  # per-request checks after the write (None: verify=None)
    side_effects: MonitorReading | None = None  # the monitor's check after this edit, when one ran

    @property
    def undone(self) -> bool:
        return self.weight_edit.undone

    def undo(self) -> None:
        """Restore the weights this edit changed, bit for bit (edits must be undone newest first)."""
        self.weight_edit.undo()

    def __enter__(self) -> "AppliedEdit":
        return self

    def __exit__(self, *exc) -> None:
        if not self.undone:
            self.undo()


def edit(
    bridge: TransformerBridge,
    requests: EditRequest | Mapping | Sequence[EditRequest | Mapping],
    method: str = "pmet",
    hparams: object | None = None,
    *,
    contexts: Sequence[str] | None = None,
    hop_prompts: Sequence[HopPrompt | ImplicitSubject] = (),
    ranking=None,
    preset: str | None = None,
    verify: str | None = "greedy",
    on_failure: str = "warn",
    memory: AlphaEditMemory | None = None,
    monitor: SideEffectMonitor | None = None,
) -> AppliedEdit:
    """Apply k edit requests at once with `method` ("ft", "rome", "memit", "pmet", "ace", "alphaedit").

        import ace_interp as ai
        model = ai.load_model("toy-gptj")
        request = ai.EditRequest("{} 's country is", "anna kovac", "japan", "france")
        applied = ai.edit(model, [request], method="rome")
        applied.layers, applied.seconds       # the layers written, the wall time
        applied.undo()                        # the weights are back, bit for bit

    Every write is a W_out (or W_in, for FT) update in TL orientation, [d_mlp, d_model] per layer, applied
    all at once or not at all (`model.weights.apply_weight_updates`); a bad request raises
    `EditRequestError` before anything is computed.
    `hparams` defaults to `default_hparams(method, bridge, preset)` (`preset` default "tuned"; "reference" runs the
    paper code's released algorithm, docs/presets.md); passing both is an error. `contexts` overrides the context
    prefixes (default: "" plus the texts `hparams.target` asks to sample from the model). `hop_prompts` and
    `ranking` (an `attribution.layers.LayerRanking`) feed ACE's attribution variant; `ImplicitSubject`s among
    the hop prompts feed its implicit-subject write (`ACEHParams.implicit_layers`).

    `verify` ("greedy" or "prob", None to skip) checks each request's target after the write and `on_failure`
    ("raise", "warn", "keep") says what a miss does (`verify.py`); non-finite logits always undo and raise.
    `memory` carries AlphaEdit's projections and the keys of earlier edits across a sequence (`alphaedit.py`).
    `monitor` re-checks facts the model knew and a perplexity sample after the write, warning on a collapse
    (`monitor.py`; every `monitor.every` edits).
    """
    if method not in EDIT_METHODS:
        raise ValueError(f"unknown editing method {method!r}; expected one of {EDIT_METHODS}")
    if verify is not None and verify not in CRITERIA:
        raise ValueError(f"verify must be one of {CRITERIA} or None, got {verify!r}")
    if on_failure not in ON_FAILURE:
        raise ValueError(f"on_failure must be one of {ON_FAILURE}, got {on_failure!r}")
    requests = validate_requests(bridge, requests)  # the whole batch, before any computation
    if hparams is not None and preset is not None:
        raise ValueError("pass either hparams or preset, not both (override a preset with default_hparams(..., **fields))")
    if hparams is not None:
        hp = hparams
    else:
        hp = alphaedit_hparams(bridge) if method == "alphaedit" else default_hparams(method, bridge, preset)
    preset_used = (preset or DEFAULT_PRESET) if hparams is None else "custom"
    if not isinstance(hp, _HPARAM_TYPES[method]):
        raise TypeError(f"method {method!r} takes {_HPARAM_TYPES[method].__name__}, got {type(hp).__name__}")
    check_hparam_layers(bridge, hp, method)
    start = time.perf_counter()
    with stage_timer() as timings:
        if contexts is None:
            with stage("contexts"):
                contexts = sampled_contexts(bridge, hp.target)
        contexts = list(contexts)
        if method == "ft":
            result = ft_updates(bridge, requests, hp, contexts)
        elif method == "rome":
            result = rome_updates(bridge, requests, hp, contexts)
        elif method == "memit":
            result = memit_updates(bridge, requests, hp, contexts)
        elif method == "pmet":
            result = pmet_updates(bridge, requests, hp, contexts)
        elif method == "alphaedit":
            memory = AlphaEditMemory() if memory is None else memory
            result = alphaedit_updates(bridge, requests, hp, contexts, memory)
        else:
            result = ace_updates(bridge, requests, hp, contexts, hop_prompts, ranking)
        label = f"{method}: " + "; ".join(r.describe() for r in requests)
        with stage("write"):
            weight_edit = apply_weight_updates(bridge, result.updates, label=label[:500])
        verification = side_effects = None
        try:  # anything failing after the write takes the write back with it: all or nothing
            if verify is not None:
                with stage("verify"):
                    verification = check_requests(bridge, requests, verify)
                act_on_verification(verification, on_failure, weight_edit.undo, method)
            if method == "alphaedit":
                remember_edit(bridge, requests, hp, contexts, memory, weight_edit)
            if monitor is not None:
                with stage("monitor"):
                    side_effects = monitor.after_edit(requests)
        except BaseException:
            if not weight_edit.undone:
                weight_edit.undo()
            raise
    seconds = time.perf_counter() - start
    result.info["timings"] = dict(timings)
    log.info("%s edited layers %s in %.2f s (%s)%s", method, result.layers, seconds,
             ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()),
             f"; {verification.summary()}" if verification else "")
    return AppliedEdit(method, requests, hp, weight_edit, result.layers, seconds, result.info, preset_used, verification, side_effects)


def check_hparam_layers(bridge: TransformerBridge, hp: object, label: str = "") -> None:
    """Raise a ValueError naming the field when a hyper-parameter names a layer the model does not have.

        check_hparam_layers(model, override_hparams(default_hparams("rome", model), layer=99), "rome")
        # ValueError: rome.layer = 99, but the model has 6 layers (0..5)

    Layer fields are found by name in `hp` and its nested dataclasses: `layer`, `layers`, `*_layer`, `*_layers`
    (an index or a sequence of indices; `n_*` counts and booleans are not layers). Negative indices are refused
    (a write to "layer -1" is too easy to mistake), and a method's main `layers` list may not be empty.
    """
    n = bridge.cfg.n_layers
    for f in fields(hp):
        value = getattr(hp, f.name)
        name = f"{label}.{f.name}" if label else f"{type(hp).__name__}.{f.name}"
        if is_dataclass(value):
            check_hparam_layers(bridge, value, name)
            continue
        if f.name.startswith("n_") or not (f.name in ("layer", "layers") or f.name.endswith(("_layer", "_layers"))):
            continue
        if isinstance(value, bool) or value is None:
            continue
        layers = list(value) if isinstance(value, (list, tuple)) else [value]
        if not layers and f.name == "layers":
            raise ValueError(f"{name} is empty: the method needs at least one layer to write")
        for layer in layers:
            if not isinstance(layer, int) or isinstance(layer, bool):
                raise ValueError(f"{name} = {value!r}: layers are integer indices")
            if layer < 0:
                raise ValueError(f"{name} = {value!r}, but negative indices are not accepted (layers 0..{n - 1})")
            if layer >= n:
                raise ValueError(f"{name} = {value!r}, but the model has {n} layers (0..{n - 1})")


def edit_sequentially(
    bridge: TransformerBridge,
    batches: Sequence[Sequence[EditRequest | Mapping] | EditRequest | Mapping],
    method: str = "pmet",
    hparams: object | None = None,
    **kwargs,
) -> list[AppliedEdit]:
    """Apply batches one after another (each sees the model the previous ones left). On an error the
    batches already applied are undone and the error re-raised, so the model is unchanged."""
    applied: list[AppliedEdit] = []
    try:
        for batch in batches:
            applied.append(edit(bridge, batch, method, hparams, **kwargs))
    except BaseException:
        undo_edits(applied)
        raise
    return applied


def undo_edits(applied: Sequence[AppliedEdit]) -> None:
    """Undo a list of applied edits, newest first."""
    for a in reversed(list(applied)):
        if not a.undone:
            a.undo()


__all__ = [
    "ACEHParams", "AlphaEditHParams", "AlphaEditMemory", "AppliedEdit", "CovarianceHParams", "DEFAULT_PRESET",
    "EDIT_METHODS", "EditRequest", "EditRequestError", "EditVerification", "EditVerificationError", "EditWarning",
    "FTHParams", "HopPrompt", "MonitorReading", "ProbeSet", "RequestCheck", "SideEffectMonitor", "alphaedit_hparams",
    "check_requests", "default_probes",
    "ImplicitSubject", "MEMITHParams", "METHODS", "MethodResult", "PMETHParams", "ROMEHParams", "TargetHParams", "TextCorpus",
    "as_requests", "check_hparam_layers", "compute_keys", "compute_targets", "compute_z", "compute_z_pmet",
    "context_templates", "corpus_from_option", "default_corpus", "default_hparams", "edit", "edit_sequentially",
    "hparams_from_reference", "implicit_subject_layers", "key_dim_budget", "load_preset", "model_sampled_corpus",
    "overridden_hparams", "override_hparams", "parse_overrides", "preset_names", "reference_fields", "sampled_contexts",
    "second_moments", "solve_key_value", "tuned_hparams", "undo_edits", "validate_requests",
]
