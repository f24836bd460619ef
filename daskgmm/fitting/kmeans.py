"""The k-means procedure ``KMeans`` is thin over: Lloyd in lockstep, the sequential update, predictions.

k-means is a model whose log-density is ``-‖x - c_k‖²`` with hard assignment
(:func:`daskgmm.kernels.kmeans_natural_params`), so every pass here is the mixtures'
pass: counts, sums and the inertia of every restart per chunk.

- :func:`check_init_centers`, :func:`resolve_n_init` — given starting centres, with scikit-learn's messages;
  the restarts ``n_init`` means;
- :func:`lloyd_starts`, :func:`fit_lloyd` — the starts; Lloyd's algorithm from many starts in lockstep, the final
  assignment, the restart with the lowest inertia;
- :func:`first_batch_centers`, :func:`batch_statistics` (:func:`checked_statistics`), :func:`sequential_update` —
  one step of the sequential (online) update;
- :func:`nearest_labels`, :func:`distances`, :func:`inertia` — predictions and scores (a block's labels and
  distances, sparse or dense, are :mod:`daskgmm.kernels.predict`'s; k-means' form, ``kmeans_form``, is
  :mod:`daskgmm.kernels.params`'); :func:`prediction_parts` — the parts of a predictions dataset (``label`` as
  :func:`nearest_labels`, ``distance`` the least of :func:`distances`);
- :func:`lloyd_attributes`, :func:`export_kmeans`, :func:`import_kmeans` — the fitted
  attributes after ``fit`` and in model files.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import numpy as np

from daskgmm.em.init import initial_centers, lloyd
from daskgmm.engine.passes import ChunkedData, is_sparse_array
from daskgmm.fitting.attributes import checked_shift
from daskgmm.fitting.mixture import iteration_hook
from daskgmm.fitting.predict import delayed_parts, shipped
from daskgmm.kernels import MixtureRequest, ModelSpec, ScanRequest, chunk_pass
from daskgmm.kernels import predict as blocks
from daskgmm.kernels import sparse as sparse_kernels
from daskgmm.kernels.params import kmeans_form, kmeans_labels_form, kmeans_precise
from daskgmm.models.states import first_best
from daskgmm.validation.params import check_finite_starts
from daskgmm.validation.scan import check_scan


def check_init_centers(centers, n_clusters: int, n_features: int) -> np.ndarray:
    """Given starting centres as float64, shape (n_clusters, n_features), finite, or scikit-learn's error."""
    c = np.asarray(centers.toarray() if sparse_kernels.issparse(centers) else centers, dtype=np.float64)
    check_finite_starts(c, "init", "centre")  # scikit-learn's check_array comes before the shape's
    if c.ndim != 2 or c.shape[0] != n_clusters:
        raise ValueError(
            f"The shape of the initial centers {c.shape} does not match the number of clusters {n_clusters}."
        )
    if c.shape[1] != n_features:
        raise ValueError(
            f"The shape of the initial centers {c.shape} does not match the number of features of the data "
            f"{n_features}."
        )
    return c


def check_continued_centers(name: str, centers, n_clusters: int, how: str = "partial_fit") -> None:
    """A later ``partial_fit`` continues the fitted centres: after ``set_params(n_clusters=...)`` it kept the
    old ones under the new number (as scikit-learn's MiniBatchKMeans does), silently; ``how="fitted"``: a
    model file says the parameters' number of clusters with the fitted centres (it did not load)."""
    k = int(np.shape(centers)[0])
    if k == n_clusters:
        return
    was = f"{k} centre{'s' * (k != 1)}"
    if how == "fitted":
        raise ValueError(f"{name} was fitted with {was}, but its parameters say n_clusters={n_clusters}: set_params "
                         "after fit does not change the fitted model. Fit it again, or set them back.")
    raise ValueError(f"{name}.partial_fit continues the fitted model, which has {was}, but the parameters say "
                     f"n_clusters={n_clusters}. Fit a new model of that form (fit, or partial_fit on a clone).")


def resolve_n_init(n_init, init) -> int:
    """The number of restarts ``KMeans(n_init=, init=)`` runs, as scikit-learn resolves it.

    ``"auto"``: 10 for ``init="random"`` and a callable (random starts), else 1 (``"k-means||"``,
    ``"k-means++"``, an array). An array of starting centres is one start whatever ``n_init``
    (the estimator warns when an ``n_init`` other than 1 was given with it).

    Parameters
    ----------
    n_init : "auto" or int
    init : str, callable or array-like of shape (n_clusters, n_features)
    """
    named = isinstance(init, str)
    if n_init == "auto":  # scikit-learn's: a callable is a random start, as "random" is
        return 10 if callable(init) or (named and init == "random") else 1
    if not named and not callable(init):
        return 1
    return int(n_init)


# ---------------------------------------------------------------------------
# Lloyd


def lloyd_starts(data, centre, method, n_clusters: int, seeds, given=None):
    """The starting centres: ``given`` (a list of starts), or one per seed by ``method``
    (:func:`daskgmm.em.init.initial_centers`); and the seconds they took."""
    t0 = time.perf_counter()
    starts = list(given) if given is not None else initial_centers(data, centre, method, n_clusters, seeds)
    return starts, time.perf_counter() - t0


@dataclass
class LloydFit:
    """What :func:`fit_lloyd` did.

    Attributes
    ----------
    runs : list of Run
        Every restart.
    best : int
        The restart with the lowest inertia of its final centres.
    inertias : list of float
        Of every restart's final centres.
    counts : ndarray of shape (n_clusters,)
        Rows (or weight) per centre of the best restart's final centres.
    """

    runs: list
    best: int
    inertias: list
    counts: np.ndarray


def fit_lloyd(data, centre, starts, *, tol: float, max_iter: int, on_iteration=None, progress=None,
              bounds: bool = False) -> LloydFit:
    """Lloyd's algorithm from every start in lockstep (one pass per iteration), then one pass
    measuring the final centres (Lloyd's last pass measured the previous ones).

    Parameters
    ----------
    data : ChunkedData
    centre : ndarray, shape (D,)
        The shift of every pass (the first scan's mean).
    starts : list of ndarray, shape (K, D)
    tol : float
        Absolute threshold on the summed squared centre shift (:func:`daskgmm.em.init.kmeans_tolerance`).
    on_iteration : callable, optional
        ``on_iteration(iteration, runs)`` (verbose lines).
    progress : callable, optional
        ``progress("iteration", iteration=, runs=)`` after every iteration (the command's progress lines).
    bounds : bool
        Keep each row's label and a lower bound of its distance to the other centres between
        passes (Hamerly's bound; ``KMeans(algorithm="elkan")``): rows whose label cannot change
        skip their distances to the other centres. The same results; one start (dense rows) only.
    """
    key = f"daskgmm-kmeans-{uuid.uuid4().hex}" if bounds and len(starts) == 1 and not data.sparse else None
    try:
        runs = lloyd(data, centre, starts, max_iter=max_iter, tol_scaled=tol, bounds=key,
                     callback=iteration_hook(progress=progress, on_iteration=on_iteration))
        final = data.run([MixtureRequest([r.state.spec(centre) for r in runs])], centre)[0]
    finally:
        if key is not None:
            data.release(key)
    # never -0.0; the per-component form's logits (far rows, KMeansState.precise) are -‖x - c‖² / 2
    inertias = [max(0.0, float(-st.loglik) * (2.0 if r.state.precise else 1.0)) for r, st in zip(runs, final)]
    best = first_best(inertias, maximize=False)  # restarts that found the same centres differ by rounding
    return LloydFit(runs, best, inertias, final[best].n.copy())


def lloyd_attributes(fit: LloydFit, dtype, shift=None) -> dict:
    """``KMeans.fit``'s attributes (all but ``labels_``) in ``dtype``; ``_shift``: the passes' shift where the scan
    found far columns (predictions take it in place of the centres' mean, :func:`daskgmm.kernels.params.kmeans_form`),
    else None."""
    r = fit.runs[fit.best]
    return {
        "_shift": None if shift is None else np.array(shift, np.float64),
        "cluster_centers_": r.state.centers.astype(dtype),
        "inertia_": fit.inertias[fit.best],
        "n_iter_": int(r.n_iter),
        "counts_": fit.counts,
        "n_steps_": 0,
        "history_": [
            {"iteration": h["iteration"], "inertia": h["objective"], "seconds": h["seconds"], "events": h["events"]}
            for h in r.history
        ],
    }


# ---------------------------------------------------------------------------
# The sequential update


def in_memory_batch(batch) -> ChunkedData:
    """An in-memory batch (ndarray or sparse matrix) as one chunk of rows, for :func:`first_batch_centers`; dense
    rows scanned (one pass), so that rows far from the others (:attr:`ChunkedData.far
    <daskgmm.engine.passes.ChunkedData.far>`, a fill value of 1e20) give the batch a robust shift, as a Dask
    batch's scan does: without it ``partial_fit`` put the other rows in one cluster (adjusted Rand 0.03)."""
    import dask.array as da

    local = ChunkedData(da.from_array(batch, chunks=batch.shape, asarray=False), None, cache="none", in_memory=True)
    if not local.sparse and batch.shape[0]:
        local.scan()
    return local


def first_batch_centers(batch, n_clusters: int, seeds, rows=None) -> np.ndarray:
    """k-means++ on the first batch: a :class:`daskgmm.engine.passes.ChunkedData` (about its scan's
    mean, cached by ``prepare_rows``), or an ndarray or sparse matrix (``rows``: its :func:`in_memory_batch`, about
    the batch's mean, or the scan's robust shift where it found far columns)."""
    if not isinstance(batch, ChunkedData):
        if batch.shape[0] < n_clusters:
            raise ValueError(f"n_samples={batch.shape[0]} should be >= n_clusters={n_clusters}.")
        local = in_memory_batch(batch) if rows is None else rows
        centre = local.scan().centre if local.far.size else np.asarray(batch.mean(axis=0)).ravel()
        return initial_centers(local, centre, "k-means++", n_clusters, seeds)[0]
    if batch.n_rows < n_clusters:  # as above: k-means++ would repeat a row (MiniBatchKMeans refuses it)
        raise ValueError(f"n_samples={batch.n_rows} should be >= n_clusters={n_clusters}.")
    return initial_centers(batch, batch.scan().centre, "k-means++", n_clusters, seeds)[0]


def _statistics_request(centers, shift=None, precise: bool = False):
    """The pass request of a batch's hard-assignment statistics under ``centers``, and its centre (``shift``, the
    fit's where it was robust, :func:`daskgmm.kernels.params.kmeans_form`); ``precise``: in the per-component form
    (:func:`daskgmm.kernels.params.kmeans_precise`, its log-likelihood ``-inertia / 2``)."""
    nat, centre = kmeans_form(centers, shift)
    form = kmeans_precise(centers, centre) if precise else None
    return MixtureRequest([ModelSpec(nat, "spherical", "hard", precise=form)]), centre


def batch_statistics(batch, centers, sample_weight=None, shift=None):
    """The hard-assignment statistics of a batch (ChunkedData, or an ndarray or sparse matrix with optional
    weights). Sparse rows give statistics about the origin (``shift`` 0)."""
    request, centre = _statistics_request(centers, shift)
    if isinstance(batch, ChunkedData):
        return batch.run([request], centre)[0][0]
    if sparse_kernels.issparse(batch):
        return sparse_kernels.sparse_chunk_pass(batch, [request], centre, sample_weight=sample_weight)[0][0]
    return chunk_pass(batch, [request], centre, sample_weight=sample_weight)[0][0]


def checked_statistics(batch: ChunkedData, centers, feature_names=None, name: str = "KMeans", shift=None,
                       precise: bool = False):
    """:func:`batch_statistics` of rows whose first scan was not run, with a scan in the same pass
    that rejects non-finite values and weights (:func:`daskgmm.validation.scan.check_scan`): one pass
    where a scan and then the statistics took two (``KMeans.score``, a later ``partial_fit`` batch).

    Parameters
    ----------
    batch : ChunkedData
        From ``prepare_rows(..., scan=False)``; Dask rows checked chunk by chunk there
        (``check_chunks``), so that a bad value is named with its rows before the scan's check.
    centers : ndarray, shape (K, D)
    feature_names : sequence of str, optional
        For the scan's message.
    """
    request, centre = _statistics_request(centers, shift, precise)
    scan, stats = batch.run([ScanRequest(), request], centre)
    check_scan(scan, feature_names, name, dtype=batch.dtype)
    return stats[0]


def sequential_update(centers, counts, stats):
    """``μ_k ← μ_k + (x - μ_k) / n_k`` applied to a batch's rows: its running means, exactly.

    Returns
    -------
    centers : ndarray, shape (K, D), float64
    counts : ndarray, shape (K,)
        Rows (or weight) every centre has received.
    """
    centers = np.array(centers, np.float64)  # a copy: the caller's centres (maybe the init array) stay
    m = stats.n
    seen = counts + m
    moved = m > 0
    # μ_new = μ + (Σ_batch (x - μ)) / n_new, the sequential update applied to the batch's rows
    sums = stats.s1[moved] + m[moved, None] * (stats.shift - centers[moved])
    centers[moved] += sums / seen[moved, None]
    return centers, seen


# ---------------------------------------------------------------------------
# Predictions and scores


def _is_dask(X) -> bool:
    return hasattr(X, "map_blocks") and hasattr(X, "chunks")


def nearest_labels(X, centers, shift=None):
    """Index of the nearest centre of every row (int32): NumPy or sparse in, NumPy out
    (:func:`daskgmm.kernels.predict.kmeans_labels`); Dask in, lazy Dask out. ``shift``: the fit's, where it was
    robust (dense rows; :func:`daskgmm.kernels.params.kmeans_form`)."""
    if not _is_dask(X):
        if shift is None or sparse_kernels.issparse(X):
            return blocks.kmeans_labels(X, centers)
        return blocks.kmeans_labels(X, centers, *kmeans_labels_form(centers, shift))
    if is_sparse_array(X):
        return X.map_blocks(sparse_kernels.nearest_labels, shipped(np.asarray(centers, np.float64)), dtype=np.int32,
                            drop_axis=1, meta=np.empty((0,), np.int32))
    nat, centre = kmeans_labels_form(centers, shift)
    return X.map_blocks(blocks.nearest_labels, shipped(nat), shipped(centre), dtype=np.int32, drop_axis=1)


def distances(X, centers):
    """Distances of every row to every centre, shape (n_samples, n_clusters); lazy for Dask X.

    In the wider of the rows' and the centres' dtypes, as scikit-learn's ``transform``
    (float32 rows and float64 centres give float64): :func:`daskgmm.kernels.predict.kmeans_distances`.
    """
    centers = np.asarray(centers)
    if not _is_dask(X):
        return blocks.kmeans_distances(X, centers)
    dtype = blocks.distances_dtype(X, centers)
    shape = {"chunks": (X.chunks[0], (centers.shape[0],))}
    if is_sparse_array(X):
        return X.map_blocks(sparse_kernels.distances, shipped(centers), dtype, dtype=dtype,
                            meta=np.empty((0, 0), dtype), **shape)
    return X.map_blocks(blocks.distances, shipped(centers), dtype, dtype=dtype, **shape)


def inertia(data, centers, feature_names=None, name: str = "KMeans", shift=None) -> float:
    """Opposite of the (weighted) inertia of the rows of a ChunkedData (its first scan not run): one pass,
    its values and weights checked in it (:func:`checked_statistics`). Never above 0: the rows' squared distances
    come from the expansion ``|x|^2 - 2 x.c + |c|^2``, whose rounding gave rows on a centre -1e-12 (the fit's
    ``inertia_`` is held at 0 the same way). With the fit's robust ``shift`` (rows far from the others), in the
    per-component form: a far row's distance to its centre by the expansion is its noise (6e24 at 1e20)."""
    # sparse rows (never found far: the scan of sparse rows has no sample median) take the form their pass knows
    precise = shift is not None and not data.sparse
    score = float(checked_statistics(data, centers, feature_names, name, shift, precise).loglik)
    score = 2.0 * score if precise else score  # its logits are -‖x - c‖² / 2
    return score if not score > 0 else 0.0  # NaN stays NaN


def prediction_parts(X, centers, *, ids=None, id_column="id", distance=False, shift=None) -> list:
    """One Delayed column dict per chunk of the Dask array X (dense or of sparse chunks): see
    :func:`daskgmm.kernels.predict.kmeans_prediction_part`. ``ids`` (array-like or Dask array of shape
    (n_samples,)) are rechunked like the rows; without them there is no id column."""
    # k-means' form for dense rows only: sparse rows' labels come from the centres, and on wide rows the form
    # would be shipped beside them (as large)
    nat, centre = (None, None) if is_sparse_array(X) else kmeans_labels_form(centers, shift)
    return delayed_parts(X, blocks.kmeans_prediction_part, ["label", *(["distance"] if distance else [])], ids=ids,
                         id_column=id_column, centers=np.asarray(centers), nat=nat, centre=centre, distance=distance)


# ---------------------------------------------------------------------------
# Model files


def export_kmeans(estimator) -> tuple[dict, dict]:
    """A fitted KMeans as (arrays, JSON-able metadata), for :func:`daskgmm.io.modelfiles.save_model`."""
    est = estimator
    names = getattr(est, "feature_names_in_", None)
    meta = {
        "n_components": int(est.n_clusters),
        "n_features": int(est.n_features_in_),
        "columns": None if names is None else [str(c) for c in names],
        "dtype": str(np.asarray(est.cluster_centers_).dtype),
        # "updated": partial_fit has moved the centres since the fit (or there was none), and dropped the
        # fit's inertia, iterations and history, which described the old centres: null, [] here
        "fit": {
            "updated": not hasattr(est, "inertia_"),
            "inertia": float(est.inertia_) if hasattr(est, "inertia_") else None,
            "n_iter": int(est.n_iter_) if hasattr(est, "n_iter_") else None,
            "n_steps": int(getattr(est, "n_steps_", 0)),
            "history": getattr(est, "history_", []),
        },
    }
    arrays = {"cluster_centers_": est.cluster_centers_, "counts_": est.counts_}
    if getattr(est, "_shift", None) is not None:  # only where the fit's shift was robust: other files unchanged
        arrays["shift"] = est._shift
    return arrays, meta


def checked_centres(arrays, meta, n_clusters: int):
    """``(k, cluster_centers_)`` of a saved model's arrays, checked: (k, D) with ``k == n_clusters``, finite."""
    k, d = int(meta["n_components"]), int(meta["n_features"])
    c = np.asarray(arrays["cluster_centers_"])
    if c.shape != (k, d) or k != n_clusters:
        raise ValueError(f"cluster_centers_ has shape {c.shape}, expected ({n_clusters}, {d})")
    if not np.all(np.isfinite(c)):
        raise ValueError("cluster_centers_ holds NaN or infinite values")
    return k, c


def import_kmeans(arrays, meta, n_clusters: int) -> dict:
    """The attributes saved by :func:`export_kmeans`, checked; ``history_`` as read (the caller
    restores JSON's infinities), ``feature_names_in_`` only when saved. An updated model (``"updated"``;
    :func:`daskgmm.io.modelfiles.read_model_files` gives format-1 files the field) has no ``inertia_``,
    ``n_iter_`` nor ``history_``, as after ``partial_fit``."""
    k, c = checked_centres(arrays, meta, n_clusters)
    fit = meta.get("fit", {})
    out = {
        "cluster_centers_": c.astype(np.dtype(meta.get("dtype", "float64"))),
        "counts_": np.asarray(arrays.get("counts_", np.zeros(k)), np.float64),
        "n_steps_": int(fit.get("n_steps", 0)),
        "n_features_in_": c.shape[1],
        "_shift": checked_shift(arrays, c.shape[1]),
    }
    if not fit.get("updated", False):
        out.update(inertia_=float(fit.get("inertia", np.nan)), n_iter_=int(fit.get("n_iter", 0)),
                   history_=fit.get("history"))
    if meta.get("columns") is not None:
        out["feature_names_in_"] = np.asarray(meta["columns"], dtype=object)
    return out
