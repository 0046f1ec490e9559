"""Train the synthetic-world toy models (GPT-J-style and Qwen3-style) and evaluate them.

    python -m ace_interp.data.train_toy --arch gptj --out assets/toy-gptj [--steps N] [--seed 0]
    python -m ace_interp.data.train_toy --arch qwen3 --out assets/toy-qwen3 --write-world assets/world
    python -m ace_interp.data.train_toy --arch gptj --out OUT --recipe cpu15     (15 minutes on 2 CPU cores)

Deterministic (seeded world, init, batches; fixed thread count), tqdm progress bar, periodic evaluation
through `logging`. Training stops at `--steps` or, with `--stop-at-bars` (default on), at the first periodic
evaluation whose sampled accuracies clear the acceptance bars with a margin. The output folder is a plain HF
checkpoint (config, model.safetensors, tokenizer) that `ace_interp.load_model(folder)` boots, plus
`metrics.json` (full evaluation on the eval split) and `training.json` (configs, steps, wall time).

Training items are [BOS] + prompt + target; the loss is the cross-entropy of the target tokens only
(the answer word, or the whole chain of thought + [EOS]), averaged per item. Each batch mixes the kinds of
`ace_interp.data.world.KINDS` with `TrainConfig.kind_weights`.

`evaluate(model, tokenizer, split)` scores greedy next-token answers: direct prompts are right when the
argmax after the prompt is the answer token; chain-of-thought prompts when every token of the chain (and
the final [EOS]) is the argmax given the chain so far -- exactly "greedy decoding reproduces the chain".
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import GPTJConfig, GPTJForCausalLM, PreTrainedModel, Qwen3Config, Qwen3ForCausalLM

from ace_interp.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, encode_example, pad_batch, world_tokenizer
from ace_interp.data.world import (
    KINDS,
    Example,
    World,
    WorldConfig,
    eval_split,
    generate_world,
    load_world,
    save_world_assets,
    training_examples,
)

log = logging.getLogger(__name__)

ARCHS = ("gptj", "qwen3")
# Acceptance bars of the shipped models (metrics.json keys)
BARS = {"single_hop": 0.995, "two_hop_direct_heldout": 0.95, "cot_heldout": 0.99}
# Early-stop margins over the bars, on the sampled periodic evaluation
STOP_BARS = {"single_hop": 0.999, "two_hop_direct_heldout": 0.975, "cot_heldout": 0.998}


@dataclass
class TrainConfig:
    arch: str = "gptj"
    n_layers: int = 6
    d_model: int = 128
    d_mlp: int | None = None  # None: 512 (gptj), 384 (qwen3, gated: three matrices)
    n_heads: int = 4
    steps: int = 3000
    batch_size: int = 128
    lr: float = 2e-3
    warmup: int = 100
    min_lr_ratio: float = 0.05
    # "item": target-token cross-entropy averaged within each item, then over the batch (every item weighs the
    # same); "token": averaged over all target tokens of the batch, so a long chain of thought weighs by its length
    loss_per: str = "item"
    weight_decay: float = 0.1
    kind_weights: dict[str, float] = field(default_factory=lambda: {
        "single_hop": 0.47, "two_hop_direct": 0.28, "three_hop_direct": 0.14, "two_hop_cot": 0.06, "three_hop_cot": 0.05,
    })
    eval_every: int = 100
    eval_sample: int = 400  # items per kind in periodic evaluations
    stop_at_bars: bool = True
    seed: int = 0
    threads: int = 1  # one thread: on a shared (contended) CPU two threads were up to 6x slower per step
    time_limit_s: float | None = None
    stop_after: int | None = None  # stop after this many steps while the lr schedule still spans `steps`
    init_from: str | None = None  # continue from a saved toy model (same world and architecture)
    device: str = "cpu"  # "cuda" trains on a GPU (not bit-identical to a CPU run of the same seed)
    world: WorldConfig = field(default_factory=WorldConfig)

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise ValueError(f"unknown architecture {self.arch!r}; expected one of {ARCHS}")
        if self.d_mlp is None:
            self.d_mlp = 512 if self.arch == "gptj" else 384
        if isinstance(self.world, dict):
            self.world = WorldConfig(**self.world)
        if self.loss_per not in ("item", "token"):
            raise ValueError(f"loss_per must be 'item' or 'token', got {self.loss_per!r}")
        bad = set(self.kind_weights) - set(KINDS)
        if bad:
            raise ValueError(f"unknown kinds in kind_weights: {sorted(bad)}; known: {KINDS}")


# The 15-minute CPU recipes (`--recipe cpu15`; assets/README.md, "The 15-minute CPU reproduction"): the best of
# 72 GPU sweep runs (results/toy-cpu15-sweep/sweep.csv), sized so that training fits 900 s on 2 idle cores. They meet
# the bars on about half the seeds (GPU: gptj 4 of 8, qwen3 4 of 7; CPU, seed 0: both); CoT is the bar they miss,
# by up to 0.6 points.
_CPU15_COMMON = dict(batch_size=128, lr=3e-3, weight_decay=1.0, warmup=300, eval_every=400, threads=2,
                     time_limit_s=900.0)
CPU15_RECIPES: dict[str, dict[str, Any]] = {
    "gptj": dict(_CPU15_COMMON, n_layers=3, steps=3500, kind_weights={
        "single_hop": 0.40, "two_hop_direct": 0.28, "three_hop_direct": 0.12, "two_hop_cot": 0.11, "three_hop_cot": 0.09}),
    "qwen3": dict(_CPU15_COMMON, n_layers=4, steps=2800, kind_weights={
        "single_hop": 0.37, "two_hop_direct": 0.26, "three_hop_direct": 0.12, "two_hop_cot": 0.14, "three_hop_cot": 0.11}),
}
CPU15_WORLD = dict(n_persons=300)


def cpu15_config(arch: str, **overrides) -> TrainConfig:
    """The 15-minute CPU recipe for `arch` as a TrainConfig (300-person default world); `overrides` replace fields."""
    if arch not in CPU15_RECIPES:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {tuple(CPU15_RECIPES)}")
    return TrainConfig(**{"arch": arch, **CPU15_RECIPES[arch], "world": WorldConfig(**CPU15_WORLD), **overrides})


def build_model(cfg: TrainConfig, vocab_size: int) -> PreTrainedModel:
    """A freshly initialised GPT-J-style (parallel attention+MLP, LayerNorm) or Qwen3-style (gated MLP,
    RMSNorm, sequential) causal LM; untied embeddings, no dropout; special ids inside the vocabulary."""
    ids = dict(bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID)
    head_dim = cfg.d_model // cfg.n_heads
    if cfg.arch == "gptj":
        config = GPTJConfig(
            vocab_size=vocab_size, n_positions=128, n_embd=cfg.d_model, n_layer=cfg.n_layers, n_head=cfg.n_heads,
            n_inner=cfg.d_mlp, rotary_dim=head_dim // 2, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
            tie_word_embeddings=False, **ids,
        )
        return GPTJForCausalLM(config)
    config = Qwen3Config(
        vocab_size=vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_mlp, num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_heads, head_dim=head_dim,
        max_position_embeddings=128, tie_word_embeddings=False, attention_dropout=0.0, **ids,
    )
    return Qwen3ForCausalLM(config)


# ----------------------------------------------------------------------------- batches


@dataclass
class EncodedSet:
    """Examples of one kind as token rows plus the index where each target starts."""

    rows: list[list[int]]
    starts: list[int]


def encode_examples(tokenizer, examples: Sequence[Example]) -> EncodedSet:
    rows, starts = [], []
    for ex in examples:
        r, s = encode_example(tokenizer, ex.prompt, ex.target, eos=ex.kind.endswith("cot"))
        rows.append(r)
        starts.append(s)
    return EncodedSet(rows, starts)


def make_batch(rows: Sequence[list[int]], starts: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and a target mask over *predicting positions*: mask[i, t] says logits at t must
    predict token t+1, a target token."""
    ids = pad_batch(rows)
    mask = torch.zeros_like(ids, dtype=torch.bool)
    for i, (r, s) in enumerate(zip(rows, starts, strict=True)):
        mask[i, s - 1 : len(r) - 1] = True
    return ids, mask


def target_logits(model: PreTrainedModel, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Logits at the masked (predicting) positions only: the unembedding runs on those rows alone."""
    hidden = model.base_model(input_ids=ids).last_hidden_state
    return model.get_output_embeddings()(hidden[mask])


def item_loss(model: PreTrainedModel, ids: torch.Tensor, mask: torch.Tensor, per: str = "item") -> torch.Tensor:
    """Target-token cross-entropy, averaged within each item, then over the batch (`per="item"`), or over all
    target tokens of the batch (`per="token"`)."""
    logits = target_logits(model, ids, mask)
    labels = ids[:, 1:][mask[:, :-1]]
    tok_loss = F.cross_entropy(logits, labels, reduction="none")
    if per == "token":
        return tok_loss.mean()
    item = mask.nonzero()[:, 0]
    per_item = torch.zeros(ids.shape[0], device=ids.device).index_add_(0, item, tok_loss)
    return (per_item / mask.sum(1).clamp(min=1)).mean()


class BatchSampler:
    """Seeded batches mixing kinds by weight; a pool of `pool` batches is sorted by length and cut into
    batches so that little compute goes to padding (the batch order is shuffled)."""

    def __init__(self, sets: dict[str, EncodedSet], weights: dict[str, float], batch_size: int, seed: int,
                 pool: int = 4):
        self.kinds = [k for k in weights if k in sets and weights[k] > 0]
        if not self.kinds:
            raise ValueError("no training kind has both examples and a positive weight")
        total = sum(weights[k] for k in self.kinds)
        self.probs = [weights[k] / total for k in self.kinds]
        self.sets, self.batch_size, self.pool = sets, batch_size, pool
        self.rng = random.Random(seed)
        self.queue: list[tuple[list[list[int]], list[int]]] = []

    def _refill(self) -> None:
        n = self.batch_size * self.pool
        kinds = self.rng.choices(self.kinds, weights=self.probs, k=n)
        items = []
        for k in kinds:
            s = self.sets[k]
            j = self.rng.randrange(len(s.rows))
            items.append((s.rows[j], s.starts[j]))
        items.sort(key=lambda it: len(it[0]))
        batches = [items[i : i + self.batch_size] for i in range(0, n, self.batch_size)]
        self.rng.shuffle(batches)
        self.queue = [([r for r, _ in b], [s for _, s in b]) for b in batches]

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.queue:
            self._refill()
        rows, starts = self.queue.pop()
        return make_batch(rows, starts)


# ----------------------------------------------------------------------------- evaluation


def _as_hf(model) -> PreTrainedModel:
    if isinstance(model, PreTrainedModel):
        return model
    from ace_interp.model.architecture import hf_model

    return hf_model(model)  # a TransformerBridge


@torch.no_grad()
def correct(model, tokenizer, examples: Sequence[Example], batch_size: int = 512) -> list[bool]:
    """Per example: greedy decoding reproduces the target (answer word; or chain of thought + [EOS])."""
    hf = _as_hf(model)
    was_training = hf.training
    hf.eval()
    enc = encode_examples(tokenizer, examples)
    order = sorted(range(len(examples)), key=lambda i: len(enc.rows[i]))
    out = [False] * len(examples)
    device = next(hf.parameters()).device
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        ids, mask = make_batch([enc.rows[i] for i in idx], [enc.starts[i] for i in idx])
        ids, mask = ids.to(device), mask.to(device)
        pred = target_logits(hf, ids, mask).argmax(-1)
        labels = ids[:, 1:][mask[:, :-1]]
        hit = (pred == labels).long()
        item = mask.nonzero()[:, 0]
        n_wrong = torch.zeros(len(idx), dtype=torch.long, device=device).index_add_(0, item, 1 - hit)
        for j, i in enumerate(idx):
            out[i] = bool(n_wrong[j] == 0)
    hf.train(was_training)
    return out


def evaluate(
    model, tokenizer, split: dict[str, list[Example]], sample: int | None = None, seed: int = 0,
    batch_size: int = 512, by_path: bool = False,
) -> dict[str, Any]:
    """Accuracy by kind on `split` (e.g. `eval_split(world)` or `load_eval_split("assets/world")`), `sample`
    items per kind when given. Keys: single_hop, two_hop_direct_heldout, three_hop_direct_heldout,
    two_hop_cot_heldout, three_hop_cot_heldout, cot_heldout (2- and 3-hop pooled) -- "_heldout" names the
    items of held-out compositions; items of shown compositions count under "_shown" -- plus "n" (counts) and,
    with `by_path`, "by_path" (accuracy per relation path within each of those keys)."""
    rng = random.Random(seed)
    hits: dict[str, list[bool]] = {}
    path_hits: dict[str, dict[str, list[bool]]] = {}
    for kind, exs in split.items():
        if sample is not None and len(exs) > sample:
            exs = rng.sample(exs, sample)
        ok = correct(model, tokenizer, exs, batch_size)
        for ex, c in zip(exs, ok, strict=True):
            name = kind if kind == "single_hop" else f"{kind}_{'heldout' if ex.heldout else 'shown'}"
            hits.setdefault(name, []).append(c)
            if by_path:
                path_hits.setdefault(name, {}).setdefault("-".join(ex.path), []).append(c)
    for suffix in ("heldout", "shown"):
        pooled = hits.get(f"two_hop_cot_{suffix}", []) + hits.get(f"three_hop_cot_{suffix}", [])
        if pooled:
            hits[f"cot_{suffix}"] = pooled
    metrics: dict[str, Any] = {k: sum(v) / len(v) for k, v in sorted(hits.items())}
    metrics["n"] = {k: len(v) for k, v in sorted(hits.items())}
    if by_path:
        metrics["by_path"] = {
            k: {p: round(sum(v) / len(v), 4) for p, v in paths.items()} for k, paths in sorted(path_hits.items())
        }
    return metrics


def evaluate_folder(folder: str | os.PathLike, world_folder: str | os.PathLike | None = None) -> dict[str, Any]:
    """Full evaluation of a saved toy model on the shipped eval split (default: assets/world); also rewrites
    `folder/metrics.json`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ace_interp.data.world import load_eval_split

    folder = Path(folder)
    world_folder = Path(world_folder) if world_folder else Path(__file__).resolve().parents[2] / "assets" / "world"
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    metrics = evaluate(model, tokenizer, load_eval_split(world_folder), by_path=True)
    (folder / "metrics.json").write_text(json.dumps({**metrics, "meets_bars": meets_bars(metrics), "bars": BARS}, indent=1))
    return metrics


def meets_bars(metrics: dict[str, Any], bars: dict[str, float] = BARS) -> bool:
    return all(metrics.get(k, 0.0) >= v for k, v in bars.items())


# ----------------------------------------------------------------------------- training


def _lr_at(cfg: TrainConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


@dataclass
class TrainResult:
    model: PreTrainedModel
    tokenizer: Any
    world: World
    metrics: dict[str, Any]
    steps: int
    train_seconds: float
    cpu_seconds: float
    history: list[dict[str, Any]]


def optimiser_step(model: PreTrainedModel, opt: torch.optim.Optimizer, ids: torch.Tensor, mask: torch.Tensor,
                   loss_per: str = "item") -> float:
    """One training step on a batch: `item_loss`, backward, gradient norm clipped to 1, optimiser step."""
    loss = item_loss(model, ids, mask, loss_per)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss.item()


def train(cfg: TrainConfig, world: World | None = None, progress: bool = True) -> TrainResult:
    """Train a toy model on `world` (default: `generate_world(cfg.world)`); returns it with full metrics."""
    threads_before = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _train(cfg, world, progress)
    finally:
        torch.set_num_threads(threads_before)


def _train(cfg: TrainConfig, world: World | None, progress: bool) -> TrainResult:
    world = generate_world(cfg.world) if world is None else world
    tokenizer = world_tokenizer(world)
    t0, c0 = time.perf_counter(), time.process_time()
    sets = {k: encode_examples(tokenizer, v) for k, v in training_examples(world).items()}
    split = eval_split(world, heldout_only=True)
    log.info("training items: %s", {k: len(v.rows) for k, v in sets.items()})

    torch.manual_seed(cfg.seed)
    model = build_model(cfg, len(tokenizer))
    if cfg.init_from:
        from transformers import AutoModelForCausalLM

        init = AutoModelForCausalLM.from_pretrained(cfg.init_from, dtype=torch.float32)
        if type(init) is not type(model) or init.config.vocab_size != len(tokenizer):
            raise ValueError(f"{cfg.init_from} is a {type(init).__name__} with vocabulary {init.config.vocab_size}; "
                             f"expected {type(model).__name__} with {len(tokenizer)}")
        model = init
        log.info("continuing from %s", cfg.init_from)
    model.to(cfg.device)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("%s: %d layers, d_model %d, d_mlp %d, %.2fM parameters", type(model).__name__, cfg.n_layers,
             cfg.d_model, cfg.d_mlp, n_params / 1e6)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "norm" not in n and "ln_" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "norm" not in n and "ln_" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(0.9, 0.98),
    )
    sampler = BatchSampler(sets, cfg.kind_weights, cfg.batch_size, cfg.seed)
    model.train()
    history: list[dict[str, Any]] = []
    step = 0
    bar = tqdm(total=cfg.steps, disable=not progress, desc=f"train {cfg.arch}", mininterval=2.0)
    ema = None
    while step < cfg.steps:
        for g in opt.param_groups:
            g["lr"] = _lr_at(cfg, step)
        ids, mask = (t.to(cfg.device) for t in sampler.next())
        loss = optimiser_step(model, opt, ids, mask, cfg.loss_per)
        step += 1
        ema = loss if ema is None else 0.95 * ema + 0.05 * loss
        bar.update(1)
        bar.set_postfix(loss=f"{ema:.4f}", refresh=False)
        elapsed = time.perf_counter() - t0
        out_of_time = (cfg.time_limit_s is not None and elapsed > cfg.time_limit_s) or step == cfg.stop_after
        if step % cfg.eval_every == 0 or step == cfg.steps or out_of_time:
            m = evaluate(model, tokenizer, split, sample=cfg.eval_sample, seed=step)
            model.train()
            cpu = time.process_time() - c0
            history.append({"step": step, "seconds": round(elapsed, 1), "cpu_seconds": round(cpu, 1), "loss": ema,
                            **{k: v for k, v in m.items() if k != "n"}})
            log.info("step %d (%.0f s, cpu %.0f s) loss %.4f | %s", step, elapsed, cpu, ema,
                     " ".join(f"{k} {v:.3f}" for k, v in m.items() if k != "n"))
            if cfg.stop_at_bars and meets_bars(m, STOP_BARS):
                log.info("sampled accuracies clear the bars with margin at step %d: stopping", step)
                break
            if out_of_time:
                log.warning("stopping at step %d (time limit %s s, stop-after %s)", step, cfg.time_limit_s, cfg.stop_after)
                break
    bar.close()
    train_seconds = time.perf_counter() - t0
    cpu_seconds = time.process_time() - c0
    model.eval()
    metrics = evaluate(model, tokenizer, split, by_path=True)
    log.info("final (%d steps, %.0f s): %s", step, train_seconds,
             " ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k not in ("n", "by_path")))
    return TrainResult(model, tokenizer, world, metrics, step, train_seconds, cpu_seconds, history)


def save_result(result: TrainResult, cfg: TrainConfig, out: str | os.PathLike, command: str | None = None) -> Path:
    """Write the HF checkpoint (config, safetensors, tokenizer), metrics.json and training.json."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result.model.to("cpu").save_pretrained(out, safe_serialization=True)
    result.tokenizer.save_pretrained(out)
    metrics = {**result.metrics, "meets_bars": meets_bars(result.metrics), "bars": BARS}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    info = {
        "command": command,
        "config": asdict(cfg),
        "prepend_bos": True,  # items are [BOS] + prompt + target (`encode_example`); `load_model` reads this
        "steps_run": result.steps,
        "train_seconds": round(result.train_seconds, 1),
        "train_cpu_seconds": round(result.cpu_seconds, 1),
        "threads": cfg.threads,
        "device": torch.cuda.get_device_name() if cfg.device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "history": result.history,
    }
    (out / "training.json").write_text(json.dumps(info, indent=1))
    return out


def _kind_weights(text: str) -> dict[str, float]:
    """"single_hop=0.4,two_hop_direct=0.3" -> {"single_hop": 0.4, "two_hop_direct": 0.3} (`--kind-weights`)."""
    try:
        pairs = [item.split("=") for item in text.split(",") if item.strip()]
        weights = {k.strip(): float(v) for k, v in pairs}
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected kind=weight,kind=weight,...; got {text!r}") from e
    unknown = set(weights) - set(KINDS)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown kinds {sorted(unknown)}; known: {list(KINDS)}")
    return weights


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, TrainConfig]:
    """The command line of `main` as its arguments and the TrainConfig they describe (no world is generated)."""
    p = argparse.ArgumentParser(prog="python -m ace_interp.data.train_toy", description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", choices=ARCHS, required=True)
    p.add_argument("--out", required=True, help="output HF folder, e.g. assets/toy-gptj")
    p.add_argument("--steps", type=int, default=TrainConfig.steps)
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation and batches")
    p.add_argument("--world", help="world spec (world.json or its folder) to train on; default: generate it")
    p.add_argument("--world-seed", type=int, default=0)
    p.add_argument("--n-persons", type=int, default=WorldConfig.n_persons)
    p.add_argument("--distinct-nouns", action=argparse.BooleanOptionalAction, default=WorldConfig.distinct_nouns,
                   help="P17 (city -> country) says 'nation', not P27's 'country'")
    p.add_argument("--bridge-relations", action=argparse.BooleanOptionalAction,
                   default=WorldConfig.bridge_relations,
                   help="sports get P2283 equipment and cities P30/P37/P38, so every bridge has several continuations")
    p.add_argument("--sport-relations", action=argparse.BooleanOptionalAction,
                   default=WorldConfig.sport_relations,
                   help="sports get P30/P37/P38 (their origin's), so a person's sport has five continuations")
    p.add_argument("--write-world", help="also write the world assets (spec, eval split, MQuAKE cases) here")
    p.add_argument("--n-layers", type=int, default=TrainConfig.n_layers)
    p.add_argument("--d-model", type=int, default=TrainConfig.d_model)
    p.add_argument("--d-mlp", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    p.add_argument("--lr", type=float, default=TrainConfig.lr)
    p.add_argument("--weight-decay", type=float, default=TrainConfig.weight_decay)
    p.add_argument("--device", default="cpu", help="cpu, or cuda to train on a GPU")
    p.add_argument("--eval-every", type=int, default=TrainConfig.eval_every)
    p.add_argument("--no-stop-at-bars", action="store_true", help="run all --steps even once the bars are met")
    p.add_argument("--threads", type=int, default=TrainConfig.threads,
                   help="torch threads (2 is faster on an idle 2-core machine, much slower on a busy one)")
    p.add_argument("--time-limit", type=float, default=None, help="stop training after this many seconds")
    p.add_argument("--stop-after", type=int, default=None,
                   help="stop after this many steps; the learning-rate schedule still spans --steps")
    p.add_argument("--init-from", help="continue training a saved toy model (same world and architecture)")
    p.add_argument("--warmup", type=int, default=TrainConfig.warmup)
    p.add_argument("--min-lr-ratio", type=float, default=TrainConfig.min_lr_ratio,
                   help="the cosine schedule ends at this fraction of --lr")
    p.add_argument("--loss-per", choices=("item", "token"), default=TrainConfig.loss_per,
                   help="average the target-token loss per item (default) or over the batch's target tokens")
    p.add_argument("--kind-weights", type=_kind_weights, default=None,
                   help="batch mix, e.g. single_hop=0.4,two_hop_direct=0.28,three_hop_direct=0.12,two_hop_cot=0.11,"
                        "three_hop_cot=0.09 (default: TrainConfig.kind_weights)")
    p.add_argument("--recipe", choices=("cpu15",),
                   help="start from a named recipe; flags given explicitly override it. cpu15: the 15-minute CPU "
                        "recipe of --arch (CPU15_RECIPES, 300-person world; meets the bars on about half the seeds)")
    p.add_argument("--no-progress", action="store_true")
    known, _ = p.parse_known_args(argv)
    if known.recipe == "cpu15":
        recipe = dict(CPU15_RECIPES[known.arch])
        recipe["time_limit"] = recipe.pop("time_limit_s")  # the flag's name
        p.set_defaults(**recipe, **CPU15_WORLD)
    args = p.parse_args(argv)
    wcfg = load_world(args.world).config if args.world else WorldConfig(
        n_persons=args.n_persons, seed=args.world_seed, distinct_nouns=args.distinct_nouns,
        bridge_relations=args.bridge_relations, sport_relations=args.sport_relations,
    )
    cfg = TrainConfig(
        arch=args.arch, n_layers=args.n_layers, d_model=args.d_model, d_mlp=args.d_mlp, steps=args.steps,
        batch_size=args.batch_size, lr=args.lr, eval_every=args.eval_every, stop_at_bars=not args.no_stop_at_bars,
        seed=args.seed, threads=args.threads, time_limit_s=args.time_limit, stop_after=args.stop_after, world=wcfg, init_from=args.init_from,
        warmup=args.warmup, weight_decay=args.weight_decay, device=args.device, min_lr_ratio=args.min_lr_ratio,
        loss_per=args.loss_per,
        **({"kind_weights": args.kind_weights} if args.kind_weights else {}),
    )
    return args, cfg


def main(argv: Sequence[str] | None = None) -> int:
    args, cfg = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    world = load_world(args.world) if args.world else generate_world(cfg.world)
    if args.write_world:
        save_world_assets(world, args.write_world)
        log.info("world assets written to %s", args.write_world)
    result = train(cfg, world, progress=not args.no_progress)
    command = "python -m ace_interp.data.train_toy " + " ".join(argv if argv is not None else os.sys.argv[1:])
    save_result(result, cfg, args.out, command)
    print(json.dumps({k: v for k, v in result.metrics.items() if k not in ("n", "by_path")}, indent=1))
    print(f"steps {result.steps}, {result.train_seconds:.0f} s; saved to {args.out}; meets bars: "
          f"{meets_bars(result.metrics)}")
    return 0 if meets_bars(result.metrics) else 1


if __name__ == "__main__":
    raise SystemExit(main())
