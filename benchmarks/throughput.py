"""Exact-accuracy throughput (inputs per second) for K = 4 and K = 5, d_vocab = 64.

    python benchmarks/throughput.py [--repeats 3]

K = 4: the bundled seed-123 model (16.8 M inputs); K = 5: a model trained here with the paper's
recipe (seed 123, batched trainer; 1.07 G inputs). Also the plain float64 forward pass on a
sample, for reference. Prints a Markdown table (median of the repeats,
after a warm-up).
"""

from __future__ import annotations

import argparse
import os
import platform

import torch

from compact_proofs.model.batched_training import train_many
from compact_proofs.model.file_format import bundled_model_path, load_model
from compact_proofs.model.seeds import SELECTED_SEED
from compact_proofs.model.transformer import AttnOnlyTransformer, ModelConfig
from compact_proofs.proofs.exhaustive import exact_accuracy, is_correct
from foundation import median_seconds


def forward_rate(model: AttnOnlyTransformer, n: int = 2**18) -> float:
    """Inputs per second of the plain float64 forward pass (the reference)."""
    cfg = model.cfg
    tokens = torch.randint(
        0, cfg.d_vocab, (n, cfg.n_ctx), generator=torch.Generator().manual_seed(0)
    )
    return n / median_seconds(lambda: is_correct(model, tokens), 1)  # after a warm-up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")  # fmt: skip
    k4 = load_model(bundled_model_path()).model
    [(k5, _)] = train_many(ModelConfig(d_vocab=64, n_ctx=5), [SELECTED_SEED])
    print("| K | inputs | exact accuracy | seconds | inputs/s | plain forward pass inputs/s |")
    print("|---|---|---|---|---|---|")
    for model in (k4, k5):
        result = exact_accuracy(model)
        seconds = median_seconds(lambda m=model: exact_accuracy(m), args.repeats)
        n = model.cfg.n_inputs
        print(
            f"| {model.cfg.n_ctx} | {n:,} | {result.accuracy:.6f} | {seconds:.2f} | "
            f"{n / seconds:.3g} | {forward_rate(model):.3g} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
