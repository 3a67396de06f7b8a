"""The sub-cubic family: configuration space, decomposition bounds, exhaustive soundness of
all 100 configurations, certificates, and the reference implementation's numbers."""

from __future__ import annotations

import functools
from math import comb
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from compact_proofs.errors import CertificateError
from compact_proofs.model.file_format import load_model
from compact_proofs.model.transformer import AttnOnlyTransformer, ModelConfig
from compact_proofs.proofs.exhaustive import all_sequences, exact_accuracy, is_correct
from compact_proofs.proofs.paths import path_matrices
from compact_proofs.proofs.registry import (
    PAPER_STRATEGIES,
    STRATEGIES,
    get_strategy,
    resolve_strategies,
)
from compact_proofs.proofs.runner import prove, verify_payload
from compact_proofs.proofs.subcubic.bounds import (
    ORIGINAL,
    SOUND,
    proven_mask,
    subcubic_bounds,
)
from compact_proofs.proofs.subcubic.config import ALL_CONFIGS, ERROR_HANDLINGS, SubcubicConfig
from compact_proofs.proofs.subcubic.decompose import (
    Directions,
    decompose_eqke,
    sigma1_upper_bound,
    weights64,
)
from compact_proofs.proofs.subcubic.original import original_count
from compact_proofs.proofs.subcubic.search import find_directions, find_min_gaps
from compact_proofs.proofs.subcubic.strategy import SubcubicStrategy
from compact_proofs.proofs.tensor_codec import decode_tensor, encode_tensor
from compact_proofs.soundness.arithmetic import Arithmetic
from compact_proofs.soundness.exact import CORRECT, exact_verdicts

from conftest import FIXTURES
from models import adversarial_models, ideal_model, large_bias_model, random_model, trained_model

APPENDIX_A = Path(__file__).parent / "data" / "appendix_a.tsv"
SUBCUBIC = [s for s in STRATEGIES.values() if isinstance(s, SubcubicStrategy)]


# -- configuration space -------------------------------------------------------------------


def test_appendix_a_reproduced():
    rows = [line.rstrip("\n").split("\t") for line in APPENDIX_A.read_text().splitlines()]
    assert len(rows) == len(ALL_CONFIGS) == 100
    for cfg, (index, tricks, group, leading, dims) in zip(ALL_CONFIGS, rows, strict=True):
        got = (cfg.tricks, cfg.group, cfg.leading_complexity, cfg.unexplained_dims(64, 32))
        assert got == (tricks, group, leading, int(dims)), f"row {index}"


def test_registry_has_the_paper_s_102_strategies_then_the_new_ones():
    assert len(PAPER_STRATEGIES) == 102 == len({s.id for s in PAPER_STRATEGIES.values()})
    assert len(STRATEGIES) == 105 == len({s.id for s in STRATEGIES.values()})
    assert [s.config for s in SUBCUBIC] == list(ALL_CONFIGS)
    default = get_strategy("EUPU-mean-query+max-diff--attn-mean-query+diff--attn-err-max-diff")
    assert default.config == SubcubicConfig()
    assert get_strategy(SubcubicConfig().tricks) is default  # LaTeX key alias
    assert len(resolve_strategies("subcubic")) == 100
    assert len(resolve_strategies("group:subcubic")) == 8


@pytest.mark.parametrize(("v", "k"), [(2, 1), (5, 2), (6, 3), (7, 4), (64, 4)])
def test_cells_with_gap_one_partition_all_inputs(v, k):
    """Sum over valid cells of C(k-1, c') m^c' = v^k (SPEC §12.4)."""
    total = 0
    for m in range(v):
        for q in range(m + 1):
            for c in range(k):
                if q == m:
                    if c >= 1 and m < 1:
                        continue
                    total += comb(k - 1, c) * m**c
                elif c >= 1:
                    total += comb(k - 1, c - 1) * m ** (c - 1)
    assert total == v**k


# -- decomposition bounds ------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    v=st.integers(2, 20), d=st.integers(1, 8), seed=st.integers(0, 10**6), rank_one=st.booleans()
)
def test_certified_sigma1_bound(v, d, seed, rank_one):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(v, d, dtype=torch.float64, generator=gen)
    Y = torch.randn(d, v, dtype=torch.float64, generator=gen)
    if rank_one:
        X = X[:, :1] @ X[:1, :]
    true = torch.linalg.matrix_norm(X @ Y, ord=2)
    bound = sigma1_upper_bound(X, Y)
    assert bound >= true * (1 - 1e-12)
    assert bound <= true * d ** (1 / 2**9) * (1 + 1e-9) + 1e-12


def test_certified_sigma1_of_zero_is_zero():
    Z = torch.zeros(4, 3, dtype=torch.float64)
    assert float(sigma1_upper_bound(Z, Z.T)) == 0.0


def random_directions(v: int, d: int, seed: int) -> Directions:
    gen = torch.Generator().manual_seed(seed)

    def r(n: int) -> torch.Tensor:
        return torch.randn(n, dtype=torch.float64, generator=gen)

    return Directions(r(v), r(v), r(v), r(v), r(d), r(d), r(d))


DECOMPOSED = {
    "trained": lambda: trained_model(8, 4, 12, 300, 4),
    "random, biases": lambda: random_model(ModelConfig(8, 4, 12, 12), 5, biases=True),
    "large biases": lambda: large_bias_model(),
}


@pytest.mark.parametrize("error", ERROR_HANDLINGS)
@pytest.mark.parametrize("directions", ["searched", "random"])
@pytest.mark.parametrize("name", list(DECOMPOSED))
def test_error_bound_covers_the_computed_error(error, directions, name):
    """err_bound[q] >= rowrange(EQKE_bar - EQKE_hat)[q] for searched and arbitrary directions,
    with EQKE_bar and pos_err those of the path matrices (biases folded the same way):
    EQKE_bar[q, t] + pos_err[q, p] = EQKE[q, t] + EQKP[q, p]."""
    model = DECOMPOSED[name]()
    v, d = model.cfg.d_vocab, model.cfg.d_model
    w = weights64(model)
    dirs = find_directions(w) if directions == "searched" else random_directions(v, d, 1)
    qk = decompose_eqke(w, dirs, error, SubcubicConfig(error=error).route)
    paths = path_matrices(model)
    shift = paths.EQKP - qk.pos_err  # [v, k]: the same at every position p
    assert torch.allclose(shift, shift[:, :1].expand_as(shift), atol=1e-9)
    EQKE_bar = paths.EQKE + shift[:, :1]
    b_Q, b_K = (getattr(model, n)[0].detach().double() for n in ("b_Q", "b_K"))
    Q = w.E_q @ w.W_Q + b_Q
    assert torch.allclose(EQKE_bar, Q @ (w.E_bar @ w.W_K).T)
    err = EQKE_bar - qk.EQKE_hat
    actual = err.amax(-1) - err.amin(-1)
    assert bool((qk.err_bound >= actual - 1e-9 * (1 + float(EQKE_bar.abs().max()))).all())
    assert torch.allclose(qk.pos_err, Q @ ((w.W_pos - w.W_pos.mean(0)) @ w.W_K + b_K).T)


# -- exhaustive soundness ------------------------------------------------------------------


def check_sound(model, strategy: SubcubicStrategy, payload=None) -> int:
    """Every input the proof counts is correct; the count equals the proven set's size."""
    cfg = model.cfg
    payload = strategy.search(model) if payload is None else payload
    verdict = strategy.verify(model, payload)
    d = verdict.details
    seqs = all_sequences(cfg.d_vocab, cfg.n_ctx)
    proven = proven_mask(d["B"], d["gaps"], d["cells"], seqs)
    wrong = seqs[proven & ~is_correct(model, seqs)]
    assert wrong.numel() == 0, f"{strategy.id} certifies misclassified {wrong[:5].tolist()}"
    assert verdict.correct_count == int(proven.sum())
    return verdict.correct_count


@functools.cache
def zoo() -> dict[str, object]:
    models = {
        "ideal, sharp": ideal_model(7, 4, beta=6.0, alpha=6.0),
        "ideal, noisy": ideal_model(6, 4, beta=3.0, alpha=4.0, noise=0.1, seed=3),
        "ideal, very noisy (bad)": ideal_model(6, 4, beta=3.0, alpha=4.0, noise=0.3, seed=3),
        "ideal, weak attention": ideal_model(7, 3, beta=0.4, alpha=3.0, noise=0.1, seed=4),
        "trained v=8 k=4": trained_model(8, 4, 12, 600, 1),
        "trained v=6 k=3": trained_model(6, 3, 12, 400, 0),
        "bad (random)": random_model(ModelConfig(d_vocab=6, n_ctx=3, d_model=5, d_head=4), 9),
    }
    models.update(adversarial_models())  # includes "non-zero biases"
    return models


@pytest.mark.parametrize("name", list(zoo()))
def test_every_configuration_is_sound_on_the_zoo(name):
    model = zoo()[name]
    exact = exact_accuracy(model).correct
    counts = [check_sound(model, s) for s in SUBCUBIC]
    assert max(counts) <= exact
    useful = {"ideal, sharp": 0.3, "ideal, noisy": 0.15, "trained v=8 k=4": 0.3}
    if name in useful:  # the zoo is not vacuous: these proofs certify a real fraction
        assert max(counts) > useful[name] * model.cfg.n_inputs


@settings(max_examples=40, deadline=None)
@given(
    index=st.integers(0, 99),
    v=st.integers(2, 7),
    k=st.integers(1, 4),
    seed=st.integers(0, 10**6),
    beta=st.floats(0.1, 10.0),
    noise=st.floats(0.0, 0.6),
    pos_scale=st.sampled_from([0.0, 1.0, 6.0]),
)
def test_sound_on_drawn_models(index, v, k, seed, beta, noise, pos_scale):
    model = ideal_model(v, k, beta=beta, alpha=4.0, noise=noise, seed=seed, pos_scale=pos_scale)
    check_sound(model, SUBCUBIC[index])


@settings(max_examples=25, deadline=None)
@given(
    index=st.integers(0, 99),
    seed=st.integers(0, 10**6),
    scale=st.sampled_from([0.01, 1.0, 10.0]),
    biases=st.booleans(),
)
def test_sound_on_random_models(index, seed, scale, biases):
    cfg = ModelConfig(d_vocab=5, n_ctx=3, d_model=4, d_head=3)
    check_sound(random_model(cfg, seed, scale, biases), SUBCUBIC[index])


@settings(max_examples=15, deadline=None)
@given(
    index=st.integers(0, 99),
    v=st.integers(4, 7),
    k=st.integers(1, 3),
    seed=st.integers(0, 10**6),
    q_shift=st.floats(-1.9, 1.0),
    penalty=st.floats(0.0, 3.0),
)
def test_sound_on_drawn_large_bias_models(index, v, k, seed, q_shift, penalty):
    check_sound(large_bias_model(v, k, seed, q_shift, penalty), SUBCUBIC[index])


# -- certificates --------------------------------------------------------------------------


def test_certificate_round_trip_gives_same_bound_and_flops():
    model = trained_model(8, 4, 12, 600, 1)
    for strategy in SUBCUBIC[::7]:
        result, cert = prove(model, strategy)
        again = verify_payload(model, strategy, cert.payload)
        assert (again.correct_count, again.flops) == (result.correct_count, result.flops)


@pytest.mark.parametrize("tamper", ["gaps-to-one", "gaps-raised", "gaps-random", "directions"])
def test_tampered_certificates_stay_sound(tamper):
    model = trained_model(8, 4, 12, 600, 1)
    exact = exact_accuracy(model).correct
    gen = torch.Generator().manual_seed(0)
    for strategy in SUBCUBIC[::3]:
        payload = strategy.search(model)
        gaps = decode_tensor(payload["min_gaps"]).long()
        if tamper == "gaps-to-one":
            gaps = torch.ones_like(gaps)
        elif tamper == "gaps-raised":
            gaps = gaps + 2
        elif tamper == "gaps-random":
            gaps = torch.randint(1, 9, gaps.shape, generator=gen)
        else:
            dirs = payload["directions"]
            for name in dirs:
                t = decode_tensor(dirs[name])
                dirs[name] = encode_tensor(torch.randn(t.shape, generator=gen, dtype=torch.float64))
        payload["min_gaps"] = encode_tensor(gaps.to(torch.uint8))
        assert check_sound(model, strategy, payload) <= exact


@pytest.mark.parametrize(
    "bad", ["gap-zero", "gap-shape", "gap-float", "nan-direction", "missing", "wrong-config"]
)
def test_malformed_certificates_are_rejected(bad):
    model = trained_model(6, 3, 12, 400, 0)
    strategy = SUBCUBIC[0]
    payload = strategy.search(model)
    gaps = decode_tensor(payload["min_gaps"])
    if bad == "gap-zero":
        gaps[2, 3, 1] = 0
        payload["min_gaps"] = encode_tensor(gaps)
    elif bad == "gap-shape":
        payload["min_gaps"] = encode_tensor(gaps[:, :, :2])
    elif bad == "gap-float":
        payload["min_gaps"] = encode_tensor(gaps.double())
    elif bad == "nan-direction":
        payload["directions"]["u_Q"] = encode_tensor(torch.full((12,), float("nan")))
    elif bad == "missing":
        del payload["directions"]
    else:
        payload["config"] = SUBCUBIC[1].id
    with pytest.raises(CertificateError):
        strategy.verify(model, payload)


# -- biases ------------------------------------------------------------------------------------

ARITHMETICS = (Arithmetic.FAST, Arithmetic.BALL, Arithmetic.INTERVAL)


def test_large_biases_are_proven_soundly_in_every_arithmetic():
    """All 100 configurations on a model whose biases are large and load-bearing (see the next
    test): every input certified in float64 (all 100), balls, intervals and the default (every
    7th configuration: all handlings) is correct in exact arithmetic, every count is the
    certified set's size, and the proofs are useful."""
    model = large_bias_model()
    seqs = all_sequences(model.cfg.d_vocab, model.cfg.n_ctx)
    correct = exact_verdicts(model, seqs) == CORRECT
    best = 0
    for i, strategy in enumerate(SUBCUBIC):
        payload = strategy.search(model)
        for arith in ARITHMETICS if i % 7 == 0 else ARITHMETICS[:1]:
            proven = strategy.proven_in(model, payload, seqs, arith)
            wrong = seqs[proven & ~correct].tolist()
            assert not wrong, (strategy.id, arith, wrong[:5])
            assert strategy.verify_in(model, payload, arith).correct_count == int(proven.sum())
            best = max(best, int(proven.sum()))
        if i % 7 == 0:
            proven = strategy.proven(model, payload, seqs)
            assert not bool((proven & ~correct).any()), strategy.id
            assert strategy.verify(model, payload).correct_count == int(proven.sum())
    assert {c.error for c in ALL_CONFIGS[::7]} == set(ERROR_HANDLINGS)
    assert best > 0.4 * model.cfg.n_inputs  # 80% of the correct inputs


def without(model: AttnOnlyTransformer, name: str) -> AttnOnlyTransformer:
    out = AttnOnlyTransformer(model.cfg)
    out.load_state_dict(model.state_dict())
    with torch.no_grad():
        getattr(out, name).zero_()
    return out


@pytest.mark.parametrize("bias", ["b_Q", "b_V", "b_O", "b_U"])
def test_each_large_bias_is_load_bearing(bias):
    """The test above has teeth: a proof that ignored this bias (= the proof of the model
    without it) would certify inputs the model misclassifies. (b_K is not load-bearing: it
    shifts all scores of a query alike, which the softmax cancels.)"""
    model = large_bias_model()
    seqs = all_sequences(model.cfg.d_vocab, model.cfg.n_ctx)
    correct = exact_verdicts(model, seqs) == CORRECT
    unbiased = without(model, bias)
    unsound = 0
    for strategy in SUBCUBIC[::3]:
        proven = strategy.proven(unbiased, strategy.search(unbiased), seqs, rigorous=False)
        unsound += int((proven & ~correct).sum())
    assert unsound > 0


def test_zero_biases_add_no_terms_and_non_zero_ones_do():
    """Zero biases are left out of the proof (same proof, same FLOPs as before biases were
    supported); a non-zero one costs a few more FLOPs."""
    model = trained_model(6, 3, 12, 400, 0)
    assert not model.nonzero_biases()
    w = weights64(model, Arithmetic.BALL)
    assert (w.b_Q, w.b_K, w.b_V, w.b_O, w.b_U) == (None,) * 5
    strategy = get_strategy(SubcubicConfig().id)
    payload = strategy.search(model)
    _, flops = strategy.verify_counted(model, payload, rigorous=False)
    for bias in ("b_Q", "b_K", "b_V", "b_O", "b_U"):
        biased = without(model, bias)
        with torch.no_grad():
            getattr(biased, bias).fill_(1e-3)
        assert getattr(weights64(biased), bias) is not None
        _, more = strategy.verify_counted(biased, payload, rigorous=False)
        assert more > flops, bias


# -- the reference implementation's numbers ------------------------------------------------


needs_fixtures = pytest.mark.skipif(not FIXTURES.exists(), reason="shared fixtures missing")


@needs_fixtures
@pytest.mark.parametrize(
    ("fields", "count"),
    [
        (("mean_query+max_diff", "mean_query+diff", "max_diff"), 9435015),
        (
            ("global_max_diff_exact", "drop_average_query_per_output_logit_reasoning", "svd"),
            4186141,
        ),
        (("mean_query+max_diff", "mean_query+diff", "mean+max_diff_subproduct"), 9573026),
        (("mean_query+max_diff", "mean_query+diff", "exact_EQKE+max_diff_exact"), 9921539),
        (("max_diff_exact", "mean_query+diff", "max_diff"), 10418960),
    ],
)
def test_original_rules_reproduce_reference_counts_seed_123(fields, count):
    model = load_model(FIXTURES / "reference-maxof4-seed123.safetensors").model
    assert original_count(model, SubcubicConfig(*fields)) == count


@needs_fixtures
@pytest.mark.parametrize(
    ("seed", "original", "sound"),
    [(123, 9435015, 9852733), (50, 9546330, 10029015), (104, 11159262, 11829230)],
)
def test_default_configuration_on_reference_models(seed, original, sound):
    """SPEC §11.2: original rules vs the sound fix (+ m - g + 1 counting)."""
    model = load_model(FIXTURES / f"reference-maxof4-seed{seed}.safetensors").model
    assert original_count(model, SubcubicConfig()) == original
    result, _ = prove(model, get_strategy(SubcubicConfig().id))
    assert result.correct_count == sound
    assert result.correct_count <= exact_accuracy(model).correct


def test_original_mean_diff_rule_is_unsound_and_the_fix_is_not():
    """SPEC §11.2 made concrete: on this small random model (found by an adversarial search)
    the original mean+diff step certifies the misclassified input [2, 1]; the sound rule
    does not certify it (nor any other misclassified input)."""
    model = random_model(
        ModelConfig(d_vocab=6, n_ctx=2, d_model=4, d_head=4), 731, scale=3.689857244491577
    )
    cfg = SubcubicConfig("max_diff_exact", "mean_query+diff", "svd")
    w = weights64(model)
    dirs = find_directions(w)
    gaps = find_min_gaps(w, dirs, cfg, ORIGINAL)
    qk = decompose_eqke(w, dirs, cfg.error, cfg.route)
    seqs = all_sequences(6, 2)
    correct = is_correct(model, seqs)
    B, cells = subcubic_bounds(w, qk, gaps, w.E_q, cfg.eu, dirs.W_EP_direction, True, ORIGINAL)
    wrongly_proven = seqs[proven_mask(B, gaps, cells, seqs) & ~correct].tolist()
    assert [2, 1] in wrongly_proven
    B, cells = subcubic_bounds(w, qk, gaps, w.E_q, cfg.eu, dirs.W_EP_direction, True, SOUND)
    assert not bool((proven_mask(B, gaps, cells, seqs) & ~correct).any())
    check_sound(model, get_strategy(cfg.id))
