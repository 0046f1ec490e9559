"""The curated real-fact set: consistent tables, deterministic MQuAKE cases, edits composed correctly."""

import json
from collections import Counter
from pathlib import Path

import pandas as pd
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


# ----------------------------------------------------------------------------- filtering

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "mquake_cf3k_small.json"


def _oracle(known_answers, known_questions):
    """A fake generator: answers a prompt correctly iff its last line asks something it 'knows'."""

    def generate(bridge, prompts, max_new_tokens=8, batch_size=32, stop_at_newline=True, progress=False):
        out = []
        for p in prompts:
            hit = known_answers.get(p) or known_questions.get(p.rsplit("Q: ", 1)[-1].removesuffix("\nA:"))
            out.append(f" {hit}\n" if hit else " I do not know\n")
        return out

    return generate


def test_filter_bookkeeping_with_an_oracle(monkeypatch):
    from ace_interp.data import filtering

    cases = load_mquake(FIXTURE)
    # the oracle knows every cloze of cases 1 and 3, and only case 1's multi-hop question
    clozes = {h.cloze: h.answer for c in cases if c.case_id in (1, 3) for h in c.single_hops}
    questions = {cases[0].questions[1]: cases[0].answer}
    monkeypatch.setattr(filtering, "generate_greedy", _oracle(clozes, questions))
    kept, report = filtering.filter_known(None, cases)
    assert [c.case_id for c in kept] == [1]
    r = report.set_index("case_id")
    assert bool(r.at[1, "kept"]) and bool(r.at[1, "multi_hop_direct"])  # second paraphrase counted
    assert bool(r.at[3, "all_hops_known"]) and not bool(r.at[3, "multi_hop_known"])
    assert pd.isna(r.at[2, "multi_hop_direct"])  # not asked: a hop is unknown
    assert (report["kept"] == report["all_hops_known"] & report["multi_hop_known"]).all()
    hops = report.attrs["single_hops"]
    assert len(hops) == len({h.cloze for c in cases for h in c.single_hops})
    s = filtering.summarize(cases, report)
    assert s["kept"] == 1 and s["by_hops"]["2"] == {"candidates": 2, "kept": 1}
    assert s["single_hop_facts"]["known"] == len(filtering.known_facts(cases, report)) == len(clozes)
    assert "KEPT: 1" in filtering.format_summary(s)
    with pytest.raises(ValueError, match="no cases"):
        filtering.filter_known(None, [])


@pytest.mark.real_model
@pytest.mark.slow
def test_smollm2_knows_the_eiffel_tower_chain(smollm2):
    from ace_interp.data.filtering import filter_known

    cases = [c for c in load_mquake(FIXTURE) if c.case_id == 1]
    kept, report = filter_known(smollm2, cases)
    hops = report.attrs["single_hops"]
    assert hops["known"].all(), hops[["cloze", "cloze_generation", "question_generation"]]
