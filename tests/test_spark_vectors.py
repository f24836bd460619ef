"""Spark ML's ``features`` column (a VectorUDT: a struct of type, size, indices and values) read as the
feature matrix, from directories as Spark writes them (``_SUCCESS``, ``.crc`` files, ``day=...``
partitions); the files are written here with pyarrow in Spark's Arrow schema, and once by pyspark
itself when it is installed (the ``bench`` extra) with Java."""

import os
import shutil
import subprocess
import uuid

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import daskgmm
from daskgmm import DataError, GaussianMixture
from daskgmm.io.files import NonFiniteError

from .conftest import FAST, make_blobs

#: The Arrow type Spark 3 and 4 write for a column of ``pyspark.ml.linalg.VectorUDT``.
VECTOR = pa.struct([
    pa.field("type", pa.int8(), nullable=False),
    pa.field("size", pa.int32()),
    pa.field("indices", pa.list_(pa.field("element", pa.int32(), nullable=False))),
    pa.field("values", pa.list_(pa.field("element", pa.float64(), nullable=False))),
])


def vectors(X, sparse=(), null=()):
    """Rows of X as Spark ML vectors: dense ones, sparse ones (at the rows ``sparse``, as
    VectorAssembler writes a row with many zeros) and null ones."""
    rows = []
    for i, x in enumerate(X):
        if i in null:
            rows.append(None)
        elif i in sparse:
            nz = np.flatnonzero(x)
            rows.append({"type": 0, "size": len(x), "indices": nz.tolist(), "values": x[nz].tolist()})
        else:
            rows.append({"type": 1, "size": None, "indices": None, "values": x.tolist()})
    return pa.array(rows, type=VECTOR)


def spark_directory(root, X, days=("2026-12-01", "2026-12-02"), sparse=(), null=()):
    """X as Spark writes ``df.write.partitionBy("day").parquet(root)`` of (id, features): part files
    with .crc files beside, _SUCCESS and its .crc, a Databricks-style _started/_committed pair."""
    root.mkdir(parents=True)
    (root / "_SUCCESS").write_bytes(b"")
    (root / "._SUCCESS.crc").write_bytes(b"crc\0")
    bounds = np.linspace(0, len(X), len(days) + 1).astype(int)
    job = uuid.uuid4()
    for day, lo, hi in zip(days, bounds[:-1], bounds[1:]):
        d = root / f"day={day}"
        d.mkdir()
        for part, (a, b) in enumerate([(lo, (lo + hi) // 2), ((lo + hi) // 2, hi)]):
            name = f"part-{part:05d}-{job}.c000.snappy.parquet"
            feats = vectors(X[a:b], {i - a for i in sparse if a <= i < b}, {i - a for i in null if a <= i < b})
            pq.write_table(pa.table({"id": pa.array(np.arange(a, b), pa.int64()), "features": feats}), d / name,
                           row_group_size=70)
            (d / f".{name}.crc").write_bytes(b"crc\0")
            (d / f"_started_{part}").write_bytes(b"")
            (d / f"_committed_{part}").write_bytes(b'{"added":[]}')
    return root


@pytest.fixture
def spark_data(tmp_path):
    X, _, _ = make_blobs(n=600, d=3, k=3, seed=4)
    X[::7, 1] = 0.0  # rows VectorAssembler would write sparse
    return spark_directory(tmp_path / "vec", X, sparse=set(range(0, 600, 7))), X


def test_a_vector_column_is_read_as_the_feature_matrix(spark_data):
    root, X = spark_data
    x, ids = daskgmm.read_parquet(root, id_column="id", chunk_rows=100)
    np.testing.assert_array_equal(ids.compute(), np.arange(600))
    np.testing.assert_array_equal(x.compute(), X)  # dense and sparse rows, over files and chunks
    src = daskgmm.open_parquet(root, id_column="id")
    assert src.columns == ["features[0]", "features[1]", "features[2]"] and src.n_rows == 600
    np.testing.assert_array_equal(daskgmm.read_parquet(root, columns=["features"]).compute(), X)
    # an element by name, in any order; and float32
    got = daskgmm.read_parquet(root, columns=["features[2]", "features[0]"], dtype="float32").compute()
    np.testing.assert_array_equal(got, X[:, [2, 0]].astype(np.float32))
    gm = GaussianMixture(3, random_state=0).fit(daskgmm.read_parquet(root, columns=["features"]))
    ref = GaussianMixture(3, random_state=0).fit(X)
    np.testing.assert_allclose(np.sort(gm.means_, axis=0), np.sort(ref.means_, axis=0), atol=1e-8)


def test_a_vector_column_with_scalar_columns_and_element_mistakes(tmp_path):
    X, _, _ = make_blobs(n=50, d=2, k=2, seed=0)
    tmp_path.joinpath("d").mkdir()
    pq.write_table(pa.table({"w": np.arange(50.0), "features": vectors(X)}), tmp_path / "d" / "p.parquet")
    got = daskgmm.read_parquet(tmp_path / "d").compute()  # every column: w, then the vector's elements
    np.testing.assert_array_equal(got, np.column_stack([np.arange(50.0), X]))
    with pytest.raises(DataError, match=r"column 'features\[2\]': the vector column 'features' has 2 elements"):
        daskgmm.read_parquet(tmp_path / "d", columns=["features[2]"])
    with pytest.raises(DataError, match=r"'features\[1\]' more than once"):
        daskgmm.read_parquet(tmp_path / "d", columns=["features", "features[1]"])
    with pytest.raises(DataError, match=r"no column 'w\[0\]'"):
        daskgmm.read_parquet(tmp_path / "d", columns=["w[0]"])


def test_a_null_vector_is_a_row_of_missing_values(tmp_path):
    X, _, _ = make_blobs(n=300, d=2, k=2, seed=2)
    root = spark_directory(tmp_path / "vec", X, null={5, 250}, sparse={6})
    with pytest.raises(NonFiniteError, match=r"column 'features\[0\]': 1, column 'features\[1\]': 1"):
        daskgmm.read_parquet(root, columns=["features"]).compute()
    src = daskgmm.open_parquet(root, nan_policy="omit", id_column="id")
    assert src.n_omitted == 2 and "features[0]" in src.omitted_by_column
    keep = np.setdiff1d(np.arange(300), [5, 250])
    np.testing.assert_array_equal(src.ids.compute(), keep)
    np.testing.assert_array_equal(src.X.compute(), X[keep])
    summary = daskgmm.open_parquet(root, id_column="id").nonfinite_summary()
    assert "2 of 300 row(s)" in summary and "column 'features[1]': 2" in summary, summary
    # kept as a row of NaN, which a marginalising mixture leaves out of its fit
    got = daskgmm.read_parquet(root, id_column="id", nan_policy="marginalize")[0].compute()
    assert np.isnan(got[[5, 250]]).all() and not np.isnan(got[keep]).any()


@pytest.mark.parametrize("bad, match", [
    ({"type": 1, "size": None, "indices": None, "values": [1.0, 2.0, 3.0]},
     r"row group 0, row 3\): column 'features' holds a dense vector of 3 values where its first vector has 2"),
    ({"type": 0, "size": 5, "indices": [0], "values": [1.0]},
     r"row group 0, row 3\): column 'features' holds a sparse vector of size 5 where its first vector has 2"),
    ({"type": 0, "size": 2, "indices": [0, 2], "values": [1.0, 1.0]},
     r"row group 0, row 3\): column 'features' holds a sparse vector with index 2, outside \[0, 2\)"),
    ({"type": 0, "size": 2, "indices": [0, 1], "values": [1.0]},
     r"row group 0, row 3\): column 'features' holds a sparse vector of 2 indices and 1 values"),
])
def test_a_vector_of_another_width_is_named(tmp_path, bad, match):
    rows = [{"type": 1, "size": None, "indices": None, "values": [float(i), 1.0]} for i in range(6)]
    rows[3] = bad
    pq.write_table(pa.table({"features": pa.array(rows, type=VECTOR)}), tmp_path / "p.parquet")
    with pytest.raises(DataError, match=match) as info:
        daskgmm.read_parquet(tmp_path / "p.parquet").compute()
    assert str(tmp_path / "p.parquet") in str(info.value)


def test_another_struct_is_refused_naming_the_vector_layout(tmp_path):
    t = pa.table({"features": pa.array([{"values": [1.0, 2.0]}] * 3)})
    pq.write_table(t, tmp_path / "p.parquet")
    with pytest.raises(DataError, match=r"not numeric.*Spark ML vectors") as info:
        daskgmm.read_parquet(tmp_path / "p.parquet")
    with pytest.raises(DataError, match="must be numeric or Spark ML vectors"):
        daskgmm.read_parquet(tmp_path / "p.parquet", columns=["features"])
    assert "p.parquet" in str(info.value)


def test_the_command_fits_and_predicts_a_vector_column(spark_data, tmp_path, monkeypatch):
    """... and reads the vector column's first vector once per job, before its cluster starts (the check of
    the model's width, and the open)."""
    import daskgmm.io.vectors as vectors
    from daskgmm.cli import main

    root, X = spark_data
    reads, first_width = [], vectors.first_width
    monkeypatch.setattr(vectors, "first_width", lambda *a: reads.append(a[2]) or first_width(*a))
    cfg = tmp_path / "job.yaml"
    cfg.write_text(f"data: {root}\nid_column: id\nn_components: 3\nseed: 0\nmodel_out: {tmp_path / 'm'}\n"
                   f"predictions_out: {tmp_path / 'p'}\n")
    assert main(["fit", "--config", str(cfg), *FAST]) == 0
    assert reads == ["features"]
    model = daskgmm.load(tmp_path / "m")
    assert list(model.feature_names_in_) == ["features[0]", "features[1]", "features[2]"]
    # predict reads the model's columns, the elements of the same vector column
    assert main(["predict", str(root), "--model", str(tmp_path / "m"), "--out", str(tmp_path / "q"),
                 "--id-column", "id", *FAST]) == 0
    assert reads == ["features", "features"]
    got = pq.read_table(tmp_path / "q").to_pandas().sort_values("id")
    np.testing.assert_array_equal(got["label"], model.predict(pd.DataFrame(X, columns=model.feature_names_in_)))


def _spark():
    """A local[1] SparkSession, or a skip: pyspark (the ``bench`` extra) and Java are needed."""
    pyspark = pytest.importorskip("pyspark")
    if shutil.which("java") is None or subprocess.run(["java", "-version"], capture_output=True).returncode:
        pytest.skip("no Java for pyspark")
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", __import__("sys").executable)
    return pyspark, (SparkSession.builder.master("local[1]").appName("daskgmm-test")
                     .config("spark.ui.enabled", "false").config("spark.driver.memory", "512m").getOrCreate())


@pytest.mark.slow
def test_parquet_written_by_pyspark_reads_as_the_same_rows(tmp_path):
    """The same reading on a file pyspark wrote (VectorAssembler: dense rows, and sparse ones where a
    row has many zeros), so that the schema above stays Spark's."""
    _, spark = _spark()
    try:
        from pyspark.ml.feature import VectorAssembler

        X = np.array([[1.5, 0.0, 0.0, 0.0], [0.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0], [0.0, 0.0, 0.0, -1.0]])
        df = spark.createDataFrame([(i, *map(float, x)) for i, x in enumerate(X)], ["id", "a", "b", "c", "d"])
        out = VectorAssembler(inputCols=["a", "b", "c", "d"], outputCol="features").transform(df)
        out.select("id", "features").coalesce(1).write.parquet(str(tmp_path / "vec"))
    finally:
        spark.stop()
    assert (tmp_path / "vec" / "_SUCCESS").exists()
    x, ids = daskgmm.read_parquet(tmp_path / "vec", id_column="id")
    np.testing.assert_array_equal(x.compute()[np.argsort(ids.compute())], X)


def test_sparse_rows_from_a_vector_column(tmp_path):
    """KMeans's sparse path reads Spark ML's vectors as they are (HashingTF's or a wide
    VectorAssembler's output): sparse vectors as sparse rows, dense ones without their zeros."""
    rng = np.random.default_rng(3)
    X = np.where(rng.random((400, 30)) < 0.1, rng.random((400, 30)), 0.0)
    root = spark_directory(tmp_path / "vec", X, sparse=set(range(0, 400, 2)))  # every other row dense
    x, ids = daskgmm.read_sparse_parquet(root, vector="features", id_column="id", chunk_rows=90)
    assert x.shape == (400, 30)
    got = x.compute()
    np.testing.assert_array_equal(ids.compute(), np.arange(400))
    np.testing.assert_array_equal(got.toarray(), X)
    assert got.nnz == np.count_nonzero(X)
    km = daskgmm.KMeans(3, init=X[:3], n_init=1).fit(x)
    ref = daskgmm.KMeans(3, init=X[:3], n_init=1).fit(X)
    np.testing.assert_allclose(km.cluster_centers_, ref.cluster_centers_, atol=1e-12)
    # the layout's list columns are not there: the error says how to read the vectors
    with pytest.raises(DataError, match="'features' is a column of Spark ML vectors: read it with vector='features'"):
        daskgmm.read_sparse_parquet(root)
    with pytest.raises(DataError, match=r"row \d+\): column 'features' holds a (sparse|dense) vector of "
                                        r"(size 30|30 values) where n_features is 40"):
        daskgmm.read_sparse_parquet(root, n_features=40, vector="features").compute()
    with pytest.raises(DataError, match="column 'id' has type int64; vector= needs a column of Spark ML vectors"):
        daskgmm.read_sparse_parquet(root, vector="id")


def test_a_null_vector_is_a_row_with_a_missing_value_as_sparse_rows(tmp_path):
    """A null vector read as sparse rows was refused whatever the nan_policy, so ``--sparse --nan-policy omit``
    exited 2 (user-trial-r15): it is a row with a missing value, refused by nan_policy='raise' naming the file,
    the column and the count, and dropped and counted by 'omit', as the dense reader does."""
    X = np.eye(6) + np.arange(6.0)[:, None]
    root = spark_directory(tmp_path / "vec", X, days=("2026-12-01",), sparse={0, 1}, null={4})
    with pytest.raises(NonFiniteError, match=r"part-00001.*: 1 row\(s\) with NaN, null or infinite values in column "
                                             r"'features', the first in row group 0, row 1"):
        daskgmm.read_sparse_parquet(root, vector="features").compute()
    with pytest.warns(UserWarning, match=r"dropped 1 of 6 rows with NaN, null or infinite values in column "
                                         r"'features'"):
        x = daskgmm.read_sparse_parquet(root, vector="features", nan_policy="omit").compute()
    np.testing.assert_array_equal(x.toarray(), np.delete(X, 4, axis=0))
    # every vector of a chunk null, and the dense reader's rows of NaN
    every = spark_directory(tmp_path / "all", X, days=("2026-12-01",), null={3, 4, 5})
    with pytest.warns(UserWarning, match="dropped 3 of 6 rows"):
        x = daskgmm.read_sparse_parquet(every, vector="features", nan_policy="omit").compute()
    np.testing.assert_array_equal(x.toarray(), X[:3])
    dense, = daskgmm.read_parquet(root, columns=["features"], nan_policy="omit", id_column="id")[:1]
    np.testing.assert_array_equal(np.sort(dense.compute(), axis=0), np.sort(np.delete(X, 4, axis=0), axis=0))


def test_the_command_drops_null_vectors_of_sparse_rows_with_omit(tmp_path, capsys):
    """``fit --estimator kmeans --sparse --nan-policy omit`` on a Spark vector column with null vectors
    (user-trial-r15: exit 2): the rows are dropped and counted (warning, metrics' n_omitted); without
    omit, exit 2 naming the files, the column and the count."""
    import json

    from daskgmm.cli import main

    X, _, _ = make_blobs(n=120, d=4, k=2, seed=3)
    root = spark_directory(tmp_path / "vec", X, sparse=set(range(0, 120, 3)), null={4, 100})
    base = ["fit", str(root), "--estimator", "kmeans", "--n-components", "2", "--sparse", "--columns", "features",
            "--seed", "0", *FAST[:-1]]
    assert main([*base, "--nan-policy", "omit", "--model-out", str(tmp_path / "m"),
                 "--metrics-out", str(tmp_path / "m.json")]) == 0
    err = capsys.readouterr().err
    assert "dropped 2 of 120 rows with NaN, null or infinite values in column 'features'" in err, err
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert (metrics["n_rows"], metrics["n_omitted"]) == (118, 2)
    assert main([*base, "--model-out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "error: 2 of 120 row(s) have NaN, null or infinite values in column 'features' in 2 of 4 file(s)" in err
    assert "--nan-policy omit" in err and not (tmp_path / "r").exists()


def test_a_column_of_arrays_is_read_as_its_elements(tmp_path):
    """Spark's ArrayType(DoubleType) (``vector_to_array(features)``), Arrow lists and fixed-size
    lists: each array a dense vector; a null array a row of missing values, a null element one."""
    X, _, _ = make_blobs(n=40, d=3, k=2, seed=5)
    rows = X.tolist()
    rows[3], rows[7] = None, [X[7, 0], None, X[7, 2]]
    pq.write_table(pa.table({"id": np.arange(40), "arr": pa.array(rows, pa.list_(pa.float64()))}),
                   tmp_path / "lists.parquet")
    src = daskgmm.open_parquet(tmp_path / "lists.parquet", id_column="id", nan_policy="marginalize")
    assert src.columns == ["arr[0]", "arr[1]", "arr[2]"]
    want = X.copy()
    want[3] = np.nan
    want[7, 1] = np.nan
    np.testing.assert_array_equal(src.X.compute(), want)  # a null array: a row of NaN, kept
    got = daskgmm.read_parquet(tmp_path / "lists.parquet", id_column="id", nan_policy="omit")[0].compute()
    np.testing.assert_array_equal(got, np.delete(want, [3, 7], axis=0))
    fixed = pa.FixedSizeListArray.from_arrays(pa.array(X.ravel().astype(np.float32)), 3)
    pq.write_table(pa.table({"arr": fixed}), tmp_path / "fixed.parquet")
    np.testing.assert_array_equal(daskgmm.read_parquet(tmp_path / "fixed.parquet").compute(),
                                  X.astype(np.float32).astype(np.float64))
    sparse = daskgmm.read_sparse_parquet(tmp_path / "fixed.parquet", vector="arr").compute()
    np.testing.assert_array_equal(sparse.toarray(), X.astype(np.float32).astype(np.float64))
    rows[3] = [1.0, 2.0]
    pq.write_table(pa.table({"arr": pa.array(rows, pa.list_(pa.float64()))}), tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=r"row 3\): column 'arr' holds a dense vector of 2 values where its first"):
        daskgmm.read_parquet(tmp_path / "bad.parquet").compute()


def test_reading_vectors_imports_no_pandas(tmp_path):
    """A worker imports no pandas (README, Data larger than memory): reading vectors, nulls
    included, goes through Arrow's buffers (``pyarrow.compute.fill_null`` of a number imported it)."""
    import sys

    X = np.arange(12.0).reshape(6, 2)
    root = spark_directory(tmp_path / "vec", X, days=("2026-12-01",), sparse={1}, null={4})
    lists = tmp_path / "lists.parquet"
    pq.write_table(pa.table({"arr": pa.array([[1.0, None], None, [3.0, 4.0]], pa.list_(pa.float64()))}), lists)
    code = (
        "import sys, pyarrow.parquet as pq\n"
        "from daskgmm.io.vectors import vector_block, vector_entries\n"
        f"for f in {[str(p) for p in sorted(root.rglob('*.parquet'))]!r}:\n"
        "    col = pq.ParquetFile(f).read_row_group(0, columns=['features']).column(0)\n"
        "    vector_block(col, 2, 'features', str)\n"
        "    vector_entries(col, 2, 'features', str)\n"  # a null vector included
        f"vector_block(pq.ParquetFile({str(lists)!r}).read_row_group(0).column(0), 2, 'arr', str)\n"
        "assert 'pandas' not in sys.modules, 'pandas was imported'\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.path.dirname(os.path.dirname(
        os.path.abspath(daskgmm.__file__))), os.environ.get("PYTHONPATH")]))}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr


def test_the_sparse_layout_read_densely_says_to_read_it_as_sparse_rows(tmp_path):
    """Files of daskgmm's sparse layout (``indices``/``values`` lists, ``daskgmm.n_features`` in the
    metadata) read by the dense reader: lists of varying length are no vectors, and the error says
    which reader takes them (it was "not numeric", then "a dense vector of 7 values where its first
    vector has 1")."""
    import scipy.sparse as sp

    daskgmm.write_sparse_parquet(sp.random(50, 20, density=0.2, random_state=0, format="csr"),
                                 tmp_path / "sp" / "part-0.parquet")
    with pytest.raises(DataError, match=r"part-0.parquet: columns 'indices', 'values' hold sparse rows in "
                                        r"daskgmm's layout \(n_features=20 in the metadata\); read them with "
                                        r"daskgmm.read_sparse_parquet"):
        daskgmm.read_parquet(tmp_path / "sp")


def test_a_wide_vector_is_named_by_its_first_and_last_elements(tmp_path, capsys):
    """A 1000-wide vector column (HashingTF's) made a data line of 1000 names, and a zero-variance
    warning of hundreds; a run of a vector's elements is named by its first and last."""
    from daskgmm.cli import main
    from daskgmm.validation.scan import short_columns

    assert short_columns(["id", "v[0]", "v[1]", "v[2]", "w[0]", "w[1]", "v[4]"]) == \
        "id, v[0] … v[2], w[0], w[1], v[4]"
    assert short_columns(["v[3]", "v[4]", "v[5]"], quote=True) == "'v[3]' … 'v[5]'"
    X = np.zeros((60, 300))
    X[:, :3] = make_blobs(n=60, d=3, k=2, seed=0)[0]
    spark_directory(tmp_path / "vec", X, days=("2026-12-01",), sparse=set(range(60)))
    assert main(["fit", str(tmp_path / "vec"), "--id-column", "id", "--estimator", "kmeans", "--n-components",
                 "2", "--model-out", str(tmp_path / "m"), "--n-workers", "1", "--threads-per-worker", "1"]) == 0
    err = capsys.readouterr().err
    assert "300 columns (features[0] … features[299])" in err, err
    assert "column(s) 'features[3]' … 'features[299]' of X have zero variance" in err, err
    assert max(len(line) for line in err.splitlines()) < 400, err
    assert main(["info", "--model", str(tmp_path / "m")]) == 0
    assert "features:         300 (features[0] … features[299])" in capsys.readouterr().out


@pytest.mark.parametrize("column", [
    pa.array([[]] * 4, pa.list_(pa.float64())),
    pa.array([{"type": 0, "size": 0, "indices": [], "values": []}] * 4, type=VECTOR),
])
def test_a_vector_column_of_empty_vectors_is_named(tmp_path, column):
    # was read as 0 feature columns: the command stopped with a ZeroDivisionError, exit 1
    pq.write_table(pa.table({"v": column}), tmp_path / "p.parquet")
    with pytest.raises(DataError, match=r"p\.parquet: column 'v': its first vector is empty \(0 elements\)"):
        daskgmm.read_parquet(tmp_path / "p.parquet", columns=["v"])
