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
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from compact_proofs import __version__
from compact_proofs.errors import CompactProofsError, ModelFileError, UnsupportedModelError
from compact_proofs.model import AttnOnlyTransformer, ModelConfig

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
# Largest parameter count we agree to materialise (guards against headers declaring absurd
# shapes; 2^31 float32 numbers = 8 GiB).
MAX_PARAMETERS = 2**31


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
    """Load and validate a model file. Raises ModelFileError / UnsupportedModelError."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model file not found: {path} (check the path)")
    if path.is_dir():
        raise ModelFileError(f"{path} is a directory; pass a .safetensors model file")
    tensors, metadata = _read_safetensors(path)
    cfg = _infer_config(path, tensors)
    provenance: dict[str, Any] = {}
    if metadata and METADATA_KEY in metadata:
        provenance = _check_metadata(path, metadata[METADATA_KEY], cfg)
    model = AttnOnlyTransformer(cfg)
    with torch.no_grad():
        for short in TL_NAMES:
            if short in tensors:
                getattr(model, short).copy_(tensors[short])
    return ModelFile(model=model.to(device), provenance=provenance, path=path)


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str] | None]:
    size = path.stat().st_size
    if size < 8:
        raise ModelFileError(f"{path} is not a safetensors file (only {size} bytes)")
    with open(path, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
    if header_len > min(size - 8, 100 * 2**20):
        raise ModelFileError(
            f"{path} is not a valid safetensors file (truncated or not safetensors); "
            "re-export it with safetensors.torch.save_file"
        )
    tensors: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata()
            keys = list(f.keys())
            unsupported = _unsupported_architecture(keys)
            if unsupported:
                raise UnsupportedModelError(f"{path}: {unsupported}")
            for key in keys:
                if IGNORED.search(key):
                    continue
                if key not in SHORT_NAMES:
                    raise ModelFileError(
                        f"{path}: unexpected tensor {key!r}; expected TransformerLens names "
                        f"such as {', '.join(TL_NAMES[n] for n in REQUIRED[:3])}, ..."
                    )
                shape = f.get_slice(key).get_shape()
                if _numel(shape) > MAX_PARAMETERS:
                    raise ModelFileError(f"{path}: tensor {key} declares an absurd shape {shape}")
                tensors[SHORT_NAMES[key]] = f.get_tensor(key)
    except (UnsupportedModelError, ModelFileError):
        raise
    except Exception as exc:  # safetensors raises several unrelated exception types
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelFileError(
            f"{path} is not a readable safetensors model ({detail}); "
            "re-export it with safetensors.torch.save_file"
        ) from None
    missing = [TL_NAMES[n] for n in REQUIRED if n not in tensors]
    if missing:
        raise ModelFileError(f"{path}: missing tensor(s) {', '.join(missing)}")
    for short, t in tensors.items():
        if t.dtype != torch.float32:
            raise ModelFileError(
                f"{path}: tensor {TL_NAMES[short]} has dtype {str(t.dtype).removeprefix('torch.')}"
                "; weights must be float32 (convert with tensor.float() and re-save)"
            )
        if not bool(torch.isfinite(t).all()):
            raise ModelFileError(f"{path}: tensor {TL_NAMES[short]} contains NaN or Inf values")
    return tensors, metadata


def _numel(shape: list[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _unsupported_architecture(keys: list[str]) -> str | None:
    layers = {int(m.group(1)) for k in keys if (m := re.match(r"blocks\.(\d+)\.", k))}
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


def _infer_config(path: Path, t: dict[str, torch.Tensor]) -> ModelConfig:
    def dims(name: str, n: int) -> tuple[int, ...]:
        shape = tuple(t[name].shape)
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
            f"{path}: unembed.W_U has {t['W_U'].shape[1]} outputs but embed.W_E has {v} tokens; "
            "Max-of-K needs d_vocab_out == d_vocab"
        )
    cfg = ModelConfig(d_vocab=v, n_ctx=k, d_model=d, d_head=e, n_heads=h)
    for short, expected in cfg.shapes().items():
        if short in t and tuple(t[short].shape) != expected:
            raise ModelFileError(
                f"{path}: tensor {TL_NAMES[short]} has shape {list(t[short].shape)}, "
                f"expected {list(expected)} (inferred from embed.W_E, pos_embed.W_pos, "
                "blocks.0.attn.W_Q)"
            )
    return cfg


def _check_metadata(path: Path, raw: str, cfg: ModelConfig) -> dict[str, Any]:
    try:
        meta = json.loads(raw)
        declared = ModelConfig(**meta["config"])
        provenance = dict(meta.get("provenance", {}))
    except Exception:
        raise ModelFileError(
            f"{path}: metadata '{METADATA_KEY}' is not valid JSON with a 'config' object"
        ) from None
    if declared != cfg:
        raise ModelFileError(
            f"{path}: metadata declares {asdict(declared)} but the tensors have shapes of "
            f"{asdict(cfg)}; the file is inconsistent"
        )
    return provenance
