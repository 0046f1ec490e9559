"""Index of every results folder, with its headline numbers and 95% intervals, from the folders themselves.

    python -m experiments.results_index   # results/README.md, docs/results.md, README's headline table, figures/editing/

Each folder under `results/` (not `results/archive/`) holds a `run.json` (`ace_interp.provenance`) and a per-case
CSV (`per_case.csv` or `main_table_per_case.csv`; one row per case × method × seed). For every method the index
gives multi-hop accuracy over the direct-prompting rows (all rows for a chain-of-thought-only run) with its Wilson 95% interval and n, and the README's
headline table adds efficacy and specificity (counted over edits and over specificity facts) and ACE against PMET on
the same cases (exact McNemar / sign test, `ace_interp.evaluation.stats.paired_test`).
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pandas as pd

from ace_interp import plotting
from ace_interp.evaluation.stats import paired_test, wilson_interval
from experiments import RESULTS, ROOT

PER_CASE_FILES = ("main_table_per_case.csv", "per_case.csv")
# the README's headline table: the main table over every case (toys: 500 cases each), then, for models it does not
# hold yet, the older SmolLM2 table (2 seeds × 10 cases); a model is taken from the first run that has it
HEADLINE_RUNS = ("main-table", "smollm2-table")
HEADLINE_METHODS = ("base", "ft", "rome", "memit", "pmet", "ace", "ace +implicit")
BEGIN, END = "<!-- headline:begin -->", "<!-- headline:end -->"
INTERVAL = re.compile(r" \[.*?\]")  # the interval part of a cell, dropped in the compact index


def per_case_frame(folder: Path) -> pd.DataFrame | None:
    """The folder's per-case rows (direct prompting only), or None if it has none with a `method` column."""
    for name in PER_CASE_FILES:
        if (folder / name).is_file():
            frame = pd.read_csv(folder / name)
            if "method" not in frame or "multi_hop" not in frame:
                return None
            if "cot" in frame and not frame.cot.astype(bool).all():  # a chain-of-thought-only run keeps its rows
                frame = frame[~frame.cot.astype(bool)]
            if "protocol" in frame and (frame.protocol == "per-case").any():  # the batched protocol has its own table
                frame = frame[frame.protocol == "per-case"]
            return frame
    return None


def rate_cell(successes: float, n: float) -> str:
    """'72.2% [62.2, 80.4] n=90' with the Wilson 95% interval (successes rounded to whole counts)."""
    n = int(round(n))
    if n == 0:
        return "–"
    k = int(round(successes))
    low, high = wilson_interval(k, n)
    return f"{100 * k / n:.1f}% [{100 * low:.1f}, {100 * high:.1f}] n={n}"


def method_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (model, method): multi-hop over rows, efficacy over edits, specificity over facts, each with its interval."""
    keys = [c for c in ("model", "method") if c in frame]
    rows = []
    for key, group in frame.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(keys, key))
        hop = group.multi_hop.dropna()
        row["multi-hop"] = rate_cell((hop > 0).sum(), len(hop))
        edited = group.dropna(subset=["efficacy"]) if "efficacy" in group else group.iloc[:0]
        if len(edited):
            row["efficacy"] = rate_cell((edited.efficacy * edited.n_edits).sum(), edited.n_edits.sum())
            spec = edited.dropna(subset=["specificity"])
            row["specificity"] = rate_cell((spec.specificity * spec.n_specificity).sum(), spec.n_specificity.sum())
        else:
            row["efficacy"] = row["specificity"] = "–"
        rows.append(row)
    return pd.DataFrame(rows)


def ace_against_pmet(frame: pd.DataFrame, ace: str = "ace") -> list[str]:
    """One line per model: ACE − PMET multi-hop on the same cases and seeds, with the exact paired p-value."""
    lines = []
    models = sorted(frame.model.unique()) if "model" in frame else [None]
    for model in models:
        rows = frame if model is None else frame[frame.model == model]
        keys = [c for c in ("case_id", "seed") if c in rows]
        pivot = rows[rows.method.isin([ace, "pmet"])].pivot_table(index=keys, columns="method", values="multi_hop")
        pivot = pivot.dropna()
        if ace not in pivot or "pmet" not in pivot or pivot.empty:
            continue
        test = paired_test((pivot[ace] > 0).astype(int).tolist(), (pivot["pmet"] > 0).astype(int).tolist())
        lines.append(f"{model or 'all'}: `{ace}` − `pmet` multi-hop {100 * test.difference:+.1f} points "
                     f"[{100 * test.difference_low:+.1f}, {100 * test.difference_high:+.1f}] on n={test.n} case draws; only {ace} "
                     f"{test.only_a}, only pmet {test.only_b}, exact p = {test.p_value:.3g}")
    return lines


def headline_frames(results: Path = RESULTS) -> dict[str, pd.DataFrame]:
    """run -> its per-case rows of HEADLINE_METHODS, each model taken from the first of HEADLINE_RUNS that holds it."""
    frames, shown = {}, set()
    for run in HEADLINE_RUNS:
        frame = per_case_frame(results / run)
        if frame is None:
            continue
        frame = frame[frame.method.isin(HEADLINE_METHODS) & ~frame.model.isin(shown)]
        if not frame.empty:
            frames[run] = frame
            shown |= set(frame.model)
    return frames


def headline_table(results: Path = RESULTS) -> str:
    """The README's table: HEADLINE_RUNS' methods with n and 95% intervals, and ACE against PMET."""
    parts = []
    for run, frame in headline_frames(results).items():
        # models by name and one method order for every model, whatever order the run's rows came in (the combined
        # table lists the model run last first)
        order = {m: i for i, m in enumerate(HEADLINE_METHODS)}
        frame = (frame.assign(_order=frame.method.map(order)).sort_values(["model", "_order"], kind="stable")
                 .drop(columns="_order"))
        parts.append(method_rows(frame))
        notes = ace_against_pmet(frame) + ace_against_pmet(frame, "ace +implicit")
        parts[-1].attrs["notes"] = [f"{line} (`results/{run}`)" for line in notes]
    table = pd.concat(parts, ignore_index=True)
    notes = [n for p in parts for n in p.attrs["notes"]]
    return table.to_markdown(index=False) + "\n\n" + "\n".join(f"- {n}" for n in notes)


def rate_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Long table (model, method, measure, rate, low, high, n): multi-hop over rows, efficacy over edits."""
    rows = []
    for (model, method), group in frame.groupby(["model", "method"], sort=False):
        edited = group.dropna(subset=["efficacy"])
        counts = {"multi-hop": ((group.multi_hop > 0).sum(), group.multi_hop.notna().sum()),
                  "efficacy": ((edited.efficacy * edited.n_edits).sum(), edited.n_edits.sum())}
        for measure, (k, n) in counts.items():
            k, n = int(round(k)), int(round(n))
            if n:
                low, high = wilson_interval(k, n)
                rows.append({"model": model, "method": method, "measure": measure, "rate": k / n, "low": low,
                             "high": high, "n": n})
    return pd.DataFrame(rows)


def edit_effect_figure(results: Path = RESULTS):
    """Bars: efficacy and multi-hop accuracy per editor and model (HEADLINE_RUNS), with Wilson 95% intervals."""
    long = rate_frame(pd.concat(headline_frames(results).values()))
    long = long.assign(above=long.high - long.rate, below=long.rate - long.low)
    fig = plotting.px.bar(long, x="method", y="rate", color="measure", barmode="group", facet_col="model",
                          error_y="above", error_y_minus="below", template=plotting.TEMPLATE,
                          title="What an edit does: the edited fact (efficacy) and the questions built on it (multi-hop)",
                          labels={"rate": "share (95% interval)", "method": ""})
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
    return fig, long


def run_summary(folder: Path) -> dict:
    """Folder, command, date, commit, whether reconstructed, and multi-hop per method (compact)."""
    record = json.loads((folder / "run.json").read_text()) if (folder / "run.json").is_file() else {}
    frame = per_case_frame(folder)
    headline = ""
    if frame is not None and len(frame):
        cells = method_rows(frame)
        label = cells.apply(lambda r: " ".join(str(r[c]) for c in ("model", "method") if c in cells), axis=1)
        compact = [INTERVAL.sub("", cell) for cell in cells["multi-hop"]]
        headline = "; ".join(f"{name}: {cell}" for name, cell in zip(label, compact))
    return {"folder": f"`{folder.relative_to(ROOT)}`", "command": f"`{record.get('command', '?')}`",
            "date": (record.get("date") or "?")[:10], "commit": (record.get("commit") or "?")[:7],
            "reconstructed": "yes" if record.get("reconstructed") else "no",
            "multi-hop per method (direct prompting)": headline or "–"}


def unpadded_markdown(frame: pd.DataFrame) -> str:
    """A markdown table without padding: one long command would pad every row of the index to its width."""
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def results_index(results: Path = RESULTS) -> str:
    """Markdown: one row per results folder (archive excluded)."""
    folders = sorted(p for p in results.iterdir() if p.is_dir() and p.name != "archive")
    return unpadded_markdown(pd.DataFrame([run_summary(f) for f in folders]))


def write_all(results: Path = RESULTS, readme: Path = ROOT / "README.md", docs: Path = ROOT / "docs" / "results.md",
              figures: Path = ROOT / "figures" / "editing") -> None:
    command = "python -m experiments.results_index"
    index, headline = results_index(results), headline_table(results)
    fig, long = edit_effect_figure(results)
    figures.mkdir(parents=True, exist_ok=True)
    long.to_csv(figures / "edit_effect.csv", index=False)
    plotting.save_figure(fig, figures, "edit_effect")
    intro = (f"_Generated by `{command}` from each folder's `run.json` and per-case CSV; do not edit by hand._ "
             "Multi-hop: share of questions answered (any of the case's questions, direct prompting), with the "
             "Wilson 95% interval and n = case draws. A reconstructed `run.json` was rebuilt from git history; "
             "folders without a recoverable command are in `results/archive/` (see its README).\n")
    (results / "README.md").write_text(f"# Results\n\n{intro}\n{index}\n")
    docs.write_text(f"# Results index\n\n{intro}\n## Headline table\n\n{headline}\n\n## Every run\n\n{index}\n")
    text = readme.read_text()
    if BEGIN in text and END in text:
        start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
        readme.write_text(text[:start] + "\n" + headline + "\n" + text[end:])


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    write_all()
    print("wrote results/README.md, docs/results.md, README.md's headline table and figures/editing/edit_effect.*")


if __name__ == "__main__":
    main()
