#!/usr/bin/env python3
"""What the round trip costs a pass outside the task graph: ``client.run``, the client calling each worker's
``run`` handler itself, and the passes' own channel (``daskgmm.engine.channel``, what the engine uses).

Usage (after ``pip install -e .``; under the bench lock on a shared host):

    .venv/bin/python scripts/bench_roundtrip.py --workers 1,2 --reps 200

A pass over chunks held in the workers' memory is one ``client.run`` (``daskgmm.engine.passes``): client ->
scheduler -> each worker's ``run`` handler -> scheduler -> client. The handler can also be called by the
client over its own connections to the workers (``Client.rpc``, the pool distributed's direct gathers use;
not its documented API), one hop each way. On a LocalCluster of WORKERS processes x 1 thread on 127.0.0.1,
each repetition calls a pass-like function (``benchlib.pass_like``: ``--work-ms`` of NumPy in the worker's
executor thread, a 32 KiB answer, a ~10 KiB argument) both ways in turn, each with the engine's concurrent
question to the scheduler (``client.nthreads``), awaited in ``client.sync`` from the main thread as the
engine does, and prints medians (ms) of: the call to the last worker's function starting (``send``), the
last function's end to the client's event loop having every answer (``answer``), and the event loop to the
main thread (``main``). Over the channel the main thread writes and reads the streams itself (``main`` 0).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pickle
import statistics
import time

import numpy as np
from benchlib import pass_like


def measure(workers: int, reps: int, work_ms: float) -> dict:
    from distributed import Client, LocalCluster

    plan = np.random.default_rng(0).standard_normal(1280)
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        addresses = sorted(client.nthreads())

        async def by_run():
            out = await client.run(pass_like, plan, work_ms / 1e3, workers=addresses, asynchronous=True)
            return [out[a] for a in addresses]

        async def by_rpc():
            msg = {"function": pickle.dumps(pass_like, protocol=5),
                   "args": pickle.dumps((plan, work_ms / 1e3), protocol=5), "kwargs": pickle.dumps({}), "wait": True}
            got = await asyncio.gather(*[client.rpc(a).run(**msg) for a in addresses])
            return [g["result"] for g in got]

        def as_the_engine(call):
            async def pass_():
                answers = asyncio.ensure_future(call())
                assert set(addresses) <= set(await client.nthreads(asynchronous=True))
                return await answers, time.time()
            return pass_

        from daskgmm.engine.channel import Channel

        channel = Channel.open(client, addresses, timeout=30)
        assert channel is not None, "no channel to the workers"

        def by_channel():
            out = channel.call(pass_like, (plan, work_ms / 1e3), timeout=30)
            return [out[a] for a in addresses], time.time()

        ways = {"client.run": as_the_engine(by_run), "client calls the workers": as_the_engine(by_rpc),
                "the passes' channel": by_channel}

        def call(way):
            return way() if way is by_channel else client.sync(way)

        for way in ways.values():  # warm: connections, imports
            for _ in range(10):
                call(way)
        rec: dict = {k: {"send": [], "answer": [], "main": [], "total beyond the work": []} for k in ways}
        for _ in range(reps):
            for name, way in ways.items():
                t0 = time.time()
                out, t_loop = call(way)
                t1 = time.time()
                start, end = max(o[0] for o in out), max(o[1] for o in out)
                r = rec[name]
                r["send"].append(start - t0)
                r["answer"].append(t_loop - end)
                r["main"].append(t1 - t_loop)
                r["total beyond the work"].append(t1 - t0 - max(o[1] - o[0] for o in out))
        channel.close()
    return {name: {k: statistics.median(v) * 1e3 for k, v in r.items()} for name, r in rec.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", default="1,2", help="worker counts (1 thread each), comma-separated")
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--work-ms", type=float, default=15.0)
    a = ap.parse_args(argv)
    for n in [int(v) for v in a.workers.split(",")]:
        load = os.getloadavg()
        res = measure(n, a.reps, a.work_ms)
        print(f"{n} worker(s), {a.reps} repetitions, load {load[0]:.2f} -> {os.getloadavg()[0]:.2f}; medians, ms:")
        for name, m in res.items():
            print(f"  {name:25s} " + ", ".join(f"{k} {v:.2f}" for k, v in m.items()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
