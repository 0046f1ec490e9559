"""The main job runs end to end (small budget) and writes its outputs."""

import pytest

from ace_interp.cli import main


@pytest.mark.real_model
def test_demo_runs_and_writes_outputs(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--quick", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "neurons per layer 1536" in printed and "lag" in printed and "undone exactly: True" in printed
    assert "Outputs written to" in printed
    table = tmp_path / "results.csv"
    assert table.exists() and table.stat().st_size > 0
    import pandas as pd

    results = pd.read_csv(table)
    assert list(results.stage) == ["before", "after pmet", "after ace"]
    assert results.undo_exact.iloc[1:].all()
    for figure in ("pathway_curves", "edit_probabilities"):
        assert (tmp_path / f"{figure}.html").stat().st_size > 10_000
