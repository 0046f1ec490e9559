"""`make bench`: every benchmark in one run, each printing its table and ratios.

    python -m benchmarks.run_all [--quick]

The GPU section (full-size GPT-J-6B / Qwen3-8B shapes, random weights, bf16) runs only where CUDA is
present and is skipped otherwise.
"""

from __future__ import annotations

import argparse
import logging

import torch

from benchmarks import bench_attribution, bench_editing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="four prompts, fewer reference neurons, toy model edits only")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    bench_attribution.run("smollm2-135m", n_prompts=4 if args.quick else 8, n_reference=64 if args.quick else 256)
    bench_editing.run("toy-gptj", ks=(1, 10) if args.quick else (1, 10, 100))
    if not args.quick:
        # k = 100 on SmolLM2 is left out: the target optimisation is linear in k (≈ 6–16 s per edit on
        # 2 CPU cores, benchmarks/RESULTS.md), so it would add about an hour to this command
        bench_editing.run("smollm2-135m", ks=(1, 10))
    if torch.cuda.is_available():
        from benchmarks import bench_gpu

        bench_gpu.run([])
    else:
        print("\n## GPU: skipped (no CUDA device)")


if __name__ == "__main__":
    main()
