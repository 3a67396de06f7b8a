"""EQKE = EQKE_hat + Err with a certified bound on Err's row ranges (SPEC §6.3–§6.4).

With E_q = W_E + P_{k-1} (query side), Ebar = W_E + mean_p P_p (key side) and the queries
Q = E_q W_Q + b_Q (one row per query token),

    EQKE_bar = Q W_K^T Ebar^T                            (v x v)
    pos_err  = Q ((W_pos - Pbar) W_K + b_K)^T            (v x k, always exact)

and the attention score of key token t at position p for query q is
EQKE_bar[q, t] + pos_err[q, p] (= EQKE[q, t] + EQKP[q, p] of proofs/paths.py, exactly).

Biases (the convention of proofs/paths.py): b_Q joins the query side and b_K the positional
key part, so the identity above is exact for any biases, and nothing else changes: every
route bounds the error of the same EQKE_bar. A bias that is exactly zero is left out (no term,
no FLOPs), so zero-bias models get the very same proof as before.

Every route returns EQKE_hat (an explicit v x v table built from the certificate's directions)
and err_bound[q] >= rowrange(EQKE_bar - EQKE_hat)[q], where the error is the difference *as
actually computed* — nothing relies on the directions being exact singular vectors (SPEC
§11.1). Any direction vectors give a sound bound; good ones give a tight one.

Route A (svd, max_diff, mean+max_diff, max_diff_exact): A = Q W_K^T, B = Ebar^T,
A0 = u u^T A, B0 = B w w^T (u, w: certificate directions), EQKE_hat = A0 B0 = (u^T A B w) u w^T.
Exactly, A B - A0 B0 = A_r B_r + A0 B_r + A_r B0; the original drops the two cross terms
(zero only for exact singular vectors); here their row ranges are added to the bound:
rowrange(A0 B_r)[q] = |u_q| range(u^T A B_r), rowrange(A_r B0)[q] = |(A_r B w)_q| range(w).
b_Q is in the query factor A (formed explicitly anyway), so A B = EQKE_bar exactly and every
bound derived from A_r (sums of |A_r|, the certified sigma_1 of A_r B_r) bounds the biased
factor.

Route B (the *_subproduct* options): peel six directions (SPEC §6.3); the nine cheap terms sum
to EQKE_hat and Err = E_rr Q_r K_r^T Ebar_rr^T exactly, for any directions. With b_Q,
EQKE_bar = E_q W_Q W_K^T Ebar^T + 1 (b_Q W_K^T Ebar^T): the second part is the same v-vector
in every query row, computed exactly for O(d d_head + v d) and added to EQKE_hat as a tenth
cheap term; the peeled product, hence Err and its bound, is the zero-bias one unchanged.

Route C (exact_EQKE+max_diff_exact): EQKE_hat = EQKE_bar = Q (Ebar W_K)^T, err_bound = 0.

Every function here is written with operations that also accept `Interval`s
(soundness.interval): with `weights64(model, rigorous=True)` the same code encloses the
exact real values of EQKE_hat, pos_err and err_bound (docs/soundness.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
from torch import Tensor

from compact_proofs.model.transformer import AttnOnlyTransformer
from compact_proofs.proofs.paths import require_single_head
from compact_proofs.soundness import interval as iv
from compact_proofs.soundness.arithmetic import Arithmetic, exact, sqrt_of
from compact_proofs.soundness.ball import Ball
from compact_proofs.soundness.interval import Interval, Num
from compact_proofs.soundness.rounding import LIBM_REL, SUBNORMAL_ULP, TINY, UP, U, gamma
from compact_proofs.soundness.rounding import up as _up

SIGMA_SQUARINGS = 8  # certified sigma_1 bound overestimates by at most d^(1 / 2^(9))
SQRT2_UP = 1.4142135623730951  # the float nearest sqrt(2) is above it: an upper bound


@dataclass(frozen=True)
class Weights64:
    """The weights a sub-cubic proof reads, in float64 (single head); exact points of the
    arithmetic (balls, intervals) and an enclosed attn_scale in rigorous mode. A bias is None
    where it is exactly zero: the proof then has no term for it (and no FLOPs)."""

    W_E: Num  # [v, d]
    W_pos: Num  # [k, d]
    W_Q: Num  # [d, d_head]
    W_K: Num  # [d, d_head]
    W_V: Num  # [d, d_head]
    W_O: Num  # [d_head, d]
    W_U: Num  # [d, v]
    attn_scale: float | Interval | Ball
    b_Q: Num | None = None  # [d_head]
    b_K: Num | None = None  # [d_head]
    b_V: Num | None = None  # [d_head]
    b_O: Num | None = None  # [d]
    b_U: Num | None = None  # [v]

    @property
    def E_q(self) -> Num:
        return self.W_E + self.W_pos[-1]

    def queries(self, E: Num) -> Num:
        """E W_Q + b_Q: the query vectors of the residual rows E (paths.py's Q for E = E_q)."""
        Q = E @ self.W_Q
        return Q if self.b_Q is None else Q + self.b_Q

    def value_bias(self, OU: Num) -> Num | None:
        """b_V W_O W_U [v] (OU = W_O W_U): added to every row of PVOU, (W_pos W_V + b_V) W_O
        W_U, exact because the attention weights sum to 1. None if b_V = 0."""
        return None if self.b_V is None else self.b_V @ OU

    def direct_bias(self) -> Num | None:
        """b_O W_U + b_U [v]: the part of EUPU that is the same for every query (paths.py).
        None if both biases are 0."""
        if self.b_O is None:
            return self.b_U
        out = self.b_O @ self.W_U
        return out if self.b_U is None else out + self.b_U

    @property
    def P_mean(self) -> Num:
        return self.W_pos.mean(dim=0)

    @property
    def E_bar(self) -> Num:
        return self.W_E + self.P_mean


@dataclass(frozen=True)
class Directions:
    """Proof-search directions (SPEC §6.9); the certificate of the QK and EU decompositions."""

    query_dir: Tensor  # [v] top left singular vector of EQKE_bar
    key_dir: Tensor  # [v] top right singular vector of EQKE_bar
    query_dir2: Tensor  # [v]
    key_dir2: Tensor  # [v]
    u_Q: Tensor  # [d] top left singular vector of W_Q
    u_K: Tensor  # [d] top left singular vector of W_K
    W_EP_direction: Tensor  # [d]


@dataclass(frozen=True)
class QKDecomposition:
    EQKE_hat: Num  # [v, v]
    pos_err: Num  # [v, k]
    err_bound: Num  # [v] >= rowrange(EQKE_bar - EQKE_hat)


# -- building blocks ---------------------------------------------------------------------------


def rowrange(M: Num) -> Num:
    """max_j M[r, j] - min_j M[r, j] for every row r."""
    return M.amax(dim=-1) - M.amin(dim=-1)


def product_rowrange_bound(X: Num, Y: Num) -> Num:
    """rowrange(X Y)[r] <= sum_i |X[r, i]| rowrange(Y)[i]."""
    return X.abs() @ rowrange(Y)


def fused_mean_rowrange_bound(X: Num, Y: Num) -> Num:
    """rowrange(X Y)[r] <= rowrange(xbar Y) + sum_i |X[r, i] - xbar_i| rowrange(Y)[i]."""
    xbar = X.mean(dim=0)
    return rowrange((xbar @ Y)[None]) + (X - xbar).abs() @ rowrange(Y)


def sigma1_upper_bound(X: Num, Y: Num, squarings: int = SIGMA_SQUARINGS) -> Num:
    """A certified upper bound on the largest singular value of X Y (X: [v, d], Y: [d, v]).

    sigma_1(XY)^2 is the largest eigenvalue of N = (X^T X)(Y Y^T), whose eigenvalues are those
    of a PSD matrix (real, >= 0). For p = 2^squarings, lambda_max^p <= trace(N^p), so
    sigma_1 <= trace(N^p)^(1/(2p)); the overestimate is at most a factor d^(1/(2p)). N^p is
    formed by repeated squaring with rescaling (log of the scale tracked separately). The
    scales are exact points (any positive real keeps the identity trace(N^p) = s^p
    trace((N/s)^p)), so with intervals only the upper end of each norm is used. With balls
    the squarings run in float64 with a Frobenius-norm error bound (`_sigma1_ball`).
    """
    if isinstance(X, Ball):
        return _sigma1_ball(X, Y, squarings)
    N = (X.T @ X) @ (Y @ Y.T)
    scale = iv.point_like(N, iv.upper(iv.frobenius(N)))
    if float(iv.upper(scale)) == 0.0:
        return scale
    M, log_scale = N / scale, iv.log(scale)
    for _ in range(squarings):
        M = M @ M
        s = iv.point_like(M, iv.upper(iv.frobenius(M)))
        if float(iv.upper(s)) == 0.0:  # nilpotent up to rounding: the Frobenius bound
            return iv.frobenius(X) * iv.frobenius(Y)
        M, log_scale = M / s, 2 * log_scale + iv.log(s)
    trace = M.diagonal().sum(dim=0).clamp(min=torch.finfo(torch.float64).tiny)
    p = 2**squarings
    return ((iv.log(trace) + log_scale) / (2 * p)).exp()


def _sigma1_ball(X: Ball, Y: Ball, squarings: int) -> Ball:
    """`sigma1_upper_bound` for balls: a ball whose upper end is >= the exact sigma_1(XY),
    centred on the plain float64 estimate (so that a cell which the estimate would prove is
    reported undecided, not refuted, and intervals can try it). Only the upper end need be
    sound: the error bounds it feeds are used as upper bounds, every proof decision holds
    for every member, in particular the upper end.

    N~ = fl(fl(X~^T X~) fl(Y~ Y~^T)) from the midpoints, with ||N~ - N||_F bounded from the
    balls' radii in Frobenius norm (`_gram_product`). The exact
    sequence M_0 = N / s_0, M_(i+1) = M_i^2 / s_(i+1), with the floats s_i taken as exact
    reals, has N^p = S M_K (log S = sum of 2^(K-i) log s_i), so lambda_max(N)^p <= S
    trace(M_K). The computed M~_i are tracked by e_i >= ||M~_i - M_i||_F:
        e_(i+1) <= (gamma_d F_i^2 + e_i (2 F_i + e_i) + u) / s_(i+1) + U F~_(i+1) + u
    (F_i >= ||M~_i||_F; |fl(AB) - AB| <= gamma_d |A||B| entrywise and || |A||B| ||_F <=
    ||A||_F ||B||_F; the division rounds each entry; u = d^2 2^-1074 covers the products
    and quotients that underflow, each losing <= 2^-1075), and |trace(M_K) - trace(M~_K)|
    <= sqrt(d) e_K. Every scalar step is rounded upward.
    """
    M, err = _gram_product(X, Y)
    d = M.shape[0]
    scale = float(torch.linalg.vector_norm(M))
    if scale == 0.0 and err == 0.0:  # N = 0 exactly: sigma_1 = 0
        return Ball.point(torch.tensor(0.0, dtype=torch.float64))
    if not (scale > 0 and math.isfinite(err)):
        return iv.frobenius(X) * iv.frobenius(Y)
    M, err, log_scale = M / scale, err / scale * UP, _log_up(scale)
    log_estimate = math.log(scale)  # the same quantities without error terms
    norm = _frobenius_up(M)
    err = _up_add(err, U * norm + d * d * SUBNORMAL_ULP)
    for _ in range(squarings):
        square = M @ M
        s = float(torch.linalg.vector_norm(square))
        if not 0 < s < math.inf:  # nilpotent up to rounding, or overflow: the Frobenius bound
            return iv.frobenius(X) * iv.frobenius(Y)
        grown = gamma(d) * norm * norm + err * (2 * norm + err) + d * d * SUBNORMAL_ULP
        M = square / s
        new_norm = _frobenius_up(M)
        err = _up_add(grown / s * UP, U * new_norm + d * d * SUBNORMAL_ULP)
        norm, log_scale = new_norm, _up_add(2 * log_scale, _log_up(s))
        log_estimate = 2 * log_estimate + math.log(s)
    diag = M.diagonal()
    trace = float(diag.sum()) + gamma(d) * float(diag.abs().sum()) * UP
    trace = _up_add(trace, math.sqrt(d) * UP * err)
    if not math.isfinite(trace):
        return iv.frobenius(X) * iv.frobenius(Y)
    trace = max(trace, torch.finfo(torch.float64).tiny)
    p = 2**squarings
    exponent = math.nextafter(_up_add(_log_up(trace), log_scale) / (2 * p), math.inf)
    bound = math.exp(exponent) * (1 + LIBM_REL) * UP + TINY
    plain = max(float(diag.sum()), torch.finfo(torch.float64).tiny)
    estimate = min(math.exp((math.log(plain) + log_estimate) / (2 * p)), bound)
    rad = math.nextafter((bound - estimate) * UP, math.inf)  # estimate + rad >= bound
    return Ball(torch.tensor(estimate, dtype=torch.float64), rad, estimate, False)


def _gram_product(X: Ball, Y: Ball) -> tuple[Tensor, float]:
    """(N~, e) with N~ = fl(fl(X~^T X~) fl(Y~ Y~^T)) and e >= ||N~ - (X^T X)(Y Y^T)||_F for
    the exact X, Y: with ||X - X~||_F <= e_X = sqrt(#X) r_X and F_X >= ||X~||_F,
    ||fl(X~^T X~) - X^T X||_F <= gamma_n F_X^2 + e_X (2 F_X + e_X) (n the inner dimension),
    and the same rule for the product of the two Gram matrices."""

    def gram(Z: Tensor, rad: float, n: int) -> tuple[Tensor, float, float]:
        """Z [n, d] -> Z^T Z, its error bound and a bound on its Frobenius norm."""
        F, e = _frobenius_up(Z), math.sqrt(Z.numel()) * rad * UP
        G = Z.T @ Z
        # underflowing products: <= n 2^-1075 per entry, d n 2^-1075 in Frobenius norm
        err = gamma(n) * F * F + e * (2 * F + e) + G.shape[0] * n * SUBNORMAL_ULP
        return G, _up(err), _frobenius_up(G)

    P, e_P, F_P = gram(X.mid, X.rad, X.shape[0])
    Q, e_Q, F_Q = gram(Y.mid.T, Y.rad, Y.shape[1])
    d = P.shape[1]
    err = gamma(d) * F_P * F_Q + e_P * (F_Q + e_Q) + F_P * e_Q + P.numel() * SUBNORMAL_ULP
    return P @ Q, _up(err)


def _up_add(a: float, b: float) -> float:
    """A float >= a + b."""
    return math.nextafter(a + b, math.inf)


def _log_up(x: float) -> float:
    """A float >= log(x) (x > 0; math.log within LIBM_REL relative)."""
    y = math.log(x)
    return math.nextafter(y + LIBM_REL * abs(y) + TINY, math.inf)


NORM_FLOOR = 2.0**-400  # a computed Frobenius norm from here up lost nothing to underflow


def _frobenius_up(M: Tensor) -> float:
    """A float >= ||M||_F. torch sums the squares unscaled: a computed norm in [2^-400, inf)
    has relative error <= (n + 2) U (n entries; the at most n 2^-1075 lost by underflowing
    squares is relatively far below U there); otherwise squares may have underflowed or
    overflowed, and M is first scaled exactly by a power of two near its largest entry."""
    n = M.numel()
    norm = float(torch.linalg.vector_norm(M))
    if not NORM_FLOOR <= norm < math.inf:
        norm = _scaled_frobenius(M)
    return norm * (1 + (n + 3) * U) * UP + TINY


def _scaled_frobenius(M: Tensor) -> float:
    """||M||_F within (n + 2) U relative plus 2^-1075 absolute: the norm of M 2^-e, whose
    largest entry is in [1/2, 1) (scaling by 2^-e is exact but for entries that underflow,
    each losing <= 2^-1075, relatively negligible against a norm >= 1/2), times 2^e."""
    top = float(torch.linalg.vector_norm(M, ord=math.inf))
    if top == 0.0 or not math.isfinite(top):  # 0 exactly, or no information (inf, NaN)
        return top if top == 0.0 else math.inf
    e = math.frexp(top)[1]
    half = -e // 2
    scaled = M * 2.0**half * 2.0 ** (-e - half)  # two steps: 2^-e itself may overflow
    try:
        return math.ldexp(float(torch.linalg.vector_norm(scaled)), e)
    except OverflowError:
        return math.inf


def _peel(z: Tensor, M: Num) -> tuple[Num, Num, Num]:
    """M = z (z^T M) + rest. Returns (z^T M, z z^T M, rest); exact for any vector z."""
    row = z @ M
    part = iv.outer(z, row)
    return row, part, M - part


# -- the three routes --------------------------------------------------------------------------


def position_error(w: Weights64) -> Num:
    """pos_err = (E_q W_Q + b_Q) ((W_pos - Pbar) W_K + b_K)^T, right to left: O(k d^2 + v d k).
    b_Q's part is the row b_Q keys^T, added to every query row (exact). b_K adds Q b_K to
    every position alike (it cancels in the softmax; kept so that the identity with
    paths.py's EQKE + EQKP is exact)."""
    keys = (w.W_pos - w.P_mean) @ w.W_K  # [k, d_head]
    if w.b_K is not None:
        keys = keys + w.b_K
    pos_err = w.E_q @ (w.W_Q @ keys.T)  # [v, k]
    return pos_err if w.b_Q is None else pos_err + (w.b_Q @ keys.T)[None, :]


def route_a_parts(w: Weights64, dirs: Directions) -> tuple[Num, Num, Num, Num]:
    """(EQKE_hat, A_r, B_r, cross): the rank-1 part, the residual factors (A B - A0 B0 =
    A_r B_r + cross terms) and the cross terms' row-range bound. A = (E_q W_Q + b_Q) W_K^T
    carries b_Q, so A B = EQKE_bar exactly and A_r is the biased residual factor."""
    u, wv = dirs.query_dir, dirs.key_dir
    A = w.queries(w.E_q) @ w.W_K.T  # [v, d]
    B = w.E_bar.T  # [d, v]
    uA, Bw = u @ A, B @ wv  # [d], [d]
    EQKE_hat = (uA @ Bw) * iv.outer(u, wv)  # (u^T A B w) u w^T
    A_r = A - iv.outer(u, uA)
    B_r = B - iv.outer(Bw, wv)
    cross = u.abs() * rowrange((uA @ B_r)[None]) + (A_r @ Bw).abs() * rowrange(wv[None])
    return EQKE_hat, A_r, B_r, cross


def residual_bound(A_r: Num, B_r: Num, error: str) -> Num:
    """Row-range bound of A_r B_r by a route-A method (svd, max_diff, mean+max_diff)."""
    if error == "svd":  # |Err[r,a] - Err[r,b]| = |e_r^T Err (e_a - e_b)| <= sqrt(2) sigma_1
        ones = torch.ones(A_r.shape[0], dtype=torch.float64, device=A_r.device)
        return SQRT2_UP * sigma1_upper_bound(A_r, B_r) * ones
    if error == "max_diff":
        return product_rowrange_bound(A_r, B_r)
    if error == "mean+max_diff":
        return fused_mean_rowrange_bound(A_r, B_r)
    raise ValueError(f"{error!r} is not a route-A error handling")


def route_a(w: Weights64, dirs: Directions, error: str) -> tuple[Num, Num]:
    """Rank-1 EQKE_hat from (query_dir, key_dir) and the configured bound on the residual."""
    if error == "max_diff_exact":  # form the whole error as computed: O(v^2 d)
        u, wv = dirs.query_dir, dirs.key_dir
        A, B = w.queries(w.E_q) @ w.W_K.T, w.E_bar.T
        EQKE_hat = ((u @ A) @ (B @ wv)) * iv.outer(u, wv)
        return EQKE_hat, rowrange(A @ B - EQKE_hat)
    EQKE_hat, A_r, B_r, cross = route_a_parts(w, dirs)
    return EQKE_hat, residual_bound(A_r, B_r, error) + cross


def route_b(w: Weights64, dirs: Directions, error: str) -> tuple[Num, Num]:
    """Peel six directions; nine cheap rank-1 terms; bound the four-factor remainder. b_Q's
    part 1 (b_Q W_K^T Ebar^T) of EQKE_bar is a tenth cheap term, exact (module docstring)."""
    M = w.W_Q @ w.W_K.T  # [d, d]
    e1, _, E_r = _peel(dirs.query_dir, w.E_q)
    k1, _, Eb_r = _peel(dirs.key_dir, w.E_bar)
    e2, _, E_rr = _peel(dirs.query_dir2, E_r)
    k2, _, Eb_rr = _peel(dirs.key_dir2, Eb_r)
    q_row, _, Q_r = _peel(dirs.u_Q, w.W_Q)  # q_row = u_Q^T W_Q  [d_head]
    k_row, _, K_r = _peel(dirs.u_K, w.W_K)
    qd, kd, qd2, kd2 = dirs.query_dir, dirs.key_dir, dirs.query_dir2, dirs.key_dir2
    EQKE_hat = (
        (e1 @ M @ k1) * iv.outer(qd, kd)  # E_1 M Ebar_1^T
        + iv.outer(qd, (e1 @ M) @ Eb_r.T)  # E_1 M Ebar_r^T
        + iv.outer(E_r @ (M @ k1), kd)  # E_r M Ebar_1^T
        + (e2 @ M @ k2) * iv.outer(qd2, kd2)  # E_2 M Ebar_2^T
        + iv.outer(qd2, (e2 @ M) @ Eb_rr.T)  # E_2 M Ebar_rr^T
        + iv.outer(E_rr @ (M @ k2), kd2)  # E_rr M Ebar_2^T
        + (q_row @ k_row) * iv.outer(E_rr @ dirs.u_Q, Eb_rr @ dirs.u_K)  # E_rr Q_1 K_1^T ..
        + iv.outer(E_rr @ dirs.u_Q, (q_row @ K_r.T) @ Eb_rr.T)  # E_rr Q_1 K_r^T Ebar_rr^T
        + iv.outer(E_rr @ (Q_r @ k_row), Eb_rr @ dirs.u_K)  # E_rr Q_r K_1^T Ebar_rr^T
    )
    if w.b_Q is not None:  # 1 b_Q W_K^T Ebar^T: the same row for every query
        EQKE_hat = EQKE_hat + (w.E_bar @ (w.W_K @ w.b_Q))[None, :]
    factors = [E_rr, Q_r, K_r.T, Eb_rr.T]  # Err = E_rr Q_r K_r^T Ebar_rr^T
    return EQKE_hat, four_factor_bound(factors, error)


def four_factor_bound(factors: list[Num], error: str) -> Num:
    """Row-range bound of the product of `factors` by the configured route-B method."""
    if error in ("max_diff_subproduct", "mean+max_diff_subproduct"):
        two = (
            product_rowrange_bound if error == "max_diff_subproduct" else fused_mean_rowrange_bound
        )
        bounds = []
        for split in range(1, len(factors)):
            left, right = factors[0], factors[split]
            for f in factors[1:split]:
                left = left @ f
            for f in factors[split + 1 :]:
                right = right @ f
            bounds.append(two(left, right))
        return iv.stack(bounds).amin(dim=0)
    if error == "max_diff_subproduct_recursive":
        return _recursive_bound(factors, mean_levels=0)
    if error == "mean+max_diff_subproduct_recursive":
        return _recursive_bound(factors, mean_levels=1)
    if error == "mean_recursive+max_diff_subproduct_recursive":
        return _recursive_bound(factors, mean_levels=len(factors) - 1)
    raise ValueError(f"{error!r} is not a route-B error handling")


def _recursive_bound(factors: list[Num], mean_levels: int) -> Num:
    """bound(M0..Mn) = |M0| @ bound(M1..Mn), bound(Mn) = rowrange(Mn); at the first
    `mean_levels` levels use the mean trick, whose mean term rowrange(mbar M1..Mn) is formed
    by vector-matrix products only."""
    bound = rowrange(factors[-1])
    for level in range(len(factors) - 2, -1, -1):
        X = factors[level]
        if level < mean_levels:
            xbar = X.mean(dim=0)
            row = xbar
            for f in factors[level + 1 :]:
                row = row @ f
            bound = rowrange(row[None]) + (X - xbar).abs() @ bound
        else:
            bound = X.abs() @ bound
    return bound


def decompose_eqke(
    w: Weights64, dirs: Directions, error: str, route: str, arith: Arithmetic = Arithmetic.FAST
) -> QKDecomposition:
    """EQKE_hat, pos_err and err_bound for one configuration (SPEC §6.3–§6.4), in `arith`
    (the weights' arithmetic). The directions become exact points of it, so every product
    with them is enclosed."""
    dirs = Directions(**{f.name: exact(getattr(dirs, f.name), arith) for f in fields(dirs)})
    if route == "C":
        EQKE_hat = w.queries(w.E_q) @ (w.E_bar @ w.W_K).T
        err = torch.zeros(EQKE_hat.shape[0], dtype=EQKE_hat.dtype, device=EQKE_hat.device)
    elif route == "A":
        EQKE_hat, err = route_a(w, dirs, error)
    else:
        EQKE_hat, err = route_b(w, dirs, error)
    return QKDecomposition(EQKE_hat=EQKE_hat, pos_err=position_error(w), err_bound=err)


def weights64(model: AttnOnlyTransformer, arith: Arithmetic = Arithmetic.FAST) -> Weights64:
    """The model's weights in float64 (exact: they are float32), as exact points of `arith`;
    rejects several heads. Biases that are exactly zero become None (no term in the proof)."""
    require_single_head(model, "sub-cubic proofs")
    nonzero = model.nonzero_biases()
    w: dict[str, Num] = {n: exact(t, arith) for n, t in model.weights().items()}
    bias = {n: (w[n][0] if n in ("b_Q", "b_K", "b_V") else w[n]) for n in nonzero}
    return Weights64(
        W_E=w["W_E"],
        W_pos=w["W_pos"],
        W_Q=w["W_Q"][0],
        W_K=w["W_K"][0],
        W_V=w["W_V"][0],
        W_O=w["W_O"][0],
        W_U=w["W_U"],
        attn_scale=sqrt_of(model.cfg.d_head, arith),
        **bias,
    )
