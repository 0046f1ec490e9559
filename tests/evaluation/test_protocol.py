"""The MQuAKE protocol: bookkeeping on a real-schema fixture, and a full edit/measure/undo on a tiny model."""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from ace_interp.data.mquake import MQuAKECase, load_mquake
from ace_interp.evaluation.protocol import (
    PromptStyle,
    SpecificityPool,
    edited_hop_indices,
    evaluate,
    toy_world_style,
)
from ace_interp.model import hf_parameters
from ace_interp.provenance import repo_relative

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "mquake_cf3k_small.json"


def _tiny_case(case_id, subject, country, new_country, capital, new_capital):
    """A 2-hop case in the tiny models' vocabulary (city -P17-> country -P36-> capital), first hop edited."""
    # subject last in the cloze: a random tiny model only moves the next token from the last position
    hop = lambda c, a: {"question": f"q : which country is {c} in", "cloze": f"the country of the city {c}", "answer": a, "answer_alias": []}  # noqa: E731
    cap = lambda c, a: {"question": f"q : what is the capital of {c}", "cloze": f"the capital of {c} is", "answer": a, "answer_alias": []}  # noqa: E731
    return {
        "case_id": case_id,
        "requested_rewrite": [{"prompt": "the country of the city {}", "relation_id": "P17", "subject": subject,
                               "target_new": {"str": new_country, "id": new_country}, "target_true": {"str": country, "id": country},
                               "question": f"q : which country is {subject} in"}],
        "questions": [f"the capital of the country of {subject} is", f"q : what is the capital of the country of {subject}"],
        "answer": capital, "answer_alias": [], "new_answer": new_capital, "new_answer_alias": [],
        "single_hops": [hop(subject, country), cap(country, capital)],
        "new_single_hops": [hop(subject, new_country), cap(new_country, new_capital)],
        "orig": {"triples": [[subject, "P17", country], [country, "P36", capital]],
                 "triples_labeled": [[subject, "P17", country], [country, "P36", capital]],
                 "new_triples": [[subject, "P17", new_country], [new_country, "P36", new_capital]],
                 "new_triples_labeled": [[subject, "P17", new_country], [new_country, "P36", new_capital]],
                 "edit_triples": [[subject, "P17", new_country]]},
    }


def test_edited_hops_and_specificity_pool_on_real_schema():
    cases = load_mquake(FIXTURE)
    for case in cases:
        idx = edited_hop_indices(case)
        assert len(idx) == case.n_edits
        for i, rw in zip(idx, case.requested_rewrite):
            assert case.new_single_hops[i].answer == rw.target_new.text or rw.target_new.text in case.new_single_hops[i].answers
    pool = SpecificityPool.from_cases(cases)
    for case in cases:
        entities = {x.lower() for t in case.orig.triples_labeled + case.orig.new_triples_labeled for x in (t[0], t[2])}
        for fact in pool.sample(case, 10, seed=0):
            assert fact["subject"].lower() not in entities
            assert not {a.lower() for a in fact["answers"]} & entities


def test_protocol_edits_measures_and_undoes(tiny_model):
    # a random tiny model has no trained tokenisation convention; with a BOS in front ROME reaches every target here
    # (without one it misses berlin -> spain on gpt2, p(new) 0.018 vs p(true) 0.020, and the write's check says so)
    tiny_model.cfg.default_prepend_bos = True
    cases = [MQuAKECase.from_dict(_tiny_case(1, "tokyo", "japan", "italy", "tokyo", "rome")),
             MQuAKECase.from_dict(_tiny_case(2, "berlin", "germany", "spain", "berlin", "madrid"))]
    style = PromptStyle("raw", multi_hop=lambda case, cot: list(case.questions), single_hop=lambda q, answers, relation: q, max_new_tokens=1)
    before = {k: v.clone() for k, v in hf_parameters(tiny_model).items()}
    result = evaluate(tiny_model, cases, [None, "rome"], style, n_specificity=2, progress=False, known_only=False)
    df = result.per_case
    assert list(df.method) == ["base", "base", "rome", "rome"]
    edited = df[df.method == "rome"]
    assert (edited.efficacy == 1.0).all()  # ROME writes the new country into the cloze prompt
    assert edited[["multi_hop", "paraphrase"]].apply(lambda s: s.between(0, 1)).all().all()
    for k, v in hf_parameters(tiny_model).items():
        assert torch.equal(v, before[k]), f"{k} not restored after evaluation"
    summary = result.summary
    assert set(summary.n_edits) == {"1", "all"} and (summary.n_cases > 0).all()


def test_toy_style_reads_the_last_chain_of_thought_step():
    style = toy_world_style()
    assert style.cot_answer("anna kovac is a citizen of france . the capital of france is paris .") == "paris"
    assert style.cot_answer("") == ""


def test_toy_models_are_recognised_by_their_metadata_not_their_name(tiny_model_dir, tmp_path):
    from ace_interp.evaluation.protocol import default_cases, is_toy_name, multi_hop_asker, style_for
    from ace_interp.model.loading import ASSETS

    for toy in ("toy-gptj", ASSETS / "toy-qwen3"):
        assert is_toy_name(toy) and style_for(toy).name == "toy-world" and multi_hop_asker(str(toy)) is None
        assert default_cases(str(toy)) == ASSETS / "world" / "mquake_cases.json"
    named_like_a_toy = tmp_path / "toy-gpt2"
    named_like_a_toy.symlink_to(tiny_model_dir("gpt2"), target_is_directory=True)
    for real in (tiny_model_dir("gpt2"), named_like_a_toy):
        assert not is_toy_name(real) and style_for(real).name == "few-shot" and multi_hop_asker(real) is not None
        assert default_cases(real).name == "smollm2_known.json"


def test_a_loaded_model_is_asked_in_its_own_style(tiny_model_dir):
    from ace_interp.evaluation.protocol import model_style
    from ace_interp.model import load_model

    assert model_style(load_model("toy-gptj", device="cpu")).name == "toy-world"
    assert model_style(load_model(tiny_model_dir("gpt2"), device="cpu")).name == "few-shot"


@pytest.mark.real_model
def test_ace_evaluate_cli_runs_on_a_mquake_file_given_by_path(tmp_path, capsys):
    """`ace evaluate` on the CF-3k-v2-schema fixture with the real default model, one one-edit case, and a
    hyper-parameter override: the per-case CSV it writes has the case under both methods."""
    from ace_interp.cli import main

    rc = main(["evaluate", "--model", "smollm2-135m", "--cases", str(FIXTURE), "--method", "base", "pmet", "--edits", "1",
               "--per-edits", "1", "--n-specificity", "1", "--pmet", "target.v_num_grad_steps=5", "--out", str(tmp_path),
               "--device", "cpu", "--all-cases", "--no-perplexity"])
    assert rc == 0
    assert "written:" in capsys.readouterr().out
    per_case = pd.read_csv(tmp_path / "smollm2-135m_per_case.csv")
    one_edit = {c.case_id for c in load_mquake(FIXTURE) if c.n_edits == 1}
    assert len(per_case) == 2 and set(per_case.method) == {"base", "pmet"}
    assert per_case.case_id.nunique() == 1 and per_case.case_id.iloc[0] in one_edit
    assert 0 <= per_case[per_case.method == "pmet"].efficacy.iloc[0] <= 1
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["hparams"]["pmet"]["target"]["v_num_grad_steps"] == 5 and run["preset"] == "tuned" and run["overrides"]["pmet"]
    assert run["case_file"] == repo_relative(FIXTURE) and len(run["case_file_sha256"]) == 64


def test_evaluate_cli_preset_reaches_every_method_and_run_json(tmp_path, capsys):
    """`ace evaluate --preset reference` edits with the reference preset, applies `--memit` overrides on top, and
    records the preset with the hyper-parameters in run.json."""
    import json

    from ace_interp.cli import main

    rc = main(["evaluate", "--model", "toy-gptj", "--method", "memit", "--edits", "1", "--per-edits", "1",
               "--n-specificity", "1", "--preset", "reference", "--memit", "target.v_num_grad_steps=3",
               "--out", str(tmp_path), "--device", "cpu"])
    assert rc == 0
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["preset"] == "reference"
    assert run["hparams"]["memit"]["target"]["v_num_grad_steps"] == 3
    assert run["hparams"]["memit"]["target"]["stop_on"] == "loss"
    assert len(pd.read_csv(tmp_path / "toy-gptj_per_case.csv")) == 1


def _raw_style(**kw):
    return PromptStyle("raw", multi_hop=lambda case, cot: list(case.questions),
                       single_hop=lambda q, answers, relation: q, max_new_tokens=1, **kw)


def test_answered_gives_the_verdict_of_asking_every_paraphrase_alone(tiny_model):
    """Fast path (paraphrases asked in turn, of all cases at once, only while unanswered) against the slow one:
    every paraphrase of every case generated on its own. Case 1's accepted answer is what the model says to its
    *second* paraphrase, so the first misses and the second must still be asked."""
    from ace_interp.evaluation.answers import answer_matches, generate_greedy
    from ace_interp.evaluation.protocol import Asking, answered

    from ace_interp.evaluation.answers import normalize_answer

    first = _tiny_case(1, "tokyo", "japan", "italy", "tokyo", "rome")
    first["questions"] += ["the capital of the country of the city tokyo is", "what is the capital of tokyo 's country"]
    cases = [MQuAKECase.from_dict(first),
             MQuAKECase.from_dict(_tiny_case(2, "berlin", "germany", "spain", "berlin", "madrid"))]
    said = [normalize_answer(generate_greedy(tiny_model, [q], max_new_tokens=1)[0]) for q in cases[0].questions]
    # a later paraphrase's answer that no earlier paraphrase gives: the first one misses, a later one hits
    later = next(a for j, a in enumerate(said) if j > 0 and a and a not in said[:j])
    answers = [[later], ["madrid"]]
    slow = [any(answer_matches(generate_greedy(tiny_model, [q], max_new_tokens=1)[0], a) for q in c.questions)
            for c, a in zip(cases, answers)]
    assert answered(tiny_model, cases, answers, Asking("direct", _raw_style())) == slow
    assert slow[0] is True


def test_direct_and_cot_asked_of_one_edit_match_an_edit_per_setting(tiny_model):
    """Fast path: one edit per case and method serves both settings. Slow path: an `evaluate` per setting, each with
    its own edit. Same answers, same efficacy, same held-out perplexity ratio (the same edited weights)."""
    from ace_interp.evaluation.protocol import Asking

    cases = [MQuAKECase.from_dict(_tiny_case(1, "tokyo", "japan", "italy", "tokyo", "rome")),
             MQuAKECase.from_dict(_tiny_case(2, "berlin", "germany", "spain", "berlin", "madrid"))]
    style = _raw_style(cot_max_new_tokens=3, cot_answer=lambda g: g.split()[-1] if g.split() else "")
    direct, cot = Asking("direct", style), Asking("cot", style, cot=True)
    texts = ["the capital of japan is tokyo", "the capital of germany is berlin"]
    kw = dict(n_specificity=2, known_only=False, progress=False, perplexity_texts=texts)
    both = evaluate(tiny_model, cases, ["rome"], askings=[direct, cot], **kw).per_case
    apart = pd.concat([evaluate(tiny_model, cases, ["rome"], askings=[a], **kw).per_case for a in (direct, cot)])
    cols = ["case_id", "prompting", "multi_hop", "efficacy", "efficacy_prob", "paraphrase", "specificity", "ppl_ratio"]
    key = ["prompting", "case_id"]
    pd.testing.assert_frame_equal(both[cols].sort_values(key).reset_index(drop=True),
                                  apart[cols].sort_values(key).reset_index(drop=True))
    assert (both.ppl_ratio != 1.0).all()  # the edit moved the held-out text's perplexity: the column can tell


def test_only_cases_the_unedited_model_answers_are_edited(tiny_model, monkeypatch):
    """With `known_only` (default) a case is edited only for the settings the unedited model answers it under; the
    base rows still cover every case."""
    import ace_interp.evaluation.protocol as protocol
    from ace_interp.evaluation.answers import generate_greedy
    from ace_interp.evaluation.protocol import Asking

    case = _tiny_case(1, "tokyo", "japan", "italy", "tokyo", "rome")
    said = generate_greedy(tiny_model, [case["questions"][0]], max_new_tokens=1)[0].strip()
    case["answer"] = said  # the unedited model "knows" case 1
    # case 2's answer: a capital the unedited model says to none of its questions (a random tiny model may repeat the
    # question's last word), so that it is the unknown case
    other = _tiny_case(2, "berlin", "germany", "spain", "berlin", "madrid")
    said_other = {g.strip() for g in generate_greedy(tiny_model, other["questions"], max_new_tokens=1)}
    other["answer"] = next(w for w in ("berlin", "paris", "rome", "london", "madrid") if w not in said_other | {said})
    cases = [MQuAKECase.from_dict(case), MQuAKECase.from_dict(other)]
    edited = []
    real_edit = protocol.edit
    monkeypatch.setattr(protocol, "edit", lambda b, requests, *a, **k: edited.append(requests[0].case_id) or real_edit(b, requests, *a, **k))
    rows = evaluate(tiny_model, cases, [None, "ft"], askings=[Asking("direct", _raw_style())], n_specificity=0,
                    progress=False).per_case
    assert edited == [1]
    assert rows[rows.method == "base"].multi_hop.tolist() == [1.0, 0.0]
    assert rows[rows.method == "ft"].case_id.tolist() == [1]


def test_questions_asked_in_one_batch_get_the_verdicts_of_asking_them_group_by_group(tiny_model):
    """`ask_together` (every question in one decoding batch, each with its own budget and reader) against `_check`
    per group: accepted answers set to what the slow path generates, so every verdict is True only if the one-batch
    generations are the same; and False for answers nobody generates."""
    from ace_interp.evaluation.answers import generate_greedy
    from ace_interp.evaluation.protocol import Question, ask_together

    last_word = lambda g: g.split()[-1] if g.split() else ""  # noqa: E731
    style = _raw_style(cot_max_new_tokens=5, cot_answer=last_word)
    prompts = ["the capital of japan is", "q : what is the capital of the country of tokyo", "berlin", "spain"]
    cot = [False, True, False, True]
    slow = [generate_greedy(tiny_model, [p], style.cot_max_new_tokens if c else style.max_new_tokens,
                            stop_at_newline=not c or style.cot_stop_at_newline)[0] for p, c in zip(prompts, cot)]
    questions = [Question(p, [last_word(g) if c else g], style, c) for p, g, c in zip(prompts, slow, cot)]
    want = [q.verdict(g) for q, g in zip(questions, slow)]  # False only where the answer normalises to nothing (":")
    assert sum(want) >= 3, slow
    assert ask_together(tiny_model, questions) == want
    assert ask_together(tiny_model, [Question(p, ["no-such-answer"], style, c) for p, c in zip(prompts, cot)]) == [False] * 4
    assert ask_together(tiny_model, []) == []


def test_one_decoding_batch_per_case_matches_asking_group_by_group(tiny_model):
    """`evaluate(one_batch=True)` (the default) against `one_batch=False` (paraphrase by paraphrase, metric by metric):
    the same per-case rows."""
    from ace_interp.evaluation.protocol import Asking

    cases = [MQuAKECase.from_dict(_tiny_case(1, "tokyo", "japan", "italy", "tokyo", "rome")),
             MQuAKECase.from_dict(_tiny_case(2, "berlin", "germany", "spain", "berlin", "madrid"))]
    style = _raw_style(cot_max_new_tokens=3, cot_answer=lambda g: g.split()[-1] if g.split() else "")
    kw = dict(askings=[Asking("direct", style), Asking("cot", style, cot=True)], n_specificity=2, known_only=False,
              progress=False)
    fast = evaluate(tiny_model, cases, ["rome", "ft"], **kw).per_case
    slow = evaluate(tiny_model, cases, ["rome", "ft"], one_batch=False, **kw).per_case
    cols = ["method", "case_id", "prompting", "multi_hop", "efficacy", "efficacy_prob", "paraphrase", "specificity",
            "n_specificity"]
    pd.testing.assert_frame_equal(fast[cols], slow[cols])
    assert fast.efficacy.max() > 0  # some edit took: the verdicts are not all one value


def test_case_questions_groups_each_askings_paraphrases_and_the_edit_questions():
    """`case_questions`: one group per asking (its multi-hop paraphrases, new answers when edited, original ones
    otherwise), then the edit metrics' groups only for an edited case."""
    from ace_interp.evaluation.protocol import Asking, case_questions, edit_questions

    case = load_mquake(FIXTURE)[0]
    style = _raw_style()
    askings = [Asking("direct", style), Asking("cot", style, True)]
    edited = case_questions(case, askings)
    assert list(edited) == ["direct", "cot", "efficacy", "paraphrase", "specificity"]
    for a in askings:
        assert [q.prompt for q in edited[a.label]] == style.multi_hop(case, a.cot)
        assert all(q.answers == case.new_answers and q.cot == a.cot for q in edited[a.label])
    assert {k: [q.prompt for q in v] for k, v in edited.items() if k in ("efficacy", "paraphrase")} == \
        {k: [q.prompt for q in v] for k, v in edit_questions(case, style).items() if k in ("efficacy", "paraphrase")}
    unedited = case_questions(case, askings, edited=False)
    assert list(unedited) == ["direct", "cot"]
    assert all(q.answers == case.answers for qs in unedited.values() for q in qs)
