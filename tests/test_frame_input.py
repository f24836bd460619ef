"""pandas and Dask DataFrames with the column types real data sets have, through the Python API."""

import numpy as np
import pandas as pd
import pytest

from daskgmm import (
    BayesianGaussianMixture,
    GaussianMixture,
    KMeans,
    KMedoids,
    StudentTMixture,
    select_model,
)

ESTIMATORS = {
    "GaussianMixture": lambda: GaussianMixture(2, max_iter=3, random_state=0),
    "BayesianGaussianMixture": lambda: BayesianGaussianMixture(n_components=2, max_iter=3, random_state=0),
    "StudentTMixture": lambda: StudentTMixture(2, max_iter=3, random_state=0),
    "KMeans": lambda: KMeans(2, max_iter=3, n_init=1, random_state=0),
    "KMedoids": lambda: KMedoids(2, max_iter=3, random_state=0),
}


def _times(n=40):
    rng = np.random.default_rng(0)
    return {
        "timestamps alone": pd.DataFrame({"ts": pd.date_range("2026-01-01", periods=n, freq="h")}),
        "durations alone": pd.DataFrame({"td": pd.to_timedelta(np.arange(n), unit="s")}),
        "timestamps beside floats": pd.DataFrame(
            {"a": rng.normal(size=n), "ts": pd.date_range("2026-01-01", periods=n, freq="h")}),
        "timestamps beside ints": pd.DataFrame(
            {"a": np.arange(n), "ts": pd.date_range("2026-01-01", periods=n, freq="h", tz="UTC")}),
    }


@pytest.mark.parametrize("case", list(_times()))
@pytest.mark.parametrize("est", list(ESTIMATORS))
def test_a_timestamp_column_is_refused_naming_it(est, case):
    # NumPy casts datetime64 to its integer count: a frame of timestamps alone was fitted as
    # microseconds since 1970 (means ~1.8e15), silently, where a Dask frame is refused
    X = _times()[case]
    col = "td" if "durations" in case else "ts"
    with pytest.raises(ValueError, match=rf"{est} needs numeric features; column\(s\) '{col}' .*timestamps or "
                                         "durations"):
        ESTIMATORS[est]().fit(X)


def test_a_datetime64_array_is_refused():
    X = np.arange(40).astype("datetime64[s]").reshape(-1, 1)
    with pytest.raises(ValueError, match=r"dtype datetime64\[s\] \(timestamps or durations\)"):
        GaussianMixture(1).fit(X)


def test_select_model_refuses_a_timestamp_column():
    with pytest.raises(ValueError, match=r"select_model needs numeric features; column\(s\) 'ts'"):
        select_model(_times()["timestamps alone"], n_components=[1, 2], covariance_types=["diag"])


@pytest.mark.parametrize("est", ["GaussianMixture", "KMeans"])
def test_predict_refuses_a_timestamp_column_where_the_fit_had_numbers(est):
    # the model's column 'ts' held numbers; a frame whose 'ts' holds timestamps was predicted on
    # as integer counts, every row to one component
    rng = np.random.default_rng(1)
    model = ESTIMATORS[est]().fit(pd.DataFrame({"ts": rng.normal(size=40)}))
    with pytest.raises(ValueError, match=r"column\(s\) 'ts' .*timestamps"):
        model.predict(_times()["timestamps alone"])


def test_a_dask_frame_of_arrow_decimals_is_fitted_as_pandas_and_parquet_are():
    # pandas.read_parquet(dtype_backend="pyarrow") reads a decimal column as ArrowDtype (kind "O"):
    # a Dask frame of it was refused as "not numeric", where the pandas frame and the file are fitted
    import decimal

    import dask.dataframe as dd
    import pyarrow as pa

    rng = np.random.default_rng(2)
    frame = pd.DataFrame({
        "a": rng.normal(size=40),
        "dec": pd.array([decimal.Decimal(f"{v:.2f}") for v in rng.normal(size=40)],
                        dtype=pd.ArrowDtype(pa.decimal128(5, 2))),
    })
    ref = GaussianMixture(2, max_iter=3, random_state=0).fit(frame)
    got = GaussianMixture(2, max_iter=3, random_state=0).fit(dd.from_pandas(frame, npartitions=2))
    np.testing.assert_allclose(got.means_, ref.means_, rtol=1e-10)
    assert list(got.feature_names_in_) == ["a", "dec"]


@pytest.mark.parametrize("kind", ["Int64", "string", "object"])
def test_ids_with_missing_values_are_written_as_they_are(tmp_path, kind):
    # an Int64 column of ids with a missing one was written as double (ids over 2**53 rounded);
    # strings with a missing one failed in Arrow ("Expected bytes, got a 'NAType' object", or 'float')
    import pyarrow.parquet as pq

    rng = np.random.default_rng(3)
    X = pd.DataFrame({"a": rng.normal(size=30), "b": rng.normal(size=30)})
    want = [(2**60 + i if kind == "Int64" else f"r{i}") if i != 3 else None for i in range(30)]
    # a NumPy array of objects with NaN for the missing id, as pandas' str columns give
    ids = np.array([np.nan if v is None else v for v in want], dtype=object) if kind == "object" else \
        pd.Series(want, dtype=kind)
    gmm = GaussianMixture(2, max_iter=3, random_state=0).fit(X)
    gmm.write_predictions(X, str(tmp_path / "pred"), ids=ids, id_column="key")
    table = pq.read_table(tmp_path / "pred")
    assert str(table.schema.field("key").type) == ("int64" if kind == "Int64" else "string")
    assert table.column("key").to_pylist() == want


def test_ids_from_a_dask_series_are_written_as_they_are(tmp_path):
    # a Dask Series of Int64 ids was computed whole in the client by np.asarray, which made them float
    import dask.dataframe as dd
    import pyarrow.parquet as pq

    rng = np.random.default_rng(4)
    want = [2**60 + i if i != 17 else None for i in range(60)]
    frame = pd.DataFrame({"a": rng.normal(size=60), "b": rng.normal(size=60),
                          "id": pd.array(want, dtype="Int64")})
    X = dd.from_pandas(frame, npartitions=3)
    gmm = GaussianMixture(2, max_iter=3, random_state=0).fit(X[["a", "b"]])
    gmm.write_predictions(X[["a", "b"]], str(tmp_path / "pred"), ids=X["id"])
    table = pq.read_table(tmp_path / "pred")
    assert {str(pq.read_schema(p).field("id").type) for p in (tmp_path / "pred").glob("*.parquet")} == {"int64"}
    assert table.column("id").to_pylist() == want


def _typed(kind, values):
    """``values`` as a column of ``kind``: numbers in an object column, a Categorical, or text."""
    if kind == "object":
        return pd.Series(list(values), dtype=object)
    if kind == "category":
        return pd.Series(pd.Categorical(values))
    return pd.Series([str(v) for v in values], dtype="string")


@pytest.mark.parametrize("kind", ["object", "category", "string"])
@pytest.mark.parametrize("est", ["GaussianMixture", "KMeans"])
def test_a_pandas_frame_and_its_dask_frame_are_fitted_on_the_same_numbers(est, kind):
    # scikit-learn's check_array fits an object column of numbers, a Categorical of numbers (by its
    # values) and text that reads as numbers: the pandas frame was fitted so, its Dask frame refused
    # ("column(s) 'b' are not numeric"; dd.from_pandas makes the object column text)
    import dask.dataframe as dd

    rng = np.random.default_rng(5)
    a, b = rng.normal(size=60), rng.integers(0, 3, 60).astype(float)
    ref = ESTIMATORS[est]().fit(pd.DataFrame({"a": a, "b": b}))
    frame = pd.DataFrame({"a": a, "b": _typed(kind, b)})
    attr = "means_" if est == "GaussianMixture" else "cluster_centers_"
    for X in (frame, dd.from_pandas(frame, npartitions=3)):
        got = ESTIMATORS[est]().fit(X)
        np.testing.assert_allclose(getattr(got, attr), getattr(ref, attr), rtol=1e-10, atol=1e-12)
        assert list(got.feature_names_in_) == ["a", "b"]
        np.testing.assert_array_equal(np.asarray(got.predict(X)), ref.predict(pd.DataFrame({"a": a, "b": b})))


@pytest.mark.parametrize("other", ["bool", "int8", "uint16", "float16", "float32", "int32", "float64", "Float32"])
@pytest.mark.parametrize("est", ["GaussianMixture", "KMeans"])
def test_a_dask_frame_is_fitted_in_the_dtype_of_its_pandas_frame(est, other):
    # scikit-learn's check_array gives a frame of NumPy columns their common type when that is float32
    # (a float32 column beside booleans or small integers: float32), else float64; the Dask frame of the
    # same columns was fitted in float64 unless every column was float32
    import dask.dataframe as dd

    rng = np.random.default_rng(7)
    a = rng.normal(size=60).astype(np.float32)
    b = pd.Series(rng.integers(0, 3, 60)).astype(other)
    frame = pd.DataFrame({"a": a, "b": b})
    attr = "means_" if est == "GaussianMixture" else "cluster_centers_"
    ref = ESTIMATORS[est]().fit(frame)
    got = ESTIMATORS[est]().fit(dd.from_pandas(frame, npartitions=3))
    assert getattr(got, attr).dtype == getattr(ref, attr).dtype
    np.testing.assert_allclose(getattr(got, attr), getattr(ref, attr), rtol=1e-5)


@pytest.mark.parametrize("kind", ["object", "category", "string"])
def test_a_column_of_labels_is_refused_alike_in_pandas_and_dask_naming_it(kind):
    import dask.dataframe as dd

    rng = np.random.default_rng(6)
    frame = pd.DataFrame({"a": rng.normal(size=60), "tag": _typed(kind, ["x"] * 60)})
    for X in (frame, dd.from_pandas(frame, npartitions=3)):
        with pytest.raises(ValueError, match=rf"could not convert string to float: 'x'\. GaussianMixture needs "
                                             rf"numeric features; column 'tag' \(({kind}|string)\) holds 'x', "
                                             "which is not a number"):
            GaussianMixture(2, max_iter=3, random_state=0).fit(X)
    with pytest.raises(ValueError, match=r"column 'tag' \(category\) holds 'x'.*X\['tag'\]\.cat\.codes"):
        GaussianMixture(2).fit(dd.from_pandas(frame.astype({"tag": "category"}), npartitions=3))


def test_a_narrow_column_selection_of_a_parquet_frame_is_fitted(tmp_path):
    """dd.read_parquet(...)[["a"]] (and a weight Series made from the frame): dask-expr fuses the
    partitions of a narrow selection when it builds the array, so the rows counted per partition of
    the frame did not match and every fit and predict failed in Dask's to_dask_array ("The number
    of items in 'lengths' does not match the number of partitions. 2 != 4")."""
    dd = pytest.importorskip("dask.dataframe")
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(400, 5)), columns=list("abcde"))
    df["a"] += np.where(np.arange(400) % 2 == 0, 5.0, -5.0)
    for i in range(4):
        df.iloc[i * 100:(i + 1) * 100].to_parquet(tmp_path / f"part-{i}.parquet", index=False)
    frame = dd.read_parquet(str(tmp_path))
    w = (frame["b"] > 0).astype(float) + 1.0
    weights = (df["b"] > 0).astype(float).to_numpy() + 1.0
    for est in (GaussianMixture(2, random_state=0), KMeans(2, n_init=1, random_state=0)):
        ours = est.fit(frame[["a"]], sample_weight=w)
        ref = type(est)(**est.get_params()).fit(df[["a"]], sample_weight=weights)
        got = ours.means_ if hasattr(ours, "means_") else ours.cluster_centers_
        want = ref.means_ if hasattr(ref, "means_") else ref.cluster_centers_
        np.testing.assert_allclose(got, want, rtol=1e-9)
        np.testing.assert_array_equal(np.asarray(ours.predict(frame[["a"]])), ref.predict(df[["a"]]))


@pytest.mark.parametrize("est", ["GaussianMixture", "KMeans"])
def test_ids_of_a_wide_parquet_frame_stay_with_their_rows(tmp_path, est):
    """Ids given as a Dask Series of a wide multi-file Parquet frame, rows a narrow selection of it:
    dask-expr fuses the partitions of narrow selections (8 files, 3 fused parts here), and may fuse them
    differently when it counts the rows per partition and when it cuts the Delayed parts; the ids were
    the Delayed parts zipped with the counts, so every part is counted itself now. Each row's id must be
    written beside that row's label."""
    dd = pytest.importorskip("dask.dataframe")
    import pyarrow.parquet as pq

    rng = np.random.default_rng(7)
    frames = []
    for i in range(8):
        part = pd.DataFrame(rng.normal(size=(50, 40)), columns=[f"c{j}" for j in range(40)])
        part["c0"] += np.where(rng.random(50) < 0.5, 6.0, -6.0)
        part["id"] = [f"row-{i * 50 + r}" for r in range(50)]
        part.to_parquet(tmp_path / f"part-{i}.parquet", index=False)
        frames.append(part)
    df = pd.concat(frames, ignore_index=True)
    frame = dd.read_parquet(str(tmp_path / "part-*.parquet"))
    rows = frame[["c0", "c1"]]
    model = ESTIMATORS[est]().fit(df[["c0", "c1"]])
    assert model.write_predictions(rows, str(tmp_path / "pred"), ids=frame["id"]) == 400
    table = pq.read_table(tmp_path / "pred").to_pandas()
    assert sorted(table["id"]) == sorted(df["id"])
    want = pd.Series(model.predict(df[["c0", "c1"]]), index=df["id"])
    np.testing.assert_array_equal(table["label"].to_numpy(), want[table["id"]].to_numpy())
