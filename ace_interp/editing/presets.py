"""A model's hyper-parameters: the named preset for its shape, placed where its own facts can be written.

    >>> from ace_interp.editing import default_hparams
    >>> hp = default_hparams("pmet", bridge)                       # the tuned preset for this model
    >>> hp = default_hparams("pmet", bridge, preset="reference")   # the paper code's released configuration

`hparams.py` reads the presets (data files) for a model *shape*; this module adds what needs the model itself:
the size classes that set `calibrate_fact_sites` (the tuned preset's ≤ 6-layer class, on models that carry a
synthetic world) move every written layer onto the sites `calibrate.cached_fact_sites` measured with trial edits
on the model's own facts. It stands above the editors because the calibration edits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from transformer_lens.model_bridge import TransformerBridge

from ace_interp.editing.alphaedit import AlphaEditHParams
from ace_interp.editing.calibrate import FactSiteCalibration, cached_fact_sites
from ace_interp.editing.covariance import world_corpus_path
from ace_interp.editing.hparams import (
    DEFAULT_PRESET,
    METHODS,
    ACEHParams,
    HParams,
    MEMITHParams,
    PMETHParams,
    ROMEHParams,
    hparams_from_size_classes,
    load_preset,
    override_hparams,
    parse_overrides,
    reference_hparams,
    size_class,
)
from ace_interp.model.architecture import model_spec


def default_hparams(method: str, bridge: TransformerBridge, preset: str | None = None, **overrides) -> HParams:
    """`method`'s hyper-parameters for this model under `preset` (default `DEFAULT_PRESET`): overrides replace
    fields, dotted names reach nested ones (`default_hparams("ace", bridge, **{"target.v_lr": 0.1})`,
    `override_hparams`).

        >>> default_hparams("memit", bridge, preset="reference").target.stop_on   # doctest: +SKIP
        'loss'
    """
    if method not in METHODS:
        raise ValueError(f"unknown editing method {method!r}; expected one of {METHODS}")
    preset = DEFAULT_PRESET if preset is None else preset
    doc = load_preset(method, preset)
    if preset == "reference":
        hp = reference_hparams(method, bridge)
    elif "size_classes" in doc:
        spec, world = model_spec(bridge), world_corpus_path(bridge) is not None
        hp = hparams_from_size_classes(method, doc, spec, world)
        if world and size_class(doc, spec).get("calibrate_fact_sites") and method != "ft":
            # one calibration per model and preset: trial writes with the preset's own ROME settings
            probe = hparams_from_size_classes("rome", load_preset("rome", preset), spec, world)
            hp = with_fact_sites(hp, cached_fact_sites(bridge, probe))
    else:
        raise ValueError(f"preset {preset!r} of {method} has neither a released configuration nor size_classes")
    return override_hparams(hp, **overrides)


def with_fact_sites(hp: HParams, sites: FactSiteCalibration) -> HParams:
    """`hp` written where the calibration says the model's facts can be written: its fact token, and each written
    layer group without unusable layers (ROME's layer, MEMIT / PMET's layers and ACE's value group moved to the
    nearest usable layer if none is left; ACE's query group keeps its usable layers below the value group at the
    subject's token, and is dropped at the prompt's last token)."""
    hp = replace(hp, target=replace(hp.target, fact_token=sites.fact_token))
    if isinstance(hp, ROMEHParams):
        return replace(hp, layer=sites.layers([hp.layer])[0])
    if isinstance(hp, (MEMITHParams, PMETHParams)):
        return replace(hp, layers=sites.layers(hp.layers))
    if isinstance(hp, ACEHParams):
        value = sites.layers(hp.value_layers)
        # ACE's query write keys on the subject's token, where the query neurons of the next hop are read; at the
        # prompt's last token it is a second write on the keys the value write edits one layer up, the spread that
        # cost MEMIT / PMET their specificity there (qwen3-w15: ACE kept 86% of facts with it, 95% without;
        # docs/findings/2026-12-07-fact-token-calibration.md)
        query = () if sites.fact_token == "last" else tuple(
            l for l in hp.query_layers if l in sites.usable_layers and l < min(value))
        return replace(hp, value_layers=value, query_layers=query)
    return hp


def tuned_hparams(method: str, bridge: TransformerBridge) -> HParams:
    """The tuned preset (`presets/<method>/tuned.json`) for this model: `default_hparams(method, bridge, "tuned")`."""
    return default_hparams(method, bridge, "tuned")


def implicit_subject_layers(bridge: TransformerBridge) -> tuple[int, ...]:
    """Where the implicit-subject write goes when one is asked for (`ACEHParams.implicit_layers`; off by default).

    Models with ≤ 6 layers: layer n − 2, the deepest whose write the last attention layer still carries to the
    final position. On the toys it made the most later-hop questions follow per point of neighbourhood lost
    (layer 4: 42% / 38% follow, neighbourhood 81% / 92%; layers 1–3 and pairs were worse; docs/ace.md, "The
    implicit subject"). Larger models: ACE's value group (SmolLM2 18–20: 39% of later-hop cases follow against
    13% for ACE's default, specificity 89 → 70%; layers 21–23: 19%, 76%). Only these two settings were measured.
    """
    n = model_spec(bridge).n_layers
    if n <= 6:
        return (max(0, n - 2),)
    return tuple(default_hparams("ace", bridge).value_layers)


def overridden_hparams(
    bridge: TransformerBridge, assignments: Mapping[str, Sequence[str]], preset: str | None = None
) -> dict[str, HParams]:
    """{method: `default_hparams(method, bridge, preset)` with its command-line `FIELD=VALUE` overrides} for each
    method given at least one (`{"ace": ["implicit_layers=(4,)"], "pmet": []}` → ACE only), or for every method
    given when `preset` is named."""
    return {m: default_hparams(m, bridge, preset, **parse_overrides(a)) for m, a in assignments.items()
            if a or preset is not None}


def alphaedit_hparams(bridge: TransformerBridge, **overrides) -> AlphaEditHParams:
    """AlphaEdit's defaults for this model: MEMIT's (`default_hparams("memit", bridge)`) plus the reference's
    threshold 2e-2 and α = 10.

        hp = alphaedit_hparams(model, nullspace_threshold=1e-3)
    """
    memit = default_hparams("memit", bridge)
    # the reference optimises z at the subject's last token only (no through-the-write target)
    target = replace(memit.target, through_write=False)
    return replace(AlphaEditHParams(tuple(memit.layers), target, memit.covariance), **overrides)
