"""All 100 sub-cubic configurations on one large model: search and verification times.

    .venv/bin/python benchmarks/subcubic_all_configs.py [--shape 20x512] [--one-by-one]

Trains one model of the shape (seed 123, the paper's recipe otherwise, batched trainer), then
proves every sub-cubic configuration as `compact-proofs prove --strategy subcubic` does
(`runner.prove_many`: the five EU handlings of each (attention, error) pair searched together;
each member is charged a fifth of the group's search time), or with `--one-by-one` each
configuration alone (`runner.prove`). Prints one row per configuration (search seconds,
verification seconds, bound), the totals and the process's peak resident memory.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time

import torch

from compact_proofs.allocator import retain_freed_memory
from compact_proofs.model.batched_training import train_many
from compact_proofs.model.seeds import SELECTED_SEED
from compact_proofs.model.transformer import ModelConfig
from compact_proofs.proofs.registry import resolve_strategies
from compact_proofs.proofs.runner import prove, prove_many


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="20x512", help="KxV")
    parser.add_argument("--one-by-one", action="store_true", help="no grouped search")
    args = parser.parse_args()
    retain_freed_memory()  # as the CLI does
    k, v = (int(x) for x in args.shape.split("x"))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")  # fmt: skip
    [(model, _)] = train_many(ModelConfig(d_vocab=v, n_ctx=k), [SELECTED_SEED])
    strategies = resolve_strategies("subcubic")
    start = time.perf_counter()
    if args.one_by_one:
        outcomes = ((s, prove(model, s)) for s in strategies)
    else:
        outcomes = prove_many(model, strategies)
    search = verify = 0.0
    for index, (strategy, outcome) in enumerate(outcomes):
        result = outcome[0]
        search, verify = search + result.search_seconds, verify + result.seconds
        print(f"{index:3d} {result.search_seconds:7.2f} {result.seconds:7.2f} "
              f"{result.bound:.4f} {strategy.id}", flush=True)  # fmt: skip
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    mode = "one by one" if args.one_by_one else "grouped search"
    print(f"(K, v) = ({k}, {v}), {mode}: total wall {wall:.1f} s, search {search:.1f} s, "
          f"verify {verify:.1f} s, peak {peak:.2f} GB")  # fmt: skip


if __name__ == "__main__":
    main()
