"""Kernels (pure NumPy) against scikit-learn and scipy on small arrays."""

import itertools
import warnings

import numpy as np
import pytest
from scipy.stats import multivariate_normal
from sklearn.mixture import GaussianMixture as SkGMM
from sklearn.mixture._gaussian_mixture import _estimate_gaussian_parameters

from daskgmm.kernels import (
    MixtureRequest,
    ModelSpec,
    NaturalParams,
    SampleRequest,
    ScanRequest,
    build_features,
    chunk_pass,
    component_logits,
    kmeans_natural_params,
    merge_partials,
    n_feature_rows,
    soft_responsibilities,
)
from daskgmm.kernels import covariance as cov
from daskgmm.kernels import params as forms
from daskgmm.kernels.random import keyed_uniform, stream_key

from .conftest import layouts, make_blobs

TYPES = ["full", "tied", "diag", "spherical"]


def _fitted_sklearn(X, ct, k=3):
    return SkGMM(k, covariance_type=ct, random_state=0, max_iter=3).fit(X)


def _stats(X, spec, centre, cuts, block_rows=None, w=None):
    req = MixtureRequest([spec])
    parts = []
    for a, b in itertools.pairwise(cuts):
        parts.append(chunk_pass(X[a:b], [req], centre, row0=a, block_rows=block_rows,
                                sample_weight=None if w is None else w[a:b]))
    tot = parts[0]
    for p in parts[1:]:
        tot = merge_partials([req], tot, p)
    return tot[0][0]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("ct", TYPES)
def test_estep_mstep_match_sklearn(ct):
    X, _, _ = make_blobs(n=500, d=3)
    sk = _fitted_sklearn(X, ct)
    log_norm, log_resp = sk._estimate_log_prob_resp(X)
    nk, means, covs = _estimate_gaussian_parameters(X, np.exp(log_resp), sk.reg_covar, ct)
    centre = X.mean(axis=0)
    nat = forms.natural_params(sk.weights_, sk.means_, sk.precisions_cholesky_, ct, centre)
    st = _stats(X, ModelSpec(nat, ct), centre, [0, 123, 123, 500], block_rows=64)
    assert st.rows == 500 and st.weight == 500
    np.testing.assert_allclose(st.loglik / st.weight, log_norm.mean(), rtol=1e-12)
    nk2, means2, covs2 = cov.estimate_parameters(st, sk.reg_covar)
    np.testing.assert_allclose(nk2, nk, rtol=1e-11)
    np.testing.assert_allclose(means2, means, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(covs2, covs, rtol=1e-10, atol=1e-13)
    # per-row log-densities for prediction
    logits = component_logits(X, nat, centre, block_rows=100)
    np.testing.assert_allclose(logits, sk._estimate_weighted_log_prob(X), rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("ct", TYPES)
def test_log_density_matches_scipy(ct):
    rng = np.random.default_rng(1)
    d, k = 4, 2
    means = rng.normal(size=(k, d))
    a = rng.normal(size=(k, d, d))
    full = a @ a.transpose(0, 2, 1) + np.eye(d)
    covs = {
        "full": full,
        "tied": full[0],
        "diag": rng.uniform(0.5, 2, size=(k, d)),
        "spherical": rng.uniform(0.5, 2, size=k),
    }[ct]
    weights = np.array([0.3, 0.7])
    pc = cov.precisions_cholesky(covs, ct)
    X = rng.normal(size=(50, d)) * 2
    centre = rng.normal(size=d)
    got = component_logits(X, forms.natural_params(weights, means, pc, ct, centre), centre)
    for j in range(k):
        if ct == "full":
            c = covs[j]
        elif ct == "tied":
            c = covs
        elif ct == "diag":
            c = np.diag(covs[j])
        else:
            c = covs[j] * np.eye(d)
        expect = np.log(weights[j]) + multivariate_normal(means[j], c).logpdf(X)
        np.testing.assert_allclose(got[:, j], expect, rtol=1e-11)


def test_features_layout():
    x = np.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 2.0]])
    xT = np.ascontiguousarray(x.T)
    for level, quad in [(0, lambda r: [r @ r]), (1, lambda r: list(r**2)),
                        (2, lambda r: [r[i] * r[j] for i in range(3) for j in range(i, 3)])]:
        T = build_features(xT, level, np.empty((n_feature_rows(level, 3), 2)))
        for i, r in enumerate(x):
            np.testing.assert_allclose(T[:, i], quad(r) + list(r) + [1.0])


def test_suffstats_merge_is_associative_commutative_with_zero_identity():
    X, _, _ = make_blobs(n=300, d=2, k=2)
    centre = X.mean(axis=0)
    nat = kmeans_natural_params(np.array([[0.0, 0.0], [3.0, 3.0]]) - centre)
    spec = ModelSpec(nat, "full", "hard")
    req = MixtureRequest([spec])
    a, b, c = (chunk_pass(X[s], [req], centre)[0][0] for s in (slice(0, 100), slice(100, 180), slice(180, 300)))
    zero = cov.zero_stats(2, centre, "full")
    left = a.merge(b).merge(c)
    right = a.merge(b.merge(c))
    swapped = c.merge(a).merge(b)
    for other in (right, swapped, left.merge(zero), zero.merge(left)):
        np.testing.assert_allclose(other.n, left.n, rtol=1e-14)
        np.testing.assert_allclose(other.s2, left.s2, rtol=1e-13)
        assert other.rows == 300
    # empty chunk gives the identity
    empty = chunk_pass(X[:0], [req], centre)[0][0]
    assert empty.rows == 0 and np.all(empty.n == 0) and np.all(empty.s2 == 0)
    # immutable
    with pytest.raises(ValueError):
        left.n[0] = 1.0
    with pytest.raises(ValueError, match="different shifts"):
        left.merge(cov.zero_stats(2, centre + 1, "full"))


def test_large_offset_loses_no_precision():
    """Data near 1e6 give the same parameters as the same data near 0."""
    X, _, _ = make_blobs(n=2000, d=2, k=2, spread=0.01, sep=1.0)
    res = []
    for offset in (0.0, 1e6):
        Y = X + offset
        centre = Y.mean(axis=0)
        sk = SkGMM(2, random_state=0, max_iter=2).fit(X)
        nat = forms.natural_params(sk.weights_, sk.means_ + offset, sk.precisions_cholesky_, "full", centre)
        st = _stats(Y, ModelSpec(nat, "full"), centre, [0, 700, 2000])
        _nk, means, covs = cov.estimate_parameters(st, 0.0)
        res.append((means - offset, covs))
    np.testing.assert_allclose(res[1][0], res[0][0], atol=1e-9)
    np.testing.assert_allclose(res[1][1], res[0][1], rtol=1e-6)


def test_float32_accumulates_in_float64():
    X, _, _ = make_blobs(n=4000, d=3, k=2)
    centre = X.mean(axis=0)
    nat = kmeans_natural_params(np.array([[0.0, 0.0, 0.0], [5.0, 5.0, 5.0]]) - centre)
    s64 = _stats(X, ModelSpec(nat, "diag", "hard"), centre, [0, 4000])
    s32 = _stats(X.astype(np.float32), ModelSpec(nat, "diag", "hard"), centre, [0, 4000])
    assert s32.n.dtype == np.float64 and s32.s2.dtype == np.float64
    np.testing.assert_allclose(s32.n, s64.n)
    np.testing.assert_allclose(s32.s2, s64.s2, rtol=1e-5)
    # over many blocks, on the NumPy path as in the core: the same float32 values as float64 give the same sums
    # but for each block's float32 products (~1e-8 here; float32 sums across the 1,563 blocks: 5e-7)
    X32 = make_blobs(n=100_000, d=3, k=2)[0].astype(np.float32)
    soft = ModelSpec(nat, "diag", "soft")
    for compiled in (False, True):
        a, b = (chunk_pass(x, [MixtureRequest([soft])], centre, block_rows=64, compiled=compiled)[0][0]
                for x in (X32, X32.astype(np.float64)))
        for name in ("n", "s2"):
            got, want = getattr(a, name), getattr(b, name)
            assert got.dtype == np.float64
            assert np.abs(got - want).max() < 1e-7 * np.abs(want).max(), (compiled, name)


def test_sample_weight_multiplies_responsibilities():
    X, _, _ = make_blobs(n=200, d=2, k=2)
    centre = X.mean(axis=0)
    nat = kmeans_natural_params(np.array([[0.0, 0.0], [3.0, 3.0]]) - centre)
    spec = ModelSpec(nat, "full", "hard")
    w = np.r_[np.full(100, 2.0), np.ones(100)]
    weighted = _stats(X, spec, centre, [0, 77, 200], w=w)
    repeated = _stats(np.vstack([X[:100], X]), spec, centre, [0, 300])
    np.testing.assert_allclose(weighted.n, repeated.n)
    np.testing.assert_allclose(weighted.s2, repeated.s2, rtol=1e-12)
    assert weighted.weight == 300.0 and weighted.rows == 200


def test_random_assignment_and_sampling_do_not_depend_on_chunking():
    X, _, _ = make_blobs(n=1000, d=2, k=2)
    centre = X.mean(axis=0)
    zero = NaturalParams(np.zeros(3), np.zeros((3, 2)), np.zeros(3))
    spec = ModelSpec(zero, "diag", "random", seed=stream_key(5, 1))
    a = _stats(X, spec, centre, [0, 1000])
    b = _stats(X, spec, centre, [0, 10, 333, 1000], block_rows=50)
    np.testing.assert_allclose(a.n, b.n, rtol=1e-12)
    np.testing.assert_allclose(a.s2, b.s2, rtol=1e-12)

    req = SampleRequest(X[:2], 7, stream_key(3, 2))
    whole = chunk_pass(X, [req], centre)[0]
    cuts = [(0, 400), (400, 401), (401, 1000)]
    parts = [chunk_pass(X[s:e], [req], centre, row0=s, block_rows=64)[0] for s, e in cuts]
    merged = req.merge(req.merge(parts[0], parts[1]), parts[2])
    np.testing.assert_array_equal(whole.rows, merged.rows)
    np.testing.assert_allclose(whole.potential, merged.potential)


def test_sampling_follows_squared_distance():
    """Rows are drawn with probability proportional to d²(x, centres)."""
    X = np.array([[0.0], [1.0], [3.0]])
    centre = np.zeros(1)
    counts = np.zeros(3)
    for seed in range(3000):
        res = chunk_pass(X, [SampleRequest(np.array([[0.0]]), 1, stream_key(seed, 0))], centre)[0]
        counts[res.rows[0, 0]] += 1
    np.testing.assert_allclose(counts / counts.sum(), [0, 0.1, 0.9], atol=0.025)


def test_keyed_uniform_is_uniform_and_positional():
    key = stream_key(42, 0)
    u = keyed_uniform(key, np.arange(100000))
    assert 0 < u.min() and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.005
    np.testing.assert_array_equal(keyed_uniform(key, np.arange(500, 600)), u[500:600])
    assert not np.allclose(keyed_uniform(stream_key(42, 1), np.arange(100)), u[:100])


def test_scan_mean_variance_and_nonfinite_counts():
    X, _, _ = make_blobs(n=500, d=3, offset=1e6)
    req = ScanRequest()
    parts = [chunk_pass(X[a:b], [req], row0=a, block_rows=37)[0] for a, b in [(0, 250), (250, 250), (250, 500)]]
    tot = req.merge(req.merge(parts[0], parts[1]), parts[2])
    np.testing.assert_allclose(tot.mean, X.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(tot.variance, X.var(axis=0), rtol=1e-9)
    Y = X.copy()
    Y[3, 1] = np.nan
    Y[4, 2] = np.inf
    bad = chunk_pass(Y, [req])[0]
    assert bad.nan.tolist() == [0, 1, 0] and bad.inf.tolist() == [0, 0, 1]
    # rows whose float32 sum overflows are still finite rows (the scan's one-sum test sends their block
    # to the counting path), and -inf + inf in one block counts as two infinities, not a NaN
    Z = np.ones((100, 2), np.float32)
    Z[10:12, 0] = 3e38
    Z[50, 1], Z[51, 1] = -np.inf, np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        big = chunk_pass(Z, [req], block_rows=32)[0]
    assert big.nan.tolist() == [0, 0] and big.inf.tolist() == [0, 2] and big.rows == 100
    finite = np.isfinite(Z).all(axis=1)  # the mean is of the finite rows, in float64
    np.testing.assert_allclose(big.mean, Z[finite].astype(np.float64).mean(axis=0), rtol=1e-12)


@pytest.mark.parametrize("nan", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_the_scan_gives_the_same_bits_from_any_layout(weighted, nan):
    """A chunk's rows row-major, column-major or strided (a moved piece of a cut chunk arrives
    row-major): the same mean and variance bits, since every later pass is shifted by the mean."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(997, 6)) * rng.uniform(1, 1e4, size=6) + 1e3
    if nan:
        X[rng.random(X.shape) < 0.01] = np.nan
    w = rng.random(len(X)) if weighted else None
    every = [*layouts(X).values(), np.repeat(X, 2, axis=1)[:, ::2]]  # and columns a stride apart
    got = [chunk_pass(x, [ScanRequest()], sample_weight=w, block_rows=300)[0] for x in every]
    for g in got[1:]:
        for name in ("mean", "m2", "nan", "weight"):
            np.testing.assert_array_equal(getattr(g, name), getattr(got[0], name), err_msg=name)


@pytest.mark.parametrize("ct", TYPES)
def test_precise_path_matches_fast_path_and_scipy(ct):
    """The per-component path (for badly conditioned models) gives the same statistics."""
    X, _, _ = make_blobs(n=700, d=3, k=3, offset=5.0)
    sk = _fitted_sklearn(X, ct)
    centre = X.mean(axis=0)
    args = (sk.weights_, sk.means_, sk.precisions_cholesky_, ct, centre)
    nat = forms.natural_params(*args)
    fast = _stats(X, ModelSpec(nat, ct), centre, [0, 300, 700], block_rows=128)
    precise = _stats(X, ModelSpec(nat, ct, precise=forms.per_component(*args)), centre, [0, 300, 700], block_rows=128)
    assert precise.shift.shape == (3, 3)  # about each component's own mean
    np.testing.assert_allclose(precise.loglik, fast.loglik, rtol=1e-12)
    for a, b in zip(cov.estimate_parameters(precise, 1e-6), cov.estimate_parameters(fast, 1e-6)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(component_logits(X, forms.per_component(*args), centre),
                               sk._estimate_weighted_log_prob(X), rtol=1e-12, atol=1e-12)


def test_conditioning_predicts_when_the_fast_path_loses_precision():
    X, _, _ = make_blobs(n=500, d=2, k=2)
    c = X.mean(axis=0)
    ok = forms.conditioning(X[:2], np.stack([np.eye(2)] * 2), "full", c)
    assert ok < 1e3 and not forms.precise_needed(X[:2], np.stack([np.eye(2)] * 2), "full", c, np.float64)
    # point initialisations: covariance reg_covar * I, precision 1e6
    tiny = np.stack([np.eye(2) * 1e3] * 2)
    assert forms.precise_needed(X[:2], tiny, "full", c, np.float32)
    assert forms.precise_needed(X[:2] + 1e6, tiny, "full", c, np.float64)


def test_rows_far_from_every_component_keep_a_finite_likelihood():
    """Logits of -6e17: top + ln(eps) rounds back to top; the largest term must still count."""
    lm = np.array([[-1.12080392e18, -1.0], [-5.76523220e17, -2.0], [-7.67560500e17, -3.0]])[None]
    per = soft_responsibilities(lm.copy(), np.empty((1, 2)), np.empty((1, 2)))
    assert np.all(np.isfinite(per))
    np.testing.assert_allclose(per[0, 0], -5.76523220e17)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_theta_constant_is_finite_and_below_every_live_one(dtype):
    # a weight of zero (log 0) stays finite in the pass's dtype, and below k-means' -|c|^2 for
    # centres far from the pass's centre, so that it never wins and BLAS never sees inf
    nat = forms.NaturalParams(quad=-np.ones(3), lin=np.zeros((3, 2)), const=np.array([-np.inf, -4e31, -1.0]))
    theta = nat.theta(0, dtype)
    const = theta[:, -1]
    assert theta.dtype == dtype and np.isfinite(theta).all()
    assert const[0] < const[1] < const[2]
    if dtype == np.float64:
        assert const[1] == -4e31
    huge = forms.NaturalParams(quad=-np.ones(2), lin=np.zeros((2, 2)), const=np.array([-np.inf, -1e300]))
    assert np.isfinite(huge.theta(0, dtype)).all()


def test_responsibilities_are_exact_far_below_eps():
    """No term is dropped: a term 50 below its row's largest is exp(-50), as scikit-learn's."""
    lm = np.array([[0.0, -1.0], [-50.0, -2.0], [-800.0, -3.0], [-1e18, -4.0]])[None]
    r = lm.copy()
    per = soft_responsibilities(r, np.empty((1, 2)), np.empty((1, 2)))
    lse = np.log(np.exp(lm[0] - lm[0].max(axis=0)).sum(axis=0)) + lm[0].max(axis=0)
    np.testing.assert_allclose(per[0], lse, rtol=1e-15)
    np.testing.assert_allclose(r[0, :2], np.exp(lm[0, :2] - lse), rtol=1e-14)
    assert r[0, 1, 0] > 0  # exp(-50) of the row's largest: kept
    # below the floor a term is exp(-700) of its row's largest: no sum can tell it from 0
    assert 0 < r[0, 2, 0] < 1e-300 and 0 < r[0, 3, 0] < 1e-300


@pytest.mark.parametrize("ct", ["tied", "diag", "spherical"])
def test_component_on_one_point_stays_positive_with_reg_covar_zero(ct):
    """scikit-learn's test_gaussian_mixture_setting_best_params: a component on exactly one
    point, reg_covar=0. scikit-learn's tied/diag/spherical M-step keeps (10 eps / nk) μ²
    (its Σ r x² / nk - μ²); ours must give the same covariances, hence no collapse. (For
    "full" scikit-learn's result is a rank-one matrix of size eps² plus rounding: no
    semantics to match.)"""
    rnd = np.random.RandomState(0)
    X = rnd.uniform(size=(30, 3))
    means = X[[3, 7, 11, 20]]
    k = len(means)
    prec = np.array([1e6, 1e6, 500.0, 20.0])
    kw = dict(weights_init=np.full(k, 1 / k), means_init=means, reg_covar=0, max_iter=1)
    p = {"tied": np.eye(3) * 50.0,
         "diag": prec[:, None] * np.ones(3), "spherical": prec}[ct]
    from daskgmm import GaussianMixture

    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # max_iter=1: not converged
        ours = GaussianMixture(k, covariance_type=ct, precisions_init=p, **kw).fit(X)
        sk = SkGMM(k, covariance_type=ct, precisions_init=p, **kw).fit(X)
    np.testing.assert_allclose(ours.means_, sk.means_, rtol=1e-10, atol=1e-12)
    # on the single points both are ~1e-15 and carry rounding of eps · x²
    np.testing.assert_allclose(ours.covariances_, sk.covariances_, rtol=1e-7, atol=1e-15)
    c = ours.covariances_
    assert np.all((np.diag(c) if ct == "tied" else c) > 0)


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_worst_rows_are_the_smallest_over_every_block(compiled, dtype):
    """The rows a pass keeps for re-seeding (k-means' empty clusters, collapsed components) are the
    ``n_worst`` smallest (objective, row) of the chunk, ties by row, however many blocks it takes: later
    blocks only consider rows at or below the last kept one. Integer rows and centres make every
    distance exact, so that the reference is exact too; there are many ties."""
    rng = np.random.default_rng(3)
    for spread in (6, 40):  # many ties at the extreme distance; distinct values in every block
        x = rng.integers(-spread, spread + 1, size=(3000, 3)).astype(dtype)
        centres = np.array([[0, 0, 0], [1, 1, 1], [-1, 1, 0]], dtype=np.float64) * (spread // 2)
        w = rng.integers(1, 4, size=len(x)).astype(np.float64)
        m = 9
        spec = ModelSpec(kmeans_natural_params(centres), "spherical", "hard", n_worst=m)
        objective = -((x[:, None, :].astype(np.float64) - centres[None]) ** 2).sum(axis=2).min(axis=1)
        order = np.lexsort((np.arange(len(x)), objective))[:m]
        for block_rows in (64, 500, None):
            (st,), = chunk_pass(x, [MixtureRequest([spec])], np.zeros(3), sample_weight=w, row0=0,
                                block_rows=block_rows, compiled=compiled)
            np.testing.assert_array_equal(st.worst.rows, order)
            np.testing.assert_array_equal(st.worst.values, objective[order])
            np.testing.assert_array_equal(st.worst.points, x[order])
            np.testing.assert_array_equal(st.worst.weights, w[order])
