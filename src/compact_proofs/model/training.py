"""The paper's training recipe for Max-of-K models (SPEC §1.3–§1.7).

AdamW (lr 1e-3, betas (0.9, 0.999), weight decay 0.01), batch 128, 3000 steps of fresh
i.i.d. uniform sequences from a generator seeded with reseed(reseed(seed, "dataset_seed"),
"train"), biases frozen at zero, TransformerLens "gpt2" initialisation with model seed
reseed(seed, "model"), and the log1p-accurate log-softmax loss at the last position.

Deterministic: training runs single-threaded on the CPU, so the same call gives bit-identical
weights on every run and machine with the same torch build.

`compact_proofs.model.batched_training.train_many` trains many seeds at once.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from compact_proofs.model.losses import max_of_k_loss
from compact_proofs.model.seeds import heldout_stream_seed, model_seed, train_stream_seed
from compact_proofs.model.transformer import AttnOnlyTransformer, ModelConfig, build_model


@dataclass(frozen=True)
class TrainingRecipe:
    """Hyper-parameters of the paper's recipe (the defaults are the paper's)."""

    steps: int = 3000
    batch_size: int = 128
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.01
    test_samples: int = 1024


@dataclass(frozen=True)
class TrainingStats:
    """Loss/accuracy over the last 100 training batches and on the 1024-sample test stream."""

    train_loss: float
    train_accuracy: float
    test_loss: float
    test_accuracy: float
    seconds: float


def sample_batch(
    gen: torch.Generator, cfg: ModelConfig, n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """n i.i.d. uniform sequences [n, n_ctx] and their labels (the max token).

    Drawing [n, n_ctx] at once consumes the generator exactly like n draws of size (n_ctx,).
    """
    tokens = torch.randint(0, cfg.d_vocab, (n, cfg.n_ctx), generator=gen)
    return tokens, tokens.max(dim=-1).values


@contextmanager
def single_threaded():
    """Run torch single-threaded (deterministic reductions; faster for tiny ops)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train(
    cfg: ModelConfig, seed: int, recipe: TrainingRecipe = TrainingRecipe(), progress: bool = False
) -> tuple[AttnOnlyTransformer, TrainingStats]:
    """Train one model with top-level seed `seed`. Bit-identical across runs."""
    start = time.perf_counter()
    with single_threaded():
        model = build_model(cfg, seed=model_seed(seed))
        trainable = [p for p in model.parameters() if p.requires_grad]  # biases are frozen
        opt = torch.optim.AdamW(
            trainable,
            lr=recipe.lr,
            betas=recipe.betas,
            weight_decay=recipe.weight_decay,
            foreach=False,
        )
        gen = torch.Generator().manual_seed(train_stream_seed(seed))
        recent_loss, recent_acc = [], []
        for step in tqdm(
            range(recipe.steps),
            desc=f"train seed {seed}",
            unit="step",
            disable=not progress,
            leave=False,
        ):
            tokens, labels = sample_batch(gen, cfg, recipe.batch_size)
            logits = model(tokens)
            loss = max_of_k_loss(logits, labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step >= recipe.steps - 100:
                recent_loss.append(loss.detach())
                recent_acc.append((logits.detach().argmax(-1) == labels).float().mean())
        test_loss, test_acc = evaluate_stream(model, heldout_stream_seed(seed), recipe.test_samples)
    stats = TrainingStats(
        train_loss=float(torch.stack(recent_loss).mean()) if recent_loss else float("nan"),
        train_accuracy=float(torch.stack(recent_acc).mean()) if recent_acc else float("nan"),
        test_loss=test_loss,
        test_accuracy=test_acc,
        seconds=time.perf_counter() - start,
    )
    return model, stats


@torch.no_grad()
def evaluate_stream(model: AttnOnlyTransformer, stream_seed: int, n: int) -> tuple[float, float]:
    """Loss and accuracy on n sequences of the stream seeded with `stream_seed`."""
    gen = torch.Generator().manual_seed(stream_seed)
    tokens, labels = sample_batch(gen, model.cfg, n)
    logits = model(tokens)
    return float(max_of_k_loss(logits, labels)), float((logits.argmax(-1) == labels).float().mean())


def provenance(
    cfg: ModelConfig, seed: int, recipe: TrainingRecipe, stats: TrainingStats
) -> dict[str, Any]:
    """Provenance record stored in the model file's metadata."""
    return {
        "seed": seed,
        "model_seed": model_seed(seed),
        "train_stream_seed": train_stream_seed(seed),
        "recipe": {"name": "gross-et-al-2024-max-of-k", **asdict(recipe)},
        "torch_version": torch.__version__,
        "training": asdict(stats),
    }
