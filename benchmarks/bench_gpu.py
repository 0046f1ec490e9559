"""GPU timing on full-size random models (GPT-J-6B and Qwen3-8B shapes, bf16): attribution and editing.

    python -m benchmarks.bench_gpu [--shapes gptj-6b qwen3-8b] [--prompts 8] [--budget-s 170] [--out FILE]
    python -m benchmarks.bench_gpu --dry-run --out /tmp/bench_gpu.md                 # CPU smoke test (tiny shapes)

Per shape, in one process: build the model from its config with random weights directly on the device
(bf16), wrap it in a TransformerBridge without touching the disk, then

  * attribution, the stages of `bench_attribution` on one batch of prompts: (c) forward and
    forward+backward, (a) exact all-neuron value scores, (a0) the direct path on one layer (extrapolated),
    (b) the per-neuron loop on samples (extrapolated), (d) exact top-100; seconds per attributed prompt;
  * covariance: key statistics of the last PMET layer over `--cov-tokens` tokens, no cache (seconds per 1k tokens);
  * editing: one PMET edit with cold key statistics (a temporary statistics cache; corpus = random word
    sequences, `--cov-tokens` tokens) and the same edit warm, then a warm batch of 4 edits; seconds per edit;
    then one ACE edit (its default query and value groups).
The Markdown table goes to `--out`, the same numbers as JSON beside it (`.json`).

Timing only: random weights carry no knowledge, so no quality is claimed. Every stage runs under its own
error guard (a failure is written into the table and the next stage or shape goes on), stages that would
start after `--budget-s` seconds are skipped and marked so, and the Markdown table is rewritten to `--out`
after every stage, so a run cut short still leaves what it measured. `--tiny` builds the same depths
(28 / 36 layers) with tiny widths and vocabularies, for checking this script on a CPU.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from benchmarks.bench_attribution import measure_attribution, prompt_batch
from benchmarks.common import Measurement, machine_description, markdown_table, measure

log = logging.getLogger(__name__)

SHAPES = ("gptj-6b", "qwen3-8b")
SPECIAL_IDS = dict(bos_token_id=1, eos_token_id=2, pad_token_id=3)  # `word_level_tokenizer`'s special tokens


def tiny_config(shape: str):
    """The shape's architecture and depth with tiny widths (CPU smoke test of this script)."""
    from transformers import GPTJConfig, Qwen3Config

    if shape == "tiny":  # bench_shapes' smoke test: a small Qwen3
        return Qwen3Config(
            vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=8, max_position_embeddings=256, tie_word_embeddings=False,
        )
    if shape == "gptj-6b":
        return GPTJConfig(vocab_size=600, n_positions=256, n_embd=64, n_layer=28, n_head=4, rotary_dim=8)
    if shape == "qwen3-8b":
        return Qwen3Config(
            vocab_size=700, hidden_size=64, intermediate_size=192, num_hidden_layers=36, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, max_position_embeddings=256, tie_word_embeddings=False,
        )
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def build_random_bridge(shape: str, device: str, dtype: torch.dtype, tiny: bool, n_layers: int | None = None):
    """A random-weight model of `shape` built on `device` in `dtype` and wrapped in a bridge (`n_layers`: a
    slice of that depth, same widths). Only the config and the word-level tokenizer go to disk
    (TransformerLens reloads the tokenizer by path); the weights never do. Returns the bridge and the
    tokenizer's words (w0, w1, ...)."""
    from transformers import AutoModelForCausalLM

    from ace_interp.model import load_model
    from ace_interp.model.random_init import FULL_SIZE_CONFIGS, word_level_tokenizer

    config = tiny_config(shape) if tiny else FULL_SIZE_CONFIGS[shape]()
    if n_layers is not None:
        config.num_hidden_layers = n_layers  # GPTJConfig maps num_hidden_layers to n_layer
        if getattr(config, "layer_types", None):  # Qwen3: one attention type per layer, validated against the depth
            config.layer_types = config.layer_types[:n_layers]
    for key, value in SPECIAL_IDS.items():
        setattr(config, key, value)
    words = [f"w{i}" for i in range(config.vocab_size - len(SPECIAL_IDS) - 1)]
    folder = Path(tempfile.mkdtemp(prefix=f"random-{shape}-"))
    config.save_pretrained(folder)
    word_level_tokenizer(words).save_pretrained(folder)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.eval()
    bridge = load_model(folder, device=device, dtype=dtype, hf_model=model)
    return bridge, words


def random_corpus(words: list[str], n_tokens: int, seed: int = 0):
    """Covariance text for a random model: word sequences of 100 words (no sampling from the model)."""
    from ace_interp.editing import TextCorpus

    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(len(words), (n_tokens // 100 + 1, 100), generator=gen).tolist()
    return TextCorpus.from_texts("random-words", [" ".join(words[i] for i in row) for row in ids])


def edit_requests(words: list[str], k: int):
    from ace_interp.editing import EditRequest

    return [EditRequest(f"{words[1]} {words[2]} {{}} {words[4]} {words[5]}", words[10 + 7 * i], words[11 + 7 * i], words[12 + 7 * i]) for i in range(k)]


@dataclass
class ShapeReport:
    shape: str
    rows: list[Measurement] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # ratios, seconds per prompt / edit, errors, skips


@dataclass
class Runner:
    """Runs stages under an error guard and a time budget, rewriting the Markdown report after each."""

    args: argparse.Namespace
    start: float
    reports: list[ShapeReport] = field(default_factory=list)

    def remaining(self) -> float:
        if self.args.deadline is not None:  # a wall-clock deadline set by the caller (gpu_check.sh)
            return self.args.deadline - time.time()
        return self.args.budget_s - (time.perf_counter() - self.start)

    def stage(self, report: ShapeReport, name: str, needs_s: float, fn: Callable[[], object]) -> object | None:
        if self.remaining() < needs_s:
            report.lines.append(f"{name}: skipped (time budget: {self.remaining():.0f} s left, needs ~{needs_s:.0f} s)")
            self.write()
            return None
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 -- one stage's failure must not stop the others
            log.error("%s / %s failed:\n%s", report.shape, name, traceback.format_exc())
            report.lines.append(f"{name}: ERROR {type(e).__name__}: {str(e)[:300]}")
            return None
        finally:
            self.write()

    def write(self) -> None:
        text = render(self.args, self.reports, time.perf_counter() - self.start)
        if self.args.out:
            Path(self.args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(self.args.out).write_text(text)
            # the same numbers as JSON (timing and peak memory per stage), for scripts
            Path(self.args.out).with_suffix(".json").write_text(json.dumps({
                "command": "python -m benchmarks.bench_gpu " + " ".join(self.args.argv), "machine": machine_description(),
                "elapsed_s": time.perf_counter() - self.start,
                "shapes": [{"shape": r.shape, "lines": r.lines, "stages": [asdict(m) for m in r.rows]} for r in self.reports],
            }, indent=1, default=str))


def render(args: argparse.Namespace, reports: list[ShapeReport], elapsed: float) -> str:
    import transformers

    from importlib.metadata import PackageNotFoundError, version

    try:
        tl_version = version("transformer-lens")
    except PackageNotFoundError:  # pragma: no cover
        tl_version = "?"
    out = [
        f"# GPU benchmark ({'tiny smoke test' if args.tiny else 'full-size random models'}, {args.dtype})",
        "",
        f"Machine: {machine_description()}; transformers {transformers.__version__}, transformer_lens {tl_version}.",
        f"Command: `python -m benchmarks.bench_gpu {' '.join(args.argv)}`; {elapsed:.0f} s in the benchmark process.",
        "Random weights: timing only, no quality claimed.",
    ]
    for r in reports:
        out += ["", f"## {r.shape}", "", markdown_table(r.rows) if r.rows else "(no stage measured)", ""]
        out += [f"- {line}" for line in r.lines]
    return "\n".join(out) + "\n"


def run_shape(runner: Runner, shape: str) -> None:
    args = runner.args
    report = ShapeReport(shape)
    runner.reports.append(report)
    device, dtype = args.device, getattr(torch, args.dtype)
    built: dict = {}

    def build():
        t = time.perf_counter()
        m = measure(f"build random {shape} on {device} ({args.dtype}) + bridge", lambda: built.update(zip(("bridge", "words"), build_random_bridge(shape, device, dtype, args.tiny))), device)
        cfg = built["bridge"].cfg
        m.note = f"{cfg.n_layers} layers x {cfg.d_mlp} neurons, d_model {cfg.d_model}, vocab {cfg.d_vocab}"
        report.rows.append(m)
        log.info("%s built in %.1f s", shape, time.perf_counter() - t)

    runner.stage(report, "build", 20, build)
    if "bridge" not in built:
        return
    bridge, words = built["bridge"], built["words"]

    def attribution():
        prompts, targets = prompt_batch(args.prompts, words)
        res = measure_attribution(bridge, prompts, targets, n_reference=args.reference_neurons, direct_layers=1,
                                  memory_budget=args.memory_budget, rows=report.rows)
        for name, value in res.ratios.items():
            report.lines.append(f"{name}: {value:.3f}{' s' if name.startswith('seconds') else 'x'}")
        report.lines.append(f"top-100 sets identical (d) vs (a): {res.top_sets_identical}")
        report.lines.append(f"max |(a) - (b) reference|: {res.max_error:.2e} nats; max |(a) - float64|: {res.max_error64:.2e} nats ({args.dtype} weights)")

    runner.stage(report, "attribution", 25, attribution)

    if not args.no_edit:
        from ace_interp.editing import default_hparams, edit

        hp = default_hparams("pmet", bridge)
        hp = replace(hp, covariance=replace(hp.covariance, corpus=random_corpus(words, args.cov_tokens), n_tokens=args.cov_tokens, progress=False))
        layers = getattr(hp, "layers", None)

        def edit_stage(label: str, k: int):
            def go():
                info = {}

                def once():
                    applied = edit(bridge, edit_requests(words, k), "pmet", hp)
                    info["timings"] = applied.info.get("timings")
                    applied.undo()

                m = measure(f"PMET edit, {label}, {k} request(s)", once, device)
                m.note = f"{m.seconds / k:.2f} s per edit; layers {layers}; {args.cov_tokens} covariance tokens"
                report.rows.append(m)
                if info.get("timings"):
                    report.lines.append(f"PMET {label} x{k} stages (s): {info['timings']}")
                report.lines.append(f"seconds per edit ({label}, batch of {k}): {m.seconds / k:.2f} s")

            return go

        def covariance_stage():
            from ace_interp.editing import second_moments

            layer = max(layers)
            corpus = random_corpus(words, args.cov_tokens, seed=1)
            m = measure(f"covariance, layer {layer}, {args.cov_tokens} tokens", lambda: second_moments(
                bridge, [layer], corpus=corpus, n_tokens=args.cov_tokens, progress=False, use_cache=False), device)
            m.note = f"{m.seconds * 1000 / args.cov_tokens:.3f} s per 1k tokens; d_mlp {bridge.cfg.d_mlp}"
            report.rows.append(m)

        runner.stage(report, "covariance", 20, covariance_stage)
        runner.stage(report, "edit (cold statistics)", 40, edit_stage("cold statistics", 1))
        runner.stage(report, "edit (warm)", 15, edit_stage("warm statistics", 1))
        runner.stage(report, "edit batch (warm)", 20, edit_stage("warm statistics", 4))

        def ace_stage():
            ace = default_hparams("ace", bridge)
            ace = replace(ace, covariance=replace(ace.covariance, corpus=random_corpus(words, args.cov_tokens),
                                                  n_tokens=args.cov_tokens, progress=False))
            info = {}

            def once():
                applied = edit(bridge, edit_requests(words, 1), "ace", ace)
                info["timings"] = applied.info.get("timings")
                applied.undo()

            m = measure("ACE edit, 1 request (statistics cold for its layers)", once, device)
            m.note = f"query {ace.query_layers}, value {ace.value_layers}"
            report.rows.append(m)
            if info.get("timings"):
                report.lines.append(f"ACE x1 stages (s): {info['timings']}")

        runner.stage(report, "ACE edit", 40, ace_stage)
    del bridge
    built.clear()
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=SHAPES)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--tiny", action="store_true", help="tiny widths, same depths: a smoke test of this script")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--reference-neurons", type=int, default=128)
    parser.add_argument("--memory-budget", type=int, default=4 * 2**30, help="bytes per [neurons x vocab] block")
    parser.add_argument("--cov-tokens", type=int, default=20_000, help="covariance tokens of the cold edit")
    parser.add_argument("--no-edit", action="store_true")
    parser.add_argument("--budget-s", type=float, default=170.0, help="a stage starts only if its estimated "
                        "duration fits in what is left of this many seconds")
    parser.add_argument("--deadline", type=float, default=None, help="unix time replacing --budget-s (set by gpu_check.sh)")
    parser.add_argument("--out", default=os.path.join(os.environ["OUT"], "bench_gpu.md") if os.environ.get("OUT") else None)
    parser.add_argument("--dry-run", action="store_true", help="CPU smoke test of every stage: --device cpu --tiny "
                        "with small budgets (what the tests run)")
    args = parser.parse_args(argv)
    args.argv = list(argv)
    if args.dry_run:
        args.device, args.tiny = "cpu", True
        args.prompts, args.reference_neurons, args.cov_tokens = min(args.prompts, 3), min(args.reference_neurons, 8), 500
    return args


def run(argv: list[str] | None = None) -> list[ShapeReport]:
    """Run the benchmark with these command-line arguments (none: the defaults)."""
    args = parse_args([] if argv is None else argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("\n## GPU: skipped (no CUDA device)")
        return []
    # statistics of the cold edit go to a fresh cache folder, never the user's (restored afterwards)
    saved_cache = os.environ.get("ACE_INTERP_CACHE")
    os.environ["ACE_INTERP_CACHE"] = tempfile.mkdtemp(prefix="ace-bench-gpu-")
    runner = Runner(args, time.perf_counter())
    try:
        for shape in args.shapes:
            run_shape(runner, shape)
    finally:
        if saved_cache is None:
            os.environ.pop("ACE_INTERP_CACHE", None)
        else:
            os.environ["ACE_INTERP_CACHE"] = saved_cache
    runner.write()
    print(render(args, runner.reports, time.perf_counter() - runner.start))
    return runner.reports


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    run(sys.argv[1:])
