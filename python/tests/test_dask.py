"""A memory set sharded across the workers of a dask.distributed
LocalCluster (two worker processes, each with its own Context on lavapipe,
shards cached worker-side by id), merged on the client, against one bank
and against NumPy. Tolerances as test_shards.py."""

from __future__ import annotations

import numpy as np
import pytest

import hopfield_gpu as hg
from conftest import dense_ref, dynamics_ref, grid, rand, topk_ref

distributed = pytest.importorskip("dask.distributed", reason="dask[distributed] is in the test requirements")
from hopfield_gpu.dask_shards import DaskShardedBank  # noqa: E402

M_TOL = dict(atol=2e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40
    )
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


def test_dask_shards_match_one_bank(client, ctx):
    xi, x = rand(50, 1000, 32), rand(51, 6, 32)
    bank = DaskShardedBank(client, xi)
    # One shard per worker, each on that worker's own device.
    assert len(bank.shards) == 2 and len({w for _, w in bank.shards}) == 2
    r = bank.retrieve(x, 0.5)
    one = ctx.retrieve(ctx.memory_bank(xi), x, 0.5)
    np.testing.assert_allclose(r.z, one.z, **M_TOL)
    np.testing.assert_allclose(r.z, dense_ref(x, xi, 0.5)[0], **M_TOL)
    np.testing.assert_array_equal(r.argmax, one.argmax)

    # Iterated dynamics: the merged state goes back to both workers each step.
    d = bank.retrieve(x, 2.0, steps=20, eps=1e-5, energy=True)
    single = ctx.retrieve(ctx.memory_bank(xi), x, 2.0, steps=20, eps=1e-5, energy=True)
    np.testing.assert_allclose(d.z, single.z, **M_TOL)
    np.testing.assert_allclose(d.energy, single.energy, atol=2e-4, rtol=1e-5)
    want = dynamics_ref(x, xi, 2.0, 20, 1e-5, lambda s: dense_ref(s, xi, 2.0)[0])[0]
    np.testing.assert_allclose(d.z, want, **M_TOL)
    bank.close()


def test_dask_topk_with_a_worker_side_loader(client):
    xi, x = grid(52, 300, 16), grid(53, 4, 16)
    sizes = [100, 120, 80]

    def loader(i):  # runs on the worker that holds shard i
        a = sum(sizes[:i])
        return xi[a : a + sizes[i]], None

    bank = DaskShardedBank(client, loader=loader, sizes=sizes)
    r = bank.retrieve(x, 1.0, method="topk", k=5, support=True)
    z, sup = topk_ref(x, xi, 1.0, 5)
    np.testing.assert_allclose(r.z, z, **M_TOL)
    np.testing.assert_array_equal(r.support, sup)
    bank.close()
