"""Table 1 and the report's other tables as text: Markdown, LaTeX and CSV, and the display
cells that the HTML page (`html`) shows; also the sentences that describe the results.

Everything here formats numbers already computed (by `tables`, `analysis.noise`,
`analysis.loss_breakdown`); nothing here computes statistics.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from typing import Any

import pandas as pd

from compact_proofs.analysis import loss_breakdown as loss
from compact_proofs.analysis import noise
from compact_proofs.analysis.noise import NoiseResult
from compact_proofs.pipeline.report.tables import PAPER_CORRECTION_COMMIT, pm_round

# -- Table 1 --------------------------------------------------------------------------------

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
    "Paper, published (normalised)",
    "Paper, corrected by the authors* (normalised)",
)
PAPER_FOOTNOTE = (
    "* The paper's published sub-cubic rows (e.g. Sub-cubic 0.821 ± 0.013, Low-rank QK "
    "0.795 ± 0.014) came from a verifier that used W_E + mean(W_pos) for the query's "
    "direct path instead of W_E + W_pos[-1]: not sound. The authors fixed this after "
    f'publication (code commit {PAPER_CORRECTION_COMMIT}, 2024-11-04, "Fix computation of '
    'W_EP") and regenerated their data (151 seeds); that column shows their corrected values '
    "for every row they regenerated (cubic: unchanged). Brute force evaluates the model on "
    "every input and never forms W_EP, so its published value is unaffected and is repeated. "
    "Rows with — are not in the paper's Table 1."
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


def _paper_cell(row: dict[str, Any], prefix: str = "paper") -> str:
    """The paper's value of one Table 1 row (brute force: 1, with the paper's bound), as
    published (`prefix` 'paper') or as corrected by the authors ('paper_corrected')."""
    if row[f"{prefix}_bound_mean"] is not None:
        return f"1 (bound {pm_round(row[f'{prefix}_bound_mean'], row[f'{prefix}_bound_std'])})"
    if row[f"{prefix}_normalized_bound_mean"] is None:
        return "—"
    return pm_round(row[f"{prefix}_normalized_bound_mean"], row[f"{prefix}_normalized_bound_std"])


def table1_cells(row: dict[str, Any]) -> list[str]:
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
        _paper_cell(row, "paper_corrected"),
    ]


def _tex_escape(text: str) -> str:
    """`text` with LaTeX's special characters escaped and ± and — in LaTeX."""
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
        "|" + "|".join(["---"] + ["---:"] * 5 + ["---", "---:", "---", "---", "---"]) + "|",
    ]
    lines += ["| " + " | ".join(table1_cells(row)) + " |" for row in table]
    return (
        "Table 1: per seed the best strategy of each row's set; mean ± std (population) over "
        "seeds. Paper: 151 seeds (Gross et al. 2024). "
        + ARITHMETIC_LEGEND
        + "\n\n"
        + "\n".join(lines)
        + "\n\n"
        + _markdown_footnote()
        + "\n"
    )


_FORMULAS = ("W_E + mean(W_pos)", "W_E + W_pos[-1]", "W_EP")


def _markdown_footnote() -> str:
    """PAPER_FOOTNOTE in Markdown: formulas as code, the leading * not a list bullet."""
    pattern = "|".join(map(re.escape, _FORMULAS))
    return "\\" + re.sub(pattern, lambda m: f"`{m[0]}`", PAPER_FOOTNOTE)


def _latex_footnote() -> str:
    """PAPER_FOOTNOTE in LaTeX (text mode, no packages), below the tabular."""
    text = _tex_escape(PAPER_FOOTNOTE.removeprefix("* ")).replace('"', "''")
    text = text.replace("''Fix", "``Fix")
    return r"\par\smallskip\noindent{\footnotesize $^*$" + text + "}"


def table1_latex(table: list[dict[str, Any]]) -> str:
    """Table 1 as a self-contained LaTeX tabular (no packages needed), the footnote on the
    paper's corrected values below it."""
    headers = [
        _tex_escape(h).replace("log2", r"$\log_2$").replace("*", "$^*$") for h in TABLE_HEADERS
    ]
    lines = [
        "% Table 1 (compact-proofs report): per seed the best strategy of each row's set;",
        "% mean $\\pm$ std (population) over seeds.",
        "% " + ARITHMETIC_LEGEND,
        r"\begin{tabular}{lllrrrlrlll}",
        r"\hline",
        " & ".join(headers) + r" \\",
        r"\hline",
    ]
    for row in table:
        cells = table1_cells(row)
        cells[3] = _fmt_number(row["flops_mean"], tex=True, round_to_int=True)
        cells[5] = _fmt_number(row["unexplained_dims_mean"], tex=True)
        cells[6] = _tex_complexity(row["complexity"])
        lines.append(
            " & ".join(c if i in (3, 5, 6) else _tex_escape(c) for i, c in enumerate(cells))
            + r" \\"
        )
    lines += [r"\hline", r"\end{tabular}", _latex_footnote()]
    return "\n".join(lines) + "\n"


def table1_csv(table: list[dict[str, Any]]) -> str:
    """Table 1 as CSV: every field of the row dicts, full precision, empty for None."""
    buffer = io.StringIO()
    pd.DataFrame(table).to_csv(buffer, index=False, lineterminator="\n")
    return buffer.getvalue()


# -- frontier movement, loss breakdown, noise -----------------------------------------------

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


def frontier_cells(row: dict[str, Any]) -> list[str]:
    """Display cells of one frontier-movement row (a dict of `tables.frontier_movement`)."""
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
    lines += ["| " + " | ".join(frontier_cells(r)) + " |" for r in rows]
    return (
        "Frontier movement: each new strategy against the paper's strategies of the same seed "
        "(mean over seeds; FLOPs saved: geometric mean of the ratio).\n\n" + "\n".join(lines) + "\n"
    )


LOSS_HEADERS = ("", "inputs", "fraction of all inputs", "share of lost")


def loss_cells(lb: loss.LossBreakdown) -> list[list[str]]:
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


def noise_markdown(results: Sequence[NoiseResult]) -> str:
    """The structureless-noise experiment's results as a Markdown table."""
    text = (
        "| " + " | ".join(noise.TABLE_HEADERS) + " |\n|" + "---|" * len(noise.TABLE_HEADERS) + "\n"
    )
    rows = "".join("| " + " | ".join(noise.table_cells(r)) + " |\n" for r in results)
    return text + rows + "\n" + noise.BOUNDS_NOTE + "\n"


# -- sentences about the results ------------------------------------------------------------


def seed_list(seeds: Sequence[int]) -> str:
    """The seeds, comma-separated, or their number when there are more than 12."""
    seeds = [int(s) for s in seeds]
    return ", ".join(map(str, seeds)) if len(seeds) <= 12 else f"{len(seeds)} seeds"


def mode_sentence(df: pd.DataFrame) -> str:
    """One sentence on what the report's numbers are."""
    n = int(df["rigorous"].sum())
    if n == len(df):
        return (
            "Every certified bound of the sweep in this report is a proof (rigorous "
            "verification); the noise experiment's counterfactual bounds and sampled "
            "accuracy estimates are not, and say so where they appear."
        )
    if n == 0:
        return "Verified in plain float64: the numbers in this report are NOT proofs."
    return f"Mixed: {n} of {len(df)} results are rigorous proofs, the rest float64 (not proofs)."
