"""`compact-proofs noise | loss | strategies`: the structureless-noise experiment, where a
strategy loses its bound, and the list of strategies."""

from __future__ import annotations

import argparse

from compact_proofs.cli import common
from compact_proofs.errors import CompactProofsError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "noise", help="structureless-noise experiment: real unexplained residuals vs random ones"
    )
    p.add_argument("model", help="model file (.safetensors)")
    p.add_argument("--draws", type=common.positive_int, default=20, help="random residuals (20)")
    p.add_argument("--sample-seed", type=common.seed, default=0, help="seed of the draws (0)")
    common.json_arg(p)
    common.threads_arg(p)
    p.set_defaults(func=run_noise)

    p = sub.add_parser(
        "loss", help="where the bound is lost: uncertified correct inputs split by cause"
    )
    p.add_argument("model", help="model file (.safetensors)")
    p.add_argument(
        "--strategy",
        default=None,
        help="cubic or a sub-cubic strategy id (default: the paper's default sub-cubic one)",
    )
    common.json_arg(p)
    common.threads_arg(p)
    p.set_defaults(func=run_loss)

    p = sub.add_parser("strategies", help="list the proof strategies")
    common.json_arg(p)
    p.set_defaults(func=run_strategies)


def run_noise(args: argparse.Namespace) -> int:
    from compact_proofs.analysis import noise

    mf, name = common.load(args.model)
    if args.draws < 2:
        raise CompactProofsError(f"--draws must be at least 2, got {args.draws}")
    results = noise.run_all(mf.model, args.draws, args.sample_seed)
    if args.json:
        common.print_json([{**r.to_json(), "model": name} for r in results])
        return 0
    print(f"model: {name}; {args.draws} random residuals with the real entry mean and std")
    rows = [noise.table_cells(r) for r in results]
    print(common.format_table(list(noise.TABLE_HEADERS), rows))
    print("z > 0 for the statistic: the real residual costs more than structureless noise would.")
    print(noise.BOUNDS_NOTE)
    return 0


def run_loss(args: argparse.Namespace) -> int:
    from compact_proofs.analysis.loss_breakdown import (
        DEFAULT_STRATEGY,
        breakdown_markdown,
        loss_breakdown,
    )

    mf, name = common.load(args.model)
    strategy = args.strategy or DEFAULT_STRATEGY
    result = loss_breakdown(mf.model, strategy, progress=common.progress_enabled())
    if args.json:
        common.print_json({**result.to_json(), "model": name})
        return 0
    print(f"model: {name}")
    print(breakdown_markdown(result, steps=True))
    print(f"({result.seconds:.1f} s; causes credited in the order of analysis.loss_breakdown)")
    return 0


def run_strategies(args: argparse.Namespace) -> int:
    from compact_proofs.model.transformer import ModelConfig
    from compact_proofs.proofs.registry import STRATEGIES

    cfg = ModelConfig()
    records = [s.describe(cfg) for s in STRATEGIES.values()]
    if args.json:
        common.print_json(records)
        return 0
    print(
        f"{len(records)} strategies; unexplained dimensions for the paper's model (v=64, k=4, d=32)"
    )
    headers = ["strategy", "group", "leading complexity", "unexpl. dims"]
    rows = [
        [r["strategy"], r["group"], r["leading_complexity"], str(r["unexplained_dims"])]
        for r in records
    ]
    print(common.format_table(headers, rows))
    return 0
