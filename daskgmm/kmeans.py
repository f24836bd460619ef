"""``KMeans``: batch Lloyd on the cluster, and the sequential (online) update, for Dask data.

Lloyd's algorithm is the same loop and the same per-chunk kernel as the
mixtures: k-means is a model whose log-density is ``-‖x - c_k‖²`` with hard
assignment, so a pass returns counts, sums and the inertia of every restart.
The estimator validates and sets attributes; the procedure is :mod:`daskgmm.fitting.kmeans`.
"""

from __future__ import annotations

import typing
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state, metadata_routing
from sklearn.utils.validation import check_is_fitted

from daskgmm.base import ModelFilesMixin
from daskgmm.em.init import kmeans_tolerance
from daskgmm.fitting import kmeans as fitting_kmeans
from daskgmm.fitting.attributes import kept_shift, set_attributes
from daskgmm.fitting.mixture import restart_seeds
from daskgmm.fitting.predict import transform_output
from daskgmm.fitting.report import kmeans_report
from daskgmm.io.modelfiles import register
from daskgmm.validation.checks import (
    check_weights,
    in_memory_rows,
    input_or_model_names,
    is_dask,
    prediction_chunks,
    prediction_rows,
    prepare_rows,
)
from daskgmm.validation.params import (
    ARRAY_LIKE,
    BOOLEAN,
    CALLABLE,
    NONE,
    RANDOM_STATE,
    VERBOSE,
    Interval,
    Options,
    check_missing_supported,
    validate_params,
)

INITS = ("k-means||", "k-means++", "random")


@register
class KMeans(ModelFilesMixin, ClassNamePrefixFeaturesOutMixin, TransformerMixin, ClusterMixin, BaseEstimator):
    """K-means clustering on data larger than memory (batch Lloyd) or on a stream (``partial_fit``).

    Dense or sparse rows (scipy.sparse, Dask arrays of sparse chunks, :func:`daskgmm.read_sparse_parquet`).

    Parameters
    ----------
    n_clusters : int, default=8
    init : {"k-means||", "k-means++", "random"}, callable or array of shape (n_clusters, n_features), \
default="k-means||"
        "k-means||": k-means++ (best of 3) and Lloyd's algorithm on the first
        scan's row-keyed sample, on the client, with no pass of its own (like
        Bahmani et al.'s k-means||, k-means++ quality without a pass per centre;
        when the sample is the whole data only k-means++, Lloyd being the fit);
        "k-means++" is greedy k-means++ on the data in k + 1 passes;
        "random" draws k distinct rows. A callable is called as
        ``init(X, n_clusters, random_state)`` with X as given to ``fit`` (a
        lazy Dask array stays lazy) and returns the centres.
    n_init : "auto" or int, default="auto"
        Restarts (1 for "k-means||", "k-means++" and arrays; 10 for "random"
        and a callable, which is called once per restart, as scikit-learn); all
        advance in lockstep, one pass per iteration.
    max_iter : int, default=300
    tol : float, default=1e-4
        Lloyd stops when the summed squared centre shift is at most ``tol``
        times the mean feature variance (scikit-learn's rule).
    verbose : int, default=0
    random_state : int, RandomState instance or None, default=None
    copy_x : bool, default=True
        Accepted for scikit-learn compatibility: daskgmm never modifies X (rows
        are shifted inside each block), so both values behave the same.
    algorithm : {"lloyd", "elkan"}, default="lloyd"
        Both give the same result, bit for bit. "elkan" keeps, between passes, each row's
        label and a lower bound of its distance to the other centres (Hamerly's single bound
        rather than Elkan's K: 8 bytes per row, in the memory of the process that runs the
        row's pass), so a row whose label cannot change skips its distances to the other
        centres; it pays when clusters are well formed and many iterations run (see KMeans in
        docs/python.md). It applies with one restart (``n_init=1``) and dense rows, and with the
        compiled core; otherwise both run Lloyd's passes.
    cache : {"auto", "memory", "none"}, default="auto"
    chunk_size : int, optional
        Rows per chunk for in-memory input.
    missing : {"raise", "marginalize"}, default="raise"
        NaN in X is an error. "marginalize" raises a ValueError: KMeans has no likelihood
        to marginalise (:class:`daskgmm.GaussianMixture`, :class:`daskgmm.BayesianGaussianMixture`
        and :class:`daskgmm.StudentTMixture` marginalise missing values).

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
    labels_ : ndarray of int32, shape (n_samples,), or a lazy Dask array for Dask input
    inertia_ : float
        Sum of (weighted) squared distances to the nearest centre.
    n_iter_ : int
    counts_ : ndarray of shape (n_clusters,)
        Rows (or weight) seen per centre: by ``fit`` in the last assignment,
        accumulated by ``partial_fit`` (the ``n_k`` of the sequential update).
    n_steps_ : int
        Batches consumed by ``partial_fit``.
    history_ : list of dict
        Per Lloyd iteration: ``iteration``, ``inertia``, ``seconds``, ``events``.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
    """

    # fit's keyword for the command (progress events) is no metadata: a meta-estimator routes nothing
    # to it, and set_fit_request does not offer it (as scikit-learn's trees do with check_input)
    __metadata_request__fit: typing.ClassVar[dict] = {"progress": metadata_routing.UNUSED}

    _parameter_constraints: typing.ClassVar[dict] = {
        "n_clusters": [Interval(int, 1, None)],
        "init": [Options(*INITS), CALLABLE, ARRAY_LIKE],
        "n_init": [Options("auto"), Interval(int, 1, None)],
        "max_iter": [Interval(int, 1, None)],
        "tol": [Interval(float, 0.0, None)],
        "verbose": VERBOSE,
        "random_state": RANDOM_STATE,
        "copy_x": [BOOLEAN],
        "algorithm": [Options("lloyd", "elkan")],
        "cache": [Options("auto", "memory", "none")],
        "chunk_size": [Interval(int, 1, None), NONE],
        "missing": [Options("raise", "marginalize")],
    }

    def __init__(self, n_clusters=8, *, init="k-means||", n_init="auto", max_iter=300, tol=1e-4, verbose=0,
                 random_state=None, copy_x=True, algorithm="lloyd", cache="auto", chunk_size=None,
                 missing="raise"):
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.verbose = verbose
        self.random_state = random_state
        self.copy_x = copy_x
        self.algorithm = algorithm
        self.cache = cache
        self.chunk_size = chunk_size
        self.missing = missing

    def _validate_params(self):
        validate_params(self)
        check_missing_supported(self, "k-means has no likelihood to marginalise, and a distance on the "
                                      "observed coordinates alone is not implemented")

    def __sklearn_is_fitted__(self):
        return hasattr(self, "cluster_centers_")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.input_tags.sparse = True
        return tags

    @property
    def _n_features_out(self):
        """Output width of ``transform`` (for ``get_feature_names_out``: kmeans0, kmeans1, …)."""
        return self.cluster_centers_.shape[0]

    # ------------------------------------------------------------------ fit
    def _init_array(self, d, X=None, seed=None):
        """The given or computed starting centres (checked), or None for a named method."""
        starts = self._init_arrays(d, X, 1)
        return None if starts is None else starts[0]

    def _init_arrays(self, d, X, n_init: int):
        """The starting centres (checked) of every restart: a callable is called once per restart
        with one RandomState, as scikit-learn does; an array is the one start; None for a named method."""
        if isinstance(self.init, str):
            return None
        if not callable(self.init):
            return [fitting_kmeans.check_init_centers(self.init, self.n_clusters, d)]
        random_state = check_random_state(self.random_state)
        starts = []
        for _ in range(n_init):
            c = self.init(X, self.n_clusters, random_state=random_state)
            if hasattr(c, "compute"):
                c = c.compute()
            starts.append(fitting_kmeans.check_init_centers(c, self.n_clusters, d))
        return starts

    def _n_init(self) -> int:
        """The restarts (:func:`daskgmm.fitting.kmeans.resolve_n_init`), warning as scikit-learn does when
        starting centres were given with another ``n_init``."""
        n_init = fitting_kmeans.resolve_n_init(self.n_init, self.init)
        if self.n_init != "auto" and n_init != self.n_init:
            warnings.warn(
                "Explicit initial center position passed: performing only one init in "
                f"{type(self).__name__} instead of n_init={self.n_init}.",
                RuntimeWarning,
                stacklevel=3,
            )
        return n_init

    def fit(self, X, y=None, sample_weight=None, *, progress=None):
        """Lloyd's algorithm on the cluster, keeping the restart with the lowest inertia.

        Parameters
        ----------
        X : array-like, pandas DataFrame, scipy.sparse matrix, dask Array or dask DataFrame, \
shape (n_samples, n_features)
            Sparse rows (in memory, or a Dask array of scipy.sparse chunks, e.g. from
            :func:`daskgmm.read_sparse_parquet`) are never made dense: distances are
            ``‖x‖² - 2 x·c + ‖c‖²`` by sparse x dense products (:mod:`daskgmm.kernels.sparse`).
        sample_weight : array-like of shape (n_samples,), optional
        progress : callable, optional
            ``progress(event, **info)``: "init" (``seconds``, ``resumed=False``, ``runs``: the starts,
            ``persisted``: whether ``cache`` kept the rows in memory rather than reading them again every
            pass) and "iteration" (``iteration``, ``runs``) events (the command's progress lines).

        Returns
        -------
        self
        """
        self._validate_params()
        data, scan, info = prepare_rows(X, sample_weight, type(self).__name__, cache=self.cache,
                                        chunk_size=self.chunk_size, min_samples=1, estimator=self, accept_sparse=True)
        n, d = data.n_rows, data.n_features
        k = self.n_clusters
        if n < k:
            raise ValueError(f"n_samples={n} should be >= n_clusters={k}.")
        if self.algorithm == "elkan" and k == 1:
            warnings.warn("algorithm='elkan' doesn't make sense for a single cluster. Using 'lloyd' instead.",
                          RuntimeWarning, stacklevel=2)
        n_init = self._n_init()
        seeds = restart_seeds(self.random_state, n_init)
        given = self._init_arrays(d, X, n_init)
        centre = scan.centre
        starts, seconds = fitting_kmeans.lloyd_starts(data, centre, self.init, k, seeds, given)
        if self.verbose:
            print(f"Initialization complete ({seconds:.3f}s)")
        if progress is not None:
            progress("init", seconds=seconds, resumed=False, runs=starts, persisted=data.persisted)
        tol = kmeans_tolerance(scan.variance, self.tol)
        # rows far from the others (a fill value): the passes' shift is robust (and their form per component,
        # KMeansState.precise), and predictions keep it
        fit = fitting_kmeans.fit_lloyd(data, centre, starts, tol=tol, max_iter=self.max_iter,
                                       on_iteration=kmeans_report(tol) if self.verbose else None, progress=progress,
                                       bounds=self.algorithm == "elkan" and k > 1)
        set_attributes(self, fitting_kmeans.lloyd_attributes(fit, data.dtype, kept_shift(scan)))
        distinct = int(np.count_nonzero(self.counts_ > 0))
        if distinct < k:
            warnings.warn(
                f"Number of distinct clusters ({distinct}) found smaller than n_clusters ({k}). "
                "Possibly due to duplicate points in X.",
                ConvergenceWarning,
                stacklevel=2,
            )
        # reaching max_iter is no warning: scikit-learn's KMeans gives none
        # from the rows the fit validated, as KMedoids' (X again is validated and its partitions counted once
        # more, and labels_.compute() just after the fit then logged distributed's "different run_spec"), unless
        # they are the rows persisted in this process (no client), which labels_ must not keep alive
        lazy_rows = info["dask_input"] and (data.client is not None or not data.persisted)
        self.labels_ = (fitting_kmeans.nearest_labels(data.X, self.cluster_centers_, self._prediction_shift())
                        if lazy_rows else self._labels(X))
        return self

    def fit_predict(self, X, y=None, sample_weight=None):
        """Fit, then return ``labels_``."""
        return self.fit(X, sample_weight=sample_weight).labels_

    def fit_transform(self, X, y=None, sample_weight=None):
        """Fit, then return the distances of every row to every centre."""
        return self.fit(X, sample_weight=sample_weight).transform(X)

    # ------------------------------------------------------------ sequential
    def partial_fit(self, X, y=None, sample_weight=None):
        """One batch of the sequential k-means update (the notes' ``μ_k ← μ_k + η (x - μ_k)`` with ``η = 1 / n_k``).

        Every row of the batch is assigned to its nearest centre as the batch
        starts; then, for each centre, applying ``μ ← μ + (x - μ)/n`` to its
        rows one after another (``n`` counting every row it has received, in
        this batch and before) gives exactly the running mean, which is what
        is computed. So a stream of batches, NumPy or Dask, is clustered in
        one pass with memory for one batch. The first batch also seeds the
        centres (k-means++ on it, or ``init`` when it is an array). After a
        ``fit``, the fit's ``labels_``, ``inertia_``, ``n_iter_`` and ``history_``
        are dropped: they describe the fit's rows under centres that have moved
        (``predict`` and ``score`` give a batch's under the new ones).

        Parameters
        ----------
        X : array-like or dask Array, shape (n_samples, n_features)
        sample_weight : array-like of shape (n_samples,), optional
            A row of weight w counts as w rows.

        Returns
        -------
        self
        """
        first = not hasattr(self, "cluster_centers_")
        name = type(self).__name__
        if first:
            self._validate_params()
        else:
            fitting_kmeans.check_continued_centers(name, self.cluster_centers_, self.n_clusters)
        dask_batch = is_dask(X)
        if dask_batch:
            # the first batch's scan gives k-means++ its shift; a later batch's scan runs in the pass of its
            # statistics (checked_statistics); chunks checked as they are read, to name a bad value's rows
            data, _, info = prepare_rows(X, sample_weight, name, cache="none", min_samples=1, estimator=self,
                                         reset=first, scan=first, accept_sparse=True, check_chunks=True)
            d = data.n_features
        else:
            x = in_memory_rows(X, name, 1, estimator=self, reset=first, finite=True, accept_sparse=True)
            d = x.shape[1]
            # checked as a Dask batch's are by its scan (which refuses a sum of 0, as here)
            w = None if sample_weight is None else check_weights(sample_weight, len(x), name, allow_all_zero=False)
        if not first and d != self.n_features_in_:
            raise ValueError(f"X has {d} features, but {name} is expecting {self.n_features_in_} features as input.")
        if first:
            seed = restart_seeds(self.random_state, 1)
            # an in-memory batch's scan too may find rows far from the others (a fill value): its shift is kept
            rows = data if dask_batch else fitting_kmeans.in_memory_batch(x)
            given = self._init_array(d, X, seed[0])
            if given is None:
                given = fitting_kmeans.first_batch_centers(data if dask_batch else x, self.n_clusters, seed,
                                                           None if dask_batch else rows)
            self.cluster_centers_ = np.asarray(given, np.float64)
            self.counts_ = np.zeros(self.n_clusters)
            self.n_steps_ = 0
            self.n_features_in_ = d
            self._shift = None if rows.sparse else kept_shift(rows.scan())
        shift = self._prediction_shift()  # a fit's robust shift, kept by the updates after it
        if not dask_batch:
            st = fitting_kmeans.batch_statistics(x, self.cluster_centers_, w, shift)
        elif first:
            st = fitting_kmeans.batch_statistics(data, self.cluster_centers_, shift=shift)
        else:
            st = fitting_kmeans.checked_statistics(data, self.cluster_centers_, input_or_model_names(info, self), name,
                                                   shift)
        centers, self.counts_ = fitting_kmeans.sequential_update(self.cluster_centers_, self.counts_, st)
        # float32 rows keep float32 centres, as fit's and MiniBatchKMeans' (the update itself runs in float64); a
        # later batch of float64 rows widens a float32 model, as its predictions take the wider dtype
        rows_dtype = data.dtype if dask_batch else x.dtype
        self.cluster_centers_ = centers.astype(rows_dtype if first else
                                               np.result_type(self.cluster_centers_.dtype, rows_dtype))
        self.n_steps_ = getattr(self, "n_steps_", 0) + 1
        for stale in ("labels_", "inertia_", "n_iter_", "history_"):  # the fit's, under the old centres
            self.__dict__.pop(stale, None)
        return self

    # ----------------------------------------------------------- predictions
    def _rows(self, X):
        check_is_fitted(self)
        return prediction_rows(self, X, accept_sparse=True)

    def _labels(self, X):
        """``labels_`` of the rows just fitted (int32, as scikit-learn's)."""
        Xd, x = self._rows(X)
        return fitting_kmeans.nearest_labels(x if Xd is None else Xd, self.cluster_centers_, self._prediction_shift())

    def _prediction_shift(self):
        """The fit's passes' shift where the scan found rows far from the others (``_shift``), else None: the
        centres' mean (a model fitted before it was kept, or one ``partial_fit`` started)."""
        return getattr(self, "_shift", None)

    def predict(self, X):
        """Index of the nearest centre for each row (NumPy for NumPy input, lazy Dask for Dask).

        Returns
        -------
        labels : ndarray of int32, shape (n_samples,), or a lazy Dask array
        """
        return self._labels(X)

    def transform(self, X):
        """Distances of every row to every centre, shape (n_samples, n_clusters)."""
        Xd, x = self._rows(X)
        return transform_output(self, X, fitting_kmeans.distances(x if Xd is None else Xd, self.cluster_centers_))

    def score(self, X, y=None, sample_weight=None):
        """Opposite of the inertia of X (a float; Dask input is computed, in one pass).

        NaN or infinity in Dask input is named as :meth:`predict` names it: the column, the
        chunk's rows and the first bad row.
        """
        check_is_fitted(self)
        name = type(self).__name__
        # width and feature names checked against the fit (reset=False), as predict checks them; the scan
        # (non-finite values, weights) runs in the pass of the inertia
        data, _, info = prepare_rows(X, sample_weight, name, cache="none", min_samples=1, estimator=self,
                                     reset=False, scan=False, accept_sparse=True, check_chunks=True)
        return fitting_kmeans.inertia(data, self.cluster_centers_, info["feature_names"], name,
                                      self._prediction_shift())

    # ------------------------------------------------------------ to Parquet
    def prediction_parts(self, X, *, ids=None, id_column="id", distance=False) -> list:
        """One Delayed column dict per chunk of X (see :meth:`write_predictions`)."""
        check_is_fitted(self)
        Xd = prediction_chunks(self, X, accept_sparse=True)
        return fitting_kmeans.prediction_parts(Xd, self.cluster_centers_, ids=ids, id_column=id_column,
                                               distance=distance, shift=self._prediction_shift())

    def write_predictions(self, X, path, *, ids=None, id_column="id", distance=False, storage_options=None) -> int:
        """Predict every row of X (NumPy, pandas, scipy.sparse or Dask; dense or sparse rows) and write
        Parquet parts to ``path``, atomically.

        Columns: the id column(s) when ``ids`` are given, each in its own type, in order (``id_column``,
        a name or a list of names; ``ids``, one array of shape (n_samples,), or for a list one per name
        or a DataFrame with those columns, as ``read_parquet(..., id_column=[...])`` returns them),
        ``label`` (int32, as :meth:`predict`) and, with ``distance``, ``distance``: the Euclidean
        distance to the nearest centre (the row's minimum of :meth:`transform`, float64). The directory
        is written beside ``path`` and renamed into place with a ``_SUCCESS`` marker only when every
        part is written.

        Returns
        -------
        int
            Rows written.
        """
        return self._write_predictions(X, path, storage_options, ids=ids, id_column=id_column, distance=distance)

    # ----------------------------------------------------------- persistence
    def export_state(self):
        """The fitted model as (arrays, JSON-able metadata), for :func:`daskgmm.io.modelfiles.save_model`."""
        check_is_fitted(self)
        fitting_kmeans.check_continued_centers(type(self).__name__, self.cluster_centers_, self.n_clusters, "fitted")
        return fitting_kmeans.export_kmeans(self)

    def import_state(self, arrays, meta):
        """Set the fitted attributes from :meth:`export_state`'s output (checked: shapes, finite values)."""
        from daskgmm.io.modelfiles import restore_history

        attributes = fitting_kmeans.import_kmeans(arrays, meta, self.n_clusters)
        if "history_" in attributes:  # an updated model has none (nor inertia_, n_iter_), as after partial_fit
            attributes["history_"] = restore_history(attributes["history_"])
        set_attributes(self, attributes, drop=("labels_", "inertia_", "n_iter_", "history_"))
