"""Run strategies: search, then verification under the FLOP counter, timed separately."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from compact_proofs.errors import CertificateError, CompactProofsError
from compact_proofs.model.file_format import weights_digest
from compact_proofs.model.transformer import AttnOnlyTransformer
from compact_proofs.proofs.certificates import Certificate, CertificateFile
from compact_proofs.proofs.flops import warm_up
from compact_proofs.proofs.lemmas import sharing
from compact_proofs.proofs.registry import Strategy, get_strategy
from compact_proofs.proofs.subcubic.strategy import SubcubicStrategy, search_group, search_many


@dataclass(frozen=True)
class ProofResult:
    """One strategy's result on one model (the CLI's `--json` record)."""

    strategy: str
    group: str
    bound: float  # correct_count / total: a certified lower bound on the accuracy
    correct_count: int
    total: int
    flops: int  # proof length: FLOPs of verification
    unexplained_dims: int
    complexity: str
    leading_complexity: str
    seconds: float  # wall time of verification
    search_seconds: float  # wall time of proof search (not part of the proof)
    rigorous: bool = True  # a proof in exact real arithmetic (False: --fast float64, not one)
    arithmetic: str = "ball"  # what decided it: "ball", "interval" or "float64"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def verify_payload(
    model: AttnOnlyTransformer,
    strategy: Strategy,
    payload: dict[str, Any],
    search_seconds: float = 0.0,
    rigorous: bool = True,
) -> ProofResult:
    """Verify one certificate payload, measuring its FLOPs and wall time (rigorous unless
    `rigorous=False`: compact_proofs.proofs.base)."""
    warm_up()
    start = time.perf_counter()
    verdict, flops = strategy.verify_counted(model, payload, rigorous=rigorous)
    seconds = time.perf_counter() - start
    return ProofResult(
        strategy=strategy.id,
        group=strategy.group,
        bound=verdict.bound,
        correct_count=verdict.correct_count,
        total=verdict.total,
        flops=flops,
        unexplained_dims=strategy.unexplained_dims(model.cfg),
        complexity=strategy.complexity,
        leading_complexity=strategy.leading_complexity,
        seconds=seconds,
        search_seconds=search_seconds,
        rigorous=verdict.rigorous,
        arithmetic=verdict.arithmetic.value,
    )


def prove(
    model: AttnOnlyTransformer, strategy: Strategy, rigorous: bool = True
) -> tuple[ProofResult, Certificate]:
    """Search, then verify. Returns the result and the certificate search produced."""
    start = time.perf_counter()
    payload = strategy.search(model)
    search_seconds = time.perf_counter() - start
    result = verify_payload(model, strategy, payload, search_seconds, rigorous)
    return result, Certificate(strategy.id, payload)


Outcome = tuple[ProofResult, Certificate] | CompactProofsError


def prove_many(
    model: AttnOnlyTransformer, strategies: Sequence[Strategy], rigorous: bool = True
) -> Iterator[tuple[Strategy, Outcome]]:
    """`prove` of every strategy, yielded as (strategy, its result and certificate, or the
    CompactProofsError it raised). The same certificates and results as one `prove` each;
    sub-cubic strategies of one search group (`search_group`: the five EU handlings of an
    (attention, error) pair) are searched together and yielded one after the other, each
    with the group's search time divided by its size. Their verifications share lemmas
    (proofs.lemmas: the same FLOPs, less time). Memory: one group's certificates and
    lemmas.LEMMAS lemmas beyond what the caller keeps."""
    done: set[str] = set()
    with sharing():
        for strategy in strategies:
            if strategy.id in done:
                continue
            group = [strategy]
            if isinstance(strategy, SubcubicStrategy):
                key = search_group(strategy)
                group = [
                    s
                    for s in strategies
                    if isinstance(s, SubcubicStrategy)
                    and search_group(s) == key
                    and s.id not in done
                ]
            done.update(s.id for s in group)
            yield from _prove_group(model, group, rigorous)


def _prove_group(
    model: AttnOnlyTransformer, group: list[Strategy], rigorous: bool
) -> Iterator[tuple[Strategy, Outcome]]:
    if len(group) > 1:
        try:
            start = time.perf_counter()
            payloads = search_many(model, group)  # type: ignore[arg-type]
            each = (time.perf_counter() - start) / len(group)
        except CompactProofsError:  # e.g. a model outside the family: one by one, below
            pass
        else:
            for s, payload in zip(group, payloads, strict=True):
                yield (
                    s,
                    _attempt(
                        lambda s=s, p=payload: (
                            verify_payload(model, s, p, each, rigorous),
                            Certificate(s.id, p),
                        )
                    ),
                )
            return
    for s in group:
        yield s, _attempt(lambda s=s: prove(model, s, rigorous))


def _attempt(run: Callable[[], tuple[ProofResult, Certificate]]) -> Outcome:
    try:
        return run()
    except CompactProofsError as exc:
        return exc


def verify_certificates(
    model: AttnOnlyTransformer, cert: CertificateFile, rigorous: bool = True
) -> list[ProofResult]:
    """Re-run verification only, for every certificate in the file.

    Raises CertificateError if the file was made for a different model: its weights digest
    and its model_config must both be this model's (docs/certificate-format.md).
    """
    digest = weights_digest(model)
    if cert.model_sha256 != digest:
        raise CertificateError(
            "certificate was made for a different model (weights digest "
            f"{cert.model_sha256[:12]}..., this model is {digest[:12]}...); "
            "re-run `compact-proofs prove` on this model"
        )
    if cert.model_config != model.cfg:
        raise CertificateError(
            f"certificate's model_config {asdict(cert.model_config)} does not match the "
            f"model's {asdict(model.cfg)}; re-run `compact-proofs prove` on this model"
        )
    with sharing():
        return [
            verify_payload(model, get_strategy(c.strategy), c.payload, rigorous=rigorous)
            for c in cert.certificates
        ]
