"""Faults a scheduled job meets, with real processes and real signals (issue 12)."""

import contextlib
import gc
import glob
import json
import os
import re
import signal
import subprocess
import sys
import time
import weakref

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from daskgmm.cli import main
from daskgmm.io.files import DataError, InputChangedError
from daskgmm.io.outputs import OutputLock
from daskgmm.io.parquet import read_parquet

from .conftest import FAST, make_blobs


def _data(directory, n=20_000, d=3, files=2, seed=0, row_group_size=5000, extra=None):
    os.makedirs(directory, exist_ok=True)
    X, _, _ = make_blobs(n=n, d=d, k=3, seed=seed)
    per = n // files
    for i in range(files):
        cols = {"id": np.arange(i * per, (i + 1) * per)}
        cols.update({f"f{j}": X[i * per:(i + 1) * per, j] for j in range(d)})
        if extra and i in extra:
            cols[extra[i]] = np.zeros(per)
        pq.write_table(pa.table(cols), os.path.join(directory, f"p{i}.parquet"), row_group_size=row_group_size)
    return X


def _cli(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "daskgmm", *map(str, args)], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True, **kw)


def _children(pid):
    import psutil

    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _gone(pids, seconds=20):
    import psutil

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        if not alive:
            return True
        time.sleep(0.2)
    return False


def _wait_for_line(proc, needle, lines):
    for line in proc.stderr:
        lines.append(line)
        if needle in line:
            return True
    return False


# ---------------------------------------------------------------------------- signals


#: Runs ``daskgmm ARGV`` with the client held, for up to a minute, inside the wait of its third pass
#: ("pass": the wait for its tasks, or the call of the workers of a pass outside the task graph: over
#: the pass's channel, ``Channel.call`` in the main thread, or ``engine._run_on_workers``, which the
#: client's event loop awaits while the main thread waits for it) or of the
#: writing of its predictions ("write"), after saying so on stderr: a signal sent then lands there,
#: whatever the machine's speed.
HELD = r"""
import asyncio, sys, time
from daskgmm.engine import cluster
from daskgmm.engine import passes as engine

where, waits = sys.argv[1], []
wait_bounded = cluster.wait_bounded
run_on_workers = engine._run_on_workers

def hold(what):
    waits.append(what)
    if (where == "pass" and waits.count("pass") == 3) or (where == "write" and what == "write"):
        print(f"daskgmm-test: held in the {what}", file=sys.stderr, flush=True)
        time.sleep(60)

def held(client, futures, what="pass", **kw):
    hold(what)
    return wait_bounded(client, futures, what, **kw)

async def held_run(client, workers, function, *args):
    # awaited on the client's event loop while the main thread waits for it: hold the call there
    # (a sleep would stop the loop itself, which no slow pass does)
    if getattr(function, "__name__", "") == "_direct_batches":
        waits.append("pass")
        if where == "pass" and waits.count("pass") == 3:
            print("daskgmm-test: held in the pass", file=sys.stderr, flush=True)
            await asyncio.sleep(60)
    return await run_on_workers(client, workers, function, *args)

from daskgmm.engine.channel import Channel
channel_call = Channel.call

def held_call(self, function, args, timeout):
    # a pass over the pass's own channel: the main thread waits on its sockets, where a signal lands
    if getattr(function, "__name__", "") == "_direct_batches":
        waits.append("pass")
        if where == "pass" and waits.count("pass") == 3:
            print("daskgmm-test: held in the pass", file=sys.stderr, flush=True)
            time.sleep(60)
    return channel_call(self, function, args, timeout)

cluster.wait_bounded = engine.wait_bounded = held
engine._run_on_workers = held_run
Channel.call = held_call
if where == "start":  # hold the embedded cluster's start for 3 s, with its worker's nanny not yet started
    from distributed import Nanny
    nanny_start = Nanny.start_unsafe

    async def held_start(self):
        print("daskgmm-test: held in the start", file=sys.stderr, flush=True)
        await asyncio.sleep(3)
        return await nanny_start(self)
    Nanny.start_unsafe = held_start
from daskgmm.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("where", ["start", "pass", "write"])
def test_sigterm_stops_the_job_cleanly(tmp_path, where):
    """SIGTERM as the embedded cluster starts, in the middle of a pass, or as the predictions are
    written (after the model is): exit 143, said so, error metrics written, no staging directory, no
    output, no worker process left, no traceback (cut short, the cluster's start left its workers to
    distributed's exit hook: "Exception ignored in atexit callback ... AssertionError: Status.init")."""
    _data(tmp_path / "d", n=20_000, files=2, row_group_size=5000)
    proc = subprocess.Popen(
        [sys.executable, "-c", HELD, where, *map(str, [
            "fit", tmp_path / "d", "--id-column", "id", "--n-components", 3, "--tol", 0, "--max-iter", 10,
            "--init-params", "random_from_data", "--seed", 0, "--n-workers", 1, "--threads-per-worker", 1,
            "--chunk-rows", 5000, "--model-out", tmp_path / "out" / "m", "--predictions-out", tmp_path / "out" / "p",
            "--metrics-out", tmp_path / "metrics.json"])],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    lines = []
    try:
        assert _wait_for_line(proc, f"held in the {where}", lines), "".join(lines)
        workers = _children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=60)[1]  # a bounded wait: a job that ignores the signal fails here
        err = "".join(lines) + rest
        assert proc.returncode == 143, err
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "terminated (SIGTERM)" in err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert ("lower bound" in err) == (where == "write")  # the fit had ended, or had not
    assert _gone(workers), "worker processes left behind"
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "error" and metrics["exit_code"] == 143
    out = tmp_path / "out"
    assert not out.exists() or os.listdir(out) == []  # no output, no staging, no lock


def test_after_a_stop_the_schedulers_broadcast_errors_are_not_printed():
    """A signal landing while a pass runs outside the task graph (client.run) made the embedded
    scheduler log "ERROR - broadcast to tcp://... failed: CommClosedError" for each worker as the
    cluster closed, beside the command's own line; before a stop such a line still shows."""
    import logging

    from daskgmm.engine import cluster, stop

    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    keep = Keep()
    log = logging.getLogger("distributed.scheduler")
    log.addHandler(keep)
    try:
        with cluster.connect(n_workers=0, threads_per_worker=1):  # the scheduler alone
            log.error("broadcast to tcp://127.0.0.1:1 failed: CommClosedError: before")
            stop.request(KeyboardInterrupt)
            try:
                log.error("broadcast to tcp://127.0.0.1:1 failed: CommClosedError: after")
            finally:
                stop.clear()
    finally:
        log.removeHandler(keep)
    assert [m for m in seen if m.startswith("broadcast")] == [
        "broadcast to tcp://127.0.0.1:1 failed: CommClosedError: before"]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_lost_in_a_gc_callback_still_stops_the_job(tmp_path, monkeypatch, signum, status):
    """CI caught a SIGTERM landing in distributed's garbage-collector callback: Python ignored
    the handler's exception there and the fit ran on to the end. The stop is also recorded,
    so the next progress line raises it again: the job stops, with no output."""
    from daskgmm.cli import runtime as cli_runtime

    _data(tmp_path / "d", n=4000, files=1, row_group_size=1000)
    fired = []

    def signal_inside_gc(phase, info):
        if phase == "start" and not fired:
            fired.append(True)
            os.kill(os.getpid(), signum)
            for _ in range(10_000):  # the handler runs here, inside the callback, and its exception is lost
                pass

    progress = cli_runtime.Reporter.progress

    def progress_with_gc(self, event, **info):
        if event == "iteration" and info["iteration"] == 2:
            gc.callbacks.append(signal_inside_gc)
            try:
                gc.collect()
            finally:
                gc.callbacks.remove(signal_inside_gc)
        return progress(self, event, **info)

    monkeypatch.setattr(cli_runtime.Reporter, "progress", progress_with_gc)
    rc = main(["fit", str(tmp_path / "d"), "--id-column", "id", "--n-components", "3", "--tol", "0",
               "--max-iter", "20", "--seed", "0", "--n-workers", "1", "--threads-per-worker", "1", "--quiet",
               "--model-out", str(tmp_path / "out" / "m"), "--metrics-out", str(tmp_path / "metrics.json")])
    assert fired and rc == status
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "error" and metrics["exit_code"] == status
    out = tmp_path / "out"
    assert not out.exists() or os.listdir(out) == []


def test_a_signal_after_the_commit_says_the_outputs_are_complete(tmp_path, monkeypatch):
    """SIGTERM once the model is committed (the job then closes its cluster, plots, says its summary): the job
    stops, exit 143, and says the outputs it committed are complete, where it said "no output written" over a
    new model (user-trial-r17)."""
    import daskgmm.cli.fit as cli_fit

    _data(tmp_path / "d", n=2000, files=1)
    commit = cli_fit.commit_fit

    def commit_then_sigterm(*args, **kwargs):
        rows = commit(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises here
        return rows

    monkeypatch.setattr(cli_fit, "commit_fit", commit_then_sigterm)
    model = tmp_path / "m"
    assert main(["fit", str(tmp_path / "d"), "--id-column", "id", "--n-components", "2", *FAST,
                 "--model-out", str(model), "--metrics-out", str(tmp_path / "metrics.json")]) == 143
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "error" and metrics["exit_code"] == 143, metrics
    assert metrics["error"] == f"terminated (SIGTERM): stopped after committing {model} (complete)", metrics
    assert (model / "_SUCCESS").exists()
    from daskgmm import load

    assert load(model).n_components == 2


@pytest.mark.parametrize("signals, status", [(1, 0), (2, 128 + signal.SIGTERM)])
def test_a_signal_after_the_command_returned_leaves_its_exit_status(signals, status):
    """The console script once the command has returned (its outputs, metrics and messages final) while the
    interpreter's exit hooks run (~0.5 s with Dask loaded): a SIGTERM then made a finished job's exit 143 with no
    message, its metrics saying "ok" (user trial ops-r18: a scheduler's timeout would read it as killed). The
    first signal is ignored; a second one ends the process by its default action."""
    script = ("import atexit, sys, time\n"
              "atexit.register(lambda: (print('exiting', flush=True), time.sleep(3)))\n"
              "sys.argv = ['daskgmm', 'show-config']\n"
              "from daskgmm.cli import console\n"
              "console()\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        for line in proc.stdout:
            if line.strip() == "exiting":
                break
        for _ in range(signals):
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (proc.returncode if proc.returncode >= 0 else 128 - proc.returncode) == status, proc.stderr.read()


def test_a_stop_after_commits_names_the_jobs_outputs_only(tmp_path):
    """What a stop says it committed: the command's outputs (--model-out, --predictions-out, --out), not what it
    commits beside its checkpoint (update's model snapshots, committed as outputs are)."""
    from types import SimpleNamespace

    from daskgmm.cli import _stopped
    from daskgmm.io.outputs import forget_committed, staged_directory

    def commit(path):
        with staged_directory(str(path)) as (fs, staging):
            fs.pipe_file(f"{staging}/x", b"x")

    forget_committed()
    try:
        commit(tmp_path / "snapshot")
        o = SimpleNamespace(model_out=str(tmp_path / "m"), predictions_out=None)
        assert _stopped("terminated (SIGTERM)", KeyboardInterrupt(), "no output written", o) == \
            "terminated (SIGTERM): stopped, no output written"
        commit(tmp_path / "m")
        assert _stopped("terminated (SIGTERM)", KeyboardInterrupt(), "no output written", o) == \
            f"terminated (SIGTERM): stopped after committing {tmp_path / 'm'} (complete)"
    finally:
        forget_committed()


@pytest.mark.parametrize("signum, status, what", [(signal.SIGTERM, 143, "terminated (SIGTERM)"),
                                                  (signal.SIGINT, 130, "interrupted")])
def test_a_signal_as_the_job_ends_lets_its_metrics_be_written(tmp_path, monkeypatch, capsys, signum, status, what):
    """A signal while the job's metrics are written (its status settled "ok"): the metrics are written whole and
    the command says the job had finished, exit 143 (130), where the signal's exception ended the command with a
    traceback and exit 1 (user-trial-r17)."""
    import daskgmm.cli

    _data(tmp_path / "d", n=2000, files=1)
    write = daskgmm.cli._write_metrics

    def signal_then_write(*args, **kwargs):
        os.kill(os.getpid(), signum)
        time.sleep(0.2)  # the handler runs here
        return write(*args, **kwargs)

    monkeypatch.setattr(daskgmm.cli, "_write_metrics", signal_then_write)
    assert main(["fit", str(tmp_path / "d"), "--id-column", "id", "--n-components", "2", *FAST,
                 "--model-out", str(tmp_path / "m"), "--metrics-out", str(tmp_path / "metrics.json")]) == status
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "ok"
    err = capsys.readouterr().err
    assert f"daskgmm: {what} as the job ended: it had finished, its outputs and metrics are complete" in err, err
    assert (tmp_path / "m" / "_SUCCESS").exists()


# ---------------------------------------------------------------------------- never a hang


@pytest.fixture
def own_cluster(request):
    """A LocalCluster of worker processes on 127.0.0.1 with the embedded cluster's settings
    (and those the test asks for), for ``--scheduler``."""
    import dask
    from distributed import Client, LocalCluster

    from daskgmm.engine.cluster import CLUSTER_CONFIG

    with dask.config.set({**CLUSTER_CONFIG, **getattr(request, "param", {})}):
        cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=None, memory_limit="1GiB")
    client = Client(cluster, set_as_default=False)
    yield cluster, client
    client.close()
    cluster.close()


def _killer_plugin():
    """A worker plugin that ends its worker process as soon as it starts a read task (as the
    kernel's OOM killer would); defined here so that it is pickled by value."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class KillOnRead(WorkerPlugin):
        def transition(self, key, start, finish, **kw):
            if finish == "executing" and "daskgmm-read" in str(key):
                os._exit(1)

    return KillOnRead()


def test_a_task_that_keeps_killing_its_worker_fails_the_job(own_cluster, tmp_path, capsys):
    cluster, client = own_cluster
    _data(tmp_path / "d", n=4000, files=1, row_group_size=2000)
    client.register_plugin(_killer_plugin(), name="kill-on-read")
    status = main(["fit", str(tmp_path / "d"), "--id-column", "id", "--n-components", "2",
                   "--scheduler", cluster.scheduler_address, "--model-out", str(tmp_path / "m"), "--quiet"])
    err = capsys.readouterr().err
    assert status == 1, err
    assert "workers died again and again running the same task" in err
    assert "start the workers with a higher memory limit (dask worker --memory-limit" in err and "--chunk-rows" in err
    assert not (tmp_path / "m").exists()


class _OneWorkerClient:
    """A client's answers to memory_advice: one worker of 500 MiB taking 150 MiB idle; ``cluster`` None for a
    scheduler of the user's."""

    def __init__(self, cluster=None):
        self.cluster = cluster

    def scheduler_info(self, n_workers=-1):
        return {"workers": {"tcp://w": {"memory_limit": 500 << 20, "nthreads": 1}}}

    def run(self, function, callback_timeout=None):
        return {"tcp://w": 150 << 20}


@pytest.fixture
def fake_clients(monkeypatch):
    """The floors and limits memory_advice remembers by id(client): the fakes' must not outlive the test."""
    import daskgmm.engine.cluster

    monkeypatch.setattr(daskgmm.engine.cluster, "_floors", {})
    monkeypatch.setattr(daskgmm.engine.cluster, "_limits", {})


def test_memory_advice_names_the_options_that_size_the_workers_of_the_cluster_in_use(monkeypatch, fake_clients):
    """On the embedded cluster --memory-limit and --threads-per-worker size the workers; on a cluster of
    yours (--scheduler) they change nothing (user-trial-r12: "raise --memory-limit" after the workers of
    an external cluster died): the advice names dask worker's options there."""
    import daskgmm.engine.cluster
    from daskgmm.engine.cluster import memory_advice

    FakeClient = _OneWorkerClient
    embedded_client = FakeClient(cluster=object())
    monkeypatch.setattr(daskgmm.engine.cluster, "_command_clients", weakref.WeakSet([embedded_client]))
    embedded = memory_advice(embedded_client)
    assert embedded.startswith("worker memory limit 500 MiB, of which an idle worker already takes 150 MiB; ")
    assert "raise --memory-limit" in embedded and "--threads-per-worker" in embedded
    external_client = FakeClient(cluster=None)
    daskgmm.engine.cluster._command_clients.add(external_client)
    external = memory_advice(external_client)
    assert external.startswith("worker memory limit 500 MiB, of which an idle worker already takes 150 MiB; ")
    assert "raise --memory-limit" not in external and "--threads-per-worker" not in external
    assert "(dask worker --memory-limit" in external and "--chunk-rows" in external
    assert "(dask worker --nthreads)" in external


def test_memory_advice_of_a_python_users_client_names_no_option_of_the_command(fake_clients):
    """A fit from Python on a client of the user's (user trial r18: LocalCluster(memory_limit="110MiB"), its
    workers gone, "raise --memory-limit ..., or lower --chunk-rows, or use fewer --threads-per-worker"):
    the command's options size nothing there; the advice names what does (LocalCluster's memory_limit,
    processes and threads_per_worker, dask worker's options, the chunks of the rows)."""
    from daskgmm.engine.cluster import memory_advice

    class FakeCluster:
        def __init__(self, processes):
            self.processes = processes

    class FakeClient:
        def __init__(self, cluster):
            self.cluster = cluster

        def scheduler_info(self, n_workers=-1):
            return {"workers": {f"tcp://w{i}": {"memory_limit": 500 << 20, "nthreads": 1} for i in range(2)}}

        def run(self, function, callback_timeout=None):
            return {"tcp://w0": 150 << 20, "tcp://w1": 150 << 20}

    for cluster in (FakeCluster(processes=True), FakeCluster(processes=False), None):
        advice = memory_advice(FakeClient(cluster))
        assert advice.startswith("worker memory limit 500 MiB, of which "), advice
        assert "--memory-limit together" not in advice and "--no-processes" not in advice, advice
        for option in ("--chunk-rows", "--threads-per-worker", "raise --memory-limit"):
            assert option not in advice, advice
        assert "the Dask array's chunks" in advice and "chunk_size" in advice, advice
    assert "LocalCluster(memory_limit=...)" in memory_advice(FakeClient(FakeCluster(processes=True)))
    assert "threads_per_worker" in memory_advice(FakeClient(FakeCluster(processes=True)))
    assert "processes=True" in memory_advice(FakeClient(FakeCluster(processes=False)))
    assert "(dask worker --memory-limit" in memory_advice(FakeClient(None))


def test_memory_advice_quotes_the_pause_fraction_of_the_dask_config(fake_clients):
    """The advice says where distributed pauses (or restarts) a worker as the Dask config sets it, not a
    fixed 80% (trial r18)."""
    import dask

    from daskgmm.engine.cluster import memory_advice

    FakeClient = _OneWorkerClient
    with dask.config.set({"distributed.worker.memory.pause": 0.6}):
        assert "distributed pauses a worker at 60% of it" in memory_advice(FakeClient())
    with dask.config.set({"distributed.worker.memory.pause": False, "distributed.worker.memory.terminate": 0.9}):
        advice = memory_advice(FakeClient())
        assert "distributed restarts a worker at 90% of it" in advice and "pauses" not in advice, advice
    assert "distributed pauses a worker at 80% of it" in memory_advice(FakeClient())  # Dask's default


@pytest.mark.slow
def test_a_fit_on_a_python_users_cluster_without_workers_names_no_option_of_the_command(monkeypatch):
    """End to end, from Python: a LocalCluster of the user's with no worker fails the fit's first wait (the
    stall bound shortened), its advice without the command's options."""
    import dask.array as da
    from distributed import Client, LocalCluster

    import daskgmm.engine.cluster
    from daskgmm import GaussianMixture
    from daskgmm.engine.cluster import ClusterError

    monkeypatch.setattr(daskgmm.engine.cluster, "STALL_SECONDS", 2.0)
    X = da.random.default_rng(0).standard_normal((2_000, 3), chunks=500)
    with LocalCluster(host="127.0.0.1", n_workers=0, dashboard_address=None) as cluster, Client(cluster):
        with pytest.raises(ClusterError, match="the cluster has no workers") as err:
            GaussianMixture(2, random_state=0).fit(X)
    message = str(err.value)
    assert "--memory-limit" not in message and "--chunk-rows" not in message, message
    assert "LocalCluster(memory_limit=...)" in message, message


def _without_workers(cluster, monkeypatch):
    """Remove every worker just before the first pass (as when distributed gives up restarting them)."""
    from daskgmm.engine.passes import ChunkedData

    run = ChunkedData.run

    def run_without_workers(self, *args, **kw):
        cluster.scale(0)
        deadline = time.monotonic() + 30
        while self.client.scheduler_info()["workers"] and time.monotonic() < deadline:
            time.sleep(0.1)
        return run(self, *args, **kw)

    monkeypatch.setattr(ChunkedData, "run", run_without_workers)


@pytest.mark.parametrize("own_cluster", [{"distributed.scheduler.no-workers-timeout": "1s"}], indirect=True)
def test_a_cluster_whose_workers_are_gone_fails_the_job(own_cluster, tmp_path, capsys, monkeypatch):
    """The embedded cluster's bound: distributed fails tasks no worker can take."""
    cluster, _ = own_cluster
    _data(tmp_path / "d", n=4000, files=1, row_group_size=2000)
    _without_workers(cluster, monkeypatch)
    status = main(["fit", str(tmp_path / "d"), "--id-column", "id", "--n-components", "2",
                   "--scheduler", cluster.scheduler_address, "--model-out", str(tmp_path / "m"), "--quiet"])
    err = capsys.readouterr().err
    assert status == 1, err
    assert "no worker was left to run task" in err
    assert "worker memory limit 1024 MiB" in err and "(dask worker --memory-limit" in err
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("own_cluster", [{"distributed.scheduler.no-workers-timeout": None}], indirect=True)
def test_a_remote_cluster_without_workers_fails_the_job(own_cluster, tmp_path, capsys, monkeypatch):
    """A scheduler we did not configure never fails the tasks itself: our own bound does."""
    import daskgmm.engine.cluster

    cluster, _ = own_cluster
    _data(tmp_path / "d", n=4000, files=1, row_group_size=2000)
    _without_workers(cluster, monkeypatch)
    monkeypatch.setattr(daskgmm.engine.cluster, "STALL_SECONDS", 2.0)
    status = main(["fit", str(tmp_path / "d"), "--id-column", "id", "--n-components", "2",
                   "--scheduler", cluster.scheduler_address, "--model-out", str(tmp_path / "m"), "--quiet"])
    err = capsys.readouterr().err
    assert status == 1, err
    assert "made no progress for 2 s: the cluster has no workers" in err
    # workers killed or preempted are as likely as memory on a cluster of the user's (user-trial2-r14)
    assert f"start workers for it again (dask worker {cluster.scheduler_address}) and run the job again" in err
    assert "if they died for want of memory: worker memory limit" in err and "(dask worker --memory-limit" in err
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.parametrize("own_cluster", [{"distributed.scheduler.no-workers-timeout": None}], indirect=True)
def test_an_estimators_own_computations_fail_on_a_cluster_without_workers(own_cluster, monkeypatch):
    """What an estimator computes outside its passes (here the mean score of Dask rows and the rows
    of a Dask DataFrame's partitions; KMedoids' labels and the reading checks go through the same
    engine.cluster.compute_bounded) is bounded as a pass is: no hang on a cluster that cannot finish."""
    import dask.array as da
    import dask.dataframe as dd
    import pandas as pd

    import daskgmm
    import daskgmm.engine.cluster

    cluster, client = own_cluster
    x = make_blobs(600, 2, 2, seed=1)[0]
    with client.as_current():
        gm = daskgmm.GaussianMixture(2, random_state=0).fit(x)
        cluster.scale(0)
        deadline = time.monotonic() + 30
        while client.scheduler_info()["workers"] and time.monotonic() < deadline:
            time.sleep(0.1)
        monkeypatch.setattr(daskgmm.engine.cluster, "STALL_SECONDS", 2.0)
        t0 = time.monotonic()
        with pytest.raises(daskgmm.engine.cluster.ClusterError, match="score made no progress for 2 s: the cluster "
                                                                      "has no workers"):
            gm.score(da.from_array(x, chunks=200))
        assert time.monotonic() - t0 < 30
        # a Dask DataFrame's rows per partition are counted before any pass, bounded too
        frame = dd.from_pandas(pd.DataFrame(x, columns=["a", "b"]), npartitions=3)
        with pytest.raises(daskgmm.engine.cluster.ClusterError, match="count of rows per chunk made no progress"):
            daskgmm.GaussianMixture(2).fit(frame)


def _before_the_first_pass(monkeypatch, act):
    """Run ``act(data)`` once, just before the first pass of the job (and inside it, the passes)."""
    from daskgmm.engine.passes import ChunkedData

    run, done = ChunkedData.run, []

    def run_after(self, *args, **kw):
        if not done:
            done.append(True)
            act(self)
        return run(self, *args, **kw)

    monkeypatch.setattr(ChunkedData, "run", run_after)


#: A remote scheduler we did not configure (no no-workers-timeout), whose workers never pause
#: for memory by themselves (the test pauses them).
UNCONFIGURED = {"distributed.scheduler.no-workers-timeout": None, "distributed.worker.memory.pause": False}


@pytest.mark.timeout(60)  # a bound that fails to hold hangs the job: fail in a minute, not in ten
@pytest.mark.parametrize("own_cluster", [UNCONFIGURED], indirect=True)
def test_a_cluster_whose_workers_are_all_paused_fails_the_job(own_cluster, tmp_path, capsys, monkeypatch):
    """Workers paused for memory take no task: the pass fails after the stall bound, saying so."""
    import daskgmm.engine.cluster

    cluster, client = own_cluster
    _data(tmp_path / "d", n=4000, files=1, row_group_size=2000)

    def pause(dask_worker):
        from distributed.core import Status

        dask_worker.status = Status.paused

    def pause_every_worker(data):
        client.run(pause)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(
                w["status"] != "paused" for w in client.scheduler_info()["workers"].values()):
            time.sleep(0.05)

    _before_the_first_pass(monkeypatch, pause_every_worker)
    monkeypatch.setattr(daskgmm.engine.cluster, "STALL_SECONDS", 2.0)
    t0 = time.monotonic()
    status = main(["fit", str(tmp_path / "d"), "--id-column", "id", "--n-components", "2",
                   "--scheduler", cluster.scheduler_address, "--model-out", str(tmp_path / "m"), "--quiet"])
    err = capsys.readouterr().err
    assert status == 1, err
    assert "made no progress for 2 s: every worker is paused: its memory is above 80% of its limit" in err, err
    assert "(dask worker --memory-limit" in err
    assert time.monotonic() - t0 < 20  # the bound, not another one
    assert not (tmp_path / "m").exists()


@pytest.mark.timeout(60)  # a bound that fails to hold hangs the job: fail in a minute, not in ten
@pytest.mark.parametrize("own_cluster", [UNCONFIGURED], indirect=True)
def test_a_cluster_whose_workers_run_none_of_the_tasks_fails_the_job(own_cluster, tmp_path, capsys, monkeypatch):
    """Workers alive and running, but none can take the pass's tasks (here: they need a resource
    no worker has): the pass fails after the stall bound, saying so."""
    import dask

    import daskgmm.engine.cluster

    cluster, _ = own_cluster
    _data(tmp_path / "d", n=4000, files=1, row_group_size=2000)
    annotation = dask.annotate(resources={"no-such-resource": 1})
    _before_the_first_pass(monkeypatch, lambda data: annotation.__enter__())
    monkeypatch.setattr(daskgmm.engine.cluster, "STALL_SECONDS", 2.0)
    try:
        status = main(["fit", str(tmp_path / "d"), "--id-column", "id", "--n-components", "2", "--cache", "none",
                       "--scheduler", cluster.scheduler_address, "--model-out", str(tmp_path / "m"), "--quiet"])
    finally:
        annotation.__exit__(None, None, None)
    err = capsys.readouterr().err
    assert status == 1, err
    assert "made no progress for 2 s: no worker is running any of its tasks" in err, err
    assert not (tmp_path / "m").exists()


@contextlib.contextmanager
def _cluster_by_hand(tmp_path, *worker_options):
    """A scheduler and a worker started by hand (``dask scheduler``, ``dask worker --no-nanny``: real processes,
    as a cluster of the user's); yields ``(address, scheduler process, worker process)`` and kills what is
    left of them at the end."""
    bin_dir = os.path.dirname(sys.executable)
    info = tmp_path / "scheduler.json"
    scheduler = subprocess.Popen([os.path.join(bin_dir, "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
                                  "--no-dashboard", "--scheduler-file", str(info)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = None
    try:
        deadline = time.monotonic() + 30
        while not info.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.2)  # the file is written whole, then read
        address = json.loads(info.read_text())["address"]
        worker = subprocess.Popen([os.path.join(bin_dir, "dask"), "worker", address, "--host", "127.0.0.1",
                                   "--nthreads", "1", "--no-nanny", "--no-dashboard", "--memory-limit", "1GiB",
                                   *worker_options], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        yield address, scheduler, worker
    finally:
        for proc in (worker, scheduler):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


def _kill_in_a_fit_by_hand(tmp_path, cache, which):
    """A fit on a cluster started by hand (:func:`_cluster_by_hand`) whose ``which`` ("scheduler" or "worker")
    is SIGKILLed after iteration 3: ``(the job's process, the scheduler's address, its stderr, seconds from the
    kill to its end)``."""
    _data(tmp_path / "d", n=20_000, files=2, row_group_size=5000)
    job = None
    with _cluster_by_hand(tmp_path) as (address, scheduler, worker):
        try:
            job = _cli("fit", tmp_path / "d", "--id-column", "id", "--n-components", 3, "--tol", 0, "--max-iter",
                       10_000, "--init-params", "random_from_data", "--chunk-rows", 5000, "--cache", cache,
                       "--scheduler", address, "--model-out", tmp_path / "m", "--metrics-out",
                       tmp_path / "metrics.json")
            lines = []
            assert _wait_for_line(job, "iter    3", lines), "".join(lines)
            {"scheduler": scheduler, "worker": worker}[which].kill()
            start = time.monotonic()
            err = "".join(lines) + job.communicate(timeout=90)[1]
            return job, address, err, time.monotonic() - start
        finally:
            if job is not None and job.poll() is None:
                job.kill()
                job.wait()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("cache", ["memory", "none"])
def test_a_scheduler_that_goes_away_mid_job_is_named(tmp_path, cache):
    """A scheduler started by hand (``dask scheduler``, ``dask worker``: real processes) killed in the
    middle of a fit: the job fails at once, exit 1, saying that the connection to the scheduler (named)
    was lost and that the job can be run again, with no traceback. It printed distributed's client
    traceback (~40 lines) and "FuturesCancelledError: 4 Futures cancelled ... Please check your
    connection and re-run your work" (user trial), or a bare CommClosedError over rows held in memory."""
    job, address, err, took = _kill_in_a_fit_by_hand(tmp_path, cache, "scheduler")
    assert job.returncode == 1, err
    assert f"lost the connection to the scheduler {address}" in err, err
    assert "run the job again" in err and "--resume" in err, err
    assert "Traceback" not in err and "FuturesCancelledError" not in err and "CommClosedError" not in err, err
    assert took < 20, f"{took:.0f} s"
    assert json.loads((tmp_path / "metrics.json").read_text())["exit_code"] == 1
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("cache", ["memory", "none"])
def test_a_worker_lost_in_the_middle_of_a_fit_is_said(own_cluster, tmp_path, capsys, monkeypatch, cache):
    """The worker SIGKILLed after iteration 2, its nanny restarting it: the fit goes on (the nanny that still
    answers keeps the stall bound: the job does not fail as one with no worker left would) and ends with the
    model of an uninterrupted run; the loss is said once, in a warning line that --quiet keeps, and counted in
    the metrics. It was silent (user trial r14)."""
    from daskgmm.cli import runtime as cli_runtime
    from daskgmm.io.modelfiles import load_model

    cluster, client = own_cluster
    _data(tmp_path / "d", n=4000, files=1, row_group_size=1000)
    job = ["fit", str(tmp_path / "d"), "--id-column", "id", "--n-components", "3", "--tol", "0", "--max-iter", "6",
           "--seed", "0", "--chunk-rows", "1000", "--cache", cache, "--scheduler", cluster.scheduler_address,
           "--quiet"]
    assert main([*job, "--model-out", str(tmp_path / "ref"), "--metrics-out", str(tmp_path / "ref.json")]) == 0
    assert json.loads((tmp_path / "ref.json").read_text())["workers_lost"] == 0
    progress, killed = cli_runtime.Reporter.progress, []

    def progress_then_kill(self, event, **info):
        progress(self, event, **info)
        if event == "iteration" and info["iteration"] == 2 and not killed:
            (pid,) = client.run(os.getpid).values()
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    monkeypatch.setattr(cli_runtime.Reporter, "progress", progress_then_kill)
    capsys.readouterr()
    status = main([*job, "--model-out", str(tmp_path / "m"), "--metrics-out", str(tmp_path / "m.json")])
    err = capsys.readouterr().err
    assert status == 0 and killed, err
    said = re.findall(r"^daskgmm: warning: worker (tcp://\S+) was lost (at iteration \d+|during the job) \(it died, "
                      r"or its scheduler removed it\); the job went on: its chunks were computed again on the "
                      r"cluster's other workers$", err, flags=re.M)
    assert len(said) == 1, err
    assert json.loads((tmp_path / "m.json").read_text())["workers_lost"] == 1
    ref, got = load_model(tmp_path / "ref"), load_model(tmp_path / "m")
    np.testing.assert_array_equal(got.means_, ref.means_)
    np.testing.assert_array_equal(got.covariances_, ref.covariances_)


def test_the_schedulers_line_per_task_failed_for_want_of_workers_is_left_to_the_command():
    """distributed's scheduler logs an ERROR line per task it fails after its no-workers timeout, those held to
    some workers (a job's reads) in their own words; the command says it once (user-trial-r17: paused workers,
    --no-processes or not, printed "Task ('daskgmm-read-…', 0) marked as failed because it timed out waiting
    for its restrictions to become satisfied." per chunk above the command's error)."""
    import logging

    from daskgmm.engine.cluster import _NoWorkersFilter

    def passes(msg):
        return _NoWorkersFilter().filter(logging.LogRecord("distributed.scheduler", logging.ERROR, __file__, 1, msg,
                                                           (("daskgmm-read-0", 3),), None))

    assert not passes("Task %s marked as failed because it timed out waiting for its restrictions to become "
                      "satisfied.")
    assert not passes("Task %s marked as failed because it timed out waiting without any running workers.")
    assert passes("Task %s erred for another reason")


@pytest.mark.parametrize("processes", [False, True])
def test_no_worker_for_a_task_says_paused_threads_of_this_process_or_dead_processes(processes):
    """distributed's NoWorkerError (no running worker for a task within its timeout) as the command says it: the
    workers died, or, threads of the command's process (--no-processes), were paused (threads do not die), with
    the memory limit said to bound the whole process (user-trial-r17: a 300 MiB limit beside --no-processes
    paused the worker under the client's own libraries, and the error said the workers died)."""
    from distributed.scheduler import NoWorkerError

    from daskgmm.cli.runtime import explain_cluster_failure
    from daskgmm.engine.cluster import ClusterError, connect

    with connect(n_workers=1, threads_per_worker=1, processes=processes, memory_limit="300MiB") as client:
        with pytest.raises(ClusterError) as info:
            explain_cluster_failure(NoWorkerError(("daskgmm-read-0", 4), 30.0), client)
    message = str(info.value)
    assert "no worker" in message and "('daskgmm-read-0', 4) for 30 s" in message and "300 MiB" in message, message
    if processes:
        assert "the workers died" in message and "--no-processes" not in message, message
    else:
        assert "the workers were paused, most likely for memory" in message and "died" not in message, message
        assert "of which this process already takes" in message and "idle worker" not in message, message
        assert "threads of this process (--no-processes): the limit bounds all of it" in message, message
        assert "leave --no-processes out" in message, message


@pytest.mark.parametrize("limit", ["auto", "given"])
def test_workers_that_are_threads_of_one_process_each_have_the_process_limit(limit):
    """--no-processes --n-workers 2: each worker measures the whole process against its limit, so each is given
    what the two would hold as processes together ("auto": the system's memory, not half of it; 300MiB per
    worker: 600 MiB), and the cluster's memory and the chunks' budget count that process once
    (user-trial-r17: each worker's "auto" limit was half the memory, measured against the whole process), less
    what the process takes idle where rows are kept or not (2M x 16 rows at --memory-limit 400MiB were kept, and
    the process, with its 211 MiB of libraries and client, paused its workers)."""
    import dask.array as da
    from dask.utils import parse_bytes
    from distributed.system import MEMORY_LIMIT

    from daskgmm.engine.cluster import (
        _MEMORY_TARGET,
        IDLE_WORKER_BYTES,
        _rss,
        chunk_budget,
        cluster_memory,
        connect,
        worker_floor,
    )
    from daskgmm.engine.cluster import workers as list_workers
    from daskgmm.engine.placement import should_persist

    if limit == "given":  # per worker, what this process takes and more (a test process grows with the tests run)
        limit = f"{(_rss() >> 20) + 512}MiB"
    want = MEMORY_LIMIT if limit == "auto" else min(MEMORY_LIMIT, 2 * parse_bytes(limit))
    with connect(n_workers=2, threads_per_worker=2, processes=False, memory_limit=limit) as client:
        info = list_workers(client)
        assert len(info) == 2 and {w["memory_limit"] for w in info.values()} == {want}, info
        # what the data may take: the process's limit less what it takes idle (its libraries, its client)
        floor = worker_floor(client)
        assert 0 < floor < want and cluster_memory(client) == want - floor
        if limit != "auto":  # rows that fit 40% of 600 MiB but not of 600 MiB less the process: read every pass
            rows = da.zeros((int(0.4 * (want - floor / 2)) // 128, 16), chunks=(100_000, 16))
            assert not should_persist(client, rows, "auto", in_memory=False, sparse=False)
        assert chunk_budget(client) == int(min(64 << 20, max(1 << 20, (want * _MEMORY_TARGET - IDLE_WORKER_BYTES)
                                                                     / 4 / 4)))
    with connect(n_workers=2, threads_per_worker=1, processes=True, memory_limit="300MiB") as client:
        assert {w["memory_limit"] for w in list_workers(client).values()} == {300 << 20}  # processes: as given
        assert cluster_memory(client) == 600 << 20


def _exit_in_a_worker_on_chunk_one(x, block_info=None):
    if block_info[0]["chunk-location"][0] == 1:  # as a worker out of memory dies
        os._exit(1)
    return x


def test_workers_killed_again_and_again_in_a_python_fit_say_what_to_change():
    """A fit from Python whose task kills its worker every time (as a worker out of memory dies): distributed's
    KilledWorker, as a Dask user catches it, with daskgmm's advice for the Python user's cluster as a note
    under it (user-trial-py-r18: distributed's words only, nothing of the memory or the chunks)."""
    import dask
    import dask.array as da
    from distributed import Client, LocalCluster
    from distributed.scheduler import KilledWorker

    from daskgmm import GaussianMixture

    rows = np.random.default_rng(0).normal(size=(4000, 3))
    X = da.from_array(rows, chunks=(1000, 3)).map_blocks(_exit_in_a_worker_on_chunk_one, dtype=rows.dtype,
                                                         meta=np.empty((0, 3)))
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                         memory_limit="1GiB") as cluster, Client(cluster):
        with pytest.raises(KilledWorker) as info:
            GaussianMixture(2, random_state=0).fit(X)
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "daskgmm: workers died again and again running this task, most likely out of memory" in notes, notes
    assert "LocalCluster(memory_limit=...)" in notes and "--memory-limit" not in notes, notes


def test_no_worker_for_a_task_says_paused_worker_processes_are_paused():
    """Worker processes all paused (for memory: here by hand) when no worker ran a task within distributed's
    timeout: the command says they were paused, not that they died (user-trial-r17, 120 MiB workers)."""
    import dask
    from distributed.core import Status
    from distributed.scheduler import NoWorkerError

    from daskgmm.cli.runtime import explain_cluster_failure
    from daskgmm.engine.cluster import ClusterError, connect, workers

    def pause(dask_worker):
        dask_worker.status = Status.paused

    # the worker's memory monitor resumes a paused worker under its pause threshold: off, the pause by hand stays
    with dask.config.set({"distributed.worker.memory.pause": False}), \
            connect(n_workers=1, threads_per_worker=1, memory_limit="300MiB") as client:
        client.run(pause)
        deadline = time.monotonic() + 10
        while any(w.get("status") != "paused" for w in workers(client).values()) and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(ClusterError) as info:
            explain_cluster_failure(NoWorkerError(("daskgmm-read-0", 4), 30.0), client)
    message = str(info.value)
    assert "the workers were paused, most likely for memory" in message and "died" not in message, message
    assert "of which an idle worker already takes" in message and "--no-processes" not in message, message


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("cache", ["memory", "none"])
def test_a_job_whose_last_worker_died_fails_at_once(tmp_path, cache):
    """The only worker of a cluster of the user's (no nanny to restart it) SIGKILLed in the middle of a fit: the
    job fails within seconds, exit 1, saying that the cluster has no worker left and naming the scheduler; it
    waited out the 45 s stall bound before (user trial r14), which is for workers that may come back."""
    job, address, err, took = _kill_in_a_fit_by_hand(tmp_path, cache, "worker")
    assert job.returncode == 1, err
    assert f"the cluster of the scheduler {address} has no worker left" in err, err
    assert "the job went on" not in err, err  # the lost worker is the error, not a warning of a job that survived
    assert f"start workers for it again (dask worker {address}) and run the job again" in err, err
    assert "Traceback" not in err, err
    assert took < 20, f"{took:.0f} s"
    assert json.loads((tmp_path / "metrics.json").read_text())["exit_code"] == 1
    assert not (tmp_path / "m").exists() and not glob.glob(str(tmp_path / ".m.*"))


@pytest.mark.timeout(60)  # a bound that fails to hold hangs the job: fail in a minute, not in ten
@pytest.mark.parametrize("own_cluster", [{**UNCONFIGURED, "distributed.scheduler.worker-ttl": None}], indirect=True)
def test_a_stopped_worker_on_a_scheduler_without_worker_ttl_fails_the_job(own_cluster, tmp_path, capsys,
                                                                          monkeypatch):
    """A worker stopped (SIGSTOP: a hung process, a frozen host) holds the pass's tasks and, to the
    scheduler, is still running them; with a worker-ttl the scheduler removes it in the end (5 min by
    default: a user trial's pass waited 314 s, then ended with the right bits), without one the job waited
    for ever. Now it is said at once (a warning naming the worker), and without a worker-ttl the pass
    fails after the stall bound, saying why."""
    import daskgmm.engine.cluster

    cluster, client = own_cluster
    _data(tmp_path / "d", n=4000, files=1, row_group_size=2000)
    (pid,) = client.run(os.getpid).values()
    _before_the_first_pass(monkeypatch, lambda data: os.kill(pid, signal.SIGSTOP))
    monkeypatch.setattr(daskgmm.engine.cluster, "STALL_SECONDS", 2.0)
    t0 = time.monotonic()
    try:
        status = main(["fit", str(tmp_path / "d"), "--id-column", "id", "--n-components", "2", "--cache", "none",
                       "--scheduler", cluster.scheduler_address, "--model-out", str(tmp_path / "m")])
    finally:
        os.kill(pid, signal.SIGCONT)
    err = capsys.readouterr().err
    assert status == 1, err
    # said as it happens, before the failure (with a worker-ttl the pass waits minutes for the scheduler)
    assert "warning: worker tcp://" in err and "holds tasks of a pass and has not answered the scheduler for 2 s" in err
    assert err.index("warning: worker tcp://") < err.index("error: a pass made no progress"), err
    assert "a pass made no progress for 2 s: the workers holding its tasks (tcp://" in err, err
    assert ("have not answered the scheduler for over 2 s (stopped, frozen or their host unreachable), and the "
            "scheduler has no worker-ttl to remove them; start it again or restart it") in err, err
    assert time.monotonic() - t0 < 30
    assert not (tmp_path / "m").exists()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("own_cluster", [UNCONFIGURED], indirect=True)
def test_every_command_says_a_silent_worker_as_it_happens(own_cluster, tmp_path, capsys, monkeypatch):
    """The warning of the test above, through every command that waits on the cluster (one home,
    cli.runtime.warnings_said): update, predict and score showed Python's raw warning
    ("…/cluster.py:825: SilentWorkerWarning: …"), select recorded it and lost it when its pass then failed.
    The silent worker is faked at the engine's wait (a real one: the test above, for fit): the wait warns
    as it does, then fails as without a worker-ttl."""
    import warnings

    from daskgmm.engine import cluster as engine_cluster

    cluster, _ = own_cluster
    _data(tmp_path / "d", n=400, files=1, row_group_size=400)
    at = ["--scheduler", cluster.scheduler_address]
    data, model = str(tmp_path / "d"), str(tmp_path / "m")
    from daskgmm import GaussianMixture

    g = GaussianMixture(2, covariance_type="diag")  # a model without a fit: the job's first pass costs 3 s
    g.import_state({"weights_": np.full(2, 0.5), "means_": np.eye(2, 3), "precisions_cholesky_": np.ones((2, 3))},
                   {"n_components": 2, "covariance_type": "diag", "n_features": 3, "columns": ["f0", "f1", "f2"]})
    g.save(model)
    wait = engine_cluster._wait_bounded

    def silent(client, futures, what, ends=None):
        if what in ("pass", "write", "score"):  # each command's long work (not its persists and counts)
            warnings.warn(f"worker tcp://127.0.0.1:1 (0) holds tasks of a {what} and has not answered the "
                          "scheduler for 45 s", engine_cluster.SilentWorkerWarning, stacklevel=2)
            raise engine_cluster.ClusterError(f"a {what} made no progress for 45 s")
        return wait(client, futures, what, ends)

    monkeypatch.setattr(engine_cluster, "_wait_bounded", silent)
    capsys.readouterr()
    for argv in (["update", data, "--model", model, "--model-out", str(tmp_path / "u"), "--id-column", "id"],
                 ["predict", data, "--model", model, "--out", str(tmp_path / "p"), "--id-column", "id"],
                 ["score", data, "--model", model, "--columns", "f0,f1,f2"],
                 ["select", data, "--k-min", "1", "--k-max", "2", "--out", str(tmp_path / "s"), "--id-column", "id"],
                 ["fit", data, "--id-column", "id", "--n-components", "2", "--model-out", str(tmp_path / "f")]):
        assert main([*argv, *at]) == 1
        err = capsys.readouterr().err
        assert re.search(r"warning: worker tcp://127.0.0.1:1 \(0\) holds tasks of a \w+ and has not answered", err), err
        assert err.index("warning: worker") < err.index("error: a "), err
        assert "SilentWorkerWarning" not in err, err


def test_a_frozen_scheduler_fails_the_wait_after_the_stall_bound(monkeypatch):
    """A scheduler stopped (SIGSTOP: frozen, its connection left open) answers no call: each of the wait's
    calls to it (its workers, their tasks) is bounded, and not answering is a stall reason, failing the
    wait after the stall bound, naming the scheduler, where it waited for ever."""
    from distributed import Client

    from daskgmm.engine import cluster
    from daskgmm.engine.cluster import ClusterError

    procs = []
    try:
        scheduler = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                      "--port", "0", "--no-dashboard", "--no-show"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        procs.append(scheduler)
        for line in scheduler.stderr:  # its address, once it listens
            if "Scheduler at:" in line:
                address = line.split("Scheduler at:")[1].strip()
                break
        else:
            pytest.fail("the scheduler did not start")
        procs.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads",
                                       "1", "--no-dashboard", "--no-nanny"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        with Client(address, timeout=10) as client:
            client.wait_for_workers(1, timeout=10)
            future = client.submit(time.sleep, 30, pure=False)
            deadline = time.monotonic() + 5
            while not any(client.processing().values()) and time.monotonic() < deadline:
                time.sleep(0.05)
            monkeypatch.setattr(cluster, "STALL_SECONDS", 1.0)
            monkeypatch.setattr(cluster, "_WAIT_STEP", 0.1)
            scheduler.send_signal(signal.SIGSTOP)
            t0 = time.monotonic()
            try:
                with pytest.raises(ClusterError, match=f"the scheduler {address} has not answered for [0-9]+ s "
                                                       r"\(stopped, frozen or its host unreachable\)"):
                    cluster.wait_bounded(client, [future])
                assert time.monotonic() - t0 < 30  # bounded (about 1.5 s here; a loaded CI host is slower)
            finally:
                scheduler.send_signal(signal.SIGCONT)
            future.cancel()
    finally:
        for p in procs[::-1]:
            p.send_signal(signal.SIGCONT)
            p.kill()
            p.wait()


@pytest.mark.parametrize("frozen_at", ["identity", "processing", "look", "worker-ttl"])
def test_every_call_of_a_wait_to_the_scheduler_is_bounded(monkeypatch, frozen_at):
    """The calls of a wait to the scheduler between its waits for the futures (its workers, their tasks, the
    hung-task look, the worker-ttl asked of a silent worker), on a stand-in client whose scheduler freezes at
    one of them: each call is bounded (one without a bound fails the test at once: it would wait for ever),
    and the wait fails after the stall bound."""
    import distributed

    from daskgmm.engine import cluster
    from daskgmm.engine.cluster import ClusterError

    worker = "tcp://127.0.0.1:1"

    class Frozen:
        """The scheduler freezes at the call ``frozen_at``: it and every call after it get no answer."""

        status, frozen = "running", False

        def __init__(self):
            self.scheduler = type("rpc", (), {"address": "tcp://127.0.0.1:8786", "identity": "identity",
                                              "processing": "processing"})()

        def _answer(self, name, callback_timeout):
            self.frozen = self.frozen or name == frozen_at
            if not self.frozen:
                return None
            if callback_timeout is None:
                pytest.fail(f"a call to the scheduler ({name}) without a bound")
            time.sleep(callback_timeout)
            raise TimeoutError(f"timed out after {callback_timeout} s.")

        def sync(self, name, *args, callback_timeout=None, **kw):
            self._answer(name, callback_timeout)
            # its heartbeat never changes: silent after the stall bound, its worker-ttl asked
            return ({"workers": {worker: {"name": "w", "status": "running", "last_seen": 1.0}}}
                    if name == "identity" else {worker: ["daskgmm-chunk-5f0c-0"]})

        def run_on_scheduler(self, function, *args, callback_timeout=None):
            if function.__name__ == "<lambda>":
                self._answer("worker-ttl", callback_timeout)
                return 300.0
            self._answer("look", callback_timeout)
            return [("daskgmm-chunk-5f0c-0", worker, "w", 1.0)], []

    def wait(futures, timeout):
        time.sleep(timeout)
        raise TimeoutError

    monkeypatch.setattr(distributed, "wait", wait)
    monkeypatch.setattr(cluster, "STALL_SECONDS", 0.4)
    monkeypatch.setattr(cluster, "_WAIT_STEP", 0.05)
    monkeypatch.setattr(cluster, "_longest", type(cluster._longest)())
    with pytest.raises(ClusterError, match=r"a pass made no progress for 0 s: the scheduler tcp://127.0.0.1:8786 "
                                           r"has not answered for [0-9]+ s \(stopped, frozen"):
        cluster.wait_bounded(Frozen(), [_Future("daskgmm-merge-5f0c-1-0")])


def _hang_on_read(fifo, after):
    """A patch for a worker's process: its chunk reads (``daskgmm.io.read.read_piece``) past the first
    ``after`` block in ``open`` on the FIFO ``fifo``, which nobody writes (as a read from a dead network
    mount never returns), then read as before. Defined here so that it is pickled by value."""

    def patch():
        from daskgmm.io import read

        original, calls = read.read_piece, []

        def read_piece(*args, **kw):
            calls.append(1)
            if len(calls) > after:
                with open(fifo):  # returns when someone opens it to write (the test, at its end)
                    pass
            return original(*args, **kw)

        read.read_piece = read_piece  # tasks look it up by name as they are unpickled
        read.calls = calls

    return patch


@pytest.mark.timeout(60)  # a bound that fails to hold hangs the job: fail in a minute, not in ten
def test_a_task_hung_in_a_live_worker_fails_the_job_naming_it(own_cluster, tmp_path, capsys):
    """A chunk read that never returns, in a worker that goes on answering its scheduler (a dead NFS
    mount, a stuck object-store socket): no stall rule saw it, and the pass waited for ever. Now, once
    no task of the pass has finished for the hung-task bound (here 0.5 s), the job fails, naming the
    worker, the task and its chunk, and what to do; the waits before it (the first pass) returned."""
    import dask

    cluster, client = own_cluster
    _data(tmp_path / "d", n=4000, files=1, row_group_size=2000)
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    client.run(_hang_on_read(fifo, after=1))
    ((address, info),) = client.scheduler_info()["workers"].items()
    t0 = time.monotonic()
    try:
        # factor 0: a first pass slow enough under load to be looked at (2 s) would raise the bound to 10x its read
        with dask.config.set({"daskgmm.hung-task.timeout": 0.5, "daskgmm.hung-task.factor": 0}):
            status = main(["fit", str(tmp_path / "d"), "--id-column", "id", "--n-components", "2", "--cache",
                           "none", "--scheduler", cluster.scheduler_address, "--model-out", str(tmp_path / "m")])
        took = time.monotonic() - t0
        reads = client.run(lambda: len(__import__("daskgmm.io.read").io.read.calls))[address]
    finally:
        try:  # the hung read returns: the worker closes at once at teardown
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:  # no reader (the read never started)
            pass
    err = capsys.readouterr().err
    assert status == 1, err
    assert reads == 2, reads  # the first pass read the one chunk and returned; the second hung reading it
    # the seconds are those of the looks (2 s apart, later under load, the task seen at a heartbeat after it started)
    assert re.search(r"error: a pass made no progress for \d+ s: worker ", err), err
    assert f"worker {address} ({info['name']}) has run task ('daskgmm-read-" in err, err
    assert re.search(r"\(daskgmm-read, chunk 0\) for \d+ s, and no other task of it finished", err), err
    assert "the bound of 0.5 s = max(daskgmm.hung-task.timeout 0.5 s, daskgmm.hung-task.factor 0 x" in err, err
    assert "restart that worker" in err, err
    assert "DASK_DASKGMM__HUNG_TASK__TIMEOUT" in err, err
    assert took < 40, f"{took:.1f} s"  # 5-12 s: a hang is pytest-timeout's 60 s
    assert not (tmp_path / "m").exists()


@pytest.mark.timeout(90)
def test_a_task_hung_in_a_worker_thread_with_no_processes_fails_the_job_naming_it_at_once(tmp_path, capsys,
                                                                                        monkeypatch):
    """--no-processes: a chunk read that never returns in a worker thread of the command's process. The job
    fails as with worker processes, naming the task; closing the cluster does not wait for the hung thread
    (user-trial-r17: Worker.close waited for its executor, the cluster's close timed out after 20 s and the
    command said only "TimeoutError: timed out after 20 s.", then its exit waited 20 s more: 45 s in all)."""
    import importlib

    import dask

    read = importlib.import_module("daskgmm.io.read")
    _data(tmp_path / "d", n=4000, files=1, row_group_size=2000)
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    original, calls = read._read_matrix, []

    def hanging(*args, **kw):
        calls.append(1)
        if len(calls) > 1:  # the first pass reads the one chunk; the second hangs on it
            with open(fifo):  # returns when someone opens it to write (the test, at its end)
                pass
        return original(*args, **kw)

    monkeypatch.setattr(read, "_read_matrix", hanging)
    t0 = time.monotonic()
    try:
        with dask.config.set({"daskgmm.hung-task.timeout": 0.5, "daskgmm.hung-task.factor": 0}):
            status = main(["fit", str(tmp_path / "d"), "--id-column", "id", "--n-components", "2", "--cache", "none",
                           "--no-processes", "--n-workers", "1", "--threads-per-worker", "1",
                           "--model-out", str(tmp_path / "m")])
        took = time.monotonic() - t0
    finally:
        try:  # the hung read returns: its thread ends
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:  # no reader (the read never started)
            pass
    err = capsys.readouterr().err
    assert status == 1, err
    assert len(calls) == 2, calls
    assert re.search(r"error: a pass made no progress for \d+ s: worker ", err), err
    assert "has run task ('daskgmm-read-" in err and "TimeoutError" not in err, err
    assert took < 15, f"{took:.1f} s"  # 3-5 s; the close's 20 s beside it
    assert not (tmp_path / "m").exists()


class _Future:
    def __init__(self, key, done=False):
        self.key, self._done = key, done

    def done(self):
        return self._done


class _Client:
    """A stand-in for a ``distributed.Client`` (which the hung-task bound only keys its job by)."""


def _silent_store(seconds):
    time.sleep(seconds)
    raise TimeoutError("the store stopped answering")


def test_a_wait_told_what_ends_it_ends_at_the_first_such_failure():
    """A store gone silent fails every part of the predictions after its own bound: the write's wait ends at
    the first such failure (``ends``), not after as many rounds as there are parts per worker thread; any
    other failure is waited out with the rest, as without ``ends``."""
    from distributed import Client, LocalCluster

    from daskgmm.engine import cluster

    # in this process (no network, no worker process to start): a wait's rules are the same
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as local, \
            Client(local) as client:
        for ends, at_least, at_most in [(lambda e: isinstance(e, TimeoutError), 0.0, 0.6), (lambda e: False, 0.8, 30)]:
            futures = [client.submit(_silent_store, 0.1, pure=False)] + [
                client.submit(time.sleep, 0.5, pure=False) for _ in range(2)]
            t0 = time.monotonic()
            cluster.wait_bounded(client, futures, "write", ends=ends)
            took = time.monotonic() - t0
            assert at_least <= took < at_most, f"{took:.2f} s"
            assert futures[0].status == "error"
            client.cancel(futures)


def test_the_hung_task_bound_fails_only_a_pass_without_progress(monkeypatch, tmp_path, capsys):
    """The rule of engine.cluster's hung-task bound, on the scheduler's answers of successive looks (2 s
    apart): tasks that finish (the running ones change) never trip it, however short the bound; a task
    running alone for longer than the bound, with nothing finished meanwhile, does; a finished task's time
    raises the bound to ``factor`` times it; tasks of a silent worker (the stall rules'), or run again after
    their worker left, count neither way. A bad config is a usage error of the command."""
    import dask

    from daskgmm.engine import cluster

    monkeypatch.setattr(cluster, "_longest", type(cluster._longest)())
    answers, calls = [], []

    def scheduler_says(client, keys, asked):
        calls.append(asked)
        return answers.pop(0)

    monkeypatch.setattr(cluster, "_running_tasks", scheduler_says)
    a, b = ("tcp://127.0.0.1:1", "w-a"), ("tcp://127.0.0.1:2", "w-b")
    chunk, read = "daskgmm-chunk-5f0c1e2d3a4b", "daskgmm-read-5f0c1e2d3a4b7e8f"  # as the passes name them
    client, top = _Client(), [_Future("daskgmm-merge-5f0c1e2d3a4b-1-0")]
    with dask.config.set({"daskgmm.hung-task.timeout": "1.5s", "daskgmm.hung-task.factor": 2}):
        hung = cluster._HungTasks(client, top, "pass", start=0.0)
        # two threads: one task of chunk 0 hangs on worker a, worker b finishes a chunk every 0.3 s
        for t in (2, 4, 6):
            answers.append(([(f"{chunk}-0", *a, t - 0.1), (f"{chunk}-{t}", *b, 0.3)], []))
            hung.look(t, silent=set())  # progress: no failure, though chunk 0 has run longer than the bound
        answers.append(([(f"{chunk}-0", *a, 7.9)], []))  # b is done: chunk 0 alone, since 8
        hung.look(8, silent=set())
        answers.append(([(f"{chunk}-0", *a, 9.9)], []))
        hung.look(10, silent={a[0]})  # its worker silent: the stall rules', not this one's
        answers.append(([(f"{chunk}-0", *a, 10.9)], []))
        with pytest.raises(cluster.ClusterError) as err:
            hung.look(11, silent=set())
        assert (f"a pass made no progress for 3 s: worker tcp://127.0.0.1:1 (w-a) has run task '{chunk}-0' "
                "(daskgmm-chunk, chunk 0) for 11 s, and no other task of it finished") in str(err.value)
        assert "the bound of 1.5 s = max(daskgmm.hung-task.timeout 1.5 s, daskgmm.hung-task.factor 2 x the " \
               "longest task seen in this job, 0.3 s)" in str(err.value)

    # another job: a task seen running 1.2 s that then finished makes its bound 10 x 1.2 s (one of a worker
    # that left, waiting again, is not finished)
    client = _Client()
    with dask.config.set({"daskgmm.hung-task.timeout": "1.5s"}):
        hung = cluster._HungTasks(client, top, "pass", start=0.0)
        answers.append(([((read, 1), *a, 1.2), ((read, 2), *b, 1.4)], []))
        hung.look(2, silent=set())
        answers.append(([((read, 3), *a, 1.0)], [(read, 2)]))
        hung.look(4, silent=set())
        assert cluster._longest[client] == 1.2
        answers.append(([((read, 3), *a, 12.0)], []))
        hung.look(15, silent=set())  # 11 s without progress, under 12 s
        answers.append(([((read, 3), *a, 14.0)], []))
        with pytest.raises(cluster.ClusterError, match=rf"for 13 s: worker tcp://127.0.0.1:1 \(w-a\) has run task "
                                                       rf"\('{read}', 3\) \(daskgmm-read, chunk 3\) for 14 s.*"
                                                       r"the bound of 12 s"):
            hung.look(17, silent=set())

    # at the default bound (600 s) the scheduler is asked every 10 s, not at each 2 s turn of the wait
    hung, calls[:] = cluster._HungTasks(_Client(), top, "pass", start=0.0), []
    answers.extend([([(f"{chunk}-0", *a, 2.0)], []), ([(f"{chunk}-1", *a, 1.0)], [])])
    for t in (2, 4, 6, 8, 10, 12):
        hung.look(t, silent=set())
    assert calls == [[], [f"{chunk}-0"]] and not answers

    _data(tmp_path / "d", n=100, files=1)
    for key, value, words in [("timeout", "soon", "'soon' is not a duration above 0"),
                              ("factor", -1, "-1 is not a number from 0 up")]:
        with dask.config.set({f"daskgmm.hung-task.{key}": value}):
            assert main(["fit", str(tmp_path / "d"), "--n-components", "2", "--model-out", str(tmp_path / "m"),
                         "--quiet"]) == 2
        assert f"error: Dask config daskgmm.hung-task.{key}: {words}" in capsys.readouterr().err


def test_the_hung_task_bound_forgets_a_job_with_its_client(monkeypatch):
    """The longest task seen in a job raises its bound; that job's client gone, nothing is kept of it
    (a service running job after job grew a dict entry per client), and a new client that Python gives
    the freed one's id starts at the timeout, not at factor x the old job's longest task."""
    from daskgmm.engine import cluster

    monkeypatch.setattr(cluster, "_longest", type(cluster._longest)())
    top = [_Future("daskgmm-merge-5f0c1e2d3a4b-1-0")]
    inherited = 0
    for _ in range(10):
        client = _Client()
        hung = cluster._HungTasks(client, top, "pass", start=0.0)
        inherited += hung.bound() != 600.0
        hung.running = {"daskgmm-chunk-5f0c1e2d3a4b-0": ("tcp://127.0.0.1:1", "w-a", 100.0)}
        hung.finished()  # the pass ended: its task ran 100 s
        assert hung.bound() == 1000.0
        del client, hung  # freed at once (no cycle)
    assert inherited == 0 and len(cluster._longest) == 0


class _Task:
    """A stand-in for the scheduler's ``TaskState``; ``touched`` collects the tasks whose graph edges a
    look followed."""

    touched = None  # a set, per test

    def __init__(self, key, state="waiting", deps=()):
        self.key, self.state, self.processing_on = key, state, None
        self._dependents, self._dependencies = set(), set(deps)
        for d in deps:
            d._dependents.add(self)

    @property
    def dependents(self):
        _Task.touched.add(self.key)
        return self._dependents

    @property
    def dependencies(self):
        _Task.touched.add(self.key)
        return self._dependencies


def test_a_look_of_the_hung_task_bound_walks_its_own_graph_only():
    """The scheduler's side of a look (run on its event loop, every 10 s by default) finds the running
    tasks that the waited futures need, and follows the graph of these futures only: a shared cluster's
    other jobs running a wide graph (a shuffle: each transfer task below a barrier above thousands of
    tasks) were climbed from each of their running tasks, up to 10,000 tasks each (100 workers of 8
    threads: seconds of the scheduler's loop a look)."""
    import types

    from daskgmm.engine import cluster

    def worker(i):
        return types.SimpleNamespace(address=f"tcp://10.0.0.{i}:1", name=f"w{i}", last_seen=time.time(), executing={})

    # someone else's shuffle: 2,000 transfer tasks -> a barrier -> 2,000 unpack tasks -> 2,000 more
    transfers = [_Task(("transfer-x", i)) for i in range(2000)]
    barrier = _Task("barrier-x", deps=transfers)
    unpacks = [_Task(("unpack-x", i), deps=[barrier]) for i in range(2000)]
    later = [_Task(("later-x", i), deps=[u]) for i, u in enumerate(unpacks)]
    # ours: two chunks in memory, a batch task running on each, merged by the future waited for
    chunks = [_Task(f"daskgmm-chunk-5f0c-{i}", "memory") for i in range(2)]
    batches = [_Task(("daskgmm-batch-5f0c", i), "processing", deps=[c]) for i, c in enumerate(chunks)]
    top = _Task("daskgmm-merge-5f0c-1-0", deps=batches)
    workers = [worker(i) for i in range(4)]
    for i, t in enumerate(transfers[:12] + batches[:1]):  # 3 of the shuffle's tasks and one of ours a worker
        t.state, t.processing_on = "processing", workers[i % 4]
        workers[i % 4].executing[t] = 5.0
    scheduler = types.SimpleNamespace(workers={w.address: w for w in workers},
                                      tasks={t.key: t for t in [*transfers, barrier, *unpacks, *later, *chunks,
                                                                *batches, top]})
    client = types.SimpleNamespace(run_on_scheduler=lambda f, *a, **kw: f(*a, dask_scheduler=scheduler))
    _Task.touched = set()
    running, again = cluster._running_tasks(client, [top.key], [("daskgmm-batch-5f0c", 1)])
    assert [(k, a, name) for k, a, name, _ in running] == [(("daskgmm-batch-5f0c", 0), "tcp://10.0.0.0:1", "w0")]
    assert again == [("daskgmm-batch-5f0c", 1)]  # not finished: waiting (its worker left, say)
    assert not {k for k in _Task.touched if not str(k).count("daskgmm")}, sorted(_Task.touched, key=str)[:5]


def test_workers_import_neither_pandas_nor_scikit_learn(own_cluster, tmp_path):
    """What a real worker has imported after a whole job (fit, predictions) sent to it, beyond what it had
    imported when it started (distributed 2025.3 imports pandas in every worker, at its start)."""
    cluster, client = own_cluster

    def heavy():  # defined here, so that it is pickled by value (importing this module would import pandas)
        import sys

        # dask.array too: where pydata's sparse is installed it imports numba and SciPy (map_blocks'
        # block_info made every worker import it)
        return sorted(({m.split(".")[0] for m in sys.modules} & {"pandas", "sklearn", "scipy"})
                      | ({"dask.array"} & set(sys.modules)))

    at_start = client.run(heavy)
    _data(tmp_path / "d", n=4000, files=2, row_group_size=1000)
    assert main(["fit", str(tmp_path / "d"), "--id-column", "id", "--n-components", "2", "--scheduler",
                 cluster.scheduler_address, "--model-out", str(tmp_path / "m"), "--predictions-out",
                 str(tmp_path / "p"), "--proba", "--quiet"]) == 0
    assert main(["sample", "--model", str(tmp_path / "m"), "-n", "1000", "--out", str(tmp_path / "s"),
                 "--scheduler", cluster.scheduler_address, "--quiet"]) == 0
    # a KMeans' predictions too (their part function once lived in fitting, which imports scikit-learn)
    assert main(["fit", str(tmp_path / "d"), "--id-column", "id", "--estimator", "kmeans", "--n-components", "2",
                 "--scheduler", cluster.scheduler_address, "--model-out", str(tmp_path / "km"), "--predictions-out",
                 str(tmp_path / "kp"), "--distance", "--quiet"]) == 0

    imported = {w: sorted(set(mods) - set(at_start[w])) for w, mods in client.run(heavy).items()}
    assert len(imported) == 1 and list(imported.values()) == [[]], (imported, at_start)
    ran = client.run(lambda: __import__("sys").modules.get("daskgmm.kernels") is not None)
    assert all(ran.values())  # the worker did run daskgmm's tasks


# ---------------------------------------------------------------------------- resume


# ---------------------------------------------------------------------------- concurrent writers


def test_a_second_writer_of_the_same_output_fails_clearly(tmp_path, capsys):
    """A live job holds the output's lock: the second fails at once with exit 1, naming the pid;
    a killed job's lock and staging directories are taken over."""
    _data(tmp_path / "d", n=2000, files=1)
    out = tmp_path / "out" / "m"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from daskgmm.io.outputs import OutputLock; l = OutputLock(sys.argv[1]).acquire(); "
        "print('held', flush=True); time.sleep(60)"), str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        status = main(["fit", str(tmp_path / "d"), "--id-column", "id", "--model-out", str(out), "--quiet"])
        err = capsys.readouterr().err
        assert status == 1
        assert f"is being written by another job (pid {holder.pid})" in err
        assert "Traceback" not in err
    finally:
        holder.kill()
        holder.wait()
    # the holder is dead now: its lock (and a staging directory it left) are a killed job's
    os.makedirs(tmp_path / "out" / f".m.staging-{holder.pid}-abc", exist_ok=True)
    with OutputLock(out):  # the dead holder's lock is taken over; another process sees this live one
        r = subprocess.run([sys.executable, "-c", (
            "import sys; from daskgmm.io.outputs import OutputLock; OutputLock(sys.argv[1]).acquire()"), str(out)],
            capture_output=True, text=True)
        assert r.returncode != 0 and f"another job (pid {os.getpid()})" in r.stderr
    assert main(["fit", str(tmp_path / "d"), "--id-column", "id", "--model-out", str(out), "--quiet",
                 "--n-workers", "1"]) == 0
    assert sorted(os.listdir(tmp_path / "out")) == ["m"]


def test_the_output_lock_is_the_kernels_not_a_pid(tmp_path):
    """The lock is an flock: a lock file naming a live process that does not hold it (a reused pid,
    another host's job) is no lock; a process that holds it, however it holds it, is one."""
    out = tmp_path / "out" / "m"
    os.makedirs(out.parent)
    (out.parent / ".m.lock").write_text(f"{os.getppid()}\n")  # a live pid, no flock
    with OutputLock(out):
        assert (out.parent / ".m.lock").read_text().strip() == str(os.getpid())
    assert not (out.parent / ".m.lock").exists()  # released: removed


def test_a_lock_whose_new_directory_another_job_removes_is_taken_in_a_new_one(tmp_path, monkeypatch):
    """A job that failed removes the empty directories it made (``rmdir``: never one holding a lock).
    Another job that has just found (or made) such a directory for its lock may see it go before its
    lock file is created there: it makes it again and takes its lock. Released, the directories this
    job made are removed, as they are empty; the ones it found stay."""
    from daskgmm.io import outputs

    out = tmp_path / "new" / "dir" / "m"
    flock, removed = outputs._flock, []

    def flock_after_another_jobs_rmdir(lock_path):
        if not removed:
            removed.append(lock_path)
            os.rmdir(out.parent)
            os.rmdir(out.parent.parent)
        return flock(lock_path)

    monkeypatch.setattr(outputs, "_flock", flock_after_another_jobs_rmdir)
    with OutputLock(out):
        assert removed and (out.parent / ".m.lock").read_text().strip() == str(os.getpid())
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------- inputs changing


def test_a_file_rewritten_after_planning_fails_naming_it(tmp_path):
    """The reads were planned from the footers; a file replaced by a valid shorter one fails
    the pass naming the file instead of silently fitting fewer rows."""
    _data(tmp_path / "d", n=4000, files=2, row_group_size=1000)
    X = read_parquet(tmp_path / "d", columns=["f0", "f1"])
    victim = tmp_path / "d" / "p1.parquet"
    time.sleep(0.01)
    pq.write_table(pq.read_table(victim).slice(0, 1500), victim, row_group_size=1000)
    with pytest.raises(InputChangedError, match=r"p1\.parquet.*changed after the job started"):
        X.sum().compute(scheduler="sync")


def test_a_flipped_byte_in_a_checksummed_file_is_an_error_naming_it(tmp_path):
    path = tmp_path / "c.parquet"
    values = np.arange(20_000, dtype=np.float64)
    pq.write_table(pa.table({"a": values}), path, write_page_checksum=True, compression="none",
                   use_dictionary=False)
    raw = bytearray(path.read_bytes())
    at = raw.find(np.float64(12_345.0).tobytes())
    assert at > 0
    raw[at + 3] ^= 0x40
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"c\.parquet.*(?i:checksum|crc)"):
        read_parquet(path).compute(scheduler="sync")


def _flip_in_last_page(path, column):
    """Flip one byte near the end of ``column``'s chunk in the first row group (inside its last
    data page, past the page header)."""
    md = pq.ParquetFile(path).metadata.row_group(0)
    names = [md.column(i).path_in_schema for i in range(md.num_columns)]
    c = md.column(names.index(column))
    start = c.dictionary_page_offset or c.data_page_offset
    raw = bytearray(path.read_bytes())
    raw[start + c.total_compressed_size - 3] ^= 0x10
    path.write_bytes(bytes(raw))


def test_outputs_carry_page_checksums(tmp_path, capsys):
    """Predictions and samples are written with page checksums: a flipped byte in a page is an error
    naming the file for daskgmm's reader (and for any reader verifying checksums)."""
    _data(tmp_path / "d", n=3000, files=1, row_group_size=1000)
    assert main(["fit", str(tmp_path / "d"), "--id-column", "id", "--n-components", "2", "--n-workers", "1",
                 "--model-out", str(tmp_path / "m"), "--predictions-out", str(tmp_path / "p"), "--proba",
                 "--quiet"]) == 0
    assert main(["sample", "--model", str(tmp_path / "m"), "-n", "2000", "--out", str(tmp_path / "s"),
                 "--n-workers", "1", "--quiet"]) == 0
    for out, column in ((tmp_path / "p", "proba_1"), (tmp_path / "s", "f0")):
        part = sorted(out.glob("*.parquet"))[0]
        pq.read_table(part, page_checksum_verification=True)  # intact: every page checks
        _flip_in_last_page(part, column)
        with pytest.raises(OSError, match=r"(?i)CRC|checksum"):
            pq.read_table(part, columns=[column], page_checksum_verification=True)
        with pytest.raises(DataError, match=rf"{part.name}.*(?i:checksum|crc)"):
            read_parquet(part, columns=[column]).compute(scheduler="sync")


# ---------------------------------------------------------------------------- disk full


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_disk_full_names_the_output_and_leaves_nothing(tmp_path, capsys):
    _data(tmp_path / "d", n=60_000, files=2, row_group_size=10_000)
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        status = main(["fit", str(tmp_path / "d"), "--id-column", "id", "--max-iter", "2", "--n-workers", "1",
                       "--model-out", str(tmp_path / "m"), "--predictions-out", str(mnt / "p"), "--proba",
                       "--quiet"])
        err = capsys.readouterr().err
        assert status == 1, err
        assert "No space left on device" in err and str(mnt / "p") in err, err
        assert os.listdir(mnt) == []  # no staging, no lock left behind
        assert not os.path.exists(tmp_path / "m")  # model and predictions are one commit
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


# ---------------------------------------------------------------------------- errors at the right moment


def test_bad_option_values_and_output_paths_fail_before_any_pass(tmp_path, capsys):
    _data(tmp_path / "d", n=2000, files=1)
    base = ["fit", str(tmp_path / "d"), "--id-column", "id", "--model-out", str(tmp_path / "m")]
    assert main([*base, "--memory-limit", "garbage"]) == 2
    assert "--memory-limit" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main([*base, "--plot", str(tmp_path / "file" / "p.png"), "--n-workers", "1"]) == 2
    err = capsys.readouterr().err
    assert "--plot" in err and "iter" not in err  # before any pass
    assert not glob.glob(str(tmp_path / ".m*")) and not os.path.exists(tmp_path / "m")


def test_a_memory_limit_an_idle_worker_fills_is_refused_at_once(tmp_path, capsys):
    """A limit whose pause threshold (80%) an idle worker already passes never runs a task: the job
    failed after the stall bounds (51 s at 10 MiB, exit 1, "no worker was left to run task ...")."""
    _data(tmp_path / "d", n=2000, files=1)
    start = time.monotonic()
    assert main(["fit", str(tmp_path / "d"), "--id-column", "id", "--n-workers", "1", "--memory-limit", "20MiB",
                 "--model-out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "--memory-limit 20MiB per worker is too small: an idle worker takes at least" in err, err
    assert "cluster:" not in err and time.monotonic() - start < 10  # before any cluster starts
    assert not os.path.exists(tmp_path / "m")


def test_a_memory_limit_the_idle_process_fills_with_no_processes_is_refused_at_once(tmp_path, capsys):
    """--no-processes: the workers are threads of the command's process, whose memory (its libraries and client
    too) each worker's limit bounds. A limit whose pause threshold the idle process already passes never runs a
    task: exit 2 once the cluster is up, naming the process's memory, instead of exit 1 after distributed's
    no-workers timeout (user-trial-r17: 200MiB beside --no-processes, 33 s, "no worker ran task ..."). The
    cluster: line gives the process's idle memory, not an idle worker's (one figure, whatever the workers)."""
    from daskgmm.engine.cluster import _rss

    _data(tmp_path / "d", n=2000, files=1)
    # the two workers' limit is the process's, twice this (engine.cluster.process_limit); the process takes more
    # once the cluster is up: 80% of it is passed
    limit = max(116, _rss() >> 21)  # 116 MiB: the least check_memory_limit takes
    start = time.monotonic()
    assert main(["fit", str(tmp_path / "d"), "--id-column", "id", "--no-processes", "--n-workers", "2",
                 "--threads-per-worker", "1", "--memory-limit", f"{limit}MiB", "--model-out", str(tmp_path / "m"),
                 "--metrics-out", str(tmp_path / "metrics.json")]) == 2
    err = capsys.readouterr().err
    assert f"--memory-limit {limit}MiB per worker is too small with --no-processes: the workers are threads of this " \
           "process, which already takes" in err, err
    assert f"of its limit, the process's (2 workers' together), {2 * limit} MiB" in err, err
    floor = int(re.search(r"which already takes (\d+) MiB idle", err).group(1))
    above = int(re.search(r"raise --memory-limit well above (\d+) MiB", err).group(1))
    pause = int(re.search(r"pauses a worker at (\d+)% of", err).group(1)) / 100  # (Dask's config, 80% by default)
    # per worker: the process's need shared by its two workers (a ceiling of the floor's bytes; the floor shown rounded)
    assert abs(above - floor / pause / 2) <= 2, err
    assert "leave --no-processes out" in err and "iter" not in err, err
    assert ", this process takes" in err and "an idle worker takes" not in err, err
    assert time.monotonic() - start < 20
    assert not os.path.exists(tmp_path / "m") and not glob.glob(str(tmp_path / ".m*"))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["exit_code"] == 2 and "too small with --no-processes" in metrics["error"], metrics


def test_column_sets_that_differ_fail_whatever_the_file_order(tmp_path):
    for first in (0, 2):
        d = tmp_path / f"d{first}"
        _data(d, n=3000, files=3, extra={first: "extra"})
        with pytest.raises(DataError, match=rf"p{first}\.parquet: its columns differ.*'extra'"):
            read_parquet(d)


def test_select_takes_an_id_column_and_plots_go_into_new_directories(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    _data(tmp_path / "d", n=3000, d=1, files=1)
    assert main(["select", str(tmp_path / "d"), "--id-column", "id", "--k-min", "1", "--k-max", "2",
                 "--out", str(tmp_path / "sel"), "--n-workers", "1", "--quiet"]) == 0
    doc = json.loads((tmp_path / "sel" / "model" / "model.json").read_text())
    assert doc["columns"] == ["f0"]  # the id is not a feature
    assert main(["fit", str(tmp_path / "d"), "--id-column", "id", "--n-components", "2", "--n-workers", "1",
                 "--model-out", str(tmp_path / "m"), "--plot", str(tmp_path / "new" / "dir" / "fit.png"),
                 "--quiet"]) == 0
    assert (tmp_path / "new" / "dir" / "fit.png").stat().st_size > 0  # one feature: a histogram, no crash


# ---------------------------------------------------------------------------- worker memory


def test_chunks_read_column_by_column_equal_a_whole_table_read(tmp_path):
    """Row slices of large row groups, merged small ones, nulls and an integer column."""
    path = tmp_path / "d"
    path.mkdir()
    rng = np.random.default_rng(0)
    a = rng.normal(size=10_000)
    b = np.arange(10_000, dtype=np.int32)
    table = pa.table({"id": np.arange(10_000), "a": pa.array(np.where(a > 2, np.nan, a), from_pandas=True),
                      "b": b})
    pq.write_table(table.slice(0, 7000), path / "p0.parquet", row_group_size=7000)
    pq.write_table(table.slice(7000), path / "p1.parquet", row_group_size=500)
    from daskgmm.io.files import RowsOmittedWarning
    from daskgmm.io.parquet import open_parquet

    with pytest.warns(RowsOmittedWarning, match="dropped 223 of 10000"):
        src = open_parquet(path, id_column="id", chunk_rows=2400, nan_policy="omit")
    assert src.X.numblocks[0] > 3
    keep = ~np.isnan(table.column("a").to_numpy(zero_copy_only=False))
    want = np.column_stack([a, b])[keep]
    np.testing.assert_array_equal(src.X.compute(scheduler="sync"), want)
    np.testing.assert_array_equal(src.ids.compute(scheduler="sync"), np.arange(10_000)[keep])


def _parts_alive_plugin(min_bytes):
    """A worker plugin that records the most sample parts its worker held at once: the sampling
    tasks running, and the results of at least ``min_bytes`` it kept (a part waiting for its write).
    Defined here so that it is pickled by value."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class PartsAlive(WorkerPlugin):
        def setup(self, worker):
            self.worker, self.running, self.held, self.peak = worker, set(), set(), 0

        def transition(self, key, start, finish, **kw):
            if "sample" not in str(key):
                return
            for state, keys in (("executing", self.running), ("memory", self.held)):
                if start == state:
                    keys.discard(key)
            if finish == "executing":
                self.running.add(key)
            elif finish == "memory" and self.worker.state.tasks[key].nbytes >= min_bytes:
                self.held.add(key)
            self.peak = max(self.peak, len(self.running) + len(self.held))

    return PartsAlive()


def test_sample_holds_one_part_per_worker_thread(own_cluster, tmp_path):
    """``daskgmm sample`` draws each part in the task that writes it: a worker (here one thread)
    never holds a part waiting to be written while it draws the next."""
    cluster, client = own_cluster
    _data(tmp_path / "d", n=3000, files=1)
    assert main(["fit", str(tmp_path / "d"), "--id-column", "id", "--n-components", "2", "--scheduler",
                 cluster.scheduler_address, "--model-out", str(tmp_path / "m"), "--quiet"]) == 0
    part_bytes = 20_000 * 4 * 8  # 20,000 rows of 3 features and the component
    client.register_plugin(_parts_alive_plugin(part_bytes // 2), name="parts-alive")
    assert main(["sample", "--model", str(tmp_path / "m"), "-n", "200000", "--chunk-rows", "20000", "--out",
                 str(tmp_path / "s"), "--scheduler", cluster.scheduler_address, "--quiet"]) == 0
    peaks = client.run(lambda dask_worker: dask_worker.plugins["parts-alive"].peak)
    assert list(peaks.values()) == [1], peaks
    assert pq.read_table(tmp_path / "s").num_rows == 200_000


# ---------------------------------------------------------------------------- rough edges


def test_a_zero_variance_column_and_identical_rows_are_warned_about():
    from daskgmm import GaussianMixture
    from daskgmm.validation.scan import DegenerateDataWarning as DataWarning

    X, _, _ = make_blobs(n=600, d=3)
    X[:, 1] = 0.1  # sums of 0.1 are not exact: the test is relative to the mean
    with pytest.warns(DataWarning, match=r"column\(s\) 1 of X have zero variance"):
        GaussianMixture(n_components=2, random_state=0).fit(X)
    with pytest.warns(DataWarning, match=r"all 50 rows of X are the same point: 1 distinct point, "
                                         r"fewer than n_components=2"):
        GaussianMixture(n_components=2, random_state=0).fit(np.full((50, 3), 7.5))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        GaussianMixture(n_components=2, random_state=0).fit(make_blobs(n=600, d=3)[0])


def test_progress_shows_the_best_over_every_run_and_the_real_init_time(capsys):
    from types import SimpleNamespace

    from daskgmm.cli import Reporter
    from daskgmm.selection import select_model

    def run(objective, n_iter, done):
        return SimpleNamespace(objective=objective, n_iter=n_iter, done=done,
                               history=[{"objective": objective, "change": 0.5, "seconds": 1.0, "events": []}])

    # the best run finished at iteration 3; the one still active is worse
    Reporter(quiet=False).progress("iteration", iteration=4, runs=[run(-1.0, 3, True), run(-2.0, 4, False)])
    # and the one still running is shown beside it, so that the line does not look frozen (trial r18)
    assert ("loglik -1.000000  change 5.000e-01 (run 0, done at iteration 3; the best still running: "
            "loglik -2.000000  change 5.000e-01)") in capsys.readouterr().err
    seen = {}
    X, _, _ = make_blobs(n=2000, d=2)
    select_model(X, n_components=[1, 2, 3], covariance_types=["full"], random_state=0, max_iter=5,
                 progress=lambda event, **info: seen.setdefault(event, info))
    assert seen["init"]["seconds"] > 0 and len(seen["init"]["runs"]) == 3


def test_progress_of_a_mixed_selection_keeps_likelihoods_and_lower_bounds_apart(capsys):
    """A log-likelihood and a variational lower bound do not compare: one best of each."""
    from daskgmm.cli import Reporter
    from daskgmm.selection import select_model

    X, _, _ = make_blobs(n=2000, d=2)
    lines = []
    reporter = Reporter(quiet=False)

    def progress(event, **info):
        reporter.progress(event, **info)
        if event == "iteration":
            runs = [r for r in info["runs"] if r.history]
            best = {n: max(r.objective for r in runs if type(r.state).__name__ == s)
                    for n, s in (("loglik", "MixtureState"), ("lower bound", "VariationalState"))}
            lines.append((info["iteration"], best))

    select_model(X, n_components=[2, 3], covariance_types=["full"], random_state=0, max_iter=4,
                 kinds=("gaussian", "bayesian"), progress=progress)
    err = [ln for ln in capsys.readouterr().err.splitlines() if " iter " in ln]
    assert len(err) == len(lines) > 0
    for text, (it, best) in zip(err, lines):
        assert f"iter {it:4d}  loglik {best['loglik']:.6f}" in text
        assert f";  lower bound {best['lower bound']:.6f}" in text


def test_the_command_names_a_zero_variance_column(tmp_path, capsys):
    x = np.random.default_rng(0).normal(size=(2000, 2))
    pq.write_table(pa.table({"id": np.arange(2000), "a": x[:, 0], "b": np.full(2000, 3.3), "c": x[:, 1]}),
                   tmp_path / "d.parquet")
    assert main(["fit", str(tmp_path / "d.parquet"), "--id-column", "id", "--n-components", "2",
                 "--model-out", str(tmp_path / "m"), "--n-workers", "1"]) == 0
    assert "warning: column(s) 'b' of X have zero variance" in capsys.readouterr().err


def test_the_embedded_workers_drop_the_heartbeat_traceback_of_the_clusters_close():
    """A successful job printed distributed's ~30-line "Failed to communicate with scheduler during heartbeat"
    traceback when a worker's heartbeat met the embedded scheduler closing (under load, user-trial-r14; exit
    0). The embedded workers' log filter drops it, as it drops "Compute Failed" (the command says what failed;
    its own scheduler goes away only at the end, or the job reports the lost connection)."""
    import logging

    from daskgmm.engine.cluster import _ComputeFailedFilter

    def record(msg):
        return logging.LogRecord("distributed.worker", logging.ERROR, __file__, 1, msg, None, None)

    keep = _ComputeFailedFilter().filter
    assert not keep(record("Failed to communicate with scheduler during heartbeat."))
    assert not keep(record("Compute Failed\nKey: x"))
    assert keep(record("Heartbeat to scheduler failed")) and keep(record("Worker is at 85% memory usage."))
