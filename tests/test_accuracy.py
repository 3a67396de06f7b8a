"""Exact accuracy: the fast evaluator agrees with the plain forward pass on every input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from compact_proofs.model.file_format import load_model
from compact_proofs.model.transformer import ModelConfig
from compact_proofs.proofs import exhaustive as accuracy
from compact_proofs.proofs.exhaustive import all_sequences, exact_accuracy, is_correct

from conftest import FIXTURES
from models import adversarial_models, ideal_model, random_model, trained_model


def brute_force_count(model) -> int:
    cfg = model.cfg
    return int(is_correct(model, all_sequences(cfg.d_vocab, cfg.n_ctx)).sum())


def test_enumeration_order():
    seqs = all_sequences(3, 2)
    assert seqs.tolist() == [[0, 0], [1, 0], [2, 0], [0, 1], [1, 1], [2, 1], [0, 2], [1, 2], [2, 2]]
    assert torch.equal(all_sequences(5, 3, 7, 20), all_sequences(5, 3)[7:20])


@settings(max_examples=40, deadline=None)
@given(
    v=st.integers(1, 7),
    k=st.integers(1, 5),
    d=st.integers(1, 6),
    seed=st.integers(0, 999),
    scale=st.sampled_from([0.01, 0.3, 1.0, 3.0, 20.0]),
    biases=st.booleans(),
    kind=st.sampled_from(["random", "ideal"]),
)
def test_fast_evaluator_matches_forward(v, k, d, seed, scale, biases, kind):
    if v**k > 20000:
        k = 3
    if kind == "ideal":
        model = ideal_model(v, k, noise=scale / 10, seed=seed)
    else:
        model = random_model(
            ModelConfig(d_vocab=v, n_ctx=k, d_model=d, d_head=d), seed, scale, biases
        )
    result = exact_accuracy(model)
    assert result.total == v**k
    assert result.correct == brute_force_count(model)


@pytest.mark.parametrize("name", list(adversarial_models()))
def test_adversarial_models(name):
    model = adversarial_models()[name]
    assert exact_accuracy(model).correct == brute_force_count(model)


def test_exact_ties_count_as_wrong():
    """With two identical token embeddings the logits of those tokens tie exactly."""
    model = ideal_model(4, 2, seed=0)
    with torch.no_grad():
        model.W_U[:, 3] = model.W_U[:, 2]  # tokens 2 and 3 always get the same logit
    result = exact_accuracy(model)
    assert result.correct == brute_force_count(model)
    seqs = all_sequences(4, 2)
    has_max_2_or_3 = seqs.max(-1).values >= 2
    assert not bool(is_correct(model, seqs)[has_max_2_or_3].any())
    assert result.ties > 0


def test_chunking_over_high_positions(monkeypatch):
    """Force the looped (high-position) path with a tiny chunk size."""
    model = trained_model(6, 5, 8, 200, 0)
    expected = exact_accuracy(model).correct
    monkeypatch.setattr(accuracy, "CHUNK_PAIRS", 6)
    assert exact_accuracy(model).correct == expected == brute_force_count(model)


def test_multi_head_falls_back_to_forward():
    model = random_model(ModelConfig(d_vocab=5, n_ctx=3, d_model=6, d_head=3, n_heads=2), 4)
    assert exact_accuracy(model).correct == brute_force_count(model)


@pytest.mark.skipif(not FIXTURES.exists(), reason="shared fixtures not available")
@pytest.mark.parametrize(("seed", "correct"), [(50, 16771350), (104, 16767679), (123, 16763235)])
def test_reference_exact_accuracy(seed, correct):
    """The reference implementation's exact counts are matched exactly."""
    mf = load_model(FIXTURES / f"reference-maxof4-seed{seed}.safetensors")
    assert exact_accuracy(mf.model).correct == correct


def test_attention_scores_spanning_thousands_of_nats():
    """Most per-query attention weights underflow here; the count still equals the plain
    forward pass's (inputs whose weights nearly underflow are left to the forward pass)."""
    model = ideal_model(6, 3, beta=400.0, alpha=4.0, noise=0.5, seed=3)
    assert exact_accuracy(model).correct == brute_force_count(model)
