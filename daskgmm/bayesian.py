"""``BayesianGaussianMixture``: scikit-learn's variational mixture, fitted by passes over Dask chunks."""

from __future__ import annotations

import typing

import numpy as np
from sklearn.utils.validation import check_is_fitted

from daskgmm.base import BaseMixture
from daskgmm.fitting import variational as fitting_variational
from daskgmm.fitting.attributes import kept_shift
from daskgmm.io.modelfiles import register
from daskgmm.kernels import covariance as cov
from daskgmm.models.priors import PRIOR_TYPES, PRIORS
from daskgmm.models.variational import effective_components
from daskgmm.validation.params import (
    ARRAY_LIKE,
    NONE,
    Interval,
    Options,
)


@register
class BayesianGaussianMixture(BaseMixture):
    """Variational Bayesian Gaussian mixture, fitted on data larger than memory.

    The constructor, attributes and methods are scikit-learn's
    :class:`sklearn.mixture.BayesianGaussianMixture`. The variational E-step is
    linear in the same features as EM's, so each iteration is one pass over the
    Dask chunks (restarts in lockstep), and the posterior update runs on the
    client from the merged statistics. With a Dirichlet-process prior, extra
    components are driven to a weight near zero: fit with a generous
    ``n_components`` and read ``n_effective_components_``.

    Parameters
    ----------
    n_components : int, default=1
        An upper bound on the number of components.
    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
    tol : float, default=1e-3
        Stop when the change of the lower bound is below ``tol``.
    reg_covar : float, default=1e-6
    max_iter : int, default=100
    n_init : int, default=1
    init_params : {"kmeans", "k-means++", "random", "random_from_data"}, default="kmeans"
    weight_concentration_prior_type : {"dirichlet_process", "dirichlet_distribution"}, default="dirichlet_process"
    weight_concentration_prior : float, default=None
        ``1 / n_components`` when None.
    mean_precision_prior : float, default=None
        1 when None.
    mean_prior : array-like of shape (n_features,), default=None
        The (weighted) mean of the data when None.
    degrees_of_freedom_prior : float, default=None
        ``n_features`` when None; must be above ``n_features - 1``.
    covariance_prior : float or array-like, default=None
        The data's covariance (``ddof=1``; an extra pass for full and tied) when
        None; (D, D) full and tied, (D,) diag, a float spherical.
    random_state : int, RandomState instance or None, default=None
    warm_start : bool, default=False
    verbose : int, default=0
    verbose_interval : int, default=10
    cache : {"auto", "memory", "none"}, default="auto"
    chunk_size : int, optional
        As in :class:`daskgmm.GaussianMixture`.
    missing : {"raise", "marginalize"}, default="raise"
        NaN in X is an error ("raise"), or a missing value ("marginalize"): the missing
        values of a row are latent variables of the variational posterior, so each row is
        scored by the density of its observed features under the expected precision, and
        the posterior update uses the conditional expectations of the missing ones (their
        conditional covariance included), as :class:`daskgmm.GaussianMixture` does;
        ``lower_bound_`` then includes the entropy of the missing values' posterior.
        ``predict``, ``predict_proba`` and ``score_samples`` give marginal results for rows
        with NaN. Infinity stays an error; rows with every feature missing are left out of
        the fit, with an ``EmptyRowsWarning`` (as :class:`daskgmm.GaussianMixture`); the
        initialisation uses the rows without NaN.

    Attributes
    ----------
    weights_ : ndarray of shape (n_components,)
    means_ : ndarray of shape (n_components, n_features)
    covariances_, precisions_, precisions_cholesky_ : ndarray
    converged_ : bool
    n_iter_ : int
    lower_bound_ : float
        scikit-learn's lower bound (the evidence lower bound up to constants,
        not divided by the number of rows) of the best run.
    lower_bounds_ : list of float
    weight_concentration_prior_, mean_precision_prior_, degrees_of_freedom_prior_ : float
    mean_prior_ : ndarray of shape (n_features,)
    covariance_prior_ : float or ndarray
    weight_concentration_ : tuple of two ndarrays, or ndarray of shape (n_components,)
    mean_precision_ : ndarray of shape (n_components,)
    degrees_of_freedom_ : ndarray of shape (n_components,), or float for "tied"
    n_effective_components_ : int
        Components whose weight is above :data:`daskgmm.models.variational.EFFECTIVE_WEIGHT` (0.01).
    history_, restarts_, init_seconds_, init_passes_, n_passes_, n_features_in_, feature_names_in_ :
        As in :class:`daskgmm.GaussianMixture` (``history_`` records the lower bound).
    """

    # the weights' scale is the prior's sample size: not rescaled (a weight sum under 1 is refused, saying why)
    _weights_scale_free = False

    _parameter_constraints: typing.ClassVar[dict] = {
        **BaseMixture._parameter_constraints,
        "weight_concentration_prior_type": [Options(*PRIOR_TYPES)],
        "weight_concentration_prior": [NONE, Interval(float, 0.0, None, "neither")],
        "mean_precision_prior": [NONE, Interval(float, 0.0, None, "neither")],
        "mean_prior": [NONE, ARRAY_LIKE],
        "degrees_of_freedom_prior": [NONE, Interval(float, 0.0, None, "neither")],
        "covariance_prior": [NONE, ARRAY_LIKE, Interval(float, 0.0, None, "neither")],
    }

    # its score is the variational E-step's log-sum (scikit-learn's), no density: a row with nothing observed gets
    # that of its expected log-weights and the complete row's offsets, the limit as a row's values go missing
    _nothing_observed_score = None

    def __init__(
        self,
        *,
        n_components=1,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        weight_concentration_prior_type="dirichlet_process",
        weight_concentration_prior=None,
        mean_precision_prior=None,
        mean_prior=None,
        degrees_of_freedom_prior=None,
        covariance_prior=None,
        random_state=None,
        warm_start=False,
        verbose=0,
        verbose_interval=10,
        cache="auto",
        chunk_size=None,
        missing="raise",
    ):
        super().__init__(n_components=n_components, covariance_type=covariance_type, tol=tol, reg_covar=reg_covar,
                         max_iter=max_iter, n_init=n_init, init_params=init_params, random_state=random_state,
                         warm_start=warm_start, verbose=verbose, verbose_interval=verbose_interval, cache=cache,
                         chunk_size=chunk_size, missing=missing)
        self.weight_concentration_prior_type = weight_concentration_prior_type
        self.weight_concentration_prior = weight_concentration_prior
        self.mean_precision_prior = mean_precision_prior
        self.mean_prior = mean_prior
        self.degrees_of_freedom_prior = degrees_of_freedom_prior
        self.covariance_prior = covariance_prior

    # ------------------------------------------------------------------ fit
    def _priors(self) -> dict:
        return {name: getattr(self, name + "_") for name in PRIORS}

    def _state(self, dtype):
        """The fitted posterior as a model state (warm start, predictions)."""
        params = fitting_variational.VariationalParams.of(self.get_params())
        priors = {k: np.asarray(v, np.float64) if k in ("mean_prior", "covariance_prior") else float(v)
                  for k, v in self._priors().items()}
        attributes = {name: getattr(self, name) for name in (
            "weight_concentration_", "mean_precision_", "means_", "degrees_of_freedom_", "covariances_",
            "precisions_cholesky_")}
        return fitting_variational.variational_warm_state(attributes, params, priors, dtype)

    def _fit(self, X, sample_weight, *, checkpoint=None, progress=None):
        self._validate_params()
        data, scan, _ = self._fit_rows(X, sample_weight)
        d = data.n_features
        params = fitting_variational.VariationalParams.of(self.get_params())
        warm = None
        continues = self._continues(d)
        if continues:
            self._check_prior_type("warm_start")
        priors = fitting_variational.variational_priors(
            data, scan, params, weight_concentration_prior=self.weight_concentration_prior,
            mean_precision_prior=self.mean_precision_prior, mean_prior=self.mean_prior,
            degrees_of_freedom_prior=self.degrees_of_freedom_prior, covariance_prior=self.covariance_prior,
        )
        self._set_priors(priors, data.dtype)
        if continues:
            warm = (self._state(data.dtype), self.lower_bound_)
        self._verbose_start(1 if warm is not None else self.n_init)
        fit = fitting_variational.fit_variational(
            data, scan, params, priors, random_state=self.random_state, warm=warm, checkpoint=checkpoint,
            progress=progress, on_iteration=self._verbose_iteration if self.verbose else None,
        )
        self._verbose_end(fit.runs)
        attributes = fitting_variational.variational_attributes(fit.best, fit.runs, fit.lower_bound, self.max_iter,
                                                                data.dtype)
        for name, value in attributes.items():
            setattr(self, name, value)
        self.init_seconds_, self.init_passes_, self.n_passes_ = fit.init_seconds, fit.init_passes, fit.n_passes
        self.n_features_in_ = d
        self._shift = kept_shift(scan)  # the predictions' shift where the passes' was robust (far rows)
        self.n_effective_components_ = effective_components(self.weights_)
        self._warn_if_not_converged()
        return data

    def _check_fitted(self):
        """As :meth:`BaseMixture._check_fitted`, and the prior type too (see :meth:`_check_prior_type`)."""
        super()._check_fitted()
        self._check_prior_type("fitted")

    def _check_prior_type(self, how: str) -> None:
        """The fitted posterior's ``weight_concentration_`` has the form of its prior type (a pair of arrays for
        the Dirichlet process, one array for the distribution). After ``set_params`` changed
        ``weight_concentration_prior_type``, predictions, a warm start and ``save`` read it as the other form:
        scikit-learn's (and ours before) failed inside NumPy one way and took the Dirichlet distribution's
        concentrations as the process's two arrays the other way, silently; the saved model did not load."""
        fitted = "dirichlet_process" if np.ndim(self.weight_concentration_) == 2 else "dirichlet_distribution"
        now = self.weight_concentration_prior_type
        if fitted == now:
            return
        name = type(self).__name__
        if how == "fitted":
            raise ValueError(f"{name} was fitted with weight_concentration_prior_type={fitted!r}, but its parameters "
                             f"say {now!r}: set_params after fit does not change the fitted model. Fit it again, "
                             "or set it back.")
        raise ValueError(f"{name}(warm_start=True) continues the fitted model, which has "
                         f"weight_concentration_prior_type={fitted!r}, but the parameters say {now!r}. Set "
                         "warm_start=False to fit a new model of that form.")

    def _set_priors(self, priors: dict, dtype) -> None:
        for name, value in fitting_variational.prior_attributes(priors, dtype).items():
            setattr(self, name, value)

    # ----------------------------------------------------------- predictions
    def _natural(self, centre):
        """The variational E-step's log-densities (``E[log π]`` and the Wishart terms included),
        as scikit-learn's ``predict``/``score_samples`` use them."""
        return self._state(np.asarray(self.means_).dtype).natural(centre)

    def _marginal(self, centre):
        """The variational E-step's form for rows with NaN (``missing="marginalize"``), else None."""
        if getattr(self, "missing", "raise") != "marginalize":
            return None
        return self._state(np.asarray(self.means_).dtype).marginal(centre)

    # ----------------------------------------------------------- persistence
    def export_state(self):
        """The fitted model as (arrays, JSON-able metadata), for :func:`daskgmm.io.modelfiles.save_model`."""
        check_is_fitted(self)
        arrays, meta = super().export_state()
        wc = self.weight_concentration_
        arrays["weight_concentration_"] = np.vstack(wc) if isinstance(wc, tuple) else np.asarray(wc)
        arrays["mean_precision_"] = np.asarray(self.mean_precision_)
        arrays["degrees_of_freedom_"] = np.asarray(self.degrees_of_freedom_)
        arrays["mean_prior_"] = np.asarray(self.mean_prior_)
        arrays["covariance_prior_"] = np.asarray(self.covariance_prior_)
        meta["priors"] = {
            "weight_concentration_prior_type": self.weight_concentration_prior_type,
            "weight_concentration_prior": float(self.weight_concentration_prior_),
            "mean_precision_prior": float(self.mean_precision_prior_),
            "degrees_of_freedom_prior": float(self.degrees_of_freedom_prior_),
        }
        return arrays, meta

    def import_state(self, arrays, meta):
        """Set the fitted attributes from :meth:`export_state`'s output (checked: shapes, finite values)."""
        super().import_state(arrays, meta)
        k, d, ct = self.n_components, int(meta["n_features"]), self.covariance_type
        dtype = np.dtype(meta.get("dtype", "float64"))
        dp = self.weight_concentration_prior_type == "dirichlet_process"
        expect = {
            "weight_concentration_": (2, k) if dp else (k,),
            "mean_precision_": (k,),
            "degrees_of_freedom_": cov.of(ct).scalar_shape(k),
            "mean_prior_": (d,),
            "covariance_prior_": cov.of(ct).component_shape(d),
        }
        for name, shape in expect.items():
            a = np.asarray(arrays[name])
            if a.shape != shape:
                raise ValueError(f"{name} has shape {a.shape}, expected {shape}")
            if not np.all(np.isfinite(a)) or (name != "mean_prior_" and np.any(a <= 0) and a.ndim < 2):
                raise ValueError(f"{name} holds values that are not finite and positive")
        priors = meta.get("priors", {})
        if priors.get("weight_concentration_prior_type") != self.weight_concentration_prior_type:
            raise ValueError("weight_concentration_prior_type differs between parameters and fitted arrays")
        wc = np.asarray(arrays["weight_concentration_"]).astype(dtype)
        self.weight_concentration_ = (wc[0], wc[1]) if dp else wc
        self.mean_precision_ = np.asarray(arrays["mean_precision_"]).astype(dtype)
        dof = np.asarray(arrays["degrees_of_freedom_"])
        self.degrees_of_freedom_ = float(dof) if dof.ndim == 0 else dof.astype(dtype)
        self._set_priors({
            "weight_concentration_prior": float(priors["weight_concentration_prior"]),
            "mean_precision_prior": float(priors["mean_precision_prior"]),
            "mean_prior": np.asarray(arrays["mean_prior_"], np.float64),
            "degrees_of_freedom_prior": float(priors["degrees_of_freedom_prior"]),
            "covariance_prior": np.asarray(arrays["covariance_prior_"], np.float64),
        }, dtype)
        self.n_effective_components_ = effective_components(self.weights_)
