"""Rigorous (interval) verification of the cubic and sub-cubic proofs.

The rigorous mode must never certify more than the float64 mode on the same certificate (its
intervals contain the float64 values' exact counterparts, and it counts a cell only when the
whole interval is below 0), must certify only correct inputs, and on real models should lose
(almost) nothing.
"""

from __future__ import annotations

import pytest

from compact_proofs.accuracy import all_sequences, is_correct
from compact_proofs.circuits import path_matrices
from compact_proofs.interval import Interval
from compact_proofs.modelfile import load_model
from compact_proofs.proofs import STRATEGIES, get_strategy
from compact_proofs.proofs.subcubic.config import ALL_CONFIGS

from conftest import FIXTURES
from models import adversarial_models, trained_model


def _one_config_per_handling() -> list[str]:
    """Sub-cubic ids covering every EU handling, attention handling and error handling."""
    chosen: dict[tuple[str, str], str] = {}
    for c in ALL_CONFIGS:
        for key in (("eu", c.eu), ("attention", c.attention), ("error", c.error)):
            chosen.setdefault(key, c.id)
    return sorted(set(chosen.values()))


COVERING = ["cubic", *_one_config_per_handling()]


def _models() -> dict[str, object]:
    zoo = dict(adversarial_models())  # includes huge/tiny weights, near ties, biases, ...
    zoo["trained"] = trained_model(6, 3, 16, steps=150, seed=2)
    return zoo


MODELS = _models()


def test_path_matrices_enclose_the_float64_ones():
    model = trained_model(6, 3, 16, steps=50, seed=0)
    exact, rig = path_matrices(model), path_matrices(model, rigorous=True)
    for name in ("EUPU", "EVOU", "PVOU", "EQKE", "EQKP"):
        m, box = getattr(exact, name), getattr(rig, name)
        assert isinstance(box, Interval)
        assert bool((box.lo <= m).all() and (m <= box.hi).all()), name
        assert float((box.hi - box.lo).max()) < 1e-12 * (1 + float(m.abs().max()))


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("strategy_id", COVERING)
def test_rigorous_is_sound_and_never_above_float64(name, strategy_id):
    model = MODELS[name]
    strategy = get_strategy(strategy_id)
    if strategy_id != "cubic" and model.nonzero_biases():
        pytest.skip("sub-cubic proofs refuse non-zero biases")
    payload = strategy.search(model)
    cfg = model.cfg
    seqs = all_sequences(cfg.d_vocab, cfg.n_ctx)
    loose = strategy.proven(model, payload, seqs)
    strict = strategy.proven(model, payload, seqs, rigorous=True)
    assert not bool((strict & ~loose).any()), "rigorous certified an input float64 did not"
    assert not bool((strict & ~is_correct(model, seqs)).any())
    verdict = strategy.verify(model, payload, rigorous=True)
    assert verdict.correct_count == int(strict.sum())


@pytest.mark.skipif(not FIXTURES.exists(), reason="shared fixtures not available")
@pytest.mark.parametrize("strategy_id", COVERING)
def test_rigorous_loses_nothing_on_a_reference_model(strategy_id):
    model = load_model(FIXTURES / "reference-maxof4-seed123.safetensors").model
    strategy = get_strategy(strategy_id)
    payload = strategy.search(model)
    loose = strategy.verify(model, payload).correct_count
    assert strategy.verify(model, payload, rigorous=True).correct_count == loose


def test_rigorous_verification_is_flop_counted():
    model = trained_model(6, 3, 16, steps=50, seed=0)
    for strategy_id in ("cubic", COVERING[1]):
        strategy = get_strategy(strategy_id)
        payload = strategy.search(model)
        _, loose = strategy.verify_counted(model, payload)
        verdict, strict = strategy.verify_counted(model, payload, rigorous=True)
        assert strict > loose > 0
        assert verdict.correct_count <= strategy.verify(model, payload).correct_count


def test_covering_set_spans_all_handlings():
    covered = [c for c in ALL_CONFIGS if c.id in COVERING]
    for attr in ("eu", "attention", "error"):
        assert {getattr(c, attr) for c in covered} == {getattr(c, attr) for c in ALL_CONFIGS}
    assert set(COVERING) <= set(STRATEGIES)
