"""Every write is verified before it is kept (issue 26): a target that was never reached is reported per
request (warn / raise / keep), a λ = NaN solve is refused, and an update whose weights are finite but whose
logits are not is undone bit-exactly by every closed-form method."""

import dataclasses
import warnings

import pytest
import torch

import ace_interp.editing as editing
from ace_interp.editing import EditVerificationError, EditWarning, MethodResult, edit, edit_sequentially
from ace_interp.editing.solver import SolverError
from ace_interp.editing.verify import check_requests, target_scores
from ace_interp.model import apply_weight_updates, ffn_weight, hf_parameters, load_model

from edit_cases import FRANCE, SPAIN


def _snapshot(bridge):
    return {k: v.detach().clone() for k, v in hf_parameters(bridge).items()}


def _same(bridge, snapshot):
    now = hf_parameters(bridge)
    return all(torch.equal(snapshot[k], now[k]) for k in snapshot)


def _never_converges(fast_hparams, method, bridge):
    """Hyper-parameters whose target optimisation takes no step: δ = 0, so p(new) stays where it was."""
    hp = fast_hparams(method, bridge)
    return dataclasses.replace(hp, target=dataclasses.replace(hp.target, v_num_grad_steps=0))


def test_target_scores_match_a_slow_token_by_token_reference(tiny_model):
    bridge = tiny_model
    prompts, targets = [FRANCE.text, SPAIN.text, "the"], ["tokyo", "japanese", "paris of spain"]
    scores = target_scores(bridge, prompts, targets, batch_size=2)
    for i, (prompt, target) in enumerate(zip(prompts, targets)):
        tokens = bridge.to_tokens(prompt)[0].tolist()
        ids = bridge.tokenizer(" " + target, add_special_tokens=False)["input_ids"]
        log_prob, greedy = 0.0, True
        for t in ids:
            with torch.no_grad():
                logits = bridge(torch.tensor([tokens]))[0, -1].to(torch.float64)
            log_prob += float(logits.log_softmax(-1)[t])
            greedy &= int(logits.argmax()) == t
            tokens.append(t)
        assert scores.log_prob[i].item() == pytest.approx(log_prob, rel=1e-4, abs=1e-4)
        assert bool(scores.greedy[i]) == greedy and bool(scores.finite[i])


@pytest.mark.parametrize("method", ["rome", "ace"])
def test_unreached_target_warns_naming_the_request(tiny_model, fast_hparams, method):
    bridge = tiny_model
    with pytest.warns(EditWarning, match=r"1 of 1 targets not reached.*'the capital of france' -> 'tokyo'"):
        applied = edit(bridge, FRANCE, method=method, hparams=_never_converges(fast_hparams, method, bridge))
    assert not applied.verification.success
    check = applied.verification.checks[0]
    assert check.request == FRANCE and not check.success and check.p_new < 0.5
    applied.undo()


def test_unreached_target_raises_and_leaves_the_model_bit_identical(tiny_model, fast_hparams):
    bridge = tiny_model
    snapshot = _snapshot(bridge)
    with pytest.raises(EditVerificationError, match="not reached.*the write was undone"):
        edit(bridge, FRANCE, method="rome", hparams=_never_converges(fast_hparams, "rome", bridge), on_failure="raise")
    assert _same(bridge, snapshot)


def test_keep_records_the_miss_without_a_warning(tiny_model, fast_hparams):
    bridge = tiny_model
    with warnings.catch_warnings():
        warnings.simplefilter("error", EditWarning)
        applied = edit(bridge, FRANCE, method="rome", hparams=_never_converges(fast_hparams, "rome", bridge),
                       on_failure="keep")
    assert [c.success for c in applied.verification.checks] == [False]
    applied.undo()


def test_successful_batch_reports_each_request(tiny_model, fast_hparams):
    bridge = tiny_model
    with warnings.catch_warnings():
        warnings.simplefilter("error", EditWarning)
        applied = edit(bridge, [FRANCE, SPAIN], method="memit", hparams=fast_hparams("memit", bridge))
    assert [c.request for c in applied.verification.checks] == [FRANCE, SPAIN]
    assert all(c.success and c.greedy and c.p_new > c.p_true for c in applied.verification.checks)
    applied.undo()


def test_prob_criterion_compares_new_with_true(tiny_model):
    verification = check_requests(tiny_model, [FRANCE], criterion="prob")
    scores = target_scores(tiny_model, [FRANCE.text, FRANCE.text], ["tokyo", "paris"])
    assert verification.checks[0].success == bool(scores.log_prob[0] > scores.log_prob[1])


def test_memit_with_nan_lambda_is_refused(tiny_model, fast_hparams):
    bridge = tiny_model
    snapshot = _snapshot(bridge)
    hp = fast_hparams("memit", bridge)
    hp = dataclasses.replace(hp, covariance=dataclasses.replace(hp.covariance, cov_weight=float("nan")))
    with pytest.raises(SolverError, match="cov_weight"):
        edit(bridge, FRANCE, method="memit", hparams=hp)
    assert _same(bridge, snapshot)


@pytest.mark.parametrize("method", ["rome", "memit", "pmet"])
def test_huge_finite_update_that_breaks_the_logits_is_undone(tiny_model_dir, fast_hparams, monkeypatch, method):
    bridge = load_model(tiny_model_dir("gptj"), device="cpu")  # LayerNorm: the overflow reaches the logits as NaN
    snapshot = _snapshot(bridge)
    w = ffn_weight(bridge, 1, "W_out")
    huge = torch.full_like(w, 3e38) - w  # the written weight is 3e38: finite, but k·W overflows to inf/NaN
    with apply_weight_updates(bridge, {(1, "W_out"): huge}):  # the weight layer itself accepts it
        with torch.no_grad():
            assert not torch.isfinite(bridge(bridge.to_tokens(FRANCE.text))).all()

    def huge_update(*args, **kwargs):
        return MethodResult({(1, "W_out"): huge})

    monkeypatch.setattr(editing, f"{method}_updates", huge_update)
    with pytest.raises(EditVerificationError, match="non-finite"):
        edit(bridge, FRANCE, method=method, hparams=fast_hparams(method, bridge), on_failure="keep")
    assert _same(bridge, snapshot)


def test_bad_policy_is_refused_before_anything_runs(tiny_model, fast_hparams):
    with pytest.raises(ValueError, match="on_failure"):
        edit(tiny_model, FRANCE, method="rome", hparams=fast_hparams("rome", tiny_model), on_failure="ignore")
    with pytest.raises(ValueError, match="verify"):
        edit(tiny_model, FRANCE, method="rome", hparams=fast_hparams("rome", tiny_model), verify="exact")


def test_sequence_with_raise_undoes_the_earlier_edits(tiny_model, fast_hparams):
    bridge = tiny_model
    snapshot = _snapshot(bridge)
    good, bad = fast_hparams("rome", bridge), _never_converges(fast_hparams, "rome", bridge)
    first = edit(bridge, SPAIN, method="rome", hparams=good, on_failure="raise")
    with pytest.raises(EditVerificationError):
        edit_sequentially(bridge, [FRANCE], method="rome", hparams=bad, on_failure="raise")
    first.undo()
    assert _same(bridge, snapshot)


def test_a_failure_after_the_write_takes_the_write_back(tiny_model, fast_hparams, monkeypatch):
    bridge = tiny_model
    snapshot = _snapshot(bridge)

    def broken_check(*args, **kwargs):
        raise RuntimeError("scoring failed")

    monkeypatch.setattr(editing, "check_requests", broken_check)
    with pytest.raises(RuntimeError, match="scoring failed"):
        edit(bridge, FRANCE, method="rome", hparams=fast_hparams("rome", bridge))
    assert _same(bridge, snapshot)
