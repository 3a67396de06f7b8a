"""What every command shares: the parser class, argument types and groups, loading a model,
and printing (JSON, aligned tables, the line that says whether the numbers are proofs).

Only the standard library is imported here, so that `--help` stays fast; the commands import
the heavy layers (torch) when they run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import PurePath
from typing import TYPE_CHECKING, Any, NoReturn

from compact_proofs.errors import CompactProofsError

if TYPE_CHECKING:
    import torch

    from compact_proofs.model.file_format import ModelFile
    from compact_proofs.model.training import TrainingRecipe
    from compact_proofs.model.transformer import ModelConfig


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error message (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        message = " ".join(message.splitlines())  # e.g. unrecognized arguments with newlines
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def int_at_least(minimum: int, what: str) -> Callable[[str], int]:
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


def probability(text: str) -> float:
    """argparse type: a number strictly between 0 and 1 (a confidence level)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(
            f"expected a number strictly between 0 and 1, got {text!r}"
        )
    return value


positive_int = int_at_least(1, "positive")
non_negative_int = int_at_least(0, "non-negative")
seed = non_negative_int

FAST_HELP = (
    "plain float64 instead of the default rigorous verification: a little faster, but the "
    "numbers are NOT proofs (exact only up to rounding; docs/soundness.md)"
)
ARITHMETIC_NOTE = {
    True: "rigorous: every bound is a proof in exact real arithmetic on the float32 weights",
    False: "float64 (--fast): NOT A PROOF, exact only up to floating-point rounding",
}


# -- argument groups ---------------------------------------------------------------------------


def json_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON")


def strategy_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--strategy",
        default="all",
        help="strategy id, 'all', 'paper' (the paper's 102), 'subcubic', 'group:NAME' (a group "
        "or Table 1 row, e.g. 'group:Low-rank QK'), or a comma list of these "
        "(`compact-proofs strategies` lists ids and groups)",
    )


def fast_arg(p: argparse.ArgumentParser) -> None:
    """--fast, and the old --rigorous (now the default) accepted silently for old scripts."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("--fast", action="store_true", help=FAST_HELP)
    group.add_argument("--rigorous", action="store_true", help=argparse.SUPPRESS)


def threads_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="CPU threads for the numerical libraries (default: $OMP_NUM_THREADS if set, "
        "else the cores not busy with other work, at least 1)",
    )


def device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="cpu",
        help="where to compute (default: cpu; auto = cuda if available)",
    )


def model_args(p: argparse.ArgumentParser) -> None:
    """The architecture and training recipe of models to train (paper defaults)."""
    p.add_argument("--n-ctx", type=positive_int, default=4, help="K, tokens per input (4)")
    p.add_argument("--d-vocab", type=positive_int, default=64, help="vocabulary size (64)")
    p.add_argument("--d-model", type=positive_int, default=32, help="residual width (32)")
    p.add_argument(
        "--d-head", type=positive_int, default=None, help="head width (default d_model / n_heads)"
    )
    p.add_argument("--n-heads", type=positive_int, default=1, help="attention heads (1)")
    p.add_argument("--steps", type=positive_int, default=None, help="optimisation steps (3000)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="batch size (128)")


def parallel_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--jobs", type=positive_int, default=None, help="parallel workers (default: all cores)"
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


# -- reading arguments -------------------------------------------------------------------------


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def busy_cores(window: float = 0.1) -> float | None:
    """How many cores other work keeps busy right now: /proc/stat's idle share over `window`
    seconds (Linux), else the 1-minute load average (which lags: it still counts work that
    just ended), else None."""
    cores = os.cpu_count() or 1
    try:
        total0, idle0 = _cpu_ticks()
        time.sleep(window)
        total1, idle1 = _cpu_ticks()
        if total1 > total0:
            return cores * (1 - (idle1 - idle0) / (total1 - total0))
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def _cpu_ticks() -> tuple[int, int]:
    """(all, idle + iowait) clock ticks of every core since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:9]]
    return sum(ticks), ticks[3] + ticks[4]


def idle_cores() -> int:
    """Cores not busy with other work, at least 1: more threads than idle cores make torch's
    threads wait for each other (4.4x slower on a 2-core machine with 2 busy processes;
    benchmarks/cli_latency.py)."""
    cores = os.cpu_count() or 1
    busy = busy_cores() or 0.0
    return max(1, min(cores, cores - round(busy)))


def use_threads(requested: int | None) -> int:
    """Fix the thread count of torch, OpenMP and BLAS for this process and return it:
    `requested` (--threads), else $OMP_NUM_THREADS, else `idle_cores()`. Set before the
    libraries are imported (the commands import them lazily), and on torch if it already is."""
    if requested is None and os.environ.get("OMP_NUM_THREADS", "").isdigit():
        requested = int(os.environ["OMP_NUM_THREADS"])
    threads = requested or idle_cores()
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
    return threads


def progress_enabled() -> bool:
    return sys.stderr.isatty()


def device(name: str) -> torch.device:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CompactProofsError(
            "--device cuda requested but no CUDA GPU is available; use --device cpu"
        )
    return torch.device(name)


def load(path: str | None, where: str = "cpu") -> tuple[ModelFile, str]:
    """The model file at `path` (the bundled model if None) and the name to print for it."""
    from compact_proofs.model.file_format import BUNDLED_MODEL, bundled_model, load_model

    if path is None:
        return bundled_model(device(where)), f"bundled:{BUNDLED_MODEL}"
    return load_model(path, device(where)), path


def model_config(args: argparse.Namespace) -> ModelConfig:
    from compact_proofs.model.transformer import ModelConfig

    d_head = args.d_head or max(args.d_model // args.n_heads, 1)
    return ModelConfig(
        d_vocab=args.d_vocab,
        n_ctx=args.n_ctx,
        d_model=args.d_model,
        d_head=d_head,
        n_heads=args.n_heads,
    )


def recipe(args: argparse.Namespace) -> TrainingRecipe:
    """The paper's recipe, with --steps and --batch-size where given."""
    from compact_proofs.model.training import TrainingRecipe

    given = {"steps": args.steps, "batch_size": args.batch_size}
    return TrainingRecipe(**{k: v for k, v in given.items() if v is not None})


def seed_list(text: str) -> list[int]:
    from compact_proofs.model.seeds import parse_seeds

    try:
        return parse_seeds(text)
    except ValueError as exc:
        raise CompactProofsError(str(exc)) from None


# -- output ------------------------------------------------------------------------------------


def print_json(obj: Any) -> None:
    """JSON on stdout; paths are written as strings."""
    print(json.dumps(obj, indent=2, default=_path_text))


def _path_text(obj: Any) -> str:
    if isinstance(obj, PurePath):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def arithmetic_line(rigorous: bool, arithmetics: Sequence[str] = ()) -> str:
    """The line that says what the printed numbers are."""
    note = ARITHMETIC_NOTE[rigorous]
    if rigorous and "interval" in arithmetics:
        n = sum(a == "interval" for a in arithmetics)
        note += f" ({n} re-verified with per-entry intervals where balls left cells undecided)"
    return f"arithmetic: {note}"
