"""``KMedoids``: k-medoids for any dissimilarity on data larger than memory, with scikit-learn-extra's API.

The estimator validates and sets attributes; the procedure is :mod:`daskgmm.fitting.kmedoids`, the
passes :mod:`daskgmm.kernels.medoids`.
"""

from __future__ import annotations

import typing
import warnings

from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin
from sklearn.utils import metadata_routing
from sklearn.utils.validation import check_is_fitted

from daskgmm.base import ModelFilesMixin
from daskgmm.engine.cluster import compute_bounded
from daskgmm.fitting import kmedoids as fitting_kmedoids
from daskgmm.fitting.attributes import set_attributes
from daskgmm.fitting.kmeans import check_continued_centers
from daskgmm.fitting.mixture import restart_seeds
from daskgmm.fitting.predict import transform_output
from daskgmm.io.modelfiles import register
from daskgmm.kernels.medoids import METRICS, REFUSED_METRICS
from daskgmm.validation.checks import prediction_rows, prepare_rows
from daskgmm.validation.params import (
    ARRAY_LIKE,
    CALLABLE,
    NONE,
    RANDOM_STATE,
    Interval,
    InvalidParameterError,
    Options,
    validate_params,
    warn_convergence,
)
from daskgmm.validation.scan import DegenerateDataWarning


@register
class KMedoids(ModelFilesMixin, ClassNamePrefixFeaturesOutMixin, TransformerMixin, ClusterMixin, BaseEstimator):
    """K-medoids clustering: K rows of the data as prototypes, for any dissimilarity, on data larger than memory.

    The notes' robust k-means: ``J = Σ_n Σ_k r_nk V(x_n, μ_k)`` with a general dissimilarity ``V``
    and prototypes ``μ_k`` that are rows of X (Bishop, PRML §9.1). scikit-learn-extra's
    ``KMedoids`` and the ``kmedoids`` package need the N x N dissimilarity matrix; here every
    pass sums over chunks what choosing each candidate row as a medoid would cost, so the data
    need never be in memory.

    The fit: ``init`` and FasterPAM (Schubert & Rousseeuw 2021) on the dissimilarities of the
    first 3,000 rows of the first scan's uniform sample (600 for a callable metric); then passes
    over all rows. Each pass assigns every row to its nearest medoid and, for the candidates
    of each cluster (the sampled rows of the cluster nearest its medoid, 64 per cluster), sums
    their cost: ``method="alternate"`` then moves every medoid to its cluster's candidate of
    least total dissimilarity (Park & Jun 2009), ``method="pam"`` makes the one swap of a
    medoid for a candidate that lowers the loss most (FasterPAM's gains, every row against every
    candidate: K times the work of an alternate pass). It stops when no medoid moves.

    Parameters
    ----------
    n_clusters : int, default=8
    metric : str or callable, default="euclidean"
        Any name ``sklearn.metrics.pairwise_distances`` accepts for feature rows ("euclidean",
        "manhattan", "cosine", "chebyshev", "sqeuclidean", "minkowski" (p=2), "seuclidean" and
        "mahalanobis" (with the variances or covariance of the whole data) in NumPy; SciPy's other
        names through scikit-learn), or a picklable callable ``metric(u, v) -> float`` of a row ``u``
        and a medoid ``v`` (the notes' ``V(x_n, μ_k)``; it need not be symmetric).
        "precomputed" is not supported (it needs the N x N matrix this estimator avoids), nor "nan_euclidean"
        (X cannot hold NaN: impute, then use "euclidean").
    method : {"alternate", "pam"}, default="alternate"
        "alternate" is faster, "pam" more accurate (as in scikit-learn-extra).
    init : {"k-medoids++", "random", "heuristic", "build"} or array of shape (n_clusters, n_features), \
default="k-medoids++"
        The start of FasterPAM on the sample (scikit-learn-extra's starts); an array gives the
        starting medoids: the rows nearest to its rows (exactly them when they are rows of X).
    max_iter : int, default=300
        Passes over the data at most; 0 keeps the start.
    random_state : int, RandomState instance or None, default=None
        The start's random draws.
    cache : {"auto", "memory", "none"}, default="auto"
        Keep the rows in (cluster) memory between passes, re-read them, or decide by size.
    chunk_size : int, optional
        Rows per chunk for in-memory input.

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
        The medoids: rows of X.
    medoid_indices_ : ndarray of int64, shape (n_clusters,)
        Their global row numbers in X.
    labels_ : ndarray of int64, shape (n_samples,), or a lazy Dask array for Dask input
    inertia_ : float
        Sum of the dissimilarities of the rows to their nearest medoid.
    n_iter_ : int
        Passes of the loop (0 with ``max_iter=0``).
    converged_ : bool
        Whether the last pass moved no medoid.
    n_passes_ : int
        Passes over the data in all (the first scan, a covariance pass for "mahalanobis", the loop's,
        and one more for the inertia of medoids the last pass moved).
    start_loss_ : float
        FasterPAM's loss on the sample rows the start used (NaN for an array ``init``).
    start_rows_ : int
    history_ : list of dict
        Per pass: ``iteration``, ``inertia`` (of the medoids before the pass's update), ``seconds``,
        ``events`` (the medoids that moved).
    n_features_in_ : int
    feature_names_in_ : ndarray of str
    """

    # fit's keywords for the command (a checkpoint, progress events) are no metadata: a meta-estimator
    # routes none to them, and set_fit_request offers none (as scikit-learn's trees do with check_input)
    __metadata_request__fit: typing.ClassVar[dict] = {"checkpoint": metadata_routing.UNUSED,
                                                      "progress": metadata_routing.UNUSED}

    _parameter_constraints: typing.ClassVar[dict] = {
        "n_clusters": [Interval(int, 1, None)],
        "metric": [Options(*METRICS), CALLABLE],
        "method": [Options("alternate", "pam")],
        "init": [Options(*fitting_kmedoids.INITS), ARRAY_LIKE],
        "max_iter": [Interval(int, 0, None)],
        "random_state": RANDOM_STATE,
        "cache": [Options("auto", "memory", "none")],
        "chunk_size": [Interval(int, 1, None), NONE],
    }

    def __init__(self, n_clusters=8, metric="euclidean", method="alternate", init="k-medoids++", max_iter=300,
                 random_state=None, *, cache="auto", chunk_size=None):
        self.n_clusters = n_clusters
        self.metric = metric
        self.method = method
        self.init = init
        self.max_iter = max_iter
        self.random_state = random_state
        self.cache = cache
        self.chunk_size = chunk_size

    def __sklearn_is_fitted__(self):
        return hasattr(self, "medoid_indices_")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.input_tags.sparse = False
        return tags

    @property
    def _n_features_out(self):
        """Output width of ``transform`` (for ``get_feature_names_out``: kmedoids0, kmedoids1, ...)."""
        return self.cluster_centers_.shape[0]

    def _given(self, d):
        if isinstance(self.init, str):
            return None
        return fitting_kmedoids.check_init_medoids(self.init, self.n_clusters, d)

    def fit(self, X, y=None, *, checkpoint=None, progress=None):
        """Find the medoids.

        Parameters
        ----------
        X : array-like, pandas DataFrame, dask Array or dask DataFrame, shape (n_samples, n_features)
        y : Ignored
        checkpoint : daskgmm.io.modelfiles.Checkpoint, optional
            Resume from its last save, and save after every pass (metric names only).
        progress : callable, optional
            ``progress(event, **info)``: "init" and "iteration" events (the command's progress lines).

        Returns
        -------
        self
        """
        try:
            validate_params(self)
        except InvalidParameterError as exc:
            if isinstance(self.metric, str) and self.metric == "precomputed":  # the kmedoids package's default
                raise InvalidParameterError(
                    f"{exc} KMedoids takes no precomputed matrix: it never holds the N x N dissimilarities, "
                    "but computes them from the feature rows in passes over the data. Pass the feature rows and "
                    "their metric (a name, or a callable metric(u, v) -> float).") from None
            raise
        if isinstance(self.metric, str) and self.metric in REFUSED_METRICS:
            # checked before the rows are read, so NaN input meets this message, not the NaN one
            raise InvalidParameterError(
                f"KMedoids does not support metric={self.metric!r}: {REFUSED_METRICS[self.metric]}.")
        name = type(self).__name__
        data, scan, info = prepare_rows(X, None, name, cache=self.cache, chunk_size=self.chunk_size,
                                        min_samples=1, estimator=self)
        n, d = data.n_rows, data.n_features
        k = self.n_clusters
        if k > n:
            raise ValueError(f"The number of medoids ({k}) must be less than the number of samples {n}.")
        given = self._given(d)
        metric = fitting_kmedoids.dissimilarity(self.metric, data, scan)
        seed = restart_seeds(self.random_state, 1)[0]
        fit = fitting_kmedoids.fit_kmedoids(
            data, scan, k, metric=metric, method=self.method, init=self.init if given is None else None, seed=seed,
            max_iter=self.max_iter, given=given, checkpoint=checkpoint, progress=progress)
        set_attributes(self, fitting_kmedoids.fitted_attributes(fit, data.dtype))
        self._dissimilarity = metric
        if self.max_iter > 0 and not self.converged_:
            warn_convergence("Maximum number of iteration reached before convergence. Consider increasing "
                             f"max_iter to improve the fit (KMedoids: max_iter={self.max_iter} passes).")
        empty = [e for h in self.history_[-1:] for e in h["events"] if e.endswith("is empty")]
        if empty:
            # a DegenerateDataWarning (a UserWarning), which the command says as it says KMeans' (user-trial-r16)
            warnings.warn(f"{', '.join(empty)}: fewer distinct rows than clusters near its medoid "
                          "(duplicate points in X?).", DegenerateDataWarning, stacklevel=2)
        # from the rows as validated (X again would be checked against the names just read from it), unless
        # they are the rows persisted in this process (no client), which a lazy labels_ must not keep alive
        # (nor carry into a pickle): then from X's graph, as predict builds it
        if info["dask_input"] and data.client is None and data.persisted:
            labels = fitting_kmedoids.labels(self._rows(X), self.cluster_centers_, metric)
        else:
            labels = fitting_kmedoids.labels(data.X, self.cluster_centers_, metric)
        self.labels_ = labels if info["dask_input"] else compute_bounded(labels, what="labels")[0]
        return self

    def fit_predict(self, X, y=None):
        """Fit, then return ``labels_``."""
        return self.fit(X).labels_

    def fit_transform(self, X, y=None):
        """Fit, then return the dissimilarities of every row to every medoid."""
        return self.fit(X).transform(X)

    # ----------------------------------------------------------- predictions
    def _rows(self, X):
        check_is_fitted(self)
        Xd, x = prediction_rows(self, X)
        return x if Xd is None else Xd

    def _labels(self, X):
        return fitting_kmedoids.labels(self._rows(X), self.cluster_centers_, self._dissimilarity)

    def predict(self, X):
        """Index of the nearest medoid of each row (NumPy for NumPy input, lazy Dask for Dask).

        Returns
        -------
        labels : ndarray of int64, shape (n_samples,), or a lazy Dask array
        """
        return self._labels(X)

    def transform(self, X):
        """Dissimilarities of every row to every medoid, shape (n_samples, n_clusters)."""
        return transform_output(self, X, fitting_kmedoids.distances(self._rows(X), self.cluster_centers_,
                                                                    self._dissimilarity))

    def score(self, X, y=None):
        """Opposite of the inertia of X: minus the sum of every row's dissimilarity to its nearest medoid
        (a float; Dask input is computed in one pass)."""
        check_is_fitted(self)
        # chunks checked as they are read: a NaN's or an infinity's rows are named, as predict names them
        data, _, _ = prepare_rows(X, None, type(self).__name__, cache="none", min_samples=1, estimator=self,
                                  reset=False, check_chunks=True)
        return -fitting_kmedoids.inertia(data, self.cluster_centers_, self._dissimilarity)

    def prediction_parts(self, X, *, ids=None, id_column="id", distance=False, **_) -> list:
        """One Delayed column dict per chunk of the Dask array X: ``label`` and optionally ``distance``."""
        check_is_fitted(self)
        with warnings.catch_warnings():
            # the command matches Parquet columns to the model's names itself and passes a Dask array
            warnings.filterwarnings("ignore", "X does not have valid feature names", UserWarning)
            Xd = self._rows(X)
        if not hasattr(Xd, "map_blocks"):
            import dask.array as da

            Xd = da.from_array(Xd, chunks=(max(1, len(Xd)), Xd.shape[1]))
        return fitting_kmedoids.prediction_parts(Xd, self.cluster_centers_, self._dissimilarity, ids=ids,
                                                 id_column=id_column, distance=distance)

    def write_predictions(self, X, path, *, ids=None, id_column="id", distance=False, storage_options=None,
                          **_) -> int:
        """Predict every row of X and write Parquet parts to ``path`` atomically: ``id_column`` (with
        ``ids``; a name or a list of names, as :meth:`daskgmm.GaussianMixture.write_predictions`), ``label``,
        and with ``distance`` the dissimilarity to the nearest medoid. Returns the rows."""
        return self._write_predictions(X, path, storage_options, ids=ids, id_column=id_column, distance=distance)

    # ----------------------------------------------------------- persistence
    def export_state(self):
        """The fitted model as (arrays, JSON-able metadata), for :func:`daskgmm.io.modelfiles.save_model`
        (:meth:`save`): a named metric only."""
        check_is_fitted(self)
        if callable(self.metric):
            raise TypeError("cannot save a KMedoids with a callable metric: a model file holds data, never code")
        # a model file saying the parameters' n_clusters beside the fitted medoids would not load
        check_continued_centers(type(self).__name__, self.cluster_centers_, self.n_clusters, "fitted")
        # the file's parameters name the metric the loaded model computes with: after set_params changed it,
        # the medoids chosen under the fitted one were saved under the new one (a model that predicts otherwise)
        fitted = self._dissimilarity.metric
        if not (self.metric is fitted or (isinstance(self.metric, str) and self.metric == fitted)):
            raise ValueError(f"{type(self).__name__} was fitted with metric={self._dissimilarity.name!r}, but its "
                             f"parameters say metric={self.metric!r}: set_params after fit does not change the "
                             "fitted model (its predictions use the fitted metric). Fit it again, or set it back.")
        return fitting_kmedoids.export_kmedoids(self)

    def import_state(self, arrays, meta):
        """Set the fitted attributes from :meth:`export_state`'s output (checked)."""
        from daskgmm.io.modelfiles import restore_history

        attributes = fitting_kmedoids.import_kmedoids(arrays, meta, self.n_clusters, self.metric)
        attributes["history_"] = restore_history(attributes["history_"])
        set_attributes(self, attributes)

