"""Edit requests: conversion, validation, and a bad request in a batch writing nothing."""

import pytest
import torch

from ace_interp.editing import EditRequest, EditRequestError, as_requests, edit, validate_requests
from ace_interp.model import hf_parameters

from edit_cases import FRANCE


def test_from_mquake_rewrite():
    rewrite = {
        "prompt": "The capital of {} is",
        "subject": "France",
        "target_new": {"str": "Rome", "id": "Q220"},
        "target_true": {"str": "Paris", "id": "Q90"},
    }
    r = EditRequest.from_rewrite(rewrite)
    assert (r.prompt, r.subject, r.target_new, r.target_true) == ("The capital of {} is", "France", "Rome", "Paris")
    assert r.text == "The capital of France is"
    assert EditRequest.from_rewrite(r.to_rewrite()) == r
    spelled = EditRequest.from_rewrite({"prompt": "France is in", "subject": "France", "target_new": "Asia"})
    assert spelled.prompt == "{} is in"
    assert as_requests([rewrite, r]) == [r, r]


@pytest.mark.parametrize(
    "bad, message",
    [
        (EditRequest("the capital of germany", "france", "tokyo"), "subject slot"),
        (EditRequest("the capital of {}", "france", ""), "target_new is empty"),
        (EditRequest("the capital of {}", "france", "   "), "target_new is empty"),
        (EditRequest("the capital of {}", "france", "zanzibar"), "outside the model's vocabulary"),
        (EditRequest("the capital of {}", "", "tokyo"), "subject is empty"),
        (EditRequest("the capital of {} and {}", "france", "tokyo"), "exactly once"),
    ],
)
def test_validation_names_the_request(tiny_model_dir, bad, message):
    from ace_interp.model import load_model

    bridge = load_model(tiny_model_dir("gpt2"), device="cpu")
    with pytest.raises(EditRequestError, match=message) as err:
        validate_requests(bridge, [FRANCE, bad])
    assert "edit request 1" in str(err.value)


@pytest.mark.parametrize("method", ["rome", "pmet"])
def test_bad_request_in_batch_writes_nothing(tiny_model, method):
    bridge = tiny_model
    before = {k: v.detach().clone() for k, v in hf_parameters(bridge).items()}
    with pytest.raises(EditRequestError, match="edit request 1"):
        edit(bridge, [FRANCE, EditRequest("the capital of {}", "spain", "")], method=method)
    with pytest.raises(EditRequestError, match="subject slot"):
        edit(bridge, [FRANCE, {"prompt": "the capital of germany", "subject": "spain", "target_new": "rome"}], method=method)
    after = hf_parameters(bridge)
    assert all(torch.equal(before[k], after[k]) for k in before)
