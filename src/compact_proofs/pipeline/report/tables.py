"""Table 1 of the paper and the statistics of a sweep's results.

What Table 1 is (its rows in the paper's order and the paper's values), reading and validating
`results.csv` (`load_results`), and the numbers computed from it: Table 1 itself (`table1`,
SPEC §6.11), each seed's best row (`best_per_seed`), the per-seed Pareto frontier
(`pareto_frontier`, SPEC §9.2), how far the new strategies move it (`frontier_movement`) and a
group's mean ± std (`group_summary`). Formatting the tables as text is `formatting`'s job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from compact_proofs.errors import CompactProofsError
from compact_proofs.pipeline.sweep import ROWS
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
    "Separable sub-cubic (new)",
)
# rows defined by a strategy id rather than by the `table1_rows` column (sweep.ROWS inverted)
STRATEGY_ROWS = {row: strategy_id for strategy_id, row in ROWS.items()}


@dataclass(frozen=True)
class PaperValue:
    """The paper's Table 1 value (151 seeds): mean ± std of the normalised bound, or, for
    brute force (normalised bound 1 by definition), of the bound itself.

    `mean`, `std`: the value as published (NeurIPS 2024). `corrected_mean`, `corrected_std`:
    the value the authors regenerated after fixing their verifier (code commit bcf5c23,
    2024-11-04, "Fix computation of W_EP": the published sub-cubic proofs used
    `W_E + mean(W_pos)` for the query's direct path instead of `W_E + W_pos[-1]`, which is
    unsound). None where the correction does not touch the row (`corrected` then returns the
    published value, `corrected_is_published` is True).
    """

    mean: float
    std: float
    of_bound: bool = False
    corrected_mean: float | None = None
    corrected_std: float | None = None

    @property
    def corrected_is_published(self) -> bool:
        """True when the authors' correction leaves the published value as it is."""
        return self.corrected_mean is None

    @property
    def corrected(self) -> tuple[float, float]:
        """(mean, std) after the authors' correction (the published one where unaffected)."""
        if self.corrected_mean is None or self.corrected_std is None:
            return self.mean, self.std
        return self.corrected_mean, self.corrected_std


# Published values, then the authors' corrected ones (151 seeds, mean ± std). Brute force
# evaluates the model on every input and never forms W_EP: unaffected, published value stands.
# Cubic: the authors' regenerated value equals the published one (its query path was right).
PAPER_TABLE1: dict[str, PaperValue] = {
    "Brute force": PaperValue(0.9992, 0.0015, of_bound=True),
    "Cubic": PaperValue(0.9539, 0.0080, corrected_mean=0.9539, corrected_std=0.0080),
    "Sub-cubic": PaperValue(0.821, 0.013, corrected_mean=0.700, corrected_std=0.036),
    "Low-rank QK": PaperValue(0.795, 0.014, corrected_mean=0.675, corrected_std=0.035),
    "Low-rank EU": PaperValue(0.653, 0.060, corrected_mean=0.633, corrected_std=0.062),
    "Low-rank QK & EU": PaperValue(0.628, 0.060, corrected_mean=0.610, corrected_std=0.060),
    "Quadratic QK": PaperValue(0.390, 0.032, corrected_mean=0.316, corrected_std=0.037),
    "Quadratic QK & EU": PaperValue(0.286, 0.036, corrected_mean=0.283, corrected_std=0.037),
}
PAPER_CORRECTION_COMMIT = "bcf5c23"
# the CSV's per-row footnote (`paper_corrected_note`)
NOTE_CORRECTED = (
    f"corrected by the authors after publication (commit {PAPER_CORRECTION_COMMIT}: query "
    "direct path W_E + W_pos[-1] instead of the unsound W_E + mean(W_pos))"
)
NOTE_UNAFFECTED = "unaffected by the authors' correction (never forms W_EP): published value"

# plot groups in the paper's order: brute force, cubic, the six sub-cubic groups by Table 1 row;
# then the groups of strategies new here (not in the paper), each strategy its own marker
NEW_GROUPS: tuple[str, ...] = tuple(dict.fromkeys(s.group for s in NEW_STRATEGIES.values()))
GROUP_ORDER: tuple[str, ...] = ("brute-force", "cubic", *TABLE1_ROW, *NEW_GROUPS)

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
    """Mean and population std of `values` (None, None when empty)."""
    if values.empty:
        return None, None
    return float(values.mean()), float(values.std(ddof=0))


def table1(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Table 1 of the paper (SPEC §6.11) as one dict per row, in the paper's order.

    For each row and seed the strategy with the highest bound among the row's set is taken;
    the row reports, over seeds, mean ± population std of the normalised bound and of the
    bound, mean FLOPs, mean log2 FLOPs, mean unexplained dimensions, the complexity label of the
    chosen strategies (the most frequent one; all in `complexities`), the number of seeds, the
    most frequently chosen strategy, and the paper's values as published and as corrected by the
    authors (`paper_fields`; None where the paper has none).
    """
    table: list[dict[str, Any]] = []
    for row in TABLE1_ORDER:
        best = best_per_seed(df[row_mask(df, row)])
        nb_mean, nb_std = _mean_std(best["normalized_bound"])
        b_mean, b_std = _mean_std(best["bound"])
        flops = best["flops"].astype(float)
        complexities = best["complexity"].value_counts()
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
                **paper_fields(PAPER_TABLE1.get(row)),
            }
        )
    return table


def paper_fields(paper: PaperValue | None) -> dict[str, Any]:
    """A Table 1 row's paper columns: published and corrected-by-the-authors values (None where
    the paper has no value) and `paper_corrected_note` (NOTE_CORRECTED, NOTE_UNAFFECTED or
    '', the CSV's footnote)."""
    fields: dict[str, Any] = {}
    for prefix, value in (
        ("paper", None if paper is None else (paper.mean, paper.std)),
        ("paper_corrected", None if paper is None else paper.corrected),
    ):
        of_bound = paper is not None and paper.of_bound
        fields[f"{prefix}_normalized_bound_mean"] = (
            None if value is None else 1.0 if of_bound else value[0]
        )
        fields[f"{prefix}_normalized_bound_std"] = None if value is None or of_bound else value[1]
        fields[f"{prefix}_bound_mean"] = value[0] if value and of_bound else None
        fields[f"{prefix}_bound_std"] = value[1] if value and of_bound else None
    fields["paper_corrected_note"] = (
        "" if paper is None else NOTE_UNAFFECTED if paper.corrected_is_published else NOTE_CORRECTED
    )
    return fields


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


def group_summary(df: pd.DataFrame, group: str, column: str = "group") -> str:
    """'mean ± std' over seeds of the best normalised bound within `group` (the rows whose
    `column`, "group" or "strategy", is `group`)."""
    best = df[df[column] == group].groupby("seed")["normalized_bound"].max()
    return pm_round(*_mean_std(best))
