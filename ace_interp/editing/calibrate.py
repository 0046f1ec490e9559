"""Where can a model's facts be written? A short measurement on the model's own facts, for the presets.

    import ace_interp as ai
    from ace_interp.editing.calibrate import cached_fact_sites
    bridge = ai.load_model("toy-qwen3")
    sites = cached_fact_sites(bridge, corpus=None, n_tokens=2000)   # FactSiteCalibration
    sites.fact_token, sites.usable_layers                        # ('subject_last', (0, 1, 2, 3))
    sites.table                 # DataFrame: layer, fact_token, subject_share, bleed, reach, usable

Every editor keys on one token of the prompt (ROME's `fact_token`): the subject's last token in the papers'
releases, or the prompt's last token (ROME's other strategy). Per (fact token, layer) we measure on facts the model
was trained on, grouped by prompt template:

* **bleed** — a key-value write Δ = C⁻¹k rᵀ / (kᵀC⁻¹k) moves another key k' by (k'ᵀC⁻¹k)/(kᵀC⁻¹k) of r: the
  median of that ratio over same-template pairs is the share of an edit's shift another subject's prompt receives;
* **reach** — the share of counterfactual trial edits whose target a free δ on the layer's FFN output at that token
  makes likely: whether a write there can steer the answer at all;
* `subject_share`, for reading only — the part of the keys' energy that changes when only the subject changes.

A site is usable where bleed ≤ `MAX_BLEED` and reach ≥ `MIN_REACH`; the fact token is "subject_last" where it has a
usable layer, else "last" (`choose_sites`). `hparams.with_fact_sites` then moves each written layer group onto usable
layers. Why (docs/findings/2026-12-07-fact-token-calibration.md): a qwen3 toy freshly trained with our recipe reads
the subject's embedding with layer-0 attention and builds the fact at the last position; its subject-token writes
bled onto every prompt of the relation (specificity 43–66%). In a 3-layer GPT-J toy the layer map wrote at layer 0,
where a δ could not steer the answer (MEMIT / PMET efficacy 40–43%).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from ace_interp.editing.covariance import TextCorpus, model_id, second_moments
from ace_interp.editing.keys import FACT_TOKENS, build_batch, capture_input, hf_runner, hooks, run_until
from ace_interp.editing.requests import EditRequest
from ace_interp.editing.solver import regularised_cholesky
from ace_interp.editing.targets import TargetHParams, compute_targets
from ace_interp.model.cachefiles import atomic_path, file_lock
from ace_interp.model.loading import cache_dir
from ace_interp.model.state import model_state

log = logging.getLogger(__name__)

# The most of an edit's output shift another subject's prompt of the same template may receive. The bleed of a
# key-value write Δ = C⁻¹k rᵀ / (kᵀC⁻¹k) onto a key k' is (k'ᵀC⁻¹k)/(kᵀC⁻¹k) of r. Measured medians
# (docs/findings/2026-12-07-fact-token-calibration.md): the shipped toys ≤ 0.06 at every usable site, the qwen3
# toy of world seed 11 at the subject's token 0.36–0.54; the bound sits in that gap, not fitted to edit results.
MAX_BLEED = 0.2
# The least share of trial targets a δ at a site must reach for the site to be written at (`target_reach`): the
# single-edit efficacy asked of a preset is 95%, which a site that cannot steer one trial target in ten will not give.
MIN_REACH = 0.9


def template_keys(
    bridge: TransformerBridge, facts: Sequence[EditRequest], fact_token: str, layers: Sequence[int]
) -> list[dict[int, Float[Tensor, "n_facts d_mlp"]]]:
    """Keys (down-projection inputs) at `fact_token` of the bare prompts, per layer, one dict per prompt template
    that holds at least two facts."""
    by_template: dict[str, list[EditRequest]] = defaultdict(list)
    for f in facts:
        by_template[f.prompt].append(f)
    groups = [g for g in by_template.values() if len(g) > 1]
    if not groups:
        raise ValueError("calibration needs at least two facts with the same prompt template")
    runner = hf_runner(bridge)
    out = []
    for group in groups:
        batch = build_batch(bridge, group, ("",), fact_token=fact_token)
        stores: dict[int, list] = {l: [] for l in layers}
        with torch.no_grad(), hooks(*[lambda l=l: capture_input(runner.down_proj[l], stores[l]) for l in layers]):
            run_until(runner, batch.tokens, runner.down_proj[max(layers)])
        out.append({l: stores[l][0][batch.rows, batch.lookup].to(torch.float64) for l in layers})
    return out


def subject_share(keys: Float[Tensor, "n d"]) -> tuple[float, float]:
    """(Σ‖k_i − k̄‖², Σ‖k_i‖²) of one template's keys: their sum over templates gives share(l, pos)."""
    return float((keys - keys.mean(0)).pow(2).sum()), float(keys.pow(2).sum())


def bleed_ratios(keys: Float[Tensor, "n d"], factor: Tensor) -> Float[Tensor, " pairs"]:
    """k_jᵀC⁻¹k_i / k_iᵀC⁻¹k_i for every ordered pair i ≠ j of one template's keys (`factor`: Cholesky of C)."""
    whitened = torch.cholesky_solve(keys.T, factor).T  # C⁻¹k_i, [n, d]
    gram = keys @ whitened.T  # [i, j] = k_iᵀC⁻¹k_j
    ratio = gram / gram.diagonal()[:, None]
    off = ~torch.eye(len(keys), dtype=torch.bool)
    return ratio[off]


def fact_sites(
    bridge: TransformerBridge,
    facts: Sequence[EditRequest],
    corpus: TextCorpus | None = None,
    n_tokens: int = 2000,
    fact_tokens: Sequence[str] = FACT_TOKENS,
    factors: dict[int, Tensor] | None = None,
) -> pd.DataFrame:
    """One row per (layer, fact_token): `subject_share` and the median `bleed` (module docstring) over the
    facts' same-template pairs, C from `n_tokens` of `corpus` (the editors' statistics, `covariance.second_moments`);
    `factors`: those Cholesky factors per layer, where the caller already has them (`statistics_factors`)."""
    layers = list(range(bridge.cfg.n_layers))
    factors = statistics_factors(bridge, corpus, n_tokens) if factors is None else factors
    rows = []
    for token in fact_tokens:
        groups = template_keys(bridge, facts, token, layers)
        for l in layers:
            spread, energy = map(sum, zip(*(subject_share(g[l]) for g in groups)))
            bleed = torch.cat([bleed_ratios(g[l], factors[l].to(g[l].device)) for g in groups])
            rows.append({"layer": l, "fact_token": token, "subject_share": spread / max(energy, 1e-30),
                         "bleed": float(bleed.abs().median())})
    return pd.DataFrame(rows)


def statistics_factors(bridge: TransformerBridge, corpus: TextCorpus | None, n_tokens: int) -> dict[int, Tensor]:
    """Cholesky factors of every layer's key statistics C (`covariance.second_moments`, ridge as the solver's)."""
    layers = list(range(bridge.cfg.n_layers))
    moments = second_moments(bridge, layers, corpus=corpus, n_tokens=n_tokens, progress=False)
    return {l: regularised_cholesky(moments[l]) for l in layers}


def counterfactual_trials(facts: Sequence[EditRequest], n: int, seed: int = 0) -> list[EditRequest]:
    """Up to `n` edits of `facts`, each to another fact's answer of the same template (a realistic new value);
    templates whose facts all share one answer give none."""
    by_template: dict[str, list[EditRequest]] = defaultdict(list)
    for f in facts:
        by_template[f.prompt].append(f)
    rng = random.Random(seed)
    trials = []
    for f in facts:
        answers = sorted({g.target_new for g in by_template[f.prompt]} - {f.target_new})
        if answers:
            trials.append(EditRequest(f.prompt, f.subject, rng.choice(answers), f.target_new))
    return trials[:n]


def target_reach(bridge: TransformerBridge, trials: Sequence[EditRequest], layer: int, hp: TargetHParams) -> float:
    """The share of `trials` whose target a δ on `layer`'s FFN output at `hp.fact_token` makes likely
    (p(new) ≥ 0.5 after `compute_targets` on the bare prompts, not through any write): whether a write there can
    steer the answer at all. A δ at the subject's token after the last attention block reaches no later
    position; on a 3-layer GPT-J toy, ROME's target at layer 0 reached few of its targets (findings note)."""
    result = compute_targets(bridge, trials, layer, replace(hp, through_write=False, per_request=False),
                             ("",), sites=("mlp",))
    return float((result.target_prob >= 0.5).float().mean())


@dataclass
class FactSiteCalibration:
    """Where this model's facts can be written: `fact_token` and the layers usable there (module docstring)."""

    fact_token: str
    usable_layers: tuple[int, ...]
    table: pd.DataFrame  # layer, fact_token, subject_share, bleed, reach (NaN where bleed already failed), usable

    def nearest_usable(self, layer: int) -> int:
        """The usable layer closest to `layer` (the later one on a tie)."""
        return min(self.usable_layers, key=lambda l: (abs(l - layer), -l))

    def layers(self, wanted: Sequence[int]) -> tuple[int, ...]:
        """`wanted` without its unusable layers; if none is left, the usable layer nearest the last wanted."""
        kept = tuple(l for l in wanted if l in self.usable_layers)
        return kept if kept or not wanted else (self.nearest_usable(max(wanted)),)


# The optimiser `target_reach` asks: can *any* δ at the site steer the answer? So no clamp and a small decay (the
# small-model settings of presets/*/tuned.json), the tuned KL on "{} is a", the bare prompt only.
REACH_OPTIMISER = TargetHParams(v_lr=0.5, v_num_grad_steps=100, v_weight_decay=0.001, decay_power=1,
                                clamp_norm_factor=1000.0, n_context=0)


def calibrate_fact_sites(
    bridge: TransformerBridge,
    corpus: TextCorpus | None = None,
    n_tokens: int = 2000,
    facts: Sequence[EditRequest] | None = None,
    n_facts: int = 64,
    n_trials: int = 16,
    seed: int = 0,
) -> FactSiteCalibration:
    """Measure bleed and reach per (fact_token, layer) on the model's own facts and choose where to write.

    A site is usable where bleed ≤ `MAX_BLEED` and reach ≥ `MIN_REACH`. The fact token is "subject_last" (the
    references') if any layer is usable there, else "last" (measured only then); `ValueError` if neither has one.
    corpus, n_tokens: the editors' key statistics (C in the bleed); facts: facts the model knows (default:
    `known_world_facts`, which needs a synthetic world)."""
    facts = list(known_world_facts(bridge, n_facts, seed) if facts is None else facts)
    if not facts:
        raise ValueError("no facts to calibrate on: this model carries no synthetic world; pass facts=")
    trials = counterfactual_trials(facts, n_trials, seed)
    tables = []
    factors = statistics_factors(bridge, corpus, n_tokens)  # once, for both fact tokens
    for token in FACT_TOKENS:
        table = fact_sites(bridge, facts, corpus, n_tokens, fact_tokens=(token,), factors=factors)
        table["reach"] = [
            float("nan") if row.bleed > MAX_BLEED
            else target_reach(bridge, trials, row.layer, replace(REACH_OPTIMISER, fact_token=token))
            for row in table.itertuples()
        ]
        tables.append(table)
        sites = choose_sites(pd.concat(tables, ignore_index=True))
        if sites is not None:
            return sites
    raise ValueError(f"no layer of this model can be written at either fact token:\n{pd.concat(tables).to_string()}")


def choose_sites(table: pd.DataFrame) -> FactSiteCalibration | None:
    """The choice `calibrate_fact_sites` makes from its measurements (layer, fact_token, bleed, reach, ...):
    the first fact token of `FACT_TOKENS` with a usable layer; None if none has one."""
    table = table.assign(usable=(table["bleed"] <= MAX_BLEED) & (table["reach"] >= MIN_REACH))
    for token in FACT_TOKENS:
        usable = tuple(int(l) for l in table.loc[table["usable"] & (table["fact_token"] == token), "layer"])
        if usable:
            log.info("fact sites: %s at layers %s", token, usable)
            return FactSiteCalibration(token, usable, table)
    return None


def cached_fact_sites(bridge: TransformerBridge, corpus: TextCorpus | None, n_tokens: int) -> FactSiteCalibration:
    """`calibrate_fact_sites` for this model and key statistics, measured once: kept on the bridge
    (`model_state(bridge).fact_sites`) and on disk beside the statistics, keyed on the weights as loaded, the
    corpus, the bounds and the optimiser (`covariance.model_id`; a lock and a per-process temporary name make
    concurrent first use safe). A preset must not change with the edits a session has applied since; measured
    on an edited model, it says so in the log."""
    state = model_state(bridge)
    settings = json.dumps([corpus.fingerprint() if corpus is not None else None, n_tokens, MAX_BLEED, MIN_REACH,
                           asdict(REACH_OPTIMISER), FACT_TOKENS], sort_keys=True)
    if settings in state.fact_sites:
        return state.fact_sites[settings]
    digest = hashlib.sha1(settings.encode()).hexdigest()[:12]
    path = cache_dir() / "stats" / model_id(bridge) / f"fact-sites-{digest}.csv"
    with file_lock(path):
        if not path.exists():
            if state.weight_edits:
                log.warning("fact-site calibration measured on a model with %d edits applied", len(state.weight_edits))
            sites = calibrate_fact_sites(bridge, corpus, n_tokens)
            with atomic_path(path) as tmp:
                sites.table.drop(columns="usable").to_csv(tmp, index=False)
    sites = choose_sites(pd.read_csv(path))
    if sites is None:
        raise ValueError(f"the cached calibration {path} has no usable site; delete it to measure again")
    state.fact_sites[settings] = sites
    return sites


def known_world_facts(bridge: TransformerBridge, n: int = 64, seed: int = 0) -> list[EditRequest]:
    """Up to `n` single-hop facts of the world a synthetic-world toy was trained on (its `mquake_cases.json`
    rewrites, true answers as `target_new`), sampled with `seed`; [] for a model without a world."""
    world = model_state(bridge).world
    path = world / "mquake_cases.json" if world is not None else None
    if path is None or not path.exists():
        return []
    seen, facts = set(), []
    for case in json.loads(path.read_text()):
        for rw in case.get("requested_rewrite", []):
            true = rw.get("target_true", {})
            true = true.get("str") if isinstance(true, dict) else true
            key = (rw["prompt"], rw["subject"])
            if true and key not in seen:
                seen.add(key)
                facts.append(EditRequest.from_rewrite({**rw, "target_new": true}))
    facts.sort(key=lambda r: (r.prompt, r.subject))
    return random.Random(seed).sample(facts, min(n, len(facts)))
