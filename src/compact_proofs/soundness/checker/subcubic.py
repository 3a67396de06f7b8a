"""The 100 sub-cubic proofs (SPEC §6.2, §6.5-§6.8) with the project's SOUND rules."""

from __future__ import annotations

from math import comb, sqrt
from typing import Any

import numpy as np

from compact_proofs.soundness.checker.certificate_file import SUBCUBIC, decode_tensor
from compact_proofs.soundness.checker.errors import CertificateError
from compact_proofs.soundness.checker.model_file import Model
from compact_proofs.soundness.checker.paths import SAFETY, single_head, sum_of_powers
from compact_proofs.soundness.checker.subcubic_bounds import eqke_decomposition, rowrange, split_eu

DIRECTIONS = ("query_dir", "key_dir", "query_dir2", "key_dir2", "u_Q", "u_K", "W_EP_direction")


def _payload(m: Model, payload: dict[str, Any], strategy_id: str):
    """Directions (float64, finite, right sizes) and gaps (integers >= 1, shape [v, v, k])."""
    if payload.get("config") != strategy_id:
        raise CertificateError(
            f"certificate payload is for {payload.get('config')!r}, not {strategy_id!r}"
        )
    try:
        dirs = {n: decode_tensor(payload["directions"][n]) for n in DIRECTIONS}
        gaps = decode_tensor(payload["min_gaps"])
    except (KeyError, TypeError):
        raise CertificateError("sub-cubic certificate lacks directions or min_gaps") from None
    for name, t in dirs.items():
        size = m.d if name in ("u_Q", "u_K", "W_EP_direction") else m.v
        dirs[name] = t = t.astype(np.float64)
        if t.shape != (size,) or not np.isfinite(t).all():
            raise CertificateError(f"certificate direction {name} must be {size} finite numbers")
    if gaps.shape != (m.v, m.v, m.k) or gaps.dtype.kind not in "iu" or (gaps < 1).any():
        raise CertificateError(f"certificate min_gaps must be integers >= 1, [{m.v}, {m.v}, {m.k}]")
    # Any vectors are sound in exact arithmetic; absurd magnitudes invite float64 cancellation,
    # so (as the main verifier does) unit-like directions with norm outside [0.5, 2] are
    # normalised and the EU centre is capped at ||W_E + mean_p P_p||_F. Search output (unit
    # vectors, a centre u^T E with |u| = 1) is unchanged.
    for name, t in dirs.items():
        norm = np.linalg.norm(t)
        if name == "W_EP_direction":
            limit = np.linalg.norm(m.f64("W_E") + m.f64("W_pos").mean(axis=0))
            dirs[name] = t * (limit / norm) if norm > limit else t
        elif norm > 0 and not 0.5 <= norm <= 2.0:
            dirs[name] = t / norm
    return dirs, gaps.astype(np.int64)


def subcubic_count(m: Model, payload: dict[str, Any], strategy: str) -> int:
    """Inputs proven by one sub-cubic certificate (SPEC §6.2, §6.5-§6.8, sound rules).

    Cell (q, m, c), c = positions holding a token != m (the query included when q != m), gap
    g = gaps[q, m, c]: the inputs whose non-max tokens (and the query, if q != m) are <= m - g.
    Valid: q = m and (c = 0 or m >= g), or q < m, c >= 1, m - q >= g.
    1.-2. `_attention_bounds`: A_lo <= the attention on the max tokens <= A_hi.
    3. `_wrong_logit_bound`: B >= max_{j != m} (l_j - l_m) over the cell.
    4. A valid cell with B < 0 certifies C(k-1, c') (m - g + 1)^c' inputs, c' = non-max tokens
       at non-query positions (c if q = m, else c - 1).
    Biases are folded in exactly as in paths.py: b_Q and b_K in the attention scores
    (`eqke_decomposition`), b_V in PVOU and b_O W_U + b_U in the direct path
    (`_wrong_logit_bound`). Zero biases add exact zeros: the counts are those without them.
    """
    eu, att, err = SUBCUBIC[strategy]
    single_head(m, "sub-cubic proofs")
    canonical = f"EUPU-{eu}--attn-{att}--attn-err-{err}".replace("_", "-")
    dirs, G = _payload(m, payload, canonical)
    per_head = ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V")
    W = {n: m.f64(n)[0] if n in per_head else m.f64(n) for n in m.w}  # all 12, biases 0 if absent
    hat, err_bound, pos_err = eqke_decomposition(W, dirs, err)
    q, mm, c = np.ogrid[: m.v, : m.v, : m.k]
    valid = ((q < mm) & (c >= 1) & (mm - q >= G)) | ((q == mm) & ((c == 0) | (mm >= G)))
    A_lo, A_hi = _attention_bounds(hat, err_bound, pos_err, G, sqrt(m.d_head))
    bound, scale = _wrong_logit_bound(W, dirs["W_EP_direction"], eu, att, G, valid, A_lo, A_hi)
    proven = valid & (bound < -SAFETY * scale)
    c_prime = np.where(q == mm, c, c - 1)
    total = int((proven & (c_prime == 0)).sum())
    for cp in range(1, m.k):
        total += comb(m.k - 1, cp) * sum_of_powers((mm - G + 1)[proven & (c_prime == cp)], cp)
    return total


def _lse(x: np.ndarray) -> np.ndarray:
    """log sum exp over the last axis; -inf for an empty axis."""
    if x.shape[-1] == 0:
        return np.full(x.shape[:-1], -np.inf)
    top = x.max(axis=-1)
    return top + np.log(np.exp(x - top[..., None]).sum(axis=-1))


def _attention_bounds(hat, err_bound, pos_err, G, sc) -> list[np.ndarray]:
    """[A_lo, A_hi] [q, m, c]: bounds on the attention paid to the max tokens.

    1. D_lo <= EQKE_bar[q,m] - EQKE_bar[q,t] <= D_hi for all t <= m - g (running max / min of
       EQKE_hat over t, widened by err_bound[q]).
    2. A = sigmoid(D / scale + log S_on - log S_off), S = sums of exp(positional score) over
       the positions holding / not holding m (the query position's score is the origin), the
       max tokens at the non-query positions of smallest (lo) / largest (hi) score.
    """
    v, _, k = G.shape
    q, mm, c = np.ogrid[:v, :v, :k]
    qb = np.broadcast_to(q, G.shape)
    at = mm - G
    own, col = hat[q, mm], np.clip(at, 0, None)
    run_max, run_min = np.maximum.accumulate(hat, axis=1), np.minimum.accumulate(hat, axis=1)
    D_lo = np.where(at >= 0, own - run_max[qb, col], 0.0) - err_bound[:, None, None]
    D_hi = np.where(at >= 0, own - run_min[qb, col], 0.0) + err_bound[:, None, None]
    pos = (pos_err[:, : k - 1] - pos_err[:, k - 1 :]) / sc
    n_on = np.clip(np.where(q == mm, k - 1 - c, k - c), 0, k - 1)  # non-query max positions
    A = []
    for slots, D in ((np.sort(pos, axis=1), D_lo), (-np.sort(-pos, axis=1), D_hi)):
        first = np.stack([_lse(slots[:, :n]) for n in range(k)], axis=1)  # [q, n]
        last = np.stack([_lse(slots[:, n:]) for n in range(k)], axis=1)
        on, off = first[qb, n_on], last[qb, n_on]
        on = np.where(q == mm, np.logaddexp(on, 0.0), on)
        off = np.where(q == mm, off, np.logaddexp(off, 0.0))
        x = D / sc + on - off
        e = np.exp(-np.abs(x))  # sigmoid(x), without overflow
        A.append(np.where(x >= 0, 1 / (1 + e), e / (1 + e)))
    return A


def _wrong_logit_bound(W, direction, eu, att, G, valid, A_lo, A_hi):
    """(B [q, m, c], scale): B >= max_{j != m} (l_j - l_m) on every input of the cell, scale =
    the size of the terms (the margin demanded is SAFETY * scale).

    With attention a on the max tokens, l_j - l_m <= L[j] + EU_q_err[q] + a R[j] + (1-a) W,
    L = EU_mean[j] - EU_mean[m] + PVOU_pess[j], R[j] = EVOU[m,j] - EVOU[m,m],
    W = max_{t <= m - g_min} rowrange(EVOU)[t], g_min = min_{q' <= m} gaps[q', m, c].
    With a = abar + e (abar: mean of the pessimal extreme over the valid queries, or 0):
    max_{j != m} <= Mbar + e R_max (e >= 0) or Mbar + e R_min (e < 0), Mbar =
    max_{j != m} (L[j] + abar R[j]); convex in a, so B = the larger value at A_lo, A_hi.
    The all-max input (q = m, c = 0) uses its exact direct path and attention 1.
    Biases: PVOU = (W_pos W_V + b_V) W_O W_U (the attention weights sum to 1) and EUPU =
    E_q W_U + b_O W_U + b_U, as in paths.py.
    """
    v, _, k = G.shape
    q, mm, _ = np.ogrid[:v, :v, :k]
    OU = W["W_O"] @ W["W_U"]
    EVOU = W["W_E"] @ (W["W_V"] @ OU)
    PVOU = W["W_pos"] @ (W["W_V"] @ OU) + W["b_V"] @ OU  # (W_pos W_V + b_V) W_O W_U
    E_q = W["W_E"] + W["W_pos"][-1]
    direct_bias = W["b_O"] @ W["W_U"] + W["b_U"]  # the same in every row of EUPU
    EUPU = E_q @ W["W_U"] + direct_bias
    EU_mean, EU_q_err = split_eu(E_q, W["W_U"], eu, direction, direct_bias)
    idx = np.arange(v)
    PVOU_pess = (PVOU[:, None, :] - PVOU[:, :, None]).max(axis=0)  # [m, j]
    L = EU_mean[None, :] - EU_mean[:, None] + PVOU_pess  # [m, j]
    R = EVOU - np.diagonal(EVOU)[:, None]
    off_diag = idx[:, None] != idx[None, :]
    R_max = np.where(off_diag, R, -np.inf).max(axis=1)  # [m]
    R_min = np.where(off_diag, R, np.inf).min(axis=1)
    W_run = np.maximum.accumulate(rowrange(EVOU))
    g_min = np.where(q <= mm, G, v + 1).min(axis=0)  # [m, c]
    Wt = np.where(mm[0] - g_min >= 0, W_run[np.clip(mm[0] - g_min, 0, None)], np.inf)
    a_sel = np.where(R_max[:, None] >= Wt, A_hi, A_lo)
    if att == "mean_query+diff":
        a_bar = np.where(valid, a_sel, 0.0).sum(axis=0) / np.maximum(valid.sum(axis=0), 1)
    else:
        a_bar = np.zeros((v, k))
    with np.errstate(invalid="ignore"):
        terms = L[:, None, :] + a_bar[:, :, None] * R[:, None, :]  # [m, c, j]
        M_bar = np.where(off_diag[:, None, :], terms, -np.inf).max(axis=2)
        base = M_bar + (1 - a_bar) * Wt + EU_q_err[:, None, None]  # [q, m, c]
        bound = np.full(G.shape, -np.inf)
        for a in (A_lo, A_hi):
            e = a - a_bar
            slope = np.where(e >= 0, R_max[:, None], R_min[:, None]) - Wt
            bound = np.maximum(bound, base + e * slope)
    all_max = np.where(off_diag, EUPU - np.diagonal(EUPU)[:, None] + R + PVOU_pess, -np.inf)
    bound[idx, idx, 0] = all_max.max(axis=1)
    scale = 2 * (np.abs(EUPU).max() + np.abs(EVOU).max() + np.abs(PVOU).max())
    return bound, scale + (2 * np.abs(EU_mean).max() + EU_q_err.max())
