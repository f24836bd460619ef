"""KMeans: batch Lloyd against scikit-learn, sequential updates, the API."""

import warnings

import dask.array as da
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.cluster import KMeans as SkKMeans

import daskgmm
from daskgmm import KMeans

from .conftest import far_rows, make_blobs


@pytest.mark.parametrize("k", [2, 3, 4])
def test_inertia_matches_sklearn_on_old_faithful(faithful, k):
    ours = KMeans(k, n_init=10, random_state=0).fit(faithful)
    sk = SkKMeans(k, n_init=10, random_state=0).fit(faithful)
    assert abs(ours.inertia_ - sk.inertia_) <= 0.01 * sk.inertia_
    # inertia_ is that of the final centres and labels
    d2 = ((faithful - ours.cluster_centers_[ours.labels_]) ** 2).sum()
    np.testing.assert_allclose(ours.inertia_, d2, rtol=1e-10)


def test_same_lloyd_steps_as_sklearn_from_same_centres():
    X, _, _ = make_blobs(n=3000, d=3, k=4, sep=3.0, spread=1.5)
    start = X[:4]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for it in (1, 3, 10):
            ours = KMeans(4, init=start, max_iter=it, tol=0.0).fit(X)
            sk = SkKMeans(4, init=start, n_init=1, max_iter=it, tol=0.0, algorithm="lloyd").fit(X)
            np.testing.assert_allclose(ours.cluster_centers_, sk.cluster_centers_, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(ours.inertia_, sk.inertia_, rtol=1e-10)
    # tol=0 stops where the labels stop changing (the centres then move by exactly 0: scikit-learn's
    # "strict convergence"), at the same iteration, not at max_iter
    ours = KMeans(4, init=start, max_iter=300, tol=0.0).fit(X)
    sk = SkKMeans(4, init=start, n_init=1, max_iter=300, tol=0.0, algorithm="lloyd").fit(X)
    assert ours.n_iter_ == sk.n_iter_ < 300


@pytest.mark.parametrize("init", ["k-means||", "k-means++", "random"])
def test_inits_find_separated_clusters_and_do_not_depend_on_chunking(init):
    X, _, _ = make_blobs(n=4000, d=2, k=5, sep=10.0, seed=4)
    a = KMeans(5, init=init, random_state=1, tol=0.0).fit(X)
    b = KMeans(5, init=init, random_state=1, tol=0.0).fit(da.from_array(X, chunks=(333, 2)))
    np.testing.assert_allclose(a.cluster_centers_, b.cluster_centers_, rtol=1e-10)
    sk = SkKMeans(5, n_init=10, random_state=0, tol=0.0).fit(X)
    assert a.inertia_ <= 1.01 * sk.inertia_
    assert isinstance(b.labels_, da.Array)
    np.testing.assert_array_equal(b.labels_.compute(), a.labels_)


@pytest.mark.parametrize("init", ["k-means||", "k-means++"])
def test_rows_at_a_fill_value_leave_the_other_clusters_their_precision(init):
    """5 rows at an unmasked fill value of 1e20 among 600 near 0 and 8: every pass shifted the rows by the mean
    (8.3e17), and KMeans put the 600 in one cluster with an inertia of 0 (adjusted Rand 0.03; scikit-learn's
    too). The passes shift that column by the sample's median now, the starts take the distances the expansion
    cancels from the differences (else k-means++ drew the far rows twice), the passes measure each row against
    each centre, and predictions keep the fit's shift: the three clusters, NumPy and Dask rows alike, and an
    inertia_, history and score that are the rows' own (the expansion's noise was 6e24), with no warning."""
    from sklearn.metrics import adjusted_rand_score

    from daskgmm.validation.scan import DegenerateDataWarning

    X, labels = far_rows()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateDataWarning)
        a = KMeans(3, init=init, random_state=0).fit(X)
        b = KMeans(3, init=init, random_state=0).fit(da.from_array(X, chunks=(101, 2)))
    assert adjusted_rand_score(labels, a.labels_) == 1.0
    np.testing.assert_array_equal(b.labels_.compute(), a.labels_)
    np.testing.assert_array_equal(a.predict(X), a.labels_)
    np.testing.assert_array_equal(a.predict(da.from_array(X, chunks=(200, 2))).compute(), a.labels_)
    np.testing.assert_allclose(b.cluster_centers_, a.cluster_centers_, rtol=1e-10)
    inertia = ((X - a.cluster_centers_[a.labels_]) ** 2).sum()
    np.testing.assert_allclose([a.inertia_, b.inertia_, -a.score(X)], inertia, rtol=1e-9)
    assert all(h["inertia"] < 1e4 for h in a.history_)  # of the centres before each step


def test_partial_fit_of_an_in_memory_batch_with_rows_at_a_fill_value():
    """KMeans.partial_fit's first batch in memory (NumPy) was not scanned, so it kept no robust shift: k-means++ and
    the statistics about the mean (8.3e17) put the 600 rows in one cluster (adjusted Rand 0.03) where the same rows
    as a Dask batch gave the three. An in-memory dense batch is scanned too now, and keeps the Dask batch's shift."""
    from sklearn.metrics import adjusted_rand_score

    X, labels = far_rows()
    a = KMeans(3, random_state=0).partial_fit(X)
    b = KMeans(3, random_state=0).partial_fit(da.from_array(X, chunks=(101, 2)))
    assert adjusted_rand_score(labels, a.predict(X)) == 1.0
    np.testing.assert_allclose(a._shift, b._shift, rtol=1e-12)
    np.testing.assert_array_equal(a.predict(X), b.predict(X))


def test_score_of_sparse_rows_under_a_fit_with_a_robust_shift():
    """A KMeans fitted on dense rows at a fill value keeps a robust shift, and its score took the per-component
    form, which a pass over sparse rows refuses: score(sparse X) raised "only KMeans fits sparse rows" (a TypeError,
    from KMeans itself). Sparse rows are scored in the form their pass knows, about the kept shift."""
    import scipy.sparse as sp

    X, _ = far_rows()
    km = KMeans(3, random_state=0).fit(X)
    assert km._shift is not None
    np.testing.assert_allclose(km.score(sp.csr_matrix(X)), km.score(X), rtol=0.01)
    np.testing.assert_array_equal(km.predict(sp.csr_matrix(X)), km.labels_)


def test_tol_0_converges_on_rows_at_a_fill_value():
    """tol=0 stops where the labels stop changing (scikit-learn's strict convergence): the centres then stop moving.
    On rows at a fill value the passes take each row's distance to each centre, and the update ``c + Σ (x - c) / n``
    has no exact fixed point: the centres moved by an ulp each step (squared moves of 1e-32), and KMeans ran to
    max_iter. A step that moves every centre by its rounding only is converged."""
    X, _ = far_rows()
    a = KMeans(3, random_state=0, n_init=1, tol=0, max_iter=50).fit(X)
    assert a.n_iter_ < 10
    b = KMeans(3, random_state=0, n_init=1, tol=0, max_iter=a.n_iter_ + 10).fit(X)
    np.testing.assert_allclose(b.cluster_centers_, a.cluster_centers_, rtol=1e-12, atol=1e-12)


def test_predict_transform_score_against_sklearn():
    X, _, _ = make_blobs(n=2000, d=3, k=3)
    ours = KMeans(3, random_state=0).fit(X)
    sk = SkKMeans(3, init=ours.cluster_centers_, n_init=1, max_iter=1).fit(X)
    sk.cluster_centers_ = ours.cluster_centers_
    np.testing.assert_array_equal(ours.predict(X), sk.predict(X))
    np.testing.assert_allclose(ours.transform(X), sk.transform(X), rtol=1e-10)
    np.testing.assert_allclose(ours.score(X), sk.score(X), rtol=1e-10)
    lazy = ours.transform(da.from_array(X, chunks=(500, 3)))
    np.testing.assert_allclose(lazy.compute(), ours.transform(X), rtol=1e-12)
    np.testing.assert_array_equal(ours.fit_predict(X), ours.labels_)
    np.testing.assert_allclose(ours.fit_transform(X), ours.transform(X))
    with pytest.raises(ValueError, match="X has 2 features, but KMeans is expecting 3"):
        ours.predict(X[:, :2])


def test_sample_weight_counts_as_repeated_rows():
    X, _, _ = make_blobs(n=500, d=2, k=2, sep=8.0)
    w = np.r_[np.full(250, 3.0), np.ones(250)]
    start = X[[0, 300]]
    a = KMeans(2, init=start).fit(X, sample_weight=w)
    b = KMeans(2, init=start).fit(np.vstack([X[:250], X[:250], X]))
    np.testing.assert_allclose(a.cluster_centers_, b.cluster_centers_, rtol=1e-10)
    np.testing.assert_allclose(a.inertia_, b.inertia_, rtol=1e-10)


def test_bad_sample_weight_is_refused_with_scikit_learns_sentence_by_every_method():
    """In-memory weights are checked before any pass, scikit-learn's sentence first, then the count and the
    first row; partial_fit on an in-memory batch took NaN, infinite, negative, 2-D and all-zero weights
    silently (NaN centres or none moved; a Dask batch was refused) (user-trial-10)."""
    X = np.r_[np.zeros((6, 2)), np.ones((6, 2))]
    km = KMeans(2, init=X[[0, 6]]).fit(X)

    def weights(value, row=3):
        w = np.ones(len(X))
        w[row] = value
        return w

    cases = [
        (weights(np.nan), r"^Input sample_weight contains NaN\. sample_weight holds 1 NaN value\(s\), the first "
                          r"at row 3; KMeans takes finite non-negative weights\.$"),
        (weights(np.inf), r"^Input sample_weight contains infinity or a value too large for dtype\('float64'\)\. "
                          r"sample_weight holds 1 infinite"),
        (weights(-1.0, 5), r"^Negative values in data passed to `sample_weight`\. sample_weight holds 1 negative "
                           r"value\(s\), the first at row 5"),
        (np.ones((len(X), 1)), r"^Sample weights must be 1D array or scalar, got 2D array\. Expected either a scalar "
                               r"value or a 1D array of length 12\.$"),
        (np.ones(5), r"^sample_weight\.shape == \(5,\), expected \(12,\)!$"),
        (np.zeros(len(X)), r"^Sample weights must contain at least one non-zero number\. KMeans got"),
        # finite weights whose sum overflows: NumPy's "Probabilities do not sum to 1" from the start's draw,
        # and NaN centres from partial_fit
        (np.full(len(X), 1e308), r"^KMeans got sample_weight whose sum overflows float64 \(every weight is finite, "
                                 r"their sum is inf\); divide the weights by a constant$"),
    ]
    calls = [lambda w: clone(km).fit(X, sample_weight=w), lambda w: km.score(X, sample_weight=w),
             lambda w: clone(km).partial_fit(X, sample_weight=w), lambda w: clone(km).partial_fit(X).partial_fit(
                 X, sample_weight=w), lambda w: clone(km).fit(da.from_array(X, chunks=5), sample_weight=w)]
    for w, match in cases:
        for call in calls:
            with pytest.raises(ValueError, match=match):
                call(w)
    online = clone(km).partial_fit(X, sample_weight=2.0)  # a scalar weights every row, as in fit
    np.testing.assert_array_equal(online.counts_, [12.0, 12.0])
    with pytest.raises(ValueError, match=r"^Input sample_weight contains NaN\. .*GaussianMixture takes"):
        daskgmm.GaussianMixture(2).fit(X, sample_weight=weights(np.nan))
    for w in (np.full(len(X), 1e308), da.from_array(np.full(len(X), 1e308), chunks=5)):
        with pytest.raises(ValueError, match=r"^GaussianMixture got sample_weight whose sum overflows float64"), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # NumPy's own, about the scan's sums of Dask weights
            daskgmm.GaussianMixture(2).fit(da.from_array(X, chunks=5) if hasattr(w, "dask") else X, sample_weight=w)


def test_partial_fit_is_the_sequential_update_and_close_to_batch():
    X, _, _ = make_blobs(n=20000, d=3, k=5, seed=3)
    batch = KMeans(5, random_state=0).fit(X)
    online = KMeans(5, random_state=0)
    for a in range(0, 20000, 1000):
        online.partial_fit(X[a : a + 1000] if a % 2000 else da.from_array(X[a : a + 1000], chunks=(400, 3)))
    assert online.n_steps_ == 20 and online.counts_.sum() == 20000
    assert -online.score(X) <= 1.02 * batch.inertia_
    # one row at a time, the update is exactly mu <- mu + (x - mu) / n_k
    seq = KMeans(2, init=np.array([[0.0, 0.0], [10.0, 10.0]]))
    rows = np.array([[1.0, 1.0], [9.0, 9.0], [3.0, 1.0], [11.0, 8.0], [2.0, 4.0]])
    mu = np.array([[0.0, 0.0], [10.0, 10.0]])
    n = np.zeros(2)
    for r in rows:
        seq.partial_fit(r[None, :])
        k = int(np.argmin(((mu - r) ** 2).sum(axis=1)))
        n[k] += 1
        mu[k] += (r - mu[k]) / n[k]
        np.testing.assert_allclose(seq.cluster_centers_, mu, rtol=1e-12)
    with pytest.raises(ValueError, match="expecting 2 features"):
        seq.partial_fit(np.zeros((3, 3)))
    # another n_clusters kept the fitted centres silently, as scikit-learn's MiniBatchKMeans (user-trial-10)
    with pytest.raises(ValueError, match=r"^KMeans.partial_fit continues the fitted model, which has 2 centres, but "
                                         r"the parameters say n_clusters=3\. Fit a new model"):
        seq.set_params(n_clusters=3).partial_fit(rows)
    # a model file said n_clusters=3 beside 2 centres: it did not load
    with pytest.raises(ValueError, match=r"^KMeans was fitted with 2 centres, but its parameters say n_clusters=3"):
        seq.export_state()


def test_kmeans_api_and_errors(tmp_path):
    X, _, _ = make_blobs(n=300, d=2, k=3)
    km = KMeans(3, random_state=0)
    assert clone(km).get_params() == km.get_params()
    with pytest.raises(daskgmm.NotFittedError):
        km.predict(X)
    with pytest.raises(ValueError, match="n_samples=2 should be >= n_clusters=3"):
        km.fit(X[:2])
    with pytest.raises(ValueError, match="'init' parameter of KMeans"):
        KMeans(3, init="kmeans++").fit(X)
    with pytest.raises(ValueError, match="does not match the number of clusters"):
        KMeans(3, init=X[:2]).fit(X)
    # scikit-learn's check_array sentence, then where: a NaN centre took no row, silently (user-trial-10)
    nan_start = X[:3].copy()
    nan_start[2, 1] = np.nan
    for init in (nan_start, lambda X, k, random_state: nan_start):
        with pytest.raises(ValueError, match=r"^Input contains NaN\. init holds 1 non-finite value\(s\), "
                                             r"in centre\(s\) 2\.$"):
            KMeans(3, init=init).fit(X)
    with pytest.raises(ValueError, match=r"^Input contains infinity or a value too large for dtype\('float64'\)\. "
                                         r"init holds"):
        KMeans(3, init=np.where(np.isnan(nan_start), np.inf, nan_start)).partial_fit(X)
    with pytest.raises(ValueError, match="contains NaN"):
        KMeans(2).fit(np.array([[1.0, np.nan], [0.0, 1.0], [2.0, 2.0]]))
    km.fit(X)
    assert km.cluster_centers_.shape == (3, 2) and km.n_iter_ >= 1 and len(km.history_) == km.n_iter_
    km.save(tmp_path / "km")
    back = daskgmm.load(tmp_path / "km")
    assert isinstance(back, KMeans)
    np.testing.assert_array_equal(back.predict(X), km.predict(X))
    assert back.inertia_ == km.inertia_


def test_fit_and_partial_fit_leave_the_init_array_and_earlier_centres_alone():
    # scikit-learn's rule: an estimator never modifies its parameters (the sequential update
    # once updated the centres in place, and the first batch's centres were the init array)
    X = np.random.RandomState(0).randn(200, 2)
    init = np.array([[0.0, 0.0], [1.0, 1.0]])
    km = KMeans(2, init=init, n_init=1).partial_fit(X[:100])
    before = km.cluster_centers_
    kept = before.copy()
    km.partial_fit(X[100:])
    np.testing.assert_array_equal(init, [[0.0, 0.0], [1.0, 1.0]])
    np.testing.assert_array_equal(before, kept)
    assert not np.array_equal(km.cluster_centers_, kept)
    KMeans(2, init=init, n_init=1).fit(X)
    np.testing.assert_array_equal(init, [[0.0, 0.0], [1.0, 1.0]])


def test_partial_fit_after_fit_drops_the_fits_labels_and_inertia():
    """The fit's labels_, inertia_, n_iter_ and history_ describe its rows under centres that a batch moves:
    they go (they stayed, silently stale), and score gives a batch's inertia under the new centres."""
    X = np.random.RandomState(1).randn(300, 2) + np.repeat([[0, 0], [5, 5], [0, 5]], 100, axis=0)
    km = KMeans(3, random_state=0).fit(X)
    assert hasattr(km, "labels_") and hasattr(km, "inertia_")
    km.partial_fit(X[:50] + 1.0)
    for stale in ("labels_", "inertia_", "n_iter_", "history_"):
        assert not hasattr(km, stale), stale
    assert km.score(X) < 0 and km.predict(X).shape == (300,)


def test_transform_is_in_the_wider_of_the_rows_and_centres_dtypes():
    """As scikit-learn's (and dask-ml's dtype test): float32 rows after a float64 fit give float64
    distances, float64 rows after a float32 fit too, float32 after float32 stays float32."""
    import scipy.sparse as sp

    X, _, _ = make_blobs(n=600, d=3, k=3)
    km64 = KMeans(3, random_state=0).fit(X)
    km32 = KMeans(3, random_state=0).fit(X.astype(np.float32))
    assert km32.cluster_centers_.dtype == np.float32
    for km, rows, want in [(km64, X.astype(np.float32), np.float64), (km32, X, np.float64),
                           (km32, X.astype(np.float32), np.float32), (km64, X, np.float64)]:
        for data in (rows, da.from_array(rows, chunks=(200, 3)), sp.csr_matrix(rows)):
            out = km.transform(data)
            assert out.dtype == want, (type(data), rows.dtype, km.cluster_centers_.dtype, out.dtype)
            np.testing.assert_allclose(np.asarray(out.compute() if hasattr(out, "compute") else out),
                                       km64.transform(X), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("algorithm", ["lloyd", "elkan"])
def test_same_lloyd_steps_as_sklearn_far_from_the_origin(algorithm):
    # k-means' constants -|c|^2 pass 1e30 here: the constant's floor must lie below them
    X, _, _ = make_blobs(n=3000, d=3, k=4, sep=3.0, spread=1.5)
    X = X * 1e15
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = KMeans(4, init=X[:4], max_iter=5, tol=0.0, algorithm=algorithm).fit(X)
        sk = SkKMeans(4, init=X[:4], n_init=1, max_iter=5, tol=0.0, algorithm="lloyd").fit(X)
    np.testing.assert_allclose(ours.cluster_centers_, sk.cluster_centers_, rtol=1e-10)
    np.testing.assert_allclose(ours.inertia_, sk.inertia_, rtol=1e-10)


def test_score_and_a_later_partial_fit_batch_take_one_pass(monkeypatch):
    """score and a later partial_fit batch check values and weights in the pass of their statistics: one
    pass (there were two, a scan and then the statistics), the same numbers; bad weights still raise."""
    from daskgmm.engine.passes import ChunkedData

    X, _, _ = make_blobs(n=1200, d=3, k=3, seed=2)
    km = KMeans(3, random_state=0).fit(X)
    lazy = da.from_array(X, chunks=(300, 3))
    w = np.linspace(0.5, 2.0, 1200)
    ref_score = km.score(X, sample_weight=w)
    ref = KMeans(3, init=km.cluster_centers_).partial_fit(X).partial_fit(X[:600], sample_weight=w[:600])
    passes = []
    run = ChunkedData.run

    def counted(self, requests, centre=None):
        passes.append([type(r).__name__ for r in requests])
        return run(self, requests, centre)

    monkeypatch.setattr(ChunkedData, "run", counted)
    np.testing.assert_allclose(km.score(lazy, sample_weight=da.from_array(w, chunks=300)), ref_score, rtol=1e-12)
    assert passes == [["ScanRequest", "MixtureRequest"]]
    online = KMeans(3, init=km.cluster_centers_).partial_fit(X)
    passes.clear()
    online.partial_fit(lazy[:600], sample_weight=w[:600])
    assert passes == [["ScanRequest", "MixtureRequest"]]
    np.testing.assert_allclose(online.cluster_centers_, ref.cluster_centers_, rtol=1e-12)
    np.testing.assert_array_equal(online.counts_, ref.counts_)
    bad = w.copy()
    bad[7] = -1.0
    bad[400] = np.nan
    bad = da.from_array(bad, chunks=300)  # Dask weights: the scan in the pass counts them (in-memory: checked first)
    for call in (lambda: km.score(lazy, sample_weight=bad), lambda: online.partial_fit(lazy, sample_weight=bad)):
        # scikit-learn's sentence of the worst kind, then each kind's count, in the words of in-memory weights
        # (was 'sample_weight has 2 negative or non-finite value(s).'; user-trial-10)
        with pytest.raises(ValueError, match=r"^Input sample_weight contains NaN\. sample_weight holds 1 NaN and 1 "
                                             r"negative value\(s\), the first at row 7; KMeans takes"):
            call()


def test_resolve_n_init_is_scikit_learns_auto_and_one_for_given_centres():
    """n_init="auto" is 1 for "k-means||", "k-means++" and given centres, 10 for "random" and a callable (as
    scikit-learn's); an int is taken, except with given centres (one start; KMeans.fit warns once)."""
    from daskgmm.fitting.kmeans import resolve_n_init

    centres = np.zeros((2, 2))

    def start(X, k, random_state):
        return X[:k]

    expected = [("auto", "k-means||", 1), ("auto", "k-means++", 1), ("auto", "random", 10), ("auto", start, 10),
                ("auto", centres, 1), (3, "k-means++", 3), (3, "random", 3), (4, start, 4), (3, centres, 1),
                (1, centres, 1)]
    for n_init, init, n in expected:
        assert resolve_n_init(n_init, init) == n, (n_init, init)
    X, _, _ = make_blobs(n=200, d=2, k=2)
    with pytest.warns(RuntimeWarning, match="performing only one init in KMeans instead of n_init=3") as record:
        KMeans(2, init=X[:2], n_init=3).fit(X)
    assert sum("performing only one init" in str(w.message) for w in record) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        KMeans(2, init=X[:2], n_init=1).fit(X)


def test_fit_progress_and_verbose_lines_have_no_change_on_the_first_iteration(capsys):
    """KMeans.fit(progress=) and GaussianMixture's verbose lines: the first iteration has no previous
    objective, so no change (None in the history; GaussianMixture(verbose=2) printed "ll change inf")."""
    X, _, _ = make_blobs(n=600, d=2, k=3, seed=1)
    seen = []
    KMeans(3, random_state=0, max_iter=3, tol=0.0).fit(
        X, progress=lambda event, **info: seen.append([r.history[-1]["change"] for r in info["runs"]])
        if event == "iteration" else None)
    assert seen[0] == [None] and all(c is not None and np.isfinite(c) for c in seen[1] + seen[2]), seen
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", daskgmm.ConvergenceWarning)
        gm = daskgmm.GaussianMixture(3, random_state=0, max_iter=3, tol=0.0, verbose=2, verbose_interval=1).fit(X)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "Iteration" in ln]
    assert len(lines) == 3 and "change" not in lines[0] and "ll change" in lines[1], lines
    assert "inf" not in "".join(lines)
    assert gm.history_[0]["change"] is None and np.isfinite(gm.history_[1]["change"])
    online = daskgmm.GaussianMixture(3, random_state=0).partial_fit(X).partial_fit(X)
    assert online.history_[0]["change"] is None and np.isfinite(online.history_[1]["change"])


def test_reaching_max_iter_warns_as_scikit_learns_kmeans_does_not_at_all():
    """scikit-learn's KMeans stops at max_iter without a ConvergenceWarning; a drop-in does the same
    (code run with warnings as errors would break on the swap)."""
    import warnings

    from sklearn.cluster import KMeans as SkKMeans

    from daskgmm import KMeans

    X = np.random.default_rng(0).normal(size=(2000, 4))
    for cls in (SkKMeans, KMeans):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            km = cls(n_clusters=8, n_init=1, max_iter=2, tol=0.0, random_state=0).fit(X)
        assert km.n_iter_ == 2, cls


@pytest.mark.parametrize("kernel", ["compiled", "numpy"])
def test_rows_whose_squared_distances_overflow_are_refused_not_put_in_one_cluster(kernel, monkeypatch):
    """float32 rows near 1e19: their squares overflow float32, every logit of a row is NaN (or inf), and the fit
    put every row in cluster 0 with an inertia of 0 (the core) or inf (NumPy). A ValueError names it."""
    from daskgmm.kernels import compiled

    if kernel == "numpy":
        monkeypatch.setenv("DASKGMM_KERNEL", "numpy")
        compiled.reset()
    X = np.random.default_rng(0).normal(size=(400, 16)).astype(np.float32) * np.float32(1e19)
    try:
        with pytest.raises(ValueError, match="squared distances overflow the rows' floating-point type"), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # NumPy's own about the overflow in its matmul
            KMeans(4, n_init=1, random_state=0).fit(X)
        np.testing.assert_allclose(KMeans(4, n_init=1, random_state=0, max_iter=5).fit(X.astype(np.float64)).inertia_,
                                   ((X.astype(np.float64) - X.mean(0, dtype=np.float64)) ** 2).sum(), rtol=0.5)
    finally:
        monkeypatch.undo()
        compiled.reset()


def test_float64_rows_whose_squares_overflow_are_named_so_for_a_mixture_too():
    """float64 rows near 1e160 (squares beyond 1.8e308) fail a mixture's k-means start: the message said
    "KMeans: ..." and advised float64 for rows already float64 (scikit-learn's GaussianMixture fails in SciPy,
    "array must not contain infs or NaNs"). One such row among ordinary ones is far from all others: its column is
    shifted by the sample's median and its distances taken from the differences, so KMeans and the mixture fit it a
    cluster of its own, with the compiled core and on NumPy's path alike (the core's expansion in the start's
    local Lloyd overflowed and put it with 29 others: the mixture then failed on the core only, "the inertia is
    not finite", which CI's NumPy pass caught)."""
    X = np.random.default_rng(0).normal(size=(60, 2))
    with pytest.raises(ValueError, match=r"^k-means: the inertia is not finite .*float64 up to 1\.8e308, "
                                         r"near 1\.3e154\); fit float32 rows as float64"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        daskgmm.GaussianMixture(2, random_state=0).fit(X * 1e160)
    X[1, 0] = 1e300
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        km = KMeans(2, random_state=0).fit(X)
        gm = daskgmm.GaussianMixture(2, random_state=0).fit(X)
    assert np.flatnonzero(km.labels_ == km.labels_[1]).tolist() == [1]
    assert np.flatnonzero(gm.predict(X) == gm.predict(X[1:2])[0]).tolist() == [1]
    rest = np.delete(X, 1, axis=0)
    np.testing.assert_allclose(km.inertia_, ((rest - rest.mean(axis=0)) ** 2).sum(), rtol=1e-9)


@pytest.mark.behaviour
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # one iteration: a model to predict
@pytest.mark.filterwarnings("ignore::daskgmm.fitting.mixture.CollapsedComponentWarning")
def test_labels_of_dense_rows_take_blocks_not_an_n_by_k_matrix(monkeypatch):
    """KMeans.predict (and fit's labels_) of NumPy rows made every row's K logits at once: 1M rows of 2
    features and 256 centres took 2 GB and 4.5 s where scikit-learn's took 13 MB and 0.2 s (user trial r18).
    The rows are labelled by blocks, as sparse rows were, with the bits of the whole. So are a mixture's
    labels and log-densities (score_samples), whose one value per row needs no (N, K) matrix either
    (predict_proba's output is one)."""
    import tracemalloc

    import daskgmm.kernels.predict
    from daskgmm import GaussianMixture

    rng = np.random.default_rng(0)
    X = rng.standard_normal((120_000, 2))
    km = KMeans(256, init=X[:256], n_init=1, max_iter=1).fit(X[:2000])
    gm = GaussianMixture(256, covariance_type="diag", means_init=X[:256], max_iter=1).fit(X[:2000])
    runs = {"KMeans.predict": lambda: km.predict(X), "GaussianMixture.predict": lambda: gm.predict(X),
            "GaussianMixture.score_samples": lambda: gm.score_samples(X)}
    n_by_k = X.shape[0] * 256 * 8  # 245 MB
    blocked = {}
    for what, run in runs.items():
        tracemalloc.start()
        try:
            blocked[what] = run()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < n_by_k / 4, f"{what} peaked at {peak / 2**20:.0f} MiB"
    assert blocked["KMeans.predict"].dtype == np.int32
    monkeypatch.setattr(daskgmm.kernels.predict, "LOGIT_BLOCK_BYTES", 1 << 40)  # the whole at once
    for what, run in runs.items():
        np.testing.assert_array_equal(blocked[what], run(), err_msg=what)


def test_labels_of_a_dask_frame_computed_at_once_after_the_fit_log_nothing(process_client):
    """``KMeans().fit(ddf).labels_.compute()`` under a distributed client logged distributed's "Detected
    different `run_spec`" ("can cause failures and deadlocks") on most fits: ``labels_`` was built from X
    validated (and its partitions counted) once more, while the fit's chunks were being released; from the rows
    the fit validated, as ``KMedoids``' labels, it never did (a trial with scikit-learn's workflows)."""
    import logging

    import dask.dataframe as dd
    import pandas as pd

    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("distributed.scheduler")
    logger.addHandler(handler)
    X, _, _ = make_blobs(n=1000, d=3, k=2, seed=3)
    try:
        with process_client.as_current():
            for i in range(4):
                frame = dd.from_pandas(pd.DataFrame(X + i, columns=["a", "b", "c"]), npartitions=4)
                km = KMeans(2, random_state=0).fit(frame)
                labels = km.labels_.compute()
                np.testing.assert_array_equal(labels, km.predict(pd.DataFrame(X + i, columns=["a", "b", "c"])))
                assert labels.dtype == np.int32
    finally:
        logger.removeHandler(handler)
    assert not [r for r in records if "run_spec" in r.getMessage()], [r.getMessage()[:300] for r in records]


def test_the_score_of_rows_on_their_centres_is_not_positive():
    """Every row on a centre: each row's squared distance, by the expansion |x|^2 - 2 x.c + |c|^2, rounded to
    about +-1e-14, and the score (minus the inertia) could come out positive; the fit's inertia_ is held at 0."""
    rng = np.random.default_rng(0)
    for seed in range(4):
        Y = np.repeat(rng.normal(size=(3, 2)) * 5, 100, axis=0)
        km = KMeans(3, random_state=seed).fit(Y)
        assert 0.0 <= km.inertia_ < 1e-10
        for rows in (Y, da.from_array(Y, chunks=70)):
            score = km.score(rows)
            assert -1e-10 < score <= 0.0 and str(score) != "-0.0"


def test_weights_too_small_to_draw_a_row_by_are_named():
    """Every weight subnormal (1e-320): each row's draw key E / w overflowed, the scan drew no row, and the
    start indexed an empty sample (IndexError). A ValueError now names the weights, in memory and Dask."""
    from daskgmm import GaussianMixture

    X = np.random.default_rng(0).normal(size=(600, 2))
    w = np.full(600, 1e-320)
    for est in (KMeans(2, random_state=0), GaussianMixture(2, random_state=0)):
        for rows, weights in ((X, w), (da.from_array(X, chunks=200), da.from_array(w, chunks=200))):
            with pytest.raises(ValueError, match=r"sample_weight: no row could be drawn .* too small"):
                est.fit(rows, sample_weight=weights)


@pytest.mark.parametrize("sparse", [False, True])
def test_max_iter_keeps_its_meaning_when_the_larger_sample_is_every_row(sparse):
    """Data just past the scan's sample (4,096 sparse rows; 4 MiB of float64 rows, 1,024 rows of 512 columns)
    but within the 512 rows per cluster k-means|| takes: the larger sample it draws holds every row, and Lloyd
    to convergence on it was the whole fit, on the client. Was: n_iter_ 1 whatever max_iter (a 5,000 x 300
    sparse fit, K = 20, reported 1 iteration where scikit-learn's took 10, and max_iter=1 returned the converged
    centres). As when the scan's sample holds every row, the start is k-means++ only and Lloyd is the fit's."""
    import scipy.sparse as sp

    from daskgmm import KMeans

    if sparse:
        X, k = sp.random(5000, 300, density=0.03, random_state=0, format="csr"), 20
    else:
        X, k = np.random.default_rng(0).normal(size=(1500, 512)), 3
    full = KMeans(k, random_state=0, n_init=1).fit(X)
    one = KMeans(k, random_state=0, n_init=1, max_iter=1).fit(X)
    assert full.n_iter_ > 1
    assert one.n_iter_ == 1 and one.inertia_ > full.inertia_


def test_partial_fit_of_float32_rows_keeps_float32_centres_as_fit_and_minibatchkmeans(tmp_path):
    """KMeans.partial_fit of float32 rows (NumPy, sparse or Dask) gave float64 centres, and so float64
    distances, where fit of the same rows and scikit-learn's MiniBatchKMeans.partial_fit give float32; a
    fitted float32 model became float64 at its first update. The centres keep the first batch's (or the
    fit's) dtype; a later batch of float64 rows widens them, as predictions take the wider of the two."""
    import dask.array as da
    import scipy.sparse as sp
    from sklearn.cluster import MiniBatchKMeans

    from daskgmm import KMeans

    X = sp.random(600, 8, density=0.4, random_state=0, format="csr", dtype=np.float32)
    init = X[:3].toarray()
    ref = MiniBatchKMeans(3, init=init, n_init=1, reassignment_ratio=0.0)
    for batch in (X[:300], X[300:]):
        ref.partial_fit(batch)
    assert ref.cluster_centers_.dtype == np.float32
    for rows in (X, X.toarray(), da.from_array(X.toarray(), chunks=(150, 8)),
                 da.from_array(X, chunks=(150, 8), asarray=False)):
        km = KMeans(3, init=init, n_init=1)
        for batch in (rows[:300], rows[300:]):
            km.partial_fit(batch)
        assert km.cluster_centers_.dtype == np.float32, type(rows)
        assert km.transform(rows[:5]).dtype == np.float32
        np.testing.assert_allclose(km.cluster_centers_, ref.cluster_centers_, rtol=1e-5, atol=1e-6)
    fitted = KMeans(3, random_state=0).fit(X).partial_fit(X[:100])
    assert fitted.cluster_centers_.dtype == np.float32
    fitted.save(tmp_path / "m")
    assert daskgmm.load(tmp_path / "m").cluster_centers_.dtype == np.float32
    assert fitted.partial_fit(X[:100].astype(np.float64)).cluster_centers_.dtype == np.float64


def test_partial_fit_seeding_from_a_dask_batch_of_fewer_rows_than_clusters_is_refused_as_numpy():
    """A first batch of fewer rows than clusters, without an init array, is refused with scikit-learn's
    sentence (MiniBatchKMeans': "n_samples=3 should be >= n_clusters=4."): a NumPy batch was, a Dask batch
    (dense or sparse chunks) was seeded with a row repeated, two equal centres (user trial, streaming)."""
    import dask.array as da
    import scipy.sparse as sp

    from daskgmm import KMeans

    X = np.random.default_rng(0).normal(size=(3, 2))
    for batch in (X, da.from_array(X, chunks=2), da.from_array(sp.csr_matrix(X), chunks=(2, 2), asarray=False)):
        with pytest.raises(ValueError, match=r"^n_samples=3 should be >= n_clusters=4\.$"):
            KMeans(4, random_state=0).partial_fit(batch)
    # with the centres given, any batch updates them (one row at a time is the notes' sequential k-means)
    km = KMeans(4, init=np.zeros((4, 2)), n_init=1).partial_fit(da.from_array(X, chunks=2))
    assert km.counts_.sum() == 3
