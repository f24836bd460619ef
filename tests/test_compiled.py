"""The compiled block kernel against the NumPy steps it replaces (daskgmm.kernels.compiled).

Skipped where the kernel cannot run (no AVX-512, not Linux x86-64): there every pass uses
the NumPy path these tests compare with.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from daskgmm.kernels import compiled
from daskgmm.kernels.elfload import ElfError, load_object
from daskgmm.kernels.features import DIAG_LEVEL, FULL_LEVEL, SPHERICAL_LEVEL, build_features, n_feature_rows
from daskgmm.kernels.responsibilities import soft_responsibilities

pytestmark = pytest.mark.skipif(compiled.wanted() is not None, reason=f"compiled kernel: {compiled.wanted()}")


@pytest.fixture(scope="module")
def kernel():
    k = compiled.ready()
    assert k is not None, compiled.error()
    return k


def _reference(x, centre, w, theta, sizes, level):
    """NumPy: features, logits, clamped softmax per model, weighted moments."""
    xT = np.ascontiguousarray((x - centre).T)
    T = build_features(xT, level, np.empty((theta.shape[1], len(x))))
    L = theta @ T
    per_row, a = [], 0
    for k in sizes:
        lm = L[a : a + k][None].copy()
        per_row.append(soft_responsibilities(lm, np.empty((1, len(x))), np.empty((1, len(x))))[0].copy())
        L[a : a + k] = lm[0] * (1.0 if w is None else w)
        a += k
    return L @ T.T, np.array(per_row)


@pytest.mark.parametrize("level", [FULL_LEVEL, DIAG_LEVEL, SPHERICAL_LEVEL], ids=["full", "diag", "spherical"])
@pytest.mark.parametrize(
    "n, d, sizes, weighted",
    [(1000, 5, [3, 3], True), (777, 16, [16], False), (300, 3, [20, 7], True), (5, 1, [2], False),
     (2048, 2, [1], True), (513, 7, [37, 16, 5], False)],
)
def test_kernel_equals_numpy(kernel, level, n, d, sizes, weighted):
    rng = np.random.default_rng(n + d)
    x = rng.normal(size=(n, d)) * 3 + 1
    centre = x.mean(axis=0) + 0.1
    w = rng.random(n) * 2 if weighted else None
    theta = rng.normal(size=(sum(sizes), n_feature_rows(level, d))) * 0.05
    S_ref, ll_ref = _reference(x, centre, w, theta, sizes, level)
    fused = compiled.Fused(kernel, theta, np.cumsum([0] + sizes), level, d, centre)
    half = n // 2  # two calls: the moments accumulate
    per_row_a, per_row_b = np.zeros((len(sizes), half)), np.zeros((len(sizes), n - half))
    fused.update(x[:half], None if w is None else w[:half], per_row_a)
    fused.update(x[half:], None if w is None else w[half:], per_row_b)
    per_row = np.zeros((len(sizes), n))
    fused2 = compiled.Fused(kernel, theta, np.cumsum([0] + sizes), level, d, centre)
    fused2.update(x, w, per_row)
    np.testing.assert_allclose(fused2.moments(), S_ref, rtol=0, atol=1e-13 * np.abs(S_ref).max())
    np.testing.assert_allclose(fused.moments(), S_ref, rtol=0, atol=1e-13 * np.abs(S_ref).max())
    np.testing.assert_allclose(per_row, ll_ref, rtol=1e-14, atol=1e-13)
    np.testing.assert_allclose(per_row_a, ll_ref[:, :half], rtol=1e-14, atol=1e-13)
    np.testing.assert_allclose(per_row_b, ll_ref[:, half:], rtol=1e-14, atol=1e-13)


def test_kernel_softmax_far_apart_and_tied_logits(kernel):
    """Logits 1e4 apart (exp's clamp), equal logits, and a component far from every row."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(600, 2))
    theta = rng.normal(size=(5, n_feature_rows(FULL_LEVEL, 2)))
    theta[0, -1] = 1e4
    theta[1] = theta[2]
    theta[3, -1] = -1e5
    S_ref, ll_ref = _reference(x, np.zeros(2), None, theta, [5], FULL_LEVEL)
    fused = compiled.Fused(kernel, theta, np.array([0, 5]), FULL_LEVEL, 2, np.zeros(2))
    per_row = np.zeros((1, 600))
    fused.update(x, None, per_row)
    np.testing.assert_allclose(fused.moments(), S_ref, rtol=1e-13, atol=1e-13 * np.abs(S_ref).max())
    np.testing.assert_allclose(per_row, ll_ref, rtol=1e-14)


def test_chunk_pass_uses_the_kernel_and_equals_numpy(kernel, monkeypatch):
    """A mixture pass over a big chunk: statistics, log-likelihoods and worst rows as the NumPy path gives."""
    from daskgmm.kernels import chunk_pass
    from daskgmm.kernels.covariance import natural_params
    from daskgmm.kernels.requests import MixtureRequest, ModelSpec

    rng = np.random.default_rng(0)
    n, d = 2 * compiled.BLOCK_ROWS + 1001, 3
    x = rng.normal(size=(n, d)) + rng.integers(0, 3, size=(n, 1)) * 4
    w = rng.random(n)
    specs = []
    for k, ct in [(3, "full"), (3, "full"), (4, "diag"), (2, "spherical")]:
        means = rng.normal(size=(k, d)) * 4
        prec = {"full": np.tile(np.eye(d), (k, 1, 1)), "diag": np.ones((k, d)), "spherical": np.ones(k)}[ct]
        params = natural_params(np.full(k, 1 / k), means, prec, ct, x.mean(axis=0))
        specs.append(ModelSpec(params, ct, n_worst=5))
    centre = x.mean(axis=0)
    fused_calls = []
    real = compiled.Fused.update
    monkeypatch.setattr(compiled.Fused, "update", lambda self, *a: fused_calls.append(1) or real(self, *a))
    got = chunk_pass(x, [MixtureRequest(specs)], centre, sample_weight=w, compiled=True)[0]
    assert fused_calls
    want = chunk_pass(x, [MixtureRequest(specs)], centre, sample_weight=w)[0]
    assert len(fused_calls) == 3  # blocks of BLOCK_ROWS rows, and the rest
    for g, r in zip(got, want, strict=True):
        for name in ("n", "s1", "s2"):
            np.testing.assert_allclose(getattr(g, name), getattr(r, name), rtol=1e-12, err_msg=name)
        assert g.loglik == pytest.approx(r.loglik, rel=1e-13)
        np.testing.assert_array_equal(g.worst.rows, r.worst.rows)


def test_a_fit_with_the_kernel_equals_one_without(kernel, monkeypatch):
    from daskgmm import GaussianMixture, engine

    rng = np.random.default_rng(1)
    n = 20_000
    X = np.vstack([rng.normal(size=(n // 2, 4)), rng.normal(size=(n - n // 2, 4)) + 3])
    calls = []
    real = compiled.Fused.update
    monkeypatch.setattr(compiled.Fused, "update", lambda self, *a: calls.append(1) or real(self, *a))
    monkeypatch.setattr(engine, "COMPILED_MIN_ROWS", 0)
    a = GaussianMixture(3, random_state=0, max_iter=20).fit(X)
    assert calls
    monkeypatch.setattr(engine, "COMPILED_MIN_ROWS", 10**12)
    b = GaussianMixture(3, random_state=0, max_iter=20).fit(X)
    assert a.n_iter_ == b.n_iter_
    np.testing.assert_allclose(a.means_, b.means_, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(a.covariances_, b.covariances_, rtol=1e-9, atol=1e-9)
    assert a.lower_bound_ == pytest.approx(b.lower_bound_, rel=1e-12)


def _run(code, env):
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         timeout=300, env={**os.environ, **env})
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_compiled_once_into_the_cache_then_loaded(tmp_path):
    env = {"DASKGMM_CACHE_DIR": str(tmp_path)}
    code = """
        from daskgmm.kernels import compiled
        k = compiled.ready()
        llvm = "llvmlite.binding" in __import__("sys").modules
        print(k is not None, compiled.error(), compiled.cache_path().exists(), llvm)
    """
    assert _run(code, env) == "True None True False"
    assert len(list(tmp_path.glob("kernel-*.o"))) == 1
    assert not list(tmp_path.glob("*.tmp"))
    assert _run(code, env) == "True None True False"  # loaded, not compiled again


def test_a_small_fit_never_starts_the_compiler(tmp_path):
    code = """
        import numpy as np
        from daskgmm import GaussianMixture
        from daskgmm.kernels import compiled
        GaussianMixture(2, random_state=0).fit(np.random.default_rng(0).normal(size=(3000, 2)))
        print(compiled._state["thread"] is None)
    """
    assert _run(code, {"DASKGMM_CACHE_DIR": str(tmp_path)}) == "True"
    assert not list(tmp_path.iterdir())


def test_switched_off_by_the_environment():
    code = """
        from daskgmm.kernels import compiled
        print(compiled.ready(), compiled.error())
    """
    assert _run(code, {"DASKGMM_KERNEL": "numpy"}) == "None switched off by DASKGMM_KERNEL=numpy"


def test_loader_refuses_what_is_not_an_object():
    with pytest.raises(ElfError, match="not a little-endian ELF64"):
        load_object(b"\x7fELF" + bytes(60))
