"""Certificate files: the output of proof search, re-checked later by verification alone.

A certificate file is JSON:

    {"format": "compact-proofs-certificate", "format_version": 1,
     "library_version": "...", "model_sha256": "<weights digest>", "model_config": {...},
     "certificates": [{"strategy": "<id>", "payload": {...}}, ...]}

It is bound to one model through the SHA-256 digest of its weights. Tensors inside payloads
are encoded as {"__tensor__": {"dtype", "shape", "base64"}} (`encode_tensor`).

Loading trusts nothing: the file's size and its number of JSON values are bounded before it
is parsed, every field is type-checked, strategy ids must exist, and every encoded tensor's
declared dtype, shape and byte length must agree before anything is decoded. What a payload's
values mean is the strategy's business: its `verify` rejects values it cannot use, and is
sound whatever they are. Every problem raises CertificateError with a one-line message.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from compact_proofs._version import __version__
from compact_proofs.errors import CertificateError, UnknownStrategyError
from compact_proofs.model.file_format import (
    atomic_write,
    config_size_problem,
    parse_json_bounded,
    short_repr,
)
from compact_proofs.model.transformer import ModelConfig
from compact_proofs.proofs.registry import get_strategy
from compact_proofs.proofs.tensor_codec import (
    REGENERATE,
    is_encoded_tensor,
    tensor_spec,
)

FORMAT = "compact-proofs-certificate"
FORMAT_VERSION = 1
# Limits checked before anything is decoded (hostile files):
MAX_CERTIFICATE_BYTES = 2**30  # all 102 strategies at d_vocab 512 take about 300 MB
MAX_JSON_ITEMS = 2**20  # JSON values in the file (a real one has about 30 per strategy)
_TOP_LEVEL = {"format", "format_version", "library_version", "model_sha256", "model_config",
              "certificates"}  # fmt: skip


@dataclass
class Certificate:
    """One strategy's search output."""

    strategy: str
    payload: dict[str, Any]


@dataclass
class CertificateFile:
    """All certificates made for one model."""

    model_sha256: str
    model_config: ModelConfig
    certificates: list[Certificate]


# -- files -------------------------------------------------------------------------------------


def save_certificates(path: str | Path, cert: CertificateFile) -> None:
    """Write `cert` atomically as JSON."""
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "model_sha256": cert.model_sha256,
        "model_config": asdict(cert.model_config),
        "certificates": [{"strategy": c.strategy, "payload": c.payload} for c in cert.certificates],
    }
    text = json.dumps(doc, indent=1)
    atomic_write(Path(path), lambda tmp: Path(tmp).write_text(text))


def load_certificates(path: str | Path) -> CertificateFile:
    """Read and validate a certificate file (raises CertificateError).

    Checks (see the module docstring): size, strict JSON, the top-level fields and their
    types, the digest's form, the model configuration, each entry's strategy id and the
    structure of every encoded tensor. Whether the digest matches a model is checked where
    the model is known (`proofs.runner.verify_certificates`).
    """
    path = Path(path)
    doc = _read_json(path)
    _check_format(path, doc)
    certs = _check_entries(path, doc["certificates"])
    return CertificateFile(
        model_sha256=_check_digest(path, doc["model_sha256"]),
        model_config=_check_config(path, doc["model_config"]),
        certificates=certs,
    )


def _read_json(path: Path) -> Any:
    """The file's JSON, read only if it is a regular file of at most MAX_CERTIFICATE_BYTES."""
    try:
        if not path.is_file():
            what = "is not a regular file" if path.exists() else "not found"
            raise CertificateError(f"certificate file {what}: {path} (check the path)")
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_CERTIFICATE_BYTES:  # checked before reading: files can be sparse
                raise CertificateError(
                    f"{path} is larger than the limit of {MAX_CERTIFICATE_BYTES} bytes for a "
                    "certificate"
                )
            data = f.read(size + 1)  # (read(n) allocates n bytes up front)
    except OSError as exc:  # permission denied, name too long, I/O error, ...
        raise CertificateError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) != size:
        raise CertificateError(f"{path} changed while being read; try again")
    try:
        return parse_json_bounded(data, MAX_JSON_ITEMS)
    except ValueError as exc:
        raise CertificateError(
            f"{path} is not a certificate ({exc}); create one with "
            "`compact-proofs prove MODEL --certificate-out FILE`"
        ) from None


def _check_format(path: Path, doc: Any) -> None:
    """The top level: an object with exactly the known fields, this format and version."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CertificateError(f"{path} is not a compact-proofs certificate file")
    version = doc.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version != FORMAT_VERSION:
        raise CertificateError(
            f"{path}: unsupported certificate format version {short_repr(version)} "
            f"(expected {FORMAT_VERSION})"
        )
    missing = sorted(_TOP_LEVEL - set(doc))
    unknown = sorted(set(doc) - _TOP_LEVEL)
    if missing or unknown:
        problem = f"missing {', '.join(missing)}" if missing else f"unknown {short_repr(unknown)}"
        raise CertificateError(
            f"{path}: certificate file is malformed (fields: {problem}); {REGENERATE}"
        )
    if not isinstance(doc["library_version"], str):
        raise CertificateError(f"{path}: library_version must be a string; {REGENERATE}")


def _check_digest(path: Path, digest: Any) -> str:
    """`model_sha256` must be a SHA-256 hex digest as `weights_digest` writes it."""
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise CertificateError(
            f"{path}: model_sha256 must be 64 lowercase hex digits, got {short_repr(digest)}"
        )
    return digest


def _check_config(path: Path, config: Any) -> ModelConfig:
    """`model_config`: exactly ModelConfig's fields, positive integers within the limits."""
    names = {f.name for f in fields(ModelConfig)}
    if (
        not isinstance(config, dict)
        or set(config) != names
        or not all(isinstance(x, int) and not isinstance(x, bool) for x in config.values())
    ):
        raise CertificateError(
            f"{path}: model_config must hold exactly the integers {', '.join(sorted(names))}"
        )
    try:
        cfg = ModelConfig(**config)
    except ValueError as exc:
        raise CertificateError(f"{path}: model_config is invalid ({exc})") from None
    problem = config_size_problem(cfg)
    if problem:
        raise CertificateError(f"{path}: model_config is invalid ({problem})")
    return cfg


def _check_entries(path: Path, entries: Any) -> list[Certificate]:
    """`certificates`: a list of {"strategy": known id, "payload": object}."""
    if not isinstance(entries, list):
        raise CertificateError(f"{path}: 'certificates' must be a list; {REGENERATE}")
    out = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or set(entry) != {"strategy", "payload"}:
            raise CertificateError(
                f"{path}: certificate entry {i} must be an object with exactly strategy and "
                f"payload; {REGENERATE}"
            )
        strategy, payload = entry["strategy"], entry["payload"]
        if not isinstance(strategy, str) or not isinstance(payload, dict):
            raise CertificateError(
                f"{path}: certificate entry {i} needs a string strategy and an object payload"
            )
        try:
            get_strategy(strategy)
        except UnknownStrategyError:
            raise CertificateError(
                f"{path}: certificate entry {i} names unknown strategy {short_repr(strategy)}; "
                "`compact-proofs strategies` lists the known ids"
            ) from None
        _check_tensors(path, i, payload)
        out.append(Certificate(strategy=strategy, payload=payload))
    return out


def _check_tensors(path: Path, index: int, payload: dict[str, Any]) -> None:
    """Validate the structure of every encoded tensor in `payload` (iteratively: payloads
    may nest as deep as the JSON parser allowed)."""
    stack: list[Any] = [payload]
    while stack:
        node = stack.pop()
        if is_encoded_tensor(node):
            try:
                tensor_spec(node)
            except CertificateError as exc:
                raise CertificateError(f"{path}: certificate entry {index}: {exc}") from None
        elif isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
