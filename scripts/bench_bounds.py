#!/usr/bin/env python3
"""k-means with bounds (``algorithm="elkan"``) against Lloyd's passes and scikit-learn's two, one run.

Usage (after ``scripts/test`` or ``pip install -e .``):

    .venv/bin/python scripts/bench_bounds.py                    # 1M x 16, K = 16
    .venv/bin/python scripts/bench_bounds.py --rows 200000

For each data set (seeded blobs; ``--std`` of the blobs, the bench's 2.0 converges in a few
iterations, 5.0 takes tens), every fit starts from the same centres (k-means++ of scikit-learn,
seed 0) with scikit-learn's default ``tol``: daskgmm's ``KMeans`` with ``algorithm="lloyd"`` and
``"elkan"`` on a LocalCluster of 2 workers x 1 thread (data persisted), scikit-learn's with
``"lloyd"`` and ``"elkan"`` in this process on its threads. The fits alternate, ``--repeats``
times; printed: the median wall time of a fit, its iterations, the time per iteration, and
whether daskgmm's two give the same centres and inertia (they must: the same bits).
Also the rows the bounds spared on the workers are not visible here (they are dropped at the
end of a fit); ``scripts/profile_pass.py`` measures the pass itself.

Written as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

import numpy as np
from benchlib import bench_cluster, write_record


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--features", type=int, default=16)
    ap.add_argument("--clusters", type=int, default=16)
    ap.add_argument("--std", type=float, nargs="+", default=[2.0, 5.0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-iter", type=int, default=300)
    ap.add_argument("--out", default="bench-results/bench_bounds.json")
    a = ap.parse_args(argv)
    warnings.simplefilter("ignore")

    import dask.array as da
    from sklearn.cluster import KMeans as SkKMeans
    from sklearn.cluster import kmeans_plusplus
    from sklearn.datasets import make_blobs

    import daskgmm
    from daskgmm import KMeans
    from daskgmm.engine.cluster import kernels_in_use

    n, d, k = a.rows, a.features, a.clusters
    res = {"config": vars(a), "daskgmm": daskgmm.__version__, "load_before": os.getloadavg(), "sets": {}}
    with bench_cluster() as client:
        res["kernel"] = kernels_in_use(client)
        print(f"{n:,} x {d}, K = {k}; daskgmm on 2 workers x 1 thread ({res['kernel']}); scikit-learn "
              f"in this process", flush=True)
        for std in a.std:
            X, _ = make_blobs(n_samples=n, n_features=d, centers=k, cluster_std=std, center_box=(-10, 10),
                              random_state=7)
            start, _ = kmeans_plusplus(X, k, random_state=0)
            Xd = client.persist(da.from_array(X, chunks=(131072, d)))
            Xd.sum().compute()
            runs: dict = {}
            def fit(name, X=X, Xd=Xd, start=start):
                who, alg = name.split()
                if who == "daskgmm":
                    return KMeans(k, init=start, n_init=1, max_iter=a.max_iter, algorithm=alg).fit(Xd)
                return SkKMeans(k, init=start, n_init=1, max_iter=a.max_iter, algorithm=alg).fit(X)

            names = ["daskgmm lloyd", "daskgmm elkan", "scikit-learn lloyd", "scikit-learn elkan"]
            last = {}
            for _ in range(a.repeats):
                for name in names:
                    t0 = time.perf_counter()
                    km = fit(name)
                    runs.setdefault(name, []).append(time.perf_counter() - t0)
                    last[name] = km
            out = {}
            print(f"blobs of std {std}:", flush=True)
            for name, times in runs.items():
                km = last[name]
                med = statistics.median(times)
                it = int(km.n_iter_)
                out[name] = {"seconds": times, "median": med, "n_iter": it, "per_iter": med / max(it, 1),
                             "inertia": float(km.inertia_)}
                print(f"  {name:20s} {med:7.3f} s  ({', '.join(f'{t:.3f}' for t in times)})  {it:3d} it  "
                      f"{1e3 * med / max(it, 1):7.2f} ms/it  inertia {km.inertia_:.10g}", flush=True)
            same = (np.array_equal(last["daskgmm lloyd"].cluster_centers_, last["daskgmm elkan"].cluster_centers_)
                    and last["daskgmm lloyd"].inertia_ == last["daskgmm elkan"].inertia_)
            out["daskgmm_same_bits"] = bool(same)
            out["elkan_vs_lloyd"] = out["daskgmm lloyd"]["median"] / out["daskgmm elkan"]["median"]
            out["elkan_vs_sklearn_lloyd"] = out["scikit-learn lloyd"]["median"] / out["daskgmm elkan"]["median"]
            out["elkan_vs_sklearn_elkan"] = out["scikit-learn elkan"]["median"] / out["daskgmm elkan"]["median"]
            print(f"  daskgmm's two: the same centres and inertia: {same}; elkan {out['elkan_vs_lloyd']:.2f}x "
                  f"daskgmm's lloyd, {out['elkan_vs_sklearn_lloyd']:.2f}x scikit-learn's lloyd, "
                  f"{out['elkan_vs_sklearn_elkan']:.2f}x its elkan", flush=True)
            res["sets"][str(std)] = out
            del Xd
    res["load_after"] = os.getloadavg()
    print(f"load average (1, 5, 15 min) before {res['load_before']}, after {res['load_after']}")
    write_record(res, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
