"""Reference preset vs tuned preset, per method, on the same single edits (issue #23, item 7).

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python -m experiments.preset_table \
        --models toy-gptj toy-qwen3 smollm2-135m --n 100 --chunk 5 5 2 --until 01:05 --out results/preset-table/run

For each model: `--n` single edits of the model's own case set (`single_edits`, drawn with `--seed`; toys: the
world's cases, SmolLM2: assets/real_facts/smollm2_known.json; where the file has fewer than `--n` one-edit cases,
as SmolLM2's 73, the rest are single rewrites of its multi-edit cases, whose multi-hop cell stays empty), each edited alone and undone (`evaluation.protocol`'s
per-case protocol: the unedited model's answers and the specificity facts are drawn once over all n cases), once
with `preset="reference"` and once with `preset="tuned"`, for every method. The cases are run in rounds of
`--chunk` cases per model (every model, method and preset in each round), so a run stopped by `--until` (no round
is started that the previous round's duration says would end after that UTC time) has every (model, method) on
the same first cases of its sample under both presets. Writes, after every round, `per_case.csv` and `table.md`
(each cell a Wilson 95% interval with its n; reference vs tuned paired per case on the cases both ran: exact
McNemar p and Newcombe's interval of the difference), and `run.json` (provenance; `n_cases_per_model`: how many
of the sampled cases each model reached; `item_seconds`, `resumed_from`: compute and commit of the saved items). Every finished (method, preset, case) is saved under `OUT/checkpoint/`
(`evaluation.checkpoint`) as it finishes: `--resume` continues a stopped run from there, and `--shard I/N` runs
only every N-th item (saved, nothing else written; start each shard with `--resume`, then one run with `--resume`
and no shard assembles the table). Efficacy, multi-hop: one 0/1 per case. Paraphrase: a case counts if all
its edited hops' paraphrases answer the new object. Specificity: its cell pools every known neighbourhood fact
checked (n = facts); its paired test counts a case if all of its facts kept their answer.

Only the cases whose multi-hop question the unedited model answers are edited (the per-case protocol's filter),
unless `--all-edits`: then every sampled edit is made and measured, and the multi-hop cell counts only the edits of
such cases (the others' verdict is NaN). SmolLM2 answers ~70% of its one-edit cases' questions directly, so its
≥ 100 single edits need `--all-edits`.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import random
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd

from ace_interp.data.mquake import load_mquake
from ace_interp.editing import default_hparams
from ace_interp.evaluation.checkpoint import Checkpoint, Shard, refuse_unresumed, run_items
from ace_interp.evaluation.hops import hop_prompts_for
from ace_interp.evaluation.protocol import Asking, evaluate_case, style_for, unedited_answers
from ace_interp.evaluation.stats import paired_test, wilson_interval
from ace_interp.model import load_model
from ace_interp.model.loading import ASSETS
from ace_interp.provenance import file_digest, write_run_json

log = logging.getLogger("preset_table")
PRESETS = ("reference", "tuned")
BINARY = ("efficacy", "paraphrase", "multi_hop")


def single_edit_cases(cases_path: Path, n: int, seed: int):
    """`n` one-edit cases of an MQuAKE-format file, drawn with `seed`, in file order."""
    single = [c for c in load_mquake(cases_path) if c.n_edits == 1]
    chosen = sorted(random.Random(seed).sample(range(len(single)), min(n, len(single))))
    return [single[i] for i in chosen]


def one_rewrite_of(case, j: int):
    """`case` with only its `j`-th rewrite: a single edit of that fact, measured by the case's efficacy, paraphrase
    and specificity questions of that hop. Its multi-hop questions are dropped (their new answer assumes every
    rewrite of the case); `extra["source_case_id"]` names the case it comes from."""
    hop = case.edited_hops[j]
    # its edit triple alone: the paraphrase questions ask the hops whose new triple is an edit triple
    # (`protocol.edited_hop_indices`), and the case's other rewrites are not made
    triples = [case.orig.new_triples[hop]] if hop is not None else [case.orig.edit_triples[j]]
    orig = dataclasses.replace(case.orig, edit_triples=triples, edit_triples_idx=None if hop is None else [hop])
    return dataclasses.replace(case, case_id=f"{case.case_id}/edit-{j}", requested_rewrite=[case.requested_rewrite[j]],
                               questions=[], orig=orig, extra={**case.extra, "source_case_id": case.case_id})


def source_id(case):
    """The case id of the file's case a single edit comes from (its own for a one-edit case)."""
    return case.extra.get("source_case_id", case.case_id)


def single_edits(cases_path: Path, n: int, seed: int):
    """`n` single edits, in file order: `single_edit_cases` where the file has `n` one-edit cases; otherwise all of
    them, and single rewrites of its multi-edit cases (`one_rewrite_of`, drawn with `seed`) for the rest."""
    cases = load_mquake(cases_path)
    single = [c for c in cases if c.n_edits == 1]
    if len(single) >= n:
        return single_edit_cases(cases_path, n, seed)
    rewrites = [(i, j) for i, c in enumerate(cases) if c.n_edits > 1 for j in range(c.n_edits)]
    chosen = set(random.Random(seed).sample(rewrites, min(n - len(single), len(rewrites))))
    return [c if c.n_edits == 1 else one_rewrite_of(c, j)
            for i, c in enumerate(cases) for j in range(c.n_edits) if (c.n_edits == 1 and j == 0) or (i, j) in chosen]


def own_paraphrases_only(per_case: pd.DataFrame) -> pd.DataFrame:
    """Rows whose paraphrase cell asked more hops than the case edits (single rewrites saved before `one_rewrite_of`
    kept only its own edit triple also asked the source case's other edited hop) get no paraphrase verdict."""
    if "n_paraphrase" not in per_case:
        return per_case
    mixed = per_case.n_paraphrase > per_case.n_edits
    if mixed.any():
        log.warning("%d rows asked paraphrases of hops their edit does not touch: their paraphrase cell is left empty",
                    int(mixed.sum()))
    return per_case.assign(paraphrase=per_case.paraphrase.where(~mixed))


def cases_for(model: str, n: int, seed: int):
    """(case file, `single_edits` of it) for a named model: the shipped world for the toys, else SmolLM2's."""
    path = ASSETS / "world" / "mquake_cases.json" if model.startswith("toy-") else ASSETS / "real_facts" / "smollm2_known.json"
    return path, single_edits(path, n, seed)


def cell(successes: float, n: int) -> str:
    if n == 0:
        return "–"
    low, high = wilson_interval(int(round(successes)), n)
    return f"{100 * successes / n:.0f}% [{100 * low:.0f}, {100 * high:.0f}] (n={n})"


def table(per_case: pd.DataFrame, presets: tuple[str, str] = PRESETS) -> pd.DataFrame:
    """Per (model, method): the two presets' rows on the cases both ran, and a paired `a − b` row (Newcombe interval,
    exact McNemar p; specificity per case: all its neighbourhood facts kept)."""
    first, second = presets
    rows = []
    for (model, method), group in per_case.groupby(["model", "method"], sort=False):
        by_preset = {p: g.sort_values("case_id", key=lambda ids: ids.astype(str)).reset_index(drop=True)
                     for p, g in group.groupby("preset")}  # ids: ints, and "7/edit-1" for single rewrites
        if set(by_preset) != set(presets):
            continue
        common = set(by_preset[first].case_id) & set(by_preset[second].case_id)
        a_rows, b_rows = (by_preset[p][by_preset[p].case_id.isin(common)].reset_index(drop=True) for p in presets)
        if not common:
            continue
        for preset, g in ((first, a_rows), (second, b_rows)):
            row = {"model": model, "method": method, "preset": preset}
            for metric in BINARY:  # a single rewrite of a multi-edit case has no multi-hop verdict (NaN)
                ok = (g[metric].dropna() == 1.0).astype(int)
                row[metric] = cell(ok.sum(), len(ok))
            facts = g["n_specificity"].fillna(0)
            row["specificity (facts)"] = cell(float((g["specificity"].fillna(0) * facts).sum()), int(facts.sum()))
            row["s/edit (mean)"] = f"{g['edit_seconds'].mean():.2f}"
            rows.append(row)
        test_row = {"model": model, "method": method, "preset": f"{first} − {second}"}
        for metric in (*BINARY, "specificity"):
            both = a_rows[metric].notna() & b_rows[metric].notna()
            a, b = ((r[metric][both] == 1.0).astype(int) for r in (a_rows, b_rows))
            t = paired_test(list(a), list(b))
            key = "specificity (facts)" if metric == "specificity" else metric
            test_row[key] = f"{100 * t.difference:+.0f} pts [{100 * t.difference_low:+.0f}, {100 * t.difference_high:+.0f}], p={t.p_value:.2g}"
        test_row["s/edit (mean)"] = f"{a_rows['edit_seconds'].mean() / b_rows['edit_seconds'].mean():.2f}×"
        rows.append(test_row)
    return pd.DataFrame(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["toy-gptj", "toy-qwen3"])
    parser.add_argument("--methods", nargs="+", default=["rome", "memit", "pmet", "ace"])
    parser.add_argument("--skip", nargs="*", default=[], help="MODEL/METHOD pairs not to run (e.g. toy-gptj/pmet)")
    parser.add_argument("--n", type=int, default=100, help="one-edit cases per model (the most; see --until)")
    parser.add_argument("--chunk", type=int, nargs="+", default=[100],
                        help="cases per model per round (one number, or one per model)")
    parser.add_argument("--until", default=None,
                        help="UTC time HH:MM: start no round that the previous one's duration says would end later")
    parser.add_argument("--n-specificity", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results/preset-table")
    parser.add_argument("--resume", action="store_true", help="continue a stopped run from OUT/checkpoint")
    parser.add_argument("--all-edits", action="store_true",
                        help="edit every sampled case, not only those whose multi-hop question the unedited model "
                             "answers (their multi-hop verdict is left empty)")
    parser.add_argument("--shard", type=Shard.parse, default=None,
                        help="I/N: run only every N-th item, saved under OUT/checkpoint (the table is assembled by a "
                             "later run with --resume and no --shard)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    deadline = None
    if args.until:
        hour, minute = (int(x) for x in args.until.split(":"))
        now = datetime.now(timezone.utc)
        deadline = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
        deadline += timedelta(days=1) if deadline < now else timedelta()
    chunks = dict(zip(args.models, args.chunk * len(args.models) if len(args.chunk) == 1 else args.chunk, strict=True))
    start = time.perf_counter()
    frames, hparams, case_files, runs, stores = [], {}, {}, {}, {}
    for model in args.models:  # each model's cases, hop prompts and unedited answers, computed once over all n cases
        bridge = load_model(model, device="cpu")
        cases_path, cases = cases_for(model, args.n, args.seed)
        case_files[model] = str(cases_path)
        asking = Asking("direct", style_for(model), False)
        # the multi-hop question a single rewrite's known filter asks is its source case's (`source_id`)
        unedited = unedited_answers(bridge, cases, [asking], args.n_specificity, args.seed)
        sources = {source_id(c) for c in cases} - {c.case_id for c in cases}
        if sources:
            unedited.known[asking.label].update(unedited_answers(
                bridge, [c for c in load_mquake(cases_path) if c.case_id in sources], [asking], 0, args.seed,
                mark_specificity=False).known[asking.label])
        runs[model] = (bridge, cases, hop_prompts_for(bridge, cases_path), asking, unedited)
        for method in args.methods:
            for preset in PRESETS:
                hparams[f"{model}/{method}/{preset}"] = default_hparams(method, bridge, preset)
        # every finished (method, preset, case) is saved as it finishes: --resume continues a stopped run
        saved = out / "checkpoint" / Path(model).name
        try:
            refuse_unresumed(saved, args.resume, args.shard)
        except ValueError as error:
            raise SystemExit(str(error)) from None
        stores[model] = Checkpoint(saved, {"model": model, "case_file_sha256": file_digest(cases_path), "n": args.n,
                                           "seed": args.seed, "n_specificity": args.n_specificity,
                                           "hparams": {k: v for k, v in hparams.items() if k.startswith(f"{model}/")}})
    done = dict.fromkeys(args.models, 0)
    complete = False
    while not complete:
        round_start = time.perf_counter()
        for model in args.models:
            bridge, cases, hops, asking, unedited = runs[model]
            chunk = cases[done[model]: done[model] + chunks[model]]
            for method in (m for m in args.methods if f"{model}/{m}" not in args.skip):
                for preset in PRESETS:
                    hp, t = hparams[f"{model}/{method}/{preset}"], time.perf_counter()

                    def run(case, method=method, hp=hp):
                        rows = evaluate_case(bridge, case, method, asking.style, unedited.specificity[case.case_id], hp,
                                             hop_prompts=hops, askings=[asking])
                        # no multi-hop verdict: a single rewrite of a multi-edit case, or a question the unedited
                        # model does not answer (`--all-edits`)
                        counted = case.questions and unedited.known[asking.label][case.case_id]
                        return [{**r, "method": method, **({} if counted else {"multi_hop": math.nan})} for r in rows]

                    items = [((method, preset, case.case_id), case) for case in chunk
                             if args.all_edits or unedited.known[asking.label][source_id(case)]]
                    rows = run_items(items, run, stores[model], args.shard)
                    frames.append(pd.DataFrame(rows).assign(model=model, preset=preset))
                    log.info("%s %s %s: cases %d-%d in %.0f s", model, method, preset, done[model],
                             done[model] + len(chunk), time.perf_counter() - t)
            done[model] += len(chunk)
        complete = all(done[m] >= len(runs[m][1]) for m in args.models)
        if deadline is not None and not complete:
            complete = datetime.now(timezone.utc) + timedelta(seconds=time.perf_counter() - round_start) > deadline
        if args.shard is not None:  # a shard's items wait in the checkpoint for the run that assembles the table
            continue
        per_case = own_paraphrases_only(pd.concat(frames, ignore_index=True))
        per_case.to_csv(out / "per_case.csv", index=False)
        summary = table(per_case)
        (out / "table.md").write_text(summary.to_markdown(index=False) + "\n" if len(summary) else "")
        write_run_json(out, preset=list(PRESETS), hparams=hparams, case_file=list(case_files.values())[-1],
                       seeds=[args.seed], wall_s=time.perf_counter() - start, models=args.models, case_files=case_files,
                       n_cases_per_model=done, all_edits=args.all_edits, skipped=args.skip, until=args.until,
                       item_seconds={m: round(s.seconds, 1) for m, s in stores.items()},
                       resumed_from={m: s.segments for m, s in stores.items()},
                       complete=all(done[m] >= len(runs[m][1]) for m in args.models))
    if args.shard is None:
        print(table(own_paraphrases_only(pd.concat(frames, ignore_index=True))).to_markdown(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
