"""Spark ML model directories: ``export_spark_model`` writes what pyspark's ``GaussianMixtureModel.load`` and
``KMeansModel.load`` read, laid out as Spark writes it (the directories in tests/data/spark, saved by pyspark
4.3.0 with ``scripts/make_spark_models.py``), and ``read_spark_model`` reads Spark's directories back as
starting values. The round trip through real pyspark is the slow test at the end."""

import json
import pathlib
import re
import shutil
import subprocess

import numpy as np
import pyarrow.parquet as pq
import pytest

import daskgmm
from daskgmm.cli import main

DATA = pathlib.Path(__file__).parent / "data"
SPARK = DATA / "spark"
MODELS = DATA / "models"
EXPECTED = json.loads((SPARK / "expected.json").read_text())
ROW_METADATA = b"org.apache.spark.sql.parquet.row.metadata"


def _rows(n=60):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 3))
    X[n // 2:] = X[n // 2:] * [1.0, 2.0, 0.5] + [5.0, 5.0, 1.0]
    return X


def _parts(model_dir, sub):
    """The files Spark reads in ``sub`` (metadata or data): not hidden, not ``_SUCCESS``."""
    return sorted(p for p in (model_dir / sub).iterdir() if not p.name.startswith(("_", ".")))


def _metadata(model_dir):
    (part,) = _parts(model_dir, "metadata")
    lines = part.read_text().splitlines()
    assert len(lines) == 1  # one JSON line, as Spark's text reader takes the first
    return json.loads(lines[0])


def _data(model_dir):
    (part,) = _parts(model_dir, "data")
    return pq.ParquetFile(part)


@pytest.mark.parametrize("kind", ["gmm", "kmeans"])
def test_export_is_laid_out_as_spark_writes_it(tmp_path, kind):
    """The Parquet schema (types, nullability, list layout), Spark's schema in the footer (its UDTs), and
    the metadata line are Spark's own, so any Spark that reads its own model reads this one."""
    est = daskgmm.load(MODELS / kind)
    daskgmm.export_spark_model(est, tmp_path / "out")
    ours, theirs = tmp_path / "out", SPARK / kind
    assert (ours / "metadata" / "_SUCCESS").exists() and (ours / "data" / "_SUCCESS").exists()
    a, b = _data(ours), _data(theirs)
    # the Parquet schema, repetition and annotations included (below its root, which only Spark names)
    assert str(a.schema).splitlines()[2:] == str(b.schema).splitlines()[2:]
    assert a.schema_arrow.remove_metadata().equals(b.schema_arrow.remove_metadata(), check_metadata=False)
    for field_a, field_b in zip(a.schema_arrow, b.schema_arrow):  # nullability, to the innermost field
        assert field_a.type == field_b.type and field_a.nullable == field_b.nullable
    keys = a.metadata.metadata
    assert json.loads(keys[ROW_METADATA]) == json.loads(b.metadata.metadata[ROW_METADATA])
    assert b"ARROW:schema" not in keys  # Spark's footer keys only
    assert a.metadata.num_rows == (1 if kind == "gmm" else est.n_clusters)
    mine, spark = _metadata(ours), _metadata(theirs)
    assert mine["class"] == spark["class"]
    assert {"class", "timestamp", "sparkVersion", "uid", "paramMap", "defaultParamMap"} <= set(mine)
    assert mine["uid"].split("_")[0] == spark["uid"].split("_")[0] and len(mine["uid"]) == len(spark["uid"])
    # defaults Spark 3.5 and 4.x both know (4.3 writes more, which 3.5 could not set)
    assert set(mine["defaultParamMap"]) <= set(spark["defaultParamMap"])
    assert {k: v for k, v in spark["defaultParamMap"].items() if k in mine["defaultParamMap"]} == \
        mine["defaultParamMap"]
    assert mine["paramMap"]["k"] == (est.n_components if kind == "gmm" else est.n_clusters)
    names = getattr(est, "feature_names_in_", None)  # the order the features vector must follow
    assert mine["daskgmm"].get("columns") == (None if names is None else list(names))


def test_import_reads_sparks_models():
    gm = daskgmm.read_spark_model(SPARK / "gmm")
    e = EXPECTED["gmm"]
    assert set(gm) == {"n_components", "weights_init", "means_init", "precisions_init"}
    assert gm["n_components"] == 2
    np.testing.assert_array_equal(gm["weights_init"], e["weights"])
    np.testing.assert_array_equal(gm["means_init"], e["means"])
    np.testing.assert_allclose(np.linalg.inv(gm["precisions_init"]), e["covariances"], rtol=1e-12, atol=1e-14)
    km = daskgmm.read_spark_model(SPARK / "kmeans")
    assert km["n_clusters"] == 2
    np.testing.assert_array_equal(km["init"], EXPECTED["kmeans"]["centers"])


def test_imported_starts_give_sparks_predictions():
    """The arrays read are Spark's model: daskgmm's estimators started from them (no iteration) label and
    weigh rows as Spark did."""
    e = EXPECTED["gmm"]
    gm = daskgmm.GaussianMixture(**daskgmm.read_spark_model(SPARK / "gmm"), max_iter=0).fit(_rows())
    np.testing.assert_allclose(gm.predict_proba(np.array(e["rows"])), e["probability"], rtol=1e-9, atol=1e-12)
    assert gm.predict(np.array(e["rows"])).tolist() == e["prediction"]
    km = daskgmm.read_spark_model(SPARK / "kmeans")
    d = ((np.asarray(EXPECTED["kmeans"]["rows"])[:, None] - km["init"][None]) ** 2).sum(-1)
    assert d.argmin(1).tolist() == EXPECTED["kmeans"]["prediction"]


def test_a_spark_models_full_precisions_given_to_another_type_name_the_remedy():
    """read_spark_model returns full precisions unless told the type: given to a diag mixture, the error says
    scikit-learn's sentence, then whose shape that is and what to pass."""
    start = daskgmm.read_spark_model(SPARK / "gmm")
    with pytest.raises(ValueError, match=r"^The parameter 'diag precision' should have the shape of \(\d+, \d+\), "
                       r"but got \(\d+, \d+, \d+\): 'full' precisions have that shape, not 'diag' ones; a Spark "
                       r"model's precisions read by read_spark_model\(path\) are full: pass it "
                       r"covariance_type='diag' too$"):
        daskgmm.GaussianMixture(covariance_type="diag", **start, max_iter=0).fit(_rows())
    daskgmm.GaussianMixture(covariance_type="diag", max_iter=0,
                            **daskgmm.read_spark_model(SPARK / "gmm", covariance_type="diag")).fit(_rows())


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_every_covariance_type_exports_as_full_matrices(tmp_path, covariance_type):
    from daskgmm.kernels.covariance import component_covariance

    X = _rows()
    gm = daskgmm.GaussianMixture(2, covariance_type=covariance_type, max_iter=3, random_state=0).fit(X)
    daskgmm.export_spark_model(gm, str(tmp_path / "m"))
    back = daskgmm.read_spark_model(str(tmp_path / "m"))
    np.testing.assert_array_equal(back["weights_init"], gm.weights_)
    np.testing.assert_array_equal(back["means_init"], gm.means_)
    full = [component_covariance(gm.covariances_, covariance_type, k, 3) for k in range(2)]
    np.testing.assert_allclose(np.linalg.inv(back["precisions_init"]), full, rtol=1e-10)
    # the starts are the estimator's own: a fit from them takes them
    again = daskgmm.GaussianMixture(**back, max_iter=0, reg_covar=0.0).fit(X)
    np.testing.assert_allclose(again.means_, gm.means_, rtol=1e-9)


def test_export_replaces_the_directory_whole(tmp_path):
    """Written as daskgmm's other outputs: a second export replaces the first, nothing left beside it."""
    out = tmp_path / "m"
    daskgmm.export_spark_model(daskgmm.load(MODELS / "gmm"), out)
    daskgmm.export_spark_model(daskgmm.load(MODELS / "kmeans"), out)
    assert _metadata(out)["class"] == "org.apache.spark.ml.clustering.KMeansModel"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    assert (out / "_SUCCESS").exists()


@pytest.mark.parametrize("kind,name", [("bgmm", "BayesianGaussianMixture"), ("kmedoids", "KMedoids"),
                                       ("studentt", "StudentTMixture")])
def test_models_spark_cannot_hold_are_refused(tmp_path, capsys, kind, name):
    with pytest.raises(daskgmm.ModelFileError, match=f"{name}.*Spark ML has no such model"):
        daskgmm.export_spark_model(daskgmm.load(MODELS / kind), tmp_path / "m")
    assert not (tmp_path / "m").exists()
    assert main(["export", "--model", str(MODELS / kind), "--out", str(tmp_path / "m"), "--quiet"]) == 2
    assert name in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_one_component_is_refused(tmp_path, capsys):
    """Spark ML's k must be above 1, and its loader checks it: a one-component export was written, and pyspark
    4.3's load failed on it ("GaussianMixture_… parameter k given invalid value 1", user-trial-r13)."""
    X = _rows()
    for est in (daskgmm.GaussianMixture(1, random_state=0).fit(X), daskgmm.KMeans(1, random_state=0).fit(X)):
        with pytest.raises(daskgmm.ModelFileError, match=f"cannot export a {type(est).__name__} of 1 .*k must be "
                           "above 1"):
            daskgmm.export_spark_model(est, tmp_path / "m")
        assert not (tmp_path / "m").exists()
    est.save(tmp_path / "km1")
    assert main(["export", "--model", str(tmp_path / "km1"), "--out", str(tmp_path / "m"), "--quiet"]) == 2
    assert "KMeansModel.load refuses k = 1" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_unfitted_estimator_is_refused(tmp_path):
    with pytest.raises(daskgmm.NotFittedError):
        daskgmm.export_spark_model(daskgmm.GaussianMixture(2), tmp_path / "m")


def test_command_exports_a_saved_model(tmp_path, capsys):
    out = tmp_path / "spark"
    assert main(["export", "--model", str(MODELS / "kmeans"), "--out", str(out)]) == 0
    assert _metadata(out)["class"] == "org.apache.spark.ml.clustering.KMeansModel"
    assert "KMeansModel" in capsys.readouterr().err
    centres = daskgmm.load(MODELS / "kmeans").cluster_centers_
    np.testing.assert_array_equal(daskgmm.read_spark_model(out)["init"], centres)
    # its output may not replace the model it reads, nor lie inside it (a save over the model would take it)
    assert main(["export", "--model", str(MODELS / "kmeans"), "--out", str(MODELS)]) == 2


@pytest.mark.parametrize("where", ["is", "inside", "holds"])
@pytest.mark.parametrize("root", ["local", "s3"])
def test_export_refuses_an_output_at_inside_or_above_its_model(tmp_path, capsys, where, root):
    """Exit 2 naming both paths, before anything is written or read (an s3:// model: no store is reached)."""
    model = str(tmp_path / "model") if root == "local" else "s3://no-such-bucket-daskgmm/models/model"
    if root == "local":
        shutil.copytree(MODELS / "kmeans", model)
    out = {"is": model, "inside": model + "/spark", "holds": model.rsplit("/", 1)[0]}[where]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main(["export", "--model", model, "--out", out, "--quiet"]) == 2
    err = capsys.readouterr().err
    relation = {"is": "is", "inside": "is inside", "holds": "holds"}[where]
    assert f"--out {out} {relation} the input --model {model}" in err, err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_a_signal_in_the_middle_of_a_commit_says_the_next_job_finishes_it(capsys, monkeypatch):
    """SIGTERM after the commit point of an object store (journal written, the old objects deleted, the new ones
    not all copied in) said "terminated (SIGTERM): stopped, no output written" (user-trial-r13, on moto's S3),
    as if the old export stood. It says the commit is left to the next job; readers refuse the export until
    then, and the next export finishes it first. (fsspec's memory store: committed as S3 is, without locks.)"""
    import os
    import signal
    import time
    import uuid

    import fsspec

    fs = fsspec.filesystem("memory")
    bucket = f"r13-{uuid.uuid4().hex[:12]}"
    out = f"memory://{bucket}/spark"
    assert main(["export", "--model", str(MODELS / "gmm"), "--out", out, "--quiet"]) == 0
    copy = type(fs).copy

    def copy_then_sigterm(self, *args, **kwargs):  # the first copy lands, then the signal
        monkeypatch.setattr(type(fs), "copy", copy)
        copy(self, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises here

    monkeypatch.setattr(type(fs), "copy", copy_then_sigterm)
    try:
        assert main(["export", "--model", str(MODELS / "kmeans"), "--out", out, "--quiet"]) == 143
        err = capsys.readouterr().err
        assert re.search(f"terminated \\(SIGTERM\\) in the middle of committing memory:///?{bucket}/spark: the commit "
                         "was decided", err), err
        assert "no output written" not in err
        with pytest.raises(daskgmm.ModelFileError, match="incomplete"):
            daskgmm.read_spark_model(out)
        assert main(["export", "--model", str(MODELS / "gmm"), "--out", out, "--quiet"]) == 0
        assert daskgmm.read_spark_model(out)["n_components"] == daskgmm.load(MODELS / "gmm").n_components
        left = [p for p in fs.find(f"/{bucket}") if not p.startswith(f"/{bucket}/spark/")]
        assert not left, left  # no journal or staging left
    finally:
        fs.rm(f"/{bucket}", recursive=True)


def test_import_names_what_it_cannot_read(tmp_path):
    with pytest.raises(daskgmm.ModelFileError, match="no Spark ML model here"):
        daskgmm.read_spark_model(tmp_path)
    ours = r"no Spark ML model here .*; it is a daskgmm model: daskgmm\.load"
    with pytest.raises(daskgmm.ModelFileError, match=ours):
        daskgmm.read_spark_model(MODELS / "gmm")
    shutil.copytree(SPARK / "kmeans", tmp_path / "m")
    meta = _parts(tmp_path / "m", "metadata")[0]
    meta.write_text(meta.read_text().replace("clustering.KMeansModel", "clustering.BisectingKMeansModel"))
    with pytest.raises(daskgmm.ModelFileError, match=r"BisectingKMeansModel.*GaussianMixtureModel or KMeansModel"):
        daskgmm.read_spark_model(tmp_path / "m")


def _resolve(*argv):
    from daskgmm.cli.args import build_parser, resolve

    return resolve(build_parser().parse_args(["fit", "data", "--model-out", "m", *argv]))


@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical", "tied"])
def test_fit_init_spark_gives_the_models_starts_in_the_covariance_type(covariance_type):
    """``fit --init-spark DIR``: a GaussianMixtureModel's weights and means, and the precisions of its covariances
    as an M-step of the covariance type makes them (their diagonals, mean variances, weighted mean); K from it."""
    e = EXPECTED["gmm"]
    o = _resolve("--init-spark", str(SPARK / "gmm"), "--covariance-type", covariance_type)
    assert o.n_components == 2
    np.testing.assert_allclose(o.weights_init, e["weights"], rtol=1e-15)
    np.testing.assert_allclose(o.means_init, e["means"], rtol=1e-15)
    cov = np.asarray(e["covariances"])
    want = {"full": np.linalg.inv(cov), "diag": 1 / np.diagonal(cov, axis1=1, axis2=2),
            "spherical": 1 / np.diagonal(cov, axis1=1, axis2=2).mean(1),
            "tied": np.linalg.inv(np.einsum("k,kij->ij", e["weights"], cov))}[covariance_type]
    np.testing.assert_allclose(o.precisions_init, want, rtol=1e-9)
    km = _resolve("--estimator", "kmeans", "--init-spark", str(SPARK / "kmeans"))
    assert km.n_components == len(EXPECTED["kmeans"]["centers"])
    np.testing.assert_array_equal(km.init, EXPECTED["kmeans"]["centers"])


@pytest.mark.parametrize("argv, match", [
    (["--estimator", "kmeans", "--init-spark", str(SPARK / "gmm")], "holds a Spark GaussianMixtureModel, not a "
     "KMeansModel: --estimator gaussian starts from it"),
    (["--init-spark", str(SPARK / "kmeans")], "holds a Spark KMeansModel, not a GaussianMixtureModel"),
    (["--estimator", "bayesian", "--init-spark", str(SPARK / "gmm")], "--estimator bayesian "
     "(BayesianGaussianMixture) has no Spark ML model"),
    (["--init-spark", str(SPARK / "gmm"), "--means-init", "0,0,0;1,1,1"], "--init-spark and --means-init both"),
    (["--init-spark", str(SPARK / "gmm"), "--n-components", "3"], "but --n-components is 3"),
    (["--init-spark", str(SPARK)], "no Spark ML model here"),
])
def test_fit_init_spark_refusals_exit_2_before_any_cluster(tmp_path, capsys, argv, match):
    from .conftest import expect_exit2

    expect_exit2(["fit", str(tmp_path), "--model-out", str(tmp_path / "m"), *argv], match, capsys)


def test_fit_init_spark_fits_as_python_from_the_same_starts(tmp_path, capsys):
    import pandas as pd

    from .conftest import FAST

    X = _rows()
    pd.DataFrame(X, columns=["a", "b", "c"]).to_parquet(tmp_path / "rows.parquet")
    rc = main(["fit", str(tmp_path / "rows.parquet"), "--init-spark", str(SPARK / "gmm"), "--max-iter", "3",
               "--model-out", str(tmp_path / "m"), *FAST])
    assert rc == 0, capsys.readouterr().err
    ref = daskgmm.GaussianMixture(**daskgmm.read_spark_model(SPARK / "gmm"), max_iter=3).fit(X)
    np.testing.assert_allclose(daskgmm.load(tmp_path / "m").means_, ref.means_, rtol=1e-10)


def test_a_spark_model_given_as_a_daskgmm_model_is_named(tmp_path, capsys):
    """A Spark ML model directory where a daskgmm model is expected (``--model``, ``load``) said "no model here
    (model.json not found)" and, on an object store, "the model is incomplete (no _SUCCESS): it is being
    written ..." (Spark writes no _SUCCESS at its top; user-trial-r13 on moto's S3). It names what it is and
    how daskgmm reads it. (fsspec's memory store takes the object-store path.)"""
    import uuid

    import fsspec

    said = r"a Spark ML model directory \(metadata/, data/\), not a daskgmm model: .*daskgmm.read_spark_model"
    with pytest.raises(daskgmm.ModelFileError, match=said):
        daskgmm.load(SPARK / "gmm")
    fs = fsspec.filesystem("memory")
    bucket = f"r13-{uuid.uuid4().hex[:12]}"
    try:
        fs.put(str(SPARK / "gmm"), f"/{bucket}/gmm", recursive=True)
        with pytest.raises(daskgmm.ModelFileError, match=said):
            daskgmm.load(f"memory://{bucket}/gmm")
        assert main(["info", "--model", f"memory://{bucket}/gmm"]) == 2
        err = capsys.readouterr().err
        assert re.search(said, err) and "daskgmm fit --init-spark" in err, err  # the command's own way to start
    finally:
        fs.rm(f"/{bucket}", recursive=True)


def _java() -> bool:
    try:
        return subprocess.run(["java", "-version"], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.slow
def test_round_trip_through_pyspark(tmp_path):
    """pyspark loads the exported models and predicts as daskgmm does; daskgmm reads what pyspark saves."""
    pytest.importorskip("pyspark")
    if not _java():
        pytest.skip("no Java")
    from pyspark.ml.clustering import GaussianMixtureModel, KMeansModel
    from pyspark.ml.linalg import Vectors
    from pyspark.sql import SparkSession

    X = _rows()
    models = {ct: daskgmm.GaussianMixture(2, covariance_type=ct, random_state=0).fit(X) for ct in ("full", "diag")}
    km = daskgmm.KMeans(2, random_state=0).fit(X)
    for ct, gm in models.items():
        daskgmm.export_spark_model(gm, tmp_path / ct)
    daskgmm.export_spark_model(km, tmp_path / "kmeans")
    spark = (SparkSession.builder.master("local[1]").config("spark.ui.enabled", "false")
             .config("spark.driver.bindAddress", "127.0.0.1").config("spark.driver.host", "127.0.0.1")
             .getOrCreate())
    try:
        df = spark.createDataFrame([(Vectors.dense(r),) for r in X], ["features"])
        for ct, gm in models.items():
            model = GaussianMixtureModel.load(str(tmp_path / ct))
            rows = model.transform(df).collect()
            assert model.getK() == 2
            np.testing.assert_allclose(model.weights, gm.weights_, rtol=1e-15)
            np.testing.assert_allclose([r.probability.toArray() for r in rows], gm.predict_proba(X), atol=2e-11)
            assert [r.prediction for r in rows] == gm.predict(X).tolist()
            model.write().overwrite().save(str(tmp_path / f"{ct}-spark"))
            back = daskgmm.read_spark_model(str(tmp_path / f"{ct}-spark"))
            np.testing.assert_array_equal(back["means_init"], gm.means_)
        model = KMeansModel.load(str(tmp_path / "kmeans"))
        assert [r.prediction for r in model.transform(df).collect()] == km.predict(X).tolist()
        np.testing.assert_array_equal(np.array(model.clusterCenters()), km.cluster_centers_)
    finally:
        spark.stop()
