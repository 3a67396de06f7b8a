"""The steps of `build_report`: each writes one part of the report (Table 1, the frontier
table, a figure, the noise and loss-breakdown sections, index.html) and records what it wrote,
found or skipped in the `ReportRun` that the steps share.

A step that cannot do its part (no model file, too few noise draws, ...) adds a one-line note
instead; index.html, written last, shows the notes and links only files this run wrote.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from compact_proofs.analysis import loss_breakdown as loss
from compact_proofs.analysis import noise
from compact_proofs.analysis.noise import NoiseResult
from compact_proofs.errors import CompactProofsError
from compact_proofs.model.file_format import atomic_write, load_model
from compact_proofs.model.seeds import SELECTED_SEED
from compact_proofs.pipeline.report.figures import (
    MIN_FIT_DISTINCT_X,
    MIN_FIT_POINTS,
    MIN_FIT_RELATIVE_SPREAD,
    PAPER_FORMATS,
    SEED_FORMATS,
    FigureEntry,
    load_path_matrices,
    plot_asymptotic,
    plot_bound_vs_flops,
    plot_bound_vs_sigma_ratio,
    plot_dims_vs_flops,
    plot_noise,
    plot_path_matrices,
    save_figure,
    sigma_ratio_points,
)
from compact_proofs.pipeline.report.formatting import (
    frontier_markdown,
    mode_sentence,
    noise_markdown,
    seed_list,
    table1_csv,
    table1_latex,
    table1_markdown,
)
from compact_proofs.pipeline.report.html import (
    IndexPage,
    frontier_section,
    index_html,
    loss_section,
    noise_section,
)
from compact_proofs.pipeline.report.tables import frontier_movement


def write_text(path: Path, text: str) -> Path:
    """Write `text` to `path` (UTF-8) atomically; return `path`."""

    def write(tmp: str) -> None:
        Path(tmp).write_text(text, encoding="utf-8")

    atomic_write(path, write)
    return path


def choose_seed(df: pd.DataFrame, seed: int | None) -> int:
    """The seed of the per-seed figures: `seed`, which must be in the results, or by default
    SELECTED_SEED if present, else the smallest seed."""
    seeds = sorted(df["seed"].unique())
    if seed is None:
        return SELECTED_SEED if SELECTED_SEED in seeds else int(seeds[0])
    if seed not in seeds:
        raise CompactProofsError(
            f"seed {seed} is not in the results (seeds: {seed_list(seeds)}); pick one of them"
        )
    return seed


@dataclass
class ReportRun:
    """One run of build_report: its inputs, and the files, figures, notes, sections and
    results it has produced so far (in the order written)."""

    results_dir: Path
    out_dir: Path
    df: pd.DataFrame
    figure_seed: int
    table: list[dict[str, Any]]
    files: list[Path] = field(default_factory=list)
    figures: list[FigureEntry] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sections: list[tuple[str, str]] = field(default_factory=list)
    sigma_fits: list[dict[str, Any]] = field(default_factory=list)
    frontier: list[dict[str, Any]] = field(default_factory=list)
    noise_results: list[NoiseResult] = field(default_factory=list)
    breakdowns: list[loss.LossBreakdown] = field(default_factory=list)
    model: Any = None  # the figure seed's model or why there is none; loaded on first use

    def write(self, name: str, text: str) -> None:
        """Write out_dir/name and record the file."""
        self.files.append(write_text(self.out_dir / name, text))

    def add_figure(
        self, fig: Figure, stem: str, formats: Sequence[str], title: str, caption: str
    ) -> None:
        """Save `fig` in `formats` and record its files and index entry."""
        paths = save_figure(fig, self.out_dir, stem, formats)
        self.files.extend(paths)
        self.figures.append(FigureEntry(stem, title, caption, paths))

    def model_file(self) -> Path | None:
        """The figure seed's model file from its rows' model_path (None: no path)."""
        df = self.df
        paths = df[df["seed"] == self.figure_seed]["model_path"].dropna().astype(str)
        paths = paths[paths != ""]
        return None if paths.empty else self.results_dir / paths.iloc[0]

    def figure_model(self) -> Any:
        """The figure seed's model, or a one-line reason why there is none (loaded once)."""
        if self.model is None:
            path = self.model_file()
            try:
                self.model = (
                    f"no model path for seed {self.figure_seed}"
                    if path is None
                    else load_model(path).model
                )
            except CompactProofsError as exc:
                self.model = str(exc)
        return self.model


# -- the steps ------------------------------------------------------------------------------


def add_table1(run: ReportRun) -> None:
    """Table 1 as Markdown, LaTeX and CSV."""
    run.write("table1.md", table1_markdown(run.table))
    run.write("table1.tex", table1_latex(run.table))
    run.write("table1.csv", table1_csv(run.table))


def add_frontier(run: ReportRun) -> None:
    """The frontier-movement table (Markdown, CSV) and its section, if there are new strategies."""
    run.frontier.extend(frontier_movement(run.df))
    if not run.frontier:
        return
    run.write("frontier.md", frontier_markdown(run.frontier))
    run.write("frontier.csv", table1_csv(run.frontier))
    run.sections.append(frontier_section(run.frontier))


def add_bound_vs_flops(run: ReportRun) -> None:
    """Normalised bound vs FLOPs: every row, and the Pareto frontier."""
    for frontier, stem, what in (
        (False, "bound_vs_flops_all", "all strategies"),
        (True, "bound_vs_flops_frontier", "Pareto frontier"),
    ):
        run.add_figure(
            plot_bound_vs_flops(run.df, frontier),
            stem,
            PAPER_FORMATS,
            f"Normalised bound vs FLOPs ({what})",
            "Normalised accuracy bound against proof length (FLOPs of verification, log2 "
            "axis), coloured by group, each new strategy with its own marker; right: zoom on "
            "every proof but brute force (its range shaded on the left). Legend: mean ± std "
            "over seeds of each group's (new: each strategy's) best "
            + (
                "normalised bound. Paper strategies: only rows that no paper row of the "
                "same seed beats in both bound and FLOPs; new strategies: every row."
                if frontier
                else "normalised bound. Every (seed, strategy) row."
            ),
        )


def add_dims_vs_flops(run: ReportRun) -> None:
    """Unexplained dimensions vs FLOPs."""
    run.add_figure(
        plot_dims_vs_flops(run.df),
        "dims_vs_flops",
        PAPER_FORMATS,
        "Unexplained dimensions vs FLOPs",
        "Unexplained dimensionality (log2) against proof length (FLOPs, log2), by group.",
    )


def add_sigma_ratio(run: ReportRun) -> None:
    """Normalised bound vs EQKE σ₁/σ₂ with its fits (a note instead when there are no points)."""
    points = sigma_ratio_points(run.df)
    if points.empty:
        run.notes.append(
            "Bound vs σ₁/σ₂ figure skipped: no sub-cubic row with an EQKE singular-value "
            "ratio in the results."
        )
        return
    fig, fits = plot_bound_vs_sigma_ratio(points)
    run.sigma_fits.extend(fits)
    run.add_figure(
        fig,
        "bound_vs_sigma_ratio",
        PAPER_FORMATS,
        "Normalised bound vs EQKE σ₁/σ₂",
        "Sub-cubic proofs (exact-EQKE handling excluded), best normalised bound per seed and "
        "attention-error handling, against the ratio of EQKE's first two singular values; "
        "a least-squares line (R² in the legend) for each handling with at least "
        f"{MIN_FIT_POINTS} points, {MIN_FIT_DISTINCT_X} distinct σ₁/σ₂ values and a σ₁/σ₂ "
        f"range of at least {MIN_FIT_RELATIVE_SPREAD:.0%} of its median; the legend says "
        "why the others have none.",
    )


def add_path_matrices(run: ReportRun) -> None:
    """The figure seed's path matrices (a note instead when its model is unavailable)."""
    seed, path = run.figure_seed, run.model_file()
    if path is None:
        run.notes.append(f"Path-matrix figure skipped: no model path for seed {seed}.")
        return
    matrices, reason = load_path_matrices(path)
    if matrices is None:
        run.notes.append(f"Path-matrix figure for seed {seed} skipped: {reason}.")
        return
    run.add_figure(
        plot_path_matrices(matrices, seed),
        f"seed-{seed}-path-matrices",
        SEED_FORMATS,
        f"Path matrices of seed {seed}",
        "Heatmaps of EQKE, EQKP, EVOU, PVOU and EUPU (biases folded in; symmetric colour "
        "scales) and the singular values of EQKE (log scale).",
    )


def add_noise_experiment(run: ReportRun, draws: int) -> None:
    """The figure seed's structureless-noise experiment with `draws` random residuals: table,
    section and figure (a note instead when it cannot run)."""
    seed, model = run.figure_seed, run.figure_model()
    if draws < 2 or isinstance(model, str):
        why = "--noise-draws < 2" if draws < 2 else model
        run.notes.append(f"Structureless-noise experiment skipped: {why}.")
        return
    try:
        run.noise_results.extend(noise.run_all(model, draws))
    except (CompactProofsError, ValueError) as exc:
        run.notes.append(f"Structureless-noise experiment skipped: {exc}")
        return
    run.write("noise.md", noise_markdown(run.noise_results))
    run.sections.append(noise_section(run.noise_results, seed, draws))
    run.add_figure(
        plot_noise(run.noise_results, seed),
        f"seed-{seed}-noise",
        SEED_FORMATS,
        f"Structureless-noise experiment, seed {seed}",
        "The statistic each residual costs the proof (relative to the random draws' mean) "
        "and the bound the proof would reach (float64 counterfactuals, not proofs), for the "
        "real residual (red) and for random residuals with "
        "the same entry statistics (grey): per route-A error handling (EQKE residual beyond "
        "rank 1, its error bound) and for separable-subcubic's two relaxations; z-scores "
        "annotated.",
    )


def add_loss_breakdowns(run: ReportRun, strategies: Sequence[str]) -> None:
    """Where the figure seed's bound is lost, per strategy: figure, section and loss.md
    (a note instead for each breakdown that cannot be computed)."""
    seed, model = run.figure_seed, run.figure_model()
    if isinstance(model, str):
        run.notes.append(f"Loss breakdown skipped: {model}.")
        return
    markdown = []
    for strategy in strategies:
        try:
            lb = loss.loss_breakdown(model, strategy)
        except CompactProofsError as exc:
            run.notes.append(f"Loss breakdown of {strategy} skipped: {exc}")
            continue
        run.breakdowns.append(lb)
        markdown.append(loss.breakdown_markdown(lb, steps=True))
        short = "cubic" if strategy == "cubic" else "subcubic"
        run.add_figure(
            loss.plot_loss_breakdown(lb),
            f"seed-{seed}-loss-{short}",
            SEED_FORMATS,
            f"Where the bound is lost: {strategy}, seed {seed}",
            "Correctly classified inputs the proof does not certify, by cause (sequential "
            "ablation ladder of analysis.loss_breakdown: each cause is credited with the "
            "inputs that removing its relaxation, after the earlier ones, first certifies).",
        )
        run.sections.append(loss_section(lb, strategy, seed))
    if markdown:
        run.write("loss.md", "\n\n".join(markdown) + "\n")


ASYMPTOTIC_JSON = "asymptotic.json"  # written by benchmarks/asymptotic.py --json


def add_asymptotic(run: ReportRun) -> None:
    """The asymptotic benchmark's figure, when the results directory holds its JSON
    (`python benchmarks/asymptotic.py --json DIR/asymptotic.json`; nothing otherwise)."""
    path = run.results_dir / ASYMPTOTIC_JSON
    if not path.exists():
        return
    try:
        records = json.loads(path.read_text())
        fig = plot_asymptotic(records)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        run.notes.append(f"Asymptotic frontier skipped: {path.name} is not readable ({exc}).")
        return
    run.add_figure(
        fig,
        "asymptotic",
        PAPER_FORMATS,
        "Proof length and bound against the vocabulary size",
        f"benchmarks/asymptotic.py ({records.get('machine', 'machine not recorded')}): FLOPs "
        "(log2) with fitted log-log slopes, and the mean certified bound over the seeds of "
        "each d_vocab, for models trained with the paper's recipe (K = "
        f"{records['n_ctx']}).",
    )


def write_index(run: ReportRun) -> None:
    """index.html, last: it links only files this run has written."""
    page = IndexPage(
        out_dir=run.out_dir,
        seeds=[int(s) for s in sorted(run.df["seed"].unique())],
        n_strategies=int(run.df["strategy"].nunique()),
        n_results=len(run.df),
        mode=mode_sentence(run.df),
        table=run.table,
        table_files=[p for p in run.files if p.name.startswith("table1.")],
        figures=run.figures,
        notes=run.notes,
        sections=run.sections,
    )
    run.write("index.html", index_html(page))


def summary(run: ReportRun) -> dict[str, Any]:
    """What build_report returns: Table 1, the files and figures written, the notes and the
    results of the steps (JSON-ready except the paths)."""
    return {
        "table1": run.table,
        "files": run.files,
        "figures": {f.stem: f.files for f in run.figures},
        "notes": run.notes,
        "seeds": [int(s) for s in sorted(run.df["seed"].unique())],
        "n_strategies": int(run.df["strategy"].nunique()),
        "figure_seed": run.figure_seed,
        "sigma_fits": run.sigma_fits,
        "frontier": run.frontier,
        "noise": [r.to_json() for r in run.noise_results],
        "loss": [lb.to_json() for lb in run.breakdowns],
    }
