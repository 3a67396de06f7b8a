"""The independent checker's `separable-subcubic` (soundness/checker/separable_subcubic.py)
against the main strategy (proofs/separable_subcubic.py) and the exact accuracy.

The checker re-derives the proof in numpy float64 with its own margins (tol in the direct
path, a subnormal slack in every threshold, a guarded underflow test), so its count must never
exceed the main verifier's default (rigorous) count nor the exact number of correct inputs; on
ordinary models the two agree exactly (all 151 paper models:
benchmarks/crosscheck_separable_subcubic.py). Also: its building blocks bound what they claim
(the top-r coupled value bound, the prefix bound), payload validation, any n_ctx, and the
end-to-end `prove --certificate-out` / `check` path.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compact_proofs.cli import main
from compact_proofs.model.file_format import bundled_model_path, load_model, save_model
from compact_proofs.model.transformer import AttnOnlyTransformer, ModelConfig
from compact_proofs.proofs.exhaustive import exact_accuracy
from compact_proofs.proofs.separable_subcubic import SeparableSubcubic
from compact_proofs.soundness import checker
from compact_proofs.soundness.checker import separable_subcubic as ssc
from compact_proofs.soundness.checker.errors import CertificateError

from models import (
    UNDERFLOW_MODELS,
    adversarial_models,
    ideal_model,
    large_bias_model,
    random_model,
    trained_model,
    underflow_model,
)

STRATEGY = SeparableSubcubic()
PAPER = Path(__file__).resolve().parents[1] / "src" / "compact_proofs" / "data" / "paper"
PAYLOADS = ({}, {"top_r": 0, "window": 0}, {"top_r": 1, "window": 1})

SMALL = {
    **{f"zoo: {n}": (lambda n=n: adversarial_models()[n]) for n in adversarial_models()},
    "random v7 k3": lambda: random_model(ModelConfig(7, 3, 6, 5), 11),
    "random v5 k1": lambda: random_model(ModelConfig(5, 1, 6, 5), 13),
    "random v2 k4": lambda: random_model(ModelConfig(2, 4, 3, 3), 14),
    "random v5 k3 biases x10": lambda: random_model(ModelConfig(5, 3, 5, 4), 7, 10.0, True),
    "ideal v6 k4": lambda: ideal_model(6, 4),
    "ideal v6 k5 noisy positional": lambda: ideal_model(6, 5, noise=0.5, seed=2, pos_scale=1),
    "large biases": lambda: large_bias_model(),
    "trained v8 k3": lambda: trained_model(8, 3, 16, 300, 0),
    "underflow v3 k4": lambda: underflow_model(
        3, 4, A=747.7534753614889, B=617.0657590083072, C=20991.46538616362,
        direct=2.7372001361855488e-53, seed=413,
    ),
    # theta = on_max - K / W cancelled here (float64 certified the misclassified (0, 0, 1))
    "cancelling threshold": lambda: ideal_model(8, 3, 3.0, 1.0, 0.5, 73223, 0.5),
    "underflow v4 k4": lambda: underflow_model(
        4, 4, A=746.625232896441, B=610.2754332637527, C=373427669.6042438,
        direct=5.9971937264238805e-55, seed=470,
    ),
}  # fmt: skip


def checker_model(tmp: Path, model: AttnOnlyTransformer) -> checker.Model:
    """The model as the checker reads it (through its own model-file loader)."""
    save_model(model, tmp / "m.safetensors")
    return checker.load_model_file(tmp / "m.safetensors")


def assert_sound(tmp: Path, model: AttnOnlyTransformer) -> list[tuple[int, int]]:
    """For the searched payload and every payload of PAYLOADS: checker <= the main verifier's
    float64 (--fast) count of the same proof, and checker <= the exact accuracy. Returns the
    (checker, main default-mode) count pairs.

    The checker is float64 with margins, like --fast: the main default mode (balls, then
    intervals) can prove less than both where weights underflow or thresholds span hundreds
    of orders of magnitude, so `<= default` is asserted only on ordinary models."""
    m = checker_model(tmp, model)
    exact = exact_accuracy(model).correct
    assert checker.brute_force_count(m) == exact
    pairs = []
    for payload in (STRATEGY.search(model), *PAYLOADS):
        fast = STRATEGY.verify(model, payload, rigorous=False).correct_count
        got = checker.separable_subcubic_count(m, payload)
        assert got <= fast, (payload, got, fast)
        assert got <= exact, (payload, got, exact)
        pairs.append((got, STRATEGY.verify(model, payload).correct_count))
    return pairs


# models on which the main default mode proves what --fast proves (the others: `assert_sound`)
ORDINARY = ("zoo: tiny weights", "zoo: duplicated tokens", "zoo: ideal, sharp attention",
            "random v7 k3", "ideal v6 k4", "large biases", "trained v8 k3")  # fmt: skip


@pytest.mark.parametrize("name", list(SMALL))
def test_never_above_fast_nor_exact_on_small_models(tmp_path, name):
    pairs = assert_sound(tmp_path, SMALL[name]())
    if name in ORDINARY:
        assert all(got == default for got, default in pairs), pairs


def test_counts_something_on_good_models(tmp_path):
    """Not vacuous: an ideal solver is proven entirely, a trained one in large part."""
    ideal = ideal_model(6, 4)
    assert assert_sound(tmp_path, ideal)[0][0] == ideal.cfg.n_inputs
    trained = trained_model(8, 3, 16, 300, 0)
    assert assert_sound(tmp_path, trained)[0][0] > 0.3 * trained.cfg.n_inputs


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    v=st.integers(2, 5),
    k=st.integers(1, 5),
    seed=st.integers(0, 10**6),
    scale=st.sampled_from([1e-3, 0.3, 1.0, 10.0, 100.0]),
    biases=st.booleans(),
)
def test_never_above_fast_nor_exact_on_random_models(tmp_path_factory, v, k, seed, scale, biases):
    model = random_model(ModelConfig(v, k, 5, 4), seed, scale, biases)
    assert_sound(tmp_path_factory.mktemp("m"), model)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=UNDERFLOW_MODELS)
def test_never_above_fast_nor_exact_on_the_underflow_family(tmp_path_factory, model):
    """Attention weights below the subnormal range next to subnormal thresholds."""
    assert_sound(tmp_path_factory.mktemp("m"), model)


def test_any_n_ctx(tmp_path):
    """No cell per position set: n_ctx = 11 (refused by the separable checkers) works."""
    model = ideal_model(3, 11, noise=0.05, seed=1)
    assert assert_sound(tmp_path, model)[0][0] > 0


# -- agreement on real models -------------------------------------------------------------


@pytest.mark.parametrize("name", ["bundled", "seed-50", "seed-104", "seed-4157"])
def test_agrees_with_main_on_paper_models(name):
    """Trained paper models: the checker's count equals the main verifier's default count
    (all 151: benchmarks/results-crosscheck-separable-subcubic-2026-12-07.txt)."""
    path = bundled_model_path() if name == "bundled" else PAPER / f"{name}.safetensors"
    model = load_model(path).model
    m = checker.load_model_file(path)
    for payload in (STRATEGY.search(model), {"top_r": 0, "window": 0}, {"top_r": 64, "window": 64}):
        main_count = STRATEGY.verify(model, payload).correct_count
        assert checker.separable_subcubic_count(m, payload) == main_count, payload
    assert main_count > 0.9 * model.cfg.n_inputs


# -- building blocks ------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_coupled_g_bounds_the_pessimised_value_term(seed):
    """g[x, mx] >= max_{j != mx}(EVOU[x, j] - EVOU[x, mx] + max_p (PVOU[p, j] - PVOU[p, mx]))
    for every top_r, with equality when J is everything."""
    rng = np.random.default_rng(seed)
    v, k = 7, 3
    EVOU, PVOU = rng.normal(size=(v, v)), rng.normal(size=(k, v))
    if seed == 3:  # ties everywhere
        EVOU, PVOU = np.round(EVOU), np.round(PVOU)
    pv = (PVOU[:, None, :] - PVOU[:, :, None]).max(axis=0)  # [mx, j]
    full = EVOU[:, None, :] - EVOU[:, :, None] + pv[None]  # [x, mx, j]
    full[:, np.arange(v), np.arange(v)] = -np.inf
    exact = full.max(axis=-1)
    for top_r in range(v + 1):
        g = ssc.coupled_g(EVOU, PVOU, top_r)
        assert (g >= exact - 1e-12).all(), top_r
    assert np.allclose(ssc.coupled_g(EVOU, PVOU, v), exact, atol=1e-12, rtol=0)


def test_prefix_bound_bounds_every_token_of_the_prefix(tmp_path):
    """B(y) >= h(x) for every x <= y (the binary descent's test is sound token by token)."""
    m = checker_model(tmp_path, random_model(ModelConfig(9, 3, 6, 5), 5, scale=2.0))
    t = ssc._tables(m, 2)
    v = m.v
    q, mx = ssc._rows(v)
    for y in range(v):
        sel = y <= mx
        qs, ms = q[sel], mx[sel]
        bound = ssc._prefix_bound(t, qs, ms, np.full(len(qs), y))
        h = ssc._h(t, qs, ms, np.broadcast_to(np.arange(y + 1), (len(qs), y + 1)))
        assert (h <= bound[:, None] * (1 + 1e-12) + 1e-300).all(), y


# -- payload and end to end ---------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        {"top_r": -1},
        {"top_r": 9},
        {"window": 1.0},
        {"window": True},
        {"top_r": "2"},
        {"top_r": 2, "window": 4, "extra": 1},
    ],
)
def test_bad_payloads_are_refused_in_one_line(tmp_path, payload):
    m = checker_model(tmp_path, random_model(ModelConfig(8, 3, 6, 5), 1))
    with pytest.raises(CertificateError, match="separable-subcubic payload") as info:
        checker.check_strategy(m, "separable-subcubic", payload)
    assert "\n" not in str(info.value)


def test_prove_then_check_end_to_end(tmp_path, capsys):
    """`compact-proofs prove MODEL --strategy separable-subcubic --certificate-out FILE`, then
    `compact-proofs check MODEL FILE`: the same count; a tampered payload is refused."""
    model_file, cert = tmp_path / "model.safetensors", tmp_path / "cert.json"
    save_model(trained_model(8, 3, 16, 300, 0), model_file)
    args = ["prove", str(model_file), "--strategy", "separable-subcubic", "--json"]
    assert main([*args, "--certificate-out", str(cert)]) == 0
    proved = json.loads(capsys.readouterr().out)
    record = proved[0] if isinstance(proved, list) else proved
    assert main(["check", str(model_file), str(cert), "--json"]) == 0
    (checked,) = json.loads(capsys.readouterr().out)
    assert checked["strategy"] == "separable-subcubic"
    assert checked["correct_count"] == record["correct_count"] > 0
    assert math.isclose(checked["bound"], checked["correct_count"] / 512)
    doc = json.loads(cert.read_text())
    doc["certificates"][0]["payload"]["window"] = 99
    cert.write_text(json.dumps(doc))
    assert main(["check", str(model_file), str(cert)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "separable-subcubic payload" in err[0]
