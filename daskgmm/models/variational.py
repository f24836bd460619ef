"""The variational Gaussian mixture (scikit-learn's ``BayesianGaussianMixture``) as a model state.

Pure NumPy and SciPy's special functions. The variational E-step is linear in the
same features ``T(x)`` as EM's: each component's logit is the Gaussian log-density
under the expected precision ``nu_k W_k`` (the normalised ``covariances`` give it)
plus a constant per component (``E[log π_k]``, ``E[log |Λ_k|]``, ``-D / (2 β_k)``),
so a variational model rides the mixture pass in lockstep with any other model.
The M-step is a posterior update (Dirichlet or stick-breaking Beta for the weights,
Gaussian-Wishart for means and precisions) from the same ``(n_k, Σ r x, Σ r x xᵀ)``
statistics; the lower bound needs one more scalar per pass, ``Σ r log r``.

The formulas are scikit-learn's (Bishop 2006, ch. 10, with the covariances
normalised by the degrees of freedom); they are re-derived here, not imported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.special import betaln, digamma, gammaln

from daskgmm.kernels import ModelSpec, NaturalParams, PerComponent, SuffStats
from daskgmm.kernels import covariance as cov
from daskgmm.kernels import params as forms

#: A component counts as effective (``n_effective_components_``, the command's ``info``)
#: when its expected weight is above this: with a Dirichlet-process prior, unused
#: components keep a weight of about ``weight_concentration_prior / n_samples``, far below it.
EFFECTIVE_WEIGHT = 0.01
_LOG_2PI = math.log(2.0 * math.pi)


def effective_components(weights) -> int:
    """Components whose weight is above :data:`EFFECTIVE_WEIGHT` (``n_effective_components_``)."""
    return int(np.sum(np.asarray(weights) > EFFECTIVE_WEIGHT))




def log_dirichlet_norm(concentration: np.ndarray) -> float:
    """``log Γ(Σ a) - Σ log Γ(a)``, the log normaliser of a Dirichlet distribution."""
    return float(gammaln(np.sum(concentration)) - np.sum(gammaln(concentration)))


def log_wishart_norm(dof, log_det_precisions_chol, n_features: int) -> np.ndarray:
    """Log normaliser of Wishart distributions, without the ``log π`` term (as scikit-learn).

    Parameters
    ----------
    dof : ndarray, shape (K,) or ()
    log_det_precisions_chol : ndarray, shape (K,) or ()
        ``log det`` of the Cholesky factor of ``W_k``.
    n_features : int

    Returns
    -------
    ndarray, shape (K,) (or (1,) for scalar ``dof``)
    """
    dof = np.asarray(dof, dtype=np.float64)
    return -(
        dof * log_det_precisions_chol
        + dof * n_features * 0.5 * math.log(2.0)
        + np.sum(gammaln(0.5 * (dof - np.arange(n_features)[:, None])), 0)
    )


@dataclass(frozen=True)
class VariationalState:
    """The variational posterior of one Gaussian mixture, and how to update it.

    Attributes
    ----------
    weight_concentration : ndarray, shape (2, K) or (K,)
        Beta parameters of the stick-breaking weights (Dirichlet process), or
        the Dirichlet concentration (Dirichlet distribution).
    mean_precision : ndarray, shape (K,)
        ``β_k``.
    means : ndarray, shape (K, D)
        ``m_k``.
    degrees_of_freedom : ndarray, shape (K,), or shape () for "tied"
        ``nu_k``.
    covariances : ndarray
        ``(nu_k W_k)⁻¹`` in the shape of ``covariance_type``.
    precisions_cholesky : ndarray
        Cholesky factors of ``nu_k W_k``.
    covariance_type : str
    prior_type : {"dirichlet_process", "dirichlet_distribution"}
    weight_concentration_prior, mean_precision_prior, degrees_of_freedom_prior : float
    mean_prior : ndarray, shape (D,)
    covariance_prior : ndarray
        (D, D) full and tied, (D,) diag, () spherical.
    reg_covar : float
        Added to the diagonal of the responsibility-weighted covariances.
    tol : float
        Threshold on the change of the lower bound.
    eps_dtype : numpy dtype
        The data dtype (scikit-learn's ``10 * eps`` guard on ``n_k``).
    events : tuple of str
    missing : {"raise", "marginalize"}
        "marginalize": the missing values of a row are latent, with a Gaussian posterior per
        component (see :meth:`marginal` and :meth:`missing_entropy`).
    """

    weight_concentration: np.ndarray
    mean_precision: np.ndarray
    means: np.ndarray
    degrees_of_freedom: np.ndarray
    covariances: np.ndarray
    precisions_cholesky: np.ndarray
    covariance_type: str
    prior_type: str
    weight_concentration_prior: float
    mean_precision_prior: float
    mean_prior: np.ndarray
    degrees_of_freedom_prior: float
    covariance_prior: np.ndarray
    reg_covar: float = 1e-6
    tol: float = 1e-3
    eps_dtype: np.dtype = field(default=np.dtype(np.float64))
    events: tuple = ()
    missing: str = "raise"

    def __post_init__(self):
        # one memory layout (C-contiguous float64), so that a checkpoint reloads the same bits
        for f in ("weight_concentration", "mean_precision", "means", "degrees_of_freedom", "covariances",
                  "precisions_cholesky", "mean_prior", "covariance_prior"):
            value = getattr(self, f)
            if value is not None:  # (not ascontiguousarray: it makes a 0-d array 1-d)
                object.__setattr__(self, f, np.require(np.asarray(value, dtype=np.float64), requirements="C"))
        object.__setattr__(self, "eps_dtype", np.dtype(self.eps_dtype))

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def n_features(self) -> int:
        return self.means.shape[1]

    # -- construction -----------------------------------------------------
    @classmethod
    def from_stats(cls, stats: SuffStats, *, covariance_type, prior_type, weight_concentration_prior,
                   mean_precision_prior, mean_prior, degrees_of_freedom_prior, covariance_prior, **kw):
        """The posterior given the statistics of some responsibilities (scikit-learn's ``_initialize``)."""
        k, d = stats.n_components, stats.s1.shape[1]
        t = cov.of(covariance_type)
        placeholder = t.identity(k, d)
        prior = cls(
            np.ones((2, k)) if prior_type == "dirichlet_process" else np.ones(k), np.ones(k), np.zeros((k, d)),
            np.ones(t.scalar_shape(k)), placeholder, placeholder, covariance_type,
            prior_type, float(weight_concentration_prior), float(mean_precision_prior), mean_prior,
            float(degrees_of_freedom_prior), covariance_prior, **kw,
        )
        return prior.update(stats)

    # -- the expectations the E-step needs ---------------------------------
    def log_weights(self) -> np.ndarray:
        """``E[log π_k]`` under the posterior, shape (K,)."""
        wc = self.weight_concentration
        if self.prior_type == "dirichlet_process":
            digamma_sum = digamma(wc[0] + wc[1])
            digamma_b = digamma(wc[1])
            return digamma(wc[0]) - digamma_sum + np.hstack((0, np.cumsum(digamma_b - digamma_sum)[:-1]))
        return digamma(wc) - digamma(np.sum(wc))

    def log_offsets(self) -> np.ndarray:
        """What each component adds to its Gaussian log-density under ``nu_k W_k``, shape (K,).

        ``E[log π_k] + (E[log |Λ_k|] - D log nu_k - D / β_k) / 2``; the ``-D/2 log nu_k``
        undoes the ``nu_k`` inside the normalised precision.
        """
        d = self.n_features
        dof = self.degrees_of_freedom
        log_lambda = d * math.log(2.0) + np.sum(digamma(0.5 * (dof - np.arange(d)[:, None])), 0)
        return (self.log_weights() - 0.5 * d * np.log(dof)
                + 0.5 * (log_lambda - d / self.mean_precision))

    @property
    def weights(self) -> np.ndarray:
        """Expected weights ``E[π_k]`` (scikit-learn's ``weights_``), shape (K,)."""
        wc = self.weight_concentration
        if self.prior_type == "dirichlet_process":
            total = wc[0] + wc[1]
            w = wc[0] / total * np.hstack((1, np.cumprod(wc[1] / total)[:-1]))
            return w / np.sum(w)
        return wc / np.sum(wc)

    def natural(self, centre):
        """The E-step's log-densities: shared-feature form, or the per-component one when
        the shared features would lose precision (see ``daskgmm.kernels.params.precise_needed``)."""
        k = self.n_components
        args = (np.ones(k), self.means, self.precisions_cholesky, self.covariance_type, centre)
        off = self.log_offsets()
        if forms.precise_needed(self.means, self.precisions_cholesky, self.covariance_type, centre, self.eps_dtype):
            pc = forms.per_component(*args)
            return PerComponent(pc.means, pc.factor, pc.const + off, pc.covariance_type)
        nat = forms.natural_params(*args)
        return NaturalParams(nat.quad, nat.lin, nat.const + off)

    def marginal(self, centre) -> PerComponent:
        """The E-step's log-densities in the per-component form, for rows with missing values.

        With the missing values ``x_m`` of a row latent (mean field: ``q(z, x_m) q(θ)``), the
        optimal ``q(x_m | z = k)`` is the conditional of ``N(m_k, P_k⁻¹)``, ``P_k = nu_k W_k``
        the expected precision, given the observed values; integrating ``x_m`` out of the
        component's logit leaves the Gaussian log-density of the observed values under
        ``N(m_k, P_k⁻¹)`` plus the same per-component offset as a complete row
        (:meth:`log_offsets`: ``E[log π_k] + ½ (E[log |Λ_k|] - log |P_k|) - D / (2 β_k)``,
        with ``D``, not the observed count: the ``x_m`` integral gives back
        ``(2π)^{m/2} |P_mm|^{-1/2}``, which turns ``log N(x | …)`` into the marginal). So the
        Gaussian machinery for missing values (:mod:`daskgmm.kernels.missing`, the compiled
        core's ``marginal=``) applies unchanged, and the M-step's statistics are the conditional
        moments, ``Cov[x_m | x_o, k] = P_mm⁻¹`` included, as for ``GaussianMixture``.
        """
        pc = forms.per_component(np.ones(self.n_components), self.means, self.precisions_cholesky,
                                 self.covariance_type, centre)
        return PerComponent(pc.means, pc.factor, pc.const + self.log_offsets(), pc.covariance_type)

    # -- the loop's interface ---------------------------------------------
    def spec(self, centre, n_worst: int = 0) -> ModelSpec:
        nat = self.natural(centre)
        marginalize = self.missing == "marginalize"
        if isinstance(nat, PerComponent):
            shared = forms.natural_params(np.ones(self.n_components), self.means, self.precisions_cholesky,
                                          self.covariance_type, centre)
            return ModelSpec(shared, self.covariance_type, n_worst=n_worst, precise=nat, resp_log_resp=True,
                             marginal=nat if marginalize else None)
        return ModelSpec(nat, self.covariance_type, n_worst=n_worst, resp_log_resp=True,
                         marginal=self.marginal(centre) if marginalize else None)

    objective_name = "lower bound"

    def objective(self, stats: SuffStats) -> float:
        """scikit-learn's lower bound (ELBO up to constants) of the posterior this E-step leads to.

        With rows with missing values, the bound also holds the entropy of their missing
        values' posterior (:meth:`missing_entropy`); without any, it is scikit-learn's, bit for bit.
        """
        bound = self.update(stats).lower_bound(stats.resp_log_resp)
        if stats.incomplete_rows:
            bound += self.missing_entropy(stats)
        return bound

    def missing_entropy(self, stats: SuffStats) -> float:
        """``Σ_i w_i Σ_k r_ik H[q(x_m,i | z = k)]``: the entropy of the missing values' posterior.

        ``H = m/2 (1 + log 2π) - ½ log det P_k,mm`` for a row with ``m`` missing values. The
        pass does not see it row by row (the compiled core returns ``Σ w log p`` and
        ``Σ w r log r``, not the factors), but it follows from what the pass returns, since a
        row's logits are the expected complete-data log-densities plus that entropy:
        ``Σ_k r_k logit_k = Σ_k r_k log r_k + log Σ_k exp(logit_k)`` and
        ``Σ_k r_k (logit_k - H_k) = Σ_k r_k (E_q[log N(x | m_k, P_k⁻¹)] + offset_k)``, where the
        expectation is linear in the expected statistics (``-D/2 log 2π + ½ log |P_k|
        - ½ tr(P_k E[(x - m_k)(x - m_k)ᵀ])``). Complete rows cancel out of the difference up to
        rounding (relative 1e-16 of ``Σ w log p`` in float64; float32 passes round their
        per-row terms to float32, as they do ``Σ r log r``).

        Parameters
        ----------
        stats : SuffStats
            The statistics of an E-step of this state (``resp_log_resp`` and ``loglik``
            included).

        Returns
        -------
        float
        """
        d, ct = self.n_features, self.covariance_type
        prec = cov.precisions_from_cholesky(self.precisions_cholesky, ct)
        a = self.means - np.broadcast_to(stats.shift, self.means.shape)  # the means about the statistics' shift
        # Σ r (x - m_k)(x - m_k)ᵀ in the covariance type's shape; Σ_k tr(P_k ·) is the sum of the
        # elementwise product for every type (symmetric matrices, diagonals, traces, the pooled tied sum)
        about_means = cov.shift_second_moments(stats.s2, stats.n, stats.s1, -a, ct)
        quad = float(np.sum(prec * about_means))
        n = stats.n
        log_det = cov.log_det_cholesky(self.precisions_cholesky, ct, d)  # ½ log |P_k|
        expected = np.sum(n * (self.log_offsets() + log_det - 0.5 * d * _LOG_2PI)) - 0.5 * quad
        return float(stats.resp_log_resp + stats.loglik - expected)

    def converged(self, new: VariationalState, change: float) -> bool:
        return abs(change) < self.tol

    def lower_bound(self, resp_log_resp: float) -> float:
        """The lower bound of this posterior with responsibilities of ``Σ r log r = resp_log_resp``."""
        d = self.n_features
        ct = self.covariance_type
        dof = self.degrees_of_freedom
        log_det = cov.log_det_cholesky(self.precisions_cholesky, ct, d) - 0.5 * d * np.log(dof)
        log_wishart = float(np.sum(log_wishart_norm(dof, log_det, d)))
        if not cov.of(ct).per_component:  # one Wishart shared by every component
            log_wishart = self.n_components * log_wishart
        wc = self.weight_concentration
        if self.prior_type == "dirichlet_process":
            log_norm_weight = -float(np.sum(betaln(wc[0], wc[1])))
        else:
            log_norm_weight = log_dirichlet_norm(wc)
        return float(-resp_log_resp - log_wishart - log_norm_weight
                     - 0.5 * d * np.sum(np.log(self.mean_precision)))

    def update(self, stats: SuffStats) -> VariationalState:
        """The posterior given the statistics of the E-step (scikit-learn's ``_m_step``)."""
        nk, xk, sk = cov.estimate_parameters(stats, self.reg_covar, self.eps_dtype)
        a0 = self.weight_concentration_prior
        if self.prior_type == "dirichlet_process":
            # stick-breaking: Beta(1 + n_k, a0 + Σ_{j>k} n_j)
            wc = np.vstack([1.0 + nk, a0 + np.hstack((np.cumsum(nk[::-1])[-2::-1], 0))])
        else:
            wc = a0 + nk
        b0, m0 = self.mean_precision_prior, self.mean_prior
        beta = b0 + nk
        means = (b0 * m0 + nk[:, None] * xk) / beta[:, None]
        diff = xk - m0
        ct, cp, nu0 = self.covariance_type, self.covariance_prior, self.degrees_of_freedom_prior
        dof, covs = cov.of(ct).wishart_update(nk, sk, diff, b0, beta, cp, nu0)
        prec_chol = cov.precisions_cholesky(covs, ct, reg_covar=self.reg_covar,
                                            float32=self.eps_dtype == np.float32)
        return replace(self, weight_concentration=wc, mean_precision=beta, means=means, degrees_of_freedom=dof,
                       covariances=covs, precisions_cholesky=prec_chol, events=())
