"""Where passes run: the active Dask client, an embedded LocalCluster, or threads.

BLAS must run single-threaded in every Dask worker thread: two Dask threads
each running a two-threaded BLAS oversubscribe the cores and a fit runs two to
three times slower. Worker processes started by a nanny already get
``OMP/MKL/OPENBLAS_NUM_THREADS=1`` (``distributed.nanny.pre-spawn-environ``);
threads in the client process (Dask's threaded scheduler, or a LocalCluster
without processes) are limited with threadpoolctl around each computation.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
import weakref

from daskgmm.engine import stop

#: A pass fails when, for this long, the cluster has had no worker, or no worker
#: has run or held one of its tasks (every worker paused or idle while tasks wait).
STALL_SECONDS = 45.0

#: A pass fails when no task of it has finished for ``max(HUNG_TASK_TIMEOUT, HUNG_TASK_FACTOR x the longest
#: task seen in the job)`` seconds and each of its running tasks has run that long: a task hung inside a live
#: worker (a read from a dead network mount, a stuck object-store connection), whose worker still answers
#: the scheduler. Measured here (2 workers of one thread, niced under load 5): Parquet read tasks of 16-64
#: MiB 0.2-2.2 s (median), at most 4.3 s; chunk tasks 0.3-3.7 s, at most 32 s (full covariances, K = 32,
#: d = 128), the first of a job up to 10x the median; a task's time grows as K x d at the 64 MiB chunk cap,
#: and a slow object store's first read may retry for minutes (botocore: 60 s per try). Dask config
#: ``daskgmm.hung-task.timeout`` and ``daskgmm.hung-task.factor`` override them.
HUNG_TASK_TIMEOUT = 600.0
HUNG_TASK_FACTOR = 10.0

#: A value tasks take (a pass's plan, a fitted model's parameters for predictions) larger than this, pickled:
#: the centres of k-means on wide sparse rows (16 MiB at K=8, D=2**18), a full-covariance mixture's
#: precisions (400 MB at K=50, D=1000), goes to every worker once (:func:`ship`) instead of inside the graph,
#: once per task or per graph, through the scheduler.
INLINE_BYTES = 1 << 20

#: Distributed settings of the embedded cluster, so that no pass waits forever:
#: tasks no worker can take fail after ``no-workers-timeout``; a task that took
#: down its worker this many times fails with ``KilledWorker``. And no statistical
#: profiler in the workers (a thread sampling stacks every 10 ms for the dashboard's
#: profile page): an idle worker took 25 ms of CPU per second with it and 15 without,
#: taken from the passes on a host with as many cores as workers. And the event loops' tick (which
#: measures their lag, for the "event loop was unresponsive" warning at 3 s) every 200 ms, not 20:
#: idle workers 15 -> 7.5 ms of CPU per second each, the client with the scheduler 33 -> 19
#: (two workers, 10 s idle, twelfth round), about 0.4 ms of a 13 ms k-means iteration on two cores.
CLUSTER_CONFIG = {
    "distributed.scheduler.no-workers-timeout": "30s",
    "distributed.scheduler.allowed-failures": 3,
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "200ms",
}

#: Fraction of a worker's memory limit its resident memory may reach
#: (distributed pauses a worker at 80% of it by default).
_MEMORY_TARGET = 0.7

#: What a worker takes before it holds data, with numpy, pyarrow, distributed and the
#: kernels loaded (measured 92-95 MiB here since workers import no scikit-learn; ~165 MiB
#: once Arrow's Parquet code has run, a cost the chunk budget's quarters leave room for).
#: A constant, not each run's measurement,
#: so that the same cluster settings always give the same chunks, hence the same
#: reduction tree and bits (a resumed fit must read the chunks the killed one read).
IDLE_WORKER_BYTES = 128 << 20

#: The least an idle worker was measured to take (92-95 MiB here, docs/cli.md): a memory limit whose
#: pause threshold (80% of it by default) lies below this never runs a task.
MIN_IDLE_WORKER_BYTES = 92 << 20

_pin_lock = threading.Lock()
_pinned = False
_controller = None


def active_client():
    """The ``distributed.Client`` passes use, or None to compute here with Dask's threaded scheduler.

    Outside a worker: the default client, if there is one. In a task's own thread (GridSearchCV's fits
    under joblib's dask backend, or a task that connects a client itself): the default client, else the
    worker's, as ``dask.compute`` there takes; the waits then leave the worker's thread pool
    (:func:`seceded`, as ``distributed.worker_client`` does), so that the chunk tasks get the threads
    the waiting tasks hold. In another thread of a worker's process (one a task started), which cannot
    leave the pool, a client of that worker's cluster is not used: the tasks hold every thread its
    chunk tasks could take, and the fit would wait for ever; it runs in its thread instead.
    """
    try:
        from distributed import default_client, get_client
    except ImportError:  # pragma: no cover - distributed is a dependency
        return None
    try:
        client = default_client()
    except ValueError:
        client = None
    if _in_task():
        return client if client is not None else get_client()
    if client is not None and _worker_of(client):
        return None
    return client


def _in_task() -> bool:
    """True in a worker's thread running a task (where ``distributed.secede`` can free its slot)."""
    try:
        from distributed import get_worker

        get_worker()
        return True
    except (ImportError, ValueError):
        return False


def _live(module: str, name: str) -> list:
    """The live instances of ``distributed``'s class ``module.name`` in this process (its ``Worker`` and
    ``Scheduler`` keep them in a weak set, ``_instances``), none when the module is not loaded."""
    import sys

    return list(getattr(getattr(sys.modules.get(module), name, None), "_instances", ()))


def _worker_of(client) -> bool:
    """This process is a worker process of ``client``'s cluster (it holds a worker of the same scheduler
    and no scheduler: a LocalCluster without processes runs its client in the workers' process)."""
    workers = _live("distributed.worker", "Worker")
    if not workers or _live("distributed.scheduler", "Scheduler"):
        return False
    try:
        address = client.scheduler.address
        return any(getattr(w.scheduler, "address", None) == address for w in workers)
    except Exception:  # a client closing: not the worker's
        return False


def local_scheduler() -> str | None:
    """The scheduler of a computation without a client (``active_client()`` None): Dask's default, but in a
    worker's process, whose default is the worker's client, the threaded one (see :func:`active_client`)."""
    return "threads" if _live("distributed.worker", "Worker") else None


@contextlib.contextmanager
def seceded():
    """In a task's thread, out of the worker's thread pool for the block (``distributed.secede``, then
    ``rejoin``, as ``distributed.worker_client`` and ``Client.get`` do around their waits): its slot goes to
    the tasks waited for. Elsewhere, or already out of the pool, nothing."""
    left = False
    if _in_task():
        from distributed import rejoin, secede

        try:
            secede()
            left = True
        except Exception:  # already out of the pool (inside worker_client, or a wait within a wait)
            pass
    try:
        yield
    finally:
        if left:
            rejoin()


@contextlib.contextmanager
def blas_threads(n: int = 1):
    """Limit BLAS threads in this process for the duration of the block."""
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()  # scanning loaded libraries is slow: once
    with _controller.limit(limits=n, user_api="blas"):
        yield


def pin_worker_blas(in_worker: bool = False) -> None:
    """Pin BLAS to one thread, once per process, when running inside a Dask worker.

    Called at the start of every chunk task: cheap after the first call.
    Outside a distributed worker it does nothing (the caller limits threads);
    ``in_worker``: the caller knows it runs in a worker's process (a worker's
    thread outside a task, where ``get_worker()`` does not know it).
    """
    global _pinned
    if _pinned:
        return
    with _pin_lock:
        if _pinned:
            return
        try:
            from distributed import get_worker

            if not in_worker:
                get_worker()
        except (ImportError, ValueError):
            return
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1, user_api="blas")
        _pinned = True


def _probe_scheduler(address: str, security=None) -> None:
    """Ask ``address`` who it is, within ``distributed.comm.timeouts.connect``: ``Client`` bounds
    the TCP connect but not the handshake after it, so a port that accepts and never answers
    (a hung scheduler, another service) held it forever; and a port where nothing listens is said
    so here, after one timeout (Client waited it a second time, then said only "Timed out").

    Raises
    ------
    ClusterError
        Nothing accepted the connection, or nothing answered like a Dask scheduler, in time.
    """
    import asyncio

    import dask
    from dask.utils import parse_timedelta
    from distributed.comm import connect as comm_connect

    try:
        asyncio.get_running_loop()
        return  # called inside an event loop (a notebook): asyncio.run cannot run here, Client's bounds apply
    except RuntimeError:
        pass
    timeout = parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"), default="s")
    args = security.get_connection_args("client") if security is not None else {}

    async def ask():
        try:
            comm = await comm_connect(address, timeout=timeout, **args)
        except OSError as exc:  # refused or unreachable for the whole timeout (distributed retries), TLS refused
            return exc
        try:
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            comm.abort()

    try:
        # a second past comm_connect's own bound: a connection refused for the whole timeout is said so,
        # not taken for the silent port's timeout that would race it (then Client waited the timeout again)
        reply = asyncio.run(asyncio.wait_for(ask(), timeout + 1))
    except TimeoutError:
        reply = None
    except Exception:  # not Dask's protocol (e.g. an HTTP server): said below
        reply = None
    if isinstance(reply, OSError):
        raise ClusterError(
            f"scheduler {address}: cannot connect within {timeout:.0f} s ({_connect_failure(address, reply)}; "
            "distributed.comm.timeouts.connect): check the address and port, and that the scheduler is running")
    if not isinstance(reply, dict) or reply.get("type") != "Scheduler":
        raise ClusterError(
            f"scheduler {address} did not answer as a Dask scheduler (no answer within {timeout:.0f} s, "
            "distributed.comm.timeouts.connect, or not Dask's protocol): check the address and port, and that the "
            "scheduler is running and not hung")


def _connect_failure(address: str, exc: BaseException) -> str:
    """Why a connection failed, in a few words (distributed's last retry often only timed out)."""
    import socket

    from distributed.comm.addressing import get_address_host_port

    try:
        with socket.create_connection(get_address_host_port(address), timeout=2):
            pass
    except ConnectionRefusedError:
        return "connection refused: nothing listens there"
    except socket.gaierror as err:
        return f"the host name does not resolve: {err}"
    except Exception:
        pass
    return str(exc)


@contextlib.contextmanager
def connect(
    scheduler: str | None = None,
    *,
    n_workers: int | None = None,
    threads_per_worker: int | None = None,
    memory_limit: str | int | None = "auto",
    security=None,
    processes: bool | None = True,
    quiet: bool = True,
    dashboard_address: str = "127.0.0.1:0",
):
    """A ``distributed.Client`` for the duration of the block.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:8786``, ``tls://…``).
        Without it an embedded LocalCluster is started on 127.0.0.1 and closed
        at exit.
    n_workers, threads_per_worker, memory_limit, processes, dashboard_address :
        LocalCluster settings (ignored with ``scheduler``); the dashboard listens on loopback and
        any free port unless told otherwise. ``processes=None`` is LocalCluster's default, worker processes.
    security : distributed.Security, optional
        TLS settings for a remote scheduler. A Dask scheduler runs whatever its
        clients send, so connect only to schedulers on trusted networks.

    Yields
    ------
    distributed.Client
    """
    import logging

    from distributed import Client, LocalCluster

    if quiet:
        for name in ("distributed", "distributed.nanny", "distributed.scheduler", "distributed.worker"):
            logging.getLogger(name).setLevel(logging.ERROR)
    if scheduler:
        kwargs = {"security": security} if security is not None else {}
        _probe_scheduler(scheduler, security)
        quieter, log = _ReconnectCancelledFilter(), logging.getLogger("distributed.client")
        log.addFilter(quieter)
        try:
            with Client(scheduler, set_as_default=True, **kwargs) as client:
                _command_clients.add(client)
                yield client
        finally:
            log.removeFilter(quieter)
        return
    if processes is None:  # LocalCluster's default (a config's processes: null), not threads' sizes below
        processes = True
    if n_workers is None and not processes:
        n_workers = 1  # threads of one process: more workers would only split them
    if n_workers is None:
        n_workers = min(os.cpu_count() or 1, 4) if threads_per_worker is None else max(
            1, (os.cpu_count() or 1) // threads_per_worker
        )
    if threads_per_worker is None:
        threads_per_worker = max(1, (os.cpu_count() or 1) // n_workers)
    if not processes:
        memory_limit = process_limit(memory_limit, n_workers, threads_per_worker)
    stack = contextlib.ExitStack()
    import dask

    stack.enter_context(dask.config.set(CLUSTER_CONFIG))
    with stop.deferred():  # a signal now waits for the start to finish, then stops the job below
        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            memory_limit=memory_limit,
            processes=processes,
            # LocalCluster's default without processes, inproc://, takes no host (its address fails to parse)
            **({} if processes else {"protocol": "tcp"}),
            host="127.0.0.1",
            dashboard_address=dashboard_address,  # by default any free port, loopback only
            silence_logs=logging.ERROR if quiet else logging.WARNING,
        )
    for quieter in (_NoWorkersFilter(), _StoppingFilter()):
        logging.getLogger("distributed.scheduler").addFilter(quieter)
        stack.callback(logging.getLogger("distributed.scheduler").removeFilter, quieter)
    try:
        stop.check()
        with Client(cluster, set_as_default=True) as client:
            client.register_plugin(_QuietComputeFailed(), name="daskgmm-quiet-compute-failed")
            _command_clients.add(client)
            yield client
    finally:
        try:
            if not processes:
                _close_thread_workers(cluster)
            cluster.close(timeout=20)
        finally:
            stack.close()


def process_limit(memory_limit, n_workers: int, threads_per_worker: int) -> int | None:
    """The memory limit each of ``n_workers`` workers that are threads of one process is given: ``n_workers``
    times ``memory_limit`` per worker (``"auto"``: distributed's share of the system's memory for
    ``threads_per_worker`` threads), at most the system's; None for no limit.

    Each such worker measures the whole process against its limit, so a per-worker limit would pause them all
    once the process held one worker's share (``--no-processes --n-workers 2``: half the memory); the process
    may hold what as many worker processes would hold together."""
    from distributed.system import MEMORY_LIMIT
    from distributed.worker_memory import parse_memory_limit

    each = parse_memory_limit(memory_limit, threads_per_worker, logger=logging.getLogger("distributed.worker"))
    return None if not each else min(MEMORY_LIMIT, each * max(1, n_workers))


def _close_thread_workers(cluster) -> None:
    """Close the workers of a LocalCluster without processes, not waiting for their tasks' threads: a task
    hung in one (a read from a dead mount; the job failed saying so) held ``Worker.close``, which waits for its
    executor, so the cluster's close timed out (its TimeoutError replacing the job's error) and the process's
    exit waited as long again. The threads are daemons: they end with the process."""
    for worker in list(getattr(cluster, "workers", {}).values()):
        with contextlib.suppress(Exception):  # a worker that failed or closed already: cluster.close tells
            cluster.sync(worker.close, executor_wait=False, reason="daskgmm-job-end", callback_timeout=20)


class _ComputeFailedFilter(logging.Filter):
    """An embedded worker's "Compute Failed" (the command says what failed, once) and its heartbeat's failure
    as the embedded scheduler closes at the job's end (a ~30-line traceback on a successful job's stderr,
    under load; a scheduler lost mid-job is reported by the command)."""

    def filter(self, record):
        msg = str(record.msg)
        return not (msg.startswith("Compute Failed") or msg.startswith("Failed to communicate with scheduler during "
                                                                       "heartbeat"))


class _NoWorkersFilter(logging.Filter):
    """The scheduler logs one line per task it fails for want of workers (a task held to some workers, as
    the reads of a cached chunk are: "waiting for its restrictions"), or after workers died running it
    (hundreds: every task waiting on it fails too); the command says it once."""

    def filter(self, record):
        msg = str(record.getMessage())
        return not ("timed out waiting without any running workers" in msg
                    or "timed out waiting for its restrictions to become satisfied" in msg
                    or ("marked as failed because" in msg and "workers died while trying to run it" in msg))


class _ReconnectCancelledFilter(logging.Filter):
    """A client that lost its scheduler tries to reconnect; the command's close cancels that try,
    which distributed logs with two chained tracebacks (~40 lines). The command says the connection
    was lost (``cli.runtime.explain_cluster_failure``)."""

    def filter(self, record):
        import asyncio

        return not (record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError))


class _StoppingFilter(logging.Filter):
    """Once a signal stopped the job, the scheduler logs an error for each worker that a pass in
    flight outside the task graph (``client.run``) can no longer reach as the cluster closes
    ("broadcast to ... failed"); the command has said why it stops."""

    def filter(self, record):
        return not (stop.requested() and str(record.msg).startswith("broadcast to"))


try:
    from distributed.diagnostics.plugin import WorkerPlugin as _WorkerPlugin
except ImportError:  # pragma: no cover - distributed is a dependency
    _WorkerPlugin = object


class _QuietComputeFailed(_WorkerPlugin):
    """Drop a worker's "Compute Failed" log record (a task's traceback on stderr): the
    command reports the same error once, in one line. Other worker logs are kept."""

    def setup(self, worker):
        logging.getLogger("distributed.worker").addFilter(_ComputeFailedFilter())


#: client -> {address: its nanny's address, or None} of every worker a listing of :func:`workers` showed it (weak,
#: as ``_longest``): what a cluster left without workers could get back (:func:`none_can_return`)
_seen: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def workers(client, timeout: float | None = None) -> dict:
    """Every worker the scheduler knows: address -> info (recent distributed lists 5 by default).
    With ``timeout``: :class:`TimeoutError` when the scheduler has not answered in that many seconds."""
    if timeout is not None:  # scheduler_info() has no timeout: its call to the scheduler, bounded
        try:
            info = client.sync(client.scheduler.identity, n_workers=-1, callback_timeout=timeout)["workers"]
        except TypeError:  # a scheduler of an older distributed, without n_workers (it lists every worker)
            info = client.sync(client.scheduler.identity, callback_timeout=timeout)["workers"]
    else:
        try:
            info = client.scheduler_info(n_workers=-1)["workers"]
        except TypeError:  # older distributed without n_workers
            info = client.scheduler_info()["workers"]
    with contextlib.suppress(TypeError):  # a client that takes no weak reference: nothing remembered
        _seen.setdefault(client, {}).update({a: w.get("nanny") for a, w in info.items()})
    return info


class LostWorkers:
    """The workers that leave the scheduler of ``client`` while watched (died, killed, out of memory, silent past
    its ``worker-ttl``, or retired): a job that goes on has survived them, and says so.

    Looked at by :meth:`take`, at most once every ``LOOK_SECONDS`` (one call to the scheduler: its workers'
    addresses), so that a fit's fast iterations pay nothing; a scheduler that does not answer is not looked
    at that time. A worker that died and came back at the same address between two looks (a nanny restarting
    it on a fixed ``--worker-port``) is not seen. (Not the scheduler's events: a client subscribed to its
    ``"all"`` topic had fits on a shared scheduler fail with "lost dependencies".)
    """

    #: The least time between two looks, in seconds
    LOOK_SECONDS = 1.0

    def __init__(self, client):
        self.client, self.lost, self._taken, self._looked = client, [], 0, time.monotonic()
        self.known = self._addresses() or set()

    def _addresses(self) -> set | None:
        try:
            return set(self.client.sync(self.client.scheduler.ncores, callback_timeout=_answer_seconds()))
        except Exception:  # not answering, or going away: the wait of the pass says so
            return None

    @property
    def count(self) -> int:
        """How many workers were lost while watched (as of the last look)."""
        return len(self.lost)

    def take(self, now: bool = False) -> list:
        """The workers lost since the last call, looked at if the last look is ``LOOK_SECONDS`` old, or ``now``."""
        if now or time.monotonic() - self._looked >= self.LOOK_SECONDS:
            self._looked = time.monotonic()
            current = self._addresses()
            if current is not None:
                self.lost += sorted(self.known - current)
                self.known = current
        new = self.lost[self._taken:]
        self._taken += len(new)
        return new


def none_can_return(client) -> list | None:
    """The workers ``client`` has seen (sorted addresses), when none of them can come back: none had a nanny, or
    no nanny of theirs answers the scheduler (killed with its worker, or closed). None when one may (a nanny
    restarts its worker in seconds), when none was seen (a cluster still starting) or when the scheduler cannot
    be asked. For a cluster with no worker left: its job can fail at once rather than after ``STALL_SECONDS``."""
    seen = _seen.get(client) or {}
    if not seen:
        return None
    nannies = sorted({n for n in seen.values() if n})
    if nannies:
        async def answering(nannies, dask_scheduler=None):
            # defined here: pickled by value, for a scheduler without daskgmm installed
            import asyncio

            from distributed.comm import connect

            async def answers(address):
                try:
                    comm = await connect(address, timeout=1, **dask_scheduler.connection_args)
                except Exception:
                    return False
                comm.abort()
                return True

            return any(await asyncio.gather(*map(answers, nannies)))

        try:
            if client.run_on_scheduler(answering, nannies, callback_timeout=_answer_seconds()):
                return None
        except Exception:  # a scheduler that refuses run_on_scheduler or does not answer: the stall bound holds
            return None
    return sorted(seen)


def cluster_memory(client) -> int:
    """Sum of the workers' memory limits in bytes (0 when unknown or unlimited); of workers that are threads of
    this process, their process's limit (each worker's: :func:`process_limit`) less what the process takes idle
    (:func:`worker_floor`: the command's own libraries and client, which worker processes do not hold)."""
    limits = [w.get("memory_limit") or 0 for w in workers(client).values()]
    if not limits or any(lim == 0 for lim in limits):
        return 0
    if threads_of_this_process(client):
        return int(max(1, max(limits) - worker_floor(client)))
    return int(sum(limits))


class ClusterError(RuntimeError):
    """The cluster cannot finish a pass: no workers, or no progress for too long."""


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def _warm_rss() -> int:
    """A worker's resident memory after importing what a chunk task uses."""
    import pyarrow.parquet  # noqa: F401

    import daskgmm.kernels  # noqa: F401

    return _rss()


def _kernel_in_use() -> str:
    from daskgmm.kernels import compiled

    return compiled.describe()


def kernels_in_use(client=None) -> str:
    """What the passes run on: ``"compiled-avx2"``, ``"numpy (why)"``, or each distinct answer of
    the workers joined by ``"; "`` (the active client's workers; this process without one)."""
    client = active_client() if client is None else client
    if client is None:
        return _kernel_in_use()
    try:
        names = sorted(set(client.run(_kernel_in_use, callback_timeout=STALL_SECONDS).values()))
    except Exception:  # a remote cluster may refuse client.run
        return "unknown"
    return "; ".join(names) or "unknown"


def _source_digest() -> str:
    """daskgmm's version and a digest of its Python sources, as this process imports them: read once, when
    this module is imported (~4 ms for ~80 files), so that a worker started before an upgrade keeps the
    digest of the code it runs."""
    import hashlib

    from daskgmm.version import __version__

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    digest = hashlib.sha256()
    for folder, subfolders, names in os.walk(root):
        subfolders.sort()
        for name in sorted(n for n in names if n.endswith(".py")):
            path = os.path.join(folder, name)
            try:
                with open(path, "rb") as f:
                    digest.update(os.path.relpath(path, root).encode() + b"\0" + f.read())
            except OSError:
                continue
    return f"{__version__}+{digest.hexdigest()[:12]}"


#: This process's daskgmm: version + a digest of its sources (:func:`workers_with_other_code`).
CODE = _source_digest()


def _code() -> str:
    return CODE


def workers_with_other_code(client) -> dict:
    """``{worker: its CODE}`` of the workers that run another daskgmm than this process (another version,
    or the same one edited or reinstalled since they started: long-lived ``dask worker`` processes keep the
    code they imported). Empty when the workers cannot be asked (a cluster that refuses ``client.run``)."""
    try:
        theirs = client.run(_code, callback_timeout=STALL_SECONDS)
    except Exception:
        return {}
    return {w: c for w, c in sorted(theirs.items()) if c != CODE}


_floors: dict = {}


def worker_floor(client) -> int:
    """Resident memory of an idle worker with the libraries a task needs loaded,
    the largest over the workers (measured once per client; 0 when unknown)."""
    key = id(client)
    if key not in _floors:
        try:
            _floors[key] = int(max(client.run(_warm_rss, callback_timeout=STALL_SECONDS).values(), default=0))
            _limits[key] = sorted({int(w.get("memory_limit") or 0) for w in workers(client).values()})
        except Exception:  # a remote cluster may refuse client.run
            _floors[key] = 0
    return _floors[key]


def chunk_budget(client) -> int | None:
    """Decoded bytes one chunk task may hold on the active cluster, or None (no
    client, or no memory limit: chunks of the default row count).

    The least memory per worker thread, above ``IDLE_WORKER_BYTES`` and below
    ``_MEMORY_TARGET`` of the limit, shared by the task's matrix, its decoded
    batch, the kernels' outputs and a chunk read ahead (a quarter each).
    Between 1 MiB and 64 MiB. Workers that are threads of this process share
    its limit among all their threads.
    """
    if client is None:
        return None
    info = workers(client)
    # workers that are threads of this process share its limit (process_limit): every thread of it shares it
    shared = sum(max(1, int(w.get("nthreads", 1))) for w in info.values()) if threads_of_this_process(client) else 0
    per_thread = []
    for w in info.values():
        limit = w.get("memory_limit") or 0
        if not limit:
            return None
        per_thread.append((limit * _MEMORY_TARGET - IDLE_WORKER_BYTES) / (shared or max(1, int(w.get("nthreads", 1)))))
    if not per_thread:
        return None
    return int(min(64 << 20, max(1 << 20, min(per_thread) / 4)))


def ship(client, value, what: str = "a pass's parameters"):
    """``value`` as the tasks of a graph take it: itself when small (pickled, at most :data:`INLINE_BYTES`) or
    without a client, else a future of it on every worker (scattered once; the graph holds the future, so the
    value lives on the workers as long as a graph or a collection refers to it). ``what`` names it in the
    ``ClusterError`` of a scatter that outlasts ``STALL_SECONDS``."""
    from distributed.protocol.pickle import dumps  # as distributed sends it: cloudpickle for closures

    if client is None:
        return value
    buffers: list = []  # the arrays' bytes stay out of band: measuring copies nothing
    size = len(dumps(value, protocol=5, buffer_callback=buffers.append))
    size += sum(b.raw().nbytes for b in buffers)
    if size <= INLINE_BYTES:
        return value
    try:
        return client.scatter(value, broadcast=True, hash=False, timeout=STALL_SECONDS)
    except TimeoutError:
        raise ClusterError(f"could not send {what} ({size / 2**20:.0f} MiB) to the workers in "
                           f"{STALL_SECONDS:.0f} s; {memory_advice(client)}") from None


_limits: dict = {}

#: The clients :func:`connect` opened: the command's, whose workers its options size. A client of the Python
#: API's user is not here, and advice for it names no option of the command (user trial r18)
_command_clients: weakref.WeakSet = weakref.WeakSet()


def memory_advice(client) -> str:
    """What the cluster has and what to change, for messages about dying workers.

    The limits and the idle-worker floor are those seen while workers lived (a failure
    is often reported when none is left). The command's options (``--memory-limit``, ``--chunk-rows``,
    ...) are named for its clients only (:data:`_command_clients`); for a client of the Python API's
    user, what sizes their workers and chunks (:func:`_python_memory_advice`).
    """
    if client is None:
        return ""
    try:
        info = workers(client)
    except Exception:
        info = {}
    limits = sorted({int(w.get("memory_limit") or 0) for w in info.values()}) or _limits.get(id(client), [])
    floor = worker_floor(client) if info or id(client) in _floors else 0
    have = ", ".join(f"{lim / 2**20:.0f} MiB" for lim in limits if lim) or "none"
    command = client in _command_clients
    text = f"worker memory limit {have}"
    if command and len(info) > 1 and threads_of_this_process(client):  # each has the process's: process_limit
        text = f"memory limit {have} for this process, its {len(info)} workers' --memory-limit together"
    if floor and threads_of_this_process(client):  # measured in a worker thread: the whole process's
        text += f", of which this process already takes {floor / 2**20:.0f} MiB idle"
    elif floor:
        text += f", of which an idle worker already takes {floor / 2**20:.0f} MiB"
    if not command:
        return _python_memory_advice(client, text)
    if getattr(client, "cluster", None) is None:
        # a cluster of yours (--scheduler): --memory-limit and --threads-per-worker set only the embedded
        # LocalCluster's workers, so naming them would send the user to options that change nothing
        return (f"{text}; start the workers with a higher memory limit (dask worker --memory-limit; "
                f"{_pausing()}), or lower --chunk-rows, or give the workers fewer "
                "threads (dask worker --nthreads)")
    if not threads_of_this_process(client):
        return (f"{text}; raise --memory-limit ({_pausing()}), or lower "
                "--chunk-rows, or use fewer --threads-per-worker")
    # a worker's memory is its process's, which here holds the command itself (its libraries, the client)
    return (f"{text}, the workers being threads of this process (--no-processes): the limit bounds all of it; "
            f"raise --memory-limit ({_pausing()}), or leave --no-processes out "
            "(worker processes of their own), or lower --chunk-rows")


def _python_memory_advice(client, text: str) -> str:
    """:func:`memory_advice` after ``text`` (what the cluster has) for a client of the Python API's user: the
    settings of their cluster and of their rows, none of the command's options."""
    chunks = "or pass the rows in smaller chunks (the Dask array's chunks; chunk_size for in-memory input)"
    if getattr(client, "cluster", None) is None:  # a scheduler of theirs: its workers were started apart
        return (f"{text}; start the workers with a higher memory limit (dask worker --memory-limit; "
                f"{_pausing()}), {chunks}, or give the workers fewer threads (dask worker --nthreads)")
    if threads_of_this_process(client):
        return (f"{text}, the workers being threads of this process (processes=False): the limit bounds all of it; "
                f"give the cluster a higher memory limit (LocalCluster(memory_limit=...); {_pausing()}), "
                f"or worker processes of their own (processes=True), {chunks}")
    return (f"{text}; give the cluster's workers a higher memory limit (LocalCluster(memory_limit=...); "
            f"{_pausing()}), {chunks}, or give them fewer threads (threads_per_worker=...)")


def pause_fraction() -> float:
    """The fraction of its memory limit at which distributed pauses a worker (``distributed.worker.memory.pause``;
    1 when pausing is off)."""
    import dask

    return dask.config.get("distributed.worker.memory.pause", 0.8) or 1.0


def _pausing() -> str:
    """What distributed does at a worker's memory limit, in this process's Dask config (which the embedded
    cluster's workers share; a scheduler's own workers read theirs)."""
    import dask

    pause = pause_fraction()
    if pause < 1:
        return f"distributed pauses a worker at {pause:.0%} of it"
    terminate = dask.config.get("distributed.worker.memory.terminate", 0.95)
    return (f"distributed restarts a worker at {terminate:.0%} of it" if terminate else
            "distributed neither pauses nor restarts a worker at it")


def paused_from_the_start(limit: int, floor: int) -> bool:
    """A worker with a memory limit of ``limit`` bytes (0: none) that takes ``floor`` bytes idle is past its pause
    threshold before it holds any data: it never runs a task."""
    return 0 < limit * pause_fraction() <= floor


def paused_when_idle(client, floor: int) -> int:
    """The least memory limit of ``client``'s workers, in bytes, that ``floor`` already passes the pause threshold
    of (:func:`paused_from_the_start`), when the workers are threads of this process (whose memory is theirs,
    measured as ``floor``); else 0."""
    if not floor or not threads_of_this_process(client):
        return 0
    limits = [int(w.get("memory_limit") or 0) for w in workers(client).values()]
    return min((lim for lim in limits if paused_from_the_start(lim, floor)), default=0)


def every_worker_paused(info: dict) -> bool:
    """Every worker of a listing (:func:`workers`) is paused (for memory); False for none."""
    return bool(info) and all(w.get("status") == "paused" for w in info.values())


def all_paused(client) -> bool:
    """Every worker the scheduler lists is paused (:func:`every_worker_paused`); False without workers, or when
    they cannot be listed."""
    try:
        return every_worker_paused(workers(client, timeout=STALL_SECONDS))
    except Exception:
        return False


def threads_of_this_process(client) -> bool:
    """The workers of ``client``'s embedded LocalCluster are threads of this process (``processes=False``)."""
    return getattr(getattr(client, "cluster", None), "processes", True) is False


class SilentWorkerWarning(UserWarning):
    """A worker holding tasks a job waits for has stopped answering its scheduler (the cluster's
    state, not the numbers': not a RuntimeWarning)."""


def scheduler_lost(client) -> str | None:
    """"lost the connection to the scheduler ADDRESS" when ``client``'s scheduler went away (the client
    tries to reconnect, or has closed), else None."""
    if getattr(client, "status", "running") not in ("connecting", "closing", "closed"):
        return None
    return f"lost the connection to the scheduler {_scheduler_address(client)}"


def _scheduler_address(client) -> str:
    """The address of ``client``'s scheduler, for messages ("of the client" when it has none)."""
    return getattr(getattr(client, "scheduler", None), "address", None) or "of the client"


def _answer_seconds() -> float:
    """How long a wait's call to the scheduler waits for its answer: a frozen scheduler (stopped, its
    connection open) would hold a call without a bound forever."""
    return min(10.0, STALL_SECONDS / 4)


def _worker_ttl(client):
    """The scheduler's ``worker-ttl`` in seconds (after which it removes a worker that stopped
    answering), or None: none set, or not known. :class:`TimeoutError` when the scheduler does not answer."""
    try:
        return client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.worker_ttl,
                                       callback_timeout=_answer_seconds())
    except TimeoutError:
        raise
    except Exception:
        return None


def hung_task_bounds() -> tuple[float, float]:
    """``(timeout, factor)`` of the hung-task bound (see ``HUNG_TASK_TIMEOUT``): Dask config
    ``daskgmm.hung-task.timeout`` (seconds, or a duration such as ``"1 hour"``) and
    ``daskgmm.hung-task.factor``, else ``HUNG_TASK_TIMEOUT`` and ``HUNG_TASK_FACTOR``.

    Raises
    ------
    ValueError
        The timeout is not a duration above 0, or the factor not a number from 0 up.
    """
    import dask
    from dask.utils import parse_timedelta

    raw = dask.config.get("daskgmm.hung-task.timeout", HUNG_TASK_TIMEOUT)
    try:
        timeout = float(parse_timedelta(raw, default="s"))
    except (TypeError, ValueError, KeyError):
        timeout = math.nan
    if not 0 < timeout < math.inf:
        raise ValueError(f"Dask config daskgmm.hung-task.timeout: {raw!r} is not a duration above 0 (e.g. 600, "
                         "'10 minutes', '1 hour')")
    raw = dask.config.get("daskgmm.hung-task.factor", HUNG_TASK_FACTOR)
    try:
        factor = float(raw)
    except (TypeError, ValueError):
        factor = math.nan
    if not 0 <= factor < math.inf:
        raise ValueError(f"Dask config daskgmm.hung-task.factor: {raw!r} is not a number from 0 up (e.g. 10)")
    return timeout, factor


def wait_bounded(client, futures, what: str = "pass", ends=None, first_failure: bool = False) -> None:
    """Wait until every future is finished or failed, never forever; or, with ``ends``, until one failed with an
    exception for which ``ends(exc)`` is true (the others' tasks may still run: the caller cancels them); or,
    with ``first_failure``, until one failed, whose exception is raised then.

    ``first_failure`` is for reads, which leave nothing behind: a store gone silent fails every read task after
    its own bound (~60 s), and waiting for them all took a round of it per task a worker thread had left
    (user-trial-ops-r18: 281 s for 8 chunks on 2 threads).

    A worker that holds waiting tasks but has not answered the scheduler (its heartbeat) for
    ``STALL_SECONDS`` (stopped, frozen, its host unreachable) runs nothing: the scheduler removes it
    after its ``worker-ttl`` and the tasks run elsewhere, said in a :class:`SilentWorkerWarning`;
    on a scheduler without a ``worker-ttl`` nothing ever would, and it counts as a stall.

    Raises
    ------
    ClusterError
        For ``STALL_SECONDS`` the cluster had no worker, every worker was
        paused for memory, or no worker ran or held any of the waiting tasks
        (but silent ones, on a scheduler that never removes them). Or a task hung in a
        worker that answers: no task of the wait finished for the hung-task bound
        (:func:`hung_task_bounds`) while every one running had run longer than it.
    ValueError
        The hung-task bound's Dask config is not valid.
    """
    futures = [f for f in futures if f is not None]
    with seceded():  # in a task: its thread's slot goes to the tasks waited for
        _wait_bounded(client, futures, what, _any_failure if first_failure else ends)
    if first_failure:
        for f in futures:
            if f.status == "error":
                raise _advised(client, f.exception(timeout=_answer_seconds()))


def _advised(client, exc: BaseException) -> BaseException:
    """``exc``, and for distributed's ``KilledWorker`` (workers died again and again running one task) what to
    change as a note under its traceback (PEP 678; the type stays, for callers that catch it). A fit from
    Python said only distributed's words; the command says its own (``cli.runtime.explain_cluster_failure``)."""
    from distributed.scheduler import KilledWorker

    # the command's own clients: it replaces the error with its message (memory_advice there once, not twice)
    if isinstance(exc, KilledWorker) and client not in _command_clients \
            and not any("daskgmm:" in n for n in getattr(exc, "__notes__", [])):
        exc.add_note(f"daskgmm: workers died again and again running this task, most likely out of memory: "
                     f"{memory_advice(client)}")
    return exc


def _any_failure(exc) -> bool:
    return True


#: client -> the longest a task of its waits was seen to run, in seconds (the "job" of the hung-task bound);
#: weak: an entry goes with its client (keyed by id(), a process running job after job kept one per client,
#: and a new client given a freed one's id took its job's longest task)
_longest: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _running_tasks(client, keys, asked) -> tuple[list, list]:
    """The tasks running in workers that the futures of ``keys`` wait for, as the scheduler sees them
    (its ``WorkerState.executing``, from each worker's heartbeat): ``[(key, worker address, worker name,
    seconds run)]``; and those of ``asked`` (tasks seen running earlier) waiting or running again (their
    worker left) rather than finished. One call to the scheduler."""

    def look(keys, asked, dask_scheduler=None):
        import time as clock

        now = clock.time()  # the scheduler's clock, as its last_seen
        tasks = dask_scheduler.tasks
        # the tasks the futures still need: down from them through their dependencies to the tasks done.
        # Their graph only, on the scheduler's loop: climbing from every running task to see whether a
        # future needs it went through other jobs' graphs on a shared cluster (a shuffle's barrier has
        # thousands of dependents), seconds of the loop a look with hundreds of threads
        ours, todo = set(), [tasks[k] for k in keys if k in tasks]
        while todo and len(ours) < 100_000:  # a larger graph: the tasks beyond go unseen (a bound the later)
            ts = todo.pop()
            if ts in ours or ts.state in ("memory", "erred", "forgotten"):
                continue
            ours.add(ts)
            if ts.state != "processing":  # a running task's inputs are in memory
                todo.extend(ts.dependencies)

        running = []
        for ws in dask_scheduler.workers.values():
            for ts, ran in list(ws.executing.items()):  # kept until the next heartbeat: the state says
                if ts in ours and ts.state == "processing" and ts.processing_on is ws:
                    running.append((ts.key, ws.address, ws.name, ran + max(0.0, now - ws.last_seen)))
        again = [k for k in asked if k in tasks and tasks[k].state in ("waiting", "queued", "no-worker", "processing")]
        return running, again

    # defined here, not at module level: pickled by value, for a scheduler without daskgmm installed
    return client.run_on_scheduler(look, list(keys), list(asked), callback_timeout=_answer_seconds())


def _task_words(key) -> str:
    """A task's key, with its prefix and chunk when it has one (``('daskgmm-read-…', 3)``, ``daskgmm-chunk-…-3``)."""
    from dask.utils import key_split

    chunk = None
    if isinstance(key, (tuple, list)) and len(key) > 1 and isinstance(key[1], int):
        chunk = key[1]
        key = tuple(key)
    elif isinstance(key, str) and key.startswith("daskgmm-chunk-"):
        chunk = key.rsplit("-", 1)[-1]
    return f"{key!r} ({key_split(key)}" + (f", chunk {chunk})" if chunk is not None else ")")


class _HungTasks:
    """The hung-task bound of one wait: fails it when no task of it has finished (nor started) for
    ``max(timeout, factor x the longest task seen in the job)`` and every one of its tasks running has run
    that long. Looked at every 2 s while workers run its tasks, or every 60th of the bound if longer (10 s by
    default: a task's time is known to that much); a wait shorter than 2 s asks nothing. A look misses no
    progress: a task that finished or started since the last changes the tasks running."""

    def __init__(self, client, futures, what, start):
        self.client, self.futures, self.what = client, futures, what
        self.timeout, self.factor = hung_task_bounds()
        self.keys = [f.key for f in futures]
        self.since = start  # the last progress seen: the wait's start, or a change of its running tasks
        self.running = None  # {key: (worker address, worker name, seconds run)} at the last look
        self.done = sum(f.done() for f in futures)
        self.looked = -math.inf

    def bound(self) -> float:
        return max(self.timeout, self.factor * _longest.get(self.client, 0.0))

    def _seen(self, seconds) -> None:
        _longest[self.client] = max(_longest.get(self.client, 0.0), seconds)

    def finished(self) -> None:
        """The wait is over: the tasks running at the last look have finished."""
        for _, _, seconds in (self.running or {}).values():
            self._seen(seconds)

    def look(self, now, silent) -> None:
        """Raise :class:`ClusterError` if the bound is passed (tasks on ``silent`` workers aside: theirs
        are the stall rules')."""
        if now - self.looked < self.bound() / 60:  # each look a call to the scheduler (and a line in its log)
            return
        self.looked = now
        asked = list(self.running or ())
        try:
            listed, again = _running_tasks(self.client, self.keys, asked)
        except Exception:  # a scheduler that refuses run_on_scheduler, going away or not answering (bounded: a
            # frozen one, the next wait's first call tells): no look this time
            return
        running = {tuple(k) if isinstance(k, list) else k: (a, name, s) for k, a, name, s in listed}
        again = {tuple(k) if isinstance(k, list) else k for k in again}
        for key in set(asked) - set(running) - again:
            self._seen(self.running[key][2])  # finished: at least as long as seen running
        done = sum(f.done() for f in self.futures)
        if self.running is not None and (set(running) != set(self.running) or done != self.done):
            self.since = now
        self.running, self.done = running, done
        live = {k: v for k, v in running.items() if v[0] not in silent}
        bound = self.bound()
        if live and now - self.since > bound and min(s for _, _, s in live.values()) > bound:
            raise ClusterError(self._message(live, now - self.since, bound))

    def _message(self, live, stalled, bound) -> str:
        order = sorted(live.items(), key=lambda kv: -kv[1][2])
        held = "; ".join(f"worker {a} ({name}) has run task {_task_words(k)} for {s:.0f} s"
                         for k, (a, name, s) in order[:5])
        if len(order) > 5:
            held += f"; and {len(order) - 5} more"
        longest, bound, timeout = _longest.get(self.client, 0.0), round(bound, 1), round(self.timeout, 1)
        which = "that worker" if len({a for a, _, _ in live.values()}) == 1 else "those workers"
        return (f"a {self.what} made no progress for {stalled:.0f} s: {held}, and no other task of it finished: "
                "hung (a read from a dead network mount or a stuck object-store connection, a deadlock), or slower "
                f"than the bound of {bound:g} s = max(daskgmm.hung-task.timeout {timeout:g} s, "
                f"daskgmm.hung-task.factor {self.factor:g} x the longest task seen in this job, {longest:.1f} s); "
                f"a running task cannot be stopped: restart {which} (an embedded cluster closes with the job) "
                "and check what the task reads; if it is only slow, raise the bound (Dask config, e.g. "
                "DASK_DASKGMM__HUNG_TASK__TIMEOUT='1 hour')")


#: Each wait for the futures, in seconds, before the scheduler is asked about the cluster
_WAIT_STEP = 2.0

#: The stall reason of a scheduler that does not answer (its message says for how long)
_NO_ANSWER = "the scheduler does not answer"
_NO_WORKERS = "the cluster has no workers (they died or never started)"


def _no_workers_advice(client) -> str:
    """What to do about a cluster left without workers."""
    advice = memory_advice(client)
    if getattr(client, "cluster", None) is None:
        # a cluster of the user's: workers killed or preempted are as likely as memory, and none comes back
        again = "run the job again" if client in _command_clients else "fit again"
        advice = (f"start workers for it again (dask worker {_scheduler_address(client)}) and {again}; "
                  f"if they died for want of memory: {advice}")
    return advice


def _gone_words(gone) -> str:
    """'its worker tcp://… is gone' or 'its 3 workers (tcp://…, …) are gone', with why none comes back."""
    named = ", ".join(gone[:5]) + (f" and {len(gone) - 5} more" if len(gone) > 5 else "")
    if len(gone) == 1:
        return f"its worker {named} is gone (killed, or out of memory) and no nanny is left to restart it"
    return f"its {len(gone)} workers ({named}) are gone (killed, or out of memory) and no nanny is left to restart them"


def _ended(futures, ends) -> bool:
    """Whether a failed future's exception ends the wait (``ends``, of :func:`wait_bounded`)."""
    for f in futures:
        if f.status == "error":
            try:
                if ends(f.exception(timeout=_answer_seconds())):
                    return True
            except Exception:  # its exception not had: the wait goes on
                pass
    return False


def _wait_bounded(client, futures, what, ends=None):
    from distributed import wait

    answered = time.monotonic()  # the scheduler's last answer
    stalled_since = None
    reason = ""
    heard = {}  # worker -> (its last heartbeat as the scheduler saw it, when that changed here)
    warned, ttl = set(), ...
    hung = _HungTasks(client, futures, what, time.monotonic())  # its config checked at once
    pending = futures  # with ends: those not finished yet
    while True:
        try:
            if ends is None:
                wait(futures, timeout=_WAIT_STEP)
                hung.finished()
                return
            done, pending = wait(pending, timeout=_WAIT_STEP, return_when="FIRST_COMPLETED")
            if any(f.status == "error" for f in done):
                if _ended(done, ends):
                    hung.finished()
                    return
                ends = None  # another failure: the rest is waited for, as without ends
            if not pending:
                hung.finished()
                return
            continue
        except TimeoutError:
            pass
        lost = scheduler_lost(client)
        if lost:  # asking the scheduler now would wait the client's reconnect (the connect timeout)
            raise ClusterError(f"{lost} in the middle of a {what} (it stopped or was restarted, or the network "
                               "failed)")
        now = time.monotonic()
        try:
            # each call bounded: a frozen scheduler (stopped, its connection open) would hold it forever
            # while no future finishes; not answering is a stall reason like the others
            info = workers(client, timeout=_answer_seconds())
            processing = client.sync(client.scheduler.processing, workers=None, callback_timeout=_answer_seconds())
            answered = now
        except TimeoutError:
            info = processing = None
        except Exception:  # the scheduler is going away: let the next wait or gather tell
            info, processing = {}, {}
        for address, w in (info or {}).items():  # compared with itself, not with this host's clock
            if heard.get(address, (None,))[0] != w.get("last_seen"):
                heard[address] = (w.get("last_seen"), now)
        silent = {a for a, tasks in (processing or {}).items()
                  if tasks and a in heard and now - heard[a][1] > STALL_SECONDS}
        if silent - warned and ttl is ...:
            try:
                ttl = _worker_ttl(client)
            except TimeoutError:
                info = None  # no answer: no word on the silent workers this time
        if silent - warned and ttl is not ...:
            names = ", ".join(f"{a} ({info[a].get('name')})" for a in sorted(silent - warned))
            then = (f"the scheduler removes a worker silent for longer than its worker-ttl ({ttl:.0f} s; it looks "
                    "now and then), then its tasks run "
                    "elsewhere" if ttl else "the scheduler has no worker-ttl and will never remove it: the "
                    f"{what} fails")
            import warnings

            warnings.warn(f"worker {names} holds tasks of a {what} and has not answered the scheduler for "
                          f"{STALL_SECONDS:.0f} s (stopped, frozen or its host unreachable); {then}",
                          SilentWorkerWarning, stacklevel=2)
            warned |= silent
        if info is None:
            problem = _NO_ANSWER
        elif not info:
            problem = _NO_WORKERS
            gone = none_can_return(client)
            if gone:  # the stall bound is for workers that may come back: these cannot
                raise ClusterError(f"a {what} cannot go on: the cluster of the scheduler {_scheduler_address(client)} "
                                   f"has no worker left: {_gone_words(gone)}; {_no_workers_advice(client)}")
        elif every_worker_paused(info):
            problem = f"every worker is paused: its memory is above {pause_fraction():.0%} of its limit"
        elif not any(tasks for a, tasks in processing.items() if not (ttl is None and a in silent)):
            problem = ("no worker is running any of its tasks" if not silent else
                       f"the workers holding its tasks ({', '.join(sorted(silent))}) have not answered the scheduler "
                       f"for over {STALL_SECONDS:.0f} s (stopped, frozen or their host unreachable), and the "
                       "scheduler has no worker-ttl to remove them")
        else:
            stalled_since = None
            hung.look(now, silent)
            continue
        if stalled_since is None or problem != reason:
            stalled_since, reason = now, problem
        elif now - stalled_since > STALL_SECONDS:
            if problem == _NO_ANSWER:
                raise ClusterError(
                    f"a {what} made no progress for {STALL_SECONDS:.0f} s: the scheduler {_scheduler_address(client)} "
                    "has not answered "
                    f"for {time.monotonic() - answered:.0f} s (stopped, frozen or its host unreachable); restart it, "
                    "or check the network to it")
            advice = ("start it again or restart it, or set the scheduler's distributed.scheduler.worker-ttl"
                      if silent and "worker-ttl" in reason else
                      _no_workers_advice(client) if reason == _NO_WORKERS else memory_advice(client))
            raise ClusterError(f"a {what} made no progress for {STALL_SECONDS:.0f} s: {reason}; {advice}")


def compute_bounded(*collections, what: str = "computation"):
    """``dask.compute(*collections)``, never waiting forever on a cluster that cannot finish.

    With a distributed client (the default one, or the one current) the results are waited
    for by :func:`wait_bounded`: a cluster left without workers, or whose workers are all paused
    or run none of the tasks, fails it with :class:`ClusterError` after ``STALL_SECONDS``
    instead of holding the caller. Without one, Dask's local scheduler computes them.
    """
    import dask

    client = active_client()
    if client is None:
        return dask.compute(*collections, scheduler=local_scheduler())
    # (not cancelled after a failure: their keys may be those of data a caller holds, persisted)
    futures = client.compute(list(collections))
    wait_bounded(client, futures, what, first_failure=True)
    return tuple(client.gather(futures))


def _block_rows(block) -> int:
    return int(block.shape[0])


def _block_columns(block) -> int:
    return int(block.shape[1])


def _same(block):
    return block


def with_known_columns(X):
    """A 2-D Dask array with the width of every column chunk known.

    Dask leaves it unknown (NaN) where it cannot infer it (``map_blocks`` without ``chunks=``,
    ``from_delayed`` with a NaN in ``shape``); every block of a column chunk has one width, so the
    first chunk of rows tells it: one small task per column chunk, waited for by :func:`compute_bounded`.
    Without it the width was NaN in every check (a fit failed on 'cannot convert float NaN to integer').
    """
    import math

    import dask

    if getattr(X, "ndim", 0) != 2 or not any(math.isnan(c) for c in X.chunks[1]):
        return X
    first = X.to_delayed().reshape(X.numblocks)[0]
    widths = compute_bounded(*[dask.delayed(_block_columns)(b) for b in first], what="count of columns per chunk")
    return X.map_blocks(_same, chunks=(X.chunks[0], tuple(int(w) for w in widths)), dtype=X.dtype, meta=X._meta)


def with_known_rows(X):
    """A Dask array (or a Dask DataFrame's rows as one) with the rows of every chunk known.

    Unknown sizes (a Dask DataFrame's partitions, boolean indexing) are counted by one small
    task per partition or chunk, waited for by :func:`compute_bounded` (Dask's ``lengths=True``
    and ``compute_chunk_sizes`` count the same way but wait without a bound).
    """
    import math

    import dask

    if hasattr(X, "to_dask_array"):
        # dask-expr may fuse the partitions of a narrow column selection when it builds the array, and
        # again, maybe otherwise, when it counts (dd.read_parquet(p)[["a"]]: 2 blocks of 4 partitions),
        # which Dask's to_dask_array(lengths=...) refuses: the frame's partitions are counted as they
        # are only when nothing is fused, else the array's own blocks
        arr = X.to_dask_array()
        if arr.numblocks[0] == X.npartitions:
            lengths = compute_bounded(X.map_partitions(len), what="count of rows per chunk")[0]
            if len(lengths) == X.npartitions:
                return arr.map_blocks(_same, chunks=(tuple(int(n) for n in lengths),) + arr.chunks[1:],
                                      dtype=arr.dtype, meta=arr._meta)
        X = arr
    if not any(math.isnan(c) for c in X.chunks[0]):
        return X
    blocks = X.to_delayed().reshape(X.numblocks[0], -1)[:, 0]
    rows = compute_bounded(*[dask.delayed(_block_rows)(b) for b in blocks], what="count of rows per chunk")
    return X.map_blocks(_same, chunks=(tuple(rows),) + X.chunks[1:], dtype=X.dtype, meta=X._meta)


def local_memory() -> int:
    """Memory available to this process in bytes."""
    import psutil

    return int(psutil.virtual_memory().available)
