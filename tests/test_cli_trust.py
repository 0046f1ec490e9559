"""`ace edit` / `ace evaluate` show a collapse (issue 26): a forced collapse prints the side-effect and
verification warnings; invalid cases are skipped and reported instead of aborting the run."""

import json

import pytest
import torch

import ace_interp.editing as editing
from ace_interp.cli import main
from ace_interp.editing import MethodResult
from ace_interp.model import ffn_weight
from ace_interp.model.loading import ASSETS


@pytest.fixture
def collapsing_memit(monkeypatch):
    """MEMIT replaced by a finite write that scrambles layer 2 of the model: answers collapse."""

    def collapse(bridge, requests, hp, contexts):
        w = ffn_weight(bridge, 2, "W_out")
        noise = torch.randn(w.shape, generator=torch.Generator().manual_seed(0)) * float(w.std()) * 100
        return MethodResult({(2, "W_out"): noise.to(w.dtype)})

    monkeypatch.setattr(editing, "memit_updates", collapse)


def test_ace_edit_prints_collapse_warnings(collapsing_memit, capsys):
    rc = main(["edit", "--model", "toy-gptj", "--prompt", "paris 's nation is", "--subject", "paris",
               "--target-new", "japan", "--method", "memit", "--device", "cpu"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "WARNING: side effects after 1 edit(s): accuracy on" in out
    assert "NOT reached" in out and "WARNING: memit: 1 of 1 targets not reached" in out


def _toy_cases(tmp_path, n=3):
    cases = json.loads((ASSETS / "world" / "mquake_cases.json").read_text())
    cases = [c for c in cases if len(c["requested_rewrite"]) == 1][:n]
    return cases


def test_ace_evaluate_prints_collapse_warnings(collapsing_memit, tmp_path, capsys):
    path = tmp_path / "cases.json"
    path.write_text(json.dumps(_toy_cases(tmp_path, 2)))
    rc = main(["evaluate", "--model", "toy-gptj", "--cases", str(path), "--method", "memit", "--edits", "1",
               "--out", str(tmp_path / "out"), "--device", "cpu"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "WARNING: side effects after 1 edit(s): accuracy on" in out
    assert "untouched_known" in out


def test_ace_evaluate_skips_and_reports_invalid_cases(tmp_path, capsys):
    cases = _toy_cases(tmp_path, 3)
    bad = cases[1]["requested_rewrite"][0]
    bad["target_new"]["str"] = bad["target_true"]["str"]
    path = tmp_path / "cases.json"
    path.write_text(json.dumps(cases))
    rc = main(["evaluate", "--model", "toy-gptj", "--cases", str(path), "--method", "base", "--edits", "1",
               "--out", str(tmp_path / "out"), "--device", "cpu"])
    out = capsys.readouterr().out
    assert rc == 0
    assert f"skipping 1 invalid case(s), ids [{cases[1]['case_id']!r}]" in out and "nothing to edit" in out
    summary = (tmp_path / "out" / "toy-gptj_summary.csv").read_text()
    assert "base" in summary


def test_ace_evaluate_clear_error_for_a_directory(tmp_path, capsys):
    rc = main(["evaluate", "--model", "toy-gptj", "--cases", str(tmp_path), "--method", "base"])
    assert rc == 2
    assert "is a directory" in capsys.readouterr().err
