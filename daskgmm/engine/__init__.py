"""The runtime: the cluster connection (``cluster``), passes over a Dask array by rows (``passes``:
persist, placement, the merge tree, the pass runner), a stop a signal asked for (``stop``) and
the size Dask counts for sparse chunks (``sizes``).

Knows nothing of covariance algebra: a pass runs the kernels' requests."""

# registers the size of scipy's sparse arrays (the chunks of sparse rows) in every process that
# imports the engine, before it stores a chunk: Dask's own counts 56 bytes for any csr_array
from daskgmm.engine import sizes  # noqa: F401
