"""``GaussianMixture``: scikit-learn's estimator, fitted by EM passes over Dask chunks.

The estimator is thin: it validates its parameters and input and sets attributes; the fit
procedure is :mod:`daskgmm.fitting.mixture` (and :mod:`daskgmm.fitting.online` for ``partial_fit``),
predictions and samples :mod:`daskgmm.fitting.predict`, the attributes and model files
:mod:`daskgmm.fitting.attributes`, the verbose lines :mod:`daskgmm.fitting.report`.
"""

from __future__ import annotations

import typing
import warnings

import numpy as np
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.utils.validation import check_is_fitted

from daskgmm.em.init import INIT_METHODS
from daskgmm.fitting import attributes as fitting_attributes
from daskgmm.fitting import mixture as fitting
from daskgmm.fitting import online as fitting_online
from daskgmm.fitting import predict as fitting_predict
from daskgmm.fitting.attributes import set_attributes
from daskgmm.fitting.report import VerboseReport
from daskgmm.io.modelfiles import register
from daskgmm.kernels import covariance as cov
from daskgmm.validation.checks import check_rows, prediction_rows, prepare_rows
from daskgmm.validation.params import (
    ARRAY_LIKE,
    BOOLEAN,
    NONE,
    RANDOM_STATE,
    VERBOSE,
    Interval,
    Options,
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
        (:func:`daskgmm.fitting.online.model_statistics`) stand in for them.
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
    def fit(self, X, y=None, sample_weight=None, *, checkpoint=None, progress=None):
        """Estimate the parameters with EM, keeping the best of ``n_init`` runs.

        Parameters
        ----------
        X : array-like, pandas DataFrame, dask Array or dask DataFrame, shape (n_samples, n_features)
        y : ignored
        sample_weight : array-like or dask Array of shape (n_samples,), optional
            Non-negative row weights (multiply the responsibilities).
        checkpoint : daskgmm.io.modelfiles.Checkpoint, optional
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
        """The fit (:func:`daskgmm.fitting.mixture.fit_mixture`); returns the prepared data."""
        self._validate_params()
        fitting.check_update_params(self.update_params)
        data, scan, _ = self._prepare(X, sample_weight)
        d = data.n_features
        fitting.check_n_samples(data.n_rows, self.n_components)
        params = fitting.MixtureParams.of(self.get_params())
        warm = None
        if self.warm_start and hasattr(self, "converged_"):
            fitting.check_warm_features(type(self).__name__, self.means_.shape[1], d)
            warm = (fitting.warm_state(self.weights_, self.means_, self.covariances_, self.precisions_cholesky_,
                                       params, data.dtype), self.lower_bound_)
        given = fitting.check_initial_parameters(self.weights_init, self.means_init, self.precisions_init, params, d)
        self._verbose_start(1 if warm is not None else self.n_init)
        fit = fitting.fit_mixture(
            data, scan, params, random_state=self.random_state, given=given, warm=warm, checkpoint=checkpoint,
            progress=progress, on_iteration=self._verbose_iteration if self.verbose else None,
        )
        self._verbose_end(fit.runs)
        set_attributes(self, fitting_attributes.fit_attributes(fit, data.n_rows, d, self.max_iter, data.dtype),
                       drop=("online_stats_",))
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
        fitting.check_update_params(self.update_params)
        params = fitting.MixtureParams.of(self.get_params())
        if first:
            data, scan, info = self._prepare(X, sample_weight)
            fitting.check_n_samples(data.n_rows, self.n_components)
            given = fitting.check_initial_parameters(self.weights_init, self.means_init, self.precisions_init,
                                                     params, data.n_features)
            states, self.init_seconds_ = fitting.online_initial_states(data, scan, params, self.random_state, given)
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
        set_attributes(self, fitting_attributes.online_attributes(step, t, seen, data.passes, data.dtype,
                                                                  previous=None if first else self))
        return self

    # ------------------------------------------------------------- verbose
    def _verbose_start(self, n_runs):
        self._report = VerboseReport(self.verbose, self.verbose_interval)
        self._report.start(n_runs)

    def _verbose_iteration(self, iteration, runs):
        self._report.iteration(iteration, runs)

    def _verbose_end(self, runs):
        self._report.end(runs)

    # ----------------------------------------------------------- predictions
    def _centre(self) -> np.ndarray:
        return fitting_predict.mixture_centre(self.weights_, self.means_)

    def _natural(self, centre):
        """Log-density parameters for predictions (:func:`daskgmm.fitting.predict.natural_form`)."""
        return fitting_predict.natural_form(self.weights_, self.means_, self.precisions_cholesky_,
                                            self.covariance_type, centre)

    def _marginal(self, centre):
        """The per-component form for rows with NaN (``missing="marginalize"``), else None."""
        return fitting_predict.marginal_form(self.weights_, self.means_, self.precisions_cholesky_,
                                             self.covariance_type, centre, getattr(self, "missing", "raise"))

    def _apply(self, X, what):
        """``what`` of every row: NumPy in, NumPy out; Dask in, lazy Dask out."""
        check_is_fitted(self)
        Xd, x = prediction_rows(self, X, missing=getattr(self, "missing", "raise"))
        centre = self._centre()
        return fitting_predict.apply_mixture(x if Xd is None else Xd, self._natural(centre), centre, what,
                                             self._marginal(centre), self.n_components)

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

    def bic(self, X):
        """Bayesian information criterion on X (lower is better)."""
        return fitting_predict.information_criteria(self.score(X), fitting_predict.n_rows(X), self._n_parameters())[0]

    def aic(self, X):
        """Akaike information criterion on X (lower is better)."""
        return fitting_predict.information_criteria(self.score(X), fitting_predict.n_rows(X), self._n_parameters())[1]

    def sample(self, n_samples=1):
        """Draw rows from the fitted mixture (scikit-learn's algorithm and random stream).

        Returns
        -------
        X : ndarray, shape (n_samples, n_features)
        y : ndarray of int, shape (n_samples,)
            Component of each row.
        """
        check_is_fitted(self)
        return fitting_predict.sample_mixture(self.weights_, self.means_, self.covariances_, self.covariance_type,
                                              n_samples, self.random_state)

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
        from daskgmm.io.outputs import write_parts

        parts = self.prediction_parts(X, ids=ids, id_column=id_column, proba=proba, loglik=loglik)
        return write_parts(path, parts, storage_options, name="predictions")

    def prediction_parts(self, X, *, ids=None, id_column="id", proba=False, loglik=False) -> list:
        """One Delayed column dict per chunk of X (see :meth:`write_predictions`)."""
        check_is_fitted(self)
        with warnings.catch_warnings():
            # the command matches Parquet columns to the model's names itself and passes a Dask array
            warnings.filterwarnings("ignore", "X does not have valid feature names", UserWarning)
            Xd, _ = check_rows(X, type(self).__name__, min_samples=0, estimator=self, reset=False,
                               finite="allow-nan" if getattr(self, "missing", "raise") == "marginalize" else True)
        centre = self._centre()
        return fitting_predict.prediction_parts(Xd, self._natural(centre), centre, self._marginal(centre),
                                                self.n_components, ids=ids, id_column=id_column, proba=proba,
                                                loglik=loglik)

    def write_sample(self, path, n_samples, *, random_state=None, chunk_rows=1_000_000, storage_options=None) -> int:
        """Stream ``n_samples`` rows drawn from the mixture to Parquet parts, atomically.

        Each part of ``chunk_rows`` rows is drawn and written by one task, from a
        seed derived from ``random_state`` and the part number, so a worker holds
        one part per thread. Columns: the feature names (or ``x0 …``) and
        ``component``.

        Returns
        -------
        int
            Rows written.
        """
        from daskgmm.io.files import rows_per_part
        from daskgmm.io.outputs import write_parts

        check_is_fitted(self)
        n_samples = int(n_samples)
        if n_samples < 1:
            raise ValueError(f"n_samples must be at least 1, got {n_samples}")
        sizes = rows_per_part(n_samples, max(1, -(-n_samples // int(chunk_rows))))
        parts = fitting_predict.sample_parts(sizes, random_state, self.weights_, self.means_, self.covariances_,
                                             self.covariance_type, self._column_names())
        return write_parts(path, parts, storage_options, name="sample")

    # ----------------------------------------------------------- persistence
    def save(self, path, storage_options=None):
        """Save the fitted model to a directory (JSON + ``.npz``, replaced atomically)."""
        from daskgmm.io.modelfiles import save_model

        save_model(self, path, storage_options)
        return self

    def export_state(self):
        """The fitted model as (arrays, JSON-able metadata), for :func:`daskgmm.io.modelfiles.save_model`."""
        check_is_fitted(self)
        return fitting_attributes.export_mixture(self)

    def import_state(self, arrays, meta):
        """Set the fitted attributes from :meth:`export_state`'s output (checked: shapes, finite values)."""
        from daskgmm.io.modelfiles import restore_history

        attributes = fitting_attributes.import_mixture(arrays, meta, self.n_components, self.covariance_type)
        attributes["history_"] = restore_history(attributes["history_"])
        set_attributes(self, attributes, drop=("online_stats_",))
