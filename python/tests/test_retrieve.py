"""Context, MemoryBank and retrieve against NumPy references (conftest.py):
every input dtype and layout, 1-D queries, hetero values, dynamics,
top-K supports, the one-shot hg.retrieve, errors, and threads."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import hopfield_gpu as hg
from conftest import E_TOL, Z_TOL, dense_ref, dynamics_ref, energy_ref, grid, rand, topk_ref


def test_adapters_and_info(ctx):
    ads = hg.adapters()
    assert ads and all({"name", "backend", "device_type"} <= set(a) for a in ads)
    info = ctx.info()
    assert info["adapter"]["name"] in [a["name"] for a in ads]
    assert info["limits"]["max_storage_buffer_binding_size"] > 0
    assert isinstance(info["features"], list)


def test_dense_matches_numpy(ctx):
    xi, x = rand(1, 300, 64), rand(2, 7, 64)
    bank = ctx.memory_bank(xi)
    assert (len(bank), bank.dim, bank.value_dim, bank.hetero) == (300, 64, 64, False)
    r = ctx.retrieve(bank, x, 0.5)
    z, l, a = dense_ref(x, xi, 0.5)
    assert r.z.dtype == np.float32 and r.z.shape == (7, 64)
    np.testing.assert_allclose(r.z, z, **Z_TOL)
    np.testing.assert_allclose(r.log_sum_exp, l, **E_TOL)
    np.testing.assert_array_equal(r.argmax, a)
    assert r.energy is None and r.support is None
    np.testing.assert_array_equal(r.steps, np.ones(7))


@pytest.mark.parametrize("kind", ["float64", "uint8", "strided", "unaligned", "list", "array_interface"])
def test_input_kinds(ctx, kind):
    xi64 = np.random.default_rng(3).uniform(0, 1, (50, 8))
    x64 = np.random.default_rng(4).uniform(0, 1, (3, 8))
    if kind == "float64":
        xi, x = xi64, x64
    elif kind == "uint8":
        xi, x = (xi64 * 4).astype(np.uint8), (x64 * 4).astype(np.uint8)
        xi64, x64 = xi.astype(np.float64), x.astype(np.float64)
    elif kind == "strided":
        # Non-contiguous views (every other column of a wider array, a transpose).
        wide = np.zeros((50, 16), np.float32)
        wide[:, ::2] = xi64
        xi = wide[:, ::2]
        xt = np.asfortranarray(x64.astype(np.float32))
        assert not xi.flags.c_contiguous and not xt.flags.c_contiguous
        x = xt
    elif kind == "unaligned":
        # As Dask delivers arrays unpickled from byte buffers: not 4-byte aligned.
        def unaligned(a):
            buf = np.zeros(a.size * 4 + 1, np.uint8)
            out = np.frombuffer(buf.data, np.float32, a.size, offset=1).reshape(a.shape)
            out[...] = a
            assert not out.flags.aligned
            return out

        xi, x = unaligned(xi64), unaligned(x64)
    elif kind == "list":
        xi, x = xi64.tolist(), x64.tolist()
    else:
        # Anything with __array__ (PyTorch CPU tensors take this path).
        class Tensorish:
            def __init__(self, a):
                self.a = a

            def __array__(self, dtype=None, copy=None):
                return self.a.astype(np.float32)

        xi, x = Tensorish(xi64), Tensorish(x64)
    r = ctx.retrieve(ctx.memory_bank(xi), x, 2.0)
    z, _, a = dense_ref(x64.astype(np.float32), xi64.astype(np.float32), 2.0)
    np.testing.assert_allclose(r.z, z, **Z_TOL)
    np.testing.assert_array_equal(r.argmax, a)


def test_one_query_drops_the_query_axis(ctx):
    xi, x = rand(5, 40, 16), rand(6, 16)
    r = ctx.retrieve(ctx.memory_bank(xi), x, 1.0, energy=True)
    assert r.z.shape == (16,) and r.steps.shape == () and r.energy.shape == ()
    z, _, a = dense_ref(x[None], xi, 1.0)
    np.testing.assert_allclose(r.z, z[0], **Z_TOL)
    assert int(r.argmax) == a[0]


def test_hetero_values(ctx):
    xi, v, x = rand(7, 60, 16), rand(8, 60, 5), rand(9, 4, 16)
    bank = ctx.memory_bank(xi, v)
    assert bank.hetero and bank.value_dim == 5
    r = ctx.retrieve(bank, x, 1.0)
    np.testing.assert_allclose(r.z, dense_ref(x, xi, 1.0, v)[0], **Z_TOL)
    assert not r.converged.any()


def test_dynamics_and_energy(ctx):
    xi, x = rand(10, 40, 16), rand(11, 12, 16)
    beta, eps = 2.0, 1e-5
    r = ctx.retrieve(ctx.memory_bank(xi), x, beta, steps=50, eps=eps, energy=True)
    want, n, conv = dynamics_ref(x, xi, beta, 50, eps, lambda s: dense_ref(s, xi, beta)[0])
    np.testing.assert_allclose(r.z, want, **Z_TOL)
    np.testing.assert_allclose(r.energy, energy_ref(want, xi, beta), **E_TOL)
    # A step count may differ by one where the change lands within f32 rounding of eps.
    assert np.all(np.abs(r.steps.astype(int) - n) <= 1) and r.steps.max() > 1
    np.testing.assert_array_equal(r.converged, conv)


def test_topk_support_matches_argsort(ctx):
    xi, x = grid(12, 200, 16), grid(13, 6, 16)
    r = ctx.retrieve(ctx.memory_bank(xi), x, 1.0, method="topk", k=7, support=True)
    z, sup = topk_ref(x, xi, 1.0, 7)
    np.testing.assert_allclose(r.z, z, **Z_TOL)
    np.testing.assert_array_equal(r.support, sup)
    assert r.support.dtype == np.int32
    # Not computed for a non-dense method without energies: None, not zeros.
    assert r.log_sum_exp is None and r.argmax is None


def test_other_methods_run_with_their_parameters(ctx):
    xi, x = rand(14, 64, 8, scale=0.5), rand(15, 3, 8, scale=0.5)
    bank = ctx.memory_bank(xi)
    z = dense_ref(x, xi, 1.0)[0]
    # poly with delta 1e-3: within its bound 2 B delta / (1 - delta) of dense (README), B = 0.5.
    r = ctx.retrieve(bank, x, 1.0, method="poly", delta=1e-3)
    np.testing.assert_allclose(r.z, z, atol=2 * 0.5 * 1e-3 / (1 - 1e-3) + 1e-4)
    for method, params in [("random", dict(k=5, seed=3)), ("window", dict(window=9)), ("sparsemax", {}),
                           ("entmax15", {}), ("linear", {}), ("prf", dict(features=32, seed=1, orthogonal=True))]:
        r = ctx.retrieve(bank, x, 1.0, method=method, **params)
        assert r.z.shape == (3, 8) and np.isfinite(r.z).all(), method


def test_one_shot_retrieve():
    xi, x = rand(16, 30, 8), rand(17, 2, 8)
    r = hg.retrieve(xi, x, 1.0, steps=3, energy=True)
    assert r.z.shape == (2, 8) and r.energy.shape == (2,)
    assert hg.default_context() is hg.default_context()
    v = rand(18, 30, 3)
    np.testing.assert_allclose(hg.retrieve(xi, x, 1.0, values=v).z, dense_ref(x, xi, 1.0, v)[0], **Z_TOL)


@pytest.mark.parametrize(
    "call, exc, words",
    [
        (lambda c, b: c.retrieve(b, rand(0, 2, 8), -1.0), ValueError, "beta"),
        (lambda c, b: c.retrieve(b, rand(0, 2, 8), float("nan")), ValueError, "beta"),
        (lambda c, b: c.retrieve(b, rand(0, 2, 8), 1.0, steps=0), ValueError, "steps"),
        (lambda c, b: c.retrieve(b, rand(0, 2, 8), 1.0, steps=-2), ValueError, "steps"),
        (lambda c, b: c.retrieve(b, rand(0, 2, 8), 1.0, eps=-1.0), ValueError, "eps"),
        (lambda c, b: c.retrieve(b, rand(0, 2, 8), 1.0, method="topk", k=0), ValueError, "k"),
        (lambda c, b: c.retrieve(b, rand(0, 2, 8), 1.0, method="topk"), ValueError, "needs the parameter k"),
        (lambda c, b: c.retrieve(b, rand(0, 2, 8), 1.0, k=3), ValueError, "do not apply"),
        (lambda c, b: c.retrieve(b, rand(0, 2, 8), 1.0, method="topk", k=2, window=3), ValueError, "window"),
        (lambda c, b: c.retrieve(b, rand(0, 2, 8), 1.0, kk=3), ValueError, "unknown parameter(s) kk"),
        (lambda c, b: c.retrieve(b, rand(0, 2, 8), 1.0, method="nope"), ValueError, "unknown method"),
        (lambda c, b: c.retrieve(b, rand(0, 2, 8), 1.0, support=True), ValueError, "support"),
        (lambda c, b: c.retrieve(b, rand(0, 2, 8), 1.0, method="poly", delta=2.0), ValueError, "delta"),
        (lambda c, b: c.retrieve(b, rand(0, 2, 4), 1.0), ValueError, "dimension"),
        (lambda c, b: c.retrieve(b, rand(0, 2, 2, 8), 1.0), ValueError, "2-D"),
        (lambda c, b: c.retrieve(b, np.zeros((0, 8)), 1.0), ValueError, "empty"),
        (lambda c, b: c.retrieve(b, np.full((2, 8), np.nan), 1.0), ValueError, "non-finite"),
        (lambda c, b: c.retrieve(b, np.full((2, 8), 1e300), 1.0), ValueError, "non-finite"),
        (lambda c, b: c.retrieve(b, np.zeros((2, 8), np.int64), 1.0), TypeError, "int64"),
        (lambda c, b: c.retrieve(b, "text", 1.0), ValueError, "1-D"),
        (lambda c, b: c.retrieve(b, np.array([["a"] * 8]), 1.0), TypeError, "dtype"),
        # An energy beyond f32 (-lse / beta ~ -2e39) is an error, never -inf.
        (lambda c, b: c.retrieve(b, rand(0, 2, 8), 1e-39, energy=True), ValueError, "outside the range of f32"),
        (lambda c, b: c.memory_bank(np.zeros(8)), ValueError, "2-D"),
        (lambda c, b: c.memory_bank(rand(0, 5, 8), rand(0, 4, 2)), ValueError, "one row per memory"),
        (lambda c, b: c.memory_bank(np.full((5, 8), np.inf)), ValueError, "non-finite"),
        (lambda c, b: hg.Context().retrieve(b, rand(0, 2, 8), 1.0), ValueError, "another Context"),
        (lambda c, b: hg.Context("no such adapter anywhere"), RuntimeError, "no GPU adapter"),
    ],
)
def test_errors(ctx, call, exc, words):
    bank = ctx.memory_bank(rand(19, 10, 8))
    with pytest.raises(exc) as info:
        call(ctx, bank)
    assert words in str(info.value)


def test_benchmark_path_times_the_library_call(ctx):
    # python/bench/bench_python.py compares ctx.retrieve with this.
    from hopfield_gpu._native import _time_retrieve

    bank = ctx.memory_bank(rand(23, 50, 8))
    times = _time_retrieve(ctx, bank, rand(24, 3, 8), 1.0, 3, method="topk", k=2)
    assert len(times) == 3 and all(t > 0 for t in times)
    with pytest.raises(ValueError, match="repeats"):
        _time_retrieve(ctx, bank, rand(24, 3, 8), 1.0, 0)
    with pytest.raises(ValueError, match="k"):
        _time_retrieve(ctx, bank, rand(24, 3, 8), 1.0, 1, method="topk", k=0)


def test_one_context_from_many_threads(ctx):
    xi = rand(20, 500, 64)
    bank = ctx.memory_bank(xi)
    queries = [rand(100 + i, 5, 64) for i in range(16)]

    def one(i):
        if i % 2:
            return ctx.retrieve(bank, queries[i], 0.5).z
        return ctx.retrieve(ctx.memory_bank(xi), queries[i], 0.5, steps=3).z

    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(one, range(16)))
    for i, z in enumerate(got):
        if i % 2:
            np.testing.assert_allclose(z, dense_ref(queries[i], xi, 0.5)[0], **Z_TOL)
        else:
            want = dynamics_ref(queries[i], xi, 0.5, 3, 1e-5, lambda s: dense_ref(s, xi, 0.5)[0])[0]
            np.testing.assert_allclose(z, want, **Z_TOL)


def test_gil_is_released_during_gpu_work(ctx):
    # A Python thread counts while the main thread waits on the GPU; with the
    # GIL held for the whole call it could not run at all in that time.
    bank = ctx.memory_bank(rand(21, 20000, 64))
    x = rand(22, 64, 64)
    ctx.retrieve(bank, x, 0.1)  # compile the pipelines first
    ticks, stop = [0], threading.Event()

    def count():
        while not stop.is_set():
            ticks[0] += 1
            time.sleep(0.001)

    t = threading.Thread(target=count)
    t.start()
    try:
        start = ticks[0]
        t0 = time.perf_counter()
        ctx.retrieve(bank, x, 0.1, steps=4, eps=0.0)
        elapsed = time.perf_counter() - t0
        during = ticks[0] - start
    finally:
        stop.set()
        t.join()
    assert elapsed > 0.05, f"the call took {elapsed:.3f} s: too short to tell"
    assert during >= 10, f"the counting thread ran {during} times in {elapsed:.3f} s"
