"""The report of a sweep: the paper's Table 1, its figures and a browsable index.html.

`build_report(results_dir, out_dir)` reads `results_dir/results.csv` (the results store of
`compact_proofs.pipeline.results`: one row per (seed, strategy)) and writes into `out_dir`:

* `table1.md`, `table1.tex`, `table1.csv` — Table 1 (SPEC §6.11, `table1` below);
* `bound_vs_flops_all.*`, `bound_vs_flops_frontier.*` — normalised bound against proof length
  (SPEC §9.2–§9.3, `plot_bound_vs_flops`);
* `dims_vs_flops.*` — unexplained dimensionality against proof length (SPEC §9.3,
  `plot_dims_vs_flops`);
* `bound_vs_sigma_ratio.*` — normalised bound against EQKE's σ₁/σ₂ (SPEC §9.4,
  `plot_bound_vs_sigma_ratio`);
* `seed-S-path-matrices.*` — heatmaps of one seed's path matrices and EQKE's singular values
  (SPEC §9.7, `plot_path_matrices`);
* `index.html` — the table and every figure, with links to all the files above.

Figures are PNG and SVG; the paper-style ones (bound/dims vs FLOPs, σ ratio) also PDF. Every
file is written through a temporary file and a rename, so a failure never leaves a partial
file; index.html is written last and references only files written by the same run.
Figures are drawn on `matplotlib.figure.Figure` objects (Agg rendering, no pyplot, no
display, no global backend change).
"""

from __future__ import annotations

import datetime as dt
import html
import io
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from tqdm.auto import tqdm

from compact_proofs.analysis import loss_breakdown as loss
from compact_proofs.analysis import noise
from compact_proofs.analysis.noise import NoiseResult
from compact_proofs.errors import CompactProofsError
from compact_proofs.model.file_format import atomic_write, load_model
from compact_proofs.model.seeds import SELECTED_SEED
from compact_proofs.pipeline.sweep import ROWS
from compact_proofs.proofs.paths import path_matrices
from compact_proofs.proofs.registry import NEW_STRATEGIES
from compact_proofs.proofs.subcubic.config import TABLE1_ROW

# -- Table 1 definition ---------------------------------------------------------------------

TABLE1_ORDER: tuple[str, ...] = (
    "Brute force",
    "Cubic",
    "Sub-cubic",
    "without mean+diff",
    "Low-rank QK",
    "SVD only",
    "Low-rank EU",
    "Low-rank QK & EU",
    "Quadratic QK",
    "Quadratic QK & EU",
    "Separable lite (new)",
    "Separable (new)",
)
# rows defined by a strategy id rather than by the `table1_rows` column (sweep.ROWS inverted)
STRATEGY_ROWS = {row: strategy_id for strategy_id, row in ROWS.items()}


@dataclass(frozen=True)
class PaperValue:
    """The paper's Table 1 value (151 seeds): mean ± std of the normalised bound, or, for
    brute force (normalised bound 1 by definition), of the bound itself."""

    mean: float
    std: float
    of_bound: bool = False


PAPER_TABLE1: dict[str, PaperValue] = {
    "Brute force": PaperValue(0.9992, 0.0015, of_bound=True),
    "Cubic": PaperValue(0.9539, 0.0080),
    "Sub-cubic": PaperValue(0.821, 0.013),
    "Low-rank QK": PaperValue(0.795, 0.014),
    "Low-rank EU": PaperValue(0.653, 0.060),
    "Low-rank QK & EU": PaperValue(0.628, 0.060),
    "Quadratic QK": PaperValue(0.390, 0.032),
    "Quadratic QK & EU": PaperValue(0.286, 0.036),
}

# plot groups in the paper's order: brute force, cubic, the six sub-cubic groups by Table 1 row;
# then the groups of strategies new here (not in the paper), drawn with star markers
NEW_GROUPS: tuple[str, ...] = tuple(dict.fromkeys(s.group for s in NEW_STRATEGIES.values()))
GROUP_ORDER: tuple[str, ...] = ("brute-force", "cubic", *TABLE1_ROW, *NEW_GROUPS)
EXCLUDED_SIGMA_ERROR = "exact_EQKE+max_diff_exact"  # exact EQKE: no low-rank structure used

REQUIRED_COLUMNS = (
    "seed",
    "strategy",
    "group",
    "table1_rows",
    "complexity",
    "bound",
    "normalized_bound",
    "flops",
    "unexplained_dims",
)
NUMERIC_COLUMNS = ("seed", "bound", "normalized_bound", "flops", "unexplained_dims")
PAPER_FORMATS = ("png", "svg", "pdf")  # bound/dims vs FLOPs, sigma ratio
SEED_FORMATS = ("png", "svg")  # per-seed presentation figures


# -- reading --------------------------------------------------------------------------------


def load_results(results_dir: Path) -> pd.DataFrame:
    """`results_dir/results.csv` as a data frame, validated; CompactProofsError otherwise."""
    path = Path(results_dir) / "results.csv"
    if not path.is_file():
        raise CompactProofsError(
            f"no results to report: {path} not found (run the sweep into {results_dir} first)"
        )
    try:
        df = pd.read_csv(path, dtype={"table1_rows": str, "strategy": str, "group": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, OSError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CompactProofsError(f"{path} is not a readable results table ({detail})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise CompactProofsError(f"{path} lacks column(s) {', '.join(missing)}")
    if df.empty:
        raise CompactProofsError(f"{path} has no rows (no seed has finished yet)")
    for column in NUMERIC_COLUMNS:
        values = pd.to_numeric(df[column], errors="coerce")
        if values.isna().any():
            raise CompactProofsError(f"{path}: column {column} has missing or non-numeric values")
        df[column] = values
    df["seed"] = df["seed"].astype(int)
    duplicated = df.duplicated(["seed", "strategy"])
    if duplicated.any():
        first = df[duplicated].iloc[0]
        raise CompactProofsError(
            f"{path} has {int(duplicated.sum())} duplicate (seed, strategy) row(s), e.g. seed "
            f"{first['seed']} {first['strategy']}; rebuild it from the per-seed rows"
        )
    df["table1_rows"] = df["table1_rows"].fillna("")
    # sweeps recorded before the column existed verified in float64
    rigorous = df["rigorous"] if "rigorous" in df.columns else pd.Series(False, index=df.index)
    df["rigorous"] = rigorous.map(lambda x: str(x) == "True")
    for column in ("attention_error_handling", "model_path"):
        if column not in df.columns:
            df[column] = np.nan
    if "eqke_sigma_ratio" in df.columns:
        df["eqke_sigma_ratio"] = pd.to_numeric(df["eqke_sigma_ratio"], errors="coerce")
    else:
        df["eqke_sigma_ratio"] = np.nan
    return df


# -- statistics -----------------------------------------------------------------------------


def pm_round(mean: float, std: float | None) -> str:
    """'mean ± std' with std rounded to 2 significant digits and mean to the same decimals
    (the paper's `pm_round`, SPEC §9.8)."""
    if mean is None or not math.isfinite(mean):
        return "—"
    if std is None or not math.isfinite(std):
        return f"{mean:.4f}"
    if std == 0:
        return f"{mean:.4f} ± 0"
    decimals = max(0, 1 - math.floor(math.log10(abs(std))))
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def row_mask(df: pd.DataFrame, row: str) -> pd.Series:
    """The rows of `df` whose strategy belongs to Table 1 row `row` (SPEC §6.11)."""
    if row in STRATEGY_ROWS:
        return df["strategy"] == STRATEGY_ROWS[row]
    return df["table1_rows"].map(lambda s: row in str(s).split(";"))


def best_per_seed(df: pd.DataFrame) -> pd.DataFrame:
    """One row per seed: the highest bound (ties: fewer FLOPs, then the first row)."""
    ordered = df.sort_values(
        ["seed", "bound", "flops"], ascending=[True, False, True], kind="mergesort"
    )
    return ordered.drop_duplicates("seed", keep="first")


def _mean_std(values: pd.Series) -> tuple[float | None, float | None]:
    if values.empty:
        return None, None
    return float(values.mean()), float(values.std(ddof=0))


def table1(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Table 1 of the paper (SPEC §6.11) as one dict per row, in the paper's order.

    For each row and seed the strategy with the highest bound among the row's set is taken;
    the row reports, over seeds, mean ± population std of the normalised bound and of the
    bound, mean FLOPs, mean log2 FLOPs, mean unexplained dimensions, the complexity label of the
    chosen strategies (the most frequent one; all in `complexities`), the number of seeds, the
    most frequently chosen strategy, and the paper's reference value (None where it has none).
    """
    table: list[dict[str, Any]] = []
    for row in TABLE1_ORDER:
        best = best_per_seed(df[row_mask(df, row)])
        nb_mean, nb_std = _mean_std(best["normalized_bound"])
        b_mean, b_std = _mean_std(best["bound"])
        flops = best["flops"].astype(float)
        complexities = best["complexity"].value_counts()
        paper = PAPER_TABLE1.get(row)
        table.append(
            {
                "row": row,
                "n_seeds": len(best),
                "normalized_bound_mean": nb_mean,
                "normalized_bound_std": nb_std,
                "bound_mean": b_mean,
                "bound_std": b_std,
                "flops_mean": float(flops.mean()) if len(best) else None,
                "log2_flops_mean": float(np.log2(flops).mean()) if len(best) else None,
                "unexplained_dims_mean": (
                    float(best["unexplained_dims"].mean()) if len(best) else None
                ),
                "complexity": str(complexities.index[0]) if len(best) else None,
                "complexities": ";".join(map(str, complexities.index)),
                "arithmetic": _arithmetic(best["rigorous"]),
                "best_strategy": (
                    str(best["strategy"].value_counts().index[0]) if len(best) else None
                ),
                "paper_normalized_bound_mean": (
                    None if paper is None else 1.0 if paper.of_bound else paper.mean
                ),
                "paper_normalized_bound_std": (
                    None if paper is None or paper.of_bound else paper.std
                ),
                "paper_bound_mean": paper.mean if paper and paper.of_bound else None,
                "paper_bound_std": paper.std if paper and paper.of_bound else None,
            }
        )
    return table


def _arithmetic(rigorous: pd.Series) -> str | None:
    """What the numbers of a row are: 'rigorous', 'float64' or 'mixed' (None: no rows)."""
    if rigorous.empty:
        return None
    if rigorous.all():
        return "rigorous"
    return "float64" if not rigorous.any() else "mixed"


def pareto_frontier(df: pd.DataFrame) -> np.ndarray:
    """Boolean mask of the rows on their seed's Pareto frontier (SPEC §9.2): a row is on it
    iff no other row of the same seed has both strictly higher normalised bound and strictly
    fewer FLOPs."""
    on = np.zeros(len(df), dtype=bool)
    bound = df["normalized_bound"].to_numpy(dtype=float)
    flops = df["flops"].to_numpy(dtype=float)
    for idx in df.groupby("seed").indices.values():
        b, f = bound[idx], flops[idx]
        dominated = ((b[None, :] > b[:, None]) & (f[None, :] < f[:, None])).any(axis=1)
        on[idx] = ~dominated
    return on


def group_order(df: pd.DataFrame) -> list[str]:
    """The groups present in `df`: the paper's order first, then any others sorted."""
    present = set(df["group"].dropna())
    return [g for g in GROUP_ORDER if g in present] + sorted(present - set(GROUP_ORDER))


def frontier_movement(df: pd.DataFrame) -> list[dict[str, Any]]:
    """How far each new strategy (group in NEW_GROUPS) moves the paper's frontier, per seed
    against that seed's paper strategies (all other groups), then averaged over seeds:

    * bound at equal FLOPs: the best paper normalised bound with at most the new strategy's
      FLOPs (0 where no paper strategy is that cheap) vs the new strategy's;
    * FLOPs at equal bound: the fewest FLOPs of a paper strategy whose normalised bound is at
      least the new strategy's (brute force always qualifies) vs the new strategy's FLOPs,
      as log2 means and the geometric-mean ratio.
    """
    paper = df[~df["group"].isin(NEW_GROUPS)]
    out: list[dict[str, Any]] = []
    for strategy in df[df["group"].isin(NEW_GROUPS)]["strategy"].unique():
        rows = []
        for _, new in df[df["strategy"] == strategy].iterrows():
            p = paper[paper["seed"] == new["seed"]]
            if p.empty:
                continue
            cheaper = p[p["flops"] <= new["flops"]]
            as_good = p[p["normalized_bound"] >= new["normalized_bound"]]
            best = cheaper.loc[cheaper["normalized_bound"].idxmax()] if len(cheaper) else None
            cheapest = as_good.loc[as_good["flops"].idxmin()] if len(as_good) else None
            rows.append(
                {
                    "bound": new["normalized_bound"],
                    "log2_flops": math.log2(new["flops"]),
                    "paper_bound": 0.0 if best is None else best["normalized_bound"],
                    "paper_strategy": "—" if best is None else best["strategy"],
                    "paper_log2_flops_at_bound": (
                        math.nan if cheapest is None else math.log2(cheapest["flops"])
                    ),
                    "paper_strategy_at_bound": "—" if cheapest is None else cheapest["strategy"],
                }
            )
        if not rows:
            continue
        r = pd.DataFrame(rows)
        gain = r["paper_log2_flops_at_bound"] - r["log2_flops"]
        out.append(
            {
                "strategy": strategy,
                "n_seeds": len(r),
                "normalized_bound_mean": float(r["bound"].mean()),
                "normalized_bound_std": float(r["bound"].std(ddof=0)),
                "log2_flops_mean": float(r["log2_flops"].mean()),
                "paper_bound_at_flops_mean": float(r["paper_bound"].mean()),
                "paper_strategy_at_flops": str(r["paper_strategy"].value_counts().index[0]),
                "bound_gain_mean": float((r["bound"] - r["paper_bound"]).mean()),
                "paper_log2_flops_at_bound_mean": float(r["paper_log2_flops_at_bound"].mean()),
                "paper_strategy_at_bound": str(
                    r["paper_strategy_at_bound"].value_counts().index[0]
                ),
                "flops_ratio_geomean": float(2 ** gain.mean()),
            }
        )
    return out


FRONTIER_HEADERS = (
    "New strategy",
    "Normalised bound",
    "log2 FLOPs",
    "Paper's best at ≤ these FLOPs",
    "Bound gain",
    "Paper's log2 FLOPs for ≥ this bound",
    "FLOPs saved (×)",
    "Seeds",
)


def _frontier_cells(row: dict[str, Any]) -> list[str]:
    return [
        row["strategy"],
        pm_round(row["normalized_bound_mean"], row["normalized_bound_std"]),
        f"{row['log2_flops_mean']:.2f}",
        f"{row['paper_bound_at_flops_mean']:.4f} ({row['paper_strategy_at_flops']})",
        f"{row['bound_gain_mean']:+.4f}",
        f"{row['paper_log2_flops_at_bound_mean']:.2f} ({row['paper_strategy_at_bound']})",
        f"{row['flops_ratio_geomean']:.3g}",
        str(row["n_seeds"]),
    ]


def frontier_markdown(rows: list[dict[str, Any]]) -> str:
    """The frontier-movement table as Markdown (per-seed comparisons averaged over seeds;
    the named paper strategies are the most frequent per-seed choices)."""
    lines = [
        "| " + " | ".join(FRONTIER_HEADERS) + " |",
        "|" + "|".join(["---"] + ["---:"] * 7) + "|",
    ]
    lines += ["| " + " | ".join(_frontier_cells(r)) + " |" for r in rows]
    return (
        "Frontier movement: each new strategy against the paper's strategies of the same seed "
        "(mean over seeds; FLOPs saved: geometric mean of the ratio).\n\n" + "\n".join(lines) + "\n"
    )


def _html_table(headers: Sequence[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "\n".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return (
        f'<table class="t1">\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>'
    )


LOSS_HEADERS = ("", "inputs", "fraction of all inputs", "share of lost")


def _loss_cells(lb: loss.LossBreakdown) -> list[list[str]]:
    """Display rows of a loss breakdown: certified, each cause, misclassified."""
    lost = lb.lost or 1
    rows = [["certified", f"{lb.certified:,}", f"{lb.certified / lb.total:.4f}", ""]]
    rows += [
        [f"lost: {r.cause}", f"{r.inputs:,}", f"{r.fraction:.4f}", f"{r.inputs / lost:.1%}"]
        for r in lb.rows
    ]
    rows.append(
        ["misclassified", f"{lb.misclassified:,}", f"{lb.misclassified / lb.total:.4f}", ""]
    )
    return rows


def group_summary(df: pd.DataFrame, group: str) -> str:
    """'mean ± std' over seeds of the best normalised bound within `group`."""
    best = df[df["group"] == group].groupby("seed")["normalized_bound"].max()
    return pm_round(*_mean_std(best))


# -- table formatting -----------------------------------------------------------------------

TABLE_HEADERS = (
    "Proof",
    "Normalised bound",
    "Bound",
    "FLOPs (mean)",
    "log2 FLOPs",
    "Unexpl. dims",
    "Complexity",
    "Seeds",
    "Arithmetic",
    "Paper (normalised)",
)
ARITHMETIC_LEGEND = (
    "Arithmetic: rigorous = every bound is a proof in exact real arithmetic on the float32 "
    "weights; float64 = plain float64 (--fast, or a sweep recorded before rigorous "
    "verification was the default): exact only up to rounding, NOT a proof."
)


def _fmt_number(x: float | None, tex: bool = False, round_to_int: bool = False) -> str:
    """Plain below 10^6 (an integer, or one decimal for a non-integral mean unless
    `round_to_int`), else 4 significant digits in scientific notation."""
    if x is None or not math.isfinite(x):
        return "---" if tex else "—"
    if abs(x) >= 1e6:
        mantissa, exponent = f"{x:.3e}".split("e")
        return f"${mantissa}\\times 10^{{{int(exponent)}}}$" if tex else f"{x:.3e}"
    return f"{x:.0f}" if round_to_int or float(x).is_integer() else f"{x:.1f}"


def _paper_cell(row: dict[str, Any]) -> str:
    if row["paper_bound_mean"] is not None:
        return f"1 (bound {pm_round(row['paper_bound_mean'], row['paper_bound_std'])})"
    if row["paper_normalized_bound_mean"] is None:
        return "—"
    return pm_round(row["paper_normalized_bound_mean"], row["paper_normalized_bound_std"])


def _cells(row: dict[str, Any]) -> list[str]:
    """Display cells of one Table 1 row (plain text with ± and —)."""
    log2f = row["log2_flops_mean"]
    return [
        row["row"],
        pm_round(row["normalized_bound_mean"], row["normalized_bound_std"]),
        pm_round(row["bound_mean"], row["bound_std"]),
        _fmt_number(row["flops_mean"], round_to_int=True),
        "—" if log2f is None else f"{log2f:.2f}",
        _fmt_number(row["unexplained_dims_mean"]),
        row["complexity"] or "—",
        str(row["n_seeds"]),
        row["arithmetic"] or "—",
        _paper_cell(row),
    ]


def _tex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_")):
        text = text.replace(a, b)
    return text.replace("±", r"$\pm$").replace("—", "---")


def _tex_complexity(label: str | None) -> str:
    """'O(v^(k+1) k d)' -> '$O(v^{k+1} k d)$'."""
    if not label:
        return "---"
    return "$" + re.sub(r"\^\(([^()]*)\)", r"^{\1}", label) + "$"


def table1_markdown(table: list[dict[str, Any]]) -> str:
    """Table 1 as a Markdown table with a one-line caption."""
    lines = [
        "| " + " | ".join(TABLE_HEADERS) + " |",
        "|" + "|".join(["---"] + ["---:"] * 5 + ["---", "---:", "---", "---"]) + "|",
    ]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in table]
    return (
        "Table 1: per seed the best strategy of each row's set; mean ± std (population) over "
        "seeds. Paper: 151 seeds (Gross et al. 2024). "
        + ARITHMETIC_LEGEND
        + "\n\n"
        + "\n".join(lines)
        + "\n"
    )


def table1_latex(table: list[dict[str, Any]]) -> str:
    """Table 1 as a self-contained LaTeX tabular (no packages needed)."""
    headers = [_tex_escape(h).replace("log2", r"$\log_2$") for h in TABLE_HEADERS]
    lines = [
        "% Table 1 (compact-proofs report): per seed the best strategy of each row's set;",
        "% mean $\\pm$ std (population) over seeds.",
        "% " + ARITHMETIC_LEGEND,
        r"\begin{tabular}{lllrrrlrll}",
        r"\hline",
        " & ".join(headers) + r" \\",
        r"\hline",
    ]
    for row in table:
        cells = _cells(row)
        cells[3] = _fmt_number(row["flops_mean"], tex=True, round_to_int=True)
        cells[5] = _fmt_number(row["unexplained_dims_mean"], tex=True)
        cells[6] = _tex_complexity(row["complexity"])
        lines.append(
            " & ".join(c if i in (3, 5, 6) else _tex_escape(c) for i, c in enumerate(cells))
            + r" \\"
        )
    lines += [r"\hline", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def table1_csv(table: list[dict[str, Any]]) -> str:
    """Table 1 as CSV: every field of the row dicts, full precision, empty for None."""
    buffer = io.StringIO()
    pd.DataFrame(table).to_csv(buffer, index=False, lineterminator="\n")
    return buffer.getvalue()


def table1_html(table: list[dict[str, Any]]) -> str:
    """Table 1 as an HTML table (the Markdown table's cells, escaped)."""
    return _html_table(TABLE_HEADERS, [_cells(row) for row in table])


# -- figures --------------------------------------------------------------------------------


def _colors(n: int, palette: str) -> list[Any]:
    cmap = matplotlib.colormaps[palette]
    return [cmap(i % cmap.N) for i in range(n)]


def _log2_axis(ax: Axes, axis: str) -> None:
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


def plot_bound_vs_flops(df: pd.DataFrame, frontier_only: bool) -> Figure:
    """Normalised bound (bound / exact accuracy) against proof length (FLOPs of verification,
    log2 axis), coloured by group (SPEC §9.3). With `frontier_only`, only the rows on their
    seed's Pareto frontier of the paper's strategies, beside every row of the new groups
    (which would otherwise hide the paper points they dominate); otherwise every row, with
    small markers. Legend entries read "group (rel acc: mean ± std)" over the per-seed best
    normalised bound of the group."""
    data = df
    if frontier_only:
        new = df["group"].isin(NEW_GROUPS).to_numpy()
        on = new.copy()
        on[~new] = pareto_frontier(df[~new])
        data = df[on]
    fig = Figure(figsize=(9, 7.5), layout="constrained")
    ax = fig.add_subplot()
    groups = group_order(df)
    for group, color in zip(groups, _colors(len(groups), "Paired"), strict=True):
        part = data[data["group"] == group]
        if part.empty:
            continue
        new = group in NEW_GROUPS
        ax.scatter(
            part["flops"],
            part["normalized_bound"],
            s=(70 if new else 24) if frontier_only else (30 if new else 6),
            alpha=0.85 if frontier_only else 0.6,
            color="black" if new else color,
            marker="*" if new else "o",
            edgecolors="none",
            label=f"{group}{' (new)' if new else ''} (rel acc: {group_summary(df, group)})",
        )
    _log2_axis(ax, "x")
    ax.set_xlabel("proof length: FLOPs of verification (log2 scale)")
    ax.set_ylabel("normalised accuracy bound (bound / exact accuracy)")
    ax.set_ylim(min(0.0, float(data["normalized_bound"].min())) - 0.02, 1.05)
    ax.grid(True, alpha=0.3)
    what = (
        "paper: per-seed Pareto frontier; new: all" if frontier_only else "all strategies and seeds"
    )
    ax.set_title(f"Normalised bound vs proof length ({what}, {df['seed'].nunique()} seeds)")
    _legend_below(fig, ax, ncols=1, markerscale=1.0 if frontier_only else 2.5)
    return fig


def plot_dims_vs_flops(df: pd.DataFrame) -> Figure:
    """Unexplained dimensionality of each proof (SPEC §8, log2 axis) against its length
    (FLOPs of verification, log2 axis), every row, coloured by group (the paper's
    "EffectiveDimensionVsFLOP")."""
    fig = Figure(figsize=(9, 6.5), layout="constrained")
    ax = fig.add_subplot()
    groups = group_order(df)
    for group, color in zip(groups, _colors(len(groups), "Paired"), strict=True):
        part = df[df["group"] == group]
        ax.scatter(
            part["flops"],
            part["unexplained_dims"],
            s=14,
            alpha=0.7,
            color=color,
            edgecolors="none",
            label=group,
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


def plot_bound_vs_sigma_ratio(points: pd.DataFrame) -> tuple[Figure, list[dict[str, Any]]]:
    """Normalised bound against EQKE's σ₁/σ₂ (SPEC §9.4): per seed and attention-error
    handling the best sub-cubic bound (exact-EQKE handling excluded), coloured by handling
    (ordered by its best bound), with an ordinary least-squares line per handling and its R²
    in the legend. Also returns the fits (handling, n, slope, intercept, r2)."""
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
        fit = linear_fit(x, y)
        if fit is None:
            label = f"{handling} (n={len(x)}, no fit)"
        else:
            slope, intercept, r2 = fit
            label = f"{handling} (R² = {r2:.2f}, n={len(x)})"
            xs = np.linspace(x.min(), x.max(), 2)
            ax.plot(xs, intercept + slope * xs, color=color, linewidth=1.2)
            fits.append(
                {
                    "handling": handling,
                    "n": len(x),
                    "slope": slope,
                    "intercept": intercept,
                    "r2": r2,
                }
            )
        ax.scatter(x, y, s=18, alpha=0.8, color=color, edgecolors="none", label=label)
    ax.set_xlabel("EQKE singular-value ratio σ₁/σ₂")
    ax.set_ylabel("normalised accuracy bound (best per seed and handling)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, alpha=0.3)
    ax.set_title("Sub-cubic proofs: normalised bound vs how rank-one EQKE is (σ₁/σ₂)")
    _legend_below(fig, ax, ncols=2)
    return fig, fits


def plot_noise(results: Sequence[NoiseResult], seed: int) -> Figure:
    """The structureless-noise experiment (compact_proofs.analysis.noise) for one model: per route-A
    error handling, the random residuals' values (grey dots) and the real one (red diamond),
    for the residual's error bound (left) and the certified normalised bound (right)."""
    fig = Figure(figsize=(11, 4.8), layout="constrained")
    panels = (
        ("error bound of the EQKE residual (mean over queries)", "real_error", "random_errors",
         "error_z"),
        ("certified bound (fresh gap search)", "real_bound", "random_bounds", "bound_z"),
    )  # fmt: skip
    rng = np.random.default_rng(0)
    for ax, (ylabel, real, randoms, z) in zip(fig.subplots(1, 2), panels, strict=True):
        for i, r in enumerate(results):
            draws = np.asarray(getattr(r, randoms))
            x = i + rng.uniform(-0.12, 0.12, len(draws))
            ax.scatter(x, draws, s=14, color="0.55", label="random residuals" if i == 0 else None)
            ax.scatter([i], [getattr(r, real)], s=70, marker="D", color="tab:red", zorder=3,
                       label="real residual" if i == 0 else None)  # fmt: skip
            ax.annotate(f"z = {getattr(r, z):+.1f}", (i, getattr(r, real)), xytext=(8, 6),
                        textcoords="offset points", fontsize=8)  # fmt: skip
        ax.set_xticks(range(len(results)), [r.strategy.split("--")[-1] for r in results])
        ax.set_xlim(-0.5, len(results) - 0.5)
        ax.set_ylabel(ylabel)
        ax.grid(True, axis="y", alpha=0.3)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    fig.suptitle(
        f"Is the EQKE residual structureless noise? Seed {seed}: real vs "
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


# -- writing --------------------------------------------------------------------------------


def _write_text(path: Path, text: str) -> Path:
    def write(tmp: str) -> None:
        Path(tmp).write_text(text, encoding="utf-8")

    atomic_write(path, write)
    return path


# keep outputs reproducible: no creation dates in SVG/PDF
_METADATA = {"svg": {"Date": None}, "pdf": {"CreationDate": None}, "png": {}}


def _save_figure(fig: Figure, out_dir: Path, stem: str, formats: Sequence[str]) -> list[Path]:
    """Save `fig` as out_dir/stem.FORMAT for each format, each file atomically."""
    fig.draw_without_rendering()  # lay out once (constrained layout), then freeze the layout
    fig.set_layout_engine("none")  # so that each format does not lay it out again
    paths = []
    for fmt in formats:
        path = out_dir / f"{stem}.{fmt}"

        def write(tmp: str, fmt: str = fmt) -> None:
            fig.savefig(tmp, format=fmt, dpi=130, metadata=_METADATA[fmt])

        atomic_write(path, write)
        paths.append(path)
    return paths


@dataclass
class FigureEntry:
    """A written figure: its files (PNG first) and a caption for index.html."""

    stem: str
    title: str
    caption: str
    files: list[Path]


def _choose_seed(df: pd.DataFrame, seed: int | None) -> int:
    seeds = sorted(df["seed"].unique())
    if seed is None:
        return SELECTED_SEED if SELECTED_SEED in seeds else int(seeds[0])
    if seed not in seeds:
        raise CompactProofsError(
            f"seed {seed} is not in the results (seeds: {_seed_list(seeds)}); pick one of them"
        )
    return seed


def _seed_list(seeds: Sequence[int]) -> str:
    seeds = [int(s) for s in seeds]
    return ", ".join(map(str, seeds)) if len(seeds) <= 12 else f"{len(seeds)} seeds"


def _mode_sentence(df: pd.DataFrame) -> str:
    """One sentence on what the report's numbers are."""
    n = int(df["rigorous"].sum())
    if n == len(df):
        return "Every number in this report is a proof (rigorous verification)."
    if n == 0:
        return "Verified in plain float64: the numbers in this report are NOT proofs."
    return f"Mixed: {n} of {len(df)} results are rigorous proofs, the rest float64 (not proofs)."


def _index_html(
    df: pd.DataFrame,
    table: list[dict[str, Any]],
    table_files: list[Path],
    figures: list[FigureEntry],
    notes: list[str],
    out_dir: Path,
    sections: Sequence[tuple[str, str]] = (),
) -> str:
    def link(path: Path) -> str:
        rel = path.relative_to(out_dir).as_posix()
        return f'<a href="{html.escape(rel)}">{html.escape(path.suffix.lstrip(".").upper())}</a>'

    seeds = sorted(df["seed"].unique())
    generated = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>compact-proofs report</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table.t1{border-collapse:collapse;font-size:0.9em}"
        "table.t1 td,table.t1 th{border:1px solid #ccc;padding:3px 8px}"
        "table.t1 td:nth-child(n+2){text-align:right}"
        "figure{margin:2em 0}img{max-width:100%}figcaption{color:#444}</style>",
        "</head><body>",
        "<h1>compact-proofs report</h1>",
        f"<p>{len(seeds)} seed(s) ({html.escape(_seed_list(seeds))}), "
        f"{df['strategy'].nunique()} strategies, {len(df)} results; "
        f"generated {generated}.</p>",
        "<h2>Table 1</h2>",
        "<p>Per seed, the best (highest bound) strategy of each row's configuration set "
        "(SPEC §6.11); mean ± population std over seeds. Normalised bound = bound / exact "
        "accuracy. The last column is the paper's value over its 151 seeds.</p>",
        f"<p><b>{html.escape(_mode_sentence(df))}</b> {html.escape(ARITHMETIC_LEGEND)}</p>",
        table1_html(table),
        "<p>Download: " + " · ".join(link(p) for p in table_files) + "</p>",
    ]
    for title, body in sections:  # already HTML
        parts += [f"<h2>{html.escape(title)}</h2>", body]
    if notes:
        parts.append("<h2>Notes</h2><ul>")
        parts += [f"<li>{html.escape(n)}</li>" for n in notes]
        parts.append("</ul>")
    parts.append("<h2>Figures</h2>")
    for fig in figures:
        png = fig.files[0]
        others = " · ".join(link(p) for p in fig.files[1:])
        parts += [
            f'<figure id="{html.escape(fig.stem)}">',
            f'<img src="{html.escape(png.relative_to(out_dir).as_posix())}" '
            f'alt="{html.escape(fig.title)}">',
            f"<figcaption><b>{html.escape(fig.title)}.</b> {html.escape(fig.caption)} "
            f"({others})</figcaption>",
            "</figure>",
        ]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def build_report(
    results_dir: Path,
    out_dir: Path,
    *,
    seed: int | None = None,
    progress: bool = False,
    noise_draws: int = 10,
    loss_strategies: Sequence[str] = ("cubic", loss.DEFAULT_STRATEGY),
) -> dict[str, Any]:
    """Write Table 1, the figures and index.html for the sweep in `results_dir` to `out_dir`.

    `seed` picks the model of the per-seed figure (default: 123 if present, else the smallest
    seed). Raises CompactProofsError (one-line message) when results.csv is missing or invalid
    or `seed` is not in it, before writing anything. Returns {"table1": rows, "files": written
    paths (index.html last), "figures": {stem: paths}, "notes": [...], "seeds": [...],
    "n_strategies": int, "figure_seed": int, "sigma_fits": [...]}.
    """
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    df = load_results(results_dir)
    figure_seed = _choose_seed(df, seed)
    table = table1(df)
    files: list[Path] = []
    figures: list[FigureEntry] = []
    notes: list[str] = []
    sigma_fits: list[dict[str, Any]] = []
    frontier: list[dict[str, Any]] = []
    noise_results: list[NoiseResult] = []
    breakdowns: list[loss.LossBreakdown] = []
    loaded: dict[str, Any] = {}
    sections: list[tuple[str, str]] = []

    def add_figure(
        fig: Figure, stem: str, formats: Sequence[str], title: str, caption: str
    ) -> None:
        paths = _save_figure(fig, out_dir, stem, formats)
        files.extend(paths)
        figures.append(FigureEntry(stem, title, caption, paths))

    def write_tables() -> None:
        for name, text in (
            ("table1.md", table1_markdown(table)),
            ("table1.tex", table1_latex(table)),
            ("table1.csv", table1_csv(table)),
        ):
            files.append(_write_text(out_dir / name, text))

    def bound_vs_flops() -> None:
        for frontier, stem, what in (
            (False, "bound_vs_flops_all", "all strategies"),
            (True, "bound_vs_flops_frontier", "Pareto frontier"),
        ):
            add_figure(
                plot_bound_vs_flops(df, frontier),
                stem,
                PAPER_FORMATS,
                f"Normalised bound vs FLOPs ({what})",
                "Normalised accuracy bound against proof length (FLOPs of verification, log2 "
                "axis), coloured by group; legend: mean ± std over seeds of each group's best "
                + (
                    "normalised bound. Paper strategies: only rows that no paper row of the "
                    "same seed beats in both bound and FLOPs; new strategies (stars): every row."
                    if frontier
                    else "normalised bound. Every (seed, strategy) row."
                ),
            )

    def dims_vs_flops() -> None:
        add_figure(
            plot_dims_vs_flops(df),
            "dims_vs_flops",
            PAPER_FORMATS,
            "Unexplained dimensions vs FLOPs",
            "Unexplained dimensionality (log2) against proof length (FLOPs, log2), by group.",
        )

    def sigma_ratio() -> None:
        points = sigma_ratio_points(df)
        if points.empty:
            notes.append(
                "Bound vs σ₁/σ₂ figure skipped: no sub-cubic row with an EQKE singular-value "
                "ratio in the results."
            )
            return
        fig, fits = plot_bound_vs_sigma_ratio(points)
        sigma_fits.extend(fits)
        add_figure(
            fig,
            "bound_vs_sigma_ratio",
            PAPER_FORMATS,
            "Normalised bound vs EQKE σ₁/σ₂",
            "Sub-cubic proofs (exact-EQKE handling excluded), best normalised bound per seed and "
            "attention-error handling, against the ratio of EQKE's first two singular values; "
            "one least-squares line per handling, R² in the legend.",
        )

    def model_file() -> Path | None:
        paths = df[df["seed"] == figure_seed]["model_path"].dropna().astype(str)
        paths = paths[paths != ""]
        return None if paths.empty else results_dir / paths.iloc[0]

    def frontier_table() -> None:
        frontier.extend(frontier_movement(df))
        if not frontier:
            return
        files.append(_write_text(out_dir / "frontier.md", frontier_markdown(frontier)))
        files.append(_write_text(out_dir / "frontier.csv", table1_csv(frontier)))
        sections.append(
            (
                "Frontier movement (strategies new here)",
                "<p>Each new strategy against the paper's strategies on the same seed: the best "
                "paper bound with at most its FLOPs, and the fewest paper FLOPs reaching its "
                "bound (mean over seeds; in parentheses the paper strategy chosen most "
                "often).</p>"
                + _html_table(FRONTIER_HEADERS, [_frontier_cells(r) for r in frontier]),
            )
        )

    def figure_model() -> Any:
        """The figure seed's model, or a one-line reason why there is none (loaded once)."""
        if "model" not in loaded:
            path = model_file()
            try:
                loaded["model"] = (
                    f"no model path for seed {figure_seed}"
                    if path is None
                    else load_model(path).model
                )
            except CompactProofsError as exc:
                loaded["model"] = str(exc)
        return loaded["model"]

    def noise_experiment() -> None:
        model = figure_model()
        if noise_draws < 2 or isinstance(model, str):
            why = "--noise-draws < 2" if noise_draws < 2 else model
            notes.append(f"Structureless-noise experiment skipped: {why}.")
            return
        try:
            noise_results.extend(noise.run_all(model, noise_draws))
        except (CompactProofsError, ValueError) as exc:
            notes.append(f"Structureless-noise experiment skipped: {exc}")
            return
        text = (
            "| "
            + " | ".join(noise.TABLE_HEADERS)
            + " |\n|"
            + "---|" * len(noise.TABLE_HEADERS)
            + "\n"
        )
        text += "".join("| " + " | ".join(noise.table_cells(r)) + " |\n" for r in noise_results)
        files.append(_write_text(out_dir / "noise.md", text))
        sections.append(
            (
                f"Structureless noise (seed {figure_seed})",
                "<p>The route-A EQKE residual replaced by Gaussian matrices with its entry mean "
                f"and standard deviation ({noise_draws} draws); z = (real − mean random) / sd "
                "random. z &gt; 0 for the error bound: the real residual is worse than "
                "structureless noise.</p>"
                + _html_table(noise.TABLE_HEADERS, [noise.table_cells(r) for r in noise_results]),
            )
        )
        add_figure(
            plot_noise(noise_results, figure_seed),
            f"seed-{figure_seed}-noise",
            SEED_FORMATS,
            f"Structureless-noise experiment, seed {figure_seed}",
            "Error bound of the EQKE residual and the certified bound for the real residual "
            "(red) and for random residuals with the same entry statistics (grey), per route-A "
            "error handling; z-scores annotated.",
        )

    def loss_breakdowns() -> None:
        model = figure_model()
        if isinstance(model, str):
            notes.append(f"Loss breakdown skipped: {model}.")
            return
        markdown = []
        for strategy in loss_strategies:
            try:
                lb = loss.loss_breakdown(model, strategy)
            except CompactProofsError as exc:
                notes.append(f"Loss breakdown of {strategy} skipped: {exc}")
                continue
            breakdowns.append(lb)
            markdown.append(loss.breakdown_markdown(lb, steps=True))
            short = "cubic" if strategy == "cubic" else "subcubic"
            add_figure(
                loss.plot_loss_breakdown(lb),
                f"seed-{figure_seed}-loss-{short}",
                SEED_FORMATS,
                f"Where the bound is lost: {strategy}, seed {figure_seed}",
                "Correctly classified inputs the proof does not certify, by cause (sequential "
                "ablation ladder of analysis.loss_breakdown: each cause is credited with the "
                "inputs that removing its relaxation, after the earlier ones, first certifies).",
            )
            sections.append(
                (
                    f"Where the bound is lost: {strategy} (seed {figure_seed})",
                    _html_table(LOSS_HEADERS, _loss_cells(lb)),
                )
            )
        if markdown:
            files.append(_write_text(out_dir / "loss.md", "\n\n".join(markdown) + "\n"))

    def seed_figure() -> None:
        path = model_file()
        if path is None:
            notes.append(f"Path-matrix figure skipped: no model path for seed {figure_seed}.")
            return
        matrices, reason = load_path_matrices(path)
        if matrices is None:
            notes.append(f"Path-matrix figure for seed {figure_seed} skipped: {reason}.")
            return
        add_figure(
            plot_path_matrices(matrices, figure_seed),
            f"seed-{figure_seed}-path-matrices",
            SEED_FORMATS,
            f"Path matrices of seed {figure_seed}",
            "Heatmaps of EQKE, EQKP, EVOU, PVOU and EUPU (biases folded in; symmetric colour "
            "scales) and the singular values of EQKE (log scale).",
        )

    steps: list[tuple[str, Callable[[], None]]] = [
        ("Table 1", write_tables),
        ("frontier movement", frontier_table),
        ("bound vs FLOPs", bound_vs_flops),
        ("dims vs FLOPs", dims_vs_flops),
        ("bound vs sigma ratio", sigma_ratio),
        (f"seed {figure_seed} path matrices", seed_figure),
        (f"seed {figure_seed} noise experiment", noise_experiment),
        (f"seed {figure_seed} loss breakdown", loss_breakdowns),
    ]
    bar = tqdm(steps, desc="report", unit="step", disable=not progress, leave=False)
    for name, step in bar:
        bar.set_postfix_str(name)
        step()
    table_files = [p for p in files if p.name.startswith("table1.")]
    index = _index_html(df, table, table_files, figures, notes, out_dir, sections)
    files.append(_write_text(out_dir / "index.html", index))
    return {
        "table1": table,
        "files": files,
        "figures": {f.stem: f.files for f in figures},
        "notes": notes,
        "seeds": [int(s) for s in sorted(df["seed"].unique())],
        "n_strategies": int(df["strategy"].nunique()),
        "figure_seed": figure_seed,
        "sigma_fits": sigma_fits,
        "frontier": frontier,
        "noise": [r.to_json() for r in noise_results],
        "loss": [lb.to_json() for lb in breakdowns],
    }
