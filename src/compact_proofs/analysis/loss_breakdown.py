"""Where the bound is lost: the correctly classified inputs a proof does not certify, by cause.

For a model and a strategy (any sub-cubic configuration, or cubic), the inputs that the model
classifies correctly but the proof does not certify (exact_correct - certified) are split into
causes by a *sequential ablation ladder*: a fixed, documented sequence of counterfactual
verifiers, each removing one more relaxation of the proof (replacing an approximated quantity
by the exact one) on top of the previous ones. The certified set grows as a cumulative union:

    state_0 = inputs the proof certifies (its own `proven` set; |state_0| = its count)
    state_i = state_{i-1} | (inputs rung i certifies)           i = 1, 2, ...
    state_final = every correctly classified input (exact accuracy)

and the cause of rung i is credited with |state_i| - |state_{i-1}|: the inputs that rung i is
the *first* to certify. So every count is measured exactly (integers over all v^k inputs, no
sampling), is >= 0, and the counts partition exact_correct - certified; what the last
counterfactual rung leaves of the correct inputs is "other / interaction" (exact_correct minus
everything the ladder certified, with exact_correct from `accuracy.exact_accuracy`). The order
matters (an input that needs two relaxations removed is credited to the later one) and is
fixed as below. `input_rungs` gives the same attribution per input.

The whole analysis runs in plain float64 (the proof's count is its --fast count, which on
every model we measured equals the default rigorous one; docs/soundness.md).

The counterfactual verifiers are analysis tools, not proofs (nothing they certify is claimed
as proven), but each computes a bound that is valid in exact arithmetic for every input it
certifies. They require their bound to lie below -tolerance, the exact-accuracy tie tolerance
(REL_TOL times the value scale; an input counts as correct iff its margin exceeds it), so they
never claim an input that exact accuracy calls a tie. The tests check on small models that
every input a rung certifies is classified correctly, and that rung 0 is exactly the proof's
`proven` set.

Sub-cubic ladder (SPEC §6). Key of an input: query q, max m, c = positions holding a token
!= m (SPEC §6.2), s = its largest non-max token (the query included when q != m); its own gap
is m - s. Notation of bounds.py: R[m, j] = EVOU[m, j] - EVOU[m, m], PVOU_pess[m, j] =
max_p (PVOU[p, j] - PVOU[p, m]), W = max_{t <= m - g} rowrange(EVOU)[t], EUPU = W_EP W_U with
W_EP = W_E + P_{k-1}, EUPU_c[q, j] = EUPU[q, j] - EUPU[q, m], A_lo <= attention on m <= A_hi.

    0 proof              the certificate's per-cell gaps, the configured EQKE decomposition,
                         EU handling and attention handling (`SubcubicStrategy.verify`).
    1 gap too small      each input is judged in the cell of its *own* gap: certified iff
                         the configuration's bound with some scalar gap g <= m - s (the same
                         g in every cell, as in proof search, with the verification
                         embedding) is negative at (q, m, c). Two steps, split by a
                         predicate: inputs excluded from their proof cell because a non-max
                         token lies within the cell's gap (m - s < gaps[q, m, c]), and
                         inputs inside their cell's gap whose cell fails with the per-cell
                         gaps (W taken at the smallest gap over queries, the mean+diff average
                         over the cell's queries, the search's embedding W_E + Pbar).
    2 attention error    rung 1 with the exact EQKE (route C: EQKE_hat = EQKE_bar, error
                         bound 0) instead of the low-rank decomposition + error bound.
    3 direct path        rung 2 with the exact direct path EUPU_c[q, j] inside the max over
                         wrong logits j, at both attention extremes (exact EQKE):
                           max_a max_{j!=m} (EUPU_c[q,j] + PVOU_pess[m,j] + a R[m,j])
                           + (1 - a) W,                     a in {A_lo, A_hi}
                         (no EU split into mean + per-query error, hence no mean+diff
                         decoupling of the query from the max over j).
    4 value path         per input: the exact value terms V_p[j] = (EVOU[x_p, j] -
                         EVOU[x_p, m]) + (PVOU[p, j] - PVOU[p, m]) of its own tokens and
                         positions instead of PVOU_pess and W; attention still only known
                         through its cell's extremes (exact EQKE, own gap):
                           max_a max_{j!=m} (EUPU_c[q,j] + a max_{p: x_p=m} V_p[j]
                                             + (1 - a) max_{p: x_p!=m} V_p[j])
    5 other              exact correctness. What is left is the attention relaxation (all
                         non-max tokens at the worst score the gap allows, the max tokens at
                         the worst positions, the unknown split of the attention among
                         positions) and interactions.

Rungs 1-3 depend only on the input's key, so they are tables over (g, q, m, c) (cost about v
times a verification); rung 4 is computed per input, only for inputs rungs 0-3 leave.

Cubic ladder (SPEC §5). The proof evaluates pure sequences (one non-max token t at all c
non-max positions) under two orderings, with the bound
B = EUPU_pess[q,m] + max_o (A_max g[m,m] + A_qry g[m,q] + A_nmx g[m,t]),
g[m,x] = max_{j!=m} G[m,x,j], G[m,x,j] = EVOU[x,j] - EVOU[x,m] + PVOU_pess[m,j].

    0 proof              `cubic_tables` (the cubic verification).
    1 value path         the value terms share one wrong logit j:
                           EUPU_pess[q,m] + max_o max_{j!=m} (A_max G[m,m,j] + A_qry G[m,q,j]
                                                              + A_nmx G[m,t,j])
                         (still pure sequences and orderings; sound by the same convexity
                         argument, applied for each j).
    2 direct path        the direct path joins them: max_o max_{j!=m} (EUPU_c[q,m,j] + ...).
    3 attention          per input, its exact attention weights alpha_p (no orderings, no
                         pure-sequence argument), PVOU still pessimised over positions:
                           max_{j!=m} (EUPU_c[q,j] + sum_p alpha_p EVOU_c[x_p,j] + PVOU_pess[m,j])
    4 value path         exact PVOU of each position: the exact margin, i.e. exact correctness
                         (float64, the exact-accuracy tolerance).
    5 other              0 unless exact accuracy's recheck of near-ties disagrees.

The value path is credited at rungs 1 and 4 (the rows sum the steps of each cause).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import Tensor
from tqdm.auto import tqdm

from compact_proofs.errors import UnsupportedModelError
from compact_proofs.model.transformer import AttnOnlyTransformer
from compact_proofs.proofs.cubic import (
    Cubic,
    CubicTables,
    cubic_tables,
    pessimised_ov,
    three_way_softmax,
)
from compact_proofs.proofs.cubic import proven_mask as cubic_proven_mask
from compact_proofs.proofs.exhaustive import REL_TOL, all_sequences, exact_accuracy
from compact_proofs.proofs.paths import PathMatrices, path_matrices
from compact_proofs.proofs.registry import get_strategy
from compact_proofs.proofs.subcubic.bounds import (
    CellIndex,
    GapFreeTables,
    cell_index,
    extreme_attention,
    extreme_pre_softmax_diffs,
    gap_free_tables,
    subcubic_bounds,
)
from compact_proofs.proofs.subcubic.config import DEFAULT_CONFIG, SubcubicConfig
from compact_proofs.proofs.subcubic.decompose import (
    Directions,
    QKDecomposition,
    Weights64,
    decompose_eqke,
    weights64,
)
from compact_proofs.proofs.subcubic.strategy import SubcubicStrategy
from compact_proofs.soundness import interval as iv

if TYPE_CHECKING:
    from matplotlib.figure import Figure

GAP = "gap too small"
ATTENTION_ERROR = "attention error bound"
DIRECT = "direct-path pessimisation"
VALUE = "value-path pessimisation"
ATTENTION = "attention: orderings + pure sequences"
OTHER = "other / interaction"
SUBCUBIC_CAUSES = (GAP, ATTENTION_ERROR, DIRECT, VALUE, OTHER)
CUBIC_CAUSES = (ATTENTION, DIRECT, VALUE, OTHER)
DEFAULT_STRATEGY = DEFAULT_CONFIG.id  # the paper's default sub-cubic configuration

ENUM_CHUNK = 2**20  # inputs enumerated at once
EVAL_CHUNK = 2**16  # inputs evaluated per input at once ([n, k, v] float64 tables)
TABLE_CELLS = 2**23  # cells x wrong logits per counterfactual table chunk
MAX_INPUTS = 2**30  # every input is enumerated: refuse more than this (tens of minutes)
NEG_INF = float("-inf")
INF = float("inf")
NONE = 255  # `input_rungs` value of inputs no rung certifies (misclassified or "other")
# (rung, cause, description) of the step codes 1, 2, ...; chunks of every input's code
Ladder = tuple[list[tuple[int, str, str]], Iterator[Tensor]]


class LossRow(NamedTuple):
    """One cause: the correctly classified inputs first certified when it is removed."""

    cause: str
    inputs: int
    fraction: float  # of all inputs


@dataclass(frozen=True)
class LossStep:
    """One step of the ladder (a rung, or a part of one): the cause it is credited to and the
    inputs it is the first to certify."""

    rung: int
    cause: str
    description: str
    inputs: int


@dataclass
class LossBreakdown:
    """exact_correct - certified = sum of `rows` (measured exactly, see module docstring)."""

    strategy: str
    total: int
    exact_correct: int
    certified: int
    rows: list[LossRow]
    steps: list[LossStep] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def lost(self) -> int:
        return self.exact_correct - self.certified

    @property
    def misclassified(self) -> int:
        return self.total - self.exact_correct

    def to_json(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "total": self.total,
            "exact_correct": self.exact_correct,
            "certified": self.certified,
            "lost": self.lost,
            "misclassified": self.misclassified,
            "rows": [r._asdict() for r in self.rows],
            "steps": [asdict(s) for s in self.steps],
            "seconds": self.seconds,
        }


# -- entry point --------------------------------------------------------------------------------


def _ladder(model: AttnOnlyTransformer, strategy_id: str, payload: dict | None) -> tuple:
    """(strategy, payload, causes, steps, chunks of first rungs over all inputs in order)."""
    strategy = get_strategy(strategy_id)
    if not isinstance(strategy, SubcubicStrategy | Cubic):
        raise UnsupportedModelError(
            f"loss breakdown supports cubic and the sub-cubic strategies, not {strategy.id!r}"
        )
    if model.cfg.n_inputs > MAX_INPUTS:
        raise UnsupportedModelError(
            f"loss breakdown enumerates all d_vocab^n_ctx = {model.cfg.n_inputs:.2e} inputs; "
            f"at most {MAX_INPUTS:.2e} are supported"
        )
    payload = strategy.search(model) if payload is None else payload
    if isinstance(strategy, SubcubicStrategy):
        return strategy, payload, SUBCUBIC_CAUSES, *_subcubic_ladder(model, strategy, payload)
    return strategy, payload, CUBIC_CAUSES, *_cubic_ladder(model)


@torch.no_grad()
def input_rungs(
    model: AttnOnlyTransformer, strategy_id: str, payload: dict | None = None
) -> Tensor:
    """Per-input attribution: uint8 [v^k] in the order of `accuracy.all_sequences`: 0 if the
    proof certifies the input, else the code i >= 1 of the first ladder step certifying it
    (`LossBreakdown.steps[i - 1]`), else NONE (misclassified, or correct and "other")."""
    _, _, _, _, chunks = _ladder(model, strategy_id, payload)
    return torch.cat([first.to(torch.uint8) for first in chunks])


@torch.no_grad()
def loss_breakdown(
    model: AttnOnlyTransformer,
    strategy_id: str,
    payload: dict | None = None,
    progress: bool = False,
) -> LossBreakdown:
    """Split exact_correct - certified of `strategy_id` on `model` into causes (module
    docstring). `payload`: the strategy's certificate payload; None runs its proof search.
    `progress`: a progress bar over the input chunks on stderr.

    Supports the sub-cubic configurations and cubic; raises UnsupportedModelError otherwise.
    Post: sum(r.inputs for r in rows) == exact_correct - certified, every r.inputs >= 0.
    Memory: the inputs are attributed in chunks (as exact accuracy enumerates them), plus
    the verifiers' tables: O(v^3) floats for cubic, O(v^3 k) for the sub-cubic gap tables,
    whatever the weights' values (under 1 GB at v = 64, k = 4: benchmarks/memory.py).
    """
    start = time.perf_counter()
    strategy, payload, causes, steps, chunks = _ladder(model, strategy_id, payload)
    counts = [0] * (NONE + 1)
    n_chunks = -(-model.cfg.n_inputs // ENUM_CHUNK)
    bar = tqdm(chunks, total=n_chunks, desc="loss breakdown", unit="chunk", disable=not progress)
    for first in bar:
        hist = torch.bincount(first, minlength=NONE + 1).tolist()
        counts = [a + b for a, b in zip(counts, hist, strict=True)]
    del counts[len(steps) + 1 :]  # what no step certified is counted below, from the total
    exact_correct = exact_accuracy(model, rigorous=False).correct  # the ladder is float64
    certified = counts[0]
    claimed = strategy.verify(model, payload, rigorous=False).correct_count
    if certified != claimed:  # the per-input proven set must reproduce the proof's count
        raise RuntimeError(f"proven inputs {certified} != verified count {claimed}")
    ladder = [
        LossStep(rung, cause, text, counts[code])
        for code, (rung, cause, text) in enumerate(steps, 1)
    ]
    other = exact_correct - certified - sum(s.inputs for s in ladder)
    if other < 0:
        raise RuntimeError(f"the ladder certified {-other} more inputs than are correct")
    last = ladder[-1].rung + 1
    ladder.append(LossStep(last, OTHER, "exact correctness (remaining relaxations)", other))
    total = model.cfg.n_inputs
    rows = [
        LossRow(cause, n, n / total)
        for cause in causes
        for n in [sum(s.inputs for s in ladder if s.cause == cause)]
    ]
    return LossBreakdown(
        strategy=strategy.id,
        total=total,
        exact_correct=exact_correct,
        certified=certified,
        rows=rows,
        steps=ladder,
        seconds=time.perf_counter() - start,
    )


# -- per-input quantities -----------------------------------------------------------------------


def _tolerance(paths: PathMatrices) -> float:
    """The exact-accuracy fast path's tie tolerance (accuracy.exact_accuracy): an input counts
    as correct iff its margin l_m - max_{j!=m} l_j exceeds it."""
    scale = paths.EUPU.abs().max() + paths.EVOU.abs().max() + paths.PVOU.abs().max()
    return REL_TOL * float(scale)


def _chunks(v: int, k: int, device: torch.device):
    total = v**k
    for start in range(0, total, ENUM_CHUNK):
        yield all_sequences(v, k, start, min(start + ENUM_CHUNK, total), device=device)


def _direct_centred(paths: PathMatrices, q: Tensor, m: Tensor) -> Tensor:
    """EU_c[n, j] = EUPU[q, j] - EUPU[q, m]."""
    EU = paths.EUPU.index_select(0, q)
    return EU.sub_(EU.gather(-1, m[:, None]))


def _max_wrong(x: Tensor, m: Tensor) -> Tensor:
    """max_{j != m} x[n, j] (x is overwritten)."""
    return x.scatter_(-1, m[:, None], NEG_INF).amax(dim=-1)


def _attention(paths: PathMatrices, tokens: Tensor, q: Tensor) -> Tensor:
    """The exact attention weights alpha[n, p] of the query position."""
    scores = (paths.EQKE[q[:, None], tokens] + paths.EQKP[q]) / paths.attn_scale
    return scores.softmax(dim=-1)


# -- sub-cubic ----------------------------------------------------------------------------------


def _gap_batches(v: int, per_gap: int, device: torch.device):
    """Scalar gaps 1..v-1 (at least gap 1) in batches of at most TABLE_CELLS cells, shaped
    [G, 1, 1, 1] to broadcast over cells (q, m, c)."""
    top = max(2, v)
    step = max(1, min(top - 1, TABLE_CELLS // per_gap))
    for start in range(1, top, step):
        yield torch.arange(start, min(start + step, top), device=device)[:, None, None, None]


@dataclass(frozen=True)
class _SubcubicTables:
    first: Tensor  # [gap-1, q, m, c] int8: first rung 0-3 certifying the key, 4 if none
    A_lo: Tensor  # [gap-1, q, m, c] attention extremes with the exact EQKE (rung 4)
    A_hi: Tensor
    max_slots: Tensor | None = None  # `_max_slot_values` (rung 4)


def _subcubic_tables(
    w: Weights64,
    paths: PathMatrices,
    cfg: SubcubicConfig,
    dirs: Directions,
    gaps0: Tensor,
    tolerance: float,
) -> _SubcubicTables:
    """Key tables of rungs 0-3 and the attention extremes for rung 4 (module docstring).
    Counterfactual rungs need their bound below -tolerance (so they never claim an input
    that exact accuracy calls a tie); the proof's own rung 0 keeps its `< 0`."""
    v, k = w.W_E.shape[0], w.W_pos.shape[0]
    device = w.W_E.device
    qk = decompose_eqke(w, dirs, cfg.error, cfg.route)
    qk_exact = decompose_eqke(w, dirs, "exact_EQKE+max_diff_exact", "C")

    tables, exact = gap_free_tables(w, qk), gap_free_tables(w, qk_exact)  # for every batch

    def bounds(
        decomposition: QKDecomposition, t: GapFreeTables, gaps: Tensor
    ) -> tuple[Tensor, CellIndex]:
        return subcubic_bounds(
            w, decomposition, gaps, w.E_q, cfg.eu, dirs.W_EP_direction, cfg.uses_mean_diff,
            tables=t,
        )  # fmt: skip

    # rung 0: the proof's own cells (per-cell gaps); an input of key (q, m, c) with own gap
    # g_x is proven iff its cell's bound is negative and g_x >= the cell's gap
    B0, cells0 = bounds(qk, tables, gaps0)
    proven0 = cells0.valid & iv.certainly_negative(B0)
    all_max = (cells0.q == cells0.m) & (cells0.c == 0)  # one input; no gap applies

    EVOU, PVOU, EUPU = paths.EVOU, paths.PVOU, paths.EUPU  # biases folded as in the proof
    eye = torch.eye(v, dtype=torch.bool, device=device)
    PVOU_pess = (PVOU[:, None, :] - PVOU[:, :, None]).amax(dim=0)  # [m, j]
    R = EVOU - EVOU.diagonal()[:, None]  # [m, j]
    EU_c = EUPU[:, None, :] - EUPU[:, :, None]  # [q, m, j] = EUPU[q, j] - EUPU[q, m]
    X0 = (EU_c + PVOU_pess[None]).masked_fill(eye[None], NEG_INF)  # [q, m, j]
    B_all_max = (EU_c.diagonal().T + R + PVOU_pess).masked_fill(eye, NEG_INF).amax(dim=-1)
    W_run = iv.running_max(EVOU.amax(dim=-1) - EVOU.amin(dim=-1), dim=0)

    negs: list[list[Tensor]] = [[], [], [], []]
    A_lo_all, A_hi_all = [], []
    for gaps in _gap_batches(v, v * v * k * v, device):
        negs[0].append(proven0 & ((gaps >= gaps0) | all_max))
        for rung, decomposition, t in ((1, qk, tables), (2, qk_exact, exact)):
            B, cells = bounds(decomposition, t, gaps)
            negs[rung].append(cells.valid & (B + tolerance < 0))
        cells = cell_index(gaps, v, k)
        D_lo, D_hi = extreme_pre_softmax_diffs(qk_exact, gaps, cells, exact.hi, exact.lo)
        A_lo, A_hi = extreme_attention(D_lo, D_hi, exact.log_ratio, cells, w.attn_scale)
        A_lo_all.append(A_lo)
        A_hi_all.append(A_hi)
        negs[3].append(
            _direct_exact_negative(X0, R, W_run, B_all_max, A_lo, A_hi, gaps, cells, tolerance)
        )
    first = torch.full(A_lo.shape[1:], 4, dtype=torch.int8, device=device)
    first = first.expand(sum(a.shape[0] for a in A_lo_all), -1, -1, -1)
    for rung in (3, 2, 1, 0):
        covered = torch.cat(negs[rung])
        if rung > 0:  # some scalar gap g' <= g certifies the cell
            covered = covered.to(torch.uint8).cummax(dim=0).values.bool()
        first = torch.where(covered, rung, first)
    return _SubcubicTables(first=first, A_lo=torch.cat(A_lo_all), A_hi=torch.cat(A_hi_all))


def _direct_exact_negative(
    X0: Tensor, R: Tensor, W_run: Tensor, B_all_max: Tensor, A_lo: Tensor, A_hi: Tensor,
    gaps: Tensor, cells: CellIndex, tolerance: float,
) -> Tensor:  # fmt: skip
    """Rung 3 (module docstring): cells whose bound with the exact direct path is negative."""
    at = cells.m - gaps  # [G, 1, m, 1]
    W = torch.where(at >= 0, W_run[at.clamp(min=0)], INF)
    bounds = []
    for a in (A_lo, A_hi):
        inner = (X0[None, :, :, None, :] + a[..., None] * R[None, None, :, None, :]).amax(-1)
        bounds.append(inner + (1 - a) * W)
    B = torch.maximum(*bounds)
    B = torch.where((cells.q == cells.m) & (cells.c == 0), B_all_max[:, None], B)
    return cells.valid & (B + tolerance < 0)


def _subcubic_ladder(
    model: AttnOnlyTransformer, strategy: SubcubicStrategy, payload: dict
) -> Ladder:
    w = weights64(model)
    dirs, gaps0 = strategy.parse_certificate(payload, w)  # validated exactly as verification does
    paths = path_matrices(model)
    tolerance = _tolerance(paths)
    tables = _subcubic_tables(w, paths, strategy.config, dirs, gaps0, tolerance)
    tables = replace(tables, max_slots=_max_slot_values(paths))
    v, k = model.cfg.d_vocab, model.cfg.n_ctx

    def chunks() -> Iterator[Tensor]:
        for tokens in _chunks(v, k, w.W_E.device):
            m, q = tokens.max(dim=-1).values, tokens[:, -1]
            nonmax = tokens != m[:, None]
            c = nonmax.sum(dim=-1)
            s = torch.where(nonmax, tokens, -1).amax(dim=-1)  # largest non-max (-1: none)
            g_idx = (m - s).clamp(1, tables.first.shape[0]) - 1  # own gap (c = 0: any)
            rung = tables.first[g_idx, q, m, c].long()
            excluded = (c > 0) & (m - s < gaps0[q, m, c])  # outside its proof cell's gap
            first = torch.where(rung == 0, 0, rung + 1)  # codes of rungs 2, 3 are 3, 4
            first = torch.where((rung == 1) & excluded, 1, first)
            rest = (rung == 4).nonzero().squeeze(-1)
            for part in rest.split(EVAL_CHUNK):
                idx = (g_idx[part], q[part], m[part], c[part])
                proven = _value_exact_negative(paths, tokens[part], tables, idx, tolerance)
                first[part] = torch.where(proven, 5, NONE)
            yield first

    own_gap = "judged in the cell of its own gap (best scalar gap <= m - s)"
    steps = [
        (1, GAP, f"excluded by its proof cell's gap; {own_gap}"),
        (1, GAP, f"inside its proof cell's gap but that cell fails; {own_gap}"),
        (2, ATTENTION_ERROR, "exact EQKE instead of the decomposition + error bound"),
        (3, DIRECT, "exact direct path inside the max over wrong logits"),
        (4, VALUE, "exact value terms of each input's tokens and positions"),
    ]
    return steps, chunks()


def _max_slot_values(paths: PathMatrices) -> Tensor | None:
    """table[m * 2^k + S, j] = max_{p in S} V_p[j] for the positions S (a bitmask) holding m:
    EVOU[m, j] - EVOU[m, m] + max_{p in S} (PVOU[p, j] - PVOU[p, m]); None if too large."""
    v, k = paths.d_vocab, paths.n_ctx
    if 2**k * v * v > TABLE_CELLS:
        return None
    R = paths.EVOU - paths.EVOU.diagonal()[:, None]  # [m, j]
    PVOU_c = paths.PVOU[None, :, :] - paths.PVOU.T[:, :, None]  # [m, p, j]
    table = torch.full((v, 2**k, v), NEG_INF, dtype=R.dtype, device=R.device)
    for S in range(1, 2**k):
        low = (S & -S).bit_length() - 1  # lowest position of S
        table[:, S] = torch.maximum(table[:, S & (S - 1)], PVOU_c[:, low])
    return (table + R[:, None, :]).reshape(v * 2**k, v)


def _value_exact_negative(
    paths: PathMatrices, tokens: Tensor, tables: _SubcubicTables, idx: tuple[Tensor, ...],
    tolerance: float,
) -> Tensor:  # fmt: skip
    """Rung 4 (module docstring) for inputs `tokens` of keys `idx`: its bound is below
    -tolerance, so each input it certifies is also correct by the exact-accuracy rule."""
    _, q, m, c = idx
    (n, k), v = tokens.shape, paths.d_vocab
    is_max = tokens == m[:, None]
    # V[n, p, j] = EVOU[x_p, j] + PVOU[p, j], centred at m (in place: no extra [n, k, v])
    V = paths.EVOU.index_select(0, tokens.flatten()).view(n, k, v)
    V += paths.PVOU
    V -= (paths.EVOU[tokens, m[:, None]] + paths.PVOU.T[m])[..., None]
    if tables.max_slots is None:
        V_max = V.masked_fill(~is_max[..., None], NEG_INF).amax(dim=1)
    else:
        S = (is_max.long() << torch.arange(k, device=m.device)).sum(dim=-1)
        V_max = tables.max_slots.index_select(0, m * 2**k + S)
    V_non = V.masked_fill_(is_max[..., None], NEG_INF).amax(dim=1)
    a_lo, a_hi = tables.A_lo[idx][:, None], tables.A_hi[idx][:, None]
    all_max = c == 0  # attention 1 on m
    V_non[all_max] = 0.0
    a_lo[all_max], a_hi[all_max] = 1.0, 1.0
    base = _direct_centred(paths, q, m).add_(V_non)
    slope = V_max.sub_(V_non)
    B_lo = _max_wrong(torch.addcmul(base, a_lo, slope), m)
    B_hi = _max_wrong(torch.addcmul(base, a_hi, slope), m)
    return torch.maximum(B_lo, B_hi) + tolerance < 0


# -- cubic --------------------------------------------------------------------------------------


def _cubic_coupled_tables(
    paths: PathMatrices, base: CubicTables, tolerance: float
) -> list[CubicTables]:
    """Rungs 1 (value terms share j) and 2 (direct path joins them) as cubic tables; the
    attention weights are the cubic proof's own (`three_way_softmax` on the same inputs)."""
    v, k = paths.d_vocab, paths.n_ctx
    device = paths.EUPU.device
    ms = torch.arange(v, device=device)
    s_tok = paths.EQKE / paths.attn_scale
    s_pos = paths.EQKP[:, : k - 1] / paths.attn_scale
    s_query = (paths.EQKE.diagonal() + paths.EQKP[:, k - 1]) / paths.attn_scale
    ascending = iv.sort_values(s_pos, dim=-1)
    orders = iv.stack([ascending, ascending.flip(-1)])  # [o, q, slot]
    q_eq_m = ms[:, None] == ms[None, :]
    q_le_m = ms[:, None] <= ms[None, :]
    t_lt_m = ms[None, :] < ms[:, None]  # [m, t]
    PVOU_pess, EUPU_c, EVOU_c, _ = pessimised_ov(paths, ms, v)
    is_m = ms[:, None] == ms[None, :]  # [m, j]
    G = EVOU_c + PVOU_pess[:, None, :]  # [m, x, j]; j = m is masked after weighting
    EUPU_pess = EUPU_c.masked_fill(is_m[None], NEG_INF).amax(dim=-1)  # [q, m]
    step = max(1, TABLE_CELLS // (2 * v * v * v))
    B1_c, B2_c = [], []
    for c in range(1, k):
        n_max = k - 1 - c
        log_on_max = orders[..., :n_max].logsumexp(dim=-1)  # [o, q]
        log_on_nonmax = orders[..., n_max:].logsumexp(dim=-1)
        B1_m, B2_m = [], []
        for lo in range(0, v, step):
            mm = ms[lo : lo + step]
            on_max, on_nonmax, w_query = three_way_softmax(
                (s_tok[:, mm][None] + log_on_max[..., None])[..., None],  # [o, q, M, 1]
                (s_tok[None] + log_on_nonmax[..., None])[:, :, None, :],  # [o, q, 1, t]
                s_query[None, :, None, None],
            )
            eq = q_eq_m[None, :, mm, None]
            A_max = torch.where(eq, on_max + w_query, on_max)[..., None]  # [o, q, M, t, 1]
            A_qry = torch.where(eq, 0.0, w_query)[..., None]
            G_mm = G[mm, mm][None, None, :, None, :]  # [1, 1, M, 1, j]
            G_mq = G[mm].transpose(0, 1)[None, :, :, None, :]  # [1, q, M, 1, j]
            G_mt = G[mm][None, None]  # [1, 1, M, t, j]
            inner = A_max * G_mm + A_qry * G_mq + on_nonmax[..., None] * G_mt
            inner = inner.masked_fill(is_m[mm][None, None, :, None, :], NEG_INF)
            B1_m.append(EUPU_pess[:, mm, None] + inner.amax(dim=-1).amax(dim=0))
            joined = EUPU_c[:, mm][None, :, :, None, :] + inner  # [o, q, M, t, j]
            B2_m.append(joined.amax(dim=-1).amax(dim=0))
        B1_c.append(torch.cat(B1_m, dim=1))
        B2_c.append(torch.cat(B2_m, dim=1))
    out = []
    for B_c in (B1_c, B2_c):
        goods = []
        for c, B in enumerate(B_c, 1):
            valid = (q_eq_m | (q_le_m & (c <= k - 2)))[:, :, None] & t_lt_m[None]
            goods.append(valid & (B + tolerance < 0))
        good = torch.stack(goods, dim=-1) if goods else base.good
        B = torch.stack(B_c, dim=-1) if B_c else base.B
        out.append(CubicTables(B0=base.B0, B=B, good0=base.good0, good=good))
    return out


def _cubic_ladder(model: AttnOnlyTransformer) -> Ladder:
    paths = path_matrices(model)
    tables = [cubic_tables(paths)]
    tolerance = _tolerance(paths)
    tables += _cubic_coupled_tables(paths, tables[0], tolerance)
    v, k = paths.d_vocab, paths.n_ctx
    PVOU_pess = (paths.PVOU[:, None, :] - paths.PVOU[:, :, None]).amax(dim=0)  # [m, j]

    def chunks() -> Iterator[Tensor]:
        for tokens in _chunks(v, k, paths.EUPU.device):
            first = torch.full((tokens.shape[0],), 3, dtype=torch.int64, device=tokens.device)
            for rung in range(len(tables) - 1, -1, -1):
                first = torch.where(cubic_proven_mask(tables[rung], tokens), rung, first)
            rest = (first == 3).nonzero().squeeze(-1)
            for part in rest.split(EVAL_CHUNK):
                first[part] = _cubic_per_input(paths, tokens[part], PVOU_pess, tolerance)
            yield first

    steps = [
        (1, VALUE, "value terms evaluated at a common wrong logit j (pure sequences)"),
        (2, DIRECT, "direct path inside the max over wrong logits (pure sequences)"),
        (3, ATTENTION, "exact attention of each input (no orderings, no pure sequences)"),
        (4, VALUE, "exact positional value terms (exact margin)"),
    ]
    return steps, chunks()


def _cubic_per_input(
    paths: PathMatrices, tokens: Tensor, PVOU_pess: Tensor, tolerance: float
) -> Tensor:
    """3 if rung 3 certifies the input (bound below -tolerance), else 4 if it is correct
    (margin above tolerance), else NONE."""
    m, q = tokens.max(dim=-1).values, tokens[:, -1]
    alpha = _attention(paths, tokens, q)
    (n, k), v = tokens.shape, paths.d_vocab
    EV = paths.EVOU.index_select(0, tokens.flatten()).view(n, k, v)
    EV = torch.bmm(alpha[:, None, :], EV).squeeze(1)  # sum_p alpha_p EVOU[x_p, j]
    EV -= EV.gather(-1, m[:, None])
    PV = alpha @ paths.PVOU
    PV -= PV.gather(-1, m[:, None])
    direct_value = _direct_centred(paths, q, m) + EV
    B3 = _max_wrong(direct_value + PVOU_pess.index_select(0, m), m)
    margin = -_max_wrong(direct_value + PV, m)
    return torch.where(B3 + tolerance < 0, 3, torch.where(margin > tolerance, 4, NONE))


# -- presentation -------------------------------------------------------------------------------


def breakdown_markdown(lb: LossBreakdown, steps: bool = False) -> str:
    """A Markdown table: certified, each cause, misclassified; inputs and fractions. With
    `steps`, a second table lists the ladder's steps in order (module docstring)."""
    lost = lb.lost
    lines = [
        f"Loss breakdown of `{lb.strategy}`: {lb.lost} of {lb.exact_correct} correctly "
        f"classified inputs not certified ({lb.total} inputs).",
        "",
        "| | inputs | fraction of all inputs | share of lost |",
        "|---|---:|---:|---:|",
        f"| certified | {lb.certified} | {lb.certified / lb.total:.6f} | |",
    ]
    for r in lb.rows:
        share = f"{r.inputs / lost:.4f}" if lost else "—"
        lines.append(f"| lost: {r.cause} | {r.inputs} | {r.fraction:.6f} | {share} |")
    lines.append(f"| misclassified | {lb.misclassified} | {lb.misclassified / lb.total:.6f} | |")
    lines.append(f"| total | {lb.total} | 1.000000 | |")
    if steps:
        lines += ["", "| rung | cause | step | inputs |", "|---:|---|---|---:|"]
        lines += [f"| {s.rung} | {s.cause} | {s.description} | {s.inputs} |" for s in lb.steps]
    return "\n".join(lines)


def plot_loss_breakdown(lb: LossBreakdown) -> Figure:
    """Horizontal stacked bar of all inputs (certified | causes | misclassified) above a bar
    chart of the inputs lost to each cause."""
    from matplotlib.figure import Figure  # slow to import: only when plotting

    fig = Figure(figsize=(8, 4.5), layout="constrained")
    top, bottom = fig.subplots(2, 1, height_ratios=[1, 2])
    segments = [("certified", lb.certified, "tab:green")]
    colors = ["tab:orange", "tab:purple", "tab:blue", "tab:cyan", "tab:olive", "tab:pink"]
    segments += [(r.cause, r.inputs, colors[i % len(colors)]) for i, r in enumerate(lb.rows)]
    segments.append(("misclassified", lb.misclassified, "tab:red"))
    left = 0.0
    for label, n, color in segments:
        top.barh(0, n / lb.total, left=left, color=color, label=label)
        left += n / lb.total
    top.set_xlim(0, 1)
    top.set_yticks([])
    top.set_xlabel("fraction of all inputs")
    top.set_title(f"{lb.strategy}: certified {lb.certified / lb.total:.4f}", fontsize=9)
    top.legend(fontsize=7, ncols=3, loc="upper center", bbox_to_anchor=(0.5, -0.6))
    names = [r.cause for r in lb.rows]
    values = [r.inputs for r in lb.rows]
    bottom.barh(names, values, color=colors[: len(names)])
    bottom.invert_yaxis()
    bottom.set_xlabel("correctly classified inputs not certified")
    for i, n in enumerate(values):
        bottom.annotate(f" {n}", (n, i), va="center", fontsize=7)
    return fig
