"""Sparse rows (scipy.sparse CSR chunks): the passes k-means needs, without densifying a chunk.

:func:`daskgmm.kernels.protocol.chunk_pass` hands a sparse chunk to :func:`sparse_chunk_pass`,
which runs the sparse form of each request over blocks of rows and returns the result
types the dense pass returns, so the engine merges them on the same tree:

- a :class:`~daskgmm.kernels.requests.MixtureRequest` of k-means models (hard assignment to
  ``-‖x - c_k‖²``, the specs of :class:`daskgmm.models.states.KMeansState`): squared distances
  ``‖x‖² - 2 x·c + ‖c‖²`` by one sparse x dense product per block (every model's centres
  stacked, dense and transposed, so that each non-zero reads one contiguous row of
  centre values); per block the labels, inertia and farthest rows; per chunk the sums
  per cluster, every non-zero added at (its row's label, its column) of the dense (K, D)
  sums by one ``bincount``. Moments are about the origin (``SuffStats.shift`` is 0): no shift keeps rows
  sparse, and sums of the rows themselves lose nothing to cancellation;
- :class:`~daskgmm.kernels.scan.ScanRequest`: rows, weighted mean and variance by column
  (the zeros' share in closed form, so no cancellation), non-finite values;
- :class:`~daskgmm.kernels.scan.SampleRequest`: the same keyed draws as the dense pass
  (the same keys, so the same rows for any chunking), rows returned sparse
  (:class:`SparseSampleResult`).

Any other request (a Gaussian mixture's statistics) is a TypeError: only k-means takes
sparse rows. Accumulation is float64 whatever the data's dtype. Also here: the per-block
predictions of k-means on sparse rows (:func:`nearest_labels`, :func:`distances`) and the
client's k-means on a sparse sample: Lloyd's algorithm with Elkan's bounds (:func:`lloyd`) and the
small helpers of its k-means++ (:func:`row_norms`, :func:`dense_rows`).

Pure NumPy and SciPy; nothing here knows about Dask.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from daskgmm.kernels.protocol import issparse
from daskgmm.kernels.requests import MixtureRequest
from daskgmm.kernels.results import SampleResult, ScanResult, SuffStats, WorstRows, chan, first_row, frozen
from daskgmm.kernels.scan import SampleRequest, ScanRequest, draw_keys, first_row_where, weight_faults

#: Bytes of the dense (rows x centres) distance block of one block of rows: the rows of a
#: block are chosen so that it stays in the L2 cache.
DISTANCE_BLOCK_BYTES = 1 << 21
#: Rows per block of a pass with no distances to compute (the scan and uniform draws).
SCAN_BLOCK_ROWS = 1 << 16


def as_csr(x) -> sp.csr_array:
    """Rows as a canonical ``csr_array`` (sorted indices, no duplicates), sharing memory when they are one.

    Other sparse formats are converted, pydata ``sparse`` arrays (Dask's sparse chunks) too. A non-canonical
    CSR (duplicate entries, which every product adds but ``‖x‖²`` would not) is summed on a copy.
    """
    if not issparse(x) and hasattr(x, "to_scipy_sparse"):
        x = x.to_scipy_sparse()
    if x.format != "csr":
        x = x.tocsr()
    out = sp.csr_array((x.data, x.indices, x.indptr), shape=x.shape, copy=False)
    if not out.has_canonical_format:
        out = out.copy()
        out.sum_duplicates()
    return out


def _rows_view(x: sp.csr_array, a: int, b: int, dtype=np.float64) -> sp.csr_array:
    """Rows ``[a, b)`` of ``x`` without copying its indices (values cast to ``dtype`` if needed)."""
    p, q = int(x.indptr[a]), int(x.indptr[b])
    indptr = x.indptr[a : b + 1] - x.indptr[a]
    return sp.csr_array((x.data[p:q].astype(dtype, copy=False), x.indices[p:q], indptr), shape=(b - a, x.shape[1]),
                        copy=False)


def _row_sums(values: np.ndarray, indptr: np.ndarray) -> np.ndarray:
    """Per-row sums of per-entry ``values`` (exact: one reduction per row, no running sum)."""
    n = len(indptr) - 1
    out = np.zeros(n, dtype=np.float64)
    nonempty = np.flatnonzero(np.diff(indptr))
    if nonempty.size:
        out[nonempty] = np.add.reduceat(values.astype(np.float64, copy=False), indptr[nonempty])
    return out


def row_norms(x) -> np.ndarray:
    """``‖x_i‖²`` of every row of a sparse matrix (float64, shape (n,))."""
    x = as_csr(x)
    d = x.data.astype(np.float64, copy=False)
    return _row_sums(d * d, x.indptr)


def dense_rows(x, index) -> np.ndarray:
    """The rows ``index`` of a sparse matrix as a dense float64 array (for a few rows: centres)."""
    return np.asarray(as_csr(x)[np.atleast_1d(index)].toarray(), dtype=np.float64)


def lloyd(x, weights, centers, *, max_iter: int = 300, tol: float = 0.0) -> tuple[np.ndarray, np.ndarray, float]:
    """Weighted Lloyd iterations on sparse rows in memory (the client's k-means on a sample), to convergence.

    The labels are those of plain Lloyd (every distance computed again every iteration), at a
    fraction of the cost once few rows change: Elkan's bounds (2003) skip the rows whose label
    cannot change. Each row keeps an upper bound on the distance to its centre and a lower bound
    on the distance to every other centre (exact at the row's last computation, then loosened
    by how far each centre has moved since: the triangle inequality). A row whose bounds overlap
    has its own distance computed (a gather over its non-zeros), and if they still overlap,
    every distance (one sparse x dense product for all such rows); overlap is judged with a
    margin that covers the rounding of ``‖x‖² - 2 x·c + ‖c‖²``, so a near tie is always
    computed. Only the centres of clusters that gained or lost rows are updated, their sums
    following the rows that moved.

    Stops when no label changes or the centres move by at most ``tol`` in total squared
    distance (scikit-learn's rule), or after ``max_iter`` updates of the centres.

    Parameters
    ----------
    x : scipy.sparse matrix or array, shape (n, D)
    weights : ndarray, shape (n,)
    centers : ndarray, shape (K, D)
        The starting centres.
    max_iter : int
    tol : float

    Returns
    -------
    centers : ndarray, shape (K, D), float64
    labels : ndarray, shape (n,)
        The nearest centre of each row (of the centres returned).
    inertia : float
        ``Σ w_i ‖x_i - c_{label i}‖²``.
    """
    x = as_csr(x).astype(np.float64, copy=False)
    n, d = x.shape
    w = np.asarray(weights, dtype=np.float64)
    # the centres and the sums per cluster are kept transposed, (D, K): the products read rows of them,
    # and every update is a whole-array operation on contiguous memory (51 MB at K=64, D=100,000)
    ct, csq = _centers_t(centers)
    k = ct.shape[1]
    sq = row_norms(x)
    per_row = np.diff(x.indptr)
    everyone = np.arange(n)

    def exact(rows):
        """The distances of ``rows`` (all if None) to every centre, by blocks of rows as a pass computes them."""
        sub, sub_sq = (x, sq) if rows is None else (x[rows], sq[rows])
        out = np.empty((sub.shape[0], k))
        step = _block_rows(k)
        for a in range(0, sub.shape[0], step):
            b = min(sub.shape[0], a + step)
            out[a:b] = squared_distances(_rows_view(sub, a, b), sub_sq[a:b], ct, csq)
        return np.sqrt(out, out=out)

    lower = exact(None)  # (n, K): exact now, lower bounds once the centres move; +inf at each row's own centre
    labels = lower.argmin(axis=1)
    upper = lower[everyone, labels].copy()
    lower[everyone, labels] = np.inf
    # what rounding can take from a distance: the expansion's error (a few ulps of ‖x‖² + ‖c‖²) under the
    # square root, the most it becomes (at distance 0); bounds within it of each other are a tie
    slack = math.sqrt(64 * np.finfo(np.float64).eps * (float(sq.max(initial=0.0)) + float(csq.max(initial=0.0))))

    wk = np.bincount(labels, weights=w, minlength=k)
    # Σ w x per cluster: every non-zero at (its column, its row's label), one bincount
    sums = np.bincount(x.indices.astype(np.int64) * k + np.repeat(labels, per_row),
                       weights=np.repeat(w, per_row) * x.data, minlength=d * k).reshape(d, k)
    prev = None
    for _ in range(max_iter):
        if prev is not None:
            changed = np.flatnonzero(labels != prev)
            if changed.size == 0:
                break
            # the rows that changed cluster leave one sum and join another
            sub = x[changed]
            owner = np.repeat(np.arange(changed.size), np.diff(sub.indptr))
            vals = sub.data * w[changed][owner]
            np.subtract.at(sums, (sub.indices, prev[changed][owner]), vals)
            np.add.at(sums, (sub.indices, labels[changed][owner]), vals)
            wk = np.bincount(labels, weights=w, minlength=k)
        # the mean of each cluster; one whose rows did not change gets the same bits again, an empty one
        # keeps its centre
        new = np.divide(sums, wk, out=np.empty_like(ct), where=wk > 0)
        empty = np.flatnonzero(wk <= 0)
        new[:, empty] = ct[:, empty]
        diff = new - ct
        shift = np.einsum("dk,dk->k", diff, diff)
        del diff
        ct = new
        csq = np.einsum("dk,dk->k", ct, ct)
        prev = labels
        if shift.any():
            # the bounds follow the centres (rounded outwards); the rows they cannot settle are computed
            drift = np.sqrt(shift) * (1 + 1e-12)
            lower -= drift
            upper += drift[labels]
            check = np.flatnonzero(lower.min(axis=1) <= upper + slack)
            if check.size:
                dist = exact(check)
                labels = labels.copy()
                labels[check] = dist.argmin(axis=1)
                upper[check] = dist[np.arange(check.size), labels[check]]
                dist[np.arange(check.size), labels[check]] = np.inf
                lower[check] = dist
        if float(shift.sum()) <= tol:
            break
    # the inertia from each row's own centre: x·c gathered at the row's columns
    dot = _row_sums(x.data * ct[x.indices, np.repeat(labels, per_row)], x.indptr)
    return np.ascontiguousarray(ct.T), labels, float(w @ np.maximum(sq - 2.0 * dot + csq[labels], 0.0))


def distinct_rows(x) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of a sparse matrix in the order of their dense values (as ``np.unique(axis=0)``
    orders dense rows): ``(first, inverse)``, the index of each distinct row's first copy, in that
    order, and each row's place among them.

    Rows compare at their first differing column, where one holds ``v`` and the other another value
    or 0. As keys: a non-zero ``(c, v)`` is ``(0, c, v)`` if ``v < 0`` and ``(2, -c, v)`` if ``v > 0``,
    and each row ends with ``(1,)`` (its zeros), so tuples compare as the dense rows would.
    """
    x = as_csr(x).copy()
    x.eliminate_zeros()
    keys = []
    for a, b in zip(x.indptr[:-1], x.indptr[1:]):
        cols, vals = x.indices[a:b].tolist(), x.data[a:b].tolist()
        keys.append(tuple((0, c, v) if v < 0 else (2, -c, v) for c, v in zip(cols, vals)) + ((1,),))
    order = sorted(range(len(keys)), key=keys.__getitem__)
    first, inverse, slot = [], np.empty(len(keys), dtype=np.intp), {}
    for i in order:
        j = slot.setdefault(keys[i], len(first))
        if j == len(first):
            first.append(i)
        inverse[i] = j
    return np.asarray(first, dtype=np.intp), inverse


def _block_rows(width: int) -> int:
    """Rows per block for ``width`` distances a row: the (rows, width) block in ``DISTANCE_BLOCK_BYTES``."""
    return int(np.clip(DISTANCE_BLOCK_BYTES // (8 * max(1, width)), 256, 16384))


def squared_distances(x: sp.csr_array, sq: np.ndarray, centers_t: np.ndarray, center_sq: np.ndarray) -> np.ndarray:
    """``‖x_i - c_k‖²`` (n, K), float64, clipped at 0 against rounding.

    ``centers_t`` (D, K) C-contiguous. ``x`` (a block of rows whose (n, K) result stays in
    the cache) is multiplied column by column (CSC): each column's row of ``centers_t`` is read once
    for all the block's non-zeros in that column, where row by row it is read once per non-zero;
    text's frequent words are in most rows, and the product took a third of the time
    (4,096 rows of ``scripts/bench_sparse.py``'s data, K=64). A canonical CSR's columns are sorted
    within each row, so each entry sums its terms in the same order either way: the same bits.
    The column form walks every column, so a block with far fewer non-zeros than columns (a hashed
    vocabulary of millions) stays row by row.
    """
    out = (x.tocsc() if x.shape[1] <= 4 * x.nnz else x) @ centers_t
    out *= -2.0
    out += sq[:, None]
    out += center_sq[None, :]
    np.maximum(out, 0.0, out=out)
    return out


def _centers_t(centers) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(centers, dtype=np.float64)
    return np.ascontiguousarray(c.T), np.einsum("kd,kd->k", c, c)


# ---------------------------------------------------------------------------
# Results with sparse rows


@dataclass(frozen=True)
class SparseSampleResult(SampleResult):
    """A :class:`SampleResult` whose ``points`` are one CSR (m, D) matrix per hypothesis (float64)."""

    def merge(self, other: SparseSampleResult, m: int) -> SparseSampleResult:
        keys, rows, points, weights = [], [], [], []
        for h in range(self.keys.shape[0]):
            k = np.concatenate([self.keys[h], other.keys[h]])
            r = np.concatenate([self.rows[h], other.rows[h]])
            order = np.lexsort((r, k))[:m]
            keys.append(k[order])
            rows.append(r[order])
            points.append(sp.vstack([self.points[h], other.points[h]], format="csr")[order])
            weights.append(np.concatenate([self.weights[h], other.weights[h]])[order])
        return SparseSampleResult(self.potential + other.potential, np.array(keys), np.array(rows), tuple(points),
                                  np.array(weights))


@dataclass(frozen=True)
class SparseWorstRows(WorstRows):
    """:class:`WorstRows` whose ``points`` are a CSR (m, D) matrix (float64)."""

    def merge(self, other: SparseWorstRows, m: int) -> SparseWorstRows:
        values = np.concatenate([self.values, other.values])
        rows = np.concatenate([self.rows, other.rows])
        order = np.lexsort((rows, values))[:m]
        points = sp.vstack([self.points, other.points], format="csr")[order]
        weights = np.concatenate([self.weights, other.weights])[order]
        return SparseWorstRows(values[order], rows[order], points, weights)


def _empty_rows(n: int, d: int) -> sp.csr_array:
    return sp.csr_array((n, d), dtype=np.float64)


# ---------------------------------------------------------------------------
# The pass


class _Block:
    """Rows ``[lo, lo + size)`` of a chunk: float64 values, ``‖x‖²``, weights, global row numbers."""

    def __init__(self, x, lo, w, rows):
        self.x, self.lo, self.w, self.rows = x, lo, w, rows
        self.size = x.shape[0]
        self._sq = None

    @property
    def sq(self) -> np.ndarray:
        if self._sq is None:
            self._sq = _row_sums(self.x.data * self.x.data, self.x.indptr)
        return self._sq

    @property
    def weights(self) -> np.ndarray:
        return np.ones(self.size) if self.w is None else self.w


def _check_kmeans(spec) -> None:
    """TypeError unless ``spec`` is a k-means model's: ``-‖x - c‖²`` about the pass centre ``m``
    (``quad = -1``, ``lin = 2 (c - m)``; the specs of :class:`daskgmm.models.states.KMeansState`)."""
    p = spec.params
    is_kmeans = (spec.assignment == "hard" and spec.covariance_type == "spherical" and spec.precise is None
                 and spec.marginal is None and not spec.resp_log_resp and p.quad.ndim == 1
                 and np.all(p.quad == -1.0))
    if not is_kmeans:
        raise TypeError("Sparse data was passed for X, but only KMeans fits sparse rows: a pass over sparse "
                        "chunks computes k-means statistics only (distances to centres).")


class _KMeansPass:
    """A MixtureRequest of k-means models over sparse rows (see the module docstring)."""

    def __init__(self, request: MixtureRequest, centre):
        # not the request itself: the cache maps it weakly to this, and a reference back would keep both
        self.n_worst = [spec.n_worst for spec in request.specs]
        self.sizes = [s.params.n_components for s in request.specs]
        self.bounds = np.concatenate([[0], np.cumsum(self.sizes)])
        d = request.specs[0].params.lin.shape[1]
        # every model's centres, transposed (D, K) in one copy: (K, D) is 51 MB at K=64, D=100,000
        self.ct = np.empty((d, int(self.bounds[-1])))
        m = np.zeros(d) if centre is None else np.asarray(centre, np.float64)
        for i, spec in enumerate(request.specs):
            _check_kmeans(spec)
            part = self.ct[:, self.bounds[i] : self.bounds[i + 1]]
            np.multiply(np.asarray(spec.params.lin, np.float64).T, 0.5, out=part)  # c = m + lin / 2
            part += m[:, None]
        self.csq = np.einsum("dk,dk->k", self.ct, self.ct)

    @property
    def width(self) -> int:
        return int(self.bounds[-1])

    def start(self, n, d):
        m = len(self.sizes)
        return {"labels": np.zeros((m, n), dtype=np.int32), "inertia": np.zeros(m), "worst": [None] * m}

    def update(self, acc, blk: _Block) -> None:
        dist = squared_distances(blk.x, blk.sq, self.ct, self.csq)
        a = blk.lo
        for i, n_worst in enumerate(self.n_worst):
            dm = dist[:, self.bounds[i] : self.bounds[i + 1]]
            lab = dm.argmin(axis=1)
            best = dm[np.arange(blk.size), lab]
            acc["labels"][i, a : a + blk.size] = lab
            acc["inertia"][i] += float(best @ blk.weights)
            if n_worst:
                # the worst-explained rows are the farthest from their centres (value: -distance)
                order = np.lexsort((blk.rows, -best))[:n_worst]
                worst = (-best[order], blk.rows[order], order + a, blk.weights[order])
                prev = acc["worst"][i]
                acc["worst"][i] = worst if prev is None else _keep_smallest(prev, worst, n_worst)

    def finish(self, acc, x: sp.csr_array, w: np.ndarray | None) -> list[SuffStats]:
        n, d = x.shape
        weights = np.ones(n) if w is None else w
        xf = x if x.dtype == np.float64 else x.astype(np.float64)
        sq = _row_sums(xf.data * xf.data, xf.indptr)
        per_row = np.diff(xf.indptr)
        weighted = np.repeat(weights, per_row) * xf.data
        out = []
        for i, n_worst in enumerate(self.n_worst):
            k = self.sizes[i]
            labels = acc["labels"][i]
            # Σ w x per cluster: every non-zero added at (its row's label, its column) of the dense (K, D)
            # sums, in the rows' order (one bincount: faster than a one-hot product, and no sparse result)
            flat = np.repeat(labels.astype(np.int64) * d, per_row) + xf.indices
            s1 = np.bincount(flat, weights=weighted, minlength=k * d).reshape(k, d)
            worst = None
            if n_worst:
                wr = acc["worst"][i]
                if wr is None:
                    worst = SparseWorstRows(np.zeros(0), np.zeros(0, np.int64), _empty_rows(0, d), np.zeros(0))
                else:
                    values, rows, local, wts = wr
                    worst = SparseWorstRows(values, rows, xf[local], wts)
            out.append(SuffStats(
                n=frozen(np.bincount(labels, weights=weights, minlength=k)),
                s1=frozen(s1),
                s2=frozen(np.bincount(labels, weights=weights * sq, minlength=k)),
                loglik=-float(acc["inertia"][i]),
                weight=float(weights.sum()),
                rows=int(n),
                shift=frozen(np.zeros(d)),
                covariance_type="spherical",
                worst=worst,
            ))
        return out


def _keep_smallest(a, b, m):
    values, rows, local, weights = (np.concatenate([p, q]) for p, q in zip(a, b))
    order = np.lexsort((rows, values))[:m]
    return values[order], rows[order], local[order], weights[order]


class _ScanPass:
    """Rows, weighted mean and variance by column, non-finite values (a ScanRequest over sparse rows)."""

    width = 0

    def start(self, n, d):
        z = np.zeros(d)
        return ScanResult(0, 0.0, z, z, np.zeros(d, np.int64), np.zeros(d, np.int64), 0)

    def update(self, acc: ScanResult, blk: _Block) -> ScanResult:
        x, d = blk.x, blk.x.shape[1]
        data, idx = x.data, x.indices
        finite = np.isfinite(data)
        isnan = np.isnan(data)
        nan = np.bincount(idx[isnan], minlength=d).astype(np.int64)
        inf = np.bincount(idx[~finite & ~isnan], minlength=d).astype(np.int64)
        bad = w_nan = w_inf = 0
        w_first = -1
        w = blk.weights.copy()
        if blk.w is not None:
            badw, w_nan, w_inf, w_first = weight_faults(blk, w)
            bad = int(badw.sum())
            w[badw] = 0.0
        # rows with a non-finite value stay out of the mean and variance, as in the dense scan
        rows_ok = _row_sums((~finite).astype(np.float64), x.indptr) == 0
        if not rows_ok.all():
            w[~rows_ok] = 0.0
        per_nnz = np.repeat(w, np.diff(x.indptr))
        wb = float(w.sum())
        if wb > 0:
            vals = np.where(finite, data, 0.0)
            mb = np.bincount(idx, weights=per_nnz * vals, minlength=d) / wb
            w_nz = np.bincount(idx, weights=per_nnz, minlength=d)
            dev = vals - mb[idx]
            # Σ w (x - m)²: the stored values', plus the zeros', (wb - Σ w over stored) m²
            m2b = np.bincount(idx, weights=per_nnz * dev * dev, minlength=d) + np.maximum(wb - w_nz, 0.0) * mb * mb
        else:
            mb = m2b = np.zeros(d)
        w_, m_, m2_ = chan(acc.weight, acc.mean, acc.m2, wb, mb, m2b)
        empty = 0
        if isnan.any():
            empty = int(np.count_nonzero(_row_sums(isnan.astype(np.float64), x.indptr) == d))
        first_bad = first_inf = -1
        if not rows_ok.all():  # the rows to name in the message
            first_bad = first_row_where(blk, ~rows_ok)
            if inf.any():
                first_inf = first_row_where(blk, _row_sums((~finite & ~isnan).astype(np.float64), x.indptr) > 0)
        return ScanResult(acc.rows + blk.size, w_, m_, m2_, acc.nan + nan, acc.inf + inf, acc.bad_weights + bad,
                          acc.empty_rows + empty, first_row(acc.first_nonfinite, first_bad),
                          first_row(acc.first_inf, first_inf), acc.weight_nan + w_nan, acc.weight_inf + w_inf,
                          first_row(acc.first_bad_weight, w_first))

    def finish(self, acc, x, w):
        return acc


class _SamplePass:
    """Keyed draws of a SampleRequest over sparse rows: the dense pass's keys, rows kept sparse."""

    def __init__(self, request: SampleRequest):
        self.request = request
        c, h = request.centres, request.candidates
        self.c = None if c is None or len(c) == 0 else _centers_t(c)
        self.h = None if h is None or len(h) == 0 else _centers_t(h)
        self.width = (0 if self.c is None else self.c[0].shape[1]) + (0 if self.h is None else self.h[0].shape[1])

    def start(self, n, d):
        nh = 1 if self.request.candidates is None else len(self.request.candidates)
        return {"potential": np.zeros(nh), "kept": [None] * nh}

    def update(self, acc, blk: _Block) -> None:
        req = self.request
        dist = None
        if self.c is not None:
            dist = squared_distances(blk.x, blk.sq, *self.c).min(axis=1)
        cand = None if self.h is None else squared_distances(blk.x, blk.sq, *self.h).T
        w = blk.weights
        keys = draw_keys(dist, cand, w, req.key, blk.rows, acc["potential"])
        if req.finite_only:
            bad = _row_sums((~np.isfinite(blk.x.data)).astype(np.float64), blk.x.indptr) > 0
            keys[:, bad] = np.inf
        m = req.n_samples
        local = np.arange(blk.lo, blk.lo + blk.size)
        for h in range(keys.shape[0]):
            kh = keys[h]
            idx = np.arange(blk.size)
            if blk.size > m:  # only rows at or below the m-th smallest key (ties included) can be drawn
                idx = np.flatnonzero(kh <= kh[np.argpartition(kh, m - 1)[:m]].max())
            order = idx[np.lexsort((blk.rows[idx], kh[idx]))][:m]
            mine = (kh[order], blk.rows[order], local[order], w[order])
            prev = acc["kept"][h]
            if prev is not None:
                k, r, loc, ww = (np.concatenate([p, q]) for p, q in zip(prev, mine))
                o = np.lexsort((r, k))[:m]
                mine = (k[o], r[o], loc[o], ww[o])
            acc["kept"][h] = mine

    def finish(self, acc, x: sp.csr_array, w) -> SparseSampleResult:
        m = self.request.n_samples
        nh = len(acc["kept"])
        keys = np.full((nh, m), np.inf)
        rows = np.full((nh, m), -1, dtype=np.int64)
        weights = np.zeros((nh, m))
        points = []
        d = x.shape[1]
        for h in range(nh):
            kept = acc["kept"][h]
            if kept is None:
                points.append(_empty_rows(m, d))
                continue
            k, r, loc, ww = kept
            keys[h, : len(k)], rows[h, : len(k)], weights[h, : len(k)] = k, r, ww
            # padded with empty rows to m, as the dense result pads with zeros
            pts = x[loc].astype(np.float64)
            points.append(sp.vstack([pts, _empty_rows(m - len(k), d)], format="csr"))
        return SparseSampleResult(acc["potential"].copy(), keys, rows, tuple(points), weights)


#: The k-means form of each MixtureRequest (while it lives), so that the chunks of one batch task
#: share one copy of the transposed centres.
_KMEANS_FORMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _sparse_form(request, centre):
    if isinstance(request, MixtureRequest):
        key = None if centre is None else np.asarray(centre, np.float64).tobytes()
        cached = _KMEANS_FORMS.get(request)
        if cached is None or cached[0] != key:
            cached = (key, _KMeansPass(request, centre))
            _KMEANS_FORMS[request] = cached
        return cached[1]
    if isinstance(request, ScanRequest):
        return _ScanPass()
    if isinstance(request, SampleRequest):
        return _SamplePass(request)
    raise TypeError(f"Sparse data was passed for X, but {type(request).__name__} has no sparse pass.")


def sparse_chunk_pass(x, requests, centre=None, *, sample_weight=None, row0=0, block_rows=None) -> list:
    """Run every request over one chunk of sparse rows (see :func:`daskgmm.kernels.protocol.chunk_pass`).

    Parameters
    ----------
    x : scipy.sparse matrix or array, shape (n, D)
        The chunk (any format; CSR is used as it is).
    requests : list
        MixtureRequest (k-means models only), ScanRequest, SampleRequest.
    centre : ndarray, shape (D,) or None
        The pass's shift, in which the k-means specs are written; the statistics
        returned are about the origin.
    sample_weight : ndarray, shape (n,) or None
    row0 : int
        Global row number of the chunk's first row.
    block_rows : int, optional
        Rows per block (default: the distance block in ``DISTANCE_BLOCK_BYTES``).

    Returns
    -------
    list
        One partial result per request, of the types the dense pass returns.
    """
    x = as_csr(x)
    n, d = x.shape
    w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64).reshape(-1)
    if w is not None and len(w) != n:
        raise ValueError(f"sample_weight has {len(w)} rows, the chunk has {n}")
    forms = [_sparse_form(r, centre) for r in requests]
    accs = [f.start(n, d) for f in forms]
    width = sum(f.width for f in forms)
    if block_rows is None:
        block_rows = SCAN_BLOCK_ROWS if width == 0 else _block_rows(width)
    for a in range(0, n, block_rows):
        b = min(n, a + block_rows)
        blk = _Block(_rows_view(x, a, b), a, None if w is None else w[a:b],
                     np.arange(row0 + a, row0 + b, dtype=np.int64))
        for i, f in enumerate(forms):
            res = f.update(accs[i], blk)
            if res is not None:
                accs[i] = res
    return [f.finish(acc, x, w) for f, acc in zip(forms, accs)]


# ---------------------------------------------------------------------------
# Predictions


def nearest_labels(x, centers) -> np.ndarray:
    """Index of the nearest centre of every sparse row (int32), by blocks of rows."""
    x = as_csr(x)
    ct, csq = _centers_t(centers)
    out = np.empty(x.shape[0], dtype=np.int32)
    step = _block_rows(len(csq))
    for a in range(0, x.shape[0], step):
        b = min(x.shape[0], a + step)
        xb = _rows_view(x, a, b)
        out[a:b] = squared_distances(xb, _row_sums(xb.data * xb.data, xb.indptr), ct, csq).argmin(axis=1)
    return out


def distances(x, centers, dtype=None) -> np.ndarray:
    """Euclidean distances (n, K) of sparse rows to dense centres, in ``dtype`` (default float64)."""
    x = as_csr(x)
    ct, csq = _centers_t(centers)
    out = np.empty((x.shape[0], len(csq)), dtype=dtype or np.float64)
    step = _block_rows(len(csq))
    for a in range(0, x.shape[0], step):
        b = min(x.shape[0], a + step)
        xb = _rows_view(x, a, b)
        out[a:b] = np.sqrt(squared_distances(xb, _row_sums(xb.data * xb.data, xb.indptr), ct, csq))
    return out
