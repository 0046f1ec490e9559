"""The main job runs end to end (small budget) and writes its outputs."""

import pytest

from ace_interp.cli import main


@pytest.mark.real_model
def test_demo_runs_and_writes_outputs(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--quick", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "neurons per layer 1536" in printed
    assert "Outputs written to" in printed
    table = tmp_path / "model_summary.csv"
    assert table.exists() and table.stat().st_size > 0
