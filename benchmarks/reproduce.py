"""Benchmark of the full reproduction: 151 seeds x every registered strategy, then the report.

    python benchmarks/reproduce.py [--seeds paper] [--models shipped|train] [--jobs N]
                                   [--out DIR] [--previous RESULTS.txt]

Runs what `compact-proofs reproduce` runs (shipped models by default; into a fresh directory
unless --out names an existing one, which would then be resumed) and prints the wall time
per phase, the CPU seconds per stage summed over the workers (exact accuracy, each family's
search and verification, consolidation), and the ratio of each against a previous run's
stored output (--previous, default: the newest benchmarks/results-reproduce-*.txt; the
format printed here, or the `compact-proofs reproduce` output those files hold). Target:
under 5 minutes of wall time on a 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import tempfile
import time
from pathlib import Path

import torch

from compact_proofs.allocator import retain_freed_memory
from compact_proofs.model.seeds import parse_seeds
from compact_proofs.model.training import TrainingRecipe
from compact_proofs.model.transformer import ModelConfig
from compact_proofs.pipeline.report import build_report
from compact_proofs.pipeline.sweep import SweepSpec, run_sweep, use_shipped_models
from compact_proofs.proofs.registry import STRATEGIES

HERE = Path(__file__).parent
WALL = re.compile(r"sweep ([\d.]+) s wall, report ([\d.]+) s wall")
STAGE = re.compile(r"^\s+(.+?): ([\d.]+) s \(summed over workers\)", re.M)


def previous_run(path: Path | None) -> tuple[str, dict[str, float]] | None:
    """(file name, {phase or stage: seconds}) of a stored run, or None if there is none."""
    if path is None:
        stored = sorted(HERE.glob("results-reproduce-*.txt"))
        path = stored[-1] if stored else None
    if path is None or not path.exists():
        return None
    text = path.read_text()
    wall = WALL.search(text)
    if not wall:
        return None
    sweep, report = float(wall.group(1)), float(wall.group(2))
    seconds = {"sweep": sweep, "report": report, "total": sweep + report}
    seconds.update({name: float(s) for name, s in STAGE.findall(text)})
    return path.name, seconds


def ratio(now: float, before: dict[str, float] | None, key: str) -> str:
    if not before or not before.get(key):
        return "-"
    return f"{now / before[key]:.2f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="paper")
    parser.add_argument("--models", choices=("shipped", "train"), default="shipped")
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--previous", type=Path, default=None)
    args = parser.parse_args()
    retain_freed_memory()  # as the CLI does
    before = previous_run(args.previous)
    out = args.out or Path(tempfile.mkdtemp(prefix="reproduce-"))
    spec = SweepSpec(
        seeds=tuple(parse_seeds(args.seeds)),
        strategies=tuple(STRATEGIES),
        config=ModelConfig(),
        recipe=TrainingRecipe(),
    )
    start = time.perf_counter()
    if args.models == "shipped":
        use_shipped_models(out, spec.seeds)
    summary = run_sweep(out, spec, jobs=args.jobs)
    sweep_wall = time.perf_counter() - start
    report_start = time.perf_counter()
    build_report(out, out / "report")
    report_wall = time.perf_counter() - report_start
    total = time.perf_counter() - start
    old = before[1] if before else None
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    print(f"{len(spec.seeds)} seeds x {len(spec.strategies)} strategies ({args.models} models) "
          f"-> {summary.rows} rows in {out}")  # fmt: skip
    print(f"previous run: {before[0] if before else 'none'}")
    print(f"sweep {sweep_wall:.1f} s wall, report {report_wall:.1f} s wall; stages:")
    for stage, seconds in summary.stage_seconds.items():
        print(f"  {stage}: {seconds:.1f} s (summed over workers)")
    print("\n| phase or stage | seconds | / previous run |")
    print("|---|---|---|")
    for name, seconds in (("sweep", sweep_wall), ("report", report_wall), ("total", total)):
        print(f"| {name} (wall) | {seconds:.1f} | {ratio(seconds, old, name)} |")
    for stage, seconds in summary.stage_seconds.items():
        print(f"| {stage} (CPU) | {seconds:.1f} | {ratio(seconds, old, stage)} |")
    print(f"\ntotal {total:.1f} s ({total / 60:.2f} min; target < 5 min)")


if __name__ == "__main__":
    main()
