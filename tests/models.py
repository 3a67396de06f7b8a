"""Model builders for tests: random, hand-built "ideal", adversarial and briefly trained."""

from __future__ import annotations

import functools

import torch

from compact_proofs.model import AttnOnlyTransformer, ModelConfig, build_model
from compact_proofs.training import TrainingRecipe, train


def random_model(
    cfg: ModelConfig, seed: int, scale: float = 1.0, biases: bool = False
) -> AttnOnlyTransformer:
    """Gaussian weights times `scale`; optional non-zero Gaussian biases."""
    model = build_model(cfg, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("W_"):
                p.mul_(scale)
            elif biases:
                p.copy_(0.3 * scale * torch.randn(p.shape, generator=gen))
    return model


def ideal_model(
    v: int,
    k: int,
    beta: float = 3.0,
    alpha: float = 4.0,
    noise: float = 0.0,
    seed: int = 0,
    pos_scale: float = 0.0,
) -> AttnOnlyTransformer:
    """A hand-built Max-of-K solver: attention score grows with the key token's value (beta),
    OV copies the attended token (alpha); `noise` adds Gaussian perturbations and
    `pos_scale` makes attention depend on positions."""
    d = 2 * v + k  # dims: token one-hot | copied-token output | position one-hot
    cfg = ModelConfig(d_vocab=v, n_ctx=k, d_model=d, d_head=d, n_heads=1)
    model = AttnOnlyTransformer(cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.W_E[:, :v] = torch.eye(v)
        model.W_pos[:, 2 * v :] = torch.eye(k)
        model.W_Q[0, :, 0] = 1.0  # every query looks along direction 0
        model.W_K[0, :v, 0] = beta * torch.arange(v, dtype=torch.float32)  # keys: token value
        model.W_K[0, 2 * v :, 0] = pos_scale * torch.randn(k, generator=gen)
        model.W_V[0] = torch.eye(d)
        model.W_O[0, :v, v : 2 * v] = torch.eye(v)  # OV copies the token to the output dims
        model.W_U[v : 2 * v] = alpha * torch.eye(v)  # the direct path carries nothing
        for name, p in model.named_parameters():
            if name.startswith("W_") and noise:
                p.add_(noise * torch.randn(p.shape, generator=gen))
    return model


@functools.cache
def trained_model(v: int, k: int, d: int, steps: int, seed: int) -> AttnOnlyTransformer:
    """A briefly trained model (cached across tests)."""
    cfg = ModelConfig(d_vocab=v, n_ctx=k, d_model=d, d_head=d)
    model, _ = train(cfg, seed, TrainingRecipe(steps=steps))
    return model


def adversarial_models() -> dict[str, AttnOnlyTransformer]:
    """Named small models that stress particular assumptions of the proofs."""
    out: dict[str, AttnOnlyTransformer] = {}
    cfg = ModelConfig(d_vocab=6, n_ctx=3, d_model=5, d_head=4)
    out["near-uniform attention"] = random_model(cfg, 1)
    with torch.no_grad():
        out["near-uniform attention"].W_Q.mul_(1e-4)
    out["position-dominated attention"] = ideal_model(6, 3, beta=0.2, pos_scale=8.0, seed=2)
    out["huge weights"] = random_model(cfg, 3, scale=30.0)
    out["tiny weights"] = random_model(cfg, 4, scale=1e-3)
    dup = ideal_model(6, 3, noise=0.05, seed=5)
    with torch.no_grad():
        dup.W_E[2] = dup.W_E[3]  # duplicated token embeddings: exact ties are possible
    out["duplicated tokens"] = dup
    out["non-zero biases"] = random_model(cfg, 6, biases=True)
    out["ideal with noise"] = ideal_model(5, 4, noise=0.3, seed=7)
    out["ideal, sharp attention"] = ideal_model(6, 3, beta=30.0, seed=8)
    return out
