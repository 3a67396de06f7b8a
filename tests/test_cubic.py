"""The cubic proof: cell partition, exhaustive soundness, and reference counts."""

from __future__ import annotations

from math import comb

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from compact_proofs.model.file_format import load_model
from compact_proofs.model.transformer import ModelConfig
from compact_proofs.proofs.base import Strategy
from compact_proofs.proofs.cubic import Cubic, count_correct, cubic_tables, proven_mask
from compact_proofs.proofs.exhaustive import all_sequences, exact_accuracy, is_correct
from compact_proofs.proofs.flops import count_flops
from compact_proofs.proofs.paths import path_matrices
from compact_proofs.soundness.arithmetic import Arithmetic
from compact_proofs.soundness.exact import CORRECT, exact_verdicts

from conftest import FIXTURES
from models import (
    adversarial_models,
    ideal_model,
    ideal_models,
    large_bias_model,
    paper_size_worst_cases,
    random_model,
    trained_model,
    underflow_model,
)

RIGOROUS = (Arithmetic.BALL, Arithmetic.INTERVAL)


def cell_sizes(v: int, k: int) -> int:
    """Sum over valid cubic cells (q, m, c) of C(k-1, c) m^c (SPEC §5.5, §12.4)."""
    total = 0
    for m in range(v):
        for q in range(m + 1):
            for c in range(k if q == m else k - 1):
                total += comb(k - 1, c) * m**c
    return total


@pytest.mark.parametrize(("v", "k"), [(1, 1), (2, 1), (5, 2), (7, 3), (64, 4), (13, 6)])
def test_cells_partition_all_inputs(v, k):
    assert cell_sizes(v, k) == v**k


def test_cells_partition_by_enumeration():
    """Every input lies in exactly the cell the proof assigns it to (v=5, k=4)."""
    v, k = 5, 4
    seqs = all_sequences(v, k)
    q, m = seqs[:, -1], seqs.max(-1).values
    c = (seqs[:, :-1] < m[:, None]).sum(-1)
    assert bool((q <= m).all())
    assert bool(((q < m) <= (c <= k - 2)).all())  # q < m implies a non-query copy of m


def assert_sound(model) -> int:
    """Every input the cubic proof counts is classified correctly; the count is exact."""
    cfg = model.cfg
    tables = cubic_tables(path_matrices(model))
    seqs = all_sequences(cfg.d_vocab, cfg.n_ctx)
    proven = proven_mask(tables, seqs)
    correct = is_correct(model, seqs)
    wrong = seqs[proven & ~correct]
    assert wrong.numel() == 0, f"cubic proof certifies misclassified inputs {wrong[:5].tolist()}"
    count = count_correct(tables, cfg.n_ctx)
    assert count == int(proven.sum())
    assert count <= exact_accuracy(model).correct
    verdict = Cubic().verify(model, {})
    assert verdict.correct_count == count
    return count


@settings(max_examples=60, deadline=None)
@given(
    v=st.integers(1, 7),
    k=st.integers(1, 4),
    d=st.integers(1, 6),
    seed=st.integers(0, 10**6),
    scale=st.sampled_from([1e-3, 0.1, 1.0, 3.0, 30.0]),
    biases=st.booleans(),
)
def test_sound_on_random_models(v, k, d, seed, scale, biases):
    model = random_model(
        ModelConfig(d_vocab=v, n_ctx=k, d_model=d, d_head=max(d - 1, 1)), seed, scale, biases
    )
    assert_sound(model)


@settings(max_examples=60, deadline=None)
@given(model=ideal_models(7, 4))
def test_sound_on_good_and_nearly_good_models(model):
    """Hand-built solvers with perturbations: the proof certifies much, so soundness bites."""
    assert_sound(model)


def test_sound_and_useful_on_an_ideal_model():
    model = ideal_model(7, 4, beta=8.0, alpha=6.0)
    count = assert_sound(model)
    assert count > 0.5 * 7**4


@pytest.mark.parametrize("name", list(adversarial_models()))
def test_sound_on_adversarial_models(name):
    assert_sound(adversarial_models()[name])


@pytest.mark.parametrize(
    ("v", "k", "steps", "seed"), [(6, 3, 400, 0), (8, 4, 600, 1), (5, 2, 300, 2), (7, 4, 150, 3)]
)
def test_sound_on_briefly_trained_models(v, k, steps, seed):
    count = assert_sound(trained_model(v, k, 12, steps, seed))
    assert count >= 0


@pytest.mark.skipif(not FIXTURES.exists(), reason="shared fixtures not available")
@pytest.mark.parametrize(("seed", "count"), [(50, 15868028), (104, 16100495), (123, 15821617)])
def test_reference_cubic_counts(seed, count):
    """The reference implementation's cubic counts (SPEC fixtures) are reproduced."""
    mf = load_model(FIXTURES / f"reference-maxof4-seed{seed}.safetensors")
    verdict = Cubic().verify(mf.model, {})
    assert abs(verdict.correct_count - count) <= 64
    assert verdict.correct_count <= exact_accuracy(mf.model).correct


@pytest.mark.slow
def test_trained_paper_size_model_bound_is_sound_and_non_vacuous():
    model = trained_model(64, 4, 32, 3000, 123)
    exact = exact_accuracy(model)
    verdict = Cubic().verify(model, {})
    assert exact.accuracy >= 0.99
    assert 0.8 < verdict.bound <= exact.accuracy


def test_chunking_over_max_tokens_gives_the_same_count(monkeypatch):
    from compact_proofs.proofs import cubic

    model = trained_model(8, 4, 12, 600, 1)
    whole = Cubic().verify(model, {}).correct_count
    monkeypatch.setattr(cubic, "CHUNK_ELEMENTS", 2 * 8 * 8 * 3)  # 3 max tokens per chunk
    assert Cubic().verify(model, {}).correct_count == whole


def _blocking_models() -> dict[str, object]:
    models = dict(adversarial_models())
    models["trained"] = trained_model(8, 4, 12, 600, 1)
    models["random k=6"] = random_model(ModelConfig(d_vocab=7, n_ctx=6, d_model=6, d_head=5), 3)
    models.update({f"paper-size {n}": m for n, m in paper_size_worst_cases().items()})
    return models


@pytest.mark.parametrize("name", list(_blocking_models()))
def test_blocks_of_non_max_tokens_change_nothing(monkeypatch, name):
    """Splitting the t axis into blocks (down to one token per block) only bounds memory:
    the same proven masks, count, undecided cells, arithmetic and FLOPs, in both modes."""
    from compact_proofs.proofs import cubic

    model = _blocking_models()[name]
    modes = (True, False)

    def run() -> list[tuple]:
        masks = [cubic_tables(path_matrices(model, a)) for a in (*RIGOROUS, Arithmetic.FAST)]
        return [Cubic().verify_counted(model, {}, rigorous=r) for r in modes], masks

    whole, whole_tables = run()
    monkeypatch.setattr(cubic, "BLOCK_ELEMENTS", 1)  # one non-max token per block
    blocked, blocked_tables = run()
    for (a, fa), (b, fb) in zip(whole, blocked, strict=True):
        assert (b.correct_count, b.undecided, b.arithmetic, fb) == (
            a.correct_count, a.undecided, a.arithmetic, fa,
        )  # fmt: skip
    for a, b in zip(whole_tables, blocked_tables, strict=True):
        assert torch.equal(a.good0, b.good0) and torch.equal(a.good, b.good)


def _loud_token_model():
    """One token's embedding 1000x the others: one radius per ball tensor is then too coarse
    for some cells (balls leave them undecided) but not for others."""
    model = ideal_model(7, 3, noise=0.05, seed=4)
    with torch.no_grad():
        model.W_E[0] *= 1000.0
    return model


def _fallback_models() -> dict[str, object]:
    models = dict(adversarial_models())
    models["loud token"] = _loud_token_model()
    models["large biases"] = large_bias_model()
    models["underflow"] = underflow_model(5, 4)
    return models


@pytest.mark.parametrize("name", list(_fallback_models()))
def test_one_chunk_keeps_the_whole_proof_rule(name):
    """With a single chunk of max tokens, the chunk-wise rule is the base rule exactly
    (balls, else intervals if they prove more): same count, arithmetic and FLOPs."""
    model = _fallback_models()[name]
    cubic = Cubic()
    for rigorous in (True, False):
        new, new_flops = cubic.verify_counted(model, {}, rigorous=rigorous)
        old, old_flops = Strategy.verify_counted(cubic, model, {}, rigorous=rigorous)
        assert (new.correct_count, new.arithmetic, new.undecided, new_flops) == (
            old.correct_count, old.arithmetic, old.undecided, old_flops,
        )  # fmt: skip


@pytest.mark.parametrize("name", list(_fallback_models()))
def test_intervals_chunk_by_chunk_are_sound_and_prove_at_least_as_much(monkeypatch, name):
    """One max token per chunk: each chunk falls back to intervals on its own. Every input
    the default certifies is correct in exact arithmetic, the count is what `proven` marks,
    and it is at least what balls or intervals prove for the whole model."""
    from compact_proofs.proofs import cubic

    model = _fallback_models()[name]
    v, k = model.cfg.d_vocab, model.cfg.n_ctx
    unchunked = [Cubic().verify_in(model, {}, a).correct_count for a in RIGOROUS]
    monkeypatch.setattr(cubic, "CHUNK_ELEMENTS", 2 * v * v)
    monkeypatch.setattr(cubic, "BLOCK_ELEMENTS", 2 * v)  # and one non-max token per block
    seqs = all_sequences(v, k)
    correct = exact_verdicts(model, seqs) == CORRECT
    verdict = Cubic().verify(model, {})
    proven = Cubic().proven(model, {}, seqs)
    assert not bool((proven & ~correct).any())
    assert verdict.correct_count == int(proven.sum())
    whole = [Cubic().verify_in(model, {}, a).correct_count for a in RIGOROUS]
    assert verdict.correct_count >= max(whole)
    assert whole == unchunked  # chunks of the same tables
    for arith, count in zip(RIGOROUS, whole, strict=True):  # one arithmetic, chunk by chunk
        proven_in = Cubic().proven_in(model, {}, seqs, arith)
        assert not bool((proven_in & ~correct).any()) and count == int(proven_in.sum())
    if name == "loud token":  # intervals where balls are too coarse, and only there
        chunks = verdict.details["interval_chunks"]
        assert verdict.arithmetic is Arithmetic.INTERVAL and 0 < len(chunks) < v
        assert verdict.correct_count > whole[0]


def test_flops_of_a_chunked_proof_are_its_kept_parts(monkeypatch):
    """FLOPs of the chunk-wise proof, recomputed from the documented rule: the path
    matrices of each arithmetic a kept chunk uses, plus each kept chunk's tables and count."""
    from compact_proofs.proofs import cubic

    model = _loud_token_model()
    v, k = model.cfg.d_vocab, model.cfg.n_ctx
    monkeypatch.setattr(cubic, "CHUNK_ELEMENTS", 2 * v * v)
    verdict, flops = Cubic().verify_counted(model, {})
    interval = set(verdict.details["interval_chunks"])
    paths = {a: count_flops(lambda a=a: path_matrices(model, a)) for a in RIGOROUS}
    expected = sum(paths[a][1] for a in RIGOROUS)  # both are used (checked below)
    for m_range in cubic.max_token_chunks(v):
        arith = Arithmetic.INTERVAL if m_range in interval else Arithmetic.BALL
        tables, table_flops = count_flops(
            lambda r=m_range, a=arith: cubic_tables(paths[a][0], r, False)
        )
        _, count = count_flops(lambda t=tables: count_correct(t, k))
        expected += table_flops + count
    assert 0 < len(interval) < v
    assert flops == expected
