"""Export to TransformerLens (`model/transformerlens.py`, `compact-proofs export`).

The first tests always run: the state dict's names, shapes and dtypes, the config, the CLI's
files and its bad-input contract, and the round trip through our own loader. The last ones
build a real `HookedTransformer` from the export and need TransformerLens 2.x or 3.x
(`pip install -e '.[tl]'`); they are skipped without it.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import traceback
import warnings
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from compact_proofs.cli import main
from compact_proofs.errors import CompactProofsError
from compact_proofs.model import transformerlens
from compact_proofs.model.file_format import (
    TL_NAMES,
    bundled_model_path,
    load_model,
    save_model,
    weights_digest,
)
from compact_proofs.model.transformer import AttnOnlyTransformer, ModelConfig
from compact_proofs.model.transformerlens import (
    CONFIG_FILE,
    MODEL_FILE,
    export_transformerlens,
    transformerlens_config,
    transformerlens_state_dict,
)

from models import random_model

SRC = Path(__file__).resolve().parents[1] / "src"
SMALL = ModelConfig(d_vocab=6, n_ctx=3, d_model=8, d_head=8, n_heads=1)
CONFIGS = {
    "small": SMALL,
    "multi-head": ModelConfig(d_vocab=10, n_ctx=5, d_model=12, d_head=4, n_heads=3),
    "wide-head": ModelConfig(d_vocab=7, n_ctx=4, d_model=6, d_head=10, n_heads=2),
}
# TransformerLens 2.x and 3.x register exactly these tensors for a one-layer attention-only
# model without normalisation, in this order.
TL_ORDER = [
    "embed.W_E",
    "pos_embed.W_pos",
    "blocks.0.attn.W_Q",
    "blocks.0.attn.W_O",
    "blocks.0.attn.b_Q",
    "blocks.0.attn.b_O",
    "blocks.0.attn.W_K",
    "blocks.0.attn.W_V",
    "blocks.0.attn.b_K",
    "blocks.0.attn.b_V",
    "blocks.0.attn.mask",
    "blocks.0.attn.IGNORE",
    "unembed.W_U",
    "unembed.b_U",
]
TL_MISSING = "TransformerLens not installed: pip install -e '.[tl]'"


def all_inputs(cfg: ModelConfig, n: int = 500, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, cfg.d_vocab, (n, cfg.n_ctx), generator=gen)


def cli(args: list[str | os.PathLike], capsys) -> tuple[int, str, str]:
    """`main(ARGS)` in this process: (exit status, stdout, stderr); a leaked exception is
    returned as a traceback on stderr."""
    capsys.readouterr()
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # argparse usage errors
        code = exc.code if isinstance(exc.code, int) else 1
    except Exception:
        out, err = capsys.readouterr()
        return 1, out, err + traceback.format_exc()
    out, err = capsys.readouterr()
    return code, out, err


def assert_clean_error(code: int, out: str, err: str, contains: str) -> None:
    assert code != 0, out
    assert "Traceback" not in err, err
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert contains.lower() in lines[0].lower(), lines[0]


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.safetensors"
    save_model(random_model(SMALL, seed=3, biases=True), path, {"seed": 3})
    return path


# -- the state dict and the config -------------------------------------------------------------


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("biases", [False, True])
def test_state_dict_has_exactly_the_hooked_transformer_tensors(name, biases):
    cfg = CONFIGS[name]
    model = random_model(cfg, seed=7, biases=biases)
    sd = transformerlens_state_dict(model)
    assert list(sd) == TL_ORDER
    for short, shape in cfg.shapes().items():
        t = sd[TL_NAMES[short]]
        assert t.shape == shape and t.dtype == torch.float32 and t.device.type == "cpu"
        assert torch.equal(t, getattr(model, short).detach())
        assert t.data_ptr() != getattr(model, short).data_ptr()  # a copy, not a view
    mask, ignore = sd["blocks.0.attn.mask"], sd["blocks.0.attn.IGNORE"]
    assert mask.dtype == torch.bool and mask.shape == (cfg.n_ctx, cfg.n_ctx)
    assert torch.equal(mask, torch.ones(cfg.n_ctx, cfg.n_ctx, dtype=torch.bool).tril())
    assert ignore.dtype == torch.float32 and ignore.shape == () and ignore.item() == -math.inf
    if not biases:  # zero biases are written all the same, as zeros
        assert all(not sd[TL_NAMES[b]].any() for b in ("b_Q", "b_K", "b_V", "b_O", "b_U"))


def test_state_dict_is_float32_for_a_float64_model():
    model = AttnOnlyTransformer(SMALL, dtype=torch.float64)
    model.init_weights(0)
    sd = transformerlens_state_dict(model)
    assert {t.dtype for k, t in sd.items() if k != "blocks.0.attn.mask"} == {torch.float32}


@pytest.mark.parametrize("name", CONFIGS)
def test_config_is_json_and_describes_the_model(name):
    cfg = CONFIGS[name]
    config = transformerlens_config(cfg)
    assert json.loads(json.dumps(config)) == config
    assert config == {
        "n_layers": 1,
        "d_model": cfg.d_model,
        "n_ctx": cfg.n_ctx,
        "d_head": cfg.d_head,
        "n_heads": cfg.n_heads,
        "d_vocab": cfg.d_vocab,
        "d_vocab_out": cfg.d_vocab,
        "attn_only": True,
        "act_fn": None,
        "normalization_type": None,
        "positional_embedding_type": "standard",
        "attention_dir": "causal",
        "use_attn_scale": True,  # TransformerLens' default scale is sqrt(d_head), as ours
        "default_prepend_bos": False,
    }
    assert cfg.attn_scale == math.sqrt(cfg.d_head)


# -- writing files -----------------------------------------------------------------------------


def test_export_round_trips_through_our_loader(tmp_path):
    model = random_model(CONFIGS["multi-head"], seed=11, scale=2.0, biases=True)
    files = export_transformerlens(model, tmp_path / "out", {"seed": 11})
    assert files == [tmp_path / "out" / MODEL_FILE, tmp_path / "out" / CONFIG_FILE]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [CONFIG_FILE, MODEL_FILE]
    loaded = load_model(files[0])
    assert loaded.cfg == model.cfg and loaded.provenance["seed"] == 11
    for name, t in model.weights().items():
        assert torch.equal(loaded.model.weights()[name], t), name
    assert weights_digest(loaded.model) == weights_digest(model)
    tokens = all_inputs(model.cfg)
    with torch.no_grad():
        assert torch.equal(loaded.model(tokens), model(tokens))
        assert torch.equal(
            loaded.model.forward_all_positions(tokens), model.forward_all_positions(tokens)
        )
    saved = load_file(files[0])
    expected = transformerlens_state_dict(model)
    assert set(saved) == set(expected)
    assert all(torch.equal(saved[k], expected[k]) for k in expected)
    assert json.loads(files[1].read_text()) == transformerlens_config(model.cfg)


def test_export_refuses_existing_files_and_non_directories(tmp_path):
    model = random_model(SMALL, seed=1)
    (tmp_path / "file").write_text("keep me\n")
    with pytest.raises(CompactProofsError, match="not a directory"):
        export_transformerlens(model, tmp_path / "file")
    assert (tmp_path / "file").read_text() == "keep me\n"
    export_transformerlens(model, tmp_path / "out")
    other = random_model(SMALL, seed=2)
    with pytest.raises(CompactProofsError, match="exists"):
        export_transformerlens(other, tmp_path / "out")
    assert load_model(tmp_path / "out" / MODEL_FILE).model.weights()["W_E"].equal(model.W_E)
    export_transformerlens(other, tmp_path / "out", overwrite=True)
    assert load_model(tmp_path / "out" / MODEL_FILE).model.weights()["W_E"].equal(other.W_E)


def test_a_failed_export_leaves_nothing(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(transformerlens, "save_file", fail)
    with pytest.raises(CompactProofsError, match="No space left"):
        export_transformerlens(random_model(SMALL, seed=1), tmp_path / "a" / "b")
    assert list(tmp_path.iterdir()) == []


# -- the command line --------------------------------------------------------------------------


def test_cli_writes_both_files(model_file, tmp_path, capsys):
    out = tmp_path / "tl"
    args = ["export", model_file, "--format", "transformerlens", "--out", out, "--json"]
    code, stdout, err = cli(args, capsys)
    assert code == 0, err
    record = json.loads(stdout)
    assert record["files"] == [str(out / MODEL_FILE), str(out / CONFIG_FILE)]
    assert record["format"] == "transformerlens" and record["model"] == str(model_file)
    assert sorted(p.name for p in out.iterdir()) == [CONFIG_FILE, MODEL_FILE]
    original = load_model(model_file)
    with safe_open(out / MODEL_FILE, "pt") as f:
        assert set(f.keys()) == set(TL_ORDER)
    assert weights_digest(load_model(out / MODEL_FILE).model) == weights_digest(original.model)
    assert load_model(out / MODEL_FILE).provenance == original.provenance
    code, stdout, err = cli(["export", model_file, "--out", out, "--overwrite"], capsys)
    assert code == 0 and "exported" in stdout and err == "", err


def test_cli_exports_the_bundled_model_in_a_fresh_process(tmp_path):
    path = os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH")) if p)
    run = subprocess.run(
        [sys.executable, "-m", "compact_proofs.cli", "export", "--out", tmp_path / "b"],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1"),
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    bundled = load_model(bundled_model_path())
    exported = load_model(tmp_path / "b" / MODEL_FILE)
    assert weights_digest(exported.model) == weights_digest(bundled.model)
    assert json.loads((tmp_path / "b" / CONFIG_FILE).read_text())["d_vocab"] == 64


def test_cli_refuses_a_missing_model(tmp_path, capsys):
    args = ["export", tmp_path / "nope.safetensors", "--out", tmp_path / "o"]
    code, out, err = cli(args, capsys)
    assert_clean_error(code, out, err, "not found")
    assert not (tmp_path / "o").exists()


def test_cli_refuses_an_existing_file_as_out(model_file, tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("keep me\n")
    code, out, err = cli(["export", model_file, "--out", target], capsys)
    assert_clean_error(code, out, err, "not a directory")
    assert target.read_text() == "keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors", "taken"]


def test_cli_refuses_an_unknown_format(model_file, tmp_path, capsys):
    args = ["export", model_file, "--format", "onnx", "--out", tmp_path / "o"]
    code, out, err = cli(args, capsys)
    assert code == 2
    assert_clean_error(code, out, err, "invalid choice")
    assert not (tmp_path / "o").exists()


def test_cli_refuses_to_overwrite_without_overwrite(model_file, tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / CONFIG_FILE).write_text("keep me\n")
    code, stdout, err = cli(["export", model_file, "--out", out], capsys)
    assert_clean_error(code, stdout, err, "--overwrite")
    assert [p.name for p in out.iterdir()] == [CONFIG_FILE]
    assert (out / CONFIG_FILE).read_text() == "keep me\n"


# -- a real HookedTransformer (needs TransformerLens) ------------------------------------------


@pytest.fixture(scope="module")
def hooked():
    """(HookedTransformer, HookedTransformerConfig), or skip."""
    tl = pytest.importorskip("transformer_lens", reason=TL_MISSING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return tl.HookedTransformer, tl.HookedTransformerConfig
    except (ImportError, AttributeError):
        pytest.skip(
            "this TransformerLens (4.0 or later) has no HookedTransformer: "
            "pip install -e '.[tl]' installs transformer_lens<4"
        )


def build_hooked(hooked, state_dict: dict[str, torch.Tensor], config: dict):
    hooked_transformer, hooked_config = hooked
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model = hooked_transformer(hooked_config(**config, device="cpu"))
    result = model.load_state_dict(state_dict, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert set(model.state_dict()) == set(state_dict)
    return model.eval()


def assert_same_logits(tl_model, ours: AttnOnlyTransformer, seed: int = 0) -> None:
    tokens = all_inputs(ours.cfg, seed=seed)
    with torch.no_grad():
        tl_logits = tl_model(tokens)  # [batch, n_ctx, d_vocab]
        assert tl_logits.shape == (len(tokens), ours.cfg.n_ctx, ours.cfg.d_vocab)
        torch.testing.assert_close(tl_logits, ours.forward_all_positions(tokens), atol=1e-5, rtol=0)
        torch.testing.assert_close(tl_logits[:, -1], ours(tokens), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("biases", [False, True])
def test_hooked_transformer_computes_our_logits(hooked, name, biases):
    ours = random_model(CONFIGS[name], seed=5, biases=biases)
    tl_model = build_hooked(
        hooked, transformerlens_state_dict(ours), transformerlens_config(ours.cfg)
    )
    assert tl_model.cfg.attn_scale == ours.cfg.attn_scale
    assert_same_logits(tl_model, ours)


def test_hooked_transformer_loads_the_exported_files(hooked, tmp_path, capsys):
    """The README's three lines, on the files `compact-proofs export` writes."""
    ours = random_model(CONFIGS["multi-head"], seed=9, biases=True)
    save_model(ours, tmp_path / "m.safetensors")
    code, _, err = cli(["export", tmp_path / "m.safetensors", "--out", tmp_path / "tl"], capsys)
    assert code == 0, err
    config = json.loads((tmp_path / "tl" / CONFIG_FILE).read_text())
    tl_model = build_hooked(hooked, load_file(tmp_path / "tl" / MODEL_FILE), config)
    assert_same_logits(tl_model, ours, seed=1)


def test_hooked_transformer_round_trip_back_into_our_loader(hooked, tmp_path):
    """Export, load into TransformerLens, save its state dict, and load that with ours."""
    from safetensors.torch import save_file

    ours = random_model(CONFIGS["wide-head"], seed=4, biases=True)
    tl_model = build_hooked(
        hooked, transformerlens_state_dict(ours), transformerlens_config(ours.cfg)
    )
    save_file({k: v.contiguous() for k, v in tl_model.state_dict().items()}, tmp_path / "tl.st")
    back = load_model(tmp_path / "tl.st").model
    assert weights_digest(back) == weights_digest(ours)
