"""Spark ML vectors in Parquet: the ``features`` column of a Spark ML job, read as feature columns.

Spark writes a column of ``pyspark.ml.linalg.VectorUDT`` (what ``VectorAssembler`` makes and
every ``pyspark.ml`` estimator takes) as a struct of four fields: ``type`` (int8: 0 sparse,
1 dense), ``size`` (int32: a sparse vector's length; null for a dense one), ``indices``
(list<int32>: a sparse vector's positions; null for a dense one) and ``values``
(list<double>: a dense vector's values, or a sparse one's at ``indices``). ``VectorAssembler``
writes each row in whichever form is smaller, so one column mixes both.

A vector column of width D is read as D feature columns named ``features[0]`` …
``features[D-1]`` (the names a model fitted on it keeps, so ``predict`` on the same layout
finds them again); a name ``features[j]`` chooses one element. D is the length of the
column's first vector; every vector read must have it (an error names the file and row
otherwise). A null vector is a row of missing values (the ``nan_policy`` decides).

A column of arrays of numbers (Spark's ``ArrayType(DoubleType)``, as
``pyspark.ml.functions.vector_to_array`` writes it; an Arrow list or fixed-size list) is read the
same way, each array a dense vector.
"""

from __future__ import annotations

import numpy as np

from daskgmm.validation.scan import ELEMENT, DataError

#: Spark ML's vector type in words, for messages.
SPARK_VECTORS = ("Spark ML vectors (a struct of type: int8, size: int32, indices: list<int32>, values: list<double>, "
                 "as Spark writes a VectorUDT column)")

#: The fields of Spark's VectorUDT struct, in order.
FIELDS = ("type", "size", "indices", "values")


def is_vector(t) -> bool:
    """Whether an Arrow type is read as vectors: Spark ML's vector struct, or a list of numbers."""
    return is_spark_vector(t) or is_array(t)


def is_array(t) -> bool:
    """Whether an Arrow type is a list (or fixed-size list) of numbers: a dense vector per row."""
    import pyarrow as pa

    if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)):
        return False
    return pa.types.is_floating(t.value_type) or pa.types.is_integer(t.value_type)


def is_spark_vector(t) -> bool:
    """Whether an Arrow type is Spark ML's vector struct (``type``, ``size``, ``indices``, ``values``)."""
    import pyarrow as pa

    if not pa.types.is_struct(t) or tuple(t.field(i).name for i in range(t.num_fields)) != FIELDS:
        return False
    kind, size, indices, values = (t.field(i).type for i in range(4))
    lists = all(pa.types.is_list(x) or pa.types.is_large_list(x) for x in (indices, values))
    return (pa.types.is_integer(kind) and pa.types.is_integer(size) and lists
            and pa.types.is_integer(indices.value_type)
            and (pa.types.is_floating(values.value_type) or pa.types.is_integer(values.value_type)))


def element(name: str, schema):
    """``(vector column, j)`` when ``name`` is ``v[j]`` for a vector column ``v`` of ``schema`` (and not a
    column of its own), else None."""
    if name in schema.names:
        return None
    m = ELEMENT.match(name)
    if m and m[1] in schema.names and is_vector(schema.field(m[1]).type):
        return m[1], int(m[2])
    return None


def stored_column(name: str, schema) -> str:
    """The column of the file that holds ``name``: itself, or the vector column of an element ``v[j]``."""
    e = element(name, schema)
    return name if e is None else e[0]


def _valid(arr) -> np.ndarray:
    """Which entries of an Arrow array are not null, read from its validity bitmap."""
    if not arr.null_count:
        return np.ones(len(arr), dtype=bool)
    bits = np.unpackbits(np.frombuffer(arr.buffers()[0], np.uint8), count=arr.offset + len(arr), bitorder="little")
    return bits[arr.offset:].astype(bool)


def _buffer(arr, dtype) -> np.ndarray:
    """A primitive Arrow array without nulls as NumPy, from its data buffer (pyarrow's ``to_numpy``
    imports pandas, which a worker has no other use for)."""
    dtype = np.dtype(dtype)
    return np.frombuffer(arr.buffers()[1], dtype=dtype, count=len(arr), offset=arr.offset * dtype.itemsize)


def _ints(arr) -> np.ndarray:
    """An integer Arrow array as int64, nulls as -1 (masked here: ``pyarrow.compute.fill_null`` of a
    Python number imports pandas)."""
    import pyarrow as pa

    x = _buffer(arr.cast(pa.int64()), np.int64)
    return np.where(_valid(arr), x, -1) if arr.null_count else x


def _floats(arr) -> np.ndarray:
    """A numeric Arrow array as float64, nulls as NaN."""
    import pyarrow as pa

    x = _buffer(arr.cast(pa.float64()), np.float64)
    return np.where(_valid(arr), x, np.nan) if arr.null_count else x


def _children(part):
    """``(kind, size, indices, values)`` of a vector array (each child sliced as the array is); a list
    array's rows are dense vectors (kind 1) without ``size`` and ``indices`` (None)."""
    import pyarrow as pa

    if pa.types.is_struct(part.type):
        kind_a, size_a, ind_a, val_a = part.flatten()
        return _ints(kind_a), size_a, ind_a, val_a
    if pa.types.is_fixed_size_list(part.type):
        part = part.cast(pa.list_(part.type.value_type))
    return np.ones(len(part), np.int64), None, None, part


def vector_width(part):
    """The width of the first non-null vector of an Arrow struct (or list) array, or None when every one is null."""
    import pyarrow as pa

    if isinstance(part, pa.ChunkedArray):
        part = part.combine_chunks()
    valid = _valid(part)
    if not valid.any():
        return None
    i = int(np.argmax(valid))
    row = part[i].as_py()
    if not pa.types.is_struct(part.type):
        return len(row)
    return len(row["values"] or ()) if row["type"] == 1 else int(row["size"])


def first_width(fs, infos, name: str) -> int:
    """The width of vector column ``name``: that of its first non-null vector, in file order."""
    import pyarrow.parquet as pq

    for info in infos:
        if not sum(info.row_groups) or name not in info.schema.names:
            continue
        with fs.open(info.path, "rb") as f:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=1024, columns=[name], use_threads=False):
                width = vector_width(batch.column(0))
                if width == 0:
                    # zero features would reach the chunk sizing (a division by zero) or a fit of no columns
                    raise DataError(f"{info.path}: column {name!r}: its first vector is empty (0 elements); a vector "
                                    "column's vectors must have at least one element")
                if width is not None:
                    return width
    raise DataError(f"column {name!r}: every vector is null in {len(infos)} file(s); a vector column needs one "
                    "vector to give its width")


def expand(columns, infos, fs, known=None) -> tuple[list, dict]:
    """The feature columns with each vector column spelt out as its elements, and the widths of the
    vector columns read (``{column: D}``).

    ``columns`` come from :func:`daskgmm.io.files.check_schemas`: a vector column's name stands for all
    its elements, ``v[j]`` for one. ``known``: widths an earlier ``expand`` of the same ``infos`` returned
    (the command's, before its cluster starts), not read again.
    """
    schema = next((i.schema for i in infos if sum(i.row_groups)), infos[0].schema)
    known = known or {}
    widths: dict = {}
    out: list = []
    for c in columns:
        e = element(c, schema)
        base = e[0] if e else c if c in schema.names and is_vector(schema.field(c).type) else None
        if base is None:
            out.append(c)
            continue
        if base not in widths:
            widths[base] = known[base] if base in known else first_width(fs, infos, base)
        if e is None:
            out.extend(f"{base}[{j}]" for j in range(widths[base]))
        elif e[1] >= widths[base]:
            raise DataError(f"column {c!r}: the vector column {base!r} has {widths[base]} elements "
                            f"({base}[0] to {base}[{widths[base] - 1}])")
        else:
            out.append(c)
    dup = sorted({c for c in out if out.count(c) > 1})
    if dup:
        raise DataError(f"columns name {', '.join(map(repr, dup))} more than once (a vector column stands for all "
                        "its elements)")
    return out, widths


def vector_block(part, width: int, name: str, locate) -> np.ndarray:
    """The vectors of an Arrow struct (or list) array as a float64 matrix (n, width); a null vector a row of NaN.

    ``locate(i)`` names row i (file, row group, row) in the errors: a vector of another width,
    or a sparse vector whose indices and values differ in number or leave ``[0, width)``.
    """
    import pyarrow as pa

    if isinstance(part, pa.ChunkedArray):
        part = part.combine_chunks()
    n = len(part)
    x = np.full((n, width), np.nan)
    valid = _valid(part)
    if not valid.any():
        return x
    kind, size_a, ind_a, val_a = _children(part)
    bad = valid & (kind != 0) & (kind != 1)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"{locate(i)}: column {name!r} holds a vector of type {int(kind[i])}; Spark ML's vectors "
                        "are 0 (sparse) or 1 (dense)")
    voff = _ints(val_a.offsets)  # not rebased: positions in the unsliced values
    flat = _floats(val_a.values)
    count = np.diff(voff)
    dense = np.flatnonzero(valid & (kind == 1))
    if dense.size:
        wrong = count[dense] != width
        if wrong.any():
            i = int(dense[np.argmax(wrong)])
            # lists of varying length are most often a sparse row's indices or values (Spark's arrays)
            hint = "" if pa.types.is_struct(part.type) else (
                " (lists of varying length, such as the indices and values of sparse rows, are read as sparse "
                "rows by daskgmm.read_sparse_parquet(path, n_features, indices=..., values=...); daskgmm --sparse "
                "--columns INDICES,VALUES --n-features N)")
            raise DataError(f"{locate(i)}: column {name!r} holds a dense vector of {int(count[i])} values where "
                            f"its first vector has {width}; every vector of a column must have one width{hint}")
        x[dense] = flat[voff[dense, None] + np.arange(width)]
    sparse = np.flatnonzero(valid & (kind == 0))
    if sparse.size:
        size = _ints(size_a)
        wrong = size[sparse] != width
        if wrong.any():
            i = int(sparse[np.argmax(wrong)])
            raise DataError(f"{locate(i)}: column {name!r} holds a sparse vector of size {int(size[i])} where its "
                            f"first vector has {width}; every vector of a column must have one width")
        ioff = _ints(ind_a.offsets)
        icount = np.diff(ioff)
        wrong = icount[sparse] != count[sparse]
        if wrong.any():
            i = int(sparse[np.argmax(wrong)])
            raise DataError(f"{locate(i)}: column {name!r} holds a sparse vector of {int(icount[i])} indices and "
                            f"{int(count[i])} values")
        rows = np.repeat(sparse, count[sparse])
        # the k-th entry of each sparse row, as positions in the unsliced children
        starts_v, starts_i = np.repeat(voff[sparse], count[sparse]), np.repeat(ioff[sparse], count[sparse])
        within = np.arange(rows.size) - np.repeat(np.cumsum(count[sparse]) - count[sparse], count[sparse])
        cols = _ints(ind_a.values)[starts_i + within]
        out = (cols < 0) | (cols >= width)
        if out.any():
            k = int(np.argmax(out))
            raise DataError(f"{locate(int(rows[k]))}: column {name!r} holds a sparse vector with index "
                            f"{int(cols[k])}, outside [0, {width})")
        x[sparse] = 0.0
        x[rows, cols] = flat[starts_v + within]
    return x


def vector_entries(part, width: int, name: str, locate) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The vectors of an Arrow struct (or list) array as sparse rows: entries per row (n,), their columns and
    their values (float64), row after row; a dense vector's zeros are left out.

    Errors as :func:`vector_block`'s. A null vector is a row with a missing value: one NaN entry (in column
    0), so that the reader's ``nan_policy`` decides, as for a NaN in a vector, naming its file, column and
    count (``raise``) or dropping and counting it (``omit``); a sparse row has no other missing value.
    """
    import pyarrow as pa

    if isinstance(part, pa.ChunkedArray):
        part = part.combine_chunks()
    n = len(part)
    valid = _valid(part)
    if not valid.all():  # the rows of the vectors, then each null vector's NaN entry in row order
        null = np.flatnonzero(~valid)
        if valid.any():
            counts, cols, vals = _valid_entries(part, valid, width, name, locate)
        else:
            counts, cols, vals = np.zeros(n, np.int64), np.zeros(0, np.int64), np.zeros(0)
        rows = np.concatenate([np.repeat(np.arange(n), counts), null])
        order = np.argsort(rows, kind="stable")
        counts[null] = 1
        return (counts, np.concatenate([cols, np.zeros(null.size, cols.dtype)])[order],
                np.concatenate([vals, np.full(null.size, np.nan)])[order])
    if not n:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    return _valid_entries(part, valid, width, name, locate)


def _valid_entries(part, valid, width: int, name: str, locate):
    """:func:`vector_entries` of the rows ``valid`` (those of no null vector; the others get no entry)."""
    n = len(part)
    kind, size_a, ind_a, val_a = _children(part)
    bad = valid & (kind != 0) & (kind != 1)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"{locate(i)}: column {name!r} holds a vector of type {int(kind[i])}; Spark ML's vectors "
                        "are 0 (sparse) or 1 (dense)")
    dense = kind == 1
    voff = _ints(val_a.offsets)
    count = np.where(valid, np.diff(voff), 0)  # a null vector's children hold anything
    wrong = valid & dense & (count != width)
    if wrong.any():
        i = int(np.argmax(wrong))
        raise DataError(f"{locate(i)}: column {name!r} holds a dense vector of {int(count[i])} values where "
                        f"n_features is {width}; every vector of a column must have one width")
    if (valid & ~dense).any():  # only Spark's struct has sparse vectors
        size = _ints(size_a)
        wrong = valid & ~dense & (size != width)
        if wrong.any():
            i = int(np.argmax(wrong))
            raise DataError(f"{locate(i)}: column {name!r} holds a sparse vector of size {int(size[i])} where "
                            f"n_features is {width}; every vector of a column must have one width")
        ioff = _ints(ind_a.offsets)
        wrong = valid & ~dense & (np.diff(ioff) != count)
        if wrong.any():
            i = int(np.argmax(wrong))
            raise DataError(f"{locate(i)}: column {name!r} holds a sparse vector of {int(np.diff(ioff)[i])} "
                            f"indices and {int(count[i])} values")
    rows = np.repeat(np.arange(n), count)
    within = np.arange(rows.size) - np.repeat(np.cumsum(count) - count, count)
    vals = _floats(val_a.values)[voff[rows] + within]
    cols = within.copy()
    on_sparse = ~dense[rows]
    if on_sparse.any():
        cols[on_sparse] = _ints(ind_a.values)[ioff[rows[on_sparse]] + within[on_sparse]]
    keep = ~dense[rows] | (vals != 0)  # a dense vector's zeros are not entries of a sparse row
    if not keep.all():
        rows, cols, vals = rows[keep], cols[keep], vals[keep]
    return np.bincount(rows, minlength=n), cols, vals
