"""Model selection: every (K, covariance type, restart) candidate fitted in the same passes.

Each candidate is one more model in the lockstep loop: the k-means|| seeding of
every K, the Lloyd passes, the EM iterations and the final scoring pass serve
all candidates at once, so a sweep over ten K and two covariance types reads
the data about as often as a single fit.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from daskgmm import fitting
from daskgmm.em import Run
from daskgmm.init import restart_seeds
from daskgmm.kernels import COVARIANCE_TYPES, MixtureRequest
from daskgmm.kernels import covariance as cov
from daskgmm.validation import prepare_rows, validate_params, warn_degenerate


@dataclass
class SelectionResult:
    """What :func:`select_model` found.

    Attributes
    ----------
    best_ : GaussianMixture
        The candidate with the lowest criterion, fitted.
    table : pandas.DataFrame
        One row per candidate: ``n_components``, ``covariance_type``,
        ``log_likelihood`` (mean per row under the final parameters),
        ``bic``, ``aic``, ``n_parameters``, ``n_iter``, ``converged``.
    criterion : str
    models_ : dict
        Every fitted candidate, keyed by ``(n_components, covariance_type)``.
    n_passes : int
        Passes over the data, all candidates together (scan, initialisation, EM,
        and the final scoring pass).
    """

    best_: object
    table: object
    criterion: str
    models_: dict = field(default_factory=dict)
    n_passes: int = 0


def select_model(
    X, n_components=range(1, 11), covariance_types=("full", "diag"), criterion="bic", n_init=1,
    random_state=None, *, max_iter=100, tol=1e-3, reg_covar=1e-6, init_params="kmeans", sample_weight=None,
    cache="auto", progress=None, missing="raise",
) -> SelectionResult:
    """Fit a Gaussian mixture for every K and covariance type in lockstep; pick by BIC or AIC.

    Parameters
    ----------
    X : array-like, pandas DataFrame, dask Array or dask DataFrame, shape (n_samples, n_features)
    n_components : int or iterable of int, default=range(1, 11)
    covariance_types : str or iterable of str, default=("full", "diag")
    criterion : {"bic", "aic"}, default="bic"
        Lower is better; ties go to the smaller model.
    n_init : int, default=1
        Restarts per candidate (the best lower bound is kept, as in ``GaussianMixture``).
    random_state : int, RandomState instance or None
        Candidates with the same K share their initial k-means centres.
    max_iter, tol, reg_covar, init_params :
        As in :class:`daskgmm.GaussianMixture`.
    sample_weight : array-like of shape (n_samples,), optional
    cache : {"auto", "memory", "none"}
    progress : callable, optional
        ``progress(event, **info)`` with "init" and "iteration" events.
    missing : {"raise", "marginalize"}, default="raise"
        As in :class:`daskgmm.GaussianMixture`; under "marginalize" the criteria use
        the log-likelihood of the observed values.

    Returns
    -------
    SelectionResult
    """
    import pandas as pd

    from daskgmm.mixture import GaussianMixture

    ks = [int(n_components)] if np.isscalar(n_components) else sorted({int(k) for k in n_components})
    types = [covariance_types] if isinstance(covariance_types, str) else list(dict.fromkeys(covariance_types))
    if not ks or min(ks) < 1:
        raise ValueError(f"n_components must hold integers >= 1, got {n_components!r}")
    bad = [t for t in types if t not in COVARIANCE_TYPES]
    if bad or not types:
        raise ValueError(f"covariance_types must be among {COVARIANCE_TYPES}, got {covariance_types!r}")
    if criterion not in ("bic", "aic"):
        raise ValueError(f"criterion must be 'bic' or 'aic', got {criterion!r}")
    # each candidate is validated as the estimator it becomes
    probe = {(k, t): GaussianMixture(k, covariance_type=t, tol=tol, reg_covar=reg_covar, max_iter=max_iter,
                                     n_init=n_init, init_params=init_params, random_state=random_state, cache=cache,
                                     missing=missing)
             for k in ks for t in types}
    for est in probe.values():
        validate_params(est)
    data, scan, info = prepare_rows(X, sample_weight, "select_model", cache=cache, min_samples=2, missing=missing)
    n, d = data.n_rows, data.n_features
    if n < max(ks):
        raise ValueError(f"Expected n_samples >= n_components but got n_components = {max(ks)}, n_samples = {n}")
    warn_degenerate(scan, info["feature_names"], max(ks))
    t_init = time.perf_counter()
    seeds = restart_seeds(random_state, n_init)
    jobs = [(fitting.MixtureParams.of(probe[(k, t)].get_params()), s) for k in ks for t in types for s in seeds]
    runs = [Run(st) for st in fitting.initial_states(data, scan, jobs)]
    if progress is not None:
        progress("init", seconds=time.perf_counter() - t_init, resumed=False, runs=runs)
    fitting.run_lockstep(data, runs, centre=scan.mean, max_iter=max_iter, progress=progress)
    # the best restart of each candidate, then one pass scores them all
    by_candidate: dict = {}
    for (p, _), r in zip(jobs, runs):
        by_candidate.setdefault((p.n_components, p.covariance_type), []).append(r)
    best_of = {c: fitting.best_run(rs, max_iter) for c, rs in by_candidate.items()}  # GaussianMixture's rule
    keys = list(by_candidate)
    final = data.run([MixtureRequest([best_of[c][0].state.spec(scan.mean) for c in keys])], scan.mean)[0]
    rows, models = [], {}
    for c, st in zip(keys, final):
        k, t = c
        r, lower_bound = best_of[c]
        est = probe[c]
        for name, value in fitting.fitted_attributes(r, by_candidate[c], lower_bound, max_iter,
                                                     data.dtype).items():
            setattr(est, name, value)
        est.n_features_in_ = d
        if info["feature_names"] is not None:
            est.feature_names_in_ = info["feature_names"]
        ll = st.loglik / st.weight
        p = cov.n_parameters(t, k, d)
        bic = -2 * ll * n + p * math.log(n)
        aic = -2 * ll * n + 2 * p
        rows.append({"n_components": k, "covariance_type": t, "log_likelihood": ll, "bic": bic, "aic": aic,
                     "n_parameters": p, "n_iter": r.n_iter, "converged": r.converged})
        models[c] = est
    table = pd.DataFrame(rows).sort_values(["covariance_type", "n_components"], kind="stable")
    table = table.reset_index(drop=True)
    ordered = table.sort_values([criterion, "n_parameters"], kind="stable")
    top = ordered.iloc[0]
    best = models[(int(top["n_components"]), top["covariance_type"])]
    return SelectionResult(best_=best, table=table, criterion=criterion, models_=models, n_passes=data.passes)
