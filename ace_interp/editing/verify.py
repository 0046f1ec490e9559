"""Every write checked before it is kept: finite logits on the edit prompts, and each request's target reached.

    applied = edit(model, requests, method="memit", verify="greedy", on_failure="warn")
    applied.verification.success            # False: some request's target was not reached
    applied.verification.failed             # [RequestCheck(request=..., success=False, p_new=8e-12, ...)]

A request is *reached* when, on `prompt.format(subject)`, the model now

  * "greedy": produces every token of `target_new` greedily (teacher-forced argmax at each target position), or
  * "prob":   gives `target_new` a higher sequence probability than `target_true` (CounterFact's efficacy
              score; requests without `target_true` fall back to "greedy").

What a miss does is the caller's choice (`on_failure`): "raise" undoes the write and raises
`EditVerificationError`, "warn" (the default) keeps it and emits an `EditWarning` naming the requests, "keep"
keeps it silently (the result still records every check). Logits that are NaN/inf on an edit prompt are never
kept: a finite but huge update (3e38) passes the weight layer's own finiteness check and still breaks the
forward pass, so such a write is undone and `EditVerificationError` raised, whatever `on_failure` says.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from ace_interp.editing.keys import encode, hf_runner
from ace_interp.editing.requests import EditRequest, target_token_ids

log = logging.getLogger(__name__)

CRITERIA = ("greedy", "prob")
ON_FAILURE = ("raise", "warn", "keep")


class EditVerificationError(RuntimeError):
    """A write failed its check (target not reached with on_failure="raise", or non-finite logits); it was undone."""


class EditWarning(UserWarning):
    """An edit was kept although a request's target was not reached, or a side-effect alarm went off."""


@dataclass(frozen=True)
class TargetScores:
    """Per prompt: log p(target | prompt) summed over the target's tokens, whether greedy decoding produces the
    target, and whether the logits on the prompt and target positions are finite."""

    log_prob: Float[Tensor, " n"]
    greedy: Bool[Tensor, " n"]
    finite: Bool[Tensor, " n"]


def target_scores(bridge: TransformerBridge, prompts: Sequence[str], targets: Sequence[str],
                  batch_size: int = 64) -> TargetScores:
    """Teacher-forced scores of `targets[i]` continuing `prompts[i]` (targets with one leading space, as editors
    tokenise them: `requests.target_token_ids`), in right-padded batches of the bridge's fast path.

        target_scores(model, ["The capital of France is"], ["Paris"]).greedy   # tensor([True])
    """
    if len(prompts) != len(targets):
        raise ValueError(f"{len(prompts)} prompts but {len(targets)} targets")
    runner = hf_runner(bridge)
    pad = bridge.tokenizer.pad_token_id or 0
    log_probs, greedy, finite = [], [], []
    for start in range(0, len(prompts), batch_size):
        rows = []
        for prompt, target in zip(prompts[start:start + batch_size], targets[start:start + batch_size]):
            ids, tgt = encode(bridge, prompt), target_token_ids(bridge, target)
            rows.append((ids + tgt[:-1], len(ids) - 1, tgt))
        width = max(len(r[0]) for r in rows)
        tokens = torch.full((len(rows), width), pad, dtype=torch.long)
        for j, (ids, _, _) in enumerate(rows):
            tokens[j, : len(ids)] = torch.tensor(ids)
        with torch.no_grad():
            logits = runner.logits(tokens.to(bridge.cfg.device)).to(torch.float64)
        for j, (ids, first, tgt) in enumerate(rows):
            positions = torch.arange(first, first + len(tgt), device=logits.device)
            row = logits[j, positions]  # [len(tgt), vocab]: position first + t predicts target token t
            expected = torch.tensor(tgt, device=logits.device)
            ok = bool(torch.isfinite(logits[j, : len(ids)]).all())
            finite.append(ok)
            log_probs.append(float(row.log_softmax(-1).gather(-1, expected[:, None]).sum()) if ok else float("nan"))
            greedy.append(ok and bool((row.argmax(-1) == expected).all()))
    return TargetScores(torch.tensor(log_probs, dtype=torch.float64), torch.tensor(greedy), torch.tensor(finite))


@dataclass(frozen=True)
class RequestCheck:
    """Whether one request's target was reached after the write (p_new, p_true: sequence probabilities)."""

    request: EditRequest
    success: bool
    finite: bool
    greedy: bool
    p_new: float
    p_true: float | None

    def describe(self) -> str:
        versus = "" if self.p_true is None else f" vs p(true) = {self.p_true:.3g}"
        return f"{self.request.describe()} p(new) = {self.p_new:.3g}{versus}, greedy {'yes' if self.greedy else 'no'}"


@dataclass(frozen=True)
class EditVerification:
    """The checks of one write, one per request, under `criterion`."""

    criterion: str
    checks: tuple[RequestCheck, ...]

    @property
    def success(self) -> bool:
        return all(c.success for c in self.checks)

    @property
    def finite(self) -> bool:
        return all(c.finite for c in self.checks)

    @property
    def failed(self) -> list[RequestCheck]:
        return [c for c in self.checks if not c.success]

    def summary(self) -> str:
        return f"{len(self.checks) - len(self.failed)}/{len(self.checks)} targets reached ({self.criterion})"


def check_requests(bridge: TransformerBridge, requests: Sequence[EditRequest], criterion: str = "greedy") -> EditVerification:
    """Score every request's target on its own prompt in the model as it is now (see the module docstring)."""
    if criterion not in CRITERIA:
        raise ValueError(f"unknown verification criterion {criterion!r}; expected one of {CRITERIA}")
    prompts = [r.text for r in requests]
    new = target_scores(bridge, prompts, [r.target_new for r in requests])
    with_true = [i for i, r in enumerate(requests) if r.target_true is not None]
    true = target_scores(bridge, [prompts[i] for i in with_true], [requests[i].target_true for i in with_true]) if with_true else None
    p_true: dict[int, float] = {i: float(true.log_prob[j].exp()) for j, i in enumerate(with_true)} if true else {}
    checks = []
    for i, r in enumerate(requests):
        finite = bool(new.finite[i]) and (i not in p_true or bool(true.finite[with_true.index(i)]))
        p_new = float(new.log_prob[i].exp())
        if criterion == "prob" and i in p_true:
            # sequence probabilities compared in log space (both may underflow to 0 as probabilities)
            reached = bool(new.log_prob[i] > true.log_prob[with_true.index(i)])
        else:
            reached = bool(new.greedy[i])
        checks.append(RequestCheck(r, finite and reached, finite, bool(new.greedy[i]), p_new, p_true.get(i)))
    return EditVerification(criterion, tuple(checks))


def act_on_verification(verification: EditVerification, on_failure: str, undo, method: str) -> None:
    """Apply the caller's policy to a write's checks: `undo()` it and raise, warn, or keep (module docstring)."""
    if on_failure not in ON_FAILURE:
        raise ValueError(f"on_failure must be one of {ON_FAILURE}, got {on_failure!r}")
    if not verification.finite:
        undo()
        bad = "; ".join(c.request.describe() for c in verification.checks if not c.finite)
        raise EditVerificationError(f"{method} made the logits non-finite on {bad}; the write was undone")
    if verification.success or on_failure == "keep":
        return
    failed = "; ".join(c.describe() for c in verification.failed)
    message = f"{method}: {len(verification.failed)} of {len(verification.checks)} targets not reached ({verification.criterion}): {failed}"
    if on_failure == "raise":
        undo()
        raise EditVerificationError(message + "; the write was undone")
    warnings.warn(message + " (kept; on_failure='raise' undoes such writes)", EditWarning, stacklevel=3)

