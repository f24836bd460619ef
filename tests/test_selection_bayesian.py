"""select_model with BayesianGaussianMixture candidates beside the Gaussian ones."""

import math
import warnings

import dask.array as da
import numpy as np
import pytest

import daskgmm
from daskgmm import BayesianGaussianMixture, GaussianMixture, select_model
from daskgmm.kernels import covariance as cov
from daskgmm.models.variational import EFFECTIVE_WEIGHT

from .conftest import make_blobs

BAYESIAN_ATTRIBUTES = ("weights_", "means_", "covariances_", "precisions_cholesky_", "mean_precision_",
                       "degrees_of_freedom_", "mean_prior_", "covariance_prior_", "lower_bound_")


def _alone(X, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", daskgmm.ConvergenceWarning)
        return BayesianGaussianMixture(**params).fit(X)


@pytest.mark.parametrize("bayesian_params", [
    None, {"weight_concentration_prior_type": "dirichlet_distribution", "mean_precision_prior": 0.5,
           "weight_concentration_prior": 0.2},
])
def test_each_bayesian_candidate_equals_its_own_fit_and_shares_the_passes(bayesian_params):
    X, _, _ = make_blobs(n=1500, d=2, k=3, sep=8.0, seed=21)
    Xd = da.from_array(X, chunks=(400, 2))
    res = select_model(Xd, [2, 5], ("full", "diag"), random_state=4, n_init=2, kinds=("gaussian", "bayesian"),
                       bayesian_params=bayesian_params)
    assert sorted(res.models_, key=str) == sorted(
        [(2, "diag"), (2, "full"), (5, "diag"), (5, "full"), ("bayesian", 2, "diag"), ("bayesian", 2, "full"),
         ("bayesian", 5, "diag"), ("bayesian", 5, "full")], key=str)
    for key, model in res.models_.items():
        if key[0] != "bayesian":
            continue
        _, k, ct = key
        alone = _alone(Xd, n_components=k, covariance_type=ct, random_state=4, n_init=2, **(bayesian_params or {}))
        assert isinstance(model, BayesianGaussianMixture)
        for name in BAYESIAN_ATTRIBUTES:
            np.testing.assert_allclose(getattr(model, name), getattr(alone, name), rtol=1e-10, atol=1e-10,
                                       err_msg=f"{key} {name}")
        np.testing.assert_allclose(model.weight_concentration_, alone.weight_concentration_, rtol=1e-10)
        assert model.n_iter_ == alone.n_iter_ and model.converged_ == alone.converged_
        assert len(model.restarts_) == len(alone.restarts_) == 2
        for mine, theirs in zip(model.restarts_, alone.restarts_):
            assert (mine["n_iter"], mine["converged"]) == (theirs["n_iter"], theirs["converged"])
            np.testing.assert_allclose(mine["lower_bound"], theirs["lower_bound"], rtol=1e-10)
        assert model.n_effective_components_ == alone.n_effective_components_
        assert model.weight_concentration_prior_ == alone.weight_concentration_prior_
        # every attribute of the fit alone (init_passes_ and n_passes_ were missing)
        assert sorted(k for k in vars(model) if k.endswith("_") and not k.startswith("_")) == sorted(
            k for k in vars(alone) if k.endswith("_") and not k.startswith("_"))
        np.testing.assert_allclose(model.predict_proba(X), alone.predict_proba(X), rtol=1e-8, atol=1e-12)
        if ct == "full":
            init_passes = alone.init_passes_  # the scan, the prior covariance, the initialisation
    # all 16 runs of both kinds in lockstep: one pass per iteration of the longest run, whatever
    # its kind, after the initialisation passes of one full bayesian fit alone, plus the scoring pass
    longest = max(r["n_iter"] for m in res.models_.values() for r in m.restarts_)
    assert res.n_passes == init_passes + longest + 1


def test_gaussian_rows_do_not_depend_on_bayesian_candidates():
    X, _, _ = make_blobs(n=1200, d=2, k=3, seed=22)
    gauss = select_model(X, [1, 3], ("full", "tied"), random_state=1)
    both = select_model(X, [1, 3], ("full", "tied"), random_state=1, kinds=["bayesian", "gaussian"])
    mixed = both.table[both.table.kind == "gaussian"].reset_index(drop=True)
    assert list(mixed.columns) == list(gauss.table.columns)
    for name in ("n_components", "covariance_type", "n_parameters", "n_iter", "converged", "kind"):
        assert list(mixed[name]) == list(gauss.table[name])
    for name in ("log_likelihood", "bic", "aic"):
        np.testing.assert_allclose(mixed[name], gauss.table[name], rtol=1e-12)
    for key, model in gauss.models_.items():
        np.testing.assert_allclose(both.models_[key].means_, model.means_, rtol=1e-12, atol=1e-12)
        assert type(both.models_[key]) is GaussianMixture


def test_mixed_table_columns_and_plug_in_criteria():
    X, _, _ = make_blobs(n=1000, d=2, k=3, sep=10.0, seed=23)
    res = select_model(X, [2, 6], ("full", "spherical"), random_state=0, kinds=("gaussian", "bayesian"))
    t = res.table
    assert list(t.columns) == ["n_components", "covariance_type", "log_likelihood", "bic", "aic", "n_parameters",
                               "n_iter", "converged", "kind", "effective_components", "lower_bound"]
    assert list(t.kind) == ["gaussian"] * 4 + ["bayesian"] * 4  # gaussian rows first, as before
    g, b = t[t.kind == "gaussian"], t[t.kind == "bayesian"]
    assert (g.effective_components == g.n_components).all() and g.lower_bound.isna().all()
    assert np.isfinite(b.lower_bound).all()
    n, d = X.shape
    for row in b.itertuples():
        model = res.models_[("bayesian", row.n_components, row.covariance_type)]
        assert row.lower_bound == model.lower_bound_
        assert row.effective_components == model.n_effective_components_ == np.sum(model.weights_ > EFFECTIVE_WEIGHT)
        # the plug-in log-likelihood: a Gaussian mixture with the fitted weights, means, covariances
        plug = GaussianMixture(row.n_components, covariance_type=row.covariance_type)
        for name in ("weights_", "means_", "covariances_", "precisions_cholesky_", "precisions_"):
            setattr(plug, name, getattr(model, name))
        plug.n_features_in_ = d
        np.testing.assert_allclose(row.log_likelihood, plug.score(X), rtol=1e-10)
        assert row.n_parameters == cov.n_parameters(row.covariance_type, row.effective_components, d)
        np.testing.assert_allclose(row.bic, -2 * n * row.log_likelihood + row.n_parameters * math.log(n),
                                   rtol=1e-12)
        np.testing.assert_allclose(row.aic, -2 * n * row.log_likelihood + 2 * row.n_parameters, rtol=1e-12)
    # the best is the smallest BIC over both kinds
    top = t.sort_values(["bic", "n_parameters"], kind="stable").iloc[0]
    key = (int(top.n_components), top.covariance_type)
    assert res.best_ is res.models_[("bayesian", *key) if top.kind == "bayesian" else key]


def test_bayesian_candidate_with_ten_components_keeps_three_on_three_blobs():
    X, _, _ = make_blobs(n=3000, d=2, k=3, sep=12.0, seed=3)
    res = select_model(da.from_array(X, chunks=(1000, 2)), 10, "full", random_state=0, kinds="bayesian")
    assert list(res.models_) == [("bayesian", 10, "full")]
    row = res.table.iloc[0]
    assert (row.kind, row.n_components, row.effective_components) == ("bayesian", 10, 3)
    assert row.n_parameters == cov.n_parameters("full", 3, 2)
    model = res.best_
    assert isinstance(model, BayesianGaussianMixture) and model.n_effective_components_ == 3
    assert np.sum(model.weights_ < EFFECTIVE_WEIGHT) == 7


def test_bayesian_selection_errors():
    X, _, _ = make_blobs(n=50)
    with pytest.raises(ValueError, match=r"kinds must be among .* got 'poisson'"):
        select_model(X, [1, 2], kinds=("gaussian", "poisson"))
    with pytest.raises(ValueError, match="kinds must name at least one"):
        select_model(X, [1, 2], kinds=())
    with pytest.raises(ValueError, match="kinds must be"):
        select_model(X, [1, 2], kinds=3)
    with pytest.raises(ValueError, match=r"prior parameters of BayesianGaussianMixture.*got 'n_components'"):
        select_model(X, [1, 2], kinds="bayesian", bayesian_params={"n_components": 4})
    with pytest.raises(ValueError, match="bayesian_params must be a dict"):
        select_model(X, [1, 2], kinds="bayesian", bayesian_params=[("mean_precision_prior", 1.0)])
    with pytest.raises(ValueError, match="'bayesian' is not in kinds"):
        select_model(X, [1, 2], bayesian_params={"mean_precision_prior": 2.0})
    with pytest.raises(ValueError, match="mean_precision_prior"):
        select_model(X, [1, 2], kinds="bayesian", bayesian_params={"mean_precision_prior": -1.0})
    with pytest.raises(ValueError, match="weight_concentration_prior_type"):
        select_model(X, [1, 2], kinds="bayesian", bayesian_params={"weight_concentration_prior_type": "beta"})
    with pytest.raises(ValueError, match="degrees_of_freedom_prior"):  # checked against the data's width
        select_model(X, [1, 2], kinds="bayesian", bayesian_params={"degrees_of_freedom_prior": 1.0})


def test_selection_plot_draws_one_line_per_kind_and_type(tmp_path):
    pytest.importorskip("matplotlib")
    from daskgmm import plot

    X, _, _ = make_blobs(n=300)
    res = select_model(X, [2, 3], ("full", "diag"), kinds=("gaussian", "bayesian"), random_state=0)
    fig = plot.plot_selection(res, tmp_path / "sel.png")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "BIC, bayesian, full" in labels and "BIC, gaussian, diag" in labels
    top = res.table.sort_values(["bic", "n_parameters"], kind="stable").iloc[0]
    assert labels[-1].endswith(f"K={top.n_components}, {top.covariance_type}, {top.kind}")


def test_a_covariance_prior_needs_a_single_covariance_type():
    X, _, _ = make_blobs(n=200)
    with pytest.raises(ValueError, match=r"covariance_prior.*sweeps several"):
        select_model(X, [1, 2], ("full", "diag"), kinds="bayesian", bayesian_params={"covariance_prior": 1.0})
    res = select_model(X, [2], "spherical", kinds="bayesian", bayesian_params={"covariance_prior": 2.0},
                       random_state=0)
    assert res.best_.covariance_prior_ == 2.0


def test_tiny_sample_weights_fit_each_kind_as_its_estimator():
    """Weights of ~1e-12: a gaussian candidate is GaussianMixture.fit's model (scaled up in its M-steps by the
    power of two fit scales the weights by; it pulled means towards the data's before), a bayesian one is
    BayesianGaussianMixture.fit's on the same weights (their scale is its sample size: not rescaled), to the
    bit; the default covariance prior refuses a weight sum under 1 in both alike, saying why."""
    X, _, _ = make_blobs(n=120, d=2, k=2, sep=8.0, seed=3)
    w = np.random.default_rng(0).uniform(0.5, 2.0, len(X)) * 1e-12
    prior = {"covariance_prior": np.eye(2)}
    with pytest.warns(UserWarning, match="frequencies"):
        res = select_model(X, [1, 2], "full", random_state=0, kinds=("gaussian", "bayesian"), sample_weight=w,
                           bayesian_params=prior)
    for k in (1, 2):
        alone = GaussianMixture(k, random_state=0).fit(X, sample_weight=w)
        bayes = BayesianGaussianMixture(n_components=k, random_state=0, **prior).fit(X, sample_weight=w)
        for name in ("weights_", "means_", "covariances_", "lower_bound_"):
            np.testing.assert_array_equal(getattr(res.models_[(k, "full")], name), getattr(alone, name), name)
            np.testing.assert_array_equal(getattr(res.models_[("bayesian", k, "full")], name), getattr(bayes, name))
    for fit in (lambda: select_model(X, [2], "full", kinds="bayesian", sample_weight=w),
                lambda: BayesianGaussianMixture(n_components=2).fit(X, sample_weight=w)):
        with pytest.raises(ValueError, match=r"summing to more than 1; they sum to 1.57155e-10\. The scale"):
            fit()


def test_a_checkpoint_from_before_weight_scale_resumes_as_the_job(tmp_path):
    """A select checkpoint written before MixtureState.weight_scale has no such field: resumed, a gaussian
    candidate takes the job's scale (the one its weights give, as a fresh start would), and the resumed
    job ends on the bits of the job run whole (a bayesian candidate has no scale). The dataclass's 1.0 was
    taken: with weights of ~1e-12 the last iterations' M-steps differed from the whole job's."""
    import json

    from daskgmm.io.modelfiles import Checkpoint

    X, _, _ = make_blobs(n=120, d=2, k=2, sep=8.0, seed=3)
    w = np.random.default_rng(0).uniform(0.5, 2.0, len(X)) * 1e-12
    kw = dict(n_components=[2], covariance_types="full", random_state=0, kinds=("gaussian", "bayesian"),
              sample_weight=w, bayesian_params={"covariance_prior": np.eye(2)}, max_iter=4, tol=0.0)

    class Killed(Exception):
        pass

    def kill(event, **info):
        if event == "iteration" and info["iteration"] == 2:
            raise Killed

    path = tmp_path / "checkpoint.npz"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        whole = select_model(X, **kw)
        with pytest.raises(Killed):
            select_model(X, **kw, checkpoint=Checkpoint(tmp_path, {"job": 1}), progress=kill)
        with np.load(path) as npz:
            saved = dict(npz)
        doc = json.loads(str(saved["__meta__"]))
        assert [rd["state"].pop("weight_scale", None) for rd in doc["runs"]] == [2.0 ** 40, None]
        saved["__meta__"] = np.array(json.dumps(doc))
        np.savez(path, **saved)
        resumed = select_model(X, **kw, checkpoint=Checkpoint(tmp_path, {"job": 1}))
    assert resumed.n_passes < whole.n_passes
    for key, model in whole.models_.items():
        for name in ("weights_", "means_", "covariances_", "lower_bound_"):
            np.testing.assert_array_equal(getattr(resumed.models_[key], name), getattr(model, name), name)
