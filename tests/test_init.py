"""Initialisations: the scan's sample and k-means on it (chunking independence, quality)."""

import dask.array as da
import numpy as np
import pytest
from sklearn.cluster import KMeans as SkKMeans

from daskgmm.em import init as I
from daskgmm.engine.passes import ChunkedData

from .conftest import far_rows, make_blobs


def _data(X, chunks, w=None):
    Xd = da.from_array(X, chunks=(chunks, X.shape[1]))
    wd = None if w is None else da.from_array(w, chunks=(chunks,))
    return ChunkedData(Xd, wd, cache="memory")


def test_scan_sample_is_the_same_for_any_chunking():
    X, _, _ = make_blobs(n=5000, d=3, k=3)
    X[17, 1] = np.nan  # never drawn
    ref = _data(X, 5000).sample()
    assert len(ref) == min(len(X) - 1, _scan_rows(3)) and np.all(np.isfinite(ref))
    for chunks in (97, (1000, 1, 2500, 1499)):
        np.testing.assert_array_equal(_data(X, chunks).sample(), ref)


def _scan_rows(d):
    from daskgmm.engine.passes import SCAN_SAMPLE_BYTES, SCAN_SAMPLE_ROWS

    return min(SCAN_SAMPLE_ROWS, SCAN_SAMPLE_BYTES // (8 * d))


def test_scan_sample_is_uniform_by_weight():
    X = np.arange(200000, dtype=np.float64)[:, None]
    w = np.where(X[:, 0] < 100000, 3.0, 1.0)
    w[5] = 0.0
    s = _data(X, 30000, w).sample()[:, 0]
    assert 5.0 not in s and len(s) == _scan_rows(1)
    # three times the weight: about three quarters of the draws (without replacement, fewer)
    assert 0.6 < np.mean(s < 100000) < 0.8


def test_sample_kmeans_is_the_same_for_any_chunking_and_passes_no_data():
    """The same bits for any chunking: k-means runs on the scan's sample alone (its rows are
    keyed by row number), shifted by the sample's own mean, not by the scan's (whose
    rounding depends on the chunking)."""
    X, _, _ = make_blobs(n=6000, d=4, k=5, seed=3)
    ref = None
    for chunks in (6000, 333, (1000, 0, 2999, 2001)):
        data = _data(X, chunks)
        c = data.scan().mean
        before = data.passes
        out = I.sample_kmeans(data, c, [5, 3], [1, 2])
        assert data.passes == before  # the scan's sample is enough
        if ref is None:
            ref = out
        for a, b in zip(out, ref):
            np.testing.assert_array_equal(a, b)
    # each k gets the centres it gets alone
    data = _data(X, 1000)
    np.testing.assert_array_equal(I.sample_kmeans(data, data.scan().mean, 3, [2])[0], ref[1])


def test_the_clients_start_runs_blas_on_one_thread(monkeypatch):
    """The start's k-means on the sample (and the t mixture's fits on it) run BLAS on one thread, as the loop's
    client arithmetic does: OpenBLAS's threaded dot products round by the thread count (the centres depended on
    the client's cores) and wait for threads the workers' batches hold (a fit's start 5.1-5.8 s against 1.8 s
    beside two busy processes)."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from daskgmm import StudentTMixture
    from daskgmm.fitting import studentt

    seen = []

    def recording(fn):
        def call(*args, **kwargs):
            seen.append((fn.__name__, [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]))
            return fn(*args, **kwargs)
        return call

    monkeypatch.setattr(I, "_local_kmeanspp", recording(I._local_kmeanspp))
    monkeypatch.setattr(studentt, "sample_df", recording(studentt.sample_df))
    X, _, _ = make_blobs(n=3000, d=3, k=4, seed=1)
    with threadpool_limits(2, user_api="blas"):
        data = _data(X, 1000)
        I.sample_kmeans(data, data.scan().mean, 4, [0])
        StudentTMixture(4, max_iter=1, random_state=0).fit(X)
    assert {name for name, _ in seen} == {"_local_kmeanspp", "sample_df"}
    assert all(threads and all(t == 1 for t in threads) for _, threads in seen)


def test_sample_kmeans_does_not_depend_on_rounding():
    """Tries that reach the same partition, in another order, differ by rounding only; the
    first of them is kept, so other rounding (another BLAS kernel; here data scaled by
    1 ± 2^-41, which rounds every product differently) gives the same centres in the same
    order. (Keeping the try of strictly lowest inertia permuted them here.)"""
    X, _, _ = make_blobs(n=6000, d=4, k=5, seed=2)
    ref = None
    for f in (1.0, 1 + 2.0**-41, 1 - 2.0**-41):
        data = _data(X * f, 6000)
        out = I.sample_kmeans(data, data.scan().mean, [5, 3], [1, 2])
        if ref is None:
            ref = out
        for a, b in zip(out, ref):
            np.testing.assert_allclose(a / f, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("method", ["k-means||", "k-means++"])
@pytest.mark.parametrize("rows", [{}, {"seed": 5, "fill": -1e15, "d": 5, "columns": 5}])
def test_the_starts_draw_one_centre_at_a_fill_value(method, rows):
    """Rows at a fill value of 1e20: their squared distance to a centre among them by the expansion
    ``‖x‖² - 2 x·c + ‖c‖²`` is its noise, about 1e24, which outweighs the other rows' (about 64), so k-means++ (on
    the sample and over the passes alike) drew a second centre there and the 600 other rows shared one. Where the
    scan finds far columns such distances are taken from the differences: one centre at the fill value, one in
    each cluster, for any chunking. (The client's expansion cancels to its noise in 5 columns at -1e15: a second
    centre there in 40 of 40 seeds.)"""
    X, _ = far_rows(**rows)
    for chunks in (605, 101):
        data = _data(X, chunks)
        scan = data.scan()
        np.testing.assert_array_equal(scan.far, np.arange(rows.get("columns", 1)))
        for seed in range(4):
            c = I.initial_centers(data, scan.centre, method, 3, [seed])[0]
            at_fill = np.abs(c[:, 0]) > 1e10
            assert np.sum(at_fill) == 1, c
            assert np.sum((c[:, 0] < 4) & ~at_fill) == 1 and np.sum((c[:, 0] > 4) & ~at_fill) == 1, c


def test_ordinary_data_keep_the_scans_mean_as_the_passes_shift():
    """The robust shift is only for columns a few far rows pulled the mean millions of spreads from the median:
    data far from the origin, wide columns, heavy tails and a moderate outlier keep the mean (and their bits)."""
    rng = np.random.default_rng(0)
    for X in (rng.normal(1e9, 1e-4, (600, 3)), rng.normal(0, 1, (600, 3)) * [1, 1e6, 1e-6],
              rng.standard_t(2, (600, 3)), np.r_[rng.normal(0, 1, (600, 2)), [[1e3, 1e3]]]):
        scan = _data(X, 97).scan()
        assert scan.shift is None and scan.far.size == 0
        assert scan.centre is scan.mean


def test_kmeanspp_distances_by_centre_are_the_rows_distances():
    """k-means++ takes its candidates' distances as (k, n) from the points by column: each the distance
    of _sq_dist's (n, k) array (the same expression; a GEMM of the other layout may round a product
    otherwise), never below 0."""
    x = np.random.default_rng(0).normal(size=(3000, 5)) * 4
    c = np.vstack([x[:6], x[7:8] * (1 + 1e-15)])  # candidates on rows: distances that round to about 0
    sq = I._sq_norms(x)
    got = I._sq_dist_by_centre(np.ascontiguousarray(x.T), sq, c)
    np.testing.assert_allclose(got, I._sq_dist(x, sq, c).T, rtol=1e-12, atol=1e-11)
    assert got.shape == (7, 3000) and got.flags.c_contiguous and got.min() >= 0


@pytest.mark.skipif(I.compiled_kernel.ready() is None, reason="the compiled core is not in use here")
@pytest.mark.parametrize("max_iter", [300, 3])
def test_the_local_lloyd_on_the_compiled_core_is_numpys(max_iter, monkeypatch):
    """The client's Lloyd on the sample runs the compiled core's k-means pass: the centres (to rounding),
    iterations and inertia of NumPy's GEMM and arg-min, weighted, with a cluster that stays empty, and
    overlapping blobs whose rows change cluster for many iterations (its stop on an unchanged partition)."""
    X, _, _ = make_blobs(n=5000, d=3, k=12, seed=4, sep=1.5)
    w = np.random.default_rng(5).random(len(X)) + 0.5
    start = I._local_kmeanspp(X, w, 11, np.random.default_rng(2))
    start = np.vstack([start, np.full((1, 3), 1e3)])  # far from every row: stays empty
    calls = []
    real = I.chunk_pass
    monkeypatch.setattr(I, "chunk_pass", lambda *a, **k: calls.append(1) or real(*a, **k))
    centers, inertia = I._local_lloyd(X, w, start, max_iter=max_iter)
    monkeypatch.setattr(I.compiled_kernel, "ready", lambda: None)
    ref, ref_inertia = I._local_lloyd(X, w, start, max_iter=max_iter)
    np.testing.assert_allclose(centers, ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(inertia, ref_inertia, rtol=1e-12)
    np.testing.assert_array_equal(centers[-1], start[-1])
    assert 10 < len(calls) < max_iter if max_iter == 300 else len(calls) == max_iter


@pytest.mark.skipif(I.compiled_kernel.ready() is None, reason="the compiled core is not in use here")
def test_the_local_lloyd_with_many_clusters_keeps_bounds_and_the_same_bits(monkeypatch):
    """From LOCAL_BOUNDS_MIN_K clusters the client's Lloyd keeps k-means' bounds between its steps: the same
    centres to the bit as without, rows spared, and nothing left in the process's store after it (each block
    keeps its own: blocks made small here; weighted, overlapping blobs)."""
    from daskgmm.kernels import bounds, compiled

    monkeypatch.setattr(I, "LOCAL_BOUNDS_MIN_K", 8)
    monkeypatch.setattr(compiled, "block_rows", lambda n_models: 2048)
    X, _, _ = make_blobs(n=9000, d=3, k=12, seed=3, sep=1.5)
    w = np.random.default_rng(1).random(len(X)) + 0.5
    start = I._local_kmeanspp(X, w, 12, np.random.default_rng(2))
    spared = {}
    forget = bounds.forget
    monkeypatch.setattr(bounds, "forget", lambda key: spared.update({key: bounds.counts(key)}) or forget(key))
    got, inertia = I._local_lloyd(X, w, start.copy())
    monkeypatch.setattr(I, "LOCAL_BOUNDS_MIN_K", 10**9)
    ref, ref_inertia = I._local_lloyd(X, w, start.copy())
    np.testing.assert_array_equal(got, ref)
    assert inertia == ref_inertia
    ((key, (rows_spared, rows_passed)),) = spared.items()
    assert rows_passed > 10 * len(X) and rows_spared > rows_passed / 2, (rows_spared, rows_passed)
    assert bounds.counts(key) == (0, 0) and not any(k[0] == key for k in bounds._store)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sample_kmeans_matches_scikit_learns_kmeans_quality(seed):
    """Overlapping blobs (many local optima): inertia no worse than scikit-learn's KMeans
    with one initialisation, within 1%."""
    X, _, _ = make_blobs(n=40000, d=5, k=12, seed=seed, sep=3.0)
    data = _data(X, 7000)
    c = data.scan().mean
    ours = I.sample_kmeans(data, c, 12, [seed])[0]
    sk = SkKMeans(12, n_init=1, random_state=seed).fit(X)
    inertia = ((X[:, None, :] - ours[None]) ** 2).sum(axis=2).min(axis=1).sum()
    assert inertia <= 1.01 * sk.inertia_


def test_mixture_kmeans_init_reads_the_data_three_times():
    from daskgmm import GaussianMixture

    X, _, _ = make_blobs(n=3000, d=3, k=3)
    g = GaussianMixture(3, max_iter=0, random_state=0).fit(da.from_array(X, chunks=(500, 3)))
    # scan, one Lloyd pass, the statistics of the labels
    assert g.n_passes_ == 3


def test_sample_kmeans_draws_a_larger_sample_when_needed(monkeypatch):
    import daskgmm.engine.passes as em

    monkeypatch.setattr(em, "SCAN_SAMPLE_ROWS", 50)
    X, _, _ = make_blobs(n=4000, d=2, k=4)
    data = _data(X, 1000)
    c = data.scan().mean
    before = data.passes
    out = I.sample_kmeans(data, c, 4, [0])[0]
    assert data.passes == before + 1 and out.shape == (4, 2)


def test_small_data_fit_is_the_same_for_weights_and_repeated_rows_in_any_order():
    """When the scan draws every row, k-means runs on the distinct rows with their weights summed, in the
    order of their values: a weight of w and w copies of a row, in any order, give the same fit."""
    import scipy.sparse as sp

    from daskgmm import GaussianMixture, KMeans

    rng = np.random.default_rng(0)
    # duplicates on purpose; values off the integer grid, so that no row is exactly as far from two
    # centres (such a tie is decided by the last bit, which the BLAS and the core's variant set)
    grid = rng.integers(0, 4, size=(60, 3)).astype(float)
    X = grid + np.sqrt(grid + 1.0) * np.array([0.011, 0.017, 0.023])
    w = rng.integers(0, 4, size=60)
    order = rng.permutation(int(w.sum()))
    repeated = np.repeat(X, w, axis=0)[order]
    for seed in range(4):
        for k in (2, 5):
            a = KMeans(k, random_state=seed).fit(X, sample_weight=w)
            b = KMeans(k, random_state=seed).fit(repeated)
            c = KMeans(k, random_state=seed).fit(sp.csr_matrix(repeated))
            np.testing.assert_allclose(a.cluster_centers_, b.cluster_centers_, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(c.cluster_centers_, b.cluster_centers_, rtol=1e-12, atol=1e-12)
        g = GaussianMixture(3, covariance_type="diag", random_state=seed).fit(X, sample_weight=w)
        h = GaussianMixture(3, covariance_type="diag", random_state=seed).fit(repeated)
        np.testing.assert_allclose(g.means_, h.means_, rtol=1e-9, atol=1e-9)
    # the weighted point set: distinct rows in lexicographic order, weights summed
    pts, wts, shift = I._distinct_rows(np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 0.0]]), np.array([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(pts + shift, [[0.0, 2.0], [1.0, 0.0]])
    np.testing.assert_array_equal(wts, [2.0, 4.0])


def test_the_kmeans_start_on_fewer_distinct_points_than_components_warns_as_scikit_learns():
    """scikit-learn's mixtures say it through their KMeans start (a ConvergenceWarning); ours said nothing
    and fitted components of weight 0 beside ones on single points (user-trial-r11). Not for the starts
    from chosen rows, as scikit-learn's."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture as SkGMM

    import daskgmm

    X = np.repeat(np.random.default_rng(0).normal(size=(3, 2)), 20, axis=0)

    def said(fit):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit()
        return [str(w.message) for w in caught if w.category is ConvergenceWarning]

    expected = said(lambda: SkGMM(5, random_state=0).fit(X))
    assert expected == ["Number of distinct clusters (3) found smaller than n_clusters (5). Possibly due to "
                        "duplicate points in X."]
    for est in (daskgmm.GaussianMixture(5, random_state=0), daskgmm.BayesianGaussianMixture(n_components=5),
                daskgmm.StudentTMixture(5, random_state=0)):
        assert said(lambda est=est: est.fit(da.from_array(X, chunks=25))) == expected, est
    assert said(lambda: daskgmm.GaussianMixture(5, init_params="random_from_data", random_state=0).fit(X)) == []
    assert said(lambda: daskgmm.GaussianMixture(3, random_state=0).fit(X)) == []
    assert said(lambda: daskgmm.select_model(X, [2, 5], "diag", random_state=0)) == expected
