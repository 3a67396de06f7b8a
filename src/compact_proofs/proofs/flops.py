"""Proof length: count the FLOPs of a verification by instrumenting its real computation.

`FlopCounter` is a `TorchDispatchMode`: every aten operator executed inside it is charged by
the cost rules of SPEC §7.1 (n = number of output elements unless stated):

| rule        | operators (aten)                                      | cost                 |
|-------------|-------------------------------------------------------|----------------------|
| free        | views, reshapes, indexing/gather, cat/stack, creation | 0                    |
| elementwise | unary/binary maths, comparisons, casts, where, clone  | n                    |
| write       | copy_, fill_, index_put_, scatter                     | elements written     |
| reduction   | sum, max, min, amax, amin, argmax, argmin, any, all   | in - out             |
| mean        | mean                                                  | in                   |
| scan        | cumsum, cummax, cummin, cumprod                       | in - rows            |
| matmul      | mm, bmm, matmul, dot, mv (addmm, baddbmm: + out)      | out * (2b - 1)       |
| softmax     | _softmax                                              | 5n - 2 rows          |
| log_softmax | _log_softmax                                          | 4n - rows            |
| logsumexp   | logsumexp                                             | 4 in - out           |
| norm        | linalg_vector_norm                                    | 2 in                 |
| sort        | sort                                                  | (len - 1) per row    |
| search      | searchsorted                                     | ceil(log2(len+1)) per query |
| svd         | linalg_svd                                            | check of U diag(S) Vh |

Sorting and SVD are charged as the cost of *checking* a supplied certificate, as in the
original. Any other operator raises `FlopCountError`, so nothing is silently free. Python-side
exact integer arithmetic (e.g. summing huge counts) is charged explicitly with `charge()`.
All dtypes are charged alike (the count is of operations, not only floating-point ones).
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch.utils._python_dispatch import (
    TorchDispatchMode,
    _disable_current_modes,
    _get_current_dispatch_mode_stack,
)

aten = torch.ops.aten


class FlopCountError(RuntimeError):
    """An operator without a cost rule ran under the counter."""


def _numel(x: Any) -> int:
    return x.numel() if isinstance(x, torch.Tensor) else 0


def _first_tensor(xs: Sequence[Any]) -> torch.Tensor:
    for x in xs:
        if isinstance(x, torch.Tensor):
            return x
    raise FlopCountError("operator without tensor outputs")


def _out_numel(out: Any) -> int:
    if isinstance(out, (tuple, list)):
        return _numel(_first_tensor(out))
    return _numel(out)


def _free(args, kwargs, out) -> int:
    return 0


def _elementwise(args, kwargs, out) -> int:
    return _out_numel(out)


def _written(args, kwargs, out) -> int:
    # copy_/fill_/zero_ write all of `self`; out-of-place scatter writes a whole new tensor.
    return _out_numel(out)


def _scatter_written(args, kwargs, out) -> int:
    # scatter_(self, dim, index, src | value), scatter_add_: one write per index entry
    return _numel(args[2])


def _masked_scatter_written(args, kwargs, out) -> int:
    # masked_scatter_(self, mask, source): one write per True of mask (broadcast to self)
    x, mask = args[0], args[1]
    with _disable_current_modes():  # counting the mask is not charged to any counter
        return int(torch.broadcast_to(mask, x.shape).sum())


def _index_put(args, kwargs, out) -> int:
    # index_put_(self, indices, values): elements written = numel of self[indices], i.e. the
    # broadcast number of indexed positions (a k-dim bool mask selects its True entries and
    # covers k dims) times the sizes of the dims no index covers (None entries, trailing dims).
    x, indices = args[0], args[1]
    shapes: list[tuple[int, ...]] = []
    covered: set[int] = set()
    d = 0
    for i in indices:
        if not isinstance(i, torch.Tensor):
            d += 1
        elif i.dtype in (torch.bool, torch.uint8):
            with _disable_current_modes():  # counting the mask is not charged to any counter
                shapes.append((int(i.sum()),))
            covered.update(range(d, d + i.dim()))
            d += i.dim()
        else:
            shapes.append(tuple(i.shape))
            covered.add(d)
            d += 1
    positions = torch.broadcast_shapes(*shapes).numel()
    return positions * math.prod(s for k, s in enumerate(x.shape) if k not in covered)


def _reduction(args, kwargs, out) -> int:
    return max(_numel(args[0]) - _out_numel(out), 0)


def _logsumexp(args, kwargs, out) -> int:
    # max-reduce, subtract, exp, sum-reduce, log, add back
    n, r = _numel(args[0]), _out_numel(out)
    return 4 * n - r if n else r


def _mean(args, kwargs, out) -> int:
    return _numel(args[0])


def _scan(args, kwargs, out) -> int:
    x, dim = args[0], args[1]
    rows = x.numel() // max(x.shape[dim], 1) if x.dim() else 1
    return max(x.numel() - rows, 0)


def _matmul(args, kwargs, out) -> int:
    a = args[0]
    b_dim = a.shape[-1] if a.dim() else 1
    return _out_numel(out) * (2 * b_dim - 1)


def _matmul_plus_add(args, kwargs, out) -> int:
    # addmm(bias, a, b), baddbmm(bias, a, b): product, then one add per output
    a = args[1]
    return _out_numel(out) * (2 * a.shape[-1] - 1) + _out_numel(out)


def _rows(x: torch.Tensor, dim: int) -> int:
    return x.numel() // max(x.shape[dim], 1) if x.dim() else 1


def _softmax(args, kwargs, out) -> int:
    x, dim = args[0], args[1]
    return 5 * x.numel() - 2 * _rows(x, dim)


def _log_softmax(args, kwargs, out) -> int:
    x, dim = args[0], args[1]
    return 4 * x.numel() - _rows(x, dim)


def _vector_norm(args, kwargs, out) -> int:
    return 2 * _numel(args[0])


def _sort(args, kwargs, out) -> int:
    x = args[0]
    dim = args[1] if len(args) > 1 and isinstance(args[1], int) else kwargs.get("dim", -1)
    if x.dim() == 0:
        return 0
    length = x.shape[dim]
    return (length - 1) * _rows(x, dim)


def _searchsorted(args, kwargs, out) -> int:
    """Binary search: ceil(log2(len + 1)) comparisons per query."""
    sorted_seq = args[0]
    length = sorted_seq.shape[-1] if sorted_seq.dim() else 1
    return _out_numel(out) * math.ceil(math.log2(length + 1))


def _svd(args, kwargs, out) -> int:
    """Cost of checking A = U diag(S) Vh with orthonormal U, Vh (SPEC §7.1, "verify" mode)."""
    a = args[0]
    m, n = a.shape[-2], a.shape[-1]
    r = min(m, n)
    batch = a.numel() // max(m * n, 1)
    scale = m * r
    reconstruct = m * n * (2 * r - 1)
    gram_u, gram_v = r * r * (2 * m - 1), r * r * (2 * n - 1)
    residuals = m * n + 2 * r * r  # subtract from targets (A, I, I)
    return batch * (scale + reconstruct + gram_u + gram_v + 3 * residuals)  # subtract, abs, compare


_RULES: dict[Any, Callable[..., int]] = {}


def _register(rule: Callable[..., int], *names: str) -> None:
    """Give `rule` to each named operator and to its in-place variant (`add_`, ...)."""
    for name in names:
        for variant in (name, f"{name}_"):
            packet = getattr(aten, variant, None)
            if packet is not None and packet not in _RULES:
                _RULES[packet] = rule


_register(
    _free,
    "view",
    "_unsafe_view",
    "reshape",
    "expand",
    "permute",
    "transpose",
    "t",
    "unsqueeze",
    "squeeze",
    "select",
    "slice",
    "index",
    "index_select",
    "gather",
    "stack",
    "cat",
    "zeros",
    "ones",
    "empty",
    "empty_like",
    "zeros_like",
    "ones_like",
    "full",
    "full_like",
    "new_zeros",
    "new_ones",
    "new_empty",
    "new_full",
    "arange",
    "detach",
    "alias",
    "as_strided",
    "lift_fresh",
    "lift_fresh_copy",
    "scalar_tensor",
    "_local_scalar_dense",
    "split",
    "split_with_sizes",
    "unbind",
    "narrow",
    "diagonal",
    "contiguous",
    "movedim",
    "flatten",
    "unflatten",
    "expand_as",
    "view_as",
    "_reshape_alias",
    "empty_strided",
    "resolve_conj",
    "resolve_neg",
    "repeat",
    "tile",
    "broadcast_to",
)
_register(
    _elementwise,
    # unary
    "neg",
    "abs",
    "exp",
    "log",
    "log1p",
    "expm1",
    "sqrt",
    "rsqrt",
    "reciprocal",
    "sign",
    "sigmoid",
    "tanh",
    "relu",
    "isnan",
    "isinf",
    "isfinite",
    "logical_not",
    "bitwise_not",
    "ceil",
    "floor",
    "round",
    "trunc",
    "clone",
    "_to_copy",
    "flip",
    "tril",
    "triu",
    "square",
    "nan_to_num",
    "nextafter",
    # binary, comparisons, scalar ops
    "add",
    "sub",
    "rsub",
    "mul",
    "div",
    "pow",
    "maximum",
    "minimum",
    "fmax",
    "fmin",
    "remainder",
    "fmod",
    "floor_divide",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "logical_and",
    "logical_or",
    "logical_xor",
    "bitwise_and",
    "bitwise_or",
    "bitwise_xor",
    "where",
    "clamp",
    "clamp_min",
    "clamp_max",
    "nonzero",
    "bincount",
    "diag",
    "diag_embed",
    "eye",
    "masked_fill",
    "lerp",
)
_register(_scatter_written, "scatter_", "scatter_add_")
_register(_masked_scatter_written, "masked_scatter_")
_register(_written, "copy_", "fill_", "zero_", "scatter", "scatter_add", "masked_scatter")
_register(_index_put, "index_put", "index_put_", "_index_put_impl_")
_register(
    _reduction,
    "sum",
    "max",
    "min",
    "amax",
    "amin",
    "argmax",
    "argmin",
    "prod",
    "any",
    "all",
    "aminmax",
    "count_nonzero",
)
_register(_mean, "mean")
_register(_logsumexp, "logsumexp")
_register(_scan, "cumsum", "cummax", "cummin", "cumprod")
_register(_matmul, "mm", "bmm", "matmul", "dot", "mv", "vdot")
_register(_matmul_plus_add, "addmm", "baddbmm", "addmv")
_register(_softmax, "_softmax")
_register(_log_softmax, "_log_softmax")
_register(_vector_norm, "linalg_vector_norm")
_register(_sort, "sort")
_register(_searchsorted, "searchsorted")
_register(_svd, "linalg_svd", "_linalg_svd")


_EMPTY: dict[str, Any] = {}
# per overload (aten.add.Tensor, ...): its packet's rule and the label of its charges, resolved
# on first use, so each dispatched operator costs one dict lookup
_RESOLVED: dict[Any, tuple[Callable[..., int], str]] = {}


def _resolve(func: Any) -> tuple[Callable[..., int], str]:
    """(rule, label) of an operator overload (raises FlopCountError if it has no rule)."""
    packet = func.overloadpacket
    rule = _RULES.get(packet)
    if rule is None:
        raise FlopCountError(
            f"no FLOP cost rule for operator {func}; add one to compact_proofs.proofs.flops"
        )
    _RESOLVED[func] = rule, str(packet.__name__)
    return _RESOLVED[func]


def op_cost(func: Any, args: tuple, kwargs: dict, out: Any) -> int:
    """FLOPs charged for one aten operator call (raises FlopCountError if it has no rule)."""
    rule = (_RESOLVED.get(func) or _resolve(func))[0]
    return int(rule(args, kwargs or _EMPTY, out))


class _CountingState(threading.local):
    """Per thread: the counters charged now (outermost first), and the one of them whose
    dispatch mode is on torch's (thread-local) mode stack and charges them all."""

    def __init__(self) -> None:
        self.active: list[FlopCounter] = []
        self.dispatcher: FlopCounter | None = None


_STATE = _CountingState()


def active_counters() -> list[FlopCounter]:
    """The counters this thread charges now, outermost first (a copy)."""
    return _STATE.active[:]


class FlopCounter(TorchDispatchMode):
    """Count the FLOPs of everything torch executes inside `with FlopCounter() as fc:`.

    Post: `fc.total` is the sum of `op_cost` over all operators run (plus explicit charges);
    `fc.by_op` breaks it down by operator name (an empty Counter, never filled, when
    `breakdown=False`: the total is the same, each operator is cheaper to count).
    Nested counters share one dispatch mode, the outermost's: each operator is handed to
    Python once and charged to every enclosing counter. Rules that look at values (how many
    entries of a boolean mask are set) do so with every mode disabled, so counters charge
    exactly the operators run inside them.
    """

    def __init__(self, breakdown: bool = True) -> None:
        super().__init__()
        self.total = 0
        self.by_op: Counter[str] = Counter()
        self._breakdown = breakdown

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # nothing here is ever compiled: no per-operator torch._disable_dynamo wrapper
        return False

    def __enter__(self) -> FlopCounter:
        self._outside: tuple[list[FlopCounter], FlopCounter | None] | None = None
        dispatcher = _STATE.dispatcher
        if dispatcher is not None and dispatcher not in _get_current_dispatch_mode_stack():
            # the enclosing counters' mode is switched off here: they see nothing inside,
            # and this counter counts on its own (as inside `uncounted()`)
            self._outside = _STATE.active, dispatcher
            _STATE.active, _STATE.dispatcher = [], None
        _STATE.active.append(self)
        if _STATE.dispatcher is None:  # no counting mode on the stack: this one is it
            _STATE.dispatcher = self
            super().__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        _STATE.active.pop()
        if _STATE.dispatcher is self:
            _STATE.dispatcher = None
            super().__exit__(*exc)
        if self._outside is not None:
            _STATE.active, _STATE.dispatcher = self._outside

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        # torch pops this mode while its handler runs: `func` runs uncounted, once
        out = func(*args, **kwargs) if kwargs else func(*args)
        rule, label = _RESOLVED.get(func) or _resolve(func)
        flops = int(rule(args, kwargs or _EMPTY, out))
        for counter in _STATE.active:
            counter.total += flops
            if counter._breakdown:
                counter.by_op[label] += flops
        return out

    def add(self, flops: int, label: str) -> None:
        self.total += flops
        if self._breakdown:
            self.by_op[label] += flops


@contextlib.contextmanager
def uncounted() -> Iterator[None]:
    """Run work that is not part of the proof without charging it: e.g. deciding whether a
    tighter arithmetic could certify more (compact_proofs.proofs.base), which, like proof
    search, only chooses what to verify. Torch operators inside reach no counter, and
    `charge` calls are ignored; a counter entered inside counts on its own."""
    active, dispatcher = _STATE.active, _STATE.dispatcher
    _STATE.active, _STATE.dispatcher = [], None
    try:
        with _disable_current_modes():
            yield
    finally:
        _STATE.active, _STATE.dispatcher = active, dispatcher


def charge(flops: int, label: str) -> None:
    """Charge work done outside torch (e.g. exact big-integer sums) to the active counters.

    Every enclosing counter is charged, as every enclosing counter also sees each torch op."""
    for counter in _STATE.active:
        counter.add(int(flops), label)


@functools.cache
def warm_up() -> None:
    """Pay the one-time cost of torch's first dispatch-mode entry (lazy imports, ~1 s), so it
    is not attributed to the first proof that is timed."""
    with FlopCounter():
        torch.zeros(1) + 1


def count_flops(fn: Callable[[], Any]) -> tuple[Any, int]:
    """Run `fn()` under a FlopCounter; return (its result, FLOPs)."""
    with FlopCounter(breakdown=False) as counter:
        result = fn()
    return result, counter.total


def log2(n: int) -> float:
    """log2 of a positive count (0 -> -inf), for display."""
    return math.log2(n) if n > 0 else float("-inf")
