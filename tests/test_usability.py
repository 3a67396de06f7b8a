"""What a user meets first: a light start-up, deliberate thread counts, usage errors with exit
status 2, group names as Table 1 shows them, honest estimate keys, the notebook API, and the
results store as a typed DataFrame and as Parquet."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

import compact_proofs as cp
from compact_proofs.cli import common, main
from compact_proofs.errors import UnknownStrategyError
from compact_proofs.model.transformer import ModelConfig, build_model
from compact_proofs.pipeline import results
from compact_proofs.proofs.registry import resolve_strategies
from compact_proofs.proofs.subcubic.config import table1_rows

SMALL = ModelConfig(d_vocab=5, n_ctx=3, d_model=8, d_head=8, n_heads=1)


@pytest.mark.parametrize("argv", [["--help"], ["strategies"], ["prove", "--help"]])
def test_help_and_strategies_do_not_import_torch_or_scipy(argv):
    code = (
        "import sys; from compact_proofs.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'scipy', 'pandas', 'matplotlib') if m in sys.modules))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = run.stdout.strip().splitlines()[-1]
    expected = "[]" if argv != ["strategies"] else "['torch']"  # strategies describes them
    assert loaded == expected, loaded


def test_threads_come_from_the_flag_then_the_environment(monkeypatch):
    import torch

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert common.use_threads(None) == 1 and torch.get_num_threads() == 1
        assert common.use_threads(2) == 2 and os.environ["OMP_NUM_THREADS"] == "2"
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert 1 <= common.use_threads(None) <= (os.cpu_count() or 1)
    finally:
        torch.set_num_threads(before)


def test_idle_cores_follow_the_load(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    for load, want in ((0.1, 4), (1.2, 3), (3.9, 1), (9.0, 1), (None, 4)):
        monkeypatch.setattr(common, "busy_cores", lambda load=load: load)
        assert common.idle_cores() == want


def test_busy_cores_sees_a_busy_process():
    """A process spinning on one core is seen within the sampling window (Linux)."""
    if not os.path.exists("/proc/stat"):
        pytest.skip("no /proc/stat: the load average is used instead")
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        import time

        time.sleep(0.3)
        assert common.busy_cores(window=0.5) >= 0.6
    finally:
        spinner.kill()
        spinner.wait()


@pytest.mark.parametrize(
    "argv",
    [
        ["accuracy", "m.safetensors", "--estimate", "--confidence", "1.5"],
        ["accuracy", "m.safetensors", "--estimate", "--confidence", "zero"],
        ["prove", "--threads", "0"],
    ],
)
def test_bad_values_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1


def test_group_accepts_table1_row_names_case_insensitively():
    by_row = resolve_strategies("group:Low-rank QK")
    assert by_row == resolve_strategies("group:low-rank qk")
    assert by_row and all("Low-rank QK" in table1_rows(s.config) for s in by_row)
    assert resolve_strategies("group:SVD only") and resolve_strategies("group:separable")
    with pytest.raises(UnknownStrategyError, match=r"Table 1 rows: .*Low-rank QK"):
        resolve_strategies("group:Low-rank XY")


def test_stratified_json_names_what_was_sampled(tmp_path, capsys):
    path = tmp_path / "m.safetensors"
    cp.save_model(build_model(SMALL, seed=3), path)
    argv = ["accuracy", str(path), "--estimate", "--method", "stratified", "--samples", "50"]
    assert main([*argv, "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert "correct" not in record
    assert (
        record["population"] == record["total"] - record["certified"] == 5**3 - record["certified"]
    )
    assert 0 <= record["sampled_correct"] <= record["samples"]


def test_notebook_api_proves_verifies_and_checks(tmp_path):
    path = tmp_path / "m.safetensors"
    cp.save_model(build_model(SMALL, seed=4), path)
    proofs = cp.prove(path, "cubic,separable-lite")
    frame = proofs.frame()
    assert list(frame["strategy"]) == ["cubic", "separable-lite"] and frame["rigorous"].all()
    proofs.save(tmp_path / "c.json")
    verified = cp.verify(cp.load_model(path), tmp_path / "c.json")
    checked = cp.check(path, tmp_path / "c.json")
    assert [r.correct_count for r in verified] == list(frame["correct_count"])
    assert [r.correct_count for r in checked] == list(frame["correct_count"])
    assert proofs["cubic"].bound == frame["bound"][0]
    assert set(cp.strategies()["strategy"]) >= {"cubic", "separable"}


def test_results_store_is_a_typed_frame_and_parquet(tmp_path):
    pytest.importorskip("pyarrow", reason="Parquet needs pyarrow: pip install -e '.[parquet]'")
    rows = [
        {"seed": s, "strategy": "cubic", "bound": 0.5 + s / 10, "correct_count": s, "total": 9,
         "flops": 2**40 + s, "rigorous": s % 2 == 0, "arithmetic": "ball"}
        for s in (1, 2, 3)
    ]  # fmt: skip
    results.write_rows(results.rows_path(tmp_path, 1), rows)
    results.consolidate(tmp_path)
    from_parquet = pd.read_parquet(tmp_path / "results.parquet")
    typed = cp.results_frame(tmp_path)
    pd.testing.assert_frame_equal(from_parquet, typed)
    assert list(typed.columns) == list(results.COLUMNS)
    assert typed["flops"].tolist() == [2**40 + 1, 2**40 + 2, 2**40 + 3]  # exact integers
    as_csv = pd.read_csv(tmp_path / "results.csv")
    assert as_csv["bound"].tolist() == typed["bound"].tolist()


def test_no_stale_parquet_without_pyarrow(tmp_path, monkeypatch):
    stale = tmp_path / "results.parquet"
    stale.write_bytes(b"old")
    monkeypatch.setattr(results.importlib.util, "find_spec", lambda name: None)
    assert results.write_parquet(stale, []) is False
    assert not stale.exists()


def test_freed_memory_is_retained_where_the_c_library_allows():
    """The CLI's allocator setting: accepted by glibc (both thresholds), a no-op elsewhere."""
    import platform

    from compact_proofs.allocator import retain_freed_memory

    assert retain_freed_memory() is (platform.libc_ver()[0] == "glibc")
    assert retain_freed_memory() is retain_freed_memory()  # once per process
