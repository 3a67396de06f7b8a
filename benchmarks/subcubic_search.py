"""Old (linear scan) vs new sub-cubic min-gap search: seconds per model over all 100
configurations, the speed-up, and whether the gaps are identical.

    .venv/bin/python benchmarks/subcubic_search.py [--threads N]

Each configuration is searched by both, interleaved (old, new) in the same process; the
new search's caches are cleared before each model, so its first configurations pay for the
shared terms as a lone search would."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from compact_proofs.model.file_format import bundled_model, load_model
from compact_proofs.proofs.subcubic import search
from compact_proofs.proofs.subcubic.config import ALL_CONFIGS
from compact_proofs.proofs.subcubic.decompose import weights64

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"


def _models():
    yield "bundled", bundled_model().model
    for path in sorted(FIXTURES.glob("*.safetensors")):
        yield path.stem, load_model(path).model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    torch.set_num_threads(parser.parse_args().threads)
    print(f"{'model':40s} {'old s':>8s} {'new s':>8s} {'speed-up':>9s} identical")
    total_old = total_new = 0.0
    for name, model in _models():
        w = weights64(model)
        dirs = search.find_directions(w)
        search._SHARED.clear()
        search._TERMS.clear()
        old = new = 0.0
        same = 0
        for cfg in ALL_CONFIGS:
            t0 = time.perf_counter()
            a = search._find_min_gaps_linear(w, dirs, cfg)
            t1 = time.perf_counter()
            b = search.find_min_gaps(w, dirs, cfg)
            t2 = time.perf_counter()
            old, new = old + t1 - t0, new + t2 - t1
            same += bool(torch.equal(a, b))
        total_old, total_new = total_old + old, total_new + new
        print(f"{name:40s} {old:8.2f} {new:8.2f} {old / new:8.1f}x {same}/{len(ALL_CONFIGS)}")
    print(f"{'all':40s} {total_old:8.2f} {total_new:8.2f} {total_old / total_new:8.1f}x")


if __name__ == "__main__":
    main()
