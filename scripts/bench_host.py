#!/usr/bin/env python3
"""Two facts about the host that bound one worker against two: whether its CPUs are cores of their own,
and what distributed's upkeep takes from them.

Usage (after ``pip install -e .``; on a quiet machine, under the bench lock on a shared host):

    .venv/bin/python scripts/bench_host.py                # both
    .venv/bin/python scripts/bench_host.py --cores        # the first only

- ``--cores``: the compiled full-covariance pass, the k-means pass and NumPy's dgemm, each in a process
  pinned to CPU 0, alone and then with a twin pinned to CPU 1 at the same time (wall time over
  ``--seconds``). Two vCPUs that are one core's hyperthreads share its multiply-add units: each twin then
  runs well under its solo speed, and no second worker can give ~2x. Linux only (``sched_setaffinity``).
- ``--idle``: the CPU an idle LocalCluster of two workers (1 thread each, the command's embedded cluster's
  settings, ``engine.cluster.CLUSTER_CONFIG``) takes per second, in each worker and in this process (the
  client with the scheduler), with the event loops' tick at distributed's default (20 ms) and at the
  embedded cluster's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np


def _run_pass(what: str, seconds: float) -> str:
    """In a pinned process: run ``what`` for ``seconds`` and say how fast."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    rng = np.random.default_rng(0)
    d, k = 16, 16
    if what == "full":
        from daskgmm.kernels import MixtureRequest, chunk_pass
        from daskgmm.models.states import MixtureState

        x = rng.normal(size=(200_000, d)) * 2
        g = rng.standard_normal((k, d, d)) / 4
        covs = np.einsum("kij,klj->kil", g, g) + np.eye(d)
        st = MixtureState.from_covariances(np.full(k, 1 / k), rng.normal(size=(k, d)), covs, "full")
        req = MixtureRequest([st.spec(np.zeros(d))])

        def f():
            chunk_pass(x, [req], np.zeros(d), compiled=True)

        rows = len(x)
    elif what == "kmeans":
        from daskgmm.kernels import compiled
        from daskgmm.kernels.params import kmeans_natural_params

        kernel, block = compiled.ready(), compiled.block_rows(1)
        x = rng.normal(size=(1_000_000, d))
        centre = x.mean(axis=0)
        theta = kmeans_natural_params(x[:k] - centre).theta(0)

        def f():
            stats, per_row = np.zeros_like(theta), np.zeros((1, len(x)))
            for s in range(0, len(x), block):
                kernel.mixture_block(x[s:s + block], centre, None, theta, 0, np.array([0, k]), np.array([1]), stats,
                                     per_row[:, s:s + block], np.zeros(1))

        rows = len(x)
    else:
        a, b = rng.normal(size=(2000, 2000)), rng.normal(size=(2000, 2000))

        def f():
            a @ b

        rows = 0
    f()
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        f()
        reps += 1
    wall = time.perf_counter() - t0
    if rows:
        return f"{wall / reps / rows * 1e9:.2f} ms per 1M rows"
    return f"{2 * 2000 ** 3 * reps / wall / 1e9:.1f} GFLOP/s"


def cores(seconds: float) -> None:
    if not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2:
        print("--cores: needs Linux and two CPUs")
        return

    def start(what, cpu):
        here = os.path.dirname(os.path.abspath(__file__))
        code = (f"import os, sys; os.sched_setaffinity(0, {{{cpu}}}); sys.path.insert(0, {here!r}); "
                f"import bench_host; print(bench_host._run_pass({what!r}, {seconds}))")
        return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)

    cpus = sorted(os.sched_getaffinity(0))[:2]
    print(f"CPUs {cpus[0]} and {cpus[1]}, {seconds:g} s each:")
    for what in ("full", "kmeans", "dgemm"):
        alone = start(what, cpus[0]).communicate()[0].strip()
        pair = [start(what, c) for c in cpus]
        both = [p.communicate()[0].strip() for p in pair]
        print(f"  {what:7s} alone {alone}; with a twin on the other CPU {both[0]} and {both[1]}", flush=True)


def _cpu():
    return time.process_time()


def idle(seconds: float) -> None:
    import dask
    from distributed import Client, LocalCluster

    from daskgmm.engine.cluster import CLUSTER_CONFIG

    for tick in ("20ms", CLUSTER_CONFIG.get("distributed.admin.tick.interval", "20ms")):
        with dask.config.set({**CLUSTER_CONFIG, "distributed.admin.tick.interval": tick}):
            with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                              dashboard_address=None) as cluster, Client(cluster) as client:
                time.sleep(2)
                a, c0, w0 = client.run(_cpu), time.process_time(), time.time()
                time.sleep(seconds)
                b, c1, w1 = client.run(_cpu), time.process_time(), time.time()
        each = ", ".join(f"{100 * (b[k] - a[k]) / (w1 - w0):.2f}%" for k in sorted(a))
        print(f"  idle, tick {tick}: workers {each} of a core; the client with the scheduler "
              f"{100 * (c1 - c0) / (w1 - w0):.2f}%", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cores", action="store_true")
    ap.add_argument("--idle", action="store_true")
    ap.add_argument("--seconds", type=float, default=8.0)
    a = ap.parse_args(argv)
    both = not (a.cores or a.idle)
    print(f"load {os.getloadavg()[0]:.2f}")
    if a.cores or both:
        cores(a.seconds)
    if a.idle or both:
        idle(max(a.seconds, 10.0))
    print(f"load {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
