"""``GaussianMixture``: scikit-learn's estimator, fitted by EM passes over Dask chunks."""

from __future__ import annotations

import time
import typing
import warnings

import numpy as np
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.utils import check_array
from sklearn.utils.validation import check_is_fitted

from daskgmm import covariance as cov
from daskgmm._base import (
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
from daskgmm.em import Run, lockstep
from daskgmm.init import INIT_METHODS, check_random_state, mixture_init_stats, restart_seeds
from daskgmm.models import MixtureState
from daskgmm.stats import component_logits


def _check_shape(param, shape, name):
    if param.shape != shape:
        raise ValueError(f"The parameter '{name}' should have the shape of {shape}, but got {param.shape}")


def _as_param_array(value, name) -> np.ndarray:
    """scikit-learn's check of an initial parameter array (numeric, finite; any shape, checked next)."""
    return check_array(value, dtype=[np.float64, np.float32], ensure_2d=False, allow_nd=True, input_name=name)


def check_weights(weights, n_components) -> np.ndarray:
    w = _as_param_array(weights, "weights")
    _check_shape(w, (n_components,), "weights")
    if np.any(w < 0.0) or np.any(w > 1.0):
        raise ValueError(
            "The parameter 'weights' should be in the range [0, 1], but got max value "
            f"{w.min():.5f}, min value {w.max():.5f}"
        )
    atol = 1e-6 if w.dtype == np.float32 else 1e-8  # as scikit-learn: float32 sums round
    if not np.allclose(abs(1.0 - w.sum()), 0.0, atol=atol):
        raise ValueError(f"The parameter 'weights' should be normalized, but got sum(weights) = {w.sum():.5f}")
    return w.astype(np.float64, copy=False)


def check_means(means, n_components, n_features) -> np.ndarray:
    m = _as_param_array(means, "means")
    _check_shape(m, (n_components, n_features), "means")
    return m.astype(np.float64, copy=False)


def check_precisions(precisions, covariance_type, n_components, n_features) -> np.ndarray:
    p = _as_param_array(precisions, f"{covariance_type} precision")
    _check_shape(p, cov.covariance_shape(covariance_type, n_components, n_features), f"{covariance_type} precision")
    if covariance_type in ("full", "tied"):
        for mat in p.reshape(-1, n_features, n_features):
            if not (np.allclose(mat, mat.T) and np.all(np.linalg.eigvalsh(mat) > 0.0)):
                raise ValueError(f"'{covariance_type} precision' should be symmetric, positive-definite")
    elif np.any(p <= 0.0):
        raise ValueError(f"'{covariance_type} precision' should be positive")
    return p.astype(np.float64, copy=False)


def _predict_block(x, nat, centre, what):
    """Per-chunk predictions (a top-level function so that workers can unpickle it)."""
    x = np.asarray(x)
    if x.size and not np.all(np.isfinite(x)):
        raise ValueError("Input X contains NaN or infinity.")
    logits = component_logits(x, nat, centre)
    if what == "labels":
        return logits.argmax(axis=1)
    mx = logits.max(axis=1, keepdims=True) if len(logits) else np.zeros((0, 1), logits.dtype)
    with np.errstate(under="ignore"):
        lse = mx + np.log(np.exp(logits - mx).sum(axis=1, keepdims=True))
        if what == "proba":
            return np.exp(logits - lse)
    return lse[:, 0]


def _prediction_part(x, ids, nat, centre, id_column, proba, loglik, n_components):
    """Columns of one part of a predictions dataset."""
    x = np.asarray(x)
    logits = component_logits(x, nat, centre)
    out = {}
    if id_column is not None:
        out[id_column] = ids
    out["label"] = logits.argmax(axis=1).astype(np.int32)
    if proba or loglik:
        mx = logits.max(axis=1, keepdims=True) if len(logits) else np.zeros((0, 1), logits.dtype)
        with np.errstate(under="ignore"):
            lse = mx + np.log(np.exp(logits - mx).sum(axis=1, keepdims=True))
            if proba:
                p = np.exp(logits - lse)
                for k in range(n_components):
                    out[f"proba_{k}"] = p[:, k]
        if loglik:
            out["loglik"] = lse[:, 0]
    return out


def _sample_part(n, seed, part, weights, means, covs, covariance_type, names, dtype):
    """``n`` rows of one part of a streamed sample (shuffled; with their component)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(part,)))
    counts = rng.multinomial(n, weights)
    d = means.shape[1]
    xs, ys = [], []
    for k, c in enumerate(counts):
        if c == 0:
            continue
        if covariance_type in ("full", "tied"):
            cov_k = covs[k] if covariance_type == "full" else covs
            z = rng.standard_normal((c, d)) @ np.linalg.cholesky(cov_k).T
        else:  # diag (K, D) or spherical (K,): scale each coordinate
            z = rng.standard_normal((c, d)) * np.sqrt(covs[k])
        xs.append(means[k] + z)
        ys.append(np.full(c, k, dtype=np.int32))
    X = np.vstack(xs) if xs else np.zeros((0, d))
    y = np.concatenate(ys) if ys else np.zeros(0, np.int32)
    order = rng.permutation(len(y))
    out = {name: X[order, j].astype(dtype) for j, name in enumerate(names)}
    out["component"] = y[order]
    return out


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
        "kmeans" runs k-means|| seeding and a few Lloyd passes on the cluster.
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
        ``change``, ``seconds`` (wall time of the pass) and ``events``.
    restarts_ : list of dict
        ``lower_bound``, ``n_iter``, ``converged`` of every restart.
    init_seconds_ : float
        Wall time of the initialisation (all restarts).
    init_passes_, n_passes_ : int
        Passes over the data for the initialisation (the first scan included),
        and in all.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Column names, when the input had string column names.
    """

    _parameter_constraints: typing.ClassVar[dict] = {
        "n_components": [Interval(int, 1, None)],
        "covariance_type": [Options("full", "tied", "diag", "spherical")],
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

    # ------------------------------------------------------------------ fit
    def _check_update_params(self):
        up = self.update_params
        if not isinstance(up, str) or not up or set(up) - set("wmc") or len(set(up)) != len(up):
            raise ValueError(
                f"update_params must be a non-empty combination of 'w', 'm' and 'c' "
                f"(weights, means, covariances); got {up!r}"
            )

    def _state_kwargs(self, dtype) -> dict:
        return dict(
            reg_covar=float(self.reg_covar), tol=float(self.tol), eps_dtype=np.dtype(dtype),
            assignment=self.assignment, update_params=self.update_params, on_collapse=self.on_collapse,
        )

    def fit(self, X, y=None, sample_weight=None):
        """Estimate the parameters with EM, keeping the best of ``n_init`` runs.

        Parameters
        ----------
        X : array-like, pandas DataFrame, dask Array or dask DataFrame, shape (n_samples, n_features)
        y : ignored
        sample_weight : array-like or dask Array of shape (n_samples,), optional
            Non-negative row weights (multiply the responsibilities).

        Returns
        -------
        self
        """
        self._fit(X, sample_weight)
        return self

    def fit_predict(self, X, y=None, sample_weight=None):
        """Fit, then label the rows (NumPy for in-memory input, lazy Dask for Dask input)."""
        self._fit(X, sample_weight)
        return self.predict(X)

    def _prepare(self, X, sample_weight, min_samples=2):
        return prepare_rows(X, sample_weight, type(self).__name__, cache=self.cache, chunk_size=self.chunk_size,
                            min_samples=min_samples, estimator=self)

    def _validate_params(self):
        validate_params(self)

    def __sklearn_is_fitted__(self):
        return hasattr(self, "means_")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.input_tags.sparse = False
        return tags

    def _fit(self, X, sample_weight, *, checkpoint=None, progress=None):
        """Fit; ``checkpoint`` (persist.Checkpoint) saves every iteration and resumes from
        its last save; ``progress(event, **info)`` reports "init" and "iteration" events."""
        self._validate_params()
        self._check_update_params()
        data, scan, info = self._prepare(X, sample_weight)
        n, d = data.n_rows, data.n_features
        k = self.n_components
        if n < k:
            raise ValueError(
                f"Expected n_samples >= n_components but got n_components = {k}, n_samples = {n}"
            )
        do_init = not (self.warm_start and hasattr(self, "converged_"))
        if not do_init and self.means_.shape[1] != d:
            raise ValueError(
                f"X has {d} features, but the warm-started {type(self).__name__} was fitted "
                f"with {self.means_.shape[1]} features."
            )
        init = self._checked_init(d)
        centre = scan.mean
        kw = self._state_kwargs(data.dtype)
        t0 = time.perf_counter()
        runs = checkpoint.load() if checkpoint is not None else None
        resumed = runs is not None
        if runs is None:
            seeds = None
            if do_init:
                seeds = restart_seeds(self.random_state, self.n_init)
                states = self._initial_states(data, centre, scan, seeds, init, kw)
                runs = [Run(s) for s in states]
            else:
                runs = [Run(self._current_state(kw), objective=self.lower_bound_)]
            if checkpoint is not None:
                # every later draw is keyed by (seed, row): the seeds are the whole random state
                checkpoint.save(runs, extra={"rng": {"generator": "SplitMix64 keyed by (seed, row)",
                                                     "restart_seeds": seeds}})
        self.init_seconds_ = time.perf_counter() - t0
        self.init_passes_ = data.passes
        if progress is not None:
            progress("init", seconds=self.init_seconds_, resumed=resumed, runs=runs)
        self._verbose_start(len(runs))

        def after_iteration(iteration, runs):
            if checkpoint is not None:
                checkpoint.save(runs)
            if self.verbose:
                self._verbose_iteration(iteration, runs)
            if progress is not None:
                progress("iteration", iteration=iteration, runs=runs)

        lockstep(data, runs, centre=centre, max_iter=self.max_iter, callback=after_iteration)
        self._verbose_end(runs)
        self._finish(runs, data.dtype, d, info)
        self.n_passes_ = data.passes
        return data

    def _checked_init(self, d):
        k, ct = self.n_components, self.covariance_type
        return {
            "weights": None if self.weights_init is None else check_weights(self.weights_init, k),
            "means": None if self.means_init is None else check_means(self.means_init, k, d),
            "precisions": None if self.precisions_init is None else check_precisions(self.precisions_init, ct, k, d),
        }

    def _initial_states(self, data, centre, scan, seeds, init, kw) -> list[MixtureState]:
        ct = self.covariance_type
        if all(v is not None for v in init.values()):
            p = init["precisions"]
            state = MixtureState(
                init["weights"], init["means"], cov.covariances_from_precisions(p, ct),
                cov.precisions_cholesky_from_precisions(p, ct), ct, **kw,
            )
            return [state] * len(seeds)
        stats = mixture_init_stats(
            data, centre, method=self.init_params, jobs=[(self.n_components, ct, s) for s in seeds],
        )
        states = []
        for st in stats:
            nk, means, covs = cov.estimate_parameters(st, self.reg_covar, kw["eps_dtype"])
            weights = nk / scan.weight if init["weights"] is None else init["weights"]
            means = means if init["means"] is None else init["means"]
            if init["precisions"] is None:
                states.append(MixtureState.from_covariances(weights, means, covs, ct, **kw))
            else:
                p = init["precisions"]
                states.append(MixtureState(
                    weights, means, cov.covariances_from_precisions(p, ct),
                    cov.precisions_cholesky_from_precisions(p, ct), ct, **kw,
                ))
        return states

    def _current_state(self, kw) -> MixtureState:
        return MixtureState(
            np.asarray(self.weights_, np.float64), np.asarray(self.means_, np.float64),
            np.asarray(self.covariances_, np.float64), np.asarray(self.precisions_cholesky_, np.float64),
            self.covariance_type, **kw,
        )

    def _finish(self, runs, dtype, d, info):
        if self.max_iter == 0:
            best = runs[-1]  # scikit-learn keeps the last initialisation
            best_lb = -np.inf
        else:
            best, best_lb = None, -np.inf
            for r in runs:
                if r.objective > best_lb or best_lb == -np.inf:
                    best, best_lb = r, r.objective
        st = best.state
        self.weights_ = st.weights.astype(dtype)
        self.means_ = st.means.astype(dtype)
        if st.covariances is not None:
            self.covariances_ = st.covariances.astype(dtype)
        self.precisions_cholesky_ = np.asarray(st.precisions_cholesky).astype(dtype)
        self.precisions_ = cov.precisions_from_cholesky(st.precisions_cholesky, self.covariance_type).astype(dtype)
        self.converged_ = bool(best.converged) if self.max_iter > 0 else False
        self.n_iter_ = int(best.n_iter)
        self.lower_bound_ = float(best_lb)
        self.lower_bounds_ = [float(v) for v in best.objectives]
        self.history_ = [
            {"iteration": h["iteration"], "lower_bound": h["objective"], "change": h["change"],
             "seconds": h["seconds"], "events": h["events"]}
            for h in best.history
        ]
        self.restarts_ = [
            {"lower_bound": float(r.objective), "n_iter": int(r.n_iter), "converged": bool(r.converged)}
            for r in runs
        ]
        self.n_features_in_ = d
        if info.get("feature_names") is not None:
            self.feature_names_in_ = info["feature_names"]
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        if not self.converged_ and self.max_iter > 0:
            warn_convergence(
                "Best performing initialization did not converge. Try different init "
                "parameters, or increase max_iter, tol, or check for degenerate data."
            )

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

    def _apply(self, X, what):
        """Run ``_predict_block`` over X: NumPy in, NumPy out; Dask in, lazy Dask out."""
        check_is_fitted(self)
        Xd, x = prediction_rows(self, X)
        centre = self._centre()
        nat = self._natural(centre)
        if Xd is not None:
            if what == "proba":
                return Xd.map_blocks(_predict_block, nat, centre, what, dtype=Xd.dtype,
                                     chunks=(Xd.chunks[0], (self.n_components,)))
            dtype = np.intp if what == "labels" else Xd.dtype
            return Xd.map_blocks(_predict_block, nat, centre, what, dtype=dtype, drop_axis=1)
        return _predict_block(x, nat, centre, what)

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
        from daskgmm.io import write_parts

        parts = self._prediction_parts(X, ids=ids, id_column=id_column, proba=proba, loglik=loglik)
        return write_parts(path, parts, storage_options)

    def _prediction_parts(self, X, *, ids=None, id_column="id", proba=False, loglik=False) -> list:
        """One Delayed column dict per chunk of X (see :meth:`write_predictions`)."""
        import dask
        import dask.array as da

        check_is_fitted(self)
        with warnings.catch_warnings():
            # the command matches Parquet columns to the model's names itself and passes a Dask array
            warnings.filterwarnings("ignore", "X does not have valid feature names", UserWarning)
            Xd, _ = check_rows(X, type(self).__name__, min_samples=0, estimator=self, reset=False, finite=True)
        xb = Xd.to_delayed().ravel()
        if ids is not None:
            ids = ids if isinstance(ids, da.Array) else da.from_array(np.asarray(ids), chunks=(Xd.chunks[0],))
            ib = ids.rechunk((Xd.chunks[0],)).to_delayed().ravel()
        else:
            ib = [None] * len(xb)
            id_column = None
        centre = self._centre()
        nat = self._natural(centre)
        part = dask.delayed(_prediction_part, pure=True)
        return [part(x, i, nat, centre, id_column, proba, loglik, self.n_components) for x, i in zip(xb, ib)]

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

        from daskgmm.io import rows_per_part, write_parts

        check_is_fitted(self)
        n_samples = int(n_samples)
        if n_samples < 1:
            raise ValueError(f"n_samples must be at least 1, got {n_samples}")
        seed = check_random_state(random_state).randint(0, 2**31 - 1)
        n_parts = max(1, -(-n_samples // int(chunk_rows)))
        w = np.asarray(self.weights_, np.float64)
        args = (w / w.sum(), np.asarray(self.means_, np.float64), np.asarray(self.covariances_, np.float64),
                self.covariance_type, self._column_names(), np.asarray(self.means_).dtype)
        part = dask.delayed(_sample_part, pure=True)
        parts = [part(n, seed, i, *args) for i, n in enumerate(rows_per_part(n_samples, n_parts))]
        return write_parts(path, parts, storage_options)

    # ----------------------------------------------------------- persistence
    def save(self, path, storage_options=None):
        """Save the fitted model to a directory (JSON + ``.npz``, replaced atomically)."""
        from daskgmm.persist import save_model

        save_model(self, path, storage_options)
        return self

    def _persist_state(self):
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
        }
        return arrays, meta

    def _restore_state(self, arrays, meta):
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
