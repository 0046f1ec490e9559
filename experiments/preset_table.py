"""Reference preset vs tuned preset, per method, on the same single edits (issue #23, item 7).

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python -m experiments.preset_table \
        --models toy-gptj toy-qwen3 --n 100 --out results/preset-table

For each model: `--n` one-edit MQuAKE cases of the model's own case set (drawn with `--seed`), each edited alone and
undone (`evaluation.protocol.evaluate`), once with `preset="reference"` and once with `preset="tuned"`, for every
method. Writes, after every (model, method, preset), `per_case.csv` and `table.md` (each cell a Wilson 95% interval
with its n; reference vs tuned paired per case: exact McNemar p and Newcombe's interval of the difference), and
`run.json` (provenance). Efficacy, multi-hop: one 0/1 per case. Paraphrase: a case counts if all its edited hops'
paraphrases answer the new object. Specificity: its cell pools every known neighbourhood fact checked (n = facts);
its paired test counts a case if all of its facts kept their answer.
"""

from __future__ import annotations

import argparse
import logging
import random
import time
from pathlib import Path

import pandas as pd

from ace_interp.data.mquake import load_mquake
from ace_interp.editing import default_hparams
from ace_interp.evaluation.hops import hop_prompts_for
from ace_interp.evaluation.protocol import evaluate, style_for
from ace_interp.evaluation.stats import paired_test, wilson_interval
from ace_interp.model import load_model
from ace_interp.model.loading import ASSETS
from ace_interp.provenance import write_run_json

log = logging.getLogger("preset_table")
PRESETS = ("reference", "tuned")
BINARY = ("efficacy", "paraphrase", "multi_hop")


def cases_for(model: str, n: int, seed: int):
    path = ASSETS / "world" / "mquake_cases.json" if model.startswith("toy-") else ASSETS / "real_facts" / "smollm2_known.json"
    single = [c for c in load_mquake(path) if c.n_edits == 1]
    chosen = sorted(random.Random(seed).sample(range(len(single)), min(n, len(single))))
    return path, [single[i] for i in chosen]


def cell(successes: float, n: int) -> str:
    if n == 0:
        return "–"
    low, high = wilson_interval(int(round(successes)), n)
    return f"{100 * successes / n:.0f}% [{100 * low:.0f}, {100 * high:.0f}] (n={n})"


def table(per_case: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (model, method), group in per_case.groupby(["model", "method"], sort=False):
        by_preset = {p: g.sort_values("case_id").reset_index(drop=True) for p, g in group.groupby("preset")}
        if set(by_preset) != set(PRESETS):
            continue
        ref, tuned = by_preset["reference"], by_preset["tuned"]
        if list(ref.case_id) != list(tuned.case_id):
            continue
        for preset, g in (("reference", ref), ("tuned", tuned)):
            row = {"model": model, "method": method, "preset": preset}
            for metric in BINARY:
                ok = (g[metric] == 1.0).astype(int)
                row[metric] = cell(ok.sum(), len(ok))
            facts = g["n_specificity"].fillna(0)
            row["specificity (facts)"] = cell(float((g["specificity"].fillna(0) * facts).sum()), int(facts.sum()))
            row["s/edit (mean)"] = f"{g['edit_seconds'].mean():.2f}"
            rows.append(row)
        test_row = {"model": model, "method": method, "preset": "reference − tuned"}
        for metric in (*BINARY, "specificity"):
            a, b = (ref[metric] == 1.0).astype(int), (tuned[metric] == 1.0).astype(int)
            t = paired_test(list(a), list(b))
            key = "specificity (facts)" if metric == "specificity" else metric
            test_row[key] = f"{100 * t.difference:+.0f} pts [{100 * t.difference_low:+.0f}, {100 * t.difference_high:+.0f}], p={t.p_value:.2g}"
        test_row["s/edit (mean)"] = f"{ref['edit_seconds'].mean() / tuned['edit_seconds'].mean():.2f}×"
        rows.append(test_row)
    return pd.DataFrame(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["toy-gptj", "toy-qwen3"])
    parser.add_argument("--methods", nargs="+", default=["rome", "memit", "pmet", "ace"])
    parser.add_argument("--n", type=int, default=100, help="one-edit cases per model")
    parser.add_argument("--n-specificity", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results/preset-table")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    frames, hparams, case_files = [], {}, {}
    for model in args.models:
        bridge = load_model(model, device="cpu")
        cases_path, cases = cases_for(model, args.n, args.seed)
        case_files[model] = str(cases_path)
        hops = hop_prompts_for(bridge, cases_path)
        for method in args.methods:
            for preset in PRESETS:
                hp = default_hparams(method, bridge, preset)
                hparams[f"{model}/{method}/{preset}"] = hp
                t = time.perf_counter()
                result = evaluate(bridge, cases, [method], style_for(model), n_specificity=args.n_specificity,
                                  hparams={method: hp}, hop_prompts=hops, seed=args.seed, progress=False)
                frames.append(result.per_case.assign(model=model, preset=preset))
                log.info("%s %s %s: %d cases in %.0f s", model, method, preset, len(cases), time.perf_counter() - t)
                per_case = pd.concat(frames, ignore_index=True)
                per_case.to_csv(out / "per_case.csv", index=False)
                summary = table(per_case)
                (out / "table.md").write_text(summary.to_markdown(index=False) + "\n" if len(summary) else "")
                write_run_json(out, preset=list(PRESETS), hparams=hparams, case_file=cases_path, seeds=[args.seed],
                               wall_s=time.perf_counter() - start, models=args.models, case_files=case_files,
                               n_cases_per_model=args.n, complete=False)
    write_run_json(out, preset=list(PRESETS), hparams=hparams, case_file=cases_path, seeds=[args.seed],
                   wall_s=time.perf_counter() - start, models=args.models, case_files=case_files,
                   n_cases_per_model=args.n, complete=True)
    print(table(pd.concat(frames, ignore_index=True)).to_markdown(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
