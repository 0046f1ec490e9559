"""A curated set of real-world facts and multi-hop chains, written by the project, in MQuAKE form.

The data live in `ace_interp/data/real_facts/` (package data):

  * `entities.json`: one entity per line -- name, type (country, city, landmark, person, company,
    product, software, book, dish, sport, continent, language, currency), a project-local id
    (`ace:<slug>`, not a Wikidata id), aliases, an optional article ("the Eiffel Tower") and its facts
    {Wikidata relation id: object name};
  * `relations.json`: per relation a cloze template, question paraphrases and noun phrases (to nest
    multi-hop questions), with overrides by subject type;
  * `chains.json`: relation paths (2 to 4 hops) from a start type.

`generate_cases()` walks every pattern deterministically and turns each chain into an `MQuAKECase`
with a counterfactual edit set: a random non-empty subset of hops is rewritten, each `target_new`
drawn from entities of the same type that can continue the chain, and the new answer composed
through the edited chain from the real facts of the new entities (as MQuAKE does: after "the Eiffel
Tower is in Italy", the capital asked for is Rome's country's capital, i.e. Rome).

    python -m ace_interp.data.real_facts --out candidates.json       # the curated candidate set
    python -m ace_interp.data.real_facts --out all.json --all        # every chain
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import logging
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ace_interp.data.mquake import MQuAKECase, Orig, Rewrite, SingleHop, Target, save_mquake

log = logging.getLogger(__name__)

DATA_PACKAGE = "ace_interp.data"
DATA_FOLDER = "real_facts"


@dataclass(frozen=True)
class Entity:
    name: str
    type: str
    id: str
    aliases: tuple[str, ...] = ()
    article: str | None = None  # "the" for "the Eiffel Tower"
    facts: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    @property
    def text(self) -> str:
        """How the entity is written inside a sentence ("the Eiffel Tower", "Paris")."""
        return f"{self.article} {self.name}" if self.article else self.name


@dataclass(frozen=True)
class RelationTemplates:
    cloze: str
    questions: tuple[str, ...]
    phrases: tuple[str, ...]


@dataclass(frozen=True)
class Relation:
    id: str
    label: str
    object_type: str
    default: RelationTemplates
    by_subject_type: dict[str, RelationTemplates] = field(default_factory=dict, hash=False, compare=False)
    extra_answer_aliases: dict[str, tuple[str, ...]] = field(default_factory=dict, hash=False, compare=False)

    def templates(self, subject_type: str) -> RelationTemplates:
        return self.by_subject_type.get(subject_type, self.default)


def _fill(template: str, text: str) -> str:
    """Put `text` into a template's "{}"; a sentence that starts with it starts with a capital."""
    out = template.format(text)
    if template.startswith("{}") and text[:1].islower() and text.split(" ", 1)[0] in ("the", "a", "an"):
        out = out[0].upper() + out[1:]
    return out


def capitalise_first(s: str) -> str:
    return s[0].upper() + s[1:] if s else s


def rewrite_template(template: str, entity: Entity) -> str:
    """The MQuAKE rewrite prompt for `entity`: the template with the article moved out of the slot,
    so that `prompt.format(entity.name)` equals the cloze and the subject is the entity's name."""
    if not entity.article:
        return template
    art = entity.article
    return template.replace("{}", (art.capitalize() if template.startswith("{}") else art) + " {}", 1)


class RealFacts:
    """The curated knowledge base: entities by name, relations by id, fact lookup and chain walking."""

    def __init__(self, entities: Sequence[Entity], relations: dict[str, Relation], patterns: list[dict]):
        self.entities: dict[str, Entity] = {}
        for e in entities:
            if e.name in self.entities:
                raise ValueError(f"entity {e.name!r} is defined twice")
            self.entities[e.name] = e
        self.relations = relations
        self.patterns = patterns
        for e in entities:
            for r, o in e.facts.items():
                if r not in relations:
                    raise ValueError(f"{e.name!r} has a fact for unknown relation {r}")
                if o not in self.entities:
                    raise ValueError(f"{e.name!r} {r} -> {o!r}: object is not an entity")
                if self.entities[o].type != relations[r].object_type:
                    raise ValueError(f"{e.name!r} {r} -> {o!r} is a {self.entities[o].type}, expected {relations[r].object_type}")

    def __getitem__(self, name: str) -> Entity:
        return self.entities[name]

    def of_type(self, type_: str) -> list[Entity]:
        return [e for e in self.entities.values() if e.type == type_]

    def fact(self, subject: Entity, relation: str) -> Entity | None:
        o = subject.facts.get(relation)
        return self.entities[o] if o else None

    def follow(self, subject: Entity, path: Sequence[str]) -> list[Entity] | None:
        """[subject, o1, ..., on] along the relation path, or None when a fact is missing."""
        chain = [subject]
        for r in path:
            nxt = self.fact(chain[-1], r)
            if nxt is None:
                return None
            chain.append(nxt)
        return chain

    def all_facts(self) -> list[tuple[Entity, str, Entity]]:
        return [(e, r, self.entities[o]) for e in self.entities.values() for r, o in e.facts.items()]

    # --- text -------------------------------------------------------------------------------
    def answer_aliases(self, relation: str, obj: Entity) -> list[str]:
        extra = self.relations[relation].extra_answer_aliases.get(obj.name, ())
        return list(dict.fromkeys([*obj.aliases, *extra]))

    def single_hop(self, subject: Entity, relation: str, obj: Entity | None = None) -> SingleHop:
        """The hop as MQuAKE writes it; `obj` overrides the real object (for edited hops)."""
        obj = obj or self.fact(subject, relation)
        if obj is None:
            raise KeyError(f"no {relation} fact for {subject.name!r}")
        t = self.relations[relation].templates(subject.type)
        return SingleHop(
            question=capitalise_first(_fill(t.questions[0], subject.text)),
            cloze=_fill(t.cloze, subject.text),
            answer=obj.name,
            answer_alias=self.answer_aliases(relation, obj),
        )

    def rewrite(self, subject: Entity, relation: str, target_new: Entity) -> Rewrite:
        t = self.relations[relation].templates(subject.type)
        true = self.fact(subject, relation)
        if true is None:
            raise KeyError(f"no {relation} fact for {subject.name!r}")
        return Rewrite(
            prompt=rewrite_template(t.cloze, subject),
            relation_id=relation,
            target_new=Target(target_new.name, target_new.id),
            target_true=Target(true.name, true.id),
            subject=subject.name,
            question=capitalise_first(_fill(t.questions[0], subject.text)),
        )

    def multi_hop_questions(self, chain: Sequence[Entity], path: Sequence[str], n: int = 3) -> list[str]:
        """Up to `n` distinct paraphrases: nested noun phrases inside the last relation's question."""
        out: list[str] = []
        for i in range(n * 3):
            desc = chain[0].text
            for k, r in enumerate(path[:-1]):
                phrases = self.relations[r].templates(chain[k].type).phrases
                desc = phrases[(i + k) % len(phrases)].format(desc)
            questions = self.relations[path[-1]].templates(chain[-2].type).questions
            q = capitalise_first(questions[i % len(questions)].format(desc))
            if q not in out:
                out.append(q)
            if len(out) == n:
                break
        return out


def load_real_facts(folder: str | Path | None = None) -> RealFacts:
    """Read the curated tables (the package's own by default)."""
    root = Path(folder) if folder else Path(str(importlib.resources.files(DATA_PACKAGE) / DATA_FOLDER))
    raw_entities = json.loads((root / "entities.json").read_text())
    raw_relations = json.loads((root / "relations.json").read_text())
    patterns = json.loads((root / "chains.json").read_text())["patterns"]

    def templates(d: dict) -> RelationTemplates:
        return RelationTemplates(d["cloze"], tuple(d["questions"]), tuple(d["phrases"]))

    relations = {
        rid: Relation(
            id=rid,
            label=d["label"],
            object_type=d["object_type"],
            default=templates(d),
            by_subject_type={k: templates(v) for k, v in d.get("by_subject_type", {}).items()},
            extra_answer_aliases={k: tuple(v) for k, v in d.get("extra_answer_aliases", {}).items()},
        )
        for rid, d in raw_relations.items()
        if not rid.startswith("_")
    }
    entities = [
        Entity(e["name"], e["type"], e["id"], tuple(e.get("aliases", ())), e.get("article"), dict(e.get("facts", {})))
        for e in raw_entities
    ]
    return RealFacts(entities, relations, patterns)


# ----------------------------------------------------------------------------- chains and cases


@dataclass(frozen=True)
class Chain:
    entities: tuple[Entity, ...]  # subject, o1, ..., on
    path: tuple[str, ...]

    @property
    def key(self) -> str:
        return self.entities[0].name + "|" + ">".join(self.path)

    @property
    def n_hops(self) -> int:
        return len(self.path)


def enumerate_chains(
    kb: RealFacts, max_per_pattern: int | None = None, seed: int = 0, pattern_caps: bool = False
) -> list[Chain]:
    """Every chain of every pattern, or a deterministic sample of at most `max_per_pattern` per
    pattern (and, with `pattern_caps`, at most the pattern's own "max" from chains.json)."""
    chains: list[Chain] = []
    for pattern in kb.patterns:
        path = tuple(pattern["path"])
        caps = [c for c in (max_per_pattern, pattern.get("max") if pattern_caps else None) if c is not None]
        cap = min(caps) if caps else None
        found = []
        for e in kb.of_type(pattern["start_type"]):
            walk = kb.follow(e, path)
            if walk is None or walk[-1].name == e.name or len({x.name for x in walk}) < len(walk) - 1:
                continue  # missing fact, or a chain that answers with its own subject
            found.append(Chain(tuple(walk), path))
        if cap is not None and len(found) > cap:
            rng = random.Random(f"{seed}:{pattern['start_type']}:{'>'.join(path)}")
            keep = set(rng.sample(range(len(found)), cap))
            found = [c for i, c in enumerate(found) if i in keep]
        chains.extend(found)
    return chains


def _edit_chain(kb: RealFacts, chain: Chain, edited: Sequence[int], rng: random.Random) -> list[Entity] | None:
    """A counterfactual chain: hops in `edited` get a new object of the same type that can continue
    the path; the other hops follow the real facts of the (possibly new) subject."""
    path = chain.path
    new = [chain.entities[0]]
    for k, r in enumerate(path):
        subject = new[-1]
        true = kb.fact(subject, r)
        if true is None:
            return None
        if k in edited:
            rest = path[k + 1 :]
            pool = [
                e
                for e in kb.of_type(kb.relations[r].object_type)
                if e.name not in (true.name, subject.name) and kb.follow(e, rest) is not None
            ]
            if not pool:
                return None
            new.append(rng.choice(pool))
        else:
            new.append(true)
    return new


def make_case(kb: RealFacts, chain: Chain, case_id: int, seed: int = 0) -> MQuAKECase:
    """One MQuAKE case from a chain, with a deterministic counterfactual edit set."""
    rng = random.Random(f"{seed}:{chain.key}")
    n = chain.n_hops
    answer = chain.entities[-1]
    for _ in range(50):
        k = rng.randint(1, n)
        edited = sorted(rng.sample(range(n), k))
        new = _edit_chain(kb, chain, edited, rng)
        if new is not None and new[-1].name != answer.name and len({e.name for e in new}) == len(new):
            break
    else:
        raise ValueError(f"could not find a counterfactual edit that changes the answer of {chain.key}")

    path = chain.path
    old = chain.entities
    rewrites = [kb.rewrite(new[k], path[k], new[k + 1]) for k in edited]
    last_r = path[-1]

    def triples(ents: Sequence[Entity], attr: str) -> list[list[str]]:
        return [[getattr(ents[k], attr), path[k] if attr == "id" else kb.relations[path[k]].label, getattr(ents[k + 1], attr)] for k in range(n)]

    new_triples = triples(new, "id")
    return MQuAKECase(
        case_id=case_id,
        requested_rewrite=rewrites,
        questions=kb.multi_hop_questions(old, path),
        answer=answer.name,
        answer_alias=kb.answer_aliases(last_r, answer),
        new_answer=new[-1].name,
        new_answer_alias=kb.answer_aliases(last_r, new[-1]),
        single_hops=[kb.single_hop(old[k], path[k]) for k in range(n)],
        new_single_hops=[kb.single_hop(new[k], path[k], new[k + 1]) for k in range(n)],
        orig=Orig(
            triples=triples(old, "id"),
            triples_labeled=triples(old, "name"),
            new_triples=new_triples,
            new_triples_labeled=triples(new, "name"),
            edit_triples=[new_triples[k] for k in edited],
            edit_triples_idx=list(edited),
        ),
    )


def generate_cases(
    kb: RealFacts | None = None,
    max_per_pattern: int | None = None,
    seed: int = 0,
    first_case_id: int = 1,
    pattern_caps: bool = True,
) -> list[MQuAKECase]:
    """MQuAKE cases from the curated chains (deterministic for a given seed and tables).

    Default: the curated candidate set, each pattern capped by its "max" in chains.json.
    `pattern_caps=False, max_per_pattern=None` gives every chain."""
    kb = kb or load_real_facts()
    chains = enumerate_chains(kb, max_per_pattern=max_per_pattern, seed=seed, pattern_caps=pattern_caps)
    return [make_case(kb, c, first_case_id + i, seed=seed) for i, c in enumerate(chains)]


def chain_pattern(case: MQuAKECase) -> str:
    """'P17>P36' -- the relation path of a case."""
    return ">".join(case.relation_ids)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Write the curated real-fact MQuAKE candidate cases.")
    p.add_argument("--out", required=True)
    p.add_argument("--max-per-pattern", type=int, default=None, help="cap per chain pattern")
    p.add_argument("--all", action="store_true", help="ignore the per-pattern caps of chains.json")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    cases = generate_cases(max_per_pattern=a.max_per_pattern, seed=a.seed, pattern_caps=not a.all)
    save_mquake(cases, a.out)
    counts = Counter((c.n_hops, chain_pattern(c)) for c in cases)
    print(f"wrote {len(cases)} cases to {a.out}")
    for (hops, pat), n in sorted(counts.items()):
        print(f"  {hops}-hop {pat}: {n}")


if __name__ == "__main__":
    main()
