"""The MQuAKE evaluation protocol: edit each case's facts, ask its questions, undo.

For every case (its k = 1..4 `requested_rewrite`s applied at once with one method, then undone):

* multi-hop accuracy — the case counts if *any* of its question paraphrases yields `new_answer` or an
  alias (MQuAKE's definition); with `cot=True` the question is asked chain-of-thought and the committed
  answer is read off;
* efficacy — fraction of the case's edits whose cloze prompt (`prompt.format(subject)`) is now
  continued with `target_new` by greedy decoding (MQuAKE's edit-wise success: the new object is the
  model's top-1 answer, aliases of the new object not counted); `efficacy_prob` — the CounterFact
  efficacy score of ROME/MEMIT: fraction whose mean per-token log-probability of `target_new` exceeds
  that of `target_true` on the same prompt (a weaker criterion: p(new) > p(true) also holds when a third
  answer stays on top);
* paraphrase — fraction of the edited hops whose *question* form (`new_single_hops`) yields the new
  answer (asked few-shot, as the single-hop demonstrations show);
* specificity — of the unrelated facts of the edited relations (other cases' single hops, not about
  this case's subjects) that the unedited model answers correctly, the fraction still answered after
  the edit;
* base — the unedited model's multi-hop accuracy against the *original* answers (`method=None`).

Results come back as one row per case (`evaluate` → `EvalResult.per_case`) and a summary by method,
number of edits and hops; `EvalResult.to_csv` writes both.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from ace_interp.data.mquake import MQuAKECase
from ace_interp.data.prompts import (
    Demonstration,
    case_entities,
    demonstrations_for_case,
    few_shot_prompt,
    multi_hop_prompts,
    real_demonstrations,
    single_hop_demonstrations,
)
from ace_interp.editing import AppliedEdit, EditRequest, HopPrompt, SideEffectMonitor, edit
from ace_interp.evaluation.answers import (
    answer_matches,
    check_answers,
    cot_final_answer,
    generate_greedy,
    target_scores,
    target_token_ids,
)

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- how a model is asked


@dataclass
class PromptStyle:
    """How questions are put to a model.

    multi_hop(case, cot) -> one prompt per question paraphrase; single_hop(question) -> a prompt whose
    continuation is the answer; cot_answer(generation) -> the answer a chain-of-thought commits to.
    """

    name: str
    multi_hop: Callable[[MQuAKECase, bool], list[str]]
    single_hop: Callable[[str], str]
    supports_cot: bool = True
    max_new_tokens: int = 8
    cot_max_new_tokens: int = 64
    cot_answer: Callable[[str], str] = cot_final_answer


def few_shot_style(
    pool: Sequence[Demonstration] | None = None, k: int = 4, out_of_distribution: bool = False
) -> PromptStyle:
    """Real models (SmolLM2, hub models): few-shot Q/A with the project's demonstrations.

    `out_of_distribution=True` draws the demonstrations from relations other than the case's (the
    chain-of-thought robustness setting)."""
    pool = list(real_demonstrations() if pool is None else pool)
    hop_demos = single_hop_demonstrations()
    return PromptStyle(
        name="few-shot" + ("-ood" if out_of_distribution else ""),
        multi_hop=lambda case, cot: multi_hop_prompts(case, pool, k, cot, out_of_distribution),
        single_hop=lambda q: few_shot_prompt(q, hop_demos),
    )


def _last_step_answer(generation: str) -> str:
    """The toy world's chain of thought ends "... the capital of france is paris ." -> "paris"."""
    steps = [step.strip() for step in generation.split(" .") if step.strip()]
    return steps[-1].split()[-1] if steps else ""


def toy_world_style() -> PromptStyle:
    """Synthetic-world models: questions exactly as trained (zero-shot); chain of thought appends
    "step by step :" to the question frames and reads the last step's object."""
    from ace_interp.data.world import cot_prompt

    def multi_hop(case: MQuAKECase, cot: bool) -> list[str]:
        if not cot:
            return list(case.questions)
        return [cot_prompt(q) for q in case.questions if q.startswith("Q:")]

    return PromptStyle("toy-world", multi_hop, single_hop=lambda q: q, max_new_tokens=3,
                       cot_max_new_tokens=48, cot_answer=_last_step_answer)


def is_toy_name(model_name: str | Path) -> bool:
    """A synthetic-world toy model, by name: "toy-gptj", or a folder whose name starts with "toy-"."""
    return Path(str(model_name)).name.startswith("toy-")


def style_for(model_name: str, out_of_distribution: bool = False) -> PromptStyle:
    """The prompt style of a named model (toy models: as trained; real models: few-shot)."""
    return toy_world_style() if is_toy_name(model_name) else few_shot_style(out_of_distribution=out_of_distribution)


# ----------------------------------------------------------------------------- one case


def case_requests(case: MQuAKECase) -> list[EditRequest]:
    return [EditRequest.from_rewrite(rw.to_dict(), case_id=case.case_id) for rw in case.requested_rewrite]


def edited_hop_indices(case: MQuAKECase) -> list[int]:
    """Indices of the hops of the *new* chain that are edited facts (matched by Wikidata triple)."""
    edits = [tuple(t) for t in case.orig.edit_triples]
    return [i for i, t in enumerate(case.orig.new_triples) if tuple(t) in edits]


@dataclass
class SpecificityPool:
    """Unrelated single-hop facts, keyed by relation id, each with whether the unedited model knows it."""

    facts: dict[str, list[dict]] = field(default_factory=dict)  # relation -> [{cloze, answers, subject, known}]

    @classmethod
    def from_cases(cls, cases: Sequence[MQuAKECase]) -> "SpecificityPool":
        pool: dict[str, dict[str, dict]] = {}
        for case in cases:
            for hop, triple, labels in zip(case.single_hops, case.orig.triples, case.orig.triples_labeled):
                pool.setdefault(triple[1], {})[hop.cloze] = {
                    "cloze": hop.cloze, "answers": hop.answers, "subject": labels[0], "known": None,
                }
        return cls({r: list(d.values()) for r, d in pool.items()})

    def sample(self, case: MQuAKECase, n: int, seed: int) -> list[dict]:
        """Up to n facts of the case's edited relations that do not involve the case's entities."""
        relations = [rw.relation_id for rw in case.requested_rewrite]
        entities = {x.lower() for x in case_entities(case)}
        candidates = [
            f for r in dict.fromkeys(relations) for f in self.facts.get(r, [])
            if f["subject"].lower() not in entities and not ({a.lower() for a in f["answers"]} & entities)
        ]
        random.Random(seed).shuffle(candidates)
        return candidates[:n]


def _check(bridge, prompts, answers, style: PromptStyle, cot: bool = False) -> list[bool]:
    """Greedy answers to `prompts`, each checked against its accepted answers."""
    if not prompts:
        return []
    if not cot:
        return check_answers(bridge, prompts, answers, style.max_new_tokens)[0]
    gens = generate_greedy(bridge, prompts, style.cot_max_new_tokens, stop_at_newline=False)
    return [answer_matches(style.cot_answer(g), a) for g, a in zip(gens, answers)]


def evaluate_case(
    bridge: TransformerBridge,
    case: MQuAKECase,
    method: str | None,
    style: PromptStyle,
    specificity: list[dict] = (),
    hparams: object | None = None,
    cot: bool = False,
    hop_prompts: Callable[[MQuAKECase], list[HopPrompt]] | None = None,
    monitor: SideEffectMonitor | None = None,
) -> dict:
    """Edit (unless `method` is None), measure, undo. Returns one row of metrics.

    With a `monitor` (`editing.SideEffectMonitor`) the edited model's untouched known facts and perplexity are
    checked too (columns `untouched_known`, `perplexity`, `side_effect_alarms`; its warnings name the case)."""
    row = {"case_id": case.case_id, "method": method or "base", "n_edits": case.n_edits, "n_hops": case.n_hops,
           "cot": cot, "style": style.name}
    applied: AppliedEdit | None = None
    if method is not None:
        kwargs = {"hop_prompts": hop_prompts(case)} if (hop_prompts is not None and method == "ace") else {}
        applied = edit(bridge, case_requests(case), method, hparams, **kwargs)
        row["edit_seconds"] = applied.seconds
        if monitor is not None:
            monitor.edited_subjects = {r.subject for r in applied.requests}  # each case starts from the unedited model
            monitor.n_edits = 1
            reading = monitor.check()
            row.update(untouched_known=reading.accuracy, perplexity=reading.perplexity,
                       side_effect_alarms=len(reading.alarms))
    try:
        answers = case.new_answers if method is not None else case.answers
        prompts = style.multi_hop(case, cot)
        row["multi_hop"] = float(any(_check(bridge, prompts, [answers] * len(prompts), style, cot)))
        if method is not None:
            top1, prob = edit_efficacy(bridge, case.requested_rewrite, style)
            row["efficacy"], row["efficacy_prob"] = _mean(top1), _mean(prob)
            hops = [case.new_single_hops[i] for i in edited_hop_indices(case)]
            row["paraphrase"] = _mean(_check(bridge, [style.single_hop(h.question) for h in hops],
                                             [h.answers for h in hops], style))
            known = [f for f in specificity if f["known"]]
            row["specificity"] = _mean(_check(bridge, [f["cloze"] for f in known], [f["answers"] for f in known], style))
            row["n_specificity"] = len(known)
    finally:
        if applied is not None:
            applied.undo()
    return row


def edit_efficacy(bridge: TransformerBridge, rewrites, style: PromptStyle) -> tuple[list[bool], list[bool]]:
    """Per rewrite (an `mquake.Rewrite`): (greedy continuation of its cloze prompt names target_new,
    p(target_new) > p(target_true)) — the `efficacy` and `efficacy_prob` columns."""
    rewrites = list(rewrites)
    top1 = _check(bridge, [rw.prompt_text() for rw in rewrites], [[rw.target_new.text] for rw in rewrites], style)
    return top1, new_beats_true(bridge, rewrites)


def new_beats_true(bridge: TransformerBridge, rewrites) -> list[bool]:
    """Per rewrite: mean log p(target_new token | prompt, earlier tokens) > the same for target_true
    (ROME/MEMIT's CounterFact efficacy score, per-token mean as in their `test_batch_prediction`)."""
    if not rewrites:
        return []
    prompts = [rw.prompt_text() for rw in rewrites]
    targets = [rw.target_new.text for rw in rewrites] + [rw.target_true.text for rw in rewrites]
    log_prob = target_scores(bridge, prompts + prompts, targets)["log_prob"]
    per_token = log_prob / torch.tensor([len(target_token_ids(bridge, t)) for t in targets], dtype=log_prob.dtype)
    n = len(rewrites)
    return [bool(per_token[i] > per_token[n + i]) for i in range(n)]


def _mean(xs: Sequence[bool]) -> float:
    return float(sum(xs) / len(xs)) if xs else float("nan")


# ----------------------------------------------------------------------------- many cases


@dataclass
class EvalResult:
    per_case: pd.DataFrame

    @property
    def summary(self) -> pd.DataFrame:
        """Means by method, chain-of-thought flag and number of edits (and 'all')."""
        metrics = [c for c in ("multi_hop", "efficacy", "efficacy_prob", "paraphrase", "specificity", "untouched_known",
                               "perplexity", "edit_seconds") if c in self.per_case]
        df = self.per_case
        by_edits = df.groupby(["method", "cot", "n_edits"])[metrics].mean().reset_index()
        overall = df.groupby(["method", "cot"])[metrics].mean().reset_index().assign(n_edits="all")
        counts = pd.concat([df.groupby(["method", "cot", "n_edits"]).size().reset_index(name="n_cases"),
                            df.groupby(["method", "cot"]).size().reset_index(name="n_cases").assign(n_edits="all")])
        out = pd.concat([by_edits, overall], ignore_index=True)
        out["n_edits"] = out["n_edits"].astype(str)
        counts["n_edits"] = counts["n_edits"].astype(str)
        return out.merge(counts, on=["method", "cot", "n_edits"])

    def by_hops(self) -> pd.DataFrame:
        return self.per_case.groupby(["method", "cot", "n_hops"])["multi_hop"].agg(["mean", "size"]).reset_index()

    def to_csv(self, folder: str | Path, prefix: str = "") -> list[Path]:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = [folder / f"{prefix}per_case.csv", folder / f"{prefix}summary.csv"]
        self.per_case.to_csv(paths[0], index=False)
        self.summary.to_csv(paths[1], index=False)
        return paths


def mark_known_specificity(bridge: TransformerBridge, pool: SpecificityPool, style: PromptStyle, facts: list[dict]) -> None:
    """Ask the unedited model each fact once (in place: sets `known`)."""
    todo = [f for f in facts if f["known"] is None]
    for f, ok in zip(todo, _check(bridge, [f["cloze"] for f in todo], [f["answers"] for f in todo], style)):
        f["known"] = ok


def evaluate(
    bridge: TransformerBridge,
    cases: Sequence[MQuAKECase],
    methods: Sequence[str | None],
    style: PromptStyle | None = None,
    cot: bool = False,
    n_specificity: int = 5,
    hparams: dict[str, object] | None = None,
    hop_prompts: Callable[[MQuAKECase], list[HopPrompt]] | None = None,
    seed: int = 0,
    progress: bool = True,
    monitor: SideEffectMonitor | None = None,
) -> EvalResult:
    """Evaluate each method (None = the unedited base model) on every case; see the module docstring."""
    style = style or few_shot_style()
    if cot and not style.supports_cot:
        raise ValueError(f"prompt style {style.name!r} has no chain-of-thought form")
    pool = SpecificityPool.from_cases(cases)
    samples = {c.case_id: pool.sample(c, n_specificity, seed) for c in cases}
    if any(m is not None for m in methods):
        mark_known_specificity(bridge, pool, style, [f for s in samples.values() for f in s])
    rows = []
    bar = tqdm(total=len(cases) * len(methods), desc="evaluate", disable=not progress)
    for method in methods:
        for case in cases:
            hp = (hparams or {}).get(method) if method else None
            rows.append(evaluate_case(bridge, case, method, style, samples[case.case_id], hp, cot, hop_prompts, monitor))
            bar.update()
    bar.close()
    return EvalResult(pd.DataFrame(rows))
