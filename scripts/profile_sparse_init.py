#!/usr/bin/env python3
"""The client's k-means on a sample of sparse rows (the default ``k-means||`` init of KMeans), timed by parts.

    .venv/bin/python scripts/profile_sparse_init.py [--rows 32768] [--clusters 64]

The sample KMeans draws for K clusters is ``512 K`` rows (32,768 for K=64); these are rows of
``scripts/bench_sparse.py``'s data (100,000 columns, ~100 non-zeros a row). On them, in this
process: k-means++ (``daskgmm.em.init._local_kmeanspp``), then Lloyd's algorithm to convergence
from its centres twice: every distance computed every iteration (sparse x dense products, as
the client did before Elkan's bounds), and ``daskgmm.kernels.sparse.lloyd`` (the bounds skip
the distances that cannot change a label). Prints the seconds of each, the iterations, and the
largest difference between the two results' centres.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


def plain_lloyd(x, w, centers, max_iter=300):
    """Lloyd computing every distance every iteration (the loop ``daskgmm.em.init._local_lloyd`` ran on sparse rows)."""
    import scipy.sparse as sp

    from daskgmm.kernels import sparse as ks

    x = ks.as_csr(x)
    centers = np.array(centers, dtype=np.float64)
    k = len(centers)
    sq = ks.row_norms(x)

    def nearest(c):
        d = sq[:, None] - 2.0 * (x @ c.T) + np.einsum("kd,kd->k", c, c)[None, :]
        return d.argmin(axis=1)

    labels, n_iter = None, 0
    for n_iter in range(1, max_iter + 1):
        new = nearest(centers)
        if labels is not None and np.array_equal(new, labels):
            n_iter -= 1
            break
        labels = new
        order = np.argsort(labels, kind="stable")
        indptr = np.concatenate([[0], np.cumsum(np.bincount(labels, minlength=k))])
        onehot = sp.csr_array((w[order], order.astype(np.int32), indptr.astype(np.int32)), shape=(k, len(labels)))
        sums = (onehot @ x).toarray()
        wk = np.bincount(labels, weights=w, minlength=k)
        centers[wk > 0] = sums[wk > 0] / wk[wk > 0, None]
    return centers, n_iter


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=32768)
    p.add_argument("--features", type=int, default=100_000)
    p.add_argument("--clusters", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_sparse import make_chunk

    from daskgmm.em import init
    from daskgmm.kernels import sparse as ks

    out = {"rows": args.rows, "features": args.features, "clusters": args.clusters, "load_start": os.getloadavg()}
    x = make_chunk(0, args.rows, args.features, 100, args.clusters, args.seed)
    w = np.ones(x.shape[0])
    out["nnz"] = int(x.nnz)
    t = time.perf_counter()
    start = init._local_kmeanspp(x, w, args.clusters, np.random.default_rng(args.seed))
    out["kmeans++_seconds"] = time.perf_counter() - t
    print(f"{args.rows} rows x {args.features}, {x.nnz / args.rows:.1f} non-zeros a row, K={args.clusters}: "
          f"k-means++ {out['kmeans++_seconds']:.2f} s", flush=True)
    t = time.perf_counter()
    plain, n_plain = plain_lloyd(x, w, start)
    out["plain_lloyd_seconds"] = time.perf_counter() - t
    out["plain_lloyd_iterations"] = n_plain
    print(f"Lloyd, every distance every iteration: {out['plain_lloyd_seconds']:.1f} s, {n_plain} iterations",
          flush=True)
    t = time.perf_counter()
    bounded, _, _ = ks.lloyd(x, w, start)
    out["bounded_lloyd_seconds"] = time.perf_counter() - t
    out["max_center_difference"] = float(np.abs(bounded - plain).max())
    print(f"Lloyd with Elkan's bounds (daskgmm.kernels.sparse.lloyd): {out['bounded_lloyd_seconds']:.1f} s; "
          f"the same centres to {out['max_center_difference']:.1e}", flush=True)
    out["load_end"] = os.getloadavg()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
