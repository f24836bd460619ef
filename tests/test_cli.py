"""The daskgmm command: subcommands, configs, exit codes, atomic outputs, resume."""

import itertools
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from daskgmm.cli import main
from daskgmm.config import BY_DEST, load_config

from .conftest import make_blobs

REPO = pathlib.Path(__file__).resolve().parents[1]
FAST = ["--n-workers", "1", "--threads-per-worker", "2", "--quiet"]


def write_data(directory, n=3000, d=3, k=3, files=3, seed=0, nan_row=None):
    X, _labels, _ = make_blobs(n=n, d=d, k=k, seed=seed)
    os.makedirs(directory, exist_ok=True)
    bounds = np.linspace(0, n, files + 1).astype(int)
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        cols = {"id": np.arange(a, b), **{f"f{j}": X[a:b, j].copy() for j in range(d)}, "tag": ["t"] * (b - a)}
        if nan_row is not None and a <= nan_row < b:
            cols["f1"][nan_row - a] = np.nan
        pq.write_table(pa.table(cols), os.path.join(directory, f"part-{i}.parquet"), row_group_size=400)
    return X


def tree_bytes(path):
    out = {}
    for root, _, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            out[os.path.relpath(p, path)] = pathlib.Path(p).read_bytes()
    return out


def test_fit_predict_score_sample_info(tmp_path, capsys):
    data = tmp_path / "data"
    X = write_data(data)
    model, preds, metrics = tmp_path / "model", tmp_path / "preds", tmp_path / "m.json"
    rc = main(["fit", str(data), "--columns", "f0,f1,f2", "--id-column", "id", "--n-components", "3",
               "--seed", "0", "--model-out", str(model), "--predictions-out", str(preds), "--proba",
               "--metrics-out", str(metrics), *FAST])
    assert rc == 0
    assert sorted(os.listdir(model)) == ["_SUCCESS", "arrays.npz", "model.json"]
    m = json.loads(metrics.read_text())
    assert m["status"] == "ok" and m["n_rows"] == 3000 and m["converged"] and m["columns"] == ["f0", "f1", "f2"]
    table = pq.read_table(preds)
    assert (preds / "_SUCCESS").exists()
    assert table.column_names == ["id", "label", "proba_0", "proba_1", "proba_2"]
    assert sorted(table.column("id").to_pylist()) == list(range(3000))
    from daskgmm import GaussianMixture, load

    est = load(model)
    assert list(est.feature_names_in_) == ["f0", "f1", "f2"]
    ids = table.column("id").to_numpy()
    np.testing.assert_array_equal(table.column("label").to_numpy(), est.predict(X[ids]))
    ref = GaussianMixture(3, random_state=0).fit(X)
    np.testing.assert_allclose(np.sort(est.means_, axis=0), np.sort(ref.means_, axis=0), rtol=1e-6)

    out = tmp_path / "pred2"
    assert main(["predict", str(data), "--model", str(model), "--out", str(out), "--id-column", "id",
                 "--loglik", *FAST]) == 0
    t2 = pq.read_table(out)
    assert t2.column_names == ["id", "label", "loglik"]
    order = np.argsort(t2.column("id").to_numpy())
    np.testing.assert_allclose(t2.column("loglik").to_numpy()[order], est.score_samples(X), rtol=1e-10)

    capsys.readouterr()
    assert main(["score", str(data), "--model", str(model), *FAST]) == 0
    score = json.loads(capsys.readouterr().out)
    assert score["n_rows"] == 3000
    np.testing.assert_allclose(score["mean_loglik"], est.score(X), rtol=1e-10)
    np.testing.assert_allclose(score["bic"], est.bic(X), rtol=1e-10)

    samples = tmp_path / "samples"
    assert main(["sample", "--model", str(model), "-n", "2500", "--out", str(samples), "--seed", "1",
                 "--chunk-rows", "1000", *FAST]) == 0
    st = pq.read_table(samples)
    assert st.num_rows == 2500 and st.column_names == ["f0", "f1", "f2", "component"]
    assert len([f for f in os.listdir(samples) if f.endswith(".parquet")]) == 3

    assert main(["info", "--model", str(model)]) == 0
    text = capsys.readouterr().out
    assert "3 (full covariance)" in text and "f0, f1, f2" in text


def test_config_file_and_flag_override(tmp_path):
    data = tmp_path / "data"
    write_data(data)
    cfg = tmp_path / "job.yaml"
    cfg.write_text(yaml.safe_dump({
        "data": str(data), "columns": ["f0", "f1", "f2"], "n_components": 2, "covariance_type": "diag",
        "model_out": str(tmp_path / "model"), "metrics_out": str(tmp_path / "m.json"), "quiet": True,
        "n_workers": 1,
    }))
    assert main(["fit", "--config", str(cfg), "--n-components", "3"]) == 0
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["n_components"] == 3 and m["covariance_type"] == "diag"


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_example_configs_are_valid(name):
    values = load_config(str(REPO / "configs" / name), "fit")
    assert values["data"] and values["model_out"]
    for key in values:
        assert key == "data" or key in BY_DEST


@pytest.mark.parametrize(
    "content, match",
    [
        ({"n_components": 2, "bogus_key": 1}, "unknown key 'bogus_key'"),
        ({"n_components": "many"}, "n_components: expected an integer"),
        ({"covariance_type": "round"}, "covariance_type: expected one of"),
        ({"proba": "yes"}, "proba: expected true or false"),
        (["not", "a", "mapping"], "must be a mapping"),
    ],
)
def test_bad_config_exits_2(tmp_path, capsys, content, match):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(content))
    rc = main(["fit", "x.parquet", "--model-out", str(tmp_path / "m"), "--config", str(cfg)])
    assert rc == 2
    err = capsys.readouterr().err
    assert match in err and str(cfg) in err
    assert not (tmp_path / "m").exists()


def _expect_exit2(argv, match, capsys):
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert match in err, err


def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys):
    data = tmp_path / "data"
    write_data(data)
    model = tmp_path / "model"
    base = ["fit", str(data), "--model-out", str(model), "--n-components", "2", *FAST]
    _expect_exit2(base + ["--columns", "f0,nope"], "no column 'nope'", capsys)
    _expect_exit2(base + ["--columns", "f0,tag"], "column 'tag' has type string", capsys)
    _expect_exit2(base, "'tag' (string) are not numeric", capsys)
    _expect_exit2(["fit", str(tmp_path / "missing"), "--model-out", str(model)], "no such file or directory", capsys)
    _expect_exit2(["fit", str(data), "--columns", "f0"], "--model-out is required", capsys)
    _expect_exit2(["fit", str(data), "--model-out", str(model), "--n-components", "zero"],
                  "expected an integer", capsys)
    _expect_exit2(["predict", str(data), "--model", str(tmp_path / "nomodel"), "--out", str(tmp_path / "p")],
                  "no model here", capsys)
    (tmp_path / "empty").mkdir()
    pq.write_table(pa.table({"a": pa.array([], pa.float64())}), tmp_path / "empty" / "e.parquet")
    _expect_exit2(["fit", str(tmp_path / "empty"), "--model-out", str(model)], "no rows", capsys)
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "c.parquet").write_bytes(b"PAR1 this is not parquet")
    _expect_exit2(["fit", str(tmp_path / "corrupt"), "--model-out", str(model)], "not a readable Parquet file",
                  capsys)
    other = tmp_path / "data" / "part-9.parquet"
    pq.write_table(pa.table({"id": [1], "f0": pa.array([1], pa.float32()), "f1": [1.0], "f2": [1.0]}), other)
    _expect_exit2(base + ["--columns", "f0,f1,f2"], "schemas disagree: column 'f0'", capsys)
    other.unlink()
    assert not model.exists()
    assert not [p for p in tmp_path.iterdir() if ".staging-" in p.name]


def test_nan_policy(tmp_path, capsys):
    data = tmp_path / "data"
    write_data(data, nan_row=1234)
    model = tmp_path / "model"
    argv = ["fit", str(data), "--columns", "f0,f1,f2", "--n-components", "2", "--model-out", str(model),
            "--metrics-out", str(tmp_path / "m.json"), *FAST]
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and "column 'f1': 1" in err and "part-1.parquet" in err
    assert json.loads((tmp_path / "m.json").read_text())["status"] == "error"
    assert not model.exists()
    assert main(argv + ["--nan-policy", "omit"]) == 0
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["status"] == "ok" and m["n_omitted"] == 1 and m["n_rows"] == 2999


def test_failed_predict_leaves_previous_output_byte_identical(tmp_path, capsys):
    data = tmp_path / "data"
    write_data(data)
    model, out = tmp_path / "model", tmp_path / "preds"
    assert main(["fit", str(data), "--columns", "f0,f1,f2", "--n-components", "2", "--model-out", str(model),
                 *FAST]) == 0
    assert main(["predict", str(data), "--model", str(model), "--out", str(out), "--id-column", "id", *FAST]) == 0
    before = tree_bytes(out)
    # a later file with a NaN: schemas agree, so the job fails only when it reaches that chunk
    bad = tmp_path / "data2"
    write_data(bad, nan_row=2900)
    rc = main(["predict", str(bad), "--model", str(model), "--out", str(out), "--id-column", "id", *FAST])
    assert rc == 2
    assert tree_bytes(out) == before
    assert not [p for p in tmp_path.iterdir() if ".staging-" in p.name]


def test_collapse_is_a_failure_exit_1(tmp_path, capsys):
    d = tmp_path / "dup"
    d.mkdir()
    pq.write_table(pa.table({"a": [0.0] * 50 + [5.0] * 50, "b": [1.0] * 50 + [2.0] * 50}), d / "x.parquet")
    rc = main(["fit", str(d), "--n-components", "2", "--reg-covar", "0", "--model-out", str(tmp_path / "m"), *FAST])
    assert rc == 1
    assert "ill-defined empirical covariance" in capsys.readouterr().err


def _cli(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "daskgmm.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)


def test_console_script_exit_codes(tmp_path):
    p = subprocess.run([str(pathlib.Path(sys.executable).parent / "daskgmm"), "--help"], capture_output=True,
                       text=True)
    assert p.returncode == 0 and "exit status" in p.stdout
    p = subprocess.run([sys.executable, "-m", "daskgmm.cli", "fit", "--bogus"], capture_output=True, text=True)
    assert p.returncode == 2


@pytest.mark.slow
def test_resume_after_sigkill_equals_uninterrupted(tmp_path):
    data = tmp_path / "data"
    write_data(data, n=60000, d=4, k=4, files=4)
    common = ["fit", str(data), "--columns", "f0,f1,f2,f3", "--n-components", "4", "--covariance-type", "full",
              "--tol", "0", "--max-iter", "25", "--seed", "3", "--init-params", "random_from_data",
              "--n-workers", "2", "--threads-per-worker", "1", "--quiet"]
    ref = _cli(*common, "--model-out", str(tmp_path / "ref"))
    assert ref.wait(timeout=300) == 0, ref.stderr.read()
    ckpt = tmp_path / "ckpt"
    run = _cli(*common, "--model-out", str(tmp_path / "model"), "--checkpoint-dir", str(ckpt))
    deadline = time.time() + 240
    n_iter = 0
    while time.time() < deadline and run.poll() is None:
        if (ckpt / "checkpoint.npz").exists():
            with np.load(ckpt / "checkpoint.npz") as z:
                n_iter = json.loads(str(z["__meta__"]))["runs"][0]["n_iter"]
            if n_iter >= 5:
                break
        time.sleep(0.05)
    assert run.poll() is None, "the fit ended before it could be killed"
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    assert not (tmp_path / "model").exists()
    resumed = _cli(*common, "--model-out", str(tmp_path / "model"), "--checkpoint-dir", str(ckpt), "--resume",
                   "--metrics-out", str(tmp_path / "m.json"))
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    with np.load(tmp_path / "ref" / "arrays.npz") as a, np.load(tmp_path / "model" / "arrays.npz") as b:
        for key in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
            np.testing.assert_array_equal(a[key], b[key])
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["n_iter"] == 25 and len(m["history"]) == 25
