"""`ace figures` regenerates every figure; run here on a tiny model and a small case subset."""

import json

from ace_interp.cli import main

EXPECTED = [
    "heatmap_value_layers", "heatmap_query_layers", "heatmap_attention", "heatmap_ffn",
    "pathway_curves", "lag_histogram", "ablation_top_vs_random", "query_knockout",
]


def test_figures_command_writes_every_figure(tiny_model_dir, tmp_path):
    model = str(tiny_model_dir("qwen3"))
    cases = "tests/fixtures/mquake_cf3k_small.json"
    assert main(["figures", "--model", model, "--cases", cases, "--out", str(tmp_path), "--quick", "--device", "cpu"]) == 0
    out = tmp_path / "qwen3"
    for name in EXPECTED:
        assert (out / f"{name}.html").stat().st_size > 10_000, name
    for table in ("layer_scores", "component_scores", "pathway_curves", "pathway_lags", "ablation", "query_knockout"):
        assert (out / f"{table}.csv").stat().st_size > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_layers"] == 3 and "mean_peak_lag" in summary
