#!/usr/bin/env python3
"""One EM iteration against the GEMM bound, quickly: issue 13's target 2 alone.

Usage (after ``scripts/bench.py`` has written ``data/bench``):

    .venv/bin/python scripts/bench_iter.py [--repeats 3] [--iters 5] [--covariance-type full] [--sklearn]

Same method as ``scripts/bench.py``: a LocalCluster of two single-threaded worker
processes, the data persisted, the marginal time of ``--iters`` EM iterations from
daskgmm's default start, against ``4 N K D^2`` flops at the dgemm rate measured in
both workers at once. ``--sklearn`` also times scikit-learn's iteration from the same
start, the same way, in this process (its BLAS on every core), after daskgmm's repeats and
with the cluster closed, and prints the ratio of the medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import warnings

from benchlib import bench_cluster, gemm_rate, marginal_seconds, precisions

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/bench")
    ap.add_argument("--features", type=int, default=16)
    ap.add_argument("--components", type=int, default=16)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--covariance-type", default="full")
    ap.add_argument("--dtype", default="float64")
    ap.add_argument("--sklearn", action="store_true", help="scikit-learn's iteration too, in the same run")
    a = ap.parse_args(argv)
    warnings.simplefilter("ignore")

    from daskgmm import GaussianMixture
    from daskgmm.engine.placement import row_major
    from daskgmm.io.parquet import open_parquet

    k, d = a.components, a.features
    with bench_cluster() as client:
        src = open_parquet(a.data, columns=[f"f{j}" for j in range(d)], dtype=a.dtype)
        X = client.persist(row_major(src.X))  # as a fit keeps the rows
        X.sum().compute()
        n = X.shape[0]
        start = GaussianMixture(k, max_iter=0, random_state=0).fit(X)
        init = dict(weights_init=start.weights_, means_init=start.means_)
        init["precisions_init"] = precisions(dict(init, precisions_init=start.precisions_), a.covariance_type, k, d)

        def fit(it):
            GaussianMixture(k, covariance_type=a.covariance_type, max_iter=it, tol=0.0, cache="memory",
                            **init).fit(X)

        rows = []
        for _ in range(a.repeats):
            rate = sum(client.run(gemm_rate).values())
            r = marginal_seconds(fit, a.iters, 1)
            bound = 4.0 * n * k * d * d / rate
            rows.append((r["per_iter"], rate, bound))
            print(f"  {r['per_iter']:.3f} s/iter; dgemm {rate / 1e9:.1f} GFLOP/s (both workers); "
                  f"bound {bound:.3f} s: {100 * bound / r['per_iter']:.0f}%", flush=True)
        med = statistics.median(b / t for t, _, b in rows)
        print(f"median fraction of the bound: {100 * med:.0f}% (target 75%)")
        ours = statistics.median(t for t, _, _ in rows)
        x = src.X.compute() if a.sklearn else None
    if a.sklearn:
        from sklearn.mixture import GaussianMixture as SkGMM

        def skfit(it):
            SkGMM(k, covariance_type=a.covariance_type, max_iter=it, tol=0.0, **init).fit(x)

        skfit(1)  # warm: BLAS's threads, first calls
        r = marginal_seconds(skfit, a.iters, a.repeats)
        print(f"scikit-learn: {r['per_iter']:.3f} s/iter (min {r['min']:.3f}, load {r['load']:.1f}); "
              f"daskgmm {ours:.3f} s/iter: {r['per_iter'] / ours:.1f}x (target 15x)", flush=True)


if __name__ == "__main__":
    main()
