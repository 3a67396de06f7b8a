"""The asymptotic frontier: bound and proof length against the vocabulary size (K = 4).

    python benchmarks/asymptotic.py [--vocab 64 128 256 512] [--seeds 123 50 104]
                                    [--out docs/asymptotic.png]

For each d_vocab: models trained with the paper's recipe (batched trainer, one per seed),
then, in the default rigorous mode, the cubic proof, `separable-lite`, `separable` (both
cubic in v), the paper's best sub-cubic configuration on the bundled model
(EUPU max-diff-exact, attention mean-query+diff, error max-diff-exact) and
`separable-subcubic`, each with its bound, FLOPs, search and verification time. Brute force
is not run: its FLOPs are the strategy's own count (`black_box_flops`: one batch of the
forward pass measured, scaled to the v^k inputs), and its bound (the exact accuracy) is
estimated by uniform sampling (a statistic, never a proof). Prints per-v tables (means over the
seeds), the fitted log-log slope of each strategy's FLOPs in v, the v = 512 comparison with
cubic, and writes a two-panel log-log figure (FLOPs vs v with fitted slopes; bound vs v) and,
with --json DIR/asymptotic.json, the records `compact-proofs report DIR` turns into the same
figure in the report.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from compact_proofs.allocator import retain_freed_memory
from compact_proofs.analysis.estimate import estimate_accuracy
from compact_proofs.model.batched_training import train_many
from compact_proofs.model.transformer import ModelConfig
from compact_proofs.pipeline.report import plot_asymptotic
from compact_proofs.pipeline.report.figures import loglog_slope
from compact_proofs.proofs.brute_force import black_box_flops
from compact_proofs.proofs.registry import get_strategy
from compact_proofs.proofs.runner import ProofResult, prove

K = 4
PAPER_BEST = "EUPU-max-diff-exact--attn-mean-query+diff--attn-err-max-diff-exact"
STRATEGIES = ("cubic", "separable-lite", "separable", PAPER_BEST, "separable-subcubic")
LABELS = {PAPER_BEST: "best paper sub-cubic"}


def brute_force_flops(vocab: list[int]) -> dict[int, float]:
    """Brute force's proof length at each v (depends on the architecture only)."""
    return {v: float(black_box_flops(ModelConfig(d_vocab=v, n_ctx=K))) for v in vocab}


def run_vocab(
    v: int, seeds: list[int], samples: int, skip: tuple[str, ...]
) -> dict[str, list[ProofResult]]:
    """Train the seeds' models at this v and run every strategy not in `skip` on each
    (rigorous; skipped strategies get empty lists)."""
    start = time.perf_counter()
    models = [m for m, _ in train_many(ModelConfig(d_vocab=v, n_ctx=K), seeds)]
    print(f"v={v}: trained {len(seeds)} models in {time.perf_counter() - start:.0f} s", flush=True)
    out: dict[str, list] = {s: [] for s in (*STRATEGIES, "estimate")}
    out["seeds"] = list(seeds)
    for seed, model in zip(seeds, models, strict=True):
        for sid in (s for s in STRATEGIES if s not in skip):
            result, _ = prove(model, get_strategy(sid))
            out[sid].append(result)
            log2 = math.log2(result.flops)
            print(f"  seed {seed} {sid}: {result.bound:.4f}, 2^{log2:.2f} FLOPs, "
                  f"{result.search_seconds:.2f} + {result.seconds:.2f} s", flush=True)  # fmt: skip
        out["estimate"].append(estimate_accuracy(model, samples, 0.99, seed=0))
    return out


def print_tables(vocab: list[int], runs: dict[int, dict], bf: dict[int, float]) -> None:
    print("\n| d_vocab | strategy | bound (mean) | bound / cubic | log2 FLOPs | FLOPs / cubic "
          "| search s | verify s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for v in vocab:
        r = runs[v]
        cubic_b = statistics.mean(x.bound for x in r["cubic"])
        cubic_f = statistics.mean(x.flops for x in r["cubic"])
        est = statistics.mean(e.estimate for e in r["estimate"])
        print(f"| {v} | brute force (bound: sampled estimate) | {est:.4f} | {est / cubic_b:.3f}"
              f" | {math.log2(bf[v]):.2f} | {bf[v] / cubic_f:.3g} | | |")  # fmt: skip
        for sid in (s for s in STRATEGIES if r[s]):
            b = statistics.mean(x.bound for x in r[sid])
            f = statistics.mean(x.flops for x in r[sid])
            s = statistics.mean(x.search_seconds for x in r[sid])
            t = statistics.mean(x.seconds for x in r[sid])
            print(f"| {v} | {LABELS.get(sid, sid)} | {b:.4f} | {b / cubic_b:.3f} | "
                  f"{math.log2(f):.2f} | {f / cubic_f:.3g} | {s:.2f} | {t:.2f} |")  # fmt: skip
    print("\nfitted log-log slope of FLOPs in v (over the measured vocabularies):")
    print(f"  brute force: {loglog_slope(vocab, [bf[v] for v in vocab]):.2f}")
    for sid in STRATEGIES:
        vs, flops = _series(vocab, runs, sid, "flops")
        print(f"  {LABELS.get(sid, sid)}: {loglog_slope(vs, flops):.2f} (v = {vs[0]}..{vs[-1]})")


def _series(
    vocab: list[int], runs: dict[int, dict], sid: str, field: str
) -> tuple[list[int], list[float]]:
    """(the vocabularies `sid` ran at, its mean `field` at each)."""
    vs = [v for v in vocab if runs[v][sid]]
    return vs, [statistics.mean(getattr(x, field) for x in runs[v][sid]) for v in vs]


def records(vocab: list[int], runs: dict[int, dict], bf: dict[int, float]) -> dict[str, Any]:
    """The run as JSON (what `compact-proofs report` reads from DIR/asymptotic.json)."""
    rows = [
        {"d_vocab": v, "strategy": sid, "label": LABELS.get(sid, sid), "seed": seed,
         "bound": r.bound, "flops": r.flops, "search_seconds": r.search_seconds,
         "seconds": r.seconds}
        for v in vocab
        for sid in STRATEGIES
        for seed, r in zip(runs[v]["seeds"], runs[v][sid], strict=False)
    ]  # fmt: skip
    return {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "n_ctx": K,
        "rows": rows,
        "brute_force_flops": {str(v): bf[v] for v in vocab},
        "estimate": {
            str(v): statistics.mean(e.estimate for e in runs[v]["estimate"]) for v in vocab
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--seeds", type=int, nargs="+", default=[123, 50, 104])
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=Path("docs/asymptotic.png"))
    parser.add_argument("--separable-max-vocab", type=int, default=256)
    parser.add_argument("--json", type=Path, default=None, help="e.g. RESULTS_DIR/asymptotic.json")
    args = parser.parse_args()
    retain_freed_memory()  # as the CLI does
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")  # fmt: skip
    bf = brute_force_flops(args.vocab)
    runs = {
        v: run_vocab(v, args.seeds, args.samples,
                     ("separable",) if v > args.separable_max_vocab else ())
        for v in args.vocab
    }  # fmt: skip
    print_tables(args.vocab, runs, bf)
    top = args.vocab[-1]
    cubic = runs[top]["cubic"]
    new = runs[top]["separable-subcubic"]
    pairs = list(zip(new, cubic, strict=True))
    print(f"\nv = {top}: separable-subcubic / cubic per seed: bound "
          + ", ".join(f"{n.bound / c.bound:.3f}" for n, c in pairs)
          + "; FLOPs " + ", ".join(f"1/{c.flops / n.flops:.0f}" for n, c in pairs)
          + "; search + verify s " + ", ".join(
              f"{n.search_seconds + n.seconds:.2f} vs {c.search_seconds + c.seconds:.2f}"
              for n, c in pairs))  # fmt: skip
    print(f"peak memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GB")
    data = records(args.vocab, runs, bf)
    if args.json:
        args.json.write_text(json.dumps(data, indent=1))
        print(f"json: {args.json}")
    plot_asymptotic(data).savefig(args.out, dpi=120)
    print(f"plot: {args.out}")


if __name__ == "__main__":
    main()
