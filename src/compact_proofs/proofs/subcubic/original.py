"""The reference implementation's own rules, to reproduce its published numbers.

Not a proof: the original's mean+diff step is unsound (SPEC §11.2; a test exhibits a model on
which it certifies a misclassified input), so this is never registered as a strategy. It exists
so that tests and benchmarks can check fidelity to the original and put its numbers beside the
sound ones.
"""

from __future__ import annotations

from compact_proofs.model.transformer import AttnOnlyTransformer
from compact_proofs.proofs.subcubic.bounds import ORIGINAL, count_correct, subcubic_bounds
from compact_proofs.proofs.subcubic.config import SubcubicConfig
from compact_proofs.proofs.subcubic.decompose import decompose_eqke, weights64
from compact_proofs.proofs.subcubic.search import find_directions, find_min_gaps


def original_count(model: AttnOnlyTransformer, cfg: SubcubicConfig) -> int:
    """The count the original code reports: its search, its verification, (m - g) counting."""
    w = weights64(model)
    dirs = find_directions(w)
    gaps = find_min_gaps(w, dirs, cfg, ORIGINAL)
    qk = decompose_eqke(w, dirs, cfg.error, cfg.route)
    B, cells = subcubic_bounds(
        w, qk, gaps, w.E_q, cfg.eu, dirs.W_EP_direction, cfg.uses_mean_diff, ORIGINAL
    )
    return count_correct(B, gaps, cells, model.cfg.n_ctx, ORIGINAL)
