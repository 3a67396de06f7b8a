"""Structureless-noise experiment: real EQKE residual vs Gaussian residuals."""

from __future__ import annotations

import json

import pytest
import torch

from compact_proofs.analysis.noise import (
    NoiseResult,
    _evou_variant,
    _outside_top,
    noise_experiment,
    separable_subcubic_noise,
)
from compact_proofs.cli import main
from compact_proofs.model.file_format import save_model
from compact_proofs.proofs.paths import path_matrices
from compact_proofs.proofs.registry import get_strategy
from compact_proofs.proofs.separable_subcubic import SeparableSubcubic
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
    assert [r["strategy"].rsplit("-err-", 1)[-1] for r in records] == [
        "svd",
        "max-diff",
        "mean+max-diff",
        "separable-subcubic: EQKE beyond rank 1",
        "separable-subcubic: EVOU outside the top-r",
    ]
    assert all("error_z" in r and "bound_z" in r for r in records)
    assert all(r["arithmetic"] == "float64" for r in records)  # counterfactuals: not proofs


def test_cli_noise_labels_its_bounds_as_not_proofs(tmp_path, capsys):
    path = tmp_path / "m.safetensors"
    save_model(trained_model(8, 3, 16, steps=300, seed=0), path)
    assert main(["noise", str(path), "--draws", "2"]) == 0
    out = capsys.readouterr().out
    assert "bound real (float64)" in out and "NOT proofs" in out


def test_separable_subcubic_residuals_reproduce_the_strategy_bound():
    """The real residual's bound is the strategy's float64 count; the draws are reproducible
    and keep what the proof explains (EVOU's top-r entries per row)."""
    model = trained_model(8, 3, 16, steps=300, seed=0)
    results = separable_subcubic_noise(model, draws=3, seed=1)
    fast = SeparableSubcubic().verify(model, {}, rigorous=False).bound
    assert [r.real_bound for r in results] == [fast, fast]
    assert all(len(r.random_bounds) == len(r.random_errors) == 3 for r in results)
    assert all(0 <= b <= 1 for r in results for b in r.random_bounds)
    assert results == separable_subcubic_noise(model, draws=3, seed=1)
    paths = path_matrices(model)
    kept = ~_outside_top(paths, 2)
    noisy = _evou_variant(paths, torch.Generator().manual_seed(0), 2)
    assert torch.equal(noisy.EVOU[kept], paths.EVOU[kept])
    assert not torch.equal(noisy.EVOU, paths.EVOU)


def test_the_noise_figure_labels_its_bounds_as_not_proofs():
    from compact_proofs.pipeline.report import plot_noise

    result = NoiseResult("s", 1.0, [1.0, 2.0], 0.5, [0.4, 0.6])
    fig = plot_noise([result], seed=1)
    assert "NOT a proof" in fig.axes[1].get_ylabel()
