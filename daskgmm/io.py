"""Parquet in (files, directories, globs, lists, fsspec URLs) and results out, atomically.

Reading builds a Dask array whose chunks are sized from memory, not from the
writer's row groups: the schema of every file is checked on the client from the
Parquet footers before any data is read, then consecutive small row groups of a
file are merged and large ones are cut into row slices, so that one task's
working set (the decoded columns, the matrix) stays within a byte budget
derived from the workers' memory limit. Each task reads only the chosen
columns, in batches, checks that the file is still the one planned (size,
modification time, rows), and verifies Parquet page checksums where present.
Chunks are column-major (Fortran order), which is how Parquet stores columns and
how the kernels want them (transposed, features by rows).

Writing goes to a staging directory beside the target, which replaces the
target only when every part is written (and ``_SUCCESS`` is in it), so a job
that fails leaves the previous output untouched and no staging directory.
"""

from __future__ import annotations

import itertools
import operator
import os
import posixpath
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

#: Rows per chunk when no memory budget is known (no cluster, no ``chunk_rows``).
DEFAULT_CHUNK_ROWS = 131072

#: Rows of one column decoded at a time inside a chunk task (Arrow's batch size).
BATCH_ROWS = 65536

#: Read buffer of Parquet files: column chunks are streamed, never read whole.
_READ_BUFFER = 1 << 20

_PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")


class DataError(ValueError):
    """The input data are unusable: a missing or non-numeric column, disagreeing
    schemas, an empty dataset, a corrupt file, NaN or infinite values."""


class NonFiniteError(DataError):
    """A chunk holds NaN, null or infinite feature values (``nan_policy="raise"``)."""


class DataWarning(UserWarning):
    """Data a fit can use but probably should not as they are (e.g. boolean features)."""


class RowsOmittedWarning(UserWarning):
    """Rows with NaN or infinite values were dropped (``nan_policy="omit"``)."""


# ---------------------------------------------------------------------------
# Finding files


def get_fs(path, storage_options=None):
    import fsspec

    fs, _, _ = fsspec.core.get_fs_token_paths(path, storage_options=storage_options or {})
    return fs


def strip_protocol(fs, path: str) -> str:
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
    fs = get_fs(paths[0], storage_options)
    files: list[str] = []
    for p in paths:
        sp = strip_protocol(fs, p)
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
    col_bytes: tuple = ()  # per row group: {column: uncompressed bytes} (decoded size from the footer)
    signature: tuple = ()  # (size, mtime) when planned


def _signature(fs, path) -> tuple:
    """(size in bytes, modification time as text or None) of a file."""
    info = fs.info(path)
    mtime = info.get("mtime", info.get("LastModified", info.get("updated")))
    return int(info.get("size") or 0), None if mtime is None else str(mtime)


def _inspect(fs, path) -> _FileInfo:
    import pyarrow.parquet as pq

    try:
        sig = _signature(fs, path)
        with fs.open(path, "rb") as f:
            md = pq.ParquetFile(f).metadata
            schema = md.schema.to_arrow_schema()
            rgs = tuple(md.row_group(i).num_rows for i in range(md.num_row_groups))
            col_bytes = []
            for i in range(md.num_row_groups):
                rg = md.row_group(i)
                sizes: dict = {}
                for j in range(rg.num_columns):
                    c = rg.column(j)
                    name = c.path_in_schema.split(".")[0]
                    sizes[name] = sizes.get(name, 0) + int(c.total_uncompressed_size or 0)
                col_bytes.append(sizes)
    except Exception as exc:  # any reader failure means an unreadable file
        raise DataError(f"{path}: not a readable Parquet file ({type(exc).__name__}: {exc})") from None
    return _FileInfo(path, schema, rgs, tuple(col_bytes), sig)


def _is_numeric(t) -> bool:
    import pyarrow as pa

    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t)


def _check_schemas(infos: list[_FileInfo], columns, id_column):
    """Feature columns after checking every file's schema; raises DataError naming file and column."""
    first = infos[0]
    names = list(first.schema.names)
    if columns is None:
        # every file must have the same columns, whichever file comes first: name the odd one
        sets = {}
        for info in infos:
            sets.setdefault(frozenset(info.schema.names), []).append(info)
        if len(sets) > 1:
            common = max(sets.values(), key=len)
            base = set(common[0].schema.names)
            odd = next(i for group in sets.values() if group is not common for i in group)
            extra, missing = sorted(set(odd.schema.names) - base), sorted(base - set(odd.schema.names))
            what = "; ".join(filter(None, [extra and f"extra column(s) {', '.join(map(repr, extra))}",
                                           missing and f"missing column(s) {', '.join(map(repr, missing))}"]))
            raise DataError(
                f"{odd.path}: its columns differ from the other files' ({what}; {len(common)} file(s) such as "
                f"{common[0].path} have: {', '.join(sorted(base))}); choose the feature columns with "
                "columns=[...] (--columns a,b,...)"
            )
        columns = [c for c in names if c != id_column]
        import pyarrow as pa

        flags = [c for c in columns if pa.types.is_boolean(first.schema.field(c).type)]
        if flags:
            warnings.warn(
                f"boolean column(s) {', '.join(map(repr, flags))} are used as 0/1 features; name the feature "
                "columns with columns=[...] (--columns a,b,...) to leave them out",
                DataWarning, stacklevel=3,
            )
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


@dataclass(frozen=True)
class _Piece:
    """One chunk: rows ``[lo, hi)`` of some row groups of one file, as planned from its footer."""

    path: str
    slices: tuple  # ((row group, lo, hi), ...) in file order
    rows: int
    signature: tuple  # (size, mtime) of the file when planned
    group_rows: tuple  # rows of each row group in ``slices``, from the footer


def bytes_per_row(info: _FileInfo, columns, id_column, dtype) -> float:
    """Decoded bytes a chunk task holds per row: the Arrow columns (from the footer's
    uncompressed sizes, at least 8 bytes a value) plus the feature matrix."""
    wanted = list(columns) + ([id_column] if id_column is not None else [])
    decoded = 0.0
    for n, sizes in zip(info.row_groups, info.col_bytes):
        if n:
            decoded = max(decoded, sum(max(sizes.get(c, 0) / n, 8.0) for c in wanted))
    return (decoded or 8.0 * len(wanted)) + len(columns) * np.dtype(dtype).itemsize


def _plan_pieces(infos: list[_FileInfo], chunk_rows: int | None, chunk_bytes: int | None = None, *,
                 columns=(), id_column=None, dtype=np.float64) -> list[_Piece]:
    """Chunks of at most ``chunk_rows`` rows (or ``chunk_bytes`` decoded bytes) each.

    Consecutive small row groups of a file are merged; a row group larger than
    a chunk is cut into equal row slices.
    """
    pieces = []
    for info in infos:
        if chunk_rows:
            target = int(chunk_rows)
        elif chunk_bytes:
            target = max(256, int(chunk_bytes // bytes_per_row(info, columns, id_column, dtype)))
        else:
            target = DEFAULT_CHUNK_ROWS
        runs: list = [[]]  # whole row groups merged while they fit
        for i, n in enumerate(info.row_groups):
            if n == 0:
                continue
            if n > target:
                cuts = rows_per_part(n, -(-n // target))
                bounds = np.concatenate([[0], np.cumsum(cuts)])
                runs += [[(i, int(lo), int(hi))] for lo, hi in itertools.pairwise(bounds)] + [[]]
                continue
            if sum(hi - lo for _, lo, hi in runs[-1]) + n > target:
                runs.append([])
            runs[-1].append((i, 0, n))
        for group in filter(None, runs):
            pieces.append(_Piece(info.path, tuple(group), sum(hi - lo for _, lo, hi in group), info.signature,
                                 tuple(info.row_groups[g] for g, _, _ in group)))
    return pieces


class InputChangedError(DataError):
    """An input file changed (size, modification time or rows) after the job planned its reads."""


def _check_unchanged(fs, piece: _Piece, pf=None):
    if piece.signature:
        try:
            now = _signature(fs, piece.path)
        except FileNotFoundError:
            raise InputChangedError(f"{piece.path}: the file was removed after the job started; "
                                    "inputs must not change during a job") from None
        if now != tuple(piece.signature):
            raise InputChangedError(
                f"{piece.path}: the file changed after the job started (size, modification time {piece.signature} "
                f"then, {now} now); inputs must not change during a job"
            )
    if pf is not None:
        md = pf.metadata
        for (g, _, _), n in zip(piece.slices, piece.group_rows):
            have = md.row_group(g).num_rows if g < md.num_row_groups else 0
            if have != n:
                raise InputChangedError(
                    f"{piece.path}: row group {g} has {have} rows, {n} when the job started; "
                    "inputs must not change during a job"
                )


def _read_column(pf, piece: _Piece, name):
    """One column of a planned chunk, as Arrow arrays of its row slices in order."""
    out = []
    for g, lo, hi in piece.slices:
        pos = 0
        batch_rows = max(1, min(BATCH_ROWS, hi - lo))
        for batch in pf.iter_batches(batch_size=batch_rows, row_groups=[g], columns=[name], use_threads=False):
            n = batch.num_rows
            a, b = max(lo, pos), min(hi, pos + n)
            if b > a:
                out.append(batch.column(0).slice(a - pos, b - a))
            pos += n
            del batch
            if pos >= hi:
                break
    return out


def _read_matrix(fs, piece: _Piece, columns, dtype, id_column=None):
    """Feature matrix (n, D), Fortran-ordered, and the id column of one planned chunk.

    One column at a time, in batches of at most ``BATCH_ROWS`` rows
    (single-threaded: Dask provides the parallelism) from a buffered stream:
    Arrow decoding every column of a row group at once held ~57 MiB of pages
    and dictionaries for 17 columns (measured), one column at a time ~5 MiB,
    and was no faster. So a chunk costs its matrix plus one column's batch
    however large the writer's row groups are. Rows before a slice are decoded
    and dropped. Nulls become NaN. Page checksums are verified where the
    writer stored them.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    target = pa.float32() if np.dtype(dtype) == np.float32 else pa.float64()
    path = piece.path
    ids = None
    try:
        _check_unchanged(fs, piece)
        with fs.open(path, "rb") as f:
            pf = pq.ParquetFile(f, buffer_size=_READ_BUFFER, pre_buffer=False, page_checksum_verification=True)
            _check_unchanged(fs, piece, pf)
            x = np.empty((piece.rows, len(columns)), dtype=dtype, order="F")
            for j, c in enumerate(list(columns) + ([id_column] if id_column is not None else [])):
                start = 0
                parts = _read_column(pf, piece, c)
                for part in parts:
                    if j == len(columns):  # the id column, kept in its own type
                        continue
                    if part.type != target:
                        part = part.cast(target)
                    x[start : start + len(part), j] = part.to_numpy(zero_copy_only=False)
                    start += len(part)
                if j == len(columns):
                    ids = np.concatenate([p.to_numpy(zero_copy_only=False) for p in parts]) if parts else None
                    start = 0 if ids is None else len(ids)
                del parts
                if start != piece.rows:
                    raise InputChangedError(f"{path}: read {start} rows of column {c!r} where the job planned "
                                            f"{piece.rows}; inputs must not change during a job")
        _check_unchanged(fs, piece)
    except InputChangedError:
        raise
    except FileNotFoundError:
        raise InputChangedError(f"{path}: the file was removed after the job started; "
                                "inputs must not change during a job") from None
    except Exception as exc:  # a corrupt file fails in many ways
        where = ", ".join(f"row group {g} rows {lo}-{hi}" for g, lo, hi in piece.slices)
        raise DataError(f"{path}: reading {where} failed ({type(exc).__name__}: {exc})") from None
    finally:
        # Arrow's allocator (mimalloc) keeps freed pages: give them back before the
        # kernels run, so they do not add to the worker's peak
        pa.default_memory_pool().release_unused()
    return x, ids


def _bad_rows(x) -> np.ndarray:
    return ~np.isfinite(x).all(axis=1)


def _read_piece(fs, piece, columns, id_column, dtype, nan_policy):
    """One chunk: (features (n, D) Fortran-ordered, ids (n,) or None)."""
    x, ids = _read_matrix(fs, piece, columns, dtype, id_column)
    # "marginalize" keeps NaN/null (a missing value for the model); infinity stays an error
    bad = np.isinf(x).any(axis=1) if nan_policy == "marginalize" else _bad_rows(x)
    if bad.any():
        if nan_policy != "omit":
            counts = (~np.isfinite(x)).sum(axis=0)
            detail = ", ".join(f"column {c!r}: {int(n)}" for c, n in zip(columns, counts) if n)
            raise NonFiniteError(
                f"{piece.path} (row group(s) {[g for g, _, _ in piece.slices]}): {int(bad.sum())} row(s) with "
                f"NaN, null or infinite values ({detail}); fix the data or use nan_policy='omit' (--nan-policy omit)"
            )
        keep = ~bad
        x = np.asfortranarray(x[keep])
        if ids is not None:
            ids = ids[keep]
    return x, ids


def _count_bad(fs, piece, columns, dtype):
    x, _ = _read_matrix(fs, piece, columns, dtype)
    return int(_bad_rows(x).sum()), (~np.isfinite(x)).sum(axis=0)


def _count_nonfinite(fs, pieces, columns, dtype):
    """One read of every piece: rows with non-finite values per piece, and values per column."""
    import dask

    counts = dask.compute(*[dask.delayed(_count_bad)(fs, p, columns, dtype) for p in pieces])
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
        return [[path, *_signature(self.fs, path)] for path in self.files]

    def nonfinite_summary(self) -> str:
        """Rows with NaN, null or infinite feature values over the whole dataset, by
        column and by file (one more read of the data; for error messages)."""
        per_piece, per_col = _count_nonfinite(self.fs, self.pieces, self.columns, self.dtype)
        rows = int(sum(per_piece))
        by_file: dict = {}
        for piece, n in zip(self.pieces, per_piece):
            if n:
                by_file[piece.path] = by_file.get(piece.path, 0) + int(n)
        cols = ", ".join(f"column {c!r}: {int(n)}" for c, n in zip(self.columns, per_col) if n)
        shown = sorted(by_file.items(), key=lambda kv: -kv[1])[:5]
        files = ", ".join(f"{p} ({n})" for p, n in shown)
        more = f" and {len(by_file) - len(shown)} more" if len(by_file) > len(shown) else ""
        return (f"{rows} of {sum(p.rows for p in self.pieces)} row(s) have NaN, null or infinite values "
                f"({cols}) in {len(by_file)} of {len(self.files)} file(s): {files}{more}; fix the data "
                "or use nan_policy='omit' (--nan-policy omit)")


def open_parquet(
    path, columns=None, id_column=None, dtype="float64", *, nan_policy="raise",
    chunk_rows=None, chunk_bytes=None, storage_options=None,
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
    nan_policy : {"raise", "omit", "marginalize"}
        NaN, null or infinite feature values raise a DataError naming the file,
        the column and the number of rows; or the rows are dropped (one
        counting pass first; a RowsOmittedWarning reports how many); or NaN and
        null are kept as NaN, for ``GaussianMixture(missing="marginalize")``
        (infinity still raises).
    chunk_rows : int, optional
        Rows per chunk: smaller row groups of a file are merged, larger ones
        cut into row slices. Default: from ``chunk_bytes``.
    chunk_bytes : int, optional
        Decoded bytes one chunk task may hold (Arrow columns plus the
        matrix, sized from the footers). Default: from the active client's
        worker memory limits (:func:`daskgmm.cluster.chunk_budget`), else
        ``DEFAULT_CHUNK_ROWS`` rows.
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
    if nan_policy not in ("raise", "omit", "marginalize"):
        raise ValueError(f"nan_policy must be 'raise', 'omit' or 'marginalize', got {nan_policy!r}")
    fs, files = list_files(path, storage_options)
    with ThreadPoolExecutor(max_workers=min(16, len(files))) as pool:
        infos = list(pool.map(lambda f: _inspect(fs, f), files))
    columns = _check_schemas(infos, columns, id_column)
    if chunk_rows is None and chunk_bytes is None:
        from daskgmm.cluster import active_client, chunk_budget

        chunk_bytes = chunk_budget(active_client())
    pieces = _plan_pieces(infos, chunk_rows, chunk_bytes, columns=columns, id_column=id_column, dtype=dtype)
    total = sum(p.rows for p in pieces)
    if total == 0:
        raise DataError(f"no rows in {path!r} ({len(files)} file(s), all empty)")
    sizes = [p.rows for p in pieces]
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
        (read_name, i): (_read_piece, fs, p, tuple(columns), id_column, dtype, nan_policy)
        for i, p in enumerate(pieces)
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
                 chunk_rows=None, chunk_bytes=None, storage_options=None):
    """Parquet feature columns as a Dask array (rows chunked to a memory budget).

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
                       chunk_bytes=chunk_bytes, storage_options=storage_options)
    return src.X if id_column is None else (src.X, src.ids)


def rows_per_part(n_rows: int, n_parts: int) -> list[int]:
    """Split ``n_rows`` into ``n_parts`` nearly equal parts."""
    base = n_rows // n_parts
    extra = n_rows % n_parts
    return [base + (1 if i < extra else 0) for i in range(n_parts)]



__all__ = [
    "DataError",
    "DataWarning",
    "NonFiniteError",
    "ParquetSource",
    "RowsOmittedWarning",
    "list_files",
    "open_parquet",
    "read_parquet",
    "rows_per_part",
]
