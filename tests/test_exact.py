"""The exact-arithmetic reference (soundness.exact): certified enclosures, agreement with
the float64 forward pass away from ties, and exact tie detection."""

from __future__ import annotations

import math
from decimal import Decimal, localcontext
from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from compact_proofs.model.transformer import AttnOnlyTransformer, ModelConfig
from compact_proofs.proofs.exhaustive import all_sequences, forward_margin, is_correct
from compact_proofs.soundness.exact import (
    CORRECT,
    UNDECIDED,
    WRONG,
    ExactReference,
    exact_verdicts,
    exp_interval,
    sqrt_interval,
)

from models import adversarial_models, float64_cancellation, ideal_model, random_model

# e to 60 significant digits (the mathematical constant)
E_DIGITS = Fraction("2.71828182845904523536028747135266249775724709369995957496697")

# -- exp and sqrt enclosures ---------------------------------------------------------------


def ulp_slack(y: float) -> float:
    """Two ulps of a float64 result (math.exp is accurate to about one ulp)."""
    return 2 * math.ulp(y)


@settings(max_examples=200, deadline=None)
@given(x=st.floats(-700.0, 700.0, allow_nan=False), prec=st.sampled_from([8, 30, 53, 64]))
def test_exp_enclosure_contains_math_exp_and_is_tight(x, prec):
    lo, hi = exp_interval(Fraction(x), prec)
    y = math.exp(x)
    assert 0 < lo <= hi
    assert float(lo) <= y + ulp_slack(y)
    assert float(hi) >= y - ulp_slack(y)
    assert hi - lo <= lo / 2**prec


@pytest.mark.parametrize("prec", [64, 200, 1000])
def test_exp_of_one_matches_e(prec):
    lo, hi = exp_interval(1, prec)
    assert lo <= E_DIGITS + Fraction(1, 10**59) and hi >= E_DIGITS - Fraction(1, 10**59)
    assert hi - lo <= lo / 2**prec
    if prec >= 200:  # tighter than the 60 digits: both ends agree with them
        assert abs(lo - E_DIGITS) < Fraction(1, 10**58)


@settings(max_examples=60, deadline=None)
@given(
    a=st.fractions(min_value=-50, max_value=50, max_denominator=10**6),
    b=st.fractions(min_value=-50, max_value=50, max_denominator=10**6),
    prec=st.sampled_from([16, 64, 300]),
)
def test_exp_enclosures_are_consistent_with_exp_of_a_sum(a, b, prec):
    """exp(a) exp(b) = exp(a + b): the product of two enclosures meets the third."""
    a_lo, a_hi = exp_interval(a, prec)
    b_lo, b_hi = exp_interval(b, prec)
    s_lo, s_hi = exp_interval(a + b, prec)
    assert a_lo * b_lo <= s_hi and s_lo <= a_hi * b_hi
    # and a finer enclosure meets the coarser one (both contain the true value)
    f_lo, f_hi = exp_interval(a, 2 * prec)
    assert f_lo <= a_hi and a_lo <= f_hi


def test_exp_extreme_arguments():
    assert exp_interval(0, 64) == (1, 1)
    lo, hi = exp_interval(-(10**6), 64)
    assert 0 < lo <= hi and hi - lo <= lo / 2**64
    # exp(-10^6) = 2^(-10^6 / ln 2): lo = n / 2^D, check log2(n) - D
    log2_lo = math.log2(lo.numerator) - (lo.denominator.bit_length() - 1)
    assert log2_lo == pytest.approx(-(10**6) / math.log(2), abs=1e-6)
    with pytest.raises(ValueError):
        exp_interval(1, 4)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 32, 10**12 + 39])
@pytest.mark.parametrize("bits", [0, 10, 100])
def test_sqrt_enclosure(n, bits):
    lo, hi = sqrt_interval(n, bits)
    assert lo * lo <= n <= hi * hi
    assert hi - lo <= Fraction(1, 2**bits)
    if math.isqrt(n) ** 2 == n:
        assert lo == hi == math.isqrt(n)


# -- agreement with the float64 forward pass away from ties --------------------------------


def assert_agrees_away_from_ties(model: AttnOnlyTransformer, rel: float = 1e-6) -> None:
    seqs = all_sequences(model.cfg.d_vocab, model.cfg.n_ctx)
    verdict = ExactReference(model).decide(seqs)
    margin, scale = forward_margin(model, seqs)
    far = margin.abs() > rel * scale
    assert not bool((verdict == UNDECIDED).any())
    expected = torch.where(is_correct(model, seqs), CORRECT, WRONG).to(torch.int8)
    bad = seqs[far & (verdict != expected)]
    assert bad.numel() == 0, f"exact and float64 verdicts differ on {bad[:5].tolist()}"


@settings(max_examples=60, deadline=None)
@given(
    v=st.integers(1, 5),
    k=st.integers(1, 3),
    d=st.integers(1, 5),
    d_head=st.integers(1, 5),
    n_heads=st.integers(1, 3),
    seed=st.integers(0, 10**6),
    scale=st.sampled_from([1e-3, 0.3, 1.0, 3.0, 20.0]),
    biases=st.booleans(),
)
def test_exact_agrees_with_float64_on_random_models(v, k, d, d_head, n_heads, seed, scale, biases):
    cfg = ModelConfig(d_vocab=v, n_ctx=k, d_model=d, d_head=d_head, n_heads=n_heads)
    assert_agrees_away_from_ties(random_model(cfg, seed, scale, biases))


@settings(max_examples=25, deadline=None)
@given(
    v=st.integers(2, 6),
    k=st.integers(1, 4),
    seed=st.integers(0, 10**6),
    beta=st.floats(0.05, 20.0),
    noise=st.floats(0.0, 0.5),
    pos_scale=st.sampled_from([0.0, 5.0]),
)
def test_exact_agrees_with_float64_on_nearly_ideal_models(v, k, seed, beta, noise, pos_scale):
    assert_agrees_away_from_ties(ideal_model(v, k, beta, 4.0, noise, seed, pos_scale))


@pytest.mark.parametrize("name", list(adversarial_models()))
def test_exact_agrees_with_float64_on_adversarial_models(name):
    assert_agrees_away_from_ties(adversarial_models()[name])


@pytest.mark.parametrize("n_heads", [1, 2])
def test_logit_difference_bounds_contain_the_float64_values(n_heads):
    cfg = ModelConfig(d_vocab=4, n_ctx=3, d_model=5, d_head=3, n_heads=n_heads)  # sqrt(3)
    model = random_model(cfg, 11, scale=2.0, biases=True)
    ref = ExactReference(model)
    m64 = AttnOnlyTransformer(cfg, dtype=torch.float64)
    m64.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    for x in all_sequences(4, 3)[::5].tolist():
        logits = m64(torch.tensor([x]))[0].tolist()
        m = max(x)
        for prec in (30, 64, 256):
            bounds = ref.logit_difference_bounds(x, prec)
            assert bounds[m] is None
            for j, b in enumerate(bounds):
                if j == m:
                    continue
                lo, hi = b
                diff = logits[m] - logits[j]
                slack = 1e-12 * max(1.0, max(abs(t) for t in logits))  # float64's own error
                assert float(lo) - slack <= diff <= float(hi) + slack
                assert hi - lo <= Fraction(1, 2 ** (prec - 8)) * (1 + abs(lo))


# -- ties and near-ties --------------------------------------------------------------------


def blank(v: int, k: int, d: int, d_head: int = 1, n_heads: int = 1) -> AttnOnlyTransformer:
    return AttnOnlyTransformer(
        ModelConfig(d_vocab=v, n_ctx=k, d_model=d, d_head=d_head, n_heads=n_heads)
    )


def test_uniform_attention_cancellation_tie_is_wrong():
    """Input [0, 2] with W_Q = 0 (attention exactly 1/2, 1/2): the direct path gives
    l_2 - l_1 = +1 and the head's value path -2 at position 0 (token 0), 0 at position 1:
    l_2 - l_1 = 1 - 2/2 = 0 exactly."""
    model = blank(3, 2, 3)
    with torch.no_grad():
        model.W_E[:] = torch.eye(3)
        model.W_V[0, 0, 0] = 1.0  # value = [token is 0]
        model.W_O[0, 0, 2] = -2.0  # ... written, times -2, into residual dim 2
        model.W_U[2] = torch.tensor([0.0, -0.5, 0.5])  # dim 2 carries l_2 - l_1
    x = [0, 2]
    ref = ExactReference(model)
    assert ref.decide_one(x) == WRONG
    assert ref.logit_difference_bounds(x)[1] == (0, 0)
    assert ref.decide_one([1, 2]) == CORRECT  # no token 0: l_2 - l_1 = 1
    margin, _ = forward_margin(model, torch.tensor([x]))
    assert float(margin[0]) == 0.0


def test_tie_with_non_trivial_attention_is_wrong():
    """W_U columns 1 and 2 identical: every input with max 2 ties with logit 1, whatever the
    (non-uniform, irrational) attention pattern is."""
    model = random_model(ModelConfig(d_vocab=4, n_ctx=3, d_model=5, d_head=2), 3, biases=True)
    with torch.no_grad():
        model.W_U[:, 1] = model.W_U[:, 2]
        model.b_U[1] = model.b_U[2]
    seqs = all_sequences(4, 3)
    verdict = exact_verdicts(model, seqs)
    assert bool((verdict[seqs.max(-1).values == 2] == WRONG).all())
    ref = ExactReference(model)
    assert ref.logit_difference_bounds([0, 2, 1])[1] == (0, 0)


def test_tie_through_equal_scores_is_wrong():
    """Three heads with irrational, non-uniform attention (scores 0.7 (1.3 + h) / sqrt(2)).
    In [1, 1, 2] positions 0 and 1 hold the same token, so head 0 gives them equal weights;
    its values are the positions' signs (+1, -1), so its output cancels exactly. With the
    direct path l_2 - l_1 = 1 the input is correct; making the direct path tie makes
    l_2 - l_1 = 0 exactly, which only exact grouping by equal scores can see."""
    model = blank(3, 3, 4, d_head=2, n_heads=3)
    with torch.no_grad():
        model.W_E[:, :3] = torch.eye(3)
        model.W_pos[:, 3] = torch.tensor([1.0, -1.0, 0.0])  # position sign in dim 3
        for h in range(3):
            model.W_Q[h, 2, 0] = 0.7  # query token 2 looks along key dim 0
            model.W_K[h, 1, 0] = 1.3 + h  # where token 1 scores high
        model.W_V[0, 3, 0] = 1.0  # head 0's value: the position sign
        model.W_O[0, 0] = torch.tensor([0.0, 1.0, -1.0, 0.0])
        model.W_U[1, 1] = model.W_U[2, 2] = 1.0  # l_1 = dim 1, l_2 = dim 2, l_0 = 0
    x = [1, 1, 2]
    ref = ExactReference(model)
    lo, hi = ref.logit_difference_bounds(x, 100)[1]
    assert lo <= 1 <= hi and hi - lo < Fraction(1, 2**80)
    assert ref.decide_one(x) == CORRECT
    with torch.no_grad():
        model.W_U[2, 1] = 1.0  # l_1 = dim 1 + dim 2: the final residual is exactly [0,0,1,0]
    ref = ExactReference(model)
    assert ref.decide_one(x) == WRONG
    assert ref.logit_difference_bounds(x)[1] == (0, 0)
    assert ref.decide_one([1, 0, 2]) == WRONG  # l_2 - l_1 = alpha_1 - alpha_0 < 0 ...
    assert ref.decide_one([0, 1, 2]) == CORRECT  # ... or > 0: decided, not ties


def cancellation_model(sign: int) -> AttnOnlyTransformer:
    """v=2, k=1, d=2: l_1 = (2^30 + sign 2^-40) - 2^30 = sign 2^-40 exactly, l_0 = -2^-50.

    float64 rounds 2^30 + sign 2^-40 to 2^30, so its forward pass sees l_1 = 0 > l_0 either way.
    """
    model = blank(2, 1, 2)
    with torch.no_grad():
        model.W_E[1] = torch.tensor([1.0, 1.0])
        model.W_U[:, 1] = torch.tensor([2.0**30, sign * 2.0**-40])
        model.b_U[:] = torch.tensor([-(2.0**-50), -(2.0**30)])
    return model


def test_near_tie_below_float64_resolution_is_decided_exactly():
    assert ExactReference(cancellation_model(+1)).decide_one([1]) == CORRECT
    assert ExactReference(cancellation_model(-1)).decide_one([1]) == WRONG
    lo, hi = ExactReference(cancellation_model(-1)).logit_difference_bounds([1])[0]
    assert lo == hi == -Fraction(1, 2**40) + Fraction(1, 2**50)


def decimal_logits(model: AttnOnlyTransformer, x: list[int], digits: int = 250) -> list[Decimal]:
    """An independent reference: the forward pass written out term by term in `decimal` with
    `digits` significant digits (exp and sqrt correctly rounded by the decimal module)."""

    def dec(t: torch.Tensor):
        return [dec(u) for u in t] if t.dim() else Decimal(float(t))

    with localcontext() as ctx:
        ctx.prec = digits
        w = {n: dec(t.detach().double()) for n, t in model.weights().items()}
        cfg = model.cfg
        k, d, e, v = cfg.n_ctx, cfg.d_model, cfg.d_head, cfg.d_vocab
        resid = [[w["W_E"][x[p]][i] + w["W_pos"][p][i] for i in range(d)] for p in range(k)]
        final = [resid[-1][i] + w["b_O"][i] for i in range(d)]
        root = Decimal(e).sqrt()
        for h in range(cfg.n_heads):

            def proj(r, name, h=h):
                return [
                    sum(r[i] * w[f"W_{name}"][h][i][j] for i in range(d)) + w[f"b_{name}"][h][j]
                    for j in range(e)
                ]

            q = proj(resid[-1], "Q")
            keys = [proj(resid[p], "K") for p in range(k)]
            values = [proj(resid[p], "V") for p in range(k)]
            scores = [sum(q[j] * keys[p][j] for j in range(e)) / root for p in range(k)]
            top = max(scores)
            weights = [(s - top).exp() for s in scores]
            total = sum(weights)
            z = [sum(weights[p] / total * values[p][j] for p in range(k)) for j in range(e)]
            for i in range(d):
                final[i] += sum(z[j] * w["W_O"][h][j][i] for j in range(e))
        return [sum(final[i] * w["W_U"][i][j] for i in range(d)) + w["b_U"][j] for j in range(v)]


@pytest.mark.parametrize(
    ("model", "fools_float64"),
    [
        (float64_cancellation(ideal_model(4, 3, noise=0.3, seed=1), near_tie=(2, 3, 1e-5)), True),
        (
            float64_cancellation(
                random_model(ModelConfig(4, 3, 3, 2), 1), 2.0**50, 2.0**40, True, (1, 2, 1e-3)
            ),
            True,
        ),
        (random_model(ModelConfig(3, 3, 4, 3, n_heads=2), 5, scale=3.0, biases=True), False),
    ],
    ids=["cancellation", "cancellation-scores-bias", "two-heads-biases"],
)
def test_exact_agrees_with_a_250_digit_decimal_forward_pass(model, fools_float64):
    """Where float64 is blind (logits below H 2^-53 with H = 2^50) the exact verdicts still
    match an independent high-precision evaluation on every input."""
    tokens = all_sequences(model.cfg.d_vocab, model.cfg.n_ctx)
    verdicts = ExactReference(model).decide(tokens)
    if fools_float64:  # the float64 forward pass gets some of these inputs wrong
        assert bool(((verdicts == CORRECT) != is_correct(model, tokens)).any())
    for x, verdict in zip(tokens.tolist(), verdicts.tolist(), strict=True):
        logits = decimal_logits(model, x)
        m = max(x)
        margin = min(logits[m] - logits[j] for j in range(len(logits)) if j != m)
        assert abs(margin) > Decimal(10) ** -100  # no input here is within 1e-100 of a tie
        assert verdict == (CORRECT if margin > 0 else WRONG), (x, margin)


def test_input_validation():
    ref = ExactReference(blank(3, 2, 2))
    with pytest.raises(ValueError):
        ref.decide_one([0, 3])
    with pytest.raises(ValueError):
        ref.decide_one([0])
    model = blank(3, 2, 2)
    with torch.no_grad():
        model.W_E[0, 0] = float("nan")
    with pytest.raises(ValueError):
        ExactReference(model)
