"""The compiled core's marginal E-step (rows with NaN, missing="marginalize") against the NumPy path.

The NumPy path (daskgmm.kernels.missing, checked row by row in tests/test_missing.py) is the
reference: one pass of every variant this CPU runs must give its statistics to 1e-10 (float64),
for every covariance type, with and without sample weights, soft and hard assignment, Σ r log r,
marginalising models beside models that leave incomplete rows out, and any blocking.
"""

import numpy as np
import pytest

from daskgmm.kernels import MixtureRequest, ModelSpec, chunk_pass, compiled, merge_partials
from daskgmm.kernels.compiled import marginal_form
from daskgmm.kernels.features import FULL_LEVEL, n_feature_rows
from daskgmm.models.states import MixtureState

from .conftest import random_mixture

TYPES = ("full", "tied", "diag", "spherical")




def _state(ct, k, d, seed, spread=3.0):
    weights, means, covs = random_mixture(ct, k, d, np.random.default_rng(seed), spread)
    return MixtureState.from_covariances(weights, means, covs, ct, missing="marginalize")


def _rows(n, d, frac, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=3.0, size=(n, d)) + 2.0
    x[rng.random((n, d)) < frac] = np.nan
    x[0, :-1] = np.nan  # all but one missing
    x[1, 1:] = np.nan
    x[2, :] = np.nan  # nothing observed: left out by the request, on both paths
    x[3, d // 2] = np.nan  # one missing
    return x


def _compare(x, specs, centre, w=None, rtol=1e-10, **kw):
    got = chunk_pass(x, [MixtureRequest(specs)], centre, sample_weight=w, compiled=True, **kw)[0]
    want = chunk_pass(x, [MixtureRequest(specs)], centre, sample_weight=w, compiled=False, **kw)[0]
    for g, r in zip(got, want, strict=True):
        for name in ("n", "s1", "s2"):
            a, b = getattr(g, name), getattr(r, name)
            np.testing.assert_allclose(a, b, rtol=0, atol=rtol * max(np.abs(b).max(), 1.0), err_msg=name)
        for name in ("loglik", "resp_log_resp", "weight", "rows"):
            assert getattr(g, name) == pytest.approx(getattr(r, name), rel=rtol, abs=1e-300), name
        if r.worst is not None:
            np.testing.assert_array_equal(g.worst.rows, r.worst.rows)
    return got


@pytest.mark.parametrize("frac", [0.3, 0.02], ids=["30%", "2%"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("ct", TYPES)
@pytest.mark.parametrize("k, d", [(3, 4), (5, 7), (16, 16), (1, 2)])
def test_every_variant_equals_numpy(variant, ct, k, d, weighted, frac):
    """K not a multiple of the vector width, one component, many features. 30% of values missing:
    most rows have NaN (the diagonal models' dense path); 2%: a few rows, one at a time."""
    x = _rows(700, d, frac, seed=k * 10 + d)
    w = np.random.default_rng(1).random(len(x)) * 2 if weighted else None
    centre = np.nanmean(x, axis=0)
    spec = _state(ct, k, d, seed=d).spec(centre)
    _compare(x, [spec], centre, w)


@pytest.mark.parametrize("ct", TYPES)
@pytest.mark.parametrize("k, d", [(3, 4), (3, 5), (16, 4), (5, 7), (16, 12), (9, 11)])
def test_every_missing_count(variant, ct, k, d):
    """Rows with each number of missing values from 1 to D (the core has code compiled for each
    small count, and for each number of component vectors: once a compiler got one of them wrong)."""
    rng = np.random.default_rng(k * 100 + d)
    x = rng.normal(scale=3.0, size=(6 * d, d)) + 1.0
    for i in range(len(x)):
        x[i, rng.permutation(d)[: 1 + i % d]] = np.nan
    centre = np.nanmean(x, axis=0)
    spec = _state(ct, k, d, seed=d).spec(centre)
    _compare(x, [spec], centre)


@pytest.mark.parametrize("ct", ("full", "tied"))
def test_rows_missing_most_values(variant, ct):
    """D = 20, 80% of values missing: a sub-block's terms x_hat_i x_j (i missing, j observed) fill the
    core's queue of them several times over, so they are added in several flushes, soft and hard."""
    d, k = 20, 6
    x = _rows(700, d, 0.8, seed=11)
    centre = np.nanmean(x, axis=0)
    s = _state(ct, k, d, seed=4).spec(centre)
    hard = ModelSpec(s.params, ct, assignment="hard", marginal=s.marginal)
    _compare(x, [s, hard], centre, np.random.default_rng(3).random(len(x)))


@pytest.mark.parametrize("ct", TYPES)
def test_float32_rows(variant, ct):
    """float32 blocks: complete rows in float32 lanes on both paths, so float32's agreement."""
    x = _rows(3000, 6, 0.2, seed=5).astype(np.float32)
    centre = np.nanmean(x.astype(np.float64), axis=0)
    spec = _state(ct, 4, 6, seed=2).spec(centre)
    got = _compare(x, [spec], centre, np.random.default_rng(0).random(len(x)), rtol=2e-5)
    assert all(s.s2.dtype == np.float64 for s in got)


def test_hard_resp_log_resp_and_models_that_leave_rows_out(variant):
    """Soft with Σ r log r, hard (classification EM) and a model that does not marginalise, in
    one pass at the full level (the diagonal and spherical models' features are full ones)."""
    d = 5
    x = _rows(2000, d, 0.25, seed=3)
    centre = np.nanmean(x, axis=0)
    specs = []
    for i, ct in enumerate(TYPES):
        s = _state(ct, 3 + i, d, seed=i).spec(centre, n_worst=3)
        specs.append(ModelSpec(s.params, ct, assignment="hard" if i % 2 else "soft", n_worst=3,
                               resp_log_resp=i == 2, marginal=s.marginal))
    plain = _state("full", 4, d, seed=9).spec(centre)
    specs.append(ModelSpec(plain.params, "full", n_worst=2))  # leaves the rows with NaN out
    got = _compare(x, specs, centre, np.random.default_rng(2).random(len(x)))
    assert got[2].resp_log_resp < 0


@pytest.mark.parametrize("ct", ("full", "tied"))
def test_rows_missing_two_values_beyond_the_pair_table(variant, ct):
    """D = 50, K = 13: the pairs' table would pass the core's 1 MiB bound, so rows missing two
    values take the general factor (rows missing one the features' table), soft and hard."""
    d, k = 50, 13
    rng = np.random.default_rng(7)
    x = rng.normal(scale=3.0, size=(150, d)) + 1.0
    for i in range(len(x)):
        x[i, rng.permutation(d)[: 1 + i % 3]] = np.nan
    centre = np.nanmean(x, axis=0)
    s = _state(ct, k, d, seed=5).spec(centre)
    hard = ModelSpec(s.params, ct, assignment="hard", marginal=s.marginal)
    _compare(x, [s, hard], centre, rng.random(len(x)))


@pytest.mark.parametrize("ct", TYPES)
def test_resp_log_resp_with_every_missing_count(variant, ct):
    """Σ r log r and the log-likelihood, weighted, with rows missing 1 to D values mixed in every
    sub-block: the full models' rows missing one or two values go through the tiles' softmax, the
    others through their own, and each row must be counted once."""
    d, k = 7, 5
    rng = np.random.default_rng(11)
    x = rng.normal(scale=3.0, size=(40 * d, d)) + 1.0
    for i in range(len(x)):
        if i % 3:
            x[i, rng.permutation(d)[: 1 + i % d]] = np.nan
    centre = np.nanmean(x, axis=0)
    s = _state(ct, k, d, seed=3).spec(centre)
    spec = ModelSpec(s.params, ct, resp_log_resp=True, marginal=s.marginal)
    got = _compare(x, [spec], centre, rng.random(len(x)) * 2)
    assert got[0].resp_log_resp < 0


@pytest.mark.parametrize("ct", ("full", "diag"))
def test_blocks_sub_blocks_and_chunks_do_not_matter(variant, ct):
    d = 6
    x = _rows(3001, d, 0.2, seed=4)
    centre = np.nanmean(x, axis=0)
    req = MixtureRequest([_state(ct, 5, d, seed=1).spec(centre)])
    one = chunk_pass(x, [req], centre, compiled=True)[0][0]
    parts = [chunk_pass(c, [req], centre, compiled=True, block_rows=97) for c in np.array_split(x, 7)]
    res = parts[0]
    for p in parts[1:]:
        res = merge_partials([req], res, p)
    many = res[0][0]
    assert many.loglik == pytest.approx(one.loglik, rel=1e-12)
    for name in ("n", "s1", "s2"):
        np.testing.assert_allclose(getattr(many, name), getattr(one, name), rtol=1e-11, atol=1e-9)


def test_a_fit_with_the_core_equals_one_without(monkeypatch):
    """GaussianMixture(missing="marginalize") fits the same model with the core as with NumPy, rows with
    nothing observed (left out) included."""
    from daskgmm import GaussianMixture

    if compiled.ready() is None:
        pytest.skip(f"compiled core not in use: {compiled.error()}")
    rng = np.random.default_rng(0)
    n = 6000
    x = np.vstack([rng.normal(size=(n // 2, 4)), rng.normal(size=(n - n // 2, 4)) @ np.diag([1, 2, 1, .5]) + 4])
    x[rng.random(x.shape) < 0.2] = np.nan
    x[[5, 700, 4000]] = np.nan  # rows with nothing observed: left out by both paths
    fits = {}
    for kernel in ("auto", "numpy"):
        monkeypatch.setenv("DASKGMM_KERNEL", kernel)
        compiled.reset()
        try:
            fits[kernel] = [GaussianMixture(2, covariance_type=ct, missing="marginalize", random_state=0,
                                            max_iter=15).fit(x) for ct in TYPES]
        finally:
            monkeypatch.delenv("DASKGMM_KERNEL")
            compiled.reset()
    for a, b in zip(fits["auto"], fits["numpy"], strict=True):
        assert a.n_iter_ == b.n_iter_
        np.testing.assert_allclose(a.means_, b.means_, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(a.covariances_, b.covariances_, rtol=1e-9, atol=1e-9)
        assert a.lower_bound_ == pytest.approx(b.lower_bound_, rel=1e-10)


# --------------------------------------------------------------------------- the argument's checks


def _args(n=10, d=3, k=2):
    p = n_feature_rows(FULL_LEVEL, d)
    x = np.zeros((n, d))
    x[0, 1] = np.nan
    return dict(x=x, centre=np.zeros(d), w=None, theta=np.zeros((k, p)), level=FULL_LEVEL,
                bounds=np.array([0, k]), modes=np.zeros(1, np.int64), S=np.zeros((k, p)), per_row=np.zeros((1, n)),
                rlogr=np.zeros(1))


@pytest.mark.parametrize("marginal, message", [
    (5, "marginal must be None or a sequence of 1 entries"),
    ([None, None], "marginal must have 1 entries"),
    ([np.zeros((2, 3))], r"marginal\[0\] must be None or a tuple \(means, factor\)"),
    ([(np.zeros((2, 3)),)], r"marginal\[0\] must be None or a tuple"),
    ([(np.zeros((3, 3)), np.ones((2, 3)))], r"marginal\[0\] means must have shape \(2, 3\)"),
    ([(np.zeros((2, 3), np.float32), np.ones((2, 3)))], r"marginal\[0\] means must be float64"),
    ([(np.zeros((2, 3)), np.ones((2, 4)))], r"marginal\[0\] factor must have shape \(2, 3, 3\) or \(2, 3\)"),
    ([(np.zeros((2, 3)), np.ones((2, 3, 2)))], r"marginal\[0\] factor must have shape \(2, 3, 3\) or \(2, 3\)"),
    ([(np.zeros((2, 3)), np.ones((2, 3, 3))[:, :, ::-1])], r"marginal\[0\] factor must be a C-contiguous"),
    ([(np.zeros((2, 3)), np.ones(6))], r"marginal\[0\] factor must be 3-D"),
    ([(np.zeros((2, 3)), np.ones((2, 3), np.int64))], r"marginal\[0\] factor must be float64"),
])
def test_every_marginal_pointer_is_checked(marginal, message):
    if compiled.ready() is None:
        pytest.skip(f"compiled core not in use: {compiled.error()}")
    with pytest.raises(ValueError, match=message):
        compiled.ready().mixture_block(**_args(), marginal=marginal)


def test_marginal_none_entries_and_form():
    if compiled.ready() is None:
        pytest.skip(f"compiled core not in use: {compiled.error()}")
    args = _args()
    assert compiled.ready().mixture_block(**args, marginal=[None]) == 1
    assert args["per_row"][0, 0] == 0.0  # left out
    for ct, shape in (("full", (2, 3, 3)), ("tied", (2, 3, 3)), ("diag", (2, 3)), ("spherical", (2, 3))):
        means, factor = marginal_form(_state(ct, 2, 3, seed=0).spec(np.zeros(3)).marginal)
        assert factor.shape == shape and factor.flags.c_contiguous and means.shape == (2, 3)
        args = _args()
        compiled.ready().mixture_block(**args, marginal=[(means, factor)])
        assert np.isfinite(args["per_row"][0, 0]) and args["per_row"][0, 0] != 0.0


@pytest.mark.parametrize("ct", TYPES)
def test_hard_assignment_with_nan_parameters_stays_in_the_model(variant, ct):
    """Parameters of NaN (a start from no drawable row) in a hard marginal model: no logit of a row with NaN
    equals its NaN maximum, and the core's search for the first one ran on past the components, writing far
    from the sums (a segmentation fault in a StudentTMixture start with no complete row). Every row goes to the
    first component, as NumPy's arg-max and the core's complete rows give it."""
    d, k = 6, 3
    x = _rows(300, d, 0.3, seed=1)
    centre = np.nanmean(x, axis=0)
    weights, means, covs = random_mixture(ct, k, d, np.random.default_rng(2), 3.0)
    means[:] = np.nan
    s = MixtureState.from_covariances(weights, means, covs, ct, missing="marginalize").spec(centre)
    hard = ModelSpec(s.params, ct, assignment="hard", marginal=s.marginal)
    counts = [chunk_pass(x, [MixtureRequest([hard])], centre, compiled=c)[0][0].n for c in (True, False)]
    np.testing.assert_array_equal(counts[0], counts[1])
    assert counts[0][0] == len(x) - 1  # the row with nothing observed is left out
