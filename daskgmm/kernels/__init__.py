"""Pure NumPy kernels of every pass: nothing here knows about Dask (see docs/architecture.md).

- :mod:`~daskgmm.kernels.scratch` — per-thread scratch buffers (4K-aliasing-free offsets);
- :mod:`~daskgmm.kernels.features` — feature levels and ``T(x) = [quadratic terms, x, 1]``;
- :mod:`~daskgmm.kernels.responsibilities` — logits to exact responsibilities;
- :mod:`~daskgmm.kernels.params` — natural and per-component parameter forms;
- :mod:`~daskgmm.kernels.covariance` — covariance algebra: every branch on the covariance type;
- :mod:`~daskgmm.kernels.results` — the results of a pass (monoids);
- :mod:`~daskgmm.kernels.protocol` — the pass protocol and ``chunk_pass``;
- :mod:`~daskgmm.kernels.requests` — mixture statistics of many models (the E- and M-step request);
- :mod:`~daskgmm.kernels.scan` — the scan's column summary and keyed samples;
- :mod:`~daskgmm.kernels.predict` — per-block predictions and samples;
- :mod:`~daskgmm.kernels.random` — random numbers keyed by global row;
- :mod:`~daskgmm.kernels.compiled` — the compiled core's variant for this CPU, and its block call;
- :mod:`~daskgmm.kernels.selfcheck` — the compiled core's known-answer check against NumPy.
"""

from daskgmm.kernels.covariance import COVARIANCE_TYPES
from daskgmm.kernels.features import Level, build_features, n_feature_rows
from daskgmm.kernels.params import NaturalParams, PerComponent, kmeans_natural_params
from daskgmm.kernels.predict import component_logits, points_stats
from daskgmm.kernels.protocol import Block, Request, Unweighted, chunk_pass, merge_partials
from daskgmm.kernels.requests import MixtureRequest, ModelSpec
from daskgmm.kernels.responsibilities import soft_responsibilities
from daskgmm.kernels.results import SampleResult, ScanResult, SuffStats, WorstRows
from daskgmm.kernels.scan import SampleRequest, ScanRequest
from daskgmm.kernels.selfcheck import known_answer  # registers the compiled core's known-answer check

__all__ = [
    "COVARIANCE_TYPES", "Block", "Level", "MixtureRequest", "ModelSpec", "NaturalParams", "PerComponent", "Request",
    "SampleRequest", "SampleResult", "ScanRequest", "ScanResult", "SuffStats", "Unweighted", "WorstRows",
    "build_features", "chunk_pass", "component_logits", "kmeans_natural_params", "known_answer", "merge_partials",
    "n_feature_rows", "points_stats", "soft_responsibilities",
]
