"""The narrow interface between "what is being bounded" and "how the bound is computed".

A strategy is a pair of functions:

* `search(model) -> payload`: free (not part of the proof): may do anything (SVDs,
  optimisation) and returns a JSON-serialisable certificate payload;
* `verify(model, payload) -> Verdict`: the proof. A pure function of (model, payload) that
  returns `correct_count`, a number of inputs that it has *proven* are classified correctly,
  for the float32 weights in exact real arithmetic (docs/soundness.md). With `rigorous=False`
  (`--fast`) the same formulas run in plain float64: exact up to rounding, *not a proof*;
* `proven(model, payload, tokens) -> bool[n]`: which of the given inputs the proof certifies
  (over all inputs its sum is `correct_count`); used by soundness tests.

Subclasses implement the proof once, for any arithmetic (`verify_in`, `proven_in`;
soundness.arithmetic). Rigorous verification runs it in ball arithmetic (float64 values
with one certified error radius per tensor) and, only if some decision was left undecided by
those radii, again in interval arithmetic, keeping whichever certifies more. Both are proofs;
the choice only affects how tight the rounding accounting is. The proof length (FLOPs) is that
of the proof kept: an abandoned ball attempt only chose what to verify, like search.

Soundness contract of every `verify`: every input it counts is classified correctly by the
model (last-position logit of the max token strictly above all others). Hence
`correct_count / total` is a lower bound on the model's accuracy, whatever the payload says.

The proof's length is the FLOP count of `verify` (see `compact_proofs.proofs.flops`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from compact_proofs.model.transformer import AttnOnlyTransformer, ModelConfig
from compact_proofs.proofs.flops import count_flops
from compact_proofs.soundness.arithmetic import Arithmetic


@dataclass
class Verdict:
    """Outcome of a verification: `correct_count` of `total` inputs proven correct.

    `undecided`: decisions (cells) the arithmetic could neither prove nor refute because its
    error bound straddles 0 — a tighter arithmetic might prove them. `arithmetic`: what ran.
    """

    correct_count: int
    total: int
    details: dict[str, Any] = field(default_factory=dict)  # diagnostics, not serialised
    undecided: int = 0
    arithmetic: Arithmetic = Arithmetic.FAST

    @property
    def bound(self) -> float:
        return self.correct_count / self.total

    @property
    def rigorous(self) -> bool:
        return self.arithmetic.rigorous


class Strategy(ABC):
    """A proof strategy (see module docstring). Subclasses set the class attributes."""

    id: str
    group: str  # the Table 1 row / plot group it belongs to
    complexity: str  # asymptotic cost of verification, e.g. "O(v^3 k^2)"
    leading_complexity: str  # coarse label: brute-force, cubic, subcubic, ...
    description: str

    @abstractmethod
    def unexplained_dims(self, cfg: ModelConfig) -> int:
        """Number of real numbers the proof treats without explanation (SPEC §8)."""

    def search(self, model: AttnOnlyTransformer) -> dict[str, Any]:
        """Proof search (free). Default: nothing to search, empty payload."""
        return {}

    def verify(
        self, model: AttnOnlyTransformer, payload: dict[str, Any], *, rigorous: bool = True
    ) -> Verdict:
        """The proof: a pure function of (model, payload). Must be sound (module docstring)."""
        return self._decided(lambda arith: (self.verify_in(model, payload, arith), 0), rigorous)[0]

    def _decided(
        self, run: Callable[[Arithmetic], tuple[Verdict, int]], rigorous: bool
    ) -> tuple[Verdict, int]:
        """`run` in float64 (not rigorous), or in balls and, if they left decisions
        undecided, in intervals, keeping the proof that certifies more; with the FLOPs of
        the proof kept (an abandoned attempt only chose what to verify)."""
        if not rigorous:
            return run(Arithmetic.FAST)
        verdict, flops = run(Arithmetic.BALL)
        if verdict.undecided:
            tighter, tighter_flops = run(Arithmetic.INTERVAL)
            if tighter.correct_count > verdict.correct_count:
                return tighter, tighter_flops
        return verdict, flops

    def proven(
        self,
        model: AttnOnlyTransformer,
        payload: dict[str, Any],
        tokens: Tensor,
        *,
        rigorous: bool = True,
    ) -> Tensor:
        """bool [n]: which of `tokens` [n, k] the proof certifies. Summed over all v^k inputs
        it equals `verify(model, payload, rigorous=rigorous).correct_count`."""
        arith = self.verify(model, payload, rigorous=rigorous).arithmetic
        return self.proven_in(model, payload, tokens, arith)

    @abstractmethod
    def verify_in(
        self, model: AttnOnlyTransformer, payload: dict[str, Any], arith: Arithmetic
    ) -> Verdict:
        """The proof in the arithmetic `arith`, with its undecided count."""

    @abstractmethod
    def proven_in(
        self,
        model: AttnOnlyTransformer,
        payload: dict[str, Any],
        tokens: Tensor,
        arith: Arithmetic,
    ) -> Tensor:
        """`proven` in the arithmetic `arith` (sums to `verify_in(...).correct_count`)."""

    def verify_counted(
        self, model: AttnOnlyTransformer, payload: dict[str, Any], *, rigorous: bool = True
    ) -> tuple[Verdict, int]:
        """Run `verify` and measure its FLOPs by instrumenting the computation (of the proof
        whose verdict is returned)."""
        return self._decided(
            lambda arith: count_flops(lambda: self.verify_in(model, payload, arith)), rigorous
        )

    def describe(self, cfg: ModelConfig) -> dict[str, Any]:
        """Metadata for `compact-proofs strategies --json` (unexplained dims for `cfg`)."""
        return {
            "strategy": self.id,
            "group": self.group,
            "complexity": self.complexity,
            "leading_complexity": self.leading_complexity,
            "unexplained_dims": self.unexplained_dims(cfg),
            "description": self.description,
        }
