"""Sweeps: resumable after SIGKILL, identical rows on the Dask backend, spec checks."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from compact_proofs.errors import CompactProofsError
from compact_proofs.model.training import TrainingRecipe
from compact_proofs.model.transformer import ModelConfig
from compact_proofs.pipeline.results import COLUMNS, done_seeds
from compact_proofs.pipeline.sweep import SweepSpec, run_sweep
from compact_proofs.proofs.subcubic.config import SubcubicConfig

pytestmark = pytest.mark.slow

CFG = ModelConfig(d_vocab=6, n_ctx=3, d_model=8, d_head=8)
RECIPE = TrainingRecipe(steps=150)
STRATEGIES = (
    "brute-force",
    "cubic",
    SubcubicConfig().id,
    SubcubicConfig("max_diff_exact", "mean_query+diff", "svd").id,
)
SPEC = SweepSpec(seeds=(1, 2, 3, 4), strategies=STRATEGIES, config=CFG, recipe=RECIPE)
TIMINGS = ["search_seconds", "verify_seconds"]
CLI = [
    sys.executable,
    "-m",
    "compact_proofs.cli",
    "sweep",
    "--seeds",
    "1-4",
    "--strategy",
    ",".join(STRATEGIES),
    "--d-vocab",
    "6",
    "--n-ctx",
    "3",
    "--d-model",
    "8",
    "--steps",
    "150",
    "--jobs",
    "2",
]


def table(results_dir: Path) -> pd.DataFrame:
    return pd.read_csv(results_dir / "results.csv").drop(columns=TIMINGS)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    summary = run_sweep(out, SPEC, jobs=2)
    assert summary.seeds_done == 4 and summary.rows == 4 * len(STRATEGIES)
    return out


def test_results_store_schema(reference):
    df = pd.read_csv(reference / "results.csv")
    assert list(df.columns) == list(COLUMNS)
    assert (df["bound"] <= df["exact_accuracy"] + 1e-12).all()
    assert (df.loc[df.strategy == "brute-force", "normalized_bound"] == 1.0).all()
    assert set(df.seed) == {1, 2, 3, 4}


def test_resume_after_sigkill_gives_the_same_results(reference, tmp_path):
    out = tmp_path / "killed"
    rng = random.Random(os.getpid())
    proc = subprocess.Popen(
        [*CLI, "--out", str(out)],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not list(out.glob("models/seed-*.safetensors")) and time.monotonic() < deadline:
        time.sleep(0.05)  # wait until the sweep is really working
    time.sleep(rng.uniform(0.0, 1.0))  # then kill it at a random point
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its worker processes
    proc.wait()
    partial = done_seeds(out)
    for path in (out / "rows").glob("seed-*.csv") if (out / "rows").exists() else []:
        assert len(pd.read_csv(path)) == len(STRATEGIES)  # never a half-written row file
    done = subprocess.run([*CLI, "--out", str(out), "--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert len(done_seeds(out)) == 4
    pd.testing.assert_frame_equal(table(out), table(reference))
    assert not list(out.glob("*/.*.tmp"))
    print(f"killed after {len(partial)} stored seeds")


def test_resume_recomputes_nothing(reference):
    summary = run_sweep(reference, SPEC, jobs=2)
    assert summary.seeds_computed == 0 and summary.seeds_done == 4


def test_dask_backend_gives_identical_rows(reference, tmp_path):
    out = tmp_path / "dask"
    summary = run_sweep(out, SPEC, jobs=2, backend="dask")
    assert summary.seeds_computed == 4
    pd.testing.assert_frame_equal(table(out), table(reference))


def test_a_directory_holds_one_kind_of_sweep(reference):
    other = SweepSpec(seeds=(1,), strategies=("cubic",), config=CFG, recipe=RECIPE)
    with pytest.raises(CompactProofsError, match="different strategies"):
        run_sweep(reference, other)


def test_rows_record_the_arithmetic_and_a_store_keeps_one(tmp_path):
    """Rows say whether they are proofs; --fast and the default cannot share a store, and a
    store written before the column existed (float64) is not resumed rigorously."""
    spec = SweepSpec(seeds=(1,), strategies=STRATEGIES[:2], config=CFG, recipe=RECIPE)
    run_sweep(tmp_path / "a", spec, jobs=1)
    rows = pd.read_csv(tmp_path / "a" / "results.csv")
    assert rows["rigorous"].all() and set(rows["arithmetic"]) <= {"ball", "interval"}
    fast = SweepSpec(spec.seeds, spec.strategies, CFG, RECIPE, rigorous=False)
    with pytest.raises(CompactProofsError, match="arithmetic"):
        run_sweep(tmp_path / "a", fast, jobs=1)
    run_sweep(tmp_path / "b", fast, jobs=1)
    rows = pd.read_csv(tmp_path / "b" / "results.csv")
    assert not rows["rigorous"].any() and set(rows["arithmetic"]) == {"float64"}
    stored = (tmp_path / "b" / "sweep.json").read_text().replace('"rigorous": false', '"x": 0')
    (tmp_path / "b" / "sweep.json").write_text(stored)  # as written by older versions
    with pytest.raises(CompactProofsError, match="arithmetic"):
        run_sweep(tmp_path / "b", spec, jobs=1)
    run_sweep(tmp_path / "b", fast, jobs=1)  # resumed as what it is
