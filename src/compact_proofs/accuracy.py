"""Exact accuracy over all d_vocab**n_ctx inputs: the ground truth (SPEC §2, §4.1).

A sequence x is *correct* iff the last-position logits satisfy logits[m] > logits[j] for every
j != m, where m = max(x); exact ties count as wrong. "Exact" refers to the model's float32
weights evaluated in real arithmetic: we compute in float64, and any sequence whose margin
logits[m] - max_{j!=m} logits[j] is within a relative 1e-9 of zero is re-evaluated by the plain
forward pass in float64 and, if still within tolerance, counted as wrong (reported as a
numerical tie). The result is therefore never above the true accuracy.

Fast path (single-head models). With w_p = exp(score_p / sqrt(d_head) - C) for a per-query
constant C, the unnormalised logits Z = (sum_p w_p) * logits are

    Z = sum_{p<k-1} Y_p[x_p] + y_q,   Y_p[t] = w_p(t) (EUPU[q] + EVOU[t] + PVOU[p]),

and sum_p w_p > 0 preserves every comparison. Splitting the non-query positions into a
prefix a = (x_0..x_{k-3}) and the last one t = x_{k-2}, Z = A[a] + B[t]. For the pair (a, t)
with max m, the margin is at least Z[m] - max_{j!=m} A[a, j] - max_{j!=m} B[t, j], which the
top-2 entries of each row give in O(1); only pairs where this cheap bound is inconclusive
are evaluated in full (O(v)). Cost O(v^k) + O(v * #inconclusive) per model.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from compact_proofs.circuits import PathMatrices, path_matrices
from compact_proofs.errors import UnsupportedModelError
from compact_proofs.model import AttnOnlyTransformer

REL_TOL = 1e-9  # margins within REL_TOL * (logit scale) are treated as ties (wrong)
MIN_WEIGHT = 1e-250  # attention weights summing below this are rechecked by the forward pass
CHUNK_PAIRS = 2**18  # (prefix, last-token) pairs per vectorised chunk
MAX_INPUTS = 2**36  # refuse to enumerate more inputs than this (hours of work)
INPUTS_PER_SECOND = 3e7  # rough throughput of the fast evaluator on 2 CPU cores (benchmarks)


@dataclass(frozen=True)
class AccuracyResult:
    """Exact count of correctly classified inputs among all `total` = v**k inputs."""

    correct: int
    total: int
    ties: int = 0  # sequences with |margin| below tolerance, counted as wrong

    @property
    def accuracy(self) -> float:
        return self.correct / self.total


def _duration(seconds: float) -> str:
    """A rough human duration: '3.2 hours', '1.1e+09 years'."""
    for unit, size in (("years", 3.15e7), ("days", 86400.0), ("hours", 3600.0)):
        if seconds >= size:
            value = seconds / size
            return f"{value:.2g} {unit}" if value < 1e4 else f"{value:.1e} {unit}"
    return f"{seconds:.0f} seconds"


def all_sequences(
    d_vocab: int,
    n_ctx: int,
    start: int = 0,
    stop: int | None = None,
    device: str | torch.device = "cpu",
) -> Tensor:
    """Sequences with indices [start, stop) as int64 [n, n_ctx].

    Index i has digit x_p = (i // d_vocab**p) % d_vocab (position 0 least significant),
    the order of the original's SequenceDataset.
    """
    stop = d_vocab**n_ctx if stop is None else stop
    idx = torch.arange(start, stop, dtype=torch.int64, device=device)
    powers = d_vocab ** torch.arange(n_ctx, dtype=torch.int64, device=device)
    return (idx[:, None] // powers) % d_vocab


@torch.no_grad()
def forward_margin(model: AttnOnlyTransformer, tokens: Tensor) -> tuple[Tensor, Tensor]:
    """(margin, scale) per sequence from the plain forward pass in float64.

    margin = logits[m] - max_{j != m} logits[j] (m = max token); scale = max |logits|.
    """
    model64 = _float64_copy(model)
    logits = model64(tokens)
    m = tokens.max(dim=-1).values
    at_m = logits.gather(-1, m[:, None]).squeeze(-1)
    others = logits.scatter(-1, m[:, None], float("-inf")).max(dim=-1).values
    return at_m - others, logits.abs().amax(dim=-1)


def is_correct(model: AttnOnlyTransformer, tokens: Tensor, rigorous: bool = False) -> Tensor:
    """Reference verdict per sequence (bool [n]): plain float64 forward pass, ties wrong."""
    if rigorous:
        raise NotImplementedError("rigorous per-input verdicts are not implemented yet")
    margin, scale = forward_margin(model, tokens)
    return margin > REL_TOL * scale


def _float64_copy(model: AttnOnlyTransformer) -> AttnOnlyTransformer:
    copy = AttnOnlyTransformer(model.cfg, dtype=torch.float64).to(model.W_E.device)
    copy.load_state_dict({k: v.to(torch.float64) for k, v in model.state_dict().items()})
    return copy


@torch.no_grad()
def exact_accuracy(
    model: AttnOnlyTransformer, progress: bool = False, rigorous: bool = False
) -> AccuracyResult:
    """Exact number of correctly classified inputs (see module docstring).

    Post: `correct` is the number of sequences whose float64 margin exceeds the tolerance;
    memory stays O(CHUNK_PAIRS * d_vocab) whatever n_ctx is.
    """
    if rigorous:
        raise NotImplementedError("rigorous exact accuracy is not implemented yet")
    cfg = model.cfg
    total = cfg.n_inputs
    if total > MAX_INPUTS:
        raise UnsupportedModelError(
            f"exact accuracy would enumerate d_vocab^n_ctx = {cfg.d_vocab}^{cfg.n_ctx} = "
            f"{total:.2e} inputs (about {_duration(total / INPUTS_PER_SECOND)} at "
            f"{INPUTS_PER_SECOND:.0e} inputs/s); use `accuracy --estimate` for a sampled "
            "estimate with a confidence interval, or a proof strategy such as cubic"
        )
    if cfg.n_heads != 1:
        return _accuracy_by_forward(model, progress)
    paths = path_matrices(model, torch.float64)
    v, k = cfg.d_vocab, cfg.n_ctx
    device = paths.EUPU.device
    value_scale = float(paths.EUPU.abs().max() + paths.EVOU.abs().max() + paths.PVOU.abs().max())
    correct, ambiguous = 0, []
    for q in tqdm(range(v), desc="exact accuracy", unit="query", disable=not progress, leave=False):
        c, ties = _count_for_query(paths, q, value_scale, device)
        correct += c
        ambiguous.extend(ties)
    n_ties = 0
    if ambiguous:
        tokens = torch.tensor(ambiguous, dtype=torch.int64, device=device).reshape(-1, k)
        margin, scale = forward_margin(model, tokens)
        correct += int((margin > REL_TOL * scale).sum())
        n_ties = int((margin.abs() <= REL_TOL * scale).sum())
    return AccuracyResult(correct=correct, total=total, ties=n_ties)


def _count_for_query(
    paths: PathMatrices, q: int, value_scale: float, device: torch.device
) -> tuple[int, list[int]]:
    """Correct count among sequences with query token q, and a flat list of ambiguous ones."""
    v, k = paths.d_vocab, paths.n_ctx
    s = (paths.EQKE[q][None, :] + paths.EQKP[q][:, None]) / paths.attn_scale  # [k, v]
    s_query = s[k - 1, q]
    shift = torch.maximum(s[: k - 1].max() if k > 1 else s_query, s_query)
    w = (s - shift).exp()  # [k, v]; w[p, t] for token t at position p
    base = paths.EUPU[q]
    Y = w[..., None] * (base + paths.EVOU[None] + paths.PVOU[:, None])  # [k, v, v]
    y_query, w_query = Y[k - 1, q], w[k - 1, q]
    if k == 1:  # the input is the query alone
        margin = float(_margin_rows(y_query[None], torch.tensor([q], device=device))[0])
        tol = REL_TOL * float(w_query) * value_scale
        if margin > tol:
            return 1, []
        return 0, ([] if margin < -tol else [q])

    # Prefix positions 0..k-3: the `n_low` lowest are vectorised, higher ones looped over.
    n_prefix = k - 2
    n_low = 0
    while n_low < n_prefix and v ** (n_low + 1) * v <= CHUNK_PAIRS:
        n_low += 1
    A_low, W_low, mu_low = _prefix_tables(Y, w, n_low, device)
    B, W_B = Y[k - 2], w[k - 2]
    top_B = B.topk(min(2, v), dim=-1)
    correct, ambiguous = 0, []
    for high in itertools.product(range(v), repeat=n_prefix - n_low):
        A, W_A, mu = A_low + y_query, W_low + w_query, mu_low.clamp(min=q)
        for i, t in enumerate(high):  # high[i] is the token at position n_low + i
            p = n_low + i
            A, W_A, mu = A + Y[p, t], W_A + w[p, t], mu.clamp(min=t)
        c, amb = _count_pairs(A, W_A, mu, B, W_B, top_B, value_scale)
        correct += c
        if amb.numel():
            ambiguous.extend(_ambiguous_tokens(amb, high, q, v, n_low, k))
    return correct, ambiguous


def _prefix_tables(
    Y: Tensor, w: Tensor, n_low: int, device: torch.device
) -> tuple[Tensor, Tensor, Tensor]:
    """Sum of Y over positions 0..n_low-1 for every prefix (flat index sum_p x_p v^p)."""
    v = Y.shape[1]
    A = torch.zeros(1, v, dtype=Y.dtype, device=device)
    W = torch.zeros(1, dtype=Y.dtype, device=device)
    mu = torch.zeros(1, dtype=torch.int64, device=device)
    tokens = torch.arange(v, device=device)
    for p in range(n_low):  # new digit is the most significant so far
        A = (Y[p][:, None, :] + A[None]).reshape(-1, v)
        W = (w[p][:, None] + W[None]).reshape(-1)
        mu = torch.maximum(tokens[:, None], mu[None]).reshape(-1)
    return A, W, mu


def _margin_rows(Z: Tensor, m: Tensor) -> Tensor:
    """Z[r, m_r] - max_{j != m_r} Z[r, j] for each row r."""
    at_m = Z.gather(-1, m[:, None]).squeeze(-1)
    return at_m - Z.scatter(-1, m[:, None], float("-inf")).max(dim=-1).values


def _count_pairs(
    A: Tensor,
    W_A: Tensor,
    mu: Tensor,
    B: Tensor,
    W_B: Tensor,
    top_B: torch.return_types.topk,
    value_scale: float,
) -> tuple[int, Tensor]:
    """Correct count over pairs (prefix a, last non-query token t); ambiguous pairs (flat)."""
    v = B.shape[0]
    if v == 1:  # a single logit: the max token always wins (no j != m to beat)
        return A.shape[0], torch.empty(0, dtype=torch.int64, device=A.device)
    t = torch.arange(v, device=A.device)
    m = torch.maximum(mu[:, None], t[None, :])  # [na, v]: max token of the pair
    Zm = A.gather(1, m) + B.T.gather(0, m)
    top_A = A.topk(2, dim=-1)
    A_excl = torch.where(top_A.indices[:, :1] == m, top_A.values[:, 1:2], top_A.values[:, :1])
    B_excl = torch.where(
        top_B.indices[None, :, 0] == m, top_B.values[None, :, 1], top_B.values[None, :, 0]
    )
    weight = W_A[:, None] + W_B[None, :]  # sum of the pair's attention weights (<= k)
    # near-underflowing weights lose relative precision: leave those to the forward pass
    faint = weight < MIN_WEIGHT
    tol = REL_TOL * value_scale * weight
    lower = Zm - A_excl - B_excl
    sure = (lower > tol) & ~faint
    n_sure = int(sure.sum())
    rest = (~sure).flatten().nonzero().squeeze(-1)
    if rest.numel() == 0:
        return n_sure, rest
    a_idx, t_idx = rest // v, rest % v
    margin = _margin_rows(A[a_idx] + B[t_idx], m.flatten()[rest])
    tol_r, faint_r = tol.flatten()[rest], faint.flatten()[rest]
    n_full = int(((margin > tol_r) & ~faint_r).sum())
    return n_sure + n_full, rest[(margin.abs() <= tol_r) | faint_r]


def _ambiguous_tokens(
    pairs: Tensor, high: tuple[int, ...], q: int, v: int, n_low: int, k: int
) -> list[int]:
    """Flatten ambiguous (prefix, t) pair indices back into token lists x_0..x_{k-1}."""
    out: list[int] = []
    for flat in pairs.tolist():
        a, t = divmod(flat, v)
        low = [(a // v**p) % v for p in range(n_low)]
        out.extend([*low, *high, t, q])
    return out


def _accuracy_by_forward(
    model: AttnOnlyTransformer, progress: bool, batch: int = 2**15
) -> AccuracyResult:
    """Plain chunked forward pass over all inputs (fallback for multi-head models)."""
    cfg = model.cfg
    total, correct = cfg.n_inputs, 0
    device = model.W_E.device
    starts = range(0, total, batch)
    for start in tqdm(starts, desc="exact accuracy", disable=not progress, leave=False):
        tokens = all_sequences(cfg.d_vocab, cfg.n_ctx, start, min(start + batch, total), device)
        correct += int(is_correct(model, tokens).sum())
    return AccuracyResult(correct=correct, total=total)
