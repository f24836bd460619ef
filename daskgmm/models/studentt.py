"""The Student-t mixture as a model state: what it asks of a pass, its EM update, its degrees of freedom.

Pure NumPy and SciPy's special functions (on the client only: the pass itself,
:mod:`daskgmm.kernels.studentt`, gets its constants from here). The t mixture is the
Gaussian scale mixture of McLachlan & Peel (2000, ch. 7): given its component, a row is
Gaussian with covariance ``Σ_k / u`` and ``u ~ Gamma(nu_k/2, nu_k/2)``. EM on (component,
u) gives, per pass, the responsibilities ``r`` and ``E[u] = (nu + D)/(nu + δ²)``; the
update is

- ``π_k = Σ r / N``, ``μ_k = Σ r u x / Σ r u``, ``Σ_k = Σ r u (x - μ)(x - μ)ᵀ / Σ r``;
- ``nu_k`` the root of ``log(nu/2) - ψ(nu/2) + 1 + Σ r (log u - u) / Σ r + ψ((nu' + D)/2)
  - log((nu' + D)/2) = 0`` (``nu'`` the degrees of freedom of the E-step), found for
  every component at once by Newton's method on ``log nu`` in a bracket in :data:`DF_BOUNDS` (:func:`_gap_roots`).

The expected complete-data log-likelihood separates into the weights, (locations,
scales) given ``u``, and ``nu``, so this is a full M-step: the log-likelihood never
decreases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.optimize import brentq
from scipy.special import digamma, gammaln, zeta

from daskgmm.kernels import covariance as cov
from daskgmm.kernels import params as forms
from daskgmm.kernels.studentt import (
    StudentTForm,
    StudentTMarginal,
    StudentTSpec,
    StudentTStats,
    mahalanobis_params,
    scale_update,
)
from daskgmm.models.states import OBJECTIVE_RTOL

#: The interval the degrees of freedom are kept in. Below 1 a component has no mean,
#: and the likelihood may still ask for less on data with a few huge outliers; above
#: 1e6 a t component is a Gaussian one to about D²/nu ≈ 1e-6 in every log-density.
DF_BOUNDS = (1e-2, 1e6)

#: Above this, ``log Γ(a + h) - log Γ(a)`` is taken from Stirling's series: the difference of
#: two ``gammaln`` values of size ``a log a`` would lose ``eps a log a`` (1e-9 at a = 5e5).
_STIRLING_FROM = 100.0


def log_gamma_ratio(a, h: float) -> np.ndarray:
    """``log Γ(a + h) - log Γ(a)`` for ``a > 0`` (array) and ``h >= 0``, exact for large ``a``.

    Stirling's series (``log Γ(z) = (z - ½) log z - z + ½ log 2π + 1/(12z) - 1/(360z³) +
    1/(1260z⁵) - …``) differenced term by term; its first omitted term is below 1e-17 from
    ``a = 100``.
    """
    a = np.asarray(a, dtype=np.float64)
    b = a + h
    out = gammaln(b) - gammaln(a)
    big = a >= _STIRLING_FROM
    if np.any(big):
        x, y = a[big], b[big]

        def tail(z):
            return 1.0 / (12.0 * z) - 1.0 / (360.0 * z**3) + 1.0 / (1260.0 * z**5)

        # (y - ½) log y - (x - ½) log x - h = (x - ½) log1p(h/x) + h log y - h
        out[big] = (x - 0.5) * np.log1p(h / x) + h * np.log(y) - h + tail(y) - tail(x)
    return out


def t_log_norm(df, n_features: int) -> np.ndarray:
    """``log Γ((nu + D)/2) - log Γ(nu/2) - D/2 log(nu π)`` per component: the t density's log normaliser
    without its scale (``+ log det U``)."""
    nu = np.asarray(df, dtype=np.float64)
    return log_gamma_ratio(0.5 * nu, 0.5 * n_features) - 0.5 * n_features * (np.log(nu) + math.log(math.pi))


def t_constants(weights, prec_chol, covariance_type, df, n_features: int) -> np.ndarray:
    """``log π_k + log Γ((nu_k + D)/2) - log Γ(nu_k/2) - D/2 log(nu_k π) + log det U_k`` (K,)."""
    with np.errstate(divide="ignore"):
        log_w = np.maximum(np.log(np.asarray(weights, dtype=np.float64)), -1e30)
    log_det = cov.log_det_cholesky(prec_chol, covariance_type, n_features)
    return log_w + t_log_norm(df, n_features) + log_det


def t_form(weights, means, prec_chol, covariance_type, df, centre) -> StudentTForm:
    """The weighted t log-densities in the per-component form, about ``centre`` (predictions)."""
    means = np.asarray(means, dtype=np.float64)
    d = means.shape[1]
    df = np.asarray(df, dtype=np.float64)
    return StudentTForm(means - np.asarray(centre, dtype=np.float64), np.asarray(prec_chol, dtype=np.float64),
                        t_constants(weights, prec_chol, covariance_type, df, d), covariance_type, df)


def t_marginal(weights, means, prec_chol, covariance_type, df, centre) -> StudentTMarginal:
    """The t mixture's form for rows with missing values, about ``centre`` (the t marginal of the observed
    features: :class:`daskgmm.kernels.studentt.StudentTMarginal`), with its per-count tables."""
    form = t_form(weights, means, prec_chol, covariance_type, df, centre)
    d = form.means.shape[1]
    nu = form.df
    with np.errstate(divide="ignore"):
        log_w = np.maximum(np.log(np.asarray(weights, dtype=np.float64)), -1e30)
    log_det = cov.log_det_cholesky(prec_chol, covariance_type, d)
    # column D is t_constants' sum, term for term: complete rows keep their bits
    const_by = np.stack([log_w + t_log_norm(nu, j) + log_det for j in range(d + 1)], axis=1)
    a = 0.5 * (nu[:, None] + np.arange(d + 1))
    g = digamma(a) - np.log(a)
    return StudentTMarginal(form.means, form.factor, form.const, covariance_type, nu, const_by, g - g[:, -1:])


def _df_gap(nu):
    """``log(nu/2) - ψ(nu/2)``: positive, decreasing from +∞ to 0 (about 1/nu for large nu)."""
    return math.log(0.5 * nu) - float(digamma(0.5 * nu))


def update_df(df, resp, log_u, n_features: int, bounds=DF_BOUNDS) -> np.ndarray:
    """The degrees of freedom that maximise the expected complete-data log-likelihood, per component.

    Parameters
    ----------
    df : ndarray, shape (K,)
        The degrees of freedom of the E-step that gave the statistics.
    resp : ndarray, shape (K,)
        ``Σ w r``.
    log_u : ndarray, shape (K,)
        ``Σ w r (log u - u + 1)``.
    n_features : int
    bounds : (float, float)
        The root is kept in this interval (a bound is returned when the root lies beyond it).

    Returns
    -------
    ndarray, shape (K,)
    """
    lo, hi = bounds
    a = 0.5 * (np.asarray(df, np.float64) + n_features)
    # nu solves _df_gap(nu) = target: the mean of (log u - u + 1) plus ψ(a) - log a, negated (> 0)
    target = -(np.asarray(log_u, np.float64) / np.maximum(resp, np.finfo(np.float64).tiny) + digamma(a) - np.log(a))
    out = np.full(len(a), hi)
    finite = np.isfinite(target)
    at_lo = finite & (target >= _df_gap(lo))
    out[at_lo] = lo
    inside = finite & ~at_lo & (target > _df_gap(hi))
    if np.any(inside):
        out[inside] = _gap_roots(target[inside], np.asarray(df, np.float64)[inside], lo, hi)
    return out


def _gap_roots(c, start, lo: float, hi: float, max_iter: int = 100) -> np.ndarray:
    """The roots of ``log(nu/2) - ψ(nu/2) = c`` (array; each in ``(lo, hi)``), all at once, by Newton's method
    on ``log nu`` from ``start`` (the E-step's degrees of freedom: EM moves them little), each kept in a bracket
    that a step leaving it bisects; to a relative 1e-12 as :func:`_log_root`'s ``brentq`` (one root at a time,
    ~14 evaluations of SciPy's scalar digamma each, 1-2 ms an update at K = 16: most of the client's time in the
    t start's ~600 iterations on the sample).

    The gap is decreasing in ``log nu`` with slope ``1 - h ψ'(h)``, ``h = nu/2``; from ``h = 100`` both are
    taken from their asymptotic series (:func:`_precise_gap`), where ``log h - ψ(h)``, about ``1/nu``, would
    keep only ``eps log h`` of it and leave its root defined to ~1e-8 at ``nu = 1e5``. A root is done when its
    step falls below 1e-13 or the gap is within its own rounding of ``c``.
    """
    c = np.asarray(c, np.float64)
    a, b = np.full(len(c), math.log(lo)), np.full(len(c), math.log(hi))
    t = np.log(np.clip(start, lo, hi))
    t = np.where(np.isfinite(t), t, 0.5 * (a + b))
    done = np.zeros(len(c), dtype=bool)
    eps4 = 4 * np.finfo(np.float64).eps
    for _ in range(max_iter):
        h = 0.5 * np.exp(t)
        big = h >= _STIRLING_FROM
        z = 1.0 / h
        z2 = z * z
        lh, ps = np.log(h), digamma(h)
        gap = _precise_gap(h)
        slope = np.where(big, -z * (0.5 + z * (1.0 / 6.0 - z2 / 30.0)), 1.0 - h * zeta(2.0, np.minimum(h, 1e3)))
        g = gap - c  # > 0 below the root
        below = g > 0
        a, b = np.where(below, t, a), np.where(below, b, t)
        with np.errstate(divide="ignore", invalid="ignore"):
            new = t - g / slope
        new = np.where((new > a) & (new < b), new, 0.5 * (a + b))
        flat = np.abs(g) <= eps4 * (np.where(big, gap, np.abs(lh) + np.abs(ps)) + np.abs(c))
        new = np.where(done | flat, t, new)
        done |= flat | (np.abs(new - t) <= 1e-13 * np.maximum(1.0, np.abs(t))) | (b - a <= 1e-13)
        t = new
        if done.all():
            break
    return np.clip(np.exp(t), lo, hi)


def _log_root(f, lo: float, hi: float) -> float:
    """The root of ``f`` in ``(lo, hi)`` (``f(lo)`` and ``f(hi)`` of opposite signs) by ``brentq`` on ``log nu``, to a
    relative 1e-12: over the eight decades of :data:`DF_BOUNDS`, ``brentq`` on ``nu`` itself took ~30 evaluations
    (its first steps bisect a bracket a million wide), on ``log nu`` ~15; each of ECME's costs a pass over the
    sample's distances."""
    a, b = math.log(lo), math.log(hi)

    def nu(t):  # the bracket's ends exactly (exp(log(lo)) may round off the side the caller checked)
        return lo if t == a else hi if t == b else math.exp(t)

    return nu(brentq(lambda t: f(nu(t)), a, b, xtol=1e-12, rtol=4 * np.finfo(float).eps))


def _precise_gap(x) -> np.ndarray:
    """``log x - ψ(x)`` (array), to a relative ``eps`` for large ``x`` too: from :data:`_STIRLING_FROM` its
    asymptotic series ``1/(2x) + 1/(12x²) - 1/(120x⁴) + 1/(252x⁶)`` (first omitted term below 1e-18 there),
    where the difference of two values near ``log x`` would keep only ``eps log x`` of it absolutely."""
    x = np.asarray(x, dtype=np.float64)
    out = np.log(x) - digamma(x)
    big = x >= _STIRLING_FROM
    if np.any(big):
        z = 1.0 / x[big]
        z2 = z * z
        out[big] = z * (0.5 + z * (1.0 / 12.0 - z2 * (1.0 / 120.0 - z2 / 252.0)))
    return out


def observed_df(df, d2, resp, n_features: int, bounds=DF_BOUNDS) -> np.ndarray:
    """The degrees of freedom that maximise the t likelihood of rows given their squared distances (ECME's step).

    EM's update (:func:`update_df`) maximises the complete-data likelihood, in which the E-step's
    ``nu'`` stays (``u`` and ``ψ((nu' + D)/2)``): as ``nu'`` grows the complete data say far more
    about ``nu`` than the rows do, and a step moves it by about ``Var(δ²)/2 - D`` whatever its size
    (96 per iteration from 1e5 on rows of a t with 3 degrees of freedom, each gaining far less than
    ``tol``: a fit from ``df=1e5`` stopped at 99,400). This step instead maximises, per component,
    ``Σ_i r_ik log t(x_i; μ_k, Σ_k, nu)`` over ``nu`` with ``r``, ``μ`` and ``Σ`` held (the ECME step
    of Liu & Rubin 1994, as Peel & McLachlan 2000 take it for mixtures): it needs every row's ``δ²``, so it runs where
    the rows are at hand (the start's fit on the scan's sample). With ``r`` held it is an EM step
    on the component labels alone: the likelihood never decreases.

    Parameters
    ----------
    df : ndarray, shape (K,)
        The current degrees of freedom (kept where the likelihood is not higher at the root by more than its
        rounding: ``OBJECTIVE_RTOL`` of ``Σ r |log t|``).
    d2 : ndarray, shape (K, n)
        Squared Mahalanobis distances ``δ²`` of the rows to each component.
    resp : ndarray, shape (K, n)
        Their weights per component (responsibilities times sample weights).
    n_features : int, or ndarray of shape (n,)
        The rows' dimension; per row, the observed features' count of rows with missing values (``d2`` then the
        t marginal's distances of their observed features, :func:`daskgmm.kernels.missing.marginal_distances`).
    bounds : (float, float)
        The root is kept in this interval (a bound is returned when the likelihood rises beyond it).

    Returns
    -------
    ndarray, shape (K,)
    """
    lo, hi = bounds
    per_row = np.ndim(n_features) > 0
    if per_row:  # each distinct dimension's terms once
        dims, at = np.unique(np.asarray(n_features, np.float64), return_inverse=True)
        d = dims[at]
    else:
        d = float(n_features)
    d2 = np.asarray(d2, dtype=np.float64)
    resp = np.asarray(resp, dtype=np.float64)
    df = np.asarray(df, dtype=np.float64)
    out = df.copy()
    for k in range(len(df)):
        r, q = resp[k], d2[k]
        if not np.sum(r) > 0:
            continue

        def score(nu, r=r, q=q):
            # 2 d/dnu log t, term by term of size 1/nu (their sum is of 1/nu²): ψ((nu + D)/2) - ψ(nu/2) as
            # log1p(D/nu) - gap((nu + D)/2) + gap(nu/2), then - log1p(δ²/nu) + (δ² - D)/(nu + δ²)
            if per_row:
                g = (np.log1p(dims / nu) - _precise_gap(0.5 * (nu + dims)) + _precise_gap(np.array([0.5 * nu])))[at]
            else:
                g = math.log1p(d / nu) - _precise_gap(np.array([0.5 * (nu + d), 0.5 * nu])) @ np.array([1.0, -1.0])
            return float(r @ (g - np.log1p(q / nu) + (q - d) / (nu + q)))

        def loglik(nu, r=r, q=q):
            if per_row:
                const = np.array([log_gamma_ratio(np.array([0.5 * nu]), 0.5 * j)[0] - 0.5 * j * math.log(nu)
                                  for j in dims])[at]
            else:
                const = log_gamma_ratio(np.array([0.5 * nu]), 0.5 * d)[0] - 0.5 * d * math.log(nu)
            terms = const - 0.5 * (nu + d) * np.log1p(q / nu)
            return float(r @ terms), float(r @ np.abs(terms))

        if score(hi) >= 0:
            nu = hi
        elif score(lo) <= 0:
            nu = lo
        else:
            nu = _log_root(score, lo, hi)
        if not np.isfinite(df[k]):
            out[k] = nu
            continue
        (at_root, scale), (now, _) = loglik(nu), loglik(float(df[k]))
        # a gain of rounding's size is no gain (the loop's OBJECTIVE_RTOL): a component on one point at its mean
        # has, in two dimensions, a likelihood flat in nu, which its rounding (tens of ulps in log Γ's series
        # and the BLAS's and CPU's in δ²) tilts either way
        if at_root - now > OBJECTIVE_RTOL * scale:
            out[k] = nu
    return out


@dataclass(frozen=True)
class StudentTState:
    """Parameters of one Student-t mixture, and how to update them.

    Attributes
    ----------
    weights : ndarray, shape (K,)
    means : ndarray, shape (K, D)
        The locations.
    covariances : ndarray
        The scale matrices ``Σ_k`` in the shape of ``covariance_type`` (the covariance of a
        component is ``nu/(nu - 2) Σ_k`` when ``nu > 2``).
    precisions_cholesky : ndarray
        Cholesky factors of the inverse scales.
    df : ndarray, shape (K,)
        Degrees of freedom.
    covariance_type : str
    reg_covar : float
    tol : float
        Convergence threshold on the change of the mean log-likelihood.
    eps_dtype : numpy dtype
        The data dtype (the ``10 * eps`` guard, float32 error hints, the precise-path test).
    fixed_df : bool
        Keep ``df`` as it is (update weights, locations and scales only).
    events : tuple of str
    missing : {"raise", "marginalize"}
        "marginalize": rows with NaN are scored by the t marginal of their observed features and
        enter the M-step with the conditional expectations of the missing ones (ECM for incomplete
        data, Liu & Rubin 1995; Liu 1997).
    """

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    precisions_cholesky: np.ndarray
    df: np.ndarray
    covariance_type: str
    reg_covar: float = 1e-6
    tol: float = 1e-3
    eps_dtype: np.dtype = field(default=np.dtype(np.float64))
    fixed_df: bool = False
    events: tuple = ()
    missing: str = "raise"

    def __post_init__(self):
        # one memory layout (C-contiguous float64), so that a checkpoint reloads the same bits
        for name in ("weights", "means", "covariances", "precisions_cholesky", "df"):
            value = np.require(np.asarray(getattr(self, name), dtype=np.float64), requirements="C")
            object.__setattr__(self, name, value)
        object.__setattr__(self, "eps_dtype", np.dtype(self.eps_dtype))

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @classmethod
    def from_covariances(cls, weights, means, covariances, covariance_type, df, **kw) -> StudentTState:
        """A state from scales (``df``: a number for every component, or one per component)."""
        eps_dtype = np.dtype(kw.get("eps_dtype", np.float64))
        prec_chol = cov.precisions_cholesky(covariances, covariance_type, reg_covar=kw.get("reg_covar"),
                                            float32=eps_dtype == np.float32)
        k = np.shape(means)[0]
        return cls(weights, means, covariances, prec_chol, np.broadcast_to(np.asarray(df, np.float64), (k,)),
                   covariance_type, **kw)

    # -- the loop's interface ---------------------------------------------
    def spec(self, centre, n_worst: int = 0) -> StudentTSpec:
        ct, d = self.covariance_type, self.means.shape[1]
        const = t_constants(self.weights, self.precisions_cholesky, ct, self.df, d)
        maha = mahalanobis_params(self.means, self.precisions_cholesky, ct, centre)
        # a logit's error is (nu + D)/(2(nu + δ²)) times that of δ², which is twice a Gaussian logit's:
        # the Gaussian test, scaled by the largest (nu + D)/nu
        eps = np.finfo(self.eps_dtype).eps
        worst = eps * forms.conditioning(self.means, self.precisions_cholesky, ct, centre)
        worst *= float(np.max((self.df + d) / self.df))
        precise = None
        if worst > forms.LOGIT_TOLERANCE.get(self.eps_dtype, 1e-8):
            precise = t_form(self.weights, self.means, self.precisions_cholesky, ct, self.df, centre)
        marginal = None
        if self.missing == "marginalize":
            marginal = t_marginal(self.weights, self.means, self.precisions_cholesky, ct, self.df, centre)
        return StudentTSpec(maha, self.df, const, ct, precise, marginal)

    #: what :meth:`objective` is, for progress lines
    objective_name = "loglik"

    def objective(self, stats: StudentTStats) -> float:
        """Mean log-likelihood per sample (the lower bound, as ``GaussianMixture``'s)."""
        return stats.loglik / stats.weight if stats.weight > 0 else -np.inf

    def converged(self, new: StudentTState, change: float) -> bool:
        return abs(change) < self.tol

    def update(self, stats: StudentTStats) -> StudentTState:
        """The M-step. Raises scikit-learn's ValueError naming a component whose scale is not positive definite."""
        weights, means, scales = scale_update(stats, self.reg_covar, self.eps_dtype)
        prec_chol = cov.precisions_cholesky(scales, self.covariance_type, reg_covar=self.reg_covar,
                                            float32=self.eps_dtype == np.float32)
        df = self.df
        if not self.fixed_df:
            df = update_df(self.df, stats.resp, stats.log_u, self.means.shape[1])
        return replace(self, weights=weights, means=means, covariances=scales, precisions_cholesky=prec_chol,
                       df=df, events=())
