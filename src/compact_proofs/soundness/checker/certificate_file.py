"""The certificate file, read and validated by the checker itself against
docs/certificate-format.md (duplicated on purpose from proofs/certificates.py and
proofs/tensor_codec.py), and the strategy ids a certificate may name."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import numpy as np

from compact_proofs.soundness.checker.errors import CertificateError
from compact_proofs.soundness.checker.model_file import same_ints, strict_json

MAX_CERTIFICATE_BYTES = 2**30
MAX_JSON_VALUES = 2**20  # '{', '[' and ',' bytes in a certificate file
CERT_FORMAT = "compact-proofs-certificate"
TENSOR_DTYPES = {"uint8", "int16", "int32", "int64", "float32", "float64", "bool"}
TOP_LEVEL = {"format", "format_version", "library_version", "model_sha256", "model_config",
             "certificates"}  # fmt: skip
CONFIG_KEYS = {"d_vocab", "n_ctx", "d_model", "d_head", "n_heads"}
EU = ("mean_query+max_diff", "svd_query+max_diff", "max_diff", "max_diff_exact",
      "global_max_diff_exact")  # fmt: skip
ATTENTION = ("mean_query+diff", "drop_average_query_per_output_logit_reasoning")
ERROR = ("svd", "max_diff", "max_diff_subproduct", "max_diff_subproduct_recursive",
         "mean+max_diff", "mean+max_diff_subproduct", "mean+max_diff_subproduct_recursive",
         "mean_recursive+max_diff_subproduct_recursive", "exact_EQKE+max_diff_exact",
         "max_diff_exact")  # fmt: skip


def _subcubic_ids() -> dict[str, tuple[str, str, str]]:
    """Strategy id (and LaTeX-key alias) -> (EU, attention, error) for the 100 configurations."""

    def key(s: str) -> str:
        return "".join(p.capitalize() for p in re.split(r"[_+\-]", s) if p)

    out = {}
    for eu, att, err in ((eu, att, err) for eu in EU for att in ATTENTION for err in ERROR):
        out[f"EUPU-{eu}--attn-{att}--attn-err-{err}".replace("_", "-")] = (eu, att, err)
        out[f"EUPU{key(eu)}Attn{key(att)}AttnErr{key(err)}"] = (eu, att, err)
    return out


SUBCUBIC = _subcubic_ids()
KNOWN_STRATEGIES = {"brute-force", "cubic", "separable", "separable-lite", "separable-subcubic",
                    *SUBCUBIC}  # fmt: skip


def load_certificate_file(path: str | Path) -> dict[str, Any]:
    """Parse a certificate file and check it against docs/certificate-format.md (every rule
    but the two that need the model: digest and configuration, `check_certificates`)."""
    path = Path(path)
    if not path.is_file():
        raise CertificateError(f"certificate file not found: {path} (check the path)")
    if path.stat().st_size > MAX_CERTIFICATE_BYTES:
        raise CertificateError(f"{path} is larger than {MAX_CERTIFICATE_BYTES} bytes")
    raw = path.read_bytes()
    if raw.count(b"{") + raw.count(b"[") + raw.count(b",") > MAX_JSON_VALUES:
        raise CertificateError(f"{path}: more than {MAX_JSON_VALUES} JSON values")
    try:
        doc = strict_json(raw)
    except (ValueError, RecursionError):
        raise CertificateError(f"{path} is not a certificate (not strict JSON)") from None
    if not isinstance(doc, dict) or doc.get("format") != CERT_FORMAT:
        raise CertificateError(f"{path} is not a compact-proofs certificate file")
    if not same_ints(doc.get("format_version"), 1):
        raise CertificateError(f"{path}: unsupported format version {doc.get('format_version')!r}")
    problem = _envelope_problem(doc)
    if problem:
        raise CertificateError(f"{path}: certificate file is malformed ({problem})")
    for i, cert in enumerate(doc["certificates"]):
        for tensor in _encoded_tensors(cert["payload"]):
            try:
                _tensor_bytes(tensor)
            except ValueError as exc:
                raise CertificateError(f"{path}: entry {i}: malformed tensor ({exc})") from None
    return doc


def _envelope_problem(doc: dict[str, Any]) -> str | None:
    """What breaks the file's top-level rules (docs/certificate-format.md), or None."""
    if set(doc) != TOP_LEVEL:
        return f"its keys must be exactly {', '.join(sorted(TOP_LEVEL))}"
    if not isinstance(doc["library_version"], str):
        return "library_version must be a string"
    digest = doc["model_sha256"]
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        return "model_sha256 must be 64 lowercase hex digits"
    config = doc["model_config"]
    if (
        not isinstance(config, dict)
        or set(config) != CONFIG_KEYS
        or not all(type(x) is int and x >= 1 for x in config.values())
    ):
        return f"model_config must hold exactly the positive integers {sorted(CONFIG_KEYS)}"
    if not isinstance(doc["certificates"], list):
        return "certificates must be a list"
    for i, c in enumerate(doc["certificates"]):
        if not (isinstance(c, dict) and set(c) == {"strategy", "payload"}) or not (
            isinstance(c["strategy"], str) and isinstance(c["payload"], dict)
        ):
            return f"entry {i} must be exactly a string strategy and an object payload"
        if c["strategy"] not in KNOWN_STRATEGIES:
            return f"entry {i} names unknown strategy {c['strategy'][:60]!r}"
    return None


def _encoded_tensors(payload: Any) -> list[Any]:
    """Every value of the form {"__tensor__": ...} inside a payload (iteratively)."""
    found, stack = [], [payload]
    while stack:
        node = stack.pop()
        if isinstance(node, dict) and "__tensor__" in node:
            found.append(node)
        elif isinstance(node, dict | list):
            stack.extend(node.values() if isinstance(node, dict) else node)
    return found


def _tensor_bytes(obj: Any) -> tuple[np.dtype, list[int], bytes]:
    """(dtype, shape, raw bytes) of an encoded tensor; ValueError if it breaks the rules."""
    if not isinstance(obj, dict) or set(obj) != {"__tensor__"}:
        raise ValueError("an encoded tensor is an object with the single key __tensor__")
    spec = obj["__tensor__"]
    if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "base64"}:
        raise ValueError("__tensor__ holds exactly dtype, shape and base64")
    dtype, shape, text = spec["dtype"], spec["shape"], spec["base64"]
    if not isinstance(dtype, str) or dtype not in TENSOR_DTYPES:
        raise ValueError("unknown dtype")
    if not (isinstance(shape, list) and len(shape) <= 8) or not all(
        type(n) is int and n >= 0 for n in shape
    ):
        raise ValueError("shape must be at most 8 integers >= 0")
    itemsize, numel = np.dtype(dtype).itemsize, 1
    for n in shape:
        numel = min(numel * n, MAX_CERTIFICATE_BYTES + 1)
    if numel * itemsize > MAX_CERTIFICATE_BYTES:
        raise ValueError("shape larger than the limit")
    if not isinstance(text, str) or len(text) != 4 * ((numel * itemsize + 2) // 3):
        raise ValueError("base64 length does not match dtype and shape")
    try:
        raw = base64.b64decode(text, validate=True)
    except Exception:
        raise ValueError("invalid base64") from None
    if len(raw) != numel * itemsize or (dtype == "bool" and any(b > 1 for b in raw)):
        raise ValueError("bytes do not match dtype and shape")
    return np.dtype(dtype), shape, raw


def decode_tensor(obj: Any) -> np.ndarray:
    """{"__tensor__": {"dtype", "shape", "base64"}} (little-endian raw bytes) -> array."""
    try:
        dtype, shape, raw = _tensor_bytes(obj)
    except ValueError:
        raise CertificateError("certificate holds a malformed tensor; regenerate it") from None
    return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).reshape(shape)
