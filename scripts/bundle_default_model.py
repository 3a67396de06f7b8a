"""Regenerate the bundled default model from the paper's reference seed-123 model.

Usage:
    python scripts/bundle_default_model.py \
        ../shared/fixtures/reference-maxof4-seed123.safetensors

The fixture is the reference implementation's TransformerLens state dict (no metadata); this
re-saves it in the project's format with provenance metadata. The weights are unchanged.
"""

import sys

from compact_proofs.model.file_format import bundled_model_path, load_model, save_model
from compact_proofs.model.seeds import SELECTED_SEED, model_seed, train_stream_seed

source = sys.argv[1]
mf = load_model(source)
save_model(
    mf.model,
    bundled_model_path(),
    {
        "seed": SELECTED_SEED,
        "model_seed": model_seed(SELECTED_SEED),
        "train_stream_seed": train_stream_seed(SELECTED_SEED),
        "recipe": {
            "name": "gross-et-al-2024-max-of-k",
            "steps": 3000,
            "batch_size": 128,
            "lr": 1e-3,
            "betas": [0.9, 0.999],
            "weight_decay": 0.01,
        },
        "trained_by": "the paper's reference implementation (TransformerLens 2.x, torch 2.13)",
        "source": "shared/fixtures/reference-maxof4-seed123.safetensors",
    },
)
print("wrote", bundled_model_path())
