"""Unit tests for the FLOP counter: one exact, hand-computed number per cost rule.

Conventions: X is the [3, 4] tensor 0..11 (row-major), Y is [4, 5]. Inputs are built
*outside* the counter, so only the operator under test is charged (tensor creation is free
anyway, but comparisons that build masks are not).
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import _disable_current_modes

from compact_proofs.cli import main
from compact_proofs.model.file_format import save_model
from compact_proofs.model.transformer import AttnOnlyTransformer, ModelConfig
from compact_proofs.proofs.brute_force import BATCH, BruteForce, black_box_batch, black_box_flops
from compact_proofs.proofs.exhaustive import all_sequences
from compact_proofs.proofs.flops import (
    FlopCounter,
    FlopCountError,
    active_counters,
    charge,
    count_flops,
    log2,
    op_cost,
    uncounted,
)
from compact_proofs.proofs.registry import get_strategy
from compact_proofs.proofs.subcubic.config import ALL_CONFIGS
from compact_proofs.soundness.arithmetic import Arithmetic

from models import random_model

aten = torch.ops.aten


def X(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.arange(12, dtype=dtype).reshape(3, 4)


def Y(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.arange(20, dtype=dtype).reshape(4, 5)


def flops(fn: Callable[[], Any]) -> int:
    return count_flops(fn)[1]


def by_op(fn: Callable[[], Any]) -> dict[str, int]:
    with FlopCounter() as fc:
        fn()
    assert sum(fc.by_op.values()) == fc.total
    return {k: v for k, v in fc.by_op.items() if v}


@pytest.fixture(autouse=True)
def _no_counter_leaks():
    yield
    assert active_counters() == []


# ---------------------------------------------------------------------------------- free


@pytest.mark.parametrize(
    "fn",
    [
        lambda x: x.view(12),
        lambda x: x.reshape(4, 3),
        lambda x: x.permute(1, 0),
        lambda x: x.T,
        lambda x: x.transpose(0, 1),
        lambda x: x.unsqueeze(0).expand(2, 3, 4),
        lambda x: x.flatten(),
        lambda x: x[0],
        lambda x: x[:, 1:3],
        lambda x: x[..., None],
        lambda x: x.diagonal(),
        lambda x: x.unbind(0),
        lambda x: x.split(2, dim=1),
        lambda x: x.narrow(1, 1, 2),
        lambda x: x.detach(),
        lambda x: x.repeat(2, 1),
        lambda x: x[torch.tensor([0, 2])],  # advanced indexing (aten.index)
        lambda x: x.index_select(1, torch.tensor([3, 0])),
        lambda x: x.gather(1, torch.tensor([[0], [1], [2]])),
        lambda x: torch.cat([x, x], dim=0),
        lambda x: torch.stack([x, x, x]),
        lambda x: (torch.zeros_like(x), torch.full((2, 2), 7.0), torch.arange(5)),
    ],
)
def test_free_ops_cost_nothing(fn):
    x = X()
    assert flops(lambda: fn(x)) == 0


# --------------------------------------------------------------------------- elementwise


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        (lambda x, y: x + 1, 12),
        (lambda x, y: x - x, 12),
        (lambda x, y: x * 2, 12),
        (lambda x, y: x / 3, 12),
        (lambda x, y: -x, 12),
        (lambda x, y: x.exp(), 12),
        (lambda x, y: x.abs(), 12),
        (lambda x, y: x > 5, 12),
        (lambda x, y: torch.maximum(x, x.flip(0)), 12 + 12),  # flip is elementwise too
        (lambda x, y: x.clone(), 12),
        (lambda x, y: x.to(torch.float64), 12),
        (lambda x, y: x.clamp(0, 5), 12),
        (lambda x, y: torch.where(x > 5, x, -x), 12 + 12 + 12),  # gt, neg, where
        (lambda x, y: x[:, :1] + x[:1, :], 12),  # broadcast [3,1] + [1,4] -> n = 12
        (lambda x, y: x[:, 0] * 2, 3),  # n counts output elements
        (lambda x, y: x.masked_fill(x > 5, 0.0), 12 + 12),
    ],
)
def test_elementwise_costs_output_numel(fn, expected):
    x, y = X(), Y()
    assert flops(lambda: fn(x, y)) == expected


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int64])
def test_count_does_not_depend_on_dtype(dtype):
    x, y = X(dtype), Y(dtype)
    assert flops(lambda: x + x) == 12
    assert flops(lambda: x * x) == 12
    assert flops(lambda: x.sum()) == 11
    assert flops(lambda: x @ y) == 105


def test_dtype_independence_across_dtypes_for_a_pipeline():
    def work(x, y):
        return ((x * 2 + 1) @ y).amax(dim=-1).sum()

    counts = {flops(lambda d=d: work(X(d), Y(d))) for d in (torch.float32, torch.float64)}
    counts.add(flops(lambda: work(X(torch.int64), Y(torch.int64))))
    # mul 12 + add 12 + mm 105 + amax (15 - 3) + sum (3 - 1)
    assert counts == {12 + 12 + 105 + 12 + 2}


# ---------------------------------------------------------------------------------- write


def test_boolean_mask_assignment_costs_true_entries():
    x = X()
    mask = x > 5  # 6 of the 12 entries are True
    assert int(mask.sum()) == 6

    y = x.clone()

    def assign():
        y[mask] = 1.0

    assert by_op(assign) == {"index_put_": 6}
    assert (y[mask] == 1.0).all()


def test_boolean_mask_built_inside_counter_adds_the_comparison():
    y = X().clone()

    def assign():
        y[y > 5] = 1.0

    assert by_op(assign) == {"gt": 12, "index_put_": 6}


def test_row_mask_assignment_writes_whole_rows():
    y = X().clone()
    rows = torch.tensor([True, False, True])

    def assign():
        y[rows] = 0.0

    assert flops(assign) == 2 * 4  # two rows of 4


def test_integer_index_assignment_costs_elements_written():
    idx = torch.tensor([0, 2])
    y = X().clone()

    def rows():
        y[idx] = 1.0  # rows 0 and 2: 8 elements

    def cols():
        y[:, idx] = 1.0  # columns 0 and 2 of 3 rows: 6 elements

    def points():
        y[idx, torch.tensor([1, 3])] = 1.0  # (0, 1) and (2, 3): 2 elements

    def accumulate():
        y.index_put_((idx,), torch.ones(2, 4), accumulate=True)

    assert flops(rows) == 8
    assert flops(cols) == 6
    assert flops(points) == 2
    assert flops(accumulate) == 8


def test_slice_assignment_costs_elements_written():
    y = X().clone()

    def fill_column():
        y[:, 0] = 1

    def copy_column():
        y[:, 0] = torch.ones(3)

    def copy_block():
        y[1:, 2:] = torch.zeros(2, 2)

    assert by_op(fill_column) == {"fill_": 3}
    assert by_op(copy_column) == {"copy_": 3}
    assert by_op(copy_block) == {"copy_": 4}
    assert flops(lambda: y.fill_(2.0)) == 12
    assert flops(lambda: y.zero_()) == 12
    assert flops(lambda: y.copy_(X())) == 12


def test_scatter_costs_elements_written():
    index = torch.tensor([[0], [1], [2]])
    z = torch.zeros(3, 4)
    assert flops(lambda: z.scatter_(1, index, 1.0)) == 3  # in place: one write per index
    assert flops(lambda: z.scatter_add_(1, index, torch.ones(3, 1))) == 3
    assert flops(lambda: z.scatter(1, index, 1.0)) == 12  # out of place: a new [3, 4] tensor
    mask = X() > 5
    assert flops(lambda: z.masked_scatter_(mask, torch.arange(12.0))) == 6


# ------------------------------------------------------------------------------ reduction


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        (lambda x: x.sum(), 11),
        (lambda x: x.sum(dim=-1), 12 - 3),
        (lambda x: x.sum(dim=0), 12 - 4),
        (lambda x: x.sum(dim=-1, keepdim=True), 12 - 3),
        (lambda x: x.max(), 11),
        (lambda x: x.max(dim=-1), 12 - 3),  # (values, indices): charged once
        (lambda x: x.min(dim=0).values, 12 - 4),
        (lambda x: x.amax(dim=-1), 12 - 3),
        (lambda x: x.amin(dim=(0, 1)), 11),
        (lambda x: x.argmax(), 11),
        (lambda x: x.argmin(dim=-1), 12 - 3),
        (lambda x: x.prod(dim=-1), 12 - 3),
        (lambda x: torch.count_nonzero(x), 11),
    ],
)
def test_reduction_costs_in_minus_out(fn, expected):
    x = X()
    assert flops(lambda: fn(x)) == expected


def test_boolean_reductions_cost_in_minus_out():
    m = X() > 5
    assert flops(lambda: m.any()) == 11
    assert flops(lambda: m.all(dim=-1)) == 12 - 3


@pytest.mark.parametrize("fn", [lambda x: x.mean(), lambda x: x.mean(dim=-1)])
def test_mean_costs_input_numel(fn):
    x = X()
    assert flops(lambda: fn(x)) == 12


# ----------------------------------------------------------------------------------- scan


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        (lambda x: x.cumsum(dim=-1), 12 - 3),
        (lambda x: x.cumsum(dim=1), 12 - 3),
        (lambda x: x.cumsum(dim=0), 12 - 4),
        (lambda x: x.cumprod(dim=-1), 12 - 3),
        (lambda x: x.cummax(dim=-1), 12 - 3),
        (lambda x: x.cummin(dim=0), 12 - 4),
    ],
)
def test_scan_costs_in_minus_rows(fn, expected):
    x = X()
    assert flops(lambda: fn(x)) == expected


# --------------------------------------------------------------------------------- matmul


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        (lambda: X() @ Y(), 3 * 5 * (2 * 4 - 1)),  # mm: 105
        (lambda: torch.mm(X(), Y()), 105),
        (lambda: torch.matmul(X(), Y()), 105),
        (lambda: X() @ torch.ones(4), 3 * (2 * 4 - 1)),  # mv: 21
        (lambda: torch.ones(4) @ torch.ones(4), 2 * 4 - 1),  # dot: 7
        (lambda: torch.ones(2, 3, 4) @ torch.ones(2, 4, 5), 2 * 3 * 5 * 7),  # bmm: 210
        (lambda: torch.bmm(torch.ones(2, 3, 4), torch.ones(2, 4, 5)), 210),
        (lambda: torch.einsum("ij,jk->ik", X(), Y()), 105),  # lowers to a [1,3,4]@[1,4,5] bmm
        (lambda: torch.einsum("bij,bjk->bik", torch.ones(2, 3, 4), torch.ones(2, 4, 5)), 210),
    ],
)
def test_matmul_costs_out_times_2b_minus_1(fn, expected):
    assert flops(fn) == expected


def test_einsum_charges_like_its_bmm():
    x, y = X(), Y()
    ops = by_op(lambda: torch.einsum("ij,jk->ik", x, y))
    assert ops == {"bmm": 105}


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        (lambda: torch.addmm(torch.ones(5), X(), Y()), 105 + 15),
        (lambda: F.linear(X(), Y().T, torch.ones(5)), 105 + 15),  # lowers to addmm
        (lambda: torch.addmv(torch.ones(3), X(), torch.ones(4)), 21 + 3),
        (
            lambda: torch.baddbmm(torch.ones(2, 3, 5), torch.ones(2, 3, 4), torch.ones(2, 4, 5)),
            210 + 30,
        ),
    ],
)
def test_addmm_is_matmul_plus_one_add_per_output(fn, expected):
    assert flops(fn) == expected


# ------------------------------------------------------------------- softmax and friends


def test_softmax_costs_5n_minus_2_rows():
    x = X()
    assert flops(lambda: torch.softmax(x, dim=-1)) == 5 * 12 - 2 * 3  # 54
    assert flops(lambda: torch.softmax(x, dim=0)) == 5 * 12 - 2 * 4  # 52
    assert by_op(lambda: F.softmax(x, dim=-1)) == {"_softmax": 54}


def test_log_softmax_costs_4n_minus_rows():
    x = X()
    assert flops(lambda: torch.log_softmax(x, dim=-1)) == 4 * 12 - 3  # 45
    assert flops(lambda: F.log_softmax(x, dim=0)) == 4 * 12 - 4  # 44


def test_logsumexp_costs_4_in_minus_out():
    x = X()
    assert flops(lambda: torch.logsumexp(x, dim=-1)) == 4 * 12 - 3  # 45
    assert flops(lambda: torch.logsumexp(x, dim=0)) == 4 * 12 - 4  # 44
    assert flops(lambda: torch.logsumexp(x, dim=(0, 1))) == 4 * 12 - 1  # 47


def test_vector_norm_costs_2_in():
    x = X()
    assert flops(lambda: torch.linalg.vector_norm(x)) == 2 * 12
    assert flops(lambda: torch.linalg.vector_norm(x, ord=1, dim=-1)) == 2 * 12


# ------------------------------------------------------------------------------ sort, svd


def test_sort_costs_len_minus_1_per_row():
    x = X().flip(-1)
    assert flops(lambda: torch.sort(x)) == 3 * (4 - 1)  # 9
    assert flops(lambda: torch.sort(x, dim=-1, descending=True)) == 9
    assert flops(lambda: torch.sort(x, dim=0)) == 4 * (3 - 1)  # 8
    assert flops(lambda: torch.sort(x, dim=0, stable=True)) == 8  # aten.sort.stable, dim kwarg
    assert flops(lambda: x.sort(dim=1).values) == 9


def _svd_check_cost(batch: int, m: int, n: int) -> int:
    r = min(m, n)
    scale = m * r  # U * S
    reconstruct = m * n * (2 * r - 1)  # (U S) @ Vh
    gram_u = r * r * (2 * m - 1)  # U^T U
    gram_v = r * r * (2 * n - 1)  # Vh Vh^T
    residuals = m * n + 2 * r * r  # entries compared against A, I, I
    return batch * (scale + reconstruct + gram_u + gram_v + 3 * residuals)


def test_svd_costs_the_check_of_a_certificate():
    a = X() / 10 + torch.eye(3, 4)
    # [3, 4]: 9 + 60 + 45 + 63 + 3 * 30 = 267
    assert _svd_check_cost(1, 3, 4) == 267
    assert flops(lambda: torch.linalg.svd(a, full_matrices=False)) == 267
    assert flops(lambda: torch.linalg.svd(a)) == 267  # charge does not depend on full_matrices
    assert flops(lambda: torch.linalg.svd(a.T, full_matrices=False)) == _svd_check_cost(1, 4, 3)
    batched = torch.stack([a, 2 * a])
    assert flops(lambda: torch.linalg.svd(batched, full_matrices=False)) == 2 * 267


# ------------------------------------------------------------------------------- in-place


@pytest.mark.parametrize(
    ("inplace", "outofplace"),
    [
        (lambda x: x.add_(1), lambda x: x.add(1)),
        (lambda x: x.mul_(x), lambda x: x.mul(x)),
        (lambda x: x.sub_(2.0), lambda x: x.sub(2.0)),
        (lambda x: x.clamp_(0, 5), lambda x: x.clamp(0, 5)),
        (lambda x: x.exp_(), lambda x: x.exp()),
        (lambda x: x.neg_(), lambda x: x.neg()),
    ],
)
def test_inplace_variants_are_charged_like_their_op(inplace, outofplace):
    a, b = X(), X()
    assert flops(lambda: inplace(a)) == flops(lambda: outofplace(b)) == 12


def test_inplace_variants_share_the_rule():
    a, out = X(), X() + 1
    assert op_cost(aten.add_.Tensor, (a, a), {}, out) == op_cost(aten.add.Tensor, (a, a), {}, out)
    a2 = torch.ones(3, 4)
    assert op_cost(aten.mm.default, (a2, torch.ones(4, 5)), {}, torch.ones(3, 5)) == 105


# -------------------------------------------------------------------- counters and charge


def test_count_flops_returns_result_and_flops():
    x, y = X(), Y()
    result, n = count_flops(lambda: x @ y)
    assert torch.equal(result, X() @ Y())
    assert n == 105
    assert count_flops(lambda: "no torch") == ("no torch", 0)


def test_charge_adds_to_the_active_counter():
    with FlopCounter() as fc:
        charge(7, "python-int")
        charge(3.0, "python-int")  # coerced to int
        X() + 1
    assert fc.total == 7 + 3 + 12
    assert fc.by_op["python-int"] == 10
    assert fc.by_op["add"] == 12


def test_charge_without_counter_is_a_no_op():
    charge(1000, "nowhere")  # must not raise
    with FlopCounter() as fc:
        pass
    assert fc.total == 0
    assert "nowhere" not in fc.by_op


def test_nested_counters_both_see_inner_work():
    x = X()
    with FlopCounter() as outer:
        x + 1  # 12, outer only
        with FlopCounter() as inner:
            x.sum()  # 11, both
            charge(5, "py")  # both
        charge(2, "py")  # outer only
    assert inner.total == 11 + 5
    assert inner.by_op == {"sum": 11, "py": 5}
    assert outer.total == 12 + 11 + 5 + 2
    assert outer.by_op == {"add": 12, "sum": 11, "py": 7}


def test_nested_counters_mask_assignment():
    # the index_put_ rule counts the mask's True entries; that count must not itself be charged
    y = X().clone()
    mask = X() > 5
    with FlopCounter() as outer, FlopCounter() as inner:
        y[mask] = 1.0
    assert inner.total == outer.total == 6


def test_by_op_breakdown_sums_to_total():
    x, y = X(), Y()
    with FlopCounter() as fc:
        z = torch.softmax(x @ y, dim=-1)  # mm 105 + softmax (75 - 6)
        z.sum()  # 14
        charge(4, "extra")
    assert sum(fc.by_op.values()) == fc.total == 105 + 69 + 14 + 4
    assert fc.by_op["mm"] == 105
    assert fc.by_op["_softmax"] == 69
    assert fc.by_op["sum"] == 14
    assert fc.by_op["extra"] == 4


# ------------------------------------------------------------------------- missing rules


def test_operator_without_rule_raises_with_its_name():
    x = X()
    with pytest.raises(FlopCountError, match="topk"):
        count_flops(lambda: torch.topk(x, 2))
    with pytest.raises(FlopCountError, match="topk"), FlopCounter():
        x.topk(2, dim=0)


def test_op_cost_without_rule_raises():
    x = X()
    out = torch.topk(x, 2)
    with pytest.raises(FlopCountError, match=r"aten\.topk"):
        op_cost(aten.topk.default, (x, 2), {}, out)


def test_log2_display_helper():
    assert log2(1024) == 10
    assert log2(0) == float("-inf")


# ---------------------------------------------- the fast counter measures what it always did


class _ReferenceCounter(FlopCounter):
    """The counter as it was before it was made cheaper (HEAD 0755d25): every operator's
    rule runs with all modes disabled and every charge is broken down by operator. The fast
    counter must measure exactly the same totals."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        with _disable_current_modes():
            cost = op_cost(func, args, kwargs, out)
        self.add(cost, str(func.overloadpacket.__name__))
        return out


def _reference_flops(fn: Callable[[], Any]) -> int:
    with _ReferenceCounter() as counter:
        fn()
    return counter.total


def _zero_attention(model: AttnOnlyTransformer) -> AttnOnlyTransformer:
    with torch.no_grad():
        model.W_Q.zero_()  # every score ties: uniform attention, degenerate QK
    return model


def _large(model: AttnOnlyTransformer) -> AttnOnlyTransformer:
    with torch.no_grad():
        model.W_E.mul_(1e4)  # large logits: saturated attention, wide error radii
    return model


RANDOM_MODELS: dict[str, Callable[[], AttnOnlyTransformer]] = {
    "random": lambda: random_model(ModelConfig(6, 3, 5, 4), 3),
    "random, biases": lambda: random_model(ModelConfig(7, 4, 6, 6), 5, biases=True),
    "zero attention": lambda: _zero_attention(random_model(ModelConfig(5, 3, 4, 3), 7)),
    "large embeddings, biases": lambda: _large(
        random_model(ModelConfig(5, 2, 4, 4), 11, biases=True)
    ),
}
# every family whose proof is counted by running it (brute force's count is that of the
# black-box check, below), with a spread of the 100 sub-cubic configurations (every 9th); all
# strategies (those added later included) in test_prove_json_flops_are_the_reference_measurement
STRATEGY_SAMPLE = [
    "cubic",
    *(c.id for c in ALL_CONFIGS[::9]),
    "separable-lite",
    "separable",
]


@pytest.mark.parametrize("model_name", list(RANDOM_MODELS))
@pytest.mark.parametrize("arith", list(Arithmetic))
def test_fast_counter_totals_equal_the_reference_counter(model_name, arith):
    model = RANDOM_MODELS[model_name]()
    for strategy_id in STRATEGY_SAMPLE:
        strategy = get_strategy(strategy_id)
        payload = strategy.search(model)
        run = functools.partial(strategy.verify_in, model, payload, arith)
        with FlopCounter() as with_breakdown:
            run()
        fast, reference = flops(run), _reference_flops(run)
        assert fast == reference == with_breakdown.total, (strategy_id, fast, reference)
        assert sum(with_breakdown.by_op.values()) == reference


def test_breakdown_off_keeps_the_total():
    x, y = X(), Y()
    with FlopCounter(breakdown=False) as fc:
        torch.softmax(x @ y, dim=-1).sum()
        charge(4, "extra")
    assert fc.total == 105 + 69 + 14 + 4
    assert not fc.by_op


def test_nested_counters_with_different_breakdowns():
    y, mask, source = X().clone(), X() > 5, torch.zeros(12)
    with FlopCounter(breakdown=False) as outer, FlopCounter() as inner:
        y[mask] = 1.0
        y.masked_scatter_(mask, source)
    assert inner.total == outer.total == 6 + 6
    assert {k: v for k, v in inner.by_op.items() if v} == {"index_put_": 6, "masked_scatter_": 6}


def test_nested_counters_hand_each_operator_to_python_once(monkeypatch):
    handled = []
    dispatch = FlopCounter.__torch_dispatch__

    def spy(self, func, types, args=(), kwargs=None):
        handled.append(str(func))
        return dispatch(self, func, types, args, kwargs)

    monkeypatch.setattr(FlopCounter, "__torch_dispatch__", spy)
    x = X()
    with FlopCounter() as outer, FlopCounter() as inner, FlopCounter(breakdown=False) as third:
        x + 1
    assert handled == ["aten.add.Tensor"]
    assert outer.total == inner.total == third.total == 12


@pytest.mark.parametrize("switched_off", [uncounted, _disable_current_modes])
def test_a_counter_where_counting_is_switched_off_counts_on_its_own(switched_off):
    """Inside `uncounted()`, or torch's own `_disable_current_modes`, the enclosing counter
    sees nothing, and a counter entered there counts what runs inside it."""
    x = X()
    with FlopCounter() as outer:
        with switched_off():
            with FlopCounter() as inner:
                x + 1  # 12, inner only
                charge(3, "py")
            x.sum()  # nobody
        x.sum()  # 11, outer
    assert inner.total == 15
    assert outer.total == 11
    assert active_counters() == []


def test_counters_are_per_thread():
    """A counter charges only its own thread's work, whatever counts in another thread."""
    started, finish = threading.Event(), threading.Event()
    totals: dict[str, int] = {}

    def other() -> None:
        with FlopCounter() as fc:
            started.set()
            finish.wait(10)
            X().sum()  # 11
            charge(5, "py")
        totals["other"] = fc.total

    thread = threading.Thread(target=other)
    thread.start()
    started.wait(10)
    with FlopCounter() as mine:
        X() + 1  # 12
        charge(2, "py")
        finish.set()
        thread.join(10)
    assert totals == {"other": 16}
    assert mine.total == 14


# ------------------------------------- the one cached count: brute force, per architecture


@pytest.mark.parametrize("model_name", list(RANDOM_MODELS))
def test_brute_force_cached_count_equals_a_fresh_measurement(model_name):
    """`black_box_flops(cfg)` is measured once per architecture on a freshly built model and
    reused (compact_proofs.proofs.brute_force): re-measured here on models of several shapes,
    with biases, ties and overflowing values, by running the black-box check on every input of
    the model itself under the counter."""
    model = RANDOM_MODELS[model_name]()
    cfg = model.cfg
    tokens = all_sequences(cfg.d_vocab, cfg.n_ctx, 0, cfg.n_inputs, torch.device("cpu"))
    remeasured = 0
    for batch in tokens.split(BATCH):
        remeasured += flops(lambda b=batch: black_box_batch(model, b))
    assert remeasured == black_box_flops(cfg)
    assert BruteForce().verify_counted(model, {})[1] == black_box_flops(cfg)


# ------------------------------------------- what `prove --json` reports is the measurement


def test_prove_json_flops_are_the_reference_measurement(tmp_path, capsys):
    """The FLOPs `compact-proofs prove --json` prints, for every strategy, equal the
    reference counter's count of the proof it kept (ball, or interval after an undecided
    ball; float64 with --fast); brute force's is its per-architecture measurement."""
    model = random_model(ModelConfig(5, 3, 4, 4), 13, biases=True)
    path = tmp_path / "m.safetensors"
    save_model(model, path)
    for fast in (False, True):
        capsys.readouterr()
        assert main(["prove", str(path), "--strategy", "all", "--json", *(["--fast"] * fast)]) == 0
        printed = json.loads(capsys.readouterr().out)
        rows = printed["results"] if isinstance(printed, dict) else printed
        assert len(rows) >= 104
        for row in rows:
            strategy = get_strategy(row["strategy"])
            if strategy.id == "brute-force":
                assert row["flops"] == black_box_flops(model.cfg)
                continue
            payload = strategy.search(model)
            arith = Arithmetic(row["arithmetic"])
            expected = _reference_flops(
                lambda s=strategy, p=payload, a=arith: s.verify_in(model, p, a)
            )
            assert row["flops"] == expected, row["strategy"]
