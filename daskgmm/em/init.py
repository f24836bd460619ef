"""Initialisations on Dask data: k-means||, k-means++, random, random_from_data.

"k-means||" (and a mixture's "kmeans") runs k-means on the uniform sample the
first scan draws, on the client, then Lloyd passes polish it. The others run as
passes over the chunks (several restarts in lockstep share each pass); only the
chosen rows and small statistics come back to the client. Random choices about rows use draws keyed by global row number
(:mod:`daskgmm.kernels.random`), k-means on the sample reads the sample only, and of
runs that reach the same solution the first is kept (:func:`daskgmm.models.states.first_best`),
so results depend on ``random_state`` and not on how the data are chunked (to rounding;
k-means on the sample to the bit).
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from daskgmm.em.loop import Run, lockstep, run_specs
from daskgmm.engine.cluster import blas_threads
from daskgmm.engine.passes import SCAN_SAMPLE_KEY, ChunkedData
from daskgmm.engine.passes import is_sparse_chunk as issparse
from daskgmm.kernels import MixtureRequest, ModelSpec, SampleRequest, chunk_pass, kmeans_natural_params
from daskgmm.kernels import compiled as compiled_kernel
from daskgmm.kernels.random import stream_key
from daskgmm.kernels.scan import exact_where_cancelled, weighted_median
from daskgmm.models.states import KMeansState, first_best

INIT_METHODS = ("kmeans", "k-means++", "random", "random_from_data")

def _per_seed(n_clusters, seeds) -> list[int]:
    """``n_clusters`` as one int per seed (it may be one int for all)."""
    if isinstance(n_clusters, (int, np.integer)):
        return [int(n_clusters)] * len(seeds)
    ks = [int(k) for k in n_clusters]
    if len(ks) != len(seeds):
        raise ValueError("n_clusters must be an int or one int per seed")
    return ks


def _finite_points(result, h=0, dense=True) -> np.ndarray:
    """The drawn rows of hypothesis ``h`` (sparse rows as a dense array unless ``dense=False``)."""
    ok = np.isfinite(result.keys[h])
    points = result.points[h][ok]
    return points.toarray() if dense and issparse(points) else points


def random_rows(data: ChunkedData, centre, n, seeds: list[int], stream: int = 7, dense=True) -> list[np.ndarray]:
    """``n`` distinct rows per seed (``n`` an int, or one per seed), uniformly by sample weight
    (sparse rows stay sparse with ``dense=False``)."""
    # finite_only: under missing="marginalize" rows with NaN are not drawn
    reqs = [SampleRequest(np.zeros((0, data.n_features)), m, stream_key(s, stream), finite_only=True)
            for m, s in zip(_per_seed(n, seeds), seeds)]
    return [_finite_points(r, dense=dense) for r in data.run(reqs, centre)]


def kmeans_plusplus(data: ChunkedData, centre, n_clusters, seeds: list[int]) -> list[np.ndarray]:
    """Greedy k-means++ (Arthur & Vassilvitskii 2007, with scikit-learn's local trials).

    Each new centre is the best of ``2 + log(k)`` candidates drawn with
    probability proportional to the squared distance to the chosen centres.
    Choosing among candidates and drawing the next candidates happen in the
    same pass (the pass computes, for every candidate, the potential it would
    give and the next draws if it were chosen), so k centres take k + 1 passes;
    several seeds (and several k, one per seed) share them.
    """
    d = data.n_features
    ks = _per_seed(n_clusters, seeds)
    trials = [2 + int(math.log(k)) for k in ks]
    exact = bool(data.far.size)  # rows far from the others: distances where the expansion cancels exact
    first = data.run(
        [SampleRequest(np.zeros((0, d)), 1, stream_key(s, 1000), finite_only=True) for s in seeds], centre
    )
    chosen = [_finite_points(r)[:1] for r in first]
    active = [i for i, k in enumerate(ks) if k > 1]
    if not active:
        return chosen
    res = data.run(
        [SampleRequest(chosen[i], trials[i], stream_key(seeds[i], 1001), exact=exact) for i in active], centre
    )
    cands = {i: _finite_points(r) for i, r in zip(active, res)}
    for step in range(2, max(ks) + 1):
        active = [i for i in active if ks[i] >= step]
        reqs = []
        for i in active:
            cand = cands[i] if len(cands[i]) else chosen[i][:1]  # every row is a centre: repeat one
            reqs.append(SampleRequest(chosen[i], trials[i], stream_key(seeds[i], 1000 + step), candidates=cand,
                                      exact=exact))
        res = data.run(reqs, centre)
        for i, req, r in zip(active, reqs, res):
            best = int(np.argmin(r.potential))
            chosen[i] = np.vstack([chosen[i], req.candidates[best : best + 1]])
            cands[i] = _finite_points(r, best)
    return chosen


def _sq_dist(points, sq_points, centers, exact: bool = False) -> np.ndarray:
    """Squared distances (n, k) by one GEMM (sparse x dense for sparse points), clipped at 0 against rounding.

    ``|x|^2 - 2 x.c + |c|^2`` in the GEMM's own array, step by step as the expression would round it: its
    temporaries, three arrays of n x k, made a local Lloyd iteration on the k-means|| sample (65,536 rows,
    K = 128) take 49-107 ms instead of 34-39, most of a KMeans(128) fit. ``exact`` (dense points with far
    columns, :attr:`daskgmm.kernels.results.ScanResult.far`): :func:`daskgmm.kernels.scan.exact_where_cancelled`."""
    d = _from_products(np.asarray(points @ centers.T), sq_points[:, None], centers, (None, slice(None)))
    return exact_where_cancelled(d, points, sq_points, centers) if exact else d


def _sq_dist_by_centre(columns, sq_points, centers, exact: bool = False) -> np.ndarray:
    """:func:`_sq_dist`'s distances as (k, n), from the points by column (D, n): the same expression rounded in
    the same steps, each centre's distances contiguous (k-means++'s candidates, 131,072 rows x 3, 7 of them:
    2.5 against 4.7 ms with the (n, k) array's transpose)."""
    d = _from_products(centers @ columns, sq_points[None, :], centers, (slice(None), None))
    return exact_where_cancelled(d, columns, sq_points, centers, by_centre=True) if exact else d


def _from_products(d, sq_points, centers, along):
    """``|x|^2 - 2 x.c + |c|^2`` clipped at 0, in the array ``d`` of the products ``x.c``, step by step;
    ``sq_points`` shaped to broadcast over ``d``, ``along`` the index that does so for the centres' norms."""
    d *= 2.0
    np.subtract(sq_points, d, out=d)
    d += np.einsum("kd,kd->k", centers, centers)[along]
    return np.maximum(d, 0.0, out=d)


#: Rows of a local Lloyd step's distances at a time (:func:`_nearest`): a block's distances to K = 256 centres,
#: 8 MiB, stay in the cache between the steps that make them and the arg-min.
NEAREST_BLOCK_ROWS = 4096


def _nearest(points, sq_points, centers, exact: bool = False) -> np.ndarray:
    """Each point's nearest centre (the first of equals): :func:`_sq_dist`'s arg-min, a block of rows at a time
    (each row's distances are the same numbers; 65,536 rows, K = 128: 22 against 30 ms). ``exact`` (dense points
    with far columns, :attr:`daskgmm.kernels.results.ScanResult.far`): every distance from the differences, in
    blocks of at most 2^20 of them: a row at 1e300 has ``‖x‖² = inf``, where the expansion gives inf or NaN to
    every centre, its own included, and no cancelled value is left to correct."""
    n = points.shape[0]
    out = np.empty(n, dtype=np.intp)
    if exact and not issparse(points):
        c = np.asarray(centers, dtype=np.float64)
        step = max(1, min(NEAREST_BLOCK_ROWS, 2**20 // max(1, c.size)))
        with np.errstate(over="ignore"):  # a far row's distance to the others' centres: inf, the right order
            for a in range(0, n, step):
                diff = points[a : a + step, None, :] - c[None, :, :]
                out[a : a + step] = np.einsum("nkd,nkd->nk", diff, diff).argmin(axis=1)
        return out
    for a in range(0, n, NEAREST_BLOCK_ROWS):
        b = min(n, a + NEAREST_BLOCK_ROWS)
        out[a:b] = _sq_dist(points[a:b], sq_points[a:b], centers).argmin(axis=1)
    return out


def _sparse_kernels():
    # imported for sparse rows only: the dense path (and a worker) never imports SciPy
    from daskgmm.kernels import sparse

    return sparse


def _sq_norms(points) -> np.ndarray:
    return _sparse_kernels().row_norms(points) if issparse(points) else np.einsum("nd,nd->n", points, points)


def _rows(points, index) -> np.ndarray:
    """Rows of the point set as a dense array (the centres chosen among them)."""
    return _sparse_kernels().dense_rows(points, index) if issparse(points) else points[index]


def _local_kmeanspp(points, weights, k, rng, trim: float = 0.0, exact: bool = False) -> np.ndarray:
    """Weighted greedy k-means++ on a small in-memory point set (scikit-learn's local trials).

    ``points`` dense (n, D), or sparse rows (then the distances are sparse x dense products).
    ``trim`` > 0: the squared distances that draw the candidates and choose among them are capped
    at their weighted ``1 - trim`` quantile, so the ``trim`` farthest rows weigh as the nearest of
    them (the potential of k-means with outliers, Chawla & Gionis 2013): a tight clump of gross
    outliers, which plain k-means++ almost always draws (its squared distance dwarfs a cluster's),
    is then drawn about as often as any rows of its weight. ``exact``: distances where the expansion cancels taken
    from the differences (:func:`daskgmm.kernels.scan.exact_where_cancelled`; the scan found far columns).
    """
    n = points.shape[0]
    w = np.asarray(weights, dtype=np.float64)
    w = w if w.sum() > 0 else np.ones(n)
    trials = 2 + int(math.log(k))
    sq = _sq_norms(points)
    # dense rows by column: each candidate's distances come out contiguous for the steps that use them
    columns = None if issparse(points) else np.ascontiguousarray(points.T)
    first = rng.choice(n, p=w / w.sum())
    first_row = _rows(points, [first])
    centers = [first_row[0]]
    closest = _sq_dist(points, sq, first_row, exact)[:, 0]
    pot = float(w @ closest)
    for _ in range(1, k):
        if pot <= 0:
            centers.append(_rows(points, [rng.integers(n)])[0])
            continue
        capped = np.minimum(closest, _weighted_quantile(closest, w, 1.0 - trim)) if trim > 0 else closest
        cum = np.cumsum(w * capped)
        if cum[-1] <= 0:  # the untrimmed rows are all centres already: draw as plain k-means++ does
            capped, cum = closest, np.cumsum(w * closest)
        cand = np.minimum(np.searchsorted(cum, rng.random(trials) * cum[-1]), n - 1)
        cand_rows = _rows(points, cand)
        dist = (_sq_dist(points, sq, cand_rows).T if columns is None
                else _sq_dist_by_centre(columns, sq, cand_rows, exact))
        np.minimum(dist, closest, out=dist)
        pots = (np.minimum(dist, capped) if trim > 0 else dist) @ w
        best = int(np.argmin(pots))
        centers.append(cand_rows[best])
        closest = dist[best]
        pot = float(closest @ w)  # the untrimmed potential: 0 once every row of positive weight is a centre
    return np.array(centers)


def _weighted_quantile(values, weights, q: float) -> float:
    """The smallest value at or below which a fraction ``q`` of the weight lies."""
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(weights[order])
    return float(values[order[min(int(np.searchsorted(cum, q * cum[-1])), len(order) - 1)]])


def _local_lloyd(points, weights, centers, max_iter=300, tol=0.0, exact: bool = False) -> tuple[np.ndarray, float]:
    """Weighted Lloyd iterations on a small in-memory point set, to convergence.

    Stops when no label changes or the centres move by at most ``tol`` in
    total squared distance (scikit-learn's rule), or after ``max_iter``.
    Returns the centres and the inertia of their assignment, summed from
    ``x - c`` (not the GEMM's expansion): tries that reach the same partition then differ by
    rounding only, which :func:`~daskgmm.models.states.first_best` treats as a tie. Sparse rows take
    :func:`daskgmm.kernels.sparse.lloyd`: the same labels, with Elkan's bounds skipping the
    distances that cannot change them (its inertia is the expansion's, about the origin). Dense rows
    take the compiled core's k-means pass where it is built (:func:`_core_lloyd`), else NumPy's GEMM. ``exact``
    (the scan found far columns): NumPy's steps with every distance from the differences (:func:`_nearest`); the
    core's expansion overflowed for a row at 1e300 and put it with 29 others, where the mixture's start then failed
    ("the inertia is not finite") while the NumPy path fitted it a component of its own.
    """
    w = np.asarray(weights, dtype=np.float64)
    if issparse(points):
        # the same labels, computing only the distances that can change them (Elkan's bounds)
        centers, _, inertia = _sparse_kernels().lloyd(points, w, centers, max_iter=max_iter, tol=tol)
        return centers, inertia
    centers = np.array(centers, dtype=np.float64)
    sq = _sq_norms(points)
    if compiled_kernel.ready() is not None and not exact:
        centers = _core_lloyd(points, w, centers, max_iter, tol)
        diff = points - centers[_nearest(points, sq, centers)]
        return centers, float(w @ np.einsum("nd,nd->n", diff, diff))
    k = len(centers)
    labels = None
    for _ in range(max_iter):
        new = _nearest(points, sq, centers, exact)
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        if _lloyd_update(centers, np.bincount(labels, weights=w, minlength=k),
                         _label_sums(points * w[:, None], labels, k), tol):
            labels = _nearest(points, sq, centers, exact)  # the assignment of the centres returned
            break
    else:
        labels = _nearest(points, sq, centers, exact)
    diff = points - centers[labels]
    with np.errstate(over="ignore"):
        return centers, float(w @ np.einsum("nd,nd->n", diff, diff))


#: Clusters from which the local Lloyd keeps k-means' bounds between its steps (``algorithm="elkan"``'s, the same
#: bits): below, the bounds cost about what they spare (docs/performance.md, *k-means' bounds*).
LOCAL_BOUNDS_MIN_K = 64


def _core_lloyd(points, w, centers, max_iter, tol) -> np.ndarray:
    """:func:`_local_lloyd`'s iterations by the compiled core's k-means pass over the points (labels and
    sums in one sweep; 65,536 rows x 2, K = 128: 3 ms a step against NumPy's GEMM and arg-min 19 ms), with
    k-means' bounds from :data:`LOCAL_BOUNDS_MIN_K` clusters. The labels are not returned: a step whose counts
    and sums are those of the step before (to the bit) had the same partition, the stop :func:`_local_lloyd`
    makes on labels."""
    from daskgmm.kernels import bounds as bounds_store

    origin = np.zeros(points.shape[1])
    key = f"daskgmm-local-lloyd-{next(_local_keys)}" if len(centers) >= LOCAL_BOUNDS_MIN_K else None
    before = None
    try:
        for _ in range(max_iter):
            spec = ModelSpec(kmeans_natural_params(centers), "spherical", "hard", bounds=key)
            (st,) = chunk_pass(points, [MixtureRequest([spec])], origin, sample_weight=w, compiled=True)[0]
            if before is not None and np.array_equal(st.n, before.n) and np.array_equal(st.s1, before.s1):
                break
            before = st
            if _lloyd_update(centers, st.n, st.s1, tol):
                break
    finally:
        if key is not None:
            bounds_store.forget(key)
    return centers


_local_keys = itertools.count()


def _lloyd_update(centers, counts, sums, tol) -> bool:
    """Lloyd's update of ``centers`` in place: each cluster of positive weight to its rows' weighted mean
    (``sums / counts``), an empty one left; whether they moved by at most ``tol`` in total squared distance."""
    moved = counts > 0
    old = centers.copy()
    centers[moved] = sums[moved] / counts[moved, None]
    return float(((centers - old) ** 2).sum()) <= tol


def _label_sums(values, labels, k) -> np.ndarray:
    """Per-label column sums of ``values`` (n, D): a ``bincount`` per column, in row order (the
    one-hot GEMM it replaces took 10 ms a call on a loaded 2-core host, and its bits depended on
    the BLAS kernel)."""
    out = np.empty((k, values.shape[1]))
    for j in range(values.shape[1]):
        out[:, j] = np.bincount(labels, weights=values[:, j], minlength=k)
    return out


#: Local k-means++ + Lloyd runs on the scan's sample per seed for KMeans; the lowest inertia
#: on the sample wins. Each costs milliseconds on the client; a pass costs a scan. A
#: mixture's restart takes one (see :func:`mixture_init_stats`).
SAMPLE_KMEANS_TRIES = 3
#: Rows of the sample k-means uses per cluster (the client's Lloyd iterations cost in
#: proportion); when the scan's sample is smaller (many clusters, wide data), one pass
#: draws a larger one.
SAMPLE_ROWS_PER_CLUSTER = 512


@blas_threads(1)
def sample_kmeans(data: ChunkedData, centre, n_clusters, seeds: list[int], *, tol: float = 0.0,
                  polish: bool | None = True, tries: int = SAMPLE_KMEANS_TRIES, trim: float = 0.0,
                  drawn=None) -> list[np.ndarray]:
    """k-means on the scan's sample, one list of centres per seed ("k-means||").

    The first scan draws a uniform sample of rows keyed by row number (the
    same rows for any chunking; see :meth:`daskgmm.engine.passes.ChunkedData.sample`).
    For each seed, greedy k-means++ (scikit-learn's ``2 + log k`` local
    trials) and Lloyd's algorithm to convergence run on the sample's first
    ``SAMPLE_ROWS_PER_CLUSTER * k`` rows on the client,
    ``tries`` times, and the first centres of lowest inertia on the sample up to
    rounding are kept (with ``polish=False``, k-means++ only: when the sample
    is the whole data, Lloyd's algorithm on it is the fit itself, and ``max_iter``
    must keep its meaning; ``polish=None``: ``False`` when the scan's sample holds
    every row, and when the larger sample does, the seeding of the try whose Lloyd on
    it ends lowest, else ``True``). No pass over the data is needed unless the scan's
    sample is too small (many clusters, wide data: then one pass draws a
    larger one). Like k-means|| (Bahmani et al. 2012), whose name the method
    keeps, this gives k-means++ quality without a pass per centre; Lloyd
    passes on the full data then polish the centres. ``trim``: the seeding's
    distances capped (:func:`_local_kmeanspp`), for starts that keep away from
    a clump of gross outliers.

    When the scan drew every row and there are at most ``SAMPLE_ROWS_PER_CLUSTER * k``
    of them, k-means runs on the data themselves as a weighted point set
    (:func:`_distinct_rows`): the centres then depend neither on the rows' order nor
    on whether a weight is given or a row repeated. Sparse rows (a scipy.sparse sample)
    are taken about the origin.

    ``drawn`` (``(rows, weights, every)``, :func:`observed_sample`): k-means on those rows in place of the scan's
    sample (``every``: they are all the rows there are to draw, as the scan's ``sample_complete``).

    BLAS runs on one thread here, as for the loop's client arithmetic (:func:`daskgmm.em.loop.lockstep`):
    OpenBLAS's threaded dot products (from 10,000 rows) round by the thread count, so the centres depended on
    the client's cores, and they wait for threads the workers' batches hold (40,000 x 2, K = 100, beside two
    busy processes: the fit 5.1-5.8 s with two BLAS threads, 1.8 s with one; scikit-learn limits its Lloyd so).
    """
    ks = _per_seed(n_clusters, seeds)
    sample, weights, every = (data.sample(), None, data.sample_complete) if drawn is None else drawn[:3]
    # rows far from the others (a fill value): their columns shifted by the sample's median, distances exact
    far = np.zeros(0, np.intp) if issparse(sample) else data.scan().far
    exact = bool(far.size)
    need = min(SAMPLE_ROWS_PER_CLUSTER * max(ks), data.n_rows)
    # the whole data as a weighted point set, when the scan drew every row and k-means takes them all
    whole = (_distinct_rows(sample, data.sample_weights() if weights is None else weights, far) if every else None)
    drawn_every_row = False
    if sample.shape[0] < need and whole is None and drawn is None:
        sample = random_rows(data, centre, need, [SCAN_SAMPLE_KEY], stream=11, dense=False)[0]
        # fewer rows than asked for: there were no more to draw (need is at most n_rows)
        drawn_every_row = sample.shape[0] < need or need == data.n_rows
    if issparse(sample):
        # sparse rows cannot be shifted and stay sparse: distances about the origin
        centre = np.zeros(data.n_features)
        centred = sample
    else:
        # GEMM distances keep their precision on centred rows. The shift is the sample's own mean, summed
        # in row order, not the scan's (whose rounding depends on the chunking): everything below is a
        # function of the sample's rows, which are the same for any chunking.
        if sample.shape[0]:
            centre = _sample_shift(sample, far)
        centred = sample - np.asarray(centre, dtype=np.float64)
    # k-means on every row is the fit itself: Lloyd's iterations are left to it, so that max_iter, n_iter_ and the
    # verbose lines keep scikit-learn's meaning. From the larger sample (every row, unweighted) the tries are still
    # ranked by their converged inertia, as on a sample, and the winner's seeding is kept: the fit's Lloyd goes from
    # it to those centres (ranked by their seeding instead, 8 fits of 5,000 sparse rows, K = 20, ended 0.9% higher)
    polish_k = polish if polish is not None else not data.sample_complete
    seeding_only = polish is None and drawn_every_row
    out = []
    for k, s in zip(ks, seeds):
        if whole is not None and sample.shape[0] <= SAMPLE_ROWS_PER_CLUSTER * k:
            pts, w, shift = whole
        else:
            # the first rows of a sample in random order are a uniform sample again; their number
            # depends on k only, so a candidate in a lockstep sweep gets the centres it gets alone
            pts, shift = centred[: SAMPLE_ROWS_PER_CLUSTER * k], centre
            w = np.ones(pts.shape[0])
        n_pts = pts.shape[0]
        if n_pts <= k:
            out.append(_rows(pts, np.resize(np.arange(n_pts), k)) + shift)
            continue
        rng = np.random.default_rng(s)
        found, inertias = [], []
        for _ in range(tries):
            c = _local_kmeanspp(pts, w, k, rng, trim=trim, exact=exact)
            if seeding_only:
                inertia = _local_lloyd(pts, w, c, tol=tol, exact=exact)[1]
            elif polish_k:
                c, inertia = _local_lloyd(pts, w, c, tol=tol, exact=exact)
            elif issparse(pts) or (whole is not None and pts is whole[0]):
                inertia = float(_sq_dist(pts, _sq_norms(pts), c, exact).min(axis=1) @ w)
            else:
                inertia = float((((pts[:, None, :] - c[None]) ** 2).sum(axis=2)).min(axis=1).sum())
            found.append(c)
            inertias.append(inertia)
        # tries that reach the same partition (in another order) differ by rounding: keep the first
        out.append(found[first_best(inertias, maximize=False)] + shift)
    return out


def _row_order_sum(values) -> np.ndarray:
    """The column sums of a sample's rows (n, D) added one row after another: their order is the same for any
    chunking (the sample's), where NumPy's pairwise sums round by blocks of rows."""
    return np.add.accumulate(values, axis=0)[-1]


def _sample_shift(sample, far):
    """The shift of a sample's rows (n, D): their mean summed in row order (the same for any chunking), but on the
    ``far`` columns (the scan's, :attr:`daskgmm.kernels.results.ScanResult.far`) their median."""
    shift = _row_order_sum(sample) / sample.shape[0]
    if len(far):
        shift[far] = np.median(sample[:, far], axis=0)
    return shift


def _distinct_rows(points, weights, far=()):
    """The data as a weighted point set: distinct rows in a canonical order, their weights summed,
    about their weighted mean (weighted median on the ``far`` columns); ``(points, weights, shift)``.

    It is the same set whether a weight is given or a row repeated, and whatever the
    rows' order, so the k-means on it (and the fit from there) is too: a weight of 3 and
    three copies of a row give the same centres. Rows are in the lexicographic order of
    their values, dense or sparse (so both give the same centres, and float32 data those of
    float64); sparse rows are not shifted.
    """
    w = np.asarray(weights, dtype=np.float64)
    if issparse(points):
        first, inverse = _sparse_kernels().distinct_rows(points)  # in the order np.unique gives dense rows
        distinct = _sparse_kernels().as_csr(points)[first]
        return distinct, np.bincount(inverse, weights=w, minlength=distinct.shape[0]), np.zeros(points.shape[1])
    distinct, inverse = np.unique(points, axis=0, return_inverse=True)
    total = np.bincount(inverse.reshape(-1), weights=w, minlength=len(distinct))
    shift = (total @ distinct) / total.sum() if total.sum() > 0 else np.zeros(points.shape[1])
    if len(far) and total.sum() > 0:
        shift[far] = weighted_median(distinct[:, far], total)
    return distinct - shift, total, shift




def observed_rows(data: ChunkedData, centre, m: int) -> tuple[np.ndarray, np.ndarray]:
    """``m`` rows drawn uniformly by sample weight among those with an observed value, NaN kept, as float64, and
    their sample weights: one pass (fewer rows where there are no more to draw). Keyed by row number, so the same
    rows in the same order for any chunking; the first rows of a draw are the draw of fewer."""
    req = SampleRequest(np.zeros((0, data.n_features)), m, stream_key(SCAN_SAMPLE_KEY, 13), observed_only=True)
    res = data.run([req], centre)[0]
    ok = np.isfinite(res.keys[0])  # the drawn rows come first, in key order
    return np.array(res.points[0][ok], dtype=np.float64), res.weights[0][ok]


def observed_sample(data: ChunkedData, centre, sizes, drawn=None) -> dict:
    """For each ``m`` of ``sizes``, ``m`` rows drawn uniformly by sample weight among those with an observed value
    (keyed by row number, so the same rows in the same order for any chunking), each missing value filled with its
    column's mean over those rows (its median on the scan's far columns, :attr:`ChunkedData.far
    <daskgmm.engine.passes.ChunkedData.far>`; ``centre``'s where none of them has one): the rows k-means starts a
    mixture from under ``missing="marginalize"`` (:func:`mixture_init_stats`). Returns
    ``{m: (rows, weights, every, drawn)}`` for :func:`sample_kmeans` (``every``: every such row was drawn;
    ``drawn``: the rows unfilled, for :func:`label_spread` where no row is complete).

    One pass draws the largest: the draw is in key order, so its first ``m`` rows are the draw of ``m``, and each is
    filled by its own rows' means, so that a candidate of a lockstep sweep (``select_model``) starts from the rows,
    and the fill, it starts from alone. It asks for one row more than the largest: fewer came, and every such row
    was drawn. ``drawn``: :func:`observed_rows`' draw of more than ``max(sizes)`` rows to take them from (a caller
    that wants more of the same rows), in place of that pass.

    The scan's sample holds complete rows only, and a cluster with none of them (a column missing in every row
    of one cluster: sensors of one kind of machine) was not seen by k-means at all: its rows joined another
    component at the start, and EM kept them there (adjusted Rand 0.44-0.55 on 7 of 30 such fits, where k-means
    on mean-imputed rows as ``means_init`` gave 0.98 on average; user trial). Filled with the column's mean, such
    rows still stand apart in their observed coordinates; the start's labels then complete them by their centre's.
    """
    points, weights = observed_rows(data, centre, max(sizes) + 1) if drawn is None else drawn
    far = data.far

    def filled(m: int):
        pts, w = points[:m], weights[:m]
        raw = pts
        nan = np.isnan(pts)
        if nan.any():
            seen = (~nan).sum(axis=0)
            sums = _row_order_sum(np.where(nan, 0.0, pts))  # not np.nanmean's pairwise blocks
            fill = np.where(seen > 0, sums / np.maximum(seen, 1), np.asarray(centre, np.float64))
            for j in far:  # a column a few rows far from the others pulled the mean there (a fill value): its median
                if seen[j]:
                    fill[j] = np.median(pts[~nan[:, j], j])
            pts = np.where(nan, fill, pts)
        # every row drawn also when there were exactly m to draw: else k-means took the draw as a sample
        # (unweighted, in the draw's order), and a row with nothing observed or of weight 0 added to the data,
        # which is not drawn, changed the start (and the fit) that the docs say it leaves alone; so the draw's
        # count says it (m rows with an observed value among m + 1 rows was a sample before)
        return pts, w, bool(len(points) <= m), raw

    return {m: filled(m) for m in sizes}


def kmeans_tolerance(variance, tol: float) -> float:
    """scikit-learn's KMeans tolerance: ``tol`` times the mean feature variance."""
    return 0.0 if tol == 0 else float(np.mean(variance) * tol)


def lloyd(data: ChunkedData, centre, centers: list[np.ndarray], *, max_iter: int, tol_scaled: float,
          callback=None, bounds: str | None = None) -> list[Run]:
    """Lloyd's algorithm on the cluster, every start in lockstep (one pass per iteration); ``bounds``:
    the key under which the passes keep the rows' bounds (:attr:`KMeansState.bounds`). Where the scan found rows
    far from the others, the passes take the per-component form (:attr:`KMeansState.precise`), without bounds."""
    precise = bool(data.far.size)
    runs = [Run(KMeansState(np.asarray(c, dtype=np.float64), tol=tol_scaled, bounds=None if precise else bounds,
                            precise=precise), objective=np.inf)
            for c in centers]
    return lockstep(data, runs, centre=centre, max_iter=max_iter, callback=callback)


#: Lloyd passes on the full data after k-means on the scan's sample when initialising a
#: mixture. The sample's centres are already converged on the sample; one pass moves
#: them to the full data's means (and EM refines the rest). More cost a pass each.
MIXTURE_KMEANS_MAX_ITER = 1


def initial_centers(data: ChunkedData, centre, method: str, n_clusters, seeds: list[int]) -> list[np.ndarray]:
    """Starting centres per seed: "k-means||", "k-means++" or "random" (distinct rows)."""
    if method == "k-means||":
        # when k-means takes every row (the scan's sample or the larger one), Lloyd is left to the fit
        return sample_kmeans(data, centre, n_clusters, seeds, tol=kmeans_tolerance(data.scan().variance, 1e-4),
                             polish=None)
    if method == "k-means++":
        return kmeans_plusplus(data, centre, n_clusters, seeds)
    if method == "random":
        return random_rows(data, centre, n_clusters, seeds)
    raise ValueError(f"unknown centre initialisation {method!r}")


#: The largest absolute error ``eps64 · max_k ‖c_k - centre‖²`` that float64 label moments about the pass
#: centre may carry: a thousandth of the default ``reg_covar``, all a component of identical rows has.
LABEL_MOMENT_TOLERANCE = 1e-9


def label_spread(data: ChunkedData, centers, observed=None) -> float:
    """The within-cluster variance per feature of k-means labels: the mean of ``‖x - c‖² / D`` over the scan's
    sample (weighted where the sample is every row, as :func:`sample_kmeans` weighs it), each row about its nearest
    of ``centers``; 1.0 where that is 0 (every sampled row on a centre). The spherical variance that makes k-means
    the hard limit of a mixture of equal weights: the conditional variance of a missing value in :func:`label_spec`.
    The sample is taken about its own mean (in row order), so the figure is the same for any chunking.

    The scan's sample holds complete rows only: where there is none (``missing="marginalize"``, every row misses
    a value), the figure is taken over the observed values of ``observed`` (``(rows with NaN, weights)``,
    :func:`observed_sample`'s draw) instead (:func:`_observed_spread`); 1.0 without them, a guess of the wrong scale
    (data 100 times smaller took 7 EM iterations where 4 sufficed).
    """
    sample = data.sample()
    if sample.shape[0] == 0:
        return 1.0 if observed is None else _observed_spread(*observed, centers)
    w = data.sample_weights() if data.sample_complete else np.ones(sample.shape[0])
    mean = _sample_shift(sample, data.scan().far)
    pts, cs = sample - mean, np.asarray(centers, np.float64) - mean
    labels = _nearest(pts, _sq_norms(pts), cs, exact=bool(data.scan().far.size))
    d2 = np.einsum("nd,nd->n", pts - cs[labels], pts - cs[labels])  # exact, not the GEMM's expansion
    var = float(w @ d2) / (float(w.sum()) * sample.shape[1]) if w.sum() > 0 else 0.0
    return var if var > 0 and math.isfinite(var) else 1.0


def _observed_spread(points, weights, centers) -> float:
    """:func:`label_spread`'s figure over rows with missing values (NaN in ``points``): each row labelled by its
    nearest of ``centers`` over its observed values, ``Σ w ‖x - c‖²`` over those values divided by ``Σ w n_obs``.
    About the observed values' mean in row order, as :func:`label_spread` (the draw's rows are the same for any
    chunking)."""
    pts = np.asarray(points, np.float64)
    w = np.asarray(weights, np.float64)
    seen = ~np.isnan(pts)
    count = np.sum(seen, axis=0)
    mean = np.where(count > 0, _row_order_sum(np.where(seen, pts, 0.0)) / np.maximum(count, 1), 0.0)
    x = np.where(seen, pts - mean, 0.0)
    cs = np.asarray(centers, np.float64) - mean
    # ‖x - c‖² over each row's observed values: Σ x² - 2 x·c + Σ_seen c²
    d2 = np.maximum(np.einsum("nd,nd->n", x, x)[:, None] - 2.0 * (x @ cs.T) + seen.astype(np.float64) @ (cs**2).T,
                    0.0)
    nearest = d2[np.arange(len(x)), np.argmin(d2, axis=1)] if len(x) else d2[:, 0]
    total = float(w @ seen.sum(axis=1))
    var = float(w @ nearest) / total if total > 0 else 0.0
    return var if var > 0 and math.isfinite(var) else 1.0


def label_spec(centers, centre, covariance_type, dtype, missing_variance=None) -> ModelSpec:
    """The spec of the statistics of k-means labels (hard assignment to the nearest centre).

    ``missing_variance`` (rows with missing values, ``missing="marginalize"``; :func:`label_spread`): such rows
    are labelled by their nearest centre over their observed values and enter the statistics with each missing
    value completed by the centre's, of conditional variance ``missing_variance``: the hard E-step of the
    spherical mixture of equal weights of which k-means is the limit. Without it they were left out, and a
    start from the few complete rows of wide data (D = 50 with 5% missing: 150 of 2,000 rows) gave singular
    covariances and a poor optimum (adjusted Rand 0.002 where a diagonal fit found 1.0). Complete rows are
    labelled and summed as without it.

    float32 features about the pass centre hold ``‖x - centre‖²`` to ``eps32`` of itself, which
    for components far from the centre is more than their scatter (two points 9999 apart:
    an error of 1.5 in 2.5e7, against a variance of 0.1). For float32 data, then, the
    labels and their moments come from the per-component path: differences from each
    centre first, moments about it, summed in float64 (a pass about twice as costly). float64
    keeps the shared features (their error there is 1e-9 of the scatter) unless a centre lies
    so far that ``eps · ‖c_k - centre‖²`` exceeds :data:`LABEL_MOMENT_TOLERANCE`: gross outliers
    at one sentinel value (three rows at 1e6 among blobs near 0: an error of 2e-4 in a
    covariance of 0 + ``reg_covar``) made a scale that was not positive definite.
    """
    from daskgmm.kernels import PerComponent
    from daskgmm.kernels import params as forms

    centers = np.asarray(centers, np.float64)
    k = len(centers)
    far = float(np.max(np.sum(np.square(centers - centre), axis=1))) if k else 0.0
    per_component = np.dtype(dtype) == np.float32 or np.finfo(np.float64).eps * far > LABEL_MOMENT_TOLERANCE
    if missing_variance is not None:
        # the mixture itself, so that the core's marginal logits (the shared form's, corrected by the per-component
        # one's) and NumPy's (the per-component one's alone) agree: its logits are k-means' scaled by 1 / (2 var)
        args = (np.full(k, 1.0 / k), centers, np.full(k, 1.0 / math.sqrt(missing_variance)), "spherical", centre)
        marginal = forms.per_component(*args)
        return ModelSpec(forms.natural_params(*args), covariance_type, "hard",
                         precise=marginal if per_component else None, marginal=marginal)
    nat = kmeans_natural_params(centers - centre)
    precise = None
    if per_component:
        # -‖x - c_k‖² as scikit-learn's per-component form: factor √2, so that -½ (√2)² ‖z‖² = -‖z‖²
        precise = PerComponent(centers - centre, np.full(k, math.sqrt(2.0)), np.zeros(k), "spherical")
    return ModelSpec(nat, covariance_type, "hard", precise=precise)


def _label_stats(data, centre, jobs, by_key, missing: bool, count_rows: bool, observed=None) -> list:
    """One pass for the statistics of every job's labels, by the nearest of its key's centres in ``by_key``;
    rows with NaN labelled by their observed values when ``missing`` (:func:`label_spread`'s variance, from the
    key's rows in ``observed`` where no row is complete)."""
    observed = observed or {}
    spread = {key: label_spread(data, c, observed.get(key)) for key, c in by_key.items()} if missing else {}
    specs = [label_spec(by_key[(k, s)], centre, ct, data.dtype, spread.get((k, s))) for k, ct, s in jobs]
    return run_specs(data, specs, centre, count_rows)


def start_weight(scan, stats, method: str, chosen_labels: bool = False) -> float:
    """The weight the statistics of :func:`mixture_init_stats` share, which an initial M-step divides each
    component's sum by for its weight: the scan's (scikit-learn's ``n_samples``), except where the statistics are
    of labels that hold the rows with NaN too (``missing="marginalize"``), which the scan's weight (its complete
    rows') leaves out: then the statistics' own (``stats.weight``)."""
    labelled = method == "kmeans" or (chosen_labels and method in ("k-means++", "random_from_data"))
    return float(stats.weight) if labelled and np.any(scan.nan) else float(scan.weight)


def warn_fewer_clusters(jobs, stats) -> None:
    """scikit-learn's ``KMeans`` warning, which its mixtures' "kmeans" start gives: k-means labelled the rows
    with fewer clusters than components (fewer distinct points: duplicate rows), so a component starts, and
    stays, empty (weight 0) while the others sit on single points. Once per (n_components, seed)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning  # here: workers import this module without scikit-learn

    said = set()
    for (k, _, s), st in zip(jobs, stats, strict=True):
        distinct = int(np.count_nonzero(np.asarray(st.n) > 0))
        if distinct < k and (k, s) not in said:
            said.add((k, s))
            warnings.warn(f"Number of distinct clusters ({distinct}) found smaller than n_clusters ({k}). "
                          "Possibly due to duplicate points in X.", ConvergenceWarning, stacklevel=2)


def mixture_init_stats(
    data: ChunkedData, centre, *, method: str, jobs: list[tuple],
    kmeans_tol: float = 1e-4, kmeans_max_iter: int = MIXTURE_KMEANS_MAX_ITER, chosen_labels: bool = False,
    count_rows: bool = False,
):
    """Statistics of the initial responsibilities, one per job, with scikit-learn's meaning.

    Parameters
    ----------
    jobs : list of (n_components, covariance_type, seed)
        One initial model each; jobs that share (n_components, seed) share
        their centres, and all run in the same passes.

    ``kmeans``: hard labels of k-means, as scikit-learn's ``KMeans(n_init=1)``
    labels: one k-means++ seeding and Lloyd to convergence on the first scan's sample
    (:func:`sample_kmeans` with ``tries=1``, no pass; the best of several by inertia made
    every restart start from the same lowest-inertia k-means optimum, which for a mixture
    is often not the best start), ``kmeans_max_iter`` Lloyd passes on the
    full data (default 1), then one pass for the statistics of the labels. With
    the scan, the whole initialisation reads the data three times.
    ``k-means++`` and ``random_from_data``: one chosen row per component;
    ``random``: uniform random responsibilities, normalised per row.
    ``chosen_labels``: for ``k-means++`` and ``random_from_data``, the statistics of the
    hard labels of the nearest chosen row instead (one more pass): the responsibilities a
    Gaussian mixture's first E-step gives from scikit-learn's start (one row per component,
    scales ``reg_covar``), up to ``exp(-gap / (2 reg_covar))`` where two rows are nearly tied.
    For float32 data the statistics of the labels are taken about each centre
    (:func:`label_spec`). ``count_rows``: on weighted data, the statistics a pass gives count each
    component's rows too (``SuffStats.counts``, in the same pass), which ``on_collapse="reinit"`` judges.

    Rows with missing values (``missing="marginalize"``, the scan found NaN) enter the statistics of labels
    (:func:`label_spec`), labelled by their observed values. A ``means_init`` given does not label them: as in
    scikit-learn, and as on complete data, k-means' labels give the start's weights and covariances and the given
    means replace theirs (labels by the given means made one NaN in 1,500 rows switch to a poorer start: adjusted
    Rand 0.42-0.55 where the complete rows gave 1.0). :func:`start_weight` is what the statistics' weights then
    sum to.
    """
    from daskgmm.kernels import NaturalParams, points_stats

    keys = sorted({(k, s) for k, _, s in jobs})
    missing = not data.sparse and bool(np.any(data.scan().nan))
    if method in ("kmeans", "k-means++", "random_from_data"):
        ks, seeds = [k for k, _ in keys], [s for _, s in keys]
        observed = None  # the rows k-means drew with their NaN, by key (label_spread's where none is complete)
        if method == "kmeans" and missing:
            # k-means on rows with NaN too (filled by their column's mean), not the complete rows alone; no Lloyd
            # pass on the data: its passes take complete rows only, and would empty a cluster that has none
            tol_scaled = kmeans_tolerance(data.scan().variance, kmeans_tol)
            # each K from its own draw (the first rows of the largest), as when fitted alone
            size = {k: min(SAMPLE_ROWS_PER_CLUSTER * k, data.n_rows) for k in ks}
            drawn = observed_sample(data, centre, set(size.values()))
            centers = [sample_kmeans(data, centre, [k], [s], tol=tol_scaled, tries=1, drawn=drawn[size[k]])[0]
                       for k, s in zip(ks, seeds)]
            observed = {(k, s): (drawn[size[k]][3], drawn[size[k]][1]) for k, s in keys}
        elif method == "kmeans":
            tol_scaled = kmeans_tolerance(data.scan().variance, kmeans_tol)
            centers = sample_kmeans(data, centre, ks, seeds, tol=tol_scaled, tries=1)
            if kmeans_max_iter > 0:
                runs = lloyd(data, centre, centers, max_iter=kmeans_max_iter, tol_scaled=tol_scaled)
                centers = [r.state.centers for r in runs]
        else:
            centers = initial_centers(data, centre, "k-means++" if method == "k-means++" else "random", ks, seeds)
        by_key = dict(zip(keys, centers))
        if method != "kmeans" and not chosen_labels:
            return [points_stats(by_key[(k, s)], centre, ct) for k, ct, s in jobs]
        stats = _label_stats(data, centre, jobs, by_key, missing, count_rows, observed)
        if method == "kmeans":
            warn_fewer_clusters(jobs, stats)
        return stats
    if method == "random":
        d = data.n_features
        specs = [
            ModelSpec(NaturalParams(quad=np.zeros(k), lin=np.zeros((k, d)), const=np.zeros(k)), ct, "random",
                      seed=stream_key(s, 9))
            for k, ct, s in jobs
        ]
        return run_specs(data, specs, centre, count_rows)
    raise ValueError(f"init_params must be one of {INIT_METHODS}; got {method!r}")
