"""Few-shot and chain-of-thought prompts for multi-hop questions, with the project's own demonstrations.

A `Demonstration` is a solved multi-hop question (its relation path, the answer, and the single-hop
statements of its reasoning). Builders are parametric: pass any demonstrations and a `PromptFormat`
(the synthetic world defines its own; the real-fact ones for SmolLM2 are in
`ace_interp/data/real_facts/demonstrations.json`, loaded by `real_demonstrations()`).

`select_demonstrations` picks demonstrations for a case: in-distribution (same relation path first)
or out-of-distribution (`out_of_distribution=True`: only demonstrations whose relations are all
different from the case's -- the chain-of-thought robustness setting), never ones that mention an
entity of the case.

    prompt = few_shot_prompt(case.questions[0], select_demonstrations(pool, case.relation_ids, k=4))
    -> "Q: <demo question>\nA: <demo answer>\n ... Q: <question>\nA:"
    cot_prompt(...) -> "... A: <step 1> <step 2> So the answer is <answer>.\n ... Q: <question>\nA:"
"""

from __future__ import annotations

import importlib.resources
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ace_interp.data.mquake import MQuAKECase


@dataclass(frozen=True)
class Demonstration:
    question: str
    answer: str
    steps: tuple[str, ...] = ()  # single-hop statements, in order ("X is located in Italy.", ...)
    path: tuple[str, ...] = ()  # relation ids of the hops
    entities: tuple[str, ...] = field(default=(), compare=False)  # every entity it names

    @classmethod
    def from_case(cls, case: MQuAKECase, question_index: int = 0) -> Demonstration:
        """A demonstration from an MQuAKE case: its question, answer and cloze statements as steps."""
        steps = tuple(f"{h.cloze} {h.answer}." for h in case.single_hops)
        ents = tuple(dict.fromkeys(x for t in case.orig.triples_labeled for x in (t[0], t[2])))
        return cls(case.questions[question_index], case.answer, steps, tuple(case.relation_ids), ents)


@dataclass(frozen=True)
class PromptFormat:
    """How a question/answer pair is written. Defaults: "Q: ...\\nA: ...\\n"."""

    question_prefix: str = "Q: "
    answer_prefix: str = "A:"
    answer_space: str = " "  # between the answer prefix and the answer in demonstrations
    separator: str = "\n"  # after each answer
    cot_conclusion: str = "So the answer is {}."
    instruction: str = ""  # text put before the demonstrations

    def qa(self, question: str, answer: str) -> str:
        return f"{self.question_prefix}{question}{self.separator}{self.answer_prefix}{self.answer_space}{answer}{self.separator}"

    def open_question(self, question: str) -> str:
        return f"{self.question_prefix}{question}{self.separator}{self.answer_prefix}"


DEFAULT_FORMAT = PromptFormat()

# One setting for every place a multi-hop question is put to a real model: the known-fact filter
# (`evaluation.filtering`) and the evaluation (`evaluation.protocol.few_shot_style`) must ask the same prompt, or a case
# the filter kept as "known" can be missed by the unedited model at evaluation time (with 3 demonstrations in the
# filter and 4 in the evaluation, 3 of 20 kept SmolLM2 cases were). assets/real_facts/smollm2_known.json was
# filtered with 3.
N_DEMONSTRATIONS = 3
# Chain-of-thought continuations stop at the end of the answer line (demonstrations answer on one line) or here.
COT_MAX_NEW_TOKENS = 64


def few_shot_prompt(question: str, demonstrations: Sequence[Demonstration], fmt: PromptFormat = DEFAULT_FORMAT) -> str:
    """Demonstrations answered directly, then the open question (the model continues with the answer)."""
    return fmt.instruction + "".join(fmt.qa(d.question, d.answer) for d in demonstrations) + fmt.open_question(question)


def cot_answer(demo: Demonstration, fmt: PromptFormat = DEFAULT_FORMAT) -> str:
    if not demo.steps:
        raise ValueError(f"demonstration {demo.question!r} has no reasoning steps for chain-of-thought")
    return " ".join([*demo.steps, fmt.cot_conclusion.format(demo.answer)])


def cot_prompt(question: str, demonstrations: Sequence[Demonstration], fmt: PromptFormat = DEFAULT_FORMAT) -> str:
    """Demonstrations answered step by step ("... So the answer is X."), then the open question.
    Read the model's answer with `ace_interp.evaluation.answers.cot_final_answer`."""
    return fmt.instruction + "".join(fmt.qa(d.question, cot_answer(d, fmt)) for d in demonstrations) + fmt.open_question(question)


def single_hop_prompt(question: str, demonstrations: Sequence[Demonstration], fmt: PromptFormat = DEFAULT_FORMAT) -> str:
    """A single-hop question asked few-shot (demonstrations: one-hop Q/A pairs, e.g. `single_hop_demonstrations`)."""
    return few_shot_prompt(question, demonstrations, fmt)


def select_demonstrations(
    pool: Sequence[Demonstration],
    relation_ids: Sequence[str],
    k: int = 4,
    out_of_distribution: bool = False,
    exclude_entities: Iterable[str] = (),
) -> list[Demonstration]:
    """Up to `k` demonstrations for a case with these relations, deterministic.

    In-distribution: the same relation path first, then demonstrations sharing the last relation, then
    sharing any relation, then the rest. Out-of-distribution: only demonstrations that share no
    relation with the case (raises ValueError when there are none). Demonstrations naming an entity
    in `exclude_entities` are skipped (so a demonstration never gives a case's answer away).
    """
    if k < 0:
        raise ValueError("k must be >= 0")
    excluded = {e.lower() for e in exclude_entities}
    rel = set(relation_ids)
    path = tuple(relation_ids)
    usable = [d for d in pool if not excluded & {e.lower() for e in d.entities}]
    if out_of_distribution:
        usable = [d for d in usable if not rel & set(d.path)]
        if not usable and k > 0:
            raise ValueError(f"no out-of-distribution demonstrations for relations {sorted(rel)}")
        # prefer the same number of hops, then the pool order
        return sorted(usable, key=lambda d: abs(len(d.path) - len(path)))[:k]

    def rank(d: Demonstration) -> tuple[int, int]:
        if d.path == path:
            tier = 0
        elif d.path and path and d.path[-1] == path[-1]:
            tier = 1
        elif rel & set(d.path):
            tier = 2
        else:
            tier = 3
        return tier, abs(len(d.path) - len(path))

    return sorted(usable, key=rank)[:k]


def case_entities(case: MQuAKECase) -> list[str]:
    """Every entity label on the case's original and edited chains."""
    labels = [x for t in case.orig.triples_labeled + case.orig.new_triples_labeled for x in (t[0], t[2])]
    return list(dict.fromkeys(labels))


def demonstrations_for_case(
    case: MQuAKECase, pool: Sequence[Demonstration], k: int = 4, out_of_distribution: bool = False
) -> list[Demonstration]:
    return select_demonstrations(pool, case.relation_ids, k, out_of_distribution, exclude_entities=case_entities(case))


def multi_hop_prompts(
    case: MQuAKECase,
    pool: Sequence[Demonstration],
    k: int = N_DEMONSTRATIONS,
    chain_of_thought: bool = False,
    out_of_distribution: bool = False,
    fmt: PromptFormat = DEFAULT_FORMAT,
) -> list[str]:
    """One prompt per question paraphrase of the case."""
    demos = demonstrations_for_case(case, pool, k, out_of_distribution)
    build = cot_prompt if chain_of_thought else few_shot_prompt
    return [build(q, demos, fmt) for q in case.questions]


# ----------------------------------------------------------------------------- real-fact demonstrations


def load_demonstrations(path: str | Path) -> list[Demonstration]:
    raw = json.loads(Path(path).read_text())
    items = raw["demonstrations"] if isinstance(raw, dict) else raw
    return [
        Demonstration(d["question"], d["answer"], tuple(d.get("steps", ())), tuple(d.get("path", ())), tuple(d.get("entities", ())))
        for d in items
    ]


def real_demonstrations() -> list[Demonstration]:
    """The project's multi-hop demonstrations over real facts (for SmolLM2 and other real models)."""
    return load_demonstrations(Path(str(importlib.resources.files("ace_interp.data") / "real_facts" / "demonstrations.json")))


def single_hop_demonstrations() -> list[Demonstration]:
    """The project's one-hop Q/A demonstrations over real facts (two per relation), for asking a
    single hop as a few-shot question; select among them with `demonstrations_for_hop`."""
    path = Path(str(importlib.resources.files("ace_interp.data") / "real_facts" / "demonstrations.json"))
    raw = json.loads(path.read_text())["single_hop"]
    return [Demonstration(d["question"], d["answer"], (), tuple(d["path"]), tuple(d["entities"])) for d in raw]


def demonstrations_for_hop(
    question: str, answers: Sequence[str], relation_id: str | None, pool: Sequence[Demonstration], k: int = 3
) -> list[Demonstration]:
    """Up to `k` one-hop demonstrations: the hop's relation first, none naming the hop's subject or answer."""
    text = question.lower()
    answers_l = {a.lower() for a in answers}
    usable = [d for d in pool if not any(e.lower() in text or e.lower() in answers_l for e in d.entities)]
    if relation_id is None:
        return usable[:k]
    return select_demonstrations(usable, [relation_id], k)


def hop_question_prompt(
    question: str,
    answers: Sequence[str],
    relation_id: str | None,
    pool: Sequence[Demonstration],
    k: int = N_DEMONSTRATIONS - 1,
    fmt: PromptFormat = DEFAULT_FORMAT,
) -> str:
    """A single hop asked as a few-shot question, the way the known-fact filter asks it: `k` one-hop
    demonstrations of the hop's relation first, none naming the hop's subject or answer."""
    return few_shot_prompt(question, demonstrations_for_hop(question, answers, relation_id, pool, max(1, k)), fmt)
