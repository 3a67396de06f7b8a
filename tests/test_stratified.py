"""Stratified accuracy estimate over the cubic proof's cells (statistical, not a proof)."""

from __future__ import annotations

import json

import pytest
import torch
from scipy.stats import chisquare

from compact_proofs.analysis.estimate import estimate_accuracy
from compact_proofs.analysis.stratified import (
    _cell_weights,
    _draw,
    certify_cells,
    stratified_estimate,
)
from compact_proofs.cli import main
from compact_proofs.model.file_format import save_model
from compact_proofs.proofs.cubic import Cubic, cubic_tables, proven_mask
from compact_proofs.proofs.exhaustive import all_sequences, exact_accuracy
from compact_proofs.proofs.paths import path_matrices

from models import ideal_model, trained_model

MODELS = {
    "trained-6-3": lambda: trained_model(6, 3, 16, steps=100, seed=0),
    "trained-5-4": lambda: trained_model(5, 4, 16, steps=200, seed=1),
    "noisy-ideal-6-4": lambda: ideal_model(6, 4, noise=0.6, seed=3, pos_scale=0.5),
}


def _flat(tokens: torch.Tensor, v: int) -> torch.Tensor:
    k = tokens.shape[-1]
    return (tokens * v ** torch.arange(k - 1, -1, -1)).sum(-1)


@pytest.mark.parametrize("name", list(MODELS))
def test_samples_are_uniform_over_the_uncertified_inputs(name):
    model = MODELS[name]()
    v, k = model.cfg.d_vocab, model.cfg.n_ctx
    cells = certify_cells(model)
    assert cells.certified == Cubic().verify(model, {}).correct_count
    seqs = all_sequences(v, k)
    proven = proven_mask(cubic_tables(path_matrices(model)), seqs)
    uncertified = _flat(seqs[~proven], v)
    weights = _cell_weights(cells, v, k)
    assert float(weights.sum()) == len(uncertified)
    gen = torch.Generator().manual_seed(0)
    n = 40 * len(uncertified)
    tokens = _draw(cells, torch.multinomial(weights, n, replacement=True, generator=gen), v, k, gen)
    counts = torch.bincount(_flat(tokens, v), minlength=v**k)
    assert int(counts[_flat(seqs[proven], v)].sum()) == 0, "sampled a certified input"
    observed = counts[uncertified].double().numpy()
    assert chisquare(observed).pvalue > 1e-4  # fixed seed: deterministic


@pytest.mark.parametrize("name", list(MODELS))
def test_interval_covers_the_exact_accuracy_and_beats_uniform(name):
    model = MODELS[name]()
    exact = exact_accuracy(model).accuracy
    strat = stratified_estimate(model, samples=4000, confidence=0.99, seed=1)
    N = model.cfg.n_inputs
    assert strat.certified / N <= strat.lower <= exact <= strat.upper
    assert strat.lower <= strat.estimate <= strat.upper
    uniform = estimate_accuracy(model, samples=4000, confidence=0.99, seed=1)
    assert strat.upper - strat.lower < uniform.upper - uniform.lower


def test_everything_certified_gives_a_degenerate_interval():
    model = ideal_model(5, 3)
    assert Cubic().verify(model, {}).correct_count == model.cfg.n_inputs
    est = stratified_estimate(model, samples=100)
    assert (est.lower, est.estimate, est.upper, est.samples) == (1.0, 1.0, 1.0, 0)


def test_cli_stratified_estimate(tmp_path, capsys):
    path = tmp_path / "m.safetensors"
    save_model(MODELS["trained-6-3"](), path)
    code = main(
        ["accuracy", str(path), "--estimate", "--method", "stratified", "--samples", "500",
         "--json"]
    )  # fmt: skip
    assert code == 0
    record = json.loads(capsys.readouterr().out)
    assert record["method"] == "stratified-cubic" and record["kind"] == "estimate (not a proof)"
    assert record["lower"] <= record["estimate"] <= record["upper"]
    assert record["certified"] > 0
