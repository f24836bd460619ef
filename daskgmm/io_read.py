"""Reading planned Parquet pieces (:class:`daskgmm.io_files.Piece`): the tasks of an input's Dask graph.

Each task reads only the chosen columns, in batches, checks that the file is still the
one planned (size, modification time, rows), and verifies Parquet page checksums where
present. Chunks are column-major (Fortran order), which is how Parquet stores columns and
how the kernels want them (transposed, features by rows).
"""

from __future__ import annotations

import numpy as np

from daskgmm.io_files import DataError, InputChangedError, NonFiniteError, Piece, file_signature

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


def _read_matrix(fs, piece: Piece, columns, dtype, id_column=None):
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
                    x[start : start + len(part), j] = arrow_values(part)
                    start += len(part)
                if j == len(columns):
                    ids = np.concatenate([arrow_values(p) for p in parts]) if parts else None
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


def read_piece(fs, piece, columns, id_column, dtype, nan_policy):
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


def count_nonfinite(fs, pieces, columns, dtype):
    """One read of every piece: rows with non-finite values per piece, and values per column."""
    import dask

    counts = dask.compute(*[dask.delayed(_count_bad)(fs, p, columns, dtype) for p in pieces])
    return [c[0] for c in counts], np.sum([c[1] for c in counts], axis=0)
