"""Exact-accuracy throughput (inputs per second) for K = 4 and K = 5, d_vocab = 64.

    python benchmarks/throughput.py [--repeats 5]

K = 4: the bundled seed-123 model (16.8 M inputs); K = 5: a model trained here with the paper's
recipe (seed 123, batched trainer; 1.07 G inputs). Both modes of `exact_accuracy` (rigorous,
the default, and --fast), timed in-process (median of the repeats after a warm-up), with the
load average, next to an arithmetic floor and the plain float64 forward pass.

Floor. The evaluator (proofs/exhaustive.py) never touches inputs one by one: per query token
it builds two tables of partial logits, one row per assignment of tokens to half of the
non-query positions, and counts pairs of rows. Every entry of those tables takes at least
FLOPS_PER_ENTRY floating-point operations (one add to build it, two max reductions for the
top two, one add and one subtract for the cheap-bound term), so the floor is
v * (rows_A + rows_B) * v * FLOPS_PER_ENTRY flops divided by this machine's measured rate
of float64 elementwise operations (large contiguous adds, all threads). Inputs/s of the
floor = inputs / floor seconds. The pairs the evaluator must still compare or evaluate one by
one come on top (model dependent), so the floor is a lower bound on the time, not a target.
"""

from __future__ import annotations

import argparse
import os
import platform

import torch

from compact_proofs.allocator import retain_freed_memory
from compact_proofs.model.batched_training import train_many
from compact_proofs.model.file_format import bundled_model_path, load_model
from compact_proofs.model.seeds import SELECTED_SEED
from compact_proofs.model.transformer import AttnOnlyTransformer, ModelConfig
from compact_proofs.proofs.exhaustive import exact_accuracy, is_correct
from foundation import median_seconds

FLOPS_PER_ENTRY = 5


def forward_rate(model: AttnOnlyTransformer, n: int = 2**18) -> float:
    """Inputs per second of the plain float64 forward pass (the reference)."""
    cfg = model.cfg
    tokens = torch.randint(
        0, cfg.d_vocab, (n, cfg.n_ctx), generator=torch.Generator().manual_seed(0)
    )
    return n / median_seconds(lambda: is_correct(model, tokens), 1)  # after a warm-up


def elementwise_rate(n: int = 2**24, repeats: int = 5) -> float:
    """Float64 elementwise operations per second: out = a + b on n contiguous entries."""
    a, b = torch.rand(n, dtype=torch.float64), torch.rand(n, dtype=torch.float64)
    out = torch.empty_like(a)
    return n / median_seconds(lambda: torch.add(a, b, out=out), repeats)


def floor_flops(cfg: ModelConfig) -> int:
    """Least flops of the evaluator's tables: FLOPS_PER_ENTRY per entry, v queries."""
    v, n_other = cfg.d_vocab, cfg.n_ctx - 1
    rows = v ** (n_other - n_other // 2) + v ** (n_other // 2)  # side A (with query), side B
    return v * rows * v * FLOPS_PER_ENTRY


def load() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    retain_freed_memory()  # as the CLI does
    rate = elementwise_rate()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"float64 elementwise rate {rate:.3g} op/s; load before: {load()}")  # fmt: skip
    k4 = load_model(bundled_model_path()).model
    [(k5, _)] = train_many(ModelConfig(d_vocab=64, n_ctx=5), [SELECTED_SEED])
    print("| K | inputs | mode | correct | seconds | inputs/s | floor flops | floor inputs/s "
          "| plain forward pass inputs/s | load (1/5/15 min) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for model in (k4, k5):
        n, flops = model.cfg.n_inputs, floor_flops(model.cfg)
        forward = forward_rate(model)
        for rigorous in (True, False):
            result = exact_accuracy(model, rigorous=rigorous)
            run = lambda m=model, r=rigorous: exact_accuracy(m, rigorous=r)  # noqa: E731
            seconds = median_seconds(run, args.repeats)
            print(
                f"| {model.cfg.n_ctx} | {n:,} | {'rigorous' if rigorous else 'fast'} | "
                f"{result.correct:,} | {seconds:.3f} | {n / seconds:.3g} | {flops:.3g} | "
                f"{n / (flops / rate):.3g} | {forward:.3g} | {load()} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
