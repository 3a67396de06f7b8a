"""Path matrices of a one-layer attention-only transformer (SPEC §3).

For a sequence x with query token q = x[k-1], the prediction logits are exactly

    score(p)  = EQKE[q, x_p] + EQKP[q, p]                          (before / sqrt(d_head))
    alpha     = softmax_p(score / sqrt(d_head))
    logits[j] = EUPU[q, j] + sum_p alpha_p (EVOU[x_p, j] + PVOU[p, j])

Biases are folded in exactly (using sum_p alpha_p = 1): b_Q into the query side of EQKE/EQKP,
b_K into EQKP, b_V into PVOU, and the constants b_O W_U + b_U into EUPU. So every proof that
works on these matrices handles non-zero biases exactly.

Only single-head models decompose this way; `path_matrices` rejects n_heads > 1.

In a rigorous arithmetic (soundness.arithmetic) every matrix is a `Ball` or `Interval`
enclosing its exact real value for the float32 weights, and `attn_scale` an enclosure of
sqrt(d_head) (docs/soundness.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from compact_proofs.errors import UnsupportedModelError
from compact_proofs.model.transformer import AttnOnlyTransformer
from compact_proofs.soundness.arithmetic import Arithmetic, exact, sqrt_of
from compact_proofs.soundness.ball import Ball
from compact_proofs.soundness.interval import Interval, Num


@dataclass(frozen=True)
class PathMatrices:
    """EUPU [v,v], EVOU [v,v], PVOU [k,v], EQKE [v,v], EQKP [v,k] (+ attn_scale)."""

    EUPU: Num
    EVOU: Num
    PVOU: Num
    EQKE: Num
    EQKP: Num
    attn_scale: float | Interval | Ball

    @property
    def d_vocab(self) -> int:
        return self.EUPU.shape[0]

    @property
    def n_ctx(self) -> int:
        return self.PVOU.shape[0]


def require_single_head(model: AttnOnlyTransformer, what: str = "this strategy") -> None:
    """Raise UnsupportedModelError unless the model has exactly one attention head."""
    if model.cfg.n_heads != 1:
        raise UnsupportedModelError(
            f"{what} needs a single attention head; the model has n_heads={model.cfg.n_heads}"
        )


def path_matrices(model: AttnOnlyTransformer, arith: Arithmetic = Arithmetic.FAST) -> PathMatrices:
    """Compute the path matrices of a single-head model in float64 (SPEC §3, biases folded).

    Pre: model.cfg.n_heads == 1. Post: the identity in the module docstring holds exactly in
    real arithmetic (up to rounding in FAST mode; in a rigorous arithmetic the enclosures
    contain the exact values).
    """
    require_single_head(model, "the path decomposition")
    # float32 -> float64 is exact: the weights are exact points
    w: dict[str, Num] = {name: exact(t, arith) for name, t in model.weights().items()}
    W_E, W_pos, W_U = w["W_E"], w["W_pos"], w["W_U"]
    W_Q, W_K, W_V, W_O = w["W_Q"][0], w["W_K"][0], w["W_V"][0], w["W_O"][0]

    E_q = W_E + W_pos[-1]  # query-side residual, one row per query token
    Q = E_q @ W_Q + w["b_Q"][0]  # [v, d_head]
    K_tok = W_E @ W_K  # token part of keys
    K_pos = W_pos @ W_K + w["b_K"][0]  # position part of keys (key bias folded in)
    OU = W_O @ W_U  # [d_head, v]
    return PathMatrices(
        EUPU=E_q @ W_U + (w["b_O"] @ W_U + w["b_U"]),
        EVOU=W_E @ W_V @ OU,
        PVOU=(W_pos @ W_V + w["b_V"][0]) @ OU,
        EQKE=Q @ K_tok.T,
        EQKP=Q @ K_pos.T,
        attn_scale=sqrt_of(model.cfg.d_head, arith),
    )
