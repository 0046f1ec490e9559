"""Keep the MQuAKE cases a model knows before editing (as the paper filters MQuAKE).

A case is kept when the unedited model answers every single hop of its original chain and the
multi-hop question (any of its paraphrases, MQuAKE's criterion). A single hop counts as known when
greedy decoding completes its cloze prompt with the answer or an alias (`hop_check="cloze"`), when a
few-shot question gets it (`"question"`), or either (`"either"`, default). The multi-hop question is
asked few-shot (`multi_hop_mode="direct"`, default), with chain-of-thought (`"cot"`), or with the
chain-of-thought prompt as a second chance (`"either"`). Demonstrations never name an entity of the
case. Unique single hops are evaluated once, and multi-hop questions only for cases whose hops all
pass (unless `evaluate_all`), so a filter over a few hundred cases takes minutes on a CPU.

    python -m ace_interp.evaluation.filtering --model smollm2-135m --file ../shared/datasets/MQuAKE-hard.json --out kept.json
    python -m ace_interp.evaluation.filtering --model smollm2-135m --curated --out assets/real_facts/smollm2_known.json
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import pandas as pd
from transformer_lens.model_bridge import TransformerBridge

from ace_interp.data.mquake import MQuAKECase, SingleHop, load_mquake, save_mquake
from ace_interp.data.prompts import (
    COT_MAX_NEW_TOKENS,
    DEFAULT_FORMAT,
    N_DEMONSTRATIONS,
    Demonstration,
    PromptFormat,
    cot_prompt,
    demonstrations_for_case,
    hop_question_prompt,
    few_shot_prompt,
    real_demonstrations,
    single_hop_demonstrations,
)
from ace_interp.evaluation.answers import answer_matches, cot_final_answer, generate_greedy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FilterConfig:
    hop_check: Literal["cloze", "question", "either"] = "either"
    multi_hop_mode: Literal["direct", "cot", "either"] = "direct"
    n_demonstrations: int = N_DEMONSTRATIONS  # the evaluation asks with the same number (data.prompts)
    out_of_distribution: bool = False  # demonstrations from other relations than the case's
    max_new_tokens: int = 8
    cot_max_new_tokens: int = COT_MAX_NEW_TOKENS
    batch_size: int = 32
    evaluate_all: bool = False  # ask multi-hop questions even when a hop is unknown
    progress: bool = False  # progress bars


def _hop_key(h: SingleHop) -> tuple[str, str, tuple[str, ...]]:
    return h.cloze, h.question, tuple(h.answers)


def check_single_hops(
    bridge: TransformerBridge,
    hops: Sequence[SingleHop],
    config: FilterConfig = FilterConfig(),
    demonstrations: Sequence[Demonstration] | None = None,
    fmt: PromptFormat = DEFAULT_FORMAT,
    relation_ids: Sequence[str | None] | None = None,
) -> pd.DataFrame:
    """One row per unique hop: cloze, question, answer, cloze_known, question_known, known, generations.

    Questions are asked with `n_demonstrations - 1` one-hop demonstrations, of the hop's relation
    first when `relation_ids` (one per hop) are given."""
    rels = list(relation_ids) if relation_ids is not None else [None] * len(hops)
    if len(rels) != len(hops):
        raise ValueError(f"{len(rels)} relation ids for {len(hops)} hops")
    relation_of = {}
    for h, r in zip(hops, rels, strict=True):
        relation_of.setdefault(_hop_key(h), r)
    unique = list(relation_of)
    rows = pd.DataFrame({"cloze": [u[0] for u in unique], "question": [u[1] for u in unique], "answers": [list(u[2]) for u in unique]})
    rows["relation_id"] = [relation_of[u] for u in unique]
    rows["answer"] = [a[0] for a in rows["answers"]]
    rows["cloze_known"] = pd.NA
    rows["question_known"] = pd.NA
    rows["cloze_generation"] = None
    rows["question_generation"] = None
    todo = list(range(len(rows)))
    if config.hop_check in ("cloze", "either"):
        gens = generate_greedy(bridge, list(rows["cloze"]), config.max_new_tokens, config.batch_size, progress=config.progress)
        rows["cloze_generation"] = gens
        rows["cloze_known"] = [answer_matches(g, a) for g, a in zip(gens, rows["answers"], strict=True)]
        todo = [i for i in todo if not rows.at[i, "cloze_known"]] if config.hop_check == "either" else []
    if config.hop_check in ("question", "either") and todo:
        pool = list(demonstrations) if demonstrations is not None else single_hop_demonstrations()
        prompts = [
            hop_question_prompt(rows.at[i, "question"], rows.at[i, "answers"], rows.at[i, "relation_id"], pool,
                                config.n_demonstrations - 1, fmt)
            for i in todo
        ]
        gens = generate_greedy(bridge, prompts, config.max_new_tokens, config.batch_size, progress=config.progress)
        for i, g in zip(todo, gens, strict=True):
            rows.at[i, "question_generation"] = g
            rows.at[i, "question_known"] = answer_matches(g, rows.at[i, "answers"])
    known = rows["cloze_known"].fillna(False).astype(bool) | rows["question_known"].fillna(False).astype(bool)
    rows["known"] = known
    return rows


def check_multi_hop(
    bridge: TransformerBridge,
    cases: Sequence[MQuAKECase],
    config: FilterConfig = FilterConfig(),
    demonstrations: Sequence[Demonstration] | None = None,
    fmt: PromptFormat = DEFAULT_FORMAT,
) -> pd.DataFrame:
    """Per case: whether any question paraphrase is answered (direct and/or chain-of-thought).

    Paraphrases are asked in turn, each only for cases not yet answered, so a known case costs one
    generation."""
    pool = list(demonstrations) if demonstrations is not None else real_demonstrations()
    out = pd.DataFrame({"case_id": [c.case_id for c in cases]})
    out["multi_hop_direct"] = pd.NA
    out["multi_hop_cot"] = pd.NA
    out["multi_hop_generation"] = None
    demos = [demonstrations_for_case(c, pool, config.n_demonstrations, config.out_of_distribution) for c in cases]
    modes = {"direct": ["direct"], "cot": ["cot"], "either": ["direct", "cot"]}[config.multi_hop_mode]
    solved = [False] * len(cases)
    for mode in modes:
        col = f"multi_hop_{mode}"
        pending = [i for i in range(len(cases)) if not solved[i]]
        out.loc[pending, col] = False
        n_q = max((len(c.questions) for c in cases), default=0)
        for q in range(n_q):
            batch = [i for i in pending if not solved[i] and q < len(cases[i].questions)]
            if not batch:
                break
            if mode == "direct":
                prompts = [few_shot_prompt(cases[i].questions[q], demos[i], fmt) for i in batch]
                gens = generate_greedy(bridge, prompts, config.max_new_tokens, config.batch_size, progress=config.progress)
                texts = gens
            else:
                prompts = [cot_prompt(cases[i].questions[q], demos[i], fmt) for i in batch]
                gens = generate_greedy(bridge, prompts, config.cot_max_new_tokens, config.batch_size, stop_at_newline=True, progress=config.progress)
                texts = [cot_final_answer(g) for g in gens]
            for i, g, t in zip(batch, gens, texts, strict=True):
                if q == 0 or out.at[i, "multi_hop_generation"] is None:
                    out.at[i, "multi_hop_generation"] = g
                if answer_matches(t, cases[i].answers):
                    solved[i] = True
                    out.at[i, col] = True
                    out.at[i, "multi_hop_generation"] = g
    out["multi_hop_known"] = solved
    return out


def filter_known(
    bridge: TransformerBridge,
    cases: Sequence[MQuAKECase],
    config: FilterConfig = FilterConfig(),
    demonstrations: Sequence[Demonstration] | None = None,
    single_hop_demos: Sequence[Demonstration] | None = None,
    fmt: PromptFormat = DEFAULT_FORMAT,
) -> tuple[list[MQuAKECase], pd.DataFrame]:
    """The cases the model answers fully before editing, and a per-case report.

    Report columns: case_id, n_hops, n_edits, pattern (relation path), hops_known, all_hops_known,
    multi_hop_direct / multi_hop_cot (NA when not asked), multi_hop_known, multi_hop_generation, kept.
    `report.attrs["single_hops"]` holds the per-unique-hop table of `check_single_hops`.
    """
    if not cases:
        raise ValueError("no cases to filter")
    t0 = time.time()
    hop_table = check_single_hops(
        bridge,
        [h for c in cases for h in c.single_hops],
        config,
        single_hop_demos,
        fmt,
        relation_ids=[r for c in cases for r in c.relation_ids],
    )
    known = {(r.cloze, r.question, tuple(r.answers)): bool(r.known) for r in hop_table.itertuples()}
    hops_known = [sum(known[_hop_key(h)] for h in c.single_hops) for c in cases]
    report = pd.DataFrame(
        {
            "case_id": [c.case_id for c in cases],
            "n_hops": [c.n_hops for c in cases],
            "n_edits": [c.n_edits for c in cases],
            "pattern": [">".join(c.relation_ids) for c in cases],
            "hops_known": hops_known,
        }
    )
    report["all_hops_known"] = report["hops_known"] == report["n_hops"]
    ask = [i for i in range(len(cases)) if config.evaluate_all or report.at[i, "all_hops_known"]]
    log.info("single hops: %d/%d known; asking %d multi-hop questions", int(hop_table["known"].sum()), len(hop_table), len(ask))
    report["multi_hop_direct"] = pd.NA
    report["multi_hop_cot"] = pd.NA
    report["multi_hop_known"] = False
    report["multi_hop_generation"] = None
    if ask:
        mh = check_multi_hop(bridge, [cases[i] for i in ask], config, demonstrations, fmt)
        for col in ("multi_hop_direct", "multi_hop_cot", "multi_hop_known", "multi_hop_generation"):
            report.loc[ask, col] = mh[col].to_numpy()
    report["multi_hop_known"] = report["multi_hop_known"].astype(bool)
    report["kept"] = report["all_hops_known"] & report["multi_hop_known"]
    report.attrs["single_hops"] = hop_table
    report.attrs["config"] = asdict(config)
    report.attrs["seconds"] = time.time() - t0
    kept = [c for c, k in zip(cases, report["kept"], strict=True) if k]
    return kept, report


# ----------------------------------------------------------------------------- summaries


def known_facts(cases: Sequence[MQuAKECase], report: pd.DataFrame) -> list[dict]:
    """The single-hop facts the model knows, one record per unique (subject, relation, object)."""
    table = report.attrs["single_hops"]
    known = {(r.cloze, r.question, tuple(r.answers)): bool(r.known) for r in table.itertuples()}
    facts: dict[tuple, dict] = {}
    for c in cases:
        for h, t, tl in zip(c.single_hops, c.orig.triples, c.orig.triples_labeled, strict=True):
            key = (t[0], t[1], t[2])
            if key not in facts and known[_hop_key(h)]:
                facts[key] = {
                    "subject": tl[0],
                    "relation_id": t[1],
                    "relation": tl[1],
                    "object": tl[2],
                    "cloze": h.cloze,
                    "question": h.question,
                    "answer": h.answer,
                    "answer_alias": list(h.answer_alias),
                }
    return list(facts.values())


def summarize(cases: Sequence[MQuAKECase], report: pd.DataFrame) -> dict:
    """Counts per hop number, chain pattern and relation (candidates, kept), plus known single-hop facts."""
    rel_rows = []
    for c, k in zip(cases, report["kept"], strict=True):
        for r in dict.fromkeys(c.relation_ids):
            rel_rows.append({"relation_id": r, "kept": bool(k)})
    rel = pd.DataFrame(rel_rows)
    facts_all = {(t[0], t[1], t[2]) for c in cases for t in c.orig.triples}
    facts = known_facts(cases, report)
    fact_rel = pd.Series([f["relation_id"] for f in facts]).value_counts() if facts else pd.Series(dtype=int)
    all_rel = pd.Series([t[1] for t in facts_all]).value_counts()

    def table(df: pd.DataFrame, by: str) -> dict:
        g = df.groupby(by)["kept"].agg(["size", "sum"])
        return {str(k): {"candidates": int(v["size"]), "kept": int(v["sum"])} for k, v in g.iterrows()}

    return {
        "cases": len(cases),
        "kept": int(report["kept"].sum()),
        "all_hops_known": int(report["all_hops_known"].sum()),
        "multi_hop_known": int(report["multi_hop_known"].sum()),
        "by_hops": table(report, "n_hops"),
        "by_pattern": table(report, "pattern"),
        "cases_by_relation": table(rel, "relation_id"),
        "single_hop_facts": {"total": len(facts_all), "known": len(facts)},
        "single_hop_facts_by_relation": {
            r: {"total": int(all_rel[r]), "known": int(fact_rel.get(r, 0))} for r in sorted(all_rel.index)
        },
        "seconds": round(float(report.attrs.get("seconds", 0.0)), 1),
        "config": report.attrs.get("config", {}),
    }


def format_summary(s: dict) -> str:
    lines = [
        f"cases: {s['cases']}  all single hops known: {s['all_hops_known']}  multi-hop known: {s['multi_hop_known']}  "
        f"KEPT: {s['kept']}",
        f"single-hop facts known: {s['single_hop_facts']['known']} / {s['single_hop_facts']['total']}",
        "kept by hop count:",
        *(f"  {h}-hop: {v['kept']} / {v['candidates']}" for h, v in s["by_hops"].items()),
        "kept by relation (cases containing it):",
        *(f"  {r}: {v['kept']} / {v['candidates']}" for r, v in s["cases_by_relation"].items()),
        "known single-hop facts by relation:",
        *(f"  {r}: {v['known']} / {v['total']}" for r, v in s["single_hop_facts_by_relation"].items()),
        "kept by chain pattern:",
        *(f"  {p}: {v['kept']} / {v['candidates']}" for p, v in s["by_pattern"].items()),
        f"({s['seconds']} s)",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Keep the MQuAKE cases a model answers correctly before editing.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--file", help="MQuAKE-format JSON file (or a MQuAKE name fetched through `datasets`)")
    src.add_argument("--curated", action="store_true", help="the project's curated real-fact candidate cases")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--out", required=True, help="where to write the kept cases (MQuAKE JSON)")
    p.add_argument("--report", help="CSV of the per-case report (default: <out>.report.csv)")
    p.add_argument("--summary", help="JSON summary of the counts (default: <out>.summary.json)")
    p.add_argument("--facts-out", help="JSON list of the known single-hop facts")
    p.add_argument("--limit", type=int, help="only the first N cases")
    p.add_argument("--max-per-pattern", type=int, default=None, help="with --curated: at most N chains per pattern")
    p.add_argument("--all-chains", action="store_true", help="with --curated: ignore the per-pattern caps of chains.json")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is fastest on a crowded machine)")
    p.add_argument("--hop-check", choices=["cloze", "question", "either"], default="either")
    p.add_argument("--mode", choices=["direct", "cot", "either"], default="direct", help="how the multi-hop question is asked")
    p.add_argument("--ood-demos", action="store_true", help="demonstrations from relations other than the case's")
    p.add_argument("--evaluate-all", action="store_true", help="ask multi-hop questions of every case")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default=None)
    p.add_argument("--progress", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from ace_interp.model import load_model

    if a.curated:
        from ace_interp.data.real_facts import generate_cases

        cases = generate_cases(max_per_pattern=a.max_per_pattern, pattern_caps=not a.all_chains)
        source = "curated real facts" + (" (all chains)" if a.all_chains else " (candidate set: chains.json caps)")
        if a.max_per_pattern:
            source += f", at most {a.max_per_pattern} per pattern"
    else:
        cases = load_mquake(a.file)
        source = a.file
    if a.limit:
        cases = cases[: a.limit]
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    bridge = load_model(a.model, device=a.device)
    config = FilterConfig(
        hop_check=a.hop_check,
        multi_hop_mode=a.mode,
        out_of_distribution=a.ood_demos,
        batch_size=a.batch_size,
        evaluate_all=a.evaluate_all,
        progress=a.progress,
    )
    kept, report = filter_known(bridge, cases, config)
    out = Path(a.out)
    save_mquake(kept, out)
    report.drop(columns=[]).to_csv(a.report or out.with_suffix(".report.csv"), index=False)
    summary = {"model": a.model, "source": source, **summarize(cases, report)}
    Path(a.summary or out.with_suffix(".summary.json")).write_text(json.dumps(summary, indent=1) + "\n")
    if a.facts_out:
        Path(a.facts_out).write_text(json.dumps(known_facts(cases, report), indent=1, ensure_ascii=False) + "\n")
    print(f"model {a.model}, {source}")
    print(format_summary(summary))
    print(f"kept cases written to {out}")


if __name__ == "__main__":
    main()
