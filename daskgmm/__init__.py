"""daskgmm: Gaussian mixture models and k-means fitted by EM on Dask, for data larger than memory."""

from daskgmm._base import ConvergenceWarning, InvalidParameterError, NotFittedError
from daskgmm.mixture import GaussianMixture

__version__ = "0.1.0"

__all__ = [
    "ConvergenceWarning",
    "GaussianMixture",
    "InvalidParameterError",
    "NotFittedError",
    "__version__",
]
