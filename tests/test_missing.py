"""EM that marginalises missing values (issue 15, part 1)."""

from __future__ import annotations

import re

import dask
import dask.array as da
import numpy as np
import pytest

from daskgmm.kernels import MixtureRequest, chunk_pass, merge_partials
from daskgmm.models.states import MixtureState

from .conftest import random_mixture

TYPES = ("full", "tied", "diag", "spherical")


def _full_covs(covs, ct, k, d):
    if ct == "full":
        return np.asarray(covs)
    if ct == "tied":
        return np.broadcast_to(covs, (k, d, d))
    if ct == "diag":
        return np.stack([np.diag(c) for c in covs])
    return np.stack([np.eye(d) * c for c in covs])


def reference_step(x, weights, means, covs, ct, reg_covar):
    """One EM step for incomplete data, row by row (Little & Rubin, ch. 11): slow and direct. A row with
    nothing observed is left out, as the fit leaves it out (its likelihood is 1 under every component)."""
    x = x[~np.isnan(x).all(axis=1)]
    n, d = x.shape
    k = len(weights)
    sig = _full_covs(covs, ct, k, d)
    nk = np.zeros(k)
    sx = np.zeros((k, d))
    sxx = np.zeros((k, d, d))
    loglik = 0.0
    for row in x:
        o = ~np.isnan(row)
        m = ~o
        logp = np.empty(k)
        xh = np.empty((k, d))
        cc = np.zeros((k, d, d))
        for j in range(k):
            soo = sig[j][np.ix_(o, o)]
            zo = row[o] - means[j][o]
            _, logdet = np.linalg.slogdet(soo) if o.any() else (1.0, 0.0)
            maha = zo @ np.linalg.solve(soo, zo) if o.any() else 0.0
            logp[j] = np.log(weights[j]) - 0.5 * (o.sum() * np.log(2 * np.pi) + logdet + maha)
            xh[j] = row
            if m.any():
                smo = sig[j][np.ix_(m, o)]
                gain = smo @ np.linalg.inv(soo) if o.any() else np.zeros((m.sum(), 0))
                xh[j][m] = means[j][m] + gain @ zo
                cc[j][np.ix_(m, m)] = sig[j][np.ix_(m, m)] - gain @ smo.T
        top = logp.max()
        lse = top + np.log(np.exp(logp - top).sum())
        loglik += lse
        r = np.exp(logp - lse)
        nk += r
        sx += r[:, None] * xh
        sxx += r[:, None, None] * (np.einsum("ki,kj->kij", xh, xh) + cc)
    mu = sx / nk[:, None]
    full = sxx / nk[:, None, None] - np.einsum("ki,kj->kij", mu, mu)
    if ct == "full":
        new = full + reg_covar * np.eye(d)
    elif ct == "tied":
        new = np.einsum("k,kij->ij", nk, full) / nk.sum() + reg_covar * np.eye(d)
    elif ct == "diag":
        new = np.diagonal(full, axis1=1, axis2=2) + reg_covar
    else:
        new = np.diagonal(full, axis1=1, axis2=2).mean(axis=1) + reg_covar
    return nk / n, mu, new, loglik


def _model(ct, k=3, d=4, seed=0):
    return random_mixture(ct, k, d, np.random.default_rng(seed))


def _data(n=300, d=4, frac=0.3, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=3.0, size=(n, d)) + 10.0
    x[rng.random((n, d)) < frac] = np.nan
    x[0, :] = [np.nan] * (d - 1) + [x[0, -1] if not np.isnan(x[0, -1]) else 9.0]  # all but one missing
    x[1, 1] = np.nan  # one missing
    x[1, [0, 2, 3]] = [8.0, 9.0, 10.0]
    x[2] = [10.0, 11.0, 9.0, 12.0]  # none missing
    return x


def _kernel_step(x, ct, weights, means, covs, chunks=1, block_rows=None, reg_covar=1e-6, compiled=False):
    state = MixtureState.from_covariances(weights, means, covs, ct, missing="marginalize", reg_covar=reg_covar)
    centre = np.nanmean(x, axis=0)
    req = MixtureRequest([state.spec(centre)])
    parts = [chunk_pass(c, [req], centre, row0=0, block_rows=block_rows, compiled=compiled)
             for c in np.array_split(x, chunks)]
    res = parts[0]
    for p in parts[1:]:
        res = merge_partials([req], res, p)
    stats = res[0][0]
    new = state.update(stats)
    return new, stats


def _core_or_skip():
    from daskgmm.kernels import compiled

    if compiled.ready() is None:
        pytest.skip(f"compiled core not in use: {compiled.error()}")


@pytest.mark.parametrize("compiled", [False, True], ids=["numpy", "compiled"])
@pytest.mark.parametrize("ct", TYPES)
def test_kernel_matches_per_row_reference(ct, compiled):
    if compiled:
        _core_or_skip()
    weights, means, covs = _model(ct)
    x = _data()
    w_ref, m_ref, c_ref, ll_ref = reference_step(x, weights, means, covs, ct, 1e-6)
    new, stats = _kernel_step(x, ct, weights, means, covs, compiled=compiled)
    assert abs(stats.loglik - ll_ref) < 1e-10 * abs(ll_ref)
    np.testing.assert_allclose(new.weights, w_ref, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(new.means, m_ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(new.covariances, c_ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("ct", TYPES)
def test_precise_path_matches_reference(ct):
    """Far from the centre the model takes the per-component path; the missing rows follow it."""
    weights, means, covs = _model(ct)
    x = _data()
    shift = 1e5  # far enough for the precise path; scikit-learn's 10 eps term in tied/spherical is ~1e-7 here
    _, m_ref, c_ref, ll_ref = reference_step(x, weights, means, covs, ct, 1e-6)
    state = MixtureState.from_covariances(weights, means + shift, covs, ct, missing="marginalize")
    assert state.spec(np.zeros(4)).precise is not None
    req = MixtureRequest([state.spec(np.zeros(4))])
    stats = chunk_pass(x + shift, [req], np.zeros(4))[0][0]
    new = state.update(stats)
    assert abs(stats.loglik - ll_ref) < 1e-9 * abs(ll_ref)
    np.testing.assert_allclose(new.means - shift, m_ref, atol=1e-7)
    np.testing.assert_allclose(new.covariances, c_ref, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("ct", ("full", "diag"))
def test_chunking_and_blocks_do_not_matter(ct):
    weights, means, covs = _model(ct)
    x = _data(n=400)
    a, sa = _kernel_step(x, ct, weights, means, covs)
    b, sb = _kernel_step(x, ct, weights, means, covs, chunks=5, block_rows=37)
    assert abs(sa.loglik - sb.loglik) < 1e-10 * abs(sa.loglik)
    np.testing.assert_allclose(a.means, b.means, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(a.covariances, b.covariances, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("ct", TYPES)
def test_complete_data_bits_unchanged(ct):
    """Without NaN a marginalising model gives exactly the statistics of today's path."""
    weights, means, covs = _model(ct)
    x = np.random.default_rng(3).normal(scale=3.0, size=(500, 4)) + 10.0
    centre = x.mean(axis=0)
    old = MixtureState.from_covariances(weights, means, covs, ct)
    new = MixtureState.from_covariances(weights, means, covs, ct, missing="marginalize")
    s_old = chunk_pass(x, [MixtureRequest([old.spec(centre)])], centre)[0][0]
    s_new = chunk_pass(x, [MixtureRequest([new.spec(centre)])], centre)[0][0]
    assert s_old.loglik == s_new.loglik
    for f in ("n", "s1", "s2"):
        np.testing.assert_array_equal(getattr(s_old, f), getattr(s_new, f))


def test_rows_with_nan_are_left_out_of_models_that_do_not_marginalise():
    """The initialisation's k-means passes see the complete rows only."""
    weights, means, covs = _model("full")
    x = _data()
    complete = x[~np.isnan(x).any(axis=1)]
    centre = np.nanmean(x, axis=0)
    st = MixtureState.from_covariances(weights, means, covs, "full")
    a = chunk_pass(x, [MixtureRequest([st.spec(centre)])], centre)[0][0]
    b = chunk_pass(complete, [MixtureRequest([st.spec(centre)])], centre)[0][0]
    assert np.isclose(a.loglik, b.loglik, rtol=1e-12)
    np.testing.assert_allclose(a.s2, b.s2, rtol=1e-12)


# --------------------------------------------------------------------------- the estimator


def _mixture_data(seed, n=20000, frac=0.2):
    rng = np.random.default_rng(seed)
    d = 6
    means = np.array([[0, 0, 0, 0, 0, 0], [4, 4, 0, 0, -4, 0], [-4, 2, 4, 0, 0, 4]], float)
    a = rng.normal(size=(3, d, d))
    covs = a @ a.transpose(0, 2, 1) / d + 0.5 * np.eye(d)
    z = rng.choice(3, n, p=[0.4, 0.35, 0.25])
    x = means[z] + np.einsum("nij,nj->ni", np.linalg.cholesky(covs)[z], rng.normal(size=(n, d)))
    xm = x.copy()
    xm[rng.random(x.shape) < frac] = np.nan  # missing completely at random
    keep = ~np.isnan(xm).all(axis=1)  # a row with nothing observed is left out of the fit
    return x[keep], xm[keep], means, covs


def _errors(model, means, covs):
    order = [int(np.argmin(((model.means_ - mu) ** 2).sum(axis=1))) for mu in means]
    rms = lambda a: float(np.sqrt((a**2).mean()))  # noqa: E731
    return rms(model.means_[order] - means), rms(model.covariances_[order] - covs)


def test_recovers_mixture_with_20_percent_missing():
    """Issue 15: within twice the complete-data error, and clearly better than dropping rows."""
    from daskgmm import GaussianMixture

    x, xm, means, covs = _mixture_data(0)
    full = GaussianMixture(3, random_state=0).fit(x)
    marg = GaussianMixture(3, missing="marginalize", random_state=0).fit(xm)
    omit = GaussianMixture(3, random_state=0).fit(xm[~np.isnan(xm).any(axis=1)])
    assert np.isnan(xm).any(axis=1).mean() > 0.7  # omit keeps about a quarter of the rows
    e_full, e_marg, e_omit = _errors(full, means, covs), _errors(marg, means, covs), _errors(omit, means, covs)
    for f, m, o in zip(e_full, e_marg, e_omit):
        assert m <= 2 * f
        assert m <= 0.8 * o
    assert marg.converged_


def test_complete_data_fit_is_bit_identical():
    from daskgmm import GaussianMixture

    x, _, _, _ = _mixture_data(1, n=3000)
    a = GaussianMixture(3, random_state=0).fit(x)
    b = GaussianMixture(3, missing="marginalize", random_state=0).fit(x)
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.lower_bound_ == b.lower_bound_


def test_dask_input_chunking_invariance_and_predictions():
    import dask.array as da

    from daskgmm import GaussianMixture

    _, xm, _, _ = _mixture_data(2, n=4000)
    a = GaussianMixture(3, covariance_type="diag", missing="marginalize", random_state=0, chunk_size=4000).fit(xm)
    b = GaussianMixture(3, covariance_type="diag", missing="marginalize", random_state=0).fit(
        da.from_array(xm, chunks=(777, 6)))
    np.testing.assert_allclose(a.means_, b.means_, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(a.covariances_, b.covariances_, rtol=1e-9, atol=1e-9)
    s_np = a.score_samples(xm)
    s_da = a.score_samples(da.from_array(xm, chunks=(1000, 6))).compute()
    np.testing.assert_allclose(s_np, s_da, rtol=1e-12)
    assert np.all(np.isfinite(s_np))
    p = a.predict_proba(xm)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    np.testing.assert_array_equal(a.predict(xm), p.argmax(axis=1))
    assert abs(a.score(xm) - a.lower_bound_) < 0.05


@pytest.mark.parametrize("ct", TYPES)
def test_marginal_score_is_the_density_of_the_observed_part(ct):
    """score_samples of a row with NaN equals the full model's marginal on its observed features."""
    from daskgmm import GaussianMixture

    _, xm, _, _ = _mixture_data(3, n=2000)
    g = GaussianMixture(2, covariance_type=ct, missing="marginalize", random_state=0).fit(xm)
    rows = np.array([[np.nan, 1.0, 2.0, np.nan, 0.5, -1.0], [np.nan] * 5 + [2.0], [1.0, 2, 3, 4, 5, np.nan]])
    sig = _full_covs(g.covariances_, ct, 2, 6)
    for row, got in zip(rows, g.score_samples(rows)):
        o = ~np.isnan(row)
        dens = 0.0
        for k in range(2):
            s = sig[k][np.ix_(o, o)]
            z = row[o] - g.means_[k][o]
            dens += g.weights_[k] * np.exp(-0.5 * z @ np.linalg.solve(s, z)) / np.sqrt(
                np.linalg.det(2 * np.pi * s))
        assert abs(got - np.log(dens)) < 1e-10


def test_errors():
    from daskgmm import BayesianGaussianMixture, GaussianMixture, StudentTMixture

    _, xm, _, _ = _mixture_data(4, n=500)
    with pytest.raises(ValueError, match="contains NaN"):
        GaussianMixture(2).fit(xm)
    # scikit-learn's sentence says the estimator does not accept NaN natively: a mixture does, when asked
    for est in (GaussianMixture(2), BayesianGaussianMixture(n_components=2), StudentTMixture(2)):
        for rows in (xm, da.from_array(xm, chunks=100)):
            with pytest.raises(ValueError, match=r"(?s)^Input X contains NaN.*marginalises them with "
                                                 r"missing='marginalize'\.$"):
                est.fit(rows)
    bad = xm.copy()
    bad[3, 0] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        GaussianMixture(2, missing="marginalize").fit(bad)
    with pytest.raises(ValueError, match="missing"):
        GaussianMixture(2, missing="impute").fit(xm)
    g = GaussianMixture(2, missing="marginalize", random_state=0).fit(xm)
    with pytest.raises(ValueError, match="infinity"):
        g.predict(np.array([[np.inf, 0, 0, 0, 0, 0]]))
    plain = GaussianMixture(2, random_state=0).fit(xm[~np.isnan(xm).any(axis=1)])
    with pytest.raises(ValueError, match="NaN"):
        plain.predict(xm[:5])


def test_partial_fit_with_missing_values():
    from daskgmm import GaussianMixture

    _, xm, _, _ = _mixture_data(5, n=6000)
    g = GaussianMixture(3, missing="marginalize", random_state=0)
    for part in np.array_split(xm, 6):
        g.partial_fit(part)
    ref = GaussianMixture(3, missing="marginalize", random_state=0).fit(xm)
    assert abs(g.score(xm) - ref.score(xm)) < 0.05


@pytest.mark.parametrize("init", ("kmeans", "k-means++", "random", "random_from_data"))
def test_every_initialisation_and_restarts(init):
    from daskgmm import GaussianMixture

    _, xm, _, _ = _mixture_data(6, n=3000)
    g = GaussianMixture(3, missing="marginalize", init_params=init, n_init=2, random_state=0, max_iter=200).fit(xm)
    assert np.all(np.isfinite(g.means_)) and np.isfinite(g.lower_bound_)
    assert len(g.restarts_) == 2


def test_kmeans_refuses_to_marginalise():
    from daskgmm import KMeans

    _, xm, _, _ = _mixture_data(7, n=300)
    with pytest.raises(ValueError, match="KMeans does not support missing='marginalize'"):
        KMeans(3, missing="marginalize").fit(xm)
    with pytest.raises(ValueError, match="contains NaN"):
        KMeans(3).fit(xm)


# --------------------------------------------------------------------------- Parquet and the command


def _write_missing_parquet(directory, xm, files=2):
    import os

    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(directory, exist_ok=True)
    n = len(xm)
    bounds = np.linspace(0, n, files + 1).astype(int)
    for i in range(files):
        a, b = bounds[i], bounds[i + 1]
        cols = {"id": pa.array(np.arange(a, b))}
        for j in range(xm.shape[1]):
            v = xm[a:b, j]
            # column 0 carries its missing values as nulls, the others as NaN
            cols[f"f{j}"] = pa.array(v, mask=np.isnan(v)) if j == 0 else pa.array(v)
        pq.write_table(pa.table(cols), os.path.join(directory, f"part-{i}.parquet"))


def test_read_parquet_marginalize_keeps_nan_and_rejects_inf(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    import daskgmm

    _, xm, _, _ = _mixture_data(8, n=1000)
    _write_missing_parquet(tmp_path / "d", xm)
    src = daskgmm.read_parquet(str(tmp_path / "d"), columns=[f"f{j}" for j in range(6)], nan_policy="marginalize")
    x = np.asarray(src.compute())
    np.testing.assert_array_equal(np.isnan(x), np.isnan(xm))
    np.testing.assert_array_equal(x[~np.isnan(x)], xm[~np.isnan(xm)])
    pq.write_table(pa.table({"f0": [1.0, np.inf], "f1": [np.nan, 2.0]}), tmp_path / "inf.parquet")
    bad = daskgmm.read_parquet(str(tmp_path / "inf.parquet"), nan_policy="marginalize")
    with pytest.raises(Exception, match="infinite"):
        bad.compute()


def test_cli_fit_and_predict_with_nan_policy_marginalize(tmp_path):
    import json

    import pyarrow.parquet as pq

    from daskgmm import GaussianMixture, load
    from daskgmm.cli import main

    from .conftest import FAST, assert_same_mixture

    _, xm, _, _ = _mixture_data(9, n=3000)
    data, model, preds = tmp_path / "d", tmp_path / "model", tmp_path / "preds"
    _write_missing_parquet(data, xm)
    cols = ",".join(f"f{j}" for j in range(6))
    argv = ["fit", str(data), "--columns", cols, "--n-components", "3", "--seed", "0", "--model-out", str(model),
            "--metrics-out", str(tmp_path / "m.json"), *FAST]
    assert main(argv) == 2  # NaN is an error by default
    assert main([*argv, "--nan-policy", "marginalize"]) == 0
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["status"] == "ok" and m["n_rows"] == len(xm)
    est = load(model)
    assert est.missing == "marginalize"
    ref = GaussianMixture(3, random_state=0, missing="marginalize").fit(xm)
    assert_same_mixture(est, ref, rtol=1e-10, atol=1e-12)  # other chunks, same fit (measured: 1e-14 absolute)
    assert main(["predict", str(data), "--model", str(model), "--out", str(preds), "--id-column", "id",
                 "--loglik", "--columns", cols, "--nan-policy", "marginalize", *FAST]) == 0
    t = pq.read_table(preds)
    ids = t.column("id").to_numpy()
    np.testing.assert_allclose(t.column("loglik").to_numpy(), est.score_samples(xm[ids]), rtol=1e-10)


def test_cli_update_with_nan_policy_marginalize(tmp_path):
    """The nightly update on day-2 data with NaN gives the model partial_fit gives in Python; --nan-policy
    defaults to the model's."""
    import warnings

    import daskgmm
    from daskgmm import GaussianMixture, load
    from daskgmm.cli import main

    from .conftest import FAST

    _, day1, _, _ = _mixture_data(9, n=1500)
    model = tmp_path / "model"
    GaussianMixture(3, random_state=0, missing="marginalize").fit(day1).save(str(model))
    cols = ",".join(f"f{j}" for j in range(6))
    _, day2, _, _ = _mixture_data(11, n=1500)
    _write_missing_parquet(tmp_path / "d2", day2)
    update = ["update", str(tmp_path / "d2"), "--model", str(model), "--columns", cols, *FAST]
    assert main([*update, "--model-out", str(tmp_path / "m2"), "--nan-policy", "raise"]) == 2
    assert main([*update, "--model-out", str(tmp_path / "m2"), "--nan-policy", "marginalize"]) == 0
    # by default the model's policy, as partial_fit of the loaded model in Python (predict and score do so too)
    assert main([*update, "--model-out", str(tmp_path / "m3")]) == 0
    py = load(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a Dask array has no feature names
        py.partial_fit(daskgmm.read_parquet(str(tmp_path / "d2"), columns=cols.split(","), nan_policy="marginalize"))
    np.testing.assert_allclose(load(tmp_path / "m2").means_, py.means_, rtol=1e-10)
    np.testing.assert_allclose(load(tmp_path / "m3").means_, py.means_, rtol=1e-10)


def test_select_model_marginalizes():
    from daskgmm import select_model

    _, xm, _, _ = _mixture_data(10, n=3000)
    res = select_model(xm, [1, 2, 3], "full", random_state=0, missing="marginalize")
    assert res.best_.n_components == 3 and res.best_.missing == "marginalize"


def test_models_of_every_type_in_one_pass():
    """A diagonal model beside a full one (features of the full level) gets the statistics it gets alone."""
    x = _data()
    centre = np.nanmean(x, axis=0)
    specs = []
    for ct in TYPES:
        w, m, c = _model(ct)
        specs.append(MixtureState.from_covariances(w, m, c, ct, missing="marginalize").spec(centre))
    together = chunk_pass(x, [MixtureRequest(specs)], centre)[0]
    for spec, st in zip(specs, together):
        alone = chunk_pass(x, [MixtureRequest([spec])], centre)[0][0]
        assert abs(alone.loglik - st.loglik) < 1e-10 * abs(st.loglik)
        np.testing.assert_allclose(st.s1, alone.s1, rtol=1e-10, atol=1e-9)
        np.testing.assert_allclose(st.s2, alone.s2, rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("kernel", ["compiled", "numpy"])
@pytest.mark.parametrize("ct", TYPES)
def test_rows_with_nothing_observed_are_left_out_and_counted(ct, kernel, monkeypatch):
    """A row with every feature missing made a marginalising fit fail (user-trial-r15). Its marginal
    likelihood is 1 under every component, so it holds no information on them: each mixture leaves it out
    (the fit equals the fit without it, on the compiled core and the NumPy path alike, in memory and on Dask
    chunks), warns with the count, and predicts it from nothing: the weights (the t and Gaussian mixtures;
    the variational one's expected log-weights), a log-likelihood of 0."""
    from daskgmm.kernels import compiled as core

    if kernel == "compiled":
        _core_or_skip()
        _left_out_and_counted(ct)
        return
    monkeypatch.setenv("DASKGMM_KERNEL", "numpy")
    core.reset()
    try:
        _left_out_and_counted(ct)
    finally:
        monkeypatch.delenv("DASKGMM_KERNEL")
        core.reset()


def _left_out_and_counted(ct):
    import warnings

    from daskgmm import BayesianGaussianMixture, GaussianMixture, StudentTMixture
    from daskgmm.validation.checks import EmptyRowsWarning

    _, xm, _, _ = _mixture_data(4, n=500)
    empty = [3, 7, 250, 499]
    bad = xm.copy()
    bad[empty] = np.nan
    clean = np.delete(bad, empty, axis=0)
    for cls in (GaussianMixture, BayesianGaussianMixture, StudentTMixture):
        kw = dict(n_components=2, covariance_type=ct, missing="marginalize", random_state=0, max_iter=20)
        ref = cls(**kw).fit(clean)
        for rows in (bad, da.from_array(bad, chunks=120)):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                got = cls(**kw).fit(rows)
            said = [w.message for w in caught if issubclass(w.category, EmptyRowsWarning)]
            assert len(said) == 1 and said[0].n_rows == 4, (cls, [str(w.message) for w in caught])
            assert str(said[0]).startswith("4 row(s) have every feature missing"), said[0]
            assert got.n_iter_ == ref.n_iter_, cls
            np.testing.assert_allclose(got.means_, ref.means_, rtol=0, atol=1e-9, err_msg=cls.__name__)
            np.testing.assert_allclose(got.covariances_, ref.covariances_, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(got.weights_, ref.weights_, rtol=1e-9)
            assert got.lower_bound_ == pytest.approx(ref.lower_bound_, rel=1e-9, abs=1e-12)
        nothing = np.full((2, 6), np.nan)
        proba = got.predict_proba(nothing)
        assert np.all(got.predict(nothing) == np.argmax(proba[0]))
        scores = got.score_samples(nothing)
        if cls is BayesianGaussianMixture:  # the complete row's per-component offset (docs/architecture.md)
            lp = got.predict_proba(bad[:8])[[3, 7]]
            np.testing.assert_allclose(proba, lp, rtol=1e-12)
            np.testing.assert_allclose(np.exp(got.score_samples(bad[:8])[[3, 7]]), np.exp(scores), rtol=1e-12)
        else:
            np.testing.assert_allclose(proba, np.tile(got.weights_, (2, 1)), rtol=1e-10)
            # exactly 0, the density of nothing observed being 1 (the log of the weights' sum gave ±1e-16), in
            # memory, in a Dask chunk of other rows, and in the predictions' loglik column
            assert np.all(scores == 0.0), scores
            lazy = got.score_samples(da.from_array(bad[:8], chunks=4)).compute()
            assert lazy[3] == 0.0 and lazy[7] == 0.0, lazy
            (part,) = dask.compute(got.prediction_parts(da.from_array(bad[:8], chunks=8), loglik=True)[0])
            assert part["loglik"][3] == 0.0 and part["loglik"][7] == 0.0, part["loglik"]
        mixed = got.score_samples(bad[:8])
        np.testing.assert_allclose(np.delete(mixed, [3, 7]), got.score_samples(np.delete(bad[:8], [3, 7], axis=0)),
                                   rtol=1e-12)


def test_empty_rows_finds_the_rows_with_every_value_missing_in_either_layout():
    """``kernels.protocol.empty_rows`` (whole columns while many rows are NaN, then gathers) against
    ``np.isnan(x).all(axis=1)``: shares of missing values from none to all, C and Fortran order, one column,
    no rows."""
    from daskgmm.kernels.protocol import empty_rows

    rng = np.random.default_rng(0)
    for frac in (0.0, 0.01, 0.2, 0.5, 0.9, 1.0):
        x = rng.normal(size=(3000, 7))
        x[rng.random(x.shape) < frac] = np.nan
        x[::97] = np.nan
        for y in (x, np.asfortranarray(x), x[:, :1], x[:0]):
            np.testing.assert_array_equal(empty_rows(y), np.flatnonzero(np.isnan(y).all(axis=1)))


@pytest.mark.parametrize("compiled", [False, True], ids=["numpy", "compiled"])
def test_a_request_on_some_of_a_blocks_rows_leaves_the_blocks_own_to_the_requests_after_it(compiled):
    """A model that marginalises drops the rows with every value missing (a block of the others); that block's
    centred rows and features went into the same scratch memory as those the whole block had cached, and a
    request after it read the others' rows: NaN statistics on the NumPy path."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 4)) * 3
    x[rng.random(x.shape) < 0.1] = np.nan
    x[7] = np.nan
    centre = np.nanmean(x, axis=0)
    weights, means, covs = random_mixture("full", 3, 4, rng, 3.0)
    plain = MixtureState.from_covariances(weights, means, covs, "full").spec(centre)
    marginal = MixtureState.from_covariances(weights, means, covs, "full", missing="marginalize").spec(centre)
    before, _, after = chunk_pass(x, [MixtureRequest([plain]), MixtureRequest([marginal]), MixtureRequest([plain])],
                                  centre, compiled=compiled)
    for name in ("n", "s1", "s2", "loglik"):
        np.testing.assert_array_equal(getattr(after[0], name), getattr(before[0], name), err_msg=name)


@pytest.mark.parametrize("compiled", [False, True], ids=["numpy", "compiled"])
@pytest.mark.parametrize("ct", TYPES)
def test_the_starts_labels_take_rows_with_missing_values_by_their_observed_values(ct, compiled):
    """The "kmeans" start's statistics under missing="marginalize": each row with NaN goes to its nearest centre
    over its observed values, its missing values completed by that centre's, each of conditional variance
    label_spread's (the hard E-step of the spherical mixture of equal weights k-means is the limit of). Before,
    such rows were left out of the start, and the few complete rows of wide data made singular covariances."""
    from daskgmm.em.init import label_spec
    from daskgmm.kernels import covariance as cov

    if compiled:
        _core_or_skip()
    x = _data(frac=0.2)
    centers = np.array([[-2.0, 0.0, 1.0, 0.5], [1.0, 2.0, -1.0, 0.0], [3.0, -2.0, 0.0, 2.0]])
    centre, var = np.nanmean(x, axis=0), 0.7
    spec = label_spec(centers, centre, ct, np.float64, missing_variance=var)
    stats = chunk_pass(x, [MixtureRequest([spec])], centre, compiled=compiled)[0][0]
    _, means, covs = cov.estimate_parameters(stats, 0.0)
    # the reference, row by row
    obs = ~np.isnan(x)
    keep = obs.any(axis=1)
    d2 = np.array([[np.sum((r[o] - c[o]) ** 2) for c in centers] for r, o in zip(x, obs)])
    labels = d2.argmin(axis=1)
    filled = np.where(obs, x, centers[labels])
    k = len(centers)
    n_ref = np.array([np.sum(keep & (labels == j)) for j in range(k)])
    assert np.array_equal(np.round(stats.n).astype(int), n_ref)
    m_ref = np.array([filled[keep & (labels == j)].mean(axis=0) for j in range(k)])
    np.testing.assert_allclose(means, m_ref, rtol=1e-10, atol=1e-12)
    full = []
    for j in range(k):
        rows = keep & (labels == j)
        e = filled[rows] - m_ref[j]
        full.append(e.T @ e / rows.sum() + np.diag(var * (~obs[rows]).sum(axis=0) / rows.sum()))
    full = np.array(full)
    share = n_ref / n_ref.sum()
    expected = {"full": full, "tied": np.einsum("k,kij->ij", share, full),
                "diag": np.diagonal(full, axis1=1, axis2=2),
                "spherical": np.diagonal(full, axis1=1, axis2=2).mean(axis=1)}[ct]
    np.testing.assert_allclose(covs, expected, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("seed", [0, 1])
def test_a_full_fit_of_wide_rows_with_few_complete_ones_starts_from_every_row(seed):
    """D = 50 with 5% of the values missing leaves about 150 complete rows of 2,000: the start took its
    covariances from them alone (about 37 rows per component in 50 dimensions, singular), and the full fit
    ended with three components on 30 rows each (adjusted Rand 0.002 on these two seeds; a diagonal fit found
    1.0); the variational mixture found 0.004 and 0.006, the t mixture (its start fitted on those rows) 0.34
    and 0.002. Started from every row, each finds the blobs."""
    from sklearn.datasets import make_blobs
    from sklearn.metrics import adjusted_rand_score

    from daskgmm import BayesianGaussianMixture, GaussianMixture, StudentTMixture

    X, y = make_blobs(2000, n_features=50, centers=4, cluster_std=2.0, random_state=seed)
    X[np.random.default_rng(seed).random(X.shape) < 0.05] = np.nan
    assert (~np.isnan(X).any(axis=1)).sum() < 160
    for est in (GaussianMixture(4, missing="marginalize", random_state=seed),
                BayesianGaussianMixture(n_components=4, missing="marginalize", random_state=seed),
                StudentTMixture(4, missing="marginalize", random_state=seed)):
        assert adjusted_rand_score(y, est.fit(X).predict(X)) == 1.0, type(est).__name__
    # the start's weights are shares of every row it labelled, not of the complete rows (the scan's weight)
    from daskgmm.engine.passes import ChunkedData
    from daskgmm.fitting.mixture import MixtureParams, initial_states

    data = ChunkedData(da.from_array(X, chunks=700), None, cache="memory")
    (start,) = initial_states(data, data.scan(), [(MixtureParams(4, missing="marginalize"), seed)])
    assert abs(start.weights.sum() - 1.0) < 1e-12


def test_no_complete_row_refuses_only_the_starts_that_draw_complete_rows():
    """Wide sensor rows with scattered gaps (every row misses some value, no column missing everywhere) were refused
    whatever the start (user trial, D = 80 with 10% missing): the scan's centre came from the complete rows. Each
    column's observed values centre them now, and the default start draws every row with an observed value, so
    they fit (with means_init too); the starts that take complete rows (k-means++, random, random_from_data) are
    refused, naming the columns missing most often, with their counts; the warning for too few complete rows
    names them too."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from daskgmm import BayesianGaussianMixture, GaussianMixture, StudentTMixture
    from daskgmm.io.files import DataError
    from daskgmm.validation.scan import DegenerateDataWarning

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4))
    x[:150, 2] = x[150:, 1] = x[:20, 1] = x[150:180, 0] = np.nan  # every row misses a value; 150, 70 and 30 rows
    for est in (GaussianMixture(2, missing="marginalize", max_iter=3),
                GaussianMixture(2, missing="marginalize", max_iter=3, means_init=np.zeros((2, 4))),
                BayesianGaussianMixture(n_components=2, missing="marginalize", max_iter=3),
                StudentTMixture(n_components=2, missing="marginalize", max_iter=3)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            assert np.isfinite(est.fit(x).score(x))
    for cls in (GaussianMixture, BayesianGaussianMixture, StudentTMixture):
        for init in ("k-means++", "random", "random_from_data"):
            said = (rf"init_params='{re.escape(init)}' starts .*row.* without NaN, and every one of the 200 row\(s\).*"
                    r"use init_params='kmeans'.*column\(s\) 2, 1, 0 of X are missing most often \(in 150, 70 and 30 "
                    r"of 200 rows\)")
            with pytest.raises(DataError, match=said):
                cls(n_components=2, missing="marginalize", init_params=init).fit(x)
    x[199] = rng.normal(size=4)  # one complete row: a warning, naming the columns too
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # the starts that draw complete rows (the default draws every row: no warning)
        GaussianMixture(2, missing="marginalize", max_iter=2, init_params="k-means++").fit(x)
        StudentTMixture(n_components=2, missing="marginalize", max_iter=2, init_params="k-means++").fit(x)
    said = [str(w.message) for w in caught if issubclass(w.category, DegenerateDataWarning)]
    assert len(said) == 2 and all("column(s) 2, 1, 0 of X are missing most often (in 150, 69 and 30 of 200 rows)"
                                  in m for m in said), said
    assert "give it one (means_init)" in said[0] and "means_init" not in said[1], said  # the t mixture takes none


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_row_with_nothing_observed_scores_exactly_0(dtype, tmp_path):
    """A row with every value missing has likelihood 1 under a mixture whose weights sum to 1: score_samples and
    write_predictions' loglik give exactly 0, in memory and from Dask chunks (they gave about -1e-16, +3e-16 for
    a t mixture: a known limitation the docs listed). The variational mixture keeps its own form's value."""
    import pandas as pd

    from daskgmm import BayesianGaussianMixture, GaussianMixture, StudentTMixture
    from daskgmm.validation.scan import EmptyRowsWarning

    _, xm, _, _ = _mixture_data(4, n=300)
    x = xm.astype(dtype)
    x[[0, 5, 200]] = np.nan
    for cls in (GaussianMixture, StudentTMixture, BayesianGaussianMixture):
        # the warning says what they get (it said 'log-likelihood 0' of the variational mixture's too)
        said = ("expected log-weights, its score a little below 0" if cls is BayesianGaussianMixture
                else "its log-likelihood 0")
        with pytest.warns(EmptyRowsWarning, match=said):
            m = cls(n_components=3, missing="marginalize", random_state=0, max_iter=5).fit(x)
        m.write_predictions(da.from_array(x, chunks=70), tmp_path / cls.__name__ / dtype.__name__, loglik=True)
        written = pd.read_parquet(tmp_path / cls.__name__ / dtype.__name__)["loglik"].to_numpy()
        for got in (m.score_samples(x), m.score_samples(da.from_array(x, chunks=70)).compute(), written):
            empty = got[[0, 5, 200]]
            if cls is BayesianGaussianMixture:
                assert np.all(empty == empty[0]) and -1 < empty[0] < 0, empty
            else:
                assert np.all(empty == 0.0), (cls.__name__, empty)
            assert np.all(got[[1, 2, 199]] < -1), got[:3]


def test_rows_with_nan_given_to_a_mixture_that_does_not_marginalise_say_that_it_can(tmp_path):
    """A model fitted with missing='raise' and asked to predict, score, write or learn from rows with NaN gave
    scikit-learn's sentence alone, which says to impute or drop them (user trial: the fit's error says the mixture
    marginalises them; these did not): the mixtures' messages end saying how (set_params on the fitted model), in
    memory and from Dask chunks; KMeans, which cannot, says nothing of it."""
    from daskgmm import GaussianMixture, KMeans, StudentTMixture

    x, xm, _, _ = _mixture_data(4, n=300)
    lazy = da.from_array(xm, chunks=70)
    said = "takes them as missing values with missing='marginalize' (on a fitted model, set_params"
    for model in (GaussianMixture(2, random_state=0, max_iter=5), StudentTMixture(n_components=2, max_iter=5),
                  KMeans(2, n_init=1, random_state=0)):
        model.fit(x)
        calls = [("predict", xm), ("predict", lazy), ("score", xm), ("write_predictions", lazy)]
        if hasattr(model, "partial_fit"):
            calls += [("partial_fit", xm), ("partial_fit", lazy)]
        for method, rows in calls:
            args = (tmp_path / f"{type(model).__name__}",) if method == "write_predictions" else ()
            with pytest.raises(ValueError, match="Input X contains NaN") as err:
                got = getattr(model, method)(rows, *args)
                if hasattr(got, "compute"):
                    got.compute()
            name = type(model).__name__
            assert (said in str(err.value)) == (name != "KMeans"), (name, str(err.value))
            assert ("its predictions and partial_fit" in str(err.value)) == (name == "GaussianMixture")
    model = GaussianMixture(2, random_state=0, max_iter=5).fit(x).set_params(missing="marginalize")
    assert np.isfinite(model.score(xm)) and model.partial_fit(xm).n_batches_ == 2  # as the message says


def _one_cluster_without_complete_rows(seed, n=1500, d=6):
    """Three clusters, 5% of values missing at random, and feature 0 missing in every row of cluster 0 (missing not at
    random: a sensor that one kind of machine lacks), so that cluster has no complete row."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 6.0, (3, d))
    y = rng.integers(0, 3, n)
    a = [rng.normal(0, 0.4, (d, d)) + np.eye(d) for _ in range(3)]
    x = np.stack([means[y[i]] + a[y[i]] @ rng.normal(size=d) for i in range(n)])
    x[rng.random((n, d)) < 0.05] = np.nan
    x[y == 0, 0] = np.nan
    return x, y


@pytest.mark.parametrize("seed, random_state", [(5, 0), (6, 1), (8, 0)])
def test_a_cluster_without_complete_rows_gets_its_own_component(seed, random_state):
    """The 'kmeans' start ran k-means on the scan's sample, which holds complete rows only: a cluster with none
    (a feature missing in all its rows) was not seen, its rows joined another component at the start and EM kept
    them there (adjusted Rand 0.44-0.55 on 7 of 30 seeds of this data, where mean imputation and scikit-learn's
    GaussianMixture got 0.95-1.0 on five of them; user trial). k-means now runs on a sample of every row with an
    observed value, its missing values filled by their column's mean: 1.0 on all 30 (these three were 0.44-0.55),
    for the Gaussian and variational mixtures, the same model for any chunking."""
    from sklearn.metrics import adjusted_rand_score

    from daskgmm import BayesianGaussianMixture, GaussianMixture

    x, y = _one_cluster_without_complete_rows(seed)
    for make in (lambda: GaussianMixture(3, missing="marginalize", random_state=random_state),
                 lambda: BayesianGaussianMixture(n_components=3, missing="marginalize", random_state=random_state)):
        got = make().fit(x)
        assert adjusted_rand_score(y, got.predict(x)) > 0.99, type(got).__name__
        chunked = make().fit(da.from_array(x, chunks=211))
        np.testing.assert_allclose(chunked.means_, got.means_, rtol=0, atol=1e-9)


def _four_blobs_one_without_complete_rows(seed, n=4000, outliers=0.0):
    """Four clusters in 6 features, 2% of values missing at random and feature 5 missing in every row of cluster 0
    (no complete row there); with ``outliers``, that share of rows replaced by gross outliers, uniform in [-40, 40]
    in every feature (label -1)."""
    rng = np.random.default_rng(seed)
    d = 6
    means = rng.normal(0, 6.0, (4, d))
    y = rng.integers(0, 4, n)
    a = np.stack([rng.normal(0, 0.4, (d, d)) + np.eye(d) for _ in range(4)])
    x = np.einsum("nij,nj->ni", a[y], rng.normal(size=(n, d))) + means[y]
    if outliers:
        far = rng.random(n) < outliers
        x[far] = rng.uniform(-40, 40, (far.sum(), d))
        y = np.where(far, -1, y)
    x[rng.random((n, d)) < 0.02] = np.nan
    x[y == 0, 5] = np.nan
    return x, y


@pytest.mark.parametrize("ct", TYPES)
def test_the_t_mixtures_robust_start_sees_a_cluster_without_complete_rows(ct):
    """StudentTMixture's outlier-robust 'kmeans' start fitted its k-means candidates as t mixtures on the scan's
    sample, complete rows only, and missed a cluster with none (a feature missing in all its rows): adjusted Rand
    0.64-0.66 on this seed for every covariance type, 0.82-0.85 on average over 10 seeds (GaussianMixture: 1.0). It
    now draws among every row with an observed value (the t marginal for rows with NaN): 0.99-1.0 on all 10, the
    same model for any chunking."""
    import warnings

    from sklearn.metrics import adjusted_rand_score

    from daskgmm import StudentTMixture

    x, y = _four_blobs_one_without_complete_rows(8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning on some types: not what this is about
        got = StudentTMixture(4, covariance_type=ct, missing="marginalize", random_state=8).fit(x)
        chunked = StudentTMixture(4, covariance_type=ct, missing="marginalize", random_state=8).fit(
            da.from_array(x, chunks=(611, 6)))
    assert adjusted_rand_score(y, got.predict(x)) > 0.99
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(chunked, name), getattr(got, name), rtol=1e-9, atol=1e-9, err_msg=name)
    # a component's df_ of 1.5e4 ('full'), where the likelihood is flat in it (4e-5 of it is ~1e-15 a row): the
    # passes' rounding by chunking moves it by 3e-9 of itself
    np.testing.assert_allclose(chunked.df_, got.df_, rtol=1e-8, err_msg="df_")


def test_the_t_mixtures_robust_start_still_keeps_away_from_outliers_with_such_a_cluster(monkeypatch):
    """With 3% gross outliers beside the cluster without complete rows, the robust start on every row with an
    observed value found the clusters (adjusted Rand 1.0 on the clusters' rows; before, on complete rows, 0.71),
    where the plain 'kmeans' start, which also labels every row (robust=False), gave a component to the outliers
    (0.71; 0.33-0.72 on 6 of 10 seeds): falling back to it would have lost what the robust start is for."""
    from sklearn.metrics import adjusted_rand_score

    from daskgmm import StudentTMixture
    from daskgmm.fitting import studentt

    x, y = _four_blobs_one_without_complete_rows(2, n=3000, outliers=0.03)
    inliers = y >= 0

    def ari():
        t = StudentTMixture(4, covariance_type="tied", missing="marginalize", random_state=2).fit(x)
        return adjusted_rand_score(y[inliers], t.predict(x)[inliers])

    assert ari() > 0.99
    monkeypatch.setattr(studentt, "sample_fitted_states",
                        lambda data, scan, jobs: studentt.studentt_initial_states(data, scan, jobs, robust=False))
    assert ari() < 0.9  # the data ask for the robust start


def test_random_from_data_with_fewer_rows_to_draw_than_components_is_refused():
    """init_params='random_from_data' starts each component at a distinct row of positive weight (and no NaN under
    missing='marginalize'): with fewer such rows the draw took what there was, and a GaussianMixture(3) ended with
    means_ of shape (1, D), whose predict then said set_params had changed it (user trial). scikit-learn's
    'Expected n_samples >= n_components' now, a DataError (the command exits 2), for every mixture and select_model."""
    from daskgmm import BayesianGaussianMixture, GaussianMixture, StudentTMixture, select_model
    from daskgmm.io.files import DataError

    x = np.random.default_rng(1).normal(size=(60, 3))
    x[1:, 0] = np.nan  # one complete row
    weights = np.r_[1.0, 1.0, np.zeros(58)]  # two rows of positive weight
    said = r"Expected n_samples >= n_components but got n_components = 3, n_samples = {}: .*init_params='kmeans'"
    for model in (GaussianMixture(3, init_params="random_from_data", missing="marginalize"),
                  BayesianGaussianMixture(n_components=3, init_params="random_from_data", missing="marginalize",
                                          covariance_prior=1.0, covariance_type="spherical"),
                  StudentTMixture(n_components=3, init_params="random_from_data", missing="marginalize")):
        with pytest.raises(DataError, match=said.format(1)):
            model.fit(x)
    complete = np.nan_to_num(x, nan=0.5)
    with pytest.raises(DataError, match=said.format(2)):
        GaussianMixture(3, init_params="random_from_data").fit(complete, sample_weight=weights)
    with pytest.raises(DataError, match=said.format(2)):
        select_model(complete, [1, 3], ("diag",), init_params="random_from_data", sample_weight=weights)
    two = GaussianMixture(2, init_params="random_from_data").fit(complete, sample_weight=weights)
    assert two.means_.shape == (2, 3)


@pytest.mark.parametrize("seed", [1, 7])
@pytest.mark.parametrize("added", ["nothing_observed", "weight_zero"])
def test_a_row_that_says_nothing_leaves_the_kmeans_start_alone(seed, added):
    """A fit with a row of nothing observed (or of weight 0) equals the fit without it (python.md). With as many
    rows as the 'kmeans' start's draw asks for (512 per component), the draw took every row but was called a
    sample (k-means on them unweighted, in the draw's order); the added row, which the draw skips, made it every
    row (the canonical weighted point set): another start, and on seed 7 another optimum (lower_bound_ -6.917
    against -6.949)."""
    from sklearn.datasets import make_blobs

    from daskgmm import GaussianMixture

    x, _ = make_blobs(1000, n_features=4, centers=5, random_state=seed)
    x[np.random.default_rng(seed).random(x.shape) < 0.1] = np.nan
    if added == "nothing_observed":
        more, w, w_more = np.vstack([x, np.full((1, 4), np.nan)]), None, None
    else:
        more, w, w_more = np.vstack([x, x[:1]]), np.ones(len(x)), np.r_[np.ones(len(x)), 0.0]
    a = GaussianMixture(5, missing="marginalize", random_state=seed).fit(x, sample_weight=w)
    b = GaussianMixture(5, missing="marginalize", random_state=seed).fit(more, sample_weight=w_more)
    for name in ("weights_", "means_", "covariances_", "lower_bound_"):
        np.testing.assert_allclose(getattr(b, name), getattr(a, name), rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("model", ["GaussianMixture", "StudentTMixture"])
def test_a_row_that_says_nothing_leaves_the_start_alone_with_exactly_the_rows_the_draw_asks_for(model):
    """The 'kmeans' start's draw asks for 512 rows per component; with exactly that many rows with an observed value
    it took them all but, one more row of nothing observed in the data, called them a sample (k-means unweighted, in
    the draw's order): another start, and another optimum (means 11 apart, 4 clusters of 2,048 rows), for the
    Gaussian mixture and the t mixture's robust start alike. The draw now asks for one more row than it keeps: fewer
    came, every row was drawn."""
    import warnings

    import daskgmm

    rng = np.random.default_rng(1)
    x = np.vstack([rng.normal(c, 1.0, (512, 6)) for c in (0.0, 5.0, 10.0, 15.0)])
    x[:, :3] += rng.normal(0, 4.0, (4, 3)).repeat(512, axis=0)
    x[rng.random(x.shape) < 0.02] = np.nan
    more = np.vstack([x, np.full((1, 6), np.nan)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = getattr(daskgmm, model)(4, missing="marginalize", random_state=0, max_iter=20).fit(x)
        b = getattr(daskgmm, model)(4, missing="marginalize", random_state=0, max_iter=20).fit(more)
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(b, name), getattr(a, name), rtol=1e-9, atol=1e-12, err_msg=name)


def test_a_candidate_of_select_model_starts_as_the_estimator_alone_with_missing_values():
    """Under missing='marginalize' the 'kmeans' start draws 512 rows per component with an observed value and fills
    their NaN by the drawn rows' column means. select_model drew for its largest K and gave every candidate that
    draw and its fill (and called it every row when the largest K's asked for all): K = 4 here ended at another
    optimum than GaussianMixture(4) alone (means 7.3 apart), where python.md says each equals the estimator fitted
    alone. Each K now starts from the first rows of that draw, its own draw, filled by their own means."""
    from sklearn.datasets import make_blobs

    from daskgmm import GaussianMixture, select_model

    x, _ = make_blobs(3000, n_features=4, centers=4, random_state=0)
    x[np.random.default_rng(0).random(x.shape) < 0.1] = np.nan
    res = select_model(x, [2, 4, 6], "full", random_state=0, missing="marginalize")
    for k in (2, 4):
        alone = GaussianMixture(k, missing="marginalize", random_state=0).fit(x)
        for name in ("weights_", "means_", "covariances_", "lower_bound_"):
            np.testing.assert_allclose(getattr(res.models_[(k, "full")], name), getattr(alone, name), rtol=1e-10,
                                       atol=1e-10, err_msg=f"K = {k}: {name}")


@pytest.mark.parametrize("seed", [0, 1])
def test_means_init_with_one_missing_value_starts_as_on_complete_data(seed):
    """With means_init given, scikit-learn's 'kmeans' start takes the weights and covariances from k-means'
    labels and the given means in place of theirs; on complete data daskgmm does too. Under missing='marginalize'
    the labels were those of the given means instead (for k-means on few complete rows, which k-means on every
    observed row has since made needless): one NaN in 1,500 rows switched to that start, and a rough means_init
    (the data's mean plus noise) ended at adjusted Rand 0.55 and 0.42 where the complete rows gave 1.0."""
    from sklearn.datasets import make_blobs
    from sklearn.metrics import adjusted_rand_score

    from daskgmm import GaussianMixture

    x, y = make_blobs(1500, n_features=6, centers=3, random_state=seed)
    means = x.mean(axis=0) + np.random.default_rng(seed).normal(size=(3, 6))
    one = x.copy()
    one[0, 0] = np.nan
    complete = GaussianMixture(3, means_init=means, random_state=0, missing="marginalize").fit(x)
    got = GaussianMixture(3, means_init=means, random_state=0, missing="marginalize").fit(one)
    assert adjusted_rand_score(y, complete.predict(x)) == 1.0
    assert adjusted_rand_score(y, got.predict(one)) == 1.0
    np.testing.assert_allclose(got.means_, complete.means_, atol=0.05)


def _no_complete_row(n=1200, d=30, k=4, frac=0.05, seed=0, complete=0):
    """Well-separated blobs with ``frac`` of the values missing at random and no complete row (each complete row
    loses one value), but the first ``complete`` rows: the wide sensor data the docs listed as refused."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    x = rng.normal(0, 6, (k, d))[y] + rng.normal(size=(n, d))
    mask = rng.random((n, d)) < frac
    whole = ~mask.any(axis=1)
    mask[whole, rng.integers(0, d, int(whole.sum()))] = True
    mask[:complete] = False
    x[mask] = np.nan
    return x, y


_NO_COMPLETE_ROW_MODELS = {
    "gaussian-full": ("GaussianMixture", {"n_components": 4}),
    "gaussian-diag": ("GaussianMixture", {"n_components": 4, "covariance_type": "diag"}),
    "variational": ("BayesianGaussianMixture", {"n_components": 4}),
    "student": ("StudentTMixture", {"n_components": 4}),
}


@pytest.mark.parametrize("name", sorted(_NO_COMPLETE_ROW_MODELS))
def test_no_complete_row_fits_each_mixture_whatever_the_chunking(name):
    """Rows with scattered gaps and no complete row (30 features 5% missing) were refused (a DataError naming the
    columns missing most often): the scan's centre, the variational prior and the scan's sample came from complete
    rows. Each column's observed values centre the passes and give the priors now, and the default start draws
    every row with an observed value: each mixture separates the blobs (adjusted Rand 1.0), from memory and from
    Dask chunks of odd sizes alike (the same fit to rounding, the same labels)."""
    from sklearn.base import clone
    from sklearn.metrics import adjusted_rand_score

    import daskgmm

    cls, params = _NO_COMPLETE_ROW_MODELS[name]
    model = getattr(daskgmm, cls)(missing="marginalize", random_state=0, **params)
    x, y = _no_complete_row()
    assert np.isnan(x).any(axis=1).all()
    a = clone(model).fit(x)
    b = clone(model).fit(da.from_array(x, chunks=((301, 3, 500, 396), 30)))
    assert adjusted_rand_score(y, a.predict(x)) == 1.0
    np.testing.assert_allclose(b.means_, a.means_, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(b.covariances_, a.covariances_, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(b.predict(x), a.predict(x))
    if name == "variational":  # the prior's mean is each column's over its observed values
        np.testing.assert_allclose(a.mean_prior_, np.nanmean(x, axis=0), rtol=1e-12, atol=1e-12)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # two iterations, to see the start
def test_no_complete_row_start_takes_the_scale_of_the_observed_values():
    """The 'kmeans' start completes a missing value with its centre's, of the within-cluster variance k-means
    leaves (label_spread), taken on the scan's sample of complete rows: without one it was 1.0, whatever the data's
    scale, and rows 100 times smaller took 7 EM iterations where 4 sufficed. It is taken over the observed values
    of the rows k-means drew then: the fit of scaled rows is the scaled fit."""
    from daskgmm import GaussianMixture

    x, _ = _no_complete_row()
    fits = [GaussianMixture(4, missing="marginalize", random_state=0, reg_covar=1e-6 * s**2, max_iter=2).fit(x * s)
            for s in (1.0, 0.01)]
    np.testing.assert_allclose(fits[1].means_, fits[0].means_ * 0.01, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(fits[1].covariances_, fits[0].covariances_ * 1e-4, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("model", ["GaussianMixture", "StudentTMixture"])
def test_tiny_sample_weights_fit_as_any_scale_without_a_complete_row(model):
    """A maximum-likelihood fit scales tiny weights up by a power of two (rescale_weights), or the M-step's 10 eps
    swamps them; the factor was taken from the scan's weight, the complete rows' under missing='marginalize', and
    with none (a fit allowed since no complete row is needed) no factor was taken: weights of 2**-60 pulled the
    means to the data's mean. The factor is taken from the weight of the rows with an observed value."""
    import daskgmm

    rng = np.random.default_rng(0)
    x = np.r_[rng.normal(-5, 1, (200, 3)), rng.normal(5, 1, (200, 3))]
    x[np.arange(400), rng.integers(0, 3, 400)] = np.nan  # every row misses one value
    fits = [getattr(daskgmm, model)(2, missing="marginalize", random_state=0, max_iter=20).fit(
        x, sample_weight=np.full(400, s)) for s in (1.0, 2.0**-60)]
    for attr in ("means_", "covariances_", "weights_"):
        np.testing.assert_array_equal(getattr(fits[1], attr), getattr(fits[0], attr), err_msg=attr)


def test_every_value_missing_names_the_columns_not_the_weights():
    """X of nothing but NaN under missing='marginalize' said "Sample weights must contain at least one non-zero
    number ... got sample_weight with a sum of 0" (a ValueError: the command's exit 1) where no weights were
    given: no column has an observed value, which the DataError names (exit 2), as for one such column."""
    import warnings

    from daskgmm import BayesianGaussianMixture, GaussianMixture, StudentTMixture
    from daskgmm.io.files import DataError

    x = np.full((40, 3), np.nan)
    for cls in (GaussianMixture, BayesianGaussianMixture, StudentTMixture):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the rows with every value missing, left out
            with pytest.raises(DataError, match=r"column\(s\) 0, 1, 2 of X are missing in every row"):
                cls(n_components=2, missing="marginalize").fit(x)


def test_a_constant_column_is_warned_of_without_a_complete_row():
    """The zero-variance warning (and 'every row is one point') was silent on data with no complete row: it
    returned for a scan of no weight, the complete rows' under missing='marginalize'; such data fit now, so a
    constant column among the observed values is warned of as on data with complete rows."""
    from daskgmm import GaussianMixture
    from daskgmm.validation.scan import DegenerateDataWarning

    x, _ = _no_complete_row(n=300, d=6)
    x[:, 0] = np.where(np.isnan(x[:, 0]), np.nan, 3.0)
    with pytest.warns(DegenerateDataWarning, match=r"column\(s\) 0 of X have zero variance"):
        GaussianMixture(2, missing="marginalize", max_iter=2).fit(x)


def test_random_from_data_without_a_complete_row_says_scikit_learns_sentence_first():
    """init_params='random_from_data' with fewer rows to draw than components is scikit-learn's "Expected n_samples
    >= n_components" first, then ours; with no complete row at all the new refusal said ours alone (one complete
    row: scikit-learn's sentence). Both now, the columns named too."""
    from daskgmm import GaussianMixture
    from daskgmm.io.files import DataError

    x, _ = _no_complete_row(n=60, d=3)
    with pytest.raises(DataError, match=r"^Expected n_samples >= n_components but got n_components = 2, n_samples = "
                                        r"0: GaussianMixture with missing='marginalize' and init_params="
                                        r"'random_from_data' starts .*column\(s\) .* of X are missing most often"):
        GaussianMixture(2, missing="marginalize", init_params="random_from_data").fit(x)
