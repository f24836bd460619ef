"""The covariance-type object computes, bit for bit, what the branch-per-type code before it computed.

The references below are that code's formulas (the M-step, the natural parameters, the Student-t
Mahalanobis form and scale update, the variational Wishart update), one branch per type, kept
here so that a change of the arithmetic's order (hence of a fit's bits, or of a checkpoint's
resume) shows as a failure rather than as drift.
"""

import math

import numpy as np
import pytest

from daskgmm.kernels import covariance as cov
from daskgmm.kernels import params as forms
from daskgmm.kernels.results import SuffStats
from daskgmm.kernels.studentt import StudentTStats, mahalanobis_params, scale_update

K, D = 4, 3


def _outer(a, b):
    return np.einsum("ki,kj->kij", a, b)


def _ref_covariances(ct, s2, s1, n0, m, nk, reg_covar, guard=None, means_exact=None):
    """The M-step's covariances as the branch per type computed them (``guard=None``: the t's, no guard term)."""
    d = m.shape[1]
    if ct in ("full", "tied"):
        cross = _outer(s1, m)
        corr = cross + cross.transpose(0, 2, 1) - n0[:, None, None] * _outer(m, m)
        if ct == "full":
            c = (s2 - corr) / nk[:, None, None]
            c = 0.5 * (c + c.transpose(0, 2, 1))
        elif guard is None:
            c = (s2 - corr.sum(axis=0)) / nk.sum()
            c = 0.5 * (c + c.T)
        else:
            extra = np.einsum("k,ki,kj->ij", guard, means_exact, means_exact)
            c = (s2 - corr.sum(axis=0) + extra) / nk.sum()
            c = 0.5 * (c + c.T)
        c[..., np.arange(d), np.arange(d)] += reg_covar
        return c
    corr = 2.0 * s1 * m - n0[:, None] * m**2
    if guard is None:
        if ct == "diag":
            return (s2 - corr) / nk[:, None] + reg_covar
        return (s2 - corr.sum(axis=1)) / (nk * d) + reg_covar
    extra = (guard / nk)[:, None] * means_exact**2
    if ct == "diag":
        return (s2 - corr) / nk[:, None] + extra + reg_covar
    return (s2 - corr.sum(axis=1)) / (nk * d) + extra.mean(axis=1) + reg_covar


def _ref_estimate(stats, reg_covar, eps_dtype):
    n0 = stats.n
    nk = n0 + 10 * np.finfo(eps_dtype).eps
    m = stats.s1 / nk[:, None]
    means = stats.shift + m
    guard = (n0 + 10 * np.finfo(np.float64).eps) - n0
    noise = 4 * np.finfo(np.float64).eps * (np.abs(stats.shift) + np.abs(m))
    means_exact = np.where(np.abs(means) <= noise, 0.0, means)
    return nk, means, _ref_covariances(stats.covariance_type, stats.s2, stats.s1, n0, m, nk, reg_covar, guard,
                                       means_exact)


def _ref_quadratic(ct, m, u):
    """``(P, P m, mᵀ P m)`` as the natural and Mahalanobis forms computed them."""
    k, d = m.shape
    if ct in ("full", "tied"):
        uu = np.broadcast_to(u, (k, d, d)) if ct == "tied" else u
        y = np.einsum("kd,kde->ke", m, uu)
        return np.einsum("kij,klj->kil", uu, uu), np.einsum("kde,ke->kd", uu, y), (y**2).sum(axis=1)
    p = u**2
    if ct == "diag":
        return p, p * m, (p * m**2).sum(axis=1)
    return p, p[:, None] * m, p * (m**2).sum(axis=1)


def _ref_log_det(ct, u, d):
    if ct == "full":
        return np.log(np.diagonal(u, axis1=1, axis2=2)).sum(axis=1)
    if ct == "tied":
        return np.log(np.diagonal(u)).sum()
    if ct == "diag":
        return np.log(u).sum(axis=1)
    return d * np.log(u)


def _ref_wishart(ct, nk, sk, diff, b0, beta, cp, nu0):
    k = nk.shape[0]
    if ct == "full":
        dof = nu0 + nk
        return dof, (cp + nk[:, None, None] * sk + (nk * b0 / beta)[:, None, None] * _outer(diff, diff)) / dof[
            :, None, None]
    if ct == "tied":
        dof = np.asarray(nu0 + nk.sum() / k)
        return dof, (cp + sk * nk.sum() / k + b0 / k * np.dot((nk / beta) * diff.T, diff)) / dof
    dof = nu0 + nk
    if ct == "diag":
        return dof, (cp + nk[:, None] * (sk + (b0 / beta)[:, None] * np.square(diff))) / dof[:, None]
    return dof, (cp + nk * (sk + b0 / beta * np.mean(np.square(diff), 1))) / dof


def _stats(ct, rng, trial):
    """Statistics of real rows about a shift (one component empty, one on the point 0, by trial)."""
    shift = rng.normal(size=D) * 10.0**trial
    x = rng.normal(size=(60, D)) * 3 + shift + 1.0
    r = rng.dirichlet(np.ones(K), size=60)
    if trial == 2:
        r[:, 0] = 0.0
    if trial == 3:
        x[:15] = 0.0
        r[:15] = 0.0
        r[:15, 1] = 1.0
        r[15:, 1] = 0.0
    r /= r.sum(axis=1, keepdims=True)
    xs = x - shift
    full = np.einsum("nk,ni,nj->kij", r, xs, xs)
    s2 = {"full": full, "tied": full.sum(axis=0), "diag": np.einsum("kii->ki", full),
          "spherical": np.einsum("kii->k", full)}[ct]
    return SuffStats(n=r.sum(axis=0), s1=r.T @ xs, s2=s2, loglik=0.0, weight=60.0, rows=60, shift=shift,
                     covariance_type=ct)


@pytest.mark.parametrize("ct", cov.COVARIANCE_TYPES)
def test_the_object_computes_the_same_bits_as_the_branches_before_it(ct):
    rng = np.random.default_rng(7)
    eq = np.testing.assert_array_equal
    for trial in range(5):
        st = _stats(ct, rng, trial)
        for eps_dtype in (np.float64, np.float32):
            for reg in (0.0, 1e-6, 0.1):
                for got, want in zip(cov.estimate_parameters(st, reg, eps_dtype), _ref_estimate(st, reg, eps_dtype)):
                    eq(got, want)
                tst = StudentTStats(moments=st, resp=st.n * 1.3 + 0.1, log_u=-0.1 * st.n)
                nr = tst.resp + 10 * np.finfo(eps_dtype).eps
                pad = 10 * np.finfo(eps_dtype).eps
                m = st.s1 / (st.n + pad)[:, None]
                weights_t, loc, scales = scale_update(tst, reg, eps_dtype)
                eq(weights_t, nr / nr.sum())
                eq(scales, _ref_covariances(ct, st.s2, st.s1, st.n, m, nr, reg))
                eq(loc, st.shift + m)
        nk, means, covs = cov.estimate_parameters(st, 1e-3)
        u = cov.precisions_cholesky(covs, ct, reg_covar=1e-3)
        weights = rng.dirichlet(np.ones(K))
        if trial == 4:
            weights[-1] = 0.0
        centre = rng.normal(size=D) + st.shift
        mc = means - centre
        prec, pm, mpm = _ref_quadratic(ct, mc, u)
        with np.errstate(divide="ignore"):
            base = np.log(weights) + _ref_log_det(ct, u, D) - 0.5 * D * math.log(2 * math.pi)
        nat = forms.natural_params(weights, means, u, ct, centre)
        eq(nat.quad, -0.5 * prec)
        eq(nat.lin, pm)
        eq(nat.const, base - 0.5 * mpm)
        maha = mahalanobis_params(means, u, ct, centre)
        eq(maha.quad, prec)
        eq(maha.lin, -2.0 * pm)
        eq(maha.const, mpm)
        pc = forms.per_component(weights, means, u, ct, centre)
        with np.errstate(divide="ignore"):
            const = np.maximum(np.log(weights), -1e30) + _ref_log_det(ct, u, D) - 0.5 * D * math.log(2 * math.pi)
        eq(pc.const, np.broadcast_to(const, (K,)))
        b0, beta, nu0 = 1.0, nk + 1.0, float(D)
        cp = cov.of(ct).identity(1, D)[0] if cov.of(ct).per_component else cov.of(ct).identity(1, D)
        diff = means - rng.normal(size=D)
        for got, want in zip(cov.of(ct).wishart_update(nk, covs, diff, b0, beta, cp, nu0),
                             _ref_wishart(ct, nk, covs, diff, b0, beta, cp, nu0)):
            eq(got, want)
