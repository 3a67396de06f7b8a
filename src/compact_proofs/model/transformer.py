"""The one-layer, attention-only transformer of the Max-of-K setting (SPEC §1.1–§1.3).

Parameter names and shapes follow TransformerLens so that interpretability researchers can
read them at a glance (row-vector convention: activations are rows, weights act on the right):

    W_E   [d_vocab, d_model]          W_pos [n_ctx, d_model]
    W_Q, W_K, W_V [n_heads, d_model, d_head]     b_Q, b_K, b_V [n_heads, d_head]
    W_O   [n_heads, d_head, d_model]  b_O   [d_model]
    W_U   [d_model, d_vocab]          b_U   [d_vocab]

There is no LayerNorm and no MLP. Attention is causal and scaled by sqrt(d_head); the
prediction is read at the last position only (SPEC §1.2), which attends to every position.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

WEIGHT_NAMES = ("W_E", "W_pos", "W_Q", "W_K", "W_V", "W_O", "W_U")
BIAS_NAMES = ("b_Q", "b_K", "b_V", "b_O", "b_U")
# TransformerLens registers W_Q, W_O, b_Q, b_O before W_K, W_V, b_K, b_V, so its "gpt2"
# initialisation draws the weights in this order (SPEC §1.3).
INIT_ORDER = ("W_E", "W_pos", "W_Q", "W_O", "W_K", "W_V", "W_U")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a one-layer attention-only transformer (the paper: 64, 4, 32, 32, 1)."""

    d_vocab: int = 64
    n_ctx: int = 4
    d_model: int = 32
    d_head: int = 32
    n_heads: int = 1

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

    @property
    def attn_scale(self) -> float:
        """TransformerLens divides attention scores by sqrt(d_head)."""
        return math.sqrt(self.d_head)

    @property
    def n_inputs(self) -> int:
        """Size of the input space, d_vocab ** n_ctx (an exact Python int)."""
        return self.d_vocab**self.n_ctx

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Expected shape of every parameter, keyed by its short name."""
        v, k, d, h, e = self.d_vocab, self.n_ctx, self.d_model, self.n_heads, self.d_head
        return {
            "W_E": (v, d),
            "W_pos": (k, d),
            "W_Q": (h, d, e),
            "W_K": (h, d, e),
            "W_V": (h, d, e),
            "W_O": (h, e, d),
            "W_U": (d, v),
            "b_Q": (h, e),
            "b_K": (h, e),
            "b_V": (h, e),
            "b_O": (d,),
            "b_U": (v,),
        }


class AttnOnlyTransformer(nn.Module):
    """One attention layer, no MLP, no LayerNorm; logits at the last position.

    Biases exist (TransformerLens has them) and are honoured by the forward pass; the
    paper's recipe keeps them frozen at zero.
    """

    def __init__(self, cfg: ModelConfig, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.cfg = cfg
        for name, shape in cfg.shapes().items():
            is_bias = name.startswith("b_")
            self.register_parameter(
                name, nn.Parameter(torch.zeros(shape, dtype=dtype), requires_grad=not is_bias)
            )

    # -- parameters ----------------------------------------------------------------------

    def init_weights(self, seed: int) -> None:
        """TransformerLens "gpt2" init: W_* ~ N(0, (0.8/sqrt(d_model))^2), biases zero.

        Seeds torch's global RNG with `seed` (as TransformerLens does) and draws the weights
        in registration order `INIT_ORDER` (SPEC §1.3).
        """
        std = 0.8 / math.sqrt(self.cfg.d_model)
        torch.manual_seed(seed)
        with torch.no_grad():
            for name in INIT_ORDER:
                nn.init.normal_(getattr(self, name), std=std)
            for name in BIAS_NAMES:
                getattr(self, name).zero_()

    def weights(self) -> dict[str, Tensor]:
        """All parameters by short name (W_E, ..., b_U), detached."""
        return {name: p.detach() for name, p in self.named_parameters()}

    def nonzero_biases(self) -> list[str]:
        """Short names of bias tensors that are not exactly zero."""
        return [n for n in BIAS_NAMES if bool(getattr(self, n).detach().ne(0).any())]

    # -- forward -------------------------------------------------------------------------

    def forward(self, tokens: Tensor) -> Tensor:
        """Logits at the last position, shape [batch, d_vocab], for int tokens [batch, n_ctx].

        Only the last query row of attention is computed: the prediction depends on nothing
        else (the last position attends to all positions, so the causal mask is inert).
        """
        resid = self.W_E[tokens] + self.W_pos[: tokens.shape[-1]]  # [b, k, d]
        query = resid[:, -1]  # [b, d]
        q = torch.einsum("bd,hde->bhe", query, self.W_Q) + self.b_Q  # [b, h, e]
        k = torch.einsum("bpd,hde->bhpe", resid, self.W_K) + self.b_K[:, None]  # [b, h, k, e]
        v = torch.einsum("bpd,hde->bhpe", resid, self.W_V) + self.b_V[:, None]
        scores = torch.einsum("bhe,bhpe->bhp", q, k) / self.cfg.attn_scale
        pattern = scores.softmax(dim=-1)
        z = torch.einsum("bhp,bhpe->bhe", pattern, v)
        out = torch.einsum("bhe,hed->bd", z, self.W_O) + self.b_O
        return (query + out) @ self.W_U + self.b_U

    def forward_all_positions(self, tokens: Tensor) -> Tensor:
        """Logits at every position, shape [batch, n_ctx, d_vocab] (causal attention).

        This is the full black-box computation a TransformerLens model performs; the brute
        force proof's length is measured on it (SPEC §7.1).
        """
        n = tokens.shape[-1]
        resid = self.W_E[tokens] + self.W_pos[:n]  # [b, k, d]
        q = torch.einsum("bpd,hde->bhpe", resid, self.W_Q) + self.b_Q[:, None]
        k = torch.einsum("bpd,hde->bhpe", resid, self.W_K) + self.b_K[:, None]
        v = torch.einsum("bpd,hde->bhpe", resid, self.W_V) + self.b_V[:, None]
        scores = torch.einsum("bhie,bhje->bhij", q, k) / self.cfg.attn_scale
        causal = torch.ones(n, n, dtype=torch.bool, device=tokens.device).triu(1)
        scores = scores.masked_fill(causal, float("-inf"))
        pattern = scores.softmax(dim=-1)
        z = torch.einsum("bhij,bhje->bhie", pattern, v)
        out = torch.einsum("bhie,hed->bid", z, self.W_O) + self.b_O
        return (resid + out) @ self.W_U + self.b_U


def build_model(cfg: ModelConfig, seed: int | None = None) -> AttnOnlyTransformer:
    """A fresh model; with `seed`, initialised as TransformerLens would with that model seed."""
    model = AttnOnlyTransformer(cfg)
    if seed is not None:
        model.init_weights(seed)
    return model
