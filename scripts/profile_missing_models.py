#!/usr/bin/env python3
"""CPU seconds per million rows of a pass of BayesianGaussianMixture's and StudentTMixture's models over rows
with missing values, one thread.

Usage:  .venv/bin/python scripts/profile_missing_models.py [--rows 100000] [--missing 0.2 0.01] [--repeats 3]
                                                          [--types full diag] [--gaussian] [--t-numpy] [--float32]

Rows of 16 features (K=16) with each entry missing with probability ``--missing``, folded by
``chunk_pass`` as a worker does (``compiled=True``: the passes run in the compiled core where it is
built), against the same rows without NaN, for every covariance type; the best of ``--repeats``,
process CPU time. ``--gaussian`` adds GaussianMixture's pass (the reference cost), ``--t-numpy`` the
t mixture's pass on the NumPy path (``compiled=False``), beside the compiled one; ``--float32`` passes
float32 rows (the models' parameters as for float64). The companion of
``scripts/profile_missing.py`` (the Gaussian mixture's pass).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

TYPES = ("full", "tied", "diag", "spherical")


def _states(ct, k, d, rng):
    from daskgmm.kernels import covariance as cov
    from daskgmm.kernels.results import SuffStats
    from daskgmm.models.studentt import StudentTState
    from daskgmm.models.variational import VariationalState

    g = rng.standard_normal((k, d, d)) / 4
    covs = np.einsum("kij,klj->kil", g, g) + np.eye(d)
    means = rng.normal(size=(k, d))
    c = {"full": covs, "tied": covs[0], "diag": np.diagonal(covs, axis1=1, axis2=2).copy(),
         "spherical": np.trace(covs, axis1=1, axis2=2) / d}[ct]
    t = StudentTState.from_covariances(np.full(k, 1 / k), means, c, ct, 5.0, missing="marginalize")
    # a variational posterior with these means and scales: the statistics of 1000 rows per component
    nk = np.full(k, 1000.0)
    full = np.stack([cov.component_covariance(c, ct, j, d) for j in range(k)])
    s2 = nk[:, None, None] * (full + np.einsum("ki,kj->kij", means, means))
    s2 = {"full": s2, "tied": s2.sum(axis=0), "diag": np.diagonal(s2, axis1=1, axis2=2).copy(),
          "spherical": np.trace(s2, axis1=1, axis2=2)}[ct]
    stats = SuffStats(n=nk, s1=nk[:, None] * means, s2=s2, loglik=0.0, weight=nk.sum(), rows=int(nk.sum()),
                      shift=np.zeros(d), covariance_type=ct)
    cp = {"full": np.eye(d), "tied": np.eye(d), "diag": np.ones(d), "spherical": np.asarray(1.0)}[ct]
    v = VariationalState.from_stats(stats, covariance_type=ct, prior_type="dirichlet_process",
                                    weight_concentration_prior=1 / k, mean_precision_prior=1.0,
                                    mean_prior=np.zeros(d), degrees_of_freedom_prior=float(d), covariance_prior=cp,
                                    missing="marginalize")
    from daskgmm.models.states import MixtureState

    gm = MixtureState.from_covariances(np.full(k, 1 / k), means, c, ct, missing="marginalize")
    return {"gaussian": gm, "variational": v, "student-t": t}


def main(argv=None):
    from daskgmm.kernels import MixtureRequest, chunk_pass, compiled
    from daskgmm.kernels.studentt import StudentTRequest

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--missing", type=float, nargs="+", default=[0.2, 0.01])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--types", nargs="+", default=list(TYPES), choices=TYPES)
    ap.add_argument("--gaussian", action="store_true", help="also GaussianMixture's pass")
    ap.add_argument("--t-numpy", action="store_true", help="also the t mixture's pass on the NumPy path")
    ap.add_argument("--float32", action="store_true", help="float32 rows")
    a = ap.parse_args(argv)
    threadpool_limits(1)  # as in a Dask worker thread
    print(f"kernel: {compiled.describe()}; {a.rows} rows x 16 {'float32' if a.float32 else 'float64'}, K=16; "
          "CPU s per 1M rows (ratio to complete rows)")
    rng = np.random.default_rng(0)
    n, d, k = a.rows, 16, 16
    x = rng.normal(size=(n, d)) * 2
    if a.float32:
        x = x.astype(np.float32)
    data = {"complete": x}
    for frac in a.missing:
        xm = x.copy()
        xm[rng.random(x.shape) < frac] = np.nan
        data[f"{frac:.0%}"] = xm
    print(f"{'model':>15} {'covariance':>10}  " + "  ".join(f"{name:>16}" for name in data))
    for ct in a.types:
        runs = []
        for kind, st in _states(ct, k, d, np.random.default_rng(1)).items():
            if kind == "gaussian" and not a.gaussian:
                continue
            if kind == "student-t" and a.t_numpy:
                runs.append(("student-t numpy", st, False))
            runs.append((kind, st, True))
        for kind, st, use_core in runs:
            spec = st.spec(np.zeros(d))
            req = StudentTRequest([spec]) if kind.startswith("student-t") else MixtureRequest([spec])
            secs = {}
            for name, xm in data.items():
                best = np.inf
                for _ in range(a.repeats):
                    t0 = time.process_time()
                    chunk_pass(xm, [req], np.zeros(d), compiled=use_core)
                    best = min(best, time.process_time() - t0)
                secs[name] = best / n * 1e6
            base = secs["complete"]
            print(f"{kind:>15} {ct:>10}  " + "  ".join(f"{s:8.3f} s ({s / base:4.1f}x)" for s in secs.values()),
                  flush=True)


if __name__ == "__main__":
    main()
