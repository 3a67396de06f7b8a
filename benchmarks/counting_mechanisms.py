"""What counting FLOPs could cost, by mechanism: the 100 sub-cubic verifications of the bundled
model (rigorous, one thread), plain and under each way torch offers to observe operators.

    .venv/bin/python benchmarks/counting_mechanisms.py [--repeats N] [--out FILE]

Rows: plain `verify` against itself (the noise); `verify_counted` (our `FlopCounter`, a
TorchDispatchMode with the cost rules); an empty TorchDispatchMode (every aten operator
through Python and back: the floor of any dispatch-mode counter); an empty TorchFunctionMode
(one Python call per torch *API* call, composite ones included, so the per-aten-operator
rules would not apply to what it sees);
`torch.profiler` without and with `record_shapes` (C++ callbacks; shapes are what a rule
would need). Each mechanism runs in its own process (a profiler session leaves state behind
that slows later Python modes), timed `--repeats` times interleaved with plain verification
in that process; the table gives the medians and their ratio. The number of aten operators
per verification is counted once. This is the evidence behind issue 15's item 3
(instrumentation <= 1.2x): no per-operator observer reaches it at paper sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

from compact_proofs.allocator import retain_freed_memory
from compact_proofs.model.file_format import bundled_model
from compact_proofs.model.transformer import AttnOnlyTransformer
from compact_proofs.proofs.flops import warm_up
from compact_proofs.proofs.registry import STRATEGIES, Strategy
from compact_proofs.proofs.subcubic.strategy import SubcubicStrategy
from flop_overhead import EmptyDispatchMode, OperatorCount, verifiers  # benchmarks/ on sys.path

RESULTS = Path(__file__).resolve().parent / "results-counting-mechanisms-2026-12-07.txt"


class _EmptyFunction(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def _ways(plain: Callable[[], None], counted: Callable[[], None]) -> dict[str, Callable[[], None]]:
    def under(mode_factory: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            with mode_factory():  # type: ignore[attr-defined]
                plain()

        return run

    cpu = [torch.profiler.ProfilerActivity.CPU]
    return {
        "plain again (noise)": plain,
        "FlopCounter (ours)": counted,
        "empty TorchDispatchMode": under(EmptyDispatchMode),
        "empty TorchFunctionMode": under(_EmptyFunction),
        "profiler, no shapes": under(lambda: torch.profiler.profile(activities=cpu)),
        "profiler, record_shapes": under(
            lambda: torch.profiler.profile(activities=cpu, record_shapes=True)
        ),
    }


def _payloads() -> tuple[AttnOnlyTransformer, list[tuple[Strategy, dict]]]:
    model = bundled_model().model
    strategies = [s for s in STRATEGIES.values() if isinstance(s, SubcubicStrategy)]
    return model, [(s, s.search(model)) for s in strategies]


def measure(way: str, repeats: int) -> dict[str, float]:
    """In this process: median seconds of plain verification and of `way`, interleaved."""
    warm_up()
    model, payloads = _payloads()
    plain, counted = verifiers(model, payloads, rigorous=True)
    fns = {"plain": plain, way: _ways(plain, counted)[way]}
    for fn in fns.values():  # warm both paths once
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    ops = OperatorCount()
    with ops:
        plain()
    return {
        "plain": statistics.median(times["plain"]),
        "way": statistics.median(times[way]),
        "ops": ops.calls / len(payloads),
    }


def run(repeats: int) -> list[str]:
    """One subprocess per mechanism; return the report's lines."""
    rows, ops = [], 0.0
    for way in _ways(lambda: None, lambda: None):
        command = [sys.executable, __file__, "--way", way, "--repeats", str(repeats)]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        ops = result["ops"]
        rows.append(
            f"{way:26s} {result['plain']:8.3f} {result['way']:8.3f} "
            f"{result['way'] / result['plain']:6.2f}"
        )
        print(rows[-1], flush=True)
    return [
        f"torch {torch.__version__}, 1 thread, bundled model, 100 sub-cubic verifications "
        f"(rigorous), median of {repeats}, one process per mechanism; {ops:.0f} aten "
        "operators per verification",
        f"{'mechanism':26s} {'plain s':>8s} {'with s':>8s} {'ratio':>6s}",
        *rows,
        "load average after the run: " + " ".join(f"{x:.2f}" for x in os.getloadavg()),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS, help="also write the table here")
    parser.add_argument("--way", help=argparse.SUPPRESS)  # one mechanism, in this process
    args = parser.parse_args()
    retain_freed_memory()
    torch.set_num_threads(1)
    if args.way:
        print(json.dumps(measure(args.way, args.repeats)))
        return
    lines = run(args.repeats)
    print(*lines, sep="\n")
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
