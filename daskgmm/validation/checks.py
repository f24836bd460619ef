"""Input checks: any supported input as row-chunked Dask arrays, and what scikit-learn cannot do for Dask.

scikit-learn provides the base classes, ``NotFittedError``, ``ConvergenceWarning``
and the validation of in-memory input (``sklearn.utils.validation.validate_data``,
which also keeps ``n_features_in_`` and ``feature_names_in_``). This module adds:

- Dask arrays and DataFrames turned into row-chunked Dask arrays without pulling
  them to the client (shape, dtype and feature names are checked from metadata;
  values are checked by the first pass);
- in-memory input wrapped as a Dask array for the same passes;
- :func:`prepare_rows`: the input as :class:`daskgmm.engine.passes.ChunkedData`, with its first scan checked.

It also names the two other halves of validation, so that estimators import from one
place: parameter constraints (:mod:`daskgmm.validation.params`: ``Interval``, ``Options``,
``validate_params``, scikit-learn's ``InvalidParameterError``) and the checks of the first
scan (:mod:`daskgmm.validation.scan`: non-finite values, weights, degenerate data).
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.utils.validation import validate_data

from daskgmm.engine.cluster import with_known_columns, with_known_rows
from daskgmm.engine.sizes import csr_chunk
from daskgmm.validation.params import (
    ARRAY_LIKE,
    BOOLEAN,
    CALLABLE,
    NONE,
    RANDOM_STATE,
    VERBOSE,
    Interval,
    InvalidParameterError,
    Options,
    check_missing_supported,
    validate_params,
    warn_convergence,
)
from daskgmm.validation.scan import (
    DataError,
    DegenerateDataWarning,
    EmptyRowsWarning,
    bad_weights_message,
    check_finite,
    check_scan,
    far_rows_remain,
    most_missing,
    warn_degenerate,
    warn_far_rows,
    weight_sum_message,
)

__all__ = [
    "ARRAY_LIKE", "BOOLEAN", "CALLABLE", "NONE", "RANDOM_STATE", "VERBOSE", "ConvergenceWarning",
    "DegenerateDataWarning", "EmptyRowsWarning", "Interval", "InvalidParameterError", "NotFittedError", "Options",
    "check_finite", "check_missing_supported", "check_rows", "check_scan", "check_weights", "finite_chunks",
    "in_memory_rows",
    "input_or_model_names", "is_dask", "is_dask_array", "is_dask_dataframe", "is_sparse", "prediction_chunks",
    "prediction_rows", "prepare_rows", "validate_params",
    "warn_convergence", "warn_degenerate",
]


# ---------------------------------------------------------------------------
# Input


def is_dask_array(X) -> bool:
    return type(X).__module__.startswith("dask.array") and hasattr(X, "chunks")


def is_dask_dataframe(X) -> bool:
    mod = type(X).__module__
    return mod.startswith("dask.dataframe") or mod.startswith("dask_expr")


def is_dask(X) -> bool:
    return is_dask_array(X) or is_dask_dataframe(X)


def is_sparse(X) -> bool:
    """A scipy.sparse matrix or array in memory, a pandas DataFrame of sparse columns only (scikit-learn's
    ``check_array`` takes it as a sparse matrix; one with dense columns too it makes dense, warning), a 2-D
    pydata ``sparse`` array, or a Dask array whose chunks are scipy.sparse or pydata ``sparse``."""
    import scipy.sparse

    if _is_pandas_frame(X):
        return len(X.columns) > 0 and all(type(dt).__name__ == "SparseDtype" for dt in X.dtypes)
    x = getattr(X, "_meta", X) if is_dask_array(X) else X
    return scipy.sparse.issparse(x) or _is_pydata_sparse(x)


def _is_pydata_sparse(x) -> bool:
    """A pydata ``sparse`` array (COO, GCXS): Dask's own sparse chunks, taken as the scipy.sparse rows they
    convert to (they raised pydata's 'Cannot convert a sparse array to dense automatically')."""
    return type(x).__module__.split(".")[0] == "sparse" and hasattr(x, "to_scipy_sparse")


def _frame_float_dtype(dtypes) -> np.dtype:
    """What a frame converts to, by scikit-learn's ``check_array`` rule: float32 when its columns are all
    NumPy types whose common type is float32 (float32 beside booleans, small integers or float16 too),
    else float64 (nullable, Arrow, object or text columns among them; an int32 beside a float32)."""
    dts = list(dtypes)
    if dts and all(isinstance(d, np.dtype) for d in dts) and np.result_type(*dts) == np.float32:
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def default_chunk_rows(n_rows: int) -> int:
    """Rows per chunk for in-memory input: a few chunks per core, 4k to 256k rows each."""
    cores = os.cpu_count() or 1
    return int(min(262144, max(4096, math.ceil(n_rows / (4 * cores)))))


def _shape_errors(shape, name, min_samples=1) -> None:
    n = shape[0]
    if not math.isnan(n) and n < min_samples:
        raise ValueError(
            f"Found array with {n} sample(s) (shape={tuple(shape)}) while a minimum of "
            f"{min_samples} is required by {name}."
        )
    if shape[1] < 1:
        raise ValueError(
            f"Found array with 0 feature(s) (shape={tuple(shape)}) while a minimum of 1 is "
            f"required by {name}."
        )


def _reject_sparse(X, name):
    if is_sparse(X):
        if is_dask_array(X):
            # "pass a Dask array" told the owner of one (of sparse chunks) nothing: say how to make it dense
            advice = ("X is a Dask array of sparse chunks: make its chunks dense, X.map_blocks(lambda b: "
                      "b.toarray(), dtype=X.dtype) (pydata sparse chunks: b.todense())")
        else:
            advice = "for data larger than memory, pass a Dask array or daskgmm.read_parquet(...)"
        raise TypeError(
            "Sparse data was passed for X, but dense data is required. Use '.toarray()' to convert to a "
            f"dense numpy array. {name} fits dense rows only (its statistics are dense); {advice}."
        )


def _dask_rows(X, name, min_samples):
    """A Dask array or DataFrame as a 2-D float Dask array (lazy; values are checked by the passes)."""
    if is_dask_dataframe(X):
        if getattr(X, "ndim", 2) == 1:
            raise ValueError("Expected a 2-dimensional container but got a Dask Series instead.")
        bad = [c for c in _non_numeric_columns(X) if not _converted(X.dtypes[c])]
        if bad:
            raise ValueError(
                f"{name} needs numeric features; column(s) {', '.join(map(repr, bad))} are not numeric."
            )
        dtype = _frame_float_dtype(X.dtypes)
        if any(_converted(dt) for dt in X.dtypes):
            _check_categories(X, name)  # known categories that are no numbers: refused now, before any read
            meta = X._meta.iloc[:0].astype(dtype)
            # each partition's object, text and Categorical columns are converted by the task that
            # reads it (the count of rows below is the first), a value that is no number named
            frame = X.map_partitions(frame_as_numbers, name, dtype, meta=meta)
        else:
            frame = X.astype(dtype)  # nullable (extension) columns become float with NaN for missing values
        arr = with_known_rows(frame)
    else:
        _check_dims(X, name)
        if X.dtype.kind == "c":
            raise ValueError("Complex data not supported")
        if X.dtype.kind not in "biuf":
            raise ValueError(f"{name} needs numeric features; got a Dask array of dtype {X.dtype}.")
        arr = X if X.dtype in (np.float32, np.float64) else X.astype(np.float64)
        if is_sparse(arr):
            arr = _csr_chunks(arr)
        arr = with_known_rows(arr)
    _shape_errors(arr.shape, name, min_samples)
    if arr.numblocks[1] != 1:
        arr = arr.rechunk({1: -1})
    return arr


def _check_dims(X, name):
    """A Dask array of rows is 2-D: scikit-learn's sentences for NumPy input of other dimensions (its
    reshape advice is for 1-D arrays; an image of shape (H, W, C) was told to reshape to (-1, 1))."""
    if X.ndim > 2:
        raise ValueError(f"Found array with dim {X.ndim}, while dim <= 2 is required by {name}.")
    if X.ndim != 2:
        raise ValueError(
            f"Expected 2D array, got {X.ndim}D array instead:\narray={X!r}.\nReshape your data either using "
            "array.reshape(-1, 1) if your data has a single feature or array.reshape(1, -1) if it "
            "contains a single sample."
        )


def _csr_chunks(arr):
    """A Dask array of sparse chunks (any scipy format) as canonical CSR chunks (``csr_array``)."""
    import scipy.sparse

    if arr.numblocks[1] != 1:
        arr = arr.rechunk({1: -1})
    # the engine's task, not the kernel: the worker that stores the chunks then counts their size
    return arr.map_blocks(csr_chunk, dtype=arr.dtype, meta=scipy.sparse.csr_array((0, arr.shape[1]), dtype=arr.dtype))


def check_rows(X, name, *, min_samples: int = 1, chunk_rows: int | None = None, estimator=None,
               reset: bool = True, finite: bool = False, accept_sparse: bool = False):
    """Turn any supported input into a row-chunked Dask array of floats.

    Parameters
    ----------
    X : ndarray, array-like, pandas DataFrame, dask Array or dask DataFrame
    name : str
        Estimator name for messages.
    min_samples : int
        Fewer rows raise (scikit-learn's message), when the row count is known.
    chunk_rows : int, optional
        Rows per chunk for in-memory input.
    estimator : estimator, optional
        When given, ``sklearn.utils.validation.validate_data`` sets (``reset``) or
        checks its ``n_features_in_`` and ``feature_names_in_``.
    reset : bool
        Fit (True) or predict (False).
    finite : bool
        Reject NaN and infinity in in-memory input now (scikit-learn's message);
        Dask input is checked chunk by chunk when it is read.
    accept_sparse : bool
        Take scipy.sparse input (any format, made canonical CSR) and Dask arrays of
        sparse chunks (k-means); else they are scikit-learn's TypeError.

    Returns
    -------
    X : dask.array.Array, shape (N, D), float32 or float64 (chunks scipy.sparse ``csr_array`` for sparse input)
    info : dict
        ``dask_input`` (bool: the caller gets lazy results back), ``in_memory``
        (bool: backed by NumPy in this process), ``feature_names`` (ndarray of
        str or None).
    """
    import dask.array as da

    if not accept_sparse:
        _reject_sparse(X, name)
    if is_dask(X):
        names = _column_names(X) if is_dask_dataframe(X) else None
        if is_dask_array(X):
            _check_dims(X, name)  # before the features are counted from shape[1]
            X = with_known_columns(X)  # the width is checked (and n_features_in_ set) before any pass
        if estimator is not None:
            # scikit-learn reads feature names from pandas frames only: it is given an empty one
            # with the Dask frame's columns, so it sets, checks and warns about names as for pandas
            validate_data(estimator, _empty_frame(X) if is_dask_dataframe(X) else X,
                          skip_check_array=True, reset=reset)
        arr = _dask_rows(X, name, min_samples)
        return arr, {"dask_input": True, "in_memory": False, "feature_names": names}
    arr = in_memory_rows(X, name, min_samples, estimator=estimator, reset=reset, finite=finite,
                         accept_sparse=accept_sparse)
    rows = chunk_rows or default_chunk_rows(arr.shape[0])
    darr = da.from_array(arr, chunks=(max(1, rows), arr.shape[1]), asarray=False)
    if not isinstance(arr, np.ndarray):  # sparse rows: chunks made by the engine's task, as a Dask array's are
        darr = darr.map_blocks(csr_chunk, dtype=darr.dtype, meta=darr._meta)
    names = _column_names(X) if hasattr(X, "columns") else None
    return darr, {"dask_input": False, "in_memory": True, "feature_names": names}


def _empty_frame(frame):
    """An empty pandas DataFrame with a Dask DataFrame's columns, for scikit-learn's name checks."""
    import pandas as pd

    return pd.DataFrame(columns=list(frame.columns))


def in_memory_rows(X, name, min_samples: int = 1, *, estimator=None, reset: bool = True,
                   finite: bool | str = False, accept_sparse: bool = False):
    """NumPy, array-like or pandas input as a float32/float64 ndarray (scikit-learn's checks).

    ``finite``: reject NaN and infinity (True), infinity only ("allow-nan"), or nothing (False).
    ``accept_sparse``: scipy.sparse input (any format) comes back as a canonical CSR
    ``csr_array`` (duplicate entries summed, on a copy); else it is scikit-learn's TypeError.
    """
    from sklearn.utils import check_array

    if not accept_sparse:
        _reject_sparse(X, name)
    _reject_times(X, name)
    kw = dict(dtype=[np.float64, np.float32], ensure_min_samples=min_samples,
              ensure_all_finite=finite if finite == "allow-nan" else bool(finite))
    if accept_sparse and is_sparse(X):
        from daskgmm.kernels.sparse import as_csr

        if _is_pydata_sparse(X):  # scikit-learn's check_array takes scipy.sparse only
            X = X.to_scipy_sparse()
        kw["accept_sparse"] = "csr"
        checked = validate_data(estimator, X, reset=reset, **kw) if estimator is not None else \
            check_array(X, estimator=name, **kw)
        return as_csr(checked)
    if _is_pandas_frame(X) and any(_converted(dt) for dt in X.dtypes):
        X = frame_as_numbers(X, name)  # the rule of Dask frames' columns (scikit-learn's conversion)
    try:
        if estimator is not None:
            return validate_data(estimator, X, reset=reset, **kw)
        return check_array(X, estimator=name, **kw)
    except (TypeError, ValueError) as exc:
        bad = _non_numeric_columns(X)
        if not bad:
            raise
        # scikit-learn's (NumPy's) message first, then which columns
        raise type(exc)(f"{exc}. {name} needs numeric features; column(s) {', '.join(map(repr, bad))} "
                        "are not numeric.") from None


def _reject_times(X, name) -> None:
    """Timestamps and durations are not features: NumPy casts them to counts of their unit.

    scikit-learn's ``check_array`` fits a datetime64 array, or a DataFrame whose only
    non-numeric columns are of one such dtype, as integers (nanoseconds since 1970 ...),
    where a Dask DataFrame and a Parquet timestamp column are refused.
    """
    dtypes = getattr(X, "dtypes", None)
    if dtypes is not None and hasattr(dtypes, "items"):
        bad = [f"{c!r} ({dt})" for c, dt in dtypes.items() if getattr(dt, "kind", "O") in "mM"]
        what = f"column(s) {', '.join(bad)} are timestamps or durations" if bad else ""
    else:
        dt = getattr(X, "dtype", None)
        what = f"got an array of dtype {dt} (timestamps or durations)" if getattr(dt, "kind", "O") in "mM" else ""
    if what:
        raise ValueError(f"{name} needs numeric features; {what}, which would be fitted as integer counts "
                         "of their unit; convert them to numbers first (e.g. seconds since a chosen time), "
                         "or leave them out.")


def _is_pandas_frame(X) -> bool:
    return type(X).__module__.startswith("pandas") and hasattr(X, "dtypes") and hasattr(X.dtypes, "items")


def _converted(dtype) -> bool:
    """Whether a frame's column of this type is converted value by value (:func:`frame_as_numbers`):
    objects, text and Categoricals (pandas kind "O", Arrow's text "U"/"S"), Arrow decimals excepted
    (cast as numbers)."""
    return getattr(dtype, "kind", "O") in "OUS" and not _is_decimal(dtype)


def frame_as_numbers(frame, name, dtype=None):
    """A pandas DataFrame whose object, text and Categorical columns hold their values as float64.

    One rule for pandas and Dask frames (a Dask frame's partitions each go through here), the
    conversion scikit-learn's ``check_array`` makes of such a frame: each value as a float
    (numbers, booleans, text that reads as a number; None, NaN and ``pd.NA`` are NaN), a
    Categorical by its values (not its codes). A value that is no number raises (NumPy's
    ``ValueError`` or ``TypeError``, as scikit-learn's) naming its column and the value.

    Parameters
    ----------
    frame : pandas.DataFrame, shape (n, D)
    name : str
        The estimator's name, for messages.
    dtype : numpy.dtype, optional
        When given, every column is then cast to it (nullable ones with NaN for missing values).

    Returns
    -------
    pandas.DataFrame, shape (n, D)
    """
    frame = frame.copy(deep=False)
    for i, dt in enumerate(list(frame.dtypes)):
        if _converted(dt):
            frame.isetitem(i, _column_numbers(frame.iloc[:, i], name))
    return frame if dtype is None else frame.astype(dtype)


def _column_numbers(column, name):
    """One column's values as float64 (:func:`frame_as_numbers`), or the error naming it."""
    try:
        return column.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as exc:
        import pandas as pd

        value = next((v for v in column.array if not _number_or_missing(v)), None)
        hint = (f"; a Categorical is fitted on its values, as scikit-learn takes them: for its codes pass "
                f"X[{column.name!r}].cat.codes" if isinstance(column.dtype, pd.CategoricalDtype)
                else "; convert the column to numbers, or leave it out")
        raise type(exc)(f"{exc}. {name} needs numeric features; column {column.name!r} ({column.dtype}) holds "
                        f"{value!r}, which is not a number{hint}.") from None


def _number_or_missing(value) -> bool:
    import pandas as pd

    if pd.api.types.is_scalar(value) and pd.isna(value):
        return True
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _check_categories(frame, name) -> None:
    """A Dask frame's Categorical columns whose categories are known: they must be numbers (raises
    as :func:`frame_as_numbers` would when the first partition is read)."""
    import pandas as pd

    for column, dt in frame.dtypes.items():
        if isinstance(dt, pd.CategoricalDtype) and frame[column].cat.known:
            _column_numbers(pd.Series(pd.Categorical(dt.categories, dtype=dt), name=column), name)


def _non_numeric_columns(X) -> list[str]:
    dtypes = getattr(X, "dtypes", None)
    if dtypes is None or not hasattr(dtypes, "items"):
        return []
    return [str(c) for c, dt in dtypes.items() if getattr(dt, "kind", "O") not in "biuf" and not _is_decimal(dt)]


def _is_decimal(dtype) -> bool:
    """A pandas ``ArrowDtype`` of decimals (kind "O", as ``dtype_backend="pyarrow"`` reads a Parquet
    decimal column): numbers, cast to float as the Parquet reader and scikit-learn cast them."""
    import pyarrow as pa

    arrow = getattr(dtype, "pyarrow_dtype", None)
    return arrow is not None and pa.types.is_decimal(arrow)


def _column_names(frame):
    names = list(frame.columns)
    if names and all(isinstance(c, str) for c in names):
        return np.asarray(names, dtype=object)
    return None


def prediction_rows(estimator, X, missing: str = "raise", accept_sparse: bool = False, min_samples: int = 0,
                    nan_hint: str = ""):
    """Rows to predict on with a fitted estimator, checked against what it was fitted on.

    ``missing="marginalize"`` lets NaN through (infinity is still an error). Dask input needs
    ``min_samples`` rows (0: predictions of no rows are an empty lazy array), in-memory input one.
    ``nan_hint`` ends the message about NaN (a mixture's: :func:`nan_hint`).

    Returns
    -------
    (dask.array.Array, None)
        For Dask input: lazy, one chunk of columns; each chunk is checked by the task that
        reads it (:func:`finite_chunks`).
    (None, ndarray)
        For in-memory input: checked now (shape, features, finite values).
    """
    name = type(estimator).__name__
    if is_dask(X):
        Xd, info = check_rows(X, name, min_samples=min_samples, estimator=estimator, reset=False,
                              accept_sparse=accept_sparse)
        return finite_chunks(Xd, estimator, info, missing, nan_hint), None
    finite = "allow-nan" if missing == "marginalize" else True
    with hinted(nan_hint):
        return None, in_memory_rows(X, name, 1, estimator=estimator, reset=False, finite=finite,
                                    accept_sparse=accept_sparse)


def nan_hint(estimator) -> str:
    """What a mixture that does not marginalise says after scikit-learn's "Input X contains NaN." when asked to
    predict or learn from rows with NaN: it can (scikit-learn's sentence says to impute or drop them only)."""
    # a mixture (its form for rows with NaN); KMeans has `missing` too, and refuses "marginalize"
    if getattr(estimator, "missing", None) != "raise" or not hasattr(estimator, "_marginal"):
        return ""
    also = " and partial_fit" if hasattr(estimator, "partial_fit") else ""
    return (f"{type(estimator).__name__} takes them as missing values with missing='marginalize' (on a fitted "
            f"model, set_params(missing='marginalize') lets its predictions{also} marginalise them).")


@contextlib.contextmanager
def hinted(hint: str):
    """scikit-learn's ``ValueError("Input X contains NaN. ...")`` raised inside, with ``hint`` at its end."""
    try:
        yield
    except ValueError as exc:
        if not hint or not str(exc).startswith("Input X contains NaN"):
            raise
        raise type(exc)(f"{exc} {hint}") from None


def prediction_chunks(estimator, X, missing: str = "raise", accept_sparse: bool = False, nan_hint: str = ""):
    """Rows to write predictions for, as a row-chunked Dask array (:func:`check_rows`): in-memory input
    checked now, Dask input by the task of each chunk (:func:`finite_chunks`).

    Parameters
    ----------
    estimator : fitted estimator
    X : array-like, pandas DataFrame, scipy.sparse, dask Array or dask DataFrame
    missing : {"raise", "marginalize"}
        NaN is allowed with "marginalize" (infinity never is).
    accept_sparse : bool
    nan_hint : str
        Ends the message about NaN (:func:`prediction_rows`).
    """
    with warnings.catch_warnings(), hinted(nan_hint):
        # the command matches Parquet columns to the model's names itself and passes a Dask array
        warnings.filterwarnings("ignore", "X does not have valid feature names", UserWarning)
        Xd, info = check_rows(X, type(estimator).__name__, min_samples=0, estimator=estimator, reset=False,
                              finite="allow-nan" if missing == "marginalize" else True, accept_sparse=accept_sparse)
    return finite_chunks(Xd, estimator, info, missing, nan_hint) if info["dask_input"] else Xd


def input_or_model_names(info, estimator):
    """The columns' names for messages: the input's own (``info["feature_names"]`` of :func:`check_rows`),
    else the fitted estimator's ``feature_names_in_`` (a NumPy or Dask array batch), else None."""
    names = info["feature_names"]
    return getattr(estimator, "feature_names_in_", None) if names is None else names


def finite_chunks(Xd, estimator, info, missing: str = "raise", nan_hint: str = ""):
    """Dask rows to predict on, each chunk checked for NaN and infinity by the task that reads it.

    The check cannot compute the array up front: the chunk with a bad value raises scikit-learn's
    ``ValueError`` ("Input X contains NaN." ...; :func:`daskgmm.kernels.scan.check_finite_rows`, which
    also names the column and rows) when the predictions are computed. It is one reduction per chunk,
    fused with the prediction's task after it. The chunk's place in X (for the message) comes as a
    block of a small array, not from ``map_blocks``' ``block_info``, whose tasks make every worker
    import ``dask.array`` (and with it pydata's sparse, numba and SciPy where they are installed).

    Parameters
    ----------
    Xd : dask.array.Array, shape (n_samples, n_features)
        From :func:`check_rows` (dense or sparse chunks).
    estimator : estimator
        Its ``feature_names_in_`` name the columns when the input has no names of its own.
    info : dict
        :func:`check_rows`'s.
    missing : {"raise", "marginalize"}
        NaN is allowed with "marginalize" (infinity never is).
    nan_hint : str
        Ends the message of a chunk with NaN (:func:`prediction_rows`).
    """
    import dask.array as da

    from daskgmm.kernels.scan import check_finite_rows

    names = input_or_model_names(info, estimator)
    names = None if names is None else tuple(str(c) for c in names)
    if Xd.numblocks[1] != 1:
        Xd = Xd.rechunk({1: -1})
    rows = np.asarray(Xd.chunks[0], np.int64)
    n = len(rows)
    place = np.column_stack([np.cumsum(rows) - rows, np.arange(n), np.full(n, n)]).ravel()
    return da.blockwise(check_finite_rows, "ij", Xd, "ij", da.from_array(place, chunks=3), "i",
                        missing == "marginalize", None, names, None, nan_hint, None, dtype=Xd.dtype,
                        meta=Xd._meta, align_arrays=False)


def _check_weights_shape(shape, n: int) -> None:
    """scikit-learn's ``_check_sample_weight`` sentences for weights that are not one per row."""
    if len(shape) != 1:
        raise ValueError(f"Sample weights must be 1D array or scalar, got {len(shape)}D array. Expected either a "
                         f"scalar value or a 1D array of length {n}.")
    if shape[0] != n:
        raise ValueError(f"sample_weight.shape == {tuple(shape)}, expected ({n},)!")


def check_weights(sample_weight, n: int, name: str, allow_all_zero: bool = True) -> np.ndarray:
    """In-memory ``sample_weight`` as float64 of shape (n,), checked with scikit-learn's sentences first
    (``_check_sample_weight``'s, then check_array's for NaN and infinity and check_non_negative's), then
    how many values of each kind and the first one's row (:func:`bad_weights_message`). A scalar weights
    every row alike, as in scikit-learn.

    Unlike scikit-learn's KMeans, a negative weight is refused: a weight is a row's share of the statistics
    (its k-means++ start fails on one anyway, 'probabilities are not non-negative'). Dask weights are
    counted by the scan of the pass that reads them, and named in the same words.

    Parameters
    ----------
    allow_all_zero : bool
        Weights that are all 0 pass (the fit's scan refuses a sum of 0 with its own message).
    """
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.ndim == 0:
        w = np.full(n, float(w))
    _check_weights_shape(w.shape, n)
    bad = ~(np.isfinite(w) & (w >= 0))
    if bad.any():
        n_nan, n_inf = int(np.isnan(w).sum()), int(np.isinf(w).sum())
        raise ValueError(bad_weights_message(n_nan, n_inf, int(bad.sum()) - n_nan - n_inf, int(np.argmax(bad)), name))
    if not allow_all_zero and not w.any():
        raise ValueError(f"Sample weights must contain at least one non-zero number. {name} got sample_weight "
                         "with a sum of 0.")
    if not np.isfinite(w.sum()):
        raise ValueError(weight_sum_message(name))
    return w


def check_complete_rows(scan, name, missing, parameter, n_components, feature_names=None,
                        takes_start: bool = False, init_params: str | None = None) -> None:
    """Under ``missing="marginalize"`` the start is drawn from the rows without NaN: fewer of them than
    components is a :class:`DegenerateDataWarning` saying what to do. Wide rows with scattered missing values
    have few (200 features 5% missing: 1 row of 2,000), and the fit went on silently from one point (an
    adjusted Rand index of 0 on three clusters a complete fit separates). A warning, not an error: a start
    given (``means_init``; the caller does not ask then), a variational mixture's ``n_components`` as an upper
    bound, and ``select_model``'s smaller candidates fit well from few such rows. ``takes_start``: the estimator
    takes ``means_init``, which the warning then suggests (it told the t and variational mixtures and
    ``select_model``, which have none, to give one). ``init_params="kmeans"`` draws every row with an observed
    value (:func:`daskgmm.em.init.observed_sample`; 1 complete row of 2,000 in 120 features: adjusted Rand 1.0),
    so it is not warned of; the starts that draw rows draw complete ones."""
    if init_params == "kmeans" or missing != "marginalize" or not n_components or scan.complete < 0 \
            or scan.complete >= n_components:
        return
    if not np.any(scan.nan) or scan.complete == 0:
        return  # no missing value, or none complete: check_drawable_rows refuses these starts
    warnings.warn(
        f"{name} with missing='marginalize' initialises from the rows without NaN, and only {scan.complete} of "
        f"{scan.rows} row(s) (of positive weight) have every feature, fewer than {parameter}={n_components}: "
        f"its start may not tell the components apart; {'give it one (means_init), or ' if takes_start else ''}"
        "drop or impute the feature "
        f"columns missing most often before fitting ({most_missing(scan, feature_names)}), or start with "
        "init_params='kmeans', which draws every row", DegenerateDataWarning, stacklevel=4)


#: The starts that take rows without NaN under ``missing="marginalize"`` (chosen rows, or the random
#: responsibilities of the complete rows): with none, :func:`check_drawable_rows` refuses them.
COMPLETE_ROW_STARTS = ("k-means++", "random", "random_from_data")


def check_drawable_rows(scan, name, init_params, n_components, means_given: bool = False,
                        feature_names=None) -> None:
    """``init_params="random_from_data"`` starts each component at a distinct row of positive weight (without NaN
    under ``missing="marginalize"``): fewer such rows than components is scikit-learn's "Expected n_samples >=
    n_components" (a :class:`DataError`). The draw took what there was, and the fit ended with that many
    components: a ``GaussianMixture(3)`` with ``means_`` of shape (1, D), whose ``predict`` then said that
    ``set_params`` had changed it (user trial; 2 rows of weight 1 among 100 of weight 0 did the same).

    Rows with missing values and not one complete row: every start of :data:`COMPLETE_ROW_STARTS` is refused
    (a given ``means_init`` too: the start's weights and covariances come from ``init_params``), naming the
    columns missing most often. k-means++ drew no row (a crash in the compiled core), "random" gave every
    component a weight of 0/0 (adjusted Rand 0). The default start, k-means on every row with an observed value,
    needs none. ``means_given``: only that check (the others are about the means a start draws)."""
    if init_params in COMPLETE_ROW_STARTS and scan.complete == 0 and np.any(scan.nan):
        how = ("starts each component at a row without NaN" if init_params != "random"
               else "starts from random responsibilities of the rows without NaN")
        # random_from_data: scikit-learn's sentence first, as with fewer such rows than components (below)
        sk = (f"Expected n_samples >= n_components but got n_components = {n_components}, n_samples = 0: "
              if init_params == "random_from_data" and n_components else "")
        raise DataError(
            f"{sk}{name} with missing='marginalize' and init_params={init_params!r} {how}, and every one of the "
            f"{scan.rows:,} row(s) has a missing value; use init_params='kmeans', which starts from every row with "
            f"an observed value, or impute the missing values: {most_missing(scan, feature_names)}.")
    if means_given or init_params != "random_from_data" or not n_components or scan.complete < 0 \
            or scan.complete >= n_components:
        return
    nan = " and no NaN" if np.any(scan.nan) else ""
    raise DataError(
        f"Expected n_samples >= n_components but got n_components = {n_components}, n_samples = {scan.complete}: "
        f"{name}'s init_params='random_from_data' starts each component at a distinct row of positive sample "
        f"weight{nan}, and only {scan.complete} of the {scan.rows} row(s) are such; use init_params='kmeans'")


def _weights_array(sample_weight, Xd, name):
    """``sample_weight`` as a float64 Dask array chunked like the rows of ``Xd`` (in-memory weights checked
    by :func:`check_weights`; Dask weights by the scan of the pass that reads them)."""
    import dask.array as da

    n = Xd.shape[0]
    if is_dask(sample_weight):
        w = with_known_rows(sample_weight)
        _check_weights_shape(w.shape, n)
    else:
        w = da.from_array(check_weights(sample_weight, n, name), chunks=(Xd.chunks[0],))
    return w.astype(np.float64)


def prepare_rows(X, sample_weight, name, *, cache="auto", chunk_size=None, min_samples=2, estimator=None,
                 reset=True, scan=True, missing="raise", accept_sparse=False, check_chunks=False):
    """Validated input as :class:`daskgmm.engine.passes.ChunkedData`, with its first scan done.

    Parameters
    ----------
    estimator : estimator, optional
        Its ``n_features_in_``/``feature_names_in_`` are set from X (``reset``, a
        fit) or checked against X.
    reset : bool
        Set (True) or check (False) the estimator's features.
    scan : bool
        Run the first scan now. Without it (``partial_fit``: one pass in all), in-memory
        input is checked for non-finite values here and the caller runs a
        ``ScanRequest`` in its own pass and checks it with :func:`check_scan`.
    missing : {"raise", "marginalize"}
        Whether NaN is an error, or kept for a model that marginalises it.
    accept_sparse : bool
        Take sparse rows (see :func:`check_rows`).
    check_chunks : bool
        Dask input: each chunk is checked for NaN and infinity by the task that reads it
        (:func:`finite_chunks`, a reduction per chunk in the pass that reads it anyway), so that
        a bad value is named as a prediction names it: the column, the chunk's rows and the
        first bad row (``score``, ``partial_fit``). Without it the scan's check names the columns.

    Returns
    -------
    data : ChunkedData
    scan : ScanResult or None
        Rows, weighted mean and variance (non-finite values already rejected).
    info : dict
        See :func:`check_rows`.
    """
    from daskgmm.engine.passes import ChunkedData

    Xd, info = check_rows(X, name, min_samples=min_samples, chunk_rows=chunk_size, estimator=estimator,
                          reset=reset, finite=(not scan) and ("allow-nan" if missing == "marginalize" else True),
                          accept_sparse=accept_sparse)
    if check_chunks and info["dask_input"]:
        # a later batch of a fitted mixture: its NaN could be marginalised (a first batch's are named by the fit)
        Xd = finite_chunks(Xd, estimator, info, missing, "" if reset or estimator is None else nan_hint(estimator))
    w = None if sample_weight is None else _weights_array(sample_weight, Xd, name)
    data = ChunkedData(Xd, w, cache=cache, in_memory=info["in_memory"])
    if not scan:
        return data, None, info
    result = data.scan()
    takes_start = estimator is not None and "means_init" in estimator.get_params()
    # Dask input: the message names the chunk of the first bad row as the user chunked X
    check_scan(result, info["feature_names"], name, missing=missing,
               chunks=Xd.chunks[0] if info["dask_input"] else None, dtype=Xd.dtype, takes_start=takes_start)
    if estimator is not None and reset:  # a fit (not a score or a later partial_fit batch)
        # columns of zeros are what sparse rows are made of: only "every row is one point" is news there
        parameter = "n_components" if hasattr(estimator, "n_components") else "n_clusters"
        init_params = getattr(estimator, "init_params", None)
        given = getattr(estimator, "means_init", None) is not None
        check_drawable_rows(result, name, init_params, getattr(estimator, parameter, None), given,
                            info["feature_names"])
        if not given:  # a start given is not drawn from the complete rows
            check_complete_rows(result, name, missing, parameter, getattr(estimator, parameter, None),
                                info["feature_names"], takes_start, init_params)
        warn_degenerate(result, info["feature_names"], getattr(estimator, parameter, None),
                        columns=not data.sparse, parameter=parameter, weighted=sample_weight is not None)
        warn_far_rows(result, data, info["feature_names"], far_rows_remain([estimator]))
    return data, result, info
