#!/usr/bin/env python3
"""The memory-set quantities of `hopfield-gpu analyze`, in NumPy (f64).

An independent implementation for two uses:
  - a benchmark peer: the same O(M^2 d) pairwise sweep, blocked over rows
    (each block one BLAS matrix product against all memories, reduced at
    once; no M x M matrix), then the same O(M d) formulas;
  - golden data: `--json` prints the report's keys (m, B, R, duplicates,
    delta_min, delta_median, delta_positive_fraction, well_separated_fraction,
    min_beta_well_separated, ...), which tests/analyze.rs compares with the
    engine's report.

Usage:
    python3 tools/analyze_numpy.py --memories data/digits.npy --beta 0.12 [--k 100] [--json]
    python3 tools/analyze_numpy.py --random 100000 --dim 64 --beta 1 --seed 0   # synthetic, for timing

Definitions as SEMANTICS.md ("Theory quantities") and src/theory.rs:
Delta_mu = |xi_mu|^2 - max_{nu != mu} <xi_mu, xi_nu>; R = 0.5 min_{mu != nu}
|xi_mu - xi_nu|; Lemma B.1 threshold ln(2 (M - 1) m / R) / beta + 2 m R; Thm
4.2 threshold ln((M + k - 2) m / R) / beta + 2 m R; smallest beta in closed
form from Delta_min >= c / beta + 2 m R.
"""

import argparse
import json
import math
import sys
import time

import numpy as np


def sweep(x, block):
    """Per row: nearest other row, its squared distance, max inner product
    with another row, and the number of exact duplicates."""
    m = x.shape[0]
    norms = np.einsum("ij,ij->i", x, x)
    nearest = np.empty(m, dtype=np.int64)
    near_d2 = np.empty(m)
    best_dot = np.empty(m)
    dups = np.zeros(m, dtype=np.int64)
    for r0 in range(0, m, block):
        r1 = min(r0 + block, m)
        dots = x[r0:r1] @ x.T                                   # [b, M]
        d2 = norms[r0:r1, None] + norms[None, :] - 2.0 * dots    # cancellation: refined below
        rows = np.arange(r0, r1)
        d2[rows - r0, rows] = np.inf
        dots[rows - r0, rows] = -np.inf
        best_dot[r0:r1] = dots.max(axis=1)
        # The nearest from the product form, then exact distances where the
        # product form cannot decide (several rows within its rounding of the
        # minimum: near-ties, duplicates): vectorised, a Python loop only there.
        lo = d2.min(axis=1)
        tol = 64 * (1e-9 * (norms[r0:r1] + norms.max()) + 1e-300)
        close = d2 <= (lo + tol)[:, None]
        count = close.sum(axis=1)
        arg = d2.argmin(axis=1)
        nearest[r0:r1] = arg
        near_d2[r0:r1] = ((x[arg] - x[r0:r1]) ** 2).sum(axis=1)
        for i in np.flatnonzero((count > 1) | (near_d2[r0:r1] == 0.0)):
            cand = np.flatnonzero(close[i])
            exact = ((x[cand] - x[r0 + i]) ** 2).sum(axis=1)
            j = int(np.argmin(exact))
            nearest[r0 + i] = cand[j]
            near_d2[r0 + i] = exact[j]
            dups[r0 + i] = int((exact == 0.0).sum())
    return norms, nearest, near_d2, best_dot, dups


def solve_beta(c, delta_min, two_m_r):
    gap = delta_min - two_m_r
    if gap > 0:
        return c / gap if c > 0 else 0.0
    if gap == 0:
        return 0.0 if c <= 0 else None
    return 0.0 if c < 0 else None


def analyze(x, beta, k, radius):
    t0 = time.perf_counter()
    m_rows, d = x.shape
    norms, nearest, near_d2, best_dot, dups = sweep(x, block=max(1, min(m_rows, (1 << 24) // max(m_rows, 1))))
    t_sweep = time.perf_counter() - t0
    m = float(np.sqrt(norms.max()))
    b = float(np.abs(x).max())
    delta = norms - best_dot
    r_half = 0.5 * float(np.sqrt(near_d2.min())) if m_rows > 1 else None
    r = radius if radius is not None else r_half
    redundant = int(round(float((dups / (dups + 1.0)).sum())))
    out = {
        "memories": m_rows,
        "dim": d,
        "beta": beta,
        "m": m,
        "B": b,
        "R": r_half,
        "duplicates": redundant,
        "duplicate_patterns": int((dups > 0).sum()),
        "delta_min": float(delta.min()),
        "delta_median": float(np.sort(delta)[(m_rows - 1) // 2]),
        "delta_positive_fraction": float((delta > 0).mean()),
    }
    if r and r > 0:
        c = math.log(2 * (m_rows - 1) * m / r)
        thr = c / beta + 2 * m * r
        out["well_separated_fraction"] = float((delta >= thr).mean())
        out["min_beta_well_separated"] = solve_beta(c, float(delta.min()), 2 * m * r)
        if k is not None:
            ck = math.log((m_rows + k - 2) * m / r)
            out["well_separated_fraction_topk"] = float((delta >= ck / beta + 2 * m * r).mean())
            out["min_beta_well_separated_topk"] = solve_beta(ck, float(delta.min()), 2 * m * r)
    else:
        out["well_separated_fraction"] = None
        out["min_beta_well_separated"] = None
    out["nearest"] = nearest.tolist() if m_rows <= 5000 else None
    out["seconds_sweep"] = t_sweep
    out["seconds_total"] = time.perf_counter() - t0
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--memories", help="a 2-D .npy")
    ap.add_argument("--random", type=int, help="M synthetic N(0, 1/d) patterns instead of a file")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--beta", type=float, required=True)
    ap.add_argument("--k", type=int)
    ap.add_argument("--radius", type=float)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.memories:
        x = np.load(args.memories).astype(np.float64)
    elif args.random:
        rng = np.random.default_rng(args.seed)
        x = rng.standard_normal((args.random, args.dim)) / math.sqrt(args.dim)
    else:
        ap.error("give --memories or --random")
    out = analyze(x, args.beta, args.k, args.radius)
    out["command"] = "python3 tools/analyze_numpy.py " + " ".join(sys.argv[1:])
    if args.json:
        json.dump(out, sys.stdout, indent=1)
        print()
    else:
        for key, v in out.items():
            if key != "nearest":
                print(f"{key}: {v}")
    try:
        from threadpoolctl import threadpool_info

        info = [(p.get("internal_api"), p.get("architecture"), p.get("num_threads")) for p in threadpool_info()]
        print(f"numpy {np.__version__}, BLAS {info}", file=sys.stderr)
    except ImportError:
        print(f"numpy {np.__version__}", file=sys.stderr)


if __name__ == "__main__":
    main()
