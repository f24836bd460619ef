#!/usr/bin/env python3
"""What the layout of a chunk costs the compiled core: rows or columns contiguous, one thread.

Usage (after ``scripts/test`` or ``pip install -e .``):

    .venv/bin/python scripts/profile_layout.py [--rows 1000000] [--chunk-rows 131072] [--variant avx2]

Seeded rows (``--rows`` x 16, float64) in chunks of ``--chunk-rows``, once C-ordered and once
column-major (as Parquet chunks are read, ``daskgmm.io.read``), are folded block by block
(``compiled.block_rows``, as a worker's pass does) through ``compiled.Fused`` for a k-means
model (K=16, the core's ``run_hard``) and Gaussian mixtures of every feature level (full, diag,
spherical; K=16). For the column-major chunks, a third line times each block copied into C
order by NumPy first (``np.ascontiguousarray``: what every pass paid before the core read
columns in place). Prints CPU milliseconds per million rows, the best of ``--repeats``.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from threadpoolctl import threadpool_limits


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--chunk-rows", type=int, default=131072)
    ap.add_argument("--variant", default=None, help="a variant this CPU runs (default: the one chosen)")
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    threadpool_limits(1)  # as in a Dask worker thread
    from sklearn.mixture import GaussianMixture

    from daskgmm.kernels import compiled
    from daskgmm.kernels import params as forms

    kernel = compiled.load_variant(a.variant) if a.variant else compiled.ready()
    if kernel is None:
        raise SystemExit(f"no compiled core to profile here: {compiled.describe()}")
    n, d, k = a.rows, 16, 16
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d)) + rng.integers(0, 4, size=(n, 1))
    chunks = {"C order": [np.ascontiguousarray(x[i : i + a.chunk_rows]) for i in range(0, n, a.chunk_rows)],
              "columns": [np.asfortranarray(x[i : i + a.chunk_rows]) for i in range(0, n, a.chunk_rows)]}
    centre = x[:1000].mean(axis=0)
    models = {"k-means": (forms.kmeans_natural_params(x[rng.choice(n, k, replace=False)] - centre), 0, compiled.HARD)}
    for ct in ("full", "diag", "spherical"):
        g = GaussianMixture(k, covariance_type=ct, max_iter=2, random_state=0).fit(x[:20000])
        nat = forms.natural_params(g.weights_, g.means_, g.precisions_cholesky_, ct, centre)
        models[ct] = (nat, nat.level, 0)

    def best(theta, level, mode, blocks, copy):
        times = []
        for _ in range(a.repeats):
            fused = compiled.Fused(kernel, theta, np.array([0, k]), np.array([mode]), level, centre)
            per_row = np.zeros((1, compiled.block_rows(1)))
            t0 = time.thread_time()
            for ch in blocks:
                for i in range(0, len(ch), compiled.block_rows(1)):
                    b = ch[i : i + compiled.block_rows(1)]
                    fused.update(np.ascontiguousarray(b) if copy else b, None, per_row[:, : len(b)])
            times.append(time.thread_time() - t0)
        return 1e3 * min(times) * 1e6 / n

    name = a.variant or compiled.kernel_name().removeprefix("compiled-")
    print(f"{n:,} rows x {d} in chunks of {a.chunk_rows:,}, K={k}, the {name} variant, one thread", flush=True)
    print(f"{'':10s}{'C order':>12s}{'columns':>12s}{'columns, copied':>18s}   (CPU ms per 1M rows)")
    for name, (nat, level, mode) in models.items():
        theta = nat.theta(level)
        c = best(theta, level, mode, chunks["C order"], False)
        f = best(theta, level, mode, chunks["columns"], False)
        fc = best(theta, level, mode, chunks["columns"], True)
        print(f"{name:10s}{c:12.1f}{f:12.1f}{fc:18.1f}", flush=True)


if __name__ == "__main__":
    main()
