"""The cubic proof (SPEC §5): brute force on each path matrix, O(v^3 k^2).

Cells. Every input x (query q = x[k-1], max m) lies in exactly one cell (q, m, c), where c is
the number of *non-query* positions holding a token < m (the query is never counted in c):
q <= m; 0 <= c <= k-2 if q < m; 0 <= c <= k-1 if q = m. A cell with c >= 1 is examined per
non-max token t < m through the "pure" sequences whose c non-max positions all hold t.

Bound. For every cell and t the proof computes B[q, m, t, c] >= max_{j != m} (l_j - l_m) over
all pure sequences of the cell with token t, and B0[q, m] for c = 0 (no choice of tokens):

    PVOU_pess[m, j] = max_p (PVOU[p, j] - PVOU[p, m])
    EUPU_pess[q, m] = max_{j != m} (EUPU[q, j] - EUPU[q, m])
    g[m, x]         = max_{j != m} (EVOU[x, j] - EVOU[x, m] + PVOU_pess[m, j])
    B  = EUPU_pess[q, m]
         + max_{o in {0,1}} (A_max^o g[m, m] + A_qry^o g[m, q] + A_nmx^o g[m, t])
    B0 = max_{j != m} (EUPU_c[q, m, j] + PVOU_pess[m, j]
                       + A_max EVOU_c[m, m, j] + A_qry EVOU_c[m, q, j])

where A_max / A_nmx / A_qry are the softmax weights on the max positions / the non-max
positions / the query (when q != m) under ordering o: the max tokens placed at the non-query
positions with the smallest (o = 0) or largest (o = 1) positional score EQKP[q, p].

Soundness (why checking pure sequences with two orderings suffices):
1. With sum_p alpha_p = 1 and alpha_p >= 0, for every j != m:
   l_j - l_m <= EUPU_pess[q, m] + sum_p alpha_p g[m, x_p]; the right side is independent of j.
2. Fix the cell and the set S of non-max positions. The right side is a ratio
   (N0 + sum_{p in S} e^{P_p} e^{s(x_p)} g(x_p)) / (D0 + sum_{p in S} e^{P_p} e^{s(x_p)}) with
   independent per-position token choices; at its maximum B* every position maximises
   e^{P_p} e^{s(x)} (g(x) - B*), whose maximiser does not depend on p (e^{P_p} > 0). So the
   worst case over all allowed token assignments is a pure sequence (same t everywhere).
3. For a pure sequence, the bound is a linear-fractional, hence monotone, function of
   X = sum_{p holding m} e^{P_p}; X is extremal when the max tokens sit at the positions with
   the smallest or largest positional scores: orderings 0 and 1.
4. Hence if B[q, m, t, c] < 0 for every t in a set G, every sequence of the cell whose c
   non-max tokens all lie in G is correct: C(k-1, c) |G|^c sequences. A c = 0 cell is a
   single sequence with a single attention pattern; only PVOU is pessimised in B0.

Counting: correct = #{valid (q, m): B0 < 0} + sum_{valid (q,m,c), c>=1} C(k-1, c) N^c with
N = #{t < m: B[q, m, t, c] < 0}. The cells partition all v^k inputs (SPEC §12.4).

Arithmetic (compact_proofs.soundness.arithmetic): the same formulas run on balls (float64 with one
certified radius per tensor) or intervals that enclose their exact real values, a cell
counting only if its whole enclosure lies below 0 (docs/soundness.md); or, with --fast, in
plain float64 with strict `< 0` tests. The proof works in chunks of max tokens, which
partition the inputs; the default falls back from balls to intervals chunk by chunk
(`chunk_proofs`), so a few undecided cells cost one chunk in intervals, not the whole proof.
Orderings under uncertainty: step 3 needs only the extremes of X, and the order statistics of
enclosed positional scores are enclosed by sorting (interval.sort_values).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from math import comb
from typing import Any

import torch
from torch import Tensor

from compact_proofs.model.transformer import AttnOnlyTransformer, ModelConfig
from compact_proofs.proofs.base import Strategy, Verdict
from compact_proofs.proofs.flops import charge, count_flops, uncounted
from compact_proofs.proofs.paths import PathMatrices, path_matrices
from compact_proofs.soundness import interval as iv
from compact_proofs.soundness.arithmetic import Arithmetic
from compact_proofs.soundness.interval import Num

NEG_INF = float("-inf")
CHUNK_ELEMENTS = 2**23  # cells (ordering x q x m x t) per chunk of max tokens
BLOCK_ELEMENTS = 2**21  # and per block of non-max tokens: 16 MB float64 temporaries, below
# glibc's 32 MB mmap threshold, so freed blocks are reused instead of mapped afresh (page faults)


@dataclass(frozen=True)
class CubicTables:
    """B0 [q, m] (c = 0) and B [q, m, t, c] (index c = 1..k-1 at c-1): upper bounds on
    max_{j != m}(l_j - l_m); `good0`/`good` mark the valid cells/tokens proven negative;
    `undecided` counts the valid ones neither proven nor refuted by the enclosure."""

    B0: Num
    B: Num | None  # None when not kept (cubic_tables' keep_bounds)
    good0: Tensor
    good: Tensor
    undecided: int = 0


def _max_over_j_not_m(x: Num, ms: Tensor) -> Num:
    """max over the last axis j of x[..., m, j], excluding j = ms[m] (m: second-last axis)."""
    return x.masked_fill(_is_m(ms, x.shape[-1]), NEG_INF).amax(dim=-1)


def pessimised_ov(paths: PathMatrices, ms: Tensor, r: int) -> tuple[Num, Num, Num, Num]:
    """(PVOU_pess [m, j], EUPU_c [q, m, j], EVOU_c [m, x, j], g [m, x]) as in the docstring,
    for the max tokens `ms` and the tokens q, x < r (no larger token occurs with them)."""
    PVOU, EUPU, EVOU = paths.PVOU, paths.EUPU[:r], paths.EVOU
    PVOU_pess = (PVOU[:, None, :] - PVOU[:, ms, None]).amax(dim=0)  # [m, j]
    EUPU_c = EUPU[:, None, :] - EUPU[:, ms, None]  # [q, m, j] = EUPU[q, j] - EUPU[q, m]
    EVOU_c = EVOU[None, :r, :] - EVOU.T[ms, :r, None]  # [m, x, j] = EVOU[x, j] - EVOU[x, m]
    is_m = _is_m(ms, EVOU.shape[0])  # [m, j]
    g = (EVOU_c + PVOU_pess[:, None, :]).masked_fill(is_m[:, None, :], NEG_INF).amax(dim=-1)
    return PVOU_pess, EUPU_c, EVOU_c, g


def _is_m(ms: Tensor, v: int) -> Tensor:
    """is_m[i, j] = (j == ms[i]): the column excluded from max_{j != m}."""
    return ms[:, None] == torch.arange(v, device=ms.device)[None, :]


def three_way_softmax(a: Num, b: Num, c: Num) -> tuple[Num, Num, Num]:
    """Softmax weights of three groups of positions given each group's log-sum-exp score.

    Equals summing softmax over the individual positions of each group; stable (every
    exponent is <= 0 and one is 0). A group with no positions has score -inf and weight 0.
    The shift is an exact point (any real shift gives the same weights), so enclosures of
    the scores give enclosures of the exact weights (`iv.softmax`).
    """
    wa, wb, wc = iv.softmax([a, b, c])
    return wa, wb, wc


def cubic_tables(
    paths: PathMatrices, m_range: range | None = None, keep_bounds: bool = True
) -> CubicTables:
    """Compute B0, B and the proven masks (SPEC §5.3–§5.5) for one single-head model, for the
    max tokens in `m_range` (default: all; the m axis of every table then indexes it).
    `keep_bounds=False` leaves B out (None): the count needs only the masks, and B is the
    largest table (v k floats per cell (q, m)).

    Attention: with the max tokens at the n_max non-query positions of an ordering, the
    softmax weight of a group of positions holding token x is exp(s[q, x] + logsumexp of
    their positional scores), so only O(v k^2) log-sums of positional scores are needed.
    """
    v, k = paths.d_vocab, paths.n_ctx
    device = paths.EUPU.device
    m_range = range(v) if m_range is None else m_range
    ms = torch.arange(m_range.start, m_range.stop, device=device)
    r = m_range.stop  # queries and non-max tokens are < r: the q and t axes stop there
    s_tok = paths.EQKE[:r] / paths.attn_scale  # [q, token]
    s_pos = paths.EQKP[:r, : k - 1] / paths.attn_scale  # [q, p] non-query positions
    s_query = (paths.EQKE.diagonal()[:r] + paths.EQKP[:r, k - 1]) / paths.attn_scale  # [q]
    ascending = iv.sort_values(s_pos, dim=-1)
    orders = iv.stack([ascending, ascending.flip(-1)])  # [o, q, slot]
    tok = torch.arange(r, device=device)
    q_eq_m = tok[:, None] == ms[None, :]  # [q, m]
    q_le_m = tok[:, None] <= ms[None, :]
    s_max = s_tok[:, ms]  # [q, m]: token score of the max token

    PVOU_pess, EUPU_c, EVOU_c, g = pessimised_ov(paths, ms, r)
    EUPU_pess = _max_over_j_not_m(EUPU_c, ms)  # [q, m]

    # c = 0: every non-query position holds m; a single attention pattern per (q, m).
    no_positions = torch.full((r,), NEG_INF, dtype=s_tok.dtype, device=device)
    on_max0, _, w_query0 = three_way_softmax(
        s_max + s_pos.logsumexp(dim=-1)[:, None], no_positions[:, None], s_query[:, None]
    )
    A_max0 = iv.where(q_eq_m, on_max0 + w_query0, on_max0)
    A_qry0 = iv.where(q_eq_m, 0.0, w_query0)
    rows = torch.arange(len(ms), device=device)
    evou_mm = EVOU_c[rows, ms]  # [m, j] = EVOU_c[m, m, j]
    evou_mq = EVOU_c.permute(1, 0, 2)  # [q, m, j] = EVOU_c[m, q, j]
    L0 = EUPU_c + PVOU_pess[None] + A_max0[..., None] * evou_mm[None] + A_qry0[..., None] * evou_mq
    B0 = _max_over_j_not_m(L0, ms)
    valid0 = q_eq_m | (q_le_m & (k >= 2))
    good0 = valid0 & iv.certainly_negative(B0)
    undecided = _undecided(B0, valid0, good0)

    # c >= 1: pure sequences with non-max token t at c non-query positions, two orderings.
    B_list, good_list = [], []
    t_lt_m = tok[None, :] < ms[:, None]  # [m, t]
    g_mm = g[rows, ms]  # [m]: g[m, m]
    width = max(1, BLOCK_ELEMENTS // (2 * r * len(ms)))  # non-max tokens t per block
    for c in range(1, k):
        n_max = k - 1 - c  # non-query positions holding m
        log_on_max = orders[..., :n_max].logsumexp(dim=-1)  # [o, q]
        log_on_nonmax = orders[..., n_max:].logsumexp(dim=-1)
        score_max = (s_max[None] + log_on_max[..., None])[..., None]  # [o, q, m, 1]
        valid_qm = q_eq_m | (q_le_m & (c <= k - 2))
        blocks = [
            _pure_block(
                score_max, s_tok[:, t], log_on_nonmax, s_query, q_eq_m, g_mm, g[:, t], g.T,
                EUPU_pess, valid_qm[:, :, None] & t_lt_m[None, :, t],
            )
            for t in (slice(t0, min(t0 + width, r)) for t0 in range(0, r, width))
        ]  # fmt: skip
        if keep_bounds:
            B_list.append(blocks[0][0] if len(blocks) == 1 else iv.cat([b[0] for b in blocks], -1))
        good_list.append(torch.cat([b[1] for b in blocks], dim=-1))
        undecided += sum(b[2] for b in blocks)
    empty = (r, len(ms), r, 0)  # k = 1: there are no c >= 1 cells
    B = (
        iv.stack(B_list, dim=-1)
        if B_list
        else torch.empty(empty, dtype=torch.float64, device=device)
        if keep_bounds
        else None
    )
    good = torch.stack(good_list, dim=-1) if good_list else good0.new_empty(empty)
    return CubicTables(B0=B0, B=B, good0=good0, good=good, undecided=undecided)


def _pure_block(
    score_max: Num,
    s_tok: Num,
    log_on_nonmax: Num,
    s_query: Num,
    q_eq_m: Tensor,
    g_mm: Num,
    g_t: Num,
    g_T: Num,
    EUPU_pess: Num,
    valid: Tensor,
) -> tuple[Num, Tensor, int]:
    """(B [q, m, t], good, undecided) of one count c for a block of non-max tokens t (s_tok
    [q, t], g_t [m, t] and valid [q, m, t] restricted to the block). Every operation is
    entrywise over t (or a reduction over the orderings), so blocks only bound the size of
    the temporaries: the values, radii and FLOPs are those of the whole t axis at once. (Ball
    radii: the sliced s_tok and g keep the magnitudes measured on the whole tensors; the only
    per-block measurements are infinity checks, which run only if g holds infinities, i.e.
    v = 1, a single block. Soundness never depends on it: every rule measures its own input.)"""
    on_max, on_nonmax, w_query = three_way_softmax(
        score_max,  # [o, q, m, 1]
        (s_tok[None] + log_on_nonmax[..., None])[:, :, None, :],  # [o, q, 1, t]
        s_query[None, :, None, None],
    )
    eq = q_eq_m[None, :, :, None]
    A_max = iv.where(eq, on_max + w_query, on_max)
    A_qry = iv.where(eq, 0.0, w_query)
    ov = (
        A_max * g_mm[None, None, :, None]
        + A_qry * g_T[None, :, :, None]
        + on_nonmax * g_t[None, None, :, :]
    )  # g_T[q, m] = g[m, q]; g_t[m, t]
    B = EUPU_pess[:, :, None] + ov.amax(dim=0)  # [q, m, t]
    good = valid & iv.certainly_negative(B)
    return B, good, _undecided(B, valid, good)


def _undecided(B: Num, valid: Tensor, good: Tensor) -> int:
    """Valid cells that some member of B's enclosure would prove but the enclosure does not
    (not part of the proof: uncounted)."""
    if isinstance(B, Tensor):  # plain float64 decides everything
        return 0
    with uncounted():
        return int((valid & iv.possibly_negative(B) & ~good).sum())


def count_correct(tables: CubicTables, k: int) -> int:
    """Exact number of inputs proven correct: #good0 + sum_c C(k-1, c) N[q, m, c]^c."""
    v = tables.B0.shape[0]
    total = int(tables.good0.sum())
    N = tables.good.sum(dim=2)  # [q, m, c-1]: number of proven non-max tokens per cell
    for c in range(1, k):
        histogram = torch.bincount(N[..., c - 1].flatten(), minlength=v + 1).tolist()
        total += comb(k - 1, c) * sum(cnt * n**c for n, cnt in enumerate(histogram) if cnt)
        charge(2 * len(histogram), "python-int counting")
    return total


def proven_mask(tables: CubicTables, tokens: Tensor, m_start: int = 0) -> Tensor:
    """Which of `tokens` [n, k] the proof certifies (bool [n]), for tables of the max tokens
    m_start, m_start + 1, ... (cubic_tables' m_range; inputs with another max token need
    other tables); over all inputs its sum equals `count_correct` (used by the exhaustive
    soundness tests)."""
    q = tokens[:, -1]
    m = tokens.max(dim=-1).values
    row = m - m_start  # the row of m in the tables' m axis
    nonquery = tokens[:, :-1]
    is_nonmax = nonquery < m[:, None]
    c = is_nonmax.sum(dim=-1)
    proven0 = tables.good0[q, row]
    if tables.good.shape[-1] == 0:
        return proven0 & (c == 0)
    c_idx = (c - 1).clamp(min=0)
    per_pos = tables.good[q[:, None], row[:, None], nonquery, c_idx[:, None]]  # [n, k-1]
    proven_c = (per_pos | ~is_nonmax).all(dim=-1)
    return torch.where(c == 0, proven0, proven_c)


def max_token_chunks(v: int) -> list[range]:
    """The chunks of max tokens the verification works in: O(CHUNK_ELEMENTS) cells each."""
    step = max(1, CHUNK_ELEMENTS // (2 * v * v))
    return [range(start, min(start + step, v)) for start in range(0, v, step)]


@dataclass(frozen=True)
class ChunkProof:
    """The proof for the inputs whose max token lies in `m_range`, in `arith`."""

    m_range: range
    arith: Arithmetic
    correct: int
    undecided: int
    flops: int  # of the tables and the count (not the path matrices)


def chunk_proofs(
    model: AttnOnlyTransformer,
    rigorous: bool,
    counted: bool,
    use: Callable[[ChunkProof, CubicTables], None] | None = None,
) -> tuple[list[ChunkProof], int]:
    """The proof chunk by chunk of max tokens, and the FLOPs of the path matrices it uses;
    `use(proof, tables)` sees each chunk's kept tables (B only when there is one chunk).

    float64 (not rigorous): every chunk in float64. Rigorous: every chunk in balls and, if
    the balls left some of its cells undecided, again in intervals, keeping whichever proves
    more there (an abandoned attempt only chose what to verify, like search). The chunks
    partition the inputs by max token, so the counts add up to a proof; its FLOPs are those
    of the chunk proofs kept plus the path matrices of each arithmetic they use. With one
    chunk this is exactly base.Strategy's rule (balls, else intervals, for the whole proof);
    with many, intervals are paid for only where they are needed. Memory, whatever the
    weights' values: one chunk's tables at a time, both attempts' during a fallback
    (O(k max(CHUNK_ELEMENTS, v^2)) booleans; temporaries of O(BLOCK_ELEMENTS) floats), B
    (O(k v^3) floats) only when there is one chunk, and the path matrices of both
    arithmetics."""
    k, chunks = model.cfg.n_ctx, max_token_chunks(model.cfg.d_vocab)
    paths: dict[Arithmetic, tuple[PathMatrices, int]] = {}

    def measured(fn: Callable[[], Any]) -> tuple[Any, int]:
        return count_flops(fn) if counted else (fn(), 0)

    def attempt(arith: Arithmetic, m_range: range) -> tuple[ChunkProof, CubicTables]:
        if arith not in paths:
            paths[arith] = measured(lambda: path_matrices(model, arith))
        keep = len(chunks) == 1
        tables, flops = measured(lambda: cubic_tables(paths[arith][0], m_range, keep))
        correct, flops_count = measured(lambda: count_correct(tables, k))
        return ChunkProof(m_range, arith, correct, tables.undecided, flops + flops_count), tables

    proofs = []
    for m_range in chunks:
        proof, tables = attempt(Arithmetic.BALL if rigorous else Arithmetic.FAST, m_range)
        if proof.undecided:
            tighter = attempt(Arithmetic.INTERVAL, m_range)
            proof, tables = tighter if tighter[0].correct > proof.correct else (proof, tables)
        if use is not None:
            use(proof, tables)
        proofs.append(proof)
    used = {proof.arith for proof in proofs}
    return proofs, sum(flops for arith, (_, flops) in paths.items() if arith in used)


class Cubic(Strategy):
    id = "cubic"
    group = "cubic"
    complexity = "O(v^3 k^2)"
    leading_complexity = "cubic"
    description = "Brute force over each path matrix; pure-sequence convexity argument."

    def unexplained_dims(self, cfg: ModelConfig) -> int:
        """EUPU (v^2) + PVOU (k v) + EQKE (v^2) + EQKP (v k) + EVOU (v^2)."""
        v, k = cfg.d_vocab, cfg.n_ctx
        return 3 * v * v + 2 * k * v

    def verify(
        self, model: AttnOnlyTransformer, payload: dict[str, Any], *, rigorous: bool = True
    ) -> Verdict:
        return _chunked(model, rigorous, counted=False)[0]

    def verify_counted(
        self, model: AttnOnlyTransformer, payload: dict[str, Any], *, rigorous: bool = True
    ) -> tuple[Verdict, int]:
        return _chunked(model, rigorous, counted=True)

    def proven(
        self,
        model: AttnOnlyTransformer,
        payload: dict[str, Any],
        tokens: Tensor,
        *,
        rigorous: bool = True,
    ) -> Tensor:
        """Chunk by chunk, each in the arithmetic its proof kept (sums to the count)."""
        marker = _ProvenMarker(tokens.to(model.W_E.device))
        chunk_proofs(model, rigorous, False, lambda proof, tables: marker(proof.m_range, tables))
        return marker.out

    def verify_in(
        self, model: AttnOnlyTransformer, payload: dict[str, Any], arith: Arithmetic
    ) -> Verdict:
        """The proof in one arithmetic for every chunk (no per-chunk fallback)."""
        paths = path_matrices(model, arith)
        k, one = model.cfg.n_ctx, _one_chunk(model)
        correct, undecided, tables = 0, 0, None
        for m_range in max_token_chunks(model.cfg.d_vocab):
            tables = cubic_tables(paths, m_range, keep_bounds=one)
            correct += count_correct(tables, k)
            undecided += tables.undecided
        details = {"tables": tables} if one else {}
        return Verdict(correct, model.cfg.n_inputs, details, undecided, arith)

    def proven_in(
        self,
        model: AttnOnlyTransformer,
        payload: dict[str, Any],
        tokens: Tensor,
        arith: Arithmetic,
    ) -> Tensor:
        paths = path_matrices(model, arith)
        marker = _ProvenMarker(tokens.to(model.W_E.device))
        for m_range in max_token_chunks(model.cfg.d_vocab):
            marker(m_range, cubic_tables(paths, m_range, keep_bounds=False))
        return marker.out


class _ProvenMarker:
    """Marks, chunk by chunk of max tokens, which of `tokens` [n, k] the proof certifies."""

    def __init__(self, tokens: Tensor) -> None:
        self.tokens, self.m = tokens, tokens.max(dim=-1).values
        self.out = torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)

    def __call__(self, m_range: range, tables: CubicTables) -> None:
        inside = (self.m >= m_range.start) & (self.m < m_range.stop)
        self.out[inside] = proven_mask(tables, self.tokens[inside], m_range.start)


def _chunked(model: AttnOnlyTransformer, rigorous: bool, counted: bool) -> tuple[Verdict, int]:
    """The proof chunk by chunk (`chunk_proofs`), with its FLOPs (0 if not `counted`):
    arithmetic `interval` if any chunk kept intervals (details["interval_chunks"] lists
    them); the full tables in details only when there is one chunk."""
    kept: dict[str, Any] = {}
    keep = (lambda _, tables: kept.update(tables=tables)) if _one_chunk(model) else None
    proofs, path_flops = chunk_proofs(model, rigorous, counted, keep)
    interval = [p.m_range for p in proofs if p.arith is Arithmetic.INTERVAL]
    arith = Arithmetic.INTERVAL if interval else proofs[0].arith
    details = {"interval_chunks": interval} if interval else {}
    details.update(kept)
    correct = sum(p.correct for p in proofs)
    undecided = sum(p.undecided for p in proofs)
    flops = path_flops + sum(p.flops for p in proofs)
    return Verdict(correct, model.cfg.n_inputs, details, undecided, arith), flops


def _one_chunk(model: AttnOnlyTransformer) -> bool:
    return len(max_token_chunks(model.cfg.d_vocab)) == 1
