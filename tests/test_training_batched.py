"""Batched multi-seed training (`train_many`) against one-seed-at-a-time `train`.

Tolerances. Each step of `train_many` differs from `train` only in float32 rounding (the
forward pass is factorised, the gradient hand-written, AdamW fused): one step's gradient
agrees to ~6e-7 of its largest entry. On the small model below training is not chaotic:
after 300 steps the weights of the two agree to ~4e-7 (weights are O(0.5)), the same size
as the drift a 1-ulp change to one initial weight causes in `train` itself. WEIGHT_ATOL =
1e-5 leaves ~25x headroom for other CPUs/torch builds, while real discrepancies are far
larger: with weight decay off, or the learning rate 1% off, `train`'s own weights move by
>= 3e-3 over these 300 steps (a wrong data stream or gradient term, by more). Paper-size
models are chaotic over 3000 steps (a 1-ulp change to one initial weight moves `train`'s
final weights by ~0.1), so there the two agree only in distribution; hence the small model.
"""

from __future__ import annotations

import math

import pytest
import torch

from compact_proofs.model.batched_training import _draw_block, _SeedStack, train_many
from compact_proofs.model.losses import max_of_k_loss
from compact_proofs.model.seeds import model_seed, train_stream_seed
from compact_proofs.model.training import TrainingRecipe, sample_batch, train
from compact_proofs.model.transformer import (
    WEIGHT_NAMES,
    AttnOnlyTransformer,
    ModelConfig,
    build_model,
)
from compact_proofs.proofs.cubic import Cubic
from compact_proofs.proofs.exhaustive import exact_accuracy

SMALL = ModelConfig(d_vocab=8, n_ctx=3, d_model=12, d_head=12)
MULTI_HEAD = ModelConfig(d_vocab=10, n_ctx=5, d_model=16, d_head=6, n_heads=3)
SEEDS = [0, 7, 123]
RECIPE = TrainingRecipe(steps=300)
WEIGHT_ATOL = 1e-5  # see the module docstring
GRAD_RTOL = 1e-5  # of the largest gradient entry; observed <= 6e-7


@pytest.fixture(scope="module")
def trained() -> list[tuple[AttnOnlyTransformer, object]]:
    return train_many(SMALL, SEEDS, RECIPE)


@pytest.fixture(scope="module")
def reference() -> list[tuple[AttnOnlyTransformer, object]]:
    return [train(SMALL, seed, RECIPE) for seed in SEEDS]


def assert_bit_identical(a: AttnOnlyTransformer, b: AttnOnlyTransformer) -> None:
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(pa, pb), name


def test_initial_weights_are_those_of_build_model():
    """With no step, train_many returns exactly build_model(cfg, model_seed(seed))."""
    for cfg in (SMALL, MULTI_HEAD):
        results = train_many(cfg, SEEDS, TrainingRecipe(steps=0))
        for seed, (model, stats) in zip(SEEDS, results, strict=True):
            assert_bit_identical(model, build_model(cfg, seed=model_seed(seed)))
            assert model.nonzero_biases() == []
            assert math.isnan(stats.train_loss)  # no step recorded, as in `train`


def test_blocks_draw_the_stream_of_train():
    """A block of n steps per seed equals n successive `sample_batch` draws of `train`."""
    seeds, n, batch = [3, 4], 5, 16
    gens = [torch.Generator().manual_seed(train_stream_seed(s)) for s in seeds]
    blocks = [_draw_block(gens, SMALL, batch, n) for _ in range(2)]
    for j, seed in enumerate(seeds):
        gen = torch.Generator().manual_seed(train_stream_seed(seed))
        for block in blocks:
            for i in range(n):
                tokens, labels = sample_batch(gen, SMALL, batch)
                assert torch.equal(block.key_tokens[i, j], tokens.T)
                assert torch.equal(block.labels[i, j], labels)


@pytest.mark.parametrize("cfg", [SMALL, ModelConfig(), MULTI_HEAD], ids=["small", "paper", "heads"])
def test_one_step_gradient_and_stats_match_autograd(cfg):
    """The hand-written gradient of each seed's mean loss equals autograd's on `max_of_k_loss`
    of the model's own forward pass; so do the recorded loss and accuracy."""
    models = [build_model(cfg, seed=model_seed(s)) for s in SEEDS]
    stack = _SeedStack(models, TrainingRecipe(lr=0.0, batch_size=64))  # lr 0: no update
    gens = [torch.Generator().manual_seed(train_stream_seed(s)) for s in SEEDS]
    block = _draw_block(gens, cfg, 64, 2)
    loss, acc = stack.step(block, 1, track=True)
    v = cfg.d_vocab
    grads = {
        "W_E": stack.grads["Ek"][:, :v],
        "W_pos": stack.grads["Ek"][:, v:],
        **{name: stack.grads[name] for name in ("W_Q", "W_K", "W_V", "W_O", "W_U")},
    }
    for j, model in enumerate(models):
        tokens, labels = block.key_tokens[1, j].T, block.labels[1, j]
        logits = model(tokens)
        ref_loss = max_of_k_loss(logits, labels)
        ref_loss.backward()
        assert float(loss[j]) == pytest.approx(float(ref_loss.detach()), rel=1e-6)
        assert float(acc[j]) == float((logits.argmax(-1) == labels).float().mean())
        for name in WEIGHT_NAMES:
            ref = getattr(model, name).grad
            err = float((grads[name][j] - ref).abs().max())
            assert err <= GRAD_RTOL * float(ref.abs().max()), (name, err)


def test_train_many_matches_train(trained, reference):
    """Same weights (to rounding), exact accuracy, cubic bound and statistics as `train`."""
    for (a, sa), (b, sb) in zip(trained, reference, strict=True):
        for name in WEIGHT_NAMES:
            torch.testing.assert_close(
                getattr(a, name), getattr(b, name), rtol=0, atol=WEIGHT_ATOL, msg=name
            )
        assert a.nonzero_biases() == []
        assert abs(exact_accuracy(a).accuracy - exact_accuracy(b).accuracy) <= 1e-4
        assert abs(Cubic().verify(a, {}).bound - Cubic().verify(b, {}).bound) <= 1e-3
        assert sa.train_loss == pytest.approx(sb.train_loss, rel=1e-4)
        assert sa.test_loss == pytest.approx(sb.test_loss, rel=1e-4)
        assert abs(sa.train_accuracy - sb.train_accuracy) <= 1e-4
        assert abs(sa.test_accuracy - sb.test_accuracy) <= 1 / 1024  # one test sample
    # The models are independent copies.
    a0, a1 = trained[0][0], trained[1][0]
    assert a0.W_E.data_ptr() != a1.W_E.data_ptr()
    assert not torch.equal(a0.W_E, a1.W_E)


def test_deterministic_and_independent_of_chunking(trained):
    """Same call -> bit-identical models and statistics; chunking changes nothing."""
    for chunk in (None, 1, 2):
        again = train_many(SMALL, SEEDS, RECIPE, chunk=chunk)
        for (a, sa), (b, sb) in zip(trained, again, strict=True):
            assert_bit_identical(a, b)
            assert sa.train_loss == sb.train_loss and sa.train_accuracy == sb.train_accuracy
            assert sa.test_loss == sb.test_loss and sa.test_accuracy == sb.test_accuracy
    # A seed's result does not depend on the other seeds of its group either.
    alone = train_many(SMALL, SEEDS[1:2], RECIPE)
    assert_bit_identical(alone[0][0], trained[1][0])


def test_chunk_must_be_positive():
    with pytest.raises(ValueError, match="chunk"):
        train_many(SMALL, SEEDS, RECIPE, chunk=0)
    assert train_many(SMALL, [], RECIPE) == []
