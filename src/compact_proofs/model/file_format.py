"""The model file format: one `.safetensors` file with TransformerLens state-dict names.

Contract (stable; other tools and later versions rely on it):

* tensors `embed.W_E`, `pos_embed.W_pos`, `blocks.0.attn.W_Q|W_K|W_V|W_O`, `unembed.W_U`
  (required, float32) and `blocks.0.attn.b_Q|b_K|b_V|b_O`, `unembed.b_U` (optional, default 0);
* TransformerLens buffers (`blocks.0.attn.IGNORE`, `blocks.0.attn.mask`, hook buffers) are
  ignored;
* metadata key `compact_proofs` holds JSON `{"format_version", "config", "provenance"}`.
  A file without it (e.g. `safetensors.torch.save_file(tl_model.state_dict(), ...)`) loads
  with the configuration inferred from the tensor shapes.

Every problem raises `ModelFileError`/`UnsupportedModelError` with a one-line message.

Hostile files: `load_model` parses the safetensors container itself (strict, bounded JSON
header; every declared shape and byte range checked against the file's size and the limits
below before anything is read; byte ranges must tile the data section exactly, as safetensors
requires). dtype policy: weights must be float32; float16/bfloat16/float64/integer/bool
weights are refused with a message naming the dtype, never converted. Weights that are NaN or
infinite are refused: no proof may be stated about such a model.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from safetensors.torch import save_file

from compact_proofs._version import __version__
from compact_proofs.errors import CompactProofsError, ModelFileError, UnsupportedModelError
from compact_proofs.model.seeds import SELECTED_SEED
from compact_proofs.model.transformer import AttnOnlyTransformer, ModelConfig

FORMAT_VERSION = 1
METADATA_KEY = "compact_proofs"

TL_NAMES: dict[str, str] = {
    "W_E": "embed.W_E",
    "W_pos": "pos_embed.W_pos",
    "W_Q": "blocks.0.attn.W_Q",
    "W_K": "blocks.0.attn.W_K",
    "W_V": "blocks.0.attn.W_V",
    "W_O": "blocks.0.attn.W_O",
    "W_U": "unembed.W_U",
    "b_Q": "blocks.0.attn.b_Q",
    "b_K": "blocks.0.attn.b_K",
    "b_V": "blocks.0.attn.b_V",
    "b_O": "blocks.0.attn.b_O",
    "b_U": "unembed.b_U",
}
SHORT_NAMES = {tl: short for short, tl in TL_NAMES.items()}
REQUIRED = ("W_E", "W_pos", "W_Q", "W_K", "W_V", "W_O", "W_U")
IGNORED = re.compile(r"^blocks\.0\.attn\.(IGNORE|mask)$|(^|\.)hook_[^.]*(\.|$)")
# Limits checked before anything is allocated (hostile headers; see load_model):
MAX_HEADER_BYTES = 2**20  # JSON header; real files have about 2 KiB
MAX_HEADER_ITEMS = 2**16  # JSON values in the header (bounds parsing memory)
MAX_NDIM = 8  # dimensions of one tensor
MAX_PARAMETERS = 2**28  # numbers in one tensor, and in all weights together (1 GiB)
MAX_DIMENSION = 2**20  # d_vocab, n_ctx, d_model, d_head and n_heads each
MAX_INPUTS_BITS = 1000  # d_vocab^n_ctx must stay below 2^1000 (it is used as a float)

# safetensors dtype codes: size in bytes, and the name used in messages
DTYPE_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
    "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
DTYPE_NAMES = {
    "BOOL": "bool", "U8": "uint8", "I8": "int8", "F8_E5M2": "float8_e5m2",
    "F8_E4M3": "float8_e4m3fn", "I16": "int16", "U16": "uint16", "F16": "float16",
    "BF16": "bfloat16", "I32": "int32", "U32": "uint32", "F32": "float32", "I64": "int64",
    "U64": "uint64", "F64": "float64",
}  # fmt: skip


@dataclass
class ModelFile:
    """A loaded model with its provenance (empty when the file had no metadata)."""

    model: AttnOnlyTransformer
    provenance: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def cfg(self) -> ModelConfig:
        return self.model.cfg


def weights_digest(model: AttnOnlyTransformer) -> str:
    """SHA-256 of the model's parameters (names, shapes, float32 bytes), hex.

    Certificates are bound to a model through this digest.
    """
    h = hashlib.sha256()
    for name, tensor in sorted(model.weights().items()):
        t = tensor.detach().to("cpu", torch.float32).contiguous()
        h.update(f"{name}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def save_model(
    model: AttnOnlyTransformer, path: str | Path, provenance: dict | None = None
) -> None:
    """Write `model` atomically (temp file + rename) in the format above."""
    path = Path(path)
    tensors = {
        TL_NAMES[name]: t.detach().to("cpu", torch.float32).contiguous()
        for name, t in model.weights().items()
    }
    meta = {
        "format_version": FORMAT_VERSION,
        "config": asdict(model.cfg),
        "provenance": {"library_version": __version__, **(provenance or {})},
    }
    atomic_write(
        path, lambda tmp: save_file(tensors, tmp, metadata={METADATA_KEY: json.dumps(meta)})
    )


def atomic_write(path: Path, write) -> None:
    """Call `write(tmp_path)` then rename onto `path`; never leaves a partial file at `path`.

    File-system failures (parent is a file, permission denied, disk full, ...) raise
    CompactProofsError with a one-line message.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise CompactProofsError(f"cannot write {path}: {exc}") from None
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; use the usual mode
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise CompactProofsError(f"cannot write {path}: {exc}") from None
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def load_model(path: str | Path, device: str | torch.device = "cpu") -> ModelFile:
    """Load and validate a model file. Raises ModelFileError / UnsupportedModelError.

    Everything the header declares (its own length, tensor shapes, byte ranges, the
    configuration) is checked against the file's size and the limits above before any tensor
    is read, so a hostile file costs at most about its own size in memory and a bounded
    amount of time. Only float32 weights are accepted; a model with a NaN or infinite weight
    is refused (no proof may be stated about it).
    """
    path = Path(path)
    try:
        _check_regular_file(path)
        with open(path, "rb") as f:
            cfg, tensors, provenance = _read_model(path, f)
    except OSError as exc:  # permission denied, name too long, I/O error, ...
        raise ModelFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    model = AttnOnlyTransformer(cfg)
    with torch.no_grad():
        for short, t in tensors.items():
            getattr(model, short).copy_(t)
    return ModelFile(model=model.to(device), provenance=provenance, path=path)


BUNDLED_MODEL = f"max-of-4-seed-{SELECTED_SEED}.safetensors"
SHIPPED_MODELS = Path(str(resources.files("compact_proofs") / "data" / "paper"))


def shipped_model_path(seed: int) -> Path | None:
    """The shipped paper-recipe Max-of-4 model of `seed` (the 151 paper seeds, trained once
    by scripts/train_paper_models.py; `reproduce` uses them by default), or None."""
    path = SHIPPED_MODELS / f"seed-{seed}.safetensors"
    return path if path.is_file() else None


def bundled_model_path() -> Path:
    """Path of the model shipped with the package (the paper's seed-123 Max-of-4 model)."""
    return Path(str(resources.files("compact_proofs") / "data" / BUNDLED_MODEL))


def bundled_model(device: str | torch.device = "cpu") -> ModelFile:
    """The model shipped with the package, loaded (`load_model(bundled_model_path())`)."""
    return load_model(bundled_model_path(), device)


def _read_model(
    path: Path, f: BinaryIO
) -> tuple[ModelConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """Validate the open file `f` in order of cost (header, names, dtypes, sizes, shapes,
    metadata) and only then read the weights: (config, tensors by short name, provenance)."""
    size = os.fstat(f.fileno()).st_size
    header, data_start = _read_header(path, f, size)
    entries, metadata = _parse_header(path, header, size - data_start)
    _check_tensor_names(path, entries)
    used = {SHORT_NAMES[e.name]: e for e in entries if e.name in SHORT_NAMES}
    _check_weight_dtypes(path, used)
    _check_total_size(path, used)
    cfg = _infer_config(path, {short: e.shape for short, e in used.items()})
    _check_sizes(path, cfg)
    provenance: dict[str, Any] = {}
    if METADATA_KEY in metadata:
        provenance = _check_metadata(path, metadata[METADATA_KEY], cfg)
    tensors = {short: _read_tensor(path, f, data_start, e) for short, e in used.items()}
    return cfg, tensors, provenance


# -- strict, bounded JSON (also used by proofs/certificates.py) ------------------------------------


def parse_json_bounded(data: bytes, max_items: int) -> Any:
    """Parse UTF-8 `data` as strict JSON, refusing input that could cost unbounded memory.

    Before parsing, the number of `{`, `[` and `,` bytes (an upper bound on the number of
    containers and values) must be at most `max_items`. Refused as well: duplicate object
    keys (a reader taking the first and one taking the last would see different files),
    `NaN`/`Infinity` literals and numbers that overflow to infinity (not JSON), and nesting
    deeper than the interpreter's recursion limit. Raises ValueError with a one-line reason.
    """
    items = data.count(b"{") + data.count(b"[") + data.count(b",")
    if items > max_items:
        raise ValueError(f"{items} JSON values or more, the limit is {max_items}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    try:
        return json.loads(
            text,
            object_pairs_hook=_unique_keys,
            parse_constant=_no_constant,
            parse_float=_finite_float,
        )
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc.msg} at character {exc.pos}") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate JSON key {short_repr(key)}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {short_repr(text)} is out of range")
    return value


def short_repr(value: object, limit: int = 60) -> str:
    """repr(value), cut to about `limit` characters: hostile names can be megabytes long."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- the safetensors container ---------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    """One tensor as declared by the header: dtype code, shape, byte range in the data."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


def _not_safetensors(path: Path, detail: str) -> ModelFileError:
    return ModelFileError(
        f"{path} is not a valid safetensors file ({detail}); "
        "re-export it with safetensors.torch.save_file"
    )


def _check_regular_file(path: Path) -> None:
    """Refuse missing paths, directories and special files (FIFOs, devices) up front."""
    if not path.exists():
        raise ModelFileError(f"model file not found: {path} (check the path)")
    if path.is_dir():
        raise ModelFileError(f"{path} is a directory; pass a .safetensors model file")
    if not path.is_file():
        raise ModelFileError(f"{path} is not a regular file; pass a .safetensors model file")


def _read_header(path: Path, f: BinaryIO, size: int) -> tuple[bytes, int]:
    """The header's JSON bytes and the offset where the data section starts.

    The 8-byte little-endian header length must fit in the file and in MAX_HEADER_BYTES.
    """
    if size < 8:
        raise _not_safetensors(path, f"only {size} bytes")
    n = int.from_bytes(f.read(8), "little")
    if n > size - 8:
        raise _not_safetensors(path, f"header length {n} exceeds the file's {size} bytes")
    if n > MAX_HEADER_BYTES:
        raise _not_safetensors(path, f"header length {n} exceeds the limit {MAX_HEADER_BYTES}")
    header = f.read(n)
    if len(header) != n:
        raise _not_safetensors(path, "file shrank while being read")
    return header, 8 + n


def _parse_header(path: Path, header: bytes, data_len: int) -> tuple[list[_Entry], dict[str, str]]:
    """Validate the header JSON: every entry's dtype, shape and byte range, and the metadata.

    The byte ranges must tile the data section exactly (no gap, no overlap, nothing after
    the last tensor), as safetensors itself requires; each range's length must equal the
    declared shape's size in bytes.
    """
    try:
        doc = parse_json_bounded(header, MAX_HEADER_ITEMS)
    except ValueError as exc:
        raise _not_safetensors(path, f"header: {exc}") from None
    if not isinstance(doc, dict):
        raise _not_safetensors(path, "header is not a JSON object")
    metadata = doc.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _not_safetensors(path, "__metadata__ must map strings to strings")
    entries = [_parse_entry(path, name, info, data_len) for name, info in doc.items()]
    end = 0
    for e in sorted(entries, key=lambda e: (e.begin, e.end)):
        if e.begin != end:
            raise _not_safetensors(
                path, f"tensor {short_repr(e.name)} starts at byte {e.begin}, expected {end}"
            )
        end = e.end
    if end != data_len:
        raise _not_safetensors(path, f"tensors cover {end} of {data_len} data bytes")
    return entries, metadata


def _parse_entry(path: Path, name: str, info: Any, data_len: int) -> _Entry:
    """One header entry, checked on its own: known dtype, sane shape, range inside the data."""
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise _not_safetensors(
            path, f"entry {short_repr(name)} must have exactly dtype, shape and data_offsets"
        )
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:
        raise _not_safetensors(
            path, f"tensor {short_repr(name)} has unknown dtype {short_repr(dtype)}"
        )
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_NDIM
        or not all(_is_int(s) and s >= 0 for s in shape)
    ):
        raise _not_safetensors(
            path,
            f"tensor {short_repr(name)} has shape {short_repr(shape)}; expected at most "
            f"{MAX_NDIM} non-negative integers",
        )
    numel = bounded_numel(shape, MAX_PARAMETERS)
    if numel is None:
        raise ModelFileError(
            f"{path}: tensor {short_repr(name)} declares an absurd shape {shape} "
            f"(more than {MAX_PARAMETERS} numbers)"
        )
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_is_int(o) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1] <= data_len
    ):
        raise _not_safetensors(
            path,
            f"tensor {short_repr(name)} has data_offsets {short_repr(offsets)} outside the "
            f"file's {data_len} data bytes (truncated?)",
        )
    if offsets[1] - offsets[0] != numel * DTYPE_SIZES[dtype]:
        raise _not_safetensors(
            path,
            f"tensor {short_repr(name)} of shape {shape} and dtype {dtype} needs "
            f"{numel * DTYPE_SIZES[dtype]} bytes but its data_offsets span "
            f"{offsets[1] - offsets[0]}",
        )
    return _Entry(name, dtype, tuple(shape), offsets[0], offsets[1])


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def bounded_numel(shape: list[int], limit: int) -> int | None:
    """Product of `shape`, or None as soon as it exceeds `limit` (no huge-int arithmetic)."""
    if 0 in shape:
        return 0
    n = 1
    for s in shape:
        n *= s
        if n > limit:
            return None
    return n


def _read_tensor(path: Path, f: BinaryIO, data_start: int, e: _Entry) -> torch.Tensor:
    """Read one (already validated, float32) tensor; refuse NaN and infinite values."""
    f.seek(data_start + e.begin)
    raw = f.read(e.end - e.begin)
    if len(raw) != e.end - e.begin:
        raise _not_safetensors(path, "file shrank while being read")
    array = np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(e.shape)
    if not np.isfinite(array).all():
        raise ModelFileError(
            f"{path}: tensor {e.name} contains NaN or Inf values; no proof can be stated "
            "about a model with non-finite weights"
        )
    return torch.from_numpy(array)


# -- the model inside the container -----------------------------------------------------------


def _check_tensor_names(path: Path, entries: list[_Entry]) -> None:
    """Refuse other architectures, unknown names and missing weights."""
    names = [e.name for e in entries]
    unsupported = _unsupported_architecture(names)
    if unsupported:
        raise UnsupportedModelError(f"{path}: {unsupported}")
    for name in names:
        if not IGNORED.search(name) and name not in SHORT_NAMES:
            raise ModelFileError(
                f"{path}: unexpected tensor {short_repr(name)}; expected TransformerLens names "
                f"such as {', '.join(TL_NAMES[n] for n in REQUIRED[:3])}, ..."
            )
    missing = [TL_NAMES[n] for n in REQUIRED if TL_NAMES[n] not in names]
    if missing:
        raise ModelFileError(f"{path}: missing tensor(s) {', '.join(missing)}")


def _check_weight_dtypes(path: Path, used: dict[str, _Entry]) -> None:
    """Every weight and bias must be float32.

    Policy: other dtypes are refused, not converted. float16/bfloat16 would widen exactly, but
    a proof is about the float32 model the library computes with, so the user converts
    explicitly (`tensor.float()`) and knows which weights were certified; float64 would not
    narrow exactly; integer and bool weights are almost surely the wrong file.
    """
    for e in used.values():
        if e.dtype != "F32":
            raise ModelFileError(
                f"{path}: tensor {e.name} has dtype {DTYPE_NAMES.get(e.dtype, e.dtype)}; "
                "weights must be float32 (convert with tensor.float() and re-save)"
            )


def _check_total_size(path: Path, used: dict[str, _Entry]) -> None:
    """All weights together may hold at most MAX_PARAMETERS numbers (sparse files can declare
    terabytes that the file system never stores)."""
    total = sum(e.end - e.begin for e in used.values()) // DTYPE_SIZES["F32"]
    if total > MAX_PARAMETERS:
        raise UnsupportedModelError(
            f"{path}: the weights hold {total} numbers, more than the limit {MAX_PARAMETERS}"
        )


def _unsupported_architecture(keys: list[str]) -> str | None:
    layers = {int(m.group(1)) for k in keys if (m := re.match(r"blocks\.(\d{1,9})\.", k))}
    if any(layer > 0 for layer in layers):
        return (
            f"model has {max(layers) + 1} layers; only one-layer attention-only "
            "transformers are supported"
        )
    if any(".mlp." in k for k in keys):
        return "model has MLP weights; only attention-only transformers are supported"
    if any(re.search(r"(^|\.)ln\w*\.", k) for k in keys):
        return "model has LayerNorm weights; only models without normalisation are supported"
    return None


def _infer_config(path: Path, shapes: dict[str, tuple[int, ...]]) -> ModelConfig:
    """The configuration implied by W_E, W_pos and W_Q; every other shape must agree."""

    def dims(name: str, n: int) -> tuple[int, ...]:
        shape = shapes[name]
        if len(shape) != n:
            raise ModelFileError(
                f"{path}: tensor {TL_NAMES[name]} has shape {list(shape)}; expected {n} dims"
            )
        if any(s == 0 for s in shape):
            raise ModelFileError(f"{path}: tensor {TL_NAMES[name]} is empty (shape {list(shape)})")
        return shape

    v, d = dims("W_E", 2)
    k, _ = dims("W_pos", 2)
    h, _, e = dims("W_Q", 3)
    if dims("W_U", 2)[1] != v:
        raise UnsupportedModelError(
            f"{path}: unembed.W_U has {shapes['W_U'][1]} outputs but embed.W_E has {v} tokens; "
            "Max-of-K needs d_vocab_out == d_vocab"
        )
    cfg = ModelConfig(d_vocab=v, n_ctx=k, d_model=d, d_head=e, n_heads=h)
    for short, expected in cfg.shapes().items():
        if short in shapes and shapes[short] != expected:
            raise ModelFileError(
                f"{path}: tensor {TL_NAMES[short]} has shape {list(shapes[short])}, "
                f"expected {list(expected)} (inferred from embed.W_E, pos_embed.W_pos, "
                "blocks.0.attn.W_Q)"
            )
    return cfg


def config_size_problem(cfg: ModelConfig) -> str | None:
    """None if `cfg` is within the library's limits, else a one-line reason.

    Limits: every size at most MAX_DIMENSION, and d_vocab^n_ctx (the number of inputs, which
    bounds and reports divide by and print as floats) below 2^MAX_INPUTS_BITS.
    """
    for name, value in asdict(cfg).items():
        if value > MAX_DIMENSION:
            return f"{name} = {value} exceeds the limit {MAX_DIMENSION}"
    if cfg.d_vocab > 1 and cfg.n_ctx * math.log2(cfg.d_vocab) >= MAX_INPUTS_BITS:
        return (
            f"d_vocab^n_ctx = {cfg.d_vocab}^{cfg.n_ctx} inputs exceeds the limit "
            f"2^{MAX_INPUTS_BITS}"
        )
    return None


def _check_sizes(path: Path, cfg: ModelConfig) -> None:
    problem = config_size_problem(cfg)
    if problem:
        raise UnsupportedModelError(f"{path}: {problem}; such a model is not supported")


def _check_metadata(path: Path, raw: str, cfg: ModelConfig) -> dict[str, Any]:
    """Validate the `compact_proofs` metadata against the tensors; returns the provenance."""

    def bad(detail: str) -> ModelFileError:
        return ModelFileError(f"{path}: metadata '{METADATA_KEY}' is invalid ({detail})")

    try:
        meta = parse_json_bounded(raw.encode(), MAX_HEADER_ITEMS)
    except ValueError as exc:
        raise bad(str(exc)) from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise bad("expected a JSON object with a 'config' object")
    version = meta.get("format_version", FORMAT_VERSION)
    if not _is_int(version) or version != FORMAT_VERSION:
        raise bad(f"format_version {short_repr(version)}; this library reads {FORMAT_VERSION}")
    provenance = meta.get("provenance", {})
    if not isinstance(provenance, dict):
        raise bad("'provenance' is not a JSON object")
    fields = set(asdict(cfg))
    config = meta["config"]
    if set(config) != fields or not all(_is_int(x) for x in config.values()):
        raise bad(f"'config' must hold exactly the integers {', '.join(sorted(fields))}")
    try:
        declared = ModelConfig(**config)
    except ValueError as exc:
        raise bad(str(exc)) from None
    if declared != cfg:
        raise ModelFileError(
            f"{path}: metadata declares {asdict(declared)} but the tensors have shapes of "
            f"{asdict(cfg)}; the file is inconsistent"
        )
    return provenance
