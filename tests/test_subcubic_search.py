"""The fast min-gap search (search.find_min_gaps) returns exactly the linear scan's gaps."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from compact_proofs.model.file_format import bundled_model
from compact_proofs.model.transformer import ModelConfig
from compact_proofs.proofs.subcubic.bounds import ORIGINAL, SOUND
from compact_proofs.proofs.subcubic.config import ALL_CONFIGS
from compact_proofs.proofs.subcubic.decompose import weights64
from compact_proofs.proofs.subcubic.search import (
    _find_min_gaps_linear,
    find_directions,
    find_min_gaps,
    find_min_gaps_many,
)

from models import adversarial_models, ideal_model, random_model


def _small_models():
    out = dict(adversarial_models())
    out["random v8 k4"] = random_model(ModelConfig(d_vocab=8, n_ctx=4, d_model=6, d_head=5), 11)
    out["random v7 k2 biases"] = random_model(
        ModelConfig(d_vocab=7, n_ctx=2, d_model=4, d_head=3), 12, biases=True
    )
    out["random v2 k3"] = random_model(ModelConfig(d_vocab=2, n_ctx=3, d_model=3, d_head=3), 13)
    # an EU handling whose cells only the mean+diff bound keeps, with gaps > 1 under it:
    # a search that judged a mean_diff configuration by the plain bound would miss them
    out["ideal v8 k3 sharp"] = ideal_model(8, 3, beta=6.0, noise=0.1, seed=0)
    return out


SMALL = _small_models()


@pytest.mark.parametrize("name", sorted(SMALL))
def test_small_models_all_configurations(name):
    w = weights64(SMALL[name])
    dirs = find_directions(w)
    for cfg in ALL_CONFIGS:
        for variant in (SOUND, ORIGINAL):
            old = _find_min_gaps_linear(w, dirs, cfg, variant)
            assert torch.equal(find_min_gaps(w, dirs, cfg, variant), old), (cfg.id, variant)


def test_bundled_model_configurations():
    """Every third configuration: all ten error handlings, both attention handlings and all
    five EU handlings (benchmarks/subcubic_search.py checks all 100 and the fixtures)."""
    w = weights64(bundled_model().model)
    dirs = find_directions(w)
    for cfg in ALL_CONFIGS[::3]:
        assert torch.equal(find_min_gaps(w, dirs, cfg), _find_min_gaps_linear(w, dirs, cfg)), cfg.id


def test_explicit_decomposition_and_infinite_tables():
    """A caller's qk (keyed by its values, not cached) and weights so large that the EU table
    L overflows (the fast path's -inf mask folding must then step aside)."""
    from compact_proofs.proofs.subcubic.decompose import decompose_eqke

    model = random_model(ModelConfig(d_vocab=6, n_ctx=3, d_model=5, d_head=4), 21)
    w = weights64(model)
    dirs = find_directions(w)
    w = dataclasses.replace(w, W_E=w.W_E * 1e3, W_U=w.W_U * 1e308)
    assert not torch.isfinite(w.E_bar @ w.W_U).all()
    for cfg in ALL_CONFIGS[::7]:
        qk = decompose_eqke(w, dirs, cfg.error, cfg.route)
        qk = type(qk)(**{**vars(qk), "err_bound": qk.err_bound * 1.5})
        old = _find_min_gaps_linear(w, dirs, cfg, qk=qk)
        assert torch.equal(find_min_gaps(w, dirs, cfg, qk=qk), old), cfg.id
        assert torch.equal(find_min_gaps(w, dirs, cfg), _find_min_gaps_linear(w, dirs, cfg))


@pytest.mark.parametrize("cache_cells", [0, 2**23])
def test_searching_many_configurations_together_gives_each_ones_gaps(monkeypatch, cache_cells):
    """find_min_gaps_many (chunks outer, configurations inner) against find_min_gaps one by
    one, with chunks of two gaps (so a v = 12 model takes several) and a cache that holds
    only the newest chunk or many: every configuration, in a shuffled order."""
    from compact_proofs.proofs.subcubic import search

    model = ideal_model(12, 4, beta=0.5, noise=0.05, seed=1)  # 35 distinct gap tables
    w = weights64(model)
    dirs = find_directions(w)
    v, k = 12, 4
    monkeypatch.setattr(search, "SEARCH_CELLS", 2 * v * v * k)
    monkeypatch.setattr(search, "CACHE_CELLS", cache_cells)
    configs = list(ALL_CONFIGS)
    configs = configs[1::2] + configs[::2]
    together = find_min_gaps_many(w, dirs, configs)
    for cfg, gaps in zip(configs, together, strict=True):
        assert torch.equal(gaps, find_min_gaps(w, dirs, cfg)), cfg.id
    assert len({tuple(gaps.flatten().tolist()) for gaps in together}) > 10  # not all alike


def test_caches_stay_bounded():
    from compact_proofs.proofs.subcubic import search

    for name in sorted(SMALL):
        w = weights64(SMALL[name])
        dirs = find_directions(w)
        for cfg in ALL_CONFIGS[::9]:
            find_min_gaps(w, dirs, cfg)
    assert len(search._TERMS) <= search.TERMS_CACHE
    cached = sum(t.numel() for s in search._SHARED.values() for t in s.values())
    assert cached <= search.CACHE_CELLS or len(search._SHARED) == 1


def test_pruning_keeps_every_negative_cell():
    """_live_cells' lower bound: every cell that the linear scan finds negative for some gap
    is live (bundled model, every fifth configuration), and an untrained paper-init model,
    whose bounds are nowhere negative, is pruned entirely with the same gaps (all 1)."""
    from compact_proofs.model.transformer import build_model
    from compact_proofs.proofs.subcubic import search

    w = weights64(bundled_model().model)
    dirs = find_directions(w)
    wkey = search._weights_key(w, dirs)
    terms = search._weight_terms(w)
    for cfg in ALL_CONFIGS[::5]:
        gaps = _find_min_gaps_linear(w, dirs, cfg)
        qk = search.decompose_eqke(w, dirs, cfg.error, cfg.route)
        B, cells = search.subcubic_bounds(
            w, qk, torch.arange(1, 64)[:, None, None, None], w.E_bar, cfg.eu,
            dirs.W_EP_direction, cfg.uses_mean_diff, SOUND,
        )  # fmt: skip
        negative = (cells.valid & (cells.c >= 1) & (B < 0)).any(dim=0).any(dim=-1)  # [q, m]
        live = search._live(w, dirs, terms, wkey, SOUND, cfg.uses_mean_diff)
        assert not bool((negative & ~live).any()), cfg.id
        own = search._live(w, dirs, terms, wkey, SOUND, cfg.uses_mean_diff, cfg.eu)
        assert not bool((negative & ~own).any()), cfg.id  # (own is within live)
        assert bool((live | ~own).all()), cfg.id
        assert bool((gaps > 1).any()) or not bool(negative.any())
    untrained = weights64(build_model(ModelConfig(d_vocab=48, n_ctx=4), seed=1))
    dirs = find_directions(untrained)
    for cfg in ALL_CONFIGS[::11]:
        live = search._live(
            untrained, dirs, search._weight_terms(untrained), None, SOUND, cfg.uses_mean_diff
        )
        assert not bool(live.any())
        old = _find_min_gaps_linear(untrained, dirs, cfg)
        assert torch.equal(find_min_gaps(untrained, dirs, cfg), old), cfg.id


# ------------------------------------------------------------ bisection (search/bisect.py)

BISECTED = [cfg for cfg in ALL_CONFIGS if not cfg.uses_mean_diff]


def _forced_bisection(monkeypatch, **overrides):
    """Bisect whatever the size (the cost rule keeps small models on the linear scan), and
    count the configurations actually bisected."""
    from compact_proofs.proofs.subcubic import bisect, search

    monkeypatch.setattr(bisect, "MIN_SCAN", 0)
    monkeypatch.setattr(bisect, "COST_RATIO", 0)
    for name, value in overrides.items():
        monkeypatch.setattr(bisect, name, value)
    done = []
    real = search.bisect_min_gaps

    def counted(*args):
        done.append(real(*args))
        return done[-1]

    monkeypatch.setattr(search, "bisect_min_gaps", counted)
    return done


@pytest.mark.parametrize("name", [*sorted(SMALL), "bundled", "ideal v24 k5"])
def test_bisection_gives_the_linear_scans_gaps(monkeypatch, name):
    """Every configuration without mean_diff (every other one on the bundled model),
    bisected, against the linear scan; on the bundled model and a v = 24 model the bisection
    takes several rounds."""
    model = {
        "bundled": lambda: bundled_model().model,
        "ideal v24 k5": lambda: ideal_model(24, 5, beta=1.0, noise=0.1, seed=3),
    }.get(name, lambda: SMALL[name])()
    done = _forced_bisection(monkeypatch)
    w = weights64(model)
    dirs = find_directions(w)
    for cfg in BISECTED[::2] if name == "bundled" else BISECTED:
        assert torch.equal(find_min_gaps(w, dirs, cfg), _find_min_gaps_linear(w, dirs, cfg)), cfg.id
    if name in ("bundled", "ideal v24 k5"):
        assert done and all(done)  # monotone premises hold on these: really bisected


@pytest.mark.parametrize("eps_rel", [1e-9, 1e3])
def test_bisection_in_small_blocks_and_with_every_cell_unsure(monkeypatch, eps_rel):
    """Blocks of 5 cells, and an EPS so large that no cell is certified: every cell then goes
    through the per-cell linear scan (groups of about 5 gaps), with the same gaps."""
    done = _forced_bisection(monkeypatch, BLOCK=5, EPS_REL=eps_rel)
    model = ideal_model(12, 4, beta=0.5, noise=0.05, seed=1)
    w = weights64(model)
    dirs = find_directions(w)
    for cfg in BISECTED[::3]:
        assert torch.equal(find_min_gaps(w, dirs, cfg), _find_min_gaps_linear(w, dirs, cfg)), cfg.id
    assert done and all(done)


def test_bisection_steps_aside_where_its_premises_fail(monkeypatch):
    """Not finite tables (weights that overflow), an error bound below 0, or tables so large
    that the margin EPS overflows: no bisection (`best` untouched)."""
    from compact_proofs.proofs.subcubic.bisect import bisect_min_gaps
    from compact_proofs.proofs.subcubic.decompose import decompose_eqke
    from compact_proofs.proofs.subcubic.search import _model_terms

    _forced_bisection(monkeypatch)
    model = random_model(ModelConfig(d_vocab=6, n_ctx=3, d_model=5, d_head=4), 21)
    w = weights64(model)
    dirs = find_directions(w)
    cfg = BISECTED[0]
    qk = decompose_eqke(w, dirs, cfg.error, cfg.route)
    terms = _model_terms(w, dirs, cfg, qk, None, None)
    live = torch.ones(6, 6, dtype=torch.bool)
    best = torch.full((6 * 6 * 3,), 6, dtype=torch.int64)
    negative = type(qk)(**{**vars(qk), "err_bound": qk.err_bound - 1.0})
    assert not bisect_min_gaps(negative, terms, w.attn_scale, live, best)
    infinite = type(qk)(**{**vars(qk), "EQKE_hat": qk.EQKE_hat * float("inf")})
    assert not bisect_min_gaps(infinite, terms, w.attn_scale, live, best)
    huge = {**terms, "W_run": terms["W_run"].sign() * 1e308}  # finite, but EPS overflows
    assert not bisect_min_gaps(qk, huge, w.attn_scale, live, best)
    assert (best == 6).all()  # untouched
    assert bisect_min_gaps(qk, terms, w.attn_scale, live, best)


def test_bisection_is_chosen_only_where_it_is_cheaper():
    """The cost rule: no bisection on the bundled model (v = 64: the linear scan is a few
    milliseconds), bisection at v = 512 (a model built, not trained)."""
    from compact_proofs.proofs.subcubic import search

    for model, expected in ((bundled_model().model, False), (ideal_model(512, 3, seed=4), True)):
        w = weights64(model)
        dirs = find_directions(w)
        cfg = BISECTED[0]
        s = search._Search(
            w, dirs, cfg, SOUND, search._decomposition(w, dirs, cfg, None), None, None
        )
        assert search._bisected(w, s) is expected
