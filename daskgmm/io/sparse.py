"""Sparse rows in Parquet: a documented layout, read as a Dask array of CSR chunks (for ``KMeans``).

The layout is a sparse matrix's rows, one Parquet row per sample, in two list columns
of equal length per row (the ``indices`` and ``values`` of Spark ML's ``SparseVector``):

- ``indices``: ``list<int32>`` or ``list<int64>``: the columns of the row's non-zero values,
  each in ``[0, n_features)``, each at most once (in any order);
- ``values``: a list of any numeric type: the values, in the same order;
- optionally id columns carried alongside, as with dense data (a Hive partition key of the
  paths, ``day=2026-12-01/``, may be one: its value on every row of the file).

An empty list is a row of zeros; a null list, an index out of range, an index listed
twice and lists of different lengths are errors naming the file, row group and row.
The number of features is ``n_features``, or read from every file's key-value metadata
``daskgmm.n_features`` (which :func:`write_sparse_parquet` stores); files that disagree
are an error. As for dense data (:mod:`daskgmm.io.parquet`), every file's schema is checked from
its footer before any data is read (the columns, their list types, the same types in
every file), chunks are sized from the footers to a memory budget, and each read checks
that its file is still the one planned and verifies page checksums. NaN, null and
infinite values, and a Spark ML vector that is null, raise (``nan_policy="raise"``) or their rows are
dropped (``"omit"``, after one counting pass).
"""

from __future__ import annotations

import uuid
import warnings
from dataclasses import dataclass, field

import numpy as np

from daskgmm.io.files import (
    DataError,
    RowsOmittedWarning,
    check_id_columns,
    check_rows,
    file_signature,
    float_dtype,
    id_columns,
    id_type,
    inspect_files,
    partition_types,
    plan_input,
    register_reads,
    written_id_type,
)
from daskgmm.io.read import count_sparse_nonfinite, piece_arrays, read_sparse_piece

#: Key of the number of features in a file's key-value metadata.
N_FEATURES_KEY = b"daskgmm.n_features"


@dataclass
class SparseParquetSource:
    """A Parquet dataset of sparse rows opened for passes.

    Attributes
    ----------
    X : dask.array.Array, shape (n_rows, n_features)
        Chunks are ``scipy.sparse.csr_array``.
    ids : dask.array.Array of shape (n_rows,), list of them (``id_column`` a list), or None
    n_features : int
    indices, values : str
        The list columns.
    id_column : str, list of str, or None
    files : list of str
    n_rows : int
        Rows after dropping (``nan_policy="omit"``).
    n_omitted : int
    vector : str or None
        The column of Spark ML vectors read (``indices`` and ``values`` then name it too), or None.
    """

    X: object
    ids: object
    n_features: int
    indices: str
    values: str
    id_column: str | list | None
    files: list
    n_rows: int
    n_omitted: int = 0
    fs: object = None
    pieces: list = field(default_factory=list)
    dtype: object = np.dtype(np.float64)
    vector: str | None = None
    #: The id columns' Arrow types, as the predictions write them (as :class:`daskgmm.io.parquet.ParquetSource`'s)
    id_types: dict = field(default_factory=dict)

    @property
    def columns(self) -> list:
        """The columns the rows are read from (``[vector]`` or ``[indices, values]``), as
        :func:`sparse_layout` takes them: not one per feature, as a dense source's are."""
        return [self.vector] if self.vector else [self.indices, self.values]

    def signatures(self) -> list:
        """(path, size in bytes, modification time or None) of every file."""
        return [[path, *file_signature(self.fs, path)] for path in self.files]

    def nonfinite_summary(self) -> str:
        """Rows with NaN, null or infinite values over the whole dataset, by file (one more read of the
        data; for error messages, as the dense source's)."""
        per_piece = count_sparse_nonfinite(self.fs, self.pieces, self.indices, self.values, self.n_features,
                                           self.dtype, self.vector)
        by_file: dict = {}
        for piece, n in zip(self.pieces, per_piece):
            if n:
                by_file[piece.path] = by_file.get(piece.path, 0) + int(n)
        shown = sorted(by_file.items(), key=lambda kv: -kv[1])[:5]
        more = f" and {len(by_file) - len(shown)} more" if len(by_file) > len(shown) else ""
        return (f"{int(sum(per_piece))} of {sum(p.rows for p in self.pieces)} row(s) have NaN, null or infinite "
                f"values in column {self.vector or self.values!r} in {len(by_file)} of {len(self.files)} file(s): "
                f"{', '.join(f'{p} ({n})' for p, n in shown)}{more}; fix the data or drop those rows with "
                "nan_policy='omit' (--nan-policy omit)")


def _check_list_column(info, name, integer: bool, what: str):
    import pyarrow as pa

    if name not in info.schema.names:
        raise DataError(f"{info.path}: no column {name!r} ({what}; it has: {', '.join(info.schema.names)}); "
                        "name the sparse layout's columns with indices=..., values=... (daskgmm --sparse --columns "
                        "INDICES,VALUES)")
    t = info.schema.field(name).type
    ok = pa.types.is_list(t) or pa.types.is_large_list(t)
    if ok:
        v = t.value_type
        ok = pa.types.is_integer(v) if integer else (pa.types.is_integer(v) or pa.types.is_floating(v)
                                                      or pa.types.is_decimal(v))
    if not ok:
        want = "a list of integers" if integer else "a list of numbers"
        raise DataError(f"{info.path}: column {name!r} ({what}) has type {t}; the sparse layout needs {want}")


def _metadata_n_features(info):
    meta = info.schema.metadata or {}
    raw = meta.get(N_FEATURES_KEY)
    if raw is None:
        return None
    try:
        value = int(raw.decode())
    except ValueError:
        raise DataError(f"{info.path}: metadata {N_FEATURES_KEY.decode()!r} is {raw!r}, not an integer") from None
    if value < 1:
        raise DataError(f"{info.path}: metadata {N_FEATURES_KEY.decode()!r} is {value}; it must be at least 1")
    return value


def check_sparse_schemas(infos, indices, values, id_column, n_features):
    """The number of features, after checking every file's sparse layout from its footer.

    Raises DataError naming the file and the column: a missing column, a column that is
    not a list of integers (indices) or of numbers (values), files whose column types
    disagree, no ``n_features`` given or stored, files storing different numbers, a
    given number smaller than a stored one.
    """
    if indices == values:
        raise DataError(f"indices and values name the same column {indices!r}")
    for info in infos:
        _check_list_column(info, indices, True, "indices")
        _check_list_column(info, values, False, "values")
    for c in id_columns(id_column):
        if c in (indices, values):
            raise DataError(f"the id column {c!r} is also a column of the sparse layout")
    check_id_columns(infos, id_column)  # as the dense reader's: a column of every file or a partition key
    first = infos[0]
    for info in infos[1:]:
        for c in [indices, values]:
            t0, t = first.schema.field(c).type, info.schema.field(c).type
            if t != t0:
                raise DataError(f"schemas disagree: column {c!r} is {t0} in {first.path} but {t} in {info.path}")
    stored = {info.path: _metadata_n_features(info) for info in infos}
    known = {p: v for p, v in stored.items() if v is not None}
    if n_features is None:  # given, it is the width of every file's rows: each stored one at most it (below)
        if len(set(known.values())) > 1:
            ordered = sorted(known.items(), key=lambda kv: kv[1])
            (pa_, va), (pb, vb) = ordered[0], ordered[-1]
            raise DataError(f"files disagree on the number of features: {pa_} stores n_features={va}, {pb} "
                            f"stores {vb}; give n_features=... (--n-features N) of at least {vb}")
        if len(known) < len(infos):
            missing = next(p for p, v in stored.items() if v is None)
            raise DataError(f"{missing}: no {N_FEATURES_KEY.decode()!r} in its metadata; give n_features=... "
                            "(--n-features N: the width of the sparse rows)")
        return next(iter(known.values()))
    n_features = int(n_features)
    if n_features < 1:
        raise DataError(f"n_features must be at least 1, got {n_features}")
    for path, v in known.items():
        if v > n_features:
            raise DataError(f"{path} stores n_features={v}, more than the n_features={n_features} given")
    return n_features


def check_vector_schemas(fs, infos, vector, id_column, n_features):
    """The number of features of a Spark ML vector column (:mod:`daskgmm.io.vectors`), after checking that
    every file has it (and the id column); default: the width of its first vector."""
    from daskgmm.io.vectors import SPARK_VECTORS, first_width, is_vector

    for info in infos:
        have = info.schema.names
        if vector not in have:
            raise DataError(f"{info.path}: no column {vector!r} (it has: {', '.join(have)})")
        t = info.schema.field(vector).type
        if not is_vector(t):
            raise DataError(f"{info.path}: column {vector!r} has type {t}; vector= needs a column of {SPARK_VECTORS} "
                            "or of arrays of numbers")
    if vector in id_columns(id_column):
        raise DataError(f"the id column {vector!r} is the vector column")
    check_id_columns(infos, id_column)  # as the dense reader's: a column of every file or a partition key
    if n_features is None:
        return first_width(fs, infos, vector)
    n_features = int(n_features)
    if n_features < 1:
        raise DataError(f"n_features must be at least 1, got {n_features}")
    return n_features


def _vector_hint(infos, indices) -> str:
    """Words naming the columns that may hold the rows, for a file without the layout's list columns:
    a Spark ML vector column, else two list columns (a row's indices and values), else one (an array a row)."""
    import pyarrow as pa

    from daskgmm.io.vectors import is_array, is_spark_vector

    schema = infos[0].schema
    if indices in schema.names:
        return ""
    spark = [c for c in schema.names if is_spark_vector(schema.field(c).type)]
    if spark:
        return f"; {spark[0]!r} is a column of Spark ML vectors: read it with vector={spark[0]!r} (daskgmm " \
               f"--sparse --columns {spark[0]})"
    # a list column is no Spark vector (the hint said so of daskgmm's own 'indices'): say what it may be
    lists = [c for c in schema.names if is_array(schema.field(c).type)]
    ints = [c for c in lists if pa.types.is_integer(schema.field(c).type.value_type)]
    if ints and len(lists) > 1:
        i = ints[0]
        v = next(c for c in lists if c != i)
        return f"; {i!r} and {v!r} are list columns: if they hold each row's indices and values, read them with " \
               f"indices={i!r}, values={v!r} (daskgmm --sparse --columns {i},{v})"
    if lists:
        return f"; {lists[0]!r} is a column of arrays of numbers: read it with vector={lists[0]!r}, each array a " \
               f"row (daskgmm --sparse --columns {lists[0]})"
    return ""


def sparse_layout(columns) -> dict:
    """The columns sparse rows are read from, given as one list (the command's ``--sparse --columns``), as the
    keywords of :func:`open_sparse_parquet`: None, the layout's ``indices`` and ``values``; one name, a column
    of Spark ML vectors (``vector=``); two names, the layout's ``indices`` and ``values`` columns, in that order.

    Raises
    ------
    DataError
        Naming the columns given, for three or more.
    """
    if columns is None:
        return {}
    columns = [columns] if isinstance(columns, str) else list(columns)
    if len(columns) == 1:
        return {"vector": columns[0]}
    if len(columns) == 2:
        return {"indices": columns[0], "values": columns[1]}
    raise DataError(f"sparse rows are read from one column of Spark ML vectors or from two list columns (indices, "
                    f"values), not from {len(columns)} columns ({', '.join(columns)})")


def check_sparse_footers(path, fs, infos, *, indices="indices", values="values", vector=None, id_column=None,
                         n_features=None) -> int:
    """What :func:`open_sparse_parquet` checks of ``path`` before its first pass, from the files' footers
    (``infos``, as :func:`daskgmm.io.files.inspect_files` read them) and, for a vector column without
    ``n_features``, its first vector; with the same errors. The command runs it before its cluster starts.

    Returns
    -------
    n_features : int
        The width of the rows.
    """
    if vector is not None:
        n_features = check_vector_schemas(fs, infos, vector, id_column, n_features)
    else:
        try:
            n_features = check_sparse_schemas(infos, indices, values, id_column, n_features)
        except DataError as exc:  # Spark ML's own sparse rows are a vector column: say how to read them
            raise DataError(f"{exc}{_vector_hint(infos, indices)}") from None
    check_rows(path, infos)
    return n_features


def open_sparse_parquet(path, n_features=None, *, indices="indices", values="values", vector=None, id_column=None,
                        dtype="float64", nan_policy="raise", chunk_rows=None, chunk_bytes=None,
                        storage_options=None, footers=None) -> SparseParquetSource:
    """Open Parquet files of sparse rows (the layout of this module) as a Dask array of CSR chunks.

    Parameters
    ----------
    path : str, path-like, or list of them
        A file, a directory, a glob or an fsspec URL, as :func:`daskgmm.io.parquet.open_parquet`.
    n_features : int, optional
        The width of the rows; default: every file's ``daskgmm.n_features`` metadata (with
        ``vector``: the width of the column's first vector, which every vector must have).
    indices, values : str
        The list columns of the layout.
    vector : str, optional
        A column of Spark ML vectors (``VectorUDT``, as Spark writes ``VectorAssembler``'s or
        ``HashingTF``'s output; :mod:`daskgmm.io.vectors`) to read the rows from instead of
        ``indices`` and ``values``: sparse vectors as they are, dense ones without their zeros.
        A null vector is a row with a missing value, which ``nan_policy`` refuses or drops.
    id_column : str or list of str, optional
        As :func:`daskgmm.io.parquet.open_parquet`'s: columns carried alongside the rows, each in its own
        type, checked as that reader checks them (:func:`daskgmm.io.files.check_id_columns`); a partition
        key of the paths (``day=2026-12-01/``) may be one.
    dtype : {"float64", "float32"}
    nan_policy : {"raise", "omit"}
    chunk_rows, chunk_bytes, storage_options, footers
        As :func:`daskgmm.io.parquet.open_parquet` (``footers``: the files' footers read already).

    Returns
    -------
    SparseParquetSource
    """
    import scipy.sparse as sp

    dtype = float_dtype(dtype)
    if nan_policy not in ("raise", "omit"):
        raise ValueError(f"nan_policy must be 'raise' or 'omit' for sparse rows, got {nan_policy!r}")
    fs, files, infos = footers if footers is not None else inspect_files(path, storage_options)
    n_features = check_sparse_footers(path, fs, infos, indices=indices, values=values, vector=vector,
                                      id_column=id_column, n_features=n_features)
    if vector is not None:
        indices = values = vector  # the column read, planned and named in messages
    names = id_columns(id_column)
    keyed = partition_types(infos, (), names)  # id columns read from the paths' partition keys (day=2026-12-01/)
    # the decoded list columns (from the footers) are about the CSR's size: plan as the dense reader does
    pieces = plan_input(path, infos, chunk_rows, chunk_bytes, columns=[indices] if vector else [indices, values],
                        id_column=names, dtype=dtype, partition_types=keyed)
    sizes = [p.rows for p in pieces]
    total = sum(sizes)
    n_omitted = 0
    if nan_policy == "omit":
        per_piece = count_sparse_nonfinite(fs, pieces, indices, values, n_features, dtype, vector)
        sizes = [n - bad for n, bad in zip(sizes, per_piece)]
        n_omitted = int(sum(per_piece))
        if n_omitted:
            warnings.warn(f"nan_policy='omit': dropped {n_omitted} of {total} rows with NaN, null or infinite "
                          f"values in column {values!r}", RowsOmittedWarning, stacklevel=2)
        if sum(sizes) == 0:
            raise DataError(f"every row of {path!r} has NaN, null or infinite values")
    tag = uuid.uuid4().hex[:16]
    register_reads(tag, path, files)
    X, ids = piece_arrays("daskgmm-sparse", tag, read_sparse_piece, fs, pieces,
                          (indices, values, tuple(names), n_features, dtype, nan_policy, vector), sizes, n_features,
                          dtype, sp.csr_array((0, n_features), dtype=dtype),
                          [id_type(infos, c, keyed) for c in names])
    id_column, ids = (id_column, ids[0]) if isinstance(id_column, str) else (names or None, ids or None)
    return SparseParquetSource(X, ids, n_features, indices, values, id_column, [i.path for i in infos],
                               int(sum(sizes)), n_omitted, fs=fs, pieces=pieces, dtype=dtype, vector=vector,
                               id_types={c: written_id_type(id_type(infos, c, keyed)) for c in names})


def open_sparse_source(path, columns=None, id_column=None, dtype="float64", **options) -> SparseParquetSource:
    """The opener of sparse rows as :mod:`daskgmm.io.source` calls openers: :func:`open_sparse_parquet` with
    the columns read given as one list (:func:`sparse_layout`), ``options`` its other keywords."""
    return open_sparse_parquet(path, id_column=id_column, dtype=dtype, **sparse_layout(columns), **options)


def read_sparse_parquet(path, n_features=None, *, indices="indices", values="values", vector=None, id_column=None,
                        dtype="float64", nan_policy="raise", chunk_rows=None, chunk_bytes=None,
                        storage_options=None):
    """Sparse rows from Parquet as a Dask array of ``scipy.sparse.csr_array`` chunks (for ``KMeans``).

    Parameters are those of :func:`open_sparse_parquet`.

    Returns
    -------
    X : dask.array.Array, shape (n_rows, n_features)
        When ``id_column`` is None.
    (X, ids) : tuple of dask.array.Array
        When ``id_column`` is given.
    """
    src = open_sparse_parquet(path, n_features, indices=indices, values=values, vector=vector, id_column=id_column,
                              dtype=dtype, nan_policy=nan_policy, chunk_rows=chunk_rows, chunk_bytes=chunk_bytes,
                              storage_options=storage_options)
    return src.X if id_column is None else (src.X, src.ids)


def write_sparse_parquet(X, path, *, indices="indices", values="values", ids=None, id_column="id",
                         row_group_size=65536, compression="snappy") -> None:
    """Write sparse rows as one Parquet file in the layout of this module (``n_features`` in its metadata).

    Parameters
    ----------
    X : scipy.sparse matrix or array, pydata sparse array or ndarray, shape (n, D)
        Rows in memory (a Dask array is refused: compute it, or write each chunk to a file of its own).
    path : str or path-like
        The file; written beside under a temporary name and renamed into place. Its
        directory is created if needed.
    ids : array-like of shape (n,), list of them, or DataFrame, optional
        Written as ``id_column``; with a list of names, one array per name in that order (or a pandas
        DataFrame holding those columns), as ``write_predictions`` takes them. Each id column is
        written in its own type, in the order given, before the layout's columns.
    id_column : str or list of str
        Names other than ``indices`` and ``values``.
    """
    import os

    import pyarrow as pa
    import pyarrow.parquet as pq
    import scipy.sparse as sp

    from daskgmm.validation.checks import is_dask_array

    if is_dask_array(X):
        # read_sparse_parquet gives a Dask array: scipy's constructor refused it with "function missing 1 required
        # positional argument: 'shape'"
        raise TypeError("write_sparse_parquet writes rows held in memory (scipy.sparse, pydata sparse or dense) "
                        "as one file; X is a Dask array: compute it (X.compute()), or write each chunk to a file "
                        "of its own (X.to_delayed())")
    x = sp.csr_array(X.to_scipy_sparse() if hasattr(X, "to_scipy_sparse") else X)  # pydata sparse: COO, GCXS
    x.sum_duplicates()
    offsets = pa.array(x.indptr.astype(np.int64)) if x.nnz >= 2**31 else pa.array(x.indptr.astype(np.int32))
    list_type = pa.LargeListArray if x.nnz >= 2**31 else pa.ListArray
    cols = {
        indices: list_type.from_arrays(offsets, pa.array(x.indices.astype(np.int32 if x.shape[1] < 2**31
                                                                          else np.int64))),
        values: list_type.from_arrays(offsets, pa.array(x.data)),
    }
    if ids is not None:
        from daskgmm.fitting.predict import id_arrays, ids_array

        names, arrays = id_arrays(ids, id_column)
        clash = [c for c in names if c in cols]
        if clash:
            raise ValueError(f"id_column={clash[0]!r} is the name of a column of the sparse layout ({indices}, "
                             f"{values}); give the ids another name")
        written = {}
        for c, a in zip(names, arrays):
            a = ids_array(a)  # a nullable pandas column's missing values as None, its integers kept
            if a.ndim != 1 or len(a) != x.shape[0]:
                raise ValueError(f"ids{'' if isinstance(id_column, str) else f' of {c!r}'} has shape {a.shape}; "
                                 f"expected ({x.shape[0]},): one id per row of X")
            written[c] = pa.array(a)
        cols = {**written, **cols}
    table = pa.table(cols).replace_schema_metadata({N_FEATURES_KEY: str(x.shape[1]).encode()})
    from daskgmm.io.outputs import write_whole

    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_whole(path, lambda f: pq.write_table(table, f, row_group_size=row_group_size,
                                                          compression=compression, write_page_checksum=True))
