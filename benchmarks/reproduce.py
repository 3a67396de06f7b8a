"""Benchmark of the full reproduction: 151 seeds x 102 strategies, then the report.

    python benchmarks/reproduce.py [--seeds paper] [--jobs N] [--out DIR]

Runs what `compact-proofs reproduce` runs (into a fresh directory unless --out names an
existing one, which would then be resumed) and prints a table of wall time per phase and the
CPU seconds per stage summed over the workers (training, exact accuracy, brute-force FLOP
count, cubic, sub-cubic search, sub-cubic verification, report). Target: under 15 minutes of
wall time on a 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from compact_proofs.model.seeds import parse_seeds
from compact_proofs.model.training import TrainingRecipe
from compact_proofs.model.transformer import ModelConfig
from compact_proofs.pipeline.report import build_report
from compact_proofs.pipeline.sweep import SweepSpec, run_sweep
from compact_proofs.proofs.registry import STRATEGIES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="paper")
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="reproduce-"))
    spec = SweepSpec(
        seeds=tuple(parse_seeds(args.seeds)),
        strategies=tuple(STRATEGIES),
        config=ModelConfig(),
        recipe=TrainingRecipe(),
    )
    start = time.perf_counter()
    summary = run_sweep(out, spec, jobs=args.jobs)
    sweep_wall = time.perf_counter() - start
    report_start = time.perf_counter()
    build_report(out, out / "report")
    report_wall = time.perf_counter() - report_start
    total = time.perf_counter() - start
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    print(
        f"{len(spec.seeds)} seeds x {len(spec.strategies)} strategies -> {summary.rows} rows "
        f"in {out}"
    )
    print("| phase | wall seconds |")
    print("|---|---|")
    print(f"| sweep (training + proving) | {sweep_wall:.1f} |")
    print(f"| report | {report_wall:.1f} |")
    print(f"| **total** | **{total:.1f}** ({total / 60:.1f} min) |")
    print("\n| stage | CPU seconds (summed over workers) |")
    print("|---|---|")
    for stage, seconds in summary.stage_seconds.items():
        print(f"| {stage} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
