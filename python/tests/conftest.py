"""Shared by the Python tests: one Context (lavapipe compiles each pipeline
on first use, so sharing it keeps the suite fast), seeded data, and NumPy
references written here from the formulas in SEMANTICS.md, in float64.

Tolerances (as the Rust tests, tests/dense.rs): the kernels compute in f32,
so a softmax weight carries the scores' f32 rounding (about
sqrt(d) * 6e-8 * |beta <x, xi>| < 1e-5 here) as a relative error, on a convex
combination of values bounded by 1: z within abs 1e-4 + rel 1e-4 of float64;
log-sum-exp and energies (magnitudes ~10) within abs 1e-4 + rel 1e-5.
"""

from __future__ import annotations

import numpy as np
import pytest

import hopfield_gpu as hg

Z_TOL = dict(atol=1e-4, rtol=1e-4)
E_TOL = dict(atol=1e-4, rtol=1e-5)


@pytest.fixture(scope="session")
def ctx() -> hg.Context:
    # No adapter: this raises RuntimeError and every test using it fails.
    return hg.Context()


def rand(seed: int, *shape: int, scale: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-scale, scale, shape).astype(np.float32)


def grid(seed: int, *shape: int) -> np.ndarray:
    """Multiples of 1/8 in [-1, 1]: with beta a power of two and d <= 64,
    every f32 score is exact, so top-K supports can be compared exactly."""
    return (np.round(rand(seed, *shape) * 8) / 8).astype(np.float32)


def scores(x: np.ndarray, xi: np.ndarray, beta: float) -> np.ndarray:
    return beta * (np.asarray(x, np.float64) @ np.asarray(xi, np.float64).T)


def lse(s: np.ndarray) -> np.ndarray:
    m = s.max(axis=-1, keepdims=True)
    return (m + np.log(np.exp(s - m).sum(axis=-1, keepdims=True)))[..., 0]


def softmax(s: np.ndarray) -> np.ndarray:
    w = np.exp(s - s.max(axis=-1, keepdims=True))
    return w / w.sum(axis=-1, keepdims=True)


def dense_ref(x, xi, beta, values=None):
    """z, log-sum-exp, argmax of one dense update, float64."""
    v = xi if values is None else values
    s = scores(x, xi, beta)
    return softmax(s) @ np.asarray(v, np.float64), lse(s), s.argmax(axis=-1)


def energy_ref(x, xi, beta):
    x = np.asarray(x, np.float64)
    return -lse(scores(x, xi, beta)) / beta + 0.5 * (x * x).sum(axis=-1)


def topk_ref(x, xi, beta, k, values=None):
    """z and supports of top-K retrieval: the k best scores (stable argsort
    on the negated scores keeps the lower index first on ties)."""
    v = np.asarray(xi if values is None else values, np.float64)
    s = scores(x, xi, beta)
    k = min(k, xi.shape[0])
    sup = np.argsort(-s, axis=-1, kind="stable")[:, :k]
    kept = np.take_along_axis(s, sup, axis=-1)
    w = softmax(kept)
    return np.einsum("lk,lkc->lc", w, v[sup]), sup


def dynamics_ref(x, xi, beta, steps, eps, update):
    """Iterate x <- update(x) per query; stop once an update moves no
    coordinate by more than eps. Returns states, steps, converged."""
    x = np.array(x, np.float64)
    n = np.zeros(len(x), int)
    conv = np.zeros(len(x), bool)
    for q in range(len(x)):
        for _ in range(steps):
            nxt = update(x[q : q + 1])[0]
            change = np.abs(nxt - x[q]).max()
            x[q] = nxt
            n[q] += 1
            if change <= eps:
                conv[q] = True
                break
    return x, n, conv
