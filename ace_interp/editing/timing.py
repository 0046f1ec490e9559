"""Wall-time split of an edit into its stages (for `AppliedEdit.info["timings"]` and the benchmark).

    with stage_timer() as seconds:          # collects {stage: seconds}
        with stage("keys"):
            ...

Stages used by the editors: "contexts" (context prefixes), "covariance" (key statistics: disk cache or a
corpus pass, incl. sampling the corpus text when cold), "targets" (target-value optimisation), "keys" (keys
and current site outputs), "solve" (Cholesky factors, the key→value solves and the intermediate writes).
Nested stages count in the inner one only (the enclosing stage's clock pauses), so the stages add up to at
most the edit's wall time. Without an active timer `stage` costs one context-variable lookup.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field


@dataclass
class _Timer:
    seconds: dict[str, float] = field(default_factory=dict)
    stack: list[list] = field(default_factory=list)  # [name, running since]


_ACTIVE: ContextVar[_Timer | None] = ContextVar("ace_edit_stage_timer", default=None)


@contextlib.contextmanager
def stage_timer() -> Iterator[dict[str, float]]:
    """Collect stage seconds into the yielded dict (filled as stages finish)."""
    timer = _Timer()
    token = _ACTIVE.set(timer)
    try:
        yield timer.seconds
    finally:
        _ACTIVE.reset(token)


def _book(timer: _Timer, now: float) -> None:
    name, since = timer.stack[-1]
    timer.seconds[name] = timer.seconds.get(name, 0.0) + now - since


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Time the block as stage `name` in the active timer (if any); an enclosing stage is paused."""
    timer = _ACTIVE.get()
    if timer is None:
        yield
        return
    now = time.perf_counter()
    if timer.stack:
        _book(timer, now)
    timer.stack.append([name, now])
    try:
        yield
    finally:
        end = time.perf_counter()
        _book(timer, end)
        timer.stack.pop()
        if timer.stack:
            timer.stack[-1][1] = end  # the enclosing stage resumes now
