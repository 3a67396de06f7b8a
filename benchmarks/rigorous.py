"""Rigorous by default: what it costs against plain float64 (--fast) on the paper's models.

    python benchmarks/rigorous.py [--seeds paper] [--jobs 2] [--cache .crosscheck]

For every seed (model trained by the batched trainer and cached under CACHE/models, shared with
benchmarks/crosscheck.py) and every registered strategy: search once, then verify the same
certificate with --fast (plain float64) and in the default mode (ball arithmetic, intervals
where balls leave a decision undecided), each timed on its own (`Strategy.verify`, no FLOP
counter), then measure both modes' FLOPs, and re-check the default mode's certificates with
the independent checker. Per-seed results are cached in CACHE/rigorous, so an interrupted run
resumes. Prints, per strategy family and overall: pairs, pairs with equal counts, the
largest count difference either way, pairs that needed the interval re-verification,
seconds in each mode and their ratio, FLOPs ratio; then the checker against the default
mode (pairs compared, agreeing, checker lower, checker HIGHER).
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

from compact_proofs.model.file_format import atomic_write, load_model, weights_digest
from compact_proofs.pipeline.results import model_path
from compact_proofs.proofs.certificates import Certificate, CertificateFile, save_certificates
from compact_proofs.proofs.flops import warm_up
from compact_proofs.proofs.registry import STRATEGIES
from compact_proofs.soundness.checker import check_certificates
from paper_models import arguments, run_per_seed

FAMILIES = ("brute-force", "cubic", "sub-cubic", "separable-lite", "separable")


def family(strategy_id: str) -> str:
    return strategy_id if strategy_id in FAMILIES else "sub-cubic"


def _timed(fn) -> tuple[object, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def compare_seed(cache: str, seed: int) -> dict:
    """Both modes' counts, seconds and FLOPs for every strategy on one seed's model, and the
    checker's counts on the certificates (cached as JSON)."""
    torch.set_num_threads(1)
    warm_up()
    out = Path(cache) / "rigorous" / f"seed-{seed}.json"
    if out.exists():
        return json.loads(out.read_text())
    model = load_model(model_path(Path(cache), seed)).model
    rows, certs = {}, []
    for strategy in STRATEGIES.values():
        payload = strategy.search(model)
        fast, fast_s = _timed(lambda s=strategy, p=payload: s.verify(model, p, rigorous=False))
        default, default_s = _timed(lambda s=strategy, p=payload: s.verify(model, p))
        _, fast_flops = strategy.verify_counted(model, payload, rigorous=False)
        _, default_flops = strategy.verify_counted(model, payload)
        rows[strategy.id] = {
            "fast": fast.correct_count,
            "default": default.correct_count,
            "arithmetic": default.arithmetic.value,
            "total": fast.total,
            "fast_seconds": fast_s,
            "default_seconds": default_s,
            "fast_flops": fast_flops,
            "default_flops": default_flops,
        }
        certs.append(Certificate(strategy.id, payload))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "certificates.json"
        save_certificates(path, CertificateFile(weights_digest(model), model.cfg, certs))
        checked = check_certificates(model_path(Path(cache), seed), path)
    for result in checked:
        rows[result.strategy]["checker"] = result.correct_count
    text = json.dumps({"seed": seed, "rows": rows})
    atomic_write(out, lambda tmp: Path(tmp).write_text(text))
    return json.loads(text)


def report(records: list[dict], wall: float, jobs: int) -> None:
    kinds: dict[str, list[dict]] = defaultdict(list)
    for rec in records:
        for strategy, row in rec["rows"].items():
            kinds[family(strategy)].append(row)
            kinds["all"].append(row)
    print(
        f"models: {len(records)}; machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"{jobs} jobs, torch {torch.__version__}; wall {wall:.0f} s"
    )
    print("default = ball arithmetic (intervals where balls leave a decision undecided)")
    print()
    print(
        "| family | pairs | equal counts | default - fast (min, max) | interval re-verified "
        "| fast s | default s | time ratio | FLOPs ratio |"
    )
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|")
    for kind in (*FAMILIES, "all"):
        rows = kinds[kind]
        if not rows:
            continue
        diffs = [r["default"] - r["fast"] for r in rows]
        fast = sum(r["fast_seconds"] for r in rows)
        default = sum(r["default_seconds"] for r in rows)
        flops = sum(r["default_flops"] for r in rows) / sum(r["fast_flops"] for r in rows)
        print(
            f"| {kind} | {len(rows):,} | {sum(d == 0 for d in diffs):,} | "
            f"{min(diffs):+,}, {max(diffs):+,} | "
            f"{sum(r['arithmetic'] == 'interval' for r in rows):,} | {fast:.1f} | "
            f"{default:.1f} | {default / fast:.2f} | {flops:.3f} |"
        )
    rows = kinds["all"]
    compared = [r for r in rows if "checker" in r]
    lower = [r for r in compared if r["checker"] < r["default"]]
    higher = [r for r in compared if r["checker"] > r["default"]]
    print()
    print("independent checker vs the default mode:")
    print("| pairs compared | agree exactly | checker lower | checker HIGHER (must be 0) |")
    print("|---:|---:|---:|---:|")
    print(
        f"| {len(compared):,} | {len(compared) - len(lower) - len(higher):,} | "
        f"{len(lower):,} | {len(higher):,} |"
    )


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    records, timings = run_per_seed(compare_seed, args)
    report(records, timings["wall"], args.jobs)


if __name__ == "__main__":
    main()
