"""End-to-end tests of the `compact-proofs` command line.

Each end-to-end call is a fresh `python -m compact_proofs.cli` process. Importing torch costs
~2 s of CPU per process, so the module-scoped `e2e` fixture submits every subprocess call of
this file at once to a pool (one worker per core, longest jobs first) and the tests then read
the results. Further bad-input cases, and regressions for bugs found here, go through the same
`main()` in-process, where a leaked exception is reported as a traceback just the same.
Models are tiny (v=6, k=3, d=8), built in-process or trained for 50 steps.

The bad-input contract checked for every failing call: non-zero exit status, exactly one
non-empty stderr line starting with `error:`, no traceback, nothing on stdout, and no output
file (not even a temporary one) where one was requested.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from compact_proofs import __version__
from compact_proofs.cli import main
from compact_proofs.model.file_format import (
    METADATA_KEY,
    TL_NAMES,
    bundled_model_path,
    load_model,
    save_model,
    weights_digest,
)
from compact_proofs.model.transformer import ModelConfig, build_model
from compact_proofs.proofs.certificates import CertificateFile, save_certificates
from compact_proofs.proofs.exhaustive import exact_accuracy
from compact_proofs.proofs.registry import STRATEGIES, get_strategy
from compact_proofs.proofs.runner import prove
from compact_proofs.proofs.subcubic.config import SubcubicConfig

SRC = Path(__file__).resolve().parents[1] / "src"
SMALL = ModelConfig(d_vocab=6, n_ctx=3, d_model=8, d_head=8, n_heads=1)
TINY_TRAIN = ["--steps", "50", "--d-vocab", "6", "--n-ctx", "3", "--d-model", "8"]
REQUIRED_KEYS = {
    "strategy",
    "bound",
    "correct_count",
    "total",
    "flops",
    "unexplained_dims",
    "complexity",
    "seconds",
}
# The bundled seed-123 model (v=64, k=4): its exact accuracy and the cubic proof's count.
BUNDLED_CORRECT = 16763235
BUNDLED_TOTAL = 64**4  # 16777216
CUBIC_CORRECT = 15821617
KEEP = "keep me\n"  # content of a regular file that failing calls must leave alone

Run = subprocess.CompletedProcess
Args = Sequence[str | os.PathLike]


# -- running the CLI ---------------------------------------------------------------------------


def run_cli(*args: str | os.PathLike, cwd: Path | None = None) -> Run:
    """Run `python -m compact_proofs.cli ARGS` as a subprocess and capture its output."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p)
    env["OMP_NUM_THREADS"] = "1"  # calls run concurrently; don't oversubscribe the cores
    return subprocess.run(
        [sys.executable, "-m", "compact_proofs.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def run_in_process(args: Args, capsys) -> Run:
    """Run `main(ARGS)` in this process; an escaping exception becomes a traceback on stderr."""
    capsys.readouterr()
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # argparse usage errors
        code = exc.code if isinstance(exc.code, int) else 1
    except Exception:
        out, err = capsys.readouterr()
        return Run(list(args), 1, out, err + traceback.format_exc())
    out, err = capsys.readouterr()
    return Run(list(args), code, out, err)


def ok_json(run: Run):
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    return json.loads(run.stdout)


def assert_clean_error(run: Run, contains: str = "") -> str:
    """The bad-input contract; returns the error line."""
    assert run.returncode != 0, run.stdout
    assert "Traceback" not in run.stderr + run.stdout, run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1, f"expected exactly one stderr line, got {run.stderr!r}"
    line = lines[0]
    assert line.startswith("error:") and line.removeprefix("error:").strip(), line
    assert run.stdout == "", run.stdout
    assert contains.lower() in line.lower(), line
    return line


# -- files -------------------------------------------------------------------------------------


def tl_tensors(seed: int = 1, cfg: ModelConfig = SMALL) -> dict[str, torch.Tensor]:
    """A model's weights under TransformerLens names (as `save_model` writes them)."""
    model = build_model(cfg, seed=seed)
    return {TL_NAMES[n]: t.clone().contiguous() for n, t in model.weights().items()}


def write_tensors(path: Path, tensors: dict[str, torch.Tensor], meta=None) -> Path:
    save_file(tensors, str(path), metadata=meta)
    return path


def bad_model_files(d: Path, good: Path) -> dict[str, Path]:
    """Bad model files, by case name."""
    d.mkdir()
    files: dict[str, Path] = {"missing": d / "does-not-exist.safetensors"}
    files["directory"] = d / "a-directory.safetensors"
    files["directory"].mkdir()
    files["empty"] = d / "empty.safetensors"
    files["empty"].write_bytes(b"")
    files["random_bytes"] = d / "random.safetensors"
    files["random_bytes"].write_bytes(random.Random(0).randbytes(4096))
    files["text"] = d / "text.safetensors"
    files["text"].write_text("this is not a model, just some text\n" * 20)
    raw = good.read_bytes()
    files["truncated"] = d / "truncated.safetensors"
    files["truncated"].write_bytes(raw[: len(raw) // 2])
    files["bad_header_json"] = d / "header.safetensors"
    header = b"{not json at all"
    files["bad_header_json"].write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 64)

    t = tl_tensors()
    t["blocks.0.attn.W_K"] = torch.randn(1, 8, 4)  # d_head 4, but W_Q says 8
    files["inconsistent_shapes"] = write_tensors(d / "shapes.safetensors", t)
    t = tl_tensors()
    t["embed.W_E"] = torch.randn(6)
    files["wrong_rank"] = write_tensors(d / "rank.safetensors", t)
    t = tl_tensors()
    t["unembed.W_U"] = torch.randn(8, 7)
    files["vocab_out_mismatch"] = write_tensors(d / "vocab-out.safetensors", t)
    t = tl_tensors()
    del t["blocks.0.attn.W_V"]
    files["missing_tensor"] = write_tensors(d / "missing-tensor.safetensors", t)
    t = tl_tensors()
    t["not.a.transformer_lens.name"] = torch.zeros(2)
    files["unexpected_tensor"] = write_tensors(d / "unexpected.safetensors", t)
    t = tl_tensors()
    t["embed.W_E"][2, 3] = float("nan")
    files["nan"] = write_tensors(d / "nan.safetensors", t)
    t = tl_tensors()
    t["unembed.W_U"][0, 0] = float("inf")
    files["inf"] = write_tensors(d / "inf.safetensors", t)
    t = tl_tensors()
    t["blocks.0.attn.b_O"][1] = float("-inf")
    files["inf_bias"] = write_tensors(d / "inf-bias.safetensors", t)
    t = tl_tensors()
    t["blocks.1.attn.W_Q"] = t["blocks.0.attn.W_Q"].clone()
    files["two_layers"] = write_tensors(d / "two-layers.safetensors", t)
    t = tl_tensors()
    t["blocks.0.mlp.W_in"] = torch.randn(8, 32)
    files["mlp"] = write_tensors(d / "mlp.safetensors", t)
    t = tl_tensors()
    t["ln_final.w"] = torch.ones(8)
    files["layernorm"] = write_tensors(d / "layernorm.safetensors", t)
    t = {k: v.half() for k, v in tl_tensors().items()}
    files["float16"] = write_tensors(d / "float16.safetensors", t)
    t = {k: v.double() for k, v in tl_tensors().items()}
    files["float64"] = write_tensors(d / "float64.safetensors", t)

    # save_model writes a consistent file; rewrite it with metadata that lies about the config
    lying = d / "lying.safetensors"
    save_model(build_model(SMALL, seed=1), lying)
    with safe_open(str(lying), framework="pt") as f:
        meta = json.loads(f.metadata()[METADATA_KEY])
    meta["config"]["d_vocab"] = 64
    files["lying_metadata"] = write_tensors(
        lying, load_file(lying), {METADATA_KEY: json.dumps(meta)}
    )
    files["garbage_metadata"] = write_tensors(
        d / "garbage-meta.safetensors", tl_tensors(), {METADATA_KEY: "{not json"}
    )
    return files


def write_valid_certificate(model_path: Path, path: Path) -> dict:
    """Write a valid certificate (cubic only) for the model at `model_path`, made in-process;
    returns its JSON document."""
    model = load_model(model_path).model
    _, cert = prove(model, get_strategy("cubic"))
    save_certificates(path, CertificateFile(weights_digest(model), model.cfg, [cert]))
    return json.loads(path.read_text())


# -- bad-input cases ---------------------------------------------------------------------------


@dataclass
class Case:
    """A call that must fail cleanly.

    `contains` must appear in the error line; no path in `absent` may exist afterwards;
    `check` is a further assertion on the file system; `e2e` runs it as a subprocess.
    """

    args: list[str | os.PathLike]
    contains: str = ""
    absent: list[Path] = field(default_factory=list)
    check: Callable[[], None] | None = None
    e2e: bool = False


# model-file cases: expected substring of the error line, and whether it runs as a subprocess
MODEL_CASES: dict[str, tuple[str, bool]] = {
    "missing": ("not found", True),
    "directory": ("directory", False),
    "empty": ("safetensors", False),
    "random_bytes": ("safetensors", True),
    "text": ("safetensors", True),
    "truncated": ("safetensors", True),
    "bad_header_json": ("safetensors", False),
    "inconsistent_shapes": ("blocks.0.attn.W_K", True),
    "wrong_rank": ("embed.W_E", False),
    "vocab_out_mismatch": ("unembed.W_U", False),
    "missing_tensor": ("blocks.0.attn.W_V", False),
    "unexpected_tensor": ("not.a.transformer_lens.name", False),
    "nan": ("NaN", True),
    "inf": ("Inf", True),
    "inf_bias": ("blocks.0.attn.b_O", False),
    "two_layers": ("2 layers", True),
    "mlp": ("MLP", True),
    "layernorm": ("LayerNorm", False),
    "float16": ("float16", True),
    "float64": ("float64", False),
    "lying_metadata": ("metadata", True),
    "garbage_metadata": ("metadata", False),
}
TRAIN_VALUE_CASES: dict[str, tuple[list[str], str, bool]] = {
    "d-vocab-zero": (["--seed", "1", "--d-vocab", "0"], "positive integer", True),
    "negative-seed": (["--seed", "-1"], "non-negative", True),
    "steps-not-a-number": (["--seed", "1", "--steps", "abc"], "abc", True),
    "steps-zero": (["--seed", "1", "--steps", "0"], "positive integer", False),
    "seeds-nonsense": (["--seeds", "nonsense"], "nonsense", True),
    "seeds-bad-range": (["--seeds", "5-2"], "seed set", False),
    "seeds-negative": (["--seeds", "-3"], "seed", False),
    "seed-and-seeds": (["--seed", "1", "--seeds", "1,2"], "exactly one", False),
    "neither-seed-nor-seeds": ([], "exactly one", False),
}
BAD_CERTIFICATES: dict[str, tuple[Callable[[dict], str | bytes], bool]] = {
    "not-json": (lambda doc: "this is not json {", True),
    "binary": (lambda doc: random.Random(1).randbytes(512), False),
    "empty": (lambda doc: "", False),
    "json-list": (lambda doc: "[1, 2, 3]", True),
    "json-string": (lambda doc: '"compact-proofs-certificate"', False),
    "wrong-format": (lambda doc: json.dumps({**doc, "format": "something-else"}), False),
    "wrong-version": (lambda doc: json.dumps({**doc, "format_version": 99}), False),
    "missing-fields": (
        lambda doc: json.dumps({k: doc[k] for k in ("format", "format_version")}),
        True,
    ),
    "certificates-not-a-list": (lambda doc: json.dumps({**doc, "certificates": "abc"}), False),
    "entry-not-an-object": (lambda doc: json.dumps({**doc, "certificates": [1]}), False),
    "bad-model-config": (lambda doc: json.dumps({**doc, "model_config": {"d_vocab": 0}}), False),
    "unknown-strategy": (
        lambda doc: json.dumps(
            {**doc, "certificates": [{"strategy": "no-such-proof", "payload": {}}]}
        ),
        False,
    ),
    "deeply-nested": (lambda doc: "[" * 100_000 + "]" * 100_000, False),
}
CASE_NAMES = [
    *(f"model-{n}" for n in MODEL_CASES),
    "accuracy-missing-model",
    "accuracy-truncated-model",
    "model-name-too-long",
    "model-name-with-newline",
    "prove-unknown-strategy",
    "prove-empty-strategy",
    "prove-certificate-out-is-directory",
    "prove-certificate-out-under-a-file",
    "prove-bad-device",
    *(f"train-{n}" for n in TRAIN_VALUE_CASES),
    "train-seed-out-is-directory",
    "train-seeds-out-is-file",
    "train-out-under-a-file",
    "verify-different-model",
    "verify-bad-model",
    "verify-missing-certificate",
    *(f"verify-cert-{n}" for n in BAD_CERTIFICATES),
    "no-command",
    "unknown-command",
]


def _assert_empty_dir(path: Path) -> None:
    assert path.is_dir() and list(path.iterdir()) == [], list(path.iterdir())


def _assert_text(path: Path, text: str) -> None:
    assert path.is_file() and path.read_text() == text


def bad_cases(d: Path, good: Path, other: Path) -> dict[str, Case]:
    out = d / "out"  # every requested output lives under here; failing calls create nothing
    cases: dict[str, Case] = {}

    # every bad model file goes through `prove --certificate-out`: no certificate may appear
    files = bad_model_files(d / "models", good)
    for name, (contains, e2e) in MODEL_CASES.items():
        cert = out / f"model-{name}" / "cert.json"
        cases[f"model-{name}"] = Case(
            ["prove", files[name], "--certificate-out", cert], contains, [cert.parent], e2e=e2e
        )
    cases["accuracy-missing-model"] = Case(["accuracy", files["missing"], "--json"], "not found")
    cases["accuracy-truncated-model"] = Case(["accuracy", files["truncated"]], "safetensors")
    cases["model-name-too-long"] = Case(["prove", "m" * 5000 + ".safetensors"], "too long")
    cases["model-name-with-newline"] = Case(["accuracy", d / "no\nsuch.safetensors"], "not found")

    # prove
    cert = out / "prove-unknown-strategy" / "cert.json"
    cases["prove-unknown-strategy"] = Case(
        ["prove", good, "--strategy", "no-such-proof", "--certificate-out", cert],
        "unknown strategy",
        [cert.parent],
        e2e=True,
    )
    cases["prove-empty-strategy"] = Case(["prove", good, "--strategy", ","], "strategy")
    cert_dir = d / "cert-dir"
    cert_dir.mkdir()
    cases["prove-certificate-out-is-directory"] = Case(
        ["prove", good, "--strategy", "cubic", "--certificate-out", cert_dir],
        "directory",
        check=lambda: _assert_empty_dir(cert_dir),
    )
    blocker = d / "a-regular-file"
    blocker.write_text(KEEP)
    cases["prove-certificate-out-under-a-file"] = Case(
        ["prove", good, "--strategy", "cubic", "--certificate-out", blocker / "cert.json"],
        "cannot write",
        check=lambda: _assert_text(blocker, KEEP),
    )
    cases["prove-bad-device"] = Case(["prove", good, "--device", "tpu"], "--device")

    # train: TINY_TRAIN comes first, so the bad value given after it wins (and a regression
    # that trains anyway stays cheap)
    model_out = out / "train" / "m.safetensors"
    for name, (extra, contains, e2e) in TRAIN_VALUE_CASES.items():
        cases[f"train-{name}"] = Case(
            ["train", *TINY_TRAIN, *extra, "--out", model_out],
            contains,
            [model_out.parent],
            e2e=e2e,
        )
    existing_dir = d / "existing-dir"
    existing_dir.mkdir()
    cases["train-seed-out-is-directory"] = Case(
        ["train", "--seed", "1", *TINY_TRAIN, "--out", existing_dir],
        "directory",
        check=lambda: _assert_empty_dir(existing_dir),
        e2e=True,
    )
    cases["train-seeds-out-is-file"] = Case(
        ["train", "--seeds", "1,2", *TINY_TRAIN, "--out", blocker],
        "is a file",
        check=lambda: _assert_text(blocker, KEEP),
    )
    cases["train-out-under-a-file"] = Case(
        ["train", "--seed", "1", *TINY_TRAIN, "--steps", "2", "--out", blocker / "m.safetensors"],
        "cannot write",
        check=lambda: _assert_text(blocker, KEEP),
    )

    # verify
    certs = d / "certs"
    certs.mkdir()
    valid = certs / "valid.json"
    doc = write_valid_certificate(good, valid)
    cases["verify-different-model"] = Case(["verify", other, valid], "different model", e2e=True)
    cases["verify-bad-model"] = Case(["verify", files["nan"], valid], "NaN")
    cases["verify-missing-certificate"] = Case(["verify", good, certs / "nope.json"], "not found")
    for name, (make, e2e) in BAD_CERTIFICATES.items():
        path, content = certs / f"{name}.json", make(doc)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        cases[f"verify-cert-{name}"] = Case(["verify", good, path, "--json"], e2e=e2e)

    cases["no-command"] = Case([], "required")
    cases["unknown-command"] = Case(["frobnicate"], "frobnicate")
    assert list(cases) == CASE_NAMES
    return cases


THREE = ("brute-force", "cubic", SubcubicConfig().id)  # strategies certified end to end


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_models(tmp_path_factory) -> dict[str, Path]:
    """Two small models with the same architecture and different weights."""
    d = tmp_path_factory.mktemp("models")
    paths = {}
    for name, seed in (("good", 1), ("other", 2)):
        paths[name] = d / f"{name}.safetensors"
        save_model(build_model(SMALL, seed=seed), paths[name], {"note": name})
    return paths


@pytest.fixture(scope="module")
def cases(small_models, tmp_path_factory) -> dict[str, Case]:
    return bad_cases(tmp_path_factory.mktemp("bad"), small_models["good"], small_models["other"])


@dataclass
class E2E:
    """Futures of every subprocess call of this module, and the paths they write."""

    paths: dict[str, Path]
    runs: dict[str, Future]

    def __getitem__(self, name: str):
        return self.runs[name].result()


@pytest.fixture(scope="module")
def e2e(small_models, cases, tmp_path_factory):
    d = tmp_path_factory.mktemp("e2e")
    paths = {
        "cert": d / "bundled" / "cert.json",
        "a": d / "a" / "m.safetensors",
        "b": d / "b" / "m.safetensors",
        "seeds": d / "seeds",
    }

    def chain(*calls: Args) -> Callable[[], list[Run]]:
        return lambda: [run_cli(*c, cwd=d) for c in calls]

    def snapshot_then_rerun() -> dict:
        first = run_cli(
            "train", "--seeds", "1,2", *TINY_TRAIN, "--out", paths["seeds"], "--json", cwd=d
        )
        before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in paths["seeds"].iterdir()}
        rerun = run_cli(
            "train", "--seeds", "1,2", *TINY_TRAIN, "--out", paths["seeds"], "--json", cwd=d
        )
        return {"first": first, "before": before, "rerun": rerun}

    # longest first, so the pool stays busy to the end
    jobs: dict[str, Callable[[], object]] = {
        "prove-table-then-verify": chain(
            ["prove", "--strategy", ",".join(THREE), "--certificate-out", paths["cert"]],
            ["verify", bundled_model_path(), paths["cert"], "--json"],
        ),
        "train-seeds": snapshot_then_rerun,
        "prove-json": chain(["prove", "--json"]),
        "train-a": chain(["train", "--seed", "7", *TINY_TRAIN, "--out", paths["a"], "--json"]),
        "train-b": chain(["train", "--seed", "7", *TINY_TRAIN, "--out", paths["b"], "--json"]),
        "accuracy": chain(["accuracy", small_models["good"], "--json"]),
        "strategies": chain(["strategies", "--json"]),
    }
    for name, case in cases.items():
        if case.e2e:
            jobs[f"bad:{name}"] = chain(case.args)
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        yield E2E(paths, {name: pool.submit(job) for name, job in jobs.items()})


# -- happy paths -------------------------------------------------------------------------------


def test_module_entry_point_runs(e2e):
    """`python -m compact_proofs.cli` works (first, so that the pool starts early)."""
    (run,) = e2e["strategies"]
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""


def test_prove_bundled_table(e2e):
    run, _ = e2e["prove-table-then-verify"]
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert "bundled" in run.stdout
    assert "brute-force" in run.stdout and "cubic" in run.stdout
    assert f"{BUNDLED_CORRECT} / {BUNDLED_TOTAL}" in run.stdout
    assert f"{CUBIC_CORRECT} / {BUNDLED_TOTAL}" in run.stdout
    assert f"certificate written to {e2e.paths['cert']}" in run.stdout


def test_prove_bundled_json(e2e):
    (run,) = e2e["prove-json"]
    records = ok_json(run)
    assert isinstance(records, list)
    by_id = {r["strategy"]: r for r in records}
    assert list(by_id) == list(STRATEGIES)  # the default is all 105 strategies, in order
    for r in records:
        assert set(r) >= REQUIRED_KEYS, REQUIRED_KEYS - set(r)
        assert r["total"] == BUNDLED_TOTAL
        assert r["bound"] == r["correct_count"] / r["total"]
        assert isinstance(r["flops"], int) and r["flops"] > 0
        assert isinstance(r["seconds"], float) and r["seconds"] >= 0
        assert isinstance(r["complexity"], str) and r["complexity"]
    bf, cubic = by_id["brute-force"], by_id["cubic"]
    assert bf["correct_count"] == BUNDLED_CORRECT
    assert bf["bound"] == 16763235 / 16777216
    assert cubic["correct_count"] == CUBIC_CORRECT
    assert cubic["bound"] <= bf["bound"]  # a sound proof never beats the exact accuracy
    assert cubic["flops"] < bf["flops"]
    assert bf["unexplained_dims"] == 64**5
    assert cubic["unexplained_dims"] == 12800
    for r in records[2:]:  # sub-cubic: sound, and shorter than the cubic proof
        assert 0 <= r["correct_count"] <= bf["correct_count"]
        assert r["flops"] < cubic["flops"]


def test_certificate_then_verify_bundled(e2e):
    (proved,) = e2e["prove-json"]
    _, verified = e2e["prove-table-then-verify"]
    proved, verified = ok_json(proved), ok_json(verified)
    cert_path = e2e.paths["cert"]
    cert = json.loads(cert_path.read_text())
    assert cert["format"] == "compact-proofs-certificate"
    assert [c["strategy"] for c in cert["certificates"]] == list(THREE)
    assert [r["strategy"] for r in verified] == list(THREE)
    proved = [next(p for p in proved if p["strategy"] == s) for s in THREE]
    for p, v in zip(proved, verified, strict=True):
        assert set(v) >= REQUIRED_KEYS
        assert v["correct_count"] == p["correct_count"]
        assert v["total"] == p["total"]
        assert v["bound"] == p["bound"]
        assert v["flops"] == p["flops"]
        assert v["model_sha256"] == p["model_sha256"] == cert["model_sha256"]
    assert [p.name for p in cert_path.parent.iterdir()] == ["cert.json"]  # no temp files


def test_strategies_json(e2e):
    (run,) = e2e["strategies"]
    records = ok_json(run)
    by_id = {r["strategy"]: r for r in records}
    assert {"brute-force", "cubic"} <= set(by_id)
    for r in records:
        assert isinstance(r["complexity"], str) and r["complexity"]
        assert isinstance(r["unexplained_dims"], int)
    assert by_id["brute-force"]["unexplained_dims"] == 64**5
    assert by_id["cubic"]["unexplained_dims"] == 12800


def test_accuracy_json_matches_library(e2e, small_models):
    (run,) = e2e["accuracy"]
    record = ok_json(run)
    expected = exact_accuracy(load_model(small_models["good"]).model)
    assert record["correct_count"] == expected.correct
    assert record["total"] == expected.total == SMALL.n_inputs
    assert record["accuracy"] == expected.accuracy
    assert record["numerical_ties"] == expected.ties


def test_train_seed_writes_loadable_file_with_provenance(e2e):
    for key in ("a", "b"):
        path = e2e.paths[key]
        (run,) = e2e[f"train-{key}"]
        (record,) = ok_json(run)
        assert record["seed"] == 7 and record["status"] == "trained"
        assert record["path"] == str(path)
        mf = load_model(path)
        assert mf.cfg == SMALL
        prov = mf.provenance
        assert prov["seed"] == 7
        assert prov["recipe"]["steps"] == 50
        assert prov["library_version"] == __version__
        assert prov["exact_accuracy"] == record["exact_accuracy"]
        assert prov["exact_accuracy"] == exact_accuracy(mf.model).accuracy
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads(f.metadata()[METADATA_KEY])
        assert meta["config"] == {
            "d_vocab": 6,
            "n_ctx": 3,
            "d_model": 8,
            "d_head": 8,
            "n_heads": 1,
        }
        assert [p.name for p in path.parent.iterdir()] == ["m.safetensors"]  # no temp files


def test_train_is_bit_reproducible(e2e):
    for key in ("a", "b"):
        (run,) = e2e[f"train-{key}"]
        assert run.returncode == 0, run.stderr
    ta, tb = load_file(e2e.paths["a"]), load_file(e2e.paths["b"])
    assert set(ta) == set(tb) and "embed.W_E" in ta
    for name in ta:
        assert ta[name].dtype == tb[name].dtype == torch.float32
        assert ta[name].shape == tb[name].shape
        assert ta[name].numpy().tobytes() == tb[name].numpy().tobytes(), name
    assert not torch.equal(ta["embed.W_E"], tl_tensors(seed=7)["embed.W_E"])  # it trained


def test_train_seeds_writes_each_and_skips_existing(e2e):
    runs = e2e["train-seeds"]
    seeds_dir = e2e.paths["seeds"]
    records = ok_json(runs["first"])
    assert [(r["seed"], r["status"]) for r in records] == [(1, "trained"), (2, "trained")]
    assert sorted(p.name for p in seeds_dir.iterdir()) == [
        "seed-1.safetensors",
        "seed-2.safetensors",
    ]
    for seed in (1, 2):
        assert load_model(seeds_dir / f"seed-{seed}.safetensors").provenance["seed"] == seed
    rerun = ok_json(runs["rerun"])
    assert [(r["seed"], r["status"]) for r in rerun] == [(1, "exists"), (2, "exists")]
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in seeds_dir.iterdir()}
    assert after == runs["before"]


def test_prove_and_verify_small_model_in_process(small_models, tmp_path, capsys):
    cert = tmp_path / "cert.json"
    proved = ok_json(
        run_in_process(["prove", small_models["good"], "--json", "--certificate-out", cert], capsys)
    )
    verified = ok_json(run_in_process(["verify", small_models["good"], cert, "--json"], capsys))
    expected = exact_accuracy(load_model(small_models["good"]).model)
    by_id = {r["strategy"]: r for r in proved}
    assert by_id["brute-force"]["correct_count"] == expected.correct
    assert 0 <= by_id["cubic"]["correct_count"] <= expected.correct
    for p, v in zip(proved, verified, strict=True):
        assert (v["strategy"], v["correct_count"], v["flops"]) == (
            p["strategy"],
            p["correct_count"],
            p["flops"],
        )


def test_strategies_table_in_process(capsys):
    run = run_in_process(["strategies"], capsys)
    assert run.returncode == 0
    assert "brute-force" in run.stdout and "cubic" in run.stdout


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bad_input_fails_cleanly(cases, e2e, name, capsys):
    case = cases[name]
    if case.e2e:
        (run,) = e2e[f"bad:{name}"]
    else:
        run = run_in_process(case.args, capsys)
    assert_clean_error(run, case.contains)
    for path in case.absent:
        assert not path.exists(), f"{path} was created"
    if case.check is not None:
        case.check()


def test_e2e_covers_every_kind_of_bad_input(cases):
    """The subprocess runs include a model-file, a prove, a train and a verify failure."""
    e2e_names = [n for n, c in cases.items() if c.e2e]
    for prefix in ("model-", "prove-", "train-", "verify-"):
        assert any(n.startswith(prefix) for n in e2e_names), prefix


def test_exit_status_2_for_usage_errors_1_otherwise(e2e):
    for name in ("train-d-vocab-zero", "train-negative-seed", "train-steps-not-a-number"):
        (run,) = e2e[f"bad:{name}"]
        assert run.returncode == 2, name
    for name in ("model-missing", "model-nan", "verify-different-model", "train-seeds-nonsense"):
        (run,) = e2e[f"bad:{name}"]
        assert run.returncode == 1, name


def test_verify_rejects_certificate_for_other_weights_even_with_same_config(small_models):
    """The case above is meaningful: same architecture, different weights."""
    good, other = (load_model(small_models[k]) for k in ("good", "other"))
    assert good.cfg == other.cfg
    assert weights_digest(good.model) != weights_digest(other.model)


def test_verify_is_rigorous_by_default_and_fast_is_labelled(small_models, tmp_path, capsys):
    """`verify` re-checks saved certificates rigorously unless --fast; every record and the
    text table say which arithmetic was used, and --fast says it is not a proof. The old
    --rigorous flag is still accepted (it is the default)."""
    cert = tmp_path / "cert.json"
    ids = "cubic,EUPU-mean-query+max-diff--attn-mean-query+diff--attn-err-svd,separable"
    model = small_models["good"]
    run_in_process(["prove", model, "--strategy", ids, "--certificate-out", cert], capsys)
    default = ok_json(run_in_process(["verify", model, cert, "--json"], capsys))
    fast = ok_json(run_in_process(["verify", model, cert, "--json", "--fast"], capsys))
    old = ok_json(run_in_process(["verify", model, cert, "--json", "--rigorous"], capsys))
    for a, b, c in zip(default, fast, old, strict=True):
        assert a["rigorous"] and a["arithmetic"] in ("ball", "interval")
        assert not b["rigorous"] and b["arithmetic"] == "float64"
        assert c["rigorous"] and c["correct_count"] == a["correct_count"]
    table = run_in_process(["verify", model, cert], capsys).stdout
    assert "rigorous: every bound is a proof" in table
    table = run_in_process(["verify", model, cert, "--fast"], capsys).stdout
    assert "NOT A PROOF" in table


# -- the same loader errors from prove and check -----------------------------------------------


@pytest.fixture(scope="module")
def bundled_certificate(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cert") / "cubic.json"
    assert main(["prove", "--strategy", "cubic", "--certificate-out", str(path), "--json"]) == 0
    return path


def test_check_refuses_every_bad_model_file_like_prove(tmp_path, bundled_certificate, capsys):
    """`check` reads model files with its own code, yet refuses every bad file `prove` refuses,
    with one clean line naming the file (never a library's raw message)."""
    good = tmp_path / "good.safetensors"
    good.write_bytes(bundled_model_path().read_bytes())
    for name, path in bad_model_files(tmp_path / "bad", good).items():
        proved = assert_clean_error(run_in_process(["prove", path, "--strategy", "cubic"], capsys))
        checked = assert_clean_error(run_in_process(["check", path, bundled_certificate], capsys))
        for line in (proved, checked):
            assert str(path) in line, (name, line)
            assert "deserializ" not in line.lower() and "Error(" not in line, (name, line)


@pytest.mark.parametrize("keep", [3, 8, 200, 1000, 3000, 30000])
def test_truncated_model_gives_the_same_error_in_prove_and_check(
    keep, tmp_path, bundled_certificate, capsys
):
    path = tmp_path / "truncated.safetensors"
    path.write_bytes(bundled_model_path().read_bytes()[:keep])
    proved = assert_clean_error(run_in_process(["prove", path, "--strategy", "cubic"], capsys))
    checked = assert_clean_error(run_in_process(["check", path, bundled_certificate], capsys))
    assert "not a valid safetensors file" in proved and "not a valid safetensors file" in checked
    if keep > 200:  # past the header: the byte ranges of the tensors are the problem
        assert checked == proved
