"""Memory and time at the paper's shapes on a CPU: random-initialised full models or few-layer slices.

    python -m benchmarks.bench_shapes --all                       # every row of benchmarks/RESULTS.md, one process each
    python -m benchmarks.bench_shapes --shape gptj-6b --n-layers 2 --dtype bfloat16 --out results/bench-shapes/x.json
    python -m benchmarks.bench_shapes --shape tiny --n-layers 2   # a seconds-long smoke test (tests run it)
    python -m benchmarks.bench_shapes --shape qwen3-8b --n-layers 2 --stages edit --edit-methods pmet ace --out ...

A slice keeps the shape's d_model, d_mlp, vocabulary and attention heads and has `--n-layers` layers; every
quantity measured per layer or per neuron carries over to the full depth (the memory model in
benchmarks/RESULTS.md does that arithmetic). Stages, one prompt each:

  model            parameters, bytes, RSS after building
  value (sample)   exact value scores (projected path, full vocabulary) of `--neurons` neurons of the last layer
                   under `--memory-budget`: seconds per neuron → the full sweep of the full model by linearity
  top-k            `top_value_neurons(k=100)` over the slice's layers (bounds + exact scoring): seconds per layer
  covariance       `second_moments` of the last layer over `--cov-tokens` random-word tokens (no cache)
  edit             one PMET edit writing the first layer (and one ACE edit writing the first and the last
                   layer of the slice) with `--edit-steps` optimisation steps; cold: the written layers' key
                   statistics collected over `--cov-tokens` tokens, warm: cached; `info["timings"]` splits it into
                   targets / keys / solve

`--stages` picks stages (a row split over processes keeps each one's peak its own); `--edit-methods` the editors.

Peak memory: the process's RSS sampled every 2 ms above the stage's start (lower bounds, `benchmarks.common`).
Timings on this shared 2-core machine are noisy (load 10–30 from other engineers' jobs): stages repeated
`--repeat` (attribution) / `--edit-repeat` (edits) times report the median.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import _RssSampler, machine_description

log = logging.getLogger(__name__)

# (shape, n_layers, dtype, edit) of the RESULTS.md table; each runs in its own process (peak RSS stays per row).
# The 4096-wide slices skip the edit: at d_mlp 16,384 the float64 statistics and the solve's d_mlp² buffers
# (2 GiB each) took a bf16 GPT-J slice past 12 GB of RSS, beyond what a process may use on this shared machine
# (the memory model in RESULTS.md scales the edit's buffers from the Qwen3-0.6B-shaped row instead).
ALL_ROWS = [
    ("qwen3-0.6b", 28, "bfloat16", True),
    ("gptj-6b", 2, "bfloat16", False),
    ("qwen3-8b", 2, "bfloat16", False),
    ("qwen3-0.6b", 28, "float32", True),
]
STAGES = ("value", "topk", "covariance", "edit")


def median_stage(fn, repeat: int) -> tuple[float, float, object]:
    """Median seconds over `repeat` runs, the largest RSS rise above each run's start (MiB), the last result."""
    seconds, peaks, result = [], [], None
    for _ in range(repeat):
        with _RssSampler() as sampler:
            t = time.perf_counter()
            result = fn()
            seconds.append(time.perf_counter() - t)
        peaks.append((sampler.peak - sampler.start_rss) / 2**20)
    return statistics.median(seconds), max(peaks), result


def process_peak_mib() -> float:
    """This process's peak RSS so far (Linux ru_maxrss, KiB), the whole footprint rather than a stage's rise."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(args: argparse.Namespace) -> dict:
    from ace_interp.attribution.value import top_value_neurons, value_scores_for
    from ace_interp.editing import EditRequest, default_hparams, edit, second_moments
    from ace_interp.model import neuron_activations
    from ace_interp.model.architecture import hf_model
    from benchmarks.bench_gpu import build_random_bridge, random_corpus

    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    report: dict = {"shape": args.shape, "n_layers": args.n_layers, "dtype": args.dtype, "machine": machine_description(),
                    "load_average": os.getloadavg(), "memory_budget": args.memory_budget, "stages": {},
                    "stages_run": list(args.stages)}
    stages = report["stages"]

    def save() -> None:  # after every stage: a row cut short (memory, time) keeps what it measured
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(report, indent=1, default=str))
    with _RssSampler() as sampler:
        t = time.perf_counter()
        bridge, words = build_random_bridge(args.shape, "cpu", dtype, tiny=args.shape == "tiny", n_layers=args.n_layers)
        build_s = time.perf_counter() - t
    cfg = bridge.cfg
    n_params = sum(p.numel() for p in hf_model(bridge).parameters())
    report["model"] = {"d_model": cfg.d_model, "d_mlp": cfg.d_mlp, "d_vocab": cfg.d_vocab, "n_layers": cfg.n_layers,
                       "parameters": n_params, "parameter_bytes": n_params * dtype.itemsize,
                       "rss_mib": sampler.peak / 2**20, "build_s": build_s}
    log.info("built %s: %s", args.shape, report["model"])
    report["command"] = "python -m benchmarks.bench_shapes " + " ".join(args.argv)
    save()
    prompt = " ".join(words[(7 * j) % len(words)] for j in range(12))
    target = words[5]
    target_id = bridge.tokenizer.convert_tokens_to_ids(target)
    last = cfg.n_layers - 1

    if "value" in args.stages:
        acts = neuron_activations(bridge, [prompt])
        n = min(args.neurons, cfg.d_mlp)
        s, peak, _ = median_stage(lambda: value_scores_for(bridge, acts, 0, target_id, [(last, k) for k in range(n)],
                                                           memory_budget=args.memory_budget), args.repeat)
        stages["value_sample"] = {"seconds": s, "peak_mib": peak, "neurons": n, "seconds_per_neuron": s / n}
        save()
    if "topk" in args.stages:
        s, peak, top = median_stage(lambda: top_value_neurons(bridge, prompt, target, k=100, memory_budget=args.memory_budget),
                                    args.repeat)
        stages["top_k"] = {"seconds": s, "peak_mib": peak, "k": 100, "layers": cfg.n_layers, "seconds_per_layer": s / cfg.n_layers}
        save()

    corpus = random_corpus(words, args.cov_tokens)
    if "covariance" in args.stages:
        s, peak, _ = median_stage(lambda: second_moments(bridge, [last], corpus=corpus, n_tokens=args.cov_tokens,
                                                         progress=False, use_cache=False), 1)
        stages["covariance"] = {"seconds": s, "peak_mib": peak, "tokens": args.cov_tokens, "layer": last,
                                "seconds_per_1k_tokens": s * 1000 / args.cov_tokens}
        save()
    if "edit" in args.stages:
        os.environ["ACE_INTERP_CACHE"] = tempfile.mkdtemp(prefix="ace-bench-shapes-")  # statistics of this run only
        request = [EditRequest(f"{words[1]} {words[2]} {{}} {words[4]}", words[10], words[11], words[12])]
        cov = {"covariance.corpus": corpus, "covariance.n_tokens": args.cov_tokens, "covariance.progress": False,
               "target.v_num_grad_steps": args.edit_steps, "target.n_context": 0}
        plans = {"pmet": {"layers": (0,)}, "ace": {"query_layers": (0,), "value_layers": (last,)}}
        for method in args.edit_methods:
            layers = plans[method]
            hp = default_hparams(method, bridge, **cov, **layers)
            # cold: the written layers' key statistics are collected (then cached for the warm runs)
            s, peak, _ = median_stage(lambda: edit(bridge, request, method, hp).undo(), 1)
            stages[f"edit_{method}_cold"] = {"seconds": s, "peak_mib": peak, "process_peak_mib": process_peak_mib()}
            save()

            def once():
                applied = edit(bridge, request, method, hp)
                timings = dict(applied.info.get("timings", {}))
                applied.undo()
                return timings

            s, peak, timings = median_stage(once, args.edit_repeat)
            written = len(layers.get("layers", ())) or 2
            stages[f"edit_{method}"] = {"seconds": s, "peak_mib": peak, "written_layers": written, "timings": timings,
                                        "steps": args.edit_steps, "statistics": "cached", "cov_tokens": args.cov_tokens,
                                        "process_peak_mib": process_peak_mib()}
            save()
    report["wall_s"] = time.perf_counter() - t
    save()
    return report


def run_all(args: argparse.Namespace) -> list[dict]:
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    reports = []
    for shape, n_layers, dtype, with_edit in ALL_ROWS:
        out = out_dir / f"{shape}-L{n_layers}-{dtype}.json"
        if out.exists() and not args.force:
            reports.append(json.loads(out.read_text()))
            continue
        cmd = [sys.executable, "-m", "benchmarks.bench_shapes", "--shape", shape, "--n-layers", str(n_layers),
               "--dtype", dtype, "--out", str(out), "--repeat", str(args.repeat), "--neurons", str(args.neurons),
               "--cov-tokens", str(args.cov_tokens), "--edit-steps", str(args.edit_steps),
               "--edit-repeat", str(args.edit_repeat)] + ([] if with_edit else ["--no-edit"])
        log.info("running %s", " ".join(cmd))
        subprocess.run(cmd, check=False)
        if out.exists():
            reports.append(json.loads(out.read_text()))
    return reports


# ----------------------------------------------------------------------------- the memory model

GiB = 2**30
# The paper's edit plans: PMET's released GPT-J layers 3–8 (FIELD-NOTES), ACE's released groups
# GPT-J [[3..8], [23..25]] and Qwen3-8B [[25..27], [28..32]].
WRITTEN_LAYERS = {"gptj-6b": {"pmet": 6, "ace": 9}, "qwen3-8b": {"pmet": 6, "ace": 8}}


def memory_model(shape: str, weight_bytes: int = 2, budget: int = 4 * GiB, batch_tokens: int = 64 * 128,
                 prompts: int = 8, written: dict[str, int] | None = None) -> dict:
    """Predicted peak bytes on one device for the full `shape` (formulas in benchmarks/RESULTS.md):

        weights      W = N_params · b
        attribution  W + B + 20·L·V·P           (a [rows × vocab] P chunk + its float32 exp block ≤ B, and per
                                                 prompt and layer a float64 log-softmax and float32 log p / p rows)
        statistics   W + n·8f² + n·T·f·b + 1024·f·8   (n written layers collected in one pass: float64 sums,
                                                 T = batch tokens of hooked keys, one float64 key chunk)
        edit         W + n·4f² + 16f²           (per written layer C in float32; one layer's float64 copy and its
                                                 Cholesky factor at a time, `memit.spread_write`)
    """
    from ace_interp.model.random_init import FULL_SIZE_CONFIGS
    from transformers import AutoModelForCausalLM

    config = FULL_SIZE_CONFIGS[shape]()
    with torch.device("meta"):
        n_params = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
    f = config.intermediate_size if hasattr(config, "intermediate_size") and config.intermediate_size else 4 * config.n_embd
    W = n_params * weight_bytes
    L, V = config.num_hidden_layers, config.vocab_size
    out = {"parameters": n_params, "d_mlp": f, "weights_gib": W / GiB,
           "attribution_gib": (W + budget + 20 * L * V * prompts) / GiB}
    for method, n in (written or WRITTEN_LAYERS[shape]).items():
        out[f"statistics_{method}_gib"] = (W + n * 8 * f * f + n * batch_tokens * f * weight_bytes + 1024 * f * 8) / GiB
        out[f"edit_{method}_gib"] = (W + n * 4 * f * f + 16 * f * f) / GiB
    return out


def render_table(reports: list[dict]) -> str:
    """The measured rows as Markdown (medians; CPU peaks are RSS lower bounds), with the full-depth extrapolation
    of the value sweep: seconds per neuron × n_layers × d_mlp of the full model."""
    full_layers = {"qwen3-0.6b": 28, "gptj-6b": 28, "qwen3-8b": 36, "tiny": 2}
    lines = ["| shape (layers built) | dtype | params built | RSS after build | value scores: s / 1k neurons (peak MiB) "
             "| full sweep, full depth, 1 prompt (extrapolated) | top-100: s per layer (peak MiB) | covariance: s / 1k tokens "
             "| PMET 1 layer: cold / warm s (targets, solve; process peak MiB) | ACE 2 layers: cold / warm s (targets, solve; "
             "process peak MiB) | load avg |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in reports:
        m, st = r["model"], r["stages"]
        value = top = cov = sweep = "–"
        if "value_sample" in st:
            v = st["value_sample"]
            value = "%.1f (%s)" % (v["seconds_per_neuron"] * 1000, format(round(v["peak_mib"]), ","))
            sweep = "%s min" % format(round(v["seconds_per_neuron"] * full_layers[r["shape"]] * m["d_mlp"] / 60), ",")
        if "top_k" in st:
            top = "%.2f (%s)" % (st["top_k"]["seconds_per_layer"], format(round(st["top_k"]["peak_mib"]), ","))
        if "covariance" in st:
            cov = "%.0f" % st["covariance"]["seconds_per_1k_tokens"]
        edits = []
        for method in ("pmet", "ace"):
            if f"edit_{method}_cold" not in st:
                edits.append("–")
                continue
            cold, warm = st[f"edit_{method}_cold"], st.get(f"edit_{method}")  # a row cut short may lack the warm run
            if warm is None:
                edits.append("%.0f / – (cold only; %s)" % (cold["seconds"], format(round(cold["process_peak_mib"]), ",")))
                continue
            t = warm["timings"]
            peak = warm.get("process_peak_mib")
            edits.append("%.0f / %.0f (%.0f, %.1f%s)" % (cold["seconds"], warm["seconds"], t.get("targets", 0), t.get("solve", 0),
                                                       "" if peak is None else "; " + format(round(peak), ",")))
        stages_run = r.get("stages_run", list(STAGES))
        label = "" if stages_run == list(STAGES) else " " + "+".join(stages_run)
        lines.append("| %s (%d)%s | %s | %.2f B | %s MiB | %s | %s | %s | %s | %s | %s | %.0f |" % (
            r["shape"], m["n_layers"], label, r["dtype"], m["parameters"] / 1e9, format(round(m["rss_mib"]), ","), value,
            sweep, top, cov, edits[0], edits[1], r["load_average"][0]))
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="every row of ALL_ROWS, one subprocess each")
    parser.add_argument("--shape", default="tiny", choices=["tiny", "qwen3-0.6b", "gptj-6b", "qwen3-8b"])
    parser.add_argument("--n-layers", type=int, default=2)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--neurons", type=int, default=512, help="neurons of the value-score sample")
    parser.add_argument("--memory-budget", type=int, default=256 * 2**20)
    parser.add_argument("--cov-tokens", type=int, default=1000)
    parser.add_argument("--edit-steps", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each attribution stage (median)")
    parser.add_argument("--edit-repeat", type=int, default=1, help="runs of each edit (median)")
    parser.add_argument("--no-edit", action="store_true", help="drop the edit stage (same as leaving it out of --stages)")
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("--edit-methods", nargs="+", default=["pmet", "ace"], choices=["pmet", "ace"])
    parser.add_argument("--force", action="store_true", help="--all: rerun rows whose JSON exists")
    parser.add_argument("--table", action="store_true", help="print the Markdown table of the JSONs in --out-dir")
    parser.add_argument("--out", default=None)
    parser.add_argument("--out-dir", default="results/bench-shapes")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.no_edit:
        args.stages = [s for s in args.stages if s != "edit"]
    if "ace" in args.edit_methods and "edit" in args.stages and args.n_layers < 2:
        parser.error("the ACE edit writes the first and the last layer: give --n-layers 2 or more (or --edit-methods pmet)")
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    if args.table:
        reports = [json.loads(p.read_text()) for p in sorted(Path(args.out_dir).glob("*.json")) if p.name != "run.json"]
        print(render_table(reports))
        return reports
    if args.all:
        return run_all(args)
    report = run_one(args)
    print(json.dumps(report, indent=1, default=str))
    return [report]


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    main(sys.argv[1:])
