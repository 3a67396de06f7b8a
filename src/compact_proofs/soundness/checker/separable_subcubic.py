"""The `separable-subcubic` proof (new here, not in the paper): `separable-lite`'s pure-rule
cells in O(v^2) work, re-derived from the model file in float64 (any n_ctx).

Row (q, mx), q <= mx, of query q and max token mx; cell (q, mx, c): the inputs whose c
non-query positions S hold tokens < mx (the others hold mx; none do when c = k - 1, which needs
q = mx). With s = EQKE / scale, the row shift R[q, mx] = max_{x <= mx} s[q, x] (any shift per
row cancels in the softmax) and e_pos[q, p] = exp(EQKP / scale - max_p), position p holding x
has the unnormalised weight e_tok(x) e_pos[q, p], e_tok(x) = exp(s[q, x] - R[q, mx]) <= 1.

Value bound. With pv[mx, j] = max_p (PVOU[p, j] - PVOU[p, mx]) and J(x) the top_r indices of
A[x, j] = EVOU[x, j] + max_p PVOU[p, j] (argsort, stable: the main code's torch.topk may break
ties otherwise; any J is sound), since pv[mx, j] <= max_p PVOU[p, j] - min_p PVOU[p, mx],
    g[x, mx] = max( max_{j in J(x), j != mx} (EVOU[x, j] + pv[mx, j]),
                    max_{j not in J(x)} A[x, j] - min_p PVOU[p, mx] ) - EVOU[x, mx]
bounds max_{j != mx} (EVOU_c[x, j] + PVOU_c[p, j]) (_c: minus column mx) for every position p.
With E[q, mx] = max_{j != mx} EUPU[q, j] - EUPU[q, mx] + tol, every input of the cell has, for
each j != mx, Z (l_j - l_mx + tol) <= F + sum_{p in S} e_pos[q, p] h(x_p) (Z > 0 the softmax
denominator), h(x) = e_tok(x) (E + g[x, mx]), F = W_M on_max + query, on_max = e_tok(mx)
(E + g[mx, mx]), query = e_tok(q) e_pos[q, k-1] (E + g[q, mx]), W_M = sum_{p in M} e_pos[q, p].

Pure rule, one threshold per size c. With W_S = sum_{p in S} e_pos[q, p], W = W_S + W_M and
K = W on_max + query + slack: sum_S e_pos h(x_p) <= W_S max h, and -F - slack = W_S theta(W_S)
with theta(w) = on_max - K / w, monotone in w > 0; every S of size c has W_S between the sums of
the c smallest and the c largest weights, so theta_c = min(theta(w_min), theta(w_max)): if every
non-max token x has h(x) < theta_c, l_j - l_mx < -tol for every j. c = 0: proven iff -K > 0.
Each theta is evaluated as -(W_M on_max + query + slack) / W_S with W_M the sum of the
complementary weights themselves: on_max - K / w cancels (an error of 2^-52 |on_max| where
the exact value is |query| / w, possibly far smaller).
(A weight sum that underflowed to 0 gives theta = +inf only where K < 0, i.e. -K > slack: then
the exact theta is at least slack 2^1074 - |on_max| > 2 value_scale + tol >= every h.)

Members: a prefix 0..Y of tokens (< mx). For y < mx, every x <= y has h(x) <= B(y) =
exp(P - R) val, val = E + max_{x <= y} g[x, mx], P = max_{x <= y} s[q, x] if val >= 0 (then
h <= e_tok(x) max(val, 0)) else min_{x <= y} s[q, x] (then h <= e_tok(x) val with val < 0). A
binary descent keeps only y with B(y) < theta_c, then tokens Y+1 .. Y+window (< mx) join one by
one while their own h < theta_c. Count: sum over rows of [-K > 0] + sum_c C(k-1, c) (Y + 1)^c.

Margins, as `separable-lite`'s checker: tol (SAFETY x the logit scale) in E, and `slack`
((k + 2) x 16 subnormal spacings x (1 + 2 value_scale): what subnormal weights can hide in a
threshold or an assignment's terms, as the main code's float64 mode) in K. And, as the main
code, a cell counts only if a fixed weight (query, or the smallest max-token weight when a max
position exists) is >= 2^-900 (here with a relative margin): no cell rests on attention that
underflowed. Payload {"top_r": int, "window": int}, both in 0..v (absent: min(2, v), min(4, v)).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb
from typing import Any

import numpy as np

from compact_proofs.soundness.checker.errors import CertificateError
from compact_proofs.soundness.checker.model_file import Model
from compact_proofs.soundness.checker.paths import single_head_paths, sum_of_powers

DEFAULTS = (("top_r", 2), ("window", 4))
UNDERFLOW = 2.0**-1070  # 16 x the subnormal spacing, per weight and unit of value
GUARD = 2.0**-900 * (1 + 2.0**-20)  # a counted cell has a fixed weight above this
ELEMENTS = 2**21  # entries per block of the [rows, window] arrays (rows >= 1)


def payload_params(payload: dict[str, Any], v: int) -> tuple[int, int]:
    """(top_r, window): ints (not bools) in 0..v, absent -> min(default, v); no other keys."""
    extra = set(payload) - {key for key, _ in DEFAULTS}
    if extra:
        raise CertificateError(
            f"separable-subcubic payload has unknown keys {sorted(extra)!r:.80} "
            "(only top_r and window)"
        )
    out = []
    for key, default in DEFAULTS:
        value = payload.get(key, min(default, v))
        if type(value) is not int or not 0 <= value <= v:
            raise CertificateError(f"separable-subcubic payload: {key} must be an int in 0..{v}")
        out.append(value)
    return out[0], out[1]


def coupled_g(EVOU: np.ndarray, PVOU: np.ndarray, top_r: int) -> np.ndarray:
    """g [x, mx] (module docstring): exact for j in J(x) (top_r largest A[x, j]), else
    A[x, j] - min_p PVOU[p, mx]; j = mx is excluded where it is in J(x) (elsewhere it only
    loosens the bound)."""
    v = EVOU.shape[0]
    A = EVOU + PVOU.max(axis=0)[None, :]
    J = np.argsort(-A, axis=1, kind="stable")[:, :top_r]  # [x, r]
    in_J = np.zeros((v, v), dtype=bool)
    np.put_along_axis(in_J, J, True, axis=1)
    rest = np.where(in_J, -np.inf, A).max(axis=1)[:, None] - PVOU.min(axis=0)[None, :]
    best = rest
    tok = np.arange(v)
    for i in range(J.shape[1]):
        j = J[:, i]  # [x]
        pv = (PVOU[:, j][:, :, None] - PVOU[:, None, :]).max(axis=0)  # [x, mx]
        term = EVOU[tok, j][:, None] + pv
        best = np.maximum(best, np.where(j[:, None] == tok[None, :], -np.inf, term))
    return best - EVOU


@dataclass(frozen=True)
class _Tables:
    """O(v^2) tables: s [q, x]; R [q, y] = max_{x <= y} s (the row shift when y = mx, the
    prefix max P+ otherwise); P_lo [q, y] = min_{x <= y} s; e_pos [q, p]; E [q, mx] (with
    tol); g [x, mx] and G [y, mx] = max_{x <= y} g; slack (module docstring)."""

    s: np.ndarray
    R: np.ndarray
    P_lo: np.ndarray
    e_pos: np.ndarray
    E: np.ndarray
    g: np.ndarray
    G: np.ndarray
    slack: float


def _tables(m: Model, top_r: int) -> _Tables:
    """The tables from the model's path matrices (biases folded as everywhere)."""
    p = single_head_paths(m, "the separable-subcubic proof")
    EUPU, EVOU, PVOU, EQKE, EQKP = p.head0()
    v = m.v
    top = EUPU.argmax(axis=1)
    others = np.broadcast_to(EUPU.max(axis=1)[:, None], (v, v)).copy()
    second = np.where(np.arange(v)[None, :] == top[:, None], -np.inf, EUPU).max(axis=1)
    others[np.arange(v), top] = second  # others[q, mx] = max_{j != mx} EUPU[q, j]
    s, s_pos = EQKE / p.scale, EQKP / p.scale
    g = coupled_g(EVOU, PVOU, top_r)
    return _Tables(
        s=s,
        R=np.maximum.accumulate(s, axis=1),
        P_lo=np.minimum.accumulate(s, axis=1),
        e_pos=np.exp(s_pos - s_pos.max(axis=1, keepdims=True)),
        E=others - EUPU + p.tol,
        g=g,
        G=np.maximum.accumulate(g, axis=0),
        slack=(m.k + 2) * UNDERFLOW * (1 + 2 * p.value_scale),
    )


def thresholds(t: _Tables, q: np.ndarray, mx: np.ndarray, k: int) -> np.ndarray:
    """theta [r, c], c = 0..k-1 (c = 0: -K, proven iff > 0); -inf where the cell is empty
    (q < mx needs a max position: c < k - 1) or its fixed weights underflowed."""
    R, E = t.R[q, mx], t.E[q, mx]
    W = t.e_pos[q, : k - 1]  # [r, k-1]
    e_max = np.exp(t.s[q, mx] - R)
    w_query = np.exp(t.s[q, q] - R) * t.e_pos[q, k - 1]
    on_max = e_max * (E + t.g[mx, mx])
    query = w_query * (E + t.g[q, mx]) + t.slack
    ordered = np.sort(W, axis=1)
    zero = np.zeros((len(q), 1))
    low = np.concatenate([zero, np.cumsum(ordered, axis=1)], axis=1)  # [:, c]: c smallest
    high = np.concatenate([zero, np.cumsum(ordered[:, ::-1], axis=1)], axis=1)  # c largest
    cols = [-(high[:, k - 1] * on_max + query)]
    for c in range(1, k):
        rest = k - 1 - c  # the complement's own sum: no cancellation (c = k - 1: exactly 0)
        lo = -(high[:, rest] * on_max + query) / low[:, c]
        hi = -(low[:, rest] * on_max + query) / high[:, c]
        cols.append(np.minimum(lo, hi))
    theta = np.stack(cols, axis=1)
    c = np.arange(k)[None, :]
    has_max = c < k - 1
    big_max = (e_max * W.min(axis=1) >= GUARD) if k > 1 else np.zeros(len(q), dtype=bool)
    ok = (has_max | (q == mx)[:, None]) & (
        (w_query >= GUARD)[:, None] | (big_max[:, None] & has_max)
    )
    return np.where(ok & ~np.isnan(theta), theta, -np.inf)


def _prefix_bound(t: _Tables, q: np.ndarray, mx: np.ndarray, y: np.ndarray) -> np.ndarray:
    """B [r] >= h(x) for every token x <= y (module docstring)."""
    val = t.E[q, mx] + t.G[y, mx]
    P = np.where(val >= 0, t.R[q, y], t.P_lo[q, y])
    return np.exp(P - t.R[q, mx]) * val


def _h(t: _Tables, q: np.ndarray, mx: np.ndarray, x: np.ndarray) -> np.ndarray:
    """h [r, n] = e_tok(x) (E[q, mx] + g[x, mx]) for tokens x [r, n] <= mx."""
    q, mx = q[:, None], mx[:, None]
    return np.exp(t.s[q, x] - t.R[q, mx]) * (t.E[q, mx] + t.g[x, mx])


def prefix_ends(
    t: _Tables, q: np.ndarray, mx: np.ndarray, theta: np.ndarray, window: int
) -> np.ndarray:
    """Y [r] in -1..mx-1: a binary descent keeps the prefix ends y < mx whose bound
    B(y) < theta (only tested ones: sound whether or not B is monotone), then tokens
    Y+1 .. Y+window (< mx) join while h < theta. Members: the tokens 0..Y."""
    v = t.s.shape[1]
    Y = np.full(len(q), -1)
    step = 1 << max(0, (v - 1).bit_length() - 1)  # the largest power of two below v
    while step:
        y = Y + step
        inside = y < mx
        passed = inside & (_prefix_bound(t, q, mx, np.where(inside, y, 0)) < theta)
        Y = np.where(passed, y, Y)
        step >>= 1
    if window:
        x = Y[:, None] + 1 + np.arange(window)[None, :]
        present = x < mx[:, None]
        passing = present & (_h(t, q, mx, np.minimum(x, mx[:, None])) < theta[:, None])
        Y = Y + np.cumprod(passing, axis=1).sum(axis=1)
    return Y


def _rows(v: int) -> tuple[np.ndarray, np.ndarray]:
    """All rows (q, mx), q <= mx."""
    mx, q = np.nonzero(np.tril(np.ones((v, v), dtype=bool)))
    return q, mx


def separable_subcubic_count(m: Model, payload: dict[str, Any]) -> int:
    """Inputs proven by the `separable-subcubic` proof (module docstring): per row, [-K > 0]
    plus, per set size c >= 1, C(k-1, c) (Y_c + 1)^c (members 0..Y_c at each of c positions)."""
    top_r, window = payload_params(payload, m.v)
    k = m.k
    total = 0
    with np.errstate(all="ignore"):  # inf - inf, 0 * inf: NaN compares False (nothing proven)
        t = _tables(m, top_r)
        q_all, mx_all = _rows(m.v)
        step = max(1, ELEMENTS // (window + 1))  # memory O(ELEMENTS) whatever the payload
        for start in range(0, len(q_all), step):
            q, mx = q_all[start : start + step], mx_all[start : start + step]
            theta = thresholds(t, q, mx, k)
            total += int((theta[:, 0] > 0).sum())
            for c in range(1, k):
                Y = prefix_ends(t, q, mx, theta[:, c], window)
                total += comb(k - 1, c) * sum_of_powers(Y + 1, c)
    return total
