"""``daskgmm fit --estimator kmedoids``: predictions, model files, info, predict, score, refusals."""

import json
import os

import numpy as np
import pandas as pd
import pytest

import daskgmm
from daskgmm.cli import main

from .conftest import FAST, expect_exit2, write_data


def test_fit_kmedoids_manhattan_end_to_end(tmp_path, capsys):
    data = tmp_path / "data"
    X = write_data(data, n=3000, d=3, k=3, files=3)
    model, preds, metrics = tmp_path / "model", tmp_path / "preds", tmp_path / "m.json"
    rc = main(["fit", str(data), "--columns", "f0,f1,f2", "--id-column", "id", "--estimator", "kmedoids",
               "--metric", "manhattan", "--method", "pam", "--n-components", "3", "--seed", "0",
               "--model-out", str(model), "--predictions-out", str(preds), "--distance",
               "--metrics-out", str(metrics), *FAST])
    assert rc == 0, capsys.readouterr().err
    est = daskgmm.load(model)
    assert type(est).__name__ == "KMedoids" and est.metric == "manhattan" and est.method == "pam"
    # the medoids are rows of the data, named by their global row numbers (ids here)
    np.testing.assert_array_equal(X[est.medoid_indices_], est.cluster_centers_)
    # the command fits what the Python API fits on the same rows
    ref = daskgmm.KMedoids(3, metric="manhattan", method="pam", random_state=0).fit(X)
    assert np.abs(X[:, None, :] - ref.cluster_centers_[None]).sum(axis=2).min(axis=1).sum() == pytest.approx(
        est.inertia_, rel=1e-12)
    p = pd.read_parquet(preds).sort_values("id")
    assert list(p.columns) == ["id", "label", "distance"]
    d = np.abs(X[:, None, :] - est.cluster_centers_[None]).sum(axis=2)
    np.testing.assert_array_equal(p["label"].to_numpy(), d.argmin(axis=1))
    np.testing.assert_allclose(p["distance"].to_numpy(), d.min(axis=1), rtol=1e-12)
    m = json.loads(metrics.read_text())
    assert m["status"] == "ok" and m["metric"] == "manhattan" and m["medoid_indices"] == est.medoid_indices_.tolist()
    assert m["inertia"] == pytest.approx(d.min(axis=1).sum(), rel=1e-12)
    assert m["kernel"].startswith("numpy")  # k-medoids passes have no compiled kernel: said so

    assert main(["info", "--model", str(model)]) == 0
    out = capsys.readouterr().out
    assert "3 medoids, manhattan dissimilarity, pam passes" in out and f"row {est.medoid_indices_[0]}" in out

    again = tmp_path / "again"
    assert main(["predict", str(data), "--model", str(model), "--id-column", "id", "--out", str(again),
                 "--distance", *FAST]) == 0
    q = pd.read_parquet(again).sort_values("id")
    pd.testing.assert_frame_equal(p.reset_index(drop=True), q.reset_index(drop=True))
    capsys.readouterr()
    assert main(["score", str(data), "--model", str(model), *FAST]) == 0
    score = json.loads(capsys.readouterr().out)
    assert score["inertia"] == pytest.approx(est.inertia_, rel=1e-12) and score["n_rows"] == 3000


def test_kmedoids_options_are_refused_where_they_do_not_apply(tmp_path, capsys):
    data = tmp_path / "data"
    write_data(data, n=300, d=2, k=2, files=1)
    base = ["fit", str(data), "--columns", "f0,f1", "--model-out", str(tmp_path / "m"), *FAST]
    expect_exit2([*base, "--metric", "manhattan"], "--metric manhattan is an option of --estimator kmedoids", capsys)
    expect_exit2([*base, "--estimator", "kmedoids", "--proba"], "--proba: option(s) of the mixtures", capsys)
    expect_exit2([*base, "--estimator", "kmedoids", "--covariance-type", "diag"], "--covariance-type", capsys)
    expect_exit2([*base, "--estimator", "kmedoids", "--metric", "manhatan"], "invalid choice: 'manhatan'", capsys)
    expect_exit2([*base, "--estimator", "kmedoids", "--nan-policy", "marginalize"], "does not marginalise", capsys)
    assert not os.path.exists(tmp_path / "m")
    model = tmp_path / "km"
    assert main(["fit", str(data), "--columns", "f0,f1", "--estimator", "kmedoids", "--n-components", "2",
                 "--model-out", str(model), *FAST]) == 0
    expect_exit2(["predict", str(data), "--model", str(model), "--out", str(tmp_path / "p"), "--proba", *FAST],
                 "--proba does not apply", capsys)


def test_nan_euclidean_is_no_metric_of_the_command_but_an_old_model_with_it_loads(tmp_path, capsys):
    """KMedoids refuses metric='nan_euclidean' (its rows cannot hold NaN): the command refuses it before its
    cluster starts, as a flag and in a config, saying why; it is no choice of --metric. It stays a name a
    model file may hold: one saved with it before the refusal loads, tells its info and predicts."""
    from daskgmm.cli.args import build_parser

    data = tmp_path / "data"
    X = write_data(data, n=60, d=2, k=2, files=1)
    base = ["fit", str(data), "--columns", "f0,f1", "--estimator", "kmedoids", "--model-out", str(tmp_path / "m"),
            *FAST]
    why = "nan_euclidean: KMedoids does not support it: its rows cannot hold missing values (NaN)"
    expect_exit2([*base, "--metric", "nan_euclidean"], f"argument --metric: {why}", capsys)
    config = tmp_path / "c.yaml"
    config.write_text("metric: nan_euclidean\n")
    expect_exit2([*base, "--config", str(config)], f"{config}: metric: {why}", capsys)
    assert not os.path.exists(tmp_path / "m")
    fit = next(a for a in build_parser()._subparsers._group_actions[0].choices["fit"]._actions
               if a.dest == "metric")
    assert "nan_euclidean" not in fit.choices and "but nan_euclidean" in fit.help and "manhattan" in fit.choices

    # a model saved with it before the refusal (written here from a euclidean one: on rows without NaN the two
    # are the same dissimilarity)
    model = tmp_path / "old"
    km = daskgmm.KMedoids(2, random_state=0).fit(X)
    km.save(model)
    doc = json.loads((model / "model.json").read_text())
    assert doc["params"]["metric"] == "euclidean"
    doc["params"]["metric"] = "nan_euclidean"
    doc["metric"] = "nan_euclidean"
    (model / "model.json").write_text(json.dumps(doc))
    old = daskgmm.load(model)
    assert old.metric == "nan_euclidean"
    np.testing.assert_array_equal(old.predict(X), km.predict(X))
    np.testing.assert_allclose(old.transform(X), km.transform(X), rtol=1e-12)
    assert main(["info", "--model", str(model)]) == 0
    assert "nan_euclidean dissimilarity" in capsys.readouterr().out


@pytest.mark.parametrize("metric, extra, said", [
    ("haversine", None, "Haversine distance only valid in 2 dimensions"),
    ("seuclidean", "const", "metric='seuclidean' divides by every column's variance, and column(s) 'const' of X"),
    ("mahalanobis", "twice", "metric='mahalanobis' needs the inverse of the data's covariance, which is singular"),
    ("correlation", "flat", "metric 'correlation' gave NaN between"),
])
def test_a_metric_the_data_cannot_take_is_exit_2_naming_the_option_and_columns(tmp_path, capsys, metric, extra,
                                                                                 said):
    """A dissimilarity the data cannot have (haversine of 3 columns, seuclidean with a constant column,
    mahalanobis with a singular covariance, correlation with a constant row) is bad input: exit 2,
    scikit-learn's (or the estimator's) sentence first, then the flag and DATA's feature columns; no model
    written (user-trial-r16: exit 1, 'ValueError: ...', the column by position)."""
    data = tmp_path / "data"
    X = write_data(data, n=300, d=3, k=2, files=1)
    cols = "f0,f1,f2"
    if extra == "flat":  # a row with one value in every feature: its correlation with any row is 0/0
        df = pd.read_parquet(data)
        df.loc[7, ["f0", "f1", "f2"]] = 1.0
        for f in data.iterdir():
            f.unlink()
        df.to_parquet(data / "part-0.parquet", index=False)
    elif extra is not None:
        df = pd.read_parquet(data)
        df[extra] = 1.0 if extra == "const" else 2.0 * df["f0"]
        for f in data.iterdir():
            f.unlink()
        df.to_parquet(data / "part-0.parquet", index=False)
        cols += f",{extra}"
    metrics = tmp_path / "m.json"
    argv = ["fit", str(data), "--columns", cols, "--estimator", "kmedoids", "--n-components", "2",
            "--metric", metric, "--model-out", str(tmp_path / "model"), "--metrics-out", str(metrics), *FAST]
    expect_exit2(argv, f"daskgmm: error: {said}", capsys)
    main(argv)
    err = capsys.readouterr().err
    named = f"the {len(cols.split(','))} feature column(s) ({cols.replace(',', ', ')})"
    assert f"daskgmm fit: --metric {metric} cannot measure {named}" in err, err
    assert "ValueError" not in err
    assert not os.path.exists(tmp_path / "model")
    m = json.loads(metrics.read_text())
    assert m["exit_code"] == 2 and m["error"].startswith(said)
    assert X.shape == (300, 3)


def test_info_of_a_kmedoids_model_started_from_given_points_says_so(tmp_path, capsys):
    """An array --init starts from the rows nearest to the points, with no FasterPAM on a sample: info says
    that, not 'FasterPAM on 0 sampled rows, loss nan' (user-trial-r16)."""
    data = tmp_path / "data"
    write_data(data, n=300, d=2, k=2, files=1)
    model = tmp_path / "model"
    assert main(["fit", str(data), "--columns", "f0,f1", "--estimator", "kmedoids", "--init", "0,0;5,5",
                 "--model-out", str(model), *FAST]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main(["info", "--model", str(model)]) == 0
    out = capsys.readouterr().out
    assert "start:            the rows nearest the 2 given points (--init)" in out, out
    assert "nan" not in out and "0 sampled rows" not in out


def test_fewer_distinct_rows_than_medoids_is_said(tmp_path, capsys):
    """Rows of fewer distinct points than --n-components leave a medoid's cluster empty: the command says so in
    a warning line, as KMedoids warns in Python and fit --estimator kmeans does (user-trial-r16: nothing said)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = tmp_path / "two.parquet"
    pq.write_table(pa.table({"x": [0.0] * 50 + [5.0] * 50, "y": [1.0] * 50 + [2.0] * 50}), data)
    metrics = tmp_path / "m.json"
    assert main(["fit", str(data), "--estimator", "kmedoids", "--n-components", "3", "--model-out",
                 str(tmp_path / "model"), "--metrics-out", str(metrics), *FAST]) == 0
    err = capsys.readouterr().err
    assert "daskgmm: warning: cluster" in err and "is empty: fewer distinct rows than clusters" in err, err
