"""Logits to responsibilities, exactly (no term dropped).

``exp`` takes its slow underflow path below about -708: the argument (logit - row max) is
clamped at ``EXP_FLOOR`` first, which changes no result (``exp(-700)`` is below eps).

Pure NumPy; nothing here knows about Dask.
"""

from __future__ import annotations

import numpy as np

from daskgmm.kernels.scratch import scratch


def argmax_rows(a: np.ndarray, best: np.ndarray, top: np.ndarray) -> None:
    """Arg-max and max over the components of logits ``a`` (M, K, n), into ``best`` and ``top`` (M, n).

    Component by component with contiguous vector operations over all M models
    at once: for K up to a few dozen this is several times faster than
    ``argmax(axis=1)``, which walks across rows. Ties go to the first
    component, as with ``argmax``.
    """
    top[...] = a[:, 0]
    best.fill(0)
    mask = scratch("argmax-mask", top.shape, bool)
    for k in range(1, a.shape[1]):
        np.greater(a[:, k], top, out=mask)
        best[mask] = k
        np.maximum(top, a[:, k], out=top)


#: Floor on ``logit - row max`` before ``exp``, per dtype: about 8 above the log of the
#: smallest normal number (-708.4 for float64, -87.3 for float32). Below it NumPy's
#: SIMD ``exp`` leaves its fast path (measured here: 0.7 ns per float64 element in
#: [-700, 0], 17-113 ns below -708, where results are subnormal). A clamped term
#: contributes exp(-700) ~ 1e-304 of its row's largest instead of less: no float sum
#: it enters can tell, and scikit-learn adds 10 eps to every responsibility sum.
EXP_FLOOR = {np.dtype(np.float64): -700.0, np.dtype(np.float32): -79.0}


def soft_responsibilities(lm: np.ndarray, top: np.ndarray, tot: np.ndarray) -> np.ndarray:
    """Turn logits ``lm`` (M, K, nb) of M models into responsibilities in place.

    Exact, as scikit-learn's ``exp(logit - logsumexp)``: every term is
    computed, none is dropped. ``logit - row max`` is clamped at
    :data:`EXP_FLOOR` first so that ``exp`` never takes its slow underflow
    path. Models that share K are done together: the same work in M times
    fewer NumPy calls.

    Parameters
    ----------
    lm : ndarray, shape (M, K, nb), C-contiguous
    top, tot : ndarray, shape (M, nb)
        Scratch of the same dtype; ``tot`` holds the result.

    Returns
    -------
    log_p : ndarray, shape (M, nb)
        ``log Σ_k exp(lm_k)`` per model and row (a view of ``tot``).
    """
    np.max(lm, axis=1, out=top)
    np.subtract(lm, top[:, None, :], out=lm)
    np.maximum(lm, EXP_FLOOR[lm.dtype], out=lm)
    np.exp(lm, out=lm)
    np.sum(lm, axis=1, out=tot)
    # one reciprocal per row, then a product: cheaper than K divisions per row
    inv = scratch("soft-inverse", tot.shape, tot.dtype)
    np.reciprocal(tot, out=inv)
    np.multiply(lm, inv[:, None, :], out=lm)
    np.log(tot, out=tot)
    tot += top  # log p(x) = max + log Σ exp(· - max)
    return tot
