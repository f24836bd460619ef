"""BayesianGaussianMixture: scikit-learn's variational updates and lower bound, on Dask chunks."""

import warnings

import dask.array as da
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import BayesianGaussianMixture as SkBayesian

import daskgmm
from daskgmm import BayesianGaussianMixture, GaussianMixture
from daskgmm.io.modelfiles import Checkpoint
from daskgmm.kernels import MixtureRequest, chunk_pass

from .conftest import make_blobs

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
PRIOR_TYPES = ("dirichlet_process", "dirichlet_distribution")
POSTERIOR = ("weight_concentration_", "mean_precision_", "means_", "degrees_of_freedom_", "covariances_",
             "precisions_cholesky_")


@pytest.fixture(scope="module")
def blobs3():
    X, _, _ = make_blobs(n=400, d=3, k=3, seed=4, sep=6.0)
    return X


def _flat(v):
    return np.concatenate([np.ravel(a) for a in v]) if isinstance(v, tuple) else np.ravel(np.asarray(v))


def _relative(a, b):
    a, b = _flat(a), _flat(b)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-300))


def _same_start(X, ct, pt, max_iter, **kw):
    """scikit-learn's estimator and ours, both warm-started from one scikit-learn initialisation."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        init = SkBayesian(n_components=5, covariance_type=ct, weight_concentration_prior_type=pt, max_iter=0,
                          init_params="random_from_data", random_state=1).fit(X)
    common = dict(n_components=5, covariance_type=ct, weight_concentration_prior_type=pt, max_iter=max_iter,
                  tol=0.0, warm_start=True)
    sk, ours = SkBayesian(**common), BayesianGaussianMixture(**common, **kw)
    for est in (sk, ours):
        for name in (*POSTERIOR, "weights_", "precisions_", "lower_bound_", "converged_"):
            setattr(est, name, getattr(init, name))
        est.n_features_in_ = X.shape[1]
    return sk, ours


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
@pytest.mark.parametrize("pt", PRIOR_TYPES)
def test_same_posterior_and_lower_bound_as_scikit_learn(blobs3, ct, pt):
    X = blobs3
    # chunkings: one chunk, uneven chunks, and an empty chunk in the middle
    chunkings = [(len(X),), (97, 0, 150, len(X) - 247)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk, _ = _same_start(X, ct, pt, 15)
        sk.fit(X)
        for chunks in chunkings:
            _, ours = _same_start(X, ct, pt, 15)
            ours.fit(da.from_array(X, chunks=(chunks, 3)))
            assert abs(ours.lower_bound_ - float(np.squeeze(sk.lower_bound_))) <= 1e-10 * abs(ours.lower_bound_)
            np.testing.assert_allclose(ours.lower_bounds_, np.ravel(sk.lower_bounds_), rtol=1e-10)
            for name in (*POSTERIOR, "weights_", "precisions_"):
                assert _relative(getattr(sk, name), getattr(ours, name)) < 1e-10, name
            # predictions use the variational log-densities, as scikit-learn's
            np.testing.assert_array_equal(ours.predict(X), sk.predict(X))
            np.testing.assert_allclose(ours.score_samples(X), sk.score_samples(X), rtol=1e-10)
            np.testing.assert_allclose(ours.predict_proba(X), sk.predict_proba(X), atol=1e-10)


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_priors_from_the_data_as_scikit_learn(blobs3, ct):
    X = blobs3
    ours = BayesianGaussianMixture(n_components=2, covariance_type=ct, max_iter=2, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours.fit(X)
        sk = SkBayesian(n_components=2, covariance_type=ct, max_iter=2, random_state=0).fit(X)
    for name in ("weight_concentration_prior_", "mean_precision_prior_", "mean_prior_",
                 "degrees_of_freedom_prior_", "covariance_prior_"):
        np.testing.assert_allclose(getattr(ours, name), getattr(sk, name), rtol=1e-12, err_msg=name)


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
@pytest.mark.parametrize("pt", PRIOR_TYPES)
def test_lower_bound_never_decreases(blobs3, ct, pt):
    est = BayesianGaussianMixture(n_components=8, covariance_type=ct, weight_concentration_prior_type=pt,
                                  tol=1e-8, max_iter=200, random_state=0, chunk_size=128).fit(blobs3)
    lb = np.asarray(est.lower_bounds_)
    assert len(lb) > 3
    assert np.all(np.diff(lb) >= -1e-9 * np.abs(lb[1:]))
    assert [h["lower_bound"] for h in est.history_] == est.lower_bounds_


def test_dirichlet_process_leaves_extra_components_empty():
    X, _, _ = make_blobs(n=3000, d=2, k=3, seed=0, sep=10.0)
    est = BayesianGaussianMixture(n_components=10, random_state=0, max_iter=500, chunk_size=700).fit(X)
    assert est.converged_
    assert int(np.sum(est.weights_ < 0.01)) == 7
    assert est.n_effective_components_ == 3


def test_float32_agrees_with_float64(blobs3):
    kw = dict(n_components=4, random_state=0, max_iter=30, tol=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        e64 = BayesianGaussianMixture(**kw).fit(blobs3)
        e32 = BayesianGaussianMixture(**kw).fit(blobs3.astype(np.float32))
    assert e32.means_.dtype == np.float32
    np.testing.assert_allclose(e32.means_, e64.means_, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(e32.weights_, e64.weights_, atol=1e-5)
    assert abs(e32.lower_bound_ - e64.lower_bound_) < 1e-5 * abs(e64.lower_bound_)


def test_n_init_in_lockstep_keeps_the_best_and_dataframe_input(blobs3):
    import pandas as pd

    est = BayesianGaussianMixture(n_components=4, n_init=3, random_state=0).fit(pd.DataFrame(blobs3))
    assert len(est.restarts_) == 3
    lbs = [r["lower_bound"] for r in est.restarts_]
    top = max(lbs)  # the first restart within rounding of the largest lower bound
    assert est.lower_bound_ == next(lb for lb in lbs if lb >= top - 1e-9 * (abs(top) + 1))
    assert est.n_passes_ < sum(r["n_iter"] for r in est.restarts_) + est.init_passes_ + 1


def test_gaussian_mixture_pass_does_not_compute_resp_log_resp(blobs3):
    gm = GaussianMixture(3, random_state=0).fit(blobs3)
    centre = blobs3.mean(axis=0)
    from daskgmm.models.states import MixtureState

    state = MixtureState.from_covariances(gm.weights_, gm.means_, gm.covariances_, "full")
    (st,) = chunk_pass(blobs3, [MixtureRequest([state.spec(centre)])], centre)[0]
    assert st.resp_log_resp == 0.0
    bg = BayesianGaussianMixture(n_components=3, random_state=0).fit(blobs3)
    spec = bg._state(np.float64).spec(centre)
    (st,) = chunk_pass(blobs3, [MixtureRequest([spec])], centre)[0]
    r = bg.predict_proba(blobs3)
    np.testing.assert_allclose(st.resp_log_resp, np.sum(r * np.log(np.maximum(r, 1e-300))), rtol=1e-12)


def test_no_information_criteria():
    est = BayesianGaussianMixture()
    assert not hasattr(est, "bic") and not hasattr(est, "aic")


def test_too_few_rows_and_a_warm_start_on_other_features_are_refused_in_scikit_learns_words():
    x = np.random.default_rng(0).normal(size=(30, 2))
    with pytest.raises(ValueError, match="Expected n_samples >= n_components but got n_components = 5, n_samples = 3"):
        BayesianGaussianMixture(n_components=5).fit(x[:3])
    warm = BayesianGaussianMixture(n_components=2, max_iter=2, warm_start=True, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warm.fit(x)
    with pytest.raises(ValueError, match="X has 3 features, but the warm-started BayesianGaussianMixture was fitted "
                                         "with 2 features"):
        warm.fit(np.hstack([x, x[:, :1]]))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_a_changed_prior_type_is_refused_by_predictions_warm_start_and_save(tmp_path):
    """set_params(weight_concentration_prior_type=...) after fit, as a changed n_components is in
    test_mixture: the Dirichlet process's pair of arrays read as the distribution's one failed inside NumPy
    and its saved model did not load; the other way the predictions took the concentrations as the pair,
    silently, and a warm start continued from that (scikit-learn's do both: user-trial-r11)."""
    x = np.random.default_rng(0).normal(size=(30, 2))
    types = {"dirichlet_process": "dirichlet_distribution", "dirichlet_distribution": "dirichlet_process"}
    for fitted, other in types.items():
        est = BayesianGaussianMixture(n_components=2, max_iter=2, random_state=0,
                                      weight_concentration_prior_type=fitted).fit(x)
        est.set_params(weight_concentration_prior_type=other)
        said = rf"fitted with weight_concentration_prior_type='{fitted}', but its parameters say '{other}'"
        for call in (est.predict, est.score_samples, lambda x, est=est: est.sample(2),
                     lambda x, est=est: est.save(tmp_path / "m")):
            with pytest.raises(ValueError, match=rf"^BayesianGaussianMixture was {said}: set_params after fit"):
                call(x)
        with pytest.raises(ValueError, match=rf"^BayesianGaussianMixture\(warm_start=True\) continues the fitted "
                                             rf"model, which has weight_concentration_prior_type='{fitted}'"):
            est.set_params(warm_start=True).fit(x)
        est.set_params(weight_concentration_prior_type=fitted).fit(x)  # the same form continues
        assert est.n_iter_ == 2


def test_a_spherical_covariance_prior_is_one_positive_number():
    """A list of one number was a TypeError from float(); an array of a negative number failed in the fit
    with the collapse message, and of zero or NaN went on (user-trial-r11). Refused in scikit-learn's words
    for the other types' priors."""
    x = np.random.default_rng(0).normal(size=(30, 2))

    def prior(value):
        return BayesianGaussianMixture(n_components=2, covariance_type="spherical", covariance_prior=value,
                                       max_iter=2, random_state=0)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for value in ([2.0], np.array(2.0), np.array([[2.0]]), 2.0):
            assert prior(value).fit(x).covariance_prior_ == 2.0
    for value, said in ((np.array(-1.0), "'spherical precision' should be positive"),
                        (np.array(0.0), "'spherical precision' should be positive"),
                        (np.array(np.nan), "Input covariance_prior contains NaN"),
                        ([2.0, 2.0], r"'spherical covariance_prior' should be one number, but got shape \(2,\)")):
        with pytest.raises(ValueError, match=said):
            prior(value).fit(x)


def test_degrees_of_freedom_prior_message(blobs3):
    with pytest.raises(ValueError, match=r"should be greater than 2, but got 1\.500"):
        BayesianGaussianMixture(degrees_of_freedom_prior=1.5).fit(blobs3)


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_save_load_round_trip(blobs3, tmp_path, ct):
    est = BayesianGaussianMixture(n_components=4, covariance_type=ct, random_state=0,
                                  weight_concentration_prior_type="dirichlet_process").fit(blobs3)
    est.save(tmp_path / "m")
    back = daskgmm.load(tmp_path / "m")
    assert isinstance(back, BayesianGaussianMixture)
    for name in (*POSTERIOR, "weights_", "mean_prior_", "covariance_prior_", "degrees_of_freedom_prior_"):
        assert _relative(getattr(est, name), getattr(back, name)) == 0.0, name
    np.testing.assert_array_equal(back.score_samples(blobs3), est.score_samples(blobs3))
    assert back.lower_bound_ == est.lower_bound_ and back.n_effective_components_ == est.n_effective_components_


def test_checkpoint_resume_gives_the_uninterrupted_fit(blobs3, tmp_path):
    kw = dict(n_components=5, n_init=2, random_state=3, tol=1e-6, max_iter=40, covariance_type="diag")
    whole = BayesianGaussianMixture(**kw).fit(blobs3)
    ck = Checkpoint(tmp_path / "ck", {"job": "t"})

    def kill(event, iteration=0, **info):  # the job dies after its fourth iteration's checkpoint
        if iteration == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        BayesianGaussianMixture(**kw).fit(blobs3, checkpoint=ck, progress=kill)
    resumed = BayesianGaussianMixture(**kw).fit(blobs3, checkpoint=Checkpoint(tmp_path / "ck", {"job": "t"}))
    assert resumed.lower_bounds_ == whole.lower_bounds_
    assert resumed.n_passes_ < whole.n_passes_  # resumed, not started again
    np.testing.assert_array_equal(resumed.means_, whole.means_)


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_weights_summing_to_one_up_to_rounding_are_refused_as_summing_to_one(ct):
    """The default covariance prior divides by the weights' sum less 1 (weights as frequencies): weights that
    sum to 1 but whose float sum rounds to 1 + 2.2e-16 were taken, and the prior came out ~1e15 times the
    data's covariance (or not, by the order of the sum: a full prior refused the weights a diag one took).
    Weights summing to 1 within the rounding of their sum are the sample size 1, refused as a sum of 1 is."""
    x = np.random.default_rng(0).normal(size=(256, 2))
    exact = np.full(256, 2.0 ** -8)
    above = exact.copy()
    above[7] += 2.0 ** -52  # the sum is 1 + 2**-52 exactly, in any order
    w = np.random.default_rng(16).uniform(0.5, 2.0, 256)
    normalised = w / w.sum()
    kw = dict(n_components=2, covariance_type=ct, random_state=0, max_iter=2)
    for weights in (exact, above, normalised):
        with pytest.raises(ValueError, match=r"needs sample weights summing to more than 1; they sum to 1\b"):
            BayesianGaussianMixture(**kw).fit(x, sample_weight=weights)
    # a sum above 1 by more than rounding is a sample size, however small: the prior is the scatter over it
    weights = exact * (1 + 1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        got = BayesianGaussianMixture(**kw).fit(x, sample_weight=weights).covariance_prior_
    d = x - np.average(x, axis=0, weights=weights)
    full = (weights[:, None] * d).T @ d / (weights.sum() - 1.0)
    want = {"full": full, "tied": full, "diag": np.diag(full), "spherical": np.diag(full).mean()}[ct]
    np.testing.assert_allclose(got, want, rtol=1e-5)
