"""Separable cell counting (new here, not in the paper): exact attention per position set.

Cells. An input x with query q = x[k-1] and max m has a set S of non-query positions holding
tokens < m (c = |S|; a bit mask over positions 0..k-2) and the complement M holding m (M is
non-empty when q < m). Every input lies in exactly one cell (q, m, S); the cell holds the m^c
token assignments of S. A "row" is a pair (q, m) with q <= m.

Numerator form. With unnormalised attention weights w_p = e_tok[x_p] e_pos[q, p] > 0
(e_tok = exp(EQKE[q, x] / sqrt(d_head) - max_{x' <= m} of the same), e_pos = exp(EQKP[q, p] /
sqrt(d_head) - max_p of the same); their product is the softmax numerator up to a positive
factor per row (q, m)) and Z = sum_p w_p, for every wrong output j != m

    Z (l_j - l_m) = sum_p w_p (EUPU_c[q,m,j] + EVOU_c[x_p,m,j] + PVOU_c[p,m,j])
                 <= F[q,m,S] + sum_{p in S} u_p(x_p),      u_p(x) = w_p(x) (E[q,m] + g_p[x,m])

with EVOU_c[x,m,j] = EVOU[x,j] - EVOU[x,m] (likewise EUPU_c, PVOU_c), E[q,m] =
max_{j!=m} EUPU_c[q,m,j], g_p[x,m] = max_{j!=m}(EVOU_c[x,m,j] + PVOU_c[p,m,j]), and F bounding
the fixed positions (M and the query, whose tokens the cell fixes). So an input is proven
correct when sum_{p in S} u_p(x_p) < T[q,m,S] := -F[q,m,S]: the bound is *separable* over
positions, the attention is exact (no ordering relaxation), and sequences mixing different
non-max tokens are judged one by one instead of by their worst pure sequence.

`separable` (joint, exact counting):
    F = max_{j!=m} sum_{p in M + query} w_p (EUPU_c[q,m,j] + EVOU_c[x_p,m,j] + PVOU_c[p,m,j]),
    the direct path, max tokens and query taken together per output j. Assignments counted
    exactly by sorting: c = 1 count u_p < T; c = 2 binary-search T - u_p1(x1) in the sorted
    u_p2 for every x1; c = 3 on the q = m rows enumerate x1 too (v rows: still cubic). Other
    cells (c >= 3 with q < m, c >= 4; only for n_ctx >= 5) use the pure rule below.
`separable-lite` (separate, pure rule): every position pessimised on its own with the cubic
    proof's g[x,m] = max_{j!=m}(EVOU_c[x,m,j] + max_p PVOU_c[p,m,j]) and h = e_tok (E + g):
    F = e_tok[q,m] W_M (E + g[m,m]) + w_query (E + g[q,m]) with W_M = sum_{p in M} e_pos[q,p].
    Pure rule: u_p(x) = e_pos[q,p] h(x) and sum_{p in S} e_pos[q,p] h(x_p) <= W_S max h, so
    every assignment from G = {x < m : h(x) < T / W_S} is proven: |G|^c inputs (exact for
    c <= 1). One sort per row and one binary search per cell.

Arithmetic (soundness.arithmetic). In the rigorous arithmetics (balls, or intervals when
balls leave a decision undecided) the same formulas enclose their exact real values: T is
taken at its lower end, terms at their upper ends, and differences/quotients of thresholds
are rounded down, so every accepted comparison holds for the exact real values. Every weight
is <= 1 (the shifts are row maxima), and a cell counts only if one of its fixed weights (query
or max token), as computed, is >= 2^-900: no cell rests on attention that underflowed
entirely (a restriction shared by every arithmetic and the independent checker).

Plain float64 (--fast, not a proof) computes the same formulas with strict `<`. Besides
ordinary relative rounding it makes absolute errors where weights underflow: a weight below
the subnormal range becomes 0 (exactly what once made a term vanish while its exact value
exceeded a subnormal threshold T, certifying misclassified inputs). A threshold, or a sum of
the terms of one assignment, is a sum of at most k + 1 products weight * value with |value|
<= V (V = twice the largest entries of EUPU, EVOU and PVOU) and weights <= 1, so underflow
moves each by at most (k + 2) 2^-1074 (V + 1); float64 mode lowers every T by 16 times that
(`_guard_fast`), which leaves only ordinary relative rounding (and changes no T of normal
size at all).

Cost: joint O(2^(k-1) v^3 + k v^3 log v); lite O(v^3 + 2^(k-1) v^2 log v). Cubic in v but
exponential in k (each position set is a cell), so the family is limited to n_ctx <= 10.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from compact_proofs.errors import UnsupportedModelError
from compact_proofs.model.transformer import AttnOnlyTransformer, ModelConfig
from compact_proofs.proofs.base import Strategy, Verdict
from compact_proofs.proofs.flops import charge, uncounted
from compact_proofs.proofs.paths import PathMatrices, path_matrices
from compact_proofs.soundness import interval as iv
from compact_proofs.soundness.arithmetic import Arithmetic
from compact_proofs.soundness.ball import Ball
from compact_proofs.soundness.interval import Num, round_down
from compact_proofs.soundness.rounding import U as UNIT
from compact_proofs.soundness.rounding import up as _up

NEG_INF, INF = float("-inf"), float("inf")
MAX_N_CTX = 10
ROW_CHUNK_ELEMENTS = 2**22  # rows x sets x tokens per chunk (float64: ~32 MB per table)
UNDERFLOW_GUARD = 2.0**-900  # a counted cell has a fixed attention weight at least this big
UNDERFLOW_SLACK = 2.0**-1070  # float64 mode: 16 subnormal spacings per term and unit of value


def _masks(n: int) -> list[list[int]]:
    """The positions in each bit mask 0 .. 2^n - 1 (increasing)."""
    return [[p for p in range(n) if s >> p & 1] for s in range(2**n)]


def _rows(v: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """All rows (q, m) with q <= m, ordered by m then q."""
    tok = torch.arange(v, device=device)
    m, q = tok[:, None].expand(v, v), tok[None, :].expand(v, v)
    keep = q <= m
    return q[keep], m[keep]


def _complement(S: list[int], n: int) -> list[int]:
    """The positions 0..n-1 not in S (the max positions M of a cell whose non-max set is S)."""
    return [p for p in range(n) if p not in S]


def _sum_cols(x: Num, cols: list[int]) -> Num | None:
    """sum_{p in cols} x[:, p] (None for no columns)."""
    total = None
    for p in cols:
        total = x[:, p] if total is None else total + x[:, p]
    return total


def _sub_down(a: Tensor, b: Tensor, rigorous: bool) -> Tensor:
    """A float <= a - b in exact reals when rigorous; plain a - b otherwise. inf - inf (an
    unbounded threshold minus an absent token's +inf term) is -inf: nothing to count."""
    return _finite_or(round_down(a - b) if rigorous else a - b, NEG_INF)


def _finite_or(x: Tensor, safe: float) -> Tensor:
    """x with NaN replaced by `safe` (a threshold by -inf, a term by +inf): NaN proves nothing,
    and binary searches need ordered values."""
    return torch.where(x.isnan(), safe, x)


def _attention(paths: PathMatrices) -> tuple[Num, Num, Num]:
    """s_tok [q, x] = EQKE / sqrt(d_head), its row maxima row_max [q, m] = max_{x <= m} s_tok
    (exact point shifts: `iv.shift_point`), and e_pos [q, p] = exp(EQKP / sqrt(d_head) - max_p),
    all k positions."""
    s_tok = paths.EQKE / paths.attn_scale
    s_pos = paths.EQKP / paths.attn_scale
    row_max = iv.running_max(iv.shift_point(s_tok), dim=-1)
    e_pos = iv.exp(s_pos - iv.shift_point(s_pos).amax(dim=-1)[:, None])
    return s_tok, row_max, e_pos


def _row_weights(s_tok: Num, row_max: Num, q: Tensor, m: Tensor) -> Num:
    """e_tok [r, x] = exp(s_tok[q, x] - row_max[q, m]) for the tokens x <= m that occur in
    row (q, m) (<= 1; 0 for x > m, which never occur)."""
    v = s_tok.shape[-1]
    later = torch.arange(v, device=q.device)[None, :] > m[:, None]
    return iv.exp((s_tok[q] - row_max[q, m][:, None]).masked_fill(later, NEG_INF))


def _guard_underflow(T: Tensor, w_query: Num, w_max: Num) -> Tensor:
    """T [r, set] with -inf where every fixed weight (the query's w_query [r], the max
    token's w_max [r, p] at the positions of M) is below UNDERFLOW_GUARD (module docstring).
    The test is on the computed (midpoint) weights, the same in every arithmetic: it only
    drops cells, and the rigorous arithmetics need it for no proof."""
    n = w_max.shape[1]
    big_query = iv.mid(w_query) >= UNDERFLOW_GUARD
    big_max = iv.mid(w_max) >= UNDERFLOW_GUARD  # [r, p]
    cols = []
    for S in _masks(n):
        ok = big_query
        for p in _complement(S, n):
            ok = ok | big_max[:, p]
        cols.append(ok)
    return torch.where(torch.stack(cols, dim=-1), T, NEG_INF)


def _guard_fast(T: Tensor, paths: PathMatrices, arith: Arithmetic) -> Tensor:
    """In float64 mode, T lowered by what underflow can hide: UNDERFLOW_SLACK (k + 2) (V + 1)
    (module docstring); unchanged in the rigorous arithmetics, whose enclosures include it."""
    if arith is not Arithmetic.FAST:
        return T
    V = sum(2 * float(x.abs().amax()) for x in (paths.EUPU, paths.EVOU, paths.PVOU))
    return T - UNDERFLOW_SLACK * (paths.n_ctx + 2) * (V + 1)


def _slack(x: Num) -> float:
    """How far a tighter enclosure of x could move its upper end down (or its lower end up):
    a ball's diameter plus a few roundings of its magnitude; 0 for other kinds (only balls
    are ever followed by a tighter arithmetic)."""
    if not isinstance(x, Ball):
        return 0.0
    return (2 * x.rad + 8 * UNIT * (x.mag + x.rad)) * (1 + 2.0**-20)


def _pvou_c(paths: PathMatrices) -> Num:
    """PVOU_c [p, m, j] = PVOU[p, j] - PVOU[p, m], with -inf at j = m (excluded from maxima)."""
    v = paths.d_vocab
    diag = torch.eye(v, dtype=torch.bool, device=paths.EUPU.device)
    return (paths.PVOU[:, None, :] - paths.PVOU[:, :, None]).masked_fill(diag[None], NEG_INF)


def _direct(paths: PathMatrices) -> Num:
    """E [q, m] = max_{j != m} EUPU[q, j] - EUPU[q, m] (O(v^2))."""
    return iv.max_others(paths.EUPU) - paths.EUPU


def _check_size(cfg: ModelConfig) -> None:
    if cfg.n_ctx > MAX_N_CTX:
        raise UnsupportedModelError(
            f"the separable strategies enumerate 2^(n_ctx-1) position sets; n_ctx={cfg.n_ctx} "
            f"exceeds {MAX_N_CTX}: use the cubic proof"
        )


def _count_powers(n: Tensor, c: int, v: int) -> int:
    """sum over entries of n ** c as an exact Python int (via a histogram of n)."""
    hist = torch.bincount(n.flatten(), minlength=v + 1).tolist()
    charge(2 * len(hist), "python-int counting")
    return sum(cnt * k**c for k, cnt in enumerate(hist) if cnt)


# ---------------------------------------------------------------- separable (joint, exact)


@dataclass(frozen=True)
class _JointModel:
    """Per-model quantities shared by every chunk of rows (joint strategy)."""

    s_tok: Num  # [q, x]
    row_max: Num  # [q, m] (exact points)
    e_pos: Num  # [q, p]
    E: Num  # [q, m]
    g: Num  # [p, x, m] for the non-query positions p
    g_bar: Num  # [x, m] = max_p g[p, x, m] (pure rule)


@dataclass(frozen=True)
class JointTerms:
    """For rows (q[r], m[r]): thresholds T [r, set] (lower ends; -inf where the cell is
    empty), terms U [p, r, x] (+inf for x >= m) whose exact values are <= U + u_rad, and
    for the pure rule H [r, x] = e_tok (E + g_bar) with the positional weights W [r, p].
    (Intervals: U holds the upper ends, u_rad = 0; balls: U the midpoints, u_rad their one
    radius, taken off the threshold once instead of added to every term.)

    T_opt >= the upper ends of the thresholds and `u_slack` >= how much lower any term's
    lower end can be: a comparison that holds with those is *undecided*, not refuted (only
    for balls; elsewhere T_opt = T and u_slack = 0)."""

    q: Tensor
    m: Tensor
    T: Tensor
    U: Tensor
    H: Num
    W: Num
    arith: Arithmetic
    T_opt: Tensor
    u_slack: float
    u_rad: float
    sub_error: float  # balls: bound on the rounding of one subtraction T - U - ... (0: none)

    def threshold(self, rows: Tensor | slice, s: int, c: int) -> Tensor:
        """T' for the cells (rows, s) with c free positions: the last term's U below
        `self.minus(self.minus(T', U_1), U_2)` proves sum of the c exact terms < exact T.
        Intervals round every subtraction down (`minus`); balls take the radii of c terms
        and the rounding of c - 1 plain subtractions off T once, rounded down."""
        T = self.T[rows, s]
        if not self.u_rad and not self.sub_error:
            return T
        return _sub_down(T, _up(c * self.u_rad + (c - 1) * self.sub_error), True)

    def minus(self, a: Tensor, b: Tensor) -> Tensor:
        """a - b, rounded down only in interval arithmetic (module docstring)."""
        return _sub_down(a, b, self.arith is Arithmetic.INTERVAL)


def _joint_model(paths: PathMatrices) -> _JointModel:
    """Attention weights, E, and g_p[x, m] = max_{j!=m}(EVOU_c[x,m,j] + PVOU_c[p,m,j])."""
    k, EVOU = paths.n_ctx, paths.EVOU
    s_tok, row_max, e_pos = _attention(paths)
    P = _pvou_c(paths)[: k - 1]
    g = (EVOU[None, :, None, :] + P[:, None, :, :]).amax(dim=-1) - EVOU[None]
    g_bar = g.amax(dim=0) if k > 1 else EVOU  # (k = 1: no non-max positions, unused)
    return _JointModel(
        s_tok=s_tok, row_max=row_max, e_pos=e_pos, E=_direct(paths), g=g, g_bar=g_bar
    )


def _joint_fixed(paths: PathMatrices, jm: _JointModel, q: Tensor, m: Tensor, e_tok: Num) -> Num:
    """F[r, set] = max_{j != m} of the exact fixed part (direct path, max tokens, query)."""
    k, v = paths.n_ctx, paths.d_vocab
    EUPU, EVOU, PVOU = paths.EUPU, paths.EVOU, paths.PVOU
    rows = torch.arange(len(q), device=q.device)
    e_pos = jm.e_pos[q]  # [r, k]
    e_max = e_tok[rows, m]  # [r]
    w_query = e_tok[rows, q] * e_pos[:, k - 1]
    direct = EUPU[q] - EUPU[q, m][:, None]  # [r, j]
    ev_m = EVOU[m] - EVOU[m, m][:, None]  # [r, j] = EVOU_c[m, m, j]
    pv = PVOU[:, None, :] - PVOU[:, m][..., None]  # [p, r, j] = PVOU_c[p, m, j]
    query = w_query[:, None] * ((EVOU[q] - EVOU[q, m][:, None]) + pv[k - 1])
    on_max = [ev_m + pv[p] for p in range(k - 1)]
    is_m = m[:, None] == torch.arange(v, device=m.device)[None, :]
    # sums over the max positions M, built in increasing order of the bit mask M
    # (M without its lowest bit comes first)
    n_sets = 2 ** (k - 1)
    PV: dict[int, Num] = {}
    W: dict[int, Num] = {}
    fixed: list[Num] = []
    for M in range(n_sets):
        if M:
            low, rest = (M & -M).bit_length() - 1, M & (M - 1)
            term = e_pos[:, low, None] * on_max[low]
            PV[M] = term if rest == 0 else PV[rest] + term
            W[M] = e_pos[:, low] if rest == 0 else W[rest] + e_pos[:, low]
            weight = e_max * W[M] + w_query
            total = weight[:, None] * direct + e_max[:, None] * PV[M] + query
        else:
            total = w_query[:, None] * direct + query
        fixed.append(total.masked_fill(is_m, NEG_INF).amax(dim=-1))
    return iv.stack([fixed[(n_sets - 1) ^ s] for s in range(n_sets)], dim=-1)


def joint_terms(
    paths: PathMatrices, jm: _JointModel, q: Tensor, m: Tensor, arith: Arithmetic
) -> JointTerms:
    """Thresholds and per-position terms of the rows (q, m) (module docstring)."""
    k, v = paths.n_ctx, paths.d_vocab
    e_tok = _row_weights(jm.s_tok, jm.row_max, q, m)  # [r, x]
    F = _joint_fixed(paths, jm, q, m, e_tok)
    rows = torch.arange(len(q), device=q.device)
    W = jm.e_pos[q][:, : k - 1]  # [r, p]
    w_query = e_tok[rows, q] * jm.e_pos[q, k - 1]
    T, T_opt = _thresholds(F, q, m, w_query, e_tok[rows, m][:, None] * W)
    T = _guard_fast(T, paths, arith)
    absent = torch.arange(v, device=q.device)[None, :] >= m[:, None]  # [r, x]
    E = jm.E[q, m]
    base = e_tok[None] * (E[None, :, None] + jm.g[:, :, m].permute(0, 2, 1))
    u = W.T[:, :, None] * base
    U, u_rad = _upper_parts(u)
    U = _finite_or(U, INF).masked_fill(absent[None], INF)
    H = e_tok * (E[:, None] + jm.g_bar[:, m].T)
    sub_error = 0.0
    if isinstance(F, Ball):  # |T - U - U| <= |T| + 2 |U|: the rounding of each subtraction
        sub_error = _up(UNIT * (F.mag + F.rad + (k - 1) * (u.mag + u.rad)))
    return JointTerms(q, m, T, U, H, W, arith, T_opt, _slack(u), u_rad, sub_error)


def _upper_parts(x: Num) -> tuple[Tensor, float]:
    """(X, r) with every member of x <= X + r entrywise: a ball's midpoints and radius (so
    the radius is paid once per comparison, not once per entry), otherwise (upper end, 0)."""
    if isinstance(x, Ball):
        return x.mid, x.rad
    return iv.upper(x), 0.0


def _thresholds(F: Num, q: Tensor, m: Tensor, w_query: Num, w_max: Num) -> tuple[Tensor, Tensor]:
    """(T, T_opt) [r, set]: T = lower end of -F and T_opt >= its upper end (+ slack), both
    -inf where the cell is empty (q < m needs a max position) or its fixed attention
    underflowed (`_guard_underflow`)."""
    full = q != m  # the cell with every non-query position non-max

    def threshold(x: Tensor) -> Tensor:
        x = _guard_underflow(_finite_or(x, NEG_INF), w_query, w_max)
        x[:, -1] = torch.where(full, NEG_INF, x[:, -1])
        return x

    T = threshold(-iv.upper(F))
    if not isinstance(F, Ball):
        return T, T
    with uncounted():  # only decides whether intervals could prove more
        return T, threshold(-iv.lower(F) + _slack(F))


def _exact_c(c: int, q_eq_m: bool | Tensor) -> bool | Tensor:
    """Cells counted assignment by assignment: c <= 2, or c = 3 on the q = m rows (v^2 log v
    work per row keeps the whole proof cubic); larger cells use the pure rule. `q_eq_m` may be
    a bool or a bool tensor (then so is the result)."""
    return (q_eq_m & (c == 3)) | (c <= 2)


def _pure_members(t: JointTerms, S: list[int], s: int) -> tuple[Tensor, Tensor]:
    """bool [r, x]: the pure rule's set G of the cells (row, S): (sum_S W) H < T, x < m; and
    the tokens whose membership is undecided (a tighter enclosure might admit them)."""
    bound = _sum_cols(t.W, S)[:, None] * t.H
    present = torch.arange(t.U.shape[-1], device=t.q.device)[None, :] < t.m[:, None]
    members = iv.certainly_below(bound, t.T[:, s, None]) & present
    if not isinstance(bound, Ball):
        return members, torch.zeros_like(members)
    with uncounted():
        maybe = (iv.lower(bound) < t.T_opt[:, s, None]) & present & ~members
    return members, maybe


def _exact_count(
    t: JointTerms, sorted_U: Tensor, rows: Tensor, S: list[int], s: int
) -> tuple[Tensor, int]:
    """Per row: #{assignments of S (tokens < m) with sum_p u_p(x_p) < T}, |S| <= 3; and the
    number of undecided comparisons (`_undecided_searches`)."""
    T = t.threshold(rows, s, len(S))[:, None]  # [r, 1]
    U = t.U[:, rows]
    last = sorted_U[S[-1]][rows]
    if len(S) == 1:
        n = (U[S[0]] < T).sum(dim=-1)
        return n, _undecided_searches(t, rows, s, len(S), last, T, n[:, None])
    thr = t.minus(T, U[S[0]])  # [r, x1]
    if len(S) == 3:
        thr = t.minus(thr[:, :, None], U[S[1]][:, None, :]).flatten(1)
    n = torch.searchsorted(last, thr)
    return n.sum(dim=-1), _undecided_searches(t, rows, s, len(S), last, thr, n)


def _undecided_searches(
    t: JointTerms, rows: Tensor, s: int, c: int, last: Tensor, thr: Tensor, n: Tensor
) -> int:
    """How many threshold searches (thr [r, *] in the sorted last-position terms `last`, n
    of them below it) would count one more term if every term and the threshold were moved
    by their slack: those comparisons are undecided, not refuted."""
    if t.T_opt is t.T and t.u_slack == 0.0:
        return 0
    with uncounted():  # not part of the proof
        reach = thr + (t.T_opt[rows, s] - t.T[rows, s])[:, None] + c * t.u_slack
        following = last.gather(1, n.clamp(max=last.shape[1] - 1))
        return int(((n < last.shape[1]) & (following < reach)).sum())


def joint_count(t: JointTerms) -> tuple[int, int]:
    """(number of inputs of the rows' cells proven correct (exact Python int), number of
    undecided decisions)."""
    q_eq_m = t.q == t.m
    sorted_U = t.U.sort(dim=-1).values
    total, undecided = 0, 0
    for s, S in enumerate(_masks(t.U.shape[0])):
        if not S:
            total += int((t.T[:, s] > 0).sum())
            if t.T_opt is not t.T:
                with uncounted():
                    undecided += int(((t.T[:, s] <= 0) & (t.T_opt[:, s] > 0)).sum())
            continue
        for rows, eq in ((q_eq_m, True), (~q_eq_m, False)):
            if not bool(rows.any()):
                continue
            if _exact_c(len(S), eq):
                n, maybe = _exact_count(t, sorted_U, rows, S, s)
                total += int(n.sum())
            else:
                members, maybe_members = _pure_members(t, S, s)
                total += _count_powers(members[rows].sum(dim=-1), len(S), t.U.shape[-1])
                maybe = int(maybe_members[rows].sum())
            undecided += maybe
    return total, undecided


def joint_proven(t: JointTerms, tokens: Tensor, row: Tensor) -> Tensor:
    """bool [n]: which inputs (tokens [n, k] in rows `row` [n] of `t`) are proven: the same
    comparisons as `joint_count`, one assignment at a time."""

    def judge(r: Tensor, x: Tensor, S: list[int], s: int) -> Tensor:
        T = t.T[r, s]
        if not S:
            return T > 0
        u = [t.U[p, r, x[:, p]] for p in S]
        thr = t.threshold(r, s, len(S))
        for val in u[:-1]:
            thr = t.minus(thr, val)
        exact_ok = u[-1] < thr
        G = _pure_members(t, S, s)[0][r]
        pure_ok = torch.stack([G.gather(1, x[:, p : p + 1])[:, 0] for p in S]).all(dim=0)
        return torch.where(_exact_c(len(S), t.q[r] == t.m[r]), exact_ok, pure_ok)

    return _by_cell(tokens, t.m[row], row, judge)


def _by_cell(tokens: Tensor, m: Tensor, row: Tensor, judge) -> Tensor:
    """Apply judge(rows, tokens, S, s) to the inputs of each position set s."""
    k = tokens.shape[1]
    bits = (tokens[:, :-1] < m[:, None]).long() << torch.arange(k - 1, device=tokens.device)
    bits = bits.sum(dim=-1)
    out = torch.zeros(len(tokens), dtype=torch.bool, device=tokens.device)
    for s, S in enumerate(_masks(k - 1)):
        sel = bits == s
        if bool(sel.any()):
            out[sel] = judge(row[sel], tokens[sel], S, s)
    return out


# ---------------------------------------------------------------- separable-lite (pure rule)


@dataclass(frozen=True)
class LiteTables:
    """For rows (q[r], m[r]): h [r, x] (+inf for x >= m; upper ends, or midpoints within
    h_rad for balls), sorted along x, and thresholds theta [r, set]: token x is in the set G
    of cell (r, set) iff h[r, x] < theta;
    theta[r, 0] is T itself (c = 0: proven iff T > 0). `theta_opt` >= theta moved by every
    slack of a ball enclosure (= theta otherwise): h < theta_opt is undecided, not refuted."""

    q: Tensor
    m: Tensor
    h: Tensor
    sorted_h: Tensor
    theta: Tensor
    theta_opt: Tensor
    h_rad: float = 0.0  # exact h <= h + h_rad (balls: h holds midpoints)
    T: Tensor | None = None  # the thresholds [r, set] (lower ends) theta comes from
    W: Num | None = None  # the positional weights [r, k]


def lite_tables(paths: PathMatrices, arith: Arithmetic) -> LiteTables:
    """All rows at once (tables are O(v^3); work O(v^3 + 2^(k-1) v^2 log v))."""
    k, v, EVOU = paths.n_ctx, paths.d_vocab, paths.EVOU
    device = paths.EUPU.device
    s_tok, row_max, e_pos = _attention(paths)
    q, m = _rows(v, device)
    rows = torch.arange(len(q), device=device)
    e_tok = _row_weights(s_tok, row_max, q, m)  # [r, x]
    # g[x, m] = max_{j != m}(EVOU[x, j] + PVOU_pess[m, j]) - EVOU[x, m], only for x <= m
    pv_pess = _pvou_c(paths).amax(dim=0)  # [m, j]
    g_rows = (EVOU[q] + pv_pess[m]).amax(dim=-1) - EVOU[q, m]  # [r]: g[x = q, m]
    unused = torch.zeros((v, v), dtype=torch.float64, device=device)
    g = iv.index_put(unused, (q, m), g_rows)  # [x, m]; 0 where x > m (masked below)
    E = _direct(paths)[q, m]  # [r]
    absent = torch.arange(v, device=device)[None, :] >= m[:, None]
    h_enc = e_tok * (E[:, None] + g[:, m].T)
    h, h_rad = _upper_parts(h_enc)  # exact h <= h + h_rad
    h = _finite_or(h, INF).masked_fill(absent, INF)
    # fixed part and thresholds
    W = e_pos[q]  # [r, k]
    e_max, w_query = e_tok[rows, m], e_tok[rows, q] * W[:, k - 1]
    on_max = e_max * (E + g[m, m])
    query = w_query * (E + g[q, m])
    masks = _masks(k - 1)
    F = iv.stack(
        [query if W_M is None else W_M * on_max + query
         for W_M in (_sum_cols(W, _complement(S, k - 1)) for S in masks)],
        dim=-1,
    )  # fmt: skip
    T, T_opt = _thresholds(F, q, m, w_query, e_max[:, None] * W[:, : k - 1])
    T = _guard_fast(T, paths, arith)
    W_S = [_sum_cols(W, S) for S in masks[1:]]

    def level(s: int, w: Num) -> Tensor:
        """h < level proves h + h_rad < T / w: G's membership test for the set s."""
        theta = _lower_quotient(T[:, s], w)
        return _finite_or(_sub_down(theta, _up(h_rad), True) if h_rad else theta, NEG_INF)

    theta = torch.stack([T[:, 0], *(level(s, w) for s, w in enumerate(W_S, 1))], dim=-1)
    theta_opt = theta
    if T_opt is not T:  # moved by the slack of h as well
        with uncounted():
            reach = [_upper_quotient(T_opt[:, s], w) + _slack(h_enc) for s, w in enumerate(W_S, 1)]
            theta_opt = torch.stack([T_opt[:, 0], *(_finite_or(x, NEG_INF) for x in reach)], dim=-1)
    sorted_h = h.sort(dim=-1).values
    return LiteTables(q, m, h, sorted_h, theta, theta_opt, h_rad, T, W)


def _lower_quotient(T: Tensor, W: Num) -> Tensor:
    """A float theta with theta <= T / w for every member w of W (all > 0; T exact); plain
    T / W for a plain tensor W."""
    if isinstance(W, Tensor):
        return T / W
    return iv.lower(iv.point_like(W, T) / W)


def _upper_quotient(T: Tensor, W: Num) -> Tensor:
    """A float >= T / w for every member w of W."""
    return iv.upper(iv.point_like(W, T) / W)


def lite_count(t: LiteTables, k: int) -> tuple[int, int]:
    """(sum over cells of |G|^c (c = 0: [T > 0]), exact Python int; number of undecided
    cells: one more token would join G if every enclosure were tight)."""
    n = torch.searchsorted(t.sorted_h, t.theta.contiguous())  # [r, set]: |G|
    total = 0
    for s, S in enumerate(_masks(k - 1)):
        if S:
            total += _count_powers(n[:, s], len(S), t.h.shape[-1])
        else:
            total += int((t.theta[:, 0] > 0).sum())
    if t.theta_opt is t.theta:
        return total, 0
    with uncounted():  # not part of the proof
        v = t.sorted_h.shape[-1]
        following = t.sorted_h.gather(1, n.clamp(max=v - 1))
        maybe = (n < v) & (following < t.theta_opt)
        maybe[:, 0] = (t.theta[:, 0] <= 0) & (t.theta_opt[:, 0] > 0)
        return total, int(maybe.sum())


def lite_proven(t: LiteTables, tokens: Tensor, row: Tensor) -> Tensor:
    """bool [n]: every non-max token x of the input has h[row, x] < theta[row, set]."""

    def judge(r: Tensor, x: Tensor, S: list[int], s: int) -> Tensor:
        if not S:
            return t.theta[r, 0] > 0
        h = torch.stack([t.h[r, x[:, p]] for p in S])
        return (h < t.theta[r, s]).all(dim=0)

    return _by_cell(tokens, t.m[row], row, judge)


# ---------------------------------------------------------------- strategies


def _row_index(v: int, q: Tensor, m: Tensor, tokens: Tensor) -> Tensor:
    index = torch.full((v, v), -1, dtype=torch.long, device=q.device)
    index[q, m] = torch.arange(len(q), device=q.device)
    return index[tokens[:, -1], tokens.max(dim=-1).values]


class _SeparableBase(Strategy):
    group = "separable"
    leading_complexity = "cubic"

    def unexplained_dims(self, cfg: ModelConfig) -> int:
        """As the cubic proof: EUPU, EVOU, EQKE (v^2 each), PVOU and EQKP (k v each)."""
        v, k = cfg.d_vocab, cfg.n_ctx
        return 3 * v * v + 2 * k * v

    def _paths(self, model: AttnOnlyTransformer, arith: Arithmetic) -> PathMatrices:
        _check_size(model.cfg)
        return path_matrices(model, arith)


class Separable(_SeparableBase):
    id = "separable"
    complexity = "O(2^k v^3 + k v^3 log v)"
    description = (
        "Exact attention per position set; joint max over outputs for the direct path, max "
        "tokens and query; mixed sequences counted exactly by sorting."
    )

    def verify_in(
        self, model: AttnOnlyTransformer, payload: dict[str, Any], arith: Arithmetic
    ) -> Verdict:
        """Rows in chunks of ROW_CHUNK_ELEMENTS (rows x sets x tokens): memory O(k
        ROW_CHUNK_ELEMENTS + k v^2) floats, whatever the weights' values."""
        paths = self._paths(model, arith)
        jm = _joint_model(paths)
        v, k = model.cfg.d_vocab, model.cfg.n_ctx
        q, m = _rows(v, paths.EUPU.device)
        step = max(1, ROW_CHUNK_ELEMENTS // (v * 2 ** (k - 1)))
        correct, undecided = 0, 0
        for start in range(0, len(q), step):
            chunk = slice(start, start + step)
            n, maybe = joint_count(joint_terms(paths, jm, q[chunk], m[chunk], arith))
            correct, undecided = correct + n, undecided + maybe
        return Verdict(correct, model.cfg.n_inputs, {}, undecided, arith)

    def proven_in(
        self,
        model: AttnOnlyTransformer,
        payload: dict[str, Any],
        tokens: Tensor,
        arith: Arithmetic,
    ) -> Tensor:
        paths = self._paths(model, arith)
        q, m = _rows(model.cfg.d_vocab, paths.EUPU.device)
        t = joint_terms(paths, _joint_model(paths), q, m, arith)
        tokens = tokens.to(q.device)
        return joint_proven(t, tokens, _row_index(model.cfg.d_vocab, q, m, tokens))


class SeparableLite(_SeparableBase):
    id = "separable-lite"
    complexity = "O(v^3 + 2^k v^2 log v)"
    description = (
        "Exact attention per position set; every position pessimised separately, pure-sequence "
        "rule per cell (one sort per (query, max) row)."
    )

    def verify_in(
        self, model: AttnOnlyTransformer, payload: dict[str, Any], arith: Arithmetic
    ) -> Verdict:
        """All rows at once: memory O(v^3 / 2 + 2^(k-1) v^2) floats, whatever the weights'
        values."""
        t = lite_tables(self._paths(model, arith), arith)
        correct, undecided = lite_count(t, model.cfg.n_ctx)
        return Verdict(correct, model.cfg.n_inputs, {}, undecided, arith)

    def proven_in(
        self,
        model: AttnOnlyTransformer,
        payload: dict[str, Any],
        tokens: Tensor,
        arith: Arithmetic,
    ) -> Tensor:
        t = lite_tables(self._paths(model, arith), arith)
        tokens = tokens.to(t.q.device)
        return lite_proven(t, tokens, _row_index(model.cfg.d_vocab, t.q, t.m, tokens))
