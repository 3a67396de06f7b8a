"""The 151 paper-seed models shipped with the package (so that `reproduce` gives the same
Table 1 on every machine), and `reproduce --models shipped|train`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from compact_proofs.model.file_format import load_model, shipped_model_path
from compact_proofs.model.seeds import PAPER_SEEDS
from compact_proofs.model.training import TrainingRecipe
from compact_proofs.model.transformer import ModelConfig
from compact_proofs.pipeline.results import model_path
from compact_proofs.pipeline.sweep import use_shipped_models


def test_every_paper_seed_is_shipped_with_its_provenance():
    recipe = TrainingRecipe()
    for seed in PAPER_SEEDS:
        path = shipped_model_path(seed)
        assert path is not None, seed
        mf = load_model(path)
        assert mf.cfg == ModelConfig(), seed
        assert mf.provenance["seed"] == seed
        assert mf.provenance["recipe"]["steps"] == recipe.steps
        assert mf.provenance["trained_on"], seed  # the machine, since training is per CPU
    assert shipped_model_path(10**6) is None


def test_use_shipped_models_copies_exactly_and_keeps_what_is_there(tmp_path):
    seeds = list(PAPER_SEEDS[:3])
    existing = model_path(tmp_path, seeds[0])
    existing.parent.mkdir(parents=True)
    existing.write_bytes(b"a model of this store")
    assert use_shipped_models(tmp_path, [*seeds, 10**6]) == seeds[1:]
    assert existing.read_bytes() == b"a model of this store"
    for seed in seeds[1:]:
        assert model_path(tmp_path, seed).read_bytes() == shipped_model_path(seed).read_bytes()


@pytest.mark.slow
def test_reproduce_proves_the_shipped_model(tmp_path):
    """One paper seed through `reproduce`: the shipped model is proven, not retrained."""
    seed = PAPER_SEEDS[0]
    out = tmp_path / "repro"
    run = subprocess.run(
        [sys.executable, "-m", "compact_proofs.cli", "reproduce", "--seeds", str(seed),
         "--out", str(out), "--jobs", "1"],
        capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert "1 shipped models copied" in run.stdout
    assert model_path(out, seed).read_bytes() == shipped_model_path(seed).read_bytes()
    spec = json.loads((out / "sweep.json").read_text())
    assert spec["seeds"] == [seed]
