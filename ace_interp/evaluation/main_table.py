"""The main table: Base, FT, ROME, MEMIT, PMET, ACE × 1/2/3/4 edits on each model's case set.

`ace main-table` (this module's `run_main_table`) evaluates every method on a per-model sample of cases
(balanced over the number of edits), writes `results/<model>/{per_case,summary}.csv`, a combined
`results/main_table.md`, and rewrites the README's results section between its markers. ACE's layer
ablations (skip the top-1 query layer, the top-1..3 query layers, the top-1 value layer, the top-1..2
value layers), its options (`ace +implicit`: the implicit-subject write, off in ACE's defaults) and the
chain-of-thought out-of-distribution-demonstration setting run in the same command.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
from transformer_lens.model_bridge import TransformerBridge

from ace_interp.data.mquake import MQuAKECase, load_mquake
from ace_interp.editing import default_hparams, implicit_subject_layers
from ace_interp.editing.hparams import HParams
from ace_interp.evaluation.hops import hop_prompts_for
from ace_interp.evaluation.protocol import EvalResult, evaluate, model_style
from ace_interp.evaluation.stats import sign_test
from ace_interp.model import load_model, model_state

log = logging.getLogger(__name__)

METHODS: tuple[str | None, ...] = (None, "ft", "rome", "memit", "pmet", "ace")
README_BEGIN, README_END = "<!-- main-table:begin -->", "<!-- main-table:end -->"


def sample_by_edits(cases: Sequence[MQuAKECase], per_edits: int, seed: int = 0) -> list[MQuAKECase]:
    """Up to `per_edits` cases for each number of edits (1..4), seeded."""
    rng = random.Random(seed)
    out = []
    for k in sorted({c.n_edits for c in cases}):
        group = [c for c in cases if c.n_edits == k]
        rng.shuffle(group)
        out += group[:per_edits]
    return out


def ace_ablation_hparams(bridge, skip: str):
    """ACE (default groups) with layers removed: 'q1' top-1 query layer, 'q1-3' the top three,
    'v1' the top-1 value layer, 'v1-2' the top two. 'Top' = the group's layer that ranks best by
    attribution; for the fixed paper groups we take the query layer nearest the value group and the
    last value layer (where z is computed) as the top ones. Raises ValueError where no value layer
    would be left (the toys' value group is one layer)."""
    hp = default_hparams("ace", bridge)
    q, v = list(hp.query_layers), list(hp.value_layers)
    drop_q = {"q1": 1, "q1-3": 3}.get(skip, 0)
    drop_v = {"v1": 1, "v1-2": 2}.get(skip, 0)
    q = q[: len(q) - drop_q] if drop_q else q
    v = v[: len(v) - drop_v] if drop_v else v
    if not v:
        raise ValueError(f"skipping {skip} leaves no value layer")
    return replace(hp, query_layers=tuple(q), value_layers=tuple(v))


ACE_VARIANTS = ("implicit",)


def ace_variant_hparams(bridge, variant: str):
    """ACE's defaults with one of its options switched on: 'implicit' is the implicit-subject write at
    `implicit_subject_layers(bridge)` (docs/ace.md, "The implicit subject")."""
    if variant == "implicit":
        return default_hparams("ace", bridge, implicit_layers=implicit_subject_layers(bridge))
    raise ValueError(f"unknown ACE variant {variant!r}; expected one of {ACE_VARIANTS}")


def ace_extra_rows(bridge, config: "TableConfig") -> list[tuple[str, object]]:
    """(row label, ACE hyper-parameters) for the table's ACE ablations ('ace -q1') and variants ('ace +implicit');
    an ablation that leaves no layer to write is logged and left out."""
    rows = []
    for skip in config.ablations:
        try:
            rows.append((f"ace -{skip}", ace_ablation_hparams(bridge, skip)))
        except ValueError as err:
            log.warning("ACE ablation -%s not run: %s", skip, err)
    return rows + [(f"ace +{v}", ace_variant_hparams(bridge, v)) for v in config.ace_variants]


@dataclass
class TableConfig:
    models: tuple[str, ...] = ("smollm2-135m", "toy-gptj", "toy-qwen3")
    methods: tuple[str | None, ...] = METHODS
    per_edits: int = 6
    n_specificity: int = 5
    ablations: tuple[str, ...] = ("q1", "q1-3", "v1", "v1-2")
    ace_variants: tuple[str, ...] = ACE_VARIANTS  # ACE with an option on, a row each (direct prompting)
    cot: bool = True
    cot_methods: tuple[str | None, ...] = (None, "pmet", "ace")  # the chain-of-thought rows (None: the unedited model)
    seeds: tuple[int, ...] = (0,)
    out: Path = Path("results")
    # (method, bridge) -> the method's hyper-parameters, or None for `default_hparams`; for the table's
    # methods and their chain-of-thought rows (ACE's layer ablations and variants start from the defaults)
    hparams: Callable[[str, TransformerBridge], HParams | None] | None = None


def evaluate_model(model_name: str, cases_path: Path, config: TableConfig) -> pd.DataFrame:
    """Every method, ablation and prompting setting on the model's cases, once per seed (the seed draws
    the cases and the specificity facts); per-case rows with a `seed` column."""
    bridge = load_model(model_name)
    style = model_style(bridge)
    # ACE's query write trains on multi-hop prompts the cases do not ask (evaluation.hops)
    hops = hop_prompts_for(bridge, cases_path)
    all_cases = load_mquake(cases_path)
    frames = []
    for seed in config.seeds:
        cases = sample_by_edits(all_cases, config.per_edits, seed)
        log.info("%s, seed %d: %d cases (%s edits)", model_name, seed, len(cases), sorted({c.n_edits for c in cases}))
        frames.append(_evaluate_seed(bridge, model_name, cases, style, hops, config, seed).assign(seed=seed))
    per_case = add_edited_hops(pd.concat(frames, ignore_index=True).assign(model=model_name), all_cases)
    EvalResult(per_case).to_csv(config.out / Path(model_name).name)
    return per_case


def _evaluate_seed(bridge, model_name, cases, style, hops, config: TableConfig, seed: int) -> pd.DataFrame:
    chosen = {m: config.hparams(m, bridge) for m in config.methods if m} if config.hparams else {}
    chosen = {m: hp for m, hp in chosen.items() if hp is not None}
    frames = [evaluate(bridge, cases, list(config.methods), style, n_specificity=config.n_specificity,
                       hparams=chosen, hop_prompts=hops, seed=seed).per_case]
    for label, ace_hparams in ace_extra_rows(bridge, config):
        res = evaluate(bridge, cases, ["ace"], style, n_specificity=config.n_specificity,
                       hparams={"ace": ace_hparams}, hop_prompts=hops, seed=seed)
        frames.append(res.per_case.assign(method=label))
    if config.cot and style.supports_cot:
        for ood in (False, True):
            is_toy = model_state(bridge).is_toy
            cot_style = model_style(bridge, out_of_distribution=ood) if not is_toy else style
            if ood and is_toy:
                continue  # toy models are asked zero-shot: there are no demonstrations to swap
            res = evaluate(bridge, cases, list(config.cot_methods), cot_style, cot=True, n_specificity=0,
                           hparams=chosen, hop_prompts=hops, seed=seed)
            frames.append(res.per_case.assign(method=lambda d, ood=ood: d.method + (" CoT-OOD" if ood else " CoT")))
    return pd.concat(frames, ignore_index=True)


def advantage_table(per_case: pd.DataFrame, methods: Sequence[str] = ("ace",), baseline: str = "pmet") -> str:
    """Multi-hop accuracy of each of `methods` minus `baseline` per model: each seed's difference, their mean and
    standard deviation (pooled over the numbers of edits), and the case-seeds only one of the two answers with
    their sign test; direct, chain-of-thought, and chain-of-thought with out-of-distribution demonstrations."""
    rows = []
    for model, df in per_case.groupby("model", sort=False):
        for method in methods:
            for suffix, prompting in (("", "direct"), (" CoT", "chain of thought"),
                                      (" CoT-OOD", "chain of thought, other relations' demonstrations")):
                a, b = df[df.method == method + suffix], df[df.method == baseline + suffix]
                if a.empty or b.empty:
                    continue
                diffs = (a.groupby("seed").multi_hop.mean() - b.groupby("seed").multi_hop.mean()).dropna()
                paired = paired_comparison(pd.concat([a, b]), method + suffix, baseline + suffix)
                rows.append({
                    "model": model, "method": method, "prompting": prompting,
                    f"− {baseline} (multi-hop)": f"{diffs.mean():+.1%} ± {diffs.std(ddof=1) if len(diffs) > 1 else 0:.1%}",
                    "per seed": ", ".join(f"{d:+.1%}" for d in diffs),
                    f"only it / only {baseline}": f"{paired['only ' + method + suffix]} / {paired['only ' + baseline + suffix]}",
                    "sign-test p": f"{paired['sign-test p']:.2g}",
                    "seeds": len(diffs), "cases per seed": len(a) // max(1, len(diffs)),
                })
    return pd.DataFrame(rows).to_markdown(index=False) if rows else ""


def paired_comparison(per_case: pd.DataFrame, method: str, baseline: str) -> dict:
    """Multi-hop answers of `method` against `baseline` on the same cases (per case and seed, where the rows
    have a seed): how many only one of them answers, the mean difference, and the sign test of the two counts."""
    index = ["case_id", "seed"] if "seed" in per_case else "case_id"
    wide = per_case.pivot_table(index=index, columns="method", values="multi_hop")
    wins = int(((wide[method] > 0) & (wide[baseline] == 0)).sum())
    losses = int(((wide[method] == 0) & (wide[baseline] > 0)).sum())
    return {"cases": len(wide), "only " + method: wins, "only " + baseline: losses,
            "difference": float((wide[method] - wide[baseline]).mean()), "sign-test p": sign_test(wins, losses)}


def add_edited_hops(per_case: pd.DataFrame, cases: Sequence[MQuAKECase]) -> pd.DataFrame:
    """Add `edited_hops` ("0", "1", "0+1", ...): the hops of each case's chain its rewrites edit (0 = the
    question's own subject, >= 1 = a bridge entity the question never names; `MQuAKECase.edited_hops`)."""
    hops = {str(c.case_id): "+".join("?" if h is None else str(h) for h in c.edited_hops) for c in cases}
    return per_case.assign(edited_hops=per_case.case_id.astype(str).map(hops))


def edited_hop_table(per_case: pd.DataFrame) -> str:
    """Multi-hop accuracy of the one-edit cases, split by the edited hop: the question's own subject (hop 0)
    vs a later hop, whose subject is an implicit bridge entity (analysis.edit_reach says why it matters)."""
    one = per_case[(per_case.n_edits == 1) & per_case.edited_hops.notna()]
    if one.empty:
        return ""
    rows = []
    for (model, method), df in one.groupby(["model", "method"], sort=False):
        first, later = df[df.edited_hops == "0"], df[df.edited_hops != "0"]
        rows.append({"model": model, "method": method,
                     "MH, hop-0 edit": f"{first.multi_hop.mean():.0%} (n={len(first)})" if len(first) else "–",
                     "MH, later-hop edit": f"{later.multi_hop.mean():.0%} (n={len(later)})" if len(later) else "–"})
    return pd.DataFrame(rows).to_markdown(index=False)


def markdown_table(per_case: pd.DataFrame) -> str:
    """One row per (model, method): multi-hop accuracy by number of edits, then efficacy (greedy top-1),
    efficacy_prob (p(new) > p(true)), paraphrase, specificity."""
    rows = []
    for (model, method), df in per_case.groupby(["model", "method"], sort=False):
        row = {"model": model, "method": method}
        for k in sorted(df.n_edits.unique()):
            sub = df[df.n_edits == k]
            row[f"MH {k}-edit"] = f"{sub.multi_hop.mean():.0%} (n={len(sub)})"
        row["MH all"] = f"{df.multi_hop.mean():.0%}"
        for metric in ("efficacy", "efficacy_prob", "paraphrase", "specificity"):
            row[metric] = f"{df[metric].mean():.0%}" if metric in df and df[metric].notna().any() else "–"
        if "edit_seconds" in df and df.edit_seconds.notna().any():
            row["s/edit"] = f"{df.edit_seconds.mean():.1f}"
        rows.append(row)
    return pd.DataFrame(rows).fillna("–").to_markdown(index=False)


def update_readme(readme: Path, table: str, command: str) -> None:
    text = readme.read_text()
    block = f"{README_BEGIN}\n_Regenerate with `{command}`._\n\n{table}\n{README_END}"
    if README_BEGIN in text and README_END in text:
        start, end = text.index(README_BEGIN), text.index(README_END) + len(README_END)
        text = text[:start] + block + text[end:]
    else:
        text += f"\n## Main table (MQuAKE protocol)\n\n{block}\n"
    readme.write_text(text)


def table_report(per_case: pd.DataFrame, seeds: Sequence[int]) -> str:
    """The main table's markdown: the table, ACE's advantage over PMET, and the one-edit cases by edited hop."""
    table = markdown_table(per_case)
    # ACE and its variants ('ace +implicit'), not its ablations
    aces = [m for m in per_case.method.unique() if m == "ace" or m.startswith("ace +")]
    advantage = advantage_table(per_case, methods=aces)
    if advantage:
        table += f"\n\nACE's multi-hop advantage over PMET (mean ± s.d. over seeds {list(seeds)}):\n\n{advantage}"
    by_hop = edited_hop_table(per_case)
    if by_hop:
        table += f"\n\nOne-edit cases by the hop their rewrite edits (0: the question's subject; later: a bridge entity):\n\n{by_hop}"
    return table


def run_main_table(config: TableConfig, cases: dict[str, Path], readme: Path | None, command: str) -> str:
    frames = [evaluate_model(m, cases[m], config) for m in config.models]
    per_case = pd.concat(frames, ignore_index=True)
    table = table_report(per_case, config.seeds)
    config.out.mkdir(parents=True, exist_ok=True)
    (config.out / "main_table.md").write_text(table + "\n")
    per_case.to_csv(config.out / "main_table_per_case.csv", index=False)
    if readme is not None:
        update_readme(readme, table, command)
    return table
