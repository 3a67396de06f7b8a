"""Proof strategies: one module per family, each a `Strategy` with `search` and `verify`.

`STRATEGIES` maps each stable strategy id to its strategy: the paper's 102 (`PAPER_STRATEGIES`,
in the paper's order), then the strategies new here (not in the paper): groups "separable"
(cubic in v) and "separable-subcubic".
"""

from __future__ import annotations

from compact_proofs.errors import UnknownStrategyError
from compact_proofs.proofs.base import Strategy, Verdict
from compact_proofs.proofs.brute_force import BruteForce
from compact_proofs.proofs.cubic import Cubic
from compact_proofs.proofs.separable import Separable, SeparableLite
from compact_proofs.proofs.separable_subcubic import SeparableSubcubic
from compact_proofs.proofs.subcubic.config import ALL_CONFIGS, table1_rows
from compact_proofs.proofs.subcubic.strategy import SubcubicStrategy

# the paper's 102 strategies: brute force, cubic, and the 100 sub-cubic configurations
PAPER_STRATEGIES: dict[str, Strategy] = {
    s.id: s for s in (BruteForce(), Cubic(), *(SubcubicStrategy(c) for c in ALL_CONFIGS))
}
NEW_STRATEGIES: dict[str, Strategy] = {
    s.id: s for s in (SeparableLite(), Separable(), SeparableSubcubic())
}
STRATEGIES: dict[str, Strategy] = {**PAPER_STRATEGIES, **NEW_STRATEGIES}
# the sub-cubic LaTeX/CSV keys (e.g. EUPUMeanQueryMaxDiffAttnMeanQueryDiffAttnErrMaxDiff)
ALIASES: dict[str, str] = {c.tricks: c.id for c in ALL_CONFIGS}


def get_strategy(strategy_id: str) -> Strategy:
    """The strategy with this id (raises UnknownStrategyError listing the valid ids)."""
    try:
        return STRATEGIES[ALIASES.get(strategy_id, strategy_id)]
    except KeyError:
        raise UnknownStrategyError(
            f"unknown strategy {strategy_id!r}; run `compact-proofs strategies` to list the ids "
            "(or use 'all')"
        ) from None


def _table1_rows(s: Strategy) -> list[str]:
    return table1_rows(s.config) if isinstance(s, SubcubicStrategy) else []


def _group(name: str) -> list[Strategy]:
    """The strategies of a group (as `compact-proofs strategies` lists them) or of a Table 1
    row ("Low-rank QK", "SVD only", ...), matched case-insensitively."""
    key = name.strip().casefold()
    group = [
        s
        for s in STRATEGIES.values()
        if key == s.group.casefold() or key in (r.casefold() for r in _table1_rows(s))
    ]
    if not group:
        groups = sorted({s.group for s in STRATEGIES.values()})
        rows = sorted({r for s in STRATEGIES.values() for r in _table1_rows(s)})
        raise UnknownStrategyError(
            f"unknown group {name!r}; groups: {', '.join(groups)}; Table 1 rows: {', '.join(rows)}"
        )
    return group


def resolve_strategies(spec: str) -> list[Strategy]:
    """'all', 'paper' (the paper's 102), 'subcubic', 'group:NAME' (a group or a Table 1 row),
    one id, or a comma-separated list of these -> strategies, in registry order within a
    group, without duplicates."""
    chosen: list[Strategy] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if part == "all":
            chosen.extend(STRATEGIES.values())
        elif part == "paper":
            chosen.extend(PAPER_STRATEGIES.values())
        elif part == "subcubic":
            chosen.extend(s for s in STRATEGIES.values() if isinstance(s, SubcubicStrategy))
        elif part.startswith("group:"):
            chosen.extend(_group(part.removeprefix("group:")))
        else:
            chosen.append(get_strategy(part))
    if not chosen:
        raise UnknownStrategyError("no strategy given; pass an id, 'subcubic' or 'all'")
    return list({s.id: s for s in chosen}.values())


__all__ = [
    "NEW_STRATEGIES",
    "PAPER_STRATEGIES",
    "STRATEGIES",
    "Strategy",
    "Verdict",
    "get_strategy",
    "resolve_strategies",
]
