"""Sub-cubic benchmark: time and FLOPs per configuration group; Table 1 rows over models.

    python benchmarks/subcubic.py                      # timings on the bundled seed-123 model
    python benchmarks/subcubic.py --models DIR         # + Table 1 rows over DIR/*.safetensors

Timing part: for each of the six groups, the mean proof-search seconds, mean and max
verification seconds and mean FLOPs of its configurations, and the total time of all 100
configurations (search + verification). Targets: any verification < 50 ms; all 100 < 30 s.

Table 1 part: per seed, the best normalised bound (bound / exact accuracy) within each row's
configuration set, then mean +- std over the seeds, for the sound rules (what the strategies
certify) and, for comparison, the original's rules (unsound mean+diff step, m - g counting),
next to the paper's reference values.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch

from compact_proofs.model.file_format import bundled_model_path, load_model
from compact_proofs.proofs.exhaustive import exact_accuracy
from compact_proofs.proofs.registry import STRATEGIES, get_strategy
from compact_proofs.proofs.runner import prove
from compact_proofs.proofs.subcubic.config import ALL_CONFIGS, TABLE1_ROW, table1_rows
from compact_proofs.proofs.subcubic.original import original_count

PAPER = {  # Table 1 of the paper: mean +- std of the best normalised bound (151 seeds)
    "Cubic": (0.954, 0.008),
    "Sub-cubic": (0.821, 0.013),
    "without mean+diff": None,
    "Low-rank QK": (0.795, 0.014),
    "SVD only": None,
    "Low-rank EU": (0.653, 0.060),
    "Low-rank QK & EU": (0.628, 0.060),
    "Quadratic QK": (0.390, 0.032),
    "Quadratic QK & EU": (0.286, 0.036),
}


def timing_table(model) -> None:
    per_group: dict[str, list] = defaultdict(list)
    start = time.perf_counter()
    for cfg in ALL_CONFIGS:
        result, _ = prove(model, get_strategy(cfg.id))
        per_group[cfg.group].append(result)
    total = time.perf_counter() - start
    print(
        "| group (Table 1 row) | configs | search s (mean) | verify s (mean / max) | "
        "FLOPs (mean) | log2 | best bound |"
    )
    print("|---|---|---|---|---|---|---|")
    for group, results in per_group.items():
        flops = statistics.mean(r.flops for r in results)
        print(
            f"| {group} ({TABLE1_ROW[group]}) | {len(results)} | "
            f"{statistics.mean(r.search_seconds for r in results):.3f} | "
            f"{statistics.mean(r.seconds for r in results):.4f} / "
            f"{max(r.seconds for r in results):.4f} | {flops:.3e} | {math.log2(flops):.2f} | "
            f"{max(r.bound for r in results):.4f} |"
        )
    cubic, _ = prove(model, STRATEGIES["cubic"])
    print(
        f"\nall 100 configurations, search + verification: {total:.1f} s "
        f"(cubic verification {cubic.seconds:.3f} s, {cubic.flops:.3e} FLOPs)"
    )


def table1(models_dir: Path) -> None:
    best: dict[str, dict[str, list[float]]] = {
        "sound": defaultdict(list),
        "original": defaultdict(list),
    }
    files = sorted(models_dir.glob("*.safetensors"))
    for path in files:
        model = load_model(path).model
        exact = exact_accuracy(model).correct
        per_row: dict[str, dict[str, float]] = {
            "sound": defaultdict(float),
            "original": defaultdict(float),
        }
        per_row["sound"]["Cubic"] = per_row["original"]["Cubic"] = (
            STRATEGIES["cubic"].verify(model, {}).correct_count / exact
        )
        for cfg in ALL_CONFIGS:
            sound = prove(model, get_strategy(cfg.id))[0].correct_count / exact
            original = original_count(model, cfg) / exact
            for row in table1_rows(cfg):
                per_row["sound"][row] = max(per_row["sound"][row], sound)
                per_row["original"][row] = max(per_row["original"][row], original)
        for rules in best:
            for row, value in per_row[rules].items():
                best[rules][row].append(value)
        print(f"{path.name}: done", flush=True)
    print(
        f"\nTable 1 rows over {len(files)} models: best normalised bound per seed, "
        "mean +- std (population)"
    )
    print("| row | sound (this project) | original rules | paper (151 seeds) |")
    print("|---|---|---|---|")
    for row, ref in PAPER.items():
        cells = []
        for rules in ("sound", "original"):
            values = best[rules][row]
            cells.append(f"{statistics.mean(values):.3f} +- {statistics.pstdev(values):.3f}")
        ref_text = f"{ref[0]:.3f} +- {ref[1]:.3f}" if ref else "—"
        print(f"| {row} | {cells[0]} | {cells[1]} | {ref_text} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, help="directory of model files for Table 1")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    timing_table(load_model(bundled_model_path()).model)
    if args.models:
        table1(args.models)


if __name__ == "__main__":
    main()
