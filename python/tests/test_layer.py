"""hg.load_layer against PyTorch: committed hopfield-layers fixtures
(tests/fixtures/hflayers/, written by tools/make_hflayers_fixtures.py from
hflayers itself, with PyTorch's float32 and float64 outputs), 3-D and 2-D
inputs, a key-padding mask, a swapped-in method, and bad input.

Tolerances, as tests/layer.rs's for the same fixtures on the GPU: against
PyTorch's float64 output abs + rel 5e-5 (about 10x the worst case of f32
dot products of <= 64 terms through the projections, the softmax, the
read-out and out_proj, and about 9x the largest float32-vs-float64
difference PyTorch itself shows on these cases); against its float32 output
twice that, since each side then carries its own f32 rounding.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import hopfield_gpu as hg

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "hflayers"
VS_F64 = dict(atol=5e-5, rtol=5e-5)
VS_F32 = dict(atol=1e-4, rtol=1e-4)


def case(name: str):
    d = FIXTURES / name
    meta = json.loads((FIXTURES / "index.json").read_text())["cases"][name]
    arrays = {f: np.load(d / f"{f}.npy") for f in meta["inputs"]}
    if meta["mask"]:
        arrays["mask"] = np.load(d / "mask.npy")
    return d, arrays, np.load(d / "out.npy"), np.load(d / "out64.npy")


def load(ctx, name: str, **kw):
    d = FIXTURES / name
    return ctx.load_layer(d / "config.json", d / "weights.safetensors", **kw)


@pytest.mark.parametrize("name", ["hopfield_mask", "pooling_heads4_quantity3", "layer_default"])
def test_fixture_matches_pytorch(ctx, name):
    _, inputs, out32, out64 = case(name)
    layer = load(ctx, name)
    assert layer.class_name == json.loads((FIXTURES / name / "config.json").read_text())["class"]
    assert layer.method == "dense"
    z = layer.forward(**inputs)
    assert z.dtype == np.float32 and z.shape == out64.shape
    np.testing.assert_allclose(z, out64, **VS_F64)
    np.testing.assert_allclose(z, out32, **VS_F32)


def test_two_d_inputs_are_one_sequence_and_bool_masks_work(ctx):
    _, inputs, _, out64 = case("hopfield_mask")
    layer = load(ctx, "hopfield_mask")
    # Sequence 1 masks stored pattern 0: a real mask, not all zeros.
    assert inputs["mask"][1].any()
    one = {k: v[1] for k, v in inputs.items()}
    one["mask"] = one["mask"].astype(bool)
    z = layer.forward(**one)
    assert z.shape == out64[1].shape
    np.testing.assert_allclose(z, out64[1], **VS_F64)
    # Without its mask the output changes: the mask is applied.
    del one["mask"]
    assert not np.allclose(layer.forward(**one), out64[1], **VS_F64)


def test_module_level_load_layer_and_a_swapped_method(ctx):
    # top-K with K = S keeps every stored pattern: exactly the softmax, so
    # PyTorch's dense output is the answer.
    d, inputs, _, out64 = case("pooling_default")
    s = inputs["stored"].shape[1]
    layer = hg.load_layer(str(d / "config.json"), str(d / "weights.safetensors"), method="topk", k=s)
    assert layer.method == "topk"
    np.testing.assert_allclose(layer.forward(stored=inputs["stored"]), out64, **VS_F64)
    # K = 1 keeps one pattern: a different output, so the method is used.
    one = hg.load_layer(d / "config.json", d / "weights.safetensors", method="topk", k=1)
    assert not np.allclose(one.forward(stored=inputs["stored"]), out64, **VS_F64)


def test_bad_input(ctx, tmp_path):
    d, inputs, _, _ = case("hopfield_mask")
    layer = load(ctx, "hopfield_mask")
    stored, state = inputs["stored"], inputs["state"]
    wide = np.concatenate([stored, stored[..., :1]], axis=-1)  # F = 9, the config says 8
    cases = [
        (lambda: layer.forward(stored=wide, state=state), ValueError, "stored features .*got 9"),
        (lambda: layer.forward(stored=stored[None], state=state), ValueError, "stored"),
        (lambda: layer.forward(stored=stored), ValueError, "state"),
        (lambda: layer.forward(stored=stored[0], state=state), ValueError, "2-D"),
        (lambda: layer.forward(stored=stored, state=state, mask=np.ones(5)), ValueError, "mask"),
        (lambda: layer.forward(stored=np.full_like(stored, np.nan), state=state), ValueError, "stored"),
        (lambda: layer.forward(stored=stored.astype(np.int64), state=state), TypeError, "int64"),
    ]
    for call, exc, needle in cases:
        with pytest.raises(exc, match=needle):
            call()
    missing = tmp_path / "missing.safetensors"
    with pytest.raises(OSError, match="missing.safetensors"):
        ctx.load_layer(d / "config.json", missing)
    with pytest.raises(OSError):
        hg.load_layer(tmp_path / "missing.json", d / "weights.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError):
        ctx.load_layer(d / "config.json", junk)
    # Weights of another module (4 heads, 3 queries): a config/weights disagreement.
    other = FIXTURES / "pooling_heads4_quantity3" / "weights.safetensors"
    with pytest.raises(ValueError, match="layer weights"):
        ctx.load_layer(d / "config.json", other)
    with pytest.raises(ValueError, match="degree"):
        load(ctx, "hopfield_mask", method="poly", delta=0.1)
    with pytest.raises(ValueError, match="method"):
        load(ctx, "hopfield_mask", k=3)
    with pytest.raises(ValueError, match="stop"):
        load(ctx, "hopfield_mask", stop="never")
