"""Parquet in (files, directories, globs, lists, fsspec URLs): the front of the input layer.

Reading builds a Dask array whose chunks are sized from memory, not from the
writer's row groups: the schema of every file is checked on the client from the
Parquet footers before any data is read, then consecutive small row groups of a
file are merged and large ones are cut into row slices, so that one task's
working set (the decoded columns, the matrix) stays within a byte budget
derived from the workers' memory limit (:mod:`daskgmm.io.files`). Each task reads only the chosen
columns, in batches, checks that the file is still the one planned (size,
modification time, rows), and verifies Parquet page checksums where present (:mod:`daskgmm.io.read`).
Chunks are column-major (Fortran order), which is how Parquet stores columns and
how the kernels want them (transposed, features by rows).

This module holds :class:`ParquetSource`, :func:`open_parquet` and :func:`read_parquet`, and
names everything the input layer offers (the errors, :func:`list_files`, :func:`rows_per_part`, ...).
Writing results is :mod:`daskgmm.io.outputs`.
"""

from __future__ import annotations

import uuid
import warnings
from dataclasses import dataclass, field

import numpy as np

from daskgmm.io.files import (
    DEFAULT_CHUNK_ROWS,
    DataError,
    DataWarning,
    FileInfo,
    InputChangedError,
    NonFiniteError,
    Piece,
    RowsOmittedWarning,
    bytes_per_row,
    check_rows,
    check_schemas,
    file_signature,
    float_dtype,
    get_fs,
    id_columns,
    id_type,
    inspect_file,
    inspect_files,
    is_local,
    list_files,
    partition_types,
    plan_input,
    plan_pieces,
    register_reads,
    rows_per_part,
    strip_protocol,
    written_id_type,
)
from daskgmm.io.read import (
    BATCH_ROWS,
    NONFINITE_ADVICE,
    NONFINITE_WHAT,
    count_nonfinite,
    first_bad_row,
    piece_arrays,
    read_piece,
)
from daskgmm.io.vectors import expand as expand_vectors


@dataclass
class ParquetSource:
    """A Parquet dataset opened for EM passes.

    Attributes
    ----------
    X : dask.array.Array, shape (n_rows, n_features)
    ids : dask.array.Array of shape (n_rows,), list of them, or None
        The id column (a list of the id columns, in order, when ``id_column`` is a list), read by the
        same tasks as ``X``.
    columns : list of str
        Feature column names, in order.
    id_column : str, list of str, or None
    files : list of str
    n_rows : int
        Rows after dropping (``nan_policy="omit"``).
    n_omitted : int
        Rows dropped for NaN, null or infinite values.
    omitted_by_column : dict
        Non-finite values per column among the dropped rows.
    """

    X: object
    ids: object
    columns: list
    id_column: str | list | None
    files: list
    n_rows: int
    n_omitted: int = 0
    omitted_by_column: dict = field(default_factory=dict)
    fs: object = None
    pieces: list = field(default_factory=list)
    dtype: object = np.dtype(np.float64)
    nan_policy: str = "raise"
    vectors: dict = field(default_factory=dict)  # Spark ML vector columns read: {column: width}
    #: The id columns' Arrow types, as the predictions write them: ``{column: type}``
    #: (:func:`daskgmm.io.outputs.write_parts`' ``types``; :func:`daskgmm.io.files.written_id_type`)
    id_types: dict = field(default_factory=dict)

    def signatures(self) -> list:
        """(path, size in bytes, modification time or None) of every file: what a
        checkpoint of a job on these data must match."""
        return [[path, *file_signature(self.fs, path)] for path in self.files]

    def nonfinite_summary(self) -> str:
        """Rows with NaN, null or infinite feature values (infinite ones under ``nan_policy="marginalize"``)
        over the whole dataset, by column and by file (one more read of the data; for error messages)."""
        marginalize = self.nan_policy == "marginalize"
        per_piece, per_col, first = count_nonfinite(self.fs, self.pieces, self.columns, self.dtype, marginalize,
                                                   self.vectors)
        rows = int(sum(per_piece))
        by_file: dict = {}
        for piece, n in zip(self.pieces, per_piece):
            if n:
                by_file[piece.path] = by_file.get(piece.path, 0) + int(n)
        cols = ", ".join(f"column {c!r}: {int(n)}" for c, n in zip(self.columns, per_col) if n)
        shown = sorted(by_file.items(), key=lambda kv: -kv[1])[:5]
        files = ", ".join(f"{p} ({n})" for p, n in shown)
        more = f" and {len(by_file) - len(shown)} more" if len(by_file) > len(shown) else ""
        return (f"{rows} of {sum(p.rows for p in self.pieces)} row(s) have {NONFINITE_WHAT[marginalize]} "
                f"({cols}) in {len(by_file)} of {len(self.files)} file(s): {files}{more}; "
                f"{first_bad_row(self.pieces, first)}; {NONFINITE_ADVICE[marginalize]}")


def open_parquet(
    path, columns=None, id_column=None, dtype="float64", *, nan_policy="raise",
    chunk_rows=None, chunk_bytes=None, storage_options=None, footers=None, vector_widths=None,
) -> ParquetSource:
    """Open Parquet data as a Dask array, checking every file's schema first.

    Parameters
    ----------
    path : str, path-like, or list of them
        A file, a directory (every ``*.parquet`` below it, skipping names that
        start with ``_`` or ``.``), a glob (a directory it matches is read as a
        directory), or an fsspec URL (``s3://…``).
    columns : list of str, optional
        Feature columns (default: every column but ``id_column`` and the index
        pandas or Dask stored, as ``pandas.read_parquet`` reads it, which must
        then all be numeric). A Hive partition key of the files' paths
        (``day=2026-12-01/``, ``hour=3/``) may be named when its every value is a
        number; keys are never features by default.
    id_column : str or list of str, optional
        A column to carry alongside the rows (e.g. to join predictions back), or
        several (``["event_id", "day"]``), each read in its own type by the tasks
        that read the rows. A partition key of the paths may be one (its values
        int64, float64 or strings). None of them may be a feature column.
    dtype : {"float64", "float32"}
    nan_policy : {"raise", "omit", "marginalize"}
        NaN, null or infinite feature values raise a DataError naming the file,
        the column and the number of rows; or the rows are dropped (one
        counting pass first; a RowsOmittedWarning reports how many); or NaN and
        null are kept as NaN, for a mixture's ``missing="marginalize"``
        (``GaussianMixture``, ``BayesianGaussianMixture``, ``StudentTMixture``;
        infinity still raises a DataError; a row with every feature missing is
        read as NaN, and the mixture leaves it out of its fit).
    chunk_rows : int, optional
        Rows per chunk: smaller row groups of a file are merged, larger ones
        cut into row slices. Default: from ``chunk_bytes``.
    chunk_bytes : int, optional
        Decoded bytes one chunk task may hold (Arrow columns plus the
        matrix, sized from the footers). Default: from the active client's
        worker memory limits (:func:`daskgmm.engine.cluster.chunk_budget`), else
        ``DEFAULT_CHUNK_ROWS`` rows.
    storage_options : dict, optional
        Passed to fsspec (credentials, endpoints).
    footers : tuple, optional
        What :func:`daskgmm.io.files.inspect_files` returned for ``path`` (``(fs, files, infos)``), when
        the caller has read the footers already (the command checks them before its cluster starts):
        they are not read again.
    vector_widths : dict, optional
        ``{column: D}``, the widths of vector columns the caller read from the same ``footers``
        (:func:`daskgmm.io.vectors.expand`): their first vectors are not read again.

    Returns
    -------
    ParquetSource
    """
    dtype = float_dtype(dtype)
    if nan_policy not in ("raise", "omit", "marginalize"):
        raise ValueError(f"nan_policy must be 'raise', 'omit' or 'marginalize', got {nan_policy!r}")
    fs, _, infos = footers if footers is not None else inspect_files(path, storage_options)
    ids = id_columns(id_column)
    columns = check_schemas(infos, columns, ids)
    _not_sparse_layout(infos, columns)
    columns, vectors = expand_vectors(columns, infos, fs, vector_widths)
    keyed = partition_types(infos, columns, ids)
    pieces = plan_input(path, infos, chunk_rows, chunk_bytes, columns=columns, id_column=ids, dtype=dtype,
                        partition_types=keyed)
    sizes = [p.rows for p in pieces]
    total = sum(sizes)
    n_omitted, by_col = 0, {}
    if nan_policy == "omit":
        per_piece, per_col, _ = count_nonfinite(fs, pieces, columns, dtype, vectors=vectors)
        sizes = [n - bad for n, bad in zip(sizes, per_piece)]
        n_omitted = int(sum(per_piece))
        by_col = {c: int(n) for c, n in zip(columns, per_col) if n}
        if n_omitted:
            detail = ", ".join(f"column {c!r}: {n}" for c, n in by_col.items())
            warnings.warn(
                f"nan_policy='omit': dropped {n_omitted} of {total} rows with NaN, null or infinite "
                f"values ({detail})",
                RowsOmittedWarning,
                stacklevel=2,
            )
        if sum(sizes) == 0:
            raise DataError(f"every row of {path!r} has NaN, null or infinite values")
    tag = uuid.uuid4().hex[:16]
    register_reads(tag, path, [i.path for i in infos])
    X, id_arrays = piece_arrays("daskgmm", tag, read_piece, fs, pieces,
                                (tuple(columns), tuple(ids), dtype, nan_policy, vectors), sizes, len(columns),
                                dtype, np.empty((0, len(columns)), dtype=dtype),
                                [id_type(infos, c, keyed) for c in ids])
    # a name gives its column, a list one column per name (a list of one too)
    id_column, id_arrays = (id_column, id_arrays[0]) if isinstance(id_column, str) else \
        (ids or None, id_arrays or None)
    return ParquetSource(X, id_arrays, columns, id_column, [i.path for i in infos], int(sum(sizes)), n_omitted,
                         by_col, fs=fs, pieces=pieces, dtype=dtype, nan_policy=nan_policy, vectors=vectors,
                         id_types={c: written_id_type(id_type(infos, c, keyed)) for c in ids})


def check_footers(path, infos, columns=None, id_column=None) -> list:
    """What :func:`open_parquet` checks of ``path`` from its files' footers alone (``infos``, as
    :func:`daskgmm.io.files.inspect_files` read them), with the same errors: missing, non-numeric or
    doubly named columns, disagreeing schemas, files of the sparse layout, a partition key of non-numbers
    named as a feature, no rows. The command runs it before its cluster starts; returns the feature
    columns (Spark ML vector columns not yet expanded)."""
    columns = check_schemas(infos, columns, id_column)
    _not_sparse_layout(infos, columns)
    partition_types(infos, columns, id_column)
    check_rows(path, infos)
    return columns


def _not_sparse_layout(infos, columns) -> None:
    """Refuse files of the sparse layout (:mod:`daskgmm.io.sparse`) whose list columns would be read as
    vectors: their lengths vary by row, and ``read_sparse_parquet`` is their reader."""
    from daskgmm.io.sparse import N_FEATURES_KEY
    from daskgmm.io.vectors import is_array

    for info in infos:
        width = (info.schema.metadata or {}).get(N_FEATURES_KEY)
        lists = [c for c in columns if c in info.schema.names and is_array(info.schema.field(c).type)]
        if width is not None and lists:
            raise DataError(
                f"{info.path}: columns {', '.join(map(repr, lists))} hold sparse rows in daskgmm's layout "
                f"(n_features={width.decode(errors='replace')} in the metadata); read them with "
                "daskgmm.read_sparse_parquet (KMeans takes sparse rows; daskgmm fit --estimator kmeans --sparse), or "
                "choose other columns with columns=[...] (--columns a,b,...)"
            )


def read_parquet(path, columns=None, id_column=None, dtype="float64", *, nan_policy="raise",
                 chunk_rows=None, chunk_bytes=None, storage_options=None):
    """Parquet feature columns as a Dask array (rows chunked to a memory budget).

    Parameters are those of :func:`open_parquet`.

    Returns
    -------
    X : dask.array.Array, shape (n_rows, n_features)
        When ``id_column`` is None.
    (X, ids) : tuple
        When ``id_column`` is given: the features and the id column (a Dask
        array of shape (n_rows,)), or, for a list of names, a list of such
        arrays, one per name in order; read by the same tasks as the features.
        ``write_predictions(X, path, ids=ids, id_column=id_column)`` writes them back.
    """
    src = open_parquet(path, columns, id_column, dtype, nan_policy=nan_policy, chunk_rows=chunk_rows,
                       chunk_bytes=chunk_bytes, storage_options=storage_options)
    return src.X if id_column is None else (src.X, src.ids)


__all__ = [
    "BATCH_ROWS",
    "DEFAULT_CHUNK_ROWS",
    "DataError",
    "DataWarning",
    "FileInfo",
    "InputChangedError",
    "NonFiniteError",
    "ParquetSource",
    "Piece",
    "RowsOmittedWarning",
    "bytes_per_row",
    "check_schemas",
    "file_signature",
    "get_fs",
    "inspect_file",
    "is_local",
    "list_files",
    "open_parquet",
    "plan_pieces",
    "read_parquet",
    "rows_per_part",
    "strip_protocol",
]
