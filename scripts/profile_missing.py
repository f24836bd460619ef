#!/usr/bin/env python3
"""CPU seconds per million rows of the missing-value kernels (full covariance), one thread.

Usage:  .venv/bin/python scripts/profile_missing.py [--rows 40960] [--missing 0.2]

Rows of 16 features with each entry missing with probability ``--missing``, K=16, fed to
:func:`daskgmm.kernels.missing.marginal_logits` and ``completed_moments`` in blocks of
2048 rows, as a pass does. Process CPU time, so that other jobs on a shared machine
disturb it less than wall time.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=2048 * 20)
    ap.add_argument("--missing", type=float, default=0.2)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args(argv)
    threadpool_limits(1)  # as in a Dask worker thread

    from daskgmm.kernels import covariance as cov
    from daskgmm.kernels.features import FULL_LEVEL
    from daskgmm.kernels.missing import completed_moments, marginal_logits

    rng = np.random.default_rng(0)
    n, d, k, nb = a.rows, 16, 16, 2048
    x = rng.standard_normal((n, d))
    x[rng.random((n, d)) < a.missing] = np.nan
    g = rng.standard_normal((k, d, d)) / 4
    u = cov.precisions_cholesky(np.einsum("kij,klj->kil", g, g) + np.eye(d), "full")
    pc = cov.per_component(np.full(k, 1 / k), rng.standard_normal((k, d)), u, "full", np.zeros(d))
    for _ in range(a.repeats):
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
        print(f"per 1M rows: marginal logits {t_logits / n * 1e6:.1f} s, completed moments {t_moments / n * 1e6:.1f} s")


if __name__ == "__main__":
    main()
