"""Faults and memory: a killed worker process, and data larger than the workers' memory."""

import os
import signal
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from daskgmm import GaussianMixture
from daskgmm.io import open_parquet

from .conftest import make_blobs


def _write(directory, n, d, files, seed=0, row_group_size=32768):
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, d)) * 4
    per = n // files
    for i in range(files):
        lab = rng.integers(4, size=per)
        x = centres[lab] + rng.normal(size=(per, d))
        pq.write_table(pa.table({f"f{j}": x[:, j] for j in range(d)}), os.path.join(directory, f"p{i:03d}.parquet"),
                       row_group_size=row_group_size)


def _cluster(**kw):
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address="127.0.0.1:0", **kw)
    return cluster, Client(cluster)


#: When the second kill comes after a pass starts: well inside it (a pass over the million rows
#: takes ~50 ms with the compiled kernel, and longer when a worker dies in it).
KILL_DELAY = 0.02


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Best performing initialization did not converge")
@pytest.mark.filterwarnings("ignore:Sending large graph")  # the NumPy input goes to the cluster once
def test_killed_worker_does_not_change_the_result(tmp_path):
    """A worker process is killed between two passes (its chunks are lost) and again in the
    middle of a pass; Dask recomputes what was lost and the fit ends with the same bits."""
    X, _, _ = make_blobs(n=1_000_000, d=4, k=4, spread=1.5, sep=3.0)
    kw = dict(n_components=4, random_state=0, tol=0.0, max_iter=10, init_params="random_from_data")
    cluster, client = _cluster()
    try:
        with client.as_current():
            ref = GaussianMixture(**kw).fit(X)
            killed, timers = [], []

            def kill_one():
                pid = next(iter(client.run(os.getpid).values()))
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

            def progress(event, **info):
                if event != "iteration":
                    return
                if info["iteration"] == 3:
                    kill_one()  # between passes: the next pass finds chunks lost
                elif info["iteration"] == 6:
                    timers.append(threading.Timer(KILL_DELAY, kill_one))  # during the next pass (~50 ms)
                    timers[-1].start()

            g = GaussianMixture(**kw)
            g.fit(X, progress=progress)
            for t in timers:
                t.join()
            assert len(killed) == 2
            assert g.history_[6]["seconds"] > KILL_DELAY  # the pass the second kill fell into was still running
            # the nanny restarted the workers; the fit recomputed what was lost
            deadline = time.time() + 30
            while len(client.scheduler_info()["workers"]) < 2 and time.time() < deadline:
                time.sleep(0.1)
            assert len(client.scheduler_info()["workers"]) == 2
        np.testing.assert_array_equal(g.means_, ref.means_)
        np.testing.assert_array_equal(g.covariances_, ref.covariances_)
        assert g.n_iter_ == ref.n_iter_ == 10
    finally:
        client.close()
        cluster.close()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Best performing initialization did not converge")
def test_out_of_core_fit_under_a_small_memory_limit(tmp_path):
    """732 MiB of data in 64 MiB (decoded) row groups on 2 workers x 300 MiB, default chunking:
    row groups are read in row slices sized from the memory limit, no worker killed.

    A worker takes about 160 MiB before it holds any data (numpy, pandas,
    pyarrow, distributed), and distributed pauses a worker at 80% of its limit
    (and keeps it paused while its memory stays above), so 300 MiB leaves ~80
    MiB for data in flight: a few 4 MiB chunks.
    """
    data = tmp_path / "big"
    _write(data, n=6_000_000, d=16, files=12, row_group_size=500_000)
    cluster, client = _cluster(memory_limit="300MiB")
    try:
        with client.as_current():
            src = open_parquet(data)  # chunks sized from the workers' memory limit
        assert src.X.nbytes > 1.2 * 2 * 300 * 2**20
        assert max(src.X.chunks[0]) < 500_000  # the row groups were cut
        pids = sorted(client.run(os.getpid).values())
        peak = {}
        stop = threading.Event()

        def watch():
            import psutil

            while not stop.is_set():
                for addr, rss in client.run(lambda: psutil.Process().memory_info().rss).items():
                    peak[addr] = max(peak.get(addr, 0), rss)
                time.sleep(0.2)

        t = threading.Thread(target=watch, daemon=True)
        t.start()
        with client.as_current():
            g = GaussianMixture(4, covariance_type="diag", init_params="random_from_data", random_state=0,
                                max_iter=3, tol=0.0)
            data_used = g._fit(src.X, None)
        stop.set()
        t.join()
        assert not data_used.persisted  # cache="auto" chose to re-read
        assert sorted(client.run(os.getpid).values()) == pids  # no worker was restarted
        print(f"peak worker RSS {max(peak.values()) / 2**20:.0f} MiB for {src.X.nbytes / 2**20:.0f} MiB of data")
        assert max(peak.values()) < 300 * 2**20
        assert g.n_iter_ == 3 and np.all(np.isfinite(g.means_))
    finally:
        client.close()
        cluster.close()


def _slow_block(b):
    time.sleep(0.5)
    return b


@pytest.mark.slow
def test_worker_killed_while_persisting_leaves_placement_to_the_new_worker():
    """A worker dies while the data is persisted: the nanny restarts it under a new address,
    and placement uses the workers as they are then (it raised KeyError on the old address)."""
    import dask.array as da

    from daskgmm.engine import ChunkedData

    cluster, client = _cluster()
    try:
        X = da.from_array(np.random.default_rng(0).normal(size=(8000, 3)), chunks=(1000, 3))
        X = X.map_blocks(_slow_block, dtype=float)
        pids = client.run(os.getpid)
        victim = sorted(pids)[0]
        killer = threading.Timer(0.8, lambda: os.kill(pids[victim], signal.SIGKILL))
        killer.start()
        data = ChunkedData(X, cache="memory")
        killer.join()
        alive = set(client.scheduler_info()["workers"])
        assert victim not in alive
        holders = client.who_has(data._futures)
        assert all(len(h) == 1 and set(h) <= alive for h in holders.values()), holders
        np.testing.assert_allclose(data.scan().mean, X.mean(axis=0).compute(), rtol=1e-12)
    finally:
        client.close()
        cluster.close()
