"""``daskgmm fit`` from given starting values and with held parameters: --weights-init, --means-init,
--precisions-init, --update-params (GaussianMixture's) and an array --init (KMeans' and KMedoids')."""

import json

import numpy as np
import pytest
import yaml

from daskgmm.cli import main
from daskgmm.cli.config import OPTIONS, ConfigError, coerce, flag

from .conftest import FAST, UNPICKLED, Pickled, expect_exit2, write_data

COLS = ["--columns", "f0,f1,f2"]


def _opt(dest):
    return next(o for o in OPTIONS if o.dest == dest and "fit" in o.commands)


def _resolve(*argv):
    from daskgmm.cli.args import build_parser, resolve

    return resolve(build_parser().parse_args(["fit", "data", "--model-out", "m", *argv]))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    directory = tmp_path_factory.mktemp("init") / "data"
    return directory, write_data(directory)


def _centres(X, k=3):
    """Rough centres of the blobs: the means of the rows nearest to k rows spread over X."""
    return np.array([X[i] for i in np.linspace(0, len(X) - 1, k).astype(int)]) + 0.25


# ---------------------------------------------------------------- what each estimator takes


def test_the_options_mirror_the_python_parameters():
    """Each init option goes to exactly the estimators whose Python constructor has the parameter; the
    --init names are KMeans' and KMedoids' named starts."""
    from daskgmm import BayesianGaussianMixture, GaussianMixture, KMeans, KMedoids, StudentTMixture
    from daskgmm.cli.args import ESTIMATOR_CLASSES, INIT_OPTIONS
    from daskgmm.fitting.kmedoids import INITS as KMEDOIDS_INITS
    from daskgmm.kmeans import INITS as KMEANS_INITS

    classes = {"gaussian": GaussianMixture, "bayesian": BayesianGaussianMixture, "student": StudentTMixture,
               "kmeans": KMeans, "kmedoids": KMedoids}
    assert {k: v.__name__ for k, v in classes.items()} == ESTIMATOR_CLASSES
    for name, takers in INIT_OPTIONS.items():
        assert set(takers) == {e for e, cls in classes.items() if name in cls().get_params()}, name
    assert set(_opt("init").choices) == set(KMEANS_INITS) | set(KMEDOIDS_INITS)


@pytest.mark.parametrize("args, match", [
    (["--estimator", "bayesian", "--means-init", "0,0,0"],
     "--means-init is an option of --estimator gaussian (GaussianMixture's means_init); "
     "--estimator bayesian (BayesianGaussianMixture) has no means_init"),
    (["--estimator", "student", "--weights-init", "1"], "--weights-init is an option of --estimator gaussian"),
    (["--estimator", "student", "--precisions-init", "1"], "StudentTMixture) has no precisions_init"),
    (["--estimator", "bayesian", "--update-params", "wc"], "--update-params is an option of --estimator gaussian"),
    (["--estimator", "kmeans", "--means-init", "0,0,0"], "KMeans) has no means_init"),
    (["--estimator", "kmedoids", "--update-params", "m"], "KMedoids) has no update_params"),
    (["--init", "0,0,0;1,1,1"], "--init is an option of --estimator kmeans and --estimator kmedoids; "
     "--estimator gaussian (GaussianMixture) has no init"),
    (["--estimator", "bayesian", "--init", "0,0;1,1"], "BayesianGaussianMixture) has no init"),
    (["--estimator", "kmeans", "--init", "build"], "--init build is a start of --estimator kmedoids"),
    (["--estimator", "kmedoids", "--init", "k-means||"], "--init k-means|| is a start of --estimator kmeans"),
    (["--init", "random"], "--init is an option of --estimator kmeans and --estimator kmedoids"),
])
def test_options_of_other_estimators_exit_2_before_any_cluster(tmp_path, capsys, args, match):
    model = tmp_path / "m"
    expect_exit2(["fit", str(tmp_path / "nowhere"), "--model-out", str(model), *args, *FAST], match, capsys)
    assert not model.exists()


@pytest.mark.parametrize("value, expected", [("wc", "wc"), ("cw", "wc"), ("m", "m"), ("cmw", None), ("wmc", None)])
def test_update_params_are_checked_and_written_in_one_order(value, expected):
    """Any order of the letters is taken, written w, m, c; all three is the default (None: a checkpoint
    written before the option existed is still this job's)."""
    assert _resolve("--update-params", value).update_params == expected
    assert _resolve().update_params is None


@pytest.mark.parametrize("value", ["wx", "ww", "", "WC"])
def test_bad_update_params_exit_2_in_the_estimators_words(tmp_path, capsys, value):
    expect_exit2(["fit", "d", "--model-out", str(tmp_path / "m"), f"--update-params={value}", *FAST],
                 "--update-params: update_params must be a non-empty combination of 'w', 'm' and 'c'", capsys)


# ---------------------------------------------------------------- arrays: where they come from


def test_arrays_from_csv_npy_json_yaml_and_the_command_line(tmp_path):
    means = np.array([[0.0, 1.5, -2.0], [5.0, 5.0, 1e-3]])
    (tmp_path / "m.csv").write_text("# the centres, one row each\n0, 1.5, -2\n5,5,1e-3\n")
    np.save(tmp_path / "m.npy", means)
    (tmp_path / "m.json").write_text("[[0, 1.5, -2], [5, 5, 0.001]]")
    for given in (str(tmp_path / "m.csv"), str(tmp_path / "m.npy"), str(tmp_path / "m.json"),
                  [[0, 1.5, -2], [5, 5, "1e-3"]], "0,1.5,-2;5,5,1e-3"):
        np.testing.assert_array_equal(coerce(_opt("means_init"), given, "--means-init"), means)
    # --init: a named start, else an array in any of these forms
    assert coerce(_opt("init"), "build", "job.yaml") == "build"
    np.testing.assert_array_equal(coerce(_opt("init"), [[0, 1.5, -2], [5, 5, "1e-3"]], "job.yaml"), means)
    np.testing.assert_array_equal(coerce(_opt("init"), str(tmp_path / "m.csv"), "--init"), means)
    # one column or one row of a .csv is a vector
    (tmp_path / "w.csv").write_text("0.25\n0.75\n")
    assert coerce(_opt("weights_init"), str(tmp_path / "w.csv"), "--weights-init").shape == (2, 1)
    # full precisions: 3-d in YAML or .npy; a .csv (2-d) stacks the K matrices
    cube = [[[1, 0], [0, 1]], [[2, 0], [0, 2]]]
    assert coerce(_opt("precisions_init"), cube, "--precisions-init").shape == (2, 2, 2)
    np.save(tmp_path / "p.npy", np.array(cube, float))
    assert coerce(_opt("precisions_init"), str(tmp_path / "p.npy"), "--precisions-init").shape == (2, 2, 2)


@pytest.mark.parametrize("argv, attr, shape", [
    (["--weights-init", "0.25;0.75"], "weights_init", (2,)),          # a column
    (["--weights-init", "0.25,0.75"], "weights_init", (2,)),
    (["--covariance-type", "spherical", "--precisions-init", "1;2"], "precisions_init", (2,)),
    (["--precisions-init", "1,0;0,1;2,0;0,2"], "precisions_init", (2, 2, 2)),  # full: K matrices stacked
    (["--covariance-type", "tied", "--precisions-init", "1,0;0,1"], "precisions_init", (2, 2)),
    (["--covariance-type", "diag", "--precisions-init", "1,1;2,2;3,3"], "precisions_init", (3, 2)),
])
def test_arrays_take_the_estimators_shapes(argv, attr, shape):
    assert getattr(_resolve(*argv), attr).shape == shape


def test_an_array_that_starts_with_a_minus_sign_is_a_value():
    """'--means-init "-1;1"' (docs/cli.md's one-dimensional means) was argparse's "expected one argument" on
    Python 3.11, which takes only '-1' or '-0.5' for a negative number, where 3.13 takes any '-' and digit
    (user-trial-r14); the '=' form works on both."""
    np.testing.assert_array_equal(_resolve("--means-init", "-1;1").means_init, [[-1], [1]])
    np.testing.assert_array_equal(_resolve("--means-init", "-1,0;5,5").means_init, [[-1, 0], [5, 5]])
    np.testing.assert_array_equal(_resolve("--means-init", "-.5,1e-3").means_init, [[-0.5, 1e-3]])
    np.testing.assert_array_equal(_resolve("--means-init=-1;1").means_init, [[-1], [1]])


@pytest.mark.parametrize("value, match", [
    ("bad.csv", "not a .csv of numbers"),
    ("ragged.csv", "not a .csv of numbers"),
    ("empty.csv", "no numbers"),
    ("nowhere.csv", "cannot read"),
    ("nan.csv", "not every value is finite"),
])
def test_bad_csv_files_name_the_option(tmp_path, value, match):
    (tmp_path / "bad.csv").write_text("f0,f1\n1,2\n")
    (tmp_path / "ragged.csv").write_text("1,2\n3\n")
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "nan.csv").write_text("1,nan\n")
    with pytest.raises(ConfigError, match=r"^--means-init: means_init: ") as info:
        coerce(_opt("means_init"), str(tmp_path / value), "--means-init")
    assert match in str(info.value) and value in str(info.value)


def test_a_npy_file_of_pickled_objects_is_refused_never_unpickled(tmp_path):
    """Starting values are data: a .npy of objects is refused before its pickles run."""
    np.save(tmp_path / "m.npy", np.array([Pickled(), Pickled()], dtype=object), allow_pickle=True)
    UNPICKLED.clear()
    with pytest.raises(ConfigError, match=r"^--means-init: means_init: .*not a readable \.npy array of numbers"):
        coerce(_opt("means_init"), str(tmp_path / "m.npy"), "--means-init")
    assert UNPICKLED == []


def test_csv_and_json_files_with_a_byte_order_mark_are_read(tmp_path):
    """Excel's "CSV UTF-8" (and some editors' JSON) start with a byte order mark: the numbers are read, with
    Windows line ends."""
    (tmp_path / "m.csv").write_bytes(b"\xef\xbb\xbf0,1.5,-2\r\n5,5,1e-3\r\n")
    (tmp_path / "m.json").write_bytes(b"\xef\xbb\xbf[[0, 1.5, -2], [5, 5, 0.001]]")
    for name in ("m.csv", "m.json"):
        np.testing.assert_array_equal(coerce(_opt("means_init"), str(tmp_path / name), "--means-init"),
                                      [[0.0, 1.5, -2.0], [5.0, 5.0, 1e-3]])


def test_an_array_file_at_a_url_is_read_through_fsspec_and_named_by_its_url():
    """An array file may be at an fsspec URL, as DATA (memory:// here; s3:// with the job's storage options:
    tests/test_s3.py); a missing or empty object, or a URL of no array file's ending, is named, exit 2 as a local
    file's."""
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe({"/daskgmm-arrays/m.csv": b"0,1\n2,3\n", "/daskgmm-arrays/empty.npy": b""})
    try:
        np.testing.assert_array_equal(coerce(_opt("means_init"), "memory://daskgmm-arrays/m.csv", "--means-init"),
                                      [[0, 1], [2, 3]])
        for url, message in [("memory://daskgmm-arrays/gone.npy", "cannot read memory://daskgmm-arrays/gone.npy: "
                              "No such file or directory"),
                             ("memory://daskgmm-arrays/empty.npy", "memory://daskgmm-arrays/empty.npy: not a readable "
                              ".npy array of numbers (No data left in file)"),  # NumPy's EOFError, was exit 1
                             ("memory://daskgmm-arrays/m", "memory://daskgmm-arrays/m is not a .npy, .json or .csv "
                              "file (an array file is read as the ending of its name says)")]:
            with pytest.raises(ConfigError) as info:
                coerce(_opt("means_init"), url, "--means-init")
            assert str(info.value) == f"--means-init: means_init: {message}"
    finally:
        fs.rm("/daskgmm-arrays", recursive=True)


def test_an_array_string_is_told_a_file_by_its_ending_and_errors_name_it(tmp_path, monkeypatch):
    """A string is an array file by its name's ending (.npy, .json, .csv; a file:// URL or ~ as DATA's), else
    numbers; a file or directory of another name is said to be one (it was "not numbers"), and what is wrong
    with numbers names them."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "m.csv").write_text("0,1\n2,3\n")
    (tmp_path / "m.txt").write_text("0,1\n2,3\n")
    (tmp_path / "d").mkdir()
    for given in (f"file://{tmp_path}/m.csv", "~/m.csv", " m.csv "):
        np.testing.assert_array_equal(coerce(_opt("means_init"), given, "--means-init"), [[0, 1], [2, 3]])
    for name in ("means_init", "init"):  # --init: a file is an array's, not a misspelt start
        option = flag(name)
        by_name = " (an array file is read as the ending of its name says)"
        for given, message in [("m.txt", "m.txt is a file, not a .npy, .json or .csv file" + by_name),
                               ("d", "d is a directory, not a .npy, .json or .csv file" + by_name),
                               ("nowhere.csv", "cannot read nowhere.csv: No such file or directory"),
                               ("1,,2", "'1,,2': an empty value between ',' or ';'"),
                               ("1,2;3", "'1,2;3': rows of unequal lengths (2, 1 values)"),
                               ("1,inf", "'1,inf': not every value is finite")]:
            with pytest.raises(ConfigError) as info:
                coerce(_opt(name), given, option)
            assert str(info.value) == f"{option}: {name}: {message}"
    with pytest.raises(ConfigError) as info:
        coerce(_opt("means_init"), "centres", "--means-init")
    assert str(info.value) == "--means-init: means_init: 'centres' is not numbers, nor a .npy, .json or .csv file"
    with pytest.raises(ConfigError) as info:  # a word: a start misspelt, or an array
        coerce(_opt("init"), "kmeans++", "job.yaml")
    assert str(info.value) == ("job.yaml: init: 'kmeans++' is none of k-means||, k-means++, random, k-medoids++, "
                               "heuristic, build, nor an array (numbers, rows separated by ';', or a .npy, .json or "
                               ".csv file)")


def test_a_four_dimensional_array_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="precisions_init: 4 dimensions; at most 3"):
        coerce(_opt("precisions_init"), [[[[1.0]]]], "--precisions-init")
    with pytest.raises(ConfigError, match="means_init: 3 dimensions; at most 2"):
        coerce(_opt("means_init"), [[[1.0]]], "--means-init")


# ---------------------------------------------------------------- K from the starting values


@pytest.mark.parametrize("argv, k", [
    (["--means-init", "0,0;5,5"], 2),
    (["--weights-init", "0.2,0.3,0.5"], 3),
    (["--precisions-init", "1,0;0,1;2,0;0,2"], 2),
    (["--covariance-type", "spherical", "--precisions-init", "1,2,3,4"], 4),
    (["--covariance-type", "tied", "--precisions-init", "1,0;0,1"], 1),  # no K in a tied matrix
    (["--estimator", "kmeans", "--init", "0,0;5,5;9,9"], 3),
    (["--estimator", "kmedoids", "--init", "0,0;5,5"], 2),
    (["--estimator", "kmeans"], 8),
    (["--means-init", "0,0;5,5", "--n-components", "2"], 2),
])
def test_n_components_defaults_to_the_k_of_the_starting_values(argv, k):
    assert _resolve(*argv).n_components == k


@pytest.mark.parametrize("argv, attr", [
    (["--means-init", "0,0.5,-1", "--update-params", "c"], "means_init"),  # a covariance about a known mean
    (["--estimator", "kmeans", "--init", "0,0.5,-1"], "init"),
    (["--estimator", "kmedoids", "--init", "0,0.5,-1"], "init"),
    (["--covariance-type", "diag", "--precisions-init", "1,2,3"], "precisions_init"),
])
def test_one_row_without_a_semicolon_is_one_component(argv, attr):
    """Rows are separated by ';' (docs/cli.md), so one row of D numbers is K = 1: it takes the estimator's
    shape (1, D) and passes its check; as a vector it was refused, with no way to write it on the command
    line ("0,0.5,-1;" is an empty value), and kmeans' message blamed its default K of 8."""
    from daskgmm.cli.fit import initial_arrays

    o = _resolve(*argv)
    assert o.n_components == 1 and getattr(o, attr).shape == (1, 3)
    initial_arrays(o, ["f0", "f1", "f2"])
    assert getattr(o, attr).shape == (1, 3)


@pytest.mark.parametrize("args, match", [
    (["--means-init", "0,0;5,5", "--n-components", "3"],
     "--means-init holds 2 component(s) (shape (2, 2)) but --n-components is 3"),
    (["--means-init", "0,0;5,5", "--weights-init", "0.2,0.3,0.5"],
     "--weights-init holds 3 component(s) (shape (3,)) but --means-init holds 2"),
    (["--estimator", "kmeans", "--init", "0,0;5,5", "--n-components", "8"],
     "--init holds 2 component(s) (shape (2, 2)) but --n-components is 8"),
    (["--estimator", "kmeans", "--init", "0,0;5,5", "--n-init", "3"],
     "--n-init 3: an --init array is the one start of --estimator kmeans"),
])
def test_k_that_disagrees_exits_2_before_any_cluster(tmp_path, capsys, args, match):
    expect_exit2(["fit", str(tmp_path / "nowhere"), "--model-out", str(tmp_path / "m"), *args, *FAST], match,
                 capsys)


# ---------------------------------------------------------------- against the data's columns


@pytest.mark.parametrize("argv, match", [
    (["--means-init", "0,0;5,5"], "--means-init: The parameter 'means' should have the shape of (2, 3), but got "
     "(2, 2); expected (2, 3): 2 component(s) x 3 feature column(s) (f0, f1, f2)"),
    # in the right shape, the values alone are wrong: no shape to expect (user-trial-r14)
    (["--weights-init", "0.5,0.6"], "--weights-init: The parameter 'weights' should be normalized, but got "
     "sum(weights) = 1.10000$"),
    (["--covariance-type", "diag", "--precisions-init", "1,1,-1;1,1,1"],
     "--precisions-init: 'diag precision' should be positive$"),
    (["--n-components", "2", "--precisions-init", "1,0;0,1;1,0;0,1"],
     "--precisions-init: The parameter 'full precision' should have the shape of (2, 3, 3), but got (2, 2, 2); "
     "expected (2, 3, 3): 2 component(s) x 3 feature column(s) (f0, f1, f2) and --covariance-type full "
     "(in a .csv or a list of rows: the 2 matrices stacked, 6 rows of 3)"),
    (["--estimator", "kmeans", "--init", "0,0;5,5"], "--init: The shape of the initial centers (2, 2) does not "
     "match the number of features of the data 3."),
    (["--estimator", "kmedoids", "--init", "0,0;5,5"], "--init: The shape of the initial medoids (2, 2) does not "
     "match"),
])
def test_arrays_that_do_not_fit_the_data_exit_2_in_the_estimators_words(data, tmp_path, argv, match):
    """The estimators' own checks, run against the columns once DATA's schema is read (before any pass),
    with the option's name and the shape expected."""
    from daskgmm.cli.args import UsageError
    from daskgmm.cli.fit import initial_arrays

    o = _resolve(*argv)
    with pytest.raises(UsageError) as info:
        initial_arrays(o, ["f0", "f1", "f2"])
    msg = str(info.value) + "$"
    assert match in msg, msg


def test_an_array_that_does_not_fit_exits_2_with_nothing_written(data, tmp_path, capsys):
    directory, _ = data
    model = tmp_path / "m"
    expect_exit2(["fit", str(directory), *COLS, "--means-init", "0,0;5,5", "--model-out", str(model), *FAST],
                 "--means-init: The parameter 'means' should have the shape of (2, 3)", capsys)
    assert not model.exists()


# ---------------------------------------------------------------- the fits: what Python fits


def test_gaussian_from_a_config_with_means_held_equals_the_python_fit(data, tmp_path, capsys):
    """means_init from a .csv named in a config, weights_init as a YAML list, --update-params wc: the model
    is GaussianMixture(means_init=, weights_init=, update_params="wc") fitted in Python, its means the given
    ones exactly, and K taken from them."""
    from daskgmm import GaussianMixture, load

    directory, X = data
    means = _centres(X)
    np.savetxt(tmp_path / "centres.csv", means, delimiter=",")
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump({"columns": ["f0", "f1", "f2"], "seed": 0, "means_init": "PLACE",
                                      "weights_init": [0.25, 0.25, 0.5], "update_params": "wc"}).replace(
        "PLACE", str(tmp_path / "centres.csv")))
    model = tmp_path / "model"
    assert main(["fit", str(directory), "--config", str(config), "--model-out", str(model), *FAST]) == 0, \
        capsys.readouterr().err
    est = load(model)
    assert est.n_components == 3 and est.update_params == "wc"
    np.testing.assert_array_equal(est.means_, np.loadtxt(tmp_path / "centres.csv", delimiter=","))
    ref = GaussianMixture(3, means_init=means, weights_init=[0.25, 0.25, 0.5], update_params="wc",
                          random_state=0).fit(X)
    np.testing.assert_allclose(est.weights_, ref.weights_, atol=1e-10)
    np.testing.assert_allclose(est.covariances_, ref.covariances_, rtol=1e-8, atol=1e-12)


def test_kmeans_and_kmedoids_from_given_centres_equal_the_python_fits(data, tmp_path, capsys):
    from daskgmm import KMeans, KMedoids, load

    directory, X = data
    centres = _centres(X)
    np.save(tmp_path / "centres.npy", centres)
    model = tmp_path / "km"
    rc = main(["fit", str(directory), *COLS, "--estimator", "kmeans", "--init", str(tmp_path / "centres.npy"),
               "--model-out", str(model), *FAST])
    assert rc == 0, capsys.readouterr().err
    est = load(model)
    ref = KMeans(3, init=centres).fit(X)
    assert est.n_clusters == 3
    np.testing.assert_allclose(est.cluster_centers_, ref.cluster_centers_, rtol=1e-10)
    np.testing.assert_array_equal(est.init, centres)

    model = tmp_path / "kmed"
    rc = main(["fit", str(directory), *COLS, "--estimator", "kmedoids", "--init", str(tmp_path / "centres.npy"),
               "--model-out", str(model), *FAST])
    assert rc == 0, capsys.readouterr().err
    est = load(model)
    ref = KMedoids(3, init=centres).fit(X)
    np.testing.assert_array_equal(np.sort(est.medoid_indices_), np.sort(ref.medoid_indices_))


def test_the_notes_means_only_em_from_the_command_is_the_python_one(tmp_path, capsys):
    """Equal weights and unit variances given and held, only the means updated (the lecture notes'
    means-only EM): the command fits what GaussianMixture(update_params="m", ...) fits, and
    `daskgmm score` counts its K·D free parameters."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from daskgmm import GaussianMixture, load

    rng = np.random.default_rng(0)
    x = np.r_[rng.normal(-2.0, 1.0, 300), rng.normal(3.0, 1.0, 200)]
    pq.write_table(pa.table({"x": x}), tmp_path / "x.parquet")
    model = tmp_path / "model"
    rc = main(["fit", str(tmp_path / "x.parquet"), "--covariance-type", "spherical", "--update-params", "m",
               "--weights-init", "0.5,0.5", "--means-init=-0.5;0.5", "--precisions-init", "1,1",
               "--model-out", str(model), *FAST])
    assert rc == 0, capsys.readouterr().err
    est = load(model)
    ref = GaussianMixture(2, covariance_type="spherical", update_params="m", weights_init=[0.5, 0.5],
                          means_init=[[-0.5], [0.5]], precisions_init=[1.0, 1.0]).fit(x[:, None])
    np.testing.assert_array_equal(est.weights_, [0.5, 0.5])
    np.testing.assert_array_equal(est.covariances_, [1.0, 1.0])
    np.testing.assert_allclose(est.means_, ref.means_, rtol=1e-10)
    capsys.readouterr()
    assert main(["score", str(tmp_path / "x.parquet"), "--model", str(model), *FAST]) == 0
    assert json.loads(capsys.readouterr().out)["n_parameters"] == 2


# ---------------------------------------------------------------- checkpoints


def test_the_starting_values_are_part_of_the_checkpoint_fingerprint(data, tmp_path):
    from daskgmm.cli.fit import fingerprint, initial_arrays
    from daskgmm.cli.runtime import open_data
    from daskgmm.io.modelfiles import Checkpoint

    directory, _ = data

    def job(*args):
        from daskgmm.cli.args import build_parser, resolve

        o = resolve(build_parser().parse_args(["fit", str(directory), *COLS, "--model-out", str(tmp_path / "m"),
                                               *args]))
        src = open_data(o, lambda msg: None)
        initial_arrays(o, src.columns)
        return fingerprint(o, src)

    def stale(fp):
        return Checkpoint(tmp_path / "ck", fp).stale()

    plain = job()
    # a checkpoint written before these options existed (no such keys) is still the same job's
    Checkpoint(tmp_path / "ck", {k: v for k, v in plain.items()
                                 if k not in ("weights_init", "means_init", "precisions_init", "update_params",
                                              "init")}).save([])
    assert stale(plain) is None
    Checkpoint(tmp_path / "ck", job("--means-init", "0,0,0;5,5,5")).save([])
    assert stale(job("--means-init", str(_save(tmp_path, [[0, 0, 0], [5, 5, 5]])))) is None  # the same values
    assert "differs in: means_init" in stale(job("--means-init", "0,0,0;5,5,6"))
    assert "differs in: means_init, update_params" in stale(job("--n-components", "2", "--update-params", "wc"))
    assert "differs in: precisions_init" in stale(job("--means-init", "0,0,0;5,5,5", "--precisions-init",
                                                       "1,0,0;0,1,0;0,0,1;1,0,0;0,1,0;0,0,1"))
    assert "differs in: weights_init" in stale(job("--means-init", "0,0,0;5,5,5", "--weights-init", "0.5,0.5"))
    Checkpoint(tmp_path / "ck", job("--estimator", "kmedoids", "--n-components", "2")).save([])
    assert "differs in: init" in stale(job("--estimator", "kmedoids", "--init", "0,0,0;5,5,5"))
    assert "differs in: init" in stale(job("--estimator", "kmedoids", "--n-components", "2", "--init", "build"))
    # and the data options that change what is computed (docs/cli.md: not the cluster's, the outputs' or --cache)
    Checkpoint(tmp_path / "ck", plain).save([])
    for args, name in [(("--dtype", "float32"), "dtype"), (("--nan-policy", "omit"), "nan_policy"),
                       (("--chunk-rows", "100"), "chunk_rows"), (("--seed", "7"), "seed")]:
        why = stale(job(*args))
        assert why and why.startswith("written for a different job (differs in: ") and name in why, (args, why)
    assert stale(job("--cache", "none", "--n-workers", "1", "--metrics-out", str(tmp_path / "m.json"))) is None


def _save(tmp_path, rows):
    path = tmp_path / "given.npy"
    np.save(path, np.asarray(rows, dtype=float))
    return path


def test_fit_help_names_the_starting_values(capsys):
    assert main(["fit", "--help"]) == 0
    out = capsys.readouterr().out
    for word in ("--weights-init", "--means-init", "--precisions-init", "--update-params", ".csv"):
        assert word in out, word
