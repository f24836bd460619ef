"""Where chunks go and how their results merge: pure functions of chunk sizes and workers, no Dask.

A pass's merge tree depends only on the number of chunks (so a fit gives the same bits
whoever computes which chunk); placement puts each chunk on one worker in contiguous runs of
rows balanced per thread, and cuts each worker's run into one batch per thread.
"""

from __future__ import annotations

import itertools

import numpy as np

#: A share's boundary this close to a chunk's edge (a fraction of one thread's share of the rows)
#: is left there: the chunk is not cut for so small an imbalance.
CUT_TOLERANCE = 0.01


def share_cuts(sizes, threads: int, tolerance: float = CUT_TOLERANCE) -> list:
    """Pieces of the chunks that split the rows evenly over ``threads`` worker threads.

    The rows are cut at every thread's share (``k N / threads``) that falls inside a chunk, more
    than ``tolerance`` of a share from its edges, so that whole pieces make every thread's share
    (and so every worker's, whatever its threads): a pass waits for the busiest worker, and 8
    chunks of 131,072 rows put 524,288 of 1,000,000 rows on one of two. The pieces depend only on
    the chunk sizes and the number of threads.

    Parameters
    ----------
    sizes : sequence of int
        Rows per chunk.
    threads : int
        Worker threads of the cluster.

    Returns
    -------
    list of (int, int, int)
        ``(chunk, start, stop)``, rows ``start:stop`` of chunk ``chunk``, in row order; a chunk that
        is not cut is one piece ``(i, 0, size)``.
    """
    sizes = [int(s) for s in sizes]
    total = sum(sizes)
    share = total / max(1, int(threads))
    bounds = [round(share * k) for k in range(1, max(1, int(threads)))]
    out = []
    start = 0
    for i, n in enumerate(sizes):
        cuts = [b - start for b in bounds if tolerance * share < b - start < n - tolerance * share]
        edges = [0, *cuts, n]
        out += [(i, a, b) for a, b in itertools.pairwise(edges) if b > a or n == 0]
        start += n
    return out


def run_end(mids, start, end_row) -> int:
    """The end of the run of chunks from ``start`` whose middle rows lie before ``end_row``."""
    return max(start, int(np.searchsorted(mids, end_row, side="left")))


def balanced_targets(sizes, workers, holders=None) -> list:
    """A worker for each chunk: contiguous runs of chunks, rows in proportion to threads.

    Runs along the rows, so that a worker's chunks make whole subtrees of the merge
    tree, which its batch task merges itself (:meth:`ChunkedData.run`). A chunk
    belongs to the run whose share of the rows holds its middle row, so each worker
    is off its share by at most half a chunk at either end. Along the rows, each run
    goes to the worker, of those left, that already holds most of the rows it would
    take (ties: by address), so that balancing moves few chunks, and a placement made
    here is kept as it is by the next call.

    Parameters
    ----------
    sizes : sequence of int
        Rows per chunk.
    workers : list of (address, nthreads)
    holders : sequence of sets of addresses, optional
        Where each chunk is now.

    Returns
    -------
    list of str
        Each chunk's worker, in the order of ``sizes``.
    """
    sizes = np.asarray(sizes, dtype=np.float64)
    mids = np.cumsum(sizes) - 0.5 * sizes
    total_rows, total_threads = float(sizes.sum()), sum(t for _, t in workers)
    out: list = [None] * len(sizes)
    left = sorted(workers)
    start, threads_before = 0, 0
    while left:
        # where each worker's run would end, and how many of its rows the worker holds now
        ends = {
            w: len(sizes) if len(left) == 1
            else run_end(mids, start, total_rows * (threads_before + w[1]) / total_threads)
            for w in left
        }
        there = {
            w: 0.0 if holders is None else float(sum(sizes[i] for i in range(start, ends[w]) if w[0] in holders[i]))
            for w in left
        }
        worker = min(left, key=lambda w: (-there[w], w[0]))
        out[start : ends[worker]] = [worker[0]] * (ends[worker] - start)
        left.remove(worker)
        start, threads_before = ends[worker], threads_before + worker[1]
    return out


def contiguous_batches(sizes, targets, threads) -> list:
    """The chunks of each worker in ``threads[worker]`` contiguous runs by rows (one batch task each).

    Returns
    -------
    list of (address or None, list of int)
        Chunk indices per batch, in row order. Chunks without a target each make a batch.
    """
    out = []
    by_worker: dict = {}
    for i, t in enumerate(targets):
        if t is None:
            out.append((None, [i]))
        else:
            by_worker.setdefault(t, []).append(i)
    for t, idx in by_worker.items():
        n = max(1, int(threads.get(t, 1)))
        own = np.asarray([sizes[i] for i in idx], dtype=np.float64)
        mids = np.cumsum(own) - 0.5 * own
        start = 0
        for j in range(n):
            end = len(idx) if j == n - 1 else run_end(mids, start, own.sum() * (j + 1) / n)
            if end > start:
                out.append((t, idx[start:end]))
            start = end
    return sorted(out, key=lambda b: b[1][0])


def merge_levels(n_chunks: int, split_every: int) -> list:
    """Nodes per level of the merge tree: chunks, then groups of ``split_every``, while more than that.

    The client folds the last level's nodes in order.
    """
    sizes = [n_chunks]
    while sizes[-1] > split_every:
        sizes.append(-(-sizes[-1] // split_every))
    return sizes


def children(node, levels, split_every) -> list:
    level, j = node
    return [(level - 1, c) for c in range(j * split_every, min((j + 1) * split_every, levels[level - 1]))]


def subtree_merges(chunks, levels, split_every) -> tuple:
    """The merges a batch holding ``chunks`` can do itself, and the nodes it returns.

    Returns
    -------
    merges : dict
        ``{node: children}`` of every node whose leaves are all in the batch
        (a node is ``(level, index)``; level 0 is the chunks).
    frontier : list
        The nodes the batch returns: its chunks and merges no merge of it takes.
    """
    have = {(0, i) for i in chunks}
    merges = {}
    for level in range(1, len(levels)):
        for j in sorted({i // split_every for lv, i in have if lv == level - 1}):
            kids = children((level, j), levels, split_every)
            if all(k in have for k in kids):
                merges[(level, j)] = kids
                have.difference_update(kids)
                have.add((level, j))
    return merges, sorted(have)
