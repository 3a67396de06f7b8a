"""Batched multi-seed training: many seeds of the paper's recipe at once.

`train_many` trains a group of seeds in lockstep with stacked weights and one hand-written,
vectorised forward/backward per step for all of them; each seed's result equals
`training.train`'s up to floating-point reassociation (see the caveat in its docstring).
About 15x faster than training the seeds one by one on a 2-core CPU.
"""

from __future__ import annotations

import functools
import itertools
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from compact_proofs.model.seeds import heldout_stream_seed, model_seed, train_stream_seed
from compact_proofs.model.training import (
    TrainingRecipe,
    TrainingStats,
    evaluate_stream,
    sample_batch,
    single_threaded,
)
from compact_proofs.model.transformer import AttnOnlyTransformer, ModelConfig, build_model

DEFAULT_CHUNK = 64
"""Seeds trained in lockstep by `train_many` by default (~50 MB of memory at paper size)."""

BLOCK_STEPS = 10
"""Steps of training data `train_many` draws per seed at once (the same stream as `train`)."""


def _adamw(params: list[Tensor], recipe: TrainingRecipe) -> torch.optim.Optimizer:
    """AdamW with the recipe's hyper-parameters: the fused CPU kernel where torch has one."""
    kwargs = dict(lr=recipe.lr, betas=recipe.betas, weight_decay=recipe.weight_decay)
    try:
        return torch.optim.AdamW(params, fused=True, **kwargs)
    except (RuntimeError, ValueError):  # torch < 2.4: no fused CPU AdamW
        return torch.optim.AdamW(params, foreach=False, **kwargs)


@dataclass(frozen=True)
class _Block:
    """Training data of `n` consecutive steps for the S seeds of a group, with the index
    tensors the batched forward pass needs (leading axis: step)."""

    key_tokens: Tensor  # [n, S, k, b] int64: the sequences, transposed
    labels: Tensor  # [n, S, b] the max token
    query_rows: Tensor  # [n, S*b] row of the last token in Eq viewed as [S*v, d]
    # [n, S, 1, 2*k*b] entries of T viewed as [S, H, v*(v+k)]: (query token, key token), then
    # (query token, key position); within each half the order is (position, batch)
    score_idx: Tensor


@dataclass(frozen=True)
class _Forward:
    """What the backward pass needs from the forward pass of one step (S seeds, H heads)."""

    rows: Tensor  # [S*b] query rows (see _Block)
    score_idx: Tensor  # [S, H, 2*k*b]
    key_idx: Tensor  # [S, H, k, b]
    Eq: Tensor  # [S, v, d] query embeddings W_E + W_pos[-1]
    QK: Tensor  # [S, H, d, d]
    OV: Tensor  # [S, H, d, d]
    EqQK: Tensor  # [S, H, v, d]
    EkOV: Tensor  # [S, H*(v+k), d]
    pattern: Tensor  # [S, H, k, b] attention weights
    mix: Tensor  # [S, H*(v+k), b] attention as weights on the rows of Ek
    resid: Tensor  # [S, b, d] the last position's residual stream
    logits: Tensor  # [S, b, v]


def _draw_block(gens: list[torch.Generator], cfg: ModelConfig, batch: int, n: int) -> _Block:
    """The next `n` training batches of every seed, exactly as `train` would draw them.

    One draw of n*batch sequences consumes a generator like n draws of `batch` sequences,
    so the stream of each seed is that of `train` (see `sample_batch`).
    """
    v, k = cfg.d_vocab, cfg.n_ctx
    tokens = torch.stack(
        [sample_batch(g, cfg, n * batch)[0].view(n, batch, k) for g in gens], dim=1
    )  # [n, S, b, k]
    s = len(gens)
    last = tokens[..., -1]  # [n, S, b]
    query_rows = (last + v * torch.arange(s)[:, None]).reshape(n, s * batch)
    base = (last * (v + k))[:, :, None, :]  # [n, S, 1, b]
    key_tokens = tokens.transpose(-1, -2).contiguous()  # [n, S, k, b]
    by_token = base + key_tokens
    by_position = base + (v + torch.arange(k))[:, None]  # [n, S, k, b]
    score_idx = torch.cat([by_token, by_position], dim=2).reshape(n, s, 1, 2 * k * batch)
    return _Block(key_tokens, tokens.amax(-1), query_rows, score_idx)


def _blocks(
    gens: list[torch.Generator], cfg: ModelConfig, recipe: TrainingRecipe
) -> Iterator[tuple[int, _Block, int]]:
    """(step, block, index in block) for every training step, drawing data block by block."""
    for start in range(0, recipe.steps, BLOCK_STEPS):
        n = min(BLOCK_STEPS, recipe.steps - start)
        block = _draw_block(gens, cfg, recipe.batch_size, n)
        for i in range(n):
            yield start + i, block, i


class _SeedStack:
    """The weights, gradients and AdamW state of S models trained in lockstep.

    Weights carry a leading seed axis: Ek = [W_E; W_pos] [S, v+k, d], W_Q, W_K, W_V
    [S, H, d, e], W_O [S, H, e, d], W_U [S, d, v]. Biases are not represented: the recipe
    keeps them frozen at zero, and adding a zero bias changes no value.

    `step` computes the per-seed mean loss of the model's forward pass and its gradient by
    hand, in a factorised form that is algebraically identical to `AttnOnlyTransformer`'s
    forward (only the order of floating-point operations differs):

        Eq   = W_E + W_pos[-1]                       residual of a token at the query position
        T_h  = Eq W_Q_h W_K_h^T [W_E; W_pos]^T       [v, v+k] query-key attention scores
        score_h[b, p] = (T_h[t_last, t_p] + T_h[t_last, v + p]) / sqrt(d_head)
        A_h[b] = sum_p softmax_p(score_h[b]) (onehot(t_p) | onehot(p))     [v+k]
        logits = (Eq[t_last] + sum_h A_h [W_E; W_pos] W_V_h W_O_h) W_U

    The sum over seeds of the per-seed losses is what is differentiated, so each seed's
    gradient is that of its own mean loss; AdamW is elementwise, so one optimizer over the
    stacked weights updates each seed as its own optimizer would.

    Storage: all weights of seed i live in row i of one flat [S, P] tensor (and its gradient
    in another), P padded to a multiple of `_ALIGN` floats. One fused AdamW call then updates
    every element with the same vectorised code, whatever the number of seeds, so a seed's
    result does not depend on which other seeds share its group (torch's kernels handle a
    tensor's last numel % vector-width elements with scalar code that rounds differently).
    """

    _ALIGN = 64  # floats: a multiple of every SIMD width torch uses

    def __init__(self, models: Sequence[AttnOnlyTransformer], recipe: TrainingRecipe) -> None:
        cfg = models[0].cfg
        self.cfg = cfg
        self.n_seeds = s = len(models)
        h, v, k, d, e = cfg.n_heads, cfg.d_vocab, cfg.n_ctx, cfg.d_model, cfg.d_head
        shapes = {
            "Ek": (v + k, d),
            "W_Q": (h, d, e),
            "W_K": (h, d, e),
            "W_V": (h, d, e),
            "W_O": (h, e, d),
            "W_U": (d, v),
        }
        sizes = [math.prod(shape) for shape in shapes.values()]
        width = -(-sum(sizes) // self._ALIGN) * self._ALIGN
        zeros = functools.partial(torch.zeros, dtype=models[0].W_E.dtype)
        self.flat = zeros(s, width)
        self.flat.grad = zeros(s, width)
        self.weights: dict[str, Tensor] = {}
        self.grads: dict[str, Tensor] = {}
        offset = 0
        for (name, shape), size in zip(shapes.items(), sizes, strict=True):
            self.weights[name] = self.flat[:, offset : offset + size].view(s, *shape)
            self.grads[name] = self.flat.grad[:, offset : offset + size].view(s, *shape)
            offset += size
        with torch.no_grad():
            for i, m in enumerate(models):
                self.weights["Ek"][i, :v] = m.W_E
                self.weights["Ek"][i, v:] = m.W_pos
                for name in ("W_Q", "W_K", "W_V", "W_O", "W_U"):
                    self.weights[name][i] = getattr(m, name)
        self.opt = _adamw([self.flat], recipe)
        # Work buffers reused every step: fresh multi-MB tensors would be page-faulted in
        # anew each step (glibc hands large blocks back to the OS), a sizeable extra cost.
        b = recipe.batch_size
        self._mix = zeros(s, h, v + k, b)  # A above, transposed
        self._g_mix = zeros(s, h * (v + k), b)
        self._query, self._resid, self._g_resid = (zeros(s, b, d) for _ in range(3))
        self._logits = zeros(s, b, v)
        self._grad_table = zeros(s, h, v * (v + k))  # gradient of T

    @torch.no_grad()
    def step(self, block: _Block, i: int, track: bool) -> tuple[Tensor, Tensor] | None:
        """One AdamW step of every seed on batch `i` of `block`.

        With `track`, returns the per-seed loss and accuracy [S] of the batch (before the
        update), computed as `train` does: the log1p-accurate loss and argmax accuracy.
        """
        fwd = self._forward(block, i)
        g_logits, stats = self._loss_gradient(fwd.logits, block.labels[i], track)
        self._backward(fwd, g_logits)
        self.opt.step()
        return stats

    def _forward(self, block: _Block, i: int) -> _Forward:
        """Weight tables (per seed, independent of the batch), then the batch's logits."""
        cfg = self.cfg
        s, h, v, k, d = self.n_seeds, cfg.n_heads, cfg.d_vocab, cfg.n_ctx, cfg.d_model
        vk, b = v + k, block.labels[i].shape[1]
        rows, score_idx = block.query_rows[i], block.score_idx[i].expand(s, h, 2 * k * b)
        key_idx = block.key_tokens[i][:, None].expand(s, h, k, b)
        Ek, W_Q, W_K, W_V, W_O, W_U = (
            self.weights[name] for name in ("Ek", "W_Q", "W_K", "W_V", "W_O", "W_U")
        )
        Eq = Ek[:, :v] + Ek[:, vk - 1 : vk]  # [S, v, d]
        QK = W_Q @ W_K.transpose(-1, -2)  # [S, H, d, d]
        OV = W_V @ W_O  # [S, H, d, d]
        EqQK = Eq[:, None] @ QK  # [S, H, v, d]
        T = EqQK @ Ek[:, None].transpose(-1, -2)  # [S, H, v, v+k]
        EkOV = (Ek[:, None] @ OV).view(s, h * vk, d)  # [S, H*(v+k), d]

        picked = T.view(s, h, v * vk).gather(-1, score_idx)  # [S, H, 2*k*b]
        scores = (picked[..., : k * b] + picked[..., k * b :]).view(s, h, k, b)
        pattern = scores.div_(cfg.attn_scale).softmax(dim=-2)  # [S, H, k, b]
        mix = self._mix.zero_()  # [S, H, v+k, b]: A above, transposed
        mix[:, :, v:] = pattern
        mix[:, :, :v].scatter_add_(2, key_idx, pattern)
        mix = mix.view(s, h * vk, b)
        query = torch.index_select(Eq.reshape(s * v, d), 0, rows, out=self._query.view(s * b, d))
        resid = torch.baddbmm(query.view(s, b, d), mix.transpose(1, 2), EkOV, out=self._resid)
        logits = torch.bmm(resid, W_U, out=self._logits)  # [S, b, v]
        return _Forward(rows, score_idx, key_idx, Eq, QK, OV, EqQK, EkOV, pattern, mix, resid,
                        logits)  # fmt: skip

    def _loss_gradient(
        self, logits: Tensor, labels: Tensor, track: bool
    ) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        """d(mean_b loss)/d logits = (softmax - onehot(label)) / b, computed in place in
        `logits`; with `track`, also the per-seed loss and accuracy of the batch."""
        s, b, v = logits.shape
        stats = None
        if track:
            accuracy = (logits.argmax(-1) == labels).float().mean(-1)
        shifted = logits.sub_(logits.amax(-1, keepdim=True))  # t = z - max z <= 0
        if track:
            t_label = shifted.gather(-1, labels[..., None]).squeeze(-1)
            off_max = shifted.neg().sign_()  # 1 where t < 0, 0 at the maxima
        ex = shifted.exp_()  # exactly 1 at the maxima
        if track:
            # sum_{j != argmax} exp(t_j): all terms but one maximum (ties add their 1s back)
            rest = (ex * off_max).sum(-1) + ((v - 1) - off_max.sum(-1))
            stats = ((rest.log1p() - t_label).mean(-1), accuracy)
        c = 1.0 / b  # sum_j ex_j = 1 + rest
        g_logits = ex.mul_(c / ex.sum(-1, keepdim=True))
        g_logits.scatter_add_(-1, labels[..., None], ex.new_full((s, b, 1), -c))
        return g_logits, stats

    def _backward(self, f: _Forward, g_logits: Tensor) -> None:
        """Gradients of every weight, written into `self.grads` (the optimiser's view)."""
        cfg = self.cfg
        s, h, v, k, d = self.n_seeds, cfg.n_heads, cfg.d_vocab, cfg.n_ctx, cfg.d_model
        vk, b = v + k, g_logits.shape[1]
        Ek, W_Q, W_K, W_V, W_O, W_U = (
            self.weights[name] for name in ("Ek", "W_Q", "W_K", "W_V", "W_O", "W_U")
        )
        g_W_U = f.resid.transpose(1, 2) @ g_logits  # [S, d, v]
        g_resid = torch.bmm(g_logits, W_U.transpose(1, 2), out=self._g_resid)  # [S, b, d]
        g_mix = torch.bmm(f.EkOV, g_resid.transpose(1, 2), out=self._g_mix).view(s, h, vk, b)
        g_EkOV = (f.mix @ g_resid).view(s, h, vk, d)
        g_pattern = g_mix[:, :, :v].gather(2, f.key_idx) + g_mix[:, :, v:]  # [S, H, k, b]
        g_scores = f.pattern * (g_pattern - (f.pattern * g_pattern).sum(-2, keepdim=True))
        g_scores = g_scores.div_(cfg.attn_scale).view(s, h, k * b)
        g_T = self._grad_table.zero_()
        g_T.scatter_add_(-1, f.score_idx[..., : k * b], g_scores)
        g_T.scatter_add_(-1, f.score_idx[..., k * b :], g_scores)
        g_T = g_T.view(s, h, v, vk)
        g_EqQK = g_T @ Ek[:, None]  # [S, H, v, d]
        g_Ek = torch.einsum("shqr,shqf->srf", g_T, f.EqQK)
        g_Ek += torch.einsum("shrf,shgf->srg", g_EkOV, f.OV)
        g_OV = Ek[:, None].transpose(-1, -2) @ g_EkOV  # [S, H, d, d]
        g_Eq = torch.einsum("shqf,shgf->sqg", g_EqQK, f.QK)  # [S, v, d]
        g_QK = f.Eq[:, None].transpose(-1, -2) @ g_EqQK  # [S, H, d, d]
        g_Eq.view(s * v, d).index_add_(0, f.rows, g_resid.view(s * b, d))
        g_Ek[:, :v] += g_Eq
        g_Ek[:, vk - 1] += g_Eq.sum(1)
        grads = self.grads
        grads["Ek"].copy_(g_Ek)
        grads["W_Q"].copy_(g_QK @ W_K)
        grads["W_K"].copy_(g_QK.transpose(-1, -2) @ W_Q)
        grads["W_V"].copy_(g_OV @ W_O.transpose(-1, -2))
        grads["W_O"].copy_(W_V.transpose(-1, -2) @ g_OV)
        grads["W_U"].copy_(g_W_U)

    def export(self, models: Sequence[AttnOnlyTransformer]) -> None:
        """Copy the trained weights of seed i into models[i] (biases stay zero)."""
        v = self.cfg.d_vocab
        with torch.no_grad():
            for i, m in enumerate(models):
                m.W_E.copy_(self.weights["Ek"][i, :v])
                m.W_pos.copy_(self.weights["Ek"][i, v:])
                for name in ("W_Q", "W_K", "W_V", "W_O", "W_U"):
                    getattr(m, name).copy_(self.weights[name][i])


def train_many(
    cfg: ModelConfig,
    seeds: Sequence[int],
    recipe: TrainingRecipe = TrainingRecipe(),
    progress: bool = False,
    chunk: int | None = None,
) -> list[tuple[AttnOnlyTransformer, TrainingStats]]:
    """Train one model per seed, all at once: result i is `train(cfg, seeds[i], recipe)`'s up
    to floating-point reassociation.

    Per seed, exactly as `train`: the initial weights of `build_model(cfg, model_seed(seed))`,
    the training stream seeded with `train_stream_seed(seed)`, the mean log1p-accurate loss
    over the seed's batch, AdamW with the recipe's hyper-parameters, biases frozen at zero,
    and the same statistics (last 100 training steps; `evaluate_stream` on the held-out
    stream). Seeds are split into groups of near-equal size, at most `chunk` each (default
    `DEFAULT_CHUNK`), that run one after another; a group trains in lockstep with stacked
    weights and one vectorised forward/backward per step. Memory: ~0.8 MB per seed of a
    group at paper size.

    Differences from `train`, all at the level of float32 rounding in each step: the forward
    pass is evaluated in a factorised order (see `_SeedStack`), its gradient is written by
    hand, and AdamW uses torch's fused kernel. Caveat: where training is chaotic (paper-size
    models over 3000 steps) such differences grow, exactly as a 1-ulp change to one initial
    weight does under `train` itself, so final weights then agree with `train`'s only in
    distribution (measured: ~0.1 max weight difference, exact accuracy within ~2e-4); on
    small models they stay at rounding level.

    Deterministic: runs single-threaded like `train`, so the same call gives bit-identical
    weights; a seed's result does not depend on `chunk` or on the other seeds of its group
    (no cross-seed reductions; padded storage keeps AdamW's rounding position-independent).
    `TrainingStats.seconds` is the wall time of the seed's group divided by its size.

    Returns independent models (with their statistics) in the order of `seeds`.
    """
    chunk = DEFAULT_CHUNK if chunk is None else chunk
    if chunk < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
    seeds = list(seeds)
    if not seeds:
        return []
    # Groups of near-equal size, at most `chunk` each (151 seeds -> 51, 50, 50): the result
    # of a seed does not depend on its group, and even groups keep the vector width high.
    n_groups = -(-len(seeds) // chunk)
    bounds = [len(seeds) * g // n_groups for g in range(n_groups + 1)]
    results: list[tuple[AttnOnlyTransformer, TrainingStats]] = []
    with single_threaded():
        for lo, hi in itertools.pairwise(bounds):
            desc = f"train seeds {lo + 1}-{hi} of {len(seeds)}"
            results += _train_group(cfg, seeds[lo:hi], recipe, progress, desc)
    return results


def _train_group(
    cfg: ModelConfig, seeds: list[int], recipe: TrainingRecipe, progress: bool, desc: str
) -> list[tuple[AttnOnlyTransformer, TrainingStats]]:
    """`train_many` for one group of seeds trained in lockstep."""
    start = time.perf_counter()
    models = [build_model(cfg, seed=model_seed(seed)) for seed in seeds]
    stack = _SeedStack(models, recipe)
    gens = [torch.Generator().manual_seed(train_stream_seed(seed)) for seed in seeds]
    recent_loss, recent_acc = [], []
    for step, block, i in tqdm(
        _blocks(gens, cfg, recipe),
        total=recipe.steps,
        desc=desc,
        unit="step",
        disable=not progress,
        leave=False,
    ):
        stats = stack.step(block, i, track=step >= recipe.steps - 100)
        if stats is not None:
            recent_loss.append(stats[0])
            recent_acc.append(stats[1])
    stack.export(models)
    # [S, n] rows: each seed's mean is reduced like `train`'s, whatever the group size.
    train_loss = torch.stack(recent_loss, dim=1).mean(1) if recent_loss else None
    train_acc = torch.stack(recent_acc, dim=1).mean(1) if recent_acc else None
    tests = [
        evaluate_stream(m, heldout_stream_seed(seed), recipe.test_samples)
        for m, seed in zip(models, seeds, strict=True)
    ]
    seconds = (time.perf_counter() - start) / len(seeds)
    return [
        (
            m,
            TrainingStats(
                train_loss=float(train_loss[j]) if train_loss is not None else float("nan"),
                train_accuracy=float(train_acc[j]) if train_acc is not None else float("nan"),
                test_loss=test_loss,
                test_accuracy=test_acc,
                seconds=seconds,
            ),
        )
        for j, (m, (test_loss, test_acc)) in enumerate(zip(models, tests, strict=True))
    ]
