"""Property: on random small models the default (rigorous) mode certifies only inputs that are
correct in exact arithmetic, for every strategy, whatever the scale of the weights.

Models (v <= 8, k <= 5, at most 1296 inputs so that the exact rational reference decides every
input): Gaussian weights at scales from 1e-6 to 1e3 (huge and tiny), with or without biases;
near-ideal solvers with large, load-bearing biases (`models.large_bias_model`);
"subnormal-producing" models whose attention scores span thousands of nats while the value
weights are ~1e-30 (products of underflowing weights and tiny values are subnormal or 0 in
float64); and the float64-underflow family of `models.underflow_model`. Each example checks
brute force, cubic, both separable strategies and four sub-cubic configurations drawn by
hypothesis (all 100 are drawn across runs; the campaign covers all of them per model). Every
strategy supports every model drawn here (biases included): a refusal fails the test.
"""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compact_proofs.model.transformer import AttnOnlyTransformer, ModelConfig
from compact_proofs.proofs.exhaustive import all_sequences
from compact_proofs.proofs.registry import STRATEGIES, get_strategy
from compact_proofs.proofs.subcubic.strategy import SubcubicStrategy
from compact_proofs.soundness.exact import CORRECT, exact_verdicts

from models import large_bias_model, random_model, underflow_model

SUBCUBIC = [s.id for s in STRATEGIES.values() if isinstance(s, SubcubicStrategy)]
ALWAYS = ["brute-force", "cubic", "separable-lite", "separable"]


def subnormal_producing(cfg: ModelConfig, seed: int) -> AttnOnlyTransformer:
    """Attention scores of thousands of nats, value weights of ~1e-30."""
    model = AttnOnlyTransformer(cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in (model.W_E, model.W_pos, model.W_Q, model.W_K):
            p.copy_(30 * torch.randn(p.shape, generator=gen))
        for p in (model.W_V, model.W_O, model.W_U):
            p.copy_(1e-30 * torch.randn(p.shape, generator=gen))
    return model


@st.composite
def small_models(draw) -> AttnOnlyTransformer:
    v = draw(st.integers(2, 8))
    k = draw(st.integers(1, 5).filter(lambda k: v**k <= 1296))
    d = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 10**6))
    cfg = ModelConfig(d_vocab=v, n_ctx=k, d_model=d, d_head=draw(st.integers(1, 4)))
    kind = draw(st.sampled_from(["gaussian", "biases", "large biases", "subnormal", "underflow"]))
    if kind == "subnormal":
        return subnormal_producing(cfg, seed)
    if kind == "large biases":
        return large_bias_model(
            max(v, 4),
            min(k, 3),
            seed,
            q_shift=draw(st.floats(-1.9, 1.0)),
            penalty=draw(st.floats(0.0, 3.0)),
            pos_scale=draw(st.floats(0.0, 4.0)),
        )
    if kind == "underflow":
        return underflow_model(
            min(v, 4),
            min(max(k, 2), 4),
            A=draw(st.floats(600, 800)),
            B=draw(st.floats(580, 760)),
            C=10 ** draw(st.floats(0, 9)),
            direct=10 ** draw(st.floats(-70, -40)),
            seed=seed,
        )
    scale = draw(st.sampled_from([1e-6, 1e-3, 0.1, 1.0, 30.0, 1e3]))
    return random_model(cfg, seed, scale, biases=kind == "biases")


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=small_models(), picks=st.lists(st.sampled_from(SUBCUBIC), min_size=4, max_size=4))
def test_default_mode_certifies_only_exactly_correct_inputs(model, picks):
    seqs = all_sequences(model.cfg.d_vocab, model.cfg.n_ctx)
    correct = exact_verdicts(model, seqs) == CORRECT
    for strategy_id in ALWAYS + picks:
        strategy = get_strategy(strategy_id)
        payload = strategy.search(model)
        proven = strategy.proven(model, payload, seqs)
        count = strategy.verify(model, payload).correct_count
        wrong = seqs[proven & ~correct]
        assert wrong.numel() == 0, (strategy_id, wrong[:5].tolist())
        assert count == int(proven.sum()), strategy_id
