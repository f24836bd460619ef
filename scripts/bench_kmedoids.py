#!/usr/bin/env python3
"""KMedoids against FasterPAM (the kmedoids package), and out of core at growing N.

    python scripts/bench_kmedoids.py peers --rows 20000 [--data blobs|gauss]
        daskgmm.KMedoids (both methods) and kmedoids.fasterpam on the same rows: loss ratio and seconds
        per metric. FasterPAM needs the N x N matrix (float32 here: 1.6 GB at 20,000 rows).
        Needs `pip install kmedoids` (GPL-3.0; a test extra here, never a dependency).

    python scripts/bench_kmedoids.py scale --rows 2000000,4000000 --dir /tmp/kmb
        Writes each size as Parquet (scripts/make_data.py), fits KMedoids on daskgmm.read_parquet(...)
        with cache="none" (every pass re-reads the files: memory bounded by a few chunks per worker)
        on a LocalCluster, and prints seconds, passes and seconds per pass per million rows.

Prints one JSON line per case.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
from benchlib import bench_cluster

HERE = os.path.dirname(os.path.abspath(__file__))


def blobs(n, d, k, seed):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 3
    return centres[rng.integers(k, size=n)] + rng.normal(size=(n, d))


def peers(args) -> None:
    import kmedoids
    from sklearn.metrics import pairwise_distances

    from daskgmm import KMedoids

    X = (blobs(args.rows, args.features, args.k, args.seed) if args.data == "blobs"
         else np.random.default_rng(args.seed).normal(size=(args.rows, args.features)))
    for metric in args.metrics.split(","):
        t0 = time.perf_counter()
        diss = pairwise_distances(X, metric=metric).astype(np.float32)
        ref = kmedoids.fasterpam(diss, args.k, random_state=args.seed, n_cpu=1)
        ref_seconds = time.perf_counter() - t0
        del diss
        # the package's loss is summed in float32 distances: take it again in float64
        ref_loss = float(pairwise_distances(X, X[np.asarray(ref.medoids)], metric=metric).min(axis=1).sum())
        for method in ("alternate", "pam"):
            t0 = time.perf_counter()
            km = KMedoids(args.k, metric=metric, method=method, random_state=args.seed).fit(X)
            seconds = time.perf_counter() - t0
            print(json.dumps({"case": "peers", "data": args.data, "rows": args.rows, "features": args.features,
                              "k": args.k, "metric": metric, "method": method, "inertia": km.inertia_,
                              "fasterpam_loss": ref_loss,
                              "ratio": km.inertia_ / ref_loss, "seconds": round(seconds, 2),
                              "fasterpam_seconds": round(ref_seconds, 2), "passes": km.n_passes_,
                              "n_iter": km.n_iter_}), flush=True)


def scale(args) -> None:
    import daskgmm
    from daskgmm import KMedoids

    with bench_cluster(args.workers, memory_limit=args.memory_limit):
        for n in (int(v) for v in args.rows.split(",")):
            path = os.path.join(args.dir, f"rows-{n}")
            if not os.path.exists(os.path.join(path, "truth.json")):
                subprocess.run([sys.executable, os.path.join(HERE, "make_data.py"), "--out", path, "--rows",
                                str(n), "--features", str(args.features), "--components", str(args.k),
                                "--seed", str(args.seed)], check=True, stdout=subprocess.DEVNULL)
            X = daskgmm.read_parquet(path, columns=[f"f{j}" for j in range(args.features)])
            t0 = time.perf_counter()
            km = KMedoids(args.k, metric=args.metric, method=args.method, random_state=args.seed,
                          cache="none").fit(X)
            seconds = time.perf_counter() - t0
            loop = sum(h["seconds"] for h in km.history_)
            print(json.dumps({
                "case": "scale", "rows": n, "features": args.features, "k": args.k, "metric": args.metric,
                "method": args.method, "workers": args.workers, "memory_limit": args.memory_limit,
                "seconds": round(seconds, 2), "passes": km.n_passes_, "n_iter": km.n_iter_,
                "loop_seconds": round(loop, 2),
                "seconds_per_pass_per_million_rows": round(loop / max(1, km.n_iter_) / (n / 1e6), 3),
                "inertia": km.inertia_}), flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    a = sub.add_parser("peers")
    a.add_argument("--rows", type=int, default=20000)
    a.add_argument("--metrics", default="euclidean,manhattan,cosine")
    a.add_argument("--data", default="blobs", choices=("blobs", "gauss"),
                   help="8 well-separated blobs, or one standard normal cloud (no clusters: harder for local search)")
    b = sub.add_parser("scale")
    b.add_argument("--rows", default="2000000,4000000", help="comma-separated sizes")
    b.add_argument("--dir", required=True, help="where the Parquet datasets are written (and reused)")
    b.add_argument("--metric", default="euclidean")
    b.add_argument("--method", default="alternate", choices=("alternate", "pam"))
    b.add_argument("--workers", type=int, default=2)
    b.add_argument("--memory-limit", default="1GiB")
    for q in (a, b):
        q.add_argument("--features", type=int, default=8)
        q.add_argument("--k", type=int, default=8)
        q.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    peers(args) if args.what == "peers" else scale(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
