"""Path matrices (SPEC §3, biases folded exactly) and the helpers every proof family shares."""

from __future__ import annotations

from dataclasses import dataclass
from math import sqrt

import numpy as np

from compact_proofs.soundness.checker.errors import UnsupportedModelError
from compact_proofs.soundness.checker.model_file import Model

SAFETY = 2.0**-40  # relative margin demanded of every proven bound (about 9e-13)
CHUNK = 2**21  # float64 numbers per vectorised block (16 MiB)


@dataclass(frozen=True)
class Paths:
    """logits[j] = EUPU[q, j] + sum_h sum_p alpha^h_p (EVOU[h][x_p, j] + PVOU[h][p, j]),
    alpha^h = softmax_p((EQKE[h][q, x_p] + EQKP[h][q, p]) / scale), for every input x."""

    EUPU: np.ndarray  # [v, v]
    EVOU: np.ndarray  # [h, v, v]
    PVOU: np.ndarray  # [h, k, v]
    EQKE: np.ndarray  # [h, v, v]
    EQKP: np.ndarray  # [h, v, k]
    scale: float

    def head0(self) -> tuple[np.ndarray, ...]:
        """(EUPU, EVOU, PVOU, EQKE, EQKP) of a single-head model."""
        return self.EUPU, self.EVOU[0], self.PVOU[0], self.EQKE[0], self.EQKP[0]

    @property
    def value_scale(self) -> float:
        """max |EUPU| + max |EVOU| + max |PVOU|: at least every |l_j| (single head)."""
        return np.abs(self.EUPU).max() + np.abs(self.EVOU).max() + np.abs(self.PVOU).max()

    @property
    def tol(self) -> float:
        """The margin demanded of a bound on logit differences: SAFETY x their size."""
        return SAFETY * 2 * self.value_scale


def path_matrices(m: Model) -> Paths:
    """Biases: b_Q joins the query, b_K the positional keys (a per-query constant across
    positions would cancel anyway), b_V the positional values (sum alpha = 1), and
    b_O W_U + b_U the direct path."""
    W_E, W_pos, W_U = m.f64("W_E"), m.f64("W_pos"), m.f64("W_U")
    E_q = W_E + W_pos[-1]
    Q = np.einsum("vd,hde->hve", E_q, m.f64("W_Q")) + m.f64("b_Q")[:, None]
    K_tok = np.einsum("vd,hde->hve", W_E, m.f64("W_K"))
    K_pos = np.einsum("kd,hde->hke", W_pos, m.f64("W_K")) + m.f64("b_K")[:, None]
    OU = m.f64("W_O") @ W_U  # [h, e, v]
    V_tok = np.einsum("vd,hde->hve", W_E, m.f64("W_V"))
    V_pos = np.einsum("kd,hde->hke", W_pos, m.f64("W_V")) + m.f64("b_V")[:, None]
    return Paths(
        EUPU=E_q @ W_U + (m.f64("b_O") @ W_U + m.f64("b_U")),
        EVOU=V_tok @ OU,
        PVOU=V_pos @ OU,
        EQKE=Q @ K_tok.transpose(0, 2, 1),
        EQKP=Q @ K_pos.transpose(0, 2, 1),
        scale=sqrt(m.d_head),
    )


def single_head(m: Model, what: str) -> None:
    if m.heads != 1:
        raise UnsupportedModelError(f"{what} needs a single attention head; n_heads={m.heads}")


def single_head_paths(m: Model, what: str) -> Paths:
    """The path matrices of a single-head model (refusing several heads for `what`)."""
    single_head(m, what)
    return path_matrices(m)


def max_except(x: np.ndarray, col: np.ndarray) -> np.ndarray:
    """max_{j != col} x[..., j] (col broadcast against x[..., 0]); -inf when v = 1."""
    x = np.array(x, dtype=np.float64, copy=True)
    np.put_along_axis(x, np.broadcast_to(col, x.shape[:-1])[..., None], -np.inf, axis=-1)
    return x.max(axis=-1)


def sum_of_powers(n: np.ndarray, c: int) -> int:
    """sum_r n[r] ** c (n: integers >= 0) as an exact Python int."""
    hist = np.bincount(n.ravel(), minlength=1)
    return sum(int(cnt) * x**c for x, cnt in enumerate(hist) if cnt)
