"""Where the bound is lost: the ablation ladder's counts partition exact_correct - certified."""

from __future__ import annotations

import functools
import io
import json

import pytest
import torch

from compact_proofs.analysis.loss_breakdown import (
    CUBIC_CAUSES,
    DEFAULT_STRATEGY,
    NONE,
    OTHER,
    SUBCUBIC_CAUSES,
    breakdown_markdown,
    input_rungs,
    loss_breakdown,
    plot_loss_breakdown,
)
from compact_proofs.cli import main
from compact_proofs.errors import UnknownStrategyError, UnsupportedModelError
from compact_proofs.model.file_format import save_model
from compact_proofs.model.transformer import ModelConfig
from compact_proofs.proofs.exhaustive import all_sequences, exact_accuracy, is_correct
from compact_proofs.proofs.registry import get_strategy
from compact_proofs.proofs.subcubic.config import DEFAULT_CONFIG, SubcubicConfig
from compact_proofs.proofs.tensor_codec import decode_tensor

from models import ideal_model, large_bias_model, random_model, trained_model

SMALL = ModelConfig(d_vocab=6, n_ctx=3, d_model=8, d_head=8)
STRATEGIES = [
    DEFAULT_STRATEGY,
    SubcubicConfig("svd_query+max_diff", "mean_query+diff", "svd").id,  # route A, svd
    SubcubicConfig("max_diff", "mean_query+diff", "mean+max_diff_subproduct").id,  # route B
    SubcubicConfig(
        "max_diff_exact", "drop_average_query_per_output_logit_reasoning", "max_diff_exact"
    ).id,
    SubcubicConfig("global_max_diff_exact", "mean_query+diff", "exact_EQKE+max_diff_exact").id,
    "cubic",
]


@functools.cache
def models() -> dict[str, object]:
    return {
        "ideal": ideal_model(6, 3, noise=0.1, seed=1),
        "ideal k=4": ideal_model(5, 4, noise=0.3, seed=7, pos_scale=1.0),
        "trained": trained_model(8, 3, 16, steps=300, seed=0),
        "random": random_model(SMALL, 2),
    }


@functools.cache
def breakdown(name: str, strategy: str):
    model = models()[name]
    s = get_strategy(strategy)
    payload = s.search(model)
    return loss_breakdown(model, strategy, payload), input_rungs(model, strategy, payload), payload


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("name", ["ideal", "ideal k=4", "trained", "random"])
def test_counts_partition_the_lost_inputs(name, strategy):
    model = models()[name]
    lb, rungs, payload = breakdown(name, strategy)
    s = get_strategy(strategy)
    assert lb.strategy == s.id
    assert lb.total == model.cfg.n_inputs == len(rungs)
    assert lb.exact_correct == exact_accuracy(model).correct
    assert lb.certified == s.verify(model, payload).correct_count
    assert sum(r.inputs for r in lb.rows) == lb.exact_correct - lb.certified == lb.lost
    assert sum(s.inputs for s in lb.steps) == lb.lost
    assert all(r.inputs >= 0 for r in lb.rows)
    assert all(r.fraction == r.inputs / lb.total for r in lb.rows)
    causes = CUBIC_CAUSES if strategy == "cubic" else SUBCUBIC_CAUSES
    assert [r.cause for r in lb.rows] == list(causes)
    # per input: rung 0 is exactly the proof's proven set; the ladder's counts are the
    # histogram of the first rung certifying each input
    tokens = all_sequences(model.cfg.d_vocab, model.cfg.n_ctx)
    assert torch.equal(rungs == 0, s.proven(model, payload, tokens))
    hist = torch.bincount(rungs.long(), minlength=NONE + 1).tolist()
    n_steps = len(lb.steps) - 1  # the last step, "other", is counted from exact accuracy
    assert hist[0] == lb.certified
    assert [st.inputs for st in lb.steps[:-1]] == hist[1 : n_steps + 1]
    assert sum(hist[n_steps + 1 :]) == hist[NONE]  # codes: 0, 1..n_steps, NONE
    assert [st.rung for st in lb.steps] == sorted(st.rung for st in lb.steps)
    if strategy != "cubic":  # rung 1 is split: inputs outside / inside their cell's gap
        gaps = decode_tensor(payload["min_gaps"]).long()
        m, q = tokens.max(dim=-1).values, tokens[:, -1]
        nonmax = tokens != m[:, None]
        s_max = torch.where(nonmax, tokens, -1).amax(dim=-1)
        excluded = nonmax.any(dim=-1) & (m - s_max < gaps[q, m, nonmax.sum(dim=-1)])
        assert bool(excluded[rungs == 1].all()) and not bool(excluded[rungs == 2].any())
        assert bool(excluded[rungs == 0].logical_not().all())


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("name", ["ideal", "ideal k=4", "trained", "random"])
def test_ladder_ends_at_exact_correctness(name, strategy):
    """Every counterfactual rung certifies only correct inputs, and the rest of the correct
    inputs is exactly what is reported as "other" (0 for cubic, whose last rung is exact)."""
    model = models()[name]
    lb, rungs, _ = breakdown(name, strategy)
    tokens = all_sequences(model.cfg.d_vocab, model.cfg.n_ctx)
    correct = is_correct(model, tokens)
    assert bool(correct[rungs < NONE].all())
    other = next(r.inputs for r in lb.rows if r.cause == OTHER)
    assert int((correct & (rungs == NONE)).sum()) == other
    if strategy == "cubic":
        assert other == 0


def test_exact_eqke_configuration_loses_nothing_to_the_attention_error():
    exact = SubcubicConfig("max_diff_exact", "mean_query+diff", "exact_EQKE+max_diff_exact").id
    for name in ("ideal", "trained", "random"):
        lb = loss_breakdown(models()[name], exact)
        assert dict((r.cause, r.inputs) for r in lb.rows)["attention error bound"] == 0


@pytest.mark.parametrize("strategy", ["cubic", DEFAULT_STRATEGY])
def test_biases(strategy):
    """cubic and the sub-cubic proofs handle biases exactly, and so do their ladders."""
    for model in (random_model(SMALL, 3, biases=True), large_bias_model()):
        lb = loss_breakdown(model, strategy)
        assert sum(r.inputs for r in lb.rows) == lb.exact_correct - lb.certified
        rungs = input_rungs(model, strategy)
        tokens = all_sequences(model.cfg.d_vocab, model.cfg.n_ctx)
        assert bool(is_correct(model, tokens)[rungs < NONE].all())
        if strategy == "cubic":
            assert lb.rows[-1].inputs == 0


@pytest.mark.parametrize("strategy", ["brute-force", "separable"])
def test_unsupported_strategies(strategy):
    with pytest.raises(UnsupportedModelError, match="supports cubic and the sub-cubic"):
        loss_breakdown(models()["ideal"], strategy)
    with pytest.raises(UnknownStrategyError):
        loss_breakdown(models()["ideal"], "no-such-strategy")


def test_too_many_inputs_are_refused():
    model = random_model(ModelConfig(d_vocab=2**11, n_ctx=3, d_model=4, d_head=4), 0)
    with pytest.raises(UnsupportedModelError, match="enumerates all"):
        loss_breakdown(model, "cubic")


def test_markdown_and_figure():
    lb, _, _ = breakdown("trained", DEFAULT_STRATEGY)
    text = breakdown_markdown(lb, steps=True)
    assert f"| certified | {lb.certified} |" in text
    assert f"| misclassified | {lb.misclassified} |" in text
    for r in lb.rows:
        assert f"| lost: {r.cause} | {r.inputs} |" in text
    for st in lb.steps:
        assert f"| {st.rung} | {st.cause} | {st.description} | {st.inputs} |" in text
    fig = plot_loss_breakdown(lb)
    assert type(fig).__name__ == "Figure"
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue().startswith(b"\x89PNG")


def test_cli_loss_json_and_text(tmp_path, capsys):
    path = tmp_path / "m.safetensors"
    save_model(models()["trained"], path)
    assert main(["loss", str(path), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["strategy"] == DEFAULT_CONFIG.id
    assert record["model"] == str(path)
    assert sum(r["inputs"] for r in record["rows"]) == record["lost"]
    assert record["lost"] == record["exact_correct"] - record["certified"]
    assert main(["loss", str(path), "--strategy", "cubic"]) == 0
    out = capsys.readouterr().out
    assert "| lost: attention: orderings + pure sequences |" in out
    assert main(["loss", str(path), "--strategy", "brute-force"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")
