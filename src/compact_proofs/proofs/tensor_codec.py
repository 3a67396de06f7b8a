"""Tensors inside certificate payloads: an exact JSON encoding, validated before decoding.

An encoded tensor is {"__tensor__": {"dtype", "shape", "base64"}}: the raw little-endian bytes
of the array in base64. `decode_tensor` checks the declared dtype, shape and the text's length
against each other, within fixed limits, before it decodes anything (hostile files).
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from typing import Any

import numpy as np
import torch

from compact_proofs.errors import CertificateError
from compact_proofs.model.file_format import bounded_numel

DTYPES = {"uint8", "int16", "int32", "int64", "float32", "float64", "bool"}
MAX_TENSOR_NDIM = 8
MAX_TENSOR_BYTES = 2**30  # one encoded tensor's decoded size
REGENERATE = "regenerate it with `compact-proofs prove MODEL --certificate-out FILE`"
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def update_digest(digest: Any, t: torch.Tensor) -> None:
    """Feed a hashlib digest t's shape, dtype, device and exact bytes (equal digests: equal
    tensors, whatever the dtype)."""
    t = t.detach()
    digest.update(repr((tuple(t.shape), t.dtype, str(t.device))).encode())
    digest.update(t.contiguous().reshape(-1).view(torch.uint8).cpu().numpy().tobytes())


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
    dtype, shape, text = tensor_spec(obj)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _bad_tensor("its base64 text is not valid base64") from None
    nbytes = dtype.itemsize * math.prod(shape)  # bounded: tensor_spec checked it
    if len(raw) != nbytes:
        raise _bad_tensor(f"its base64 text decodes to {len(raw)} bytes, not {nbytes}")
    array = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)
    if dtype == np.bool_ and bool((np.frombuffer(raw, dtype=np.uint8) > 1).any()):
        raise _bad_tensor("a bool tensor holds bytes other than 0 and 1")
    return torch.from_numpy(array)


def is_encoded_tensor(obj: Any) -> bool:
    """Whether `obj` claims to be an encoded tensor (a dict with the key `__tensor__`)."""
    return isinstance(obj, dict) and "__tensor__" in obj


def _bad_tensor(detail: str) -> CertificateError:
    return CertificateError(f"certificate holds a malformed tensor ({detail}); {REGENERATE}")


def tensor_spec(obj: Any) -> tuple[np.dtype, tuple[int, ...], str]:
    """Validate an encoded tensor without decoding it: (dtype, shape, base64 text)."""
    if not isinstance(obj, dict) or set(obj) != {"__tensor__"}:
        raise _bad_tensor("expected an object with the single key '__tensor__'")
    spec = obj["__tensor__"]
    if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "base64"}:
        raise _bad_tensor("'__tensor__' must hold exactly dtype, shape and base64")
    dtype, shape, text = spec["dtype"], spec["shape"], spec["base64"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise _bad_tensor(f"dtype must be one of {', '.join(sorted(DTYPES))}")
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
