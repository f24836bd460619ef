#!/usr/bin/env python3
"""How close to the 4·N·K·D² GEMM bound an EM iteration can get with NumPy + OpenBLAS.

Usage:  .venv/bin/python scripts/gemm_floor.py [--components 16] [--features 16]

One thread (as in a Dask worker). Measures the square dgemm rate (the rate the bound
of ``scripts/bench.py`` uses) and the rates of the two products every full-covariance
EM iteration makes per block of ``nb`` rows: the E-step ``θ (K x F) · T (F x nb)`` and
the M-step ``T (F x nb) · Rᵀ (nb x K)`` with ``F = D(D+1)/2 + D + 1`` features. Those two
products alone set a floor on an iteration; the script prints it as the largest
fraction of the bound an iteration could reach if everything else (features,
responsibilities, Dask) cost nothing.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits


def _rate(fn, flops, seconds=0.4):
    fn()
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return flops * n / (time.perf_counter() - t0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--components", type=int, default=16)
    ap.add_argument("--features", type=int, default=16)
    a = ap.parse_args(argv)
    threadpool_limits(1)
    k, d = a.components, a.features
    f = d * (d + 1) // 2 + d + 1
    rng = np.random.default_rng(0)
    s = 2000
    A, B, C = rng.random((s, s)), rng.random((s, s)), np.empty((s, s))
    square = _rate(lambda: np.matmul(A, B, out=C), 2.0 * s**3)
    print(f"square dgemm, one thread: {square / 1e9:.1f} GFLOP/s")
    bound_ms = 4.0 * k * d * d / square * 1e9  # per 1M rows, one thread
    print(f"bound 4NKD^2 at that rate: {bound_ms:.0f} ms per 1M rows per thread")
    print(f"{'rows/block':>10s} {'E GFLOP/s':>10s} {'M GFLOP/s':>10s} {'GEMMs ms/1M':>12s} {'max fraction':>13s}")
    best = 0.0
    for nb in (256, 512, 1024, 2048, 4096):
        theta, T = rng.random((k, f)), rng.random((f, nb))
        L, ST = np.empty((k, nb)), np.empty((f, k))
        flops = 2.0 * k * f * nb
        e = _rate(lambda: np.matmul(theta, T, out=L), flops)  # noqa: B023
        m = _rate(lambda: np.matmul(T, L.T, out=ST), flops)  # noqa: B023
        ms = (flops / e + flops / m) / nb * 1e9
        best = max(best, bound_ms / ms)
        print(f"{nb:10d} {e / 1e9:10.1f} {m / 1e9:10.1f} {ms:12.0f} {100 * bound_ms / ms:12.0f}%")
    print(f"best: the two GEMMs alone allow at most {100 * best:.0f}% of the bound (target 75%)")


if __name__ == "__main__":
    main()
