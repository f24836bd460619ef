#!/usr/bin/env python3
"""Would numba help? A fused full-covariance E-step (features built on the fly) against NumPy + OpenBLAS.

Usage (numba is not a dependency):

    .venv/bin/pip install numba && .venv/bin/python scripts/numba_fused_estep.py

The logits ``L = Θ · T(x)`` of a block, with the quadratic features ``x_i x_j`` made in
registers instead of written to ``T``, so that the block never leaves the cache. The loops
are written the way LLVM's vectoriser takes them (innermost over rows, contiguous); the
script checks the result against NumPy and prints GFLOP/s (counting the 2·K·F flops per row
of the product) and milliseconds per million rows beside NumPy's features + GEMM.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

try:
    from numba import njit
except ImportError:
    sys.exit("numba is not installed: pip install numba")

D, K = 16, 16
F = D * (D + 1) // 2 + D + 1


@njit(fastmath=True, boundscheck=False)
def fused_estep(theta, xT, L):
    """``L = θ · T(xT)``, 32 rows at a time, the features computed in a small buffer."""
    k_all = theta.shape[0]
    d, nb = xT.shape
    nt = 32
    t = np.empty(nt)
    for n0 in range(0, nb, nt):
        for k in range(k_all):
            for n in range(nt):
                L[k, n0 + n] = theta[k, F - 1]
        f = 0
        for i in range(d):
            for j in range(i, d):
                for n in range(nt):
                    t[n] = xT[i, n0 + n] * xT[j, n0 + n]
                for k in range(k_all):
                    th = theta[k, f]
                    for n in range(nt):
                        L[k, n0 + n] += th * t[n]
                f += 1
        for i in range(d):
            for k in range(k_all):
                th = theta[k, f]
                for n in range(nt):
                    L[k, n0 + n] += th * xT[i, n0 + n]
            f += 1


def features(xT):
    d, nb = xT.shape
    out = np.empty((F, nb))
    off = 0
    for i in range(d):
        np.multiply(xT[i], xT[i:], out=out[off : off + d - i])
        off += d - i
    out[off : off + d] = xT
    out[-1] = 1.0
    return out


def _seconds(fn, seconds=0.5):
    fn()
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return (time.perf_counter() - t0) / n


def main():
    threadpool_limits(1)
    rng = np.random.default_rng(0)
    print(f"{'rows/block':>10s} {'numba GFLOP/s':>14s} {'numba ms/1M':>12s} {'NumPy ms/1M':>12s} {'max error':>10s}")
    for nb in (256, 2048):
        xT = rng.standard_normal((D, nb))
        theta = rng.standard_normal((K, F))
        L = np.empty((K, nb))
        fused_estep(theta, xT, L)
        err = np.abs(L - theta @ features(xT)).max()
        t_numba = _seconds(lambda: fused_estep(theta, xT, L))  # noqa: B023
        t_numpy = _seconds(lambda: np.matmul(theta, features(xT), out=L))  # noqa: B023
        print(f"{nb:10d} {2 * K * F * nb / t_numba / 1e9:14.1f} {t_numba / nb * 1e9:12.0f} "
              f"{t_numpy / nb * 1e9:12.0f} {err:10.1e}")


if __name__ == "__main__":
    main()
