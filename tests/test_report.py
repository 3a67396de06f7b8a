"""The sweep report: Table 1, figures and index.html from a small, really computed results store."""

from __future__ import annotations

import base64
import json
import math
import re
import shutil
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import torch

from compact_proofs.cli import main
from compact_proofs.errors import CompactProofsError
from compact_proofs.model.file_format import save_model, weights_digest
from compact_proofs.model.training import TrainingRecipe, train
from compact_proofs.model.transformer import ModelConfig
from compact_proofs.pipeline import report as report_module
from compact_proofs.pipeline import results
from compact_proofs.pipeline.report import TABLE1_ORDER, build_report, pareto_frontier
from compact_proofs.pipeline.report import steps as report_steps
from compact_proofs.pipeline.sweep import ROWS
from compact_proofs.proofs.exhaustive import exact_accuracy
from compact_proofs.proofs.flops import log2
from compact_proofs.proofs.paths import path_matrices
from compact_proofs.proofs.registry import STRATEGIES
from compact_proofs.proofs.runner import prove
from compact_proofs.proofs.subcubic.config import SubcubicConfig, table1_rows
from compact_proofs.proofs.subcubic.strategy import SubcubicStrategy

SEEDS = (1, 2, 123)
CFG = ModelConfig(d_vocab=6, n_ctx=3, d_model=8, d_head=8)
# brute force, cubic and 22 sub-cubic configurations: two EU handlings (exact and low-rank) x
# every attention-error handling with mean+diff, plus the two exact ones without it; so every
# Table 1 row and every attention-error handling is represented
EU_HANDLINGS = ("max_diff_exact", "mean_query+max_diff")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _strategies() -> list:
    def wanted(c: SubcubicConfig) -> bool:
        if c.uses_mean_diff:
            return c.eu in EU_HANDLINGS
        return c.eu == "max_diff_exact" and c.error in (
            "max_diff_exact",
            "exact_EQKE+max_diff_exact",
        )

    subcubic = [s for s in STRATEGIES.values() if isinstance(s, SubcubicStrategy)]
    return (
        [STRATEGIES["brute-force"], STRATEGIES["cubic"]]
        + [s for s in subcubic if wanted(s.config)]
        + [STRATEGIES["separable-lite"], STRATEGIES["separable"]]
        + [STRATEGIES["separable-subcubic"]]
    )


def _seed_rows(results_dir: Path, seed: int) -> list[dict[str, Any]]:
    """Train a tiny model, save it in the store, run the strategies, compose full rows."""
    model, stats = train(CFG, seed, TrainingRecipe(steps=300))
    model_file = results.model_path(results_dir, seed)
    save_model(model, model_file)
    accuracy = exact_accuracy(model).accuracy
    sigma = torch.linalg.svdvals(path_matrices(model).EQKE)
    sigma1, sigma2 = float(sigma[0]), float(sigma[1])
    rows = []
    for strategy in _strategies():
        result, _ = prove(model, strategy)
        config = getattr(strategy, "config", None)
        rows.append(
            {
                "seed": seed,
                "strategy": result.strategy,
                "group": result.group,
                "table1_rows": ";".join(table1_rows(config)) if config else ROWS[result.strategy],
                "leading_complexity": result.leading_complexity,
                "complexity": result.complexity,
                "bound": result.bound,
                "normalized_bound": result.bound / accuracy,
                "correct_count": result.correct_count,
                "total": result.total,
                "flops": result.flops,
                "log2_flops": log2(result.flops),
                "unexplained_dims": result.unexplained_dims,
                "search_seconds": result.search_seconds,
                "verify_seconds": result.seconds,
                "rigorous": result.rigorous,
                "arithmetic": result.arithmetic,
                "exact_accuracy": accuracy,
                "train_loss": stats.train_loss,
                "train_accuracy": stats.train_accuracy,
                "eqke_sigma1": sigma1,
                "eqke_sigma2": sigma2,
                "eqke_sigma_ratio": sigma1 / sigma2,
                "eu_handling": config.eu if config else "",
                "attention_handling": config.attention if config else "",
                "attention_error_handling": config.error if config else "",
                "d_vocab": CFG.d_vocab,
                "n_ctx": CFG.n_ctx,
                "d_model": CFG.d_model,
                "model_path": model_file.relative_to(results_dir).as_posix(),
                "model_sha256": weights_digest(model),
            }
        )
    assert set(rows[0]) == set(results.COLUMNS)
    return rows


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    results_dir = tmp_path_factory.mktemp("sweep")
    rows = [row for seed in SEEDS for row in _seed_rows(results_dir, seed)]
    results.write_rows(results_dir / "results.csv", rows)
    return results_dir


@pytest.fixture(scope="module")
def report(store, tmp_path_factory) -> tuple[Path, dict[str, Any]]:
    out_dir = tmp_path_factory.mktemp("report")
    return out_dir, build_report(store, out_dir)


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links += [(tag, v) for k, v in attrs if k in ("src", "href") and v is not None]


def test_every_table_and_figure_file_exists_and_is_valid(report):
    out_dir, info = report
    names = {p.name for p in info["files"]}
    expected = {"table1.md", "table1.tex", "table1.csv", "index.html"}
    for stem in ("bound_vs_flops_all", "bound_vs_flops_frontier", "dims_vs_flops"):
        expected |= {f"{stem}.png", f"{stem}.svg", f"{stem}.pdf"}
    expected |= {f"bound_vs_sigma_ratio.{e}" for e in ("png", "svg", "pdf")}
    expected |= {"seed-123-path-matrices.png", "seed-123-path-matrices.svg"}
    expected |= {"frontier.md", "frontier.csv", "noise.md", "seed-123-noise.png"}
    expected |= {"seed-123-noise.svg", "loss.md"}
    expected |= {f"seed-123-loss-{w}.{e}" for w in ("cubic", "subcubic") for e in ("png", "svg")}
    assert names == expected
    assert info["notes"] == [] and info["figure_seed"] == 123
    assert not list(out_dir.glob(".*.tmp"))  # no temporary files left behind
    for path in info["files"]:
        assert path.is_file() and path.parent == out_dir and path.stat().st_size > 0
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == PNG_SIGNATURE
            image = matplotlib.image.imread(path)
            assert image.ndim == 3 and min(image.shape[:2]) > 100
        elif path.suffix == ".pdf":
            assert path.read_bytes()[:4] == b"%PDF"
        elif path.suffix == ".svg":
            assert ET.parse(path).getroot().tag.endswith("svg")
    md = (out_dir / "table1.md").read_text()
    tex = (out_dir / "table1.tex").read_text()
    assert all(row in md for row in TABLE1_ORDER)
    assert r"\begin{tabular}" in tex and r"\end{tabular}" in tex and r"Low-rank QK \&" in tex


def test_index_html_links_only_existing_files(report):
    out_dir, info = report
    parser = _Links()
    parser.feed((out_dir / "index.html").read_text())
    links = [v for tag, v in parser.links if tag == "a"]
    assert links
    for target in links:
        assert "://" not in target and not target.startswith("/")
        assert (out_dir / target).is_file(), target
    linked = set(links)
    assert {"table1.md", "table1.tex", "table1.csv"} <= linked
    assert {p.name for p in info["files"] if p.suffix in (".png", ".svg", ".pdf")} <= linked


def test_index_html_alone_is_the_whole_report(report, tmp_path):
    """index.html copied alone still shows every figure: each <img> is a data URI holding the
    figure's PNG, no src= names a file, and every figure of the run is there."""
    out_dir, info = report
    alone = tmp_path / "index.html"
    alone.write_bytes((out_dir / "index.html").read_bytes())  # nothing else beside it
    page = alone.read_text()
    parser = _Links()
    parser.feed(page)
    sources = [v for tag, v in parser.links if tag != "a"]  # every src= (img, script, ...)
    assert sources and all(v.startswith("data:") for v in sources), sources
    assert "<script" not in page and "url(" not in page  # no other way to fetch a file
    prefix = "data:image/png;base64,"
    images = [base64.b64decode(v.removeprefix(prefix)) for v in sources]
    assert all(v.startswith(prefix) for v in sources)
    assert images == [files[0].read_bytes() for files in info["figures"].values()]
    assert all(image[:8] == PNG_SIGNATURE for image in images)
    for stem in info["figures"]:
        assert f'<figure id="{stem}">' in page
    assert len(info["figures"]) == 8
    assert alone.stat().st_size < 5_000_000


def test_table1_matches_a_direct_pandas_computation(store, report):
    out_dir, info = report
    df = pd.read_csv(store / "results.csv", dtype={"table1_rows": str}).fillna({"table1_rows": ""})
    table = {row["row"]: row for row in info["table1"]}
    assert list(table) == list(TABLE1_ORDER)
    for name in ("Cubic", "Sub-cubic", "Low-rank QK", "SVD only", "Quadratic QK & EU"):
        in_row = df["table1_rows"].str.split(";").map(lambda rows, name=name: name in rows)
        best = df[in_row].groupby("seed")["normalized_bound"].max()
        assert len(best) == len(SEEDS) == table[name]["n_seeds"]
        assert table[name]["normalized_bound_mean"] == pytest.approx(best.mean(), abs=1e-12)
        assert table[name]["normalized_bound_std"] == pytest.approx(best.std(ddof=0), abs=1e-12)
        chosen = df[in_row].loc[df[in_row].groupby("seed")["bound"].idxmax()]
        assert table[name]["unexplained_dims_mean"] == pytest.approx(
            chosen["unexplained_dims"].mean()
        )
    assert table["Brute force"]["normalized_bound_mean"] == pytest.approx(1.0)
    assert table["Brute force"]["paper_bound_mean"] == 0.9992
    assert table["Cubic"]["paper_normalized_bound_mean"] == 0.9539
    assert table["SVD only"]["paper_normalized_bound_mean"] is None
    # the CSV file holds the same numbers
    csv = pd.read_csv(out_dir / "table1.csv").set_index("row")
    for name, row in table.items():
        assert math.isclose(csv.loc[name, "normalized_bound_mean"], row["normalized_bound_mean"])
        assert math.isclose(csv.loc[name, "flops_mean"], row["flops_mean"])


PAPER_VALUES = {  # row: (published, corrected by the authors), mean ± std of the normalised bound
    "Cubic": ((0.9539, 0.0080), (0.9539, 0.0080)),
    "Sub-cubic": ((0.821, 0.013), (0.700, 0.036)),
    "Low-rank QK": ((0.795, 0.014), (0.675, 0.035)),
    "Low-rank EU": ((0.653, 0.060), (0.633, 0.062)),
    "Low-rank QK & EU": ((0.628, 0.060), (0.610, 0.060)),
    "Quadratic QK": ((0.390, 0.032), (0.316, 0.037)),
    "Quadratic QK & EU": ((0.286, 0.036), (0.283, 0.037)),
}


def test_table1_shows_the_papers_published_and_corrected_values(report):
    """Every format of Table 1 has both paper columns (published; corrected by the authors
    after their W_EP fix) and the footnote; brute force's published value is repeated
    (unaffected); rows not in the paper show — in both."""
    out_dir, info = report
    table = {row["row"]: row for row in info["table1"]}
    for name, ((mean, std), (c_mean, c_std)) in PAPER_VALUES.items():
        row = table[name]
        assert (row["paper_normalized_bound_mean"], row["paper_normalized_bound_std"]) == (
            mean,
            std,
        )
        assert (row["paper_corrected_normalized_bound_mean"],
                row["paper_corrected_normalized_bound_std"]) == (c_mean, c_std)  # fmt: skip
        assert row["paper_corrected_note"].startswith("corrected by the authors")
    brute = table["Brute force"]
    assert brute["paper_corrected_bound_mean"] == brute["paper_bound_mean"] == 0.9992
    assert brute["paper_corrected_note"].startswith("unaffected")
    for name in ("without mean+diff", "SVD only", "Separable (new)"):
        assert table[name]["paper_corrected_normalized_bound_mean"] is None
        assert table[name]["paper_corrected_note"] == ""
    md = (out_dir / "table1.md").read_text()
    assert "| Paper, published (normalised) | Paper, corrected by the authors* (normalised) |" in md
    sub_cubic = next(line for line in md.splitlines() if line.startswith("| Sub-cubic |"))
    assert sub_cubic.endswith("| 0.821 ± 0.013 | 0.700 ± 0.036 |")
    assert "| 1 (bound 0.9992 ± 0.0015) | 1 (bound 0.9992 ± 0.0015) |" in md
    assert "| — | — |" in md
    assert "`W_E + mean(W_pos)`" in md and "bcf5c23" in md and "\\* The paper's" in md
    tex = (out_dir / "table1.tex").read_text()
    spec = re.search(r"\\begin\{tabular\}\{(\w+)\}", tex)[1]
    rows = [line for line in tex.splitlines() if line.endswith(r"\\")]
    assert len(rows) == 1 + len(TABLE1_ORDER)
    assert all(len(re.findall(r"(?<!\\)&", line)) == len(spec) - 1 for line in rows)
    assert r"0.700 $\pm$ 0.036" in tex and "bcf5c23" in tex and r"W\_E + mean(W\_pos)" in tex
    csv = pd.read_csv(out_dir / "table1.csv").set_index("row")
    assert csv.loc["Sub-cubic", "paper_corrected_normalized_bound_mean"] == 0.700
    assert csv.loc["Low-rank QK", "paper_normalized_bound_mean"] == 0.795
    assert csv.loc["Brute force", "paper_corrected_note"].startswith("unaffected")
    assert "bcf5c23" in csv.loc["Sub-cubic", "paper_corrected_note"]
    page = (out_dir / "index.html").read_text()
    assert "<th>Paper, corrected by the authors* (normalised)</th>" in page
    assert "<td>0.700 ± 0.036</td>" in page and "Fix computation of W_EP" in page


def test_missing_results_raise_a_one_line_error(tmp_path):
    with pytest.raises(CompactProofsError, match=r"results\.csv not found") as excinfo:
        build_report(tmp_path / "nothing", tmp_path / "out")
    assert "\n" not in str(excinfo.value)
    assert not (tmp_path / "out").exists()


def test_duplicate_rows_are_rejected(store, tmp_path):
    df = pd.read_csv(store / "results.csv")
    (tmp_path / "sweep").mkdir()
    pd.concat([df, df.head(1)]).to_csv(tmp_path / "sweep" / "results.csv", index=False)
    with pytest.raises(CompactProofsError, match="duplicate"):
        build_report(tmp_path / "sweep", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unknown_seed_is_rejected_before_writing(store, tmp_path):
    with pytest.raises(CompactProofsError, match="seed 999 is not in the results"):
        build_report(store, tmp_path / "out", seed=999)
    assert not (tmp_path / "out").exists()


def test_seed_figure_skipped_with_a_note_when_the_model_is_missing(store, tmp_path, monkeypatch):
    def save_stub(fig, out_dir: Path, stem: str, formats) -> list[Path]:
        """Rendering is tested above; here only which files the report decides to write."""
        paths = [out_dir / f"{stem}.{fmt}" for fmt in formats]
        for path in paths:
            path.write_bytes(b"stub")
        return paths

    monkeypatch.setattr(report_steps, "save_figure", save_stub)  # where build_report looks it up
    df = pd.read_csv(store / "results.csv")
    (tmp_path / "sweep").mkdir()
    df[df["seed"] == 2].to_csv(tmp_path / "sweep" / "results.csv", index=False)  # no models/
    info = build_report(tmp_path / "sweep", tmp_path / "out")
    assert info["figure_seed"] == 2 and len(info["notes"]) == 3  # path matrices, noise, loss
    assert all("not found" in note for note in info["notes"])
    assert info["noise"] == []
    assert "bound_vs_flops_all" in info["figures"]
    assert not list((tmp_path / "out").glob("seed-*"))
    assert "not found" in (tmp_path / "out" / "index.html").read_text()


def test_pareto_frontier_is_per_seed_and_strict():
    df = pd.DataFrame(
        {
            "seed": [1, 1, 1, 1, 2],
            "normalized_bound": [0.9, 0.5, 0.5, 0.4, 0.1],
            "flops": [100, 10, 100, 10, 1000],
        }
    )
    # equal FLOPs or equal bound never dominate; the other seed's rows are irrelevant
    assert pareto_frontier(df).tolist() == [True, True, True, True, True]
    df.loc[2, "normalized_bound"] = 0.45  # now row 1 has higher bound and fewer FLOPs
    assert pareto_frontier(df).tolist() == [True, True, False, True, True]


def test_frontier_movement_compares_each_seed_with_its_own_paper_strategies():
    rows = [  # seed, strategy, group, normalised bound, FLOPs
        (1, "brute-force", "brute-force", 1.0, 2**30),
        (1, "cubic", "cubic", 0.95, 2**25),
        (1, "sub", "Sub-cubic", 0.80, 2**21),
        (1, "new", "separable", 0.97, 2**22),
        (2, "brute-force", "brute-force", 1.0, 2**30),
        (2, "cubic", "cubic", 0.99, 2**25),
        (2, "sub", "Sub-cubic", 0.70, 2**23),
        (2, "new", "separable", 0.90, 2**20),
    ]
    df = pd.DataFrame(rows, columns=["seed", "strategy", "group", "normalized_bound", "flops"])
    (row,) = report_module.frontier_movement(df)
    assert row["strategy"] == "new" and row["n_seeds"] == 2
    assert row["normalized_bound_mean"] == pytest.approx(0.935)
    # seed 1: best paper bound within 2^22 FLOPs is 0.80; seed 2: nothing that cheap (0)
    assert row["paper_bound_at_flops_mean"] == pytest.approx(0.40)
    assert row["bound_gain_mean"] == pytest.approx(0.535)
    # fewest paper FLOPs reaching the bound: seed 1 only brute force (2^30, 8 doublings more),
    # seed 2 cubic (2^25, 5 doublings more): geometric mean 2^6.5
    assert row["paper_log2_flops_at_bound_mean"] == pytest.approx(27.5)
    assert row["flops_ratio_geomean"] == pytest.approx(2**6.5)
    assert "| new |" in report_module.frontier_markdown([row])


def test_the_report_shows_the_noise_experiment_and_frontier(report):
    out_dir, info = report
    assert len(info["noise"]) == 5 and all(len(r["random_errors"]) == 10 for r in info["noise"])
    assert [r["strategy"] for r in info["frontier"]] == [
        "separable-lite",
        "separable",
        "separable-subcubic",
    ]
    index = (out_dir / "index.html").read_text()
    assert "Structureless noise (seed 123)" in index and "Frontier movement" in index
    assert "seed-123-noise.png" in index


def test_the_report_shows_where_the_bound_is_lost(report):
    out_dir, info = report
    assert [lb["strategy"] for lb in info["loss"]] == [
        "cubic",
        "EUPU-mean-query+max-diff--attn-mean-query+diff--attn-err-max-diff",
    ]
    for lb in info["loss"]:
        assert sum(r["inputs"] for r in lb["rows"]) == lb["exact_correct"] - lb["certified"]
    index = (out_dir / "index.html").read_text()
    assert "Where the bound is lost: cubic (seed 123)" in index
    assert "lost: value-path pessimisation" in index


def test_every_number_says_which_arithmetic_produced_it(store, report, tmp_path):
    """The fixture's rows come from the default (rigorous) verification: Table 1 and
    index.html say so; a results store written in float64 (--fast, or before the column
    existed) is reported as not proofs."""
    out_dir, info = report
    assert {row["arithmetic"] for row in info["table1"] if row["n_seeds"]} == {"rigorous"}
    assert "| Arithmetic |" in (out_dir / "table1.md").read_text()
    page = (out_dir / "index.html").read_text()
    assert "Every certified bound of the sweep in this report is a proof" in page
    assert "Every number in this report is a proof" not in page  # counterfactuals exist
    old = tmp_path / "old"
    old.mkdir()
    df = pd.read_csv(store / "results.csv").drop(columns=["rigorous", "arithmetic"])
    df.to_csv(old / "results.csv", index=False)
    table = report_module.table1(report_module.load_results(old))
    assert {row["arithmetic"] for row in table if row["n_seeds"]} == {"float64"}
    assert "NOT proofs" in report_module.mode_sentence(report_module.load_results(old))


def test_report_json_from_the_command_line(store, tmp_path, monkeypatch, capsys):
    """`compact-proofs report --json` prints Table 1 and the files written (paths as text)."""
    monkeypatch.setattr(report_steps, "save_figure", _stub_figure)
    assert main(["report", str(store), "--out", str(tmp_path / "out"), "--json",
                 "--noise-draws", "0"]) == 0  # fmt: skip
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == {"table1", "files"} and printed["table1"]
    assert all(Path(f).exists() for f in _flatten(printed["files"]))


def _stub_figure(fig, out_dir: Path, stem: str, formats) -> list[Path]:
    paths = [out_dir / f"{stem}.{fmt}" for fmt in formats]
    for path in paths:
        path.write_bytes(b"stub")
    return paths


def _flatten(files: Any) -> list[str]:
    if isinstance(files, dict):
        return [f for v in files.values() for f in _flatten(v)]
    if isinstance(files, list):
        return [f for v in files for f in _flatten(v)]
    return [files]


def _paper_like_rows() -> pd.DataFrame:
    """12 seeds of paper-size-like FLOPs: brute force 2^39.7, cubic 2^25.4, sub-cubic ~2^21.5,
    separable-lite 2^21.9 and separable 2^24.6."""
    rows = []
    for seed in range(12):
        for strategy, group, bound, log2_flops in (
            ("brute-force", "brute-force", 1.0, 39.7),
            ("cubic", "cubic", 0.95, 25.4),
            ("sub-a", "subcubic", 0.7 + seed / 100, 21.5),
            ("sub-b", "subcubic (direct-quadratic)", 0.6, 21.3),
            ("separable-lite", "separable", 0.96, 21.9),
            ("separable", "separable", 0.99, 24.6),
            ("separable-subcubic", "separable-subcubic", 0.955, 21.4),
        ):
            rows.append((seed, strategy, group, bound, 2.0**log2_flops, 12800))
    columns = ["seed", "strategy", "group", "normalized_bound", "flops", "unexplained_dims"]
    return pd.DataFrame(rows, columns=columns)


@pytest.mark.parametrize("frontier_only", [False, True])
def test_bound_vs_flops_separates_the_new_strategies_and_zooms(frontier_only):
    df = _paper_like_rows()
    series = {s.name: s for s in report_module.plot_series(df)}
    lite, full = series["separable-lite"], series["separable"]
    assert lite.new and full.new and lite.marker != full.marker and lite.color != full.color
    assert {s.marker for s in series.values() if not s.new} == {"o"}
    fig = report_module.plot_bound_vs_flops(df, frontier_only)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert sum(label.startswith("separable-lite (new) (rel acc: 0.9600") for label in labels) == 1
    assert sum(label.startswith("separable (new) (rel acc: 0.9900") for label in labels) == 1
    sub = series["separable-subcubic"]
    assert sub.new and sub.marker not in (lite.marker, full.marker)
    new_label = "separable-subcubic (new) (rel acc: 0.955"
    assert sum(label.startswith(new_label) for label in labels) == 1
    full_axes, zoom = fig.axes
    assert zoom.get_xlim() == pytest.approx((2.0**20, 2.0**26))  # every row but brute force
    assert full_axes.get_xlim()[1] > 2.0**39.7


def test_sigma_ratio_fits_only_handlings_with_enough_spread_points():
    rng = np.random.default_rng(0)
    parts = []
    for handling, x in (
        ("spread", np.linspace(5, 40, 12)),  # fitted
        ("few", np.linspace(5, 40, 9)),  # < MIN_FIT_POINTS
        ("clustered", np.full(12, 20.0) + np.arange(12) * 0.01),  # range < 10% of median
    ):
        y = 0.3 + 0.01 * x + rng.normal(0, 0.01, len(x))
        parts.append(pd.DataFrame({"attention_error_handling": handling, "eqke_sigma_ratio": x,
                                   "normalized_bound": y}))  # fmt: skip
    assert report_module.MIN_FIT_POINTS == 10
    fig, fits = report_module.plot_bound_vs_sigma_ratio(pd.concat(parts, ignore_index=True))
    assert [f["handling"] for f in fits] == ["spread"]
    assert fits[0]["n"] == 12 and fits[0]["slope"] == pytest.approx(0.01, abs=2e-3)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any(label.startswith("few (n=9, no fit: < 10 points") for label in labels)
    assert any("clustered (n=12, no fit: σ₁/σ₂ range too narrow" in label for label in labels)
    assert len(fig.axes[0].get_lines()) == 1  # one fit line
    assert report_module.fit_refusal(np.array([1.0, 1.0] * 6)) == "no fit: < 5 distinct σ₁/σ₂"


def test_saved_figures_keep_everything_inside_their_edges(tmp_path):
    """save_figure grows the canvas to everything drawn: a label placed far outside the axes
    still lies within the saved PNG, with a white margin all round."""
    widths = []
    for stem, label in (("plain", False), ("label", True)):
        fig = report_module.plot_bound_vs_flops(_paper_like_rows(), frontier_only=False)
        if label:
            fig.text(-0.15, 0.5, "label left of the figure")  # outside any layout
        (png,) = report_module.save_figure(fig, tmp_path, stem, ["png"])
        image = matplotlib.image.imread(png)
        edges = (image[:5], image[-5:], image[:, :5], image[:, -5:])
        border = np.concatenate([edge.reshape(-1, image.shape[2]) for edge in edges])
        assert np.all(border[:, :3] == 1.0)  # nothing touches the edge
        widths.append(image.shape[1])
    assert widths[1] > widths[0] + 200  # grown to the left to hold the label


def _asymptotic_records() -> dict:
    rows = []
    for v in (64, 128, 256):
        for seed in (1, 2):
            for strategy, bound, flops in (("cubic", 0.9, v**3), ("sub", 0.88, v**2)):
                rows.append({"d_vocab": v, "strategy": strategy, "label": strategy, "seed": seed,
                             "bound": bound, "flops": float(flops), "search_seconds": 0.0,
                             "seconds": 1.0})  # fmt: skip
    return {"machine": "test", "n_ctx": 4, "rows": rows,
            "brute_force_flops": {str(v): float(v**5) for v in (64, 128, 256)},
            "estimate": {str(v): 0.99 for v in (64, 128, 256)}}  # fmt: skip


def test_asymptotic_figure_shows_fitted_slopes():
    fig = report_module.plot_asymptotic(_asymptotic_records())
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == [
        "brute force (slope 5.00)",
        "cubic (slope 3.00)",
        "sub (slope 2.00)",
    ]


def test_asymptotic_figure_only_with_the_benchmark_json(store, report, tmp_path):
    _, info = report
    assert "asymptotic" not in info["figures"]
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    (copy / "asymptotic.json").write_text(json.dumps(_asymptotic_records()))
    info = build_report(copy, tmp_path / "out", noise_draws=0, loss_strategies=())
    assert [p.suffix for p in info["figures"]["asymptotic"]] == [".png", ".svg", ".pdf"]
    assert "asymptotic.png" in (tmp_path / "out" / "index.html").read_text()
