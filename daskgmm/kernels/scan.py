"""The scan pass's requests: column summary (rows, mean, variance, non-finite values) and keyed samples;
and the one sentence that names non-finite values and the words that place the first bad row, for the
scan's counts (a fit), the check of each chunk of rows to predict on (:func:`check_finite_rows`) and
Parquet data (daskgmm.io).

Pure NumPy; nothing here knows about Dask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from daskgmm.kernels.features import NO_FEATURES, SPHERICAL_LEVEL
from daskgmm.kernels.params import kmeans_natural_params
from daskgmm.kernels.protocol import Block
from daskgmm.kernels.random import keyed_exponential
from daskgmm.kernels.results import SampleResult, ScanResult, chan_columns, first_row, smallest
from daskgmm.kernels.scratch import scratch


def draw_keys(nearest, candidates, w, key: int, rows, potential) -> np.ndarray:
    """One block's keys of a :class:`SampleRequest`: ``E_i / (w_i d_h(x_i))`` per hypothesis ``h``.

    Parameters
    ----------
    nearest : ndarray of shape (n,), or None
        Every row's squared distance to the nearest centre (None: no centres).
    candidates : ndarray of shape (h, n), or None
        The squared distances to each candidate (overwritten: ``d_h``); None: one hypothesis.
    w : ndarray of shape (n,)
        The rows' weights.
    key : int
    rows : ndarray of int, shape (n,)
        The rows' indices in the data (``E_i`` depends on ``key`` and these only).
    potential : ndarray of shape (h,)
        Added to in place: every hypothesis' ``sum_i w_i d_h(x_i)``.

    Returns
    -------
    keys : ndarray of float64, shape (h, n)
        ``inf`` for rows never drawn: no distance (NaN, rows with missing values), 0/0, negative weights.
    """
    if candidates is not None:
        hyp = candidates
        if nearest is not None:
            np.minimum(hyp, nearest, out=hyp)
    elif nearest is not None:
        hyp = nearest[None, :]
    else:
        hyp = np.ones((1, len(rows)))
    hyp = hyp.astype(np.float64, copy=False)
    nan = np.isnan(hyp)
    if nan.any():  # rows with missing values (missing="marginalize"): no potential, never drawn
        hyp = np.where(nan, 0.0, hyp)
    potential += hyp @ w
    e = keyed_exponential(key, rows)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # a key beyond float64: never drawn
        keys = e / (hyp * w)
    keys[~(keys >= 0)] = np.inf  # 0/0 and negative weights never get drawn
    return keys


@dataclass(frozen=True)
class SampleRequest:
    """Draw rows with probability proportional to ``w_i · d(x_i)``, chunking-independent.

    ``d(x)`` is the squared distance from ``x`` to the nearest of ``centres``
    (or 1 when there are no centres: uniform sampling). With ``candidates``,
    there is one hypothesis per candidate ``c``: ``d_c(x) = min(d(x), ‖x - c‖²)``,
    the distance if ``c`` were added to the centres, and the pass returns the
    potential of every hypothesis and a sample for each (the greedy k-means++
    step, pipelined one centre ahead).

    Sampling without replacement uses exponential keys ``E_i / (w_i d(x_i))``
    (Efraimidis & Spirakis 2006) with ``E_i`` a function of ``(key, row)``
    only, and keeps the ``n_samples`` smallest: any chunking draws the same rows.
    With ``finite_only``, rows holding NaN or ±inf are never drawn; with ``observed_only`` (dense rows), rows
    holding ±inf or nothing but NaN (rows with some NaN are drawn, as they are).
    With ``exact`` (dense rows; the scan found rows far from the others, a fill value of 1e20), a distance the
    expansion cancelled (at most :data:`CANCELLED` of ``‖x‖² + ‖c‖²``) is taken from ``x - c``: a far row's
    distance to a centre among them was the expansion's noise, about 1e24, and k-means++ drew such rows again.
    """

    centres: np.ndarray
    n_samples: int
    key: int
    candidates: np.ndarray | None = None
    finite_only: bool = False
    observed_only: bool = False
    exact: bool = False

    @property
    def width(self) -> int:
        return 0

    @property
    def level(self) -> int:
        """Uniform draws read the rows only; distances need ``‖x‖²`` and ``x``."""
        none = len(self.centres) == 0 and (self.candidates is None or len(self.candidates) == 0)
        return NO_FEATURES if none else SPHERICAL_LEVEL

    def block_rows(self, acc) -> None:
        return None

    def start(self, n_features, dtype, level, centre, kernel=None):
        def theta(points):
            if points is None or len(points) == 0:
                return None
            p = np.asarray(points, dtype=np.float64) - centre
            return kmeans_natural_params(p).theta(level, dtype)

        h = 1 if self.candidates is None else len(self.candidates)
        shifted = [None if p is None or len(p) == 0 else np.asarray(p, dtype=np.float64) - centre
                   for p in (self.centres, self.candidates)]
        return {
            "exact": (np.asarray(centre, dtype=np.float64), *shifted) if self.exact else None,
            "theta_c": theta(self.centres),
            "theta_h": theta(self.candidates),
            "potential": np.zeros(h),
            "parts": [[] for _ in range(h)],
            "count": [0] * h,
            "cut": [np.inf] * h,
        }

    def update(self, acc, blk: Block) -> None:
        dist = None
        nb = blk.size
        if acc["theta_c"] is not None:
            theta = acc["theta_c"]
            prod = scratch("sample-logits", (theta.shape[0], nb), theta.dtype)
            np.matmul(theta, blk.T, out=prod)
            dist = np.max(prod, axis=0)
            np.negative(dist, out=dist)
            np.maximum(dist, 0.0, out=dist)  # rounding can make a centre's own distance negative
        cand = None if acc["theta_h"] is None else np.maximum(-(acc["theta_h"] @ blk.T), 0.0)
        if acc["exact"] is not None:
            _exact_distances(acc["exact"], blk.x, dist, cand)
        w = np.ones(blk.size) if blk.w is None else blk.w.astype(np.float64)
        keys = draw_keys(dist, cand, w, self.key, blk.rows, acc["potential"])
        x64 = np.asarray(blk.x, dtype=np.float64)
        if self.finite_only:
            keys[:, ~np.isfinite(x64).all(axis=1)] = np.inf
        elif self.observed_only and not all_finite(x64):
            keys[:, np.isinf(x64).any(axis=1) | np.isnan(x64).all(axis=1)] = np.inf
        m = self.n_samples
        for h in range(keys.shape[0]):
            kh = keys[h]
            # only rows at or below the current m-th smallest key can still be drawn
            idx = np.flatnonzero(kh <= acc["cut"][h])
            if idx.size > m:
                part = np.argpartition(kh[idx], m - 1)[:m]
                # ties at the cut must not depend on block boundaries
                idx = idx[kh[idx] <= kh[idx[part]].max()]
            if idx.size:
                acc["parts"][h].append((kh[idx], blk.rows[idx], x64[idx], w[idx]))
                acc["count"][h] += idx.size
            # merge lazily: sorting the kept rows at every block cost seconds per pass
            if acc["count"][h] > 2 * m + 4096:
                self._compact(acc, h)

    def _compact(self, acc, h) -> None:
        parts = acc["parts"][h]
        if not parts:
            return
        k, r, x, w = (np.concatenate(a) for a in zip(*parts))
        kept = smallest(k, r, x, self.n_samples, w)
        acc["parts"][h] = [kept]
        acc["count"][h] = len(kept[0])
        if len(kept[0]) == self.n_samples:
            acc["cut"][h] = kept[0][-1]

    def finish(self, acc, n_features, centre) -> SampleResult:
        h = len(acc["parts"])
        m = self.n_samples
        keys = np.full((h, m), np.inf)
        rows = np.full((h, m), -1, dtype=np.int64)
        points = np.zeros((h, m, n_features))
        weights = np.zeros((h, m))
        for i in range(h):
            self._compact(acc, i)
            if acc["parts"][i]:
                part = acc["parts"][i][0]
                n = len(part[0])
                keys[i, :n], rows[i, :n], points[i, :n], weights[i, :n] = part
        return SampleResult(acc["potential"].copy(), keys, rows, points, weights)

    def merge(self, a: SampleResult, b: SampleResult) -> SampleResult:
        # the result merges itself: a sparse pass returns its rows sparse (daskgmm.kernels.sparse)
        return a.merge(b, self.n_samples)


#: A squared distance from the expansion ``‖x‖² - 2 x·c + ‖c‖²`` at most this share of ``‖x‖² + ‖c‖²`` is mostly
#: its rounding: where the scan found far rows, it is taken from ``x - c`` instead (``SampleRequest(exact=True)``,
#: the client's ``daskgmm.em.init._sq_dist``).
CANCELLED = 1e-8


def _exact_distances(shifted, x, dist, cand) -> None:
    """:class:`SampleRequest`'s distances of a block's rows ``x`` (n, D) where the expansion cancelled, from the
    differences, in place: ``dist`` (n,) to the nearest of the centres, ``cand`` (h, n) to each candidate.
    ``shifted``: the pass's centre and the centres and candidates less it ((k, D) or None)."""
    centre, centres, candidates = shifted
    z = np.asarray(x, dtype=np.float64) - centre
    sq = np.einsum("nd,nd->n", z, z)
    if dist is not None and centres is not None:
        d2 = _differences(z, centres)  # (k, n): the nearest again, exactly, where any was cancelled
        sq_c = np.einsum("kd,kd->k", centres, centres)
        near = np.argmin(d2, axis=0)
        bad = dist <= CANCELLED * (sq + sq_c[near])
        dist[bad] = d2[near[bad], np.flatnonzero(bad)]
    if cand is not None and candidates is not None:
        exact_where_cancelled(cand.T, z, sq, candidates)  # (n, h) view: written through into cand


def exact_where_cancelled(d, points, sq_points, centers, by_centre: bool = False):
    """``d`` (n, k; (k, n) ``by_centre``, the points then by column) with ``‖x - c‖²`` from the difference where the
    expansion cancelled (``d <= CANCELLED (‖x‖² + ‖c‖²)``), in place; returns ``d``. For rows far from the others (a
    fill value): their distance to a centre among them can be the expansion's noise (1.1e15 for five columns at
    -1e15, against the other rows' 64), which made k-means++ draw a second centre there. Only where the scan found
    far columns (:class:`SampleRequest` ``exact``, the client's ``daskgmm.em.init._sq_dist``): elsewhere the bits
    stay the GEMM's."""
    sq_c = np.einsum("kd,kd->k", centers, centers)
    bound = CANCELLED * ((sq_c[:, None] + sq_points[None, :]) if by_centre else (sq_points[:, None] + sq_c[None, :]))
    kk, nn = np.nonzero(d <= bound) if by_centre else np.nonzero(d <= bound)[::-1]
    if kk.size:
        diff = (points[:, nn].T if by_centre else points[nn]) - centers[kk]
        exact = np.einsum("nd,nd->n", diff, diff)
        if by_centre:
            d[kk, nn] = exact
        else:
            d[nn, kk] = exact
    return d


def _differences(z, points) -> np.ndarray:
    """``‖z_i - p_k‖²`` (k, n) from the differences."""
    return np.stack([np.einsum("nd,nd->n", z - p, z - p) for p in points]) if len(points) else np.zeros((0, len(z)))


class ScanRequest:
    """Row count, weighted mean and variance, and non-finite values per column."""

    level = NO_FEATURES
    width = 0

    def block_rows(self, acc) -> None:
        return None

    def start(self, n_features, dtype, level, centre, kernel=None):
        z = np.zeros(n_features)
        return ScanResult(0, 0.0, z, z, np.zeros(n_features, np.int64), np.zeros(n_features, np.int64), 0,
                          lo=np.full(n_features, np.inf), hi=np.full(n_features, -np.inf), complete=0, observed=z)

    def update(self, acc: ScanResult, blk: Block) -> ScanResult:
        x = blk.x
        finite_block = all_finite(x)  # the usual block counts nothing
        if finite_block:
            nan = inf = np.zeros(x.shape[1], np.int64)
        else:
            finite = np.isfinite(x)
            isnan = np.isnan(x)
            nan = isnan.sum(axis=0)
            inf = (~finite).sum(axis=0) - nan
        bad = w_nan = w_inf = 0
        w_first = -1
        w = None
        if blk.w is not None:
            w = blk.w.astype(np.float64)
            badw, w_nan, w_inf, w_first = weight_faults(blk, w)
            bad = int(badw.sum())
            w = np.where(badw, 0.0, w)
        if finite_block:
            # float64, column-major whatever the block's layout (one copy at most): NumPy's sums over
            # rows round differently by layout, and the scan's mean is every later pass's shift
            xo, wo = np.asfortranarray(x, dtype=np.float64), w
            n_complete = len(xo)
        else:
            rows_ok = finite.all(axis=1)
            wo = None if w is None else w[rows_ok]
            n_complete = int(np.count_nonzero(rows_ok))
        wb = float(n_complete) if wo is None else float(wo.sum())
        if not finite_block:  # each column over its own observed values (missing="marginalize"); wb: complete rows'
            # a row holding ±inf stays out, as of the complete rows' mean (its fit is refused anyway)
            unseen = isnan if not inf.any() else ~finite | np.isinf(x).any(axis=1)[:, None]
            ob, mb, m2b = observed_moments(x, unseen, w)
        elif wb > 0:
            mb = (xo.sum(axis=0) if wo is None else wo @ xo) / wb
            dev = np.subtract(xo, mb)
            np.square(dev, out=dev)
            m2b = dev.sum(axis=0) if wo is None else wo @ dev
        else:
            mb = m2b = np.zeros(x.shape[1])
        if finite_block:  # every value observed: each column's weight is the rows'
            ob = np.full(x.shape[1], wb)
        # each column's smallest and largest value over its finite values in rows of positive weight (under
        # missing="marginalize" the observed values of incomplete rows too: a column that varies only among
        # them is not constant), in place (a copy of the kept rows cost a zero-weight block twice its scan)
        if finite_block:
            v, keep = xo, None if wo is None or (wo > 0).all() else (wo > 0)[:, None]
        else:
            v, keep = x, finite if w is None else finite & (w > 0)[:, None]
        if keep is None and len(v):
            lo, hi = np.minimum(acc.lo, v.min(axis=0)), np.maximum(acc.hi, v.max(axis=0))
        else:
            where = True if keep is None else keep
            lo = np.minimum(acc.lo, np.min(v, axis=0, where=where, initial=np.inf))
            hi = np.maximum(acc.hi, np.max(v, axis=0, where=where, initial=-np.inf))
        complete = n_complete if wo is None else int(np.count_nonzero(wo > 0))
        o_, m_, m2_ = chan_columns(acc.observed, acc.mean, acc.m2, ob, mb, m2b)
        empty = int(isnan.all(axis=1).sum()) if not finite_block and nan.any() else 0
        first_bad = first_inf = -1
        if not finite_block:  # the rows to name in the message: found here, so no other pass looks for them
            first_bad = first_row_where(blk, ~rows_ok)
            first_inf = first_row_where(blk, np.isinf(x).any(axis=1)) if inf.any() else -1
        return ScanResult(acc.rows + blk.size, acc.weight + wb, m_, m2_, acc.nan + nan, acc.inf + inf,
                          acc.bad_weights + bad, acc.empty_rows + empty, first_row(acc.first_nonfinite, first_bad),
                          first_row(acc.first_inf, first_inf), acc.weight_nan + w_nan, acc.weight_inf + w_inf,
                          first_row(acc.first_bad_weight, w_first), lo, hi, acc.complete + complete, o_)

    def finish(self, acc, n_features, centre) -> ScanResult:
        return acc

    @staticmethod
    def merge(a: ScanResult, b: ScanResult) -> ScanResult:
        o, m, m2 = chan_columns(a.column_weight, a.mean, a.m2, b.column_weight, b.mean, b.m2)
        return ScanResult(a.rows + b.rows, a.weight + b.weight, m, m2, a.nan + b.nan, a.inf + b.inf,
                          a.bad_weights + b.bad_weights, a.empty_rows + b.empty_rows,
                          first_row(a.first_nonfinite, b.first_nonfinite),
                          first_row(a.first_inf, b.first_inf), a.weight_nan + b.weight_nan,
                          a.weight_inf + b.weight_inf, first_row(a.first_bad_weight, b.first_bad_weight),
                          None if a.lo is None or b.lo is None else np.minimum(a.lo, b.lo),
                          None if a.hi is None or b.hi is None else np.maximum(a.hi, b.hi),
                          a.complete + b.complete if min(a.complete, b.complete) >= 0 else -1,
                          None if a.observed is None and b.observed is None else o)


#: How many robust standard deviations (1.4826 MAD of the scan's sample) a column's mean may lie from its median
#: before the column counts as far (:func:`far_columns`): every pass shifted the rows by the mean, and k-means'
#: squared distances (differences of terms of that size, squared) then carried errors of 2.2e-16 x 1e14 = 2% of
#: the bulk's squared spread; at 1e8 spreads they are noise.
FAR_MEAN_SPREADS = 1e7


def weighted_median(values, weights):
    """Each column's weighted median of ``values`` (n, D) under ``weights`` (n,)."""
    order = np.argsort(values, axis=0, kind="stable")
    cum = np.cumsum(weights[order], axis=0)
    at = np.argmax(cum >= 0.5 * cum[-1], axis=0)
    cols = np.arange(values.shape[1])
    return values[order[at, cols], cols]


def far_columns(sample, weights, mean):
    """The columns whose mean a few rows far from all others (an unmasked fill value such as 1e20 among values near
    1) pulled more than :data:`FAR_MEAN_SPREADS` robust spreads from their median, with at most 5% of the sample
    that far (a tight cluster beside a wide one is no few rows); columns whose sample has one value are left out.

    Parameters
    ----------
    sample : ndarray, shape (m, D)
        The scan's sample (dense rows; its rows are the same for any chunking, so the result is too).
    weights : ndarray of shape (m,), or None
        The sample's weights where it is every row (the median and spread weighted, as the mean is); None: drawn
        by weight already.
    mean : ndarray, shape (D,)

    Returns
    -------
    far : ndarray of int
        The far columns (empty when the sample has fewer than 8 rows).
    median, spread : ndarray, shape (D,)
        The sample's (weighted) median and 1.4826 x its median absolute deviation.
    """
    d = np.shape(mean)[0]
    if sample.ndim != 2 or sample.shape[0] < 8:
        return np.zeros(0, np.intp), np.full(d, np.nan), np.full(d, np.nan)
    mean = np.asarray(mean, dtype=np.float64)
    w = None if weights is None or np.all(weights == weights[0]) else np.asarray(weights, dtype=np.float64)
    median = np.median(sample, axis=0) if w is None else weighted_median(sample, w)
    dev = np.abs(sample - median)
    spread = 1.4826 * (np.median(dev, axis=0) if w is None else weighted_median(dev, w))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        beyond = dev > FAR_MEAN_SPREADS * spread
        share = beyond.mean(axis=0) if w is None else (w @ beyond) / w.sum()
        far = np.flatnonzero((spread > 0) & (share <= 0.05) & (np.abs(mean - median) > FAR_MEAN_SPREADS * spread))
    return far, median, spread


def observed_moments(x, unseen, w):
    """Each column's weight, weighted mean and sum of squared deviations over its values not ``unseen`` (a block
    with NaN under ``missing="marginalize"``): arrays of shape (D,), 0 in a column without weight. ``w``: the rows'
    weights (bad ones 0), or None. Column-major whatever the block's layout, as the complete rows' sums."""
    xf = np.array(x, dtype=np.float64, order="F")
    np.copyto(xf, 0.0, where=unseen)
    if w is None:
        wm = None
        ob = (x.shape[0] - np.count_nonzero(unseen, axis=0)).astype(np.float64)
        sums = xf.sum(axis=0)
    else:
        wm = np.empty(x.shape, order="F")
        np.copyto(wm, w[:, None])
        np.copyto(wm, 0.0, where=unseen)
        ob = wm.sum(axis=0)
        sums = np.einsum("ij,ij->j", wm, xf)
    with np.errstate(divide="ignore", invalid="ignore"):
        om = np.where(ob > 0, sums / np.where(ob > 0, ob, 1.0), 0.0)
    np.subtract(xf, om, out=xf)
    np.square(xf, out=xf)
    np.copyto(xf, 0.0, where=unseen)
    return ob, om, xf.sum(axis=0) if wm is None else np.einsum("ij,ij->j", wm, xf)


def first_row_where(blk, mask) -> int:
    """Global number of a block's first row where ``mask`` (shape (nb,)) holds, -1 if none."""
    idx = np.flatnonzero(mask)
    return int(blk.rows[idx].min()) if idx.size else -1


def weight_faults(blk, w) -> tuple[np.ndarray, int, int, int]:
    """A block's bad sample weights (negative or not finite): the mask, how many are NaN and ±inf (the rest
    are negative), and the global number of the first row holding one (-1: none); the scans of dense and
    sparse rows count them so, for scikit-learn's sentence of the worst kind."""
    bad = ~(np.isfinite(w) & (w >= 0))
    if not bad.any():
        return bad, 0, 0, -1
    return bad, int(np.isnan(w).sum()), int(np.isinf(w).sum()), first_row_where(blk, bad)


# ---------------------------------------------------------------------------
# Non-finite values: counted by the scan, checked in each chunk of rows to predict on, named alike


def all_finite(values) -> bool:
    """Whether every value of an array is finite: one reduction for the usual block (a NaN or ±inf makes
    the sum NaN or ±inf), a look at each value only when the sum is not finite (it may have overflowed)."""
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(values.sum()):
            return True
    return bool(np.isfinite(values).all())


def non_finite_message(nan, inf, feature_names=None, what="X", dtype="float64") -> str:
    """scikit-learn's sentence for NaN (when there is any) or else for infinity, then the columns and counts
    (after NaN's, the infinities': "column 1: 2 value(s); infinity in column 2: 1 value(s)").

    Parameters
    ----------
    nan, inf : array-like of int, shape (n_features,)
        NaN and ±inf values per column (``nan`` all zero when NaN is allowed).
    feature_names : sequence of str, optional
        Named in quotes; else columns are numbered from 0.
    dtype : dtype
        Of the data, for scikit-learn's "a value too large for dtype(...)".
    """
    nan, inf = np.asarray(nan), np.asarray(inf)

    def detail(counts):
        return ", ".join(
            f"column {repr(str(feature_names[j])) if feature_names is not None else j}: {int(counts[j])} value(s)"
            for j in np.flatnonzero(counts))

    if not nan.any():
        return f"Input {what} contains infinity or a value too large for {np.dtype(dtype)!r}. {detail(inf)}"
    # the infinities too: the first bad row the message goes on to place may hold one and no NaN
    return f"Input {what} contains NaN. {detail(nan)}" + (f"; infinity in {detail(inf)}" if inf.any() else "")


def first_bad_row(row, chunk=None, what="X", file=None) -> str:
    """Where the first row holding a refused value (NaN, infinity) is, in the words every message uses.

    "the first at row 371 (in rows 300 to 399 of X, chunk 4 of 4)"; with ``file`` (Parquet) "the
    first at row 5 (part-0.parquet, row group 0, row 5; in rows 0 to 999 of the data, chunk 1 of 3)".
    It follows the sentence and counts of :func:`non_finite_message` (and a comma); the three checks
    that place a bad row (the rows to predict on, :func:`check_finite_rows`; the fit's scan,
    ``daskgmm.validation.scan.check_finite``; Parquet data, ``daskgmm.io.parquet``) say it so.

    Parameters
    ----------
    row : int
        The row's number in ``what``, from 0.
    chunk : tuple of int, optional
        ``(start, stop, index, count)``: the row's chunk holds rows ``start`` to ``stop - 1`` and is
        chunk ``index`` (from 0; None: not said) of ``count``.
    what : str
        What the row numbers count: "X", "the data".
    file : str, optional
        Where the row is in its file ("path, row group G, row R"), said first.
    """
    where = [] if file is None else [file]
    if chunk is not None:
        start, stop, index, count = chunk
        rows = f"in rows {int(start)} to {int(stop) - 1} of {what}"
        where.append(rows if index is None else f"{rows}, chunk {int(index) + 1} of {int(count)}")
    return f"the first at row {int(row)}" + (f" ({'; '.join(where)})" if where else "")


def check_finite_rows(x, place=None, allow_nan=False, feature_names=None, nan_hint=""):
    """One chunk of rows to predict on, unchanged when every value is finite (NaN too with ``allow_nan``).

    Cheap for the usual chunk (:func:`all_finite`: one reduction), and run by the task that reads the
    chunk (``blockwise``), so Dask input is checked when the predictions are computed.

    Parameters
    ----------
    x : ndarray or scipy.sparse CSR, shape (n, D)
    allow_nan : bool
        NaN is a missing value (``missing="marginalize"``); infinity is still an error.
    feature_names : sequence of str, optional
    place : array-like of int, shape (3,), optional
        The chunk's first row in X, its number (from 0) and the number of chunks.
    nan_hint : str
        A sentence to end the message with when the chunk holds NaN (a mixture's: how to keep them).

    Raises
    ------
    ValueError
        :func:`non_finite_message` (counted in the chunk), then :func:`first_bad_row` (e.g. "Input X
        contains NaN. column 1: 1 value(s) in its chunk, the first at row 371 (in rows 300 to 399 of X,
        chunk 4 of 4).").
    """
    sparse = not isinstance(x, np.ndarray) and hasattr(x, "indptr")
    values = x.data if sparse else np.asarray(x)
    if all_finite(values):
        return x
    bad = np.isinf(values) if allow_nan else ~np.isfinite(values)
    if not bad.any():
        return x
    isnan = np.zeros_like(bad) if allow_nan else np.isnan(values)
    n, d = x.shape
    if sparse:
        nan = np.bincount(x.indices[isnan], minlength=d)
        inf = np.bincount(x.indices[bad & ~isnan], minlength=d)
        first = int(np.repeat(np.arange(n), np.diff(x.indptr))[bad].min())
    else:
        nan = isnan.sum(axis=0)
        inf = bad.sum(axis=0) - nan
        first = int(np.flatnonzero(bad.any(axis=1))[0])
    start, chunk, chunks = (int(v) for v in place) if place is not None else (0, None, None)
    counted = " in its chunk" if chunks is not None and chunks > 1 else ""  # this task sees its chunk alone
    hint = f" {nan_hint}" if nan_hint and np.any(nan) else ""
    raise ValueError(f"{non_finite_message(nan, inf, feature_names, dtype=values.dtype)}{counted}, "
                     f"{first_bad_row(start + first, (start, start + n, chunk, chunks))}.{hint}")
