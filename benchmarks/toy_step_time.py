"""Seconds per training step of the toy models on this machine, for sizing CPU recipes.

    python -m benchmarks.toy_step_time [--threads 2] [--steps 20]

Times `--steps` optimiser steps (after 5 warm-up steps) of `ace_interp.data.train_toy` for both architectures
at 6 and 4 layers and batches of 256 and 128, on the default world, and prints one row per setting. The
15-minute CPU recipe (`experiments/sweeps/cpu15.txt`) is sized from these numbers.
"""

from __future__ import annotations

import argparse
import logging
import time

import pandas as pd
import torch

from ace_interp.data.tokenizer import world_tokenizer
from ace_interp.data.train_toy import BatchSampler, TrainConfig, build_model, encode_examples, optimiser_step
from ace_interp.data.world import generate_world, training_examples

log = logging.getLogger(__name__)


def step_seconds(cfg: TrainConfig, sets, vocab_size: int, steps: int, warmup: int = 5) -> float:
    """Mean wall-clock seconds of one training step (`train_toy.optimiser_step`) at `cfg`'s size and batch."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, vocab_size)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    sampler = BatchSampler(sets, cfg.kind_weights, cfg.batch_size, cfg.seed)
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        optimiser_step(model, opt, *sampler.next())
    return (time.perf_counter() - start) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    world = generate_world()
    tokenizer = world_tokenizer(world)
    sets = {k: encode_examples(tokenizer, v) for k, v in training_examples(world).items()}
    rows = []
    for arch in ("gptj", "qwen3"):
        for n_layers in (6, 4):
            for batch_size in (256, 128):
                cfg = TrainConfig(arch=arch, n_layers=n_layers, batch_size=batch_size)
                s = step_seconds(cfg, sets, len(tokenizer), args.steps)
                rows.append({"arch": arch, "n_layers": n_layers, "batch_size": batch_size, "threads": args.threads,
                             "s_per_step": round(s, 3), "steps_in_12_min": int(720 / s)})
                log.info("%s", rows[-1])
    print(pd.DataFrame(rows).to_markdown(index=False))


if __name__ == "__main__":
    main()
