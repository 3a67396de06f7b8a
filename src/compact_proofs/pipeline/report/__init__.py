"""The report of a sweep: the paper's Table 1, its figures and a browsable index.html.

`build_report(results_dir, out_dir)` reads `results_dir/results.csv` (the results store of
`compact_proofs.pipeline.results`: one row per (seed, strategy)) and writes into `out_dir`:

* `table1.md`, `table1.tex`, `table1.csv` — Table 1 (SPEC §6.11, `table1`);
* `frontier.md`, `frontier.csv` — how far the strategies new here move the paper's frontier;
* `bound_vs_flops_all.*`, `bound_vs_flops_frontier.*` — normalised bound against proof length
  (SPEC §9.2–§9.3, `plot_bound_vs_flops`);
* `dims_vs_flops.*` — unexplained dimensionality against proof length (SPEC §9.3,
  `plot_dims_vs_flops`);
* `bound_vs_sigma_ratio.*` — normalised bound against EQKE's σ₁/σ₂ (SPEC §9.4,
  `plot_bound_vs_sigma_ratio`);
* `seed-S-path-matrices.*` — heatmaps of one seed's path matrices and EQKE's singular values
  (SPEC §9.7, `plot_path_matrices`);
* `noise.md`, `seed-S-noise.*` — that seed's structureless-noise experiment;
* `loss.md`, `seed-S-loss-*.*` — where that seed's cubic and sub-cubic bounds are lost;
* `index.html` — the table and every figure, self-contained (each figure's PNG embedded as a
  base64 data URI, so the file alone is the report), with links to all the files above.

Figures are PNG and SVG; the paper-style ones (bound/dims vs FLOPs, σ ratio) also PDF. Every
file is written through a temporary file and a rename, so a failure never leaves a partial
file; index.html is written last, embeds the figures' PNGs and links only files written by the
same run.

The package's modules, data flowing one way: `tables` (Table 1's definition, reading
results.csv, statistics) → `formatting` (tables as Markdown, LaTeX, CSV) and `figures`
(matplotlib figures) → `html` (index.html) → `steps` (each writes one part of the report);
this module runs the steps in order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from compact_proofs.analysis import loss_breakdown as loss
from compact_proofs.pipeline.report.figures import (
    EXCLUDED_SIGMA_ERROR,
    MIN_FIT_POINTS,
    PAPER_FORMATS,
    SEED_FORMATS,
    FigureEntry,
    fit_refusal,
    linear_fit,
    load_path_matrices,
    plot_asymptotic,
    plot_bound_vs_flops,
    plot_bound_vs_sigma_ratio,
    plot_dims_vs_flops,
    plot_noise,
    plot_path_matrices,
    plot_series,
    save_figure,
    sigma_ratio_points,
)
from compact_proofs.pipeline.report.formatting import (
    ARITHMETIC_LEGEND,
    FRONTIER_HEADERS,
    LOSS_HEADERS,
    PAPER_FOOTNOTE,
    TABLE_HEADERS,
    frontier_markdown,
    mode_sentence,
    table1_csv,
    table1_latex,
    table1_markdown,
)
from compact_proofs.pipeline.report.html import table1_html
from compact_proofs.pipeline.report.steps import (
    ReportRun,
    add_asymptotic,
    add_bound_vs_flops,
    add_dims_vs_flops,
    add_frontier,
    add_loss_breakdowns,
    add_noise_experiment,
    add_path_matrices,
    add_sigma_ratio,
    add_table1,
    choose_seed,
    summary,
    write_index,
    write_text,
)
from compact_proofs.pipeline.report.tables import (
    GROUP_ORDER,
    NEW_GROUPS,
    PAPER_CORRECTION_COMMIT,
    PAPER_TABLE1,
    STRATEGY_ROWS,
    TABLE1_ORDER,
    PaperValue,
    best_per_seed,
    frontier_movement,
    group_order,
    group_summary,
    load_results,
    paper_fields,
    pareto_frontier,
    pm_round,
    row_mask,
    table1,
)

__all__ = [
    "ARITHMETIC_LEGEND", "EXCLUDED_SIGMA_ERROR", "FRONTIER_HEADERS", "GROUP_ORDER",
    "LOSS_HEADERS", "MIN_FIT_POINTS", "NEW_GROUPS", "PAPER_CORRECTION_COMMIT", "PAPER_FOOTNOTE",
    "PAPER_FORMATS", "PAPER_TABLE1", "SEED_FORMATS", "STRATEGY_ROWS", "TABLE1_ORDER",
    "TABLE_HEADERS", "FigureEntry", "PaperValue", "best_per_seed", "build_report",
    "fit_refusal", "frontier_markdown", "frontier_movement", "group_order", "group_summary",
    "linear_fit", "load_path_matrices", "load_results", "mode_sentence", "paper_fields",
    "pareto_frontier", "plot_asymptotic", "plot_bound_vs_flops", "plot_bound_vs_sigma_ratio",
    "plot_dims_vs_flops", "plot_noise", "plot_path_matrices", "plot_series", "pm_round",
    "row_mask", "save_figure", "sigma_ratio_points", "table1", "table1_csv", "table1_html",
    "table1_latex", "table1_markdown", "write_text",
]  # fmt: skip


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
    figure_seed = choose_seed(df, seed)
    run = ReportRun(results_dir, out_dir, df, figure_seed, table1(df))
    steps: list[tuple[str, Callable[[ReportRun], None]]] = [
        ("Table 1", add_table1),
        ("frontier movement", add_frontier),
        ("bound vs FLOPs", add_bound_vs_flops),
        ("dims vs FLOPs", add_dims_vs_flops),
        ("bound vs sigma ratio", add_sigma_ratio),
        (f"seed {figure_seed} path matrices", add_path_matrices),
        (f"seed {figure_seed} noise experiment", partial(add_noise_experiment, draws=noise_draws)),
        (
            f"seed {figure_seed} loss breakdown",
            partial(add_loss_breakdowns, strategies=loss_strategies),
        ),
        ("asymptotic frontier", add_asymptotic),
    ]
    bar = tqdm(steps, desc="report", unit="step", disable=not progress, leave=False)
    for name, step in bar:
        bar.set_postfix_str(name)
        step(run)
    write_index(run)
    return summary(run)
