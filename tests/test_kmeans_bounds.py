"""k-means' bounds (``KMeans(algorithm="elkan")``): the same bits as Lloyd's passes without them.

The compiled core keeps each row's label and a lower bound of its distance to the other centres
between passes (:mod:`daskgmm.kernels.bounds`) and skips the tiles for the rows whose label cannot
change. Every test here compares a pass with bounds against the same pass without them, bit for
bit, and checks that rows were in fact spared (else the comparison proves nothing).
"""

import numpy as np
import pytest

from daskgmm.kernels import MixtureRequest, ModelSpec, bounds, chunk_pass, compiled
from daskgmm.kernels.params import kmeans_natural_params


def _needs_core():
    if compiled.ready() is None:
        pytest.skip(f"the compiled core is not in use: {compiled.error()}")


def _lloyd_step(stats, centres):
    new = centres.copy()
    full = stats.n > 0
    new[full] = np.broadcast_to(stats.shift, centres.shape)[full] + stats.s1[full] / stats.n[full, None]
    return new


def _same(a, b):
    assert a.loglik == b.loglik
    for name in ("n", "s1", "s2"):
        np.testing.assert_array_equal(np.asarray(getattr(a, name)), np.asarray(getattr(b, name)), err_msg=name)
    if a.worst is not None or b.worst is not None:
        np.testing.assert_array_equal(a.worst.rows, b.worst.rows)


def _same_pass(x, centres, centre, key, *, w=None, block_rows=700, n_worst=0):
    """One pass with ``centres`` without bounds and one with them under ``key``; asserts the same bits;
    returns the first's statistics."""
    nat = kmeans_natural_params(centres - centre)
    plain = ModelSpec(nat, "spherical", "hard", n_worst=n_worst)
    kept = ModelSpec(nat, "spherical", "hard", n_worst=n_worst, bounds=key)
    a = chunk_pass(x, [MixtureRequest([plain])], centre, sample_weight=w, compiled=True, block_rows=block_rows)[0][0]
    b = chunk_pass(x, [MixtureRequest([kept])], centre, sample_weight=w, compiled=True, block_rows=block_rows)[0][0]
    _same(a, b)
    return a


def _passes(x, centres, key, *, steps, w=None, block_rows=700, perturb=None, n_worst=0):
    """Lloyd's passes from ``centres`` with and without bounds under ``key``; asserts the same bits at each;
    returns the rows spared."""
    centre = np.nanmean(x.astype(np.float64), axis=0)
    rng = np.random.default_rng(0)
    try:
        for _ in range(steps):
            a = _same_pass(x, centres, centre, key, w=w, block_rows=block_rows, n_worst=n_worst)
            centres = _lloyd_step(a, centres) if perturb is None else perturb(centres, rng)
        return bounds.counts(key)[0]
    finally:
        bounds.forget(key)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("d, k", [(1, 2), (2, 3), (3, 1), (7, 5), (9, 6), (16, 16), (17, 33), (5, 9), (3, 300)])
def test_bounds_give_the_same_bits_as_lloyd(variant, dtype, d, k):
    """Every variant, both dtypes, D across the unrolled statistics and K across the tiles' groups, with
    weights and rows with NaN (left out): the same statistics and inertia at every Lloyd step."""
    _needs_core()
    rng = np.random.default_rng(d * 100 + k)
    n = 3000 + d  # ragged: no sub-block or tile divides it
    centres = rng.normal(size=(max(k, 2), d)) * 6
    x = centres[rng.integers(0, len(centres), n)] + rng.normal(size=(n, d))
    x[rng.random(n) < 0.01, rng.integers(0, d)] = np.nan
    x = x.astype(dtype)
    w = rng.random(n) * 2
    start = x[~np.isnan(x).any(axis=1)][:k].astype(np.float64)
    spared = _passes(x, start, f"t-{variant}-{dtype.__name__}-{d}-{k}", steps=8, w=w)
    assert spared > 0


def test_bounds_keep_the_worst_rows(variant):
    """The pass that relocates empty clusters asks for the worst rows: their values come from the same
    logits, so the same rows."""
    _needs_core()
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2000, 4)) + rng.integers(0, 3, size=(2000, 1)) * 5
    assert _passes(x, x[:3].copy(), f"w-{variant}", steps=5, n_worst=3) > 0


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_rows_at_a_tie_within_rounding_get_the_labels_lloyd_gives(variant, dtype):
    """Rows on the bisector of two centres, far from the pass's centre (so that the logits' rounding is
    large against the rows' distances), their two distances equal to within that rounding, and centres
    that move by a few units in the last place between passes: the computed arg-max flips by rounding
    alone, and the bounds must leave such rows to the tiles (this goes red when the core's test leaves
    rounding out)."""
    _needs_core()
    rng = np.random.default_rng(7)
    d, n, far = 6, 3000, 1000.0
    eps = float(np.finfo(dtype).eps)
    base = np.zeros(d)
    base[0] = far
    u = rng.normal(size=d)
    u[0] = 0
    u /= np.linalg.norm(u)
    c0, c1 = base + u, base - u
    v = rng.normal(size=(n, d))
    v -= np.outer(v @ u, u)  # on the bisector ...
    x = base + v + np.outer(rng.normal(size=n) * eps * far * far, u)  # ... to within the logits' rounding
    x = np.vstack([x, -base + rng.normal(size=(n, d))]).astype(dtype)  # the pass's centre near 0
    centres = np.vstack([c0, c1, -base, -base + 5 * u])

    def nudge(c, rng):  # a few units in the last place of the pass's dtype, in two coordinates
        c = c.copy()
        for i in (0, 1):
            j = rng.integers(0, d)
            c[i, j] *= 1 + rng.choice([-3, -2, -1, 1, 2, 3]) * eps
        return c

    assert _passes(x, centres, f"tie-{variant}-{dtype.__name__}", steps=25, perturb=nudge) > 0


def test_bounds_from_other_centres_than_the_last_are_still_bounds(variant):
    """A block's bounds refer to the centres of the pass that wrote them: a block that missed passes (another
    worker ran it) uses its own reference, never the last pass's."""
    _needs_core()
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3000, 5)) + rng.integers(0, 4, size=(3000, 1)) * 4
    centre = x.mean(axis=0)
    c = x[:4].copy()
    key = f"stale-{variant}"
    try:
        seq = [c]
        for _ in range(6):
            st = chunk_pass(x, [MixtureRequest([ModelSpec(kmeans_natural_params(seq[-1] - centre), "spherical",
                                                          "hard")])], centre, compiled=True)[0][0]
            seq.append(_lloyd_step(st, seq[-1]))
        for i in (0, 3, 1, 5, 2, 6, 4):  # the centres of passes in another order than they came
            _same_pass(x, seq[i], centre, key, block_rows=1000)
        assert bounds.counts(key)[0] > 0
    finally:
        bounds.forget(key)


def test_the_store_keeps_at_most_its_bytes_and_forgets_a_fit(monkeypatch):
    """Over its bytes the store keeps a fit's first blocks (a pass reads them in the same order every time:
    evicting the oldest would leave none to use) and makes room from other fits'."""
    monkeypatch.setattr(bounds, "STORE_BYTES", 8 * 1000)
    coef = np.zeros((2, 3))

    def one_pass(key, moved=None):
        got = []
        for first in range(0, 5000, 500):
            label, lower, shift = bounds.take(key, first, 500, coef if moved is None else moved)
            got.append(shift)
            bounds.give(key, first, label, lower, coef)
        return got

    assert all(s is None for s in one_pass("cap"))
    assert bounds.stored_bytes() == 8 * 1000
    moved = coef + [[3.0, 4.0, 0.0], [0.0, 0.0, 0.0]]
    shifts = one_pass("cap", moved)
    assert [s is not None for s in shifts] == [True, True] + [False] * 8  # the first two blocks, every pass
    assert shifts[0][0] >= 5.0 and shifts[0][1] == 0.0
    one_pass("other")  # another fit takes the room of the first, which did not forget
    assert bounds.stored_bytes() == 8 * 1000 and bounds.take("cap", 0, 500, coef)[2] is None
    bounds.forget("cap")
    bounds.forget("other")
    assert bounds.stored_bytes() == 0 and bounds.counts("cap") == (0, 0)


def test_the_core_checks_the_bounds_arguments(variant):
    _needs_core()
    kernel = compiled.ready()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3))
    nat = kmeans_natural_params(rng.normal(size=(4, 3)))
    theta = nat.theta(0)
    S = np.zeros_like(theta)
    per_row = np.zeros((1, 50))
    args = (x, np.zeros(3), None, theta, 0, np.array([0, 4]), np.array([1]), S, per_row, np.zeros(1))
    ok = (np.zeros(50, np.int32), np.zeros(50, np.float32), None)
    assert kernel.mixture_block(*args, kmeans_bounds=ok)[1] == 0
    with pytest.raises(ValueError, match="label must be int32"):
        kernel.mixture_block(*args, kmeans_bounds=(np.zeros(50, np.int64), ok[1], None))
    with pytest.raises(ValueError, match=r"lower must have shape \(50,\)"):
        kernel.mixture_block(*args, kmeans_bounds=(ok[0], np.zeros(49, np.float32), None))
    with pytest.raises(ValueError, match=r"shift must have shape \(4,\)"):
        kernel.mixture_block(*args, kmeans_bounds=(ok[0], ok[1], np.zeros(3)))
    with pytest.raises(ValueError, match="one hard model"):
        soft = (x, np.zeros(3), None, theta, 0, np.array([0, 4]), np.array([0]), S, per_row, np.zeros(1))
        kernel.mixture_block(*soft, kmeans_bounds=ok)
    with pytest.raises(ValueError, match="a tuple"):
        kernel.mixture_block(*args, kmeans_bounds=[ok[0], ok[1], None])


@pytest.fixture
def spared(monkeypatch):
    """The rows spared by this process's passes with bounds, one entry per block given back to the store."""
    out = []
    give = bounds.give

    def spy(*a, **k):
        out.append(a[5])
        return give(*a, **k)

    monkeypatch.setattr(bounds, "give", spy)
    return out


def _blobs(n=20000, d=5, k=6, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 4
    return centres[rng.integers(0, k, n)] + rng.normal(size=(n, d)) * 1.5


def _same_fit(a, b):
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    assert a.inertia_ == b.inertia_ and a.n_iter_ == b.n_iter_


def test_kmeans_elkan_is_lloyd_bit_for_bit_in_process(spared):
    """``algorithm="elkan"`` on Dask's threads in this process: the same fit as Lloyd's, rows spared on the way,
    and nothing kept afterwards."""
    import dask.array as da

    from daskgmm import KMeans

    _needs_core()
    X = da.from_array(_blobs(), chunks=3000)
    a = KMeans(6, random_state=0, tol=0, max_iter=40, algorithm="lloyd").fit(X)
    assert not spared
    b = KMeans(6, random_state=0, tol=0, max_iter=40, algorithm="elkan").fit(X)
    _same_fit(a, b)
    assert sum(spared) > 0
    assert bounds.stored_bytes() == 0


def test_kmeans_elkan_on_the_numpy_path_is_lloyd(monkeypatch):
    """Without the compiled core the bounds are not kept: the same passes as Lloyd's."""
    from daskgmm import KMeans

    monkeypatch.setenv("DASKGMM_KERNEL", "numpy")
    compiled.reset()
    try:
        X = _blobs(n=3000, seed=2)
        _same_fit(KMeans(4, random_state=0, algorithm="lloyd").fit(X), KMeans(4, random_state=0,
                                                                             algorithm="elkan").fit(X))
        assert bounds.stored_bytes() == 0
    finally:
        monkeypatch.undo()
        compiled.reset()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_overlapping_clusters_whose_early_passes_move_whole_sub_blocks(variant, dtype):
    """Clusters that overlap, from a poor start: in the first passes with bounds every row of a sub-block can fail
    the bounds' test, and those rows must still be tiled and labelled as themselves."""
    _needs_core()
    rng = np.random.default_rng(11)
    d, k, n = 16, 16, 6000
    centres = rng.uniform(-10, 10, size=(k, d))
    x = (centres[rng.integers(0, k, n)] + rng.normal(size=(n, d)) * 5).astype(dtype)
    assert _passes(x, x[:k].astype(np.float64), f"overlap-{variant}-{dtype.__name__}", steps=8, block_rows=2000) > 0


def test_kmeans_elkan_out_of_core_is_lloyd(tmp_path, spared):
    """Out of core (every pass reads its chunks again from Parquet) the blocks keep their bounds by their rows:
    the same fit as Lloyd's, rows spared."""
    import daskgmm
    from daskgmm import KMeans

    from .conftest import write_data

    _needs_core()
    write_data(str(tmp_path / "data"), n=6000, d=4, k=5, files=3, seed=4)
    X = daskgmm.read_parquet(str(tmp_path / "data"), columns=["f0", "f1", "f2", "f3"])
    a = KMeans(5, random_state=0, tol=0, max_iter=15, cache="none", algorithm="lloyd").fit(X)
    b = KMeans(5, random_state=0, tol=0, max_iter=15, cache="none", algorithm="elkan").fit(X)
    _same_fit(a, b)
    assert sum(spared) > 0 and bounds.stored_bytes() == 0


# ---------------------------------------------------------------- adversarial review (scales, overflow, the store)


def test_bounds_of_distances_beyond_float32s_range(variant):
    """float64 rows whose distances exceed float32's range (the bounds are kept in float32): a bound that
    does not fit must not become +inf (which would settle the row for ever, however far the centres move)."""
    _needs_core()
    x = _blobs(n=3000, d=3, k=4, seed=3) * 1e40
    _passes(x, x[:4].copy(), f"huge-{variant}", steps=8)  # (no row can be spared here: +inf settled them all)


@pytest.mark.parametrize("dtype, scale", [(np.float32, 1e-21), (np.float64, 1e-41), (np.float64, 1e-158)])
def test_bounds_of_rows_at_tiny_scales(variant, dtype, scale):
    """Rows so close together that the logits (float32 at 1e-21, float64 at 1e-158) or the float32 bounds
    (float64 at 1e-41) are subnormal: rounding there is absolute, not relative, and the bounds must allow
    for it."""
    _needs_core()
    x = (_blobs(n=3000, d=3, k=4, seed=3) * scale).astype(dtype)
    _passes(x, x[:4].astype(np.float64), f"tiny-{variant}-{dtype.__name__}-{scale}", steps=8)


def test_bounds_when_the_other_logits_overflow(variant):
    """float32 rows whose logit of a far centre overflows to -inf: a second-best logit of -inf is not "one
    component" (whose bound is +inf), since a centre that moves closer makes its logit finite again."""
    _needs_core()
    x = np.array([[1e19], [-1e19]] * 500, dtype=np.float32)
    moves = iter([np.array([[1.1e19], [0.8e19]]), None])
    _passes(x, np.array([[-2e19], [1e19]]), f"ovf-{variant}", steps=2, perturb=lambda c, rng: next(moves))


def test_a_block_given_twice_is_counted_once():
    """Two runs of the same block (a batch retried as tasks while its first run still ends) both give its
    bounds back: the store holds one entry, and its bytes go back to 0 when the fit forgets."""
    coef = np.zeros((2, 3))
    for _ in range(2):
        label, lower, _shift = bounds.take("twice", 0, 500, coef)
        bounds.give("twice", 0, label, lower, coef)
    bounds.give("twice", 0, np.zeros(500, np.int32), np.zeros(500, np.float32), coef)
    try:
        assert bounds.stored_bytes() == 8 * 500
    finally:
        bounds.forget("twice")
    assert bounds.stored_bytes() == 0


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kmeans_elkan_relocating_an_empty_cluster_is_lloyd(dtype):
    """A start with two equal centres empties a cluster: the pass that asks for the worst rows (same centres,
    bounds just written) and the jump of the relocated centre, with float32 and float64 rows and weights."""
    from daskgmm import KMeans

    _needs_core()
    X = _blobs(n=4000, d=3, k=4, seed=5).astype(dtype)
    w = np.random.default_rng(5).random(len(X)) + 0.5
    init = np.vstack([X[:2], X[:1], X[2:3]]).astype(np.float64)
    fits = [KMeans(4, init=init, n_init=1, tol=0, max_iter=30, algorithm=alg, chunk_size=1500).fit(X, sample_weight=w)
            for alg in ("lloyd", "elkan")]
    _same_fit(*fits)


@pytest.mark.parametrize("seed", [4, 6])
def test_bounds_when_the_logits_are_subnormal(variant, seed):
    """float32 rows about 2^-70 from the pass's centre: the logits (about 2^-140) are subnormal, where a
    product's rounding is absolute (up to 2^-150), far beyond any relative bound of it; centres on a coarser
    grid (their constants exact: no spread of b_k to hide it), one moving a little at each pass."""
    _needs_core()
    rng = np.random.default_rng(seed)
    n, d, k = 20000, 2, 4
    x = rng.integers(-2**10, 2**10, size=(n, d)) * 2.0**-80
    x[: n // 2] = -x[n // 2:]  # the pass's centre exactly 0
    c = rng.integers(-16, 16, size=(k, d)) * 2.0**-74

    def move(c, rng):
        c = c.copy()
        c[rng.integers(0, k), rng.integers(0, d)] += rng.choice([-1, 1]) * 2.0 ** (-74 - rng.integers(0, 6))
        return c

    _passes(x.astype(np.float32), c, f"subnormal-{variant}-{seed}", steps=30, perturb=move)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_bounds_with_centres_that_coincide(variant, dtype):
    """Equal centres in the same lane of different vectors (0 and 8: any lane width divides 8) and in other
    lanes (1 and 2), among K = 40 (over the tiles' groups): their logits tie exactly, the tiles keep the lower
    component, and the bounds must see the tie (a second-best equal to the best)."""
    _needs_core()
    rng = np.random.default_rng(13)
    k, d = 40, 3
    c = rng.normal(size=(k, d)) * 5
    c[8], c[2] = c[0], c[1]
    x = (c[rng.integers(0, k, 4000)] + rng.normal(size=(4000, d))).astype(dtype)

    def jitter(cc, rng):  # the others move; the equal pairs stay equal
        cc = cc + rng.normal(size=cc.shape) * 0.01
        cc[8], cc[2] = cc[0], cc[1]
        return cc

    assert _passes(x, c, f"same-{variant}-{dtype.__name__}", steps=6, perturb=jitter) > 0


def test_bounds_when_the_blocks_change_between_passes(variant):
    """Blocks of other sizes from pass to pass (a row's block then starts elsewhere): a block finds the bounds
    its rows were given two passes before, or none, and the results stay Lloyd's."""
    _needs_core()
    rng = np.random.default_rng(17)
    x = rng.normal(size=(3000, 4)) + rng.integers(0, 5, size=(3000, 1)) * 3
    centre = x.mean(axis=0)
    c = x[:5].copy()
    key = f"blocks-{variant}"
    try:
        for rows in (700, 500, 700, 1000, 500, 700, 700):
            c = _lloyd_step(_same_pass(x, c, centre, key, block_rows=rows), c)
        assert bounds.counts(key)[0] > 0
    finally:
        bounds.forget(key)


def test_two_elkan_fits_at_once_in_one_process_are_lloyds(monkeypatch, spared):
    """Two fits on two threads of one process, with a store too small for both: each makes room from the other's
    blocks (which are then computed in full), and each is its Lloyd's fit."""
    from concurrent.futures import ThreadPoolExecutor

    import dask.array as da

    from daskgmm import KMeans

    _needs_core()
    monkeypatch.setattr(bounds, "STORE_BYTES", 8 * 9000)
    data = [da.from_array(_blobs(n=12000, seed=s), chunks=3000) for s in (6, 7)]

    def fit(i, alg):
        return KMeans(6, random_state=i, tol=0, max_iter=25, algorithm=alg).fit(data[i])

    with ThreadPoolExecutor(2) as pool:
        elkan = list(pool.map(fit, (0, 1), ("elkan", "elkan")))
    for i in (0, 1):
        _same_fit(fit(i, "lloyd"), elkan[i])
    assert sum(spared) > 0 and bounds.stored_bytes() == 0


def test_kmeans_elkan_is_lloyd_bit_for_bit_on_a_cluster(process_client):
    """On two worker processes, passes outside the task graph and as tasks: the same fit, and the workers keep
    no bounds after it. (Last in this file: the tests above count what this process spares, which a client left
    active by the module's cluster would send to the workers.)"""
    import dask.array as da

    from daskgmm import KMeans

    X = process_client.persist(da.from_array(_blobs(seed=1), chunks=2500))
    a = KMeans(6, random_state=1, tol=0, max_iter=30, algorithm="lloyd").fit(X)
    b = KMeans(6, random_state=1, tol=0, max_iter=30, algorithm="elkan").fit(X)
    _same_fit(a, b)
    assert set(process_client.run(bounds.stored_bytes).values()) == {0}


def test_a_child_forked_while_the_store_is_locked_can_use_it():
    """The client's local Lloyd keeps bounds too: a process forked (a LocalCluster's, a user's multiprocessing)
    while another thread held the store's lock would wait on it for ever."""
    import multiprocessing
    import threading

    from daskgmm.kernels import bounds

    held, release = threading.Event(), threading.Event()

    def hold():
        with bounds._lock:
            held.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    held.wait(10)
    try:
        ctx = multiprocessing.get_context("fork")
        p = ctx.Process(target=bounds.stored_bytes)
        p.start()
        p.join(20)
        alive = p.is_alive()
        if alive:
            p.kill()
    finally:
        release.set()
        t.join()
    assert not alive and p.exitcode == 0
