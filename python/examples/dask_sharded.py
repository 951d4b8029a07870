"""Shard one memory set across the workers of a Dask cluster and retrieve.

    python python/examples/dask_sharded.py                     # a LocalCluster here
    python python/examples/dask_sharded.py tcp://host:8786     # an existing cluster

Each worker keeps its shard resident on its own device (hopfield_gpu.dask_shards
caches it by shard id); every retrieval sends the queries to the shards,
gathers their exact partials (plain NumPy arrays) and merges them. On a real
cluster run `dask scheduler` on one machine and `dask worker tcp://HOST:8786
--nthreads 1` on each GPU machine (hopfield_gpu installed there), then pass
the scheduler's address. The answer matches one bank within f32 rounding.
"""

import sys

import numpy as np
from dask.distributed import Client, LocalCluster

import hopfield_gpu as hg
from hopfield_gpu.dask_shards import DaskShardedBank


def main() -> None:
    if len(sys.argv) > 1:
        client = Client(sys.argv[1])
    else:
        client = Client(LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None))
    rng = np.random.default_rng(0)
    memories = rng.standard_normal((20000, 64)).astype(np.float32)
    queries = memories[:8] + 0.3 * rng.standard_normal((8, 64)).astype(np.float32)

    bank = DaskShardedBank(client, memories)  # one shard per worker
    print("shards:", [(sid, worker, info["adapter"]) for (sid, worker), info in zip(bank.shards, bank.infos)])
    res = bank.retrieve(queries, beta=0.25, steps=10, energy=True)
    print("argmax:", res.argmax, "steps:", res.steps, "energy:", res.energy)

    single = hg.retrieve(memories, queries, 0.25, steps=10, energy=True)
    print("max |z - one bank| =", float(np.abs(res.z - single.z).max()))
    bank.close()
    client.close()


if __name__ == "__main__":
    main()
