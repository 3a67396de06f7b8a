"""Is the unexplained part of EQKE "structureless noise"? (the paper's discussion; issue 7)

Route A of the sub-cubic proofs writes EQKE_bar = A B (A = E_q W_Q W_K^T [v, d], B = Ebar^T
[d, v]), explains the rank-one part (u^T A B w) u w^T, and bounds the residual A_r B_r without
explanation (`decompose.route_a_parts`). If that residual were structureless, its error bound
would look like that of random matrices. The experiment replaces A_r and B_r by Gaussian
matrices with the same shape and the same entry mean and standard deviation (per matrix),
`draws` times, and recomputes (1) the residual's error bound with the configuration's method
and (2) the certified bound the configuration would then reach (fresh min-gap search; cross
terms and everything else as in the real model). It reports how many standard deviations the
real values lie from the random ones.

`separable-subcubic` (proofs/separable_subcubic.py) uses EQKE and EVOU whole, but two of its
relaxations are paid for by what is left once their structure is taken out; the same test is
run on each (float64 counterfactuals, the proof's parameters otherwise):

* EQKE beyond its rank-one part (EQKE = s1 u w^T + R): the prefix bound pays for every row
  of EQKE that is not increasing in the key token. Statistic: the mean prefix excess
  max_{x <= y} s[q, x] - s[q, y] (s = EQKE / sqrt(d_head)) over all (q, y).
* EVOU outside each row's top-r entries of A = EVOU + max_p PVOU: the coupled value bound
  charges every such entry of a row with the row's largest one. Statistic: the mean over rows
  of that largest entry minus the row's mean entry (outside the top r).

The random-residual bounds are counterfactuals ("what the proof would certify if the noise
were structureless"), not certificates about the model.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from compact_proofs.model.transformer import AttnOnlyTransformer
from compact_proofs.proofs import separable_subcubic as ss
from compact_proofs.proofs.paths import PathMatrices, path_matrices
from compact_proofs.proofs.subcubic.bounds import SOUND, count_correct, subcubic_bounds
from compact_proofs.proofs.subcubic.config import SubcubicConfig
from compact_proofs.proofs.subcubic.decompose import (
    Directions,
    QKDecomposition,
    Weights64,
    position_error,
    residual_bound,
    route_a_parts,
    weights64,
)
from compact_proofs.proofs.subcubic.search import find_directions, find_min_gaps
from compact_proofs.soundness.arithmetic import Arithmetic

ROUTE_A_ERRORS = ("svd", "max_diff", "mean+max_diff")


@dataclass(frozen=True)
class NoiseResult:
    """Real vs random residual: mean (over query rows) of the residual's error bound, and
    the normalised certified bound, for the real model and for each random draw."""

    strategy: str
    real_error: float
    random_errors: list[float]
    real_bound: float
    random_bounds: list[float]
    statistic: str = "error bound"  # what real_error / random_errors measure

    @staticmethod
    def _z(real: float, draws: list[float]) -> float:
        sd = statistics.stdev(draws) if len(draws) > 1 else 0.0
        return (real - statistics.fmean(draws)) / sd if sd > 0 else float("nan")

    @property
    def error_z(self) -> float:
        """(real - mean random) / sd random for the error bound (> 0: real noise is worse)."""
        return self._z(self.real_error, self.random_errors)

    @property
    def bound_z(self) -> float:
        return self._z(self.real_bound, self.random_bounds)

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "error_z": self.error_z,
            "bound_z": self.bound_z,
            "arithmetic": "float64",  # counterfactual bounds, not proofs (BOUNDS_NOTE)
        }


BOUNDS_NOTE = (
    "Bounds here are plain float64 counterfactuals (what each proof would certify with that "
    "residual), NOT proofs; `compact-proofs prove` gives the rigorous bound of the real model."
)


TABLE_HEADERS = (
    "strategy: residual",
    "statistic",
    "real",
    "random mean ± sd",
    "z",
    "bound real (float64)",
    "random mean ± sd",
    "z",
)


def table_cells(r: NoiseResult) -> list[str]:
    """One display row of the experiment's table (columns: TABLE_HEADERS)."""
    return [
        r.strategy,
        r.statistic,
        f"{r.real_error:.4g}",
        f"{statistics.fmean(r.random_errors):.4g} ± {statistics.stdev(r.random_errors):.2g}",
        f"{r.error_z:+.1f}",
        f"{r.real_bound:.4f}",
        f"{statistics.fmean(r.random_bounds):.4f} ± {statistics.stdev(r.random_bounds):.2g}",
        f"{r.bound_z:+.1f}",
    ]


def run_all(model: AttnOnlyTransformer, draws: int = 10, seed: int = 0) -> list[NoiseResult]:
    """The experiment for every route-A error handling (default configuration otherwise), on
    one shared decomposition and the same random draws, then for the two residuals of
    `separable-subcubic`. Memory O(k r v^2 + v d) floats per draw (one at a time), whatever
    the weights' values."""
    parts = _RouteA.of(model)
    route_a = [
        _experiment(parts, SubcubicConfig(error=error), draws, seed) for error in ROUTE_A_ERRORS
    ]
    return route_a + separable_subcubic_noise(model, draws, seed)


def _like(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Gaussian matrix with x's shape, entry mean and entry standard deviation."""
    noise = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    return x.mean() + x.std() * noise


def _certified(
    w: Weights64, qk: QKDecomposition, dirs: Directions, config: SubcubicConfig
) -> float:
    """Normalised bound of `config` with the given decomposition and a fresh gap search."""
    gaps = find_min_gaps(w, dirs, config, qk=qk)
    B, cells = subcubic_bounds(
        w, qk, gaps, w.E_q, config.eu, dirs.W_EP_direction, config.uses_mean_diff, SOUND
    )
    v, k = w.W_E.shape[0], w.W_pos.shape[0]
    return count_correct(B, gaps, cells, k, SOUND) / v**k


@dataclass(frozen=True)
class _RouteA:
    """The model's route-A decomposition (independent of the error handling)."""

    w: Weights64
    dirs: Directions
    EQKE_hat: torch.Tensor
    A_r: torch.Tensor
    B_r: torch.Tensor
    cross: torch.Tensor
    pos_err: torch.Tensor

    @staticmethod
    @torch.no_grad()
    def of(model: AttnOnlyTransformer) -> _RouteA:
        w = weights64(model)
        dirs = find_directions(w)
        EQKE_hat, A_r, B_r, cross = route_a_parts(w, dirs)
        return _RouteA(w, dirs, EQKE_hat, A_r, B_r, cross, position_error(w))


def noise_experiment(
    model: AttnOnlyTransformer, config: SubcubicConfig, draws: int = 10, seed: int = 0
) -> NoiseResult:
    """Run the experiment for one route-A configuration (see module docstring).

    Pre: config.error in ROUTE_A_ERRORS, draws >= 2. Post: len(random_*) == draws.
    """
    if config.error not in ROUTE_A_ERRORS:
        raise ValueError(f"the noise experiment needs a route-A error handling {ROUTE_A_ERRORS}")
    return _experiment(_RouteA.of(model), config, draws, seed)


@torch.no_grad()
def _experiment(parts: _RouteA, config: SubcubicConfig, draws: int, seed: int) -> NoiseResult:
    def outcome(a_r: torch.Tensor, b_r: torch.Tensor) -> tuple[float, float]:
        residual = residual_bound(a_r, b_r, config.error)
        qk = QKDecomposition(
            EQKE_hat=parts.EQKE_hat, pos_err=parts.pos_err, err_bound=residual + parts.cross
        )
        return float(residual.mean()), _certified(parts.w, qk, parts.dirs, config)

    real_error, real_bound = outcome(parts.A_r, parts.B_r)
    gen = torch.Generator().manual_seed(seed)
    randoms = [outcome(_like(parts.A_r, gen), _like(parts.B_r, gen)) for _ in range(draws)]
    return NoiseResult(
        strategy=config.id,
        real_error=real_error,
        random_errors=[e for e, _ in randoms],
        real_bound=real_bound,
        random_bounds=[b for _, b in randoms],
    )


# -- separable-subcubic ------------------------------------------------------------------


def _prefix_excess(EQKE: torch.Tensor, scale: float) -> float:
    s = EQKE / scale
    return float((s.cummax(dim=-1).values - s).mean())


def _outside_top(paths: PathMatrices, top_r: int) -> torch.Tensor:
    """bool [x, j]: the entries of EVOU outside row x's top-r entries of EVOU + max_p PVOU."""
    A = paths.EVOU + paths.PVOU.amax(dim=0)[None, :]
    J = A.topk(min(top_r, A.shape[-1]), dim=-1).indices
    return torch.ones_like(A, dtype=torch.bool).scatter(1, J, False)


def _row_spread(paths: PathMatrices, top_r: int) -> float:
    A = paths.EVOU + paths.PVOU.amax(dim=0)[None, :]
    out = _outside_top(paths, top_r)
    n = out.sum(dim=-1).clamp(min=1)
    top = A.masked_fill(~out, -torch.inf).amax(dim=-1)
    mean = A.masked_fill(~out, 0.0).sum(dim=-1) / n
    return float((top - mean)[out.any(dim=-1)].mean())


def _rank_one(EQKE: torch.Tensor) -> torch.Tensor:
    """EQKE's best rank-one approximation s1 u w^T."""
    U, S, Vh = torch.linalg.svd(EQKE)
    return S[0] * torch.outer(U[:, 0], Vh[0])


def _eqke_variant(
    paths: PathMatrices, gen: torch.Generator | None, rank1: torch.Tensor
) -> PathMatrices:
    """The path matrices with EQKE's residual beyond rank one (rank1: its rank-one part)
    replaced by a Gaussian with its entry mean and std (gen None: the real matrices)."""
    if gen is None:
        return paths
    return replace(paths, EQKE=rank1 + _like(paths.EQKE - rank1, gen))


def _evou_variant(paths: PathMatrices, gen: torch.Generator | None, top_r: int) -> PathMatrices:
    """EVOU with its entries outside the top-r of each row (of EVOU + max_p PVOU) replaced by
    Gaussians with those entries' mean and std (gen None: the real matrices)."""
    if gen is None:
        return paths
    out = _outside_top(paths, top_r)
    EVOU = paths.EVOU.clone()
    EVOU[out] = _like(paths.EVOU[out], gen)
    return replace(paths, EVOU=EVOU)


@torch.no_grad()
def separable_subcubic_noise(
    model: AttnOnlyTransformer, draws: int = 10, seed: int = 0
) -> list[NoiseResult]:
    """Real vs random residuals for the two relaxations of `separable-subcubic` (module
    docstring): the statistic each one pays for and the certified bound (float64)."""
    paths = path_matrices(model)
    v, k = paths.d_vocab, paths.n_ctx
    top_r, window = min(ss.DEFAULT_TOP_R, v), min(ss.DEFAULT_WINDOW, v)
    scale = float(paths.attn_scale)
    rank1 = _rank_one(paths.EQKE)  # once, not per draw
    cases = (
        ("EQKE beyond rank 1", "mean prefix excess of EQKE / sqrt(d_head)",
         lambda p, g: _eqke_variant(p, g, rank1),
         lambda p: _prefix_excess(p.EQKE, scale)),
        ("EVOU outside the top-r", "mean row spread of the residual",
         lambda p, g: _evou_variant(p, g, top_r), lambda p: _row_spread(p, top_r)),
    )  # fmt: skip
    results = []
    for name, statistic, variant, measure in cases:
        gen = torch.Generator().manual_seed(seed)
        outcomes = []
        for g in (None, *([gen] * draws)):
            p = variant(paths, g)
            count = ss.count_paths(p, top_r, window, Arithmetic.FAST)
            outcomes.append((measure(p), count / v**k))
        results.append(
            NoiseResult(
                strategy=f"separable-subcubic: {name}",
                real_error=outcomes[0][0],
                random_errors=[e for e, _ in outcomes[1:]],
                real_bound=outcomes[0][1],
                random_bounds=[b for _, b in outcomes[1:]],
                statistic=statistic,
            )
        )
    return results
