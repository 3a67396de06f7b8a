"""Accuracy *estimates* with confidence intervals, for input spaces too large to enumerate.

These are statistical statements, never proofs: with probability at least `confidence` over
the sampling, the true accuracy lies in [lower, upper].

* `uniform`: n inputs drawn uniformly with replacement; the exact binomial (Clopper–Pearson)
  interval for the fraction classified correctly.
* `stratified-cubic` (analysis.stratified): inputs the cubic proof certifies are counted
  exactly and only the rest is sampled — a far narrower interval for the same n.

Each sampled input is judged exactly as `accuracy.is_correct` does (float64 forward pass, ties
count as wrong). The stream of samples is reproducible from `seed`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from scipy.stats import beta
from torch import Tensor
from tqdm.auto import tqdm

from compact_proofs.model.transformer import AttnOnlyTransformer
from compact_proofs.proofs.exhaustive import is_correct

BATCH = 2**15


@dataclass(frozen=True)
class AccuracyEstimate:
    """`correct` of `samples` sampled inputs were correct; [lower, upper] is a
    `confidence`-level interval for the accuracy over all inputs."""

    correct: int
    samples: int
    estimate: float
    lower: float
    upper: float
    confidence: float
    method: str
    seed: int
    certified: int = 0  # inputs counted exactly by a proof, not sampled (stratified method)

    def to_json(self, total: int) -> dict[str, Any]:
        """The estimate for a model with `total` inputs; the sample counts are named as what
        they are: `sampled_correct` of `samples` drawn from the `population` of inputs that
        were not `certified` (all `total` inputs for the uniform method)."""
        record = asdict(self)
        record["sampled_correct"] = record.pop("correct")
        return {**record, "population": total - self.certified, "total": total,
                "kind": "estimate (not a proof)"}  # fmt: skip


def clopper_pearson(correct: int, n: int, confidence: float) -> tuple[float, float]:
    """Exact binomial interval: P(true p outside it) <= 1 - confidence for every p."""
    alpha = 1 - confidence
    lower = 0.0 if correct == 0 else float(beta.ppf(alpha / 2, correct, n - correct + 1))
    upper = 1.0 if correct == n else float(beta.ppf(1 - alpha / 2, correct + 1, n - correct))
    return lower, upper


def check_sampling(samples: int, confidence: float) -> None:
    if samples < 1 or not 0 < confidence < 1:
        raise ValueError("need samples >= 1 and 0 < confidence < 1")


def count_correct_samples(
    model: AttnOnlyTransformer,
    draw: Callable[[int], Tensor],
    samples: int,
    progress: bool,
    batch: int = BATCH,
) -> int:
    """How many of `samples` inputs drawn in batches by `draw(n) -> int [n, k]` the model
    classifies correctly (`accuracy.is_correct`)."""
    device = model.W_E.device
    correct = 0
    for start in tqdm(
        range(0, samples, batch), desc="sampling", unit="batch", disable=not progress, leave=False
    ):
        tokens = draw(min(batch, samples - start)).to(device)
        correct += int(is_correct(model, tokens).sum())
    return correct


@torch.no_grad()
def estimate_accuracy(
    model: AttnOnlyTransformer,
    samples: int = 1_000_000,
    confidence: float = 0.99,
    seed: int = 0,
    progress: bool = False,
) -> AccuracyEstimate:
    """Uniform Monte-Carlo estimate of the accuracy with a Clopper–Pearson interval.

    Pre: samples >= 1, 0 < confidence < 1. Post: lower <= estimate <= upper.
    """
    check_sampling(samples, confidence)
    cfg = model.cfg
    gen = torch.Generator().manual_seed(seed)

    def draw(n: int) -> Tensor:
        return torch.randint(0, cfg.d_vocab, (n, cfg.n_ctx), generator=gen)

    correct = count_correct_samples(model, draw, samples, progress)
    lower, upper = clopper_pearson(correct, samples, confidence)
    return AccuracyEstimate(
        correct=correct,
        samples=samples,
        estimate=correct / samples,
        lower=lower,
        upper=upper,
        confidence=confidence,
        method="uniform",
        seed=seed,
    )
