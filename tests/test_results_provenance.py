"""Every results folder says how it was made (run.json) or is archived with a note; the index's intervals are Wilson's."""
import json
from pathlib import Path

import pandas as pd
import pytest

from ace_interp.evaluation.stats import wilson_interval
from experiments.results_index import (HEADLINE_RUNS, ace_against_pmet, headline_table, method_rows, rate_cell,
                                      unpadded_markdown)

RESULTS = Path(__file__).resolve().parents[1] / "results"


def test_every_results_folder_has_a_run_json_or_an_archive_note():
    folders = [p for p in RESULTS.iterdir() if p.is_dir() and p.name != "archive"]
    assert folders, "results/ has no run folders"
    missing = [p.name for p in folders if not (p / "run.json").is_file()]
    assert not missing, f"results folders without run.json: {missing}"
    for folder in folders:
        record = json.loads((folder / "run.json").read_text())
        assert record.get("command"), folder.name
        if record.get("reconstructed"):
            assert record.get("source"), f"{folder.name}: a reconstructed run.json must name its source"
    archive = RESULTS / "archive"
    if archive.is_dir():
        note = (archive / "README.md").read_text()
        unnoted = [p.name for p in archive.iterdir() if p.is_dir() and f"`{p.name}/`" not in note]
        assert not unnoted, f"archived folders without a note in results/archive/README.md: {unnoted}"


def test_no_loose_files_at_the_top_of_results():
    loose = [p.name for p in RESULTS.iterdir() if p.is_file() and p.name != "README.md"]
    assert not loose, f"files outside any run folder: {loose}"


def test_rate_cell_is_the_wilson_interval():
    low, high = wilson_interval(7, 20)
    assert rate_cell(7, 20) == f"35.0% [{100 * low:.1f}, {100 * high:.1f}] n=20"
    assert rate_cell(0, 0) == "–"


def test_the_index_table_is_not_padded_to_its_longest_cell():
    frame = pd.DataFrame({"folder": ["`a`", "`b`"], "command": ["x " * 200, "y | z"]})
    lines = unpadded_markdown(frame).splitlines()
    assert lines[:2] == ["| folder | command |", "|---|---|"]
    assert lines[3] == "| `b` | y \\| z |"  # a pipe in a cell is escaped, and the short row stays short
    assert len(lines) == 4


def test_method_rows_count_edits_and_specificity_facts():
    frame = pd.DataFrame({
        "model": ["m"] * 3, "method": ["pmet"] * 3, "multi_hop": [1.0, 0.0, 0.0],
        "efficacy": [1.0, 0.5, 1.0], "n_edits": [1, 2, 1],           # 1 + 1 + 1 = 3 of 4 edits
        "specificity": [1.0, 0.8, 0.0], "n_specificity": [5, 5, 0],  # 5 + 4 of 10 facts
    })
    row = method_rows(frame).iloc[0]
    assert row["multi-hop"] == rate_cell(1, 3)
    assert row["efficacy"] == rate_cell(3, 4)
    assert row["specificity"] == rate_cell(9, 10)


def test_ace_against_pmet_pairs_the_same_case_draws():
    rows = [(case, seed, method, outcome) for case, seed, method, outcome in [
        (1, 0, "ace", 1), (1, 0, "pmet", 0), (2, 0, "ace", 1), (2, 0, "pmet", 1),
        (1, 1, "ace", 0), (1, 1, "pmet", 0), (3, 1, "ace", 1)]]  # case 3 has no pmet row: not paired
    frame = pd.DataFrame(rows, columns=["case_id", "seed", "method", "multi_hop"]).assign(model="m")
    (line,) = ace_against_pmet(frame)
    assert "n=3" in line and "only ace 1, only pmet 0" in line and "+33.3 points" in line


def test_the_headline_lists_every_model_in_one_method_order(tmp_path):
    """A run whose command named its rows in another order (ft pmet ace rome) reads in the table's order, and the
    models by name, whichever the combined table lists first."""
    (tmp_path / HEADLINE_RUNS[0]).mkdir()
    rows = [("b", m, 1, 1.0) for m in ("base", "ft", "pmet", "ace", "rome")] + [("a", m, 1, 0.0) for m in ("ace", "base")]
    pd.DataFrame(rows, columns=["model", "method", "case_id", "multi_hop"]).to_csv(
        tmp_path / HEADLINE_RUNS[0] / "main_table_per_case.csv", index=False)
    table = [line.split("|")[1:3] for line in headline_table(tmp_path).splitlines() if line.startswith("| ")][1:]
    assert [(m.strip(), r.strip()) for m, r in table] == [("a", "base"), ("a", "ace"), ("b", "base"), ("b", "ft"),
                                                          ("b", "rome"), ("b", "pmet"), ("b", "ace")]


@pytest.mark.parametrize("run", HEADLINE_RUNS)
def test_headline_runs_have_per_case_rows(run):
    assert (RESULTS / run / "main_table_per_case.csv").is_file()


def _tables(text: str):
    """The markdown tables of `text` (inside code fences too): lists of rows, each a list of stripped cells."""
    table: list[list[str]] = []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            table.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif table:
            yield table
            table = []


def batch_efficacy_without_specificity(text: str) -> list[str]:
    """Headers of tables with an efficacy column for a batch (k > 1 in a `k` column or `eff k=N` header) and
    no specificity column."""
    bad = []
    for header, *rows in _tables(text):
        names = [h.lower() for h in header]
        efficacy = [h for h in names if h in ("top1", "p>p") or h.startswith(("eff", "greedy")) or "efficacy" in h]
        if not efficacy or any(h.startswith("spec") or "specificity" in h for h in names):
            continue
        k_col = names.index("k") if "k" in names else None
        ks = [int(r[k_col]) for r in rows if k_col is not None and len(r) > k_col and r[k_col].isdigit()]
        ks += [int(h.rsplit("=", 1)[1]) for h in efficacy if "k=" in h and h.rsplit("=", 1)[1].isdigit()]
        if any(k > 1 for k in ks):
            bad.append(" | ".join(header))
    return bad


def test_the_checker_finds_a_batch_efficacy_without_specificity():
    assert batch_efficacy_without_specificity("| method | k | top1 |\n|---|--:|--:|\n| memit | 10 | 1.00 |\n")
    assert not batch_efficacy_without_specificity("| method | k | top1 | spec |\n|---|--:|--:|--:|\n| memit | 10 | 1.00 | 0.1 |\n")
    assert not batch_efficacy_without_specificity("| method | k | top1 |\n|---|--:|--:|\n| memit | 1 | 1.00 |\n")
    assert batch_efficacy_without_specificity("| model | eff k=10 |\n|---|--:|\n| toy | 1.00 |\n")


def test_benchmark_results_report_specificity_next_to_every_batch_efficacy():
    text = (RESULTS.parent / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8")
    assert batch_efficacy_without_specificity(text) == []
