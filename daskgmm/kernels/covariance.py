"""Covariance algebra, one object per covariance type: shapes, counts, M-step, precisions, moments.

Pure NumPy. A covariance type is a :class:`CovarianceType` (``of("full")``); the
module-level functions are the same operations by name, as scikit-learn's
``_gaussian_mixture.py`` offers them. Adding a type is adding a class here (and its
block loop in the compiled core). Shapes follow scikit-learn:

================  ========================  ===========================
covariance_type   covariances / precisions   precisions_cholesky
================  ========================  ===========================
``full``          (K, D, D)                 (K, D, D), ``P_k = U_k U_kᵀ``
``tied``          (D, D)                    (D, D)
``diag``          (K, D)                    (K, D), ``sqrt(precision)``
``spherical``     (K,)                      (K,)
================  ========================  ===========================
"""

from __future__ import annotations

import numpy as np

from daskgmm.kernels.features import DIAG_LEVEL, FULL_LEVEL, SPHERICAL_LEVEL, diag_positions
from daskgmm.kernels.results import SuffStats, frozen

#: A component whose covariance is ``reg_covar`` to within this fraction in every direction has (almost)
#: no scatter of its own, under a thousandth of ``reg_covar``: its rows are one point (:func:`on_a_point`).
#: Rounding leaves about eps times the data's squared spread (1e-11 for pixels in [0, 255]), far below a
#: thousandth of the default reg_covar.
ON_POINT_RTOL = 1e-3


def _collapse_error(components, covariance_type, reg_covar, float32) -> ValueError:
    """scikit-learn's message for a singular covariance, then which components and the reg_covar in use."""
    which = ", ".join(str(int(k)) for k in components)
    if covariance_type == "tied":
        detail = "The tied covariance is not positive definite"
    else:
        noun = "Component" if len(components) == 1 else "Components"
        verb = "has" if len(components) == 1 else "have"
        detail = f"{noun} {which} {verb} a covariance that is not positive definite"
    msg = (
        "Fitting the mixture model failed because some components have ill-defined empirical covariance "
        "(for instance caused by singleton or collapsed samples). Try to decrease the number of components, "
        "increase reg_covar, or scale the input data."
    )
    if float32:
        msg += " The numerical accuracy can also be improved by passing float64 data instead of float32."
    msg += f" {detail} (reg_covar={reg_covar:g})."
    return ValueError(msg)


def _vech_to_full(quad, d):
    iu0, iu1 = np.triu_indices(d)
    m = np.empty((quad.shape[0], d, d))
    m[:, iu0, iu1] = quad
    m[:, iu1, iu0] = quad
    return m


def _diag_of_features(quad, level, d, want):
    if level == FULL_LEVEL:
        return quad[:, diag_positions(d)]
    if level == DIAG_LEVEL:
        return quad
    raise ValueError(f"spherical features give only spherical second moments, not {want}")


def _full_of_features(quad, level, d):
    if level != FULL_LEVEL:
        raise ValueError("diagonal or spherical features cannot give full second moments")
    return _vech_to_full(quad, d)


def _outer(a, b):
    return np.einsum("ki,kj->kij", a, b)


def _outer_shift(s1, n, delta):
    cross = _outer(s1, delta)
    return cross + cross.transpose(0, 2, 1) + n[:, None, None] * _outer(delta, delta)


def _scatter_matrices(s1, n0, m):
    """``Σ_i r (x - μ)(x - μ)ᵀ = s2 - s1 mᵀ - m s1ᵀ + n0 m mᵀ`` per component, exact for any shift."""
    cross = _outer(s1, m)
    return cross + cross.transpose(0, 2, 1) - n0[:, None, None] * _outer(m, m)


def _cholesky_stack(stack, covariance_type, reg, float32):
    """Cholesky factors of a (S, D, D) stack; ValueError naming the indices that are not positive definite."""
    bad = [k for k in range(stack.shape[0]) if not np.all(np.isfinite(stack[k]))]
    chol = None
    if not bad:
        try:
            chol = np.linalg.cholesky(stack)
        except np.linalg.LinAlgError:
            chol = None
        if chol is None or not np.all(np.isfinite(chol)):
            for k in range(stack.shape[0]):
                try:
                    ck = np.linalg.cholesky(stack[k])
                    if not np.all(np.isfinite(ck)) or np.any(np.diagonal(ck) <= 0):
                        bad.append(k)
                except np.linalg.LinAlgError:
                    bad.append(k)
    if bad:
        raise _collapse_error(bad, covariance_type, reg, float32)
    return chol


class CovarianceType:
    """One covariance shape and all of its algebra.

    Attributes
    ----------
    name : str
        scikit-learn's name.
    level : Level
        The feature level whose statistics give its second moments.
    dense : bool
        Matrices (``full``, ``tied``) rather than variances.
    per_component : bool
        One covariance per component (all but ``tied``, which pools them).
    mean_guard : bool
        The M-step adds scikit-learn's ``(10 eps / nk) μ μᵀ`` term (all but ``full``, whose
        scikit-learn M-step takes the scatter about the means; see :func:`estimate_parameters`).
    """

    name: str
    level: int
    dense: bool
    per_component: bool = True
    mean_guard: bool = True

    def __repr__(self) -> str:
        return f"CovarianceType({self.name!r})"

    # -- sizes ------------------------------------------------------------
    def shape(self, n_components: int, n_features: int) -> tuple:
        """Shape of the covariances (and precisions, and their Cholesky factors)."""
        raise NotImplementedError

    def component_shape(self, n_features: int) -> tuple:
        """Shape of one component's covariance (a prior's shape): (D, D), (D,) or ()."""
        return self.shape(1, n_features)[1:] if self.per_component else self.shape(1, n_features)

    def scalar_shape(self, n_components: int) -> tuple:
        """Shape of a per-covariance scalar (a Wishart's degrees of freedom): (K,), or () when pooled."""
        return (n_components,) if self.per_component else ()

    def n_covariance_parameters(self, n_components: int, n_features: int) -> float:
        """Free parameters of the covariances."""
        raise NotImplementedError

    def identity(self, n_components: int, n_features: int) -> np.ndarray:
        """Unit covariances in this shape (a placeholder before the first update)."""
        if self.dense:
            return np.broadcast_to(np.eye(n_features), self.shape(n_components, n_features))
        return np.ones(self.shape(n_components, n_features))

    def of_component(self, covariances, k: int):
        """Component ``k``'s covariance in its own shape (the pooled one for ``tied``)."""
        return covariances[k] if self.per_component else covariances

    def component_matrix(self, covariances, k: int, n_features: int) -> np.ndarray:
        """The (D, D) covariance matrix of component ``k``."""
        raise NotImplementedError

    # -- precision factors ------------------------------------------------
    def factors(self, prec_chol, n_components: int, n_features: int) -> np.ndarray:
        """Each component's precision factor: (K, D, D) for matrices, (K, D) for variances (views)."""
        raise NotImplementedError

    def log_det(self, prec_chol, n_features: int):
        """``log det U`` per component (half the log-determinant of the precision)."""
        raise NotImplementedError

    def quadratic_parts(self, m, prec_chol):
        """``(P, P m, mᵀ P m)`` per component from the precision factors, ``m`` (K, D) the means about a centre.

        ``P`` is (K, D, D) for matrices, (K, D) diagonal, (K,) spherical.
        """
        k, d = m.shape
        uu = self.factors(prec_chol, k, d)
        if self.dense:
            y = np.einsum("kd,kde->ke", m, uu)  # Uᵀ m, so mᵀ P m = ‖y‖²
            return np.einsum("kij,klj->kil", uu, uu), np.einsum("kde,ke->kd", uu, y), (y**2).sum(axis=1)
        return self._diagonal_parts(m, np.asarray(prec_chol) ** 2)

    def _diagonal_parts(self, m, p):
        raise NotImplementedError

    def precisions_cholesky(self, covariances, *, reg_covar=None, float32=False) -> np.ndarray:
        """Cholesky factors of the precisions, raising a clear error on a collapse."""
        cov = np.asarray(covariances, dtype=np.float64)
        reg = float("nan") if reg_covar is None else reg_covar
        if self.dense:
            stack = cov if self.per_component else cov[None]
            chol = _cholesky_stack(stack, self.name, reg, float32)
            eye = np.broadcast_to(np.eye(stack.shape[-1]), stack.shape)
            prec = np.linalg.solve(chol, eye).transpose(0, 2, 1)
            return prec if self.per_component else prec[0]
        bad_mask = ~(np.isfinite(cov) & (cov > 0))
        if bad_mask.any():
            comps = np.flatnonzero(bad_mask.reshape(cov.shape[0], -1).any(axis=1))
            raise _collapse_error(comps, self.name, reg, float32)
        return 1.0 / np.sqrt(cov)

    def cholesky_from_precisions(self, precisions) -> np.ndarray:
        """Upper-triangular ``U`` with ``P = U Uᵀ`` (scikit-learn's convention)."""
        p = np.asarray(precisions, dtype=np.float64)
        if self.dense:
            # Cholesky of the row/column-reversed matrix, reversed back, is upper triangular.
            return np.linalg.cholesky(p[..., ::-1, ::-1])[..., ::-1, ::-1].copy()
        return np.sqrt(p)

    def precisions_from_cholesky(self, prec_chol) -> np.ndarray:
        """``P = U Uᵀ`` (or ``U²`` for variances)."""
        u = np.asarray(prec_chol)
        if not self.dense:
            return u**2
        return np.einsum("kij,klj->kil", u, u) if self.per_component else u @ u.T

    def covariances_from_precisions(self, precisions) -> np.ndarray:
        """Inverse of the precisions."""
        p = np.asarray(precisions, dtype=np.float64)
        if self.dense:
            cov = np.linalg.inv(p)
            return 0.5 * (cov + np.swapaxes(cov, -1, -2))
        return 1.0 / p

    def check_precisions(self, precisions, what: str) -> None:
        """scikit-learn's check of given precisions (or a prior's covariance): symmetric positive definite
        matrices, or positive variances; ``what`` names them in the message."""
        p = np.asarray(precisions)
        if self.dense:
            for mat in p.reshape(-1, p.shape[-1], p.shape[-1]):
                if not (np.allclose(mat, mat.T) and np.all(np.linalg.eigvalsh(mat) > 0.0)):
                    raise ValueError(f"'{what}' should be symmetric, positive-definite")
        elif np.any(p <= 0.0):
            raise ValueError(f"'{what}' should be positive")

    # -- M-step and moments -----------------------------------------------
    def covariances(self, s2, s1, n0, m, nk, reg_covar, extra=None) -> np.ndarray:
        """Covariances from statistics about a shift: the scatter about the means over ``nk``, plus ``reg_covar``.

        ``s2`` in this type's shape, ``s1`` and ``m`` (K, D) (the means about the shift), ``n0``
        and ``nk`` (K,) (the responsibility sums and the divisors). ``extra`` is a term added
        after the division ((K, D); before it for ``tied``, (D, D) pooled), see
        :func:`estimate_parameters`; ``full`` has none and ignores it.
        """
        raise NotImplementedError

    def from_features(self, quad: np.ndarray, level: int, n_features: int) -> np.ndarray:
        """Second moments in this shape from the quadratic columns of the statistics (see the function)."""
        raise NotImplementedError

    def about_means(self, wz: np.ndarray, z: np.ndarray) -> np.ndarray:
        """``Σ_n r_kn z_kn z_knᵀ`` in this shape; ``z`` (K, D, nb), ``wz`` the same times the responsibilities."""
        raise NotImplementedError

    def pool(self, s2: np.ndarray) -> np.ndarray:
        """Per-component second moments (K, ...) in this shape (pooled: summed)."""
        return s2 if self.per_component else s2.sum(axis=0)

    def shift(self, s2, n, s1, delta) -> np.ndarray:
        """Second moments about ``old shift - delta`` from those about the old shift."""
        raise NotImplementedError

    def from_parameters(self, weights, means, covariances, reg_covar) -> np.ndarray:
        """``Σ_k w_k (Σ_k - reg I + m_k m_kᵀ)`` in this shape (see the function)."""
        raise NotImplementedError

    def from_variances(self, variances) -> np.ndarray:
        """One component's covariance from per-feature variances (D,): a default prior of the shapes of
        variances (the matrices' priors take the data's covariance)."""
        raise NotImplementedError

    def wishart_update(self, nk, sk, diff, mean_precision_prior, mean_precision, covariance_prior,
                       degrees_of_freedom_prior):
        """The variational posterior's Wishart: ``(degrees_of_freedom, covariances)`` (scikit-learn's
        ``_estimate_wishart_*``); ``sk`` the covariances of the M-step, ``diff`` means minus the prior's."""
        raise NotImplementedError

    def collapsed(self, covariances, nk) -> np.ndarray:
        """Components that have collapsed (see :func:`collapsed_components`)."""
        covs = np.asarray(covariances)
        need = covs.shape[-1] + 1 if self.dense else 2
        bad = []
        for k in range(covs.shape[0]):
            c = covs[k]
            if not np.all(np.isfinite(c)) or nk[k] < need:
                bad.append(k)
            elif self.dense:
                try:
                    np.linalg.cholesky(c)
                except np.linalg.LinAlgError:
                    bad.append(k)
            elif np.any(c <= 0):
                bad.append(k)
        return np.array(bad, dtype=np.intp)

    def draw(self, rng, mean, covariance, n_samples: int) -> np.ndarray:
        """``n_samples`` rows from ``N(mean, covariance)`` with ``covariance`` one component's
        (:meth:`of_component`), drawn as scikit-learn's ``sample`` draws them."""
        if self.dense:
            return rng.multivariate_normal(mean, covariance, int(n_samples))
        return mean + rng.standard_normal(size=(n_samples, np.shape(mean)[-1])) * np.sqrt(covariance)


class Full(CovarianceType):
    name, level, dense, mean_guard = "full", FULL_LEVEL, True, False

    def shape(self, n_components, n_features):
        return (n_components, n_features, n_features)

    def n_covariance_parameters(self, n_components, n_features):
        return n_components * n_features * (n_features + 1) / 2.0

    def component_matrix(self, covariances, k, n_features):
        return covariances[k]

    def factors(self, prec_chol, n_components, n_features):
        return prec_chol

    def log_det(self, prec_chol, n_features):
        return np.log(np.diagonal(prec_chol, axis1=1, axis2=2)).sum(axis=1)

    def covariances(self, s2, s1, n0, m, nk, reg_covar, extra=None):
        cov = (s2 - _scatter_matrices(s1, n0, m)) / nk[:, None, None]
        cov = 0.5 * (cov + cov.transpose(0, 2, 1))
        d = m.shape[1]
        cov[..., np.arange(d), np.arange(d)] += reg_covar
        return cov

    def from_features(self, quad, level, n_features):
        return _full_of_features(quad, level, n_features)

    def about_means(self, wz, z):
        return np.matmul(wz, z.transpose(0, 2, 1)).astype(np.float64)

    def shift(self, s2, n, s1, delta):
        return s2 + _outer_shift(s1, n, delta)

    def about_fixed_means(self, covariances, n0, nk, delta):
        return covariances + (n0 / nk)[:, None, None] * _outer(delta, delta)

    def from_parameters(self, weights, means, covariances, reg_covar):
        eye = np.eye(np.shape(means)[1])
        return weights[:, None, None] * (covariances - reg_covar * eye + _outer(means, means))

    def wishart_update(self, nk, sk, diff, b0, beta, cp, nu0):
        dof = nu0 + nk
        covs = cp + nk[:, None, None] * sk + (nk * b0 / beta)[:, None, None] * _outer(diff, diff)
        return dof, covs / dof[:, None, None]


class Tied(CovarianceType):
    name, level, dense, per_component = "tied", FULL_LEVEL, True, False

    def shape(self, n_components, n_features):
        return (n_features, n_features)

    def n_covariance_parameters(self, n_components, n_features):
        return n_features * (n_features + 1) / 2.0

    def component_matrix(self, covariances, k, n_features):
        return covariances

    def factors(self, prec_chol, n_components, n_features):
        return np.broadcast_to(prec_chol, (n_components, n_features, n_features))

    def log_det(self, prec_chol, n_features):
        return np.log(np.diagonal(prec_chol)).sum()

    def covariances(self, s2, s1, n0, m, nk, reg_covar, extra=None):
        cov = s2 - _scatter_matrices(s1, n0, m).sum(axis=0)
        if extra is not None:
            cov = cov + extra
        cov = cov / nk.sum()
        cov = 0.5 * (cov + cov.T)
        d = m.shape[1]
        cov[..., np.arange(d), np.arange(d)] += reg_covar
        return cov

    def from_features(self, quad, level, n_features):
        return _full_of_features(quad, level, n_features).sum(axis=0)

    def about_means(self, wz, z):
        return np.matmul(wz, z.transpose(0, 2, 1)).sum(axis=0).astype(np.float64)

    def shift(self, s2, n, s1, delta):
        return s2 + _outer_shift(s1, n, delta).sum(axis=0)

    def about_fixed_means(self, covariances, n0, nk, delta):
        return covariances + np.einsum("k,ki,kj->ij", n0, delta, delta) / nk.sum()

    def from_parameters(self, weights, means, covariances, reg_covar):
        eye = np.eye(np.shape(means)[1])
        return covariances - reg_covar * eye + np.einsum("k,ki,kj->ij", weights, means, means)

    def wishart_update(self, nk, sk, diff, b0, beta, cp, nu0):
        k = nk.shape[0]
        dof = np.asarray(nu0 + nk.sum() / k)
        covs = cp + sk * nk.sum() / k + b0 / k * np.dot((nk / beta) * diff.T, diff)
        return dof, covs / dof


class Diag(CovarianceType):
    name, level, dense = "diag", DIAG_LEVEL, False

    def shape(self, n_components, n_features):
        return (n_components, n_features)

    def n_covariance_parameters(self, n_components, n_features):
        return n_components * n_features

    def component_matrix(self, covariances, k, n_features):
        return np.diag(covariances[k])

    def factors(self, prec_chol, n_components, n_features):
        return prec_chol

    def log_det(self, prec_chol, n_features):
        return np.log(prec_chol).sum(axis=1)

    def _diagonal_parts(self, m, p):
        return p, p * m, (p * m**2).sum(axis=1)

    def covariances(self, s2, s1, n0, m, nk, reg_covar, extra=None):
        cov = (s2 - (2.0 * s1 * m - n0[:, None] * m**2)) / nk[:, None]
        if extra is not None:
            cov = cov + extra
        return cov + reg_covar

    def from_features(self, quad, level, n_features):
        return _diag_of_features(quad, level, n_features, "diag")

    def about_means(self, wz, z):
        return np.einsum("kdn,kdn->kd", wz, z).astype(np.float64)

    def shift(self, s2, n, s1, delta):
        return s2 + 2.0 * s1 * delta + n[:, None] * delta**2

    def about_fixed_means(self, covariances, n0, nk, delta):
        return covariances + (n0 / nk)[:, None] * delta**2

    def from_parameters(self, weights, means, covariances, reg_covar):
        return weights[:, None] * (covariances - reg_covar + means**2)

    def from_variances(self, variances):
        return variances

    def wishart_update(self, nk, sk, diff, b0, beta, cp, nu0):
        dof = nu0 + nk
        covs = cp + nk[:, None] * (sk + (b0 / beta)[:, None] * np.square(diff))
        return dof, covs / dof[:, None]


class Spherical(CovarianceType):
    name, level, dense = "spherical", SPHERICAL_LEVEL, False

    def shape(self, n_components, n_features):
        return (n_components,)

    def n_covariance_parameters(self, n_components, n_features):
        return n_components

    def component_matrix(self, covariances, k, n_features):
        return np.eye(n_features) * covariances[k]

    def factors(self, prec_chol, n_components, n_features):
        return np.broadcast_to(prec_chol[:, None], (n_components, n_features))

    def log_det(self, prec_chol, n_features):
        return n_features * np.log(prec_chol)

    def _diagonal_parts(self, m, p):
        return p, p[:, None] * m, p * (m**2).sum(axis=1)

    def covariances(self, s2, s1, n0, m, nk, reg_covar, extra=None):
        corr = 2.0 * s1 * m - n0[:, None] * m**2
        cov = (s2 - corr.sum(axis=1)) / (nk * m.shape[1])
        if extra is not None:
            cov = cov + extra.mean(axis=1)
        return cov + reg_covar

    def from_features(self, quad, level, n_features):
        if level < DIAG_LEVEL:
            return quad[:, 0].copy()
        return _diag_of_features(quad, level, n_features, "spherical").sum(axis=1)

    def about_means(self, wz, z):
        return np.einsum("kdn,kdn->k", wz, z).astype(np.float64)

    def shift(self, s2, n, s1, delta):
        return s2 + 2.0 * (s1 * delta).sum(axis=1) + n * (delta**2).sum(axis=1)

    def about_fixed_means(self, covariances, n0, nk, delta):
        return covariances + n0 / nk * (delta**2).mean(axis=1)

    def from_parameters(self, weights, means, covariances, reg_covar):
        return weights * (np.shape(means)[1] * (covariances - reg_covar) + (means**2).sum(axis=1))

    def from_variances(self, variances):
        return np.asarray(variances.mean())

    def wishart_update(self, nk, sk, diff, b0, beta, cp, nu0):
        dof = nu0 + nk
        covs = cp + nk * (sk + b0 / beta * np.mean(np.square(diff), 1))
        return dof, covs / dof


#: The covariance types by name, in scikit-learn's order.
TYPES = {t.name: t for t in (Full(), Tied(), Diag(), Spherical())}

#: Their names.
COVARIANCE_TYPES = tuple(TYPES)


def of(covariance_type) -> CovarianceType:
    """The :class:`CovarianceType` of a name (or the type itself)."""
    if isinstance(covariance_type, CovarianceType):
        return covariance_type
    try:
        return TYPES[covariance_type]
    except (KeyError, TypeError):
        raise ValueError(f"covariance_type must be one of {COVARIANCE_TYPES}, got {covariance_type!r}") from None


# --- the same operations by name ----------------------------------------------------------


def covariance_shape(covariance_type: str, n_components: int, n_features: int) -> tuple:
    """Shape of covariances (and precisions, and their Cholesky factors)."""
    return of(covariance_type).shape(n_components, n_features)


def fitted_covariance_type(covariances, precisions_cholesky, n_components: int, n_features: int) -> str | None:
    """The covariance type of fitted arrays, from their shapes: "full" (K, D, D), "spherical" (K,), "tied"
    (D, D), "diag" (K, D); when K = D, tied's Cholesky factor is triangular (to rounding: an entry of
    -5e-17 below a diagonal of 2.7 was seen) where diag's entries are all positive precisions. None when
    the shapes fit no type, or two that are one model (K = D = 1: tied and diag)."""
    shape = np.shape(covariances)
    found = [t for t in COVARIANCE_TYPES if shape == covariance_shape(t, n_components, n_features)]
    if found == ["tied", "diag"] and n_features > 1:
        pc = np.abs(np.asarray(precisions_cholesky, np.float64))
        off = min(np.tril(pc, -1).max(), np.triu(pc, 1).max())
        return "tied" if off <= 1e-12 * pc.max() else "diag"
    return found[0] if len(found) == 1 else None


def zero_stats(n_components: int, shift: np.ndarray, covariance_type: str) -> SuffStats:
    """Statistics of no rows: the identity of :meth:`SuffStats.merge`."""
    k, d = n_components, np.shape(shift)[-1]
    return SuffStats(
        n=frozen(np.zeros(k)),
        s1=frozen(np.zeros((k, d))),
        s2=frozen(np.zeros(covariance_shape(covariance_type, k, d))),
        loglik=0.0,
        weight=0.0,
        rows=0,
        shift=frozen(shift),
        covariance_type=covariance_type,
    )


def n_parameters(covariance_type: str, n_components: int, n_features: int) -> int:
    """Free parameters of a mixture (as scikit-learn counts them for BIC/AIC)."""
    k, d = n_components, n_features
    return int(of(covariance_type).n_covariance_parameters(k, d) + k * d + k - 1)


def estimate_parameters(stats: SuffStats, reg_covar: float, eps_dtype=np.float64):
    """M-step from merged statistics, with scikit-learn's arithmetic.

    Parameters
    ----------
    stats : SuffStats
        Statistics of all rows under the current responsibilities.
    reg_covar : float
        Added to the diagonal of every covariance.
    eps_dtype : dtype
        Data dtype; ``10 * eps`` of it is added to every responsibility sum
        (as scikit-learn does) so that empty components stay finite.

    Returns
    -------
    nk : ndarray, shape (K,)
        Responsibility sums (plus ``10 * eps``).
    means : ndarray, shape (K, D)
    covariances : ndarray
        In the shape of ``stats.covariance_type``.
    """
    n0 = stats.n
    nk = n0 + 10 * np.finfo(eps_dtype).eps
    m = stats.s1 / nk[:, None]  # mean - shift
    means = stats.shift + m
    t = of(stats.covariance_type)
    # scikit-learn's full M-step takes the scatter about the means (no term below); its tied,
    # diag and spherical M-steps subtract the mean's square in data coordinates,
    # Σ r x xᵀ / nk - μ μᵀ, which equals the scatter about the mean plus
    # (1 - n0 / nk) μ μᵀ = (10 eps / nk) μ μᵀ because of the 10 eps in nk. The
    # term is tiny, but it keeps a component on a single point positive (reg_covar=0).
    # It is taken with float64's eps whatever the data's dtype: the statistics are float64,
    # and float32's (1.2e-6 μ²) is scikit-learn's float32 error, e.g. a variance of 112
    # for a component on the point 9999 with reg_covar=0.1 (its issue #30382)
    if not t.mean_guard:
        return nk, means, t.covariances(stats.s2, stats.s1, n0, m, nk, reg_covar)
    guard = (n0 + 10 * np.finfo(np.float64).eps) - n0  # as rounded, where scikit-learn's arithmetic has it
    # scikit-learn computes μ in data coordinates, where a component on the point 0 has μ = 0
    # exactly; about a shift it is off by rounding (~eps |shift|), which the term above would
    # turn into a spurious positive variance: below that rounding, μ is 0
    noise = 4 * np.finfo(np.float64).eps * (np.abs(stats.shift) + np.abs(m))
    means_exact = np.where(np.abs(means) <= noise, 0.0, means)
    if t.per_component:
        extra = (guard / nk)[:, None] * means_exact**2
    else:
        extra = np.einsum("k,ki,kj->ij", guard, means_exact, means_exact)
    return nk, means, t.covariances(stats.s2, stats.s1, n0, m, nk, reg_covar, extra)




def precisions_cholesky(covariances, covariance_type, *, reg_covar=None, float32=False):
    """Cholesky factors of the precisions, raising a clear error on a collapse.

    Raises
    ------
    ValueError
        Naming the components whose covariance is not positive definite (or
        not finite), and suggesting a larger ``reg_covar``.
    """
    return of(covariance_type).precisions_cholesky(covariances, reg_covar=reg_covar, float32=float32)


def precisions_cholesky_from_precisions(precisions, covariance_type):
    """Upper-triangular ``U`` with ``P = U Uᵀ`` (scikit-learn's convention)."""
    return of(covariance_type).cholesky_from_precisions(precisions)


def precisions_from_cholesky(prec_chol, covariance_type):
    """``P = U Uᵀ`` (or ``U²`` for diagonal and spherical)."""
    return of(covariance_type).precisions_from_cholesky(prec_chol)


def covariances_from_precisions(precisions, covariance_type):
    """Inverse of the precisions."""
    return of(covariance_type).covariances_from_precisions(precisions)


def log_det_cholesky(prec_chol, covariance_type, n_features):
    """``log det U`` per component (half the log-determinant of the precision)."""
    return of(covariance_type).log_det(np.asarray(prec_chol, dtype=np.float64), n_features)


def second_moments_from_features(quad: np.ndarray, level: int, n_features: int, covariance_type: str) -> np.ndarray:
    """Second moments in the shape of ``covariance_type`` from the quadratic columns of the statistics.

    Parameters
    ----------
    quad : ndarray, shape (K, Q)
        ``Σ r T_quad`` of one model: ``vech(x xᵀ)`` (full level), ``x²`` (diag) or ``‖x‖²`` (spherical).
    level : int
        The feature level the pass built (:class:`daskgmm.kernels.features.Level`).
    n_features : int
    covariance_type : str

    Returns
    -------
    s2 : ndarray
        (K, D, D) full; (D, D) tied (pooled); (K, D) diag; (K,) spherical.
    """
    return of(covariance_type).from_features(quad, level, n_features)


def moments_about_means(wz: np.ndarray, z: np.ndarray, covariance_type: str) -> np.ndarray:
    """``Σ_n r_kn z_kn z_knᵀ`` in the shape of ``covariance_type``, float64.

    ``z`` (K, D, nb) holds each row's difference from each component's mean and
    ``wz`` the same times the (weighted) responsibilities.
    """
    return of(covariance_type).about_means(wz, z)


def pool_components(s2: np.ndarray, covariance_type: str) -> np.ndarray:
    """Per-component second moments (K, ...) in the shape of ``covariance_type`` (tied: summed)."""
    return of(covariance_type).pool(s2)


def shift_second_moments(s2, n, s1, delta, covariance_type: str) -> np.ndarray:
    """Second moments about ``old shift - delta`` from those about the old shift.

    ``Σ r (z + δ)(z + δ)ᵀ = s2 + s1 δᵀ + δ s1ᵀ + n δ δᵀ`` in the shape of ``covariance_type``;
    ``n`` (K,), ``s1`` and ``delta`` (K, D).
    """
    return of(covariance_type).shift(s2, n, s1, delta)


def covariances_about_fixed_means(covariances, n0, nk, delta, covariance_type: str) -> np.ndarray:
    """The M-step's covariances for means held fixed (``update_params`` without "m").

    The M-step of ``Σ_k`` for a fixed ``μ_k`` is the scatter about ``μ_k``; from the
    covariances about the means ``m_k`` the M-step would have taken it adds
    ``(n0_k / nk_k) δ_k δ_kᵀ`` with ``δ_k = m_k - μ_k`` (tied: ``Σ_k n0_k δ_k δ_kᵀ / Σ_k nk_k``;
    diag: the diagonal; spherical: its mean). ``n0`` (K,) the responsibility sums, ``nk`` the same
    plus scikit-learn's ``10 eps`` (:func:`estimate_parameters`; an empty component gains nothing),
    ``delta`` (K, D).
    """
    return of(covariance_type).about_fixed_means(np.asarray(covariances), np.asarray(n0), np.asarray(nk),
                                                 np.asarray(delta))


def second_moments_from_parameters(weights, means, covariances, reg_covar, covariance_type: str) -> np.ndarray:
    """The second moments a mixture's parameters stand for, per unit of weight.

    ``Σ_k w_k (Σ_k - reg I + m_k m_kᵀ)`` in the shape of ``covariance_type`` (``means``
    about the shift; tied pools with the weights, which sum to one); the inverse of
    :func:`estimate_parameters` up to scikit-learn's ``10 eps``.
    """
    return of(covariance_type).from_parameters(weights, means, covariances, reg_covar)


def component_covariance(covariances, covariance_type: str, k: int, n_features: int) -> np.ndarray:
    """The (D, D) covariance matrix of component ``k``."""
    return of(covariance_type).component_matrix(np.asarray(covariances, dtype=np.float64), k, n_features)


def on_a_point(covariances, covariance_type, reg_covar, rtol: float = ON_POINT_RTOL) -> np.ndarray:
    """Components whose covariance is ``reg_covar``'s (to within ``rtol``) in every direction.

    Their rows are one point (repeated rows: a saturated patch of an image), however many they are: the
    singularity of maximum likelihood for mixtures, which ``reg_covar`` only masks (without it the
    covariance would be zero). A component flat in some directions only (data with a column constant
    within a cluster, such as the border pixels of digits) is not one of them. None for ``tied`` or
    ``reg_covar=0`` (a zero covariance then fails the fit).

    Parameters
    ----------
    covariances : ndarray
        Fitted covariances (``reg_covar`` included) in the shape of ``covariance_type``.
    covariance_type : str
    reg_covar : float
    rtol : float
        A looser one names candidates that other evidence must confirm (a t component's scale keeps a
        share of its tails: :func:`daskgmm.fitting.studentt.t_on_a_point`).

    Returns
    -------
    ndarray of int, shape (n,)
    """
    t = of(covariance_type)
    if not t.per_component or not reg_covar > 0:
        return np.zeros(0, dtype=np.intp)
    covs = np.asarray(covariances, dtype=np.float64)
    largest = np.linalg.eigvalsh(covs)[:, -1] if t.dense else covs.reshape(len(covs), -1).max(axis=1)
    return np.flatnonzero(largest <= reg_covar * (1 + rtol))


def collapsed_components(covs, nk, covariance_type) -> np.ndarray:
    """Components that have collapsed: covariance not positive definite, or too little mass.

    A component that holds less responsibility than it takes to estimate its
    covariance from data (``D + 1`` rows for a full covariance, 2 for
    diagonal and spherical ones) sits on a point or a flat subspace: its
    likelihood grows without bound as its variance shrinks (kept finite only
    by ``reg_covar``), which is the singularity of maximum likelihood for
    mixtures.
    """
    return of(covariance_type).collapsed(covs, nk)
