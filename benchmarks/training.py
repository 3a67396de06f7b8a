"""Training benchmark: `train_many` (batched seeds) against one-seed-at-a-time `train`.

    python benchmarks/training.py                 # 151 paper seeds, paper recipe (~1 min)
    python benchmarks/training.py --seeds 16      # fewer seeds
    python benchmarks/training.py --train-seeds 3 --chunk 32 --steps 3000

Prints a markdown table: seconds of `train` for one paper-size model (mean over
--train-seeds seeds), seconds of `train_many` for N seeds, seconds per seed and the speed-up
over N x `train` (extrapolated from the per-seed time of `train`). Both run single-threaded;
the 1-minute load average before and after is printed, since other processes on the
machine inflate the timings (more for whichever ran while they did).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from compact_proofs.model.batched_training import DEFAULT_CHUNK, train_many
from compact_proofs.model.seeds import PAPER_SEEDS
from compact_proofs.model.training import TrainingRecipe, train
from compact_proofs.model.transformer import ModelConfig


def load() -> str:
    """The 1-minute load average, or '?' where the platform has none."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "?"


def seed_list(n: int) -> list[int]:
    """The paper's first n seeds, then consecutive integers beyond its 151."""
    extra = [max(PAPER_SEEDS) + 1 + i for i in range(max(0, n - len(PAPER_SEEDS)))]
    return [*PAPER_SEEDS, *extra][:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=len(PAPER_SEEDS), help="N (default 151)")
    parser.add_argument("--train-seeds", type=int, default=2, help="seeds timed with `train`")
    parser.add_argument("--chunk", type=int, default=DEFAULT_CHUNK, help="seeds per group")
    parser.add_argument("--steps", type=int, default=TrainingRecipe().steps)
    args = parser.parse_args()
    if args.seeds < 1 or args.train_seeds < 1:
        parser.error("--seeds and --train-seeds must be positive")

    cfg, recipe = ModelConfig(), TrainingRecipe(steps=args.steps)
    seeds = seed_list(args.seeds)
    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}; training runs single-threaded"
    )
    load_before = load()
    train_many(cfg, seeds[:1], TrainingRecipe(steps=5))  # warm-up (lazy initialisation)

    start = time.perf_counter()
    for seed in seeds[: args.train_seeds]:
        train(cfg, seed, recipe)
    train_per_seed = (time.perf_counter() - start) / args.train_seeds

    start = time.perf_counter()
    train_many(cfg, seeds, recipe, chunk=args.chunk)
    many = time.perf_counter() - start
    load_after = load()

    n = len(seeds)
    print(f"machine: {machine}; load average (1 min) before {load_before}, after {load_after}")
    print(f"model: paper size {cfg}; {recipe.steps} steps, batch {recipe.batch_size}")
    print()
    print("| task | seeds | seconds | seconds per seed | speed-up |")
    print("|---|---|---|---|---|")
    print(
        f"| `train` (one seed at a time; mean of {args.train_seeds}) | 1 | "
        f"{train_per_seed:.2f} | {train_per_seed:.2f} | 1x |"
    )
    print(
        f"| `train` x {n} (extrapolated) | {n} | {train_per_seed * n:.1f} | "
        f"{train_per_seed:.2f} | 1x |"
    )
    print(
        f"| `train_many` (chunk {args.chunk}) | {n} | {many:.1f} | {many / n:.3f} | "
        f"{train_per_seed * n / many:.1f}x |"
    )


if __name__ == "__main__":
    main()
