#!/usr/bin/env python3
"""KMeans on sparse rows (TF-IDF-like): daskgmm on a LocalCluster against scikit-learn's sparse Lloyd, in one run.

    .venv/bin/python scripts/bench_sparse.py                      # 1,000,000 x 100,000, ~100 non-zeros a row, K=64
    .venv/bin/python scripts/bench_sparse.py --rows 100000        # a tenth
    .venv/bin/python scripts/bench_sparse.py --parquet /tmp/tfidf  # also out of core, re-read from Parquet each pass

The rows are generated in the workers, chunk by chunk from a seed (each chunk the same
whatever runs it): every row belongs to one of ``--topics`` topics and draws half its
words from its topic's block of the vocabulary and half from a Zipf law over all of it
(so that a few columns are in most rows, as in text), with ``idf``-like weights and unit
L2 norm, as ``TfidfVectorizer`` gives. The same rows are gathered into one CSR matrix in
this process for scikit-learn.

Both fit ``--clusters`` centres from the same starting centres (rows of the data) with
``tol=0``. Per iteration: daskgmm's seconds per Lloyd pass (its ``history_``, median of
the iterations after the first), on ``--workers`` worker processes of one thread with the
data in their memory; scikit-learn's marginal cost, ``(t(1 + m) - t(1)) / m`` of
``KMeans(init=..., n_init=1, max_iter=...)`` fits, with ``--workers`` OpenMP threads (in this
process, the workers idle). Then daskgmm's default fit (``k-means||`` initialisation, Lloyd to
``tol=1e-4``) for the whole
time, with the initialisation's parts timed (the pass drawing the sample, k-means++ and Lloyd on
the sample on the client: the script wraps those functions of ``daskgmm.em.init`` to time them; the
rest outside the Lloyd passes is the first scan and the pass measuring the final centres). With
``--parquet DIR``, the workers also write the rows to ``DIR`` in daskgmm's sparse Parquet layout
(one file per chunk), and the timed Lloyd iterations run again out of core
(``read_sparse_parquet``, ``cache="none"``: every pass reads the files). Prints a JSON line
after each part, the summary last.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings

import numpy as np
from benchlib import bench_cluster


def make_chunk(index, rows, n_features, nnz, topics, seed):
    """Rows ``[index * rows, (index + 1) * rows)`` of the dataset as a ``csr_array`` (float64, rows of unit norm)."""
    import scipy.sparse as sp

    rng = np.random.default_rng([seed, index])
    topic = rng.integers(topics, size=rows)
    per_row = np.maximum(1, rng.poisson(nnz, size=rows))
    total = int(per_row.sum())
    owner = np.repeat(topic, per_row)
    block = n_features // topics
    # half the words from the topic's block, half from a Zipf law (s=1) over the whole vocabulary
    from_topic = rng.random(total) < 0.5
    zipf = np.minimum(np.floor(np.exp(rng.random(total) * math.log(n_features + 1))) - 1, n_features - 1)
    perm = np.random.default_rng(seed).permutation(n_features)  # the same vocabulary blocks in every chunk
    cols = np.where(from_topic, perm[owner * block + rng.integers(block, size=total)], zipf).astype(np.int32)
    idf = np.log((n_features + 1) / (cols + 1.0)) + 1.0
    x = sp.csr_array((idf, cols, np.concatenate([[0], np.cumsum(per_row)])), shape=(rows, n_features))
    x.sum_duplicates()
    norms = np.sqrt(np.add.reduceat(x.data**2, x.indptr[:-1])) if x.nnz else np.ones(rows)
    x.data /= np.repeat(norms, np.diff(x.indptr))
    return x


def dataset(n_rows, n_features, nnz, topics, seed, chunk_rows):
    import dask
    import dask.array as da
    import scipy.sparse as sp

    n_chunks = -(-n_rows // chunk_rows)
    sizes = [min(chunk_rows, n_rows - i * chunk_rows) for i in range(n_chunks)]
    parts = [da.from_delayed(dask.delayed(make_chunk)(i, r, n_features, nnz, topics, seed), shape=(r, n_features),
                             dtype=np.float64, meta=sp.csr_array((0, n_features)))
             for i, r in enumerate(sizes)]
    return da.concatenate(parts, axis=0)


def write_chunk(x, path):
    from daskgmm import write_sparse_parquet

    write_sparse_parquet(x, path)
    return x.nnz


#: What :class:`Timers` times: the whole initialisation, and its parts.
TIMED = {"init": ("daskgmm.fitting.kmeans", "lloyd_starts"), "sample_pass": ("daskgmm.em.init", "random_rows"),
         "kmeans++": ("daskgmm.em.init", "_local_kmeanspp"), "lloyd": ("daskgmm.em.init", "_local_lloyd")}


class Timers:
    """Seconds spent in the functions of ``TIMED`` (wrapped while timing)."""

    def __enter__(self):
        import importlib

        self.seconds = dict.fromkeys(TIMED, 0.0)
        self.saved = []
        for key, (mod, name) in TIMED.items():
            m = importlib.import_module(mod)
            f = getattr(m, name)
            self.saved.append((m, name, f))
            setattr(m, name, self._timed(key, f))
        return self

    def _timed(self, key, f):
        def timed(*args, **kwargs):
            t = time.perf_counter()
            try:
                return f(*args, **kwargs)
            finally:
                self.seconds[key] += time.perf_counter() - t
        return timed

    def __exit__(self, *exc):
        for m, name, f in self.saved:
            setattr(m, name, f)


def sklearn_per_iteration(X, start, extra, threads):
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    times = {}
    with threadpool_limits(threads):
        for iters in (1, 1 + extra):
            t = time.perf_counter()
            km = KMeans(len(start), init=start, n_init=1, max_iter=iters, tol=0.0, algorithm="lloyd").fit(X)
            times[iters] = time.perf_counter() - t
            assert km.n_iter_ == iters, km.n_iter_
    return (times[1 + extra] - times[1]) / extra, km


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--features", type=int, default=100_000)
    p.add_argument("--nnz", type=int, default=100, help="mean non-zeros per row")
    p.add_argument("--clusters", type=int, default=64)
    p.add_argument("--topics", type=int, default=64)
    p.add_argument("--iters", type=int, default=5, help="Lloyd iterations timed")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--memory-limit", default="4GiB")
    p.add_argument("--chunk-rows", type=int, default=50_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-sklearn", action="store_true")
    p.add_argument("--no-default-fit", action="store_true", help="skip the default fit (Lloyd to tol=1e-4)")
    p.add_argument("--parquet", metavar="DIR", help="also write the rows there and time Lloyd out of core")
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")

    import os

    import dask
    import scipy.sparse as sp

    from daskgmm import KMeans, read_sparse_parquet

    out = {"rows": args.rows, "features": args.features, "clusters": args.clusters, "workers": args.workers,
           "load_start": os.getloadavg()}
    with bench_cluster(args.workers, memory_limit=args.memory_limit) as client:
        X = client.persist(dataset(args.rows, args.features, args.nnz, args.topics, args.seed, args.chunk_rows))
        t = time.perf_counter()
        nnz = sum(dask.compute(*[dask.delayed(lambda b: b.nnz)(b) for b in X.to_delayed().ravel()]))
        out["nnz"] = int(nnz)
        out["generate_seconds"] = time.perf_counter() - t
        print(f"data: {args.rows} x {args.features}, {nnz / args.rows:.1f} non-zeros a row "
              f"({nnz * 12 / 2**20:.0f} MiB as CSR), {len(X.chunks[0])} chunks", flush=True)
        rng = np.random.default_rng(args.seed)
        rows = np.sort(rng.choice(args.rows, args.clusters, replace=False))
        start = sp.vstack([X[int(r) : int(r) + 1].compute() for r in rows]).toarray()

        km = KMeans(args.clusters, init=start, n_init=1, max_iter=1 + args.iters, tol=0.0, cache="memory").fit(X)
        per_pass = [h["seconds"] for h in km.history_]
        out["daskgmm_iteration_seconds"] = float(np.median(per_pass[1:]))
        out["daskgmm_iterations"] = per_pass
        print(f"daskgmm: Lloyd iteration {out['daskgmm_iteration_seconds']:.3f} s (median of {len(per_pass) - 1}; "
              f"all: {', '.join(f'{s:.3f}' for s in per_pass)})", flush=True)
        print(json.dumps(out), flush=True)
        if not args.no_sklearn:
            # in this process while the workers idle (they keep the data for the default fit below)
            local = sp.vstack(dask.compute(*X.to_delayed().ravel()), format="csr")
            # scikit-learn takes 32-bit indices only (vstack may give 64-bit ones)
            idx = np.int32 if local.nnz < 2**31 else np.int64
            local = sp.csr_matrix((local.data, local.indices.astype(idx), local.indptr.astype(idx)),
                                  shape=local.shape)
            sec, sk = sklearn_per_iteration(local, start, args.iters, args.workers)
            del local
            out["sklearn_iteration_seconds"] = sec
            out["speedup"] = sec / out["daskgmm_iteration_seconds"]
            same = args.iters + 1 == sk.n_iter_
            diff = float(np.abs(sk.cluster_centers_ - km.cluster_centers_).max()) if same else None
            out["max_center_difference"] = diff
            print(f"scikit-learn (sparse Lloyd, {args.workers} threads): {sec:.3f} s per iteration; daskgmm "
                  f"{out['speedup']:.2f}x; same centres after {sk.n_iter_} iterations to {diff:.1e}", flush=True)
            print(json.dumps(out), flush=True)
        if args.parquet:
            os.makedirs(args.parquet, exist_ok=True)
            t = time.perf_counter()
            parts = X.to_delayed().ravel()
            dask.compute(*[dask.delayed(write_chunk)(b, os.path.join(args.parquet, f"part-{i:05d}.parquet"))
                           for i, b in enumerate(parts)])
            out["parquet_write_seconds"] = time.perf_counter() - t
            out["parquet_bytes"] = sum(os.path.getsize(os.path.join(args.parquet, f)) for f in os.listdir(args.parquet))
            Xp = read_sparse_parquet(args.parquet)
            ooc = KMeans(args.clusters, init=start, n_init=1, max_iter=1 + args.iters, tol=0.0, cache="none").fit(Xp)
            per_pass = [h["seconds"] for h in ooc.history_]
            out["parquet_iteration_seconds"] = float(np.median(per_pass[1:]))
            out["parquet_iterations"] = per_pass
            out["parquet_max_center_difference"] = float(np.abs(ooc.cluster_centers_ - km.cluster_centers_).max())
            print(f"daskgmm out of core (Parquet, {out['parquet_bytes'] / 2**20:.0f} MiB in {len(parts)} files, "
                  f"re-read every pass): Lloyd iteration {out['parquet_iteration_seconds']:.3f} s; the same "
                  f"centres to {out['parquet_max_center_difference']:.1e}", flush=True)
            print(json.dumps(out), flush=True)
        if not args.no_default_fit:
            t = time.perf_counter()
            with Timers() as timers:
                default = KMeans(args.clusters, random_state=args.seed, cache="memory").fit(X)
            out["daskgmm_default_fit_seconds"] = time.perf_counter() - t
            out["daskgmm_default_init_parts"] = timers.seconds
            out["daskgmm_default_fit_iterations"] = int(default.n_iter_)
            out["daskgmm_default_inertia"] = float(default.inertia_)
            out["daskgmm_default_init_seconds"] = out["daskgmm_default_fit_seconds"] - sum(
                h["seconds"] for h in default.history_)
            print(f"daskgmm default fit (k-means|| init, Lloyd to tol=1e-4): "
                  f"{out['daskgmm_default_fit_seconds']:.1f} s, "
                  f"{default.n_iter_} iterations, inertia {default.inertia_:.1f} (all but "
                  f"{out['daskgmm_default_init_seconds']:.1f} s in the Lloyd passes; the initialisation "
                  f"{timers.seconds['init']:.1f} s: sample pass {timers.seconds['sample_pass']:.1f}, k-means++ "
                  f"{timers.seconds['kmeans++']:.1f}, Lloyd on the sample {timers.seconds['lloyd']:.1f})", flush=True)
    out["load_end"] = os.getloadavg()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
