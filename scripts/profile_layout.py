#!/usr/bin/env python3
"""What the layout of a chunk costs the compiled core: rows or columns contiguous, one thread.

Usage (after ``scripts/test`` or ``pip install -e .``):

    .venv/bin/python scripts/profile_layout.py [--rows 1000000] [--chunk-rows 131072] [--variant avx2]
    .venv/bin/python scripts/profile_layout.py --fits [--iters 10 --repeats 3]

Seeded rows (``--rows`` x 16, float64) in chunks of ``--chunk-rows``, once C-ordered and once
column-major (as Parquet chunks are read, ``daskgmm.io.read``), are folded block by block
(``compiled.block_rows``, as a worker's pass does) through ``compiled.Fused`` for a k-means
model (K=16, the core's ``run_hard``) and Gaussian mixtures of every feature level (full, diag,
spherical; K=16). For the column-major chunks, a third line times each block copied into C
order by NumPy first (``np.ascontiguousarray``: what every pass paid before the core read
columns in place). Prints CPU milliseconds per million rows, the best of ``--repeats``, and
what NumPy's copy of the column-major chunks into C order costs.

``--fits``: whole fits from a Parquet file instead (1M x 16 blobs, row groups of ``--chunk-rows``)
on a LocalCluster of 2 workers x 1 thread, which keep the rows in memory: KMeans (Lloyd) and
GaussianMixture of each covariance type, each as a fit keeps the chunks (row-major,
``engine.placement.row_major``) and as read (column-major: ``row_major`` made the identity in
this process, where the fit persists), alternated; seconds per iteration from one pass's start
to the next (``benchlib.iteration_seconds``), medians of ``--repeats``.
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
    ap.add_argument("--fits", action="store_true", help="whole fits from Parquet on 2 workers, by kept layout")
    ap.add_argument("--iters", type=int, default=10, help="with --fits: iterations timed per fit")
    ap.add_argument("--data", default="", help="with --fits: a Parquet directory of columns f0..f15 to fit "
                    "instead (e.g. data/bench, scripts/bench.py's); --cases then defaults to full,diag")
    ap.add_argument("--cases", default="", help="with --fits: some of kmeans,full,diag,spherical")
    a = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    if a.fits:
        return fits(a)
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
    copies = []
    for _ in range(a.repeats):
        t0 = time.thread_time()
        for ch in chunks["columns"]:
            np.ascontiguousarray(ch)
        copies.append(time.thread_time() - t0)
    print(f"NumPy's copy of the column-major chunks into C order: {1e3 * min(copies) * 1e6 / n:.1f} ms per 1M rows",
          flush=True)


def fits(a):
    import os
    import statistics
    import tempfile

    import pyarrow as pa
    import pyarrow.parquet as pq
    from benchlib import bench_cluster, iteration_seconds
    from sklearn.datasets import make_blobs

    import daskgmm
    from daskgmm import GaussianMixture, KMeans
    from daskgmm.engine import placement
    from daskgmm.engine.cluster import kernels_in_use

    n, d, k = a.rows, 16, 16
    X, _ = make_blobs(n_samples=n, n_features=d, centers=k, cluster_std=2.0, random_state=7)
    start = X[np.random.default_rng(0).choice(n, k, replace=False)]
    keep = placement.row_major
    layouts = {"row-major (kept)": keep, "column-major (as read)": lambda X: X}
    cases = {"kmeans": lambda Xp, it: KMeans(k, init=start, n_init=1, max_iter=it, tol=0.0).fit(Xp)}
    for ct in ("full", "diag", "spherical"):
        cases[ct] = lambda Xp, it, ct=ct: GaussianMixture(k, covariance_type=ct, means_init=start, max_iter=it,
                                                          tol=0.0, cache="memory").fit(Xp)
    wanted = a.cases.split(",") if a.cases else ["full", "diag"] if a.data else list(cases)
    cases = {c: cases[c] for c in wanted}
    with tempfile.TemporaryDirectory() as tmp, bench_cluster() as client:
        if a.data:
            Xp = daskgmm.read_parquet(a.data, columns=[f"f{j}" for j in range(d)])
            n = Xp.shape[0]
            first = Xp[:20000].compute()
            start = first[np.random.default_rng(0).choice(len(first), k, replace=False)]
        else:
            pq.write_table(pa.table({f"f{j}": X[:, j] for j in range(d)}), os.path.join(tmp, "x.parquet"),
                           row_group_size=a.chunk_rows)
            Xp = daskgmm.read_parquet(tmp)
        where = a.data or f"row groups of {a.chunk_rows:,}"
        print(f"{n:,} x {d} from Parquet ({where}), K = {k}, 2 workers x 1 thread, "
              f"{kernels_in_use(client)}; ms per iteration, pass start to pass start, median of {a.repeats} "
              f"(min):", flush=True)
        try:
            for case, fit in cases.items():
                got: dict = {name: [] for name in layouts}
                for _ in range(a.repeats):  # alternated: the machine's load drifts
                    for name, layout in layouts.items():
                        placement.row_major = layout
                        got[name].append(iteration_seconds(lambda it, fit=fit: fit(Xp, it), a.iters, 1)["per_iter"])
                print(f"  {case:10s}" + "".join(f"  {name} {1e3 * statistics.median(v):6.1f} ({1e3 * min(v):.1f})"
                                                 for name, v in got.items()), flush=True)
        finally:
            placement.row_major = keep


if __name__ == "__main__":
    main()
