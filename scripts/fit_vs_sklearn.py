#!/usr/bin/env python3
"""Whole fits of the bench data: daskgmm's default fit, then daskgmm and scikit-learn from one start.

Usage (after ``scripts/bench.py`` has written ``data/bench``; needs scikit-learn):

    .venv/bin/python scripts/fit_vs_sklearn.py

daskgmm runs on a LocalCluster of two worker processes with one thread each,
on the data persisted in the workers; scikit-learn in this process on both
cores. Both fits use ``tol=1e-3`` and start from daskgmm's default
initialisation (k-means on the scan's sample, one Lloyd pass), so they run the same iterations.
"""

import time
import warnings

import numpy as np
from benchlib import bench_cluster
from sklearn.mixture import GaussianMixture as SkGMM

from daskgmm import GaussianMixture
from daskgmm.engine.placement import row_major
from daskgmm.io.parquet import open_parquet


def main():
    warnings.simplefilter("ignore")
    src = open_parquet("data/bench", columns=[f"f{j}" for j in range(16)])
    X = src.X.compute()
    with bench_cluster() as client:
        Xd = client.persist(row_major(src.X))  # as a fit keeps the rows
        Xd.sum().compute()
        t = time.perf_counter()
        full = GaussianMixture(16, random_state=0).fit(Xd)
        t_full = time.perf_counter() - t
        print(f"daskgmm default fit (sample k-means init + EM): {t_full:.1f} s, init {full.init_seconds_:.1f} s, "
              f"{full.n_iter_} EM iterations, {full.n_passes_} passes, converged {full.converged_}")
        start = GaussianMixture(16, random_state=0, max_iter=0).fit(Xd)
        init = dict(weights_init=start.weights_, means_init=start.means_, precisions_init=start.precisions_)
        t = time.perf_counter()
        ours = GaussianMixture(16, **init).fit(Xd)
        t_ours = time.perf_counter() - t
    t = time.perf_counter()
    sk = SkGMM(16, **init).fit(X)
    t_sk = time.perf_counter() - t
    print(f"same start, tol=1e-3: daskgmm {t_ours:.1f} s ({ours.n_iter_} iterations), "
          f"scikit-learn {t_sk:.1f} s ({sk.n_iter_} iterations)")
    print(f"lower bounds {ours.lower_bound_:.12f} {sk.lower_bound_:.12f}; "
          f"max |means difference| {np.abs(ours.means_ - sk.means_).max():.1e}")


if __name__ == "__main__":
    main()
