"""Certificate files: the output of proof search, re-checked later by verification alone.

A certificate file is JSON:

    {"format": "compact-proofs-certificate", "format_version": 1,
     "library_version": "...", "model_sha256": "<weights digest>", "model_config": {...},
     "certificates": [{"strategy": "<id>", "payload": {...}}, ...]}

It is bound to one model through the SHA-256 digest of its weights. Tensors inside payloads
are encoded as {"__tensor__": {"dtype", "shape", "base64"}} (`encode_tensor`).
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compact_proofs import __version__
from compact_proofs.errors import CertificateError
from compact_proofs.model import ModelConfig
from compact_proofs.modelfile import atomic_write

FORMAT = "compact-proofs-certificate"
FORMAT_VERSION = 1
_DTYPES = {"uint8", "int16", "int32", "int64", "float32", "float64", "bool"}


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
    """Inverse of `encode_tensor`; raises CertificateError on malformed input."""
    try:
        spec = obj["__tensor__"]
        dtype, shape = spec["dtype"], [int(s) for s in spec["shape"]]
        if dtype not in _DTYPES or any(s < 0 for s in shape):
            raise ValueError
        raw = base64.b64decode(spec["base64"], validate=True)
        a = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
        return torch.from_numpy(a.reshape(shape).astype(dtype))
    except Exception:
        raise CertificateError(
            "certificate holds a malformed tensor; regenerate it with "
            "`compact-proofs prove --certificate-out`"
        ) from None


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
    """Read and validate a certificate file (raises CertificateError)."""
    path = Path(path)
    if not path.is_file():
        raise CertificateError(f"certificate file not found: {path} (check the path)")
    try:
        doc = json.loads(path.read_text())
    except (ValueError, RecursionError):  # bad UTF-8, bad JSON, absurdly deep nesting
        raise CertificateError(
            f"{path} is not a certificate (not JSON); create one with "
            "`compact-proofs prove MODEL --certificate-out FILE`"
        ) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CertificateError(f"{path} is not a compact-proofs certificate file")
    if doc.get("format_version") != FORMAT_VERSION:
        raise CertificateError(
            f"{path}: unsupported certificate format version "
            f"{doc.get('format_version')!r} (expected {FORMAT_VERSION})"
        )
    try:
        certs = [
            Certificate(strategy=str(c["strategy"]), payload=dict(c["payload"]))
            for c in doc["certificates"]
        ]
        return CertificateFile(
            model_sha256=str(doc["model_sha256"]),
            model_config=ModelConfig(**doc["model_config"]),
            certificates=certs,
        )
    except (KeyError, TypeError, ValueError):
        raise CertificateError(
            f"{path}: certificate file is malformed (missing or invalid fields); regenerate it"
        ) from None
