"""Where does a model read a fact? A short measurement on the model's own facts, for the presets.

    import ace_interp as ai
    from ace_interp.editing.calibrate import fact_sites, known_world_facts
    bridge = ai.load_model("toy-qwen3")
    sites = fact_sites(bridge, known_world_facts(bridge, n=64))   # DataFrame: layer, fact_token, subject_share
    sites.pivot(index="layer", columns="fact_token", values="subject_share")

Every editor here keys on one token of the prompt (ROME's `fact_token`): the subject's last token in the papers,
or the prompt's last token (ROME's other strategy). A key k at layer l only separates one subject from another
where it varies with the subject. We measure that directly: for facts grouped by prompt template, the
**subject share** of layer l's keys (the down-projection input m^l) at a position is

    share(l, pos) = Σ_template Σ_i ‖k_i − k̄_template‖²  /  Σ_i ‖k_i‖²

the part of the keys' energy that changes when only the subject changes. 1: every key is the subject's own;
0: every prompt of a template writes into the same key, so an edit of one fact moves them all.

Why the presets need it (docs/findings/2026-12-06-fresh-toys.md): on the shipped 6-layer toys the subject's
token carries the subject (share ≈ 0.9), but a qwen3 toy freshly trained with the same recipe reads the
subject's embedding with layer-0 attention and builds the fact at the last position; its subject-token keys
have cosine 0.97–0.99 across subjects, and every subject-position write bled onto every prompt of the relation
(specificity 43–66%). `choose_fact_token` reads the shares; `hparams.tuned_hparams` applies the choice to
models that carry a synthetic world (where the facts to measure on come with the model).
"""

from __future__ import annotations

import json
import logging
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from ace_interp.editing.covariance import TextCorpus, second_moments
from ace_interp.editing.keys import FACT_TOKENS, build_batch, capture_input, hf_runner, hooks, run_until
from ace_interp.editing.requests import EditRequest
from ace_interp.editing.solver import regularised_cholesky
from ace_interp.editing.targets import TargetHParams, compute_targets
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
) -> pd.DataFrame:
    """One row per (layer, fact_token): `subject_share` and the median `bleed` (module docstring) over the
    facts' same-template pairs, C from `n_tokens` of `corpus` (the editors' statistics, `covariance.second_moments`)."""
    layers = list(range(bridge.cfg.n_layers))
    moments = second_moments(bridge, layers, corpus=corpus, n_tokens=n_tokens, progress=False)
    factors = {l: regularised_cholesky(moments[l]) for l in layers}
    rows = []
    for token in fact_tokens:
        groups = template_keys(bridge, facts, token, layers)
        for l in layers:
            spread, energy = map(sum, zip(*(subject_share(g[l]) for g in groups)))
            bleed = torch.cat([bleed_ratios(g[l], factors[l].to(g[l].device)) for g in groups])
            rows.append({"layer": l, "fact_token": token, "subject_share": spread / max(energy, 1e-30),
                         "bleed": float(bleed.abs().median())})
    return pd.DataFrame(rows)


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
    for token in FACT_TOKENS:
        table = fact_sites(bridge, facts, corpus, n_tokens, fact_tokens=(token,))
        table["reach"] = [
            float("nan") if row.bleed > MAX_BLEED
            else target_reach(bridge, trials, row.layer, replace(REACH_OPTIMISER, fact_token=token))
            for row in table.itertuples()
        ]
        table["usable"] = (table["bleed"] <= MAX_BLEED) & (table["reach"] >= MIN_REACH)
        tables.append(table)
        usable = tuple(int(l) for l in table.loc[table["usable"], "layer"])
        if usable:
            log.info("fact sites: %s at layers %s", token, usable)
            return FactSiteCalibration(token, usable, pd.concat(tables, ignore_index=True))
    raise ValueError(f"no layer of this model can be written at either fact token:\n{pd.concat(tables).to_string()}")


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
