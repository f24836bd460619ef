"""``KMeans``: batch Lloyd on the cluster, and the sequential (online) update, for Dask data.

Lloyd's algorithm is the same loop and the same per-chunk kernel as the
mixtures: k-means is a model whose log-density is ``-‖x - c_k‖²`` with hard
assignment, so a pass returns counts, sums and the inertia of every restart.
"""

from __future__ import annotations

import time
import typing
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from daskgmm.em import Run, lockstep
from daskgmm.init import initial_centers, kmeans_tolerance, restart_seeds
from daskgmm.kernels import (
    MixtureRequest,
    ModelSpec,
    chunk_pass,
    kmeans_natural_params,
)
from daskgmm.kernels import predict as blocks
from daskgmm.models import KMeansState
from daskgmm.persist import register
from daskgmm.validation import (
    ARRAY_LIKE,
    BOOLEAN,
    CALLABLE,
    NONE,
    RANDOM_STATE,
    VERBOSE,
    Interval,
    Options,
    check_missing_supported,
    in_memory_rows,
    is_dask,
    prediction_rows,
    prepare_rows,
    validate_params,
    warn_convergence,
)

INITS = ("k-means||", "k-means++", "random")


@register
class KMeans(ClassNamePrefixFeaturesOutMixin, TransformerMixin, ClusterMixin, BaseEstimator):
    """K-means clustering on data larger than memory (batch Lloyd) or on a stream (``partial_fit``).

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
        Restarts (1 for "k-means||", "k-means++" and arrays; 10 for "random",
        as scikit-learn); all advance in lockstep, one pass per iteration.
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
        Accepted for scikit-learn compatibility; both run Lloyd's algorithm,
        whose result Elkan's only accelerates (Elkan's bounds are per-row state
        that a pass over data larger than memory cannot keep).
    cache : {"auto", "memory", "none"}, default="auto"
    chunk_size : int, optional
        Rows per chunk for in-memory input.
    missing : {"raise", "marginalize"}, default="raise"
        NaN in X is an error. "marginalize" raises a ValueError: KMeans has no likelihood
        to marginalise
        (:class:`daskgmm.GaussianMixture` marginalises missing values).

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
        tags.input_tags.sparse = False
        return tags

    @property
    def _n_features_out(self):
        """Output width of ``transform`` (for ``get_feature_names_out``: kmeans0, kmeans1, …)."""
        return self.cluster_centers_.shape[0]

    # ------------------------------------------------------------------ fit
    def _init_array(self, d, X=None, seed=None):
        """The given or computed starting centres (checked), or None for a named method."""
        if isinstance(self.init, str):
            return None
        if callable(self.init):
            c = self.init(X, self.n_clusters, random_state=check_random_state(self.random_state))
            if hasattr(c, "compute"):
                c = c.compute()
        else:
            c = self.init
        c = np.asarray(c, dtype=np.float64)
        if c.ndim != 2 or c.shape[0] != self.n_clusters:
            raise ValueError(
                f"The shape of the initial centers {c.shape} does not match the number of clusters "
                f"{self.n_clusters}."
            )
        if c.shape[1] != d:
            raise ValueError(
                f"The shape of the initial centers {c.shape} does not match the number of features of the data {d}."
            )
        return c

    def _n_init(self) -> int:
        if self.n_init == "auto":
            return 10 if isinstance(self.init, str) and self.init == "random" else 1
        if not isinstance(self.init, str) and self.n_init != 1:
            warnings.warn(
                "Explicit initial center position passed: performing only one init in "
                f"{type(self).__name__} instead of n_init={self.n_init}.",
                RuntimeWarning,
                stacklevel=3,
            )
            return 1
        return int(self.n_init)

    def fit(self, X, y=None, sample_weight=None):
        """Lloyd's algorithm on the cluster, keeping the restart with the lowest inertia.

        Parameters
        ----------
        X : array-like, pandas DataFrame, dask Array or dask DataFrame, shape (n_samples, n_features)
        sample_weight : array-like of shape (n_samples,), optional

        Returns
        -------
        self
        """
        self._validate_params()
        data, scan, _ = prepare_rows(X, sample_weight, type(self).__name__, cache=self.cache,
                                        chunk_size=self.chunk_size, min_samples=1, estimator=self)
        n, d = data.n_rows, data.n_features
        k = self.n_clusters
        if n < k:
            raise ValueError(f"n_samples={n} should be >= n_clusters={k}.")
        if self.algorithm == "elkan" and k == 1:
            warnings.warn("algorithm='elkan' doesn't make sense for a single cluster. Using 'lloyd' instead.",
                          RuntimeWarning, stacklevel=2)
        n_init = self._n_init()
        seeds = restart_seeds(self.random_state, n_init)
        given = self._init_array(d, X, seeds[0])
        centre = scan.mean
        t0 = time.perf_counter()
        if given is not None:
            starts = [given]
        else:
            starts = initial_centers(data, centre, self.init, k, seeds)
        if self.verbose:
            print(f"Initialization complete ({time.perf_counter() - t0:.3f}s)")
        tol = kmeans_tolerance(scan.variance, self.tol)
        runs = [Run(KMeansState(np.asarray(c, np.float64), tol=tol), objective=np.inf) for c in starts]

        def report(iteration, runs):
            for i, r in enumerate(runs):
                if r.n_iter == iteration:
                    tag = f" (init {i})" if len(runs) > 1 else ""
                    print(f"Iteration {iteration - 1}, inertia {r.objective}{tag}.")
                    if r.converged:
                        shift = r.state.shift
                        if shift == 0:
                            print(f"Converged at iteration {iteration - 1}: strict convergence{tag}.")
                        else:
                            print(f"Converged at iteration {iteration - 1}: center shift {shift} within "
                                  f"tolerance {tol}{tag}.")

        lockstep(data, runs, centre=centre, max_iter=self.max_iter, callback=report if self.verbose else None)
        # inertia and counts of the final centres (Lloyd's last pass measured the previous ones)
        specs = [ModelSpec(kmeans_natural_params(r.state.centers - centre), "spherical", "hard") for r in runs]
        final = data.run([MixtureRequest(specs)], centre)[0]
        inertias = [max(0.0, float(-st.loglik)) for st in final]  # never -0.0
        best = int(np.argmin(inertias))
        r = runs[best]
        dtype = data.dtype
        self.cluster_centers_ = r.state.centers.astype(dtype)
        self.inertia_ = inertias[best]
        self.n_iter_ = int(r.n_iter)
        self.counts_ = final[best].n.copy()
        self.n_steps_ = 0
        self.history_ = [
            {"iteration": h["iteration"], "inertia": h["objective"], "seconds": h["seconds"], "events": h["events"]}
            for h in r.history
        ]
        distinct = int(np.count_nonzero(self.counts_ > 0))
        if distinct < k:
            warnings.warn(
                f"Number of distinct clusters ({distinct}) found smaller than n_clusters ({k}). "
                "Possibly due to duplicate points in X.",
                ConvergenceWarning,
                stacklevel=2,
            )
        if not r.converged:
            warn_convergence(
                f"KMeans did not converge in max_iter={self.max_iter} iterations; increase max_iter or tol."
            )
        self.labels_ = self._labels(X)
        return self

    def fit_predict(self, X, y=None, sample_weight=None):
        """Fit, then return ``labels_``."""
        return self.fit(X, sample_weight=sample_weight).labels_

    def fit_transform(self, X, y=None, sample_weight=None):
        """Fit, then return the distances of every row to every centre."""
        return self.fit(X, sample_weight=sample_weight).transform(X)

    # ------------------------------------------------------------ sequential
    def partial_fit(self, X, y=None, sample_weight=None):
        """One batch of the sequential k-means update (the notes' ``μ_k ← μ_k + (x - μ_k) / n_k``).

        Every row of the batch is assigned to its nearest centre as the batch
        starts; then, for each centre, applying ``μ ← μ + (x - μ)/n`` to its
        rows one after another (``n`` counting every row it has received, in
        this batch and before) gives exactly the running mean, which is what
        is computed. So a stream of batches, NumPy or Dask, is clustered in
        one pass with memory for one batch. The first batch also seeds the
        centres (k-means++ on it, or ``init`` when it is an array).

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
        if first:
            self._validate_params()
        name = type(self).__name__
        dask_batch = is_dask(X)
        if dask_batch:
            data, scan, _ = prepare_rows(X, sample_weight, name, cache="none", min_samples=1,
                                            estimator=self if first else None)
            d = data.n_features
        else:
            x = in_memory_rows(X, name, 1, estimator=self, reset=first, finite=True)
            d = x.shape[1]
            w = None if sample_weight is None else np.asarray(sample_weight, np.float64).reshape(-1)
            if w is not None and len(w) != len(x):
                raise ValueError(f"sample_weight.shape == {w.shape}, expected ({len(x)},)!")
        if not first and d != self.n_features_in_:
            raise ValueError(f"X has {d} features, but {name} is expecting {self.n_features_in_} features as input.")
        if first:
            seed = restart_seeds(self.random_state, 1)
            given = self._init_array(d, X, seed[0])
            if given is None:
                if dask_batch:
                    given = initial_centers(data, scan.mean, "k-means++", self.n_clusters, seed)[0]
                else:
                    import dask.array as da

                    from daskgmm.engine import ChunkedData

                    if len(x) < self.n_clusters:
                        raise ValueError(f"n_samples={len(x)} should be >= n_clusters={self.n_clusters}.")
                    local = ChunkedData(da.from_array(x, chunks=x.shape), None, cache="none", in_memory=True)
                    given = initial_centers(local, x.mean(axis=0), "k-means++", self.n_clusters, seed)[0]
            self.cluster_centers_ = np.asarray(given, np.float64)
            self.counts_ = np.zeros(self.n_clusters)
            self.n_steps_ = 0
            self.n_features_in_ = d
        centers = np.asarray(self.cluster_centers_, np.float64)
        centre = centers.mean(axis=0)
        spec = ModelSpec(kmeans_natural_params(centers - centre), "spherical", "hard")
        if dask_batch:
            st = data.run([MixtureRequest([spec])], centre)[0][0]
        else:
            st = chunk_pass(x, [MixtureRequest([spec])], centre, sample_weight=w)[0][0]
        m = st.n
        seen = self.counts_ + m
        moved = m > 0
        # μ_new = μ + (Σ_batch (x - μ)) / n_new, the sequential update applied to the batch's rows
        sums = st.s1[moved] + m[moved, None] * (st.shift - centers[moved])
        centers[moved] += sums / seen[moved, None]
        self.cluster_centers_ = centers
        self.counts_ = seen
        self.n_steps_ = getattr(self, "n_steps_", 0) + 1
        return self

    # ----------------------------------------------------------- predictions
    def _rows(self, X):
        check_is_fitted(self)
        return prediction_rows(self, X)

    def _nat(self):
        centers = np.asarray(self.cluster_centers_, np.float64)
        centre = centers.mean(axis=0)
        return kmeans_natural_params(centers - centre), centre

    def _labels(self, X):
        """``labels_`` of the rows just fitted (int32, as scikit-learn's)."""
        Xd, x = self._rows(X)
        nat, centre = self._nat()
        if Xd is not None:
            return Xd.map_blocks(blocks.nearest_labels, nat, centre, dtype=np.int32, drop_axis=1)
        return blocks.nearest_labels(x, nat, centre)

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
        centers = np.asarray(self.cluster_centers_)
        if Xd is not None:
            return Xd.map_blocks(blocks.distances, centers, dtype=Xd.dtype,
                                 chunks=(Xd.chunks[0], (self.n_clusters,)))
        return blocks.distances(x, centers)

    def score(self, X, y=None, sample_weight=None):
        """Opposite of the inertia of X (a float; Dask input is computed)."""
        check_is_fitted(self)
        # width and feature names checked against the fit (reset=False), as predict checks them
        data, _, _ = prepare_rows(X, sample_weight, type(self).__name__, cache="none", min_samples=1, estimator=self,
                                  reset=False)
        nat, centre = self._nat()
        st = data.run([MixtureRequest([ModelSpec(nat, "spherical", "hard")])], centre)[0][0]
        return float(st.loglik)

    # ----------------------------------------------------------- persistence
    def save(self, path, storage_options=None):
        """Save the fitted model to a directory (JSON + ``.npz``, replaced atomically)."""
        from daskgmm.persist import save_model

        save_model(self, path, storage_options)
        return self

    def export_state(self):
        """The fitted model as (arrays, JSON-able metadata), for :func:`daskgmm.persist.save_model`."""
        check_is_fitted(self)
        names = getattr(self, "feature_names_in_", None)
        meta = {
            "n_components": int(self.n_clusters),
            "n_features": int(self.n_features_in_),
            "columns": None if names is None else [str(c) for c in names],
            "dtype": str(np.asarray(self.cluster_centers_).dtype),
            "fit": {
                "inertia": float(getattr(self, "inertia_", np.nan)),
                "n_iter": int(getattr(self, "n_iter_", 0)),
                "n_steps": int(getattr(self, "n_steps_", 0)),
                "history": getattr(self, "history_", []),
            },
        }
        return {"cluster_centers_": self.cluster_centers_, "counts_": self.counts_}, meta

    def import_state(self, arrays, meta):
        """Set the fitted attributes from :meth:`export_state`'s output (checked: shapes, finite values)."""
        k, d = int(meta["n_components"]), int(meta["n_features"])
        c = np.asarray(arrays["cluster_centers_"])
        if c.shape != (k, d) or k != self.n_clusters:
            raise ValueError(f"cluster_centers_ has shape {c.shape}, expected ({self.n_clusters}, {d})")
        if not np.all(np.isfinite(c)):
            raise ValueError("cluster_centers_ holds NaN or infinite values")
        self.cluster_centers_ = c.astype(np.dtype(meta.get("dtype", "float64")))
        self.counts_ = np.asarray(arrays.get("counts_", np.zeros(k)), np.float64)
        fit = meta.get("fit", {})
        from daskgmm.persist import restore_history

        self.inertia_ = float(fit.get("inertia", np.nan))
        self.n_iter_ = int(fit.get("n_iter", 0))
        self.n_steps_ = int(fit.get("n_steps", 0))
        self.history_ = restore_history(fit.get("history"))
        self.n_features_in_ = d
        if meta.get("columns") is not None:
            self.feature_names_in_ = np.asarray(meta["columns"], dtype=object)
