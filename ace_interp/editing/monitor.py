"""A side-effect monitor: facts the model knew and a perplexity sample, checked after edits.

    monitor = SideEffectMonitor(model)                  # default probes: facts the model gets right
    for batch in batches:
        edit(model, batch, method="pmet", monitor=monitor)   # checks after every edit (every=1)
    monitor.readings[-1]   # MonitorReading(n_edits=100, correct=7, n=200, perplexity=..., alarms=("accuracy ...",))

At construction the monitor keeps the probe facts the unedited model answers correctly (greedy, every token of
the answer: `verify.target_scores`) and measures the perplexity of the text sample. After each edit (or every
`every` edits) it re-measures both, on the probes whose prompt mentions none of the subjects edited so far
("untouched" facts), and emits an `EditWarning` when accuracy falls below `min_accuracy` or perplexity rises
above `max_perplexity_ratio` × its starting value. 100 sequential PMET edits on toy-gptj took such accuracy
from 0.91 to 0.035 without a word before this existed (issue 26).
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

from transformer_lens.model_bridge import TransformerBridge

from ace_interp.editing.covariance import world_corpus_path
from ace_interp.editing.requests import EditRequest
from ace_interp.editing.verify import EditWarning, target_scores
from ace_interp.model.likelihood import perplexity
from ace_interp.model.loading import ASSETS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProbeSet:
    """Cloze prompts with their answers (facts to keep) and texts to measure perplexity on."""

    prompts: tuple[str, ...]
    answers: tuple[str, ...]
    texts: tuple[str, ...] = ()

    def __post_init__(self):
        if len(self.prompts) != len(self.answers):
            raise ValueError(f"{len(self.prompts)} probe prompts but {len(self.answers)} answers")

    @classmethod
    def from_mquake(cls, cases: Sequence[dict], texts: Sequence[str] = ()) -> "ProbeSet":
        """The unedited single-hop facts (`single_hops[*].cloze` → `answer`) of MQuAKE-format cases, once each."""
        pairs = dict.fromkeys((h["cloze"], h["answer"]) for c in cases for h in c.get("single_hops", ())
                              if h.get("cloze") and h.get("answer"))
        return cls(tuple(p for p, _ in pairs), tuple(a for _, a in pairs), tuple(texts))


def default_probes(bridge: TransformerBridge, n_texts: int = 20, n_facts: int = 400) -> ProbeSet:
    """A synthetic-world toy: `n_facts` of the world's single-hop facts, evenly spread over its list, and its
    training sentences; any other model: the single-hop facts of the curated real facts
    (assets/real_facts/smollm2_known.json), and `n_texts` of them written out as sentences."""
    corpus_path = world_corpus_path(bridge)
    if corpus_path is not None:
        facts = json.loads((corpus_path.parent / "eval_split.json").read_text())["single_hop"]
        prompts, answers = zip(*[(p, t) for p, t, *_ in facts[:: max(1, len(facts) // n_facts)][:n_facts]])
        lines = [l for l in corpus_path.read_text(encoding="utf-8").splitlines() if l.strip()]
        step = max(1, len(lines) // n_texts)
        return ProbeSet(tuple(prompts), tuple(answers), tuple(lines[::step][:n_texts]))
    cases = json.loads((ASSETS / "real_facts" / "smollm2_known.json").read_text(encoding="utf-8"))
    probes = ProbeSet.from_mquake(cases)
    # the perplexity sample: the facts written out as sentences (no text is sampled from the model, which on a
    # CPU takes minutes the first time)
    sentences = [f"{p} {a}." for p, a in zip(probes.prompts, probes.answers)]
    step = max(1, len(sentences) // n_texts)
    return ProbeSet(probes.prompts, probes.answers, tuple(sentences[::step][:n_texts]))


@dataclass(frozen=True)
class MonitorReading:
    """One check: `correct` of `n` untouched probe facts still answered, the sample's perplexity, alarms raised."""

    n_edits: int
    correct: int
    n: int
    perplexity: float
    alarms: tuple[str, ...] = ()

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else float("nan")

    def describe(self) -> str:
        return (f"after {self.n_edits} edit(s): {self.correct}/{self.n} untouched known facts "
                f"({self.accuracy:.3f}), perplexity {self.perplexity:.3g}")


@dataclass
class SideEffectMonitor:
    """Probe facts the model knew and a perplexity sample, re-measured after edits (module docstring)."""

    bridge: TransformerBridge
    probes: ProbeSet | None = None
    every: int = 1
    min_accuracy: float = 0.8
    max_perplexity_ratio: float = 1.5
    max_probes: int = 200
    warn: bool = True
    readings: list[MonitorReading] = field(default_factory=list)
    edited_subjects: set[str] = field(default_factory=set)
    n_edits: int = 0

    def __post_init__(self):
        if self.every < 1:
            raise ValueError(f"every must be >= 1, got {self.every}")
        probes = default_probes(self.bridge) if self.probes is None else self.probes
        if not probes.prompts:
            raise ValueError("the probe set holds no facts")
        known = target_scores(self.bridge, probes.prompts, probes.answers).greedy
        keep = [i for i in range(len(probes.prompts)) if known[i]][: self.max_probes]
        if not keep:
            raise ValueError(f"the model answers none of the {len(probes.prompts)} probe facts: nothing to monitor")
        self.probes = ProbeSet(tuple(probes.prompts[i] for i in keep), tuple(probes.answers[i] for i in keep), probes.texts)
        self.baseline_perplexity = perplexity(self.bridge, self.probes.texts) if self.probes.texts else float("nan")
        log.info("side-effect monitor: %d known facts (of %d), perplexity %.3g", len(keep), len(probes.prompts),
                 self.baseline_perplexity)

    def untouched(self) -> list[int]:
        """Indices of probes whose prompt mentions no subject edited so far (compared case-insensitively)."""
        subjects = [s.lower() for s in self.edited_subjects]
        return [i for i, p in enumerate(self.probes.prompts) if not any(s in p.lower() for s in subjects)]

    def check(self) -> MonitorReading:
        """Measure now; warn (`EditWarning`) and record the alarms when a threshold is crossed."""
        idx = self.untouched()
        scores = target_scores(self.bridge, [self.probes.prompts[i] for i in idx], [self.probes.answers[i] for i in idx]) if idx else None
        correct = int(scores.greedy.sum()) if scores is not None else 0
        ppl = perplexity(self.bridge, self.probes.texts) if self.probes.texts else float("nan")
        alarms = []
        if idx and correct / len(idx) < self.min_accuracy:
            alarms.append(f"accuracy on {len(idx)} untouched facts the model knew fell to {correct / len(idx):.3f} "
                          f"(threshold {self.min_accuracy})")
        if not ppl <= self.max_perplexity_ratio * self.baseline_perplexity and not math.isnan(self.baseline_perplexity):
            alarms.append(f"perplexity rose from {self.baseline_perplexity:.3g} to {ppl:.3g} "
                          f"(threshold ×{self.max_perplexity_ratio})")
        reading = MonitorReading(self.n_edits, correct, len(idx), ppl, tuple(alarms))
        self.readings.append(reading)
        if alarms and self.warn:
            warnings.warn(f"side effects after {self.n_edits} edit(s): " + "; ".join(alarms), EditWarning, stacklevel=3)
        return reading

    def after_edit(self, requests: Sequence[EditRequest]) -> MonitorReading | None:
        """Count an edit of `requests`; check when the count is a multiple of `every`."""
        self.n_edits += 1
        self.edited_subjects.update(r.subject for r in requests)
        return self.check() if self.n_edits % self.every == 0 else None
