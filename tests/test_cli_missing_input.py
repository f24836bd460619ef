"""The command on data with missing values under --nan-policy marginalize: bad data exits 2, nothing written."""

from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from .conftest import FAST


def _write(path, x):
    pq.write_table(pa.table({"id": np.arange(len(x)), **{f"f{j}": x[:, j] for j in range(x.shape[1])}}),
                   path, row_group_size=100)


def test_rows_with_every_feature_missing_are_left_out_and_counted(tmp_path, capsys):
    """A row with every feature missing made fit, predict and score exit 2 (user-trial-r15): it holds no
    information under --nan-policy marginalize, so each fit leaves it out, says how many on stderr and in
    the metrics (n_empty_rows), and fits the model of the data without it; predict gives it the weights."""
    import json

    import daskgmm
    from daskgmm.cli import main

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3))
    x[:150] += 4
    x[rng.random(x.shape) < 0.1] = np.nan
    x[np.isnan(x).all(axis=1), 0] = 0.0
    x[105] = np.nan  # row 5 of row group 1
    data, clean = tmp_path / "d.parquet", tmp_path / "clean.parquet"
    _write(data, x)
    _write(clean, np.delete(x, 105, axis=0))
    common = ["--nan-policy", "marginalize", "--columns", "f0,f1,f2", *FAST[:-1]]
    for estimator in ("gaussian", "bayesian", "student"):
        capsys.readouterr()
        out, ref = tmp_path / f"m-{estimator}", tmp_path / f"ref-{estimator}"
        fit = ["fit", "--estimator", estimator, "--n-components", "2", "--seed", "0", *common]
        assert main([*fit, str(data), "--model-out", str(out), "--metrics-out", f"{out}.json"]) == 0, estimator
        err = capsys.readouterr().err
        assert "warning: 1 row(s) have every feature missing (NaN or null)" in err, (estimator, err)
        assert json.loads((tmp_path / f"m-{estimator}.json").read_text())["n_empty_rows"] == 1
        assert main([*fit, str(clean), "--model-out", str(ref)]) == 0, estimator
        got, want = daskgmm.load(out), daskgmm.load(ref)
        np.testing.assert_allclose(got.means_, want.means_, rtol=1e-9, err_msg=estimator)
        np.testing.assert_allclose(got.weights_, want.weights_, rtol=1e-9, err_msg=estimator)
    pred = tmp_path / "pred"
    assert main(["predict", str(data), "--model", str(tmp_path / "m-gaussian"), "--out", str(pred), "--id-column",
                 "id", "--proba", "--loglik", *common]) == 0
    table = pq.read_table(pred).to_pandas().set_index("id")
    weights = daskgmm.load(tmp_path / "m-gaussian").weights_
    np.testing.assert_allclose(table.loc[105, ["proba_0", "proba_1"]].to_numpy(float), weights, rtol=1e-10)
    assert abs(table.loc[105, "loglik"]) < 1e-12
    assert main(["score", str(data), "--model", str(tmp_path / "m-student"), *common]) == 0


def test_no_row_without_nan_fits_and_the_starts_that_draw_one_are_bad_data(tmp_path, capsys):
    """Every row misses a value: the default start (k-means on every row with an observed value) fits each mixture
    (it was refused, exit 2); a start that draws rows without NaN is a fault of the data (exit 2), naming the
    columns to impute by their Parquet names and the start by its flag."""
    from daskgmm.cli import main

    x = np.random.default_rng(1).normal(size=(60, 3))
    x[np.arange(60), np.arange(60) % 3] = np.nan
    data = tmp_path / "d.parquet"
    _write(data, x)
    for estimator in ("gaussian", "bayesian", "student"):
        out = tmp_path / f"model-{estimator}"
        assert main(["fit", str(data), "--estimator", estimator, "--n-components", "2", "--model-out", str(out),
                     "--nan-policy", "marginalize", "--columns", "f0,f1,f2", *FAST]) == 0, estimator
        assert out.exists(), estimator
        capsys.readouterr()
        bad = tmp_path / f"model-{estimator}-kpp"
        assert main(["fit", str(data), "--estimator", estimator, "--n-components", "2", "--model-out", str(bad),
                     "--nan-policy", "marginalize", "--columns", "f0,f1,f2", "--init-params", "k-means++",
                     *FAST]) == 2, estimator
        err = capsys.readouterr().err
        assert "--init-params k-means++ starts each component at a row without NaN" in err, err
        assert "use --init-params kmeans" in err and "init_params" not in err, err
        assert "column(s) 'f0', 'f1', 'f2' of X are missing most often (in 20, 20 and 20 of 60 rows)" in err, err
        assert not bad.exists(), estimator


def test_fewer_rows_without_nan_than_components_are_warned_of_and_a_start_given_needs_none(tmp_path, capsys):
    """Wide rows with scattered missing values leave few rows without one, and the start is drawn from
    those: with 1 such row of 300 the fit went on silently from one point (components that could not be told
    apart). Fewer such rows than components is a warning that says what to do, for fit and select. Not an
    error: a start given (means_init) needs only one complete row (it separates these clusters exactly), and a
    variational mixture's n_components is an upper bound (a refusal of both was found by review). The default
    start ('kmeans') draws every row with an observed value and separates them: no warning (it said the start
    might not tell the components apart, which was no longer so); the starts that draw complete rows warn."""
    from sklearn.metrics import adjusted_rand_score

    import daskgmm
    from daskgmm.cli import main
    from daskgmm.validation.scan import DegenerateDataWarning

    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 3)) + np.repeat([[0.0] * 3, [8.0] * 3, [16.0] * 3], 100, axis=0)
    x[np.arange(1, 300), np.arange(1, 300) % 3] = np.nan  # row 0 alone is complete
    data = tmp_path / "d.parquet"
    _write(data, x)
    said = "initialises from the rows without NaN, and only 1 of 300 row(s) (of positive weight) have every feature"
    for estimator in ("gaussian", "bayesian", "student"):
        out = tmp_path / f"model-{estimator}"
        capsys.readouterr()
        # the variational mixture's default prior was the covariance of those rows, and one is no covariance (exit
        # 2): with at most D such rows it is the diagonal of each column's variance over its observed values
        assert main(["fit", str(data), "--estimator", estimator, "--n-components", "3", "--model-out", str(out),
                     "--nan-policy", "marginalize", "--columns", "f0,f1,f2", "--init-params", "k-means++",
                     *FAST]) == 0, estimator
        err = capsys.readouterr().err
        assert said in err and "fewer than n_components=3" in err, (estimator, err)
        # a start to give by its flag, and only where the estimator takes one (the t mixture was told to)
        assert ("give it one (--means-init)" in err) == (estimator == "gaussian"), (estimator, err)
        assert "means_init" not in err
    assert main(["select", str(data), "--k-min", "1", "--k-max", "3", "--out", str(tmp_path / "sel"),
                 "--nan-policy", "marginalize", "--columns", "f0,f1,f2", "--init-params", "k-means++", *FAST]) == 0
    err = capsys.readouterr().err
    assert "fewer than k=3" in err and "means_init" not in err and "--means-init" not in err
    assert "or start with --init-params kmeans, which draws every row" in err, err  # the flag, not the Python name
    # a start that draws a complete row per component, with one such row: exit 2 (it fitted one component)
    assert main(["fit", str(data), "--n-components", "3", "--model-out", str(tmp_path / "m-rfd"), "--nan-policy",
                 "marginalize", "--columns", "f0,f1,f2", "--init-params", "random_from_data", *FAST]) == 2
    err = capsys.readouterr().err
    assert "Expected n_samples >= n_components but got n_components = 3, n_samples = 1" in err, err
    assert "--init-params random_from_data starts each component" in err and "use --init-params kmeans" in err, err
    with pytest.warns(DegenerateDataWarning, match="fewer than n_components=2"):
        daskgmm.GaussianMixture(2, missing="marginalize", init_params="k-means++").fit(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateDataWarning)
        for model in (daskgmm.GaussianMixture(3, missing="marginalize", random_state=0),
                      daskgmm.StudentTMixture(n_components=3, missing="marginalize", random_state=0)):
            assert adjusted_rand_score(np.repeat([0, 1, 2], 100), model.fit(x).predict(x)) == 1.0
    means = np.array([[0.0] * 3, [8.0] * 3, [16.0] * 3])
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateDataWarning)
        daskgmm.GaussianMixture(1, missing="marginalize").fit(x)  # one row is a start for one component
        g = daskgmm.GaussianMixture(3, missing="marginalize", means_init=means, random_state=0).fit(x)
    assert adjusted_rand_score(np.repeat([0, 1, 2], 100), g.predict(x)) == 1.0


def test_infinity_under_marginalize_is_named_apart_from_the_missing_values(tmp_path, capsys):
    """NaN is allowed under --nan-policy marginalize: the error about an infinity counts infinities, not NaN."""
    from daskgmm.cli import main

    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 3))
    x[rng.random(x.shape) < 0.1] = np.nan
    x[np.isnan(x).all(axis=1), 0] = 0.0
    x[7, 1] = np.inf
    data = tmp_path / "d.parquet"
    _write(data, x)
    out = tmp_path / "model"
    assert main(["fit", str(data), "--estimator", "bayesian", "--n-components", "2", "--model-out", str(out),
                 "--nan-policy", "marginalize", "--columns", "f0,f1,f2", *FAST]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert "1 of 300 row(s) have infinite values (column 'f1': 1)" in last, err
    assert not out.exists()


def test_info_says_a_model_marginalises(tmp_path, capsys):
    """A model fitted with missing="marginalize" says so, and how to predict with it: update only for the
    GaussianMixture, the one model update takes (user-trial-r16: a StudentTMixture's said 'and update too')."""
    from daskgmm import GaussianMixture, StudentTMixture
    from daskgmm.cli import main

    x = np.random.default_rng(3).normal(size=(80, 2))
    for cls, commands in ((StudentTMixture, "predict and score"), (GaussianMixture, "predict, score and update")):
        for missing in ("marginalize", "raise"):
            path = str(tmp_path / f"{cls.__name__}-{missing}")
            cls(n_components=1, random_state=0, missing=missing).fit(x).save(path)
            capsys.readouterr()
            assert main(["info", "--model", path]) == 0
            out = capsys.readouterr().out
            said = f"missing values:   marginalised (by {commands} too, unless --nan-policy says otherwise)" in out
            assert said == (missing == "marginalize"), (cls, missing, out)


def test_predict_and_score_take_the_models_nan_policy_by_default(tmp_path, capsys):
    """A model fitted with missing values marginalised predicts rows with NaN as the estimator does in Python;
    one fitted without refuses them (exit 2) unless --nan-policy says otherwise."""
    import pandas as pd

    from daskgmm import GaussianMixture
    from daskgmm.cli import main

    rng = np.random.default_rng(2)
    x = np.vstack([rng.normal(0, 1, (150, 3)), rng.normal(6, 1, (150, 3))])
    holed = x.copy()
    holed[rng.random(x.shape) < 0.1] = np.nan
    holed[np.isnan(holed).all(axis=1), 0] = 0.0
    data = tmp_path / "d.parquet"
    _write(data, holed)
    marg = GaussianMixture(2, random_state=0, missing="marginalize").fit(holed)
    marg.save(str(tmp_path / "marg"))
    GaussianMixture(2, random_state=0).fit(x).save(str(tmp_path / "plain"))
    assert main(["predict", str(data), "--model", str(tmp_path / "marg"), "--out", str(tmp_path / "p"),
                 "--columns", "f0,f1,f2", "--id-column", "id", *FAST]) == 0
    got = pd.read_parquet(tmp_path / "p").sort_values("id")
    np.testing.assert_array_equal(got["label"].to_numpy(), marg.predict(holed))
    capsys.readouterr()
    assert main(["score", str(data), "--model", str(tmp_path / "plain"), "--columns", "f0,f1,f2", *FAST]) == 2
    assert "--nan-policy" in capsys.readouterr().err
    assert main(["score", str(data), "--model", str(tmp_path / "plain"), "--columns", "f0,f1,f2",
                 "--nan-policy", "marginalize", *FAST]) == 0


def test_a_feature_missing_in_every_row_is_named(tmp_path, capsys):
    """Under --nan-policy marginalize a feature column that is missing in every row has no value to start from:
    exit 2 naming that column, for fit and select (user-trial-r16: 'every row has a missing value', no column
    named)."""
    import json

    from daskgmm.cli import main

    x = np.random.default_rng(0).normal(size=(200, 3))
    x[:, 1] = np.nan
    data = tmp_path / "d.parquet"
    _write(data, x)
    common = ["--nan-policy", "marginalize", "--columns", "f0,f1,f2", *FAST]
    runs = {"fit": ["--n-components", "2", "--model-out", str(tmp_path / "m")],
            "select": ["--k-max", "2", "--out", str(tmp_path / "s")]}
    for command, args in runs.items():
        capsys.readouterr()
        metrics = tmp_path / f"{command}.json"
        assert main([command, str(data), *args, *common, "--metrics-out", str(metrics)]) == 2, command
        err = capsys.readouterr().err
        assert "column(s) 'f1' of X are missing in every row: drop them" in err, err
        assert json.loads(metrics.read_text())["exit_code"] == 2
    assert not (tmp_path / "m").exists() and not (tmp_path / "s").exists()
