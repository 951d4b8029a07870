"""Python-call overhead and sharded retrieval, as figures (a benchmark, not a test).

    python python/bench/bench_python.py [--repeats 20] [--skip-dask | --dask-only] [--dask-m 1000000]

1. Overhead of ``ctx.retrieve`` over the Rust call it wraps, for one small
   (d = 64, M = 1024, L = 1) and one large (d = 64, M = L = 4096) dense
   retrieval, both sides in this process on the same context, bank and
   queries: the Python side is the wall time of ``ctx.retrieve`` (argument
   conversion and NumPy results included), the Rust side that of
   ``Context::retrieve`` timed inside the extension
   (``hopfield_gpu._native._time_retrieve``: queries converted once
   beforehand, GIL released). The two are interleaved call by call, so
   drift in the machine's load hits both alike; the ratio is of their
   medians. Build in release (``pip install .``) for figures.
2. A 4-shard Dask retrieval (LocalCluster, 4 worker processes, one shard of
   M/4 each) against one bank, at M = 1,000,000, d = 64, L = 16.
Medians of --repeats runs after one warm-up; the device is printed. One
JSON line per measurement.
"""

import argparse
import json
import statistics
import time

import numpy as np

import hopfield_gpu as hg
from hopfield_gpu._native import _time_retrieve


def median_time(f, repeats):
    f()  # warm-up: pipelines compile on first use (lavapipe)
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def overhead(ctx, bank, x, beta, repeats):
    """Medians (seconds) of the Python call and of the Rust call, interleaved."""
    ctx.retrieve(bank, x, beta)  # warm-up for both: same pipelines
    py, rust = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        ctx.retrieve(bank, x, beta)
        py.append(time.perf_counter() - t)
        rust.extend(_time_retrieve(ctx, bank, x, beta, 1))
    return statistics.median(py), statistics.median(rust)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--skip-dask", action="store_true")
    ap.add_argument("--dask-only", action="store_true")
    ap.add_argument("--dask-m", type=int, default=1_000_000)
    args = ap.parse_args()
    ctx = hg.Context()
    print("device:", ctx.info()["adapter"])
    rng = np.random.default_rng(0)
    beta = 0.125
    cases = [] if args.dask_only else [(64, 1024, 1, args.repeats), (64, 4096, 4096, max(3, args.repeats // 4))]
    for d, m, l, reps in cases:
        xi = rng.uniform(-1, 1, (m, d)).astype(np.float32)
        x = rng.uniform(-1, 1, (l, d)).astype(np.float32)
        bank = ctx.memory_bank(xi)
        py_s, rust_s = overhead(ctx, bank, x, beta, reps)
        print(json.dumps({"d": d, "m": m, "l": l, "beta": beta, "repeats": reps,
                          "python_median_ms": round(1e3 * py_s, 4), "rust_median_ms": round(1e3 * rust_s, 4),
                          "ratio": round(py_s / rust_s, 4)}))
    if args.skip_dask:
        return
    from dask.distributed import Client, LocalCluster

    from hopfield_gpu.dask_shards import DaskShardedBank

    m, d, l = args.dask_m, 64, 16
    xi = rng.uniform(-1, 1, (m, d)).astype(np.float32)
    x = rng.uniform(-1, 1, (l, d)).astype(np.float32)
    bank = ctx.memory_bank(xi)
    single = median_time(lambda: ctx.retrieve(bank, x, beta), 3)
    client = Client(LocalCluster(n_workers=4, threads_per_worker=1, processes=True, dashboard_address=None))
    t = time.perf_counter()
    sharded = DaskShardedBank(client, xi)
    setup = time.perf_counter() - t
    dask_s = median_time(lambda: sharded.retrieve(x, beta), 3)
    err = float(np.abs(sharded.retrieve(x, beta).z - ctx.retrieve(bank, x, beta).z).max())
    print(json.dumps({"m": m, "d": d, "l": l, "shards": len(sharded.shards), "single_bank_s": round(single, 3),
                      "dask_4_shards_s": round(dask_s, 3), "ratio": round(dask_s / single, 3),
                      "dask_setup_s": round(setup, 2), "max_abs_diff": err}))
    sharded.close()
    client.close()


if __name__ == "__main__":
    main()
