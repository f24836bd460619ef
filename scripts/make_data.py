#!/usr/bin/env python3
"""Write a seeded Gaussian-mixture dataset as Parquet, file by file (never all in memory).

Example:
    python scripts/make_data.py --out data/demo --rows 2000000 --features 8 --components 6

Writes DIR/part-00000.parquet ... with an ``id`` column (int64) and feature
columns ``f0 ... f{D-1}``, plus DIR/truth.json holding the true weights, means
and covariances (for checking a fit).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

import numpy as np


def mixture(n_features, n_components, seed, separation=6.0):
    """True parameters: Dirichlet weights, spread-out means, random SPD covariances."""
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(n_components, 5.0))
    means = rng.normal(scale=separation, size=(n_components, n_features))
    covs = []
    for _ in range(n_components):
        a = rng.normal(size=(n_features, n_features)) / np.sqrt(n_features)
        covs.append(a @ a.T + 0.3 * np.eye(n_features))
    return weights, means, np.array(covs)


def draw(rng, n, weights, means, chols):
    labels = rng.choice(len(weights), size=n, p=weights)
    z = rng.standard_normal((n, means.shape[1]))
    x = np.empty_like(z)
    for k in range(len(weights)):
        m = labels == k
        x[m] = means[k] + z[m] @ chols[k].T
    return x, labels


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output directory (replaced)")
    p.add_argument("--rows", type=int, default=2_000_000, help="total rows (default 2,000,000)")
    p.add_argument("--features", type=int, default=8, help="feature columns D (default 8)")
    p.add_argument("--components", type=int, default=6, help="true mixture components K (default 6)")
    p.add_argument("--files", type=int, default=None, help="Parquet files (default: one per 500k rows)")
    p.add_argument("--row-group-size", type=int, default=131072, help="rows per row group (default 131072)")
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    p.add_argument("--separation", type=float, default=6.0, help="spread of the true means")
    p.add_argument("--offset", type=float, default=0.0, help="constant added to every feature")
    p.add_argument("--scale", type=float, default=1.0, help="factor applied to every value (after --offset)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.rows < 1 or a.features < 1 or a.components < 1:
        p.error("--rows, --features and --components must be positive")

    import pyarrow as pa
    import pyarrow.parquet as pq

    weights, means, covs = mixture(a.features, a.components, a.seed, a.separation)
    means = means + a.offset
    chols = np.linalg.cholesky(covs)
    n_files = a.files or max(1, -(-a.rows // 500_000))
    tmp = a.out.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    rng = np.random.default_rng(a.seed + 1)
    start = 0
    for i in range(n_files):
        n = a.rows // n_files + (1 if i < a.rows % n_files else 0)
        x, _ = draw(rng, n, weights, means, chols)
        x *= a.scale
        cols = {"id": pa.array(np.arange(start, start + n, dtype=np.int64))}
        for j in range(a.features):
            cols[f"f{j}"] = pa.array(x[:, j].astype(a.dtype))
        pq.write_table(pa.table(cols), os.path.join(tmp, f"part-{i:05d}.parquet"), row_group_size=a.row_group_size)
        start += n
    with open(os.path.join(tmp, "truth.json"), "w") as f:
        json.dump({"weights": weights.tolist(), "means": (means * a.scale).tolist(),
                   "covariances": (covs * a.scale**2).tolist(), "rows": a.rows, "seed": a.seed}, f)
    shutil.rmtree(a.out, ignore_errors=True)
    os.rename(tmp, a.out)
    print(f"wrote {a.rows:,} rows x {a.features} features ({a.components} true components) "
          f"in {n_files} file(s) to {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
