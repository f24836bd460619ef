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
    w[5] = 0.0  # a row of weight 0 is a row all the same
    return x.astype(dtype), w


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
        got, ref = chunk_pass(x, [MixtureRequest(counted), Unweighted(MixtureRequest(specs))], centre,
                              sample_weight=w, compiled=compiled)
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
        got, ref = chunk_pass(x, [MixtureRequest([replace(s, count_rows=True) for s in specs]),
                                  Unweighted(MixtureRequest(specs))], centre, sample_weight=weights)
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
    ref = chunk_pass(x, [Unweighted(MixtureRequest(specs))], centre, sample_weight=w)[0]
    for st, r in zip(stats, ref, strict=True):
        assert r.n.min() > 0
        np.testing.assert_allclose(st.counts, r.n, rtol=1e-12)
    assert all(st.counts is None for st in run_specs(_Rows(x, None), specs, centre, count_rows=True))
