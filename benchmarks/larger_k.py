"""Larger K and vocabularies: train, certify and estimate where enumeration is impossible.

    python benchmarks/larger_k.py [--shapes 5x64 10x64 10x128 20x512] [--samples 200000]

For each (K, v): train one model (seed 123, the paper's recipe otherwise, batched trainer),
then the cubic proof and the default sub-cubic configuration (search + verification), each
with its wall time and the process's peak resident memory so far, and two accuracy estimates
with 99% Clopper–Pearson intervals: uniform sampling, and stratified sampling over the cubic
proof's cells (certified inputs counted exactly, only the rest sampled). Estimates are
statistics, never proofs. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time
from collections.abc import Callable
from typing import Any

import torch

from compact_proofs.allocator import retain_freed_memory
from compact_proofs.analysis.estimate import estimate_accuracy
from compact_proofs.analysis.stratified import stratified_estimate
from compact_proofs.model.batched_training import train_many
from compact_proofs.model.seeds import SELECTED_SEED
from compact_proofs.model.transformer import ModelConfig
from compact_proofs.proofs.registry import get_strategy
from compact_proofs.proofs.runner import prove
from compact_proofs.proofs.subcubic.config import SubcubicConfig


def peak_gb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def shape(text: str) -> tuple[int, int]:
    k, v = text.lower().split("x")
    return int(k), int(v)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", type=shape, nargs="+", default=["5x64", "10x64", "10x128"])
    parser.add_argument("--samples", type=int, default=200_000)
    args = parser.parse_args()
    retain_freed_memory()  # as the CLI does
    shapes = [shape(s) if isinstance(s, str) else s for s in args.shapes]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")  # fmt: skip
    rows = []
    for k, v in shapes:
        cfg = ModelConfig(d_vocab=v, n_ctx=k)
        [(model, _)], train_s = timed(lambda cfg=cfg: train_many(cfg, [SELECTED_SEED]))
        print(f"K={k} v={v}: trained in {train_s:.1f} s", flush=True)
        (cubic, _), _ = timed(lambda m=model: prove(m, get_strategy("cubic")))
        cubic_gb = peak_gb()
        print(f"  cubic {cubic.bound:.4f} in {cubic.seconds:.1f} s", flush=True)
        (sub, _), _ = timed(lambda m=model: prove(m, get_strategy(SubcubicConfig().id)))
        sub_gb = peak_gb()
        print(
            f"  sub-cubic {sub.bound:.4f} in {sub.search_seconds + sub.seconds:.1f} s", flush=True
        )
        uni, uni_s = timed(lambda m=model: estimate_accuracy(m, args.samples, 0.99, seed=0))
        strat, strat_s = timed(lambda m=model: stratified_estimate(m, args.samples, 0.99, seed=0))
        rows.append(
            f"| {k}, {v} | {train_s:.1f} s | {uni.estimate:.4f} [{uni.lower:.4f}, {uni.upper:.4f}]"
            f" ({uni_s:.0f} s) | {strat.estimate:.5f} [{strat.lower:.5f}, {strat.upper:.5f}]"
            f" ({strat_s:.0f} s) | {cubic.bound:.4f} ({cubic.seconds:.1f} s, peak"
            f" {cubic_gb:.1f} GB)"
            f" | {sub.bound:.4f} ({sub.search_seconds:.1f} + {sub.seconds:.2f} s, peak"
            f" {sub_gb:.1f} GB) |"
        )
        print(rows[-1], flush=True)
    print(f"\nestimates: {args.samples} samples each, 99% Clopper–Pearson intervals")
    print(
        "| K, v | training | uniform estimate | stratified estimate | cubic bound | "
        "default sub-cubic bound (search + verify) |"
    )
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
