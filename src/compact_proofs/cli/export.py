"""`compact-proofs export`: write a model in another library's format (TransformerLens:
`DIR/model.safetensors`, a `HookedTransformer` state dict, and `DIR/config.json`, its
`HookedTransformerConfig` arguments)."""

from __future__ import annotations

import argparse
from pathlib import Path

from compact_proofs.cli import common
from compact_proofs.errors import CompactProofsError

FORMATS = ("transformerlens",)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a model for TransformerLens (state dict + config)")
    p.add_argument("model", nargs="?", help="model file (.safetensors; default: the bundled model)")
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="transformerlens",
        help="target format (transformerlens: DIR/model.safetensors and DIR/config.json)",
    )
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    common.json_arg(p)
    p.set_defaults(func=run)


def _check_out(out: Path, overwrite: bool) -> None:
    """Refuse a file as --out, and existing outputs without --overwrite, before any work."""
    from compact_proofs.model.transformerlens import CONFIG_FILE, MODEL_FILE

    if out.exists() and not out.is_dir():
        raise CompactProofsError(f"--out {out} exists and is not a directory; pass a directory")
    for name in (MODEL_FILE, CONFIG_FILE):
        if (out / name).exists() and not overwrite:
            raise CompactProofsError(f"{out / name} exists; use --overwrite to replace it")


def run(args: argparse.Namespace) -> int:
    from compact_proofs.model.transformerlens import export_transformerlens

    out = Path(args.out)
    _check_out(out, args.overwrite)
    mf, name = common.load(args.model)
    files = export_transformerlens(mf.model, out, mf.provenance, overwrite=args.overwrite)
    if args.json:
        common.print_json(
            {"model": name, "format": args.format, "out": out, "files": [str(f) for f in files]}
        )
    else:
        print(f"exported {name} for TransformerLens: {', '.join(str(f) for f in files)}")
    return 0
