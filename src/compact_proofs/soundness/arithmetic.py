"""Which arithmetic a verification runs in: the one switch between "what is bounded" and
"how rounding is accounted for".

* `FAST`: plain float64 on the float32 weights. Exact up to rounding — *not a proof*: on
  models built for it (catastrophic cancellation, underflow) it certifies misclassified inputs.
  Opt-in only (`--fast`).
* `BALL`: float64 values with one certified error radius per tensor (soundness.ball). A
  proof in exact real arithmetic about the float32 weights, at about float64 speed.
* `INTERVAL`: outward-rounded intervals per entry (compact_proofs.soundness.interval). A proof too;
  tighter where entries differ by many orders of magnitude, and several times slower.

The default (rigorous) verification runs BALL and re-runs INTERVAL only when some decision was
left undecided by the ball radius (proofs/base.py).
"""

from __future__ import annotations

import math
from enum import Enum

import torch
from torch import Tensor

from compact_proofs.soundness.ball import Ball
from compact_proofs.soundness.interval import Interval, Num, enclose_sqrt
from compact_proofs.soundness.rounding import UP, U


class Arithmetic(Enum):
    FAST = "float64"
    BALL = "ball"
    INTERVAL = "interval"

    @property
    def rigorous(self) -> bool:
        return self is not Arithmetic.FAST


def exact(t: Tensor, arith: Arithmetic) -> Num:
    """A float64 tensor of exact values (e.g. float32 weights, converted exactly) as an exact
    point of the arithmetic."""
    t = t.detach().to(torch.float64)
    if arith is Arithmetic.INTERVAL:
        return Interval.point(t)
    return Ball.point(t) if arith is Arithmetic.BALL else t


def sqrt_of(n: int, arith: Arithmetic) -> float | Interval | Ball:
    """sqrt(n) (e.g. the attention scale sqrt(d_head)): a float in FAST mode, an enclosure
    otherwise (math.sqrt is correctly rounded: within U of its result)."""
    if arith is Arithmetic.INTERVAL:
        return enclose_sqrt(n)
    s = math.sqrt(n)
    if arith is Arithmetic.BALL:
        return Ball(torch.tensor(s, dtype=torch.float64), s * U * UP, s, False)
    return s
