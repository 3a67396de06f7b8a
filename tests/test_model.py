"""Model, path decomposition, seeds, loss and file format."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from compact_proofs.model.file_format import TL_NAMES, load_model, save_model, weights_digest
from compact_proofs.model.losses import log1p_log_softmax
from compact_proofs.model.seeds import (
    PAPER_SEEDS,
    SELECTED_SEED,
    heldout_stream_seed,
    model_seed,
    parse_seeds,
    reseed,
    train_stream_seed,
)
from compact_proofs.model.transformer import ModelConfig, build_model
from compact_proofs.proofs.paths import path_matrices

from conftest import FIXTURES
from models import random_model


def logits_from_paths(model, tokens: torch.Tensor) -> torch.Tensor:
    """Re-derive the last-position logits from the path matrices (SPEC §3)."""
    P = path_matrices(model)
    q = tokens[:, -1]
    k = tokens.shape[1]
    scores = P.EQKE[q[:, None], tokens] + P.EQKP[q][:, :k]  # [b, k]
    alpha = (scores / P.attn_scale).softmax(dim=-1)
    values = P.EVOU[tokens] + P.PVOU[None, :k]  # [b, k, v]
    return P.EUPU[q] + (alpha[..., None] * values).sum(dim=1)


@pytest.mark.parametrize("biases", [False, True])
@pytest.mark.parametrize(
    "cfg",
    [ModelConfig(), ModelConfig(d_vocab=7, n_ctx=3, d_model=5, d_head=3), ModelConfig(n_ctx=1)],
)
def test_forward_equals_path_decomposition(cfg, biases):
    model = random_model(cfg, seed=11, biases=biases)
    tokens = torch.randint(
        0, cfg.d_vocab, (500, cfg.n_ctx), generator=torch.Generator().manual_seed(0)
    )
    direct = model(tokens).double()
    assert torch.allclose(direct, logits_from_paths(model, tokens), atol=1e-5, rtol=0)
    full = model.forward_all_positions(tokens)[:, -1].double()
    assert torch.allclose(direct, full, atol=1e-5, rtol=0)


def test_multi_head_forward_matches_all_positions():
    cfg = ModelConfig(d_vocab=9, n_ctx=4, d_model=8, d_head=4, n_heads=2)
    model = random_model(cfg, seed=3, biases=True)
    tokens = torch.randint(0, 9, (100, 4), generator=torch.Generator().manual_seed(1))
    assert torch.allclose(model(tokens), model.forward_all_positions(tokens)[:, -1], atol=1e-5)


def test_tl_init_reproduces_reference_argmax():
    """SPEC §10: seed 123's model seed, TL gpt2 init, k=10 -> argmax 59 on this sequence."""
    model = build_model(ModelConfig(n_ctx=10), seed=model_seed(123))
    x = torch.tensor([[31, 30, 32, 33, 34, 35, 39, 37, 38, 36]])
    assert model(x).argmax(-1).item() == 59
    std = 0.8 / 32**0.5
    assert abs(model.W_E.std().item() - std) < 0.01
    assert all(not bool(getattr(model, b).ne(0).any()) for b in ("b_Q", "b_O", "b_U"))


@pytest.mark.parametrize(
    ("s", "expected"),
    [
        (123, (613947648, 1914904320, 3402695680, 3741094656, 2715107840)),
        (50, (736526336, 1372813824, 1621452544, 511542272, 3835354880)),
        (104, (4180624640, 365277440, 4080811520, 256999680, 714777600)),
        (32382, (1777363200, 1906699776, 196495872, 2783682560, 2105314048)),
    ],
)
def test_reseed_vectors(s, expected):
    got = (
        model_seed(s),
        reseed(s, "dataset_seed"),
        train_stream_seed(s),
        heldout_stream_seed(s),
        reseed(s, "importance_sample"),
    )
    assert got == expected


def test_paper_seeds():
    assert len(PAPER_SEEDS) == 151 == len(set(PAPER_SEEDS))
    assert list(PAPER_SEEDS) == sorted(PAPER_SEEDS) and SELECTED_SEED in PAPER_SEEDS
    assert parse_seeds("paper") == list(PAPER_SEEDS)
    assert parse_seeds("3,1-2,3") == [3, 1, 2]
    with pytest.raises(ValueError):
        parse_seeds("nonsense")


def test_log1p_log_softmax_vectors():
    out = log1p_log_softmax(torch.tensor([1000.0, 1.0], dtype=torch.float64))
    assert out.tolist() == [0.0, -999.0]
    out = log1p_log_softmax(torch.arange(4, dtype=torch.float64))
    expected = torch.tensor(
        [-3.4401896985611953, -2.4401896985611953, -1.4401896985611953, -0.44018969856119533],
        dtype=torch.float64,
    )
    assert torch.allclose(out, expected, rtol=1e-13, atol=0)
    z = torch.randn(50, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(log1p_log_softmax(z), z.log_softmax(-1), atol=1e-12)


def test_file_round_trip(tmp_path):
    model = random_model(
        ModelConfig(d_vocab=5, n_ctx=3, d_model=4, d_head=2, n_heads=2), 1, biases=True
    )
    path = tmp_path / "m.safetensors"
    save_model(model, path, {"seed": 7})
    mf = load_model(path)
    assert mf.cfg == model.cfg and mf.provenance["seed"] == 7
    assert "library_version" in mf.provenance
    assert weights_digest(mf.model) == weights_digest(model)
    with safe_open(str(path), "pt") as f:
        assert set(f.keys()) == set(TL_NAMES.values())
        meta = json.loads(f.metadata()["compact_proofs"])
        assert meta["config"]["n_heads"] == 2


def test_transformerlens_state_dict_without_metadata_loads(tmp_path):
    """A plain TL state dict (buffers included, no metadata) loads; config from shapes."""
    model = random_model(ModelConfig(d_vocab=8, n_ctx=3, d_model=6, d_head=6), 2)
    tensors = {TL_NAMES[n]: t.clone() for n, t in model.weights().items()}
    tensors["blocks.0.attn.IGNORE"] = torch.tensor(float("-inf"))
    tensors["blocks.0.attn.mask"] = torch.ones(3, 3, dtype=torch.bool).tril()
    del tensors["unembed.b_U"]  # optional biases may be absent
    save_file(tensors, tmp_path / "tl.safetensors")
    mf = load_model(tmp_path / "tl.safetensors")
    assert mf.cfg == model.cfg and mf.provenance == {}
    assert torch.equal(mf.model.W_U, model.W_U)


@pytest.mark.skipif(not FIXTURES.exists(), reason="shared fixtures not available")
def test_reference_fixtures_load():
    for path in sorted(FIXTURES.glob("*.safetensors")):
        mf = load_model(path)
        assert mf.cfg == ModelConfig()
        assert mf.model.nonzero_biases() == []
