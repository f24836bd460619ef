"""``daskgmm fit --estimator bayesian`` with the array priors: --mean-prior and --covariance-prior."""

import json

import numpy as np
import pytest
import yaml

from daskgmm.cli import main
from daskgmm.cli.config import OPTIONS, ConfigError, coerce, load_config

from .conftest import FAST, expect_exit2, write_data

COLS = ["--columns", "f0,f1,f2"]


def _opt(dest):
    return next(o for o in OPTIONS if o.dest == dest)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    directory = tmp_path_factory.mktemp("priors") / "data"
    return directory, write_data(directory)


def test_priors_from_a_config_equal_the_fitted_ones_and_the_python_fit(data, tmp_path):
    from daskgmm import BayesianGaussianMixture, load

    directory, X = data
    mean = [0.5, -1.0, 2.0]
    cov = [[2.0, 0.5, 0.0], [0.5, 3.0, 0.0], [0.0, 0.0, 1.5]]
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump({"estimator": "bayesian", "n_components": 3, "seed": 0,
                                      "columns": ["f0", "f1", "f2"], "mean_prior": mean, "covariance_prior": cov}))
    model = tmp_path / "model"
    assert main(["fit", str(directory), "--config", str(config), "--model-out", str(model), *FAST]) == 0
    est = load(model)
    np.testing.assert_array_equal(est.mean_prior_, mean)
    np.testing.assert_array_equal(est.covariance_prior_, cov)
    ref = BayesianGaussianMixture(n_components=3, mean_prior=mean, covariance_prior=cov, random_state=0).fit(X)
    np.testing.assert_allclose(est.means_, ref.means_, rtol=1e-8)
    np.testing.assert_allclose(est.weights_, ref.weights_, atol=1e-10)


def test_priors_on_the_command_line_override_the_config(data, tmp_path):
    from daskgmm import load

    directory, _ = data
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump({"estimator": "bayesian", "n_components": 2, "mean_prior": [9.0, 9.0, 9.0],
                                      "covariance_prior": 4.0, "covariance_type": "spherical"}))
    model = tmp_path / "model"
    # a negative first number needs the --opt=value form (argparse would read it as an option)
    assert main(["fit", str(directory), *COLS, "--config", str(config), "--mean-prior=-1,0,2.5",
                 "--covariance-prior", "0.25", "--model-out", str(model), *FAST]) == 0
    est = load(model)
    np.testing.assert_array_equal(est.mean_prior_, [-1.0, 0.0, 2.5])
    assert est.covariance_prior_ == 0.25

    # diag from a .json file, the mean from a .npy file, a full matrix flat on the command line
    np.save(tmp_path / "mean.npy", np.array([1.0, 2.0, 3.0]))
    (tmp_path / "cov.json").write_text(json.dumps([1.0, 2.0, 0.5]))
    assert main(["fit", str(directory), *COLS, "--config", str(config), "--mean-prior", str(tmp_path / "mean.npy"),
                 "--covariance-type", "diag", "--covariance-prior", str(tmp_path / "cov.json"), "--model-out",
                 str(model), *FAST]) == 0
    est = load(model)
    np.testing.assert_array_equal(est.mean_prior_, [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(est.covariance_prior_, [1.0, 2.0, 0.5])
    assert main(["fit", str(directory), *COLS, "--config", str(config), "--covariance-type", "tied",
                 "--covariance-prior", "2,0,0,0,2,0,0,0,2", "--model-out", str(model), *FAST]) == 0
    np.testing.assert_array_equal(load(model).covariance_prior_, 2 * np.eye(3))


@pytest.mark.parametrize("value, expected", [
    ("1.5", 1.5),
    ("1,2,3", [1.0, 2.0, 3.0]),
    (" 1, 2 ;3 ,4 ", [[1.0, 2.0], [3.0, 4.0]]),
    (2, 2.0),
    ([1, "1e-3"], [1.0, 1e-3]),  # YAML reads 1e-3 as a string
    ([[1, 0], [0, 1]], np.eye(2)),
])
def test_array_values(value, expected):
    got = coerce(_opt("covariance_prior"), value, "--covariance-prior")
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("value, match", [
    ("1,,2", "an empty value"),
    ("a,b", "not numbers, nor a .npy, .json or .csv file"),
    ("nan,1", "not every value is finite"),
    ([[1, 2], [3]], "the rows of a matrix must be lists of the same length"),
    ([[1, 2], 3], "the rows of a matrix"),
    ([[[1]]], "3 dimensions; at most 2 (a matrix)"),
    ([True, 1], "True is not a number"),
    ([], "no numbers"),
    ({"a": 1}, "is not a number"),
    ("nowhere.npy", "cannot read nowhere.npy"),
    ("nowhere.json", "cannot read nowhere.json"),
])
def test_bad_array_values_name_the_option(value, match):
    with pytest.raises(ConfigError, match=r"^--mean-prior: mean_prior: ") as info:
        coerce(_opt("mean_prior"), value, "--mean-prior")
    assert match in str(info.value)


def test_bad_prior_files(tmp_path):
    (tmp_path / "bad.json").write_text("[1, 2")
    (tmp_path / "text.json").write_text('["a"]')
    (tmp_path / "bad.npy").write_bytes(b"not a numpy file")
    np.save(tmp_path / "cube.npy", np.zeros((2, 2, 2)))
    np.save(tmp_path / "words.npy", np.array(["a", "b"]))
    for name, match in [("bad.json", "not valid JSON"), ("text.json", "'a' is not a number"),
                        ("bad.npy", "not a readable .npy array"), ("cube.npy", "of shape (2, 2, 2)"),
                        ("words.npy", "expected a 0-, 1- or 2-d array of numbers")]:
        with pytest.raises(ConfigError, match="mean_prior") as info:
            coerce(_opt("mean_prior"), str(tmp_path / name), "--mean-prior")
        assert match in str(info.value) and name in str(info.value)


def test_bad_prior_in_a_config_names_the_file_and_exits_2(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump({"estimator": "bayesian", "mean_prior": [[1, 2], [3]]}))
    with pytest.raises(ConfigError, match=r"bad\.yaml: mean_prior: the rows of a matrix"):
        load_config(str(cfg), "fit")
    expect_exit2(["fit", "x.parquet", "--model-out", str(tmp_path / "m"), "--config", str(cfg)],
                  f"{cfg}: mean_prior: the rows of a matrix", capsys)
    expect_exit2(["fit", "x.parquet", "--model-out", str(tmp_path / "m"), "--mean-prior",
                   str(tmp_path / "none.npy")], "--mean-prior: mean_prior: cannot read", capsys)
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("args, match", [
    (["--mean-prior", "1,2"], "--mean-prior has 2 number(s) but the data has 3 feature column(s) (f0, f1, f2)"),
    (["--mean-prior", "1,0;0,1"], "--mean-prior has a 2 x 2 matrix but the data has 3"),
    # not "has 3 number(s) but the data has 3 feature column(s)", as if 3 were wrong for 3 columns
    (["--covariance-prior", "1,2,3"], "--covariance-prior 1,2,3 has 3 number(s), but --covariance-type full takes a "
     "3 x 3 matrix (9 numbers, row by row) for the data's 3 feature column(s) (f0, f1, f2)"),
    (["--covariance-type", "diag", "--covariance-prior", "2"], "--covariance-type diag takes one number per column"),
    (["--covariance-type", "spherical", "--covariance-prior", "1,2,3"],
     "has 3 number(s) but --covariance-type spherical takes a single number"),
    # not positive-definite: the estimator's own words, after the option's name and value, before any pass
    (["--covariance-prior", "1,2,0;2,1,0;0,0,1"],
     "--covariance-prior 1,2,0;2,1,0;0,0,1: 'full precision' should be symmetric, positive-definite; "
     "--covariance-type full takes a symmetric positive-definite 3 x 3 matrix"),
    (["--covariance-type", "diag", "--covariance-prior", "1,-1,1"],
     "--covariance-prior 1,-1,1: 'diag precision' should be positive"),
    # scikit-learn's constraint sentence without the option's name before
    (["--covariance-type", "spherical", "--covariance-prior=-1"],
     "daskgmm fit: --covariance-prior -1: 'spherical precision' should be positive; --covariance-type spherical "
     "takes a single positive number"),
])
def test_priors_that_do_not_fit_the_data_exit_2(data, tmp_path, capsys, args, match):
    directory, _ = data
    model = tmp_path / "model"
    expect_exit2(["fit", str(directory), *COLS, "--estimator", "bayesian", "--n-components", "2", *args,
                   "--model-out", str(model), *FAST], match, capsys)
    assert not model.exists()


def test_the_priors_are_part_of_the_checkpoint_fingerprint(data, tmp_path):
    from daskgmm.cli import build_parser, resolve
    from daskgmm.cli.fit import bayesian_priors, fingerprint
    from daskgmm.cli.runtime import open_data
    from daskgmm.io.modelfiles import Checkpoint

    directory, _ = data

    def job(*args):
        o = resolve(build_parser().parse_args(["fit", str(directory), *COLS, "--estimator", "bayesian",
                                               "--model-out", str(tmp_path / "m"), *args]))
        src = open_data(o, lambda msg: None)
        o.mean_prior, o.covariance_prior = bayesian_priors(o, src.columns)
        return fingerprint(o, src)

    first = job("--mean-prior", "1,2,3", "--covariance-prior", "1,0,0;0,1,0;0,0,1")
    Checkpoint(tmp_path / "ck", first).save([])
    assert Checkpoint(tmp_path / "ck", job("--mean-prior", "1,2,3", "--covariance-prior", "1,0,0,0,1,0,0,0,1")
                      ).stale() is None  # the same matrix, flat
    stale = Checkpoint(tmp_path / "ck", job("--mean-prior", "1,2,4", "--covariance-prior", "2,0,0;0,1,0;0,0,1")
                       ).stale()
    assert "differs in: covariance_prior, mean_prior" in stale


def test_fit_help_names_the_array_priors(capsys):
    assert main(["fit", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--mean-prior M,M,..|FILE" in out and "--covariance-prior C,C,..|FILE" in out


def test_select_with_bayesian_candidates_and_their_priors(data, tmp_path, capsys):
    from daskgmm import select_model

    directory, X = data
    out = tmp_path / "sel"
    rc = main(["select", str(directory), *COLS, "--k-min", "2", "--k-max", "3", "--covariance-types", "full",
               "--kinds", "gaussian,bayesian", "--mean-precision-prior", "0.5", "--mean-prior", "0,0,0",
               "--seed", "0", "--out", str(out), *FAST])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((out / "selection.json").read_text())
    rows = summary["candidates"]
    assert [(r["kind"], r["n_components"]) for r in rows] == [("gaussian", 2), ("gaussian", 3),
                                                              ("bayesian", 2), ("bayesian", 3)]
    ref = select_model(X, [2, 3], ("full",), kinds=("gaussian", "bayesian"), random_state=0,
                       bayesian_params={"mean_precision_prior": 0.5, "mean_prior": np.zeros(3)})
    np.testing.assert_allclose([r["bic"] for r in rows], ref.table["bic"], rtol=1e-9)
    top = ref.table.sort_values(["bic", "n_parameters"], kind="stable").iloc[0]
    assert summary["best"] == {"n_components": int(top.n_components), "covariance_type": "full", "kind": top.kind}


@pytest.mark.parametrize("args, match", [
    (["--kinds", "gaussian,poisson"], "unknown candidate kind(s) poisson"),
    (["--kinds", "bayesian", "--mean-prior", "1,2"], "--mean-prior has 2 number(s) but the data has 3"),
    # --covariance-prior was argparse's "unrecognized arguments" (user-trial-r15): select takes it with one type
    (["--kinds", "bayesian", "--covariance-types", "full", "--covariance-prior", "1,0;0,1"],
     "daskgmm select: --covariance-prior 1,0;0,1 has a 2 x 2 matrix, but --covariance-type full takes a 3 x 3 "
     "matrix (9 numbers, row by row) for the data's 3 feature column(s) (f0, f1, f2)"),
    (["--kinds", "bayesian", "--covariance-types", "full", "--covariance-prior", "1,0,0;0,1,0;0,0,-1"],
     "daskgmm select: --covariance-prior 1,0,0;0,1,0;0,0,-1: 'full precision' should be symmetric, "
     "positive-definite; --covariance-type full takes a symmetric positive-definite 3 x 3 matrix"),
    (["--kinds", "bayesian", "--covariance-types", "diag", "--covariance-prior", "1,2"],
     "daskgmm select: --covariance-prior 1,2 has 2 number(s) but the data has 3 feature column(s) (f0, f1, f2); "
     "--covariance-type diag takes one number per column"),
    (["--kinds", "bayesian", "--covariance-types", "spherical", "--covariance-prior=-1"],
     "daskgmm select: --covariance-prior -1: 'spherical precision' should be positive"),
    (["--kinds", "bayesian", "--covariance-types", "full", "--covariance-prior", "abc"],
     "--covariance-prior: covariance_prior: 'abc' is not numbers, nor a .npy, .json or .csv file"),
    (["--kinds", "bayesian", "--covariance-prior", "1,0,0;0,1,0;0,0,1"],
     "daskgmm select: --covariance-prior has the shape of one covariance type (a D x D matrix for full and tied, "
     "one number per column for diag, one number for spherical), and --covariance-types full,diag tries 2"),
    (["--kinds", "gaussian", "--covariance-types", "diag", "--covariance-prior", "1,2,3"],
     "daskgmm select: --covariance-prior: prior(s) of the variational mixture, which need --kinds with bayesian"),
])
def test_bad_select_kinds_and_priors_exit_2(data, tmp_path, capsys, args, match):
    directory, _ = data
    expect_exit2(["select", str(directory), *COLS, "--k-max", "2", "--out", str(tmp_path / "s"), *args, *FAST],
                  match, capsys)


@pytest.mark.parametrize("args, match", [
    (["--mean-prior", "1,2,3"], "--mean-prior: prior(s) of the variational mixture, which need --estimator bayesian"),
    (["--estimator", "bayesian", "--assignment", "hard"], "--assignment hard is an option of --estimator gaussian"),
    (["--estimator", "bayesian", "--mean-precision-prior=-1"],
     "The 'mean_precision_prior' parameter of BayesianGaussianMixture must be None or a float in the range (0.0, inf)"),
    (["--estimator", "bayesian", "--degrees-of-freedom-prior", "1.5"],
     "--degrees-of-freedom-prior must be greater than 2 (the number of feature columns minus one)"),
    (["--estimator", "bayesian", "--covariance-type", "full", "--covariance-prior", "1,0,0;0,1;0,0,1"],
     "rows of unequal lengths (3, 2, 3 values)"),
])
def test_options_of_the_other_estimator_and_bad_priors_exit_2(data, tmp_path, capsys, args, match):
    directory, _ = data
    expect_exit2(["fit", str(directory), *COLS, "--model-out", str(tmp_path / "m"), *args, *FAST], match, capsys)
    assert not (tmp_path / "m").exists()


def test_select_takes_a_covariance_prior_with_one_covariance_type(data, tmp_path, capsys):
    """``select --kinds bayesian --covariance-types diag --covariance-prior ...`` is select_model's
    ``bayesian_params={"covariance_prior": ...}`` (it was refused as an unknown argument)."""
    from daskgmm import select_model

    directory, X = data
    out = tmp_path / "sel"
    rc = main(["select", str(directory), *COLS, "--k-min", "2", "--k-max", "2", "--covariance-types", "diag",
               "--kinds", "bayesian", "--covariance-prior", "1,2,0.5", "--seed", "0", "--out", str(out), *FAST])
    assert rc == 0, capsys.readouterr().err
    rows = json.loads((out / "selection.json").read_text())["candidates"]
    ref = select_model(X, [2], ("diag",), kinds=("bayesian",), random_state=0,
                       bayesian_params={"covariance_prior": np.array([1.0, 2.0, 0.5])})
    np.testing.assert_allclose([r["bic"] for r in rows], ref.table["bic"], rtol=1e-9)


def test_select_priors_need_the_bayesian_kind(data, tmp_path, capsys):
    directory, _ = data
    expect_exit2(["select", str(directory), *COLS, "--out", str(tmp_path / "s"), "--mean-precision-prior", "2",
                   *FAST], "--mean-precision-prior: prior(s) of the variational mixture, which need --kinds with "
                  "bayesian", capsys)
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump({"kinds": ["bayesian"], "mean_prior": [[1.0, 2.0, 3.0]]}))
    expect_exit2(["select", str(directory), *COLS, "--out", str(tmp_path / "s"), "--config", str(config), *FAST],
                  "--mean-prior has a 1 x 3 matrix but the data has 3 feature column(s)", capsys)
