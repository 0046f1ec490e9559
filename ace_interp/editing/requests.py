"""Edit requests in the CounterFact / MQuAKE `requested_rewrite` form, and their validation.

A request says: in `prompt` (a template whose `{}` is the subject), the model should now continue with
`target_new` instead of `target_true`:

    {"prompt": "The capital of {} is", "subject": "France", "target_new": {"str": "Rome"},
     "target_true": {"str": "Paris"}}

Every editor validates the *whole* batch before computing anything, so one bad request stops the batch
with an `EditRequestError` naming it and the model is never touched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from transformer_lens.model_bridge import TransformerBridge


class EditRequestError(ValueError):
    """A request cannot be edited (no subject slot, empty target, ...); nothing was written."""


@dataclass(frozen=True)
class EditRequest:
    """One counterfactual fact: `prompt.format(subject)` should be continued by `target_new`.

        import ace_interp as ai
        request = ai.EditRequest("The capital of {} is", "France", "Rome", "Paris")  # prompt, subject, new, true
        request.text                                   # 'The capital of France is'
        ai.EditRequest.from_rewrite({"prompt": "The capital of France is", "subject": "France",
                                     "target_new": {"str": "Rome"}})             # an MQuAKE/CounterFact rewrite

    `target_true` (optional) is the answer being replaced; `validate_requests` checks a batch against a model.
    """

    prompt: str  # template with exactly one "{}" where the subject goes
    subject: str
    target_new: str
    target_true: str | None = None
    case_id: str | int | None = None

    @property
    def text(self) -> str:
        """The prompt with the subject filled in."""
        return self.prompt.replace("{}", self.subject)

    @property
    def prefix_through_subject(self) -> str:
        """The prompt text up to and including the subject (its last token is where keys are read)."""
        return self.prompt[: self.prompt.index("{}")] + self.subject

    def describe(self) -> str:
        return f"[{self.text!r} -> {self.target_new!r}]"

    @classmethod
    def from_rewrite(cls, rewrite: Mapping, case_id: str | int | None = None) -> "EditRequest":
        """From a CounterFact/MQuAKE `requested_rewrite` dict (targets as {"str": ...} or plain strings).

        A prompt that spells the subject out instead of `{}` gets its first occurrence replaced by `{}`.
        """
        missing = [k for k in ("prompt", "subject", "target_new") if k not in rewrite]
        if missing:
            raise EditRequestError(f"requested_rewrite {dict(rewrite)!r} lacks {missing}")

        def text(v) -> str | None:
            if v is None:
                return None
            if isinstance(v, Mapping):
                if "str" not in v:
                    raise EditRequestError(f"target {v!r} has no 'str' field")
                return str(v["str"])
            return str(v)

        if rewrite["target_new"] is None:
            raise EditRequestError(f"requested_rewrite {dict(rewrite)!r} has target_new None")
        prompt, subject = str(rewrite["prompt"]), str(rewrite["subject"])
        if "{}" not in prompt and subject and subject in prompt:
            prompt = prompt.replace(subject, "{}", 1)
        return cls(
            prompt=prompt,
            subject=subject,
            target_new=text(rewrite["target_new"]) or "",
            target_true=text(rewrite.get("target_true")),
            case_id=rewrite.get("case_id", case_id),
        )

    def to_rewrite(self) -> dict:
        out = {"prompt": self.prompt, "subject": self.subject, "target_new": {"str": self.target_new}}
        if self.target_true is not None:
            out["target_true"] = {"str": self.target_true}
        return out


# ACE's multi-hop material of a batch of requests (editing.ace): each refers to its request by index
@dataclass(frozen=True)
class HopPrompt:
    """A multi-hop prompt of an edit: it mentions request `request`'s subject; `answer` is the new answer."""

    request: int
    prompt: str
    answer: str


@dataclass(frozen=True)
class ImplicitSubject:
    """A noun phrase that names request `request`'s subject only through another entity: "dmitri costa 's
    birthplace" for marrakesh. Request `request`'s prompt with the phrase in the subject's place ("dmitri costa 's
    birthplace 's nation is") is a multi-hop question whose bridge entity is the edited subject."""

    request: int
    phrase: str


def as_requests(items: EditRequest | Mapping | Sequence[EditRequest | Mapping]) -> list[EditRequest]:
    """Normalise one request / a `requested_rewrite` dict / a list of either into EditRequests."""
    if isinstance(items, (EditRequest, Mapping)):
        items = [items]
    out = []
    for i, item in enumerate(items):
        if isinstance(item, EditRequest):
            out.append(item)
        elif isinstance(item, Mapping):
            out.append(EditRequest.from_rewrite(item, case_id=item.get("case_id")))
        else:
            raise EditRequestError(f"request {i} is a {type(item).__name__}, not an EditRequest or dict")
    if not out:
        raise EditRequestError("no edit requests given")
    return out


def target_token_ids(bridge: TransformerBridge, target: str) -> list[int]:
    """Token ids of a target as it continues a prompt: with one leading space, no special tokens.

    Tokenising the target on its own (rather than prompt+target) keeps the prompt's own tokens fixed;
    the leading space is how a word follows the prompt's last word in BPE and word-level vocabularies.
    """
    return list(bridge.tokenizer(" " + target.strip(), add_special_tokens=False)["input_ids"])


def _unknown_words(bridge: TransformerBridge, text: str) -> list[str]:
    """The words of `text` a tokenizer with an unknown token cannot represent (empty for byte-level BPE)."""
    unk = bridge.tokenizer.unk_token_id
    if unk is None:
        return []
    return [w for w in text.split() if unk in bridge.tokenizer(" " + w, add_special_tokens=False)["input_ids"]]


def validate_requests(bridge: TransformerBridge, requests) -> list[EditRequest]:
    """Check every request of a batch; raise `EditRequestError` naming the first bad one.

    Refused: a prompt without exactly one `{}`; an empty or non-string subject/target; a subject or target
    with words outside a word-level vocabulary (an unknown-word subject would make the edit rewrite every prompt
    holding any unknown word); target_new equal to target_true; and two requests with the same prompt and
    subject but different targets (which one wins would depend on the method).
    """
    requests = as_requests(requests)
    seen: dict[tuple[str, str], int] = {}
    for i, r in enumerate(requests):
        for name in ("prompt", "subject", "target_new"):
            value = getattr(r, name)
            if not isinstance(value, str):
                raise EditRequestError(f"edit request {i}: {name} must be a string, got {value!r}")
        if r.target_true is not None and not isinstance(r.target_true, str):
            raise EditRequestError(f"edit request {i}: target_true must be a string or None, got {r.target_true!r}")
        where = f"edit request {i} {r.describe()}"
        if r.prompt.count("{}") != 1:
            hint = f"subject {r.subject!r} is not in prompt {r.prompt!r}"
            if r.prompt.count("{}") == 0 and r.subject and r.subject.lower() in r.prompt.lower():
                at = r.prompt.lower().index(r.subject.lower())
                hint = (f"the prompt spells the subject {r.subject!r} as {r.prompt[at:at + len(r.subject)]!r} "
                        f"(different case); mark the subject with '{{}}' or match its case")
            raise EditRequestError(f"{where}: the prompt must contain the subject slot '{{}}' exactly once ({hint})")
        if not r.subject.strip():
            raise EditRequestError(f"{where}: the subject is empty")
        if not r.target_new.strip():
            raise EditRequestError(f"{where}: target_new is empty")
        ids = target_token_ids(bridge, r.target_new)
        if not ids:
            raise EditRequestError(f"{where}: target_new {r.target_new!r} tokenises to nothing")
        for name, text in (("subject", r.subject), ("target_new", r.target_new)):
            unknown = _unknown_words(bridge, text)
            if unknown:
                raise EditRequestError(
                    f"{where}: {name} {text!r} has words outside the model's vocabulary {unknown} "
                    "(they would be read as the unknown token)"
                )
        if r.target_true is not None and r.target_new.strip() == r.target_true.strip():
            raise EditRequestError(f"{where}: target_new equals target_true; there is nothing to edit")
        subject_ids = bridge.to_tokens(r.prefix_through_subject)[0]
        if len(subject_ids) == 0:
            raise EditRequestError(f"{where}: the subject tokenises to nothing")
        key = (r.prompt, r.subject)
        if key in seen and requests[seen[key]].target_new.strip() != r.target_new.strip():
            raise EditRequestError(
                f"{where} conflicts with edit request {seen[key]} {requests[seen[key]].describe()}: the same prompt "
                "and subject with different targets in one batch"
            )
        seen.setdefault(key, i)
    return requests
