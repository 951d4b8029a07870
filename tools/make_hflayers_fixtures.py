"""Golden fixtures from hopfield-layers itself, for tests/layer_reference.rs.

Runs ml-jku/hopfield-layers (`hflayers` 1.0.2, commit
f56f929c95b77a070ae675ea4f56b6d54d36e730, the newest on GitHub when this was
written) in PyTorch on the CPU, in eval mode, and writes per case into
tests/fixtures/hflayers/<case>/:

- config.json         {"class": ..., "args": {...}}, written by tools/export_hflayers.py
- weights.safetensors module.state_dict(), float32, written by the same tool
- stored.npy, state.npy, projection.npy  the inputs the case needs, float32,
                      batch first [N, S, F] whatever the module's batch_first
- mask.npy            key-padding mask [N, S], uint8 (1 = masked), when used
- out.npy             PyTorch's float32 output, float32, batch first [N, L, O]
                      (HopfieldPooling's flattened [N, Q*O] is reshaped to
                      [N, Q, O]; a batch_first=False output is transposed)
- out64.npy           the same module and inputs run in float64 (module.double()):
                      the exact-arithmetic answer for these float32 weights, up
                      to float64 rounding; it separates float32 noise in PyTorch
                      from real disagreement when a tolerance is chosen.

and an index.json listing every case with what it covers and the versions
used. Everything is seeded: a rerun writes the same bytes.

Run (PyTorch from PyPI, CPU use; the hflayers code is never copied here):

    python3 -m venv /work/venv-torch
    /work/venv-torch/bin/pip install torch safetensors numpy
    git clone https://github.com/ml-jku/hopfield-layers /tmp/hflayers   # or any checkout
    PYTHONPATH=/tmp/hflayers /work/venv-torch/bin/python tools/make_hflayers_fixtures.py

It also checks, against the running module, the hflayers behaviours that
docs/hflayers.md states (stop rule, scaling tiling, concat_bias_pattern,
fully masked rows, static inputs and LayerNorm, ...) and fails if one of them
does not hold.
"""

import json
import os
import shutil
import sys
import zlib

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_hflayers import config_of, export  # noqa: E402

import hflayers  # noqa: E402
from hflayers import Hopfield, HopfieldLayer, HopfieldPooling  # noqa: E402

HFLAYERS_COMMIT = "f56f929c95b77a070ae675ea4f56b6d54d36e730"
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "hflayers")
CLASSES = {"Hopfield": Hopfield, "HopfieldPooling": HopfieldPooling, "HopfieldLayer": HopfieldLayer}

torch.set_num_threads(1)  # one summation order, so reruns write the same bytes


def case(name, cls, args, n=2, s=5, l=3, what="", inputs=None, mask=None, sizes=None, expect="match",
         stops_early=False):
    """One fixture: ``inputs`` names the arrays the forward pass takes
    (defaults by class), ``sizes`` their feature sizes, ``mask`` a function
    (n, s) -> bool array, ``expect`` "match", "nan" (hflayers gives NaN) or
    "mixing" (hflayers mixes the sequences of the batch),
    ``stops_early``: the stop rule, not the cap, must end the updates."""
    return dict(name=name, cls=cls, args=args, n=n, s=s, l=l, what=what, inputs=inputs, mask=mask,
                sizes=sizes or {}, expect=expect, stops_early=stops_early)


def some_masked(n, s):
    m = np.zeros((n, s), dtype=bool)
    m[0, 1] = True
    m[0, s - 1] = True
    if n > 1:
        m[1, 0] = True
    return m


def one_row_fully_masked(n, s):
    m = some_masked(n, s)
    m[n - 1, :] = True
    return m


CASES = [
    # Hopfield: the defaults, then one argument at a time.
    case("hopfield_default", "Hopfield", dict(input_size=8), what="defaults: 1 head, all LayerNorms, packed in_proj"),
    case("hopfield_self", "Hopfield", dict(input_size=8, num_heads=2, normalize_stored_pattern=False,
                                           normalize_stored_pattern_affine=False, normalize_state_pattern=False,
                                           normalize_state_pattern_affine=False, normalize_pattern_projection=False,
                                           normalize_pattern_projection_affine=False),
         inputs=["self"], s=4, l=4, what="one tensor as stored, state and projection (the self-attention branch); no LayerNorms"),
    case("hopfield_heads2", "Hopfield", dict(input_size=8, num_heads=2), n=3, what="2 heads, N = 3"),
    case("hopfield_heads4", "Hopfield", dict(input_size=8, num_heads=4), what="4 heads of dim 2"),
    case("hopfield_scaling", "Hopfield", dict(input_size=8, num_heads=2, scaling=0.9), what="scaling given (float)"),
    case("hopfield_scaling_per_head", "Hopfield",
         dict(input_size=8, num_heads=2, hidden_size=4, scaling=torch.tensor([0.5, 1.5]), update_steps_max=2),
         what="per-head scaling tensor with 2 updates: tiled over features, j mod H"),
    case("hopfield_scaling_tiled_odd", "Hopfield",
         dict(input_size=8, num_heads=2, hidden_size=3, scaling=torch.tensor([0.25, 2.0])),
         what="per-head scaling, head dim 3: head 0 gets betas 0,1,0 and head 1 gets 1,0,1"),
    case("hopfield_steps1", "Hopfield", dict(input_size=8, num_heads=2, update_steps_max=1, scaling=2.0),
         what="update_steps_max = 1: one update, two softmaxes"),
    case("hopfield_steps3", "Hopfield", dict(input_size=8, num_heads=2, update_steps_max=3, scaling=2.0), n=3,
         what="update_steps_max = 3"),
    case("hopfield_steps_eps", "Hopfield",
         dict(input_size=8, num_heads=2, update_steps_max=20, update_steps_eps=0.05, scaling=1.5), n=3,
         stops_early=True, what="stop rule per head on max over the batch of |xi_t - xi_t-1|_F, before the cap"),
    case("hopfield_steps_none", "Hopfield", dict(input_size=8, num_heads=2, update_steps_max=None,
                                                 update_steps_eps=1e-3, scaling=1.0),
         stops_early=True, what="update_steps_max = None: until the stop rule"),
    case("hopfield_steps_per_head", "Hopfield",
         dict(input_size=8, num_heads=2, update_steps_max=torch.tensor([0, 3], dtype=torch.int32),
              update_steps_eps=torch.tensor([1e-4, 1e-2]), scaling=2.0),
         what="per-head update_steps_max [0, 3] and update_steps_eps"),
    case("hopfield_no_norm_stored", "Hopfield", dict(input_size=8, num_heads=2, normalize_stored_pattern=False,
                                                     normalize_stored_pattern_affine=False),
         what="normalize_stored_pattern off"),
    case("hopfield_no_norm_state", "Hopfield", dict(input_size=8, num_heads=2, normalize_state_pattern=False,
                                                    normalize_state_pattern_affine=False),
         what="normalize_state_pattern off"),
    case("hopfield_no_norm_projection", "Hopfield",
         dict(input_size=8, num_heads=2, normalize_pattern_projection=False,
              normalize_pattern_projection_affine=False), what="normalize_pattern_projection off"),
    case("hopfield_norm_no_affine", "Hopfield",
         dict(input_size=8, num_heads=2, normalize_stored_pattern_affine=False, normalize_state_pattern_affine=False,
              normalize_pattern_projection_affine=False, normalize_stored_pattern_eps=1e-3,
              normalize_state_pattern_eps=0.5, normalize_pattern_projection_eps=1e-2),
         what="LayerNorms without affine, each eps set"),
    case("hopfield_space_norm", "Hopfield", dict(input_size=8, num_heads=2, normalize_hopfield_space=True,
                                                 update_steps_max=2),
         what="normalize_hopfield_space (no affine), with updates: q and k normalised at step 0 only"),
    case("hopfield_space_norm_affine", "Hopfield",
         dict(input_size=8, num_heads=2, hidden_size=4, normalize_hopfield_space=True,
              normalize_hopfield_space_affine=True, normalize_hopfield_space_eps=1e-2),
         what="normalize_hopfield_space with affine p_norm_weight/p_norm_bias and eps"),
    case("hopfield_sizes", "Hopfield",
         dict(input_size=8, hidden_size=5, output_size=6, pattern_size=3, num_heads=2, stored_pattern_size=7,
              pattern_projection_size=4),
         sizes=dict(stored=7, projection=4),
         what="hidden, output, pattern, stored and projection sizes all differ: separate q/k/v_proj_weight"),
    case("hopfield_pattern_size", "Hopfield", dict(input_size=8, num_heads=2, pattern_size=4, output_size=5),
         what="pattern_size given alone: separate projections, value heads of 4"),
    case("hopfield_mask", "Hopfield", dict(input_size=8, num_heads=2), n=3, mask=some_masked,
         what="key-padding mask"),
    case("hopfield_mask_steps", "Hopfield", dict(input_size=8, num_heads=2, update_steps_max=3, scaling=2.0), n=3,
         mask=some_masked, what="key-padding mask kept through the updates"),
    case("hopfield_zero_association", "Hopfield", dict(input_size=8, num_heads=2, add_zero_association=True), n=3,
         mask=one_row_fully_masked,
         what="add_zero_association: a zero key and value; a fully masked row attends to it alone"),
    case("hopfield_mask_full_row", "Hopfield", dict(input_size=8, num_heads=2), n=2, mask=one_row_fully_masked,
         expect="nan", what="a sequence whose memories are all masked: hflayers gives NaN, hopfield-gpu an error"),
    case("hopfield_no_bias", "Hopfield", dict(input_size=8, num_heads=2, input_bias=False),
         what="input_bias off: no in_proj_bias, out_proj without bias"),
    case("hopfield_no_out_projection", "Hopfield", dict(input_size=8, num_heads=2, disable_out_projection=True),
         what="disable_out_projection: heads concatenated"),
    case("hopfield_concat_bias", "Hopfield", dict(input_size=8, num_heads=2, concat_bias_pattern=True),
         what="concat_bias_pattern: bias_k/bias_v are in the state dict but have no effect"),
    case("hopfield_dropout_eval", "Hopfield", dict(input_size=8, num_heads=2, dropout=0.5),
         what="dropout has no effect in eval mode"),
    case("hopfield_seq_first", "Hopfield", dict(input_size=8, num_heads=2, batch_first=False), n=3,
         what="batch_first = False (inputs here are still stored batch first)"),
    case("hopfield_static_stored", "Hopfield",
         dict(input_size=8, num_heads=2, stored_pattern_as_static=True, stored_pattern_size=4),
         sizes=dict(stored=4), n=1, what="stored_pattern_as_static: raw keys of head dim, tiled to every head"),
    case("hopfield_static_batch_mixing", "Hopfield",
         dict(input_size=8, num_heads=2, stored_pattern_as_static=True, stored_pattern_size=4),
         sizes=dict(stored=4), n=2, expect="mixing",
         what="a per-sequence static input with N > 1 and H > 1: hflayers tiles it along the batch axis, so "
              "sequences see each other's patterns; hopfield-gpu refuses"),
    case("hopfield_static_state", "Hopfield", dict(input_size=8, state_pattern_as_static=True),
         what="state_pattern_as_static (1 head: the LayerNorm of input_size still applies to the static state)"),
    case("hopfield_static_projection", "Hopfield",
         dict(input_size=8, num_heads=2, pattern_projection_as_static=True, normalize_pattern_projection=False,
              normalize_pattern_projection_affine=False),
         sizes=dict(projection=4), n=1,
         what="pattern_projection_as_static, packed in_proj: raw values tiled to every head"),
    case("hopfield_static_stored_projection", "Hopfield",
         dict(input_size=8, num_heads=2, hidden_size=4, stored_pattern_as_static=True,
              pattern_projection_as_static=True, stored_pattern_size=4, pattern_projection_size=6,
              disable_out_projection=True),
         sizes=dict(stored=4, projection=6), n=1,
         what="static keys and values, separate projections: the values are split across heads, not tiled"),
    case("hopfield_static_all", "Hopfield",
         dict(num_heads=2, stored_pattern_as_static=True, state_pattern_as_static=True,
              pattern_projection_as_static=True, disable_out_projection=True, normalize_stored_pattern=False,
              normalize_stored_pattern_affine=False, normalize_state_pattern=False,
              normalize_state_pattern_affine=False, normalize_pattern_projection=False,
              normalize_pattern_projection_affine=False),
         sizes=dict(stored=6, state=6, projection=5), n=1,
         what="static-only execution: no weights at all, scaling 1, every head the same"),
    case("hopfield_connected", "Hopfield", dict(input_size=8, num_heads=2, pattern_projection_as_connected=True),
         what="pattern_projection_as_connected: values go through the key projection, then v_proj_weight"),
    case("hopfield_connected_static", "Hopfield",
         dict(input_size=8, num_heads=2, hidden_size=4, stored_pattern_size=4, pattern_projection_size=4,
              pattern_projection_as_connected=True, pattern_projection_as_static=True),
         what="connected and static values: the key projection alone"),
    # HopfieldPooling
    case("pooling_default", "HopfieldPooling", dict(input_size=8), s=6, what="defaults: one learned query"),
    case("pooling_heads4_quantity3", "HopfieldPooling", dict(input_size=8, num_heads=4, quantity=3), n=3, s=6,
         what="4 heads, 3 learned queries"),
    case("pooling_sizes", "HopfieldPooling",
         dict(input_size=8, hidden_size=3, output_size=5, pattern_size=2, num_heads=2, quantity=2), s=6,
         what="hidden/output/pattern sizes differ from input_size"),
    case("pooling_mask", "HopfieldPooling", dict(input_size=8, num_heads=2, quantity=2), n=3, s=6, mask=some_masked,
         what="bags padded with a key-padding mask"),
    case("pooling_steps_none", "HopfieldPooling",
         dict(input_size=8, num_heads=2, update_steps_max=None, update_steps_eps=1e-3, scaling=1.0), n=3, s=6,
         stops_early=True, what="until convergence"),
    case("pooling_static_state", "HopfieldPooling",
         dict(input_size=8, num_heads=2, hidden_size=4, state_pattern_as_static=True, normalize_state_pattern=False,
              normalize_state_pattern_affine=False, quantity=2), s=6,
         what="state_pattern_as_static: pooling_weights of head dim"),
    case("pooling_projection", "HopfieldPooling", dict(input_size=8, num_heads=2, pattern_projection_size=5), s=6,
         inputs=["stored", "projection"], sizes=dict(projection=5),
         what="separate pattern projection input (the tuple form)"),
    case("pooling_seq_first", "HopfieldPooling", dict(input_size=8, num_heads=2, quantity=2, batch_first=False),
         n=3, s=6, what="batch_first = False: pooling_weights [Q, 1, F] and the flatten quirk"),
    # HopfieldLayer
    case("layer_default", "HopfieldLayer", dict(input_size=8), l=4, what="defaults: one learned memory"),
    case("layer_quantity", "HopfieldLayer", dict(input_size=8, num_heads=2, quantity=5), n=3, l=4,
         what="5 learned memories, 2 heads"),
    case("layer_separated", "HopfieldLayer",
         dict(input_size=8, num_heads=2, quantity=5, lookup_weights_as_separated=True,
              lookup_targets_as_trainable=False), l=4,
         what="separate target_weights as pattern projection"),
    case("layer_separated_sized", "HopfieldLayer",
         dict(input_size=8, num_heads=2, quantity=4, lookup_weights_as_separated=True, pattern_projection_size=6,
              stored_pattern_size=5, output_size=3, hidden_size=3), l=4,
         what="lookup weights of stored_pattern_size, targets of pattern_projection_size"),
    case("layer_mask", "HopfieldLayer", dict(input_size=8, num_heads=2, quantity=5), n=3, l=4,
         mask=lambda n, s: some_masked(n, 5), what="key-padding mask over the learned memories"),
    case("layer_steps3", "HopfieldLayer", dict(input_size=8, num_heads=2, quantity=6, update_steps_max=3,
                                               scaling=3.0), l=4, what="3 updates against learned memories"),
    case("layer_static_stored", "HopfieldLayer",
         dict(input_size=8, num_heads=2, hidden_size=4, quantity=5, stored_pattern_as_static=True,
              normalize_stored_pattern=False, normalize_stored_pattern_affine=False,
              lookup_weights_as_separated=True, pattern_projection_size=8), l=4,
         what="stored_pattern_as_static: lookup_weights of head dim, separate targets of input size"),
    case("layer_seq_first", "HopfieldLayer", dict(input_size=8, num_heads=2, quantity=5, batch_first=False), n=3,
         l=4, what="batch_first = False: lookup_weights [Q, 1, F]"),
    case("layer_zero_association_no_norm", "HopfieldLayer",
         dict(input_size=8, num_heads=2, quantity=4, add_zero_association=True, normalize_stored_pattern=False,
              normalize_stored_pattern_affine=False, normalize_pattern_projection=False,
              normalize_pattern_projection_affine=False), l=4,
         what="add_zero_association with learned memories, stored and projection LayerNorms off"),
]


def randomise(module, gen):
    """Every parameter drawn from a seeded generator, at sizes that make the
    softmax neither uniform (hflayers' init: std 0.02) nor one-hot."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("norm_stored_pattern.weight") or name.endswith("norm_state_pattern.weight") \
                    or name.endswith("norm_pattern_projection.weight") or name.endswith("p_norm_weight"):
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=gen))
            elif p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=gen) / np.sqrt(p.shape[1]))
            elif name.endswith(("pooling_weights", "lookup_weights", "target_weights")):
                p.copy_(torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))


def feature_sizes(c, module):
    hop = module if c["cls"] == "Hopfield" else module.hopfield
    core = hop.association_core
    sizes = dict(stored=core.kdim, state=core.embed_dim, projection=core.vdim)
    sizes.update(c["sizes"])
    return sizes


def inputs_of(c, module, gen):
    """Batch-first float32 inputs of the case, by name."""
    n, s, l = c["n"], c["s"], c["l"]
    f = feature_sizes(c, module)
    names = c["inputs"] or {"Hopfield": ["stored", "state", "projection"], "HopfieldPooling": ["stored"],
                            "HopfieldLayer": ["state"]}[c["cls"]]
    out = {}
    if names == ["self"]:
        out["stored"] = torch.randn(n, s, f["state"], generator=gen)
        out["state"] = out["stored"].clone()
        out["projection"] = out["stored"].clone()
        return out
    for name in names:
        rows = l if name == "state" else s
        out[name] = torch.randn(n, rows, f[name], generator=gen)
    return out


def forward(c, module, x, mask, dtype):
    """Run the module in ``dtype``; returns the batch-first [N, L, O] output."""
    module = module.to(dtype)
    x = {k: v.to(dtype) for k, v in x.items()}
    batch_first = (module if c["cls"] == "Hopfield" else module.hopfield).batch_first
    if not batch_first:
        x = {k: v.transpose(0, 1).contiguous() for k, v in x.items()}
    m = None if mask is None else torch.from_numpy(mask)
    with torch.no_grad():
        if c["cls"] == "Hopfield":
            if c["inputs"] == ["self"]:
                y = module(x["state"], stored_pattern_padding_mask=m)
            else:
                y = module((x["stored"], x["state"], x["projection"]), stored_pattern_padding_mask=m)
        elif c["cls"] == "HopfieldPooling":
            arg = (x["stored"], x["projection"]) if "projection" in x else x["stored"]
            y = module(arg, stored_pattern_padding_mask=m)
        else:
            y = module(x["state"], stored_pattern_padding_mask=m)
    n = c["n"]
    if c["cls"] == "HopfieldPooling":
        q = module.quantity
        if batch_first:
            y = y.reshape(n, q, -1)  # [N, Q*O] -> [N, Q, O]
        else:
            y = y.reshape(q, n, -1).transpose(0, 1)  # [Q, N*O] -> [N, Q, O]
    elif not batch_first:
        y = y.transpose(0, 1)
    return y.contiguous()


def updates_until_stop(c, module, x, mask, out):
    """For a case whose stop rule can end the updates before the cap (an int
    cap above 1, or None): the fewest updates k such that capping at k gives
    exactly ``out``, i.e. the update at which the last head stopped. For a
    ``stops_early`` case, asserts that the stop rule, not the cap, ended it,
    so that the fixture tests the rule."""
    cap = c["args"].get("update_steps_max", 0)
    if not ((cap is None) or (isinstance(cap, int) and cap > 1)):
        return None
    for k in range(0, 200):
        args = dict(c["args"], update_steps_max=k)
        trial = CLASSES[c["cls"]](**args)
        trial.load_state_dict(module.state_dict())
        trial.eval()
        if torch.equal(forward(c, trial, x, mask, torch.float32), out):
            if c["stops_early"]:
                assert k >= 2 and (cap is None or k < cap), f"{c['name']}: stopped after {k} updates (cap {cap})"
            return k
    raise AssertionError(f"{c['name']}: no cap below 200 reproduces the output")


def save_npy(path, array):
    np.save(path, np.ascontiguousarray(array))


def make(c):
    # Seeded by the case's name, so that adding a case leaves the others' bytes alone.
    seed = zlib.crc32(c["name"].encode())
    torch.manual_seed(seed)  # the constructors draw their own init first
    gen = torch.Generator().manual_seed(seed + 1)
    cls = CLASSES[c["cls"]]
    module = cls(**c["args"])
    randomise(module, gen)
    module.eval()
    x = inputs_of(c, module, gen)
    mask = None if c["mask"] is None else c["mask"](c["n"], c["s"])
    out32 = forward(c, module, x, mask, torch.float32)
    out64 = forward(c, module, x, mask, torch.float64)
    module = module.to(torch.float32)

    directory = os.path.join(ROOT, c["name"])
    os.makedirs(directory)
    # The fixtures go through the export tool, which also checks that the
    # arguments it reads from the module rebuild it, and that the arguments
    # the case was built with agree.
    config = export(module, os.path.join(directory, "weights"), **c["args"])
    os.replace(os.path.join(directory, "weights.json"), os.path.join(directory, "config.json"))
    for name, v in x.items():
        save_npy(os.path.join(directory, name + ".npy"), v.numpy().astype(np.float32))
    if mask is not None:
        save_npy(os.path.join(directory, "mask.npy"), mask.astype(np.uint8))
    save_npy(os.path.join(directory, "out.npy"), out32.numpy().astype(np.float32))
    save_npy(os.path.join(directory, "out64.npy"), out64.numpy().astype(np.float64))

    updates = updates_until_stop(c, module, x, mask, out32)
    nan32, nan64 = bool(torch.isnan(out32).any()), bool(torch.isnan(out64).any())
    if c["expect"] == "nan":
        assert nan32 and nan64, f"{c['name']}: expected hflayers to give NaN"
        diff = None
    elif c["expect"] == "mixing":
        # Each sequence alone (N = 1, where hflayers is right) differs from
        # the same sequence in the batch.
        alone = torch.cat([forward(dict(c, n=1), module, {k: v[i:i + 1] for k, v in x.items()}, None,
                                   torch.float64) for i in range(c["n"])])
        diff = float((alone - out64).abs().max())
        assert diff > 1e-2, f"{c['name']}: no batch mixing ({diff})"
        diff = None
    else:
        assert not (nan32 or nan64), f"{c['name']}: unexpected NaN"
        diff = float((out32.double() - out64).abs().max())
    return dict(cls=c["cls"], what=c["what"], expect=c["expect"], inputs=sorted(x),
                mask=mask is not None, out_shape=list(out32.shape), f32_vs_f64_max_abs=diff,
                updates_until_stop=updates,
                max_abs_out=float(out64.abs().max()) if diff is not None else None, args=config["args"])


# ---------------------------------------------------------------------------------------------
# Behaviours docs/hflayers.md states, checked on the running module (not written to fixtures).


def checks():
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, 5, 8, generator=gen)

    # concat_bias_pattern has no effect: changing bias_k/bias_v changes nothing.
    m = Hopfield(input_size=8, num_heads=2, concat_bias_pattern=True).eval()
    randomise(m, gen)
    with torch.no_grad():
        a = m(x)
        m.association_core.bias_k.add_(5.0)
        m.association_core.bias_v.add_(5.0)
        b = m(x)
    assert torch.equal(a, b), "concat_bias_pattern has an effect"

    # concat_bias_pattern with a static stored pattern fails in forward (only bias_v exists).
    m = Hopfield(input_size=8, num_heads=2, hidden_size=4, stored_pattern_as_static=True, stored_pattern_size=4,
                 concat_bias_pattern=True).eval()
    try:
        m((torch.randn(2, 5, 4), x, x))
        raise AssertionError("concat_bias_pattern + static stored pattern ran")
    except AssertionError as e:
        if "ran" in str(e):
            raise

    # A per-head scaling tensor with head dim not divisible by the heads fails
    # once an update step runs (the tiling is re-done per head).
    m = Hopfield(input_size=8, num_heads=2, hidden_size=3, scaling=torch.tensor([1.0, 2.0]),
                 update_steps_max=1).eval()
    try:
        m(x)
        raise AssertionError("tiled scaling with head dim 3 and an update ran")
    except RuntimeError:
        pass

    # An int scaling is refused by hflayers (it asserts float or Tensor).
    m = Hopfield(input_size=8, scaling=2).eval()
    try:
        m(x)
        raise AssertionError("int scaling ran")
    except AssertionError as e:
        if "ran" in str(e):
            raise

    # A negative update_steps_max behaves as None (until the stop rule).
    m1 = Hopfield(input_size=8, num_heads=2, update_steps_max=-1, update_steps_eps=1e-3).eval()
    randomise(m1, torch.Generator().manual_seed(3))
    m2 = Hopfield(input_size=8, num_heads=2, update_steps_max=None, update_steps_eps=1e-3).eval()
    m2.load_state_dict(m1.state_dict())
    with torch.no_grad():
        assert torch.equal(m1(x), m2(x)), "update_steps_max = -1 differs from None"

    # association_activation is looked up in torch and applied to the output;
    # an unknown name is silently ignored.
    m = Hopfield(input_size=8, association_activation="tanh").eval()
    assert m.association_activation is torch.tanh
    m = Hopfield(input_size=8, association_activation="no_such_function").eval()
    assert m.association_activation is None

    # normalize_hopfield_space_affine needs hidden_size (hflayers sizes the
    # parameters from the argument).
    try:
        Hopfield(input_size=8, normalize_hopfield_space=True, normalize_hopfield_space_affine=True)
        raise AssertionError("affine Hopfield-space norm without hidden_size built")
    except TypeError:
        pass

    # The export tool refuses constructor arguments that do not rebuild the module.
    m = HopfieldPooling(input_size=8, num_heads=2, quantity=3)
    try:
        config_of(m, num_heads=2, quantity=4, input_size=8)
        raise AssertionError("export took a wrong quantity")
    except ValueError as e:
        assert "quantity" in str(e), e
    assert config_of(m, num_heads=2, quantity=3, input_size=8)["args"] == \
        {"input_size": 8, "num_heads": 2, "quantity": 3}

    # HopfieldPooling and HopfieldLayer take no *_eps arguments.
    for cls in (HopfieldPooling, HopfieldLayer):
        try:
            cls(input_size=8, normalize_stored_pattern_eps=1e-3)
            raise AssertionError(f"{cls.__name__} took an eps argument")
        except TypeError:
            pass


def main():
    assert hflayers.__file__, "hflayers not importable: set PYTHONPATH to a hopfield-layers checkout"
    checks()
    if os.path.isdir(ROOT):
        shutil.rmtree(ROOT)
    os.makedirs(ROOT)
    index = {
        "hflayers_commit": HFLAYERS_COMMIT,
        "torch": torch.__version__.split("+")[0],
        "numpy": np.__version__,
        "layout": "inputs and outputs batch first [N, S, F]; mask [N, S] uint8, 1 = masked",
        "cases": {},
    }
    assert len({c["name"] for c in CASES}) == len(CASES), "case names must be unique"
    for c in CASES:
        index["cases"][c["name"]] = make(c)
    with open(os.path.join(ROOT, "index.json"), "w") as f:
        json.dump(index, f, indent=1, sort_keys=True)
        f.write("\n")
    worst = max((v["f32_vs_f64_max_abs"] or 0.0, k) for k, v in index["cases"].items())
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(ROOT) for f in fs)
    print(f"{len(CASES)} cases in {ROOT} ({total} bytes); largest |out32 - out64| = {worst[0]:.3e} ({worst[1]})")


if __name__ == "__main__":
    main()
