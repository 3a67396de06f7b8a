"""The report's figures, drawn on `matplotlib.figure.Figure` objects (Agg rendering, no
pyplot, no display, no global backend change), and saving them.

Paper-style figures (SPEC §9): normalised bound against proof length (`plot_bound_vs_flops`),
unexplained dimensionality against proof length (`plot_dims_vs_flops`), normalised bound
against EQKE's σ₁/σ₂ (`sigma_ratio_points`, `linear_fit`, `plot_bound_vs_sigma_ratio`); one
seed's presentation figures: its path matrices (`load_path_matrices`, `plot_path_matrices`)
and the structureless-noise experiment (`plot_noise`); the asymptotic benchmark's bound and
FLOPs against d_vocab (`plot_asymptotic`, from benchmarks/asymptotic.py's JSON).
`save_figure` writes a figure in several formats, each file atomically and without creation
dates.
"""

from __future__ import annotations

import itertools
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from compact_proofs.analysis.noise import NoiseResult
from compact_proofs.errors import CompactProofsError
from compact_proofs.model.file_format import atomic_write, load_model
from compact_proofs.pipeline.report.tables import (
    NEW_GROUPS,
    group_order,
    group_summary,
    pareto_frontier,
)
from compact_proofs.proofs.paths import path_matrices

PAPER_FORMATS = ("png", "svg", "pdf")  # bound/dims vs FLOPs, sigma ratio
SEED_FORMATS = ("png", "svg")  # per-seed presentation figures
EXCLUDED_SIGMA_ERROR = "exact_EQKE+max_diff_exact"  # exact EQKE: no low-rank structure used


# -- helpers --------------------------------------------------------------------------------


def _colors(n: int, palette: str) -> list[Any]:
    """`n` colours from the matplotlib colormap `palette`, cycling when it has fewer."""
    cmap = matplotlib.colormaps[palette]
    return [cmap(i % cmap.N) for i in range(n)]


def _log2_axis(ax: Axes, axis: str) -> None:
    """Make the x or y axis of `ax` a log2 axis."""
    if axis == "x":
        ax.set_xscale("log", base=2)
    else:
        ax.set_yscale("log", base=2)


def _legend_below(fig: Figure, ax: Axes, ncols: int, markerscale: float = 1.0) -> None:
    """The axes' legend below the plot, outside it (constrained layout makes room)."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="outside lower center",
        ncols=ncols,
        fontsize=8,
        frameon=False,
        markerscale=markerscale,
    )


# -- paper figures --------------------------------------------------------------------------

# marker and colour of each strategy new here (each its own legend entry, also where
# strategies share a group); other new strategies cycle through NEW_STYLE_CYCLE
NEW_STYLES: dict[str, tuple[str, str]] = {
    "separable": ("*", "black"),
    "separable-lite": ("D", "#6a3d9a"),
    "separable-subcubic": ("P", "#e31a1c"),
}
NEW_STYLE_CYCLE = (("P", "#b15928"), ("X", "0.35"), ("v", "#1f78b4"))
ZOOM_EXCLUDED_GROUP = "brute-force"  # the zoomed panel shows every other group


@dataclass(frozen=True)
class Series:
    """One legend entry of a scatter plot: a paper group, or one new strategy."""

    name: str  # legend name
    column: str  # "group" or "strategy"
    value: str
    new: bool
    marker: str
    color: Any


def plot_series(df: pd.DataFrame) -> list[Series]:
    """The scatter series of `df`: each paper group (circles, Paired colours, the paper's
    order), then each new strategy on its own (its own marker and colour, NEW_STYLES)."""
    groups = group_order(df)
    colors = _colors(len(groups), "Paired")
    series: list[Series] = []
    extra = itertools.cycle(NEW_STYLE_CYCLE)
    for group, color in zip(groups, colors, strict=True):
        if group not in NEW_GROUPS:
            series.append(Series(group, "group", group, False, "o", color))
            continue
        for strategy in df[df["group"] == group]["strategy"].unique():
            marker, color = NEW_STYLES.get(strategy) or next(extra)
            series.append(Series(str(strategy), "strategy", strategy, True, marker, color))
    return series


def _zoom_range(data: pd.DataFrame) -> tuple[float, float] | None:
    """FLOPs range of the zoomed panel: whole powers of two around every row but brute force's
    (None: no such row)."""
    flops = data[data["group"] != ZOOM_EXCLUDED_GROUP]["flops"].to_numpy(dtype=float)
    if not len(flops):
        return None
    lo, hi = np.log2(flops.min()), np.log2(flops.max())
    return 2.0 ** np.floor(lo - 0.5), 2.0 ** np.ceil(hi + 0.25)


def _scatter(ax: Axes, df: pd.DataFrame, data: pd.DataFrame, frontier_only: bool) -> None:
    """Every series of `df` drawn from the rows of `data` on `ax`, labelled with the series'
    mean ± std over seeds of its best normalised bound (in all of `df`)."""
    for sr in plot_series(df):
        part = data[data[sr.column] == sr.value]
        if part.empty:
            continue
        size = (70 if sr.new else 24) if frontier_only else (30 if sr.new else 6)
        ax.scatter(
            part["flops"],
            part["normalized_bound"],
            s=size * (0.6 if sr.marker == "D" else 1.0),
            alpha=0.85 if frontier_only else 0.6,
            color=sr.color,
            marker=sr.marker,
            edgecolors="none",
            label=f"{sr.name}{' (new)' if sr.new else ''} "
            f"(rel acc: {group_summary(df, sr.value, sr.column)})",
        )


def plot_bound_vs_flops(df: pd.DataFrame, frontier_only: bool) -> Figure:
    """Normalised bound (bound / exact accuracy) against proof length (FLOPs of verification,
    log2 axis), coloured by group, each new strategy with its own marker (SPEC §9.3). With
    `frontier_only`, only the rows on their seed's Pareto frontier of the paper's strategies,
    beside every row of the new groups (which would otherwise hide the paper points they
    dominate); otherwise every row, with small markers. Legend entries read "series (rel acc:
    mean ± std)" over the per-seed best normalised bound of the series. A second panel zooms
    on the FLOPs range of every row but brute force's (`_zoom_range`, shaded on the first)."""
    data = df
    if frontier_only:
        new = df["group"].isin(NEW_GROUPS).to_numpy()
        on = new.copy()
        on[~new] = pareto_frontier(df[~new])
        data = df[on]
    zoom = _zoom_range(data)
    fig = Figure(figsize=(14, 7.5) if zoom else (9, 7.5), layout="constrained")
    axes = fig.subplots(1, 2 if zoom else 1, sharey=True, squeeze=False)[0]
    for ax in axes:
        _scatter(ax, df, data, frontier_only)
        _log2_axis(ax, "x")
        ax.set_xlabel("proof length: FLOPs of verification (log2 scale)")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("normalised accuracy bound (bound / exact accuracy)")
    axes[0].set_ylim(min(0.0, float(data["normalized_bound"].min())) - 0.02, 1.05)
    axes[0].set_title("all proofs")
    if zoom:
        axes[0].axvspan(*zoom, color="0.5", alpha=0.12, linewidth=0)
        axes[1].set_xlim(*zoom)
        axes[1].set_title(
            f"zoom: $2^{{{np.log2(zoom[0]):.0f}}}$–$2^{{{np.log2(zoom[1]):.0f}}}$ FLOPs "
            f"(shaded on the left; all but {ZOOM_EXCLUDED_GROUP})"
        )
    what = (
        "paper: per-seed Pareto frontier; new: all" if frontier_only else "all strategies and seeds"
    )
    fig.suptitle(f"Normalised bound vs proof length ({what}, {df['seed'].nunique()} seeds)")
    _legend_below(fig, axes[0], ncols=2 if zoom else 1, markerscale=1.0 if frontier_only else 2.5)
    return fig


def plot_dims_vs_flops(df: pd.DataFrame) -> Figure:
    """Unexplained dimensionality of each proof (SPEC §8, log2 axis) against its length
    (FLOPs of verification, log2 axis), every row, coloured by group, each new strategy with
    its own marker (the paper's "EffectiveDimensionVsFLOP")."""
    fig = Figure(figsize=(9, 6.5), layout="constrained")
    ax = fig.add_subplot()
    for sr in plot_series(df):
        part = df[df[sr.column] == sr.value]
        ax.scatter(
            part["flops"],
            part["unexplained_dims"],
            s=30 if sr.new else 14,
            alpha=0.7,
            color=sr.color,
            marker=sr.marker,
            edgecolors="none",
            label=f"{sr.name} (new)" if sr.new else sr.name,
        )
    _log2_axis(ax, "x")
    _log2_axis(ax, "y")
    ax.set_xlabel("proof length: FLOPs of verification (log2 scale)")
    ax.set_ylabel("unexplained dimensions (log2 scale)")
    ax.grid(True, alpha=0.3)
    ax.set_title(f"Unexplained dimensionality vs proof length ({df['seed'].nunique()} seeds)")
    _legend_below(fig, ax, ncols=2)
    return fig


def sigma_ratio_points(df: pd.DataFrame) -> pd.DataFrame:
    """The points of `plot_bound_vs_sigma_ratio`: sub-cubic rows except exact-EQKE ones, with
    a finite σ₁/σ₂, keeping per (seed, attention-error handling) the best normalised bound."""
    handling = df["attention_error_handling"]
    sub = df[
        handling.notna()
        & (handling.astype(str) != "")
        & (handling != EXCLUDED_SIGMA_ERROR)
        & np.isfinite(df["eqke_sigma_ratio"].to_numpy(dtype=float))
    ]
    if sub.empty:
        return sub
    best = sub.loc[sub.groupby(["seed", "attention_error_handling"])["normalized_bound"].idxmax()]
    return best.reset_index(drop=True)


def linear_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float] | None:
    """Ordinary least squares y ≈ intercept + slope·x: (slope, intercept, R²), or None when x
    has fewer than two distinct values. R² is nan when y is constant."""
    if len(np.unique(x)) < 2:
        return None
    slope, intercept = np.polyfit(x, y, 1)
    residual = float(np.sum((y - (intercept + slope * x)) ** 2))
    total = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - residual / total if total > 0 else float("nan")
    return float(slope), float(intercept), r2


MIN_FIT_POINTS = 10  # a handling gets a fit line only with at least this many seeds,
MIN_FIT_DISTINCT_X = 5  # at least this many distinct σ₁/σ₂ values,
MIN_FIT_RELATIVE_SPREAD = 0.1  # and a σ₁/σ₂ range of at least this fraction of the median


def fit_refusal(x: np.ndarray) -> str | None:
    """Why the σ₁/σ₂ values `x` of one handling are too few or too clustered for a
    least-squares line (None: fit it): fewer than MIN_FIT_POINTS points or MIN_FIT_DISTINCT_X
    distinct values, or a range below MIN_FIT_RELATIVE_SPREAD of the median."""
    if len(x) < MIN_FIT_POINTS:
        return f"no fit: < {MIN_FIT_POINTS} points"
    if len(np.unique(x)) < MIN_FIT_DISTINCT_X:
        return f"no fit: < {MIN_FIT_DISTINCT_X} distinct σ₁/σ₂"
    if np.ptp(x) < MIN_FIT_RELATIVE_SPREAD * abs(float(np.median(x))):
        return "no fit: σ₁/σ₂ range too narrow"
    return None


def plot_bound_vs_sigma_ratio(points: pd.DataFrame) -> tuple[Figure, list[dict[str, Any]]]:
    """Normalised bound against EQKE's σ₁/σ₂ (SPEC §9.4): per seed and attention-error
    handling the best sub-cubic bound (exact-EQKE handling excluded), coloured by handling
    (ordered by its best bound), with an ordinary least-squares line and its R² in the legend
    for each handling with enough, spread-out points (`fit_refusal`; the others say why not).
    Also returns the fits (handling, n, slope, intercept, r2)."""
    fig = Figure(figsize=(9, 6.5), layout="constrained")
    ax = fig.add_subplot()
    order = (
        points.groupby("attention_error_handling")["normalized_bound"]
        .max()
        .sort_values(ascending=False)
        .index
    )
    fits: list[dict[str, Any]] = []
    for handling, color in zip(order, _colors(len(order), "tab10"), strict=True):
        part = points[points["attention_error_handling"] == handling]
        x = part["eqke_sigma_ratio"].to_numpy(dtype=float)
        y = part["normalized_bound"].to_numpy(dtype=float)
        refusal = fit_refusal(x)
        fit = None if refusal else linear_fit(x, y)
        if fit is None:
            label = f"{handling} (n={len(x)}, {refusal or 'no fit'})"
        else:
            slope, intercept, r2 = fit
            label = f"{handling} (R² = {r2:.2f}, n={len(x)})"
            xs = np.linspace(x.min(), x.max(), 2)
            ax.plot(xs, intercept + slope * xs, color=color, linewidth=1.2)
            fits.append(
                {"handling": handling, "n": len(x), "slope": slope, "intercept": intercept,
                 "r2": r2}
            )  # fmt: skip
        ax.scatter(x, y, s=18, alpha=0.8, color=color, edgecolors="none", label=label)
    ax.set_xlabel("EQKE singular-value ratio σ₁/σ₂")
    ax.set_ylabel("normalised accuracy bound (best per seed and handling)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, alpha=0.3)
    ax.set_title("Sub-cubic proofs: normalised bound vs how rank-one EQKE is (σ₁/σ₂)")
    _legend_below(fig, ax, ncols=2)
    return fig, fits


# -- one seed's figures ---------------------------------------------------------------------


def plot_noise(results: Sequence[NoiseResult], seed: int) -> Figure:
    """The structureless-noise experiment (compact_proofs.analysis.noise) for one model: per
    residual (route-A error handlings, separable-subcubic's two), the random residuals'
    values (grey dots) and the real one (red diamond): the residual's statistic relative to
    the random draws' mean (left; 1 = like random noise) and the bound the proof would reach
    (right; float64 counterfactuals, not proofs)."""
    fig = Figure(figsize=(13, 5.4), layout="constrained")
    panels = (
        ("residual statistic / mean over random residuals", "real_error", "random_errors",
         "error_z"),
        ("bound, float64 counterfactual: NOT a proof (route A: fresh gap search)",
         "real_bound", "random_bounds", "bound_z"),
    )  # fmt: skip
    rng = np.random.default_rng(0)
    for ax, (ylabel, real, randoms, z) in zip(fig.subplots(1, 2), panels, strict=True):
        for i, r in enumerate(results):
            draws = np.asarray(getattr(r, randoms))
            unit = float(np.mean(draws)) if real == "real_error" and np.mean(draws) else 1.0
            x = i + rng.uniform(-0.12, 0.12, len(draws))
            ax.scatter(x, draws / unit, s=14, color="0.55",
                       label="random residuals" if i == 0 else None)  # fmt: skip
            ax.scatter([i], [getattr(r, real) / unit], s=70, marker="D", color="tab:red",
                       zorder=3, label="real residual" if i == 0 else None)  # fmt: skip
            ax.annotate(f"z = {getattr(r, z):+.1f}", (i, getattr(r, real) / unit),
                        xytext=(8, 6), textcoords="offset points", fontsize=8)  # fmt: skip
        labels = [textwrap.fill(r.strategy.split("--")[-1], 16) for r in results]
        ax.set_xticks(range(len(results)), labels, fontsize=7)
        ax.set_xlim(-0.5, len(results) - 0.2)
        ax.set_ylabel(ylabel)
        ax.grid(True, axis="y", alpha=0.3)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    fig.suptitle(
        f"Is the unexplained residual structureless noise? Seed {seed}: real vs "
        f"{len(results[0].random_errors)} Gaussian residuals with its entry mean and std"
    )
    return fig


def plot_path_matrices(matrices: dict[str, np.ndarray], seed: int) -> Figure:
    """Heatmaps of one model's path matrices (SPEC §3, §9.7) — EQKE [query token × key
    token], EQKP [query token × key position], EVOU [attended token × output token], PVOU
    [position × output token], EUPU [query token × output token], each on a symmetric
    diverging colour scale — and the singular values of EQKE (log y axis)."""
    axes_labels = {
        "EQKE": ("key token", "query token"),
        "EQKP": ("key position", "query token"),
        "EVOU": ("output logit (token)", "attended token"),
        "PVOU": ("output logit (token)", "key position"),
        "EUPU": ("output logit (token)", "query token"),
    }
    fig = Figure(figsize=(15, 9))  # fixed margins: constrained layout is slow with colorbars
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.07, top=0.9, wspace=0.3, hspace=0.35)
    axes = fig.subplots(2, 3)
    for ax, (name, (xlabel, ylabel)) in zip(axes.flat, axes_labels.items(), strict=False):
        m = matrices[name]
        limit = float(np.abs(m).max()) or 1.0
        image = ax.imshow(m, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
        fig.colorbar(image, ax=ax, shrink=0.85)
        ax.set_title(name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    ax = axes.flat[5]
    sigma = np.linalg.svd(matrices["EQKE"], compute_uv=False)
    index = np.arange(1, len(sigma) + 1)
    positive = sigma > 0
    ax.plot(index[positive], sigma[positive], marker="o", markersize=3, linewidth=1)
    ax.set_yscale("log")
    ax.set_xlabel("index i")
    ax.set_ylabel("singular value σᵢ of EQKE (log scale)")
    ratio = sigma[0] / sigma[1] if len(sigma) > 1 and sigma[1] > 0 else float("inf")
    ax.set_title(f"EQKE spectrum (σ₁/σ₂ = {ratio:.1f})")
    ax.grid(True, alpha=0.3)
    fig.suptitle(f"Path matrices of the seed-{seed} model")
    return fig


def load_path_matrices(model_file: Path) -> tuple[dict[str, np.ndarray] | None, str | None]:
    """The path matrices of the model in `model_file` as float64 arrays, or (None, reason)
    when the file is missing or unreadable, or the model is not single-head."""
    if not model_file.is_file():
        return None, f"model file {model_file} not found"
    try:
        model = load_model(model_file).model
    except CompactProofsError as exc:
        return None, str(exc)
    if model.cfg.n_heads != 1:
        return None, f"the model has {model.cfg.n_heads} heads (path matrices need one head)"
    pm = path_matrices(model)
    return {n: getattr(pm, n).cpu().numpy() for n in ("EQKE", "EQKP", "EVOU", "PVOU", "EUPU")}, None


# -- saving ---------------------------------------------------------------------------------


@dataclass
class FigureEntry:
    """A written figure: its files (PNG first) and a caption for index.html."""

    stem: str
    title: str
    caption: str
    files: list[Path]


# keep outputs reproducible: no creation dates in SVG/PDF
_METADATA = {"svg": {"Date": None}, "pdf": {"CreationDate": None}, "png": {}}


def save_figure(fig: Figure, out_dir: Path, stem: str, formats: Sequence[str]) -> list[Path]:
    """Save `fig` as out_dir/stem.FORMAT for each format, each file atomically, cropped or
    grown to everything drawn plus a margin (so no label or legend touches the edge)."""
    fig.draw_without_rendering()  # lay out once (constrained layout), then freeze the layout
    fig.set_layout_engine("none")  # so that each format does not lay it out again
    paths = []
    for fmt in formats:
        path = out_dir / f"{stem}.{fmt}"

        def write(tmp: str, fmt: str = fmt) -> None:
            fig.savefig(
                tmp,
                format=fmt,
                dpi=130,
                metadata=_METADATA[fmt],
                bbox_inches="tight",  # nothing drawn (labels, legends) crosses the edge
                pad_inches=0.15,
            )

        atomic_write(path, write)
        paths.append(path)
    return paths


# -- the asymptotic benchmark ----------------------------------------------------------------


def loglog_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of log2 y against log2 x (nan with fewer than two points)."""
    if len(xs) < 2:
        return float("nan")
    return float(np.polyfit(np.log2(xs), np.log2(ys), 1)[0])


def asymptotic_series(records: dict[str, Any]) -> dict[str, dict[str, list[float]]]:
    """Per strategy label: d_vocab, mean bound and mean FLOPs over its seeds, by d_vocab."""
    df = pd.DataFrame(records["rows"])
    means = df.groupby(["label", "d_vocab"], sort=False)[["bound", "flops"]].mean()
    out: dict[str, dict[str, list[float]]] = {}
    for label in df["label"].unique():
        part = means.loc[label].sort_index()
        out[label] = {
            "v": [float(v) for v in part.index],
            "bound": part["bound"].tolist(),
            "flops": part["flops"].tolist(),
        }
    return out


def plot_asymptotic(records: dict[str, Any]) -> Figure:
    """Two log-log panels against d_vocab: proof length (FLOPs, with each strategy's fitted
    slope; brute force's count beside them) and the certified bound (mean over seeds; the
    sampled accuracy estimate for reference)."""
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    ax_f, ax_b = fig.subplots(1, 2)
    bf = {float(v): f for v, f in records["brute_force_flops"].items()}
    vs = sorted(bf)
    slope = loglog_slope(vs, [bf[v] for v in vs])
    ax_f.plot(vs, [bf[v] for v in vs], "k:", marker="x", label=f"brute force (slope {slope:.2f})")
    for label, series in asymptotic_series(records).items():
        slope = loglog_slope(series["v"], series["flops"])
        line = ax_f.plot(series["v"], series["flops"], "o-", label=f"{label} (slope {slope:.2f})")
        ax_b.plot(series["v"], series["bound"], "o-", color=line[0].get_color(), label=label)
    est = {float(v): e for v, e in records["estimate"].items()}
    ax_b.plot(sorted(est), [est[v] for v in sorted(est)], "k:", marker="x",
              label="accuracy (sampled estimate)")  # fmt: skip
    for ax in (ax_f, ax_b):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("d_vocab (log scale)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    ax_f.set_yscale("log", base=2)
    ax_f.set_ylabel("proof length, FLOPs (log2 scale)")
    ax_f.set_title(f"Proof length vs vocabulary (K = {records['n_ctx']})")
    ax_b.set_ylabel("certified accuracy bound (mean over seeds)")
    ax_b.set_title("Bound vs vocabulary")
    return fig
