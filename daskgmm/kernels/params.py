"""Parameters in the forms a pass uses: natural (linear in ``T``) and per-component (precise).

Pure NumPy; nothing here knows about Dask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from daskgmm.kernels import covariance as cov
from daskgmm.kernels.features import DIAG_LEVEL, FULL_LEVEL, SPHERICAL_LEVEL, diag_positions, n_quad_rows
from daskgmm.kernels.scratch import scratch


@dataclass(frozen=True)
class NaturalParams:
    """Per-component log-densities as quadratic forms of the centred row ``x``.

    ``logit_k(x) = quad_k(x) + lin[k] · x + const[k]`` with ``quad_k`` one of
    ``xᵀ A_k x`` (``quad`` of shape (K, D, D), symmetric), ``Σ_j a_kj x_j²``
    (shape (K, D)) or ``a_k ‖x‖²`` (shape (K,)).
    """

    quad: np.ndarray
    lin: np.ndarray
    const: np.ndarray

    @property
    def n_components(self) -> int:
        return self.lin.shape[0]

    @property
    def level(self) -> int:
        return {3: FULL_LEVEL, 2: DIAG_LEVEL, 1: SPHERICAL_LEVEL}[self.quad.ndim]

    def theta(self, level: int, dtype=np.float64) -> np.ndarray:
        """Coefficient matrix ``Θ`` of shape (K, P) against features at ``level``, in ``dtype``."""
        if level < self.level:
            raise ValueError("features of a lower level cannot express these log-densities")
        k, d = self.lin.shape
        q = n_quad_rows(level, d)
        out = np.zeros((k, q + d + 1), dtype=np.float64)
        if self.quad.ndim == 3:
            iu0, iu1 = np.triu_indices(d)
            out[:, :q] = self.quad[:, iu0, iu1] * np.where(iu0 == iu1, 1.0, 2.0)
        elif self.quad.ndim == 2:
            if level == FULL_LEVEL:
                out[:, diag_positions(d)] = self.quad
            else:
                out[:, :d] = self.quad
        else:
            if level == FULL_LEVEL:
                out[:, diag_positions(d)] = self.quad[:, None]
            elif level == DIAG_LEVEL:
                out[:, :d] = self.quad[:, None]
            else:
                out[:, 0] = self.quad
        out[:, q : q + d] = self.lin
        out[:, q + d] = np.maximum(self.const, const_floor(self.const, dtype))
        return out.astype(dtype, copy=False)


def const_floor(const: np.ndarray, dtype) -> float:
    """The lowest constant ``Θ`` takes: finite in ``dtype``, below every finite one.

    A weight of zero gives log 0 = -inf; it is kept finite so that BLAS never
    multiplies inf by a zero of its own padding, and below every finite constant
    (k-means' ``-‖c‖²`` passes 1e30 for centres 1e15 from the rows' mean) so that
    such a component never wins. In float32 it cannot go below float32's range.
    """
    finite = const[np.isfinite(const)]
    low = min(-1e30, 2.0 * float(finite.min())) if finite.size else -1e30
    return max(low, -float(np.finfo(dtype).max))


def kmeans_natural_params(centres: np.ndarray) -> NaturalParams:
    """``-‖x - c_k‖²`` as natural parameters, for centred ``centres`` (K, D)."""
    c = np.asarray(centres, dtype=np.float64)
    return NaturalParams(
        quad=-np.ones(c.shape[0]), lin=2.0 * c, const=-np.einsum("kd,kd->k", c, c)
    )


def kmeans_form(centers, shift=None) -> tuple[NaturalParams, np.ndarray]:
    """The log-density parameters of k-means about the centres' mean, and that mean (float64, (D,)); about
    ``shift`` where given (the fit's, where a few rows far from the others made its passes' shift robust: the
    centres' mean then lies far from the other rows, which it would take the precision of)."""
    centers = np.asarray(centers, np.float64)
    centre = centers.mean(axis=0) if shift is None else np.asarray(shift, np.float64)
    return kmeans_natural_params(centers - centre), centre


def kmeans_labels_form(centers, shift=None):
    """The form k-means' labels are taken in, and its centre: :func:`kmeans_form` about the centres' mean; with the
    fit's robust ``shift`` (rows far from the others), :func:`kmeans_precise` about it, each row's distances from its
    differences: a far centre's ``‖c‖²`` overflowed at 1e300 (every row then went to one centre), and the
    expansion's noise at a fill value of 1e20 is 1e24."""
    if shift is None:
        return kmeans_form(centers)
    centre = np.asarray(shift, np.float64)
    return kmeans_precise(centers, centre), centre


def kmeans_precise(centers, centre) -> PerComponent:
    """k-means' logits in the per-component form, halved: ``-‖x - c_k‖² / 2`` from each row's difference to each
    centre (``centers`` in data coordinates, ``centre`` the pass's shift), so the distance of a row at a fill value
    of 1e20 to its own centre is not the expansion's noise (1e24). Its log-likelihood is ``-inertia / 2``."""
    centers = np.asarray(centers, np.float64)
    k = centers.shape[0]
    return PerComponent(centers - np.asarray(centre, np.float64), np.ones(k), np.zeros(k), "spherical")


@dataclass(frozen=True)
class PerComponent:
    """Gaussian log-densities in scikit-learn's per-component form, for the precise path.

    ``logit_k(x) = const[k] - ‖U_kᵀ (x - m_k)‖² / 2`` with ``x`` and ``m`` centred.
    Each component's rows are differenced from its own mean before anything is
    squared, so no precision is lost however far the mean lies from the
    centre, and the statistics are taken about each component's mean (the
    per-component shift). Costs about twice the shared-feature path.

    Attributes
    ----------
    means : ndarray, shape (K, D)
        Component means minus the pass centre.
    factor : ndarray
        Precision Cholesky factors ``U``: (K, D, D) full, (D, D) tied, (K, D)
        diag, (K,) spherical.
    const : ndarray, shape (K,)
        ``log π_k + log det U_k - D/2 log 2π``.
    covariance_type : str
    """

    means: np.ndarray
    factor: np.ndarray
    const: np.ndarray
    covariance_type: str

    def whitened(self, xT: np.ndarray) -> np.ndarray:
        """``Y[k] = U_kᵀ (x - m_k)`` for a block, shape (K, D, nb), in a scratch buffer."""
        k, d = self.means.shape
        nb = xT.shape[1]
        dt = xT.dtype
        z = scratch("pc-diff", (k, d, nb), dt)
        np.subtract(xT[None, :, :], self.means.astype(dt)[:, :, None], out=z)
        t = cov.of(self.covariance_type)
        u = t.factors(self.factor, k, d)
        if t.dense:
            y = scratch("pc-white", (k, d, nb), dt)
            np.matmul(np.ascontiguousarray(u.transpose(0, 2, 1)).astype(dt), z, out=y)
            return y, z
        return z * u.astype(dt)[:, :, None], z

    def logits(self, xT: np.ndarray, out: np.ndarray) -> tuple:
        """Write the (K, nb) logits of a centred, transposed block into ``out``; return the differences."""
        y, z = self.whitened(xT)
        np.einsum("kdn,kdn->kn", y, y, out=out)
        out *= -0.5
        out += self.const.astype(out.dtype)[:, None]
        return z


#: Largest predicted absolute error of a logit on the shared-feature path before a
#: model switches to the per-component path (responsibilities are then exact to
#: about this relative error).
LOGIT_TOLERANCE = {np.dtype(np.float64): 1e-8, np.dtype(np.float32): 1e-4}


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
    d = means.shape[1]
    m = means - np.asarray(centre, dtype=np.float64)
    u = np.asarray(prec_chol, dtype=np.float64)
    t = cov.of(covariance_type)
    with np.errstate(divide="ignore"):
        log_w = np.log(np.asarray(weights, dtype=np.float64))
    base = log_w + t.log_det(u, d) - 0.5 * d * math.log(2 * math.pi)
    prec, pm, mpm = t.quadratic_parts(m, u)
    return NaturalParams(quad=-0.5 * prec, lin=pm, const=base - 0.5 * mpm)


def conditioning(means, prec_chol, covariance_type, centre) -> float:
    """How far the components' means lie from ``centre`` in their own metric: ``max_k m_kᵀ P_k m_k + D``.

    On the shared-feature path a logit is a difference of terms of this size
    (``xᵀPx``, ``2 mᵀPx``, ``mᵀPm`` for rows near the component), so its
    absolute rounding error is about ``eps`` times this; measured within a
    factor of two on Old Faithful, the benchmark data and an id-like column.
    """
    m = np.asarray(means, dtype=np.float64) - np.asarray(centre, dtype=np.float64)
    k, d = m.shape
    t = cov.of(covariance_type)
    uu = t.factors(np.asarray(prec_chol, dtype=np.float64), k, d)
    if t.dense:
        q = (np.einsum("kd,kde->ke", m, uu) ** 2).sum(axis=1)
    else:
        q = ((m * uu) ** 2).sum(axis=1)
    return float(q.max() + d)


def precise_needed(means, prec_chol, covariance_type, centre, dtype) -> bool:
    """Whether the shared-feature path would lose more than ``LOGIT_TOLERANCE`` in the logits."""
    dtype = np.dtype(dtype)
    eps = np.finfo(dtype).eps
    return eps * conditioning(means, prec_chol, covariance_type, centre) > LOGIT_TOLERANCE.get(dtype, 1e-8)


def per_component(weights, means, prec_chol, covariance_type, centre) -> PerComponent:
    """The per-component form of the weighted log-densities (see :class:`PerComponent`)."""
    means = np.asarray(means, dtype=np.float64)
    d = means.shape[1]
    u = np.asarray(prec_chol, dtype=np.float64)
    with np.errstate(divide="ignore"):
        log_w = np.log(np.asarray(weights, dtype=np.float64))
    const = (np.maximum(log_w, -1e30) + cov.of(covariance_type).log_det(u, d)
             - 0.5 * d * math.log(2 * math.pi))
    return PerComponent(means - np.asarray(centre, dtype=np.float64), u,
                        np.broadcast_to(const, (means.shape[0],)).copy(), covariance_type)
