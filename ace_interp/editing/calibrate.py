"""Where can a model's facts be written? Trial edits on the model's own facts, for the presets.

    import ace_interp as ai
    from ace_interp.editing.calibrate import cached_fact_sites
    bridge = ai.load_model("toy-qwen3")
    sites = cached_fact_sites(bridge, probe)     # probe: the model's ROME settings (`presets.default_hparams`)
    sites.fact_token, sites.usable_layers        # ('subject_last', (0, 1, 2))
    sites.table        # DataFrame: layer, fact_token, efficacy, keep, bleed, subject_share, usable

Every editor keys on one token of the prompt (ROME's `fact_token`): the subject's last token in the papers'
releases, or the prompt's last token (ROME's other strategy). Per (fact token, layer) we write trial edits — each a
counterfactual of a fact the model knows (another answer of the same prompt template), written alone with ROME at
that site and undone — and measure what the presets are asked to deliver:

* **efficacy** — the share of trial edits whose new answer is the greedy one after the write;
* **keep** — the share of other subjects' known facts of the same template (up to `N_NEIGHBOURS` per trial) still
  answered after the write: the neighbours a write keyed on that token would disturb first.

A site is usable where efficacy ≥ `MIN_EFFICACY` and keep ≥ `MIN_KEEP`; the fact token is "subject_last" where it has
a usable layer, else "last" (`choose_sites`); `presets.with_fact_sites` then moves each written layer group onto
usable layers. For reading, the table also holds the key statistics' **bleed** — a key-value write
Δ = C⁻¹k rᵀ / (kᵀC⁻¹k) moves another key k' by (k'ᵀC⁻¹k)/(kᵀC⁻¹k) of r; the median over same-template pairs — and
`subject_share`, the part of the keys' energy that changes when only the subject changes: they say *why* a site
keeps little. Why trial edits (docs/findings/2026-12-07-fact-token-calibration.md): the first version judged a site
by bleed and by whether a free δ there reaches trial targets; on a held-out 3-layer GPT-J toy a δ at the subject's
token of layer 0 reached 15 of 16 targets but the covariance-regularised write realised 77%, and on a held-out
qwen3 toy bleed did not predict the specificity the writes lost.
"""

from __future__ import annotations

import hashlib
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
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from ace_interp.editing.covariance import TextCorpus, model_id, second_moments
from ace_interp.editing.hparams import ROMEHParams
from ace_interp.editing.keys import FACT_TOKENS, build_batch, capture_input, hf_runner, hooks, run_until, sampled_contexts
from ace_interp.editing.requests import EditRequest
from ace_interp.editing.rome import rome_updates
from ace_interp.editing.solver import regularised_cholesky
from ace_interp.editing.verify import check_requests
from ace_interp.model.cachefiles import atomic_path, file_lock
from ace_interp.model.loading import cache_dir
from ace_interp.model.state import model_state
from ace_interp.model.weights import apply_weight_updates
from ace_interp.provenance import jsonable

log = logging.getLogger(__name__)

# The bars a preset is asked to meet are efficacy ≥ 95% and specificity ≥ 90% (issue #23): a site that misses one
# trial edit in ten cannot be expected to meet the first. Keep asks the neighbours a write disturbs first (same
# template, other subjects), and MEMIT / PMET spread a write over several such sites: 0.9 let a qwen3 toy's
# last-token layer 0 (keep 0.91) into MEMIT / PMET writes that had kept 90% / 76% of facts there before, so the
# bound is 0.95 (the sites of the shipped toys keep ≥ 0.988). Set on the design toys of world seeds 11–14; measured
# on toys of new seeds (docs/findings/2026-12-07-fact-token-calibration.md).
MIN_EFFICACY = 0.9
MIN_KEEP = 0.95
N_NEIGHBOURS = 8  # same-template facts of other subjects asked after each trial write
CALIBRATION_VERSION = 2  # in the cache key: 1 judged sites by bleed and a δ-only reach


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
    factors: dict[int, Tensor],
    fact_tokens: Sequence[str] = FACT_TOKENS,
) -> pd.DataFrame:
    """One row per (layer, fact_token): `subject_share` and the median `bleed` (module docstring) over the
    facts' same-template pairs; `factors`: the Cholesky factor of each layer's key statistics C, as the editors
    use them (`statistics_factors`)."""
    layers = list(range(bridge.cfg.n_layers))
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


def trial_writes(
    bridge: TransformerBridge,
    trials: Sequence[EditRequest],
    neighbours: Sequence[Sequence[EditRequest]],
    probe: ROMEHParams,
    contexts: Sequence[str],
) -> tuple[float, float]:
    """(efficacy, keep) of writing each trial alone with ROME at `probe`'s layer and fact token, each undone before
    the next: the share of trials answered with their new target, and the share of each trial's `neighbours`
    (facts the model knows) still answered."""
    hits, kept, asked = 0, 0, 0
    for trial, near in zip(trials, neighbours, strict=True):
        written = apply_weight_updates(bridge, rome_updates(bridge, [trial], probe, contexts).updates,
                                       label="calibration trial")
        try:
            checks = check_requests(bridge, [trial, *near]).checks
        finally:
            written.undo()
        hits += checks[0].success
        kept += sum(c.success for c in checks[1:])
        asked += len(checks) - 1
    return hits / max(len(trials), 1), kept / max(asked, 1)


@dataclass
class FactSiteCalibration:
    """Where this model's facts can be written: `fact_token` and the layers usable there (module docstring)."""

    fact_token: str
    usable_layers: tuple[int, ...]
    table: pd.DataFrame  # layer, fact_token, efficacy, keep, bleed, subject_share, usable

    def nearest_usable(self, layer: int) -> int:
        """The usable layer closest to `layer` (the later one on a tie)."""
        return min(self.usable_layers, key=lambda l: (abs(l - layer), -l))

    def layers(self, wanted: Sequence[int]) -> tuple[int, ...]:
        """`wanted` without its unusable layers; if none is left, the usable layer nearest the last wanted."""
        kept = tuple(l for l in wanted if l in self.usable_layers)
        return kept if kept or not wanted else (self.nearest_usable(max(wanted)),)


def calibrate_fact_sites(
    bridge: TransformerBridge,
    probe: ROMEHParams,
    facts: Sequence[EditRequest] | None = None,
    n_facts: int = 128,
    n_trials: int = 32,
    seed: int = 0,
) -> FactSiteCalibration:
    """Trial-write every (fact_token, layer) on the model's own facts and choose where to write.

    `probe`: the ROME settings of the trial writes (the model's preset; its layer and fact token are replaced per
    site, its covariance also gives the bleed's C). A site is usable where efficacy ≥ `MIN_EFFICACY` and keep ≥
    `MIN_KEEP`. The fact token is "subject_last" (the references') if any layer is usable there, else "last"
    (measured only then); `ValueError` if neither has one. facts: facts to draw trials and neighbours from (default:
    `known_world_facts`, which needs a synthetic world); only those the model answers are used."""
    facts = list(known_world_facts(bridge, n_facts, seed) if facts is None else facts)
    facts = [c.request for c in check_requests(bridge, facts).checks if c.success] if facts else []
    if not facts:
        raise ValueError("no known facts to calibrate on: this model carries no synthetic world; pass facts=")
    trials = counterfactual_trials(facts, n_trials, seed)
    neighbours = [[f for f in facts if f.prompt == t.prompt and f.subject != t.subject][:N_NEIGHBOURS] for t in trials]
    contexts = sampled_contexts(bridge, probe.target)
    layers = list(range(bridge.cfg.n_layers))
    factors = statistics_factors(bridge, probe.covariance.corpus, probe.covariance.n_tokens)  # for both tokens
    tables = []
    for token in FACT_TOKENS:
        table = fact_sites(bridge, facts, factors, fact_tokens=(token,))
        measured = [trial_writes(bridge, trials, neighbours,
                                 replace(probe, layer=l, target=replace(probe.target, fact_token=token)), contexts)
                    for l in tqdm(layers, desc=f"fact sites ({token})", leave=False)]
        table["efficacy"], table["keep"] = [m[0] for m in measured], [m[1] for m in measured]
        tables.append(table)
        sites = choose_sites(pd.concat(tables, ignore_index=True))
        if sites is not None:
            return sites
    raise ValueError(f"no layer of this model can be written at either fact token:\n{pd.concat(tables).to_string()}")


def choose_sites(table: pd.DataFrame) -> FactSiteCalibration | None:
    """The choice `calibrate_fact_sites` makes from its measurements (layer, fact_token, efficacy, keep, ...):
    the first fact token of `FACT_TOKENS` with a usable layer; None if none has one."""
    table = table.assign(usable=(table["efficacy"] >= MIN_EFFICACY) & (table["keep"] >= MIN_KEEP))
    for token in FACT_TOKENS:
        usable = tuple(int(l) for l in table.loc[table["usable"] & (table["fact_token"] == token), "layer"])
        if usable:
            log.info("fact sites: %s at layers %s", token, usable)
            return FactSiteCalibration(token, usable, table)
    return None


def cached_fact_sites(bridge: TransformerBridge, probe: ROMEHParams) -> FactSiteCalibration:
    """`calibrate_fact_sites` for this model and probe, measured once: kept on the bridge
    (`model_state(bridge).fact_sites`) and on disk beside the key statistics, keyed on the weights as loaded, the
    probe's settings (its corpus by fingerprint), the bounds and `CALIBRATION_VERSION` (`covariance.model_id`; a lock
    and a per-process temporary name make concurrent first use safe). A preset must not change with the edits a
    session has applied since; measured on an edited model, it says so in the log."""
    state = model_state(bridge)
    corpus = probe.covariance.corpus
    unrolled = replace(probe, covariance=replace(probe.covariance, corpus=None))
    settings = json.dumps([jsonable(unrolled), corpus.fingerprint() if corpus is not None else None, MIN_EFFICACY,
                           MIN_KEEP, N_NEIGHBOURS, FACT_TOKENS, CALIBRATION_VERSION], sort_keys=True)
    if settings in state.fact_sites:
        return state.fact_sites[settings]
    digest = hashlib.sha1(settings.encode()).hexdigest()[:12]
    path = cache_dir() / "stats" / model_id(bridge) / f"fact-sites-{digest}.csv"
    with file_lock(path):
        if not path.exists():
            if state.weight_edits:
                log.warning("fact-site calibration measured on a model with %d edits applied", len(state.weight_edits))
            sites = calibrate_fact_sites(bridge, probe)
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
