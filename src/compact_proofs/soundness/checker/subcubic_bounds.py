"""The sub-cubic proofs' bounds on the attention score error (routes A, B, C of SPEC §6.4)
and on the direct path (SPEC §6.7.1). Any direction vectors make these bounds true."""

from __future__ import annotations

from math import sqrt

import numpy as np

SIGMA_SQUARINGS = 8  # sigma_1 <= trace(S^p)^(1/2p), p = 2^8


def rowrange(M: np.ndarray) -> np.ndarray:
    return M.max(axis=-1) - M.min(axis=-1)


def sigma1_upper_bound(X: np.ndarray, Y: np.ndarray) -> float:
    """sigma_1(X Y) <= trace(S^p)^(1/2p), S = (R Y)(R Y)^T with X = Q R (so S is the PSD
    d x d matrix with the eigenvalues of (X Y)^T (X Y) that are non-zero), p = 2^8: the trace
    of a PSD power bounds its largest eigenvalue. Powers by repeated squaring, renormalised,
    with the log of the scale carried separately."""
    M = np.linalg.qr(X, mode="r") @ Y
    S = M @ M.T
    norm = np.linalg.norm(S)
    if norm == 0.0:
        return 0.0
    S, log_scale = S / norm, np.log(norm)
    for _ in range(SIGMA_SQUARINGS):
        S = S @ S
        norm = np.linalg.norm(S)
        S, log_scale = S / norm, 2 * log_scale + np.log(norm)
    p = 2**SIGMA_SQUARINGS
    return float(np.exp((np.log(max(np.trace(S), np.finfo(float).tiny)) + log_scale) / (2 * p)))


def _product_bound(X: np.ndarray, Y: np.ndarray, mean: bool) -> np.ndarray:
    """rowrange(X Y)[r] <= sum_i |X[r,i]| rowrange(Y)[i]; with `mean`, splitting off the mean
    row xbar of X: <= rowrange(xbar Y) + sum_i |X[r,i] - xbar_i| rowrange(Y)[i]."""
    if not mean:
        return np.abs(X) @ rowrange(Y)
    xbar = X.mean(axis=0)
    return np.ptp(xbar @ Y) + np.abs(X - xbar) @ rowrange(Y)


def _chain_bound(F: list[np.ndarray], err: str) -> np.ndarray:
    """Bound on rowrange(F0 F1 F2 F3) by the route-B option `err` (SPEC §6.4)."""
    if err.endswith("subproduct"):  # min over the three split points of the 2-factor bound
        mean = err.startswith("mean")
        splits = [(F[0], F[1] @ F[2] @ F[3]), (F[0] @ F[1], F[2] @ F[3]),
                  (F[0] @ F[1] @ F[2], F[3])]  # fmt: skip
        return np.min([_product_bound(L, R, mean) for L, R in splits], axis=0)
    mean_levels = {"max_diff_subproduct_recursive": 0, "mean+max_diff_subproduct_recursive": 1,
                   "mean_recursive+max_diff_subproduct_recursive": 3}[err]  # fmt: skip
    bound = rowrange(F[3])  # bound_i >= rowrange(F_i ... F_3), built right to left
    for i in (2, 1, 0):
        if i < mean_levels:
            row = xbar = F[i].mean(axis=0)
            for f in F[i + 1 :]:
                row = row @ f
            bound = np.ptp(row) + np.abs(F[i] - xbar) @ bound
        else:
            bound = np.abs(F[i]) @ bound
    return bound


def eqke_decomposition(
    W: dict[str, np.ndarray], dirs: dict[str, np.ndarray], err: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(EQKE_hat [v,v], err_bound [v], pos_err [v,k]) with, for every query q, key token t and
    position p, score = EQKE_bar[q,t] + pos_err[q,p] and
    err_bound[q] >= rowrange(EQKE_bar - EQKE_hat)[q], EQKE_bar = EQ W_K^T Ebar^T,
    pos_err = EQ ((W_pos - Pbar) W_K + b_K)^T, EQ = E_q W_Q + b_Q (the queries),
    E_q = W_E + P_{k-1}, Ebar = W_E + mean_p P_p.

    Biases as in paths.py: b_Q in the queries and b_K in the positional keys make the score
    identity exact (EQKE_bar + pos_err = EQKE + EQKP). Route A factors EQKE_bar = A B with
    A = EQ W_K^T, so its error terms and bounds are those of the biased factor; route B's
    error is the peeled product of the weights alone, E_rr Q_r K_r^T Ebar_rr^T, and EQKE_hat
    = EQKE_bar - that product carries b_Q's term 1 (b_Q W_K^T Ebar^T) exactly."""
    E_q, P_mean = W["W_E"] + W["W_pos"][-1], W["W_pos"].mean(axis=0)
    E_bar = W["W_E"] + P_mean
    EQ = E_q @ W["W_Q"] + W["b_Q"]  # [v, d_head]
    pos_err = EQ @ ((W["W_pos"] - P_mean) @ W["W_K"] + W["b_K"]).T
    EQKE_bar = EQ @ (E_bar @ W["W_K"]).T
    if err == "exact_EQKE+max_diff_exact":  # route C
        return EQKE_bar, np.zeros(len(E_q)), pos_err
    if err in ("svd", "max_diff", "mean+max_diff", "max_diff_exact"):  # route A: rank 1
        u, w = dirs["query_dir"], dirs["key_dir"]
        A, B = EQ @ W["W_K"].T, E_bar.T  # EQKE_bar = A B
        uA, Bw = u @ A, B @ w
        hat = (uA @ Bw) * np.outer(u, w)  # (u u^T A)(B w w^T)
        if err == "max_diff_exact":
            return hat, rowrange(EQKE_bar - hat), pos_err
        # A B - hat = A_r B_r + (u u^T A) B_r + A_r (B w w^T): bound each row range
        A_r, B_r = A - np.outer(u, uA), B - np.outer(Bw, w)
        cross = np.abs(u) * np.ptp(uA @ B_r) + np.abs(A_r @ Bw) * np.ptp(w)
        if err == "svd":  # |e_r^T E (e_a - e_b)| <= sqrt(2) sigma_1(E)
            main = np.full(len(u), sqrt(2) * sigma1_upper_bound(A_r, B_r))
        else:
            main = _product_bound(A_r, B_r, mean=err == "mean+max_diff")
        return hat, main + cross, pos_err

    # route B: peel a direction z off M as M = z (z^T M) + rest, six times
    def rest(z: np.ndarray, M: np.ndarray) -> np.ndarray:
        return M - np.outer(z, z @ M)

    E_rr = rest(dirs["query_dir2"], rest(dirs["query_dir"], E_q))
    Eb_rr = rest(dirs["key_dir2"], rest(dirs["key_dir"], E_bar))
    Q_r, K_r = rest(dirs["u_Q"], W["W_Q"]), rest(dirs["u_K"], W["W_K"])
    F = [E_rr, Q_r, K_r.T, Eb_rr.T]  # the error term; the nine other terms of the expansion
    return EQKE_bar - F[0] @ F[1] @ F[2] @ F[3], _chain_bound(F, err), pos_err  # sum to hat


def split_eu(E: np.ndarray, W_U: np.ndarray, eu: str, direction: np.ndarray, bias: np.ndarray):
    """(EU_mean [v], EU_q_err [v]): EUPU[q,j] - EUPU[q,m] <= EU_mean[j] - EU_mean[m]
    + EU_q_err[q] for all q, j, m, where EUPU = E W_U + bias (SPEC §6.7.1), bias = b_O W_U +
    b_U the same in every row: the exact options take the row ranges of the biased EUPU, the
    others add bias to EU_mean (its differences are exact) and bound E W_U as without it."""
    zero = np.zeros(len(E))
    if eu == "max_diff_exact":
        return zero, rowrange(E @ W_U + bias)
    if eu == "global_max_diff_exact":
        return zero, zero + np.ptp(E @ W_U + bias)
    if eu == "max_diff":
        return bias, np.abs(E) @ rowrange(W_U)
    center = E.mean(axis=0) if eu == "mean_query+max_diff" else direction
    return center @ W_U + bias, np.abs(E - center) @ rowrange(W_U)
