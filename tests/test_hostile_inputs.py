"""Hostile model files and certificates: every one is refused with a one-line project error.

Hand-built cases cover each way a file can lie (sizes, offsets, dtypes, shapes, values,
metadata, JSON bombs, digests); property-based fuzzing mutates valid files (bit flips,
truncation, splicing, header and JSON edits) and asserts that the loaders either return a
valid object or raise an error of `compact_proofs.errors`, never another exception. Loaded
fuzzed certificates are also verified: verification must be sound or refuse cleanly. A few
hostile files go through the command line as subprocesses. Models are tiny (v=8, k=3, d=4).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from compact_proofs.cli import main
from compact_proofs.errors import (
    CertificateError,
    CompactProofsError,
    ModelFileError,
    UnsupportedModelError,
)
from compact_proofs.model import file_format as modelfile
from compact_proofs.model.file_format import (
    METADATA_KEY,
    TL_NAMES,
    ModelFile,
    load_model,
    save_model,
    weights_digest,
)
from compact_proofs.model.transformer import AttnOnlyTransformer, ModelConfig, build_model
from compact_proofs.proofs import certificates, tensor_codec
from compact_proofs.proofs.certificates import CertificateFile, load_certificates, save_certificates
from compact_proofs.proofs.exhaustive import exact_accuracy
from compact_proofs.proofs.registry import get_strategy
from compact_proofs.proofs.runner import prove, verify_certificates
from compact_proofs.proofs.subcubic.config import SubcubicConfig
from compact_proofs.proofs.tensor_codec import decode_tensor, encode_tensor
from compact_proofs.soundness import checker
from compact_proofs.soundness.checker.errors import CheckerError

CFG = ModelConfig(d_vocab=8, n_ctx=3, d_model=4, d_head=4, n_heads=1)
SUBCUBIC = SubcubicConfig().id
SRC = Path(__file__).resolve().parents[1] / "src"
FUZZ = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# -- building files ----------------------------------------------------------------------------


def split(raw: bytes) -> tuple[dict, bytes]:
    """A safetensors file's header (as JSON) and its data section."""
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def join(header: dict | bytes, data: bytes) -> bytes:
    """A safetensors file from a header (JSON object or raw bytes) and a data section."""
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    return len(h).to_bytes(8, "little") + h + data


def tl_tensors(model: AttnOnlyTransformer) -> dict[str, torch.Tensor]:
    return {TL_NAMES[n]: t.clone().contiguous() for n, t in model.weights().items()}


def file_bytes(tensors: dict[str, torch.Tensor], tmp: Path, meta: dict | None = None) -> bytes:
    path = tmp / "scratch.safetensors"
    save_file(tensors, str(path), metadata=meta)
    return path.read_bytes()


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict:
    """A valid model file, a valid certificate for it (cubic and one sub-cubic strategy), their
    bytes, and the model's exact number of correctly classified inputs."""
    d = tmp_path_factory.mktemp("base")
    model = build_model(CFG, seed=3)
    model_path = d / "good.safetensors"
    save_model(model, model_path, {"note": "hostile-input tests"})
    model = load_model(model_path).model
    certs = [prove(model, get_strategy(s))[1] for s in ("cubic", SUBCUBIC)]
    cert_path = d / "cert.json"
    save_certificates(cert_path, CertificateFile(weights_digest(model), CFG, certs))
    return {
        "dir": d,
        "model": model,
        "model_path": model_path,
        "model_bytes": model_path.read_bytes(),
        "cert_path": cert_path,
        "cert_doc": json.loads(cert_path.read_text()),
        "exact": exact_accuracy(model).correct,
    }


def assert_one_line(exc: BaseException) -> str:
    message = str(exc)
    assert message and "\n" not in message and "Traceback" not in message, message
    assert len(message) < 1000, message
    return message


def refused(path: Path, error: type[CompactProofsError] = CompactProofsError) -> str:
    """Load `path` as a model; it must be refused with `error`. Returns the message."""
    with pytest.raises(error) as info:
        load_model(path)
    return assert_one_line(info.value)


# -- model files: hand-built cases -------------------------------------------------------------


def model_cases(raw: bytes, tmp: Path, model: AttnOnlyTransformer) -> dict[str, tuple]:
    """name -> (file bytes, expected error class, substring of the message)."""
    header, data = split(raw)
    meta = json.loads(header["__metadata__"][METADATA_KEY])

    def edit(name: str, **changes) -> bytes:
        h = json.loads(json.dumps(header))
        h[name].update(changes)
        return join(h, data)

    def with_meta(**changes) -> bytes:
        m = json.loads(json.dumps(meta))
        for key, value in changes.items():
            if key in m["config"] or key.startswith("cfg_"):
                m["config"][key.removeprefix("cfg_")] = value
            else:
                m[key] = value
        h = json.loads(json.dumps(header))
        h["__metadata__"][METADATA_KEY] = json.dumps(m)
        return join(h, data)

    def raw_meta(text: str) -> bytes:
        h = json.loads(json.dumps(header))
        h["__metadata__"][METADATA_KEY] = text
        return join(h, data)

    def tensors(**changes) -> bytes:
        t = tl_tensors(model)
        for key, value in changes.items():
            name = TL_NAMES.get(key, key)
            if value is None:
                del t[name]
            else:
                t[name] = value
        return file_bytes(t, tmp)

    w_e = model.W_E.detach()
    nan_w = w_e.clone()
    nan_w[1, 2] = float("nan")
    inf_u = model.W_U.detach().clone()
    inf_u[0, 0] = float("inf")
    ninf_b = torch.zeros(CFG.d_model)
    ninf_b[1] = float("-inf")
    n = int.from_bytes(raw[:8], "little")
    first_key = next(k for k in header if k != "__metadata__")
    dup = json.dumps(header).encode()
    dup = dup[:-1] + b', "embed.W_E": ' + json.dumps(header["embed.W_E"]).encode() + b"}"
    data_start = 8 + n
    F, U = ModelFileError, UnsupportedModelError
    return {
        # the container
        "empty": (b"", F, "safetensors"),
        "seven-bytes": (b"\x10\0\0\0\0\0\0", F, "safetensors"),
        "garbage": (np.random.default_rng(0).bytes(3000), F, "safetensors"),
        "text": (b"not a model at all\n" * 50, F, "safetensors"),
        "truncated-in-length": (raw[:5], F, "safetensors"),
        "truncated-in-header": (raw[: 8 + n // 2], F, "safetensors"),
        "truncated-in-data": (raw[: data_start + 10], F, "truncated"),
        "truncated-last-byte": (raw[:-1], F, "safetensors"),
        "header-length-2^64-1": (b"\xff" * 8 + raw[8:], F, "header length"),
        "header-length-past-end": ((len(raw)).to_bytes(8, "little") + raw[8:], F, "exceeds"),
        "header-length-zero": (b"\0" * 8 + raw[8:], F, "safetensors"),
        "header-not-json": (join(b"{not json", b""), F, "JSON"),
        "header-not-utf8": (join(b'{"\xff\xfe": 1}', b""), F, "UTF-8"),
        "header-a-list": (join(b"[1, 2]", b""), F, "JSON object"),
        "header-deeply-nested": (join(b"[" * 60_000 + b"]" * 60_000, b""), F, "JSON"),
        "header-huge-array": (join(b"[" + b"0," * 100_000 + b"0]", b""), F, "limit"),
        "header-many-objects": (join(b"[" + b"{}," * 70_000 + b"{}]", b""), F, "limit"),
        "header-nan-literal": (join(b'{"x": NaN}', b""), F, "NaN"),
        "header-duplicate-key": (join(dup, data), F, "duplicate"),
        "trailing-bytes": (raw + b"\0" * 16, F, "data bytes"),
        # one entry
        "entry-not-object": (edit_raw(header, data, first_key, 7), F, "dtype, shape"),
        "entry-extra-key": (edit("embed.W_E", extra=1), F, "dtype, shape"),
        "unknown-dtype": (edit("embed.W_E", dtype="F33"), F, "unknown dtype"),
        "shape-not-list": (edit("embed.W_E", shape="8x4"), F, "shape"),
        "shape-negative": (edit("embed.W_E", shape=[-8, -4]), F, "shape"),
        "shape-bool": (edit("embed.W_E", shape=[True, 32]), F, "shape"),
        "shape-float": (edit("embed.W_E", shape=[8.0, 4]), F, "shape"),
        "shape-2^40x2^40": (edit("embed.W_E", shape=[2**40, 2**40]), F, "absurd"),
        "shape-many-dims": (edit("embed.W_E", shape=[1] * 10_000), F, "shape"),
        "shape-vs-bytes": (edit("embed.W_E", shape=[4, 4]), F, "needs"),
        "dtype-vs-bytes": (edit("embed.W_E", dtype="F64"), F, "needs"),
        "offsets-past-end": (edit("embed.W_E", data_offsets=[0, 2**62]), F, "outside"),
        "offsets-reversed": (edit("embed.W_E", data_offsets=[128, 0]), F, "outside"),
        "offsets-negative": (edit("embed.W_E", data_offsets=[-128, 0]), F, "outside"),
        "offsets-three": (edit("embed.W_E", data_offsets=[0, 64, 128]), F, "outside"),
        "offsets-overlap": (overlap(header, data), F, "starts at byte"),
        "metadata-not-strings": (edit_raw(header, data, "__metadata__", {"a": 1}), F, "strings"),
        # the tensors as a model
        "nan-weight": (tensors(W_E=nan_w), F, "NaN"),
        "inf-weight": (tensors(W_U=inf_u), F, "Inf"),
        "minus-inf-bias": (tensors(b_O=ninf_b), F, "blocks.0.attn.b_O"),
        "float16": (tensors(**{k: v.half() for k, v in model.weights().items()}), F, "float16"),
        "bfloat16": (tensors(W_E=w_e.bfloat16()), F, "bfloat16"),
        "float64": (tensors(W_E=w_e.double()), F, "float64"),
        "int32": (tensors(W_E=w_e.int()), F, "int32"),
        "bool": (tensors(W_E=w_e > 0), F, "bool"),
        "missing-tensor": (tensors(W_V=None), F, "blocks.0.attn.W_V"),
        "extra-tensor": (tensors(**{"hello.world": torch.zeros(2)}), F, "hello.world"),
        "second-layer": (tensors(**{"blocks.1.attn.W_Q": model.W_Q.detach()}), U, "layers"),
        "empty-tensor": (tensors(W_E=torch.zeros(0, 4)), F, "empty"),
        "rank-1-embedding": (tensors(W_E=torch.zeros(8)), F, "embed.W_E"),
        "heads-disagree": (tensors(W_K=torch.zeros(2, 4, 4)), F, "blocks.0.attn.W_K"),
        "d-model-disagrees": (tensors(W_U=torch.zeros(5, 8)), F, "unembed.W_U"),
        "vocab-out-differs": (tensors(W_U=torch.zeros(4, 9)), U, "d_vocab_out"),
        "too-many-inputs": (
            tensors(W_pos=torch.zeros(1001, 4), b_O=None, b_U=None),
            U,
            "d_vocab^n_ctx",
        ),
        # the metadata
        "metadata-lies-d-vocab": (with_meta(cfg_d_vocab=64), F, "inconsistent"),
        "metadata-lies-n-heads": (with_meta(cfg_n_heads=2), F, "inconsistent"),
        "metadata-zero-size": (with_meta(cfg_d_model=0), F, "positive integer"),
        "metadata-negative-size": (with_meta(cfg_n_ctx=-3), F, "positive integer"),
        "metadata-absurd-size": (with_meta(cfg_d_vocab=10**30), F, "inconsistent"),
        "metadata-bool-size": (with_meta(cfg_n_heads=True), F, "integers"),
        "metadata-string-size": (with_meta(cfg_n_heads="1"), F, "integers"),
        "metadata-extra-field": (with_meta(cfg_n_layers=1), F, "integers"),
        "metadata-config-missing": (with_meta(config=None), F, "config"),
        "metadata-version": (with_meta(format_version=2), F, "format_version"),
        "metadata-provenance-list": (with_meta(provenance=[1]), F, "provenance"),
        "metadata-not-json": (raw_meta("{nope"), F, "metadata"),
        "metadata-a-list": (raw_meta("[]"), F, "metadata"),
        "metadata-deep": (raw_meta("[" * 50_000 + "]" * 50_000), F, "metadata"),
        "metadata-nan": (raw_meta('{"config": NaN}'), F, "NaN"),
        "metadata-huge-number": (raw_meta('{"config": 1e999}'), F, "range"),
        "metadata-duplicate-key": (raw_meta('{"config": {}, "config": {}}'), F, "duplicate"),
    }


def edit_raw(header: dict, data: bytes, key: str, value: object) -> bytes:
    h = json.loads(json.dumps(header))
    h[key] = value
    return join(h, data)


def overlap(header: dict, data: bytes) -> bytes:
    """Two tensors' byte ranges overlap (and so the last bytes are covered by none)."""
    h = json.loads(json.dumps(header))
    end = h["embed.W_E"]["data_offsets"][1]
    other = next(k for k, v in h.items() if k != "__metadata__" and v["data_offsets"][0] == end)
    b2, e2 = h[other]["data_offsets"]
    h[other]["data_offsets"] = [b2 - 4, e2 - 4]
    return join(h, data)


@pytest.fixture(scope="module")
def hostile_models(base, tmp_path_factory) -> dict[str, tuple[Path, type, str]]:
    d = tmp_path_factory.mktemp("hostile-models")
    out = {}
    for name, (content, error, contains) in model_cases(
        base["model_bytes"], d, base["model"]
    ).items():
        path = d / f"{name}.safetensors"
        path.write_bytes(content)
        out[name] = (path, error, contains)
    return out


def test_every_hostile_model_is_refused_with_a_clear_error(hostile_models):
    failures = []
    for name, (path, error, contains) in hostile_models.items():
        try:
            load_model(path)
        except CompactProofsError as exc:
            message = assert_one_line(exc)
            if type(exc) is not error or contains.lower() not in message.lower():
                failures.append(f"{name}: {type(exc).__name__}: {message}")
        except Exception as exc:  # the point of the test
            failures.append(f"{name}: leaked {type(exc).__name__}: {exc}")
        else:
            failures.append(f"{name}: loaded")
    assert not failures, "\n".join(failures)


def test_special_paths_are_refused(tmp_path):
    assert "not found" in refused(tmp_path / "nope.safetensors", ModelFileError)
    assert "directory" in refused(tmp_path, ModelFileError)
    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "fifo.safetensors"
        os.mkfifo(fifo)
        assert "regular file" in refused(fifo, ModelFileError)  # and does not block on open


def test_unreadable_paths_raise_project_errors(tmp_path):
    """OS-level failures (here: a name longer than the file system allows) are project errors
    at library level too, not bare OSError."""
    long = tmp_path / ("m" * 5000)
    with pytest.raises(ModelFileError, match="too long") as info:
        load_model(long)
    assert "\n" not in str(info.value)  # (long: it names the 5000-character path)
    with pytest.raises(CertificateError, match="too long") as info:
        load_certificates(long)
    assert "\n" not in str(info.value)


def test_huge_header_length_within_a_big_file_is_refused(tmp_path, base):
    """A header longer than MAX_HEADER_BYTES is refused even when the file is that long."""
    n = modelfile.MAX_HEADER_BYTES + 1
    path = tmp_path / "long-header.safetensors"
    with open(path, "wb") as f:
        f.write(n.to_bytes(8, "little"))
        f.truncate(8 + n + 64)  # sparse: costs no disk
    assert "limit" in refused(path, ModelFileError)


def test_sparse_terabyte_model_is_refused_before_reading(tmp_path):
    """Declared sizes that fit in a (sparse) file but exceed the limits allocate nothing."""
    v, d = 2**14, 2**13
    shapes = {
        "embed.W_E": [v, d],
        "pos_embed.W_pos": [3, d],
        "blocks.0.attn.W_Q": [1, d, 8],
        "blocks.0.attn.W_K": [1, d, 8],
        "blocks.0.attn.W_V": [1, d, 8],
        "blocks.0.attn.W_O": [1, 8, d],
        "unembed.W_U": [d, v],
    }
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = 4 * math.prod(shape)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    path = tmp_path / "sparse.safetensors"
    h = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little") + h)
        f.truncate(8 + len(h) + offset)
    assert path.stat().st_size > 2**30
    tracemalloc.start()
    try:
        assert "limit" in refused(path, UnsupportedModelError)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20, peak


def test_dimension_limit(tmp_path, base, monkeypatch):
    monkeypatch.setattr(modelfile, "MAX_DIMENSION", 7)
    assert "d_vocab = 8 exceeds" in refused(base["model_path"], UnsupportedModelError)


def test_ignored_buffers_are_not_read_but_are_validated(tmp_path, base):
    """TransformerLens buffers may hold -inf (IGNORE) and bools; their ranges are still
    checked like every other tensor's."""
    t = tl_tensors(base["model"])
    t["blocks.0.attn.IGNORE"] = torch.tensor(float("-inf"))
    t["blocks.0.attn.mask"] = torch.ones(3, 3, dtype=torch.bool).tril()
    path = tmp_path / "tl.safetensors"
    save_file(t, str(path))
    assert weights_digest(load_model(path).model) == weights_digest(base["model"])
    header, data = split(path.read_bytes())
    header["blocks.0.attn.mask"]["shape"] = [3, 4]
    path.write_bytes(join(header, data))
    assert "needs" in refused(path, ModelFileError)


def test_valid_files_still_load_exactly(base):
    mf = load_model(base["model_path"])
    assert mf.cfg == CFG and mf.provenance["note"] == "hostile-input tests"
    assert weights_digest(mf.model) == weights_digest(base["model"])


# -- certificates: hand-built cases ------------------------------------------------------------


def certificate_cases(doc: dict) -> dict[str, tuple[str | bytes, str]]:
    """name -> (file content, substring of the CertificateError message)."""

    def with_(**changes) -> str:
        d = json.loads(json.dumps(doc))
        for key, value in changes.items():
            if value is None:
                del d[key]
            else:
                d[key] = value
        return json.dumps(d)

    def entry(strategy: object = "cubic", payload: object = None, **extra) -> str:
        e = {"strategy": strategy, "payload": {} if payload is None else payload, **extra}
        return with_(certificates=[e])

    def sub_tensor(name: str, spec: object) -> str:
        d = json.loads(json.dumps(doc))
        sub = next(c for c in d["certificates"] if c["strategy"] == SUBCUBIC)
        if name == "min_gaps":
            sub["payload"]["min_gaps"] = spec
        else:
            sub["payload"]["directions"][name] = spec
        return json.dumps(d)

    def spec(dtype: object = "float64", shape: object = (8,), b64: object = None) -> dict:
        if b64 is None:
            b64 = encode_tensor(torch.zeros(8, dtype=torch.float64))["__tensor__"]["base64"]
        shape = list(shape) if isinstance(shape, tuple) else shape
        return {"__tensor__": {"dtype": dtype, "shape": shape, "base64": b64}}

    good_b64 = encode_tensor(torch.zeros(8, dtype=torch.float64))["__tensor__"]["base64"]
    cfg = doc["model_config"]
    return {
        "empty": ("", "JSON"),
        "garbage": (np.random.default_rng(1).bytes(2000), "JSON"),
        "not-utf8": (b'{"format": "\xff"}', "UTF-8"),
        "not-json": ("certificate, trust me", "JSON"),
        "json-list": ("[1, 2, 3]", "not a compact-proofs certificate"),
        "json-string": ('"compact-proofs-certificate"', "not a compact-proofs certificate"),
        "json-null": ("null", "not a compact-proofs certificate"),
        "json-number": ("1e5", "not a compact-proofs certificate"),
        "deeply-nested": ("[" * 100_000 + "]" * 100_000, "JSON"),
        "huge-array": ("[" + "0," * (2**20 + 10) + "0]", "limit"),
        "nan-literal": (with_(library_version=0)[:-1] + ', "x": NaN}', "NaN"),
        "huge-number": ('{"format": 1e999}', "range"),
        "duplicate-key": (json.dumps(doc)[:-1] + ', "model_sha256": "00"}', "duplicate"),
        "wrong-format": (with_(format="something-else"), "not a compact-proofs"),
        "version-2": (with_(format_version=2), "version"),
        "version-string": (with_(format_version="1"), "version"),
        "version-true": (with_(format_version=True), "version"),
        "missing-certificates": (with_(certificates=None), "missing certificates"),
        "missing-digest": (with_(model_sha256=None), "missing model_sha256"),
        "missing-config": (with_(model_config=None), "missing model_config"),
        "unknown-field": (with_(extra=1), "unknown"),
        "library-version-int": (with_(library_version=3), "library_version"),
        "digest-short": (with_(model_sha256="abc"), "64 lowercase hex"),
        "digest-upper": (with_(model_sha256=doc["model_sha256"].upper()), "64 lowercase hex"),
        "digest-int": (with_(model_sha256=12), "64 lowercase hex"),
        "config-list": (with_(model_config=[8, 3]), "model_config"),
        "config-missing-field": (with_(model_config={"d_vocab": 8}), "model_config"),
        "config-zero": (with_(model_config={**cfg, "d_vocab": 0}), "positive integer"),
        "config-negative": (with_(model_config={**cfg, "n_heads": -1}), "positive integer"),
        "config-bool": (with_(model_config={**cfg, "n_heads": True}), "integers"),
        "config-absurd": (with_(model_config={**cfg, "d_model": 2**60}), "exceeds"),
        "config-too-many-inputs": (with_(model_config={**cfg, "n_ctx": 400}), "d_vocab^n_ctx"),
        "config-float": (with_(model_config={**cfg, "n_ctx": float(cfg["n_ctx"])}), "integers"),
        "certificates-string": (with_(certificates="abc"), "must be a list"),
        "entry-number": (with_(certificates=[1]), "entry 0"),
        "entry-missing-payload": (with_(certificates=[{"strategy": "cubic"}]), "entry 0"),
        "entry-extra-key": (entry(extra=1), "entry 0"),
        "strategy-int": (entry(strategy=5), "string strategy"),
        "payload-list": (entry(payload=[["a", 1]]), "object payload"),
        "unknown-strategy": (entry(strategy="no-such-proof"), "unknown strategy"),
        "tensor-float16": (sub_tensor("u_Q", spec(dtype="float16")), "dtype"),
        "tensor-object-dtype": (sub_tensor("u_Q", spec(dtype="object")), "dtype"),
        "tensor-dtype-int": (sub_tensor("u_Q", spec(dtype=5)), "dtype"),
        "tensor-negative-shape": (sub_tensor("u_Q", spec(shape=(-8,))), "shape"),
        "tensor-bool-shape": (sub_tensor("u_Q", spec(shape=(True, 8))), "shape"),
        "tensor-string-shape": (sub_tensor("u_Q", spec(shape="8")), "shape"),
        "tensor-huge-shape": (sub_tensor("u_Q", spec(shape=(2**40, 2**40))), "limit"),
        "tensor-many-dims": (sub_tensor("u_Q", spec(shape=(1,) * 100)), "shape"),
        "tensor-shape-vs-bytes": (sub_tensor("u_Q", spec(shape=(9,))), "needs"),
        "tensor-dtype-vs-bytes": (sub_tensor("u_Q", spec(dtype="float32")), "needs"),
        "tensor-base64-garbage": (sub_tensor("u_Q", spec(b64="!" * len(good_b64))), "base64"),
        "tensor-base64-int": (sub_tensor("u_Q", spec(b64=123)), "base64"),
        "tensor-base64-short": (sub_tensor("u_Q", spec(b64=good_b64[:-4])), "needs"),
        "tensor-extra-key": (
            sub_tensor("u_Q", {"__tensor__": {**spec()["__tensor__"], "x": 1}}),
            "exactly dtype",
        ),
        "tensor-not-object": (sub_tensor("u_Q", {"__tensor__": [1, 2]}), "exactly dtype"),
        "tensor-sibling-key": (sub_tensor("u_Q", {**spec(), "y": 2}), "single key"),
    }


@pytest.fixture(scope="module")
def hostile_certificates(base, tmp_path_factory) -> dict[str, tuple[Path, str]]:
    d = tmp_path_factory.mktemp("hostile-certificates")
    out = {}
    for name, (content, contains) in certificate_cases(base["cert_doc"]).items():
        path = d / f"{name}.json"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        out[name] = (path, contains)
    return out


def test_every_hostile_certificate_is_refused_with_a_clear_error(hostile_certificates):
    failures = []
    for name, (path, contains) in hostile_certificates.items():
        try:
            load_certificates(path)
        except CertificateError as exc:
            message = assert_one_line(exc)
            if contains.lower() not in message.lower():
                failures.append(f"{name}: {message}")
        except Exception as exc:  # the point of the test
            failures.append(f"{name}: leaked {type(exc).__name__}: {exc}")
        else:
            failures.append(f"{name}: loaded")
    assert not failures, "\n".join(failures)


def test_enormous_certificate_is_refused_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "enormous.json"
    with open(path, "wb") as f:
        f.truncate(certificates.MAX_CERTIFICATE_BYTES + 1)  # sparse
    tracemalloc.start()
    try:
        with pytest.raises(CertificateError, match="larger than the limit") as info:
            load_certificates(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert_one_line(info.value)
    assert peak < 2**20, peak
    small = tmp_path / "small.json"
    small.write_text(" " * 2000 + "{}")
    monkeypatch.setattr(certificates, "MAX_CERTIFICATE_BYTES", 1000)
    with pytest.raises(CertificateError, match="larger than the limit"):
        load_certificates(small)


def test_certificate_special_paths(tmp_path):
    for path, contains in ((tmp_path / "nope.json", "not found"), (tmp_path, "regular file")):
        with pytest.raises(CertificateError, match=contains) as info:
            load_certificates(path)
        assert_one_line(info.value)


def _payload_case(base, name: str) -> CertificateFile:
    """The valid certificate with the sub-cubic payload's values made bad (structure valid)."""
    cert = load_certificates(base["cert_path"])
    payload = next(c.payload for c in cert.certificates if c.strategy == SUBCUBIC)
    gaps = decode_tensor(payload["min_gaps"])
    v, k = CFG.d_vocab, CFG.n_ctx
    if name == "nan-direction":
        payload["directions"]["u_Q"] = encode_tensor(torch.full((CFG.d_model,), float("nan")))
    elif name == "inf-direction":
        payload["directions"]["key_dir"] = encode_tensor(torch.full((v,), float("inf")))
    elif name == "zero-gap":
        gaps[1, 2, 0] = 0
        payload["min_gaps"] = encode_tensor(gaps)
    elif name == "negative-gap":
        payload["min_gaps"] = encode_tensor(gaps.to(torch.int16) - 5)
    elif name == "float-gaps":
        payload["min_gaps"] = encode_tensor(gaps.double())
    elif name == "bool-gaps":
        payload["min_gaps"] = encode_tensor(torch.ones(v, v, k, dtype=torch.bool))
    elif name == "gaps-wrong-shape":
        payload["min_gaps"] = encode_tensor(gaps[:, :, :2])
    elif name == "direction-wrong-shape":
        payload["directions"]["u_K"] = encode_tensor(torch.zeros(CFG.d_model + 1))
    elif name == "missing-directions":
        del payload["directions"]
    elif name == "payload-for-other-strategy":
        payload["config"] = "cubic"
    return cert


@pytest.mark.parametrize(
    "name",
    [
        "nan-direction",
        "inf-direction",
        "zero-gap",
        "negative-gap",
        "float-gaps",
        "bool-gaps",
        "gaps-wrong-shape",
        "direction-wrong-shape",
        "missing-directions",
        "payload-for-other-strategy",
    ],
)
def test_bad_payload_values_are_refused_by_verification(base, name):
    cert = _payload_case(base, name)
    with pytest.raises(CertificateError) as info:
        verify_certificates(base["model"], cert)
    assert_one_line(info.value)


def test_bool_tensor_bytes_other_than_0_and_1_are_refused():
    obj = encode_tensor(torch.ones(3, dtype=torch.bool))
    obj["__tensor__"]["base64"] = "AgIC"  # bytes 2, 2, 2
    with pytest.raises(CertificateError, match="0 and 1"):
        decode_tensor(obj)


def test_certificate_for_a_different_model_is_refused(base):
    other = build_model(CFG, seed=4)
    with pytest.raises(CertificateError, match="different model") as info:
        verify_certificates(other, load_certificates(base["cert_path"]))
    assert_one_line(info.value)


def test_valid_certificate_still_verifies(base):
    results = verify_certificates(base["model"], load_certificates(base["cert_path"]))
    assert [r.strategy for r in results] == ["cubic", SUBCUBIC]
    assert all(0 <= r.correct_count <= base["exact"] for r in results)


# -- property-based fuzzing ----------------------------------------------------------------------


@st.composite
def byte_mutations(draw, raw: bytes) -> tuple[str, bytes]:
    """One mutation of `raw`: bit flips, truncation, splicing, or a header/length edit."""
    kind = draw(st.sampled_from(["flip", "truncate", "splice", "overwrite", "length", "repeat"]))
    b = bytearray(raw)
    if kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(b) - 1))
            b[i] ^= 1 << draw(st.integers(0, 7))
    elif kind == "truncate":
        b = b[: draw(st.integers(0, len(b) - 1))]
    elif kind == "splice":
        i = draw(st.integers(0, len(b)))
        b[i:i] = draw(st.binary(min_size=1, max_size=64))
    elif kind == "overwrite":
        i = draw(st.integers(0, len(b) - 1))
        chunk = draw(st.binary(min_size=1, max_size=32))
        b[i : i + len(chunk)] = chunk
    elif kind == "length":  # the 8-byte header length
        value = draw(st.one_of(st.integers(0, 2**64 - 1), st.integers(0, len(b) + 16)))
        b[:8] = value.to_bytes(8, "little")
    else:  # a slice of the file copied elsewhere
        i = draw(st.integers(0, len(b) - 1))
        j = draw(st.integers(i, min(len(b), i + 256)))
        k = draw(st.integers(0, len(b)))
        b[k:k] = b[i:j]
    return kind, bytes(b)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)
INTERESTING = st.sampled_from(
    [0, -1, 1, 2**31, 2**40, 2**63, 2**64, True, "F16", "F64", "I32", "BOOL", [], [0], [2**40]]
)


def _paths(doc: object, prefix: tuple = ()) -> list[tuple]:
    """Every path (tuple of keys/indices) to a node of a JSON document."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def json_edits(draw, doc: dict) -> dict:
    """`doc` with one node replaced by another JSON value, or deleted."""
    doc = json.loads(json.dumps(doc))
    path = draw(st.sampled_from(_paths(doc)[1:]))
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if draw(st.booleans()) and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(st.one_of(INTERESTING, JSON_VALUES))
    return doc


def check_model_outcome(path: Path) -> ModelFile | None:
    """Load a fuzzed model: a valid model (finite float32 weights, shapes of its config) or a
    one-line project error; anything else fails the test."""
    try:
        mf = load_model(path)
    except CompactProofsError as exc:
        assert_one_line(exc)
        return None
    for name, t in mf.model.weights().items():
        assert t.dtype == torch.float32 and bool(torch.isfinite(t).all()), name
        assert tuple(t.shape) == mf.cfg.shapes()[name], name
    return mf


def check_certificate_outcome(path: Path, base: dict) -> None:
    """Load a fuzzed certificate, then verify it: either step may refuse (one-line project
    error); whatever verification certifies must be sound (at most the exact count)."""
    try:
        cert = load_certificates(path)
    except CertificateError as exc:
        assert_one_line(exc)
        return
    assert isinstance(cert, CertificateFile)
    try:
        results = verify_certificates(base["model"], cert)
    except CompactProofsError as exc:
        assert_one_line(exc)
        return
    for r in results:
        assert 0 <= r.correct_count <= base["exact"], (r.strategy, r.correct_count)


@FUZZ
@given(data=st.data())
def test_fuzzed_model_bytes(base, tmp_path, data):
    _, content = data.draw(byte_mutations(base["model_bytes"]))
    path = tmp_path / "fuzzed.safetensors"
    path.write_bytes(content)
    check_model_outcome(path)


@FUZZ
@given(data=st.data())
def test_fuzzed_model_headers(base, tmp_path, data):
    header, payload = split(base["model_bytes"])
    header["__metadata__"][METADATA_KEY] = json.loads(header["__metadata__"][METADATA_KEY])
    edited = data.draw(json_edits(header))
    meta = edited.get("__metadata__")
    if isinstance(meta, dict) and not isinstance(meta.get(METADATA_KEY), str | None):
        meta[METADATA_KEY] = json.dumps(meta[METADATA_KEY])
    path = tmp_path / "fuzzed.safetensors"
    path.write_bytes(join(edited, payload))
    check_model_outcome(path)


@FUZZ
@given(data=st.data())
def test_fuzzed_certificate_bytes(base, tmp_path, data):
    _, content = data.draw(byte_mutations(base["cert_path"].read_bytes()))
    path = tmp_path / "fuzzed.json"
    path.write_bytes(content)
    check_certificate_outcome(path, base)


@FUZZ
@given(data=st.data())
def test_fuzzed_certificate_json(base, tmp_path, data):
    path = tmp_path / "fuzzed.json"
    path.write_text(json.dumps(data.draw(json_edits(base["cert_doc"]))))
    check_certificate_outcome(path, base)


@FUZZ
@given(
    dtype=st.sampled_from([*sorted(tensor_codec.DTYPES), "float16", "int8", "<f8", ""]),
    shape=st.lists(st.integers(-2, 2**41), max_size=4),
    text=st.text(alphabet="ABCDEFGHabcdefgh0123456789+/=!", max_size=40),
)
def test_fuzzed_tensor_encodings(dtype, shape, text):
    try:
        t = decode_tensor({"__tensor__": {"dtype": dtype, "shape": shape, "base64": text}})
    except CertificateError as exc:
        assert_one_line(exc)
    else:
        assert list(t.shape) == shape and str(t.dtype).removeprefix("torch.") == dtype


def test_encoding_round_trips_every_dtype():
    for dtype in (torch.uint8, torch.int16, torch.int32, torch.int64, torch.bool):
        t = torch.arange(24).reshape(2, 3, 4).to(dtype)
        assert torch.equal(decode_tensor(encode_tensor(t)), t)
    for dtype in (torch.float32, torch.float64):
        t = torch.tensor([0.0, -0.0, 1e-45, 3.5, float("nan")], dtype=dtype)
        back = decode_tensor(encode_tensor(t))
        assert back.dtype == dtype and back.numpy().tobytes() == t.numpy().tobytes()
    assert decode_tensor(encode_tensor(torch.zeros(0, 5))).shape == (0, 5)


# -- the command line --------------------------------------------------------------------------


def cli_command() -> list[str]:
    """The installed console script, else `python -m compact_proofs.cli`."""
    script = Path(sys.executable).parent / "compact-proofs"
    if script.exists():
        return [str(script)]
    found = shutil.which("compact-proofs")
    return [found] if found else [sys.executable, "-m", "compact_proofs.cli"]


def run_cli(args: list[str | Path], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p)
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        [*cli_command(), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
    )


def assert_cli_error(code: int, out: str, err: str, contains: str = "") -> None:
    """The CLI's bad-input contract: non-zero exit, one `error:` line, nothing on stdout."""
    lines = err.splitlines()
    assert code != 0 and out == "" and "Traceback" not in err, (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert contains.lower() in lines[0].lower(), err


def test_cli_in_process_refuses_every_hostile_file(
    base, hostile_models, hostile_certificates, capsys
):
    """Every hostile file through `main()`: accuracy and prove for models, verify for
    certificates (an escaping exception fails the test)."""
    out = base["dir"] / "in-process-out"
    for name, (path, _, contains) in hostile_models.items():
        command = ["accuracy", str(path)]
        if name.startswith(("shape", "metadata", "nan", "header")):
            command = [
                "prove",
                str(path),
                "--strategy",
                "cubic",
                "--certificate-out",
                str(out / name / "cert.json"),
            ]
        code = main(command)
        assert_cli_error(code, *capsys.readouterr(), contains)
    for path, contains in hostile_certificates.values():
        code = main(["verify", str(base["model_path"]), str(path), "--json"])
        assert_cli_error(code, *capsys.readouterr(), contains)
    assert not out.exists()


@pytest.mark.slow
def test_cli_subprocess_refuses_hostile_files_in_one_line(
    base, hostile_models, hostile_certificates
):
    """Hostile files through the installed `compact-proofs` in subprocesses (in parallel): one
    accuracy, one prove, one verify (each process costs ~3 s of CPU importing torch)."""
    out = base["dir"] / "cli-out"
    cert = base["cert_path"]
    other = base["dir"] / "other.safetensors"
    save_model(build_model(CFG, seed=4), other)
    calls: dict[str, tuple[list, str, Path | None]] = {
        "accuracy-header-length": (
            ["accuracy", hostile_models["header-length-2^64-1"][0], "--json"],
            "header length",
            None,
        ),
        "prove-huge-shape": (
            ["prove", hostile_models["shape-2^40x2^40"][0], "--certificate-out", out / "a.json"],
            "absurd",
            out / "a.json",
        ),
        "verify-other-model": (["verify", other, cert, "--json"], "different model", None),
    }
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        runs = {name: pool.submit(run_cli, args, base["dir"]) for name, (args, *_) in calls.items()}
        for name, (_, contains, absent) in calls.items():
            run = runs[name].result()
            assert_cli_error(run.returncode, run.stdout, run.stderr, contains)
            assert absent is None or not absent.exists(), name
    assert not out.exists() or list(out.iterdir()) == []


# The independent checker reads files with its own loader; it must refuse what could make it
# read different weights or a different model than the main loader. Fields it does not use
# (extra keys, provenance, versions of other tools) it may ignore.
CHECKER_MAY_IGNORE = {
    "entry-extra-key",  # an unused key in a header entry
    "metadata-version",  # the metadata's format version (the tensors decide)
    "metadata-provenance-list",  # provenance is not read
    "too-many-inputs",  # loads; brute force refuses to enumerate, cubic and sub-cubic work
}


def test_checker_refuses_hostile_models(hostile_models):
    accepted = []
    for name, (path, _, _) in hostile_models.items():
        try:
            checker.load_model_file(path)
        except CheckerError as exc:
            assert_one_line(exc)
        else:
            accepted.append(name)
    assert set(accepted) <= CHECKER_MAY_IGNORE, accepted


def test_checker_refuses_hostile_certificates(hostile_certificates):
    accepted = []
    for name, (path, _) in hostile_certificates.items():
        try:
            checker.load_certificate_file(path)
        except CheckerError as exc:
            assert_one_line(exc)
        else:
            accepted.append(name)
    assert "duplicate-key" not in accepted and "format-version-true" not in accepted, accepted


# -- one schema: verify and check agree on every file (docs/certificate-format.md) ----------


def _verify_refuses(model, path: Path) -> bool:
    try:
        verify_certificates(model, load_certificates(path))
    except CompactProofsError as exc:
        assert_one_line(exc)
        return True
    return False


def _check_refuses(model_path: Path, path: Path) -> bool:
    try:
        checker.check_certificates(model_path, path)
    except CheckerError as exc:
        assert_one_line(exc)
        return True
    return False


def test_verify_and_check_accept_and_refuse_the_same_files(base, hostile_certificates, tmp_path):
    """Every hand-built hostile certificate, the valid one, and files that are well-formed
    but made for another configuration or with an extra field: `verify` and `check` enforce
    one written schema, so they refuse exactly the same files."""
    doc, cfg = base["cert_doc"], base["cert_doc"]["model_config"]
    extra = {
        "valid": doc,
        "config-other-n_ctx": {**doc, "model_config": {**cfg, "n_ctx": cfg["n_ctx"] + 1}},
        "config-other-d_head": {**doc, "model_config": {**cfg, "d_head": cfg["d_head"] + 1}},
        "extra-top-level-field": {**doc, "comment": "made by hand"},
        "extra-payload-tensor": {
            **doc,
            "certificates": [
                {"strategy": "cubic", "payload": {"x": {"__tensor__": {"dtype": "float64"}}}}
            ],
        },
    }
    files = {name: path for name, (path, _) in hostile_certificates.items()}
    for name, content in extra.items():
        files[name] = tmp_path / f"{name}.json"
        files[name].write_text(json.dumps(content))
    disagree = {}
    for name, path in files.items():
        verdicts = (_verify_refuses(base["model"], path), _check_refuses(base["model_path"], path))
        if verdicts[0] != verdicts[1]:
            disagree[name] = verdicts
    assert not disagree, f"(verify refuses, check refuses): {disagree}"
    assert not _verify_refuses(base["model"], files["valid"])
    assert _verify_refuses(base["model"], files["config-other-n_ctx"])
    assert _verify_refuses(base["model"], files["extra-top-level-field"])
