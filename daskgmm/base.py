"""The base of the mixture estimators, as scikit-learn's ``sklearn.mixture._base.BaseMixture``.

``GaussianMixture``, ``BayesianGaussianMixture`` and ``StudentTMixture`` share their common
parameters, the checks before a fit, the verbose lines, predictions (NumPy in, NumPy out;
Dask in, lazy Dask out), Parquet outputs and model files. Each adds its parameters, its fit
(a procedure of :mod:`daskgmm.fitting`) and its log-density form (``_natural``); the
information criteria (:class:`InformationCriteriaMixin`) belong to the point estimates only,
as in scikit-learn (the variational mixture has no ``bic``/``aic``).
"""

from __future__ import annotations

import typing

import numpy as np
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.utils import metadata_routing
from sklearn.utils.validation import check_is_fitted

from daskgmm.em.init import INIT_METHODS
from daskgmm.engine.cluster import compute_bounded
from daskgmm.fitting import attributes as fitting_attributes
from daskgmm.fitting import predict as fitting_predict
from daskgmm.fitting.mixture import FITTED_TYPE, check_continued_model, check_n_samples, check_warm_features
from daskgmm.fitting.report import VerboseReport
from daskgmm.kernels import covariance as cov
from daskgmm.validation.checks import nan_hint, prediction_chunks, prediction_rows, prepare_rows
from daskgmm.validation.params import (
    BOOLEAN,
    NONE,
    RANDOM_STATE,
    VERBOSE,
    Interval,
    Options,
    validate_params,
    warn_convergence,
)

#: scikit-learn's warning when the best restart did not converge (``ConvergenceWarning``).
NOT_CONVERGED = ("Best performing initialization did not converge. Try different init parameters, or increase "
                 "max_iter, tol, or check for degenerate data.")


def _reseeds_said(history) -> str:
    """What a fit that did not converge owes to on_collapse="reinit": EM drew a component back onto a
    point again and again (two clusters and one far row, K = 3: a re-seed every ~18 iterations, never
    converging), which the bare sentence does not tell from too small a max_iter ("" if at most one re-seed:
    a component the start left on a point, re-seeded once, is no cycle)."""
    its = [h["iteration"] for h in history for e in h.get("events", ()) if "; re-seeded at " in e]
    if len(its) < 2:
        return ""
    return (f' on_collapse="reinit" re-seeded a collapsed component {len(its)} times, the last in iteration '
            f"{its[-1]} of {history[-1]['iteration']}: EM draws a component back onto a point (an isolated row, or "
            "repeated ones) that it holds only by the singularity; fit fewer components, or let one hold that "
            'point (on_collapse="raise" with reg_covar > 0).')


class ModelFilesMixin:
    """What every estimator with model files and Parquet predictions shares: :meth:`save` (its
    ``export_state``, by :func:`daskgmm.io.modelfiles.save_model`) and the writing of its
    ``prediction_parts`` (:meth:`_write_predictions`)."""

    def save(self, path, storage_options=None):
        """Save the fitted model to a directory (JSON + ``.npz``, replaced atomically)."""
        from daskgmm.io.modelfiles import save_model

        save_model(self, path, storage_options)
        return self

    def _write_predictions(self, X, path, storage_options, **columns) -> int:
        """Write ``prediction_parts(X, **columns)`` to ``path`` atomically; the rows written. Id columns read
        from Parquet by daskgmm are written in their Arrow type in every part (:func:`daskgmm.io.read.id_type_of`)."""
        from daskgmm.io.outputs import write_parts
        from daskgmm.io.read import id_type_of

        ids, names = columns.get("ids"), columns.get("id_column")
        arrays = [ids] if isinstance(names, str) else list(ids) if isinstance(ids, (list, tuple)) else []
        names = [names] if isinstance(names, str) else list(names or [])
        types = {n: t for n, t in zip(names, map(id_type_of, arrays)) if t is not None}
        return write_parts(path, self.prediction_parts(X, **columns), storage_options, name="predictions", inputs=X,
                           types=types)


class BaseMixture(ModelFilesMixin, DensityMixin, BaseEstimator):
    """Base class of the mixture estimators (parameters common to all of them, predictions, outputs).

    Subclasses define ``__init__`` with their own parameters (calling this one), ``_fit``
    (returns the prepared data, sets the fitted attributes), ``_natural`` and, where they
    differ, ``_marginal``, ``sample``, ``_sample_parts``, ``export_state`` and ``import_state``.
    """

    # fit's keywords for the command (a checkpoint, progress events) are no metadata: a meta-estimator
    # routes none to them, and set_fit_request offers none (as scikit-learn's trees do with check_input)
    __metadata_request__fit: typing.ClassVar[dict] = {"checkpoint": metadata_routing.UNUSED,
                                                      "progress": metadata_routing.UNUSED}

    _parameter_constraints: typing.ClassVar[dict] = {
        "n_components": [Interval(int, 1, None)],
        "covariance_type": [Options(*cov.COVARIANCE_TYPES)],
        "tol": [Interval(float, 0.0, None)],
        "reg_covar": [Interval(float, 0.0, None)],
        "max_iter": [Interval(int, 0, None)],
        "n_init": [Interval(int, 1, None)],
        "init_params": [Options(*INIT_METHODS)],
        "random_state": RANDOM_STATE,
        "warm_start": [BOOLEAN],
        "verbose": VERBOSE,
        "verbose_interval": [Interval(int, 1, None)],
        "cache": [Options("auto", "memory", "none")],
        "chunk_size": [Interval(int, 1, None), NONE],
        "missing": [Options("raise", "marginalize")],
    }

    def __init__(self, n_components, covariance_type, tol, reg_covar, max_iter, n_init, init_params, random_state,
                 warm_start, verbose, verbose_interval, cache, chunk_size, missing):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.cache = cache
        self.chunk_size = chunk_size
        self.missing = missing

    # ------------------------------------------------------------------ fit
    def fit(self, X, y=None, sample_weight=None, *, checkpoint=None, progress=None):
        """Estimate the parameters, keeping the best of ``n_init`` runs.

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
            ``progress(event, **info)``: "init" (``seconds``, ``resumed``, ``runs``, ``persisted``:
            whether ``cache`` kept the rows in memory rather than reading them again every pass) and
            "iteration" (``iteration``, ``runs``) events.

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

    def _fit(self, X, sample_weight, *, checkpoint=None, progress=None):  # pragma: no cover - abstract
        raise NotImplementedError

    def _prepare(self, X, sample_weight, min_samples=2, check_chunks=False):
        try:
            return prepare_rows(X, sample_weight, type(self).__name__, cache=self.cache,
                                chunk_size=self.chunk_size, min_samples=min_samples, estimator=self,
                                missing=self.missing, check_chunks=check_chunks)
        except ValueError as exc:
            # the sentence says to remove or impute them: a mixture can also marginalise them
            if self.missing != "raise" or not str(exc).startswith("Input X contains NaN"):
                raise
            raise type(exc)(f"{exc} {type(self).__name__} marginalises them with missing='marginalize'.") from None

    #: Whether the fit is the same for any scale of the sample weights (a maximum-likelihood mixture): then
    #: tiny ones are scaled up, exactly, or the M-step's ``10 eps`` would swamp them
    #: (:meth:`daskgmm.engine.passes.ChunkedData.rescale_weights`). Not for a variational one: its priors count them.
    _weights_scale_free = True

    def _fit_rows(self, X, sample_weight, check_chunks=False):
        """The rows a fit reads (:meth:`_prepare`): ``(data, scan, info)``, the weights rescaled where
        :attr:`_weights_scale_free`; scikit-learn's error for fewer rows than components."""
        data, scan, info = self._prepare(X, sample_weight, check_chunks=check_chunks)
        if self._weights_scale_free:
            scan = data.rescale_weights()
        check_n_samples(data.n_rows, self.n_components)
        return data, scan, info

    def _continues(self, n_features: int) -> bool:
        """Whether this fit starts from the fitted model (``warm_start`` on a fitted estimator), once checked
        that it can: rows of ``n_features`` as the fitted model's, and the parameters still its form."""
        if not (self.warm_start and hasattr(self, "converged_")):
            return False
        check_warm_features(type(self).__name__, self.means_.shape[1], n_features)
        self._check_continued()
        return True

    def _validate_params(self):
        validate_params(self)

    def _warn_if_not_converged(self):
        if not self.converged_ and self.max_iter > 0:
            warn_convergence(NOT_CONVERGED + _reseeds_said(getattr(self, "history_", ())))

    def __sklearn_is_fitted__(self):
        return hasattr(self, "means_")

    def _check_fitted(self):
        """Fitted, and the parameters still say the fitted model's form: after set_params changed
        n_components or covariance_type, the fitted arrays were read as the new form."""
        check_is_fitted(self)
        self._check_continued("fitted")

    def _check_continued(self, how: str = "warm_start") -> None:
        """The fitted model's form is still the parameters' (:func:`daskgmm.fitting.mixture.check_continued_model`):
        before a warm start, a later ``partial_fit`` (``how``), or predictions ("fitted")."""
        check_continued_model(type(self).__name__, self.means_, self.covariances_, self.precisions_cholesky_,
                              self.n_components, self.covariance_type, how=how,
                              fitted_type=getattr(self, FITTED_TYPE, None))  # None: pickled before it was recorded

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = getattr(self, "missing", "raise") == "marginalize"
        tags.input_tags.sparse = False
        return tags

    # ------------------------------------------------------------- verbose
    def _verbose_start(self, n_runs):
        self._report = VerboseReport(self.verbose, self.verbose_interval)
        self._report.start(n_runs)

    def _verbose_iteration(self, iteration, runs):
        self._report.iteration(iteration, runs)

    def _verbose_end(self, runs):
        self._report.end(runs)

    # ----------------------------------------------------------- predictions
    def _centre(self):
        """The shift of prediction passes: the fit's (``_shift``) where the scan found rows far from the others,
        whose means' mean lies far from the other rows and would take their precision; else the mixture's mean."""
        shift = getattr(self, "_shift", None)
        return fitting_predict.mixture_centre(self.weights_, self.means_) if shift is None else shift

    def _natural(self, centre):  # pragma: no cover - abstract
        """The log-density form of the fitted model for predictions."""
        raise NotImplementedError

    def _marginal(self, centre):
        """The per-component form for rows with NaN (``missing="marginalize"``), or None."""
        return None

    #: ``score_samples`` of a row with every value missing (``missing="marginalize"``): a Gaussian or t mixture's
    #: density of nothing observed is 1 (log 0, exactly: the log of its weights' sum rounded to ±1e-16); None
    #: where the model's score is no density (the variational mixture's E-step logits, offsets included)
    _nothing_observed_score = 0.0

    def _apply(self, X, what, min_samples=0):
        """``what`` of every row: NumPy in, NumPy out; Dask in, lazy Dask out (``min_samples``: Dask rows
        needed; in-memory input needs one, as scikit-learn's)."""
        self._check_fitted()
        Xd, x = prediction_rows(self, X, missing=getattr(self, "missing", "raise"), min_samples=min_samples,
                                nan_hint=nan_hint(self))
        rows = _widened(x if Xd is None else Xd, self.means_.dtype)
        centre = self._centre()
        return fitting_predict.apply_mixture(rows, self._natural(centre), centre, what,
                                             self._marginal(centre), self.n_components, self._nothing_observed_score)

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
        # a mean needs a row: scikit-learn's error for Dask input with none too (it gave NaN, and bic a
        # 'math domain error')
        s = self._apply(X, "score", min_samples=1)
        return float(compute_bounded(s.mean(), what="score")[0] if hasattr(s, "compute") else s.mean())

    def _df(self):
        """The components' degrees of freedom where they are Student-t (:class:`daskgmm.StudentTMixture`),
        else None (Gaussian): what :meth:`sample` and :meth:`write_sample` draw from."""
        return None

    def sample(self, n_samples=1):
        """Draw rows from the fitted mixture (scikit-learn's algorithm and random stream; a
        :class:`daskgmm.StudentTMixture`'s components are t distributions).

        Returns
        -------
        X : ndarray, shape (n_samples, n_features)
        y : ndarray of int, shape (n_samples,)
            Component of each row.
        """
        self._check_fitted()
        return fitting_predict.sample_mixture(self.weights_, self.means_, self.covariances_, self.covariance_type,
                                              n_samples, self.random_state, df=self._df())

    # ------------------------------------------------------------ to Parquet
    def _column_names(self):
        names = getattr(self, "feature_names_in_", None)
        return [str(c) for c in names] if names is not None else [f"x{j}" for j in range(self.n_features_in_)]

    def write_predictions(self, X, path, *, ids=None, id_column="id", proba=False, loglik=False,
                          storage_options=None) -> int:
        """Predict every row of Dask (or NumPy) ``X`` and write Parquet parts to ``path``, atomically.

        Columns: the id column(s) when ``ids`` are given, each in its own type, in order (``id_column``,
        a name or a list of names; ``ids``, one array of shape (n_samples,), or for a list one per name
        or a DataFrame with those columns, as ``read_parquet(..., id_column=[...])`` returns them),
        ``label``, optionally ``proba_0 … proba_{K-1}`` and ``loglik`` (per-row log-likelihood). The
        directory is written beside ``path`` and renamed into place with a ``_SUCCESS`` marker only
        when every part is written.

        Returns
        -------
        int
            Rows written.
        """
        return self._write_predictions(X, path, storage_options, ids=ids, id_column=id_column, proba=proba,
                                       loglik=loglik)

    def prediction_parts(self, X, *, ids=None, id_column="id", proba=False, loglik=False) -> list:
        """One Delayed column dict per chunk of X (see :meth:`write_predictions`)."""
        self._check_fitted()
        Xd = _widened(prediction_chunks(self, X, getattr(self, "missing", "raise"), nan_hint=nan_hint(self)),
                      self.means_.dtype)
        centre = self._centre()
        return fitting_predict.prediction_parts(Xd, self._natural(centre), centre, self._marginal(centre),
                                                self.n_components, ids=ids, id_column=id_column, proba=proba,
                                                loglik=loglik, empty=self._nothing_observed_score)

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

        self._check_fitted()
        n_samples = int(n_samples)
        if n_samples < 1:
            raise ValueError(f"n_samples must be at least 1, got {n_samples}")
        sizes = rows_per_part(n_samples, max(1, -(-n_samples // int(chunk_rows))))
        return write_parts(path, self._sample_parts(sizes, random_state), storage_options, name="sample")

    def _sample_parts(self, sizes, random_state) -> list:
        return fitting_predict.sample_parts(sizes, random_state, self.weights_, self.means_, self.covariances_,
                                            self.covariance_type, self._column_names(), df=self._df())

    # ----------------------------------------------------------- persistence
    def export_state(self):
        """The fitted model as (arrays, JSON-able metadata), for :func:`daskgmm.io.modelfiles.save_model`."""
        self._check_fitted()
        return fitting_attributes.export_mixture(self)

    def import_state(self, arrays, meta):
        """Set the fitted attributes from :meth:`export_state`'s output (checked: shapes, finite values)."""
        from daskgmm.io.modelfiles import restore_history

        attributes = fitting_attributes.import_mixture(arrays, meta, self.n_components, self.covariance_type)
        attributes["history_"] = restore_history(attributes["history_"])
        for name, value in attributes.items():
            setattr(self, name, value)


def _widened(X, model_dtype):
    """X in the wider of its and the model's dtypes, as scikit-learn computes: float32 rows scored by a
    float64 model give float64 (in float32 lanes they lost the model's precision and gave float32)."""
    dtype = np.result_type(X.dtype, model_dtype)
    return X if X.dtype == dtype else X.astype(dtype)


class InformationCriteriaMixin:
    """``bic`` and ``aic`` of a point estimate (``_n_parameters()`` free parameters)."""

    def _n_parameters(self) -> int:
        return cov.n_parameters(self.covariance_type, self.n_components, self.means_.shape[1])

    def bic(self, X):
        """Bayesian information criterion on X (lower is better)."""
        return fitting_predict.information_criteria(self.score(X), fitting_predict.n_rows(X), self._n_parameters())[0]

    def aic(self, X):
        """Akaike information criterion on X (lower is better)."""
        return fitting_predict.information_criteria(self.score(X), fitting_predict.n_rows(X), self._n_parameters())[1]
