"""The batched MQuAKE protocol with MQuAKE-Remastered's contamination masking.

    >>> result = evaluate_batched(bridge, cases, ["pmet", "ace"], askings_for(bridge), batch_size=100)
    >>> result.per_case.groupby(["method", "edited"]).multi_hop.mean()   # edited and unedited cases apart

MQuAKE (Zhong et al. 2023) and MQuAKE-Remastered (Zhong et al., ICLR 2025) apply the edits of k cases at once
and ask every case. The cases are shuffled (seeded) and packed into batches of `batch_size` (None = all cases
in one batch): each case goes to the first batch with room that holds no case it may not meet (`make_batches`).
`packing="contradictions"` (the default) keeps apart two cases that rewrite one fact (subject, relation) to
different objects; MQuAKE-CF-3k-v2 has no such pairs, so there this is MQuAKE's plain cut. `"contamination"`
(the main table's) also keeps apart a case whose edit contaminates another's edited path (below): small worlds
(our toys, SmolLM2's curated file) have many such pairs, each of which would otherwise give a case a write of its
own; packed apart, every batch is one write that all its cases are asked under. For each batch and method:

* the *edited* cases are the batch's cases, scored against their new answers; the *unedited* cases are
  `n_unedited` other cases (seeded; default as many as the batch, as far as there are) whose original path no
  edit of the batch touches, scored against their original answers — an edit must not break the multi-hop
  facts it has nothing to do with (a case whose path the batch rewrites has something to do with it);
* **contamination masking** (MQuAKE-Remastered, `get_masked_edits` in henryzhongsc/MQuAKE-Remastered,
  data_utils.py): a case's *path* is its edited chain (`orig.new_triples`) when the case is edited in this
  batch and its original chain (`orig.triples`) otherwise. An edit (s, r, o*) of the batch (its
  `orig.edit_triples` entry, matched by Wikidata ids) *contaminates* the case when some hop (s', r', o') of
  that path has s' = s and r' = r but o' ≠ o*: applied, it would change a fact the case's label relies on,
  so the label would be wrong. For each asked case those edits are masked (left out of the write), as
  MQuAKE-Remastered's "edits without contamination" do. Edits that agree with the path (o' = o*) are kept.
  An edit of a case never contaminates that case's own edited path.
* cases are grouped by the set of edits masked for them; each group gets one write of the batch's edits less
  its masked ones (most cases mask nothing and share the full write), is asked, and the write is undone.
  Identical requests of different cases are written once. Two cases asking contradictory edits of the same
  fact both stay in the write of a third case whose path neither touches (as in Remastered's edit bank).

Rows carry `edited` (True: a case of the batch), `batch`, `n_written` (edits written for the case's group)
and `n_masked`; accuracies on edited and unedited cases are reported separately (`batched_summary`). The
unedited model's answers and the `known_only` filter are those of the per-case protocol (evaluation.protocol).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from ace_interp.data.mquake import MQuAKECase, Rewrite
from ace_interp.editing import EditRequest, HopPrompt, edit
from ace_interp.evaluation.checkpoint import Checkpoint, Shard, run_items
from ace_interp.model.likelihood import perplexity
from ace_interp.evaluation.protocol import (
    Asking,
    EvalResult,
    MethodRow,
    answered,
    edit_metrics,
    method_rows,
    saved_unedited_answers,
)

log = logging.getLogger(__name__)

# which cases `make_batches` keeps out of one batch
PACKINGS = ("plain", "contradictions", "contamination")


@dataclass(frozen=True)
class BatchEdit:
    """One requested rewrite of a case in a batch, with its Wikidata triple (subject, relation, new object)."""

    case_id: object
    triple: tuple[str, str, str]
    rewrite: Rewrite


def batch_edits(cases: Sequence[MQuAKECase]) -> list[BatchEdit]:
    """Every requested rewrite of `cases`, paired with its `orig.edit_triples` entry (same order, as in MQuAKE)."""
    out = []
    for case in cases:
        if len(case.orig.edit_triples) != len(case.requested_rewrite):
            raise ValueError(f"case {case.case_id!r}: {len(case.orig.edit_triples)} edit triples for "
                             f"{len(case.requested_rewrite)} requested rewrites")
        out += [BatchEdit(case.case_id, tuple(t), rw) for t, rw in zip(case.orig.edit_triples, case.requested_rewrite)]
    return out


def contaminating_edits(case: MQuAKECase, edits: Sequence[BatchEdit], edited: bool) -> list[int]:
    """Indices of `edits` that contaminate `case` (module docstring): same subject and relation as a hop of its
    path — the edited chain when `edited`, else the original one — with a different object."""
    path = case.orig.new_triples if edited else case.orig.triples
    return [i for i, e in enumerate(edits)
            if any(e.triple[0] == hop[0] and e.triple[1] == hop[1] and e.triple[2] != hop[2] for hop in path)]


def conflicting_edits(edits: Sequence[BatchEdit], masked: set[int]) -> set[int]:
    """Indices of unmasked edits that contradict another unmasked edit: the same prompt and subject, or the same
    fact (subject and relation ids, whatever the prompt's wording), with another target.

    Two cases of one batch (`batch_size` None; `make_batches` keeps them apart otherwise) can rewrite the same fact
    two ways. No single write holds both (`edit` refuses such a batch, `editing.requests.validate_requests`; worded
    two ways, the subject's key would be asked for two values), so for a case whose own path masks neither, both
    are masked too.
    """
    targets: dict[tuple[str, str], set[str]] = {}
    objects: dict[tuple[str, str], set[str]] = {}
    for i, e in enumerate(edits):
        if i not in masked:
            targets.setdefault((e.rewrite.prompt, e.rewrite.subject), set()).add(e.rewrite.target_new.text)
            objects.setdefault(e.triple[:2], set()).add(e.triple[2])
    return {i for i, e in enumerate(edits) if i not in masked
            and (len(targets[(e.rewrite.prompt, e.rewrite.subject)]) > 1 or len(objects[e.triple[:2]]) > 1)}


def masked_groups(asked: Sequence[tuple[MQuAKECase, bool]], edits: Sequence[BatchEdit]
                  ) -> dict[frozenset[int], list[tuple[MQuAKECase, bool]]]:
    """The asked (case, edited) pairs grouped by the set of edit indices masked for them (empty set first)."""
    groups: dict[frozenset[int], list[tuple[MQuAKECase, bool]]] = {}
    for case, is_edited in asked:
        masked = set(contaminating_edits(case, edits, is_edited))
        masked |= conflicting_edits(edits, masked)
        groups.setdefault(frozenset(masked), []).append((case, is_edited))
    return dict(sorted(groups.items(), key=lambda kv: (len(kv[0]), sorted(map(str, kv[0])))))


def written_requests(edits: Sequence[BatchEdit], masked: frozenset[int]) -> list[EditRequest]:
    """The requests a group gets: the batch's edits less the masked ones, identical requests once."""
    seen, out = set(), []
    for i, e in enumerate(edits):
        key = (e.rewrite.prompt, e.rewrite.subject, e.rewrite.target_new.text)
        if i in masked or key in seen:
            continue
        seen.add(key)
        out.append(EditRequest.from_rewrite(e.rewrite.to_dict(), case_id=e.case_id))
    return out


def make_batches(cases: Sequence[MQuAKECase], batch_size: int | None, seed: int, packing: str = "contradictions"
                 ) -> list[list[MQuAKECase]]:
    """Cases shuffled with `seed` and cut into batches of `batch_size` (None or 0: one batch of all). `packing`
    (module docstring) says which cases may not share a batch: each case joins the first batch with room that holds
    none it may not meet, else opens a new batch; without such pairs this is the plain cut of the shuffled list.

    * "plain": any may (MQuAKE's cut of CF-3k-v2; the masking handles every pair);
    * "contradictions": two cases whose edits give one fact (subject, relation) two objects;
    * "contamination": also a case whose edit contaminates another's *edited* path (`contaminating_edits`). No
      edited case of such a batch has an edit to mask, so the batch is one write that every case is asked under.
    """
    if packing not in PACKINGS:
        raise ValueError(f"unknown packing {packing!r}; expected one of {PACKINGS}")
    order = list(cases)
    random.Random(seed).shuffle(order)
    if not batch_size:
        return [order] if order else []
    if packing == "plain":
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]

    def facts(triples) -> dict[tuple[str, str], set[str]]:
        out: dict[tuple[str, str], set[str]] = {}
        for s, r, o in triples:
            out.setdefault((s, r), set()).add(o)
        return out

    def touches(edits: dict, path: dict) -> bool:  # an edit gives a fact of `path` another object
        return any(edited - {o} for fact, edited in edits.items() for o in path.get(fact, ()))

    # per batch: its cases, the objects its edits give each fact, and the facts its members' edited paths hold
    # (for "contradictions", the facts they edit: two edits of one fact meet there)
    batches: list[tuple[list[MQuAKECase], dict, dict]] = []
    for case in order:
        edits = facts(case.orig.edit_triples)
        path = facts(case.orig.new_triples) if packing == "contamination" else edits
        for members, held_edits, held_path in batches:
            if len(members) < batch_size and not touches(edits, held_path) and not touches(held_edits, path):
                members.append(case)
                for held, new in ((held_edits, edits), (held_path, path)):
                    for fact, objects in new.items():
                        held.setdefault(fact, set()).update(objects)
                break
        else:
            # copies: a batch's sets grow as cases join it (with "contradictions", `path` is `edits` itself)
            batches.append(([case], {f: set(o) for f, o in edits.items()}, {f: set(o) for f, o in path.items()}))
    return [members for members, _, _ in batches]


def unedited_cases(batch: Sequence[MQuAKECase], cases: Sequence[MQuAKECase], n: int, seed: object
                   ) -> list[MQuAKECase]:
    """A seeded sample of `n` (as far as there are) of `cases` outside `batch` whose original path no edit of the
    batch touches: the cases asked, unedited, after the batch's write."""
    in_batch = {c.case_id for c in batch}
    edits = batch_edits(batch)
    others = [c for c in cases if c.case_id not in in_batch and not contaminating_edits(c, edits, edited=False)]
    return random.Random(str(seed)).sample(others, min(n, len(others)))


def evaluate_batched(
    bridge: TransformerBridge,
    cases: Sequence[MQuAKECase],
    methods: Sequence[str | None | MethodRow],
    askings: Sequence[Asking],
    batch_size: int | None = 100,
    n_unedited: int | None = None,
    n_specificity: int = 5,
    hparams: dict[str, object] | None = None,
    hop_prompts: Callable[[MQuAKECase], list[HopPrompt]] | None = None,
    seed: int = 0,
    known_only: bool = True,
    perplexity_texts: Sequence[str] | None = None,
    progress: bool = True,
    checkpoint: Checkpoint | None = None,
    shard: Shard | None = None,
    packing: str = "contradictions",
) -> EvalResult:
    """The batched protocol (module docstring) for each edited method row; base rows as in `protocol.evaluate`.
    `packing` says which cases may not share a batch (`make_batches`). `checkpoint` and `shard` save and split the
    (row, batch) items as in `protocol.evaluate`."""
    askings = list(askings)
    rows_of = [r for r in method_rows(methods, hparams) if r.method is not None]
    unedited = saved_unedited_answers(bridge, cases, askings, checkpoint, n_specificity=n_specificity, seed=seed,
                                      perplexity_texts=perplexity_texts)
    usable = [c for c in cases if not known_only or any(unedited.known[a.label][c.case_id] for a in askings)]
    batches = make_batches(usable, batch_size, seed, packing)

    def run(item: tuple[MethodRow, int]) -> list[dict]:
        row, b = item
        batch = batches[b]
        edits = batch_edits(batch)
        outside = unedited_cases(batch, usable, len(batch) if n_unedited is None else n_unedited, f"{seed}-{b}")
        asked = [(c, True) for c in batch] + [(c, False) for c in outside]
        return [r for masked, group in masked_groups(asked, edits).items()
                for r in _evaluate_group(bridge, row, group, edits, masked, askings, unedited, known_only, hop_prompts,
                                         perplexity_texts, b)]

    items = [((row.label, b), (row, b)) for row in rows_of for b in range(len(batches))]
    n_run = sum(1 for i in range(len(items)) if shard is None or shard.keeps(i))
    with tqdm(total=n_run, desc="evaluate (batched)", disable=not progress) as bar:
        return EvalResult(pd.DataFrame(run_items(items, run, checkpoint, shard, bar)))


def _evaluate_group(bridge, row: MethodRow, group, edits, masked, askings, unedited, known_only, hop_prompts,
                    perplexity_texts, batch_index: int) -> list[dict]:
    """Write the batch's edits less `masked`, ask the group's cases, measure the edited ones, undo."""
    requests = written_requests(edits, masked)
    kwargs = {}
    if hop_prompts is not None and row.method == "ace":
        writers = {e.case_id for i, e in enumerate(edits) if i not in masked}
        kwargs["hop_prompts"] = [h for case, is_edited in group if is_edited and case.case_id in writers
                                 for h in hop_prompts(case)]
    # every edit of the batch masked for this group (a tiny batch can do that to an unedited case): nothing to write
    applied = edit(bridge, requests, row.method, row.hparams, **kwargs) if requests else None
    try:
        ppl = {}
        if perplexity_texts and unedited.perplexity:
            ppl["ppl_ratio"] = perplexity(bridge, perplexity_texts) / unedited.perplexity
        out = []
        for asking in askings:
            todo = [(c, e) for c, e in group if unedited.known[asking.label][c.case_id] or not known_only]
            right = answered(bridge, [c for c, _ in todo], [c.new_answers if e else c.answers for c, e in todo], asking)
            out += [{"case_id": c.case_id, "method": row.label, "n_edits": c.n_edits, "n_hops": c.n_hops,
                     "cot": asking.cot, "prompting": asking.label, "style": asking.style.name, "edited": e,
                     "batch": batch_index, "n_written": len(requests), "n_masked": len(masked),
                     "edit_seconds": applied.seconds if applied else 0.0, "multi_hop": float(ok), **ppl}
                    for (c, e), ok in zip(todo, right, strict=True)]
        measured = {c.case_id: edit_metrics(bridge, c, askings[0].style, unedited.specificity[c.case_id])
                    for c, e in group if e}
        return [{**r, **measured[r["case_id"]]} if r["edited"] else r for r in out]
    finally:
        if applied is not None:
            applied.undo()


def batched_summary(per_case: pd.DataFrame) -> pd.DataFrame:
    """Multi-hop accuracy by method, prompting and edited/unedited, with the number of case rows."""
    return (per_case.groupby(["method", "prompting", "edited"]).multi_hop.agg(["mean", "size"])
            .rename(columns={"mean": "multi_hop", "size": "n"}).reset_index())
