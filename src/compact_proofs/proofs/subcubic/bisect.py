"""Min-gap search by bisection, for the configurations whose bound is monotone in the gap.

Proof search (free, not part of any proof): the result must equal the linear scan's
(search._find_min_gaps_linear: per cell (q, m, c), the smallest gap g whose float bound B(g)
is negative), and does, by the argument below, in O(v^2 k log v) evaluations instead of
O(v^3 k).

Without mean_diff (a_bar = 0) and with the sound rule, the search evaluates for cell (q, m, c)
    B(g) = M_bar[m] + EU_q_err[q] + max_{A in {A_lo(g), A_hi(g)}} W + max(A R_max_W, A R_min_W)
with R_max_W = R_max[m] - W, R_min_W = R_min[m] - W,
W = W_run[m - g] and A_o(g) = sigmoid(D_o(g) / scale + lr_o[q, c]),
D_lo = E[q, m] - cummax_j E[q, j][m - g] - err[q], D_hi = E[q, m] - cummin(...)[m - g] + err[q].
Let B*(g) be that formula in exact real arithmetic on the same float tables, with lr_hi
replaced by max(lr_lo, lr_hi) (they are ordered in exact arithmetic; the float tables may
differ from that by Delta, a few units in the last place). Then B* is non-increasing in g:
  * A >= 0 and R_max >= R_min, so the inner max is A (R_max - W) and each term is
    f(A, W) = (1 - A) W + A R_max, linear in A, non-decreasing in W (A <= 1);
  * W_run is a running max, so W(g) is non-increasing in g;
  * the cummax at m - g shrinks and the cummin grows as g grows, so A_lo(g) rises and
    A_hi(g) falls; with err >= 0 and lr_lo <= lr_hi, A_lo(g) <= A_hi(g), so the intervals
    [A_lo(g), A_hi(g)] are nested, and the max of a linear f over an interval is the max at
    its ends: B*(g + 1) <= max over the smaller interval of f(A, W(g)) <= B*(g).
The float B(g) of any evaluation order is within EPS of B*(g): the float arguments of the
sigmoids are within ~1e-15 of their magnitudes of the exact ones, the sigmoid is 1/4-Lipschitz
and within a few ulps, Delta moves A_hi by at most Delta / 4, and the remaining products and
sums round a few times (~1e-15 of the tables' magnitudes); EPS allows 1e-9 of them, plus
Delta times them. Hence, with a bisection that ends at lo + 1 = hi:
  * B(hi) < -2 EPS and (lo = 0 or B(lo) >= 2 EPS): every g <= lo has B*(g) >= EPS, so B(g) >= 0,
    and B(hi) < 0 however evaluated: the linear scan's answer is hi;
  * B(G) >= 2 EPS at the largest valid gap G: no gap is negative: the answer is "none";
  * anything else (a bound within 2 EPS of 0 where it matters): the cell is scanned linearly.
Any other configuration (mean_diff: a_bar averages the queries, which depend on g; the
original's rule; a table that is not finite; err < 0; Delta above 1e-9 of lr's magnitude;
an EPS that overflows) is not bisected.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from compact_proofs.proofs.subcubic.decompose import QKDecomposition

NEG_INF = float("-inf")
EPS_REL = 1e-9  # EPS relative to the tables' magnitudes (the float error is ~1e-15 of them)
BLOCK = 2**19  # cells bisected at once: memory O(BLOCK) floats whatever v, k and the values
NONE = -1  # a cell with no negative gap
# a bisection round costs about this many linear-scan evaluations per cell (measured: the
# scan shares its work between the five EU handlings and reuses its cell layout); with it
# the linear scan is kept at v = 64 and v = 128 (where it is as fast or faster) and
# bisection chosen at v = 512 (5x faster there)
COST_RATIO = 8
MIN_SCAN = 2**20  # and a linear scan this short (a few ms) beats bisection's fixed cost per round


class _Tables:
    """The float tables B(g) reads, per cell (q, m, c), as the linear scan computes them."""

    def __init__(self, qk: QKDecomposition, terms: dict[str, Any], attn_scale: float) -> None:
        E = qk.EQKE_hat.contiguous()
        self.v = E.shape[0]
        self.E = E.view(-1)
        self.cummax = E.cummax(dim=-1).values.view(-1)
        self.cummin = E.cummin(dim=-1).values.view(-1)
        self.err, self.scale = qk.err_bound, attn_scale
        self.lr = [lr.reshape(-1) for lr in terms["log_ratio"]]  # [((q == m) v + q, c >= 1)]
        self.counts = terms["log_ratio"][0].shape[1]  # k - 1
        self.W_run, self.R_max, self.R_min = terms["W_run"], terms["R_max"], terms["R_min"]
        self.EU_q_err = terms["EU_q_err"]
        # the scan's max over j != m of L + a_bar R with a_bar = 0: 0 R = 0 on finite tables
        self.M_bar = terms["L"].masked_fill(terms["eye"], NEG_INF).amax(dim=-1)

    def monotone(self) -> bool:
        """The premises of the module docstring's argument (else: no bisection)."""
        tables = (self.E, self.err, *self.lr, self.W_run, self.R_max, self.R_min)
        tables += (self.EU_q_err, self.M_bar)
        if self.v < 2 or not self.scale > 0:
            return False
        if not all(bool(torch.isfinite(t).all()) for t in tables):
            return False
        return bool((self.err >= 0).all()) and self._delta() <= EPS_REL * (1 + self._top(*self.lr))

    def _delta(self) -> float:
        """Delta: how far the float lr_lo exceeds lr_hi anywhere (0 if nowhere)."""
        return max(float((self.lr[0] - self.lr[1]).max()), 0.0)

    @staticmethod
    def _top(*tables: Tensor) -> float:
        return sum(float(t.abs().max()) for t in tables)

    def eps(self) -> float:
        """EPS of the module docstring: 1e-9 of the bound's terms' magnitudes, scaled by the
        sigmoid arguments' magnitude, plus Delta times the terms' magnitudes."""
        terms = self._top(self.M_bar, self.EU_q_err, self.W_run, self.W_run, self.R_max, self.R_min)
        args = (2 * self._top(self.E) + self._top(self.err)) / self.scale + self._top(*self.lr)
        return EPS_REL * (1 + terms) * (1 + args) + self._delta() * terms

    def bounds(self, q: Tensor, m: Tensor, c: Tensor, g: Tensor) -> Tensor:
        """B(g) [n] of cells (q, m, c) at gaps g [n], with the same float values as the linear
        scan (search._attention_terms and search._chunk_bounds without mean_diff, whose
        a_bar = 0 terms are exact no-ops on the finite tables `monotone` requires)."""
        v, at = self.v, m - g
        own, err = self.E.index_select(0, q * v + m), self.err.index_select(0, q)
        D_lo = (own - self.cummax.index_select(0, q * v + at)) - err
        D_hi = (own - self.cummin.index_select(0, q * v + at)) + err
        slot = (q + v * (q == m)) * self.counts + (c - 1)
        A_lo, A_hi = (
            torch.sigmoid(D / self.scale + lr.index_select(0, slot))
            for D, lr in ((D_lo, self.lr[0]), (D_hi, self.lr[1]))
        )
        W = self.W_run.index_select(0, at)
        R_max_W = self.R_max.index_select(0, m) - W
        R_min_W = self.R_min.index_select(0, m) - W
        X = [torch.maximum(a * R_max_W, a * R_min_W) for a in (A_lo, A_hi)]
        base = (self.M_bar.index_select(0, m) + W) + self.EU_q_err.index_select(0, q)
        return base + torch.maximum(*X)


def bisect_min_gaps(
    qk: QKDecomposition, terms: dict[str, Any], attn_scale: float, live: Tensor, best: Tensor
) -> bool:
    """If the bound is monotone in the gap (module docstring), write into `best` [v * v * k]
    (flat (q, m, c), initially v) the linear scan's smallest negative gap of every live cell
    (live [v(q), v(m)]) and return True; else (not monotone, or the linear scan would be
    cheaper: COST_RATIO, MIN_SCAN) leave `best` and return False. Memory: O(v^2 k) integers
    for the cells, and O(BLOCK + v) floats at once (BLOCK cells bisected, or about BLOCK gaps
    of the cells scanned linearly), whatever the weights' values."""
    v = live.shape[0]
    k = best.numel() // (v * v)
    if v**3 * (k - 1) < MIN_SCAN:  # an upper bound on the linear scan's evaluations
        return False
    q, m = _cells(live, best.device)
    G = torch.where(q == m, m, m - q)  # the largest valid gap of each cell
    scan = int(G.sum()) * (k - 1)  # the linear scan's evaluations
    rounds = int(G.max()).bit_length() + 1 if q.numel() else 0
    if scan < MIN_SCAN or scan <= COST_RATIO * q.numel() * (k - 1) * rounds:
        return False
    t = _Tables(qk, terms, attn_scale)
    eps = t.eps() if t.monotone() else math.nan
    if not math.isfinite(eps):  # (magnitudes near the float range's end: no margin to speak of)
        return False
    n = q.numel()
    q, m = q.repeat_interleave(k - 1), m.repeat_interleave(k - 1)
    c = torch.arange(1, k, device=best.device).repeat(n)
    for start in range(0, q.numel(), BLOCK):
        block = slice(start, start + BLOCK)
        gaps = _bisect_block(t, q[block], m[block], c[block], eps)
        found = gaps != NONE
        index = (q[block] * v + m[block]) * k + c[block]
        best.index_put_((index[found],), gaps[found])
    return True


def _cells(live: Tensor, device: torch.device) -> tuple[Tensor, Tensor]:
    """(q, m) of the live cells with q <= m and m >= 1 (q = m = 0 has no gap)."""
    v = live.shape[0]
    upper = torch.arange(v)[:, None] <= torch.arange(v)[None, :]
    q, m = (live & upper.to(live.device)).nonzero(as_tuple=True)
    keep = m >= 1
    return q[keep].to(device), m[keep].to(device)


def _bisect_block(t: _Tables, q: Tensor, m: Tensor, c: Tensor, eps: float) -> Tensor:
    """The linear scan's answer (a gap, or NONE) for each cell (q, m, c)."""
    G = torch.where(q == m, m, m - q)  # the largest valid gap
    B_G = t.bounds(q, m, c, G)
    out = torch.full_like(q, NONE)
    unsure = (2 * eps > B_G) & (-2 * eps <= B_G)
    go = -2 * eps > B_G
    lo, hi = torch.zeros_like(G), G.clone()
    B_lo = torch.full_like(B_G, float("inf"))
    B_hi = B_G.clone()
    active = go & (hi - lo > 1)
    while bool(active.any()):
        idx = active.nonzero().flatten()
        mid = (lo[idx] + hi[idx]) // 2
        B_mid = t.bounds(q[idx], m[idx], c[idx], mid)
        left = B_mid < 0
        hi[idx] = torch.where(left, mid, hi[idx])
        B_hi[idx] = torch.where(left, B_mid, B_hi[idx])
        lo[idx] = torch.where(left, lo[idx], mid)
        B_lo[idx] = torch.where(left, B_lo[idx], B_mid)
        active = go & (hi - lo > 1)
    sure = go & (B_hi < -2 * eps) & ((lo == 0) | (B_lo >= 2 * eps))
    out[sure] = hi[sure]
    unsure |= go & ~sure
    if bool(unsure.any()):
        idx = unsure.nonzero().flatten()
        out[idx] = _linear(t, q[idx], m[idx], c[idx], G[idx])
    return out


def _linear(t: _Tables, q: Tensor, m: Tensor, c: Tensor, G: Tensor) -> Tensor:
    """The smallest g in 1..G with B(g) < 0 per cell, or NONE: every gap evaluated, for
    groups of cells of about BLOCK gaps together (at most 2 BLOCK evaluations at once)."""
    out = torch.full_like(q, NONE)
    before = torch.cumsum(G, 0) - G  # gaps of the cells before each
    group = before // BLOCK
    bounds = torch.searchsorted(group, torch.arange(int(group[-1]) + 2, device=q.device))
    for start, stop in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        if start == stop:
            continue
        Gs = G[start:stop]
        cell = torch.arange(stop - start, device=q.device).repeat_interleave(Gs)
        g = (
            torch.arange(cell.numel(), device=q.device)
            - (before[start:stop] - before[start])[cell]
            + 1
        )
        B = t.bounds(q[start:stop][cell], m[start:stop][cell], c[start:stop][cell], g)
        never = torch.iinfo(g.dtype).max
        first = torch.full_like(Gs, never).scatter_reduce(
            0, cell, torch.where(B < 0, g, never), "amin"
        )
        out[start:stop] = torch.where(first <= Gs, first, NONE)
    return out
