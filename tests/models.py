"""Model builders for tests: random, hand-built "ideal", adversarial and briefly trained."""

from __future__ import annotations

import functools

import torch
from hypothesis import strategies as st

from compact_proofs.model.training import TrainingRecipe, train
from compact_proofs.model.transformer import AttnOnlyTransformer, ModelConfig, build_model


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


def large_bias_model(
    v: int = 7,
    k: int = 3,
    seed: int = 0,
    q_shift: float = -1.6,
    penalty: float = 2.0,
    pos_scale: float = 2.0,
) -> AttnOnlyTransformer:
    """A near-ideal solver (`ideal_model`, beta 6, alpha 4, noise 0.02) whose biases are large
    and each load-bearing: a proof that ignored one of b_Q, b_V, b_O, b_U would certify
    inputs this model misclassifies (tests/test_subcubic.py checks that).

    b_Q = q_shift along the query direction: the attention is about 5x softer than the
    weights alone make it, so near-max tokens repeated at several positions can outvote the
    max (e.g. [4, 4, 5]); and b_Q alone reads positional keys (head dim 1, `pos_scale`).
    b_V, b_O and b_U each take `penalty` x alpha off the logit of one token (3, 2 and 1):
    inputs with that max token are misclassified. b_K is large and random (it shifts every
    score of a query alike, which the softmax cancels). Needs v >= 4."""
    model = ideal_model(v, k, beta=6.0, alpha=4.0, noise=0.02, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        model.b_Q[0, 0] = q_shift  # the ideal model's queries read 2 along head dim 0
        model.b_Q[0, 1] = 1.0  # only the bias reads head dim 1: positional scores
        model.W_K[0, 2 * v :, 1] = pos_scale * torch.randn(k, generator=gen)
        model.b_K[0] = 5.0 * torch.randn(model.cfg.d_head, generator=gen)
        model.b_V[0, 3] = -penalty  # value dim 3 is copied to the output dim of token 3
        model.b_O[v + 2] = -penalty  # output dim v + j carries logit j (x alpha)
        model.b_U[1] = -penalty * 4.0
    return model


def float64_cancellation(
    base: AttnOnlyTransformer,
    H: float = 2.0**50,
    score_shift: float = 0.0,
    bias: bool = False,
    near_tie: tuple[int, int, float] | None = None,
) -> AttnOnlyTransformer:
    """`base` (single head) plus components that cancel exactly in real arithmetic but not in
    float64: two extra residual dims equal to 1 for every token carry +H and -H (or +H and a
    bias -H) into every logit, and one extra head dim adds `score_shift` to every attention
    score. Real-arithmetic logits differ from base's only by `near_tie` = (a, b, eps), which
    sets W_U column a to column b + eps. float64 loses the logits' bits below about H 2^-53."""
    cfg0 = base.cfg
    d, e = cfg0.d_model, cfg0.d_head
    cfg = ModelConfig(cfg0.d_vocab, cfg0.n_ctx, d + 2, e + 1, 1)
    model = AttnOnlyTransformer(cfg)
    w = base.weights()
    with torch.no_grad():
        model.W_E[:, :d] = w["W_E"]
        model.W_E[:, d:] = 1.0
        model.W_pos[:, :d] = w["W_pos"]
        for n in ("W_Q", "W_K", "W_V"):
            getattr(model, n)[:, :d, :e] = w[n]
        model.W_O[:, :e, :d] = w["W_O"]
        model.W_Q[0, d, e] = 1.0  # every query has 1 in head dim e ...
        model.W_K[0, d, e] = score_shift  # ... and every key score_shift
        model.W_U[:d] = w["W_U"]
        model.W_U[d] = H
        if bias:
            model.b_U[:] = -H
        else:
            model.W_U[d + 1] = -H
        if near_tie is not None:
            a, b, eps = near_tie
            model.W_U[:d, a] = model.W_U[:d, b] + eps
    return model


def underflow_model(
    v: int,
    k: int,
    A: float = 750.0,
    B: float = 610.0,
    C: float = 1e6,
    direct: float = 1e-55,
    seed: int = 0,
) -> AttnOnlyTransformer:
    """Attention scores spanning hundreds of nats with d_head = 1, built so that float64
    underflows where exact arithmetic does not. Key score -B for tokens >= 1 and -A at the
    non-query positions (0 for token 0 at the query position), so a non-max token 0 gets an
    unnormalised weight exp(-A) (below the subnormal range for A > 745) next to a query weight
    exp(-B) (above 2^-900 for B < 620); token 0 votes C for output 0 through OV; the direct
    path gives every output a random logit of size `direct` (products of float32 weights of
    size sqrt(direct), so below float32's range but exact in float64)."""
    d = 6  # dims: token is 0 | token >= 1 | non-query position | query position | vote | direct
    cfg = ModelConfig(d_vocab=v, n_ctx=k, d_model=d, d_head=1, n_heads=1)
    model = AttnOnlyTransformer(cfg)
    gen = torch.Generator().manual_seed(seed)
    root = direct**0.5
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.W_E[0, 0] = 1.0
        model.W_E[1:, 1] = 1.0
        model.W_pos[: k - 1, 2] = 1.0
        model.W_pos[k - 1, 3] = 1.0
        model.W_Q[0, 3, 0] = 1.0  # every query scores keys along one direction
        model.W_K[0, 1, 0] = -B
        model.W_K[0, 2, 0] = -A
        model.W_V[0, 0, 0] = 1.0  # the value is "token is 0"
        model.W_O[0, 0, 4] = C
        model.W_U[4, 0] = 1.0  # ... which votes for output 0
        model.W_E[:, 5] = root * torch.randn(v, generator=gen)
        model.W_U[5, :] = root * torch.randn(v, generator=gen)
    return model


def ideal_models(max_v: int, max_k: int) -> st.SearchStrategy[AttnOnlyTransformer]:
    """`ideal_model`s with perturbations (hypothesis): v in 2..max_v, k in 1..max_k, any
    attention sharpness, value strength, noise and positional scale."""
    return st.builds(
        ideal_model,
        v=st.integers(2, max_v),
        k=st.integers(1, max_k),
        beta=st.floats(0.05, 20.0),
        alpha=st.floats(0.5, 10.0),
        noise=st.floats(0.0, 0.5),
        seed=st.integers(0, 10**6),
        pos_scale=st.sampled_from([0.0, 0.5, 5.0]),
    )


UNDERFLOW_MODELS = st.builds(
    underflow_model,
    v=st.integers(2, 4),
    k=st.integers(2, 4),
    A=st.floats(600, 800),
    B=st.floats(580, 760),
    C=st.floats(0, 9).map(lambda e: 10**e),
    direct=st.floats(-70, -40).map(lambda e: 10**e),
    seed=st.integers(0, 10**6),
)  # `underflow_model`s across its parameters (hypothesis)


def paper_size_worst_cases() -> dict[str, AttnOnlyTransformer]:
    """Paper-size (v = 64, k = 4, d = 32) models that push every proof to its worst case for
    memory and time: huge random weights (entries ~ 3: attention scores span thousands of
    nats, so unnormalised attention weights underflow and the exact evaluator decides every
    input on its own); the same attention with value weights of ~1e-30 (W_V, W_O, W_U: the
    products of underflowing weights and tiny values are subnormal or 0 in float64); and
    near-uniform attention (W_Q scaled by 1e-6: every position weighs about the same)."""
    cfg = ModelConfig(d_vocab=64, n_ctx=4, d_model=32, d_head=32)
    gen = torch.Generator().manual_seed(2026)
    out = {}
    for name, value_scale in (("huge weights", 3.0), ("subnormal products", 1e-30)):
        model = AttnOnlyTransformer(cfg)
        with torch.no_grad():
            for p in (model.W_E, model.W_pos, model.W_Q, model.W_K):
                p.copy_(3 * torch.randn(p.shape, generator=gen))
            for p in (model.W_V, model.W_O, model.W_U):
                p.copy_(value_scale * torch.randn(p.shape, generator=gen))
        out[name] = model
    uniform = random_model(cfg, 7)
    with torch.no_grad():
        uniform.W_Q.mul_(1e-6)
    out["near-uniform attention"] = uniform
    return out
