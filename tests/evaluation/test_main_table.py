"""The main table's ACE layer ablations."""

import pytest

from ace_interp.editing import default_hparams
from ace_interp.evaluation.main_table import ace_ablation_hparams, sample_by_edits
from ace_interp.model import load_model


def test_ace_ablations_drop_the_top_layers_of_each_group(tiny_model_dir):
    bridge = load_model(tiny_model_dir("gptj"), device="cpu")
    full = default_hparams("ace", bridge)
    assert full.query_layers and full.value_layers
    no_q = ace_ablation_hparams(bridge, "q1")
    # the top query layer is the one nearest the value group
    assert no_q.query_layers == full.query_layers[:-1] and no_q.value_layers == full.value_layers
    if len(full.value_layers) == 1:
        with pytest.raises(ValueError, match="no value layer"):
            ace_ablation_hparams(bridge, "v1")
    else:
        assert ace_ablation_hparams(bridge, "v1").value_layers == full.value_layers[:-1]


def test_sample_by_edits_balances_the_number_of_edits():
    class Case:
        def __init__(self, i, k):
            self.case_id, self.n_edits = i, k

    cases = [Case(i, 1 + i % 3) for i in range(30)]
    sample = sample_by_edits(cases, per_edits=4, seed=1)
    assert sorted(c.n_edits for c in sample) == [1] * 4 + [2] * 4 + [3] * 4
    assert [c.case_id for c in sample] == [c.case_id for c in sample_by_edits(cases, per_edits=4, seed=1)]


def test_advantage_table_reports_each_seed_and_the_spread():
    import pandas as pd

    from ace_interp.evaluation.main_table import advantage_table

    rows = []
    for seed, (ace, pmet) in enumerate([(0.5, 0.25), (0.75, 0.25), (0.25, 0.25)]):
        for method, acc in (("ace", ace), ("pmet", pmet)):
            for i in range(4):  # 4 cases: the first round(acc·4) succeed
                rows.append({"model": "m", "method": method, "seed": seed, "multi_hop": float(i < acc * 4)})
    table = advantage_table(pd.DataFrame(rows))
    assert "+25.0%, +50.0%, +0.0%" in table  # per seed
    assert "+25.0% ± 25.0%" in table  # mean ± sample s.d.
