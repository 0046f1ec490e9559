"""Fact-site calibration (`editing/calibrate.py`) and the `fact_token` it chooses (`keys.subject_prompt_ids`)."""

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch

from ace_interp.editing import EditRequest, calibrate, default_hparams, edit
from ace_interp.editing.calibrate import (
    FactSiteCalibration,
    bleed_ratios,
    counterfactual_trials,
    known_world_facts,
    subject_share,
)
from ace_interp.editing.hparams import ACEHParams, MEMITHParams, ROMEHParams, hparams_from_reference
from ace_interp.editing.presets import with_fact_sites
from ace_interp.editing.keys import build_batch, compute_keys, hf_runner, subject_prompt_ids
from ace_interp.model import load_model
from ace_interp.model.state import model_state

from edit_cases import FRANCE, prediction, target_id

FRESH_QWEN3 = Path(__file__).resolve().parents[2] / "results" / "fresh-toys" / "qwen3-w11" / "model"


def test_last_fact_token_is_the_prompts_last_token(tiny_model):
    ids, at_subject = subject_prompt_ids(tiny_model, "", EditRequest("{} is the capital of", "paris", "x"))
    ids_last, at_last = subject_prompt_ids(tiny_model, "", EditRequest("{} is the capital of", "paris", "x"), "last")
    assert ids == ids_last and at_last == len(ids) - 1 and at_subject < at_last
    with pytest.raises(ValueError, match="unknown fact_token 'first'"):
        subject_prompt_ids(tiny_model, "", FRANCE, "first")


def test_last_token_keys_match_a_plain_forward(tiny_model):
    """compute_keys(fact_token="last") against the down-projection input captured by a full forward of the prompt."""
    request = EditRequest("{} is the capital of", "paris", "x")
    runner = hf_runner(tiny_model)
    tokens = torch.tensor([subject_prompt_ids(tiny_model, "", request)[0]])
    seen = []
    handle = runner.down_proj[1].register_forward_hook(lambda m, args, out: seen.append(args[0].detach()))
    try:
        with torch.no_grad():
            runner.logits(tokens)
    finally:
        handle.remove()
    keys = compute_keys(tiny_model, [request], [1], ("",), fact_token="last")[1]
    torch.testing.assert_close(keys[0], seen[0][0, -1])


def test_rome_at_the_last_token_edits_and_undoes(tiny_model, fast_hparams):
    hp = fast_hparams("rome", tiny_model)
    hp = replace(hp, target=replace(hp.target, fact_token="last"))
    before = [p.detach().clone() for p in tiny_model.original_model.parameters()]
    with edit(tiny_model, FRANCE, method="rome", hparams=hp) as applied:
        assert prediction(tiny_model, FRANCE) == target_id(tiny_model, FRANCE)
        last = compute_keys(tiny_model, [FRANCE], [hp.layer], ("",), fact_token="last")[hp.layer]
        assert applied.info["keys"].shape == last.shape
    assert all(torch.equal(a, b) for a, b in zip(before, tiny_model.original_model.parameters()))


def test_subject_share_and_bleed_by_hand():
    keys = torch.tensor([[1.0, 0.0], [3.0, 0.0]], dtype=torch.float64)
    assert subject_share(keys) == (2.0, 10.0)  # mean (2, 0): 1 + 1 of energy 1 + 9
    torch.manual_seed(0)
    keys = torch.randn(4, 3, dtype=torch.float64)
    a = torch.randn(3, 3, dtype=torch.float64)
    c = a @ a.T + torch.eye(3, dtype=torch.float64)
    ratios = bleed_ratios(keys, torch.linalg.cholesky(c))
    c_inv = torch.linalg.inv(c)
    expected = [float(keys[j] @ c_inv @ keys[i] / (keys[i] @ c_inv @ keys[i])) for i in range(4) for j in range(4) if i != j]
    torch.testing.assert_close(ratios, torch.tensor(expected, dtype=torch.float64))


def test_counterfactual_trials_take_another_answer_of_the_same_template():
    facts = [EditRequest("{} 's nation is", s, a) for s, a in [("paris", "france"), ("rome", "italy"), ("nice", "france")]]
    facts.append(EditRequest("{} 's sport is", "ann", "golf"))  # alone in its template: no trial
    trials = counterfactual_trials(facts, 10)
    assert [t.subject for t in trials] == ["paris", "rome", "nice"]
    answers = {"paris": {"italy"}, "rome": {"france"}, "nice": {"italy"}}
    assert all(t.target_new in answers[t.subject] and t.target_true != t.target_new for t in trials)


def test_with_fact_sites_moves_writes_to_usable_layers():
    sites = FactSiteCalibration("last", (1, 2), pd.DataFrame())
    rome = with_fact_sites(ROMEHParams(layer=0), sites)
    assert (rome.layer, rome.target.fact_token) == (1, "last")
    assert with_fact_sites(MEMITHParams(layers=(0, 1)), sites).layers == (1,)
    assert with_fact_sites(MEMITHParams(layers=(0,)), sites).layers == (1,)
    ace = with_fact_sites(ACEHParams(query_layers=(0,), value_layers=(1,)), sites)
    assert (ace.query_layers, ace.value_layers) == ((), (1,))
    # a query group stays at the subject's token, and only there
    everywhere = (0, 1, 2)
    ace = with_fact_sites(ACEHParams(query_layers=(0,), value_layers=(1,)), FactSiteCalibration("subject_last", everywhere, pd.DataFrame()))
    assert (ace.query_layers, ace.value_layers) == ((0,), (1,))
    ace = with_fact_sites(ACEHParams(query_layers=(0,), value_layers=(1,)), FactSiteCalibration("last", everywhere, pd.DataFrame()))
    assert (ace.query_layers, ace.value_layers) == ((), (1,))


def test_reference_configuration_reads_fact_token_last():
    released = {"layers": [5], "fact_token": "last", "v_num_grad_steps": 20, "v_lr": 0.5, "v_weight_decay": 0.5,
                "clamp_norm_factor": 4, "kl_factor": 0.0625, "mom2_n_samples": 1000, "v_loss_layer": 27}
    assert hparams_from_reference("rome", released, 28).target.fact_token == "last"
    with pytest.raises(ValueError, match="fact_token 'subject_first'"):
        hparams_from_reference("rome", {**released, "fact_token": "subject_first"}, 28)


def test_calibration_keeps_the_shipped_toys_subject_position_and_is_cached(monkeypatch):
    """toy-gptj keeps the subject's token at the layers its tuned preset writes (its measured defaults stand);
    a second load of the model reads the calibration from disk instead of measuring again."""
    bridge = load_model("toy-gptj", device="cpu")
    hp = default_hparams("rome", bridge)
    assert (hp.target.fact_token, hp.layer) == ("subject_last", 1)
    assert default_hparams("memit", bridge).layers == (1,)
    (first,) = model_state(bridge).fact_sites.values()

    def measure_again(*args, **kwargs):
        raise AssertionError("measured again instead of reading the cache")

    monkeypatch.setattr(calibrate, "calibrate_fact_sites", measure_again)
    again = load_model("toy-gptj", device="cpu")
    assert default_hparams("rome", again).layer == 1
    (second,) = model_state(again).fact_sites.values()
    assert second.usable_layers == first.usable_layers
    pd.testing.assert_frame_equal(second.table, first.table, check_exact=False, rtol=1e-12)


@pytest.mark.skipif(not FRESH_QWEN3.exists(), reason="the fresh qwen3 toy of results/fresh-toys is absent")
def test_calibration_sends_a_last_token_model_to_the_last_token():
    """The qwen3 toy of world seed 11 builds facts at the last position: its subject-token keys bleed (> 0.3)
    onto other subjects, so no subject-token site is usable and the calibration chooses "last"."""
    bridge = load_model(str(FRESH_QWEN3), device="cpu")
    hp = default_hparams("rome", bridge)
    (sites,) = model_state(bridge).fact_sites.values()
    subject = sites.table[sites.table["fact_token"] == "subject_last"]
    assert len(subject) == bridge.cfg.n_layers and (subject["bleed"] > 0.3).all()
    assert sites.fact_token == hp.target.fact_token == "last" and hp.layer in sites.usable_layers
    facts = known_world_facts(bridge, n=8)
    batch = build_batch(bridge, facts, ("",), fact_token=hp.target.fact_token)
    assert torch.equal(batch.lookup, batch.lengths - 1)


def test_trial_writes_are_rome_edits_scored_by_hand_and_undone(tiny_model, fast_hparams):
    """`trial_writes` against the slow path: each trial written with `edit(..., "rome")` at the probe's site, its own
    target and its neighbours checked with `check_requests`, undone; and the model is unchanged afterwards."""
    from ace_interp.editing import check_requests, sampled_contexts
    from ace_interp.editing.calibrate import trial_writes

    probe = fast_hparams("rome", tiny_model)
    trials = [FRANCE, EditRequest("the capital of {}", "spain", "paris", "madrid")]
    neighbours = [[EditRequest("the capital of {}", "spain", "madrid")], [FRANCE, EditRequest("the capital of {}", "italy", "rome")]]
    before = [p.detach().clone() for p in tiny_model.original_model.parameters()]
    efficacy, keep = trial_writes(tiny_model, trials, neighbours, probe, sampled_contexts(tiny_model, probe.target))
    assert all(torch.equal(a, b) for a, b in zip(before, tiny_model.original_model.parameters()))
    hits, kept = [], []
    for trial, near in zip(trials, neighbours):
        with edit(tiny_model, [trial], "rome", probe, verify=None):
            hits.append(check_requests(tiny_model, [trial]).checks[0].success)
            kept += [c.success for c in check_requests(tiny_model, near).checks]
    assert efficacy == sum(hits) / 2 and keep == sum(kept) / 3
