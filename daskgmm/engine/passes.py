"""The pass engine: passes over a row-chunked Dask array, with a fixed merge tree.

Nothing here knows covariance algebra. A pass sends one small *plan* (the
requests: parameters of every model in the list) to the cluster, maps every
chunk to partial results with :func:`daskgmm.kernels.chunk_pass`, merges them in
a fixed tree (``split_every`` at a time) and returns the merged result to the
client. Chunks kept in cluster memory lie in contiguous runs, one per worker, and
a pass runs one batch per worker thread over its run, merging the subtrees of the
tree that lie inside it: outside the task graph (one ``client.run``: each worker
runs its batches on the chunks it holds), or as tasks when that cannot be done
(the first pass, a worker gone or paused, a chunk lost); chunks read on every
pass get a task each.

A pass as tasks builds a new small graph that references the data's graph
(persisted futures, or the Parquet reads when out of core) and nothing from
earlier iterations, so graphs never grow with the iteration count. Because the
tree's shape depends only on the chunking, a pass gives bitwise the same result
whichever worker runs which task, however the chunks are batched, and after a
worker dies, when every worker runs the same BLAS and block kernels (one kind of
CPU); another chunking or kernel gives the same result to rounding.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import time
import uuid
import warnings
import weakref
from dataclasses import dataclass

import numpy as np

from daskgmm.engine.channel import Channel
from daskgmm.engine.channel import seen as channel_seen
from daskgmm.engine.cluster import (
    STALL_SECONDS,
    active_client,
    blas_threads,
    local_scheduler,
    pin_worker_blas,
    seceded,
    ship,
    wait_bounded,
    with_known_rows,
)
from daskgmm.engine.placement import persist_local, persist_placed, should_persist
from daskgmm.engine.tree import children, merge_levels, subtree_merges
from daskgmm.kernels import SampleRequest, ScanRequest, bounds, chunk_pass, merge_partials
from daskgmm.kernels.protocol import issparse as is_sparse_chunk
from daskgmm.kernels.scan import far_columns  # a chunk of sparse rows (no SciPy import)

#: Passes over placed chunks call the workers over a :class:`~daskgmm.engine.channel.Channel` of their
#: own when they can (False, or Dask config ``daskgmm.pass-channel: false``: always through ``client.run``).
CHANNEL = True

#: The first scan also draws a uniform sample of rows (by sample weight, keyed by
#: row number: the same rows for any chunking) for the initialisations: at most this
#: many rows and :data:`SCAN_SAMPLE_BYTES` of float64 (each chunk returns that much).
SCAN_SAMPLE_ROWS = 32768
SCAN_SAMPLE_BYTES = 4 << 20
#: Stream of the scan's sample, and of the larger one an initialisation draws when it is too
#: small (fixed: the scan runs before any seed is known; the seeds act on what is done with it).
SCAN_SAMPLE_KEY = 0x5CA17
#: Rows of the scan's sample of sparse rows: a fixed number, since bytes per row are not
#: known before the scan and the sample must not depend on the chunking (4096 rows of 100
#: non-zeros are 5 MiB). An initialisation that needs more draws them in one pass.
SPARSE_SCAN_SAMPLE_ROWS = 4096
#: A mean sample weight below this (2**-20, ~1e-6) is scaled up by :meth:`ChunkedData.rescale_weights`
#: for a fit that is the same for any scale of the weights: above it, scikit-learn's ``10 eps`` added to
#: a component's weight sum is under ~2e-9 of a row's weight; weights nearer 1 are left as given.
TINY_MEAN_WEIGHT = 2.0**-20


def tiny_weight_factor(weight: float, rows: int) -> float:
    """The power of two that brings a mean sample weight ``weight / rows`` below ``TINY_MEAN_WEIGHT`` to
    [1, 2), else 1.0 (also for no rows or no positive weight). Exact and scale-equivariant: weights ``2**k``
    times as large get a factor ``2**-k`` times as large while both are tiny, so the products are the same
    bits (``np.frexp`` reads the exponent exactly; a logarithm can round across a power of two).
    Shared by :meth:`ChunkedData.rescale_weights` and online EM's M-step scale.
    """
    if not rows or not weight > 0:
        return 1.0
    mean = weight / rows
    if not mean < TINY_MEAN_WEIGHT:
        return 1.0
    # mean = m 2**e with m in [0.5, 1): 2**(1 - e) mean in [1, 2); at most 2**1000 (subnormal weights come up
    # to ~1e-2, no overflow)
    return float(np.ldexp(1.0, min(1000, 1 - int(np.frexp(mean)[1]))))


def is_sparse_array(X) -> bool:
    """A Dask array whose chunks are scipy.sparse matrices (by its meta)."""
    return is_sparse_chunk(getattr(X, "_meta", None))


@dataclass(frozen=True)
class _Plan:
    requests: list
    centre: np.ndarray | None
    block_rows: int | None
    #: Let chunk tasks use the compiled core (:mod:`daskgmm.kernels.compiled`; each worker runs the
    #: variant its CPU takes, so a cluster of one kind of machine gives the same bits whichever
    #: worker runs a chunk).
    compiled: bool = True
    #: A power of two every sample weight is multiplied by (:meth:`ChunkedData.rescale_weights`): exact.
    weight_scale: float = 1.0
    #: False: the rows of positive weight count one each, their sample weights left out
    #: (:meth:`ChunkedData.unweighted`).
    weighted: bool = True


def _chunk_task(x, w, row0, plan: _Plan):
    pin_worker_blas()
    if not plan.weighted:
        # each row counts once, but a row of weight 0 is no part of the fit: it counted as one of a
        # component's rows (2 rows of weight 1 among 600 of weight 0: "component 0 on 392 row(s)")
        w = None if w is None or (np.asarray(w) > 0).all() else (np.asarray(w) > 0).astype(np.float64)
    elif w is not None and plan.weight_scale != 1.0:  # rows counted are not rescaled (they counted 2^49 each)
        w = np.asarray(w, np.float64) * plan.weight_scale
    if is_sparse_chunk(x):
        # imported here: a worker of dense data never imports SciPy
        from daskgmm.kernels.sparse import sparse_chunk_pass

        return sparse_chunk_pass(x, plan.requests, plan.centre, sample_weight=w, row0=row0)
    return chunk_pass(x, plan.requests, plan.centre, sample_weight=w, row0=row0, block_rows=plan.block_rows,
                      compiled=plan.compiled)


def _merge_task(plan: _Plan, *parts):
    return functools.reduce(lambda a, b: merge_partials(plan.requests, a, b), parts)


def _batch_task(plan: _Plan, levels, split_every, items):
    """Chunks held by one worker, one after another, and every merge of the tree among them.

    ``items`` are ``(index, x, w, row0)`` in row order. A merge runs as soon as its
    children are done (memory: a few partials per level). Returns ``{node: partial}``
    for the batch's frontier (:func:`subtree_merges`).
    """
    merges, _ = subtree_merges([i for i, *_ in items], levels, split_every)
    nodes = {}
    for i, x, w, row0 in items:
        node = (0, i)
        nodes[node] = _chunk_task(x, w, row0, plan)
        while True:
            parent = (node[0] + 1, node[1] // split_every)
            kids = merges.get(parent)
            if kids is None or any(k not in nodes for k in kids):
                break
            nodes[parent] = _merge_task(plan, *[nodes.pop(k) for k in kids])
            node = parent
    return nodes


async def _direct_batches(plan: _Plan, levels, split_every, jobs, dask_worker=None):
    """This worker's batches of a pass, run in its threads outside the task graph (``client.run``).

    ``jobs`` maps worker addresses to their batches, each a list of ``(index, key, weight key,
    row0)`` naming persisted chunks this worker holds. Returns ``(the worker's id, each batch's
    frontier)`` (the frontiers as :func:`_batch_task`'s; the id, ``Worker.id``, tells the channel's
    back-off which process answered: :func:`daskgmm.engine.channel.seen`), the frontiers None when a
    chunk is not here (a worker died, the scheduler moved it) or the worker is not running (paused
    for memory): the caller then runs the pass as tasks, and the scheduler recomputes what was lost,
    or the pass waits for the worker within its bound.
    """
    _quiet_direct_log()
    return dask_worker.id, await _worker_batches(plan, levels, split_every, jobs, dask_worker)


async def _worker_batches(plan: _Plan, levels, split_every, jobs, dask_worker):
    """:func:`_direct_batches`' frontiers, or None."""
    if getattr(dask_worker.status, "name", "") != "running":
        return None  # paused for memory (or closing): the tasks wait for it, within the stall bound
    data = dask_worker.data
    batches = []
    for items in jobs.get(dask_worker.address, ()):
        got = []
        for i, key, wkey, row0 in items:
            # read here, in the worker's event loop, as a task's inputs are: the spill buffer is not thread-safe
            if key not in data or (wkey is not None and wkey not in data):
                return None
            got.append((i, data[key], None if wkey is None else data[wkey], row0))
        batches.append(got)
    if not batches:
        return None
    loop = asyncio.get_running_loop()
    return await asyncio.gather(*[
        loop.run_in_executor(dask_worker.executor, _direct_batch, plan, levels, split_every, got) for got in batches
    ])


def _direct_batch(plan, levels, split_every, items):
    pin_worker_blas(in_worker=True)  # an executor thread outside a task: get_worker() does not know it
    return _batch_task(plan, levels, split_every, items)


async def _run_on_workers(client, workers, function, *args) -> dict:
    """``client.run(function, *args, workers=workers, on_error="return")``: each worker's result, or what
    it raised; where a direct pass calls the workers when it has no :class:`~daskgmm.engine.channel.Channel`
    (TLS, workers not reachable from here, or :data:`CHANNEL` off). Through the scheduler: the client's
    own connections to the workers by distributed's ``run`` message saved 0.3-0.4 ms of a 20 ms k-means
    iteration in two runs of three and nothing in the third (docs/performance.md, tenth round); a
    channel of the pass's own saves ~1 ms of each round trip (twelfth round). Not bounded here: the
    caller's is."""
    return await client.run(function, *args, workers=workers, on_error="return", asynchronous=True)


_direct_log_quiet = False


def _quiet_direct_log() -> None:
    """Keep a worker's log free of distributed's "Run out-of-band function" line for every pass (once per process)."""
    global _direct_log_quiet
    if _direct_log_quiet:
        return
    import logging

    class _Filter(logging.Filter):
        def filter(self, record):
            return not (record.msg == "Run out-of-band function %r" and record.args
                        and str(record.args[0]).endswith("_direct_batches"))

    logging.getLogger("distributed.worker").addFilter(_Filter())
    _direct_log_quiet = True


def _merge_up(plan: _Plan, levels, split_every, values: dict) -> list:
    """Every merge of the tree above ``values`` (``{node: partial}``: the batches' frontiers), in the tree's
    order, here; returns the top level's partials (what merge tasks would compute, bit for bit)."""
    top = [(len(levels) - 1, j) for j in range(levels[-1])]
    todo = list(top)
    while todo:
        node = todo[-1]
        if node in values:
            todo.pop()
            continue
        kids = children(node, levels, split_every)
        missing = [k for k in kids if k not in values]
        if missing:
            todo.extend(missing)
            continue
        todo.pop()
        values[node] = _merge_task(plan, *[values.pop(k) for k in kids])
    return [values[node] for node in top]


def _merge_sources(plan: _Plan, sources):
    """Merge nodes taken from batch results (``(dict, node)``) or merge results (``(partial, None)``)."""
    return _merge_task(plan, *[value if node is None else value[node] for value, node in sources])


class ChunkedData:
    """Rows of a Dask array as the passes see them.

    Parameters
    ----------
    X : dask.array.Array, shape (N, D)
        Floating-point rows; columns are merged into one chunk.
    sample_weight : dask.array.Array, shape (N,), optional
    cache : {"auto", "memory", "none"}
        Keep the rows in (cluster) memory for all passes, re-read them on
        every pass (out of core: memory stays bounded by a few chunks per
        worker), or decide by size: in memory when the data take less than
        ``daskgmm.engine.placement.MEMORY_FRACTION`` of the workers' memory limits.
    in_memory : bool
        The array is backed by NumPy data in this process (then "auto" keeps it
        as it is locally, and ships it to the cluster once with a client).
    block_rows : int, optional
        Rows per cache-sized block inside a chunk.
    split_every : int
        Fan-in of the reduction tree.
    """

    def __init__(self, X, sample_weight=None, *, cache="auto", in_memory=False, block_rows=None, split_every=8):
        if cache not in ("auto", "memory", "none"):
            raise ValueError(f"cache must be 'auto', 'memory' or 'none'; got {cache!r}")
        if X.ndim != 2:
            raise ValueError(f"expected a 2-D array, got {X.ndim}-D")
        #: chunks are scipy.sparse CSR (k-means only: daskgmm.kernels.sparse)
        self.sparse = is_sparse_array(X)
        if X.numblocks[1] != 1:
            X = X.rechunk({1: -1})
        X = with_known_rows(X)
        if sample_weight is not None:
            sample_weight = sample_weight.rechunk((X.chunks[0],))
        self.client = active_client()
        self.persisted = should_persist(self.client, X, cache, in_memory, self.sparse)
        self.offsets = np.concatenate([[0], np.cumsum(X.chunks[0])]).astype(np.int64)
        self._futures = self._wfutures = None
        self._targets: list = []  # each chunk's worker (None: unrestricted); set with the futures
        self._batches: list = []  # (worker, chunk indices) of each batch task; set with the futures
        #: passes over placed chunks run outside the task graph until one fails (see _run_direct)
        self.direct = True
        self.direct_passes = 0  # how many did
        self._channel = None  # the direct passes' connections to the workers (engine.channel), once opened
        self._slowest = 0.0  # seconds of the longest pass so far (the bound of a direct pass's wait)
        if self.persisted and self.client is not None:
            # the passes' chunks: the data's, some cut at the threads' shares of the rows (no chunk larger)
            with warnings.catch_warnings():
                if in_memory:  # the rows of an in-memory array go in the graph, as they must; distributed's
                    # advice to load them with Dask is about a graph the caller never made
                    warnings.filterwarnings("ignore", "Sending large graph", UserWarning)
                placed = persist_placed(self.client, X, sample_weight, np.diff(self.offsets))
            self._futures, self._wfutures = placed.futures, placed.weight_futures
            self._targets, self._batches = placed.targets, placed.batches
            self.offsets = np.concatenate([[0], np.cumsum(placed.sizes)]).astype(np.int64)
        elif self.persisted:
            X, sample_weight = persist_local(X, sample_weight)
        self.X = X
        self.sample_weight = sample_weight
        self.block_rows = block_rows
        self.split_every = max(2, int(split_every))
        self._blocks = list(X.to_delayed(optimize_graph=False).ravel())
        self._wblocks = (
            [None] * len(self._blocks)
            if sample_weight is None
            else list(sample_weight.to_delayed(optimize_graph=False).ravel())
        )
        self._scan = None
        #: every pass multiplies the sample weights by this (:meth:`rescale_weights`)
        self.weight_scale = 1.0
        self._weighted = True
        self._sample = self._sample_rows = self._sample_weights = None
        self._sample_complete = False
        self.passes = 0

    @property
    def n_rows(self) -> int:
        return int(self.offsets[-1])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    @property
    def dtype(self) -> np.dtype:
        return self.X.dtype

    def _ship(self, plan: _Plan):
        """The plan as tasks take it: itself when small, else a future of it on every worker (:func:`ship`)."""
        return ship(self.client, plan, "a pass's parameters")

    def graph(self, requests: list, centre=None) -> list:
        """The Delayed partial results of one pass, reduced on the cluster to at most
        ``split_every`` (a fixed tree: the result does not depend on which worker runs what).

        The plan (a few KiB: the parameters of every model) travels inside each
        chunk task rather than as a task of its own, which would cost every
        chunk task a fetch before it could start; a plan over ``INLINE_BYTES``
        (k-means centres of wide sparse rows) is scattered to the workers once instead.
        """
        from dask import delayed

        plan = self._ship(self._plan(requests, centre))
        tag = uuid.uuid4().hex[:12]
        # placed chunks may be pieces of the data's (persist_placed): their futures are the chunks
        blocks, wblocks = (self._blocks, self._wblocks) if self._futures is None else (self._futures, self._wfutures)
        parts = [
            # dask_key_name names the task (a name given to delayed() names the function's wrapper only)
            delayed(_chunk_task, pure=False, traverse=False)(
                b, w, int(self.offsets[i]), plan, dask_key_name=f"daskgmm-chunk-{tag}-{i}"
            )
            for i, (b, w) in enumerate(zip(blocks, wblocks))
        ]
        level = 0
        se = self.split_every
        while len(parts) > se:
            level += 1
            parts = [
                delayed(_merge_task, pure=False, traverse=False)(
                    plan, *parts[i : i + se], dask_key_name=f"daskgmm-merge-{tag}-{level}-{j}"
                )
                for j, i in enumerate(range(0, len(parts), se))
            ]
        return parts

    def _plan(self, requests, centre) -> _Plan:
        centre = None if centre is None else np.asarray(centre, np.float64)
        return _Plan(list(requests), centre, self.block_rows, compiled=True, weight_scale=self.weight_scale,
                     weighted=self._weighted)

    @contextlib.contextmanager
    def unweighted(self):
        """The passes inside count every row of positive weight once, their sample weights left out: a
        component's rows (a collapse is about how many rows its covariance is estimated from, not about their
        weight; a row of weight 0 is none of them)."""
        self._weighted = False
        try:
            yield self
        finally:
            self._weighted = True

    def run(self, requests: list, centre=None) -> list:
        """One pass: every request over every chunk, merged. Returns one result per request."""
        import dask

        self.passes += 1
        t0 = time.perf_counter()
        if self.client is not None and self.persisted:
            results = self._run_placed(requests, centre)
        elif self.client is not None:
            futures = self.client.compute(self.graph(requests, centre))
            # never wait forever on a cluster that cannot finish; a failed read fails the pass at once
            wait_bounded(self.client, futures, first_failure=True)
            results = self.client.gather(futures)
        else:
            with blas_threads(1):
                results = dask.compute(*self.graph(requests, centre), scheduler=local_scheduler())
        self._slowest = max(self._slowest, time.perf_counter() - t0)
        # the last level of the tree is merged here, in a fixed order
        return functools.reduce(lambda a, b: merge_partials(requests, a, b), results)

    def _run_direct(self, requests, centre) -> list | None:
        """A pass over placed chunks without tasks: each worker runs its batches (``client.run``), the
        client merges what is left of the tree. None when a worker or a chunk is missing, or anything fails.
        Every batch must have its worker.

        A pass as tasks costs a round of the scheduler's graph and task machinery: on the two-core
        bench host ~10 ms of the client process's CPU (its scheduler) and 10-15 ms of latency for two
        trivial tasks, against ~2.5 ms and 3-5 ms for ``client.run``. The same batches and merges in
        the same order: the same bits as the tasks. The wait (opening the channel included) is bounded by
        ``STALL_SECONDS`` plus ten times the longest pass so far (a worker stopped, not dead, would hold it
        forever).
        """
        plan = self._plan(requests, centre)
        se = self.split_every
        levels = merge_levels(len(self._futures), se)
        jobs: dict = {}
        for target, idx in self._batches:
            jobs.setdefault(target, []).append([
                (i, self._futures[i].key, None if self._wfutures[i] is None else self._wfutures[i].key,
                 int(self.offsets[i]))
                for i in idx
            ])
        client = self.client
        # bounded (a worker frozen, not dead, would never answer), far above what passes take
        bound = STALL_SECONDS + 10 * self._slowest

        async def call():
            run = asyncio.ensure_future(_run_on_workers(client, sorted(jobs), _direct_batches, plan, levels, se, jobs))
            try:
                # a worker the scheduler no longer knows (it died; a restarted one has another address) would
                # hold the call for distributed's connect timeout (30 s) before failing: the scheduler is asked
                # at the same time (~0.5 ms, answered first), and the call dropped if one is missing
                if not set(jobs) <= set(await client.nthreads(asynchronous=True)):
                    run.cancel()
                    return None
            except BaseException:
                run.cancel()
                raise
            return await run

        # one bound for all of it: opening the channel (its client.run waits for a frozen worker too) and the call
        deadline = time.monotonic() + bound
        channel = self._open_channel(jobs, bound)
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        try:
            with seceded():  # in a task: the batches run in the worker's threads, its own among them
                if channel is not None:
                    out = channel.call(_direct_batches, (plan, levels, se, jobs), left)
                else:
                    out = client.sync(call, callback_timeout=left)
        except Exception:  # the scheduler or a worker went away, or the bound: the task path tells, or recovers
            return None
        if out is None:
            return None
        out = {w: got if isinstance(got, tuple) and len(got) == 2 else (None, None) for w, got in out.items()}
        if channel is None:  # a worker in its channel's back-off: restarted, it gets the channel at the next pass
            channel_seen({w: wid for w, (wid, _) in out.items()})
        values: dict = {}
        for target, batches in jobs.items():
            got = out.get(target, (None, None))[1]
            if not isinstance(got, list) or len(got) != len(batches):
                return None  # a worker failed or lost a chunk (an error in the pass is raised again by the tasks)
            for frontier in got:
                values.update(frontier)
        self.direct_passes += 1
        return _merge_up(plan, levels, se, values)

    def _open_channel(self, jobs, bound) -> Channel | None:
        """The direct passes' channel to the workers of ``jobs``, opened at the first direct pass (None:
        passes go through ``client.run``). A channel that could not be opened is tried again by a later pass
        once its workers' back-off is over (``engine.channel.BACKOFF_SECONDS``: no pass pays for more than one
        opening in a period); one that failed in a call is not: the pass that saw it fail runs as tasks, and so
        do all after it."""
        import dask

        on = dask.config.get("daskgmm.pass-channel", True)
        if isinstance(on, str):  # a word set in Python (dask.config.set({"daskgmm.pass-channel": "false"}))
            on = on.strip().lower() not in ("false", "0", "no", "off")
        if not CHANNEL or not on:
            return None
        if self._channel is not None and self._channel.workers == set(jobs):
            return self._channel
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        with seceded():
            self._channel = Channel.open(self.client, jobs, bound)
        if self._channel is not None:
            # closed when these data go (a fit's end): the worker's side then ends too
            weakref.finalize(self, self._channel.close)
        return self._channel

    def _run_placed(self, requests, centre) -> list:
        """A pass over persisted chunks with the futures API: one task per batch of a worker's chunks.

        A task per chunk cost ~2 ms of the worker's time between tasks and kept the
        scheduler and client busy on the same cores (measured on the 1M x 16 bench: 166
        against 148 ms per EM iteration). Each batch merges the subtrees of the fixed
        tree that lie wholly in it, in the tree's order; merge tasks and the client
        do the rest. So the bits are those of a task per chunk, for any placement.
        """
        # the first pass (the scan) as tasks: its time bounds the wait of the direct passes after it
        if self.direct and self._slowest > 0 and self._batches and all(t is not None for t, _ in self._batches):
            out = self._run_direct(requests, centre)
            if out is not None:
                return out
            self.direct = False  # tasks from now on: the scheduler recomputes lost chunks, wherever
        client = self.client
        plan = self._ship(self._plan(requests, centre))
        se = self.split_every
        levels = merge_levels(len(self._futures), se)
        source: dict = {}  # node -> (future, key in its result or None)
        for target, idx in self._batches:
            items = [(i, self._futures[i], self._wfutures[i], int(self.offsets[i])) for i in idx]
            # a loose restriction: the chunks' worker when it is there, any other when it is not
            fut = client.submit(_batch_task, plan, levels, se, items, pure=False,
                                **({} if target is None else {"workers": [target], "allow_other_workers": True}))
            for node in subtree_merges(idx, levels, se)[1]:
                source[node] = (fut, node)

        # the nodes no batch returns, top-down (a loop: a recursive closure is a reference cycle,
        # which kept every pass's futures, and so their results on the workers, until a GC ran)
        todo = [(len(levels) - 1, j) for j in range(levels[-1])]
        while todo:
            node = todo[-1]
            kids = [] if node in source else children(node, levels, se)
            missing = [k for k in kids if k not in source]
            if missing:
                todo.extend(missing)
                continue
            todo.pop()
            if node not in source:
                source[node] = (client.submit(_merge_sources, plan, [source[k] for k in kids], pure=False), None)
        top = [source[(len(levels) - 1, j)] for j in range(levels[-1])]
        futures = list({f.key: f for f, _ in top}.values())
        wait_bounded(client, futures)  # never wait forever on a cluster that cannot finish
        values = dict(zip([f.key for f in futures], client.gather(futures)))
        return [values[f.key] if node is None else values[f.key][node] for f, node in top]

    def release(self, key: str) -> None:
        """Drop what the passes kept in the memory of this process and of the workers under ``key``
        (k-means' bounds, :mod:`daskgmm.kernels.bounds`), waiting at most ``STALL_SECONDS``: a worker
        that does not answer keeps them until its store's bound pushes them out."""
        bounds.forget(key)
        if self.client is None:
            return
        try:
            self.client.run(bounds.forget, key, on_error="return", callback_timeout=STALL_SECONDS)
        except Exception:  # the cluster went away or did not answer in time: nothing is lost but memory
            pass

    def scan(self):
        """Rows, weighted mean and variance, non-finite counts (one pass, cached).

        The same pass draws :meth:`sample`.
        """
        if self._scan is None:
            self._scan, sample = self.run([ScanRequest(), self._sample_request()])
            ok = np.isfinite(sample.keys[0])
            if not ok.any() and self._scan.weight > 0 and self.sample_weight is not None:
                # a row is drawn with its key E / w: under ~1e-306 every key overflowed, and the start indexed an
                # empty sample (an IndexError)
                raise ValueError("sample_weight: no row could be drawn for the start: the positive weights are "
                                 "all too small (below about 1e-306, where 1 / w overflows float64); scale them up "
                                 "(a maximum-likelihood fit is the same for any scale of the weights)")
            self._sample = sample.points[0][ok]
            self._sample_rows = sample.rows[0][ok]
            self._sample_weights = sample.weights[0][ok]
            # fewer drawn than asked for: every row that can be drawn was
            self._sample_complete = bool(not ok.all() or ok.size >= self.n_rows)
            if not self.sparse and self._scan.weight > 0:
                # a few rows far from the others (a fill value left unmasked) pull the mean away: the passes shift
                # by the sample's median on those columns (the same rows, so the same bits, for any chunking)
                far, median, _ = far_columns(self._sample, self._sample_weights if self._sample_complete else None,
                                             self._scan.mean)
                if far.size:
                    shift = np.array(self._scan.mean, dtype=np.float64)
                    shift[far] = median[far]
                    self._scan = dataclasses.replace(self._scan, shift=shift)
        return self._scan

    @property
    def far(self) -> np.ndarray:
        """The columns whose passes' shift is the scan's sample's median (:attr:`ScanResult.far
        <daskgmm.kernels.results.ScanResult.far>`); empty before the scan has run (no pass is run for it)."""
        return np.zeros(0, np.intp) if self._scan is None else self._scan.far

    def rescale_weights(self):
        """Multiply the sample weights by a power of two (exact) that brings their mean to [1, 2) when it
        is below ``TINY_MEAN_WEIGHT``; returns the scan the passes now see (:meth:`scan`, its weight scaled
        too; :attr:`weight_scale` is the factor). For a model whose fit does not
        depend on the weights' scale (a maximum-likelihood mixture): its M-step adds scikit-learn's
        ``10 eps`` to each component's weight sum, which swamps sums near 1e-15 (every mean pulled to the
        data's). Not for a model whose prior or reported sums see the scale (variational, k-means'
        ``inertia_``). Call once, after :meth:`scan` and before any other pass: the scan's weight and the
        sample's weights are scaled with it.
        """
        scan = self.scan()
        factor = self.tiny_weight_factor()
        if factor == 1.0:
            return scan
        self.weight_scale *= factor
        self._scan = dataclasses.replace(scan, weight=scan.weight * factor, m2=scan.m2 * factor,
                                         observed=None if scan.observed is None else scan.observed * factor)
        self._sample_weights = self._sample_weights * factor
        return self._scan

    def tiny_weight_factor(self) -> float:
        """The factor :meth:`rescale_weights` would take now (:func:`tiny_weight_factor` of the scan's weight
        and rows; 1.0 without sample weights or once they are rescaled), without taking it: for a model whose
        M-step scales its statistics itself (``select_model``'s gaussian candidates, whose passes serve
        variational candidates too)."""
        scan = self.scan()
        # the rows' weight, not the complete rows' (missing="marginalize": none complete took no factor)
        return 1.0 if self.sample_weight is None else tiny_weight_factor(scan.rows_weight, scan.rows)

    def _sample_request(self) -> SampleRequest:
        d = self.n_features
        m = SPARSE_SCAN_SAMPLE_ROWS if self.sparse else max(1, min(SCAN_SAMPLE_ROWS, SCAN_SAMPLE_BYTES // (8 * d)))
        return SampleRequest(np.zeros((0, d)), m, SCAN_SAMPLE_KEY, finite_only=True)

    def sample(self) -> np.ndarray:
        """Rows drawn uniformly (by sample weight, without replacement) in the first scan.

        Returns
        -------
        ndarray, shape (m, D), float64
            In data coordinates, in random order; rows with non-finite values or
            non-positive weights are never drawn. ``m`` is the smaller of the
            usable rows and ``SCAN_SAMPLE_ROWS`` (fewer for wide data). For sparse
            chunks a scipy.sparse ``csr_array`` of at most ``SPARSE_SCAN_SAMPLE_ROWS`` rows.
        """
        self.scan()
        return self._sample

    def sample_rows(self) -> np.ndarray:
        """The global row numbers of :meth:`sample`'s rows (int64, in the same order)."""
        self.scan()
        return self._sample_rows

    def sample_weights(self) -> np.ndarray:
        """The sample weights of the rows of :meth:`sample` (ones without weights), shape (m,)."""
        self.scan()
        return self._sample_weights

    @property
    def sample_complete(self) -> bool:
        """Whether :meth:`sample` holds every row that can be drawn (finite, positive weight):
        then the sample with :meth:`sample_weights` is the data (in random order)."""
        self.scan()
        return self._sample_complete
