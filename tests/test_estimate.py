"""Accuracy estimates with confidence intervals (statistical, not proofs)."""

from __future__ import annotations

import json

import pytest

from compact_proofs.analysis.estimate import clopper_pearson, estimate_accuracy
from compact_proofs.cli import main
from compact_proofs.errors import UnsupportedModelError
from compact_proofs.model.file_format import save_model
from compact_proofs.model.transformer import ModelConfig
from compact_proofs.proofs.exhaustive import exact_accuracy

from models import random_model, trained_model


def test_clopper_pearson_closed_forms():
    lo, hi = clopper_pearson(10, 10, 0.95)  # all successes: lower = (alpha/2)^(1/n)
    assert hi == 1.0 and lo == pytest.approx(0.025 ** (1 / 10), rel=1e-12)
    lo, hi = clopper_pearson(0, 10, 0.95)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 10), rel=1e-12)
    lo, hi = clopper_pearson(50, 100, 0.99)
    assert lo < 0.5 < hi and hi - 0.5 == pytest.approx(0.5 - lo, rel=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_interval_contains_the_exact_accuracy(seed):
    """Deterministic sampling streams; the 99% interval covers the enumerated truth."""
    model = trained_model(8, 4, 12, 600, 1)
    exact = exact_accuracy(model).accuracy
    est = estimate_accuracy(model, samples=20_000, confidence=0.99, seed=seed)
    assert est.lower <= est.estimate <= est.upper
    assert est.lower <= exact <= est.upper
    assert est == estimate_accuracy(model, samples=20_000, confidence=0.99, seed=seed)


def test_cli_estimates_where_enumeration_is_refused(tmp_path, capsys):
    path = tmp_path / "k10.safetensors"
    save_model(random_model(ModelConfig(d_vocab=64, n_ctx=10, d_model=8, d_head=8), 0), path)
    with pytest.raises(UnsupportedModelError, match="years"):
        exact_accuracy(random_model(ModelConfig(d_vocab=64, n_ctx=10, d_model=8, d_head=8), 0))
    assert main(["accuracy", str(path)]) == 1
    assert "--estimate" in capsys.readouterr().err
    assert main(["accuracy", str(path), "--estimate", "--samples", "3000", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["kind"] == "estimate (not a proof)" and record["samples"] == 3000
    assert record["lower"] <= record["estimate"] <= record["upper"]
