"""daskgmm: Gaussian mixture models and k-means fitted by EM on Dask, for data larger than memory.

The names below are imported on first use (PEP 562): the workers of a cluster import
``daskgmm.<module>`` to run a task, which runs this file, and must not pay for the
estimators' imports (scikit-learn takes ~64 MiB per process, a quarter of a 300 MiB
worker's room for data).
"""

import importlib
import importlib.abc
import importlib.util
import sys

from daskgmm.version import __version__ as __version__

# public name -> (module, attribute)
_LAZY = {
    "BayesianGaussianMixture": ("daskgmm.bayesian", "BayesianGaussianMixture"),
    "ConvergenceWarning": ("daskgmm.validation.checks", "ConvergenceWarning"),
    "DataError": ("daskgmm.io.files", "DataError"),
    "EmptyRowsWarning": ("daskgmm.validation.checks", "EmptyRowsWarning"),
    "GaussianMixture": ("daskgmm.mixture", "GaussianMixture"),
    "InvalidParameterError": ("daskgmm.validation.params", "InvalidParameterError"),
    "KMeans": ("daskgmm.kmeans", "KMeans"),
    "KMedoids": ("daskgmm.kmedoids", "KMedoids"),
    "ModelFileError": ("daskgmm.io.modelfiles", "ModelFileError"),
    "NotFittedError": ("daskgmm.validation.checks", "NotFittedError"),
    "RowsOmittedWarning": ("daskgmm.io.files", "RowsOmittedWarning"),
    "SelectionResult": ("daskgmm.selection", "SelectionResult"),
    "StudentTMixture": ("daskgmm.studentt_mixture", "StudentTMixture"),
    "export_spark_model": ("daskgmm.io.sparkmodel", "export_spark_model"),
    "open_parquet": ("daskgmm.io.parquet", "open_parquet"),
    "open_sparse_parquet": ("daskgmm.io.sparse", "open_sparse_parquet"),
    "read_parquet": ("daskgmm.io.parquet", "read_parquet"),
    "read_sparse_parquet": ("daskgmm.io.sparse", "read_sparse_parquet"),
    "read_spark_model": ("daskgmm.io.sparkmodel", "read_spark_model"),
    "select_model": ("daskgmm.selection", "select_model"),
    "write_sparse_parquet": ("daskgmm.io.sparse", "write_sparse_parquet"),
}

# Modules of objects that pickles made before the layers became folders name -> their homes now
# (a fitted mixture holds a ``VerboseReport``; every other pickled class kept its module).
_MOVED = {"daskgmm.fitting_report": "daskgmm.fitting.report"}


class _MovedModules(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        new = _MOVED.get(name)
        if new is None:
            return None
        return importlib.util.spec_from_loader(name, _Alias(new))


class _Alias(importlib.abc.Loader):
    def __init__(self, new):
        self.new = new

    def create_module(self, spec):
        return importlib.import_module(self.new)

    def exec_module(self, module):
        pass


sys.meta_path.append(_MovedModules())

__all__ = sorted([*_LAZY, "__version__", "load", "show_config"])


def show_config() -> dict:
    """Print the compiled core's build and the variant this process runs, as ``numpy.show_config()`` does.

    Returns
    -------
    dict
        ``kernel`` (``"compiled-avx2"``, ``"numpy"`` ...), ``reason`` (why NumPy, or None),
        ``variants_built``, ``known_answer`` (``"passed"``, or which variants failed the check
        against NumPy), ``cpu_features``, ``compiler``, ``flags`` and ``DASKGMM_KERNEL``.
    """
    from daskgmm.kernels import compiled

    info = compiled.config()
    print(f"daskgmm {__version__}")
    print(f"kernel: {info['kernel']}" + (f" ({info['reason']})" if info["reason"] else ""))
    print(f"DASKGMM_KERNEL: {info['DASKGMM_KERNEL']}")
    print(f"machine: {info['machine']}")
    print(f"variants built: {', '.join(info['variants_built']) or 'none'}")
    if info.get("known_answer"):
        print(f"known-answer check: {info['known_answer']}")
    if "compiler" in info:
        print(f"compiler: {info['compiler']}")
    if "flags" in info:
        print(f"flags of the variant in use: {info['flags']} ({info['vector_bytes']}-byte vectors)")
    on = [k for k, v in info["cpu_features"].items() if v]
    print(f"cpu features: {', '.join(on) or 'unknown'}")
    return info


def load(path, storage_options=None):
    """Read a model saved by ``save`` (a directory of JSON and ``.npz``; never pickle).

    Returns
    -------
    GaussianMixture, BayesianGaussianMixture, StudentTMixture, KMeans or KMedoids
    """
    from daskgmm.io.modelfiles import load_model

    register_estimators()
    return load_model(path, storage_options)


def register_estimators() -> None:
    """Import every estimator module: each registers its class with :mod:`daskgmm.io.modelfiles`,
    which builds a saved model's estimator by name (``load``; the command's own loads)."""
    for module in ("mixture", "kmeans", "bayesian", "kmedoids", "studentt_mixture"):
        importlib.import_module(f"daskgmm.{module}")


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
