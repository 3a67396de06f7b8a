"""The 100 sub-cubic strategies: search -> certificate -> verification (SPEC §6).

Certificate payload (JSON):
    {"config": "<strategy id>",
     "directions": {"query_dir": T[v], "key_dir": T[v], "query_dir2": T[v], "key_dir2": T[v],
                    "u_Q": T[d], "u_K": T[d], "W_EP_direction": T[d]},
     "min_gaps": T[v, v, k] (unsigned integers >= 1)}

Verification trusts nothing in it beyond its type: any direction vectors give a sound bound
(decompose.py), and any gaps >= 1 give a sound count (bounds.py); a malformed payload is
rejected with CertificateError. Directions of absurd size are rescaled first (`_tame_scales`),
which keeps float64 mode clear of catastrophic cancellation.
"""

from __future__ import annotations

import hashlib
from dataclasses import fields
from typing import Any

import torch
from torch import Tensor

from compact_proofs.errors import CertificateError
from compact_proofs.model.transformer import AttnOnlyTransformer, ModelConfig
from compact_proofs.proofs.base import Strategy, Verdict
from compact_proofs.proofs.lemmas import lemma
from compact_proofs.proofs.subcubic.bounds import (
    SOUND,
    CellIndex,
    GapFreeTables,
    count_correct,
    count_undecided,
    gap_free_tables,
    proven_mask,
    subcubic_bounds,
)
from compact_proofs.proofs.subcubic.config import TABLE1_ROW, SubcubicConfig
from compact_proofs.proofs.subcubic.decompose import (
    Directions,
    QKDecomposition,
    Weights64,
    decompose_eqke,
    weights64,
)
from compact_proofs.proofs.subcubic.search import (
    find_directions,
    find_min_gaps,
    find_min_gaps_many,
)
from compact_proofs.proofs.tensor_codec import decode_tensor, encode_tensor, update_digest
from compact_proofs.soundness import interval as iv
from compact_proofs.soundness.arithmetic import Arithmetic
from compact_proofs.soundness.interval import Num

DIRECTION_NAMES = tuple(f.name for f in fields(Directions))


def gap_dtype(v: int) -> torch.dtype:
    """Smallest unsigned-enough integer dtype for gaps in 1..v."""
    return torch.uint8 if v <= 255 else torch.int16 if v <= 32767 else torch.int32


class SubcubicStrategy(Strategy):
    """One sub-cubic configuration as a proof strategy."""

    def __init__(self, config: SubcubicConfig) -> None:
        self.config = config
        self.id = config.id
        self.group = config.group
        self.complexity = config.complexity
        self.leading_complexity = config.leading_complexity
        self.description = (
            f"sub-cubic: EU {config.eu}, attention {config.attention}, "
            f"attention error {config.error} (Table 1 row-set: {config.group})"
        )

    def unexplained_dims(self, cfg: ModelConfig) -> int:
        return self.config.unexplained_dims(cfg.d_vocab, cfg.d_model)

    def describe(self, cfg: ModelConfig) -> dict[str, Any]:
        c = self.config
        return {
            **super().describe(cfg),
            "tricks": c.tricks,
            "table1_row": TABLE1_ROW[c.group],
            "eu_handling": c.eu,
            "attention_handling": c.attention,
            "attention_error_handling": c.error,
        }

    # -- search ---------------------------------------------------------------------------

    def search(self, model: AttnOnlyTransformer) -> dict[str, Any]:
        w = weights64(model)
        dirs = find_directions(w)
        return self._payload(model, dirs, find_min_gaps(w, dirs, self.config))

    def _payload(self, model: AttnOnlyTransformer, dirs: Directions, gaps: Tensor) -> dict:
        return {
            "config": self.id,
            "directions": {n: encode_tensor(getattr(dirs, n)) for n in DIRECTION_NAMES},
            "min_gaps": encode_tensor(gaps.to(gap_dtype(model.cfg.d_vocab))),
        }

    # -- verification (the proof) ---------------------------------------------------------

    def verify_in(
        self, model: AttnOnlyTransformer, payload: dict[str, Any], arith: Arithmetic
    ) -> Verdict:
        """Memory O(v^2 k + v d + d^2) floats (tables over cells (q, m, c)), whatever the
        weights' values."""
        B, gaps, cells = self._bounds(model, payload, arith)
        correct = count_correct(B, gaps, cells, model.cfg.n_ctx, SOUND)
        undecided = count_undecided(B, cells)
        details = {"B": B, "cells": cells, "gaps": gaps}
        return Verdict(correct, model.cfg.n_inputs, details, undecided, arith)

    def proven_in(
        self,
        model: AttnOnlyTransformer,
        payload: dict[str, Any],
        tokens: Tensor,
        arith: Arithmetic,
    ) -> Tensor:
        B, gaps, cells = self._bounds(model, payload, arith)
        return proven_mask(B, gaps, cells, tokens.to(B.device))

    def _bounds(
        self, model: AttnOnlyTransformer, payload: dict[str, Any], arith: Arithmetic
    ) -> tuple[Num, Tensor, CellIndex]:
        """B [q, m, c] (upper bounds on the wrong-logit margins, enclosed in `arith`), the
        gaps and the cells."""
        self._check_config(payload)
        cfg = self.config
        w, dirs, qk, tables = lemma(
            lambda: self._decomposition_key(model, payload, arith),
            lambda: self._decomposition(model, payload, arith),
        )
        gaps = self._parse_gaps(payload, w)
        B, cells = subcubic_bounds(
            w, qk, gaps, w.E_q, cfg.eu, dirs.W_EP_direction, cfg.uses_mean_diff, SOUND,
            tables=tables,
        )  # fmt: skip
        return B, gaps, cells

    def _decomposition(
        self, model: AttnOnlyTransformer, payload: dict[str, Any], arith: Arithmetic
    ) -> tuple[Weights64, Directions, QKDecomposition, GapFreeTables]:
        """The weights, the certificate's directions, the EQKE decomposition and the tables
        that need neither gaps nor EU handling: a lemma of the ten configurations with this
        attention-error handling (proofs.lemmas)."""
        w = weights64(model, arith)
        dirs = self._parse_directions(payload, w)
        qk = decompose_eqke(w, dirs, self.config.error, self.config.route, arith)
        return w, dirs, qk, gap_free_tables(w, qk)

    def _decomposition_key(
        self, model: AttnOnlyTransformer, payload: dict[str, Any], arith: Arithmetic
    ) -> tuple[Any, ...]:
        """Everything `_decomposition` reads: the model, the directions, the arithmetic and
        the attention-error handling."""
        digest = hashlib.sha256(repr((model.cfg, payload.get("directions"))).encode())
        for name, t in sorted(model.weights().items()):  # exact values, in their own dtype
            digest.update(name.encode())
            update_digest(digest, t)
        error = (self.config.error, self.config.route)
        return ("sub-cubic decomposition", digest.hexdigest(), arith, error)

    def parse_certificate(self, payload: dict[str, Any], w: Weights64) -> tuple[Directions, Tensor]:
        """Validate the payload's types and shapes; never its values' optimality."""
        self._check_config(payload)
        return self._parse_directions(payload, w), self._parse_gaps(payload, w)

    def _check_config(self, payload: dict[str, Any]) -> None:
        if payload.get("config") != self.id:
            raise CertificateError(
                f"certificate payload is for {payload.get('config')!r}, "
                f"not for strategy {self.id!r}"
            )

    def _parse_directions(self, payload: dict[str, Any], w: Weights64) -> Directions:
        v, d = w.W_E.shape
        try:
            raw = payload["directions"]
            dirs = {n: decode_tensor(raw[n]).to(torch.float64) for n in DIRECTION_NAMES}
        except (KeyError, TypeError):
            raise _lacks() from None
        for name, t in dirs.items():
            size = d if name in ("u_Q", "u_K", "W_EP_direction") else v
            if tuple(t.shape) != (size,) or not bool(torch.isfinite(t).all()):
                raise CertificateError(
                    f"certificate direction {name} must be {size} finite numbers for this model"
                )
        dirs = _tame_scales(dirs, w)
        return Directions(**{n: t.to(w.W_E.device) for n, t in dirs.items()})

    def _parse_gaps(self, payload: dict[str, Any], w: Weights64) -> Tensor:
        v, k = w.W_E.shape[0], w.W_pos.shape[0]
        try:
            gaps = decode_tensor(payload["min_gaps"])
        except (KeyError, TypeError):
            raise _lacks() from None
        if (
            tuple(gaps.shape) != (v, v, k)
            or gaps.dtype.is_floating_point
            or gaps.dtype == torch.bool
            or bool((gaps < 1).any())
        ):
            raise CertificateError(
                f"certificate min_gaps must be integers >= 1 of shape "
                f"[{v}, {v}, {k}] for this model"
            )
        return gaps.to(device=w.W_E.device, dtype=torch.int64)


def _lacks() -> CertificateError:
    return CertificateError(
        "sub-cubic certificate lacks directions or min_gaps; "
        "regenerate it with `compact-proofs prove`"
    )


def _tame_scales(dirs: dict[str, Tensor], w: Weights64) -> dict[str, Tensor]:
    """Rescale certificate directions whose size is far from anything search produces.

    Any real vectors give a sound bound in exact arithmetic, so rescaling never affects
    soundness; it keeps float64 verification away from catastrophic cancellation when a
    certificate carries absurd magnitudes (directions of ~1e30 made float64 mode certify
    misclassified inputs: docs/soundness.md). Search's output is left bit-for-bit unchanged:
    its unit directions have norm 1 up to rounding, and its EU centre u^T W_EP (u a unit
    vector) has norm <= sigma_1(W_EP) <= ||W_EP||_F.
    """
    out = {}
    for name, t in dirs.items():
        norm = float(torch.linalg.vector_norm(t))
        if name == "W_EP_direction":
            limit = float(iv.upper(iv.frobenius(w.E_bar)))
            out[name] = t * (limit / norm) if norm > limit else t
        else:
            out[name] = t / norm if norm > 0 and not 0.5 <= norm <= 2.0 else t
    return out


def search_many(
    model: AttnOnlyTransformer, strategies: list[SubcubicStrategy]
) -> list[dict[str, Any]]:
    """The payloads `strategy.search(model)` gives for each strategy (the same certificates),
    searched together (`find_min_gaps_many`: chunk by chunk, sharing what the configurations
    share). Pass configurations that differ only in EU handling (`search_group`): memory
    holds one [v, v, k] table of gaps per strategy."""
    w = weights64(model)
    dirs = find_directions(w)
    gaps = find_min_gaps_many(w, dirs, [s.config for s in strategies])
    return [s._payload(model, dirs, g) for s, g in zip(strategies, gaps, strict=True)]


def search_group(strategy: SubcubicStrategy) -> tuple[str, str]:
    """The key of the strategies whose searches share most work: the same attention and
    attention-error handling (their five EU handlings)."""
    return strategy.config.attention, strategy.config.error
