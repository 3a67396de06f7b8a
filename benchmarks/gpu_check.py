"""The CUDA path, checked and timed in one run: counts on the GPU must equal the CPU's.

For the bundled Max-of-4 model and a (K, v) = (10, 128) model, runs on the CPU and on
`--device` (default cuda): exact accuracy (bundled model only: 128^10 inputs cannot be
enumerated), and the strategies cubic, the paper's default sub-cubic configuration,
separable-lite and separable (bundled model only: at (10, 128) its 2^9 position sets take
over 3 minutes on a 2-core CPU), in the default (rigorous) mode; prints a table of counts and
seconds per device and exits 1 if any count differs. Finishes in a few minutes on a GPU
machine. On a machine without CUDA it says so and exits 2, unless `--device cpu` (a dry run of
the script itself: CPU against CPU, as the tests do with `--small`).

    python benchmarks/gpu_check.py [--device cuda] [--small]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from compact_proofs.model.file_format import bundled_model
from compact_proofs.model.transformer import AttnOnlyTransformer
from compact_proofs.proofs.exhaustive import exact_accuracy
from compact_proofs.proofs.registry import get_strategy
from compact_proofs.proofs.runner import prove
from compact_proofs.proofs.subcubic.config import SubcubicConfig

from models import ideal_model

Check = Callable[[AttnOnlyTransformer], int]

STRATEGIES = ("cubic", SubcubicConfig().id, "separable-lite", "separable")


def models(small: bool) -> dict[str, AttnOnlyTransformer]:
    """The bundled model and a hand-built, slightly noisy long-context solver (tests/models.py)."""
    v, k = (16, 5) if small else (128, 10)
    return {
        "bundled (4, 64)": bundled_model().model,
        f"ideal ({k}, {v})": ideal_model(v, k, noise=0.01),
    }


def timed(check: Check, model: AttnOnlyTransformer) -> tuple[int, float]:
    start = time.perf_counter()
    value = check(model)
    if model.W_E.device.type == "cuda":
        torch.cuda.synchronize()
    return value, time.perf_counter() - start


def checks(name: str) -> dict[str, Check]:
    out: dict[str, Check] = {}
    if name.startswith("bundled"):
        out["exact accuracy"] = lambda m: exact_accuracy(m).correct
    for sid in STRATEGIES if name.startswith("bundled") else STRATEGIES[:-1]:
        out[sid[:44]] = lambda m, sid=sid: prove(m, get_strategy(sid))[0].correct_count
    return out


def run(device: torch.device, small: bool) -> list[tuple[str, str, int, float, int, float]]:
    """(model, check, CPU count, CPU s, device count, device s) for every check."""
    rows = []
    for name, model in models(small).items():
        cpu_model, dev_model = model.to("cpu"), model.to(device)
        for label, check in checks(name).items():
            cpu_count, cpu_s = timed(check, cpu_model)
            dev_count, dev_s = timed(check, dev_model)
            rows.append((name, label, cpu_count, cpu_s, dev_count, dev_s))
            print(f"{name:16} {label:44} {cpu_count:>10} {cpu_s:7.2f} {dev_count:>10} {dev_s:7.2f}")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--small", action="store_true", help="a (5, 16) model instead of (10, 128)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU here: run this on a GPU machine (or --device cpu for a dry run)")
        return 2
    device = torch.device(args.device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(f"device: {gpu}; torch {torch.__version__}; CPU threads {torch.get_num_threads()}")
    head = ("model", "check", "CPU count", "CPU s", "dev count", "dev s")
    print("{:16} {:44} {:>10} {:>7} {:>10} {:>7}".format(*head))
    rows = run(device, args.small)
    bad = [(m, c) for m, c, a, _, b, _ in rows if a != b]
    print("counts identical on every check" if not bad else f"COUNTS DIFFER: {bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
