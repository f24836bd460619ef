"""StudentTMixture(missing="marginalize"): ECM for t mixtures with missing values (issue 26)."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
from scipy.special import digamma
from scipy.stats import multivariate_t
from sklearn.utils.estimator_checks import parametrize_with_checks

from daskgmm import StudentTMixture
from daskgmm.kernels import chunk_pass, merge_partials
from daskgmm.kernels.results import SuffStats
from daskgmm.kernels.studentt import StudentTRequest, StudentTStats
from daskgmm.models.studentt import StudentTState

from .test_missing import TYPES, _data, _full_covs, _mixture_data, _model


def _state(ct, df=(3.0, 7.5, 30.0), seed=0, **kw):
    w, m, c = _model(ct, seed=seed)
    return StudentTState.from_covariances(w, m + 10.0, c, ct, np.asarray(df), missing="marginalize", **kw)


def _gap(a):
    return digamma(a) - math.log(a)


def reference_pass(state: StudentTState, x, shift):
    """The E-step of a t mixture with missing values, row by row with SciPy: the t marginal of the observed
    part (``multivariate_t`` on the observed block of the scale), ``u = (nu + d_o)/(nu + δ_o)``, and the
    moments ``Σ r u x̂``, ``Σ r (u x̂ x̂ᵀ + Cov[x_m | x_o])`` (full, about ``shift``) and
    ``Σ r (E[log u] - E[u])`` (made relative to a complete row's digamma terms, as the pass keeps it)."""
    k, d = state.means.shape
    ct = state.covariance_type
    sig = _full_covs(state.covariances, ct, k, d)
    nu = state.df
    resp = np.zeros(k)
    log_u = np.zeros(k)
    n = np.zeros(k)
    s1 = np.zeros((k, d))
    s2 = np.zeros((k, d, d))
    loglik = 0.0
    for row in x:
        o = ~np.isnan(row)
        mm = ~o
        do = int(o.sum())
        logit = np.array([math.log(state.weights[j]) + multivariate_t(state.means[j][o], sig[j][np.ix_(o, o)],
                                                                        df=nu[j]).logpdf(row[o]) for j in range(k)])
        top = logit.max()
        lse = top + math.log(np.exp(logit - top).sum())
        r = np.exp(logit - lse)
        loglik += lse
        for j in range(k):
            zo = row[o] - state.means[j][o]
            soo = sig[j][np.ix_(o, o)]
            delta = zo @ np.linalg.solve(soo, zo)
            u = (nu[j] + do) / (nu[j] + delta)
            xh = row.copy()
            cc = np.zeros((d, d))
            if mm.any():
                gain = sig[j][np.ix_(mm, o)] @ np.linalg.inv(soo)
                xh[mm] = state.means[j][mm] + gain @ zo
                cc[np.ix_(mm, mm)] = sig[j][np.ix_(mm, mm)] - gain @ sig[j][np.ix_(o, mm)]
            v = xh - shift
            resp[j] += r[j]
            log_u[j] += r[j] * (math.log(u) - u + 1 + _gap((nu[j] + do) / 2) - _gap((nu[j] + d) / 2))
            n[j] += r[j] * u
            s1[j] += r[j] * u * v
            s2[j] += r[j] * (u * np.outer(v, v) + cc)
    s2 = {"full": s2, "tied": s2.sum(axis=0), "diag": np.diagonal(s2, axis1=1, axis2=2),
          "spherical": np.trace(s2, axis1=1, axis2=2)}[ct]
    mom = SuffStats(n=n, s1=s1, s2=np.ascontiguousarray(s2), loglik=loglik, weight=float(len(x)), rows=len(x),
                    shift=shift, covariance_type=ct)
    return StudentTStats(mom, resp, log_u)


def _pass(state, x, centre=None, chunks=1, block_rows=None, w=None):
    centre = np.nanmean(x, axis=0) if centre is None else centre
    req = StudentTRequest([state.spec(centre)])
    res = None
    bounds = np.linspace(0, len(x), chunks + 1).astype(int)
    for a, b in itertools.pairwise(bounds):
        part = chunk_pass(x[a:b], [req], centre, block_rows=block_rows, row0=a,
                          sample_weight=None if w is None else w[a:b])
        res = part if res is None else merge_partials([req], res, part)
    return res[0][0], centre


def _incomplete(n=240, seed=1):
    x = _data(n=n, seed=seed)
    return x[~np.isnan(x).all(axis=1)]  # a row with nothing observed is left out of the fit


@pytest.mark.parametrize("ct", TYPES)
def test_t_step_matches_per_row_reference(ct):
    x = _incomplete()
    state = _state(ct)
    stats, centre = _pass(state, x)
    ref = reference_pass(state, x, centre)
    assert abs(stats.loglik - ref.loglik) < 1e-10 * abs(ref.loglik)
    np.testing.assert_allclose(stats.resp, ref.resp, rtol=1e-10)
    np.testing.assert_allclose(stats.log_u, ref.log_u, rtol=1e-9, atol=1e-10)
    new, want = state.update(stats), state.update(ref)
    for name in ("weights", "means", "covariances", "df"):
        np.testing.assert_allclose(getattr(new, name), getattr(want, name), rtol=1e-9, atol=1e-10, err_msg=name)


@pytest.mark.parametrize("ct", TYPES)
def test_precise_path_matches_reference(ct):
    """Far from the centre the t model takes the per-component path; rows with NaN follow it."""
    x = _incomplete()
    shift = 1e5
    near = _state(ct)
    far = StudentTState.from_covariances(near.weights, near.means + shift, near.covariances, ct, near.df,
                                         missing="marginalize")
    spec = far.spec(np.zeros(4))
    assert spec.precise is not None and spec.marginal is not None
    stats, _ = _pass(far, x + shift, centre=np.zeros(4))
    ref = reference_pass(near, x, np.nanmean(x, axis=0))
    assert abs(stats.loglik - ref.loglik) < 1e-9 * abs(ref.loglik)
    np.testing.assert_allclose(stats.log_u, ref.log_u, rtol=1e-7, atol=1e-8)
    new, want = far.update(stats), near.update(ref)
    np.testing.assert_allclose(new.means - shift, want.means, atol=1e-7)
    np.testing.assert_allclose(new.covariances, want.covariances, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(new.df, want.df, rtol=1e-6)


def test_weights_chunking_and_blocks_do_not_matter():
    x = _incomplete(n=400)
    w = np.random.default_rng(2).uniform(0.2, 3.0, len(x))
    state = _state("full")
    one, centre = _pass(state, x, w=w)
    many, _ = _pass(state, x, chunks=4, block_rows=29, w=w)
    assert abs(one.loglik - many.loglik) < 1e-11 * abs(one.loglik)
    a, b = state.update(one), state.update(many)
    np.testing.assert_allclose(a.covariances, b.covariances, rtol=1e-11)
    np.testing.assert_allclose(a.df, b.df, rtol=1e-10)
    # weights as repeated rows
    reps = np.random.default_rng(3).integers(1, 4, len(x))
    weighted, _ = _pass(state, x, centre=centre, w=reps.astype(float))
    repeated, _ = _pass(state, np.repeat(x, reps, axis=0), centre=centre)
    np.testing.assert_allclose(state.update(weighted).means, state.update(repeated).means, rtol=1e-11)


@pytest.mark.parametrize("ct", TYPES)
def test_complete_rows_keep_their_bits(ct):
    x = np.random.default_rng(3).normal(scale=3.0, size=(500, 4)) + 10.0
    new = _state(ct)
    old = StudentTState.from_covariances(new.weights, new.means, new.covariances, ct, new.df)
    a, _ = _pass(old, x)
    b, _ = _pass(new, x)
    assert a.loglik == b.loglik
    for f in ("n", "s1", "s2"):
        np.testing.assert_array_equal(getattr(a.moments, f), getattr(b.moments, f))
    np.testing.assert_array_equal(a.resp, b.resp)
    np.testing.assert_array_equal(a.log_u, b.log_u)


def test_fixed_point_is_the_maximum_likelihood():
    """One t component with fixed nu: the fit is where a direct maximisation of the observed-data likelihood
    (the t marginals of the observed parts, scipy.optimize) ends. A wrong M-step statistic (e.g. the
    conditional covariance weighted by u) has another fixed point."""
    from scipy.optimize import minimize

    from daskgmm import StudentTMixture

    rng = np.random.default_rng(0)
    d, n, nu = 3, 400, 4.0
    scale = np.array([[2.0, 0.8, 0.3], [0.8, 1.0, -0.4], [0.3, -0.4, 1.5]])
    x = multivariate_t(np.array([1.0, -2.0, 0.5]), scale, df=nu).rvs(n, random_state=rng)
    x[rng.random(x.shape) < 0.3] = np.nan
    x = x[~np.isnan(x).all(axis=1)]
    t = StudentTMixture(1, df=nu, fixed_df=True, reg_covar=0.0, tol=1e-12, max_iter=5000,
                        missing="marginalize").fit(x)
    obs = ~np.isnan(x)
    patterns = [(x[np.all(obs == o, axis=1)][:, o], o) for o in np.unique(obs, axis=0)]

    def nll(theta):
        mu, low = theta[:d], np.zeros((d, d))
        low[np.tril_indices(d)] = theta[d:]
        low[np.diag_indices(d)] = np.exp(low[np.diag_indices(d)])
        s = low @ low.T
        return -sum(np.sum(np.atleast_1d(multivariate_t(mu[o], s[np.ix_(o, o)], df=nu).logpdf(rows)))
                    for rows, o in patterns)

    opt = minimize(nll, np.zeros(d + d * (d + 1) // 2), method="BFGS", options={"gtol": 1e-8, "maxiter": 2000})
    mu = opt.x[:d]
    low = np.zeros((d, d))
    low[np.tril_indices(d)] = opt.x[d:]
    low[np.diag_indices(d)] = np.exp(low[np.diag_indices(d)])
    assert abs(t.score(x) * len(x) + opt.fun) < 1e-6 * opt.fun  # ours is at least as high, to rounding
    np.testing.assert_allclose(t.means_[0], mu, atol=1e-4)
    np.testing.assert_allclose(t.covariances_[0], low @ low.T, atol=1e-4)


# --------------------------------------------------------------------------- the estimator


@pytest.mark.parametrize("ct", TYPES)
def test_log_likelihood_increases_on_data_with_nan(ct):
    from daskgmm import StudentTMixture

    _, xm, _, _ = _mixture_data(4, n=3000)
    w = np.random.default_rng(0).uniform(0.1, 5.0, len(xm))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # not converged at max_iter
        # k-means++: the default start is fitted on these very rows (every row with an observed value, the draw of
        # 3,000 the data) and left EM 3 iterations (spherical), too few to show anything
        t = StudentTMixture(3, covariance_type=ct, random_state=0, missing="marginalize", tol=1e-10,
                            max_iter=40, init_params="k-means++").fit(xm, sample_weight=w)
    lb = np.asarray(t.lower_bounds_)
    assert len(lb) > 5
    assert np.all(np.diff(lb) >= -1e-12 * np.abs(lb[1:])), np.diff(lb).min()


def test_complete_data_fit_is_bit_identical():
    from daskgmm import StudentTMixture

    x, _, _, _ = _mixture_data(1, n=2000)
    a = StudentTMixture(3, random_state=0).fit(x)
    b = StudentTMixture(3, random_state=0, missing="marginalize").fit(x)
    assert a.lower_bound_ == b.lower_bound_
    for name in ("weights_", "means_", "covariances_", "df_"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_fit_predict_and_dask_input():
    import dask.array as da

    from daskgmm import StudentTMixture

    _, xm, means, _ = _mixture_data(5, n=6000)
    t = StudentTMixture(3, random_state=0, missing="marginalize").fit(xm)
    order = [int(np.argmin(((t.means_ - mu) ** 2).sum(axis=1))) for mu in means]
    assert sorted(order) == [0, 1, 2]
    assert np.abs(t.means_[order] - means).max() < 0.2
    # predictions of rows with NaN: the t marginals of their observed parts, row by row
    rows = xm[:40]
    assert np.isnan(rows).any()
    logits = np.stack([[math.log(t.weights_[j]) + multivariate_t(
        t.means_[j][~np.isnan(r)], t.covariances_[j][np.ix_(~np.isnan(r), ~np.isnan(r))],
        df=t.df_[j]).logpdf(r[~np.isnan(r)]) for j in range(3)] for r in rows])
    top = logits.max(axis=1, keepdims=True)
    lse = (top + np.log(np.exp(logits - top).sum(axis=1, keepdims=True)))[:, 0]
    # (atol: one component is Gaussian, df_ ~1e6, where scipy's log-normaliser, a difference of gammaln values
    # ~6e6, moves by ~1e-9 as df_ does by 1e-13; the fit's own is Stirling's, exact)
    np.testing.assert_allclose(t.score_samples(rows), lse, rtol=1e-10, atol=5e-9)
    np.testing.assert_allclose(t.predict_proba(rows), np.exp(logits - lse[:, None]), atol=1e-10)
    np.testing.assert_array_equal(t.predict(rows), logits.argmax(axis=1))
    # the same fit from a Dask array in other chunks (to rounding)
    d = StudentTMixture(3, random_state=0, missing="marginalize").fit(da.from_array(xm, chunks=1700))
    np.testing.assert_allclose(d.means_, t.means_, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(d.df_, t.df_, rtol=1e-7)
    np.testing.assert_allclose(d.score_samples(da.from_array(xm, chunks=1000)).compute(), d.score_samples(xm),
                               rtol=1e-12)
    with pytest.raises(ValueError, match="NaN"):
        StudentTMixture(3, random_state=0).fit(xm)


def test_cli_fit_and_predict_with_nan_policy_marginalize(tmp_path):
    import pyarrow.parquet as pq

    from daskgmm import StudentTMixture, load
    from daskgmm.cli import main

    from .conftest import FAST
    from .test_missing import _write_missing_parquet

    _, xm, _, _ = _mixture_data(9, n=3000)
    data, model, preds = tmp_path / "d", tmp_path / "model", tmp_path / "preds"
    _write_missing_parquet(data, xm)
    cols = ",".join(f"f{j}" for j in range(6))
    argv = ["fit", str(data), "--columns", cols, "--estimator", "student", "--n-components", "3", "--seed", "0",
            "--model-out", str(model), *FAST]
    assert main(argv) == 2  # NaN is an error by default
    assert main([*argv, "--nan-policy", "marginalize"]) == 0
    est = load(model)
    assert isinstance(est, StudentTMixture) and est.missing == "marginalize"
    ref = StudentTMixture(3, random_state=0, missing="marginalize").fit(xm)
    np.testing.assert_allclose(est.means_, ref.means_, rtol=1e-9, atol=1e-10)  # other chunks, same fit
    np.testing.assert_allclose(est.df_, ref.df_, rtol=1e-8)
    assert main(["predict", str(data), "--model", str(model), "--out", str(preds), "--id-column", "id",
                 "--loglik", "--columns", cols, "--nan-policy", "marginalize", *FAST]) == 0
    t = pq.read_table(preds)
    ids = t.column("id").to_numpy()
    np.testing.assert_allclose(t.column("loglik").to_numpy(), est.score_samples(xm[ids]), rtol=1e-10)
    assert main(["score", str(data), "--model", str(model), "--columns", cols, "--nan-policy", "marginalize",
                 *FAST]) == 0


@parametrize_with_checks([StudentTMixture(n_init=2, max_iter=5, missing="marginalize")])
def test_sklearn_estimator_checks_with_marginalize(estimator, check):
    """scikit-learn's checks with the allow_nan tag this option sets (NaN then reaches fit and predict)."""
    check(estimator)


@pytest.mark.parametrize("init", ("kmeans", "k-means++", "random", "random_from_data"))
def test_every_initialisation_restarts_and_warm_start(init):
    _, xm, _, _ = _mixture_data(6, n=3000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # not converged at max_iter
        t = StudentTMixture(3, missing="marginalize", init_params=init, n_init=2, random_state=0,
                            max_iter=30).fit(xm)
        assert np.all(np.isfinite(t.means_)) and np.isfinite(t.lower_bound_) and len(t.restarts_) == 2
        first = t.lower_bound_
        t.set_params(warm_start=True, max_iter=5).fit(xm)  # continues from the fitted parameters
    assert t.lower_bounds_[0] >= first - 1e-12 * abs(first)


def test_the_robust_start_keeps_away_from_outliers_in_wide_rows_with_few_complete_ones():
    """The robust start fitted on the scan's sample of complete rows, and gave way to the plain start (k-means labels
    of every row) when they were under 2 K D, its t fits on them singular. Since it fits on every row with an observed
    value, it needs no complete rows, and the plain start gave a component to 3% of gross outliers: 20 features with
    12% missing (116 complete rows of 1,500), adjusted Rand 0.71 on the clusters' rows on 5 of seeds 0-5, now 1.0 on
    4 of those 5 (seed 3 stays 0.71)."""
    from sklearn.datasets import make_blobs
    from sklearn.metrics import adjusted_rand_score

    x, y = make_blobs(1500, n_features=20, centers=4, cluster_std=2.0, random_state=2)
    rng = np.random.default_rng(102)
    far = rng.random(len(x)) < 0.03
    x[far] = rng.uniform(-60, 60, (far.sum(), 20))
    x[np.random.default_rng(2).random(x.shape) < 0.12] = np.nan
    assert (~np.isnan(x).any(axis=1)).sum() < 2 * 4 * 20  # fewer complete rows than the start gave way for
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = StudentTMixture(4, missing="marginalize", random_state=2).fit(x)
    assert adjusted_rand_score(y[~far], t.predict(x)[~far]) > 0.99


def _t_rows_few_complete(nu, complete, seed=0, n=3000, d=8, frac=0.1):
    """Three clusters of rows of a multivariate t with ``nu`` degrees of freedom, ``frac`` of the values missing at
    random and only the first ``complete`` rows complete."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    u = rng.chisquare(nu, n) / nu
    x = rng.normal(0, 10, (3, d))[y] + rng.normal(size=(n, d)) / np.sqrt(u)[:, None]
    mask = rng.random((n, d)) < frac
    whole = ~mask.any(axis=1)
    mask[whole, rng.integers(0, d, int(whole.sum()))] = True
    mask[:complete] = False
    x[mask] = np.nan
    return x


@pytest.mark.parametrize("init, complete", [("kmeans", 1), ("kmeans", 5), ("k-means++", 5)])
def test_the_starts_degrees_of_freedom_take_every_drawn_row(init, complete):
    """The robust start's ECME degrees of freedom (sample_df) took the complete rows of its draw alone: with one or
    five of 3,000 (rows of a t with 30 degrees of freedom, 10% missing), a component or all three started at 1e6,
    where EM does not bring them back: the fit's log-likelihood was below the fixed df=30 fit's by 15 and 45
    units. Every drawn row now, each by its observed features' t marginal (no complete row: EM alone moved them);
    the plain start ('k-means++': the scan's sample of complete rows) too."""
    x = _t_rows_few_complete(30.0, complete)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        free = StudentTMixture(3, missing="marginalize", init_params=init, random_state=0).fit(x)
        fixed = StudentTMixture(3, missing="marginalize", init_params=init, random_state=0, df=30.0,
                                fixed_df=True).fit(x)
    assert np.all(free.df_ < 200), free.df_
    assert free.score(x) > fixed.score(x) - 1e-3  # (the fit's tol)
