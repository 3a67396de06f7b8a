"""Train the 151 paper-seed Max-of-4 models that `compact-proofs reproduce` uses by default
(`--models shipped`) and write them to src/compact_proofs/data/paper/seed-S.safetensors.

Training is bit-identical on one machine but not across CPU models (floating-point kernels
differ), so the README's Table 1 is computed from these files, and each records the machine
that trained it (`trained_on` in its metadata).

    python scripts/train_paper_models.py [--jobs 2]
"""

from __future__ import annotations

import argparse
import os
import platform
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from compact_proofs.model.batched_training import train_many
from compact_proofs.model.file_format import SHIPPED_MODELS, save_model
from compact_proofs.model.seeds import PAPER_SEEDS
from compact_proofs.model.training import TrainingRecipe, provenance
from compact_proofs.model.transformer import ModelConfig


def machine() -> str:
    """The CPU model name (from /proc/cpuinfo where there is one) and the core count."""
    name = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                name = line.partition(":")[2].strip()
                break
    return f"{name}, {os.cpu_count()} cores, {platform.system()}"


def train_group(seeds: list[int]) -> None:
    cfg, recipe = ModelConfig(), TrainingRecipe()
    for seed, (model, stats) in zip(seeds, train_many(cfg, seeds, recipe), strict=True):
        meta = {**provenance(cfg, seed, recipe, stats), "trainer": "batched_training.train_many",
                "trained_on": machine()}  # fmt: skip
        save_model(model, SHIPPED_MODELS / f"seed-{seed}.safetensors", meta)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    seeds = list(PAPER_SEEDS)
    groups = [seeds[i :: args.jobs] for i in range(args.jobs)]
    with ProcessPoolExecutor(args.jobs) as pool:
        list(pool.map(train_group, groups))
    print(f"wrote {len(seeds)} models to {SHIPPED_MODELS} ({machine()})")


if __name__ == "__main__":
    main()
