"""Reading planned Parquet pieces (:class:`daskgmm.io.files.Piece`): the tasks of an input's Dask graph.

Each task reads only the chosen columns, in batches, checks that the file is still the
one planned (size, modification time, rows), and verifies Parquet page checksums where
present. Chunks are column-major (Fortran order), which is how Parquet stores columns and
how the kernels want them (transposed, features by rows).
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict

import numpy as np

# a worker stores the sparse chunks these reads return: Dask must count their size
from daskgmm.engine.sizes import counted
from daskgmm.io.files import (
    DataError,
    InputChangedError,
    NonFiniteError,
    Piece,
    bound_s3,
    file_signature,
    is_local,
)
from daskgmm.kernels.scan import first_bad_row as bad_row_words


def piece_arrays(prefix: str, tag: str, read, fs, pieces, args: tuple, sizes, width: int, dtype, meta,
                 id_types=()):
    """An input's rows (and id columns) as Dask arrays over its planned pieces: task ``i`` is
    ``read(fs, pieces[i], *args)``, which returns (rows, a tuple of one array per id column).

    Parameters
    ----------
    prefix, tag : str
        The tasks' keys: ``{prefix}-read-{tag}``, ``{prefix}-x-{tag}``, ``{prefix}-ids-{tag}``.
    sizes : sequence of int
        Rows of each chunk (after any rows dropped).
    width, dtype, meta
        Columns, dtype and an empty chunk of the rows' array.
    id_types : sequence of pyarrow.DataType
        The id columns' types, in the order the reads return them (none: no ids).

    Returns
    -------
    X : dask.array.Array, shape (sum(sizes), width)
    ids : list of dask.array.Array of shape (sum(sizes),)
        One per id column, each taken from the same read tasks as ``X`` (a row's ids travel with it).
    """
    import operator

    import dask.array as da
    from dask.highlevelgraph import HighLevelGraph

    read_name, x_name = f"{prefix}-read-{tag}", f"{prefix}-x-{tag}"
    read_layer = {(read_name, i): (read, fs, p, *args) for i, p in enumerate(pieces)}

    def part(out_name, index, keys):  # element ``index`` of every read task's result
        layer = {(out_name, i, *keys): (operator.getitem, (read_name, i), index) for i in range(len(pieces))}
        return HighLevelGraph({read_name: read_layer, out_name: layer}, {read_name: set(), out_name: {read_name}})

    X = da.Array(part(x_name, 0, (0,)), x_name, chunks=(tuple(sizes), (width,)), dtype=dtype, meta=meta)
    ids = []
    for k, id_type in enumerate(id_types):
        try:
            id_dtype = np.dtype(id_type.to_pandas_dtype())
        except (NotImplementedError, TypeError):
            id_dtype = np.dtype(object)
        # the first id column keeps the name it had alone: a job's task names are what its logs show
        id_name = f"{prefix}-ids-{tag}" if k == 0 else f"{prefix}-ids{k}-{tag}"
        layer = {(id_name, i): (_ids_of, (read_name, i), k, id_dtype) for i in range(len(pieces))}
        graph = HighLevelGraph({read_name: read_layer, id_name: layer}, {read_name: set(), id_name: {read_name}})
        ids.append(da.Array(graph, id_name, chunks=(tuple(sizes),), dtype=id_dtype,
                            meta=np.empty((0,), dtype=id_dtype)))
        _ID_TYPES[id_name] = id_type
        _ID_TYPES.move_to_end(id_name)
        while len(_ID_TYPES) > _ID_TYPES_KEPT:  # a long-lived process's reads: the newest are the ones written
            _ID_TYPES.popitem(last=False)
    return X, ids


#: The Arrow type of each id column read (``{its layer's name: type}``): what ``write_predictions`` writes it as
_ID_TYPES: OrderedDict = OrderedDict()
#: How many reads' id types are kept (an older read's ids are then typed by each part's values, as others' are)
_ID_TYPES_KEPT = 4096


def id_type_of(ids):
    """The Arrow type the predictions write ids in (:func:`daskgmm.io.files.written_id_type`), when ``ids`` is
    (computed from) one id column of daskgmm's Parquet reads, else None: the parts of ids of other sources
    type them from their values."""
    from daskgmm.io.files import written_id_type

    graph = ids.__dask_graph__() if hasattr(ids, "__dask_graph__") else None
    if graph is None:
        return None
    names = set(getattr(graph, "layers", {}) or {})
    names.update(k[0] if isinstance(k, tuple) else k for k in graph.keys())
    found = {_ID_TYPES[n] for n in names if isinstance(n, str) and n in _ID_TYPES}
    return written_id_type(found.pop()) if len(found) == 1 else None


def _ids_of(chunk, k, dtype):
    """Id column ``k`` of a read chunk, integers widened to ``dtype`` (a file whose id column is int32 among
    int64 ones); objects (integers with nulls) and other types as read."""
    ids = chunk[1][k]
    if ids.dtype != dtype and ids.dtype.kind in "iu" and dtype.kind in "iu":
        ids = ids.astype(dtype)
    return ids


#: Rows of one column decoded at a time inside a chunk task (Arrow's batch size).
BATCH_ROWS = 65536

#: Read buffer of Parquet files: column chunks are streamed, never read whole.
_READ_BUFFER = 1 << 20


def _numpy_dtype(arrow_type):
    """The NumPy dtype of an Arrow integer or floating type, else None."""
    import pyarrow as pa

    if pa.types.is_integer(arrow_type):
        return np.dtype(f"{'u' if pa.types.is_unsigned_integer(arrow_type) else 'i'}{arrow_type.bit_width // 8}")
    if pa.types.is_floating(arrow_type):
        return np.dtype(f"f{arrow_type.bit_width // 8}")
    return None


def arrow_values(part) -> np.ndarray:
    """The values of an Arrow array as NumPy (nulls of a float array as NaN).

    Integer and float arrays are read from their buffers: pyarrow's own conversion
    (``to_numpy``) imports pandas, ~40 MiB in a worker that has no other use for it.
    Other types (strings, timestamps, integers with nulls) are converted by pyarrow.
    """
    dtype = _numpy_dtype(part.type)
    if dtype is None or (part.null_count and dtype.kind != "f"):
        return part.to_numpy(zero_copy_only=False)
    validity, data = part.buffers()[:2]
    x = np.frombuffer(data, dtype=dtype, count=len(part), offset=part.offset * dtype.itemsize)
    if part.null_count:
        bits = np.unpackbits(np.frombuffer(validity, np.uint8), count=part.offset + len(part), bitorder="little")
        x = np.where(bits[part.offset:].astype(bool), x, np.nan)
    return x


def id_values(part) -> np.ndarray:
    """The values of an id column's Arrow array as NumPy, in the column's own type.

    Integers with nulls come back as an object array of ints and None (``arrow_values`` and
    pyarrow's ``to_numpy`` give float64 with NaN: ids over 2**53 lose digits, and the predictions'
    part of a chunk with a null wrote the id as double where the other parts wrote int64).
    """
    import pyarrow as pa

    if not (pa.types.is_integer(part.type) and part.null_count):
        return arrow_values(part)
    return np.array(part.to_pylist() + [None], dtype=object)[:-1]  # the None keeps it 1-D object


@contextlib.contextmanager
def _open_checked(fs, piece: Piece):
    """The piece's file as a ``pyarrow.parquet.ParquetFile`` (page checksums verified), checked to be
    the file the job planned before it is opened and once its footer is read."""
    import pyarrow.parquet as pq

    if not is_local(fs):
        # in a worker, before its first request makes the store's session: the worker's writes of the same
        # filesystem then take the bound too (daskgmm.io.files.bound_s3)
        bound_s3(fs)
    _check_unchanged(fs, piece)
    with fs.open(piece.path, "rb") as f:
        pf = pq.ParquetFile(f, buffer_size=_READ_BUFFER, pre_buffer=False, page_checksum_verification=True)
        _check_unchanged(fs, piece, pf)
        yield pf


def _read_failed(fs, path: str, where: str, exc: BaseException) -> Exception:
    """The error of a chunk read of ``path`` that failed with ``exc``.

    The command checked the footers with its own host's credentials and endpoint; the reads run on
    the workers, with theirs (their hosts' ``AWS_*`` variables, profiles and roles): on a cluster of
    other hosts a store that refuses them, or an endpoint they cannot reach, is their environment,
    not a corrupt file, and the message says which worker read it. An endpoint not reached fails as
    the command's own (:class:`~daskgmm.io.files.EndpointUnreachableError`, exit 1), a refusal is bad
    input as the command's own (exit 2), anything else a file that cannot be read.
    """
    from daskgmm.io.files import (
        is_local,
        no_credentials,
        store_silent,
        this_worker,
        unreachable,
        unreachable_error,
        worker_credentials,
    )

    by = this_worker()
    if store_silent(exc):
        # botocore's own error, which pickles as itself and names the file's URL: the command knows a silent
        # store by its type (exit 1, its clean-up deadline); a DataError made it bad input, exit 2
        return exc
    if unreachable(exc):
        error = unreachable_error(exc, f"{path} (read by {by})" if by else path)
        if by:
            error.args = (f"{error}; a worker reaches the store by its own host's settings (AWS_ENDPOINT_URL, "
                          "~/.aws/config) unless the storage options name the endpoint",)
        return error
    if not is_local(fs) and (isinstance(exc, PermissionError) or no_credentials(exc)):
        on = f" to {by}" if by else ""
        return DataError(f"{path}: the store refused reading {where}{on} ({type(exc).__name__}: {exc}); "
                         f"{worker_credentials('reads')}")
    return DataError(f"{path}: reading {where} failed ({type(exc).__name__}: {exc})")


def _check_unchanged(fs, piece: Piece, pf=None):
    if piece.signature:
        try:
            now = file_signature(fs, piece.path)
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


def _read_column(pf, piece: Piece, name):
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


def _stored(columns, vectors) -> list:
    """The columns a chunk reads from its file, each with ``[(j, element or None), ...]``: where its values go
    in the matrix (an element ``v[k]`` of a vector column ``v`` of ``vectors`` reads ``v``; each column once)."""
    from daskgmm.io.vectors import ELEMENT

    plan: dict = {}
    for j, c in enumerate(columns):
        m = ELEMENT.match(c) if vectors else None
        if m and m[1] in vectors:
            plan.setdefault(m[1], []).append((j, int(m[2])))
        else:
            plan.setdefault(c, []).append((j, None))
    return list(plan.items())


def _read_matrix(fs, piece: Piece, columns, dtype, id_column=(), vectors=None):
    """Feature matrix (n, D), Fortran-ordered, and the id columns ``id_column`` (names) of one planned chunk,
    a tuple of one array each, in the column's own type.

    One column at a time, in batches of at most ``BATCH_ROWS`` rows
    (single-threaded: Dask provides the parallelism) from a buffered stream:
    Arrow decoding every column of a row group at once held ~57 MiB of pages
    and dictionaries for 17 columns (measured), one column at a time ~5 MiB,
    and was no faster. So a chunk costs its matrix plus one column's batch
    however large the writer's row groups are. Rows before a slice are decoded
    and dropped. Nulls become NaN. Page checksums are verified where the
    writer stored them. ``vectors`` (``{column: width}``) names the Spark ML vector columns whose
    elements ``v[k]`` are among ``columns`` (:mod:`daskgmm.io.vectors`).
    """
    import pyarrow as pa

    from daskgmm.io.vectors import vector_block

    target = pa.float32() if np.dtype(dtype) == np.float32 else pa.float64()
    path = piece.path
    try:
        with _open_checked(fs, piece) as pf:
            x = np.empty((piece.rows, len(columns)), dtype=dtype, order="F")
            constants = dict(piece.constants)
            for c, into in _stored(columns, vectors):
                j = into[0][0]
                start = 0
                if c in constants:  # a partition key of the file's path: one value for every row
                    value = constants[c]
                    x[:, j] = np.nan if value is None else value
                    for jj, _ in into[1:]:
                        x[:, jj] = x[:, j]
                    continue
                parts = _read_column(pf, piece, c)
                for part in parts:
                    if into[0][1] is not None:  # elements of a vector column: every one wanted from one read
                        block = vector_block(part, vectors[c], c, lambda r, at=start: f"{path} "
                                             f"({_row_in_file(piece, at + r)})")
                        for jj, k in into:
                            with np.errstate(over="ignore"):  # a double beyond float32: named just below
                                x[start : start + len(part), jj] = block[:, k]
                            _check_float32_range(x[start : start + len(part), jj], lambda b=block[:, k]: b,
                                                 f"{c}[{k}]", piece, lambda i, at=start: at + i)
                        start += len(part)
                        continue
                    source = part
                    if part.type != target:
                        # integers beyond 2**53 (2**24 for float32) round, as NumPy's astype rounds them;
                        # Arrow's safe cast refused them without naming the column
                        part = part.cast(target, safe=not pa.types.is_integer(part.type))
                    x[start : start + len(part), j] = arrow_values(part)
                    if source is not part:
                        _check_float32_range(x[start : start + len(part), j],
                                             lambda s=source: arrow_values(s.cast(pa.float64())), c, piece,
                                             lambda i, at=start: at + i)
                    for jj, _ in into[1:]:  # a column named twice (never by check_schemas: kept exact anyway)
                        x[start : start + len(part), jj] = x[start : start + len(part), j]
                    start += len(part)
                del parts
                if start != piece.rows:
                    raise InputChangedError(f"{path}: read {start} rows of column {c!r} where the job planned "
                                            f"{piece.rows}; inputs must not change during a job")
            ids = _read_ids(pf, piece, id_column)
        _check_unchanged(fs, piece)
    except DataError:  # a changed file, or a vector of the wrong width: named already
        raise
    except FileNotFoundError:
        raise InputChangedError(f"{path}: the file was removed after the job started; "
                                "inputs must not change during a job") from None
    except Exception as exc:  # a corrupt file fails in many ways
        where = ", ".join(f"row group {g} rows {lo}-{hi}" for g, lo, hi in piece.slices)
        raise _read_failed(fs, path, where, exc) from None
    finally:
        # Arrow's allocator (mimalloc) keeps freed pages: give them back before the
        # kernels run, so they do not add to the worker's peak
        pa.default_memory_pool().release_unused()
    return x, ids


def _check_float32_range(got, source, column: str, piece: Piece, row):
    """Refuse a finite value of the file that became ±inf in ``got``, a column read as float32.

    Such values (above 3.4e38 in magnitude, in a double or decimal column) would otherwise be
    counted and dropped as infinities of the data. ``source()`` gives the column's values as float64
    (called only when ``got`` holds an infinity); ``row(i)``: the row of the chunk that ``got[i]`` is in.
    """
    if got.dtype != np.float32:
        return
    inf = np.isinf(got)
    if not inf.any():
        return
    values = np.asarray(source(), dtype=np.float64)
    over = inf & np.isfinite(values)
    if over.any():
        i = int(np.argmax(over))
        raise DataError(f"{piece.path} ({_row_in_file(piece, row(i))}): column {column!r} holds {values[i]:.6g}, "
                        "a value too large for dtype('float32') (at most 3.4e38 in magnitude); read the data as "
                        "float64 (dtype='float64', --dtype float64) or rescale the column")


def _read_ids(pf, piece: Piece, id_column) -> tuple:
    """The id columns ``id_column`` (names) of one planned chunk, one array each in the column's own type;
    a partition key of the file's path (``piece.constants``) gives its one value on every row."""
    constants = dict(piece.constants)
    ids = []
    for c in id_column:
        if c in constants:
            ids.append(np.full(piece.rows, constants[c], dtype=_constant_dtype(constants[c])))
            continue
        parts = _read_column(pf, piece, c)
        got = np.concatenate([id_values(p) for p in parts]) if parts else np.empty(0)
        del parts
        if len(got) != piece.rows:
            raise InputChangedError(f"{piece.path}: read {len(got)} rows of column {c!r} where the job planned "
                                    f"{piece.rows}; inputs must not change during a job")
        ids.append(got)
    return tuple(ids)


def _constant_dtype(value) -> np.dtype:
    """The NumPy dtype of an id column read from a partition key: as :func:`id_values` gives the
    column's Arrow type (int64, float64; strings and nulls as objects)."""
    if isinstance(value, int):
        return np.dtype(np.int64)
    return np.dtype(np.float64) if isinstance(value, float) else np.dtype(object)


def _bad_rows(x) -> np.ndarray:
    return ~np.isfinite(x).all(axis=1)


#: What a chunk's bad values are, and what to do, by whether NaN and null are missing values (marginalize).
NONFINITE_WHAT = {False: "NaN, null or infinite values", True: "infinite values"}
NONFINITE_ADVICE = {
    False: "fix the data, drop those rows with nan_policy='omit' (--nan-policy omit), or keep NaN and null as "
           "missing values of a mixture with nan_policy='marginalize' (--nan-policy marginalize)",
    True: "infinity is not a missing value under nan_policy='marginalize': fix the data or drop those rows "
          "with nan_policy='omit' (--nan-policy omit)",
}


def read_piece(fs, piece, columns, id_column, dtype, nan_policy, vectors=None):
    """One chunk: (features (n, D) Fortran-ordered, a tuple of the id columns' (n,) arrays, one per name of
    ``id_column``)."""
    x, ids = _read_matrix(fs, piece, columns, dtype, id_column, vectors)
    # "marginalize" keeps NaN/null (a missing value for the model); infinity stays an error
    bad = np.isinf(x).any(axis=1) if nan_policy == "marginalize" else _bad_rows(x)
    if bad.any():
        if nan_policy != "omit":
            marginalize = nan_policy == "marginalize"
            # under "marginalize" NaN and null are data: only the infinities are counted
            counts = (np.isinf(x) if marginalize else ~np.isfinite(x)).sum(axis=0)
            detail = ", ".join(f"column {c!r}: {int(n)}" for c, n in zip(columns, counts) if n)
            raise NonFiniteError(
                f"{piece.path} (row group(s) {[g for g, _, _ in piece.slices]}): {int(bad.sum())} row(s) with "
                f"{NONFINITE_WHAT[marginalize]} ({detail}); {NONFINITE_ADVICE[marginalize]}"
            )
        keep = ~bad
        x = np.asfortranarray(x[keep])
        ids = tuple(i[keep] for i in ids)
    return x, ids


def _count_bad(fs, piece, columns, dtype, infinite_only=False, vectors=None):
    x, _ = _read_matrix(fs, piece, columns, dtype, vectors=vectors)
    bad = np.isinf(x) if infinite_only else ~np.isfinite(x)
    rows = bad.any(axis=1)
    first = int(np.argmax(rows)) if rows.any() else -1
    return int(rows.sum()), bad.sum(axis=0), first


def count_nonfinite(fs, pieces, columns, dtype, infinite_only=False, vectors=None):
    """One read of every piece: rows with non-finite values (``infinite_only``: infinite) per piece, values
    per column, and the first such row of each piece (-1: none; counted in the piece)."""
    import dask

    from daskgmm.engine.cluster import compute_bounded

    counts = compute_bounded(*[dask.delayed(_count_bad)(fs, p, columns, dtype, infinite_only, vectors)
                               for p in pieces],
                             what="count of non-finite values")
    return [c[0] for c in counts], np.sum([c[1] for c in counts], axis=0), [c[2] for c in counts]


def first_bad_row(pieces, first_in_piece) -> str:
    """The words "the first at row 5 (path, row group 0, row 5; in rows 0 to 999 of the data, chunk 1 of 3)"
    (:func:`daskgmm.kernels.scan.first_bad_row`): the smallest bad row of the data (pieces in row order),
    from :func:`count_nonfinite`'s first rows."""
    start = 0
    for i, (piece, row) in enumerate(zip(pieces, first_in_piece)):
        if row >= 0:
            return bad_row_words(start + row, (start, start + piece.rows, i, len(pieces)), "the data",
                                 f"{piece.path}, {_row_in_file(piece, row)}")
        start += piece.rows
    return ""


# ---------------------------------------------------------------------------
# Sparse rows (daskgmm.io.sparse: two list columns, indices and values)


def _row_in_file(piece: Piece, row: int) -> str:
    """Where row ``row`` of a chunk is in its file: "row group G, row R" (R counted in the row group)."""
    for g, lo, hi in piece.slices:
        if row < hi - lo:
            return f"row group {g}, row {lo + row}"
        row -= hi - lo
    return "after the planned rows"


def _list_parts(pf, piece: Piece, name, what):
    """(offsets rebased to 0, flat values) of each row slice of a list column; null lists are an error."""
    import pyarrow as pa

    out = []
    row = 0
    for part in _read_column(pf, piece, name):
        if isinstance(part, pa.ChunkedArray):
            part = part.combine_chunks()
        if part.null_count:
            bad = row + int(np.flatnonzero(np.asarray(part.is_null()))[0])
            raise DataError(f"{piece.path} ({_row_in_file(piece, bad)}): column {name!r} ({what}) is null; an "
                            "empty list is a row of zeros, a null one is not allowed")
        offsets = np.asarray(part.offsets, dtype=np.int64)
        out.append((offsets - offsets[0], part.flatten()))
        row += len(part)
    return out


def _vector_entries(pf, piece: Piece, vector, n_features):
    """Per-row entry counts, columns and values of a Spark ML vector column in one chunk."""
    from daskgmm.io.vectors import vector_entries

    counts, cols, vals = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0)]
    start = 0
    for part in _read_column(pf, piece, vector):
        c, k, v = vector_entries(part, n_features, vector,
                                 lambda r, at=start: f"{piece.path} ({_row_in_file(piece, at + r)})")
        counts.append(c)
        cols.append(k)
        vals.append(v)
        start += len(part)
    return np.concatenate(counts), np.concatenate(cols), np.concatenate(vals)


def _read_sparse(fs, piece: Piece, indices, values, n_features, dtype, id_column=(), vector=None):
    """One chunk of sparse rows: (csr_array (rows, n_features), a tuple of the id columns ``id_column``).

    With ``vector``, the rows are that Spark ML vector column's (:mod:`daskgmm.io.vectors`), not the
    ``indices`` and ``values`` list columns."""
    import pyarrow as pa
    import scipy.sparse as sp

    path = piece.path
    where = f"row group(s) {[g for g, _, _ in piece.slices]}"
    idx_dtype = np.int32 if n_features < 2**31 else np.int64
    try:
        with _open_checked(fs, piece) as pf:
            if vector is None:
                ind_parts = _list_parts(pf, piece, indices, "indices")
                val_parts = _list_parts(pf, piece, values, "values")
            else:
                entries = _vector_entries(pf, piece, vector, n_features)
                indices = vector  # the column the messages below name
            ids = _read_ids(pf, piece, id_column)
        _check_unchanged(fs, piece)
    except (DataError, InputChangedError):
        raise
    except FileNotFoundError:
        raise InputChangedError(f"{path}: the file was removed after the job started; "
                                "inputs must not change during a job") from None
    except Exception as exc:  # a corrupt file fails in many ways
        raise _read_failed(fs, path, where, exc) from None
    finally:
        pa.default_memory_pool().release_unused()
    if vector is None:
        counts_i = np.concatenate([np.diff(o) for o, _ in ind_parts]) if ind_parts else np.zeros(0, np.int64)
        counts_v = np.concatenate([np.diff(o) for o, _ in val_parts]) if val_parts else np.zeros(0, np.int64)
    else:
        counts_i = counts_v = entries[0]
    if len(counts_i) != piece.rows or len(counts_v) != piece.rows:
        raise InputChangedError(f"{path}: read {len(counts_i)} rows where the job planned {piece.rows}; "
                                "inputs must not change during a job")
    if not np.array_equal(counts_i, counts_v):
        row = int(np.flatnonzero(counts_i != counts_v)[0])
        raise DataError(f"{path} ({_row_in_file(piece, row)}): {int(counts_i[row])} indices in column "
                        f"{indices!r} but {int(counts_v[row])} values in column {values!r}; each row needs one "
                        "value per index")
    if vector is None:
        flat_i = [p for _, p in ind_parts]
        flat_v = [p for _, p in val_parts]
        if any(p.null_count for p in flat_i):
            raise DataError(f"{path} ({where}): column {indices!r} holds null indices")
        col = np.concatenate([p.to_numpy(zero_copy_only=False) for p in flat_i]) if flat_i \
            else np.zeros(0, np.int64)
        target = pa.float32() if np.dtype(dtype) == np.float32 else pa.float64()
        # null values become NaN (then the nan_policy decides)
        data = np.concatenate([p.cast(target).to_numpy(zero_copy_only=False) for p in flat_v]) if flat_v \
            else np.zeros(0, dtype)
    else:
        col, data = entries[1], entries[2]
    indptr = np.concatenate([[0], np.cumsum(counts_i)])
    if col.size:
        lo, hi = int(col.min()), int(col.max())
        if lo < 0 or hi >= n_features:
            bad = int(np.flatnonzero((col < 0) | (col >= n_features))[0])
            row = int(np.searchsorted(indptr, bad, side="right") - 1)
            raise DataError(f"{path} ({_row_in_file(piece, row)}): index {int(col[bad])} in column {indices!r} "
                            f"is outside [0, n_features={n_features}); give the right n_features")
    with np.errstate(over="ignore"):  # a double beyond float32: named just below
        data = data.astype(dtype, copy=False)
    if vector is None:
        _check_float32_range(data, lambda: np.concatenate([p.cast(pa.float64()).to_numpy(zero_copy_only=False)
                                                           for p in flat_v]),
                             values, piece, lambda i: int(np.searchsorted(indptr, i, side="right") - 1))
    else:
        _check_float32_range(data, lambda: entries[2], vector, piece,
                             lambda i: int(np.searchsorted(indptr, i, side="right") - 1))
    x = sp.csr_array((data, col.astype(idx_dtype, copy=False),
                      indptr.astype(idx_dtype if indptr[-1] < 2**31 else np.int64)),
                     shape=(piece.rows, n_features), copy=False)
    if not x.has_canonical_format:
        x.sort_indices()
        same = np.diff(x.indices) == 0  # entries k and k + 1 hold one index...
        starts = x.indptr[1:-1]
        same[starts[(starts > 0) & (starts < x.nnz)] - 1] = False  # ...unless k + 1 starts a row
        if same.any():
            k = int(np.flatnonzero(same)[0])
            row = int(np.searchsorted(x.indptr, k, side="right") - 1)
            raise DataError(f"{path} ({_row_in_file(piece, row)}): index {int(x.indices[k])} appears twice in "
                            f"column {indices!r}; each index at most once per row")
    return counted(x), ids


def read_sparse_piece(fs, piece, indices, values, id_column, n_features, dtype, nan_policy, vector=None):
    """One chunk of sparse rows: (csr_array (n, n_features), a tuple of the id columns' (n,) arrays)."""
    x, ids = _read_sparse(fs, piece, indices, values, n_features, dtype, id_column, vector)
    bad = _sparse_bad_rows(x)
    if bad.any():
        if nan_policy != "omit":
            raise NonFiniteError(
                f"{piece.path} (row group(s) {[g for g, _, _ in piece.slices]}): {int(bad.sum())} row(s) with "
                f"NaN, null or infinite values in column {vector or values!r}, the first in "
                f"{_row_in_file(piece, int(np.flatnonzero(bad)[0]))}; fix the data or use nan_policy='omit'"
            )
        keep = ~bad
        x = x[keep]
        ids = tuple(i[keep] for i in ids)
    return x, ids


def _sparse_bad_rows(x) -> np.ndarray:
    bad_entries = ~np.isfinite(x.data)
    if not bad_entries.any():
        return np.zeros(x.shape[0], dtype=bool)
    rows = np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))
    return np.bincount(rows[bad_entries], minlength=x.shape[0]) > 0


def _count_sparse_bad(fs, piece, indices, values, n_features, dtype, vector=None):
    x, _ = _read_sparse(fs, piece, indices, values, n_features, dtype, vector=vector)
    return int(_sparse_bad_rows(x).sum())


def count_sparse_nonfinite(fs, pieces, indices, values, n_features, dtype, vector=None) -> list:
    """One read of every piece: rows with NaN, null or infinite values per piece."""
    import dask

    from daskgmm.engine.cluster import compute_bounded

    return list(compute_bounded(*[dask.delayed(_count_sparse_bad)(fs, p, indices, values, n_features, dtype,
                                                                  vector) for p in pieces],
                                what="count of non-finite values"))
