"""Bridge lag: curves against full value scores, the lag arithmetic and the distribution summary."""

import pandas as pd
import pytest
import torch

from ace_interp.analysis.bridge_lag import lag_summary, token_lag
from ace_interp.attribution import target_token_ids, value_scores

PROMPTS = ["the capital of france is", "the language of spain is", "the city of paris is in"]
BRIDGES = ["france", "spain", "germany"]
ANSWERS = ["paris", "spanish", "europe"]


def slow_curve(bridge, prompt: str, target: str, n: int) -> torch.Tensor:
    """Positive value-score mass per layer of the top-n neurons, from every neuron's score."""
    scores = value_scores(bridge, prompt, target).scores[0]  # [n_layers, d_mlp]
    flat = scores.reshape(-1)
    top = flat.topk(n).indices
    mass = torch.zeros(scores.shape[0], dtype=torch.float64)
    for i in top.tolist():
        mass[i // scores.shape[1]] += max(float(flat[i]), 0.0)
    return mass


def test_curves_and_lags_equal_slow_reference(tiny_model):
    lag = token_lag(tiny_model, PROMPTS, BRIDGES, ANSWERS, n_value_neurons=12, batch_size=2)
    n_layers = tiny_model.cfg.n_layers
    assert len(lag.lags) == 3 and len(lag.curves) == 3 * 2 * n_layers
    for case, (p, b, a) in enumerate(zip(PROMPTS, BRIDGES, ANSWERS)):
        row = lag.lags[lag.lags.case == case].iloc[0]
        for token, target in (("bridge", b), ("answer", a)):
            expected = slow_curve(tiny_model, p, target, 12)
            got = lag.curves[(lag.curves.case == case) & (lag.curves.token == token)].sort_values("layer")
            torch.testing.assert_close(torch.tensor(got.mass.to_numpy()), expected, atol=1e-5, rtol=1e-4)
            assert row[f"{token}_peak"] == int(expected.argmax())
            centre = float((expected / expected.sum() * torch.arange(n_layers)).sum())
            assert row[f"{token}_centre"] == pytest.approx(centre, rel=1e-4, abs=1e-5)  # as the masses
        assert row.peak_lag == row.answer_peak - row.bridge_peak
        assert row.centre_lag == pytest.approx(row.answer_centre - row.bridge_centre)
        answer_id = int(target_token_ids(tiny_model, a)[0])
        top_id = int(tiny_model(tiny_model.to_tokens(p))[0, -1].argmax())
        assert row.answer_is_top == (top_id == answer_id)


def test_cases_with_one_token_for_bridge_and_answer_are_dropped(tiny_model):
    lag = token_lag(tiny_model, PROMPTS[:2], ["paris", "spain"], ["paris", "spanish"], n_value_neurons=5)
    assert lag.lags.case.tolist() == [1]
    with pytest.raises(ValueError, match="prompts"):
        token_lag(tiny_model, PROMPTS, BRIDGES[:2], ANSWERS)


def test_lag_summary_counts_interval_and_sign_test():
    lags = pd.DataFrame({"peak_lag": [2, 1, 1, 0, -1, 3, 2, 1], "centre_lag": [0.5] * 8})
    s = lag_summary(lags, "peak_lag")
    assert (s["n"], s["n_positive"], s["n_zero"], s["n_negative"]) == (8, 6, 1, 1)
    assert s["mean"] == pytest.approx(9 / 8) and s["median"] == 1.0
    assert s["ci_low"] < s["mean"] < s["ci_high"] and s["ci_low"] > -1 and s["ci_high"] < 3
    assert s["sign_test_p"] == pytest.approx(2 * (1 + 7) / 2**7)  # 6 against 1: twice P(X <= 1), X ~ Bin(7, 1/2)
    constant = lag_summary(lags, "centre_lag")
    assert constant["ci_low"] == constant["ci_high"] == 0.5 and constant["sign_test_p"] == pytest.approx(2 / 2**8)
    assert lag_summary(lags, "peak_lag", seed=0) == s  # seeded: the same interval every run
    with pytest.raises(ValueError, match="which"):
        lag_summary(lags, "lag")
