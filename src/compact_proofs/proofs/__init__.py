"""Proof strategies: one module per family, each a `Strategy` with `search` and `verify`.

`STRATEGIES` maps each stable strategy id to its strategy, in the paper's order.
"""

from __future__ import annotations

from compact_proofs.errors import UnknownStrategyError
from compact_proofs.proofs.base import Strategy, Verdict
from compact_proofs.proofs.brute_force import BruteForce
from compact_proofs.proofs.cubic import Cubic

STRATEGIES: dict[str, Strategy] = {s.id: s for s in (BruteForce(), Cubic())}


def get_strategy(strategy_id: str) -> Strategy:
    """The strategy with this id (raises UnknownStrategyError listing the valid ids)."""
    try:
        return STRATEGIES[strategy_id]
    except KeyError:
        raise UnknownStrategyError(
            f"unknown strategy {strategy_id!r}; run `compact-proofs strategies` to list the ids "
            "(or use 'all')"
        ) from None


def resolve_strategies(spec: str) -> list[Strategy]:
    """'all', one id, or a comma-separated list of ids -> strategies (no duplicates)."""
    if spec.strip() == "all":
        return list(STRATEGIES.values())
    ids = [s.strip() for s in spec.split(",") if s.strip()]
    if not ids:
        raise UnknownStrategyError("no strategy given; pass an id or 'all'")
    return [get_strategy(i) for i in dict.fromkeys(ids)]


__all__ = ["STRATEGIES", "Strategy", "Verdict", "get_strategy", "resolve_strategies"]
