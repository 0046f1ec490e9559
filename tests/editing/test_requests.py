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


# Issue 26: requests that were accepted (or failed with a raw error) and are now refused with a named reason.
@pytest.mark.parametrize(
    "bad, message",
    [
        (EditRequest("the capital of {}", "zanzibar", "tokyo"), r"subject 'zanzibar' has words outside the model's vocabulary \['zanzibar'\]"),
        (EditRequest("the capital of {}", "france", "tokyo zanzibar"), r"target_new 'tokyo zanzibar' has words outside .*\['zanzibar'\]"),
        (EditRequest("the capital of {}", "france", None), "target_new must be a string, got None"),
        (EditRequest("the capital of France", "france", "tokyo"), r"spells the subject 'france' as 'France' \(different case\)"),
        (EditRequest("the capital of {}", "france", "japanese"), r"conflicts with edit request 0 .* different targets"),
    ],
    ids=["unknown-word subject", "partly unknown target", "target None", "case mismatch", "conflicting duplicate"],
)
def test_more_requests_refused_with_their_reason(tiny_model_dir, bad, message):
    from ace_interp.model import load_model

    bridge = load_model(tiny_model_dir("gpt2"), device="cpu")
    with pytest.raises(EditRequestError, match=message) as err:
        validate_requests(bridge, [FRANCE, bad])
    assert "edit request 1" in str(err.value)


def test_identical_duplicates_are_accepted(tiny_model_dir):
    from ace_interp.model import load_model

    bridge = load_model(tiny_model_dir("gpt2"), device="cpu")
    assert validate_requests(bridge, [FRANCE, FRANCE]) == [FRANCE, FRANCE]


def test_rewrite_with_target_new_none_is_refused():
    with pytest.raises(EditRequestError, match="target_new None"):
        EditRequest.from_rewrite({"prompt": "{} is in", "subject": "france", "target_new": None})


@pytest.mark.parametrize("method", ["memit", "pmet"])
@pytest.mark.parametrize("layers, message", [((), "layers is empty"), ((-1,), r"layers = \(-1,\), .*negative indices"),
                                             ((99,), r"layers = \(99,\), but the model has 3 layers")])
def test_bad_layer_lists_are_refused_before_anything_runs(tiny_model, fast_hparams, method, layers, message):
    import dataclasses

    bridge = tiny_model
    before = {k: v.detach().clone() for k, v in hf_parameters(bridge).items()}
    hp = dataclasses.replace(fast_hparams(method, bridge), layers=layers)
    with pytest.raises(ValueError, match=message):
        edit(bridge, FRANCE, method=method, hparams=hp)
    assert all(torch.equal(before[k], v) for k, v in hf_parameters(bridge).items())
