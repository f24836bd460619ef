#!/usr/bin/env python3
"""Whole default fits, daskgmm against scikit-learn, seeds 0, 1, 2 (issue 13's first target).

    .venv/bin/python scripts/whole_fit.py [--data data/bench] [--k 16]

daskgmm: ``GaussianMixture(k, random_state=seed)`` with its defaults (init on the scan's
sample, EM to ``tol=1e-3``) on a LocalCluster of two worker processes with one thread
each, the data persisted there; scikit-learn: the same in this process (BLAS on both
cores). Prints seconds, passes and the mean log-likelihood of the data under each fit.
Run it on a quiet machine: both take both cores.
"""

import argparse
import time
import warnings

import numpy as np
from benchlib import bench_cluster
from sklearn.mixture import GaussianMixture as SkGMM

from daskgmm import GaussianMixture
from daskgmm.io.parquet import open_parquet


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/bench")
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--seeds", default="0,1,2")
    a = ap.parse_args()
    warnings.simplefilter("ignore")
    src = open_parquet(a.data, columns=[f"f{j}" for j in range(16)])
    X = src.X.compute()
    seeds = [int(s) for s in a.seeds.split(",")]
    ours, theirs = [], []
    with bench_cluster() as client:
        Xd = client.persist(src.X)
        for s in seeds:
            t = time.perf_counter()
            g = GaussianMixture(a.k, random_state=s, cache="memory").fit(Xd)
            sec = time.perf_counter() - t
            ll = g.score(Xd)
            ours.append(sec)
            print(f"daskgmm      seed {s}: {sec:6.2f} s, {g.n_passes_} passes, {g.n_iter_} EM iterations, "
                  f"mean log-likelihood {ll:.4f}", flush=True)
    for s in seeds:
        t = time.perf_counter()
        sk = SkGMM(a.k, random_state=s).fit(X)
        sec = time.perf_counter() - t
        theirs.append(sec)
        print(f"scikit-learn seed {s}: {sec:6.2f} s, {sk.n_iter_} EM iterations, mean log-likelihood "
              f"{sk.score(X):.4f}", flush=True)
    print(f"median: daskgmm {np.median(ours):.2f} s, scikit-learn {np.median(theirs):.2f} s, "
          f"{np.median(theirs) / np.median(ours):.1f}x")


if __name__ == "__main__":
    main()
