"""Ball arithmetic with one radius per tensor: rigorous float64 at float64 speed.

A `Ball` is a float64 tensor `mid` (computed by exactly the torch operation the plain float64
mode runs) with three Python numbers describing what it encloses:

* `rad`: every *finite* entry satisfies |exact - mid| <= rad, where exact is the value the same
  formula has in exact real arithmetic on the float32 weights;
* `mag`: an upper bound on |mid| over its finite entries;
* `inf`: whether `mid` may hold +-inf entries. An infinite entry is *exact* (the formula's value
  there is that infinity, as in extended real arithmetic: masked entries, empty maxima).
  NaN entries mean "no information" and prove nothing (every comparison with NaN is false).

`rad = inf` means no information at all (infinite entries are then not exact either).

Every operation computes `mid` with one torch call and the new `rad`, `mag` with a few Python
float operations from the rounding model of docs/soundness.md (unit roundoff U = 2^-53; every
+ - * / of torch is correctly rounded, with an absolute 2^-1074 for underflowing products and
quotients; sums and matrix products of n terms within gamma_n sum |terms| in any order; exp,
log and sigmoid within LIBM_REL relative plus TINY absolute). Those Python computations are on
non-negative numbers and are inflated by `rounding.up` (a relative 2^-40, far more than the
few roundings of each rule, plus an absolute 2^-1060 for those whose results underflow), so
they are upper bounds of the exact expressions; the one product a rule magnifies afterwards
(`_divide`'s a.mag r_b / beta^2) is computed in exact rationals. Overflow is
excluded by the magnitude bounds: an operation whose result bound could reach MAG_LIMIT gets
`rad = inf`. Reductions that the rules need (the largest argument of exp, the smallest divisor)
are measured on `mid` itself, so nothing about the values is assumed.

One radius for a whole tensor is coarse where entries differ by many orders of magnitude, but
it costs almost nothing: a decision whose margin is not clear of the radius is reported as
undecided, and strategies then re-verify with per-entry intervals (soundness.interval).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from fractions import Fraction

import torch
from torch import Tensor

from compact_proofs.soundness.rounding import (
    LIBM_REL,
    SUBNORMAL_ULP,
    TINY,
    UP,
    U,
    divide,
    gamma,
    round_down,
    round_up,
)
from compact_proofs.soundness.rounding import up as _up

INF = float("inf")
MAG_LIMIT = 2.0**1000  # magnitudes at or above this could overflow: no information
EXP_LIMIT = 700.0  # exp of anything larger may overflow in the bounds


def _finite_abs_max(t: Tensor) -> tuple[float, bool]:
    """(max |t| over finite entries (0 if none), whether t has infinite entries)."""
    if t.numel() == 0:
        return 0.0, False
    top = float(torch.linalg.vector_norm(t, ord=INF))
    if math.isfinite(top):
        return top, False
    a = torch.nan_to_num(t.abs(), nan=0.0, posinf=0.0)  # NaN or inf: the finite entries only
    return float(a.amax()), bool(torch.isinf(t).any())


class Ball:
    """A float64 tensor with one radius (module docstring)."""

    __slots__ = ("_inf", "_mag", "_min_abs", "mid", "rad")

    def __init__(self, mid: Tensor, rad: float, mag: float | None, inf: bool | None) -> None:
        """`mag` and `inf` None: measured on `mid` when first needed (exact points only)."""
        self.mid = mid
        self._mag = mag
        self._inf = inf
        self.rad = rad if mag is None or mag < MAG_LIMIT else INF
        self._min_abs: float | None = None  # measured once, when first used as a divisor

    @staticmethod
    def point(x: Tensor | float) -> Ball:
        """The exact values of x (float64); its magnitude is measured when first needed."""
        t = x if isinstance(x, Tensor) else torch.tensor(float(x), dtype=torch.float64)
        if t.dtype != torch.float64:
            t = t.to(torch.float64)
        return Ball(t, 0.0, None, None)

    @property
    def mag(self) -> float:
        if self._mag is None:
            self._measure()
        return self._mag  # type: ignore[return-value]

    @property
    def inf(self) -> bool:
        if self._inf is None:
            self._measure()
        return self._inf  # type: ignore[return-value]

    def _measure(self) -> None:
        self._mag, self._inf = _finite_abs_max(self.mid)

    @property
    def is_point(self) -> bool:
        return self.rad == 0.0

    def _same(self, mid: Tensor) -> Ball:
        """A result whose entries are entries of self (shape ops, order statistics)."""
        return Ball(mid, self.rad, self._mag, self._inf)

    # -- shape handling and order: the same radius --------------------------------------

    @property
    def shape(self) -> torch.Size:
        return self.mid.shape

    @property
    def dtype(self) -> torch.dtype:
        return self.mid.dtype

    @property
    def device(self) -> torch.device:
        return self.mid.device

    def __getitem__(self, index: object) -> Ball:
        return self._same(self.mid[index])

    @property
    def T(self) -> Ball:
        return self._same(self.mid.T)

    def permute(self, *dims: int) -> Ball:
        return self._same(self.mid.permute(*dims))

    def diagonal(self) -> Ball:
        return self._same(self.mid.diagonal())

    def reshape(self, *shape: int) -> Ball:
        return self._same(self.mid.reshape(shape))

    def flip(self, dim: int) -> Ball:
        return self._same(self.mid.flip(dim))

    def expand_as(self, other: Tensor | Ball) -> Ball:
        return self._same(self.mid.expand(other.shape))

    def to(self, device: torch.device | str) -> Ball:
        return self._same(self.mid.to(device))

    def masked_fill(self, mask: Tensor, value: float) -> Ball:
        """Filled entries hold the exact constant `value`."""
        finite = math.isfinite(value)
        mag = max(self.mag, abs(value)) if finite else self.mag
        return Ball(self.mid.masked_fill(mask, value), self.rad, mag, self.inf or not finite)

    def amax(self, dim: int) -> Ball:
        """max is 1-Lipschitz in the largest entry difference; exact infinities stay exact."""
        return self._reduced(self.mid.amax(dim=dim))

    def amin(self, dim: int) -> Ball:
        return self._reduced(self.mid.amin(dim=dim))

    def _reduced(self, mid: Tensor) -> Ball:
        """A max or min over a dimension: masked (infinite) entries usually drop out, so
        whether any remain is measured (it saves NaN masks in later products)."""
        has_inf = self.inf and bool(torch.isinf(mid).any())
        return Ball(mid, self.rad, self.mag, has_inf)

    def abs(self) -> Ball:
        return self._same(self.mid.abs())

    def clamp(self, min: float) -> Ball:
        return Ball(self.mid.clamp(min=min), self.rad, max(self.mag, abs(min)), self.inf)

    # -- arithmetic -----------------------------------------------------------------------

    def __neg__(self) -> Ball:
        return self._same(-self.mid)

    def __add__(self, other: BallLike) -> Ball:
        o = _operand(other)
        return _sum_rule(self.mid + o.mid, self, o)

    __radd__ = __add__

    def __sub__(self, other: BallLike) -> Ball:
        o = _operand(other)
        return _sum_rule(self.mid - o.mid, self, o)

    def __rsub__(self, other: BallLike) -> Ball:
        o = _operand(other)
        return _sum_rule(o.mid - self.mid, o, self)

    def __mul__(self, other: BallLike) -> Ball:
        """|fl(ab) - xy| <= |a| r_b + (|b| + r_b) r_a + U |ab| + 2^-1074."""
        o = _operand(other)
        mid = self.mid * o.mid
        mag = _up(self.mag * o.mag)
        err = self.mag * o.rad + (o.mag + o.rad) * self.rad + U * mag + SUBNORMAL_ULP
        mid = _unsigned_infinities(mid, self, o)
        return Ball(mid, _up(err), mag, self.inf or o.inf)

    __rmul__ = __mul__

    def __truediv__(self, other: BallLike) -> Ball:
        """|a/b - x/y| <= r_a/beta + |a| r_b/beta^2 with beta = min |b| - r_b > 0 (plus the
        rounding of the quotient); no information when a divisor may be 0."""
        return _divide(self, _operand(other))

    def __rtruediv__(self, other: BallLike) -> Ball:
        return _divide(_operand(other), self)

    def __matmul__(self, other: BallLike) -> Ball:
        return matmul(self, other)

    def __rmatmul__(self, other: BallLike) -> Ball:
        return matmul(other, self)

    def sum(self, dim: int) -> Ball:
        """|fl(sum a) - sum x| <= n r + gamma_n n mag (any summation order)."""
        n = self.shape[dim]
        mag = _up(n * self.mag)
        err = n * self.rad + gamma(n) * mag
        return Ball(self.mid.sum(dim=dim), _up(err), mag, self.inf)

    def mean(self, dim: int) -> Ball:
        return self.sum(dim) / float(self.shape[dim])

    def exp(self) -> Ball:
        """|fl(e^a) - e^x| <= E (LIBM_REL + expm1(r)) + TINY, E >= e^H, H the largest finite
        mid. E = exp(H) (1 + LIBM_REL) + TINY: where exp(H) underflows, its absolute error
        (TINY) is multiplied by expm1(r) too (up to e^700), and so is expm1's own."""
        mid = self.mid.exp()
        if self.mid.numel() == 0:
            return Ball(mid, self.rad, 0.0, False)
        top, pos_inf = _finite_max(self.mid, self.inf)
        if not (top <= EXP_LIMIT and self.rad <= EXP_LIMIT):  # expm1(rad) would overflow
            return Ball(mid, INF, INF, True)
        e_top = math.exp(top) * (1 + LIBM_REL) + TINY
        growth = math.expm1(self.rad) * (1 + LIBM_REL) + TINY
        err = e_top * (LIBM_REL + growth) + TINY
        return Ball(mid, _up(err), _up(e_top), pos_inf)  # exp(-inf) = 0 is finite

    def log(self) -> Ball:
        """|fl(log a) - log x| <= r / lambda + LIBM_REL L + TINY, lambda = min a - r > 0,
        L = max |log| over the entries; no information if an argument may be <= 0."""
        mid = self.mid.log()
        finite = self.mid[torch.isfinite(self.mid)] if self.inf else self.mid
        if finite.numel() == 0:
            return Ball(mid, self.rad, 0.0, self.inf)
        lo, hi = float(finite.amin()), float(finite.amax())
        lam = (lo - self.rad) * (1 - 2.0**-40)
        if not lam > 0:
            return Ball(mid, INF, INF, True)
        L = _up(max(abs(math.log(lam)), abs(math.log(hi))) * (1 + LIBM_REL)) + TINY
        err = self.rad / lam + LIBM_REL * L + TINY
        return Ball(mid, _up(err), L, self.inf)

    def logsumexp(self, dim: int) -> Ball:
        """log sum_i exp(x_i) by torch's stable logsumexp, s + log sum_i exp(x_i - s) with s the
        row maximum. It is 1-Lipschitz in the largest entry difference. Its rounding: each
        exp(fl(x_i - s)) is within (e^(U t) - 1) e^(-t) <= U of exp(x_i - s) for t = s - x_i
        >= 0, plus LIBM_REL of it and TINY; the sum of n terms (>= 1) adds gamma_n relative;
        so log of it is within 2 (n U + LIBM_REL + gamma_n + n TINY) plus log's own LIBM_REL
        log n, and the final add rounds by U |result|. We allow four times that."""
        n = self.shape[dim]
        mid = torch.logsumexp(self.mid, dim=dim)
        log_n = math.log(max(n, 1))
        mag = _up(self.mag + log_n)
        rounding = 2 * (n * U + LIBM_REL + gamma(n) + n * TINY) + LIBM_REL * log_n + U * mag
        err = self.rad + 4 * rounding
        return Ball(mid, _up(err), mag, self.inf or n == 0)  # empty sums: exact -inf

    def softmax(self, dim: int) -> Ball:
        """Softmax along `dim`, as `softmax` below for the entries of that dimension (the
        same radius argument with n = their number)."""
        top = self.mid.amax(dim=dim, keepdim=True)
        e = (self.mid - top).exp()
        return Ball(
            e / e.sum(dim=dim, keepdim=True),
            _softmax_rad(self.rad, self.shape[dim]),
            1.0 + 2.0**-40,
            False,
        )

    def sigmoid(self) -> Ball:
        """sigmoid is 1/4-Lipschitz and in [0, 1]; torch's value within LIBM_REL of it."""
        mid = torch.sigmoid(self.mid)
        return Ball(mid, _up(self.rad / 4 + LIBM_REL + TINY), 1.0, False)

    def sqrt(self) -> Ball:
        """|sqrt(a) - sqrt(x)| <= min(sqrt(r), r / sqrt(lambda)) for lambda = min a - r > 0;
        torch's float64 sqrt is not correctly rounded (vectorised, up to one ulp off): like
        exp and log it is taken within LIBM_REL relative plus TINY."""
        mid = self.mid.clamp(min=0.0).sqrt()
        bound = math.sqrt(self.rad)
        if self.rad > 0 and self.mid.numel() > 0:
            lam = (float(self.mid.amin()) - self.rad) * (1 - 2.0**-40)
            if lam > 0:
                bound = min(bound, self.rad / math.sqrt(lam))
        mag = _up(math.sqrt(self.mag))
        return Ball(mid, _up(bound + LIBM_REL * mag + TINY), mag, self.inf)

    # -- ends -----------------------------------------------------------------------------

    def upper(self) -> Tensor:
        """A float >= every member, entrywise (+inf when there is no information)."""
        if self.rad == 0.0:
            return self.mid
        if self.rad == INF:
            return torch.full_like(self.mid, INF)
        return round_up(self.mid + self.rad)

    def lower(self) -> Tensor:
        if self.rad == 0.0:
            return self.mid
        if self.rad == INF:
            return torch.full_like(self.mid, -INF)
        return round_down(self.mid - self.rad)


BallLike = Ball | Tensor | float


def lift(x: BallLike) -> Ball:
    """x as a Ball (plain tensors and numbers are exact points)."""
    if isinstance(x, Ball):
        return x
    if isinstance(x, Tensor):
        return Ball.point(x)
    value = float(x)
    t = torch.tensor(value, dtype=torch.float64)
    finite = math.isfinite(value)
    return Ball(t, 0.0, abs(value) if finite else 0.0, not finite)


class _Scalar:
    """An exact number as an operand (no tensor is made for it)."""

    __slots__ = ("inf", "mag", "mid", "rad")

    def __init__(self, value: float) -> None:
        finite = math.isfinite(value)
        self.mid, self.rad = value, 0.0
        self.mag, self.inf = (abs(value) if finite else 0.0), not finite


def _operand(x: BallLike) -> Ball | _Scalar:
    """x as an operand of an arithmetic rule (plain tensors are exact points)."""
    if isinstance(x, Ball):
        return x
    if isinstance(x, Tensor):
        return Ball.point(x)
    return _Scalar(float(x))


def _divide(a: Ball | _Scalar, b: Ball | _Scalar) -> Ball:
    mid = divide(a.mid, b.mid)
    if isinstance(b, _Scalar):
        b_min = abs(b.mid)
    else:
        if b._min_abs is None:
            b._min_abs = _min_abs(b.mid)
        b_min = b._min_abs
    beta = (b_min - b.rad) * (1 - 2.0**-40)
    if not beta > 0:
        return Ball(mid, INF, INF, True)
    mag = _up(a.mag / b_min)
    # a.mag r_b / beta^2 in exact rationals: a float product could underflow (to 0, say)
    # before the division by beta^2 magnified what it lost (only inf, not modelled, is
    # left to floats: it gives no information)
    second = (
        _to_float(Fraction(a.mag) * Fraction(b.rad) / (Fraction(beta) * Fraction(beta)))
        if math.isfinite(a.mag) and math.isfinite(b.rad)
        else INF
    )
    err = a.rad / beta + second + U * mag + SUBNORMAL_ULP
    return Ball(mid, _up(err), mag, a.inf or b.inf)


def _to_float(x: Fraction) -> float:
    """The nearest float to x >= 0 (inf beyond the float range); `up` then covers the
    rounding."""
    try:
        return float(x)
    except OverflowError:
        return INF


def _sum_rule(mid: Tensor, a: Ball | _Scalar, b: Ball | _Scalar) -> Ball:
    """a +- b: |fl(a +- b) - (x +- y)| <= r_a + r_b + U |a +- b|; exact infinities stay exact
    (inf - inf is NaN)."""
    mag = _up(a.mag + b.mag)
    return Ball(mid, _up(a.rad + b.rad + U * mag), mag, a.inf or b.inf)


def _unsigned_infinities(mid: Tensor, a: Ball | _Scalar, b: Ball | _Scalar) -> Tensor:
    """NaN where an infinite factor meets a factor whose sign is not certain: the exact
    product could be 0 * inf or of the other sign."""
    out = mid
    for x, y in ((a, b), (b, a)):
        if x.inf and y.rad > 0:  # y is then a Ball
            infinite = math.isinf(x.mid) if isinstance(x, _Scalar) else torch.isinf(x.mid)
            out = torch.where(infinite & (y.mid.abs() <= y.rad), math.nan, out)
    return out


def _min_abs(t: Tensor) -> float:
    """min |t| (infinite divisors give exact 0 quotients of finite numbers: they may stay)."""
    if t.numel() == 1:
        return abs(float(t))
    value = float(t.abs().amin()) if t.numel() else INF
    return value if value == value else 0.0


def _finite_max(t: Tensor, has_inf: bool) -> tuple[float, bool]:
    """(the largest finite entry, whether t holds +inf). +inf entries are excluded from the
    maximum: exp(+inf) = inf is exact. NaN gives +inf: no information."""
    top = float(t.amax())
    if top == INF and has_inf:
        return float(t.masked_fill(t == INF, -INF).amax()), True
    return (top if top == top else INF), False


def matmul(a: BallLike, b: BallLike) -> Ball:
    """|fl(a @ b) - x @ y| <= n (|a| r_b + r_a (|b| + r_b)) + gamma_n n mag_a mag_b + n 2^-1074
    (n the inner dimension; Higham's bound for any order, blocking or FMA)."""
    A, B = lift(a), lift(b)
    n = A.shape[-1]
    mid = A.mid @ B.mid
    if A.inf or B.inf:  # products with infinities are not modelled: no information
        return Ball(mid, INF, INF, True)
    bound = n * A.mag * B.mag  # >= sum_k |a_ik| |b_kj|
    err = n * (A.mag * B.rad + A.rad * (B.mag + B.rad)) + gamma(n) * bound + n * SUBNORMAL_ULP
    mag = float(mid.abs().amax()) if mid.numel() else 0.0  # measured: tighter than the rule
    if not mag <= bound * (1 + gamma(n)) * UP:  # NaN or overflow: no information
        return Ball(mid, INF, INF, True)
    return Ball(mid, _up(err), mag, False)


def softmax(scores: Sequence[BallLike]) -> list[Ball]:
    """Softmax weights of n groups from their (log-sum-exp) scores, broadcast together:
    w_i = exp(x_i - t) / sum_j exp(x_j - t), t = the entrywise largest midpoint (exactly the
    float64 operations of the plain formula).

    Radius, for scores within r of exact (r the largest input radius): the exact weights are
    within w (e^(2r) - 1) <= e^(2r) - 1 of the softmax of the midpoints (each numerator and
    the denominator move by a factor within e^(+-r)). Against that softmax the computed
    weights err by rounding only: with D_j = x_j - t <= 0 and D = 0 for the largest,
    fl(D_j) is within U |D_j| of D_j, so exp(fl(D_j)) is within LIBM_REL e^(D_j) + 0.37 U +
    TINY of e^(D_j) (t e^(-t) <= 1/e); the sum S >= 1 of the n terms adds gamma_n relative;
    so each quotient is within 2 LIBM_REL + gamma_n + (n + 2)(0.4 U + TINY) + U of
    e^(D_i) / S. We allow twice that. No magnitude needs measuring: weights lie in [0, 1].
    """
    scores = [lift(x) for x in scores]
    n = len(scores)
    top = scores[0].mid
    for x in scores[1:]:
        top = torch.maximum(top, x.mid)
    exps = [(x.mid - top).exp() for x in scores]
    total = exps[0]
    for e in exps[1:]:
        total = total + e
    rad = _softmax_rad(max(x.rad for x in scores), n)
    return [Ball(e / total, rad, 1.0 + 2.0**-40, False) for e in exps]


def _softmax_rad(r: float, n: int) -> float:
    """Radius of n softmax weights from scores within r of exact (`softmax`)."""
    if not 2 * r <= EXP_LIMIT:  # expm1(2 r) would overflow (a math range error)
        return INF
    rounding = 2 * LIBM_REL + gamma(n) + (n + 2) * (0.4 * U + TINY) + U
    return _up(math.expm1(2 * r) * (1 + LIBM_REL) + 2 * rounding)


def _combine(mids: Sequence[Tensor], parts: Sequence[Ball], join: Callable) -> Ball:
    return Ball(
        join(mids),
        max(p.rad for p in parts),
        max(p.mag for p in parts),
        any(p.inf for p in parts),
    )


def maximum(a: BallLike, b: BallLike) -> Ball:
    A, B = lift(a), lift(b)
    return _combine((A.mid, B.mid), (A, B), lambda m: torch.maximum(*m))


def minimum(a: BallLike, b: BallLike) -> Ball:
    A, B = lift(a), lift(b)
    return _combine((A.mid, B.mid), (A, B), lambda m: torch.minimum(*m))


def where(condition: Tensor, a: BallLike, b: BallLike) -> Ball:
    A, B = lift(a), lift(b)
    return _combine((A.mid, B.mid), (A, B), lambda m: torch.where(condition, *m))


def join(join: Callable[..., Tensor], xs: Sequence[BallLike], dim: int) -> Ball:
    """torch.stack / torch.cat of the midpoints."""
    parts = [lift(x) for x in xs]
    return _combine([p.mid for p in parts], parts, lambda m: join(m, dim=dim))
