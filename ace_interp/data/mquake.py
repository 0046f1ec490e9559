"""The MQuAKE multi-hop knowledge-editing schema: dataclasses, loading, validation, saving.

One MQuAKE case (Zhong et al., 2023; the same keys in MQuAKE-CF-3k-v2, MQuAKE-CF, MQuAKE-T and the
MQuAKE-hard subset) is a chain of `n` single-hop facts s -r1-> o1 -r2-> o2 ... with

  * `requested_rewrite`: the edits, each {prompt with "{}", relation_id, subject, target_new {str, id},
    target_true {str, id}, question} -- what an editor consumes;
  * `questions`: (usually 3) paraphrases of the multi-hop question, `answer`/`answer_alias` before the
    edits, `new_answer`/`new_answer_alias` after them;
  * `single_hops` / `new_single_hops`: {question, cloze, answer, answer_alias} along the original chain
    and along the edited chain;
  * `orig`: Wikidata triples (ids and labels) of both chains and the edited triples
    (`edit_triples_idx` exists in some files only).

The dataclasses keep keys they do not know (`extra`) so files written by other tools -- and our own
synthetic world, which adds `bridge_entities` -- round-trip unchanged through `save_mquake`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CASE_KEYS = (
    "case_id",
    "requested_rewrite",
    "questions",
    "answer",
    "answer_alias",
    "new_answer",
    "new_answer_alias",
    "single_hops",
    "new_single_hops",
    "orig",
)
REWRITE_KEYS = ("prompt", "relation_id", "target_new", "target_true", "subject", "question")
HOP_KEYS = ("question", "cloze", "answer", "answer_alias")
ORIG_KEYS = ("triples", "triples_labeled", "new_triples", "new_triples_labeled", "edit_triples")

# Official MQuAKE files are on GitHub (princeton-nlp/MQuAKE, datasets/*.json); on the HF hub they are
# published as splits of the MQuAKE-Remastered dataset (Zhong et al. 2024 re-audit, same schema, some
# fields flattened -- `_unflatten` restores the nested form).
HUB_DATASET = "henryzhongsc/MQuAKE-Remastered"
HUB_SPLITS: dict[str, str] = {
    "cf-3k-v2": "CF3k",
    "cf-3k": "CF3k",
    "cf3k": "CF3k",
    "cf": "CF9k",
    "cf-9k": "CF9k",
    "cf-6334": "CF6334",
    "t": "T",
}


class MQuAKEFormatError(ValueError):
    """A case does not follow the MQuAKE schema. Names the case and the field (a dotted path)."""

    def __init__(self, case_id: Any, field: str, problem: str):
        self.case_id = case_id
        self.field = field
        self.problem = problem
        where = f"case {case_id!r}" if case_id is not None else "file"
        super().__init__(f"MQuAKE {where}, field {field!r}: {problem}")


# ----------------------------------------------------------------------------- dataclasses


@dataclass
class Target:
    """An entity as MQuAKE writes it: {"str": label, "id": Wikidata id}."""

    text: str
    id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Target:
        rest = {k: v for k, v in d.items() if k not in ("str", "id")}
        return cls(text=d["str"], id=d.get("id"), extra=rest)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"str": self.text}
        if self.id is not None:
            out["id"] = self.id
        out.update(self.extra)
        return out


@dataclass
class Rewrite:
    """One requested edit: `prompt.format(subject)` should now be completed by `target_new.text`."""

    prompt: str  # template with one "{}" for the subject, e.g. "The capital of {} is"
    relation_id: str
    target_new: Target
    target_true: Target
    subject: str
    question: str
    extra: dict[str, Any] = field(default_factory=dict)

    def prompt_text(self) -> str:
        """The cloze prompt with the subject filled in."""
        return self.prompt.format(self.subject)

    def subject_span(self) -> tuple[int, int]:
        """Character span [start, end) of the subject inside `prompt_text()`."""
        start = self.prompt.index("{}")
        return start, start + len(self.subject)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Rewrite:
        return cls(
            prompt=d["prompt"],
            relation_id=d["relation_id"],
            target_new=Target.from_dict(d["target_new"]),
            target_true=Target.from_dict(d["target_true"]),
            subject=d["subject"],
            question=d["question"],
            extra={k: v for k, v in d.items() if k not in REWRITE_KEYS},
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "relation_id": self.relation_id,
            "target_new": self.target_new.to_dict(),
            "target_true": self.target_true.to_dict(),
            "subject": self.subject,
            "question": self.question,
            **self.extra,
        }


@dataclass
class SingleHop:
    """One hop of a chain, asked as a question and as a cloze prompt."""

    question: str
    cloze: str
    answer: str
    answer_alias: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def answers(self) -> list[str]:
        """The answer and its aliases (the strings an answer check accepts)."""
        return [self.answer, *self.answer_alias]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SingleHop:
        return cls(
            question=d["question"],
            cloze=d["cloze"],
            answer=d["answer"],
            answer_alias=list(d["answer_alias"]),
            extra={k: v for k, v in d.items() if k not in HOP_KEYS},
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "cloze": self.cloze,
            "answer": self.answer,
            "answer_alias": list(self.answer_alias),
            **self.extra,
        }


Triple = list[str]  # [subject, relation, object] as ids or labels


@dataclass
class Orig:
    """The Wikidata triples behind a case."""

    triples: list[Triple]
    triples_labeled: list[Triple]
    new_triples: list[Triple]
    new_triples_labeled: list[Triple]
    edit_triples: list[Triple]
    edit_triples_idx: list[int] | None = None  # present in MQuAKE-hard, absent in some official files
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Orig:
        return cls(
            **{k: [list(t) for t in d[k]] for k in ORIG_KEYS},
            edit_triples_idx=list(d["edit_triples_idx"]) if d.get("edit_triples_idx") is not None else None,
            extra={k: v for k, v in d.items() if k not in (*ORIG_KEYS, "edit_triples_idx")},
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: [list(t) for t in getattr(self, k)] for k in ORIG_KEYS}
        if self.edit_triples_idx is not None:
            out["edit_triples_idx"] = list(self.edit_triples_idx)
        out.update(self.extra)
        return out


@dataclass
class MQuAKECase:
    """One MQuAKE case (see the module docstring for the meaning of each field)."""

    case_id: int | str
    requested_rewrite: list[Rewrite]
    questions: list[str]
    answer: str
    answer_alias: list[str]
    new_answer: str
    new_answer_alias: list[str]
    single_hops: list[SingleHop]
    new_single_hops: list[SingleHop]
    orig: Orig
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. the synthetic world's `bridge_entities`

    @property
    def n_hops(self) -> int:
        return len(self.single_hops)

    @property
    def n_edits(self) -> int:
        return len(self.requested_rewrite)

    @property
    def relation_ids(self) -> list[str]:
        """Relation id of each hop along the original chain."""
        return [t[1] for t in self.orig.triples]

    @property
    def edited_hops(self) -> list[int | None]:
        """For each requested rewrite, the hop of the chain it edits (0 = the question's own subject; >= 1 = a
        bridge entity the question never names), found by its cloze among `new_single_hops`; None if absent."""
        clozes = [h.cloze for h in self.new_single_hops]
        return [clozes.index(rw.prompt_text()) if rw.prompt_text() in clozes else None
                for rw in self.requested_rewrite]

    @property
    def answers(self) -> list[str]:
        """Accepted answers to the multi-hop question before editing."""
        return [self.answer, *self.answer_alias]

    @property
    def new_answers(self) -> list[str]:
        """Accepted answers to the multi-hop question after the requested edits."""
        return [self.new_answer, *self.new_answer_alias]

    @classmethod
    def from_dict(cls, d: dict[str, Any], validate: bool = True) -> MQuAKECase:
        """Build a case; with `validate` (default) a malformed dict raises `MQuAKEFormatError`."""
        if validate:
            validate_case(d)
        return cls(
            case_id=d["case_id"],
            requested_rewrite=[Rewrite.from_dict(r) for r in d["requested_rewrite"]],
            questions=list(d["questions"]),
            answer=d["answer"],
            answer_alias=list(d["answer_alias"]),
            new_answer=d["new_answer"],
            new_answer_alias=list(d["new_answer_alias"]),
            single_hops=[SingleHop.from_dict(h) for h in d["single_hops"]],
            new_single_hops=[SingleHop.from_dict(h) for h in d["new_single_hops"]],
            orig=Orig.from_dict(d["orig"]),
            extra={k: v for k, v in d.items() if k not in CASE_KEYS},
        )

    def to_dict(self) -> dict[str, Any]:
        """The case as MQuAKE JSON (keys in the official order, unknown keys kept after them)."""
        return {
            "case_id": self.case_id,
            "requested_rewrite": [r.to_dict() for r in self.requested_rewrite],
            "questions": list(self.questions),
            "answer": self.answer,
            "answer_alias": list(self.answer_alias),
            "new_answer": self.new_answer,
            "new_answer_alias": list(self.new_answer_alias),
            "single_hops": [h.to_dict() for h in self.single_hops],
            "new_single_hops": [h.to_dict() for h in self.new_single_hops],
            "orig": self.orig.to_dict(),
            **self.extra,
        }


# ----------------------------------------------------------------------------- validation


def _nonempty_str(case_id: Any, path: str, value: Any) -> None:
    if not isinstance(value, str):
        raise MQuAKEFormatError(case_id, path, f"expected a string, got {type(value).__name__}")
    if not value.strip():
        raise MQuAKEFormatError(case_id, path, "is empty")


def _str_list(case_id: Any, path: str, value: Any, allow_empty: bool = True) -> None:
    if not isinstance(value, list):
        raise MQuAKEFormatError(case_id, path, f"expected a list of strings, got {type(value).__name__}")
    if not allow_empty and not value:
        raise MQuAKEFormatError(case_id, path, "is an empty list")
    for i, v in enumerate(value):
        _nonempty_str(case_id, f"{path}[{i}]", v)


def _require(case_id: Any, path: str, d: Any, keys: Sequence[str]) -> None:
    if not isinstance(d, dict):
        raise MQuAKEFormatError(case_id, path or "case", f"expected an object, got {type(d).__name__}")
    for k in keys:
        if k not in d:
            raise MQuAKEFormatError(case_id, f"{path}.{k}" if path else k, "missing field")


def _check_target(case_id: Any, path: str, t: Any) -> None:
    _require(case_id, path, t, ["str"])
    _nonempty_str(case_id, f"{path}.str", t["str"])


def _check_triples(case_id: Any, path: str, value: Any) -> None:
    if not isinstance(value, list):
        raise MQuAKEFormatError(case_id, path, f"expected a list of triples, got {type(value).__name__}")
    for i, t in enumerate(value):
        if not isinstance(t, list | tuple) or len(t) != 3:
            raise MQuAKEFormatError(case_id, f"{path}[{i}]", f"expected [subject, relation, object], got {t!r}")


def validate_case(d: dict[str, Any]) -> None:
    """Raise `MQuAKEFormatError(case_id, field, problem)` at the first violation of the MQuAKE schema.

    Checks what evaluation needs: every required key (extra keys are allowed); non-empty answers, aliases,
    questions, cloze prompts and target strings; each rewrite prompt holds exactly one "{}" so the subject can
    be placed in it; target_new differs from target_true; hop lists and triple lists agree in length; at least
    one edit and no more edits than hops. What is only unusual (a rewrite question that spells the subject with
    other case, or not at all: no step of evaluation reads it) is reported by `case_notes`, not raised.
    """
    case_id = d.get("case_id") if isinstance(d, dict) else None
    _require(case_id, "", d, CASE_KEYS)
    if not isinstance(case_id, int | str) or isinstance(case_id, bool):
        raise MQuAKEFormatError(case_id, "case_id", "expected an integer or string id")

    rewrites = d["requested_rewrite"]
    if not isinstance(rewrites, list) or not rewrites:
        raise MQuAKEFormatError(case_id, "requested_rewrite", "expected a non-empty list of edits")
    for i, r in enumerate(rewrites):
        p = f"requested_rewrite[{i}]"
        _require(case_id, p, r, REWRITE_KEYS)
        for k in ("prompt", "relation_id", "subject", "question"):
            _nonempty_str(case_id, f"{p}.{k}", r[k])
        n_slots = r["prompt"].count("{}")
        if n_slots != 1:
            raise MQuAKEFormatError(
                case_id, f"{p}.prompt", f"needs exactly one '{{}}' where the subject goes, found {n_slots}: {r['prompt']!r}"
            )
        try:
            r["prompt"].format("x")
        except (IndexError, KeyError, ValueError) as e:
            raise MQuAKEFormatError(case_id, f"{p}.prompt", f"is not a format template ({e}): {r['prompt']!r}") from None
        _check_target(case_id, f"{p}.target_new", r["target_new"])
        _check_target(case_id, f"{p}.target_true", r["target_true"])
        if r["target_new"]["str"].strip() == r["target_true"]["str"].strip():
            raise MQuAKEFormatError(case_id, f"{p}.target_new",
                                    f"equals target_true ({r['target_true']['str']!r}): there is nothing to edit")

    _str_list(case_id, "questions", d["questions"], allow_empty=False)
    for k in ("answer", "new_answer"):
        _nonempty_str(case_id, k, d[k])
    for k in ("answer_alias", "new_answer_alias"):
        _str_list(case_id, k, d[k])

    n_hops = None
    for key in ("single_hops", "new_single_hops"):
        hops = d[key]
        if not isinstance(hops, list) or not hops:
            raise MQuAKEFormatError(case_id, key, "expected a non-empty list of hops")
        if n_hops is not None and len(hops) != n_hops:
            raise MQuAKEFormatError(case_id, key, f"has {len(hops)} hops but single_hops has {n_hops}")
        n_hops = len(hops)
        for i, h in enumerate(hops):
            p = f"{key}[{i}]"
            _require(case_id, p, h, HOP_KEYS)
            for k in ("question", "cloze", "answer"):
                _nonempty_str(case_id, f"{p}.{k}", h[k])
            _str_list(case_id, f"{p}.answer_alias", h["answer_alias"])
    if len(rewrites) > n_hops:
        raise MQuAKEFormatError(case_id, "requested_rewrite", f"{len(rewrites)} edits for a {n_hops}-hop chain")

    orig = d["orig"]
    _require(case_id, "orig", orig, ORIG_KEYS)
    for k in ORIG_KEYS:
        _check_triples(case_id, f"orig.{k}", orig[k])
    for k in ("triples", "triples_labeled", "new_triples", "new_triples_labeled"):
        if len(orig[k]) != n_hops:
            raise MQuAKEFormatError(case_id, f"orig.{k}", f"has {len(orig[k])} triples for {n_hops} hops")
    idx = orig.get("edit_triples_idx")
    if idx is not None and (not isinstance(idx, list) or any(not isinstance(i, int) or not 0 <= i < n_hops for i in idx)):
        raise MQuAKEFormatError(case_id, "orig.edit_triples_idx", f"expected hop indices in [0, {n_hops}), got {idx!r}")


def case_notes(d: dict[str, Any]) -> list[str]:
    """What is unusual about a (valid) case but does not stop its evaluation, as readable notes."""
    notes = []
    for i, r in enumerate(d.get("requested_rewrite", ())):
        subject, question = r.get("subject", ""), r.get("question", "")
        if subject in question:
            continue
        how = "with different case" if subject.lower() in question.lower() else "not at all"
        notes.append(f"requested_rewrite[{i}].question mentions the subject {subject!r} {how}: {question!r}")
    return notes


# ----------------------------------------------------------------------------- loading and saving


def _unflatten(d: dict[str, Any]) -> dict[str, Any]:
    """Undo the flattening the hub's parquet export applies (`orig_triples`, `target_new_str`, ...)."""
    d = dict(d)
    if "orig" not in d and any(k.startswith("orig_") for k in d):
        d["orig"] = {k[len("orig_"):]: d.pop(k) for k in list(d) if k.startswith("orig_")}
    rewrites = []
    for r in d.get("requested_rewrite") or []:
        r = dict(r)
        for t in ("target_new", "target_true"):
            if t not in r and f"{t}_str" in r:
                r[t] = {"str": r.pop(f"{t}_str"), "id": r.pop(f"{t}_id", None)}
        rewrites.append(r)
    if "requested_rewrite" in d:
        d["requested_rewrite"] = rewrites
    return d


def _load_from_hub(name: str) -> list[dict[str, Any]]:
    split = HUB_SPLITS[name.lower()]
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise FileNotFoundError(
            f"MQuAKE {name!r} is not a local file and HF_HUB_OFFLINE is set, so it cannot be fetched from "
            f"{HUB_DATASET} (split {split}). Download the official JSON (github.com/princeton-nlp/MQuAKE, "
            "datasets/) and pass its path."
        )
    try:
        from datasets import load_dataset

        ds = load_dataset(HUB_DATASET, split=split)
    except Exception as e:  # network errors come in many types
        raise FileNotFoundError(
            f"could not fetch MQuAKE {name!r} from the hub ({HUB_DATASET}, split {split}): {e}. "
            "Pass the path of a local MQuAKE JSON file instead."
        ) from e
    return [_unflatten(dict(row)) for row in ds]


def read_mquake_json(path_or_name: str | os.PathLike) -> list[dict[str, Any]]:
    """The raw case dicts of a local MQuAKE JSON file, or of a named split fetched through `datasets`."""
    path = Path(path_or_name).expanduser()
    if path.is_dir():
        raise MQuAKEFormatError(None, str(path), "is a directory; give the JSON file of cases inside it")
    if path.exists():
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as e:
            raise MQuAKEFormatError(None, str(path), f"is not UTF-8 text ({e.reason} at byte {e.start}); JSON files "
                                                     "are UTF-8: re-save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None
        except json.JSONDecodeError as e:
            raise MQuAKEFormatError(None, str(path), f"is not valid JSON ({e})") from None
        if isinstance(raw, dict) and "cases" in raw:
            raw = raw["cases"]
        if not isinstance(raw, list):
            raise MQuAKEFormatError(None, str(path), f"expected a JSON list of cases, got {type(raw).__name__}")
        return raw
    name = str(path_or_name)
    if name.lower() in HUB_SPLITS:
        return _load_from_hub(name)
    raise FileNotFoundError(
        f"{name} is neither an existing MQuAKE JSON file nor a known name ({sorted(HUB_SPLITS)})"
    )


def load_mquake(
    path_or_name: str | os.PathLike, validate: bool = True, limit: int | None = None
) -> list[MQuAKECase]:
    """Load MQuAKE cases from a local JSON file (official CF-3k-v2 / CF / T, MQuAKE-hard, or ours) or
    by name ("CF-3k-v2", "CF", "T", ...) through `datasets` when a hub is reachable.

        import ace_interp as ai
        cases = ai.load_mquake("assets/real_facts/smollm2_known.json")
        case = cases[0]
        case.questions, case.new_answer, case.requested_rewrite    # 3 paraphrases, the edited answer, the edits

    Malformed cases raise `MQuAKEFormatError` naming the case id and field. Duplicate case ids too.
    Unusual but usable cases (`case_notes`) load, with one logged warning summarising them.
    """
    cases, invalid = load_mquake_checked(path_or_name, validate=validate, limit=limit)
    if invalid:
        raise invalid[0]
    return cases


def load_mquake_checked(
    path_or_name: str | os.PathLike, validate: bool = True, limit: int | None = None
) -> tuple[list[MQuAKECase], list[MQuAKEFormatError]]:
    """(the valid cases, one `MQuAKEFormatError` per invalid case): one bad case does not sink a file.

        cases, invalid = load_mquake_checked("cases.json")
        print(len(invalid), [e.case_id for e in invalid])
    """
    raw = read_mquake_json(path_or_name)
    if limit is not None:
        raw = raw[:limit]
    cases, invalid, noted = [], [], []
    seen: set = set()
    for d in raw:
        try:
            case = MQuAKECase.from_dict(d, validate=validate)
            if case.case_id in seen:
                raise MQuAKEFormatError(case.case_id, "case_id", "appears more than once in the file")
        except MQuAKEFormatError as e:
            invalid.append(e)
            continue
        seen.add(case.case_id)
        cases.append(case)
        if validate and case_notes(d):
            noted.append(case.case_id)
    if noted:
        log.warning("%d of %d cases in %s are unusual but usable (e.g. a rewrite question that spells the subject with "
                    "other case; `mquake.case_notes`): case ids %s", len(noted), len(raw), path_or_name,
                    noted[:10] + (["..."] if len(noted) > 10 else []))
    log.info("loaded %d MQuAKE cases from %s (%d invalid)", len(cases), path_or_name, len(invalid))
    return cases, invalid


def check_unique_ids(cases: list[MQuAKECase]) -> list[MQuAKECase]:
    """`cases`, unchanged; a case id that appears twice raises `MQuAKEFormatError`."""
    seen: set = set()
    for c in cases:
        if c.case_id in seen:
            raise MQuAKEFormatError(c.case_id, "case_id", "appears more than once in the file")
        seen.add(c.case_id)
    return cases


def save_mquake(cases: Iterable[MQuAKECase | dict[str, Any]], path: str | os.PathLike, indent: int | None = 1) -> Path:
    """Write cases as an MQuAKE JSON list (validated first, so a file we write always loads)."""
    out = []
    for c in cases:
        d = c.to_dict() if isinstance(c, MQuAKECase) else c
        validate_case(d)
        out.append(d)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=indent, ensure_ascii=False) + "\n")
    return path
