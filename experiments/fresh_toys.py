"""Do the default presets travel? Single edits on toys freshly trained on world seeds never used to fit them.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python -m experiments.fresh_toys \
        --toys qwen3:11 gptj:12 --n 100 --out results/fresh-toys

Issue #23, item 8: our tuned defaults were fitted on the two shipped toys (6 layers, world seed 0) and SmolLM2.
Here each `ARCH:SEED` toy is trained with the 15-minute CPU recipe (`train_toy --recipe cpu15`: qwen3 4 layers,
gptj 3 layers, 300-person world) on world seed SEED (init seed SEED too), unless `<out>/<arch>-w<seed>/model`
already exists. Then `--n` one-edit MQuAKE cases of the toy's own world are drawn (`--seed`), each edited alone
with the *default* preset (`default_hparams(method, bridge)`, which on these toys includes the fact-site calibration
of `editing.calibrate`, written to `fact_sites.csv`) and undone (`evaluation.protocol.evaluate`).

Writes, after every (toy, method), `per_case.csv`, `table.md` and `run.json` (provenance): per toy and method
efficacy, paraphrase, multi-hop (one 0/1 per case) and specificity (pooled over the known neighbourhood facts
checked, n = facts), each a Wilson 95% interval, and whether the bars (efficacy ≥ 95%, specificity ≥ 90%) hold.
The bars are read on the point estimates; the intervals say how sure that is.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from ace_interp.data.train_toy import cpu15_config, save_result, train
from ace_interp.data.world import generate_world, save_world_assets
from ace_interp.editing import default_hparams, load_preset
from ace_interp.editing.hparams import hparams_from_size_classes
from ace_interp.evaluation.hops import hop_prompts_for
from ace_interp.evaluation.protocol import evaluate, model_style
from ace_interp.model import load_model
from ace_interp.model.architecture import model_spec
from ace_interp.model.state import model_state
from ace_interp.provenance import write_run_json
from experiments.preset_table import cell, single_edit_cases
from experiments.preset_table import table as preset_table

log = logging.getLogger("fresh_toys")
EFFICACY_BAR, SPECIFICITY_BAR = 0.95, 0.90


def train_fresh_toy(arch: str, seed: int, folder: Path, threads: int) -> Path:
    """Train `arch` with its cpu15 recipe on world seed `seed` into `folder/model` (world in `folder/world`, where
    `model_state` finds it); a folder that already holds a model is kept."""
    model_dir, world_dir = folder / "model", folder / "world"
    if (model_dir / "config.json").exists():
        log.info("%s: already trained", model_dir)
        return model_dir
    cfg = cpu15_config(arch, seed=seed, threads=threads, time_limit_s=None)
    cfg = replace(cfg, world=replace(cfg.world, seed=seed))
    world = generate_world(cfg.world)
    save_world_assets(world, world_dir)
    result = train(cfg, world, progress=False)
    save_result(result, cfg, model_dir, f"experiments.fresh_toys: train_toy --arch {arch} --recipe cpu15 "
                                        f"--seed {seed} --world-seed {seed} --threads {threads} (no time limit)")
    return model_dir


def table(per_case: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (toy, method), g in per_case.groupby(["toy", "method"], sort=False):
        row = {"toy": toy, "method": method}
        for metric in ("efficacy", "paraphrase", "multi_hop"):
            row[metric] = cell((g[metric] == 1.0).sum(), len(g))
        facts = g["n_specificity"].fillna(0)
        kept = float((g["specificity"].fillna(0) * facts).sum())
        row["specificity (facts)"] = cell(kept, int(facts.sum()))
        efficacy, specificity = (g["efficacy"] == 1.0).mean(), kept / max(1.0, float(facts.sum()))
        row["bars met"] = "yes" if efficacy >= EFFICACY_BAR and specificity >= SPECIFICITY_BAR else "no"
        rows.append(row)
    return pd.DataFrame(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toys", nargs="+", default=["qwen3:11", "gptj:12"], help="ARCH:WORLD_SEED")
    parser.add_argument("--methods", nargs="+", default=["rome", "memit", "pmet", "ace"])
    parser.add_argument("--n", type=int, default=100, help="one-edit cases per toy")
    parser.add_argument("--n-specificity", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0, help="case draw and specificity sample")
    parser.add_argument("--threads", type=int, default=1, help="training threads")
    parser.add_argument("--out", default="results/fresh-toys")
    parser.add_argument("--toys-dir", default=None, help="where the toys live and are trained (default: --out)")
    parser.add_argument("--compare", nargs="+", metavar="FOLDER",
                        help="no editing: pair a calibrated run's per_case.csv (the first folder) with shape-only runs' "
                             "(the others) on the same toys and cases; writes <out>/comparison.md")
    parser.add_argument("--shape-only", action="store_true",
                        help="the tuned preset's shape rule without its fact-site calibration (the comparison run)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.compare:
        frames = [pd.read_csv(Path(folder) / "per_case.csv").assign(preset="calibrated" if i == 0 else "shape rule")
                  for i, folder in enumerate(args.compare)]
        paired = preset_table(pd.concat(frames).rename(columns={"toy": "model"}), ("calibrated", "shape rule"))
        (out / "comparison.md").write_text(paired.to_markdown(index=False) + "\n")
        print(paired.to_markdown(index=False))
        return 0
    toys_dir = out if args.toys_dir is None else Path(args.toys_dir)
    label = "tuned, shape rule only (no fact-site calibration)" if args.shape_only else "tuned (default)"
    start = time.perf_counter()
    frames, hparams, case_files, training, calibrations = [], {}, {}, {}, []
    for spec in args.toys:
        arch, seed = spec.split(":")
        name = f"{arch}-w{seed}"
        model_dir = train_fresh_toy(arch, int(seed), toys_dir / name, args.threads)
        training[name] = {k: v for k, v in json.loads((model_dir / "metrics.json").read_text()).items() if k not in ("n", "by_path")}
        bridge = load_model(str(model_dir), device="cpu")
        cases_path = toys_dir / name / "world" / "mquake_cases.json"
        case_files[name] = str(cases_path)
        cases = single_edit_cases(cases_path, args.n, args.seed)
        hops = hop_prompts_for(bridge, cases_path)
        for method in args.methods:
            hp = (hparams_from_size_classes(method, load_preset(method, "tuned"), model_spec(bridge), True)
                  if args.shape_only else default_hparams(method, bridge))
            hparams[f"{name}/{method}"] = hp
            for sites in model_state(bridge).fact_sites.values():  # the preset's calibration (hparams.cached_fact_sites)
                if not any(c["toy"].iloc[0] == name for c in calibrations):
                    calibrations.append(sites.table.assign(toy=name, chosen=sites.fact_token))
                    pd.concat(calibrations, ignore_index=True).to_csv(out / "fact_sites.csv", index=False)
            t = time.perf_counter()
            result = evaluate(bridge, cases, [method], model_style(bridge), n_specificity=args.n_specificity,
                              hparams={method: hp}, hop_prompts=hops, seed=args.seed, progress=False)
            frames.append(result.per_case.assign(toy=name))
            log.info("%s %s: %d cases in %.0f s", name, method, len(cases), time.perf_counter() - t)
            per_case = pd.concat(frames, ignore_index=True)
            per_case.to_csv(out / "per_case.csv", index=False)
            (out / "table.md").write_text(table(per_case).to_markdown(index=False) + "\n")
            write_run_json(out, preset=label, hparams=hparams, case_file=cases_path, seeds=[args.seed],
                           wall_s=time.perf_counter() - start, toys=args.toys, case_files=case_files,
                           n_cases_per_toy=args.n, training_metrics=training, complete=False)
    write_run_json(out, preset=label, hparams=hparams, case_file=cases_path, seeds=[args.seed],
                   wall_s=time.perf_counter() - start, toys=args.toys, case_files=case_files,
                   n_cases_per_toy=args.n, training_metrics=training, complete=True)
    print(table(pd.concat(frames, ignore_index=True)).to_markdown(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
