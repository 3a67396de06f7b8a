"""`compact-proofs sweep | report | reproduce`: many seeds through every strategy into a
resumable results store, the report built from a store, and both for the paper's 151 seeds."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from compact_proofs.cli import common
from compact_proofs.errors import CompactProofsError

if TYPE_CHECKING:
    from compact_proofs.model.training import TrainingRecipe
    from compact_proofs.model.transformer import ModelConfig
    from compact_proofs.pipeline.sweep import SweepSummary


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="train and prove many seeds; resumable results store")
    p.add_argument("--seeds", default="paper", help="seed set: 'paper' (default), 1,2,3 or 0-9")
    p.add_argument("--out", required=True, help="results directory (created or resumed)")
    common.strategy_arg(p)
    common.model_args(p)
    common.parallel_args(p)
    common.fast_arg(p)
    common.json_arg(p)
    p.set_defaults(func=run_sweep)

    p = sub.add_parser("report", help="Table 1, figures and index.html from a results store")
    p.add_argument("results", help="results directory of `compact-proofs sweep`")
    p.add_argument("--out", required=True, help="report directory")
    p.add_argument(
        "--seed",
        type=common.seed,
        default=None,
        help="seed whose path matrices are drawn (default 123 if present)",
    )
    p.add_argument(
        "--noise-draws",
        type=common.non_negative_int,
        default=10,
        help="random residuals of the noise experiment on that seed (10; 0 skips it)",
    )
    common.json_arg(p)
    common.threads_arg(p)
    p.set_defaults(func=run_report)

    p = sub.add_parser("reproduce", help="the paper's results: sweep (151 seeds) + report")
    p.add_argument("--out", default="reproduction", help="output directory (reproduction)")
    p.add_argument("--seeds", default="paper", help="seed set (default: the 151 paper seeds)")
    p.add_argument(
        "--models",
        choices=("shipped", "train"),
        default="shipped",
        help="shipped (default): prove the paper-seed models shipped with the package, so "
        "Table 1 is the same on every machine; train: retrain them here (training is "
        "bit-identical on one machine, not across CPU models)",
    )
    common.parallel_args(p)
    common.fast_arg(p)
    p.set_defaults(func=run_reproduce)


def _sweep(
    out: Path,
    seeds: list[int],
    strategies: str,
    cfg: ModelConfig,
    recipe: TrainingRecipe,
    args: argparse.Namespace,
) -> SweepSummary:
    from compact_proofs.pipeline.sweep import SweepSpec, run_sweep
    from compact_proofs.proofs.registry import resolve_strategies

    if out.exists() and not out.is_dir():
        raise CompactProofsError(f"--out {out} is a file; pass a directory")
    spec = SweepSpec(
        seeds=tuple(seeds),
        strategies=tuple(s.id for s in resolve_strategies(strategies)),
        config=cfg,
        recipe=recipe,
        rigorous=not args.fast,
    )
    return run_sweep(
        out,
        spec,
        jobs=args.jobs,
        backend=args.backend,
        scheduler=args.scheduler,
        progress=common.progress_enabled(),
    )


def _print_stages(summary: SweepSummary) -> None:
    for stage, seconds in summary.stage_seconds.items():
        print(f"  {stage}: {seconds:.1f} s (summed over workers)")


def run_sweep(args: argparse.Namespace) -> int:
    seeds, cfg, recipe = (
        common.seed_list(args.seeds),
        common.model_config(args),
        common.recipe(args),
    )
    summary = _sweep(Path(args.out), seeds, args.strategy, cfg, recipe, args)
    if args.json:
        common.print_json(
            {
                "results": str(summary.results_csv),
                "seeds_done": summary.seeds_done,
                "seeds_computed": summary.seeds_computed,
                "rows": summary.rows,
                "stage_seconds": summary.stage_seconds,
            }
        )
        return 0
    print(
        f"{summary.results_csv}: {summary.rows} rows for {summary.seeds_done} seeds "
        f"({summary.seeds_computed} computed now)"
    )
    print(common.arithmetic_line(not args.fast))
    _print_stages(summary)
    return 0


def run_report(args: argparse.Namespace) -> int:
    from compact_proofs.pipeline.report import build_report

    report = build_report(
        Path(args.results),
        Path(args.out),
        seed=args.seed,
        progress=common.progress_enabled(),
        noise_draws=args.noise_draws,
    )
    if args.json:
        common.print_json({k: v for k, v in report.items() if k in ("table1", "files")})
    else:
        print(f"report written to {Path(args.out) / 'index.html'}")
    return 0


def run_reproduce(args: argparse.Namespace) -> int:
    from compact_proofs.model.training import TrainingRecipe
    from compact_proofs.model.transformer import ModelConfig
    from compact_proofs.pipeline.report import build_report
    from compact_proofs.pipeline.sweep import use_shipped_models

    out, seeds = Path(args.out), common.seed_list(args.seeds)
    start = time.perf_counter()
    if args.models == "shipped":
        if out.exists() and not out.is_dir():
            raise CompactProofsError(f"--out {out} is a file; pass a directory")
        copied = use_shipped_models(out, seeds)
        print(f"models: {len(copied)} shipped models copied into {out / 'models'}")
    summary = _sweep(out, seeds, "all", ModelConfig(), TrainingRecipe(), args)
    sweep_seconds = time.perf_counter() - start
    report_start = time.perf_counter()
    build_report(out, out / "report", progress=common.progress_enabled())
    report_seconds = time.perf_counter() - report_start
    print(f"{summary.rows} rows for {summary.seeds_done} seeds in {summary.results_csv}")
    print(common.arithmetic_line(not args.fast))
    print(f"sweep {sweep_seconds:.1f} s wall, report {report_seconds:.1f} s wall; stages:")
    _print_stages(summary)
    print((out / "report" / "table1.md").read_text())
    print(f"report: {out / 'report' / 'index.html'}")
    return 0
