#!/usr/bin/env python3
"""What the data's scale and dtype cost the compiled core: one thread, each variant this CPU runs.

Usage (after ``scripts/test`` or ``pip install -e .``):

    .venv/bin/python scripts/profile_scale.py [--rows 500000] [--scales 1,0.1,0.01] [--variants avx512,avx2]

Seeded blobs (``--rows`` x 16, 16 clusters well apart) times each ``--scales`` factor, and a k-means model and
Gaussian mixtures of every feature level (full, diag, spherical; K = 16, fitted by scikit-learn on the scaled
rows) folded block by block through ``compiled.Fused`` in float64 and in float32, as a worker's pass does.
Prints CPU milliseconds per million rows (the best of ``--repeats``) and the float32 speed-up.

A pass's cost should not depend on the scale: the soft passes' responsibilities near the exp floor times small
features are subnormal, and on Intel CPUs each subnormal result took a microcode assist (the full pass at scale
0.01 839 against 229 ms per 1M rows before the core flushed them in soft passes; docs/performance.md,
twenty-third round). Hard passes keep subnormals (k-means on tiny rows), so k-means at a tiny scale may still
slow down there.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from threadpoolctl import threadpool_limits


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=500_000)
    ap.add_argument("--scales", default="1,0.1,0.01")
    ap.add_argument("--variants", default="", help="comma-separated (default: every variant this CPU runs)")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    threadpool_limits(1)  # as in a Dask worker thread
    from sklearn.mixture import GaussianMixture

    from daskgmm.kernels import compiled
    from daskgmm.kernels import params as forms

    names = a.variants.split(",") if a.variants else [
        n for n in compiled.variant_names() if compiled.load_variant(n) is not None]
    if not names:
        raise SystemExit(f"no compiled core to profile here: {compiled.describe()}")
    n, d, k = a.rows, 16, 16
    rng = np.random.default_rng(0)
    base = rng.standard_normal((n, d)) + 3 * rng.integers(0, k, size=(n, 1))
    pick = rng.choice(n, k, replace=False)

    def best(kernel, theta, level, mode, x, centre):
        times = []
        for _ in range(a.repeats):
            fused = compiled.Fused(kernel, theta, np.array([0, k]), np.array([mode]), level, centre)
            per_row = np.zeros((1, compiled.block_rows(1)))
            t0 = time.thread_time()
            for i in range(0, len(x), compiled.block_rows(1)):
                b = x[i : i + compiled.block_rows(1)]
                fused.update(b, None, per_row[:, : len(b)])
            times.append(time.thread_time() - t0)
        return 1e3 * min(times) * 1e6 / n

    print(f"{n:,} rows x {d}, K = {k}, one thread; CPU ms per 1M rows, float64 / float32 (float32's speed-up)")
    for scale in (float(s) for s in a.scales.split(",")):
        x = base * scale
        x32 = x.astype(np.float32)
        centre = x[:1000].mean(axis=0)
        models = {"k-means": (forms.kmeans_natural_params(x[pick] - centre), 0, compiled.HARD)}
        for ct in ("full", "diag", "spherical"):
            g = GaussianMixture(k, covariance_type=ct, max_iter=2, random_state=0).fit(x[:20000])
            nat = forms.natural_params(g.weights_, g.means_, g.precisions_cholesky_, ct, centre)
            models[ct] = (nat, nat.level, 0)
        for name in names:
            kernel = compiled.load_variant(name)
            row = []
            for m, (nat, level, mode) in models.items():
                t64 = best(kernel, nat.theta(level, np.float64), level, mode, x, centre)
                t32 = best(kernel, nat.theta(level, np.float32), level, mode, x32, centre)
                row.append(f"{m} {t64:.1f}/{t32:.1f} ({t64 / t32:.2f}x)")
            print(f"scale {scale:g}, {name}: " + " | ".join(row), flush=True)


if __name__ == "__main__":
    main()
