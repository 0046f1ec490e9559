"""The batched protocol: MQuAKE-Remastered contamination masking on a hand-made three-case fixture, and a batched
run on a tiny model that writes each group exactly its unmasked edits and restores the weights."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from ace_interp.data.mquake import MQuAKECase, Target, load_mquake
from ace_interp.evaluation.batched import (
    BatchEdit,
    batch_edits,
    contaminating_edits,
    evaluate_batched,
    conflicting_edits,
    make_batches,
    masked_groups,
    unedited_cases,
    written_requests,
)
from ace_interp.evaluation.protocol import Asking, PromptStyle
from ace_interp.model import hf_parameters

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "mquake_contamination.json"


def _fixture():
    """A: Eiffel Tower -> France -> Paris, edit: the tower is in Sweden (new answer Stockholm).
    B: Louvre -> France -> Paris, edit: France's capital is Lyon (touches A's *original* path France -P36-> Paris).
    C: Vasa Museum -> Sweden -> Stockholm, edit: Sweden's capital is Gothenburg (touches A's *edited* path)."""
    a, b, c = load_mquake(FIXTURE)
    return a, b, c


def test_an_edit_touching_a_cases_edited_path_is_masked_for_it():
    a, b, c = _fixture()
    edits = batch_edits([a, b, c])
    assert [e.case_id for e in edits] == [1, 2, 3]
    # all three edited: A's path is Eiffel -> Sweden -> Stockholm; C's edit (Sweden, capital, Gothenburg) changes it
    assert contaminating_edits(a, edits, edited=True) == [2]
    assert contaminating_edits(b, edits, edited=True) == []  # B's path Louvre -> France -> Lyon: nobody else touches it
    assert contaminating_edits(c, edits, edited=True) == []  # C's own edit agrees with its edited path


def test_whether_a_case_is_edited_decides_which_path_is_protected():
    a, b, c = _fixture()
    edits = batch_edits([b, c])  # A unedited: its label is its original answer, Paris
    assert contaminating_edits(a, edits, edited=False) == [0]  # B's France -> Lyon would break "Paris"
    # C is unedited in a batch of A alone: A's edit (Eiffel Tower, country, Sweden) leaves Vasa -> Sweden -> Stockholm
    assert contaminating_edits(c, batch_edits([a]), edited=False) == []
    # an edit that agrees with the path (same subject, relation *and* object) is no contamination
    agreeing = BatchEdit(9, ("Q34", "P36", "Q1754"), c.requested_rewrite[0])
    assert contaminating_edits(a, [agreeing], edited=True) == []


def test_groups_share_a_write_unless_their_masks_differ():
    a, b, c = _fixture()
    edits = batch_edits([a, b, c])
    groups = masked_groups([(a, True), (b, True), (c, True)], edits)
    assert {k: [case.case_id for case, _ in v] for k, v in groups.items()} == {frozenset(): [2, 3], frozenset({2}): [1]}
    # A's group gets A's and B's edits, not C's
    assert [r.subject for r in written_requests(edits, frozenset({2}))] == ["Eiffel Tower", "France"]
    # the same request asked by two cases is written once
    assert len(written_requests(batch_edits([b, b]), frozenset())) == 1


def test_batches_are_seeded_and_cover_every_case_once():
    cases = list(_fixture())
    batches = make_batches(cases, 2, seed=1)
    assert [len(b) for b in batches] == [2, 1]
    assert sorted(c.case_id for b in batches for c in b) == [1, 2, 3]
    assert [[c.case_id for c in b] for b in batches] == [[c.case_id for c in b] for b in make_batches(cases, 2, seed=1)]
    assert len(make_batches(cases, None, seed=1)) == 1
    with pytest.raises(ValueError, match="unknown packing 'tight'"):
        make_batches(cases, 2, seed=1, packing="tight")


def test_batches_keep_cases_that_rewrite_one_fact_two_ways_apart():
    from test_protocol import _tiny_case

    # cases 1 and 4 give Tokyo two different countries; 2 and 3 touch other facts, 5 agrees with case 1
    cases = [MQuAKECase.from_dict(_tiny_case(i, s, "x", new, "c", "d"))
             for i, s, new in [(1, "tokyo", "italy"), (2, "berlin", "spain"), (3, "paris", "peru"),
                               (4, "tokyo", "spain"), (5, "tokyo", "italy")]]
    for seed in range(6):
        batches = make_batches(cases, 2, seed)
        assert sorted(c.case_id for b in batches for c in b) == [1, 2, 3, 4, 5]
        assert all(len(b) <= 2 for b in batches)
        for b in batches:
            assert {1, 4} - {c.case_id for c in b} and {5, 4} - {c.case_id for c in b}, [c.case_id for c in b]
    # without a conflict the packing is the plain cut of the shuffled cases
    plain = [c for c in cases if c.case_id != 4]
    for seed in range(6):
        assert make_batches(plain, 2, seed) == make_batches(plain, 2, seed, "plain")
    # the plain cut keeps the contradiction in a batch when the shuffle puts them together
    assert any({1, 4} <= {c.case_id for c in b} for seed in range(50) for b in make_batches(cases, 2, seed, "plain"))
    # one batch of all keeps the contradiction; the masking handles it
    assert len(make_batches(cases, None, seed=0)) == 1


def test_packed_batches_hold_no_case_whose_edit_contaminates_another_edited_case():
    """C's edit (Sweden's capital) contaminates A's edited path (Eiffel Tower -> Sweden -> Stockholm): packing keeps
    them apart, whatever the shuffle, so no edited case of a batch masks an edit and each batch is one write. B's
    edit (France's capital) touches only A's original path, which an edited A does not ask: A and B may share."""
    a, b, c = _fixture()
    together = set()
    for seed in range(20):
        batches = make_batches([a, b, c], 3, seed, "contamination")
        assert sorted(x.case_id for batch in batches for x in batch) == [1, 2, 3]
        for batch in batches:
            ids = {x.case_id for x in batch}
            assert not {1, 3} <= ids
            together |= {frozenset(ids)} if len(ids) > 1 else set()
            assert list(masked_groups([(x, True) for x in batch], batch_edits(batch))) == [frozenset()]
    assert frozenset({1, 2}) in together and frozenset({2, 3}) in together
    # keeping only contradictions apart puts A and C together, and then C's edit is masked for A
    assert any(len(make_batches([a, b, c], 3, seed, "contradictions")[0]) == 3 for seed in range(3))


def test_a_fact_rewritten_two_ways_in_two_wordings_is_a_conflict():
    a, b, c = _fixture()
    sweden = batch_edits([a])[0]  # (Eiffel Tower, P17, Sweden), "The {} is located in the country of"
    reworded = replace(sweden.rewrite, prompt="{} stands in the country of", target_new=Target("United States", "Q30"))
    usa = BatchEdit(7, (*sweden.triple[:2], "Q30"), reworded)
    assert conflicting_edits([sweden, usa], set()) == {0, 1}
    assert conflicting_edits([sweden, usa], {1}) == set()
    assert conflicting_edits(batch_edits([a, b, c]), set()) == set()


def test_unedited_cases_are_those_whose_original_path_the_batch_leaves_alone():
    a, b, c = _fixture()
    # B rewrites France's capital: A (Eiffel Tower -> France -> Paris) would be mislabelled, C is untouched
    assert [x.case_id for x in unedited_cases([b], [a, b, c], 5, "0-0")] == [3]
    assert sorted(x.case_id for x in unedited_cases([c], [a, b, c], 5, "0-0")) == [1, 2]
    assert len(unedited_cases([c], [a, b, c], 1, "0-0")) == 1


def test_batched_run_writes_each_group_its_unmasked_edits_and_restores(tiny_model, monkeypatch):
    """Cases 1 and 4 ask contradictory edits of Tokyo's country: each masks the other's. Case 2's path touches
    neither, but no write holds both, so both are masked for it too. Edited and unedited cases get rows of their
    own; the weights come back bit for bit."""
    import ace_interp.evaluation.batched as batched
    from test_protocol import _tiny_case

    cases = [MQuAKECase.from_dict(_tiny_case(1, "tokyo", "japan", "italy", "tokyo", "rome")),
             MQuAKECase.from_dict(_tiny_case(2, "berlin", "germany", "spain", "berlin", "madrid")),
             MQuAKECase.from_dict(_tiny_case(4, "tokyo", "japan", "spain", "tokyo", "madrid"))]
    written = []
    real_edit = batched.edit
    monkeypatch.setattr(batched, "edit", lambda bridge, requests, *a, **k:
                        written.append(sorted((r.subject, r.target_new) for r in requests)) or real_edit(bridge, requests, *a, **k))
    style = PromptStyle("raw", multi_hop=lambda case, cot: list(case.questions), single_hop=lambda q, answers, relation: q,
                        max_new_tokens=1)
    before = {k: v.clone() for k, v in hf_parameters(tiny_model).items()}
    result = evaluate_batched(tiny_model, cases, ["ft"], [Asking("direct", style)], batch_size=None, n_specificity=0,
                              known_only=False, progress=False)
    assert sorted(written) == sorted([
        [("berlin", "spain")],                                          # case 2: the contradiction masked
        [("berlin", "spain"), ("tokyo", "italy")],                      # case 1: case 4's edit masked
        [("berlin", "spain"), ("tokyo", "spain")],                      # case 4: case 1's edit masked
    ])
    df = result.per_case.set_index("case_id")
    assert df.loc[[1, 4], "n_masked"].tolist() == [1, 1] and df.loc[2, "n_masked"] == 2
    assert df.edited.all() and (df.efficacy.between(0, 1)).all()
    for k, v in hf_parameters(tiny_model).items():
        assert torch.equal(v, before[k]), f"{k} not restored"
    # with a batch of one, the other cases are asked unedited, against their original answers
    result = evaluate_batched(tiny_model, cases, ["ft"], [Asking("direct", style)], batch_size=1, n_specificity=0,
                              known_only=False, progress=False)
    df = result.per_case
    assert len(df[df.edited]) == 3 and len(df[~df.edited]) == 3 and df[~df.edited].efficacy.isna().all()
