"""The ablation explorer's logic, driven directly (no browser)."""

import pytest

from ace_interp.explorer import AblationExplorer


def test_explorer_selections_and_state_on_tiny_model(tiny_model, tmp_path):
    ex = AblationExplorer(tiny_model, "the capital of france is", n_candidates=20, threshold=0.0)
    base = ex.state()
    assert base.n_ablated == 0
    assert base.target_prob == pytest.approx(base.baseline_prob)
    assert base.target_rank == base.baseline_rank == 1  # default target = the greedy token
    assert (base.activated_value_neurons.before == base.activated_value_neurons.after).all()

    chosen = ex.select_top_value(5)
    assert sum(len(v) for v in chosen.values()) == 5
    top5 = ex.value_ranking.head(5)
    assert {(l, n) for l, ks in chosen.items() for n in ks} == set(zip(top5.layer, top5.neuron))
    after = ex.state()
    assert after.target_prob < base.target_prob  # removing positive value neurons lowers p(target)

    ranks = ex.select_ranks([2])
    assert ranks == {int(top5.layer.iloc[1]): [int(top5.neuron.iloc[1])]}
    with pytest.raises(IndexError, match="beyond"):
        ex.select_ranks([10_000])
    assert sum(map(len, ex.select_random(7, seed=1).values())) == 7
    assert sum(map(len, ex.select_top_query(4).values())) <= 4
    ex.select_ids({0: [1, 2]})
    ex.set_mode("mean")
    assert ex.state(count_value_neurons=False).mode == "mean"
    with pytest.raises(ValueError, match="mode"):
        ex.set_mode("max")

    report = ex.export_html(tmp_path / "sweep.html", sizes=[1, 3], seeds=[0])
    assert report.stat().st_size > 10_000 and "Ablation sweep" in report.read_text()


@pytest.mark.real_model
def test_top_value_neurons_hurt_more_than_random_on_smollm2(smollm2):
    ex = AblationExplorer(smollm2, "The capital of France is", target=" Paris", n_candidates=50)
    assert ex.target.strip() == "Paris"
    ex.select_top_value(20)
    top = ex.state(count_value_neurons=False)
    random_probs = []
    for seed in range(3):
        ex.select_random(20, seed=seed)
        random_probs.append(ex.state(count_value_neurons=False).target_prob)
    baseline = top.baseline_prob
    drop_top = baseline - top.target_prob
    drop_random = baseline - sum(random_probs) / len(random_probs)
    assert drop_top > 0.1 * baseline  # the top-20 value neurons carry a real share of p(Paris)
    assert drop_top > 3 * max(drop_random, 0.0) + 1e-3  # random sets of the same size barely matter
