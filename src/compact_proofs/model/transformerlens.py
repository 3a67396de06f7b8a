"""Export to TransformerLens: our model as a `HookedTransformer` state dict and config.

TransformerLens is optional and nothing here imports it. The export is two plain objects:

* `transformerlens_state_dict(model)`: every tensor of a one-layer attention-only
  `HookedTransformer` state dict, so that `load_state_dict(..., strict=True)` accepts it: the
  weights and biases (float32; zero biases stay zero) and the attention buffers
  `blocks.0.attn.mask` (the causal mask, bool [n_ctx, n_ctx], as TransformerLens 2.x registers
  it; 3.x keeps an empty placeholder and accepts the full mask when loading) and
  `blocks.0.attn.IGNORE` (-inf, the score of masked positions);
* `transformerlens_config(cfg)`: the `HookedTransformerConfig` keyword arguments (JSON-able).

With both, `HookedTransformer(HookedTransformerConfig(**config))` computes our logits
(`forward_all_positions`; the last position is `forward`): no LayerNorm, no MLP, causal
attention scaled by sqrt(d_head) (TransformerLens's default, `use_attn_scale`), learned
absolute positions (`standard`), and logits read from `resid_pre + attn_out`.
`default_prepend_bos` is off: a Max-of-K input is exactly its n_ctx tokens, with no BOS token.

`HookedTransformer` exists in TransformerLens 2.x and 3.x (deprecated there) and was removed
in 4.0, hence the optional extra `tl = ["transformer_lens>=2,<4"]`.

`export_transformerlens(model, out_dir)` writes both as `out_dir/model.safetensors` and
`out_dir/config.json`, each atomically. The safetensors file also carries our `compact_proofs`
metadata (configuration and provenance), so `load_model` reads it back with its provenance
(the buffers are among the names the loader ignores).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from compact_proofs._version import __version__
from compact_proofs.errors import CompactProofsError
from compact_proofs.model.file_format import FORMAT_VERSION, METADATA_KEY, TL_NAMES, atomic_write
from compact_proofs.model.transformer import AttnOnlyTransformer, ModelConfig

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
MASK = "blocks.0.attn.mask"
IGNORE = "blocks.0.attn.IGNORE"
# The order in which HookedTransformer registers its parameters and buffers.
STATE_DICT_ORDER = (
    "W_E", "W_pos", "W_Q", "W_O", "b_Q", "b_O", "W_K", "W_V", "b_K", "b_V", MASK, IGNORE,
    "W_U", "b_U",
)  # fmt: skip


def transformerlens_state_dict(model: AttnOnlyTransformer) -> dict[str, torch.Tensor]:
    """The `HookedTransformer` state dict of `model`: float32 CPU copies of every weight and
    bias under its TransformerLens name, plus the attention buffers `mask` and `IGNORE`."""
    weights = model.weights()
    n = model.cfg.n_ctx
    buffers = {
        MASK: torch.ones(n, n, dtype=torch.bool).tril(),
        IGNORE: torch.tensor(-torch.inf, dtype=torch.float32),
    }
    out: dict[str, torch.Tensor] = {}
    for key in STATE_DICT_ORDER:
        if key in buffers:
            out[key] = buffers[key]
        else:
            out[TL_NAMES[key]] = weights[key].to("cpu", torch.float32).contiguous().clone()
    return out


def transformerlens_config(cfg: ModelConfig) -> dict[str, Any]:
    """`HookedTransformerConfig` keyword arguments for a model of configuration `cfg`.

    Only arguments that TransformerLens 2.0 already has; the attention scale is its default,
    sqrt(d_head), as ours (`ModelConfig.attn_scale`).
    """
    return {
        "n_layers": 1,
        "d_model": cfg.d_model,
        "n_ctx": cfg.n_ctx,
        "d_head": cfg.d_head,
        "n_heads": cfg.n_heads,
        "d_vocab": cfg.d_vocab,
        "d_vocab_out": cfg.d_vocab,
        "attn_only": True,
        "act_fn": None,
        "normalization_type": None,
        "positional_embedding_type": "standard",
        "attention_dir": "causal",
        "use_attn_scale": True,
        "default_prepend_bos": False,
    }


def export_transformerlens(
    model: AttnOnlyTransformer,
    out_dir: str | Path,
    provenance: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Write `out_dir/model.safetensors` (state dict) and `out_dir/config.json` (config).

    Returns the two paths. Refuses (CompactProofsError, one line) an `out_dir` that is not a
    directory, and existing output files unless `overwrite`. Either both files are written or
    neither is (nor a temporary file, nor a directory this call created).
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise CompactProofsError(f"{out_dir} exists and is not a directory; pass a directory")
    model_path, config_path = out_dir / MODEL_FILE, out_dir / CONFIG_FILE
    for path in (model_path, config_path):
        if path.exists() and not overwrite:
            raise CompactProofsError(f"{path} exists; pass overwrite=True to replace it")
    tensors = transformerlens_state_dict(model)
    meta = {
        "format_version": FORMAT_VERSION,
        "config": asdict(model.cfg),
        "provenance": {"library_version": __version__, **(provenance or {})},
    }
    config_text = json.dumps(transformerlens_config(model.cfg), indent=2) + "\n"

    def write_model(tmp: str) -> None:
        save_file(tensors, tmp, metadata={METADATA_KEY: json.dumps(meta)})
        atomic_write(config_path, lambda t: Path(t).write_text(config_text))  # before the rename

    _all_or_nothing(out_dir, config_path, lambda: atomic_write(model_path, write_model))
    return [model_path, config_path]


def _all_or_nothing(out_dir: Path, config_path: Path, write: Callable[[], None]) -> None:
    """Run `write`; if it fails, remove the config file and the directories it created."""
    top = None if out_dir.exists() else out_dir  # the highest directory `write` will create
    while top is not None and not top.parent.exists():
        top = top.parent
    new_config = not config_path.exists()
    try:
        write()
    except BaseException:
        if new_config:
            config_path.unlink(missing_ok=True)
        for directory in (out_dir, *out_dir.parents) if top else ():
            if directory.is_dir() and not any(directory.iterdir()):
                directory.rmdir()
            if directory == top:
                break
        raise
