"""daskgmm's estimators inside scikit-learn: its estimator checks, meta-estimators, pickling, names."""

import pickle
import warnings

import dask.dataframe as dd
import joblib
import numpy as np
import pandas as pd
import pytest
import scipy.sparse
import sklearn
from sklearn.base import clone, is_clusterer
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import estimator_html_repr
from sklearn.utils.estimator_checks import parametrize_with_checks
from sklearn.utils.validation import check_is_fitted

import daskgmm
from daskgmm import BayesianGaussianMixture, GaussianMixture, KMeans, StudentTMixture

from .conftest import make_blobs

# The checks scikit-learn's own estimators of the same kind are expected to fail, with its reasons
# (sklearn/utils/_test_common/instance_generator.py, PER_ESTIMATOR_XFAIL_CHECKS), in one place.
# KMeans passes check_sample_weight_equivalence_on_dense_data (and _on_sparse_data), which scikit-learn's
# own KMeans is expected to fail: on data the first scan draws whole (up to 512 rows per cluster), the
# initialisation runs on the data as a weighted point set (daskgmm.em.init._distinct_rows), the same for a
# weight of w and w copies of a row, in any order. On larger data it cannot be exact: the scan's draws are
# keyed by row number, so a row of weight w gets one key where w copies get w keys (and shift the
# numbers of every later row); the two are equivalent in distribution only.
EXPECTED_FAILED_CHECKS = {
    "KMeans": {},
    "GaussianMixture": {},
    "BayesianGaussianMixture": {},
    "StudentTMixture": {},
}


@parametrize_with_checks(
    # the small settings scikit-learn's own test suite uses for these estimators
    [GaussianMixture(n_init=2, max_iter=5), BayesianGaussianMixture(n_init=2, max_iter=5),
     KMeans(n_clusters=2, n_init=2, max_iter=5), StudentTMixture(n_init=2, max_iter=5)],
    expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS[type(est).__name__],
    xfail_strict=True,  # an expected failure that passes is news: take it off the list
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def three_blobs():
    X, y, _ = make_blobs(n=600, d=2, k=3, seed=3, sep=8.0)
    return X, y


def test_base_classes_tags_and_exceptions():
    assert is_clusterer(KMeans())
    assert GaussianMixture().__sklearn_tags__().estimator_type == "density_estimator"
    for est in (GaussianMixture(), KMeans()):
        tags = est.__sklearn_tags__()
        assert tags.input_tags.sparse == isinstance(est, KMeans) and not tags.input_tags.allow_nan
        with pytest.raises(NotFittedError):
            check_is_fitted(est)
        with pytest.raises(NotFittedError, match="not fitted yet"):
            est.predict(np.zeros((3, 2)))
    assert daskgmm.NotFittedError is NotFittedError
    assert daskgmm.ConvergenceWarning is ConvergenceWarning
    from sklearn.utils._param_validation import InvalidParameterError  # the class scikit-learn raises

    assert daskgmm.InvalidParameterError is InvalidParameterError
    # the command's fit keywords (checkpoint, progress) are no metadata: set_fit_request offered them, and
    # get_metadata_routing listed them beside sample_weight (user-trial-10)
    for est in (GaussianMixture(), BayesianGaussianMixture(), StudentTMixture(), KMeans(), daskgmm.KMedoids()):
        fit = est.get_metadata_routing().fit.requests
        assert set(fit) == ({"sample_weight"} if hasattr(est, "set_fit_request") else set()), (est, fit)
    X = np.tile([[0.0, 0.0], [1.0, 1.0]], (6, 1))
    with sklearn.config_context(enable_metadata_routing=True):
        km = KMeans(2, init=X[:2]).set_fit_request(sample_weight=True).set_score_request(sample_weight=False)
        scores = cross_val_score(km, X, cv=2, params={"sample_weight": np.arange(12.0)})
    np.testing.assert_array_equal(scores, [0.0, 0.0])
    with pytest.raises(InvalidParameterError, match=r"The 'n_components' parameter of GaussianMixture must be"):
        GaussianMixture(n_components=0).fit(np.zeros((4, 2)))


def test_sparse_input_is_a_clear_type_error_for_the_mixtures():
    import dask.array as da

    X = scipy.sparse.csr_matrix(np.eye(4))
    lazy = da.from_array(scipy.sparse.csr_array(X), chunks=(2, 4), asarray=False)
    for est in (GaussianMixture(), BayesianGaussianMixture()):
        for data in (X, lazy):
            with pytest.raises(TypeError, match=r"^Sparse data was passed for X, but dense data is required.*toarray"):
                est.fit(data)
    fitted = GaussianMixture(2, random_state=0).fit(np.random.RandomState(0).randn(20, 4))
    with pytest.raises(TypeError, match=r"^Sparse data was passed for X"):
        fitted.predict(X)
    assert KMeans(2, random_state=0).fit(X).cluster_centers_.shape == (2, 4)  # KMeans takes sparse rows


def test_object_dtype_is_a_type_error():
    X = np.ones((10, 2), dtype=object)
    X[0, 0] = {"a": 1}
    with pytest.raises(TypeError, match=r"argument must be a string.* number"):
        GaussianMixture().fit(X)


def test_pipeline_fit_predict_score(three_blobs):
    X, y = three_blobs
    pipe = make_pipeline(StandardScaler(), GaussianMixture(3, random_state=0)).fit(X)
    labels = pipe.predict(X)
    assert sklearn.metrics.adjusted_rand_score(y, labels) > 0.99
    assert np.isfinite(pipe.score(X))
    km = make_pipeline(StandardScaler(), KMeans(3, random_state=0)).fit(X)
    assert sklearn.metrics.adjusted_rand_score(y, km.predict(X)) > 0.99
    bg = make_pipeline(StandardScaler(), BayesianGaussianMixture(n_components=6, random_state=0)).fit(X)
    assert sklearn.metrics.adjusted_rand_score(y, bg.predict(X)) > 0.99


def test_set_output_pandas_through_kmeans_transform(three_blobs):
    X, _ = three_blobs
    pipe = make_pipeline(StandardScaler(), KMeans(3, random_state=0)).set_output(transform="pandas")
    out = pipe.fit_transform(pd.DataFrame(X, columns=["a", "b"]))
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == ["kmeans0", "kmeans1", "kmeans2"]
    assert list(pipe[-1].get_feature_names_out()) == ["kmeans0", "kmeans1", "kmeans2"]


def test_set_output_pandas_keeps_the_index_of_a_dask_frame(three_blobs):
    # a pandas frame's index is kept by scikit-learn's wrapper; a Dask frame's must be too, or the
    # distances of a frame indexed by an id cannot be joined back to it (they came with 0 .. n-1)
    X, _ = three_blobs
    df = pd.DataFrame(X, columns=["a", "b"], index=pd.Index(np.arange(len(X)) * 10 + 7, name="id"))
    ddf = dd.from_pandas(df, npartitions=3)
    for est in (KMeans(3, random_state=0), daskgmm.KMedoids(3, random_state=0)):
        expected = est.set_output(transform="pandas").fit(df).transform(df)
        prefix = type(est).__name__.lower()
        for out in (est.fit(ddf).transform(ddf), clone(est).fit_transform(ddf)):
            assert isinstance(out, pd.DataFrame)
            assert list(out.columns) == [f"{prefix}0", f"{prefix}1", f"{prefix}2"]
            pd.testing.assert_index_equal(out.index, df.index, exact=True)
            np.testing.assert_allclose(out.to_numpy(), expected.to_numpy(), rtol=1e-12)
    with sklearn.config_context(transform_output="pandas"):  # the global setting, as set_output's
        out = KMeans(3, random_state=0).fit(ddf).transform(ddf)
    pd.testing.assert_index_equal(out.index, df.index, exact=True)
    # the default output stays a lazy Dask array
    assert not isinstance(KMeans(3, random_state=0).fit(ddf).transform(ddf), pd.DataFrame)


def test_grid_search_picks_the_true_k_and_cross_val_score(three_blobs):
    X, _ = three_blobs
    search = GridSearchCV(GaussianMixture(random_state=0), {"n_components": [1, 2, 3, 4]}, cv=3).fit(X)
    # the default score is the mean log-likelihood; on separated blobs 3 wins clearly over 1 and 2,
    # and 4 only splits a blob (its held-out likelihood is no better)
    scores = dict(zip(search.cv_results_["param_n_components"], search.cv_results_["mean_test_score"]))
    assert search.best_params_["n_components"] in (3, 4)
    assert scores[3] > scores[2] > scores[1]
    cv = cross_val_score(GaussianMixture(3, random_state=0), X, cv=3)
    assert cv.shape == (3,) and np.all(np.isfinite(cv))
    assert np.allclose(cv.mean(), scores[3])


def test_clone_pickle_joblib_and_html_repr(three_blobs, tmp_path):
    X, _ = three_blobs
    for est in (GaussianMixture(3, random_state=0), KMeans(3, random_state=0),
                BayesianGaussianMixture(n_components=3, random_state=0)):
        c = clone(est)
        assert c.get_params() == est.get_params() and c is not est
        est.fit(X)
        again = pickle.loads(pickle.dumps(est))
        np.testing.assert_array_equal(again.predict(X), est.predict(X))
        joblib.dump(est, tmp_path / "m.joblib")
        np.testing.assert_array_equal(joblib.load(tmp_path / "m.joblib").predict(X), est.predict(X))
        html = estimator_html_repr(est)
        assert type(est).__name__ in html


def test_feature_names_from_pandas_and_dask_frames(three_blobs):
    X, _ = three_blobs
    df = pd.DataFrame(X, columns=["eruptions", "waiting"])
    for frame in (df, dd.from_pandas(df, npartitions=3)):
        for est in (GaussianMixture(3, random_state=0), KMeans(3, random_state=0),
                    BayesianGaussianMixture(n_components=3, random_state=0)):
            est.fit(frame)
            assert list(est.feature_names_in_) == ["eruptions", "waiting"]
            assert est.n_features_in_ == 2
    renamed = df.rename(columns={"waiting": "w"})
    for frame in (renamed, dd.from_pandas(renamed, npartitions=3)):
        with pytest.raises(ValueError, match="Feature names unseen at fit time"):
            GaussianMixture(3, random_state=0).fit(df).predict(frame)


def test_partial_fit_checks_a_dask_frames_columns_as_a_pandas_ones(three_blobs):
    """A later KMeans.partial_fit batch given as a Dask DataFrame was not checked against the fitted
    columns: the same columns in another order updated the centres with the features swapped."""
    X, _ = three_blobs
    df = pd.DataFrame(X, columns=["eruptions", "waiting"])
    swapped = df[["waiting", "eruptions"]]
    for est in (KMeans(3, random_state=0), GaussianMixture(3, random_state=0)):
        est.fit(df)
        before = (est.cluster_centers_ if hasattr(est, "cluster_centers_") else est.means_).copy()
        for batch in (swapped, dd.from_pandas(swapped, npartitions=2)):
            with pytest.raises(ValueError, match="Feature names must be in the same order"):
                est.partial_fit(batch)
        np.testing.assert_array_equal(est.cluster_centers_ if hasattr(est, "cluster_centers_") else est.means_,
                                      before)
        est.partial_fit(dd.from_pandas(df, npartitions=2))  # the fitted columns: taken, silently
        with pytest.raises(ValueError, match="Feature names seen at fit time, yet now missing"):
            est.partial_fit(dd.from_pandas(df[["waiting"]], npartitions=2))


def test_kmeans_partial_fit_continues_fit(three_blobs):
    X, _ = three_blobs
    km = KMeans(3, random_state=0).fit(X[:300])
    counts = km.counts_.copy()
    centers = km.cluster_centers_.copy()
    km.partial_fit(X[300:])
    assert km.n_steps_ == 1
    np.testing.assert_allclose(km.counts_.sum(), counts.sum() + 300)
    assert not np.allclose(km.cluster_centers_, centers)
    # the running means over both halves, by hand: each row of the batch goes to its nearest centre
    # as the batch starts, and each centre becomes the mean of fit's mass (its count) and those rows
    batch = X[300:]
    labels = ((batch[:, None, :] - centers[None, :, :]) ** 2).sum(axis=-1).argmin(axis=1)
    want_counts = counts + np.bincount(labels, minlength=3)
    sums = np.stack([batch[labels == k].sum(axis=0) for k in range(3)])
    want = (centers * counts[:, None] + sums) / want_counts[:, None]
    np.testing.assert_allclose(km.counts_, want_counts, rtol=1e-12)
    np.testing.assert_allclose(km.cluster_centers_, want, rtol=1e-12)


def test_kmeans_scikit_learn_parameters_and_warnings():
    X = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0], [1.0, 1.0]])
    fewer = r"Number of distinct clusters \(2\) found smaller than n_clusters \(3\)"
    with pytest.warns(ConvergenceWarning, match=fewer):
        km = KMeans(3, random_state=0, algorithm="elkan", copy_x=False).fit(X)
    assert km.labels_.dtype == np.int32
    assert km.inertia_ == 0.0 and not np.signbit(km.inertia_)
    with pytest.warns(RuntimeWarning, match="algorithm='elkan' doesn't make sense for a single cluster"):
        KMeans(1, algorithm="elkan").fit(X)
    km = KMeans(2, init=lambda X, k, random_state: np.array([[0.0, 0.0], [1.0, 1.0]]), n_init=1).fit(X)
    np.testing.assert_array_equal(km.cluster_centers_, [[0.0, 0.0], [1.0, 1.0]])
    with pytest.raises(ValueError, match="X has 3 features, but KMeans is expecting 2 features as input"):
        km.score(np.zeros((2, 3)))


def test_kmeans_callable_init_restarts_as_scikit_learns(three_blobs):
    """A callable init is a random start as "random" is: scikit-learn calls it once per restart
    with one RandomState, 10 times for n_init="auto", n times for n_init=n without a warning, and
    keeps the best. daskgmm called it once and warned "Explicit initial center position passed"."""
    from sklearn.cluster import KMeans as SkKMeans

    X, _ = three_blobs

    def rows(calls):
        def init(X, k, random_state):
            calls.append(random_state)
            return np.asarray(X)[random_state.choice(len(X), k, replace=False)]
        return init

    for n_init, expected in (("auto", 10), (3, 3), (1, 1)):
        ours, theirs = [], []
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            km = KMeans(3, init=rows(ours), n_init=n_init, random_state=0).fit(X)
            sk = SkKMeans(3, init=rows(theirs), n_init=n_init, random_state=0).fit(X)
        assert len(ours) == len(theirs) == expected
        assert len({id(r) for r in ours}) == 1  # one RandomState, drawn on: other starts
        np.testing.assert_allclose(km.inertia_, sk.inertia_, rtol=1e-9)
    with pytest.warns(RuntimeWarning, match="Explicit initial center position passed"):
        KMeans(3, init=X[:3], n_init=3).fit(X)


def test_dask_frames_with_the_fitted_columns_do_not_warn(three_blobs):
    """A Dask DataFrame has the names a pandas one has: predicting on the columns the model was
    fitted with warns nothing (scikit-learn's name check does not read Dask frames, so it said
    "X does not have valid feature names" for them), and a Dask frame given to a model fitted
    without names gets scikit-learn's warning for a pandas one."""
    X, _ = three_blobs
    df = pd.DataFrame(X, columns=["eruptions", "waiting"])
    frame = dd.from_pandas(df, npartitions=3)
    for est in (GaussianMixture(3, random_state=0), KMeans(3, random_state=0),
                BayesianGaussianMixture(n_components=3, random_state=0),
                StudentTMixture(3, random_state=0), daskgmm.KMedoids(3, random_state=0)):
        for fitted_on in (frame, df):
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                est.fit(fitted_on)
                for method in ("predict", "predict_proba", "score_samples", "score", "transform"):
                    if hasattr(est, method):
                        getattr(est, method)(frame)
        est.fit(X)
        with pytest.warns(UserWarning, match="X has feature names, but .* was fitted without feature names"):
            est.predict(frame)
