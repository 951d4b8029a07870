"""A memory set sharded across the workers of a Dask cluster.

Each worker process keeps its shards resident on its own device, in a
worker-side cache keyed by shard id; a retrieval sends the queries (or, when
iterating, the current states) to every shard's worker, gathers the shards'
``Partial`` results (plain NumPy arrays, pickled by Dask) and merges them
exactly with ``hopfield_gpu.merge``. The same code runs on a ``LocalCluster``
and on a multi-machine cluster: only the ``Client`` differs. Use a
``loader`` so that each worker reads its own shard from shared storage
instead of receiving it from the client.

    from dask.distributed import Client, LocalCluster
    from hopfield_gpu.dask_shards import DaskShardedBank
    client = Client(LocalCluster(n_workers=2, threads_per_worker=1))
    bank = DaskShardedBank(client, memories)          # one shard per worker
    res = bank.retrieve(queries, beta=0.125, steps=10, energy=True)

Only dense and top-K retrieval shard (the methods with an exact merge).
"""

from __future__ import annotations

import threading
import uuid
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

import hopfield_gpu as hg

# Worker side: one Context per worker process, and its shards by id.
_lock = threading.Lock()
_context: Optional[hg.Context] = None
_shards: Dict[str, Tuple[hg.MemoryBank, int]] = {}


def _worker_context(device: Optional[str]) -> hg.Context:
    global _context
    with _lock:
        if _context is None:
            _context = hg.Context(device)
        return _context


def put_shard(
    shard_id: str,
    offset: int,
    memories: Any = None,
    values: Any = None,
    loader: Optional[Callable[[int], Tuple[Any, Any]]] = None,
    index: int = 0,
    device: Optional[str] = None,
) -> Dict[str, Any]:
    """(On a worker.) Upload one shard and cache it under ``shard_id``:
    either the given ``memories``/``values``, or ``loader(index)`` called
    here. Returns the shard's size and the worker's adapter."""
    ctx = _worker_context(device)
    if loader is not None:
        memories, values = loader(index)
    bank = ctx.memory_bank(memories, values)
    with _lock:
        _shards[shard_id] = (bank, offset)
    return {"memories": len(bank), "dim": bank.dim, "adapter": ctx.info()["adapter"]["name"]}


def shard_partial(shard_id: str, queries: Any, beta: float, method: str, params: Dict[str, Any]) -> hg.Partial:
    """(On a worker.) The cached shard's partial for ``queries``."""
    with _lock:
        found = _shards.get(shard_id)
    if found is None:
        raise KeyError(f"shard {shard_id} is not on this worker (was the worker restarted?)")
    bank, offset = found
    return _worker_context(None).retrieve_partial(bank, queries, beta, method=method, offset=offset, **params)


def drop_shard(shard_id: str) -> bool:
    """(On a worker.) Forget a shard, freeing its device memory."""
    with _lock:
        return _shards.pop(shard_id, None) is not None


class _Result:
    """The fields of a ``Retrieval``, as plain arrays (Retrieval is native)."""

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)

    def __repr__(self) -> str:
        return f"Retrieval(z.shape={self.z.shape})"


class DaskShardedBank:
    """One memory set split over a Dask cluster's workers, one contiguous
    shard per worker (or ``shards`` of them, dealt round-robin)."""

    def __init__(
        self,
        client: Any,
        memories: Any = None,
        values: Any = None,
        *,
        shards: Optional[int] = None,
        loader: Optional[Callable[[int], Tuple[Any, Any]]] = None,
        sizes: Optional[List[int]] = None,
        device: Optional[str] = None,
    ) -> None:
        """Either ``memories`` [M, d] (and ``values``), cut into ``shards``
        pieces (default: one per worker) and sent from here, or ``loader``
        with ``sizes``: shard i (of ``sizes[i]`` memories) is
        ``loader(i) -> (memories, values or None)``, called on its worker."""
        self.client = client
        workers = sorted(client.scheduler_info()["workers"])
        if not workers:
            raise RuntimeError("the Dask cluster has no workers")
        if loader is None:
            if memories is None:
                raise ValueError("give memories, or a loader with sizes")
            memories = np.asarray(memories)
            if memories.ndim != 2:
                raise ValueError(f"memories must be a 2-D array [M, d], got shape {memories.shape}")
            n = min(shards or len(workers), len(memories))
            if n < 1:
                raise ValueError("memories is empty: retrieval needs at least one row and one column")
            cuts = [i * len(memories) // n for i in range(n + 1)]
            sizes = [b - a for a, b in zip(cuts, cuts[1:])]
        elif sizes is None or not sizes:
            raise ValueError("a loader needs the shard sizes (sizes=[...])")
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int).tolist()
        run = uuid.uuid4().hex[:8]
        self.shards: List[Tuple[str, str]] = []  # (shard id, worker)
        futures = []
        for i, (offset, size) in enumerate(zip(offsets, sizes)):
            sid, worker = f"hopfield-{run}-{i}", workers[i % len(workers)]
            if loader is None:
                a = offset
                args = dict(memories=memories[a : a + size], values=None if values is None else values[a : a + size])
            else:
                args = dict(loader=loader, index=i)
            futures.append(
                client.submit(put_shard, sid, offset, device=device, workers=[worker], pure=False, **args)
            )
            self.shards.append((sid, worker))
        infos = client.gather(futures)
        for i, (info, size) in enumerate(zip(infos, sizes)):
            if info["memories"] != size:
                raise ValueError(f"shard {i} has {info['memories']} memories, sizes says {size}")
        self.infos = infos
        self.memories = sum(sizes)
        self.dim = infos[0]["dim"]

    def partials(self, queries: Any, beta: float, method: str = "dense", **params: Any) -> List[hg.Partial]:
        """Every shard's partial for ``queries``, computed on its worker."""
        # Sent with each task (queries are small next to the shards).
        q = np.ascontiguousarray(queries)
        futures = [
            self.client.submit(
                shard_partial, sid, q, beta, method, params, workers=[w], allow_other_workers=False, pure=False
            )
            for sid, w in self.shards
        ]
        return self.client.gather(futures)

    def retrieve(
        self,
        queries: Any,
        beta: float,
        method: str = "dense",
        steps: int = 1,
        eps: float = 1e-5,
        energy: bool = False,
        support: bool = False,
        **params: Any,
    ) -> Any:
        """As ``Context.retrieve`` on one bank holding every memory (dense or
        topk): iterated dynamics send the merged states back to every shard
        each step; a query stops once an update moves it by at most eps."""
        x = np.array(queries, dtype=np.float32)
        one_d = x.ndim == 1
        x = np.atleast_2d(x)
        if steps < 1:
            raise ValueError(f"invalid steps = {steps}: at least one update is needed")
        l = len(x)
        out_steps = np.zeros(l, np.uint32)
        converged = np.zeros(l, bool)
        # Computed as from one bank: by dense, or by the energy pass.
        lse = np.zeros(l, np.float32) if method == "dense" else None
        argmax = np.zeros(l, np.uint32) if method == "dense" else None
        sup = None
        z_out = None
        active = np.arange(l)
        for _ in range(steps):
            if len(active) == 0:
                break
            r = hg.merge(self.partials(x[active], beta, method, **params))
            out_steps[active] += 1
            if lse is not None:
                lse[active], argmax[active] = r.log_sum_exp, r.argmax
            if support and r.support is not None:
                if sup is None:
                    sup = np.full((l, r.support.shape[1]), -1, np.int32)
                sup[active] = r.support
            if r.z.shape[1] != x.shape[1]:
                if steps > 1:
                    raise ValueError("iterated dynamics need values of the pattern dimension (dv == d)")
                z_out = r.z
                break
            delta = np.abs(r.z - x[active]).max(axis=1)
            x[active] = r.z
            converged[active] = delta <= np.float32(eps)
            active = active[~converged[active]]
        e = None
        if energy:
            r = hg.merge(self.partials(x, beta, "dense"))
            xx = (x.astype(np.float64) ** 2).sum(axis=1)
            e64 = -r.log_sum_exp.astype(np.float64) / beta + 0.5 * xx
            # As the library: an energy beyond f32 is an error, never +-inf.
            bad = ~(np.abs(e64) <= np.finfo(np.float32).max)
            if bad.any():
                q = int(np.flatnonzero(bad)[0])
                raise ValueError(f"the energy of query {q} is {e64[q]:e}, outside the range of f32 (+-3.4e38)")
            e = e64.astype(np.float32)
            lse, argmax = r.log_sum_exp, r.argmax
        z = x if z_out is None else z_out
        if z_out is not None:
            converged[:] = False
        res = _Result(z=z, steps=out_steps, converged=converged, log_sum_exp=lse, argmax=argmax,
                      energy=e, support=sup, gpu_time=None)
        if one_d:
            for name in ("z", "steps", "converged", "log_sum_exp", "argmax", "energy", "support"):
                v = getattr(res, name)
                if v is not None:
                    setattr(res, name, v[0])
        return res

    def close(self) -> None:
        """Drop every shard from its worker."""
        self.client.gather([self.client.submit(drop_shard, sid, workers=[w], pure=False) for sid, w in self.shards])
