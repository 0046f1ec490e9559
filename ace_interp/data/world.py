"""Synthetic knowledge worlds: typed entities, MQuAKE-like relations, training corpora, MQuAKE edit cases.

A world (`generate_world(WorldConfig(...))`, seeded and deterministic) holds

  * objects, each ONE word-level token: countries, cities, languages, continents, currencies, sports
    (a fixed, real-world-flavoured table: `france` -P36-> `paris`, `football` -P495-> `england`, ...);
  * persons, the subjects, with multi-token names (`anna kovac`), each with a random citizenship (P27),
    sport (P641) and birthplace (P19), drawn independently;
  * relations with Wikidata ids: P27 citizenship, P641 sport, P19 place of birth (person ->),
    P36 capital, P30 continent, P37 official language, P38 currency (country ->), P17 country (city ->),
    P495 country of origin (sport ->);
  * compositions (subject, path of relation ids): 2-hop, e.g. (anna kovac, P27, P36), and 3-hop,
    e.g. (anna kovac, P641, P495, P36). A seeded share (`heldout_fraction`, default 20%) of the 2-hop and
    of the 3-hop compositions is *held out*: it never appears in the training corpus, in any form.

Exact text formats (word-level: tokens are separated by single spaces; the model prepends [BOS]). Chains
are possessive and subject-first, so the relations follow the subject in hop order:

  single-hop cloze      "anna kovac 's country is" -> "france"   (canonical: CoT steps, MQuAKE cloze/edits)
                        "anna kovac is a citizen of" -> "france"
  single-hop question   "Q: what is anna kovac 's country ? A:" -> "france"
                        "Q: which country is anna kovac a citizen of ? A:" -> "france"
  multi-hop direct      a possessive chain, one noun per hop (2 variants per relation, e.g. country /
                        homeland, capital / capital city), in one of two frames
                          "anna kovac 's country 's capital is"            -> "paris"
                          "Q: what is anna kovac 's country 's capital ? A:" -> "paris"
  chain of thought      the question frame + " step by step :", then each hop in its canonical cloze:
                        "Q: what is anna kovac 's country 's capital ? A: step by step :"
                        -> "anna kovac 's country is france . france 's capital is paris ." + [EOS].
                        The bridge entities are the objects of all hops but the last.

Relation nouns: P27 country/homeland, P641 sport/game, P19 birthplace/hometown, P36 capital/capital city,
P30 continent/landmass, P37 language/tongue, P38 currency/money, P17 (city) country/nation (nation/state
with `WorldConfig.distinct_nouns`), P495 origin/country of origin, P2283 equipment/gear.

`WorldConfig.bridge_relations` (on by default) adds sport -P2283-> equipment and gives cities their country's
P30/P37/P38, so that a person's birthplace and sport are bridges with several continuations (2-hop paths
P19->{P17,P30,P37,P38}, P641->{P495,P2283}); with a single continuation they were memorised, not composed.
`WorldConfig.sport_relations` (on by default) gives sports their origin's P30/P37/P38 as well (2-hop paths
P641->{P495,P2283,P30,P37,P38}): with two continuations "s 's sport 's origin" was still memorised.

The answer (and thus the attribution target) is the first token after the prompt. The canonical
single-hop cloze and question are the 1-hop case of the multi-hop frames, so a multi-hop prompt starts with
its first hop's cloze prefix ("anna kovac 's country").

`world_corpus(world)` lists every training sentence (prompt + " " + target). `eval_split(world)` lists the
evaluation prompts (every single-hop fact in every template; the held-out compositions in direct and
chain-of-thought form). `mquake_cases(world)` exports MQuAKE-schema edit cases (2- and 3-hop chains, 1..hops
edits, preferably over held-out compositions) with the extra field `bridge_entities`.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

COT_MARKER = "step by step :"

# ----------------------------------------------------------------------------- the fixed object table

# country: (capital, continent, official language, currency, two other cities)
COUNTRIES: dict[str, tuple[str, str, str, str, tuple[str, str]]] = {
    "france": ("paris", "europe", "french", "euro", ("lyon", "marseille")),
    "germany": ("berlin", "europe", "german", "euro", ("munich", "hamburg")),
    "italy": ("rome", "europe", "italian", "euro", ("milan", "naples")),
    "spain": ("madrid", "europe", "spanish", "euro", ("barcelona", "seville")),
    "portugal": ("lisbon", "europe", "portuguese", "euro", ("porto", "braga")),
    "netherlands": ("amsterdam", "europe", "dutch", "euro", ("rotterdam", "utrecht")),
    "poland": ("warsaw", "europe", "polish", "zloty", ("krakow", "gdansk")),
    "sweden": ("stockholm", "europe", "swedish", "krona", ("gothenburg", "malmo")),
    "norway": ("oslo", "europe", "norwegian", "krone", ("bergen", "trondheim")),
    "switzerland": ("bern", "europe", "german", "franc", ("zurich", "geneva")),
    "greece": ("athens", "europe", "greek", "euro", ("thessaloniki", "patras")),
    "russia": ("moscow", "europe", "russian", "ruble", ("novosibirsk", "kazan")),
    "england": ("london", "europe", "english", "pound", ("manchester", "liverpool")),
    "ireland": ("dublin", "europe", "irish", "euro", ("cork", "galway")),
    "japan": ("tokyo", "asia", "japanese", "yen", ("osaka", "kyoto")),
    "china": ("beijing", "asia", "chinese", "yuan", ("shanghai", "shenzhen")),
    "india": ("delhi", "asia", "hindi", "rupee", ("mumbai", "kolkata")),
    "pakistan": ("islamabad", "asia", "urdu", "rupee", ("karachi", "lahore")),
    "korea": ("seoul", "asia", "korean", "won", ("busan", "incheon")),
    "thailand": ("bangkok", "asia", "thai", "baht", ("chiangmai", "phuket")),
    "turkey": ("ankara", "asia", "turkish", "lira", ("istanbul", "izmir")),
    "egypt": ("cairo", "africa", "arabic", "pound", ("alexandria", "luxor")),
    "morocco": ("rabat", "africa", "arabic", "dirham", ("casablanca", "marrakesh")),
    "kenya": ("nairobi", "africa", "swahili", "shilling", ("mombasa", "kisumu")),
    "nigeria": ("abuja", "africa", "english", "naira", ("lagos", "kano")),
    "usa": ("washington", "north-america", "english", "dollar", ("chicago", "boston")),
    "canada": ("ottawa", "north-america", "french", "dollar", ("toronto", "vancouver")),
    "mexico": ("mexico-city", "north-america", "spanish", "peso", ("guadalajara", "monterrey")),
    "brazil": ("brasilia", "south-america", "portuguese", "real", ("rio", "salvador")),
    "argentina": ("buenos-aires", "south-america", "spanish", "peso", ("cordoba", "rosario")),
    "peru": ("lima", "south-america", "spanish", "sol", ("cusco", "arequipa")),
    "australia": ("canberra", "oceania", "english", "dollar", ("sydney", "melbourne")),
}

# sport: country of origin
SPORTS: dict[str, str] = {
    "football": "england", "cricket": "england", "rugby": "england", "tennis": "france", "cycling": "france",
    "handball": "germany", "gymnastics": "germany", "basketball": "usa", "baseball": "usa",
    "volleyball": "usa", "hockey": "canada", "lacrosse": "canada", "judo": "japan", "karate": "japan",
    "sumo": "japan", "taekwondo": "korea", "kabaddi": "india", "badminton": "india", "polo": "pakistan",
    "skiing": "norway", "capoeira": "brazil", "pelota": "spain", "hurling": "ireland", "wrestling": "greece",
}

# sport: the equipment it is played with (Wikidata P2283 "uses"); many-to-one like continents
SPORT_EQUIPMENT: dict[str, str] = {
    "football": "ball", "cricket": "bat", "rugby": "ball", "tennis": "racket", "cycling": "bicycle",
    "handball": "ball", "gymnastics": "mat", "basketball": "hoop", "baseball": "bat", "volleyball": "net",
    "hockey": "stick", "lacrosse": "stick", "judo": "mat", "karate": "belt", "sumo": "ring", "taekwondo": "belt",
    "kabaddi": "mat", "badminton": "racket", "polo": "mallet", "skiing": "skis", "capoeira": "berimbau",
    "pelota": "glove", "hurling": "stick", "wrestling": "mat",
}

FIRST_NAMES = (
    "anna boris carla dmitri elena farid greta hugo ines jonas kenji lara marco nadia oscar priya quentin "
    "rosa samir tara umar vera wei ximena yusuf zoe alma bruno chloe diego emil fatima gustav hana ivan "
    "julia kofi lena mateo noor"
).split()
LAST_NAMES = (
    "kovac silva tanaka novak muller rossi garcia kim okafor jensen dubois haddad petrov nakamura olsen "
    "moreau fischer costa bianchi kowalski lindqvist mensah ortiz sato weber varga horvat ibrahim keller "
    "laurent marin nilsson park quispe reyes santos torres ueda vogel wagner yilmaz zhang abara bakker "
    "cruz dalton eriksen ferreira gallo"
).split()

# ----------------------------------------------------------------------------- relations


@dataclass(frozen=True)
class Relation:
    """A Wikidata-style relation with its text templates ("{}" stands for the subject)."""

    rid: str
    label: str  # Wikidata label, used in `triples_labeled`
    subject_type: str
    object_type: str
    cloze: tuple[str, ...]  # the answer follows; cloze[0] is the canonical form (CoT steps, MQuAKE cloze)
    questions: tuple[str, ...]  # "Q: ... ? A:"; questions[0] is the canonical form
    noun_phrases: tuple[str, ...]  # nested in multi-hop prompts
    also_subject_types: tuple[str, ...] = ()  # further subject types (cities carry P30/P37/P38 in some worlds)

    def takes(self, type_: str) -> bool:
        """Whether an entity of this type can be the relation's subject."""
        return type_ == self.subject_type or type_ in self.also_subject_types


RELATIONS: dict[str, Relation] = {
    r.rid: r
    for r in [
        Relation("P27", "country of citizenship", "person", "country",
                 ("{} 's country is", "{} is a citizen of"),
                 ("Q: what is {} 's country ? A:", "Q: which country is {} a citizen of ? A:"),
                 ("{} 's country", "{} 's homeland")),
        Relation("P641", "sport", "person", "sport",
                 ("{} 's sport is", "{} plays the sport of"),
                 ("Q: what is {} 's sport ? A:", "Q: which sport does {} play ? A:"),
                 ("{} 's sport", "{} 's game")),
        Relation("P19", "place of birth", "person", "city",
                 ("{} 's birthplace is", "{} was born in"),
                 ("Q: what is {} 's birthplace ? A:", "Q: where was {} born ? A:"),
                 ("{} 's birthplace", "{} 's hometown")),
        Relation("P36", "capital", "country", "city",
                 ("{} 's capital is", "the capital of {} is"),
                 ("Q: what is {} 's capital ? A:", "Q: which city is the capital of {} ? A:"),
                 ("{} 's capital", "{} 's capital city")),
        Relation("P30", "continent", "country", "continent",
                 ("{} 's continent is", "{} is located in"),
                 ("Q: what is {} 's continent ? A:", "Q: on which continent is {} ? A:"),
                 ("{} 's continent", "{} 's landmass")),
        Relation("P37", "official language", "country", "language",
                 ("{} 's language is", "the official language of {} is"),
                 ("Q: what is {} 's language ? A:", "Q: which language is spoken in {} ? A:"),
                 ("{} 's language", "{} 's tongue")),
        Relation("P38", "currency", "country", "currency",
                 ("{} 's currency is", "the currency of {} is the"),
                 ("Q: what is {} 's currency ? A:", "Q: which currency is used in {} ? A:"),
                 ("{} 's currency", "{} 's money")),
        Relation("P17", "country", "city", "country",
                 ("{} 's country is", "{} is a city in"),
                 ("Q: what is {} 's country ? A:", "Q: which country is {} in ? A:"),
                 ("{} 's country", "{} 's nation")),
        Relation("P495", "country of origin", "sport", "country",
                 ("{} 's origin is", "{} originated in"),
                 ("Q: what is {} 's origin ? A:", "Q: where was {} invented ? A:"),
                 ("{} 's origin", "{} 's country of origin")),
    ]
}

# `WorldConfig.distinct_nouns`: P17 (city -> country) gets nouns of its own, so that "s 's birthplace 's
# nation" does not share its last noun with P27's "s 's country" (the two compete in the person frame).
P17_DISTINCT = Relation("P17", "country", "city", "country",
                        ("{} 's nation is", "{} is a city in"),
                        ("Q: what is {} 's nation ? A:", "Q: which country is {} in ? A:"),
                        ("{} 's nation", "{} 's state"))
# `WorldConfig.bridge_relations`: a second relation out of sports, so that a person's sport, like their
# country, is a bridge with several continuations (a single continuation gets memorised, not composed).
P2283 = Relation("P2283", "uses", "sport", "equipment",
                 ("{} 's equipment is", "{} is played with a"),
                 ("Q: what is {} 's equipment ? A:", "Q: what is {} played with ? A:"),
                 ("{} 's equipment", "{} 's gear"))
# ... and cities carry the country-level relations P30/P37/P38 themselves (a city's continent, language and
# currency are its country's), so a birthplace also has four continuations.
CITY_RELATIONS = ("P30", "P37", "P38")
# `WorldConfig.sport_relations`: sports carry the same three relations (their country of origin's), so that a
# person's sport has five continuations like a birthplace. With two (P495, P2283), the held-out compositions
# "s 's sport 's origin" were 52% / 65% right (assets/README.md): memorised, not composed.

# Multi-hop frames over a (nested) noun phrase; single-hop questions[0] is the 1-hop case of frame 1.
MULTI_HOP_FRAMES = ("{np} is", "Q: what is {np} ? A:")
QUESTION_FRAMES = (1,)  # the frames that are questions (chain of thought starts from these)

# Relation paths composed by the world. Person paths are the multi-hop questions of interest; city and
# sport paths give the country-level relations more multi-hop practice.
TWO_HOP_PATHS = (
    ("P27", "P36"), ("P27", "P30"), ("P27", "P37"), ("P27", "P38"), ("P19", "P17"), ("P641", "P495"),
    ("P17", "P36"), ("P17", "P30"), ("P17", "P37"), ("P17", "P38"),
    ("P495", "P36"), ("P495", "P30"), ("P495", "P37"), ("P495", "P38"),
)
THREE_HOP_PATHS = (
    ("P19", "P17", "P36"), ("P19", "P17", "P30"), ("P19", "P17", "P37"), ("P19", "P17", "P38"),
    ("P641", "P495", "P36"), ("P641", "P495", "P30"), ("P641", "P495", "P37"), ("P641", "P495", "P38"),
)

BRIDGE_TWO_HOP_PATHS = (("P19", "P30"), ("P19", "P37"), ("P19", "P38"), ("P641", "P2283"))
SPORT_TWO_HOP_PATHS = (("P641", "P30"), ("P641", "P37"), ("P641", "P38"))

# ----------------------------------------------------------------------------- world


@dataclass(frozen=True)
class WorldConfig:
    n_persons: int = 1000
    heldout_fraction: float = 0.2
    seed: int = 0
    n_countries: int | None = None  # None: all of COUNTRIES (the first n otherwise; sports follow)
    three_hop: bool = True
    # All three knobs are on in the shipped world: without the first two the held-out birthplace -> country
    # compositions were memorised, not composed (13% held-out accuracy; 97% with them), and without the third
    # sport -> origin stayed at 52% (98.5% with it; assets/README.md).
    distinct_nouns: bool = True  # P17 says "nation" instead of P27's "country" (see P17_DISTINCT)
    bridge_relations: bool = True  # sports P2283 equipment; cities P30/P37/P38 (see CITY_RELATIONS)
    sport_relations: bool = True  # sports P30/P37/P38 too, their origin's (see SPORT_TWO_HOP_PATHS)

    def __post_init__(self):
        if not 1 <= self.n_persons <= len(FIRST_NAMES) * len(LAST_NAMES):
            raise ValueError(f"n_persons must be in 1..{len(FIRST_NAMES) * len(LAST_NAMES)}, got {self.n_persons}")
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise ValueError(f"heldout_fraction must be in [0, 1), got {self.heldout_fraction}")
        if self.n_countries is not None and not 2 <= self.n_countries <= len(COUNTRIES):
            raise ValueError(f"n_countries must be in 2..{len(COUNTRIES)}, got {self.n_countries}")


@dataclass(frozen=True)
class Entity:
    name: str  # space-separated words; objects are one word
    type: str  # person, country, city, continent, language, currency, sport
    qid: str  # synthetic Wikidata-style id


@dataclass(frozen=True, order=True)
class Composition:
    """A multi-hop question: start at `subject`, follow the relations in `path`."""

    subject: str
    path: tuple[str, ...]

    @property
    def hops(self) -> int:
        return len(self.path)


@dataclass(frozen=True)
class Example:
    """One training or evaluation item: the model reads [BOS] + prompt and must produce target."""

    prompt: str
    target: str  # the answer word (direct) or the whole chain of thought (cot)
    kind: str  # single_hop | two_hop_direct | three_hop_direct | two_hop_cot | three_hop_cot
    subject: str
    path: tuple[str, ...]
    heldout: bool = False

    @property
    def text(self) -> str:
        return f"{self.prompt} {self.target}"

    @property
    def answer(self) -> str:
        """The final answer word (for CoT: the last entity of the chain)."""
        return self.target.split()[-2] if self.kind.endswith("cot") else self.target


KINDS = ("single_hop", "two_hop_direct", "three_hop_direct", "two_hop_cot", "three_hop_cot")


@dataclass
class World:
    config: WorldConfig
    entities: dict[str, Entity]  # by name
    relations: dict[str, Relation]
    facts: dict[tuple[str, str], str]  # (subject, relation id) -> object
    compositions: list[Composition]
    heldout: frozenset[Composition]

    # -- queries
    def of_type(self, type_: str) -> list[str]:
        return [e.name for e in self.entities.values() if e.type == type_]

    def chain(self, subject: str, path: Sequence[str], facts: dict[tuple[str, str], str] | None = None) -> list[str]:
        """The objects reached hop by hop (bridge entities, then the answer)."""
        facts = self.facts if facts is None else facts
        out, current = [], subject
        for rid in path:
            key = (current, rid)
            if key not in facts:
                raise KeyError(f"the world has no fact {rid} for {current!r}")
            current = facts[key]
            out.append(current)
        return out

    def answer(self, comp: Composition) -> str:
        return self.chain(comp.subject, comp.path)[-1]

    def is_heldout(self, subject: str, path: Sequence[str]) -> bool:
        return Composition(subject, tuple(path)) in self.heldout

    @property
    def words(self) -> list[str]:
        """Every word the world's text uses (entities and templates), sorted; the tokenizer's vocabulary."""
        words: set[str] = set()
        for e in self.entities.values():
            words.update(e.name.split())
        for r in self.relations.values():
            for t in (*r.cloze, *r.questions, *r.noun_phrases):
                words.update(t.replace("{}", " ").split())
        for f in MULTI_HOP_FRAMES:
            words.update(f.replace("{np}", " ").split())
        words.update(COT_MARKER.split())
        words.add(".")
        return sorted(words)

    # -- (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "entities": [asdict(e) for e in self.entities.values()],
            "relations": [asdict(r) for r in self.relations.values()],
            "facts": [[s, r, o] for (s, r), o in self.facts.items()],
            "compositions": [[c.subject, list(c.path)] for c in self.compositions],
            "heldout": [[c.subject, list(c.path)] for c in sorted(self.heldout)],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> World:
        try:
            rels = {}
            for r in d["relations"]:
                r = dict(r)
                for k in ("cloze", "questions", "noun_phrases", "also_subject_types"):
                    r[k] = tuple(r.get(k, ()))
                rels[r["rid"]] = Relation(**r)
            return cls(
                config=WorldConfig(**d["config"]),
                entities={e["name"]: Entity(**e) for e in d["entities"]},
                relations=rels,
                facts={(s, r): o for s, r, o in d["facts"]},
                compositions=[Composition(s, tuple(p)) for s, p in d["compositions"]],
                heldout=frozenset(Composition(s, tuple(p)) for s, p in d["heldout"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not a world spec (expected the keys written by World.to_dict): {e!r}") from e

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), separators=(",", ":")))
        return path


def world_relations(config: WorldConfig) -> dict[str, Relation]:
    """The relations a world of this config uses (the module table, adjusted by the config's knobs)."""
    rels = dict(RELATIONS)
    if config.distinct_nouns:
        rels["P17"] = P17_DISTINCT
    if config.bridge_relations:
        rels["P2283"] = P2283
    # the country-level relations P30/P37/P38 also take cities and/or sports as subjects
    extra = tuple(t for t, on in (("city", config.bridge_relations), ("sport", config.sport_relations)) if on)
    if extra:
        for rid in CITY_RELATIONS:
            rels[rid] = replace(rels[rid], also_subject_types=extra)
    return rels


def world_paths(config: WorldConfig) -> tuple[tuple[tuple[str, ...], ...], tuple[tuple[str, ...], ...]]:
    """(2-hop paths, 3-hop paths) composed by a world of this config."""
    two = (TWO_HOP_PATHS + (BRIDGE_TWO_HOP_PATHS if config.bridge_relations else ())
           + (SPORT_TWO_HOP_PATHS if config.sport_relations else ()))
    return two, THREE_HOP_PATHS if config.three_hop else ()


def load_world(path: str | os.PathLike) -> World:
    """Read a world spec written by `World.save` (e.g. assets/world/world.json)."""
    path = Path(path)
    if path.is_dir():
        path = path / "world.json"
    if not path.exists():
        raise FileNotFoundError(f"no world spec at {path}")
    return World.from_dict(json.loads(path.read_text()))


def generate_world(config: WorldConfig = WorldConfig()) -> World:
    """A seeded synthetic world: same config -> identical world (entities, facts, held-out split)."""
    rng = random.Random(config.seed)
    country_names = list(COUNTRIES)[: config.n_countries] if config.n_countries else list(COUNTRIES)
    sports = {s: c for s, c in SPORTS.items() if c in country_names}
    if not sports:  # a tiny world keeps some sports: re-home them inside the world, deterministically
        sports = {s: country_names[i % len(country_names)] for i, s in enumerate(list(SPORTS)[:4])}

    entities: dict[str, Entity] = {}
    facts: dict[tuple[str, str], str] = {}

    def add(name: str, type_: str) -> None:
        if name in entities:
            if entities[name].type != type_:
                raise ValueError(f"entity name {name!r} used for two types ({entities[name].type}, {type_})")
            return
        entities[name] = Entity(name, type_, f"Q{900000 + len(entities)}")

    for c in country_names:
        capital, continent, language, currency, others = COUNTRIES[c]
        add(c, "country")
        for city in (capital, *others):
            add(city, "city")
            facts[(city, "P17")] = c
        for obj, type_, rid in ((continent, "continent", "P30"), (language, "language", "P37"),
                                (currency, "currency", "P38")):
            add(obj, type_)
            facts[(c, rid)] = obj
        facts[(c, "P36")] = capital
    for s, origin in sports.items():
        add(s, "sport")
        facts[(s, "P495")] = origin
    if config.bridge_relations:
        for s in sports:
            add(SPORT_EQUIPMENT[s], "equipment")
            facts[(s, "P2283")] = SPORT_EQUIPMENT[s]
        for city, country in [(c, o) for (c, r), o in facts.items() if r == "P17"]:
            for rid in CITY_RELATIONS:
                facts[(city, rid)] = facts[(country, rid)]
    if config.sport_relations:
        for s, origin in sports.items():
            for rid in CITY_RELATIONS:
                facts[(s, rid)] = facts[(origin, rid)]

    object_words = set(entities)
    names = [f"{f} {l}" for f, l in itertools.product(FIRST_NAMES, LAST_NAMES)]
    assert not {w for n in names for w in n.split()} & object_words, "person-name words collide with objects"
    persons = rng.sample(names, config.n_persons)
    cities = [e.name for e in entities.values() if e.type == "city"]
    sport_names = list(sports)
    for p in persons:
        add(p, "person")
        facts[(p, "P27")] = rng.choice(country_names)
        facts[(p, "P641")] = rng.choice(sport_names)
        facts[(p, "P19")] = rng.choice(cities)

    subjects_of = {t: [e.name for e in entities.values() if e.type == t] for t in ("person", "city", "sport")}
    compositions: list[Composition] = []
    heldout: set[Composition] = set()
    relations = world_relations(config)
    for paths in world_paths(config):
        comps = [
            Composition(s, path)
            for path in paths
            for s in subjects_of[relations[path[0]].subject_type]
        ]
        compositions += comps
        # A 3-hop question nests its 2-hop prefix's noun phrase ("the capital of [the country of the
        # birthplace of s]"), so a held-out 2-hop prefix holds out its 3-hop extensions too; on top of
        # those, half the held-out share of the other 3-hop compositions is held out.
        forced = [c for c in comps if c.hops == 3 and Composition(c.subject, c.path[:2]) in heldout]
        rest = [c for c in comps if c not in set(forced)]
        share = config.heldout_fraction if not forced else config.heldout_fraction / 2
        heldout.update(forced)
        heldout.update(rng.sample(rest, round(share * len(rest))))
    world = World(config, entities, relations, facts, compositions, frozenset(heldout))
    log.info(
        "world: %d entities (%d persons), %d facts, %d compositions (%d held out)",
        len(entities), len(persons), len(facts), len(compositions), len(heldout),
    )
    return world


# ----------------------------------------------------------------------------- text forms


def noun_phrase(world: World, subject: str, path: Sequence[str], variants: Sequence[int]) -> str:
    """Chain the relations' noun phrases: path (P27, P36) -> "s 's country 's capital" (variants 0, 0)."""
    np = subject
    for rid, v in zip(path, variants, strict=True):
        np = world.relations[rid].noun_phrases[v].format(np)
    return np


def multi_hop_prompt(world: World, subject: str, path: Sequence[str], frame: int, variants: Sequence[int]) -> str:
    return MULTI_HOP_FRAMES[frame].format(np=noun_phrase(world, subject, path, variants))


def cot_target(world: World, subject: str, path: Sequence[str], facts: dict[tuple[str, str], str] | None = None) -> str:
    """The chain of thought: each hop in its canonical cloze form, e.g. "s is a citizen of france . the capital
    of france is paris ." (computed from `facts`, default the world's; pass edited facts for the new chain)."""
    steps, current = [], subject
    for rid, obj in zip(path, world.chain(subject, path, facts), strict=True):
        steps.append(f"{world.relations[rid].cloze[0].format(current)} {obj} .")
        current = obj
    return " ".join(steps)


def cot_prompt(question_prompt: str) -> str:
    return f"{question_prompt} {COT_MARKER}"


def _variant_sets(n_variants: int, hops: int) -> list[tuple[int, ...]]:
    return list(itertools.product(range(n_variants), repeat=hops))


def single_hop_examples(world: World) -> list[Example]:
    """Every fact in every cloze and question template."""
    out = []
    for (s, rid), o in world.facts.items():
        r = world.relations[rid]
        for t in (*r.cloze, *r.questions):
            out.append(Example(t.format(s), o, "single_hop", s, (rid,)))
    return out


def direct_examples(world: World, comp: Composition) -> list[Example]:
    """A composition in every multi-hop frame and noun-phrase variant."""
    kind = f"{'two' if comp.hops == 2 else 'three'}_hop_direct"
    ans, held = world.answer(comp), comp in world.heldout
    return [
        Example(multi_hop_prompt(world, comp.subject, comp.path, f, v), ans, kind, comp.subject, comp.path, held)
        for f in range(len(MULTI_HOP_FRAMES))
        for v in _variant_sets(2, comp.hops)
    ]


def cot_examples(world: World, comp: Composition) -> list[Example]:
    """A composition as chain of thought, from every question frame and noun-phrase variant."""
    kind = f"{'two' if comp.hops == 2 else 'three'}_hop_cot"
    target, held = cot_target(world, comp.subject, comp.path), comp in world.heldout
    return [
        Example(cot_prompt(multi_hop_prompt(world, comp.subject, comp.path, f, v)), target, kind, comp.subject,
                comp.path, held)
        for f in QUESTION_FRAMES
        for v in _variant_sets(2, comp.hops)
    ]


def training_examples(world: World) -> dict[str, list[Example]]:
    """The training set by kind: all single-hop facts, and the *shown* compositions (direct and CoT)."""
    out: dict[str, list[Example]] = {k: [] for k in KINDS}
    out["single_hop"] = single_hop_examples(world)
    for comp in world.compositions:
        if comp in world.heldout:
            continue
        for ex in (*direct_examples(world, comp), *cot_examples(world, comp)):
            out[ex.kind].append(ex)
    return {k: v for k, v in out.items() if v}


def world_corpus(world: World) -> list[str]:
    """Every training sentence (prompt + target); held-out compositions never appear, in any form."""
    return [ex.text for exs in training_examples(world).values() for ex in exs]


def eval_split(world: World, heldout_only: bool = True) -> dict[str, list[Example]]:
    """Evaluation prompts by kind: every single-hop fact in every template; the held-out compositions (or all,
    with `heldout_only=False`) in the three MQuAKE-style question paraphrases (direct) and in the canonical
    chain-of-thought prompt."""
    out: dict[str, list[Example]] = {k: [] for k in KINDS}
    out["single_hop"] = single_hop_examples(world)
    for comp in world.compositions:
        if heldout_only and comp not in world.heldout:
            continue
        h = "two" if comp.hops == 2 else "three"
        ans, held = world.answer(comp), comp in world.heldout
        for q in multi_hop_questions(world, comp.subject, comp.path):
            out[f"{h}_hop_direct"].append(Example(q, ans, f"{h}_hop_direct", comp.subject, comp.path, held))
        out[f"{h}_hop_cot"].append(
            Example(cot_prompt(multi_hop_questions(world, comp.subject, comp.path)[0]),
                    cot_target(world, comp.subject, comp.path), f"{h}_hop_cot", comp.subject, comp.path, held)
        )
    return {k: v for k, v in out.items() if v}


def multi_hop_questions(world: World, subject: str, path: Sequence[str]) -> list[str]:
    """The three paraphrases exported as MQuAKE `questions` (all trained formats): the question frame with
    every relation's first noun phrase, then with every relation's second, then the cloze frame."""
    hops = len(path)
    return [
        multi_hop_prompt(world, subject, path, 1, (0,) * hops),
        multi_hop_prompt(world, subject, path, 1, (1,) * hops),
        multi_hop_prompt(world, subject, path, 0, (0,) * hops),
    ]


# ----------------------------------------------------------------------------- MQuAKE export


def _hop(world: World, subject: str, rid: str, obj: str) -> dict[str, Any]:
    r = world.relations[rid]
    return {"question": r.questions[0].format(subject), "cloze": r.cloze[0].format(subject), "answer": obj,
            "answer_alias": []}


def make_case(
    world: World, case_id: int, comp: Composition, edited_hops: Sequence[int], new_objects: Sequence[str]
) -> dict[str, Any]:
    """One MQuAKE case: edit hop `edited_hops[i]` of the chain to `new_objects[i]` (the subject of an edited
    hop is the subject along the *new* chain), and compose the edited facts for `new_answer`."""
    if len(edited_hops) != len(new_objects) or not edited_hops:
        raise ValueError("give one new object per edited hop, at least one")
    ent = world.entities
    orig_chain = world.chain(comp.subject, comp.path)
    new_facts = dict(world.facts)
    rewrites, current = [], comp.subject
    edit_of = dict(zip(edited_hops, new_objects, strict=True))
    new_chain = []
    for i, rid in enumerate(comp.path):
        true_obj = world.facts[(current, rid)]
        if i in edit_of:
            new_obj = edit_of[i]
            r = world.relations[rid]
            if ent[new_obj].type != r.object_type or new_obj == true_obj:
                raise ValueError(f"bad edit of hop {i}: {current} {rid} {true_obj} -> {new_obj}")
            new_facts[(current, rid)] = new_obj
            rewrites.append({
                "prompt": r.cloze[0], "relation_id": rid,
                "target_new": {"str": new_obj, "id": ent[new_obj].qid},
                "target_true": {"str": true_obj, "id": ent[true_obj].qid},
                "subject": current, "question": r.questions[0].format(current),
            })
        current = new_facts[(current, rid)]
        new_chain.append(current)
    subjects = [comp.subject, *orig_chain[:-1]]
    new_subjects = [comp.subject, *new_chain[:-1]]
    label = {rid: world.relations[rid].label for rid in comp.path}
    triples = [[ent[s].qid, rid, ent[o].qid] for s, rid, o in zip(subjects, comp.path, orig_chain, strict=True)]
    new_triples = [[ent[s].qid, rid, ent[o].qid] for s, rid, o in zip(new_subjects, comp.path, new_chain, strict=True)]
    idx = sorted(edit_of)
    questions = multi_hop_questions(world, comp.subject, comp.path)
    return {
        "case_id": case_id,
        "requested_rewrite": rewrites,
        "questions": questions,
        "answer": orig_chain[-1],
        "answer_alias": [],
        "new_answer": new_chain[-1],
        "new_answer_alias": [],
        "single_hops": [_hop(world, s, rid, o) for s, rid, o in zip(subjects, comp.path, orig_chain, strict=True)],
        "new_single_hops": [
            _hop(world, s, rid, o) for s, rid, o in zip(new_subjects, comp.path, new_chain, strict=True)
        ],
        "orig": {
            "triples": triples,
            "triples_labeled": [[s, label[rid], o] for s, rid, o in zip(subjects, comp.path, orig_chain, strict=True)],
            "new_triples": new_triples,
            "new_triples_labeled": [
                [s, label[rid], o] for s, rid, o in zip(new_subjects, comp.path, new_chain, strict=True)
            ],
            "edit_triples": [new_triples[i] for i in idx],
            "edit_triples_idx": idx,
        },
        # extra fields (allowed by the schema): the intermediate entities, and the trained CoT forms
        "bridge_entities": [
            {"hop": i + 1, "relation_id": comp.path[i], "orig": orig_chain[i], "new": new_chain[i]}
            for i in range(comp.hops - 1)
        ],
        "heldout_composition": comp in world.heldout,
        "cot_prompt": cot_prompt(questions[0]),
        "cot_target": cot_target(world, comp.subject, comp.path),
        "new_cot_target": cot_target(world, comp.subject, comp.path, new_facts),
    }


def mquake_cases(
    world: World, n_two_hop: int = 300, n_three_hop: int = 200, seed: int = 0, heldout_only: bool = True
) -> list[dict[str, Any]]:
    """MQuAKE-schema edit cases over person-subject chains, with 1..hops edits each (uniform number of
    edits, random hops), counterfactual targets of the right type, and `new_answer != answer`.

    With `heldout_only` the compositions are held-out ones (never seen in direct form), so the model can
    only answer them by latent composition -- where an edit of the first hop can propagate."""
    rng = random.Random(seed)
    cases: list[dict[str, Any]] = []
    for hops, n in ((2, n_two_hop), (3, n_three_hop)):
        pool = [
            c for c in world.compositions
            if c.hops == hops and world.entities[c.subject].type == "person" and (not heldout_only or c in world.heldout)
        ]
        rng.shuffle(pool)
        made = 0
        for comp in pool:
            if made >= n:
                break
            k = rng.randint(1, hops)
            edited = sorted(rng.sample(range(hops), k))
            # choose new objects along the new chain, hop by hop
            current, new_objects, ok = comp.subject, [], True
            facts = dict(world.facts)
            for i, rid in enumerate(comp.path):
                if i in edited:
                    r = world.relations[rid]
                    true_obj = facts[(current, rid)]
                    choices = [o for o in world.of_type(r.object_type) if o != true_obj and (o, comp.path[i + 1]) in facts] \
                        if i + 1 < hops else [o for o in world.of_type(r.object_type) if o != true_obj]
                    if not choices:
                        ok = False
                        break
                    obj = rng.choice(sorted(choices))
                    facts[(current, rid)] = obj
                    new_objects.append(obj)
                current = facts[(current, rid)]
            if not ok or current == world.answer(comp):
                continue
            cases.append(make_case(world, len(cases), comp, edited, new_objects))
            made += 1
        if made < n:
            log.warning("only %d %d-hop cases could be made (asked for %d)", made, hops, n)
    return cases


# ----------------------------------------------------------------------------- assets


def save_world_assets(
    world: World, folder: str | os.PathLike, n_two_hop_cases: int = 300, n_three_hop_cases: int = 200,
    corpus_sample_lines: int = 20000, seed: int = 0,
) -> Path:
    """Write world.json (spec), eval_split.json, mquake_cases.json and corpus_sample.txt into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    world.save(folder / "world.json")
    split = eval_split(world)
    (folder / "eval_split.json").write_text(json.dumps(
        {k: [[e.prompt, e.target, e.subject, list(e.path)] for e in v] for k, v in split.items()},
        separators=(",", ":"),
    ))
    cases = mquake_cases(world, n_two_hop_cases, n_three_hop_cases, seed=seed)
    (folder / "mquake_cases.json").write_text(json.dumps(cases, indent=1))
    corpus = world_corpus(world)
    rng = random.Random(seed)
    sample = rng.sample(corpus, min(corpus_sample_lines, len(corpus)))
    (folder / "corpus_sample.txt").write_text("\n".join(sample) + "\n")
    return folder


def load_eval_split(path: str | os.PathLike) -> dict[str, list[Example]]:
    """Read eval_split.json (as written by `save_world_assets`) back into Examples (all held out but single-hop)."""
    path = Path(path)
    if path.is_dir():
        path = path / "eval_split.json"
    d = json.loads(path.read_text())
    return {
        k: [Example(p, t, k, s, tuple(r), heldout=k != "single_hop") for p, t, s, r in v]
        for k, v in d.items()
    }


def sentences_mention(corpus: Iterable[str], world: World, comp: Composition) -> bool:
    """Whether any sentence states `comp` in direct or CoT form (any noun-phrase variant; whole words)."""
    nps = [f" {noun_phrase(world, comp.subject, comp.path, v)} " for v in _variant_sets(2, comp.hops)]
    return any(np in f" {s} " for s in corpus for np in nps)
