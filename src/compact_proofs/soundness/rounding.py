"""The floating-point rounding model shared by the rigorous arithmetics (docs/soundness.md).

IEEE-754 binary64, round to nearest: +, -, *, / are correctly rounded (relative error <= U,
plus an absolute 2^-1074 where a product or quotient underflows; `divide` makes sure torch
really divides); sums and dot products of n terms are within gamma_n * sum |terms| in any
order (Higham, Accuracy and Stability of Numerical Algorithms, §3.1, §3.5); torch's sqrt is
within one ulp (faithful, not correctly rounded: vectorised); exp, log and sigmoid are
assumed within LIBM_REL relative plus TINY absolute (the libraries document a few ulps;
tests/test_interval.py checks them against exact references).
"""

from __future__ import annotations

import torch
from torch import Tensor

U = 2.0**-53  # unit roundoff of binary64
LIBM_REL = 2.0**-40  # assumed relative error bound of exp, log and sigmoid
TINY = 2.0**-1000  # absolute slack for results in or near the subnormal range
SUBNORMAL_ULP = 2.0**-1074
INF = float("inf")

_LIMITS: dict[tuple[torch.dtype, torch.device, float], Tensor] = {}


def _limit(x: Tensor, value: float) -> Tensor:
    """A cached 0-d tensor holding `value` (the direction of nextafter)."""
    key = (x.dtype, x.device, value)
    t = _LIMITS.get(key)
    if t is None:
        t = _LIMITS[key] = torch.tensor(value, dtype=x.dtype, device=x.device)
    return t


def round_down(x: Tensor) -> Tensor:
    """The next float below x (encloses the exact result of one rounded operation)."""
    return torch.nextafter(x, _limit(x, -INF))


def round_up(x: Tensor) -> Tensor:
    """The next float above x."""
    return torch.nextafter(x, _limit(x, INF))


def divide(a: Tensor | float, b: Tensor | float) -> Tensor:
    """a / b by IEEE division (correctly rounded), as the rounding model assumes. torch
    computes float / tensor as reciprocal(tensor) * float, and CUDA divides a tensor by a CPU
    scalar as a * (1 / b): both round twice. So Python numbers and one-element tensors on
    another device become tensors on the operands' device (an accelerator's if either is on
    one): free fills, the same division operator."""
    if isinstance(a, Tensor) and (
        (isinstance(b, Tensor) and b.device == a.device)
        or (not isinstance(b, Tensor) and a.device.type == "cpu")
    ):  # the common cases, kept cheap (verification divides often): IEEE on the CPU
        return a / b
    tensors = [x for x in (a, b) if isinstance(x, Tensor)]
    like = next((x for x in tensors if x.device.type != "cpu"), None)
    if like is None:
        like = tensors[0] if tensors else torch.tensor(0.0, dtype=torch.float64)

    def there(x: Tensor | float) -> Tensor:
        if isinstance(x, Tensor) and (x.device == like.device or x.numel() != 1):
            return x
        return torch.full((), float(x), dtype=like.dtype, device=like.device)

    return there(a) / there(b)


UP = 1.0 + 2.0**-40  # inflation of a bound computed with a few rounded Python float operations
UNDERFLOW_PAD = 2.0**-1060  # absolute slack of such a bound: 2^15 subnormal half-spacings


def up(x: float) -> float:
    """An upper bound of a non-negative quantity x computed with a few rounded float
    operations: x inflated by 2^-40 (each operation errs by at most 2^-53 relative when its
    result is normal) plus UNDERFLOW_PAD (one whose result underflows errs by up to 2^-1075
    absolutely; the pad covers up to 2^15 of those, as long as no such result was multiplied
    by a large factor or divided by a small one before reaching here). NaN (from inf * 0)
    becomes inf: no information."""
    y = x * UP + UNDERFLOW_PAD
    return y if y == y else INF


def gamma(n: int) -> float:
    """gamma_n = n U / (1 - n U): relative error bound of an n-term float sum or dot product
    (any order, FMA allowed; Higham)."""
    return n * U / (1 - n * U)
