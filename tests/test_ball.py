"""Ball arithmetic (float64 values with one radius per tensor): every rule encloses the exact
real result of the operation on every member of its arguments, infinities stay exact or
become NaN, and the whole default verification stays sound when exp is far less accurate
than assumed (provided the assumption is widened to match)."""

from __future__ import annotations

import decimal
import math
import random
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from compact_proofs.model.transformer import ModelConfig
from compact_proofs.proofs import separable
from compact_proofs.proofs.exhaustive import all_sequences
from compact_proofs.proofs.paths import PathMatrices, path_matrices
from compact_proofs.proofs.registry import get_strategy
from compact_proofs.proofs.subcubic import decompose
from compact_proofs.proofs.subcubic.decompose import sigma1_upper_bound
from compact_proofs.soundness import ball, interval
from compact_proofs.soundness.arithmetic import Arithmetic
from compact_proofs.soundness.ball import Ball
from compact_proofs.soundness.interval import Interval
from test_separable import direct_bound

from models import ideal_model, random_model

decimal.getcontext().prec = 80
finite = st.floats(min_value=-1e30, max_value=1e30, allow_nan=False, allow_infinity=False)
moderate = st.floats(min_value=-700, max_value=700, allow_nan=False, allow_infinity=False)
radius = st.sampled_from([0.0, 1e-300, 1e-12, 1e-3, 0.5])
huge = st.floats(min_value=-1e300, max_value=1e300, allow_nan=False)  # subnormals included
unit = st.floats(min_value=-1.0, max_value=1.0, allow_nan=False)


def t64(xs: list[float]) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.float64)


def members(b: Ball, fractions: list[float]) -> list[Fraction]:
    """Exact reals inside the ball: mid + f * rad for f in [-1, 1] (one per entry)."""
    mids = b.mid.flatten().tolist()
    return [
        Fraction(m) + Fraction(f) * Fraction(b.rad) for m, f in zip(mids, fractions, strict=True)
    ]


def encloses(b: Ball, exact: list[Fraction | decimal.Decimal]) -> bool:
    """Every exact value is within the radius of its finite midpoint."""
    for m, x in zip(b.mid.flatten().tolist(), exact, strict=True):
        if math.isnan(m) or b.rad == math.inf:
            continue
        if abs(Fraction(m) - Fraction(x)) > Fraction(b.rad):
            return False
    return True


def dexp(x: Fraction) -> decimal.Decimal:
    return (decimal.Decimal(x.numerator) / decimal.Decimal(x.denominator)).exp()


def dec(x: Fraction) -> decimal.Decimal:
    return decimal.Decimal(x.numerator) / decimal.Decimal(x.denominator)


def ball_of(xs: list[float], rad: float) -> Ball:
    return Ball(t64(xs), rad, max(abs(x) for x in xs), False)


@settings(max_examples=300, deadline=None)
@given(st.lists(finite, min_size=2, max_size=2), radius, radius, st.floats(-1, 1), st.floats(-1, 1))
@example(xs=[1.774768324577809e-170, 7.727449723383332e-286], ra=0.0, rb=1e-300, s=0.0, t=1.0)
def test_field_operations_enclose_every_member(xs, ra, rb, s, t):
    """(The example: a.mag r_b underflows in floats, then / beta^2 ~ 1e-571 magnifies it.)"""
    a, b = ball_of(xs[:1], ra), ball_of(xs[1:], rb)
    x, y = members(a, [s])[0], members(b, [t])[0]
    assert encloses(a + b, [x + y])
    assert encloses(a - b, [x - y])
    assert encloses(a * b, [x * y])
    assert encloses(-a, [-x])
    quotient = a / b
    if y != 0:
        assert encloses(quotient, [x / y])
    if abs(xs[1]) <= rb:  # a divisor that may be 0: no information
        assert quotient.rad == math.inf


@settings(max_examples=300, deadline=None)
@given(finite, finite, radius, st.floats(-1, 1))
@example(a=0.625, b=66354571862173.0, r=0.0, s=0.0)
def test_operations_with_a_number_enclose_every_member(a, b, r, s):
    """(The example: torch computes number / tensor as reciprocal(tensor) * number, rounding
    twice, where the rule assumes one IEEE division.)"""
    x, y = members(ball_of([a], r), [s])[0], Fraction(b)
    assert encloses(ball_of([a], r) + b, [x + y])
    assert encloses(b - ball_of([a], r), [y - x])
    assert encloses(ball_of([a], r) * b, [x * y])
    if y != 0:
        assert encloses(ball_of([a], r) / b, [x / y])
    if x != 0:
        assert encloses(b / ball_of([a], r), [y / x])


@settings(max_examples=300, deadline=None)
@given(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, 5e-324, 1e-310, 1e-300, 1e-200, 1e-16, 1.0, 1e100, 1e300]),
    st.sampled_from([0.0, 5e-324, 1e-310, 1e-300, 1e-200, 1e-16, 1.0, 1e100, 1e300]),
    st.floats(-1, 1),
    st.floats(-1, 1),
)
def test_field_operations_enclose_every_member_across_the_float_range(a, b, ra, rb, s, t):
    """The field rules with operands and radii from subnormal to near overflow (a ball whose
    magnitude could overflow has no information, and is skipped)."""
    x_ball, y_ball = ball_of([a], ra), ball_of([b], rb)
    assume(x_ball.rad < math.inf and y_ball.rad < math.inf)
    x, y = members(x_ball, [s])[0], members(y_ball, [t])[0]
    assert encloses(x_ball + y_ball, [x + y])
    assert encloses(x_ball - y_ball, [x - y])
    assert encloses(x_ball * y_ball, [x * y])
    if y != 0:
        assert encloses(x_ball / y_ball, [x / y])


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 6), st.integers(1, 6), st.integers(1, 6), radius, st.integers(0, 10**6))
def test_matmul_and_sums_enclose_exact_results(n, k, m, r, seed):
    gen = torch.Generator().manual_seed(seed)
    A = torch.randn(n, k, generator=gen, dtype=torch.float64) * 10.0 ** float(
        torch.randint(-5, 6, (), generator=gen)
    )
    B = torch.randn(k, m, generator=gen, dtype=torch.float64)
    a, b = Ball(A, r, float(A.abs().max()), False), Ball.point(B)
    shift = [random.Random(seed).uniform(-1, 1) for _ in range(n * k)]
    X = np.array(members(a, shift), dtype=object).reshape(n, k)
    Y = np.array([Fraction(v) for v in B.flatten().tolist()], dtype=object).reshape(k, m)
    assert encloses(a @ b, list((X @ Y).flatten()))
    assert encloses(a.sum(0), list(X.sum(axis=0)))
    assert encloses(a.mean(1), [sum(row) / k for row in X])


@settings(max_examples=200, deadline=None)
@given(moderate, st.sampled_from([0.0, 1e-12, 1e-6, 0.1]), st.floats(-1, 1))
def test_elementary_functions_enclose_exact_results(v, r, s):
    b = ball_of([v], r)
    x = members(b, [s])[0]
    assert encloses(b.exp(), [dexp(x)])
    assert encloses(b.sigmoid(), [1 / (1 + dexp(-x))])
    if x > 0:
        log = b.log()
        assert log.rad == math.inf or encloses(log, [dec(x).ln()])
        root = b.sqrt()
        assert encloses(root, [dec(x).sqrt()])


@settings(max_examples=300, deadline=None)
@given(
    st.floats(-1500, 700),
    st.sampled_from([0.0, 1e-300, 1e-3, 1.0, 60.0, 300.0, 699.0]),
    st.floats(-1, 1),
)
@example(v=-750.0, r=700.0, s=1.0)
def test_exp_encloses_members_far_from_an_underflowing_midpoint(v, r, s):
    """(The example: exp(-750) underflows to 0, a member's exp is e^-50: the absolute error
    of the underflowed exp is magnified by expm1(r) like the value itself.)"""
    b = ball_of([v], r)
    assert encloses(b.exp(), [dexp(members(b, [s])[0])])


@pytest.mark.parametrize("top", [2.0**-1000, 1.0, 2.0**52, 2.0**900])
def test_sqrt_encloses_the_vectorised_results(top):
    """torch's float64 sqrt on a vector can be one ulp off the correctly rounded root
    (sqrt(4539170895717033) on x86): the radius must cover that, not half an ulp."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand(4096, generator=g, dtype=torch.float64) * top
    x[0] = 4539170895717033.0 * top / 2.0**52
    root = Ball.point(x).sqrt()
    for m, v in zip(root.mid.tolist(), x.tolist(), strict=True):
        lo, hi = (
            max(Fraction(m) - Fraction(root.rad), Fraction(0)),
            Fraction(m) + Fraction(root.rad),
        )
        assert lo**2 <= Fraction(v) <= hi**2


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(huge, unit), min_size=1, max_size=4), radius)
def test_matmul_encloses_products_of_huge_and_subnormal_entries(pairs, r):
    a = t64([[x for x, _ in pairs]])
    b = t64([[y] for _, y in pairs])
    exact = sum(Fraction(x) * Fraction(y) for x, y in pairs)
    wide_b = Ball(b, r, float(b.abs().max()), False)  # b is a member
    assert encloses(Ball.point(a) @ wide_b, [exact])
    assert encloses(wide_b.T @ Ball.point(a.T), [exact])


@settings(max_examples=200, deadline=None)
@given(st.lists(moderate, min_size=1, max_size=6), st.sampled_from([0.0, 1e-9, 0.3]))
def test_logsumexp_and_softmax_enclose_exact_results(xs, r):
    b = ball_of(xs, r)
    rng = random.Random(len(xs))
    x = members(b, [rng.uniform(-1, 1) for _ in xs])
    total = sum(dexp(v) for v in x)
    assert encloses(b.logsumexp(0), [total.ln()])
    weights = ball.softmax([ball_of([v], r) for v in xs])
    for w, v in zip(weights, x, strict=True):  # each group's weight, same members
        assert encloses(w, [dexp(v) / total]) or w.rad >= 1e-9  # members differ per call
    same = ball.softmax([Ball(t64([v]), 0.0, abs(v), False) for v in xs])
    exact = [dexp(Fraction(v)) / sum(dexp(Fraction(u)) for u in xs) for v in xs]
    assert all(encloses(w, [e]) for w, e in zip(same, exact, strict=True))


def test_infinities_are_exact_or_nan():
    x = Ball(t64([1.0, -2.0, 3.0]), 0.5, 3.0, False)
    masked = x.masked_fill(torch.tensor([False, True, False]), -math.inf)
    assert masked.inf and masked.amax(0).mid.item() == 3.0 and not masked.amax(0).inf
    # an infinite factor meets a factor whose sign is uncertain: NaN (no information)
    factor = Ball(t64([0.2, 1.0, -1.0]), 0.5, 1.0, False)
    product = masked * factor
    assert math.isnan(product.mid[1].item()) or product.mid[1].item() == -math.inf
    assert torch.isnan((Ball(t64([-math.inf]), 0.0, 0.0, True) * factor[:1]).mid).all()
    # exp(-inf) = 0 exactly; the empty log-sum-exp is -inf
    assert masked.exp().mid[1].item() == 0.0
    empty = Ball(torch.empty(2, 0, dtype=torch.float64), 0.1, 0.0, False).logsumexp(1)
    assert empty.inf and bool((empty.mid == -math.inf).all())


def test_overflow_gives_no_information():
    huge = Ball(t64([1e300]), 0.0, 1e300, False)
    assert (huge * huge).rad == math.inf
    assert (huge + huge).rad < math.inf
    assert Ball(t64([800.0]), 0.0, 800.0, False).exp().rad == math.inf
    # a huge radius on small midpoints (found with W_E x 1e30): no information, no crash
    assert Ball(t64([-1.0, 0.0]), 1e30, 1.0, False).exp().rad == math.inf
    # scores within 355 (2 r above exp's range: expm1(2 r) raised a math range error)
    wide = Ball(t64([0.0, 1.0]), 355.0, 1.0, False)
    assert wide.softmax(0).rad == math.inf
    assert all(w.rad == math.inf for w in ball.softmax([wide[:1], wide[1:]]))
    assert interval.certainly_negative(Ball(t64([-1.0]), math.inf, 1.0, False)).item() is False


def test_magnitudes_bound_the_midpoints():
    gen = torch.Generator().manual_seed(0)
    A = Ball.point(torch.randn(5, 4, generator=gen, dtype=torch.float64) * 30)
    B = Ball.point(torch.randn(4, 3, generator=gen, dtype=torch.float64))
    for out in (A @ B, (A @ B).exp() * 2.0 - 1.0, (A @ B).sum(0), A.abs().mean(0)):
        assert float(out.mid.abs().max()) <= out.mag


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_certified_sigma1_bound_is_above_sigma1(seed, scale):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(9, 4, generator=gen, dtype=torch.float64) * scale
    Y = torch.randn(4, 7, generator=gen, dtype=torch.float64)
    if seed % 3 == 0:  # rank one
        X = X[:, :1] @ torch.ones(1, 4, dtype=torch.float64)
    sigma = float(np.linalg.svd((X @ Y).numpy(), compute_uv=False)[0])
    bound = sigma1_upper_bound(Ball.point(X), Ball.point(Y))
    upper = float(interval.upper(bound))  # only the upper end is claimed
    assert upper >= sigma * (1 - 1e-12)
    assert upper <= sigma * 4 ** (1 / 512) * (1 + 1e-6)  # d^(1/(2p)) overestimate
    assert float(bound.mid) <= upper


@pytest.mark.parametrize("scale", [0.0, 1e-320, 1e-300, 1e-170, 1e-160, 1.0, 1e160, 1e300])
def test_frobenius_upper_bound_holds_at_every_scale(scale):
    """torch's unscaled norm underflows below ~1e-154 (and overflows above ~1e154): the
    bound must not follow it."""
    gen = torch.Generator().manual_seed(1)
    M = torch.randn(5, 7, generator=gen, dtype=torch.float64) * scale
    squares = sum(Fraction(x) ** 2 for x in M.flatten().tolist())
    bound = decompose._frobenius_up(M)
    assert math.isfinite(bound)
    assert Fraction(bound) ** 2 >= squares
    assert bound <= float(dec(squares).sqrt()) * (1 + 1e-9) + 2.0**-999  # and tight


@pytest.mark.parametrize("scale", [1e-320, 1e-200, 1e-165, 1e-160, 1e150])
@pytest.mark.parametrize("rad", [0.0, 1e-3])
def test_certified_sigma1_bound_holds_at_extreme_scales(scale, rad):
    gen = torch.Generator().manual_seed(2)
    X = torch.randn(9, 4, generator=gen, dtype=torch.float64) * scale
    Y = torch.randn(4, 7, generator=gen, dtype=torch.float64)
    grown = X * 2.0**600 * 2.0**400 if scale < 1e-100 else X  # exact (powers of two)
    sigma = float(np.linalg.svd((grown @ Y).numpy(), compute_uv=False)[0])
    if grown is not X:
        sigma = sigma * 2.0**-600 * 2.0**-400
    ball_x = Ball(X, rad * scale, float(X.abs().max()), False)  # X is a member
    assert float(interval.upper(sigma1_upper_bound(ball_x, Ball.point(Y)))) >= sigma * (1 - 1e-12)


# -- decisions under real uncertainty -----------------------------------------------------
#
# The separable proofs are sound for *any* path matrices, so the path matrices are given a
# deliberate uncertainty (each matrix M known only to +-RHO max|M|, far above rounding):
# every input the proof then certifies must have a negative bound (the per-input formula
# `test_separable.direct_bound`) at every point of that box, in particular at random
# corners. (This exercises the explicit radius handling of the separable counting with
# radii that matter; one radius per tensor is coarse, so a single dropped radius can hide
# behind the others' slack: `test_joint_decisions_carry_the_term_radius` checks the
# counting's own invariant directly.)

RHO = 1e-3
CORNERS = 16
PATHS = ("EUPU", "EVOU", "PVOU", "EQKE", "EQKP")


def widened(paths: PathMatrices, names: tuple[str, ...] = PATHS) -> PathMatrices:
    """The same path matrices, those in `names` known only to +-RHO max|M|."""
    out = {}
    for name in PATHS:
        x = getattr(paths, name)
        if name in names:
            mid = x.mid if isinstance(x, Ball) else x.lo
            r = RHO * float(mid.abs().max())
            x = Ball(mid, r, None, None) if isinstance(x, Ball) else Interval(mid - r, mid + r)
        out[name] = x
    return PathMatrices(**out, attn_scale=paths.attn_scale)


def corners(paths: PathMatrices, seed: int):
    """Path matrices at random corners of the box (just inside it)."""
    gen = torch.Generator().manual_seed(seed)
    for _ in range(CORNERS):
        P = {}
        for name in PATHS:
            M = getattr(paths, name)
            signs = torch.randint(0, 2, M.shape, generator=gen) * 2 - 1
            P[name] = M + RHO * float(M.abs().max()) * (1 - 1e-9) * signs
        yield PathMatrices(**P, attn_scale=paths.attn_scale)


@pytest.mark.parametrize("arith", [Arithmetic.BALL, Arithmetic.INTERVAL], ids=lambda a: a.value)
@pytest.mark.parametrize("strategy_id", ["separable", "separable-lite"])
def test_every_radius_reaches_the_decisions(strategy_id, arith, monkeypatch):
    monkeypatch.setattr(separable, "path_matrices", lambda m, a: widened(path_matrices(m, a)))
    strategy = get_strategy(strategy_id)
    certified = 0
    models = [ideal_model(5, 3, beta=2.0, noise=0.2, seed=3)]
    models += [ideal_model(4, 4, beta=1.0, noise=0.3, seed=4, pos_scale=3.0)]
    models += [random_model(ModelConfig(5, 3, 6, 4), seed, scale=1.5) for seed in range(4)]
    for index, model in enumerate(models):
        seqs = all_sequences(model.cfg.d_vocab, model.cfg.n_ctx)
        proven = strategy.proven_in(model, {}, seqs, arith)
        for P in corners(path_matrices(model), index):
            bound = direct_bound(model, seqs, strategy_id == "separable", P)
            wrong = proven & (bound >= -1e-9 * bound.abs().max())
            assert not bool(wrong.any()), (index, seqs[wrong][:3].tolist())
        certified += int(proven.sum())
    assert certified > 0  # not vacuous


def test_joint_decisions_carry_the_term_radius(monkeypatch):
    """White box: every assignment the joint strategy certifies in ball arithmetic satisfies
    sum_p (U_p + u_rad) < T exactly (rationals), U the terms' midpoints, T the thresholds'
    lower ends: the counting never trusts a midpoint without its radius."""
    monkeypatch.setattr(separable, "path_matrices", lambda m, a: widened(path_matrices(m, a)))
    model = ideal_model(5, 4, beta=2.0, noise=0.2, seed=3)
    paths = separable.path_matrices(model, Arithmetic.BALL)
    q, m = separable._rows(5, torch.device("cpu"))
    t = separable.joint_terms(paths, separable._joint_model(paths), q, m, Arithmetic.BALL)
    assert t.u_rad > 0
    seqs = all_sequences(5, 4)
    rows = separable._row_index(5, q, m, seqs)
    proven = separable.joint_proven(t, seqs, rows)
    checked = 0
    for x, r in zip(seqs[proven].tolist(), rows[proven].tolist(), strict=True):
        S = [p for p in range(3) if x[p] < m[r]]
        if not 1 <= len(S) <= 2 or not bool(separable._exact_c(len(S), q[r] == m[r])):
            continue
        s = sum(1 << p for p in S)
        total = sum(Fraction(t.U[p, r, x[p]].item()) + Fraction(t.u_rad) for p in S)
        assert total < Fraction(t.T[r, s].item())
        checked += 1
    assert checked > 0


@pytest.mark.parametrize("v, beta", [(6, 1.0), (7, 3.0), (8, 1.0)])
def test_lite_decisions_carry_the_term_radius(monkeypatch, v, beta):
    """White box: every token the lite strategy admits to a set G in ball arithmetic has
    (h + h_rad) w < T for both ends w of the positional weight sum W_S (the bound is linear
    in w), exactly: the counting never trusts a midpoint without its radius. Only the value
    paths are uncertain, so that the weights' radius cannot hide h's; the models admit
    tokens within h_rad of the threshold."""
    values = ("EUPU", "EVOU", "PVOU")
    monkeypatch.setattr(
        separable, "path_matrices", lambda m, a: widened(path_matrices(m, a), values)
    )
    model = ideal_model(v, 3, beta=beta, noise=0.05, seed=1)
    t = separable.lite_tables(separable.path_matrices(model, Arithmetic.BALL), Arithmetic.BALL)
    assert t.h_rad > 0
    seqs = all_sequences(v, 3)
    rows = separable._row_index(v, t.q, t.m, seqs)
    proven = separable.lite_proven(t, seqs, rows)
    checked = 0
    for x, r in zip(seqs[proven].tolist(), rows[proven].tolist(), strict=True):
        S = [p for p in range(2) if x[p] < t.m[r]]
        if not S:
            continue
        W_S = t.W[r, S[0]]
        for p in S[1:]:
            W_S = W_S + t.W[r, p]
        ends = [Fraction(W_S.mid.item()) + sign * Fraction(W_S.rad) for sign in (-1, 1)]
        T = Fraction(t.T[r, sum(1 << p for p in S)].item())
        for p in S:
            h = Fraction(t.h[r, x[p]].item()) + Fraction(t.h_rad)
            assert all(h * w < T for w in ends)
            checked += 1
    assert checked > 0
