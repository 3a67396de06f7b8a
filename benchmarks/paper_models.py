"""Shared driver of the per-paper-model benchmarks (crosscheck.py, rigorous.py).

`run_per_seed(task, args)` trains the seeds' models with the batched trainer into
CACHE/models (skipping those already there), then runs `task(cache, seed)` for every seed on
`args.jobs` loky workers, printing one progress line per finished seed. The tasks cache their
own per-seed results, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from joblib import Parallel, delayed, parallel_config

from compact_proofs.model.seeds import parse_seeds
from compact_proofs.model.training import TrainingRecipe
from compact_proofs.model.transformer import ModelConfig
from compact_proofs.pipeline.results import model_path
from compact_proofs.pipeline.sweep import train_seeds


def arguments(description: str) -> argparse.Namespace:
    """--seeds (default: the 151 paper seeds), --jobs (2), --cache (.crosscheck)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--seeds", default="paper")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=Path(".crosscheck"))
    return parser.parse_args()


def run_per_seed(
    task: Callable[[str, int], dict], args: argparse.Namespace
) -> tuple[list[dict], dict[str, float]]:
    """Train what is missing, then `task(cache, seed)` per seed. Returns the records and
    timings: wall, train_wall, train_cpu (summed over workers), trained (count)."""
    seeds = parse_seeds(args.seeds)
    cache = args.cache.resolve()
    start = time.perf_counter()
    untrained = [s for s in seeds if not model_path(cache, s).exists()]
    groups = [untrained[i :: args.jobs] for i in range(args.jobs) if untrained[i :: args.jobs]]
    cfg, recipe = asdict(ModelConfig()), asdict(TrainingRecipe())
    with parallel_config(backend="loky", n_jobs=args.jobs, inner_max_num_threads=1):
        training = Parallel()(delayed(train_seeds)(str(cache), g, cfg, recipe) for g in groups)
        train_wall = time.perf_counter() - start
        records = []
        tasks = (delayed(task)(str(cache), s) for s in seeds)
        for i, rec in enumerate(Parallel(return_as="generator_unordered")(tasks)):
            records.append(rec)
            print(f"[{i + 1}/{len(seeds)}] seed {rec['seed']} done", flush=True)
    timings = {
        "wall": time.perf_counter() - start,
        "train_wall": train_wall,
        "train_cpu": float(sum(training)),
        "trained": float(len(untrained)),
    }
    return records, timings
