"""GaussianMixture against scikit-learn: same init, same parameters; the scikit-learn API."""

import warnings

import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning as SkConvergenceWarning
from sklearn.mixture import GaussianMixture as SkGMM

import daskgmm
from daskgmm import GaussianMixture

from .conftest import far_rows, make_blobs

TYPES = ["full", "tied", "diag", "spherical"]


def _sk_start(X, ct, k=3, seed=1):
    """Initial parameters from a short scikit-learn fit (so both start at the same point)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = SkGMM(k, covariance_type=ct, random_state=seed, max_iter=2).fit(X)
    return dict(weights_init=s.weights_, means_init=s.means_, precisions_init=s.precisions_)


@pytest.mark.parametrize("ct", TYPES)
@pytest.mark.parametrize("chunks", [None, 97])
def test_same_parameters_as_sklearn_from_same_init(ct, chunks):
    X, _, _ = make_blobs(n=1500, d=3, k=3, spread=1.5, sep=3.0)
    init = _sk_start(X, ct)
    kw = dict(covariance_type=ct, max_iter=25, tol=0.0, **init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = SkGMM(3, **kw).fit(X)
        Xin = X if chunks is None else da.from_array(X, chunks=(chunks, 3))
        g = GaussianMixture(3, **kw).fit(Xin)
    assert g.n_iter_ == sk.n_iter_ == 25
    # measured over these cases: 1.3e-14 absolute at most, 1.6e-12 relative (on the smallest
    # covariance entries); the tolerances leave a hundredfold for other BLAS and CPUs
    tol = dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(g.weights_, sk.weights_, **tol)
    np.testing.assert_allclose(g.means_, sk.means_, **tol)
    np.testing.assert_allclose(g.covariances_, sk.covariances_, **tol)
    np.testing.assert_allclose(g.precisions_cholesky_, sk.precisions_cholesky_, **tol)
    np.testing.assert_allclose(g.precisions_, sk.precisions_, **tol)
    np.testing.assert_allclose(g.lower_bound_, sk.lower_bound_, rtol=1e-10)
    np.testing.assert_allclose(g.lower_bounds_, sk.lower_bounds_, rtol=1e-10)
    np.testing.assert_allclose(g.score(X), sk.score(X), rtol=1e-10)
    np.testing.assert_allclose(g.bic(X), sk.bic(X), rtol=1e-10)
    np.testing.assert_allclose(g.aic(X), sk.aic(X), rtol=1e-10)
    np.testing.assert_allclose(np.asarray(g.predict_proba(Xin)), sk.predict_proba(X), atol=1e-12)
    np.testing.assert_array_equal(np.asarray(g.predict(Xin)), sk.predict(X))


@pytest.mark.parametrize("ct", TYPES)
def test_convergence_semantics_match_sklearn(ct):
    X, _, _ = make_blobs(n=800, d=2, k=3, spread=1.2, sep=3.0)
    init = _sk_start(X, ct)
    sk = SkGMM(3, covariance_type=ct, tol=1e-4, max_iter=200, **init).fit(X)
    g = GaussianMixture(3, covariance_type=ct, tol=1e-4, max_iter=200, **init).fit(X)
    assert g.converged_ and sk.converged_
    assert g.n_iter_ == sk.n_iter_
    assert len(g.history_) == g.n_iter_ == len(g.lower_bounds_)
    assert all(h["seconds"] >= 0 for h in g.history_)
    np.testing.assert_allclose(g.lower_bound_, sk.lower_bound_, rtol=1e-9)


def test_tol_0_is_never_converged_even_at_a_fixed_point_as_scikit_learn():
    """scikit-learn's test is ``abs(change) < tol``, strict: one component reaches its fixed point at the
    first M-step (every later change exactly 0), and with tol=0 both fits still run max_iter iterations."""
    X, _, _ = make_blobs(n=300, d=2, k=2, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = SkGMM(1, tol=0.0, max_iter=4, random_state=0).fit(X)
        g = GaussianMixture(1, tol=0.0, max_iter=4, random_state=0).fit(X)
    assert [h["change"] for h in g.history_][1:] == [0.0, 0.0, 0.0]
    assert (g.n_iter_, g.converged_) == (sk.n_iter_, sk.converged_) == (4, False)


def test_convergence_warning_and_max_iter_zero():
    X, _, _ = make_blobs(n=300)
    with pytest.warns(daskgmm.ConvergenceWarning, match="did not converge"):
        g = GaussianMixture(3, max_iter=2, tol=0.0, random_state=0).fit(X)
    assert not g.converged_ and g.n_iter_ == 2
    # the same warning is catchable as scikit-learn's
    with pytest.warns(SkConvergenceWarning):
        GaussianMixture(3, max_iter=1, tol=0.0, random_state=0).fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g0 = GaussianMixture(3, max_iter=0, random_state=0).fit(X)
    assert g0.n_iter_ == 0 and not g0.converged_ and g0.lower_bound_ == -np.inf


def test_old_faithful_two_regimes(faithful):
    g = GaussianMixture(2, random_state=0).fit(faithful)
    order = np.argsort(g.means_[:, 0])
    short, long_ = g.means_[order]
    # short eruptions (~2 min) after ~55 min waits; long (~4.3 min) after ~80 min
    np.testing.assert_allclose(short, [2.04, 54.5], atol=0.1)
    np.testing.assert_allclose(long_, [4.29, 80.0], atol=0.1)
    np.testing.assert_allclose(g.weights_[order], [0.356, 0.644], atol=0.01)
    sk = SkGMM(2, random_state=0).fit(faithful)
    np.testing.assert_allclose(g.lower_bound_, sk.lower_bound_, rtol=1e-6)
    assert g.converged_


@pytest.mark.parametrize("ct", ["full", "diag", "spherical"])
def test_rows_at_a_fill_value_leave_the_other_components_their_precision(ct):
    """5 rows at an unmasked fill value of 1e20 among 600 near 0 and 8 (apart in that column only): the passes
    and the start's k-means shifted every row by the mean (8.3e17), and predictions by the means' mean, and the
    mixture put the 600 in one component (adjusted Rand 0.03; scikit-learn's too). The passes shift that column by
    the sample's median now, and predictions by the fit's shift (the means' mean lies at 8.3e17): the three
    components, NumPy and Dask rows alike, with no warning."""
    from sklearn.metrics import adjusted_rand_score

    from daskgmm.validation.scan import DegenerateDataWarning

    X, labels = far_rows()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateDataWarning)
        a = GaussianMixture(3, covariance_type=ct, random_state=0).fit(X)
        b = GaussianMixture(3, covariance_type=ct, random_state=0).fit(da.from_array(X, chunks=(101, 2)))
    found = a.predict(X)
    # the two clusters 8 spreads apart overlap at a row or two; the fill value's rows are a component of their own
    assert adjusted_rand_score(labels, found) > 0.98
    assert len(set(found[600:].tolist())) == 1 and found[600] not in found[:600]
    np.testing.assert_array_equal(b.predict(da.from_array(X, chunks=(200, 2))).compute(), found)
    np.testing.assert_allclose(b.means_, a.means_, rtol=1e-9)
    assert np.all(np.isfinite(a.score_samples(X)))


def test_rows_at_a_fill_value_with_missing_values_in_that_column():
    """missing="marginalize" with two values of the fill value's column masked (NaN) and five left at 1e20: the
    start's k-means fills a drawn row's missing values by its column's mean over the drawn rows, which the fill
    value pulled to 8e17, so those rows became a cluster far from the others and the 600 rows one component
    (adjusted Rand 0.03, as before the far columns' shift). On a far column the fill is the observed median."""
    from sklearn.metrics import adjusted_rand_score

    X, labels = far_rows()
    X[[5, 400], 0] = np.nan
    a = GaussianMixture(3, missing="marginalize", random_state=0).fit(X)
    b = GaussianMixture(3, missing="marginalize", random_state=0).fit(da.from_array(X, chunks=(101, 2)))
    found = a.predict(X)
    assert adjusted_rand_score(labels, found) > 0.95
    assert len(set(found[600:].tolist())) == 1 and found[600] not in found[:600]
    np.testing.assert_allclose(b.means_, a.means_, rtol=1e-9)


@pytest.mark.parametrize("ct", ["full", "diag", "spherical"])
def test_partial_fit_after_a_fit_on_rows_at_a_fill_value(ct):
    """partial_fit after fit starts from statistics the fitted model stands for, taken about the means' mean: with
    a component at 1e20 that is 8e17, and the components near 0 and 8 lost their covariances to terms of 1e35, so
    any batch (the fit's own rows too) raised "not positive definite". Where the fit kept a robust shift, they are
    taken about each component's mean."""
    from sklearn.metrics import adjusted_rand_score

    X, labels = far_rows()
    a = GaussianMixture(3, covariance_type=ct, random_state=0).fit(X)
    a.partial_fit(X[np.r_[0:50, 300:350, 600:605]])
    assert adjusted_rand_score(labels, a.predict(X)) > 0.98


@pytest.mark.parametrize("init", ["kmeans", "k-means++", "random_from_data", "random"])
def test_every_init_is_reproducible_and_chunking_independent(init):
    X, _, _ = make_blobs(n=2000, d=2, k=3, sep=8.0)
    kw = dict(init_params=init, random_state=3, max_iter=5, tol=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", daskgmm.ConvergenceWarning)
        a = GaussianMixture(3, **kw).fit(X)
        b = GaussianMixture(3, **kw).fit(da.from_array(X, chunks=(137, 2)))
        c = GaussianMixture(3, **kw).fit(da.from_array(X, chunks=((1000, 0, 999, 1), 2)))
    for other in (b, c):
        np.testing.assert_allclose(other.means_, a.means_, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(other.covariances_, a.covariances_, rtol=1e-9, atol=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", daskgmm.ConvergenceWarning)
        d = GaussianMixture(3, **{**kw, "random_state": 4}).fit(X)
    if init in ("k-means++", "random_from_data"):  # another seed starts from other rows: another result
        assert not np.allclose(d.means_, a.means_, rtol=0, atol=1e-12)


@pytest.mark.parametrize("init", ["kmeans", "k-means++", "random_from_data"])
def test_point_inits_find_separated_clusters(init):
    X, _labels, centres = make_blobs(n=3000, d=2, k=4, sep=10.0, seed=2)
    g = GaussianMixture(4, init_params=init, random_state=0, n_init=3).fit(X)
    found = g.means_[np.argsort(g.means_[:, 0])]
    expect = centres[np.argsort(centres[:, 0])]
    np.testing.assert_allclose(found, expect, atol=0.2)


def test_n_init_keeps_the_best_run():
    X, _, _ = make_blobs(n=1500, d=2, k=5, sep=4.0, seed=7)
    g = GaussianMixture(5, n_init=4, init_params="random_from_data", random_state=0).fit(X)
    lbs = [r["lower_bound"] for r in g.restarts_]
    assert len(lbs) == 4
    best = _first_within_rounding_of_max(lbs)
    assert g.lower_bound_ == lbs[best]
    assert g.n_iter_ == g.restarts_[best]["n_iter"]
    # the restarts run in lockstep: one pass per iteration of the longest, not one per restart
    assert g.n_passes_ - g.init_passes_ == max(r["n_iter"] for r in g.restarts_)


def test_n_init_with_max_iter_0_keeps_the_last_initialisation_as_scikit_learn():
    """scikit-learn's loop keeps the last restart's initial parameters when no iteration runs."""
    X, _, _ = make_blobs(n=300, d=2, k=3, seed=7)
    kw = dict(init_params="random_from_data", max_iter=0)
    rs = np.random.RandomState(0)
    for _ in range(2):  # the third restart's seed is the third draw (daskgmm.fitting.mixture.restart_seeds)
        rs.randint(0, np.iinfo(np.int64).max, dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no iteration: not converged, and components on their one seed row
        three = GaussianMixture(3, n_init=3, random_state=0, **kw).fit(X)
        last = GaussianMixture(3, n_init=1, random_state=rs, **kw).fit(X)
        first = GaussianMixture(3, n_init=1, random_state=0, **kw).fit(X)
    np.testing.assert_array_equal(three.means_, last.means_)
    assert not np.array_equal(three.means_, first.means_)
    assert three.lower_bound_ == -np.inf and three.n_iter_ == 0


def _first_within_rounding_of_max(lbs):
    """scikit-learn keeps the first restart of the largest lower bound; ours, the first within
    rounding (1e-9 relative, and 1e-9 absolute) of it."""
    top = max(lbs)
    return next(i for i, lb in enumerate(lbs) if lb >= top - 1e-9 * (abs(top) + 1))


def test_restarts_that_find_the_same_optimum_give_the_same_model_for_any_chunking():
    """Four restarts reach the same optimum, with the components in other orders; their lower
    bounds differ by rounding, which differs with the chunking. Keeping the strictly largest
    returned the components in another order for chunks of 137 rows than in memory."""
    X, _, _ = make_blobs(n=3000, d=3, k=4, sep=8.0, seed=1)
    fits = [GaussianMixture(4, n_init=4, random_state=1).fit(x)
            for x in (X, da.from_array(X, chunks=(137, 3)), da.from_array(X, chunks=(1000, 3)))]
    lbs = [r["lower_bound"] for r in fits[0].restarts_]
    assert max(lbs) - min(lbs) < 1e-12  # a tie: the same optimum
    for g in fits[1:]:
        np.testing.assert_allclose(g.means_, fits[0].means_, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(g.covariances_, fits[0].covariances_, rtol=1e-9, atol=1e-9)


def test_warm_start_continues():
    X, _, _ = make_blobs(n=1000, d=2, k=3, spread=2.0, sep=3.0)
    kw = dict(random_state=0, tol=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = GaussianMixture(3, max_iter=8, **kw).fit(X)
        warm = GaussianMixture(3, max_iter=4, warm_start=True, **kw).fit(X)
        first_lb = warm.lower_bound_
        warm.fit(X)
    assert warm.n_iter_ == 4
    assert warm.lower_bound_ >= first_lb - 1e-12
    np.testing.assert_allclose(warm.means_, full.means_, rtol=1e-9)
    np.testing.assert_allclose(warm.lower_bound_, full.lower_bound_, rtol=1e-12)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_warm_start_partial_fit_and_predictions_refuse_a_changed_form(tmp_path):
    """After set_params changed n_components or covariance_type (see test_fitting_parts). Predictions read
    the fitted arrays as the new form: full read as tied gave labels and a NaN bic (divide-by-zero warnings),
    another n_components a bic of the wrong parameters, and a model file that does not load (user-trial-10)."""
    X = np.random.RandomState(0).randn(30, 2)
    g = GaussianMixture(2, warm_start=True, max_iter=2, tol=0.0, random_state=0).fit(X)
    for change in ({"covariance_type": "tied"}, {"n_components": 3}):
        g2 = clone(g).set_params(warm_start=False).fit(X).set_params(warm_start=True, **change)
        for call, what in ((g2.fit, "warm_start=True"), (g2.partial_fit, "partial_fit")):
            with pytest.raises(ValueError, match=f"{what}.* continues the fitted model"):
                call(X)
        for call in (g2.predict, g2.predict_proba, g2.score, g2.bic, lambda X, g2=g2: g2.sample(2),
                     lambda X, g2=g2: g2.save(tmp_path / "m")):
            with pytest.raises(ValueError, match=r"^GaussianMixture was fitted with 2 components and covariance_type="
                                                 r"'full', but its parameters say .* Fit it again, or set them back"):
                call(X)
    g.fit(X)  # the same form continues
    assert g.n_iter_ == 2


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_the_fitted_covariance_type_is_recorded_not_read_from_the_shapes(tmp_path):
    """At K = D tied's (D, D) arrays have diag's (K, D) shape: the type was inferred from the arrays, and a diag
    model whose precisions span 13 orders of magnitude looked triangular (tied): its own predictions refused
    it. At K = D = 1 the shapes say nothing: tied set to diag went on silently, where spherical refused."""
    X = np.random.RandomState(0).randn(30, 2)
    pc = np.array([[1e6, 1e-7], [1e-7, 1.0]])  # diag's precision factors, as given: max_iter=0 keeps them
    g = GaussianMixture(2, covariance_type="diag", max_iter=0, means_init=[[0, 0], [1, 1]],
                        precisions_init=pc**2).fit(X)
    g.predict(X)
    g.save(tmp_path / "m")  # model.json's covariance_type is recorded on loading
    loaded = daskgmm.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.predict(X), g.predict(X))
    for est in (g, loaded):
        with pytest.raises(ValueError, match="fitted with 2 components and covariance_type='diag', but"):
            est.set_params(covariance_type="tied").predict(X)
    g1 = GaussianMixture(1, covariance_type="tied", max_iter=2, random_state=0).partial_fit(X[:, :1])  # no fit
    g1.set_params(covariance_type="diag", warm_start=True)
    for call, match in ((g1.predict, "fitted with 1 component and covariance_type='tied'"),
                        (g1.fit, "continues the fitted model, which has 1 component and covariance_type='tied'")):
        with pytest.raises(ValueError, match=match):
            call(X[:, :1])
    del g1._fitted_covariance_type  # as pickled by an older version: inferred from the shapes (one model)
    g1.predict(X[:, :1])


def test_outputs_numpy_for_numpy_and_lazy_dask_for_dask(blobs):
    X, _, _ = blobs
    g = GaussianMixture(3, random_state=0).fit(X)
    for f in (g.predict, g.predict_proba, g.score_samples):
        assert isinstance(f(X), np.ndarray)
        lazy = f(da.from_array(X, chunks=(500, 3)))
        assert isinstance(lazy, da.Array)
        np.testing.assert_allclose(lazy.compute(), f(X), rtol=1e-12)
    labels = g.fit_predict(da.from_array(X, chunks=(700, 3)))
    assert isinstance(labels, da.Array)
    np.testing.assert_array_equal(labels.compute(), g.predict(X))
    np.testing.assert_array_equal(GaussianMixture(3, random_state=0).fit_predict(X), g.predict(X))
    assert g.predict(X).shape == (3000,) and g.predict_proba(X).shape == (3000, 3)
    assert isinstance(g.score(da.from_array(X, chunks=(500, 3))), float)


def test_pandas_and_dask_dataframe_inputs(blobs):
    X, _, _ = blobs
    df = pd.DataFrame(X, columns=["a", "b", "c"])
    g1 = GaussianMixture(3, random_state=0).fit(df)
    g2 = GaussianMixture(3, random_state=0).fit(dd.from_pandas(df, npartitions=4))
    np.testing.assert_allclose(g1.means_, g2.means_, rtol=1e-9)
    assert list(g1.feature_names_in_) == ["a", "b", "c"]
    assert list(g2.feature_names_in_) == ["a", "b", "c"]
    assert g1.n_features_in_ == 3
    bad = df.assign(c=["x"] * len(df))
    with pytest.raises(ValueError, match="'c'"):
        GaussianMixture(3).fit(bad)
    with pytest.raises(ValueError, match="'c'"):
        GaussianMixture(3).fit(dd.from_pandas(bad, npartitions=2))


def test_float32_stays_float32(blobs):
    X, _, _ = blobs
    X32 = X.astype(np.float32)
    g = GaussianMixture(3, random_state=0).fit(X32)
    g64 = GaussianMixture(3, random_state=0).fit(X)
    for name in ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"):
        assert getattr(g, name).dtype == np.float32, name
    assert g.predict_proba(X32).dtype == np.float32
    assert g.score_samples(X32).dtype == np.float32
    np.testing.assert_allclose(g.means_, g64.means_, rtol=1e-4, atol=1e-4)


def test_float32_rows_on_a_float64_model_give_float64(blobs):
    """scikit-learn's rule, as KMeans.transform's: float32 rows scored by a float64 model give
    float64, the rows' values scored with the model's precision (they gave float32)."""
    X, _, _ = blobs
    X32 = X.astype(np.float32)
    g = GaussianMixture(3, random_state=0).fit(X)
    for rows in (X32, da.from_array(X32, chunks=100)):
        proba, score = g.predict_proba(rows), g.score_samples(rows)
        assert proba.dtype == np.float64 and score.dtype == np.float64
        np.testing.assert_allclose(np.asarray(score), g.score_samples(X32.astype(np.float64)), rtol=1e-12)
        np.testing.assert_allclose(np.asarray(proba), g.predict_proba(X32.astype(np.float64)), rtol=1e-9, atol=1e-12)


def test_clone_get_set_params_and_repr():
    g = GaussianMixture(4, covariance_type="diag", random_state=3)
    c = clone(g)
    assert c.get_params() == g.get_params()
    assert "n_components" in g.get_params() and "covariance_type" in g.get_params()
    assert g.set_params(n_components=5) is g and g.n_components == 5
    with pytest.raises(ValueError, match="Invalid parameter 'nope'"):
        g.set_params(nope=1)
    assert repr(g) == "GaussianMixture(covariance_type='diag', n_components=5, random_state=3)"


def test_sample_matches_sklearn(faithful):
    g = GaussianMixture(2, random_state=0).fit(faithful)
    sk = SkGMM(2, random_state=0).fit(faithful)
    for ct in TYPES:
        g2 = GaussianMixture(2, covariance_type=ct, random_state=5).fit(faithful)
        s2 = SkGMM(2, covariance_type=ct, random_state=5)
        for attr in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
            setattr(s2, attr, getattr(g2, attr))
        Xa, ya = g2.sample(500)
        Xb, yb = s2.sample(500)
        np.testing.assert_allclose(Xa, Xb)
        np.testing.assert_array_equal(ya, yb)
    X, y = g.sample(1000)
    assert X.shape == (1000, 2) and y.shape == (1000,)
    assert abs(np.mean(y == np.argmax(g.weights_)) - g.weights_.max()) < 0.05
    with pytest.raises(ValueError, match="at least one sample"):
        g.sample(0)
    del sk


# ----------------------------------------------------------------- bad input

@pytest.mark.parametrize(
    "params, match",
    [
        ({"n_components": 0}, "'n_components' parameter of GaussianMixture must be an int in the range \\[1, inf\\)"),
        ({"covariance_type": "banana"}, "'covariance_type' parameter of GaussianMixture must be a str among"),
        ({"tol": -1.0}, "'tol' parameter"),
        ({"reg_covar": -1}, "'reg_covar' parameter"),
        # an open bound's infinity is out of range, as in scikit-learn (inf was taken; user-trial-10)
        ({"reg_covar": np.inf}, r"'reg_covar' parameter of GaussianMixture must be a float in the range \[0\.0, "
                                r"inf\)\. Got inf instead"),
        ({"tol": np.inf}, "'tol' parameter"),
        ({"max_iter": -1}, "'max_iter' parameter"),
        ({"n_init": 0}, "'n_init' parameter"),
        ({"init_params": "magic"}, "'init_params' parameter"),
        ({"random_state": "x"}, "'random_state' parameter"),
        ({"warm_start": "yes"}, "'warm_start' parameter"),
        ({"assignment": "fuzzy"}, "'assignment' parameter"),
        ({"update_params": "wx"}, "update_params must be"),
    ],
)
def test_invalid_parameters(params, match):
    X, _, _ = make_blobs(n=50)
    with pytest.raises(ValueError, match=match):
        GaussianMixture(**params).fit(X)


@pytest.mark.parametrize("bad, match", [(np.nan, "contains NaN"), (np.inf, "contains infinity")])
@pytest.mark.parametrize("as_dask", [False, True])
def test_nan_and_inf_are_rejected(bad, match, as_dask):
    X, _, _ = make_blobs(n=100)
    X[7, 1] = bad
    X[9, 1] = bad
    Xin = da.from_array(X, chunks=(30, 3)) if as_dask else X
    with pytest.raises(ValueError, match=match) as exc:
        GaussianMixture(2).fit(Xin)
    assert "column 1: 2 value(s)" in str(exc.value)


@pytest.mark.parametrize("as_dask", [False, True])
def test_infinity_in_float32_rows_names_float32(as_dask):
    # scikit-learn's sentence names the rows' dtype: "... too large for dtype('float32')"; the fit's scan said
    # float64's for float32 rows, the first batch of partial_fit and KMeans' later batches too
    X, _, _ = make_blobs(n=100)
    X = X.astype(np.float32)
    X[7, 1] = np.inf
    Xin = da.from_array(X, chunks=(30, 3)) if as_dask else X
    want = r"^Input X contains infinity or a value too large for dtype\('float32'\)\."
    for est in (GaussianMixture(2), daskgmm.KMeans(2), daskgmm.StudentTMixture(2)):
        with pytest.raises(ValueError, match=want + r" column 1: 1 value\(s\)"):
            est.fit(Xin)
    # (a later NumPy batch is checked by scikit-learn's check_array: its sentence alone)
    with pytest.raises(ValueError, match=want):
        GaussianMixture(2, random_state=0).fit(X[10:]).partial_fit(Xin)
    with pytest.raises(ValueError, match=want):
        daskgmm.KMeans(2, random_state=0).fit(X[10:]).partial_fit(Xin)


def test_bad_shapes_and_types():
    g = GaussianMixture(2)
    with pytest.raises(ValueError, match="Expected 2D array, got 1D array"):
        g.fit(np.arange(10.0))
    with pytest.raises(ValueError, match="Found array with 0 sample\\(s\\)"):
        g.fit(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="Found array with 0 sample\\(s\\)"):
        g.fit(da.zeros((0, 3), chunks=(1, 3)))
    with pytest.raises(ValueError, match="Found array with 1 sample\\(s\\)"):
        g.fit(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="Expected n_samples >= n_components but got n_components = 5, n_samples = 3"):
        GaussianMixture(5).fit(np.random.default_rng(0).normal(size=(3, 2)))
    with pytest.raises(ValueError, match="could not convert string to float: 'a'"):
        g.fit([[1.0, 2.0], [3.0, "a"], [1.0, 1.0]])
    with pytest.raises(ValueError, match="dim 3"):
        g.fit(np.zeros((4, 2, 2)))
    # an image's pixels as a Dask array (H, W, C): scikit-learn's sentence, as for NumPy, where fit advised
    # reshape(-1, 1) and predict counted W features ('X has 4 features, but ... expecting 3')
    img = da.zeros((4, 4, 3), chunks=(2, 4, 3))
    with pytest.raises(ValueError, match=r"^Found array with dim 3, while dim <= 2 is required by GaussianMixture\.$"):
        g.fit(img)
    fitted = GaussianMixture(2, random_state=0).fit(np.random.default_rng(0).normal(size=(20, 3)))
    for method in (fitted.predict, fitted.score_samples, fitted.score):
        with pytest.raises(ValueError, match=r"^Found array with dim 3, while dim <= 2 is required by GaussianMixture"):
            method(img)
    with pytest.raises(ValueError, match="numeric"):
        g.fit(da.from_array(np.array([["a", "b"], ["c", "d"]], dtype=object), chunks=(1, 2)))


def test_predict_checks():
    X, _, _ = make_blobs(n=200, d=2)
    g = GaussianMixture(2)
    with pytest.raises(daskgmm.NotFittedError, match="not fitted yet"):
        g.predict(X)
    g.fit(X)
    with pytest.raises(ValueError, match="X has 3 features, but GaussianMixture is expecting 2 features"):
        g.predict(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="X has 3 features"):
        g.predict(da.zeros((4, 3)))
    with pytest.raises(ValueError, match="contains NaN"):
        g.predict_proba(np.array([[np.nan, 1.0]]))
    # a mean of no rows: scikit-learn's error for Dask input too (it was NaN, and bic a 'math domain error';
    # user-trial-10); the predictions of no rows stay an empty lazy array
    none = da.from_array(X, chunks=50)[da.from_array(X[:, 0], chunks=50) > 1e9]
    for call in (g.score, g.bic, g.aic):
        with pytest.raises(ValueError, match=r"^Found array with 0 sample\(s\) \(shape=\(0, 2\)\) while a minimum "
                                             r"of 1 is required by GaussianMixture\.$"):
            call(none)
    assert g.predict(none).compute().shape == (0,)


@pytest.mark.parametrize("ct", ["full", "tied"])  # diag/spherical keep scikit-learn's 10 eps μ² (test_stats)
def test_collapsed_component_raises_naming_it(ct):
    """A component left with a single point (reg_covar=0) has a singular covariance."""
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(size=(200, 2)), np.full((1, 2), 50.0)])
    k, d = 2, 2
    from daskgmm.kernels.covariance import covariance_shape

    prec = np.ones(covariance_shape(ct, k, d)) if ct in ("diag", "spherical") else None
    if ct == "full":
        prec = np.stack([np.eye(d)] * k)
    if ct == "tied":
        prec = np.eye(d)
        X = np.array([[0.0, 0.0], [0.0, 0.0], [5.0, 5.0], [5.0, 5.0]])  # every component on one point
    means = np.array([[0.0, 0.0], [50.0, 50.0]]) if ct != "tied" else np.array([[0.0, 0.0], [5.0, 5.0]])
    match = r"^Fitting the mixture model failed because some components have ill-defined empirical covariance.*" + (
        r"The tied covariance is not positive definite" if ct == "tied"
        else r"Component 1 has a covariance that is not positive definite \(reg_covar=0\)"
    )
    with pytest.raises(ValueError, match=match):
        GaussianMixture(k, covariance_type=ct, reg_covar=0.0, weights_init=[0.5, 0.5], means_init=means,
                        precisions_init=prec).fit(X)


def test_init_parameter_validation():
    X, _, _ = make_blobs(n=100, d=2)
    with pytest.raises(ValueError, match="'weights' should be normalized"):
        GaussianMixture(2, weights_init=[0.5, 0.6]).fit(X)
    with pytest.raises(ValueError, match="'means' should have the shape of \\(2, 2\\)"):
        GaussianMixture(2, means_init=np.zeros((3, 2))).fit(X)
    with pytest.raises(ValueError, match="symmetric, positive-definite"):
        GaussianMixture(2, precisions_init=np.array([[[1, 2], [2, 1]], [[1, 0], [0, 1]]])).fit(X)
    with pytest.raises(ValueError, match="'diag precision' should be positive"):
        GaussianMixture(2, covariance_type="diag", precisions_init=-np.ones((2, 2))).fit(X)


def test_verbose_prints_progress(capsys):
    X, _, _ = make_blobs(n=200, d=2)
    GaussianMixture(2, verbose=2, verbose_interval=1, random_state=0).fit(X)
    out = capsys.readouterr().out
    assert "Initialization 0" in out and "Iteration 1" in out and "ll change" in out and "converged" in out


def test_point_init_on_a_wide_id_like_column_matches_sklearn():
    """Rows far from the data centre (an id-like column up to 4e6): the initial covariances of
    k-means++/random_from_data must be exactly reg_covar, not rounding noise of size 1e-3."""
    rng = np.random.default_rng(0)
    n = 20000
    X = np.column_stack([np.arange(n) * 200.0, rng.normal(size=n) + np.repeat([0.0, 8.0], n // 2)])
    g0 = GaussianMixture(4, init_params="random_from_data", random_state=0, max_iter=0).fit(X)
    np.testing.assert_allclose(g0.covariances_, np.stack([np.eye(2) * 1e-6] * 4), atol=1e-12)
    init = dict(weights_init=np.full(4, 0.25), means_init=g0.means_, precisions_init=g0.precisions_)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = SkGMM(4, max_iter=5, tol=0, **init).fit(X)
        g = GaussianMixture(4, max_iter=5, tol=0, **init).fit(X)
    np.testing.assert_allclose(g.means_, sk.means_, rtol=1e-8)
    np.testing.assert_allclose(g.covariances_, sk.covariances_, rtol=1e-6)
    gk = GaussianMixture(4, init_params="k-means++", random_state=0, max_iter=5).fit(X)
    assert np.isfinite(gk.lower_bound_) and np.all(np.isfinite(gk.covariances_))
    assert np.all(gk.weights_ > 0.05)  # no component lost to the point initialisation


def test_float32_tight_clusters_far_from_the_centre_fit_like_float64():
    """Two tight clusters 3 sigma apart, 1e4 from the data centre: on shared features float32
    logits would be off by ~10 exactly where the two compete (a spurious collapse); the
    per-component path keeps float32 within 1e-4 of float64."""
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(size=(20000, 2)) * 50, rng.normal(size=(2000, 2)) + [1e4, 0],
                   rng.normal(size=(2000, 2)) + [1e4, 3]])
    init = dict(weights_init=[0.8, 0.1, 0.1], means_init=[[0, 0], [1e4, -0.5], [1e4, 3.5]],
                precisions_init=np.stack([np.eye(2) / 2500, np.eye(2), np.eye(2)]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g64 = GaussianMixture(3, max_iter=20, tol=0, **init).fit(X)
        g32 = GaussianMixture(3, max_iter=20, tol=0, **init).fit(X.astype(np.float32))
    np.testing.assert_allclose(g32.means_, g64.means_, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(g32.weights_, g64.weights_, rtol=1e-4)
    np.testing.assert_allclose(g32.covariances_, g64.covariances_, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("ct", TYPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_two_far_points_give_two_components_of_variance_reg_covar(ct, dtype):
    """[[9999], [0]], K=2, reg_covar=0.1: each component is one point, so its variance is reg_covar.
    In float32 scikit-learn gives 112 (its issue #30382: squares of float32 values, and its 10 eps of
    float32 times the mean's square); daskgmm takes the init's label statistics about each centre and
    that term with float64's eps, so float32 gives float64's answer."""
    X = np.array([[9999.0], [0.0]], dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkConvergenceWarning)
        g = GaussianMixture(2, covariance_type=ct, reg_covar=0.1, random_state=0).fit(X)
    order = np.argsort(g.means_[:, 0])
    np.testing.assert_allclose(g.means_[order, 0], [0.0, 9999.0], atol=1e-6, rtol=1e-7)
    variances = {"full": lambda c: c[:, 0, 0], "tied": lambda c: np.full(2, c[0, 0]),
                 "diag": lambda c: c[:, 0], "spherical": lambda c: c}[ct](g.covariances_)
    np.testing.assert_allclose(variances, 0.1, rtol=1e-5)
    np.testing.assert_allclose(g.weights_, 0.5)
    assert g.covariances_.dtype == dtype
