"""Exact-arithmetic reference verdicts for tiny models (ground truth for soundness tests).

What it decides. For an input x (int tokens, length n_ctx) with max token m, the model
classifies x correctly iff l_m(x) > l_j(x) for every j != m, where l(x) are the last-position
logits of `AttnOnlyTransformer.forward` evaluated in *exact real arithmetic* on the model's
stored parameter values (float32 numbers are exact dyadic rationals). An exact tie
(l_m = l_j for some j != m) is wrong. `ExactReference.decide` returns, per input,

* `CORRECT` (1): every l_m - l_j is proven > 0;
* `WRONG` (0): some l_m - l_j is proven < 0, or proven to be exactly 0 (a tie);
* `UNDECIDED` (-1): neither could be proven up to `max_prec` bits (never observed in
  practice; callers must treat it as "not known to be correct").

These verdicts are mathematically certain, not float estimates: no rounding error enters.

How. Everything rational is computed exactly with Python integers: each parameter tensor is
an integer array times a power of two. Following `AttnOnlyTransformer.forward` term by term
(residual r_p = W_E[x_p] + W_pos[p]; per head h: query r_{n-1} W_Q[h] + b_Q[h], keys and values
r_p W_K[h] + b_K[h], r_p W_V[h] + b_V[h]; raw score S_{h,p} = query . key_p; attention
softmax_p(S_{h,p} / sqrt(d_head)); output sum_h (sum_p alpha_{h,p} value_p) W_O[h] + b_O;
logits (r_{n-1} + output) W_U + b_U), and using sum_p alpha_{h,p} = 1,

    l(x) = c + sum_h sum_p alpha_{h,p} g_{h,p},   c = r_{n-1} W_U + b_O W_U + b_U,
                                                  g_{h,p} = (r_p W_V[h] + b_V[h]) W_O[h] W_U,

with c, g exact rationals. Multiplying by the positive product of the softmax denominators
W_h = sum_p exp(t_{h,p}), t_{h,p} = (S_{h,p} - max_p' S_{h,p'}) / sqrt(d_head) <= 0, gives

    (prod_h W_h) (l_m - l_j) = sum_{tuples (p_1..p_H)} exp(sum_h t_{h,p_h})
                                 * [(c + sum_h g_{h,p_h})_m - (c + sum_h g_{h,p_h})_j].

Grouping tuples by their exponent (an exact rational divided by sqrt(d_head), compared
exactly) yields sum_T exp(T) M_T[j] with exact rational M_T[j]. The sign of that sum is the
sign of l_m - l_j. Decisions, in order:

1. all M_T[j] = 0: l_m - l_j = 0 exactly (a tie). Conversely, if some M_T[j] != 0 the sum is
   not zero: the exponents T are distinct real algebraic numbers, and by the
   Lindemann-Weierstrass theorem exp of distinct algebraic numbers are linearly independent
   over the algebraic numbers. So ties are detected exactly, and every non-tie is decided
   by enough precision.
2. all non-zero M_T[j] of one sign: the sign is that sign (exp > 0), no exp needed.
3. otherwise each exp(T) is enclosed in a rational interval (`exp_interval`, with
   1/sqrt(d_head) itself enclosed via integer square roots), the sum's interval is formed, and
   the precision is raised (64, 256, 1024, ... bits up to `max_prec`) until 0 is excluded.

Cost: O(n_ctx^n_heads * d_vocab) big-integer operations per input plus the exp enclosures
(cached per exponent). Meant for tiny configurations (thousands of inputs), not v=64.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from fractions import Fraction

import numpy as np
import torch
from torch import Tensor

from compact_proofs.model.transformer import AttnOnlyTransformer

CORRECT = 1
WRONG = 0
UNDECIDED = -1

PRECISIONS = (64, 256, 1024, 4096)  # bits tried in turn when the sign needs exp enclosures
REDUCE_BITS = 4  # exp argument reduced to |z| <= 2^-REDUCE_BITS before the Taylor series


# -- certified rational enclosures -------------------------------------------------------


def _floor_to(x: Fraction, bits: int) -> Fraction:
    """Largest multiple of 2^-bits that is <= x (bits >= 0)."""
    return Fraction((x.numerator << bits) // x.denominator, 1 << bits)


def _ceil_to(x: Fraction, bits: int) -> Fraction:
    """Smallest multiple of 2^-bits that is >= x (bits >= 0)."""
    return -_floor_to(-x, bits)


def _round_mantissa(m: int, e: int, bits: int, up: bool) -> tuple[int, int]:
    """(m', e') with m' 2^e' rounded down (or up) from m 2^e > 0 to at most `bits` bits."""
    extra = m.bit_length() - bits
    if extra <= 0:
        return m, e
    q, r = divmod(m, 1 << extra)
    if up and r:
        q += 1
    return q, e + extra


def _as_fraction(m: int, e: int) -> Fraction:
    return Fraction(m << e) if e >= 0 else Fraction(m, 1 << -e)


def sqrt_interval(n: int, bits: int) -> tuple[Fraction, Fraction]:
    """Rationals (lo, hi) with lo <= sqrt(n) <= hi and hi - lo <= 2^-bits (n >= 0, bits >= 0).

    Exact (lo == hi) when n is a perfect square.
    """
    if n < 0 or bits < 0:
        raise ValueError("sqrt_interval needs n >= 0 and bits >= 0")
    root = math.isqrt(n)
    if root * root == n:
        return Fraction(root), Fraction(root)
    s = math.isqrt(n << (2 * bits))  # s <= sqrt(n) 2^bits < s + 1 (strictly: not a square)
    return Fraction(s, 1 << bits), Fraction(s + 1, 1 << bits)


def _exp_of_dyadic(y: Fraction, prec: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Enclosure ((lo_m, lo_e), (hi_m, hi_e)) of exp(y), i.e. lo_m 2^lo_e <= exp(y) <=
    hi_m 2^hi_e, for y whose denominator is a power of two dividing 2^(prec+8).

    Argument reduction z = y / 2^r with |z| <= 2^-REDUCE_BITS; Taylor series of exp(z) in
    fixed point with scale 2^f, where every truncated product errs by at most one unit, so the
    computed terms err by at most 2 units each (|z| < 1 damps inherited errors); the series is
    cut once a computed term is <= 1 unit, so the true term is <= 3 units and the remainder
    |sum_{i>=N} z^i/i!| <= |z^N/N!| / (1 - |z|/(N+1)) < 3.1 units. Then r outward-rounded
    squarings with `wp`-bit mantissas. Relative width of the result <= 2^-(prec+10).
    """
    a = abs(y)
    r = 0
    if a > Fraction(1, 1 << REDUCE_BITS):
        r = max(0, a.numerator.bit_length() - a.denominator.bit_length() + REDUCE_BITS + 1)
    wp = prec + r + 16 + r.bit_length()
    f = wp + 8
    # z 2^f is an integer when y's denominator divides 2^(f - r)
    zf = y * (1 << f) / (1 << r)
    if zf.denominator != 1:
        raise ValueError("internal: exp argument is not representable in the fixed point")
    Z, F = zf.numerator, 1 << f
    total, term, n = F, F, 0
    while True:
        n += 1
        term = (term * Z) // (n * F)
        if abs(term) <= 1:
            break
        total += term
    slack = 2 * n + 8  # 2 units per summed term, remainder < 3.1 units, margin
    lo = _round_mantissa(total - slack, -f, wp, up=False)
    hi = _round_mantissa(total + slack, -f, wp, up=True)
    if lo[0] <= 0:
        raise ValueError("internal: exp enclosure lost its sign")
    for _ in range(r):
        lo = _round_mantissa(lo[0] * lo[0], 2 * lo[1], wp, up=False)
        hi = _round_mantissa(hi[0] * hi[0], 2 * hi[1], wp, up=True)
    return lo, hi


def _exp_dyadic_interval(x: Fraction, prec: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """`exp_interval` with the bounds as (mantissa, exponent) pairs."""
    if x == 0:
        return (1, 0), (1, 0)
    guard = prec + 8
    x_lo, x_hi = _floor_to(x, guard), _ceil_to(x, guard)
    lo, hi = _exp_of_dyadic(x_lo, prec)
    if x_hi != x_lo:
        hi = _exp_of_dyadic(x_hi, prec)[1]
    return lo, hi


def exp_interval(x: Fraction | int, prec: int = 64) -> tuple[Fraction, Fraction]:
    """Rationals (lo, hi) with 0 < lo <= exp(x) <= hi and (hi - lo) <= 2^-prec * lo.

    Pre: x is an exact rational (int or Fraction), prec >= 8. Exact only at x = 0.
    The enclosure is certified: argument reduction and a Taylor series with an explicit
    remainder bound, every rounding directed outward (see `_exp_of_dyadic`). x is first
    rounded outward to a multiple of 2^-(prec+8), which costs at most a relative 2^-(prec+7).
    """
    if prec < 8:
        raise ValueError("exp_interval needs prec >= 8")
    lo, hi = _exp_dyadic_interval(Fraction(x), prec)
    return _as_fraction(*lo), _as_fraction(*hi)


# -- exact integer tensors ---------------------------------------------------------------


class _Dyadic:
    """An integer array (numpy object dtype, Python ints) times 2^exp: exact rationals."""

    def __init__(self, ints: np.ndarray, exp: int) -> None:
        self.ints = ints
        self.exp = exp

    @classmethod
    def from_tensor(cls, t: Tensor) -> _Dyadic:
        values = t.detach().cpu().to(torch.float64).numpy()
        if not np.isfinite(values).all():
            raise ValueError("exact reference needs finite weights")
        ratios = [float(x).as_integer_ratio() for x in values.ravel()]
        den = max((d for _, d in ratios), default=1)
        ints = np.empty(len(ratios), dtype=object)
        for i, (n, d) in enumerate(ratios):
            ints[i] = n * (den // d)
        return cls(ints.reshape(values.shape), -(den.bit_length() - 1))

    def aligned(self, exp: int) -> np.ndarray:
        """The integers at a smaller or equal exponent `exp`."""
        if exp > self.exp:
            raise ValueError("cannot align to a larger exponent exactly")
        return self.ints * (1 << (self.exp - exp))

    def __add__(self, other: _Dyadic) -> _Dyadic:
        e = min(self.exp, other.exp)
        return _Dyadic(self.aligned(e) + other.aligned(e), e)

    def __matmul__(self, other: _Dyadic) -> _Dyadic:
        return _Dyadic(np.matmul(self.ints, other.ints), self.exp + other.exp)

    def __getitem__(self, index: object) -> _Dyadic:
        return _Dyadic(self.ints[index], self.exp)


def _to_lists(a: np.ndarray) -> list:
    """Nested Python lists of Python ints (fast scalar indexing)."""
    return a.tolist()


# -- the reference -----------------------------------------------------------------------


class ExactReference:
    """Exact per-input verdicts for one model (see the module docstring for the contract).

    Precomputes, exactly, the raw attention scores S[h][q][p][t] (query token q, key token t
    at position p), the value-path logit vectors g[h][p][t] and the direct-path logits c[q],
    all as integers on common power-of-two scales. Any n_heads >= 1 and non-zero biases.
    """

    def __init__(self, model: AttnOnlyTransformer, max_prec: int = PRECISIONS[-1]) -> None:
        cfg = model.cfg
        self.d_vocab, self.n_ctx, self.n_heads, self.d_head = (
            cfg.d_vocab,
            cfg.n_ctx,
            cfg.n_heads,
            cfg.d_head,
        )
        self.precisions = (*(p for p in PRECISIONS if p < max_prec), max_prec)
        w = {name: _Dyadic.from_tensor(t) for name, t in model.weights().items()}
        k, H = self.n_ctx, self.n_heads
        # residual stream r[p, t] = W_E[t] + W_pos[p]
        E, P = w["W_E"], w["W_pos"]
        e_r = min(E.exp, P.exp)
        resid = _Dyadic(E.aligned(e_r)[None, :, :] + P.aligned(e_r)[:, None, :], e_r)  # [k,v,d]
        query = resid[k - 1]  # [v, d]
        scores, values = [], []
        for h in range(H):
            Q = query @ w["W_Q"][h] + w["b_Q"][h]  # [v, e]
            K = resid @ w["W_K"][h] + w["b_K"][h]  # [k, v, e]
            S = _Dyadic(np.matmul(K.ints, Q.ints.T), K.exp + Q.exp)  # [k, v(key), v(query)]
            scores.append(_Dyadic(np.transpose(S.ints, (2, 0, 1)), S.exp))  # [q, p, t]
            V = resid @ w["W_V"][h] + w["b_V"][h]  # [k, v, e]
            values.append(V @ w["W_O"][h] @ w["W_U"])  # [k, v, v_out]
        direct = query @ w["W_U"] + (w["b_O"] @ w["W_U"] + w["b_U"])  # [v, v_out]
        e_s = min(s.exp for s in scores)
        e_l = min(direct.exp, *(g.exp for g in values))
        self.score_exp = e_s  # raw score = integer * 2^score_exp
        self.logit_exp = e_l  # logits    = integer * 2^logit_exp
        self._S = [_to_lists(s.aligned(e_s)) for s in scores]
        self._g = [_to_lists(g.aligned(e_l)) for g in values]
        self._c = _to_lists(direct.aligned(e_l))
        self._exp_cache: dict[tuple[int, int], tuple[tuple[int, int], tuple[int, int]]] = {}
        self._inv_sqrt_cache: dict[int, tuple[Fraction, Fraction]] = {}

    # -- exponent enclosures -------------------------------------------------------------

    def _inv_sqrt_d(self, bits: int) -> tuple[Fraction, Fraction]:
        """Enclosure of 1/sqrt(d_head) of width <= 2^-bits (exact for square d_head)."""
        if bits not in self._inv_sqrt_cache:
            lo, hi = sqrt_interval(self.d_head, bits + 2)  # sqrt(d) >= 1, so 1/x shrinks widths
            self._inv_sqrt_cache[bits] = (1 / hi, 1 / lo)
        return self._inv_sqrt_cache[bits]

    def _exp_score(self, t: int, prec: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """Enclosure ((lo_m, lo_e), (hi_m, hi_e)) of exp(t 2^score_exp / sqrt(d_head)) for an
        integer t, relative width below 2^-prec; cached."""
        key = (t, prec)
        if key not in self._exp_cache:
            if t == 0:
                self._exp_cache[key] = ((1, 0), (1, 0))
            else:
                raw = Fraction(t) * (Fraction(2) ** self.score_exp)
                mag_bits = max(0, abs(raw).numerator.bit_length() - raw.denominator.bit_length())
                a, b = self._inv_sqrt_d(prec + 12 + mag_bits)
                x1, x2 = sorted((raw * a, raw * b))
                lo = _exp_dyadic_interval(x1, prec)[0]
                hi = _exp_dyadic_interval(x2, prec)[1]
                self._exp_cache[key] = (lo, hi)
        return self._exp_cache[key]

    def exp_score(self, t: int, prec: int = 64) -> tuple[Fraction, Fraction]:
        """Rationals enclosing exp(t 2^score_exp / sqrt(d_head)) (t an integer score
        difference in the units of the exact score tables), relative width below 2^-prec."""
        lo, hi = self._exp_score(t, prec)
        return _as_fraction(*lo), _as_fraction(*hi)

    # -- per-input decomposition ---------------------------------------------------------

    def _groups(self, x: Sequence[int]) -> tuple[int, list[tuple[int, list[int]]]]:
        """(m, [(T, M_T)]) for input x: the max token and the exponent groups.

        T is the exact integer sum of the per-head score differences
        (S_{h,p_h} - max_p S_{h,p}) in units of 2^score_exp (so the group's weight is
        exp(T 2^score_exp / sqrt(d_head))); M_T[j] is (c + sum_h g_{h,p_h})_m - (...)_j in units
        of 2^logit_exp, summed over the group's tuples (p_1..p_H).
        """
        k, v = self.n_ctx, self.d_vocab
        q, m = x[-1], max(x)
        diffs = []
        for h in range(self.n_heads):
            s = [self._S[h][q][p][x[p]] for p in range(k)]
            top = max(s)
            diffs.append([si - top for si in s])
        c = self._c[q]
        groups: dict[int, list[int]] = {}
        for combo in itertools.product(range(k), repeat=self.n_heads):
            T = sum(diffs[h][p] for h, p in enumerate(combo))
            logits = list(c)
            for h, p in enumerate(combo):
                g = self._g[h][p][x[p]]
                for j in range(v):
                    logits[j] += g[j]
            acc = groups.setdefault(T, [0] * v)
            lm = logits[m]
            for j in range(v):
                acc[j] += lm - logits[j]
        return m, list(groups.items())

    def _numerator_bounds(self, terms: list[tuple[int, int]], prec: int) -> tuple[int, int, int]:
        """(lo, hi, E) with lo 2^E <= sum_T exp(T) M_T <= hi 2^E for (T, M_T) integer pairs.

        Each product is enclosed with the exp bounds, then rounded outward to a multiple of
        2^E, where 2^E is about 2^-(prec+32) times the largest term: cheap integer sums whose
        width still shrinks with `prec`.
        """
        parts = []
        for T, M in terms:
            (lm, le), (hm, he) = self._exp_score(T, prec)
            parts.append((M * lm, le, M * hm, he) if M > 0 else (M * hm, he, M * lm, le))
        top = max(max(abs(a).bit_length() + ea, abs(b).bit_length() + eb) for a, ea, b, eb in parts)
        E = top - (prec + 32)
        lo = hi = 0
        for a, ea, b, eb in parts:
            lo += a << (ea - E) if ea >= E else a >> (E - ea)  # floor
            hi += b << (eb - E) if eb >= E else -((-b) >> (E - eb))  # ceil
        return lo, hi, E

    def decide_one(self, x: Sequence[int]) -> int:
        """CORRECT, WRONG or UNDECIDED for one input (a sequence of n_ctx token ids)."""
        x = [int(t) for t in x]
        if len(x) != self.n_ctx or not all(0 <= t < self.d_vocab for t in x):
            raise ValueError(f"input must be {self.n_ctx} tokens in [0, {self.d_vocab})")
        m, groups = self._groups(x)
        pending: list[list[tuple[int, int]]] = []
        for j in range(self.d_vocab):
            if j == m:
                continue
            terms = [(T, M[j]) for T, M in groups if M[j] != 0]
            if not terms or all(M < 0 for _, M in terms):
                return WRONG  # an exact tie, or l_m - l_j < 0
            if all(M > 0 for _, M in terms):
                continue
            pending.append(terms)
        for prec in self.precisions:
            still = []
            for terms in pending:
                lo, hi, _ = self._numerator_bounds(terms, prec)
                if hi < 0:
                    return WRONG
                if lo <= 0:
                    still.append(terms)
            pending = still
            if not pending:
                return CORRECT
        return UNDECIDED

    def decide(self, tokens: Tensor | Iterable[Sequence[int]]) -> Tensor:
        """int8 [n] verdicts (CORRECT=1, WRONG=0, UNDECIDED=-1) for int tokens [n, n_ctx]."""
        rows = tokens.tolist() if isinstance(tokens, Tensor) else [list(r) for r in tokens]
        return torch.tensor([self.decide_one(r) for r in rows], dtype=torch.int8)

    def logit_difference_bounds(
        self, x: Sequence[int], prec: int = 64
    ) -> list[tuple[Fraction, Fraction] | None]:
        """For each j, rationals (lo, hi) enclosing l_m(x) - l_j(x) (None at j = m).

        Diagnostic view of the same computation: the numerator interval divided by the
        enclosure of prod_h W_h (positive). Width shrinks like 2^-prec (relative).
        """
        x = [int(t) for t in x]
        m, groups = self._groups(x)
        den_lo = den_hi = Fraction(1)
        q = x[-1]
        for h in range(self.n_heads):
            s = [self._S[h][q][p][x[p]] for p in range(self.n_ctx)]
            top = max(s)
            w_lo = w_hi = Fraction(0)
            for si in s:
                e_lo, e_hi = self.exp_score(si - top, prec)
                w_lo += e_lo
                w_hi += e_hi
            den_lo *= w_lo
            den_hi *= w_hi
        scale = Fraction(2) ** self.logit_exp
        out: list[tuple[Fraction, Fraction] | None] = []
        for j in range(self.d_vocab):
            if j == m:
                out.append(None)
                continue
            terms = [(T, M[j]) for T, M in groups if M[j] != 0]
            if not terms:
                out.append((Fraction(0), Fraction(0)))
                continue
            lo_i, hi_i, E = self._numerator_bounds(terms, prec)
            lo, hi = _as_fraction(lo_i, E), _as_fraction(hi_i, E)
            lo = lo / den_hi if lo >= 0 else lo / den_lo
            hi = hi / den_lo if hi >= 0 else hi / den_hi
            out.append((lo * scale, hi * scale))
        return out


def exact_verdicts(model: AttnOnlyTransformer, tokens: Tensor) -> Tensor:
    """int8 [n]: CORRECT (1) / WRONG (0) / UNDECIDED (-1) per input, in exact arithmetic.

    Convenience wrapper around `ExactReference(model).decide(tokens)`.
    """
    return ExactReference(model).decide(tokens)
