"""The classic variants from the lecture notes: hard EM, means-only EM, singularities, 1-D."""

import re
import warnings

import dask.array as da
import numpy as np
import pytest
from sklearn.mixture import GaussianMixture as SkGMM

import daskgmm
from daskgmm import GaussianMixture, KMeans

from .conftest import make_blobs

# fixed iteration counts are the point of several tests here
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_hard_means_only_equal_spherical_equal_weights_is_kmeans():
    """Classification EM that updates only the means, with equal weights and one fixed
    spherical variance, assigns each row to its nearest mean: exactly Lloyd's k-means."""
    X, _, _ = make_blobs(n=3000, d=3, k=4, sep=3.0, spread=1.2, seed=5)
    start = X[[0, 1, 2, 3]]
    k = 4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for it in (1, 4, 12):
            em = GaussianMixture(
                k, covariance_type="spherical", assignment="hard", update_params="m", max_iter=it, tol=0.0,
                weights_init=np.full(k, 1 / k), means_init=start, precisions_init=np.full(k, 1.0),
            ).fit(da.from_array(X, chunks=(700, 3)))
            km = KMeans(k, init=start, max_iter=it, tol=0.0).fit(X)
            np.testing.assert_allclose(em.means_, km.cluster_centers_, rtol=1e-9, atol=1e-12)
            np.testing.assert_array_equal(em.predict(X), km.labels_)


def test_means_only_keeps_weights_and_covariances():
    X, _, _ = make_blobs(n=1500, d=2, k=3, seed=6)
    w0 = np.array([0.2, 0.3, 0.5])
    p0 = np.array([0.5, 1.0, 2.0])
    g = GaussianMixture(3, covariance_type="spherical", update_params="m", weights_init=w0, means_init=X[:3],
                        precisions_init=p0, max_iter=20).fit(X)
    np.testing.assert_array_equal(g.weights_, w0)
    np.testing.assert_allclose(g.precisions_, p0, rtol=1e-12)
    assert not np.allclose(g.means_, X[:3])
    # "wm": weights move too, covariances stay
    g2 = GaussianMixture(3, covariance_type="diag", update_params="wm", means_init=X[:3], max_iter=5, tol=0,
                         weights_init=w0, precisions_init=np.ones((3, 2))).fit(X)
    np.testing.assert_allclose(g2.precisions_, 1.0)
    assert not np.allclose(g2.weights_, w0)


def test_notes_means_only_em_in_one_dimension():
    """The notes' example: 1-D data, K=2, variances fixed to 1, uniform class weights."""
    rng = np.random.default_rng(0)
    x = np.r_[rng.normal(-2.0, 1.0, 4000), rng.normal(3.0, 1.0, 4000)][:, None]
    g = GaussianMixture(2, covariance_type="spherical", update_params="m", weights_init=[0.5, 0.5],
                        means_init=[[-0.5], [0.5]], precisions_init=[1.0, 1.0], tol=1e-8, max_iter=500).fit(x)
    np.testing.assert_allclose(np.sort(g.means_[:, 0]), [-2.0, 3.0], atol=0.06)


@pytest.mark.parametrize("ct", ["full", "tied", "diag", "spherical"])
def test_one_feature_matches_sklearn(ct):
    rng = np.random.default_rng(1)
    x = np.r_[rng.normal(0, 1, 300), rng.normal(5, 0.5, 200)][:, None]
    init = dict(means_init=[[0.5], [4.0]], weights_init=[0.5, 0.5],
                precisions_init={"full": np.ones((2, 1, 1)), "tied": np.ones((1, 1)), "diag": np.ones((2, 1)),
                                 "spherical": np.ones(2)}[ct])
    sk = SkGMM(2, covariance_type=ct, max_iter=30, tol=0, **init).fit(x)
    g = GaussianMixture(2, covariance_type=ct, max_iter=30, tol=0, **init).fit(x)
    np.testing.assert_allclose(g.means_, sk.means_, rtol=1e-8)
    np.testing.assert_allclose(g.covariances_, sk.covariances_, rtol=1e-8)


def test_hard_assignment_improves_classification_likelihood():
    X, _, _ = make_blobs(n=2000, d=2, k=3, spread=1.5, sep=4.0, seed=2)
    g = GaussianMixture(3, assignment="hard", random_state=0, tol=0, max_iter=15).fit(X)
    lbs = np.array(g.lower_bounds_)
    assert np.all(np.diff(lbs) >= -1e-9)  # classification EM is monotone too
    soft = GaussianMixture(3, random_state=0).fit(X)
    confusion = np.zeros((3, 3))
    np.add.at(confusion, (g.predict(X), soft.predict(X)), 1)
    assert confusion.max(axis=1).sum() / len(X) > 0.95  # the same clusters, up to their order


@pytest.mark.parametrize("ct", ["full", "diag", "spherical"])
def test_collapse_raises_by_default_and_reinit_recovers(ct):
    """A component started on an isolated point collapses onto it (the notes' singularity).

    With reg_covar=0 a full covariance on one point is singular and the fit raises; a
    diagonal or spherical one keeps scikit-learn's (10 eps / nk) μ² > 0 and, as in
    scikit-learn, the fit goes on (and the model's own collapse test still sees it).
    """
    rng = np.random.default_rng(3)
    X = np.vstack([rng.normal(size=(400, 2)), rng.normal(size=(400, 2)) + 6, [[30.0, 30.0]]])
    means = np.array([[0.0, 0.0], [6.0, 6.0], [30.0, 30.0]])
    prec = {"full": np.stack([np.eye(2)] * 3), "diag": np.ones((3, 2)), "spherical": np.ones(3)}[ct]
    kw = dict(covariance_type=ct, means_init=means, weights_init=np.full(3, 1 / 3), precisions_init=prec)
    if ct == "full":  # scikit-learn's diag/spherical M-step keeps a one-point component positive
        with pytest.raises(ValueError, match=r"ill-defined empirical.*Component 2 has a covariance"):
            GaussianMixture(3, reg_covar=0.0, **kw).fit(X)
    g = GaussianMixture(3, reg_covar=0.0, on_collapse="reinit", max_iter=50, **kw).fit(X)
    events = [e for h in g.history_ for e in h["events"]]
    assert events and "component 2 collapsed" in events[0]
    assert np.all(np.isfinite(g.covariances_)) and np.all(g.weights_ > 0.01)
    # with the default reg_covar the collapse is only masked: reinit still catches it
    g2 = GaussianMixture(3, on_collapse="reinit", max_iter=50, **kw).fit(X)
    assert any("component 2 collapsed" in e for h in g2.history_ for e in h["events"])
    assert g2.weights_.min() > 0.01


@pytest.mark.parametrize("ct", ["full", "tied", "diag", "spherical"])
@pytest.mark.parametrize("assignment", ["soft", "hard"])
def test_covariances_with_fixed_means_are_the_scatter_about_those_means(ct, assignment):
    """``update_params`` without "m": the M-step of Σ_k for means held fixed is the scatter
    about those means, Σ_n r_nk (x_n - μ_k)(x_n - μ_k)ᵀ / N_k (it maximises the expected
    log-likelihood for that μ_k), so EM never lowers the likelihood. The scatter about the
    means an update would have given is another matrix, and the likelihood fell with it."""
    rng = np.random.default_rng(4)
    X = np.r_[rng.normal(-1.0, 0.6, (150, 2)), rng.normal(1.5, 1.0, (250, 2))]
    means = np.array([[-2.0, -0.5], [0.5, 2.5]])
    prec = {"full": np.stack([np.eye(2)] * 2), "tied": np.eye(2), "diag": np.ones((2, 2)),
            "spherical": np.ones(2)}[ct]
    g = GaussianMixture(2, covariance_type=ct, update_params="wc", assignment=assignment, means_init=means,
                        weights_init=[0.5, 0.5], precisions_init=prec, max_iter=1, tol=0, reg_covar=0.0).fit(X)
    np.testing.assert_array_equal(g.means_, means)
    # one E-step from the start, then the notes' M-step of Σ about the fixed means
    start = GaussianMixture(2, covariance_type=ct, means_init=means, weights_init=[0.5, 0.5],
                            precisions_init=prec, max_iter=1).fit(X)
    start.means_, start.weights_ = means, np.array([0.5, 0.5])
    start.precisions_cholesky_ = np.linalg.cholesky(prec) if ct in ("full", "tied") else np.sqrt(prec)
    r = start.predict_proba(X)
    if assignment == "hard":
        r = np.eye(2)[r.argmax(1)]
    nk = r.sum(0)
    scatter = np.stack([(r[:, k, None] * (X - means[k])).T @ (X - means[k]) for k in range(2)])
    want = {"full": scatter / nk[:, None, None], "tied": scatter.sum(0) / len(X),
            "diag": np.stack([np.diag(s) for s in scatter]) / nk[:, None],
            "spherical": np.array([np.trace(s) for s in scatter]) / (2 * nk)}[ct]
    np.testing.assert_allclose(g.covariances_, want, rtol=1e-10)
    # and the likelihood never falls
    g = GaussianMixture(2, covariance_type=ct, update_params="wc", assignment=assignment, means_init=means,
                        weights_init=[0.5, 0.5], precisions_init=prec, max_iter=20, tol=0).fit(X)
    assert np.all(np.diff(g.lower_bounds_) >= -1e-10)


@pytest.mark.parametrize("ct", ["full", "diag", "spherical"])
def test_reinit_also_catches_a_component_collapsed_at_the_start(ct):
    """k-means gives an isolated point a cluster of its own, so the start already has a
    component on one point; with reg_covar=0 its covariance is singular. on_collapse="reinit"
    says it re-seeds such a component and goes on: it raised scikit-learn's error instead."""
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 1, (200, 2)), rng.normal(6, 1, (200, 2)), [[40.0, 40.0]]]
    if ct == "full":
        with pytest.raises(ValueError, match=r"ill-defined empirical.*Component 2"):
            GaussianMixture(3, covariance_type=ct, reg_covar=0.0, random_state=0).fit(X)
    g = GaussianMixture(3, covariance_type=ct, reg_covar=0.0, on_collapse="reinit", random_state=0).fit(X)
    events = [e for h in g.history_ for e in h["events"]]
    assert any("at the start" in e for e in g.history_[0]["events"]), events
    assert np.all(np.isfinite(g.covariances_)) and g.weights_.min() > 0.005
    assert np.isfinite(g.score(X))


@pytest.mark.parametrize("init_params", ["k-means++", "random_from_data"])
def test_reinit_says_why_it_cannot_cure_a_start_with_every_component_on_one_row(init_params):
    """These starts put each component on one row: with reg_covar=0 every covariance is singular, and
    reinit, which lends a collapsed component the healthy ones' covariance, has none to lend. The error
    said only scikit-learn's sentence, as if reinit had not been asked for; it says why and what helps."""
    x = np.random.default_rng(0).normal(size=(20, 1))
    with pytest.raises(ValueError, match=r"ill-defined empirical.*Components 0, 1, 2 .*on_collapse=\"reinit\" gives "
                       r"a collapsed component the healthy ones' mean covariance, and none was healthy: increase "
                       r"reg_covar, or start from init_params=\"kmeans\""):
        GaussianMixture(3, init_params=init_params, reg_covar=0.0, on_collapse="reinit", random_state=0).fit(x)


def test_a_fit_that_keeps_reseeding_says_so_when_it_does_not_converge():
    """Two clusters of 100 rows and one far row, K = 3: EM draws a component back onto the far row again
    and again, each re-seed starting the drift anew, so the fit never converges (any seed, any reg_covar).
    Its ConvergenceWarning said only scikit-learn's sentence, as for too small a max_iter; it says what
    happened and what helps. One re-seed (the start's) in a fit stopped early adds nothing. A component left on
    the far row at the end (when it weighs a million rows) is named, and the remedy is not the on_collapse="reinit"
    in use (user-trial-r13: the warning said 'on_collapse="reinit" re-seeds such components' to a fit that had
    re-seeded 50 times); in select_model too."""
    from sklearn.exceptions import ConvergenceWarning

    from daskgmm.fitting.mixture import CollapsedComponentWarning

    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 1, (100, 2)), rng.normal(6, 1, (100, 2)), [[30.0, 30.0]]]
    with pytest.warns(ConvergenceWarning, match=r"^Best performing initialization did not converge\..* "
                      r"on_collapse=\"reinit\" re-seeded a collapsed component \d+ times, the last in iteration "
                      r"\d+ of 40: EM draws a component back onto a point .*fit fewer components"):
        g = GaussianMixture(3, on_collapse="reinit", max_iter=40, random_state=0).fit(X)
    heavy = np.r_[np.ones(200), 1e6]  # the far row weighs a million rows: the fit ends on it
    remedy = ('on_collapse="reinit" was in use and EM drew the component back: fit fewer components, or let one hold '
              'that point (on_collapse="raise" with reg_covar > 0)')
    for fit in (lambda: GaussianMixture(3, on_collapse="reinit", max_iter=40, random_state=0).fit(
                    X, sample_weight=heavy),
                lambda: daskgmm.select_model(X, [3], "full", random_state=0, sample_weight=heavy, max_iter=40,
                                             on_collapse="reinit")):
        with pytest.warns(CollapsedComponentWarning) as said:
            fit()
        (said,) = [str(w.message) for w in said if w.category is CollapsedComponentWarning]
        assert said.endswith(remedy), said
    assert sum("re-seeded at row" in e for h in g.history_ for e in h["events"]) > 2
    with pytest.warns(ConvergenceWarning, match=r"degenerate data\.$"):
        GaussianMixture(3, on_collapse="reinit", max_iter=1, random_state=0).fit(X)


@pytest.mark.parametrize("where", ["start", "iteration"])
def test_a_collapse_error_names_the_remedy_of_the_notes(where):
    """The notes' answer to the singularity is to re-seed the component; the error says
    that on_collapse="reinit" does it, besides scikit-learn's sentence."""
    rng = np.random.default_rng(3)
    X = np.vstack([rng.normal(size=(400, 2)), rng.normal(size=(400, 2)) + 6, [[30.0, 30.0]]])
    kw = {} if where == "start" else dict(means_init=[[0.0, 0.0], [6.0, 6.0], [30.0, 30.0]],
                                          weights_init=np.full(3, 1 / 3), precisions_init=np.stack([np.eye(2)] * 3))
    with pytest.raises(ValueError, match=r"ill-defined empirical.*Component 2 .*on_collapse=\"reinit\" re-seeds"):
        GaussianMixture(3, reg_covar=0.0, random_state=0, **kw).fit(X)


def test_bic_counts_only_the_parameters_the_fit_estimates():
    """The notes' means-only EM (weights and variances fixed to given values) estimates K·D
    numbers: BIC and AIC count those, not the fixed weights and variances. A group that is
    not updated but was estimated by the initialisation (not given) still counts."""
    rng = np.random.default_rng(0)
    x = np.r_[rng.normal(-2.0, 1.0, 300), rng.normal(3.0, 1.0, 200)][:, None]
    n = len(x)
    g = GaussianMixture(2, covariance_type="spherical", update_params="m", weights_init=[0.5, 0.5],
                        means_init=[[-0.5], [0.5]], precisions_init=[1.0, 1.0]).fit(x)
    assert g._n_parameters() == 2
    np.testing.assert_allclose(g.bic(x), -2 * n * g.score(x) + 2 * np.log(n), rtol=1e-12)
    np.testing.assert_allclose(g.aic(x), -2 * n * g.score(x) + 2 * 2, rtol=1e-12)
    # weights fixed but estimated by the k-means start: they count; the fixed given variances do not
    g = GaussianMixture(2, covariance_type="diag", update_params="m", precisions_init=np.ones((2, 1))).fit(x)
    assert g._n_parameters() == 2 + 1
    # every group updated: scikit-learn's count
    g = GaussianMixture(2, covariance_type="diag", precisions_init=np.ones((2, 1))).fit(x)
    assert g._n_parameters() == SkGMM(2, covariance_type="diag").fit(x)._n_parameters() == 5


@pytest.mark.parametrize("ct", ["full", "tied", "diag", "spherical"])
def test_an_empty_component_with_fixed_means_gains_nothing(ct):
    """With no row, a component's scatter about its fixed mean is empty: fixing the means adds
    nothing to its covariance (the M-step's for an empty component), nor to a pooled one."""
    rng = np.random.default_rng(4)
    X = np.r_[rng.normal(-1.0, 0.6, (150, 2)), rng.normal(1.5, 1.0, (250, 2))]
    means = np.array([[-1.0, -1.0], [1.5, 1.5], [500.0, 500.0]])
    prec = {"full": np.stack([np.eye(2)] * 3), "tied": np.eye(2), "diag": np.ones((3, 2)),
            "spherical": np.ones(3)}[ct]
    kw = dict(covariance_type=ct, assignment="hard", weights_init=np.full(3, 1 / 3), max_iter=1, tol=0,
              reg_covar=0.5)
    g = GaussianMixture(3, update_params="c", means_init=means, precisions_init=prec, **kw).fit(X)
    if ct == "tied":  # the two components with rows alone give the same pooled covariance
        two = GaussianMixture(2, update_params="c", means_init=means[:2], precisions_init=prec,
                              **{**kw, "weights_init": [0.5, 0.5]}).fit(X)
        np.testing.assert_allclose(g.covariances_, two.covariances_, rtol=1e-12)
    else:  # the same E-step, so the same empty component as a fit that updates its mean too
        free = GaussianMixture(3, update_params="wmc", means_init=means, precisions_init=prec, **kw).fit(X)
        np.testing.assert_array_equal(g.covariances_[2], free.covariances_[2])


def test_a_collapse_warning_names_a_few_components_and_counts_the_rest():
    """At K = 256 a warning naming every collapsed component ran to thousands of characters (trial r18): it
    names the first eight and says how many more, on how many rows."""
    from daskgmm.fitting.mixture import CollapsedComponentWarning, warn_collapsed

    found = {"": [(j, 1.0 + (j // 3) % 3, False) for j in range(0, 60, 3)]}
    with pytest.warns(CollapsedComponentWarning) as said:
        warn_collapsed(found, 1e-6)
    text = str(said[0].message)
    assert text.startswith("component 0 on 1 row(s), component 3 on 2 row(s), ")
    assert ", component 21 on 2 row(s), and 12 more components, on 1 to 3 row(s) each: fewer rows than" in text
    assert "component 24 " not in text and len(text) < 500, text


def test_a_fit_on_the_singularity_says_so():
    """With the default reg_covar a component on one far row is the notes' singularity, held finite
    by reg_covar only: the fit goes on as scikit-learn's does, and says so; reinit fits do not."""
    from daskgmm.fitting.mixture import CollapsedComponentWarning

    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 1, (200, 2)), rng.normal(6, 1, (200, 2)), [[40.0, 40.0]]]
    with pytest.warns(CollapsedComponentWarning, match=r"^component 2 on 1 row\(s\): fewer rows than its covariance "
                      r"needs, the likelihood's singularity \(held finite by reg_covar=1e-06 only\); "
                      r"on_collapse=\"reinit\" re-seeds such components$"):
        g = GaussianMixture(3, random_state=0).fit(X)
    np.testing.assert_allclose(g.means_[2], [40.0, 40.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error", CollapsedComponentWarning)
        GaussianMixture(3, random_state=0, on_collapse="reinit").fit(X)
        GaussianMixture(2, random_state=0).fit(X)  # no component alone: nothing to say


def test_the_singularity_counts_rows_not_their_weights():
    """A collapse is about how many rows a covariance is estimated from, not their weight. The check took a
    component's share of the weight times the rows: one far row of weight 1e6 among 400 of weight 1 was
    named for the two clusters ('component 1 on 0.0802 row(s), component 2 on 0.0802 row(s)'), and 50 rows
    of weight 1e-6 were 'component 2 on 5.62e-05 row(s)'. The rows are counted now (one pass without the
    weights), whatever the weights' scale; in StudentTMixture and select_model too."""
    from daskgmm import StudentTMixture
    from daskgmm.fitting.mixture import CollapsedComponentWarning

    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 1, (200, 2)), rng.normal(6, 1, (200, 2)), [[40.0, 40.0]]]
    heavy = np.r_[np.ones(400), 1e6]
    one_row = r"^(K=3 full: )?component (\d) on 1 row\(s\): fewer rows than its covariance needs"
    for scale in (1.0, 1e-3):
        with pytest.warns(CollapsedComponentWarning, match=one_row) as said:
            g = GaussianMixture(3, random_state=0).fit(X, sample_weight=heavy * scale)
        j = int(re.match(one_row, str(said[0].message)).group(2))
        np.testing.assert_allclose(g.means_[j], [40.0, 40.0])
    assert g.n_passes_ == g.init_passes_ + g.n_iter_ + 1  # the count's pass
    with pytest.warns(CollapsedComponentWarning, match=one_row):
        StudentTMixture(3, random_state=0).fit(X, sample_weight=heavy)
    with pytest.warns(CollapsedComponentWarning, match=one_row):
        daskgmm.select_model(X, [3], "full", random_state=0, sample_weight=heavy)
    Y = np.r_[X[:400], rng.normal(40, 1, (50, 2))]
    with warnings.catch_warnings():
        warnings.simplefilter("error", CollapsedComponentWarning)
        g = GaussianMixture(3, means_init=[[0, 0], [6, 6], [40, 40]], random_state=0).fit(
            Y, sample_weight=np.r_[np.ones(400), np.full(50, 1e-6)])
    assert g.weights_[2] < 1e-6


def test_the_singularity_leaves_rows_of_weight_zero_uncounted():
    """Rows of weight 0 are no part of the fit, but the warning's count of a component's rows (a pass
    without the weights) took them as rows: 2 rows of weight 1 among 600 were 'component 0 on 392 row(s),
    component 1 on 208 row(s) that are one point'. Each component is on 1 row now."""
    from daskgmm.fitting.mixture import CollapsedComponentWarning

    X = np.random.default_rng(0).normal(size=(600, 2))
    w = np.r_[1.0, 1.0, np.zeros(598)]
    with pytest.warns(CollapsedComponentWarning, match=r"^component 0 on 1 row\(s\), component 1 on 1 row\(s\): "
                      r"fewer rows than its covariance needs"):
        g = GaussianMixture(2, random_state=0).fit(X, sample_weight=w)
    np.testing.assert_allclose(np.sort(g.means_, axis=0), np.sort(X[:2], axis=0))


def test_reinit_in_the_loop_counts_rows_not_their_weights():
    """on_collapse="reinit" re-seeds a component on fewer rows than its covariance needs, counted as the warning
    at the end counts them (rows, their sample weights left out). It judged by the weight share times the rows:
    50 rows of weight 1e-6 were re-seeded ('component 2 collapsed' on 5.6e-05 rows), the one far row of weight
    1e6 was not (400 of the 401 rows' share), and the two 200-row clusters beside it were (0.08 row each)."""
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 1, (200, 2)), rng.normal(6, 1, (200, 2)), [[40.0, 40.0]]]
    means = [[0, 0], [6, 6], [40, 40]]
    start = dict(weights_init=[0.4, 0.4, 0.2], means_init=means, precisions_init=np.stack([np.eye(2)] * 3))
    for scale in (1.0, 1e-3):
        g = GaussianMixture(3, on_collapse="reinit", max_iter=2, **start).fit(
            X, sample_weight=np.r_[np.ones(400), 1e6] * scale)
        assert [e[:22] for e in g.history_[0]["events"]] == ["component 2 collapsed;"], g.history_[0]["events"]
    # at the start too: k-means gives the far row a cluster of its own, the one component re-seeded
    g = GaussianMixture(3, on_collapse="reinit", max_iter=1, random_state=0).fit(
        X, sample_weight=np.r_[np.ones(400), 1e6])
    assert sum("at the start" in e for e in g.history_[0]["events"]) == 1, g.history_[0]["events"]
    Y = np.r_[X[:400], rng.normal(40, 1, (50, 2))]
    fits = {on: GaussianMixture(3, means_init=means, on_collapse=on, random_state=0).fit(
        Y, sample_weight=np.r_[np.ones(400), np.full(50, 1e-6)]) for on in ("raise", "reinit")}
    assert not [e for h in fits["reinit"].history_ for e in h["events"]]
    np.testing.assert_array_equal(fits["reinit"].means_, fits["raise"].means_)


def test_a_component_on_repeated_rows_is_the_singularity_too():
    """Five copies of one row (a saturated patch of an image) draw a component onto that point, its
    covariance reg_covar's: the notes' singularity, however many rows it holds. The fit said nothing (the
    warning counted rows only); it says so now, and that a re-seed does not help. select_model too."""
    from daskgmm.fitting.mixture import CollapsedComponentWarning
    from daskgmm.validation.scan import DegenerateDataWarning

    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 1, (100, 2)), rng.normal(6, 1, (100, 2)), np.tile([[20.0, -5.0]], (5, 1))]
    said = (r"component 2 on 5 row\(s\) that are one point \(its covariance is reg_covar's\), the likelihood's "
            r"singularity \(held finite by reg_covar=1e-06 only%s\); on_collapse=\"reinit\" does not re-seed them")
    for ct in ("full", "diag", "spherical"):
        with pytest.warns(CollapsedComponentWarning, match="^" + said % ""):
            g = GaussianMixture(3, covariance_type=ct, random_state=0).fit(X)
        np.testing.assert_allclose(g.means_[2], [20.0, -5.0])
    with pytest.warns(CollapsedComponentWarning, match=r"^component 0 on 1,500 row\(s\) that are one point"):
        GaussianMixture(3, random_state=0).fit(np.r_[X[:200], np.tile([[20.0, -5.0]], (1500, 1))])  # not 1.5e+03
    with pytest.warns(CollapsedComponentWarning, match="^K=3 diag: " + said % ", which BIC and AIC reward"):
        daskgmm.select_model(X, [3], "diag", random_state=0)
    # with a far row alone as well, each is named for what it is, and reinit for the one it cures
    with pytest.warns(CollapsedComponentWarning, match=r"^component 2 on 1 row\(s\): fewer rows than its covariance "
                      r"needs; component 3 on 5 row\(s\) that are one point .*re-seeds those on too few rows$"):
        GaussianMixture(4, random_state=0).fit(np.r_[X, [[40.0, 40.0]]])
    with warnings.catch_warnings():
        warnings.simplefilter("error", CollapsedComponentWarning)
        GaussianMixture(3, covariance_type="tied", random_state=0).fit(X)  # one shared covariance: no singularity
        GaussianMixture(3, random_state=0).fit(X[:-5])  # three healthy components
        # flat in one direction only (a column constant in the data or a cluster): not a point
        GaussianMixture(2, covariance_type="diag", random_state=0).fit(np.c_[X[:200], np.zeros(200)])
        # data of one point: the scan's warning says it (the point warning said it again, advising fewer
        # components to a fit of one)
        with pytest.warns(DegenerateDataWarning, match="are the same point"):
            GaussianMixture(1).fit(np.ones((20, 2)))
        with pytest.warns(DegenerateDataWarning, match="are the same point"):
            daskgmm.select_model(np.ones((20, 2)), [1], "full")


def test_the_singularity_warning_says_rows_and_reg_covar_as_they_are():
    """1.99996 rows are fewer than the 2 a variance needs: the warning said '2 row(s): fewer rows than its
    covariance needs'; and with reg_covar=0 nothing holds the likelihood finite, which it said reg_covar=0 did
    (seen on 60 components over Old Faithful's eruptions, diag, reinit)."""
    from daskgmm.fitting.mixture import CollapsedComponentWarning, warn_collapsed

    with pytest.warns(CollapsedComponentWarning, match=r"^component 0 on 1\.99996 row\(s\), component 1 on 1\.5 "
                      r"row\(s\): fewer rows than its covariance needs, the likelihood's singularity \(reg_covar=0 "
                      r"does not bound it\); on_collapse"):
        warn_collapsed({"": [(0, 1.99996, False), (1, 1.5, False)]}, 0.0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_dead_component_is_not_called_the_singularity(dtype):
    """A component that no row chooses (hard assignment, started far away) holds no rows: it adds
    nothing to the likelihood, and the singularity's warning does not name it. In float32 too, where
    its weight is float32's 10 eps (it was named, 'component 2 on 1.19e-06 row(s)')."""
    from daskgmm.fitting.mixture import CollapsedComponentWarning

    rng = np.random.default_rng(4)
    X = np.r_[rng.normal(-1.0, 0.6, (150, 2)), rng.normal(1.5, 1.0, (250, 2))].astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CollapsedComponentWarning)
        g = GaussianMixture(3, assignment="hard", means_init=[[-1, -1], [1.5, 1.5], [500, 500]], max_iter=5,
                            weights_init=np.full(3, 1 / 3), precisions_init=np.stack([np.eye(2)] * 3)).fit(X)
    assert g.weights_[2] < 10 * np.finfo(dtype).eps


def test_the_singularity_warning_counts_incomplete_rows_too():
    """Under missing="marginalize" a component's rows are its weight times every row, incomplete ones
    included (the first scan's weight counts complete rows only: healthy components looked collapsed)."""
    from daskgmm.fitting.mixture import CollapsedComponentWarning

    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 1, (40, 6)), rng.normal(5, 1, (40, 6)), rng.normal(-5, 1, (40, 6))]
    X[rng.random(X.shape) < 0.3] = np.nan
    X = X[~np.isnan(X).all(axis=1)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", CollapsedComponentWarning)
        g = GaussianMixture(3, missing="marginalize", random_state=0).fit(X)
    assert g.weights_.min() * len(X) > 6 + 1  # D + 1 rows each: none collapsed


@pytest.mark.parametrize("where", ["start", "iteration"])
def test_reinit_counts_rows_whatever_the_scale_of_sample_weight(where):
    """on_collapse="reinit" takes a component on fewer rows than its covariance needs for collapsed; its
    rows are the responsibility share of the rows, not the weighted sum: with every sample weight 0.01
    (the same fit as without weights) every component of 200 rows looked collapsed, and the fit raised
    'every component collapsed' (in an iteration) or scikit-learn's error (a singleton at the start)."""
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 1, (200, 2)), rng.normal(6, 1, (200, 2))]
    kw = dict(random_state=0, on_collapse="reinit")
    if where == "start":  # k-means gives the far row a cluster of its own, singular with reg_covar=0
        X, kw = np.r_[X, [[40.0, 40.0]]], {**kw, "reg_covar": 0.0}
    fits = [GaussianMixture(3, **kw).fit(X, sample_weight=w) for w in (None, np.full(len(X), 0.01))]
    events = [[e for h in g.history_ for e in h["events"]] for g in fits]
    assert events[0] == events[1]
    assert any("at the start" in e for e in events[0]) == (where == "start")
    np.testing.assert_allclose(fits[1].means_, fits[0].means_, rtol=1e-6)


@pytest.mark.parametrize("model", ["gaussian", "studentt"])
def test_tiny_sample_weights_fit_as_any_scale(model):
    """A maximum-likelihood mixture is the same for any scale of the weights: 400 weights of 1e-18
    (a sum of 4e-16, under the M-step's 10 eps) pulled every mean to the data's mean without a word.
    They are scaled up by a power of two, exactly: weights of 2**-60 give the bits of weights of 1."""
    from daskgmm import StudentTMixture

    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(-5, 1, (200, 2)), rng.normal(5, 1, (200, 2))]
    Model = GaussianMixture if model == "gaussian" else StudentTMixture
    fits = [Model(2, random_state=0).fit(X, sample_weight=np.full(len(X), s)) for s in (1.0, 2.0**-60, 1e-18)]
    for attr in ("means_", "covariances_", "weights_", "lower_bound_"):
        np.testing.assert_array_equal(getattr(fits[1], attr), getattr(fits[0], attr))
        np.testing.assert_allclose(getattr(fits[2], attr), getattr(fits[0], attr), rtol=1e-6)
    assert np.abs(fits[2].means_[:, 0]).min() > 4  # one component at each cluster


@pytest.mark.parametrize("update_params", ["c", "wc"])
def test_reinit_does_not_loop_on_a_collapse_at_a_fixed_mean(update_params):
    """A component whose fixed mean sits on a far row collapses onto it again after every re-seed: a
    re-seed gives it a covariance only, and the E-step puts it back on that row. It was re-seeded at
    every iteration, and the fit 'converged' on the re-seed's borrowed covariance without a word. It
    is re-seeded at the start at most; then the fit ends with the M-step's covariance (held finite by
    reg_covar) and one CollapsedComponentWarning saying why reinit cannot cure it, its rows counted
    from the last update where the weights are held fixed (weight 0.1 x 401 rows said 40 rows)."""
    from daskgmm.fitting.mixture import CollapsedComponentWarning

    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 1, (200, 2)), rng.normal(6, 1, (200, 2)), [[40.0, 40.0]]]
    means, weights = np.array([[0.0, 0.0], [6.0, 6.0], [40.0, 40.0]]), np.array([0.45, 0.45, 0.1])
    kw = dict(update_params=update_params, means_init=means, weights_init=weights, on_collapse="reinit",
              max_iter=30)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        g = GaussianMixture(3, **kw).fit(X)
    collapsed = [w for w in seen if issubclass(w.category, CollapsedComponentWarning)]
    assert len(collapsed) == 1, [str(w.message) for w in seen]
    assert re.search(r"component 2 on 1 row\(s\).*cannot cure it.*holds the means fixed", str(collapsed[0].message))
    events = [e for h in g.history_[1:] for e in h["events"]]
    assert not any("re-seeded" in e for e in events), events
    np.testing.assert_array_equal(g.means_, means)
    assert np.all(np.linalg.eigvalsh(g.covariances_[2]) < 1e-5)  # the M-step's: the row's, plus reg_covar


def test_a_collapse_at_a_fixed_mean_that_is_ill_defined_says_why_reinit_cannot_cure_it():
    """An M-step whose covariance about a fixed mean is not positive definite (reg_covar=0; a far row's
    scatter rounds below zero) raises scikit-learn's collapse error, and says why on_collapse="reinit" does
    not re-seed the component: its mean is held fixed."""
    from daskgmm.kernels.results import SuffStats
    from daskgmm.models.states import MixtureState

    means = np.array([[0.0], [40.0]])
    state = MixtureState.from_covariances(np.array([0.5, 0.5]), means, np.ones((2, 1)), "diag", reg_covar=0.0,
                                          update_params="wc", on_collapse="reinit")
    # component 1 on one row at its fixed mean, its second moment rounded a little below the mean's square
    stats = SuffStats(n=np.array([400.0, 1.0]), s1=np.array([[0.0], [40.0]]), s2=np.array([[400.0], [1600.0 - 1e-9]]),
                      loglik=0.0, weight=401.0, rows=401, shift=np.zeros(1), covariance_type="diag")
    with pytest.raises(ValueError, match=r"Component 1 .*on_collapse=\"reinit\" cannot cure it, as update_params "
                                         r"holds the means fixed"):
        state.update(stats)


@pytest.mark.parametrize("update_params", ["c", "wc"])
def test_reinit_leaves_the_groups_update_params_holds_fixed(update_params):
    """on_collapse="reinit" re-seeds what the M-step updates: a collapsed component whose mean (or weight)
    is held fixed gets the others' mean covariance and keeps its mean (and weight). It moved the fixed mean
    to a worst-explained row (and gave the fixed weights an equal share), at the start and in iterations,
    while bic counted them as no free parameters."""
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 1, (200, 2)), rng.normal(6, 1, (200, 2)), [[40.0, 40.0]]]
    means, weights = np.array([[0.0, 0.0], [6.0, 6.0], [40.0, 40.0]]), np.array([0.45, 0.45, 0.1])
    g = GaussianMixture(3, update_params=update_params, means_init=means, weights_init=weights, reg_covar=0.0,
                        on_collapse="reinit", max_iter=5, tol=0, random_state=0).fit(X)
    events = [e for h in g.history_ for e in h["events"]]
    assert any("component 2 collapsed" in e for e in events), events
    np.testing.assert_array_equal(g.means_, means)
    if "w" not in update_params:
        np.testing.assert_allclose(g.weights_, weights, rtol=1e-12)
    assert np.all(np.isfinite(g.covariances_)) and np.isfinite(g.score(X))


@pytest.mark.parametrize("name", ["GaussianMixture", "StudentTMixture", "BayesianGaussianMixture"])
def test_every_mixture_refuses_too_few_rows_and_a_warm_start_on_other_features(name):
    """The checks before a fit, one for all the mixtures (BaseMixture._fit_rows, _continues): fewer rows than
    components, and a warm start on rows of another width, in scikit-learn's words; a warm start on rows of
    the fitted width continues the model."""
    Model = getattr(daskgmm, name)
    X = np.random.default_rng(0).normal(size=(40, 2))
    with pytest.raises(ValueError, match="Expected n_samples >= n_components but got n_components = 5, n_samples = 3"):
        Model(n_components=5).fit(X[:3])
    warm = Model(n_components=2, max_iter=2, warm_start=True, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # not converged in 2 iterations
        warm.fit(X)
        with pytest.raises(ValueError, match=f"X has 3 features, but the warm-started {name} was fitted with 2"):
            warm.fit(np.c_[X, X[:, :1]])
        means = warm.means_.copy()
        warm.fit(X)
    assert warm.n_init == 1 and not np.array_equal(warm.means_, means)  # from where it stood: the means moved


def test_rows_far_from_the_origin_are_not_called_one_point():
    """1e9 + noise of 1e-4 (distinct rows: float64 resolves 1e-7 there) was warned as "all 600 rows of X are
    the same point" and each column as "one value in every row": the test was a standard deviation under
    1e-12 of the mean. Now a column is constant when its smallest and largest values are equal."""
    import daskgmm
    from daskgmm.validation.scan import DegenerateDataWarning

    rng = np.random.default_rng(0)
    X = 1e9 + 1e-4 * np.r_[rng.normal(0, 1, (300, 2)), rng.normal(8, 1, (300, 2))]
    for est in (daskgmm.KMeans(2, random_state=0), GaussianMixture(2, covariance_type="diag", reg_covar=1e-12,
                                                                   random_state=0)):
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            est.fit(X)
        assert not [str(r.message) for r in record if issubclass(r.category, DegenerateDataWarning)]
    # a constant column stays one, far out, over chunks whose means merge, and under weights
    Xc = np.c_[X, np.full(600, 1e9 + 0.1)]
    for fit in (lambda: daskgmm.KMeans(2, random_state=0).fit(da.from_array(Xc, chunks=(77, 3))),
                lambda: daskgmm.KMeans(2, random_state=0).fit(Xc, sample_weight=rng.uniform(0.1, 3, 600))):
        with pytest.warns(DegenerateDataWarning, match=r"^column\(s\) 2 of X have zero variance"):
            fit()


def test_the_degenerate_data_warning_under_sample_weights_speaks_of_the_rows_of_positive_weight():
    """Rows of weight 0 are no part of the fit: with one row of positive weight among 200 distinct rows the
    warning said "all 200 rows of X are the same point" (user trial r18); it says the rows of positive weight."""
    import daskgmm
    from daskgmm.validation.scan import DegenerateDataWarning

    X = np.random.default_rng(0).normal(size=(200, 2))
    w = np.r_[1.0, np.zeros(199)]
    for est in (GaussianMixture(2, random_state=0), daskgmm.KMeans(2, random_state=0)):
        with pytest.warns(DegenerateDataWarning) as record:
            est.fit(X, sample_weight=w)
        said = [str(r.message) for r in record if issubclass(r.category, DegenerateDataWarning)]
        assert said and said[0].startswith("every row of X of positive sample weight is the same point: "), said
        assert "all 200 rows" not in said[0]
    # a column constant where the weights are: not "one value in every row"
    Xc = np.c_[X[:, 0], np.where(np.arange(200) < 100, 3.0, X[:, 1])]
    with pytest.warns(DegenerateDataWarning, match=r"have zero variance \(one value in every row of positive "
                      r"sample weight\)"):
        GaussianMixture(2, random_state=0).fit(Xc, sample_weight=np.r_[np.ones(100), np.zeros(100)])
    # unweighted, as before
    with pytest.warns(DegenerateDataWarning, match=r"^all 20 rows of X are the same point"):
        GaussianMixture(1).fit(np.ones((20, 2)))


def test_collapse_count_of_rows_ignores_the_weights_scale():
    """With tiny weights (rescaled by a power of two) and some of weight 0, the 0/1 weights of the pass that
    counts a component's rows were multiplied by the scale: 'component 0 on 562,949,953,421,312 row(s)'."""
    from daskgmm import GaussianMixture
    from daskgmm.fitting.mixture import CollapsedComponentWarning

    X = np.random.default_rng(0).normal(size=(600, 2))
    w = np.r_[1e-12, 1e-12, np.zeros(598)]
    with pytest.warns(CollapsedComponentWarning, match=r"^component 0 on 1 row\(s\), component 1 on 1 row\(s\)"):
        GaussianMixture(2, random_state=0).fit(X, sample_weight=w)


def test_scan_min_max_and_complete_merge_in_any_order_and_skip_weight_zero():
    """The scan's per-column smallest and largest values and its count of complete rows: merged in any order
    (an empty chunk too), rows of weight 0 and rows with NaN left out of the count."""
    from daskgmm.kernels import ScanRequest, chunk_pass
    from daskgmm.validation.scan import _constant_columns

    r = ScanRequest()
    a = np.c_[np.full(50, 1e9), np.arange(50.0)]             # column 0 constant within chunk a
    b = np.c_[np.full(50, 1e9 + 1e-3), np.full(50, 7.0)]      # ... and within b, another value
    empty = np.zeros((0, 2))
    wa, wb = np.ones(50), np.r_[np.zeros(49), 1.0]
    parts = [chunk_pass(c, [r], sample_weight=w, row0=i * 50)[0]
             for i, (c, w) in enumerate([(a, wa), (b, wb), (empty, np.zeros(0))])]
    for order in ([0, 1, 2], [2, 1, 0], [1, 2, 0]):
        m = parts[order[0]]
        for i in order[1:]:
            m = r.merge(m, parts[i])
        assert list(_constant_columns(m)) == [] and m.complete == 51
    assert list(_constant_columns(r.merge(parts[1], parts[2]))) == [0, 1]
    x = np.c_[np.full(10, 3.0), np.r_[np.nan, np.arange(9.0)]]
    s = chunk_pass(x, [r], sample_weight=np.r_[1.0, 1.0, np.zeros(8)])[0]
    assert s.complete == 1  # row 0 has a NaN, row 1 alone is complete with positive weight


def test_a_column_that_varies_only_among_incomplete_rows_is_not_constant():
    """Under missing='marginalize' a column's smallest and largest values are taken over its observed values
    (rows of positive weight), not the complete rows only: with one complete row every column was 'constant'
    and the fit warned that all 300 distinct rows were the same point (and took the collapse check's
    reg_covar of one point)."""
    import warnings

    from daskgmm import GaussianMixture
    from daskgmm.validation.scan import DegenerateDataWarning

    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 3)) + np.repeat([[0.0] * 3, [8.0] * 3, [16.0] * 3], 100, axis=0)
    x[np.arange(1, 300), np.arange(1, 300) % 3] = np.nan  # row 0 alone is complete
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        GaussianMixture(1, missing="marginalize", random_state=0).fit(x)
    said = [str(w.message) for w in caught if issubclass(w.category, DegenerateDataWarning)]
    assert not any("same point" in m or "constant" in m for m in said), said


def test_the_far_rows_warning_takes_the_scans_far_columns(monkeypatch):
    """The scan finds the far columns (their sample medians and spreads, 110 ms for 10,485 x 50 weighted rows); the
    warning, for a fit it concerns (a tied covariance), took them again from the sample on every fit (a tied
    mixture of 30,000 x 10 weighted rows: 0.234 s, 0.181 before the merge); now only where the scan found some."""
    from daskgmm.validation import scan as validation_scan

    calls = []
    real = validation_scan.far_columns
    monkeypatch.setattr(validation_scan, "far_columns", lambda *a: calls.append(1) or real(*a))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 2))
    GaussianMixture(2, covariance_type="tied", random_state=0).fit(X)
    assert not calls
    with pytest.warns(Warning, match="a few rows lie far"):
        GaussianMixture(2, covariance_type="tied", random_state=0).fit(np.r_[X, [[1e20, 0.0]] * 5])
    assert len(calls) == 1


def test_rows_far_from_all_others_are_warned_of_where_the_fit_is_still_wrong():
    """An unmasked fill value (1e20 among values near 1) pulled the mean so far that the passes, shifting every
    row by it, lost the other rows' precision: KMeans grouped them as one cluster with an inertia of 0, silently
    (scikit-learn's too). The passes now shift those columns by the sample's median, and KMeans says nothing; a
    tied covariance, still swamped there (scikit-learn's term), is warned of: a DegenerateDataWarning names the
    columns, what remains and what to do. Ordinary data, data far from the origin and a moderate outlier say
    nothing."""
    from daskgmm.validation.scan import DegenerateDataWarning

    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 1, (300, 2)), rng.normal(8, 1, (300, 2)), [[1e20, 1e20]] * 5]
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateDataWarning)
        KMeans(3, random_state=0).fit(X)
    with pytest.warns(DegenerateDataWarning, match=r"column\(s\) 0, 1 of X: a few rows lie far from all others "
                                                    r"\(the farthest of them: mean 8.26e\+17, median .*values up to "
                                                    r"1e\+20.*but a tied covariance pools"):
        GaussianMixture(3, covariance_type="tied", random_state=0).fit(X)
    with pytest.warns(DegenerateDataWarning, match=r"column\(s\) 0 of X: a few rows lie far from all others "
                                                    r"\(mean 8.26e\+17, median .*values up to 1e\+20"):
        GaussianMixture(3, covariance_type="tied", random_state=0).fit(X[:, :1])
    for Y in (rng.normal(1e9, 1e-4, (600, 3)), rng.normal(0, 1, (600, 3)) * [1, 1e6, 1e-6],
              np.r_[rng.normal(0, 1, (600, 2)), [[1e3, 1e3]]]):
        with warnings.catch_warnings():
            warnings.simplefilter("error", DegenerateDataWarning)
            GaussianMixture(2, random_state=0).fit(Y)
            GaussianMixture(2, random_state=0).fit(da.from_array(Y, chunks=200))
    # found by review: a tight cluster beside a wide one (probabilities near 0 beside others) is not a few far rows,
    # and a weighted table whose weight sits at its far value has its median there
    n = 5000
    p = np.where(rng.random(n) < 0.7, 10 ** rng.uniform(-14, -8, n), rng.uniform(0.2, 1, n))
    tight = np.where(rng.random(n) < 0.6, 1e-9 * rng.normal(size=n), 1 + 0.1 * rng.normal(size=n))
    table = np.r_[1 + 1e-7 * rng.normal(size=99), 100.0]
    for Y, w in ((np.c_[p, rng.normal(size=n)], None), (np.c_[tight, rng.normal(size=n)], None),
                 (np.c_[table, rng.normal(size=100)], np.r_[np.ones(99), 1e6])):
        with warnings.catch_warnings():
            warnings.simplefilter("error", DegenerateDataWarning)
            # KMeans warns of none now: the robust shift it would keep says whether the scan found far columns
            assert KMeans(2, random_state=0, n_init=1).fit(Y, sample_weight=w)._shift is None
