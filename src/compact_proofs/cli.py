"""The `compact-proofs` command line (a stable contract; see README).

    compact-proofs train --seed S [--n-ctx K --d-vocab V --d-model D] --out FILE
    compact-proofs train --seeds paper --out DIR
    compact-proofs accuracy MODEL [--json]
    compact-proofs prove [MODEL] [--strategy ID|all] [--json] [--certificate-out FILE]
    compact-proofs verify MODEL CERTIFICATE [--json]
    compact-proofs check MODEL CERTIFICATE [--json]
    compact-proofs strategies [--json]

Bad input gives one line `error: ...` on stderr, exit status 1 (2 for usage errors), no
traceback and no partial output file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

import torch
from tqdm.auto import tqdm

from compact_proofs._version import __version__
from compact_proofs.analysis import noise
from compact_proofs.analysis.estimate import estimate_accuracy
from compact_proofs.analysis.loss_breakdown import (
    DEFAULT_STRATEGY,
    breakdown_markdown,
    loss_breakdown,
)
from compact_proofs.analysis.stratified import stratified_estimate
from compact_proofs.errors import CompactProofsError, UnsupportedModelError
from compact_proofs.model.file_format import ModelFile, load_model, save_model, weights_digest
from compact_proofs.model.seeds import SELECTED_SEED, parse_seeds
from compact_proofs.model.training import TrainingRecipe, provenance, train
from compact_proofs.model.transformer import ModelConfig
from compact_proofs.pipeline.sweep import SweepSpec, SweepSummary, run_sweep
from compact_proofs.proofs.certificates import CertificateFile, load_certificates, save_certificates
from compact_proofs.proofs.exhaustive import exact_accuracy
from compact_proofs.proofs.flops import log2
from compact_proofs.proofs.paths import require_single_head
from compact_proofs.proofs.registry import STRATEGIES, resolve_strategies
from compact_proofs.proofs.runner import ProofResult, prove, verify_certificates
from compact_proofs.soundness.checker import check_certificates
from compact_proofs.soundness.checker.errors import CheckerError

BUNDLED_MODEL = f"max-of-4-seed-{SELECTED_SEED}.safetensors"
EXACT_ACCURACY_LIMIT = 2**25  # train records exact accuracy when there are at most this many inputs


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        message = " ".join(message.splitlines())  # e.g. unrecognized arguments with newlines
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def _int_at_least(minimum: int, what: str) -> Callable[[str], int]:
    """argparse type: an integer >= minimum, else a one-line error naming `what`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a {what} integer, got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1, "positive")
_non_negative_int = _int_at_least(0, "non-negative")
_seed = _non_negative_int


def _progress_enabled() -> bool:
    return sys.stderr.isatty()


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CompactProofsError(
            "--device cuda requested but no CUDA GPU is available; use --device cpu"
        )
    return torch.device(name)


def bundled_model_path() -> Path:
    """Path of the default model shipped with the package (the paper's seed 123)."""
    return Path(str(resources.files("compact_proofs") / "data" / BUNDLED_MODEL))


def _load(path: str | None, device: torch.device) -> tuple[ModelFile, str]:
    if path is None:
        return load_model(bundled_model_path(), device), f"bundled:{BUNDLED_MODEL}"
    return load_model(path, device), path


# -- output ----------------------------------------------------------------------------------


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2))


def _format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


ARITHMETIC_NOTE = {
    True: "rigorous: every bound is a proof in exact real arithmetic on the float32 weights",
    False: "float64 (--fast): NOT A PROOF, exact only up to floating-point rounding",
}


def _arithmetic_line(rigorous: bool, arithmetics: Sequence[str] = ()) -> str:
    """The line that says what the printed numbers are."""
    note = ARITHMETIC_NOTE[rigorous]
    if rigorous and "interval" in arithmetics:
        n = sum(a == "interval" for a in arithmetics)
        note += f" ({n} re-verified with per-entry intervals)"
    return f"arithmetic: {note}"


def _print_results(results: list[ProofResult], model_name: str) -> None:
    rigorous = all(r.rigorous for r in results)
    print(f"model: {model_name}")
    print(_arithmetic_line(rigorous, [r.arithmetic for r in results]))
    headers = [
        "strategy",
        "bound",
        "correct / total",
        "FLOPs",
        "log2 FLOPs",
        "unexpl. dims",
        "complexity",
        "seconds",
    ]
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
    print(_format_table(headers, rows))


def _result_records(results: list[ProofResult], model_name: str, digest: str) -> list[dict]:
    return [{**r.to_json(), "model": model_name, "model_sha256": digest} for r in results]


# -- commands --------------------------------------------------------------------------------


def _model_config(args: argparse.Namespace) -> ModelConfig:
    d_head = args.d_head or max(args.d_model // args.n_heads, 1)
    return ModelConfig(
        d_vocab=args.d_vocab,
        n_ctx=args.n_ctx,
        d_model=args.d_model,
        d_head=d_head,
        n_heads=args.n_heads,
    )


def _recipe(args: argparse.Namespace) -> TrainingRecipe:
    return TrainingRecipe(steps=args.steps, batch_size=args.batch_size)


def _seed_list(text: str) -> list[int]:
    try:
        return parse_seeds(text)
    except ValueError as exc:
        raise CompactProofsError(str(exc)) from None


FAST_HELP = (
    "plain float64 instead of the default rigorous verification: a little faster, but the "
    "numbers are NOT proofs (exact only up to rounding; docs/soundness.md)"
)


def fast_arg(p: argparse.ArgumentParser) -> None:
    """--fast, and the old --rigorous (now the default) accepted silently for old scripts."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("--fast", action="store_true", help=FAST_HELP)
    group.add_argument("--rigorous", action="store_true", help=argparse.SUPPRESS)


def cmd_train(args: argparse.Namespace) -> int:
    if (args.seed is None) == (args.seeds is None):
        raise CompactProofsError("pass exactly one of --seed S or --seeds SET")
    cfg, recipe = _model_config(args), _recipe(args)
    out = Path(args.out)
    if args.seed is not None:
        if out.is_dir():
            raise CompactProofsError(f"--out {out} is a directory; with --seed pass a file name")
        jobs = [(args.seed, out)]
    else:
        seeds = _seed_list(args.seeds)
        if out.exists() and not out.is_dir():
            raise CompactProofsError(f"--out {out} is a file; with --seeds pass a directory")
        jobs = [(s, out / f"seed-{s}.safetensors") for s in seeds]
    records = []
    for seed, path in tqdm(
        jobs, desc="training", unit="model", disable=len(jobs) < 2 or not _progress_enabled()
    ):
        if path.exists() and not args.overwrite:
            records.append({"seed": seed, "path": str(path), "status": "exists"})
            continue
        model, stats = train(cfg, seed, recipe, progress=_progress_enabled() and len(jobs) == 1)
        meta = provenance(cfg, seed, recipe, stats)
        if cfg.n_inputs <= EXACT_ACCURACY_LIMIT:
            meta["exact_accuracy"] = exact_accuracy(model).accuracy
        save_model(model, path, meta)
        records.append(
            {
                "seed": seed,
                "path": str(path),
                "status": "trained",
                **{k: v for k, v in meta["training"].items()},
                "exact_accuracy": meta.get("exact_accuracy"),
            }
        )
    if args.json:
        _print_json(records)
    else:
        for r in records:
            if r["status"] == "exists":
                print(f"seed {r['seed']}: {r['path']} exists, skipped (use --overwrite)")
            else:
                acc = r["exact_accuracy"]
                acc_text = f", exact accuracy {acc:.6f}" if acc is not None else ""
                print(
                    f"seed {r['seed']}: {r['path']} trained in {r['seconds']:.1f}s "
                    f"(final train loss {r['train_loss']:.5f}, train accuracy "
                    f"{r['train_accuracy']:.4f}{acc_text})"
                )
    return 0


def cmd_accuracy(args: argparse.Namespace) -> int:
    mf, name = _load(args.model, _device(args.device))
    if args.estimate:
        return _estimate(mf, name, args)
    start = time.perf_counter()
    result = exact_accuracy(mf.model, progress=_progress_enabled(), rigorous=not args.fast)
    seconds = time.perf_counter() - start
    record = {
        "model": name,
        "accuracy": result.accuracy,
        "correct_count": result.correct,
        "total": result.total,
        "numerical_ties": result.ties,
        "rigorous": not args.fast,
        "seconds": seconds,
    }
    if args.json:
        _print_json(record)
    else:
        print(
            f"{name}: exact accuracy {result.accuracy:.7f} "
            f"({result.correct} / {result.total} inputs correct) in {seconds:.2f}s"
        )
        print(_arithmetic_line(not args.fast))
    return 0


def cmd_prove(args: argparse.Namespace) -> int:
    strategies = resolve_strategies(args.strategy)
    mf, name = _load(args.model, _device(args.device))
    if args.certificate_out and Path(args.certificate_out).is_dir():
        raise CompactProofsError(
            f"--certificate-out {args.certificate_out} is a directory; pass a file name"
        )
    results, certs = [], []
    for strategy in tqdm(
        strategies,
        desc="proving",
        unit="strategy",
        disable=len(strategies) < 2 or not _progress_enabled(),
    ):
        try:
            result, cert = prove(mf.model, strategy, rigorous=not args.fast)
        except UnsupportedModelError as exc:
            if len(strategies) == 1:
                raise
            print(f"note: {strategy.id} skipped: {exc}", file=sys.stderr)
            continue
        results.append(result)
        certs.append(cert)
    if not results:
        raise UnsupportedModelError("no requested strategy supports this model")
    digest = weights_digest(mf.model)
    if args.certificate_out:
        save_certificates(args.certificate_out, CertificateFile(digest, mf.cfg, certs))
    if args.json:
        _print_json(_result_records(results, name, digest))
    else:
        _print_results(results, name)
        if args.certificate_out:
            print(f"certificate written to {args.certificate_out}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    mf, name = _load(args.model, _device(args.device))
    cert = load_certificates(args.certificate)
    results = verify_certificates(mf.model, cert, rigorous=not args.fast)
    if args.json:
        _print_json(_result_records(results, name, cert.model_sha256))
    else:
        _print_results(results, name)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    results = check_certificates(args.model, args.certificate)
    if args.json:
        _print_json([{**r.to_json(), "model": args.model} for r in results])
    else:
        print(f"model: {args.model} (independent checker)")
        headers = ["strategy", "certified", "total", "bound", "seconds"]
        rows = [
            [r.strategy, str(r.correct_count), str(r.total), f"{r.bound:.6f}", f"{r.seconds:.3f}"]
            for r in results
        ]
        print(_format_table(headers, rows))
    return 0


def _estimate(mf: ModelFile, name: str, args: argparse.Namespace) -> int:
    if not 0 < args.confidence < 1:
        raise CompactProofsError(f"--confidence must be in (0, 1), got {args.confidence}")
    start = time.perf_counter()
    estimator = stratified_estimate if args.method == "stratified" else estimate_accuracy
    if args.method == "stratified":
        require_single_head(mf.model, "--method stratified (it samples the cubic proof's cells)")
    est = estimator(
        mf.model, args.samples, args.confidence, args.sample_seed, progress=_progress_enabled()
    )
    seconds = time.perf_counter() - start
    if args.json:
        _print_json({"model": name, **est.to_json(), "seconds": seconds})
        return 0
    if est.method == "uniform":
        how = f"{est.correct} / {est.samples} uniformly sampled inputs correct"
    else:
        how = (
            f"{est.certified} inputs certified by the cubic proof, {est.correct} / "
            f"{est.samples} samples of the other {mf.cfg.n_inputs - est.certified} correct"
        )
    print(
        f"{name}: ESTIMATED accuracy {est.estimate:.6f} ({how}); {est.confidence:.0%} "
        f"Clopper-Pearson interval [{est.lower:.6f}, {est.upper:.6f}]: a statistical "
        f"estimate, not a proof ({seconds:.1f}s)"
    )
    return 0


def _sweep(
    out: Path,
    seeds: list[int],
    strategies: str,
    cfg: ModelConfig,
    recipe: TrainingRecipe,
    args: argparse.Namespace,
) -> SweepSummary:
    if out.exists() and not out.is_dir():
        raise CompactProofsError(f"--out {out} is a file; pass a directory")
    spec = SweepSpec(
        seeds=tuple(seeds),
        strategies=tuple(s.id for s in resolve_strategies(strategies)),
        config=cfg,
        recipe=recipe,
        rigorous=not args.fast,
    )
    return run_sweep(
        out,
        spec,
        jobs=args.jobs,
        backend=args.backend,
        scheduler=args.scheduler,
        progress=_progress_enabled(),
    )


def _print_stages(summary: SweepSummary) -> None:
    for stage, seconds in summary.stage_seconds.items():
        print(f"  {stage}: {seconds:.1f} s (summed over workers)")


def cmd_sweep(args: argparse.Namespace) -> int:
    out = Path(args.out)
    summary = _sweep(
        out, _seed_list(args.seeds), args.strategy, _model_config(args), _recipe(args), args
    )
    if args.json:
        _print_json(
            {
                "results": str(summary.results_csv),
                "seeds_done": summary.seeds_done,
                "seeds_computed": summary.seeds_computed,
                "rows": summary.rows,
                "stage_seconds": summary.stage_seconds,
            }
        )
    else:
        print(
            f"{summary.results_csv}: {summary.rows} rows for {summary.seeds_done} seeds "
            f"({summary.seeds_computed} computed now)"
        )
        print(_arithmetic_line(not args.fast))
        _print_stages(summary)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from compact_proofs.pipeline.report import build_report  # matplotlib is slow to import

    report = build_report(
        Path(args.results),
        Path(args.out),
        seed=args.seed,
        progress=_progress_enabled(),
        noise_draws=args.noise_draws,
    )
    if args.json:
        _print_json({k: v for k, v in report.items() if k in ("table1", "files")})
    else:
        print(f"report written to {Path(args.out) / 'index.html'}")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from compact_proofs.pipeline.report import build_report

    out = Path(args.out)
    start = time.perf_counter()
    summary = _sweep(out, _seed_list(args.seeds), "all", ModelConfig(), TrainingRecipe(), args)
    sweep_seconds = time.perf_counter() - start
    report_start = time.perf_counter()
    build_report(out, out / "report", progress=_progress_enabled())
    report_seconds = time.perf_counter() - report_start
    print(f"{summary.rows} rows for {summary.seeds_done} seeds in {summary.results_csv}")
    print(_arithmetic_line(not args.fast))
    print(f"sweep {sweep_seconds:.1f} s wall, report {report_seconds:.1f} s wall; stages:")
    _print_stages(summary)
    print((out / "report" / "table1.md").read_text())
    print(f"report: {out / 'report' / 'index.html'}")
    return 0


def cmd_noise(args: argparse.Namespace) -> int:
    mf, name = _load(args.model, "cpu")
    if args.draws < 2:
        raise CompactProofsError(f"--draws must be at least 2, got {args.draws}")
    results = noise.run_all(mf.model, args.draws, args.sample_seed)
    if args.json:
        _print_json([{**r.to_json(), "model": name} for r in results])
        return 0
    print(f"model: {name}; {args.draws} random residuals with the real entry mean and std")
    headers, rows = list(noise.TABLE_HEADERS), [noise.table_cells(r) for r in results]
    print(_format_table(headers, rows))
    print("z > 0 for the error bound: the real residual is worse than structureless noise.")
    return 0


def cmd_loss(args: argparse.Namespace) -> int:
    mf, name = _load(args.model, "cpu")
    result = loss_breakdown(mf.model, args.strategy)
    if args.json:
        _print_json({**result.to_json(), "model": name})
        return 0
    print(f"model: {name}")
    print(breakdown_markdown(result, steps=True))
    print(f"({result.seconds:.1f} s; causes credited in the order of analysis.loss_breakdown)")
    return 0


def cmd_strategies(args: argparse.Namespace) -> int:
    cfg = ModelConfig()
    records = [s.describe(cfg) for s in STRATEGIES.values()]
    if args.json:
        _print_json(records)
    else:
        print(
            f"{len(records)} strategies; unexplained dimensions for the paper's model "
            "(v=64, k=4, d=32)"
        )
        headers = ["strategy", "group", "leading complexity", "unexpl. dims"]
        rows = [
            [r["strategy"], r["group"], r["leading_complexity"], str(r["unexplained_dims"])]
            for r in records
        ]
        print(_format_table(headers, rows))
    return 0


# -- parser ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="compact-proofs",
        description=(
            "Certify lower bounds on the accuracy of Max-of-K transformers with compact proofs."
        ),
    )
    parser.add_argument("--version", action="version", version=f"compact-proofs {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def device_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--device",
            choices=["auto", "cpu", "cuda"],
            default="cpu",
            help="where to compute (default: cpu; auto = cuda if available)",
        )

    def model_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--n-ctx", type=_positive_int, default=4, help="K, tokens per input (4)")
        p.add_argument("--d-vocab", type=_positive_int, default=64, help="vocabulary size (64)")
        p.add_argument("--d-model", type=_positive_int, default=32, help="residual width (32)")
        p.add_argument(
            "--d-head",
            type=_positive_int,
            default=None,
            help="head width (default d_model / n_heads)",
        )
        p.add_argument("--n-heads", type=_positive_int, default=1, help="attention heads (1)")
        p.add_argument(
            "--steps",
            type=_positive_int,
            default=TrainingRecipe.steps,
            help="optimisation steps (3000)",
        )
        p.add_argument(
            "--batch-size",
            type=_positive_int,
            default=TrainingRecipe.batch_size,
            help="batch size (128)",
        )

    def parallel_args(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--jobs", type=_positive_int, default=None, help="parallel workers (default: all cores)"
        )
        p.add_argument(
            "--backend",
            choices=["local", "dask"],
            default="local",
            help="local process pool (default) or a Dask cluster",
        )
        p.add_argument(
            "--scheduler",
            default=None,
            help="address of a running Dask scheduler (with --backend dask; "
            "default: start a local cluster)",
        )

    p = sub.add_parser("train", help="train models with the paper's recipe")
    p.add_argument("--seed", type=_seed, help="top-level seed of one model")
    p.add_argument("--seeds", help="seed set: 'paper' (the 151 seeds), 1,2,3 or 0-9")
    p.add_argument("--out", required=True, help="output file (--seed) or directory (--seeds)")
    model_args(p)
    p.add_argument("--overwrite", action="store_true", help="retrain existing output files")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("accuracy", help="exact accuracy over all d_vocab^n_ctx inputs")
    p.add_argument("model", help="model file (.safetensors)")
    p.add_argument(
        "--estimate",
        action="store_true",
        help="estimate by uniform sampling, with a confidence interval (not a proof)",
    )
    p.add_argument(
        "--samples",
        type=_positive_int,
        default=1_000_000,
        help="inputs to sample with --estimate (1000000)",
    )
    p.add_argument(
        "--confidence", type=float, default=0.99, help="confidence level of the interval (0.99)"
    )
    p.add_argument(
        "--method",
        choices=("uniform", "stratified"),
        default="uniform",
        help="--estimate sampling: uniform over all inputs, or stratified (count what the "
        "cubic proof certifies exactly, sample only the rest; narrower intervals)",
    )
    p.add_argument("--sample-seed", type=_seed, default=0, help="seed of the sampling (0)")
    fast_arg(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    device_arg(p)
    p.set_defaults(func=cmd_accuracy)

    p = sub.add_parser("prove", help="search and verify proofs of an accuracy lower bound")
    p.add_argument("model", nargs="?", help="model file (default: the bundled seed-123 model)")
    p.add_argument("--strategy", default="all", help="strategy id, comma list, or 'all'")
    p.add_argument("--certificate-out", help="write the certificates to this JSON file")
    fast_arg(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    device_arg(p)
    p.set_defaults(func=cmd_prove)

    p = sub.add_parser("verify", help="re-run verification of saved certificates")
    p.add_argument("model", help="model file (.safetensors)")
    p.add_argument("certificate", help="certificate file from `prove --certificate-out`")
    fast_arg(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    device_arg(p)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser(
        "check", help="re-check certificates with the independent checker (numpy only)"
    )
    p.add_argument("model", help="model file (.safetensors)")
    p.add_argument("certificate", help="certificate file from `prove --certificate-out`")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("sweep", help="train and prove many seeds; resumable results store")
    p.add_argument("--seeds", default="paper", help="seed set: 'paper' (default), 1,2,3 or 0-9")
    p.add_argument("--out", required=True, help="results directory (created or resumed)")
    p.add_argument("--strategy", default="all", help="strategy id, comma list, or 'all'")
    model_args(p)
    parallel_args(p)
    fast_arg(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("report", help="Table 1, figures and index.html from a results store")
    p.add_argument("results", help="results directory of `compact-proofs sweep`")
    p.add_argument("--out", required=True, help="report directory")
    p.add_argument(
        "--seed",
        type=_seed,
        default=None,
        help="seed whose path matrices are drawn (default 123 if present)",
    )
    p.add_argument(
        "--noise-draws",
        type=_non_negative_int,
        default=10,
        help="random residuals of the noise experiment on that seed (10; 0 skips it)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("reproduce", help="the paper's results: sweep (151 seeds) + report")
    p.add_argument("--out", default="reproduction", help="output directory (reproduction)")
    p.add_argument("--seeds", default="paper", help="seed set (default: the 151 paper seeds)")
    parallel_args(p)
    fast_arg(p)
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser(
        "noise", help="structureless-noise experiment: real EQKE residual vs random ones"
    )
    p.add_argument("model", help="model file (.safetensors)")
    p.add_argument("--draws", type=_positive_int, default=20, help="random residuals (20)")
    p.add_argument("--sample-seed", type=_seed, default=0, help="seed of the draws (0)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_noise)

    p = sub.add_parser(
        "loss", help="where the bound is lost: uncertified correct inputs split by cause"
    )
    p.add_argument("model", help="model file (.safetensors)")
    p.add_argument(
        "--strategy",
        default=DEFAULT_STRATEGY,
        help="cubic or a sub-cubic strategy id (default: the paper's default sub-cubic one)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_loss)

    p = sub.add_parser("strategies", help="list the proof strategies")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_strategies)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # e.g. `compact-proofs strategies | head`: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error at exit
        return 0
    except (CompactProofsError, CheckerError, OSError) as exc:  # OSError: unreadable paths
        message = " ".join(str(exc).splitlines())  # one line, even if a path holds a newline
        print(f"error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
