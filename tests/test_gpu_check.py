"""benchmarks/gpu_check.py, the prepared GPU run: its logic is checked here on the CPU (a dry
run, CPU against CPU); on a machine without CUDA it refuses to pretend."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600, env=env
    )


@pytest.mark.slow
def test_dry_run_on_the_cpu_compares_every_count():
    run = _run("--device", "cpu", "--small")
    assert run.returncode == 0, run.stderr[-2000:]
    assert "counts identical on every check" in run.stdout
    assert run.stdout.count("bundled (4, 64)") == 5 and run.stdout.count("ideal (5, 16)") == 3


def test_without_cuda_it_says_so():
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: the real check runs instead (benchmarks/gpu_check.py)")
    run = _run()
    assert run.returncode == 2 and "no CUDA GPU here" in run.stdout
