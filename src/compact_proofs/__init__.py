"""compact-proofs: computer-checked lower bounds on the accuracy of Max-of-K transformers.

Reference implementation of "Compact Proofs of Model Performance via Mechanistic
Interpretability" (Gross et al., NeurIPS 2024). The package is layered; imports run one way
(docs/architecture.md):

    cli -> pipeline -> analysis -> proofs -> soundness -> model

`soundness.checker` is the independent certificate checker: it imports nothing of the rest.
The names below are the public API, re-exported lazily so that `import compact_proofs` (and
the command line's `--help`) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from compact_proofs._version import __version__

_API: dict[str, str] = {
    "AttnOnlyTransformer": "compact_proofs.model.transformer",
    "ModelConfig": "compact_proofs.model.transformer",
    "ModelFile": "compact_proofs.model.file_format",
    "load_model": "compact_proofs.model.file_format",
    "save_model": "compact_proofs.model.file_format",
    "bundled_model": "compact_proofs.model.file_format",
    "bundled_model_path": "compact_proofs.model.file_format",
    "TrainingRecipe": "compact_proofs.model.training",
    "train": "compact_proofs.model.training",
    "exact_accuracy": "compact_proofs.proofs.exhaustive",
    "STRATEGIES": "compact_proofs.proofs.registry",
    "get_strategy": "compact_proofs.proofs.registry",
    "Proofs": "compact_proofs.api",
    "prove": "compact_proofs.api",
    "verify": "compact_proofs.api",
    "check": "compact_proofs.api",
    "strategies": "compact_proofs.api",
    "results_frame": "compact_proofs.api",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (PEP 562)."""
    if name not in _API:
        raise AttributeError(f"module 'compact_proofs' has no attribute {name!r}")
    return getattr(importlib.import_module(_API[name]), name)


def __dir__() -> list[str]:
    return sorted(__all__)
