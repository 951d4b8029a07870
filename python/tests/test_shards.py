"""Shard partials, hg.merge and ShardedBank against NumPy references of the
whole memory set and against one bank. Tolerances: each shard carries the
kernels' f32 error (conftest.py); the merge (f64) turns the shards' lse
error (~1e-4 relative) into a weight error of the same order on outputs
bounded by 1, so z is held to abs 2e-4 + rel 1e-4."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import hopfield_gpu as hg
from conftest import E_TOL, dense_ref, dynamics_ref, energy_ref, grid, rand, topk_ref

M_TOL = dict(atol=2e-4, rtol=1e-4)


def shard_partials(ctx, xi, x, cuts, beta, **kw):
    return [
        ctx.retrieve_partial(ctx.memory_bank(xi[a:b]), x, beta, offset=a, **kw) for a, b in zip(cuts, cuts[1:])
    ]


def test_dense_merge_matches_whole_set(ctx):
    xi, x = rand(30, 500, 64), rand(31, 6, 64)
    parts = shard_partials(ctx, xi, x, [0, 120, 121, 500], 0.5)
    assert isinstance(parts[0], hg.Partial) and parts[0].z.shape == (6, 64)
    # Partials are plain arrays: they survive pickling (as between processes).
    parts = [pickle.loads(pickle.dumps(p)) for p in parts[::-1]]
    r = hg.merge(parts)
    z, l, a = dense_ref(x, xi, 0.5)
    np.testing.assert_allclose(r.z, z, **M_TOL)
    np.testing.assert_allclose(r.log_sum_exp, l, **E_TOL)
    np.testing.assert_array_equal(r.argmax, a)
    one = ctx.retrieve(ctx.memory_bank(xi), x, 0.5)
    np.testing.assert_allclose(r.z, one.z, **M_TOL)
    np.testing.assert_array_equal(r.argmax, one.argmax)


def test_topk_merge_matches_argsort(ctx):
    xi, x = grid(32, 240, 16), grid(33, 5, 16)
    for k in (1, 6, 100, 500):
        r = hg.merge(shard_partials(ctx, xi, x, [0, 80, 240], 1.0, method="topk", k=k))
        z, sup = topk_ref(x, xi, 1.0, k)
        np.testing.assert_allclose(r.z, z, **M_TOL)
        np.testing.assert_array_equal(r.support, sup)
        # As from one bank: not computed for top-K (None, not zeros).
        assert r.log_sum_exp is None and r.argmax is None


def test_one_query_partials(ctx):
    xi, x = rand(34, 50, 8), rand(35, 8)
    r = hg.merge(shard_partials(ctx, xi, x, [0, 25, 50], 1.0))
    assert r.z.shape == (8,)
    np.testing.assert_allclose(r.z, dense_ref(x[None], xi, 1.0)[0][0], **M_TOL)


def test_merge_errors(ctx):
    xi, x = rand(36, 40, 8), rand(37, 2, 8)
    bank = ctx.memory_bank(xi)
    for method, params in [("random", dict(k=2)), ("window", {}), ("sparsemax", {}), ("entmax15", {}),
                           ("poly", dict(delta=1e-2)), ("linear", {}), ("prf", {}), ("auto", dict(tolerance=0.1)),
                           ("dense-naive", {})]:
        with pytest.raises(ValueError, match="no exact shard merge"):
            ctx.retrieve_partial(bank, x, 1.0, method=method, **params)
    p = ctx.retrieve_partial(bank, x, 1.0)
    with pytest.raises(ValueError, match="offset"):
        hg.merge([p, p])  # overlapping shards
    with pytest.raises(ValueError, match="offset"):
        hg.merge([ctx.retrieve_partial(bank, x, 1.0, offset=3)])  # a gap before it
    with pytest.raises(ValueError, match="empty"):
        hg.merge([])
    broken = pickle.loads(pickle.dumps(p))
    broken.z = broken.z[:1]
    with pytest.raises(ValueError, match="z"):
        hg.merge([broken])


def test_sharded_bank_two_contexts_with_dynamics():
    ctxs = [hg.Context(), hg.Context()]
    xi, x = rand(38, 90, 16), rand(39, 8, 16)
    beta, eps = 2.0, 1e-5
    sb = hg.ShardedBank(ctxs, xi)
    assert (len(sb), sb.shard_count, sb.dim) == (90, 2, 16)
    r = sb.retrieve(x, beta, steps=50, eps=eps, energy=True)
    want, n, conv = dynamics_ref(x, xi, beta, 50, eps, lambda s: dense_ref(s, xi, beta)[0])
    np.testing.assert_allclose(r.z, want, **M_TOL)
    np.testing.assert_allclose(r.energy, energy_ref(want, xi, beta), atol=2e-4, rtol=1e-5)
    assert np.all(np.abs(r.steps.astype(int) - n) <= 1) and r.steps.max() > 1
    np.testing.assert_array_equal(r.converged, conv)
    t = sb.retrieve(grid(40, 3, 16), 1.0, method="topk", k=4, support=True)
    assert t.support.shape == (3, 4)
    with pytest.raises(ValueError, match="no exact shard merge"):
        sb.retrieve(x, 1.0, method="sparsemax")
