"""Where a fit's rows live: in cluster memory or read on every pass, and on which worker.

Nothing here runs a pass (:mod:`daskgmm.engine.passes` does): this decides whether
the rows are kept in memory (``cache``), persists them, and spreads the persisted
chunks over the workers in contiguous runs by rows (:func:`daskgmm.engine.tree.balanced_targets`),
so that every worker has its share of each pass's work.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from daskgmm.engine.cluster import (
    STALL_SECONDS,
    blas_threads,
    cluster_memory,
    compute_bounded,
    local_memory,
    local_scheduler,
    wait_bounded,
    workers,
)
from daskgmm.engine.sizes import counted
from daskgmm.engine.tree import balanced_targets, contiguous_batches, share_cuts
from daskgmm.kernels.protocol import kept_layout

#: Fraction of the workers' (or this machine's) memory the data may take when
#: ``cache="auto"`` decides to keep it in memory.
MEMORY_FRACTION = 0.4

#: Rounds of moving chunks to their targets (a busy worker can let a copy fail silently).
PLACEMENT_ROUNDS = 3

#: What the bounded waits call a persist in their messages ("a ... made no progress for 600 s"): a user
#: who called ``fit`` never asked for a persist by name.
PERSIST = "persist of the rows into the workers' memory"


def data_nbytes(X, sparse: bool) -> float:
    """The data's size in memory; for sparse chunks, extrapolated by rows from the first
    chunk (one chunk read: the non-zeros are not known before)."""
    if not sparse:
        return X.nbytes
    first = compute_bounded(X.blocks[0], what="read of the first chunk")[0]
    rows = first.shape[0]
    if rows == 0:
        return X.nbytes
    size = first.data.nbytes + first.indices.nbytes + first.indptr.nbytes
    return size / rows * X.shape[0]


def should_persist(client, X, cache: str, in_memory: bool, sparse: bool) -> bool:
    """``cache``'s decision: "memory", "none", or by size ("auto": under ``MEMORY_FRACTION`` of the memory)."""
    if cache == "memory":
        return True
    if cache == "none":
        return False
    if client is not None:
        if in_memory:
            return True  # else the NumPy data would be shipped with every pass
        budget = cluster_memory(client) or local_memory()
    else:
        if in_memory:
            return False
        budget = local_memory()
    return data_nbytes(X, sparse) <= MEMORY_FRACTION * budget


def persist_local(X, sample_weight):
    """Persist the rows (and weights) with the local scheduler (no client)."""
    import dask

    with blas_threads(1):
        if sample_weight is None:
            return dask.persist(X, scheduler=local_scheduler())[0], None
        return dask.persist(X, sample_weight, scheduler=local_scheduler())


@dataclass
class Placement:
    """Persisted chunks and where they are.

    futures, weight_futures : list
        One future per chunk as the passes see them (weights: None each when there are none):
        the data's chunks, some cut in pieces at the threads' shares of the rows (``sizes``).
    targets : list
        Each chunk's worker (None: unrestricted, when placement failed).
    batches : list of (worker, list of chunk indices)
        One contiguous run of a worker's chunks per worker thread.
    sizes : list of int
        Rows of each chunk (of ``futures``).
    """

    futures: list
    weight_futures: list
    targets: list = field(default_factory=list)
    batches: list = field(default_factory=list)
    sizes: list = field(default_factory=list)


def worker_threads(client) -> list:
    """``[(address, threads)]`` of the workers the scheduler lists, sorted."""
    return sorted((addr, max(1, int(w.get("nthreads", 1)))) for addr, w in workers(client).items())


def persist_placed(client, X, sample_weight, sizes) -> Placement:
    """Persist chunks and spread them over the workers by rows (weights with their rows).

    Persisting puts chunks wherever a worker is free first (6 of 8 on one
    worker was seen), and every pass then waits for the busier worker. So a
    chunk that is not on its target worker is copied there (a data copy,
    no task: worker restrictions on tasks that may be recomputed after a
    worker dies can leave them stuck in distributed's "no-worker" state),
    and its other copies are dropped. Targets keep chunks where they are when
    that keeps the balance, so a second fit on the same data moves nothing.
    Chunk tasks carry a loose restriction to their chunk's target (any other
    worker may run them, e.g. after the target died).
    """
    from dask.core import flatten
    from distributed import futures_of

    def persisted(arr):
        # unoptimised, as the passes over rows read every pass submit them (to_delayed(optimize_graph=False)):
        # fusing would put other tasks under the same chunk keys, which distributed's scheduler logs as
        # "different run_spec" ("can cause failures and deadlocks") when a fit of each kind meets the other's
        arr = client.persist(arr, optimize_graph=False)
        by_key = {f.key: f for f in futures_of(arr)}
        return [by_key[k] for k in flatten(arr.__dask_keys__())]

    own = not futures_of(X)  # else the caller's persisted chunks, left as they are
    futs = persisted(row_major(X) if own else X)
    wfuts = [None] * len(futs) if sample_weight is None else persisted(sample_weight)
    wait_bounded(client, futs + wfuts, PERSIST, first_failure=True)
    # the workers as they are now (one that died while persisting has a new address);
    # placement is only an optimisation: any failure leaves the chunks where they are
    threads = worker_threads(client)
    sizes = [int(n) for n in sizes]
    pieces = share_cuts(sizes, sum(t for _, t in threads)) if threads else []
    if len(pieces) > len(sizes):
        futs, wfuts = cut_chunks(client, futs, wfuts, pieces, own=own)
        sizes = [b - a for _, a, b in pieces]
        wait_bounded(client, futs + [f for f in wfuts if f is not None], PERSIST, first_failure=True)
    targets = [None] * len(futs)
    if threads:  # (none listed while workers restart)
        try:
            targets = place(client, futs, wfuts, threads, sizes)
        except Exception:  # a worker gone meanwhile, a scheduler without daskgmm: chunks stay
            pass
    return Placement(futs, wfuts, targets, contiguous_batches(sizes, targets, dict(threads)), sizes)


def row_major(X):
    """``X`` (dense rows) with every chunk laid out as the workers' passes read it fastest
    (:func:`daskgmm.kernels.protocol.kept_layout`, decided in the worker: C-ordered where the compiled
    core runs), in a task of its own after each chunk's read, whose result is what a fit persists.

    Every pass reads a kept chunk again, and Parquet's chunks (a Dask DataFrame's too) are column-major;
    the copy costs about what one k-means iteration gains (docs/architecture.md, *Rows kept row-major*).
    A read of every pass (``cache="none"``) keeps Parquet's layout: there the copy would be paid each time.
    """
    if not isinstance(getattr(X, "_meta", None), np.ndarray) or X.ndim != 2:  # sparse rows, weights
        return X
    return X.map_blocks(kept_layout, dtype=X.dtype, name=f"daskgmm-kept-{X.name}")


def _rows(x, start, stop):
    """Rows ``start:stop`` of a chunk, laid out as the chunk is: a view where that is contiguous (a
    row-major chunk), else a copy in the chunk's order (a column-major chunk: Parquet's, a Dask
    DataFrame's).

    A row slice of a column-major chunk is strided, and the move to another worker sends a strided
    array row-major: the piece that stays and the piece that moves would differ in layout, and
    NumPy's sums over rows round differently by layout (the scan, whose mean shifts every later
    pass, sums column-major whatever it gets; other NumPy paths may not), so the bits of a fit
    could depend on which worker held the chunk when it was cut. The copy also frees the chunk.
    """
    piece = x[start:stop]
    if not isinstance(piece, np.ndarray) or piece.flags.c_contiguous or piece.flags.f_contiguous:
        return counted(piece)  # (sparse rows: a CSR slice is its own arrays, which the worker must count)
    return piece.copy(order="K")


def _own_rows(x, start, stop):
    """:func:`_rows` of a chunk the fit persisted itself (row-major: :func:`row_major`), a copy: a view
    would hold the whole chunk where it was, and the piece that moves to another worker would be held
    twice (there, and in the chunk the other piece holds), unseen by Dask's size of a view. A copy
    frees the chunk, as :func:`_rows`' copy of a column-major chunk does. (A caller's persisted
    chunks are cut into views: they hold the chunk anyway.)"""
    piece = _rows(x, start, stop)
    return piece.copy() if isinstance(piece, np.ndarray) and piece.base is not None else piece


def cut_at_shares(client, arrays: list, own: bool = False) -> list:
    """Dask arrays of rows (the first (N, D), the others 1-D with its chunks: id columns) with their chunks
    cut at the worker threads' shares of the rows (:func:`daskgmm.engine.tree.share_cuts`, pieces by
    :func:`_rows`), as :func:`persist_placed` cuts a fit's persisted chunks: persisted so, they are the
    fit's chunks, which it finds cut and does not hold a second time (its cut pieces beside the chunks
    kept for later reads would be up to a chunk per thread more). The same list where nothing is cut,
    the chunk sizes are not known, or the rows come in more than one block of columns. ``own``: the
    chunks are the caller's to drop once cut (:func:`row_major`'s), and the pieces copies (:func:`_own_rows`)."""
    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    X = arrays[0]
    sizes = X.chunks[0]
    if any(np.isnan(s) for s in sizes) or any(n != 1 for n in X.numblocks[1:]):
        return arrays
    threads = worker_threads(client)
    pieces = share_cuts(sizes, sum(t for _, t in threads)) if threads else []
    if len(pieces) <= len(sizes):
        return arrays
    out = []
    for a in arrays:
        name = f"daskgmm-{'own-' if own else ''}shares-{tokenize(a.name, pieces)}"
        rest = (0,) * (a.ndim - 1)
        cut = _own_rows if own else _rows
        layer = {(name, p, *rest): (cut, (a.name, i, *rest), start, stop)
                 for p, (i, start, stop) in enumerate(pieces)}
        graph = HighLevelGraph.from_collections(name, layer, dependencies=[a])
        out.append(da.Array(graph, name, (tuple(b - c for _, c, b in pieces), *a.chunks[1:]), meta=a._meta))
    return out


def cut_chunks(client, futs, wfuts, pieces, own=False):
    """Futures of the pieces (:func:`daskgmm.engine.tree.share_cuts`) of persisted chunks: a chunk
    that is not cut keeps its future, a piece is a task on its chunk (computed where the chunk is,
    recomputed from it after a worker dies). ``own``: the rows' chunks are the fit's own (persisted by
    :func:`persist_placed`, not the caller), whose pieces are copies (:func:`_own_rows`)."""
    from dask.base import tokenize

    sizes: dict = {}
    for i, _, b in pieces:
        sizes[i] = max(sizes.get(i, 0), b)

    def piece(f, i, a, b, rows=_rows, name="daskgmm-rows"):
        if f is None or (a == 0 and b == sizes[i]):
            return f
        return client.submit(rows, f, a, b, key=f"{name}-{tokenize(f.key, a, b)}")

    # keys of their own for the copies: a caller may have persisted the same chunks (row_major's keys, as
    # scripts/bench.py does), and another task under one key is distributed's "different run_spec"
    cut = (_own_rows, "daskgmm-own-rows") if own else (_rows, "daskgmm-rows")
    return [piece(futs[i], i, a, b, *cut) for i, a, b in pieces], [piece(wfuts[i], i, a, b) for i, a, b in pieces]


def place(client, futs, wfuts, threads, sizes) -> list:
    """Move chunks to balanced targets and drop their other copies; returns the targets.

    Chunks move in rounds, one to each target per round, and a round's old copies
    are dropped before the next: meanwhile a worker holds at most one chunk more than
    its share (moving all at once, it held every chunk it received, +34 MiB on the
    1M x 16 bench).
    """
    chunks = [[f for f in (f, wf) if f is not None] for f, wf in zip(futs, wfuts)]
    holders = client.who_has([f for c in chunks for f in c])
    targets = balanced_targets(np.asarray(sizes), threads, [set(holders.get(f.key, ())) for f in futs])
    drop_copies(client, chunks, targets, holders)  # copies left by anything before
    for _ in range(PLACEMENT_ROUNDS):
        queue: dict = {}
        for c, t in zip(chunks, targets):
            if any(t not in holders.get(f.key, ()) for f in c):
                queue.setdefault(t, []).append(c)
        if not queue:
            break
        while queue:
            # a copy to a worker that is not running (paused for memory, closing) reaches the scheduler
            # as a replication to no worker, which it logs as an error: placement gives up instead
            running = {a for a, w in workers(client).items() if w.get("status", "running") == "running"}
            if not set(queue) <= running:
                raise RuntimeError(f"placement: worker(s) {sorted(set(queue) - running)} not running")
            moved = []
            for t in sorted(queue):
                c = queue[t].pop(0)
                client.replicate(c, n=1, workers=[t], callback_timeout=STALL_SECONDS)  # bounded: placement may give up
                moved.append((c, t))
                if not queue[t]:
                    del queue[t]
            now = client.who_has([f for c, _ in moved for f in c])
            drop_copies(client, [c for c, _ in moved], [t for _, t in moved], now)
        # a busy worker can let a copy fail without a word (seen on a loaded 2-core host: 3 and 5
        # chunks of 8): what is still not where it should be is moved again
        holders = client.who_has([f for c in chunks for f in c])
    return targets


def drop_copies(client, chunks, targets, holders) -> None:
    """Drop the copies of each chunk on workers other than its target, where the target holds it
    (never the last copy)."""
    extra: dict = {}
    for c, t in zip(chunks, targets):
        for fut in c:
            if t in holders.get(fut.key, ()):
                for other in holders[fut.key]:
                    if other != t:
                        extra.setdefault(other, []).append(fut.key)
    if not extra:
        return
    # replicate leaves the old copy: a chunk on two workers doubles its memory,
    # and the scheduler then runs its task on either (measured 0.39 against
    # 0.23 s of work per pass on the two workers of the 1M x 16 bench)
    # defined here, so that it is pickled with its code: a scheduler need not have daskgmm
    async def drop_replicas(dask_scheduler=None, extra=None):
        import time

        for addr, keys in extra.items():
            await dask_scheduler.delete_worker_data(addr, keys, stimulus_id=f"daskgmm-placement-{time.time()}")

    client.run_on_scheduler(drop_replicas, extra=extra)
