"""Resumable evaluation: saved items, shards, and a table assembled from them equal to one run without them."""

import json

import numpy as np
import pandas as pd
import pytest

from ace_interp.evaluation.checkpoint import Checkpoint, Shard, key_text, run_items, saved_items


def test_saved_items_are_read_back_by_a_new_store_and_other_settings_are_refused(tmp_path):
    store = Checkpoint(tmp_path, {"seed": 0, "rows": {"rome": {"layer": 3}}}, part="shard-0-of-2")
    store.add(("rome", 7), [{"case_id": 7, "multi_hop": np.float64(1.0), "known": np.bool_(True)}], seconds=1.5)
    store.add(("rome", "x"), [], seconds=0.25)
    store.close()
    again = Checkpoint(tmp_path, {"rows": {"rome": {"layer": 3}}, "seed": 0})  # key order does not matter
    assert again.done(("rome", 7)) == [{"case_id": 7, "multi_hop": 1.0, "known": True}]
    assert again.done(("rome", "x")) == [] and again.done(("rome", 8)) is None
    assert again.seconds == pytest.approx(1.75) and len(again) == 2
    assert again.seconds_of(("rome", 7)) == 1.5 and again.seconds_of(("rome", 8)) == 0.0
    assert [s["items"] for s in again.segments] == [2]
    with pytest.raises(ValueError, match="other settings"):
        Checkpoint(tmp_path, {"seed": 1, "rows": {"rome": {"layer": 3}}})


def test_a_line_cut_short_by_a_stop_is_ignored(tmp_path):
    store = Checkpoint(tmp_path, {"seed": 0})
    store.add(("ft", 1), [{"case_id": 1}], seconds=1.0)
    store.close()
    (path,) = tmp_path.glob("*.jsonl")
    path.write_text(path.read_text() + json.dumps({"key": "x"})[:6])
    assert Checkpoint(tmp_path, {"seed": 0}).done(("ft", 1)) == [{"case_id": 1}]
    fingerprint, items = saved_items(tmp_path)  # the look at a run in progress reads the files the same way
    assert fingerprint == {"seed": 0} and [i["key"] for i in items] == [key_text(("ft", 1))]


def test_shards_split_the_items_and_an_assembling_run_computes_only_what_is_missing(tmp_path):
    items = [((i,), i) for i in range(7)]
    calls = []

    def work(i):
        calls.append(i)
        return [{"item": i}]

    for index in (0, 1):
        store = Checkpoint(tmp_path, {"n": 7}, part=f"shard-{index}-of-3")
        run_items(items, work, store, Shard(index, 3))
        store.close()
    assert calls == [0, 3, 6, 1, 4]
    calls.clear()
    rows = run_items(items, work, Checkpoint(tmp_path, {"n": 7}))
    assert calls == [2, 5] and rows == [{"item": i} for i in range(7)]


@pytest.mark.parametrize("text", ["2/2", "1", "a/b", "-1/2"])
def test_a_bad_shard_is_refused_with_its_form(text):
    with pytest.raises(ValueError, match="shard"):
        Shard.parse(text)


@pytest.mark.parametrize("tiny_model", ["gptj"], indirect=True)
def test_a_per_case_table_assembled_from_shards_equals_one_run(tiny_model, tmp_path, monkeypatch):
    """Two shards, then an assembling run that must not edit at all: the same rows as one run without a checkpoint
    (edit_seconds aside), in the same order."""
    import ace_interp.evaluation.protocol as protocol
    from ace_interp.data.mquake import MQuAKECase
    from ace_interp.evaluation.protocol import Asking, PromptStyle, evaluate

    from test_protocol import _tiny_case

    cases = [MQuAKECase.from_dict(_tiny_case(i, s, "japan", "italy", "tokyo", "rome"))
             for i, s in enumerate(["tokyo", "paris", "berlin"])]
    style = PromptStyle("raw", multi_hop=lambda case, cot: list(case.questions),
                        single_hop=lambda q, answers, relation: q, max_new_tokens=1)
    kwargs = dict(askings=[Asking("direct", style)], n_specificity=0, known_only=False, progress=False)
    plain = evaluate(tiny_model, cases, [None, "ft", "rome"], **kwargs).per_case
    for index in (0, 1):
        store = Checkpoint(tmp_path, {"table": 1}, part=f"shard-{index}-of-2")
        evaluate(tiny_model, cases, [None, "ft", "rome"], checkpoint=store, shard=Shard(index, 2), **kwargs)
        store.close()

    def no_edits(*args, **kw):
        raise AssertionError("the assembling run edited a case the shards had finished")

    monkeypatch.setattr(protocol, "evaluate_case", no_edits)
    # shard 0 asked the unedited model and saved its answers: shard 1 and the assembling run read them
    monkeypatch.setattr(protocol, "unedited_answers", no_edits)
    assembled = evaluate(tiny_model, cases, [None, "ft", "rome"], checkpoint=Checkpoint(tmp_path, {"table": 1}),
                         **kwargs).per_case
    assert len(plain) == 3 + 6
    pd.testing.assert_frame_equal(assembled.drop(columns="edit_seconds"), plain.drop(columns="edit_seconds"),
                                  check_dtype=False)


@pytest.mark.parametrize("tiny_model", ["qwen3"], indirect=True)
def test_a_batched_table_assembled_from_shards_equals_one_run(tiny_model, tmp_path, monkeypatch):
    """The batched protocol's (row, batch) items: two shards, then an assembling run that writes nothing."""
    import ace_interp.evaluation.batched as batched
    import ace_interp.evaluation.protocol as protocol
    from ace_interp.data.mquake import MQuAKECase
    from ace_interp.evaluation.batched import evaluate_batched
    from ace_interp.evaluation.protocol import Asking, PromptStyle

    from test_protocol import _tiny_case

    cases = [MQuAKECase.from_dict(_tiny_case(i, s, "japan", "italy", "tokyo", "rome"))
             for i, s in enumerate(["tokyo", "paris", "berlin", "madrid"])]
    style = PromptStyle("raw", multi_hop=lambda case, cot: list(case.questions),
                        single_hop=lambda q, answers, relation: q, max_new_tokens=1)
    kwargs = dict(askings=[Asking("direct", style)], batch_size=2, n_specificity=0, known_only=False, progress=False)
    plain = evaluate_batched(tiny_model, cases, ["ft"], **kwargs).per_case
    for index in (0, 1):
        store = Checkpoint(tmp_path, {"table": 2}, part=f"shard-{index}-of-2")
        evaluate_batched(tiny_model, cases, ["ft"], checkpoint=store, shard=Shard(index, 2), **kwargs)
        store.close()

    def no_writes(*args, **kw):
        raise AssertionError("the assembling run wrote a batch the shards had finished")

    monkeypatch.setattr(batched, "_evaluate_group", no_writes)
    monkeypatch.setattr(protocol, "unedited_answers", no_writes)  # read from the checkpoint, as the batches are
    assembled = evaluate_batched(tiny_model, cases, ["ft"], checkpoint=Checkpoint(tmp_path, {"table": 2}),
                                 **kwargs).per_case
    assert sorted(set(plain.batch)) == [0, 1]
    pd.testing.assert_frame_equal(assembled.drop(columns="edit_seconds"), plain.drop(columns="edit_seconds"),
                                  check_dtype=False)


def test_unedited_answers_saved_and_read_back_keep_case_ids_and_facts(tmp_path):
    from ace_interp.data.mquake import MQuAKECase
    from ace_interp.evaluation.protocol import UNEDITED_KEY, UneditedAnswers

    from test_protocol import _tiny_case

    cases = [MQuAKECase.from_dict(_tiny_case(i, s, "japan", "italy", "tokyo", "rome")) for i, s in [(3, "a"), (10, "b")]]
    facts = {3: [{"cloze": "The capital of x is", "answers": ["y"], "subject": "x", "known": True}], 10: []}
    answers = UneditedAnswers({"direct": {3: True, 10: False}, "cot": {3: False, 10: True}}, facts, 12.5)
    store = Checkpoint(tmp_path, {"t": 1})
    store.add(UNEDITED_KEY, [answers.to_json()], 1.0)
    store.close()
    back = UneditedAnswers.from_json(Checkpoint(tmp_path, {"t": 1}).done(UNEDITED_KEY)[0], cases)
    assert back == answers and list(back.known["direct"]) == [3, 10]
    with pytest.raises(ValueError, match="other cases"):
        UneditedAnswers.from_json(answers.to_json(), cases[:1])
