"""The 100 sub-cubic configurations: names, groups, complexity labels (SPEC §6.10–§6.12, §8).

A configuration is (EU handling, attention handling, attention-error handling), enumerated as
the Cartesian product in this field order (5 x 2 x 10 = 100).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

EU_HANDLINGS = (
    "mean_query+max_diff",
    "svd_query+max_diff",
    "max_diff",
    "max_diff_exact",
    "global_max_diff_exact",
)
ATTENTION_HANDLINGS = ("mean_query+diff", "drop_average_query_per_output_logit_reasoning")
ERROR_HANDLINGS = (
    "svd",
    "max_diff",
    "max_diff_subproduct",
    "max_diff_subproduct_recursive",
    "mean+max_diff",
    "mean+max_diff_subproduct",
    "mean+max_diff_subproduct_recursive",
    "mean_recursive+max_diff_subproduct_recursive",
    "exact_EQKE+max_diff_exact",
    "max_diff_exact",
)

EXACT_EU = frozenset({"max_diff_exact", "global_max_diff_exact"})
EXACT_ERROR = frozenset({"max_diff_exact", "exact_EQKE+max_diff_exact"})
RECURSIVE_ERROR = frozenset(e for e in ERROR_HANDLINGS if e.endswith("_recursive"))
ROUTE_A_ERROR = frozenset({"svd", "max_diff", "mean+max_diff", "max_diff_exact"})  # rank-1 SVD
ROUTE_C_ERROR = frozenset({"exact_EQKE+max_diff_exact"})  # exact EQKE
# everything else is route B (peeling six directions)

GROUP_LATEX = {
    "subcubic": "SubcubicGroup",
    "subcubic (direct-quadratic)": "SubcubicDirectQuadratic",
    "subcubic (attention-vocab-model-squared)": "SubcubicAttentionVocabModelSquared",
    "subcubic (attention-vocab-model-squared, direct-quadratic)":
        "SubcubicAttentionVocabModelSquaredDirectQuadratic",
    "subcubic (attention-quadratic)": "SubcubicAttentionQuadratic",
    "subcubic (attention-quadratic, direct-quadratic)": "SubcubicAttentionQuadraticDirectQuadratic",
}  # fmt: skip
# Table 1 row of the paper for each group (SPEC §6.11)
TABLE1_ROW = {
    "subcubic": "Sub-cubic",
    "subcubic (attention-vocab-model-squared)": "Low-rank QK",
    "subcubic (direct-quadratic)": "Low-rank EU",
    "subcubic (attention-vocab-model-squared, direct-quadratic)": "Low-rank QK & EU",
    "subcubic (attention-quadratic)": "Quadratic QK",
    "subcubic (attention-quadratic, direct-quadratic)": "Quadratic QK & EU",
}


def table1_rows(cfg: SubcubicConfig) -> list[str]:
    """The paper's Table 1 rows whose configuration set contains `cfg` (SPEC §6.11): the
    group's row, plus "without mean+diff" (exact EQKE & EU, no mean+diff) and "SVD only"
    (low-rank QK with the svd error bound) where they apply."""
    rows = [TABLE1_ROW[cfg.group]]
    if cfg.group == "subcubic" and not cfg.uses_mean_diff:
        rows.append("without mean+diff")
    if cfg.group == "subcubic (attention-vocab-model-squared)" and cfg.error == "svd":
        rows.append("SVD only")
    return rows


def _latex_piece(value: str) -> str:
    return "".join(p.capitalize() for p in re.split(r"[_+\-]", value) if p)


@dataclass(frozen=True)
class SubcubicConfig:
    """One sub-cubic proof configuration (the original's `LargestWrongLogitQuadraticConfig`)."""

    eu: str = "mean_query+max_diff"
    attention: str = "mean_query+diff"
    error: str = "max_diff"

    def __post_init__(self) -> None:
        if self.eu not in EU_HANDLINGS:
            raise ValueError(f"unknown EU handling {self.eu!r}")
        if self.attention not in ATTENTION_HANDLINGS:
            raise ValueError(f"unknown attention handling {self.attention!r}")
        if self.error not in ERROR_HANDLINGS:
            raise ValueError(f"unknown attention-error handling {self.error!r}")

    # -- names ---------------------------------------------------------------------------

    @property
    def id(self) -> str:
        """Plain short description, the strategy id: EUPU-{a}--attn-{b}--attn-err-{c}."""
        return (f"EUPU-{self.eu}--attn-{self.attention}--attn-err-{self.error}").replace("_", "-")

    @property
    def tricks(self) -> str:
        """LaTeX / CSV key, e.g. EUPUMeanQueryMaxDiffAttnMeanQueryDiffAttnErrMaxDiff."""
        return (
            f"EUPU{_latex_piece(self.eu)}Attn{_latex_piece(self.attention)}"
            f"AttnErr{_latex_piece(self.error)}"
        )

    # -- what it does ----------------------------------------------------------------------

    @property
    def route(self) -> str:
        """EQKE decomposition route: 'A' (rank-1 SVD), 'B' (six peeled directions), 'C' (exact)."""
        if self.error in ROUTE_C_ERROR:
            return "C"
        return "A" if self.error in ROUTE_A_ERROR else "B"

    @property
    def uses_mean_diff(self) -> bool:
        return self.attention == "mean_query+diff"

    # -- classification (SPEC §6.10) -------------------------------------------------------

    @property
    def eu_quadratic(self) -> bool:
        return self.eu not in EXACT_EU

    @property
    def error_quadratic(self) -> bool:
        return self.error in RECURSIVE_ERROR

    @property
    def error_subcubic_no_quadratic_vocab(self) -> bool:
        return self.error not in EXACT_ERROR

    @property
    def leading_complexity(self) -> str:
        if self.eu_quadratic and self.error_quadratic:
            return "almost-quadratic"
        if self.eu_quadratic and self.error_subcubic_no_quadratic_vocab:
            return "vocab-model-squared"
        return "subcubic"

    @property
    def group(self) -> str:
        """The original's `subcubic_group` (plot group / Table 1 row set)."""
        if self.error in EXACT_ERROR:
            return "subcubic (direct-quadratic)" if self.eu_quadratic else "subcubic"
        kind = "attention-quadratic" if self.error_quadratic else "attention-vocab-model-squared"
        suffix = ", direct-quadratic" if self.eu_quadratic else ""
        return f"subcubic ({kind}{suffix})"

    @property
    def complexity(self) -> str:
        """Asymptotic cost of verification (SPEC §6.12), all terms kept."""
        terms = ["v^2 k^2", "v^2 d"]  # softmax table; exact EVOU and all-max direct rows
        if self.route == "A" or self.error.endswith("subproduct"):
            terms.append("v d^2")
        else:
            terms += ["v d", "d^2"]
        if self.eu_quadratic:
            terms.append("v d")
        return "O(" + " + ".join(dict.fromkeys(terms)) + ")"

    def unexplained_dims(self, v: int, d: int) -> int:
        """EU term + attention-error term + v (PVOU) + 0 (EQKP) + v^2 (EVOU)  (SPEC §8)."""
        eu = {
            "global_max_diff_exact": 2,
            "max_diff_exact": 2 * v,
            "mean_query+max_diff": v + v * d + 2,
            "svd_query+max_diff": v + v * d + 2,
            "max_diff": v * d + 2,
        }[self.eu]
        if self.error == "svd":
            err = 2 * v
        elif self.error in ("max_diff", "max_diff_subproduct", "max_diff_subproduct_recursive"):
            err = 2 * v + 2 * d
        elif self.error.startswith("mean"):
            err = 2 * v + v + 2 * d
        elif self.error == "max_diff_exact":
            err = 2 * v + 2 * v
        else:  # exact_EQKE+max_diff_exact
            err = v * v
        return eu + err + v + 0 + v * v


ALL_CONFIGS: tuple[SubcubicConfig, ...] = tuple(
    SubcubicConfig(eu, attention, error)
    for eu, attention, error in itertools.product(
        EU_HANDLINGS, ATTENTION_HANDLINGS, ERROR_HANDLINGS
    )
)
DEFAULT_CONFIG = SubcubicConfig()
