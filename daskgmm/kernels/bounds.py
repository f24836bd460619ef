"""k-means' bounds kept between passes (``KMeans(algorithm="elkan")``), in the process that runs the pass.

For every block of rows a pass folds through the compiled core, the core can keep each row's
label and a lower bound of its distance to every other centre (Hamerly's bound; the upper one is
the row's exact distance to its own centre, which the pass computes anyway): when the centres
move by less than the gap, the row keeps its label without its distances to the other centres
being computed (``mixture_block(kmeans_bounds=...)`` in ``daskgmm/kernels/_core.cpp``). The
results are those of the pass without bounds, bit for bit; only time changes.

The bounds live here, per process, keyed by the fit's key (a string the caller chooses), the
block's first global row and its length, each with the centres it refers to. They are a cache:
a block whose bounds are missing (another worker ran it, a worker restarted, the entry was
not kept) or refer to other centres than the last ones it saw is computed in full and its
bounds written again. Memory: 8 bytes per row and fit, at most :data:`STORE_BYTES` per
process (other fits' blocks, least recently used first, make room; a fit's own blocks beyond
it are not kept); :func:`forget` drops a fit's.

Pure NumPy; nothing here knows about Dask.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

import numpy as np

#: Bytes of bounds one process keeps (8 per row and fit): blocks beyond it keep none (and are
#: computed in full on every pass).
STORE_BYTES = 512 << 20

#: The relative slack on a centre's move: the core's test must see a move no smaller than the
#: true one (its own rounding is accounted for there).
SHIFT_SLACK = 1e-12

_lock = threading.Lock()


def _after_fork() -> None:
    # a child forked while another thread held the lock (the client's local Lloyd keeps bounds too) would wait for
    # ever on it: it takes a lock of its own (the store it inherits stays valid: its entries are whole)
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
_store: OrderedDict = OrderedDict()  # (key, first row, rows) -> (label, lower, coefficients)
_bytes = 0
_last: dict = {}  # key -> the last coefficients seen (shared by the blocks that refer to them)
_counts: dict = {}  # key -> [rows spared, rows passed]


def take(key: str, first_row: int, rows: int, coef: np.ndarray):
    """A block's bounds for a pass with coefficients ``coef`` (K, D) float64, taken out of the store
    (the caller gives them back with :func:`give`).

    Returns
    -------
    label : ndarray of int32, shape (rows,)
    lower : ndarray of float32, shape (rows,)
    shift : ndarray of float64, shape (K,), or None
        How far each centre moved since the bounds were written; None when there are none
        (the core then computes every row and writes them).
    """
    global _bytes
    with _lock:
        entry = _store.pop((key, first_row, rows), None)
        if entry is not None:
            _bytes -= entry[0].nbytes + entry[1].nbytes
    if entry is None or entry[2].shape != coef.shape:
        return np.empty(rows, np.int32), np.empty(rows, np.float32), None
    label, lower, ref = entry
    moved = coef - ref
    shift = np.sqrt(np.einsum("kd,kd->k", moved, moved)) * (1.0 + SHIFT_SLACK)
    return label, lower, shift


def give(key: str, first_row: int, label: np.ndarray, lower: np.ndarray, coef: np.ndarray,
         spared: int = 0) -> None:
    """Store a block's bounds, written by a pass with coefficients ``coef``; ``spared``: the rows
    the bounds settled in that pass (:func:`counts`)."""
    global _bytes
    with _lock:
        last = _last.get(key)
        if last is None or last.shape != coef.shape or not np.array_equal(last, coef):
            last = _last[key] = np.array(coef, dtype=np.float64)  # one copy per pass, shared by its blocks
        size = label.nbytes + lower.nbytes
        old = _store.pop((key, first_row, len(label)), None)  # the same block run twice (a retried batch)
        if old is not None:
            _bytes -= old[0].nbytes + old[1].nbytes
        # room is made from other fits' blocks (a fit that ended without forget), least recently used
        # first; never from this fit's: a pass reads its blocks in the same order every time, so
        # evicting its oldest would evict every block before its next use. What does not fit is not kept
        # (those blocks are computed in full on every pass; the others keep their bounds).
        if _bytes + size > STORE_BYTES:
            for k in [k for k in _store if k[0] != key]:
                lab, low, _ref = _store.pop(k)
                _bytes -= lab.nbytes + low.nbytes
                if _bytes + size <= STORE_BYTES:
                    break
        if _bytes + size <= STORE_BYTES:
            _store[(key, first_row, len(label))] = (label, lower, last)
            _bytes += size
        c = _counts.setdefault(key, [0, 0])
        c[0] += int(spared)
        c[1] += len(label)


def forget(key: str) -> None:
    """Drop every block's bounds of fit ``key`` (at the end of a fit)."""
    global _bytes
    with _lock:
        for k in [k for k in _store if k[0] == key]:
            lab, low, _ref = _store.pop(k)
            _bytes -= lab.nbytes + low.nbytes
        _last.pop(key, None)
        _counts.pop(key, None)


def counts(key: str) -> tuple[int, int]:
    """``(rows spared, rows passed)`` by this process's passes with bounds of fit ``key`` so far."""
    with _lock:
        c = _counts.get(key, (0, 0))
        return int(c[0]), int(c[1])


def stored_bytes() -> int:
    """Bytes of bounds this process holds."""
    with _lock:
        return _bytes
