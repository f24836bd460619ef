#!/usr/bin/env python3
"""Where a pass spends its time: the steps of the per-block kernel, single-threaded.

Usage (after ``scripts/bench.py`` has written ``data/bench``):

    .venv/bin/python scripts/profile_kernel.py [--rows 262144] [--block-rows 2048]

For full, diag and spherical covariance (K=16, fitted 3 EM iterations from the
daskgmm start on the bench data), times each step of ``stats.chunk_pass`` as
it runs on a block: centring, building the features ``T``, the E-step GEMM,
the responsibilities, and the M-step GEMM. Prints milliseconds per million
rows.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np
from benchlib import precisions
from threadpoolctl import threadpool_limits

STEPS = ("centre", "features", "E-step GEMM", "responsibilities", "M-step GEMM")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/bench")
    ap.add_argument("--features", type=int, default=16, help="columns f0..f{D-1}, as scripts/bench.py")
    ap.add_argument("--rows", type=int, default=262144)
    ap.add_argument("--block-rows", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    threadpool_limits(1)  # as in a Dask worker thread

    from daskgmm import GaussianMixture
    from daskgmm.io.parquet import open_parquet
    from daskgmm.kernels import build_features, soft_responsibilities
    from daskgmm.kernels import params as forms
    from daskgmm.kernels.requests import add_moments
    from daskgmm.kernels.scratch import scratch

    sys.path.insert(0, "scripts")

    src = open_parquet(a.data, columns=[f"f{j}" for j in range(a.features)])
    X = src.X.compute()
    k, d, nb = 16, X.shape[1], a.block_rows
    start = GaussianMixture(k, max_iter=0, random_state=0).fit(X)
    init = dict(weights_init=start.weights_, means_init=start.means_)
    x = np.asfortranarray(X[: a.rows])  # chunks are column-major, as read from Parquet
    n = len(x) - len(x) % nb
    c = X.mean(axis=0)
    print(f"{n:,} rows x {d}, K={k}, blocks of {nb} rows, one thread; ms per 1M rows")
    print(f"{'':10s}" + "".join(f"{s:>18s}" for s in STEPS) + f"{'total':>10s}")
    for ct in ("full", "diag", "spherical"):
        g = GaussianMixture(k, covariance_type=ct, max_iter=3, tol=0,
                            precisions_init=precisions(dict(init, precisions_init=start.precisions_), ct, k, d),
                            **init).fit(X)
        nat = forms.natural_params(g.weights_, g.means_, g.precisions_cholesky_, ct, c)
        level = nat.level
        theta = nat.theta(level)
        p = theta.shape[1]
        S = np.zeros((k, p))
        spent = np.zeros(len(STEPS))
        for rep in range(a.repeats + 1):
            for i in range(0, n, nb):
                t0 = time.perf_counter()
                xT = scratch("xT", (d, nb), np.float64)
                np.subtract(x[i : i + nb].T, c[:, None], out=xT)
                t1 = time.perf_counter()
                T = build_features(xT, level, scratch("features", (p, nb), np.float64))
                t2 = time.perf_counter()
                L = scratch("logits", (k, nb), np.float64)
                np.matmul(theta, T, out=L)
                t3 = time.perf_counter()
                soft_responsibilities(L.reshape(1, k, nb), scratch("top", (1, nb), np.float64),
                                      scratch("total", (1, nb), np.float64))
                t4 = time.perf_counter()
                add_moments(S, T, L)
                t5 = time.perf_counter()
                if rep:  # the first round warms caches and buffers
                    spent += np.diff([t0, t1, t2, t3, t4, t5])
        per_m = spent / a.repeats / n * 1e9  # ms per 1M rows
        print(f"{ct:10s}" + "".join(f"{v:18.0f}" for v in per_m) + f"{per_m.sum():10.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
