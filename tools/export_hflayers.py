"""Export a hopfield-layers module so that hopfield-gpu can run it unchanged.

Writes two files next to ``path_prefix``:

- ``<prefix>.safetensors``: ``safetensors.torch.save_file(module.state_dict(), ...)``
  (float32 as trained; hopfield-gpu also reads float64, float16 and bfloat16);
- ``<prefix>.json``: ``{"class": "Hopfield" | "HopfieldPooling" | "HopfieldLayer",
  "args": {constructor arguments by their hflayers names}}``.

Usage, in the Python environment where the module was trained::

    import sys; sys.path.insert(0, "path/to/hopfield-gpu/tools")
    from export_hflayers import export
    export(module, "out/pooling")                        # arguments read from the module
    export(module, "out/pooling", num_heads=4, quantity=8)  # ... and checked against these
    export(module, "out/pooling", method={"name": "topk", "k": 8})  # hopfield-gpu's own extra

or from the shell, for a module saved whole with ``torch.save(module, "m.pt")``::

    python tools/export_hflayers.py m.pt out/pooling

How the constructor arguments are found: hflayers modules do not keep the
arguments they were built with, but every argument that changes the eval-mode
forward pass leaves a trace in an attribute (``association_core.num_heads``,
``norm_stored_pattern.eps``, ``pooling_weights.shape``, the kind of input
projection, ...). ``export`` reads those traces, writes the smallest set of
arguments that rebuilds an equivalent module (an argument whose value is what
its default would give is left out), and then checks itself: it builds a fresh
module of the same class from exactly the arguments it wrote and requires the
same traces and the same state-dict keys and shapes. Arguments that the caller
passes are checked the same way and a disagreement raises ``ValueError`` naming
the argument. Arguments with no effect in eval mode (``dropout``,
``trainable``, ``lookup_targets_as_trainable``) are written when they differ
from the default, for the record.

Needs torch, safetensors and hflayers (hopfield-layers 1.0.2 was used to write
this; see tools/make_hflayers_fixtures.py).
"""

import json
import os
import sys

import torch
from safetensors.torch import save_file

from hflayers import Hopfield, HopfieldLayer, HopfieldPooling

_CLASSES = {"Hopfield": Hopfield, "HopfieldPooling": HopfieldPooling, "HopfieldLayer": HopfieldLayer}

def class_name(module):
    """The hflayers class of ``module`` (exact type: subclasses may change forward)."""
    for name, cls in _CLASSES.items():
        if type(module) is cls:
            return name
    raise TypeError(f"not a hopfield-layers module: {type(module).__name__}")


def _plain(value):
    """A JSON-ready copy of an argument value (tensors become lists)."""
    if isinstance(value, torch.Tensor):
        if value.dtype.is_floating_point:
            return [float(v) for v in value.detach().cpu().tolist()]
        return [int(v) for v in value.detach().cpu().tolist()]
    return value


def _hopfield_of(module):
    return module if type(module) is Hopfield else module.hopfield


def traces(module):
    """Everything about ``module`` that its constructor arguments decide, as
    plain values: the attributes the arguments leave behind."""
    hop = _hopfield_of(module)
    core = hop.association_core
    activation = hop.association_activation
    t = {
        "num_heads": core.num_heads,
        "embed_dim": core.embed_dim,
        "kdim": core.kdim,
        "vdim": core.vdim,
        "head_dim": core.head_dim,
        "pattern_dim": core.pattern_dim,
        "out_dim": core.out_dim,
        "packed": core._qkv_same_embed_dim,
        "static_execution": core.static_execution,
        "scaling": _plain(hop.scaling),
        "update_steps_max": _plain(hop.update_steps_max),
        "update_steps_eps": _plain(hop.update_steps_eps),
        "key_as_static": core.key_as_static,
        "query_as_static": core.query_as_static,
        "value_as_static": core.value_as_static,
        "value_as_connected": core.value_as_connected,
        "normalize_pattern": core.normalize_pattern,
        "normalize_pattern_affine": core.normalize_pattern_affine,
        "normalize_pattern_eps": core.normalize_pattern_eps,
        "batch_first": hop.batch_first,
        "association_activation": None if activation is None else activation.__name__,
        "dropout": core.dropout,
        "bias": (core.in_proj_bias is not None) or (core.out_proj is not None and core.out_proj.bias is not None),
        "bias_kv": (core.bias_k is not None) or (core.bias_v is not None),
        "add_zero_attn": core.add_zero_attn,
        "disable_out_projection": core.disable_out_projection,
    }
    for name in ("stored_pattern", "state_pattern", "pattern_projection"):
        norm = getattr(hop, "norm_" + name)
        t["norm_" + name] = None if norm is None else (tuple(norm.normalized_shape), norm.elementwise_affine, norm.eps)
    if type(module) is HopfieldPooling:
        t["quantity"] = module.quantity
        t["trainable"] = module.pooling_weights.requires_grad
    if type(module) is HopfieldLayer:
        t["quantity"] = module.quantity
        t["trainable"] = module.lookup_weights.requires_grad
        t["separated"] = module.target_weights is not None
        t["targets_trainable"] = module.target_weights is not None and module.target_weights.requires_grad
    t["state_dict"] = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    return t


def _read_args(module):
    """Constructor arguments that rebuild ``module``, every one written out."""
    name = class_name(module)
    hop = _hopfield_of(module)
    core = hop.association_core
    t = traces(module)
    a = {}
    a["input_size"] = core.embed_dim
    a["num_heads"] = core.num_heads
    if not core.static_execution:
        a["hidden_size"] = core.head_dim
        a["output_size"] = core.out_dim
        # pattern_size is one of the conditions for the packed in_proj_weight:
        # when the module is packed it was None; otherwise its value is the
        # pattern dimension (equivalent whether it was given or defaulted).
        a["pattern_size"] = None if core._qkv_same_embed_dim else core.pattern_dim
        a["stored_pattern_size"] = core.kdim
        a["pattern_projection_size"] = core.vdim
    a["scaling"] = _plain(hop.scaling)
    a["update_steps_max"] = _plain(hop.update_steps_max)
    a["update_steps_eps"] = _plain(hop.update_steps_eps)
    for arg, norm in (("normalize_stored_pattern", hop.norm_stored_pattern),
                      ("normalize_state_pattern", hop.norm_state_pattern),
                      ("normalize_pattern_projection", hop.norm_pattern_projection)):
        a[arg] = norm is not None
        a[arg + "_affine"] = norm is not None and norm.elementwise_affine
        eps = 1e-5 if norm is None else norm.eps
        if name == "Hopfield":
            a[arg + "_eps"] = eps
        elif eps != 1e-5:
            raise ValueError(f"{arg}_eps = {eps}: {name} has no such argument, so hopfield-gpu cannot rebuild it")
    a["normalize_hopfield_space"] = core.normalize_pattern
    a["normalize_hopfield_space_affine"] = core.normalize_pattern_affine
    if name == "Hopfield":
        a["normalize_hopfield_space_eps"] = core.normalize_pattern_eps
    elif core.normalize_pattern_eps != 1e-5:
        raise ValueError(f"normalize_hopfield_space_eps = {core.normalize_pattern_eps}: {name} has no such argument")
    a["stored_pattern_as_static"] = core.key_as_static
    a["state_pattern_as_static"] = core.query_as_static
    a["pattern_projection_as_static"] = core.value_as_static
    a["pattern_projection_as_connected"] = core.value_as_connected
    a["batch_first"] = hop.batch_first
    a["association_activation"] = t["association_activation"]
    a["dropout"] = core.dropout
    a["input_bias"] = t["bias"]
    a["concat_bias_pattern"] = t["bias_kv"]
    a["add_zero_association"] = core.add_zero_attn
    a["disable_out_projection"] = core.disable_out_projection
    if name != "Hopfield":
        a["quantity"] = module.quantity
        a["trainable"] = t["trainable"]
        if a["input_size"] is None:
            # Required positionally by the wrappers; a static-only wrapper
            # still sizes its learned patterns from it.
            weights = module.pooling_weights if name == "HopfieldPooling" else module.lookup_weights
            a["input_size"] = weights.shape[2]
    if name == "HopfieldLayer":
        a["lookup_weights_as_separated"] = t["separated"]
        a["lookup_targets_as_trainable"] = t["targets_trainable"] if t["separated"] else True
    return a


def _build(name, args):
    """A fresh module of class ``name`` from JSON-style ``args``."""
    kwargs = dict(args)
    for key in ("scaling", "update_steps_eps"):
        if isinstance(kwargs.get(key), list):
            kwargs[key] = torch.tensor(kwargs[key], dtype=torch.float32)
    if isinstance(kwargs.get("update_steps_max"), list):
        kwargs["update_steps_max"] = torch.tensor(kwargs["update_steps_max"], dtype=torch.int32)
    # Building draws hflayers' own initial weights: keep the caller's seed stream as it was.
    with torch.random.fork_rng(devices=[]):
        return _CLASSES[name](**kwargs)


def _minimal(name, args, want):
    """``args`` without every argument whose removal (falling back to its
    default) rebuilds the same module, so that the file says what is special.
    The wrappers' input_size has no default and stays."""
    args = dict(args)
    for key in list(args):
        if key == "input_size" and name != "Hopfield":
            continue
        trial = {k: v for k, v in args.items() if k != key}
        try:
            same = traces(_build(name, trial)) == want
        except (AssertionError, TypeError, ValueError, RuntimeError):
            same = False
        if same:
            args = trial
    return args


def _compare(want, got, what):
    bad = [k for k in want if want[k] != got.get(k)]
    if bad:
        detail = "; ".join(f"{k}: module has {want[k]!r}, {what} gives {got.get(k)!r}" for k in bad)
        raise ValueError(f"{what} do not rebuild this module: {detail}")


def config_of(module, method=None, **constructor_args):
    """The config dict for ``module``: ``{"class": ..., "args": {...}}``.

    ``constructor_args``, when given, must rebuild the same module; ``method``
    (hopfield-gpu's own argument, e.g. ``{"name": "topk", "k": 8}``) is added
    to ``args`` as it is.
    """
    name = class_name(module)
    want = traces(module)
    full = _read_args(module)
    _compare(want, traces(_build(name, full)), "the arguments read from the module")
    args = _minimal(name, full, want)
    if constructor_args:
        _compare(want, traces(_build(name, constructor_args)), "the constructor arguments given")
    if method is not None:
        args["method"] = method
    return {"class": name, "args": args}


def export(module, path_prefix, method=None, **constructor_args):
    """Write ``<path_prefix>.safetensors`` and ``<path_prefix>.json``; returns
    the config dict. See the module docstring."""
    config = config_of(module, method=method, **constructor_args)
    directory = os.path.dirname(path_prefix)
    if directory:
        os.makedirs(directory, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
    save_file(state, path_prefix + ".safetensors")
    with open(path_prefix + ".json", "w") as f:
        json.dump(config, f, indent=1, sort_keys=True)
        f.write("\n")
    return config


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python tools/export_hflayers.py MODULE.pt PATH_PREFIX")
    loaded = torch.load(sys.argv[1], weights_only=False, map_location="cpu")
    print(json.dumps(export(loaded, sys.argv[2]), indent=1, sort_keys=True))
