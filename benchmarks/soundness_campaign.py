"""Adversarial soundness campaign: every strategy, every input, against exact ground truth.

    python benchmarks/soundness_campaign.py --minutes 10
    python benchmarks/soundness_campaign.py --minutes 1 --seed 7 --json out.json

For a stream of tiny adversarial models (all v^k <= 1296 inputs enumerable), and for EVERY one
of the registered strategies, the campaign searches a certificate, asks which inputs the proof
certifies, and checks every certified input one by one against the exact-arithmetic verdict
(`compact_proofs.soundness.exact.ExactReference`), in four modes:

* `default`: what `prove`/`verify` do without flags (ball arithmetic, intervals where balls
  leave a decision undecided);
* `ball` and `interval`: each rigorous arithmetic on its own (`proven_in`, `verify_in`), so
  the interval path is exercised even where the default never needs it;
* `fast` (`--fast`, rigorous=False): plain float64, also compared with the float64 forward
  verdict (`compact_proofs.proofs.exhaustive.is_correct`).

Sub-cubic certificates are also tampered with (random, zero and huge directions; gaps all 1,
random, the largest encodable) and must stay sound. It also checks that
`verify(...).correct_count` equals the number of inputs `proven` certifies.

An input counts as *unsound* when the proof certifies it and the reference says it is not
correct (for the exact reference: WRONG, or UNDECIDED, reported separately). Every unsound
result is saved (model file + certificate JSON) under --unsound-dir and listed in the summary.

Model families (see FAMILIES): random (log-uniform scale), non-zero biases, near-ideal solvers
with large load-bearing biases (every strategy, the sub-cubic ones included, folds biases in;
on these the proofs certify much of a biased model), several heads, near-ideal solvers,
near-tie logits (nearly or exactly equal unembedding columns), near-uniform attention,
position-dominated attention, weight tensors rescaled by 1e+-3 or 1e+-6 relative to each other,
function-preserving power-of-two rescalings across float32's whole range (extreme scales),
duplicated tokens, briefly trained models (almost but not quite correct), other initialisations
(uniform, kaiming, orthogonal, sparse, heavy-tailed, small integers, coarsely quantised),
float64-cancellation models (huge residual/score components that cancel exactly in real
arithmetic but not in float64), and float64-underflow models (attention scores spanning 600-800
nats with d_head = 1, so unnormalised weights and their products fall below the subnormal
range).

Output: a progress line about every 20 s, then a summary table per mode and certificate kind,
and a JSON summary (--json).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import random
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))

from compact_proofs.errors import CertificateError, UnsupportedModelError  # noqa: E402
from compact_proofs.model.file_format import save_model  # noqa: E402
from compact_proofs.model.training import TrainingRecipe, train  # noqa: E402
from compact_proofs.model.transformer import AttnOnlyTransformer, ModelConfig  # noqa: E402
from compact_proofs.proofs.exhaustive import all_sequences, forward_margin, is_correct  # noqa: E402
from compact_proofs.proofs.registry import (  # noqa: E402
    STRATEGIES,
    Strategy,
    resolve_strategies,
)
from compact_proofs.proofs.tensor_codec import decode_tensor, encode_tensor  # noqa: E402
from compact_proofs.soundness.arithmetic import Arithmetic  # noqa: E402
from compact_proofs.soundness.exact import CORRECT, UNDECIDED, WRONG, ExactReference  # noqa: E402

from models import (  # noqa: E402
    float64_cancellation,
    ideal_model,
    large_bias_model,
    random_model,
    underflow_model,
)

MODES = ("fast", "default", "ball", "interval")
RIGOROUS_MODES = ("default", "ball", "interval")
TAMPERS = (
    "directions-random",
    "directions-zero",
    "directions-huge",
    "gaps-one",
    "gaps-random",
    "gaps-largest",
)
MAX_INPUTS = 1296  # 6^4: the exact reference stays well under a second per model
MAX_FINDINGS_JSON = 500  # findings listed one by one in the JSON summary (all are counted)

# -- model families ------------------------------------------------------------------------


@dataclass
class Case:
    """One model of the campaign and how it was made (enough to rebuild it)."""

    family: str
    name: str
    model: AttnOnlyTransformer
    params: dict[str, Any] = field(default_factory=dict)
    index: int = -1  # position in the campaign (set by the campaign)
    saved_dir: Path | None = None  # where its unsound results went (set by the campaign)
    saved_keys: set[tuple[str, str, str]] = field(default_factory=set)


def _seed(rng: random.Random) -> int:
    return rng.randrange(2**31)


def _small_cfg(rng: random.Random, n_heads: int = 1) -> ModelConfig:
    while True:
        v, k = rng.randint(2, 6), rng.randint(1, 4)
        if v**k <= MAX_INPUTS:
            break
    return ModelConfig(
        d_vocab=v, n_ctx=k, d_model=rng.randint(1, 7), d_head=rng.randint(1, 6), n_heads=n_heads
    )


def _ideal(rng: random.Random) -> tuple[AttnOnlyTransformer, dict[str, Any]]:
    v = rng.randint(2, 6)
    k = rng.randint(1, 4 if v <= 6 else 3)
    p = {
        "v": v,
        "k": k,
        "beta": 10 ** rng.uniform(-1.3, 1.3),
        "alpha": rng.uniform(0.5, 8.0),
        "noise": rng.choice([0.0, 0.02, 0.1, 0.3, 0.6]),
        "seed": _seed(rng),
        "pos_scale": rng.choice([0.0, 0.5, 3.0, 10.0]),
    }
    return ideal_model(**p), p


def _base(rng: random.Random) -> tuple[AttnOnlyTransformer, dict[str, Any]]:
    """A random or a near-ideal model to perturb."""
    if rng.random() < 0.5:
        model, p = _ideal(rng)
        return model, {"base": "ideal", **p}
    cfg, seed, scale = _small_cfg(rng), _seed(rng), 10 ** rng.uniform(-1, 1)
    return random_model(cfg, seed, scale), {"base": "random", **asdict(cfg), "seed": seed}


def fam_random(rng: random.Random) -> Case:
    cfg, seed, scale = _small_cfg(rng), _seed(rng), 10 ** rng.uniform(-2, 1.5)
    params = {**asdict(cfg), "seed": seed, "scale": scale}
    return Case("random", "", random_model(cfg, seed, scale), params)


def fam_biases(rng: random.Random) -> Case:
    cfg, seed, scale = _small_cfg(rng), _seed(rng), 10 ** rng.uniform(-1.5, 1)
    model = random_model(cfg, seed, scale, biases=True)
    return Case("biases", "", model, {**asdict(cfg), "seed": seed, "scale": scale})


def fam_large_biases(rng: random.Random) -> Case:
    """`models.large_bias_model`: a near-ideal solver whose biases are large and each
    load-bearing (b_Q softens the attention and reads positions, b_V, b_O, b_U penalise a
    token each), so that a proof ignoring one would certify misclassified inputs."""
    v = rng.randint(4, 6)
    p = {
        "v": v,
        "k": rng.randint(1, 4 if v <= 6 else 3),
        "seed": _seed(rng),
        "q_shift": rng.uniform(-1.9, 1.0),
        "penalty": rng.choice([0.0, 0.5, 1.0, 2.0, 3.0]),
        "pos_scale": rng.choice([0.0, 1.0, 2.0, 4.0]),
    }
    return Case("large biases", "", large_bias_model(**p), p)


def fam_multi_head(rng: random.Random) -> Case:
    cfg = _small_cfg(rng, n_heads=rng.randint(2, 3))
    seed, biases = _seed(rng), rng.random() < 0.5
    model = random_model(cfg, seed, 10 ** rng.uniform(-1, 1), biases=biases)
    return Case("multi-head", "", model, {**asdict(cfg), "seed": seed, "biases": biases})


def fam_ideal(rng: random.Random) -> Case:
    model, p = _ideal(rng)
    return Case("near-ideal", "", model, p)


def fam_near_tie_logits(rng: random.Random) -> Case:
    """Two unembedding columns equal up to eps (0: exact ties for every input with that max)."""
    model, p = _base(rng)
    v = model.cfg.d_vocab
    a, b = rng.sample(range(v), 2)
    eps = rng.choice([0.0, 2.0**-23, 1e-6, 1e-3])
    gen = torch.Generator().manual_seed(_seed(rng))
    with torch.no_grad():
        noise = torch.randn(model.cfg.d_model, generator=gen)
        model.W_U[:, a] = model.W_U[:, b] + eps * noise * model.W_U[:, b].abs().max()
    return Case("near-tie logits", "", model, {**p, "columns": [a, b], "eps": eps})


def fam_near_uniform_attention(rng: random.Random) -> Case:
    model, p = _base(rng)
    factor = rng.choice([0.0, 1e-7, 1e-4, 1e-2])
    with torch.no_grad():
        model.W_Q.mul_(factor)
    return Case("near-uniform attention", "", model, {**p, "W_Q_factor": factor})


def fam_position_dominated(rng: random.Random) -> Case:
    if rng.random() < 0.5:
        v = rng.randint(2, 6)
        k = rng.randint(2, 4)
        p = {"v": v, "k": k, "beta": rng.uniform(0.01, 0.5), "alpha": rng.uniform(1, 6)}
        p.update(pos_scale=rng.uniform(5, 50), noise=rng.choice([0.0, 0.05]), seed=_seed(rng))
        return Case("position-dominated attention", "", ideal_model(**p), p)
    model, p = _base(rng)
    factor = 10 ** rng.uniform(1, 2.5)
    with torch.no_grad():
        model.W_pos.mul_(factor)
    return Case("position-dominated attention", "", model, {**p, "W_pos_factor": factor})


def fam_scales(rng: random.Random) -> Case:
    """Some weight tensors rescaled by 10^+-3 or 10^+-6 relative to the others."""
    model, p = _base(rng)
    names = rng.sample(["W_E", "W_pos", "W_Q", "W_K", "W_V", "W_O", "W_U"], rng.randint(1, 3))
    factors = {n: 10.0 ** rng.choice([-6, -3, 3, 6]) for n in names}
    if rng.random() < 0.25:  # or the whole model
        factors = {n: 10.0 ** rng.choice([-6, 6]) for n in ["W_E", "W_pos", "W_U"]}
    with torch.no_grad():
        for n, f in factors.items():
            getattr(model, n).mul_(f)
    return Case("weight scales 1e+-3/1e+-6", "", model, {**p, "factors": factors})


def fam_extreme_scales(rng: random.Random) -> Case:
    """Power-of-two rescalings across the float32 range that leave the prediction unchanged
    in exact arithmetic: W_E, W_pos by 2^e with W_Q, W_K by 2^-e (scores unchanged), W_V by
    2^b with W_O by 2^-b, W_U by 2^c (every logit scaled alike). Entries leaving float32's
    normal range become subnormal or overflow-free extremes, so the model may change a little;
    path matrices and their products then reach magnitudes near float64's limits."""
    model, p = _ideal(rng)
    e, b, c = rng.randint(-120, 100), rng.randint(-120, 100), rng.randint(-149, 100)
    factors = {"W_E": e, "W_pos": e, "W_Q": -e, "W_K": -e, "W_V": b, "W_O": -b, "W_U": c}
    with torch.no_grad():
        for n, x in factors.items():
            t = getattr(model, n)
            t.copy_((t.double() * 2.0**x).float())  # in float64: 2^x itself is a float32
    return Case("extreme scales", "", model, {"base": "ideal", **p, "log2_factors": factors})


def fam_duplicated_tokens(rng: random.Random) -> Case:
    model, p = _base(rng)
    v = model.cfg.d_vocab
    pairs = []
    with torch.no_grad():
        for _ in range(rng.randint(1, max(1, v // 2))):
            a, b = rng.sample(range(v), 2)
            model.W_E[a] = model.W_E[b]
            pairs.append([a, b])
        also_unembed = rng.random() < 0.3
        if also_unembed:  # fully interchangeable tokens: exact ties
            a, b = pairs[0]
            model.W_U[:, a] = model.W_U[:, b]
    return Case("duplicated tokens", "", model, {**p, "pairs": pairs, "W_U_too": also_unembed})


_TRAINED: dict[tuple[int, ...], AttnOnlyTransformer] = {}


def fam_trained(rng: random.Random) -> Case:
    """Briefly trained (almost but not quite correct), optionally perturbed a little."""
    v = rng.randint(4, 6)
    k = rng.randint(2, 4)
    d = rng.choice([4, 6, 8, 12])
    steps, seed = rng.choice([30, 80, 150, 300, 500]), rng.randint(0, 50)
    key = (v, k, d, steps, seed)
    if key not in _TRAINED:
        _TRAINED[key] = train(ModelConfig(v, k, d, d), seed, TrainingRecipe(steps=steps))[0]
    model = AttnOnlyTransformer(_TRAINED[key].cfg)
    model.load_state_dict(_TRAINED[key].state_dict())
    noise = rng.choice([0.0, 0.0, 1e-3, 3e-2])
    if noise:
        gen = torch.Generator().manual_seed(_seed(rng))
        with torch.no_grad():
            for name, t in model.weights().items():
                if name.startswith("W_"):
                    t.add_(noise * torch.randn(t.shape, generator=gen))
    p = {"v": v, "k": k, "d": d, "steps": steps, "seed": seed, "noise": noise}
    return Case("trained (few steps)", "", model, p)


def fam_other_init(rng: random.Random) -> Case:
    cfg = _small_cfg(rng)
    model = AttnOnlyTransformer(cfg)
    kind = rng.choice(
        ["uniform", "kaiming", "orthogonal", "sparse", "heavy-tailed", "integers", "quantised"]
    )
    seed = _seed(rng)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.weights().items():
            if not name.startswith("W_"):
                continue
            if kind == "uniform":
                t.copy_(torch.rand(t.shape, generator=gen) * 2 - 1)
            elif kind == "kaiming":
                t.copy_(torch.randn(t.shape, generator=gen) * math.sqrt(2 / t.shape[-2]))
            elif kind == "orthogonal":
                flat = t.reshape(-1, t.shape[-1])
                q, _ = torch.linalg.qr(torch.randn(max(flat.shape), max(flat.shape), generator=gen))
                flat.copy_(q[: flat.shape[0], : flat.shape[1]])
            elif kind == "sparse":
                mask = torch.rand(t.shape, generator=gen) < 0.3
                t.copy_(torch.randn(t.shape, generator=gen) * mask)
            elif kind == "heavy-tailed":  # Cauchy, clipped
                u = torch.rand(t.shape, generator=gen).clamp(1e-6, 1 - 1e-6)
                t.copy_(torch.tan(math.pi * (u - 0.5)).clamp(-1e3, 1e3))
            elif kind == "integers":
                t.copy_(torch.randint(-2, 3, t.shape, generator=gen).float())
            else:  # quantised to multiples of 1/4
                t.copy_((torch.randn(t.shape, generator=gen) * 4).round() / 4)
    return Case("other initialisations", kind, model, {**asdict(cfg), "kind": kind, "seed": seed})


def fam_cancellation(rng: random.Random) -> Case:
    """Float64 cancellation (`models.float64_cancellation`): +-H (2^20..2^50) in every logit
    and a constant S added to every score cancel exactly in real arithmetic, not in float64;
    optionally a near tie of size eps at the scale where float64 goes blind."""
    base, p = _base(rng)
    H = 2.0 ** rng.choice([20, 30, 40, 50])
    S = 2.0 ** rng.choice([0, 20, 40]) if rng.random() < 0.5 else 0.0
    use_bias = rng.random() < 0.3
    eps = rng.choice([0.0, 1e-9, 1e-7, 1e-5, 1e-3, 1e-2])
    near_tie = (*rng.sample(range(base.cfg.d_vocab), 2), eps) if eps else None
    model = float64_cancellation(base, H, S, use_bias, near_tie)
    p = {**p, "H": H, "S": S, "bias": use_bias, "eps": eps}
    return Case("float64 cancellation", "", model, p)


def fam_underflow(rng: random.Random) -> Case:
    """Float64 underflow (`models.underflow_model`): key scores -B for tokens >= 1 and -A at
    the non-query positions (hundreds of nats), a strong OV vote C of token 0 and a direct
    path of size `direct` (1e-70..1e-40, products of float32 weights). Half of the models
    use the ranges that made float64 mode unsound (A 745-752, B 600-620)."""
    v, k = rng.randint(2, 4), rng.randint(2, 4)
    critical = rng.random() < 0.5
    p = {
        "v": v,
        "k": k,
        "A": rng.uniform(745, 752) if critical else rng.uniform(600, 800),
        "B": rng.uniform(600, 620) if critical else rng.uniform(580, 760),
        "C": 10 ** rng.uniform(0, 9),
        "direct": 10 ** rng.uniform(-70, -40),
        "seed": _seed(rng),
    }
    return Case("float64 underflow", "critical" if critical else "", underflow_model(**p), p)


FAMILIES: dict[str, Callable[[random.Random], Case]] = {
    "random": fam_random,
    "biases": fam_biases,
    "large biases": fam_large_biases,
    "multi-head": fam_multi_head,
    "near-ideal": fam_ideal,
    "near-tie logits": fam_near_tie_logits,
    "near-uniform attention": fam_near_uniform_attention,
    "position-dominated attention": fam_position_dominated,
    "weight scales": fam_scales,
    "extreme scales": fam_extreme_scales,
    "duplicated tokens": fam_duplicated_tokens,
    "trained": fam_trained,
    "other initialisations": fam_other_init,
    "float64 cancellation": fam_cancellation,
    "float64 underflow": fam_underflow,
}


# -- references and checks -----------------------------------------------------------------


def _proven(
    strategy: Strategy, model: AttnOnlyTransformer, payload: dict, tokens: torch.Tensor, mode: str
) -> torch.Tensor:
    """The inputs the strategy certifies in one of MODES."""
    if mode in ("fast", "default"):
        return strategy.proven(model, payload, tokens, rigorous=mode == "default")
    return strategy.proven_in(model, payload, tokens, Arithmetic(mode))


def _verify(strategy: Strategy, model: AttnOnlyTransformer, payload: dict, mode: str) -> Any:
    """The strategy's verdict in one of MODES."""
    if mode in ("fast", "default"):
        return strategy.verify(model, payload, rigorous=mode == "default")
    return strategy.verify_in(model, payload, Arithmetic(mode))


@dataclass
class References:
    """Per-input ground truth for one model: float64 verdict and exact verdict (int8)."""

    tokens: torch.Tensor
    float64: torch.Tensor  # bool
    exact: torch.Tensor  # int8: CORRECT / WRONG / UNDECIDED

    @classmethod
    def of(cls, model: AttnOnlyTransformer) -> References:
        tokens = all_sequences(model.cfg.d_vocab, model.cfg.n_ctx)
        return cls(tokens, is_correct(model, tokens), ExactReference(model).decide(tokens))


@dataclass
class Tally:
    """Counts for one (mode, certificate kind)."""

    pairs_checked: int = 0  # strategy x model (x tamper) pairs whose proven set was checked
    inputs_checked: int = 0  # inputs compared one by one against the reference(s)
    inputs_proven: int = 0  # of which the proof certified
    unsound_vs_exact: int = 0  # certified, exact reference says WRONG   (unsound)
    proven_exact_undecided: int = 0  # certified, exact reference UNDECIDED (counted unsound)
    proven_float64_wrong: int = 0  # certified, float64 forward verdict says not correct
    float64_only: int = 0  # ... of which the exact reference proves correct (float64 erred)
    count_checks: int = 0  # pairs where verify() was also run
    count_mismatches: int = 0  # verify().correct_count != proven().sum()
    count_above_exact: int = 0  # verify().correct_count > exact number of correct inputs
    unsupported: int = 0  # the strategy rejects the model (several heads, n_ctx > 10)
    rejected: int = 0  # the certificate was rejected (CertificateError)
    errors: int = 0  # any other exception (listed in the summary)

    @property
    def unsound(self) -> int:
        """Unsound results: certified inputs that are not correct in exact arithmetic (or not
        decided), plus verify counts above the exact number of correct inputs. (A certified
        input the float64 verdict rejects is either cleared by the exact verdict, `float64_only`,
        or already counted here as exact WRONG/UNDECIDED.)"""
        return self.unsound_vs_exact + self.proven_exact_undecided + self.count_above_exact


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


def _tally_dict(t: Tally) -> dict[str, int]:
    return {**asdict(t), "unsound": t.unsound}


@dataclass
class Campaign:
    """Accumulated results; `check_case` adds one model."""

    tamper_fraction: float = 0.25
    unsound_dir: Path | None = None
    count_check_fraction: float = 1.0  # share of searched sub-cubic pairs whose count is checked
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    tallies: dict[str, dict[str, Tally]] = field(default_factory=dict)
    models: Counter = field(default_factory=Counter)
    # inputs where the references differ: float64 says correct and exact wrong, or vice versa
    reference_float64_only_correct: int = 0
    reference_exact_only_correct: int = 0
    reference_undecided: int = 0
    inputs_enumerated: int = 0
    findings: list[dict[str, Any]] = field(default_factory=list)
    float64_only_examples: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    run_tag: str = "run"  # prefix of the directories under unsound_dir
    max_saved_models: int = 10  # models saved under unsound_dir (all findings are recorded)
    saved_models: int = 0

    def tally(self, mode: str, kind: str) -> Tally:
        return self.tallies.setdefault(mode, {}).setdefault(kind, Tally())

    @property
    def unsound(self) -> int:
        return sum(t.unsound for kinds in self.tallies.values() for t in kinds.values())

    # -- one model -----------------------------------------------------------------------

    def check_case(self, case: Case, strategies: list[Strategy] | None = None) -> None:
        """Check every strategy (and tampered certificates) on one model, in both modes."""
        strategies = list(STRATEGIES.values()) if strategies is None else strategies
        refs = References.of(case.model)
        case.index = sum(self.models.values())
        self.models[case.family] += 1
        self.inputs_enumerated += len(refs.tokens)
        exact_correct = refs.exact == CORRECT
        self.reference_float64_only_correct += int((refs.float64 & (refs.exact == WRONG)).sum())
        self.reference_exact_only_correct += int((~refs.float64 & exact_correct).sum())
        self.reference_undecided += int((refs.exact == UNDECIDED).sum())
        for strategy in strategies:
            try:
                payload = strategy.search(case.model)
            except UnsupportedModelError:
                for mode in MODES:
                    self.tally(mode, "searched").unsupported += 1
                continue
            except Exception as exc:  # a search failure is not a soundness issue; record it
                self._error(case, strategy, "search", "searched", exc)
                continue
            certificates = [("searched", payload)]
            if "min_gaps" in payload:
                for tamper in TAMPERS:
                    if self.rng.random() < self.tamper_fraction:
                        certificates.append((f"tampered: {tamper}", self._tamper(payload, tamper)))
            for kind, cert in certificates:
                for mode in MODES:
                    self._check_pair(case, strategy, cert, kind, mode, refs)

    def _check_pair(
        self,
        case: Case,
        strategy: Strategy,
        payload: dict[str, Any],
        kind: str,
        mode: str,
        refs: References,
    ) -> None:
        t = self.tally(mode, kind)
        try:
            proven = _proven(strategy, case.model, payload, refs.tokens, mode).cpu().bool()
            # verify's count must equal the proven set's size: checked on searched certificates,
            # always for brute force and cubic (cheap), on a sample of the sub-cubic ones
            count = None
            sampled = "min_gaps" not in payload or self.rng.random() < self.count_check_fraction
            if kind == "searched" and sampled:
                count = _verify(strategy, case.model, payload, mode).correct_count
        except UnsupportedModelError:
            t.unsupported += 1
            return
        except CertificateError:
            t.rejected += 1
            return
        except Exception as exc:
            t.errors += 1
            self._error(case, strategy, mode, kind, exc)
            return
        t.pairs_checked += 1
        t.inputs_checked += len(refs.tokens)
        t.inputs_proven += int(proven.sum())
        if count is not None:
            t.count_checks += 1
        counts = {
            "verify_count": count,
            "exact_correct": int((refs.exact == CORRECT).sum()),
            "float64_correct": int(refs.float64.sum()),
        }
        if count is not None and count != int(proven.sum()):
            t.count_mismatches += 1
            self._finding(case, strategy, payload, kind, mode, "count mismatch", proven, counts)
        if count is not None and count > counts["exact_correct"]:
            t.count_above_exact += 1  # the bound itself exceeds the exact accuracy: unsound
            self._finding(
                case, strategy, payload, kind, mode, "verify count above exact", proven, counts
            )
        bad_exact = proven & (refs.exact == WRONG)
        undecided = proven & (refs.exact == UNDECIDED)
        t.unsound_vs_exact += int(bad_exact.sum())
        t.proven_exact_undecided += int(undecided.sum())
        if bad_exact.any():
            self._finding(case, strategy, payload, kind, mode, "exact: WRONG", proven, bad_exact)
        if undecided.any():
            self._finding(
                case, strategy, payload, kind, mode, "exact: UNDECIDED", proven, undecided
            )
        if mode == "fast":
            bad_float = proven & ~refs.float64
            cleared = bad_float & (refs.exact == CORRECT)  # float64 erred: exact proves correct
            t.proven_float64_wrong += int(bad_float.sum())
            t.float64_only += int(cleared.sum())
            if cleared.any() and len(self.float64_only_examples) < 20:
                self.float64_only_examples.append(
                    self._record(case, strategy, kind, mode, "float64 only", proven, cleared)
                )

    # -- tampering -----------------------------------------------------------------------

    def _tamper(self, payload: dict[str, Any], tamper: str) -> dict[str, Any]:
        """A copy of a sub-cubic payload with directions or gaps replaced."""
        out = json.loads(json.dumps(payload))
        gen = torch.Generator().manual_seed(self.rng.randrange(2**31))
        if tamper.startswith("directions"):
            for name, enc in out["directions"].items():
                shape = decode_tensor(enc).shape
                if tamper == "directions-zero":
                    new = torch.zeros(shape, dtype=torch.float64)
                else:
                    new = torch.randn(shape, generator=gen, dtype=torch.float64)
                    if tamper == "directions-huge":
                        new = new * 10.0 ** float(torch.randint(-30, 31, (), generator=gen))
                out["directions"][name] = encode_tensor(new)
        else:
            gaps = decode_tensor(out["min_gaps"])
            v = gaps.shape[0]
            if tamper == "gaps-one":
                new = torch.ones_like(gaps)
            elif tamper == "gaps-random":
                new = torch.randint(1, v + 2, gaps.shape, generator=gen).to(gaps.dtype)
            else:
                new = torch.full_like(gaps, torch.iinfo(gaps.dtype).max)
            out["min_gaps"] = encode_tensor(new)
        return out

    # -- records -------------------------------------------------------------------------

    def _error(self, case: Case, strategy: Strategy, mode: str, kind: str, exc: Exception) -> None:
        msg = f"{case.family} {case.params} | {strategy.id} | {mode} | {kind}: {exc!r}"
        self.errors.append(msg[:500])

    def _record(
        self,
        case: Case,
        strategy: Strategy,
        kind: str,
        mode: str,
        against: str,
        proven: torch.Tensor,
        bad: torch.Tensor | dict[str, Any],
    ) -> dict[str, Any]:
        """JSON record of a finding; `bad` is the offending inputs' mask, or for a count
        finding the counts involved."""
        record: dict[str, Any] = {
            "model_index": case.index,
            "family": case.family,
            "model_params": case.params,
            "config": asdict(case.model.cfg),
            "strategy": strategy.id,
            "strategy_group": strategy.group,
            "certificate": kind,
            "mode": mode,
            "against": against,
            "proven": int(proven.sum()),
        }
        if isinstance(bad, dict):
            record.update(bad)
        else:
            tokens = all_sequences(case.model.cfg.d_vocab, case.model.cfg.n_ctx)[bad]
            margin, scale = forward_margin(case.model, tokens)
            record["inputs"] = int(bad.sum())
            record["examples"] = [
                {"tokens": x, "float64_margin": mg, "logit_scale": sc}
                for x, mg, sc in zip(
                    tokens[:5].tolist(), margin[:5].tolist(), scale[:5].tolist(), strict=False
                )
            ]
        return record

    def _finding(
        self,
        case: Case,
        strategy: Strategy,
        payload: dict[str, Any],
        kind: str,
        mode: str,
        against: str,
        proven: torch.Tensor,
        bad: torch.Tensor | dict[str, Any],
    ) -> None:
        """Record an unsound result (or a count mismatch); save the model once, every record
        of it in findings.jsonl, and the certificate of the first finding per (mode, kind of
        finding, strategy group)."""
        record = self._record(case, strategy, kind, mode, against, proven, bad)
        can_save = case.saved_dir is not None or self.saved_models < self.max_saved_models
        if self.unsound_dir is not None and can_save:
            if case.saved_dir is None:
                slug = f"{self.run_tag}-{self.saved_models:03d}-{case.family}"
                case.saved_dir = self.unsound_dir / re.sub(r"[^a-z0-9.+-]+", "-", slug.lower())
                case.saved_dir.mkdir(parents=True, exist_ok=True)
                save_model(
                    case.model, case.saved_dir / "model.safetensors", {"campaign": case.params}
                )
                self.saved_models += 1
            key = (mode, against, strategy.group)
            if key not in case.saved_keys:
                case.saved_keys.add(key)
                path = case.saved_dir / f"certificate-{len(case.saved_keys):03d}.json"
                path.write_text(json.dumps({**record, "payload": payload}, indent=1, default=str))
                record["saved_to"] = _rel(path)
            with open(case.saved_dir / "findings.jsonl", "a") as fh:
                fh.write(json.dumps(record, default=str) + "\n")
        self.findings.append(record)

    # -- reporting -----------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        return {
            "models": sum(self.models.values()),
            "models_by_family": dict(self.models),
            "inputs_enumerated": self.inputs_enumerated,
            "reference_float64_correct_exact_wrong": self.reference_float64_only_correct,
            "reference_exact_correct_float64_not": self.reference_exact_only_correct,
            "reference_exact_undecided": self.reference_undecided,
            "per_mode": {
                mode: {kind: _tally_dict(t) for kind, t in sorted(kinds.items())}
                for mode, kinds in self.tallies.items()
            },
            "totals_per_mode": {mode: _tally_dict(self._total(mode)) for mode in self.tallies},
            "unsound_total": self.unsound,
            "findings_total": len(self.findings),
            "findings_grouped": self.grouped_findings(),
            "findings": self.findings[:MAX_FINDINGS_JSON],
            "float64_only_examples": self.float64_only_examples,
            "errors": self.errors[:200],
            "n_errors": len(self.errors),
        }

    def grouped_findings(self) -> list[dict[str, Any]]:
        """Findings grouped by (mode, kind of finding, family, certificate kind)."""
        groups: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        for f in self.findings:
            key = (f["mode"], f["against"], f["family"], f["certificate"])
            g = groups.setdefault(
                key, {"findings": 0, "models": set(), "strategies": set(), "inputs": 0}
            )
            g["findings"] += 1
            g["models"].add(f["model_index"])
            g["strategies"].add((f["strategy"], f["strategy_group"]))
            g["inputs"] += f.get("inputs", 0)
        return [
            {
                "mode": k[0],
                "finding": k[1],
                "family": k[2],
                "certificate": k[3],
                "findings": g["findings"],
                "models": sorted(g["models"]),
                "strategies": len(g["strategies"]),
                "strategy_groups": sorted({group for _, group in g["strategies"]}),
                "inputs": g["inputs"],
            }
            for k, g in sorted(groups.items())
        ]

    def _total(self, mode: str) -> Tally:
        total = Tally()
        for t in self.tallies.get(mode, {}).values():
            for name, value in asdict(t).items():
                setattr(total, name, getattr(total, name) + value)
        return total

    def table(self) -> str:
        cols = [
            ("pairs", "pairs_checked"),
            ("unsupp.", "unsupported"),
            ("rejected", "rejected"),
            ("inputs checked", "inputs_checked"),
            ("proven", "inputs_proven"),
            ("exact WRONG", "unsound_vs_exact"),
            ("exact undec.", "proven_exact_undecided"),
            ("f64 wrong", "proven_float64_wrong"),
            ("f64 only", "float64_only"),
            ("UNSOUND", "unsound"),
            ("count checks", "count_checks"),
            ("count mism.", "count_mismatches"),
            ("count > exact", "count_above_exact"),
            ("errors", "errors"),
        ]
        head = "| mode | certificate | " + " | ".join(c for c, _ in cols) + " |"
        lines = [head, "|" + "---|" * (len(cols) + 2)]
        for mode in MODES:
            kinds = self.tallies.get(mode, {})
            rows = [(k, kinds[k]) for k in sorted(kinds)] + [("ALL", self._total(mode))]
            for kind, t in rows:
                values = []
                for _, attr in cols:
                    val = getattr(t, attr)
                    if mode != "fast" and attr in ("proven_float64_wrong", "float64_only"):
                        values.append("-")
                    else:
                        values.append(f"{val:,}")
                lines.append(f"| {mode} | {kind} | " + " | ".join(values) + " |")
        return "\n".join(lines)


# -- driver --------------------------------------------------------------------------------


def git_state() -> dict[str, Any]:
    def run(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False
            ).stdout.rstrip("\n")  # keep porcelain's leading status columns
        except OSError:
            return ""

    return {
        "commit": run("rev-parse", "HEAD").strip(),
        "dirty_files": [line[3:] for line in run("status", "--porcelain").splitlines()],
    }


def progress_line(c: Campaign, start: float) -> str:
    parts = []
    for mode in MODES:
        t = c._total(mode)
        parts.append(f"{mode}: pairs {t.pairs_checked:,} unsound {t.unsound}")
    return (
        f"[{time.perf_counter() - start:7.1f}s] models {sum(c.models.values()):4d} | "
        + " | ".join(parts)
        + f" | findings {len(c.findings)} errors {len(c.errors)}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="wall-clock budget")
    parser.add_argument("--seed", type=int, default=0, help="seed of the model stream")
    parser.add_argument(
        "--tamper-fraction",
        type=float,
        default=0.25,
        help="probability that each tamper kind is applied to a sub-cubic certificate",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=ROOT / "benchmarks" / f"results-soundness-{dt.date.today()}.json",
        help="machine-readable summary",
    )
    parser.add_argument(
        "--unsound-dir",
        type=Path,
        default=ROOT / "benchmarks" / "unsound",
        help="where unsound models and certificates are saved",
    )
    parser.add_argument(
        "--count-check-fraction",
        type=float,
        default=0.5,
        help="share of searched sub-cubic pairs on which verify's count is compared with "
        "proven's (brute force and cubic: always)",
    )
    parser.add_argument(
        "--max-saved-models",
        type=int,
        default=10,
        help="models with findings saved under --unsound-dir (all findings go to the JSON)",
    )
    parser.add_argument("--families", default="all", help="comma-separated family names")
    parser.add_argument(
        "--strategies", default="all", help="a --strategy spec (default: every strategy)"
    )
    args = parser.parse_args(argv)
    chosen = resolve_strategies(args.strategies)
    torch.set_num_threads(1)
    families = list(FAMILIES) if args.families == "all" else args.families.split(",")
    rng = random.Random(args.seed)
    campaign = Campaign(
        args.tamper_fraction,
        args.unsound_dir,
        args.count_check_fraction,
        rng=random.Random(args.seed + 1),
        run_tag=f"seed{args.seed}",
        max_saved_models=args.max_saved_models,
    )
    start = time.perf_counter()
    deadline = start + 60 * args.minutes
    started = dt.datetime.now().isoformat(timespec="seconds")
    print(f"soundness campaign: {args.minutes} min, seed {args.seed}, families {families}")
    print(f"strategies: {len(chosen)}; modes: {', '.join(MODES)}; tampers: {TAMPERS}")
    last = start
    index = 0
    while time.perf_counter() < deadline:
        family = families[index % len(families)]
        index += 1
        case = FAMILIES[family](rng)
        campaign.check_case(case, chosen)
        if time.perf_counter() - last > 20:
            last = time.perf_counter()
            print(progress_line(campaign, start), flush=True)
    print(progress_line(campaign, start))
    summary = {
        "started": started,
        "minutes_budget": args.minutes,
        "wall_seconds": round(time.perf_counter() - start, 1),
        "seed": args.seed,
        "tamper_fraction": args.tamper_fraction,
        "count_check_fraction": args.count_check_fraction,
        "strategies": len(chosen),
        "strategy_spec": args.strategies,
        "git": git_state(),
        "torch": torch.__version__,
        **campaign.summary(),
    }
    print()
    print(f"models: {summary['models']} ({summary['inputs_enumerated']:,} inputs enumerated)")
    for fam, n in sorted(campaign.models.items()):
        print(f"  {fam}: {n}")
    print(
        "references: float64 says correct but exact says wrong on "
        f"{campaign.reference_float64_only_correct:,} inputs; exact says correct but float64 "
        f"not on {campaign.reference_exact_only_correct:,}; exact undecided on "
        f"{campaign.reference_undecided:,}"
    )
    print()
    print(campaign.table())
    print()
    n_found = len(campaign.findings)
    print(
        f"UNSOUND RESULTS: {campaign.unsound} (target 0: certified inputs not correct in exact "
        f"arithmetic + verify counts above the exact accuracy); findings recorded: {n_found}"
    )
    for mode in MODES:
        print(f"  {mode}: {campaign._total(mode).unsound}")
    if campaign.findings:
        print()
        print("| mode | finding | family | certificate | pairs | models | strategies | inputs |")
        print("|---|---|---|---|---|---|---|---|")
        for g in campaign.grouped_findings():
            print(
                f"| {g['mode']} | {g['finding']} | {g['family']} | {g['certificate']} | "
                f"{g['findings']} | {len(g['models'])} | {g['strategies']} "
                f"({', '.join(g['strategy_groups'])}) | {g['inputs']:,} |"
            )
        print()
        print("first findings (one per model and kind):")
        seen = set()
        for fnd in campaign.findings:
            key = (fnd["model_index"], fnd["mode"], fnd["against"])
            if key in seen or len(seen) >= 25:
                continue
            seen.add(key)
            print("  " + json.dumps(fnd, default=str)[:600])
    if campaign.errors:
        print(f"errors ({len(campaign.errors)}), first 10:")
        for e in campaign.errors[:10]:
            print("  " + e)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(summary, indent=1, default=str) + "\n")
    print(f"summary written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
