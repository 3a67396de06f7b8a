"""The `separable-lite` and `separable` proofs (new here, not in the paper): a cell per query,
max token and set of non-query positions holding smaller tokens, exact unnormalised attention
weights and a bound separable over positions. Both refuse n_ctx > 10."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from compact_proofs.soundness.checker.errors import UnsupportedModelError
from compact_proofs.soundness.checker.model_file import Model
from compact_proofs.soundness.checker.paths import (
    CHUNK,
    max_except,
    single_head_paths,
    sum_of_powers,
)

SEPARABLE_MAX_N_CTX = 10  # each of the 2^(n_ctx-1) position sets is a cell
UNDERFLOW = 2.0**-1070  # 16 x the subnormal spacing, per weight and unit of value


@dataclass(frozen=True)
class _SepRows:
    """Quantities of the rows (q, mx), q in qs (all <= mx), of one max token mx.

    e_tok[q, x] = exp(s(q, x) - max_t s(q, t)), s = EQKE / scale, and e_pos[q, p] likewise
    from EQKP, so w_p(x) = e_tok[q, x] e_pos[q, p] is the softmax numerator of position p
    holding x, up to a factor per query. Margins: tol is folded into the direct path,
    d[q, j] = EUPU[q, j] - EUPU[q, mx] + tol, so every bound is on
    Z (max_{j != mx} (l_j - l_mx) + tol), Z = sum_p w_p > 0 (the relative margin of the cubic
    proof); and `slack` (k weights, each off by up to ~2^-1074 where it is subnormal, times
    the value scale) is taken off every threshold T: with weights far below the row's largest
    one, float64 keeps no relative precision, and the checker proves nothing from that."""

    mx: int
    qs: np.ndarray
    d: np.ndarray  # [q, v]
    E: np.ndarray  # [q]: max_{j != mx} d[q, j]
    slack: float
    ev: np.ndarray  # [x, v], x <= mx: EVOU[x, j] - EVOU[x, mx]
    pv: np.ndarray  # [p, v], all k positions: PVOU[p, j] - PVOU[p, mx]
    e_tok: np.ndarray  # [q, v]
    e_pos: np.ndarray  # [q, k]

    def w_query(self) -> np.ndarray:
        """The query position's weight w_{k-1}(q) [q]."""
        return self.e_tok[np.arange(len(self.qs)), self.qs] * self.e_pos[:, -1]

    def thresholds(self, fixed: np.ndarray) -> np.ndarray:
        """T[S] = -F[M] - slack (M = the complement of S), from F [M, q]; S = every
        position only when q = mx (else M must hold the max token)."""
        T = -fixed[::-1] - self.slack
        T[-1] = np.where(self.qs == self.mx, T[-1], -np.inf)
        return T


def _separable_rows(m: Model, what: str, chunked: bool) -> Iterator[_SepRows]:
    """Yield _SepRows for every max token (queries in chunks of about CHUNK / (2^(k-1) v)
    when `chunked`). Refuses n_ctx > 10 and several heads; biases are folded as everywhere."""
    if m.k > SEPARABLE_MAX_N_CTX:
        raise UnsupportedModelError(
            f"{what} has a cell per set of positions (2^(n_ctx-1)); n_ctx={m.k} is above "
            f"{SEPARABLE_MAX_N_CTX}"
        )
    p = single_head_paths(m, what)
    v, k = m.v, m.k
    EUPU, EVOU, PVOU, EQKE, EQKP = p.head0()
    tol = p.tol
    slack = k * UNDERFLOW * (1 + 2 * p.value_scale)
    s_tok, s_pos = EQKE / p.scale, EQKP / p.scale
    e_tok = np.exp(s_tok - s_tok.max(axis=1, keepdims=True))
    e_pos = np.exp(s_pos - s_pos.max(axis=1, keepdims=True))
    step = max(1, CHUNK // (2 ** (k - 1) * v)) if chunked else v
    for mx in range(v):
        ev = EVOU[: mx + 1] - EVOU[: mx + 1, mx : mx + 1]
        pv = PVOU - PVOU[:, mx : mx + 1]
        for q0 in range(0, mx + 1, step):
            qs = np.arange(q0, min(q0 + step, mx + 1))
            d = EUPU[qs] - EUPU[qs, mx : mx + 1] + tol
            E = max_except(d, np.array(mx))
            yield _SepRows(mx, qs, d, E, slack, ev, pv, e_tok[qs], e_pos[qs])


def _subset_sums(base: np.ndarray, terms: list[np.ndarray]) -> np.ndarray:
    """out[s] = base + sum of terms[p] over the bits p of s, for every bit mask s."""
    out = base[None]
    for t in terms:
        out = np.concatenate([out, out + t[None]])
    return out


def _count_below(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row r: #{(i, l) : a[r, i] < b[r, l]}, by merging: sort the row of b followed by a
    stably (an a equal to a b lands after it) and add up, at every b, the a's before it."""
    order = np.argsort(np.concatenate([b, a], axis=1), axis=1, kind="stable")
    is_a = order >= b.shape[1]
    a_before = np.cumsum(is_a, axis=1) - is_a
    return np.where(is_a, 0, a_before).sum(axis=1)


def _pure_counts(W_S: np.ndarray, h: np.ndarray, T: np.ndarray) -> np.ndarray:
    """|G| per row, G = {x < mx : W_S h(x) < T}: if every non-max token is in G, the
    position terms sum to at most W_S max h < T."""
    return (W_S[:, None] * h < T[:, None]).sum(axis=1)


def separable_count(m: Model) -> int:
    """Inputs proven by the `separable` proof (joint fixed part, exact counting).

    Cell (q, mx, S): S = the non-query positions holding tokens < mx (c = |S|), the others M
    hold mx (M must be non-empty if q < mx). For every input of the cell and j != mx,
    Z (l_j - l_mx) = sum_p w_p (EUPU_c[q, j] + EVOU_c[x_p, j] + PVOU_c[p, j]) (the _c: minus
    the column mx) is at most F + sum_{p in S} u_p(x_p), with F = max_{j != mx} of the exact
    sum over M and the query (tokens fixed by the cell) and u_p(x) = w_p(x) (E + g_p(x)),
    g_p(x) = max_{j != mx}(EVOU_c[x, j] + PVOU_c[p, j]). The input is proven when
    sum_{p in S} u_p(x_p) < T = -F (less the margins of _SepRows). Counted exactly for c <= 2
    and for c = 3 on the q = mx rows (T - u_{p1}(x1) [- u_{p2}(x2)] merged with the sorted
    values of the last position); other cells count |G|^c with the pure rule,
    h(x) = e_tok[q, x] (E + max_p g_p(x)).
    """
    n = m.k - 1
    total = 0
    for r in _separable_rows(m, "the separable proof", chunked=True):
        mx, qs, is_m = r.mx, r.qs, r.qs == r.mx
        w_q, e_m = r.w_query(), r.e_tok[:, mx]
        query = w_q[:, None] * (r.d + r.ev[qs] + r.pv[n])
        on_max = [(e_m * r.e_pos[:, p])[:, None] * (r.d + r.ev[mx] + r.pv[p]) for p in range(n)]
        fixed = _subset_sums(query, on_max)  # [M, q, j]
        fixed[..., mx] = -np.inf
        T = r.thresholds(fixed.max(axis=-1))
        ev_low = np.where(np.arange(m.v) == mx, -np.inf, r.ev[:mx])  # [x < mx, j]
        g = (ev_low[None] + r.pv[:n, None]).max(axis=-1)  # [p, x]
        u = (r.e_pos.T[:n, :, None] * r.e_tok[None, :, :mx]) * (r.E[:, None] + g[:, None])
        h = r.e_tok[:, :mx] * (r.E[:, None] + (g.max(axis=0) if n else 0.0))
        W = _subset_sums(np.zeros(len(qs)), [r.e_pos[:, p] for p in range(n)])  # [S, q]
        for s in range(2**n):
            S = [p for p in range(n) if s >> p & 1]
            c, Ts = len(S), T[s]
            if c == 0:
                total += int((Ts > 0).sum())
                continue
            exact = np.full(len(qs), c <= 2) | (is_m & (c == 3))
            if exact.any():
                Te, ue = Ts[exact], u[:, exact]
                if c == 1:
                    total += int((ue[S[0]] < Te[:, None]).sum())
                else:
                    thr = Te[:, None] - ue[S[0]]
                    if c == 3:
                        thr = (thr[:, :, None] - ue[S[1]][:, None, :]).reshape(len(Te), -1)
                    total += int(_count_below(ue[S[-1]], thr).sum())
            if not exact.all():
                N = _pure_counts(W[s][~exact], h[~exact], Ts[~exact])
                total += sum_of_powers(N, c)
    return total


def separable_lite_count(m: Model) -> int:
    """Inputs proven by the `separable-lite` proof (every position pessimised, pure rule).

    Cells (q, mx, S) as in `separable_count`, with the cubic proof's
    g(x) = max_{j != mx}(EVOU_c[x, j] + max_p PVOU_c[p, j]) for every position, h(x) =
    e_tok[q, x] (E + g(x)) and T = -(e_tok[q, mx] W_M (E + g(mx)) + w_query (E + g(q))),
    W_M = sum_{p in M} e_pos[q, p]: the cell proves every assignment of tokens from
    G = {x < mx : W_S h(x) < T} (|G|^c inputs; c = 0: proven iff T > 0).
    """
    n = m.k - 1
    total = 0
    for r in _separable_rows(m, "the separable-lite proof", chunked=False):
        mx, qs = r.mx, r.qs
        g = max_except(r.ev + r.pv.max(axis=0), np.array(mx))  # [x <= mx]
        h = r.e_tok[:, :mx] * (r.E[:, None] + g[:mx])
        W = _subset_sums(np.zeros(len(qs)), [r.e_pos[:, p] for p in range(n)])  # [S, q]
        on_max = r.e_tok[:, mx] * (r.E + g[mx])
        query = r.w_query() * (r.E + g[qs])
        T = r.thresholds(_subset_sums(query, [r.e_pos[:, p] * on_max for p in range(n)]))
        total += int((T[0] > 0).sum())
        for s in range(1, 2**n):
            total += sum_of_powers(_pure_counts(W[s], h, T[s]), s.bit_count())
    return total
