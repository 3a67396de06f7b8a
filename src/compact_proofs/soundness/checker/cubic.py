"""The cubic proof (SPEC §5), recomputed cell by cell."""

from __future__ import annotations

from math import comb

import numpy as np

from compact_proofs.soundness.checker.model_file import Model
from compact_proofs.soundness.checker.paths import max_except, single_head_paths


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def cubic_count(m: Model) -> int:
    """Inputs proven by the cubic proof.

    Cell (q, m, c): query q <= m, c = number of non-query positions holding a token < m
    (c <= k-2 if q < m). With PVOU_pess[j] = max_p (PVOU[p, j] - PVOU[p, m]),
    EUPU_pess[q] = max_{j != m} (EUPU[q, j] - EUPU[q, m]) and
    g[x] = max_{j != m} (EVOU[x, j] - EVOU[x, m] + PVOU_pess[j]), every input of the cell whose
    non-max tokens all equal t satisfies max_{j != m} (l_j - l_m) <= B[q, t] =
    EUPU_pess[q] + max_o (A_max g[m] + A_qry g[q] + A_nmx g[t]), where o places the max tokens
    at the non-query positions of smallest (o = 0) or largest (o = 1) positional score and the
    A's are the softmax weights on max / query (q != m) / non-max positions. By the
    linear-fractional argument (SPEC §5.5) the worst mixture of non-max tokens is pure, so a
    cell with N tokens t < m proven (B < 0) certifies C(k-1, c) N^c inputs. For c = 0 there is
    one input; B0 = max_{j != m}(EUPU[q,j]-EUPU[q,m] + PVOU_pess[j] + A_max (EVOU[m,j]-EVOU[m,m])
    + A_qry (EVOU[q,j]-EVOU[q,m])).
    """
    p = single_head_paths(m, "the cubic proof")
    v, k, sc = m.v, m.k, p.scale
    EUPU, EVOU, PVOU, EQKE, EQKP = p.head0()
    tol = p.tol
    asc = np.sort(EQKP[:, : k - 1] / sc, axis=1)
    orders = np.stack([asc, asc[:, ::-1]])  # [o, q, slot]: positional scores of the slots
    s_query = (np.diagonal(EQKE) + EQKP[:, k - 1]) / sc
    total = 0
    for mx in range(v):
        is_m = np.arange(mx + 1) == mx
        pv = (PVOU - PVOU[:, mx : mx + 1]).max(axis=0)  # PVOU_pess [j]
        eu_c = EUPU[: mx + 1] - EUPU[: mx + 1, mx : mx + 1]  # [q, j]
        ev_c = EVOU[: mx + 1] - EVOU[: mx + 1, mx : mx + 1]  # [x, j], x <= m
        g = max_except(ev_c + pv, np.array(mx))  # [x]
        s_m, sq = EQKE[: mx + 1, mx] / sc, s_query[: mx + 1]
        # c = 0: all non-query positions hold m
        a = _softmax(np.concatenate([orders[0, : mx + 1] + s_m[:, None], sq[:, None]], axis=1))
        A_max = a[:, :-1].sum(axis=1) + np.where(is_m, a[:, -1], 0.0)
        A_qry = np.where(is_m, 0.0, a[:, -1])
        L0 = eu_c + pv + A_max[:, None] * ev_c[mx] + A_qry[:, None] * ev_c
        total += int(((max_except(L0, np.array(mx)) < -tol) & (is_m | (k >= 2))).sum())
        eu_pess = max_except(eu_c, np.array(mx))  # [q]
        for c in range(1, k):
            n_max = k - 1 - c
            S = np.empty((2, mx + 1, mx, k))
            S[..., : k - 1] = orders[:, : mx + 1, None, :]
            S[..., :n_max] += s_m[None, :, None, None]
            S[..., n_max : k - 1] += (EQKE[: mx + 1, :mx] / sc)[None, :, :, None]
            S[..., k - 1] = sq[None, :, None]
            a = _softmax(S)
            w_q = a[..., k - 1]
            A_max = a[..., :n_max].sum(-1) + np.where(is_m[:, None], w_q, 0.0)
            A_qry = np.where(is_m[:, None], 0.0, w_q)
            A_nmx = a[..., n_max : k - 1].sum(-1)
            ov = A_max * g[mx] + A_qry * g[:, None] + A_nmx * g[None, :mx]
            bound = eu_pess[:, None] + ov.max(axis=0)  # [q, t]
            N = (bound < -tol).sum(axis=1)[is_m | (c <= k - 2)]
            total += comb(k - 1, c) * sum(int(n) ** c for n in N)
    return total
