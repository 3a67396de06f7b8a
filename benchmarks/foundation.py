"""Foundation benchmark: exact accuracy, cubic proof and training of a paper-size model.

    python benchmarks/foundation.py [--repeats 5] [--json]

Prints a table (median wall time over repeats, after one warm-up run) and, for exact accuracy,
the achieved throughput. Ratios are against simple reference implementations written here:

* exact accuracy vs the plain batched forward pass on all inputs (what the paper's brute force
  does; timed on a 1/64 slice and extrapolated, since the full run takes ~minutes);
* cubic proof vs a per-cell Python-loop evaluation of the same bound (the reference's style;
  timed on a 1/16 slice of the max tokens and extrapolated).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch

from compact_proofs.model.file_format import bundled_model_path, load_model
from compact_proofs.model.training import train
from compact_proofs.model.transformer import ModelConfig
from compact_proofs.proofs.cubic import Cubic
from compact_proofs.proofs.exhaustive import all_sequences, exact_accuracy
from compact_proofs.proofs.flops import count_flops
from compact_proofs.proofs.paths import path_matrices


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.no_grad()
def reference_forward_accuracy_seconds(model, fraction: int = 64, batch: int = 4096) -> float:
    """Seconds for the plain forward pass over all inputs, extrapolated from 1/fraction."""
    cfg = model.cfg
    n = cfg.n_inputs // fraction
    start = time.perf_counter()
    for lo in range(0, n, batch):
        tokens = all_sequences(cfg.d_vocab, cfg.n_ctx, lo, min(lo + batch, n))
        logits = model.forward_all_positions(tokens)[:, -1]
        (logits.argmax(-1) == tokens.max(-1).values).sum()
    return (time.perf_counter() - start) * fraction


def reference_loop_cubic_seconds(model, stride: int = 8) -> float:
    """Seconds for a per-cell Python loop over (q, m, t, c, ordering) computing the attention
    softmax of the cubic proof (only that part of the bound), on every `stride`-th max token,
    extrapolated by the number of cells."""
    paths = path_matrices(model)
    v, k = paths.d_vocab, paths.n_ctx
    E, P = paths.EQKE.tolist(), paths.EQKP.tolist()
    scale = paths.attn_scale

    def cells(m: int) -> int:
        return (m + 1) * m * (k - 1) * 2

    done = 0
    start = time.perf_counter()
    for m in range(1, v, stride):
        done += cells(m)
        for q in range(m + 1):
            pos = sorted(P[q][: k - 1])
            for t in range(m):
                for c in range(1, k):
                    for order in (pos, pos[::-1]):
                        n_max = k - 1 - c
                        s = [order[i] + (E[q][m] if i < n_max else E[q][t]) for i in range(k - 1)]
                        s.append(E[q][q] + P[q][k - 1])
                        top = max(s)
                        w = [math.exp((x - top) / scale) for x in s]
                        total = sum(w)
                        _ = [x / total for x in w]
    elapsed = time.perf_counter() - start
    return elapsed * sum(cells(m) for m in range(v)) / done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    model = load_model(bundled_model_path()).model
    cfg = model.cfg

    acc_s = median_seconds(lambda: exact_accuracy(model), args.repeats)
    acc_ref_s = reference_forward_accuracy_seconds(model)
    # multiply-adds of a direct factored evaluation: k weighted logit rows per input
    madds = cfg.n_inputs * cfg.n_ctx * cfg.d_vocab
    cubic = Cubic()
    cubic_s = median_seconds(lambda: cubic.verify(model, {}), args.repeats)
    cubic_flops = count_flops(lambda: cubic.verify(model, {}))[1]
    cubic_ref_s = reference_loop_cubic_seconds(model)
    train_repeats = max(1, min(args.repeats, 2))
    train_s = median_seconds(lambda: train(ModelConfig(), 123), train_repeats)

    rows = [
        {
            "task": "exact accuracy (v=64, k=4)",
            "seconds": acc_s,
            "target_s": 1.0,
            "reference": "plain forward pass",
            "reference_seconds": acc_ref_s,
            "note": f"{cfg.n_inputs / acc_s / 1e6:.1f} M sequences/s, "
            f"{2 * madds / acc_s / 1e9:.1f} GFLOP/s-equivalent ({2 * madds:.1e} FLOPs of a "
            "factored forward)",
        },
        {
            "task": "cubic proof (verify, v=64, k=4)",
            "seconds": cubic_s,
            "target_s": 0.2,
            "reference": "per-cell Python loop (softmax only)",
            "reference_seconds": cubic_ref_s,
            "note": f"{cubic_flops:.3e} FLOPs measured",
        },
        {
            "task": "train one paper-size model (3000 steps)",
            "seconds": train_s,
            "target_s": 10.0,
            "reference": "",
            "reference_seconds": None,
            "note": "",
        },
    ]
    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    if args.json:
        print(json.dumps({"machine": machine, "rows": rows}, indent=2))
        return
    print(f"machine: {machine}")
    print("| task | seconds (median) | target | reference | reference seconds | speed-up | notes |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ref = r["reference_seconds"]
        speedup = f"{ref / r['seconds']:.0f}x" if ref else ""
        ref_text = f"{ref:.2f}" if ref else ""
        print(
            f"| {r['task']} | {r['seconds']:.3f} | < {r['target_s']:g} s | {r['reference']} | "
            f"{ref_text} | {speedup} | {r['note']} |"
        )


if __name__ == "__main__":
    main()
