#!/usr/bin/env python3
"""StudentTMixture against GaussianMixture and studenttmixture: the targets of issue 24, and the cost of a pass.

Usage (needs the ``test`` extra, which brings studenttmixture):

    .venv/bin/python scripts/bench_studentt.py [--seeds 20] [--rows 200000]

1. Gross outliers: three unit Gaussian clusters 8 apart in 2-D, 4,000 rows of which 5% are replaced by
   outliers uniform in [-40, 40]²; for each seed, the largest distance from a true mean to its matched
   fitted mean, and the mean log-likelihood, of GaussianMixture, StudentTMixture (``init_params``
   "kmeans", the default, and "random", also with ``n_init=3``) and studenttmixture's ``EMStudentMixture(fixed_df=False,
   n_init=3)`` (its best of three). A fit "fails" when a true mean is more than 1 from every fitted one.
2. Gaussian data (``make_blobs`` of the tests, 3 clusters, 4,000 rows): the fitted degrees of freedom
   and the gap to GaussianMixture's mean log-likelihood, at ``tol`` 1e-3 (the default) and 1e-4.
3. Seconds per EM iteration, in this process (Dask's threaded scheduler, both cores), of
   GaussianMixture and StudentTMixture on ``--rows`` x 16 float64, K = 8, full covariance
   (the marginal cost ``(t(2 + 5) - t(2)) / 5``; both from k-means++ starts).
4. Clean blobs with K = 6: the mean log-likelihood from the k-means start and from the random one.
5. A tight clump of gross outliers: three blobs of 300 rows in 3-D (centres 6 apart) with 10 of their
   rows moved together by +50, K = 3, seeds 0-9: the mean log-likelihood of the default start with its
   trimmed k-means starts (``daskgmm.fitting.studentt.TRIMMED_STARTS``) and without them, and on how many
   seeds the clump took a component of its own.
"""

import argparse
import contextlib
import io
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from daskgmm import GaussianMixture, StudentTMixture
from tests.conftest import make_blobs, mean_error, outlier_data


def outliers(seeds):
    from studenttmixture import EMStudentMixture

    names = ["GaussianMixture", "StudentTMixture kmeans", "StudentTMixture random",
             "StudentTMixture random, n_init=3", "studenttmixture best of 3"]
    err = {k: [] for k in names}
    ll = {k: [] for k in names}
    for seed in range(seeds):
        X, truth = outlier_data(seed)
        fits = {
            names[0]: GaussianMixture(3, random_state=seed).fit(X),
            names[1]: StudentTMixture(3, random_state=seed).fit(X),
            names[2]: StudentTMixture(3, init_params="random", random_state=seed).fit(X),
            names[3]: StudentTMixture(3, init_params="random", n_init=3, random_state=seed).fit(X),
        }
        with contextlib.redirect_stdout(io.StringIO()):
            stm = EMStudentMixture(3, fixed_df=False, n_init=3, random_state=seed)
            stm.fit(X)
        for name, f in fits.items():
            err[name].append(mean_error(f.means_, truth))
            ll[name].append(f.score(X))
        err[names[4]].append(mean_error(stm.location_, truth))
        ll[names[4]].append(stm.score(X))
    print(f"\n1. 5% gross outliers, {seeds} seeds")
    print("| fit | fails | median mean error | mean log-likelihood (median) |")
    print("|---|---|---|---|")
    for name in names:
        e = np.array(err[name])
        print(f"| {name} | {int((e > 1).sum())} of {seeds} | {np.median(e):.3f} | {np.median(ll[name]):.4f} |")
    stm_ll = np.array(ll[names[4]])
    for name in names[1:4]:
        gap = np.array(ll[name]) - stm_ll
        print(f"{name} - studenttmixture's best of 3: min {gap.min():+.4f}, median {np.median(gap):+.4f}, "
              f"max {gap.max():+.4f}, at least -0.01 on {int((gap >= -0.01).sum())} of {seeds} seeds")


def gaussian():
    print("\n2. Gaussian data (3 clusters, 4,000 rows)")
    print("| D | seed | tol | df_ | log-likelihood - GaussianMixture's | iterations |")
    print("|---|---|---|---|---|---|")
    for d in (2, 3, 8):
        for seed in range(3):
            X, _, _ = make_blobs(n=4000, d=d, k=3, seed=seed, sep=6.0)
            g = GaussianMixture(3, random_state=seed).fit(X).score(X)
            for tol in (1e-3, 1e-4):
                t = StudentTMixture(3, random_state=seed, tol=tol, max_iter=1000).fit(X)
                print(f"| {d} | {seed} | {tol:g} | {', '.join(f'{v:.1f}' for v in t.df_)} | {t.score(X) - g:+.4f} "
                      f"| {t.n_iter_} |")


def many_components():
    print("\n4. clean blobs, K = 6, D = 3, 4,000 rows: the random start against the k-means start")
    print("| seed | kmeans | random | random - kmeans |")
    print("|---|---|---|---|")
    for seed in range(6):
        X, _, _ = make_blobs(n=4000, d=3, k=6, seed=seed, sep=6.0)
        km = StudentTMixture(6, random_state=seed).fit(X).score(X)
        rnd = StudentTMixture(6, init_params="random", random_state=seed).fit(X).score(X)
        print(f"| {seed} | {km:.4f} | {rnd:.4f} | {rnd - km:+.4f} |")


def clump_data(seed):
    rng = np.random.default_rng(seed)
    X = np.vstack([rng.normal(c, 1.0, size=(300, 3)) for c in ([0, 0, 0], [6, 0, 0], [0, 6, 0])])
    X[rng.choice(len(X), 10, replace=False)] += 50
    return X


def clump():
    import daskgmm.fitting.studentt as fitting

    print("\n5. a tight clump of 10 gross outliers in 3 blobs of 300 rows, K = 3: the default start")
    print("| seed | with the trimmed starts | clump's own component | without | clump's own component |")
    print("|---|---|---|---|---|")
    kept = fitting.TRIMMED_STARTS
    for seed in range(10):
        X = clump_data(seed)
        row = [str(seed)]
        for n in (kept, 0):
            fitting.TRIMMED_STARTS = n
            t = StudentTMixture(3, random_state=seed).fit(X)
            row += [f"{t.score(X):.4f}", "yes" if np.bincount(t.predict(X), minlength=3).min() <= 12 else "no"]
        fitting.TRIMMED_STARTS = kept
        print("| " + " | ".join(row) + " |")


def per_iteration(rows):
    import dask.array as da

    X, _, _ = make_blobs(n=rows, d=16, k=8, seed=0, sep=4.0)
    Xd = da.from_array(X, chunks=(max(1, rows // 8), 16)).persist()
    print(f"\n3. seconds per EM iteration, {rows:,} x 16, K = 8, full, threaded scheduler (median of 3)")
    for cls in (GaussianMixture, StudentTMixture):
        marg = []
        for _ in range(3):
            times = {}
            for it in (2, 7):
                t = time.perf_counter()
                # k-means++ starts: no EM on the sample in the init (the default t start's), whose cost
                # does not depend on max_iter and would blur the difference
                cls(8, random_state=0, tol=0.0, max_iter=it, init_params="k-means++").fit(Xd)
                times[it] = time.perf_counter() - t
            marg.append((times[7] - times[2]) / 5)
        print(f"{cls.__name__}: {np.median(marg):.3f} s")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--skip", default="", help="comma-separated parts to skip (1, 2, 3, 4, 5)")
    a = ap.parse_args()
    warnings.simplefilter("ignore")
    skip = set(a.skip.split(","))
    if "1" not in skip:
        outliers(a.seeds)
    if "2" not in skip:
        gaussian()
    if "3" not in skip:
        per_iteration(a.rows)
    if "4" not in skip:
        many_components()
    if "5" not in skip:
        clump()


if __name__ == "__main__":
    main()
