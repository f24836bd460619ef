"""BayesianGaussianMixture(missing="marginalize"): the variational E-step with latent missing values (issue 26)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import multivariate_normal
from sklearn.utils.estimator_checks import parametrize_with_checks

from daskgmm import BayesianGaussianMixture
from daskgmm.kernels import MixtureRequest, chunk_pass, merge_partials
from daskgmm.kernels.results import SuffStats
from daskgmm.models.states import MixtureState
from daskgmm.models.variational import VariationalState

from .test_missing import TYPES, _core_or_skip, _data, _full_covs, _mixture_data, _model


def _posterior(ct, x, prior_type="dirichlet_process", seed=0):
    """A variational posterior from the statistics of a Gaussian mixture's responsibilities on ``x``'s
    complete rows (so every parameter is a plausible, non-trivial one)."""
    w, m, c = _model(ct, seed=seed)
    centre = np.nanmean(x, axis=0)
    xc = x[~np.isnan(x).any(axis=1)]
    g = MixtureState.from_covariances(w, m + 10.0, c, ct)
    stats = chunk_pass(xc, [MixtureRequest([g.spec(centre)])], centre)[0][0]
    d = x.shape[1]
    cp = {"full": np.eye(d), "tied": np.eye(d), "diag": np.ones(d), "spherical": np.asarray(1.0)}[ct]
    return VariationalState.from_stats(
        stats, covariance_type=ct, prior_type=prior_type, weight_concentration_prior=0.5, mean_precision_prior=0.8,
        mean_prior=centre, degrees_of_freedom_prior=d + 0.5, covariance_prior=cp, missing="marginalize",
    )


def reference_pass(state: VariationalState, x, shift):
    """The variational E-step row by row with SciPy: every row's observed part scored under N(m_k, P_k⁻¹) plus the
    component's offset, the completions' statistics (full, about ``shift``), Σ r log r, Σ log p and the entropy of
    the missing values' posterior, ``½ log det(2πe Cov[x_m | x_o])``. A row with nothing observed is left out,
    as the fit leaves it out."""
    x = x[~np.isnan(x).all(axis=1)]
    k, d = state.means.shape
    ct = state.covariance_type
    sig = _full_covs(state.covariances, ct, k, d)  # (nu W)⁻¹ = P⁻¹
    off = state.log_offsets()
    n = np.zeros(k)
    s1 = np.zeros((k, d))
    s2 = np.zeros((k, d, d))
    loglik = rlogr = entropy = 0.0
    for row in x:
        o = ~np.isnan(row)
        mm = ~o
        logit = np.array([(multivariate_normal(state.means[j][o], sig[j][np.ix_(o, o)]).logpdf(row[o])
                           if o.any() else 0.0) + off[j] for j in range(k)])
        top = logit.max()
        lse = top + math.log(np.exp(logit - top).sum())
        r = np.exp(logit - lse)
        loglik += lse
        rlogr += float(np.sum(r * np.log(r)))
        for j in range(k):
            xh = row.copy()
            cc = np.zeros((d, d))
            if mm.any():
                gain = (sig[j][np.ix_(mm, o)] @ np.linalg.inv(sig[j][np.ix_(o, o)]) if o.any()
                        else np.zeros((mm.sum(), 0)))
                xh[mm] = state.means[j][mm] + gain @ (row[o] - state.means[j][o])
                cmm = sig[j][np.ix_(mm, mm)] - gain @ sig[j][np.ix_(o, mm)]
                cc[np.ix_(mm, mm)] = cmm
                entropy += r[j] * 0.5 * np.linalg.slogdet(2 * math.pi * math.e * cmm)[1]
            v = xh - shift
            n[j] += r[j]
            s1[j] += r[j] * v
            s2[j] += r[j] * (np.outer(v, v) + cc)
    s2 = {"full": s2, "tied": s2.sum(axis=0), "diag": np.diagonal(s2, axis1=1, axis2=2),
          "spherical": np.trace(s2, axis1=1, axis2=2)}[ct]
    stats = SuffStats(n=n, s1=s1, s2=np.ascontiguousarray(s2), loglik=loglik, weight=float(len(x)), rows=len(x),
                      shift=shift, covariance_type=ct, resp_log_resp=rlogr)
    return stats, entropy


def _pass(state, x, chunks=1, compiled=False, block_rows=None):
    centre = np.nanmean(x, axis=0)
    req = MixtureRequest([state.spec(centre)])
    res = None
    for c in np.array_split(x, chunks):
        part = chunk_pass(c, [req], centre, block_rows=block_rows, compiled=compiled)
        res = part if res is None else merge_partials([req], res, part)
    return res[0][0], centre


@pytest.mark.parametrize("compiled", [False, True], ids=["numpy", "compiled"])
@pytest.mark.parametrize("ct", TYPES)
def test_variational_step_matches_per_row_reference(ct, compiled):
    if compiled:
        _core_or_skip()
    x = _data()
    state = _posterior(ct, x)
    stats, centre = _pass(state, x, compiled=compiled)
    ref, entropy = reference_pass(state, x, centre)
    nan = np.isnan(x)
    assert stats.incomplete_rows == int((nan.any(axis=1) & ~nan.all(axis=1)).sum())  # those left out not counted
    assert abs(stats.loglik - ref.loglik) < 1e-10 * abs(ref.loglik)
    assert abs(stats.resp_log_resp - ref.resp_log_resp) < 1e-9 * abs(ref.resp_log_resp)
    # the entropy of the missing values' posterior, from the pass's sums, against the direct per-row one
    assert abs(state.missing_entropy(stats) - entropy) < 1e-9 * abs(ref.loglik)
    new, want = state.update(stats), state.update(ref)
    for name in ("means", "covariances", "mean_precision", "degrees_of_freedom", "weight_concentration"):
        np.testing.assert_allclose(getattr(new, name), getattr(want, name), rtol=1e-10, atol=1e-10, err_msg=name)
    bound = want.lower_bound(ref.resp_log_resp) + entropy
    assert abs(state.objective(stats) - bound) < 1e-10 * abs(bound)


@pytest.mark.parametrize("ct", TYPES)
def test_precise_path_matches_reference(ct):
    """Far from the centre the variational model takes the per-component path; rows with NaN follow it."""
    x = _data()
    near = _posterior(ct, x)
    shift = 1e5
    far = VariationalState(**{**{f: getattr(near, f) for f in near.__dataclass_fields__},
                              "means": near.means + shift, "mean_prior": near.mean_prior + shift})
    spec = far.spec(np.zeros(4))
    assert spec.precise is not None and spec.marginal is spec.precise
    stats = chunk_pass(x + shift, [MixtureRequest([spec])], np.zeros(4))[0][0]
    ref, entropy = reference_pass(near, x, np.nanmean(x, axis=0))
    assert abs(stats.loglik - ref.loglik) < 1e-9 * abs(ref.loglik)
    assert abs(far.missing_entropy(stats) - entropy) < 1e-8 * abs(ref.loglik)
    new, want = far.update(stats), near.update(ref)
    np.testing.assert_allclose(new.means - shift, want.means, atol=1e-7)
    np.testing.assert_allclose(new.covariances, want.covariances, rtol=1e-6, atol=1e-7)
    assert abs(far.objective(stats) - (want.lower_bound(ref.resp_log_resp) + entropy)) < 1e-8 * abs(ref.loglik)


def test_chunking_and_blocks_do_not_matter():
    x = _data(n=500)
    state = _posterior("full", x)
    one, _ = _pass(state, x)
    many, _ = _pass(state, x, chunks=5, block_rows=37)
    assert many.incomplete_rows == one.incomplete_rows
    assert abs(state.objective(many) - state.objective(one)) < 1e-10 * abs(state.objective(one))
    np.testing.assert_allclose(state.update(many).covariances, state.update(one).covariances, rtol=1e-11)


# --------------------------------------------------------------------------- the estimator


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_complete_data_fit_is_bit_identical():
    from daskgmm import BayesianGaussianMixture

    x, _, _, _ = _mixture_data(3, n=2000)
    for ct in TYPES:
        a = BayesianGaussianMixture(n_components=4, covariance_type=ct, random_state=0).fit(x)
        b = BayesianGaussianMixture(n_components=4, covariance_type=ct, random_state=0, missing="marginalize").fit(x)
        assert a.lower_bound_ == b.lower_bound_ and a.lower_bounds_ == b.lower_bounds_, ct
        np.testing.assert_array_equal(a.means_, b.means_)
        np.testing.assert_array_equal(a.covariances_, b.covariances_)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("prior", ["dirichlet_process", "dirichlet_distribution"])
@pytest.mark.parametrize("ct", TYPES)
def test_lower_bound_increases_on_data_with_nan(ct, prior):
    _, xm, _, _ = _mixture_data(4, n=3000)
    w = np.random.default_rng(0).uniform(0.1, 5.0, len(xm))
    b = BayesianGaussianMixture(n_components=5, covariance_type=ct, weight_concentration_prior_type=prior,
                                random_state=0, missing="marginalize", tol=1e-8, max_iter=60).fit(xm, sample_weight=w)
    lb = np.asarray(b.lower_bounds_)
    assert len(lb) > 5
    assert np.all(np.diff(lb) >= -1e-9 * np.abs(lb[1:])), np.diff(lb).min()


def test_recovers_the_mixture_and_predicts_rows_with_nan():
    import dask.array as da

    from daskgmm import BayesianGaussianMixture

    _, xm, means, _ = _mixture_data(5, n=6000)
    b = BayesianGaussianMixture(n_components=6, random_state=0, missing="marginalize", max_iter=300).fit(xm)
    big = np.argsort(b.weights_)[::-1][:3]
    err = np.abs(b.means_[big][:, None, :] - means[None]).max(axis=2).min(axis=0)
    assert err.max() < 0.3, err
    # predictions of rows with NaN: the variational logits of their observed part, row by row
    state = b._state(np.float64)
    rows = xm[:50]
    logits = np.stack([
        [multivariate_normal(state.means[j][~np.isnan(r)],
                             state.covariances[j][np.ix_(~np.isnan(r), ~np.isnan(r))]).logpdf(r[~np.isnan(r)])
         for j in range(6)] for r in rows]) + state.log_offsets()
    top = logits.max(axis=1, keepdims=True)
    lse = (top + np.log(np.exp(logits - top).sum(axis=1, keepdims=True)))[:, 0]
    assert np.isnan(rows).any()
    np.testing.assert_allclose(b.score_samples(rows), lse, rtol=1e-10)
    np.testing.assert_allclose(b.predict_proba(rows), np.exp(logits - lse[:, None]), atol=1e-10)
    np.testing.assert_array_equal(b.predict(rows), logits.argmax(axis=1))
    # the same fit from a Dask array in other chunks (to rounding), and lazy predictions
    d = BayesianGaussianMixture(n_components=6, random_state=0, missing="marginalize", max_iter=300).fit(
        da.from_array(xm, chunks=1700))
    np.testing.assert_allclose(d.means_, b.means_, rtol=1e-8, atol=1e-8)
    assert abs(d.lower_bound_ - b.lower_bound_) < 1e-8 * abs(b.lower_bound_)
    np.testing.assert_allclose(d.score_samples(da.from_array(xm, chunks=1000)).compute(), d.score_samples(xm),
                               rtol=1e-12)


def test_select_model_with_bayesian_candidates_marginalizes():
    from daskgmm import BayesianGaussianMixture, select_model

    _, xm, _, _ = _mixture_data(10, n=3000)
    res = select_model(xm, [2, 3], "full", random_state=0, missing="marginalize", kinds=("gaussian", "bayesian"))
    assert res.best_.missing == "marginalize"
    bayes = res.models_[("bayesian", 3, "full")]
    assert isinstance(bayes, BayesianGaussianMixture) and bayes.missing == "marginalize"
    row = res.table[(res.table["kind"] == "bayesian") & (res.table["n_components"] == 3)].iloc[0]
    # scored by the observed values' log-likelihood under its plug-in mixture, rows with NaN included
    from daskgmm import GaussianMixture

    plug = GaussianMixture(3, missing="marginalize")
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        setattr(plug, name, getattr(bayes, name))
    plug.n_features_in_ = xm.shape[1]
    assert abs(row["log_likelihood"] - plug.score(xm)) < 1e-10 * abs(row["log_likelihood"])


def test_cli_fit_select_and_predict_with_nan_policy_marginalize(tmp_path):
    import json

    import pyarrow.parquet as pq

    from daskgmm import BayesianGaussianMixture, load
    from daskgmm.cli import main

    from .conftest import FAST
    from .test_missing import _write_missing_parquet

    _, xm, _, _ = _mixture_data(9, n=3000)
    data, model, preds = tmp_path / "d", tmp_path / "model", tmp_path / "preds"
    _write_missing_parquet(data, xm)
    cols = ",".join(f"f{j}" for j in range(6))
    argv = ["fit", str(data), "--columns", cols, "--estimator", "bayesian", "--n-components", "4", "--seed", "0",
            "--model-out", str(model), "--metrics-out", str(tmp_path / "m.json"), *FAST]
    assert main(argv) == 2  # NaN is an error by default
    assert main([*argv, "--nan-policy", "marginalize"]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["status"] == "ok"
    est = load(model)
    assert isinstance(est, BayesianGaussianMixture) and est.missing == "marginalize"
    ref = BayesianGaussianMixture(n_components=4, random_state=0, missing="marginalize").fit(xm)
    np.testing.assert_allclose(est.means_, ref.means_, rtol=1e-9, atol=1e-10)  # other chunks, same fit
    assert abs(est.lower_bound_ - ref.lower_bound_) < 1e-9 * abs(ref.lower_bound_)
    assert main(["predict", str(data), "--model", str(model), "--out", str(preds), "--id-column", "id",
                 "--loglik", "--columns", cols, "--nan-policy", "marginalize", *FAST]) == 0
    t = pq.read_table(preds)
    ids = t.column("id").to_numpy()
    np.testing.assert_allclose(t.column("loglik").to_numpy(), est.score_samples(xm[ids]), rtol=1e-10)
    out = tmp_path / "sel"
    assert main(["select", str(data), "--columns", cols, "--k-min", "2", "--k-max", "3", "--covariance-types",
                 "full", "--kinds", "gaussian,bayesian", "--nan-policy", "marginalize", "--seed", "0", "--out",
                 str(out), *FAST]) == 0
    assert load(out / "model").missing == "marginalize"


@parametrize_with_checks([BayesianGaussianMixture(n_init=2, max_iter=5, missing="marginalize")])
def test_sklearn_estimator_checks_with_marginalize(estimator, check):
    """scikit-learn's checks with the allow_nan tag this option sets (NaN then reaches fit and predict)."""
    check(estimator)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_checkpoint_resume_and_model_files_keep_marginalize(tmp_path):
    from daskgmm import load
    from daskgmm.io.modelfiles import Checkpoint

    _, xm, _, _ = _mixture_data(12, n=2000)
    kw = dict(n_components=4, random_state=3, tol=1e-8, max_iter=12, missing="marginalize")
    whole = BayesianGaussianMixture(**kw).fit(xm)

    def kill(event, iteration=0, **info):  # the job dies after its fourth iteration's checkpoint
        if iteration == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        BayesianGaussianMixture(**kw).fit(xm, checkpoint=Checkpoint(tmp_path / "ck", {"job": "t"}), progress=kill)
    resumed = BayesianGaussianMixture(**kw).fit(xm, checkpoint=Checkpoint(tmp_path / "ck", {"job": "t"}))
    assert resumed.lower_bounds_ == whole.lower_bounds_  # the resumed state marginalises too
    whole.save(str(tmp_path / "m"))
    back = load(tmp_path / "m")
    assert back.missing == "marginalize"
    np.testing.assert_array_equal(back.score_samples(xm[:200]), whole.score_samples(xm[:200]))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("init", ("kmeans", "k-means++", "random", "random_from_data"))
def test_every_initialisation_restarts_and_warm_start(init):
    _, xm, _, _ = _mixture_data(6, n=3000)
    b = BayesianGaussianMixture(n_components=4, missing="marginalize", init_params=init, n_init=2, random_state=0,
                                max_iter=30).fit(xm)
    assert np.all(np.isfinite(b.means_)) and np.isfinite(b.lower_bound_) and len(b.restarts_) == 2
    first = b.lower_bound_
    b.set_params(warm_start=True, max_iter=5).fit(xm)  # continues from the fitted posterior
    assert b.lower_bounds_[0] >= first - 1e-12 * abs(first)


def test_the_default_prior_from_normalised_weights_is_blamed_on_the_weights():
    """The default covariance prior divides by the weights' sum less 1: under missing='marginalize' the error
    names the rows without NaN only when there are not two of them (review: 300 complete rows of 400 with
    weights summing to 1 were told to drop or impute columns)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3))
    x[:100, 0] = np.nan
    with pytest.raises(ValueError, match="needs sample weights summing to more than 1"):
        BayesianGaussianMixture(n_components=2, missing="marginalize", random_state=0).fit(
            x, sample_weight=np.full(400, 1 / 400))
