"""Rigorous brute force (docs/soundness.md, "Brute force (exact accuracy)"): the interval
forward pass encloses the model's logits, its verdicts are correct in exact arithmetic, and
the rigorous exact accuracy never counts more than the inputs it can certify one by one."""

from __future__ import annotations

import dataclasses
import time
from fractions import Fraction

import mpmath
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from compact_proofs.model.file_format import load_model
from compact_proofs.model.transformer import AttnOnlyTransformer, ModelConfig
from compact_proofs.proofs import exhaustive as accuracy
from compact_proofs.proofs.brute_force import BruteForce, black_box_flops
from compact_proofs.proofs.exhaustive import (
    REL_TOL,
    FastPathBound,
    all_sequences,
    exact_accuracy,
    forward_margin,
    is_correct,
)
from compact_proofs.proofs.paths import path_matrices
from compact_proofs.soundness import rigorous_forward
from compact_proofs.soundness.arithmetic import Arithmetic
from compact_proofs.soundness.exact import CORRECT, ExactReference, exact_verdicts
from compact_proofs.soundness.interval import Interval
from compact_proofs.soundness.rigorous_forward import IntervalForward, certify, softmax_enclosure

from conftest import FIXTURES
from models import adversarial_models, ideal_model, random_model

# -- model zoo ------------------------------------------------------------------------------


def tie_model(offset: float) -> AttnOnlyTransformer:
    """W_U columns 2 and 3 equal: l_3 - l_2 = b_U[3] - b_U[2] = offset for every input."""
    model = ideal_model(4, 2, seed=0)
    with torch.no_grad():
        model.W_U[:, 3] = model.W_U[:, 2]
        model.b_U[3] = model.b_U[2] + offset
    return model


def cancellation_model(sign: int) -> AttnOnlyTransformer:
    """v=2, k=1: l_1 = (2^30 + sign 2^-40) - 2^30 = sign 2^-40 exactly, l_0 = -2^-50 (input
    [1]). float64 rounds the first sum to 2^30, so its forward pass calls [1] correct for
    either sign; in exact arithmetic it is wrong for sign = -1."""
    model = AttnOnlyTransformer(ModelConfig(d_vocab=2, n_ctx=1, d_model=2, d_head=1))
    with torch.no_grad():
        model.W_E[1] = torch.tensor([1.0, 1.0])
        model.W_U[:, 1] = torch.tensor([2.0**30, sign * 2.0**-40])
        model.b_U[:] = torch.tensor([-(2.0**-50), -(2.0**30)])
    return model


def uniform_tie_model() -> AttnOnlyTransformer:
    """W_Q = 0 (attention exactly 1/2, 1/2); input [0, 2] has l_2 - l_1 = 1 - 2/2 = 0."""
    model = AttnOnlyTransformer(ModelConfig(d_vocab=3, n_ctx=2, d_model=3, d_head=1))
    with torch.no_grad():
        model.W_E[:] = torch.eye(3)
        model.W_V[0, 0, 0] = 1.0
        model.W_O[0, 0, 2] = -2.0
        model.W_U[2] = torch.tensor([0.0, -0.5, 0.5])
    return model


def stress_models() -> dict[str, AttnOnlyTransformer]:
    """Adversarial models plus exact ties, near-ties, extreme scales, multi-head and biases."""
    out = dict(adversarial_models())
    out["exact tie"] = tie_model(0.0)
    out["near tie +1e-12"] = tie_model(1e-12)
    out["near tie -1e-12"] = tie_model(-1e-12)
    out["cancellation +"] = cancellation_model(+1)
    out["cancellation -"] = cancellation_model(-1)
    out["uniform-attention tie"] = uniform_tie_model()
    cfg = ModelConfig(d_vocab=6, n_ctx=3, d_model=5, d_head=4)
    out["scale 1e6"] = random_model(cfg, 11, scale=1e6, biases=True)
    out["scale 1e-6"] = random_model(cfg, 12, scale=1e-6, biases=True)
    mh = ModelConfig(d_vocab=5, n_ctx=3, d_model=6, d_head=3, n_heads=2)
    out["two heads, biases"] = random_model(mh, 13, biases=True)
    out["two heads, scale 1e6"] = random_model(mh, 14, scale=1e6, biases=True)
    out["three heads"] = random_model(ModelConfig(5, 3, 6, 2, 3), 15, biases=True)
    out["thousands of nats"] = ideal_model(6, 3, beta=400.0, alpha=4.0, noise=0.5, seed=3)
    out["k = 1"] = random_model(ModelConfig(5, 1, 4, 4), 16, biases=True)
    out["v = 1"] = random_model(ModelConfig(1, 3, 4, 4), 17, biases=True)
    out["k = 4"] = ideal_model(5, 4, noise=0.2, seed=18)
    return out


STRESS = stress_models()
ABSURD = {"scale 1e6", "two heads, scale 1e6", "cancellation +", "cancellation -"}


def inputs(model: AttnOnlyTransformer) -> torch.Tensor:
    return all_sequences(model.cfg.d_vocab, model.cfg.n_ctx)


# -- building blocks ------------------------------------------------------------------------


def mp_softmax(row: list[float]) -> list[mpmath.mpf]:
    with mpmath.workdps(60):
        top = max(row)
        e = [mpmath.exp(mpmath.mpf(x) - mpmath.mpf(top)) for x in row]
        total = mpmath.fsum(e)
        return [x / total for x in e]


@settings(max_examples=60, deadline=None)
@given(
    k=st.integers(1, 6),
    spread=st.sampled_from([1e-3, 1.0, 30.0, 800.0, 5000.0]),
    width=st.sampled_from([0.0, 1e-12, 1e-3, 1.0]),
    seed=st.integers(0, 10**6),
)
def test_softmax_enclosure_contains_exact_softmax(k, spread, width, seed):
    """For scores anywhere in the intervals (ends and interior points), the exact softmax
    (60-digit mpmath) lies in the enclosure."""
    gen = torch.Generator().manual_seed(seed)
    center = spread * torch.randn(3, k, generator=gen, dtype=torch.float64)
    radius = width * torch.rand(3, k, generator=gen, dtype=torch.float64)
    scores = Interval(center - radius, center + radius)
    enc = softmax_enclosure(scores)
    for t in (0.0, 0.3, 1.0):
        member = (scores.lo + t * (scores.hi - scores.lo)).clamp(scores.lo, scores.hi)
        for r in range(3):
            exact = mp_softmax(member[r].tolist())
            for p in range(k):
                assert (
                    mpmath.mpf(float(enc.lo[r, p])) <= exact[p] <= mpmath.mpf(float(enc.hi[r, p]))
                )
    if width == 0.0 and spread <= 30.0:  # point scores: tight up to the assumed libm error
        assert float((enc.hi - enc.lo).max()) < 1e-10


def test_softmax_enclosure_single_position_is_exactly_one():
    enc = softmax_enclosure(Interval(torch.tensor([[-3.0], [7.0]]), torch.tensor([[2.0], [9.0]])))
    assert enc.lo.eq(1.0).all() and enc.hi.eq(1.0).all()


def test_certify_edge_cases():
    """Exact ties, NaN and margins below the tolerance are never certified; a single logit
    (no competitor) always is."""
    lo = torch.tensor([[1.0, 1.0, 0.0], [float("nan"), 0.0, 0.0], [1.0, 1.0 - 1e-12, 0.0]])
    m = torch.tensor([0, 0, 0])
    certified, undecided = certify(Interval(lo, lo), m, REL_TOL)
    assert certified.tolist() == [False, False, False]
    assert undecided.tolist() == [True, True, True]
    wide = Interval(torch.tensor([[2.0, -1.0]]), torch.tensor([[3.0, 1.5]]))
    assert certify(wide, torch.tensor([0]), REL_TOL)[0].tolist() == [True]
    assert certify(wide, torch.tensor([1]), REL_TOL)[1].tolist() == [False]  # refuted
    one = Interval(torch.tensor([[5.0]]), torch.tensor([[5.0]]))
    assert certify(one, torch.tensor([0]), REL_TOL)[0].tolist() == [True]


# -- the interval forward pass --------------------------------------------------------------


@pytest.mark.parametrize("name", list(STRESS))
def test_interval_forward_encloses_float64_forward(name):
    model = STRESS[name]
    tokens = inputs(model)
    enc = IntervalForward(model).logits(tokens)
    model64 = accuracy._float64_copy(model)
    with torch.no_grad():
        logits = model64(tokens)
    assert bool(((enc.lo <= logits) & (logits <= enc.hi)).all())
    if name not in ABSURD:  # tight relative to the model's logit scale (an input's own
        # logits can cancel to 0 exactly, e.g. "uniform-attention tie", while the terms don't)
        assert float((enc.hi - enc.lo).max()) <= 1e-10 * float(logits.abs().max())


@pytest.mark.parametrize(
    "name", ["non-zero biases", "two heads, biases", "near tie +1e-12", "cancellation -"]
)
def test_interval_forward_meets_exact_logit_differences(name):
    """The exact rational enclosures of l_m - l_j (compact_proofs.soundness.exact, width ~2^-64
    relative) overlap ours for every input and j: an enclosure cannot miss the exact value."""
    model = STRESS[name]
    tokens = inputs(model)
    enc = IntervalForward(model).logits(tokens)
    ref = ExactReference(model)
    lo, hi = enc.lo.tolist(), enc.hi.tolist()
    for i, x in enumerate(tokens.tolist()):
        m = max(x)
        for j, bounds in enumerate(ref.logit_difference_bounds(x)):
            if bounds is None:
                continue
            ours_lo = Fraction(lo[i][m]) - Fraction(hi[i][j])  # exact differences of the ends
            ours_hi = Fraction(hi[i][m]) - Fraction(lo[i][j])
            assert bounds[0] <= ours_hi and ours_lo <= bounds[1]


@pytest.mark.parametrize("name", list(STRESS))
def test_certified_inputs_are_correct(name):
    """Every input certified by the rigorous verdict is correct in exact arithmetic
    (compact_proofs.soundness.exact) and by the float64 forward pass."""
    model = STRESS[name]
    tokens = inputs(model)
    certified = is_correct(model, tokens, rigorous=True)
    assert bool((exact_verdicts(model, tokens)[certified] == CORRECT).all())
    if not name.startswith("cancellation"):  # there float64 itself is wrong (see below)
        assert bool(is_correct(model, tokens)[certified].all())


def test_float64_misjudges_what_the_rigorous_mode_refuses():
    """The cancellation model: float64 calls [1] correct, exact arithmetic says wrong; the
    rigorous verdict and count do not count it."""
    model = cancellation_model(-1)
    x = torch.tensor([[1]])
    assert bool(is_correct(model, x)[0])
    assert int(exact_verdicts(model, x)[0]) != CORRECT
    assert not bool(is_correct(model, x, rigorous=True)[0])
    assert exact_accuracy(model, rigorous=True).correct == 1  # only [0]
    assert exact_accuracy(model, rigorous=False).correct == 2


# -- rigorous exact accuracy ----------------------------------------------------------------


@pytest.mark.parametrize("name", list(STRESS))
def test_rigorous_count(name):
    """rigorous count = its per-input certificates summed (proven's contract) <= the number
    correct in exact arithmetic; and <= the float64 count except where float64 is wrong."""
    model = STRESS[name]
    tokens = inputs(model)
    rigorous = exact_accuracy(model, rigorous=True)
    assert rigorous.total == len(tokens)
    assert rigorous.correct == int(is_correct(model, tokens, rigorous=True).sum())
    assert rigorous.correct <= int((exact_verdicts(model, tokens) == CORRECT).sum())
    if not name.startswith("cancellation"):
        assert rigorous.correct <= exact_accuracy(model, rigorous=False).correct


def test_ties_and_near_ties_are_not_counted():
    """Logits 2 and 3 differ by exactly 0 or +-1e-12 (b_U) on every input. Exact ties are never
    certified; in both modes margins below the tolerance count as wrong and are reported as
    ties, and the modes agree. With +1e-12 some max-3 inputs are correct in exact arithmetic
    but not certified: the rigorous count is conservative at the tolerance."""
    for offset in (0.0, 1e-12, -1e-12):
        model = tie_model(offset)
        tokens = inputs(model)
        certified = is_correct(model, tokens, rigorous=True)
        rigorous, fast = exact_accuracy(model, rigorous=True), exact_accuracy(model, rigorous=False)
        assert rigorous.correct == fast.correct == int(certified.sum())
        assert rigorous.ties == fast.ties > 0
        if offset == 0.0:
            assert not bool(certified[tokens.max(-1).values >= 2].any())
        if offset > 0.0:
            missed = (exact_verdicts(model, tokens) == CORRECT) & ~certified
            assert bool(missed[tokens.max(-1).values == 3].any())


def test_exact_tie_through_uniform_attention_is_not_counted():
    model = uniform_tie_model()
    x = torch.tensor([[0, 2]])
    assert not bool(is_correct(model, x, rigorous=True)[0])
    assert exact_accuracy(model, rigorous=True).correct == exact_accuracy(model).correct


def bound_for(model: AttnOnlyTransformer) -> tuple[FastPathBound, list[bool]]:
    """The fast path's bound and, per query, whether it refused the query."""
    paths_iv = path_matrices(model, Arithmetic.INTERVAL)
    paths = accuracy._midpoints(paths_iv, model.cfg.attn_scale)
    bound = FastPathBound(paths_iv, paths)
    refused = [
        accuracy._count_for_query(paths, q, bound, paths.EUPU.device, lambda t: None) is None
        for q in range(model.cfg.d_vocab)
    ]
    return bound, refused


def test_error_bound_is_small_on_ordinary_models_and_refuses_absurd_ones(monkeypatch):
    for name in ("non-zero biases", "tiny weights", "scale 1e-6", "k = 4", "k = 1"):
        bound, refused = bound_for(STRESS[name])
        assert not any(refused)
        assert max(bound.eps.values()) < 1e-10
    bound, refused = bound_for(STRESS["scale 1e6"])
    assert all(refused)  # score errors of ~1e-4 nats: exp's relative error is unbounded

    calls: list[int] = []
    original = accuracy._query_inputs

    def spy(v, k, q, device, out):
        calls.append(q)
        return original(v, k, q, device, out)

    monkeypatch.setattr(accuracy, "_query_inputs", spy)
    model = STRESS["scale 1e6"]
    assert (
        exact_accuracy(model, rigorous=True).correct
        == exact_accuracy(model, rigorous=False).correct
    )
    assert calls == list(range(model.cfg.d_vocab))


def test_chunked_paths_give_the_same_counts(monkeypatch):
    """Tiny chunks exercise the looped prefix positions, the chunked interval forward pass
    and the chunked per-query fallback."""
    models = [STRESS["k = 4"], STRESS["scale 1e6"], STRESS["two heads, biases"]]
    expected = [exact_accuracy(m, rigorous=True) for m in models]
    verdicts = [is_correct(m, inputs(m), rigorous=True) for m in models]
    monkeypatch.setattr(accuracy, "CHUNK_PAIRS", 6)
    monkeypatch.setattr(rigorous_forward, "CHUNK", 5)
    for model, result, verdict in zip(models, expected, verdicts, strict=True):
        assert exact_accuracy(model, rigorous=True) == result
        assert torch.equal(is_correct(model, inputs(model), rigorous=True), verdict)


@pytest.mark.parametrize("rigorous", [False, True])
def test_cheap_bound_filters_agree_with_full_evaluation(rigorous, monkeypatch):
    """The separable cheap bound (and its whole-row and whole-group filters) only ever counts
    pairs that the full evaluation also counts: with every cheap term forced to -inf, so that
    every pair is evaluated in full, the counts are the same (k up to 6, both sides looped)."""
    models = [STRESS[n] for n in ("k = 4", "non-zero biases", "thousands of nats", "k = 1")]
    models += [ideal_model(4, 6, noise=0.3, seed=21), random_model(ModelConfig(3, 5, 4, 4), 22)]
    expected = [exact_accuracy(m, rigorous=rigorous) for m in models]
    original = accuracy._SideTerms.of

    def nothing_sure(side, q, tol_unit):
        terms = original(side, q, tol_unit)
        blank = torch.full_like(terms.col, -float("inf"))
        return dataclasses.replace(
            terms,
            col=blank,
            own=blank[:, 0].clone(),
            group_min=torch.full_like(terms.group_min, -float("inf")),
        )

    monkeypatch.setattr(accuracy._SideTerms, "of", staticmethod(nothing_sure))
    for model, result in zip(models, expected, strict=True):
        assert exact_accuracy(model, rigorous=rigorous) == result
    monkeypatch.setattr(accuracy, "CHUNK_PAIRS", 6)
    for model, result in zip(models, expected, strict=True):
        assert exact_accuracy(model, rigorous=rigorous) == result


@settings(max_examples=25, deadline=None)
@given(
    v=st.integers(1, 6),
    k=st.integers(1, 4),
    d=st.integers(1, 5),
    heads=st.integers(1, 2),
    seed=st.integers(0, 999),
    scale=st.sampled_from([1e-6, 0.01, 1.0, 20.0, 1e6]),
    biases=st.booleans(),
)
def test_random_models(v, k, d, heads, seed, scale, biases):
    cfg = ModelConfig(d_vocab=v, n_ctx=k, d_model=d, d_head=d, n_heads=heads)
    model = random_model(cfg, seed, scale, biases)
    tokens = inputs(model)
    certified = is_correct(model, tokens, rigorous=True)
    rigorous = exact_accuracy(model, rigorous=True)
    assert rigorous.correct == int(certified.sum())
    assert rigorous.correct <= exact_accuracy(model).correct
    assert bool(is_correct(model, tokens)[certified].all())


# -- the strategy ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["non-zero biases", "two heads, biases", "scale 1e6"])
def test_brute_force_strategy_rigorous(name):
    model = STRESS[name]
    strategy = BruteForce()
    verdict = strategy.verify(model, {}, rigorous=True)
    assert verdict.correct_count == int(
        strategy.proven(model, {}, inputs(model), rigorous=True).sum()
    )
    counted, flops = strategy.verify_counted(model, {}, rigorous=True)
    assert counted.correct_count == verdict.correct_count
    assert flops == black_box_flops(model.cfg) == strategy.verify_counted(model, {})[1]


# -- the paper's models ---------------------------------------------------------------------

needs_fixtures = pytest.mark.skipif(not FIXTURES.exists(), reason="shared fixtures missing")


@needs_fixtures
def test_fixture_verdicts_agree_on_sampled_inputs():
    """On 20000 random inputs of a reference model the rigorous verdicts equal the float64
    ones, and the enclosures contain the float64 logits."""
    model = load_model(FIXTURES / "reference-maxof4-seed50.safetensors").model
    tokens = torch.randint(0, 64, (20000, 4), generator=torch.Generator().manual_seed(0))
    assert torch.equal(is_correct(model, tokens, rigorous=True), is_correct(model, tokens))
    enc = IntervalForward(model).logits(tokens[:2000])
    with torch.no_grad():
        logits = accuracy._float64_copy(model)(tokens[:2000])
    assert bool(((enc.lo <= logits) & (logits <= enc.hi)).all())
    _, scale = forward_margin(model, tokens[:2000])
    assert float(((enc.hi - enc.lo).amax(-1) / scale).max()) < 1e-10


@needs_fixtures
@pytest.mark.slow
@pytest.mark.parametrize(("seed", "correct"), [(50, 16771350), (104, 16767679), (123, 16763235)])
def test_reference_rigorous_exact_accuracy(seed, correct, monkeypatch):
    """The rigorous count equals the float64 (and the reference implementation's) count; the
    error bound passes its checks for every query (no fallback) with eps far below REL_TOL."""
    bounds: list[FastPathBound] = []

    class Recording(FastPathBound):
        def __init__(self, *args) -> None:
            super().__init__(*args)
            bounds.append(self)

    monkeypatch.setattr(accuracy, "FastPathBound", Recording)
    model = load_model(FIXTURES / f"reference-maxof4-seed{seed}.safetensors").model
    start = time.perf_counter()
    result = exact_accuracy(model, rigorous=True)
    seconds = time.perf_counter() - start
    assert result.correct == correct, f"{result} in {seconds:.1f}s"
    (bound,) = bounds
    assert len(bound.eps) == 64 and max(bound.eps.values()) < 1e-10
