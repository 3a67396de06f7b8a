"""Proof search for the sub-cubic family (SPEC §6.9): free, not part of the proof.

Shared per model: the size/query directions (top singular vectors of EQKE_bar), the second
directions, u_Q, u_K and W_EP_direction. Per configuration: the smallest gap per cell for
which the pipeline's bound is negative, with a scalar gap everywhere and the mean-position
query embedding W_E + Pbar (as the original does).
"""

from __future__ import annotations

import torch
from torch import Tensor

from compact_proofs.proofs.subcubic.bounds import SOUND, Variant, subcubic_bounds
from compact_proofs.proofs.subcubic.config import SubcubicConfig
from compact_proofs.proofs.subcubic.decompose import (
    Directions,
    QKDecomposition,
    Weights64,
    decompose_eqke,
)

SEARCH_STEP = 8  # gaps evaluated together in the min-gap search (at most)
SEARCH_CELLS = 2**24  # and at most this many (gap, q, m, c) cells at once: bounded memory


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


def find_min_gaps(
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
