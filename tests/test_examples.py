"""The example (examples/max_of_4.py, mirrored by max_of_4.ipynb) runs end to end, and the
notebook is exactly what scripts/build_example_notebook.py makes of the script."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _builder():
    spec = importlib.util.spec_from_file_location(
        "build_nb", ROOT / "scripts/build_example_notebook.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_notebook_mirrors_the_script():
    script = (ROOT / "examples/max_of_4.py").read_text()
    stored = (ROOT / "examples/max_of_4.ipynb").read_text()
    assert stored == _builder().notebook(script), "run scripts/build_example_notebook.py"
    code = [c for c in json.loads(stored)["cells"] if c["cell_type"] == "code"]
    assert len(code) >= 5


@pytest.mark.slow
def test_example_script_runs(tmp_path):
    """The whole example, with a short training run (the certificates and figure appear)."""
    out = tmp_path / "example"
    run = subprocess.run(
        [sys.executable, str(ROOT / "examples/max_of_4.py"), "--steps", "150", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "certificates verified" in run.stdout
    for name in ("model.safetensors", "certificates.json", "frontier.png"):
        assert (out / name).stat().st_size > 0, name
