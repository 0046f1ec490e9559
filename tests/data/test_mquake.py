"""MQuAKE schema: loading the official layout, round trips, clear errors on malformed input; prompt builders."""

import copy
import json
from pathlib import Path

import pytest

from ace_interp.data.mquake import (
    CASE_KEYS,
    MQuAKECase,
    MQuAKEFormatError,
    _unflatten,
    case_notes,
    load_mquake,
    load_mquake_checked,
    read_mquake_json,
    save_mquake,
    validate_case,
)
from ace_interp.data.prompts import (
    Demonstration,
    PromptFormat,
    case_entities,
    cot_prompt,
    demonstrations_for_case,
    few_shot_prompt,
    multi_hop_prompts,
    demonstrations_for_hop,
    real_demonstrations,
    select_demonstrations,
    single_hop_demonstrations,
)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "mquake_cf3k_small.json"


@pytest.fixture
def raw_cases():
    return json.loads(FIXTURE.read_text())


def test_fixture_has_the_official_keys_and_loads(raw_cases):
    for d in raw_cases:
        assert list(d) == list(CASE_KEYS)  # exactly the CF-3k-v2 keys, in the official order
        assert set(d["requested_rewrite"][0]) == {"prompt", "relation_id", "target_new", "target_true", "subject", "question"}
        assert set(d["single_hops"][0]) == {"question", "cloze", "answer", "answer_alias"}
    cases = load_mquake(FIXTURE)
    assert len(cases) == 6
    assert sorted({c.n_hops for c in cases}) == [2, 3, 4]
    assert sorted({c.n_edits for c in cases}) == [1, 2, 3, 4]
    c = cases[0]
    assert c.n_hops == 2 and c.relation_ids == ["P17", "P36"]
    assert c.answer in c.answers and c.new_answer in c.new_answers
    for case in cases:
        for r, k in zip(case.requested_rewrite, case.orig.edit_triples_idx):
            # the edit request is the edited chain's cloze, with the subject in the "{}" slot
            assert r.prompt_text() == case.new_single_hops[k].cloze
            assert r.prompt_text()[slice(*r.subject_span())] == r.subject
            assert r.target_new.text == case.new_single_hops[k].answer


def test_round_trip_keeps_everything_including_extra_fields(raw_cases, tmp_path):
    raw = copy.deepcopy(raw_cases)
    raw[0]["bridge_entities"] = ["France"]  # our synthetic world adds this
    raw[0]["requested_rewrite"][0]["note"] = "kept"
    cases = [MQuAKECase.from_dict(d) for d in raw]
    assert cases[0].extra == {"bridge_entities": ["France"]}
    assert [c.to_dict() for c in cases] == raw
    path = save_mquake(cases, tmp_path / "out.json")
    assert json.loads(path.read_text()) == raw
    assert [c.to_dict() for c in load_mquake(path)] == raw


def test_mquake_hard_loads_all_429_cases(mquake_hard_path):
    cases = load_mquake(mquake_hard_path)
    assert len(cases) == 429
    assert {c.n_hops for c in cases} == {4} and {c.n_edits for c in cases} == {4}
    raw = json.loads(Path(mquake_hard_path).read_text())
    assert [c.to_dict() for c in cases] == raw  # lossless
    assert cases[0].requested_rewrite[0].prompt_text() == "Hey Jude was performed by"
    assert len({r for c in cases for r in c.relation_ids}) >= 25


def _broken(raw_cases, mutate):
    d = copy.deepcopy(raw_cases[1])
    mutate(d)
    return d


@pytest.mark.parametrize(
    "mutate, field, words",
    [
        (lambda d: d.pop("new_answer"), "new_answer", "missing"),
        (lambda d: d["requested_rewrite"][0].pop("target_new"), "requested_rewrite[0].target_new", "missing"),
        (lambda d: d["requested_rewrite"][1].update(prompt="The capital of France is"), "requested_rewrite[1].prompt", "'{}'"),
        (lambda d: d["requested_rewrite"][0]["target_new"].update(str=d["requested_rewrite"][0]["target_true"]["str"]),
         "requested_rewrite[0].target_new", "nothing to edit"),
        (lambda d: d.update(answer="  "), "answer", "empty"),
        (lambda d: d["single_hops"][1].update(answer=""), "single_hops[1].answer", "empty"),
        (lambda d: d["requested_rewrite"][0]["target_new"].update(str=""), "requested_rewrite[0].target_new.str", "empty"),
        (lambda d: d.update(questions=[]), "questions", "empty"),
        (lambda d: d["new_single_hops"].pop(), "new_single_hops", "hops"),
        (lambda d: d["orig"]["triples"].pop(), "orig.triples", "triples"),
        (lambda d: d["single_hops"][0].update(answer_alias="UK"), "single_hops[0].answer_alias", "list"),
    ],
)
def test_malformed_case_names_case_and_field(raw_cases, mutate, field, words):
    d = _broken(raw_cases, mutate)
    with pytest.raises(MQuAKEFormatError) as e:
        validate_case(d)
    assert e.value.case_id == d["case_id"] == 2
    assert e.value.field == field
    assert "case 2" in str(e.value) and field in str(e.value) and words in str(e.value)


def test_malformed_file_errors(raw_cases, tmp_path):
    bad = copy.deepcopy(raw_cases)
    del bad[3]["single_hops"][0]["cloze"]
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(bad))
    with pytest.raises(MQuAKEFormatError, match=r"case 4.*single_hops\[0\]\.cloze.*missing"):
        load_mquake(p)
    bad[3]["single_hops"][0]["cloze"] = "x"
    bad[3]["answer"] = ""
    p.write_text(json.dumps(bad))
    with pytest.raises(MQuAKEFormatError, match=r"case 4.*'answer'.*empty"):
        load_mquake(p)
    assert len(load_mquake(p, validate=False)) == 6  # validation can be skipped
    dup = copy.deepcopy(raw_cases) + [copy.deepcopy(raw_cases[0])]
    p.write_text(json.dumps(dup))
    with pytest.raises(MQuAKEFormatError, match="more than once"):
        load_mquake(p)
    p.write_text("{not json")
    with pytest.raises(MQuAKEFormatError, match="not valid JSON"):
        load_mquake(p)
    p.write_text(json.dumps({"a": 1}))
    with pytest.raises(MQuAKEFormatError, match="list of cases"):
        load_mquake(p)
    with pytest.raises(MQuAKEFormatError, match="case 2"):
        save_mquake([_broken(raw_cases, lambda d: d.pop("orig"))], tmp_path / "x.json")


def test_names_need_a_hub_and_unknown_paths_fail_clearly(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE"):
        load_mquake("CF-3k-v2")
    with pytest.raises(FileNotFoundError, match="neither an existing MQuAKE JSON file nor a known name"):
        read_mquake_json(tmp_path / "nope.json")


def test_unflatten_restores_nested_fields(raw_cases):
    d = copy.deepcopy(raw_cases[0])
    flat = {k: v for k, v in d.items() if k != "orig"}
    flat.update({f"orig_{k}": v for k, v in d["orig"].items()})
    flat["requested_rewrite"] = [
        {**{k: v for k, v in r.items() if k not in ("target_new", "target_true")},
         "target_new_str": r["target_new"]["str"], "target_new_id": r["target_new"]["id"],
         "target_true_str": r["target_true"]["str"], "target_true_id": r["target_true"]["id"]}
        for r in d["requested_rewrite"]
    ]
    assert MQuAKECase.from_dict(_unflatten(flat)).to_dict() == d


# ----------------------------------------------------------------------------- prompts


def test_few_shot_and_cot_prompt_layout():
    demos = [Demonstration("Q1?", "A1", ("S1.", "S2."), ("P1", "P2"), ("x",))]
    assert few_shot_prompt("Q?", demos) == "Q: Q1?\nA: A1\nQ: Q?\nA:"
    assert cot_prompt("Q?", demos) == "Q: Q1?\nA: S1. S2. So the answer is A1.\nQ: Q?\nA:"
    fmt = PromptFormat(question_prefix="", answer_prefix="->", separator=" ; ", instruction="go: ")
    assert few_shot_prompt("q", demos, fmt) == "go: Q1? ; -> A1 ; q ; ->"
    with pytest.raises(ValueError, match="no reasoning steps"):
        cot_prompt("Q?", [Demonstration("Q1?", "A1")])


def test_demonstration_selection_in_and_out_of_distribution():
    pool = real_demonstrations()
    assert len(pool) >= 20
    path = ["P17", "P36"]
    ind = select_demonstrations(pool, path, k=4)
    assert ind[0].path == ("P17", "P36") and len(ind) == 4
    ood = select_demonstrations(pool, path, k=4, out_of_distribution=True)
    assert len(ood) == 4 and all(not {"P17", "P36"} & set(d.path) for d in ood)
    no_italy = select_demonstrations(pool, path, k=30, exclude_entities=["italy"])
    assert all("Italy" not in d.entities for d in no_italy) and len(no_italy) < len(pool)
    every_relation = sorted({r for d in pool for r in d.path})
    with pytest.raises(ValueError, match="no out-of-distribution"):
        select_demonstrations(pool, every_relation, k=2, out_of_distribution=True)


def test_case_prompts_never_leak_case_entities():
    cases = load_mquake(FIXTURE)
    pool = real_demonstrations()
    for c in cases:
        ents = set(case_entities(c))
        for ood in (False, True):
            demos = demonstrations_for_case(c, pool, k=4, out_of_distribution=ood)
            assert demos and all(not ents & set(d.entities) for d in demos)
        prompts = multi_hop_prompts(c, pool, chain_of_thought=True)
        assert len(prompts) == len(c.questions) and prompts[0].endswith(f"Q: {c.questions[0]}\nA:")
        assert "So the answer is" in prompts[0]
    d = Demonstration.from_case(cases[0])
    assert d.answer == "Paris" and d.steps[0] == "The Eiffel Tower is located in the country of France."


def test_single_hop_demonstrations_match_the_relation_and_skip_the_hop_entities():
    pool = single_hop_demonstrations()
    assert {r for d in pool for r in d.path} >= {"P17", "P36", "P30", "P37", "P27", "P112", "P1376"}
    demos = demonstrations_for_hop("What is the capital of Ecuador?", ["Quito"], "P36", pool, k=3)
    assert demos[0].path == ("P36",) and all("Ecuador" not in d.entities for d in demos)
    prompt = few_shot_prompt("What is the capital of Ecuador?", demos)
    assert prompt.startswith("Q: What is the capital of Uruguay?\nA: Montevideo\n") and "Quito" not in prompt


def test_the_filter_and_the_evaluation_ask_the_same_prompts(monkeypatch):
    """The known-fact filter and the evaluation's few-shot style build the same multi-hop and one-hop prompts (with 3
    demonstrations in one and 4 in the other, 3 of 20 kept SmolLM2 cases were missed by the unedited model)."""
    import ace_interp.evaluation.filtering as filtering
    from ace_interp.evaluation.filtering import FilterConfig, check_multi_hop, check_single_hops
    from ace_interp.evaluation.protocol import few_shot_style
    from ace_interp.model.loading import ASSETS

    asked = []
    monkeypatch.setattr(filtering, "generate_greedy", lambda bridge, prompts, *a, **k: asked.extend(prompts) or [""] * len(prompts))
    cases = load_mquake(ASSETS / "real_facts" / "smollm2_known.json")[:12]
    style = few_shot_style()
    check_multi_hop(None, cases, FilterConfig())
    first_questions = [style.multi_hop(c, False)[0] for c in cases]
    assert asked[: len(cases)] == first_questions
    asked.clear()
    hops = [h for c in cases for h in c.single_hops]
    relations = [r for c in cases for r in c.relation_ids]
    table = check_single_hops(None, hops, FilterConfig(hop_check="question"), relation_ids=relations)
    expected = [style.single_hop(q, list(a), r) for q, a, r in zip(table.question, table.answers, table.relation_id)]
    assert asked == expected


# Issue 26: what breaks evaluation is an error for that case; what is only unusual is a warning.
def test_subject_spelled_with_other_case_in_the_question_loads_with_a_warning(raw_cases, tmp_path, caplog):
    cases = copy.deepcopy(raw_cases[:3])
    for d in cases:
        r = d["requested_rewrite"][0]
        r["question"] = r["question"].replace(r["subject"], r["subject"].lower())
        r["subject"] = r["subject"][0].upper() + r["subject"][1:] if r["subject"][0].islower() else r["subject"]
        assert r["subject"] not in r["question"] and r["subject"].lower() in r["question"].lower()
    p = tmp_path / "landmarks.json"
    p.write_text(json.dumps(cases))
    with caplog.at_level("WARNING"):
        loaded = load_mquake(p)
    assert [c.case_id for c in loaded] == [d["case_id"] for d in cases]
    assert "3 of 3 cases" in caplog.text and "other case" in caplog.text
    assert "different case" in case_notes(cases[0])[0]


def test_invalid_cases_are_skipped_and_reported_by_the_checked_loader(raw_cases, tmp_path):
    cases = copy.deepcopy(raw_cases[:4])
    r = cases[2]["requested_rewrite"][0]
    r["target_new"]["str"] = r["target_true"]["str"]
    p = tmp_path / "one-bad.json"
    p.write_text(json.dumps(cases))
    loaded, invalid = load_mquake_checked(p)
    assert [c.case_id for c in loaded] == [cases[i]["case_id"] for i in (0, 1, 3)]
    assert [e.case_id for e in invalid] == [cases[2]["case_id"]] and "nothing to edit" in str(invalid[0])
    with pytest.raises(MQuAKEFormatError, match="nothing to edit"):
        load_mquake(p)


def test_wrong_encoding_and_directory_give_clear_errors(raw_cases, tmp_path):
    p = tmp_path / "latin1.json"
    p.write_bytes(json.dumps(raw_cases[:1], ensure_ascii=False).replace(raw_cases[0]["answer"], "Zürich").encode("latin-1"))
    with pytest.raises(MQuAKEFormatError, match="not UTF-8"):
        load_mquake(p)
    with pytest.raises(MQuAKEFormatError, match="is a directory"):
        load_mquake(tmp_path)
