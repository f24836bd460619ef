"""Pure NumPy kernels: nothing here knows about Dask (see docs/architecture.md)."""
