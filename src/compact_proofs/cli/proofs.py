"""`compact-proofs prove | verify | check`: search and verify proofs, re-verify saved
certificates, and re-check them with the independent checker."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compact_proofs.cli import common
from compact_proofs.errors import CompactProofsError, UnsupportedModelError

if TYPE_CHECKING:
    from compact_proofs.model.transformer import AttnOnlyTransformer
    from compact_proofs.proofs.base import Strategy
    from compact_proofs.proofs.certificates import Certificate
    from compact_proofs.proofs.runner import ProofResult

RESULT_HEADERS = ["strategy", "bound", "correct / total", "FLOPs", "log2 FLOPs", "unexpl. dims",
                  "complexity", "seconds"]  # fmt: skip


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prove", help="search and verify proofs of an accuracy lower bound")
    p.add_argument("model", nargs="?", help="model file (default: the bundled seed-123 model)")
    p.add_argument(
        "--strategy",
        default="all",
        help="strategy id, 'all', 'paper' (the paper's 102), 'subcubic', 'group:NAME' (a group "
        "or Table 1 row, e.g. 'group:Low-rank QK'), or a comma list of these "
        "(`compact-proofs strategies` lists ids and groups)",
    )
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
    from compact_proofs.model.file_format import weights_digest
    from compact_proofs.proofs.certificates import CertificateFile, save_certificates
    from compact_proofs.proofs.registry import resolve_strategies

    strategies = resolve_strategies(args.strategy)
    mf, name = common.load(args.model, args.device)
    if args.certificate_out and Path(args.certificate_out).is_dir():
        raise CompactProofsError(
            f"--certificate-out {args.certificate_out} is a directory; pass a file name"
        )
    results, certs = _prove_all(mf.model, strategies, rigorous=not args.fast)
    digest = weights_digest(mf.model)
    if args.certificate_out:
        save_certificates(args.certificate_out, CertificateFile(digest, mf.cfg, certs))
    if args.json:
        common.print_json(_records(results, name, digest))
    else:
        _print_results(results, name)
        if args.certificate_out:
            print(f"certificate written to {args.certificate_out}")
    return 0


def _prove_all(
    model: AttnOnlyTransformer, strategies: list[Strategy], rigorous: bool
) -> tuple[list[ProofResult], list[Certificate]]:
    """Search and verify each strategy; with several, skip (with a note) those the model is
    outside of; none left is an error."""
    from tqdm.auto import tqdm

    from compact_proofs.proofs.runner import prove

    results, certs = [], []
    progress = len(strategies) >= 2 and common.progress_enabled()
    for strategy in tqdm(strategies, desc="proving", unit="strategy", disable=not progress):
        try:
            result, cert = prove(model, strategy, rigorous=rigorous)
        except UnsupportedModelError as exc:
            if len(strategies) == 1:
                raise
            print(f"note: {strategy.id} skipped: {exc}", file=sys.stderr)
            continue
        results.append(result)
        certs.append(cert)
    if not results:
        raise UnsupportedModelError("no requested strategy supports this model")
    return results, certs


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
