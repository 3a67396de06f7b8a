"""Sub-cubic proof search against the vocabulary size: bisection against the linear scan.

    .venv/bin/python benchmarks/search_scaling.py [--vocab 64 128 256 512] [--k 4] [--out FILE]

For each d_vocab, one model trained with the paper's recipe (batched trainer, seed 123); then
the search of the 50 configurations without mean_diff, once by bisection
(`proofs/subcubic/bisect.py`, forced at every v here; `prove` uses it where its cost rule
expects it to be cheaper) and once by the chunked linear scan, their gaps compared; and, for
reference, of the 50 configurations with mean_diff (linear scan: their bound is not monotone
in the gap). Each search runs as `prove` runs it (`find_min_gaps_many`: a group's
configurations together) with the caches emptied first. Prints seconds per v, the speed-up,
whether the gaps are identical and each column's fitted log-log slope in v; the table is
also written to --out.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

from compact_proofs.allocator import retain_freed_memory
from compact_proofs.model.batched_training import train_many
from compact_proofs.model.seeds import SELECTED_SEED
from compact_proofs.model.transformer import ModelConfig
from compact_proofs.pipeline.report.figures import loglog_slope
from compact_proofs.proofs.subcubic import bisect, search
from compact_proofs.proofs.subcubic.config import ALL_CONFIGS
from compact_proofs.proofs.subcubic.decompose import Directions, Weights64, weights64

RESULTS = Path(__file__).resolve().parent / "results-search-scaling-2026-12-07.txt"


def _searched(
    w: Weights64, dirs: Directions, mean_diff: bool, bisection: bool
) -> tuple[list[torch.Tensor], float]:
    """(gaps of the configurations with / without mean_diff, seconds), from empty caches."""
    configs = [cfg for cfg in ALL_CONFIGS if cfg.uses_mean_diff == mean_diff]
    saved: tuple[Callable[..., bool], int, int] = (
        search._bisected,
        bisect.MIN_SCAN,
        bisect.COST_RATIO,
    )
    if bisection:
        bisect.MIN_SCAN, bisect.COST_RATIO = 0, 0
    else:
        search._bisected = lambda w, s: False
    for cache in (search._SHARED, search._TERMS, search._LAYOUT):
        cache.clear()
    try:
        start = time.perf_counter()
        gaps = search.find_min_gaps_many(w, dirs, configs)
        return gaps, time.perf_counter() - start
    finally:
        search._bisected, bisect.MIN_SCAN, bisect.COST_RATIO = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    retain_freed_memory()  # as the CLI does
    lines = [
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; K = {args.k}, seed "
        f"{SELECTED_SEED}; 50 configurations per column",
        "| d_vocab | no mean_diff, bisection s | no mean_diff, linear scan s | speed-up "
        "| gaps identical | mean_diff, linear scan s |",
        "|---|---|---|---|---|---|",
    ]
    print(*lines, sep="\n", flush=True)
    columns: list[list[float]] = [[], [], []]
    for v in args.vocab:
        [(model, _)] = train_many(ModelConfig(d_vocab=v, n_ctx=args.k), [SELECTED_SEED])
        w = weights64(model)
        dirs = search.find_directions(w)
        fast, t_fast = _searched(w, dirs, False, True)
        slow, t_slow = _searched(w, dirs, False, False)
        _, t_md = _searched(w, dirs, True, False)
        same = all(torch.equal(a, b) for a, b in zip(fast, slow, strict=True))
        for column, t in zip(columns, (t_fast, t_slow, t_md), strict=True):
            column.append(t)
        lines.append(
            f"| {v} | {t_fast:.2f} | {t_slow:.2f} | {t_slow / t_fast:.1f}x | {same} | {t_md:.2f} |"
        )
        print(lines[-1], flush=True)
    if len(args.vocab) > 1:
        slopes = [loglog_slope(args.vocab, column) for column in columns]
        lines.append(
            "log-log slope in v (least squares): bisection {:.2f}, linear scan {:.2f}, "
            "mean_diff linear scan {:.2f}".format(*slopes)
        )
        print(lines[-1])
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
