"""daskgmm: Gaussian mixture models and k-means fitted by EM on Dask, for data larger than memory."""

# scikit-learn's classes (InvalidParameterError is the one its parameter validation raises)
from daskgmm.io import DataError, RowsOmittedWarning, open_parquet, read_parquet
from daskgmm.kmeans import KMeans
from daskgmm.mixture import GaussianMixture
from daskgmm.persist import ModelFileError, register
from daskgmm.persist import load_model as load
from daskgmm.selection import SelectionResult, select_model
from daskgmm.validation import ConvergenceWarning, InvalidParameterError, NotFittedError

register(GaussianMixture)
register(KMeans)

__version__ = "0.1.0"

__all__ = [
    "ConvergenceWarning",
    "DataError",
    "GaussianMixture",
    "InvalidParameterError",
    "KMeans",
    "ModelFileError",
    "NotFittedError",
    "RowsOmittedWarning",
    "SelectionResult",
    "__version__",
    "load",
    "open_parquet",
    "read_parquet",
    "select_model",
]
