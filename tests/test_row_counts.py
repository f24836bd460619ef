"""Each component's rows (``ModelSpec.count_rows``, ``SuffStats.counts``) from the pass's own E-step.

``on_collapse="reinit"`` judges a collapse by the rows a component holds, its responsibilities summed with
the sample weights left out. They used to come from a second request (``Unweighted``), the whole E-step
again; the mixture request now sums them from the responsibilities it weighs. These tests hold them to the
second request's ``n`` on weighted rows, NumPy and every compiled variant this CPU runs: soft and hard, rows
with NaN marginalised (each path of the core: the tiles' softmax, the row's own, the dense diagonal one) and
left out, float32, and the hard spherical pass (k-means' own path).
"""

from dataclasses import replace

import numpy as np
import pytest

from daskgmm.em.loop import run_specs
from daskgmm.kernels import MixtureRequest, Unweighted, chunk_pass
from daskgmm.kernels import covariance as cov
from daskgmm.models.states import MixtureState

from .conftest import random_mixture

D = 7


def _spec(ct, k, seed, centre, assignment="soft", **kw):
    weights, means, covs = random_mixture(ct, k, D, np.random.default_rng(seed), 3.0)
    spec = MixtureState.from_covariances(weights, means, covs, ct, **kw).spec(centre)
    return replace(spec, assignment=assignment)


def _rows(frac, dtype, n=3000, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=3.0, size=(n, D)) + 2.0
    if frac:
        x[rng.random(x.shape) < frac] = np.nan
        x[0, :-1] = np.nan  # all but one value missing
    w = rng.random(n) * 3.0
    w[5::7] = 0.0  # a row of weight 0 holds nothing: as if it were not there (with NaN or without)
    return x.astype(dtype), w


def _held(x, specs, centre, w, compiled):
    """The reference counts: each component's rows of positive weight (``n`` under weights 1 for those, 0 for
    rows of weight 0, which hold nothing, as if they were not there)."""
    return chunk_pass(x, [MixtureRequest(specs)], centre, sample_weight=(w > 0).astype(np.float64),
                      compiled=compiled)[0]


def _passes(centre):
    """Lockstep models, one pass each: at the full level (full and tied marginalising soft, a full one hard, a
    diagonal one that leaves rows with NaN out), at the diagonal level (the dense path: diagonal soft and
    spherical hard marginalising, one leaving them out), and hard spherical models only (k-means' path)."""
    marg = dict(missing="marginalize")
    return [
        [_spec("full", 5, 1, centre, **marg), _spec("tied", 3, 2, centre, **marg),
         _spec("full", 4, 3, centre, "hard", **marg), _spec("diag", 9, 4, centre)],
        [_spec("diag", 5, 1, centre, **marg), _spec("spherical", 3, 2, centre, "hard", **marg),
         _spec("diag", 4, 3, centre)],
        [_spec("spherical", 5, 1, centre, "hard"), _spec("spherical", 17, 2, centre, "hard")],
    ]


def _check(frac, dtype, compiled):
    x, w = _rows(frac, dtype)
    centre = np.nanmean(x.astype(np.float64), axis=0)
    # float32: the second request sums float32 responsibilities in float32 lanes per sub-block, in another order
    rtol = 1e-12 if dtype == np.float64 else 1e-6
    for specs in _passes(centre):
        counted = [replace(s, count_rows=True) for s in specs]
        got = chunk_pass(x, [MixtureRequest(counted)], centre, sample_weight=w, compiled=compiled)[0]
        ref = _held(x, specs, centre, w, compiled)
        plain = chunk_pass(x, [MixtureRequest(specs)], centre, sample_weight=w, compiled=compiled)[0]
        for g, r, p in zip(got, ref, plain, strict=True):
            np.testing.assert_allclose(g.counts, r.n, rtol=rtol, atol=rtol * r.rows)
            assert p.counts is None
            # the weighted statistics are those of the pass that counts nothing, bit for bit
            for name in ("n", "s1", "s2", "loglik", "resp_log_resp", "weight"):
                np.testing.assert_array_equal(getattr(g, name), getattr(p, name), err_msg=name)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("frac", [0.3, 0.02], ids=["30%", "2%"])
def test_counts_are_the_unweighted_requests_rows_numpy(frac, dtype):
    _check(frac, dtype, compiled=False)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("frac", [0.3, 0.02], ids=["30%", "2%"])
def test_counts_are_the_unweighted_requests_rows_compiled(variant, frac, dtype):
    _check(frac, dtype, compiled=True)


def test_counts_of_the_numpy_only_paths():
    """The per-component (precise) path, random responsibilities, and rows without weights (counts = n)."""
    x, w = _rows(0.1, np.float64, n=500)
    centre = np.nanmean(x, axis=0) + 1e6  # far from the data: the precise path
    precise = _spec("full", 3, 1, centre, missing="marginalize")
    assert precise.precise is not None
    random = replace(_spec("diag", 4, 2, centre), assignment="random", seed=7, marginal=None, precise=None)
    specs = [precise, random]
    for weights in (w, None):
        got = chunk_pass(x, [MixtureRequest([replace(s, count_rows=True) for s in specs])], centre,
                         sample_weight=weights)[0]
        ref = (chunk_pass(x, [Unweighted(MixtureRequest(specs))], centre)[0] if weights is None
               else _held(x, specs, centre, weights, False))
        for g, r in zip(got, ref, strict=True):
            np.testing.assert_allclose(g.counts, r.n, rtol=1e-12, atol=1e-12 * r.rows)
            if weights is None:
                np.testing.assert_allclose(g.counts, g.n, rtol=1e-12)


class _Rows:
    """What the loop asks of the data: its weights, and a pass (one chunk, the NumPy path)."""

    def __init__(self, x, w):
        self.x, self.sample_weight, self.requests = x, w, []

    def run(self, requests, centre):
        self.requests.append(requests)
        return chunk_pass(self.x, requests, centre, sample_weight=self.sample_weight)


def test_the_loop_counts_rows_in_the_weighted_pass_itself():
    """A pass that counts rows (``run_specs(count_rows=True)``, as ``one_pass`` for ``on_collapse="reinit"``)
    is one request on weighted rows, the E-step once; unweighted rows count nothing (``n`` are the rows)."""
    x, w = _rows(0.0, np.float64, n=400)
    centre = x.mean(axis=0)
    specs = [_spec("full", 3, 1, centre), _spec("diag", 2, 2, centre, "hard")]
    data = _Rows(x, w)
    stats = run_specs(data, specs, centre, count_rows=True)
    assert [type(r).__name__ for r in data.requests[0]] == ["MixtureRequest"]
    ref = _held(x, specs, centre, w, False)
    for st, r in zip(stats, ref, strict=True):
        assert r.n.min() > 0
        np.testing.assert_allclose(st.counts, r.n, rtol=1e-12)
    assert all(st.counts is None for st in run_specs(_Rows(x, None), specs, centre, count_rows=True))


def _far_blob_of_weight_zero(n=400, far=60):
    """Two blobs of positive weight and, far from them, ``far`` rows of weight 0 (some with a NaN), with a
    three-component mixture's start: a component on each blob and one on the rows of weight 0."""
    rng = np.random.default_rng(7)
    x = np.vstack([rng.normal(size=(n, 3)), rng.normal(size=(n, 3)) + 6.0, rng.normal(size=(far, 3)) + 40.0])
    w = np.r_[rng.uniform(0.5, 2.0, 2 * n), np.zeros(far)]
    x[-far::5, 1] = np.nan
    means = np.array([[0.0] * 3, [6.0] * 3, [40.0] * 3])
    return x, w, means


def _check_weight_zero(ct, assignment, compiled):
    """A component whose only rows weigh 0 holds no rows, as one with no rows at all: its count is what it is
    without those rows, and ``on_collapse="reinit"``'s test (``D + 1`` rows) finds it collapsed. The counts
    summed the responsibilities of every row, weight 0 or not (NumPy's and the core's: its rows' masks, the
    arg-max, its rows with NaN and the hard spherical pass)."""
    x, w, means = _far_blob_of_weight_zero()
    covs = {"full": np.stack([np.eye(3)] * 3), "diag": np.ones((3, 3)), "spherical": np.ones(3)}[ct]
    centre = np.average(x[:800], axis=0, weights=w[:800])
    specs = [replace(MixtureState.from_covariances(np.full(3, 1 / 3), means, covs, ct, missing=missing)
                     .spec(centre), assignment=assignment, count_rows=True)
             for missing in ("marginalize", "raise")]
    # both together (the core's general pass), and the one leaving NaN out alone (hard spherical: k-means' pass)
    for group in (specs, specs[1:]):
        got = chunk_pass(x, [MixtureRequest(group)], centre, sample_weight=w, compiled=compiled)[0]
        alone = chunk_pass(x[:800], [MixtureRequest(group)], centre, sample_weight=w[:800], compiled=compiled)[0]
        for g, a in zip(got, alone, strict=True):
            np.testing.assert_allclose(g.counts, a.counts, rtol=1e-12, atol=1e-12)
            assert g.counts[2] < 1e-12 and g.counts[:2].sum() == pytest.approx(800)
            np.testing.assert_array_equal(cov.collapsed_components(np.asarray(covs), g.counts, ct), [2])


@pytest.mark.parametrize("assignment", ["soft", "hard"])
@pytest.mark.parametrize("ct", ["full", "diag", "spherical"])
def test_a_component_on_rows_of_weight_zero_holds_no_rows_numpy(ct, assignment):
    _check_weight_zero(ct, assignment, compiled=False)


@pytest.mark.parametrize("assignment", ["soft", "hard"])
@pytest.mark.parametrize("ct", ["full", "diag", "spherical"])
def test_a_component_on_rows_of_weight_zero_holds_no_rows_compiled(variant, ct, assignment):
    _check_weight_zero(ct, assignment, compiled=True)


@pytest.mark.parametrize("kernel", ["compiled", "numpy"])
@pytest.mark.parametrize("ct", ["full", "diag"])
def test_reinit_reseeds_a_component_on_rows_of_weight_zero_as_one_on_no_rows(kernel, ct, monkeypatch):
    """on_collapse="reinit" with a component started on rows of weight 0 only: re-seeded in the first
    iteration, at a row of positive weight, as when those rows are not there at all (the same events and
    fit). It counted those rows as the component's, found it healthy (its covariance reg_covar's alone),
    and the fit kept a component of weight 0."""
    from daskgmm import GaussianMixture
    from daskgmm.kernels import compiled

    if kernel == "numpy":
        monkeypatch.setenv("DASKGMM_KERNEL", "numpy")
    compiled.reset()
    x, w, means = _far_blob_of_weight_zero()
    prec = {"full": np.stack([np.eye(3)] * 3), "diag": np.ones((3, 3))}[ct]
    kw = dict(covariance_type=ct, means_init=means, weights_init=np.full(3, 1 / 3), precisions_init=prec,
              on_collapse="reinit", missing="marginalize", max_iter=30, random_state=0)
    try:
        got = GaussianMixture(3, **kw).fit(x, sample_weight=w)
        alone = GaussianMixture(3, **kw).fit(x[:800], sample_weight=w[:800])
    finally:
        monkeypatch.delenv("DASKGMM_KERNEL", raising=False)
        compiled.reset()
    events = [(h["iteration"], e) for h in got.history_ for e in h["events"]]
    assert events == [(h["iteration"], e) for h in alone.history_ for e in h["events"]]
    assert events and events[0][0] == 1 and "component 2 collapsed; re-seeded at row" in events[0][1], events
    assert int(events[0][1].rsplit(" ", 1)[1]) < 800  # a row of positive weight
    assert got.n_iter_ == alone.n_iter_
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(got, name), getattr(alone, name), rtol=1e-7, atol=1e-9, err_msg=name)
