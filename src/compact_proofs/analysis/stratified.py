"""Accuracy *estimate* stratified by the cubic proof's cells (SPEC §4.3, sharpened).

The cubic proof partitions all N = v^k inputs into cells (q, m, c) and certifies, in each cell,
exactly the inputs whose c non-max non-query tokens all lie in a set G[q, m, c] of "good"
tokens (`proofs.cubic`). Its count P needs no sampling: those inputs are correct. Only the
U = N - P uncertified inputs are sampled, uniformly:

    accuracy = (P + U p_U) / N,   p_U = accuracy on the uncertified inputs,

so a Clopper–Pearson interval for p_U from n uniform samples of the uncertified set is an
interval of the same confidence for the accuracy, (U/N) times as wide as uniform sampling of
all inputs would give with the same n. This is a statistical statement, never a proof.

Uniform sampling of the uncertified set: a cell is drawn with probability proportional to its
number of uncertified inputs U_s = C(k-1, c) (m^c - |G|^c) (for c = 0: 1 if the single input
is uncertified), the c non-max positions uniformly among the k-1 non-query positions, and the
tokens uniformly from {0..m-1}^c minus G^c: the first position j holding a token outside G is
drawn with probability proportional to |G|^j (m - |G|) m^(c-1-j), earlier tokens uniformly
from G, token j uniformly from {0..m-1} minus G, later ones uniformly from {0..m-1}. (The cell
weights are float64 approximations of U_s: relative error ~1e-16, negligible.)

Unlike the original's cached evaluator (SPEC §11.4), every sampled input is judged by the full
model (`accuracy.is_correct`), positional attention included.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from compact_proofs.analysis.estimate import (
    AccuracyEstimate,
    check_sampling,
    clopper_pearson,
    count_correct_samples,
)
from compact_proofs.model.transformer import AttnOnlyTransformer
from compact_proofs.proofs.cubic import CHUNK_ELEMENTS, count_correct, cubic_tables
from compact_proofs.proofs.paths import path_matrices

BATCH = 2**14  # samples generated and judged together


@dataclass(frozen=True)
class CellCertificates:
    """What the cubic proof certifies: good0 [q, m] (c = 0 cells), n_good [q, m, c] = |G|
    (index c, entries for c = 0 unused), packed good-token bits [q, m, t/8, c-1], and the
    exact certified count."""

    good0: Tensor
    n_good: Tensor
    packed: np.ndarray
    certified: int

    def good_rows(self, q: Tensor, m: Tensor, c: Tensor, v: int) -> Tensor:
        """bool [n, v]: membership of every token in G[q_i, m_i, c_i] (c_i >= 1)."""
        bits = self.packed[q.numpy(), m.numpy(), :, (c - 1).numpy()]  # [n, v/8]
        return torch.from_numpy(np.unpackbits(bits, axis=-1, count=v).astype(bool))


def certify_cells(model: AttnOnlyTransformer, progress: bool = False) -> CellCertificates:
    """Run the cubic proof chunk by chunk, keeping its per-cell certified token sets."""
    paths = path_matrices(model)
    v, k = model.cfg.d_vocab, model.cfg.n_ctx
    step = max(1, CHUNK_ELEMENTS // (2 * v * v))
    good0 = torch.zeros(v, v, dtype=torch.bool)
    n_good = torch.zeros(v, v, k, dtype=torch.int64)
    packed = np.zeros((v, v, (v + 7) // 8, max(k - 1, 1)), dtype=np.uint8)
    certified = 0
    starts = range(0, v, step)
    for start in tqdm(starts, desc="cubic cells", disable=not progress, leave=False):
        stop = min(start + step, v)
        tables = cubic_tables(paths, range(start, stop))
        certified += count_correct(tables, k)
        r = stop  # the tables' q and t axes stop at the chunk's largest max token
        good0[:r, start:stop] = tables.good0.cpu()
        if k > 1:
            good = tables.good.cpu()  # [q, m, t, c-1]
            n_good[:r, start:stop, 1:] = good.sum(dim=2)
            bits = np.packbits(good.numpy(), axis=2)  # [q, m, r/8, c-1]
            packed[:r, start:stop, : bits.shape[2]] = bits
    return CellCertificates(good0, n_good, packed, certified)


def _cell_weights(cells: CellCertificates, v: int, k: int) -> Tensor:
    """U_s (float64) for every cell (q, m, c), flattened; 0 for invalid cells."""
    q = torch.arange(v)[:, None, None]
    m = torch.arange(v)[None, :, None]
    c = torch.arange(k)[None, None, :]
    valid = (q <= m) & ((q == m) | (c <= k - 2))
    choose = torch.tensor([float(comb(k - 1, i)) for i in range(k)], dtype=torch.float64)
    mf, gf, cf = m.double(), cells.n_good.double(), c.double()
    U = choose[c] * (mf.pow(cf) - gf.pow(cf))
    U = torch.where(c == 0, (~cells.good0).double()[..., None].expand_as(U), U)
    return torch.where(valid, U, 0.0).flatten()


def _rank_select(mask: Tensor, rank: Tensor) -> Tensor:
    """Index of the (rank+1)-th True in each row of mask [n, v], for rank [n] or [n, r]
    (ranks at or beyond a row's count give v)."""
    running = mask.long().cumsum(dim=-1)
    if rank.dim() == 1:
        return torch.searchsorted(running, (rank + 1)[:, None]).squeeze(-1)
    return torch.searchsorted(running, rank + 1)


def _draw(cells: CellCertificates, flat: Tensor, v: int, k: int, gen: torch.Generator) -> Tensor:
    """Sample one uncertified input [k] per drawn cell index in `flat` (see module docs)."""
    q, m, c = flat // (v * k), (flat // k) % v, flat % k
    tokens = m[:, None].repeat(1, k)
    tokens[:, -1] = q
    has = c >= 1
    if not bool(has.any()) or k == 1:
        return tokens
    idx = has.nonzero().squeeze(-1)
    q, m, c = q[idx], m[idx], c[idx]
    good = cells.good_rows(q, m, c, v) & (torch.arange(v)[None, :] < m[:, None])
    g = good.sum(dim=-1)
    # the first position j (0 <= j < c) holding a token outside G
    j_axis = torch.arange(k - 1)[None, :]
    from_good = torch.where(j_axis == 0, 0.0, j_axis * torch.log(g.double())[:, None])
    log_w = from_good + (c[:, None] - 1 - j_axis) * torch.log(m.double())[:, None]
    log_w = torch.where(j_axis < c[:, None], log_w, -torch.inf)  # (m - |G|) is common
    weights = (log_w - log_w.amax(dim=-1, keepdim=True)).exp()
    j = torch.multinomial(weights, 1, generator=gen).squeeze(-1)
    u = torch.rand(len(idx), k - 1, generator=gen, dtype=torch.float64)
    in_good = _rank_select(good, (u * g[:, None]).long().clamp(max=(g - 1).clamp(min=0)[:, None]))
    outside = ~good & (torch.arange(v)[None, :] < m[:, None])
    n_out = m - g
    u_bad = torch.rand(len(idx), generator=gen, dtype=torch.float64)
    first_bad = _rank_select(outside, (u_bad * n_out).long().clamp(max=n_out - 1))
    anything = (torch.rand(len(idx), k - 1, generator=gen) * m[:, None]).long()
    chosen = torch.where(j_axis < j[:, None], in_good, anything)
    chosen[torch.arange(len(idx)), j] = first_bad
    # place the c non-max tokens at c random non-query positions (the rest hold m)
    order = torch.rand(len(idx), k - 1, generator=gen).argsort(dim=-1)
    slot = order.argsort(dim=-1)  # slot[p] < c: position p holds the slot[p]-th non-max token
    values = chosen.gather(1, slot)
    rows = tokens[idx]
    rows[:, : k - 1] = torch.where(slot < c[:, None], values, m[:, None])
    tokens[idx] = rows
    return tokens


@torch.no_grad()
def stratified_estimate(
    model: AttnOnlyTransformer,
    samples: int = 100_000,
    confidence: float = 0.99,
    seed: int = 0,
    progress: bool = False,
) -> AccuracyEstimate:
    """Estimate with an exact interval, sampling only what the cubic proof leaves uncertified.

    Pre: single-head model, samples >= 1, 0 < confidence < 1.
    Post: lower <= estimate <= upper; lower >= certified / N.
    """
    check_sampling(samples, confidence)
    cfg = model.cfg
    v, k, N = cfg.d_vocab, cfg.n_ctx, cfg.n_inputs
    cells = certify_cells(model, progress)
    P = cells.certified
    U = N - P

    def result(correct: int, n: int, lo: float, hi: float) -> AccuracyEstimate:
        return AccuracyEstimate(
            correct=correct,
            samples=n,
            estimate=(P + U * (correct / n if n else 0.0)) / N,
            lower=(P + U * lo) / N,
            upper=(P + U * hi) / N,
            confidence=confidence,
            method="stratified-cubic",
            seed=seed,
            certified=P,
        )

    if U == 0:  # every input is certified: the accuracy is 1 for certain
        return result(0, 0, 0.0, 0.0)
    weights = _cell_weights(cells, v, k)
    gen = torch.Generator().manual_seed(seed)

    def draw(n: int) -> Tensor:
        return _draw(
            cells, torch.multinomial(weights, n, replacement=True, generator=gen), v, k, gen
        )

    correct = count_correct_samples(model, draw, samples, progress)
    lo, hi = clopper_pearson(correct, samples, confidence)
    return result(correct, samples, lo, hi)
