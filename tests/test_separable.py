"""The separable strategies: exhaustive soundness, agreement with a direct per-input
evaluation of their bound, rigorous mode, chunking, and the reference models' counts."""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from compact_proofs.errors import UnsupportedModelError
from compact_proofs.model.file_format import load_model
from compact_proofs.model.transformer import ModelConfig
from compact_proofs.proofs.cubic import Cubic
from compact_proofs.proofs.exhaustive import all_sequences, exact_accuracy, is_correct
from compact_proofs.proofs.flops import count_flops
from compact_proofs.proofs.paths import path_matrices
from compact_proofs.proofs.registry import STRATEGIES, get_strategy
from compact_proofs.proofs.separable import Separable, SeparableLite
from compact_proofs.soundness.exact import CORRECT, exact_verdicts

from conftest import FIXTURES
from models import (
    UNDERFLOW_MODELS,
    adversarial_models,
    ideal_model,
    ideal_models,
    random_model,
    trained_model,
    underflow_model,
)

BOTH = [SeparableLite(), Separable()]


def direct_bound(model, tokens: torch.Tensor, joint: bool, P=None) -> torch.Tensor:
    """The quantity whose negativity each strategy certifies, evaluated input by input
    straight from the definitions (module docstring of proofs/separable.py, including the
    underflow guard), independent of the counting code: F + sum_S w_p (E + g_p(x_p)) for
    cells counted exactly, and F + W_S max_S h(x_p) for pure-rule cells (the lite strategy's
    only rule for c >= 1). P: the path matrices (default: the model's, in float64)."""
    P = path_matrices(model) if P is None else P
    v, k = P.d_vocab, P.n_ctx
    n = len(tokens)
    q, m = tokens[:, -1], tokens.max(dim=-1).values
    s_tok, s_pos = P.EQKE / P.attn_scale, P.EQKP / P.attn_scale
    row_max = s_tok.cummax(dim=-1).values[q, m]  # max over tokens <= m of the query's scores
    e_tk = torch.exp(s_tok[q[:, None], tokens] - row_max[:, None])  # [n, k]
    e_ps = torch.exp(s_pos - s_pos.amax(dim=-1, keepdim=True))[q]  # [n, k]
    w = e_tk * e_ps
    is_m = torch.arange(v)[None, :] == m[:, None]  # [n, j]
    EUPU_c = P.EUPU[q] - P.EUPU[q, m][:, None]  # [n, j]
    E = EUPU_c.masked_fill(is_m, -torch.inf).amax(dim=-1)
    value = P.EVOU[tokens] - P.EVOU[tokens, m[:, None]][..., None]  # [n, p, j]
    pos = P.PVOU[None] - P.PVOU[:, m].T[..., None]  # [n, p, j]
    nonmax = torch.cat([tokens[:, :-1] < m[:, None], torch.zeros(n, 1, dtype=torch.bool)], 1)
    fixed_w = w * ~nonmax
    c = nonmax.sum(dim=1)
    if joint:
        terms = EUPU_c[:, None] + value + pos
        F = (fixed_w[..., None] * terms).sum(dim=1).masked_fill(is_m, -torch.inf).amax(dim=-1)
        g = (value + pos).masked_fill(is_m[:, None], -torch.inf).amax(dim=-1)  # [n, p]
        g_bar = (
            torch.stack(
                [
                    (value + pos[:, p : p + 1]).masked_fill(is_m[:, None], -torch.inf).amax(dim=-1)
                    for p in range(k - 1)
                ]
            ).amax(dim=0)
            if k > 1
            else g
        )
        exact_cell = (c <= 2) | ((c == 3) & (q == m))
        separable = (w * nonmax * (E[:, None] + g)).sum(dim=1)
    else:
        pess = pos.masked_fill(is_m[:, None], -torch.inf).amax(dim=1)  # [n, j]
        g = (value + pess[:, None]).masked_fill(is_m[:, None], -torch.inf).amax(dim=-1)
        F = (fixed_w * (E[:, None] + g)).sum(dim=1)
        g_bar = g
        exact_cell = torch.zeros(n, dtype=torch.bool)
        separable = torch.zeros(n, dtype=torch.float64)
    h = e_tk * (E[:, None] + g_bar)  # [n, p]
    W_S = (e_ps * nonmax).sum(dim=1)
    pure = W_S * h.masked_fill(~nonmax, -torch.inf).amax(dim=1)
    pure = torch.where(c == 0, 0.0, pure)
    underflow = (w * ~nonmax).amax(dim=1) < 2.0**-900  # the guard: such cells count nothing
    return torch.where(underflow, torch.inf, F + torch.where(exact_cell, separable, pure))


def assert_sound(model, strategy, check_direct: bool = True) -> int:
    """In the default (rigorous) mode and in --fast float64: every input the strategy
    certifies is classified correctly and its count equals the certified set. In float64 the
    certified set is also the direct bound's negative set (up to floating-point ties)."""
    cfg = model.cfg
    seqs = all_sequences(cfg.d_vocab, cfg.n_ctx)
    correct = is_correct(model, seqs)
    proven = {}
    for rigorous in (True, False):
        proven[rigorous] = strategy.proven(model, {}, seqs, rigorous=rigorous)
        wrong = seqs[proven[rigorous] & ~correct]
        assert wrong.numel() == 0, (
            f"{strategy.id} certifies misclassified inputs {wrong[:5].tolist()}"
        )
        count = strategy.verify(model, {}, rigorous=rigorous).correct_count
        assert count == int(proven[rigorous].sum())
        assert count <= exact_accuracy(model, rigorous=False).correct
    if check_direct:
        bound = direct_bound(model, seqs, joint=isinstance(strategy, Separable))
        clear = bound.abs() > 1e-9 * (1 + bound.abs().max())
        mismatch = seqs[clear & (proven[False] != (bound < 0))]
        assert mismatch.numel() == 0, (strategy.id, mismatch[:5].tolist())
    return int(proven[True].sum())


@pytest.mark.parametrize("strategy", BOTH, ids=lambda s: s.id)
@settings(max_examples=40, deadline=None)
@given(
    v=st.integers(1, 7),
    k=st.integers(1, 5),
    d=st.integers(1, 6),
    seed=st.integers(0, 10**6),
    scale=st.sampled_from([1e-3, 0.1, 1.0, 3.0, 30.0]),
    biases=st.booleans(),
)
def test_sound_on_random_models(strategy, v, k, d, seed, scale, biases):
    cfg = ModelConfig(d_vocab=v, n_ctx=k, d_model=d, d_head=max(d - 1, 1))
    assert_sound(random_model(cfg, seed, scale, biases), strategy)


@pytest.mark.parametrize("strategy", BOTH, ids=lambda s: s.id)
@settings(max_examples=40, deadline=None)
@given(model=ideal_models(7, 5))
def test_sound_on_good_and_nearly_good_models(strategy, model):
    """Hand-built solvers with perturbations: the proofs certify much, so soundness bites."""
    assert_sound(model, strategy)


@pytest.mark.parametrize("strategy", BOTH, ids=lambda s: s.id)
@pytest.mark.parametrize("name", list(adversarial_models()))
def test_sound_on_adversarial_models(strategy, name):
    assert_sound(adversarial_models()[name], strategy)


@pytest.mark.parametrize("strategy", BOTH, ids=lambda s: s.id)
@pytest.mark.parametrize(
    ("v", "k", "steps", "seed"), [(6, 3, 400, 0), (8, 4, 600, 1), (5, 5, 300, 2)]
)
def test_sound_on_briefly_trained_models(strategy, v, k, steps, seed):
    assert_sound(trained_model(v, k, 12, steps, seed), strategy)


def test_useful_and_ordered_on_an_ideal_model():
    """On a good model: joint >= lite, and both at least as good as the cubic proof here."""
    model = ideal_model(7, 4, beta=8.0, alpha=6.0, noise=0.05, seed=3)
    lite, joint = (assert_sound(model, s) for s in BOTH)
    assert joint >= lite > 0.5 * 7**4
    assert lite >= Cubic().verify(model, {}).correct_count


@pytest.mark.parametrize("strategy", BOTH, ids=lambda s: s.id)
@pytest.mark.parametrize(
    "model",
    [
        ideal_model(6, 4, noise=0.2, seed=4),
        ideal_model(5, 5, noise=0.1, seed=5, pos_scale=0.5),
        adversarial_models()["duplicated tokens"],
        adversarial_models()["huge weights"],
    ],
)
def test_rigorous_mode_certifies_the_same_or_fewer_and_counts_match(strategy, model):
    seqs = all_sequences(model.cfg.d_vocab, model.cfg.n_ctx)
    proven = strategy.proven(model, {}, seqs, rigorous=True)
    count = strategy.verify(model, {}, rigorous=True).correct_count
    assert count == int(proven.sum())
    assert bool((proven <= is_correct(model, seqs, rigorous=False)).all())
    assert count <= strategy.verify(model, {}).correct_count


@pytest.mark.parametrize("strategy", BOTH, ids=lambda s: s.id)
def test_subnormal_attention_weights_prove_nothing_wrong(strategy):
    """Found by the checker's author: with one shift per query, the weights of an input
    whose scores sit ~745 below the query's best token are subnormal, and float64 rounding
    reversed which position gets more attention (a misclassified input was certified). Row
    maxima as shifts plus the underflow guard keep float64 verdicts reliable."""
    from test_checker import subnormal_attention_model

    model = subnormal_attention_model()
    assert assert_sound(model, strategy) == exact_accuracy(model).correct == 8
    sharp = ideal_model(8, 3, beta=1000.0)  # scores span thousands of nats
    assert assert_sound(sharp, strategy, check_direct=False) == 8**3


def test_chunking_over_rows_gives_the_same_count(monkeypatch):
    from compact_proofs.proofs import separable

    model = ideal_model(9, 4, noise=0.2, seed=6)
    whole = Separable().verify(model, {}).correct_count
    monkeypatch.setattr(separable, "ROW_CHUNK_ELEMENTS", 9 * 8 * 3)  # 3 rows per chunk
    assert Separable().verify(model, {}).correct_count == whole


def test_verification_is_flop_counted_and_cheaper_than_cubic_at_paper_size():
    model = random_model(ModelConfig(d_vocab=64, n_ctx=4, d_model=32, d_head=32), 0)
    _, cubic = count_flops(lambda: Cubic().verify(model, {}))
    _, lite = count_flops(lambda: SeparableLite().verify(model, {}))
    _, joint = count_flops(lambda: Separable().verify(model, {}))
    assert 0 < lite < joint < cubic


def test_too_long_contexts_are_refused_with_a_clear_error():
    model = random_model(ModelConfig(d_vocab=3, n_ctx=11, d_model=4, d_head=4), 0)
    for strategy in BOTH:
        with pytest.raises(UnsupportedModelError, match="use the cubic proof"):
            strategy.verify(model, {})


def test_registered_as_their_own_group():
    assert [s.id for s in STRATEGIES.values() if s.group == "separable"] == [
        "separable-lite",
        "separable",
    ]
    assert get_strategy("separable").complexity.startswith("O(")


@pytest.mark.skipif(not FIXTURES.exists(), reason="shared fixtures not available")
@pytest.mark.parametrize("seed", [50, 104, 123])
def test_reference_models_beat_the_cubic_proof(seed):
    """On the paper's reference models both strategies certify more than the cubic proof
    (measured: seed 123 cubic 15,821,617; lite 15,922,031; joint 16,556,014), never more
    than the exact accuracy, and the same in rigorous mode."""
    model = load_model(FIXTURES / f"reference-maxof4-seed{seed}.safetensors").model
    cubic = Cubic().verify(model, {}).correct_count
    exact = exact_accuracy(model).correct
    counts = []
    for strategy in BOTH:
        count = strategy.verify(model, {}).correct_count
        assert cubic < count <= exact
        assert strategy.verify(model, {}, rigorous=True).correct_count == count
        counts.append(count)
    assert counts[0] < counts[1]
    if seed == 123:
        assert counts == [15922031, 16556014]


def test_the_campaign_finds_nothing_on_drawn_adversarial_models():
    """The adversarial campaign (exact rational arithmetic) over every family."""
    from test_soundness_campaign import assert_sound as campaign_sound
    from test_soundness_campaign import sc

    for i, family in enumerate(sorted(sc.FAMILIES)):
        case = sc.FAMILIES[family](random.Random(1000 + i))
        c = sc.Campaign(tamper_fraction=0.0, unsound_dir=None, rng=random.Random(i))
        c.check_case(case, BOTH)
        modes = sc.RIGOROUS_MODES if family == "float64 cancellation" else sc.MODES
        campaign_sound(c, modes)
        assert c._total("default").pairs_checked + c._total("default").unsupported > 0


# -- float64 underflow (defect found from outside: the separable strategies' float64 mode
#    certified misclassified inputs) -----------------------------------------------------

# Models of `models.underflow_model` on which the float64 mode of both strategies, before the
# fix, certified e.g. 36 inputs of which 13 are correct (v=3, k=4) or 129 of which 55 are
# (v=4, k=4): a non-max token 0's weight exp(-A) underflowed to 0 while its exact vote
# (~1e-326 * C) exceeded the subnormal threshold T (query weight exp(-B) times a direct-path
# margin of ~1e-55).
UNDERFLOW_CASES = [
    dict(v=3, k=4, A=747.7534753614889, B=617.0657590083072, C=20991.46538616362,
         direct=2.7372001361855488e-53, seed=413),
    dict(v=3, k=4, A=746.2110518110534, B=610.9759752277631, C=2125038.773432719,
         direct=5.557229148962113e-54, seed=383),
    dict(v=4, k=4, A=746.625232896441, B=610.2754332637527, C=373427669.6042438,
         direct=5.9971937264238805e-55, seed=470),
]  # fmt: skip


def assert_exactly_sound(model, strategy, rigorous: bool) -> None:
    """Every certified input is correct in exact arithmetic; the count is the certified set."""
    seqs = all_sequences(model.cfg.d_vocab, model.cfg.n_ctx)
    correct = exact_verdicts(model, seqs) == CORRECT
    proven = strategy.proven(model, {}, seqs, rigorous=rigorous)
    wrong = seqs[proven & ~correct]
    assert wrong.numel() == 0, (strategy.id, rigorous, wrong[:5].tolist())
    assert strategy.verify(model, {}, rigorous=rigorous).correct_count == int(proven.sum())


@pytest.mark.parametrize("rigorous", [True, False], ids=["default", "fast"])
@pytest.mark.parametrize("strategy", BOTH, ids=lambda s: s.id)
@pytest.mark.parametrize("params", UNDERFLOW_CASES, ids=lambda p: f"v{p['v']}-seed{p['seed']}")
def test_underflowing_weights_certify_no_misclassified_input(params, strategy, rigorous):
    model = underflow_model(**params)
    assert int((exact_verdicts(model, all_sequences(params["v"], params["k"])) == CORRECT).sum())
    assert_exactly_sound(model, strategy, rigorous)


@pytest.mark.parametrize("strategy", BOTH, ids=lambda s: s.id)
@settings(max_examples=15, deadline=None)
@given(model=UNDERFLOW_MODELS)
def test_sound_on_the_underflow_family(strategy, model):
    for rigorous in (True, False):
        assert_exactly_sound(model, strategy, rigorous)
