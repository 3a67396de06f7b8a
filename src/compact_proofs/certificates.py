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

import base64
import binascii
import json
import math
import os
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compact_proofs import __version__
from compact_proofs.errors import CertificateError, UnknownStrategyError
from compact_proofs.model import ModelConfig
from compact_proofs.modelfile import (
    atomic_write,
    bounded_numel,
    config_size_problem,
    parse_json_bounded,
    short_repr,
)

FORMAT = "compact-proofs-certificate"
FORMAT_VERSION = 1
_DTYPES = {"uint8", "int16", "int32", "int64", "float32", "float64", "bool"}
# Limits checked before anything is decoded (hostile files):
MAX_CERTIFICATE_BYTES = 2**30  # all 102 strategies at d_vocab 512 take about 300 MB
MAX_JSON_ITEMS = 2**20  # JSON values in the file (a real one has about 30 per strategy)
MAX_TENSOR_NDIM = 8
MAX_TENSOR_BYTES = 2**30  # one encoded tensor's decoded size
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_REGENERATE = "regenerate it with `compact-proofs prove MODEL --certificate-out FILE`"
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


# -- tensors -----------------------------------------------------------------------------------


def encode_tensor(t: torch.Tensor) -> dict[str, Any]:
    """JSON-safe encoding of a tensor (exact: raw little-endian bytes in base64)."""
    a = t.detach().cpu().contiguous().numpy()
    return {
        "__tensor__": {
            "dtype": str(a.dtype),
            "shape": list(a.shape),
            "base64": base64.b64encode(a.astype(a.dtype.newbyteorder("<")).tobytes()).decode(),
        }
    }


def decode_tensor(obj: Any) -> torch.Tensor:
    """Inverse of `encode_tensor`; raises CertificateError on malformed input.

    The declared dtype and shape are checked, and the base64 text's length against them,
    before anything is decoded; bool tensors must hold only bytes 0 and 1. Values are not
    otherwise checked (NaN included): that is the caller's business.
    """
    dtype, shape, text = _tensor_spec(obj)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _bad_tensor("its base64 text is not valid base64") from None
    nbytes = dtype.itemsize * math.prod(shape)  # bounded: _tensor_spec checked it
    if len(raw) != nbytes:
        raise _bad_tensor(f"its base64 text decodes to {len(raw)} bytes, not {nbytes}")
    array = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)
    if dtype == np.bool_ and bool((np.frombuffer(raw, dtype=np.uint8) > 1).any()):
        raise _bad_tensor("a bool tensor holds bytes other than 0 and 1")
    return torch.from_numpy(array)


def _is_encoded_tensor(obj: Any) -> bool:
    """Whether `obj` claims to be an encoded tensor (a dict with the key `__tensor__`)."""
    return isinstance(obj, dict) and "__tensor__" in obj


def _bad_tensor(detail: str) -> CertificateError:
    return CertificateError(f"certificate holds a malformed tensor ({detail}); {_REGENERATE}")


def _tensor_spec(obj: Any) -> tuple[np.dtype, tuple[int, ...], str]:
    """Validate an encoded tensor without decoding it: (dtype, shape, base64 text)."""
    if not isinstance(obj, dict) or set(obj) != {"__tensor__"}:
        raise _bad_tensor("expected an object with the single key '__tensor__'")
    spec = obj["__tensor__"]
    if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "base64"}:
        raise _bad_tensor("'__tensor__' must hold exactly dtype, shape and base64")
    dtype, shape, text = spec["dtype"], spec["shape"], spec["base64"]
    if not isinstance(dtype, str) or dtype not in _DTYPES:
        raise _bad_tensor(f"dtype must be one of {', '.join(sorted(_DTYPES))}")
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_TENSOR_NDIM
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)
    ):
        raise _bad_tensor(f"shape must be a list of at most {MAX_TENSOR_NDIM} integers >= 0")
    if not isinstance(text, str) or not _BASE64.fullmatch(text):
        raise _bad_tensor("base64 must be a string of base64 characters")
    np_dtype = np.dtype(dtype)
    numel = bounded_numel(shape, MAX_TENSOR_BYTES // np_dtype.itemsize)
    if numel is None:
        raise _bad_tensor(f"declared shape exceeds the limit of {MAX_TENSOR_BYTES} bytes")
    nbytes = numel * np_dtype.itemsize
    if len(text) != 4 * ((nbytes + 2) // 3):
        raise _bad_tensor(
            f"shape {shape} of {dtype} needs {nbytes} bytes but the base64 text has "
            f"{len(text)} characters"
        )
    return np_dtype, tuple(shape), text


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
            f"{path}: certificate file is malformed (fields: {problem}); {_REGENERATE}"
        )
    if not isinstance(doc["library_version"], str):
        raise CertificateError(f"{path}: library_version must be a string; {_REGENERATE}")


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
    from compact_proofs.proofs import get_strategy  # the registry imports this module

    if not isinstance(entries, list):
        raise CertificateError(f"{path}: 'certificates' must be a list; {_REGENERATE}")
    out = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or set(entry) != {"strategy", "payload"}:
            raise CertificateError(
                f"{path}: certificate entry {i} must be an object with exactly strategy and "
                f"payload; {_REGENERATE}"
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
        if _is_encoded_tensor(node):
            try:
                _tensor_spec(node)
            except CertificateError as exc:
                raise CertificateError(f"{path}: certificate entry {index}: {exc}") from None
        elif isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
