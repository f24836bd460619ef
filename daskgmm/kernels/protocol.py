"""The pass protocol and ``chunk_pass``, the driver every chunk task runs.

A pass runs a list of requests (:class:`Request`) over every chunk of rows: each
chunk is cut into cache-sized :class:`Block` s, the features of the highest level
any request asks for are built once per block, and every request folds every
block into its accumulator. The contract is the one ``dask.array.reduction``
writes for chunk/combine/aggregate: ``finish`` is the chunk step, ``merge`` the
combine step (associative, commutative, with an empty chunk's result as its
identity, so any tree of merges gives the same result), and the aggregate step is
the caller's (a model's update). See docs/architecture.md.

Pure NumPy; nothing here knows about Dask.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from daskgmm.kernels import compiled as compiled_kernel
from daskgmm.kernels.features import NO_FEATURES, block_rows_for, build_features, n_feature_rows
from daskgmm.kernels.scratch import scratch


def issparse(x) -> bool:
    """A scipy.sparse matrix or array, a block of sparse rows (by its type's module: checking it imports no
    SciPy, which a pass over dense rows never does)."""
    return type(x).__module__.startswith("scipy.sparse")


class Block:
    """One cache-sized block of a chunk, as the requests see it.

    The centred rows and the features are built on first use (a request that fuses
    them into its own kernel never pays for them), once per block for every request.

    Attributes
    ----------
    x : ndarray, shape (nb, D)
        The rows as stored (data coordinates).
    xT : ndarray, shape (D, nb) or None
        Rows minus the pass centre, transposed (None for a pass without centre).
    T : ndarray, shape (P, nb) or None
        Feature rows at ``level``.
    level : int
        The feature level of the pass.
    centre : ndarray, shape (D,) or None
        The pass centre, float64.
    w : ndarray, shape (nb,) or None
        Sample weights (None: all ones).
    rows : ndarray of int64, shape (nb,)
        Global row numbers.
    """

    def __init__(self, x, level, centre, w, rows, depth=0):
        # rows: the global row numbers, or the first of them (consecutive rows: numbered on first
        # use, which a pass through the compiled core never makes)
        self.x, self.level, self.centre, self.w, self._rows = x, level, centre, w, rows
        self._xT = self._T = None
        # a block made from another's rows (take, part) keeps its xT and T in scratch buffers of its own: in the
        # other's, they overwrote what that block had cached for the requests after (NaN statistics for a model
        # after one that marginalises, on the NumPy path)
        self._depth = depth

    def _scratch(self, name: str, shape, dtype) -> np.ndarray:
        return scratch(name if not self._depth else f"{name}/{self._depth}", shape, dtype)

    @property
    def rows(self) -> np.ndarray:
        if not isinstance(self._rows, np.ndarray):
            self._rows = np.arange(self._rows, self._rows + self.size, dtype=np.int64)
        return self._rows

    @property
    def first_row(self) -> int | None:
        """The global number of the first row when the rows are consecutive (a chunk's block), else None."""
        return None if isinstance(self._rows, np.ndarray) else int(self._rows)

    @property
    def xT(self) -> np.ndarray | None:
        if self._xT is None and self.level > NO_FEATURES:
            x = self.x
            self._xT = self._scratch("xT", x.shape[::-1], x.dtype)
            np.subtract(x.T, self.centre.astype(x.dtype)[:, None], out=self._xT)
        return self._xT

    @property
    def T(self) -> np.ndarray | None:
        if self._T is None and self.level > NO_FEATURES:
            d, nb = self.x.shape[1], self.size
            out = self._scratch("features", (n_feature_rows(self.level, d), nb), self.x.dtype)
            self._T = build_features(self.xT, self.level, out)
        return self._T

    @property
    def size(self) -> int:
        return self.x.shape[0]

    def take(self, idx: np.ndarray) -> Block:
        """The rows at positions ``idx`` as a block of their own (a copy)."""
        return Block(self.x[idx], self.level, self.centre, None if self.w is None else self.w[idx], self.rows[idx],
                     self._depth + 1)

    def part(self, a: int, b: int) -> Block:
        """Rows ``a:b`` as a block of their own."""
        return Block(self.x[a:b], self.level, self.centre, None if self.w is None else self.w[a:b], self.rows[a:b],
                     self._depth + 1)

    def weight_sum(self) -> float:
        return float(self.size) if self.w is None else float(self.w.sum(dtype=np.float64))

    def weighted_sum(self, values: np.ndarray) -> float:
        if self.w is None:
            return float(values.sum(dtype=np.float64))
        return float(np.dot(values.astype(np.float64, copy=False), self.w))


def empty_rows(x: np.ndarray) -> np.ndarray:
    """Positions of the rows of ``x`` (n, D) with every value NaN.

    Column by column, stopping when no row is NaN in all so far: whole columns while many rows are, then
    each next column only at those rows (a gather that shrinks by the share observed). With 20% of values
    missing, 65,536 rows x 16: in C order 0.43 ms (0.95 ms by whole columns throughout), in Fortran order
    0.19 ms (0.15 ms).
    """
    n = x.shape[0]
    if not x.size:
        return np.zeros(0, dtype=np.intp)
    empty = np.isnan(x[:, 0])
    rows = None
    for j in range(1, x.shape[1]):
        if rows is None:
            many = np.count_nonzero(empty)
            if many == 0:
                break
            if 8 * many > n:
                empty &= np.isnan(x[:, j])
                continue
            rows = np.flatnonzero(empty)
        rows = rows[np.isnan(x[rows, j])]
        if not rows.size:
            break
    return np.flatnonzero(empty) if rows is None else rows


def without_empty_rows(blk: Block) -> Block:
    """``blk`` less its rows with every value missing (a copy when it has any), for the requests of a
    model that marginalises: such a row's marginal likelihood is 1 under every component, so it holds no
    information on the parameters, and EM leaves it out (``missing="marginalize"``, docs/python.md); its
    weight, rows and log-likelihood are not counted either, so a fit equals the fit without it."""
    empty = empty_rows(blk.x)
    if not empty.size:
        return blk
    keep = np.ones(blk.size, dtype=bool)
    keep[empty] = False
    return blk.take(np.flatnonzero(keep))


class Request(Protocol):
    """What one pass computes for one caller (the mixture statistics of many models, a sample, the scan).

    Attributes
    ----------
    level : int
        The feature level (:class:`daskgmm.kernels.features.Level`) it needs;
        ``Level.NONE`` for the raw rows only.
    width : int
        Rows of per-block scratch it adds (block sizing); 0 if none.
    """

    level: int
    width: int

    def start(self, n_features: int, dtype: np.dtype, level: int, centre: np.ndarray | None, kernel) -> Any:
        """A fresh accumulator for one chunk (``level``: the level the pass builds; ``centre``: its shift;
        ``kernel``: the compiled block kernel, or None for NumPy)."""

    def block_rows(self, acc: Any) -> int | None:
        """Rows per block this accumulator wants, or None: blocks sized for the cache from the
        features the pass builds and ``width``. A pass takes the fewest any request wants, and
        sizes for the cache when one wants None."""

    def update(self, acc: Any, blk: Block) -> Any | None:
        """Fold one block into ``acc``, in place (return None) or by returning the new accumulator."""

    def finish(self, acc: Any, n_features: int, centre: np.ndarray | None) -> Any:
        """The chunk's partial result (the chunk step); picklable, small."""

    def merge(self, a: Any, b: Any) -> Any:
        """Combine two partial results: associative and commutative (the combine step)."""


class Unweighted:
    """A request served the rows without their sample weights, in a pass over weighted rows: a component's
    rows (``Σ_i r_ik``), which a collapse is judged by, beside the weighted statistics of the same pass. Its
    own E-step: a mixture request gives the same rows from the weighted one (``ModelSpec.count_rows``), which
    the fits use; this one is the tests' reference.

    Parameters
    ----------
    request : Request
        Folds the same blocks, their ``w`` None while it does (the features are the pass's, built once).
    """

    def __init__(self, request):
        self.request = request
        self.level, self.width = request.level, request.width

    def start(self, n_features, dtype, level, centre, kernel):
        return self.request.start(n_features, dtype, level, centre, kernel)

    def block_rows(self, acc):
        return self.request.block_rows(acc)

    def update(self, acc, blk: Block):
        w, blk.w = blk.w, None
        try:
            return self.request.update(acc, blk)
        finally:
            blk.w = w

    def finish(self, acc, n_features, centre):
        return self.request.finish(acc, n_features, centre)

    def merge(self, a, b):
        return self.request.merge(a, b)


def kept_layout(x):
    """A chunk of rows as this process's passes read it fastest, for a fit that keeps it in memory and
    reads it every pass: C-ordered where the compiled core runs (it reads rows: over Parquet's
    column-major chunks its k-means pass took 35.0 CPU ms per 1M rows against 26.6, diag 95.9 against
    89.8, on an AVX2 host), else as it is (NumPy's passes were no faster on either layout: k-means
    249 against 233 ms C-ordered). Anything but a NumPy array is returned as it is."""
    if isinstance(x, np.ndarray) and not x.flags.c_contiguous and compiled_kernel.ready() is not None:
        return np.ascontiguousarray(x)
    return x


def chunk_pass(x, requests, centre=None, *, sample_weight=None, row0=0, block_rows=None, compiled=False):
    """Run every request over one chunk of rows.

    Parameters
    ----------
    x : ndarray, shape (n, D)
        The chunk, float32 or float64.
    requests : list
        Request objects (:class:`MixtureRequest`, :class:`SampleRequest`,
        :class:`ScanRequest`).
    centre : ndarray, shape (D,) or None
        The pass's shift; required when any request needs features.
    sample_weight : ndarray, shape (n,) or None
    row0 : int
        Global row number of the chunk's first row.
    block_rows : int, optional
        Rows per block (default: sized for the cache).
    compiled : bool
        Let the requests use the compiled core (:mod:`daskgmm.kernels.compiled`) where it
        applies; without it, or where it was not built, the NumPy path.

    Returns
    -------
    list
        One partial result per request (merge them with :func:`merge_partials`).
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"a chunk must be 2-D, got shape {x.shape}")
    n, d = x.shape
    dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    level = max(r.level for r in requests)
    if level > NO_FEATURES and centre is None:
        raise ValueError("a pass that builds features needs a centre")
    centre64 = None if centre is None else np.asarray(centre, dtype=np.float64)
    kernel = compiled_kernel.ready() if compiled else None
    accs = [r.start(d, dtype, level, centre64, kernel) for r in requests]
    if n:
        p = n_feature_rows(level, d) if level > NO_FEATURES else d
        width = sum(r.width for r in requests)
        wanted = [r.block_rows(acc) for r, acc in zip(requests, accs)]
        if block_rows is None and None not in wanted:
            block_rows = min(wanted)
        nb = block_rows_for(p + width, dtype.itemsize, block_rows)
        w_all = None if sample_weight is None else np.asarray(sample_weight).reshape(-1)
        if w_all is not None and len(w_all) != n:
            raise ValueError(f"sample_weight has {len(w_all)} rows, the chunk has {n}")
        for a in range(0, n, nb):
            b = min(n, a + nb)
            xb = x[a:b]
            if xb.dtype != dtype:
                xb = xb.astype(dtype)
            blk = Block(
                xb,
                level,
                centre64,
                None if w_all is None else w_all[a:b],
                row0 + a,
            )
            for i, r in enumerate(requests):
                res = r.update(accs[i], blk)
                if res is not None:
                    accs[i] = res
    return [r.finish(acc, d, centre64) for r, acc in zip(requests, accs)]


def merge_partials(requests, a: list, b: list) -> list:
    """Merge two chunks' partial results, request by request."""
    return [r.merge(pa, pb) for r, pa, pb in zip(requests, a, b, strict=True)]
