"""The compiled core against the NumPy reference, for every variant this CPU runs.

Nothing here skips on CPU flags as a whole: the variants the CPU cannot run are skipped one by
one (the baseline or generic one runs everywhere), and the tests of the selection, the checks
and the NumPy fallback run on every host. Where the core was not built at all (no compiler at
install), the tests that need it say so.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from daskgmm.kernels import MixtureRequest, ModelSpec, chunk_pass, compiled
from daskgmm.kernels.features import FULL_LEVEL, n_feature_rows
from daskgmm.kernels.params import NaturalParams, natural_params

from .conftest import at_odd_bytes, layouts


def _params(rng, k, d, ct, scale=1.0):
    if ct == "full":
        a = rng.normal(size=(k, d, d))
        quad = -0.5 * (np.einsum("kij,klj->kil", a, a) / d + np.eye(d))
    elif ct == "diag":
        quad = -0.5 * (np.abs(rng.normal(size=(k, d))) + 0.1)
    else:
        quad = -0.5 * (np.abs(rng.normal(size=k)) + 0.1)
    return NaturalParams(quad=quad * scale, lin=rng.normal(size=(k, d)) * scale, const=rng.normal(size=k))


def _compare(x, specs, w=None, rtol=1e-12, centre=None, reference=None, **kw):
    """The core's pass of ``specs`` against NumPy's (of ``reference`` when given: the same models, where
    NumPy's rounding must not decide)."""
    centre = x.astype(np.float64).mean(axis=0) if centre is None else centre
    got = chunk_pass(x, [MixtureRequest(specs)], centre, sample_weight=w, compiled=True, **kw)[0]
    want = chunk_pass(x, [MixtureRequest(reference or specs)], centre, sample_weight=w, compiled=False, **kw)[0]
    for g, r in zip(got, want, strict=True):
        # s1 about the mean cancels to ~0: compare with the size of what it sums
        spread = r.weight * float(np.nanmax(np.abs(x.astype(np.float64) - centre)))
        for name in ("n", "s1", "s2"):
            a, b = getattr(g, name), getattr(r, name)
            scale = max(np.abs(b).max(), spread if name == "s1" else 0.0, 1e-300)
            np.testing.assert_allclose(a, b, rtol=0, atol=rtol * scale, err_msg=name)
        for name in ("loglik", "resp_log_resp", "weight", "rows"):
            assert getattr(g, name) == pytest.approx(getattr(r, name), rel=rtol, abs=1e-300), name
        if r.worst is not None:
            np.testing.assert_array_equal(g.worst.rows, r.worst.rows)
    return got


def test_auto_order_prefers_256_bit_vectors_on_amd_zen4_only():
    built = ["avx512", "avx512_256", "avx2", "baseline"]
    avx512 = {f: True for f in ("sse2", "avx2", "fma", "avx512f", "avx512dq", "avx512bw", "avx512vl")}
    assert compiled.preferred(built, {**avx512, "amd_zen4": True}) == ["avx512_256", "avx512", "avx2", "baseline"]
    assert compiled.preferred(built, {**avx512, "amd_zen4": False}) == built
    avx2 = {"sse2": True, "avx2": True, "fma": True, "amd_zen4": False}
    assert compiled.preferred(built, avx2) == ["avx2", "baseline"]
    assert compiled.preferred(["avx512", "avx2", "baseline"], {**avx512, "amd_zen4": True}) == [
        "avx512", "avx2", "baseline"]  # built without it
    assert compiled.preferred(["generic"], {}) == ["generic"]


@pytest.mark.parametrize("ct", ["full", "tied", "diag", "spherical"])
@pytest.mark.parametrize("d, sizes", [(1, [1]), (2, [3]), (3, [16, 16]), (5, [7, 2]), (16, [16]), (17, [37]),
                                      (7, [20, 13, 1])])
def test_every_variant_equals_numpy(variant, ct, d, sizes):
    rng = np.random.default_rng(d * 100 + len(sizes))
    n = 1000 + d  # ragged: no sub-block or tile divides it
    x = rng.normal(size=(n, d)) * 3 + 1
    w = rng.random(n) * 2
    stats_ct = "full" if ct == "tied" else ct
    specs = [ModelSpec(_params(rng, k, d, stats_ct), ct, n_worst=3) for k in sizes]
    _compare(x, specs, w)
    _compare(x, specs, None)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("d, sizes", [(1, [1]), (2, [3]), (3, [5, 2]), (16, [16]), (16, [16] * 8), (17, [37]),
                                      (5, [4, 9, 1]), (7, [6]), (9, [6]), (13, [11, 3])])
def test_kmeans_pass_equals_numpy(variant, d, sizes, dtype):
    """Passes whose models all assign hard at the spherical level (k-means, n_init in lockstep) take
    their own path in the core: the same labels, worst rows and statistics as NumPy, with weights,
    rows with NaN, ragged tails, and a duplicated centre (ties go to the first). The statistics
    unroll a row's vectors of doubles by their number (1 to 4, else a loop): every count and a
    tail on each variant's width."""
    rng = np.random.default_rng(d * 10 + len(sizes))
    n = 1000 + d
    x = rng.normal(size=(n, d)) + rng.integers(0, 4, size=(n, 1)) * 3
    x[rng.random(n) < 0.02, rng.integers(0, d)] = np.nan
    x = x.astype(dtype)
    centre = np.nanmean(x.astype(np.float64), axis=0)
    specs, reference = [], []
    for k in sizes:
        quad = -np.ones(k) if len(specs) % 2 == 0 else -(np.abs(rng.normal(size=k)) + 0.5)  # k-means; spherical CEM
        lin, const = rng.normal(size=(k, d)) * 3, rng.normal(size=k)
        ref_const = const
        if k > 2 and dtype == np.float64:  # component 2 repeats component 1, and never wins: in NumPy's
            # reference it is far below instead (BLAS rounds two equal rows of theta differently at some
            # positions of its tiles: OpenBLAS's Haswell dgemm for 3 rows, its sgemm for more)
            lin[2], quad[2], const[2] = lin[1], quad[1], const[1]
            ref_const = const.copy()
            ref_const[2] -= 1e3
        specs.append(ModelSpec(NaturalParams(quad=quad, lin=lin, const=const), "spherical", "hard", n_worst=3))
        reference.append(ModelSpec(NaturalParams(quad=quad, lin=lin, const=ref_const), "spherical", "hard",
                                   n_worst=3))
    rtol = 1e-12 if dtype == np.float64 else 2e-5
    for w in (None, rng.random(n) * 2):
        got = _compare(x, specs, w, rtol=rtol, centre=centre, reference=reference)
        for g, spec in zip(got, specs, strict=True):
            if spec.params.n_components > 2 and dtype == np.float64:
                assert g.n[2] == 0  # the duplicate of component 1 never wins


@pytest.mark.parametrize("k", [3, 16, 40])
def test_float32_kmeans_ties_go_to_the_first_component_on_every_path(variant, k):
    """float32 k-means in the core: an exactly repeated centre has the same logits bit for bit and
    never wins (ties to the first), whether the labels come from masks of the row's maximum (float32,
    components in two vectors: K = 16 on 256-bit vectors) or from the per-lane arg-max (others; or rows so
    large that the core cannot rule out an overflow: the same data times 2^59, which scales every
    logit exactly, so the same counts)."""
    rng = np.random.default_rng(k)
    d = 5
    x = rng.normal(size=(700, d)) + rng.integers(0, 4, size=(700, 1)) * 3
    centres = x[rng.choice(len(x), k, replace=False)].copy()
    centres[2], centres[k - 1] = centres[1], centres[0]
    counts = []
    for scale in (1.0, 2.0**59):
        xs, cs = (x * scale).astype(np.float32), (centres * scale).astype(np.float32).astype(np.float64)
        centre = xs.astype(np.float64).mean(axis=0)
        c = cs - centre
        params = NaturalParams(quad=-np.ones(k), lin=2 * c, const=-np.einsum("kd,kd->k", c, c))
        if scale > 1:  # the core's bound on the logits' partial sums passes a quarter of float32's range,
            # though none comes near it
            e = xs.astype(np.float64) - centre
            e2 = (e**2).sum(axis=1).max()
            bound = np.abs(params.const).max() + e2 + np.linalg.norm(params.lin, axis=1).max() * np.sqrt(e2)
            largest = (np.abs(params.const) + np.abs(e) @ np.abs(params.lin).T).max()
            assert largest < np.finfo(np.float32).max / 2 and bound > np.finfo(np.float32).max / 4
        got = chunk_pass(xs, [MixtureRequest([ModelSpec(params, "spherical", "hard")])], centre, compiled=True)[0][0]
        assert got.n[2] == got.n[k - 1] == 0 and got.n.sum() == len(x)
        counts.append(got.n)
    np.testing.assert_array_equal(counts[0], counts[1])


@pytest.mark.parametrize("ct", ["full", "diag", "spherical"])
def test_hard_assignment_and_resp_log_resp(variant, ct):
    """Hard models (k-means, classification EM) and the variational Σ r log r, mixed in one pass."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2500, 4)) + rng.integers(0, 3, size=(2500, 1)) * 3
    specs = [ModelSpec(_params(rng, 5, 4, ct), ct, assignment="hard", n_worst=4),
             ModelSpec(_params(rng, 3, 4, ct), ct, resp_log_resp=True),
             ModelSpec(_params(rng, 6, 4, ct), ct, assignment="hard")]
    _compare(x, specs, rng.random(2500))


def test_float32_in_float32_lanes(variant):
    """float32 rows: logits in float32 (as NumPy's float32 path), statistics in float64."""
    rng = np.random.default_rng(2)
    x = (rng.normal(size=(5000, 6)) * 2).astype(np.float32)
    specs = [ModelSpec(_params(rng, 8, 6, "full", 0.3), "full"), ModelSpec(_params(rng, 4, 6, "diag"), "diag",
                                                                             assignment="hard")]
    got = _compare(x, specs, rtol=2e-5)
    assert all(s.s2.dtype == np.float64 for s in got)


def test_strided_and_integer_input_are_copied_not_misread(variant):
    rng = np.random.default_rng(4)
    base = rng.normal(size=(3000, 8))
    specs = [ModelSpec(_params(rng, 4, 4, "full"), "full")]
    _compare(base[:, ::2], specs)  # a strided view: chunk_pass copies blocks as needed
    _compare(np.asfortranarray(base[:, :4]), specs)


def _fields(obj):
    """Every array and number of a pass's result (dataclasses, lists, tuples), in order."""
    import dataclasses
    if dataclasses.is_dataclass(obj):
        return [v for f in dataclasses.fields(obj) for v in _fields(getattr(obj, f.name))]
    if isinstance(obj, (list, tuple)):
        return [v for o in obj for v in _fields(o)]
    return [obj] if isinstance(obj, (np.ndarray, float, int, np.floating, np.integer)) else []


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("d", [1, 7, 16])
def test_every_layout_gives_the_same_bits(variant, dtype, d):
    """The core reads a block where it lies, rows or columns contiguous, with no copy: every kind of
    pass (soft, hard, k-means, marginalising rows with NaN, Student-t, predictions) gives the same
    bits from each layout, in small blocks with ragged tails."""
    from daskgmm.kernels.predict import mixture_logits
    from daskgmm.kernels.studentt import StudentTRequest
    from daskgmm.models.states import MixtureState
    from daskgmm.models.studentt import StudentTState

    from .conftest import random_mixture

    rng = np.random.default_rng(d)
    n = 1003
    x = rng.normal(scale=3.0, size=(n, d)) + rng.integers(0, 3, size=(n, 1)) * 2
    x[rng.random((n, d)) < 0.1] = np.nan
    x[np.isnan(x).all(axis=1), 0] = 1.0  # at least one value observed per row
    x = x.astype(dtype)
    centre = np.nanmean(x.astype(np.float64), axis=0)

    def state(cls, ct, k, seed, **kw):
        weights, means, covs = random_mixture(ct, k, d, np.random.default_rng(seed))
        return cls.from_covariances(weights, means, covs, ct, missing="marginalize", **kw)

    gauss = [state(MixtureState, ct, k, i).spec(centre, n_worst=2) for i, (ct, k) in
             enumerate([("full", 5), ("tied", 3), ("diag", 6), ("spherical", 4)])]
    gauss += [ModelSpec(_params(rng, 3, d, "diag"), "diag", "hard", resp_log_resp=False, n_worst=2),
              ModelSpec(_params(rng, 4, d, "full"), "full", resp_log_resp=True)]
    kmeans = [ModelSpec(NaturalParams(quad=-np.ones(k), lin=rng.normal(size=(k, d)) * 3, const=rng.normal(size=k)),
                        "spherical", "hard", n_worst=2) for k in (5, 16)]
    studentt = [state(StudentTState, ct, 3, 10 + i, df=np.array([2.0, 9.0, 1e3])).spec(centre)
                for i, ct in enumerate(("full", "diag"))]
    full = NaturalParams(quad=gauss[5].params.quad, lin=gauss[5].params.lin, const=gauss[5].params.const)
    w = rng.random(n)
    results = {}
    complete = layouts(np.nan_to_num(x))  # predictions refuse NaN without a marginal form
    for name, xl in layouts(x).items():
        block = xl[100:300]
        assert compiled.rows_for_core(block, dtype) is block  # read where it lies
        got = [chunk_pass(xl, [MixtureRequest(gauss)], centre, sample_weight=w, compiled=True, block_rows=256),
               chunk_pass(xl, [MixtureRequest(kmeans)], centre, compiled=True, block_rows=256),
               chunk_pass(xl, [StudentTRequest(studentt)], centre, sample_weight=w, compiled=True, block_rows=256),
               mixture_logits(complete[name], full, centre)]
        results[name] = _fields(got)
    for name, fields in results.items():
        assert len(fields) == len(results["C"])
        for i, (a, b) in enumerate(zip(fields, results["C"], strict=True)):
            np.testing.assert_array_equal(a, b, err_msg=f"{name}: value {i}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_blocks_of_either_layout_reach_the_core_as_they_are(dtype):
    """A block cut from a chunk in either order is passed as it lies (a Parquet chunk's rows are
    not copied into C order first), its items aligned or not; other strides or another dtype are
    copied."""
    base = np.zeros((500, 6), dtype=dtype)
    for x in (base, np.asfortranarray(base), np.asfortranarray(base)[10:200], base[:, :4], base[:1], base[:, :1],
              at_odd_bytes(base, "C"), at_odd_bytes(base, "F")[10:200]):
        assert compiled.rows_for_core(x, dtype) is x
    for x in (base[:, ::2], base[::-1], base.astype(np.float64 if dtype == np.float32 else np.float32)):
        y = compiled.rows_for_core(x, dtype)
        assert y is not x and y.flags.c_contiguous and y.dtype == dtype
        np.testing.assert_array_equal(y, x.astype(dtype))


def test_far_apart_tied_and_far_components(variant):
    """Logits 1e4 apart (the clamp), equal logits, a component far from every row."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(600, 2))
    p = _params(rng, 5, 2, "full")
    const = p.const.copy()
    const[0], const[3] = 1e4, -1e5
    lin = p.lin.copy()
    lin[2] = lin[1]
    quad = p.quad.copy()
    quad[2] = quad[1]
    const[2] = const[1]
    _compare(x, [ModelSpec(NaturalParams(quad, lin, const), "full")], centre=np.zeros(2))


def test_rows_with_nan_are_left_out_as_numpy_does(variant):
    """A model that does not marginalise leaves incomplete rows out (the initialisation's passes)."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3000, 3))
    x[rng.random(3000) < 0.05, 1] = np.nan
    specs = [ModelSpec(_params(rng, 4, 3, "spherical"), "spherical", assignment="hard", n_worst=5),
             ModelSpec(_params(rng, 3, 3, "full"), "full", n_worst=5)]
    _compare(x, specs, centre=np.zeros(3))


@pytest.mark.parametrize("n", [3000, 70000], ids=["one block", "many blocks"])
def test_models_in_lockstep_with_a_precise_one_keep_the_core_and_their_bits_alone(variant, n):
    """A model with a tight component far from the pass centre takes the per-component path, which only NumPy
    runs. In lockstep with others (restarts, select's candidates) it took the whole pass to NumPy: the others
    lost the core's speed and the bits they have fitted alone. The others now go through the core as a request
    of their own, the precise one through NumPy in its own blocks; each model's statistics are those of its
    pass alone, and NumPy's for the whole request within rounding."""
    from daskgmm.models.states import MixtureState

    from .conftest import random_mixture

    rng = np.random.default_rng(11)
    d = 5
    x = rng.normal(size=(n, d)) * 2
    x[: n // 100] = 1000 + rng.normal(size=(n // 100, d)) * 0.01  # the precise model's far, tight component's rows
    centre = x.mean(axis=0)
    specs = []
    for ct, k, far, hard in [("full", 3, False, False), ("full", 2, True, False), ("diag", 4, False, True),
                             ("tied", 3, False, False)]:
        weights, means, covs = random_mixture(ct, k, d, rng, 2.0)
        if far:
            means[0], covs[0] = 1000.0, np.eye(d) * 1e-4
        spec = MixtureState.from_covariances(weights, means, covs, ct).spec(centre)
        assert (spec.precise is not None) == far
        specs.append(ModelSpec(spec.params, ct, assignment="hard" if hard else "soft", n_worst=3,
                               precise=spec.precise, resp_log_resp=not hard))
    w = rng.random(n) + 0.5
    got = _compare(x, specs, w, rtol=1e-9, centre=centre)
    for spec, g in zip(specs, got, strict=True):
        alone = chunk_pass(x, [MixtureRequest([spec])], centre, sample_weight=w, compiled=True)[0][0]
        for name in ("n", "s1", "s2", "shift", "loglik", "resp_log_resp", "weight"):
            np.testing.assert_array_equal(getattr(g, name), getattr(alone, name), err_msg=name)
        np.testing.assert_array_equal(g.worst.rows, alone.worst.rows)


@pytest.mark.parametrize("case", ["nine shared models", "a pass level above the precise model's"])
def test_a_precise_model_in_lockstep_is_cut_into_the_blocks_it_takes_alone(case):
    """The precise part's NumPy blocks are those of its own pass (its feature level, its width), and the core's
    blocks a whole number of them: nine shared models take 58,254 rows a block, not a multiple of NumPy's 2,048;
    a full model beside a diagonal precise one made the pass's features full, 976 rows a block at D = 64, where
    alone it takes 2,048 (the precise model's sums then split elsewhere: other bits)."""
    from daskgmm.models.states import MixtureState

    from .conftest import random_mixture

    if compiled.ready() is None:
        pytest.skip("the compiled core is not in use here")
    n, d, models = ((140_000, 3, [("diag", 2, False)] * 9 + [("diag", 2, True)]) if case == "nine shared models"
                    else (6000, 64, [("full", 2, False), ("diag", 2, True)]))
    rng = np.random.default_rng(11)
    x = rng.normal(size=(n, d)) * 2
    x[: n // 100] = 1000 + rng.normal(size=(n // 100, d)) * 0.01
    centre = x.mean(axis=0)
    specs = []
    for ct, k, far in models:
        weights, means, covs = random_mixture(ct, k, d, rng, 2.0)
        if far:
            means[0], covs[0] = 1000.0, (np.full(d, 1e-4) if ct == "diag" else np.eye(d) * 1e-4)
        specs.append(MixtureState.from_covariances(weights, means, covs, ct).spec(centre))
        assert (specs[-1].precise is not None) == far
    got = chunk_pass(x, [MixtureRequest(specs)], centre, compiled=True)[0][-1]
    alone = chunk_pass(x, [MixtureRequest(specs[-1:])], centre, compiled=True)[0][0]
    for name in ("n", "s1", "s2", "loglik"):
        np.testing.assert_array_equal(getattr(got, name), getattr(alone, name), err_msg=name)


def test_many_blocks_accumulate(variant):
    rng = np.random.default_rng(0)
    n, d = 2 * 4096 + 1001, 3
    x = rng.normal(size=(n, d)) + rng.integers(0, 3, size=(n, 1)) * 4
    specs = []
    for k, ct in [(3, "full"), (3, "full"), (4, "diag"), (2, "spherical")]:
        means = rng.normal(size=(k, d)) * 4
        prec = {"full": np.tile(np.eye(d), (k, 1, 1)), "diag": np.ones((k, d)), "spherical": np.ones(k)}[ct]
        specs.append(ModelSpec(natural_params(np.full(k, 1 / k), means, prec, ct, x.mean(axis=0)), ct, n_worst=5))
    _compare(x, specs, rng.random(n), block_rows=4096)


def test_blocks_of_a_compiled_pass_are_sized_by_its_models():
    """Large blocks (the Python work around each call of the core), smaller for many models so that
    their per-row results stay bounded."""
    assert compiled.block_rows(1) == compiled.block_rows(8) == compiled.BLOCK_ROWS
    assert compiled.MIN_BLOCK_ROWS < compiled.block_rows(16) < compiled.BLOCK_ROWS
    assert compiled.block_rows(16) * 8 * 16 <= compiled.PER_ROW_BYTES
    assert compiled.block_rows(1000) == compiled.MIN_BLOCK_ROWS


def _core():
    mod = compiled.ready()
    if mod is None:
        pytest.skip(f"compiled core not in use: {compiled.error()}")
    return mod


def _good_args(n=10, d=3, k=2, level=FULL_LEVEL):
    p = n_feature_rows(level, d)
    return dict(x=np.zeros((n, d)), centre=np.zeros(d), w=None, theta=np.zeros((k, p)), level=level,
                bounds=np.array([0, k]), modes=np.zeros(1, np.int64), S=np.zeros((k, p)), per_row=np.zeros((1, n)),
                rlogr=np.zeros(1))


@pytest.mark.parametrize("change, message", [
    (dict(x=np.zeros((10, 3), np.int32)), "x must be float32 or float64"),
    (dict(x=np.zeros((10, 6))[:, ::2]), "x must have rows or columns contiguous"),
    (dict(x=np.zeros((10, 3))[::-1]), "x must have rows or columns contiguous"),
    (dict(x=np.zeros(30)), "x must be 2-D"),
    (dict(centre=np.zeros(4)), r"centre must have shape \(3,\)"),
    (dict(w=np.ones(9)), r"w must have shape \(10,\)"),
    (dict(theta=np.zeros((2, 9))), r"theta must have shape \(2, 10\)"),
    (dict(theta=np.zeros((2, 10), np.float32)), "theta must be float64"),
    (dict(bounds=np.array([0, 3])), r"theta must have shape \(3, 10\)"),
    (dict(bounds=np.array([1, 2])), "bounds must start at 0"),
    (dict(bounds=np.array([0.0, 2.0])), "bounds must be int64"),
    (dict(modes=np.array([5])), r"modes\[0\] must be"),
    (dict(S=np.zeros((2, 10)).T.copy().T), "S must be a C-contiguous"),
    (dict(S=np.zeros((2, 10))[None][0].view()), None),
    (dict(per_row=np.zeros((1, 11))), r"per_row must have shape \(1, 10\)"),
    (dict(rlogr=np.zeros(2)), r"rlogr must have shape \(1,\)"),
    (dict(counts=np.zeros(3)), r"counts must have shape \(2,\)"),
    (dict(counts=np.zeros(2, np.float32)), "counts must be float64"),
    (dict(counts=np.zeros((2, 1))), "counts must be 1-D"),
    (dict(counts=np.zeros(4)[::2]), "counts must be a C-contiguous"),
    (dict(counts=np.zeros(2)), None),
    (dict(level=3), "level must be 0, 1 or 2"),
])
def test_every_pointer_is_checked(change, message):
    mod = _core()
    args = {**_good_args(), **change}
    if message is None:
        mod.mixture_block(**args)
        return
    with pytest.raises(ValueError, match=message):
        mod.mixture_block(**args)


def test_read_only_outputs_are_refused():
    mod = _core()
    args = _good_args()
    args["S"].setflags(write=False)
    with pytest.raises(ValueError, match="S must be a C-contiguous writable"):
        mod.mixture_block(**args)
    args = {**_good_args(), "counts": np.zeros(2)}
    args["counts"].setflags(write=False)
    with pytest.raises(ValueError, match="counts must be a C-contiguous writable"):
        mod.mixture_block(**args)


def test_a_fit_with_the_core_equals_one_without(monkeypatch):
    from daskgmm import GaussianMixture, KMeans

    _core()
    rng = np.random.default_rng(1)
    n = 20_000
    X = np.vstack([rng.normal(size=(n // 2, 4)), rng.normal(size=(n - n // 2, 4)) + 3])
    calls = []
    real = compiled.Fused.update
    monkeypatch.setattr(compiled.Fused, "update", lambda self, *a: calls.append(1) or real(self, *a))
    a = GaussianMixture(3, random_state=0, max_iter=20).fit(X)
    ka = KMeans(3, random_state=0, n_init=1).fit(X)
    assert calls
    monkeypatch.setenv("DASKGMM_KERNEL", "numpy")
    compiled.reset()
    try:
        b = GaussianMixture(3, random_state=0, max_iter=20).fit(X)
        kb = KMeans(3, random_state=0, n_init=1).fit(X)
    finally:
        monkeypatch.delenv("DASKGMM_KERNEL")
        compiled.reset()
    assert a.n_iter_ == b.n_iter_
    np.testing.assert_allclose(a.means_, b.means_, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(a.covariances_, b.covariances_, rtol=1e-9, atol=1e-9)
    assert a.lower_bound_ == pytest.approx(b.lower_bound_, rel=1e-12)
    np.testing.assert_array_equal(ka.labels_, kb.labels_)
    np.testing.assert_allclose(ka.cluster_centers_, kb.cluster_centers_, rtol=1e-12)


@pytest.mark.behaviour
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pages no one may read: mmap and mprotect")
def test_no_read_past_either_end_of_a_block(variant):
    """Every kind of pass reads a block's bytes only: blocks in C and Fortran order, aligned or at
    odd bytes, with and without NaN, of every row count and feature count modulo the vector width,
    lie between pages no one may read. A fault would end the process, so the passes run in another."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    rc, out, err = _run(f"""
        import sys, warnings
        sys.path.insert(0, {root!r})
        import numpy as np
        from daskgmm.kernels import MixtureRequest, ModelSpec, chunk_pass, compiled
        from daskgmm.kernels.params import NaturalParams
        from daskgmm.kernels.predict import mixture_logits
        from daskgmm.kernels.studentt import StudentTRequest
        from daskgmm.models.states import MixtureState
        from daskgmm.models.studentt import StudentTState
        from tests.conftest import between_guard_pages, random_mixture
        warnings.simplefilter("ignore")
        assert compiled.kernel_name() == "compiled-{variant}", compiled.kernel_name()
        rng = np.random.default_rng(0)
        runs = 0
        for d in (1, 3, 7, 9, 17):
            for n in (1, 3, 5, 130):
                x = rng.normal(scale=3.0, size=(n, d)) + rng.integers(0, 3, size=(n, 1)) * 2
                xn = x.copy()
                if d > 1:
                    xn[rng.random((n, d)) < 0.2] = np.nan
                    xn[np.isnan(xn).all(axis=1), 0] = 1.0
                centre = x.mean(axis=0)

                def state(cls, ct, k, seed, **kw):
                    weights, means, covs = random_mixture(ct, k, d, np.random.default_rng(seed))
                    return cls.from_covariances(weights, means, covs, ct, missing="marginalize", **kw)

                gauss = [state(MixtureState, ct, k, i).spec(centre) for i, (ct, k) in
                         enumerate([("full", 5), ("tied", 3), ("diag", 6), ("spherical", 4)])]
                kmeans = [ModelSpec(NaturalParams(quad=-np.ones(k), lin=rng.normal(size=(k, d)), const=np.zeros(k)),
                                    "spherical", "hard") for k in (5, 16)]
                studentt = [state(StudentTState, ct, 3, 9, df=np.array([2.0, 9.0, 1e3])).spec(centre)
                            for ct in ("full", "diag")]
                for dtype in (np.float64, np.float32):
                    for order in ("C", "F"):
                        for odd in (0, 1):
                            for rows in (x, xn):
                                g = between_guard_pages(rows.astype(dtype), order, odd)
                                w = between_guard_pages(rng.random(n), "C")
                                chunk_pass(g, [MixtureRequest(gauss)], centre, sample_weight=w, compiled=True)
                                chunk_pass(g, [MixtureRequest(kmeans)], centre, compiled=True)
                                chunk_pass(g, [StudentTRequest(studentt)], centre, sample_weight=w, compiled=True)
                                if rows is x:
                                    mixture_logits(g, gauss[0].params, centre)
                                runs += 1
        print(runs)
    """, {"DASKGMM_KERNEL": variant})
    assert rc == 0, f"exit status {rc} (a fault: -11)\n{err[-3000:]}"
    assert out == "320"


def _run(code, env):
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         timeout=120, env={**os.environ, **env})
    return out.returncode, out.stdout.strip(), out.stderr


def test_switched_off_by_the_environment():
    rc, out, err = _run("""
        from daskgmm.kernels import compiled
        print(compiled.ready(), compiled.error(), compiled.kernel_name())
    """, {"DASKGMM_KERNEL": "numpy"})
    assert rc == 0, err
    assert out == "None switched off by DASKGMM_KERNEL=numpy numpy"


def test_a_variant_the_cpu_cannot_run_is_an_error_not_a_crash():
    cfg = compiled.config()
    cannot = [n for n in cfg["variants_built"] if compiled.load_variant(n) is None]
    if not cannot:
        pytest.skip("this CPU runs every variant built here")
    rc, _out, err = _run("""
        from daskgmm.kernels import compiled
        compiled.ready()
    """, {"DASKGMM_KERNEL": cannot[0]})
    assert rc == 1 and f"DASKGMM_KERNEL={cannot[0]}: this CPU lacks" in err


def test_an_unknown_choice_is_named():
    rc, _out, err = _run("from daskgmm.kernels import compiled; compiled.ready()", {"DASKGMM_KERNEL": "sse9"})
    assert rc == 1 and "DASKGMM_KERNEL must be one of" in err and "'sse9'" in err


@pytest.mark.behaviour
def test_without_the_extension_passes_use_numpy(tmp_path):
    """No compiler at install: the package imports, fits, and says why it runs NumPy."""
    rc, out, err = _run("""
        import sys, importlib.abc
        class Hide(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.startswith("daskgmm.kernels._core_"):
                    raise ModuleNotFoundError(name)
        sys.meta_path.insert(0, Hide())
        import numpy as np
        import daskgmm
        from daskgmm.kernels import compiled
        daskgmm.GaussianMixture(2, random_state=0).fit(np.random.default_rng(0).normal(size=(500, 2)))
        print(compiled.kernel_name(), "|", compiled.error())
    """, {"DASKGMM_KERNEL": "auto"})  # whatever the suite runs with (as-avx2-host sets numpy)
    assert rc == 0, err
    assert out.startswith("numpy | the compiled core was not built")


def test_show_config_names_the_build_and_the_choice(capsys):
    import daskgmm

    info = daskgmm.show_config()
    text = capsys.readouterr().out
    assert info["kernel"] == compiled.kernel_name()
    assert f"kernel: {info['kernel']}" in text
    assert "variants built:" in text and "cpu features:" in text


@pytest.mark.parametrize("ct", ["full", "diag", "spherical"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_prediction_logits_equal_numpy(variant, ct, dtype, monkeypatch):
    """Predictions and scores take their logits from the core (component_logits)."""
    from daskgmm.kernels.predict import component_logits

    rng = np.random.default_rng(11)
    x = (rng.normal(size=(1203, 5)) * 2).astype(dtype)
    x[7, 2] = np.nan
    params = _params(rng, 9, 5, ct)
    centre = np.nanmean(x.astype(np.float64), axis=0)
    got = component_logits(x, params, centre)
    monkeypatch.setenv("DASKGMM_KERNEL", "numpy")
    compiled.reset()
    want = component_logits(x, params, centre)
    assert got.dtype == want.dtype == dtype
    assert np.isnan(got[7]).all() and np.isnan(want[7]).all()
    ok = ~np.isnan(want).any(axis=1)
    scale = np.abs(want[ok]).max()
    np.testing.assert_allclose(got[ok], want[ok], rtol=0, atol=(1e-13 if dtype == np.float64 else 2e-6) * scale)


def test_show_config_under_a_bad_choice_still_says_what_is_built(monkeypatch):
    """DASKGMM_KERNEL naming a variant this CPU lacks: the choice fails, but what was built and what the
    CPU has are facts show-config still prints (they once read "none" and "unknown")."""
    want = compiled.config()
    monkeypatch.setenv("DASKGMM_KERNEL", "sse9")
    compiled.reset()
    try:
        cfg = compiled.config()
    finally:
        monkeypatch.delenv("DASKGMM_KERNEL")
        compiled.reset()
    assert cfg["kernel"] == "none" and "DASKGMM_KERNEL must be one of" in cfg["reason"]
    assert cfg["DASKGMM_KERNEL"] == "sse9"
    assert cfg["variants_built"] == want["variants_built"]
    assert cfg["cpu_features"] == want["cpu_features"]


def _far_mixture(scale):
    """Rows of 3 tight blobs at ``scale`` and a full-covariance model of them: every row's responsibilities for
    the other two components are near the exp floor, so their moments' terms are subnormal at small scales."""
    from sklearn.mixture import GaussianMixture as SkGaussianMixture

    rng = np.random.default_rng(0)
    x = (rng.normal(size=(3000, 4)) + 40 * rng.integers(0, 3, size=(3000, 1))) * scale
    g = SkGaussianMixture(3, random_state=0).fit(x[:600] / scale)
    centre = x.mean(axis=0)
    nat = natural_params(g.weights_, g.means_ * scale, g.precisions_cholesky_ / scale, "full", centre)
    return x, centre, ModelSpec(nat, "full")


def test_soft_passes_flush_subnormal_terms_and_restore_the_callers_mode(variant):
    """A soft pass runs with subnormal results flushed to zero (on Intel CPUs each took ~100 cycles: a full pass at
    scale 0.01 3.7 times slower), the same statistics as NumPy's to rounding, and gives the caller's thread its
    floating-point mode back: NumPy's arithmetic after it still makes subnormals."""
    x, centre, spec = _far_mixture(0.01)
    got = chunk_pass(x, [MixtureRequest([spec])], centre, compiled=True)[0][0]
    want = chunk_pass(x, [MixtureRequest([spec])], centre, compiled=False)[0][0]
    for name in ("n", "s1", "s2"):
        a, b = getattr(got, name), getattr(want, name)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-10 * np.abs(b).max(), err_msg=name)
    tiny = np.array([1e-300]) * np.array([1e-10])
    assert tiny[0] > 0  # the caller's mode: subnormal results kept


def test_hard_passes_keep_subnormal_distances(variant):
    """k-means on rows of scale 1e-158 (squared distances subnormal) labels them as NumPy does: only passes with
    soft assignment flush subnormal results (flushed here, every distance was 0 and every row went to the first
    centre: adjusted Rand 0)."""
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(600, 4)) + 10 * rng.integers(0, 3, size=(600, 1))) * 1e-158
    centres = x[[0, 1, 2, 3, 4, 5]] - x.mean(axis=0)
    from daskgmm.kernels import kmeans_natural_params

    spec = ModelSpec(kmeans_natural_params(centres), "spherical", "hard")
    counts = [chunk_pass(x, [MixtureRequest([spec])], x.mean(axis=0), compiled=c)[0][0].n for c in (True, False)]
    np.testing.assert_array_equal(counts[0], counts[1])
    assert np.count_nonzero(counts[0]) > 1
