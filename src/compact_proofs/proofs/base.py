"""The narrow interface between "what is being bounded" and "how the bound is computed".

A strategy is a pair of functions:

* `search(model) -> payload`: free (not part of the proof): may do anything (SVDs,
  optimisation) and returns a JSON-serialisable certificate payload;
* `verify(model, payload) -> Verdict`: the proof. A pure function of (model, payload) that
  returns `correct_count`, a number of inputs that it has *proven* are classified correctly.

Soundness contract of every `verify`: every input it counts is classified correctly by the
model (last-position logit of the max token strictly above all others). Hence
`correct_count / total` is a lower bound on the model's accuracy, whatever the payload says.

The proof's length is the FLOP count of `verify` (see `compact_proofs.flops`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from compact_proofs.flops import count_flops
from compact_proofs.model import AttnOnlyTransformer, ModelConfig


@dataclass
class Verdict:
    """Outcome of a verification: `correct_count` of `total` inputs proven correct."""

    correct_count: int
    total: int
    details: dict[str, Any] = field(default_factory=dict)  # diagnostics, not serialised

    @property
    def bound(self) -> float:
        return self.correct_count / self.total


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

    @abstractmethod
    def verify(self, model: AttnOnlyTransformer, payload: dict[str, Any]) -> Verdict:
        """The proof: a pure function of (model, payload). Must be sound (module docstring)."""

    def verify_counted(
        self, model: AttnOnlyTransformer, payload: dict[str, Any]
    ) -> tuple[Verdict, int]:
        """Run `verify` and measure its FLOPs by instrumenting the computation."""
        return count_flops(lambda: self.verify(model, payload))

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
