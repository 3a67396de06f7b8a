"""Brute force (SPEC §4.1): the model's exact accuracy is its own (tightest) bound.

The proof treats the model as a black box and runs it on all v^k inputs. Its length is the FLOP
count of that black-box computation: the full forward pass (all positions, as a
TransformerLens model computes it), the ground-truth max, the loss and the accuracy check, on
batches of 4096 sequences, measured by instrumenting one batch and multiplying by the number
of batches (SPEC §7.1). The *result* is computed by `proofs.exhaustive.exact_accuracy`,
which reaches the same verdict for every input far faster by exploiting the path decomposition.

In the rigorous arithmetics (the default), `verify` counts and `proven` certifies only inputs
whose correctness is proven for the exact real logits of the float32 weights (`exact_accuracy`
/ `is_correct` with `rigorous=True`: float64 with a checked error bound, undecided inputs
settled by an interval forward pass; docs/soundness.md, "Brute force (exact accuracy)"); it
never leaves anything undecided. The proof length stays the black-box FLOP count in every
mode: it measures the computation the proof stands for, not the faster evaluator that reaches
its verdicts.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from compact_proofs.model.losses import max_of_k_loss
from compact_proofs.model.transformer import AttnOnlyTransformer, ModelConfig
from compact_proofs.proofs.base import Strategy, Verdict
from compact_proofs.proofs.exhaustive import (
    all_sequences,
    exact_accuracy,
    is_correct,
    path_verdicts,
)
from compact_proofs.proofs.flops import count_flops
from compact_proofs.proofs.paths import path_matrices
from compact_proofs.soundness.arithmetic import Arithmetic

BATCH = 4096


def black_box_batch(model: AttnOnlyTransformer, tokens: torch.Tensor) -> torch.Tensor:
    """What the black-box proof does per batch: forward, label, loss, count correct."""
    logits = model.forward_all_positions(tokens)[:, -1]
    labels = tokens.max(dim=-1).values
    max_of_k_loss(logits, labels)
    return (logits.argmax(dim=-1) == labels).sum()


@functools.lru_cache(maxsize=32)
@torch.no_grad()
def black_box_flops(cfg: ModelConfig) -> int:
    """FLOPs of running the black-box check on all inputs (one batch measured, then scaled).

    The count depends only on the architecture, never on the weights.
    """
    model = AttnOnlyTransformer(cfg)
    total = cfg.n_inputs
    device = model.W_E.device
    full, rest = divmod(total, BATCH)
    flops = 0
    for n_batches, size in ((full, BATCH), (1 if rest else 0, rest)):
        if n_batches:
            tokens = all_sequences(cfg.d_vocab, cfg.n_ctx, 0, size, device)
            flops += n_batches * count_flops(lambda t=tokens: black_box_batch(model, t))[1]
    return flops


class BruteForce(Strategy):
    id = "brute-force"
    group = "brute-force"
    complexity = "O(v^(k+1) k d)"
    leading_complexity = "brute-force"
    description = "Run the model on every input (exact accuracy; the bound is tight)."

    def unexplained_dims(self, cfg: ModelConfig) -> int:
        """v^(k+1): every output logit of every input is checked without explanation."""
        return cfg.d_vocab ** (cfg.n_ctx + 1)

    def verify_in(
        self, model: AttnOnlyTransformer, payload: dict[str, Any], arith: Arithmetic
    ) -> Verdict:
        result = exact_accuracy(model, rigorous=arith.rigorous)
        arith = Arithmetic.BALL if arith.rigorous else arith  # float64 with checked error bounds
        return Verdict(result.correct, result.total, {"numerical_ties": result.ties}, 0, arith)

    def proven_in(
        self,
        model: AttnOnlyTransformer,
        payload: dict[str, Any],
        tokens: torch.Tensor,
        arith: Arithmetic,
    ) -> torch.Tensor:
        if arith.rigorous or model.cfg.n_heads != 1:
            return is_correct(model, tokens, rigorous=arith.rigorous)
        return path_verdicts(path_matrices(model), tokens)[0]  # what `verify` decides by

    def verify_counted(
        self, model: AttnOnlyTransformer, payload: dict[str, Any], *, rigorous: bool = True
    ) -> tuple[Verdict, int]:
        return self.verify(model, payload, rigorous=rigorous), black_box_flops(model.cfg)
