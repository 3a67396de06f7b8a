"""Exact accuracy over all d_vocab**n_ctx inputs: the ground truth (SPEC §2, §4.1).

A sequence x is *correct* iff the last-position logits satisfy logits[m] > logits[j] for every
j != m, where m = max(x); exact ties count as wrong. "Exact" refers to the model's float32
weights evaluated in real arithmetic: we compute in float64, and any sequence whose margin
logits[m] - max_{j!=m} logits[j] is within a relative 1e-9 of zero is re-evaluated by the plain
forward pass in float64 and, if still within tolerance, counted as wrong (reported as a
numerical tie). The result is therefore never above the true accuracy, up to float64
rounding in the decisions themselves (catastrophic cancellation can fool float64 in contrived
models); `rigorous=True` below removes that caveat.

Fast path (single-head models). With w_p = exp(score_p / sqrt(d_head) - C) for a per-query
constant C, the unnormalised logits Z = (sum_p w_p) * logits are

    Z = sum_{p<k-1} Y_p[x_p] + y_q,   Y_p[t] = w_p(t) (EUPU[q] + EVOU[t] + PVOU[p]),

and sum_p w_p > 0 preserves every comparison. Splitting the non-query positions into a
prefix a = (x_0..x_{k-3}) and the last one t = x_{k-2}, Z = A[a] + B[t]. For the pair (a, t)
with max m, the margin is at least Z[m] - max_{j!=m} A[a, j] - max_{j!=m} B[t, j], which the
top-2 entries of each row give in O(1); only pairs where this cheap bound is inconclusive
are evaluated in full (O(v)). Cost O(v^k) + O(v * #inconclusive) per model.

Rigorous mode (`rigorous=True`; docs/soundness.md, "Brute force (exact accuracy)"). The count
is then *proven*: every input counted has, in exact real arithmetic on the float32 weights,
margin l_m - max_{j!=m} l_j > REL_TOL * max_j |l_j| >= 0, so it is classified correctly.
Per-input verdicts come from an interval forward pass (`compact_proofs.rigorous_forward`),
certified iff it proves that inequality. `exact_accuracy` keeps the fast evaluator, run on
the midpoints of the interval path matrices (circuits.path_matrices(model, INTERVAL)), and
makes its "sure" decisions rigorous by an a-priori error bound checked at run time:

1. Exact quantities (hats): path matrices P^ within radius r of the midpoints P used; scores
   s^ in the interval (EQKE + EQKP) / sqrt(d_head); for the float shift C of the query (a
   point), w^_p = exp(s^_p - C), Z^_j = sum_p w^_p H^_p(j) with
   H^_p(j) = EUPU^[q, j] + EVOU^[x_p, j] + PVOU^[p, j], W^ = sum_p w^_p. The exact logits
   are l^ = Z^ / W^, so the exact margin is D^ / W^ with D^ = Z^_m - max_{j!=m} Z^_j.
2. Constants: V_mid = max|EUPU| + max|EVOU| + max|PVOU| (midpoints), R_H the sum of the three
   largest radii, V^ = V_mid + R_H >= max_j |l^_j| (l^ is EUPU^ plus a convex combination).
   |H~ - H^| <= R_H + gamma_2 V_mid and |H~| <= V_mid (1 + gamma_2) for the float
   H~ = (EUPU + EVOU) + PVOU. Weights are *measured*, per query, on the very tensor used:
   the interval exp(s^ - C) gives |w~ - w^| <= rho w~ + tau for every used entry (rho from
   entries w~ >= 2^-900, tau the largest error of the others).
3. One product Y~ = fl(w~ H~): |Y~ - w^ H^| <= w~ (U |H~| + |H~ - H^| + rho V^) + tau V^
   + 2^-1074 (underflow). Any float sum of the k terms of an entry of Z (prefix tables,
   loops, A + B) adds at most gamma_{k-1} sum |Y~|. So |Z~_j - Z^_j| <= W~ e1 + e0 with
   W~ = sum w~_p, for every partial sum (A, B) and full sum (Z) alike.
4. Decisions use D~ = fl(fl(fl(A_m + B_m) - max A_{j!=m}) - max B_{j!=m}) (cheap bound) or
   fl(Z~_m - max Z~_{j!=m}); both are within 2 (W~ e1 + e0) + gamma_3 S of a quantity
   <= D^ (max is 1-Lipschitz; S bounds the magnitudes of the four operands). With
   W~ <= w_f / (1 - gamma_{k-1}) (w_f the computed weight sum) and w_f >= MIN_WEIGHT for
   non-faint inputs, that error is <= eps_D V^ w_f, and
   REL_TOL V^ W^ <= REL_TOL V^ w_f (1 + xi) with xi from rho, tau and gamma_{k-1}.
5. With eps = 1.01 (eps_D + REL_TOL xi) (the 1.01 absorbs the rounding of computing these
   non-negative bounds, O(50) operations of relative error U each) and a computed tolerance
   tol >= (REL_TOL + eps) V^ w_f: D~ > tol implies D^ > REL_TOL V^ W^ >= REL_TOL W^ max|l^|,
   i.e. the input is correct and would be certified by the definition above; D~ < -tol
   implies D^ < 0 (not correct, not counted). Everything else, and every faint input, is
   decided by the interval forward pass.
6. Run-time checks per query: eps < REL_TOL, tol stays in the normal range and no table can
   overflow. A query failing them (absurd weight scales, NaN) has all its v^(k-1) inputs
   decided by the interval forward pass instead. Multi-head models use it for all inputs.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from compact_proofs import interval as iv
from compact_proofs.arithmetic import Arithmetic
from compact_proofs.circuits import PathMatrices, path_matrices
from compact_proofs.errors import UnsupportedModelError
from compact_proofs.interval import SUBNORMAL_ULP as SUBNORMAL
from compact_proofs.interval import Interval, U, gamma
from compact_proofs.model import AttnOnlyTransformer
from compact_proofs.rigorous_forward import IntervalForward

REL_TOL = 1e-9  # margins within REL_TOL * (logit scale) are treated as ties (wrong)
MIN_WEIGHT = 1e-250  # attention weights summing below this are rechecked by the forward pass
CHUNK_PAIRS = 2**18  # (prefix, last-token) pairs per vectorised chunk
MAX_INPUTS = 2**36  # refuse to enumerate more inputs than this (hours of work)
INPUTS_PER_SECOND = 3e7  # rough throughput of the fast evaluator on 2 CPU cores (benchmarks)
TINY_WEIGHT = 2.0**-900  # weights below this enter the rigorous bound absolutely (tau)
NORMAL_FLOOR = 2.0**-1000  # tolerances must stay above this (relative rounding applies)
OVERFLOW_CEIL = 2.0**1000  # tables must stay below this (no overflow to inf)

# tolerance(q, shift, w) -> per-unit-weight tolerance, or None: decide query q otherwise
Tolerance = Callable[[int, Tensor, Tensor], float | None]


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


@torch.no_grad()
def is_correct(model: AttnOnlyTransformer, tokens: Tensor, rigorous: bool = False) -> Tensor:
    """Verdict per sequence (bool [n]), margins within REL_TOL of the logit scale wrong.

    Default: the plain float64 forward pass, margin > REL_TOL * max|logits|. With
    `rigorous`: True only where the interval forward pass *proves* that inequality for the
    exact real logits of the float32 weights (module docstring), so every True input is
    classified correctly in exact arithmetic. Memory is bounded (chunked).
    """
    if rigorous:
        return IntervalForward(model).verdicts(tokens, REL_TOL)[0]
    margin, scale = forward_margin(model, tokens)
    return margin > REL_TOL * scale


def _float64_copy(model: AttnOnlyTransformer) -> AttnOnlyTransformer:
    copy = AttnOnlyTransformer(model.cfg, dtype=torch.float64).to(model.W_E.device)
    copy.load_state_dict({k: v.to(torch.float64) for k, v in model.state_dict().items()})
    return copy


@torch.no_grad()
def exact_accuracy(
    model: AttnOnlyTransformer, progress: bool = False, rigorous: bool = True
) -> AccuracyResult:
    """Exact number of correctly classified inputs (see module docstring).

    Post: `correct` is the number of sequences whose float64 margin exceeds the tolerance;
    with `rigorous`, the number of sequences proven to have an exact margin above it (never
    more than the number correct in exact arithmetic). Memory stays O(CHUNK_PAIRS * d_vocab)
    whatever n_ctx is.
    """
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
        return _accuracy_by_forward(model, progress, rigorous)
    v, k = cfg.d_vocab, cfg.n_ctx
    forward: IntervalForward | None = None
    tolerance: Tolerance
    if rigorous:
        paths_iv = path_matrices(model, Arithmetic.INTERVAL)
        paths = _midpoints(paths_iv, cfg.attn_scale)
        tolerance = FastPathBound(paths_iv, paths)
    else:
        paths = path_matrices(model)
        value_scale = float(
            paths.EUPU.abs().max() + paths.EVOU.abs().max() + paths.PVOU.abs().max()
        )
        tol_unit = REL_TOL * value_scale
        tolerance = lambda q, shift, w: tol_unit  # noqa: E731
    device = paths.EUPU.device
    correct, n_ties, ambiguous = 0, 0, []
    for q in tqdm(range(v), desc="exact accuracy", unit="query", disable=not progress, leave=False):
        counted = _count_for_query(paths, q, tolerance, device)
        if counted is None:  # only in rigorous mode: the bound failed its run-time checks
            forward = forward or IntervalForward(model)
            c, t = _query_by_interval_forward(forward, q)
            correct, n_ties = correct + c, n_ties + t
            continue
        correct += counted[0]
        ambiguous.extend(counted[1])
    if ambiguous:
        tokens = torch.tensor(ambiguous, dtype=torch.int64, device=device).reshape(-1, k)
        if rigorous:
            forward = forward or IntervalForward(model)
            certified, undecided = forward.verdicts(tokens, REL_TOL)
            correct += int(certified.sum())
            n_ties += int(undecided.sum())
        else:
            margin, scale = forward_margin(model, tokens)
            correct += int((margin > REL_TOL * scale).sum())
            n_ties += int((margin.abs() <= REL_TOL * scale).sum())
    return AccuracyResult(correct=correct, total=total, ties=n_ties)


def _midpoints(paths: PathMatrices, attn_scale: float) -> PathMatrices:
    """Plain float64 path matrices at the midpoints of interval ones (|mid - exact| <= rad)."""

    return PathMatrices(
        EUPU=iv.mid(paths.EUPU),
        EVOU=iv.mid(paths.EVOU),
        PVOU=iv.mid(paths.PVOU),
        EQKE=iv.mid(paths.EQKE),
        EQKP=iv.mid(paths.EQKP),
        attn_scale=attn_scale,
    )


class FastPathBound:
    """Rigorous tolerance of the factored evaluator (module docstring, steps 1-6).

    Called by `_count_for_query` as tolerance(q, shift, w) with the query's float shift and
    the very weight tensor w [k, v] it uses; returns t such that, for every non-faint input
    of query q, a computed margin D with D > t * weight (or D < -t * weight) proves that the
    exact margin exceeds REL_TOL * max|l| (or is negative). None where the run-time checks
    fail: the caller then decides query q by the interval forward pass.
    """

    def __init__(self, paths_iv: PathMatrices, paths: PathMatrices) -> None:
        def max_abs(x: Tensor) -> float:
            return float(x.abs().max()) if x.numel() else 0.0

        def max_rad(x: Interval | Tensor) -> float:
            return max_abs(x.mid_rad()[1]) if isinstance(x, Interval) else 0.0

        self.k = paths.n_ctx
        self.v_mid = max_abs(paths.EUPU) + max_abs(paths.EVOU) + max_abs(paths.PVOU)
        self.r_h = max_rad(paths_iv.EUPU) + max_rad(paths_iv.EVOU) + max_rad(paths_iv.PVOU)
        self.v_hat = (self.v_mid + self.r_h) * (1 + 8 * U)  # >= every exact |logit|
        EQKE, EQKP = paths_iv.EQKE, paths_iv.EQKP
        # [q, p, t]: encloses the exact score (EQKE[q, t] + EQKP[q, p]) / sqrt(d_head)
        self.scores = (EQKE[:, None, :] + EQKP[:, :, None]) / paths_iv.attn_scale
        self.eps: dict[int, float] = {}  # per query, for diagnostics and tests

    def __call__(self, q: int, shift: Tensor, w: Tensor) -> float | None:
        k = self.k
        exact_w = (self.scores[q] - shift).exp()  # encloses exp(s^ - C), [k, v]
        used = torch.zeros_like(w, dtype=torch.bool)
        used[: k - 1] = True
        used[k - 1, q] = True
        w_used = w[used]
        err = torch.maximum(w - exact_w.lo, exact_w.hi - w)[used]
        big = w_used >= TINY_WEIGHT
        rho = float((err[big] / w_used[big]).max()) if bool(big.any()) else 0.0
        tau = float(err[~big].max()) if bool((~big).any()) else 0.0
        w_max = float(w_used.max())

        g2, g3, gk = gamma(2), gamma(3), gamma(max(k - 1, 0))
        v_mid, v_hat = self.v_mid, self.v_hat
        h_abs = v_mid * (1 + g2) * (1 + U)  # |Y~| <= w~ h_abs + 2^-1074
        delta_h = self.r_h + g2 * v_mid  # |H~ - H^|
        e1 = U * v_mid * (1 + g2) + delta_h + rho * v_hat + gk * h_abs
        e0 = k * (tau * v_hat + 2 * SUBNORMAL)
        rnd_rel = 2 * g3 * (1 + gk) * h_abs  # rounding of the final margin operations
        rnd_abs = 2 * g3 * (1 + gk) * k * SUBNORMAL
        eps_d = ((2 * e1 + rnd_rel) / (1 - gk) + (2 * e0 + rnd_abs) / MIN_WEIGHT) / v_hat
        xi = (rho + gk) / (1 - gk) + k * tau / MIN_WEIGHT
        eps = 1.01 * (eps_d + REL_TOL * xi)
        self.eps[q] = eps
        tol_unit = (REL_TOL + eps) * (1 + 8 * U) * v_hat
        ok = (
            eps < REL_TOL  # False for NaN
            and tol_unit * MIN_WEIGHT >= NORMAL_FLOOR
            and 4 * k * max(w_max, 1.0) * (h_abs + 1.0) * (1 + eps) < OVERFLOW_CEIL
        )
        return tol_unit if ok else None


def _query_by_interval_forward(forward: IntervalForward, q: int) -> tuple[int, int]:
    """(certified, undecided) counts over all inputs with query token q (chunked)."""
    cfg = forward.cfg
    v, k = cfg.d_vocab, cfg.n_ctx
    n = v ** (k - 1)
    correct = undecided = 0
    for start in range(0, n, CHUNK_PAIRS):
        rest = all_sequences(v, k - 1, start, min(start + CHUNK_PAIRS, n), forward.device)
        query = torch.full((len(rest), 1), q, dtype=torch.int64, device=forward.device)
        c, u = forward.verdicts(torch.cat([rest, query], dim=1), REL_TOL)
        correct, undecided = correct + int(c.sum()), undecided + int(u.sum())
    return correct, undecided


def _count_for_query(
    paths: PathMatrices, q: int, tolerance: Tolerance, device: torch.device
) -> tuple[int, list[int]] | None:
    """Correct count among sequences with query token q, and a flat list of ambiguous ones;
    None if `tolerance` refuses the query (it is then decided elsewhere)."""
    v, k = paths.d_vocab, paths.n_ctx
    s = (paths.EQKE[q][None, :] + paths.EQKP[q][:, None]) / paths.attn_scale  # [k, v]
    s_query = s[k - 1, q]
    shift = torch.maximum(s[: k - 1].max() if k > 1 else s_query, s_query)
    w = (s - shift).exp()  # [k, v]; w[p, t] for token t at position p
    tol_unit = tolerance(q, shift, w)
    if tol_unit is None:
        return None
    base = paths.EUPU[q]
    Y = w[..., None] * (base + paths.EVOU[None] + paths.PVOU[:, None])  # [k, v, v]
    y_query, w_query = Y[k - 1, q], w[k - 1, q]
    if k == 1:  # the input is the query alone
        margin = float(_margin_rows(y_query[None], torch.tensor([q], device=device))[0])
        tol = tol_unit * float(w_query)
        if margin > tol and float(w_query) >= MIN_WEIGHT:
            return 1, []
        return 0, ([] if margin < -tol and float(w_query) >= MIN_WEIGHT else [q])

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
        c, amb = _count_pairs(A, W_A, mu, B, W_B, top_B, tol_unit)
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
    tol_unit: float,
) -> tuple[int, Tensor]:
    """Correct count over pairs (prefix a, last non-query token t); ambiguous pairs (flat).

    A pair is sure-correct if its margin exceeds tol_unit * weight, wrong if below minus
    that, ambiguous otherwise or if its weight is faint (< MIN_WEIGHT).
    """
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
    tol = tol_unit * weight
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
    model: AttnOnlyTransformer, progress: bool, rigorous: bool = False, batch: int = 2**15
) -> AccuracyResult:
    """Chunked forward pass over all inputs (multi-head models): the float64 one, or with
    `rigorous` the interval one (its undecided inputs reported as ties)."""
    cfg = model.cfg
    total, correct, ties = cfg.n_inputs, 0, 0
    device = model.W_E.device
    forward = IntervalForward(model) if rigorous else None
    starts = range(0, total, batch)
    for start in tqdm(starts, desc="exact accuracy", disable=not progress, leave=False):
        tokens = all_sequences(cfg.d_vocab, cfg.n_ctx, start, min(start + batch, total), device)
        if forward is None:
            correct += int(is_correct(model, tokens).sum())
        else:
            certified, undecided = forward.verdicts(tokens, REL_TOL)
            correct, ties = correct + int(certified.sum()), ties + int(undecided.sum())
    return AccuracyResult(correct=correct, total=total, ties=ties)
