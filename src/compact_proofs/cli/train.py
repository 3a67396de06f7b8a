"""`compact-proofs train`: train one model (--seed) or a seed set (--seeds) with the paper's
recipe, recording provenance and, for small input spaces, the exact accuracy."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from compact_proofs.cli import common
from compact_proofs.errors import CompactProofsError

EXACT_ACCURACY_LIMIT = 2**25  # train records exact accuracy when there are at most this many inputs


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train models with the paper's recipe")
    p.add_argument("--seed", type=common.seed, help="top-level seed of one model")
    p.add_argument("--seeds", help="seed set: 'paper' (the 151 seeds), 1,2,3 or 0-9")
    p.add_argument("--out", required=True, help="output file (--seed) or directory (--seeds)")
    common.model_args(p)
    p.add_argument("--overwrite", action="store_true", help="retrain existing output files")
    common.json_arg(p)
    common.threads_arg(p)
    p.set_defaults(func=run)


def _jobs(args: argparse.Namespace) -> list[tuple[int, Path]]:
    """(seed, output file) of every model asked for."""
    if (args.seed is None) == (args.seeds is None):
        raise CompactProofsError("pass exactly one of --seed S or --seeds SET")
    out = Path(args.out)
    if args.seed is not None:
        if out.is_dir():
            raise CompactProofsError(f"--out {out} is a directory; with --seed pass a file name")
        return [(args.seed, out)]
    seeds = common.seed_list(args.seeds)
    if out.exists() and not out.is_dir():
        raise CompactProofsError(f"--out {out} is a file; with --seeds pass a directory")
    return [(s, out / f"seed-{s}.safetensors") for s in seeds]


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from compact_proofs.model.file_format import save_model
    from compact_proofs.model.training import provenance, train
    from compact_proofs.proofs.exhaustive import exact_accuracy

    cfg, recipe, jobs = common.model_config(args), common.recipe(args), _jobs(args)
    progress = common.progress_enabled()
    records: list[dict[str, Any]] = []
    for seed, path in tqdm(
        jobs, desc="training", unit="model", disable=len(jobs) < 2 or not progress
    ):
        if path.exists() and not args.overwrite:
            records.append({"seed": seed, "path": str(path), "status": "exists"})
            continue
        model, stats = train(cfg, seed, recipe, progress=progress and len(jobs) == 1)
        meta = provenance(cfg, seed, recipe, stats)
        if cfg.n_inputs <= EXACT_ACCURACY_LIMIT:
            meta["exact_accuracy"] = exact_accuracy(model).accuracy
        save_model(model, path, meta)
        records.append(
            {
                "seed": seed,
                "path": str(path),
                "status": "trained",
                **dict(meta["training"].items()),
                "exact_accuracy": meta.get("exact_accuracy"),
            }
        )
    _print(records, args.json)
    return 0


def _print(records: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        common.print_json(records)
        return
    for r in records:
        if r["status"] == "exists":
            print(f"seed {r['seed']}: {r['path']} exists, skipped (use --overwrite)")
            continue
        acc = r["exact_accuracy"]
        acc_text = f", exact accuracy {acc:.6f}" if acc is not None else ""
        print(
            f"seed {r['seed']}: {r['path']} trained in {r['seconds']:.1f}s "
            f"(final train loss {r['train_loss']:.5f}, train accuracy "
            f"{r['train_accuracy']:.4f}{acc_text})"
        )
