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
from daskgmm.io.parquet import open_parquet


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


def _cluster(n_workers=2, **kw):
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address="127.0.0.1:0", **kw)
    return cluster, Client(cluster)


@pytest.fixture(scope="module")
def two_workers():
    """A cluster of two worker processes for the tests that kill a worker, shared (a cluster of their own cost
    each ~5 s of starting and closing): ``[cluster, client]``, which :func:`_both_workers` hands to a test."""
    held = list(_cluster())
    yield held
    held[1].close()
    held[0].close()


def _both_workers(held):
    """The client of the shared cluster once both its workers run (a nanny restarts the one a test before
    killed), or of a new cluster if they do not within 30 s (a test that failed does not fail the next)."""
    try:
        held[1].wait_for_workers(2, timeout=30)
    except Exception:
        held[1].close()
        held[0].close()
        held[:] = _cluster()
    return held[1]


def _kill_in_pass_plugin(trigger, record, pids=None):
    """A worker plugin that SIGKILLs its worker as it starts a task of a pass (a chunk or batch task),
    once ``trigger`` exists: the first worker to claim the trigger (by removing it) dies, after writing
    the task's key to ``record``. With ``pids``, only a worker of those processes claims it (not one
    restarted after an earlier kill). Defined here so that it is pickled by value."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class KillInPass(WorkerPlugin):
        def transition(self, key, start, finish, **kw):
            if finish != "executing" or not any(s in str(key) for s in ("_batch_task", "daskgmm-chunk")):
                return
            if pids is not None and os.getpid() not in pids:
                return
            try:
                os.remove(trigger)  # atomic: one worker claims it
            except FileNotFoundError:
                return
            with open(record, "w") as f:
                f.write(str(key))
            os.kill(os.getpid(), signal.SIGKILL)

    return KillInPass()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Best performing initialization did not converge")
def test_killed_workers_do_not_change_the_result(two_workers, tmp_path):
    """A worker process is killed between two passes (its chunks are lost), and another as it starts
    a task in the middle of a pass; Dask recomputes what was lost and the fit ends with the bits of an
    undisturbed one, in memory and out of core (which give the same bits)."""
    data = tmp_path / "d"
    _write(data, n=240_000, d=4, files=4, row_group_size=20_000)
    kw = dict(n_components=4, random_state=0, tol=0.0, max_iter=10, init_params="random_from_data")
    client = _both_workers(two_workers)
    with client.as_current():
        X = open_parquet(data, chunk_rows=30_000).X  # 8 chunks
        ref = GaussianMixture(**kw, cache="memory").fit(X)
        for cache in ("memory", "none"):
            trigger, record = tmp_path / f"kill-{cache}", tmp_path / f"killed-{cache}"
            pids = set(client.run(os.getpid).values())
            # the kill inside a pass takes the worker the kill between passes left alive
            client.register_plugin(_kill_in_pass_plugin(str(trigger), str(record), pids), name="kill-in-pass")

            def progress(event, trigger=trigger, **info):
                if event != "iteration":
                    return
                if info["iteration"] == 3:  # between passes: the next pass finds the chunks lost
                    os.kill(next(iter(client.run(os.getpid).values())), signal.SIGKILL)
                elif info["iteration"] == 6:  # the first task of the next pass kills its worker
                    trigger.touch()

            g = GaussianMixture(**kw, cache=cache)
            try:
                g.fit(X, progress=progress)
            finally:
                client.unregister_worker_plugin("kill-in-pass")
            assert not trigger.exists() and record.exists(), "the kill in the pass did not happen"
            assert any(s in record.read_text() for s in ("_batch_task", "daskgmm-chunk"))
            deadline = time.time() + 30
            while len(client.scheduler_info()["workers"]) < 2 and time.time() < deadline:
                time.sleep(0.1)
            now = set(client.run(os.getpid).values())
            assert len(now) == 2 and len(now & pids) == 0, "both workers were killed and restarted"
            for name in ("weights_", "means_", "covariances_", "lower_bounds_"):
                np.testing.assert_array_equal(getattr(g, name), getattr(ref, name), err_msg=f"{cache}: {name}")
            assert g.n_iter_ == ref.n_iter_ == 10


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Best performing initialization did not converge")
def test_out_of_core_fit_under_a_small_memory_limit(tmp_path):
    """330 MiB of data in 61 MiB (decoded) row groups on a worker of 300 MiB, default chunking:
    row groups are read in row slices sized from the memory limit, no worker killed, and the
    fit is the one the same rows, read by pyarrow alone, give in memory (in this process, without
    a cluster), to rounding.

    A worker takes about 160 MiB before it holds any data, and distributed pauses a worker
    at 80% of its limit, so 300 MiB leaves ~80 MiB for data in flight: a few 4 MiB chunks.
    The workers' peak memory is a measurement, not a test (sampled, it depends on the
    machine and on when the samples fall): ``scripts/bench_memory.py`` takes it (docs/cli.md,
    *Data larger than memory*).
    """
    import dask.array as da

    data = tmp_path / "big"
    _write(data, n=2_700_000, d=16, files=5, row_group_size=500_000)
    kw = dict(n_components=4, covariance_type="diag", init_params="random_from_data", random_state=0, max_iter=1,
              tol=0.0)  # one iteration: a pass re-reads 330 MiB (each took ~6 s of the suite)
    # one worker: the data need be only a little over its memory to be more than the cluster's (two workers
    # of 300 MiB took 641 MiB of data, twice the writing and the reference fit: 44 s of the suite)
    cluster, client = _cluster(n_workers=1, memory_limit="300MiB")
    try:
        with client.as_current():
            src = open_parquet(data)  # chunks sized from the workers' memory limit
        assert src.X.nbytes > 1.05 * 300 * 2**20  # more than the cluster's memory
        assert max(src.X.chunks[0]) < 500_000  # the row groups were cut
        pids = sorted(client.run(os.getpid).values())
        with client.as_current():
            g = GaussianMixture(**kw)
            data_used = g._fit(src.X, None)
        assert not data_used.persisted  # cache="auto" chose to re-read
        assert sorted(client.run(os.getpid).values()) == pids  # no worker was restarted (none ran out of memory)
    finally:
        client.close()
        cluster.close()
    # the same rows read by pyarrow alone, in the same chunks (column-major, as daskgmm reads them),
    # in this process's memory
    table = pq.read_table(sorted(data.glob("*.parquet")))
    blocks, start = [], 0
    for rows in src.X.chunks[0]:
        part = table.slice(start, rows)
        x = np.empty((rows, table.num_columns), order="F")
        for j, c in enumerate(table.column_names):
            x[:, j] = part.column(c).to_numpy()
        blocks.append(da.from_array(x, chunks=x.shape))
        start += rows
    del table, part
    ref = GaussianMixture(**kw).fit(da.concatenate(blocks))
    del blocks
    assert g.n_iter_ == ref.n_iter_ == 1
    for name in ("weights_", "means_", "covariances_", "lower_bounds_"):
        # measured: equal but for 4e-16 on a few means (the last bit; other arrays' memory layout)
        np.testing.assert_allclose(getattr(g, name), getattr(ref, name), rtol=1e-12, atol=1e-12, err_msg=name)


def _slow_block(b):
    time.sleep(0.5)
    return b


@pytest.mark.slow
def test_worker_killed_while_persisting_leaves_placement_to_the_new_worker(two_workers):
    """A worker dies while the data is persisted: the nanny restarts it under a new address,
    and placement uses the workers as they are then (it raised KeyError on the old address)."""
    import dask.array as da

    from daskgmm.engine.passes import ChunkedData

    client = _both_workers(two_workers)
    with client.as_current():
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


def test_a_worker_killed_between_direct_passes_sends_the_next_to_tasks_at_once(two_workers):
    """Passes over placed chunks run outside the task graph; after a worker died, the next pass runs as
    tasks at once (not after distributed's 30 s connect timeout to the dead address), the scheduler
    recomputes the lost chunks, and the statistics keep their bits."""
    import dask.array as da

    from daskgmm.engine.passes import ChunkedData
    from daskgmm.kernels import MixtureRequest, ModelSpec, kmeans_natural_params

    client = _both_workers(two_workers)
    with client.as_current():
        X = da.random.default_rng(0).standard_normal((16_000, 3), chunks=2000)
        data = ChunkedData(client.persist(X), cache="memory")
        req = [MixtureRequest([ModelSpec(kmeans_natural_params(np.eye(3)), "spherical", "hard")])]

        def stats():
            (st,) = data.run(req, np.zeros(3))[0]
            return np.concatenate([st.n, st.s1.ravel(), [st.loglik]])

        stats()  # the first pass, as tasks
        ref = stats()
        assert data.direct_passes == 1
        os.kill(next(iter(client.run(os.getpid).values())), signal.SIGKILL)
        deadline = time.monotonic() + 10
        while len(client.nthreads()) == 2 and time.monotonic() < deadline:  # the scheduler sees it go
            time.sleep(0.05)
        t0 = time.monotonic()
        np.testing.assert_array_equal(stats(), ref)
        assert time.monotonic() - t0 < 15 and not data.direct and data.direct_passes == 1
