"""Scaling benchmark: proof time against the vocabulary size (K = 4).

    python benchmarks/scale.py [--vocab 64 128 256 512] [--out scale.png]

For each d_vocab: the cubic proof's verification time, the default sub-cubic
configuration's search + verification time, and brute force's time extrapolated from the
measured throughput of the exact evaluator on the bundled trained v = 64 model (enumerating
v^4 inputs). The proofs run on untrained models (the paper's initialisation). The cubic
proof's time barely depends on the weights (unless balls leave cells undecided); the
sub-cubic search's does: it skips cells no gap can make negative, which on an untrained model
is nearly all of them, so its time here is a best case (trained models: benchmarks/
asymptotic.py, larger_k.py). Prints a table and writes a log-log plot with reference slopes
v^(k+1), v^3 and v^2.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

from matplotlib.figure import Figure

from compact_proofs.allocator import retain_freed_memory
from compact_proofs.model.file_format import bundled_model_path, load_model
from compact_proofs.model.transformer import ModelConfig, build_model
from compact_proofs.pipeline.report.figures import loglog_slope
from compact_proofs.proofs.exhaustive import exact_accuracy
from compact_proofs.proofs.registry import get_strategy
from compact_proofs.proofs.runner import prove
from compact_proofs.proofs.subcubic.config import SubcubicConfig

K = 4


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--out", type=Path, default=Path("scale.png"))
    args = parser.parse_args()
    retain_freed_memory()  # as the CLI does
    base = load_model(bundled_model_path()).model  # a trained model: the evaluator's speed
    exact_accuracy(base)  # warm-up                  depends on how many inputs are clear-cut
    throughput = 64**K / seconds(lambda: exact_accuracy(base))
    rows, searches = [], []
    for v in args.vocab:
        model = build_model(ModelConfig(d_vocab=v, n_ctx=K), seed=1)
        cubic, _ = prove(model, get_strategy("cubic"))
        sub, _ = prove(model, get_strategy(SubcubicConfig().id))
        rows.append((v, v**K / throughput, cubic.seconds, sub.search_seconds + sub.seconds))
        searches.append(sub.search_seconds)
        print(f"v={v}: search {sub.search_seconds:.3g} s", flush=True)
    print(f"\nK = {K}; brute force extrapolated at {throughput:.3g} inputs/s (bundled model)")
    print(
        "| d_vocab | brute force s (extrapolated) | cubic s | default sub-cubic s (search+verify)"
        " | sub-cubic search s | search slope from previous v |"
    )
    print("|---|---|---|---|---|---|")
    for i, (v, bf, cu, sc) in enumerate(rows):
        slope = (
            f"{math.log(searches[i] / searches[i - 1]) / math.log(v / rows[i - 1][0]):.2f}"
            if i and searches[i - 1] > 0 and searches[i] > 0
            else "-"
        )
        print(f"| {v} | {bf:.3g} | {cu:.3g} | {sc:.3g} | {searches[i]:.3g} | {slope} |")
    print(f"search log-log slope (least squares): {loglog_slope(args.vocab, searches):.2f}")

    fig = Figure(figsize=(7, 5))
    ax = fig.add_subplot()
    vs = [r[0] for r in rows]
    for i, (label, slope) in enumerate(
        [("brute force (extrapolated)", K + 1), ("cubic", 3), ("default sub-cubic", 2)], start=1
    ):
        ys = [r[i] for r in rows]
        line = ax.plot(vs, ys, "o-", label=label)[0]
        ref = [ys[0] * (v / vs[0]) ** slope for v in vs]
        ax.plot(vs, ref, "--", color=line.get_color(), alpha=0.5, label=f"slope v^{slope}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("d_vocab (log scale)")
    ax.set_ylabel("proof time, seconds (log scale)")
    ax.set_title(f"Proof time vs vocabulary size (K = {K}, 2-core CPU)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"plot: {args.out}")


if __name__ == "__main__":
    main()
