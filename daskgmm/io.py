"""Parquet in (files, directories, globs, lists, fsspec URLs) and results out, atomically.

Reading builds a Dask array with one task per group of consecutive row groups
of a file: the schema of every file is checked on the client from the Parquet
footers before any data is read, and each task reads only the chosen columns.
Chunks are column-major (Fortran order), which is how Parquet stores columns and
how the kernels want them (transposed, features by rows).

Writing goes to a staging directory beside the target, which replaces the
target only when every part is written (and ``_SUCCESS`` is in it), so a job
that fails leaves the previous output untouched and no staging directory.
"""

from __future__ import annotations

import contextlib
import operator
import os
import posixpath
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

#: Rows per chunk when row groups are small: consecutive row groups of one file
#: are read together until a chunk has at least this many rows.
DEFAULT_CHUNK_ROWS = 131072

_PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")


class DataError(ValueError):
    """The input data are unusable: a missing or non-numeric column, disagreeing
    schemas, an empty dataset, a corrupt file, NaN or infinite values."""


class NonFiniteError(DataError):
    """A chunk holds NaN, null or infinite feature values (``nan_policy="raise"``)."""


class RowsOmittedWarning(UserWarning):
    """Rows with NaN or infinite values were dropped (``nan_policy="omit"``)."""


# ---------------------------------------------------------------------------
# Finding files


def _get_fs(path, storage_options=None):
    import fsspec

    fs, _, _ = fsspec.core.get_fs_token_paths(path, storage_options=storage_options or {})
    return fs


def _strip(fs, path: str) -> str:
    return fs._strip_protocol(path)


def list_files(path, storage_options=None):
    """Expand a path, glob, directory or list of them into sorted Parquet files.

    Returns
    -------
    fs : fsspec.AbstractFileSystem
    files : list of str
    """
    paths = list(path) if isinstance(path, (list, tuple)) else [path]
    if not paths:
        raise DataError("no input path given")
    paths = [os.fspath(p) for p in paths]
    fs = _get_fs(paths[0], storage_options)
    files: list[str] = []
    for p in paths:
        sp = _strip(fs, p)
        if any(ch in sp for ch in "*?["):
            matched = sorted(fs.glob(sp))
            found = [m for m in matched if fs.isfile(m)]
            if not found:
                raise DataError(f"no Parquet files match {p!r}")
            files.extend(found)
        elif fs.isdir(sp):
            found = sorted(
                f for f in fs.find(sp)
                if f.endswith(_PARQUET_SUFFIXES)
                and not any(part.startswith(("_", ".")) for part in posixpath.relpath(f, sp).split("/"))
            )
            if not found:
                raise DataError(f"directory {p!r} holds no Parquet files (*.parquet, *.parq, *.pq)")
            files.extend(found)
        elif fs.isfile(sp):
            files.append(sp)
        else:
            raise DataError(f"no such file or directory: {p!r}")
    seen = set()
    unique = [f for f in files if not (f in seen or seen.add(f))]
    return fs, unique


# ---------------------------------------------------------------------------
# Reading


@dataclass(frozen=True)
class _FileInfo:
    path: str
    schema: object  # pyarrow.Schema
    row_groups: tuple  # rows per row group


def _inspect(fs, path) -> _FileInfo:
    import pyarrow.parquet as pq

    try:
        with fs.open(path, "rb") as f:
            md = pq.ParquetFile(f).metadata
            schema = md.schema.to_arrow_schema()
            rgs = tuple(md.row_group(i).num_rows for i in range(md.num_row_groups))
    except Exception as exc:  # any reader failure means an unreadable file
        raise DataError(f"{path}: not a readable Parquet file ({type(exc).__name__}: {exc})") from None
    return _FileInfo(path, schema, rgs)


def _is_numeric(t) -> bool:
    import pyarrow as pa

    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t)


def _check_schemas(infos: list[_FileInfo], columns, id_column):
    """Feature columns after checking every file's schema; raises DataError naming file and column."""
    first = infos[0]
    names = list(first.schema.names)
    if columns is None:
        columns = [c for c in names if c != id_column]
        bad = [c for c in columns if not _is_numeric(first.schema.field(c).type)]
        if bad:
            listed = ", ".join(f"{c!r} ({first.schema.field(c).type})" for c in bad)
            raise DataError(
                f"{first.path}: column(s) {listed} are not numeric; choose the numeric feature "
                "columns with columns=[...] (--columns a,b,...)"
            )
    else:
        columns = [columns] if isinstance(columns, str) else list(columns)
        if not columns:
            raise DataError("columns is empty; name at least one feature column")
        dup = sorted({c for c in columns if columns.count(c) > 1})
        if dup:
            raise DataError(f"columns lists {', '.join(map(repr, dup))} more than once")
        if id_column is not None and id_column in columns:
            raise DataError(f"the id column {id_column!r} is also listed as a feature column")
    wanted = columns + ([id_column] if id_column is not None else [])
    for info in infos:
        have = info.schema.names
        for c in wanted:
            if c not in have:
                what = "id column" if c == id_column else "column"
                raise DataError(f"{info.path}: no {what} {c!r} (it has: {', '.join(have)})")
        for c in columns:
            t = info.schema.field(c).type
            if not _is_numeric(t):
                raise DataError(f"{info.path}: column {c!r} has type {t}; feature columns must be numeric")
        for c in wanted:
            t0, t = first.schema.field(c).type, info.schema.field(c).type
            if t != t0:
                raise DataError(
                    f"schemas disagree: column {c!r} is {t0} in {first.path} but {t} in {info.path}"
                )
    return columns


def _plan_pieces(infos: list[_FileInfo], chunk_rows: int) -> list[tuple]:
    """(path, row groups, rows) per chunk: consecutive row groups of one file."""
    pieces = []
    for info in infos:
        group, rows = [], 0
        for i, n in enumerate(info.row_groups):
            if n == 0:
                continue
            group.append(i)
            rows += n
            if rows >= chunk_rows:
                pieces.append((info.path, tuple(group), rows))
                group, rows = [], 0
        if group:
            pieces.append((info.path, tuple(group), rows))
    return pieces


def _read_matrix(fs, path, row_groups, columns, dtype, id_column=None):
    """Feature matrix (n, D), Fortran-ordered, and the id column, read row group by row group.

    One row group at a time goes through Arrow memory (single-threaded: Dask
    provides the parallelism), so a chunk costs its matrix plus one row group.
    Nulls become NaN.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    target = pa.float32() if np.dtype(dtype) == np.float32 else pa.float64()
    cols = list(columns) + ([id_column] if id_column is not None else [])
    try:
        with fs.open(path, "rb") as f:
            pf = pq.ParquetFile(f)
            sizes = [pf.metadata.row_group(i).num_rows for i in row_groups]
            x = np.empty((sum(sizes), len(columns)), dtype=dtype, order="F")
            ids = []
            start = 0
            for rg, n in zip(row_groups, sizes):
                table = pf.read_row_group(rg, columns=cols, use_threads=False)
                for j, c in enumerate(columns):
                    col = table.column(c)
                    if col.type != target:
                        col = col.cast(target)
                    x[start : start + n, j] = col.to_numpy()
                if id_column is not None:
                    ids.append(table.column(id_column).to_numpy(zero_copy_only=False))
                start += n
                del table
    except Exception as exc:  # a corrupt file fails in many ways
        raise DataError(
            f"{path}: reading row group(s) {list(row_groups)} failed ({type(exc).__name__}: {exc})"
        ) from None
    finally:
        # Arrow's allocator (mimalloc) keeps freed pages: ~60 MiB per reading worker,
        # enough to hold a worker with a 300 MiB limit above distributed's pause mark
        pa.default_memory_pool().release_unused()
    return x, (np.concatenate(ids) if id_column is not None else None)


def _bad_rows(x) -> np.ndarray:
    return ~np.isfinite(x).all(axis=1)


def _read_piece(fs, path, row_groups, columns, id_column, dtype, nan_policy):
    """One chunk: (features (n, D) Fortran-ordered, ids (n,) or None)."""
    x, ids = _read_matrix(fs, path, row_groups, columns, dtype, id_column)
    bad = _bad_rows(x)
    if bad.any():
        if nan_policy == "raise":
            counts = (~np.isfinite(x)).sum(axis=0)
            detail = ", ".join(f"column {c!r}: {int(n)}" for c, n in zip(columns, counts) if n)
            raise NonFiniteError(
                f"{path} (row group(s) {list(row_groups)}): {int(bad.sum())} row(s) with NaN, null or "
                f"infinite values ({detail}); fix the data or use nan_policy='omit' (--nan-policy omit)"
            )
        keep = ~bad
        x = np.asfortranarray(x[keep])
        if ids is not None:
            ids = ids[keep]
    return x, ids


def _count_bad(fs, path, row_groups, columns, dtype):
    x, _ = _read_matrix(fs, path, row_groups, columns, dtype)
    return int(_bad_rows(x).sum()), (~np.isfinite(x)).sum(axis=0)


def _count_nonfinite(fs, pieces, columns, dtype):
    """One read of every piece: rows with non-finite values per piece, and values per column."""
    import dask

    counts = dask.compute(*[dask.delayed(_count_bad)(fs, p, rg, columns, dtype) for p, rg, _ in pieces])
    return [c[0] for c in counts], np.sum([c[1] for c in counts], axis=0)


@dataclass
class ParquetSource:
    """A Parquet dataset opened for EM passes.

    Attributes
    ----------
    X : dask.array.Array, shape (n_rows, n_features)
    ids : dask.array.Array of shape (n_rows,), or None
        The id column, read by the same tasks as ``X``.
    columns : list of str
        Feature column names, in order.
    id_column : str or None
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
    id_column: str | None
    files: list
    n_rows: int
    n_omitted: int = 0
    omitted_by_column: dict = field(default_factory=dict)
    fs: object = None
    pieces: list = field(default_factory=list)
    dtype: object = np.dtype(np.float64)

    def signatures(self) -> list:
        """(path, size in bytes, modification time or None) of every file: what a
        checkpoint of a job on these data must match."""
        out = []
        for path in self.files:
            info = self.fs.info(path)
            mtime = info.get("mtime", info.get("LastModified", info.get("updated")))
            out.append([path, int(info.get("size") or 0), None if mtime is None else str(mtime)])
        return out

    def nonfinite_summary(self) -> str:
        """Rows with NaN, null or infinite feature values over the whole dataset, by
        column and by file (one more read of the data; for error messages)."""
        per_piece, per_col = _count_nonfinite(self.fs, self.pieces, self.columns, self.dtype)
        rows = int(sum(per_piece))
        by_file: dict = {}
        for (path, _, _), n in zip(self.pieces, per_piece):
            if n:
                by_file[path] = by_file.get(path, 0) + int(n)
        cols = ", ".join(f"column {c!r}: {int(n)}" for c, n in zip(self.columns, per_col) if n)
        shown = sorted(by_file.items(), key=lambda kv: -kv[1])[:5]
        files = ", ".join(f"{p} ({n})" for p, n in shown)
        more = f" and {len(by_file) - len(shown)} more" if len(by_file) > len(shown) else ""
        return (f"{rows} of {sum(p[2] for p in self.pieces)} row(s) have NaN, null or infinite values "
                f"({cols}) in {len(by_file)} of {len(self.files)} file(s): {files}{more}; fix the data "
                "or use nan_policy='omit' (--nan-policy omit)")


def open_parquet(
    path, columns=None, id_column=None, dtype="float64", *, nan_policy="raise",
    chunk_rows=None, storage_options=None,
) -> ParquetSource:
    """Open Parquet data as a Dask array, checking every file's schema first.

    Parameters
    ----------
    path : str, path-like, or list of them
        A file, a directory (every ``*.parquet`` below it, skipping names that
        start with ``_`` or ``.``), a glob, or an fsspec URL (``s3://…``).
    columns : list of str, optional
        Feature columns (default: every column but ``id_column``, which must
        then all be numeric).
    id_column : str, optional
        A column to carry alongside (e.g. to join predictions back).
    dtype : {"float64", "float32"}
    nan_policy : {"raise", "omit"}
        NaN, null or infinite feature values raise a DataError naming the file,
        the column and the number of rows; or the rows are dropped (one
        counting pass first; a RowsOmittedWarning reports how many).
    chunk_rows : int, optional
        Minimum rows per chunk (consecutive row groups are merged).
    storage_options : dict, optional
        Passed to fsspec (credentials, endpoints).

    Returns
    -------
    ParquetSource
    """
    import dask.array as da
    from dask.highlevelgraph import HighLevelGraph

    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    if nan_policy not in ("raise", "omit"):
        raise ValueError(f"nan_policy must be 'raise' or 'omit', got {nan_policy!r}")
    fs, files = list_files(path, storage_options)
    with ThreadPoolExecutor(max_workers=min(16, len(files))) as pool:
        infos = list(pool.map(lambda f: _inspect(fs, f), files))
    columns = _check_schemas(infos, columns, id_column)
    pieces = _plan_pieces(infos, int(chunk_rows or DEFAULT_CHUNK_ROWS))
    total = sum(p[2] for p in pieces)
    if total == 0:
        raise DataError(f"no rows in {path!r} ({len(files)} file(s), all empty)")
    sizes = [p[2] for p in pieces]
    n_omitted, by_col = 0, {}
    if nan_policy == "omit":
        per_piece, per_col = _count_nonfinite(fs, pieces, columns, dtype)
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
    read_name, x_name, id_name = f"daskgmm-read-{tag}", f"daskgmm-x-{tag}", f"daskgmm-ids-{tag}"
    read_layer = {
        (read_name, i): (_read_piece, fs, p, rg, tuple(columns), id_column, dtype, nan_policy)
        for i, (p, rg, _) in enumerate(pieces)
    }
    x_layer = {(x_name, i, 0): (operator.getitem, (read_name, i), 0) for i in range(len(pieces))}
    graph = HighLevelGraph({read_name: read_layer, x_name: x_layer}, {read_name: set(), x_name: {read_name}})
    X = da.Array(graph, x_name, chunks=(tuple(sizes), (len(columns),)), dtype=dtype,
                 meta=np.empty((0, len(columns)), dtype=dtype))
    ids = None
    if id_column is not None:
        id_type = infos[0].schema.field(id_column).type
        id_dtype = _numpy_dtype(id_type)
        id_layer = {(id_name, i): (operator.getitem, (read_name, i), 1) for i in range(len(pieces))}
        g2 = HighLevelGraph({read_name: read_layer, id_name: id_layer}, {read_name: set(), id_name: {read_name}})
        ids = da.Array(g2, id_name, chunks=(tuple(sizes),), dtype=id_dtype, meta=np.empty((0,), dtype=id_dtype))
    return ParquetSource(X, ids, columns, id_column, [i.path for i in infos], int(sum(sizes)), n_omitted, by_col,
                         fs=fs, pieces=pieces, dtype=dtype)


def _numpy_dtype(arrow_type) -> np.dtype:
    try:
        return np.dtype(arrow_type.to_pandas_dtype())
    except (NotImplementedError, TypeError):
        return np.dtype(object)


def read_parquet(path, columns=None, id_column=None, dtype="float64", *, nan_policy="raise",
                 chunk_rows=None, storage_options=None):
    """Parquet feature columns as a Dask array (rows chunked by row groups).

    Parameters are those of :func:`open_parquet`.

    Returns
    -------
    X : dask.array.Array, shape (n_rows, n_features)
        When ``id_column`` is None.
    (X, ids) : tuple of dask.array.Array
        When ``id_column`` is given: the features and the id column, read by
        the same tasks.
    """
    src = open_parquet(path, columns, id_column, dtype, nan_policy=nan_policy, chunk_rows=chunk_rows,
                       storage_options=storage_options)
    return src.X if id_column is None else (src.X, src.ids)


# ---------------------------------------------------------------------------
# Writing, atomically


def _local(fs) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,))


@contextlib.contextmanager
def staged_directory(target, storage_options=None):
    """Write into a staging directory beside ``target``; swap it in only on success.

    On success, a ``_SUCCESS`` marker is written into the staging directory and
    it replaces ``target`` (on a local filesystem by two renames: the old
    output is set aside, the new one renamed into place). On any exception the
    staging directory is removed and ``target`` is untouched. Leftovers of a
    killed job for the same target are handled first: staging directories are
    removed, and an output set aside by a swap that did not finish is put back
    (or removed, when the swap did finish).

    Yields
    ------
    fs : fsspec.AbstractFileSystem
    staging : str
    """
    target = os.fspath(target)
    fs = _get_fs(target, storage_options)
    path = _strip(fs, target).rstrip("/")
    parent, base = posixpath.split(path)
    if fs.exists(path) and not fs.isdir(path):
        raise DataError(f"output {target!r} exists and is not a directory")
    if parent:
        fs.makedirs(parent, exist_ok=True)
    prefix, old_prefix = f".{base}.staging-", f".{base}.old-"
    entries = []
    with contextlib.suppress(FileNotFoundError):
        entries = [e.rstrip("/") for e in fs.ls(parent or ".", detail=False)]
    for entry in entries:
        if posixpath.basename(entry).startswith(prefix):
            fs.rm(entry, recursive=True)
    olds = sorted(e for e in entries if posixpath.basename(e).startswith(old_prefix))
    if olds and not fs.exists(path):
        # a job killed between the two renames of a swap: the set-aside output is the last complete one
        _move(fs, olds.pop(), path)
    for entry in olds:
        fs.rm(entry, recursive=True)
    staging = posixpath.join(parent, f"{prefix}{uuid.uuid4().hex[:12]}")
    fs.makedirs(staging, exist_ok=False)
    try:
        yield fs, staging
        with fs.open(posixpath.join(staging, "_SUCCESS"), "wb"):
            pass
    except BaseException:
        with contextlib.suppress(Exception):
            fs.rm(staging, recursive=True)
        raise
    if fs.exists(path):
        old = posixpath.join(parent, f".{base}.old-{uuid.uuid4().hex[:12]}")
        _move(fs, path, old)
        _move(fs, staging, path)
        fs.rm(old, recursive=True)
    else:
        _move(fs, staging, path)


def _move(fs, src, dst):
    if _local(fs):
        os.rename(src, dst)  # atomic on one filesystem
    else:
        fs.mv(src, dst, recursive=True)


def _write_part(fs, directory, index, columns: dict):
    """Write one Parquet part file from a dict of equal-length arrays."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({k: pa.array(v) for k, v in columns.items()})
    with fs.open(posixpath.join(directory, f"part-{index:05d}.parquet"), "wb") as f:
        pq.write_table(table, f)
    return table.num_rows


def write_parts(target, parts, storage_options=None) -> int:
    """Write Dask-computed column dicts as Parquet parts into ``target``, atomically.

    Parameters
    ----------
    target : str
        Output directory (replaced as a whole on success).
    parts : list of dask.delayed.Delayed
        Each computes a dict ``{column name: 1-D array}`` for one part.

    Returns
    -------
    int
        Rows written.
    """
    with staged_directory(target, storage_options) as (fs, staging):
        return write_parts_into(fs, staging, parts)


def write_parts_into(fs, directory, parts) -> int:
    """Compute ``parts`` (Delayed column dicts) and write each as a part file of ``directory``."""
    import dask

    writes = [dask.delayed(_write_part)(fs, directory, i, p) for i, p in enumerate(parts)]
    return int(sum(dask.compute(*writes)))


def rows_per_part(n_rows: int, n_parts: int) -> list[int]:
    """Split ``n_rows`` into ``n_parts`` nearly equal parts."""
    base = n_rows // n_parts
    extra = n_rows % n_parts
    return [base + (1 if i < extra else 0) for i in range(n_parts)]


__all__ = [
    "DataError",
    "NonFiniteError",
    "ParquetSource",
    "RowsOmittedWarning",
    "list_files",
    "open_parquet",
    "read_parquet",
    "staged_directory",
    "write_parts",
]
