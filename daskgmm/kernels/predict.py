"""Per-block predictions and samples: what prediction and sampling tasks run on the workers.

Pure NumPy. These functions are what Dask pickles into prediction tasks, so this module
must import nothing heavy (not scikit-learn: a worker that imported it would take ~64 MiB
more, a quarter of a 300 MiB worker's room for data).
"""

from __future__ import annotations

import numpy as np

import daskgmm.kernels.covariance as cov
from daskgmm.kernels import compiled
from daskgmm.kernels.features import block_rows_for, build_features
from daskgmm.kernels.missing import marginal_logits
from daskgmm.kernels.params import NaturalParams, PerComponent, kmeans_form
from daskgmm.kernels.protocol import issparse
from daskgmm.kernels.results import SuffStats, frozen, named_ids
from daskgmm.kernels.scratch import scratch
from daskgmm.kernels.studentt import StudentTMarginal


def points_stats(points: np.ndarray, shift: np.ndarray, covariance_type: str) -> SuffStats:
    """Statistics of responsibilities that put one unit on each of ``points`` (K, D).

    This is scikit-learn's "k-means++" and "random_from_data" initialisation:
    component k is responsible for exactly the k-th chosen row. Each row is
    its own shift, so the moments about it are exactly zero (taken about a
    far centre, ``s2 - m mᵀ`` would cancel terms of size ``‖x - c‖²`` and leave
    rounding noise larger than ``reg_covar``). ``shift`` is unused and kept
    for the signature.
    """
    p = np.asarray(points, dtype=np.float64)
    k = p.shape[0]
    zero = cov.zero_stats(k, p, covariance_type)
    return SuffStats(
        n=frozen(np.ones(k)), s1=zero.s1, s2=zero.s2, loglik=0.0, weight=float(k), rows=k,
        shift=frozen(p), covariance_type=covariance_type,
    )


def component_logits(x: np.ndarray, params: NaturalParams, centre: np.ndarray, block_rows=None) -> np.ndarray:
    """Per-row logits ``logit_k(x_i)`` of a block of rows, shape (n, K), in the data dtype.

    Parameters
    ----------
    x : ndarray, shape (n, D)
    params : NaturalParams or PerComponent
        Log-densities about ``centre`` (per-component form when the model is
        badly conditioned for the shared features).
    centre : ndarray, shape (D,)
    """
    x = np.asarray(x)
    dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    n, d = x.shape
    if isinstance(params, PerComponent):
        out = np.empty((n, params.means.shape[0]), dtype=dtype)
        nb = block_rows_for(params.means.size, dtype.itemsize, block_rows)
        c = np.asarray(centre, dtype=np.float64).astype(dtype)[:, None]
        for a in range(0, n, nb):
            b = min(n, a + nb)
            xt = scratch("xT", (d, b - a), dtype)
            np.subtract(x[a:b].T.astype(dtype, copy=False), c, out=xt)
            lt = scratch("pc-logits", (params.means.shape[0], b - a), dtype)
            params.logits(xt, lt)
            out[a:b] = lt.T
        return out
    level = params.level
    theta = params.theta(level, dtype)
    out = np.empty((n, theta.shape[0]), dtype=dtype)
    core = compiled.ready()
    if core is not None and n:
        core.mixture_logits(compiled.rows_for_core(x, dtype), np.ascontiguousarray(centre, dtype=np.float64),
                            theta, level, out)
        return out
    p = theta.shape[1]
    nb = block_rows_for(p + theta.shape[0], dtype.itemsize, block_rows)
    c = np.asarray(centre, dtype=np.float64).astype(dtype)[:, None]
    for a in range(0, n, nb):
        b = min(n, a + nb)
        xt = scratch("xT", (d, b - a), dtype)
        np.subtract(x[a:b].T.astype(dtype, copy=False), c, out=xt)
        out[a:b] = (theta @ build_features(xt, level, scratch("features", (p, b - a), dtype))).T
    return out



def mixture_logits(x, nat, centre, marginal: PerComponent | None = None) -> np.ndarray:
    """Per-row logits (n, K) of a block; with ``marginal``, rows with NaN get marginal ones.

    Parameters
    ----------
    x : ndarray, shape (n, D)
    nat : NaturalParams or PerComponent
        Log-densities about ``centre``.
    centre : ndarray, shape (D,)
    marginal : PerComponent, optional
        The model about ``centre``, for rows with missing values (``missing="marginalize"``).

    Raises
    ------
    ValueError
        A row with every value NaN. The rows are checked for NaN (without ``marginal``) and
        infinity before (``daskgmm.validation.checks.prediction_rows``: scikit-learn's check for
        in-memory rows, ``daskgmm.kernels.scan.check_finite_rows`` in the task of each Dask chunk).
    """
    x = np.asarray(x)
    if marginal is None or not x.size:
        return component_logits(x, nat, centre)
    nan = np.isnan(x)
    inc = nan.any(axis=1)
    if not inc.any():
        return component_logits(x, nat, centre)
    dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    out = np.empty((x.shape[0], marginal.means.shape[0]), dtype=dtype)
    out[~inc] = component_logits(x[~inc], nat, centre)
    xc = np.asarray(x[inc], np.float64) - np.asarray(centre, np.float64)
    exact = isinstance(nat, PerComponent)
    if isinstance(marginal, StudentTMarginal):  # the t marginal of the observed features
        lg, _ = marginal.marginal_logits(xc, exact=exact)
    else:
        lg, _ = marginal_logits(marginal, xc, exact=exact)
    out[inc] = lg.T
    return out


#: The logits a prediction of one value per row (labels, log-densities) holds at once: rows are taken in blocks
#: of this many bytes of logits, so that N rows and K components never make an (N, K) matrix (1M rows and
#: K = 256: 2 GB where scikit-learn's KMeans.predict takes 13 MB; user trial r18)
LOGIT_BLOCK_BYTES = 8 << 20


def _logit_rows(n_components: int, itemsize: int) -> int:
    """Rows per block of :func:`mixture_block` and :func:`nearest_labels`: their logits in ``LOGIT_BLOCK_BYTES``."""
    return int(max(1024, LOGIT_BLOCK_BYTES // max(1, n_components * itemsize)))


def _n_components(params) -> int:
    return params.means.shape[0] if isinstance(params, PerComponent) else params.n_components


def mixture_block(x, nat, centre, what, marginal=None, zero_empty=False):
    """Per-chunk predictions (a top-level function so that workers can unpickle it): ``what`` is "labels",
    "proba" (n, K) or "loglik"; labels and log-densities by blocks of rows (:data:`LOGIT_BLOCK_BYTES`), each
    row's the same bits as from the whole chunk's logits. ``zero_empty``: a row with every value missing has
    log-density 0 (:func:`_zero_empty_rows`)."""
    x = np.asarray(x)
    if what == "proba":
        return _mixture_values(mixture_logits(x, nat, centre, marginal), what)
    step = _logit_rows(_n_components(nat), 8)
    if x.shape[0] <= step:
        out = _mixture_values(mixture_logits(x, nat, centre, marginal), what)
    else:
        out = np.concatenate([_mixture_values(mixture_logits(x[a:a + step], nat, centre, marginal), what)
                              for a in range(0, x.shape[0], step)])
    if what != "labels" and marginal is not None and zero_empty:
        _zero_empty_rows(out, x)
    return out


def _zero_empty_rows(loglik, x) -> None:
    """A row with every value missing has log-density exactly 0 under a mixture whose weights sum to 1 (its
    marginal is the empty integral), where the log-sum-exp of the log-weights left rounding (about -1e-16;
    +3e-16 for a t mixture). Not the variational mixture's: its expected log-weights and offsets make another
    value (docs/python.md, "Missing values")."""
    if x.size and np.isnan(x[:, 0]).any():
        loglik[np.isnan(x).all(axis=1)] = 0.0


def _mixture_values(logits, what):
    """Labels, probabilities or log-densities of the rows of ``logits`` (n, K)."""
    if what == "labels":
        return logits.argmax(axis=1)
    mx = logits.max(axis=1, keepdims=True) if len(logits) else np.zeros((0, 1), logits.dtype)
    with np.errstate(under="ignore"):
        lse = mx + np.log(np.exp(logits - mx).sum(axis=1, keepdims=True))
        if what == "proba":
            return np.exp(logits - lse)
    return lse[:, 0]


def prediction_part(x, ids, nat, centre, id_column, proba, loglik, n_components, marginal=None, zero_empty=False):
    """Columns of one part of a predictions dataset: the id column(s) (:func:`named_ids`), then the model's
    (``marginal``: see :func:`mixture_logits`; ``zero_empty``: :func:`mixture_block`'s)."""
    logits = mixture_logits(x, nat, centre, marginal) if marginal is not None else component_logits(x, nat, centre)
    out = named_ids(ids, id_column)
    out["label"] = logits.argmax(axis=1).astype(np.int32)
    if proba or loglik:
        mx = logits.max(axis=1, keepdims=True) if len(logits) else np.zeros((0, 1), logits.dtype)
        with np.errstate(under="ignore"):
            lse = mx + np.log(np.exp(logits - mx).sum(axis=1, keepdims=True))
            if proba:
                p = np.exp(logits - lse)
                for k in range(n_components):
                    out[f"proba_{k}"] = p[:, k]
        if loglik:
            ll = lse[:, 0]
            if marginal is not None and zero_empty:
                _zero_empty_rows(ll, np.asarray(x))
            out["loglik"] = ll
    return out


def sample_part(n, seed, part, weights, means, covs, covariance_type, names, dtype, df=None):
    """``n`` rows of one part of a streamed sample (shuffled; with their component).

    With ``df`` (per component) the components are Student-t: a row of component k is
    ``μ_k + z / sqrt(g)`` with ``z ~ N(0, Σ_k)`` (``covs`` the scales) and ``g ~ χ²_nu / nu``.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(part,)))
    counts = rng.multinomial(n, weights)
    d = means.shape[1]
    xs, ys = [], []
    for k, c in enumerate(counts):
        if c == 0:
            continue
        z = rng.standard_normal((c, d))
        if not cov.of(covariance_type).dense:  # O(D) per row, and a zero variance gives zeros
            z *= np.sqrt(covs[k])
        else:
            z = z @ np.linalg.cholesky(cov.component_covariance(covs, covariance_type, k, d)).T
        if df is not None:
            z /= np.sqrt(rng.chisquare(df[k], size=c) / df[k])[:, None]
        xs.append(means[k] + z)
        ys.append(np.full(c, k, dtype=np.int32))
    X = np.vstack(xs) if xs else np.zeros((0, d))
    y = np.concatenate(ys) if ys else np.zeros(0, np.int32)
    order = rng.permutation(len(y))
    out = {name: X[order, j].astype(dtype) for j, name in enumerate(names)}
    out["component"] = y[order]
    return out


def nearest_labels(x, nat, centre):
    """Index of the nearest centre (int32) of every dense row, from k-means' form ``nat`` about ``centre``
    (:func:`daskgmm.kernels.params.kmeans_form`), by blocks of rows (:data:`LOGIT_BLOCK_BYTES`)."""
    x = np.asarray(x)
    out = np.empty(x.shape[0], dtype=np.int32)
    step = _logit_rows(_n_components(nat), 8)
    for a in range(0, x.shape[0], step):
        out[a:a + step] = component_logits(x[a:a + step], nat, centre).argmax(axis=1)
    return out


def distances_dtype(x, centers) -> np.dtype:
    """The dtype of k-means' distances of rows ``x`` (anything with a ``dtype``: a block or a Dask array) to
    ``centers``: the wider of the two, as scikit-learn's ``transform`` (float32 rows, float64 centres: float64)."""
    return np.result_type(x.dtype, np.asarray(centers).dtype)


def kmeans_labels(x, centers, nat=None, centre=None) -> np.ndarray:
    """Index of the nearest centre (int32, ``KMeans.predict``) of every row of a block, NumPy or scipy.sparse.

    Parameters
    ----------
    x : ndarray or scipy.sparse matrix, shape (n, D)
    centers : array-like, shape (K, D)
        Sparse rows are labelled from them (as float64); dense rows only through ``nat`` and ``centre``.
    nat, centre : NaturalParams and ndarray of shape (D,), optional
        k-means' form of ``centers`` (:func:`daskgmm.kernels.params.kmeans_form`), for dense rows: made here
        when not given (a caller labelling many blocks makes it once).
    """
    if issparse(x):
        from daskgmm.kernels import sparse as sparse_kernels

        return sparse_kernels.nearest_labels(x, np.asarray(centers, np.float64))
    if nat is None:
        nat, centre = kmeans_form(centers)
    return nearest_labels(x, nat, centre)


def kmeans_distances(x, centers) -> np.ndarray:
    """Euclidean distances (n, K) of a block of rows, NumPy or scipy.sparse, to ``centers`` (K, D)
    (``KMeans.transform``), in :func:`distances_dtype`."""
    centers = np.asarray(centers)
    dtype = distances_dtype(x, centers)
    if issparse(x):
        from daskgmm.kernels import sparse as sparse_kernels

        return sparse_kernels.distances(x, centers, dtype)
    return distances(x, centers, dtype)


def kmeans_prediction_part(x, ids, centers, nat, centre, id_column, distance: bool) -> dict:
    """Columns of one part of a KMeans' predictions dataset, from one block of rows (NumPy or scipy.sparse).

    ``id_column`` (a name, names, or None: no id column) holds ``ids`` (:func:`named_ids`), first; ``label``
    is the nearest centre (int32, what ``KMeans.predict`` gives: :func:`kmeans_labels` with ``nat`` and
    ``centre``, k-means' form about the centres' mean, None for sparse rows); with ``distance``,
    ``distance`` is the row's least distance to ``centers`` (``KMeans.transform``'s row minimum,
    :func:`kmeans_distances`) as float64. Here, not in ``fitting``: a worker writing predictions imports
    neither scikit-learn nor, for dense rows, SciPy.
    """
    out = named_ids(ids, id_column)
    out["label"] = kmeans_labels(x, centers, nat, centre)
    if distance:
        out["distance"] = kmeans_distances(x, centers).min(axis=1).astype(np.float64, copy=False)
    return out


def distances(x, centers, dtype=None):
    """Euclidean distances (n, K), by differences (exact for rows near a centre), in ``dtype``
    (default: the rows' dtype)."""
    x = np.asarray(x)
    dtype = np.dtype(dtype or x.dtype)
    out = np.empty((x.shape[0], centers.shape[0]), dtype=dtype)
    step = max(1, 65536 // max(1, centers.shape[0] * x.shape[1]))
    c = centers.astype(dtype, copy=False)
    for a in range(0, x.shape[0], step):
        diff = x[a : a + step, None, :].astype(dtype, copy=False) - c[None, :, :]
        np.sqrt(np.einsum("nkd,nkd->nk", diff, diff), out=out[a : a + step])
    return out
