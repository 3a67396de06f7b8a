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

and sum_p w_p > 0 preserves every comparison. Splitting the non-query positions into two
halves, side A (the first half and the query) and side B (the rest), Z = A[a] + B[b] for the
pair of rows (a, b), with max m = max(mu_a, mu_b) (mu: a side's largest token). The margin is
at least c_A(a, m) + c_B(b, m), c(r, m) = T[r, m] - max_{j!=m} T[r, j] (top-2 of each row),
and this cheap bound separates: where m = mu_a it is own_A(a) + c_B(b, mu_a), so the pairs
of row a are counted against column mu_a of side B, a whole group of rows b (one value of
mu_b) at once when the group's least entry already beats row a's threshold (likewise with
the sides swapped where mu_b > mu_a). Only pairs of groups that fail this are compared one
by one, and only pairs where the cheap bound is inconclusive are evaluated in full (O(v)).
Cost O(v^(ceil((k-1)/2)+1)) per query for the tables, plus the pairs compared one by one
and O(v) per inconclusive pair: far below v^(k-1) per query on trained models (K = 5).

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
4. Decisions use fl(Z~_m - max Z~_{j!=m}) > fl(t w_f) (full evaluation, t the per-unit
   tolerance, w_f = fl(W_A + W_B)) or, for the cheap bound, the exact comparison
   c'_A > -c'_B of c'_X = fl(X_m - fl(max X_{j!=m} + fl(t W_X))) (X = A, B). Both are
   within 2 (W~ e1 + e0) + gamma_3 S of a quantity <= D^ (max is 1-Lipschitz; S bounds the
   magnitudes of the four operands). For the cheap bound (E_X = max X_{j!=m}):
   c'_A + c'_B > 0 gives (A_m - E_A - t W_A) + (B_m - E_B - t W_B) > -gamma_3 (S +
   t (W_A + W_B)) (each of the three roundings per side errs by U of its result), hence
   A_m - E_A + B_m - E_B > t w_f (1 - gamma_3) / (1 + U) - gamma_3 S, which the
   (1 + 8U) in t covers. (fl(t W_X) of one side may be subnormal, off by up to 2^-1075
   absolutely rather than relatively: e0 budgets 2 SUBNORMAL per term where the products
   use one, which leaves far more than those two roundings need.) With
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
from collections.abc import Callable, Iterator
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
        if counted is None:  # the bound failed its run-time checks, or a table could overflow
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
    or its tables could overflow (it is then decided elsewhere, input by input)."""
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
    parts = [Y[: k - 1].abs().max()] if k > 1 else []
    used = float(torch.stack([*parts, Y[k - 1, q].abs().max()]).max())  # NaN if any is NaN
    if not k * used < OVERFLOW_CEIL:  # tables could overflow, or NaN: decide elsewhere
        return None
    if k == 1:  # the input is the query alone
        y_query, w_query = Y[k - 1, q], w[k - 1, q]
        margin = float(_margin_rows(y_query[None], torch.tensor([q], device=device))[0])
        tol = tol_unit * float(w_query)
        if margin > tol and float(w_query) >= MIN_WEIGHT:
            return 1
        if not (margin < -tol and float(w_query) >= MIN_WEIGHT):
            undecided(torch.tensor([[q]], dtype=torch.int64, device=device))
        return 0
    if v == 1:  # a single logit: the max token always wins (no j != m to beat)
        return 1
    # Non-query positions 0..split-1 join the query in side A, split..k-2 form side B.
    split = k - 1 - (k - 1) // 2
    counter = _PairCounter(q, v, k, tol_unit, undecided)
    correct = 0
    for side_a in _sides(Y, w, list(range(split)), q):
        terms_a = _SideTerms.of(side_a, q, tol_unit)
        for side_b in _sides(Y, w, list(range(split, k - 1)), None):
            terms_b = _SideTerms.of(side_b, q, tol_unit)
            correct += counter.count(terms_a, terms_b)
    return correct


@dataclass(frozen=True)
class _Side:
    """Partial sums over a set of positions, one row per assignment of their tokens.

    Z[j] = sum_p Y[p, x_p, j] over the side's positions (plus the query's term on side A)
    in T[r, j]; the matching attention-weight sum in W[r]; the largest token of the side
    (the query included on side A, -1 for an empty side) in mu[r]; the tokens in
    tokens[r, i] for position positions[i].
    """

    T: Tensor
    W: Tensor
    mu: Tensor
    tokens: Tensor
    positions: tuple[int, ...]


def _sides(Y: Tensor, w: Tensor, positions: list[int], q: int | None) -> Iterator[_Side]:
    """`_Side` tables covering every assignment of tokens to `positions` (with the query
    token q's term when q is given), in chunks of at most max(1, CHUNK_PAIRS // v) rows:
    the lowest positions are vectorised (the first least significant), higher ones looped."""
    v, device = Y.shape[1], Y.device
    n_low = 0
    while n_low < len(positions) and v ** (n_low + 1) * v <= CHUNK_PAIRS:
        n_low += 1
    T = torch.zeros(1, v, dtype=Y.dtype, device=device)
    W = torch.zeros(1, dtype=Y.dtype, device=device)
    mu = torch.full((1,), -1, dtype=torch.int64, device=device)
    tokens = torch.zeros(1, 0, dtype=torch.int64, device=device)
    if q is not None:
        k = Y.shape[0]
        T, W, mu = T + Y[k - 1, q], W + w[k - 1, q], mu.clamp(min=q)
    digits = torch.arange(v, device=device)
    for p in positions[:n_low]:  # the new digit is the most significant so far
        n = len(T)
        T = (Y[p][:, None, :] + T[None]).reshape(-1, v)
        W = (w[p][:, None] + W[None]).reshape(-1)
        mu = torch.maximum(digits[:, None], mu[None]).reshape(-1)
        new = digits[:, None, None].expand(v, n, 1)
        tokens = torch.cat([tokens[None].expand(v, n, -1), new], dim=2).reshape(v * n, -1)
    for high in itertools.product(range(v), repeat=len(positions) - n_low):
        T_h, W_h, mu_h, columns = T, W, mu, [tokens]
        for p, t in zip(positions[n_low:], high, strict=True):
            T_h, W_h, mu_h = T_h + Y[p, t], W_h + w[p, t], mu_h.clamp(min=t)
            columns.append(torch.full_like(mu, t)[:, None])
        yield _Side(T_h, W_h, mu_h, torch.cat(columns, dim=1), tuple(positions))


@dataclass(frozen=True)
class _SideTerms:
    """A side's contributions to the cheap margin bound, for pair maxima m >= q.

    With E(r, m) = max_{j != m} T[r, j] (from the row's top two entries) and
    t(r) = fl(tol_unit * W[r]): col[r, m - q] = fl(T[r, m] - fl(E(r, m) + t(r))) for every
    m in q..v-1, and own[r] = col[r, mu[r] - q] (meaningful where mu[r] >= q). Rows grouped
    by their max token g = mu[r] (index g + 1, so that an empty side's -1 fits): `order`
    lists the rows group by group, group g + 1 being order[start[g + 1]:][:size[g + 1]];
    group_min[g + 1, m - q] is the least col[r, m - q] over the group (+inf if empty).
    """

    side: _Side
    col: Tensor
    own: Tensor
    order: Tensor
    start: Tensor
    size: Tensor
    group_min: Tensor

    @classmethod
    def of(cls, side: _Side, q: int, tol_unit: float) -> _SideTerms:
        table, v = side.T, side.T.shape[1]
        top1 = table.amax(dim=1)
        is_top = table == top1[:, None]
        second = table.masked_fill(is_top, -float("inf")).amax(dim=1)
        top2 = torch.where(is_top.sum(dim=1) > 1, top1, second)  # max over j != argmax
        tol = tol_unit * side.W
        # E(r, m) = top2 where T[r, m] is the row's maximum (if unique), top1 elsewhere
        excl_tol = torch.where(is_top[:, q:], (top2 + tol)[:, None], (top1 + tol)[:, None])
        col = table[:, q:] - excl_tol
        own = col.gather(1, (side.mu - q).clamp(min=0)[:, None]).squeeze(1)
        group = side.mu + 1
        size = torch.bincount(group, minlength=v + 1)
        start = size.cumsum(0) - size
        group_min = torch.full((v + 1, v - q), float("inf"), dtype=col.dtype, device=col.device)
        index = group[:, None].expand(-1, v - q)
        group_min = group_min.scatter_reduce(0, index, col, "amin", include_self=True)
        order = torch.sort(group, stable=True).indices
        return cls(side, col, own, order, start, size, group_min)


class _PairCounter:
    """Counts the correct pairs (a, b) of rows of side A (query side) and side B.

    The pair's max token is m = max(mu_a, mu_b) and its logits Z = T_A[a] + T_B[b]. Since
    max_{j != m} Z_j <= E_A(a, m) + E_B(b, m), the margin Z_m - max_{j != m} Z_j is at least
    (T_A[a, m] - E_A(a, m)) + (T_B[b, m] - E_B(b, m)), so the pair is *sure* (correct) when
    col_A[a, m] + col_B[b, m] > 0 (one of the two is the side's `own` term), compared
    exactly as col_A > -col_B (module docstring, step 4). Case I, mu_a >= mu_b: per row a,
    the b with mu_b <= mu_a and col_B[b, mu_a] > -own_A[a]; case II, mu_b > mu_a: per row
    b, the a with mu_a < mu_b and col_A[a, mu_b] > -own_B[b]. Filters, exact since min is:
    a row whose threshold is beaten by the least eligible entry of the other side's column,
    with no faint pair (weight sum below MIN_WEIGHT), counts all its eligible pairs; else
    each group of the other side (one max token) whose least entry beats it counts whole;
    the pairs of the remaining groups are compared one by one, and those not sure are
    evaluated in full (`_decide`).
    """

    def __init__(
        self, q: int, v: int, k: int, tol_unit: float, undecided: Callable[[Tensor], None]
    ) -> None:
        self.q, self.v, self.k, self.tol_unit, self.undecided = q, v, k, tol_unit, undecided

    def count(self, a: _SideTerms, b: _SideTerms) -> int:
        return self._case(a, b, strict=False) + self._case(b, a, strict=True)

    def _case(self, rows: _SideTerms, other: _SideTerms, strict: bool) -> int:
        """Correct pairs (r, o) with mu_o <= mu_r (strict: mu_o < mu_r), m = mu_r."""
        mu_r = rows.side.mu
        limit = mu_r + 1 - int(strict)  # eligible o: group index mu_o + 1 <= limit
        n_eligible = torch.where(mu_r >= self.q, other.size.cumsum(0)[limit.clamp(min=0)], 0)
        threshold = -rows.own
        at = (mu_r - self.q).clamp(min=0)
        faint_free = rows.side.W + other.side.W.min() >= MIN_WEIGHT  # monotone rounding
        below_min = other.group_min.cummin(dim=0).values  # [g + 1]: least over groups <= g
        whole = (below_min[limit.clamp(min=0), at] > threshold) & faint_free
        correct = int(n_eligible[whole].sum())
        rest = ((n_eligible > 0) & ~whole).nonzero().squeeze(1)
        groups = torch.arange(self.v + 1, device=mu_r.device)
        in_range = (groups[None] <= limit[rest, None]) & (other.size[None] > 0)
        least = other.group_min[:, at[rest]].T  # [n_rest, v + 1]
        group_ok = (least > threshold[rest, None]) & faint_free[rest, None]
        correct += int((other.size[None] * (in_range & group_ok)).sum())
        r_items, g_items = (in_range & ~group_ok).nonzero(as_tuple=True)
        return correct + self._pairs(rows, other, rest[r_items], g_items)

    def _pairs(self, rows: _SideTerms, other: _SideTerms, r_items: Tensor, g_items: Tensor) -> int:
        """Correct pairs (r, o) for o in group g (index), per item (r, g), one by one."""
        counts = other.size[g_items]
        chunk = torch.div(counts.cumsum(0) - 1, CHUNK_PAIRS, rounding_mode="floor")
        correct = 0
        for part in torch.unique_consecutive(chunk, return_counts=True)[1].tolist():
            r_part, g_part, n_part = r_items[:part], g_items[:part], counts[:part]
            r_items, g_items, counts = r_items[part:], g_items[part:], counts[part:]
            r = torch.repeat_interleave(r_part, n_part)
            first = torch.repeat_interleave(
                other.start[g_part] - (n_part.cumsum(0) - n_part), n_part
            )
            o = other.order[first + torch.arange(len(r), device=r.device)]
            values = other.col[o, (rows.side.mu[r] - self.q).clamp(min=0)]
            weight = rows.side.W[r] + other.side.W[o]
            sure = (values > -rows.own[r]) & (weight >= MIN_WEIGHT)
            correct += int(sure.sum())
            if not bool(sure.all()):
                correct += self._decide(rows.side, other.side, r[~sure], o[~sure])
        return correct

    def _decide(self, rs: _Side, os: _Side, r: Tensor, o: Tensor) -> int:
        """Full evaluation of pairs (r, o): correct if the margin of Z = T_r + T_o exceeds
        tol_unit * weight, undecided (to `undecided`) if within it or faint."""
        margin = _margin_rows(rs.T[r] + os.T[o], torch.maximum(rs.mu[r], os.mu[o]))
        weight = rs.W[r] + os.W[o]
        tol = self.tol_unit * weight
        faint = weight < MIN_WEIGHT
        amb = (margin.abs() <= tol) | faint
        if bool(amb.any()):
            tokens = torch.full((int(amb.sum()), self.k), self.q, dtype=torch.int64)
            tokens = tokens.to(r.device)
            tokens[:, list(rs.positions)] = rs.tokens[r[amb]]
            tokens[:, list(os.positions)] = os.tokens[o[amb]]
            self.undecided(tokens)
        return int(((margin > tol) & ~faint).sum())


def _margin_rows(Z: Tensor, m: Tensor) -> Tensor:
    """Z[r, m_r] - max_{j != m_r} Z[r, j] for each row r."""
    at_m = Z.gather(-1, m[:, None]).squeeze(-1)
    return at_m - Z.scatter(-1, m[:, None], float("-inf")).max(dim=-1).values


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
