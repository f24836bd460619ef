"""K-medoids kernels: dissimilarities of a block of rows to a set of points, and the tables of a k-medoids pass.

A medoid is a row, so a k-medoids pass cannot average: it sums, per chunk, what choosing
each *candidate* row as a medoid would cost (Park & Jun's alternate step: the dissimilarity
of every row of a cluster to every candidate of that cluster), or gain (FasterPAM's swap
gains: Schubert & Rousseeuw 2021, the change of the loss if medoid k were replaced by
candidate c, for every (k, c)). Both are K x m tables of sums over rows, so chunks merge by
addition on the engine's tree.

- :class:`Dissimilarity` — a metric by name (any name ``sklearn.metrics.pairwise_distances``
  accepts) or a picklable callable; the common ones in NumPy, the others through scikit-learn,
  imported only by a process that meets one;
- :class:`MedoidRequest`, :class:`MedoidStats` — one pass of the k-medoids loop (pass protocol);
- :class:`NearestRequest`, :class:`NearestRows` — the rows nearest to given points (chunking-independent);
- :func:`nearest_medoid`, :func:`medoid_distances` — predictions per block.

Pure NumPy; nothing here knows about Dask.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from daskgmm.kernels.features import NO_FEATURES
from daskgmm.kernels.protocol import Block
from daskgmm.kernels.results import named_ids, smallest

#: The names ``sklearn.metrics.pairwise_distances`` accepts for a metric on feature rows
#: (scikit-learn's own and SciPy's; "precomputed" is not one: k-medoids here reads feature rows).
METRICS = (
    "braycurtis", "canberra", "chebyshev", "cityblock", "correlation", "cosine", "dice", "euclidean", "hamming",
    "haversine", "jaccard", "l1", "l2", "mahalanobis", "manhattan", "matching", "minkowski", "nan_euclidean",
    "rogerstanimoto", "russellrao", "seuclidean", "sokalsneath", "sqeuclidean", "yule",
)

#: Names of :data:`METRICS` that ``KMedoids`` refuses to fit with, and why (they stay in :data:`METRICS`: a
#: model file saved with one before the refusal still loads and predicts). scikit-learn's nan_euclidean exists
#: to measure rows with missing values, but every pass here (the scan's statistics, the sample, predict,
#: transform and score) refuses NaN; on finite rows it is "euclidean".
REFUSED_METRICS = {
    "nan_euclidean": "its rows cannot hold missing values (NaN), which is what that metric is for, and without NaN "
                     "it equals metric='euclidean'. Impute the missing values (e.g. sklearn.impute.SimpleImputer) "
                     "and use metric='euclidean'",
}

#: Names computed here in NumPy, and the form each takes ("minkowski" is SciPy's default p = 2).
NATIVE = {
    "euclidean": "euclidean", "l2": "euclidean", "minkowski": "euclidean", "seuclidean": "euclidean",
    "mahalanobis": "euclidean", "sqeuclidean": "sqeuclidean", "manhattan": "manhattan", "cityblock": "manhattan",
    "l1": "manhattan", "cosine": "cosine", "chebyshev": "chebyshev",
}

#: Names whose dissimilarity depends on the whole data (SciPy estimates ``V`` or ``VI`` from the two
#: arrays it is given, which would make every block's distances depend on its neighbours): here the
#: linear map comes from the whole data, once (:meth:`Dissimilarity.of`).
DATA_DEPENDENT = ("seuclidean", "mahalanobis")


class DissimilarityError(ValueError):
    """The data cannot have the metric (haversine of other than 2 columns, a constant column for
    ``seuclidean``, a singular covariance for ``mahalanobis``, NaN between rows): bad input, a ValueError in
    Python with scikit-learn's, SciPy's or the estimator's message; the command exits 2 on it, naming
    the option and the columns."""


def _sq_norms(a: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", a, a)


#: The product form ‖a‖² + ‖b‖² - 2 a·b of a squared Euclidean distance is off by about eps (‖a‖² + ‖b‖²):
#: every entry below this fraction of ‖a‖² + ‖b‖² is taken again by differences, so that what the product
#: form keeps is right to ~1e-8 relative (rows close to each other far from the data's mean: rows 1e-6 apart
#: at 1e3 were all at distance 0 to both of two medoids, labelled by rounding, inertia_ 0 against 1.25e-4).
PRODUCT_FORM_RTOL = float(np.sqrt(np.finfo(np.float64).eps))
_PAIRS_PER_BLOCK = 1 << 16


def _by_differences(out, a, b, sa, sb) -> None:
    """Squared distances again by differences where the product form ``out`` is below its rounding's
    reach (:data:`PRODUCT_FORM_RTOL`), in place."""
    # the rows with such an entry first (one pass over out), most often none or the medoids' own
    rows = np.flatnonzero(out.min(axis=1) < PRODUCT_FORM_RTOL * (sa + sb.max()))
    if not rows.size:
        return
    i, j = np.nonzero(out[rows] < PRODUCT_FORM_RTOL * (sa[rows, None] + sb[None, :]))
    i = rows[i]
    for s in range(0, len(i), _PAIRS_PER_BLOCK):
        ii, jj = i[s : s + _PAIRS_PER_BLOCK], j[s : s + _PAIRS_PER_BLOCK]
        diff = a[ii] - b[jj]
        out[ii, jj] = np.einsum("ij,ij->i", diff, diff)


@dataclass(frozen=True)
class Dissimilarity:
    """A dissimilarity between rows, computed the same way for every block of every chunk.

    Attributes
    ----------
    metric : str or callable
        A name of :data:`METRICS`, or a picklable ``metric(u, v) -> float`` on two rows
        (as ``sklearn.metrics.pairwise_distances`` calls it).
    centre : ndarray, shape (D,) or None
        Subtracted before the Euclidean forms (``‖x‖² + ‖y‖² - 2 x·y`` loses digits far from
        the origin); the data mean.
    transform : ndarray, shape (D, D) or None
        Rows are mapped by ``(x - centre) @ transform`` before the Euclidean distance:
        ``seuclidean`` (``diag(1/√V)``) and ``mahalanobis`` (a square root of ``VI``).
    """

    metric: Any = "euclidean"
    centre: np.ndarray | None = None
    transform: np.ndarray | None = None

    @classmethod
    def of(cls, metric, centre=None, variance=None, covariance=None) -> Dissimilarity:
        """The dissimilarity for a metric name or callable; ``variance`` (ddof=1, shape (D,)) for
        ``seuclidean`` and ``covariance`` (ddof=1, shape (D, D)) for ``mahalanobis``, of the whole data."""
        transform = None
        if metric == "seuclidean":
            transform = np.diag(1.0 / np.sqrt(np.asarray(variance, np.float64)))
        elif metric == "mahalanobis":
            # ‖L^T (x - y)‖ with L L^T = VI = C^{-1}: L = C^{-1/2} (symmetric square root)
            w, v = np.linalg.eigh(np.asarray(covariance, np.float64))
            transform = (v / np.sqrt(w)) @ v.T
        c = None if centre is None else np.asarray(centre, np.float64)
        return cls(metric, c, transform)

    @property
    def kind(self) -> str:
        if callable(self.metric):
            return "callable"
        return NATIVE.get(self.metric, "sklearn")

    @property
    def name(self) -> str:
        return getattr(self.metric, "__name__", "callable") if callable(self.metric) else str(self.metric)

    def _euclidean_rows(self, a: np.ndarray) -> np.ndarray:
        a = np.asarray(a, np.float64)
        if self.centre is not None:
            a = a - self.centre
        if self.transform is not None:
            a = a @ self.transform
        return a

    def pairwise(self, x, y, exact: bool = False) -> np.ndarray:
        """Dissimilarities of every row of ``x`` (n, D) to every row of ``y`` (m, D), float64 (n, m).

        ``exact``: Euclidean forms by differences (a row's distance to itself is 0, equal distances
        are equal), m times slower than the product form for few ``y``.
        """
        # row-major whatever the chunk's layout: NumPy's row norms (einsum) and the product form's matrix
        # product round by layout, and a fit keeps its chunks row-major (engine.placement.row_major) where a
        # read of every pass or a caller's persisted chunks are column-major (Parquet's): the same bits from
        # each. A copy of a block of a column-major chunk, small beside its (n, m) dissimilarities.
        x = np.ascontiguousarray(x)
        y = np.ascontiguousarray(y)
        n, m = x.shape[0], y.shape[0]
        if n == 0 or m == 0:
            return np.zeros((n, m))
        kind = self.kind
        if kind in ("euclidean", "sqeuclidean") and exact:
            a, b = self._euclidean_rows(x), self._euclidean_rows(y)
            out = np.zeros((n, m))
            tmp = np.empty((n, m))
            for j in range(a.shape[1]):
                np.subtract(a[:, j, None], b[None, :, j], out=tmp)
                out += np.square(tmp, out=tmp)
            return np.sqrt(out, out=out) if kind == "euclidean" else out
        if kind in ("euclidean", "sqeuclidean"):
            # ‖a‖² + ‖b‖² - 2 a·b in one product: [a, 1, ‖a‖²] · [-2b, ‖b‖², 1]
            a, b = self._euclidean_rows(x), self._euclidean_rows(y)
            sa, sb = _sq_norms(a), _sq_norms(b)
            out = np.hstack([a, np.ones((n, 1)), sa[:, None]]) @ np.hstack([-2.0 * b, sb[:, None], np.ones((m, 1))]).T
            _by_differences(out, a, b, sa, sb)  # and so never negative
            return np.sqrt(out, out=out) if kind == "euclidean" else out
        if kind in ("manhattan", "chebyshev"):
            a, b = np.asarray(x, np.float64), np.asarray(y, np.float64)
            out = np.zeros((n, m))
            tmp = np.empty((n, m))
            for j in range(a.shape[1]):
                np.subtract(a[:, j, None], b[None, :, j], out=tmp)
                np.abs(tmp, out=tmp)
                if kind == "manhattan":
                    out += tmp
                else:
                    np.maximum(out, tmp, out=out)
            return out
        if kind == "cosine":
            a, b = np.asarray(x, np.float64), np.asarray(y, np.float64)
            na, nb = np.sqrt(_sq_norms(a)), np.sqrt(_sq_norms(b))
            na[na == 0] = 1.0  # a zero row stays zero: similarity 0, dissimilarity 1 (scikit-learn's rule)
            nb[nb == 0] = 1.0
            out = (a / na[:, None]) @ (b / nb[:, None]).T
            np.subtract(1.0, out, out=out)
            return np.clip(out, 0.0, 2.0, out=out)
        if kind == "callable":
            a, b = np.asarray(x, np.float64), np.asarray(y, np.float64)
            out = np.empty((n, m))
            f = self.metric
            for i in range(n):
                for j in range(m):
                    v = f(a[i], b[j])
                    try:
                        out[i, j] = v
                    except (TypeError, ValueError):  # numpy's "setting an array element with a sequence"
                        what = (f"an ndarray of shape {v.shape}" if isinstance(v, np.ndarray)
                                else f"{type(v).__name__} {v!r:.60}")
                        raise TypeError(f"metric {self.name!r} returned {what}, not a number, for two rows: "
                                        "metric(u, v) must return one float") from None
            # here, where a callable's values are made, in every pass: a negative one made clusters empty,
            # with a warning of duplicate points (the named metrics are >= 0 by construction)
            neg = np.flatnonzero(out < 0)
            if len(neg):
                i, j = np.unravel_index(neg[0], out.shape)
                raise ValueError(f"Negative values in the dissimilarities of metric {self.name!r}: it returned "
                                 f"{float(out[i, j])!r} for u={a[i].tolist()!s:.60} and v={b[j].tolist()!s:.60}. "
                                 "A dissimilarity must be >= 0 (k-medoids sums them as distances).")
            return out
        from sklearn.metrics import pairwise_distances  # only a process that meets such a metric imports it

        with warnings.catch_warnings():
            # boolean metrics convert the rows with a DataConversionWarning per call: the fit warns once
            warnings.simplefilter("ignore")
            return np.asarray(pairwise_distances(np.asarray(x, np.float64), np.asarray(y, np.float64),
                                                 metric=self.metric), dtype=np.float64)


def nearest_two(dm: np.ndarray):
    """Nearest and second-nearest column of every row of ``dm`` (n, K), and their values.

    Returns
    -------
    near : ndarray of int64, shape (n,)
        The first column of smallest value.
    d1, d2 : ndarray, shape (n,)
        Smallest and second-smallest values (``d2`` is ``inf`` when K = 1).
    """
    n, k = dm.shape
    near = np.argmin(dm, axis=1) if k else np.zeros(n, np.int64)
    rows = np.arange(n)
    d1 = dm[rows, near]
    if k < 2:
        return near.astype(np.int64), d1, np.full(n, np.inf)
    masked = dm.copy()
    masked[rows, near] = np.inf
    return near.astype(np.int64), d1, masked.min(axis=1)


def swap_sums(dc: np.ndarray, near, d1, d2, k: int):
    """FasterPAM's sums over points for swapping each medoid with each candidate.

    Parameters
    ----------
    dc : ndarray, shape (n, m)
        Dissimilarities of the points to the candidates.
    near, d1, d2 : ndarray, shape (n,)
        Each point's nearest medoid and its smallest and second smallest dissimilarity (:func:`nearest_two`).
    k : int
        Number of medoids (at least 2).

    Returns
    -------
    removal : ndarray, shape (k,)
        ``Σ_{i: near=k} (d2 - d1)``.
    plus : ndarray, shape (m,)
        ``Σ_i min(d_c - d1, 0)``.
    table : ndarray, shape (k, m)
        ``Σ_{i: near=k} [min(d_c - d2, 0) - min(d_c - d1, 0)]``: if its own medoid goes, a point
        moves to c or to its second medoid, on top of what ``plus`` counted.
    """
    removal = np.bincount(near, d2 - d1, minlength=k)
    a = np.subtract(dc, d1[:, None])
    np.minimum(a, 0.0, out=a)
    b = np.subtract(dc, d2[:, None])
    np.minimum(b, 0.0, out=b)
    onehot = np.zeros((k, len(near)))
    onehot[near, np.arange(len(near))] = 1.0
    per = onehot @ a  # the clusters' rows partition all rows: plus is the sum of its rows
    return removal, per.sum(axis=0), onehot @ b - per


def swap_gains(dc: np.ndarray, near, d1, d2, k: int, loss: float) -> np.ndarray:
    """The change of the loss for swapping each medoid with each candidate, shape (k, m) (see :func:`swap_sums`;
    for k = 1, the candidate's total dissimilarity minus ``loss``)."""
    if k == 1:
        return (dc.sum(axis=0) - loss)[None, :]
    removal, plus, table = swap_sums(dc, near, d1, d2, k)
    return removal[:, None] + plus[None, :] + table


@dataclass(frozen=True)
class MedoidStats:
    """Sums over rows under one set of medoids; merge is addition.

    Attributes
    ----------
    loss : float
        ``Σ_i d(x_i, nearest medoid)`` (the inertia).
    rows : int
    counts : ndarray of int64, shape (K,)
        Rows nearest to each medoid.
    cost : ndarray, shape (m,) or None
        The alternate step: ``cost[c] = Σ_{i in cluster(c)} d(x_i, c)``, for each candidate
        ``c`` of the cluster ``cluster(c)`` it stands for.
    removal : ndarray, shape (K,) or None
        The swap pass: ``Σ_{i: n(i)=k} (d2_i - d1_i)``, what removing medoid k alone costs.
    plus : ndarray, shape (m,) or None
        ``Σ_i min(d(x_i, c) - d1_i, 0)``: what adding candidate c alone gains.
    table : ndarray, shape (K, m) or None
        FasterPAM's correction: the change of the loss of swapping medoid k for candidate c
        is ``removal[k] + plus[c] + table[k, c]``.
    """

    loss: float
    rows: int
    counts: np.ndarray
    cost: np.ndarray | None = None
    removal: np.ndarray | None = None
    plus: np.ndarray | None = None
    table: np.ndarray | None = None

    def swap_gains(self) -> np.ndarray:
        """The change of the loss for every swap (medoid k, candidate c), shape (K, m)."""
        return self.removal[:, None] + self.plus[None, :] + self.table

    def merge(self, other: MedoidStats) -> MedoidStats:
        def add(a, b):
            return None if a is None else a + b

        return MedoidStats(self.loss + other.loss, self.rows + other.rows, self.counts + other.counts,
                           add(self.cost, other.cost), add(self.removal, other.removal),
                           add(self.plus, other.plus), add(self.table, other.table))


@dataclass(frozen=True)
class MedoidRequest:
    """One pass of the k-medoids loop: the assignment to ``medoids`` and the tables of ``mode``.

    Attributes
    ----------
    metric : Dissimilarity
    medoids : ndarray, shape (K, D)
    candidates : ndarray, shape (m, D)
    cluster : ndarray of int64, shape (m,)
        The cluster each candidate stands for (its table entry in the alternate step).
    mode : {"alternate", "swap", "assign"}
        "alternate": :attr:`MedoidStats.cost`; "swap": FasterPAM's swap gains
        (:attr:`MedoidStats.removal`, ``plus``, ``table``; every row against every
        candidate, so m times the work of an assignment); "assign": the loss and counts only.
    """

    metric: Dissimilarity
    medoids: np.ndarray
    candidates: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    cluster: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    mode: str = "assign"

    level = NO_FEATURES

    @property
    def width(self) -> int:
        """Rows of per-block scratch: the dissimilarities to the medoids and to the candidates."""
        return self.medoids.shape[0] + (len(self.candidates) if self.mode == "swap" else 0)

    def block_rows(self, acc) -> None:
        return None

    def start(self, n_features, dtype, level, centre, kernel=None):
        k, m = self.medoids.shape[0], len(self.candidates)
        acc = {"loss": 0.0, "rows": 0, "counts": np.zeros(k, np.int64)}
        if self.mode == "alternate":
            acc["cost"] = np.zeros(m)
            acc["groups"] = [np.flatnonzero(self.cluster == j) for j in range(k)]
        elif self.mode == "swap":
            acc.update(removal=np.zeros(k), plus=np.zeros(m), table=np.zeros((k, m)))
        return acc

    def update(self, acc, blk: Block) -> None:
        x = blk.x
        k = self.medoids.shape[0]
        near, d1, d2 = nearest_two(self.metric.pairwise(x, self.medoids))
        acc["loss"] += float(d1.sum())
        acc["rows"] += blk.size
        acc["counts"] += np.bincount(near, minlength=k)
        if self.mode == "alternate":
            for j, idx in enumerate(acc["groups"]):
                if idx.size:
                    mine = near == j
                    if mine.any():
                        acc["cost"][idx] += self.metric.pairwise(x[mine], self.candidates[idx]).sum(axis=0)
        elif self.mode == "swap" and len(self.candidates):
            removal, plus, table = swap_sums(self.metric.pairwise(x, self.candidates), near, d1, d2, k)
            acc["removal"] += removal
            acc["plus"] += plus
            acc["table"] += table

    def finish(self, acc, n_features, centre) -> MedoidStats:
        return MedoidStats(acc["loss"], acc["rows"], acc["counts"].copy(), acc.get("cost"), acc.get("removal"),
                           acc.get("plus"), acc.get("table"))

    @staticmethod
    def merge(a: MedoidStats, b: MedoidStats) -> MedoidStats:
        return a.merge(b)


@dataclass(frozen=True)
class NearestRows:
    """The ``n`` rows nearest to each of H target points, ties broken by row number.

    Attributes
    ----------
    dist, rows : ndarray, shape (H, n)
        Ascending dissimilarities (``inf`` and row -1 where fewer rows were seen) and global row numbers.
    points : ndarray, shape (H, n, D)
    """

    dist: np.ndarray
    rows: np.ndarray
    points: np.ndarray

    def merge(self, other: NearestRows) -> NearestRows:
        n = self.dist.shape[1]
        out = [smallest(np.concatenate([self.dist[h], other.dist[h]]), np.concatenate([self.rows[h], other.rows[h]]),
                        np.concatenate([self.points[h], other.points[h]]), n) for h in range(self.dist.shape[0])]
        return NearestRows(*(np.array([o[i] for o in out]) for i in range(3)))


@dataclass(frozen=True)
class NearestRequest:
    """The ``n`` rows nearest to each of ``targets`` (H, D) by ``metric``, for any chunking the same rows."""

    metric: Dissimilarity
    targets: np.ndarray
    n: int = 1

    level = NO_FEATURES
    width = 0

    def block_rows(self, acc) -> None:
        return None

    def start(self, n_features, dtype, level, centre, kernel=None):
        h = len(self.targets)
        return NearestRows(np.full((h, self.n), np.inf), np.full((h, self.n), -1, np.int64),
                           np.zeros((h, self.n, n_features)))

    def update(self, acc: NearestRows, blk: Block) -> NearestRows:
        d = self.metric.pairwise(blk.x, self.targets, exact=True).T  # (H, nb): a row given is at 0
        x64 = np.asarray(blk.x, np.float64)
        n = min(self.n, blk.size)
        h = len(self.targets)
        mine = NearestRows(np.full((h, self.n), np.inf), np.full((h, self.n), -1, np.int64),
                           np.zeros((h, self.n, blk.x.shape[1])))
        for t in range(h):
            dist, rows, pts = smallest(d[t], blk.rows, x64, n)
            mine.dist[t, :n], mine.rows[t, :n], mine.points[t, :n] = dist, rows, pts
        return acc.merge(mine)

    def finish(self, acc, n_features, centre) -> NearestRows:
        return acc

    @staticmethod
    def merge(a: NearestRows, b: NearestRows) -> NearestRows:
        return a.merge(b)


def nearest_medoid(x, medoids, metric: Dissimilarity, block_rows: int = 4096) -> np.ndarray:
    """Index of the nearest medoid (the first of equals) of every row, int64 (n,)."""
    x = np.asarray(x)
    out = np.empty(x.shape[0], np.int64)
    for a in range(0, x.shape[0], block_rows):
        out[a : a + block_rows] = np.argmin(metric.pairwise(x[a : a + block_rows], medoids), axis=1)
    return out


def medoid_distances(x, medoids, metric: Dissimilarity, block_rows: int = 4096) -> np.ndarray:
    """Dissimilarities of every row to every medoid, (n, K), in the rows' float dtype."""
    x = np.asarray(x)
    dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    out = np.empty((x.shape[0], len(medoids)), dtype)
    for a in range(0, x.shape[0], block_rows):
        out[a : a + block_rows] = metric.pairwise(x[a : a + block_rows], medoids)
    return out


def medoid_part(x, ids, medoids, metric: Dissimilarity, id_column, distance: bool) -> dict:
    """Columns of one part of a predictions dataset: the id column(s) (:func:`named_ids`), ``label`` and
    optionally ``distance``."""
    d = medoid_distances(x, medoids, metric) if len(x) else np.zeros((0, len(medoids)))
    out = named_ids(ids, id_column)
    label = np.argmin(d, axis=1) if len(d) else np.zeros(0, np.int64)
    out["label"] = label.astype(np.int32)
    if distance:
        out["distance"] = d[np.arange(len(d)), label].astype(np.float64)
    return out
