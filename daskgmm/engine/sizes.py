"""The size Dask counts for scipy's sparse arrays (the chunks of sparse rows).

Dask's ``sizeof`` knows ``scipy.sparse.spmatrix`` only: a ``csr_array`` (a ``sparray``) counts
as 56 bytes whatever it holds, so a worker's memory accounting (spilling, pausing at its limits)
does not see persisted sparse rows. Importing this module registers their arrays' bytes, lazily
(on the first sizing of a SciPy object: a worker of dense data never imports SciPy).

Dask caches the dispatch per type, so the registration must run in a process before it sizes its
first sparse chunk: the modules of the engine's tasks import this one (``passes``, ``placement``), so
do the sparse Parquet reads (``io.read``), and validation turns a user's sparse chunks into CSR with
:func:`csr_chunk`. Not the engine's package: the command imports ``engine.stop``, and ``--help`` imports
no Dask. Should a process have sized a sparse array before, the generic size it cached for
that type is dropped.
"""

from __future__ import annotations

import sys

from dask.sizeof import sizeof


def sizeof_sparray(x) -> int:
    """Bytes of a ``scipy.sparse.sparray``: its arrays (``data``, ``indices``, ``indptr``, ``coords``, ...)
    and small attributes, as Dask's own ``sizeof`` of a ``spmatrix`` sums them."""
    return int(sum(sizeof(v) for v in vars(x).values()))


def _register() -> None:
    from scipy import sparse

    sizeof.register(sparse.sparray, sizeof_sparray)
    # a sparse array sized before (a user's chunk in a worker that had not imported daskgmm yet) cached
    # the generic ``object`` size for its type; the dispatch would never look again
    lookup = getattr(sizeof, "_lookup", {})
    generic = lookup.get(object)
    for cls in [c for c, f in lookup.items() if f is generic and isinstance(c, type) and issubclass(c, sparse.sparray)]:
        del lookup[cls]


def csr_chunk(x):
    """A chunk of sparse rows (any scipy format, pydata ``sparse``) as a canonical ``csr_array``
    (:func:`daskgmm.kernels.sparse.as_csr`), as a task of this module: the worker that stores it
    has registered the size of sparse arrays."""
    from daskgmm.kernels.sparse import as_csr

    return as_csr(x)


if "scipy.sparse" in sys.modules:
    _register()
else:
    # one lazy registration per top-level module: Dask's own (``spmatrix``) is kept by calling it first
    _dasks = getattr(sizeof, "_lazy", {}).get("scipy")

    @sizeof.register_lazy("scipy")
    def _register_lazily() -> None:
        if _dasks is not None:
            _dasks()
        _register()
