"""The runtime: the cluster connection (``cluster``), passes over a Dask array by rows (``passes``:
persist, placement, the merge tree, the pass runner) and a stop a signal asked for (``stop``).

Knows nothing of covariance algebra: a pass runs the kernels' requests."""
