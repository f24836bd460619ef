"""Rows with missing values (NaN): marginal log-densities and expected statistics.

The EM for incomplete data (Ghahramani & Jordan 1994; Little & Rubin 2002, ch. 11):
the E-step scores a row by the marginal density of its observed features; the M-step
adds, for each component, the conditional expectations ``E[x_m | x_o]`` of the missing
features and the conditional covariance ``Cov[x_m | x_o]`` into ``Σ r x xᵀ``.

Everything is written with the precision ``P = U Uᵀ`` of a component, for which the
conditional of the missing part is direct: ``Cov[x_m | x_o] = P_mm⁻¹`` and
``E[x_m | x_o] = μ_m - P_mm⁻¹ P_mo (x_o - μ_o)``. The marginal precision of the observed
part is the Schur complement ``P_oo - P_om P_mm⁻¹ P_mo``, whose log-determinant is
``log det P - log det P_mm``, and the observed part's Mahalanobis distance is that of
the completed row ``(x̂ - μ)ᵀ P (x̂ - μ)`` (the completion minimises it over ``x_m``).

Rows are grouped by their number of missing features so that the work is batched
linear algebra over (components, rows) whatever the patterns are; each row's own
pattern is gathered by fancy indexing. All arithmetic is float64.

Pure NumPy; nothing here knows about Dask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from daskgmm.kernels import covariance as cov
from daskgmm.kernels.features import DIAG_LEVEL, FULL_LEVEL
from daskgmm.kernels.params import PerComponent

_LOG_2PI = math.log(2 * math.pi)


@dataclass
class Completion:
    """Per-component completions of some incomplete rows, for the M-step.

    Attributes
    ----------
    rows : ndarray of intp, shape (n,)
        Which of the incomplete rows (positions in the array given to
        :func:`marginal_logits`) this group holds.
    xhat : ndarray, shape (K, n, D)
        ``E[x | x_o, k]``: observed values, and the conditional means of the
        missing ones, in the coordinates of the rows given.
    missing : ndarray of intp, shape (n, m) or None
        Missing features of each row (full and tied: ``m`` per row).
    cond : ndarray
        ``Cov[x_m | x_o, k]``: (K, n, m, m) for full and tied (with ``missing``);
        for diag and spherical its diagonal embedded in (K, n, D), 0 where observed.
    """

    rows: np.ndarray
    xhat: np.ndarray
    missing: np.ndarray | None
    cond: np.ndarray

    @property
    def n_features(self) -> int:
        return self.xhat.shape[2]


@dataclass
class DiagCompletion:
    """Completions of incomplete rows under diagonal (or spherical) covariances.

    Every component completes a missing feature with its own mean, and its conditional
    variance is the component's variance, so the statistics are GEMMs with the
    observed values and the missing-value indicators (no per-row arrays per component).

    Attributes
    ----------
    x0 : ndarray, shape (n, D)
        The rows with 0 where missing.
    miss : ndarray, shape (n, D)
        1.0 where missing, else 0.0.
    means : ndarray, shape (K, D)
    var : ndarray, shape (K, D)
        Component variances.
    """

    x0: np.ndarray
    miss: np.ndarray
    means: np.ndarray
    var: np.ndarray

    @property
    def n_features(self) -> int:
        return self.x0.shape[1]

    def general(self) -> Completion:
        """The same as a :class:`Completion` (for second moments beyond the diagonal)."""
        m = self.miss[None] > 0
        xhat = np.where(m, self.means[:, None, :], self.x0[None])
        return Completion(np.arange(len(self.x0)), xhat, None, np.where(m, self.var[:, None, :], 0.0))


def _conditional_solve(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``a⁻¹``, ``a⁻¹ b`` and ``log det a`` for a stack of small SPD matrices ``a``, by Cholesky.

    The matrices are tiny (the missing features of one row) and there are K of them
    per row, where LAPACK's per-matrix call through ``numpy.linalg`` costs several
    times the arithmetic. So the stack is moved to the last axis and the Cholesky
    factor, its inverse and the products are written entry by entry, each entry one
    vector operation over the whole stack (measured with scripts/profile_missing.py:
    4.2 CPU s per 1M rows for these steps with the stack first, where each step
    contracts a few trailing elements at a time).

    Parameters
    ----------
    a : ndarray, shape (..., m, m)
    b : ndarray, shape (..., m)

    Returns
    -------
    inv : ndarray, shape (..., m, m)
    x : ndarray, shape (..., m)
        ``a⁻¹ b``.
    logdet : ndarray, shape (...)
    """
    m = a.shape[-1]
    lead = a.shape[:-2]
    A = np.ascontiguousarray(np.moveaxis(a.reshape(-1, m, m), 0, -1))  # (m, m, S): entries over the stack
    low = np.zeros((m, m, A.shape[-1]))
    for j in range(m):  # one column of L per step
        col = A[j:, j] - np.einsum("iks,ks->is", low[j:, :j], low[j, :j]) if j else A[j:, j].copy()
        np.sqrt(col[0], out=low[j, j])
        np.divide(col[1:], low[j, j], out=low[j + 1 :, j])
    # forward substitution of L X = I, one row of X = L⁻¹ per step (X is lower
    # triangular, so the sum may run over every k < i)
    inv_l = np.zeros_like(low)
    for i in range(m):
        np.divide(1.0, low[i, i], out=inv_l[i, i])
        if i:
            row = np.einsum("ks,kjs->js", low[i, :i], inv_l[:i, :i])
            np.divide(-row, low[i, i], out=inv_l[i, :i])
    # a⁻¹ = Xᵀ X, one row per step: (a⁻¹)_pq = Σ_{i >= p} X_ip X_iq (X_iq = 0 for i < q)
    inv = np.empty_like(low)
    for p in range(m):
        inv[p] = np.einsum("is,iqs->qs", inv_l[p:, p], inv_l[p:])
    B = np.ascontiguousarray(np.moveaxis(b.reshape(-1, m), 0, -1))  # (m, S)
    x = np.einsum("pqs,qs->ps", inv, B)
    logdet = 2.0 * np.log(np.diagonal(low, axis1=0, axis2=1)).sum(axis=-1)
    return (np.moveaxis(inv, -1, 0).reshape(*lead, m, m), np.moveaxis(x, -1, 0).reshape(*lead, m),
            logdet.reshape(lead))


def marginal_logits(pc: PerComponent, x: np.ndarray, exact: bool = False) -> tuple[np.ndarray, list]:
    """``log π_k + log N(x_o | μ_k,o, Σ_k,oo)`` of rows with missing values, and their completions.

    Parameters
    ----------
    pc : PerComponent
        The model (means in the coordinates of ``x``).
    x : ndarray, shape (n, D)
        Rows in the coordinates of ``pc.means``, NaN where missing.
    exact : bool
        Diag and spherical: difference every row from every mean first (per-row arrays
        per component; the precise path, for rows far from the centre) rather than
        expand the squares into GEMMs (which loses what the shared features lose).

    Returns
    -------
    logits : ndarray, shape (K, n)
        float64. A row with no observed feature gets ``log π_k``.
    completions : list of Completion or DiagCompletion
        Covering every row once.
    """
    x = np.asarray(x, dtype=np.float64)
    k, n = np.shape(pc.means)[0], x.shape[0]
    if n == 0:
        return np.empty((k, n)), []
    q, half_logdet_m, counts, out = marginal_distances(pc, x, exact)
    const = np.asarray(pc.const, dtype=np.float64)
    logits = const[:, None] - half_logdet_m + 0.5 * counts * _LOG_2PI - 0.5 * q
    return logits, out


def marginal_distances(pc: PerComponent, x: np.ndarray, exact: bool = False):
    """What the marginal density of each row's observed features needs, per component.

    For the observed part ``x_o`` of a row and component ``k`` (precision ``P``): the
    squared Mahalanobis distance ``δ_o = (x_o - μ_o)ᵀ Σ_oo⁻¹ (x_o - μ_o)``, which is that of
    the completed row ``(x̂ - μ)ᵀ P (x̂ - μ)``, and ``½ log det P_mm`` (so that the observed
    part's ``½ log det Σ_oo⁻¹`` is ``½ log det P - ½ log det P_mm``). A Gaussian
    (:func:`marginal_logits`) and a Student-t (:mod:`daskgmm.kernels.studentt`) marginal
    density are both made of them.

    Parameters
    ----------
    pc : PerComponent
        Means and precision factors in the coordinates of ``x`` (``const`` is not used).
    x : ndarray, shape (n, D)
        Rows with NaN where missing; n > 0.
    exact : bool
        As in :func:`marginal_logits`.

    Returns
    -------
    q : ndarray, shape (K, n)
        ``δ_o``.
    half_logdet_m : ndarray, shape (K, n)
        ``½ log det P_mm`` (0 for a complete row).
    counts : ndarray, shape (n,)
        Missing features per row.
    completions : list of Completion or DiagCompletion
        Covering every row once: ``E[x | x_o, k]`` and ``Cov[x_m | x_o, k] = P_mm⁻¹``.
    """
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    means = np.asarray(pc.means, dtype=np.float64)
    k = means.shape[0]
    u = np.asarray(pc.factor, dtype=np.float64)
    miss = np.isnan(x)
    counts = miss.sum(axis=1)
    q = np.empty((k, n))
    half = np.empty((k, n))
    t = cov.of(pc.covariance_type)
    uu = t.factors(u, k, d)
    if not t.dense:
        p = uu**2
        x0 = np.where(miss, 0.0, x)
        obs = (~miss).astype(np.float64)
        # log det of the missing block of the precision, halved: Σ_missing log u
        half[:] = np.log(uu) @ (1.0 - obs).T  # (K, n)
        if exact:
            z = np.where(miss[None], 0.0, x[None] - means[:, None, :])  # (K, n, D)
            q[:] = np.einsum("knd,knd->kn", z, z * p[:, None, :])
            return q, half, counts, [DiagCompletion(x0, 1.0 - obs, means, 1.0 / p).general()]
        # Σ_observed p (x - μ)² as three GEMMs over the observed values
        q[:] = p @ (x0 * x0).T - 2.0 * (p * means) @ x0.T + (p * means**2) @ obs.T
        return q, half, counts, [DiagCompletion(x0, 1.0 - obs, means, 1.0 / p)]
    prec = np.einsum("kij,klj->kil", uu, uu)
    x0 = np.where(miss, 0.0, x)
    obs = (~miss).astype(np.float64)
    out = []
    for m in np.unique(counts):
        sel = np.flatnonzero(counts == m)
        ms = miss[sel]
        # (K, ns, D), zeros where missing: a subtraction and a product (a three-operand where
        # over the (K, ns, D) array cost twice as much)
        z = x0[sel][None] - means[:, None, :]
        z *= obs[sel][None]
        if m == 0:
            mi = np.zeros((len(sel), 0), dtype=np.intp)
            y = np.zeros((k, len(sel), 0))
            logdet_m = np.zeros((k, len(sel)))
            cond = np.zeros((k, len(sel), 0, 0))
        else:
            mi = np.nonzero(ms)[1].reshape(len(sel), m)  # row-major: each row's missing features, ascending
            pmm = prec[:, mi[:, :, None], mi[:, None, :]]  # (K, ns, m, m): the missing block of the precision
            # P_mo (x_o - μ_o) = (P z)_m, since z is 0 where missing: one batched GEMM and a
            # gather, instead of gathering the (K, ns, m, D) rows of P first
            b = np.take_along_axis(np.matmul(z, prec), mi[None], axis=2)
            cond, y, logdet_m = _conditional_solve(pmm, b)  # P_mm⁻¹, P_mm⁻¹ b, log det P_mm
        dev = z.copy()  # x̂ - μ: observed deviations, and -y in the missing places
        if m:
            # by flat positions within each component's (ns, D) rows: half put_along_axis's time
            flat = (np.arange(len(sel))[:, None] * d + mi).ravel()
            dev.reshape(k, -1)[:, flat] = -y.reshape(k, -1)
        white = np.matmul(dev, uu)  # rows of (Uᵀ (x̂ - μ))ᵀ
        q[:, sel] = np.einsum("knd,knd->kn", white, white)
        half[:, sel] = 0.5 * logdet_m
        out.append(Completion(sel, dev + means[:, None, :], mi, cond))
    return q, half, counts, out


def completed_moments(completions: list[Completion], resp: np.ndarray, shift: np.ndarray, level: int,
                      cond_resp: np.ndarray | None = None):
    """Expected statistics ``Σ r E[T(x)]`` of incomplete rows about ``shift``.

    Parameters
    ----------
    completions : list of Completion
        From :func:`marginal_logits`.
    resp : ndarray, shape (K, n)
        Responsibilities of the rows (times their sample weights).
    shift : ndarray, shape (D,) or (K, D)
        The point the moments are about (one for all components, or each one's).
    level : int
        Second moments wanted: full (K, D, D), diag (K, D) or spherical (K,).
    cond_resp : ndarray, shape (K, n), optional
        Weights of the conditional covariances in the second moments, when they are not
        ``resp``: a Student-t row has ``E[u x xᵀ | x_o] = u x̂ x̂ᵀ + Cov[x_m | x_o]`` (the
        covariance given ``u`` is the scale's over ``u``), so its moments weigh the
        completions by ``r u`` and the covariances by ``r``.

    Returns
    -------
    n : ndarray, shape (K,)
    s1 : ndarray, shape (K, D)
    s2 : ndarray, shape (K, D, D), (K, D) or (K,)
    """
    resp = np.asarray(resp, dtype=np.float64)
    cresp = resp if cond_resp is None else np.asarray(cond_resp, dtype=np.float64)
    k = resp.shape[0]
    d = completions[0].n_features if completions else np.shape(shift)[-1]
    shift = np.broadcast_to(np.asarray(shift, dtype=np.float64), (k, d))
    n = resp.sum(axis=1)
    s1 = np.zeros((k, d))
    s2 = np.zeros({FULL_LEVEL: (k, d, d), DIAG_LEVEL: (k, d)}.get(level, (k,)))
    for c in completions:
        if isinstance(c, DiagCompletion):
            if level == FULL_LEVEL:
                c = c.general()
            else:
                # Σ r x̂ = r·x0 + (r·miss) μ;  Σ r (x̂² + var) = r·x0² + (r·miss)(μ² + var), about the shift
                rm = resp @ c.miss
                sx = resp @ c.x0 + rm * c.means
                if cond_resp is None:
                    sxx = resp @ (c.x0 * c.x0) + rm * (c.means**2 + c.var)
                else:
                    sxx = resp @ (c.x0 * c.x0) + rm * c.means**2 + (cresp @ c.miss) * c.var
                s1 += sx - n[:, None] * shift
                diag = sxx - 2.0 * shift * sx + n[:, None] * shift**2
                s2 += diag if level == DIAG_LEVEL else diag.sum(axis=1)
                continue
        r = resp[:, c.rows]
        rc = r if cond_resp is None else cresp[:, c.rows]
        v = c.xhat - shift[:, None, :]
        rv = v * r[:, :, None]
        s1 += rv.sum(axis=1)
        if level == FULL_LEVEL:
            s2 += np.matmul(np.swapaxes(rv, 1, 2), v)
        elif level == DIAG_LEVEL:
            s2 += np.einsum("knd,knd->kd", rv, v)
        else:
            s2 += np.einsum("knd,knd->k", rv, v)
        if c.missing is None:  # diagonal conditional covariances, embedded
            var = np.einsum("kn,knd->kd", rc, c.cond)
            if level == FULL_LEVEL:
                s2[:, np.arange(d), np.arange(d)] += var
            elif level == DIAG_LEVEL:
                s2 += var
            else:
                s2 += var.sum(axis=1)
            continue
        m = c.missing.shape[1]
        if m == 0:
            continue
        comp = np.arange(k)[:, None, None]
        if level == FULL_LEVEL:
            # scatter each row's m-by-m block into its component's D-by-D sum
            cell = c.missing[:, :, None] * d + c.missing[:, None, :]  # (ns, m, m)
            idx = comp[..., None] * (d * d) + cell[None]
            s2 += np.bincount(idx.ravel(), weights=(c.cond * rc[:, :, None, None]).ravel(),
                              minlength=k * d * d).reshape(k, d, d)
        else:
            diag = np.diagonal(c.cond, axis1=2, axis2=3) * rc[:, :, None]  # (K, ns, m)
            if level == DIAG_LEVEL:
                idx = comp * d + c.missing[None]
                s2 += np.bincount(idx.ravel(), weights=diag.ravel(), minlength=k * d).reshape(k, d)
            else:
                s2 += diag.sum(axis=(1, 2))
    return n, s1, s2
