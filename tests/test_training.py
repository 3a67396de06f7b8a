"""Training recipe: determinism, data stream, frozen biases, learning."""

from __future__ import annotations

import torch

from compact_proofs.model.seeds import train_stream_seed
from compact_proofs.model.training import TrainingRecipe, provenance, sample_batch, train
from compact_proofs.model.transformer import ModelConfig
from compact_proofs.proofs.exhaustive import exact_accuracy

SMALL = ModelConfig(d_vocab=8, n_ctx=3, d_model=12, d_head=12)


def test_batch_draws_equal_per_sample_draws():
    """One [n, k] draw consumes the generator like n draws of shape (k,) (the original)."""
    g1 = torch.Generator().manual_seed(train_stream_seed(123))
    g2 = torch.Generator().manual_seed(train_stream_seed(123))
    tokens, labels = sample_batch(g1, ModelConfig(), 128)
    one_by_one = torch.stack([torch.randint(0, 64, (4,), generator=g2) for _ in range(128)])
    assert torch.equal(tokens, one_by_one)
    assert torch.equal(labels, tokens.max(-1).values)


def test_training_is_bit_identical_and_biases_stay_zero():
    recipe = TrainingRecipe(steps=150)
    a, stats_a = train(SMALL, 5, recipe)
    b, stats_b = train(SMALL, 5, recipe)
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(pa, pb), name
    assert stats_a.train_loss == stats_b.train_loss
    assert a.nonzero_biases() == []
    c, _ = train(SMALL, 6, recipe)
    assert not torch.equal(a.W_E, c.W_E)


def test_training_learns_the_task():
    model, stats = train(SMALL, 0, TrainingRecipe(steps=600))
    assert stats.train_loss < 0.5
    assert exact_accuracy(model).accuracy > 0.9
    meta = provenance(SMALL, 0, TrainingRecipe(steps=600), stats)
    assert meta["seed"] == 0 and meta["recipe"]["steps"] == 600
    assert meta["recipe"]["weight_decay"] == 0.01 and meta["recipe"]["lr"] == 1e-3
