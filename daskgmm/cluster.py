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
import os
import threading

_pin_lock = threading.Lock()
_pinned = False
_controller = None


def active_client():
    """The default ``distributed.Client`` if one is active, else None."""
    try:
        from distributed import default_client
    except ImportError:  # pragma: no cover - distributed is a dependency
        return None
    try:
        return default_client()
    except ValueError:
        return None


@contextlib.contextmanager
def blas_threads(n: int = 1):
    """Limit BLAS threads in this process for the duration of the block."""
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()  # scanning loaded libraries is slow: once
    with _controller.limit(limits=n, user_api="blas"):
        yield


def pin_worker_blas() -> None:
    """Pin BLAS to one thread, once per process, when running inside a Dask worker.

    Called at the start of every chunk task: cheap after the first call.
    Outside a distributed worker it does nothing (the caller limits threads).
    """
    global _pinned
    if _pinned:
        return
    with _pin_lock:
        if _pinned:
            return
        try:
            from distributed import get_worker

            get_worker()
        except (ImportError, ValueError):
            return
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1, user_api="blas")
        _pinned = True


@contextlib.contextmanager
def connect(
    scheduler: str | None = None,
    *,
    n_workers: int | None = None,
    threads_per_worker: int | None = None,
    memory_limit: str | int | None = "auto",
    security=None,
    processes: bool = True,
    quiet: bool = True,
):
    """A ``distributed.Client`` for the duration of the block.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:8786``, ``tls://…``).
        Without it an embedded LocalCluster is started on 127.0.0.1 and closed
        at exit.
    n_workers, threads_per_worker, memory_limit, processes :
        LocalCluster settings (ignored with ``scheduler``).
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
        with Client(scheduler, set_as_default=True, **kwargs) as client:
            yield client
        return
    if n_workers is None:
        n_workers = min(os.cpu_count() or 1, 4) if threads_per_worker is None else max(
            1, (os.cpu_count() or 1) // threads_per_worker
        )
    if threads_per_worker is None:
        threads_per_worker = max(1, (os.cpu_count() or 1) // n_workers)
    cluster = LocalCluster(
        n_workers=n_workers,
        threads_per_worker=threads_per_worker,
        memory_limit=memory_limit,
        processes=processes,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",  # no fixed port, loopback only
        silence_logs=logging.ERROR if quiet else logging.WARNING,
    )
    try:
        with Client(cluster, set_as_default=True) as client:
            yield client
    finally:
        cluster.close()


def workers(client) -> dict:
    """Every worker the scheduler knows: address -> info (recent distributed lists 5 by default)."""
    try:
        return client.scheduler_info(n_workers=-1)["workers"]
    except TypeError:  # older distributed without n_workers
        return client.scheduler_info()["workers"]


def cluster_memory(client) -> int:
    """Sum of the workers' memory limits in bytes (0 when unknown or unlimited)."""
    limits = [w.get("memory_limit") or 0 for w in workers(client).values()]
    if not limits or any(lim == 0 for lim in limits):
        return 0
    return int(sum(limits))


def local_memory() -> int:
    """Memory available to this process in bytes."""
    import psutil

    return int(psutil.virtual_memory().available)
