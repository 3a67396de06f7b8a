"""Bounded memory: peak RSS independent of the weights' values.

Every command works in chunks whose size depends on the architecture only (docstrings of
accuracy.exact_accuracy, the strategies' verify, loss and noise). The worst cases are models
whose values push work onto the slowest path: paper-size models (v = 64, k = 4) with huge
weights (every input of exact accuracy decided on its own), with subnormal products, and
with near-uniform attention (`models.paper_size_worst_cases`). They run in a subprocess
whose peak RSS must stay under MAX_RSS. (`benchmarks/memory.py` runs every command on them
to the end, both modes, and reports time and peak memory.)
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from compact_proofs.model.transformer import ModelConfig
from compact_proofs.proofs import exhaustive as accuracy
from compact_proofs.proofs.exhaustive import exact_accuracy
from compact_proofs.proofs.registry import STRATEGIES

from models import random_model

pytestmark = pytest.mark.slow
MAX_RSS = 2 * 1024**3  # bytes, for v = 64, k = 4 (about 0.9 GB measured)
TESTS = Path(__file__).resolve().parent

SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    import torch
    sys.path.insert(0, sys.argv[1])
    from models import paper_size_worst_cases
    from compact_proofs.proofs.exhaustive import exact_accuracy
    from compact_proofs.analysis.noise import run_all
    from compact_proofs.proofs.registry import STRATEGIES
    from compact_proofs.proofs.runner import prove
    from compact_proofs.allocator import retain_freed_memory

    torch.set_num_threads(1)
    retain_freed_memory()  # as the CLI runs
    counts = {}
    for name, model in paper_size_worst_cases().items():
        if name == "huge weights":  # every input decided on its own by the slow path
            counts[name + ": exact accuracy"] = exact_accuracy(model).correct
            run_all(model, 2, 0)
        for strategy in list(STRATEGIES.values())[1:]:  # brute force is exact accuracy
            counts[name + ": " + strategy.id] = prove(model, strategy)[0].correct_count
        widest = {"top_r": 64, "window": 64}  # the payload's largest r and w
        sub = STRATEGIES["separable-subcubic"]
        counts[name + ": separable-subcubic, widest"] = sub.verify(model, widest).correct_count
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"peak": peak, "counts": counts}))
    """
)


def test_worst_case_models_at_paper_size_run_in_bounded_memory():
    """Exact accuracy of the huge-weight model (the case that once grew to 23 GB), the noise
    experiment on it, and every other strategy on all three worst cases (separable-subcubic
    also with its widest payload), in the default (rigorous) mode."""
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(TESTS)], capture_output=True, text=True, timeout=900
    )
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["peak"] < MAX_RSS, f"peak RSS {out['peak'] / 1e9:.2f} GB"
    assert len(out["counts"]) == 1 + 3 * len(STRATEGIES)


@pytest.mark.parametrize("rigorous", [True, False], ids=["default", "fast"])
def test_undecided_inputs_are_decided_in_batches(monkeypatch, rigorous):
    """The exact evaluator hands undecided inputs on in batches of at most BATCH_INPUTS as
    they arrive (never all at once), with the same count as one big batch."""
    model = random_model(ModelConfig(d_vocab=6, n_ctx=4, d_model=5, d_head=4), 3, scale=30.0)
    expected = exact_accuracy(model, rigorous=rigorous)
    sizes: list[int] = []
    original = accuracy.OpenInputs.flush

    def flush(self):
        sizes.append(self.n_pending)
        return original(self)

    monkeypatch.setattr(accuracy, "BATCH_INPUTS", 16)
    monkeypatch.setattr(accuracy.OpenInputs, "flush", flush)
    streamed = exact_accuracy(model, rigorous=rigorous)
    assert (streamed.correct, streamed.ties) == (expected.correct, expected.ties)
    assert len(sizes) > 3  # the model leaves many inputs open: several batches
    chunk = model.cfg.d_vocab ** (model.cfg.n_ctx - 1)  # one query's (prefix, token) pairs
    assert max(sizes) < 16 + chunk
