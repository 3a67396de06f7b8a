"""Outward-rounded interval arithmetic: every operation encloses the exact real result."""

from __future__ import annotations

import decimal
import math
from fractions import Fraction

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from compact_proofs.soundness import interval as iv
from compact_proofs.soundness.interval import Interval, enclose_sqrt, matmul

finite = st.floats(min_value=-1e30, max_value=1e30, allow_nan=False, allow_infinity=False)
moderate = st.floats(min_value=-700, max_value=700, allow_nan=False, allow_infinity=False)


def inside(x: Fraction | decimal.Decimal, box: Interval) -> bool:
    """Is the exact value x inside the (0-dim) interval? (infinite ends are unbounded)"""
    lo, hi = float(box.lo), float(box.hi)
    return (lo == -math.inf or Fraction(lo) <= Fraction(x)) and (
        hi == math.inf or Fraction(x) <= Fraction(hi)
    )


def pt(x: float) -> Interval:
    return Interval.point(torch.tensor(x, dtype=torch.float64))


def box(a: float, b: float) -> Interval:
    lo, hi = sorted((a, b))
    return Interval(torch.tensor(lo, dtype=torch.float64), torch.tensor(hi, dtype=torch.float64))


@settings(max_examples=300, deadline=None)
@given(finite, finite)
def test_arithmetic_encloses_exact_results(a, b):
    x, y = Fraction(a), Fraction(b)
    assert inside(x + y, pt(a) + pt(b))
    assert inside(x - y, pt(a) - pt(b))
    assert inside(x * y, pt(a) * pt(b))
    if b != 0:
        assert inside(x / y, pt(a) / pt(b))


@settings(max_examples=200, deadline=None)
@given(finite, finite, finite, finite, st.floats(0, 1), st.floats(0, 1))
def test_interval_products_enclose_all_members(a, b, c, d, s, t):
    """For members x in [a, b], y in [c, d]: x*y, x-y, x/y lie in the result."""
    X, Y = box(a, b), box(c, d)
    x = Fraction(float(X.lo)) + Fraction(s) * (Fraction(float(X.hi)) - Fraction(float(X.lo)))
    y = Fraction(float(Y.lo)) + Fraction(t) * (Fraction(float(Y.hi)) - Fraction(float(Y.lo)))
    assert inside(x * y, X * Y)
    assert inside(x - y, X - Y)
    quotient = X / Y
    if y != 0:
        assert inside(x / y, quotient)
    if float(Y.lo) <= 0 <= float(Y.hi):  # a divisor interval containing 0: no information
        assert float(quotient.lo) == -math.inf and float(quotient.hi) == math.inf


def _decimal_context() -> decimal.Context:
    return decimal.Context(prec=60)


@settings(max_examples=300, deadline=None)
@given(moderate)
def test_exp_and_log_enclose_exact_values(a):
    ctx = _decimal_context()
    exact_exp = ctx.exp(decimal.Decimal(a))
    assert inside(exact_exp, pt(a).exp())
    if a > 0:
        assert inside(ctx.ln(decimal.Decimal(a)), pt(a).log())


def test_exp_underflow_and_overflow_stay_enclosures():
    tiny = pt(-800.0).exp()  # e^-800 is below the float64 range
    assert float(tiny.lo) == 0.0 and float(tiny.hi) > 0.0
    huge = pt(800.0).exp()
    assert float(huge.hi) == math.inf and float(huge.lo) > 1e300


@settings(max_examples=100, deadline=None)
@given(st.lists(finite, min_size=1, max_size=40))
def test_sum_encloses_exact_sum(xs):
    exact = sum(Fraction(x) for x in xs)
    assert inside(exact, Interval.point(torch.tensor(xs, dtype=torch.float64)).sum(0))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.integers(1, 12), st.integers(0, 2**31))
def test_matmul_encloses_exact_product(n, k, m, seed):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, k, generator=g, dtype=torch.float64) * 10 ** torch.randint(-8, 8, (n, k))
    B = torch.randn(k, m, generator=g, dtype=torch.float64)
    wide = Interval(A, A + A.abs() * 1e-3)
    C, Cw = matmul(A, B), matmul(wide, B)
    for i in range(n):
        for j in range(m):
            exact = sum(Fraction(float(A[i, t])) * Fraction(float(B[t, j])) for t in range(k))
            assert inside(exact, C[i, j])
            assert inside(exact, Cw[i, j])  # A is a member of `wide`


@pytest.mark.parametrize(
    "xs", [[1e16, 1.0, -1e16], [1e16, 1.0, 1.0, -1e16], [1.0, 1e300, 1.0, -1e300, 1e-300]]
)
def test_matmul_encloses_sums_with_catastrophic_cancellation(xs):
    """Whatever order the library sums in, the exact value is inside the interval."""
    a = torch.tensor(xs, dtype=torch.float64)
    ones = torch.ones(len(xs), dtype=torch.float64)
    assert inside(sum(Fraction(x) for x in xs), matmul(a, ones))
    assert inside(sum(Fraction(x) for x in xs), Interval.point(a).sum(0))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(min_value=-1e300, max_value=1e300, allow_nan=False),
            st.floats(min_value=-1.0, max_value=1.0, allow_nan=False),
        ),
        min_size=1,
        max_size=4,
    ),
    st.booleans(),
)
@example(pairs=[(1e300, 3e-320), (1e300, -(3e-320 + 5e-324))], wide=False)
def test_matmul_encloses_products_of_huge_and_subnormal_entries(pairs, wide):
    """(The example: the products cancel to ~5e-24, each rounded by ~3e-36, while gamma_n |b|
    underflows to 0 before |a| = 1e300 multiplies it.)"""
    a = torch.tensor([[x for x, _ in pairs]], dtype=torch.float64)
    b = torch.tensor([[y] for _, y in pairs], dtype=torch.float64)
    exact = sum(Fraction(x) * Fraction(y) for x, y in pairs)
    B = Interval(b, b + b.abs() * 2.0**-30) if wide else Interval.point(b)  # b is a member
    assert inside(exact, matmul(a, B)[0, 0])
    assert inside(exact, matmul(B.T, a.T)[0, 0])


def test_logsumexp_and_sigmoid_enclose():
    xs = [-3.0, 0.5, 2.25, -700.0]
    ctx = _decimal_context()
    exact = ctx.ln(sum(ctx.exp(decimal.Decimal(x)) for x in xs))
    assert inside(exact, Interval.point(torch.tensor(xs, dtype=torch.float64)).logsumexp(0))
    empty = Interval.point(torch.empty(0, dtype=torch.float64)).logsumexp(0)
    assert float(empty.hi) == -math.inf
    for a in (-40.0, -1.0, 0.0, 3.0, 40.0):
        sig = 1 / (1 + ctx.exp(decimal.Decimal(-a)))
        assert inside(sig, pt(a).sigmoid())


@pytest.mark.parametrize("n", [1, 2, 3, 8, 32, 1000])
def test_sqrt_enclosure(n):
    s = enclose_sqrt(n)
    assert Fraction(float(s.lo)) ** 2 <= n <= Fraction(float(s.hi)) ** 2
    assert inside(Fraction(n), (s * s))


def test_divide_is_one_correctly_rounded_division_in_every_operand_form():
    """rounding.divide: tensor / tensor, tensor / number and number / tensor (which torch
    itself computes as reciprocal times number, rounding twice) are all IEEE quotients."""
    from compact_proofs.soundness.rounding import divide

    n = 2000
    xs, ys = wide_positive_floats(n, 1)[:1000], wide_positive_floats(n, 2)[:1000]
    a, b = torch.tensor(xs, dtype=torch.float64), torch.tensor(ys, dtype=torch.float64)
    by_tensors = divide(a, b).tolist()
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        exact = Fraction(x) / Fraction(y)
        for q in (by_tensors[i], float(divide(a[i : i + 1], y)), float(divide(x, b[i : i + 1]))):
            # nearest float: within half an ulp (2^-1075 for 0 and subnormals); inf: overflow
            assert math.isinf(q) or abs(Fraction(q) - exact) <= Fraction(math.ulp(q)) / 2, (x, y)


def wide_positive_floats(n: int, seed: int) -> list[float]:
    """n positive floats spread over float64's whole range, subnormals included."""
    g = torch.Generator().manual_seed(seed)
    mantissas = (torch.rand(n, generator=g, dtype=torch.float64) + 0.5).tolist()
    exponents = torch.randint(-1074, 1023, (n,), generator=g).tolist()
    xs = [math.ldexp(m, e) for m, e in zip(mantissas, exponents, strict=True)]
    return [x for x in xs if 0 < x < math.inf]


def test_vectorised_sqrt_is_enclosed():
    """torch's float64 sqrt on a vector is not always correctly rounded (SLEEF on x86: about
    half an ulp, 0.53 ulp at worst over 2e5 inputs, sometimes the other neighbour): the
    interval rule assumes only an error below one ulp."""
    xs = [*wide_positive_floats(4096, 0), 4539170895717033.0]
    root = Interval.point(torch.tensor(xs, dtype=torch.float64)).sqrt()
    for lo, hi, v in zip(root.lo.tolist(), root.hi.tolist(), xs, strict=True):
        assert Fraction(lo) ** 2 <= Fraction(v) <= Fraction(hi) ** 2


def test_order_statistics_of_intervals():
    """The i-th smallest member value lies between the i-th smallest lo and hi."""
    g = torch.Generator().manual_seed(0)
    lo = torch.randn(200, 5, generator=g, dtype=torch.float64)
    hi = lo + torch.rand(200, 5, generator=g, dtype=torch.float64)
    members = lo + torch.rand(200, 5, generator=g, dtype=torch.float64) * (hi - lo)
    s = iv.sort_values(Interval(lo, hi), dim=-1)
    ordered = members.sort(dim=-1).values
    assert bool((s.lo <= ordered).all() and (ordered <= s.hi).all())


def test_plain_tensors_pass_through_unchanged():
    x = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    assert torch.equal(iv.maximum(x, -x), torch.maximum(x, -x))
    assert torch.equal(iv.sort_values(x), x.sort().values)
    assert torch.equal(iv.certainly_negative(x), x < 0)
    assert torch.equal(iv.outer(x, x), torch.outer(x, x))


def test_certainly_negative_is_false_on_nan_and_straddling():
    assert not bool(iv.certainly_negative(box(-1.0, 1e-300)))
    assert bool(iv.certainly_negative(box(-2.0, -1e-300)))
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    assert not bool(iv.certainly_negative(Interval(nan, nan)))


def test_sum_of_overflowing_terms_is_unbounded_not_nan():
    big = Interval.point(torch.tensor([1e308, 1e308, -1.0], dtype=torch.float64)).sum(0)
    assert float(big.hi) == math.inf and not math.isnan(float(big.lo))


def test_points_never_alias_their_ends():
    """An interval's ends are distinct tensors and every update is out of place: writing into
    one end of a point once silently made separable-lite's g[x, m] a point at its upper end
    (`_scatter_rows` wrote into `point_like(...)`, whose lo and hi were one tensor)."""
    t = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    for p in (Interval.point(t), iv.point_like(Interval.point(t), t)):
        assert p.lo is not p.hi and p.is_point
        p.lo[0] = -5.0
        assert float(p.hi[0]) == 1.0 and float(t[0]) == 1.0
    base = iv.point_like(Interval.point(t), torch.zeros(3, dtype=torch.float64))
    values = Interval(torch.tensor([1.0, 2.0]).double(), torch.tensor([1.5, 2.5]).double())
    out = iv.index_put(base, (torch.tensor([0, 2]),), values)
    assert out.lo.tolist() == [1.0, 0.0, 2.0] and out.hi.tolist() == [1.5, 0.0, 2.5]
    assert base.lo.tolist() == base.hi.tolist() == [0.0, 0.0, 0.0]  # untouched
    assert not out.is_point
