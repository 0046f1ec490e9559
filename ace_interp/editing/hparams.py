"""Hyper-parameters of every editor: dataclasses, and the named presets that fill them for a model.

Presets live as data files, `ace_interp/editing/presets/<method>/<preset>.json`:

- `reference` — the released configuration of each paper's code, field by field in the release's own names
  (GPT-J-6B for ROME / MEMIT / PMET / ACE, Qwen3-8B for ACE), the repository, commit and path each came from,
  the algorithm settings that make our editors run the release's algorithm (loss, KL position, weight-decay
  exponent, stopping rules, per-request optimisation, key averaging, no ridge), and the rule that scales a
  release to another model's shape (`reference_hparams`; docs/presets.md).
- `tuned` — this project's defaults, fitted on the shipped toys and SmolLM2-135M: per size class (GPT-J-6B,
  Qwen3-8B, ≤ 6 layers, every other model) the fields it sets, layers written as GPT-J indices mapped
  proportionally to the model's depth (`{"span": [3, 8]}`: layer x ↦ round(x·(L−1)/27)), λ per FFN width
  (`{"per_d_mlp": 0.9}`: GPT-J's MEMIT ratio 15,000 / 16,384), and next to each departure from the reference a
  `why` (the measurement and the doc it is in). `hparams_from_size_classes` reads such a file; the one setting
  that depends on a model's training data rather than its shape (toys that carry a synthetic world's corpus edit
  the bare prompt only, `if_world_corpus`) is applied there explicitly. docs/presets.md tabulates where the tuned
  preset departs from the reference.

    >>> hp = reference_hparams("pmet", bridge)   # doctest: +SKIP

`editing.presets.default_hparams(method, bridge, preset=...)` picks one for a model (default `DEFAULT_PRESET`,
"tuned"), with the calibration some size classes ask for; overrides (`override_hparams`, `--pmet FIELD=VALUE` on the
command line) apply on top of either. Another file with `size_classes` under `presets/<method>/` is another preset,
read the same way.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Literal, TypeVar

from transformer_lens.model_bridge import TransformerBridge

from ace_interp.editing.covariance import TextCorpus
from ace_interp.editing.targets import TargetHParams
from ace_interp.model.architecture import ModelSpec, model_spec

METHODS = ("ft", "rome", "memit", "pmet", "ace")


@dataclass
class CovarianceHParams:
    """Key statistics C = E[kkᵀ]: which corpus, how many token samples, and how strongly they weigh."""

    corpus: TextCorpus | None = None  # None: text sampled from the model (`model_sampled_corpus`)
    n_tokens: int = 10_000
    cov_weight: float = 15_000.0  # λ in ‖KΔ − R‖² + λ tr(ΔᵀCΔ)  (MEMIT's mom2_update_weight)
    ridge: float = 1e-4  # C + ε·mean(diag C)·I
    # how a request's keys over the context prefixes enter the solve: "mean" — one key averaged uniformly over the
    # contexts (ROME's compute_u); "grouped" — averaged within the bare prompt's group and the prefixes' group, then
    # across the two (MEMIT / PMET compute_ks: the bare prompt weighs 1/2); "each" — one row per context, each
    # weighted 1/c (`solver` docstring; docs/ace.md, "Keys per context")
    context_keys: Literal["mean", "grouped", "each"] = "mean"
    # the least share of its residual every key row realises (`solver.write_map`: a smaller λ for keys typical of
    # the corpus); 0 is the reference solve (and the default on small models and the paper's two); 0.5 on
    # the adapted models (`default_hparams`, README: measured on SmolLM2).
    min_realised: float = 0.0
    seq_len: int = 128
    progress: bool = True

    @property
    def per_context_keys(self) -> bool:
        """Whether the solve takes one key row per context (`context_keys == "each"`)."""
        if self.context_keys not in ("mean", "grouped", "each"):
            raise ValueError(f"unknown context_keys {self.context_keys!r}; expected 'mean', 'grouped' or 'each'")
        return self.context_keys == "each"

    def key_weights(self, contexts: Sequence[str]) -> list[float] | None:
        """Weights of the contexts in a request's averaged key: None for a uniform mean ("mean") or one row per
        context ("each"); "grouped" gives the bare prompt "" 1/2 and the prefixes 1/(2·(c−1)) between them (MEMIT's
        `compute_ks`: mean within each context-template group, then across groups)."""
        if self.per_context_keys or self.context_keys == "mean" or "" not in contexts or len(contexts) == 1:
            return None
        rest = 0.5 / (len(contexts) - 1)
        return [0.5 if c == "" else rest for c in contexts]


@dataclass
class FTHParams:
    """FT-L (ROME paper baseline): Adam on one layer's W_out, each entry kept within ±norm_constraint."""

    layer: int = 21
    lr: float = 5e-4
    num_steps: int = 25
    norm_constraint: float = 5e-5
    weight_decay: float = 0.0
    target: TargetHParams = field(default_factory=lambda: TargetHParams(n_context=0))


@dataclass
class ROMEHParams:
    """ROME: a rank-one write at `layer`; z is an MLP-output target at that layer (ROME `compute_v`)."""

    layer: int = 5
    target: TargetHParams = field(
        default_factory=lambda: TargetHParams(v_num_grad_steps=20, clamp_norm_factor=4.0, v_weight_decay=0.5)
    )
    covariance: CovarianceHParams = field(default_factory=CovarianceHParams)
    # ROME inserts the fact exactly: λ = 0 in the shared solver (minimum-C-norm interpolation).
    exact: bool = True
    # "shared": the shared solver on the averaged key; "rome": ROME's own formula (rome_main.execute_rome),
    # Δ = C⁻¹k̄ (v* − F(k_bare))ᵀ / (k_bareᵀ C⁻¹ k̄) with k̄ the averaged key, k_bare the bare prompt's, and the
    # requests of a batch written one after another (each on the model the previous ones left)
    solve: Literal["shared", "rome"] = "shared"


@dataclass
class MEMITHParams:
    """MEMIT: z at the residual after the last layer; residual spread 1/(layers left) over `layers`."""

    layers: tuple[int, ...] = (3, 4, 5, 6, 7, 8)
    target: TargetHParams = field(default_factory=TargetHParams)
    covariance: CovarianceHParams = field(default_factory=CovarianceHParams)


@dataclass
class PMETHParams:
    """PMET: attention and FFN output deltas optimised jointly at the last layer, only the FFN part
    written, its residual spread over `layers` by 1/sqrt(layers left)."""

    layers: tuple[int, ...] = (3, 4, 5, 6, 7, 8)
    target: TargetHParams = field(
        default_factory=lambda: TargetHParams(v_num_grad_steps=30, v_lr=0.2, decay_power=1, clamp_norm_factor=0.75)
    )
    covariance: CovarianceHParams = field(default_factory=lambda: CovarianceHParams(cov_weight=20_000.0))
    joint_attention: bool = True  # PMET's attention delta beside the FFN one (False: FFN delta only)
    # What "the residual left" is measured on while spreading (docs/ace.md, "Spread accounting"):
    # "ffn" — the reference: z − F^L(current), the last layer's FFN output, which earlier layers' writes
    #         barely move, so each layer adds its share of δ on top of the others' (≈ Σ_j 1/sqrt(n−j) · δ);
    # "residual" — z_h − h^L(current) with z_h = h^L + δ_ffn: what earlier layers wrote is subtracted, as in MEMIT.
    spread_accounting: Literal["ffn", "residual"] = "ffn"


@dataclass
class ACEHParams:
    """ACE: value group (the new fact, PMET backend) and query group (the complementary write).

    variant "ace-paper": the authors' release — one z (PMET joint optimisation) at the last value layer,
    both groups write towards it, each spreading by 1/sqrt(layers left in its group).
    variant "attribution": groups from `ace_interp.attribution.layers.rank_layers` (or given), value group
    as above; the query group gets its own target at its last layer, optimised *after* the value write on
    the single-hop prompt plus the edit's multi-hop prompts (see docs/ace.md).
    """

    variant: Literal["ace-paper", "attribution"] = "ace-paper"
    query_layers: tuple[int, ...] = (3, 4, 5, 6, 7, 8)
    value_layers: tuple[int, ...] = (23, 24, 25)
    rank_layers: bool = True  # attribution variant: rank layers (False: use query_layers/value_layers as given)
    n_value_layers: int = 3  # attribution variant: how many top-ranked layers per group
    n_query_layers: int = 3
    query_target: Literal["shared", "own"] | None = None  # None: "shared" for ace-paper, "own" for attribution
    query_weight: float = 1.0  # scales the query group's residual (0 disables the query write)
    # write the query group first, then optimise the value group's target on the model with that write in
    # place. Shared z: the query group writes towards the release's z, optimised once on the unedited model
    # (False: the release's order, whose one optimisation never sees the query write). Own query target: that
    # target is optimised first, on the unedited model (False: after the value write)
    value_target_after_query: bool = False
    target: TargetHParams = field(
        default_factory=lambda: TargetHParams(v_num_grad_steps=30, v_lr=0.2, decay_power=1, clamp_norm_factor=0.75)
    )
    covariance: CovarianceHParams = field(default_factory=lambda: CovarianceHParams(cov_weight=20_000.0))
    joint_attention: bool = True  # the PMET backend's attention delta (False: the FFN delta carries it all)
    # as PMETHParams.spread_accounting, per group towards that group's target at its z layer
    spread_accounting: Literal["ffn", "residual"] = "ffn"
    # ACE's release also writes the attention output projection (GPT-J attn.out_proj, Qwen3 self_attn.o_proj) of
    # every layer of both groups, towards the joint optimisation's attention target: its GPT-J and Qwen3-8B hparams
    # name it as `rewrite_module_tmp` and ace_main.py's execute_ace writes [rewrite_module_tmp] +
    # rewrite_module_tmps (yjywdzh/ACE @c1a425b, ace/edit/ace/ace_main.py; its GPT-NeoX-20B file names the MLP
    # only). Per layer: W_O first, then W_out, both keys read before either write; W_O's keys are the heads'
    # concatenated outputs, with their own statistics C over the same corpus and the same λ. Needs the
    # release's layout (variant "ace-paper", joint_attention, "ffn" accounting); off by default (docs/ace.md).
    write_attention: bool = False
    # The implicit-subject write (off when empty): layers written so that noun phrases reaching the edited
    # subject through another entity ("dmitri costa 's birthplace" for marrakesh; `ace.ImplicitSubject`)
    # retrieve the new fact. One key per edit, averaged over its phrases; PMET's target at the last of these
    # layers over the phrase prompts; written before the query and value groups (docs/ace.md, "The implicit
    # subject").
    implicit_layers: tuple[int, ...] = ()
    implicit_weight: float = 1.0  # scales the implicit-subject write's residual


HParams = FTHParams | ROMEHParams | MEMITHParams | PMETHParams | ACEHParams


# ----------------------------------------------------------------------------- per-architecture defaults


HPARAMS_CLASSES: dict[str, type] = {"ft": FTHParams, "rome": ROMEHParams, "memit": MEMITHParams,
                                    "pmet": PMETHParams, "ace": ACEHParams}


def matches(when: Mapping[str, object], spec: ModelSpec) -> bool:
    """Whether a model shape meets a size-class condition: `architecture`, `n_layers` (equal), `max_layers`,
    `min_layers`, `min_d_mlp`; an empty condition matches every model."""
    tests = {
        "architecture": lambda v: spec.architecture == v,
        "n_layers": lambda v: spec.n_layers == v,
        "max_layers": lambda v: spec.n_layers <= v,
        "min_layers": lambda v: spec.n_layers >= v,
        "min_d_mlp": lambda v: spec.d_mlp >= v,
    }
    unknown = set(when) - set(tests)
    if unknown:
        raise ValueError(f"unknown size-class condition(s) {sorted(unknown)}; known: {sorted(tests)}")
    return all(tests[k](v) for k, v in when.items())


def size_class(doc: Mapping, spec: ModelSpec) -> dict:
    """The first of the preset's `size_classes` whose `when` the model meets."""
    for entry in doc["size_classes"]:
        if matches(entry.get("when", {}), spec):
            return entry
    raise ValueError(f"no size class of preset {doc.get('preset')!r} ({doc.get('method')}) matches {spec}")


def mapped_layer(x: int, n_layers: int, n_from: int = 28) -> int:
    """Layer x of an `n_from`-layer model (GPT-J's 28 by default) mapped proportionally: round(x·(L−1)/(n_from−1))."""
    return round(x * (n_layers - 1) / (n_from - 1))


def preset_value(value: object, spec: ModelSpec) -> object:
    """One field value of a size-class preset for this model shape (the expression forms are listed in each
    tuned.json's `summary`): literals stay, lists become tuples, and layer maps / spans, λ per d_mlp and
    `cases` are evaluated."""
    n = spec.n_layers
    if isinstance(value, list):
        return tuple(preset_value(v, spec) for v in value)
    if not isinstance(value, dict):
        return value
    if "value" in value and "when" not in value:
        return preset_value(value["value"], spec)
    if "map" in value:
        layer = mapped_layer(value["map"], n, value.get("from", 28))
        lo, hi = value.get("clip", (None, None))
        layer = layer if lo is None else max(lo, layer)
        return layer if hi is None else min(n - 1 if hi == "last" else hi, layer)
    if "span" in value:
        a, b = (mapped_layer(x, n, value.get("from", 28)) for x in value["span"])
        return tuple(range(a, max(a, b) + 1))
    if "span_ending_at" in value:
        end = preset_value(value["span_ending_at"], spec)
        return tuple(range(max(0, end - value["length"] + 1), end + 1))
    if "below" in value:
        return tuple(range(preset_value(value["below"], spec)))
    if "per_d_mlp" in value:
        p, q = value.get("times", (1, 1))
        return value["per_d_mlp"] * spec.d_mlp * p / q
    if "cases" in value:
        for case in value["cases"]:
            if matches(case.get("when", {}), spec):
                return preset_value(case["value"], spec)
        raise ValueError(f"no case of {value} matches {spec}")
    raise ValueError(f"unknown preset value {value!r}")


def hparams_from_size_classes(method: str, doc: Mapping, spec: ModelSpec, world_corpus: bool = False) -> HParams:
    """`method`'s dataclass from a size-class preset (e.g. `presets/<method>/tuned.json`) for a model shape:
    its dataclass defaults, then the preset's `common` fields, the matching size class's `fields` and — for a
    model that carries a synthetic world's training corpus (`world_corpus`) — that class's `if_world_corpus`.

        >>> hparams_from_size_classes("memit", load_preset("memit", "tuned"), model_spec(bridge)).layers  # doctest: +SKIP
        (0, 1)
    """
    entry = size_class(doc, spec)
    settings = {**doc.get("common", {}), **entry.get("fields", {})}
    if world_corpus:
        # the one setting that depends on the model's training data rather than its shape
        settings.update(entry.get("if_world_corpus", {}))
    return override_hparams(HPARAMS_CLASSES[method](), **{k: preset_value(v, spec) for k, v in settings.items()})


# ----------------------------------------------------------------------------- presets as data files

PRESET_DIR = Path(__file__).with_name("presets")
DEFAULT_PRESET = "tuned"


def preset_names(method: str) -> list[str]:
    """The presets `method` has (the file names under `presets/<method>/`)."""
    return sorted(p.stem for p in (PRESET_DIR / method).glob("*.json"))


def load_preset(method: str, preset: str) -> dict:
    """The preset file of `method` as a dict (`presets/<method>/<preset>.json`); a clear error for an unknown one."""
    path = PRESET_DIR / method / f"{preset}.json"
    if method not in METHODS or not path.exists():
        raise ValueError(f"no preset {preset!r} for method {method!r}; presets: {preset_names(method) if method in METHODS else []}")
    return json.loads(path.read_text())


def _released_entry(doc: dict, spec: ModelSpec) -> tuple[dict, bool]:
    """The released entry for this model (exact: same architecture and depth), else the family's, else the first."""
    entries = doc["released"]
    for e in entries:
        if e["architecture"] == spec.architecture and e["n_layers"] == spec.n_layers:
            return e, True
    family = [e for e in entries if e["architecture"] == spec.architecture]
    return (family or entries)[0], False


def reference_fields(method: str, spec: ModelSpec) -> dict:
    """The reference preset's fields for a model, in the release's own names: the released entry itself for the
    model it was released for, else that entry scaled to the model's shape by the file's `scaling` rule
    (layers mapped proportionally, loss layer = last block, λ·d_mlp/d_mlp_released, the tuned statistics budget)."""
    entry, exact = _released_entry(load_preset(method, "reference"), spec)
    fields_ = {**entry["hparams"], **{k: v for k, v in entry.get("outside_hparams", {}).items() if k != "source"}}
    if exact:
        return fields_
    n_from, n_to = entry["n_layers"], spec.n_layers

    def scale(layers):
        if layers and isinstance(layers[0], list):
            return [scale(g) for g in layers]
        return list(dict.fromkeys(mapped_layer(x, n_to, n_from) for x in layers))

    fields_["layers"] = scale(fields_["layers"])
    if fields_["layers"] and isinstance(fields_["layers"][0], list):  # ACE's two groups, kept apart and in order:
        first, second = fields_["layers"]  # layers the mapping merged stay in the second group
        fields_["layers"] = [[l for l in first if l < min(second)] or [max(0, min(second) - 1)], second]
    fields_["v_loss_layer"] = n_to - 1
    if "mom2_update_weight" in fields_:
        fields_["mom2_update_weight"] = fields_["mom2_update_weight"] * spec.d_mlp / entry["d_mlp"]
    fields_["mom2_n_samples"] = 100_000 if n_to >= 28 and spec.d_mlp >= 8192 else (2_000 if n_to <= 6 else 5_000)
    return fields_


def hparams_from_reference(method: str, released: Mapping, n_layers: int) -> HParams:
    """Our dataclass for `method` from a reference configuration in the release's names (a released hparams json,
    or `reference_fields`), with the reference preset's `algorithm` settings on top.

    Mapping: `kl_factor` → `target.subject_kl_factor` (the release's KL sits at the subject's last token),
    `nll_loss_factor` → `target.nll_factor`, `mom2_update_weight` → `covariance.cov_weight`, `mom2_n_samples` →
    `covariance.n_tokens` (a token count here), `context_template_length_params` → `target.context_lengths`, ACE's
    `layers` [[first group], [second group]] → (query_layers, value_layers), `fact_token` →
    `target.fact_token` ("subject_last" or "last"). `v_loss_layer` must be the last block: the only one implemented."""
    doc = load_preset(method, "reference")
    r = dict(released)
    if r.get("fact_token", "subject_last") not in ("subject_last", "last"):
        raise ValueError(f"fact_token {r['fact_token']!r} is not implemented (only subject_last and last)")
    if r.get("v_loss_layer", n_layers - 1) != n_layers - 1:
        raise ValueError(f"v_loss_layer {r['v_loss_layer']} is not the last block ({n_layers - 1}); only that is implemented")
    pairs = tuple((int(length), int(count)) for length, count in r.get("context_template_length_params", []))
    target = TargetHParams(
        v_num_grad_steps=int(r["v_num_grad_steps"]), v_lr=float(r["v_lr"]), v_weight_decay=float(r["v_weight_decay"]),
        clamp_norm_factor=float(r["clamp_norm_factor"]), subject_kl_factor=float(r["kl_factor"]),
        nll_factor=float(r.get("nll_loss_factor", 1.0)), context_lengths=pairs,
        n_context=sum(c for _, c in pairs), context_length=pairs[0][0] if pairs else 10,
        fact_token=str(r.get("fact_token", "subject_last")),
    )
    covariance = CovarianceHParams(cov_weight=float(r.get("mom2_update_weight", 0.0)), n_tokens=int(r["mom2_n_samples"]))
    layers = r["layers"]
    if method == "rome":
        hp = ROMEHParams(layer=int(layers[0]), target=target, covariance=covariance)
    elif method == "memit":
        hp = MEMITHParams(layers=tuple(layers), target=target, covariance=covariance)
    elif method == "pmet":
        hp = PMETHParams(layers=tuple(layers), target=target, covariance=covariance)
    elif method == "ace":
        hp = ACEHParams(query_layers=tuple(layers[0]), value_layers=tuple(layers[1]), target=target, covariance=covariance)
    else:
        raise ValueError(f"{method} has no reference preset")
    return override_hparams(hp, **doc["algorithm"])


def reference_hparams(method: str, bridge: TransformerBridge) -> HParams:
    """The reference preset for this model: `hparams_from_reference` of `reference_fields`."""
    spec = model_spec(bridge)
    return hparams_from_reference(method, reference_fields(method, spec), spec.n_layers)


Config = TypeVar("Config")  # any of the hyper-parameter dataclasses above


def override_hparams(hp: Config, **overrides: object) -> Config:
    """`hp` with fields replaced; a dotted name reaches into a nested dataclass.

    `override_hparams(hp, query_weight=0.0, **{"target.subject_kl_factor": 0.0})` replaces `hp.query_weight`
    and `hp.target.subject_kl_factor`, leaving `hp` itself unchanged. An unknown name raises a ValueError
    that lists the fields there are.
    """
    nested: dict[str, dict[str, object]] = {}
    flat: dict[str, object] = {}
    for name, value in overrides.items():
        head, _, rest = name.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            flat[head] = value
    known = {f.name for f in fields(hp)}
    for head in [*flat, *nested]:
        if head not in known:
            raise ValueError(f"{type(hp).__name__} has no field {head!r}; fields: {sorted(known)}")
    for head, inner in nested.items():
        child = getattr(hp, head)
        if not is_dataclass(child):
            raise ValueError(f"{type(hp).__name__}.{head} is not a dataclass; cannot set {sorted(inner)} in it")
        flat[head] = override_hparams(child, **inner)
    return replace(hp, **flat)


def parse_overrides(assignments: Sequence[str]) -> dict[str, object]:
    """Command-line `FIELD=VALUE` strings as `override_hparams` keyword arguments. A value is read as a Python
    literal where it is one (`0.5`, `False`, `(3, 4)`) and kept as a string otherwise (`variant=attribution`)."""
    out: dict[str, object] = {}
    for a in assignments:
        name, sep, text = a.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"expected FIELD=VALUE, got {a!r}")
        try:
            out[name.strip()] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            out[name.strip()] = text
    return out


def small_budget(hp: HParams, steps: int = 5, n_context: int = 2, n_tokens: int = 1_000) -> HParams:
    """The same method with a small compute budget (few optimisation steps, contexts and covariance
    tokens): for smoke tests, demos and notebooks in quick mode, not for quality numbers."""
    hp = replace(hp, target=replace(hp.target, v_num_grad_steps=steps, n_context=n_context))
    if hasattr(hp, "covariance"):
        hp = replace(hp, covariance=replace(hp.covariance, n_tokens=n_tokens, progress=False))
    return hp
