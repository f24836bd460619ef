"""A Gaussian mixture estimator's fitted attributes: after ``fit``, after an online step, in model files.

Each function returns the attributes as a dict (scikit-learn's names); the estimator
sets them with :func:`set_attributes`. :func:`export_mixture` and
:func:`import_mixture` are the two halves of a model file
(:func:`daskgmm.io.modelfiles.save_model`, :func:`daskgmm.io.modelfiles.load_model`).
"""

from __future__ import annotations

import numpy as np

from daskgmm.fitting.mixture import FITTED_TYPE, fitted_attributes
from daskgmm.kernels import SuffStats
from daskgmm.kernels import covariance as cov


def set_attributes(estimator, attributes: dict, drop=()) -> None:
    """Set ``attributes`` on ``estimator``, and delete those named in ``drop`` that ``attributes`` lacks."""
    for name in drop:
        if name not in attributes and hasattr(estimator, name):
            delattr(estimator, name)
    for name, value in attributes.items():
        setattr(estimator, name, value)


def fit_attributes(fit, n_rows: int, n_features: int, max_iter: int, dtype) -> dict:
    """Every attribute ``GaussianMixture.fit`` sets, from a :class:`daskgmm.fitting.mixture.MixtureFit`.

    The fit counts as one batch: a later ``partial_fit`` continues from it with ``eta_1``.
    """
    out = fitted_attributes(fit.best, fit.runs, fit.lower_bound, max_iter, dtype)
    out.update(init_seconds_=fit.init_seconds, init_passes_=fit.init_passes, n_passes_=fit.n_passes,
               n_features_in_=n_features, n_batches_=1, n_rows_seen_=int(n_rows))
    return out


def online_attributes(step, t: int, seen: int, passes: int, dtype, previous=None) -> dict:
    """The attributes after one online step (:func:`daskgmm.fitting.online.online_step`).

    Parameters
    ----------
    step : OnlineStep
    t : int
        Batches learnt from before this one.
    seen : int
        Rows of those batches.
    passes : int
        Passes over this batch (the first step's initialisation included).
    dtype : numpy dtype
        Of the data.
    previous : estimator, optional
        The fitted estimator the step continues (None for the first step): its history
        goes on.
    """
    st = step.state
    first = previous is None
    previous_bound = -np.inf if first else getattr(previous, "lower_bound_", -np.inf)
    n_iter = (0 if first else int(previous.n_iter_)) + 1
    # the first step has no previous lower bound: no change (None), as a fit's first iteration
    change = step.loglik - previous_bound if np.isfinite(previous_bound) else None
    out = {
        "weights_": st.weights.astype(dtype),
        "means_": st.means.astype(dtype),
        "covariances_": st.covariances.astype(dtype),
        "precisions_cholesky_": np.asarray(st.precisions_cholesky).astype(dtype),
        "precisions_": cov.precisions_from_cholesky(st.precisions_cholesky, st.covariance_type).astype(dtype),
        "online_stats_": step.stats,
        FITTED_TYPE: st.covariance_type,
        "n_batches_": t + 1,
        "n_rows_seen_": seen + step.rows,
        # no convergence test: stepwise EM runs for as long as batches come
        "converged_": False,
        "n_iter_": n_iter,
        "lower_bound_": step.loglik,
        "lower_bounds_": ([] if first else list(previous.lower_bounds_)) + [step.loglik],
        "history_": ([] if first else list(previous.history_)) + [{
            "iteration": n_iter, "lower_bound": step.loglik, "change": change,
            "seconds": step.seconds, "events": list(st.events), "batch": t + 1, "rows": step.rows,
            "eta": step.eta,
        }],
    }
    if first:
        out.update(restarts_=[], init_passes_=passes - 1, n_passes_=passes)
    else:
        out["n_passes_"] = int(getattr(previous, "n_passes_", 0)) + passes
    return out


# ---------------------------------------------------------------------------
# Model files


def export_mixture(estimator) -> tuple[dict, dict]:
    """A fitted Gaussian mixture as (arrays, JSON-able metadata), for :func:`daskgmm.io.modelfiles.save_model`."""
    est = estimator
    arrays = {
        name: getattr(est, name)
        for name in ("weights_", "means_", "covariances_", "precisions_cholesky_")
        if hasattr(est, name)
    }
    names = getattr(est, "feature_names_in_", None)
    meta = {
        "n_components": int(est.n_components),
        "covariance_type": est.covariance_type,
        "n_features": int(est.n_features_in_),
        "columns": None if names is None else [str(c) for c in names],
        "dtype": str(np.asarray(est.means_).dtype),
        "fit": {
            "converged": bool(est.converged_),
            "n_iter": int(est.n_iter_),
            "lower_bound": float(est.lower_bound_),
            "lower_bounds": [float(v) for v in getattr(est, "lower_bounds_", [])],
            "history": getattr(est, "history_", []),
            "restarts": getattr(est, "restarts_", []),
            "init_seconds": float(getattr(est, "init_seconds_", 0.0)),
        },
    }
    if getattr(est, "_shift", None) is not None:  # only where the fit's shift was robust: other files unchanged
        arrays["shift"] = est._shift
    return arrays, meta


def export_online(estimator, arrays: dict, meta: dict) -> None:
    """Add what online EM needs to continue (batches, rows, running statistics) to a model's files."""
    est = estimator
    meta["online"] = {
        "n_batches": int(getattr(est, "n_batches_", 1)),
        "n_rows_seen": int(getattr(est, "n_rows_seen_", 0)),
    }
    stats = getattr(est, "online_stats_", None)
    if stats is not None:
        # the running statistics, so that a loaded model continues exactly (float64 always)
        arrays.update(online_n=stats.n, online_s1=stats.s1, online_s2=stats.s2, online_shift=stats.shift)
        if stats.counts is not None:  # the components' rows (weighted rows, on_collapse="reinit")
            arrays["online_counts"] = stats.counts
        meta["online"].update(loglik=float(stats.loglik), weight=float(stats.weight), rows=int(stats.rows))


def kept_shift(scan):
    """The ``_shift`` a fit keeps for its predictions: the passes' shift (:attr:`ScanResult.centre
    <daskgmm.kernels.results.ScanResult.centre>`) where the scan found rows far from the others (a fill value of
    1e20 among values near 1), else None (predictions about the centres' or means' mean, as before). Kept from the
    fit, since no rule on the K centres alone tells a far one (a cluster of 1% at the fill value) from the others."""
    return np.array(scan.centre, np.float64) if scan.far.size else None


def checked_shift(arrays, n_features: int):
    """The saved predictions' shift (``"shift"``, saved where the fit's passes took a robust one), checked: (D,),
    finite; None where there is none (every other model, and files written before it was kept)."""
    if "shift" not in arrays:
        return None
    shift = np.asarray(arrays["shift"], np.float64)
    if shift.shape != (n_features,) or not np.all(np.isfinite(shift)):
        raise ValueError(f"shift has shape {shift.shape} or non-finite values, expected ({n_features},), finite")
    return shift


def import_mixture(arrays, meta, n_components: int, covariance_type: str) -> dict:
    """The attributes saved by :func:`export_mixture`, checked (shapes, finite values, weights).

    ``history_`` is returned as read (JSON spells infinities as strings; the caller
    restores them). ``feature_names_in_`` is present only when saved.
    """
    k, d, ct = int(meta["n_components"]), int(meta["n_features"]), meta["covariance_type"]
    if k != n_components or ct != covariance_type:
        raise ValueError("n_components/covariance_type differ between parameters and fitted arrays")
    dtype = np.dtype(meta.get("dtype", "float64"))
    expect = {
        "weights_": (k,),
        "means_": (k, d),
        "precisions_cholesky_": cov.covariance_shape(ct, k, d),
        "covariances_": cov.covariance_shape(ct, k, d),
    }
    for name, shape in expect.items():
        if name == "covariances_" and name not in arrays:
            continue
        a = np.asarray(arrays[name])
        if a.shape != shape:
            raise ValueError(f"{name} has shape {a.shape}, expected {shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} holds NaN or infinite values")
    w = np.asarray(arrays["weights_"], np.float64)
    if np.any(w < 0) or not np.isclose(w.sum(), 1.0, atol=1e-5):
        raise ValueError(f"weights_ must be non-negative and sum to 1 (sum {w.sum():.6g})")
    out = {
        "weights_": arrays["weights_"].astype(dtype),
        "means_": arrays["means_"].astype(dtype),
        "precisions_cholesky_": arrays["precisions_cholesky_"].astype(dtype),
    }
    pc64 = np.asarray(arrays["precisions_cholesky_"], np.float64)
    out["precisions_"] = cov.precisions_from_cholesky(pc64, ct).astype(dtype)
    if "covariances_" in arrays:
        out["covariances_"] = arrays["covariances_"].astype(dtype)
    else:
        out["covariances_"] = cov.covariances_from_precisions(out["precisions_"], ct).astype(dtype)
    fit = meta.get("fit", {})
    out.update(
        converged_=bool(fit.get("converged", False)),
        n_iter_=int(fit.get("n_iter", 0)),
        lower_bound_=float(fit.get("lower_bound", -np.inf)),
        lower_bounds_=[float(v) for v in fit.get("lower_bounds", [])],
        history_=fit.get("history"),
        restarts_=fit.get("restarts", []),
        init_seconds_=float(fit.get("init_seconds", 0.0)),
        n_features_in_=d,
        _shift=checked_shift(arrays, d),
    )
    out[FITTED_TYPE] = ct  # model.json's covariance_type: the form its arrays were written in
    if meta.get("columns") is not None:
        out["feature_names_in_"] = np.asarray(meta["columns"], dtype=object)
    return out


def import_online(arrays, meta) -> dict:
    """The online attributes saved by :func:`export_online` (``online_stats_`` only when saved)."""
    online = meta.get("online") or {}
    # files written before partial_fit existed hold a fitted model: one batch
    out = {"n_batches_": int(online.get("n_batches", 1)), "n_rows_seen_": int(online.get("n_rows_seen", 0))}
    if "online_n" in arrays:
        out["online_stats_"] = online_statistics(arrays, online, int(meta["n_components"]), int(meta["n_features"]),
                                                 meta["covariance_type"])
    return out


def online_statistics(arrays, online: dict, n_components: int, n_features: int, covariance_type: str) -> SuffStats:
    """The running statistics saved by :func:`export_mixture` (``online_*`` arrays), checked."""
    k, d, ct = n_components, n_features, covariance_type
    n, s1, s2 = (np.asarray(arrays[f"online_{a}"], np.float64) for a in ("n", "s1", "s2"))
    shift = np.asarray(arrays["online_shift"], np.float64)
    s2_shape = cov.covariance_shape(ct, k, d)
    for name, a, shape in (("online_n", n, (k,)), ("online_s1", s1, (k, d)), ("online_s2", s2, s2_shape)):
        if a.shape != shape:
            raise ValueError(f"{name} has shape {a.shape}, expected {shape}")
    if shift.shape not in ((d,), (k, d)):
        raise ValueError(f"online_shift has shape {shift.shape}, expected ({d},) or ({k}, {d})")
    counts = None
    if "online_counts" in arrays:  # written since the components' rows are counted (absent: their weights say it)
        counts = np.asarray(arrays["online_counts"], np.float64)
        if counts.shape != (k,):
            raise ValueError(f"online_counts has shape {counts.shape}, expected {(k,)}")
    if not all(np.all(np.isfinite(a)) for a in (n, s1, s2, shift, *([] if counts is None else [counts]))):
        raise ValueError("the running statistics hold NaN or infinite values")
    return SuffStats(n=n, s1=s1, s2=s2, loglik=float(online.get("loglik", 0.0)),
                     weight=float(online.get("weight", 1.0)), rows=int(online.get("rows", 0)), shift=shift,
                     covariance_type=ct, counts=counts)
