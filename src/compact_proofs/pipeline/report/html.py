"""The report's HTML: `index.html` (`index_html`), the HTML tables it shows and the sections
on the frontier movement, the structureless-noise experiment and the loss breakdown.

It only lays out what the other modules computed and formatted (statistics in `tables`, cells
in `formatting`, figure files in `figures`); the caller writes the page to disk. The page is
self-contained: every figure's PNG is embedded as a base64 data URI, so index.html alone is
the report (the links to the separate PNG/SVG/PDF/table files work beside them).
"""

from __future__ import annotations

import base64
import datetime as dt
import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compact_proofs.analysis import loss_breakdown as loss
from compact_proofs.analysis import noise
from compact_proofs.analysis.noise import NoiseResult
from compact_proofs.pipeline.report.figures import FigureEntry
from compact_proofs.pipeline.report.formatting import (
    ARITHMETIC_LEGEND,
    FRONTIER_HEADERS,
    LOSS_HEADERS,
    PAPER_FOOTNOTE,
    TABLE_HEADERS,
    frontier_cells,
    loss_cells,
    seed_list,
    table1_cells,
)

Section = tuple[str, str]  # (title, body already in HTML)

_STYLE = (
    "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
    "table.t1{border-collapse:collapse;font-size:0.9em}"
    "table.t1 td,table.t1 th{border:1px solid #ccc;padding:3px 8px}"
    "table.t1 td:nth-child(n+2){text-align:right}"
    "p.footnote{font-size:0.85em;color:#444}"
    "figure{margin:2em 0}img{max-width:100%}figcaption{color:#444}</style>"
)


# -- tables and sections --------------------------------------------------------------------


def html_table(headers: Sequence[str], rows: list[list[str]]) -> str:
    """An HTML table of plain-text cells (escaped)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "\n".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return (
        f'<table class="t1">\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>'
    )


def table1_html(table: list[dict[str, Any]]) -> str:
    """Table 1 as an HTML table (the Markdown table's cells, escaped) and its footnote on the
    paper's corrected values."""
    return (
        html_table(TABLE_HEADERS, [table1_cells(row) for row in table])
        + f'\n<p class="footnote">{html.escape(PAPER_FOOTNOTE)}</p>'
    )


def frontier_section(frontier: list[dict[str, Any]]) -> Section:
    """The section on how far the new strategies move the paper's frontier."""
    return (
        "Frontier movement (strategies new here)",
        "<p>Each new strategy against the paper's strategies on the same seed: the best "
        "paper bound with at most its FLOPs, and the fewest paper FLOPs reaching its "
        "bound (mean over seeds; in parentheses the paper strategy chosen most "
        "often).</p>" + html_table(FRONTIER_HEADERS, [frontier_cells(r) for r in frontier]),
    )


def noise_section(results: Sequence[NoiseResult], seed: int, draws: int) -> Section:
    """The section on the structureless-noise experiment of one seed's model."""
    return (
        f"Structureless noise (seed {seed})",
        "<p>Each residual a proof bounds without explanation — the route-A EQKE residual "
        "beyond rank one (first rows), and for separable-subcubic EQKE beyond rank one and "
        "EVOU outside each row's top entries — replaced by Gaussian matrices with its entry "
        f"mean and standard deviation ({draws} draws), the statistic it costs the proof and "
        "the bound recomputed; z = (real − mean random) / sd random. z &gt; 0 for "
        "the statistic: the real residual costs more than structureless noise would. "
        + noise.BOUNDS_NOTE
        + "</p>"
        + html_table(noise.TABLE_HEADERS, [noise.table_cells(r) for r in results]),
    )


def loss_section(lb: loss.LossBreakdown, strategy: str, seed: int) -> Section:
    """The section on where one strategy's bound is lost on one seed's model."""
    return (
        f"Where the bound is lost: {strategy} (seed {seed})",
        html_table(LOSS_HEADERS, loss_cells(lb)),
    )


# -- index.html -----------------------------------------------------------------------------


@dataclass
class IndexPage:
    """What index.html shows: a summary of the results, Table 1 and its files, the extra
    sections, the notes on what was skipped, and the figures (files relative to `out_dir`)."""

    out_dir: Path
    seeds: list[int]
    n_strategies: int
    n_results: int
    mode: str  # one sentence on the arithmetic behind the numbers
    table: list[dict[str, Any]]
    table_files: list[Path]
    figures: list[FigureEntry]
    notes: list[str]
    sections: Sequence[Section] = ()


def _link(path: Path, out_dir: Path) -> str:
    """A link to `path` (relative to `out_dir`) labelled with its format."""
    rel = path.relative_to(out_dir).as_posix()
    return f'<a href="{html.escape(rel)}">{html.escape(path.suffix.lstrip(".").upper())}</a>'


def _head(page: IndexPage) -> list[str]:
    """The page from its header through Table 1 and the table files' links."""
    generated = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>compact-proofs report</title>",
        _STYLE,
        "</head><body>",
        "<h1>compact-proofs report</h1>",
        f"<p>{len(page.seeds)} seed(s) ({html.escape(seed_list(page.seeds))}), "
        f"{page.n_strategies} strategies, {page.n_results} results; "
        f"generated {generated}.</p>",
        "<h2>Table 1</h2>",
        "<p>Per seed, the best (highest bound) strategy of each row's configuration set "
        "(SPEC §6.11); mean ± population std over seeds. Normalised bound = bound / exact "
        "accuracy. The last two columns are the paper's values over its 151 seeds: as "
        "published, and as corrected by the authors after publication (footnote).</p>",
        f"<p><b>{html.escape(page.mode)}</b> {html.escape(ARITHMETIC_LEGEND)}</p>",
        table1_html(page.table),
        "<p>Download: " + " · ".join(_link(p, page.out_dir) for p in page.table_files) + "</p>",
    ]


def _data_uri(path: Path) -> str:
    """The PNG file at `path` as a base64 data URI (so index.html needs no other file)."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _figure(fig: FigureEntry, out_dir: Path) -> list[str]:
    """One figure: its PNG embedded as a data URI, caption, and links to its files (PNG and
    the other formats, beside index.html)."""
    links = " · ".join(_link(p, out_dir) for p in fig.files)
    return [
        f'<figure id="{html.escape(fig.stem)}">',
        f'<img src="{_data_uri(fig.files[0])}" alt="{html.escape(fig.title)}">',
        f"<figcaption><b>{html.escape(fig.title)}.</b> {html.escape(fig.caption)} "
        f"(files: {links})</figcaption>",
        "</figure>",
    ]


def index_html(page: IndexPage) -> str:
    """index.html: the summary, Table 1, the sections, the notes, then every figure."""
    parts = _head(page)
    for title, body in page.sections:  # already HTML
        parts += [f"<h2>{html.escape(title)}</h2>", body]
    if page.notes:
        parts.append("<h2>Notes</h2><ul>")
        parts += [f"<li>{html.escape(n)}</li>" for n in page.notes]
        parts.append("</ul>")
    parts.append("<h2>Figures</h2>")
    for fig in page.figures:
        parts += _figure(fig, page.out_dir)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
