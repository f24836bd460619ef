"""The k-medoids procedure ``KMedoids`` is thin over: a start of FasterPAM quality on the scan's sample,
then passes over the whole data, predictions, attributes and model files.

- :func:`dissimilarity` — the metric with what it needs of the whole data (``seuclidean``'s variances,
  ``mahalanobis``' covariance: one pass), checked on two rows;
- :func:`sample_start` — the named starts and FasterPAM on (a part of) the first scan's sample;
  :func:`check_init_medoids` — an array ``init`` checked; :func:`rows_nearest` — the rows nearest to given points
  (an array ``init``);
- :func:`fit_kmedoids` — the start and the loop (:func:`daskgmm.fitting.mixture.run_lockstep`), and the inertia
  of the final medoids;
- :func:`labels`, :func:`distances`, :func:`inertia`, :func:`prediction_parts` — predictions and scores;
- :func:`export_kmedoids`, :func:`import_kmedoids` — model files.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import DataConversionWarning
from sklearn.metrics.pairwise import PAIRWISE_BOOLEAN_FUNCTIONS

from daskgmm.em.loop import Run
from daskgmm.engine.cluster import blas_threads
from daskgmm.fitting.kmeans import checked_centres
from daskgmm.fitting.mixture import run_lockstep
from daskgmm.fitting.predict import delayed_parts, shipped
from daskgmm.kernels import medoids as kernel
from daskgmm.kernels import pam
from daskgmm.kernels.medoids import DATA_DEPENDENT, Dissimilarity, DissimilarityError, MedoidRequest, NearestRequest
from daskgmm.models.states import MEDOID_CANDIDATES, KMedoidsState
from daskgmm.validation.params import check_finite_starts

INITS = ("random", "heuristic", "k-medoids++", "build")

#: Rows of the scan's sample the start is computed on (its dissimilarity matrix: 72 MB of float64),
#: fewer for a callable metric, which Python calls once per pair.
START_ROWS = 3000
START_ROWS_CALLABLE = 600


def check_init_medoids(init, n_clusters: int, n_features: int) -> np.ndarray:
    """An array ``init`` (the points the starting medoids are the rows nearest to) as float64, shape
    (n_clusters, n_features), or the error naming its shape."""
    c = np.asarray(init, dtype=np.float64)
    check_finite_starts(c, "init", "point")
    if c.ndim != 2 or c.shape != (n_clusters, n_features):
        raise ValueError(f"The shape of the initial medoids {c.shape} does not match the number of clusters "
                         f"{n_clusters} and of features {n_features}.")
    return c


def _check_shippable(metric) -> None:
    """A callable metric goes to the workers of an active cluster pickled (by distributed, as it
    pickles tasks): one that cannot be is a TypeError naming it now, not a failed pass."""
    from daskgmm.engine.cluster import active_client

    if active_client() is None:
        return
    from distributed.protocol.pickle import dumps

    try:
        dumps(metric)
    except Exception as exc:
        name = getattr(metric, "__qualname__", repr(metric))
        raise TypeError(f"metric {name} cannot be pickled, and the cluster's workers call it: {exc}. Define "
                        "it at module level, without unpicklable state (locks, open files, connections)") from None


def dissimilarity(metric, data, scan) -> Dissimilarity:
    """The dissimilarity of the fit: about the sample's median, with ``seuclidean``'s variances (ddof=1, from the
    scan) or ``mahalanobis``' inverse covariance (ddof=1, one pass) of the whole data; tried on two rows
    of the sample, so that a metric that cannot take these rows fails now with scikit-learn's message."""
    variance = covariance = None
    if metric == "seuclidean":
        variance = scan.m2 / max(scan.weight - 1.0, 1.0)
        if np.any(variance <= 0):
            raise DissimilarityError("metric='seuclidean' divides by every column's variance, and column(s) "
                             f"{', '.join(map(str, np.flatnonzero(variance <= 0)))} of X are constant")
    elif metric == "mahalanobis":
        from daskgmm.fitting.variational import data_covariance

        covariance = data_covariance(data, scan)
        eig = np.linalg.eigvalsh(covariance)
        # numpy.linalg.matrix_rank's tolerance: a column that is a multiple of another leaves a rounding-sized
        # eigenvalue, often positive, whose inverse would be a metric of rounding errors
        if eig.min() <= eig.max() * len(eig) * np.finfo(np.float64).eps:
            raise DissimilarityError("metric='mahalanobis' needs the inverse of the data's covariance, which is "
                                     "singular")
    if isinstance(metric, str) and metric in PAIRWISE_BOOLEAN_FUNCTIONS:
        # scikit-learn's warning, once per fit (the passes convert every block, silently)
        warnings.warn(f"Data was converted to boolean for metric {metric}: every non-zero value counts as "
                      "True", DataConversionWarning, stacklevel=3)
    if callable(metric):
        _check_shippable(metric)
    # the product form's centre: the sample's median, not the mean, which gross outliers drag away from the
    # rows (the form then recomputes most entries by differences)
    d = Dissimilarity.of(metric, np.median(np.asarray(data.sample(), np.float64), axis=0), variance, covariance)
    probe = data.sample()[:2]
    try:
        d.pairwise(probe, probe)
    except ValueError as exc:
        if callable(metric):  # the caller's own function: its error as it raised it
            raise
        raise DissimilarityError(str(exc)) from exc  # the data's shape, not a failure of the job
    return d


def check_no_nan(diss: np.ndarray, metric: Dissimilarity, rows) -> None:
    """A ValueError naming the first pair of rows (global numbers ``rows``) whose dissimilarity is NaN:
    FasterPAM and the passes compare dissimilarities, and a NaN among them decides nothing."""
    bad = np.argwhere(np.isnan(diss))
    if len(bad):
        i, j = (int(rows[t]) for t in bad[0])
        pair = f"row {i} and itself" if i == j else f"rows {i} and {j}"
        raise DissimilarityError(f"metric {metric.name!r} gave NaN between {pair} of X: a dissimilarity must be a "
                         "number for every pair of rows")


def sample_start(diss: np.ndarray, n_clusters: int, init: str, seed: int):
    """A start on a sample's dissimilarity matrix by ``init``, then FasterPAM from it.

    Returns
    -------
    medoids : ndarray of int64, shape (n_clusters,)
        Indices into the sample.
    loss : float
        On the sample.
    swaps : int
    """
    rng = np.random.RandomState(np.random.SeedSequence(seed).generate_state(4))  # a 63-bit restart seed
    if init == "random":
        start = pam.random_start(diss, n_clusters, rng)
    elif init == "heuristic":
        start = pam.heuristic_start(diss, n_clusters)
    elif init == "k-medoids++":
        start = pam.kmedoids_plusplus(diss, n_clusters, rng)
    elif init == "build":
        start = pam.build_start(diss, n_clusters)
    else:
        raise ValueError(f"init needs to be one of the following: {[*INITS, 'array-like']}; got {init!r}")
    return pam.fasterpam(diss, start)


def rows_nearest(data, points, metric: Dissimilarity, centre):
    """The row nearest to each of ``points`` (the first by row number among equals): points and rows."""
    res = data.run([NearestRequest(metric, np.asarray(points, np.float64), 1)], centre)[0]
    return res.points[:, 0, :], res.rows[:, 0]


@dataclass
class MedoidsFit:
    """What :func:`fit_kmedoids` did.

    Attributes
    ----------
    run : Run
        The loop's course (its state holds the final medoids).
    inertia : float
        Of the final medoids, over every row.
    counts : ndarray of int64, shape (n_clusters,) or None
        Rows per medoid, when the final pass counted them.
    start_loss : float
        FasterPAM's loss on the sample (NaN for an array ``init``).
    start_rows : int
        Rows of the sample the start was computed on.
    init_seconds : float
    """

    run: Run
    inertia: float
    counts: np.ndarray | None
    start_loss: float
    start_rows: int
    init_seconds: float
    passes: int = 0


def fit_kmedoids(data, scan, n_clusters: int, *, metric=None, method="alternate", init="k-medoids++", seed=0,
                 max_iter=300, given=None, checkpoint=None, progress=None, on_iteration=None,
                 n_candidates=MEDOID_CANDIDATES) -> MedoidsFit:
    """K-medoids on a :class:`daskgmm.engine.passes.ChunkedData` whose first scan is ``scan``.

    The start: ``init`` on the dissimilarities of the first :data:`START_ROWS` rows of the scan's
    sample (uniform, the same rows for any chunking), then FasterPAM there; or, for ``given``
    points (an array ``init``), the rows nearest to them. Then each iteration is one pass
    (:class:`daskgmm.models.states.KMedoidsState`), until no medoid moves or ``max_iter``.

    Parameters
    ----------
    metric : Dissimilarity
    method : {"alternate", "pam"}
    seed : int
        The start's random draws.
    given : ndarray of shape (n_clusters, D), optional

    Returns
    -------
    MedoidsFit
    """
    t0 = time.perf_counter()
    centre = scan.centre
    pool, pool_rows = data.sample(), data.sample_rows()
    runs = checkpoint.load() if checkpoint is not None else None
    resumed = runs is not None
    start_loss, start_rows = np.nan, 0
    if runs is None:
        if given is not None:
            points, rows = rows_nearest(data, given, metric, centre)
        else:
            start_rows = min(len(pool), START_ROWS_CALLABLE if metric.kind == "callable" else START_ROWS)
            with blas_threads(1):
                sub = pool[:start_rows]
                diss = metric.pairwise(sub, sub)
                check_no_nan(diss, metric, pool_rows[:start_rows])
                idx, start_loss, _ = sample_start(diss, n_clusters, init, seed)
            points, rows = pool[idx], pool_rows[idx]
        runs = [Run(KMedoidsState.start(points, rows, pool, pool_rows, metric, method=method,
                                        n_candidates=n_candidates), objective=np.inf)]
        if checkpoint is not None:
            checkpoint.save(runs, extra={"start_loss": start_loss, "start_rows": start_rows})
    elif checkpoint is not None:
        start_loss = float(checkpoint.extra.get("start_loss", np.nan))
        start_rows = int(checkpoint.extra.get("start_rows", 0))
    init_seconds = time.perf_counter() - t0
    if progress is not None:
        progress("init", seconds=init_seconds, resumed=resumed, runs=runs, persisted=data.persisted)
    run_lockstep(data, runs, centre=centre, max_iter=max_iter, checkpoint=checkpoint, progress=progress,
                 on_iteration=on_iteration)  # BLAS on one thread there
    run = runs[0]
    counts = None
    if run.converged:
        inertia = run.objective  # the last pass measured the medoids that stayed
    else:  # the last update moved a medoid (or no pass ran): measure the final ones
        st = data.run([MedoidRequest(run.state.dissimilarity, run.state.medoids)], centre)[0]
        inertia, counts = float(st.loss), st.counts
    return MedoidsFit(run, float(inertia), counts, float(start_loss), start_rows, init_seconds, data.passes)


def fitted_attributes(fit: MedoidsFit, dtype) -> dict:
    """``KMedoids.fit``'s attributes (all but ``labels_``) in ``dtype``."""
    st, r = fit.run.state, fit.run
    return {
        "cluster_centers_": st.medoids.astype(dtype),
        "medoid_indices_": st.medoid_rows.copy(),
        "inertia_": fit.inertia,
        "n_iter_": int(r.n_iter),
        "converged_": bool(r.converged),
        "n_passes_": int(fit.passes),
        "start_loss_": fit.start_loss,
        "start_rows_": fit.start_rows,
        "history_": [
            {"iteration": h["iteration"], "inertia": h["objective"], "seconds": h["seconds"], "events": h["events"]}
            for h in r.history
        ],
    }


# ---------------------------------------------------------------------------
# Predictions and scores


def labels(X, medoids, metric: Dissimilarity):
    """Index of the nearest medoid of every row (int64): NumPy in, NumPy out; Dask in, lazy Dask out."""
    medoids = np.asarray(medoids, np.float64)
    if hasattr(X, "map_blocks"):
        return X.map_blocks(kernel.nearest_medoid, shipped(medoids), shipped(metric), dtype=np.int64, drop_axis=1)
    return kernel.nearest_medoid(X, medoids, metric)


def distances(X, medoids, metric: Dissimilarity):
    """Dissimilarities of every row to every medoid, shape (n_samples, n_clusters); lazy for Dask X."""
    medoids = np.asarray(medoids, np.float64)
    if hasattr(X, "map_blocks"):
        dtype = X.dtype if X.dtype in (np.float32, np.float64) else np.dtype(np.float64)
        return X.map_blocks(kernel.medoid_distances, shipped(medoids), shipped(metric), dtype=dtype,
                            chunks=(X.chunks[0], (len(medoids),)))
    return kernel.medoid_distances(X, medoids, metric)


def inertia(data, medoids, metric: Dissimilarity) -> float:
    """The sum of every row's dissimilarity to its nearest medoid, over a ChunkedData: one pass."""
    return float(data.run([MedoidRequest(metric, np.asarray(medoids, np.float64))], data.scan().centre)[0].loss)


def prediction_parts(X, medoids, metric: Dissimilarity, *, ids=None, id_column="id", distance=False) -> list:
    """One Delayed column dict per chunk of the Dask array X: the id, ``label`` and optionally ``distance``."""
    return delayed_parts(X, kernel.medoid_part, ["label", *(["distance"] if distance else [])], ids=ids,
                         id_column=id_column, medoids=np.asarray(medoids, np.float64), metric=metric,
                         distance=distance)


# ---------------------------------------------------------------------------
# Model files


def export_kmedoids(est) -> tuple[dict, dict]:
    """A fitted KMedoids as (arrays, JSON-able metadata), for :func:`daskgmm.io.modelfiles.save_model`."""
    names = getattr(est, "feature_names_in_", None)
    metric = est._dissimilarity
    arrays = {"cluster_centers_": est.cluster_centers_, "medoid_indices_": est.medoid_indices_,
              "metric_centre": metric.centre}
    if metric.transform is not None:
        arrays["metric_transform"] = metric.transform
    meta = {
        "n_components": int(est.n_clusters),
        "n_features": int(est.n_features_in_),
        "columns": None if names is None else [str(c) for c in names],
        "dtype": str(np.asarray(est.cluster_centers_).dtype),
        "metric": metric.name,
        "fit": {
            "inertia": float(est.inertia_),
            "n_iter": int(est.n_iter_),
            "converged": bool(getattr(est, "converged_", False)),
            "start_loss": float(getattr(est, "start_loss_", np.nan)),
            "start_rows": int(getattr(est, "start_rows_", 0)),
            "history": getattr(est, "history_", []),
        },
    }
    return arrays, meta


def import_kmedoids(arrays, meta, n_clusters: int, metric) -> dict:
    """The attributes saved by :func:`export_kmedoids`, checked."""
    k, c = checked_centres(arrays, meta, n_clusters)
    rows = np.asarray(arrays["medoid_indices_"])
    if rows.shape != (k,) or rows.dtype.kind not in "iu" or (rows < 0).any():
        raise ValueError(f"medoid_indices_ must be {k} row numbers, got shape {rows.shape} of {rows.dtype}")
    if callable(metric) or metric not in kernel.METRICS:
        raise ValueError(f"metric {metric!r} cannot be read from a model file")
    if meta.get("metric", metric) != metric:  # a file saved after set_params changed the metric (now refused)
        raise ValueError(f"its medoids were fitted with metric={meta['metric']!r}, its parameters say {metric!r}")
    centre = np.asarray(arrays["metric_centre"], np.float64)
    transform = arrays.get("metric_transform")
    if metric in DATA_DEPENDENT and transform is None:
        raise ValueError(f"metric={metric!r} needs its metric_transform array, which the model lacks")
    fit = meta.get("fit", {})
    out = {
        "cluster_centers_": c.astype(np.dtype(meta.get("dtype", "float64"))),
        "medoid_indices_": rows.astype(np.int64),
        "inertia_": float(fit.get("inertia", np.nan)),
        "n_iter_": int(fit.get("n_iter", 0)),
        "converged_": bool(fit.get("converged", False)),
        "start_loss_": float(fit.get("start_loss", np.nan)),
        "start_rows_": int(fit.get("start_rows", 0)),
        "history_": fit.get("history"),
        "n_features_in_": c.shape[1],
        "_dissimilarity": Dissimilarity(metric, centre, None if transform is None else np.asarray(transform,
                                                                                                 np.float64)),
    }
    if meta.get("columns") is not None:
        out["feature_names_in_"] = np.asarray(meta["columns"], dtype=object)
    return out
