"""Outward-rounded interval arithmetic on float64 tensors (the error model: docs/soundness.md).

An `Interval` is a pair of float64 tensors lo <= hi of one shape; it stands for every real
array x with lo <= x <= hi elementwise. Every operation here is *inclusion isotone*: its result
contains the exact real result of the operation applied to any members of its arguments. So a
computation written with these operations encloses the value the same formula has in exact real
arithmetic, and `certainly_negative(x)` (x.hi < 0) proves that real value negative.

Rounding model (IEEE-754 binary64, round to nearest, unit roundoff U = 2^-53):
* +, -, *, /: the exact result lies between the neighbours of the computed one, so one
  `nextafter` step outward encloses it (`_down`, `_up`).
* sums of n terms and dot products of length n: |computed - exact| <= gamma_n sum |terms|,
  gamma_n = n U / (1 - n U), for any summation order, blocking or fused multiply-add
  (Higham, Accuracy and Stability of Numerical Algorithms, §3.1, §3.5); we widen by
  2 (n + 2) U times the computed sum of magnitudes, which also covers its own rounding.
* exp, log: the only functions not correctly rounded. We assume torch's results are within a
  relative error LIBM_REL = 2^-40 (about 8000 ulps; the libraries document <= 1-4 ulps and
  `tests/test_interval.py` checks this against exact references) plus an absolute TINY for
  underflow.
* Underflow: products whose exact value is below the normal range lose at most 2^-1074 each;
  matrix products add n 2^-1074 to their radius.
* Point operands (Python floats and plain tensors) are taken as exact real numbers: convert
  inexact constants (e.g. sqrt(d_head)) with `enclose_sqrt` first.
* NaN never proves anything: every comparison with NaN is false, so a NaN bound is "not
  proven"; division by an interval containing 0 gives (-inf, inf).

Functions at the bottom (`exp`, `maximum`, `where`, ...) accept plain tensors too and then do
exactly what torch does, so one proof formula serves the float64 and the rigorous modes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from compact_proofs.soundness import ball
from compact_proofs.soundness.ball import Ball
from compact_proofs.soundness.rounding import (
    INF,
    LIBM_REL,
    SUBNORMAL_ULP,
    TINY,
    U,
    divide,
    gamma,
    round_down,
    round_up,
)


def _finite_abs(x: Tensor) -> Tensor:
    """|x| with infinities replaced by 0: error terms of sums whose value is already +-inf."""
    return torch.where(torch.isfinite(x), x.abs(), 0.0)


@dataclass(frozen=True)
class Interval:
    """An interval tensor [lo, hi] (float64). `exact` marks a degenerate interval (a point).

    `lo` and `hi` are always distinct tensor objects (a point's ends are copies), and no code
    writes into them: every operation returns a new Interval, so an update of one end can
    never silently change the other.
    """

    lo: Tensor
    hi: Tensor
    exact: bool = False

    @staticmethod
    def point(x: Tensor | float) -> Interval:
        """The degenerate interval [x, x] (x taken as an exact real)."""
        t = x if isinstance(x, Tensor) else torch.tensor(float(x), dtype=torch.float64)
        lo = t.to(torch.float64, copy=True)  # owned by the interval, like hi
        return Interval(lo, lo.clone(), exact=True)

    @property
    def is_point(self) -> bool:
        return self.exact

    # -- shape handling: applied to both ends, exact --------------------------------------

    @property
    def shape(self) -> torch.Size:
        return self.lo.shape

    @property
    def dtype(self) -> torch.dtype:
        return self.lo.dtype

    @property
    def device(self) -> torch.device:
        return self.lo.device

    def _map(self, f: Callable[[Tensor], Tensor]) -> Interval:
        """Apply a shape-only (exact) tensor function to both ends."""
        return Interval(f(self.lo), f(self.hi), self.exact)

    def __getitem__(self, index: object) -> Interval:
        return self._map(lambda t: t[index])

    @property
    def T(self) -> Interval:
        return self._map(lambda t: t.T)

    def permute(self, *dims: int) -> Interval:
        return self._map(lambda t: t.permute(*dims))

    def diagonal(self) -> Interval:
        return self._map(lambda t: t.diagonal())

    def reshape(self, *shape: int) -> Interval:
        return self._map(lambda t: t.reshape(shape))

    def flip(self, dim: int) -> Interval:
        return self._map(lambda t: t.flip(dim))

    def expand_as(self, other: Tensor | Interval) -> Interval:
        return self._map(lambda t: t.expand(other.shape))

    def masked_fill(self, mask: Tensor, value: float) -> Interval:
        return self._map(lambda t: t.masked_fill(mask, value))

    def to(self, device: torch.device | str) -> Interval:
        return self._map(lambda t: t.to(device))

    # -- order: exact ---------------------------------------------------------------------

    def amax(self, dim: int) -> Interval:
        return Interval(self.lo.amax(dim=dim), self.hi.amax(dim=dim))

    def amin(self, dim: int) -> Interval:
        return Interval(self.lo.amin(dim=dim), self.hi.amin(dim=dim))

    def abs(self) -> Interval:
        lo = torch.where(self.lo >= 0, self.lo, torch.where(self.hi <= 0, -self.hi, 0.0))
        return Interval(lo, torch.maximum(self.lo.abs(), self.hi.abs()))

    # -- arithmetic -----------------------------------------------------------------------

    def __neg__(self) -> Interval:
        return Interval(-self.hi, -self.lo)

    def __add__(self, other: Num | float) -> Interval:
        o = lift(other)
        return Interval(round_down(self.lo + o.lo), round_up(self.hi + o.hi))

    __radd__ = __add__

    def __sub__(self, other: Num | float) -> Interval:
        o = lift(other)
        return Interval(round_down(self.lo - o.hi), round_up(self.hi - o.lo))

    def __rsub__(self, other: Num | float) -> Interval:
        return lift(other) - self

    def __mul__(self, other: Num | float) -> Interval:
        o = lift(other)
        if o.is_point:
            a, b = self.lo * o.lo, self.hi * o.lo
        elif self.is_point:
            a, b = self.lo * o.lo, self.lo * o.hi
        else:
            p1, p2, p3, p4 = self.lo * o.lo, self.lo * o.hi, self.hi * o.lo, self.hi * o.hi
            lo = torch.minimum(torch.minimum(p1, p2), torch.minimum(p3, p4))
            hi = torch.maximum(torch.maximum(p1, p2), torch.maximum(p3, p4))
            return Interval(round_down(lo), round_up(hi))
        return Interval(round_down(torch.minimum(a, b)), round_up(torch.maximum(a, b)))

    __rmul__ = __mul__

    def __truediv__(self, other: Num | float) -> Interval:
        o = lift(other)
        quotients = (divide(a, b) for a in (self.lo, self.hi) for b in (o.lo, o.hi))
        ends = torch.stack(torch.broadcast_tensors(*quotients))
        safe = (o.lo > 0) | (o.hi < 0)
        lo = torch.where(safe, round_down(ends.amin(dim=0)), -INF)
        hi = torch.where(safe, round_up(ends.amax(dim=0)), INF)
        return Interval(lo, hi)

    def __rtruediv__(self, other: Num | float) -> Interval:
        return lift(other) / self

    def __matmul__(self, other: Num) -> Interval:
        return matmul(self, other)

    def __rmatmul__(self, other: Num) -> Interval:
        return matmul(other, self)

    def sum(self, dim: int) -> Interval:
        """Enclosure of the exact sum along `dim` (gamma_n bound, module docstring)."""
        slack = 2 * (self.shape[dim] + 2) * U
        lo = self.lo.sum(dim=dim) - slack * _finite_abs(self.lo).sum(dim=dim)
        hi = self.hi.sum(dim=dim) + slack * _finite_abs(self.hi).sum(dim=dim)
        # overflowing terms give inf - inf = NaN: the sum is then unbounded on that side
        lo = torch.where(torch.isnan(lo), -INF, lo)
        hi = torch.where(torch.isnan(hi), INF, hi)
        return Interval(round_down(lo), round_up(hi))

    def mean(self, dim: int) -> Interval:
        return self.sum(dim) / float(self.shape[dim])

    def mid_rad(self) -> tuple[Tensor, Tensor]:
        """(m, r) with [lo, hi] inside [m - r, m + r]; unless exact (r = 0), r exceeds the
        least such radius by at least 2^-1074 (`matmul` relies on that slack)."""
        if self.exact:
            return self.lo, torch.zeros_like(self.lo)
        m = 0.5 * self.lo + 0.5 * self.hi
        return m, round_up(torch.maximum(round_up(self.hi - m), round_up(m - self.lo)))

    def exp(self) -> Interval:
        lo = round_down(self.lo.exp() * (1 - LIBM_REL) - TINY).clamp(min=0.0)
        hi = round_up(self.hi.exp() * (1 + LIBM_REL) + TINY)
        return Interval(lo, hi)

    def log(self) -> Interval:
        """Enclosure of log on [max(lo, 0), hi] (log 0 = -inf)."""
        a, b = self.lo.clamp(min=0.0).log(), self.hi.log()
        lo = round_down(a - LIBM_REL * _finite_abs(a) - TINY)
        hi = round_up(b + LIBM_REL * _finite_abs(b) + TINY)
        return Interval(lo, hi)

    def logsumexp(self, dim: int) -> Interval:
        """log sum_i exp(x_i) along `dim`, as log(sum exp(x - s)) + s with a point shift s."""
        if self.shape[dim] == 0:  # the empty sum: log 0
            empty = self.lo.sum(dim=dim).fill_(-INF)
            return Interval(empty, empty)
        shift = self.hi.amax(dim=dim, keepdim=True)
        shift = torch.where(torch.isfinite(shift), shift, 0.0)
        return (self - shift).exp().sum(dim).log() + shift.squeeze(dim)

    def sigmoid(self) -> Interval:
        return 1.0 / (1.0 + (-self).exp())

    def sqrt(self) -> Interval:
        """Enclosure of sqrt on [max(lo, 0), hi]: one step outward covers any error below one
        ulp (torch's vectorised float64 sqrt is not correctly rounded, but faithful: within
        0.5001 ulp as documented for SLEEF; tests/test_interval.py measures it)."""
        lo = round_down(self.lo.clamp(min=0.0).sqrt()).clamp(min=0.0)
        return Interval(lo, round_up(self.hi.sqrt()))

    def clamp(self, min: float) -> Interval:
        """max(x, min) elementwise (monotone, exact)."""
        return Interval(self.lo.clamp(min=min), self.hi.clamp(min=min))


Num = Tensor | Interval | Ball


def lift(x: Num | float) -> Interval:
    """x as an interval operand (plain tensors and floats are exact points). The point's two
    ends may be one tensor: an operand never escapes an operation, whose results are new."""
    if isinstance(x, Interval):
        return x
    t = x if isinstance(x, Tensor) else torch.tensor(float(x), dtype=torch.float64)
    t = t.to(torch.float64)
    return Interval(t, t, exact=True)


def matmul(a: Num, b: Num) -> Interval:
    """Enclosure of the exact product a @ b (midpoint-radius form, gamma_n bound).

    With a = am +- ar, b = bm +- br: |ab - fl(am bm)| <= gamma_n |am||bm| + |am| br
    + ar (|bm| + br), n the inner dimension; the radius is computed in float64 and widened by
    4 (n + 2) U (its own rounding) plus n 2^-1074 (underflow). Where g |bm| underflows it
    loses up to 2^-1075, which a large |am| would magnify; br covers that loss: `mid_rad`'s
    radius exceeds the true one by at least 2^-1074 (two upward roundings), and a point's is
    taken as 2^-1074 (a free fill, not an operation).
    """
    A, B = lift(a), lift(b)
    am, ar = A.mid_rad()
    bm, br = B.mid_rad()
    if B.is_point:
        br = torch.full_like(bm, SUBNORMAL_ULP)
    n = am.shape[-1]
    g = 1.01 * gamma(n)
    center = am @ bm
    bm_abs = bm.abs()
    rad = am.abs() @ (g * bm_abs + br)
    if not A.is_point:
        rad = rad + ar @ (bm_abs + br)
    rad = round_up(rad * (1 + 4 * (n + 2) * U) + n * SUBNORMAL_ULP)
    return Interval(round_down(center - rad), round_up(center + rad))


def enclose_sqrt(n: int) -> Interval:
    """An interval around sqrt(n): math.sqrt is correctly rounded, so one step each way."""
    s = torch.tensor(math.sqrt(n), dtype=torch.float64)
    return Interval(round_down(s), round_up(s))


# -- functions for plain tensors, intervals and balls alike ---------------------------------
#
# A proof formula written with these functions and the operators runs unchanged in three
# arithmetics: plain float64 tensors (what torch does), `Interval`s (outward rounding per
# entry) and `Ball`s (compact_proofs.soundness.ball: float64 values with one radius per tensor).
# Operands of one call are all of one kind, or plain tensors / numbers (exact points).


def _kind(xs: tuple[object, ...]) -> type | None:
    """Interval or Ball if any operand is one (never both), else None."""
    for x in xs:
        if isinstance(x, (Interval, Ball)):
            return type(x)
    return None


def exp(x: Num) -> Num:
    return x.exp()


def sigmoid(x: Num) -> Num:
    return torch.sigmoid(x) if isinstance(x, Tensor) else x.sigmoid()


def maximum(a: Num, b: Num) -> Num:
    kind = _kind((a, b))
    if kind is None:
        return torch.maximum(a, b)
    if kind is Ball:
        return ball.maximum(a, b)
    A, B = lift(a), lift(b)
    return Interval(torch.maximum(A.lo, B.lo), torch.maximum(A.hi, B.hi))


def minimum(a: Num, b: Num) -> Num:
    kind = _kind((a, b))
    if kind is None:
        return torch.minimum(a, b)
    if kind is Ball:
        return ball.minimum(a, b)
    A, B = lift(a), lift(b)
    return Interval(torch.minimum(A.lo, B.lo), torch.minimum(A.hi, B.hi))


def where(condition: Tensor, a: Num | float, b: Num | float) -> Num:
    """Elementwise choice by a *plain boolean* condition (never by an uncertain value)."""
    kind = _kind((a, b))
    if kind is None:
        return torch.where(condition, a, b)
    if kind is Ball:
        return ball.where(condition, a, b)
    A, B = lift(a), lift(b)
    return Interval(torch.where(condition, A.lo, B.lo), torch.where(condition, A.hi, B.hi))


def _join(join: Callable[..., Tensor], xs: list[Num], dim: int) -> Num:
    """torch.stack / torch.cat of plain tensors, of both ends of intervals, or of balls."""
    kind = _kind(tuple(xs))
    if kind is None:
        return join(xs, dim=dim)
    if kind is Ball:
        return ball.join(join, xs, dim)
    ivs = [lift(x) for x in xs]
    return Interval(join([x.lo for x in ivs], dim=dim), join([x.hi for x in ivs], dim=dim))


def stack(xs: list[Num], dim: int = 0) -> Num:
    return _join(torch.stack, xs, dim)


def cat(xs: list[Num], dim: int = 0) -> Num:
    return _join(torch.cat, xs, dim)


def softmax(scores: list[Num]) -> list[Num]:
    """Softmax weights of a few groups given each group's score (broadcast together), shifted
    by an exact point t (any real shift gives the same weights): exp(x_i - t) / sum_j. With
    intervals t is the upper end of the maximum, so every exponent is <= 0 and the
    quotients enclose the exact weights; balls run the same float64 operations with a
    radius derived once for all weights (ball.softmax)."""
    if _kind(tuple(scores)) is Ball:
        return ball.softmax(scores)  # type: ignore[arg-type]
    top = scores[0]
    for x in scores[1:]:
        top = maximum(top, x)
    top = upper(top)
    exps = [exp(x - top) for x in scores]
    total = exps[0]
    for e in exps[1:]:
        total = total + e
    return [e / total for e in exps]


def index_put(x: Num, index: tuple[Tensor, ...], values: Num) -> Num:
    """A copy of x with x[index] = values (out of place: nothing is written into x or into
    the ends of an interval, so no other enclosure can change)."""
    kind = _kind((x, values))
    if kind is None:
        return x.index_put(index, values)
    if kind is Ball:
        X, V = ball.lift(x), ball.lift(values)
        return ball.join(lambda m, dim: m[0].index_put(index, m[1]), [X, V], 0)
    X, V = lift(x), lift(values)
    return Interval(X.lo.index_put(index, V.lo), X.hi.index_put(index, V.hi))


def outer(a: Num, b: Num) -> Num:
    """a[i] b[j] (the same single rounding per entry as torch.outer)."""
    return a[:, None] * b[None, :]


def log(x: Num) -> Num:
    return x.log()


def sqrt(x: Num) -> Num:
    return x.sqrt()


def mid(x: Num) -> Tensor:
    """A point inside x (for choices whose every outcome is sound)."""
    if isinstance(x, Interval):
        return x.mid_rad()[0]
    return x.mid if isinstance(x, Ball) else x


def point_like(like: Num, value: Tensor) -> Num:
    """`value` as an exact point of the same kind as `like` (interval, ball or plain tensor)."""
    if isinstance(like, Interval):
        return Interval.point(value)
    return Ball.point(value) if isinstance(like, Ball) else value


def frobenius(x: Num) -> Num:
    """Frobenius norm of a matrix (torch.linalg.vector_norm for plain tensors)."""
    if isinstance(x, Tensor):
        return torch.linalg.vector_norm(x)
    return (x.abs() * x.abs()).sum(-1).sum(-1).sqrt()


def _ends(x: Interval, f: Callable[[Tensor], Tensor]) -> Interval:
    """A monotone (order-preserving, exact) function applied to both ends."""
    return Interval(f(x.lo), f(x.hi))


def _monotone(x: Num, f: Callable[[Tensor], Tensor]) -> Num:
    """f for a plain tensor; both ends of an interval; the midpoint of a ball (f is monotone
    and 1-Lipschitz in the largest entry difference, so the radius carries over)."""
    if isinstance(x, Interval):
        return _ends(x, f)
    if isinstance(x, Ball):
        return Ball(f(x.mid), x.rad, x.mag, x.inf)
    return f(x)


def sort_values(x: Num, dim: int = -1) -> Num:
    """Ascending order statistics. For intervals the i-th smallest member value lies between
    the i-th smallest lo and the i-th smallest hi, so both ends are sorted separately."""
    return _monotone(x, lambda t: t.sort(dim=dim).values)


def _max_others(x: Tensor) -> Tensor:
    top, arg = x.max(dim=-1)
    second = x.scatter(-1, arg[..., None], float("-inf")).amax(dim=-1)
    others = top[..., None].expand_as(x)
    return others.scatter(-1, arg[..., None], second[..., None])


def max_others(x: Num) -> Num:
    """y[..., m] = max_{j != m} x[..., j] in O(v) per row (the largest entry, except at its
    own index, where it is the second largest). Monotone in x, so for intervals both ends."""
    return _monotone(x, _max_others)


def running_max(x: Num, dim: int) -> Num:
    """max over the prefix 0..i along `dim` (monotone, exact)."""
    return _monotone(x, lambda t: t.cummax(dim=dim).values)


def running_min(x: Num, dim: int) -> Num:
    return _monotone(x, lambda t: t.cummin(dim=dim).values)


def certainly_negative(x: Num) -> Tensor:
    """bool: x < 0 for every member (NaN: False)."""
    if isinstance(x, Interval):
        return x.hi < 0
    if isinstance(x, Ball):
        return x.mid < -x.rad
    return x < 0


def certainly_below(x: Num, bound: Tensor) -> Tensor:
    """bool: x < bound for every member (bound a plain tensor of floats, broadcast; NaN:
    False). For a ball the radius comes off the (usually smaller) bound, rounded down."""
    if isinstance(x, Interval):
        return x.hi < bound
    if isinstance(x, Ball):
        return x.mid < (round_down(bound - x.rad) if x.rad else bound)
    return x < bound


def possibly_negative(x: Num) -> Tensor:
    """bool: some member of x is < 0 (NaN: False); for a plain tensor, x < 0."""
    if isinstance(x, Interval):
        return x.lo < 0
    if isinstance(x, Ball):
        return x.mid < x.rad
    return x < 0


def upper(x: Num) -> Tensor:
    """A float >= every member (a plain tensor is its own upper end)."""
    if isinstance(x, Interval):
        return x.hi
    return x.upper() if isinstance(x, Ball) else x


def shift_point(x: Num) -> Num:
    """An exact point near x, of x's kind, for shifts that any real number makes correct
    (softmax, log-sum-exp): a ball's midpoint (so its values are those of plain float64),
    an interval's upper end (exp of shifted upper ends stays <= 1), a plain tensor itself."""
    if isinstance(x, Ball):
        return Ball(x.mid, 0.0, x._mag, x._inf)
    return upper(x)


def lower(x: Num) -> Tensor:
    """A float <= every member."""
    if isinstance(x, Interval):
        return x.lo
    return x.lower() if isinstance(x, Ball) else x
