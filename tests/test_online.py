"""Online EM: ``GaussianMixture.partial_fit`` (stepwise EM on sufficient statistics) and ``daskgmm update``."""

import json
import warnings

import dask.array as da
import numpy as np
import pytest

from daskgmm import GaussianMixture, load
from daskgmm.fitting import mixture as fitting
from daskgmm.fitting import online as fitting_online
from daskgmm.kernels import SuffStats
from daskgmm.validation.params import InvalidParameterError

MEANS = np.array([[0.0, 0.0, 0.0], [4.0, 0.0, 0.0], [0.0, 4.0, 2.0]])
MIX = np.array([[1.0, 0.3, 0.0], [0.0, 1.0, 0.2], [0.0, 0.0, 0.7]])


def draw(n, rng, shift=0.0):
    means = MEANS.copy()
    means[:, 0] += shift
    labels = rng.integers(3, size=n)
    return means[labels] + rng.normal(size=(n, 3)) @ MIX


def direct_stats(X, r, shift, covariance_type):
    """Statistics of rows X with responsibilities r about ``shift``, the slow way."""
    xc = X[None, :, :] - np.broadcast_to(shift, (r.shape[1], X.shape[1]))[:, None, :]  # (K, N, D)
    n = r.sum(axis=0)
    s1 = np.einsum("nk,knd->kd", r, xc)
    full = np.einsum("nk,kni,knj->kij", r, xc, xc)
    s2 = {"full": full, "tied": full.sum(axis=0), "diag": np.einsum("kii->ki", full),
          "spherical": np.einsum("kii->k", full)}[covariance_type]
    return SuffStats(n=n, s1=s1, s2=s2, loglik=-1.5 * len(X), weight=float(len(X)), rows=len(X),
                     shift=np.asarray(shift, float), covariance_type=covariance_type)


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
@pytest.mark.parametrize("new_shift", ["common", "per_component"])
def test_recentre_is_exact(covariance_type, new_shift):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 3)) * 2 + 5
    r = rng.dirichlet(np.ones(3), size=200)
    a = direct_stats(X, r, X.mean(axis=0), covariance_type)
    target = rng.normal(size=3) if new_shift == "common" else rng.normal(size=(3, 3)) + 5
    got, want = fitting_online.recentre(a, target), direct_stats(X, r, target, covariance_type)
    for name in ("n", "s1", "s2", "shift"):
        np.testing.assert_allclose(getattr(got, name), getattr(want, name), rtol=1e-12, atol=1e-9)
    assert fitting_online.recentre(a, a.shift) is a


def test_blend_is_per_unit_weight_about_the_batch_shift():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(300, 3))
    r = rng.dirichlet(np.ones(2), size=300)
    running = fitting_online.scale_stats(direct_stats(X[:100], r[:100], np.zeros(3), "full"), 1 / 100)
    batch = direct_stats(X[100:], r[100:], X[100:].mean(axis=0), "full")
    out = fitting_online.blend(running, batch, 0.25)
    assert out.weight == 1.0 and out.rows == 300
    np.testing.assert_array_equal(out.shift, batch.shift)
    # the same rows twice (twice the weight) blend to the same per-unit statistics
    twice = fitting_online.scale_stats(batch, 2.0)
    np.testing.assert_allclose(fitting_online.blend(running, twice, 0.25).s2, out.s2, rtol=1e-13)
    ref = fitting_online.recentre(running, batch.shift)
    np.testing.assert_allclose(out.s1, 0.75 * ref.s1 + 0.25 * batch.s1 / 200, rtol=1e-12)
    with pytest.raises(ValueError, match="first batch needs eta = 1"):
        fitting_online.blend(None, batch, 0.5)


def test_step_size_schedule():
    assert fitting_online.step_size(0) == 1.0
    assert fitting_online.step_size(1) == pytest.approx(11 ** -0.7)
    assert fitting_online.step_size(5, 1.0, 0.0) == pytest.approx(0.2)
    # partial_fit steps by the estimator's own schedule (its learning_offset too: the default's 10 gave 11 ** -0.6)
    g = GaussianMixture(2, random_state=0, learning_decay=0.6, learning_offset=1.0)
    rng = np.random.default_rng(0)
    for _ in range(3):
        g.partial_fit(draw(200, rng))
    assert [h["eta"] for h in g.history_] == pytest.approx([1.0, 2 ** -0.6, 3 ** -0.6])


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_model_statistics_give_back_the_model(covariance_type):
    X = draw(3000, np.random.default_rng(3))
    g = GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(X)
    state = fitting.warm_state(g.weights_, g.means_, g.covariances_, g.precisions_cholesky_,
                               fitting.MixtureParams.of(g.get_params()), np.float64)
    back = state.update(fitting_online.scale_stats(fitting_online.model_statistics(state), 1000.0))
    np.testing.assert_allclose(back.means, g.means_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(back.covariances, g.covariances_, rtol=1e-9)
    np.testing.assert_allclose(back.weights, g.weights_, rtol=1e-10)


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_stream_of_50_batches_matches_batch_em(covariance_type):
    rng = np.random.default_rng(0)
    batches = [draw(int(n), rng) for n in rng.integers(500, 1500, size=50)]  # batches of different sizes
    held_out = draw(20000, np.random.default_rng(99))
    online = GaussianMixture(3, covariance_type=covariance_type, random_state=0)
    for b in batches:
        online.partial_fit(b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(np.vstack(batches))
    assert online.n_batches_ == 50 and online.n_rows_seen_ == sum(map(len, batches))
    assert len(online.history_) == 50 and online.history_[-1]["eta"] == pytest.approx(59 ** -0.7)
    assert abs(online.score(held_out) - batch.score(held_out)) < 0.05


def test_drifting_stream_is_tracked():
    rng = np.random.default_rng(4)
    drift = 0.02  # of the first coordinate of every mean, per batch
    g = GaussianMixture(3, random_state=0, learning_decay=0.6, learning_offset=1.0)
    for t in range(60):
        g.partial_fit(draw(1000, rng, shift=drift * t))
        if t == 9:
            frozen = g.means_.copy()
    now = MEANS.copy()
    now[:, 0] += drift * 59

    def error(means):  # worst distance of a true mean to its nearest fitted one
        return np.sqrt(((now[:, None, :] - means[None]) ** 2).sum(axis=2)).min(axis=1).max()

    assert error(g.means_) < 0.4 < 0.9 < error(frozen)


def test_dask_batches_equal_numpy_batches():
    rng = np.random.default_rng(5)
    batches = [draw(800, rng) for _ in range(4)]
    a, b = GaussianMixture(3, random_state=0), GaussianMixture(3, random_state=0)
    for x in batches:
        a.partial_fit(x)
        b.partial_fit(da.from_array(x, chunks=(300, 3)))
    np.testing.assert_allclose(b.means_, a.means_, rtol=1e-9)
    np.testing.assert_allclose(b.covariances_, a.covariances_, rtol=1e-9)
    # a continuing step is one pass over the batch
    passes = b.n_passes_
    b.partial_fit(da.from_array(batches[0], chunks=(300, 3)))
    assert b.n_passes_ == passes + 1


def test_sample_weight_counts_as_repeated_rows():
    rng = np.random.default_rng(6)
    first, x = draw(1000, rng), draw(400, rng)
    a, b = GaussianMixture(3, random_state=0), GaussianMixture(3, random_state=0)
    a.partial_fit(first)
    b.partial_fit(first)
    a.partial_fit(np.vstack([x, x]))
    b.partial_fit(x, sample_weight=np.full(len(x), 2.0))
    np.testing.assert_allclose(b.means_, a.means_, rtol=1e-10)
    np.testing.assert_allclose(b.covariances_, a.covariances_, rtol=1e-10)


@pytest.mark.parametrize("start", ["partial_fit", "fit"])
def test_tiny_sample_weights_step_as_any_scale(start):
    """Online EM is the same for any scale of the weights (as ``fit``): the running statistics are per
    unit weight, but the M-step saw them at the batch's weight, where its 10 eps swamped weights of 1e-12
    (means off by ~1e-4; weights of 1e-200: every mean at the data's). Scaled by the power of two ``fit``
    takes: weights of 1e-12 give the bits of weights 2**40 times as large, the first batch's starts too."""
    rng = np.random.default_rng(0)
    X = draw(240, rng)
    w = rng.uniform(0.5, 2.0, len(X))
    fits = []
    for s in (1e-12 * 2.0**40, 1e-12, 1e-200):
        g = GaussianMixture(3, random_state=0, init_params="random")
        if start == "fit":
            g.fit(X[:80], sample_weight=w[:80] * s)
        else:
            g.partial_fit(X[:80], sample_weight=w[:80] * s)
        for i in (80, 160):
            g.partial_fit(X[i:i + 80], sample_weight=w[i:i + 80] * s)
        fits.append(g)
    for attr in ("means_", "covariances_", "weights_", "lower_bound_"):
        np.testing.assert_array_equal(getattr(fits[1], attr), getattr(fits[0], attr), err_msg=attr)
        np.testing.assert_allclose(getattr(fits[2], attr), getattr(fits[0], attr), rtol=1e-6, err_msg=attr)


def test_fit_then_partial_fit_continues():
    rng = np.random.default_rng(7)
    X = draw(5000, rng)
    g = GaussianMixture(3, random_state=0, tol=1e-10, max_iter=500).fit(X)
    assert g.n_batches_ == 1 and g.n_rows_seen_ == 5000 and not hasattr(g, "online_stats_")
    means = g.means_.copy()
    # the fitted model is a fixed point of EM on its data: a step on the same data barely moves it
    g.partial_fit(X)
    np.testing.assert_allclose(g.means_, means, atol=1e-5)
    assert g.n_batches_ == 2 and g.n_rows_seen_ == 10000 and g.history_[-1]["eta"] == pytest.approx(11 ** -0.7)
    # a step on other data moves it by eta_2 of the way towards that data's model
    shifted = X + np.array([1.0, 0.0, 0.0])
    g.partial_fit(shifted)
    moved = g.means_[:, 0] - means[:, 0]
    assert np.all((moved > 0.5 * 12 ** -0.7) & (moved < 1.5 * 12 ** -0.7))


@pytest.mark.parametrize("first,then", [(np.float64, np.float32), (np.float32, np.float64)])
def test_parameters_keep_the_dtype_of_the_first_batch(first, then):
    rng = np.random.default_rng(3)
    g = GaussianMixture(3, random_state=0).partial_fit(draw(2000, rng).astype(first))
    g.partial_fit(draw(2000, rng).astype(then))
    for name in ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"):
        assert getattr(g, name).dtype == first, name


def test_save_load_continue_is_exact(tmp_path):
    rng = np.random.default_rng(8)
    batches = [draw(700, rng) for _ in range(6)]
    g = GaussianMixture(3, covariance_type="tied", random_state=0, learning_decay=0.8)
    for b in batches[:5]:
        g.partial_fit(b)
    g.save(tmp_path / "m")
    doc = json.loads((tmp_path / "m" / "model.json").read_text())
    assert doc["online"]["n_batches"] == 5 and doc["params"]["learning_decay"] == 0.8
    h = load(tmp_path / "m")
    assert h.n_batches_ == 5 and h.n_rows_seen_ == 3500 and h.learning_decay == 0.8
    g.partial_fit(batches[5])
    h.partial_fit(batches[5])
    np.testing.assert_array_equal(h.means_, g.means_)
    np.testing.assert_array_equal(h.covariances_, g.covariances_)
    np.testing.assert_array_equal(h.online_stats_.s2, g.online_stats_.s2)


def test_bad_input():
    rng = np.random.default_rng(9)
    x = draw(500, rng)
    g = GaussianMixture(3, random_state=0).partial_fit(x)
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        g.partial_fit(bad)
    with pytest.raises(ValueError, match="column 1: 1 value"):
        g.partial_fit(da.from_array(bad, chunks=(100, 3)))
    with pytest.raises(ValueError, match="3 features"):
        g.partial_fit(x[:, :2])
    with pytest.raises(ValueError, match="sum of 0"):
        g.partial_fit(da.from_array(x, chunks=(100, 3)), sample_weight=np.zeros(len(x)))
    assert g.n_batches_ == 1  # nothing was stepped
    for key, value in (("learning_decay", 0.5), ("learning_decay", 1.2), ("learning_offset", -1.0)):
        with pytest.raises(InvalidParameterError, match=key):
            GaussianMixture(3, **{key: value}).partial_fit(x)
    with pytest.raises(ValueError, match="n_samples >= n_components"):
        GaussianMixture(3).partial_fit(x[:2])


# ---------------------------------------------------------------------------
# daskgmm update


def _cli(tmp_path):
    from daskgmm.cli import main

    from .conftest import FAST, write_data

    day1, day2 = tmp_path / "day1", tmp_path / "day2"
    write_data(day1, n=1500, seed=0)
    write_data(day2, n=1200, seed=1)
    assert main(["fit", str(day1), "--columns", "f0,f1,f2", "--n-components", "3", "--seed", "0",
                 "--model-out", str(tmp_path / "m1"), *FAST]) == 0
    return main, FAST, day1, day2


def test_cli_update_equals_partial_fit(tmp_path, monkeypatch):
    import daskgmm.cli.fit as cli_fit
    from daskgmm import read_parquet

    main, fast, _, day2 = _cli(tmp_path)
    metrics, away = tmp_path / "metrics.json", tmp_path / "away"
    kept, keep_rows = [], cli_fit.keep_rows

    def keep_and_hide(o, src, **how):  # DATA gone once the rows are kept: the steps and predictions read it once
        kept.append(keep_rows(o, src, **how))
        day2.rename(away)
        return kept[-1]

    monkeypatch.setattr(cli_fit, "keep_rows", keep_and_hide)
    rc = main(["update", str(day2), "--model", str(tmp_path / "m1"), "--model-out", str(tmp_path / "m2"),
               "--passes", "2", "--metrics-out", str(metrics), "--predictions-out", str(tmp_path / "p"),
               "--id-column", "id", *fast])
    away.rename(day2)
    monkeypatch.undo()
    assert rc == 0
    m = json.loads(metrics.read_text())
    assert m["status"] == "ok" and m["n_batches"] == 3 and m["n_rows_seen"] == 1500 + 2 * 1200
    assert kept == [True] and m["rows_in_memory"] is True  # the steps and predictions read the kept rows
    assert len(m["history"]) == 2 and (tmp_path / "m2" / "_SUCCESS").exists() and (tmp_path / "p" / "_SUCCESS").exists()
    cli = load(tmp_path / "m2")
    py = load(tmp_path / "m1")
    X = read_parquet(str(day2), columns=["f0", "f1", "f2"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a Dask array has no feature names
        py.partial_fit(X).partial_fit(X)
    assert cli.n_batches_ == py.n_batches_ == 3
    np.testing.assert_allclose(cli.means_, py.means_, rtol=1e-10)
    np.testing.assert_allclose(cli.covariances_, py.covariances_, rtol=1e-10)
    assert list(cli.feature_names_in_) == ["f0", "f1", "f2"]
    # in place: --model and --model-out the same directory, as a nightly job runs it
    # (with a schedule of its own, which the model keeps and its step takes: eta_3 = (3 + 1) ** -0.6)
    assert main(["update", str(day2), "--model", str(tmp_path / "m2"), "--model-out", str(tmp_path / "m2"),
                 "--learning-offset", "1", "--learning-decay", "0.6", *fast]) == 0
    m2 = load(tmp_path / "m2")
    assert m2.n_batches_ == 4 and (m2.learning_offset, m2.learning_decay) == (1.0, 0.6)
    assert m2.history_[-1]["eta"] == pytest.approx(4 ** -0.6)


def test_cli_update_bad_input_exits_2_and_keeps_outputs(tmp_path, capsys):
    import os

    from .conftest import write_data

    main, fast, _, day2 = _cli(tmp_path)
    m1 = tmp_path / "m1"
    before = {p: (m1 / p).read_bytes() for p in os.listdir(m1)}
    bad = tmp_path / "bad"
    write_data(bad, n=600, nan_row=17)
    cases = [
        (["update", str(bad), "--model", str(m1), "--model-out", str(m1)], "NaN"),
        (["update", str(day2), "--model", str(m1), "--model-out", str(m1), "--columns", "f0,nope"], "no column 'nope'"),
        (["update", str(day2), "--model", str(tmp_path / "none"), "--model-out", str(m1)], "no model here"),
        (["update", str(day2), "--model", str(m1)], "--model-out is required"),
        (["update", str(day2), "--model", str(m1), "--model-out", str(m1), "--passes", "0"], "--passes must be"),
        (["update", str(day2), "--model", str(m1), "--model-out", str(m1), "--learning-decay", "0.3"],
         "learning_decay"),
        (["update", str(day2), "--model", str(m1), "--model-out", str(m1), "--resume"], "needs --checkpoint-dir"),
    ]
    for argv, match in cases:
        rc = main([*argv, *fast])
        err = capsys.readouterr().err
        assert rc == 2, err
        assert match in err, err
    assert {p: (m1 / p).read_bytes() for p in os.listdir(m1)} == before


@pytest.mark.slow
def test_cli_update_resumes_from_its_checkpoint(tmp_path):
    from types import SimpleNamespace

    from daskgmm.cli import _update_fingerprint
    from daskgmm.io.modelfiles import Checkpoint, save_model
    from daskgmm.io.parquet import open_parquet

    main, fast, _, day2 = _cli(tmp_path)
    ckpt = tmp_path / "ckpt"
    common = ["update", str(day2), "--model", str(tmp_path / "m1"), *fast]
    args = [*common, "--passes", "3", "--checkpoint-dir", str(ckpt)]
    assert main([*args, "--model-out", str(tmp_path / "whole")]) == 0
    assert not (ckpt / "checkpoint.npz").exists() and not (ckpt / "update-model").exists()
    # what a 3-step job killed after its first step leaves: the checkpoint naming the job
    # (written as it starts) and the model after the step
    assert main([*common, "--passes", "1", "--model-out", str(tmp_path / "one")]) == 0
    job = SimpleNamespace(command="update", model=str(tmp_path / "m1"), passes=3, dtype="float64", nan_policy="raise",
                          chunk_rows=None, learning_decay=None, learning_offset=None, sparse=None)
    src = open_parquet(str(day2), ["f0", "f1", "f2"])
    Checkpoint(str(ckpt), _update_fingerprint(job, src, load(tmp_path / "m1"))).save([])
    save_model(load(tmp_path / "one"), ckpt / "update-model")
    metrics = tmp_path / "metrics.json"
    assert main([*args, "--resume", "--model-out", str(tmp_path / "resumed"), "--metrics-out", str(metrics)]) == 0
    m = json.loads(metrics.read_text())
    assert "checkpoint_discarded" not in m and m["resumed_steps"] == 1 and len(m["history"]) == 3
    whole, resumed = load(tmp_path / "whole"), load(tmp_path / "resumed")
    assert resumed.n_batches_ == whole.n_batches_ == 4
    np.testing.assert_array_equal(resumed.means_, whole.means_)
    np.testing.assert_array_equal(resumed.covariances_, whole.covariances_)


def test_reinit_does_not_take_small_batches_for_collapses():
    """on_collapse="reinit" counts a component's rows behind the running statistics, not in the batch:
    batches of 10 rows (and a last one of 1) made every component of weight under 0.3 look collapsed
    (fewer rows than a covariance needs), re-seeding healthy ones at every step (93 times here, and the
    1-row batch raised "every component collapsed")."""
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 1, (300, 2)), rng.normal(8, 1, (300, 2)), rng.normal([0, 8], 1, (300, 2))]
    rng.shuffle(X)
    fits = {}
    for on in ("raise", "reinit"):
        g = GaussianMixture(3, random_state=0, on_collapse=on).partial_fit(X[:300])
        for i in range(300, 900, 10):
            g.partial_fit(X[i:i + 10])
        g.partial_fit(X[:1])
        fits[on] = g
    assert not [e for h in fits["reinit"].history_ for e in h["events"]]
    np.testing.assert_allclose(fits["reinit"].means_, fits["raise"].means_, rtol=1e-10)


def test_reinit_online_counts_rows_whatever_the_scale_of_sample_weight():
    """on_collapse="reinit" in online EM counts a component's rows, not its weighted responsibility: batches
    weighted 0.01 each (the same steps as unweighted) made every component look collapsed ('every component
    collapsed')."""
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 1, (200, 2)), rng.normal(6, 1, (200, 2))]
    rng.shuffle(X)
    fits = []
    for s in (1.0, 0.01):
        g = GaussianMixture(2, random_state=0, on_collapse="reinit").partial_fit(X[:100], sample_weight=np.full(100, s))
        for i in range(100, 400, 50):
            g.partial_fit(X[i:i + 50], sample_weight=np.full(50, s))
        fits.append(g)
    assert not [e for g in fits for h in g.history_ for e in h["events"]]
    np.testing.assert_allclose(fits[1].means_, fits[0].means_, rtol=1e-6)


def test_reinit_online_counts_rows_not_their_weights(tmp_path):
    """on_collapse="reinit" in online EM counts a component's rows with their weights left out, as fit does: 50
    rows of weight 1e-6 (beside 400 of weight 1) were 5.6e-05 rows, re-seeded at every step. The running
    share of the rows is kept with the model, so a saved and loaded model steps as the one in memory."""
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 1, (200, 2)), rng.normal(6, 1, (200, 2)), rng.normal(40, 1, (50, 2))]
    sw = np.r_[np.ones(400), np.full(50, 1e-6)]
    order = rng.permutation(len(X))
    X, sw = X[order], sw[order]
    fits = {}
    for on in ("raise", "reinit"):
        g = GaussianMixture(3, means_init=[[0, 0], [6, 6], [40, 40]], random_state=0, on_collapse=on)
        for i in range(0, 300, 150):
            g.partial_fit(X[i:i + 150], sample_weight=sw[i:i + 150])
        fits[on] = g
    g = fits["reinit"]
    assert g.online_stats_.counts is not None
    g.save(tmp_path / "m")
    again = load(tmp_path / "m")
    np.testing.assert_array_equal(again.online_stats_.counts, g.online_stats_.counts)
    for m in (*fits.values(), again):
        m.partial_fit(X[300:], sample_weight=sw[300:])
    assert not [e for h in g.history_ for e in h["events"]]
    np.testing.assert_array_equal(g.means_, fits["raise"].means_)
    np.testing.assert_array_equal(again.means_, g.means_)


def test_reinit_online_after_fit_counts_the_fitted_rows():
    """After ``fit`` the running statistics stand for the fitted rows (``n_rows_seen_``) as well as the
    batch's: small batches do not make healthy components look collapsed (D=4: D + 1 rows needed)."""
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 1, (300, 4)), rng.normal(8, 1, (300, 4)), rng.normal([0, 8, 0, 8], 1, (300, 4))]
    rng.shuffle(X)
    fits = {}
    for on in ("raise", "reinit"):
        g = GaussianMixture(3, random_state=0, on_collapse=on).fit(X[:300])
        for i in range(300, 900, 10):
            g.partial_fit(X[i:i + 10])
            assert not [e for h in g.history_ for e in h["events"]]
        fits[on] = g
    np.testing.assert_allclose(fits["reinit"].means_, fits["raise"].means_, rtol=1e-10)
