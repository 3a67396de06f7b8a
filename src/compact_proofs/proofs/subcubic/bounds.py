"""The sub-cubic pipeline on cells with gaps (SPEC §6.2, §6.5–§6.8), vectorised.

Cells. An input with query q and max m lies in cell (q, m, c), c = number of positions holding
a token != m (the query included when q != m). A gap g = gaps[q, m, c] >= 1 restricts the cell
to inputs whose non-max tokens (and the query, if q != m) are all <= m - g. Valid cells:
q <= m; if q != m: c >= 1 and m - q >= g; if q = m and c >= 1: m >= g.

Every function accepts `gaps` as an integer tensor broadcastable to [..., v(q), v(m), k(c)],
so proof search can evaluate all scalar gaps at once (leading batch dimension).

Soundness departures from the original (docs/method.md):
* mean+diff (SPEC §11.2): with a = abar + e, max_j (L[j] + a R[j]) <= Mbar + e R_max only for
  e >= 0; for e < 0 we use e R_min. The bound is then convex piecewise-linear in a, so it is
  evaluated at both attention extremes A_lo, A_hi and the larger value is used.
* counting (SPEC §11.3): a gap g leaves m - g + 1 token values 0..m-g, not m - g.

Rigorous mode: the same code runs on `Interval`s (soundness.interval), enclosing the exact
real value of every bound; choices that any outcome keeps sound (which attention extreme feeds
the mean a_bar, a_bar itself) are made on midpoints, and a cell counts only if its interval
lies below 0 (docs/soundness.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb

import torch
from torch import Tensor

from compact_proofs.proofs.flops import charge, uncounted
from compact_proofs.proofs.subcubic.decompose import QKDecomposition, Weights64, rowrange
from compact_proofs.soundness import interval as iv
from compact_proofs.soundness.interval import Interval, Num

INF = float("inf")
NEG_INF = float("-inf")


@dataclass(frozen=True)
class Variant:
    """Sound (default) or the original's unsound rules — the latter only to reproduce the
    reference implementation's numbers in tests; never used by a strategy."""

    sound_mean_diff: bool = True
    count_extra: int = 1  # token choices per gap: m - g + count_extra


SOUND = Variant()
ORIGINAL = Variant(sound_mean_diff=False, count_extra=0)


@dataclass(frozen=True)
class CellIndex:
    """Broadcastable index tensors over (q, m, c) and the validity mask."""

    q: Tensor  # [v, 1, 1]
    m: Tensor  # [1, v, 1]
    c: Tensor  # [1, 1, k]
    valid: Tensor  # [..., v, v, k]


def cell_index(gaps: Tensor, v: int, k: int, m_start: int = 0) -> CellIndex:
    """Index tensors over cells (q, m, c) with m in m_start..v-1 (search skips max tokens
    that no gap of a chunk can serve); verification uses every m."""
    device = gaps.device
    q = torch.arange(v, device=device)[:, None, None]
    m = torch.arange(m_start, v, device=device)[None, :, None]
    c = torch.arange(k, device=device)[None, None, :]
    off = (q < m) & (c >= 1) & (m - q >= gaps)
    on = (q == m) & ((c == 0) | (m >= gaps))
    return CellIndex(q=q, m=m, c=c, valid=off | on)


def split_eu(
    E: Num, W_U: Num, handling: str, direction: Tensor, bias: Num | None = None
) -> tuple[Num, Num]:
    """(EU_mean [v], EU_q_err [v]) with EUPU[q,j] - EUPU[q,m] <= EU_mean[j] - EU_mean[m]
    + EU_q_err[q] for every q, j, m, where EUPU = E W_U + bias (SPEC §6.7.1).

    bias = b_O W_U + b_U (None: zero) is the same in every query row, so its differences
    bias[j] - bias[m] are exact: the exact options take the row ranges of the biased EUPU
    (as paths.py computes it); the others add bias to EU_mean, leaving EU_q_err (which bounds
    the deviation of E W_U from center W_U) unchanged."""
    v = E.shape[0]
    zeros = torch.zeros(v, dtype=E.dtype, device=E.device)
    if handling in ("max_diff_exact", "global_max_diff_exact"):
        EUPU = E @ W_U if bias is None else E @ W_U + bias
        if handling == "max_diff_exact":
            return zeros, rowrange(EUPU)
        return zeros, (EUPU.amax(dim=(0, 1)) - EUPU.amin(dim=(0, 1))) * torch.ones_like(zeros)
    if handling == "max_diff":
        mean, err = zeros, E.abs() @ rowrange(W_U)
    else:
        center = E.mean(dim=0) if handling == "mean_query+max_diff" else direction
        mean, err = center @ W_U, (E - center).abs() @ rowrange(W_U)
    return (mean if bias is None else mean + bias), err


@dataclass(frozen=True)
class GapFreeTables:
    """What the pipeline needs before it reads the gaps or the EU handling: a function of the
    weights and the EQKE decomposition alone (a lemma of the configurations that share them,
    proofs.lemmas)."""

    hi: Num  # [q, t] = max_{t' <= t} EQKE_hat[q, t']
    lo: Num  # [q, t] = min_{t' <= t} EQKE_hat[q, t']
    log_ratio: Num  # [ordering, q == m, q, c]: slot_log_ratio
    EVOU: Num  # [v, v]
    PVOU: Num  # [k, v]: (W_pos W_V + b_V) W_O W_U


def gap_free_tables(w: Weights64, qk: QKDecomposition) -> GapFreeTables:
    """The tables of GapFreeTables, in the arithmetic of w and qk."""
    OU = w.W_O @ w.W_U
    PVOU = w.W_pos @ (w.W_V @ OU)
    value_bias = w.value_bias(OU)
    if value_bias is not None:  # (W_pos W_V + b_V) W_O W_U: sum_p alpha_p = 1
        PVOU = PVOU + value_bias
    return GapFreeTables(
        hi=iv.running_max(qk.EQKE_hat, dim=-1),
        lo=iv.running_min(qk.EQKE_hat, dim=-1),
        log_ratio=slot_log_ratio(qk.pos_err, w.attn_scale),
        EVOU=w.W_E @ (w.W_V @ OU),
        PVOU=PVOU,
    )


def extreme_pre_softmax_diffs(
    qk: QKDecomposition, gaps: Tensor, cells: CellIndex, hi: Num, lo: Num
) -> tuple[Num, Num]:
    """D_lo <= EQKE_bar[q, m] - EQKE_bar[q, t] <= D_hi for every t <= m - g (SPEC §6.5), with
    hi, lo the running max and min of EQKE_hat along t (GapFreeTables)."""
    E = qk.EQKE_hat
    q, at = torch.broadcast_tensors(cells.q, cells.m - gaps)
    has_nonmax = at >= 0
    at = at.clamp(min=0)
    own = E[cells.q, cells.m]  # EQKE_hat[q, m]
    zero = torch.zeros((), dtype=E.dtype, device=E.device)
    err = qk.err_bound[:, None, None]
    D_lo = iv.where(has_nonmax, own - hi[q, at], zero) - err
    D_hi = iv.where(has_nonmax, own - lo[q, at], zero) + err
    return D_lo, D_hi


def slot_log_ratio(pos_err: Num, attn_scale: float | Num) -> Num:
    """log S_max - log S_non [ordering, q == m, q, c] of extreme_attention: S = sums of
    exp(positional score / scale) over the slots holding / not holding the max token, with
    the k - 1 non-query positions in ascending (ordering 0) or descending (1) order of score.
    With interval scores the order statistics are enclosed by sorting both ends, and the
    query's own relative score is exactly 0."""
    v, k = pos_err.shape
    pos = (pos_err - pos_err[:, -1:]) / attn_scale  # the query position becomes 0
    ascending = iv.sort_values(pos[:, : k - 1], dim=-1)  # [q, k-1]
    query_slot = torch.zeros(v, 1, dtype=torch.float64, device=pos.device)
    slots = iv.stack(
        [iv.cat([order, query_slot], dim=-1) for order in (ascending, ascending.flip(-1))]
    )
    on = _max_slots(k, pos.device)[None, :, :, None, :]  # [1, q==m, c, 1, slot]
    X = slots[:, None, None, :, :]  # [ordering, 1, 1, q, slot]
    on_max = iv.where(on, X, NEG_INF).logsumexp(dim=-1)  # [ordering, q==m, c, q]
    off_max = iv.where(on, NEG_INF, X).logsumexp(dim=-1)
    return (on_max - off_max).permute(0, 1, 3, 2)  # [ordering, q==m, q, c]


def extreme_attention(
    D_lo: Num, D_hi: Num, log_ratio: Num, cells: CellIndex, attn_scale: float | Interval
) -> tuple[Num, Num]:
    """A_lo <= total attention on the max token <= A_hi for every input of the cell (§6.6).

    With all non-max tokens at the least (most) attractive allowed score, the weight of the
    max tokens is sigmoid(D / scale + log S_max - log S_non), S = sums of exp(positional score
    / scale) over the positions holding / not holding m (`slot_log_ratio`); it is smallest
    (largest) when the max tokens sit at the non-query positions with the smallest (largest)
    positional scores.
    """
    eq = cells.q == cells.m
    A = []
    for o, D in enumerate((D_lo, D_hi)):
        ratio = iv.where(eq, log_ratio[o, 1][:, None, :], log_ratio[o, 0][:, None, :])
        A.append(iv.sigmoid(D / attn_scale + ratio))
    return A[0], A[1]


def _max_slots(k: int, device: torch.device) -> Tensor:
    """on[q==m, c, slot]: the slots holding the max token in a cell with c non-max positions,
    for the k slots (the k-1 non-query positions in the chosen order, then the query).
    q != m: the first min(k - c, k - 1) non-query slots (c = 0 is not a valid cell);
    q == m: the first k - c - 1 non-query slots and the query."""
    on = torch.zeros(2, k, k, dtype=torch.bool, device=device)
    for c in range(k):
        on[0, c, : min(k - c, k - 1)] = True
        on[1, c, : k - c - 1] = True
        on[1, c, k - 1] = True
    return on


def largest_wrong_logit(
    A_lo: Num,
    A_hi: Num,
    gaps: Tensor,
    cells: CellIndex,
    EVOU: Num,
    PVOU: Num,
    EU_mean: Num,
    EU_q_err: Num,
    EU_rows: Num,
    mean_diff: bool,
    variant: Variant = SOUND,
) -> Num:
    """B[..., q, m, c] >= max_{j != m} (l_j - l_m) on every input of each valid cell (§6.7);
    +inf on invalid cells.

    For an input with attention a on the max token:
      l_j - l_m <= L[m, j] + EU_q_err[q] + a R[m, j] + (1 - a) W,
      L = EU_mean_c + PVOU_pess,  R[m, j] = EVOU[m, j] - EVOU[m, m],
      W = max_{t <= m - g_min} rowrange(EVOU)[t]  (g_min = min over queries of the gap).
    EU_rows = E W_U + b_O W_U + b_U (the direct path) exactly, used for the all-max input
    (q = m, c = 0).
    """
    v = EVOU.shape[0]
    eye = torch.eye(v, dtype=torch.bool, device=EVOU.device)
    PVOU_pess = (PVOU[:, None, :] - PVOU[:, :, None]).amax(dim=0)  # [m, j]
    L = (EU_mean[None, :] - EU_mean[:, None]) + PVOU_pess  # [m, j]
    R = EVOU - EVOU.diagonal()[:, None]  # [m, j]
    R_max = R.masked_fill(eye, -INF).amax(dim=-1)  # [m]
    R_min = R.masked_fill(eye, INF).amin(dim=-1)
    W_run = iv.running_max(rowrange(EVOU), dim=0)  # W_run[t] = max_{t' <= t} rowrange(EVOU)

    ms = cells.m.flatten()  # the max tokens of these cells (all of 0..v-1 unless searching)
    L, R, R_max, R_min, PVOU_pess = L[ms], R[ms], R_max[ms], R_min[ms], PVOU_pess[ms]
    is_m = eye[ms]  # is_m[i, j]: j is the max token of row i (excluded from max_{j != m})
    EU_rows = EU_rows[ms]
    g_min = torch.where(cells.q <= cells.m, gaps, v + 1).amin(dim=-3)  # [..., m, c]
    at = cells.m[0] - g_min  # cells.m[0]: [v, 1] over (m, c)
    # W is an empty maximum where at < 0: no cell with a non-max token exists there (q != m
    # needs m - q >= g >= g_min; q = m with c >= 1 needs m >= g), so such cells are invalid
    # or the all-max input, whose bounds are replaced below. A finite 0 keeps their garbage
    # finite (no infinities to track through the products).
    W = iv.where(at >= 0, W_run[at.clamp(min=0)], 0.0)  # [..., m, c]
    valid = cells.valid
    # a_bar: any real number keeps the bound sound; choose it on midpoints, as an exact point
    a_sel = iv.where((iv.mid(R_max)[:, None] >= iv.mid(W))[..., None, :, :], A_hi, A_lo)
    if mean_diff:
        n_valid = valid.sum(dim=-3).clamp(min=1)
        a_bar = iv.mid(iv.where(valid, a_sel, 0.0).sum(dim=-3) / n_valid)  # [..., m, c]
        a_bar = iv.point_like(A_lo, a_bar)  # exact point: 1 - a_bar etc. are then enclosed
    else:
        a_bar = torch.zeros(W.shape, dtype=torch.float64, device=valid.device)
    M_bar = (
        (L[:, None, :] + a_bar[..., None] * R[:, None, :])
        .masked_fill(is_m[:, None, :], -INF)
        .amax(dim=-1)
    )  # [..., m, c]
    base = (M_bar + (1 - a_bar) * W)[..., None, :, :] + EU_q_err[:, None, None]
    a_bar_q, W_q = a_bar[..., None, :, :], W[..., None, :, :]
    if variant.sound_mean_diff:
        # e R[m, j] <= e R_max for e >= 0 and e R_min for e < 0: so <= max(e R_max, e R_min),
        # which is the same float value and also holds when an interval e straddles 0
        bounds = []
        for a in (A_lo, A_hi):
            e = a - a_bar_q
            bounds.append(base + iv.maximum(e * (R_max[:, None] - W_q), e * (R_min[:, None] - W_q)))
        B = iv.maximum(*bounds)
    else:
        B = base + (a_sel - a_bar_q) * (R_max[:, None] - W_q)

    # the all-max input (q = m, c = 0): attention is entirely on m; direct path exact
    EU_at_m = EU_rows[torch.arange(len(ms), device=ms.device), ms][:, None]  # EU_rows[i, m_i]
    all_max = (EU_rows - EU_at_m + R + PVOU_pess).masked_fill(is_m, -INF)
    all_max = all_max.amax(dim=-1)  # [m]
    is_all_max = (cells.q == cells.m) & (cells.c == 0)
    B = iv.where(is_all_max, all_max[:, None], B)
    return iv.where(valid, B, INF)


def count_correct(B: Num, gaps: Tensor, cells: CellIndex, k: int, variant: Variant = SOUND) -> int:
    """Exact number of inputs proven correct (SPEC §6.8, with m - g + 1 token choices):
    a valid cell with B < 0 counts C(k-1, c') (m - g + 1)^c' inputs, c' = non-max tokens at
    non-query positions (c - 1 if q != m, else c)."""
    proven = cells.valid & iv.certainly_negative(B)
    c_prime = torch.where(cells.q == cells.m, cells.c, cells.c - 1).expand_as(proven)
    choices = (cells.m - gaps + variant.count_extra).expand_as(proven)
    total = int((proven & (c_prime == 0)).sum())
    v = B.shape[-2]
    for cp in range(1, k):
        n = choices[proven & (c_prime == cp)]
        histogram = torch.bincount(n.clamp(min=0), minlength=v + 1).tolist()
        total += comb(k - 1, cp) * sum(cnt * x**cp for x, cnt in enumerate(histogram) if cnt)
        charge(2 * len(histogram), "python-int counting")
    return total


def count_undecided(B: Num, cells: CellIndex) -> int:
    """Valid cells that some member of B's enclosure would prove but the enclosure does not
    (0 for plain float64, which decides everything)."""
    if isinstance(B, Tensor):
        return 0
    with uncounted():  # not part of the proof
        return int((cells.valid & iv.possibly_negative(B) & ~iv.certainly_negative(B)).sum())


def subcubic_bounds(
    w: Weights64,
    qk: QKDecomposition,
    gaps: Tensor,
    E_eu: Tensor,
    eu_handling: str,
    eu_direction: Tensor,
    mean_diff: bool,
    variant: Variant = SOUND,
    m_start: int = 0,
    tables: GapFreeTables | None = None,
) -> tuple[Num, CellIndex]:
    """The whole pipeline §6.5–§6.7: B[..., q, m, c] and the cell index, for gaps (cells with
    max token m >= m_start only).

    Biases enter as in paths.py, exactly: qk already carries b_Q and b_K (decompose.py);
    PVOU = (W_pos W_V + b_V) W_O W_U (the attention weights sum to 1, so b_V's value reaches
    the logits as a constant row, like a position's); the direct path of query row e is
    e W_U + b_O W_U + b_U (split_eu, and the exact rows EU_rows of the all-max input).
    `tables`: gap_free_tables(w, qk), where the caller has them."""
    v, k = w.W_E.shape[0], w.W_pos.shape[0]
    t = gap_free_tables(w, qk) if tables is None else tables
    cells = cell_index(gaps, v, k, m_start)
    D_lo, D_hi = extreme_pre_softmax_diffs(qk, gaps, cells, t.hi, t.lo)
    A_lo, A_hi = extreme_attention(D_lo, D_hi, t.log_ratio, cells, w.attn_scale)
    direct_bias = w.direct_bias()
    EU_mean, EU_q_err = split_eu(E_eu, w.W_U, eu_handling, eu_direction, direct_bias)
    EU_rows = E_eu @ w.W_U if direct_bias is None else E_eu @ w.W_U + direct_bias
    B = largest_wrong_logit(
        A_lo, A_hi, gaps, cells, t.EVOU, t.PVOU, EU_mean, EU_q_err, EU_rows, mean_diff, variant
    )
    return B, cells


def proven_mask(B: Num, gaps: Tensor, cells: CellIndex, tokens: Tensor) -> Tensor:
    """Which of `tokens` [n, k] the proof certifies (bool [n]); over all inputs its sum equals
    `count_correct` (used by the exhaustive soundness tests)."""
    m = tokens.max(dim=-1).values
    q = tokens[:, -1]
    nonmax = tokens != m[:, None]
    c = nonmax.sum(dim=-1)
    largest_nonmax = torch.where(nonmax, tokens, -1).amax(dim=-1)
    negative = iv.certainly_negative(B)
    g = gaps.expand_as(negative)[q, m, c]
    in_gap = (c == 0) | (largest_nonmax <= m - g)  # the all-max input needs no gap
    return cells.valid.expand_as(negative)[q, m, c] & negative[q, m, c] & in_gap
