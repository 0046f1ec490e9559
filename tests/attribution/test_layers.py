"""Layer ranking: shapes, the documented aggregation, batching invariance, bad input."""

import pandas as pd
import pytest

from ace_interp.attribution import LayerRanking, query_scores, rank_layers, value_scores

PROMPTS = [
    "the capital of france is",
    "the capital of italy is",
    "the language of spain is",
    "the city of tokyo is in",
]
TARGETS = ["paris", "rome", "spanish", "japan"]
RELATIONS = ["capital", "capital", "language", "location"]


@pytest.fixture
def ranking(tiny_model) -> LayerRanking:
    return rank_layers(tiny_model, PROMPTS, TARGETS, RELATIONS, top_k_layers=2, n_value_neurons=10, n_query_neurons=10)


def test_ranking_shape(tiny_model, ranking):
    assert list(ranking.table.columns) == ["prompt", "relation", "kind", "layer", "neuron", "score", "rank"]
    assert set(ranking.table.relation) == set(RELATIONS)
    assert len(ranking.value_layers) <= 2 and len(ranking.query_layers) <= 2
    assert all(isinstance(l, int) for l in ranking.value_layers + ranking.query_layers)
    assert tiny_model.cfg.n_layers - 1 not in ranking.query_layers  # the last layer has nothing to query
    assert sorted(ranking.relations) == sorted(set(RELATIONS))
    scores = ranking.layer_scores
    assert set(scores.relation) == set(RELATIONS) | {"all"}
    best = scores[(scores.relation == "all") & (scores.kind == "value")].sort_values("score", ascending=False)
    assert ranking.value_layers == [l for l, s in zip(best.layer, best.score) if s > 0][:2]
    assert ranking.layers("value", "capital", k=3) == ranking.layers("value", "capital", k=3)[:3]
    with pytest.raises(KeyError, match="no layer scores"):
        ranking.layers("value", "nope")
    with pytest.raises(ValueError, match="kind"):
        ranking.layers("key")


def test_value_layer_scores_follow_the_formula(tiny_model, ranking):
    """value_score(R, l) = mean over R's prompts of the summed scores of each prompt's top-N neurons in l,
    recomputed here from the full (unpruned) value sweep."""
    vs = value_scores(tiny_model, PROMPTS, TARGETS)
    frames = [vs.top(10, b).assign(relation=RELATIONS[b]) for b in range(len(PROMPTS))]
    table = pd.concat(frames)
    for relation in ["all", "capital"]:
        sub = table if relation == "all" else table[table.relation == relation]
        n = len(PROMPTS) if relation == "all" else RELATIONS.count(relation)
        want = sub.groupby("layer").score.sum() / n
        got = ranking.layer_scores
        got = got[(got.relation == relation) & (got.kind == "value")].set_index("layer").score
        for l in range(tiny_model.cfg.n_layers):
            assert got[l] == pytest.approx(float(want.get(l, 0.0)), abs=1e-6)


def test_query_rows_come_from_query_scores(tiny_model, ranking):
    q = query_scores(tiny_model, PROMPTS[:1], TARGETS[:1], n_value_neurons=10)
    want = q.top(10, 0)
    want = want[want.score > 0]
    got = ranking.table[(ranking.table.prompt == 0) & (ranking.table.kind == "query")]
    assert list(zip(got.layer, got.neuron)) == list(zip(want.layer, want.neuron))
    assert got.score.to_numpy() == pytest.approx(want.score.to_numpy(), rel=1e-5)


def test_batching_does_not_change_the_ranking(tiny_model, ranking):
    one_by_one = rank_layers(
        tiny_model, PROMPTS, TARGETS, RELATIONS, top_k_layers=2, n_value_neurons=10, n_query_neurons=10, batch_size=1
    )
    pd.testing.assert_frame_equal(one_by_one.table, ranking.table, atol=1e-5)
    assert one_by_one.value_layers == ranking.value_layers and one_by_one.query_layers == ranking.query_layers


def test_bad_input(tiny_model):
    with pytest.raises(ValueError, match="relations"):
        rank_layers(tiny_model, PROMPTS, TARGETS, RELATIONS[:2])
    with pytest.raises(ValueError, match="targets"):
        rank_layers(tiny_model, PROMPTS, TARGETS[:3])
    with pytest.raises(ValueError, match="tokenises to nothing"):
        rank_layers(tiny_model, PROMPTS, ["paris", "", "a", "b"])
