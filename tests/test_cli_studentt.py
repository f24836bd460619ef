"""``daskgmm fit --estimator student``: model files, predictions, score, sample, info, checkpoints, refusals;
and a Student-t fit interrupted and resumed from its checkpoint in Python."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from daskgmm.cli import main

from .conftest import FAST, expect_exit2, write_data

COLS = ["--columns", "f0,f1,f2"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    directory = tmp_path_factory.mktemp("studentt") / "data"
    return directory, write_data(directory, n=3000, d=3, k=3, files=3)


@pytest.mark.slow
def test_fit_student_end_to_end(data, tmp_path, capsys):
    from daskgmm import StudentTMixture, load

    directory, X = data
    model, preds, metrics = tmp_path / "model", tmp_path / "preds", tmp_path / "m.json"
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump({"estimator": "student", "df": 6.0, "n_components": 3, "seed": 0}))
    rc = main(["fit", str(directory), *COLS, "--id-column", "id", "--config", str(config), "--covariance-type",
               "diag", "--model-out", str(model), "--predictions-out", str(preds), "--proba", "--loglik",
               "--checkpoint-dir", str(tmp_path / "ck"), "--metrics-out", str(metrics), *FAST])
    assert rc == 0, capsys.readouterr().err
    est = load(model)
    assert type(est) is StudentTMixture and est.df == 6.0 and not est.fixed_df
    ref = StudentTMixture(3, covariance_type="diag", df=6.0, random_state=0).fit(X)
    np.testing.assert_allclose(est.means_, ref.means_, rtol=1e-9)
    np.testing.assert_allclose(est.df_, ref.df_, rtol=1e-9)
    m = json.loads(metrics.read_text())
    assert m["status"] == "ok" and len(m["df"]) == 3
    from daskgmm.kernels import compiled

    # the t passes run the compiled core where it is built: the metrics (and the cluster line, the same
    # string: tests/test_cli.py) say which
    assert m["kernel"] == compiled.describe()
    table = pq.read_table(preds)
    assert table.column_names == ["id", "label", "proba_0", "proba_1", "proba_2", "loglik"]
    ids = table.column("id").to_numpy()
    np.testing.assert_array_equal(table.column("label").to_numpy(), est.predict(X[ids]))
    np.testing.assert_allclose(table.column("loglik").to_numpy(), est.score_samples(X[ids]), rtol=1e-10)
    capsys.readouterr()
    assert main(["score", str(directory), "--model", str(model), *FAST]) == 0
    score = json.loads(capsys.readouterr().out)
    assert score["n_parameters"] == 3 * 3 + 3 * 3 + 2 + 3  # diag scales, means, weights, degrees of freedom
    np.testing.assert_allclose(score["mean_loglik"], est.score(X), rtol=1e-10)
    np.testing.assert_allclose(score["bic"], est.bic(X), rtol=1e-10)
    assert main(["info", "--model", str(model)]) == 0
    text = capsys.readouterr().out
    assert "StudentTMixture" in text and "df:               " + " ".join(f"{v:.4g}" for v in est.df_) in text
    out = tmp_path / "sample"
    assert main(["sample", "--model", str(model), "-n", "500", "--out", str(out), "--seed", "1", *FAST]) == 0
    assert pq.read_table(out).num_rows == 500


def test_fixed_df_and_the_checkpoint_fingerprint(data, tmp_path):
    from daskgmm import load
    from daskgmm.cli import build_parser, resolve
    from daskgmm.cli.fit import fingerprint
    from daskgmm.cli.runtime import open_data

    directory, _ = data
    model = tmp_path / "model"
    assert main(["fit", str(directory), *COLS, "--estimator", "student", "--n-components", "2", "--df", "3",
                 "--fixed-df", "--model-out", str(model), *FAST]) == 0
    np.testing.assert_array_equal(load(model).df_, [3.0, 3.0])

    def job(*args):
        o = resolve(build_parser().parse_args(["fit", str(directory), *COLS, "--estimator", "student",
                                               "--model-out", str(model), *args]))
        return fingerprint(o, open_data(o, lambda msg: None))

    assert job("--df", "3") != job("--df", "5") != job("--df", "5", "--fixed-df")


def test_the_student_options_say_so_in_the_help():
    from daskgmm.cli.config import options_for

    for opt in options_for("fit"):
        if opt.dest in ("df", "fixed_df"):
            assert "(--estimator student" in opt.help, opt.dest


@pytest.mark.parametrize("args, match", [
    (["--df", "3"], "--df: option(s) of the Student-t mixture, which need --estimator student"),
    (["--estimator", "bayesian", "--fixed-df"], "--fixed-df: option(s) of the Student-t mixture"),
    (["--estimator", "student", "--on-collapse", "reinit"], "--on-collapse reinit is an option of --estimator"),
    (["--estimator", "student", "--df=-1"], "The 'df' parameter of StudentTMixture must be a float in the range"),
    (["--estimator", "student", "--df=1e8"], "range [0.01, 1e+06] with fixed_df=False"),
    (["--estimator", "student", "--mean-prior", "0,0,0"], "prior(s) of the variational mixture"),
])
def test_bad_student_options_exit_2(data, tmp_path, capsys, args, match):
    directory, _ = data
    expect_exit2(["fit", str(directory), *COLS, "--model-out", str(tmp_path / "m"), *args, *FAST], match, capsys)
    assert not (tmp_path / "m").exists()


def test_a_student_model_is_not_updated_online(data, tmp_path, capsys):
    directory, _ = data
    model = tmp_path / "model"
    assert main(["fit", str(directory), *COLS, "--estimator", "student", "--n-components", "2", "--model-out",
                 str(model), *FAST]) == 0
    expect_exit2(["update", str(directory), "--model", str(model), "--model-out", str(tmp_path / "m2"), *FAST],
                 "holds a StudentTMixture; online updates (partial_fit) are implemented for GaussianMixture and "
                 "KMeans only", capsys)
    assert not (tmp_path / "m2").exists()


class _Killed(Exception):
    pass


def test_an_interrupted_fit_resumes_from_its_checkpoint_to_the_same_bits(tmp_path):
    from daskgmm import StudentTMixture
    from daskgmm.io.modelfiles import Checkpoint

    X = write_data(tmp_path / "d", n=2000, d=2, k=3)
    kw = dict(n_init=2, tol=0.0, max_iter=12, random_state=5)
    ref = StudentTMixture(3, **kw).fit(X)

    def kill_at_5(event, **info):
        if event == "iteration" and info["iteration"] == 5:
            raise _Killed

    ckpt = Checkpoint(tmp_path / "ck", {"job": "t"})
    with pytest.raises(_Killed):
        StudentTMixture(3, **kw).fit(X, checkpoint=ckpt, progress=kill_at_5)
    resumed = StudentTMixture(3, **kw).fit(X, checkpoint=ckpt)
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_", "df_", "lower_bounds_"):
        np.testing.assert_array_equal(getattr(resumed, name), getattr(ref, name), err_msg=name)
