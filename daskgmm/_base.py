"""scikit-learn conventions without depending on scikit-learn at run time.

``get_params``/``set_params`` (so ``sklearn.base.clone`` works), parameter
validation with scikit-learn's messages, input validation that turns NumPy,
array-likes, pandas and Dask inputs into one row-chunked Dask array, and the
exception/warning types.
"""

from __future__ import annotations

import inspect
import math
import numbers
import os
import sys
import typing
import warnings

import numpy as np


class InvalidParameterError(ValueError, TypeError):
    """A constructor parameter has a wrong type or value (as scikit-learn's)."""


class NotFittedError(ValueError, AttributeError):
    """The estimator is used before ``fit``."""


class ConvergenceWarning(UserWarning):
    """EM or Lloyd iterations stopped at ``max_iter`` before converging."""


_bridges: dict = {}


def warn_convergence(message: str) -> None:
    """Warn with a class that is also scikit-learn's ConvergenceWarning when that is loaded,
    so filters written for scikit-learn catch it too."""
    cls = ConvergenceWarning
    sk = sys.modules.get("sklearn.exceptions")
    if sk is not None and hasattr(sk, "ConvergenceWarning"):
        cls = _bridges.get("cw")
        if cls is None:
            cls = _bridges["cw"] = type("ConvergenceWarning", (ConvergenceWarning, sk.ConvergenceWarning), {})
    warnings.warn(message, cls, stacklevel=3)


# ---------------------------------------------------------------------------
# Parameter constraints, described and checked the way scikit-learn does.


class Interval:
    def __init__(self, kind, left, right, closed="left"):
        self.kind, self.left, self.right, self.closed = kind, left, right, closed

    def ok(self, v) -> bool:
        if isinstance(v, (bool, np.bool_)):
            return False
        if self.kind is int and not isinstance(v, numbers.Integral):
            return False
        if self.kind is float and not isinstance(v, numbers.Real):
            return False
        if isinstance(v, float) and math.isnan(v):
            return False
        lo_ok = self.left is None or (v >= self.left if self.closed in ("left", "both") else v > self.left)
        hi_ok = self.right is None or (v <= self.right if self.closed in ("right", "both") else v < self.right)
        return lo_ok and hi_ok

    def __str__(self):
        lo = "-inf" if self.left is None else (float(self.left) if self.kind is float else self.left)
        hi = "inf" if self.right is None else (float(self.right) if self.kind is float else self.right)
        lb = "[" if self.closed in ("left", "both") and self.left is not None else "("
        rb = "]" if self.closed in ("right", "both") and self.right is not None else ")"
        return f"{'an int' if self.kind is int else 'a float'} in the range {lb}{lo}, {hi}{rb}"


class Options:
    def __init__(self, *values):
        self.values = set(values)

    def ok(self, v) -> bool:
        return isinstance(v, str) and v in self.values

    def __str__(self):
        return "a str among {" + ", ".join(repr(v) for v in sorted(self.values)) + "}"


class _Simple:
    def __init__(self, test, text):
        self.ok, self.text = test, text

    def __str__(self):
        return self.text


BOOLEAN = _Simple(lambda v: isinstance(v, (bool, np.bool_)), "an instance of 'bool' or an instance of 'numpy.bool'")
NONE = _Simple(lambda v: v is None, "None")
ARRAY_LIKE = _Simple(
    lambda v: not isinstance(v, str) and (hasattr(v, "__len__") or hasattr(v, "__array__")), "an array-like"
)
RANDOM_STATE = [
    Interval(int, 0, 2**32 - 1, "both"),
    _Simple(lambda v: isinstance(v, np.random.RandomState), "an instance of 'numpy.random.mtrand.RandomState'"),
    NONE,
]
VERBOSE = [Interval(int, 0, None), BOOLEAN]


def _describe(constraints) -> str:
    parts = [str(c) for c in constraints]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]


class BaseEstimator:
    """``get_params``/``set_params``/``repr`` from the constructor signature."""

    _parameter_constraints: typing.ClassVar[dict] = {}

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return sorted(
            p.name for p in sig.parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        )

    def get_params(self, deep: bool = True) -> dict:
        """Parameters of this estimator (constructor arguments)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params):
        """Set parameters; unknown names raise ValueError."""
        valid = self._param_names()
        for key, value in params.items():
            if key not in valid:
                raise ValueError(
                    f"Invalid parameter {key!r} for estimator {type(self).__name__}(). "
                    f"Valid parameters are: {valid!r}."
                )
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        sig = inspect.signature(type(self).__init__)
        shown = []
        for name, p in sig.parameters.items():
            if name == "self" or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                continue
            value = getattr(self, name, None)
            default = p.default
            same = value is default
            if not same:
                try:
                    same = bool(value == default) if not isinstance(value, np.ndarray) else False
                except Exception:
                    same = False
            if not same:
                shown.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"

    def _validate_params(self) -> None:
        for name, constraints in self._parameter_constraints.items():
            value = getattr(self, name)
            if not any(c.ok(value) for c in constraints):
                raise InvalidParameterError(
                    f"The {name!r} parameter of {type(self).__name__} must be "
                    f"{_describe(constraints)}. Got {value!r} instead."
                )

    def _check_is_fitted(self, attribute: str) -> None:
        if not hasattr(self, attribute):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with "
                "appropriate arguments before using this estimator."
            )


# ---------------------------------------------------------------------------
# Input validation


def _is_dask_array(X) -> bool:
    return type(X).__module__.startswith("dask.array") and hasattr(X, "chunks")


def _is_dask_dataframe(X) -> bool:
    mod = type(X).__module__
    return mod.startswith("dask.dataframe") or mod.startswith("dask_expr")


def _is_pandas(X) -> bool:
    return type(X).__module__.startswith("pandas")


def _non_numeric(dtypes: dict) -> list[str]:
    # pandas extension dtypes (strings, categoricals, nullable ints) carry a .kind too
    return [str(name) for name, dt in dtypes.items() if getattr(dt, "kind", "O") not in "biuf"]


def _frame_float_dtype(dtypes) -> np.dtype:
    """float32 when every column is float32, else float64 (what the frame converts to)."""
    dts = list(dtypes)
    return np.dtype(np.float32) if dts and all(str(d) == "float32" for d in dts) else np.dtype(np.float64)


def _float_dtype(dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    return dtype if dtype in (np.float32, np.float64) else np.dtype(np.float64)


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


def _ndim_error(X, ndim, name):
    if ndim == 1:
        return ValueError(
            "Expected 2D array, got 1D array instead:\narray="
            f"{np.asarray(X) if not _is_dask_array(X) else X!r}.\n"
            "Reshape your data either using array.reshape(-1, 1) if your data has a single "
            "feature or array.reshape(1, -1) if it contains a single sample."
        )
    if ndim == 0:
        return ValueError(f"Expected 2D array, got scalar array instead:\narray={X!r}.")
    return ValueError(f"Found array with dim {ndim}. {name} expected <= 2.")


def check_rows(X, name: str, *, min_samples: int = 1, chunk_rows: int | None = None):
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

    Returns
    -------
    X : dask.array.Array, shape (N, D), float32 or float64
    info : dict
        ``dask_input`` (bool: the caller gets lazy results back), ``in_memory``
        (bool: backed by NumPy in this process), ``feature_names`` (ndarray of
        str or None).
    """
    import dask.array as da

    feature_names = None
    if _is_dask_dataframe(X):
        feature_names = _frame_names(X, name)
        # nullable (extension) columns become float with NaN for missing values
        arr = X.astype(_frame_float_dtype(X.dtypes)).to_dask_array(lengths=True)
        _shape_errors(arr.shape, name, min_samples)
        return arr, {"dask_input": True, "in_memory": False, "feature_names": feature_names}
    if _is_dask_array(X):
        if X.ndim != 2:
            raise _ndim_error(X, X.ndim, name)
        if X.dtype.kind == "c":
            raise ValueError("Complex data not supported")
        if X.dtype.kind not in "biuf":
            raise ValueError(f"{name} needs numeric features; got an array of dtype {X.dtype}.")
        arr = X if X.dtype in (np.float32, np.float64) else X.astype(np.float64)
        if any(math.isnan(c) for c in arr.chunks[0]):
            arr = arr.compute_chunk_sizes()
        _shape_errors(arr.shape, name, min_samples)
        return arr, {"dask_input": True, "in_memory": False, "feature_names": None}
    arr, feature_names = in_memory_rows(X, name, min_samples)
    rows = chunk_rows or default_chunk_rows(arr.shape[0])
    darr = da.from_array(arr, chunks=(max(1, rows), arr.shape[1]), asarray=False)
    return darr, {"dask_input": False, "in_memory": True, "feature_names": feature_names}


def in_memory_rows(X, name: str, min_samples: int = 1):
    """NumPy or pandas input as a float ndarray (no copy when it already is one) and its column names."""
    feature_names = None
    if _is_pandas(X):
        feature_names = _frame_names(X, name)
        X = X.to_numpy(dtype=_frame_float_dtype(X.dtypes), na_value=np.nan)
    arr = _as_float_ndarray(X, name)
    _shape_errors(arr.shape, name, min_samples)
    return arr, feature_names


def prediction_rows(X, name: str, n_features: int):
    """Rows to predict on with a fitted estimator.

    Returns
    -------
    (dask.array.Array, None)
        For Dask input: lazy, one chunk of columns (values are checked per chunk).
    (None, ndarray)
        For in-memory input: checked now (shape, features, finite values).
    """
    def check_width(width):
        if width != n_features:
            raise ValueError(f"X has {width} features, but {name} is expecting {n_features} features as input.")

    if _is_dask_array(X) or _is_dask_dataframe(X):
        Xd, _ = check_rows(X, name, min_samples=0)
        check_width(Xd.shape[1])
        return (Xd.rechunk({1: -1}) if Xd.numblocks[1] != 1 else Xd), None
    x, _ = in_memory_rows(X, name, 1)
    check_width(x.shape[1])
    if not np.all(np.isfinite(x)):
        raise ValueError("Input X contains NaN." if np.isnan(x).any() else
                         "Input X contains infinity or a value too large for dtype('float64').")
    return None, x


def _frame_names(frame, name):
    """Checks shared by pandas and Dask DataFrames; their string column names (or None)."""
    if getattr(frame, "ndim", 2) == 1:
        raise _ndim_error(frame, 1, name)
    bad = _non_numeric(dict(frame.dtypes.items()))
    if bad:
        raise ValueError(
            f"{name} needs numeric features; column(s) {', '.join(map(repr, bad))} are not numeric."
        )
    return _names(frame.columns)


def _names(columns):
    names = [c for c in columns]
    if all(isinstance(c, str) for c in names):
        return np.asarray(names, dtype=object)
    return None


def _as_float_ndarray(X, name) -> np.ndarray:
    try:
        arr = np.asarray(X)
    except ValueError as exc:  # ragged nested sequences
        raise ValueError(f"{name} could not read X as a 2-D array: {exc}") from None
    if arr.ndim != 2:
        raise _ndim_error(X, arr.ndim, name)
    if arr.dtype.kind == "c":
        raise ValueError("Complex data not supported")
    if arr.dtype.kind not in "biuf":
        # Find the first offending value to name it.
        for j in range(arr.shape[1]):
            col = arr[:, j]
            for i, v in enumerate(col):
                try:
                    float(v)
                except (TypeError, ValueError):
                    shown = v.item() if isinstance(v, np.generic) else v
                    raise ValueError(
                        f"{name} needs numeric features; column {j} holds a non-numeric value "
                        f"{shown!r} (row {i})."
                    ) from None
        arr = arr.astype(np.float64)
    return arr.astype(_float_dtype(arr.dtype), copy=False)


def check_finite(scan, feature_names, what: str = "X") -> None:
    """Raise if the scan found NaN or infinite values, naming columns and row counts."""
    def col(j):
        return repr(str(feature_names[j])) if feature_names is not None else str(j)

    nan_cols = np.flatnonzero(scan.nan)
    inf_cols = np.flatnonzero(scan.inf)
    if nan_cols.size:
        detail = ", ".join(f"column {col(j)}: {int(scan.nan[j])} value(s)" for j in nan_cols)
        raise ValueError(
            f"Input {what} contains NaN ({detail}). Remove or impute missing values "
            "before fitting (daskgmm.read_parquet(..., nan_policy='omit') drops such rows)."
        )
    if inf_cols.size:
        detail = ", ".join(f"column {col(j)}: {int(scan.inf[j])} value(s)" for j in inf_cols)
        raise ValueError(
            f"Input {what} contains infinity or a value too large for dtype('float64') ({detail})."
        )
    if scan.bad_weights:
        raise ValueError(
            f"sample_weight has {scan.bad_weights} negative or non-finite value(s)."
        )


def prepare_rows(X, sample_weight, name, *, cache="auto", chunk_size=None, min_samples=2):
    """Validated input as :class:`daskgmm.em.ChunkedData`, with its first scan done.

    Returns
    -------
    data : ChunkedData
    scan : ScanResult
        Rows, weighted mean and variance (non-finite values already rejected).
    info : dict
        See :func:`check_rows`.
    """
    import dask.array as da

    from daskgmm.em import ChunkedData

    Xd, info = check_rows(X, name, min_samples=min_samples, chunk_rows=chunk_size)
    w = None
    if sample_weight is not None:
        if _is_dask_array(sample_weight) or _is_dask_dataframe(sample_weight):
            w = sample_weight
            if hasattr(w, "to_dask_array"):
                w = w.to_dask_array(lengths=True)
        else:
            w = np.asarray(sample_weight, dtype=np.float64)
            if w.ndim != 1 or len(w) != Xd.shape[0]:
                raise ValueError(f"sample_weight.shape == {w.shape}, expected ({Xd.shape[0]},)!")
            w = da.from_array(w, chunks=(Xd.chunks[0],))
        if w.ndim != 1 or w.shape[0] != Xd.shape[0]:
            raise ValueError(f"sample_weight.shape == {w.shape}, expected ({Xd.shape[0]},)!")
        w = w.astype(np.float64)
    data = ChunkedData(Xd, w, cache=cache, in_memory=info["in_memory"])
    scan = data.scan()
    check_finite(scan, info["feature_names"])
    if scan.weight <= 0:
        raise ValueError("sample_weight must have a positive sum")
    return data, scan, info
