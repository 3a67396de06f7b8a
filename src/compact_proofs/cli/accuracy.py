"""`compact-proofs accuracy`: the exact accuracy over all d_vocab^n_ctx inputs, or (with
--estimate) a sampled estimate with a Clopper-Pearson interval, which is not a proof."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

from compact_proofs.cli import common

if TYPE_CHECKING:
    from compact_proofs.model.file_format import ModelFile


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("accuracy", help="exact accuracy over all d_vocab^n_ctx inputs")
    p.add_argument("model", help="model file (.safetensors)")
    p.add_argument(
        "--estimate",
        action="store_true",
        help="estimate by uniform sampling, with a confidence interval (not a proof)",
    )
    p.add_argument(
        "--samples",
        type=common.positive_int,
        default=1_000_000,
        help="inputs to sample with --estimate (1000000)",
    )
    p.add_argument(
        "--confidence",
        type=common.probability,
        default=0.99,
        help="confidence level of the interval (0.99)",
    )
    p.add_argument(
        "--method",
        choices=("uniform", "stratified"),
        default="uniform",
        help="--estimate sampling: uniform over all inputs, or stratified (count what the "
        "cubic proof certifies exactly, sample only the rest; narrower intervals)",
    )
    p.add_argument("--sample-seed", type=common.seed, default=0, help="seed of the sampling (0)")
    common.fast_arg(p)
    common.json_arg(p)
    common.threads_arg(p)
    common.device_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from compact_proofs.proofs.exhaustive import exact_accuracy

    mf, name = common.load(args.model, args.device)
    if args.estimate:
        return _estimate(mf, name, args)
    start = time.perf_counter()
    result = exact_accuracy(mf.model, progress=common.progress_enabled(), rigorous=not args.fast)
    seconds = time.perf_counter() - start
    record = {
        "model": name,
        "accuracy": result.accuracy,
        "correct_count": result.correct,
        "total": result.total,
        "numerical_ties": result.ties,
        "rigorous": not args.fast,
        "seconds": seconds,
    }
    if args.json:
        common.print_json(record)
    else:
        print(
            f"{name}: exact accuracy {result.accuracy:.7f} "
            f"({result.correct} / {result.total} inputs correct) in {seconds:.2f}s"
        )
        print(common.arithmetic_line(not args.fast))
    return 0


def _estimate(mf: ModelFile, name: str, args: argparse.Namespace) -> int:
    from compact_proofs.analysis.estimate import estimate_accuracy
    from compact_proofs.analysis.stratified import stratified_estimate
    from compact_proofs.proofs.paths import require_single_head

    start = time.perf_counter()
    estimator = stratified_estimate if args.method == "stratified" else estimate_accuracy
    if args.method == "stratified":
        require_single_head(mf.model, "--method stratified (it samples the cubic proof's cells)")
    est = estimator(
        mf.model,
        args.samples,
        args.confidence,
        args.sample_seed,
        progress=common.progress_enabled(),
    )
    seconds = time.perf_counter() - start
    if args.json:
        common.print_json({"model": name, **est.to_json(mf.cfg.n_inputs), "seconds": seconds})
        return 0
    if est.method == "uniform":
        how = f"{est.correct} / {est.samples} uniformly sampled inputs correct"
    else:
        how = (
            f"{est.certified} inputs certified by the cubic proof, {est.correct} / "
            f"{est.samples} samples of the other {mf.cfg.n_inputs - est.certified} correct"
        )
    print(
        f"{name}: ESTIMATED accuracy {est.estimate:.6f} ({how}); {est.confidence:.0%} "
        f"Clopper-Pearson interval [{est.lower:.6f}, {est.upper:.6f}]: a statistical "
        f"estimate, not a proof ({seconds:.1f}s)"
    )
    return 0
