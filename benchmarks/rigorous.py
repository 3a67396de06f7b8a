"""Rigorous vs float64 verification on the paper's models: how much does rigour cost?

    python benchmarks/rigorous.py [--seeds paper] [--jobs 2] [--cache .crosscheck]

For every seed (model trained by the batched trainer and cached under CACHE/models, shared with
benchmarks/crosscheck.py) and every one of the 102 strategies: search once, then verify the
same certificate in float64 and in rigorous (interval) mode. Per-seed results are cached in
CACHE/rigorous, so an interrupted run resumes. Prints, per strategy kind: pairs, pairs with
equal counts, mean and max normalised bound difference (float64 - rigorous; never negative),
and verification seconds in each mode.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections import defaultdict
from pathlib import Path

import torch

from compact_proofs.modelfile import atomic_write, load_model
from compact_proofs.proofs import STRATEGIES
from compact_proofs.results import model_path
from paper_models import arguments, run_per_seed


def compare_seed(cache: str, seed: int) -> dict:
    """Float64 and rigorous counts of every strategy on one seed's model (cached as JSON)."""
    torch.set_num_threads(1)
    out = Path(cache) / "rigorous" / f"seed-{seed}.json"
    if out.exists():
        return json.loads(out.read_text())
    model = load_model(model_path(Path(cache), seed)).model
    rows = {}
    for strategy in STRATEGIES.values():
        payload = strategy.search(model)
        start = time.perf_counter()
        loose = strategy.verify(model, payload)
        middle = time.perf_counter()
        strict = strategy.verify(model, payload, rigorous=True)
        rows[strategy.id] = {
            "float64": loose.correct_count,
            "rigorous": strict.correct_count,
            "total": loose.total,
            "float64_seconds": middle - start,
            "rigorous_seconds": time.perf_counter() - middle,
        }
    text = json.dumps({"seed": seed, "rows": rows})
    atomic_write(out, lambda tmp: Path(tmp).write_text(text))
    return json.loads(text)


def report(records: list[dict], wall: float, jobs: int) -> None:
    kinds: dict[str, list[dict]] = defaultdict(list)
    for rec in records:
        for strategy, row in rec["rows"].items():
            kind = strategy if strategy in ("brute-force", "cubic") else "sub-cubic"
            kinds[kind].append(row)
            kinds["all"].append(row)
    print(f"models: {len(records)}; machine: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, {jobs} jobs; wall {wall:.0f} s")  # fmt: skip
    header = (
        f"{'kind':<12}{'pairs':>7}{'equal':>7}{'mean diff':>12}{'max diff':>11}"
        f"{'float64 s':>11}{'rigorous s':>12}{'ratio':>7}"
    )
    print(header)
    print("-" * len(header))
    for kind in ("brute-force", "cubic", "sub-cubic", "all"):
        rows = kinds[kind]
        if not rows:
            continue
        diffs = [(r["float64"] - r["rigorous"]) / r["total"] for r in rows]
        assert min(diffs) >= 0, "rigorous certified more than float64"
        loose = sum(r["float64_seconds"] for r in rows)
        strict = sum(r["rigorous_seconds"] for r in rows)
        equal = sum(d == 0 for d in diffs)
        print(
            f"{kind:<12}{len(rows):>7}{equal:>7}{sum(diffs) / len(diffs):>12.2e}"
            f"{max(diffs):>11.2e}{loose:>11.1f}{strict:>12.1f}{strict / loose:>7.1f}"
        )


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    records, timings = run_per_seed(compare_seed, args)
    report(records, timings["wall"], args.jobs)


if __name__ == "__main__":
    main()
