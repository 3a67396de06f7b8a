"""What the user feels: whole-process wall time of CLI commands, idle and with the cores busy.

Each command runs as a fresh process (start-up, imports and thread start included), the
median of `--repeat` runs, once per thread setting (`--threads 1`, `--threads 2`, and the
default), first on idle cores, then with `--load` busy-loop processes on the cores (other
work, as on a laptop that is also compiling or training).

    python benchmarks/cli_latency.py [--repeat 3] [--load 2]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

CLI = [sys.executable, "-m", "compact_proofs.cli"]
COMMANDS = {
    "--help": ["--help"],
    "strategies": ["strategies"],
    "accuracy (bundled)": ["accuracy", "BUNDLED"],
    "prove cubic": ["prove", "--strategy", "cubic"],
    "prove (all 104)": ["prove"],
}
THREADED = {"accuracy (bundled)", "prove cubic", "prove (all 104)"}  # take --threads


def _busy() -> None:
    while True:
        pass


@contextmanager
def load(n: int) -> Iterator[None]:
    """`n` processes spinning on the cores while the block runs."""
    procs = [mp.Process(target=_busy, daemon=True) for _ in range(n)]
    for p in procs:
        p.start()
    time.sleep(1.0)
    try:
        yield
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.join()


def wall(argv: list[str], repeat: int) -> float:
    """Median whole-process wall seconds of `argv` (output discarded; must succeed)."""
    times = []
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=env)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bundled_path() -> str:
    from compact_proofs.model.file_format import bundled_model_path

    return str(bundled_model_path())


def rows(repeat: int, busy: int) -> list[tuple[str, str, str, float]]:
    out = []
    bundled = bundled_path()
    for condition, n in (("idle", 0), (f"{busy} busy", busy)):
        with load(n):
            for name, args in COMMANDS.items():
                args = [bundled if a == "BUNDLED" else a for a in args]
                settings = ("default", "1", "2") if name in THREADED else ("default",)
                for threads in settings:
                    extra = [] if threads == "default" else ["--threads", threads]
                    out.append((condition, name, threads, wall([*CLI, *args, *extra], repeat)))
                    line = f"{condition:8} {name:20} threads={threads:8} {out[-1][3]:.2f} s"
                    print(line, file=sys.stderr)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--load", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    print(f"machine: {machine}, Python {platform.python_version()}; median of {args.repeat} runs")
    results = rows(args.repeat, args.load)
    print(f"{'condition':10} {'command':20} {'threads':8} {'wall s':>7}")
    for condition, name, threads, seconds in results:
        print(f"{condition:10} {name:20} {threads:8} {seconds:7.2f}")
    by = {(c, n, t): s for c, n, t, s in results}
    busy = f"{args.load} busy"
    for name in THREADED:
        idle, loaded = by[("idle", name, "default")], by[(busy, name, "default")]
        print(f"{name}: default threads, loaded / idle = {loaded / idle:.2f}")


if __name__ == "__main__":
    main()
