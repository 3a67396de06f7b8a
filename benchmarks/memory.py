"""Peak memory and time of every command on paper-size worst-case models.

    python benchmarks/memory.py [--out DIR]

The models (`tests/models.py: paper_size_worst_cases`, v = 64, k = 4, d = 32): huge weights
(attention scores span thousands of nats, so exact accuracy decides every input on its own),
subnormal products (the same attention with value weights of 1e-30) and near-uniform
attention. Each command runs in its own process (one thread), which reports its peak
resident set size; prints a table (seconds, peak MB) per model and command.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from compact_proofs.model.file_format import save_model  # noqa: E402

from models import paper_size_worst_cases  # noqa: E402

COMMANDS = (
    ("accuracy", []),
    ("accuracy --fast", ["--fast"]),
    ("prove --strategy all", ["--strategy", "all"]),
    ("prove --strategy all --fast", ["--strategy", "all", "--fast"]),
    ("loss --strategy cubic", ["--strategy", "cubic"]),
    ("loss", []),
    ("noise --draws 5", ["--draws", "5"]),
)
WRAPPER = (
    "import json, resource, sys, torch\n"
    "torch.set_num_threads(1)\n"
    "from compact_proofs.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024\n"
    "print(json.dumps({'code': code, 'peak': peak}), file=sys.stderr)\n"
)


def run(command: str, args: list[str], model: Path) -> dict:
    argv = [sys.executable, "-c", WRAPPER, command.split()[0], str(model), *args, "--json"]
    if command.startswith("noise") or command.startswith("loss"):
        argv.remove("--json")
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env={**os.environ})
    seconds = time.perf_counter() - start
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    return {"seconds": seconds, "peak": report["peak"], "code": report["code"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="keep the model files here")
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; "
        "one thread per command"
    )
    print()
    print("| model | command | seconds | peak RSS (MB) |")
    print("|---|---|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.out or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        worst = 0
        for name, model in paper_size_worst_cases().items():
            path = folder / f"{name.replace(' ', '-')}.safetensors"
            save_model(model, path)
            for command, extra in COMMANDS:
                r = run(command, extra, path)
                assert r["code"] == 0, (name, command, r)
                worst = max(worst, r["peak"])
                print(f"| {name} | `{command}` | {r['seconds']:.1f} | {r['peak'] / 2**20:.0f} |")
                sys.stdout.flush()
    print()
    print(f"largest peak: {worst / 2**20:.0f} MB")


if __name__ == "__main__":
    main()
