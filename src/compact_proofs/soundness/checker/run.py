"""Re-checking a certificate file: the digest and configuration must match the model, then
every certificate's count is recomputed by the checker's own proof of its strategy."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compact_proofs.soundness.checker.brute_force import brute_force_count
from compact_proofs.soundness.checker.certificate_file import SUBCUBIC, load_certificate_file
from compact_proofs.soundness.checker.cubic import cubic_count
from compact_proofs.soundness.checker.errors import CertificateError, UnknownStrategyError
from compact_proofs.soundness.checker.model_file import (
    Model,
    load_model_file,
    same_ints,
    weights_digest,
)
from compact_proofs.soundness.checker.separable import separable_count, separable_lite_count
from compact_proofs.soundness.checker.separable_subcubic import separable_subcubic_count
from compact_proofs.soundness.checker.subcubic import subcubic_count

COUNTS = {"brute-force": brute_force_count, "cubic": cubic_count,
          "separable": separable_count, "separable-lite": separable_lite_count}  # fmt: skip
# strategies whose count reads the certificate's payload (validated by the count itself)
PAYLOAD_COUNTS = {"separable-subcubic": separable_subcubic_count}


@dataclass(frozen=True)
class CheckResult:
    """One certificate re-checked: `correct_count` of `total` inputs proven correct."""

    strategy: str
    correct_count: int
    total: int
    seconds: float

    @property
    def bound(self) -> float:
        return self.correct_count / self.total

    def to_json(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "correct_count": self.correct_count,
                "total": self.total, "bound": self.bound, "seconds": self.seconds}  # fmt: skip


def check_strategy(m: Model, strategy: str, payload: dict[str, Any]) -> int:
    """The checker's count for one certificate (strategy id + payload)."""
    if strategy in SUBCUBIC:
        return subcubic_count(m, payload, strategy)
    if strategy in COUNTS:
        return COUNTS[strategy](m)
    if strategy in PAYLOAD_COUNTS:
        return PAYLOAD_COUNTS[strategy](m, payload)
    raise UnknownStrategyError(f"unknown strategy {strategy!r} in the certificate")


def check_certificates(model_path: str | Path, certificate_path: str | Path) -> list[CheckResult]:
    """Re-check every certificate of the file against the model (digest must match)."""
    model = load_model_file(model_path)
    doc = load_certificate_file(certificate_path)
    digest = weights_digest(model)
    if doc["model_sha256"] != digest:
        raise CertificateError(
            f"certificate was made for a different model (weights digest "
            f"{doc['model_sha256'][:12]}..., this model is {digest[:12]}...)"
        )
    if not same_ints(doc["model_config"], model.config):
        raise CertificateError("certificate's model_config does not match the model")
    results = []
    for cert in doc["certificates"]:
        start = time.perf_counter()
        count = check_strategy(model, cert["strategy"], cert["payload"])
        seconds = time.perf_counter() - start
        results.append(CheckResult(cert["strategy"], count, model.v**model.k, seconds))
    return results
