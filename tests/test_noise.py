"""Structureless-noise experiment: real EQKE residual vs Gaussian residuals."""

from __future__ import annotations

import json

import pytest

from compact_proofs.analysis.noise import noise_experiment
from compact_proofs.cli import main
from compact_proofs.model.file_format import save_model
from compact_proofs.proofs.registry import get_strategy
from compact_proofs.proofs.subcubic.config import SubcubicConfig

from models import trained_model


@pytest.mark.parametrize("error", ["svd", "max_diff", "mean+max_diff"])
def test_real_residual_reproduces_the_strategy_bound(error):
    model = trained_model(8, 3, 16, steps=300, seed=0)
    config = SubcubicConfig(error=error)
    result = noise_experiment(model, config, draws=3, seed=1)
    strategy = get_strategy(config.id)
    assert result.real_bound == strategy.verify(model, strategy.search(model)).bound
    assert len(result.random_errors) == len(result.random_bounds) == 3
    assert all(0 <= b <= 1 for b in result.random_bounds)
    assert result == noise_experiment(model, config, draws=3, seed=1)  # reproducible


def test_route_b_and_exact_configurations_are_refused():
    model = trained_model(6, 3, 16, steps=50, seed=0)
    with pytest.raises(ValueError, match="route-A"):
        noise_experiment(model, SubcubicConfig(error="max_diff_subproduct"))


def test_cli_noise_json(tmp_path, capsys):
    path = tmp_path / "m.safetensors"
    save_model(trained_model(8, 3, 16, steps=300, seed=0), path)
    assert main(["noise", str(path), "--draws", "3", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["strategy"].rsplit("-err-", 1)[1] for r in records] == [
        "svd",
        "max-diff",
        "mean+max-diff",
    ]
    assert all("error_z" in r and "bound_z" in r for r in records)
