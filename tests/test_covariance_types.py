"""A covariance type is one object (kernels.covariance.CovarianceType): complete, and in scikit-learn's shapes."""

import inspect

import numpy as np
import pytest
from sklearn.mixture import BayesianGaussianMixture as SkBayesian
from sklearn.mixture import GaussianMixture as SkGaussian

from daskgmm.kernels import covariance as cov


def test_every_type_implements_the_whole_object():
    abstract = {name for name, f in inspect.getmembers(cov.CovarianceType, inspect.isfunction)
                if "raise NotImplementedError" in inspect.getsource(f)}
    assert {"shape", "covariances", "factors", "log_det", "wishart_update"} <= abstract
    not_for_matrices = {"_diagonal_parts", "from_variances"}  # the variances' own (dense types have others)
    for t in cov.TYPES.values():
        need = abstract - not_for_matrices if t.dense else abstract
        missing = sorted(m for m in need if m not in type(t).__dict__)
        assert not missing, f"{t.name} lacks {missing}"
    assert cov.COVARIANCE_TYPES == ("full", "tied", "diag", "spherical")


def test_unknown_name_is_named_with_the_choices():
    with pytest.raises(ValueError, match=r"covariance_type must be one of \('full', 'tied', 'diag', 'spherical'\), "
                                         r"got 'ful'"):
        cov.of("ful")
    assert cov.of(cov.of("tied")) is cov.TYPES["tied"]


@pytest.mark.parametrize("ct", cov.COVARIANCE_TYPES)
def test_shapes_are_scikit_learns(ct):
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 1, (60, 3)), rng.normal(5, 1, (60, 3))])
    k, d = 2, 3
    t = cov.of(ct)
    sk = SkGaussian(k, covariance_type=ct, random_state=0).fit(X)
    assert t.shape(k, d) == sk.covariances_.shape == sk.precisions_cholesky_.shape
    for j in range(k):
        np.testing.assert_array_equal(np.broadcast_to(t.component_matrix(sk.covariances_, j, d), (d, d)),
                                      np.broadcast_to(cov.component_covariance(sk.covariances_, ct, j, d), (d, d)))
    bsk = SkBayesian(n_components=k, covariance_type=ct, random_state=0, max_iter=5).fit(X)
    assert t.component_shape(d) == np.shape(bsk.covariance_prior_)
    assert t.scalar_shape(k) == np.shape(bsk.degrees_of_freedom_)
    assert t.n_covariance_parameters(k, d) + k * d + k - 1 == sk._n_parameters()
    # the precision factors and their inverse, as scikit-learn computes them
    np.testing.assert_allclose(t.precisions_cholesky(sk.covariances_), sk.precisions_cholesky_, rtol=1e-10)
    np.testing.assert_allclose(t.precisions_from_cholesky(sk.precisions_cholesky_), sk.precisions_, rtol=1e-10)
    np.testing.assert_allclose(t.cholesky_from_precisions(sk.precisions_), sk.precisions_cholesky_, rtol=1e-10,
                               atol=1e-12)
    np.testing.assert_allclose(t.covariances_from_precisions(sk.precisions_), sk.covariances_, rtol=1e-10)


@pytest.mark.parametrize("ct", cov.COVARIANCE_TYPES)
def test_draws_are_scikit_learns_sample(ct):
    from daskgmm.fitting.predict import sample_mixture

    rng = np.random.default_rng(1)
    X = np.vstack([rng.normal(0, 1, (60, 2)), rng.normal(4, 0.5, (60, 2))])
    sk = SkGaussian(2, covariance_type=ct, random_state=0).fit(X)
    Xs, ys = sk.sample(50)  # drawn with a fresh RandomState(0), as ours
    ours = sample_mixture(sk.weights_, sk.means_, sk.covariances_, ct, 50, random_state=0)
    np.testing.assert_array_equal(ours[0], Xs)
    np.testing.assert_array_equal(ours[1], ys)

