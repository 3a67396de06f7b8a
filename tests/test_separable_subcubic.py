"""The separable sub-cubic strategy: exhaustive soundness on small, odd and adversarial models
in both modes, every input it certifies is one `separable-lite` certifies (it relaxes that
proof), payload variants, chunking, long contexts, FLOPs, registration, reference models."""

from __future__ import annotations

import math
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from compact_proofs.errors import CertificateError
from compact_proofs.model.file_format import bundled_model, load_model
from compact_proofs.model.transformer import ModelConfig
from compact_proofs.proofs.cubic import Cubic
from compact_proofs.proofs.exhaustive import all_sequences, exact_accuracy, is_correct
from compact_proofs.proofs.flops import count_flops
from compact_proofs.proofs.registry import STRATEGIES, get_strategy, resolve_strategies
from compact_proofs.proofs.separable import SeparableLite
from compact_proofs.proofs.separable_subcubic import SeparableSubcubic
from compact_proofs.soundness.exact import CORRECT, exact_verdicts
from test_separable import UNDERFLOW_CASES, direct_bound

from conftest import FIXTURES
from models import (
    UNDERFLOW_MODELS,
    adversarial_models,
    ideal_model,
    ideal_models,
    large_bias_model,
    random_model,
    trained_model,
    underflow_model,
)

SUB = SeparableSubcubic()


def assert_sound(model, payload=None, check_lite: bool = True) -> int:
    """Both modes: no misclassified input certified, count = certified set, <= the exact
    accuracy; in float64 every certified input also has separable-lite's bound < 0 (up to
    floating-point ties): this strategy only relaxes that proof."""
    payload = {} if payload is None else payload
    cfg = model.cfg
    seqs = all_sequences(cfg.d_vocab, cfg.n_ctx)
    correct = is_correct(model, seqs)
    proven = {}
    for rigorous in (True, False):
        proven[rigorous] = SUB.proven(model, payload, seqs, rigorous=rigorous)
        wrong = seqs[proven[rigorous] & ~correct]
        assert wrong.numel() == 0, f"certifies misclassified inputs {wrong[:5].tolist()}"
        count = SUB.verify(model, payload, rigorous=rigorous).correct_count
        assert count == int(proven[rigorous].sum())
        assert count <= exact_accuracy(model, rigorous=False).correct
    if check_lite and cfg.n_ctx <= 10:
        bound = direct_bound(model, seqs, joint=False)
        clear = bound > 1e-9 * (1 + bound.abs().max())
        extra = seqs[proven[False] & clear]
        assert extra.numel() == 0, ("certified beyond separable-lite", extra[:5].tolist())
    return int(proven[True].sum())


@settings(max_examples=40, deadline=None)
@given(
    v=st.integers(1, 7),
    k=st.integers(1, 5),
    d=st.integers(1, 6),
    seed=st.integers(0, 10**6),
    scale=st.sampled_from([1e-3, 0.1, 1.0, 3.0, 30.0]),
    biases=st.booleans(),
)
def test_sound_on_random_models(v, k, d, seed, scale, biases):
    cfg = ModelConfig(d_vocab=v, n_ctx=k, d_model=d, d_head=max(d - 1, 1))
    assert_sound(random_model(cfg, seed, scale, biases))


@settings(max_examples=40, deadline=None)
@given(model=ideal_models(8, 5))
def test_sound_on_good_and_nearly_good_models(model):
    """Hand-built solvers with perturbations: the proof certifies much, so soundness bites."""
    assert_sound(model)


@pytest.mark.parametrize("name", list(adversarial_models()))
def test_sound_on_adversarial_models(name):
    assert_sound(adversarial_models()[name])


@pytest.mark.parametrize(
    ("v", "k", "steps", "seed"), [(6, 3, 400, 0), (8, 4, 600, 1), (5, 5, 300, 2)]
)
def test_sound_on_briefly_trained_models(v, k, steps, seed):
    assert_sound(trained_model(v, k, 12, steps, seed))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sound_with_large_biases(seed):
    assert_sound(large_bias_model(seed=seed))


@settings(max_examples=25, deadline=None)
@given(
    top_r=st.integers(0, 9),
    window=st.integers(0, 9),
    seed=st.integers(0, 10**6),
    noise=st.floats(0.0, 0.4),
)
def test_every_payload_is_sound(top_r, window, seed, noise):
    """Any top_r and window (0 .. v) give a sound proof: they only choose how tight it is."""
    model = ideal_model(9, 4, beta=6.0, alpha=5.0, noise=noise, seed=seed, pos_scale=0.5)
    assert_sound(model, {"top_r": top_r, "window": window})


def test_wider_coupling_and_window_never_hurt_on_an_ideal_model():
    """A larger J(x) only tightens g' and a longer window only extends prefixes; neither
    goes beyond separable-lite."""
    model = ideal_model(9, 4, beta=6.0, alpha=5.0, noise=0.1, seed=3, pos_scale=0.5)
    narrow = SUB.verify(model, {"top_r": 0, "window": 0}).correct_count
    default = SUB.verify(model, {}).correct_count
    wide = SUB.verify(model, {"top_r": 9, "window": 9}).correct_count
    assert narrow <= default <= wide <= SeparableLite().verify(model, {}).correct_count
    assert default > 0


@pytest.mark.parametrize(
    "payload", [{"top_r": -1}, {"window": 10}, {"top_r": 1.5}, {"window": True}]
)
def test_bad_payloads_are_refused(payload):
    model = ideal_model(9, 3, seed=0)
    with pytest.raises(CertificateError, match="separable-subcubic payload"):
        SUB.verify(model, payload)


def test_useful_relative_to_lite_and_cubic_on_an_ideal_model():
    model = ideal_model(7, 4, beta=8.0, alpha=6.0, noise=0.05, seed=3)
    sub = assert_sound(model)
    lite = SeparableLite().verify(model, {}).correct_count
    assert 0.5 * 7**4 < sub <= lite


def test_subnormal_attention_weights_prove_nothing_wrong():
    from test_checker import subnormal_attention_model

    model = subnormal_attention_model()
    assert assert_sound(model) <= exact_accuracy(model).correct
    sharp = ideal_model(8, 3, beta=1000.0)  # scores span thousands of nats
    assert_sound(sharp, check_lite=False)


def assert_exactly_sound(model, rigorous: bool) -> None:
    """Every certified input is correct in exact arithmetic; the count is the certified set."""
    seqs = all_sequences(model.cfg.d_vocab, model.cfg.n_ctx)
    correct = exact_verdicts(model, seqs) == CORRECT
    proven = SUB.proven(model, {}, seqs, rigorous=rigorous)
    wrong = seqs[proven & ~correct]
    assert wrong.numel() == 0, (rigorous, wrong[:5].tolist())
    assert SUB.verify(model, {}, rigorous=rigorous).correct_count == int(proven.sum())


@pytest.mark.parametrize("rigorous", [True, False], ids=["default", "fast"])
@pytest.mark.parametrize("params", UNDERFLOW_CASES, ids=lambda p: f"v{p['v']}-seed{p['seed']}")
def test_underflowing_weights_certify_no_misclassified_input(params, rigorous):
    assert_exactly_sound(underflow_model(**params), rigorous)


@settings(max_examples=15, deadline=None)
@given(model=UNDERFLOW_MODELS)
def test_sound_on_the_underflow_family(model):
    for rigorous in (True, False):
        assert_exactly_sound(model, rigorous)


@pytest.mark.parametrize(("v", "k"), [(2, 12), (3, 8), (2, 16)])
def test_long_contexts_are_proven_soundly(v, k):
    """No cell per position set, so no limit on n_ctx (separable-lite stops at 10)."""
    model = ideal_model(v, k, beta=6.0, alpha=5.0, noise=0.1, seed=k)
    assert_sound(model, check_lite=False)


def test_chunking_over_rows_gives_the_same_count(monkeypatch):
    from compact_proofs.proofs import separable_subcubic

    model = ideal_model(9, 4, noise=0.2, seed=6)
    whole = SUB.verify(model, {}).correct_count
    seqs = all_sequences(9, 4)
    proven = SUB.proven(model, {}, seqs)
    monkeypatch.setattr(separable_subcubic, "CHUNK_ELEMENTS", 60)  # 3 rows (q, m), 3 rows x
    assert SUB.verify(model, {}).correct_count == whole
    assert bool((SUB.proven(model, {}, seqs) == proven).all())


def test_flops_at_paper_size_are_below_lite_and_grow_like_v_squared():
    """At (K, v) = (4, 64) fewer FLOPs than separable-lite (and within 2^21.5); from v = 64 to
    v = 256 (d = 32) the count grows by less than 4^2.3 (a v^3 term would give ~4^3)."""
    flops = {}
    for v in (64, 256):
        cfg = ModelConfig(d_vocab=v, n_ctx=4, d_model=32, d_head=32)
        model = random_model(cfg, 0)
        flops[v] = count_flops(lambda m=model: SUB.verify(m, {}, rigorous=False))[1]
    model = random_model(ModelConfig(d_vocab=64, n_ctx=4, d_model=32, d_head=32), 0)
    _, lite = count_flops(lambda: SeparableLite().verify(model, {}, rigorous=False))
    assert 0 < flops[64] < lite
    assert math.log2(flops[64]) < 21.5
    assert flops[256] / flops[64] < 4**2.3


def test_registered_as_its_own_group():
    assert [s.id for s in STRATEGIES.values() if s.group == "separable-subcubic"] == [
        "separable-subcubic"
    ]
    assert get_strategy("separable-subcubic").leading_complexity == "subcubic"
    assert [s.id for s in resolve_strategies("group:separable-subcubic")] == ["separable-subcubic"]


def test_bundled_model_within_the_lite_proof():
    model = bundled_model().model
    sub = SUB.verify(model, SUB.search(model))
    lite = SeparableLite().verify(model, {}).correct_count
    assert sub.rigorous and 0.9 * lite < sub.correct_count <= lite


@pytest.mark.skipif(not FIXTURES.exists(), reason="shared fixtures not available")
@pytest.mark.parametrize("seed", [50, 104, 123])
def test_reference_models(seed):
    """On the reference models: more than the cubic proof's count is not required (it is
    sub-cubic), but at least 0.9 of separable-lite's, never above it, the same in both modes."""
    model = load_model(FIXTURES / f"reference-maxof4-seed{seed}.safetensors").model
    lite = SeparableLite().verify(model, {}).correct_count
    count = SUB.verify(model, {}).correct_count
    assert 0.9 * lite < count <= lite
    assert SUB.verify(model, {}, rigorous=False).correct_count == count
    assert count > 0.8 * Cubic().verify(model, {}).correct_count


def test_the_campaign_finds_nothing_on_drawn_adversarial_models():
    """The adversarial campaign (exact rational arithmetic) over every family."""
    from test_soundness_campaign import assert_sound as campaign_sound
    from test_soundness_campaign import sc

    for i, family in enumerate(sorted(sc.FAMILIES)):
        case = sc.FAMILIES[family](random.Random(2000 + i))
        c = sc.Campaign(tamper_fraction=0.0, unsound_dir=None, rng=random.Random(i))
        c.check_case(case, [SUB])
        modes = sc.RIGOROUS_MODES if family == "float64 cancellation" else sc.MODES
        campaign_sound(c, modes)
        assert c._total("default").pairs_checked + c._total("default").unsupported > 0


def test_counts_are_exact_python_ints_for_huge_vocabularies_of_cells():
    """(Y + 1)^c summed with multiplicities C(k-1, c) stays exact (no float rounding)."""
    model = ideal_model(5, 9, beta=8.0, alpha=6.0, noise=0.0, seed=1)
    count = SUB.verify(model, {}).correct_count
    assert isinstance(count, int)
    assert count == int(SUB.proven(model, {}, all_sequences(5, 9)).sum())


@pytest.mark.parametrize(
    "model",
    [
        ideal_model(6, 5, noise=0.5, seed=2, pos_scale=1.0),
        random_model(ModelConfig(d_vocab=5, n_ctx=3, d_model=5, d_head=4), 7, 10.0, True),
    ],
)
def test_balls_too_coarse_fall_back_to_intervals(model):
    """Found by the checker's author: one tiny weight sum made every threshold of a ball
    chunk [-inf, +inf]; those cells (and c = 0 cells) must count as undecided so that the
    default mode re-verifies in intervals instead of proving nothing."""
    default = SUB.verify(model, {})
    assert default.correct_count == SUB.verify(model, {}, rigorous=False).correct_count > 0
    assert default.rigorous


def test_thresholds_do_not_cancel_in_float64():
    """Found by the hypothesis test: with theta computed as on_max - K / W_S, the all-non-max
    cell's threshold -query / W (~ -1e-15 here) came out as +1.8e-15 in float64 and the fast
    mode certified the misclassified input (0, 0, 1). Thresholds now sum the complementary
    weights themselves."""
    model = ideal_model(8, 3, beta=3.0, alpha=1.0, noise=0.5, seed=73223, pos_scale=0.5)
    assert_sound(model)
    seqs = all_sequences(8, 3)
    target = (seqs == torch.tensor([0, 0, 1])).all(dim=-1)
    assert not bool(SUB.proven(model, {}, seqs, rigorous=False)[target].any())
