"""An independent checker of certificate files: a second, small implementation of verification.

`check_certificates(model_path, certificate_path)` reads a model file and a certificate file
itself (numpy + safetensors only; it imports nothing from the project's search or verification
code) and recomputes, for every certificate, the number of inputs x in {0..v-1}^k that the
certificate proves correct: the last-position logits satisfy l_m > l_j for all j != m,
m = max(x). Strategies: `brute-force`, `cubic` (SPEC §5), the 100 sub-cubic configurations
(SPEC §6) with the project's SOUND rules (docs/method.md): the mean+diff step uses R_min when
a < abar and is evaluated at both attention extremes; a gap g leaves m - g + 1 token values;
the rank-1 EQKE error includes the cross terms; the `svd` error uses a certified sigma_1
bound; cells q = m, c >= 1 need m >= g; sub-cubic refuses non-zero biases; and the two
strategies new here (not in the paper), `separable-lite` and `separable`: a cell per query,
max token and set of non-query positions holding smaller tokens, exact unnormalised attention
weights and a bound separable over positions, the assignments counted exactly (`separable`,
cells of up to 2 free positions, 3 when the query is the max) or by the pure rule; both
refuse n_ctx > 10. Brute force, cubic and separable fold non-zero biases into the paths.

Arithmetic is float64 on the float32 weights. Where the main verifier compares a bound with 0,
the checker demands a margin: a cell counts only if B < -SAFETY * scale (scale = the size of
the logit-difference terms), so that a different summation order can make the checker lower,
never higher (the separable proofs also take off what attention weights that underflow to
subnormals or 0 can hide). Brute force counts x correct iff
l_m - max_{j != m} l_j > TIE * max_j |l_j|. Certificate directions of absurd size are rescaled
as the main verifier rescales them.

Like the main verifier's default mode, this is float64 arithmetic, not a rigorous proof: on
models built for catastrophic cancellation (benchmarks/unsound) it reproduces the main
verifier's float64 counts, which can exceed the exact ones; `--rigorous` verification in the
main code is the answer there. What the checker guards against is an error in the main code.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from dataclasses import dataclass
from math import comb, sqrt
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open

from compact_proofs.soundness.checker.errors import (
    CertificateError,
    ModelFileError,
    UnknownStrategyError,
    UnsupportedModelError,
)

SAFETY = 2.0**-40  # relative margin demanded of every proven bound (about 9e-13)
TIE = 1e-9 * (1 + 1e-6)  # brute force: margins within TIE x (logit scale) are ties (wrong)
CHUNK = 2**21  # float64 numbers per vectorised brute-force block (16 MiB)
MAX_INPUTS = 2**36  # brute force refuses to enumerate more inputs than this
MAX_VOCAB = 2**13  # larger vocabularies would need v x v tables of over 512 MiB
MAX_CERTIFICATE_BYTES = 2**30
SIGMA_SQUARINGS = 8  # sigma_1 <= trace(S^p)^(1/2p), p = 2^8
UNDERFLOW = 2.0**-1070  # separable: 16 x the subnormal spacing, per weight and unit of value

# -- the file formats (duplicated on purpose from modelfile.py / certificates.py) ------------


def strict_json(raw: bytes | str) -> Any:
    """json.loads refusing duplicate keys and NaN/Infinity (ValueError): a file must not mean
    one thing to this checker and another to the main loader."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        if len({k for k, _ in items}) != len(items):
            raise ValueError("duplicate key")
        return dict(items)

    def constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    def finite(text: str) -> float:
        value = float(text)
        if not np.isfinite(value):
            raise ValueError(f"number {text[:20]} is out of range")
        return value

    return json.loads(raw, object_pairs_hook=pairs, parse_constant=constant, parse_float=finite)


def _header(path: Path) -> None:
    """Parse the safetensors header strictly (the library tolerates duplicate tensor names)."""
    with path.open("rb") as f:
        prefix = f.read(8)
        size = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
        if not 0 < size <= min(path.stat().st_size - 8, 2**20):
            raise ValueError("bad header length")
        strict_json(f.read(size))


METADATA_KEY = "compact_proofs"
TL_NAMES = {
    "W_E": "embed.W_E", "W_pos": "pos_embed.W_pos", "W_Q": "blocks.0.attn.W_Q",
    "W_K": "blocks.0.attn.W_K", "W_V": "blocks.0.attn.W_V", "W_O": "blocks.0.attn.W_O",
    "W_U": "unembed.W_U", "b_Q": "blocks.0.attn.b_Q", "b_K": "blocks.0.attn.b_K",
    "b_V": "blocks.0.attn.b_V", "b_O": "blocks.0.attn.b_O", "b_U": "unembed.b_U",
}  # fmt: skip
IGNORED = re.compile(r"^blocks\.0\.attn\.(IGNORE|mask)$|(^|\.)hook_[^.]*(\.|$)")
CERT_FORMAT = "compact-proofs-certificate"
TENSOR_DTYPES = {"uint8", "int16", "int32", "int64", "float32", "float64", "bool"}
TOP_LEVEL = {"format", "format_version", "library_version", "model_sha256", "model_config",
             "certificates"}  # fmt: skip
CONFIG_KEYS = {"d_vocab", "n_ctx", "d_model", "d_head", "n_heads"}
MAX_JSON_VALUES = 2**20  # '{', '[' and ',' bytes in a certificate file

EU = ("mean_query+max_diff", "svd_query+max_diff", "max_diff", "max_diff_exact",
      "global_max_diff_exact")  # fmt: skip
ATTENTION = ("mean_query+diff", "drop_average_query_per_output_logit_reasoning")
ERROR = ("svd", "max_diff", "max_diff_subproduct", "max_diff_subproduct_recursive",
         "mean+max_diff", "mean+max_diff_subproduct", "mean+max_diff_subproduct_recursive",
         "mean_recursive+max_diff_subproduct_recursive", "exact_EQKE+max_diff_exact",
         "max_diff_exact")  # fmt: skip


def _subcubic_ids() -> dict[str, tuple[str, str, str]]:
    """Strategy id (and LaTeX-key alias) -> (EU, attention, error) for the 100 configurations."""

    def key(s: str) -> str:
        return "".join(p.capitalize() for p in re.split(r"[_+\-]", s) if p)

    out = {}
    for eu in EU:
        for att in ATTENTION:
            for err in ERROR:
                out[f"EUPU-{eu}--attn-{att}--attn-err-{err}".replace("_", "-")] = (eu, att, err)
                out[f"EUPU{key(eu)}Attn{key(att)}AttnErr{key(err)}"] = (eu, att, err)
    return out


SUBCUBIC = _subcubic_ids()
KNOWN_STRATEGIES = {"brute-force", "cubic", "separable", "separable-lite", *SUBCUBIC}


@dataclass(frozen=True)
class Model:
    """float32 weights by short name (all 12, missing biases as zeros) and the shape config."""

    w: dict[str, np.ndarray]
    v: int
    k: int
    d: int
    d_head: int
    heads: int

    @property
    def config(self) -> dict[str, int]:
        return {"d_vocab": self.v, "n_ctx": self.k, "d_model": self.d,
                "d_head": self.d_head, "n_heads": self.heads}  # fmt: skip

    def f64(self, name: str) -> np.ndarray:
        return self.w[name].astype(np.float64)


def load_model_file(path: str | Path) -> Model:
    """Parse and validate a model file (TransformerLens names, float32, finite, consistent
    shapes and metadata). Raises ModelFileError / UnsupportedModelError (one line)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file not found or not a file: {path} (check the path)")
    try:
        _header(path)
        with safe_open(str(path), framework="np") as f:
            meta, keys = f.metadata() or {}, list(f.keys())
            if any(re.match(r"blocks\.[1-9]", n) or ".mlp." in n or ".ln" in n for n in keys):
                raise UnsupportedModelError(
                    f"{path}: only one-layer attention-only models without LayerNorm are supported"
                )
            short = {tl: s for s, tl in TL_NAMES.items()}
            w: dict[str, np.ndarray] = {}
            for name in keys:
                if IGNORED.search(name):
                    continue
                if name not in short:
                    raise ModelFileError(f"{path}: unexpected tensor {name!r}")
                if f.get_slice(name).get_dtype() != "F32":
                    raise ModelFileError(f"{path}: tensor {name} is not float32")
                w[short[name]] = f.get_tensor(name)
    except (ModelFileError, UnsupportedModelError):
        raise
    except Exception as exc:  # safetensors raises several unrelated exception types
        detail = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ModelFileError(f"{path} is not a readable safetensors model ({detail})") from None
    missing = [TL_NAMES[n] for n in TL_NAMES if n.startswith("W") and n not in w]
    if missing:
        raise ModelFileError(f"{path}: missing tensor(s) {', '.join(missing)}")
    if any(w[n].ndim != nd for n, nd in (("W_E", 2), ("W_pos", 2), ("W_Q", 3), ("W_U", 2))):
        raise ModelFileError(f"{path}: W_E, W_pos, W_Q or W_U has the wrong number of dims")
    (v, d), k, (h, _, e) = w["W_E"].shape, w["W_pos"].shape[0], w["W_Q"].shape
    if min(v, d, k, h, e) < 1:
        raise ModelFileError(f"{path}: a weight tensor is empty")
    if w["W_U"].shape[1] != v:
        raise UnsupportedModelError(f"{path}: Max-of-K needs d_vocab_out == d_vocab")
    if v > MAX_VOCAB:
        raise UnsupportedModelError(f"{path}: d_vocab {v} is above the checker's {MAX_VOCAB}")
    shapes = {"W_E": (v, d), "W_pos": (k, d), "W_Q": (h, d, e), "W_K": (h, d, e),
              "W_V": (h, d, e), "W_O": (h, e, d), "W_U": (d, v), "b_Q": (h, e), "b_K": (h, e),
              "b_V": (h, e), "b_O": (d,), "b_U": (v,)}  # fmt: skip
    for name, shape in shapes.items():
        w.setdefault(name, np.zeros(shape, dtype=np.float32))
        if w[name].shape != shape:
            raise ModelFileError(f"{path}: tensor {TL_NAMES[name]} has shape {w[name].shape}")
        if not np.isfinite(w[name]).all():
            raise ModelFileError(f"{path}: tensor {TL_NAMES[name]} contains NaN or Inf values")
    model = Model(w, v, k, d, e, h)
    if METADATA_KEY in meta:
        try:
            declared = strict_json(meta[METADATA_KEY])["config"]
        except Exception:
            raise ModelFileError(f"{path}: metadata {METADATA_KEY!r} is not valid JSON") from None
        if not _same_ints(declared, model.config):
            raise ModelFileError(f"{path}: metadata config {declared} contradicts the tensors")
    return model


def _same_ints(a: Any, b: Any) -> bool:
    """Equal, with integers required to be int (JSON true is not 1)."""
    if isinstance(b, dict):
        return (
            isinstance(a, dict)
            and a.keys() == b.keys()
            and all(_same_ints(a[key], b[key]) for key in b)
        )
    return type(a) is type(b) and a == b


def weights_digest(model: Model) -> str:
    """SHA-256 over the parameters sorted by short name: "name:(shape);" then float32 bytes."""
    h = hashlib.sha256()
    for name in sorted(model.w):
        a = np.ascontiguousarray(model.w[name], dtype=np.float32)
        h.update(f"{name}:{tuple(int(s) for s in a.shape)};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def decode_tensor(obj: Any) -> np.ndarray:
    """{"__tensor__": {"dtype", "shape", "base64"}} (little-endian raw bytes) -> array."""
    try:
        dtype, shape, raw = _tensor_bytes(obj)
    except ValueError:
        raise CertificateError("certificate holds a malformed tensor; regenerate it") from None
    return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).reshape(shape)


def load_certificate_file(path: str | Path) -> dict[str, Any]:
    """Parse a certificate file and check it against docs/certificate-format.md (every rule
    but the two that need the model: digest and configuration, `check_certificates`)."""
    path = Path(path)
    if not path.is_file():
        raise CertificateError(f"certificate file not found: {path} (check the path)")
    if path.stat().st_size > MAX_CERTIFICATE_BYTES:
        raise CertificateError(f"{path} is larger than {MAX_CERTIFICATE_BYTES} bytes")
    raw = path.read_bytes()
    if raw.count(b"{") + raw.count(b"[") + raw.count(b",") > MAX_JSON_VALUES:
        raise CertificateError(f"{path}: more than {MAX_JSON_VALUES} JSON values")
    try:
        doc = strict_json(raw)
    except (ValueError, RecursionError):
        raise CertificateError(f"{path} is not a certificate (not strict JSON)") from None
    if not isinstance(doc, dict) or doc.get("format") != CERT_FORMAT:
        raise CertificateError(f"{path} is not a compact-proofs certificate file")
    if not _same_ints(doc.get("format_version"), 1):
        raise CertificateError(f"{path}: unsupported format version {doc.get('format_version')!r}")
    problem = _envelope_problem(doc)
    if problem:
        raise CertificateError(f"{path}: certificate file is malformed ({problem})")
    for i, cert in enumerate(doc["certificates"]):
        for tensor in _encoded_tensors(cert["payload"]):
            try:
                _tensor_bytes(tensor)
            except ValueError as exc:
                raise CertificateError(f"{path}: entry {i}: malformed tensor ({exc})") from None
    return doc


def _envelope_problem(doc: dict[str, Any]) -> str | None:
    """What breaks the file's top-level rules (docs/certificate-format.md), or None."""
    if set(doc) != TOP_LEVEL:
        return f"its keys must be exactly {', '.join(sorted(TOP_LEVEL))}"
    if not isinstance(doc["library_version"], str):
        return "library_version must be a string"
    if not isinstance(doc["model_sha256"], str) or not re.fullmatch(
        r"[0-9a-f]{64}", doc["model_sha256"]
    ):
        return "model_sha256 must be 64 lowercase hex digits"
    config = doc["model_config"]
    if not (
        isinstance(config, dict)
        and set(config) == CONFIG_KEYS
        and all(type(x) is int and x >= 1 for x in config.values())
    ):
        return f"model_config must hold exactly the positive integers {sorted(CONFIG_KEYS)}"
    certs = doc["certificates"]
    if not isinstance(certs, list):
        return "certificates must be a list"
    for i, c in enumerate(certs):
        if not (
            isinstance(c, dict)
            and set(c) == {"strategy", "payload"}
            and isinstance(c["strategy"], str)
            and isinstance(c["payload"], dict)
        ):
            return f"entry {i} must be exactly a string strategy and an object payload"
        if c["strategy"] not in KNOWN_STRATEGIES:
            return f"entry {i} names unknown strategy {c['strategy'][:60]!r}"
    return None


def _encoded_tensors(payload: Any) -> list[Any]:
    """Every value of the form {"__tensor__": ...} inside a payload (iteratively)."""
    found, stack = [], [payload]
    while stack:
        node = stack.pop()
        if isinstance(node, dict) and "__tensor__" in node:
            found.append(node)
        elif isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def _tensor_bytes(obj: Any) -> tuple[np.dtype, list[int], bytes]:
    """(dtype, shape, raw bytes) of an encoded tensor; ValueError if it breaks the rules."""
    if not isinstance(obj, dict) or set(obj) != {"__tensor__"}:
        raise ValueError("an encoded tensor is an object with the single key __tensor__")
    spec = obj["__tensor__"]
    if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "base64"}:
        raise ValueError("__tensor__ holds exactly dtype, shape and base64")
    dtype, shape, text = spec["dtype"], spec["shape"], spec["base64"]
    if not isinstance(dtype, str) or dtype not in TENSOR_DTYPES:
        raise ValueError("unknown dtype")
    if not (
        isinstance(shape, list)
        and len(shape) <= 8
        and all(type(n) is int and n >= 0 for n in shape)
    ):
        raise ValueError("shape must be at most 8 integers >= 0")
    itemsize = np.dtype(dtype).itemsize
    numel = 1
    for n in shape:
        numel = min(numel * n, MAX_CERTIFICATE_BYTES + 1)
    if numel * itemsize > MAX_CERTIFICATE_BYTES:
        raise ValueError("shape larger than the limit")
    if not isinstance(text, str) or len(text) != 4 * ((numel * itemsize + 2) // 3):
        raise ValueError("base64 length does not match dtype and shape")
    try:
        raw = base64.b64decode(text, validate=True)
    except Exception:
        raise ValueError("invalid base64") from None
    if len(raw) != numel * itemsize or (dtype == "bool" and any(b > 1 for b in raw)):
        raise ValueError("bytes do not match dtype and shape")
    return np.dtype(dtype), shape, raw


# -- path matrices (SPEC §3, biases folded exactly) -------------------------------------------


@dataclass(frozen=True)
class Paths:
    """logits[j] = EUPU[q, j] + sum_h sum_p alpha^h_p (EVOU[h][x_p, j] + PVOU[h][p, j]),
    alpha^h = softmax_p((EQKE[h][q, x_p] + EQKP[h][q, p]) / scale), for every input x."""

    EUPU: np.ndarray  # [v, v]
    EVOU: np.ndarray  # [h, v, v]
    PVOU: np.ndarray  # [h, k, v]
    EQKE: np.ndarray  # [h, v, v]
    EQKP: np.ndarray  # [h, v, k]
    scale: float


def path_matrices(m: Model) -> Paths:
    """Biases: b_Q joins the query, b_K the positional keys (a per-query constant across
    positions would cancel anyway), b_V the positional values (sum alpha = 1), and
    b_O W_U + b_U the direct path."""
    W_E, W_pos, W_U = m.f64("W_E"), m.f64("W_pos"), m.f64("W_U")
    E_q = W_E + W_pos[-1]
    Q = np.einsum("vd,hde->hve", E_q, m.f64("W_Q")) + m.f64("b_Q")[:, None]
    K_tok = np.einsum("vd,hde->hve", W_E, m.f64("W_K"))
    K_pos = np.einsum("kd,hde->hke", W_pos, m.f64("W_K")) + m.f64("b_K")[:, None]
    OU = m.f64("W_O") @ W_U  # [h, e, v]
    V_tok = np.einsum("vd,hde->hve", W_E, m.f64("W_V"))
    V_pos = np.einsum("kd,hde->hke", W_pos, m.f64("W_V")) + m.f64("b_V")[:, None]
    return Paths(
        EUPU=E_q @ W_U + (m.f64("b_O") @ W_U + m.f64("b_U")),
        EVOU=V_tok @ OU,
        PVOU=V_pos @ OU,
        EQKE=Q @ K_tok.transpose(0, 2, 1),
        EQKP=Q @ K_pos.transpose(0, 2, 1),
        scale=sqrt(m.d_head),
    )


def _max_except(x: np.ndarray, col: np.ndarray) -> np.ndarray:
    """max_{j != col} x[..., j] (col broadcast against x[..., 0]); -inf when v = 1."""
    x = np.array(x, dtype=np.float64, copy=True)
    np.put_along_axis(x, np.broadcast_to(col, x.shape[:-1])[..., None], -np.inf, axis=-1)
    return x.max(axis=-1)


# -- brute force -----------------------------------------------------------------------------


def logits_direct(p: Paths, tokens: np.ndarray) -> np.ndarray:
    """Logits [n, v] of tokens [n, k] from the path identity, softmax stabilised per input."""
    q = tokens[:, -1]
    out = p.EUPU[q].copy()
    for h in range(p.EVOU.shape[0]):
        s = (p.EQKE[h][q[:, None], tokens] + p.EQKP[h][q]) / p.scale
        a = np.exp(s - s.max(axis=1, keepdims=True))
        a /= a.sum(axis=1, keepdims=True)
        out += np.einsum("np,npj->nj", a, p.EVOU[h][tokens] + p.PVOU[h][None])
    return out


def _correct(ell: np.ndarray, mx: np.ndarray) -> np.ndarray:
    """Rows of logits `ell` with l_m - max_{j != m} l_j > TIE * max_j |l_j|, m = mx[row]."""
    margin = np.take_along_axis(ell, mx[:, None], 1)[:, 0] - _max_except(ell, mx)
    return margin > TIE * np.abs(ell).max(axis=1)


def _max_except_top2(X: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """max_{j != cols[r, i]} X[r, j] for every r and i, from the top two entries of row r."""
    first = X.argmax(axis=1)
    top = np.take_along_axis(X, first[:, None], 1)
    second = _max_except(X, first)[:, None]
    return np.where(first[:, None] == cols, second, top)


def brute_force_count(m: Model) -> int:
    """Number of inputs with l_m - max_{j != m} l_j > TIE * max_j |l_j| (ties count wrong).

    Single head, per query q: with w_p(t) = exp(score_p(t) - C_q) (C_q = the largest score any
    position can have for q) and Y_p(t) = w_p(t) (EUPU[q] + EVOU[t] + PVOU[p]), the
    unnormalised logits of x are Z = sum_p Y_p(x_p) = W l with W = sum_p w_p(x_p) > 0, so Z's
    margins decide like l's. Split Z = A[a] + B[t]: a = the prefix x_0..x_{k-3} with the query,
    t = x_{k-2}. Screen: max_{j != m}(A + B) <= max_{j != m} A + max_{j != m} B (top two of
    each row), so Z_m - that > TIE * value_scale * W (value_scale * W >= max |Z|) proves x
    correct in O(1). Every other input is decided on its full row Z, or, where W < 1e-250
    (precision lost to underflow), on its logits computed directly.
    """
    v, k = m.v, m.k
    if v**k > MAX_INPUTS:
        raise UnsupportedModelError(f"brute force would enumerate {v}^{k} inputs; too many")
    p = path_matrices(m)
    if m.heads > 1 or k == 1:
        total, step = 0, max(1, CHUNK // (v * k))
        for start in range(0, v**k, step):
            idx = np.arange(start, min(start + step, v**k))
            tokens = (idx[:, None] // v ** np.arange(k)) % v
            total += int(_correct(logits_direct(p, tokens), tokens.max(axis=1)).sum())
        return total
    EUPU, EVOU, PVOU, EQKE, EQKP = p.EUPU, p.EVOU[0], p.PVOU[0], p.EQKE[0], p.EQKP[0]
    value_scale = np.abs(EUPU).max() + np.abs(EVOU).max() + np.abs(PVOU).max()  # >= |l_j|
    n_pre, tv = v ** (k - 2), np.arange(v)
    na = min(n_pre, max(1, CHUNK // (v * v)))
    total = 0
    for q in range(v):
        s = (EQKE[q][None, :] + EQKP[q][:, None]) / p.scale  # [k, v]: score of token t at p
        s[k - 1] = s[k - 1, q]  # the last position holds q
        w = np.exp(s - s.max())
        Y = w[:, :, None] * (EUPU[q] + EVOU[None] + PVOU[:, None])  # [k, v, v]
        B, WB = Y[k - 2], w[k - 2]
        for a0 in range(0, n_pre, na):
            a = np.arange(a0, min(a0 + na, n_pre))
            digits = (a[:, None] // v ** np.arange(k - 2)) % v  # tokens at 0..k-3
            A = Y[k - 1, q] + Y[np.arange(k - 2), digits].sum(1)  # [na, v]
            WA = w[k - 1, q] + w[np.arange(k - 2), digits].sum(1)
            mx = np.maximum(np.maximum(digits.max(1, initial=0), q)[:, None], tv)  # [na, t]
            Zm = np.take_along_axis(A, mx, 1) + B[tv, mx]
            lower = Zm - _max_except_top2(A, mx) - _max_except_top2(B, mx.T).T
            W = WA[:, None] + WB[None, :]
            sure = (lower > TIE * value_scale * W) & (W >= 1e-250)
            total += int(sure.sum())
            ia, it = np.nonzero(~sure)
            faint = W[ia, it] < 1e-250
            total += int(_correct(A[ia[~faint]] + B[it[~faint]], mx[ia, it][~faint]).sum())
            if faint.any():
                tokens = np.concatenate(
                    [digits[ia], it[:, None], np.full((len(ia), 1), q)], axis=1
                )[faint]
                total += int(_correct(logits_direct(p, tokens), tokens.max(axis=1)).sum())
    return total


# -- cubic (SPEC §5) -------------------------------------------------------------------------


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _single_head(m: Model, what: str) -> None:
    if m.heads != 1:
        raise UnsupportedModelError(f"{what} needs a single attention head; n_heads={m.heads}")


def cubic_count(m: Model) -> int:
    """Inputs proven by the cubic proof, recomputed cell by cell.

    Cell (q, m, c): query q <= m, c = number of non-query positions holding a token < m
    (c <= k-2 if q < m). With PVOU_pess[j] = max_p (PVOU[p, j] - PVOU[p, m]),
    EUPU_pess[q] = max_{j != m} (EUPU[q, j] - EUPU[q, m]) and
    g[x] = max_{j != m} (EVOU[x, j] - EVOU[x, m] + PVOU_pess[j]), every input of the cell whose
    non-max tokens all equal t satisfies max_{j != m} (l_j - l_m) <= B[q, t] =
    EUPU_pess[q] + max_o (A_max g[m] + A_qry g[q] + A_nmx g[t]), where o places the max tokens
    at the non-query positions of smallest (o = 0) or largest (o = 1) positional score and the
    A's are the softmax weights on max / query (q != m) / non-max positions. By the
    linear-fractional argument (SPEC §5.5) the worst mixture of non-max tokens is pure, so a
    cell with N tokens t < m proven (B < 0) certifies C(k-1, c) N^c inputs. For c = 0 there is
    one input; B0 = max_{j != m}(EUPU[q,j]-EUPU[q,m] + PVOU_pess[j] + A_max (EVOU[m,j]-EVOU[m,m])
    + A_qry (EVOU[q,j]-EVOU[q,m])).
    """
    _single_head(m, "the cubic proof")
    p = path_matrices(m)
    v, k, sc = m.v, m.k, p.scale
    EUPU, EVOU, PVOU, EQKE, EQKP = p.EUPU, p.EVOU[0], p.PVOU[0], p.EQKE[0], p.EQKP[0]
    tol = SAFETY * 2 * (np.abs(EUPU).max() + np.abs(EVOU).max() + np.abs(PVOU).max())
    asc = np.sort(EQKP[:, : k - 1] / sc, axis=1)
    orders = np.stack([asc, asc[:, ::-1]])  # [o, q, slot]: positional scores of the slots
    s_query = (np.diagonal(EQKE) + EQKP[:, k - 1]) / sc
    total = 0
    for mx in range(v):
        qs = np.arange(mx + 1)
        is_m = qs == mx
        pv = (PVOU - PVOU[:, mx : mx + 1]).max(axis=0)  # PVOU_pess [j]
        eu_c = EUPU[: mx + 1] - EUPU[: mx + 1, mx : mx + 1]  # [q, j]
        ev_c = EVOU[: mx + 1] - EVOU[: mx + 1, mx : mx + 1]  # [x, j], x <= m
        g = _max_except(ev_c + pv, np.array(mx))  # [x]
        s_m, sq = EQKE[: mx + 1, mx] / sc, s_query[: mx + 1]
        # c = 0: all non-query positions hold m
        a = _softmax(np.concatenate([orders[0, : mx + 1] + s_m[:, None], sq[:, None]], axis=1))
        A_max = a[:, :-1].sum(axis=1) + np.where(is_m, a[:, -1], 0.0)
        A_qry = np.where(is_m, 0.0, a[:, -1])
        L0 = eu_c + pv + A_max[:, None] * ev_c[mx] + A_qry[:, None] * ev_c
        total += int(((_max_except(L0, np.array(mx)) < -tol) & (is_m | (k >= 2))).sum())
        eu_pess = _max_except(eu_c, np.array(mx))  # [q]
        for c in range(1, k):
            n_max = k - 1 - c
            S = np.empty((2, mx + 1, mx, k))
            S[..., : k - 1] = orders[:, : mx + 1, None, :]
            S[..., :n_max] += s_m[None, :, None, None]
            S[..., n_max : k - 1] += (EQKE[: mx + 1, :mx] / sc)[None, :, :, None]
            S[..., k - 1] = sq[None, :, None]
            a = _softmax(S)
            w_q = a[..., k - 1]
            A_max = a[..., :n_max].sum(-1) + np.where(is_m[:, None], w_q, 0.0)
            A_qry = np.where(is_m[:, None], 0.0, w_q)
            A_nmx = a[..., n_max : k - 1].sum(-1)
            ov = A_max * g[mx] + A_qry * g[:, None] + A_nmx * g[None, :mx]
            bound = eu_pess[:, None] + ov.max(axis=0)  # [q, t]
            N = (bound < -tol).sum(axis=1)[is_m | (c <= k - 2)]
            total += comb(k - 1, c) * sum(int(n) ** c for n in N)
    return total


# -- sub-cubic (SPEC §6, sound rules) --------------------------------------------------------


def _rowrange(M: np.ndarray) -> np.ndarray:
    return M.max(axis=-1) - M.min(axis=-1)


def _lse(x: np.ndarray) -> np.ndarray:
    """log sum exp over the last axis; -inf for an empty axis."""
    if x.shape[-1] == 0:
        return np.full(x.shape[:-1], -np.inf)
    top = x.max(axis=-1)
    return top + np.log(np.exp(x - top[..., None]).sum(axis=-1))


def sigma1_upper_bound(X: np.ndarray, Y: np.ndarray) -> float:
    """sigma_1(X Y) <= trace(S^p)^(1/2p), S = (R Y)(R Y)^T with X = Q R (so S is the PSD
    d x d matrix with the eigenvalues of (X Y)^T (X Y) that are non-zero), p = 2^8: the trace
    of a PSD power bounds its largest eigenvalue. Powers by repeated squaring, renormalised,
    with the log of the scale carried separately."""
    M = np.linalg.qr(X, mode="r") @ Y
    S = M @ M.T
    norm = np.linalg.norm(S)
    if norm == 0.0:
        return 0.0
    S, log_scale = S / norm, np.log(norm)
    for _ in range(SIGMA_SQUARINGS):
        S = S @ S
        norm = np.linalg.norm(S)
        S, log_scale = S / norm, 2 * log_scale + np.log(norm)
    p = 2**SIGMA_SQUARINGS
    return float(np.exp((np.log(max(np.trace(S), np.finfo(float).tiny)) + log_scale) / (2 * p)))


def _product_bound(X: np.ndarray, Y: np.ndarray, mean: bool) -> np.ndarray:
    """rowrange(X Y)[r] <= sum_i |X[r,i]| rowrange(Y)[i]; with `mean`, splitting off the mean
    row xbar of X: <= rowrange(xbar Y) + sum_i |X[r,i] - xbar_i| rowrange(Y)[i]."""
    if not mean:
        return np.abs(X) @ _rowrange(Y)
    xbar = X.mean(axis=0)
    return np.ptp(xbar @ Y) + np.abs(X - xbar) @ _rowrange(Y)


def _chain_bound(F: list[np.ndarray], err: str) -> np.ndarray:
    """Bound on rowrange(F0 F1 F2 F3) by the route-B option `err` (SPEC §6.4)."""
    if err.endswith("subproduct"):  # min over the three split points of the 2-factor bound
        mean = err.startswith("mean")
        splits = [(F[0], F[1] @ F[2] @ F[3]), (F[0] @ F[1], F[2] @ F[3]),
                  (F[0] @ F[1] @ F[2], F[3])]  # fmt: skip
        return np.min([_product_bound(L, R, mean) for L, R in splits], axis=0)
    mean_levels = {"max_diff_subproduct_recursive": 0, "mean+max_diff_subproduct_recursive": 1,
                   "mean_recursive+max_diff_subproduct_recursive": 3}[err]  # fmt: skip
    bound = _rowrange(F[3])  # bound_i >= rowrange(F_i ... F_3), built right to left
    for i in (2, 1, 0):
        if i < mean_levels:
            xbar = F[i].mean(axis=0)
            row = xbar
            for f in F[i + 1 :]:
                row = row @ f
            bound = np.ptp(row) + np.abs(F[i] - xbar) @ bound
        else:
            bound = np.abs(F[i]) @ bound
    return bound


def eqke_decomposition(
    W: dict[str, np.ndarray], dirs: dict[str, np.ndarray], err: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(EQKE_hat [v,v], err_bound [v], pos_err [v,k]) with, for every query q, key token t and
    position p, score = EQKE_bar[q,t] + pos_err[q,p] and
    err_bound[q] >= rowrange(EQKE_bar - EQKE_hat)[q], EQKE_bar = E_q W_Q W_K^T Ebar^T,
    E_q = W_E + P_{k-1}, Ebar = W_E + mean_p P_p. Any direction vectors make this true."""
    E_q, P_mean = W["W_E"] + W["W_pos"][-1], W["W_pos"].mean(axis=0)
    E_bar = W["W_E"] + P_mean
    EQ = E_q @ W["W_Q"]
    pos_err = EQ @ ((W["W_pos"] - P_mean) @ W["W_K"]).T
    EQKE_bar = EQ @ (E_bar @ W["W_K"]).T
    if err == "exact_EQKE+max_diff_exact":  # route C
        return EQKE_bar, np.zeros(len(E_q)), pos_err
    if err in ("svd", "max_diff", "mean+max_diff", "max_diff_exact"):  # route A: rank 1
        u, w = dirs["query_dir"], dirs["key_dir"]
        A, B = EQ @ W["W_K"].T, E_bar.T  # EQKE_bar = A B
        uA, Bw = u @ A, B @ w
        hat = (uA @ Bw) * np.outer(u, w)  # (u u^T A)(B w w^T)
        if err == "max_diff_exact":
            return hat, _rowrange(EQKE_bar - hat), pos_err
        # A B - hat = A_r B_r + (u u^T A) B_r + A_r (B w w^T): bound each row range
        A_r, B_r = A - np.outer(u, uA), B - np.outer(Bw, w)
        cross = np.abs(u) * np.ptp(uA @ B_r) + np.abs(A_r @ Bw) * np.ptp(w)
        if err == "svd":  # |e_r^T E (e_a - e_b)| <= sqrt(2) sigma_1(E)
            main = np.full(len(u), sqrt(2) * sigma1_upper_bound(A_r, B_r))
        else:
            main = _product_bound(A_r, B_r, mean=err == "mean+max_diff")
        return hat, main + cross, pos_err

    # route B: peel a direction z off M as M = z (z^T M) + rest, six times
    def rest(z: np.ndarray, M: np.ndarray) -> np.ndarray:
        return M - np.outer(z, z @ M)

    E_rr = rest(dirs["query_dir2"], rest(dirs["query_dir"], E_q))
    Eb_rr = rest(dirs["key_dir2"], rest(dirs["key_dir"], E_bar))
    Q_r, K_r = rest(dirs["u_Q"], W["W_Q"]), rest(dirs["u_K"], W["W_K"])
    F = [E_rr, Q_r, K_r.T, Eb_rr.T]  # the error term; the nine other terms of the expansion
    return EQKE_bar - F[0] @ F[1] @ F[2] @ F[3], _chain_bound(F, err), pos_err  # sum to hat


def _split_eu(E: np.ndarray, W_U: np.ndarray, eu: str, direction: np.ndarray):
    """(EU_mean [v], EU_q_err [v]): EUPU[q,j] - EUPU[q,m] <= EU_mean[j] - EU_mean[m]
    + EU_q_err[q] for all q, j, m, where EUPU = E W_U (SPEC §6.7.1)."""
    zero = np.zeros(len(E))
    if eu == "max_diff_exact":
        return zero, _rowrange(E @ W_U)
    if eu == "global_max_diff_exact":
        return zero, zero + np.ptp(E @ W_U)
    if eu == "max_diff":
        return zero, np.abs(E) @ _rowrange(W_U)
    center = E.mean(axis=0) if eu == "mean_query+max_diff" else direction
    return center @ W_U, np.abs(E - center) @ _rowrange(W_U)


DIRECTIONS = ("query_dir", "key_dir", "query_dir2", "key_dir2", "u_Q", "u_K", "W_EP_direction")


def _subcubic_payload(m: Model, payload: dict[str, Any], strategy_id: str):
    """Directions (float64, finite, right sizes) and gaps (integers >= 1, shape [v, v, k])."""
    if payload.get("config") != strategy_id:
        raise CertificateError(
            f"certificate payload is for {payload.get('config')!r}, not {strategy_id!r}"
        )
    try:
        dirs = {n: decode_tensor(payload["directions"][n]) for n in DIRECTIONS}
        gaps = decode_tensor(payload["min_gaps"])
    except (KeyError, TypeError):
        raise CertificateError("sub-cubic certificate lacks directions or min_gaps") from None
    for name, t in dirs.items():
        size = m.d if name in ("u_Q", "u_K", "W_EP_direction") else m.v
        dirs[name] = t = t.astype(np.float64)
        if t.shape != (size,) or not np.isfinite(t).all():
            raise CertificateError(f"certificate direction {name} must be {size} finite numbers")
    if gaps.shape != (m.v, m.v, m.k) or gaps.dtype.kind not in "iu" or (gaps < 1).any():
        raise CertificateError(f"certificate min_gaps must be integers >= 1, [{m.v}, {m.v}, {m.k}]")
    # Any vectors are sound in exact arithmetic; absurd magnitudes invite float64 cancellation,
    # so (as the main verifier does) unit-like directions with norm outside [0.5, 2] are
    # normalised and the EU centre is capped at ||W_E + mean_p P_p||_F. Search output (unit
    # vectors, a centre u^T E with |u| = 1) is unchanged.
    for name, t in dirs.items():
        norm = np.linalg.norm(t)
        if name == "W_EP_direction":
            limit = np.linalg.norm(m.f64("W_E") + m.f64("W_pos").mean(axis=0))
            dirs[name] = t * (limit / norm) if norm > limit else t
        elif norm > 0 and not 0.5 <= norm <= 2.0:
            dirs[name] = t / norm
    return dirs, gaps.astype(np.int64)


def subcubic_count(m: Model, payload: dict[str, Any], strategy: str) -> int:
    """Inputs proven by one sub-cubic certificate (SPEC §6.2, §6.5-§6.8, sound rules).

    Cell (q, m, c), c = positions holding a token != m (the query included when q != m), gap
    g = gaps[q, m, c]: the inputs whose non-max tokens (and the query, if q != m) are <= m - g.
    Valid: q = m and (c = 0 or m >= g), or q < m, c >= 1, m - q >= g.
    1. D_lo <= EQKE_bar[q,m] - EQKE_bar[q,t] <= D_hi for all t <= m - g (running max / min of
       EQKE_hat over t, widened by err_bound[q]).
    2. A_lo <= attention on the max tokens <= A_hi: sigmoid(D / scale + log S_on - log S_off),
       S = sums of exp(positional score) over the positions holding / not holding m, the max
       tokens at the non-query positions of smallest (lo) / largest (hi) score.
    3. With attention a on the max tokens, l_j - l_m <= L[j] + EU_q_err[q] + a R[j] + (1-a) W,
       L = EU_mean[j] - EU_mean[m] + PVOU_pess[j], R[j] = EVOU[m,j] - EVOU[m,m],
       W = max_{t <= m - g_min} rowrange(EVOU)[t], g_min = min_{q' <= m} gaps[q', m, c].
       With a = abar + e (abar: mean of the pessimal extreme over the valid queries, or 0):
       max_{j != m} <= Mbar + e R_max (e >= 0) or Mbar + e R_min (e < 0), Mbar =
       max_{j != m} (L[j] + abar R[j]); convex in a, so B = the larger value at A_lo, A_hi.
       The all-max input (q = m, c = 0) uses its exact direct path and attention 1.
    4. A valid cell with B < 0 certifies C(k-1, c') (m - g + 1)^c' inputs, c' = non-max tokens
       at non-query positions (c if q = m, else c - 1).
    """
    eu, att, err = SUBCUBIC[strategy]
    _single_head(m, "sub-cubic proofs")
    biased = [TL_NAMES[n] for n in ("b_Q", "b_K", "b_V", "b_O", "b_U") if m.w[n].any()]
    if biased:
        raise UnsupportedModelError(f"sub-cubic proofs assume zero biases; {biased[0]} is not")
    canonical = f"EUPU-{eu}--attn-{att}--attn-err-{err}".replace("_", "-")
    dirs, G = _subcubic_payload(m, payload, canonical)
    v, k, sc = m.v, m.k, sqrt(m.d_head)
    W = {n: m.f64(n)[0] if n in ("W_Q", "W_K", "W_V", "W_O") else m.f64(n) for n in m.w}
    hat, err_bound, pos_err = eqke_decomposition(W, dirs, err)
    q = np.arange(v)[:, None, None]
    mm = np.arange(v)[None, :, None]
    c = np.arange(k)[None, None, :]
    qb = np.broadcast_to(q, G.shape)
    valid = ((q < mm) & (c >= 1) & (mm - q >= G)) | ((q == mm) & ((c == 0) | (mm >= G)))

    # 1. pre-softmax differences
    at = mm - G
    own, col = hat[q, mm], np.clip(at, 0, None)
    run_max, run_min = np.maximum.accumulate(hat, axis=1), np.minimum.accumulate(hat, axis=1)
    D_lo = np.where(at >= 0, own - run_max[qb, col], 0.0) - err_bound[:, None, None]
    D_hi = np.where(at >= 0, own - run_min[qb, col], 0.0) + err_bound[:, None, None]

    # 2. extreme attention on the max tokens; the query position's score is the origin
    pos = (pos_err[:, : k - 1] - pos_err[:, k - 1 :]) / sc
    n_on = np.clip(np.where(q == mm, k - 1 - c, k - c), 0, k - 1)  # non-query max positions
    A = []
    for slots, D in ((np.sort(pos, axis=1), D_lo), (-np.sort(-pos, axis=1), D_hi)):
        first = np.stack([_lse(slots[:, :n]) for n in range(k)], axis=1)  # [q, n]
        last = np.stack([_lse(slots[:, n:]) for n in range(k)], axis=1)
        on, off = first[qb, n_on], last[qb, n_on]
        on = np.where(q == mm, np.logaddexp(on, 0.0), on)
        off = np.where(q == mm, off, np.logaddexp(off, 0.0))
        x = D / sc + on - off
        e = np.exp(-np.abs(x))  # sigmoid(x), without overflow
        A.append(np.where(x >= 0, 1 / (1 + e), e / (1 + e)))
    A_lo, A_hi = A

    # 3. largest wrong logit
    OU = W["W_O"] @ W["W_U"]
    EVOU, PVOU = W["W_E"] @ (W["W_V"] @ OU), W["W_pos"] @ (W["W_V"] @ OU)
    E_q = W["W_E"] + W["W_pos"][-1]
    EUPU = E_q @ W["W_U"]
    EU_mean, EU_q_err = _split_eu(E_q, W["W_U"], eu, dirs["W_EP_direction"])
    idx = np.arange(v)
    PVOU_pess = (PVOU[:, None, :] - PVOU[:, :, None]).max(axis=0)  # [m, j]
    L = EU_mean[None, :] - EU_mean[:, None] + PVOU_pess  # [m, j]
    R = EVOU - np.diagonal(EVOU)[:, None]
    off_diag = idx[:, None] != idx[None, :]
    R_max = np.where(off_diag, R, -np.inf).max(axis=1)  # [m]
    R_min = np.where(off_diag, R, np.inf).min(axis=1)
    W_run = np.maximum.accumulate(_rowrange(EVOU))
    g_min = np.where(q <= mm, G, v + 1).min(axis=0)  # [m, c]
    Wt = np.where(mm[0] - g_min >= 0, W_run[np.clip(mm[0] - g_min, 0, None)], np.inf)
    a_sel = np.where(R_max[:, None] >= Wt, A_hi, A_lo)
    if att == "mean_query+diff":
        a_bar = np.where(valid, a_sel, 0.0).sum(axis=0) / np.maximum(valid.sum(axis=0), 1)
    else:
        a_bar = np.zeros((v, k))
    with np.errstate(invalid="ignore"):
        terms = L[:, None, :] + a_bar[:, :, None] * R[:, None, :]  # [m, c, j]
        M_bar = np.where(off_diag[:, None, :], terms, -np.inf).max(axis=2)
        base = M_bar + (1 - a_bar) * Wt + EU_q_err[:, None, None]  # [q, m, c]
        bound = np.full(G.shape, -np.inf)
        for a in (A_lo, A_hi):
            e = a - a_bar
            slope = np.where(e >= 0, R_max[:, None], R_min[:, None]) - Wt
            bound = np.maximum(bound, base + e * slope)
    all_max = np.where(off_diag, EUPU - np.diagonal(EUPU)[:, None] + R + PVOU_pess, -np.inf)
    bound[idx, idx, 0] = all_max.max(axis=1)

    # 4. counting
    scale = 2 * (np.abs(EUPU).max() + np.abs(EVOU).max() + np.abs(PVOU).max())
    scale += 2 * np.abs(EU_mean).max() + EU_q_err.max()
    proven = valid & (bound < -SAFETY * scale)
    c_prime = np.where(q == mm, c, c - 1)
    choices = mm - G + 1
    total = int((proven & (c_prime == 0)).sum())
    for cp in range(1, k):
        hist = np.bincount(choices[proven & (c_prime == cp)], minlength=1)
        total += comb(k - 1, cp) * sum(int(n) * x**cp for x, n in enumerate(hist) if n)
    return total


# -- separable strategies (new here, not in the paper) ---------------------------------------

SEPARABLE_MAX_N_CTX = 10  # each of the 2^(n_ctx-1) position sets is a cell


@dataclass(frozen=True)
class _SepRows:
    """Quantities of the rows (q, mx), q in qs (all <= mx), of one max token mx.

    e_tok[q, x] = exp(s(q, x) - max_t s(q, t)), s = EQKE / scale, and e_pos[q, p] likewise
    from EQKP, so w_p(x) = e_tok[q, x] e_pos[q, p] is the softmax numerator of position p
    holding x, up to a factor per query. Margins: tol is folded into the direct path,
    d[q, j] = EUPU[q, j] - EUPU[q, mx] + tol, so every bound is on
    Z (max_{j != mx} (l_j - l_mx) + tol), Z = sum_p w_p > 0 (the relative margin of the cubic
    proof); and `slack` (k weights, each off by up to ~2^-1074 where it is subnormal, times
    the value scale) is taken off every threshold T: with weights far below the row's largest
    one, float64 keeps no relative precision, and the checker proves nothing from that."""

    mx: int
    qs: np.ndarray
    d: np.ndarray  # [q, v]
    E: np.ndarray  # [q]: max_{j != mx} d[q, j]
    slack: float
    ev: np.ndarray  # [x, v], x <= mx: EVOU[x, j] - EVOU[x, mx]
    pv: np.ndarray  # [p, v], all k positions: PVOU[p, j] - PVOU[p, mx]
    e_tok: np.ndarray  # [q, v]
    e_pos: np.ndarray  # [q, k]

    def w_query(self) -> np.ndarray:
        """The query position's weight w_{k-1}(q) [q]."""
        return self.e_tok[np.arange(len(self.qs)), self.qs] * self.e_pos[:, -1]


def _separable_rows(m: Model, what: str, chunked: bool):
    """Yield _SepRows for every max token (queries in chunks of about CHUNK / (2^(k-1) v)
    when `chunked`). Refuses n_ctx > 10 and several heads; biases are folded as everywhere."""
    if m.k > SEPARABLE_MAX_N_CTX:
        raise UnsupportedModelError(
            f"{what} has a cell per set of positions (2^(n_ctx-1)); n_ctx={m.k} is above "
            f"{SEPARABLE_MAX_N_CTX}"
        )
    _single_head(m, what)
    p = path_matrices(m)
    v, k = m.v, m.k
    EUPU, EVOU, PVOU = p.EUPU, p.EVOU[0], p.PVOU[0]
    value_scale = np.abs(EUPU).max() + np.abs(EVOU).max() + np.abs(PVOU).max()
    tol = SAFETY * 2 * value_scale
    slack = k * UNDERFLOW * (1 + 2 * value_scale)
    s_tok, s_pos = p.EQKE[0] / p.scale, p.EQKP[0] / p.scale
    e_tok = np.exp(s_tok - s_tok.max(axis=1, keepdims=True))
    e_pos = np.exp(s_pos - s_pos.max(axis=1, keepdims=True))
    step = max(1, CHUNK // (2 ** (k - 1) * v)) if chunked else v
    for mx in range(v):
        ev = EVOU[: mx + 1] - EVOU[: mx + 1, mx : mx + 1]
        pv = PVOU - PVOU[:, mx : mx + 1]
        for q0 in range(0, mx + 1, step):
            qs = np.arange(q0, min(q0 + step, mx + 1))
            d = EUPU[qs] - EUPU[qs, mx : mx + 1] + tol
            E = _max_except(d, np.array(mx))
            yield _SepRows(mx, qs, d, E, slack, ev, pv, e_tok[qs], e_pos[qs])


def _subset_sums(base: np.ndarray, terms: list[np.ndarray]) -> np.ndarray:
    """out[s] = base + sum of terms[p] over the bits p of s, for every bit mask s."""
    out = base[None]
    for t in terms:
        out = np.concatenate([out, out + t[None]])
    return out


def _count_below(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row r: #{(i, l) : a[r, i] < b[r, l]}, by merging: sort the row of b followed by a
    stably (an a equal to a b lands after it) and add up, at every b, the a's before it."""
    order = np.argsort(np.concatenate([b, a], axis=1), axis=1, kind="stable")
    is_a = order >= b.shape[1]
    a_before = np.cumsum(is_a, axis=1) - is_a
    return np.where(is_a, 0, a_before).sum(axis=1)


def _sum_of_powers(n: np.ndarray, c: int) -> int:
    """sum_r n[r] ** c as an exact Python int."""
    hist = np.bincount(n.ravel(), minlength=1)
    return sum(int(cnt) * x**c for x, cnt in enumerate(hist) if cnt)


def _pure_counts(W_S: np.ndarray, h: np.ndarray, T: np.ndarray) -> np.ndarray:
    """|G| per row, G = {x < mx : W_S h(x) < T}: if every non-max token is in G, the
    position terms sum to at most W_S max h < T."""
    return (W_S[:, None] * h < T[:, None]).sum(axis=1)


def separable_count(m: Model) -> int:
    """Inputs proven by the `separable` proof (joint fixed part, exact counting).

    Cell (q, mx, S): S = the non-query positions holding tokens < mx (c = |S|), the others M
    hold mx (M must be non-empty if q < mx). For every input of the cell and j != mx,
    Z (l_j - l_mx) = sum_p w_p (EUPU_c[q, j] + EVOU_c[x_p, j] + PVOU_c[p, j]) (the _c: minus
    the column mx) is at most F + sum_{p in S} u_p(x_p), with F = max_{j != mx} of the exact
    sum over M and the query (tokens fixed by the cell) and u_p(x) = w_p(x) (E + g_p(x)),
    g_p(x) = max_{j != mx}(EVOU_c[x, j] + PVOU_c[p, j]). The input is proven when
    sum_{p in S} u_p(x_p) < T = -F (less the margins of _SepRows). Counted exactly for c <= 2
    and for c = 3 on the q = mx rows (T - u_{p1}(x1) [- u_{p2}(x2)] merged with the sorted
    values of the last position); other cells count |G|^c with the pure rule,
    h(x) = e_tok[q, x] (E + max_p g_p(x)).
    """
    n = m.k - 1
    total = 0
    for r in _separable_rows(m, "the separable proof", chunked=True):
        mx, qs, is_m = r.mx, r.qs, r.qs == r.mx
        w_q, e_m = r.w_query(), r.e_tok[:, mx]
        query = w_q[:, None] * (r.d + r.ev[qs] + r.pv[n])
        on_max = [(e_m * r.e_pos[:, p])[:, None] * (r.d + r.ev[mx] + r.pv[p]) for p in range(n)]
        fixed = _subset_sums(query, on_max)  # [M, q, j]
        fixed[..., mx] = -np.inf
        T = -fixed.max(axis=-1)[::-1] - r.slack  # T[S] = -F[M], M = the complement of S
        T[-1] = np.where(is_m, T[-1], -np.inf)  # S = every position: only when q = mx
        ev_low = np.where(np.arange(m.v) == mx, -np.inf, r.ev[:mx])  # [x < mx, j]
        g = (ev_low[None] + r.pv[:n, None]).max(axis=-1)  # [p, x]
        u = (r.e_pos.T[:n, :, None] * r.e_tok[None, :, :mx]) * (r.E[:, None] + g[:, None])
        h = r.e_tok[:, :mx] * (r.E[:, None] + (g.max(axis=0) if n else 0.0))
        W = _subset_sums(np.zeros(len(qs)), [r.e_pos[:, p] for p in range(n)])  # [S, q]
        for s in range(2**n):
            S = [p for p in range(n) if s >> p & 1]
            c, Ts = len(S), T[s]
            if c == 0:
                total += int((Ts > 0).sum())
                continue
            exact = np.full(len(qs), c <= 2) | (is_m & (c == 3))
            if exact.any():
                Te, ue = Ts[exact], u[:, exact]
                if c == 1:
                    total += int((ue[S[0]] < Te[:, None]).sum())
                else:
                    thr = Te[:, None] - ue[S[0]]
                    if c == 3:
                        thr = (thr[:, :, None] - ue[S[1]][:, None, :]).reshape(len(Te), -1)
                    total += int(_count_below(ue[S[-1]], thr).sum())
            if not exact.all():
                N = _pure_counts(W[s][~exact], h[~exact], Ts[~exact])
                total += _sum_of_powers(N, c)
    return total


def separable_lite_count(m: Model) -> int:
    """Inputs proven by the `separable-lite` proof (every position pessimised, pure rule).

    Cells (q, mx, S) as in `separable_count`, with the cubic proof's
    g(x) = max_{j != mx}(EVOU_c[x, j] + max_p PVOU_c[p, j]) for every position, h(x) =
    e_tok[q, x] (E + g(x)) and T = -(e_tok[q, mx] W_M (E + g(mx)) + w_query (E + g(q))),
    W_M = sum_{p in M} e_pos[q, p]: the cell proves every assignment of tokens from
    G = {x < mx : W_S h(x) < T} (|G|^c inputs; c = 0: proven iff T > 0).
    """
    n = m.k - 1
    total = 0
    for r in _separable_rows(m, "the separable-lite proof", chunked=False):
        mx, qs, is_m = r.mx, r.qs, r.qs == r.mx
        g = _max_except(r.ev + r.pv.max(axis=0), np.array(mx))  # [x <= mx]
        h = r.e_tok[:, :mx] * (r.E[:, None] + g[:mx])
        W = _subset_sums(np.zeros(len(qs)), [r.e_pos[:, p] for p in range(n)])  # [S, q]
        on_max = r.e_tok[:, mx] * (r.E + g[mx])
        query = r.w_query() * (r.E + g[qs])
        F = _subset_sums(query, [r.e_pos[:, p] * on_max for p in range(n)])  # [M, q]
        T = -F[::-1] - r.slack  # T[S] = -F[M] - slack, M = the complement of S
        T[-1] = np.where(is_m, T[-1], -np.inf)
        total += int((T[0] > 0).sum())
        for s in range(1, 2**n):
            total += _sum_of_powers(_pure_counts(W[s], h, T[s]), s.bit_count())
    return total


# -- driver ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckResult:
    """One certificate re-checked: `correct_count` of `total` inputs proven correct."""

    strategy: str
    correct_count: int
    total: int
    seconds: float

    @property
    def bound(self) -> float:
        return self.correct_count / self.total

    def to_json(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "correct_count": self.correct_count,
                "total": self.total, "bound": self.bound, "seconds": self.seconds}  # fmt: skip


def check_strategy(m: Model, strategy: str, payload: dict[str, Any]) -> int:
    """The checker's count for one certificate (strategy id + payload)."""
    if strategy == "brute-force":
        return brute_force_count(m)
    if strategy == "cubic":
        return cubic_count(m)
    if strategy in SUBCUBIC:
        return subcubic_count(m, payload, strategy)
    if strategy == "separable":
        return separable_count(m)
    if strategy == "separable-lite":
        return separable_lite_count(m)
    raise UnknownStrategyError(f"unknown strategy {strategy!r} in the certificate")


def check_certificates(model_path: str | Path, certificate_path: str | Path) -> list[CheckResult]:
    """Re-check every certificate of the file against the model (digest must match)."""
    model = load_model_file(model_path)
    doc = load_certificate_file(certificate_path)
    digest = weights_digest(model)
    if doc["model_sha256"] != digest:
        raise CertificateError(
            f"certificate was made for a different model (weights digest "
            f"{doc['model_sha256'][:12]}..., this model is {digest[:12]}...)"
        )
    if not _same_ints(doc["model_config"], model.config):
        raise CertificateError("certificate's model_config does not match the model")
    results = []
    for cert in doc["certificates"]:
        start = time.perf_counter()
        count = check_strategy(model, cert["strategy"], cert["payload"])
        seconds = time.perf_counter() - start
        results.append(CheckResult(cert["strategy"], count, model.v**model.k, seconds))
    return results
