#!/usr/bin/env python3
"""Cost of an EM iteration with 20% of entries missing, relative to complete data (issue 15).

Usage (after ``pip install -e .``):

    .venv/bin/python scripts/bench_missing.py                 # 1M x 16, K=16, full and diag
    .venv/bin/python scripts/bench_missing.py --rows 200000   # quicker

The data are 1M rows of 16 features from a 16-component mixture; the "missing" copy has
each entry NaN with probability 0.2 (missing completely at random; rows left with no
observed value get one back). Both are fitted by ``GaussianMixture(missing="marginalize")``
from the same start (``weights_init``/``means_init``/``precisions_init``, ``tol=0``), and
the cost of an iteration is the *marginal* one: (time with 1 + I iterations - time with 1)
/ I, so the first scan and start-up cancel. The median of ``--repeats`` is printed.

With 16 features and 20% missing, 97% of rows have a missing value and nearly every row
has its own pattern, so the incomplete rows go through the batched per-row path
(:mod:`daskgmm.kernels.missing`), not the one-GEMM fast path.

The machine this was written on is shared (2 cores, other jobs running): timings there
vary by tens of percent between runs; compare ratios taken in one run.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np


def make_data(n, d, k, frac, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=4.0, size=(k, d))
    z = rng.integers(k, size=n)
    x = means[z] + rng.normal(size=(n, d))
    xm = x.copy()
    xm[rng.random(x.shape) < frac] = np.nan
    empty = np.flatnonzero(np.isnan(xm).all(axis=1))
    xm[empty, 0] = x[empty, 0]
    return x, xm


def fit_seconds(X, start, ct, k, iters):
    from daskgmm import ConvergenceWarning, GaussianMixture

    g = GaussianMixture(k, covariance_type=ct, tol=0.0, max_iter=iters, missing="marginalize",
                        weights_init=start.weights_, means_init=start.means_, precisions_init=start.precisions_)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        g.fit(X)
    return time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--features", type=int, default=16)
    ap.add_argument("--components", type=int, default=16)
    ap.add_argument("--missing", type=float, default=0.2)
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args(argv)

    from daskgmm import GaussianMixture

    n, d, k = args.rows, args.features, args.components
    x, xm = make_data(n, d, k, args.missing)
    print(f"{n:,} rows x {d} features, K={k}; {np.isnan(xm).mean():.1%} of entries missing, "
          f"{np.isnan(xm).any(axis=1).mean():.1%} of rows with a missing value")
    print(f"{'covariance':>10}  {'complete s/iter':>15}  {'20% missing s/iter':>18}  {'ratio':>6}")
    for ct in ("full", "diag"):
        start = GaussianMixture(k, covariance_type=ct, max_iter=5, random_state=0).fit(x[:50_000])
        per = {}
        for name, data in (("complete", x), ("missing", xm)):
            runs = []
            for _ in range(args.repeats):
                base = fit_seconds(data, start, ct, k, 1)
                more = fit_seconds(data, start, ct, k, 1 + args.iterations)
                runs.append((more - base) / args.iterations)
            per[name] = statistics.median(runs)
        print(f"{ct:>10}  {per['complete']:>15.3f}  {per['missing']:>18.3f}  {per['missing'] / per['complete']:>6.1f}")


if __name__ == "__main__":
    main()
