"""Separable sub-cubic (new here, not in the paper): `separable-lite`'s cells in O(v^2) work.

Where `separable-lite` (proofs/separable.py) is cubic: it tabulates, for every row (q, m) and
every token x < m, h[q, m, x] = e_tok[q, m, x] (E[q, m] + g[x, m]) with g[x, m] = max_{j != m}
(EVOU[x, j] + pv[m, j]) - EVOU[x, m], pv[m, j] = max_p (PVOU[p, j] - PVOU[p, m]), and it keeps
one cell per position set (2^(k-1) of them). This strategy removes the three:

1. g in O(k r v^2) (top-r coupling). For any index sets J(x) (the r largest entries of
   A[x, j] = EVOU[x, j] + pv_hi[j], pv_hi[j] = max_p PVOU[p, j], chosen on midpoints: any
   choice is sound), and pv[m, j] <= pv_hi[j] - pv_lo[m] (pv_lo[m] = min_p PVOU[p, m]),

       max_{j != m} (EVOU[x, j] + pv[m, j]) <= max( max_{j in J(x), j != m} (EVOU[x, j] +
           pv[m, j]),  max_{j not in J(x)} A[x, j] - pv_lo[m] ),

   so g'[x, m] := that maximum - EVOU[x, m] >= g[x, m].
2. Members as a prefix, found by bisection (O(log v) per cell, not O(v)). With prefix tables
   over x (O(v^2)): P+[q, y] = max_{x <= y} s[q, x], P-[q, y] = min_{x <= y} s[q, x] (s = EQKE /
   sqrt(d_head)) and G[y, m] = max_{x <= y} g'[x, m], every x <= y has, with R[q, m] the row
   shift of e_tok and val = E[q, m] + G[y, m] >= E[q, m] + g'[x, m],

       h[q, m, x] <= B[q, m, y] := exp(P[q, y] - R) val,  P = P+ if val >= 0, else P-

   (e_tok <= exp(P+ - R) and, when val < 0, every term is <= e_tok val <= exp(P- - R) val;
   in an enclosure P+ is taken wherever val may be >= 0). B is a bound on the
   whole prefix, so if B[q, m, y] < theta every token x <= y passes the pure rule. Bisection
   finds such a y (only a y whose test passed is ever kept; monotonicity is not needed for
   soundness); then tokens y+1 .. y+w (< m) are tested one by one with their own h (exact
   attention), extending the prefix while they pass. The cell's members are 0 .. Y.
3. One threshold per set size c, not per position set. With W_S = sum_{p in S} e_pos[q, p]
   over the non-query positions, W the sum over all of them, K = W on_max + query (on_max,
   query: `separable-lite`'s fixed terms), the pure rule's threshold of set S is
   theta(W_S) = -((W - W_S) on_max + query) / W_S = on_max - K / W_S: monotone in W_S > 0.
   Every S of size c has W_S between the sum of the c smallest and of the c largest weights,
   so theta_c = min(theta(w_min(c)), theta(w_max(c))) <= theta(W_S) for all C(k-1, c) sets
   (each evaluated as -(W_M on_max + query) / W_S with the complementary weights' own sum
   W_M, which has no cancellation).

Count: sum over rows and c of [cell non-empty] C(k-1, c) (Y + 1)^c (c = 0: [-K > 0]); as in
`separable-lite`, a cell counts only if a fixed attention weight of every set of its size (the
query's, or the smallest max-token weight) is >= 2^-900 as computed. Every
input counted is proven by `separable-lite`'s argument (pure rule: sum_{p in S} e_pos[q, p]
h(x_p) <= W_S max h < W_S theta_c <= T_S), so the proof is sound whenever that one is; its
arithmetic (balls, intervals, float64 with the underflow guards) is handled the same way.

Cost: O(v^2 d) path matrices + O(k r v^2) for g' + O(k v^2 (log v + w)) for the cells: no v^3
term and nothing exponential in k (so any n_ctx). Memory O(k v^2 + CHUNK_ELEMENTS) floats,
whatever the weights' values and the payload's r and w (rows, and the rows x of the coupled
value bound, are processed in blocks of O(CHUNK_ELEMENTS) entries).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from compact_proofs.errors import CertificateError
from compact_proofs.model.transformer import AttnOnlyTransformer, ModelConfig
from compact_proofs.proofs.base import Strategy, Verdict
from compact_proofs.proofs.flops import uncounted
from compact_proofs.proofs.paths import PathMatrices, path_matrices
from compact_proofs.proofs.separable import (
    UNDERFLOW_GUARD,
    UNDERFLOW_SLACK,
    _attention,
    _count_powers,
    _direct,
    _finite_or,
    _row_index,
    _rows,
)
from compact_proofs.soundness import interval as iv
from compact_proofs.soundness.arithmetic import Arithmetic
from compact_proofs.soundness.interval import Num

NEG_INF, INF = float("-inf"), float("inf")
DEFAULT_TOP_R = 2
DEFAULT_WINDOW = 4
CHUNK_ELEMENTS = 2**20  # entries per block of the [rows, sizes, tokens] and [x, m, r] tensors


@dataclass(frozen=True)
class Tables:
    """The O(v^2) tables shared by every row: s [q, x], its prefix max/min P_hi/P_lo [q, y],
    the row shifts R [q, m], e_pos [q, p], E [q, m], g' [x, m] and its prefix max G [y, m]."""

    s: Num
    P_hi: Num
    P_lo: Num
    R: Num
    e_pos: Num
    E: Num
    g: Num
    G: Num


def coupled_g(paths: PathMatrices, top_r: int) -> Num:
    """g' [x, m] >= max_{j != m}(EVOU[x, j] + pv[m, j]) - EVOU[x, m] (module docstring, 1).

    The uncoupled part max_{j not in J(x)} A[x, j] - pv_lo[m] - EVOU[x, m] is evaluated as
    (A_rest[x] - A[x, m]) + (pv_hi[m] - pv_lo[m]) (the same real number, A[x, m] = EVOU[x, m]
    + pv_hi[m]): where the computed A[x, j] of some j not in J(x) equals A[x, m], both
    differences are >= 0 in float64 too (no rounding below the exact value's sign)."""
    EVOU, PVOU = paths.EVOU, paths.PVOU
    v = paths.d_vocab
    pv_hi, pv_lo = PVOU.amax(dim=0), PVOU.amin(dim=0)
    A = EVOU + pv_hi[None, :]
    with uncounted():  # the choice of J is search: any J gives a valid bound
        J = iv.mid(A).topk(min(top_r, v), dim=-1).indices  # [x, r]
    in_J = torch.zeros((v, v), dtype=torch.bool, device=J.device).scatter(1, J, True)
    A_rest = A.masked_fill(in_J, NEG_INF).amax(dim=-1)
    rest = (A_rest[:, None] - A) + (pv_hi - pv_lo)[None, :]
    if top_r == 0:
        return rest
    ev_J = EVOU[torch.arange(v, device=J.device)[:, None], J]  # [x, r]
    step = max(1, CHUNK_ELEMENTS // (v * J.shape[1]))  # rows x per block: memory O(2^20)
    coupled = iv.cat(
        [_coupled_rows(PVOU, J[a : a + step], ev_J[a : a + step]) for a in range(0, v, step)]
    )
    return iv.maximum(coupled - EVOU, rest)


def _coupled_rows(PVOU: Num, J: Tensor, ev_J: Num) -> Num:
    """[x, m] for a block of rows x: max_{j in J(x), j != m} (EVOU[x, j] + pv[m, j]), with
    pv[m, j] = max_p PVOU[p, j] - PVOU[p, m] (-inf where J(x) holds only m)."""
    v = PVOU.shape[-1]
    pv_J = None  # [x, m, r], one position at a time
    for p in range(PVOU.shape[0]):
        diff = PVOU[p][J][:, None, :] - PVOU[p][None, :, None]
        pv_J = diff if pv_J is None else iv.maximum(pv_J, diff)
    is_m = J[:, None, :] == torch.arange(v, device=J.device)[None, :, None]
    return (ev_J[:, None, :] + pv_J).masked_fill(is_m, NEG_INF).amax(dim=-1)


def tables(paths: PathMatrices, top_r: int) -> Tables:
    """All O(v^2) tables of the proof (module docstring)."""
    s, R, e_pos = _attention(paths)
    g = coupled_g(paths, top_r)
    return Tables(
        s=s,
        P_hi=iv.running_max(s, dim=-1),
        P_lo=iv.running_min(s, dim=-1),
        R=R,
        e_pos=e_pos,
        E=_direct(paths),
        g=g,
        G=iv.running_max(g, dim=0),
    )


@dataclass(frozen=True)
class Rows:
    """Per row (q[r], m[r]): the fixed terms and the threshold theta [r, c] of each set size c
    (lower ends; c = 0 holds -K, proven iff > 0; -inf where the cell is empty), with theta_hi
    >= the upper ends (balls only: what a tighter arithmetic could reach)."""

    q: Tensor
    m: Tensor
    R: Num
    E: Num
    theta: Tensor
    theta_hi: Tensor


def _fast_slack(paths: PathMatrices, arith: Arithmetic) -> float:
    """float64 mode: what underflow can hide in a threshold or a sum of terms, UNDERFLOW_SLACK
    (k + 2)(V + 1) (proofs/separable.py); 0 in the rigorous arithmetics."""
    if arith is not Arithmetic.FAST:
        return 0.0
    V = sum(2 * float(x.abs().amax()) for x in (paths.EUPU, paths.EVOU, paths.PVOU))
    return UNDERFLOW_SLACK * (paths.n_ctx + 2) * (V + 1)


def row_thresholds(t: Tables, q: Tensor, m: Tensor, k: int, slack: float) -> Rows:
    """theta [r, c] for c = 0 .. k-1 (module docstring, 3). Each extreme theta is computed as
    -(W_M on_max + query) / W_S with W_M the sum of the complementary weights themselves (not
    W - W_S, nor on_max - K / W_S: that cancels, and float64 mode would round a threshold of
    size |query| / W_S into one of size 2^-52 |on_max|)."""
    R, E = t.R[q, m], t.E[q, m]
    W_all = t.e_pos[q]  # [r, k]
    W = W_all[:, : k - 1]
    e_max = iv.exp(t.s[q, m] - R)
    w_query = iv.exp(t.s[q, q] - R) * W_all[:, k - 1]
    on_max = e_max * (E + t.g[m, m])
    query = w_query * (E + t.g[q, m])
    if slack:
        query = query + slack
    low, high = _extreme_sums(iv.sort_values(W, dim=-1))

    def theta(w: Num, w_rest: Num | None) -> Num:
        return -(query if w_rest is None else w_rest * on_max + query) / w

    cols: list[Num] = [-(high[k - 1] * on_max + query) if k > 1 else -query]
    for c in range(1, k):
        rest = k - 1 - c
        cols.append(iv.minimum(theta(low[c], high[rest]), theta(high[c], low[rest])))
    theta_all = iv.stack(cols, dim=-1)
    w_max_min = e_max * W.amin(dim=-1) if k > 1 else e_max  # (k = 1: no max position)
    fixed_ok = _fixed_weights_ok(w_query, w_max_min, q == m, k)
    lo = torch.where(fixed_ok, _finite_or(iv.lower(theta_all), NEG_INF), NEG_INF)
    with uncounted():  # only decides whether a tighter arithmetic could prove more
        hi = torch.where(fixed_ok, _finite_or(iv.upper(theta_all), NEG_INF), NEG_INF)
    return Rows(q, m, R, E, lo, hi)


def _extreme_sums(ordered: Num) -> tuple[list[Num | None], list[Num | None]]:
    """(low, high): low[c] / high[c] = the sum of the c smallest / largest entries of each row
    of `ordered` (ascending order statistics), None for c = 0."""
    n = ordered.shape[-1]
    low: list[Num | None] = [None]
    high: list[Num | None] = [None]
    for c in range(1, n + 1):
        a, b = ordered[:, c - 1], ordered[:, n - c]
        low.append(a if low[-1] is None else low[-1] + a)
        high.append(b if high[-1] is None else high[-1] + b)
    return low, high


def _fixed_weights_ok(w_query: Num, w_max_min: Num, q_eq_m: Tensor, k: int) -> Tensor:
    """bool [r, c]: the cell of size c is non-empty (q < m needs a max position: c < k-1) and
    some fixed weight of every position set of that size, as computed, is >= UNDERFLOW_GUARD
    (the query's, or, when a max position exists, the smallest max-token weight)."""
    big_query = iv.mid(w_query) >= UNDERFLOW_GUARD
    big_max = iv.mid(w_max_min) >= UNDERFLOW_GUARD
    c = torch.arange(k, device=q_eq_m.device)[None, :]
    has_max = c < k - 1
    nonempty = has_max | q_eq_m[:, None]
    return nonempty & (big_query[:, None] | (big_max[:, None] & has_max))


def _prefix_bound(t: Tables, rows: Rows, y: Tensor) -> Num:
    """B [r, n] >= h[q, m, x] for every x <= y [r, n] (module docstring, 2); 0 <= y <= m.
    The exponent is P+ where val may be >= 0 (then B's upper end is >= max(0, exp(P+ - R)
    val) >= h, whatever the sign of the exact val), else P-. Every exponent is <= ~0
    (y <= m, R the row maximum), so one ball radius fits them all."""
    q, m = rows.q[:, None], rows.m[:, None]
    val = rows.E[:, None] + t.G[y, m]
    P = iv.where(iv.upper(val) >= 0, t.P_hi[q, y], t.P_lo[q, y])
    return iv.exp(P - rows.R[:, None]) * val


def _term(t: Tables, rows: Rows, x: Tensor) -> Num:
    """h [r, n, w] = e_tok[q, m, x] (E[q, m] + g'[x, m]) for tokens x [r, n, w] (x <= m)."""
    q, m = rows.q[:, None, None], rows.m[:, None, None]
    return iv.exp(t.s[q, x] - rows.R[:, None, None]) * (rows.E[:, None, None] + t.g[x, m])


def _bisect(t: Tables, rows: Rows, theta: Tensor) -> Tensor:
    """Y [r, n] in -1 .. m-1 (one column per threshold theta [r, n]): the largest prefix end
    a binary descent finds whose bound passed (B[Y] < theta), else -1. Only a y whose test
    passed is ever kept, so soundness does not rest on B being monotone."""
    v = t.s.shape[-1]
    m = rows.m[:, None]
    Y = torch.full_like(theta, -1, dtype=torch.long)
    step = 1 << max(0, (v - 1).bit_length() - 1)  # the largest power of two below v
    while step:
        y = Y + step
        inside = y < m
        bound = _prefix_bound(t, rows, torch.where(inside, y, 0))
        passed = inside & iv.certainly_below(bound, theta)
        Y = torch.where(passed, y, Y)
        step >>= 1
    return Y


def _extend(
    t: Tables, rows: Rows, Y: Tensor, theta: Tensor, theta_hi: Tensor, window: int
) -> tuple[Tensor, Tensor]:
    """(Y' [r, n], undecided [r, n]): Y extended over the tokens Y+1 .. Y+window (< m) that
    pass one by one with their own term; undecided where the first failing one might pass
    in a tighter arithmetic."""
    if window == 0:
        return Y, torch.zeros_like(Y, dtype=torch.bool)
    x = Y[..., None] + 1 + torch.arange(window, device=Y.device)
    m = rows.m[:, None, None]
    present = x < m
    h = _term(t, rows, torch.minimum(x, m))
    passing = iv.certainly_below(h, theta[..., None]) & present
    run = passing.long().cummin(dim=-1).values.sum(dim=-1)
    with uncounted():
        nxt = run.clamp(max=window - 1)[..., None]
        could = (iv.lower(h) < theta_hi[..., None]).gather(-1, nxt)[..., 0]
        undecided = (run < window) & present.gather(-1, nxt)[..., 0] & could
    return Y + run, undecided


def members(t: Tables, rows: Rows, k: int, window: int) -> tuple[Tensor, int]:
    """(Y [r, c-1] for c = 1 .. k-1 (members of cell (r, c): tokens 0 .. Y), undecided count:
    cells whose next token, or whose c = 0 test -K > 0, a tighter arithmetic might pass).
    All set sizes at once."""
    with uncounted():
        undecided = int(((rows.theta[:, 0] <= 0) & (rows.theta_hi[:, 0] > 0)).sum())
    theta, theta_hi = rows.theta[:, 1:], rows.theta_hi[:, 1:]
    Y, maybe = _extend(t, rows, _bisect(t, rows, theta), theta, theta_hi, window)
    undecided += int((maybe & (theta_hi > NEG_INF)).sum())
    return torch.where(theta > NEG_INF, Y, -1), undecided


def cell_count(rows: Rows, ends: Tensor, k: int, v: int) -> int:
    """sum over rows of [-K > 0] + sum_c C(k-1, c) (Y + 1)^c (exact Python int)."""
    total = int((rows.theta[:, 0] > 0).sum())
    for c in range(1, k):
        total += math.comb(k - 1, c) * _count_powers(ends[:, c - 1] + 1, c, v)
    return total


def cells(
    paths: PathMatrices, top_r: int, window: int, arith: Arithmetic
) -> tuple[list[tuple[Rows, Tensor]], int]:
    """Per chunk of rows (q <= m; at most CHUNK_ELEMENTS / (k (window + 1)) of them, so the
    per-chunk tensors stay O(CHUNK_ELEMENTS) whatever the payload): the thresholds and the
    prefix ends Y [r, c]; and the number of undecided comparisons."""
    v, k = paths.d_vocab, paths.n_ctx
    t = tables(paths, top_r)
    slack = _fast_slack(paths, arith)
    q, m = _rows(v, paths.EUPU.device)
    step = max(1, CHUNK_ELEMENTS // (k * (window + 1)))  # rows per chunk: O(2^20) entries
    out, undecided = [], 0
    for start in range(0, len(q), step):
        chunk = slice(start, start + step)
        rows = row_thresholds(t, q[chunk], m[chunk], k, slack)
        ends, maybe = members(t, rows, k, window)
        out.append((rows, ends))
        undecided += maybe
    return out, undecided


def count_paths(paths: PathMatrices, top_r: int, window: int, arith: Arithmetic) -> int:
    """The number of inputs the proof certifies from these path matrices (analysis: e.g.
    counterfactual matrices in the noise experiment)."""
    chunks, _ = cells(paths, top_r, window, arith)
    return sum(cell_count(r, e, paths.n_ctx, paths.d_vocab) for r, e in chunks)


def _params(payload: dict[str, Any], v: int) -> tuple[int, int]:
    """(top_r, window) from the payload (absent: the defaults, at most v); ints in 0 .. v."""
    out = []
    for key, default in (("top_r", DEFAULT_TOP_R), ("window", DEFAULT_WINDOW)):
        value = payload.get(key, min(default, v))
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= v:
            raise CertificateError(f"separable-subcubic payload: {key} must be an int in 0..{v}")
        out.append(value)
    return out[0], out[1]


class SeparableSubcubic(Strategy):
    id = "separable-subcubic"
    group = "separable-subcubic"
    leading_complexity = "subcubic"
    complexity = "O(v^2 (d + k r) + k v^2 (log v + w))"
    description = (
        "separable-lite's cells in O(v^2) work: top-r coupled value bound, members as a prefix "
        "of tokens found by bisection on prefix-max tables plus w exact tokens, one threshold "
        "per set size."
    )

    def unexplained_dims(self, cfg: ModelConfig) -> int:
        """EUPU, EVOU, EQKE (v^2 each), PVOU and EQKP (k v each), as separable-lite."""
        v, k = cfg.d_vocab, cfg.n_ctx
        return 3 * v * v + 2 * k * v

    def search(self, model: AttnOnlyTransformer) -> dict[str, Any]:
        """The fixed parameters (no search: the bisection inside verification is the proof's
        own, O(log v) per cell)."""
        v = model.cfg.d_vocab
        return {"top_r": min(DEFAULT_TOP_R, v), "window": min(DEFAULT_WINDOW, v)}

    def _cells(
        self, model: AttnOnlyTransformer, payload: dict[str, Any], arith: Arithmetic
    ) -> tuple[list[tuple[Rows, Tensor]], int]:
        top_r, window = _params(payload, model.cfg.d_vocab)
        return cells(path_matrices(model, arith), top_r, window, arith)

    def verify_in(
        self, model: AttnOnlyTransformer, payload: dict[str, Any], arith: Arithmetic
    ) -> Verdict:
        """Memory O(k v^2 + CHUNK_ELEMENTS) floats whatever the weights' values and the
        payload (module docstring)."""
        v, k = model.cfg.d_vocab, model.cfg.n_ctx
        chunks, undecided = self._cells(model, payload, arith)
        correct = sum(cell_count(rows, ends, k, v) for rows, ends in chunks)
        return Verdict(correct, model.cfg.n_inputs, {}, undecided, arith)

    def proven_in(
        self,
        model: AttnOnlyTransformer,
        payload: dict[str, Any],
        tokens: Tensor,
        arith: Arithmetic,
    ) -> Tensor:
        """An input (query q, max m, c non-query positions below m) is proven iff c = 0 and
        -K > 0, or c >= 1 and every non-max token is <= Y of its cell."""
        v = model.cfg.d_vocab
        chunks, _ = self._cells(model, payload, arith)
        theta0 = torch.cat([rows.theta[:, 0] for rows, _ in chunks])
        ends = torch.cat([e for _, e in chunks])
        q, m = torch.cat([r.q for r, _ in chunks]), torch.cat([r.m for r, _ in chunks])
        tokens = tokens.to(q.device)
        mx = tokens.max(dim=-1).values
        row = _row_index(v, q, m, tokens)
        below = tokens[:, :-1] < mx[:, None]
        c = below.sum(dim=-1)
        none = torch.full((len(ends), 1), -1, dtype=ends.dtype, device=ends.device)
        Y = torch.cat([none, ends], dim=1)[row, c]  # c = 0: unused
        fine = torch.where(below, tokens[:, :-1] <= Y[:, None], True).all(dim=-1)
        return torch.where(c == 0, theta0[row] > 0, fine & (Y >= 0))
