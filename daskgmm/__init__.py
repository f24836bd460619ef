"""daskgmm: Gaussian mixture models and k-means fitted by EM on Dask, for data larger than memory.

The names below are imported on first use (PEP 562): the workers of a cluster import
``daskgmm.<module>`` to run a task, which runs this file, and must not pay for the
estimators' imports (scikit-learn takes ~64 MiB per process, a quarter of a 300 MiB
worker's room for data).
"""

import importlib

from daskgmm.version import __version__ as __version__

# public name -> (module, attribute)
_LAZY = {
    "BayesianGaussianMixture": ("daskgmm.bayesian", "BayesianGaussianMixture"),
    "ConvergenceWarning": ("daskgmm.validation", "ConvergenceWarning"),
    "DataError": ("daskgmm.io", "DataError"),
    "GaussianMixture": ("daskgmm.mixture", "GaussianMixture"),
    "InvalidParameterError": ("daskgmm.validation", "InvalidParameterError"),
    "KMeans": ("daskgmm.kmeans", "KMeans"),
    "ModelFileError": ("daskgmm.persist", "ModelFileError"),
    "NotFittedError": ("daskgmm.validation", "NotFittedError"),
    "RowsOmittedWarning": ("daskgmm.io", "RowsOmittedWarning"),
    "SelectionResult": ("daskgmm.selection", "SelectionResult"),
    "open_parquet": ("daskgmm.io", "open_parquet"),
    "open_sparse_parquet": ("daskgmm.io_sparse", "open_sparse_parquet"),
    "read_parquet": ("daskgmm.io", "read_parquet"),
    "read_sparse_parquet": ("daskgmm.io_sparse", "read_sparse_parquet"),
    "select_model": ("daskgmm.selection", "select_model"),
    "write_sparse_parquet": ("daskgmm.io_sparse", "write_sparse_parquet"),
}

__all__ = sorted([*_LAZY, "__version__", "load"])


def load(path, storage_options=None):
    """Read a model saved by ``save`` (a directory of JSON and ``.npz``; never pickle).

    Returns
    -------
    GaussianMixture, BayesianGaussianMixture or KMeans
    """
    importlib.import_module("daskgmm.mixture")  # the estimators register with daskgmm.persist
    importlib.import_module("daskgmm.kmeans")
    importlib.import_module("daskgmm.bayesian")
    from daskgmm.persist import load_model

    return load_model(path, storage_options)


def __getattr__(name):
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'daskgmm' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # once
    return value


def __dir__():
    return __all__
