"""The log1p-accurate log-softmax of the paper's training loss (SPEC §1.6)."""

from __future__ import annotations

import torch
from torch import Tensor


def log1p_log_softmax(z: Tensor, dim: int = -1) -> Tensor:
    """log_softmax(z) computed as t - log1p(sum_{j != argmax} exp(t_j)), with t = z - max z.

    Mathematically equal to `torch.log_softmax`; keeps ~1-ulp relative precision for the
    winning class when its probability is close to 1. If the maximum is not finite the
    shift is 0 and the argmax term is not removed (as in the original).
    """
    m, idx = z.max(dim=dim, keepdim=True)
    finite = torch.isfinite(m)
    t = z - torch.where(finite, m, torch.zeros_like(m))
    e = t.exp()
    drop = torch.zeros_like(e, dtype=torch.bool).scatter(dim, idx, finite)
    e = e.masked_fill(drop, 0.0)
    return t - e.sum(dim=dim, keepdim=True).log1p()


def max_of_k_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean negative log-likelihood of `labels` under log1p-log-softmax of `logits` [b, v]."""
    logp = log1p_log_softmax(logits, dim=-1)
    return -logp.gather(-1, labels[:, None]).mean()
