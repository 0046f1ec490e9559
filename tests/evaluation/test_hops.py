"""ACE's hop prompts (synthetic world and curated real facts) avoid the continuation the case evaluates."""

from dataclasses import replace

from ace_interp.data.mquake import load_mquake
from ace_interp.data.real_facts import load_real_facts
from ace_interp.data.world import load_world, world_paths
from ace_interp.evaluation.hops import (
    hop_prompts_for,
    known_fact_pairs,
    known_facts_path,
    real_fact_hop_prompts,
    real_fact_implicit_subjects,
    world_hop_prompts,
    world_implicit_subjects,
)
from ace_interp.model import load_model
from ace_interp.model.loading import ASSETS


def test_hop_prompts_use_other_continuations_of_the_new_bridge_entity():
    world = load_world(ASSETS / "world" / "world.json")
    cases = load_mquake(ASSETS / "world" / "mquake_cases.json")[:40]
    hops = world_hop_prompts(world)
    n = 0
    for case in cases:
        questions = set(case.questions)
        for h in hops(case):
            rw = case.requested_rewrite[h.request]
            text = h.prompt.format(rw.subject)
            assert text not in questions  # never an evaluated question
            assert text.startswith(rw.prompt.format(rw.subject).rsplit(" is", 1)[0].rsplit(" 's", 1)[0])
            # the answer is the world's fact about the *new* object
            second = next(r for r in world.relations.values() if text.endswith(r.noun_phrases[0].format("").strip() + " is"))
            assert world.facts[(rw.target_new.text, second.rid)] == h.answer
            n += 1
    assert n > 40  # most edits have at least one other continuation


def test_a_sport_edit_gets_the_other_continuations_of_the_new_sport():
    world = load_world(ASSETS / "world" / "world.json")
    cases = load_mquake(ASSETS / "world" / "mquake_cases.json")
    # the first case that edits a person's sport and asks for the sport's origin
    case = next(c for c in cases if c.requested_rewrite[0].prompt == "{} 's sport is" and "origin" in c.questions[0])
    new_sport = case.requested_rewrite[0].target_new.text
    sport = [h for h in world_hop_prompts(world)(case) if h.request == 0]
    # a sport's continuations are equipment, continent, language and currency besides the evaluated origin
    assert sorted(h.prompt for h in sport) == sorted(
        f"{{}} 's sport 's {noun} is" for noun in ("equipment", "continent", "language", "currency"))
    for h in sport:
        rid = next(r.rid for r in world.relations.values() if h.prompt.endswith(f"'s {r.noun_phrases[0].format('').split()[-1]} is")
                   and r.takes("sport"))
        assert h.answer == world.facts[(new_sport, rid)]


def test_implicit_subjects_reach_the_edited_subject_through_entities_outside_the_case():
    world = load_world(ASSETS / "world" / "world.json")
    cases = load_mquake(ASSETS / "world" / "mquake_cases.json")[:60]
    phrases = world_implicit_subjects(world, n=8)
    nouns = {r.noun_phrases[0].format("").split()[-1]: r.rid for r in world.relations.values()}
    assert len(nouns) == len(world.relations)  # each relation's first noun is its own
    later = 0
    for case in cases:
        entities = {x for t in case.orig.triples_labeled + case.orig.new_triples_labeled for x in (t[0], t[2])}
        got = phrases(case)
        assert got == phrases(case)  # seeded: the same phrases every time
        for i, rw in enumerate(case.requested_rewrite):
            mine = [p.phrase for p in got if p.request == i]
            assert len(mine) <= 8 and len(set(mine)) == len(mine)
            if world.entities[rw.subject].type == "person":
                assert not mine  # nothing in the world points at a person
            for phrase in mine:
                other, noun = phrase.split(" 's ")
                assert world.facts[(other, nouns[noun])] == rw.subject  # the phrase names the subject
                assert other not in entities  # never the question's subject or another entity of the case
                # and the rewrite's prompt with the phrase is a question the world composes
                assert (nouns[noun], rw.relation_id) in world_paths(world.config)[0]
            later += bool(mine) and case.edited_hops[i] not in (0, None)
    assert later > 20  # every later-hop rewrite edits an entity that other entities point at


# ----------------------------------------------------------------------------- real facts

REAL_CASES = ASSETS / "real_facts" / "smollm2_known.json"


def _real_case(case_id: int):
    return next(c for c in load_mquake(REAL_CASES) if c.case_id == case_id)


def test_real_fact_hop_prompts_ask_other_facts_of_the_new_object_never_an_evaluated_question():
    kb = load_real_facts()
    hops = real_fact_hop_prompts(kb)
    cases = [c for c in load_mquake(REAL_CASES) if c.n_edits == 1][:60]
    n = 0
    for case in cases:
        for h in hops(case):
            rw = case.requested_rewrite[h.request]
            new = kb[rw.target_new.text]
            question = h.prompt.rsplit("Q: ", 1)[1]
            assert question.endswith("\nA:")
            assert question.removesuffix("\nA:") not in case.questions  # never an evaluated question
            assert rw.subject in question
            # the answer is one of the *new* object's facts, through a relation the case does not continue with
            second = [r for r, o in new.facts.items() if o == h.answer]
            assert second, (h.answer, new.facts)
            hop = case.edited_hops[h.request]
            if hop is not None and hop + 1 < case.n_hops:
                assert set(second) - {case.relation_ids[hop + 1]}
            # the demonstrations name none of the subject, the new object or the answer
            demos = h.prompt.rsplit("Q: ", 1)[0]
            for name in (rw.subject, new.name, h.answer):
                assert name not in demos
            n += 1
    assert n > 60  # most edits' new objects have other facts


def test_real_fact_implicit_subjects_name_the_subject_through_known_facts_of_other_entities():
    kb = load_real_facts()
    known = known_fact_pairs(known_facts_path(REAL_CASES))
    phrases = real_fact_implicit_subjects(kb, known=known, n=5)
    everything = real_fact_implicit_subjects(kb, n=1000)
    cases = [c for c in load_mquake(REAL_CASES) if c.n_edits == 1][:60]
    later = 0
    for case in cases:
        entities = {x for t in case.orig.triples_labeled + case.orig.new_triples_labeled for x in (t[0], t[2])}
        got = phrases(case)
        for i, rw in enumerate(case.requested_rewrite):
            mine = [p.phrase for p in got if p.request == i]
            assert len(mine) <= 5
            # each phrase is some fact's noun phrase (y, r1) = subject, for y outside the case and known to the model
            pointing = [(y, r) for y, r, o in kb.all_facts() if o.name == rw.subject]
            for phrase in mine:
                match = [(y, r) for y, r in pointing
                         if phrase.lower() == kb.relations[r].templates(y.type).phrases[0].format(y.text).lower()]
                assert match, phrase
                assert all(y.name not in entities and (y.name, r) in known for y, r in match)
                assert phrase[0].isupper() == rw.prompt.startswith("{}")
            unfiltered = [p for p in everything(case) if p.request == i]
            assert len(unfiltered) == len({(y.name, r) for y, r in pointing if y.name not in entities})
            later += bool(mine) and case.edited_hops[i] == 1
    assert later > 10


def test_real_fact_hop_prompts_skip_inverse_compositions_and_unknown_facts():
    kb = load_real_facts()
    case = _real_case(108)  # "Budapest is the capital of" -> Canada; the case asks for the continent
    answers = {h.answer for h in real_fact_hop_prompts(kb)(case)}
    # "the capital of the country whose capital is Budapest" leads back to Budapest: contradicts the edit
    assert kb["Canada"].facts["P36"] not in answers
    assert kb["Canada"].facts["P38"] in answers
    assert kb["Canada"].facts["P30"] not in answers  # the evaluated continuation
    # only facts the model knows, when given: none known, no prompts
    assert real_fact_hop_prompts(kb, known=set())(case) == []
    assert {h.answer for h in real_fact_hop_prompts(kb, known={("Canada", "P38")})(case)} == {kb["Canada"].facts["P38"]}


def test_real_fact_hop_prompts_are_empty_for_entities_outside_the_curated_facts():
    case = _real_case(108)
    rewrite = replace(case.requested_rewrite[0], subject="Atlantis")
    assert real_fact_hop_prompts()(replace(case, requested_rewrite=[rewrite])) == []


def test_hop_prompts_for_a_real_model_read_the_known_facts_next_to_the_case_file(tiny_model_dir):
    bridge = load_model(tiny_model_dir("gpt2"), device="cpu")  # no synthetic world next to it
    known = known_fact_pairs(known_facts_path(REAL_CASES))
    assert known_facts_path(REAL_CASES).name == "smollm2_known_facts.json"
    case = _real_case(7)  # the Prado Museum -> Egypt: the filter knows Egypt's continent and language, not its currency
    expected = real_fact_hop_prompts(known=known)(case)
    assert hop_prompts_for(bridge, REAL_CASES)(case) == expected
    assert sorted(h.answer for h in expected) == ["Africa", "Arabic"]
    assert len(real_fact_hop_prompts()(case)) == 3
