"""Modern Hopfield retrieval on any GPU (wgpu + WGSL), from NumPy.

    import numpy as np, hopfield_gpu as hg
    ctx = hg.Context()                                  # honours WGPU_BACKEND
    bank = ctx.memory_bank(np.random.rand(1000, 64))    # [M, d], uploaded once
    res = ctx.retrieve(bank, np.random.rand(10, 64), beta=0.125, steps=20, energy=True)
    print(res.z.shape, res.steps, res.energy)

Inputs are any array-like in float32, float64 or uint8 (NumPy arrays,
PyTorch CPU tensors, nested lists); each call copies them once into the
float32 buffer the kernels read, so non-contiguous views cost that one
copy and nothing else. A 1-D query array is one query, and the results then
drop the query axis (``z`` is 1-D, ``steps`` etc. are 0-d arrays).

Errors: ``ValueError`` for bad input (shapes, NaN, beta <= 0, K = 0, unknown
or inapplicable method parameters, problems beyond the device's limits),
``TypeError`` for an unsupported dtype, ``RuntimeError`` for device failures.

Threads: every GPU call releases the GIL, and one ``Context`` (with its
banks) may be used from several Python threads at once.

Hopfield layers: ``load_layer(config, weights)`` runs a trained
hopfield-layers module (``Hopfield``, ``HopfieldPooling``, ``HopfieldLayer``)
from its config JSON and safetensors state dict; ``layer.forward(...)``
takes NumPy arrays ``[N, S, F]`` or ``[S, F]`` and returns float32.

The exact mathematics is fixed by SEMANTICS.md in the repository.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, Optional, Sequence

import numpy as np

from ._native import (
    METHOD_PARAMS,
    METHODS,
    Context,
    Layer,
    MemoryBank,
    Retrieval,
    ShardedBank,
    _merge,
    adapters,
)

__all__ = [
    "METHODS",
    "METHOD_PARAMS",
    "Context",
    "Layer",
    "MemoryBank",
    "Partial",
    "Retrieval",
    "ShardedBank",
    "adapters",
    "default_context",
    "load_layer",
    "merge",
    "retrieve",
]


_default: Optional[Context] = None
_default_lock = threading.Lock()


def default_context() -> Context:
    """The context the one-shot functions use: ``Context()``, opened on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Context()
        return _default


def retrieve(memories: Any, queries: Any, beta: float, *, values: Any = None, **options: Any) -> Retrieval:
    """One-shot retrieval on the default context: uploads ``memories`` (and
    ``values``), then ``Context.retrieve(bank, queries, beta, **options)``.

    For many query batches against the same memories, build the bank once
    with ``Context.memory_bank`` instead: the upload is the expensive part.
    """
    ctx = default_context()
    return ctx.retrieve(ctx.memory_bank(memories, values), queries, beta, **options)


def load_layer(
    config: Any,
    weights: Any,
    method: Optional[str] = None,
    *,
    device: Optional[str] = None,
    stop: str = "hflayers",
    **params: Any,
) -> Layer:
    """A trained hopfield-layers module (``Hopfield``, ``HopfieldPooling``,
    ``HopfieldLayer``) on the GPU: ``config`` is the JSON file
    ``{"class": ..., "args": {constructor arguments}}`` and ``weights`` its
    state dict saved with ``safetensors.torch.save_file``, as
    ``tools/export_hflayers.py`` writes them (docs/hflayers.md).

    ``method`` (with its parameters, as ``Context.retrieve`` takes them:
    ``k``, ``delta`` and ``degree``, ...) replaces the softmax with another
    retrieval method (the NPH layer); None keeps the config's, dense by
    default. ``stop``: "hflayers" (hopfield-layers' rule) or "per-query".
    ``device``: an adapter name filter; None uses ``default_context()``,
    a name opens a new ``Context(device)`` (use ``Context.load_layer`` to
    share one).

    ``layer.forward(stored=None, state=None, projection=None, mask=None)``
    takes the CLI ``layer`` command's inputs as arrays ``[N, S, F]`` (batch
    first) or ``[S, F]``, and a key-padding mask ``[N, S]`` / ``[S]``
    (nonzero or True = absent), and returns float32 ``[N, L, out]``
    (``[L, out]``). Bad config, weights or inputs raise ``ValueError``, a
    missing file ``OSError``.
    """
    ctx = default_context() if device is None else Context(device)
    return ctx.load_layer(str(config), str(weights), method, stop, **params)


@dataclasses.dataclass
class Partial:
    """One shard's exact partial result (``Context.retrieve_partial``).

    Plain NumPy arrays and numbers, so it pickles and travels between
    processes and machines; ``merge`` combines the partials of shards that
    tile the memory set into the ``Retrieval`` of the whole set.

    ``method`` is ``"dense"`` (fields ``z`` [L, dv], ``log_sum_exp``,
    ``max_score``, ``argmax`` [L]) or ``"topk"`` (``k``; ``scores`` and
    ``indices`` [L, width], ``values`` [L, width, dv]). Indices are local to
    the shard; ``offset`` is the global index of its first memory.
    """

    method: str
    rows: int
    value_dim: int
    offset: int
    memories: int
    beta: float
    one_d: bool = False
    k: Optional[int] = None
    z: Optional[np.ndarray] = None
    log_sum_exp: Optional[np.ndarray] = None
    max_score: Optional[np.ndarray] = None
    argmax: Optional[np.ndarray] = None
    scores: Optional[np.ndarray] = None
    indices: Optional[np.ndarray] = None
    values: Optional[np.ndarray] = None


# Field dtypes the native merge reads (flattened, C-contiguous).
_PARTIAL_ARRAYS = {
    "dense": {"z": np.float32, "log_sum_exp": np.float32, "max_score": np.float32, "argmax": np.uint32},
    "topk": {"scores": np.float32, "indices": np.int32, "values": np.float32},
}


def _flat(part: Partial) -> Any:
    fields = _PARTIAL_ARRAYS.get(part.method)
    if fields is None:
        raise ValueError(f"unknown partial method {part.method!r} (dense or topk)")
    flat = dataclasses.replace(part)
    for name, dtype in fields.items():
        value = getattr(part, name)
        if value is None:
            raise ValueError(f"a {part.method} partial needs the field {name!r}")
        # Aligned and C-contiguous: unpickled arrays may be neither.
        setattr(flat, name, np.require(np.asarray(value, dtype=dtype).reshape(-1), requirements="CA"))
    return flat


def merge(parts: Sequence[Partial]) -> Retrieval:
    """Merge the partials of shards that together tile the memories
    ``[0, M)`` (in any order) into the ``Retrieval`` of the whole set, exact
    up to f32 rounding. One update: ``steps`` are 1, ``converged`` False,
    no energy (``ShardedBank.retrieve`` and ``hopfield_gpu.dask_shards``
    add dynamics and energies). As from one bank, ``log_sum_exp`` and
    ``argmax`` are None for top-K (not computed; the support's first entry
    is the argmax).
    """
    return _merge([_flat(p) for p in parts])
