"""NaN and infinity in the rows to predict on: scikit-learn's ValueError for NumPy and Dask input alike.

NumPy input is checked when the method is called; Dask input by the task that reads each chunk,
when the result is computed (the check cannot compute the array up front).
"""

import re
import time

import dask
import dask.array as da
import numpy as np
import pytest
import scipy.sparse as sp

import daskgmm

from .conftest import make_blobs
from .test_cli import tree_bytes

NAN = r"^Input X contains NaN\."
INF = r"^Input X contains infinity or a value too large for dtype\('float64'\)\."
#: every prediction-like method, and whether it is lazy for Dask input (score is computed)
METHODS = {"predict": True, "predict_proba": True, "score_samples": True, "transform": True, "score": False}


def _fitted():
    X, _, _ = make_blobs(n=400, d=3, k=3, seed=3)
    return X, [
        daskgmm.KMeans(3, random_state=0).fit(X),
        daskgmm.KMedoids(3, random_state=0).fit(X),
        daskgmm.GaussianMixture(3, random_state=0).fit(X),
        daskgmm.BayesianGaussianMixture(n_components=3, random_state=0, max_iter=20).fit(X),
        daskgmm.StudentTMixture(3, random_state=0, max_iter=20).fit(X),
    ]


@pytest.fixture(scope="module")
def fitted():
    return _fitted()


def _bad(X, value, row=371):
    Xb = X.copy()
    Xb[row, 1] = value
    return Xb


@pytest.mark.parametrize("value, match", [(np.nan, NAN), (np.inf, INF)])
def test_every_prediction_method_rejects_non_finite_rows(fitted, value, match):
    """NumPy input raises at the call; Dask input builds its graph, and the chunk with the bad value raises
    (scikit-learn's sentence first, then the column and where) when the result is computed."""
    X, estimators = fitted
    Xb = _bad(X, value)
    for est in estimators:
        for method, lazy in METHODS.items():
            if not hasattr(est, method):
                continue
            f = getattr(est, method)
            with pytest.raises(ValueError, match=match):
                f(Xb)
            if not lazy:
                with pytest.raises(ValueError, match=match):
                    f(da.from_array(Xb, chunks=100))
                continue
            out = f(da.from_array(Xb, chunks=100))  # lazy: nothing is read yet
            with pytest.raises(ValueError, match=match) as exc:
                out.compute()
            where = "column 1: 1 value(s) in its chunk, the first at row 371 (in rows 300 to 399 of X, chunk 4 of 4)."
            assert where in str(exc.value), (type(est).__name__, method, str(exc.value))
            # the other chunks are fine
            assert len(f(da.from_array(Xb[:300], chunks=100)).compute()) == 300


def test_the_check_names_columns_and_is_fused_with_the_prediction(fitted):
    """A Dask DataFrame's columns are named; the check runs in the task that predicts on its chunk."""
    import pandas as pd

    X, estimators = fitted
    km = estimators[0]
    cols = ["a", "b", "c"]
    frame = pd.DataFrame(_bad(X, np.nan), columns=cols)
    est = daskgmm.KMeans(3, random_state=0).fit(pd.DataFrame(X, columns=cols))
    import dask.dataframe as dd

    with pytest.raises(ValueError, match=NAN + r" column 'b': 1 value\(s\)"):
        est.predict(dd.from_pandas(frame, npartitions=4)).compute()
    labels = km.predict(da.from_array(X, chunks=100))
    graph = labels.__dask_optimize__(labels.__dask_graph__(), labels.__dask_keys__())
    checks = [k[0] for k in graph if isinstance(k, tuple) and "check_finite_rows" in k[0]]
    # no task of its own: the check runs in the task that labels the chunk
    assert len(checks) == 4 and all("nearest_labels" in k for k in checks), list(graph)


def test_sparse_rows_are_checked(fitted, tmp_path):
    X, _ = fitted
    km = daskgmm.KMeans(3, random_state=0).fit(sp.csr_array(X))
    Xb = sp.csr_array(_bad(X, np.nan))
    with pytest.raises(ValueError, match=NAN):
        km.predict(Xb)
    rows = da.from_array(Xb, chunks=(100, 3), asarray=False)
    for f in (km.predict, km.transform):
        with pytest.raises(ValueError, match=NAN + r" column 1: 1 value\(s\) in its chunk, the first at row 371 "
                                              r"\(in rows 300 to 399 of X, chunk 4 of 4\)"):
            f(rows).compute()
    with pytest.raises(ValueError, match=NAN):
        km.write_predictions(rows, str(tmp_path / "out"))
    assert not list(tmp_path.iterdir())


def test_missing_marginalize_keeps_nan_and_rejects_infinity():
    """With missing="marginalize" NaN is data (lazily too); infinity is still scikit-learn's error."""
    X, _, _ = make_blobs(n=400, d=3, k=3, seed=3)
    Xn = _bad(X, np.nan)
    for cls in (daskgmm.GaussianMixture, daskgmm.StudentTMixture):
        est = cls(3, random_state=0, missing="marginalize", max_iter=20).fit(Xn)
        for method in ("predict", "predict_proba", "score_samples"):
            np.testing.assert_allclose(getattr(est, method)(da.from_array(Xn, chunks=100)).compute(),
                                       getattr(est, method)(Xn))
        with pytest.raises(ValueError, match=INF + r" column 1: 1 value\(s\) in its chunk, the first at row 372 "
                                              r"\(in rows 300 to 399 of X"):
            est.predict(da.from_array(_bad(Xn, np.inf, row=372), chunks=100)).compute()


def _last_late(block, block_info=None):
    """The rows of a block; the last block comes late, when the other parts are written."""
    if block_info[0]["chunk-location"][0] == block_info[0]["num-chunks"][0] - 1:
        time.sleep(0.5)
    return block


@pytest.mark.parametrize("which", [0, 1, 2])
def test_write_predictions_with_nan_in_the_last_chunk_writes_nothing(fitted, tmp_path, which):
    """The NaN is in the last chunk, read after the other parts are written (other ids: every part
    differs): the previous output stays byte for byte, and no staging directory is left."""
    X, estimators = fitted
    est = estimators[which]
    out = tmp_path / "out"
    assert est.write_predictions(da.from_array(X, chunks=50), str(out), ids=np.arange(400)) == 400
    before = tree_bytes(out)
    rows = da.from_array(_bad(X, np.nan, row=399), chunks=50).map_blocks(_last_late, dtype=X.dtype)
    with dask.config.set(scheduler="threads"):
        with pytest.raises(ValueError, match=NAN + r" column 1: 1 value\(s\) in its chunk, the first at row 399 "
                                              r"\(in rows 350 to 399 of X, chunk 8 of 8\)"):
            est.write_predictions(rows, str(out), ids=np.arange(400) + 1000)
    assert tree_bytes(out) == before
    assert not [p for p in tmp_path.iterdir() if ".staging-" in p.name]


@pytest.mark.parametrize("value, match", [(np.nan, NAN), (np.inf, INF)])
@pytest.mark.parametrize("kind", ["array", "frame"])
def test_score_and_partial_fit_on_dask_input_name_the_rows(value, match, kind):
    """KMeans' and GaussianMixture's ``score`` and ``partial_fit`` (the first batch and a later one) on a
    Dask array or DataFrame with a NaN or an infinity: scikit-learn's sentence, then the column, the chunk's
    rows and the first bad row, as ``predict`` says it (they said the column alone)."""
    import dask.dataframe as dd
    import pandas as pd

    X, _, _ = make_blobs(n=400, d=3, k=3, seed=3)
    Xb = _bad(X, value)
    cols = ["a", "b", "c"]

    def lazy(a):
        if kind == "array":
            return da.from_array(a, chunks=100)
        return dd.from_pandas(pd.DataFrame(a, columns=cols), npartitions=4, sort=False)

    column = "column 1" if kind == "array" else "column 'b'"
    where = f"{column}: 1 value(s) in its chunk, the first at row 371 (in rows 300 to 399 of X, chunk 4 of 4)."
    fit_on = X if kind == "array" else pd.DataFrame(X, columns=cols)
    for make in (lambda: daskgmm.KMeans(3, random_state=0), lambda: daskgmm.GaussianMixture(3, random_state=0)):
        fitted = make().fit(fit_on)
        calls = {"score": lambda x, e=fitted: e.score(x),
                 "partial_fit (a later batch)": lambda x, e=fitted: e.partial_fit(x),
                 "partial_fit (the first batch)": lambda x, m=make: m().partial_fit(x)}
        for what, call in calls.items():
            with pytest.raises(ValueError, match=match) as exc:
                call(lazy(Xb))
            assert where in str(exc.value), (type(fitted).__name__, what, str(exc.value))
    with pytest.raises(ValueError, match=match) as exc:  # KMedoids has score, no partial_fit
        daskgmm.KMedoids(3, random_state=0).fit(fit_on).score(lazy(Xb))
    assert where in str(exc.value), str(exc.value)


FITTERS = {
    "GaussianMixture": lambda: daskgmm.GaussianMixture(3, random_state=0, max_iter=5),
    "KMeans": lambda: daskgmm.KMeans(3, random_state=0, max_iter=5),
    "BayesianGaussianMixture": lambda: daskgmm.BayesianGaussianMixture(n_components=3, random_state=0,
                                                                       max_iter=5),
    "StudentTMixture": lambda: daskgmm.StudentTMixture(3, random_state=0, max_iter=5),
}


@pytest.mark.parametrize("value, match", [(np.nan, NAN), (np.inf, INF)])
@pytest.mark.parametrize("name", list(FITTERS))
def test_fit_on_dask_input_names_the_first_bad_row_and_its_chunk(name, value, match):
    """The first scan finds the smallest bad row whatever the chunking (found by the scan's own kernel);
    the message keeps scikit-learn's sentence first and the advice after."""
    X, _, _ = make_blobs(n=400, d=3, k=3, seed=3)
    Xb = _bad(_bad(X, value, row=390), value, row=371)
    Xb[395, 0] = value
    for chunks, where in [(100, "(in rows 300 to 399 of X, chunk 4 of 4)"),
                          ((150, 230, 20), "(in rows 150 to 379 of X, chunk 2 of 3)")]:
        with pytest.raises(ValueError, match=match) as exc:
            FITTERS[name]().fit(da.from_array(Xb, chunks=(chunks, 3)))
        msg = str(exc.value)
        assert "column 1: 2 value(s)" in msg and "column 0: 1 value(s)" in msg, msg
        assert f"the first at row 371 {where}" in msg, msg
        if value != value:  # NaN: the advice is kept
            assert "nan_policy='omit'" in msg, msg


def test_fit_on_a_dask_dataframe_names_columns_and_the_first_bad_row():
    import dask.dataframe as dd
    import pandas as pd

    X, _, _ = make_blobs(n=400, d=3, k=3, seed=3)
    frame = dd.from_pandas(pd.DataFrame(_bad(X, np.nan, row=250), columns=["a", "b", "c"]), npartitions=4)
    with pytest.raises(ValueError, match=NAN) as exc:
        daskgmm.GaussianMixture(3, random_state=0, max_iter=5).fit(frame)
    assert "column 'b': 1 value(s), the first at row 250 (in rows 200 to 299 of X, chunk 3 of 4)" in str(exc.value)


@pytest.mark.parametrize("model", ["GaussianMixture", "KMeans"])
def test_partial_fit_scan_names_a_dataframe_batchs_columns_after_a_numpy_fit(model, monkeypatch):
    """A model fitted on a NumPy array has no names; a later DataFrame batch has. The check of the batch's
    scan (what catches a bad value when no chunk check ran before it) names the batch's columns."""
    import dask.dataframe as dd
    import pandas as pd

    import daskgmm.validation.checks as checks

    X, _, _ = make_blobs(n=400, d=3, k=3, seed=3)
    est = FITTERS[model]().fit(X)
    # the scan's own check, which the chunk check (finite_chunks) otherwise pre-empts
    monkeypatch.setattr(checks, "finite_chunks", lambda Xd, *args, **kwargs: Xd)
    frame = dd.from_pandas(pd.DataFrame(_bad(X, np.nan, row=250), columns=["a", "b", "c"]), npartitions=4)
    with pytest.warns(UserWarning, match="feature names"), pytest.raises(ValueError, match=NAN) as exc:
        est.partial_fit(frame)
    assert "column 'b': 1 value(s)" in str(exc.value), str(exc.value)


@pytest.mark.parametrize("model", ["GaussianMixture", "KMeans"])
def test_partial_fit_scan_names_the_models_columns_for_an_unnamed_batch(model, monkeypatch):
    """The reverse: fitted on a DataFrame, given a Dask array batch, the scan's check uses the model's names."""
    import pandas as pd

    import daskgmm.validation.checks as checks

    X, _, _ = make_blobs(n=400, d=3, k=3, seed=3)
    est = FITTERS[model]().fit(pd.DataFrame(X, columns=["a", "b", "c"]))
    monkeypatch.setattr(checks, "finite_chunks", lambda Xd, *args, **kwargs: Xd)
    with pytest.warns(UserWarning, match="feature names"), pytest.raises(ValueError, match=NAN) as exc:
        est.partial_fit(da.from_array(_bad(X, np.nan, row=250), chunks=100))
    assert "column 'b': 1 value(s)" in str(exc.value), str(exc.value)


def test_fit_names_the_first_infinite_row_under_marginalize_and_sparse_rows():
    """Under missing="marginalize" NaN is data: the first row named is the first infinite one. Sparse Dask
    rows (k-means) are scanned by their own kernel, which finds the first bad row too."""
    X, _, _ = make_blobs(n=400, d=3, k=3, seed=3)
    Xb = _bad(_bad(X, np.nan, row=10), np.inf, row=371)
    with pytest.raises(ValueError, match=INF) as exc:
        daskgmm.GaussianMixture(3, random_state=0, max_iter=5, missing="marginalize").fit(
            da.from_array(Xb, chunks=100))
    assert "the first at row 371 (in rows 300 to 399 of X, chunk 4 of 4)" in str(exc.value), str(exc.value)
    Xs = _bad(_bad(X, np.nan, row=395), np.nan, row=371)
    with pytest.raises(ValueError, match=NAN) as exc:
        daskgmm.KMeans(3, random_state=0, max_iter=5).fit(da.from_array(Xs, chunks=100).map_blocks(sp.csr_matrix))
    assert "the first at row 371 (in rows 300 to 399 of X, chunk 4 of 4)" in str(exc.value), str(exc.value)


@pytest.mark.parametrize("value, match", [(np.nan, NAN), (np.inf, INF)])
def test_fit_and_predict_place_the_first_bad_row_in_the_same_words(value, match):
    """One phrasing (daskgmm.kernels.scan.first_bad_row) for the fit's scan, the rows to predict on and
    Parquet data: the fit said "the first at row 371 (in rows 300 to 399 of X, chunk 4 of 4)", a
    prediction "in rows 300 to 399 of X (chunk 4 of 4), the first at row 371"."""
    from daskgmm.io.files import Piece
    from daskgmm.io.read import first_bad_row

    X, _, _ = make_blobs(n=400, d=3, k=3, seed=3)
    Xb = da.from_array(_bad(X, value), chunks=100)
    place = "the first at row 371 (in rows 300 to 399 of X, chunk 4 of 4)"
    with pytest.raises(ValueError, match=match) as fit:
        daskgmm.GaussianMixture(3, random_state=0, max_iter=5).fit(Xb)
    with pytest.raises(ValueError, match=match) as predict:
        daskgmm.GaussianMixture(3, random_state=0, max_iter=5).fit(X).predict(Xb).compute()
    for exc in (fit, predict):
        msg = str(exc.value)
        assert re.match(match, msg) and "column 1: 1 value(s)" in msg and place in msg, msg
    pieces = [Piece(f"p{i}.parquet", ((0, 0, 100),), 100, (1, 0), (100,)) for i in range(4)]
    assert first_bad_row(pieces, [-1, -1, -1, 71]) == (
        "the first at row 371 (p3.parquet, row group 0, row 71; in rows 300 to 399 of the data, chunk 4 of 4)")


def test_the_first_bad_row_is_one_the_message_counts():
    """NaN's sentence comes first (scikit-learn's), but the first bad row may hold an infinity: the counts
    then name the infinite values too, so the row placed is one of the values named (it said "column 1:
    1 value(s), the first at row 310", and row 310 holds no NaN, its infinity is in column 2)."""
    X, _, _ = make_blobs(n=400, d=3, k=3, seed=3)
    Xb = _bad(X, np.nan, row=371)
    Xb[310, 2] = np.inf
    Xb = da.from_array(Xb, chunks=100)
    with pytest.raises(ValueError, match=NAN) as fit:
        daskgmm.GaussianMixture(3, random_state=0, max_iter=5).fit(Xb)
    with pytest.raises(ValueError, match=NAN) as predict:
        daskgmm.GaussianMixture(3, random_state=0, max_iter=5).fit(X).predict(Xb).compute()
    for exc in (fit, predict):
        msg = str(exc.value)
        assert "column 1: 1 value(s); infinity in column 2: 1 value(s)" in msg, msg
        assert "the first at row 310 (in rows 300 to 399 of X, chunk 4 of 4)" in msg, msg
