"""Type stubs of the extension module hopfield_gpu._native (python/src/)."""

import os
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

METHODS: List[str]
METHOD_PARAMS: List[str]

def adapters() -> List[Dict[str, str]]:
    """Every adapter (honours WGPU_BACKEND): dicts with name, backend, device_type, driver."""

class Retrieval:
    """Results, one entry per query (the query axis dropped for a 1-D query)."""

    z: np.ndarray
    """[L, dv] float32: retrieved patterns (final states when iterating)."""
    steps: np.ndarray
    """[L] uint32: updates applied."""
    converged: np.ndarray
    """[L] bool: the last update moved the query by at most eps (False for hetero values)."""
    log_sum_exp: Optional[np.ndarray]
    """[L] float32 log sum exp(beta <x, xi>); None where the library does not compute it:
    non-dense methods without energy=True (auto counts as non-dense: the method it picks is not reported)."""
    argmax: Optional[np.ndarray]
    """[L] uint32 index of the most similar memory (lowest on ties); None where log_sum_exp is."""
    energy: Optional[np.ndarray]
    """[L] float32 dense energy of each final state, if energy=True."""
    support: Optional[np.ndarray]
    """[L, width] int32 support indices (-1 padding), if support=True."""
    gpu_time: Optional[float]
    """Seconds of GPU time (timestamps), where the device has them."""

class MemoryBank:
    """Memories (and optional values) resident on one Context's device."""

    dim: int
    value_dim: int
    hetero: bool
    def __len__(self) -> int: ...

class Context:
    """One GPU device, its compiled pipelines and buffer pool; usable from several threads."""

    def __init__(self, device: Optional[str] = None) -> None:
        """device: case-insensitive substring of the adapter name; None honours
        WGPU_ADAPTER_NAME, else the fastest kind present. WGPU_BACKEND narrows backends."""
    def info(self) -> Dict[str, Any]:
        """dict with adapter (dict), limits (dict), features (list), timestamps (bool)."""
    def memory_bank(self, memories: Any, values: Any = None) -> MemoryBank:
        """Upload memories [M, d] (and values [M, dv]): float32, float64 or uint8 array-likes."""
    def retrieve(
        self,
        bank: MemoryBank,
        queries: Any,
        beta: float,
        method: str = "dense",
        steps: int = 1,
        eps: float = 1e-5,
        energy: bool = False,
        support: bool = False,
        *,
        k: int = ...,
        seed: int = ...,
        window: int = ...,
        delta: float = ...,
        degree: int = ...,
        features: int = ...,
        tolerance: float = ...,
        orthogonal: bool = ...,
    ) -> Retrieval:
        """Retrieve for queries [L, d] (or [d]) from bank. Method parameters:
        topk: k; random: k, seed; window: window; poly: delta, degree;
        prf: features, seed, orthogonal; auto: tolerance. Others: none.
        ValueError for bad input or inapplicable parameters, TypeError for a
        dtype, RuntimeError for device failures."""
    def retrieve_partial(
        self,
        bank: MemoryBank,
        queries: Any,
        beta: float,
        method: str = "dense",
        offset: int = 0,
        *,
        k: int = ...,
    ) -> Any:
        """One shard's partial (a hopfield_gpu.Partial); bank holds memories
        [offset, offset + len(bank)) of the whole set. dense or topk only."""
    def load_layer(
        self,
        config: Union[str, os.PathLike[str]],
        weights: Union[str, os.PathLike[str]],
        method: Optional[str] = None,
        stop: str = "hflayers",
        **params: Any,
    ) -> Layer:
        """A trained hopfield-layers module on this device: config JSON
        {"class": ..., "args": {...}} and its safetensors state dict
        (tools/export_hflayers.py). method (+ its parameters as retrieve
        takes them) replaces the config's; stop: "hflayers" or "per-query".
        ValueError for a bad config, weights or method; OSError for a file
        that cannot be read."""

class Layer:
    """A hopfield-layers module (Hopfield, HopfieldPooling, HopfieldLayer) on one Context's device."""

    class_name: str
    """"Hopfield", "HopfieldPooling" or "HopfieldLayer"."""
    method: str
    """The retrieval method in place of the softmax."""
    def forward(
        self,
        stored: Any = None,
        state: Any = None,
        projection: Any = None,
        mask: Any = None,
    ) -> np.ndarray:
        """Eval-mode forward pass. Hopfield: stored and state (projection
        defaults to stored); HopfieldPooling: its input as stored;
        HopfieldLayer: its input as state. Arrays [N, S, F] (batch first) or
        [S, F], all of one rank; mask [N, S] / [S], nonzero or True = absent.
        Returns float32 [N, L, out] ([L, out] for 2-D inputs). The weights
        are uploaded again at each call. ValueError for bad inputs."""

class ShardedBank:
    """One memory set split over several contexts in this process."""

    shard_count: int
    dim: int
    def __init__(self, contexts: Sequence[Context], memories: Any, values: Any = None) -> None: ...
    def __len__(self) -> int: ...
    def retrieve(
        self,
        queries: Any,
        beta: float,
        method: str = "dense",
        steps: int = 1,
        eps: float = 1e-5,
        energy: bool = False,
        support: bool = False,
        *,
        k: int = ...,
    ) -> Retrieval: ...

def _merge(parts: List[Any]) -> Retrieval: ...

def _time_retrieve(
    ctx: Context,
    bank: MemoryBank,
    queries: Any,
    beta: float,
    repeats: int,
    method: str = "dense",
    steps: int = 1,
    eps: float = 1e-5,
    energy: bool = False,
    support: bool = False,
    **params: Any,
) -> List[float]:
    """Benchmark path (python/bench/bench_python.py): seconds of each of `repeats`
    library calls Context::retrieve, the queries converted once beforehand."""
