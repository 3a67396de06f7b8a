"""Shared lemmas (proofs.lemmas): proofs that share a lemma get the verdicts and FLOPs they
get alone, in every arithmetic, and nothing one proof measures leaks into another."""

from __future__ import annotations

import copy

import pytest
import torch

from compact_proofs.model.file_format import bundled_model
from compact_proofs.proofs import lemmas
from compact_proofs.proofs.flops import count_flops
from compact_proofs.proofs.registry import resolve_strategies
from compact_proofs.proofs.runner import prove_many, verify_payload
from compact_proofs.soundness.arithmetic import Arithmetic
from compact_proofs.soundness.ball import Ball

from models import (
    adversarial_models,
    float64_cancellation,
    ideal_model,
    large_bias_model,
    underflow_model,
)

SUBCUBIC = resolve_strategies("subcubic")


def _models():
    out = dict(adversarial_models())
    out["large biases"] = large_bias_model()
    out["float64 cancellation"] = float64_cancellation(ideal_model(6, 3, noise=0.05, seed=3))
    out["float64 underflow"] = underflow_model(6, 3)
    return out


MODELS = _models()


def _alone(model, strategy, payload, rigorous):
    """The proof with nothing shared (no sharing() scope)."""
    assert lemmas.shared_count() is None
    return verify_payload(model, strategy, payload, rigorous=rigorous)


CASES = [(name, True) for name in sorted(MODELS)] + [  # float64 has no lazy state: two
    ("non-zero biases", False),
    ("float64 cancellation", False),
]


@pytest.mark.parametrize(("name", "rigorous"), CASES)
def test_shared_lemmas_give_each_proof_its_own_verdict_and_flops(name, rigorous):
    """All 100 configurations through prove_many (ten share each decomposition) against each
    verified alone: counts, FLOPs and the deciding arithmetic identical."""
    model = MODELS[name]
    shared = list(prove_many(model, SUBCUBIC, rigorous=rigorous))
    for strategy, outcome in shared:
        if isinstance(outcome, Exception):  # e.g. several heads: the same error alone
            with pytest.raises(type(outcome)):
                strategy.verify(model, strategy.search(model), rigorous=rigorous)
            continue
        result, cert = outcome
        alone = _alone(model, strategy, cert.payload, rigorous)
        assert (result.correct_count, result.flops, result.arithmetic) == (
            alone.correct_count,
            alone.flops,
            alone.arithmetic,
        ), strategy.id
    assert lemmas.shared_count() is None  # the scope closed with the generator


def test_both_rigorous_arithmetics_share_lemmas():
    """Every seventh configuration of the bundled model in balls and in intervals: each
    arithmetic's lemmas are its own, and each proof still gets its own verdict and FLOPs."""
    model = bundled_model().model
    strategies = SUBCUBIC[::7]
    payloads = [s.search(model) for s in strategies]

    def flops(arith: Arithmetic) -> list[tuple[int, int]]:
        out = []
        for s, p in zip(strategies, payloads, strict=True):
            verdict, n = count_flops(lambda s=s, p=p: s.verify_in(model, p, arith))
            out.append((verdict.correct_count, n))
        return out

    for arith in (Arithmetic.BALL, Arithmetic.INTERVAL):
        alone = flops(arith)
        with lemmas.sharing():
            assert flops(arith) == alone
            assert lemmas.shared_count() < len(strategies)  # some were shared


def test_different_directions_are_different_lemmas():
    """Two certificates of one configuration with different directions (one scaled, which
    _tame_scales then rescales differently) share nothing: each gets its own verdict."""
    model = MODELS["non-zero biases"]
    strategy = SUBCUBIC[0]
    payload = strategy.search(model)
    other = {**payload, "directions": dict(payload["directions"])}
    from compact_proofs.proofs.tensor_codec import decode_tensor, encode_tensor

    qd = decode_tensor(payload["directions"]["query_dir"])
    other["directions"]["query_dir"] = encode_tensor(torch.roll(qd, 1))
    alone = [_alone(model, strategy, p, True) for p in (payload, other)]
    with lemmas.sharing():
        shared = [verify_payload(model, strategy, p) for p in (payload, other)]
        assert lemmas.shared_count() == 2
    for a, b in zip(alone, shared, strict=True):
        assert (a.correct_count, a.flops) == (b.correct_count, b.flops)


def test_a_copy_keeps_the_measurements_made_before_it_and_none_after():
    mid = torch.tensor([1.0, -3.0], dtype=torch.float64)
    calls = []

    def compute():
        calls.append(1)
        b = Ball.point(mid)
        assert b.mag == 3.0  # measured inside the lemma
        return (b, Ball.point(mid))  # the second one is not measured yet

    with lemmas.sharing():
        first = lemmas.lemma(lambda: "key", compute)
        assert first[1].mag == 3.0  # measured by the first proof after the lemma
        second = lemmas.lemma(lambda: "key", compute)
    assert calls == [1]
    assert second[0]._mag == 3.0 and second[1]._mag is None
    assert second[0] is not first[0] and second[0].mid is first[0].mid


def test_lemmas_stay_bounded_and_are_freed(monkeypatch):
    monkeypatch.setattr(lemmas, "LEMMAS", 3)
    with lemmas.sharing():
        with lemmas.sharing():  # nested: the same scope
            for i in range(10):
                assert lemmas.lemma(lambda i=i: i, lambda i=i: float(i)) == i
            assert lemmas.shared_count() == 3
        assert lemmas.shared_count() == 3
    assert lemmas.shared_count() is None


def test_only_known_structures_are_shared():
    with lemmas.sharing(), pytest.raises(TypeError, match="list"):
        lemmas.lemma(lambda: "k", lambda: [1.0])


def test_each_thread_has_its_own_scope():
    """A thread outside sharing() computes for itself while another thread shares."""
    import threading

    seen = []
    with lemmas.sharing():
        lemmas.lemma(lambda: "k", lambda: 1.0)
        thread = threading.Thread(target=lambda: seen.append(lemmas.shared_count()))
        thread.start()
        thread.join()
        assert lemmas.shared_count() == 1
    assert seen == [None]


def test_models_equal_in_float32_but_not_exactly_are_different_lemmas():
    """The key holds the weights' exact bytes: two float64 models that round to the same
    float32 weights (the same certificate digest) never share a decomposition."""
    from compact_proofs.model.file_format import weights_digest

    a = copy.deepcopy(MODELS["non-zero biases"]).double()
    b = copy.deepcopy(a)
    with torch.no_grad():
        b.W_U[0, 0] += float(b.W_U[0, 0]) * 2.0**-40
    assert weights_digest(a) == weights_digest(b)
    strategy = SUBCUBIC[0]
    payload = strategy.search(a)
    keys = {strategy._decomposition_key(m, payload, Arithmetic.BALL) for m in (a, b)}
    assert len(keys) == 2
