"""daskgmm: Gaussian mixture models and k-means fitted by EM on Dask, for data larger than memory."""

import importlib

from daskgmm.persist import register

# model files may name these; their modules are imported when one first does
register("GaussianMixture", "daskgmm.mixture")
register("KMeans", "daskgmm.kmeans")

__version__ = "0.1.0"

# Public names are imported on first use (PEP 562): a worker unpickling a chunk task
# imports this package, and the estimators would bring scikit-learn, SciPy and pandas
# with them, ~110 MiB per worker process that a 300 MiB memory limit cannot spare.
# scikit-learn's classes (InvalidParameterError is the one its parameter validation raises).
_PUBLIC = {
    "ConvergenceWarning": "daskgmm.validation",
    "InvalidParameterError": "daskgmm.validation",
    "NotFittedError": "daskgmm.validation",
    "DataError": "daskgmm.io",
    "RowsOmittedWarning": "daskgmm.io",
    "open_parquet": "daskgmm.io",
    "read_parquet": "daskgmm.io",
    "KMeans": "daskgmm.kmeans",
    "GaussianMixture": "daskgmm.mixture",
    "ModelFileError": "daskgmm.persist",
    "SelectionResult": "daskgmm.selection",
    "select_model": "daskgmm.selection",
}
_RENAMED = {"load": ("daskgmm.persist", "load_model")}

__all__ = sorted([*_PUBLIC, *_RENAMED, "__version__"])


def __getattr__(name):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
    elif name in _RENAMED:
        module, attr = _RENAMED[name]
        value = getattr(importlib.import_module(module), attr)
    else:
        try:  # a submodule, e.g. ``daskgmm.plot`` after ``import daskgmm``
            value = importlib.import_module(f"daskgmm.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"daskgmm.{name}":
                raise
            raise AttributeError(f"module 'daskgmm' has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
