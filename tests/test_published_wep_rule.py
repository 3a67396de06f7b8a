"""The paper's published sub-cubic rows were not sound: a concrete counterexample.

The verifier behind the published Table 1 (Gross et al. 2024) bounded the query's direct path
(EUPU, SPEC §6.7.1) with the embedding `W_E + mean(W_pos)` instead of the query's real one,
`W_E + W_pos[-1]`; the authors fixed this after publication (their code commit bcf5c23,
2024-11-04, "Fix computation of W_EP") and regenerated their data (Sub-cubic 0.821 -> 0.700).

The published rule is a test-only switch here, never part of a strategy: the direct-path
embedding is an argument of `subcubic_bounds` (`E_eu`; the strategies pass `w.E_q`, the last
position's), so the test passes `W_E + mean(W_pos)` instead and leaves the proofs untouched.

The model: the hand-built Max-of-K solver of `models.ideal_model` (position one-hot dimensions
that reach neither attention scores nor the output through OV), plus an unembedding that reads
the *last* position's dimension as +10 on token 0 and the first position's as -10. Only the
last position's embedding is in the query's residual, so the real model adds 10 to logit 0 on
every input and answers 0 whatever the maximum; the mean over positions cancels the two rows,
so the published rule never sees the push and certifies every input.
"""

from __future__ import annotations

import torch

from compact_proofs.model.transformer import AttnOnlyTransformer
from compact_proofs.proofs.exhaustive import all_sequences, exact_accuracy, is_correct
from compact_proofs.proofs.registry import get_strategy
from compact_proofs.proofs.runner import prove
from compact_proofs.proofs.subcubic.bounds import SOUND, proven_mask, subcubic_bounds
from compact_proofs.proofs.subcubic.config import SubcubicConfig
from compact_proofs.proofs.subcubic.decompose import decompose_eqke, weights64
from compact_proofs.proofs.subcubic.search import find_directions, find_min_gaps

from models import ideal_model

V, K = 6, 3
PUSH = 10.0  # > alpha = 4, the most the copied max token adds to its own logit
# a Sub-cubic-row configuration: exact direct-path (EU) handling, where the rule matters most
CONFIG = SubcubicConfig("max_diff_exact", "mean_query+diff", "svd")


def _model() -> AttnOnlyTransformer:
    """ideal_model(V, K) whose direct path reads +PUSH on token 0 from the last position's
    dimension and -PUSH from the first position's (mean over positions: 0)."""
    model = ideal_model(V, K)
    with torch.no_grad():
        model.W_U[2 * V + K - 1, 0] = PUSH
        model.W_U[2 * V, 0] = -PUSH
    return model


def _proven(model: AttnOnlyTransformer, published: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(all inputs, which of them the sub-cubic proof of CONFIG certifies) with the direct
    path's query embedding W_E + mean(W_pos) (`published`) or W_E + W_pos[-1] (sound)."""
    w = weights64(model)
    dirs = find_directions(w)
    gaps = find_min_gaps(w, dirs, CONFIG, SOUND)
    qk = decompose_eqke(w, dirs, CONFIG.error, CONFIG.route)
    E_eu = w.W_E + w.W_pos.mean(dim=0) if published else w.E_q
    B, cells = subcubic_bounds(
        w, qk, gaps, E_eu, CONFIG.eu, dirs.W_EP_direction, CONFIG.uses_mean_diff, SOUND
    )
    seqs = all_sequences(V, K)
    return seqs, proven_mask(B, gaps, cells, seqs)


def test_the_published_direct_path_rule_certifies_misclassified_inputs():
    model = _model()
    seqs, proven = _proven(model, published=True)
    correct = is_correct(model, seqs)
    assert int(correct.sum()) == exact_accuracy(model).correct == 1  # only [0, 0, 0]
    wrongly_proven = seqs[proven & ~correct].tolist()
    assert [5, 5, 5] in wrongly_proven  # max 5; the model answers 0
    assert int(model(torch.tensor([[5, 5, 5]])).argmax()) == 0
    assert len(wrongly_proven) == V**K - 1  # every misclassified input is "certified"


def test_the_sound_rule_certifies_only_correct_inputs_on_the_same_model():
    model = _model()
    seqs, proven = _proven(model, published=False)
    assert not bool((proven & ~is_correct(model, seqs)).any())
    result, _ = prove(model, get_strategy(CONFIG.id))  # the registered (sound) strategy
    assert result.correct_count <= exact_accuracy(model).correct


def test_without_the_push_both_rules_agree():
    """The construction isolates the rule: on the unmodified solver the last position's
    dimension reaches no logit, so both embeddings certify exactly the same inputs."""
    model = ideal_model(V, K)
    _, published = _proven(model, published=True)
    _, sound = _proven(model, published=False)
    assert torch.equal(published, sound) and bool(sound.all())
