"""The size Dask counts for scipy's sparse arrays (the chunks of sparse rows).

Dask's ``sizeof`` before 2026.11 knows ``scipy.sparse.spmatrix`` only: a ``csr_array`` (a ``sparray``)
counts as 56 bytes whatever it holds, so a worker's memory accounting (spilling, pausing at its limits)
does not see persisted sparse rows. Where Dask counts ``sparray`` itself (2026.11 on), its own is kept
and this module registers nothing. Otherwise :func:`counted` registers their arrays' bytes, through Dask's
public ``sizeof.register`` only, in the process that makes a sparse chunk, before Dask sizes it:
the tasks that make the chunks a fit holds call it (:func:`csr_chunk`, which validation maps over a
user's sparse chunks; the sparse Parquet reads, ``io.read``; the chunks' cuts, ``engine.placement``).
A worker of dense data never imports SciPy for it. Importing this module registers at once where
SciPy's sparse module is loaded already.

Dask caches its dispatch per type, so a process that sized a sparse array before (a user's chunk, in a
worker that had run no daskgmm task yet) holds the generic ``object`` size for that type: the
registration names every ``sparray`` class whose dispatch is still that generic one, which replaces
what was cached.
"""

from __future__ import annotations

import sys

from dask.sizeof import sizeof

from daskgmm.kernels.protocol import issparse

_registered = False


def sizeof_sparray(x) -> int:
    """Bytes of a ``scipy.sparse.sparray``: its arrays (``data``, ``indices``, ``indptr``, ``coords``, ...)
    and small attributes, as Dask's own ``sizeof`` of a ``spmatrix`` sums them."""
    return int(sum(sizeof(v) for v in vars(x).values()))


def _subclasses(cls) -> list:
    out, todo = [], [cls]
    while todo:
        c = todo.pop()
        out.append(c)
        todo.extend(c.__subclasses__())
    return out


def register() -> None:
    """Count ``sparray``'s arrays in this process (imports SciPy's sparse module; once per process),
    unless Dask counts them itself."""
    global _registered
    if _registered:
        return
    from scipy import sparse

    generic = sizeof.dispatch(object)
    if sizeof.dispatch(sparse.sparray) is not generic:  # Dask's own (its lazy SciPy registration ran)
        _registered = True
        return
    # a class sized before has the generic size cached as its own entry: naming it replaces that entry
    stale = [c for c in _subclasses(sparse.sparray) if sizeof.dispatch(c) is generic]
    sizeof.register((sparse.sparray, *stale), sizeof_sparray)
    _registered = True


def counted(x):
    """``x``, after :func:`register` if it is a scipy.sparse block: a task that returns a sparse chunk
    calls it, so that the worker which stores the chunk counts its bytes."""
    if not _registered and issparse(x):
        register()
    return x


def csr_chunk(x):
    """A chunk of sparse rows (any scipy format, pydata ``sparse``) as a canonical ``csr_array``
    (:func:`daskgmm.kernels.sparse.as_csr`), as a task of this module: the worker that stores it
    counts the size of sparse arrays."""
    from daskgmm.kernels.sparse import as_csr

    register()
    return as_csr(x)


if "scipy.sparse" in sys.modules:
    register()
