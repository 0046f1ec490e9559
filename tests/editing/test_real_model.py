"""Counterfactual edits of SmolLM2-135M: the new object overtakes the true one; undo is bit-exact.

Slow: the first run samples the covariance text from the model and collects key statistics (minutes on
a 2-core CPU, then cached); each edit takes 8–20 s on one CPU core."""

import pytest
import torch

from ace_interp.editing import EditRequest, edit
from ace_interp.editing.requests import target_token_ids
from ace_interp.model import hf_parameters

pytestmark = [pytest.mark.slow, pytest.mark.real_model]

CASES = [
    EditRequest("The capital of {} is", "France", "Rome", "Paris"),
    EditRequest("{} is located in the city of", "The Eiffel Tower", "London", "Paris"),
]


def _mean_log_prob(bridge, request, target):
    ids = bridge.to_tokens(request.text)[0].tolist()
    tid = target_token_ids(bridge, target)
    with torch.no_grad():
        lp = bridge(torch.tensor([ids + tid[:-1]], device=bridge.cfg.device))[0].log_softmax(-1)
    return sum(lp[len(ids) - 1 + j, t].item() for j, t in enumerate(tid)) / len(tid)


@pytest.mark.parametrize("method", ["rome", "memit", "pmet", "ace"])
def test_counterfactual_edits_take_effect(smollm2, method):
    before = {k: v.detach().clone() for k, v in hf_parameters(smollm2).items()}
    for request in CASES:
        assert _mean_log_prob(smollm2, request, request.target_true) > _mean_log_prob(smollm2, request, request.target_new)
        with edit(smollm2, request, method=method):
            assert _mean_log_prob(smollm2, request, request.target_new) > _mean_log_prob(smollm2, request, request.target_true)
    after = hf_parameters(smollm2)
    assert all(torch.equal(before[k], after[k]) for k in before)


def _smollm2_case(case_id: int):
    """A case of the filtered SmolLM2 real-fact file, by id."""
    from ace_interp.data.mquake import load_mquake
    from ace_interp.model.loading import ASSETS

    return next(c for c in load_mquake(ASSETS / "real_facts" / "smollm2_known.json") if c.case_id == case_id)


def test_ace_chained_edits_do_not_derail(smollm2):
    """MQuAKE case 611 of the SmolLM2 cases chains "The Great Gatsby → Alexandre Dumas" with an edit whose
    subject is Alexandre Dumas. With the release's one z, ACE's query write (layers 3–9) made the first
    answer " Alexandre Dumasen"; with the value target optimised after it every rewrite of the case is
    answered greedily (docs/ace.md, "Chained edits")."""
    from dataclasses import replace

    from ace_interp.editing import default_hparams
    from ace_interp.evaluation.protocol import case_requests, edit_efficacy, style_for

    case = _smollm2_case(611)
    assert case.n_edits >= 2 and case.requested_rewrite[1].subject == case.requested_rewrite[0].target_new.text
    hp = default_hparams("ace", smollm2)
    assert hp.value_target_after_query
    greedy = {}
    for after in (False, True):  # the release's shared z, in its order and with the value target after
        with edit(smollm2, case_requests(case), "ace", replace(hp, variant="ace-paper", value_target_after_query=after)):
            greedy[after], _ = edit_efficacy(smollm2, case.requested_rewrite, style_for("smollm2-135m"))
    assert not all(greedy[False]), greedy  # the derailment this option is for
    assert all(greedy[True]), greedy


@pytest.mark.xfail(strict=True, reason="known: the default (own query target first) derails case 611 again, "
                   "' Alexandre Dumaschkulkar' (docs/ace.md, \"ACE's query group first, on SmolLM2\")")
def test_ace_default_chained_edits_do_not_derail(smollm2):
    """The same case with ACE's default. Its value target early-stops on top of the query write (the NLL is
    already below 0.05), so no KL term repairs what the query write did after "Dumas"."""
    from ace_interp.editing import default_hparams
    from ace_interp.evaluation.protocol import case_requests, edit_efficacy, style_for

    case = _smollm2_case(611)
    with edit(smollm2, case_requests(case), "ace", default_hparams("ace", smollm2)):
        greedy, by_probability = edit_efficacy(smollm2, case.requested_rewrite, style_for("smollm2-135m"))
    assert all(by_probability), by_probability  # the edits are stored; only the greedy continuation derails
    assert all(greedy), greedy
