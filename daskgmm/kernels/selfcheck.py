"""The compiled core's known-answer check: one small pass through a variant and through NumPy.

The core is compiled on the user's machine by the compiler it has, and a compiler can get a
loop wrong: GCC 12.2 at ``-O3`` did, for one arrangement of the marginal E-step (see
docs/architecture.md). The test suite guards the compilers CI runs; this guards the rest.
Before a process uses a variant, :mod:`daskgmm.kernels.compiled` runs :func:`known_answer`:
a pass over 27 rows with every covariance type, soft and hard assignment, ``Σ r log r``,
sample weights, each component's rows (``counts``), rows with each number of missing values
from 1 to 9 under marginalisation, several models in lockstep, a k-means pass, Gaussian and
Student-t mixtures, float64 and float32 rows with rows or columns contiguous, and the
predictions' logits. A variant whose statistics differ from the NumPy reference's by more than
rounding is not used.

It costs about 57 ms of CPU once per process (mostly the NumPy reference; at load 4)
and holds the choice's lock meanwhile. Pure NumPy around the core; nothing here knows Dask.
"""

from __future__ import annotations

import math
from operator import attrgetter

import numpy as np

from daskgmm.kernels import compiled
from daskgmm.kernels import covariance as cov
from daskgmm.kernels.features import build_features, n_feature_rows
from daskgmm.kernels.params import kmeans_natural_params, natural_params, per_component
from daskgmm.kernels.protocol import Block
from daskgmm.kernels.requests import MixtureRequest, ModelSpec
from daskgmm.kernels.studentt import StudentTMarginal, StudentTRequest, StudentTSpec, mahalanobis_params

#: Largest difference allowed, relative to the largest magnitude of each statistic (the tests'
#: own tolerances are 1e-10 and 2e-5: these leave room for another compiler's rounding, and a
#: wrong loop is off by far more).
TOLERANCE = {np.dtype(np.float64): 1e-8, np.dtype(np.float32): 1e-4}
N_FEATURES = 10


MODELS = (("full", 9), ("tied", 3), ("diag", 5), ("spherical", 2), ("full", 4))


def _models(rng, d):
    """``(covariance type, weights, means, precision factors)`` of five mixtures."""
    for ct, k in MODELS:
        weights = rng.dirichlet(np.ones(k) * 3)
        means = rng.normal(scale=2.0, size=(k, d)) + 1.0
        a = rng.normal(size=(k, d, d))
        full = np.einsum("kij,klj->kil", a, a) / d + 0.5 * np.eye(d)
        covs = {"full": full, "tied": full[0], "diag": np.diagonal(full, axis1=1, axis2=2).copy(),
                "spherical": np.trace(full, axis1=1, axis2=2) / d}[ct]
        yield ct, weights, means, cov.of(ct).precisions_cholesky(covs)


def _problem():
    """Rows (27, 10), rows 0..8 with 1..9 missing values (a third of the rows: the diagonal
    models' dense path), weights, the pass centre, and two lists of specs: Gaussian mixtures
    (one per type marginalising, one of them hard; a k-means model; one that leaves incomplete
    rows out) and Student-t mixtures (the same, without the hard one and k-means)."""
    d = N_FEATURES
    rng = np.random.default_rng(20261205)
    x = rng.normal(scale=2.0, size=(27, d)) + 1.0
    for i in range(9):
        x[i, rng.permutation(d)[: i + 1]] = np.nan
    w = rng.random(len(x)) + 0.5
    centre = np.nanmean(x, axis=0)
    gaussian = []
    for i, (ct, weights, means, u) in enumerate(_models(rng, d)):
        args = (weights, means, u, ct, centre)
        marginal = per_component(*args) if i < 4 else None  # the last leaves incomplete rows out
        gaussian.append(ModelSpec(natural_params(*args), ct, "hard" if i == 3 else "soft", resp_log_resp=i == 2,
                                  marginal=marginal, count_rows=True))
    gaussian.append(ModelSpec(kmeans_natural_params(rng.normal(size=(4, d))), "spherical", "hard", count_rows=True))
    student = []
    lgamma = np.vectorize(math.lgamma)
    for i, (ct, weights, means, u) in enumerate(_models(rng, d)):
        nu = rng.uniform(1.5, 40.0, size=len(weights))
        # the constants as the model computes them (log π + log Γ((nu + d)/2) - log Γ(nu/2) - d/2 log(nu π)
        # + log det U) with the standard library's log Γ; the per-count digamma terms are any numbers of
        # their size: both paths take the same tables
        base = np.log(weights) + cov.of(ct).log_det(u, d)
        const_by = np.stack([base + lgamma(0.5 * (nu + j)) - lgamma(0.5 * nu) - 0.5 * j * np.log(nu * math.pi)
                             for j in range(d + 1)], axis=1)
        terms = rng.normal(scale=0.05, size=const_by.shape)
        terms[:, -1] = 0.0
        m = means - centre
        marginal = StudentTMarginal(m, u, const_by[:, d], ct, nu, const_by, terms) if i < 4 else None
        student.append(StudentTSpec(mahalanobis_params(means, u, ct, centre), nu, const_by[:, d], ct,
                                    marginal=marginal))
    return x, w, centre, gaussian, student


def _one_pass(x, w, centre, request, kernel):
    d = x.shape[1]
    acc = request.start(d, x.dtype, request.level, centre, kernel)
    request.update(acc, Block(x, request.level, centre, w, 0))
    return request.finish(acc, d, centre)


def _layouts(x):
    """``x`` as the core may get it, with the words a failure names it by: rows contiguous, and
    columns contiguous (Parquet chunks are column-major; the core reads both where they lie)."""
    return (("", np.ascontiguousarray(x)), (", columns contiguous", np.asfortranarray(x)))


def _differs(got, want, tol) -> float:
    """The largest difference relative to the largest magnitude (``inf`` for a shape or NaN mismatch)."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape or (np.isnan(got) != np.isnan(want)).any():
        return np.inf
    if not want.size:
        return 0.0
    diff = np.nan_to_num(np.abs(got - want), nan=0.0).max() / max(np.nanmax(np.abs(want)), 1.0)
    return float(diff) if diff > tol else 0.0


def known_answer(kernel) -> str | None:
    """Run the check's problem through ``kernel`` (a variant's module) and through NumPy.

    Returns
    -------
    str or None
        None when they agree; else what differed (the statistic, the dtype, the difference).
    """
    x64, w, centre, gaussian, student = _problem()
    gauss_stats = ("n", "s1", "s2", "loglik", "resp_log_resp", "weight", "counts")
    t_stats = ("moments.n", "moments.s1", "moments.s2", "loglik", "resp", "log_u", "weight")
    # the k-means model alone: a pass of hard spherical models only takes the core's k-means path
    passes = ((MixtureRequest, gaussian, gauss_stats), (MixtureRequest, gaussian[-1:], gauss_stats),
              (StudentTRequest, student, t_stats))
    for dtype in (np.float64, np.float32):
        x = x64.astype(dtype)
        tol = TOLERANCE[np.dtype(dtype)]
        for request, specs, stats in passes:
            want = _one_pass(x, w, centre, request(specs), None)
            for layout, xl in _layouts(x):
                got = _one_pass(xl, w, centre, request(specs), kernel)
                for m, (g, r) in enumerate(zip(got, want, strict=True)):
                    for name in stats:
                        diff = _differs(attrgetter(name)(g), attrgetter(name)(r), tol)
                        if diff:
                            what = "Student-t" if request is StudentTRequest else getattr(specs[m], "assignment", "")
                            return (f"{name} of model {m} ({specs[m].covariance_type}, {what}) over "
                                    f"{np.dtype(dtype).name} rows{layout} differs from NumPy's by {diff:.3g} "
                                    "(relative)")
        # the predictions' logits (complete rows only: they take no NaN)
        spec = gaussian[0]
        level = spec.params.level
        theta = spec.params.theta(level, dtype)
        xc = x[np.isfinite(x).all(axis=1)]
        xt = (xc - centre.astype(dtype)).T
        ref = (theta @ build_features(xt, level, np.empty((n_feature_rows(level, x.shape[1]), len(xc)), dtype))).T
        for layout, xl in _layouts(xc):
            out = np.empty((len(xc), theta.shape[0]), dtype=dtype)
            kernel.mixture_logits(xl, centre, theta, level, out)
            diff = _differs(out, ref, tol)
            if diff:
                return (f"the predictions' logits over {np.dtype(dtype).name} rows{layout} differ from NumPy's by "
                        f"{diff:.3g}")
    return None

compiled.register_check(known_answer)
