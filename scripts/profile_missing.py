#!/usr/bin/env python3
"""CPU seconds per million rows of a pass over rows with missing values, one thread.

Usage:  .venv/bin/python scripts/profile_missing.py [--rows 200000] [--missing 0.2 0.01] [--types full tied]
        .venv/bin/python scripts/profile_missing.py --numpy-kernels     # the NumPy kernels alone

Rows of 16 features (K=16) with each entry missing with probability ``--missing``, folded by
``chunk_pass`` as a worker does: the compiled core (``compiled=True``) against the same
rows without NaN, for every covariance type (or ``--types``: one case alone under ``perf record``);
the best of ``--repeats``. ``--numpy-kernels``
instead times :func:`daskgmm.kernels.missing.marginal_logits` and ``completed_moments``
(full covariances) in blocks of 2048 rows: the NumPy reference's own cost. Process CPU time,
so that other jobs on a shared machine disturb it less than wall time.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

TYPES = ("full", "tied", "diag", "spherical")


def numpy_kernels(a):
    from daskgmm.kernels import covariance as cov
    from daskgmm.kernels import params as forms
    from daskgmm.kernels.features import FULL_LEVEL
    from daskgmm.kernels.missing import completed_moments, marginal_logits

    rng = np.random.default_rng(0)
    n, d, k, nb = a.rows, 16, 16, 2048
    for frac in a.missing:
        x = rng.standard_normal((n, d))
        x[rng.random((n, d)) < frac] = np.nan
        g = rng.standard_normal((k, d, d)) / 4
        u = cov.precisions_cholesky(np.einsum("kij,klj->kil", g, g) + np.eye(d), "full")
        pc = forms.per_component(np.full(k, 1 / k), rng.standard_normal((k, d)), u, "full", np.zeros(d))
        t_logits = t_moments = 0.0
        for start in range(0, n, nb):
            t0 = time.process_time()
            lg, comp = marginal_logits(pc, x[start : start + nb])
            t1 = time.process_time()
            r = np.exp(lg - lg.max(axis=0))
            r /= r.sum(axis=0)
            t2 = time.process_time()
            completed_moments(comp, r, np.zeros(d), FULL_LEVEL)
            t_moments += time.process_time() - t2
            t_logits += t1 - t0
        print(f"{frac:.0%} missing, per 1M rows: marginal logits {t_logits / n * 1e6:.1f} s, "
              f"completed moments {t_moments / n * 1e6:.1f} s")


def passes(a):
    from daskgmm.kernels import MixtureRequest, chunk_pass, compiled
    from daskgmm.models.states import MixtureState

    print(f"kernel: {compiled.describe()}")
    rng = np.random.default_rng(0)
    n, d, k = a.rows, 16, 16
    x = rng.normal(size=(n, d)) * 2
    g = rng.standard_normal((k, d, d)) / 4
    covs = np.einsum("kij,klj->kil", g, g) + np.eye(d)
    means = rng.normal(size=(k, d))
    data = {"complete": x}
    for frac in a.missing:
        xm = x.copy()
        xm[rng.random(x.shape) < frac] = np.nan
        data[f"{frac:.0%}"] = xm
    print(f"{'covariance':>10}  " + "  ".join(f"{name:>16}" for name in data))
    for ct in a.types:
        c = {"full": covs, "tied": covs[0], "diag": np.diagonal(covs, axis1=1, axis2=2).copy(),
             "spherical": np.trace(covs, axis1=1, axis2=2) / d}[ct]
        st = MixtureState.from_covariances(np.full(k, 1 / k), means, c, ct, missing="marginalize")
        req = MixtureRequest([st.spec(np.zeros(d))])
        secs = {}
        for name, xm in data.items():
            best = np.inf
            for _ in range(a.repeats):
                t0 = time.process_time()
                chunk_pass(xm, [req], np.zeros(d), compiled=True)
                best = min(best, time.process_time() - t0)
            secs[name] = best / n * 1e6
        base = secs["complete"]
        print(f"{ct:>10}  " + "  ".join(f"{s:8.3f} s ({s / base:3.1f}x)" for s in secs.values()))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--missing", type=float, nargs="+", default=[0.2, 0.01])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--types", nargs="+", choices=TYPES, default=list(TYPES))
    ap.add_argument("--numpy-kernels", action="store_true")
    a = ap.parse_args(argv)
    threadpool_limits(1)  # as in a Dask worker thread
    if a.numpy_kernels:
        numpy_kernels(a)
    else:
        passes(a)


if __name__ == "__main__":
    main()
