"""The MQuAKE evaluation protocol, per case: edit each case's facts, ask its questions, undo.

    >>> result = evaluate(bridge, cases, [None, "pmet", "ace"], askings=askings_for(bridge, ("direct", "cot")))
    >>> result.per_case        # one row per (method, case, prompting)

This is the ACE paper's protocol (its released code: filtered cases, each edited alone and restored). The
batched protocol of MQuAKE and MQuAKE-Remastered (the edits of k cases at once) is `evaluation.batched`.

* filtering — before any edit, the unedited model is asked each case's questions once per prompting
  setting (`Asking`); with `known_only` (default) a case is edited and scored only under the settings where the
  unedited model answers it, so every edited column is over cases the model knew (the `base` rows, over all
  cases, say how many that is);
* multi-hop accuracy — the case counts if *any* of its question paraphrases yields `new_answer` or an
  alias (MQuAKE's definition); paraphrases are asked in turn, each only while none has been answered
  (`answered`: the same verdict as asking all three); chain-of-thought settings read the committed answer;
  direct and chain-of-thought are asked of the *same* edited model (one edit per case and method);
* efficacy — fraction of the case's edits whose cloze prompt (`prompt.format(subject)`) is now
  continued with `target_new` by greedy decoding (MQuAKE's edit-wise success: the new object is the
  model's top-1 answer, aliases of the new object not counted); `efficacy_prob` — the CounterFact
  efficacy score of ROME/MEMIT: fraction whose mean per-token log-probability of `target_new` exceeds
  that of `target_true` on the same prompt (a weaker criterion: p(new) > p(true) also holds when a third
  answer stays on top);
* paraphrase — fraction of the edited hops whose *question* form (`new_single_hops`) yields the new
  answer (asked few-shot, with the known-fact filter's one-hop prompt: `data.prompts.hop_question_prompt`);
* specificity — of the unrelated facts of the edited relations (other cases' single hops, not about
  this case's subjects) that the unedited model answers correctly, the fraction still answered after
  the edit;
* ppl_ratio — perplexity of the edited model on a fixed held-out text sample over the unedited model's
  (`evaluation.general_ability`; 1.0 = general text unchanged), when `perplexity_texts` are given;
* base — the unedited model's multi-hop accuracy against the *original* answers (`method=None`), over every case.

Counts next to the fractions (`n_efficacy`, `n_paraphrase`, `n_specificity`) let tables pool them with an
interval (evaluation.stats). Results come back as one row per case and prompting setting
(`evaluate` → `EvalResult.per_case`) and a summary; `EvalResult.to_csv` writes both.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from ace_interp.data.mquake import MQuAKECase
from ace_interp.data.prompts import (
    COT_MAX_NEW_TOKENS,
    N_DEMONSTRATIONS,
    Demonstration,
    case_entities,
    hop_question_prompt,
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
    generate_greedy_each,
    target_scores,
    target_token_ids,
)
from ace_interp.evaluation.checkpoint import Checkpoint, Shard, run_items
from ace_interp.model.likelihood import perplexity
from ace_interp.model.loading import ASSETS, model_metadata
from ace_interp.model.state import model_state

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- how a model is asked


@dataclass
class PromptStyle:
    """How questions are put to a model.

    multi_hop(case, cot) -> one prompt per question paraphrase; single_hop(question, answers, relation_id) -> a
    prompt whose continuation is the hop's answer; cot_answer(generation) -> the answer a chain-of-thought
    commits to.
    """

    name: str
    multi_hop: Callable[[MQuAKECase, bool], list[str]]
    single_hop: Callable[[str, Sequence[str], str | None], str]
    supports_cot: bool = True
    max_new_tokens: int = 8
    cot_max_new_tokens: int = COT_MAX_NEW_TOKENS
    cot_answer: Callable[[str], str] = cot_final_answer
    cot_stop_at_newline: bool = True  # few-shot demonstrations reason on one line


def few_shot_style(
    pool: Sequence[Demonstration] | None = None, k: int = N_DEMONSTRATIONS, out_of_distribution: bool = False
) -> PromptStyle:
    """Real models (SmolLM2, hub models): few-shot Q/A with the project's demonstrations, built exactly as the
    known-fact filter builds them (`evaluation.filtering`: `k` multi-hop demonstrations, `k - 1` one-hop ones).

    `out_of_distribution=True` draws the demonstrations from relations other than the case's (the
    chain-of-thought robustness setting)."""
    pool = list(real_demonstrations() if pool is None else pool)
    hop_demos = single_hop_demonstrations()
    return PromptStyle(
        name="few-shot" + ("-ood" if out_of_distribution else ""),
        multi_hop=lambda case, cot: multi_hop_prompts(case, pool, k, cot, out_of_distribution),
        single_hop=lambda q, answers, relation: hop_question_prompt(q, answers, relation, hop_demos, k - 1),
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

    return PromptStyle("toy-world", multi_hop, single_hop=lambda q, answers, relation: q, max_new_tokens=3,
                       cot_max_new_tokens=48, cot_answer=_last_step_answer, cot_stop_at_newline=False)


def is_toy_name(model_name: str | Path) -> bool:
    """Whether a named model, folder or hub id is a synthetic-world toy, read from the model's own metadata
    without loading its weights (what `load_model` records as `model_state(bridge).is_toy`; `model/state.py`)."""
    return model_metadata(model_name).is_toy


def style_for(model_name: str, out_of_distribution: bool = False) -> PromptStyle:
    """The prompt style of a named model (toy models: as trained; real models: few-shot)."""
    return toy_world_style() if is_toy_name(model_name) else few_shot_style(out_of_distribution=out_of_distribution)


def model_style(bridge: TransformerBridge, out_of_distribution: bool = False) -> PromptStyle:
    """The prompt style of a loaded model (toy models: as trained; real models: few-shot)."""
    is_toy = model_state(bridge).is_toy
    return toy_world_style() if is_toy else few_shot_style(out_of_distribution=out_of_distribution)


def default_cases(model: str | Path) -> Path:
    """The case file each model is analysed and evaluated on: a toy's world's cases, else the curated real facts
    SmolLM2 knows."""
    world = model_metadata(model).world
    if world is not None:
        return world / "mquake_cases.json"
    return ASSETS / "real_facts" / "smollm2_known.json"


def multi_hop_asker(model: str | Path) -> Callable[[MQuAKECase], str] | None:
    """How multi-hop questions are put to a model: toy models take the question as trained (None); real
    models get the project's few-shot demonstrations."""
    if is_toy_name(model):
        return None
    style = few_shot_style()
    return lambda case: style.multi_hop(case, False)[0]


@dataclass(frozen=True)
class Asking:
    """One prompting setting for the multi-hop questions: a label ("direct", "cot", "cot-ood"), a style, CoT or not."""

    label: str
    style: PromptStyle
    cot: bool = False


PROMPTINGS = ("direct", "cot", "cot-ood")


def askings_for(bridge: TransformerBridge, promptings: Sequence[str] = ("direct",)) -> list[Asking]:
    """The prompting settings of a loaded model: "direct", "cot" and "cot-ood" (chain of thought with other
    relations' demonstrations; real models only — toys are asked zero-shot, there is nothing to swap)."""
    is_toy = model_state(bridge).is_toy
    out = []
    for label in promptings:
        if label not in PROMPTINGS:
            raise ValueError(f"unknown prompting {label!r}; expected one of {PROMPTINGS}")
        if label == "cot-ood" and is_toy:
            log.info("%s is asked zero-shot: no cot-ood setting", model_state(bridge).source)
            continue
        out.append(Asking(label, model_style(bridge, out_of_distribution=label == "cot-ood"), label != "direct"))
    return out


@dataclass(frozen=True)
class MethodRow:
    """One row of a table: its label ("pmet", "ace -q1", "ace +implicit"), the editing method (None = the
    unedited model), its hyper-parameters (None = `default_hparams`) and the prompting labels it is asked
    with (None = every asking of the run)."""

    label: str
    method: str | None
    hparams: object | None = None
    promptings: tuple[str, ...] | None = None

    def asks(self, asking: Asking) -> bool:
        return self.promptings is None or asking.label in self.promptings


def method_rows(methods: Sequence[str | None | MethodRow], hparams: dict[str, object] | None = None) -> list[MethodRow]:
    """`MethodRow`s from method names (None = base), each with `hparams[method]` when given."""
    rows = []
    for m in methods:
        if isinstance(m, MethodRow):
            rows.append(m)
        else:
            rows.append(MethodRow(m or "base", m, (hparams or {}).get(m) if m else None))
    return rows


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
    gens = generate_greedy(bridge, prompts, style.cot_max_new_tokens, stop_at_newline=style.cot_stop_at_newline)
    return [answer_matches(style.cot_answer(g), a) for g, a in zip(gens, answers)]


def answered(bridge: TransformerBridge, cases: Sequence[MQuAKECase], answers: Sequence[Sequence[str]],
             asking: Asking) -> list[bool]:
    """Per case: does any of its question paraphrases get one of `answers[i]`?

    Paraphrase j is asked (of all cases at once) only of the cases no earlier paraphrase answered: MQuAKE counts
    a case right when any paraphrase is, so the verdict is the one asking all of them gives, at a third of the
    generations for a case the first paraphrase answers."""
    prompts = [asking.style.multi_hop(c, asking.cot) for c in cases]
    right = [False] * len(cases)
    for j in range(max((len(p) for p in prompts), default=0)):
        todo = [i for i in range(len(cases)) if not right[i] and j < len(prompts[i])]
        if not todo:
            break
        for i, ok in zip(todo, _check(bridge, [prompts[i][j] for i in todo], [answers[i] for i in todo],
                                      asking.style, asking.cot), strict=True):
            right[i] = ok
    return right


@dataclass
class Question:
    """One question put to a model by greedy decoding: its prompt, the accepted answers, and how the answer is
    generated and read (the style's budget; with `cot` its chain-of-thought budget, stop rule and answer reader)."""

    prompt: str
    answers: Sequence[str]
    style: PromptStyle
    cot: bool = False

    @property
    def max_new_tokens(self) -> int:
        return self.style.cot_max_new_tokens if self.cot else self.style.max_new_tokens

    @property
    def stop_at_newline(self) -> bool:
        return self.style.cot_stop_at_newline if self.cot else True

    def verdict(self, generation: str) -> bool:
        return answer_matches(self.style.cot_answer(generation) if self.cot else generation, self.answers)


def ask_together(bridge: TransformerBridge, questions: Sequence[Question]) -> list[bool]:
    """Whether each question is answered, all of them decoded in one batch (`answers.generate_greedy_each`): the
    verdicts `_check` gives asking them group by group (tests/evaluation/test_protocol.py)."""
    gens = generate_greedy_each(bridge, [q.prompt for q in questions], [q.max_new_tokens for q in questions],
                                [q.stop_at_newline for q in questions])
    return [q.verdict(g) for q, g in zip(questions, gens, strict=True)]


def _efficacy_questions(rewrites, style: PromptStyle) -> list[Question]:
    """Each rewrite's cloze prompt, answered by its target_new (MQuAKE's edit-wise success)."""
    return [Question(rw.prompt_text(), [rw.target_new.text], style) for rw in rewrites]


def edit_questions(case: MQuAKECase, style: PromptStyle, specificity: Sequence[dict] = ()) -> dict[str, list[Question]]:
    """The greedy questions of the edit-level metrics: "efficacy" (the rewrites' clozes), "paraphrase" (the edited
    hops as few-shot questions), "specificity" (the sampled facts the unedited model knows)."""
    hop_idx = edited_hop_indices(case)
    hops = [case.new_single_hops[i] for i in hop_idx]
    relations = [case.orig.new_triples[i][1] for i in hop_idx]
    return {
        "efficacy": _efficacy_questions(case.requested_rewrite, style),
        "paraphrase": [Question(style.single_hop(h.question, h.answers, r), h.answers, style) for h, r in zip(hops, relations)],
        "specificity": [Question(f["cloze"], f["answers"], style) for f in specificity if f["known"]],
    }


def case_questions(case: MQuAKECase, askings: Sequence[Asking], edited: bool = True,
                   specificity: Sequence[dict] = ()) -> dict[str, list[Question]]:
    """Every greedy question a case asks in one decoding batch, keyed by what it measures: each asking's label
    (its multi-hop paraphrases, checked against the new answers when `edited`, the original ones otherwise) and,
    when `edited`, the `edit_questions` keys under the first asking's style.

        >>> groups = case_questions(case, askings_for(bridge, ("direct", "cot")))
        >>> list(groups)  # ['direct', 'cot', 'efficacy', 'paraphrase', 'specificity']
    """
    answers = case.new_answers if edited else case.answers
    groups = {a.label: [Question(p, answers, a.style, a.cot) for p in a.style.multi_hop(case, a.cot)]
              for a in askings}
    if edited:
        groups.update(edit_questions(case, askings[0].style, specificity))
    return groups


def edit_metrics(bridge: TransformerBridge, case: MQuAKECase, style: PromptStyle, specificity: Sequence[dict] = (),
                 perplexity_texts: Sequence[str] | None = None, base_perplexity: float | None = None,
                 verdicts: dict[str, list[bool]] | None = None) -> dict:
    """The edit-level metrics of an edited model on one case's edits: efficacy, efficacy_prob, paraphrase and
    specificity (with their counts) and, given texts and the unedited perplexity, ppl_ratio. `verdicts` (per
    `edit_questions` key) are answers already generated; None asks each group here."""
    if verdicts is None:
        verdicts = {k: _check(bridge, [q.prompt for q in qs], [q.answers for q in qs], style)
                    for k, qs in edit_questions(case, style, specificity).items()}
    top1, para, spec = verdicts["efficacy"], verdicts["paraphrase"], verdicts["specificity"]
    prob = new_beats_true(bridge, list(case.requested_rewrite))
    row = {"efficacy": _mean(top1), "efficacy_prob": _mean(prob), "n_efficacy": len(top1),
           "paraphrase": _mean(para), "n_paraphrase": len(para), "specificity": _mean(spec), "n_specificity": len(spec)}
    if perplexity_texts and base_perplexity:
        row["ppl_ratio"] = perplexity(bridge, perplexity_texts) / base_perplexity
    return row


def evaluate_case(
    bridge: TransformerBridge,
    case: MQuAKECase,
    method: str | None,
    style: PromptStyle,
    specificity: list[dict] = (),
    hparams: object | None = None,
    cot: bool = False,
    hop_prompts: Callable[[MQuAKECase], list[HopPrompt]] | None = None,
    askings: Sequence[Asking] | None = None,
    perplexity_texts: Sequence[str] | None = None,
    base_perplexity: float | None = None,
    monitor: SideEffectMonitor | None = None,
    one_batch: bool = True,
) -> list[dict]:
    """Edit (unless `method` is None), ask the multi-hop questions under each of `askings` (default: `style`
    with `cot`), measure the edit, undo. Returns one row per asking.

    `one_batch` asks every question of the case — each asking's paraphrases, the efficacy clozes, the paraphrased
    hops and the specificity facts — in one decoding batch (`ask_together`); False asks them group by group and
    paraphrase by paraphrase (`answered`, `edit_metrics`): the same verdicts, the slow path it is tested against.

    With a `monitor` (`editing.SideEffectMonitor`) the edited model's untouched known facts and perplexity are
    checked too (columns `untouched_known`, `perplexity`, `side_effect_alarms`; its warnings name the case)."""
    askings = list(askings) if askings is not None else [Asking("cot" if cot else "direct", style, cot)]
    base = {"case_id": case.case_id, "method": method or "base", "n_edits": case.n_edits, "n_hops": case.n_hops}
    applied: AppliedEdit | None = None
    if method is not None:
        kwargs = {"hop_prompts": hop_prompts(case)} if (hop_prompts is not None and method == "ace") else {}
        applied = edit(bridge, case_requests(case), method, hparams, **kwargs)
        base["edit_seconds"] = applied.seconds
        if monitor is not None:
            monitor.edited_subjects = {r.subject for r in applied.requests}  # each case starts from the unedited model
            monitor.n_edits = 1
            reading = monitor.check()
            base.update(untouched_known=reading.accuracy, perplexity=reading.perplexity,
                        side_effect_alarms=len(reading.alarms))
    try:
        verdicts = None
        if one_batch:
            groups = case_questions(case, askings, method is not None, specificity)
            verdicts = _regroup(ask_together(bridge, [q for qs in groups.values() for q in qs]), groups)
            multi_hop = {a.label: any(verdicts[a.label]) for a in askings}
        else:
            answers = case.new_answers if method is not None else case.answers
            multi_hop = {a.label: answered(bridge, [case], [answers], a)[0] for a in askings}
        rows = [{**base, "cot": a.cot, "prompting": a.label, "style": a.style.name,
                 "multi_hop": float(multi_hop[a.label])} for a in askings]
        if method is not None:
            measured = edit_metrics(bridge, case, askings[0].style, specificity, perplexity_texts, base_perplexity,
                                    verdicts)
            rows = [{**row, **measured} for row in rows]
    finally:
        if applied is not None:
            applied.undo()
    return rows


def _regroup(values: Sequence[bool], groups: dict[str, list]) -> dict[str, list[bool]]:
    """A flat list of per-question values cut back into `groups`' keys, in their order."""
    out, start = {}, 0
    for key, items in groups.items():
        out[key], start = list(values[start : start + len(items)]), start + len(items)
    return out


def edit_efficacy(bridge: TransformerBridge, rewrites, style: PromptStyle) -> tuple[list[bool], list[bool]]:
    """Per rewrite (an `mquake.Rewrite`): (greedy continuation of its cloze prompt names target_new,
    p(target_new) > p(target_true)) — the `efficacy` and `efficacy_prob` columns."""
    rewrites = list(rewrites)
    questions = _efficacy_questions(rewrites, style)
    top1 = _check(bridge, [q.prompt for q in questions], [q.answers for q in questions], style)
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

METRICS = ("multi_hop", "efficacy", "efficacy_prob", "paraphrase", "specificity", "ppl_ratio", "untouched_known",
           "perplexity", "edit_seconds")


@dataclass
class EvalResult:
    per_case: pd.DataFrame

    @property
    def summary(self) -> pd.DataFrame:
        """Means by method, prompting and number of edits (and 'all'), with the number of case rows."""
        df = self.per_case
        if "prompting" not in df:
            df = df.assign(prompting=df.get("cot", False).map(lambda c: "cot" if c else "direct"))
        metrics = [c for c in METRICS if c in df]
        keys = ["method", "prompting", *(["edited"] if "edited" in df else [])]  # batched: edited / unedited apart
        by_edits = df.groupby([*keys, "n_edits"])[metrics].mean().reset_index()
        overall = df.groupby(keys)[metrics].mean().reset_index().assign(n_edits="all")
        counts = pd.concat([df.groupby([*keys, "n_edits"]).size().reset_index(name="n_cases"),
                            df.groupby(keys).size().reset_index(name="n_cases").assign(n_edits="all")])
        out = pd.concat([by_edits, overall], ignore_index=True)
        out["n_edits"] = out["n_edits"].astype(str)
        counts["n_edits"] = counts["n_edits"].astype(str)
        return out.merge(counts, on=[*keys, "n_edits"])

    def by_hops(self) -> pd.DataFrame:
        return self.per_case.groupby(["method", "prompting", "n_hops"])["multi_hop"].agg(["mean", "size"]).reset_index()

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


@dataclass
class UneditedAnswers:
    """What the unedited model gives, computed once per run: per asking label, per case id, whether it answers the
    multi-hop question (original answers); the specificity facts it knows (marked in the samples); its perplexity."""

    known: dict[str, dict] = field(default_factory=dict)
    specificity: dict = field(default_factory=dict)  # case id -> sampled facts, each with "known"
    perplexity: float | None = None

    def to_json(self) -> dict:
        """JSON-able, case ids as strings (`from_json` maps them back)."""
        return {"known": {a: {str(c): bool(v) for c, v in d.items()} for a, d in self.known.items()},
                "specificity": {str(c): facts for c, facts in self.specificity.items()}, "perplexity": self.perplexity}

    @classmethod
    def from_json(cls, record: dict, cases: Sequence[MQuAKECase]) -> "UneditedAnswers":
        ids = {str(c.case_id): c.case_id for c in cases}
        if set(ids) != set(record["specificity"]):
            raise ValueError("saved unedited answers are of other cases")
        return cls({a: {ids[c]: v for c, v in d.items()} for a, d in record["known"].items()},
                   {ids[c]: facts for c, facts in record["specificity"].items()}, record["perplexity"])


def unedited_answers(bridge: TransformerBridge, cases: Sequence[MQuAKECase], askings: Sequence[Asking],
                     n_specificity: int = 5, seed: int = 0, perplexity_texts: Sequence[str] | None = None,
                     mark_specificity: bool = True) -> UneditedAnswers:
    """Ask the unedited model everything the edited rows are compared against, once (all cases batched)."""
    known = {a.label: dict(zip([c.case_id for c in cases], answered(bridge, cases, [c.answers for c in cases], a),
                               strict=True)) for a in askings}
    pool = SpecificityPool.from_cases(cases)
    samples = {c.case_id: pool.sample(c, n_specificity, seed) for c in cases}
    if mark_specificity:
        mark_known_specificity(bridge, pool, askings[0].style, [f for s in samples.values() for f in s])
    ppl = perplexity(bridge, perplexity_texts) if perplexity_texts else None
    return UneditedAnswers(known, samples, ppl)


UNEDITED_KEY = ("unedited answers",)


def saved_unedited_answers(bridge: TransformerBridge, cases: Sequence[MQuAKECase], askings: Sequence[Asking],
                           checkpoint: Checkpoint | None, **kwargs) -> UneditedAnswers:
    """`unedited_answers`, read from `checkpoint` when a process of this run saved them (its fingerprint pins the
    model, cases, askings, seed and sample sizes), else computed and saved there: shards and the run that
    assembles the table ask the unedited model once between them (on SmolLM2 with chain of thought, ~10 min)."""
    saved = checkpoint.done(UNEDITED_KEY) if checkpoint is not None else None
    if saved is not None:
        log.info("unedited answers read from %s", checkpoint.folder)
        return UneditedAnswers.from_json(saved[0], cases)
    start = time.perf_counter()
    unedited = unedited_answers(bridge, cases, askings, **kwargs)
    if checkpoint is not None:
        checkpoint.add(UNEDITED_KEY, [unedited.to_json()], time.perf_counter() - start)
    return unedited


def evaluate(
    bridge: TransformerBridge,
    cases: Sequence[MQuAKECase],
    methods: Sequence[str | None | MethodRow],
    style: PromptStyle | None = None,
    cot: bool = False,
    n_specificity: int = 5,
    hparams: dict[str, object] | None = None,
    hop_prompts: Callable[[MQuAKECase], list[HopPrompt]] | None = None,
    seed: int = 0,
    progress: bool = True,
    askings: Sequence[Asking] | None = None,
    known_only: bool = True,
    perplexity_texts: Sequence[str] | None = None,
    monitor: SideEffectMonitor | None = None,
    one_batch: bool = True,
    checkpoint: Checkpoint | None = None,
    shard: Shard | None = None,
) -> EvalResult:
    """The per-case protocol (module docstring) for each method row (None / "base" = the unedited model) on
    every case, under each of `askings` (default: `style` with `cot`).

        import ace_interp as ai
        model = ai.load_model("toy-gptj")
        cases = ai.load_mquake("assets/world/mquake_cases.json")[:2]
        result = ai.evaluate(model, cases, [None, "rome"])
        result.summary     # DataFrame by method and number of edits: multi_hop, efficacy, ..., n_cases
        result.per_case    # one row per (method, case, prompting)

    `style` defaults to the model's own (`model_style`: toy models as trained, real models few-shot). Each
    case's edits are undone before the next case, so the model ends as it started. With `known_only` a case is
    edited only for the askings the unedited model answers it under (the paper's filter); the base rows cover
    every case. `perplexity_texts` add the `ppl_ratio` column. `one_batch` (`evaluate_case`) asks each edited case's
    questions in one decoding batch; False is the slow path with the same verdicts.

    A `checkpoint` (`evaluation.checkpoint`) saves each finished (row, case) and skips those it already holds, so
    a stopped run resumes; a `shard` runs only its share of them (every shard's work lands in the checkpoint)."""
    style = style or model_style(bridge)
    askings = list(askings) if askings is not None else [Asking("cot" if cot else "direct", style, cot)]
    for a in askings:
        if a.cot and not a.style.supports_cot:
            raise ValueError(f"prompt style {a.style.name!r} has no chain-of-thought form")
    rows_of = method_rows(methods, hparams)
    edited = [r for r in rows_of if r.method is not None]
    unedited = saved_unedited_answers(bridge, cases, askings, checkpoint, n_specificity=n_specificity, seed=seed,
                                      perplexity_texts=perplexity_texts if edited else None,
                                      mark_specificity=bool(edited))
    rows = []
    for row in rows_of:
        if row.method is None:
            rows += [{"case_id": c.case_id, "method": row.label, "n_edits": c.n_edits, "n_hops": c.n_hops, "cot": a.cot,
                      "prompting": a.label, "style": a.style.name, "multi_hop": float(unedited.known[a.label][c.case_id])}
                     for a in askings if row.asks(a) for c in cases]
    if known_only and edited:
        log.info("cases the unedited model answers: %s of %d", ", ".join(
            f"{a.label} {sum(unedited.known[a.label].values())}" for a in askings), len(cases))
    plan = [(row, case, [a for a in askings if row.asks(a) and (unedited.known[a.label][case.case_id] or not known_only)])
            for row in edited for case in cases]
    plan = [(row, case, asked) for row, case, asked in plan if asked]

    def run(item: tuple[MethodRow, MQuAKECase, list[Asking]]) -> list[dict]:
        row, case, asked = item
        return [{**r, "method": row.label} for r in evaluate_case(
            bridge, case, row.method, style, unedited.specificity[case.case_id], row.hparams, hop_prompts=hop_prompts,
            askings=asked, perplexity_texts=perplexity_texts, base_perplexity=unedited.perplexity, monitor=monitor,
            one_batch=one_batch)]

    n_run = sum(1 for i in range(len(plan)) if shard is None or shard.keeps(i))
    with tqdm(total=n_run, desc="evaluate", disable=not progress) as bar:
        rows += run_items([((row.label, case.case_id), (row, case, asked)) for row, case, asked in plan], run,
                          checkpoint, shard, bar)
    return EvalResult(pd.DataFrame(rows))
