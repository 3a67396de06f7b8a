"""Proof search for the sub-cubic family (SPEC §6.9): free, not part of the proof.

Shared per model: the size/query directions (top singular vectors of EQKE_bar), the second
directions, u_Q, u_K and W_EP_direction. Per configuration: the smallest gap per cell for
which the pipeline's bound is negative, with a scalar gap everywhere and the mean-position
query embedding W_E + Pbar (as the original does): scanned chunk by chunk of gaps here, or
bisected (bisect.py) where the bound is monotone in the gap.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

from compact_proofs.proofs.subcubic.bisect import bisect_min_gaps
from compact_proofs.proofs.subcubic.bounds import (
    INF,
    NEG_INF,
    SOUND,
    Variant,
    slot_log_ratio,
    split_eu,
    subcubic_bounds,
)
from compact_proofs.proofs.subcubic.config import EU_HANDLINGS, SubcubicConfig
from compact_proofs.proofs.subcubic.decompose import (
    Directions,
    QKDecomposition,
    Weights64,
    decompose_eqke,
    rowrange,
)
from compact_proofs.proofs.tensor_codec import update_digest

SEARCH_STEP = 8  # gaps evaluated together in the min-gap search (at most)
SEARCH_CELLS = 2**24  # and at most this many (gap, q, m, c) cells at once: bounded memory
CACHE_CELLS = 2**23  # floats kept across calls (EU-independent terms, oldest out first): 64 MiB
# the EU-independent terms of recent searches, shared by configurations that differ only in
# EU handling (the 100 configurations are 20 (error, attention) pairs x 5 EU handlings)
_SHARED: OrderedDict[tuple[Any, ...], dict[str, Tensor]] = OrderedDict()
TERMS_CACHE = 32  # the decompositions and tables of recent searches: O(v^2 + v d) floats each
PRUNE_GRID = 32  # tangent points a = i / PRUNE_GRID of psi_m in the pruning bound (_live_cells)
PRUNE_TOL = 1e-9  # relative margin of the pruning bound over float rounding (~1e-14 relative)
_TERMS: OrderedDict[tuple[Any, ...], Any] = OrderedDict()


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
    floats whatever the weights' values, caches included. Cells that no gap can make
    negative (a lower bound on B over every gap and ordering, `_live_cells`) are skipped, with
    every max token none of whose cells is live: their gap is 1 either way, and every other
    cell's bound is the same float value (a_bar still averages every valid query of a live
    max token). A configuration without mean_diff whose bound is monotone in the gap is
    bisected instead where that is cheaper (bisect.py: the same gaps, O(v^2 k log v)).
    Caches: _SHARED (EU-independent terms per (qk, chunk)) holds at most CACHE_CELLS
    floats plus its newest entry (O(SEARCH_CELLS)), _TERMS the last TERMS_CACHE
    decompositions and tables (O(v^2 + v d) each, keyed by a digest of the weights and
    directions; not used in rigorous arithmetic), _chunk_cells the current cell layout
    (O(SEARCH_CELLS) integers). `qk` overrides the configuration's EQKE decomposition (the
    structureless-noise experiment uses this); it is then keyed by its values, not cached.
    """
    v, k = w.W_E.shape[0], w.W_pos.shape[0]
    wkey = _weights_key(w, dirs)
    qk_key = None if qk is not None or wkey is None else ("qk", wkey, config.error)
    if qk is None:
        qk = _decomposition(w, dirs, config, qk_key)
    plain = all(isinstance(t, Tensor) for t in (qk.EQKE_hat, qk.pos_err, qk.err_bound))
    if not plain or not isinstance(w.attn_scale, float) or k < 2 or v < 2:
        return _find_min_gaps_linear(w, dirs, config, variant, qk)
    return _scan(w, [_Search(w, dirs, config, variant, qk, wkey, qk_key)])[0]


def find_min_gaps_many(
    w: Weights64, dirs: Directions, configs: list[SubcubicConfig], variant: Variant = SOUND
) -> list[Tensor]:
    """`find_min_gaps` of each configuration (the same gaps), computed together: the chunks
    of gaps are the outer loop, so configurations that differ only in EU handling reuse each
    chunk's EU-independent terms while _SHARED still holds them (at v = 512 one chunk's terms
    outgrow the cache, and five sequential searches would compute them five times). Memory:
    `find_min_gaps`'s, plus one [v, v, k] table of gaps per configuration."""
    v, k = w.W_E.shape[0], w.W_pos.shape[0]
    wkey = _weights_key(w, dirs)
    if wkey is None or not isinstance(w.attn_scale, float) or k < 2 or v < 2:
        return [find_min_gaps(w, dirs, config, variant) for config in configs]
    order = sorted(range(len(configs)), key=lambda i: (configs[i].error, configs[i].attention))
    searches = []
    for i in order:
        config, qk_key = configs[i], ("qk", wkey, configs[i].error)
        qk = _decomposition(w, dirs, config, qk_key)
        searches.append(_Search(w, dirs, config, variant, qk, wkey, qk_key))
    gaps = _scan(w, searches)
    return [gaps[order.index(i)] for i in range(len(configs))]


def _decomposition(
    w: Weights64, dirs: Directions, config: SubcubicConfig, qk_key: tuple[Any, ...] | None
) -> QKDecomposition:
    """The configuration's EQKE decomposition, cached under qk_key when there is one."""

    def make() -> QKDecomposition:
        return decompose_eqke(w, dirs, config.error, config.route)

    return make() if qk_key is None else _cached(qk_key, make)


class _Search:
    """One configuration's search state: its tables, live cells and best gaps so far."""

    def __init__(
        self,
        w: Weights64,
        dirs: Directions,
        config: SubcubicConfig,
        variant: Variant,
        qk: QKDecomposition,
        wkey: str | None,
        qk_key: tuple[Any, ...] | None,
    ) -> None:
        v, k = w.W_E.shape[0], w.W_pos.shape[0]
        self.config, self.variant, self.qk = config, variant, qk
        self.terms = _model_terms(w, dirs, config, qk, wkey, qk_key)
        mean_diff = config.uses_mean_diff
        self.live = _live(w, dirs, self.terms, wkey, variant, mean_diff)
        self.live_m = self.live.any(dim=0).nonzero().flatten().tolist()  # with a live cell
        self.live_eu = _live(w, dirs, self.terms, wkey, variant, mean_diff, config.eu)
        if not bool(self.live_eu.any()):
            self.live_m = []  # no cell of this EU handling can be negative: all gaps 1
        self.live_key = hashlib.blake2b(
            self.live.cpu().numpy().tobytes(), digest_size=16
        ).hexdigest()
        self.best = torch.full((v * v * k,), v, dtype=torch.int64, device=w.W_E.device)

    def gaps(self, v: int, k: int) -> Tensor:
        best = self.best.view(v, v, k)
        return torch.where(best < v, best, 1)


def _scan(w: Weights64, searches: list[_Search]) -> list[Tensor]:
    """Every gap chunk (outer) for every search (inner) whose live max tokens reach it,
    except the searches bisected instead (bisect.py: without mean_diff, in the sound rule,
    where the bound is monotone in the gap: the same gaps in O(v^2 k log v))."""
    v, k = w.W_E.shape[0], w.W_pos.shape[0]
    linear = [s for s in searches if s.live_m and not _bisected(w, s)]
    step = max(1, SEARCH_CELLS // (v * v * k))
    stop = max((s.live_m[-1] + 1 for s in linear), default=1)
    for start in range(1, stop, step):
        for s in linear:
            if not s.live_m or start > s.live_m[-1]:
                continue
            chunk = _chunk_cells(
                v, k, start, min(start + step, v), w.W_E.device, s.live, s.live_key
            )
            if chunk.g.numel() == 0:
                continue
            B = _chunk_bounds(w, s.qk, s.terms, chunk, s.config.uses_mean_diff, s.variant)
            grid = torch.where(B < 0, chunk.g_full, v)
            s.best.scatter_reduce_(0, chunk.index, grid.view(-1), "amin")
    return [s.gaps(v, k) for s in searches]


def _bisected(w: Weights64, s: _Search) -> bool:
    """Whether `s` was searched by bisection (its gaps then in s.best)."""
    if s.config.uses_mean_diff or s.variant != SOUND:
        return False
    return bisect_min_gaps(s.qk, s.terms, w.attn_scale, s.live_eu, s.best)


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
    index: Tensor  # [N * (k - 1)]: the flat cell (q, m, c) of each (n, c - 1)
    g_full: Tensor  # [N, k - 1]: g
    qm: Tensor  # [N]: q v + m
    q_at: Tensor  # [N]: q v + m - g
    q_eq: Tensor  # [N]: q + v [q == m]
    dense: Tensor  # [N * (k - 1)]: the flat cell (g - start, q, m, c) of each (n, c - 1)
    live: str = ""  # digest of the live-cell mask the layout was built for


_LAYOUT: dict[tuple[Any, ...], _Chunk] = {}  # the current layout: O(SEARCH_CELLS) integers


def _chunk_cells(
    v: int, k: int, start: int, stop: int, device: torch.device, live: Tensor, digest: str
) -> _Chunk:
    """The chunk's cells (q, m) with live[q, m] (live [v(q), v(m)] bool, `digest` of its
    bytes), cached (one layout: at v = 64 the whole search is one chunk, shared by the
    configurations with the same live cells)."""
    key = (v, k, start, stop, str(device), digest)
    if key not in _LAYOUT:
        _LAYOUT.clear()
        _LAYOUT[key] = _make_chunk(v, k, start, stop, device, live, digest)
    return _LAYOUT[key]


def _make_chunk(
    v: int, k: int, start: int, stop: int, device: torch.device, live: Tensor, digest: str
) -> _Chunk:
    g = torch.arange(start, stop, device=device)[:, None, None]
    m = torch.arange(v, device=device)[None, :, None]
    q = torch.arange(v, device=device)[None, None, :]
    live_mq = live.T.to(device)[None]  # [1, m, q]
    triples = (m >= g) & ((q <= m - g) | (q == m)) & live_mq  # [g, m, q]
    pairs = (m >= g)[..., 0] & live_mq.any(dim=-1)  # [g, m]
    pair_id = (pairs.flatten().cumsum(0) - 1).view(pairs.shape)
    gi, mi, qi = triples.nonzero(as_tuple=True)
    pg, pm = pairs.nonzero(as_tuple=True)
    cs = torch.arange(1, k, device=device)
    index = ((qi * v + mi)[:, None] * k + cs).flatten()
    dense = (((gi * v + qi) * v + mi)[:, None] * k + cs).flatten()
    g_full = (gi + start)[:, None].expand(-1, k - 1).contiguous()
    q_eq = qi + v * (qi == mi)
    return _Chunk(
        start, gi + start, qi, mi, pair_id[gi, mi], pg + start, pm,
        index, g_full, qi * v + mi, qi * v + mi - gi - start, q_eq, dense, digest,
    )  # fmt: skip


def _live(
    w: Weights64,
    dirs: Directions,
    terms: dict[str, Any],
    wkey: str | None,
    variant: Variant,
    mean_diff: bool,
    eu: str | None = None,
) -> Tensor:
    """live [v(q), v(m)]: the cells (q, m) to search for some EU handling (the layout the
    five share), or for `eu` alone; with mean_diff every query of a max token with a live
    cell (a_bar averages them all). The sound variant's bounds only (the original's
    mean+diff rule is not bounded below by _live_cells): otherwise all cells."""
    v = w.W_E.shape[0]
    every = torch.ones(v, v, dtype=torch.bool, device=w.W_E.device)
    if variant != SOUND:
        return every
    masks = (
        _live_cells(w, dirs, terms, wkey)
        if wkey is None
        else _cached(("live", wkey), lambda: _live_cells(w, dirs, terms, wkey))
    )
    if masks is None:
        return every
    live = torch.zeros_like(every)
    for handling in EU_HANDLINGS if eu is None else (eu,):
        live |= masks[handling][0 if mean_diff else 1]
    return live.any(dim=0, keepdim=True).expand(v, v) if mean_diff else live


def _live_cells(
    w: Weights64, dirs: Directions, terms: dict[str, Any], wkey: str | None
) -> dict[str, tuple[Tensor, Tensor]] | None:
    """{EU handling: (live_md, live_plain)} [v(q), v(m)]: the cells (q, m), q <= m, whose
    search bound B may be negative for some gap and count c, with / without mean_diff; None
    (no pruning) where some table is not finite.

    Bound. For any j != m and real a_bar, max(e (R_max - W), e (R_min - W)) >= e (R[m, j] - W)
    (R_min <= R[m, j] <= R_max), so with e = A - a_bar (A either attention extreme)
        B >= L[m, j] + a_bar R[m, j] + (1 - a_bar) W + EU_q_err[q] + e (R[m, j] - W)
          = L[m, j] + A R[m, j] + (1 - A) W + EU_q_err[q],
    hence B >= F_m(W) + EU_q_err[q] with F_m(w) = min_{a in [0, 1]} psi_m(a) + (1 - a) w,
    psi_m(a) = max_{j != m} (L[m, j] + a R[m, j]) (A is a sigmoid: in [0, 1]). F_m is
    nondecreasing in w and W = W_run[m - g] >= W_run[q] (q <= m - g; W_run[0] if q = m).
    Without mean_diff (a_bar = 0), also B = psi_m(0) + EU_q_err[q] + (1 - A) W + A R_max
    for the pessimal A, >= psi_m(0) + EU_q_err[q] + min(W, R_max). These are real-number
    bounds on the exact value of the search's formula over its float tables; the float B
    differs from that by rounding, ~1e-14 of the tables' magnitudes: a cell is dropped only
    if its bound exceeds PRUNE_TOL times them (a NaN bound keeps it)."""
    R, R_max, W_run = terms["R"], terms["R_max"], terms["W_run"]
    v = R.shape[0]
    q = torch.arange(v, device=R.device)
    diagonal = q[:, None] == q[None, :]
    w_q = torch.where(diagonal, W_run[0], W_run[:, None])  # [q, m]
    values, inverse = torch.unique(W_run, return_inverse=True)  # F_m at W_run's values only
    at = torch.where(diagonal, inverse[0], inverse[:, None])  # [q, m]: w_q = values[at]
    upper = q[:, None] <= q[None, :]
    masks = {}
    for eu in EU_HANDLINGS:
        L, EU_q_err = _eu_table(w, dirs, terms, eu, wkey)
        tables = (L, R, W_run, EU_q_err)
        if not all(bool(torch.isfinite(t).all()) for t in tables):
            return None
        tol = PRUNE_TOL * (sum(float(t.abs().max()) for t in tables) + 1.0)
        Lg, Rg = _tangents(L.masked_fill(terms["eye"], NEG_INF), R)
        F = _min_over_attention(Lg, Rg, values[:, None])  # [value, m]
        lb_md = F.gather(0, at) + EU_q_err[:, None]
        lb_plain = Lg[0][None, :] + EU_q_err[:, None] + torch.minimum(w_q, R_max[None, :])
        masks[eu] = ~(lb_md > tol) & upper, ~(torch.maximum(lb_md, lb_plain) > tol) & upper
    return masks


def _tangents(L_masked: Tensor, R: Tensor) -> tuple[Tensor, Tensor]:
    """(Lg, Rg) [PRUNE_GRID + 1, m]: the line L[m, j] + a R[m, j] that attains psi_m at
    a_i = i / PRUNE_GRID (j != m: L_masked is -inf at j = m); psi_m >= each of them."""
    Lg, Rg = [], []
    for i in range(PRUNE_GRID + 1):
        j = (L_masked + (i / PRUNE_GRID) * R).argmax(dim=-1, keepdim=True)
        Lg.append(L_masked.gather(-1, j)[:, 0])
        Rg.append(R.gather(-1, j)[:, 0])
    return torch.stack(Lg), torch.stack(Rg)


def _min_over_attention(Lg: Tensor, Rg: Tensor, w: Tensor) -> Tensor:
    """A lower bound [n, m] on F_m(w) = min_{a in [0, 1]} psi_m(a) + (1 - a) w (w [n, 1]).

    On [a_i, a_i+1], psi_m + (1 - a) w >= max(f1, f2), the tangent lines at both ends plus
    (1 - a) w, and max(f1, f2) >= lam f1 + (1 - lam) f2 for any lam in [0, 1]: a linear
    function, whose minimum over the segment is at an end. lam = 1 if f1 rises, 0 if f2
    falls, else the flat combination (any lam is valid; rounding only affects tightness)."""
    best = torch.full((w.shape[0], Lg.shape[1]), float("inf"), dtype=w.dtype, device=w.device)
    for i in range(PRUNE_GRID):
        s1, s2 = Rg[i][None, :] - w, Rg[i + 1][None, :] - w
        lam = torch.where(s1 >= 0, 1.0, torch.where(s2 <= 0, 0.0, s2 / (s2 - s1)))
        for a in (i / PRUNE_GRID, (i + 1) / PRUNE_GRID):
            f1 = (Lg[i] + a * Rg[i])[None, :]  # the tangent lines at a, then lam-combined
            f2 = (Lg[i + 1] + a * Rg[i + 1])[None, :]
            best = torch.minimum(best, f2 + lam * (f1 - f2) + (1 - a) * w)
    return best


def _weights_key(w: Weights64, dirs: Directions) -> str | None:
    """A digest of the weights and directions (values, shapes, dtypes, devices), or None
    where some weight is not a plain tensor (rigorous arithmetic: nothing is cached)."""
    digest = hashlib.blake2b()
    for value in [getattr(w, f.name) for f in fields(w)] + [
        getattr(dirs, f.name) for f in fields(dirs)
    ]:
        if isinstance(value, Tensor):
            update_digest(digest, value)
        elif value is None or isinstance(value, float):
            digest.update(repr(value).encode())
        else:
            return None
    return digest.hexdigest()


def _cached(key: tuple[Any, ...], make: Any) -> Any:
    """make(), kept in _TERMS (the last TERMS_CACHE results, each O(v^2 + v d) floats)."""
    if key in _TERMS:
        _TERMS.move_to_end(key)
        return _TERMS[key]
    value = _TERMS[key] = make()
    while len(_TERMS) > TERMS_CACHE:
        del _TERMS[next(iter(_TERMS))]
    return value


def _weight_terms(w: Weights64) -> dict[str, Tensor]:
    """The configuration-independent tables: OU, EVOU and those of largest_wrong_logit."""
    v = w.W_E.shape[0]
    eye = torch.eye(v, dtype=torch.bool, device=w.W_E.device)
    OU = w.W_O @ w.W_U
    EVOU = w.W_E @ (w.W_V @ OU)
    PVOU = w.W_pos @ (w.W_V @ OU)
    value_bias = w.value_bias(OU)
    if value_bias is not None:
        PVOU = PVOU + value_bias
    R = EVOU - EVOU.diagonal()[:, None]
    return {
        "EVOU": EVOU,
        "PVOU_pess": (PVOU[:, None, :] - PVOU[:, :, None]).amax(dim=0),
        "eye": eye,
        "R": R,
        "R_max": R.masked_fill(eye, -INF).amax(dim=-1),
        "R_min": R.masked_fill(eye, INF).amin(dim=-1),
        "W_run": rowrange(EVOU).cummax(dim=0).values,
    }


def _eu_table(
    w: Weights64, dirs: Directions, terms: dict[str, Tensor], eu: str, wkey: str | None
) -> tuple[Tensor, Tensor]:
    """(L [m, j] = EU_mean[j] - EU_mean[m] + PVOU_pess[m, j], EU_q_err [q]) of EU handling
    `eu` with the search's query embedding E_bar (cached in _TERMS when wkey is given)."""

    def make() -> tuple[Tensor, Tensor]:
        args = (w.E_bar, w.W_U, eu, dirs.W_EP_direction, w.direct_bias())
        EU_mean, EU_q_err = split_eu(*args)
        return (EU_mean[None, :] - EU_mean[:, None]) + terms["PVOU_pess"], EU_q_err

    return make() if wkey is None else _cached(("eu", wkey, eu), make)


def _model_terms(
    w: Weights64,
    dirs: Directions,
    config: SubcubicConfig,
    qk: QKDecomposition,
    wkey: str | None,
    qk_key: tuple[Any, ...] | None,
) -> dict[str, Any]:
    """The configuration's gap-independent tables, as bounds.subcubic_bounds and
    largest_wrong_logit compute them, and the key of everything the EU-independent part
    depends on (qk, attn_scale, EVOU: qk_key, or a digest of their values)."""
    terms = _weight_terms(w) if wkey is None else _cached(("w", wkey), lambda: _weight_terms(w))

    L, EU_q_err = _eu_table(w, dirs, terms, config.eu, wkey)
    if qk_key is None:
        digest = hashlib.blake2b(repr((w.attn_scale, terms["EVOU"].device)).encode())
        for t in (qk.EQKE_hat, qk.pos_err, qk.err_bound, terms["EVOU"]):
            update_digest(digest, t)
        key: Any = digest.hexdigest()
    else:
        key = qk_key
    log_ratio = slot_log_ratio(qk.pos_err, w.attn_scale)[..., 1:]  # [o, q == m, q, c >= 1]
    flat = [log_ratio[o].flatten(0, 1) for o in range(2)]  # [(q == m) v + q, c >= 1] per o
    return {**terms, "key": key, "L": L, "EU_q_err": EU_q_err, "log_ratio": flat}


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
    shared = _shared_terms(w, qk, terms, chunk, mean_diff, variant)
    L, eye, pm = terms["L"], terms["eye"], chunk.pair_m
    if not mean_diff:  # a_bar = 0 (aR = 0 R): M_bar depends on m alone
        M_bar = (L + shared["aR"]).masked_fill(eye, -INF).amax(dim=-1)[pm][:, None]
    elif bool(torch.isfinite(L).all()):  # L + -inf = -inf: the mask is folded into aR
        M_bar = (L.index_select(0, pm)[:, None, :] + shared["aR"]).amax(dim=-1)
    else:
        a_bar_R = shared["a_bar_p"][..., None] * terms["R"][pm][:, None, :]
        M_bar = (L[pm][:, None, :] + a_bar_R).masked_fill(eye[pm][:, None, :], -INF).amax(-1)
    base = (M_bar + shared["aW"]).index_select(0, chunk.pair)
    base = base + terms["EU_q_err"].index_select(0, chunk.q)[:, None]
    return base + shared["T"]


def _shared_terms(
    w: Weights64,
    qk: QKDecomposition,
    terms: dict[str, Tensor],
    chunk: _Chunk,
    mean_diff: bool,
    variant: Variant,
) -> dict[str, Tensor]:
    """The EU-independent terms of the chunk, from the cache _SHARED (at most CACHE_CELLS
    floats across entries, oldest out first, and always the newest entry: each is
    O(SEARCH_CELLS) floats): a_bar_p, T, aW = (1 - a_bar_p) W_run[m - g] per pair and aR =
    a_bar_p R[m] per pair (-inf where q = m), or 0 R [v, v] without mean_diff."""
    key = (terms["key"], chunk.start, chunk.g.shape[0], chunk.live, mean_diff, variant)
    shared = _SHARED.get(key)
    if shared is not None:
        _SHARED.move_to_end(key)
        return shared
    shared = _attention_terms(w, qk, terms, chunk, mean_diff, variant)
    a_bar_p, R, pm = shared["a_bar_p"], terms["R"], chunk.pair_m
    shared["aW"] = (1 - a_bar_p) * terms["W_run"][pm - chunk.pair_g][:, None]
    if mean_diff:
        aR = a_bar_p[..., None] * R[pm][:, None, :]
        shared["aR"] = aR.masked_fill_(terms["eye"][pm][:, None, :], -INF)
    else:
        shared["aR"] = a_bar_p[0, 0] * R
    _SHARED[key] = shared
    while sum(_numel(s) for s in _SHARED.values()) > CACHE_CELLS and len(_SHARED) > 1:
        del _SHARED[next(iter(_SHARED))]
    return shared


def _numel(shared: dict[str, Tensor]) -> int:
    return sum(t.numel() for t in shared.values())


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
    v, at = qk.EQKE_hat.shape[0], chunk.m - chunk.g
    E = qk.EQKE_hat.contiguous()
    own, err = E.view(-1).index_select(0, chunk.qm), qk.err_bound.index_select(0, chunk.q)
    D_lo = (own - E.cummax(dim=-1).values.view(-1).index_select(0, chunk.q_at)) - err
    D_hi = (own - E.cummin(dim=-1).values.view(-1).index_select(0, chunk.q_at)) + err
    log_ratio = terms["log_ratio"]  # per ordering o: [(q == m) v + q, c >= 1]
    A_lo, A_hi = (
        torch.sigmoid(D[:, None] / w.attn_scale + log_ratio[o].index_select(0, chunk.q_eq))
        for o, D in enumerate((D_lo, D_hi))
    )
    W = terms["W_run"].index_select(0, at)[:, None]
    R_max = terms["R_max"].index_select(0, chunk.m)[:, None]
    R_min = terms["R_min"].index_select(0, chunk.m)[:, None]
    a_sel = torch.where(R_max >= W, A_hi, A_lo)
    a_bar_p = _pair_a_bar(a_sel, chunk, v, mean_diff)
    a_bar_q = a_bar_p.index_select(0, chunk.pair)
    if not variant.sound_mean_diff:
        return {"a_bar_p": a_bar_p, "T": (a_sel - a_bar_q) * (R_max - W)}
    X, R_max_W, R_min_W = [], R_max - W, R_min - W
    for a in (A_lo, A_hi):
        e = a - a_bar_q
        X.append(torch.maximum(e * R_max_W, e * R_min_W))
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
    dense.view(-1)[chunk.dense] = a_sel.view(-1)
    sums = dense.sum(dim=1)  # [g, m, c]
    n_valid = chunk.pair_m - chunk.pair_g + 2  # q in 0..m-g, and q = m
    return sums[chunk.pair_g - chunk.start, chunk.pair_m, 1:] / n_valid[:, None]
