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

from daskgmm import fitting, fitting_studentt
from daskgmm.fitting_attributes import set_attributes
from daskgmm.mixture import GaussianMixture
from daskgmm.persist import register
from daskgmm.studentt import t_form
from daskgmm.validation import (
    BOOLEAN,
    Interval,
    check_missing_supported,
    validate_params,
    warn_convergence,
)


@register
class StudentTMixture(GaussianMixture):
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
    df : float, default=4.0
        The degrees of freedom every component starts with (studenttmixture's name).
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
        NaN in X is an error. "marginalize" raises a ValueError: marginalising missing values
        under t components is not implemented (:class:`daskgmm.GaussianMixture` does it).

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
        Degrees of freedom of each component.
    converged_ : bool
    n_iter_ : int
    lower_bound_ : float
        Mean log-likelihood per sample of the best run (before its last M-step).
    lower_bounds_, history_, restarts_, init_seconds_, init_passes_, n_passes_, n_features_in_,
    feature_names_in_ :
        As in :class:`daskgmm.GaussianMixture`.
    """

    _parameter_constraints: typing.ClassVar[dict] = {
        **{name: GaussianMixture._parameter_constraints[name] for name in (
            "n_components", "covariance_type", "tol", "reg_covar", "max_iter", "n_init", "init_params",
            "random_state", "warm_start", "verbose", "verbose_interval", "cache", "chunk_size", "missing")},
        "df": [Interval(float, 0.0, None, "neither")],
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
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.df = df
        self.fixed_df = fixed_df
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.cache = cache
        self.chunk_size = chunk_size
        self.missing = missing

    @property
    def partial_fit(self):
        """Not offered: stepwise updates of a t mixture are not implemented.

        (``hasattr(est, "partial_fit")`` is False, as scikit-learn's meta-estimators expect
        of an estimator that cannot learn incrementally.)
        """
        raise AttributeError(
            "'StudentTMixture' object has no attribute 'partial_fit': online updates are implemented "
            "for GaussianMixture only"
        )

    def _validate_params(self):
        validate_params(self)
        check_missing_supported(self, "marginalising missing values under t components is not implemented")

    def _fit(self, X, sample_weight, *, checkpoint=None, progress=None):
        """The fit (:func:`daskgmm.fitting_studentt.fit_studentt`); returns the prepared data."""
        self._validate_params()
        data, scan, _ = self._prepare(X, sample_weight)
        d = data.n_features
        fitting.check_n_samples(data.n_rows, self.n_components)
        params = fitting_studentt.StudentTParams.of(self.get_params())
        warm = None
        if self.warm_start and hasattr(self, "converged_"):
            fitting.check_warm_features(type(self).__name__, self.means_.shape[1], d)
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
        if not self.converged_ and self.max_iter > 0:
            warn_convergence(
                "Best performing initialization did not converge. Try different init "
                "parameters, or increase max_iter, tol, or check for degenerate data."
            )
        return data

    # ----------------------------------------------------------- predictions
    def _natural(self, centre):
        """The t log-densities, per component (exact far from the centre too)."""
        return t_form(self.weights_, self.means_, self.precisions_cholesky_, self.covariance_type, self.df_, centre)

    def _marginal(self, centre):
        return None

    def _n_parameters(self) -> int:
        return fitting_studentt.n_parameters(self.covariance_type, self.n_components, self.means_.shape[1],
                                             self.fixed_df)

    def sample(self, n_samples=1):
        """Draw rows from the fitted t mixture.

        Returns
        -------
        X : ndarray, shape (n_samples, n_features)
        y : ndarray of int, shape (n_samples,)
            Component of each row.
        """
        check_is_fitted(self)
        return fitting_studentt.sample_studentt(self.weights_, self.means_, self.covariances_, self.covariance_type,
                                                self.df_, n_samples, self.random_state)

    def write_sample(self, path, n_samples, *, random_state=None, chunk_rows=1_000_000, storage_options=None) -> int:
        """Stream ``n_samples`` rows drawn from the t mixture to Parquet parts, atomically
        (as :meth:`daskgmm.GaussianMixture.write_sample`).

        Returns
        -------
        int
            Rows written.
        """
        from daskgmm.io import rows_per_part
        from daskgmm.outputs import write_parts

        check_is_fitted(self)
        n_samples = int(n_samples)
        if n_samples < 1:
            raise ValueError(f"n_samples must be at least 1, got {n_samples}")
        sizes = rows_per_part(n_samples, max(1, -(-n_samples // int(chunk_rows))))
        parts = fitting_studentt.sample_parts(sizes, random_state, self.weights_, self.means_, self.covariances_,
                                              self.covariance_type, self.df_, self._column_names())
        return write_parts(path, parts, storage_options)

    # ----------------------------------------------------------- persistence
    def export_state(self):
        """The fitted model as (arrays, JSON-able metadata), for :func:`daskgmm.persist.save_model`."""
        check_is_fitted(self)
        arrays, meta = super().export_state()
        arrays["df_"] = np.asarray(self.df_)
        meta.pop("online", None)
        return arrays, meta

    def import_state(self, arrays, meta):
        """Set the fitted attributes from :meth:`export_state`'s output (checked: shapes, finite values)."""
        if "df_" not in arrays:
            raise ValueError("df_ is missing")
        df = fitting_studentt.check_df(arrays["df_"], self.n_components)
        super().import_state(arrays, meta)
        for name in ("n_batches_", "n_rows_seen_"):  # a t mixture learns from no stream of batches
            if hasattr(self, name):
                delattr(self, name)
        self.df_ = df.astype(np.asarray(self.means_).dtype)
