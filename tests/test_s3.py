"""Data and outputs on S3, against a real S3 HTTP API (moto's server on 127.0.0.1; issue 23).

The same promises the local-disk tests check: exit statuses, outputs all-or-nothing and
committed together, nothing left behind, every id exactly once; plus what only an object
store needs: a lock by conditional writes, commits rolled forward or back after a SIGKILL,
buckets never created.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

import daskgmm
from daskgmm.cli import main
from daskgmm.io.modelfiles import ModelFileError
from daskgmm.io.outputs import OutputBusyError

from .conftest import write_data

pytest.importorskip("s3fs")

COLS = ["--columns", "f0,f1,f2", "--id-column", "id"]
N = 3000


@pytest.fixture(scope="module")
def s3_env(s3_server):
    """The standard AWS variables pointing at the server, for this module's jobs and workers."""
    env = s3_server.env()
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield s3_server
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def scheduler(s3_env):
    """One LocalCluster (a worker process on 127.0.0.1) for the module's jobs: ``--scheduler`` spares
    each job starting its own. Its worker reaches S3 through the variables above."""
    from distributed import LocalCluster

    cluster = LocalCluster(n_workers=1, threads_per_worker=2, processes=True, host="127.0.0.1",
                           dashboard_address=None, memory_limit="1GiB")
    yield cluster.scheduler_address
    cluster.close()


@pytest.fixture
def bucket(s3, tmp_path):
    """A fresh bucket holding the dataset under ``data/`` (3 files, ids 0..2999): ``(server, bucket, X)``."""
    server, name = s3
    X = write_data(tmp_path / "data", n=N)
    server.fs().put(str(tmp_path / "data") + "/", f"{name}/data/", recursive=True)
    return server, name, X


def so(server) -> str:
    return json.dumps(server.storage_options)


def run(server, *args, scheduler=None):
    """The command in this process, with --storage-options (and the shared cluster)."""
    extra = ["--scheduler", scheduler] if scheduler else []
    return main([*map(str, args), "--storage-options", so(server), *extra])


def cli(*args, **kw):
    """The command as a separate process (its own session, to be killed as a whole)."""
    return subprocess.Popen([sys.executable, "-m", "daskgmm", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)


def keys(server, bucket) -> list:
    """Every object of the bucket, relative to it."""
    return sorted(k[len(bucket) + 1:] for k in server.fs().find(bucket))


def assert_nothing_left(server, bucket):
    """No staging prefix, lock, journal or probe object: no key with a part starting with '.'."""
    left = [k for k in keys(server, bucket) if any(part.startswith(".") for part in k.split("/"))]
    assert not left, left


def read_table(server, path):
    return pq.read_table(path, filesystem=server.fs())


def assert_predictions_of(server, bucket, prefix, est, X, columns=None):
    """Complete (``_SUCCESS``), every id exactly once, labels those of ``est``."""
    fs = server.fs()
    assert fs.exists(f"{bucket}/{prefix}/_SUCCESS")
    table = read_table(server, f"{bucket}/{prefix}")
    if columns is not None:
        assert table.column_names == columns
    ids = table.column("id").to_numpy()
    assert sorted(ids.tolist()) == list(range(N))
    np.testing.assert_array_equal(table.column("label").to_numpy(), est.predict(X[ids]))


# ---------------------------------------------------------------------------- every command


def test_fit_writes_everything_to_s3_through_storage_options_alone(bucket, monkeypatch, capsys):
    """No AWS variable set: --storage-options reaches this process and the embedded cluster's workers,
    which read the data and write the predictions themselves."""
    server, b, X = bucket
    for k in server.env():
        monkeypatch.delenv(k, raising=False)
    rc = run(server, "fit", f"s3://{b}/data", *COLS, "--n-components", 3, "--seed", 0,
             "--model-out", f"s3://{b}/out/model", "--predictions-out", f"s3://{b}/out/preds", "--proba",
             "--metrics-out", f"s3://{b}/out/metrics.json", "--plot", f"s3://{b}/out/fit.png",
             "--n-workers", 1, "--threads-per-worker", 1)
    err = capsys.readouterr().err
    assert rc == 0, err
    assert keys(server, b) == sorted(
        [f"data/part-{i}.parquet" for i in range(3)]
        + ["out/model/_SUCCESS", "out/model/arrays.npz", "out/model/model.json", "out/preds/_SUCCESS",
           "out/metrics.json", "out/fit.png"] + [f"out/preds/part-{i:05d}.parquet" for i in range(3)])
    fs = server.fs()
    metrics = json.loads(fs.cat_file(f"{b}/out/metrics.json"))
    assert metrics["status"] == "ok" and metrics["n_rows"] == N
    assert fs.cat_file(f"{b}/out/fit.png")[:4] == b"\x89PNG"
    est = daskgmm.load(f"s3://{b}/out/model", storage_options=server.storage_options)
    assert est.n_components == 3
    assert_predictions_of(server, b, "out/preds", est, X, ["id", "label", "proba_0", "proba_1", "proba_2"])


def test_a_prefix_that_is_not_a_finished_output_is_not_replaced(bucket, capsys):
    """As on a disk (test_cli): '--model-out s3://b/mine' over someone's objects without a _SUCCESS is refused
    before any pass, exit 2, naming them, and they stay; from save() too. A previous output is replaced."""
    from daskgmm import GaussianMixture
    from daskgmm.io.files import DataError

    server, b, X = bucket
    fs, opts = server.fs(), server.storage_options
    fs.pipe(f"{b}/mine/notes.txt", b"precious")
    assert run(server, "fit", f"s3://{b}/data", "--columns", "f0,f1,f2", "--n-components", "2", "--max-iter", "2",
               "--model-out", f"s3://{b}/mine") == 2
    err = capsys.readouterr().err
    assert f"output 's3://{b}/mine' is a directory that holds 1 entry (notes.txt) but no _SUCCESS marker" in err, err
    assert "cluster:" not in err
    g = GaussianMixture(2, random_state=0, max_iter=2).fit(X)
    with pytest.raises(DataError, match=r"notes\.txt"):
        g.save(f"s3://{b}/mine", storage_options=opts)
    assert [k for k in keys(server, b) if k.startswith("mine/")] == ["mine/notes.txt"]
    g.save(f"s3://{b}/m", storage_options=opts)
    g.save(f"s3://{b}/m", storage_options=opts)  # a finished output: replaced
    assert [k for k in keys(server, b) if k.startswith("m/")] == ["m/_SUCCESS", "m/arrays.npz", "m/model.json"]
    assert not [k for k in keys(server, b) if k.startswith(".mine") or k.startswith(".m.")]  # no lock, no staging


def test_every_command_reads_and_writes_s3(bucket, scheduler, capsys):
    server, b, X = bucket
    data, model = f"s3://{b}/data", f"s3://{b}/model"
    assert run(server, "fit", data, *COLS, "--n-components", 3, "--seed", 0, "--model-out", model, "--quiet",
               scheduler=scheduler) == 0
    est = daskgmm.load(model, storage_options=server.storage_options)

    assert run(server, "info", "--model", model) == 0
    assert "3 (full covariance)" in capsys.readouterr().out
    assert run(server, "info", "--model", model, "--json") == 0
    assert json.loads(capsys.readouterr().out)["estimator"] == "GaussianMixture"

    assert run(server, "score", data, "--model", model, "--quiet", scheduler=scheduler) == 0
    score = json.loads(capsys.readouterr().out)
    assert score["n_rows"] == N
    np.testing.assert_allclose(score["mean_loglik"], est.score(X), rtol=1e-10)

    assert run(server, "predict", data, "--model", model, "--out", f"s3://{b}/pred", "--id-column", "id",
               "--loglik", "--quiet", scheduler=scheduler) == 0
    assert_predictions_of(server, b, "pred", est, X, ["id", "label", "loglik"])

    assert run(server, "sample", "--model", model, "-n", 500, "--chunk-rows", 200, "--seed", 1,
               "--out", f"s3://{b}/sample", "--quiet", scheduler=scheduler) == 0
    assert read_table(server, f"{b}/sample").num_rows == 500
    assert sum(k.startswith("sample/part-") for k in keys(server, b)) == 3

    assert run(server, "update", data, "--model", model, "--model-out", model, "--passes", 2, "--id-column", "id",
               "--checkpoint-dir", f"s3://{b}/ck", "--predictions-out", f"s3://{b}/upreds",
               "--metrics-out", f"s3://{b}/update.json", "--quiet", scheduler=scheduler) == 0
    updated = daskgmm.load(model, storage_options=server.storage_options)
    assert updated.n_batches_ == 3
    assert_predictions_of(server, b, "upreds", updated, X)
    assert not [k for k in keys(server, b) if k.startswith("ck/")]  # checkpoint and snapshot gone: job done

    assert run(server, "select", data, *COLS, "--k-min", 2, "--k-max", 3, "--seed", 0, "--out",
               f"s3://{b}/sel", "--plot", f"s3://{b}/sel.png", "--quiet", scheduler=scheduler) == 0
    fs = server.fs()
    assert json.loads(fs.cat_file(f"{b}/sel/selection.json"))["best"]["n_components"] == 3
    assert {"sel/_SUCCESS", "sel/model/model.json", "sel/model/arrays.npz", "sel/selection.csv",
            "sel.png"} <= set(keys(server, b))
    assert_nothing_left(server, b)


def test_save_load_and_write_predictions_in_python(bucket):
    server, b, X = bucket
    from daskgmm import GaussianMixture

    opts = server.storage_options
    gmm = GaussianMixture(3, random_state=0).fit(X)
    gmm.save(f"s3://{b}/m", storage_options=opts)
    back = daskgmm.load(f"s3://{b}/m", storage_options=opts)
    np.testing.assert_array_equal(back.means_, gmm.means_)
    GaussianMixture(2, random_state=0).fit(X).save(f"s3://{b}/m", storage_options=opts)  # replaced whole
    assert daskgmm.load(f"s3://{b}/m", storage_options=opts).n_components == 2
    assert [k for k in keys(server, b) if k.startswith("m/")] == ["m/_SUCCESS", "m/arrays.npz", "m/model.json"]
    gmm.write_predictions(X, f"s3://{b}/p", ids=np.arange(N), storage_options=opts)
    assert_predictions_of(server, b, "p", gmm, X)
    X2 = daskgmm.read_parquet(f"s3://{b}/data", columns=["f0", "f1", "f2"], storage_options=opts)
    np.testing.assert_allclose(np.asarray(X2.compute()), X)
    # a Spark ML model directory, committed as the others (tests/test_spark_models.py: its layout)
    daskgmm.export_spark_model(gmm, f"s3://{b}/spark", storage_options=opts)
    assert [k for k in keys(server, b) if k.startswith("spark/")] == [
        "spark/_SUCCESS", "spark/data/_SUCCESS", "spark/data/part-00000.snappy.parquet", "spark/metadata/_SUCCESS",
        "spark/metadata/part-00000"]
    starts = daskgmm.read_spark_model(f"s3://{b}/spark", storage_options=opts)
    np.testing.assert_array_equal(starts["means_init"], gmm.means_)
    # rewritten by another process (its own s3fs): this one's listings of metadata/ and data/ were stale, and
    # the next read failed ("… Etag … no longer exists"; user-trial-r13, a session reading a nightly export)
    other = GaussianMixture(2, random_state=0).fit(X)
    daskgmm.export_spark_model(other, f"s3://{b}/spark2", storage_options=opts)
    fs = server.fs()
    for part in ("metadata/part-00000", "data/part-00000.snappy.parquet"):
        fs.copy(f"{b}/spark2/{part}", f"{b}/spark/{part}")
    fs.rm(f"{b}/spark2", recursive=True)
    starts = daskgmm.read_spark_model(f"s3://{b}/spark", storage_options=opts)
    np.testing.assert_array_equal(starts["means_init"], other.means_)
    fs = server.fs()  # as while a commit copies it in: no _SUCCESS, a journal beside it
    fs.rm_file(f"{b}/spark/_SUCCESS")
    fs.pipe_file(f"{b}/.spark.commit-1-x", b"[]")
    with pytest.raises(ModelFileError, match="incomplete"):
        daskgmm.read_spark_model(f"s3://{b}/spark", storage_options=opts)
    fs.rm_file(f"{b}/.spark.commit-1-x")
    assert_nothing_left(server, b)


def test_standard_aws_variables_and_profiles_work(bucket, s3_env, tmp_path, monkeypatch, capsys):
    """No --storage-options: the AWS variables; or a named profile of an AWS config file (endpoint
    included), chosen with --storage-options '{"profile": ...}'."""
    server, b, X = bucket
    from daskgmm import GaussianMixture

    GaussianMixture(2, random_state=0).fit(X).save(f"s3://{b}/m", storage_options=server.storage_options)
    assert main(["info", "--model", f"s3://{b}/m"]) == 0  # the variables of the s3_env fixture
    assert "2 (full covariance)" in capsys.readouterr().out
    config, creds = tmp_path / "config", tmp_path / "credentials"
    config.write_text(f"[profile etl]\nregion = us-east-1\nendpoint_url = {server.endpoint}\n")
    creds.write_text(f"[etl]\naws_access_key_id = {server.storage_options['key']}\n"
                     f"aws_secret_access_key = {server.storage_options['secret']}\n")
    for k in server.env():
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    assert main(["info", "--model", f"s3://{b}/m", "--storage-options", '{"profile": "etl"}']) == 0
    assert "2 (full covariance)" in capsys.readouterr().out


def test_storage_options_in_a_config(bucket, scheduler, tmp_path):
    import yaml

    server, b, _ = bucket
    cfg = tmp_path / "job.yaml"
    cfg.write_text(yaml.safe_dump({
        "data": f"s3://{b}/data", "columns": ["f0", "f1", "f2"], "n_components": 2, "quiet": True,
        "model_out": f"s3://{b}/m", "storage_options": server.storage_options, "scheduler": scheduler}))
    assert main(["fit", "--config", str(cfg)]) == 0
    assert daskgmm.load(f"s3://{b}/m", storage_options=server.storage_options).n_components == 2
    cfg.write_text(yaml.safe_dump({"storage_options": "endpoint_url=x"}))
    assert main(["fit", "--config", str(cfg), "d", "--model-out", "m"]) == 2


# ---------------------------------------------------------------------------- paths checked first


def test_missing_buckets_and_inputs_fail_before_any_pass_and_create_nothing(bucket, scheduler, capsys):
    server, b, _ = bucket
    data = f"s3://{b}/data"
    fit = ["fit", data, *COLS, "--model-out", f"s3://{b}/m"]
    gone = f"daskgmm-missing-{b[-8:]}"
    for flag, path in [("--model-out", f"s3://{gone}/m"), ("--predictions-out", f"s3://{gone}/p"),
                       ("--plot", f"s3://{gone}/p.png"), ("--metrics-out", f"s3://{gone}/m.json"),
                       ("--checkpoint-dir", f"s3://{gone}/ck")]:
        args = ["fit", data, *COLS, "--model-out", f"s3://{b}/m", flag, path]
        if flag == "--model-out":
            args = ["fit", data, *COLS, flag, path]
        assert run(server, *args, scheduler=scheduler) == 2, flag
        err = capsys.readouterr().err
        assert f"bucket '{gone}' does not exist" in err and path.rsplit("/", 1)[0] in err, err
        assert "iter" not in err  # before any pass
    assert run(server, "fit", data, *COLS, "--model-out", f"s3://{b}", scheduler=scheduler) == 2
    assert "a bucket cannot be an output" in capsys.readouterr().err
    assert gone not in server.fs().ls("")  # never created

    for missing in (f"s3://{b}/nope", f"s3://{gone}/data"):
        assert run(server, "fit", missing, *COLS, "--model-out", f"s3://{b}/m", scheduler=scheduler) == 2
        assert f"no such file or directory: '{missing}'" in capsys.readouterr().err
    assert run(server, "predict", data, "--model", f"s3://{b}/nomodel", "--out", f"s3://{b}/p",
               scheduler=scheduler) == 2
    assert "no model here" in capsys.readouterr().err
    assert keys(server, b) == [f"data/part-{i}.parquet" for i in range(3)]  # nothing written, nothing left
    assert run(server, *fit, scheduler=scheduler) == 0


def test_a_model_in_a_missing_bucket_is_exit_2_naming_it(s3_env, tmp_path, capsys):
    """s3fs's listing of a missing bucket raises (where a missing key gives False): the model's
    path is named, exit 2, before any cluster starts (it was exit 1, "FileNotFoundError: The
    specified bucket does not exist", naming nothing)."""
    model = "s3://daskgmm-missing-model-bucket/m"
    with pytest.raises(ModelFileError, match=f"{model}: no model here"):
        daskgmm.load(model, storage_options=s3_env.storage_options)
    write_data(tmp_path / "data", n=30)
    for args in (["info"], ["score", tmp_path / "data"], ["sample", "-n", 5, "--out", tmp_path / "s"]):
        assert main([*map(str, args), "--model", model, "--storage-options", so(s3_env)]) == 2, args
        err = capsys.readouterr().err
        assert f"{model}: no model here" in err and "cluster:" not in err, err


def test_a_prefix_that_cannot_be_written_is_exit_2_naming_it(bucket, scheduler, capsys):
    """S3 answers 403 AccessDenied to writes a policy forbids (moto does not enforce policies, so the
    server answers for it): the output is named before any pass, and nothing is left."""
    server, b, _ = bucket
    from .s3_server import ACCESS_DENIED

    server.trap("PUT", f"{b}/locked/", hold=False, times=None, status="403 Forbidden", body=ACCESS_DENIED)
    for extra in (["--model-out", f"s3://{b}/locked/m"],
                  ["--model-out", f"s3://{b}/ok", "--plot", f"s3://{b}/locked/fit.png"],
                  ["--model-out", f"s3://{b}/ok", "--metrics-out", f"s3://{b}/locked/m.json"]):
        assert run(server, "fit", f"s3://{b}/data", *COLS, *extra, scheduler=scheduler) == 2, extra
        err = capsys.readouterr().err
        assert extra[-1] in err and "Access Denied" in err and "iter" not in err, err
    assert_nothing_left(server, b)


def test_data_the_credentials_may_not_list_is_exit_2_naming_it(bucket, scheduler, tmp_path, capsys):
    """Wrong credentials (or a policy) make S3 answer 403 to every read: the input is named, exit 2,
    before any pass (a glob was listed unnamed, exit 1, "PermissionError: ...")."""
    server, b, _ = bucket
    from .s3_server import ACCESS_DENIED

    for method in ("GET", "HEAD"):
        server.trap(method, b, hold=False, times=None, status="403 Forbidden", body=ACCESS_DENIED)
    for data in (f"s3://{b}/data/*.parquet", f"s3://{b}/data", f"s3://{b}/data/part-0.parquet"):
        assert run(server, "fit", data, *COLS, "--model-out", tmp_path / "m", scheduler=scheduler) == 2, data
        err = capsys.readouterr().err
        assert f"{data!r}: cannot list or read it" in err and "iter" not in err, err
    assert not (tmp_path / "m").exists()


def test_no_credentials_at_all_is_exit_2_naming_the_path(bucket, scheduler, tmp_path, monkeypatch, capsys):
    """botocore's NoCredentialsError passes through s3fs as it is (not an OSError): the input, the
    output, the model and --metrics-out were exit 1 "NoCredentialsError: Unable to locate
    credentials" naming no path, and the error metrics' write crashed with a traceback."""
    server, b, _ = bucket
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    write_data(tmp_path / "data", n=30)
    nocreds = json.dumps({"endpoint_url": server.endpoint, "skip_instance_cache": True})
    local = [str(tmp_path / "data"), "--columns", "f0,f1", "--scheduler", scheduler, "--model-out", str(tmp_path / "m")]
    for args, named in ((["fit", f"s3://{b}/data", *COLS, "--model-out", tmp_path / "m"], f"s3://{b}/data"),
                        (["fit", f"s3://{b}/data/*.parquet", *COLS, "--model-out", tmp_path / "m"], "*.parquet"),
                        (["fit", *local[:5], "--model-out", f"s3://{b}/m"], f"s3://{b}/m"),
                        (["fit", *local, "--metrics-out", f"s3://{b}/m.json"], f"s3://{b}/m.json"),
                        (["info", "--model", f"s3://{b}/m"], f"s3://{b}/m")):
        assert main([*map(str, args), "--storage-options", nocreds]) == 2, args
        err = capsys.readouterr().err
        assert named in err and "Unable to locate credentials: set AWS_ACCESS_KEY_ID" in err, (args, err)
        assert "Traceback" not in err and "iter" not in err, err
    assert keys(server, b) == [f"data/part-{i}.parquet" for i in range(3)]


@pytest.fixture
def closed_endpoint():
    """An endpoint URL on 127.0.0.1 where nothing listens (a port bound, then closed)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_a_closed_endpoint_is_exit_1_naming_it_and_the_path(closed_endpoint, scheduler, tmp_path, capsys):
    """Nothing listens at the endpoint (the store is down, or the port is wrong): the input, the output,
    the model and --metrics-out each fail before any pass, exit 1 (the environment, as a store that
    stops answering or a closed scheduler port), naming the endpoint and the path; the endpoint given
    in --storage-options' client_kwargs or in the config's storage_options. They were botocore's
    "EndpointConnectionError: Could not connect to the endpoint URL: ..." (the request's URL)."""
    import yaml

    write_data(tmp_path / "data", n=30)
    options = {"key": "k", "secret": "s", "client_kwargs": {"endpoint_url": closed_endpoint}}
    # one attempt each (botocore's backoff took ~2 s a command); the config below keeps daskgmm's default retries
    once = {**options, "config_kwargs": {"retries": {"total_max_attempts": 1}}}
    model = tmp_path / "new" / "m"
    local = [str(tmp_path / "data"), "--columns", "f0,f1", "--scheduler", scheduler, "--quiet"]
    for args, named in ((["fit", "s3://lake/data", "--model-out", model, "--quiet"], "s3://lake/data"),
                        (["fit", *local, "--model-out", "s3://lake/m"], "output 's3://lake/m'"),
                        (["fit", *local, "--model-out", model, "--metrics-out", "s3://lake/m.json"],
                         "--metrics-out s3://lake/m.json"),
                        (["predict", *local, "--model", "s3://lake/m", "--out", model], "s3://lake/m"),
                        (["info", "--model", "s3://lake/m"], "s3://lake/m")):
        assert main([*map(str, args), "--storage-options", json.dumps(once)]) == 1, args
        err = capsys.readouterr().err
        assert f"{named}: cannot connect to the S3 endpoint {closed_endpoint} (connection refused)" in err, err
        assert "Traceback" not in err and "EndpointConnectionError" not in err, err
    cfg = tmp_path / "job.yaml"
    cfg.write_text(yaml.safe_dump({"storage_options": options, "quiet": True}))
    assert main(["fit", "--config", str(cfg), "s3://lake/data", "--model-out", str(model)]) == 1
    err = capsys.readouterr().err
    assert f"s3://lake/data: cannot connect to the S3 endpoint {closed_endpoint}" in err, err
    assert not (tmp_path / "new").exists()


def test_s3_without_s3fs_is_a_usage_error_before_any_cluster():
    code = ("import sys; sys.modules['s3fs'] = None; from daskgmm.cli import main; "
            "sys.exit(main(['fit', 's3://bucket/data', '--model-out', 's3://bucket/m']))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert "s3fs" in p.stderr and "daskgmm[s3]" in p.stderr and "cluster" not in p.stderr


# ---------------------------------------------------------------------------- the lock


def test_the_lock_admits_exactly_one_of_many_racing_writers(s3):
    from daskgmm.io.store import StoreLock

    server, b = s3
    fs = server.fs()
    for attempt in range(4):
        path = f"{b}/.out{attempt}.lock"
        barrier, results = threading.Barrier(4), []

        def take(path=path, barrier=barrier, results=results):
            lock = StoreLock(fs, path, f"s3://{path}")
            barrier.wait(timeout=30)
            try:
                results.append(lock.acquire())
            except OutputBusyError as exc:
                results.append(exc)

        threads = [threading.Thread(target=take) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        winners = [r for r in results if isinstance(r, StoreLock)]
        assert len(results) == 4 and len(winners) == 1, results
        assert all("is being written by another job" in str(r) for r in results if r not in winners)
        winners[0].release()
        assert not server.fs().exists(path)


def test_a_lock_is_refreshed_while_held_and_taken_over_once_it_lapses(s3, monkeypatch):
    import daskgmm.io.store as store

    server, b = s3
    fs = server.fs()
    lease = 2.0
    monkeypatch.setattr(store, "LEASE_SECONDS", lease)  # Date and LastModified are whole seconds: an
    monkeypatch.setattr(store, "REFRESH_SECONDS", 0.25)  # age is read up to 1 s either side of the true one
    path = f"{b}/.out.lock"
    first = store.StoreLock(fs, path, "out")
    first.me["host"] = "another-host"  # as if on another machine: its pid cannot be checked, only its lease
    first.acquire()
    time.sleep(lease + 1.5)  # unrefreshed, it would have lapsed however the seconds fall: the refreshes keep it
    with pytest.raises(OutputBusyError, match=r"pid \d+ on another-host"):
        store.StoreLock(fs, path, "out").acquire()
    first._stop.set()  # its job hangs: no more refreshes
    first._thread.join(timeout=5)
    stopped = time.monotonic()
    while True:  # taken over once the lease lapses, not before (polled, not slept: the lapse is what is waited for)
        try:
            second = store.StoreLock(fs, path, "out").acquire()
            break
        except OutputBusyError:
            assert time.monotonic() - stopped < lease + 5, "the lapsed lock was not taken over"
            time.sleep(0.1)
    assert time.monotonic() - stopped > lease - 1.5  # not at once: whole seconds, and a refresh up to 0.25 s before
    with pytest.raises(OutputBusyError, match="lost its lock"):
        first.verify()  # the hung job finds out before it commits
    first.release()  # and does not delete the lock it lost
    assert fs.exists(path)
    second.release()
    assert not server.fs().exists(path)


def test_a_dead_process_lock_on_this_machine_is_taken_over_at_once(s3):
    from daskgmm.io.store import StoreLock

    server, b = s3
    fs = server.fs()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = StoreLock(fs, f"{b}/.o.lock", "o")
    lock.me["pid"] = str(dead.pid)
    lock.acquire()
    lock._stop.set()
    StoreLock(fs, f"{b}/.o.lock", "o").acquire().release()
    # two jobs take a dead job's lock over at once: the one that wrote second (its conditional write on the dead
    # lock's ETag fails) finds the other's, alive, and does not take it too
    lock = StoreLock(fs, f"{b}/.o.lock", "o")
    lock.me["pid"] = str(dead.pid)
    lock.acquire()
    lock._stop.set()
    late, early, looked = StoreLock(fs, f"{b}/.o.lock", "o"), StoreLock(fs, f"{b}/.o.lock", "o"), []
    head = late._head

    def looked_then_the_other_takes_it(**bound):
        held = head(**bound)
        if not looked:
            looked.append(held)
            early.acquire()
        return held

    late._head = looked_then_the_other_takes_it
    with pytest.raises(OutputBusyError, match=rf"pid {os.getpid()} on"):
        late.acquire()
    assert looked[0] is not None and looked[0][0]["pid"] == str(dead.pid)
    early.release()
    assert not fs.exists(f"{b}/.o.lock")


def test_a_commit_killed_between_its_journals_is_rolled_forward_by_a_job_writing_either_output(s3):
    """The first journal is a commit's commit point: a job killed after writing the model's journal but before the
    predictions' is rolled forward by the next job tidying either output (tidying the predictions, it finds the
    journal their staging's _SUCCESS names), every target under its lock, and nothing of the commit is left. The
    slow SIGKILL tests above check the same on real jobs."""
    import contextlib

    from daskgmm.io import store

    server, b = s3
    fs = server.fs()
    pairs = [(f"{b}/out/.{n}.staging-1-x", f"{b}/out/{n}") for n in ("model", "preds")]
    journals = [store.journal_path(t, "1-x") for _, t in pairs]
    for staging, target in pairs:
        fs.pipe({f"{target}/v.txt": b"old", f"{target}/only-old.txt": b"old", f"{target}/_SUCCESS": b"",
                 f"{staging}/v.txt": b"new", f"{staging}/part/w.txt": b"new"})
        store.write_marker(fs, staging, journals)
    store.put_object(fs, journals[0], json.dumps([list(p) for p in pairs]).encode())  # killed before the second
    locked = []

    @contextlib.contextmanager
    def lock_target(target):
        locked.append(target)
        yield

    store.tidy(fs, f"{b}/out", "preds", lock_target)
    assert sorted(locked) == [t for _, t in pairs]
    for _, target in pairs:
        assert fs.cat_file(f"{target}/v.txt") == b"new"
    assert keys(server, b) == [f"out/{n}/{f}" for n in ("model", "preds") for f in ("_SUCCESS", "part/w.txt", "v.txt")]


def test_a_second_writer_fails_at_once_while_the_first_commits(bucket, scheduler, capsys):
    """Job A is held in the middle of its commit (its lock held); job B on the same outputs
    fails with exit 1 naming A's pid, leaves nothing; A then finishes, complete."""
    server, b, X = bucket
    args = ["fit", f"s3://{b}/data", *COLS, "--model-out", f"s3://{b}/out/model", "--predictions-out",
            f"s3://{b}/out/preds", "--quiet", "--scheduler", scheduler]
    trap = server.trap("PUT", f"{b}/out/model/", copy=True)
    a = cli(*args, "--n-components", 2)
    try:
        assert trap.hit.wait(180), a.stderr.read() if a.poll() is not None else "no commit"
        assert run(server, *args[:-2], "--n-components", 3, scheduler=scheduler) == 1
        err = capsys.readouterr().err
        assert f"is being written by another job (pid {a.pid} on" in err and "Traceback" not in err, err
        trap.release.set()
        _, a_err = a.communicate(timeout=180)
        assert a.returncode == 0, a_err
    finally:
        if a.poll() is None:
            os.killpg(a.pid, signal.SIGKILL)
            a.wait()
    est = daskgmm.load(f"s3://{b}/out/model", storage_options=server.storage_options)
    assert est.n_components == 2
    assert_predictions_of(server, b, "out/preds", est, X)
    assert_nothing_left(server, b)


@pytest.mark.slow
def test_two_writers_started_together_never_mix_their_outputs(bucket, scheduler):
    server, b, X = bucket
    args = ["fit", f"s3://{b}/data", *COLS, "--model-out", f"s3://{b}/out/model", "--predictions-out",
            f"s3://{b}/out/preds", "--proba", "--quiet", "--scheduler", scheduler]
    jobs = [cli(*args, "--n-components", k) for k in (2, 3)]
    results = [(j.wait(timeout=300), j.stderr.read()) for j in jobs]
    assert all(rc == 0 or (rc == 1 and "is being written by another job" in err) for rc, err in results), results
    assert any(rc == 0 for rc, _ in results)
    est = daskgmm.load(f"s3://{b}/out/model", storage_options=server.storage_options)
    table = read_table(server, f"{b}/out/preds")
    assert sum(c.startswith("proba_") for c in table.column_names) == est.n_components  # one job's pair
    assert_predictions_of(server, b, "out/preds", est, X)
    assert_nothing_left(server, b)


# ---------------------------------------------------------------------------- killed jobs


@pytest.fixture(scope="module")
def committed(s3_env, scheduler, tmp_path_factory):
    """A bucket holding what each case below starts from, made once (a fit and a reference model cost each case
    ~1.5 s): ``out/`` as a job writing model and predictions (2 components) leaves it, and ``ref/``, a model of 4
    components of the same data. A case copies them (copies on the server) into its own bucket."""
    from daskgmm import GaussianMixture

    server, name = s3_env, f"daskgmm-committed-{os.getpid()}"
    server.fs().mkdir(name)
    data = tmp_path_factory.mktemp("committed") / "data"
    X = write_data(data, n=N)
    server.fs().put(str(data) + "/", f"{name}/data/", recursive=True)
    out = ["--model-out", f"s3://{name}/out/model", "--predictions-out", f"s3://{name}/out/preds"]
    assert run(server, "fit", f"s3://{name}/data", *COLS, *out, "--quiet", "--seed", 0, "--n-components", 2,
               scheduler=scheduler) == 0
    ref = GaussianMixture(4, random_state=1).fit(X)
    ref.feature_names_in_ = np.array(["f0", "f1", "f2"], dtype=object)
    ref.save(f"s3://{name}/ref", storage_options=server.storage_options)
    assert_nothing_left(server, name)
    return name, ref


@pytest.mark.slow
@pytest.mark.parametrize(("where", "signum"), [
    ("before the journal", signal.SIGKILL), ("copying the model", signal.SIGKILL),
    ("copying the predictions", signal.SIGKILL), ("copying the model", signal.SIGTERM)],
    ids=["SIGKILL before the journal", "SIGKILL copying the model", "SIGKILL copying the predictions",
         "SIGTERM copying the model"])
def test_a_job_killed_in_its_commit_is_rolled_back_or_forward_by_the_next(bucket, scheduler, committed, where,
                                                                         signum):
    """SIGKILL a real `daskgmm fit` at a step of its commit of model and predictions; readers never
    take an incomplete model; the next job writing either output rolls the commit back (killed
    before its journal) or forward (after), and afterwards nothing of the killed job is left.
    SIGTERM in the middle of the commit stops the job (143) without deleting what the journal
    needs: the next job finishes the commit the same way."""
    server, b, X = bucket
    opts = server.storage_options
    out = ["--model-out", f"s3://{b}/out/model", "--predictions-out", f"s3://{b}/out/preds"]
    fit = ["fit", f"s3://{b}/data", *COLS, *out, "--quiet", "--seed", 0, "--scheduler", scheduler]
    template, ref = committed  # the outputs before (a fit of 2 components), and another model
    fs = server.fs()
    for key in keys(server, template):
        if key.startswith(("out/", "ref/")):
            fs.copy(f"{template}/{key}", f"{b}/{key}")
    assert daskgmm.load(f"s3://{b}/out/model", storage_options=opts).n_components == 2

    trap = {"before the journal": lambda: server.trap("PUT", f"{b}/out/.model.commit-"),
            "copying the model": lambda: server.trap("PUT", f"{b}/out/model/", copy=True),
            "copying the predictions": lambda: server.trap("PUT", f"{b}/out/preds/", copy=True)}[where]()
    job = cli(*fit, "--n-components", 3)  # AWS variables only (no --storage-options)
    try:
        assert trap.hit.wait(240), job.stderr.read() if job.poll() is not None else "no commit"
    finally:
        os.killpg(job.pid, signum)
        if signum == signal.SIGTERM:
            time.sleep(2)  # the handler runs while the request is still held
        trap.release.set()
        _, err = job.communicate(timeout=120)
    assert job.returncode == (143 if signum == signal.SIGTERM else -signal.SIGKILL), err
    forward = where != "before the journal"
    if where == "copying the model":  # readers refuse the model until a job finishes the commit
        with pytest.raises(ModelFileError, match="incomplete"):
            daskgmm.load(f"s3://{b}/out/model", storage_options=opts)
    else:
        assert daskgmm.load(f"s3://{b}/out/model", storage_options=opts).n_components == (3 if forward else 2)

    # the next job writes the predictions only (from another model): it finishes the killed commit first
    assert run(server, "predict", f"s3://{b}/data", "--model", f"s3://{b}/ref", "--out", f"s3://{b}/out/preds",
               "--id-column", "id", "--quiet", scheduler=scheduler) == 0
    model = daskgmm.load(f"s3://{b}/out/model", storage_options=opts)
    assert model.n_components == (3 if forward else 2)
    assert_predictions_of(server, b, "out/preds", ref, X)
    left = [k for k in keys(server, b) if k.startswith("out/.")]
    if forward:
        assert not left, left  # the killed job's lock, staging and journals are gone
    else:  # rolled back beside the predictions; beside the model, until a job writes it
        assert left and all(k.startswith(("out/.model.staging-", "out/.model.lock")) for k in left), left
    assert run(server, *fit[:-2], "--n-components", 3, scheduler=scheduler) == 0
    est = daskgmm.load(f"s3://{b}/out/model", storage_options=opts)
    assert_predictions_of(server, b, "out/preds", est, X)
    assert_nothing_left(server, b)


@pytest.mark.slow
def test_sigkill_mid_fit_and_resume_from_an_s3_checkpoint(bucket, scheduler, capsys):
    """The checkpoint is one object written whole after each iteration: a job killed while writing
    its fourth resumes from the third and ends with the bits of an uninterrupted fit."""
    server, b, _ = bucket
    common = ["fit", f"s3://{b}/data", *COLS, "--n-components", 3, "--init-params", "random_from_data",
              "--max-iter", 8, "--tol", 0, "--seed", 3, "--chunk-rows", 500, "--quiet"]
    assert run(server, *common, "--model-out", f"s3://{b}/ref", scheduler=scheduler) == 0
    trap = server.trap("PUT", f"{b}/ck/checkpoint.npz", nth=4)
    job = cli(*common, "--model-out", f"s3://{b}/m", "--checkpoint-dir", f"s3://{b}/ck", "--scheduler", scheduler)
    try:
        assert trap.hit.wait(240), job.stderr.read() if job.poll() is not None else "no fourth checkpoint"
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait(timeout=60)
        trap.release.set()
    assert "ck/checkpoint.npz" in keys(server, b) and "m/_SUCCESS" not in keys(server, b)
    assert run(server, *common, "--model-out", f"s3://{b}/m", "--checkpoint-dir", f"s3://{b}/ck", "--resume",
               "--metrics-out", f"s3://{b}/m.json", "--no-quiet", scheduler=scheduler) == 0
    assert "resumed from checkpoint" in capsys.readouterr().err
    opts = server.storage_options
    a, c = daskgmm.load(f"s3://{b}/ref", storage_options=opts), daskgmm.load(f"s3://{b}/m", storage_options=opts)
    for key in ("weights_", "means_", "covariances_"):
        np.testing.assert_array_equal(getattr(a, key), getattr(c, key))
    assert json.loads(server.fs().cat_file(f"{b}/m.json"))["n_iter"] == 8
    assert not [k for k in keys(server, b) if k.startswith("ck/")]  # done: the next run starts afresh
    assert_nothing_left(server, b)


# ---------------------------------------------------------------------------- failures and replacement


def test_a_failed_job_leaves_the_previous_outputs_and_nothing_else(bucket, scheduler, capsys):
    """A write refused in the middle of the predictions: exit 1 naming the output; the previous
    model and predictions are untouched object for object; the staging is deleted."""
    server, b, X = bucket
    from .s3_server import ACCESS_DENIED

    fit = ["fit", f"s3://{b}/data", *COLS, "--model-out", f"s3://{b}/out/model", "--predictions-out",
           f"s3://{b}/out/preds", "--quiet", "--seed", 0]
    assert run(server, *fit, "--n-components", 2, scheduler=scheduler) == 0
    fs = server.fs()
    before = {k: fs.cat_file(f"{b}/{k}") for k in keys(server, b) if k.startswith("out/")}
    server.trap("PUT", f"{b}/out/.preds.staging-", nth=2, times=None, hold=False, status="403 Forbidden",
                body=ACCESS_DENIED)
    assert run(server, *fit, "--n-components", 3, scheduler=scheduler) == 1
    err = capsys.readouterr().err
    assert f"cannot write output s3://{b}/out/preds" in err, err
    server.clear_traps()
    fs = server.fs()
    assert {k: fs.cat_file(f"{b}/{k}") for k in keys(server, b) if k.startswith("out/")} == before
    assert_nothing_left(server, b)

    # and a job that succeeds replaces both, leaving no object of the old ones
    assert run(server, *fit, "--n-components", 3, "--proba", scheduler=scheduler) == 0
    est = daskgmm.load(f"s3://{b}/out/model", storage_options=server.storage_options)
    assert est.n_components == 3
    assert_predictions_of(server, b, "out/preds", est, X, ["id", "label", "proba_0", "proba_1", "proba_2"])
    assert_nothing_left(server, b)


def test_hive_partition_keys_of_s3_paths_are_columns(s3, tmp_path):
    """The partitioned layout on S3 (s3://bucket/ev/day=.../hour=.../part-0.parquet) reads as on disk:
    the keys are columns to name, from the whole prefix or a glob of partitions."""
    import pyarrow as pa
    import pyarrow.dataset as pads

    server, b = s3
    t = pa.table({"a": np.arange(4.0), "day": ["2026-12-01"] * 2 + ["2026-12-02"] * 2, "hour": [3, 3, 7, 7]})
    pads.write_dataset(t, tmp_path / "ev", format="parquet", partitioning=["day", "hour"], partitioning_flavor="hive")
    server.fs().put(str(tmp_path / "ev") + "/", f"{b}/ev/", recursive=True)
    opts = server.storage_options
    x, ids = daskgmm.read_parquet(f"s3://{b}/ev", columns=["a", "hour"], id_column="day", storage_options=opts)
    assert sorted(zip(np.asarray(x)[:, 0], np.asarray(x)[:, 1], np.asarray(ids))) == [
        (0, 3, "2026-12-01"), (1, 3, "2026-12-01"), (2, 7, "2026-12-02"), (3, 7, "2026-12-02")]
    x, ids = daskgmm.read_parquet(f"s3://{b}/ev/day=*/hour=7", columns=["a", "hour"], id_column="day",
                                  storage_options=opts)
    assert sorted(zip(np.asarray(x)[:, 0], np.asarray(x)[:, 1], np.asarray(ids))) == [
        (2, 7, "2026-12-02"), (3, 7, "2026-12-02")]
    with pytest.raises(daskgmm.DataError, match=rf"s3://{b}/ev/day=2026-12-01/hour=3/part-0.parquet: column 'day' "
                       "is a partition key in the path"):
        daskgmm.read_parquet(f"s3://{b}/ev", columns=["a", "day"], storage_options=opts)
    # the partitions rewritten by another process (its own s3fs): this one listed them with the old objects'
    # ETags, and read nothing ("…/part-0.parquet: not a readable Parquet file (FileExpired …)"; user-trial-r13,
    # a session reading partitioned data again after the nightly job rewrote it)
    pads.write_dataset(t.set_column(0, "a", pa.array(np.arange(4.0) + 10)), tmp_path / "ev2", format="parquet",
                       partitioning=["day", "hour"], partitioning_flavor="hive")
    server.fs().put(str(tmp_path / "ev2") + "/", f"{b}/ev/", recursive=True)
    x, _ = daskgmm.read_parquet(f"s3://{b}/ev", columns=["a", "hour"], id_column="day", storage_options=opts)
    assert sorted(np.asarray(x)[:, 0]) == [10, 11, 12, 13]


def test_bad_data_on_s3_is_named_by_its_url(bucket, scheduler, capsys, tmp_path):
    """Errors, ids and checkpoints name an object as the user does: s3://bucket/key, not bucket/key."""
    server, b, _ = bucket
    write_data(tmp_path / "bad", n=300, nan_row=107)
    server.fs().put(str(tmp_path / "bad") + "/", f"{b}/bad/", recursive=True)
    assert run(server, "fit", f"s3://{b}/bad", *COLS, "--model-out", f"s3://{b}/m", scheduler=scheduler) == 2
    err = capsys.readouterr().err
    assert f"s3://{b}/bad/" in err, err


def test_array_options_read_objects_with_the_jobs_storage_options(s3, tmp_path, monkeypatch, capsys):
    """A scheduled job keeps its init arrays on its store: --means-init s3://... is read with the job's
    storage options, of the flag or of the config (whichever line of it they are on); a missing object or
    bucket, or bad contents, is exit 2 naming the URL, before any cluster starts."""
    import yaml

    from daskgmm.cli.args import build_parser, resolve

    server, b = s3
    for k in server.env():  # s3_env's, set by this module's earlier tests: the storage options alone reach it
        monkeypatch.delenv(k, raising=False)
    fs, means = server.fs(), np.array([[0.0, 1.5], [5.0, 1e-3]])
    with fs.open(f"{b}/init/m.npy", "wb") as f:
        np.save(f, means)
    fs.pipe({f"{b}/init/m.csv": b"0,1.5\n5,1e-3\n", f"{b}/init/m.json": b"[[0, 1.5], [5, 0.001]]",
             f"{b}/init/bad.npy": b"not an array"})
    fit = ["fit", "d", "--model-out", str(tmp_path / "m")]
    for name in ("m.npy", "m.csv", "m.json"):
        o = resolve(build_parser().parse_args([*fit, "--means-init", f"s3://{b}/init/{name}",
                                               "--storage-options", so(server)]))
        np.testing.assert_array_equal(o.means_init, means)
    cfg = tmp_path / "job.yaml"
    cfg.write_text(yaml.safe_dump({"means_init": f"s3://{b}/init/m.npy", "storage_options": server.storage_options},
                                  sort_keys=False))
    np.testing.assert_array_equal(resolve(build_parser().parse_args([*fit, "--config", str(cfg)])).means_init, means)

    gone = f"daskgmm-missing-{b[-8:]}"
    for url, why in [(f"s3://{b}/init/gone.npy", "cannot read {url}: No such file or directory"),
                     (f"s3://{gone}/m.npy", "cannot read {url}: No such file or directory"),
                     (f"s3://{b}/init/bad.npy", "{url}: not a readable .npy array of numbers")]:
        assert run(server, *fit, "--means-init", url) == 2, url
        err = capsys.readouterr().err
        assert f"daskgmm: error: --means-init: means_init: {why.format(url=url)}" in err, err
        assert "cluster" not in err
    assert gone not in fs.ls("")


@pytest.fixture
def silent_endpoint():
    """An "S3 endpoint" on 127.0.0.1 that accepts every connection and never answers (a store
    or proxy gone silent); counts the connections made to it."""
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.settimeout(0.2)  # close() does not wake a blocked accept(): the thread looks at stop
    held, stop = [], threading.Event()

    def accept():
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", held
    stop.set()
    sock.close()
    for conn in held:
        conn.close()
    thread.join(5)


def test_silent_endpoint_fails_within_a_bound(silent_endpoint):
    """A store that stops answering fails a request after s3fs's 5 tries of 2 attempts, not after
    5 tries of botocore's 5 attempts each (25 timeouts: 15 s each by default, ~7 min, seen as a hung
    nightly job). The read timeout is shortened here through the options an operator may
    give; the number of attempts is daskgmm's default."""
    from daskgmm.io.files import get_fs

    endpoint, held = silent_endpoint
    fs = get_fs("s3://lake/events/", {"endpoint_url": endpoint, "key": "k", "secret": "s",
                                      "config_kwargs": {"read_timeout": 0.2, "connect_timeout": 1}})
    start = time.monotonic()
    with pytest.raises(Exception, match=r"(?i)timeout"):
        fs.ls("lake/events/", refresh=True)
    elapsed = time.monotonic() - start
    assert len(held) <= 10, f"{len(held)} attempts"
    assert elapsed < 9, f"{elapsed:.1f} s"


@pytest.mark.timeout(60)  # unbounded, the write waits for ever
def test_a_write_to_a_silent_endpoint_fails_within_a_bound(silent_endpoint, monkeypatch):
    """botocore sends every PUT with "Expect: 100-continue" and aiohttp arms its read timeout only once the
    body is sent: a store gone silent held a write (a checkpoint, a lock's refresh, a part) for ever, where
    a read failed within the bound (user-trial-r12: a fit stopped at its checkpoint write for 10 minutes,
    until killed). daskgmm's filesystems send writes without it, and the read timeout bounds them."""
    import s3fs

    from daskgmm.io.files import get_fs

    monkeypatch.setattr(s3fs.S3FileSystem, "retries", 1)  # one try: the request's own bound is what is tested
    endpoint, _ = silent_endpoint
    fs = get_fs("s3://lake/out/", {"endpoint_url": endpoint, "key": "k", "secret": "s",
                                   "config_kwargs": {"read_timeout": 0.05, "connect_timeout": 1,
                                                     "retries": {"total_max_attempts": 1}}})
    start = time.monotonic()
    with pytest.raises(Exception, match=r"(?i)timeout") as err:
        fs.pipe_file("lake/out/checkpoint.npz", b"0" * 1000)
    assert time.monotonic() - start < 10, f"{time.monotonic() - start:.1f} s"
    # the command says what it means, not botocore's words alone
    from daskgmm.cli import EXIT_FAILURE, _fail

    metrics: dict = {}
    _fail(metrics, err.value, EXIT_FAILURE)
    assert metrics["error"].startswith("Read timeout on endpoint URL") and "checkpoint.npz" in metrics["error"]
    assert "the object store stopped answering" in metrics["error"] and "--resume" in metrics["error"]


@pytest.mark.timeout(60)
def test_a_filesystem_made_before_daskgmm_bounds_its_writes_once_daskgmm_takes_it(silent_endpoint):
    """fsspec hands out one instance per set of options: a filesystem with daskgmm's options whose client was made
    before daskgmm touched S3 in the process (before it changed how botocore's sessions are made) is the one
    ``get_fs`` returns. Its writes to a silent store are bounded from then on too. In a process of its own: the
    change to new sessions lasts the process."""
    endpoint, _ = silent_endpoint
    script = f"""
import copy, time, s3fs
s3fs.S3FileSystem.retries = 1
options = {{"endpoint_url": "{endpoint}", "key": "k", "secret": "s",  # every bound given: daskgmm adds none
           "config_kwargs": {{"read_timeout": 0.05, "connect_timeout": 1, "retries": {{"total_max_attempts": 1}}}}}}
early = s3fs.S3FileSystem(**copy.deepcopy(options))
early.connect()
from daskgmm.io.files import get_fs

fs = get_fs("s3://lake/out/", options)
assert fs is early and options["config_kwargs"]["retries"] == {{"total_max_attempts": 1}}
start = time.monotonic()
try:
    fs.pipe_file("lake/out/checkpoint.npz", b"0" * 1000)
except Exception as exc:
    print("failed after", round(time.monotonic() - start, 1), type(exc).__name__)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.startswith("failed after"), (out.stdout, out.stderr[-2000:])


def test_a_misspelled_storage_option_is_a_usage_error_naming_it(bucket, tmp_path, capsys):
    """user-trial-ops-r18: --storage-options '{"endpoint": ...}' (for endpoint_url) ended the job with "TypeError:
    AioSession.__init__() got an unexpected keyword argument 'endpoint'", exit 1, once the first request was made.
    An unknown key is bad usage (exit 2, before any cluster starts), named with the one meant; from a config too."""
    from .conftest import expect_exit2

    server, b, _ = bucket
    wrong = {**{k: v for k, v in server.storage_options.items() if k != "endpoint_url"},
             "endpoint": server.storage_options["endpoint_url"]}
    expect_exit2(["info", "--model", f"s3://{b}/model", "--storage-options", json.dumps(wrong)],
                 "--storage-options: unknown option 'endpoint' for s3:// (did you mean 'endpoint_url'?", capsys)
    config = tmp_path / "job.yaml"
    config.write_text(f"data: s3://{b}/data\nmodel_out: {tmp_path}/model\nstorage_options: {json.dumps(wrong)}\n")
    expect_exit2(["fit", "--config", str(config), *COLS, "--no-processes"],
                 f"--storage-options ('storage_options' in {config}): unknown option 'endpoint'", capsys)
    assert not (tmp_path / "model").exists()


def test_a_profile_that_no_file_holds_is_bad_usage_naming_the_path(bucket, tmp_path, capsys):
    """user-trial-ops-r18: a profile of the storage options (or AWS_PROFILE) that ~/.aws does not hold ended the
    job with "ProfileNotFound: The config profile (…) could not be found", exit 1, naming neither the path nor
    where the profile came from. It is credentials the job cannot have, as none at all: exit 2, named."""
    from .conftest import expect_exit2

    server, b, _ = bucket
    profile = f"no-such-profile-{os.getpid()}"
    options = json.dumps({**server.storage_options, "profile": profile})
    expect_exit2(["fit", f"s3://{b}/data", *COLS, "--model-out", str(tmp_path / "m"), "--storage-options", options,
                  "--no-processes"], f"'s3://{b}/data': cannot list or read it (The config profile ({profile}) "
                 "could not be found: name a profile that ~/.aws/config", capsys)
    expect_exit2(["info", "--model", f"s3://{b}/model", "--storage-options", options],
                 f"s3://{b}/model: cannot read the model (The config profile ({profile})", capsys)


def test_operator_retries_are_kept():
    """Retries and timeouts an operator sets in --storage-options win over daskgmm's bounds, which
    apply otherwise."""
    from daskgmm.io.files import get_fs

    fs = get_fs("s3://lake/x", {"endpoint_url": "http://127.0.0.1:9", "key": "k", "secret": "s",
                                "config_kwargs": {"retries": {"max_attempts": 9}, "read_timeout": 60}})
    assert fs.config_kwargs == {"retries": {"max_attempts": 9}, "read_timeout": 60}
    fs = get_fs("s3://lake/y", {"endpoint_url": "http://127.0.0.1:9", "key": "k", "secret": "s"})
    request = fs.config_kwargs["read_timeout"] * fs.config_kwargs["retries"]["total_max_attempts"] * fs.retries
    assert request <= 30 and request * fs.retries <= 60  # a ranged read is tried fs.retries times over


def test_the_callers_options_are_not_changed_and_name_one_filesystem():
    """botocore writes a "mode" into the ``retries`` of the options its client is made from: daskgmm's bounded options
    are a copy to their depth, so that the caller's (a config's, handed on to every worker) stay as given and the
    same options name the same filesystem on the next call."""
    from daskgmm.io.files import get_fs

    options = {"endpoint_url": "http://127.0.0.1:9", "key": "k", "secret": "s",
               "config_kwargs": {"retries": {"total_max_attempts": 2}}}
    fs = get_fs("s3://lake/z", options)
    fs.connect()  # makes the client; no request
    assert options["config_kwargs"] == {"retries": {"total_max_attempts": 2}}
    assert get_fs("s3://lake/z", options) is fs


@pytest.fixture
def forget_silence():
    """A silent store seen by a test is not one of the next test's (the command forgets it; Python does not)."""
    from daskgmm.io.files import forget_silence

    yield
    forget_silence()


@pytest.mark.timeout(60)
def test_a_store_gone_silent_fails_the_job_within_one_deadline(bucket, scheduler, monkeypatch, capsys, forget_silence):
    """user-trial-r12: the S3 server stopped (SIGSTOP) in the middle of a fit; the job failed after 230 s, not
    "about a minute": after the checkpoint write that found the store silent (~55 s), releasing each lock and
    writing --metrics-out each waited the same bound again. Now what is still done on the store shares one
    deadline (two read timeouts from the failure) and what does not fit is named, left for the next job: exit
    1, nothing complete in the outputs. Bounds shrunk through the storage options (one try of 0.5 s) and the
    deadline to one read timeout: before, the clean-up took ~5 read timeouts more."""
    import s3fs

    from daskgmm.io import files

    server, b, _ = bucket
    monkeypatch.setattr(s3fs.S3FileSystem, "retries", 1)  # one try of s3fs's (a class attribute)
    monkeypatch.setattr(files, "SILENT_CLEANUP_TIMEOUTS", 1)
    options = {**server.storage_options,
               "config_kwargs": {"read_timeout": 0.5, "retries": {"total_max_attempts": 1}}}
    silent = server.trap("PUT", f"{b}/ck/checkpoint.npz", silence=True)  # the first checkpoint write, then all
    status = main(["fit", f"s3://{b}/data", *COLS, "--n-components", "2", "--model-out", f"s3://{b}/out/model",
                   "--predictions-out", f"s3://{b}/out/preds", "--checkpoint-dir", f"s3://{b}/ck", "--metrics-out",
                   f"s3://{b}/out/metrics.json", "--storage-options", json.dumps(options), "--scheduler", scheduler,
                   "--quiet"])
    after = time.monotonic() - silent.at if silent.at is not None else None
    err = capsys.readouterr().err
    server.clear_traps()
    assert status == 1, err
    assert "the object store stopped answering" in err, err
    # the failed write (0.5 s), then at most the deadline (0.5 s), and the client's goodbye to the scheduler
    assert after is not None and after < 2.0, f"{after} s after the store went silent\n{err}"
    locks = [f"s3://{b}/out/.model.lock", f"s3://{b}/out/.preds.lock"]
    assert "left on it for the next job (or you) to remove:" in err and all(k in err for k in locks), err
    assert f"--metrics-out s3://{b}/out/metrics.json not written: the object store did not answer" in err, err
    left = keys(server, b)
    assert not [k for k in left if k.startswith("out/") and not k.startswith("out/.")], left  # nothing complete
    server.fs().rm([k.removeprefix("s3://") for k in locks if k.removeprefix(f"s3://{b}/") in left])
    assert_nothing_left(server, b)


@pytest.mark.timeout(60)
def test_a_workers_read_of_a_silent_store_makes_a_bounded_number_of_requests(bucket, scheduler, forget_silence):
    """s3fs tries a ranged read (a Parquet file's bytes) as many times again as it tries each call it makes (its
    ``retries``, 5): 25 tries of botocore's attempts, where the rest of its requests make 5 (daskgmm's bounds then:
    25 tries x 2 attempts x 5 s, which fits user-trial-ops-r18's 281 s for a store gone silent during reads), and
    made the test below wait 5 tries or 25, by whether the silence met a file's metadata or its bytes.
    A worker's read now makes S3_TRIES² requests (4), each of botocore's attempts."""
    from distributed import Client

    from daskgmm.io import files
    from daskgmm.io.parquet import open_parquet

    server, b, _ = bucket
    options = {**server.storage_options, "config_kwargs": {"read_timeout": 0.3, "retries": {"total_max_attempts": 1}}}
    src = open_parquet(f"s3://{b}/data", columns=["f0", "f1"], storage_options=options, chunk_rows=100)
    silent = server.trap("GET", f"{b}/data/", silence=True)  # the footer's read in the worker, and all after it
    with Client(scheduler) as client:
        with pytest.raises(Exception, match="Read timeout on endpoint URL"):
            client.compute(src.X[:10]).result(timeout=50)
    server.clear_traps()
    assert silent.held == files.S3_TRIES ** 2, silent.held


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_store_gone_silent_during_reads_fails_the_pass_at_its_first_chunk(bucket, scheduler, monkeypatch, capsys,
                                                                           forget_silence):
    """user-trial-ops-r18: the S3 server stopped (SIGSTOP) in the middle of a fit reading DATA every pass (on a
    `dask scheduler` with two workers): the job ended after 281 s, exit 2, "reading row group 0 rows 0-125000
    failed (ReadTimeoutError ...)", and left its locks unnamed. The workers' read error became a DataError (bad
    input, and the client no longer saw a silent store), and the pass waited for every chunk to fail in turn (a
    round of ~55 s per chunk a worker thread had). Now: exit 1, the silent store's message, within about one
    chunk's bound (here 5 tries of 0.5 s in the worker, which keeps s3fs's retries), not six rounds of it."""
    from daskgmm.io import files

    server, b, _ = bucket
    monkeypatch.setattr(files, "SILENT_CLEANUP_TIMEOUTS", 1)
    options = {**server.storage_options,
               "config_kwargs": {"read_timeout": 0.5, "retries": {"total_max_attempts": 1}}}
    # footers read first; then 12 chunks a pass, each read by its task: the store goes silent a few passes in
    silent = server.trap("GET", f"{b}/data/", nth=60, silence=True)
    status = main(["fit", f"s3://{b}/data", *COLS, "--n-components", "2", "--model-out", f"s3://{b}/out/model",
                   "--cache", "none", "--chunk-rows", "250", "--max-iter", "500", "--tol", "0",
                   "--storage-options", json.dumps(options), "--scheduler", scheduler, "--quiet"])
    after = time.monotonic() - silent.at if silent.at is not None else None
    err = capsys.readouterr().err
    server.clear_traps()
    assert status == 1, err
    assert "the object store stopped answering" in err and f"{b}/data/part-" in err, err
    # one chunk's reads (4 tries of 0.5 s, ~2.5 s with s3fs's pauses) and the deadline; before, 6 rounds of them,
    # or a read's 25 tries (~22 s)
    assert after is not None and after < 8.0, f"{after} s after the store went silent\n{err}"
    assert f"s3://{b}/out/.model.lock" in err or f"s3://{b}/out/.model.lock" not in keys(server, b), err
    if [k for k in keys(server, b) if k.startswith("out/")]:
        server.fs().rm(f"{b}/out", recursive=True)
    assert_nothing_left(server, b)


@pytest.mark.timeout(60)
def test_a_staging_left_on_a_store_gone_unreachable_is_named(monkeypatch, forget_silence):
    """An S3 endpoint gone in the middle of a write (connection refused: a server killed, which may come back
    with its objects): the write fails, and the staging and the lock the clean-up could not remove are named
    (io.files.left_behind), as on a silent store; they were passed over in silence (user-trial-ops-r18)."""
    import uuid

    import s3fs

    from daskgmm.io import files
    from daskgmm.io.outputs import staged_directory

    from .s3_server import S3Server

    monkeypatch.setattr(s3fs.S3FileSystem, "retries", 1)
    server = S3Server()
    try:
        b = f"daskgmm-{uuid.uuid4().hex[:12]}"
        server.fs().mkdir(b)
        options = {**server.storage_options, "skip_instance_cache": True,
                   "config_kwargs": {"connect_timeout": 1, "retries": {"total_max_attempts": 1}}}
        with pytest.raises(Exception) as err, staged_directory(f"s3://{b}/out/preds", options) as (fs, staging):
            fs.pipe_file(f"{staging}/part-00000.parquet", b"rows")
            server.close()  # connections refused from here on
            fs.pipe_file(f"{staging}/part-00001.parquet", b"rows")
    finally:
        server.close()
    assert files.unreachable(err.value) or files.unreachable(err.value.__cause__ or err.value.__context__), err.value
    left = files.left_behind()
    assert [x.split(" ")[0] for x in left] == [f"s3://{staging}/", f"s3://{b}/out/.preds.lock"], left


@pytest.mark.timeout(60)
def test_a_staging_left_on_a_silent_store_is_named_and_never_complete(s3, monkeypatch, forget_silence):
    """In Python as in the command: a store that stops answering while an output is staged fails the write
    once, then removing the staging and releasing the lock share the deadline (one read timeout here);
    what is left is named (io.files.left_behind), and nothing of it is a complete output."""
    import s3fs

    from daskgmm.io import files
    from daskgmm.io.outputs import staged_directory

    server, b = s3
    monkeypatch.setattr(s3fs.S3FileSystem, "retries", 1)
    monkeypatch.setattr(files, "SILENT_CLEANUP_TIMEOUTS", 1)
    options = {**server.storage_options,
               "config_kwargs": {"read_timeout": 0.5, "retries": {"total_max_attempts": 1}}}
    silent = server.trap("PUT", f"{b}/out/.preds.staging-", nth=2, silence=True)
    with pytest.raises(OSError) as err, staged_directory(f"s3://{b}/out/preds", options) as (fs, staging):
        fs.pipe_file(f"{staging}/part-00000.parquet", b"rows")
        fs.pipe_file(f"{staging}/part-00001.parquet", b"rows")  # the store stops answering
    after = time.monotonic() - silent.at
    server.clear_traps()
    assert files.store_silent(err.value), err.value
    assert after < 1.5, f"{after:.1f} s after the store went silent"  # the write's 0.5 s, the deadline's 0.5 s
    left = files.left_behind()
    assert [x.split(" ")[0] for x in left] == [f"s3://{staging}/", f"s3://{b}/out/.preds.lock"], left
    assert "the next job writing it removes it" in left[0] and "the next job takes it over" in left[1], left
    assert keys(server, b) == sorted([f"{staging[len(b) + 1:]}/part-00000.parquet", "out/.preds.lock"])  # no _SUCCESS
