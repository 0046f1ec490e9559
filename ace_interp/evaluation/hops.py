"""Multi-hop prompts for ACE's query write that the evaluation does not ask.

ACE's attribution variant optimises its query-group target on an edit's multi-hop prompts
(`editing.requests.HopPrompt`). Handing it the case's own multi-hop questions would train on the test
questions. But a bridge entity has several continuations: a person's sport has an origin *and* equipment,
a country has a capital, a continent, a language and a currency. So for an edit (s, r, o*), the hop
prompts are the 2-hop compositions (r, r₂) whose second relation is not the one the case continues with,
answered by the fact (o*, r₂). The query write must then make the subject's representation carry o* so
that o*'s other facts follow. The evaluated question checks whether that transfers to the held-out
continuation.

* `world_hop_prompts`: synthetic worlds, in the cloze frame "s 's r 's r₂ is" the toys were trained on;
* `world_implicit_subjects`: the other direction, for ACE's implicit-subject write: noun phrases that reach
  the edited subject through another entity ("y 's birthplace" for a city s), never the case's own;
* `real_fact_hop_prompts`: the curated real facts (`data.real_facts`), as few-shot questions like the
  evaluation's ("What is the currency of the country where the Prado Museum is located?"), optionally only
  over facts (o*, r₂) the model knows;
* `real_fact_implicit_subjects`: the same over the curated real facts ("the country where the Colosseum is located");
* `hop_prompts_for(bridge, cases_path)`: whichever applies to a model and its case file.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Collection
from pathlib import Path

from transformer_lens.model_bridge import TransformerBridge

from ace_interp.data.mquake import MQuAKECase
from ace_interp.data.prompts import (
    Demonstration,
    case_entities,
    few_shot_prompt,
    real_demonstrations,
    select_demonstrations,
)
from ace_interp.data.real_facts import Entity, RealFacts, capitalise_first, load_real_facts
from ace_interp.data.world import World, load_world, multi_hop_prompt, noun_phrase, world_paths
from ace_interp.editing.requests import HopPrompt, ImplicitSubject
from ace_interp.model.state import model_state

WORLD_SPEC_FILE = "world.json"


def world_hop_prompts(world: World) -> Callable[[MQuAKECase], list[HopPrompt]]:
    """case ↦ HopPrompts for each requested rewrite, over the continuations the case does not evaluate."""
    two_hop_paths, _ = world_paths(world.config)

    def hops(case: MQuAKECase) -> list[HopPrompt]:
        out = []
        for i, (rw, hop) in enumerate(zip(case.requested_rewrite, case.edited_hops, strict=True)):
            evaluated = _evaluated_relation(case, hop)
            for first, second in two_hop_paths:
                if first != rw.relation_id or second == evaluated:
                    continue
                answer = world.facts.get((rw.target_new.text, second))
                if answer is not None:
                    prompt = multi_hop_prompt(world, "{}", (first, second), frame=0, variants=(0, 0))
                    out.append(HopPrompt(i, prompt, answer))
        return out

    return hops


def world_implicit_subjects(world: World, n: int = 16, seed: int = 0) -> Callable[[MQuAKECase], list[ImplicitSubject]]:
    """case ↦ up to `n` ImplicitSubjects per requested rewrite (s, r, o*): noun phrases "y 's r₁-noun" of
    entities y with the fact (y, r₁) = s, for every composed path (r₁, r), so that "y 's r₁-noun 's r-noun is"
    asks for s's r through y. Entities of the case (its question's subject included) are never used; the
    draw is seeded per rewrite subject."""
    two_hop_paths, _ = world_paths(world.config)

    def phrases(case: MQuAKECase) -> list[ImplicitSubject]:
        entities = set(case_entities(case))
        out = []
        for i, rw in enumerate(case.requested_rewrite):
            firsts = {first for first, second in two_hop_paths if second == rw.relation_id}
            found = sorted((y, r1) for (y, r1), o in world.facts.items()
                           if o == rw.subject and r1 in firsts and y not in entities)
            random.Random(f"{seed}:{rw.subject}").shuffle(found)
            out += [ImplicitSubject(i, noun_phrase(world, y, (r1,), (0,))) for y, r1 in found[:n]]
        return out

    return phrases


def model_world(bridge: TransformerBridge) -> World | None:
    """The synthetic world a toy model was trained on (found at load time, `model.state`), or None."""
    folder = model_state(bridge).world
    spec = folder / WORLD_SPEC_FILE if folder is not None else None
    return load_world(spec) if spec is not None and spec.exists() else None


def _evaluated_relation(case: MQuAKECase, hop: int | None) -> str | None:
    """The relation the case continues with after the hop a rewrite edits (None: the last hop, or unknown)."""
    relation_ids = case.relation_ids
    return relation_ids[hop + 1] if hop is not None and hop + 1 < len(relation_ids) else None


def real_fact_hop_prompts(
    kb: RealFacts | None = None,
    known: Collection[tuple[str, str]] | None = None,
    demonstrations: list[Demonstration] | None = None,
    k: int = 4,
) -> Callable[[MQuAKECase], list[HopPrompt]]:
    """case ↦ HopPrompts over the curated real facts, for each rewrite whose subject and new object are in `kb`.

    For a rewrite (s, r, o*) and each fact (o*, r₂, a) with r₂ not the relation the case continues with: the
    few-shot question "… r₂ of the r of s?" (`RealFacts.multi_hop_questions`, `k` demonstrations that name
    none of s, o*, a), answered a. Skipped: facts outside `known` ((subject, relation id) pairs, e.g. the facts
    the unedited model answers, from the filter's `--facts-out` file), since asking the query write for an
    answer the model could not compose from o* would teach it the answer rather than the bridge; and inverse
    compositions, where the real chain (r, r₂) leads back to s ("the capital of the country whose capital is
    Budapest"), whose answer contradicts the edit itself. Rewrites of other MQuAKE files (entities not in
    `kb`) get none.
    """
    kb = kb if kb is not None else load_real_facts()
    pool = demonstrations if demonstrations is not None else real_demonstrations()

    def hops(case: MQuAKECase) -> list[HopPrompt]:
        out = []
        for i, (rw, hop) in enumerate(zip(case.requested_rewrite, case.edited_hops, strict=True)):
            subject, new = kb.entities.get(rw.subject), kb.entities.get(rw.target_new.text)
            if subject is None or new is None:
                continue
            true = kb.fact(subject, rw.relation_id)
            evaluated = _evaluated_relation(case, hop)
            for second, answer in new.facts.items():
                if second == evaluated or (known is not None and (new.name, second) not in known):
                    continue
                if true is not None and true.facts.get(second) == subject.name:
                    continue
                question = kb.multi_hop_questions([subject, new, kb[answer]], (rw.relation_id, second), n=1)[0]
                demos = select_demonstrations(pool, (rw.relation_id, second), k,
                                              exclude_entities=(subject.name, new.name, answer))
                out.append(HopPrompt(i, few_shot_prompt(question, demos), answer))
        return out

    return hops


def real_fact_implicit_subjects(
    kb: RealFacts | None = None, known: Collection[tuple[str, str]] | None = None, n: int = 16, seed: int = 0
) -> Callable[[MQuAKECase], list[ImplicitSubject]]:
    """case ↦ up to `n` ImplicitSubjects per rewrite (s, r, o*) whose subject is in `kb`: the noun phrase of each
    fact (y, r₁) = s ("the country where the Colosseum is located" for Italy), only facts in `known` when given,
    never an entity of the case; capitalised where the rewrite's prompt starts with the subject."""
    kb = kb if kb is not None else load_real_facts()
    pointing: dict[str, list[tuple[Entity, str]]] = {}
    for y, r1, o in kb.all_facts():
        pointing.setdefault(o.name, []).append((y, r1))

    def phrases(case: MQuAKECase) -> list[ImplicitSubject]:
        entities = set(case_entities(case))
        out = []
        for i, rw in enumerate(case.requested_rewrite):
            found = [(y, r1) for y, r1 in pointing.get(rw.subject, [])
                     if y.name not in entities and (known is None or (y.name, r1) in known)]
            random.Random(f"{seed}:{rw.subject}").shuffle(found)
            for y, r1 in found[:n]:
                phrase = kb.relations[r1].templates(y.type).phrases[0].format(y.text)
                out.append(ImplicitSubject(i, capitalise_first(phrase) if rw.prompt.startswith("{}") else phrase))
        return out

    return phrases


def known_fact_pairs(path: str | Path) -> set[tuple[str, str]]:
    """(subject, relation id) of each fact in a filter's known-facts file (`filtering --facts-out`)."""
    return {(f["subject"], f["relation_id"]) for f in json.loads(Path(path).read_text())}


def known_facts_path(cases_path: str | Path) -> Path:
    """Where the filter's known facts sit next to a filtered case file: `x.json` → `x_facts.json`."""
    cases_path = Path(cases_path)
    return cases_path.with_name(cases_path.stem + "_facts.json")


def hop_prompts_for(
    bridge: TransformerBridge, cases_path: str | Path | None = None
) -> Callable[[MQuAKECase], list[HopPrompt | ImplicitSubject]]:
    """ACE's hop prompts and implicit subjects (used where `ACEHParams.implicit_layers` is set) for a model: its
    synthetic world's (toys), else the curated real facts', over the facts the model knows where a known-facts
    file sits next to `cases_path` (`known_facts_path`)."""
    world = model_world(bridge)
    if world is not None:
        hop_prompts, implicit_subjects = world_hop_prompts(world), world_implicit_subjects(world)
        return lambda case: hop_prompts(case) + implicit_subjects(case)
    facts = known_facts_path(cases_path) if cases_path is not None else None
    known = known_fact_pairs(facts) if facts is not None and facts.exists() else None
    hop_prompts, implicit_subjects = real_fact_hop_prompts(known=known), real_fact_implicit_subjects(known=known)
    return lambda case: hop_prompts(case) + implicit_subjects(case)
