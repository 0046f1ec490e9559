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
