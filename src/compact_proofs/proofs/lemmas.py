"""Lemmas shared by several proofs about one model: checked once, charged to every proof.

The ten sub-cubic configurations with one attention-error handling decompose EQKE the same
way from the same weights and certificate directions, and build the same tables from it
before they read their gaps: the same lemma. Inside `sharing()`
(`runner.prove_many`, `runner.verify_certificates`), `lemma(key, compute)` runs `compute()`
once per key under a FlopCounter of its own; a later proof asking for the same key gets a
copy of the result and charges the active counters the FLOPs measured the first time. Every
proof's length is still that of the proof alone: a deterministic computation on the same
inputs runs the same operators, so it would have counted exactly those FLOPs again. Only the
verifier's time is shared. Outside `sharing()`, `lemma` is `compute()`.

Contract of a key: it names every input of `compute` (digests of tensor bytes, the
arithmetic, the configuration fields it reads), and `compute` reads nothing else (no
caches, no global state), so equal keys mean equal results and equal FLOPs. Results are
structures of tensors, balls, intervals and frozen dataclasses of them; no caller writes
into their tensors (the arithmetics never do). A Ball's lazily measured magnitudes are
copied as they were when the lemma was computed, so a proof that gets a copy measures
(and is charged for) what it would have measured after computing the lemma itself.

Memory: at most LEMMAS results, each the caller's (for the sub-cubic lemma O(v d + v^2 + v k)
floats: 8.8 MiB in balls, 17.5 MiB in intervals at (K, v) = (20, 512)), whatever the
weights' values; all freed when the outermost `sharing()` exits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Any, TypeVar

from torch import Tensor

from compact_proofs.proofs.flops import FlopCounter, charge, uncounted
from compact_proofs.soundness.ball import Ball
from compact_proofs.soundness.interval import Interval

LEMMAS = 24  # results kept (oldest out first): 10 error handlings x 2 arithmetics fit

T = TypeVar("T")
_Entry = tuple[Any, Counter[str]]  # (the result as computed, its FLOPs by operator)


class _Scope(threading.local):
    shared: OrderedDict[Hashable, _Entry] | None = None  # per thread: None outside sharing()


_scope = _Scope()


@contextlib.contextmanager
def sharing() -> Iterator[None]:
    """Share lemmas among the proofs this thread verifies inside (nested scopes share the
    outer one)."""
    if _scope.shared is not None:
        yield
        return
    _scope.shared = OrderedDict()
    try:
        yield
    finally:
        _scope.shared = None


def shared_count() -> int | None:
    """How many lemmas this thread's scope holds (None outside sharing())."""
    return None if _scope.shared is None else len(_scope.shared)


def lemma(key: Callable[[], Hashable], compute: Callable[[], T]) -> T:
    """compute(), or inside sharing() a copy of its result for a key() already computed,
    with the FLOPs it cost charged again to the active counters (module docstring). key()
    is evaluated only inside sharing(), and is not part of any proof (uncounted)."""
    shared = _scope.shared
    if shared is None:
        return compute()
    with uncounted():
        name = key()
    entry = shared.get(name)
    if entry is None:
        with FlopCounter() as counter:
            result = compute()
        entry = shared[name] = (_copy(result), counter.by_op)
        while len(shared) > LEMMAS:
            del shared[next(iter(shared))]
        return result
    shared.move_to_end(name)
    result, flops = entry
    for label, n in flops.items():
        charge(n, label)
    return _copy(result)


def _copy(x: Any) -> Any:
    """x with new Ball objects (same tensors, radii and measured magnitudes), so that what one
    proof measures later is not seen by another; tensors and intervals are never written
    to and are shared as they are."""
    if isinstance(x, Ball):
        out = Ball(x.mid, x.rad, None, None)  # (measured later: no radius rule applies)
        out._mag, out._inf, out._min_abs = x._mag, x._inf, x._min_abs
        return out
    if x is None or isinstance(x, (Tensor, Interval, float, int, str)):
        return x
    if isinstance(x, tuple):
        return tuple(_copy(y) for y in x)
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return type(x)(**{f.name: _copy(getattr(x, f.name)) for f in dataclasses.fields(x)})
    raise TypeError(f"a lemma's result may not hold a {type(x).__name__}")
