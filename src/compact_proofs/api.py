"""The library's front door, for notebooks and scripts: one call per thing a researcher does.

    >>> import compact_proofs as cp
    >>> model = cp.bundled_model().model          # or cp.load_model("m.safetensors").model
    >>> proofs = cp.prove(model, "cubic,separable")  # rigorous by default
    >>> proofs.frame()[["strategy", "bound", "log2_flops"]]   # a pandas DataFrame
    >>> proofs.save("certificates.json")
    >>> cp.verify(model, "certificates.json")      # verification only, from the file
    >>> cp.check("m.safetensors", "certificates.json")  # the independent checker

Every function accepts a model as an `AttnOnlyTransformer`, a loaded `ModelFile` or a path.
The command line does the same things with the same defaults (`compact-proofs --help`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from compact_proofs.errors import UnsupportedModelError
from compact_proofs.model.file_format import ModelFile, load_model, weights_digest
from compact_proofs.model.transformer import AttnOnlyTransformer, ModelConfig
from compact_proofs.pipeline import results as results_store
from compact_proofs.proofs import runner
from compact_proofs.proofs.base import Strategy
from compact_proofs.proofs.certificates import (
    Certificate,
    CertificateFile,
    load_certificates,
    save_certificates,
)
from compact_proofs.proofs.flops import log2
from compact_proofs.proofs.registry import STRATEGIES, resolve_strategies
from compact_proofs.proofs.runner import ProofResult
from compact_proofs.soundness import checker

ModelLike = AttnOnlyTransformer | ModelFile | str | Path


def as_model(model: ModelLike) -> AttnOnlyTransformer:
    """The transformer behind `model` (a path is loaded and checked like the CLI does)."""
    if isinstance(model, AttnOnlyTransformer):
        return model
    if isinstance(model, ModelFile):
        return model.model
    return load_model(model).model


@dataclass
class Proofs:
    """The results of proving one model with several strategies, and their certificates."""

    results: list[ProofResult]
    certificate: CertificateFile

    def frame(self) -> pd.DataFrame:
        """One row per strategy (`results_frame` of the results)."""
        return results_frame(self.results)

    def save(self, path: str | Path) -> None:
        """Write the certificates (JSON; `verify` and `check` read it back)."""
        save_certificates(path, self.certificate)

    def __getitem__(self, strategy_id: str) -> ProofResult:
        for r in self.results:
            if r.strategy == strategy_id:
                return r
        raise KeyError(strategy_id)


def prove(
    model: ModelLike,
    strategies: str | Strategy | list[Strategy] = "all",
    *,
    rigorous: bool = True,
    progress: bool = False,
) -> Proofs:
    """Search and verify proofs of a lower bound on `model`'s accuracy.

    `strategies`: an id, 'all', 'paper', 'subcubic', 'group:NAME', a comma list (as the
    CLI's --strategy), or Strategy objects. Strategies the model is outside of are skipped
    when several are asked for, with a note on stderr (an error when none is left).
    `rigorous=False` is plain float64: faster, NOT a proof.

    >>> cp.prove(cp.bundled_model(), "cubic")["cubic"].bound   # doctest: +SKIP
    0.943042...
    """
    m = as_model(model)
    chosen = _strategies(strategies)
    done: dict[str, tuple[ProofResult, Certificate]] = {}
    bar = tqdm(total=len(chosen), desc="proving", unit="strategy", disable=not progress)
    for strategy, outcome in runner.prove_many(m, chosen, rigorous=rigorous):
        bar.update()
        if isinstance(outcome, UnsupportedModelError):
            if len(chosen) == 1:
                raise outcome
            print(f"note: {strategy.id} skipped: {outcome}", file=sys.stderr)
        elif isinstance(outcome, Exception):
            raise outcome
        else:
            done[strategy.id] = outcome
    bar.close()
    results = [done[s.id][0] for s in chosen if s.id in done]  # in the order asked for
    certs = [done[s.id][1] for s in chosen if s.id in done]
    if not results:
        raise UnsupportedModelError("no requested strategy supports this model")
    return Proofs(results, CertificateFile(weights_digest(m), m.cfg, certs))


def _strategies(strategies: str | Strategy | list[Strategy]) -> list[Strategy]:
    if isinstance(strategies, str):
        return resolve_strategies(strategies)
    return [strategies] if isinstance(strategies, Strategy) else list(strategies)


def verify(
    model: ModelLike, certificate: str | Path | CertificateFile | Proofs, *, rigorous: bool = True
) -> list[ProofResult]:
    """Re-run verification only, for every certificate (a file, or what `prove` returned);
    refuses certificates made for other weights."""
    if isinstance(certificate, Proofs):
        certificate = certificate.certificate
    if not isinstance(certificate, CertificateFile):
        certificate = load_certificates(certificate)
    return runner.verify_certificates(as_model(model), certificate, rigorous=rigorous)


def check(model_path: str | Path, certificate_path: str | Path) -> list[checker.CheckResult]:
    """Re-check a certificate file with the independent checker (its own file readers and
    its own float64 implementation of every strategy; it shares no code with `verify`)."""
    return checker.check_certificates(model_path, certificate_path)


def strategies(cfg: ModelConfig | None = None) -> pd.DataFrame:
    """Every registered strategy: id, group, complexity and unexplained dimensions (for the
    paper's architecture unless `cfg` is given)."""
    cfg = cfg or ModelConfig()
    return pd.DataFrame([s.describe(cfg) for s in STRATEGIES.values()])


def results_frame(results: list[ProofResult] | Proofs | str | Path) -> pd.DataFrame:
    """Proof results as a DataFrame: from `prove`/`verify` (one row per strategy, the keys of
    `--json`), or from a sweep's results directory (its results.csv, typed)."""
    if isinstance(results, str | Path):
        path = Path(results)
        csv = path / "results.csv" if path.is_dir() else path
        return results_store.frame(results_store.read_rows(csv))
    if isinstance(results, Proofs):
        results = results.results
    records: list[dict[str, Any]] = [r.to_json() for r in results]
    df = pd.DataFrame.from_records(records)
    if not df.empty:
        df.insert(df.columns.get_loc("flops") + 1, "log2_flops", df["flops"].map(log2))
    return df
