"""Covariance algebra per covariance type: M-step, precision Cholesky, log-densities.

Pure NumPy. Shapes follow scikit-learn:

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

import math

import numpy as np

from daskgmm.kernels.features import DIAG_LEVEL, FULL_LEVEL, diag_positions
from daskgmm.kernels.params import NaturalParams, PerComponent
from daskgmm.kernels.results import SuffStats, frozen

#: The covariance types, in scikit-learn's order.
COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")

#: Largest predicted absolute error of a logit on the shared-feature path before a
#: model switches to the per-component path (responsibilities are then exact to
#: about this relative error).
LOGIT_TOLERANCE = {np.dtype(np.float64): 1e-8, np.dtype(np.float32): 1e-4}


def covariance_shape(covariance_type: str, n_components: int, n_features: int) -> tuple:
    """Shape of covariances (and precisions, and their Cholesky factors)."""
    k, d = n_components, n_features
    return {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[covariance_type]


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
    cov = {
        "full": k * d * (d + 1) / 2.0,
        "diag": k * d,
        "tied": d * (d + 1) / 2.0,
        "spherical": k,
    }[covariance_type]
    return int(cov + k * d + k - 1)


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
    ct = stats.covariance_type
    d = m.shape[1]
    # scikit-learn's tied, diag and spherical M-steps subtract the mean's square in
    # data coordinates, Σ r x x ᵀ / nk - μ μᵀ, which equals the scatter about the mean
    # plus (1 - n0 / nk) μ μᵀ = (10 eps / nk) μ μᵀ because of the 10 eps in nk. The
    # term is tiny, but it keeps a component on a single point positive (reg_covar=0).
    # It is taken with float64's eps whatever the data's dtype: the statistics are float64,
    # and float32's (1.2e-6 μ²) is scikit-learn's float32 error, e.g. a variance of 112
    # for a component on the point 9999 with reg_covar=0.1 (its issue #30382)
    guard = (n0 + 10 * np.finfo(np.float64).eps) - n0  # as rounded, where scikit-learn's arithmetic has it
    pad = guard / nk
    # scikit-learn computes μ in data coordinates, where a component on the point 0 has μ = 0
    # exactly; about a shift it is off by rounding (~eps |shift|), which the term above would
    # turn into a spurious positive variance: below that rounding, μ is 0
    noise = 4 * np.finfo(np.float64).eps * (np.abs(stats.shift) + np.abs(m))
    means_exact = np.where(np.abs(means) <= noise, 0.0, means)
    if ct in ("full", "tied"):
        # Σ_i r (x - μ)(x - μ)ᵀ = s2 - s1 mᵀ - m s1ᵀ + n0 m mᵀ, exact for any shift.
        cross = np.einsum("ki,kj->kij", stats.s1, m)
        corr = cross + cross.transpose(0, 2, 1) - n0[:, None, None] * np.einsum("ki,kj->kij", m, m)
        if ct == "full":
            cov = (stats.s2 - corr) / nk[:, None, None]
            cov = 0.5 * (cov + cov.transpose(0, 2, 1))
        else:
            extra = np.einsum("k,ki,kj->ij", guard, means_exact, means_exact)
            cov = (stats.s2 - corr.sum(axis=0) + extra) / nk.sum()
            cov = 0.5 * (cov + cov.T)
        cov[..., np.arange(d), np.arange(d)] += reg_covar
    else:
        diag_s2 = stats.s2 if ct == "diag" else None
        corr = 2.0 * stats.s1 * m - n0[:, None] * m**2
        extra = pad[:, None] * means_exact**2
        if ct == "diag":
            cov = (diag_s2 - corr) / nk[:, None] + extra + reg_covar
        else:
            cov = (stats.s2 - corr.sum(axis=1)) / (nk * d) + extra.mean(axis=1) + reg_covar
    return nk, means, cov


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


def precisions_cholesky(covariances, covariance_type, *, reg_covar=None, float32=False):
    """Cholesky factors of the precisions, raising a clear error on a collapse.

    Raises
    ------
    ValueError
        Naming the components whose covariance is not positive definite (or
        not finite), and suggesting a larger ``reg_covar``.
    """
    cov = np.asarray(covariances, dtype=np.float64)
    reg = float("nan") if reg_covar is None else reg_covar
    if covariance_type in ("full", "tied"):
        stack = cov[None] if covariance_type == "tied" else cov
        d = stack.shape[-1]
        bad = [k for k in range(stack.shape[0]) if not np.all(np.isfinite(stack[k]))]
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
        eye = np.broadcast_to(np.eye(d), stack.shape)
        prec = np.linalg.solve(chol, eye).transpose(0, 2, 1)
        return prec[0] if covariance_type == "tied" else prec
    bad_mask = ~(np.isfinite(cov) & (cov > 0))
    if bad_mask.any():
        comps = np.flatnonzero(bad_mask.reshape(cov.shape[0], -1).any(axis=1))
        raise _collapse_error(comps, covariance_type, reg, float32)
    return 1.0 / np.sqrt(cov)


def precisions_cholesky_from_precisions(precisions, covariance_type):
    """Upper-triangular ``U`` with ``P = U Uᵀ`` (scikit-learn's convention)."""
    p = np.asarray(precisions, dtype=np.float64)
    if covariance_type in ("full", "tied"):
        # Cholesky of the row/column-reversed matrix, reversed back, is upper triangular.
        flipped = p[..., ::-1, ::-1]
        return np.linalg.cholesky(flipped)[..., ::-1, ::-1].copy()
    return np.sqrt(p)


def precisions_from_cholesky(prec_chol, covariance_type):
    """``P = U Uᵀ`` (or ``U²`` for diagonal and spherical)."""
    u = np.asarray(prec_chol)
    if covariance_type == "full":
        return np.einsum("kij,klj->kil", u, u)
    if covariance_type == "tied":
        return u @ u.T
    return u**2


def covariances_from_precisions(precisions, covariance_type):
    """Inverse of the precisions."""
    p = np.asarray(precisions, dtype=np.float64)
    if covariance_type in ("full", "tied"):
        cov = np.linalg.inv(p)
        return 0.5 * (cov + np.swapaxes(cov, -1, -2))
    return 1.0 / p


def log_det_cholesky(prec_chol, covariance_type, n_features):
    """``log det U`` per component (half the log-determinant of the precision)."""
    u = np.asarray(prec_chol, dtype=np.float64)
    if covariance_type == "full":
        return np.log(np.diagonal(u, axis1=1, axis2=2)).sum(axis=1)
    if covariance_type == "tied":
        return np.log(np.diagonal(u)).sum()
    if covariance_type == "diag":
        return np.log(u).sum(axis=1)
    return n_features * np.log(u)


def natural_params(weights, means, prec_chol, covariance_type, centre) -> NaturalParams:
    """Weighted component log-densities ``log π_k + log N(x | μ_k, Σ_k)`` as quadratic forms.

    Parameters
    ----------
    weights : ndarray, shape (K,)
    means : ndarray, shape (K, D)
    prec_chol : ndarray
        Precision Cholesky factors in the shape of ``covariance_type``.
    covariance_type : str
    centre : ndarray, shape (D,)
        The shift the rows will be expressed about.

    Returns
    -------
    NaturalParams
    """
    means = np.asarray(means, dtype=np.float64)
    k, d = means.shape
    m = means - np.asarray(centre, dtype=np.float64)
    u = np.asarray(prec_chol, dtype=np.float64)
    with np.errstate(divide="ignore"):
        log_w = np.log(np.asarray(weights, dtype=np.float64))
    log_det = log_det_cholesky(u, covariance_type, d)
    base = log_w + log_det - 0.5 * d * math.log(2 * math.pi)
    if covariance_type in ("full", "tied"):
        uu = np.broadcast_to(u, (k, d, d)) if covariance_type == "tied" else u
        y = np.einsum("kd,kde->ke", m, uu)  # Uᵀ m, so mᵀ P m = ‖y‖²
        prec = np.einsum("kij,klj->kil", uu, uu)
        lin = np.einsum("kde,ke->kd", uu, y)
        return NaturalParams(quad=-0.5 * prec, lin=lin, const=base - 0.5 * (y**2).sum(axis=1))
    p = u**2
    if covariance_type == "diag":
        return NaturalParams(quad=-0.5 * p, lin=p * m, const=base - 0.5 * (p * m**2).sum(axis=1))
    return NaturalParams(quad=-0.5 * p, lin=p[:, None] * m, const=base - 0.5 * p * (m**2).sum(axis=1))


def conditioning(means, prec_chol, covariance_type, centre) -> float:
    """How far the components' means lie from ``centre`` in their own metric: ``max_k m_kᵀ P_k m_k + D``.

    On the shared-feature path a logit is a difference of terms of this size
    (``xᵀPx``, ``2 mᵀPx``, ``mᵀPm`` for rows near the component), so its
    absolute rounding error is about ``eps`` times this; measured within a
    factor of two on Old Faithful, the benchmark data and an id-like column.
    """
    m = np.asarray(means, dtype=np.float64) - np.asarray(centre, dtype=np.float64)
    k, d = m.shape
    u = np.asarray(prec_chol, dtype=np.float64)
    if covariance_type in ("full", "tied"):
        uu = np.broadcast_to(u, (k, d, d)) if covariance_type == "tied" else u
        q = (np.einsum("kd,kde->ke", m, uu) ** 2).sum(axis=1)
    elif covariance_type == "diag":
        q = ((m * u) ** 2).sum(axis=1)
    else:
        q = (m**2).sum(axis=1) * u**2
    return float(q.max() + d)


def precise_needed(means, prec_chol, covariance_type, centre, dtype) -> bool:
    """Whether the shared-feature path would lose more than ``LOGIT_TOLERANCE`` in the logits."""
    dtype = np.dtype(dtype)
    eps = np.finfo(dtype).eps
    return eps * conditioning(means, prec_chol, covariance_type, centre) > LOGIT_TOLERANCE.get(dtype, 1e-8)


def per_component(weights, means, prec_chol, covariance_type, centre) -> PerComponent:
    """The per-component form of the weighted log-densities (see :class:`daskgmm.stats.PerComponent`)."""
    means = np.asarray(means, dtype=np.float64)
    d = means.shape[1]
    u = np.asarray(prec_chol, dtype=np.float64)
    with np.errstate(divide="ignore"):
        log_w = np.log(np.asarray(weights, dtype=np.float64))
    const = np.maximum(log_w, -1e30) + log_det_cholesky(u, covariance_type, d) - 0.5 * d * math.log(2 * math.pi)
    return PerComponent(means - np.asarray(centre, dtype=np.float64), u,
                        np.broadcast_to(const, (means.shape[0],)).copy(), covariance_type)


# --- second moments in the shape of each type -------------------------------------------
# One function per covariance type, one signature each, chosen from a dict (as
# scikit-learn's _gaussian_mixture.py does).


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


def _features_full(quad, level, d):
    if level != FULL_LEVEL:
        raise ValueError("diagonal or spherical features cannot give full second moments")
    return _vech_to_full(quad, d)


_FROM_FEATURES = {
    "full": _features_full,
    "tied": lambda quad, level, d: _features_full(quad, level, d).sum(axis=0),
    "diag": lambda quad, level, d: _diag_of_features(quad, level, d, "diag"),
    "spherical": lambda quad, level, d: (
        quad[:, 0].copy() if level < DIAG_LEVEL else _diag_of_features(quad, level, d, "spherical").sum(axis=1)
    ),
}


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
    return _FROM_FEATURES[covariance_type](quad, level, n_features)


_ABOUT_MEANS = {
    "full": lambda wz, z: np.matmul(wz, z.transpose(0, 2, 1)),
    "tied": lambda wz, z: np.matmul(wz, z.transpose(0, 2, 1)).sum(axis=0),
    "diag": lambda wz, z: np.einsum("kdn,kdn->kd", wz, z),
    "spherical": lambda wz, z: np.einsum("kdn,kdn->k", wz, z),
}


def moments_about_means(wz: np.ndarray, z: np.ndarray, covariance_type: str) -> np.ndarray:
    """``Σ_n r_kn z_kn z_knᵀ`` in the shape of ``covariance_type``, float64.

    ``z`` (K, D, nb) holds each row's difference from each component's mean and
    ``wz`` the same times the (weighted) responsibilities.
    """
    return _ABOUT_MEANS[covariance_type](wz, z).astype(np.float64)


def pool_components(s2: np.ndarray, covariance_type: str) -> np.ndarray:
    """Per-component second moments (K, ...) in the shape of ``covariance_type`` (tied: summed)."""
    return s2.sum(axis=0) if covariance_type == "tied" else s2


def _outer_shift(s1, n, delta):
    cross = np.einsum("ki,kj->kij", s1, delta)
    return cross + cross.transpose(0, 2, 1) + n[:, None, None] * np.einsum("ki,kj->kij", delta, delta)


_SHIFT = {
    "full": lambda s2, n, s1, delta: s2 + _outer_shift(s1, n, delta),
    "tied": lambda s2, n, s1, delta: s2 + _outer_shift(s1, n, delta).sum(axis=0),
    "diag": lambda s2, n, s1, delta: s2 + 2.0 * s1 * delta + n[:, None] * delta**2,
    "spherical": lambda s2, n, s1, delta: s2 + 2.0 * (s1 * delta).sum(axis=1) + n * (delta**2).sum(axis=1),
}


def shift_second_moments(s2, n, s1, delta, covariance_type: str) -> np.ndarray:
    """Second moments about ``old shift - delta`` from those about the old shift.

    ``Σ r (z + δ)(z + δ)ᵀ = s2 + s1 δᵀ + δ s1ᵀ + n δ δᵀ`` in the shape of ``covariance_type``;
    ``n`` (K,), ``s1`` and ``delta`` (K, D).
    """
    return _SHIFT[covariance_type](s2, n, s1, delta)


_FROM_PARAMETERS = {
    "full": lambda w, m, covs, reg, eye: w[:, None, None] * (covs - reg * eye + np.einsum("ki,kj->kij", m, m)),
    "tied": lambda w, m, covs, reg, eye: covs - reg * eye + np.einsum("k,ki,kj->ij", w, m, m),
    "diag": lambda w, m, covs, reg, eye: w[:, None] * (covs - reg + m**2),
    "spherical": lambda w, m, covs, reg, eye: w * (len(eye) * (covs - reg) + (m**2).sum(axis=1)),
}


def second_moments_from_parameters(weights, means, covariances, reg_covar, covariance_type: str) -> np.ndarray:
    """The second moments a mixture's parameters stand for, per unit of weight.

    ``Σ_k w_k (Σ_k - reg I + m_k m_kᵀ)`` in the shape of ``covariance_type`` (``means``
    about the shift; tied pools with the weights, which sum to one); the inverse of
    :func:`estimate_parameters` up to scikit-learn's ``10 eps``.
    """
    eye = np.eye(np.shape(means)[1])
    return _FROM_PARAMETERS[covariance_type](weights, means, covariances, reg_covar, eye)


_COMPONENT = {
    "full": lambda covs, k, d: covs[k],
    "tied": lambda covs, k, d: covs,
    "diag": lambda covs, k, d: np.diag(covs[k]),
    "spherical": lambda covs, k, d: np.eye(d) * covs[k],
}


def component_covariance(covariances, covariance_type: str, k: int, n_features: int) -> np.ndarray:
    """The (D, D) covariance matrix of component ``k``."""
    return _COMPONENT[covariance_type](np.asarray(covariances, dtype=np.float64), k, n_features)


def collapsed_components(covs, nk, covariance_type) -> np.ndarray:
    """Components that have collapsed: covariance not positive definite, or too little mass.

    A component that holds less responsibility than it takes to estimate its
    covariance from data (``D + 1`` rows for a full covariance, 2 for
    diagonal and spherical ones) sits on a point or a flat subspace: its
    likelihood grows without bound as its variance shrinks (kept finite only
    by ``reg_covar``), which is the singularity of maximum likelihood for
    mixtures.
    """
    covs = np.asarray(covs)
    d = covs.shape[-1] if covariance_type in ("full", "diag") else 1
    need = d + 1 if covariance_type == "full" else 2
    bad = []
    for k in range(covs.shape[0]):
        c = covs[k]
        if not np.all(np.isfinite(c)) or nk[k] < need:
            bad.append(k)
        elif covariance_type == "full":
            try:
                np.linalg.cholesky(c)
            except np.linalg.LinAlgError:
                bad.append(k)
        elif np.any(c <= 0):
            bad.append(k)
    return np.array(bad, dtype=np.intp)
