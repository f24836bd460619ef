"""``StudentTMixture``: a mixture of multivariate Student-t distributions, fitted by EM passes over Dask chunks.

The robust counterpart of ``GaussianMixture`` (McLachlan & Peel 2000, ch. 7; studenttmixture
and R's teigen fit it in memory): heavy-tailed components whose rows far from a location
get small weights ``u`` in the M-step, so that outliers do not drag the means and inflate
the covariances. The estimator is ``GaussianMixture``'s (same parameters, methods and
attributes, the scales as ``covariances_``) plus ``df`` and ``fixed_df``, and ``df_``.
"""

from __future__ import annotations

import typing

import numpy as np
from sklearn.utils.validation import check_is_fitted

from daskgmm.base import BaseMixture, InformationCriteriaMixin
from daskgmm.fitting import mixture as fitting
from daskgmm.fitting import studentt as fitting_studentt
from daskgmm.fitting.attributes import kept_shift, set_attributes
from daskgmm.io.modelfiles import register
from daskgmm.models.studentt import DF_BOUNDS, t_form, t_marginal
from daskgmm.validation.params import BOOLEAN, Interval, InvalidParameterError
from daskgmm.validation.scan import one_point


@register
class StudentTMixture(InformationCriteriaMixin, BaseMixture):
    """Mixture of multivariate Student-t distributions fitted by EM on data larger than memory.

    Each EM iteration is one pass over the Dask chunks (restarts in lockstep, as for
    :class:`daskgmm.GaussianMixture`): the E-step gives the responsibilities ``r`` and the
    weights ``u = (nu + D)/(nu + δ²)`` of every row (``δ²`` its squared Mahalanobis distance,
    from the same features and GEMM as a Gaussian log-density), and the M-step sets

    - the weights ``π_k = Σ r / N``;
    - the locations ``μ_k = Σ r u x / Σ r u``: a row far from ``μ_k`` counts little;
    - the scales ``Σ_k = Σ r u (x - μ_k)(x - μ_k)ᵀ / Σ r`` (+ ``reg_covar``);
    - the degrees of freedom ``nu_k``, a 1-D root per component (unless ``fixed_df``).

    Parameters
    ----------
    n_components : int, default=1
    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
        The shape of the scale matrices.
    tol : float, default=1e-3
        EM stops when the change of the mean log-likelihood per sample is below ``tol``.
    reg_covar : float, default=1e-6
        Added to the diagonal of the scales.
    max_iter : int, default=100
    n_init : int, default=1
        Restarts; the one with the largest final mean log-likelihood is kept.
    init_params : {"kmeans", "k-means++", "random", "random_from_data"}, default="kmeans"
        As in :class:`daskgmm.GaussianMixture`: the initial weights, locations and scales are
        those a Gaussian mixture starts from. "kmeans" is made robust to gross outliers, which
        draw k-means centres to them: of several k-means starts on the first scan's sample,
        each fitted by EM on (up to 8,192 rows of) that sample, the one of highest t
        likelihood there is the start (no pass over the data; the same for any chunking).
        "k-means++" and "random_from_data" start from the labels of the nearest chosen row
        (one pass; ``GaussianMixture``'s first E-step from its start): the start itself,
        one row per component with scales of ``reg_covar``, would take every ``df_`` to about
        0.1 in the first update, where EM barely moves.
    df : float, default=4.0
        The degrees of freedom every component starts with (studenttmixture's name). Estimated
        degrees of freedom are kept in [0.01, 1e6] (``daskgmm.models.studentt.DF_BOUNDS``; at 1e6
        a component is Gaussian to about 1e-6 in its log-density), so unless ``fixed_df`` the
        start must lie there too; with ``fixed_df`` any finite positive value is kept as given.
        Unless ``fixed_df``, each start's degrees of freedom are then those of highest t likelihood on
        the first scan's sample given the start's locations and scales (``df`` is kept only where
        that is no higher): EM's own update moves a large ``nu`` so slowly (by about ``Var(δ²)/2``
        per iteration) that a fit from ``df=1e5`` stopped near it on heavy-tailed data.
    fixed_df : bool, default=False
        Keep every component's degrees of freedom at ``df`` (studenttmixture's name;
        its default is True).
    random_state : int, RandomState instance or None, default=None
    warm_start : bool, default=False
        Continue from the fitted parameters on the next ``fit`` (``n_init`` ignored).
    verbose : int, default=0
    verbose_interval : int, default=10
    cache : {"auto", "memory", "none"}, default="auto"
    chunk_size : int, optional
        As in :class:`daskgmm.GaussianMixture`.
    missing : {"raise", "marginalize"}, default="raise"
        NaN in X is an error ("raise"), or a missing value ("marginalize"): each row is
        scored by the t marginal of its observed features (same ``nu``, the observed block
        of the scale), its weight is ``u = (nu + d_o)/(nu + δ_o)`` with ``d_o`` its number of
        observed features, and the M-step uses the conditional expectations of the missing
        values (ECM for incomplete data, Liu & Rubin 1995; Liu 1997); ``predict``,
        ``predict_proba`` and ``score_samples`` give marginal results for rows with NaN.
        Infinity stays an error; rows with every feature missing are left out of the fit, with an
        ``EmptyRowsWarning`` (as :class:`daskgmm.GaussianMixture`); the initialisation uses the
        rows without NaN.

    Attributes
    ----------
    weights_ : ndarray of shape (n_components,)
    means_ : ndarray of shape (n_components, n_features)
        The locations.
    covariances_ : ndarray
        The scale matrices, in the shape of ``covariance_type`` (a component's covariance
        is ``df_ / (df_ - 2)`` times its scale when ``df_ > 2``).
    precisions_ : ndarray
        Inverses of the scales.
    precisions_cholesky_ : ndarray
    df_ : ndarray of shape (n_components,)
        Degrees of freedom of each component (estimated ones in [0.01, 1e6]: a bound means
        the likelihood asked for more, or less).
    converged_ : bool
    n_iter_ : int
    lower_bound_ : float
        Mean log-likelihood per sample of the best run (before its last M-step).
    lower_bounds_, history_, restarts_, init_seconds_, init_passes_, n_passes_, n_features_in_,
    feature_names_in_ :
        As in :class:`daskgmm.GaussianMixture`.
    """

    _parameter_constraints: typing.ClassVar[dict] = {
        **BaseMixture._parameter_constraints,
        "df": [Interval(float, 0.0, np.inf, "neither")],  # finite: an infinite df is no t density here
        "fixed_df": [BOOLEAN],
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
        df=4.0,
        fixed_df=False,
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
        self.df = df
        self.fixed_df = fixed_df

    def _validate_params(self):
        super()._validate_params()
        lo, hi = DF_BOUNDS
        # an estimated df is kept in DF_BOUNDS: a start beyond them was taken to the bound by the first
        # update without a word (df=1e8 fitted 1e6)
        if not self.fixed_df and not lo <= self.df <= hi:
            raise InvalidParameterError(
                f"The 'df' parameter of {type(self).__name__} must be a float in the range [{lo:g}, {hi:g}] "
                f"with fixed_df=False (the range its estimated degrees of freedom are kept in). Got {self.df!r} "
                "instead; set fixed_df=True to keep it as given."
            )

    def _fit(self, X, sample_weight, *, checkpoint=None, progress=None):
        """The fit (:func:`daskgmm.fitting.studentt.fit_studentt`); returns the prepared data."""
        self._validate_params()
        data, scan, _ = self._fit_rows(X, sample_weight)
        d = data.n_features
        params = fitting_studentt.StudentTParams.of(self.get_params())
        warm = None
        if self._continues(d):
            warm = (fitting_studentt.studentt_warm_state(self.weights_, self.means_, self.covariances_,
                                                         self.precisions_cholesky_, self.df_, params, data.dtype),
                    self.lower_bound_)
        self._verbose_start(1 if warm is not None else self.n_init)
        fit = fitting_studentt.fit_studentt(
            data, scan, params, random_state=self.random_state, warm=warm, checkpoint=checkpoint,
            progress=progress, on_iteration=self._verbose_iteration if self.verbose else None,
        )
        self._verbose_end(fit.runs)
        set_attributes(self, fitting_studentt.studentt_attributes(fit, d, self.max_iter, data.dtype))
        self._shift = kept_shift(scan)  # the predictions' shift where the passes' was robust (far rows)
        self._warn_if_not_converged()
        # the t likelihood has the Gaussian's singularity: a component on one row, its scale reg_covar's, or on
        # rows that are one point (a saturated patch), its scale reg_covar's and a share of its tails'
        reg = 0.0 if one_point(scan) else self.reg_covar
        rows = fitting.component_rows(data, [fit.best.state], scan.centre)  # weighted rows: counted (one pass)
        if rows is not None:
            rows, self.n_passes_ = rows[0], self.n_passes_ + 1
        x, w = fitting_studentt.sample_rows(data)
        points = fitting_studentt.t_on_a_point(self.weights_, self.means_, self.covariances_,
                                               self.precisions_cholesky_, self.covariance_type, self.df_, reg, x, w,
                                               scan.centre)
        found = fitting.collapsed_on_rows(self.weights_, self.covariances_, self.covariance_type, data.n_rows, rows,
                                         reg, points=points)
        fitting.warn_collapsed({"": found}, self.reg_covar, stacklevel=3, reinit=False)
        return data

    # ----------------------------------------------------------- predictions
    def _natural(self, centre):
        """The t log-densities, per component (exact far from the centre too)."""
        return t_form(self.weights_, self.means_, self.precisions_cholesky_, self.covariance_type, self.df_, centre)

    def _marginal(self, centre):
        """The t marginal of the observed features, for rows with NaN (``missing="marginalize"``), else None."""
        if getattr(self, "missing", "raise") != "marginalize":
            return None
        return t_marginal(self.weights_, self.means_, self.precisions_cholesky_, self.covariance_type, self.df_,
                          centre)

    def _n_parameters(self) -> int:
        return fitting_studentt.n_parameters(self.covariance_type, self.n_components, self.means_.shape[1],
                                             self.fixed_df)

    def _df(self):
        return self.df_

    # ----------------------------------------------------------- persistence
    def export_state(self):
        """The fitted model as (arrays, JSON-able metadata), for :func:`daskgmm.io.modelfiles.save_model`."""
        check_is_fitted(self)
        arrays, meta = super().export_state()
        arrays["df_"] = np.asarray(self.df_)
        return arrays, meta

    def import_state(self, arrays, meta):
        """Set the fitted attributes from :meth:`export_state`'s output (checked: shapes, finite values)."""
        if "df_" not in arrays:
            raise ValueError("df_ is missing")
        df = fitting_studentt.check_df(arrays["df_"], self.n_components)
        super().import_state(arrays, meta)
        self.df_ = df.astype(np.asarray(self.means_).dtype)
