"""Pathway curves and lags from hand-made tables, and end to end on tiny models."""

import pandas as pd
import pytest

from ace_interp.analysis.pathways import curves_from_table, pathway_curves


def table(rows):
    return pd.DataFrame(rows, columns=["prompt", "relation", "kind", "layer", "neuron", "score", "rank"])


def test_curves_and_lags_by_hand():
    t = table([
        (0, "r", "query", 1, 0, 3.0, 1), (0, "r", "query", 2, 5, 1.0, 2),
        (0, "r", "value", 4, 1, 2.0, 1), (0, "r", "value", 2, 2, 2.0, 2), (0, "r", "value", 4, 3, 4.0, 3),
        (1, "s", "query", 0, 0, 1.0, 1), (1, "s", "value", 0, 0, 1.0, 1),
    ])
    pc = curves_from_table(t, n_layers=5)
    q0 = pc.curves[(pc.curves.prompt == 0) & (pc.curves.kind == "query")].set_index("layer")
    assert q0.mass.tolist() == [0, 3, 1, 0, 0] and q0.share.tolist() == [0, 0.75, 0.25, 0, 0]
    lag0 = pc.lags.set_index("prompt").loc[0]
    assert (lag0.query_peak, lag0.value_peak, lag0.peak_lag) == (1, 4, 3)
    # centres: query 1·0.75 + 2·0.25 = 1.25; value 2·0.25 + 4·0.75 = 3.5
    assert lag0.centre_lag == pytest.approx(2.25)
    assert pc.lags.set_index("prompt").loc[1].peak_lag == 0
    dist = pc.lag_distribution()
    assert dist.lag.tolist() == [0, 3] and dist["count"].tolist() == [1, 1] and dist.fraction.sum() == 1
    mean = pc.mean_curves("r")
    assert mean.set_index("layer").loc[4, "value"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="which"):
        pc.lag_distribution("median")
    with pytest.raises(ValueError, match="columns"):
        curves_from_table(t.drop(columns="kind"), 5)


def test_prompt_without_query_mass_has_no_lag():
    t = table([(0, "r", "value", 2, 0, 1.0, 1), (0, "r", "query", 1, 0, -1.0, 1)])
    pc = curves_from_table(t, 3)
    assert pc.lags.empty and len(pc.curves) == 6


def test_pathway_curves_end_to_end(tiny_model):
    prompts = ["the capital of france is", "the language of spain is"]
    pc = pathway_curves(tiny_model, prompts, ["paris", "spanish"], ["a", "b"], n_value_neurons=10, n_query_neurons=10)
    L = tiny_model.cfg.n_layers
    assert len(pc.curves) == 2 * 2 * L
    for (_, kind), share in pc.curves.groupby(["prompt", "kind"]).share:
        assert share.sum() == pytest.approx(1.0)
    assert set(pc.lags.columns) >= {"peak_lag", "centre_lag"} and len(pc.lags) == 2
    assert (pc.lags.query_peak < L - 1).all()  # the last layer has no query mass
