"""Cross-check at scale: the independent checker against the main verifier on the paper's models.

    python benchmarks/crosscheck.py [--seeds paper] [--jobs 2] [--cache .crosscheck]

For every seed: train the model with the batched trainer (`sweep.train_seeds`, i.e.
`batched_training.train_many`; cached under CACHE/models, gitignored), prove all 102
strategies with `runner.prove` (result + certificate), write the certificate file, run
`checker.check_certificates` on it, and compare the certified counts pair by pair. Per-seed
results are cached in CACHE/results, so an interrupted run resumes. Prints: pairs compared,
pairs agreeing exactly, pairs where the checker is lower (largest difference) and where it is
HIGHER (must be 0), and timings.
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
from compact_proofs.proofs.certificates import CertificateFile, save_certificates
from compact_proofs.proofs.registry import STRATEGIES
from compact_proofs.proofs.runner import prove
from compact_proofs.soundness.checker import check_certificates
from paper_models import arguments, run_per_seed


def _kind(strategy: str) -> str:
    return strategy if strategy in ("brute-force", "cubic") else "sub-cubic"


def check_seed(cache: str, seed: int) -> dict:
    """Prove all strategies on one seed's model, check the certificates; cached as JSON."""
    torch.set_num_threads(1)
    out = Path(cache) / "results" / f"seed-{seed}.json"
    if out.exists():
        return json.loads(out.read_text())
    task_start = time.perf_counter()
    path = model_path(Path(cache), seed)
    model = load_model(path).model
    rows, certs = {}, []
    for strategy in STRATEGIES.values():
        start = time.perf_counter()
        result, cert = prove(model, strategy)
        rows[strategy.id] = {
            "main": result.correct_count,
            "prove_seconds": time.perf_counter() - start,
        }
        certs.append(cert)
    with tempfile.TemporaryDirectory() as tmp:
        cert_path = Path(tmp) / "certificates.json"
        save_certificates(cert_path, CertificateFile(weights_digest(model), model.cfg, certs))
        start = time.perf_counter()
        checked = check_certificates(path, cert_path)
        check_wall = time.perf_counter() - start
    for r in checked:
        rows[r.strategy].update(checker=r.correct_count, check_seconds=r.seconds)
    record = {"seed": seed, "rows": rows, "check_wall": check_wall,
              "task_seconds": time.perf_counter() - task_start}  # fmt: skip
    text = json.dumps(record)
    atomic_write(out, lambda tmp: Path(tmp).write_text(text))
    return record


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    records, t = run_per_seed(check_seed, args)
    report(records, t["wall"], t["train_wall"], t["train_cpu"], int(t["trained"]), args.jobs)


def report(
    records: list[dict], wall: float, train_wall: float, train_cpu: float, trained: int, jobs: int
) -> None:
    pairs = agree = 0
    lower, higher = [], []
    seconds: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for rec in sorted(records, key=lambda r: r["seed"]):
        for strategy, row in rec["rows"].items():
            pairs += 1
            diff = row["checker"] - row["main"]
            if diff == 0:
                agree += 1
            elif diff < 0:
                lower.append((-diff, rec["seed"], strategy, row["main"], row["checker"]))
            else:
                higher.append((diff, rec["seed"], strategy, row["main"], row["checker"]))
            s = seconds[_kind(strategy)]
            s[0] += row["prove_seconds"]
            s[1] += row["check_seconds"]
            s[2] += 1
    print()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores (shared), torch "
        f"{torch.__version__}; {jobs} workers"
    )
    print(f"{len(records)} models x {len(STRATEGIES)} strategies")
    print()
    print("| quantity | value |")
    print("|---|---|")
    print(f"| pairs (model, strategy) compared | {pairs} |")
    print(f"| pairs agreeing exactly | {agree} |")
    worst = ""
    if lower:
        diff, seed, strategy = max(lower)[:3]
        worst = f" (largest difference {diff}: seed {seed}, {strategy})"
    print(f"| pairs where the checker is lower | {len(lower)}{worst} |")
    print(f"| pairs where the checker is HIGHER (must be 0) | {len(higher)} |")
    for item in sorted(higher, reverse=True)[:20]:
        print(f"|   higher by {item[0]}: seed {item[1]}, {item[2]} (main {item[3]}) | |")
    for item in sorted(lower, reverse=True)[:20]:
        print(f"|   lower by {item[0]}: seed {item[1]}, {item[2]} (main {item[3]}) | |")
    print()
    print("| stage | seconds (summed over workers) | per pair |")
    print("|---|---|---|")
    for kind in ("brute-force", "cubic", "sub-cubic"):
        prove_s, check_s, n = seconds[kind]
        if n:
            print(f"| {kind}: main prove (search + verify + FLOP count) | {prove_s:.1f} | "
                  f"{prove_s / n:.3f} |")  # fmt: skip
            print(f"| {kind}: checker | {check_s:.1f} | {check_s / n:.3f} |")
    print(f"| training ({trained} models, batched) | {train_cpu:.1f} | |")
    task = sum(r["task_seconds"] for r in records)
    print(f"| per-model tasks (prove all + check all), summed | {task:.1f} | |")
    print()
    print(f"wall time: {wall:.1f} s total ({train_wall:.1f} s training), {wall / 60:.1f} min")


if __name__ == "__main__":
    main()
