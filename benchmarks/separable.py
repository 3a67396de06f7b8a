"""The separable strategies on the paper's models, against the cubic proof.

    python benchmarks/separable.py [--seeds paper] [--jobs 2] [--cache .crosscheck]

For every seed (model trained by the batched trainer and cached under CACHE/models, shared with
crosscheck.py and rigorous.py): the exact accuracy, then for `cubic`, `separable-lite` and
`separable` the float64 count with its FLOPs and verification time, the rigorous count and
time, and the independent checker's count (soundness.checker, numpy) where it supports
the strategy. Per-seed results are cached in CACHE/separable. Prints one summary row per
strategy: mean ± std and min of the normalised bound, mean log2 FLOPs, seconds per model in
each mode, how many seeds have rigorous == float64 and checker == main, and whether every
seed meets the issue's targets.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from compact_proofs.model.file_format import atomic_write, load_model
from compact_proofs.pipeline.results import model_path
from compact_proofs.proofs.exhaustive import exact_accuracy
from compact_proofs.proofs.flops import count_flops, log2
from compact_proofs.proofs.registry import get_strategy
from compact_proofs.soundness import checker
from paper_models import arguments, run_per_seed

IDS = ("cubic", "separable-lite", "separable")


def _checker_count(path: Path, strategy_id: str) -> int | None:
    """The independent checker's count, or None where it does not implement the strategy."""
    counters = {"cubic": "cubic_count", "separable-lite": "separable_lite_count",
                "separable": "separable_count"}  # fmt: skip
    count = getattr(checker, counters[strategy_id], None)
    return None if count is None else int(count(checker.load_model_file(path)))


def run_seed(cache: str, seed: int) -> dict:
    torch.set_num_threads(1)
    out = Path(cache) / "separable" / f"seed-{seed}.json"
    if out.exists():
        return json.loads(out.read_text())
    path = model_path(Path(cache), seed)
    model = load_model(path).model
    rows = {}
    for strategy_id in IDS:
        strategy = get_strategy(strategy_id)
        start = time.perf_counter()
        loose, flops = count_flops(lambda s=strategy: s.verify(model, {}))
        middle = time.perf_counter()
        strict = strategy.verify(model, {}, rigorous=True)
        end = time.perf_counter()
        rows[strategy_id] = {
            "float64": loose.correct_count,
            "rigorous": strict.correct_count,
            "checker": _checker_count(path, strategy_id),
            "flops": flops,
            "float64_seconds": middle - start,  # includes FLOP-counting overhead
            "rigorous_seconds": end - middle,
        }
    record = {"seed": seed, "exact": exact_accuracy(model).correct, "rows": rows}
    text = json.dumps(record)
    atomic_write(out, lambda tmp: Path(tmp).write_text(text))
    return record


def report(records: list[dict], wall: float, jobs: int) -> None:
    print(f"models: {len(records)}; machine: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, {jobs} jobs; wall {wall:.0f} s")  # fmt: skip
    header = (
        f"{'strategy':<16}{'normalised bound':>20}{'min':>8}{'log2 FLOPs':>12}"
        f"{'f64 s':>8}{'rig. s':>8}{'rig.=f64':>10}{'checker=':>10}"
    )
    print(header)
    print("-" * len(header))
    for strategy_id in IDS:
        rows = [(r["rows"][strategy_id], r["exact"]) for r in records]
        nb = [row["float64"] / exact for row, exact in rows]
        flops = [log2(row["flops"]) for row, _ in rows]
        same = sum(row["rigorous"] == row["float64"] for row, _ in rows)
        checked = [row for row, _ in rows if row["checker"] is not None]
        agree = sum(row["checker"] == row["float64"] for row in checked)
        assert all(row["rigorous"] <= row["float64"] for row, _ in rows)
        print(
            f"{strategy_id:<16}{statistics.fmean(nb):>12.4f} ± {statistics.pstdev(nb):.4f}"
            f"{min(nb):>8.4f}{statistics.fmean(flops):>12.2f}"
            f"{statistics.fmean(r['float64_seconds'] for r, _ in rows):>8.3f}"
            f"{statistics.fmean(r['rigorous_seconds'] for r, _ in rows):>8.3f}"
            f"{f'{same}/{len(rows)}':>10}{f'{agree}/{len(checked)}':>10}"
        )


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    records, timings = run_per_seed(run_seed, args)
    report(records, timings["wall"], args.jobs)


if __name__ == "__main__":
    main()
