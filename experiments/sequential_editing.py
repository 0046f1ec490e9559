"""Sequential and batched editing on the synthetic-world toys: MEMIT, PMET, ACE and AlphaEdit side by side.

    OMP_NUM_THREADS=1 python -m experiments.sequential_editing --model toy-gptj --sequential 1000 --every 50 \
        --batches 10 100 all --out results/sequential-editing/1000-toy-gptj

Requests. The toy case file has 419 distinct-subject rewrites (`benchmarks.bench_editing.rewrites_for`); the world
has 1,152 subjects (1,000 persons, 96 cities, 32 countries, 24 sports). The sequence (`sequence_rewrites`) is those
419 rewrites in case-file order, then one rewrite for each further subject in a seeded shuffle of the world's
persons: its `i`-th fact relation in turn (country / sport / birthplace), true object from world.json, new object a
seeded draw of another entity of the same type, prompt and question the relation's first templates. Every request
of the sequence has its own subject, so no edit re-targets an earlier edit's key. `requests.csv` lists them.

Per model and method:

* batches: one edit of k requests (the first k of the sequence; k = 10, 100, "all" = the 419 case-file rewrites),
  then undone. Efficacy = the greedy continuation of each cloze names target_new (`protocol._check`, as
  `protocol.edit_efficacy`); specificity = up to 5 facts per rewrite of its relation about other subjects
  (`sweep_toy_editing.rewrites_with_specificity`) that the unedited model answers and whose subject is outside
  the batch, still answered; untouched-fact accuracy and perplexity from the default `editing.SideEffectMonitor`
  (its probes that mention no edited subject; 20 corpus sentences).
* a sequence: one request per `edit` call, up to --sequential calls (a --minutes budget may stop it earlier: the
  CSV says where). Checked after 10 and 25 edits, every --every edits and at the end:
  - efficacy on the requests edited so far: all of them up to 250 edits and at the end, else every s-th
    (requests 0, s, 2s, ...; s = ⌈edits / 250⌉), so every method is scored on the same requests at a checkpoint;
  - held-out facts: single-hop facts of the world (`eval_split.json`) about subjects the *whole* planned sequence
    never edits, whose prompt names none of its subjects, that the unedited model answers. Specificity = up to 200
    of them in cloze form ("x 's country is") of relations the sequence edits (seeded sample); untouched = a
    `SideEffectMonitor` over the other held-out facts (its first 200 the model knows, evenly spread) and its
    perplexity. Both sets are fixed for the whole sequence, so their n do not shrink as subjects get edited.
  AlphaEdit carries its memory of earlier keys along the sequence.

Edits are kept whether or not their target was reached (`on_failure="keep"`): the curves measure what the methods
do. Writes <out>/<model>/{batches.csv, sequence.csv, outcomes.csv.gz (per fact, per checkpoint: for paired tests),
paired.csv, requests.csv, table.md, sequence.html, sequence.png} and <out>/run.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
import warnings
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ace_interp.data.mquake import Rewrite, load_mquake
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
from ace_interp.editing.monitor import ProbeSet, default_probes
from ace_interp.editing.verify import target_scores
from ace_interp.evaluation.protocol import _check
from ace_interp.evaluation.stats import accuracy_cell, paired_test
from ace_interp.model import model_state
from ace_interp.plotting import write_png
from ace_interp.provenance import write_run_json
from benchmarks.bench_editing import case_file
from experiments.sweep_toy_editing import rewrites_with_specificity, still_answered

log = logging.getLogger(__name__)
METHODS = ("memit", "pmet", "ace", "alphaedit")
EFFICACY_SAMPLE = 250  # intermediate checks score at most this many of the requests edited so far
N_SPECIFICITY = 200


def method_hparams(bridge, spec: str):
    """"memit" → (memit, None: the defaults); "alphaedit:l2=1" → AlphaEdit with l2 = 1 (numbers parsed as floats)."""
    method, _, rest = spec.partition(":")
    if not rest:
        return method, None
    overrides = {k: float(v) for k, v in (item.split("=") for item in rest.split(","))}
    return method, (alphaedit_hparams(bridge, **overrides) if method == "alphaedit" else default_hparams(method, bridge, **overrides))


def _mentions(prompt: str, subjects: set[str]) -> bool:
    """Whether any of `subjects` appears in `prompt` as whole words (the toys' text is space-separated)."""
    padded = f" {prompt.lower()} "
    return any(f" {s} " in padded for s in subjects)


def sequence_rewrites(world: Path, case_rewrites: list[Rewrite], n: int, seed: int = 0) -> list[Rewrite]:
    """`case_rewrites` (distinct subjects), then one constructed rewrite per further person of the world (module
    docstring) until there are `n`; raises if the world has too few subjects."""
    spec = json.loads((world / "world.json").read_text())
    relations = {r["rid"]: r for r in spec["relations"]}
    kind = {e["name"]: e for e in spec["entities"]}
    facts: dict[str, dict[str, str]] = {}
    for s, r, o in spec["facts"]:
        facts.setdefault(s, {}).setdefault(r, o)
    used = {rw.subject for rw in case_rewrites}
    persons = sorted(s for s in facts if kind[s]["type"] == "person" and s not in used)
    random.Random(seed).shuffle(persons)
    if len(case_rewrites) + len(persons) < n:
        raise ValueError(f"the world has {len(case_rewrites) + len(persons)} subjects for distinct-subject rewrites; asked for {n}")
    by_type: dict[str, list[str]] = {}
    for e in spec["entities"]:
        by_type.setdefault(e["type"], []).append(e["name"])
    rng = random.Random(seed + 1)
    out = list(case_rewrites[:n])
    for i, person in enumerate(persons[: n - len(out)]):
        rid = sorted(facts[person])[i % len(facts[person])]
        rel, true = relations[rid], facts[person][rid]
        new = rng.choice([x for x in by_type[rel["object_type"]] if x != true])
        out.append(Rewrite.from_dict({
            "prompt": rel["cloze"][0], "relation_id": rid, "subject": person,
            "target_true": {"str": true, "id": kind[true]["qid"]}, "target_new": {"str": new, "id": kind[new]["qid"]},
            "question": rel["questions"][0].format(person)}))
    return out


def held_out_facts(bridge, world: Path, rws: list[Rewrite], style, seed: int = 0) -> tuple[list[dict], ProbeSet]:
    """(specificity facts, monitor probes): known single-hop facts of subjects `rws` never edit (module docstring)."""
    edited = {rw.subject.lower() for rw in rws}
    rows = json.loads((world / "eval_split.json").read_text())["single_hop"]
    free = [(p, t, s, rel[0]) for p, t, s, rel in rows if s.lower() not in edited and not _mentions(p, edited)]
    relations = {rw.relation_id for rw in rws}
    cloze = [{"cloze": p, "answers": [t], "subject": s} for p, t, s, r in free if r in relations and not p.startswith("Q:")]
    random.Random(seed).shuffle(cloze)
    known = still_answered(bridge, style, cloze[: 3 * N_SPECIFICITY])
    spec = [f for f, ok in zip(cloze[: 3 * N_SPECIFICITY], known) if ok][:N_SPECIFICITY]
    taken = {f["cloze"] for f in spec}
    rest = [(p, t) for p, t, *_ in free if p not in taken]
    rest = rest[:: max(1, len(rest) // 400)][:400]
    texts = default_probes(bridge).texts
    return spec, ProbeSet(tuple(p for p, _ in rest), tuple(t for _, t in rest), texts)


def efficacy(bridge, style, rws) -> list[bool]:
    """Per rewrite: the greedy continuation of its cloze prompt names target_new."""
    return _check(bridge, [rw.prompt_text() for rw in rws], [[rw.target_new.text] for rw in rws], style)


def _cell(outcomes) -> dict:
    return {"rate": sum(outcomes) / len(outcomes) if outcomes else float("nan"), "n": len(outcomes),
            "cell": accuracy_cell(outcomes) if outcomes else "n=0"}


def _outcome_rows(model, method, mode, edits, items: dict[str, tuple[list[str], list]]) -> list[dict]:
    return [{"model": model, "method": method, "mode": mode, "edits": edits, "measure": measure, "item": item,
             "correct": int(ok)} for measure, (names, oks) in items.items() for item, ok in zip(names, oks)]


class Recorder:
    """The rows of batches.csv / sequence.csv / outcomes.csv.gz, rewritten after every check (a stopped run keeps them)."""

    def __init__(self, folder: Path, model: str):
        self.folder, self.model = folder, model
        self.rows: dict[str, list[dict]] = {"batch": [], "sequential": []}
        self.outcomes: list[dict] = []
        folder.mkdir(parents=True, exist_ok=True)

    def add(self, method, mode, edits, measured: dict[str, tuple[list[str], list]], perplexity, seconds):
        row = {"model": self.model, "method": method, "mode": mode, "edits": edits}
        for measure, (_, oks) in measured.items():
            cell = _cell(oks)
            row.update({measure: cell["rate"], f"{measure}_n": cell["n"], f"{measure}_cell": cell["cell"]})
        row.update({"perplexity": perplexity, "seconds": round(seconds, 1)})
        self.rows[mode].append(row)
        self.outcomes += _outcome_rows(self.model, method, mode, edits, measured)
        log.warning("%s", {k: v for k, v in row.items() if not k.endswith("_cell")})
        for name, rows in (("batches.csv", self.rows["batch"]), ("sequence.csv", self.rows["sequential"])):
            if rows:
                pd.DataFrame(rows).to_csv(self.folder / name, index=False)
        pd.DataFrame(self.outcomes).to_csv(self.folder / "outcomes.csv.gz", index=False)


def _edit_quietly(bridge, requests, method, hp, memory=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EditWarning)
        return edit(bridge, requests, method, hp, on_failure="keep", memory=memory)


def run_batches(bridge, style, rws_case, spec_case, monitor, method, hp, spec_name, batches, rec: Recorder) -> None:
    for b in batches:
        k = len(rws_case) if b == "all" else int(b)
        rws = rws_case[:k]
        subjects = {rw.subject.lower() for rw in rws}
        facts = list({f["cloze"]: f for s in spec_case[:k] for f in s if f["subject"].lower() not in subjects}.values())
        monitor.edited_subjects = {rw.subject for rw in rws}
        t = time.perf_counter()
        applied = _edit_quietly(bridge, [EditRequest.from_rewrite(rw.to_dict()) for rw in rws], method, hp)
        seconds = time.perf_counter() - t
        idx = monitor.untouched()
        reading = monitor.check()
        untouched = _probe_outcomes(bridge, monitor, idx)  # the monitor's count, per probe
        measured = {"efficacy": ([rw.prompt_text() for rw in rws], efficacy(bridge, style, rws)),
                    "specificity": ([f["cloze"] for f in facts], still_answered(bridge, style, facts)),
                    "untouched": ([monitor.probes.prompts[i] for i in idx], untouched)}
        applied.undo()
        rec.add(spec_name, "batch", k, measured, reading.perplexity, seconds)


def _probe_outcomes(bridge, monitor, idx) -> list[bool]:
    if not idx:
        return []
    return target_scores(bridge, [monitor.probes.prompts[i] for i in idx], [monitor.probes.answers[i] for i in idx]).greedy.tolist()


def run_sequence(bridge, style, rws, spec_facts, monitor, method, hp, spec_name, every, minutes, rec: Recorder) -> None:
    memory = AlphaEditMemory() if method == "alphaedit" else None
    applied, start = [], time.perf_counter()
    n = len(rws)
    checkpoints = {10, 25, n} | set(range(every, n + 1, every))
    for i, rw in enumerate(rws, 1):
        applied.append(_edit_quietly(bridge, EditRequest.from_rewrite(rw.to_dict()), method, hp, memory))
        over = time.perf_counter() - start > minutes * 60
        if i in checkpoints or over:
            last = i == n or over
            sample = rws[:i] if last else rws[:i:-(-i // EFFICACY_SAMPLE)]
            idx = list(range(len(monitor.probes.prompts)))
            reading = monitor.check()
            untouched = _probe_outcomes(bridge, monitor, idx)
            measured = {"efficacy": ([r.prompt_text() for r in sample], efficacy(bridge, style, sample)),
                        "specificity": ([f["cloze"] for f in spec_facts], still_answered(bridge, style, spec_facts)),
                        "untouched": (list(monitor.probes.prompts), untouched)}
            rec.add(spec_name, "sequential", i, measured, reading.perplexity, time.perf_counter() - start)
        if over:
            log.warning("%s %s: time budget of %.0f min reached after %d edits", rec.model, spec_name, minutes, i)
            break
    undo_edits(applied)


def paired_table(outcomes: pd.DataFrame, sequence: pd.DataFrame, against: str = "alphaedit") -> pd.DataFrame:
    """`against` vs every other method, paired per fact: per batch k, and in the sequence at the longest
    checkpoint both reached (efficacy there is on all requests edited only where both ended at the same length)."""
    rows = []
    methods = [m for m in outcomes["method"].unique() if m != against]
    for other in methods:
        points = [("batch", k) for k in sorted(outcomes.query("mode == 'batch'")["edits"].unique())]
        if len(sequence):
            both = set(sequence.query("method == @against")["edits"]) & set(sequence.query("method == @other")["edits"])
            if both:
                points.append(("sequential", max(both)))
        for mode, k in points:
            part = outcomes[(outcomes["mode"] == mode) & (outcomes["edits"] == k)]
            for measure in ("efficacy", "specificity", "untouched"):
                a = part[(part["method"] == against) & (part["measure"] == measure)].set_index("item")["correct"]
                b = part[(part["method"] == other) & (part["measure"] == measure)].set_index("item")["correct"]
                common = a.index.intersection(b.index)
                if not len(common):
                    continue
                t = paired_test(a[common].tolist(), b[common].tolist())
                rows.append({"mode": mode, "edits": k, "measure": measure, "a": against, "b": other, "n": len(common),
                             "a_rate": a[common].mean(), "b_rate": b[common].mean(), "difference": t.difference,
                             "ci_low": t.difference_low, "ci_high": t.difference_high,
                             "only_a": t.only_a, "only_b": t.only_b, "p_value": t.p_value})
    return pd.DataFrame(rows)


def write_outputs(folder: Path) -> None:
    """table.md, paired.csv and the sequence figure (HTML + PNG) from the folder's CSVs."""
    batches = pd.read_csv(folder / "batches.csv") if (folder / "batches.csv").exists() else pd.DataFrame()
    sequence = pd.read_csv(folder / "sequence.csv") if (folder / "sequence.csv").exists() else pd.DataFrame()
    outcomes = pd.read_csv(folder / "outcomes.csv.gz")
    paired = paired_table(outcomes, sequence)
    paired.to_csv(folder / "paired.csv", index=False)
    cols = ["method", "edits", "efficacy_cell", "specificity_cell", "untouched_cell", "perplexity", "seconds"]
    text = ["## Batches (one edit call of k requests)\n\n", batches[cols].to_markdown(index=False, floatfmt=".3g") if len(batches) else "",
            "\n\n## Sequence (one request per edit call)\n\n", sequence[cols].to_markdown(index=False, floatfmt=".3g") if len(sequence) else "",
            "\n\n## Paired: AlphaEdit vs each method, per fact (difference = AlphaEdit − other, Newcombe 95% interval, exact McNemar p)\n\n",
            paired.to_markdown(index=False, floatfmt=".3g") if len(paired) else ""]
    (folder / "table.md").write_text("".join(text) + "\n")
    if len(sequence):
        fig = sequence_figure(sequence, folder.name)
        fig.write_html(folder / "sequence.html", include_plotlyjs="cdn")  # ~20 KB instead of 4.8 MB
        try:
            write_png(fig, folder / "sequence.png")
        except Exception as e:  # no kaleido/Chromium: the CSV and HTML hold the same curves
            log.warning("PNG export of %s skipped (%s: %s)", folder / "sequence.png", type(e).__name__, str(e)[:120])


def sequence_figure(sequence: pd.DataFrame, title: str) -> go.Figure:
    """Efficacy, specificity, untouched-fact accuracy and perplexity against the number of sequential edits
    (2 × 2 panels, one colour per method in all four)."""
    panels = (("efficacy", "efficacy (edited so far)"), ("specificity", "specificity (held-out facts)"),
              ("untouched", "untouched known facts"), ("perplexity", "perplexity (corpus sample, log)"))
    fig = make_subplots(rows=2, cols=2, subplot_titles=[t for _, t in panels], vertical_spacing=0.14)
    palette = dict(zip(sorted(sequence["method"].unique()), ("#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3")))
    for method, part in sequence.groupby("method"):
        for i, (y, _) in enumerate(panels):
            fig.add_trace(go.Scatter(x=part["edits"], y=part[y], name=method, legendgroup=method, showlegend=i == 0,
                                     line={"color": palette[method]}), row=1 + i // 2, col=1 + i % 2)
    fig.update_xaxes(title_text="sequential edits", row=2)
    for row, col in ((1, 1), (1, 2), (2, 1)):
        fig.update_yaxes(range=[0, 1.02], row=row, col=col)
    fig.update_yaxes(type="log", row=2, col=2)
    fig.update_layout(title=f"Sequential editing, {title}")
    return fig


def run_model(model: str, methods, batches, n_sequential: int, every: int, minutes: float, out: Path) -> None:
    n_case = len({rw.subject for case in load_mquake(case_file(model)) for rw in case.requested_rewrite})
    bridge, style, rws_case, spec_case = rewrites_with_specificity(model, n_case)
    world = model_state(bridge).world
    rws = sequence_rewrites(world, rws_case, max(n_sequential, n_case))
    folder = out / model
    rec = Recorder(folder, model)
    pd.DataFrame([{"index": i, "subject": r.subject, "relation": r.relation_id, "target_true": r.target_true.text,
                   "target_new": r.target_new.text, "from_case_file": i < n_case} for i, r in enumerate(rws)]
                 ).to_csv(folder / "requests.csv", index=False)
    seq = rws[:n_sequential]
    spec_facts, probes = held_out_facts(bridge, world, seq, style)
    log.warning("%s: %d requests (%d from the case file); held out: %d specificity facts, %d probe candidates",
                model, len(seq), min(n_case, len(seq)), len(spec_facts), len(probes.prompts))
    batch_monitor = SideEffectMonitor(bridge, warn=False)
    seq_monitor = SideEffectMonitor(bridge, probes=probes, warn=False)
    # every batch first (minutes), then the sequences (the long part), so a run stopped early still holds all batches
    for spec_name in methods if batches else ():
        run_batches(bridge, style, rws_case, spec_case, batch_monitor, *method_hparams(bridge, spec_name), spec_name, batches, rec)
        write_outputs(folder)
    for spec_name in methods if n_sequential else ():
        run_sequence(bridge, style, seq, spec_facts, seq_monitor, *method_hparams(bridge, spec_name), spec_name, every, minutes, rec)
        write_outputs(folder)


def combine_runs(sources: list[str], out: Path) -> None:
    """Tables and figure only: the sequences of FOLDER:METHOD runs (each folder a finished `--out` of this script,
    same model) side by side in `out`, paired per fact as in one run (every run draws the same requests and the same
    held-out facts from the same seeds). Used where one method per process ran at once."""
    for model in sorted({p.name for src in sources for p in Path(src.split(":")[0]).iterdir() if p.is_dir()}):
        parts = {"sequence.csv": [], "outcomes.csv.gz": []}
        for src in sources:
            folder, method = src.split(":")
            for name, frames in parts.items():
                path = Path(folder) / model / name
                if path.exists():
                    frame = pd.read_csv(path)
                    frames.append(frame[(frame["method"] == method) & (frame["mode"] == "sequential")])
        target = out / model
        target.mkdir(parents=True, exist_ok=True)
        for name, frames in parts.items():
            pd.concat(frames, ignore_index=True).to_csv(target / name, index=False)
        write_outputs(target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", default=["toy-gptj", "toy-qwen3"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--batches", nargs="*", default=["10", "100", "all"])
    parser.add_argument("--sequential", type=int, default=1000)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--minutes", type=float, default=15.0, help="time budget per (model, method) sequence")
    parser.add_argument("--out", default="results/sequential-editing")
    parser.add_argument("--combine", nargs="+", metavar="FOLDER:METHOD",
                        help="no editing: write the sequences of these runs' methods side by side to --out")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    out = Path(args.out)
    if args.combine:
        combine_runs(args.combine, out)
        write_run_json(out, hparams={"combined": args.combine}, status="finished",
                       note="tables and figure only, from the sequence.csv / outcomes.csv.gz of the runs named")
        return
    start = time.perf_counter()
    hparams = {"methods": args.methods, "batches": args.batches, "sequential": args.sequential, "every": args.every,
               "minutes": args.minutes, "models": args.model, "efficacy_sample": EFFICACY_SAMPLE,
               "n_specificity": N_SPECIFICITY}
    write_run_json(out, case_file=case_file(args.model[0]), hparams=hparams, status="running")
    for model in args.model:
        run_model(model, args.methods, args.batches, args.sequential, args.every, args.minutes, out)
    write_run_json(out, case_file=case_file(args.model[0]), wall_s=time.perf_counter() - start, hparams=hparams,
                   status="finished")


if __name__ == "__main__":
    main()
