"""Unit tests of the model kinds' updates (daskgmm.models.states), from statistics built by hand."""

import numpy as np
import pytest

from daskgmm.kernels import SuffStats, WorstRows
from daskgmm.kernels.covariance import collapsed_components
from daskgmm.models.states import KMeansState, MixtureState, first_best

TYPES = ["full", "tied", "diag", "spherical"]


def hand_stats(X, resp, shift, covariance_type, w=None, worst=None):
    """Sufficient statistics of X under responsibilities ``resp`` (n, K), about ``shift``."""
    w = np.ones(len(X)) if w is None else w
    r = resp * w[:, None]
    z = X - shift
    n = r.sum(axis=0)
    s1 = r.T @ z
    if covariance_type in ("full", "tied"):
        s2 = np.einsum("nk,ni,nj->kij", r, z, z)
        if covariance_type == "tied":
            s2 = s2.sum(axis=0)
    elif covariance_type == "diag":
        s2 = r.T @ z**2
    else:
        s2 = r.T @ (z**2).sum(axis=1)
    return SuffStats(n=n, s1=s1, s2=s2, loglik=-1.0, weight=float(w.sum()), rows=len(X), shift=shift,
                     covariance_type=covariance_type, worst=worst)


@pytest.mark.parametrize("ct", TYPES)
@pytest.mark.parametrize("shift", [1e6, 1e6 + 3.0])
def test_mixture_update_is_the_m_step_for_any_shift(ct, shift):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 3)) * [1.0, 2.0, 0.5] + 1e6
    resp = rng.dirichlet(np.ones(3), size=400)
    centre = np.full(3, shift)
    state = MixtureState.from_covariances(np.full(3, 1 / 3), np.zeros((3, 3)),
                                          _unit_covariances(ct, 3, 3), ct, reg_covar=1e-6)
    new = state.update(hand_stats(X, resp, centre, ct))
    nk = resp.sum(axis=0) + 10 * np.finfo(float).eps
    means = resp.T @ X / nk[:, None]
    np.testing.assert_allclose(new.weights, nk / nk.sum(), rtol=1e-12)
    np.testing.assert_allclose(new.means, means, rtol=1e-12)
    diffs = X[None] - means[:, None]  # (K, n, D)
    full = np.einsum("nk,kni,knj->kij", resp, diffs, diffs) / nk[:, None, None] + 1e-6 * np.eye(3)
    expect = {
        "full": full,
        "tied": np.einsum("nk,kni,knj->ij", resp, diffs, diffs) / nk.sum() + 1e-6 * np.eye(3),
        "diag": np.einsum("nk,kni->ki", resp, diffs**2) / nk[:, None] + 1e-6,
        "spherical": (np.einsum("nk,kni->ki", resp, diffs**2) / nk[:, None] + 1e-6).mean(axis=1),
    }[ct]
    # any shift near the data (the pass centre) keeps the data's 1e6 offset out of the sums
    np.testing.assert_allclose(new.covariances, expect, rtol=1e-9, atol=1e-12)
    # precisions_cholesky is the factor of the new covariances' inverse
    assert new.precisions_cholesky.flags.c_contiguous


def _unit_covariances(ct, k, d):
    return {"full": np.stack([np.eye(d)] * k), "tied": np.eye(d), "diag": np.ones((k, d)), "spherical": np.ones(k)}[ct]


def test_update_params_leaves_the_others_alone():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 2))
    resp = rng.dirichlet(np.ones(2), size=200)
    state = MixtureState.from_covariances(np.array([0.3, 0.7]), np.array([[1.0, 1.0], [-1.0, -1.0]]),
                                          np.ones(2), "spherical", update_params="m")
    new = state.update(hand_stats(X, resp, np.zeros(2), "spherical"))
    np.testing.assert_array_equal(new.weights, state.weights)
    np.testing.assert_array_equal(new.covariances, state.covariances)
    assert not np.allclose(new.means, state.means)


def test_collapsed_component_raises_or_is_reseeded_at_the_worst_row():
    X = np.array([[0.0, 0.0], [0.1, 0.2], [0.2, -0.1], [-0.1, 0.1], [5.0, 5.0], [9.0, -9.0]])
    resp = np.zeros((6, 2))
    resp[:4, 0] = 1
    resp[4:, 1] = 1  # component 1 holds two far-apart rows: fewer than D + 1 = 3
    worst = WorstRows(values=np.array([-50.0, -9.0]), rows=np.array([5, 4]), points=X[[5, 4]],
                      weights=np.ones(2))
    stats = hand_stats(X, resp, np.zeros(2), "full", worst=worst)
    assert list(collapsed_components(np.stack([np.eye(2)] * 2), stats.n, "full")) == [1]
    kw = dict(reg_covar=0.0)
    state = MixtureState.from_covariances(np.full(2, 0.5), np.array([[0.0, 0.0], [7.0, 0.0]]),
                                          np.stack([np.eye(2)] * 2), "full", on_collapse="reinit", **kw)
    new = state.update(stats)
    np.testing.assert_array_equal(new.means[1], X[5])  # the worst-explained row
    w = np.array([4 / 6, 1 / 2])  # the re-seeded component gets 1/K, then all are renormalised
    np.testing.assert_allclose(new.weights, w / w.sum())
    assert new.events == ("component 1 collapsed; re-seeded at row 5",)
    # without "reinit", a component on a single row has a zero covariance: scikit-learn's error
    resp2 = resp.copy()
    resp2[5] = [1.0, 0.0]
    raising = MixtureState.from_covariances(np.full(2, 0.5), np.array([[0.0, 0.0], [7.0, 0.0]]),
                                            np.stack([np.eye(2)] * 2), "full", **kw)
    with pytest.raises(ValueError, match=r"ill-defined empirical covariance.*Component 1"):
        raising.update(hand_stats(X, resp2, np.zeros(2), "full"))


def test_kmeans_update_relocates_an_empty_cluster_as_scikit_learn():
    """scikit-learn's example: the far centre gets no row; it takes the row farthest from its
    centre, and the cluster that row leaves is averaged without it."""
    X = np.array([[0, 0], [0.5, 0], [0.5, 1], [1, 1]], dtype=float)
    state = KMeansState(np.array([[0.5, 0.5], [3.0, 3.0]]))
    resp = np.zeros((4, 2))
    resp[:, 0] = 1
    d2 = ((X - [0.5, 0.5]) ** 2).sum(axis=1)  # all equal: ties go to the lowest row
    order = np.lexsort((np.arange(4), -d2))
    worst = WorstRows(values=-d2[order][:2], rows=order[:2], points=X[order[:2]], weights=np.ones(2))
    new = state.update(hand_stats(X, resp, np.zeros(2), "spherical", worst=worst))
    np.testing.assert_array_equal(new.centers[1], X[order[0]])
    np.testing.assert_allclose(new.centers[0], np.delete(X, order[0], axis=0).mean(axis=0))
    assert new.events == (f"cluster 1 was empty; moved to row {order[0]}",)
    assert new.shift == pytest.approx(((new.centers - state.centers) ** 2).sum())
    assert state.converged(replace_centers(state, state.centers), 0.0)


def replace_centers(state, centers):
    from dataclasses import replace

    return replace(state, centers=centers)


def test_first_best_keeps_the_first_run_within_rounding_of_the_best():
    lb = -5.626705652890111
    # restarts at the same optimum differ in the last bits: the first is kept, whichever is larger
    assert first_best([lb, lb + 2e-15, lb - 1e-15], maximize=True, atol=1e-9) == 0
    assert first_best([lb - 1e-3, lb, lb + 2e-15], maximize=True, atol=1e-9) == 1
    assert first_best([lb, lb + 1e-6], maximize=True) == 1  # a real improvement wins
    assert first_best([0.0, 0.0], maximize=False) == 0
    assert first_best([1e-300, 0.0], maximize=False) == 1  # no absolute part: a tie is relative
    assert first_best([58828.85665076485, 58828.856650764836], maximize=False) == 0  # inertias
    assert first_best([3.0, 2.0], maximize=False) == 1
    # a non-finite objective: the plain rule (numpy's argmax / argmin)
    assert first_best([-np.inf, 1.0, 1.0 + 1e-15], maximize=True) == 2
    assert first_best([np.nan, 1.0], maximize=False) == 0


def test_the_loop_asks_for_the_worst_rows_only_when_a_cluster_is_empty(monkeypatch):
    """k-means passes keep no worst rows (they cost every block); a pass that empties a cluster is followed by
    one with the same centres that returns them, and the relocation is scikit-learn's, as with them kept."""
    import dask.array as da

    import daskgmm.em.loop as loop
    from daskgmm.engine.passes import ChunkedData

    X = np.array([[0, 0], [0.5, 0], [0.5, 1], [1, 1]], dtype=float)
    data = ChunkedData(da.from_array(X, chunks=2), cache="none")
    calls = []
    real = loop.run_specs

    def counted(data, specs, centre):
        calls.append([s.n_worst for s in specs])
        return real(data, specs, centre)

    monkeypatch.setattr(loop, "run_specs", counted)
    start = KMeansState(np.array([[0.5, 0.5], [3.0, 3.0]]))
    assert start.spec(np.zeros(2)).n_worst == 0
    (run,) = loop.lockstep(data, [loop.Run(start, objective=np.inf)], centre=np.zeros(2), max_iter=1)
    assert calls == [[2]]
    d2 = ((X - [0.5, 0.5]) ** 2).sum(axis=1)
    far = int(np.lexsort((np.arange(4), -d2))[0])
    np.testing.assert_array_equal(run.state.centers[1], X[far])
    np.testing.assert_allclose(run.state.centers[0], np.delete(X, far, axis=0).mean(axis=0))
    assert run.history[0]["events"] == [f"cluster 1 was empty; moved to row {far}"]
    # no cluster empty: no second pass; relocation off: none either
    loop.lockstep(data, [loop.Run(run.state, objective=np.inf)], centre=np.zeros(2), max_iter=2)
    off = KMeansState(np.array([[0.5, 0.5], [3.0, 3.0]]), relocate_empty=False)
    (run,) = loop.lockstep(data, [loop.Run(off, objective=np.inf)], centre=np.zeros(2), max_iter=1)
    assert calls == [[2]] and run.state.centers[1].tolist() == [3.0, 3.0]
