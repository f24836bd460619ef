#!/usr/bin/env python3
"""Where one iteration's wall time goes on the cluster: the kernel, and everything around it.

Usage (after ``scripts/test`` or ``pip install -e .``):

    .venv/bin/python scripts/profile_pass.py                       # 1M x 16, K = 16, 2 workers x 1 thread
    .venv/bin/python scripts/profile_pass.py --cases kmeans,full --n-init 1,8 --workers 2

For each case (``kmeans``: Lloyd, hard spherical; ``full``, ``diag``, ``spherical``:
soft EM) and each number of models in lockstep, runs ``--iters`` iterations of the
lockstep loop (``daskgmm.em.loop.one_pass`` then every model's update, as
``daskgmm.em.loop.lockstep`` does) on seeded blobs persisted on a LocalCluster, and prints,
per iteration (median over the iterations, milliseconds):

- ``wall``: the whole iteration, as the loop sees it;
- ``client pre``: building the specs, requests and plan and submitting the tasks;
- ``dispatch``: from the last submit (or ``client.run`` call) to the first batch starting to
  compute on a worker;
- ``compute``: from the first start to the last stop of any batch (the critical path on
  the workers); ``work``: the sum of the batches' times (both workers), and their CPU time;
  ``imbalance``: the difference between the workers' compute times (and their CPU times, which
  other jobs on the machine do not stretch);
- ``notify``: from the last batch's stop to the client's wait (or ``client.run``) returning;
- ``gather``: fetching the results; ``merge``: the client's last merges;
- ``update``: every model's objective, M-step and convergence test on the client;
- CPU per iteration: the client's main thread (``time.thread_time``), the client
  process's other threads (its event loop and, with a LocalCluster, the scheduler:
  ``time.process_time`` less the main thread), and the worker processes' CPU
  (``time.process_time`` in each) outside the batches;
- the batches per pass and the bytes of one pass's plan pickled;
- for passes outside the task graph, where ``dispatch`` and ``notify`` go: from the call to the
  last worker's handler starting (``to the workers``), from there to the first batch starting
  (``in the worker to its thread``), from the last batch's end to the last handler returning,
  and from there to the client.

``--sklearn ITERS`` times scikit-learn's Lloyd iteration in the same run (this process, its
threads), before and after the clusters, as ``scripts/bench_kmeans.py`` does.

Times of the work come from the workers: the engine's batch function (which both paths run)
is wrapped in each worker to record its start, stop and thread CPU time; every process runs
on this machine, so their clocks agree. ``--paths tasks,direct`` profiles both ways a pass
over placed chunks runs (as tasks through the scheduler, or outside the task graph by
``client.run``: ``ChunkedData.direct``), an iteration of each in turn on the same cluster
and data, so that a load that comes and goes falls on both.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import time
import warnings

import numpy as np
from benchlib import bench_cluster


def _worker_cpu():
    import threading

    return time.process_time(), threading.active_count()


def _record_batches():
    """In a worker: wrap the engine's batch function (tasks and direct passes both call it) to record
    each call's (start, stop, worker, thread CPU seconds)."""
    import threading

    import daskgmm.engine.passes as engine

    if getattr(engine, "_profile_calls", None) is not None:
        return
    engine._profile_calls = calls = []
    inner = engine._batch_task
    pid = os.getpid()

    def recorded(*args, **kwargs):
        t0, c0 = time.time(), time.thread_time()
        try:
            return inner(*args, **kwargs)
        finally:
            calls.append((t0, time.time(), pid, time.thread_time() - c0, threading.get_ident()))

    engine._batch_task = recorded
    # a direct pass: when the worker's handler of ``client.run`` starts and ends (the calls that carry a plan)
    engine._profile_runs = runs = []
    run_inner = engine._direct_batches

    async def run_recorded(*args, dask_worker=None, **kwargs):
        t0 = time.time()
        try:
            return await run_inner(*args, dask_worker=dask_worker, **kwargs)
        finally:
            runs.append((t0, time.time(), pid))

    engine._direct_batches = run_recorded


def _recorded_batches():
    import daskgmm.engine.passes as engine

    out = list(engine._profile_calls), list(engine._profile_runs)
    engine._profile_calls.clear()
    engine._profile_runs.clear()
    return out


class Probe:
    """Times the steps of ``ChunkedData.run`` by wrapping the engine's waits and gathers."""

    def __init__(self, engine, client):
        self.marks = {}
        self.engine = engine
        self.client = client
        self._wait = engine.wait_bounded
        self._gather = client.gather
        self._run = engine._run_on_workers
        self._sync = client.sync
        self._ship = engine.ChunkedData._ship
        self.plan_bytes = 0
        probe = self

        def wait(*args, **kwargs):
            probe.marks.setdefault("submitted", time.time())
            out = probe._wait(*args, **kwargs)
            probe.marks["waited"] = time.time()
            return out

        def gather(*args, **kwargs):
            out = probe._gather(*args, **kwargs)
            probe.marks["gathered"] = time.time()
            return out

        def ship(data, plan):
            if probe.plan_bytes:  # measured once: pickling it again would be counted in the pass
                return probe._ship(data, plan)
            buffers: list = []
            size = len(pickle.dumps(plan, protocol=5, buffer_callback=buffers.append))
            probe.plan_bytes = size + sum(b.raw().nbytes for b in buffers)
            return probe._ship(data, plan)

        async def run(*args, **kwargs):  # a direct pass's call of the workers: done when the engine has it
            probe.marks.setdefault("submitted", time.time())
            try:
                return await probe._run(*args, **kwargs)
            finally:
                probe.marks["waited"] = time.time()

        def sync(*args, **kwargs):  # the engine's direct pass is one call of it: returned when the main thread has it
            out = probe._sync(*args, **kwargs)
            if not kwargs.get("asynchronous"):
                probe.marks["waited"] = time.time()
            return out

        from daskgmm.engine.channel import Channel

        self._call = Channel.call

        def call(*args, **kwargs):  # a direct pass over its channel: the main thread sends and waits
            probe.marks.setdefault("submitted", time.time())
            try:
                return probe._call(*args, **kwargs)
            finally:
                probe.marks["waited"] = time.time()

        engine.wait_bounded = wait
        client.gather = gather
        engine._run_on_workers = run
        client.sync = sync
        engine.ChunkedData._ship = ship
        Channel.call = call

    def close(self):
        self.engine.wait_bounded = self._wait
        self.client.gather = self._gather
        self.engine._run_on_workers = self._run
        self.client.sync = self._sync
        self.engine.ChunkedData._ship = self._ship
        from daskgmm.engine.channel import Channel

        Channel.call = self._call


def _states(case, k, starts, X, tol=0.0):
    from daskgmm.models.states import KMeansState, MixtureState

    if case == "kmeans":
        return [KMeansState(np.asarray(c, np.float64), tol=tol) for c in starts]
    out = []
    for c in starts:
        d2 = ((X[:20000, None, :] - c[None]) ** 2).sum(axis=2)
        lab = d2.argmin(axis=1)
        w = np.bincount(lab, minlength=k) + 1.0
        means = np.asarray(c, np.float64)
        v = X[:20000].var(axis=0)
        covs = {"full": np.broadcast_to(np.diag(v), (k, len(v), len(v))).copy(),
                "diag": np.broadcast_to(v, (k, len(v))).copy(),
                "spherical": np.full(k, v.mean())}[case]
        out.append(MixtureState.from_covariances(w / w.sum(), means, covs, case, tol=tol))
    return out


def _use(data, path):
    """Passes over the placed chunks as tasks, or outside the task graph: over the pass's channel
    (``direct``), or through ``client.run`` (``run``)."""
    import daskgmm.engine.passes as engine

    data.direct = path in ("direct", "run")
    engine.CHANNEL = path == "direct"


def profile(client, data, case, k, n_models, iters, X, paths):
    """Iterations of every path in turn (A B A B ...: a load that changes meanwhile falls on both),
    each path advancing its own copy of the same models; one summary per path."""
    import daskgmm.engine.passes as engine
    from daskgmm.em.loop import one_pass

    rng = np.random.default_rng(0)
    starts = [X[rng.choice(len(X), k, replace=False)] for _ in range(n_models)]
    states = {path: _states(case, k, starts, X) for path in paths}
    centre = data.scan().mean
    client.run(_record_batches)
    for path in paths:  # warm: imports, the compiled core, caches
        _use(data, path)
        one_pass(data, states[path], centre)
        assert data.direct == (path in ("direct", "run"))
    client.run(_recorded_batches)
    probe = Probe(engine, client)
    rows: dict = {path: [] for path in paths}
    try:
        for _ in range(iters):
            for path in paths:
                _use(data, path)
                w0 = client.run(_worker_cpu)
                probe.marks = {}
                c0, m0 = time.process_time(), time.thread_time()
                a = time.time()
                stats = one_pass(data, states[path], centre)
                e = time.time()
                new = []
                for st, stat in zip(states[path], stats):
                    st.objective(stat)
                    n = st.update(stat)
                    st.converged(n, 0.0)
                    new.append(n)
                states[path] = new
                f = time.time()
                c1, m1 = time.process_time(), time.thread_time()
                marks = dict(probe.marks)
                w1 = client.run(_worker_cpu)
                assert data.direct == (path in ("direct", "run")), "a direct pass fell back to tasks"
                rows[path].append(dict(marks, start=a, passed=e, updated=f, client=c1 - c0, main=m1 - m0,
                                       workers={wk: w1[wk][0] - w0[wk][0] for wk in w1}))
        got = client.run(_recorded_batches).values()
        calls = [c for g in got for c in g[0]]
        runs = [c for g in got for c in g[1]]
    finally:
        probe.close()
    return [_summary(path, rows[path], calls, runs, case, n_models, probe.plan_bytes) for path in paths]


def _summary(path, rows, calls, runs, case, n_models, plan_bytes):
    per = []
    for r in rows:
        comp = [c for c in calls if r["start"] <= c[0] <= r["updated"]]
        first, last = min(c[0] for c in comp), max(c[1] for c in comp)
        # direct passes: the last worker's handler starting, the last one returning (0 for tasks)
        handled = [c for c in runs if r["start"] <= c[0] <= r["updated"]]
        arrive = max((c[0] for c in handled), default=r["submitted"])
        leave = max((c[1] for c in handled), default=last)
        by_worker: dict = {}
        cpu_by_worker: dict = {}
        for s0, s1, wk, cpu, _ in comp:
            by_worker[wk] = by_worker.get(wk, 0.0) + (s1 - s0)
            cpu_by_worker[wk] = cpu_by_worker.get(wk, 0.0) + cpu
        work_cpu = sum(c[3] for c in comp)
        per.append({
            "wall": r["updated"] - r["start"],
            "client pre": r["submitted"] - r["start"],
            "dispatch": first - r["submitted"],
            "compute": last - first,
            "work": sum(by_worker.values()),
            "work cpu": work_cpu,
            "imbalance": (max(by_worker.values()) - min(by_worker.values())) if len(by_worker) > 1 else 0.0,
            # the same in the batches' CPU time, which other jobs on the machine do not stretch
            "imbalance cpu": (max(cpu_by_worker.values()) - min(cpu_by_worker.values())) if len(by_worker) > 1 else 0.0,
            "notify": r["waited"] - last,
            "to workers": arrive - r["submitted"],
            "worker to thread": max(0.0, first - arrive) if handled else 0.0,
            "thread to reply": leave - last if handled else 0.0,
            "reply to client": r["waited"] - leave if handled else 0.0,
            "gather": r.get("gathered", r["waited"]) - r["waited"],
            "merge": r["passed"] - r.get("gathered", r["waited"]),
            "update": r["updated"] - r["passed"],
            "batches": len(comp),
            "client main cpu": r["main"],
            "client other cpu": r["client"] - r["main"],
            "workers cpu outside batches": sum(r["workers"].values()) - work_cpu,
        })
    med = {key: statistics.median(p[key] for p in per) for key in per[0]}
    return {
        "path": path, "case": case, "n_models": n_models, "iters": len(rows),
        "median_ms": {key: (v * 1e3 if key != "batches" else v) for key, v in med.items()},
        "min_wall_ms": min(p["wall"] for p in per) * 1e3,
        "plan_bytes": plan_bytes,
    }


def _print(r):
    m = r["median_ms"]
    print(f"{r['path']:6s} {r['case']:9s} x{r['n_models']:<2d} wall {m['wall']:7.1f} (min {r['min_wall_ms']:7.1f}) | "
          f"client pre {m['client pre']:5.1f}  dispatch {m['dispatch']:5.1f}  compute {m['compute']:6.1f} "
          f"(work {m['work']:6.1f}, its CPU {m['work cpu']:6.1f}, imbalance {m['imbalance']:5.1f}, "
          f"in CPU {m['imbalance cpu']:5.1f})  "
          f"notify {m['notify']:5.1f}  gather {m['gather']:5.1f}  merge {m['merge']:5.1f}  "
          f"update {m['update']:5.1f} | batches {m['batches']:.0f}, plan {r['plan_bytes'] / 1024:.1f} KiB", flush=True)
    if m["to workers"] or m["reply to client"]:
        print(f"{'':19s} direct: to the workers {m['to workers']:.1f}, in the worker to its thread "
              f"{m['worker to thread']:.1f}; last batch to its reply {m['thread to reply']:.1f}, "
              f"reply to the client {m['reply to client']:.1f}", flush=True)
    print(f"{'':19s} CPU ms/iter: client main thread {m['client main cpu']:.1f}, client's other threads "
          f"(event loop; a LocalCluster's scheduler) {m['client other cpu']:.1f}; workers outside the batches "
          f"{m['workers cpu outside batches']:.1f} (both)", flush=True)


def _sklearn_lloyd(X, k, iters, when):
    """scikit-learn's Lloyd iteration on ``X`` in this process (its OpenMP threads), as bench_kmeans.py times it."""
    from benchlib import marginal_seconds
    from sklearn.cluster import KMeans as SkKMeans

    start = X[np.random.default_rng(0).choice(len(X), k, replace=False)]

    def fit(it):
        SkKMeans(k, init=start, n_init=1, max_iter=it, tol=0.0, algorithm="lloyd").fit(X)

    r = marginal_seconds(fit, iters, 3)
    print(f"scikit-learn KMeans Lloyd iteration ({when}): {r['per_iter'] * 1e3:.1f} ms (min {r['min'] * 1e3:.1f}; "
          f"{', '.join(f'{v * 1e3:.1f}' for v in r['all'])}), load {os.getloadavg()}", flush=True)
    return {"path": "scikit-learn", "case": "kmeans", "when": when, "ms_per_iter": r["per_iter"] * 1e3,
            "min_ms": r["min"] * 1e3, "all_ms": [v * 1e3 for v in r["all"]], "load": os.getloadavg()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--features", type=int, default=16)
    ap.add_argument("--clusters", type=int, default=16)
    ap.add_argument("--chunk-rows", type=int, default=131072)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--cases", default="kmeans,full,diag")
    ap.add_argument("--n-init", default="1", help="models in lockstep, comma-separated")
    ap.add_argument("--workers", default="2", help="worker counts (1 thread each), comma-separated")
    ap.add_argument("--dtype", default="float64")
    ap.add_argument("--paths", default="tasks,direct",
                    help="how passes over the placed chunks run: as tasks (tasks), or outside the task graph over "
                         "the pass's channel (direct) or through client.run (run)")
    ap.add_argument("--sklearn", type=int, default=0, metavar="ITERS",
                    help="also time scikit-learn's KMeans Lloyd iteration in this process on its threads (as "
                         "scripts/bench_kmeans.py does: the marginal cost of ITERS iterations, median of 3), "
                         "before and after the clusters")
    ap.add_argument("--label", default="", help="a name for this run's records (e.g. the code profiled)")
    ap.add_argument("--out", default="")
    a = ap.parse_args(argv)
    warnings.simplefilter("ignore")

    import dask.array as da
    from sklearn.datasets import make_blobs

    import daskgmm
    from daskgmm.engine.cluster import kernels_in_use
    from daskgmm.engine.passes import ChunkedData

    n, d, k = a.rows, a.features, a.clusters
    X, _ = make_blobs(n_samples=n, n_features=d, centers=k, cluster_std=2.0, random_state=7)
    X = X.astype(a.dtype)
    results = []
    print(f"{n:,} x {d} {a.dtype}, K = {k}, chunks of {a.chunk_rows} rows; load {os.getloadavg()}; "
          f"daskgmm from {os.path.dirname(daskgmm.__file__)} {a.label}", flush=True)
    if a.sklearn:
        results.append(_sklearn_lloyd(X, k, a.sklearn, "before"))
    for nw in [int(v) for v in a.workers.split(",")]:
        with bench_cluster(nw) as client:
            print(f"{nw} worker(s) x 1 thread, kernel {kernels_in_use(client)}", flush=True)
            Xd = client.persist(da.from_array(X, chunks=(a.chunk_rows, d)))
            data = ChunkedData(Xd, cache="memory")
            for case in a.cases.split(","):
                for m in [int(v) for v in a.n_init.split(",")]:
                    for r in profile(client, data, case, k, m, a.iters, X, a.paths.split(",")):
                        r["workers"] = nw
                        r["load"] = os.getloadavg()
                        _print(r)
                        results.append(r)
            del data, Xd
    if a.sklearn:
        results.append(_sklearn_lloyd(X, k, a.sklearn, "after"))
    for r in results:
        r["label"] = a.label
    print(f"load after: {os.getloadavg()}")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
