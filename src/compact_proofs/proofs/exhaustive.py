"""Exact accuracy over all d_vocab**n_ctx inputs: the ground truth (SPEC §2, §4.1).

A sequence x is *correct* iff the last-position logits satisfy logits[m] > logits[j] for every
j != m, where m = max(x); exact ties count as wrong. "Exact" refers to the model's float32
weights evaluated in real arithmetic: we compute in float64, and any sequence whose margin
logits[m] - max_{j!=m} logits[j] is within a relative 1e-9 of zero is re-evaluated on its own
by the path formula in float64 (`path_verdicts`; the forward pass for several heads) and, if
still within tolerance, counted as wrong (reported as a numerical tie).
The result is therefore never above the true accuracy, up to float64
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
Per-input verdicts come from an interval forward pass (`compact_proofs.soundness.rigorous_forward`),
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

from compact_proofs.errors import UnsupportedModelError
from compact_proofs.model.transformer import AttnOnlyTransformer
from compact_proofs.proofs.paths import PathMatrices, path_matrices
from compact_proofs.soundness import interval as iv
from compact_proofs.soundness.arithmetic import Arithmetic
from compact_proofs.soundness.interval import SUBNORMAL_ULP as SUBNORMAL
from compact_proofs.soundness.interval import Interval, Num, U, gamma
from compact_proofs.soundness.rigorous_forward import IntervalForward

REL_TOL = 1e-9  # margins within REL_TOL * (logit scale) are treated as ties (wrong)
MIN_WEIGHT = 1e-250  # attention weights summing below this are rechecked by the forward pass
CHUNK_PAIRS = 2**18  # (prefix, last-token) pairs per vectorised chunk
BATCH_INPUTS = 2**15  # undecided inputs per forward-pass batch
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
    `rigorous`: True only where that inequality is *proven* for the exact real logits of
    the float32 weights (`RigorousVerdicts`: the path formula in ball arithmetic, then the
    interval forward pass), so every True input is classified correctly in exact
    arithmetic. Memory is bounded (batches of BATCH_INPUTS).
    """
    if rigorous:
        return RigorousVerdicts(model).verdicts(tokens)[0]
    margin, scale = forward_margin(model, tokens)
    return margin > REL_TOL * scale


class RigorousVerdicts:
    """Per-input rigorous verdicts (certified, undecided) bool [n], in batches of at most
    BATCH_INPUTS. Single-head models: first the path formula (compact_proofs.proofs.paths) in
    ball arithmetic, l = EUPU[q] + sum_p a_p (EVOU[x_p] + PVOU[p]) with a the softmax of
    (EQKE[q, x_p] + EQKP[q, p]) / sqrt(d_head): an input is certified if the ball proves
    margin > REL_TOL max_j |l_j| and refuted if it proves margin < -REL_TOL max_j |l_j|;
    then the interval forward pass for what the balls leave open (and for every input of a
    multi-head model). The union of two proofs is a proof; the balls only save time (one
    float64 evaluation with a radius per batch instead of intervals per entry)."""

    def __init__(self, model: AttnOnlyTransformer) -> None:
        self.model = model
        self.paths = path_matrices(model, Arithmetic.BALL) if model.cfg.n_heads == 1 else None
        self.forward: IntervalForward | None = None

    def verdicts(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        parts = [self._batch(batch) for batch in tokens.split(BATCH_INPUTS)]
        if not parts:
            empty = torch.zeros(0, dtype=torch.bool, device=tokens.device)
            return empty, empty
        return torch.cat([c for c, _ in parts]), torch.cat([u for _, u in parts])

    def _batch(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        certified = torch.zeros(len(tokens), dtype=torch.bool, device=tokens.device)
        open_ = ~certified
        if self.paths is not None:
            certified, refuted = _ball_verdicts(self.paths, tokens)
            open_ = ~(certified | refuted)
        undecided = torch.zeros_like(certified)
        if bool(open_.any()):
            self.forward = self.forward or IntervalForward(self.model)
            c, u = self.forward.verdicts(tokens[open_], REL_TOL)
            certified[open_], undecided[open_] = c, u
        return certified, undecided


def path_logits(paths: PathMatrices, tokens: Tensor) -> Num:
    """Last-position logits [n, v] of `tokens` by the path formula (compact_proofs.proofs.paths),
    in the arithmetic of `paths` (plain float64 or balls): O(k v) per input."""
    q, k = tokens[:, -1], tokens.shape[1]
    scores = (paths.EQKE[q[:, None], tokens] + paths.EQKP[q][:, :k]) / paths.attn_scale
    alpha = scores.softmax(dim=-1)  # [n, k]
    logits = paths.EUPU[q] + alpha @ paths.PVOU[:k]  # [n, v]
    for p in range(k):
        logits = logits + alpha[:, p, None] * paths.EVOU[tokens[:, p]]
    return logits


def _margins(logits: Num, tokens: Tensor) -> tuple[Num, Num]:
    """(l_m - max_{j != m} l_j, max_j |l_j|) per input, m its max token."""
    n = torch.arange(len(tokens), device=tokens.device)
    m = tokens.max(dim=-1).values
    is_m = torch.zeros(logits.shape, dtype=torch.bool, device=tokens.device)
    is_m[n, m] = True
    margin = logits[n, m] - logits.masked_fill(is_m, -float("inf")).amax(dim=-1)
    return margin, logits.abs().amax(dim=-1)


def _ball_verdicts(paths: PathMatrices, tokens: Tensor) -> tuple[Tensor, Tensor]:
    """(certified, refuted) bool [n] by the path formula in ball arithmetic (balls: paths)."""
    margin, scale = _margins(path_logits(paths, tokens), tokens)
    certified = iv.lower(margin) > iv.upper(REL_TOL * scale)
    refuted = iv.upper(margin) < -iv.upper(REL_TOL * scale)
    return certified, refuted


def path_verdicts(paths: PathMatrices, tokens: Tensor) -> tuple[Tensor, Tensor]:
    """(correct, tie) bool [n] by the path formula in plain float64 (`paths` plain): margin
    above REL_TOL max|l|, or within it (the float64 verdicts of exact accuracy)."""
    correct, ties = [], []
    for batch in tokens.split(BATCH_INPUTS):
        margin, scale = _margins(path_logits(paths, batch), batch)
        correct.append(margin > REL_TOL * scale)
        ties.append(margin.abs() <= REL_TOL * scale)
    if not correct:
        empty = torch.zeros(0, dtype=torch.bool, device=tokens.device)
        return empty, empty
    return torch.cat(correct), torch.cat(ties)


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
    more than the number correct in exact arithmetic). Memory stays O(CHUNK_PAIRS * d_vocab +
    BATCH_INPUTS * (n_ctx + d_vocab)) floats whatever n_ctx and the weights' values are
    (under 1 GB at d_vocab = 64, n_ctx = 4 on the worst cases of benchmarks/memory.py).
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
    open_inputs = OpenInputs(model, rigorous)
    correct, n_ties = 0, 0
    for q in tqdm(range(v), desc="exact accuracy", unit="query", disable=not progress, leave=False):
        counted = _count_for_query(paths, q, tolerance, device, open_inputs.add)
        if counted is None:  # only in rigorous mode: the bound failed its run-time checks
            _query_inputs(v, k, q, device, open_inputs.add)  # every input decided one by one
            continue
        correct += counted
    open_inputs.flush()
    correct, n_ties = correct + open_inputs.correct, n_ties + open_inputs.ties
    return AccuracyResult(correct=correct, total=total, ties=n_ties)


class OpenInputs:
    """Inputs the factored evaluator leaves undecided, decided by a forward pass (the interval
    one if `rigorous`) in batches of at most BATCH_INPUTS as they arrive: memory stays
    O(BATCH_INPUTS (k + v)) however many inputs are undecided."""

    def __init__(self, model: AttnOnlyTransformer, rigorous: bool) -> None:
        self.model, self.rigorous = model, rigorous
        self.verdicts: RigorousVerdicts | None = None
        self.paths64: PathMatrices | None = None
        self.pending: list[Tensor] = []
        self.n_pending = 0
        self.correct = self.ties = 0

    def add(self, tokens: Tensor) -> None:
        """Queue inputs [n, k]; decide the queue whenever it reaches BATCH_INPUTS."""
        self.pending.append(tokens)
        self.n_pending += len(tokens)
        if self.n_pending >= BATCH_INPUTS:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        tokens = torch.cat(self.pending)
        self.pending, self.n_pending = [], 0
        for batch in tokens.split(BATCH_INPUTS):
            if self.rigorous:
                self.verdicts = self.verdicts or RigorousVerdicts(self.model)
                certified, undecided = self.verdicts.verdicts(batch)
                self.correct += int(certified.sum())
                self.ties += int(undecided.sum())
            else:
                correct, ties = self._float64(batch)
                self.correct += int(correct.sum())
                self.ties += int(ties.sum())

    def _float64(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Float64 verdicts (correct, tie) of open inputs: the path formula (single head)."""
        self.paths64 = self.paths64 or path_matrices(self.model)
        return path_verdicts(self.paths64, tokens)


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


def _query_inputs(
    v: int, k: int, q: int, device: torch.device, out: Callable[[Tensor], None]
) -> None:
    """Every input with query token q, [n, k] chunks of at most BATCH_INPUTS, to `out`."""
    n = v ** (k - 1)
    for start in range(0, n, BATCH_INPUTS):
        rest = all_sequences(v, k - 1, start, min(start + BATCH_INPUTS, n), device)
        out(torch.cat([rest, torch.full((len(rest), 1), q, dtype=torch.int64, device=device)], 1))


def _count_for_query(
    paths: PathMatrices,
    q: int,
    tolerance: Tolerance,
    device: torch.device,
    undecided: Callable[[Tensor], None],
) -> int | None:
    """Correct count among sequences with query token q (those it cannot decide, [n, k]
    token tensors, go to `undecided` chunk by chunk); None if `tolerance` refuses the query
    (it is then decided elsewhere)."""
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
            return 1
        if not (margin < -tol and float(w_query) >= MIN_WEIGHT):
            undecided(torch.tensor([[q]], dtype=torch.int64, device=device))
        return 0

    # Prefix positions 0..k-3: the `n_low` lowest are vectorised, higher ones looped over.
    n_prefix = k - 2
    n_low = 0
    while n_low < n_prefix and v ** (n_low + 1) * v <= CHUNK_PAIRS:
        n_low += 1
    A_low, W_low, mu_low = _prefix_tables(Y, w, n_low, device)
    B, W_B = Y[k - 2], w[k - 2]
    top_B = B.topk(min(2, v), dim=-1)
    correct = 0
    for high in itertools.product(range(v), repeat=n_prefix - n_low):
        A, W_A, mu = A_low + y_query, W_low + w_query, mu_low.clamp(min=q)
        for i, t in enumerate(high):  # high[i] is the token at position n_low + i
            p = n_low + i
            A, W_A, mu = A + Y[p, t], W_A + w[p, t], mu.clamp(min=t)
        c, amb = _count_pairs(A, W_A, mu, B, W_B, top_B, tol_unit)
        correct += c
        if amb.numel():
            undecided(_pair_tokens(amb, high, q, v, n_low))
    return correct


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


def _pair_tokens(pairs: Tensor, high: tuple[int, ...], q: int, v: int, n_low: int) -> Tensor:
    """The inputs x_0..x_{k-1} [n, k] of flat (prefix, t) pair indices: the prefix's n_low
    lowest positions are the digits of a = pair // v (base v, least significant first), then
    the looped positions `high`, the last non-query token t = pair % v, and the query q."""
    a, t = pairs // v, pairs % v
    columns = [(a // v**p) % v for p in range(n_low)]
    columns += [torch.full_like(pairs, x) for x in high]
    columns += [t, torch.full_like(pairs, q)]
    return torch.stack(columns, dim=1)


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
