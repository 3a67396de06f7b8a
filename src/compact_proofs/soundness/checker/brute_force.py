"""Brute force: every input's logits, from the path identity."""

from __future__ import annotations

import numpy as np

from compact_proofs.soundness.checker.errors import UnsupportedModelError
from compact_proofs.soundness.checker.model_file import Model
from compact_proofs.soundness.checker.paths import CHUNK, Paths, max_except, path_matrices

TIE = 1e-9 * (1 + 1e-6)  # margins within TIE x (logit scale) are ties (wrong)
MAX_INPUTS = 2**36  # brute force refuses to enumerate more inputs than this


def logits_direct(p: Paths, tokens: np.ndarray) -> np.ndarray:
    """Logits [n, v] of tokens [n, k] from the path identity, softmax stabilised per input."""
    q = tokens[:, -1]
    out = p.EUPU[q].copy()
    for h in range(p.EVOU.shape[0]):
        s = (p.EQKE[h][q[:, None], tokens] + p.EQKP[h][q]) / p.scale
        a = np.exp(s - s.max(axis=1, keepdims=True))
        a /= a.sum(axis=1, keepdims=True)
        out += np.einsum("np,npj->nj", a, p.EVOU[h][tokens] + p.PVOU[h][None])
    return out


def _correct(ell: np.ndarray, mx: np.ndarray) -> np.ndarray:
    """Rows of logits `ell` with l_m - max_{j != m} l_j > TIE * max_j |l_j|, m = mx[row]."""
    margin = np.take_along_axis(ell, mx[:, None], 1)[:, 0] - max_except(ell, mx)
    return margin > TIE * np.abs(ell).max(axis=1)


def _correct_direct(p: Paths, tokens: np.ndarray) -> int:
    return int(_correct(logits_direct(p, tokens), tokens.max(axis=1)).sum())


def _max_except_top2(X: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """max_{j != cols[r, i]} X[r, j] for every r and i, from the top two entries of row r."""
    first = X.argmax(axis=1)
    top = np.take_along_axis(X, first[:, None], 1)
    second = max_except(X, first)[:, None]
    return np.where(first[:, None] == cols, second, top)


def brute_force_count(m: Model) -> int:
    """Number of inputs with l_m - max_{j != m} l_j > TIE * max_j |l_j| (ties count wrong).

    Single head, per query q: with w_p(t) = exp(score_p(t) - C_q) (C_q = the largest score any
    position can have for q) and Y_p(t) = w_p(t) (EUPU[q] + EVOU[t] + PVOU[p]), the
    unnormalised logits of x are Z = sum_p Y_p(x_p) = W l with W = sum_p w_p(x_p) > 0, so Z's
    margins decide like l's. Split Z = A[a] + B[t]: a = the prefix x_0..x_{k-3} with the query,
    t = x_{k-2}. Screen: max_{j != m}(A + B) <= max_{j != m} A + max_{j != m} B (top two of
    each row), so Z_m - that > TIE * value_scale * W (value_scale * W >= max |Z|) proves x
    correct in O(1). Every other input is decided on its full row Z, or, where W < 1e-250
    (precision lost to underflow), on its logits computed directly.
    """
    v, k = m.v, m.k
    if v**k > MAX_INPUTS:
        raise UnsupportedModelError(f"brute force would enumerate {v}^{k} inputs; too many")
    p = path_matrices(m)
    if m.heads > 1 or k == 1:
        total, step = 0, max(1, CHUNK // (v * k))
        for start in range(0, v**k, step):
            idx = np.arange(start, min(start + step, v**k))
            total += _correct_direct(p, (idx[:, None] // v ** np.arange(k)) % v)
        return total
    EUPU, EVOU, PVOU, EQKE, EQKP = p.head0()
    n_pre, tv, value_scale = v ** (k - 2), np.arange(v), p.value_scale
    na = min(n_pre, max(1, CHUNK // (v * v)))
    total = 0
    for q in range(v):
        s = (EQKE[q][None, :] + EQKP[q][:, None]) / p.scale  # [k, v]: score of token t at p
        s[k - 1] = s[k - 1, q]  # the last position holds q
        w = np.exp(s - s.max())
        Y = w[:, :, None] * (EUPU[q] + EVOU[None] + PVOU[:, None])  # [k, v, v]
        B, WB = Y[k - 2], w[k - 2]
        for a0 in range(0, n_pre, na):
            a = np.arange(a0, min(a0 + na, n_pre))
            digits = (a[:, None] // v ** np.arange(k - 2)) % v  # tokens at 0..k-3
            A = Y[k - 1, q] + Y[np.arange(k - 2), digits].sum(1)  # [na, v]
            WA = w[k - 1, q] + w[np.arange(k - 2), digits].sum(1)
            mx = np.maximum(np.maximum(digits.max(1, initial=0), q)[:, None], tv)  # [na, t]
            Zm = np.take_along_axis(A, mx, 1) + B[tv, mx]
            lower = Zm - _max_except_top2(A, mx) - _max_except_top2(B, mx.T).T
            W = WA[:, None] + WB[None, :]
            sure = (lower > TIE * value_scale * W) & (W >= 1e-250)
            total += int(sure.sum())
            ia, it = np.nonzero(~sure)
            faint = W[ia, it] < 1e-250
            total += int(_correct(A[ia[~faint]] + B[it[~faint]], mx[ia, it][~faint]).sum())
            if faint.any():
                tokens = np.concatenate([digits[ia], it[:, None], np.full((len(ia), 1), q)], 1)
                total += _correct_direct(p, tokens[faint])
    return total
