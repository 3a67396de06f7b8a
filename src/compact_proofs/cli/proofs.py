"""`compact-proofs prove | verify | check`: search and verify proofs, re-verify saved
certificates, and re-check them with the independent checker."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compact_proofs.cli import common
from compact_proofs.errors import CompactProofsError

if TYPE_CHECKING:
    from compact_proofs.proofs.runner import ProofResult

RESULT_HEADERS = ["strategy", "bound", "correct / total", "FLOPs", "log2 FLOPs", "unexpl. dims",
                  "complexity", "seconds"]  # fmt: skip


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prove", help="search and verify proofs of an accuracy lower bound")
    p.add_argument("model", nargs="?", help="model file (default: the bundled seed-123 model)")
    common.strategy_arg(p)
    p.add_argument("--certificate-out", help="write the certificates to this JSON file")
    common.fast_arg(p)
    common.json_arg(p)
    common.threads_arg(p)
    common.device_arg(p)
    p.set_defaults(func=run_prove)

    p = sub.add_parser("verify", help="re-run verification of saved certificates")
    p.add_argument("model", help="model file (.safetensors)")
    p.add_argument("certificate", help="certificate file from `prove --certificate-out`")
    common.fast_arg(p)
    common.json_arg(p)
    common.threads_arg(p)
    common.device_arg(p)
    p.set_defaults(func=run_verify)

    p = sub.add_parser(
        "check", help="re-check certificates with the independent checker (numpy only)"
    )
    p.add_argument("model", help="model file (.safetensors)")
    p.add_argument("certificate", help="certificate file from `prove --certificate-out`")
    common.json_arg(p)
    common.threads_arg(p)
    p.set_defaults(func=run_check)


def run_prove(args: argparse.Namespace) -> int:
    from compact_proofs.api import prove
    from compact_proofs.proofs.registry import resolve_strategies

    strategies = resolve_strategies(args.strategy)  # bad ids fail before the model is read
    mf, name = common.load(args.model, args.device)
    if args.certificate_out and Path(args.certificate_out).is_dir():
        raise CompactProofsError(
            f"--certificate-out {args.certificate_out} is a directory; pass a file name"
        )
    progress = common.progress_enabled()
    proofs = prove(mf.model, strategies, rigorous=not args.fast, progress=progress)
    if args.certificate_out:
        proofs.save(args.certificate_out)
    if args.json:
        common.print_json(_records(proofs.results, name, proofs.certificate.model_sha256))
    else:
        _print_results(proofs.results, name)
        if args.certificate_out:
            print(f"certificate written to {args.certificate_out}")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from compact_proofs.proofs.certificates import load_certificates
    from compact_proofs.proofs.runner import verify_certificates

    mf, name = common.load(args.model, args.device)
    cert = load_certificates(args.certificate)
    results = verify_certificates(mf.model, cert, rigorous=not args.fast)
    if args.json:
        common.print_json(_records(results, name, cert.model_sha256))
    else:
        _print_results(results, name)
    return 0


def run_check(args: argparse.Namespace) -> int:
    from compact_proofs.soundness.checker import check_certificates

    results = check_certificates(args.model, args.certificate)
    if args.json:
        common.print_json([{**r.to_json(), "model": args.model} for r in results])
        return 0
    print(f"model: {args.model} (independent checker)")
    headers = ["strategy", "certified", "total", "bound", "seconds"]
    rows = [
        [r.strategy, str(r.correct_count), str(r.total), f"{r.bound:.6f}", f"{r.seconds:.3f}"]
        for r in results
    ]
    print(common.format_table(headers, rows))
    return 0


def _records(results: list[ProofResult], model_name: str, digest: str) -> list[dict[str, Any]]:
    return [{**r.to_json(), "model": model_name, "model_sha256": digest} for r in results]


def _print_results(results: list[ProofResult], model_name: str) -> None:
    from compact_proofs.proofs.flops import log2

    rigorous = all(r.rigorous for r in results)
    print(f"model: {model_name}")
    print(common.arithmetic_line(rigorous, [r.arithmetic for r in results]))
    rows = [
        [
            r.strategy,
            f"{r.bound:.6f}",
            f"{r.correct_count} / {r.total}",
            f"{r.flops:.3e}",
            f"{log2(r.flops):.2f}",
            str(r.unexplained_dims),
            r.complexity,
            f"{r.seconds:.3f}",
        ]
        for r in results
    ]
    print(common.format_table(RESULT_HEADERS, rows))
