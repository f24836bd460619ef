"""Results of a pass: monoids whose ``merge`` is associative and commutative.

Pure NumPy; nothing here knows about Dask.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np


def frozen(a) -> np.ndarray:
    a = np.array(a, dtype=np.float64, copy=True)
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class WorstRows:
    """The rows a model explains worst (lowest per-row objective), for re-seeding.

    Attributes
    ----------
    values : ndarray, shape (m,)
        Per-row log-likelihood (soft) or best logit (hard), ascending.
    rows : ndarray of int64, shape (m,)
        Global row numbers (ties are broken by row number, so any chunking
        gives the same rows).
    points : ndarray, shape (m, D)
        The rows themselves, in data coordinates.
    weights : ndarray, shape (m,)
        Their sample weights (ones when the pass has none).
    """

    values: np.ndarray
    rows: np.ndarray
    points: np.ndarray
    weights: np.ndarray

    def merge(self, other: WorstRows, m: int) -> WorstRows:
        return WorstRows.smallest(
            np.concatenate([self.values, other.values]),
            np.concatenate([self.rows, other.rows]),
            np.concatenate([self.points, other.points]),
            np.concatenate([self.weights, other.weights]),
            m,
        )

    @staticmethod
    def smallest(values, rows, points, weights, m) -> WorstRows:
        """The ``m`` rows with smallest (value, row), in that order."""
        order = smallest_positions(values, rows, m)
        return WorstRows(values[order], rows[order], points[order], weights[order])


def smallest_positions(keys, rows, m):
    """Positions of the ``m`` smallest ``(key, row)``, in order: a partition (linear) finds the
    candidates, every key tied with the m-th included, and only they are sorted (a lexsort of every
    row of a block cost more than the compiled pass over it)."""
    if m <= 0:
        return np.zeros(0, dtype=np.intp)
    if len(keys) <= m:
        return np.lexsort((rows, keys))
    kth = np.partition(keys, m - 1)[m - 1]
    if np.isnan(kth):  # fewer than m numbers: NaN sort last, as lexsort puts them
        return np.lexsort((rows, keys))[:m]
    cand = np.flatnonzero(keys <= kth)
    return cand[np.lexsort((rows[cand], keys[cand]))][:m]


def smallest(keys, rows, points, m, weights=None):
    """The ``m`` entries with smallest (key, row), in that order (and their ``weights``, when given)."""
    order = smallest_positions(keys, rows, m)
    if weights is None:
        return keys[order], rows[order], points[order]
    return keys[order], rows[order], points[order], weights[order]


@dataclass(frozen=True)
class SuffStats:
    """Sufficient statistics of one model over some rows; merge is addition.

    All sums are float64 and weighted by ``sample_weight`` when one is given.
    Moments are about ``shift`` (one point shared by all chunks of a pass), so
    merging is plain addition: associative and commutative, safe in any tree.

    Attributes
    ----------
    n : ndarray, shape (K,)
        ``Σ_i w_i r_ik``.
    s1 : ndarray, shape (K, D)
        ``Σ_i w_i r_ik (x_i - shift)``.
    s2 : ndarray
        Second moments ``Σ_i w_i r_ik (x_i - shift)(x_i - shift)ᵀ`` in the shape of
        ``covariance_type``: full (K, D, D); tied (D, D), pooled over components;
        diag (K, D), the diagonal; spherical (K,), the trace.
    loglik : float
        ``Σ_i w_i log p(x_i)`` for soft assignment; for hard assignment
        ``Σ_i w_i max_k logit_k(x_i)`` (the classification log-likelihood, or
        minus the inertia for k-means).
    weight : float
        ``Σ_i w_i`` (the number of rows when unweighted).
    rows : int
        Number of rows.
    shift : ndarray, shape (D,) or (K, D)
        One centre for all components (the fast path), or each component's
        own mean (the precise path).
    covariance_type : str
    worst : WorstRows or None
        The rows with the lowest per-row objective, when requested.
    resp_log_resp : float
        ``Σ_i w_i Σ_k r_ik log r_ik`` (minus the entropy of the responsibilities),
        when the model's spec asks for it (the variational lower bound); else 0.
    incomplete_rows : int
        Rows with missing values scored by the marginal density of their observed
        features (models with ``ModelSpec.marginal``); 0 for the others.
    counts : ndarray of shape (K,) or None
        ``Σ_i r_ik``, the rows each component holds, their sample weights left out (a pass counts them only
        when asked, ``ModelSpec.count_rows``: :func:`daskgmm.em.loop.one_pass` on weighted rows); None when
        not counted.
    """

    n: np.ndarray
    s1: np.ndarray
    s2: np.ndarray
    loglik: float
    weight: float
    rows: int
    shift: np.ndarray
    covariance_type: str
    worst: WorstRows | None = field(default=None, compare=False)
    resp_log_resp: float = 0.0
    incomplete_rows: int = 0
    counts: np.ndarray | None = None

    @property
    def n_components(self) -> int:
        return self.n.shape[0]

    @property
    def n_rows(self) -> np.ndarray:
        """Each component's rows, shape (K,): ``counts`` when the pass counted them, else ``n`` (the rows
        themselves when unweighted) as a share of ``rows``. Collapse thresholds (``D + 1`` rows) count
        these: a covariance is estimated from rows, whatever their weights (the share is right for any
        scale of ``sample_weight``, not for uneven weights: one row of weight 1e6 among 400 took most of them)."""
        if self.counts is not None:
            return self.counts
        return self.n * (self.rows / self.weight) if self.weight > 0 and self.rows else self.n

    def scaled(self, factor: float) -> SuffStats:
        """The statistics of the same rows with every sample weight times ``factor`` (``rows`` and ``worst``
        as they are): exact for a power of two."""
        return replace(self, n=frozen(self.n * factor), s1=frozen(self.s1 * factor), s2=frozen(self.s2 * factor),
                       loglik=self.loglik * factor, weight=self.weight * factor,
                       resp_log_resp=self.resp_log_resp * factor)

    def merge(self, other: SuffStats) -> SuffStats:
        """Sum of the statistics of two disjoint sets of rows."""
        if self.covariance_type != other.covariance_type or self.n.shape != other.n.shape:
            raise ValueError("cannot merge statistics of different models")
        if not np.array_equal(self.shift, other.shift):
            raise ValueError("cannot merge statistics taken about different shifts")
        worst = self.worst
        if worst is None:
            worst = other.worst
        elif other.worst is not None:
            worst = worst.merge(other.worst, max(len(worst.values), len(other.worst.values)))
        return SuffStats(
            n=frozen(self.n + other.n),
            s1=frozen(self.s1 + other.s1),
            s2=frozen(self.s2 + other.s2),
            loglik=self.loglik + other.loglik,
            weight=self.weight + other.weight,
            rows=self.rows + other.rows,
            shift=self.shift,
            covariance_type=self.covariance_type,
            worst=worst,
            resp_log_resp=self.resp_log_resp + other.resp_log_resp,
            incomplete_rows=self.incomplete_rows + other.incomplete_rows,
            counts=None if self.counts is None or other.counts is None else frozen(self.counts + other.counts),
        )


@dataclass(frozen=True)
class SampleResult:
    """Weighted sample without replacement, per hypothesis (see :class:`SampleRequest`).

    Attributes
    ----------
    potential : ndarray, shape (H,)
        ``Σ_i w_i d_h(x_i)`` for each hypothesis ``h``.
    keys, rows : ndarray, shape (H, m)
        Sort keys (ascending; ``inf`` marks a row that could not be drawn) and
        global row numbers of the drawn rows.
    points : ndarray, shape (H, m, D)
        The drawn rows, in data coordinates.
    weights : ndarray, shape (H, m)
        Their sample weights (ones without weights; 0 where ``keys`` is ``inf``). When
        every row is drawn, the sample and these weights are the data.
    """

    potential: np.ndarray
    keys: np.ndarray
    rows: np.ndarray
    points: np.ndarray
    weights: np.ndarray

    def merge(self, other: SampleResult, m: int) -> SampleResult:
        """The ``m`` rows of smallest (key, row) of both, per hypothesis; potentials add."""
        keys, rows, points, weights = [], [], [], []
        for h in range(self.keys.shape[0]):
            kk, rr, pp, ww = smallest(
                np.concatenate([self.keys[h], other.keys[h]]),
                np.concatenate([self.rows[h], other.rows[h]]),
                np.concatenate([self.points[h], other.points[h]]),
                m,
                np.concatenate([self.weights[h], other.weights[h]]),
            )
            keys.append(kk)
            rows.append(rr)
            points.append(pp)
            weights.append(ww)
        return SampleResult(self.potential + other.potential, np.array(keys), np.array(rows), np.array(points),
                            np.array(weights))


@dataclass(frozen=True)
class ScanResult:
    """What one pass without a model learns of the data.

    Attributes
    ----------
    rows : int
    weight : float
        Sum of sample weights (of the complete rows, finite in every column, under ``missing="marginalize"``).
    mean, m2 : ndarray, shape (D,)
        Each column's weighted mean and sum of weighted squared deviations over its observed (finite) values in
        rows of finite weight (Chan et al.'s pairwise update, stable for any offset): the complete rows' where
        every row is complete, to the bit. Under ``missing="marginalize"`` a column's own values, so that data
        with no complete row (80 sensors each missing 10% of the time) have a centre, a prior and a scale too.
    nan, inf : ndarray of int64, shape (D,)
        Number of NaN and of ±inf values per column.
    bad_weights : int
        Sample weights that are negative or not finite.
    empty_rows : int
        Rows whose every value is NaN.
    first_nonfinite, first_inf : int
        Global number of the first row holding NaN or ±inf, and of the first holding ±inf (-1: none);
        for the messages, merged as the smallest so that any chunking gives the same row.
    weight_nan, weight_inf : int
        Of ``bad_weights``, the NaN and the ±inf ones (the rest are negative), for scikit-learn's sentence.
    first_bad_weight : int
        Global number of the first row with a bad weight (-1: none), merged as ``first_nonfinite``.
    complete : int
        Rows in ``mean`` (finite, of positive weight); -1: not counted (the scan of sparse rows).
    lo, hi : ndarray, shape (D,), or None
        Smallest and largest value per column over the rows in ``mean`` (finite, of positive weight):
        a column is constant exactly when they are equal, where its variance, rounding of a mean far
        from 0, cannot tell (None: not counted, as by the scan of sparse rows).
    observed : ndarray, shape (D,), or None
        The weight of each column's observed values, in ``mean`` and ``m2`` (``weight`` in every column when
        every row is complete); None: not counted (the scan of sparse rows, whose every value is observed).
    shift : ndarray, shape (D,), or None
        The passes' shift where it is not ``mean``: on the columns a few far rows pulled the mean away from the
        others (:func:`daskgmm.kernels.scan.far_columns`), the scan's sample's median, ``mean`` elsewhere
        (:attr:`centre`); None: ``mean`` in every column.
    """

    rows: int
    weight: float
    mean: np.ndarray
    m2: np.ndarray
    nan: np.ndarray
    inf: np.ndarray
    bad_weights: int
    empty_rows: int = 0
    first_nonfinite: int = -1
    first_inf: int = -1
    weight_nan: int = 0
    weight_inf: int = 0
    first_bad_weight: int = -1
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None
    complete: int = -1
    observed: np.ndarray | None = None
    shift: np.ndarray | None = None

    @property
    def centre(self) -> np.ndarray:
        """The shift of every pass: ``mean``, but on :attr:`far` columns the scan's sample's median, so that a few
        rows at a fill value (1e20 among values near 1) do not take the other rows' precision."""
        return self.mean if self.shift is None else self.shift

    @property
    def far(self) -> np.ndarray:
        """The columns whose :attr:`centre` is the sample's median (int, empty for most data)."""
        # a column without a value has a NaN mean and shift: not far
        return np.zeros(0, np.intp) if self.shift is None else np.flatnonzero(np.isfinite(self.shift)
                                                                               & (self.shift != self.mean))

    @property
    def column_weight(self) -> np.ndarray:
        """The weight in each column's ``mean`` and ``m2`` (D,): ``observed``, or ``weight`` in every column
        where it is not counted (rows without NaN: the scan of sparse rows)."""
        return np.full(np.shape(self.mean), float(self.weight)) if self.observed is None else self.observed

    @property
    def rows_weight(self) -> float:
        """The weight of the rows with an observed value, at least (the largest column's): ``weight`` where
        every row is complete or ``observed`` is not counted. Under ``missing="marginalize"`` ``weight`` is the
        complete rows' alone, 0 where every row misses a value: the data's weight is this."""
        if self.observed is None:
            return float(self.weight)
        return max(float(self.weight), float(np.max(self.observed, initial=0.0)))

    @property
    def variance(self) -> np.ndarray:
        """Each column's weighted variance (``ddof=0``) over its observed values; 0 where it has no weight."""
        w = self.column_weight
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(w > 0, self.m2 / np.where(w > 0, w, 1.0), 0.0)


def first_row(a: int, b: int) -> int:
    """The smaller of two global row numbers, -1 standing for none."""
    return b if a < 0 else a if b < 0 else min(a, b)


def chan(wa, ma, m2a, wb, mb, m2b):
    w = wa + wb
    if w <= 0:
        return w, ma, m2a
    delta = mb - ma
    return w, ma + delta * (wb / w), m2a + m2b + delta**2 * (wa * wb / w)


def chan_columns(wa, ma, m2a, wb, mb, m2b):
    """:func:`chan` column by column, each column of its own weight (arrays of shape (D,)): where every weight
    is one number, the same arithmetic, so the same bits; a column of no weight on both sides keeps ``ma``,
    ``m2a`` (``mb`` and ``m2b`` of a side without weight are 0)."""
    w = wa + wb
    delta = mb - ma
    pos = w > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(pos, wb / np.where(pos, w, 1.0), 0.0)
        cross = np.where(pos, wa * wb / np.where(pos, w, 1.0), 0.0)
    return w, ma + delta * share, m2a + m2b + delta**2 * cross


def named_ids(ids, id_column) -> dict:
    """The id columns of one part of a predictions dataset: ``{name: values}`` for the names ``id_column``
    (a name, a sequence of names, or None: no id column) and ``ids`` (the values; for several names a
    sequence of arrays, in their order)."""
    if id_column is None:
        return {}
    if isinstance(id_column, str):
        return {id_column: ids}
    return dict(zip(id_column, ids, strict=True))
