"""The `compact-proofs` command line (a stable contract; see README).

    compact-proofs train --seed S [--n-ctx K --d-vocab V --d-model D] --out FILE
    compact-proofs train --seeds paper --out DIR
    compact-proofs accuracy MODEL [--json]
    compact-proofs prove [MODEL] [--strategy ID|all] [--json] [--certificate-out FILE]
    compact-proofs verify MODEL CERTIFICATE [--json]
    compact-proofs check MODEL CERTIFICATE [--json]
    compact-proofs sweep | report | reproduce | noise | loss | strategies

Bad input gives one line `error: ...` on stderr, exit status 1 (2 for usage errors), no
traceback and no partial output file. Each command's parser sits next to its handler, one
module per group of commands; the handlers import the layers they use when they run, so
that `--help` does not import torch.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from compact_proofs._version import __version__
from compact_proofs.allocator import retain_freed_memory
from compact_proofs.cli import accuracy, analysis, common, export, proofs, sweep, train
from compact_proofs.errors import CompactProofsError

COMMAND_GROUPS = (train, accuracy, proofs, sweep, analysis, export)  # in the order of `--help`


def build_parser() -> argparse.ArgumentParser:
    parser = common.Parser(
        prog="compact-proofs",
        description=(
            "Certify lower bounds on the accuracy of Max-of-K transformers with compact proofs."
        ),
    )
    parser.add_argument("--version", action="version", version=f"compact-proofs {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=common.Parser)
    for group in COMMAND_GROUPS:
        group.register(sub)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors reported as one line: ours, the independent checker's (its own classes; it
    can only have raised one if it was imported), and OSError (unreadable paths)."""
    checker = sys.modules.get("compact_proofs.soundness.checker.errors")
    return (CompactProofsError, OSError, *((checker.CheckerError,) if checker else ()))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(args, "threads"):  # commands that compute; the others skip the 0.1 s sample
        common.use_threads(args.threads)
        retain_freed_memory()
    try:
        return args.func(args)
    except BrokenPipeError:  # e.g. `compact-proofs strategies | head`: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error at exit
        return 0
    except _user_errors() as exc:
        message = " ".join(str(exc).splitlines())  # one line, even if a path holds a newline
        print(f"error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
