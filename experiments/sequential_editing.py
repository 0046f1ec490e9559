"""Sequential and batched editing on the synthetic-world toys: MEMIT, PMET, ACE and AlphaEdit side by side.

    python -m experiments.sequential_editing --model toy-gptj toy-qwen3 --sequential 100 --every 10 \
        --batches 10 100 all --out results/sequential-editing

Requests are the first distinct-subject rewrites of the toy case file (benchmarks.bench_editing.rewrites_for).
Per model and method:

* batches: one edit of k requests (k = 10, 100, "all" = every distinct subject), then undone. Efficacy = greedy
  continuation of each cloze names target_new (`protocol.edit_efficacy`); specificity = the unedited model's
  known facts of the edited relations with other subjects (`sweep_toy_editing.rewrites_with_specificity`),
  still answered; untouched-fact accuracy and perplexity from `editing.SideEffectMonitor` (facts of the world
  the unedited model answered, none mentioning an edited subject; perplexity of 20 corpus sentences).
* a sequence: one request per `edit` call, --sequential calls; every --every edits the same four numbers, efficacy
  over all requests edited so far. AlphaEdit carries its memory of earlier keys along the sequence.

Edits are kept whether or not their target was reached (`on_failure="keep"`): the curves measure what the
methods do. Writes results/<out>/<model>/{batches.csv, sequence.csv, table.md, sequence.html, sequence.png} and
run.json. A time budget per (model, method) sequence (--minutes) stops a sequence early; the CSV says where.
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ace_interp.data.mquake import load_mquake
from ace_interp.editing import (
    AlphaEditMemory,
    EditRequest,
    EditWarning,
    SideEffectMonitor,
    alphaedit_hparams,
    default_hparams,
    edit,
    undo_edits,
)
from ace_interp.evaluation.protocol import edit_efficacy
from ace_interp.evaluation.stats import accuracy_cell
from ace_interp.provenance import write_run_json
from benchmarks.bench_editing import case_file
from experiments.sweep_toy_editing import rewrites_with_specificity, still_answered

log = logging.getLogger(__name__)
METHODS = ("memit", "pmet", "ace", "alphaedit")


def _specificity_facts(spec, rws, upto):
    edited = {rw.subject.lower() for rw in rws[:upto]}
    return [f for s in spec[:upto] for f in s if f["subject"].lower() not in edited]


def method_hparams(bridge, spec: str):
    """"memit" → (memit, None: the defaults); "alphaedit:l2=1" → AlphaEdit with l2 = 1 (numbers parsed as floats)."""
    method, _, rest = spec.partition(":")
    if not rest:
        return method, None
    overrides = {k: float(v) for k, v in (item.split("=") for item in rest.split(","))}
    return method, (alphaedit_hparams(bridge, **overrides) if method == "alphaedit" else default_hparams(method, bridge, **overrides))


def measure(bridge, style, rws, spec, monitor, upto: int) -> dict:
    """Efficacy of the first `upto` rewrites, specificity of their facts, and the monitor's check (as 0/1 lists)."""
    efficacy = edit_efficacy(bridge, rws[:upto], style)[0]
    specific = still_answered(bridge, style, _specificity_facts(spec, rws, upto))
    idx = monitor.untouched()
    reading = monitor.check()
    return {"efficacy": efficacy, "specificity": specific, "untouched_correct": reading.correct,
            "untouched_n": len(idx), "perplexity": reading.perplexity}


def _row(model, method, mode, k, m, seconds) -> dict:
    return {"model": model, "method": method, "mode": mode, "edits": k,
            "efficacy": sum(m["efficacy"]) / len(m["efficacy"]), "efficacy_n": len(m["efficacy"]),
            "efficacy_cell": accuracy_cell(m["efficacy"]),
            "specificity": sum(m["specificity"]) / max(1, len(m["specificity"])), "specificity_n": len(m["specificity"]),
            "specificity_cell": accuracy_cell(m["specificity"]),
            "untouched": m["untouched_correct"] / max(1, m["untouched_n"]), "untouched_n": m["untouched_n"],
            "untouched_cell": accuracy_cell([1] * m["untouched_correct"] + [0] * (m["untouched_n"] - m["untouched_correct"])),
            "perplexity": m["perplexity"], "seconds": seconds}


def run_model(model: str, methods, batches, n_sequential: int, every: int, minutes: float, out: Path) -> None:
    n_all = len({rw.subject for case in load_mquake(case_file(model)) for rw in case.requested_rewrite})
    n_needed = n_all if "all" in batches else max([n_sequential] + [int(b) for b in batches])
    bridge, style, rws_all, spec_all = rewrites_with_specificity(model, min(n_needed, n_all))
    monitor = SideEffectMonitor(bridge, warn=False)
    batch_rows, seq_rows = [], []
    folder = out / model
    folder.mkdir(parents=True, exist_ok=True)
    for spec_name in methods:
        method, hp = method_hparams(bridge, spec_name)
        for b in batches:
            k = len(rws_all) if b == "all" else int(b)
            rws, spec = rws_all[:k], spec_all[:k]
            monitor.edited_subjects = {rw.subject for rw in rws}
            t = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", EditWarning)
                applied = edit(bridge, [EditRequest.from_rewrite(rw.to_dict()) for rw in rws], method, hp, on_failure="keep")
            seconds = time.perf_counter() - t
            m = measure(bridge, style, rws, spec, monitor, k)
            applied.undo()
            batch_rows.append(_row(model, spec_name, "batch", k, m, seconds))
            log.warning("%s", batch_rows[-1])
            pd.DataFrame(batch_rows).to_csv(folder / "batches.csv", index=False)
        monitor.edited_subjects = set()
        memory = AlphaEditMemory() if method == "alphaedit" else None
        applied_seq, start = [], time.perf_counter()
        for i, rw in enumerate(rws_all[:n_sequential], 1):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", EditWarning)
                applied_seq.append(edit(bridge, EditRequest.from_rewrite(rw.to_dict()), method, hp, on_failure="keep",
                                        memory=memory))
            monitor.edited_subjects.add(rw.subject)
            over = time.perf_counter() - start > minutes * 60
            if i % every == 0 or i == n_sequential or over:
                seq_rows.append(_row(model, spec_name, "sequential", i, measure(bridge, style, rws_all, spec_all, monitor, i),
                                     time.perf_counter() - start))
                log.warning("%s", seq_rows[-1])
                pd.DataFrame(seq_rows).to_csv(folder / "sequence.csv", index=False)
            if over:
                log.warning("%s %s: time budget of %.0f min reached after %d edits", model, spec_name, minutes, i)
                break
        undo_edits(applied_seq)
    write_outputs(folder, pd.DataFrame(batch_rows), pd.DataFrame(seq_rows))


def write_outputs(folder: Path, batches: pd.DataFrame, sequence: pd.DataFrame) -> None:
    cols = ["method", "edits", "efficacy_cell", "specificity_cell", "untouched_cell", "perplexity", "seconds"]
    text = ["## Batches (one edit call of k requests)\n", batches[cols].to_markdown(index=False, floatfmt=".3g") if len(batches) else "",
            "\n\n## Sequence (one request per edit call)\n", sequence[cols].to_markdown(index=False, floatfmt=".3g") if len(sequence) else ""]
    (folder / "table.md").write_text("".join(text) + "\n")
    if not len(sequence):
        return
    fig = make_subplots(rows=1, cols=4, subplot_titles=("efficacy (edited so far)", "specificity", "untouched known facts",
                                                        "perplexity (corpus sample)"))
    for method, part in sequence.groupby("method"):
        for col, y in enumerate(("efficacy", "specificity", "untouched", "perplexity"), 1):
            fig.add_trace(go.Scatter(x=part["edits"], y=part[y], name=method, legendgroup=method, showlegend=col == 1),
                          row=1, col=col)
    fig.update_xaxes(title_text="sequential edits")
    fig.update_yaxes(type="log", row=1, col=4)
    fig.update_layout(title=f"Sequential editing, {folder.name}", width=1500, height=420)
    # plotly.js from its CDN: the committed HTML stays ~20 KB instead of 4.8 MB (plotting.save_figure embeds it)
    fig.write_html(folder / "sequence.html", include_plotlyjs="cdn")
    try:
        fig.write_image(folder / "sequence.png", width=1500, height=420)
    except Exception as e:  # kaleido missing or too old for this plotly: the CSV and HTML hold the same curves
        log.warning("PNG export of %s skipped (%s: %s)", folder / "sequence.png", type(e).__name__, str(e)[:120])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", default=["toy-gptj", "toy-qwen3"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--batches", nargs="*", default=["10", "100", "all"])
    parser.add_argument("--sequential", type=int, default=100)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--minutes", type=float, default=15.0, help="time budget per (model, method) sequence")
    parser.add_argument("--out", default="results/sequential-editing")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    out = Path(args.out)
    start = time.perf_counter()
    for model in args.model:
        run_model(model, args.methods, args.batches, args.sequential, args.every, args.minutes, out)
    write_run_json(out, case_file=case_file(args.model[0]), wall_s=time.perf_counter() - start,
                   hparams={"methods": args.methods, "batches": args.batches, "sequential": args.sequential,
                            "every": args.every, "minutes": args.minutes, "models": args.model})


if __name__ == "__main__":
    main()
