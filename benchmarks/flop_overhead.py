"""Cost of measuring proof length: verification with and without the FLOP counter.

    .venv/bin/python benchmarks/flop_overhead.py [--repeats N] [--models N] [--out FILE]

For each strategy family (brute force, cubic, the 100 sub-cubic configurations alone and
verified together as `prove` verifies them, sharing lemmas (`proofs/lemmas.py`),
separable-lite, separable), on the bundled model and a few shipped paper models, the
certificates are searched once (free, not timed); then every certificate is verified
`--repeats` times in both ways, interleaved: `strategy.verify` (plain) and
`strategy.verify_counted` (what `compact-proofs prove` runs: the proof with its FLOPs
measured), rigorous (default) and `--fast` — and a third way, `strategy.verify` under an
empty `TorchDispatchMode` (every operator handed to Python and straight back: the least any
dispatch-mode counter can cost). The table gives, per family and mode, the seconds to verify
all its certificates (the median over the repeats, summed over the models), the ratio
instrumented / plain and the floor's ratio empty mode / plain. A last line counts the aten
operators of the 100 sub-cubic verifications of the bundled model (balls) alone and shared.
One thread; the load average is printed. The table is written to `--out` (default: the
results file below).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from compact_proofs.allocator import retain_freed_memory
from compact_proofs.model.file_format import bundled_model, load_model
from compact_proofs.model.transformer import AttnOnlyTransformer
from compact_proofs.proofs import lemmas
from compact_proofs.proofs.flops import warm_up
from compact_proofs.proofs.registry import STRATEGIES, Strategy
from compact_proofs.proofs.subcubic.strategy import SubcubicStrategy
from compact_proofs.soundness.arithmetic import Arithmetic

PAPER = Path(__file__).resolve().parents[1] / "src" / "compact_proofs" / "data" / "paper"
RESULTS = Path(__file__).resolve().parent / "results-flop-overhead-2026-12-07d.txt"
# family: (its strategies, verified together sharing lemmas as `prove` does)
FAMILIES: dict[str, tuple[Callable[[Strategy], bool], bool]] = {
    "brute-force": (lambda s: s.id == "brute-force", False),
    "cubic": (lambda s: s.id == "cubic", False),
    "subcubic (100)": (lambda s: isinstance(s, SubcubicStrategy), False),
    "subcubic, shared": (lambda s: isinstance(s, SubcubicStrategy), True),
    "separable-lite": (lambda s: s.id == "separable-lite", False),
    "separable": (lambda s: s.id == "separable", False),
    "separable-subcubic": (lambda s: s.id == "separable-subcubic", False),
}


def _models(n_paper: int) -> list[tuple[str, AttnOnlyTransformer]]:
    models = [("bundled", bundled_model().model)]
    for path in sorted(PAPER.glob("seed-*.safetensors"))[:n_paper]:
        models.append((path.stem, load_model(path).model))
    return models


def _time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def verifiers(
    model: AttnOnlyTransformer,
    payloads: list[tuple[Strategy, dict]],
    rigorous: bool,
    shared: bool = False,
) -> tuple[Callable[[], None], Callable[[], None]]:
    """(verify every payload plainly, verify every payload with its FLOPs counted), each
    pass in one lemma-sharing scope of its own if `shared` (as `prove` verifies them)."""
    scope = lemmas.sharing if shared else contextlib.nullcontext

    def plain() -> None:
        with scope():
            for s, p in payloads:
                s.verify(model, p, rigorous=rigorous)

    def counted() -> None:
        with scope():
            for s, p in payloads:
                s.verify_counted(model, p, rigorous=rigorous)

    return plain, counted


def operators_alone_and_shared() -> tuple[int, int]:
    """aten operators of the 100 sub-cubic verifications of the bundled model in balls,
    each alone and all in one lemma-sharing scope."""
    model = bundled_model().model
    payloads = [
        (s, s.search(model)) for s in STRATEGIES.values() if isinstance(s, SubcubicStrategy)
    ]
    counts = []
    for scope in (contextlib.nullcontext, lemmas.sharing):
        with OperatorCount() as ops, scope():
            for s, p in payloads:
                s.verify_in(model, p, Arithmetic.BALL)
        counts.append(ops.calls)
    return counts[0], counts[1]


class EmptyDispatchMode(TorchDispatchMode):
    """Every operator through Python and straight back: a dispatch-mode counter's floor."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


class OperatorCount(EmptyDispatchMode):
    """EmptyDispatchMode that counts the aten operators it hands back (`calls`)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


def _family_seconds(
    model: AttnOnlyTransformer,
    strategies: list[Strategy],
    rigorous: bool,
    repeats: int,
    shared: bool,
) -> tuple[float, float, float]:
    """Median over `repeats` of the family's total plain, instrumented and floor seconds."""
    payloads = [(s, s.search(model)) for s in strategies]
    plain, counted = verifiers(model, payloads, rigorous, shared)

    def floor() -> None:
        with EmptyDispatchMode():
            plain()

    times: list[list[float]] = [[], [], []]
    for _ in range(repeats):
        for column, fn in zip(times, (plain, counted, floor), strict=True):
            column.append(_time(fn))
    return statistics.median(times[0]), statistics.median(times[1]), statistics.median(times[2])


def run(repeats: int, n_paper: int) -> list[str]:
    """Measure every family on every model; return the report's lines."""
    warm_up()
    models = _models(n_paper)
    lines = [
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
        f"models: {', '.join(name for name, _ in models)}, median of {repeats}",
        f"{'family':18s} {'mode':8s} {'plain s':>9s} {'instr. s':>9s} {'ratio':>6s}"
        f" {'floor s':>9s} {'ratio':>6s}",
    ]
    print(*lines, sep="\n", flush=True)
    for family, (member, shared) in FAMILIES.items():
        strategies = [s for s in STRATEGIES.values() if member(s)]
        for rigorous in (True, False):
            plain = counted = floor = 0.0
            for _, model in models:
                p, c, f = _family_seconds(model, strategies, rigorous, repeats, shared)
                plain, counted, floor = plain + p, counted + c, floor + f
            mode = "rigorous" if rigorous else "fast"
            line = (
                f"{family:18s} {mode:8s} {plain:9.3f} {counted:9.3f} {counted / plain:6.2f}"
                f" {floor:9.3f} {floor / plain:6.2f}"
            )
            lines.append(line)
            print(line, flush=True)
    n_alone, n_shared = operators_alone_and_shared()
    lines.append(f"aten operators, 100 sub-cubic verifications (bundled, balls): {n_alone} alone, "
                 f"{n_shared} sharing lemmas")  # fmt: skip
    print(lines[-1], flush=True)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    lines.append(f"load average after the run: {load}")
    print(lines[-1])
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", type=int, default=3, help="paper models besides bundled")
    parser.add_argument("--out", type=Path, default=RESULTS, help="also write the table here")
    args = parser.parse_args()
    retain_freed_memory()  # as the CLI does
    torch.set_num_threads(1)
    lines = run(args.repeats, args.models)
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
