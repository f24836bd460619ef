#!/usr/bin/env python3
"""The compiled core's k-means pass with and without bounds (``algorithm="elkan"``), one thread, CPU time.

Usage (after ``scripts/test`` or ``pip install -e .``):

    .venv/bin/python scripts/profile_bounds.py --clusters 16 64 256

For 1,000,000 x 16 blobs (std 5, centres in ±10) and K centres drawn from the rows, in blocks
of 65,536 rows as a pass runs them: the pass without bounds; with bounds and no reference yet
(the first pass of a fit: every row tiled, its second-best logit kept, its bound written); and
with the same centres again (every row's label settled by its bounds). CPU ms per 1M rows, the
best of ``--repeats``.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--features", type=int, default=16)
    ap.add_argument("--clusters", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)

    from sklearn.datasets import make_blobs

    from daskgmm.kernels import compiled
    from daskgmm.kernels.params import kmeans_natural_params

    kernel = compiled.ready()
    if kernel is None:
        raise SystemExit(f"the compiled core is not in use: {compiled.error()}")
    block = compiled.block_rows(1)
    print(f"{a.rows:,} x {a.features}, {compiled.kernel_name()}, blocks of {block:,} rows; load {os.getloadavg()}")
    for k in a.clusters:
        X, _ = make_blobs(a.rows, a.features, centers=k, cluster_std=5.0, center_box=(-10, 10), random_state=7)
        centres = X[np.random.default_rng(0).choice(len(X), k, replace=False)]
        centre = X.mean(axis=0)
        theta = kmeans_natural_params(centres - centre).theta(0)
        label = np.zeros(len(X), np.int32)
        lower = np.zeros(len(X), np.float32)

        def one(bounded, shift, X=X, centre=centre, theta=theta, k=k, label=label, lower=lower):
            best = np.inf
            for _ in range(a.repeats):
                S = np.zeros_like(theta)
                per_row = np.zeros((1, block))
                t0 = time.thread_time()
                for s in range(0, len(X), block):
                    x = X[s:s + block]
                    args = (x, centre, None, theta, 0, np.array([0, k]), np.array([1]), S, per_row[:, :len(x)],
                            np.zeros(1))
                    if bounded:
                        kernel.mixture_block(*args, kmeans_bounds=(label[s:s + len(x)], lower[s:s + len(x)], shift))
                    else:
                        kernel.mixture_block(*args)
                best = min(best, time.thread_time() - t0)
            return 1e3 * best * 1e6 / len(X)

        plain = one(False, None)
        first = one(True, None)
        settled = one(True, np.zeros(k))
        print(f"  K = {k:4d}: without bounds {plain:7.1f} ms, first pass with bounds {first:7.1f} ms, "
              f"every row settled {settled:7.1f} ms", flush=True)
    print(f"load {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
