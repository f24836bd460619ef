"""What the command reads rows from: the source protocol, and one opener per input format.

A format is a module of this folder with an opener that returns a :class:`Source`
(:func:`daskgmm.io.parquet.open_parquet` for Parquet); adding one is adding its module
and a line to ``OPENERS``: the command, the checkpoints and the outputs see only
the protocol.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from daskgmm.io.parquet import open_parquet
from daskgmm.io.sparse import open_sparse_source


@runtime_checkable
class Source(Protocol):
    """Rows opened for EM passes.

    Attributes
    ----------
    X : dask.array.Array, shape (n_rows, n_features)
        The feature rows, chunked by rows (chunks sized from the workers' memory); of sparse rows, chunks of
        ``scipy.sparse.csr_array``.
    ids : dask.array.Array of shape (n_rows,), list of them, or None
        A column carried beside the rows (to join predictions back), or one per name when ``id_column``
        is a list, read by the same tasks.
    columns : list of str
        The feature columns' names, in order; of sparse rows, the columns they are read from (a vector column,
        or the indices and values columns), not one per feature.
    id_column : str, list of str, or None
    files : list of str
        Every file read, in order.
    n_rows : int
        Rows after any dropped for non-finite values.
    n_omitted : int
        Rows dropped (``nan_policy="omit"``).
    """

    X: object
    ids: object
    columns: list
    id_column: str | list | None
    files: list
    n_rows: int
    n_omitted: int

    def signatures(self) -> list:
        """``[path, size, modification time or None]`` of every file: what a checkpoint must match."""

    def nonfinite_summary(self) -> str:
        """Where the non-finite feature values are (by column and file), for error messages."""


#: The openers by format: dense feature columns, and sparse rows (a vector column, or indices and values).
OPENERS = {"parquet": open_parquet, "sparse": open_sparse_source}


def open_source(data, columns=None, id_column=None, dtype="float64", *, format="parquet", **options) -> Source:
    """Open ``data`` with the opener of ``format``.

    Parameters
    ----------
    data : str, path-like, or list of them
        Files, directories, globs or fsspec URLs.
    columns : list of str, optional
    id_column : str or list of str, optional
    dtype : {"float64", "float32"}
    format : str
        A key of ``OPENERS``.
    **options
        The opener's own (for Parquet: ``nan_policy``, ``chunk_rows``, ``storage_options``, ``footers``, ...;
        sparse rows also ``n_features``).
    """
    if format not in OPENERS:
        raise ValueError(f"format must be one of {tuple(OPENERS)}, got {format!r}")
    return OPENERS[format](data, columns, id_column, dtype, **options)
