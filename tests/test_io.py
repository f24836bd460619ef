"""Parquet in (every way of naming the data), atomic outputs, and model files that are checked on load."""

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import daskgmm
from daskgmm import DataError, GaussianMixture, RowsOmittedWarning, read_parquet
from daskgmm.io.files import NonFiniteError
from daskgmm.io.modelfiles import ModelFileError
from daskgmm.io.outputs import staged_directory
from daskgmm.io.parquet import open_parquet

from .conftest import FAST, UNPICKLED, Pickled, make_blobs


@pytest.fixture
def dataset(tmp_path):
    """Three Parquet files of 400 rows, two feature columns and an id column."""
    X, _, _ = make_blobs(n=1200, d=2, k=2, seed=1)
    root = tmp_path / "data"
    root.mkdir()
    for i in range(3):
        part = X[400 * i : 400 * (i + 1)]
        pq.write_table(pa.table({"key": np.arange(400 * i, 400 * (i + 1)), "a": part[:, 0], "b": part[:, 1]}),
                       root / f"p{i}.parquet", row_group_size=150)
    return root, X


def test_every_way_of_naming_the_data_reads_the_same_rows(dataset):
    root, X = dataset
    files = sorted(str(p) for p in root.glob("*.parquet"))
    for path in (str(root), str(root / "*.parquet"), files, f"file://{root}"):
        got = read_parquet(path, columns=["a", "b"]).compute()
        np.testing.assert_array_equal(got, X)
    one = read_parquet(files[1], columns=["b"]).compute()
    np.testing.assert_array_equal(one[:, 0], X[400:800, 1])
    # --chunk-rows splits row groups larger than a chunk into row slices, and merges smaller ones
    x, ids = read_parquet(root, columns=["a", "b"], id_column="key", dtype="float32", chunk_rows=100)
    assert x.dtype == np.float32 and x.chunks[0] == (75, 75, 75, 75, 100) * 3
    np.testing.assert_array_equal(ids.compute(), np.arange(1200))
    np.testing.assert_array_equal(x.compute(), X.astype(np.float32))
    x, ids = read_parquet(root, columns=["a", "b"], id_column="key", chunk_rows=300)
    assert x.chunks[0] == (300, 100) * 3
    np.testing.assert_array_equal(x.compute(), X)
    # or a budget of decoded bytes per chunk (at least 16 a row here: two float64 columns, and the matrix)
    x = read_parquet(root, columns=["a", "b"], chunk_bytes=32 * 300)
    assert max(x.chunks[0]) <= 300 and sum(x.chunks[0]) == 1200
    assert read_parquet(root, id_column="key")[0].shape == (1200, 2)  # every column but the id


def test_the_index_pandas_and_dask_store_is_not_a_feature(tmp_path):
    """pandas and Dask write a DataFrame's index as a column their readers turn back into the
    index (named in the file's pandas metadata: ``__null_dask_index__``, ``__index_level_0__``, or
    the index's name): without ``columns`` it is not a feature, and it can be the id column."""
    import dask.dataframe as dd
    import pandas as pd

    X, _, _ = make_blobs(n=300, d=2, k=2, seed=1)
    df = pd.DataFrame(X, columns=["a", "b"])
    dd.from_pandas(df, npartitions=3).to_parquet(tmp_path / "dask")  # __null_dask_index__
    df.set_index(pd.Index(np.arange(300) ** 2)).to_parquet(tmp_path / "level0.parquet")  # __index_level_0__
    df.set_index(pd.Index(np.arange(300) ** 2, name="row")).to_parquet(tmp_path / "named.parquet")  # row
    for path in (tmp_path / "dask", tmp_path / "level0.parquet", tmp_path / "named.parquet"):
        src = open_parquet(path)
        assert src.columns == ["a", "b"], (path, src.columns)
        np.testing.assert_array_equal(src.X.compute(), X)
    x, ids = read_parquet(tmp_path / "named.parquet", id_column="row")
    assert x.shape == (300, 2)
    np.testing.assert_array_equal(ids.compute(), np.arange(300) ** 2)
    # named as a feature, it is one
    assert read_parquet(tmp_path / "level0.parquet", columns=["a", "__index_level_0__"]).shape == (300, 2)


def test_a_glob_of_directories_reads_the_parquet_files_below_them(tmp_path):
    """``events/date=*`` (Hive-style partitions) names directories: each is read as a directory is
    (every Parquet file below it, names starting with ``_`` or ``.`` skipped); it was "no Parquet
    files match". Predictions written where the glob would match them next time are refused."""
    X, _, _ = make_blobs(n=300, d=2, k=2, seed=1)
    for i, day in enumerate(["2026-01-01", "2026-01-02"]):
        part = tmp_path / "events" / f"date={day}"
        (part / "_temporary").mkdir(parents=True)
        pq.write_table(pa.table({"a": X[150 * i:150 * (i + 1), 0], "b": X[150 * i:150 * (i + 1), 1]}),
                       part / "part-0.parquet")
        (part / "_SUCCESS").write_bytes(b"")
        (part / "_temporary" / "junk.parquet").write_bytes(b"not parquet")
    x = read_parquet(str(tmp_path / "events" / "date=*"))
    np.testing.assert_array_equal(x.compute(), X)
    np.testing.assert_array_equal(read_parquet([str(tmp_path / "events" / "date=2026-01-0[12]")]).compute(), X)
    g = GaussianMixture(2, random_state=0, max_iter=5).fit(x)
    for out in (tmp_path / "events" / "date=2026-01-03", tmp_path / "events" / "date=2026-01-01" / "preds"):
        with pytest.raises(ValueError, match="matches the input glob"):
            g.write_predictions(x, out)
        assert not out.exists()
    assert g.write_predictions(x, tmp_path / "preds") == 300


def test_a_glob_skips_the_files_spark_and_hadoop_hide(tmp_path):
    """``out/*`` over a Spark output matches its ``_SUCCESS``, ``.crc`` and ``_started_*`` files
    too (fsspec's globs match names starting with ``_`` and ``.``): they are skipped, as a
    directory's are and as Hadoop's globs skip them; the job failed on "_SUCCESS: not a readable
    Parquet file". A glob that names such files itself still reads them."""
    X, _, _ = make_blobs(n=200, d=2, k=2, seed=1)
    out = tmp_path / "out"
    for day in ("day=1", "day=2"):
        (out / day / "_temporary").mkdir(parents=True)
        (out / day / "_temporary" / "part-9.parquet").write_bytes(b"not parquet")
    for i, day in enumerate(("day=1", "day=2")):
        pq.write_table(pa.table({"a": X[100 * i:100 * (i + 1), 0], "b": X[100 * i:100 * (i + 1), 1]}),
                       out / day / "part-0.snappy.parquet")
        (out / day / ".part-0.snappy.parquet.crc").write_bytes(b"crc")
        (out / day / "_started_1").write_bytes(b"")
    (out / "_SUCCESS").write_bytes(b"")
    (out / "._SUCCESS.crc").write_bytes(b"crc")
    for glob in ("out/*", "out/*/*", "out/day=*/part-*", "out/*/*/*"):
        path = str(tmp_path / glob)
        if glob == "out/*/*/*":  # only the hidden directory's file: no Parquet files left
            with pytest.raises(DataError, match="no Parquet files match"):
                read_parquet(path)
            continue
        np.testing.assert_array_equal(read_parquet(path).compute(), X)
    pq.write_table(pa.table({"a": [1.0], "b": [2.0]}), out / "_extra.parquet")
    assert read_parquet(str(out / "_extra*")).shape == (1, 2)  # named explicitly


def test_a_directory_of_parquet_files_without_the_suffix_says_how_to_read_them(tmp_path):
    """A Hive-format table (``STORED AS PARQUET``: ``part-00000-…-c000``, Hive's ``000000_0``) has
    Parquet files without a suffix: the error names one and says to read them with a glob; a
    glob does."""
    X, _, _ = make_blobs(n=100, d=2, k=2, seed=1)
    (tmp_path / "t").mkdir()
    pq.write_table(pa.table({"a": X[:, 0], "b": X[:, 1]}), tmp_path / "t" / "part-00000-1234-c000")
    (tmp_path / "t" / "_SUCCESS").write_bytes(b"")
    (tmp_path / "t" / ".part-00000-1234-c000.crc").write_bytes(b"crc")
    with pytest.raises(DataError, match=r"holds no Parquet files \(\*\.parquet, \*\.parq, \*\.pq\) but 1 other "
                                        r"file\(s\), such as part-00000-1234-c000: if they are Parquet, name them "
                                        r"with a glob, e.g. '.*/t/\*'"):
        read_parquet(tmp_path / "t")
    np.testing.assert_array_equal(read_parquet(str(tmp_path / "t" / "*")).compute(), X)


def test_prediction_ids_are_aligned_with_the_rows_or_named_as_wrong(tmp_path):
    """``write_predictions(X, path, ids=...)`` takes NumPy or Dask ids, chunked as they come, for
    every estimator that writes predictions; ids that are not one per row of X are an error saying
    so. KMedoids took only Dask ids chunked as X ('numpy.ndarray' object has no attribute
    'to_delayed'; ArrowInvalid for other chunks), and a wrong length was Dask's "Chunks do not add
    up to shape"."""
    import dask.array as da
    import pyarrow.parquet as pq

    X, _, _ = make_blobs(n=300, d=2, k=2, seed=1)
    rows = da.from_array(X, chunks=100)
    for est in (GaussianMixture(2, random_state=0, max_iter=5), daskgmm.KMedoids(2, random_state=0),
                daskgmm.KMeans(2, random_state=0)):
        est.fit(X)
        for i, (x, ids) in enumerate([(X, np.arange(300) * 7), (rows, np.arange(300) * 7),
                                      (rows, da.arange(300, chunks=70) * 7)]):
            out = tmp_path / f"{type(est).__name__}-{i}"
            assert est.write_predictions(x, out, ids=ids) == 300
            t = pq.read_table(out)
            np.testing.assert_array_equal(t.column("id").to_numpy(), np.arange(300) * 7)
            np.testing.assert_array_equal(t.column("label").to_numpy(), est.predict(X))
        for ids in (np.arange(10), da.arange(10, chunks=5), np.zeros((300, 2))):
            with pytest.raises(ValueError, match=r"ids has shape \(\d+(, 2)?,?\); expected \(300,\)"):
                est.write_predictions(rows, tmp_path / "bad", ids=ids)
        assert not (tmp_path / "bad").exists()
    # a mixture's written probabilities and log-likelihoods are predict_proba's and score_samples' (one
    # normal cloud split in two: probabilities away from 0 and 1, where an unnormalised row still had a 1)
    Z = np.random.default_rng(0).normal(size=(300, 2))
    g = GaussianMixture(2, random_state=0).fit(Z)
    assert g.write_predictions(da.from_array(Z, chunks=100), tmp_path / "proba", proba=True, loglik=True) == 300
    t = pq.read_table(tmp_path / "proba")
    proba = np.column_stack([t.column(f"proba_{k}").to_numpy() for k in range(2)])
    assert ((proba > 0.2) & (proba < 0.8)).any()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(proba, g.predict_proba(Z), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(t.column("loglik").to_numpy(), g.score_samples(Z), rtol=1e-12)


def test_bad_paths_and_columns_are_named(dataset, tmp_path):
    root, _ = dataset
    with pytest.raises(DataError, match="no id column 'nope'"):
        read_parquet(root, columns=["a"], id_column="nope")
    with pytest.raises(DataError, match=r"no Parquet files match"):
        read_parquet(str(root / "*.csv"))
    with pytest.raises(DataError, match="columns lists 'a' more than once"):
        read_parquet(root, columns=["a", "a"])
    with pytest.raises(DataError, match="is also listed as a feature column"):
        read_parquet(root, columns=["a", "key"], id_column="key")
    # files with no rows, dense and sparse: named, with their number
    empty = tmp_path / "empty"
    empty.mkdir()
    for i in range(2):
        pq.write_table(pa.table({"a": pa.array([], pa.float64()), "indices": pa.array([], pa.list_(pa.int32())),
                                 "values": pa.array([], pa.list_(pa.float64()))}), empty / f"p{i}.parquet")
    for read in (lambda: read_parquet(str(empty), columns=["a"]), lambda: daskgmm.read_sparse_parquet(str(empty), 3)):
        with pytest.raises(DataError, match=r"no rows in '.*empty' \(2 file\(s\), all empty\)"):
            read()
    for read in (read_parquet, daskgmm.read_sparse_parquet):
        with pytest.raises(ValueError, match="dtype must be float32 or float64, got int32"):
            read(str(empty), dtype="int32")
    # every file's footer is checked, not the first's alone: the last file without a feature column, or with
    # one of text, is named with the column before any row is read
    last = pq.read_table(root / "p2.parquet").to_pydict()
    for table, match in [({"key": last["key"], "a": last["a"]}, r"p2\.parquet: no column 'b' \(it has: key, a\)"),
                         ({**last, "b": [str(v) for v in last["b"]]}, r"p2\.parquet: column 'b' has type string")]:
        pq.write_table(pa.table(table), root / "p2.parquet")
        with pytest.raises(DataError, match=match):
            read_parquet(root, columns=["a", "b"])


def test_nan_policies_through_the_api(dataset, tmp_path):
    root, X = dataset
    t = pq.read_table(root / "p2.parquet").to_pydict()
    t["b"][7] = None  # a null becomes NaN
    t["a"][9] = float("inf")
    pq.write_table(pa.table(t), root / "p2.parquet", row_group_size=150)
    with pytest.warns(RowsOmittedWarning, match="dropped 2 of 1200 rows"):
        src = open_parquet(root, columns=["a", "b"], nan_policy="omit")
    assert src.n_rows == 1198 and src.n_omitted == 2 and src.omitted_by_column == {"a": 1, "b": 1}
    keep = np.ones(1200, bool)
    keep[[807, 809]] = False
    np.testing.assert_array_equal(src.X.compute(), X[keep])
    x = read_parquet(root, columns=["a", "b"])  # "raise": the chunk that holds them fails, naming them
    with pytest.raises(NonFiniteError, match=r"p2.parquet \(row group\(s\) \[0, 1, 2\]\): 2 row\(s\).*column 'a': 1"):
        x.compute()
    src = open_parquet(root, columns=["a", "b"])
    assert src.nonfinite_summary().startswith("2 of 1200 row(s) have NaN")



def test_the_nonfinite_summary_counts_by_column_and_by_file_over_every_chunk(dataset):
    """The job's error counts each column's rows under its own name (not in another order) and each
    file's rows over all its chunks (three row groups of one file, one chunk each, here)."""
    root, _ = dataset
    for name, col, rows in [("p0.parquet", "b", [10]), ("p1.parquet", "a", [3, 200, 390])]:
        t = pq.read_table(root / name).to_pydict()
        for r in rows:
            t[col][r] = float("nan")
        pq.write_table(pa.table(t), root / name, row_group_size=150)
    summary = open_parquet(root, columns=["b", "a"], chunk_rows=150).nonfinite_summary()
    assert summary.startswith("4 of 1200 row(s) have NaN, null or infinite values (column 'b': 1, column 'a': 3) "
                              "in 2 of 3 file(s): "), summary
    assert f"{root / 'p1.parquet'} (3), {root / 'p0.parquet'} (1);" in summary, summary

def test_a_swap_killed_between_its_renames_is_repaired(tmp_path):
    target = tmp_path / "out"
    for content in (b"first", b"second"):
        with staged_directory(str(target)) as (fs, staging):
            with fs.open(f"{staging}/part-0.txt", "wb") as f:
                f.write(content)
    # killed after setting the old output aside, before renaming the new one in
    aside = tmp_path / ".out.old-0123456789ab"
    os.rename(target, aside)
    (tmp_path / ".out.staging-0123456789ab").mkdir()
    with pytest.raises(RuntimeError):
        with staged_directory(str(target)):
            raise RuntimeError("this job fails too")
    assert (target / "part-0.txt").read_bytes() == b"second" and (target / "_SUCCESS").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_output_path_that_cannot_be_written_is_bad_usage_naming_why(tmp_path, monkeypatch):
    """An output below a file ("--model-out afile/m") failed with "cannot create the directory of output
    'afile/m': File exists", exit status 1. The path given is at fault: a DataError (exit 2, as a plot's
    or metrics' path and a refused S3 prefix) naming the file in the way; so is a refused write; a
    full disk stays an OSError (exit 1)."""
    import errno

    import daskgmm.io.outputs as outputs

    (tmp_path / "afile").write_text("")
    with pytest.raises(DataError, match=r"cannot create the directory of output '.*afile/m': .*afile is a file, "
                       "not a directory; choose another path"):
        with staged_directory(str(tmp_path / "afile" / "m")):
            pass
    for code, kind in ((errno.EACCES, DataError), (errno.EROFS, DataError), (errno.ENOSPC, OSError)):
        def refused(path, code=code):
            raise OSError(code, os.strerror(code), path)
        monkeypatch.setattr(outputs, "_flock", refused)
        with pytest.raises((OSError, DataError), match=rf"cannot write output '.*out': {os.strerror(code)}") as info:
            with staged_directory(str(tmp_path / "out")):
                pass
        assert isinstance(info.value, DataError) == (kind is DataError), code
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_a_full_disk_names_the_output_it_could_not_write(tmp_path, monkeypatch):
    """A model that did not fit on its disk failed with "OSError: [Errno 28] No space left on device",
    naming no output (the predictions' parts named theirs): ``daskgmm.save``, ``fit``'s model beside its
    predictions and every staged output now say which. Other errors pass as they are."""
    import errno
    from types import SimpleNamespace

    import daskgmm.io.modelfiles as modelfiles
    from daskgmm.cli.fit import commit_model_and_predictions

    gm = GaussianMixture(1, max_iter=2).fit(np.arange(8.0).reshape(4, 2))

    def full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(modelfiles, "_write_files", full)
    for save in (lambda t: gm.save(t), lambda t: commit_model_and_predictions(
            gm, SimpleNamespace(model_out=t, predictions_out=None), None)):
        target = str(tmp_path / "m")
        with pytest.raises(OSError, match=rf"cannot write output {target}: No space left on device") as info:
            save(target)
        assert info.value.errno == errno.ENOSPC
    with pytest.raises(FileNotFoundError, match=r"^gone$"), staged_directory(str(tmp_path / "m")):
        raise FileNotFoundError("gone")
    assert os.listdir(tmp_path) == []


def test_model_files_are_checked_on_load(tmp_path):
    X, _, _ = make_blobs(n=300, d=2, k=2, seed=0)
    gm = GaussianMixture(2, random_state=0).fit(X)
    path = tmp_path / "m"
    gm.save(path)
    back = daskgmm.load(path)
    for attr in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_array_equal(getattr(back, attr), getattr(gm, attr))
    np.testing.assert_array_equal(back.predict(X), gm.predict(X))
    assert back.get_params() == gm.get_params()

    doc = json.loads((path / "model.json").read_text())

    def broken(change, arrays=None):
        bad = tmp_path / f"bad{len(os.listdir(tmp_path))}"
        bad.mkdir()
        d = json.loads(json.dumps(doc))
        change(d)
        (bad / "model.json").write_text(json.dumps(d))
        if arrays is None:
            (bad / "arrays.npz").write_bytes((path / "arrays.npz").read_bytes())
        else:
            np.savez(bad / "arrays.npz", **arrays)
        return bad

    with pytest.raises(ModelFileError, match="is newer than this daskgmm"):
        daskgmm.load(broken(lambda d: d.update(format_version=99)))
    with pytest.raises(ModelFileError, match="has shape"):
        daskgmm.load(broken(lambda d: d["arrays"]["means_"].update(shape=[3, 2])))
    with pytest.raises(ModelFileError, match="not a daskgmm model"):
        daskgmm.load(broken(lambda d: d.update(format="pickle")))
    with np.load(path / "arrays.npz") as z:
        arrays = {k: z[k] for k in z.files}
    with pytest.raises(ModelFileError, match=r"arrays\.npz is missing or corrupt"):
        daskgmm.load(broken(lambda d: None, {**arrays, "means_": np.array([object()], dtype=object)}))
    with pytest.raises(ModelFileError, match="inconsistent model"):
        daskgmm.load(broken(lambda d: None, {**arrays, "weights_": np.full(2, np.nan)}))


def test_a_checkpoint_holding_pickles_is_corrupt_never_unpickled(tmp_path):
    """A checkpoint is data (``allow_pickle=False``): one whose arrays hold objects is refused as corrupt,
    whether the job resumes it or only asks whether it is its own, and the pickles never run."""
    from daskgmm.io.modelfiles import Checkpoint

    np.savez(tmp_path / "checkpoint.npz", __meta__=np.array("{}"), run0__means=np.array([Pickled()], dtype=object),
             allow_pickle=True)
    UNPICKLED.clear()
    ck = Checkpoint(tmp_path, {"job": 1})
    with pytest.raises(ModelFileError, match="corrupt checkpoint"):
        ck.load()
    assert ck.stale() == "not a checkpoint this daskgmm can read"
    assert UNPICKLED == []


def test_predictions_are_never_written_over_the_parquet_they_are_computed_from(dataset, tmp_path):
    """write_predictions of rows read by daskgmm refuses an output that is one of their files, a
    directory above them, or inside the directory they are read from (persisted or derived rows
    too): committing it would replace the data. The data are untouched; another path is written."""
    directory = str(dataset[0])
    before = sorted(os.listdir(directory))
    X = read_parquet(directory, columns=["a", "b"])
    g = GaussianMixture(2, random_state=0, max_iter=5).fit(X)
    first = os.path.join(directory, before[0])
    for out, words in [(directory, "holds the input file"), (first, "is the input file"),
                       (os.path.join(directory, "preds"), "is inside the input directory"),
                       (os.path.dirname(directory), "holds the input file")]:
        for rows in (X, X.persist(), X[:, :] * 1.0):
            with pytest.raises(ValueError, match=words):
                g.write_predictions(rows, out)
    assert sorted(os.listdir(directory)) == before
    assert g.write_predictions(X, tmp_path / "preds") == X.shape[0]
    for km in (daskgmm.KMedoids(2, random_state=0), daskgmm.KMeans(2, random_state=0)):
        km.fit(X)
        with pytest.raises(ValueError, match="holds the input file"):
            km.write_predictions(X, directory)


def test_an_empty_file_pandas_wrote_does_not_stop_the_job(dataset):
    """pandas writes an empty frame's columns of no dtype as Arrow ``null``: the empty file's
    types are never read, so they do not disagree with the others' (they stopped the job:
    "column 'a' has type null; feature columns must be numeric"), first in order or not."""
    import pandas as pd

    root, X = dataset
    for name in ("p1b.parquet", "a0.parquet"):  # after a file with rows, and first
        pd.DataFrame(columns=["key", "a", "b"]).to_parquet(root / name)
        assert pq.read_schema(root / name).field("a").type == pa.null()
        np.testing.assert_array_equal(read_parquet(root, columns=["a", "b"]).compute(), X)
        np.testing.assert_array_equal(read_parquet(root, id_column="key")[0].compute(), X)


def test_a_column_of_nulls_only_is_missing_values(dataset):
    """A file whose column holds only nulls (pandas writes an all-None column as Arrow ``null``)
    has missing values there, counted and dropped by the nan_policy as any null; it was "not
    numeric" and disagreed with the other files' double."""

    root, X = dataset
    for i in range(3):
        t = pq.read_table(root / f"p{i}.parquet").to_pandas()
        t["z"] = None if i == 1 else np.arange(400.0)
        t.to_parquet(root / f"p{i}.parquet")
    assert pq.read_schema(root / "p1.parquet").field("z").type == pa.null()
    with pytest.warns(RowsOmittedWarning, match="dropped 400 of 1200 rows"):
        src = open_parquet(root, id_column="key", nan_policy="omit")
    assert src.n_omitted == 400 and src.omitted_by_column == {"z": 400}
    np.testing.assert_array_equal(src.X.compute()[:, :2], np.vstack([X[:400], X[800:]]))
    with pytest.raises(NonFiniteError, match=r"p1.parquet .*400 row\(s\).*column 'z': 400"):
        read_parquet(root, id_column="key")[0].compute()


def test_integers_beyond_float_precision_are_read_rounded(tmp_path):
    """An integer column with values over 2**53 is read as NumPy's astype rounds it (the Python API
    fits such a pandas column so); Arrow's safe cast failed the read without naming the column."""
    big = np.array([2**63 + 1, 2**63 + 4097, 2**62 + 3, 12], dtype=np.uint64)
    pq.write_table(pa.table({"a": np.arange(4.0), "u": big, "i": big.astype(np.int64) // 2}), tmp_path / "p.parquet")
    got = read_parquet(tmp_path / "p.parquet").compute()
    np.testing.assert_array_equal(got[:, 1], big.astype(np.float64))
    np.testing.assert_array_equal(got[:, 2], (big.astype(np.int64) // 2).astype(np.float64))
    got32 = read_parquet(tmp_path / "p.parquet", dtype="float32").compute()
    np.testing.assert_array_equal(got32[:, 1], big.astype(np.float32))


def test_values_beyond_float32_are_named_not_counted_as_infinities(tmp_path):
    """A double beyond float32's range, read as float32, became inf: counted as an infinity of the data
    (exit 2 saying the file held infinite values, which it did not), and dropped by nan_policy='omit'."""
    from daskgmm.io.sparse import read_sparse_parquet

    a = np.arange(6.0)
    a[4] = -1e39
    vec = pa.array([[v, 1.0] for v in a], pa.list_(pa.float64()))
    pq.write_table(pa.table({"a": a, "b": np.ones(6), "v": vec, "indices": pa.array([[0]] * 6, pa.list_(pa.int32())),
                             "values": pa.array([[v] for v in a], pa.list_(pa.float64()))}),
                   tmp_path / "p.parquet", row_group_size=3)
    match = r"p\.parquet \(row group 1, row 1\): column '{}' holds -1e\+39, a value too large for dtype\('float32'\)"
    for policy in ("raise", "omit"):
        with pytest.raises(DataError, match=match.format("a")):
            open_parquet(tmp_path / "p.parquet", columns=["a", "b"], dtype="float32", nan_policy=policy).X.compute()
    with pytest.raises(DataError, match=match.format(r"v\[0\]")):
        read_parquet(tmp_path / "p.parquet", columns=["v"], dtype="float32").compute()
    with pytest.raises(DataError, match=match.format("values")):
        read_sparse_parquet(tmp_path / "p.parquet", n_features=1, dtype="float32").compute()
    # as float64 it is a value like any other; a file's own infinity is still one
    assert read_parquet(tmp_path / "p.parquet", columns=["a"]).compute()[4, 0] == -1e39
    a[4] = -np.inf
    pq.write_table(pa.table({"a": a}), tmp_path / "inf.parquet")
    with pytest.raises(NonFiniteError, match="column 'a': 1"):
        read_parquet(tmp_path / "inf.parquet", dtype="float32").compute()


def test_a_column_name_twice_in_a_schema_is_named(tmp_path, capsys):
    """pyarrow writes a schema with a name twice: reading it failed with "KeyError: 'Column a does not exist
    in schema'", exit 1. Now exit 2 naming the file and the column; a name twice that the job does not read is
    no matter."""
    from daskgmm.cli import main

    t = pa.Table.from_arrays([pa.array(np.arange(6.0)), pa.array(np.ones(6)), pa.array(np.arange(6.0) ** 2)],
                             names=["a", "a", "b"])
    pq.write_table(t, tmp_path / "p.parquet")
    match = r"p\.parquet: column\(s\) 'a' appear more than once in its schema; column names must be unique"
    for columns in (None, ["a", "b"]):
        with pytest.raises(DataError, match=match):
            read_parquet(tmp_path / "p.parquet", columns=columns)
    np.testing.assert_array_equal(read_parquet(tmp_path / "p.parquet", columns=["b"]).compute()[:, 0],
                                  np.arange(6.0) ** 2)
    assert main(["fit", str(tmp_path / "p.parquet"), "--n-components", "2", "--model-out", str(tmp_path / "m"),
                 *FAST]) == 2
    assert "column(s) 'a' appear more than once" in capsys.readouterr().err


def test_integer_ids_with_nulls_keep_their_type_and_digits(tmp_path):
    """An integer id column with a null came back as float64 (ids over 2**53 lost digits), and the
    predictions' part of that chunk wrote it as double where the other parts wrote int64: their
    own reader then refused them ("schemas disagree")."""
    ids = [2**60 + i for i in range(300)]
    ids[4] = None
    rng = np.random.default_rng(0)
    pq.write_table(pa.table({"id": pa.array(ids, pa.int64()), "a": rng.normal(size=300),
                             "b": rng.normal(size=300)}), tmp_path / "p.parquet")
    x, got = read_parquet(tmp_path / "p.parquet", id_column="id", chunk_rows=100)
    assert got.compute().tolist() == ids
    gmm = GaussianMixture(2, max_iter=3, random_state=0).fit(x)
    gmm.write_predictions(x, str(tmp_path / "pred"), ids=got)
    parts = sorted((tmp_path / "pred").glob("*.parquet"))
    assert len(parts) == 3 and {str(pq.read_schema(p).field("id").type) for p in parts} == {"int64"}
    assert pq.read_table(tmp_path / "pred").column("id").to_pylist() == ids


def test_the_commands_write_each_id_column_in_its_type_in_every_part(tmp_path):
    """The predictions' parts typed their id columns from their own values: a decimal(10, 0) id was
    decimal(2, 0) in one part and decimal(3, 0) in the next, a chunk of null ids wrote type null, a time
    zone was dropped; pyarrow and pandas could not read the output ("Unsupported cast from string to
    null", "Decimal value does not fit in precision 2"), nor could daskgmm. fit and predict write the
    input's types now."""
    import decimal

    from daskgmm.cli import main

    n = 300
    src = pa.table({
        "dec": pa.array([decimal.Decimal(i) for i in range(n)], pa.decimal128(10, 0)),
        "s": pa.array([None if i < 100 else f"r{i}" for i in range(n)], pa.large_string()),
        "ts": pa.array(np.arange(n).astype("datetime64[s]")).cast(pa.timestamp("us", tz="Europe/Paris")),
        "a": np.random.default_rng(0).normal(size=n), "b": np.random.default_rng(1).normal(size=n)})
    pq.write_table(src, tmp_path / "p.parquet")
    common = ["--id-column", "dec,s,ts", "--columns", "a,b", "--chunk-rows", "100", *FAST]
    assert main(["fit", str(tmp_path / "p.parquet"), "--n-components", "2", "--model-out", str(tmp_path / "m"),
                 "--predictions-out", str(tmp_path / "fit"), *common]) == 0
    assert main(["predict", str(tmp_path / "p.parquet"), "--model", str(tmp_path / "m"), "--out",
                 str(tmp_path / "pred"), *common]) == 0
    for out in ("fit", "pred"):
        parts = sorted((tmp_path / out).glob("*.parquet"))
        assert len(parts) > 1 and pq.read_table(parts[0]).column("s").null_count == pq.read_table(parts[0]).num_rows
        for part in parts:
            schema = pq.read_schema(part)
            assert [str(schema.field(c).type) for c in ("dec", "s", "ts")] == \
                ["decimal128(10, 0)", "string", "timestamp[us, tz=Europe/Paris]"], (part, schema)
        got = pq.read_table(tmp_path / out)
        assert got.column("dec").equals(src.column("dec")) and got.column("ts").equals(src.column("ts"))
        assert got.column("s").to_pylist() == src.column("s").to_pylist()


def test_write_predictions_writes_ids_read_from_parquet_in_their_type(tmp_path):
    """As the command: ids that read_parquet gave are written in their Arrow type in every part (a part
    of null string ids was type null, a decimal's precision that of the part's values: a dataset pyarrow
    could not read), as one array or a list of them, by a mixture and a KMeans."""
    import decimal

    n = 300
    src = pa.table({"dec": pa.array([decimal.Decimal(i) for i in range(n)], pa.decimal128(10, 0)),
                    "s": pa.array([None if i < 100 else f"r{i}" for i in range(n)]),
                    "a": np.random.default_rng(0).normal(size=n), "b": np.random.default_rng(1).normal(size=n)})
    pq.write_table(src, tmp_path / "p.parquet")
    x, ids = read_parquet(tmp_path / "p.parquet", columns=["a", "b"], id_column=["dec", "s"], chunk_rows=100)
    for est, out in ((GaussianMixture(2, max_iter=3, random_state=0), "gmm"), (daskgmm.KMeans(2, random_state=0),
                                                                              "km")):
        est.fit(x).write_predictions(x, str(tmp_path / out), ids=ids, id_column=["dec", "s"])
        types = {(str(pq.read_schema(p).field("dec").type), str(pq.read_schema(p).field("s").type))
                 for p in (tmp_path / out).glob("*.parquet")}
        assert types == {("decimal128(10, 0)", "string")}, types
        assert pq.read_table(tmp_path / out).column("dec").equals(src.column("dec"))
    x, s = read_parquet(tmp_path / "p.parquet", columns=["a", "b"], id_column="s", chunk_rows=100)
    est.write_predictions(x, str(tmp_path / "one"), ids=s, id_column="s")
    assert pq.read_table(tmp_path / "one").column("s").to_pylist() == src.column("s").to_pylist()


def test_hive_partition_keys_are_columns_as_spark_and_dask_read_them(tmp_path):
    """The keys of a partitioned dataset (``partitionBy``, ``write_dataset(partitioning="hive")``:
    ``day=2026-12-01/hour=3/``) were not columns: naming one was an error. They are columns to name,
    as id column or, when numeric, as features (never features by default: a job's features do not
    change when its input gets partitioned); Hive's null is a missing value, values are
    percent-decoded; a file's own column of that name wins."""
    import pyarrow.dataset as pads

    t = pa.table({"a": np.arange(8.0), "b": np.arange(8.0) ** 2,
                  "day": ["2026-12-01"] * 4 + ["2026-12-02"] * 4, "hour": [3, 3, 7, 7] * 2,
                  "site": ["x/y", "x/y", None, None] * 2})
    pads.write_dataset(t, tmp_path / "ev", format="parquet", partitioning=["day", "hour", "site"],
                       partitioning_flavor="hive")
    ev = tmp_path / "ev"
    assert read_parquet(ev).shape == (8, 2)  # keys are not features by default
    x, ids = read_parquet(ev, columns=["a", "hour"], id_column="day")
    got = sorted(zip(np.asarray(x)[:, 0], np.asarray(x)[:, 1], np.asarray(ids)))
    assert got == [(i, [3, 3, 7, 7][i % 4], t["day"][i].as_py()) for i in range(8)]
    _, sites = read_parquet(ev, columns=["a"], id_column="site")
    assert sorted(np.asarray(sites), key=str) == sorted(["x/y"] * 4 + [None] * 4, key=str)  # x%2Fy, Hive null
    with pytest.raises(DataError, match=r"day=2026-12-01/.*: column 'day' is a partition key in the path "
                       r"\(day=2026-12-01\), and its value '2026-12-01' is not a number; feature columns must"):
        read_parquet(ev, columns=["a", "day"])
    # a single partition directory, and a glob of them: the keys of their paths too
    x, ids = read_parquet(ev / "day=2026-12-02", columns=["hour"], id_column="day")
    assert sorted(np.asarray(x)[:, 0]) == [3, 3, 7, 7] and set(np.asarray(ids)) == {"2026-12-02"}
    x = read_parquet(str(ev / "day=*" / "hour=7"), columns=["a", "hour"])
    assert sorted(map(tuple, np.asarray(x))) == [(2, 7), (3, 7), (6, 7), (7, 7)]
    # a file holding a column of the key's name is read as it is; a file without the key is named
    (tmp_path / "mix" / "hour=9").mkdir(parents=True)
    (tmp_path / "mix" / "hour=9" / "u=18446744073709551621").mkdir()  # an id beyond int64 keeps its digits
    pq.write_table(pa.table({"a": [1.0]}), tmp_path / "mix" / "hour=9" / "u=18446744073709551621" / "p.parquet")
    assert np.asarray(read_parquet(tmp_path / "mix", id_column="u")[1]).tolist() == ["18446744073709551621"]
    assert np.asarray(read_parquet(tmp_path / "mix", columns=["u"])).tolist() == [[2.0**64 + 5]]
    (tmp_path / "mix" / "hour=9" / "u=18446744073709551621" / "p.parquet").unlink()
    pq.write_table(pa.table({"a": [1.0], "hour": [5.0]}), tmp_path / "mix" / "hour=9" / "p0.parquet")
    assert np.asarray(read_parquet(tmp_path / "mix", columns=["hour"])).tolist() == [[5.0]]
    pq.write_table(pa.table({"a": [2.0]}), tmp_path / "mix" / "hour=9" / "p1.parquet")
    pq.write_table(pa.table({"a": [3.0]}), tmp_path / "mix" / "p2.parquet")
    with pytest.raises(DataError, match=r"p2.parquet: no column 'hour' \(it has: a\); 'hour' is a partition key "
                       "of other files"):
        read_parquet(tmp_path / "mix", columns=["a", "hour"])
    with pytest.raises(DataError, match=r"no column 'c' \(it has: a, b\); partition keys in its path: day, hour, "
                       "site$"):
        read_parquet(ev, columns=["c"])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_feature_types_may_differ_between_files(tmp_path, dtype):
    """A feature column that is int32 in one file, int64 or float32 in another and double in a third (a
    writer's inferred types drift between partitions) is read as the job's dtype; an id column's types
    must agree (its type is kept in the predictions), but integers of other widths are read as the wider,
    and text of any Arrow string type as strings."""
    d = tmp_path / "drift"
    d.mkdir()
    pq.write_table(pa.table({"k": pa.array([1, 2], pa.int64()), "a": pa.array([1, 2], pa.int32()),
                             "b": pa.array([0.5, 1.5], pa.float32())}), d / "p0.parquet")
    pq.write_table(pa.table({"k": pa.array([3], pa.int64()), "a": pa.array([3], pa.int64()),
                             "b": pa.array([2.5], pa.float64())}), d / "p1.parquet")
    pq.write_table(pa.table({"k": pa.array([4], pa.int64()), "a": pa.array([4.25], pa.float64()),
                             "b": pa.array([3], pa.int16())}), d / "p2.parquet")
    x, ids = read_parquet(d, columns=["a", "b"], id_column="k", dtype=dtype)
    assert x.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(np.asarray(x), np.array([[1, 0.5], [2, 1.5], [3, 2.5], [4.25, 3]], dtype))
    np.testing.assert_array_equal(np.asarray(ids), [1, 2, 3, 4])
    # integer ids of another width (Spark's IntegerType among pandas' int64) are read as the wider: they
    # were "schemas disagree"
    pq.write_table(pa.table({"k": pa.array([5], pa.int32()), "a": [5.0], "b": [5.0]}), d / "p3.parquet")
    _, ids = read_parquet(d, columns=["a", "b"], id_column="k", chunk_rows=1)
    chunks = [np.asarray(block.compute()) for block in ids.to_delayed().ravel()]
    assert ids.dtype == np.int64 and {c.dtype for c in chunks} == {np.dtype(np.int64)}  # each chunk: one parquet type
    assert np.concatenate(chunks).tolist() == [1, 2, 3, 4, 5]
    pq.write_table(pa.table({"k": pa.array(["x"]), "a": [5.0], "b": [5.0]}), d / "p4.parquet")
    with pytest.raises(DataError, match=r"schemas disagree: column 'k' is int64 in .*p0.parquet but string in "
                       r".*p4.parquet; an id column's type must be the same in every file \(integers of any"):
        read_parquet(d, columns=["a", "b"], id_column="k")
    # uint64 beside int64: no integer type holds both, which "integers of any width may mix" contradicted
    pq.write_table(pa.table({"k": pa.array([6], pa.uint64()), "a": [5.0], "b": [5.0]}), d / "p4.parquet")
    with pytest.raises(DataError, match=r"but uint64 in .*p4.parquet; integers of other widths are read as the "
                       r"wider, but no integer type holds every int64 and uint64: write the column as one type$"):
        read_parquet(d, columns=["a", "b"], id_column="k")
    # text ids of any Arrow string type (polars writes large_string, pandas' categories a dictionary)
    for i, kind in enumerate([pa.string(), pa.large_string(), pa.dictionary(pa.int32(), pa.string())]):
        pq.write_table(pa.table({"k": pa.array([f"id{i}"]).cast(kind), "a": [5.0], "b": [5.0]}),
                       d / f"p{i}.parquet")
    for f in ("p3", "p4"):
        (d / f"{f}.parquet").unlink()
    assert np.asarray(read_parquet(d, columns=["a", "b"], id_column="k")[1]).tolist() == ["id0", "id1", "id2"]


def test_several_id_columns_travel_with_their_rows_each_in_its_own_type(tmp_path):
    """``id_column=[...]`` (an ETL job's ``event_id`` and its Hive partition key ``day``): every name is read
    by the tasks that read the rows, in its own type (int64, a partition key's string, int32 widened to
    int64 where another file has int64, text), rows dropped with their ids (``nan_policy="omit"``), and
    written back in the order given, before the model's columns. A single name is a Dask array, as ever.
    A missing id, one that is also a feature, and a name given twice are errors naming the column."""
    rng = np.random.default_rng(0)
    rows = []
    for f, (day, site_type) in enumerate([("2026-12-01", pa.int32()), ("2026-12-02", pa.int64())]):
        (tmp_path / "ev" / f"day={day}").mkdir(parents=True)
        ev = np.arange(40) + 1000 * f
        a, b = rng.normal(size=40), rng.normal(size=40)
        a[[3, 25]] = np.nan  # dropped with their ids
        pq.write_table(pa.table({"event_id": pa.array(ev, pa.int64()), "a": a, "b": b,
                                 "site": pa.array(ev % 7, site_type), "tag": [f"t{e}" for e in ev]}),
                       tmp_path / "ev" / f"day={day}" / "p.parquet", row_group_size=15)
        rows += [(e, day, e % 7, f"t{e}", x, y) for e, x, y in zip(ev, a, b) if np.isfinite(x)]
    names = ["event_id", "day", "site", "tag"]
    with pytest.warns(RowsOmittedWarning):
        x, ids = read_parquet(tmp_path / "ev", columns=["a", "b"], id_column=names, nan_policy="omit", chunk_rows=7)
    assert isinstance(ids, list) and len(ids) == 4 and x.shape == (76, 2)
    assert [i.dtype for i in ids] == [np.dtype(np.int64), np.dtype(object), np.dtype(np.int64), np.dtype(object)]
    got = list(zip(*[np.asarray(i).tolist() for i in ids], *np.asarray(x).T.tolist()))
    assert got == rows  # each row beside its own ids, in file order
    gmm = GaussianMixture(2, max_iter=3, random_state=0).fit(x)
    gmm.write_predictions(x, str(tmp_path / "pred"), ids=ids, id_column=names, loglik=True)
    t = pq.read_table(tmp_path / "pred")
    assert t.column_names == [*names, "label", "loglik"]
    assert [str(t.schema.field(c).type) for c in names] == ["int64", "string", "int64", "string"]
    assert t.select(names).to_pylist() == [dict(zip(names, r[:4])) for r in rows]
    np.testing.assert_array_equal(t.column("label").to_numpy(), gmm.predict(np.asarray(x)))
    # in memory: a list of arrays, or a DataFrame with those columns; a single name as before
    import pandas as pd

    frame = pd.DataFrame({"day": [r[1] for r in rows], "event_id": [r[0] for r in rows]})
    for given in (frame, [frame["day"].to_numpy(), frame["event_id"].to_numpy()]):
        parts = gmm.prediction_parts(np.asarray(x), ids=given, id_column=["day", "event_id"])
        assert list(parts[0].compute()) == ["day", "event_id", "label"]
    _, one = read_parquet(tmp_path / "ev", columns=["b"], id_column="event_id")
    assert one.ndim == 1 and one.shape == (80,)
    assert open_parquet(tmp_path / "ev", columns=["b"], id_column="day").id_column == "day"
    # errors naming the column
    with pytest.raises(DataError, match=r"day=2026-12-01/p.parquet: no id column 'nope'"):
        read_parquet(tmp_path / "ev", columns=["a"], id_column=["event_id", "nope"])
    with pytest.raises(DataError, match="the id column 'b' is also listed as a feature column"):
        read_parquet(tmp_path / "ev", columns=["a", "b"], id_column=["event_id", "b"])
    with pytest.raises(DataError, match="id_column lists 'day' more than once"):
        read_parquet(tmp_path / "ev", columns=["a"], id_column=["day", "event_id", "day"])
    assert read_parquet(tmp_path / "ev", id_column=["event_id", "site", "tag"])[0].shape == (80, 2)  # ids: no features
    for bad, match in ((["day", "day"], "id_column lists 'day' more than once"),
                       (["day", "label"], "id_column='label' is the name of a column of the predictions"),
                       (["day", "event_id", "site"], r"id_column names 3 column\(s\) \(day, event_id, site\) but "
                                                     r"ids is 2 array\(s\)")):
        with pytest.raises(ValueError, match=match):
            gmm.write_predictions(np.asarray(x), tmp_path / "bad", ids=[frame["day"], frame["event_id"]],
                                  id_column=bad)
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("failure", ["refused", "no credentials", "unreachable", "corrupt"])
def test_a_read_the_store_refuses_a_worker_says_it_is_the_workers_environment(failure, monkeypatch):
    """The footers are read where the command runs, the chunks on the workers with their own hosts'
    credentials and endpoint (user-trial-r12: workers without AWS_ENDPOINT_URL or with another key
    failed "reading row group 0 ... failed (PermissionError: Forbidden)", exit 2 as a corrupt file,
    the unreachable endpoint too): the message names the worker and where its credentials come from,
    an endpoint it cannot reach is exit 1 as the command's own."""
    import botocore.exceptions

    from daskgmm.io import files, read
    from daskgmm.io.files import EndpointUnreachableError, Piece

    exc = {"refused": PermissionError("Forbidden"), "no credentials": botocore.exceptions.NoCredentialsError(),
           "unreachable": botocore.exceptions.EndpointConnectionError(endpoint_url="https://lake.s3.amazonaws.com/a"),
           "corrupt": OSError("Couldn't deserialize thrift")}[failure]

    class Store:
        protocol = ("s3", "s3a")

        def open(self, path, mode):
            raise exc

    piece = Piece("lake/events/part-0.parquet", ((0, 0, 10),), 10, (), (10,))
    monkeypatch.setattr(files, "this_worker", lambda: "worker tcp://10.0.0.7:4000")
    with pytest.raises(Exception) as info:
        read.read_piece(Store(), piece, ["a"], (), np.float64, "raise")
    msg = str(info.value)
    assert msg.startswith("lake/events/part-0.parquet")
    if failure == "unreachable":
        assert isinstance(info.value, EndpointUnreachableError)  # exit 1, as the command's own
        assert ("(read by worker tcp://10.0.0.7:4000): cannot connect to the S3 endpoint "
                "https://lake.s3.amazonaws.com") in msg
        assert "AWS_ENDPOINT_URL" in msg
    elif failure == "corrupt":
        assert type(info.value) is DataError and "reading row group 0 rows 0-10 failed (OSError: Couldn't" in msg
    else:
        assert type(info.value) is DataError  # exit 2, as refused credentials where the command runs
        assert "the store refused reading row group 0 rows 0-10 to worker tcp://10.0.0.7:4000" in msg
        assert "a worker reads with its own host's credentials" in msg and "AWS_ACCESS_KEY_ID" in msg


@pytest.mark.parametrize("failure", ["refused", "no credentials"])
def test_a_part_the_store_refuses_a_worker_names_the_worker_and_its_credentials(failure, monkeypatch):
    """The command checks an output with its own credentials, the workers write the parts with theirs
    (user-trial-r12: workers with read-only credentials ended "OSError: [Errno None] cannot write output
    ...: Access Denied"): the message names the worker and where its credentials come from, without
    "[Errno None]", and botocore's NoCredentialsError names the part too."""
    import botocore.exceptions

    from daskgmm.io import files, outputs

    exc = {"refused": PermissionError("Access Denied"), "no credentials": botocore.exceptions.NoCredentialsError()}

    class Store:
        protocol = ("s3", "s3a")

        def open(self, path, mode):
            raise exc[failure]

    monkeypatch.setattr(files, "this_worker", lambda: "worker tcp://10.0.0.7:4000")
    with pytest.raises(OSError) as info:
        outputs._write_part(Store(), "lake/pred/.p.staging-1", 3, {"label": np.zeros(4, np.int32)})
    msg = str(info.value)
    assert msg.startswith("cannot write lake/pred/.p.staging-1/part-00003.parquet: "), msg
    assert "(to worker tcp://10.0.0.7:4000: a worker writes with its own host's credentials" in msg
