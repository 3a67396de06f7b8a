"""Cross-check of `separable-subcubic`: the main verifier against the independent checker on
the 151 shipped paper models.

    python benchmarks/crosscheck_separable_subcubic.py [--out FILE]

For every src/compact_proofs/data/paper/seed-*.safetensors: the searched payload, the main
verifier's default-mode (rigorous) count, and the checker's count
(soundness.checker.separable_subcubic_count, numpy float64 with its own margins) on the same
model file and payload. Prints one line per model and a summary: how many agree exactly, how
many the checker counts lower (largest difference) and how many HIGHER (must be 0).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from compact_proofs.model.file_format import load_model
from compact_proofs.proofs.separable_subcubic import SeparableSubcubic
from compact_proofs.soundness import checker

PAPER = Path(__file__).resolve().parents[1] / "src" / "compact_proofs" / "data" / "paper"


def compare(path: Path) -> tuple[int, int, int, float, float]:
    """(main count, checker count, total, main seconds, checker seconds) for one model file."""
    model = load_model(path).model
    strategy = SeparableSubcubic()
    payload = strategy.search(model)
    start = time.perf_counter()
    main = strategy.verify(model, payload).correct_count
    main_s = time.perf_counter() - start
    start = time.perf_counter()
    got = checker.separable_subcubic_count(checker.load_model_file(path), payload)
    return main, got, model.cfg.n_inputs, main_s, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    paths = sorted(PAPER.glob("seed-*.safetensors"), key=lambda p: int(p.stem.split("-")[1]))
    lines, diffs, start = [], [], time.perf_counter()
    for path in paths:
        main_n, got, total, main_s, chk_s = compare(path)
        diffs.append(main_n - got)
        lines.append(
            f"{path.stem:12s} main {main_n:9d}  checker {got:9d}  diff {main_n - got:6d}  "
            f"bound {main_n / total:.6f}  main {main_s:5.2f} s  checker {chk_s:5.2f} s"
        )
        print(lines[-1], flush=True)
    lower = [d for d in diffs if d > 0]
    summary = [
        f"models: {len(diffs)}; machine: {platform.machine()}, {os.cpu_count()} cores; "
        f"wall {time.perf_counter() - start:.0f} s",
        f"agree exactly: {sum(d == 0 for d in diffs)}/{len(diffs)}",
        f"checker lower: {len(lower)} (largest difference {max(lower, default=0)})",
        f"checker HIGHER (must be 0): {sum(d < 0 for d in diffs)}",
    ]
    print("\n".join(summary))
    if args.out:
        header = "$ python benchmarks/crosscheck_separable_subcubic.py"
        args.out.write_text("\n".join([header, *summary, "", *lines]) + "\n")


if __name__ == "__main__":
    main()
