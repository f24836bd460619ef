"""The runtime: the cluster connection (``cluster``), passes over a Dask array by rows (``passes``:
persist, placement, the merge tree, the pass runner), a stop a signal asked for (``stop``) and
the size Dask counts for sparse chunks (``sizes``).

Knows nothing of covariance algebra: a pass runs the kernels' requests."""
