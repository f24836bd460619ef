"""What the benchmarks share: their cluster, the marginal cost of an iteration, the dgemm rate, the record.

Imported by the scripts beside it (``python scripts/bench_x.py`` puts this folder on the path).
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import time

import numpy as np


def write_record(res: dict, path: str) -> None:
    """Write a run's record as JSON at ``path`` (its folder made if need be), and say where."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(res, f, indent=2)
    print(f"written to {path}")


@contextlib.contextmanager
def bench_cluster(workers: int = 2, threads: int = 1, dashboard: bool = False, **kwargs):
    """A client of a fresh LocalCluster of ``workers`` processes x ``threads`` threads on 127.0.0.1 (closed after)."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=workers, threads_per_worker=threads, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0" if dashboard else None, **kwargs) as cluster, \
            Client(cluster) as client:
        yield client


def iteration_seconds(fit, iters: int, repeats: int) -> dict:
    """Seconds per iteration of a daskgmm fit as the median time from one pass's start to the next's, over
    the passes after the first two (the first scan and the first pass run as tasks): each iteration's pass,
    its merges and the client's update, without the start-up, whose time varies by more between fits than
    a k-means iteration takes (``marginal_seconds`` of 10 iterations moved by ~5 ms with it). ``fit(n)``
    fits with ``n`` iterations. Median, min (of the repeats' medians) and every repeat."""
    import daskgmm.engine.passes as engine

    run = engine.ChunkedData.run
    per = []
    for _ in range(repeats):
        starts: list = []

        def timed(self, *args, starts=starts, **kwargs):
            starts.append(time.perf_counter())
            return run(self, *args, **kwargs)

        engine.ChunkedData.run = timed
        try:
            fit(2 + iters)
        finally:
            engine.ChunkedData.run = run
        per.append(statistics.median(np.diff(starts[2:])))
    return {"per_iter": statistics.median(per), "min": min(per), "all": per, "load": os.getloadavg()[0]}


def marginal_seconds(fit, iters: int, repeats: int) -> dict:
    """Seconds per iteration as ``(t(2 + iters) - t(2)) / iters`` (start-up and the first iterations cancel):
    ``fit(n)`` fits with ``n`` iterations. Median, min and every repeat, and the load average at the end."""
    per = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fit(2)
        t2 = time.perf_counter() - t0
        t0 = time.perf_counter()
        fit(2 + iters)
        per.append((time.perf_counter() - t0 - t2) / iters)
    return {"per_iter": statistics.median(per), "min": min(per), "all": per, "load": os.getloadavg()[0]}


def gemm_rate(seconds: float = 1.5) -> float:
    """Single-threaded dgemm rate in flop/s (run in every worker at once)."""
    a = np.random.default_rng(0).standard_normal((1200, 1200))
    a @ a
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ a
        n += 1
    return n * 2 * 1200**3 / (time.perf_counter() - t0)


def precisions(init: dict, covariance_type: str, k: int, d: int) -> np.ndarray:
    """``precisions_init`` of a full-covariance start, in the shape of ``covariance_type``."""
    p = init["precisions_init"]
    diag = np.stack([np.diag(m) for m in p])
    return {"full": p, "tied": p.mean(axis=0), "diag": diag, "spherical": diag.mean(axis=1)}[covariance_type]


def _busy(seconds: float) -> None:
    a = np.ones((64, 64))
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ a


async def pass_like(plan, seconds: float, dask_worker=None):
    """A stand-in for a pass outside the task graph (``engine.passes._direct_batches``), run by a worker's ``run``
    handler: ``seconds`` of NumPy in the worker's executor thread, then a 32 KiB answer (a full-covariance
    frontier, K = D = 16). Returns (start, end) wall times and the answer. Here, not in the script, so that
    ``client.run`` pickles it by reference as it does the engine's function (a ``__main__`` function goes by
    value, which costs the worker an unpickling of code on every call)."""
    import asyncio

    start = time.time()
    await asyncio.get_running_loop().run_in_executor(dask_worker.executor, _busy, seconds)
    return start, time.time(), np.zeros((16, 16, 16))
