#!/usr/bin/env python3
"""k-means and scaling in workers: daskgmm against scikit-learn and dask-ml, one run.

Usage (after ``scripts/test`` or ``pip install -e .``; ``pip install dask-ml`` adds dask-ml):

    .venv/bin/python scripts/bench_kmeans.py                 # 1M x 16, K = 16
    .venv/bin/python scripts/bench_kmeans.py --rows 200000   # smaller

Measured, side by side on the same in-memory data (float64, seeded blobs):

- a Lloyd iteration of fits from the same centres with ``tol=0`` (every iteration runs):
  daskgmm on a LocalCluster of 2 workers x 1 thread (data persisted), from one pass's start to
  the next's (``benchlib.iteration_seconds``: each fit's start-up, whose time varies between fits
  by more than an iteration takes, left out), and as the marginal cost ``(t(2 + I) - t(2)) / I``;
  scikit-learn's Lloyd in this process on its 2 threads, the marginal cost (it has no start-up
  pass);
- a whole default fit (``n_init=1``): daskgmm, scikit-learn, dask-ml (when installed), with
  their inertia;
- a full-covariance EM iteration of ``GaussianMixture`` on 1 worker and on 2 workers (the
  scaling in workers; pass start to pass start), and the compiled core each worker runs.

Printed as a table and written as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import warnings

import numpy as np
from benchlib import bench_cluster, iteration_seconds, marginal_seconds, write_record


def _fits(runs):
    return ", ".join(f"{w['seconds']:.2f} s ({w['n_iter']} it, inertia {w['inertia']:.6g})" for w in runs)


def _inertia(X, centers, rows=65536):
    """Sum of squared distances to the nearest centre, in slices of rows."""
    total = 0.0
    c2 = (centers**2).sum(axis=1)
    for a in range(0, len(X), rows):
        x = X[a : a + rows]
        d2 = (x**2).sum(axis=1)[:, None] - 2 * x @ centers.T + c2[None, :]
        total += float(np.maximum(d2.min(axis=1), 0).sum())
    return total


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--features", type=int, default=16)
    ap.add_argument("--clusters", type=int, default=16)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="bench-results/bench_kmeans.json")
    ap.add_argument("--no-dask-ml", action="store_true", help="leave dask-ml out (its fits take minutes)")
    a = ap.parse_args(argv)
    warnings.simplefilter("ignore")

    import dask.array as da
    from sklearn.cluster import KMeans as SkKMeans
    from sklearn.datasets import make_blobs
    from threadpoolctl import threadpool_info

    import daskgmm
    from daskgmm import GaussianMixture, KMeans
    from daskgmm.engine.cluster import kernels_in_use

    n, d, k = a.rows, a.features, a.clusters
    X, _ = make_blobs(n_samples=n, n_features=d, centers=k, cluster_std=2.0, random_state=7)
    start = X[np.random.default_rng(0).choice(n, k, replace=False)]
    res = {"config": vars(a), "cases": {}, "daskgmm": daskgmm.__version__, "load_before": os.getloadavg(),
           "blas": [(i.get("internal_api"), i.get("architecture")) for i in threadpool_info()]}
    cases = res["cases"]

    def report(name, r, note=""):
        cases[name] = {**r, "note": note}
        print(f"  {name:52s} {r['per_iter']:8.4f} s  (min {r['min']:.4f})  {note}", flush=True)

    print(f"{n:,} x {d}, K = {k}; BLAS {res['blas']}", flush=True)
    with bench_cluster() as client:
        res["kernel"] = kernels_in_use(client)
        print(f"daskgmm (LocalCluster, 2 workers x 1 thread, kernel {res['kernel']}):", flush=True)
        Xd = client.persist(da.from_array(X, chunks=(131072, d)))
        Xd.sum().compute()

        def dg_lloyd(it):
            KMeans(k, init=start, n_init=1, max_iter=it, tol=0.0).fit(Xd)

        report("daskgmm KMeans, Lloyd iteration", iteration_seconds(dg_lloyd, a.iters, a.repeats),
               "pass start to pass start")
        report("daskgmm KMeans, Lloyd iteration (marginal)", marginal_seconds(dg_lloyd, a.iters, a.repeats),
               "(t(2 + I) - t(2)) / I: the start-up's spread too")
        whole = []
        for seed in (0, 1, 2):
            t, km = _timed(lambda seed=seed: KMeans(k, n_init=1, random_state=seed).fit(Xd))
            whole.append({"seconds": t, "inertia": float(km.inertia_), "n_iter": int(km.n_iter_)})
        res["daskgmm_whole"] = whole
        print(f"  daskgmm KMeans whole default fit (n_init=1), seeds 0-2: "
              f"{_fits(whole)}",
              flush=True)

        gm_start = GaussianMixture(k, max_iter=0, random_state=0).fit(Xd)
        init = dict(weights_init=gm_start.weights_, means_init=gm_start.means_,
                    precisions_init=gm_start.precisions_)

        def gm(it):
            GaussianMixture(k, max_iter=it, tol=0.0, **init).fit(Xd)

        report("daskgmm GaussianMixture full, 2 workers", iteration_seconds(gm, max(3, a.iters // 2), a.repeats))
        del Xd

    with bench_cluster(1) as client:
        Xd = client.persist(da.from_array(X, chunks=(131072, d)))
        Xd.sum().compute()

        def gm1(it):
            GaussianMixture(k, max_iter=it, tol=0.0, **init).fit(Xd)

        report("daskgmm GaussianMixture full, 1 worker", iteration_seconds(gm1, max(3, a.iters // 2), a.repeats))
        del Xd

    print("scikit-learn (this process, its threads on both cores):", flush=True)

    def sk_lloyd(it):
        SkKMeans(k, init=start, n_init=1, max_iter=it, tol=0.0, algorithm="lloyd").fit(X)

    report("scikit-learn KMeans, Lloyd iteration", marginal_seconds(sk_lloyd, a.iters, a.repeats))
    sk_whole = []
    for seed in (0, 1, 2):
        t, km = _timed(lambda seed=seed: SkKMeans(k, n_init=1, random_state=seed).fit(X))
        sk_whole.append({"seconds": t, "inertia": float(km.inertia_), "n_iter": int(km.n_iter_)})
    res["sklearn_whole"] = sk_whole
    print(f"  scikit-learn KMeans whole default fit (n_init=1), seeds 0-2: "
          f"{_fits(sk_whole)}",
          flush=True)

    try:
        if a.no_dask_ml:
            raise ImportError("--no-dask-ml")
        from dask_ml.cluster import KMeans as DmlKMeans
    except ImportError as exc:
        res["dask_ml"] = f"skipped: {exc}"
        print(f"dask-ml: skipped ({exc})", flush=True)
    else:
        with bench_cluster() as client:
            Xd = client.persist(da.from_array(X, chunks=(131072, d)))
            Xd.sum().compute()
            dml = []
            for seed in (0, 1, 2):
                t, km = _timed(lambda seed=seed: DmlKMeans(n_clusters=k, random_state=seed).fit(Xd))
                # dask-ml's inertia_ is not the sum of squared distances of its centres (a tenth of it
                # here): recomputed, as the others'
                dml.append({"seconds": t, "inertia": _inertia(X, np.asarray(km.cluster_centers_)),
                            "its_inertia_": float(km.inertia_), "n_iter": int(km.n_iter_)})
            res["dask_ml_whole"] = dml
            print(f"  dask-ml KMeans whole default fit, seeds 0-2: "
                  f"{_fits(dml)}", flush=True)

    c = cases
    med = statistics.median
    lloyd = c["scikit-learn KMeans, Lloyd iteration"]["per_iter"] / c["daskgmm KMeans, Lloyd iteration"]["per_iter"]
    res["targets"] = {
        "lloyd_vs_sklearn": lloyd,
        "whole_vs_sklearn": med(w["seconds"] for w in sk_whole) / med(w["seconds"] for w in whole),
        "inertia_vs_sklearn": med(w["inertia"] for w in whole) / med(w["inertia"] for w in sk_whole),
        "workers_2_vs_1": c["daskgmm GaussianMixture full, 1 worker"]["per_iter"]
        / c["daskgmm GaussianMixture full, 2 workers"]["per_iter"],
    }
    if "dask_ml_whole" in res:
        res["targets"]["whole_vs_dask_ml"] = (med(w["seconds"] for w in res["dask_ml_whole"])
                                              / med(w["seconds"] for w in whole))
    res["load_after"] = os.getloadavg()
    print("\nratios:", json.dumps(res["targets"], indent=2))
    print(f"load average (1, 5, 15 min) before {res['load_before']}, after {res['load_after']}")
    write_record(res, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
