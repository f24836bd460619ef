"""The compiled core's Student-t pass against the NumPy reference (daskgmm.kernels.studentt), every variant.

The NumPy pass is checked against per-row SciPy references in tests/test_studentt.py and
tests/test_missing_studentt.py; here one pass of every variant this CPU runs must give its statistics
(moments, Σ r, Σ r (log u - u + 1), log-likelihood) to 1e-10 in float64: every covariance type, K and D
from 1 to beyond 16, ragged tails, float32, sample weights, several models in lockstep, and rows with
NaN under missing="marginalize" with every missing count 1..D-1.
"""

import numpy as np
import pytest

from daskgmm.kernels import chunk_pass, compiled
from daskgmm.kernels.features import n_feature_rows
from daskgmm.kernels.studentt import StudentTRequest
from daskgmm.models.studentt import StudentTState

from .conftest import random_mixture

TYPES = ("full", "tied", "diag", "spherical")




def _state(ct, k, d, seed, missing="raise", eps_dtype=np.float64, df=None):
    rng = np.random.default_rng(seed)
    weights, means, covs = random_mixture(ct, k, d, rng, spread=2.0)
    # small and large degrees of freedom (up to DF_BOUNDS): heavy tails, and u near 1 (log u - u + 1 cancels)
    df = rng.choice([1.5, 4.0, 30.0, 2e4, 1e6], size=k) if df is None else df
    return StudentTState.from_covariances(weights, means, covs, ct, df, missing=missing, eps_dtype=eps_dtype)


def _rows(n, d, seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    x = rng.standard_t(3.0, size=(n, d)) * 2.0 + 0.5
    return x.astype(dtype)


def _spec(state, centre):
    spec = state.spec(centre)
    assert spec.precise is None  # the shared-feature form, which the core takes
    return spec


def _compare(x, specs, centre, w=None, rtol=1e-10, **kw):
    got = chunk_pass(x, [StudentTRequest(specs)], centre, sample_weight=w, compiled=True, **kw)[0]
    want = chunk_pass(x, [StudentTRequest(specs)], centre, sample_weight=w, compiled=False, **kw)[0]
    for g, r in zip(got, want, strict=True):
        for name in ("n", "s1", "s2"):
            a, b = getattr(g.moments, name), getattr(r.moments, name)
            np.testing.assert_allclose(a, b, rtol=0, atol=rtol * max(np.abs(b).max(), 1.0), err_msg=name)
        np.testing.assert_allclose(g.resp, r.resp, rtol=0, atol=rtol * max(np.abs(r.resp).max(), 1.0))
        # Σ r (log u - u + 1): each term <= 0 for complete rows (no cancellation in the sum), and as small
        # as (D/nu)²/2 for large nu, where the degrees of freedom's update needs it to a relative precision
        np.testing.assert_allclose(g.log_u, r.log_u, rtol=rtol, atol=1e-300)
        assert g.loglik == pytest.approx(r.loglik, rel=rtol)
        assert (g.weight, g.rows) == (r.weight, r.rows)
    return got


def _uses_core(specs, d, dtype=np.float64):
    acc = StudentTRequest(specs).start(d, np.dtype(dtype), specs[0].level, np.zeros(d), compiled.ready())
    return acc["fused"] is not None


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("ct", TYPES)
@pytest.mark.parametrize("k, d, n", [(1, 1, 37), (3, 2, 301), (5, 7, 263), (16, 16, 515), (17, 19, 130)])
def test_complete_rows_equal_numpy(variant, ct, k, d, n, weighted):
    """K and D from 1 to beyond 16 (K not a multiple of any vector width), ragged tails of rows."""
    x = _rows(n, d, seed=k + d)
    w = np.random.default_rng(1).random(n) * 2 if weighted else None
    centre = x.mean(axis=0)
    specs = [_spec(_state(ct, k, d, seed=d), centre)]
    assert _uses_core(specs, d)
    _compare(x, specs, centre, w)


@pytest.mark.parametrize("ct", TYPES)
def test_float32_in_float32_lanes(variant, ct):
    """float32 rows: the distances in float32 lanes, the t step in float64, statistics in float64."""
    x = _rows(3000, 6, seed=3, dtype=np.float32)  # float32 lanes flushed into float64 every 2048 rows
    centre = x.astype(np.float64).mean(axis=0)
    specs = [_spec(_state(ct, 4, 6, seed=2, eps_dtype=np.float32), centre)]
    assert _uses_core(specs, 6, np.float32)
    _compare(x, specs, centre, rtol=2e-5)


def test_many_models_in_lockstep_and_small_blocks(variant):
    """Models of different K and covariance type in one pass (the widest level for all), some of which
    marginalise missing values and some not, over blocks and sub-blocks of every size."""
    d = 5
    x = _rows(700, d, seed=9)
    x[np.random.default_rng(2).random(x.shape) < 0.1] = np.nan
    centre = np.nanmean(x, axis=0)
    specs = [_spec(_state(ct, k, d, seed=k, missing=m), centre)
             for ct, k, m in [("full", 3, "marginalize"), ("diag", 7, "raise"), ("spherical", 1, "marginalize"),
                              ("tied", 5, "marginalize"), ("full", 2, "raise")]]
    w = np.random.default_rng(3).random(len(x))
    _compare(x, specs, centre, w)
    _compare(x, specs, centre, w, block_rows=33)


@pytest.mark.parametrize("ct", TYPES)
@pytest.mark.parametrize("d", [7, 17])
def test_rows_with_every_missing_count(variant, ct, d):
    """Rows missing 1, 2, ..., D - 1 features (each count on rows of its own, patterns at random), complete
    rows, weights: the t marginal's logits, weights u and completions."""
    rng = np.random.default_rng(d)
    x = _rows(60 * d, d, seed=d)
    for i in range(len(x)):
        m = i % d  # 0 .. D - 1 missing
        x[i, rng.permutation(d)[:m]] = np.nan
    centre = np.nanmean(x, axis=0)
    k = 5 if d < 16 else 16
    specs = [_spec(_state(ct, k, d, seed=1, missing="marginalize"), centre)]
    assert _uses_core(specs, d)
    w = rng.random(len(x)) * 2
    _compare(x, specs, centre, w)


@pytest.mark.parametrize("ct", ["diag", "spherical"])
def test_diagonal_models_with_few_and_many_rows_with_nan(variant, ct):
    """Diagonal models take a sub-block's rows with NaN one by one when they are few, and by the
    missing-value indicators when a third or more have NaN: blocks of both kinds in one pass."""
    d = 8
    x = _rows(900, d, seed=11)
    rng = np.random.default_rng(12)
    dense = (np.arange(len(x)) // 150) % 2 == 0  # blocks of 150 rows: 30% missing, then 1%
    x[(rng.random(x.shape) < np.where(dense, 0.3, 0.01)[:, None])] = np.nan
    centre = np.nanmean(x, axis=0)
    specs = [_spec(_state(ct, 6, d, seed=3, missing="marginalize"), centre),
             _spec(_state(ct, 2, d, seed=4), centre)]  # beside a model that leaves them out
    w = rng.random(len(x))
    _compare(x, specs, centre, w, block_rows=150)


def test_float32_rows_with_nan(variant):
    d = 6
    x = _rows(500, d, seed=4, dtype=np.float32)
    x[np.random.default_rng(5).random(x.shape) < 0.2] = np.nan
    centre = np.nanmean(x.astype(np.float64), axis=0)
    for ct in TYPES:
        specs = [_spec(_state(ct, 3, d, seed=6, missing="marginalize", eps_dtype=np.float32), centre)]
        _compare(x, specs, centre, rtol=2e-5)


@pytest.mark.parametrize("ct", ["full", "diag"])
def test_sub_blocks_of_any_size_give_the_same_statistics(variant, ct):
    """The core's sub-blocks (16 rows, with a ragged last one, against its default) sum to the same."""
    d = 5
    x = _rows(301, d, seed=8)
    x[np.random.default_rng(9).random(x.shape) < 0.2] = np.nan
    centre = np.nanmean(x, axis=0)
    spec = _spec(_state(ct, 3, d, seed=5, missing="marginalize"), centre)
    req = StudentTRequest([spec])
    out = []
    for sub in (0, 16):
        f = req.start(d, np.dtype(np.float64), spec.level, centre, compiled.ready())["fused"]
        per_row = np.zeros((1, len(x)))
        f.kernel.studentt_block(x, f.centre, None, f.theta, f.level, f.bounds, f.df, f.const, f.hterm, f.S,
                                f.resp, f.log_u, per_row, sub_rows=sub, marginal=f.marginal)
        out.append((f.S, f.resp, f.log_u, per_row))
    for a, b in zip(*out, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * np.abs(b).max())


def test_precise_models_stay_numpy():
    """A model badly conditioned for the shared features takes the per-component path, in NumPy (as a
    Gaussian model's); the core takes the request only when none of its models needs it."""
    d = 3
    state = _state("full", 2, d, seed=0)
    far = StudentTState.from_covariances(state.weights, state.means + 1e5, state.covariances * 1e-6, "full",
                                         state.df)
    spec = far.spec(np.zeros(d))
    assert spec.precise is not None
    assert StudentTRequest([spec]).start(d, np.dtype(np.float64), 2, np.zeros(d), object())["fused"] is None


def _core():
    mod = compiled.ready()
    if mod is None:
        pytest.skip(f"the compiled core is not in use here ({compiled.error()})")
    return mod


def _good_args(n=10, d=3, k=2, level=2):
    p = n_feature_rows(level, d)
    return dict(x=np.zeros((n, d)), centre=np.zeros(d), w=None, theta=np.zeros((k, p)), level=level,
                bounds=np.array([0, k]), df=np.ones(k), const=np.zeros((k, d + 1)), hterm=np.zeros((k, d + 1)),
                S=np.zeros((k, p)), resp=np.zeros(k), log_u=np.zeros(k), per_row=np.zeros((1, n)))


@pytest.mark.parametrize("change, message", [
    (dict(x=np.zeros((10, 3), np.int32)), "x must be float32 or float64"),
    (dict(x=np.zeros((10, 6))[:, ::2]), "x must have rows or columns contiguous"),
    (dict(theta=np.zeros((2, 10), np.float32)), "theta must be float64"),
    (dict(bounds=np.array([0, 3])), r"theta must have shape \(3, 10\)"),
    (dict(df=np.ones(3)), r"df must have shape \(2,\)"),
    (dict(df=np.array([1.0, 0.0])), r"df\[1\] must be positive and finite, got 0"),
    (dict(df=np.array([np.inf, 1.0])), r"df\[0\] must be positive and finite"),
    (dict(df=np.array([np.nan, 1.0])), r"df\[0\] must be positive and finite"),
    (dict(const=np.zeros((2, 3))), r"const must have shape \(2, 4\)"),
    (dict(hterm=np.zeros((2, 4), np.float32)), "hterm must be float64"),
    (dict(S=np.zeros((10, 2)).T), "S must be a C-contiguous"),
    (dict(resp=np.zeros(3)), r"resp must have shape \(2,\)"),
    (dict(log_u=np.zeros((2, 1))), "log_u must be 1-D"),
    (dict(per_row=np.zeros((1, 11))), r"per_row must have shape \(1, 10\)"),
    (dict(marginal=[(np.zeros((2, 3)), np.zeros((2, 3, 2)))]), r"marginal\[0\] factor must have shape"),
    (dict(marginal=[None, None]), "marginal must have 1 entries"),
    (dict(), None),
])
def test_every_pointer_is_checked(change, message):
    mod = _core()
    args = {**_good_args(), **change}
    if message is None:
        assert mod.studentt_block(**args) == 0
        return
    with pytest.raises(ValueError, match=message):
        mod.studentt_block(**args)


def test_read_only_outputs_are_refused():
    mod = _core()
    args = _good_args()
    args["log_u"].setflags(write=False)
    with pytest.raises(ValueError, match="log_u must be a C-contiguous writable"):
        mod.studentt_block(**args)


@pytest.mark.parametrize("missing", ["raise", "marginalize"])
def test_a_fit_with_the_core_equals_one_without(monkeypatch, missing):
    """A whole StudentTMixture fit (its start's sample fits and its passes) with the core, and with
    DASKGMM_KERNEL=numpy: the same fit to rounding, in as many iterations."""
    import dask.array as da

    from daskgmm import StudentTMixture

    _core()
    rng = np.random.default_rng(1)
    X = np.vstack([rng.standard_t(4.0, size=(1500, 3)), rng.standard_t(4.0, size=(1500, 3)) + 5])
    if missing == "marginalize":
        X[rng.random(X.shape) < 0.15] = np.nan
        X = X[~np.isnan(X).all(axis=1)]
    calls = []
    real = compiled.FusedStudentT.update
    monkeypatch.setattr(compiled.FusedStudentT, "update", lambda self, *a: calls.append(1) or real(self, *a))

    def fit():
        return StudentTMixture(2, random_state=0, max_iter=30, missing=missing).fit(da.from_array(X, chunks=700))

    a = fit()
    assert calls
    monkeypatch.setenv("DASKGMM_KERNEL", "numpy")
    compiled.reset()
    try:
        del calls[:]
        b = fit()
        assert not calls
    finally:
        monkeypatch.delenv("DASKGMM_KERNEL")
        compiled.reset()
    assert a.n_iter_ == b.n_iter_
    for name in ("weights_", "means_", "covariances_", "df_"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-8, atol=1e-10, err_msg=name)
    assert a.lower_bound_ == pytest.approx(b.lower_bound_, rel=1e-10)


@pytest.mark.parametrize("entry", ["studentt_block", "mixture_block"])
def test_sub_rows_is_checked_and_bounded_by_the_rows(entry):
    """A sub-block longer than the block is the block (2**62 rows once overflowed the scratch's size and
    crashed the process); a negative one is an error naming it."""
    mod = _core()

    def run(sub):
        a = _good_args(n=37)
        a["x"] = _rows(37, 3, seed=3)
        a["theta"] = np.random.default_rng(4).normal(size=a["theta"].shape)
        if entry == "mixture_block":
            a = dict(x=a["x"], centre=a["centre"], w=None, theta=a["theta"], level=a["level"], bounds=a["bounds"],
                     modes=np.zeros(1, np.int64), S=a["S"], per_row=a["per_row"], rlogr=np.zeros(1))
        getattr(mod, entry)(**a, sub_rows=sub)
        return a["S"], a["per_row"]

    want = run(37)
    for sub in (2**62, 2**63 - 1, 10**12):
        for g, r in zip(run(sub), want, strict=True):
            np.testing.assert_array_equal(g, r)
    with pytest.raises(ValueError, match="sub_rows must be >= 0"):
        run(-1)


@pytest.mark.parametrize("n", [3000, 70000], ids=["one block", "many blocks"])
def test_models_in_lockstep_with_a_precise_one_keep_the_core_and_their_bits_alone(variant, n):
    """As a Gaussian mixture's (tests/test_compiled.py): a t model that needs the per-component form took the
    whole pass to NumPy; now the others keep the core, and every model has its statistics alone, bit for bit."""
    from dataclasses import replace

    from daskgmm.models.studentt import t_form

    d = 4
    x = _rows(n, d, 5)
    centre = x.mean(axis=0)
    states = [_state(ct, k, d, seed) for ct, k, seed in [("full", 3, 1), ("diag", 2, 2), ("tied", 3, 3)]]
    specs = [_spec(s, centre) for s in states]
    far = states[1]
    specs[1] = replace(specs[1], precise=t_form(far.weights, far.means, far.precisions_cholesky, "diag", far.df,
                                                centre))
    got = _compare(x, specs, centre)
    for spec, g in zip(specs, got, strict=True):
        alone = chunk_pass(x, [StudentTRequest([spec])], centre, compiled=True)[0][0]
        for name in ("n", "s1", "s2", "shift"):
            np.testing.assert_array_equal(getattr(g.moments, name), getattr(alone.moments, name), err_msg=name)
        for name in ("resp", "log_u", "loglik", "weight"):
            np.testing.assert_array_equal(getattr(g, name), getattr(alone, name), err_msg=name)
