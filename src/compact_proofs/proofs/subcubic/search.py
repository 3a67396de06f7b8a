"""Proof search for the sub-cubic family (SPEC §6.9): free, not part of the proof.

Shared per model: the size/query directions (top singular vectors of EQKE_bar), the second
directions, u_Q, u_K and W_EP_direction. Per configuration: the smallest gap per cell for
which the pipeline's bound is negative, with a scalar gap everywhere and the mean-position
query embedding W_E + Pbar (as the original does).
"""

from __future__ import annotations

import functools
import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from compact_proofs.proofs.subcubic.bounds import (
    INF,
    NEG_INF,
    SOUND,
    Variant,
    _max_slots,
    split_eu,
    subcubic_bounds,
)
from compact_proofs.proofs.subcubic.config import SubcubicConfig
from compact_proofs.proofs.subcubic.decompose import (
    Directions,
    QKDecomposition,
    Weights64,
    decompose_eqke,
    rowrange,
)

SEARCH_STEP = 8  # gaps evaluated together in the min-gap search (at most)
SEARCH_CELLS = 2**24  # and at most this many (gap, q, m, c) cells at once: bounded memory
CACHE_CELLS = 2**23  # floats kept across calls (EU-independent terms, oldest out first): 64 MiB
# the EU-independent terms of recent searches, shared by configurations that differ only in
# EU handling (the 100 configurations are 20 (error, attention) pairs x 5 EU handlings)
_SHARED: OrderedDict[tuple[Any, ...], dict[str, Tensor]] = OrderedDict()


def _top_left_singular(M: Tensor) -> Tensor:
    return torch.linalg.svd(M, full_matrices=False).U[:, 0]


def _unit(x: Tensor) -> Tensor:
    return x / torch.linalg.vector_norm(x).clamp(min=torch.finfo(x.dtype).tiny)


def find_directions(w: Weights64) -> Directions:
    """The shared search artefacts of SPEC §6.9."""
    E_q, E_bar = w.E_q, w.E_bar
    U, _, Vh = torch.linalg.svd(w.queries(E_q) @ (E_bar @ w.W_K).T)  # EQKE_bar, b_Q folded
    sign = 1.0 if float(U[:, 0].mean()) >= 0 else -1.0
    query_dir, key_dir = _unit(sign * U[:, 0]), _unit(sign * Vh[0])
    E_r = E_q - torch.outer(query_dir, query_dir @ E_q)
    E_bar_r = E_bar - torch.outer(key_dir, key_dir @ E_bar)
    W_EP = E_bar  # the original uses the mean position here, not the last one
    U_eu = torch.linalg.svd(W_EP @ w.W_U, full_matrices=False).U
    direction = U_eu[:, 0] @ W_EP
    minus = torch.linalg.vector_norm((W_EP - direction) @ w.W_U, dim=-1).mean()
    plus = torch.linalg.vector_norm((W_EP + direction) @ w.W_U, dim=-1).mean()
    if float(minus) > float(plus):
        direction = -direction
    return Directions(
        query_dir=query_dir,
        key_dir=key_dir,
        query_dir2=_unit(_top_left_singular(E_r)),
        key_dir2=_unit(_top_left_singular(E_bar_r)),
        u_Q=_unit(_top_left_singular(w.W_Q)),
        u_K=_unit(_top_left_singular(w.W_K)),
        W_EP_direction=direction,
    )


def _find_min_gaps_linear(
    w: Weights64,
    dirs: Directions,
    config: SubcubicConfig,
    variant: Variant = SOUND,
    qk: QKDecomposition | None = None,
) -> Tensor:
    """gaps[q, m, c] = the smallest g in 1..v-1 whose scalar-gap bound is negative, else 1.

    Gaps are evaluated a few at a time (each independently, so the result does not depend on
    how many); memory stays O(SEARCH_CELLS) whatever v and k are. `qk` overrides the
    configuration's EQKE decomposition (the structureless-noise experiment uses this).
    """
    v, k = w.W_E.shape[0], w.W_pos.shape[0]
    qk = decompose_eqke(w, dirs, config.error, config.route) if qk is None else qk
    best = torch.full((v, v, k), v, dtype=torch.int64, device=w.W_E.device)
    step = max(1, min(SEARCH_STEP, SEARCH_CELLS // (v * v * k)))
    for start in range(1, v, step):
        grid = torch.arange(start, min(start + step, v), device=w.W_E.device)
        # a gap g >= start leaves no room below max tokens m < start: skip those cells
        B, _ = subcubic_bounds(
            w,
            qk,
            grid[:, None, None, None],
            w.E_bar,
            config.eu,
            dirs.W_EP_direction,
            config.uses_mean_diff,
            variant,
            m_start=start,
        )
        candidates = torch.where(B < 0, grid[:, None, None, None], v).amin(dim=0)
        best[:, start:] = torch.minimum(best[:, start:], candidates)
    return torch.where(best < v, best, 1)


def find_min_gaps(
    w: Weights64,
    dirs: Directions,
    config: SubcubicConfig,
    variant: Variant = SOUND,
    qk: QKDecomposition | None = None,
) -> Tensor:
    """gaps[q, m, c] = the smallest g in 1..v-1 whose scalar-gap bound is negative, else 1.

    The same result as the linear scan `_find_min_gaps_linear` (the same float operations on
    every cell that scan decides), evaluated only on the cells (g, q, m, c) that a scalar gap
    g makes valid with c >= 1 (about v^3 k / 6 of them, not v^3 k); the all-max cells
    (q = m, c = 0) need no gap, and get 1 either way. Gaps are taken in chunks holding at
    most SEARCH_CELLS dense cells (g, q, m, c), so memory is O(SEARCH_CELLS + v^2 + v d)
    floats whatever the weights' values. `qk` overrides the configuration's EQKE
    decomposition (the structureless-noise experiment uses this).
    """
    v, k = w.W_E.shape[0], w.W_pos.shape[0]
    qk = decompose_eqke(w, dirs, config.error, config.route) if qk is None else qk
    plain = all(isinstance(t, Tensor) for t in (qk.EQKE_hat, qk.pos_err, qk.err_bound))
    if not plain or not isinstance(w.attn_scale, float) or k < 2 or v < 2:
        return _find_min_gaps_linear(w, dirs, config, variant, qk)
    terms = _model_terms(w, dirs, config, qk)
    best = torch.full((v * v * k,), v, dtype=torch.int64, device=w.W_E.device)
    step = max(1, SEARCH_CELLS // (v * v * k))
    for start in range(1, v, step):
        chunk = _chunk_cells(v, start, min(start + step, v), w.W_E.device)
        B = _chunk_bounds(w, qk, terms, chunk, config.uses_mean_diff, variant)
        grid = torch.where(B < 0, chunk.g[:, None], v)
        index = (chunk.q * v + chunk.m)[:, None] * k + torch.arange(1, k, device=B.device)
        best.scatter_reduce_(0, index.flatten(), grid.flatten(), "amin")
    best = best.view(v, v, k)
    return torch.where(best < v, best, 1)


@dataclass(frozen=True)
class _Chunk:
    """The valid cells with c >= 1 of gaps start..stop-1, as flat (g, q, m) triples (each
    with the k - 1 counts c >= 1), and their (g, m) pairs (m >= g)."""

    start: int
    g: Tensor  # [N]
    q: Tensor
    m: Tensor
    pair: Tensor  # [N] index into the pairs
    pair_g: Tensor  # [P]
    pair_m: Tensor


@functools.lru_cache(maxsize=4)
def _chunk_cells(v: int, start: int, stop: int, device: torch.device) -> _Chunk:
    g = torch.arange(start, stop, device=device)[:, None, None]
    m = torch.arange(v, device=device)[None, :, None]
    q = torch.arange(v, device=device)[None, None, :]
    triples = (m >= g) & ((q <= m - g) | (q == m))  # [g, m, q]
    pairs = (m >= g)[..., 0]  # [g, m]
    pair_id = (pairs.flatten().cumsum(0) - 1).view(pairs.shape)
    gi, mi, qi = triples.nonzero(as_tuple=True)
    pg, pm = pairs.nonzero(as_tuple=True)
    return _Chunk(start, gi + start, qi, mi, pair_id[gi, mi], pg + start, pm)


def _log_ratio(pos_err: Tensor, attn_scale: float) -> Tensor:
    """log_ratio[ordering, q==m, q, c] exactly as bounds.extreme_attention computes it."""
    v, k = pos_err.shape
    pos = (pos_err - pos_err[:, -1:]) / attn_scale
    ascending = pos[:, : k - 1].sort(dim=-1).values
    query_slot = torch.zeros(v, 1, dtype=torch.float64, device=pos.device)
    slots = torch.stack(
        [torch.cat([order, query_slot], dim=-1) for order in (ascending, ascending.flip(-1))]
    )
    on = _max_slots(k, pos.device)[None, :, :, None, :]
    X = slots[:, None, None, :, :]
    on_max = torch.where(on, X, NEG_INF).logsumexp(dim=-1)
    off_max = torch.where(on, NEG_INF, X).logsumexp(dim=-1)
    return (on_max - off_max).permute(0, 1, 3, 2)


def _model_terms(
    w: Weights64, dirs: Directions, config: SubcubicConfig, qk: QKDecomposition
) -> dict[str, Any]:
    """The configuration's gap-independent tables, as bounds.subcubic_bounds and
    largest_wrong_logit compute them, and the key of everything the EU-independent part
    depends on (qk, attn_scale, EVOU: a digest of their values)."""
    v = w.W_E.shape[0]
    eye = torch.eye(v, dtype=torch.bool, device=w.W_E.device)
    OU = w.W_O @ w.W_U
    EVOU = w.W_E @ (w.W_V @ OU)
    PVOU = w.W_pos @ (w.W_V @ OU)
    value_bias, direct_bias = w.value_bias(OU), w.direct_bias()
    if value_bias is not None:
        PVOU = PVOU + value_bias
    EU_mean, EU_q_err = split_eu(w.E_bar, w.W_U, config.eu, dirs.W_EP_direction, direct_bias)
    PVOU_pess = (PVOU[:, None, :] - PVOU[:, :, None]).amax(dim=0)
    R = EVOU - EVOU.diagonal()[:, None]
    digest = hashlib.blake2b(repr((w.attn_scale, EVOU.device)).encode())
    for t in (qk.EQKE_hat, qk.pos_err, qk.err_bound, EVOU):
        digest.update(repr((tuple(t.shape), t.dtype)).encode())
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return {
        "key": digest.hexdigest(),
        "eye": eye,
        "L": (EU_mean[None, :] - EU_mean[:, None]) + PVOU_pess,
        "R": R,
        "R_max": R.masked_fill(eye, -INF).amax(dim=-1),
        "R_min": R.masked_fill(eye, INF).amin(dim=-1),
        "W_run": rowrange(EVOU).cummax(dim=0).values,
        "EU_q_err": EU_q_err,
    }


def _chunk_bounds(
    w: Weights64,
    qk: QKDecomposition,
    terms: dict[str, Tensor],
    chunk: _Chunk,
    mean_diff: bool,
    variant: Variant,
) -> Tensor:
    """B[n, c - 1] of bounds.subcubic_bounds on the chunk's cells, by the same float
    operations (largest_wrong_logit with the scalar gap g: g_min = g, W = W_run[m - g]),
    except that max(base + X_lo, base + X_hi) < 0 is decided as base + max(X_lo, X_hi) < 0:
    rounding is monotone and keeps the sign of an exact sum, so the decision is the same."""
    key = (terms["key"], chunk.start, chunk.g.shape[0], mean_diff, variant)
    shared = _SHARED.get(key)
    if shared is None:
        shared = _attention_terms(w, qk, terms, chunk, mean_diff, variant)
        _SHARED[key] = shared
        while sum(s["T"].numel() for s in _SHARED.values()) > CACHE_CELLS and len(_SHARED) > 1:
            del _SHARED[next(iter(_SHARED))]
    a_bar_p, pm = shared["a_bar_p"], chunk.pair_m
    M_bar = (
        (terms["L"][pm][:, None, :] + a_bar_p[..., None] * terms["R"][pm][:, None, :])
        .masked_fill(terms["eye"][pm][:, None, :], -INF)
        .amax(dim=-1)
    )
    W_p = terms["W_run"][pm - chunk.pair_g][:, None]
    base = (M_bar + (1 - a_bar_p) * W_p)[chunk.pair] + terms["EU_q_err"][chunk.q][:, None]
    return base + shared["T"]


def _attention_terms(
    w: Weights64,
    qk: QKDecomposition,
    terms: dict[str, Tensor],
    chunk: _Chunk,
    mean_diff: bool,
    variant: Variant,
) -> dict[str, Tensor]:
    """The EU-independent part: a_bar per pair and T with B = base + T (as
    extreme_pre_softmax_diffs, extreme_attention and largest_wrong_logit compute them)."""
    g, q, m = chunk.g, chunk.q, chunk.m
    E, at = qk.EQKE_hat, m - g
    own, err = E[q, m], qk.err_bound[q]
    D_lo = (own - E.cummax(dim=-1).values[q, at]) - err
    D_hi = (own - E.cummin(dim=-1).values[q, at]) + err
    eq = (q == m)[:, None]
    log_ratio = _log_ratio(qk.pos_err, w.attn_scale)
    A_lo, A_hi = (
        torch.sigmoid(
            D[:, None] / w.attn_scale
            + torch.where(eq, log_ratio[o, 1][q, 1:], log_ratio[o, 0][q, 1:])
        )
        for o, D in enumerate((D_lo, D_hi))
    )
    W = terms["W_run"][at][:, None]
    R_max, R_min = terms["R_max"][m][:, None], terms["R_min"][m][:, None]
    a_sel = torch.where(R_max >= W, A_hi, A_lo)
    a_bar_p = _pair_a_bar(a_sel, chunk, w.W_E.shape[0], mean_diff)
    a_bar_q = a_bar_p[chunk.pair]
    if not variant.sound_mean_diff:
        return {"a_bar_p": a_bar_p, "T": (a_sel - a_bar_q) * (R_max - W)}
    X = []
    for a in (A_lo, A_hi):
        e = a - a_bar_q
        X.append(torch.maximum(e * (R_max - W), e * (R_min - W)))
    return {"a_bar_p": a_bar_p, "T": torch.maximum(*X)}


def _pair_a_bar(a_sel: Tensor, chunk: _Chunk, v: int, mean_diff: bool) -> Tensor:
    """a_bar per (g, m) pair [P, k - 1] (mean of a_sel over the valid queries, summed over a
    dense [g, q, m, c] table as largest_wrong_logit sums it), or zeros [P, 1]."""
    P = chunk.pair_g.shape[0]
    if not mean_diff:
        return torch.zeros(P, 1, dtype=torch.float64, device=a_sel.device)
    k = a_sel.shape[1] + 1
    stop = int(chunk.pair_g.max()) + 1
    dense = torch.zeros(stop - chunk.start, v, v, k, dtype=torch.float64, device=a_sel.device)
    dense[chunk.g - chunk.start, chunk.q, chunk.m, 1:] = a_sel
    sums = dense.sum(dim=1)  # [g, m, c]
    n_valid = chunk.pair_m - chunk.pair_g + 2  # q in 0..m-g, and q = m
    return sums[chunk.pair_g - chunk.start, chunk.pair_m, 1:] / n_valid[:, None]
