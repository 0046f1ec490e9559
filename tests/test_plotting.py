"""Figures build from analysis tables and save as non-empty HTML (and PNG where kaleido finds Chrome)."""

import shutil

import pandas as pd

from ace_interp import plotting


def test_figures_build_and_save(tmp_path):
    heat = pd.DataFrame({"relation": ["P36", "P36", "P30", "P30"], "layer": [0, 1, 0, 1], "score": [0.1, 0.9, 0.5, 0.2]})
    curves = pd.DataFrame({"layer": [0, 1, 2, 3], "query": [0.1, 0.8, 0.3, 0.1], "value": [0.0, 0.1, 0.2, 0.9]})
    bars = pd.DataFrame({"group": ["P36", "P36"], "condition": ["top 1%", "random 1%"], "drop": [0.8, 0.05], "drop_std": [0.0, 0.02]})
    knock = pd.DataFrame({"layer": [2, 3], "before": [10, 12], "after": [2, 3]})
    figs = {
        "heat": plotting.layer_heatmap(heat),
        "curves": plotting.query_value_curves(curves),
        "lags": plotting.lag_histogram([1, 2, 1, 1]),
        "bars": plotting.ablation_bars(bars),
        "knock": plotting.knockout_counts(knock),
    }
    lag_note = [a.text for a in figs["curves"].layout.annotations]
    assert lag_note == ["lag = 2 layers"]  # value peak (3) − query peak (1)
    for name, fig in figs.items():
        paths = plotting.save_figure(fig, tmp_path, name, png=name == "heat")
        assert all(p.stat().st_size > 1000 for p in paths)
    if shutil.which("chromium") or shutil.which("google-chrome"):
        assert (tmp_path / "heat.png").exists()
