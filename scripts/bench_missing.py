#!/usr/bin/env python3
"""Cost of an EM iteration with missing values, relative to complete data (issues 15 and 26).

Usage (after ``pip install -e .``; on a shared machine under the bench lock):

    flock /work/notes/bench.lock .venv/bin/python scripts/bench_missing.py
    .venv/bin/python scripts/bench_missing.py --rows 200000 --no-numpy --repeats 2    # quicker

The data are 1M rows of 16 features from a 16-component mixture; two copies have each entry
NaN with probability 0.2 and 0.01 (missing completely at random; a row left with no observed
value gets one back): 97% and 15% of rows incomplete, nearly every row of the first its own
pattern. Each is fitted by ``GaussianMixture(missing="marginalize")`` on a LocalCluster of
2 worker processes x 1 thread (the data persisted on the workers first), from the same start
(``weights_init``/``means_init``/``precisions_init``, ``tol=0``), for every covariance type.
The cost of an iteration is the *marginal* one: (time with 2 + I iterations - time with 2) / I
(``--iterations`` I, default 10), so the start-up and the first passes cancel; the median of
``--repeats`` rounds (default 5), each of which measures every (covariance type, dataset) once, after
one fit of each has placed its chunks: a load that comes and goes falls on all of them alike.

With ``--numpy`` (the default) the incomplete data are also fitted with the NumPy path
(``DASKGMM_KERNEL=numpy`` on a second cluster): what the rows with NaN cost before the
compiled marginal E-step. The load average (``os.getloadavg``) is printed beside each
figure: on a shared machine compare ratios taken in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import warnings

import numpy as np
from benchlib import bench_cluster, marginal_seconds

TYPES = ("full", "tied", "diag", "spherical")


def make_data(n, d, k, frac, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=4.0, size=(k, d))
    z = rng.integers(k, size=n)
    x = means[z] + rng.normal(size=(n, d))
    if not frac:
        return x
    xm = x.copy()
    xm[np.random.default_rng(seed + 1).random(x.shape) < frac] = np.nan
    empty = np.flatnonzero(np.isnan(xm).all(axis=1))
    xm[empty, 0] = x[empty, 0]
    return xm


def run_cluster(datasets, starts, args, kernel, iterations, repeats):
    """Seconds per iteration of every (dataset, covariance type) on a fresh 2-worker cluster.

    Every dataset is persisted first and fitted once (start-up, placement); then ``repeats``
    rounds each measure every (covariance type, dataset) once, so that a load that comes and
    goes on a shared machine falls on all of them alike; the median of the rounds.
    """
    import dask.array as da

    from daskgmm import ConvergenceWarning, GaussianMixture
    from daskgmm.engine.cluster import kernels_in_use
    from daskgmm.kernels import compiled

    os.environ["DASKGMM_KERNEL"] = kernel  # the workers inherit it
    compiled.reset()
    per: dict = {}
    with bench_cluster() as client:
        used = kernels_in_use(client)
        print(f"LocalCluster, 2 workers x 1 thread, kernel {used}:", flush=True)
        xs = {}
        for name, x in datasets.items():
            xs[name] = client.persist(da.from_array(x, chunks=(131072, x.shape[1])))
            xs[name].sum().compute()

        def fitter(ct, xd):
            s = starts[ct]

            def fit(it):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    GaussianMixture(args.components, covariance_type=ct, tol=0.0, max_iter=it,
                                    missing="marginalize", weights_init=s.weights_, means_init=s.means_,
                                    precisions_init=s.precisions_).fit(xd)
            return fit

        for ct in TYPES:
            for xd in xs.values():
                fitter(ct, xd)(1)  # the first fit on a dataset places its chunks
        for r in range(repeats):
            for ct in TYPES:
                for name, xd in xs.items():
                    one = marginal_seconds(fitter(ct, xd), iterations, 1)
                    per.setdefault((name, ct), []).append((one["per_iter"], one["load"]))
            print(f"  round {r + 1} of {repeats}: "
                  + ", ".join(f"{ct} {name} {v[-1][0]:.3f}" for (name, ct), v in per.items()), flush=True)
    out = {}
    for key, v in per.items():
        times = [t for t, _ in v]
        out[key] = {"per_iter": statistics.median(times), "min": min(times), "all": times,
                    "load": [ld for _, ld in v], "kernel": used}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--features", type=int, default=16)
    ap.add_argument("--components", type=int, default=16)
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--numpy", action=argparse.BooleanOptionalAction, default=True,
                    help="also time the incomplete data on the NumPy path (default: yes)")
    ap.add_argument("--out", default="bench-results/bench_missing.json")
    args = ap.parse_args(argv)

    from daskgmm import GaussianMixture

    n, d, k = args.rows, args.features, args.components
    datasets = {"complete": make_data(n, d, k, 0.0), "20%": make_data(n, d, k, 0.2), "1%": make_data(n, d, k, 0.01)}
    for name, x in datasets.items():
        print(f"{name:>9}: {n:,} rows x {d} features, K={k}; {np.isnan(x).mean():.1%} of entries missing, "
              f"{np.isnan(x).any(axis=1).mean():.1%} of rows with a missing value", flush=True)
    sample = datasets["complete"][:50_000]
    starts = {ct: GaussianMixture(k, covariance_type=ct, max_iter=5, random_state=0).fit(sample) for ct in TYPES}
    res = run_cluster(datasets, starts, args, os.environ.get("DASKGMM_KERNEL", "auto"), args.iterations, args.repeats)
    before = {}
    if args.numpy:  # the NumPy path takes up to ~80x as long: one round of two iterations
        before = run_cluster({n_: x for n_, x in datasets.items() if n_ != "complete"}, starts, args, "numpy", 2, 1)

    print(f"\nseconds per iteration (ratio to complete data), {n:,} x {d}, K={k}, 2 workers:")
    head = f"{'covariance':>10}  {'complete':>8}  {'20% missing':>16}  {'1% missing':>16}"
    if before:
        head += f"  {'20%, NumPy path':>16}  {'1%, NumPy path':>16}"
    print(head)
    table = {}
    for ct in TYPES:
        c = res[("complete", ct)]["per_iter"]
        row = {"complete": c, "20%": res[("20%", ct)]["per_iter"], "1%": res[("1%", ct)]["per_iter"]}
        if before:
            row["20% numpy"] = before[("20%", ct)]["per_iter"]
            row["1% numpy"] = before[("1%", ct)]["per_iter"]
        table[ct] = row
        cells = [f"{row[key]:7.3f} ({row[key] / c:4.1f}x)" for key in row if key != "complete"]
        print(f"{ct:>10}  {c:8.3f}  " + "  ".join(f"{cell:>16}" for cell in cells))
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"config": vars(args), "table": table,
                       "runs": {f"{a} {b}": v for (a, b), v in res.items()},
                       "numpy_runs": {f"{a} {b}": v for (a, b), v in before.items()}}, f, indent=1)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
