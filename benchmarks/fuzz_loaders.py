"""Long fuzz run of the model-file and certificate loaders (and of verification).

    python benchmarks/fuzz_loaders.py --seconds 180 [--seed 0] [--out FILE]

Mutates a valid model file and a valid certificate (v=8, k=3, d=4; cubic and the default
sub-cubic strategy) for `--seconds`, round-robin over mutation kinds, and loads every mutant
in-process. Outcomes per case:

* accepted: the loader returned a valid object (for a model: finite float32 weights of the
  shapes of its configuration); a certificate is then verified against the model, which
  either certifies a count (it must be at most the exact count: soundness) or refuses;
* rejected: the loader (or verification) raised an error of `compact_proofs.errors` with a
  non-empty one-line message;
* crash: any other exception, a multi-line or empty message, an unsound count, or a case
  that took longer than `--slow` seconds (a hang). Must be 0.

Memory is watched with tracemalloc (peak Python/numpy allocation of any single case) and
`resource.getrusage` (peak resident set of the whole process). Prints a table per mutation
kind and a summary; exits non-zero if anything crashed.
"""

from __future__ import annotations

import argparse
import base64
import json
import platform
import random
import resource
import sys
import tempfile
import time
import tracemalloc
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compact_proofs.errors import CompactProofsError
from compact_proofs.model.file_format import METADATA_KEY, load_model, save_model, weights_digest
from compact_proofs.model.transformer import ModelConfig, build_model
from compact_proofs.proofs.certificates import CertificateFile, load_certificates, save_certificates
from compact_proofs.proofs.exhaustive import exact_accuracy
from compact_proofs.proofs.registry import get_strategy
from compact_proofs.proofs.runner import prove, verify_certificates
from compact_proofs.proofs.subcubic.config import SubcubicConfig

CFG = ModelConfig(d_vocab=8, n_ctx=3, d_model=4, d_head=4, n_heads=1)
INTERESTING: list[Any] = [
    0, -1, 1, 3, 4, 8, 255, 2**31, 2**32 + 1, 2**40, 2**63, 2**64, -(2**63), 10**30, 1.5,
    True, False, None, "", "F16", "BF16", "F64", "I32", "BOOL", "F33", "float16", "bool",
    "int64", "uint8", [], [0], [1, 1], [2**40, 2**40], [-1], [0, 2**62], {}, "AAAA", "!!!!",
]  # fmt: skip


@dataclass
class Tally:
    """Outcomes of one mutation kind."""

    tried: int = 0
    accepted: int = 0
    verified: int = 0  # certificates: accepted and then certified a (sound) count
    rejected: int = 0
    crashes: int = 0
    max_seconds: float = 0.0
    max_traced: int = 0  # bytes allocated by one case beyond what was live before it
    errors: Counter = field(default_factory=Counter)  # error class names of rejections


# -- mutations ---------------------------------------------------------------------------------


def flip(rng: random.Random, raw: bytes) -> bytes:
    b = bytearray(raw)
    for _ in range(rng.randint(1, 8)):
        b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    return bytes(b)


def truncate(rng: random.Random, raw: bytes) -> bytes:
    return raw[: rng.randrange(len(raw))]


def splice(rng: random.Random, raw: bytes) -> bytes:
    i = rng.randint(0, len(raw))
    return raw[:i] + rng.randbytes(rng.randint(1, 64)) + raw[i:]


def overwrite(rng: random.Random, raw: bytes) -> bytes:
    i = rng.randrange(len(raw))
    chunk = rng.randbytes(rng.randint(1, 32))
    return raw[:i] + chunk + raw[i + len(chunk) :]


def repeat(rng: random.Random, raw: bytes) -> bytes:
    """A slice of the file copied to another place (or deleted)."""
    i = rng.randrange(len(raw))
    j = min(len(raw), i + rng.randint(1, 256))
    if rng.random() < 0.3:
        return raw[:i] + raw[j:]
    k = rng.randint(0, len(raw))
    return raw[:k] + raw[i:j] + raw[k:]


def header_length(rng: random.Random, raw: bytes) -> bytes:
    value = rng.choice(
        [rng.randrange(2**64), rng.randint(0, len(raw) + 16), 2**64 - 1, len(raw) - 8]
    )
    return value.to_bytes(8, "little") + raw[8:]


def random_json(rng: random.Random, depth: int = 0) -> Any:
    r = rng.random()
    if depth > 2 or r < 0.5:
        return rng.choice(INTERESTING)
    if r < 0.75:
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(["a", "dtype", "shape", "__tensor__"]): random_json(rng, depth + 1)}


def json_paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += json_paths(v, (*prefix, k))
    elif isinstance(doc, list) and len(doc) < 64:
        for i, v in enumerate(doc):
            out += json_paths(v, (*prefix, i))
    return out


def edit_json(rng: random.Random, doc: Any, keys: tuple[str, ...] = ()) -> Any:
    """`doc` with one node (preferably under a key named in `keys`) replaced or deleted."""
    doc = json.loads(json.dumps(doc))
    paths = json_paths(doc)[1:]
    if keys:
        preferred = [p for p in paths if p and p[-1] in keys]
        paths = preferred or paths
    path = rng.choice(paths)
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if isinstance(parent, dict) and rng.random() < 0.2:
        del parent[path[-1]]
    elif isinstance(parent, dict) and rng.random() < 0.1:
        parent[rng.choice(["extra", "dtype", "shape", "payload"])] = random_json(rng)
    else:
        parent[path[-1]] = random_json(rng)
    return doc


def split(raw: bytes) -> tuple[dict, bytes]:
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    header["__metadata__"][METADATA_KEY] = json.loads(header["__metadata__"][METADATA_KEY])
    return header, raw[8 + n :]


def join(header: Any, data: bytes) -> bytes:
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if isinstance(meta, dict) and isinstance(meta.get(METADATA_KEY), dict | list):
        meta[METADATA_KEY] = json.dumps(meta[METADATA_KEY])
    h = json.dumps(header).encode()
    return len(h).to_bytes(8, "little") + h + data


def header_edit(keys: tuple[str, ...]) -> Callable[[random.Random, bytes], bytes]:
    def mutate(rng: random.Random, raw: bytes) -> bytes:
        header, data = split(raw)
        return join(edit_json(rng, header, keys), data)

    return mutate


def tensor_data(rng: random.Random, raw: bytes) -> bytes:
    """Weights replaced by special float32 values (NaN, Inf, huge, subnormal) in place."""
    n = int.from_bytes(raw[:8], "little")
    b = bytearray(raw)
    specials = [b"\x00\x00\xc0\x7f", b"\x00\x00\x80\x7f", b"\x00\x00\x80\xff", b"\xff\xff\x7f\x7f",
                b"\x01\x00\x00\x00", b"\x00\x00\x00\x80"]  # fmt: skip
    for _ in range(rng.randint(1, 3)):
        i = 8 + n + 4 * rng.randrange((len(raw) - 8 - n) // 4)
        b[i : i + 4] = rng.choice(specials)
    return bytes(b)


def cert_json_edit(keys: tuple[str, ...]) -> Callable[[random.Random, bytes], bytes]:
    def mutate(rng: random.Random, raw: bytes) -> bytes:
        return json.dumps(edit_json(rng, json.loads(raw), keys)).encode()

    return mutate


def cert_values(rng: random.Random, raw: bytes) -> bytes:
    """Bit flips inside one decoded tensor, re-encoded: the structure stays valid, the values
    (gaps, directions) change; verification must stay sound or refuse."""
    doc = json.loads(raw)
    specs = [
        node["__tensor__"]
        for c in doc["certificates"]
        for node in _walk(c["payload"])
        if isinstance(node, dict) and "__tensor__" in node
    ]
    spec = rng.choice(specs)
    data = bytearray(base64.b64decode(spec["base64"]))
    if data:
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    spec["base64"] = base64.b64encode(bytes(data)).decode()
    return json.dumps(doc).encode()


def _walk(node: Any) -> list[Any]:
    out, stack = [], [node]
    while stack:
        n = stack.pop()
        out.append(n)
        if isinstance(n, dict):
            stack.extend(n.values())
        elif isinstance(n, list):
            stack.extend(n)
    return out


def bombs(rng: random.Random, raw: bytes) -> bytes:
    """JSON bombs: deep nesting, huge arrays, many objects, long strings."""
    n = rng.choice([10, 1000, 50_000, 300_000])
    return rng.choice(
        [b"[" * n + b"]" * n, b"[" + b"0," * n + b"0]", b"[" + b"{}," * n + b"{}]",
         b'{"a": "' + b"x" * n + b'"}', b'{"a": ' * n + b"1" + b"}" * n]
    )  # fmt: skip


def model_bomb(rng: random.Random, raw: bytes) -> bytes:
    body = bombs(rng, raw)
    return len(body).to_bytes(8, "little") + body


BYTE_KINDS = {
    "flip": flip,
    "truncate": truncate,
    "splice": splice,
    "overwrite": overwrite,
    "repeat": repeat,
}
MODEL_KINDS = {
    **BYTE_KINDS,
    "header-length": header_length,
    "header-json": header_edit(()),
    "shape": header_edit(("shape",)),
    "dtype": header_edit(("dtype",)),
    "data-offsets": header_edit(("data_offsets",)),
    "metadata": header_edit(("config", "d_vocab", "n_ctx", "d_model", "d_head", "n_heads")),
    "special-values": tensor_data,
    "json-bomb": model_bomb,
}
CERT_KINDS = {
    **BYTE_KINDS,
    "json-edit": cert_json_edit(()),
    "fields": cert_json_edit(("format_version", "model_sha256", "model_config", "strategy")),
    "tensor-spec": cert_json_edit(("dtype", "shape", "base64", "__tensor__")),
    "tensor-values": cert_values,
    "json-bomb": bombs,
}


# -- running -----------------------------------------------------------------------------------


@dataclass
class Base:
    model: Any
    exact: int
    model_bytes: bytes
    cert_bytes: bytes


def make_base(d: Path) -> Base:
    model = build_model(CFG, seed=3)
    save_model(model, d / "m.safetensors")
    model = load_model(d / "m.safetensors").model
    certs = [prove(model, get_strategy(s))[1] for s in ("cubic", SubcubicConfig().id)]
    save_certificates(d / "c.json", CertificateFile(weights_digest(model), CFG, certs))
    return Base(
        model,
        exact_accuracy(model).correct,
        (d / "m.safetensors").read_bytes(),
        (d / "c.json").read_bytes(),
    )


def clear_error(exc: BaseException) -> bool:
    message = str(exc)
    return bool(message.strip()) and "\n" not in message and "Traceback" not in message


def run_model_case(path: Path, base: Base) -> str:
    """'accepted', 'rejected:<Error>' or 'crash:<why>'."""
    try:
        mf = load_model(path)
    except CompactProofsError as exc:
        return f"rejected:{type(exc).__name__}" if clear_error(exc) else f"crash:unclear {exc!r}"
    for name, t in mf.model.weights().items():
        if t.dtype != torch.float32 or not bool(torch.isfinite(t).all()):
            return f"crash:accepted a bad {name}"
        if tuple(t.shape) != mf.cfg.shapes()[name]:
            return f"crash:accepted {name} of shape {tuple(t.shape)}"
    return "accepted"


def run_cert_case(path: Path, base: Base) -> str:
    """'accepted' / 'verified' / 'rejected:<Error>' / 'crash:<why>'."""
    try:
        cert = load_certificates(path)
    except CompactProofsError as exc:
        return f"rejected:{type(exc).__name__}" if clear_error(exc) else f"crash:unclear {exc!r}"
    try:
        results = verify_certificates(base.model, cert)
    except CompactProofsError as exc:
        if not clear_error(exc):
            return f"crash:unclear {exc!r}"
        return "accepted"  # loaded, then refused by verification
    for r in results:
        if not 0 <= r.correct_count <= base.exact:
            return f"crash:unsound {r.strategy} certified {r.correct_count} > {base.exact}"
    return "verified"


def fuzz(seconds: float, seed: int, slow: float) -> tuple[dict, list[str], dict]:
    rng = random.Random(seed)
    tallies: dict[tuple[str, str], Tally] = defaultdict(Tally)
    crashes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="fuzz-loaders-") as tmp:
        d = Path(tmp)
        base = make_base(d)
        rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        jobs = [("model", k, f, base.model_bytes, run_model_case, ".safetensors")
                for k, f in MODEL_KINDS.items()]  # fmt: skip
        jobs += [("certificate", k, f, base.cert_bytes, run_cert_case, ".json")
                 for k, f in CERT_KINDS.items()]  # fmt: skip
        tracemalloc.start()
        deadline = time.monotonic() + seconds
        i = 0
        while time.monotonic() < deadline:
            target, kind, mutate, raw, run, suffix = jobs[i % len(jobs)]
            i += 1
            tally = tallies[target, kind]
            path = d / f"case{suffix}"
            path.write_bytes(mutate(rng, raw))
            tracemalloc.reset_peak()
            live = tracemalloc.get_traced_memory()[0]
            start = time.perf_counter()
            try:
                outcome = run(path, base)
            except Exception as exc:  # anything escaping the loaders is a crash
                outcome = f"crash:{type(exc).__name__}: {str(exc)[:200]}"
            elapsed = time.perf_counter() - start
            tally.max_traced = max(tally.max_traced, tracemalloc.get_traced_memory()[1] - live)
            tally.tried += 1
            tally.max_seconds = max(tally.max_seconds, elapsed)
            if elapsed > slow and not outcome.startswith("crash"):
                outcome = f"crash:took {elapsed:.1f}s"
            if outcome.startswith("crash"):
                tally.crashes += 1
                crashes.append(f"{target}/{kind}: {outcome}")
                (d.parent / f"fuzz-crash-{len(crashes)}{suffix}").write_bytes(path.read_bytes())
            elif outcome.startswith("rejected"):
                tally.rejected += 1
                tally.errors[outcome.removeprefix("rejected:")] += 1
            else:
                tally.accepted += 1
                tally.verified += outcome == "verified"
        tracemalloc.stop()
    memory = {
        "rss_start_mib": rss_start / 1024,  # ru_maxrss is in KiB on Linux
        "rss_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    return tallies, crashes, memory


def report(tallies: dict, crashes: list[str], memory: dict, seconds: float, seed: int) -> str:
    lines = [
        f"fuzz_loaders: {seconds:.0f} s, seed {seed}, model v={CFG.d_vocab} k={CFG.n_ctx} "
        f"d={CFG.d_model}; certificate: cubic + {SubcubicConfig().id[:40]}...",
        f"python {platform.python_version()}, torch {torch.__version__}, numpy "
        f"{np.__version__}, {platform.machine()}",
        "",
        "| target | mutation | tried | accepted | (verified) | rejected (clear error) | crashes "
        "| max ms | max traced KiB | rejections by error class |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    total = Tally()
    for (target, kind), t in tallies.items():
        errors = ", ".join(f"{k} {v}" for k, v in t.errors.most_common())
        verified = str(t.verified) if target == "certificate" else "-"
        lines.append(
            f"| {target} | {kind} | {t.tried} | {t.accepted} | {verified} | {t.rejected} | "
            f"{t.crashes} | {1000 * t.max_seconds:.1f} | {t.max_traced / 1024:.0f} | {errors} |"
        )
        total.tried += t.tried
        total.accepted += t.accepted
        total.verified += t.verified
        total.rejected += t.rejected
        total.crashes += t.crashes
        total.max_seconds = max(total.max_seconds, t.max_seconds)
        total.max_traced = max(total.max_traced, t.max_traced)
    lines.append(
        f"| all | all | {total.tried} | {total.accepted} | {total.verified} | {total.rejected} "
        f"| {total.crashes} | {1000 * total.max_seconds:.1f} | {total.max_traced / 1024:.0f} | |"
    )
    lines += [
        "",
        f"cases: {total.tried} ({total.tried / seconds:.0f}/s); accepted {total.accepted} "
        f"(certificates verified soundly: {total.verified}); rejected with a clear error "
        f"{total.rejected}; crashes {total.crashes}",
        f"memory: peak traced allocation of one case {total.max_traced / 2**20:.2f} MiB; "
        f"process peak RSS {memory['rss_peak_mib']:.0f} MiB "
        f"(after setup {memory['rss_start_mib']:.0f} MiB)",
    ]
    if crashes:
        lines += ["", "crashes (first 20; inputs saved next to the temporary directory):"]
        lines += [f"  {c}" for c in crashes[:20]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=180.0, help="time budget (default 180)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--slow", type=float, default=10.0, help="a case slower than this counts as a hang"
    )
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    tallies, crashes, memory = fuzz(args.seconds, args.seed, args.slow)
    text = report(tallies, crashes, memory, args.seconds, args.seed)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
