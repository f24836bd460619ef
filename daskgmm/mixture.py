"""``GaussianMixture``: scikit-learn's estimator, fitted by EM passes over Dask chunks."""

from __future__ import annotations

import time
import typing
import warnings

import numpy as np
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.utils.validation import check_is_fitted

from daskgmm import fitting, fitting_online
from daskgmm.init import INIT_METHODS, check_random_state, restart_seeds
from daskgmm.kernels import covariance as cov
from daskgmm.kernels import predict as blocks
from daskgmm.persist import register
from daskgmm.validation import (
    ARRAY_LIKE,
    BOOLEAN,
    NONE,
    RANDOM_STATE,
    VERBOSE,
    Interval,
    Options,
    check_rows,
    is_dask_dataframe,
    prediction_rows,
    prepare_rows,
    validate_params,
    warn_convergence,
)


@register
class GaussianMixture(DensityMixin, BaseEstimator):
    """Gaussian mixture fitted by EM on data larger than memory.

    The constructor, attributes and methods are scikit-learn's
    :class:`sklearn.mixture.GaussianMixture`; each EM iteration is one pass in
    which every Dask chunk is reduced to sufficient statistics and the
    statistics are tree-reduced on the cluster. Restarts (``n_init``) run in
    lockstep: one pass per iteration serves all of them.

    Parameters
    ----------
    n_components : int, default=1
    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
    tol : float, default=1e-3
        EM stops when the change of the mean log-likelihood per sample (the
        lower bound) is below ``tol``.
    reg_covar : float, default=1e-6
        Added to the diagonal of covariances, to keep them positive definite.
    max_iter : int, default=100
    n_init : int, default=1
        Restarts; the one with the largest final lower bound is kept.
    init_params : {"kmeans", "k-means++", "random", "random_from_data"}, default="kmeans"
        "kmeans": k-means++ and Lloyd's algorithm on the first scan's row-keyed
        sample (on the client), one Lloyd pass on the data, then the statistics
        of the labels: three reads of the data with the scan.
    weights_init : array-like of shape (n_components,), default=None
    means_init : array-like of shape (n_components, n_features), default=None
    precisions_init : array-like, default=None
        Shape (K,) spherical, (D, D) tied, (K, D) diag, (K, D, D) full.
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation (independently of chunking) and ``sample``.
    warm_start : bool, default=False
        Continue from the fitted parameters on the next ``fit`` (``n_init`` ignored).
    verbose : int, default=0
    verbose_interval : int, default=10
    assignment : {"soft", "hard"}, default="soft"
        "hard" is classification EM: each row wholly to its most likely component.
    update_params : str, default="wmc"
        Which of weights (w), means (m) and covariances (c) the M-step updates.
    on_collapse : {"raise", "reinit"}, default="raise"
        A component whose covariance stops being positive definite raises a
        ValueError naming it ("raise", scikit-learn's behaviour), or is re-seeded
        at the worst-explained rows and the fit continues ("reinit"; recorded
        in ``history_``).
    cache : {"auto", "memory", "none"}, default="auto"
        Keep Dask input in (cluster) memory across passes, or re-read it every
        pass (out of core). "auto" keeps it when it takes under 40% of memory.
    chunk_size : int, optional
        Rows per chunk when the input is in memory (NumPy, pandas).
    learning_decay : float, default=0.7
        The decay of the step sizes ``η_t = (t + learning_offset) ** -learning_decay`` of
        :meth:`partial_fit`, in (0.5, 1] (where stepwise EM converges, Cappé &
        Moulines 2009); smaller forgets old batches faster.
    learning_offset : float, default=10.0
        ``t0`` of the step sizes (at least 0); larger damps the early steps.
    missing : {"raise", "marginalize"}, default="raise"
        NaN in X is an error ("raise"), or a missing value ("marginalize"): EM for
        incomplete data scores each row by the marginal density of its observed
        features and fills the M-step with the conditional expectations of the
        missing ones (Ghahramani & Jordan 1994); ``predict``, ``predict_proba`` and
        ``score_samples`` then give marginal results for rows with NaN. Infinity
        and rows with every feature missing stay errors. The initialisation uses
        the rows without NaN (at least one is needed).

    Attributes
    ----------
    weights_ : ndarray of shape (n_components,)
    means_ : ndarray of shape (n_components, n_features)
    covariances_ : ndarray
    precisions_ : ndarray
    precisions_cholesky_ : ndarray
    converged_ : bool
    n_iter_ : int
    lower_bound_ : float
        Mean log-likelihood per sample of the best run (before its last M-step).
    lower_bounds_ : list of float
        Lower bound at each iteration of the best run.
    history_ : list of dict
        Per iteration of the best run: ``iteration``, ``lower_bound``,
        ``change``, ``seconds`` (wall time of the pass) and ``events``; each
        :meth:`partial_fit` step appends one entry, with ``batch``, ``rows`` and ``eta``.
    restarts_ : list of dict
        ``lower_bound``, ``n_iter``, ``converged`` of every restart.
    init_seconds_ : float
        Wall time of the initialisation (all restarts).
    init_passes_, n_passes_ : int
        Passes over the data for the initialisation (the first scan included),
        and in all.
    n_batches_ : int
        Batches the model has learnt from: ``fit`` counts as one, each
        :meth:`partial_fit` step as one more (its ``t``).
    n_rows_seen_ : int
        Rows of all those batches.
    online_stats_ : SuffStats
        The running sufficient statistics of :meth:`partial_fit` (per unit
        weight); absent after ``fit``, where the fitted model's own statistics
        (:func:`daskgmm.fitting_online.model_statistics`) stand in for them.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Column names, when the input had string column names.
    """

    _parameter_constraints: typing.ClassVar[dict] = {
        "n_components": [Interval(int, 1, None)],
        "covariance_type": [Options(*cov.COVARIANCE_TYPES)],
        "tol": [Interval(float, 0.0, None)],
        "reg_covar": [Interval(float, 0.0, None)],
        "max_iter": [Interval(int, 0, None)],
        "n_init": [Interval(int, 1, None)],
        "init_params": [Options(*INIT_METHODS)],
        "weights_init": [ARRAY_LIKE, NONE],
        "means_init": [ARRAY_LIKE, NONE],
        "precisions_init": [ARRAY_LIKE, NONE],
        "random_state": RANDOM_STATE,
        "warm_start": [BOOLEAN],
        "verbose": VERBOSE,
        "verbose_interval": [Interval(int, 1, None)],
        "assignment": [Options("soft", "hard")],
        "on_collapse": [Options("raise", "reinit")],
        "cache": [Options("auto", "memory", "none")],
        "chunk_size": [Interval(int, 1, None), NONE],
        "learning_decay": [Interval(float, 0.5, 1.0, closed="right")],
        "learning_offset": [Interval(float, 0.0, None)],
        "missing": [Options("raise", "marginalize")],
    }

    def __init__(
        self,
        n_components=1,
        *,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        weights_init=None,
        means_init=None,
        precisions_init=None,
        random_state=None,
        warm_start=False,
        verbose=0,
        verbose_interval=10,
        assignment="soft",
        update_params="wmc",
        on_collapse="raise",
        cache="auto",
        chunk_size=None,
        learning_decay=fitting_online.LEARNING_DECAY,
        learning_offset=fitting_online.LEARNING_OFFSET,
        missing="raise",
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.assignment = assignment
        self.update_params = update_params
        self.on_collapse = on_collapse
        self.cache = cache
        self.chunk_size = chunk_size
        self.learning_decay = learning_decay
        self.learning_offset = learning_offset
        self.missing = missing

    # ------------------------------------------------------------------ fit
    def _check_update_params(self):
        up = self.update_params
        if not isinstance(up, str) or not up or set(up) - set("wmc") or len(set(up)) != len(up):
            raise ValueError(
                f"update_params must be a non-empty combination of 'w', 'm' and 'c' "
                f"(weights, means, covariances); got {up!r}"
            )

    def fit(self, X, y=None, sample_weight=None, *, checkpoint=None, progress=None):
        """Estimate the parameters with EM, keeping the best of ``n_init`` runs.

        Parameters
        ----------
        X : array-like, pandas DataFrame, dask Array or dask DataFrame, shape (n_samples, n_features)
        y : ignored
        sample_weight : array-like or dask Array of shape (n_samples,), optional
            Non-negative row weights (multiply the responsibilities).
        checkpoint : daskgmm.persist.Checkpoint, optional
            Save every restart after every iteration, and resume from its last
            save (a job killed at any point ends, when run again, with the model
            an uninterrupted fit gives).
        progress : callable, optional
            ``progress(event, **info)``: "init" (``seconds``, ``resumed``, ``runs``)
            and "iteration" (``iteration``, ``runs``) events.

        Returns
        -------
        self
        """
        self._fit(X, sample_weight, checkpoint=checkpoint, progress=progress)
        return self

    def fit_predict(self, X, y=None, sample_weight=None):
        """Fit, then label the rows (NumPy for in-memory input, lazy Dask for Dask input)."""
        self._fit(X, sample_weight)
        return self.predict(X)

    def _prepare(self, X, sample_weight, min_samples=2):
        return prepare_rows(X, sample_weight, type(self).__name__, cache=self.cache, chunk_size=self.chunk_size,
                            min_samples=min_samples, estimator=self, missing=self.missing)

    def _validate_params(self):
        validate_params(self)

    def __sklearn_is_fitted__(self):
        return hasattr(self, "means_")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = getattr(self, "missing", "raise") == "marginalize"
        tags.input_tags.sparse = False
        return tags

    def _fit(self, X, sample_weight, *, checkpoint=None, progress=None):
        self._validate_params()
        self._check_update_params()
        data, scan, _ = self._prepare(X, sample_weight)
        n, d = data.n_rows, data.n_features
        k = self.n_components
        if n < k:
            raise ValueError(
                f"Expected n_samples >= n_components but got n_components = {k}, n_samples = {n}"
            )
        params = fitting.MixtureParams.of(self.get_params())
        warm = None
        if self.warm_start and hasattr(self, "converged_"):
            if self.means_.shape[1] != d:
                raise ValueError(
                    f"X has {d} features, but the warm-started {type(self).__name__} was fitted "
                    f"with {self.means_.shape[1]} features."
                )
            warm = (fitting.warm_state(self.weights_, self.means_, self.covariances_, self.precisions_cholesky_,
                                       params, data.dtype), self.lower_bound_)
        given = fitting.check_initial_parameters(self.weights_init, self.means_init, self.precisions_init, params, d)
        self._verbose_start(1 if warm is not None else self.n_init)
        fit = fitting.fit_mixture(
            data, scan, params, random_state=self.random_state, given=given, warm=warm, checkpoint=checkpoint,
            progress=progress, on_iteration=self._verbose_iteration if self.verbose else None,
        )
        self._verbose_end(fit.runs)
        for name, value in fitting.fitted_attributes(fit.best, fit.runs, fit.lower_bound, self.max_iter,
                                                     data.dtype).items():
            setattr(self, name, value)
        self.init_seconds_, self.init_passes_, self.n_passes_ = fit.init_seconds, fit.init_passes, fit.n_passes
        self.n_features_in_ = d
        # the fit counts as one batch: a later partial_fit continues from it with eta_1
        self.n_batches_, self.n_rows_seen_ = 1, int(n)
        if hasattr(self, "online_stats_"):
            del self.online_stats_
        if not self.converged_ and self.max_iter > 0:
            warn_convergence(
                "Best performing initialization did not converge. Try different init "
                "parameters, or increase max_iter, tol, or check for degenerate data."
            )
        return data

    # ------------------------------------------------------------ online EM
    def partial_fit(self, X, y=None, sample_weight=None):
        """One step of stepwise (online) EM on a batch: one pass over it.

        The batch's sufficient statistics under the current parameters are
        blended into running ones, ``s ← (1 - η_t) s + η_t s_batch`` per unit of
        sample weight (so batches may differ in size), with
        ``η_t = (t + learning_offset) ** -learning_decay`` for the ``t``-th batch,
        then the M-step sets the parameters from them (Cappé & Moulines 2009;
        Liang & Klein 2009). The first call initialises as ``fit`` does on the
        batch (``init_params``, the ``*_init`` arrays, ``n_init`` starts, of which
        the one most likely on the batch is kept) and takes ``η_0 = 1``; after
        ``fit`` (which counts as the first batch) or loading a saved model, the
        step continues from the model.

        Parameters
        ----------
        X : array-like, pandas DataFrame, dask Array or dask DataFrame, shape (n_samples, n_features)
        y : ignored
        sample_weight : array-like or dask Array of shape (n_samples,), optional

        Returns
        -------
        self
        """
        first = not hasattr(self, "means_")
        name = type(self).__name__
        self._validate_params()
        self._check_update_params()
        params = fitting.MixtureParams.of(self.get_params())
        if first:
            data, scan, info = self._prepare(X, sample_weight)
            k, d = self.n_components, data.n_features
            if data.n_rows < k:
                raise ValueError(
                    f"Expected n_samples >= n_components but got n_components = {k}, n_samples = {data.n_rows}"
                )
            given = fitting.check_initial_parameters(self.weights_init, self.means_init, self.precisions_init,
                                                     params, d)
            seeds = restart_seeds(self.random_state, self.n_init)
            t0 = time.perf_counter()
            states = fitting.initial_states(data, scan, [(params, s) for s in seeds], given)
            self.init_seconds_ = time.perf_counter() - t0
            running, t, centre, seen = None, 0, scan.mean, 0
        else:
            check_is_fitted(self)
            data, _, info = prepare_rows(X, sample_weight, name, cache="none", chunk_size=self.chunk_size,
                                         min_samples=1, estimator=self, reset=False, scan=False,
                                         missing=self.missing)
            states = [fitting.warm_state(self.weights_, self.means_, self.covariances_, self.precisions_cholesky_,
                                         params, data.dtype)]
            running = getattr(self, "online_stats_", None)
            if running is None:  # after fit or a model saved by fit: the model stands for its data
                running = fitting_online.model_statistics(states[0], loglik=self.lower_bound_)
            t, centre, seen = int(self.n_batches_), self._centre(), int(self.n_rows_seen_)
        names = info["feature_names"] if first else getattr(self, "feature_names_in_", None)
        step = fitting_online.online_step(data, states, running, t, centre=centre, learning_decay=self.learning_decay,
                                   learning_offset=self.learning_offset, feature_names=names, name=name)
        st = step.state
        dtype = data.dtype
        self.weights_ = st.weights.astype(dtype)
        self.means_ = st.means.astype(dtype)
        self.covariances_ = st.covariances.astype(dtype)
        self.precisions_cholesky_ = np.asarray(st.precisions_cholesky).astype(dtype)
        self.precisions_ = cov.precisions_from_cholesky(st.precisions_cholesky, st.covariance_type).astype(dtype)
        self.online_stats_ = step.stats
        self.n_batches_, self.n_rows_seen_ = t + 1, seen + step.rows
        previous = getattr(self, "lower_bound_", -np.inf) if not first else -np.inf
        # no convergence test: stepwise EM runs for as long as batches come
        self.converged_ = False
        self.n_iter_ = (0 if first else int(self.n_iter_)) + 1
        self.lower_bound_ = step.loglik
        self.lower_bounds_ = ([] if first else list(self.lower_bounds_)) + [step.loglik]
        self.history_ = ([] if first else list(self.history_)) + [{
            "iteration": self.n_iter_, "lower_bound": step.loglik, "change": step.loglik - previous,
            "seconds": step.seconds, "events": list(st.events), "batch": self.n_batches_, "rows": step.rows,
            "eta": step.eta,
        }]
        if first:
            self.restarts_ = []
            self.init_passes_, self.n_passes_ = data.passes - 1, data.passes
        else:
            self.n_passes_ = int(getattr(self, "n_passes_", 0)) + data.passes
        return self

    # ------------------------------------------------------------- verbose
    def _verbose_start(self, n_runs):
        self._t_iter = time.perf_counter()
        if self.verbose:
            for i in range(n_runs):
                print(f"Initialization {i}")

    def _verbose_iteration(self, iteration, runs):
        if iteration % self.verbose_interval:
            return
        now = time.perf_counter()
        for i, r in enumerate(runs):
            if r.n_iter != iteration:
                continue
            tag = f" (initialization {i})" if len(runs) > 1 else ""
            if self.verbose == 1:
                print(f"  Iteration {iteration}{tag}")
            else:
                change = r.history[-1]["change"]
                print(f"  Iteration {iteration}\t time lapse {now - self._t_iter:.5f}s\t ll change {change:.5f}{tag}")
        self._t_iter = now

    def _verbose_end(self, runs):
        if not self.verbose:
            return
        for i, r in enumerate(runs):
            msg = "converged" if r.converged else "did not converge"
            if self.verbose >= 2:
                print(f"Initialization {i} {msg}. lower bound {r.objective:.5f}.")
            else:
                print(f"Initialization {i} {msg}.")

    # ----------------------------------------------------------- predictions
    def _centre(self) -> np.ndarray:
        w = np.asarray(self.weights_, np.float64)
        return (w / w.sum()) @ np.asarray(self.means_, np.float64)

    def _natural(self, centre):
        """Log-density parameters for predictions: shared features, or the per-component
        form when the model is badly conditioned for them."""
        args = (self.weights_, self.means_, self.precisions_cholesky_, self.covariance_type, centre)
        if cov.precise_needed(self.means_, self.precisions_cholesky_, self.covariance_type, centre,
                              np.asarray(self.means_).dtype):
            return cov.per_component(*args)
        return cov.natural_params(*args)

    def _marginal(self, centre):
        """The per-component form for rows with NaN (``missing="marginalize"``), else None."""
        if getattr(self, "missing", "raise") != "marginalize":
            return None
        return cov.per_component(self.weights_, self.means_, self.precisions_cholesky_, self.covariance_type,
                                 centre)

    def _apply(self, X, what):
        """Run ``blocks.mixture_block`` over X: NumPy in, NumPy out; Dask in, lazy Dask out."""
        check_is_fitted(self)
        Xd, x = prediction_rows(self, X, missing=getattr(self, "missing", "raise"))
        centre = self._centre()
        nat = self._natural(centre)
        marg = self._marginal(centre)
        if Xd is not None:
            if what == "proba":
                return Xd.map_blocks(blocks.mixture_block, nat, centre, what, marg, dtype=Xd.dtype,
                                     chunks=(Xd.chunks[0], (self.n_components,)))
            dtype = np.intp if what == "labels" else Xd.dtype
            return Xd.map_blocks(blocks.mixture_block, nat, centre, what, marg, dtype=dtype, drop_axis=1)
        return blocks.mixture_block(x, nat, centre, what, marg)

    def predict(self, X):
        """Most likely component of each row, shape (n_samples,)."""
        return self._apply(X, "labels")

    def predict_proba(self, X):
        """Posterior probability of each component, shape (n_samples, n_components)."""
        return self._apply(X, "proba")

    def score_samples(self, X):
        """Log-likelihood ``log p(x)`` of each row, shape (n_samples,)."""
        return self._apply(X, "score")

    def score(self, X, y=None):
        """Mean log-likelihood per row (a float; Dask input is computed)."""
        s = self.score_samples(X)
        return float(s.mean().compute() if hasattr(s, "compute") else s.mean())

    def _n_parameters(self) -> int:
        return cov.n_parameters(self.covariance_type, self.n_components, self.means_.shape[1])

    def _n_rows(self, X) -> int:
        if is_dask_dataframe(X):
            return len(X)
        n = X.shape[0] if hasattr(X, "shape") else len(X)
        if isinstance(n, float) and np.isnan(n):
            n = int(X.compute_chunk_sizes().shape[0])
        return int(n)

    def bic(self, X):
        """Bayesian information criterion on X (lower is better)."""
        n = self._n_rows(X)
        return -2 * self.score(X) * n + self._n_parameters() * np.log(n)

    def aic(self, X):
        """Akaike information criterion on X (lower is better)."""
        return -2 * self.score(X) * self._n_rows(X) + 2 * self._n_parameters()

    def sample(self, n_samples=1):
        """Draw rows from the fitted mixture (scikit-learn's algorithm and random stream).

        Returns
        -------
        X : ndarray, shape (n_samples, n_features)
        y : ndarray of int, shape (n_samples,)
            Component of each row.
        """
        check_is_fitted(self)
        if n_samples < 1:
            raise ValueError(
                f"Invalid value for 'n_samples': {n_samples} . The sampling requires at least one sample."
            )
        rng = check_random_state(self.random_state)
        means = np.asarray(self.means_, np.float64)
        covs = np.asarray(self.covariances_, np.float64)
        n_features = means.shape[1]
        counts = rng.multinomial(n_samples, np.asarray(self.weights_, np.float64))
        ct = self.covariance_type
        if ct == "full":
            X = np.vstack([rng.multivariate_normal(m, c, int(s)) for m, c, s in zip(means, covs, counts)])
        elif ct == "tied":
            X = np.vstack([rng.multivariate_normal(m, covs, int(s)) for m, s in zip(means, counts)])
        else:
            X = np.vstack([
                m + rng.standard_normal(size=(s, n_features)) * np.sqrt(c)
                for m, c, s in zip(means, covs, counts)
            ])
        y = np.concatenate([np.full(int(s), j, dtype=np.int64) for j, s in enumerate(counts)])
        return X, y

    # ------------------------------------------------------------ to Parquet
    def _column_names(self):
        names = getattr(self, "feature_names_in_", None)
        return [str(c) for c in names] if names is not None else [f"x{j}" for j in range(self.n_features_in_)]

    def write_predictions(self, X, path, *, ids=None, id_column="id", proba=False, loglik=False,
                          storage_options=None) -> int:
        """Predict every row of Dask (or NumPy) ``X`` and write Parquet parts to ``path``, atomically.

        Columns: ``id_column`` (when ``ids`` are given), ``label``, optionally
        ``proba_0 … proba_{K-1}`` and ``loglik`` (per-row log-likelihood). The
        directory is written beside ``path`` and renamed into place with a
        ``_SUCCESS`` marker only when every part is written.

        Returns
        -------
        int
            Rows written.
        """
        from daskgmm.outputs import write_parts

        parts = self.prediction_parts(X, ids=ids, id_column=id_column, proba=proba, loglik=loglik)
        return write_parts(path, parts, storage_options)

    def prediction_parts(self, X, *, ids=None, id_column="id", proba=False, loglik=False) -> list:
        """One Delayed column dict per chunk of X (see :meth:`write_predictions`)."""
        import dask
        import dask.array as da

        check_is_fitted(self)
        with warnings.catch_warnings():
            # the command matches Parquet columns to the model's names itself and passes a Dask array
            warnings.filterwarnings("ignore", "X does not have valid feature names", UserWarning)
            Xd, _ = check_rows(X, type(self).__name__, min_samples=0, estimator=self, reset=False,
                               finite="allow-nan" if getattr(self, "missing", "raise") == "marginalize" else True)
        # unfused: the rows and the ids of a chunk come from one read task (fused, each had its own copy)
        xb = Xd.to_delayed(optimize_graph=False).ravel()
        if ids is not None:
            ids = ids if isinstance(ids, da.Array) else da.from_array(np.asarray(ids), chunks=(Xd.chunks[0],))
            ib = ids.rechunk((Xd.chunks[0],)).to_delayed(optimize_graph=False).ravel()
        else:
            ib = [None] * len(xb)
            id_column = None
        centre = self._centre()
        nat = self._natural(centre)
        marg = self._marginal(centre)
        part = dask.delayed(blocks.prediction_part, pure=True)
        return [part(x, i, nat, centre, id_column, proba, loglik, self.n_components, marg) for x, i in zip(xb, ib)]

    def write_sample(self, path, n_samples, *, random_state=None, chunk_rows=1_000_000, storage_options=None) -> int:
        """Stream ``n_samples`` rows drawn from the mixture to Parquet parts, atomically.

        Each part of ``chunk_rows`` rows is drawn by its own task from a seed
        derived from ``random_state`` and the part number, so no process holds
        more than one part. Columns: the feature names (or ``x0 …``) and
        ``component``.

        Returns
        -------
        int
            Rows written.
        """
        import dask

        from daskgmm.io import rows_per_part
        from daskgmm.outputs import write_parts

        check_is_fitted(self)
        n_samples = int(n_samples)
        if n_samples < 1:
            raise ValueError(f"n_samples must be at least 1, got {n_samples}")
        seed = check_random_state(random_state).randint(0, 2**31 - 1)
        n_parts = max(1, -(-n_samples // int(chunk_rows)))
        w = np.asarray(self.weights_, np.float64)
        args = (w / w.sum(), np.asarray(self.means_, np.float64), np.asarray(self.covariances_, np.float64),
                self.covariance_type, self._column_names(), np.asarray(self.means_).dtype)
        part = dask.delayed(blocks.sample_part, pure=True)
        parts = [part(n, seed, i, *args) for i, n in enumerate(rows_per_part(n_samples, n_parts))]
        return write_parts(path, parts, storage_options)

    # ----------------------------------------------------------- persistence
    def save(self, path, storage_options=None):
        """Save the fitted model to a directory (JSON + ``.npz``, replaced atomically)."""
        from daskgmm.persist import save_model

        save_model(self, path, storage_options)
        return self

    def export_state(self):
        """The fitted model as (arrays, JSON-able metadata), for :func:`daskgmm.persist.save_model`."""
        check_is_fitted(self)
        arrays = {
            name: getattr(self, name)
            for name in ("weights_", "means_", "covariances_", "precisions_cholesky_")
            if hasattr(self, name)
        }
        names = getattr(self, "feature_names_in_", None)
        meta = {
            "n_components": int(self.n_components),
            "covariance_type": self.covariance_type,
            "n_features": int(self.n_features_in_),
            "columns": None if names is None else [str(c) for c in names],
            "dtype": str(np.asarray(self.means_).dtype),
            "fit": {
                "converged": bool(self.converged_),
                "n_iter": int(self.n_iter_),
                "lower_bound": float(self.lower_bound_),
                "lower_bounds": [float(v) for v in getattr(self, "lower_bounds_", [])],
                "history": getattr(self, "history_", []),
                "restarts": getattr(self, "restarts_", []),
                "init_seconds": float(getattr(self, "init_seconds_", 0.0)),
            },
            "online": {
                "n_batches": int(getattr(self, "n_batches_", 1)),
                "n_rows_seen": int(getattr(self, "n_rows_seen_", 0)),
            },
        }
        stats = getattr(self, "online_stats_", None)
        if stats is not None:
            # the running statistics, so that a loaded model continues exactly (float64 always)
            arrays.update(online_n=stats.n, online_s1=stats.s1, online_s2=stats.s2, online_shift=stats.shift)
            meta["online"].update(loglik=float(stats.loglik), weight=float(stats.weight), rows=int(stats.rows))
        return arrays, meta

    def import_state(self, arrays, meta):
        """Set the fitted attributes from :meth:`export_state`'s output (checked: shapes, finite values)."""
        k, d, ct = int(meta["n_components"]), int(meta["n_features"]), meta["covariance_type"]
        if k != self.n_components or ct != self.covariance_type:
            raise ValueError("n_components/covariance_type differ between parameters and fitted arrays")
        dtype = np.dtype(meta.get("dtype", "float64"))
        expect = {
            "weights_": (k,),
            "means_": (k, d),
            "precisions_cholesky_": cov.covariance_shape(ct, k, d),
            "covariances_": cov.covariance_shape(ct, k, d),
        }
        for name, shape in expect.items():
            if name == "covariances_" and name not in arrays:
                continue
            a = np.asarray(arrays[name])
            if a.shape != shape:
                raise ValueError(f"{name} has shape {a.shape}, expected {shape}")
            if not np.all(np.isfinite(a)):
                raise ValueError(f"{name} holds NaN or infinite values")
        w = np.asarray(arrays["weights_"], np.float64)
        if np.any(w < 0) or not np.isclose(w.sum(), 1.0, atol=1e-5):
            raise ValueError(f"weights_ must be non-negative and sum to 1 (sum {w.sum():.6g})")
        self.weights_ = arrays["weights_"].astype(dtype)
        self.means_ = arrays["means_"].astype(dtype)
        self.precisions_cholesky_ = arrays["precisions_cholesky_"].astype(dtype)
        pc64 = np.asarray(arrays["precisions_cholesky_"], np.float64)
        self.precisions_ = cov.precisions_from_cholesky(pc64, ct).astype(dtype)
        if "covariances_" in arrays:
            self.covariances_ = arrays["covariances_"].astype(dtype)
        else:
            self.covariances_ = cov.covariances_from_precisions(self.precisions_, ct).astype(dtype)
        fit = meta.get("fit", {})
        self.converged_ = bool(fit.get("converged", False))
        self.n_iter_ = int(fit.get("n_iter", 0))
        self.lower_bound_ = float(fit.get("lower_bound", -np.inf))
        self.lower_bounds_ = [float(v) for v in fit.get("lower_bounds", [])]
        from daskgmm.persist import restore_history

        self.history_ = restore_history(fit.get("history"))
        self.restarts_ = fit.get("restarts", [])
        self.init_seconds_ = float(fit.get("init_seconds", 0.0))
        self.n_features_in_ = d
        if meta.get("columns") is not None:
            self.feature_names_in_ = np.asarray(meta["columns"], dtype=object)
        online = meta.get("online") or {}
        # files written before partial_fit existed hold a fitted model: one batch
        self.n_batches_ = int(online.get("n_batches", 1))
        self.n_rows_seen_ = int(online.get("n_rows_seen", 0))
        if hasattr(self, "online_stats_"):
            del self.online_stats_
        if "online_n" in arrays:
            self.online_stats_ = self._online_stats(arrays, online, k, d, ct)

    def _online_stats(self, arrays, online, k, d, ct):
        """The running statistics saved by :meth:`export_state`, checked."""
        from daskgmm.kernels import SuffStats

        n, s1, s2 = (np.asarray(arrays[f"online_{a}"], np.float64) for a in ("n", "s1", "s2"))
        shift = np.asarray(arrays["online_shift"], np.float64)
        s2_shape = {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[ct]
        for name, a, shape in (("online_n", n, (k,)), ("online_s1", s1, (k, d)), ("online_s2", s2, s2_shape)):
            if a.shape != shape:
                raise ValueError(f"{name} has shape {a.shape}, expected {shape}")
        if shift.shape not in ((d,), (k, d)):
            raise ValueError(f"online_shift has shape {shift.shape}, expected ({d},) or ({k}, {d})")
        if not all(np.all(np.isfinite(a)) for a in (n, s1, s2, shift)):
            raise ValueError("the running statistics hold NaN or infinite values")
        return SuffStats(n=n, s1=s1, s2=s2, loglik=float(online.get("loglik", 0.0)),
                         weight=float(online.get("weight", 1.0)), rows=int(online.get("rows", 0)), shift=shift,
                         covariance_type=ct)
