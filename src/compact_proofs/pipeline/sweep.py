"""Many seeds x many strategies, resumable and parallel (on one machine or a Dask cluster).

`run_sweep(results_dir, spec)` trains (or reuses) one model per seed, runs every strategy on
each, and stores one row per (seed, strategy) in the results store (`pipeline/results.py`). Work is
done per seed by independent tasks scheduled with joblib — its process pool locally, or its
Dask backend on a cluster — so the scheduling is joblib's/Dask's, not ours. Everything a task
writes appears by an atomic rename, so a sweep killed at any point resumes where it stopped and
recomputes nothing already stored.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from joblib import Parallel, delayed, parallel_config
from tqdm.auto import tqdm

from compact_proofs.allocator import retain_freed_memory
from compact_proofs.errors import CompactProofsError
from compact_proofs.model.batched_training import train_many
from compact_proofs.model.file_format import (
    atomic_write,
    load_model,
    save_model,
    shipped_model_path,
    weights_digest,
)
from compact_proofs.model.training import TrainingRecipe, provenance
from compact_proofs.model.transformer import ModelConfig
from compact_proofs.pipeline.results import (
    consolidate,
    done_seeds,
    model_path,
    rows_path,
    write_rows,
)
from compact_proofs.proofs.exhaustive import MAX_INPUTS, exact_accuracy
from compact_proofs.proofs.registry import get_strategy
from compact_proofs.proofs.runner import prove_many
from compact_proofs.proofs.subcubic.config import table1_rows
from compact_proofs.proofs.subcubic.strategy import SubcubicStrategy

BACKENDS = ("local", "dask")
# Table 1 rows of the strategies that are a row of their own (the paper's two baselines and
# the strategies new here); sub-cubic strategies belong to rows by their configuration
ROWS = {
    "brute-force": "Brute force",
    "cubic": "Cubic",
    "separable-lite": "Separable lite (new)",
    "separable": "Separable (new)",
    "separable-subcubic": "Separable sub-cubic (new)",
}


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep computes. Stored as sweep.json; a resumed sweep must match it
    (except that seeds may be added)."""

    seeds: tuple[int, ...]
    strategies: tuple[str, ...]
    config: ModelConfig = field(default_factory=ModelConfig)
    recipe: TrainingRecipe = field(default_factory=TrainingRecipe)
    rigorous: bool = True  # False: --fast float64 verification (not a proof)

    def identity(self) -> dict[str, Any]:
        """Everything that must agree between runs writing into the same directory, as the
        JSON of sweep.json holds it."""
        identity = {
            "strategies": list(self.strategies),
            "config": asdict(self.config),
            "recipe": asdict(self.recipe),
            "rigorous": self.rigorous,
        }
        return json.loads(json.dumps(identity))


@dataclass
class SweepSummary:
    results_csv: Path
    seeds_done: int
    seeds_computed: int
    rows: int
    stage_seconds: dict[str, float] = field(default_factory=dict)


# -- the per-seed tasks (run in worker processes) --------------------------------------------


def train_seeds(results_dir: str, seeds: list[int], config: dict, recipe: dict) -> float:
    """Train the models of `seeds` together (`train_many`) and store each; returns seconds.

    A seed's weights do not depend on which seeds share its group, so the results do not
    depend on how the sweep splits the work.
    """
    start = time.perf_counter()
    retain_freed_memory()  # a worker process: as the CLI sets it in its own
    cfg = ModelConfig(**config)
    rec = TrainingRecipe(**{**recipe, "betas": tuple(recipe["betas"])})
    for seed, (model, stats) in zip(seeds, train_many(cfg, seeds, rec), strict=True):
        meta = {**provenance(cfg, seed, rec, stats), "trainer": "batched_training.train_many"}
        save_model(model, model_path(Path(results_dir), seed), meta)
    return time.perf_counter() - start


def prove_seed(
    results_dir: str, seed: int, strategy_ids: Sequence[str], rigorous: bool = True
) -> dict[str, float]:
    """Run every strategy on one seed's model and store its rows; returns stage seconds."""
    torch.set_num_threads(1)
    retain_freed_memory()  # a worker process: as the CLI sets it in its own
    root = Path(results_dir)
    path = model_path(root, seed)
    mf = load_model(path)
    model, cfg = mf.model, mf.model.cfg
    seconds: dict[str, float] = {}
    results = {}
    strategies = [get_strategy(i) for i in strategy_ids]
    for strategy, outcome in prove_many(model, strategies, rigorous):
        if isinstance(outcome, CompactProofsError):  # e.g. sub-cubic on a biased model: no row
            continue
        strategy_id = strategy.id
        results[strategy_id] = outcome[0]
        stage = _stage(strategy_id)
        for kind, value in (
            ("search", results[strategy_id].search_seconds),
            ("verification", results[strategy_id].seconds),
        ):
            seconds[f"{stage} {kind}"] = seconds.get(f"{stage} {kind}", 0.0) + value
    if "brute-force" in results:  # brute force *is* the exact accuracy: do not redo it
        exact = results["brute-force"].correct_count
    else:
        start = time.perf_counter()
        exact = (
            exact_accuracy(model, rigorous=rigorous).correct if cfg.n_inputs <= MAX_INPUTS else None
        )
        seconds["exact accuracy"] = time.perf_counter() - start
    diagnostics = _model_diagnostics(mf, exact, root)
    rows = [_row(seed, get_strategy(i), r, diagnostics) for i, r in results.items()]
    write_rows(rows_path(root, seed), rows)
    return seconds


def _stage(strategy_id: str) -> str:
    return strategy_id if strategy_id in ROWS else "sub-cubic"


def _model_diagnostics(mf, exact: int | None, root: Path) -> dict[str, Any]:
    model, cfg = mf.model, mf.model.cfg
    training = mf.provenance.get("training", {})
    sigma = [math.nan, math.nan]
    if cfg.n_heads == 1:  # singular values of EQKE_bar = (W_E + P_last) W_Q W_K^T (W_E + Pbar)^T
        W_E, W_pos = model.W_E.double(), model.W_pos.double()
        queries = (W_E + W_pos[-1]) @ model.W_Q[0].double()
        keys = (W_E + W_pos.mean(0)) @ model.W_K[0].double()
        sigma = (torch.linalg.svdvals(queries @ keys.T).tolist() + sigma)[:2]
    return {
        "exact_accuracy": exact / cfg.n_inputs if exact is not None else None,
        "train_loss": training.get("train_loss"),
        "train_accuracy": training.get("train_accuracy"),
        "eqke_sigma1": sigma[0],
        "eqke_sigma2": sigma[1],
        "eqke_sigma_ratio": sigma[0] / sigma[1] if sigma[1] else math.inf,
        "d_vocab": cfg.d_vocab,
        "n_ctx": cfg.n_ctx,
        "d_model": cfg.d_model,
        "model_path": str(mf.path.relative_to(root)) if mf.path else "",
        "model_sha256": weights_digest(model),
    }


def _row(seed: int, strategy, result, diagnostics: dict[str, Any]) -> dict[str, Any]:
    exact = diagnostics["exact_accuracy"]
    config = getattr(strategy, "config", None)
    return {
        "seed": seed,
        "strategy": result.strategy,
        "group": result.group,
        "table1_rows": ";".join(
            table1_rows(config) if isinstance(strategy, SubcubicStrategy) else [ROWS[strategy.id]]
        ),
        "leading_complexity": result.leading_complexity,
        "complexity": result.complexity,
        "bound": result.bound,
        "normalized_bound": result.bound / exact if exact else None,
        "correct_count": result.correct_count,
        "total": result.total,
        "flops": result.flops,
        "log2_flops": math.log2(result.flops) if result.flops > 0 else None,
        "unexplained_dims": result.unexplained_dims,
        "search_seconds": result.search_seconds,
        "verify_seconds": result.seconds,
        "rigorous": result.rigorous,
        "arithmetic": result.arithmetic,
        "eu_handling": config.eu if config else "",
        "attention_handling": config.attention if config else "",
        "attention_error_handling": config.error if config else "",
        **diagnostics,
    }


# -- orchestration ----------------------------------------------------------------------------


def _check_spec(results_dir: Path, spec: SweepSpec) -> None:
    path = results_dir / "sweep.json"
    if path.exists():
        try:
            stored = json.loads(path.read_text())
        except json.JSONDecodeError:
            raise CompactProofsError(f"{path} is corrupt; delete it to start over") from None
        # sweeps stored before rigorous verification was the default ran in float64
        identity = spec.identity()
        if {k: stored.get(k, False if k == "rigorous" else None) for k in identity} != identity:
            raise CompactProofsError(
                f"{results_dir} holds a sweep with different strategies, architecture, "
                "recipe or arithmetic (--fast); use another --out directory (or delete it)"
            )
        seeds = sorted(set(stored.get("seeds", [])) | set(spec.seeds))
    else:
        seeds = sorted(set(spec.seeds))
    text = json.dumps({**spec.identity(), "seeds": seeds}, indent=1)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


@contextlib.contextmanager
def _backend(backend: str, jobs: int, scheduler: str | None) -> Iterator[int]:
    """joblib's process pool locally, or its Dask backend (a LocalCluster unless `scheduler`
    gives the address of a running one). Yields the number of parallel jobs."""
    if backend == "local":
        with parallel_config(backend="loky", n_jobs=jobs, inner_max_num_threads=1):
            yield jobs
        return
    if backend != "dask":
        raise CompactProofsError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise CompactProofsError(
            "the dask backend needs dask[distributed]: pip install 'compact-proofs[cluster]'"
        ) from None
    with contextlib.ExitStack() as stack:
        if scheduler:
            client = stack.enter_context(Client(scheduler))
        else:
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=jobs, threads_per_worker=1, processes=True, dashboard_address=None
                )
            )
            client = stack.enter_context(Client(cluster))
        workers = max(1, len(client.scheduler_info().get("workers", {})))
        with parallel_config(backend="dask", n_jobs=-1):
            yield workers


def _run_tasks(
    tasks: list,
    desc: str,
    unit: str,
    progress: bool,
    on_result: Callable[[Any], None],
    per_task: int = 0,
) -> None:
    """Run tasks in the active joblib backend, with a progress bar (rate, ETA) as they finish;
    `per_task` strategies per task are shown as a running count."""
    if not tasks:
        return
    results = Parallel(return_as="generator_unordered")(tasks)
    with tqdm(total=len(tasks), desc=desc, unit=unit, disable=not progress, smoothing=0.1) as bar:
        for done, result in enumerate(results, start=1):
            on_result(result)
            if per_task:
                bar.set_postfix(strategies=done * per_task, refresh=False)
            bar.update(1)


def use_shipped_models(results_dir: Path, seeds: Sequence[int]) -> list[int]:
    """Copy the shipped paper-recipe model of each seed into the store, where the store has no
    model of that seed yet (so the sweep proves them instead of retraining: the same Table 1
    on every machine). Returns the seeds copied. The copies are byte-identical."""
    copied = []
    for seed in seeds:
        source, target = shipped_model_path(seed), model_path(results_dir, seed)
        if source is None or target.exists():
            continue
        data = source.read_bytes()
        atomic_write(target, lambda tmp, data=data: Path(tmp).write_bytes(data))
        copied.append(seed)
    return copied


def run_sweep(
    results_dir: Path,
    spec: SweepSpec,
    *,
    jobs: int | None = None,
    backend: str = "local",
    scheduler: str | None = None,
    progress: bool = False,
) -> SweepSummary:
    """Compute every missing (seed, strategy) row of `spec` into `results_dir`.

    Post: rows/seed-S.csv exists for every seed of spec, results.csv holds all stored rows.
    Seeds already stored are not recomputed; model files present are reused.
    """
    results_dir = Path(results_dir)
    for strategy_id in spec.strategies:
        get_strategy(strategy_id)  # fail fast on unknown ids
    results_dir.mkdir(parents=True, exist_ok=True)
    _check_spec(results_dir, spec)
    for stale in [*results_dir.glob("*/.*.tmp"), *results_dir.glob(".*.tmp")]:
        stale.unlink(missing_ok=True)  # temp files of a run that was killed mid-write
    jobs = jobs or os.cpu_count() or 1
    todo = [s for s in dict.fromkeys(spec.seeds) if s not in done_seeds(results_dir)]
    stage_seconds: dict[str, float] = {}

    def add(seconds: dict[str, float]) -> None:
        for key, value in seconds.items():
            stage_seconds[key] = stage_seconds.get(key, 0.0) + value

    with _backend(backend, jobs, scheduler) as n_workers:
        untrained = [s for s in todo if not model_path(results_dir, s).exists()]
        config, recipe = asdict(spec.config), asdict(spec.recipe)
        groups = [untrained[i::n_workers] for i in range(n_workers) if untrained[i::n_workers]]
        _run_tasks(
            [delayed(train_seeds)(str(results_dir), g, config, recipe) for g in groups],
            f"training {len(untrained)} models",
            "group",
            progress,
            lambda t: add({"training": t}),
        )
        _run_tasks(
            [
                delayed(prove_seed)(str(results_dir), s, spec.strategies, spec.rigorous)
                for s in todo
            ],
            "proving",
            "model",
            progress,
            add,
            per_task=len(spec.strategies),
        )
    start = time.perf_counter()
    out = consolidate(results_dir)
    stage_seconds["consolidation"] = time.perf_counter() - start
    n_rows = sum(1 for _ in out.open()) - 1
    return SweepSummary(
        results_csv=out,
        seeds_done=len(done_seeds(results_dir)),
        seeds_computed=len(todo),
        rows=n_rows,
        stage_seconds=stage_seconds,
    )
