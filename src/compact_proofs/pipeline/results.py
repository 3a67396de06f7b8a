"""The results store of a sweep: one CSV row per (seed, strategy), crash-safe.

Layout of a results directory:

    sweep.json               what the sweep computes (seeds, strategies, architecture, recipe)
    models/seed-S.safetensors  trained models (reused when present)
    rows/seed-S.csv          all rows of one seed, written atomically when the seed is done
    results.csv              every row of every finished seed (rebuilt atomically)
    results.parquet          the same rows, typed, where pyarrow is installed (the `parquet`
                             extra: `pip install -e '.[parquet]'`); removed where it is not,
                             so it is never stale

A seed is done iff its rows file exists; files are only ever created by an atomic rename, so a
sweep killed at any moment (even with SIGKILL) leaves no half-written row and resumes by
recomputing exactly the seeds without a rows file. Load with `pandas.read_csv` or
`pandas.read_parquet`, or as typed DataFrame with `results_frame`.
"""

from __future__ import annotations

import csv
import importlib.util
import io
from pathlib import Path
from typing import Any

import pandas as pd

from compact_proofs.model.file_format import atomic_write

COLUMNS: tuple[str, ...] = (
    "seed",  # top-level training seed
    "strategy",  # strategy id
    "group",  # plot group (brute-force, cubic, or a sub-cubic group)
    "table1_rows",  # ';'-separated Table 1 rows whose set contains the strategy
    "leading_complexity",  # brute-force, cubic, subcubic, vocab-model-squared, almost-quadratic
    "complexity",  # asymptotic cost of verification
    "bound",  # certified lower bound on the accuracy (correct_count / total)
    "normalized_bound",  # bound / exact accuracy
    "correct_count",
    "total",
    "flops",  # proof length: FLOPs of verification
    "log2_flops",
    "unexplained_dims",
    "search_seconds",
    "verify_seconds",
    "rigorous",  # True: a proof in exact real arithmetic; False: --fast float64, not a proof
    "arithmetic",  # what decided it: ball, interval or float64
    "exact_accuracy",  # per-model diagnostics, repeated on each of its rows
    "train_loss",
    "train_accuracy",
    "eqke_sigma1",  # singular values of EQKE_bar
    "eqke_sigma2",
    "eqke_sigma_ratio",
    "eu_handling",  # sub-cubic configuration fields (empty otherwise)
    "attention_handling",
    "attention_error_handling",
    "d_vocab",
    "n_ctx",
    "d_model",
    "model_path",  # relative to the results directory
    "model_sha256",
)
INT_COLUMNS = frozenset(
    {"seed", "correct_count", "total", "flops", "unexplained_dims", "d_vocab", "n_ctx", "d_model"}
)
FLOAT_COLUMNS = frozenset(
    {
        "bound",
        "normalized_bound",
        "log2_flops",
        "search_seconds",
        "verify_seconds",
        "exact_accuracy",
        "train_loss",
        "train_accuracy",
        "eqke_sigma1",
        "eqke_sigma2",
        "eqke_sigma_ratio",
    }
)


def rows_path(results_dir: Path, seed: int) -> Path:
    return results_dir / "rows" / f"seed-{seed}.csv"


def model_path(results_dir: Path, seed: int) -> Path:
    return results_dir / "models" / f"seed-{seed}.safetensors"


def _to_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c, "") for c in COLUMNS})
    return buffer.getvalue()


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write rows (dicts keyed by COLUMNS) as one CSV file, atomically."""
    text = _to_csv(rows)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of one CSV file with ints, floats and booleans parsed. Rows written before the
    `rigorous` column existed were float64 verifications: they read as rigorous = False."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key in INT_COLUMNS & row.keys():
            row[key] = int(row[key]) if row[key] != "" else None
        for key in FLOAT_COLUMNS & row.keys():
            row[key] = float(row[key]) if row[key] != "" else None
        row["rigorous"] = row.get("rigorous") == "True"
        row["arithmetic"] = row.get("arithmetic") or "float64"
    return rows


def done_seeds(results_dir: Path) -> set[int]:
    """Seeds whose rows are stored."""
    folder = results_dir / "rows"
    if not folder.is_dir():
        return set()
    return {int(p.stem.removeprefix("seed-")) for p in folder.glob("seed-*.csv")}


def consolidate(results_dir: Path) -> Path:
    """Rebuild results.csv (and results.parquet) from every stored seed, sorted by seed, then
    strategy order."""
    rows: list[dict[str, Any]] = []
    for seed in sorted(done_seeds(results_dir)):
        rows.extend(read_rows(rows_path(results_dir, seed)))
    out = results_dir / "results.csv"
    write_rows(out, rows)
    write_parquet(results_dir / "results.parquet", rows)
    return out


def frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The rows as a DataFrame: one column per COLUMNS entry, in that order, typed (nullable
    integers, floats, booleans for `rigorous`, strings)."""
    df = pd.DataFrame([{c: row.get(c) for c in COLUMNS} for row in rows], columns=list(COLUMNS))
    for column in COLUMNS:
        if column in INT_COLUMNS:
            df[column] = df[column].astype("Int64")
        elif column in FLOAT_COLUMNS:
            df[column] = df[column].astype("float64")
        elif column == "rigorous":
            df[column] = df[column].astype("bool")
        else:
            df[column] = df[column].astype("string")
    return df


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> bool:
    """Write `frame(rows)` as Parquet, atomically, where pyarrow is installed; elsewhere
    remove `path` (a stale copy must not outlive the CSV). Returns whether it was written."""
    if importlib.util.find_spec("pyarrow") is None:
        path.unlink(missing_ok=True)
        return False
    df = frame(rows)
    atomic_write(path, lambda tmp: df.to_parquet(tmp, engine="pyarrow", index=False))
    return True
