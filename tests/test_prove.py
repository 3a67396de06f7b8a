"""Strategy runner and CLI-level behaviour on unusual models (in-process)."""

from __future__ import annotations

import json

import pytest

from compact_proofs.cli import main
from compact_proofs.errors import CertificateError, UnsupportedModelError
from compact_proofs.model.file_format import save_model, weights_digest
from compact_proofs.model.transformer import ModelConfig
from compact_proofs.proofs.certificates import CertificateFile, load_certificates, save_certificates
from compact_proofs.proofs.exhaustive import exact_accuracy
from compact_proofs.proofs.registry import STRATEGIES, get_strategy, resolve_strategies
from compact_proofs.proofs.runner import prove, prove_many, verify_certificates

from models import ideal_model, random_model


def test_every_strategy_is_listed_with_its_metadata():
    assert list(STRATEGIES)[:2] == ["brute-force", "cubic"] and len(STRATEGIES) == 105
    # new, after the paper's
    assert list(STRATEGIES)[102:] == ["separable-lite", "separable", "separable-subcubic"]
    assert len(resolve_strategies("paper")) == 102
    cfg = ModelConfig()
    assert get_strategy("brute-force").unexplained_dims(cfg) == 64**5
    assert get_strategy("cubic").unexplained_dims(cfg) == 12800
    assert [s.id for s in resolve_strategies("cubic,brute-force,cubic")] == ["cubic", "brute-force"]


def test_prove_then_verify_round_trip(tmp_path):
    model = ideal_model(6, 3, noise=0.2, seed=1)
    results, certs = zip(*(prove(model, s) for s in STRATEGIES.values()), strict=True)
    assert len(results) == len(STRATEGIES)
    path = tmp_path / "cert.json"
    save_certificates(path, CertificateFile(weights_digest(model), model.cfg, list(certs)))
    again = verify_certificates(model, load_certificates(path))
    for a, b in zip(results, again, strict=True):
        assert (a.strategy, a.correct_count, a.flops) == (b.strategy, b.correct_count, b.flops)
    assert results[0].correct_count == exact_accuracy(model).correct
    assert all(r.correct_count <= results[0].correct_count for r in results)


def test_certificate_for_tampered_weights_is_rejected(tmp_path):
    model = ideal_model(5, 3, seed=2)
    _, cert = prove(model, get_strategy("cubic"))
    path = tmp_path / "cert.json"
    save_certificates(path, CertificateFile(weights_digest(model), model.cfg, [cert]))
    doc = json.loads(path.read_text())
    doc["model_sha256"] = "0" * 64
    path.write_text(json.dumps(doc))
    with pytest.raises(CertificateError, match="different model"):
        verify_certificates(model, load_certificates(path))


def test_prove_all_skips_strategies_that_do_not_apply(tmp_path, capsys):
    path = tmp_path / "two-heads.safetensors"
    save_model(
        random_model(ModelConfig(d_vocab=5, n_ctx=3, d_model=6, d_head=3, n_heads=2), 1), path
    )
    assert main(["prove", str(path), "--json"]) == 0
    out, err = capsys.readouterr()
    assert [r["strategy"] for r in json.loads(out)] == ["brute-force"]
    assert "cubic skipped" in err and err.count("skipped") == len(STRATEGIES) - 1
    assert main(["prove", str(path), "--strategy", "cubic"]) == 1
    assert capsys.readouterr().err.startswith("error: ")


def test_proving_many_strategies_together_gives_each_ones_result():
    """prove_many (sub-cubic searches grouped by (attention, error)) against prove one by
    one: the same certificates and counts, bounds and FLOPs, each strategy once; a group's
    search time is split evenly; a model outside the sub-cubic family gives each sub-cubic
    strategy its own error."""
    model = ideal_model(6, 3, beta=0.5, noise=0.05, seed=2)
    chosen = resolve_strategies("cubic,subcubic,separable")
    together = list(prove_many(model, chosen))
    assert sorted(s.id for s, _ in together) == sorted(s.id for s in chosen)
    for strategy, outcome in together:
        result, cert = outcome
        alone, alone_cert = prove(model, strategy)
        assert cert.payload == alone_cert.payload, strategy.id
        keys = ("correct_count", "total", "flops", "unexplained_dims", "arithmetic")
        assert [getattr(result, k) for k in keys] == [getattr(alone, k) for k in keys]
    first = [r.search_seconds for s, (r, _) in together if s.id.startswith("EUPU")][:5]
    assert len(set(first)) == 1  # one group of five EU handlings, its time split evenly
    two_heads = random_model(ModelConfig(d_vocab=4, n_ctx=3, d_model=6, d_head=3, n_heads=2), 5)
    outcomes = dict((s.id, o) for s, o in prove_many(two_heads, resolve_strategies("subcubic")))
    assert all(isinstance(o, UnsupportedModelError) for o in outcomes.values())
    assert len(outcomes) == 100


def test_exact_accuracy_refuses_astronomical_enumeration():
    model = random_model(ModelConfig(d_vocab=64, n_ctx=10, d_model=4, d_head=4), 0)
    with pytest.raises(UnsupportedModelError, match="64\\^10"):
        exact_accuracy(model)
    result, _ = prove(model, get_strategy("cubic"))  # the cubic proof still applies
    assert result.total == 64**10 and 0 <= result.correct_count <= 64**10
