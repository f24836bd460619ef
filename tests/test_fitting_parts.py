"""The fitting layer's pieces the estimators are thin over: verbose lines, predictions, attributes."""

from types import SimpleNamespace

import numpy as np
import pytest

from daskgmm import GaussianMixture
from daskgmm.fitting import attributes as fitting_attributes
from daskgmm.fitting import mixture as fitting
from daskgmm.fitting import predict as fitting_predict
from daskgmm.fitting.report import VerboseReport

from .conftest import make_blobs


def _run(n_iter, change, converged, objective):
    return SimpleNamespace(n_iter=n_iter, history=[{"change": change}], converged=converged, objective=objective)


def test_verbose_report_prints_scikit_learns_lines(capsys):
    runs = [_run(2, 0.5, True, -1.25), _run(1, 0.1, False, -2.0)]
    report = VerboseReport(1, 2)
    report.start(2)
    report.iteration(1, runs)  # not a multiple of verbose_interval: nothing
    report.iteration(2, runs)  # only the run that made iteration 2
    report.end(runs)
    from daskgmm.engine.cluster import kernels_in_use

    assert capsys.readouterr().out.splitlines() == [
        f"Kernel: {kernels_in_use()}", "Initialization 0", "Initialization 1", "  Iteration 2 (initialization 0)",
        "Initialization 0 converged.", "Initialization 1 did not converge.",
    ]
    VerboseReport(2, 1).end(runs[:1])
    assert capsys.readouterr().out == "Initialization 0 converged. lower bound -1.25000.\n"
    VerboseReport(0, 1).start(3)
    assert capsys.readouterr().out == ""


def test_checks_before_a_fit_give_scikit_learns_messages():
    with pytest.raises(ValueError, match="n_components = 5, n_samples = 4"):
        fitting.check_n_samples(4, 5)
    fitting.check_n_samples(5, 5)
    for bad in ("", "wx", "ww", None):
        with pytest.raises(ValueError, match="update_params"):
            fitting.check_update_params(bad)
    fitting.check_update_params("cw")
    with pytest.raises(ValueError, match="X has 3 features, but the warm-started G was fitted with 2"):
        fitting.check_warm_features("G", 2, 3)


def test_a_continued_model_keeps_its_number_of_components_and_covariance_type():
    """warm_start and a later partial_fit read the fitted arrays as the parameters' form: after set_params
    changed it they broke (a broadcasting error), fitted from garbage (full read as tied), or kept the old
    components under the new n_components (user-trial-10; scikit-learn's warm start does all three)."""
    d = 2
    # tied's factor triangular to rounding (a fit left -5e-17 below a diagonal of 2.7)
    chol = {"full": np.stack([np.triu(np.ones((d, d)))] * 2), "tied": np.array([[2.7, -1.0], [-5e-17, 0.2]]),
            "diag": np.ones((2, d)), "spherical": np.ones(2)}
    for ct, pc in chol.items():  # K = D = 2: tied and diag have one shape, told apart by the triangle
        fitting.check_continued_model("G", np.zeros((2, d)), pc, pc, 2, ct)
        for other in set(chol) - {ct}:
            with pytest.raises(ValueError, match=rf"G\(warm_start=True\) continues the fitted model, which has 2 "
                                                 rf"components and covariance_type='{ct}', but the parameters say "
                                                 rf"n_components=2 and covariance_type='{other}'\. Set warm_start"):
                fitting.check_continued_model("G", np.zeros((2, d)), pc, pc, 2, other)
    with pytest.raises(ValueError, match=r"G.partial_fit continues .* 2 components and covariance_type='full', "
                                         r"but the parameters say n_components=3 .* partial_fit on a clone"):
        fitting.check_continued_model("G", np.zeros((2, d)), chol["full"], chol["full"], 3, "full", how="partial_fit")
    fitting.check_continued_model("G", np.zeros((1, 1)), np.ones((1, 1)), np.ones((1, 1)), 1, "diag")  # one model


def test_prediction_functions_equal_the_estimator():
    X, _, _ = make_blobs(n=600, d=2, k=3)
    g = GaussianMixture(3, random_state=0).fit(X)
    centre = fitting_predict.mixture_centre(g.weights_, g.means_)
    np.testing.assert_allclose(centre, X.mean(axis=0), rtol=1e-6, atol=1e-6)  # EM keeps the mean
    nat = fitting_predict.natural_form(g.weights_, g.means_, g.precisions_cholesky_, g.covariance_type, centre)
    proba = fitting_predict.apply_mixture(X, nat, centre, "proba", None, 3)
    np.testing.assert_array_equal(proba, g.predict_proba(X))
    assert fitting_predict.marginal_form(g.weights_, g.means_, g.precisions_cholesky_, "full", centre) is None
    assert fitting_predict.n_rows(X) == 600
    Xs, y = fitting_predict.sample_mixture(g.weights_, g.means_, g.covariances_, "full", 7, random_state=0)
    Xg, yg = GaussianMixture(3, random_state=0).fit(X).sample(7)
    np.testing.assert_array_equal(Xs, Xg)
    np.testing.assert_array_equal(y, yg)
    with pytest.raises(ValueError, match="at least one sample"):
        fitting_predict.sample_mixture(g.weights_, g.means_, g.covariances_, "full", 0)


def test_model_file_attributes_round_trip_and_are_checked():
    X, _, _ = make_blobs(n=400, d=2, k=2)
    g = GaussianMixture(2, covariance_type="diag", random_state=0).fit(X).partial_fit(X[:100])
    arrays, meta = fitting_attributes.export_mixture(g)
    fitting_attributes.export_online(g, arrays, meta)
    attributes = fitting_attributes.import_mixture(arrays, meta, 2, "diag")
    online = fitting_attributes.import_online(arrays, meta)
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_", "precisions_"):
        np.testing.assert_array_equal(attributes[name], getattr(g, name))
    assert online["n_batches_"] == 2 and attributes["n_iter_"] == g.n_iter_
    np.testing.assert_array_equal(online["online_stats_"].s2, g.online_stats_.s2)
    with pytest.raises(ValueError, match="differ"):
        fitting_attributes.import_mixture(arrays, meta, 2, "full")
    with pytest.raises(ValueError, match="online_s1 has shape"):
        fitting_attributes.import_online({**arrays, "online_s1": np.zeros((3, 2))}, meta)


def test_only_the_online_estimator_saves_online_state(tmp_path):
    """A variational or t mixture learns from no stream of batches: its model file says nothing of one."""
    import json

    from daskgmm import BayesianGaussianMixture, StudentTMixture

    X, _, _ = make_blobs(n=400, d=2, k=2)
    for est in (BayesianGaussianMixture(n_components=2, random_state=0), StudentTMixture(2, random_state=0)):
        est.fit(X).save(tmp_path / type(est).__name__)
        doc = json.loads((tmp_path / type(est).__name__ / "model.json").read_text())
        assert "online" not in doc and not hasattr(est, "n_batches_")
    GaussianMixture(2, random_state=0).fit(X).save(tmp_path / "g")
    assert json.loads((tmp_path / "g" / "model.json").read_text())["online"]["n_batches"] == 1


def test_set_attributes_drops_only_what_it_does_not_set():
    est = SimpleNamespace(a=1, online_stats_=object())
    fitting_attributes.set_attributes(est, {"a": 2}, drop=("online_stats_", "absent_"))
    assert est.a == 2 and not hasattr(est, "online_stats_")
    fitting_attributes.set_attributes(est, {"online_stats_": 3}, drop=("online_stats_",))
    assert est.online_stats_ == 3
