"""The model file, read and validated by the checker itself (duplicated on purpose from
model/file_format.py): TransformerLens names, float32, finite, consistent shapes and
metadata; strict JSON; and the weights digest that ties a certificate file to its model."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open

from compact_proofs.soundness.checker.errors import ModelFileError, UnsupportedModelError

MAX_VOCAB = 2**13  # larger vocabularies would need v x v tables of over 512 MiB
METADATA_KEY = "compact_proofs"
TL_NAMES = {
    "W_E": "embed.W_E", "W_pos": "pos_embed.W_pos", "W_Q": "blocks.0.attn.W_Q",
    "W_K": "blocks.0.attn.W_K", "W_V": "blocks.0.attn.W_V", "W_O": "blocks.0.attn.W_O",
    "W_U": "unembed.W_U", "b_Q": "blocks.0.attn.b_Q", "b_K": "blocks.0.attn.b_K",
    "b_V": "blocks.0.attn.b_V", "b_O": "blocks.0.attn.b_O", "b_U": "unembed.b_U",
}  # fmt: skip
IGNORED = re.compile(r"^blocks\.0\.attn\.(IGNORE|mask)$|(^|\.)hook_[^.]*(\.|$)")


def strict_json(raw: bytes | str) -> Any:
    """json.loads refusing duplicate keys and NaN/Infinity (ValueError): a file must not mean
    one thing to this checker and another to the main loader."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        if len({k for k, _ in items}) != len(items):
            raise ValueError("duplicate key")
        return dict(items)

    def constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    def finite(text: str) -> float:
        value = float(text)
        if not np.isfinite(value):
            raise ValueError(f"number {text[:20]} is out of range")
        return value

    return json.loads(raw, object_pairs_hook=pairs, parse_constant=constant, parse_float=finite)


def same_ints(a: Any, b: Any) -> bool:
    """Equal, with integers required to be int (JSON true is not 1)."""
    if isinstance(b, dict):
        return (
            isinstance(a, dict) and a.keys() == b.keys() and all(same_ints(a[x], b[x]) for x in b)
        )
    return type(a) is type(b) and a == b


@dataclass(frozen=True)
class Model:
    """float32 weights by short name (all 12, missing biases as zeros) and the shape config."""

    w: dict[str, np.ndarray]
    v: int
    k: int
    d: int
    d_head: int
    heads: int

    @property
    def config(self) -> dict[str, int]:
        return {"d_vocab": self.v, "n_ctx": self.k, "d_model": self.d,
                "d_head": self.d_head, "n_heads": self.heads}  # fmt: skip

    def f64(self, name: str) -> np.ndarray:
        return self.w[name].astype(np.float64)


def _header_problem(prefix_len: int, size: int, n_bytes: int) -> str | None:
    """What is wrong with the 8-byte header length, in the main loader's words, or None."""
    if prefix_len < 8:
        return f"only {n_bytes} bytes"
    if size > n_bytes - 8:
        return f"header length {size} exceeds the file's {n_bytes} bytes"
    if not 0 < size <= 2**20:
        return f"header length {size} is not in [1, 2^20]"
    return None


def _check_layout(path: Path, header: Any, data_len: int) -> None:
    """Every tensor's byte range lies inside the file (a truncated file is named as such, in
    the words of the main loader, not in the library's)."""
    entries = header.items() if isinstance(header, dict) else ()
    for name, info in entries:
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if name == "__metadata__" or not isinstance(offsets, list) or len(offsets) != 2:
            continue  # malformed entries are refused by the library below
        if (
            not all(type(o) is int for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= data_len
        ):
            raise ModelFileError(
                f"{path} is not a valid safetensors file (tensor {name!r} has data_offsets "
                f"{offsets} outside the file's {data_len} data bytes (truncated?)); re-export "
                "it with safetensors.torch.save_file"
            )


def _read_tensors(path: Path) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """(metadata, tensors by short name). The header is parsed strictly first (the library
    tolerates duplicate tensor names); other architectures, unknown names and non-float32
    tensors are refused."""
    try:
        with path.open("rb") as f:
            prefix = f.read(8)
            size = int.from_bytes(prefix, "little")
            problem = _header_problem(len(prefix), size, path.stat().st_size)
            if problem:
                raise ModelFileError(
                    f"{path} is not a valid safetensors file ({problem}); re-export it with "
                    "safetensors.torch.save_file"
                )
            _check_layout(path, strict_json(f.read(size)), path.stat().st_size - 8 - size)
        with safe_open(str(path), framework="np") as f:
            meta, keys = f.metadata() or {}, list(f.keys())
            if any(re.match(r"blocks\.[1-9]", n) or ".mlp." in n or ".ln" in n for n in keys):
                raise UnsupportedModelError(
                    f"{path}: only one-layer attention-only models without LayerNorm are supported"
                )
            short, w = {tl: s for s, tl in TL_NAMES.items()}, {}
            for name in (n for n in keys if not IGNORED.search(n)):
                if name not in short:
                    raise ModelFileError(f"{path}: unexpected tensor {name!r}")
                if f.get_slice(name).get_dtype() != "F32":
                    raise ModelFileError(f"{path}: tensor {name} is not float32")
                w[short[name]] = f.get_tensor(name)
            return meta, w
    except (ModelFileError, UnsupportedModelError):
        raise
    except Exception as exc:  # safetensors raises several unrelated exception types
        detail = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ModelFileError(f"{path} is not a readable safetensors model ({detail})") from None


def load_model_file(path: str | Path) -> Model:
    """Parse and validate a model file (TransformerLens names, float32, finite, consistent
    shapes and metadata). Raises ModelFileError / UnsupportedModelError (one line)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file not found or not a file: {path} (check the path)")
    meta, w = _read_tensors(path)
    missing = [TL_NAMES[n] for n in TL_NAMES if n.startswith("W") and n not in w]
    if missing:
        raise ModelFileError(f"{path}: missing tensor(s) {', '.join(missing)}")
    if any(w[n].ndim != nd for n, nd in (("W_E", 2), ("W_pos", 2), ("W_Q", 3), ("W_U", 2))):
        raise ModelFileError(f"{path}: W_E, W_pos, W_Q or W_U has the wrong number of dims")
    (v, d), k, (h, _, e) = w["W_E"].shape, w["W_pos"].shape[0], w["W_Q"].shape
    if min(v, d, k, h, e) < 1:
        raise ModelFileError(f"{path}: a weight tensor is empty")
    if w["W_U"].shape[1] != v:
        raise UnsupportedModelError(f"{path}: Max-of-K needs d_vocab_out == d_vocab")
    if v > MAX_VOCAB:
        raise UnsupportedModelError(f"{path}: d_vocab {v} is above the checker's {MAX_VOCAB}")
    shapes = {"W_E": (v, d), "W_pos": (k, d), "W_Q": (h, d, e), "W_K": (h, d, e),
              "W_V": (h, d, e), "W_O": (h, e, d), "W_U": (d, v), "b_Q": (h, e), "b_K": (h, e),
              "b_V": (h, e), "b_O": (d,), "b_U": (v,)}  # fmt: skip
    for name, shape in shapes.items():
        w.setdefault(name, np.zeros(shape, dtype=np.float32))
        if w[name].shape != shape:
            raise ModelFileError(f"{path}: tensor {TL_NAMES[name]} has shape {w[name].shape}")
        if not np.isfinite(w[name]).all():
            raise ModelFileError(f"{path}: tensor {TL_NAMES[name]} contains NaN or Inf values")
    model = Model(w, v, k, d, e, h)
    if METADATA_KEY in meta:
        try:
            declared = strict_json(meta[METADATA_KEY])["config"]
        except Exception:
            raise ModelFileError(f"{path}: metadata {METADATA_KEY!r} is not valid JSON") from None
        if not same_ints(declared, model.config):
            raise ModelFileError(f"{path}: metadata config {declared} contradicts the tensors")
    return model


def weights_digest(model: Model) -> str:
    """SHA-256 over the parameters sorted by short name: "name:(shape);" then float32 bytes."""
    h = hashlib.sha256()
    for name in sorted(model.w):
        a = np.ascontiguousarray(model.w[name], dtype=np.float32)
        h.update(f"{name}:{tuple(int(s) for s in a.shape)};".encode())
        h.update(a.tobytes())
    return h.hexdigest()
