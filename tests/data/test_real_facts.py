"""The curated real-fact set: consistent tables, deterministic MQuAKE cases, edits composed correctly."""

import json
from collections import Counter
from pathlib import Path

import pytest

from ace_interp.data.mquake import load_mquake, validate_case
from ace_interp.data.real_facts import (
    Chain,
    enumerate_chains,
    generate_cases,
    load_real_facts,
    make_case,
    rewrite_template,
)

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "real_facts"


@pytest.fixture(scope="module")
def kb():
    return load_real_facts()


@pytest.fixture(scope="module")
def cases(kb):
    return generate_cases(kb, pattern_caps=False)  # every chain


def test_tables_are_consistent(kb):
    types = Counter(e.type for e in kb.entities.values())
    assert types["country"] >= 50 and types["landmark"] >= 60 and types["city"] >= 100
    for subject, r, obj in kb.all_facts():
        assert obj.type == kb.relations[r].object_type, (subject.name, r, obj.name)
        assert r.startswith("P") and r[1:].isdigit()
    assert kb.fact(kb["Eiffel Tower"], "P17").name == "France"
    assert kb.fact(kb["France"], "P36").name == "Paris"
    assert kb.fact(kb["Tokyo"], "P1376").name == "Japan"  # inverse of P36 for capitals
    for country in kb.of_type("country"):
        cap = kb.fact(country, "P36")
        if cap is not None:
            assert kb.fact(cap, "P1376") is country and kb.fact(cap, "P17") is country
    assert len(kb.all_facts()) >= 600


def test_rewrite_templates_move_the_article_out_of_the_slot(kb):
    tower, paris = kb["Eiffel Tower"], kb["Paris"]
    assert rewrite_template("{} is located in the country of", tower) == "The {} is located in the country of"
    assert rewrite_template("The capital of {} is", kb["United States"]) == "The capital of the {} is"
    assert rewrite_template("The capital of {} is", paris) == "The capital of {} is"
    r = kb.rewrite(tower, "P17", kb["Italy"])
    assert r.prompt_text() == kb.single_hop(tower, "P17").cloze == "The Eiffel Tower is located in the country of"
    assert r.subject == "Eiffel Tower" and r.target_true.text == "France" and r.target_new.text == "Italy"


def test_candidates_cover_two_to_four_hops_and_are_deterministic(kb, cases):
    hops = Counter(c.n_hops for c in cases)
    assert hops[2] >= 1000 and hops[3] >= 400 and hops[4] >= 50
    again = generate_cases(kb, pattern_caps=False)
    assert [c.to_dict() for c in again] == [c.to_dict() for c in cases]
    capped = generate_cases(kb, max_per_pattern=20, pattern_caps=False)
    per_pattern = Counter((c.entities[0].type, c.path) for c in enumerate_chains(kb, max_per_pattern=20))
    assert max(per_pattern.values()) == 20 and len(capped) == sum(per_pattern.values())
    assert [c.to_dict() for c in generate_cases(kb, max_per_pattern=20, pattern_caps=False)] == [c.to_dict() for c in capped]
    # the curated candidate set: each pattern capped by its own "max"
    curated = Counter((c.entities[0].type, c.path) for c in enumerate_chains(kb, pattern_caps=True))
    caps = {(p["start_type"], tuple(p["path"])): p["max"] for p in kb.patterns}
    assert all(n <= caps[k] for k, n in curated.items()) and len(curated) == len(caps)
    assert len(generate_cases(kb)) == sum(curated.values()) >= 500
    assert len({c.case_id for c in cases}) == len(cases)
    assert len({tuple(c.questions) for c in cases}) == len(cases)


def test_every_case_is_valid_mquake_with_composed_new_answers(kb, cases):
    for c in cases:
        validate_case(c.to_dict())
        assert c.answer != c.new_answer
        assert 1 <= c.n_edits <= c.n_hops and len(c.questions) >= 2
        edited = c.orig.edit_triples_idx
        assert edited == sorted(set(edited)) and len(edited) == c.n_edits
        # the original chain follows the real facts
        for h, (s, _, o), rid in zip(c.single_hops, c.orig.triples_labeled, c.relation_ids):
            assert kb.fact(kb[s], rid).name == o == h.answer
        assert c.answer == c.single_hops[-1].answer
        # the edited chain: edited hops take target_new, the others follow the new subject's real facts
        rewrites = iter(c.requested_rewrite)
        for k, (h, (s, _, o), rid) in enumerate(zip(c.new_single_hops, c.orig.new_triples_labeled, c.relation_ids)):
            assert h.answer == o
            if k > 0:
                assert s == c.orig.new_triples_labeled[k - 1][2]  # a connected chain
            if k in edited:
                r = next(rewrites)
                assert (r.subject, r.relation_id, r.target_new.text) == (s, rid, o)
                assert r.target_true.text == kb.fact(kb[s], rid).name != o  # a real, changed fact
                assert kb[r.target_new.text].type == kb[r.target_true.text].type
                assert r.prompt_text() == h.cloze
            else:
                assert kb.fact(kb[s], rid).name == o
        assert c.new_answer == c.new_single_hops[-1].answer
        assert c.new_answer_alias == c.new_single_hops[-1].answer_alias


def test_questions_nest_the_chain(kb):
    chain = Chain(tuple(kb.follow(kb["iPhone"], ["P176", "P112", "P27", "P36"])), ("P176", "P112", "P27", "P36"))
    case = make_case(kb, chain, case_id=7)
    assert case.answer == "Washington, D.C." and "Washington" in case.answer_alias
    assert case.questions[0] == (
        "What is the capital of the country of citizenship of the person who founded the company that produced the iPhone?"
    )
    assert len(set(case.questions)) == 3
    assert all(c.entities[0].type == "landmark" for c in enumerate_chains(kb) if c.path == ("P131", "P17", "P36"))


def test_curated_smollm2_set_if_present():
    path = ASSETS / "smollm2_known.json"
    if not path.exists():
        pytest.skip("assets/real_facts/smollm2_known.json not generated yet")
    kept = load_mquake(path)
    assert len(kept) >= 150
    assert any(c.n_hops == 3 for c in kept)
    summary = json.loads((ASSETS / "smollm2_known.summary.json").read_text())
    assert summary["kept"] == len(kept)
    assert summary["single_hop_facts"]["known"] >= 300
    candidates = {c.case_id: c.to_dict() for c in generate_cases()}
    assert all(candidates[c.case_id] == c.to_dict() for c in kept)  # the asset is the generator's output
