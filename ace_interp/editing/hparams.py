"""Hyper-parameters of every editor, as dataclasses with documented defaults per architecture.

Reference values are the published ones for GPT-J-6B (ROME / MEMIT / PMET papers and their released
configs; ACE's released config for its layer groups). For other depths the layer choices are mapped
*proportionally* from GPT-J's 28 layers (layer x ↦ round(x·(L−1)/27)), and the covariance weight λ is
scaled with the FFN width (GPT-J: λ = 15,000 for d_mlp = 16,384, i.e. ≈ 0.9·d_mlp), because the
Mahalanobis norm kᵀC⁻¹k an edited key has — the quantity λ competes with — grows with d_mlp.
Qwen3-8B carries ACE's released groups. Elsewhere, ACE's value group ends at SmolLM2's layer 20 of 30
(mapped), where its target can still steer the answer from the subject position, and ACE writes its query
group first, towards that group's own target (the attribution variant with fixed groups); PMET and ACE optimise
the FFN delta alone (ROME's clamp) and spread it with residual accounting, and ROME, MEMIT, PMET and ACE
solve with one key row per context prefix (`CovarianceHParams.context_keys="each"`). Models with at most
6 layers get these settings:
- target-optimisation settings for their small activation norms;
- targets optimised through the write;
- FFN-only PMET/ACE targets;
- one-layer ACE groups;
- no context prefixes for synthetic-world toys.

`docs/ace.md` has the measurements behind each rule.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Literal, TypeVar

from transformer_lens.model_bridge import TransformerBridge

from ace_interp.editing.covariance import TextCorpus, world_corpus_path
from ace_interp.model.architecture import model_spec

METHODS = ("ft", "rome", "memit", "pmet", "ace")


@dataclass
class TargetHParams:
    """Optimisation of the target vector z (ROME/MEMIT `compute_v`/`compute_z`, PMET `compute_zs`).

    loss = mean NLL(target_new | context + prompt)              over the context prefixes
         + kl_factor · KL(p_δ ‖ p_0) on `kl_prompt`'s next token  (keeps "{subject} is a" unchanged)
         + subject_kl_factor · the same KL at the subject's last token of `kl_prompt` (keeps what follows
           the subject itself, e.g. in a generated answer that names it)
         + v_weight_decay · ‖δ‖ / ‖z_0‖^decay_power               (MEMIT: power 2; PMET: power 1)
    Adam on δ, then δ is clamped to ‖δ‖ ≤ clamp_norm_factor · ‖z_0‖ after every step.
    """

    v_num_grad_steps: int = 25
    v_lr: float = 0.5
    v_weight_decay: float = 0.5
    decay_power: int = 2
    clamp_norm_factor: float = 0.75
    kl_factor: float = 0.0625
    kl_prompt: str = "{} is a"
    # 0: the references (ROME/MEMIT/PMET) have no such term. δ sits at the subject's last token, so it also
    # changes what the model predicts right after the subject; when another edit's answer names this subject,
    # the edited model then derails in the middle of that answer (SmolLM2: "Bucharest is the capital of" →
    # " Denmark-Loraima"; docs/ace.md, "Chained edits")
    subject_kl_factor: float = 0.0
    early_stop_loss: float = 5e-2  # stop when every request's NLL term (mean over prompts) is below this
    n_context: int = 5  # sampled context prefixes (plus the empty one)
    # optimise δ through the write at the target layer (`compute_targets(write_map=…)`): the loss sees what
    # Δ = Uδ does at every position, not only at the subject's last token (docs/ace.md, "Through the write")
    through_write: bool = False
    context_length: int = 10
    seed: int = 0


@dataclass
class CovarianceHParams:
    """Key statistics C = E[kkᵀ]: which corpus, how many token samples, and how strongly they weigh."""

    corpus: TextCorpus | None = None  # None: text sampled from the model (`model_sampled_corpus`)
    n_tokens: int = 10_000
    cov_weight: float = 15_000.0  # λ in ‖KΔ − R‖² + λ tr(ΔᵀCΔ)  (MEMIT's mom2_update_weight)
    ridge: float = 1e-4  # C + ε·mean(diag C)·I
    # how a request's keys over the context prefixes enter the solve: "mean" — one averaged key (ROME/MEMIT);
    # "each" — one row per context, each weighted 1/c (`solver` docstring; docs/ace.md, "Keys per context")
    context_keys: Literal["mean", "each"] = "mean"
    # the least share of its residual every key row realises (`solver.write_map`: a smaller λ for keys typical of
    # the corpus); 0 is the reference solve (and the default on small models and the paper's two); 0.5 on
    # the adapted models (`default_hparams`, README: measured on SmolLM2).
    min_realised: float = 0.0
    seq_len: int = 128
    progress: bool = True

    @property
    def per_context_keys(self) -> bool:
        """Whether the solve takes one key row per context (`context_keys == "each"`)."""
        if self.context_keys not in ("mean", "each"):
            raise ValueError(f"unknown context_keys {self.context_keys!r}; expected 'mean' or 'each'")
        return self.context_keys == "each"


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
    # The implicit-subject write (off when empty): layers written so that noun phrases reaching the edited
    # subject through another entity ("dmitri costa 's birthplace" for marrakesh; `ace.ImplicitSubject`)
    # retrieve the new fact. One key per edit, averaged over its phrases; PMET's target at the last of these
    # layers over the phrase prompts; written before the query and value groups (docs/ace.md, "The implicit
    # subject").
    implicit_layers: tuple[int, ...] = ()
    implicit_weight: float = 1.0  # scales the implicit-subject write's residual


HParams = FTHParams | ROMEHParams | MEMITHParams | PMETHParams | ACEHParams


# ----------------------------------------------------------------------------- per-architecture defaults


def _map(layer: int, n_layers: int) -> int:
    """GPT-J layer index mapped proportionally onto a model with n_layers layers."""
    return round(layer * (n_layers - 1) / 27)


def _span(a: int, b: int, n_layers: int) -> tuple[int, ...]:
    lo, hi = _map(a, n_layers), _map(b, n_layers)
    return tuple(range(lo, max(hi, lo) + 1))


def default_hparams(method: str, bridge: TransformerBridge, **overrides) -> HParams:
    """The documented defaults of `method` for this model's architecture (overrides replace fields, dotted
    names reach nested ones: `default_hparams("ace", bridge, **{"target.v_lr": 0.1})`, `override_hparams`)."""
    if method not in METHODS:
        raise ValueError(f"unknown editing method {method!r}; expected one of {METHODS}")
    spec = model_spec(bridge)
    n, d_mlp = spec.n_layers, spec.d_mlp
    is_gptj_6b = spec.architecture == "GPTJForCausalLM" and n == 28
    is_qwen3_8b = spec.architecture == "Qwen3ForCausalLM" and n == 36
    small = n <= 6  # tiny test models and the synthetic-world toy models

    # λ competes with the edited keys' Mahalanobis norm kᵀC⁻¹k (≈ d_mlp for keys typical of the corpus).
    # Models with ≤ 6 layers get a one-layer MEMIT/PMET range, so nothing later in the spread makes up
    # for what λ holds back: λ = 0.04·d_mlp there (toy sweep, docs/ace.md: MEMIT and PMET efficacy have
    # saturated by λ ≈ 20 on d_mlp = 512); larger models keep GPT-J's λ/d_mlp ≈ 0.9.
    cov_weight = 15_000.0 if is_gptj_6b else (0.04 if small else 0.9) * d_mlp
    n_tokens = 100_000 if n >= 28 and d_mlp >= 8192 else (2_000 if small else 5_000)
    paper_model = is_gptj_6b or is_qwen3_8b
    adapted = not (small or paper_model)
    # Away from the paper's two models every closed-form editor solves with one key row per context
    # prefix: on SmolLM2 a subject that opens the prompt has a bare-prompt key unlike its prefixed ones
    # (cosine 0.04–0.4), and the averaged key's write reached ≈ 0.01–0.2 of it. SmolLM2 main table (2 seeds):
    # greedy efficacy ROME 86 → 92%, MEMIT 91 → 95%, PMET 89 → 95%, ACE 75 → 83%; the price is bleeding
    # between prompt-opening subjects of one relation (one specificity fact: ROME 91 → 86%, PMET 93 → 88%;
    # none of 30 facts in a batch of 10). docs/ace.md, "Keys per context".
    # ...and every key row realises at least half of its residual (λ_j = q_j = k_jᵀC⁻¹k_j where λ would hold back
    # more). On SmolLM2 the subjects that MEMIT, PMET and ACE missed ("China", "Chicago", "Mexico City") are common
    # tokens whose keys are typical corpus keys (q ≈ 30–220 against λ = 1,382); with λ the write realised 0.11 of δ.
    # SmolLM2 seeds 2 and 0, greedy efficacy PMET 70 → 100% / 90 → 95%, MEMIT 70 → 90 / 90 → 95%, ACE 70 → 100 /
    # 90 → 95%, for specificity 100 → 92 / 97 → 91% (PMET) and 100 → 87 / 100 → 88% (ACE). ROME solves at λ = 0,
    # where the floor does nothing. The SmolLM2 main table (2 seeds) then: efficacy MEMIT / PMET / ACE 95 → 98%,
    # specificity 86 → 88 / 88 → 84 / 100 → 94%. docs/ace.md, "A floor on the realised share".
    covariance = CovarianceHParams(cov_weight=cov_weight, n_tokens=n_tokens, context_keys="each" if adapted else "mean",
                                   min_realised=0.5 if adapted else 0.0)
    pmet_covariance = replace(covariance, cov_weight=cov_weight * 4 / 3)  # PMET: 20,000 vs MEMIT's 15,000
    # Small models (tiny random test models, synthetic-world toys) have activations of norm ~0.01–1; the
    # reference decay ‖δ‖/‖z_0‖^p and clamp c·‖z_0‖ were tuned for GPT-J-sized norms and would freeze δ.
    # lr 0.5 / ≤ 100 steps (early stop at NLL < 0.05): at lr 0.1 / 40 steps the toy targets stopped at
    # p(new) ≈ 0.4–0.7 (docs/ace.md, "Toy models").
    small_target = dict(v_weight_decay=1e-3, decay_power=1, clamp_norm_factor=1000.0, v_lr=0.5, v_num_grad_steps=100)
    # A synthetic-world toy was trained on one fact per sequence: any context prefix is out of its
    # distribution (sampled ones read "dmitri rosa euro 's euro . north-america 's pound ."), and with 5 of
    # them the toy targets reached p(new) 0.02–0.6 instead of 0.9–1.0. Such models edit the bare prompt only.
    if world_corpus_path(bridge) is not None:
        small_target["n_context"] = 0
    # ...and are optimised through the write: in a 6-layer toy the last position's keys overlap the
    # subject's (attention copies the name there early), so a write moved the final position's FFN output
    # by up to half the subject's shift and undid 2 of 10 ROME edits whose targets had reached p ≈ 0.95.
    small_target["through_write"] = True

    pmet_target = (
        TargetHParams(**small_target)
        if small
        else TargetHParams(v_lr=0.2, decay_power=1, clamp_norm_factor=0.75, v_num_grad_steps=30)
    )
    # Away from the paper's two models (and above 6 layers) PMET and ACE optimise the FFN delta alone with
    # ROME's clamp (4·‖z_0‖), a smaller decay (0.05) and lr 0.5, and spread it with residual accounting.
    # On SmolLM2 the reference wrote p(new) 0.00–0.02 for targets optimised to 0.95: the attention delta is
    # never written, and the FFN delta alone stays at p(new) ≤ 0.19 under clamp 0.75. With these settings the
    # written model matches the optimisation (5 of 6 rewrites within 0.03) and, on 12 one-edit cases,
    # efficacy rose from 8 to 11 of 12 (`python -m benchmarks.smollm2_write_misses`; docs/ace.md).
    adapted_target = replace(pmet_target, v_weight_decay=0.05, clamp_norm_factor=4.0, v_lr=0.5)
    # MQuAKE cases chain their edits: edit k+1's subject is edit k's new answer. Written at the subject's last
    # token, edit k+1 also moves what follows that token, and the edited model can derail in the middle of edit
    # k's answer (SmolLM2, ROME: "Bucharest is the capital of" → " Denmark-Loraima"). ROME and ACE get a KL term
    # at the subject's position of "{s} is a". SmolLM2 main table, greedy efficacy: ROME 92 → 95%, ACE 83 → 86%,
    # nothing else changed. The same term cost MEMIT and PMET one case (95 → 92%: " Alexandre Dumascer"), so
    # they keep the reference (docs/ace.md, "Chained edits"; results/smollm2-subject-kl).
    subject_kl = {"subject_kl_factor": 0.5} if adapted else {}
    if method == "ft":
        hp = FTHParams(layer=_map(21, n), lr=5e-4 if not small else 0.1, norm_constraint=5e-5 if not small else 0.5)
    elif method == "rome":
        hp = ROMEHParams(
            layer=_map(5, n),
            target=(TargetHParams(**small_target) if small
                    else TargetHParams(v_num_grad_steps=20, clamp_norm_factor=4.0, **subject_kl)),
            covariance=covariance,
        )
    elif method == "memit":
        hp = MEMITHParams(
            layers=_span(3, 8, n),
            target=TargetHParams(**small_target) if small else TargetHParams(),
            covariance=covariance,
        )
    elif method == "pmet":
        hp = PMETHParams(
            layers=_span(3, 8, n),
            target=adapted_target if adapted else pmet_target,
            covariance=pmet_covariance,
            # on the toys the never-written attention delta carried most of the shift: with it PMET
            # realised 2–4 of 10 targets, without it 10 of 10 (docs/ace.md, "Toy models")
            joint_attention=paper_model,
            spread_accounting="residual" if adapted else "ffn",
        )
    else:
        if is_qwen3_8b:
            query, value = (25, 26, 27), (28, 29, 30, 31, 32)
        elif is_gptj_6b:
            query, value = tuple(range(3, 9)), (23, 24, 25)
        else:
            # GPT-J's query group mapped; the value group ends at SmolLM2's layer 20 of 30, mapped: deeper,
            # the target z at the subject's last token no longer reaches the answer (SmolLM2, 5 rewrites,
            # FFN-only z: p(new) ≥ 0.91 for all five at layer 20, 0.56–0.96 at 24, ≤ 0.42 at 27, the
            # proportional map of GPT-J's 23–25; docs/ace.md, "ACE on SmolLM2")
            end = round(20 * (n - 1) / 29)
            query, value = _span(3, 8, n), tuple(range(max(0, end - 2), end + 1))
        variant = "ace-paper"
        if small:
            # One value layer (ROME's, mapped) and the layers below it as the query group, each written
            # towards its own target (the attribution variant with fixed groups): on the toys a multi-layer
            # spread, or one shared z that the query group writes first, realised the target for 5–8 of
            # 10 edits; single-layer groups optimised through their write realised 10 of 10 (docs/ace.md).
            value_layer = min(max(1, _map(5, n)), n - 1)  # at least one query layer below it if n > 1
            query, value, variant = tuple(range(value_layer)), (value_layer,), "attribution"
        elif adapted:
            # The query group's own target (PMET's, at its last layer, plus the hop prompts the caller gives),
            # written first; the value target then optimised on top of it. SmolLM2, the 39 one-edit cases
            # that edit the questions' own subject: multi-hop 33% (the release's shared z) → 56%, PMET 49%;
            # the main table's 20 cases: efficacy 95% and multi-hop 5% either way, paraphrase 97 → 98%,
            # specificity 99 → 100% (docs/ace.md, "ACE's query group first, on SmolLM2").
            variant = "attribution"
        # ACE's z gets the adapted settings too: with PMET's clamp 0.75 the FFN delta alone stayed at
        # p(new) ≤ 0.19 on SmolLM2 at every layer probed (9–27).
        ace_target = replace(adapted_target, **subject_kl) if adapted else pmet_target
        hp = ACEHParams(
            variant=variant,
            # the fixed groups above: attribution ranks SmolLM2's next hop at layers 21–29 of the *last*
            # token, too deep for a write at the subject's token to steer (docs/ace.md)
            rank_layers=False,
            query_layers=query,
            value_layers=value,
            target=ace_target,
            covariance=pmet_covariance,
            joint_attention=paper_model,
            # SmolLM2, 12 one-edit cases: efficacy 0.50 → 0.92, specificity 0.93 → 0.98 (docs/ace.md)
            spread_accounting="residual" if adapted else "ffn",
            # Query group first, value target after it. With the release's shared z (`variant="ace-paper"`),
            # whose one optimisation never sees the query write at 3–9 and which derailed chained answers
            # (" Alexandre Dumasen"), on SmolLM2's 20 table cases: greedy efficacy 86 → 95%, paraphrase
            # 86 → 97%, specificity 99 → 99%, multi-hop 10 → 5% (one case; docs/ace.md, "Chained edits").
            # With the own query target: multi-hop on hop-0 edits 33% value-first → 56% query-first.
            value_target_after_query=adapted,
        )
    return override_hparams(hp, **overrides)


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


def overridden_hparams(bridge: TransformerBridge, assignments: Mapping[str, Sequence[str]]) -> dict[str, HParams]:
    """{method: `default_hparams(method, bridge)` with its command-line `FIELD=VALUE` overrides} for each method given
    at least one (`{"ace": ["implicit_layers=(4,)"], "pmet": []}` → ACE only)."""
    return {m: default_hparams(m, bridge, **parse_overrides(a)) for m, a in assignments.items() if a}


def small_budget(hp: HParams, steps: int = 5, n_context: int = 2, n_tokens: int = 1_000) -> HParams:
    """The same method with a small compute budget (few optimisation steps, contexts and covariance
    tokens): for smoke tests, demos and notebooks in quick mode, not for quality numbers."""
    hp = replace(hp, target=replace(hp.target, v_num_grad_steps=steps, n_context=n_context))
    if hasattr(hp, "covariance"):
        hp = replace(hp, covariance=replace(hp.covariance, n_tokens=n_tokens, progress=False))
    return hp
