"""Rigorous verification (balls, intervals, and the default that combines them) of the cubic,
sub-cubic and separable proofs.

Both rigorous arithmetics must certify only inputs that are correct in exact arithmetic, count
exactly what they certify, and on real models lose nothing against plain float64.
"""

from __future__ import annotations

import pytest

from compact_proofs.model.file_format import load_model
from compact_proofs.proofs.exhaustive import all_sequences
from compact_proofs.proofs.paths import path_matrices
from compact_proofs.proofs.registry import STRATEGIES, get_strategy
from compact_proofs.proofs.subcubic.config import ALL_CONFIGS
from compact_proofs.soundness import interval as iv
from compact_proofs.soundness.arithmetic import Arithmetic
from compact_proofs.soundness.exact import CORRECT, exact_verdicts

from conftest import FIXTURES
from models import adversarial_models, large_bias_model, trained_model


def _one_config_per_handling() -> list[str]:
    """Sub-cubic ids covering every EU handling, attention handling and error handling."""
    chosen: dict[tuple[str, str], str] = {}
    for c in ALL_CONFIGS:
        for key in (("eu", c.eu), ("attention", c.attention), ("error", c.error)):
            chosen.setdefault(key, c.id)
    return sorted(set(chosen.values()))


COVERING = ["cubic", *_one_config_per_handling(), "separable", "separable-lite"]


def _models() -> dict[str, object]:
    zoo = dict(adversarial_models())  # includes huge/tiny weights, near ties, biases, ...
    zoo["trained"] = trained_model(6, 3, 16, steps=150, seed=2)
    zoo["large biases"] = large_bias_model()  # each of b_Q, b_V, b_O, b_U load-bearing
    return zoo


MODELS = _models()


RIGOROUS = (Arithmetic.BALL, Arithmetic.INTERVAL)


@pytest.mark.parametrize("arith", RIGOROUS, ids=lambda a: a.value)
def test_path_matrices_enclose_the_float64_ones(arith):
    model = trained_model(6, 3, 16, steps=50, seed=0)
    fast, rig = path_matrices(model), path_matrices(model, arith)
    for name in ("EUPU", "EVOU", "PVOU", "EQKE", "EQKP"):
        m, box = getattr(fast, name), getattr(rig, name)
        lo, hi = iv.lower(box), iv.upper(box)
        assert bool((lo <= m).all() and (m <= hi).all()), name
        assert float((hi - lo).max()) < 1e-12 * (1 + float(m.abs().max()))


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("strategy_id", COVERING)
def test_rigorous_arithmetics_are_sound(name, strategy_id):
    """Every input certified by balls, by intervals or by the default (which picks one) is
    correct in exact arithmetic, and every count equals the certified set's size (biased
    models included: every strategy folds the biases in)."""
    model = MODELS[name]
    strategy = get_strategy(strategy_id)
    payload = strategy.search(model)
    cfg = model.cfg
    seqs = all_sequences(cfg.d_vocab, cfg.n_ctx)
    correct = exact_verdicts(model, seqs) == CORRECT
    for arith in RIGOROUS:
        proven = strategy.proven_in(model, payload, seqs, arith)
        assert not bool((proven & ~correct).any()), arith
        assert strategy.verify_in(model, payload, arith).correct_count == int(proven.sum())
    default = strategy.proven(model, payload, seqs)
    assert not bool((default & ~correct).any())
    assert strategy.verify(model, payload).correct_count == int(default.sum())


def test_rigorous_verification_is_flop_counted():
    model = trained_model(6, 3, 16, steps=50, seed=0)
    for strategy_id in ("cubic", COVERING[1], "separable"):
        strategy = get_strategy(strategy_id)
        payload = strategy.search(model)
        _, fast = strategy.verify_counted(model, payload, rigorous=False)
        verdict, default = strategy.verify_counted(model, payload)
        assert default > fast > 0  # the radii's measurements are part of the proof
        assert verdict.rigorous


@pytest.mark.skipif(not FIXTURES.exists(), reason="shared fixtures not available")
@pytest.mark.parametrize("strategy_id", COVERING)
def test_rigorous_loses_nothing_on_a_reference_model(strategy_id):
    model = load_model(FIXTURES / "reference-maxof4-seed123.safetensors").model
    strategy = get_strategy(strategy_id)
    payload = strategy.search(model)
    loose = strategy.verify(model, payload, rigorous=False).correct_count
    verdict = strategy.verify(model, payload)
    assert verdict.arithmetic is Arithmetic.BALL and verdict.undecided == 0
    assert verdict.correct_count == loose


def test_covering_set_spans_all_handlings():
    covered = [c for c in ALL_CONFIGS if c.id in COVERING]
    for attr in ("eu", "attention", "error"):
        assert {getattr(c, attr) for c in covered} == {getattr(c, attr) for c in ALL_CONFIGS}
    assert set(COVERING) <= set(STRATEGIES)
