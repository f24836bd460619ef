"""Parameters in the forms a pass uses: natural (linear in ``T``) and per-component (precise).

Pure NumPy; nothing here knows about Dask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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

    def theta(self, level: int) -> np.ndarray:
        """Coefficient matrix ``Θ`` of shape (K, P) against features at ``level``."""
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
        # A weight of zero gives log 0 = -inf; keep it finite so that BLAS never
        # multiplies inf by a zero of its own padding.
        out[:, q + d] = np.maximum(self.const, -1e30)
        return out


def kmeans_natural_params(centres: np.ndarray) -> NaturalParams:
    """``-‖x - c_k‖²`` as natural parameters, for centred ``centres`` (K, D)."""
    c = np.asarray(centres, dtype=np.float64)
    return NaturalParams(
        quad=-np.ones(c.shape[0]), lin=2.0 * c, const=-np.einsum("kd,kd->k", c, c)
    )


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
        ct = self.covariance_type
        if ct in ("full", "tied"):
            u = np.broadcast_to(self.factor, (k, d, d)) if ct == "tied" else self.factor
            y = scratch("pc-white", (k, d, nb), dt)
            np.matmul(np.ascontiguousarray(u.transpose(0, 2, 1)).astype(dt), z, out=y)
            return y, z
        u = self.factor if ct == "diag" else np.broadcast_to(self.factor[:, None], (k, d))
        return z * u.astype(dt)[:, :, None], z

    def logits(self, xT: np.ndarray, out: np.ndarray) -> tuple:
        """Write the (K, nb) logits of a centred, transposed block into ``out``; return the differences."""
        y, z = self.whitened(xT)
        np.einsum("kdn,kdn->kn", y, y, out=out)
        out *= -0.5
        out += self.const.astype(out.dtype)[:, None]
        return z
