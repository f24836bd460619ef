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

from daskgmm._base import (
    ARRAY_LIKE,
    NONE,
    RANDOM_STATE,
    VERBOSE,
    BaseEstimator,
    Interval,
    Options,
    _is_dask_array,
    _is_dask_dataframe,
    in_memory_rows,
    prediction_rows,
    prepare_rows,
    warn_convergence,
)
from daskgmm.em import Run, lockstep
from daskgmm.init import initial_centers, kmeans_tolerance, restart_seeds
from daskgmm.models import KMeansState
from daskgmm.stats import (
    MixtureRequest,
    ModelSpec,
    chunk_pass,
    component_logits,
    kmeans_natural_params,
)

INITS = ("k-means||", "k-means++", "random")


def _labels_block(x, nat, centre):
    return component_logits(np.asarray(x), nat, centre).argmax(axis=1)


def _distances_block(x, centers):
    """Euclidean distances (n, K), by differences (exact for rows near a centre)."""
    x = np.asarray(x)
    out = np.empty((x.shape[0], centers.shape[0]), dtype=x.dtype)
    step = max(1, 65536 // max(1, centers.shape[0] * x.shape[1]))
    c = centers.astype(x.dtype, copy=False)
    for a in range(0, x.shape[0], step):
        diff = x[a : a + step, None, :] - c[None, :, :]
        np.sqrt(np.einsum("nkd,nkd->nk", diff, diff), out=out[a : a + step])
    return out


class KMeans(BaseEstimator):
    """K-means clustering on data larger than memory (batch Lloyd) or on a stream (``partial_fit``).

    Parameters
    ----------
    n_clusters : int, default=8
    init : {"k-means||", "k-means++", "random"} or array of shape (n_clusters, n_features), default="k-means||"
        "k-means||" is scalable k-means++ (Bahmani et al. 2012: a few passes
        each drawing 2k rows by squared distance, then k-means++ on the
        weighted candidates); "k-means++" is greedy k-means++ in k + 1 passes;
        "random" draws k distinct rows.
    n_init : "auto" or int, default="auto"
        Restarts (1 for "k-means||", "k-means++" and arrays; 10 for "random",
        as scikit-learn); all advance in lockstep, one pass per iteration.
    max_iter : int, default=300
    tol : float, default=1e-4
        Lloyd stops when the summed squared centre shift is at most ``tol``
        times the mean feature variance (scikit-learn's rule).
    verbose : int, default=0
    random_state : int, RandomState instance or None, default=None
    cache : {"auto", "memory", "none"}, default="auto"
    chunk_size : int, optional
        Rows per chunk for in-memory input.

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
    labels_ : ndarray of shape (n_samples,), or a lazy Dask array for Dask input
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
        "init": [Options(*INITS), ARRAY_LIKE],
        "n_init": [Options("auto"), Interval(int, 1, None)],
        "max_iter": [Interval(int, 1, None)],
        "tol": [Interval(float, 0.0, None)],
        "verbose": VERBOSE,
        "random_state": RANDOM_STATE,
        "cache": [Options("auto", "memory", "none")],
        "chunk_size": [Interval(int, 1, None), NONE],
    }

    def __init__(self, n_clusters=8, *, init="k-means||", n_init="auto", max_iter=300, tol=1e-4, verbose=0,
                 random_state=None, cache="auto", chunk_size=None):
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.verbose = verbose
        self.random_state = random_state
        self.cache = cache
        self.chunk_size = chunk_size

    # ------------------------------------------------------------------ fit
    def _init_array(self, d):
        if isinstance(self.init, str):
            return None
        c = np.asarray(self.init, dtype=np.float64)
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
                f"Explicit initial center position passed: performing only one init in {type(self).__name__} "
                f"instead of n_init={self.n_init}.",
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
        data, scan, info = prepare_rows(X, sample_weight, type(self).__name__, cache=self.cache,
                                        chunk_size=self.chunk_size, min_samples=1)
        n, d = data.n_rows, data.n_features
        k = self.n_clusters
        if n < k:
            raise ValueError(f"n_samples={n} should be >= n_clusters={k}.")
        given = self._init_array(d)
        n_init = self._n_init()
        centre = scan.mean
        t0 = time.perf_counter()
        if given is not None:
            starts = [given]
        else:
            starts = initial_centers(data, centre, self.init, k, restart_seeds(self.random_state, n_init))
        if self.verbose:
            print(f"Initialization complete ({time.perf_counter() - t0:.3f}s)")
        tol = kmeans_tolerance(scan.variance, self.tol)
        runs = [Run(KMeansState(np.asarray(c, np.float64), tol=tol), objective=np.inf) for c in starts]

        def report(iteration, runs):
            for i, r in enumerate(runs):
                if r.n_iter == iteration:
                    tag = f" (init {i})" if len(runs) > 1 else ""
                    print(f"Iteration {iteration}, inertia {r.objective:.6g}{tag}")

        lockstep(data, runs, centre=centre, max_iter=self.max_iter, callback=report if self.verbose else None)
        # inertia and counts of the final centres (Lloyd's last pass measured the previous ones)
        specs = [ModelSpec(kmeans_natural_params(r.state.centers - centre), "spherical", "hard") for r in runs]
        final = data.run([MixtureRequest(specs)], centre)[0]
        inertias = [float(-st.loglik) for st in final]
        best = int(np.argmin(inertias))
        r = runs[best]
        dtype = data.dtype
        self.cluster_centers_ = r.state.centers.astype(dtype)
        self.inertia_ = inertias[best]
        self.n_iter_ = int(r.n_iter)
        self.counts_ = final[best].n.copy()
        self.history_ = [
            {"iteration": h["iteration"], "inertia": h["objective"], "seconds": h["seconds"], "events": h["events"]}
            for h in r.history
        ]
        self.n_features_in_ = d
        if info.get("feature_names") is not None:
            self.feature_names_in_ = info["feature_names"]
        if not r.converged:
            warn_convergence(
                f"KMeans did not converge in max_iter={self.max_iter} iterations; increase max_iter or tol."
            )
        self.labels_ = self.predict(X)
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
        dask_batch = _is_dask_array(X) or _is_dask_dataframe(X)
        if dask_batch:
            data, scan, info = prepare_rows(X, sample_weight, type(self).__name__, cache="none", min_samples=1)
            d = data.n_features
        else:
            x, names = in_memory_rows(X, type(self).__name__, 1)
            info = {"feature_names": names}
            if not np.all(np.isfinite(x)):
                raise ValueError("Input X contains NaN or infinity.")
            d = x.shape[1]
            w = None if sample_weight is None else np.asarray(sample_weight, np.float64).reshape(-1)
            if w is not None and len(w) != len(x):
                raise ValueError(f"sample_weight.shape == {w.shape}, expected ({len(x)},)!")
        if not first and d != self.n_features_in_:
            raise ValueError(f"X has {d} features, but {type(self).__name__} is expecting "
                             f"{self.n_features_in_} features as input.")
        if first:
            given = self._init_array(d)
            if given is None:
                seed = restart_seeds(self.random_state, 1)
                if dask_batch:
                    given = initial_centers(data, scan.mean, "k-means++", self.n_clusters, seed)[0]
                else:
                    import dask.array as da

                    from daskgmm.em import ChunkedData

                    if len(x) < self.n_clusters:
                        raise ValueError(f"n_samples={len(x)} should be >= n_clusters={self.n_clusters}.")
                    local = ChunkedData(da.from_array(x, chunks=x.shape), None, cache="none", in_memory=True)
                    given = initial_centers(local, x.mean(axis=0), "k-means++", self.n_clusters, seed)[0]
            self.cluster_centers_ = np.asarray(given, np.float64)
            self.counts_ = np.zeros(self.n_clusters)
            self.n_steps_ = 0
            self.n_features_in_ = d
            if info.get("feature_names") is not None:
                self.feature_names_in_ = info["feature_names"]
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
        self.n_steps_ += 1
        return self

    # ----------------------------------------------------------- predictions
    def _rows(self, X):
        self._check_is_fitted("cluster_centers_")
        return prediction_rows(X, type(self).__name__, self.n_features_in_)

    def _nat(self):
        centers = np.asarray(self.cluster_centers_, np.float64)
        centre = centers.mean(axis=0)
        return kmeans_natural_params(centers - centre), centre

    def predict(self, X):
        """Index of the nearest centre for each row (NumPy for NumPy input, lazy Dask for Dask)."""
        Xd, x = self._rows(X)
        nat, centre = self._nat()
        if Xd is not None:
            return Xd.map_blocks(_labels_block, nat, centre, dtype=np.intp, drop_axis=1)
        return _labels_block(x, nat, centre)

    def transform(self, X):
        """Distances of every row to every centre, shape (n_samples, n_clusters)."""
        Xd, x = self._rows(X)
        centers = np.asarray(self.cluster_centers_)
        if Xd is not None:
            return Xd.map_blocks(_distances_block, centers, dtype=Xd.dtype,
                                 chunks=(Xd.chunks[0], (self.n_clusters,)))
        return _distances_block(x, centers)

    def score(self, X, y=None, sample_weight=None):
        """Opposite of the inertia of X (a float; Dask input is computed)."""
        self._check_is_fitted("cluster_centers_")
        data, _, _ = prepare_rows(X, sample_weight, type(self).__name__, cache="none", min_samples=1)
        nat, centre = self._nat()
        st = data.run([MixtureRequest([ModelSpec(nat, "spherical", "hard")])], centre)[0][0]
        return float(st.loglik)

    # ----------------------------------------------------------- persistence
    def save(self, path, storage_options=None):
        """Save the fitted model to a directory (JSON + ``.npz``, replaced atomically)."""
        from daskgmm.persist import save_model

        save_model(self, path, storage_options)
        return self

    def _persist_state(self):
        self._check_is_fitted("cluster_centers_")
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

    def _restore_state(self, arrays, meta):
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
