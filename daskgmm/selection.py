"""Model selection: every (kind, K, covariance type, restart) candidate fitted in the same passes
(:mod:`daskgmm.fitting.selection`), compared by BIC or AIC."""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from daskgmm.fitting.mixture import check_n_samples, collapsed_on_rows, restart_seeds, warn_collapsed
from daskgmm.fitting.predict import information_criteria
from daskgmm.fitting.selection import candidate_name, fit_candidates
from daskgmm.kernels import COVARIANCE_TYPES
from daskgmm.kernels import covariance as cov
from daskgmm.models.priors import PRIOR_PARAMETERS
from daskgmm.validation.checks import check_complete_rows, check_drawable_rows, prepare_rows
from daskgmm.validation.params import validate_params
from daskgmm.validation.scan import far_rows_remain, one_point, warn_degenerate, warn_far_rows

#: The candidate kinds :func:`select_model` fits.
KINDS = ("gaussian", "bayesian")


@dataclass
class SelectionResult:
    """What :func:`select_model` found.

    Attributes
    ----------
    best_ : GaussianMixture or BayesianGaussianMixture
        The candidate with the lowest criterion, fitted.
    table : pandas.DataFrame
        One row per candidate: ``n_components``, ``covariance_type``,
        ``log_likelihood`` (mean per row under the final parameters: the plug-in
        weights, means and covariances; per unit of weight with ``sample_weight``),
        ``bic``, ``aic`` (``n`` the sum of the sample weights), ``n_parameters``,
        ``n_iter``, ``converged``, then ``kind`` ("gaussian" or "bayesian"),
        ``effective_components`` (K for gaussian rows; components of weight above
        :data:`daskgmm.models.variational.EFFECTIVE_WEIGHT` for bayesian ones) and
        ``lower_bound`` (the variational fit's ELBO, scikit-learn's ``lower_bound_``;
        NaN for gaussian rows). Gaussian rows first, each kind ordered by
        covariance type and K.
    criterion : str
    models_ : dict
        Every fitted candidate: gaussian ones keyed by ``(n_components,
        covariance_type)``, bayesian ones by ``("bayesian", n_components,
        covariance_type)``. Each has the attributes of the estimator fitted alone
        (``init_seconds_``, ``init_passes_`` and ``n_passes_`` those of the shared
        passes), so ``partial_fit`` and ``warm_start`` continue it.
    n_passes : int
        Passes over the data, all candidates together (scan, prior covariance,
        initialisation, EM, and the final scoring pass).
    """

    best_: object
    table: object
    criterion: str
    models_: dict = field(default_factory=dict)
    n_passes: int = 0


def _check_kinds(kinds) -> list[str]:
    if isinstance(kinds, str):
        kinds = (kinds,)
    try:
        out = list(dict.fromkeys(kinds))
    except TypeError:
        raise ValueError(f"kinds must be an iterable of {KINDS}, got {kinds!r}") from None
    bad = [k for k in out if k not in KINDS]
    if bad:
        raise ValueError(f"kinds must be among {KINDS}, got {bad[0]!r}")
    if not out:
        raise ValueError(f"kinds must name at least one of {KINDS}, got {kinds!r}")
    return out


def _check_bayesian_params(bayesian_params, kinds, covariance_types=()) -> dict:

    if bayesian_params is None:
        return {}
    if not isinstance(bayesian_params, Mapping):
        raise ValueError(f"bayesian_params must be a dict of prior parameters, got {bayesian_params!r}")
    bad = [k for k in bayesian_params if k not in PRIOR_PARAMETERS]
    if bad:
        raise ValueError(
            f"bayesian_params takes only the prior parameters of BayesianGaussianMixture {PRIOR_PARAMETERS}; "
            f"got {bad[0]!r} (n_components, covariance_type and the fit settings are select_model's own)"
        )
    if bayesian_params and "bayesian" not in kinds:
        raise ValueError("bayesian_params given, but 'bayesian' is not in kinds")
    types = list(dict.fromkeys(covariance_types))
    if bayesian_params.get("covariance_prior") is not None and len(types) != 1:
        raise ValueError(
            "bayesian_params['covariance_prior'] has the shape of one covariance type (a matrix for full and "
            f"tied, one number per feature for diag, one number for spherical); covariance_types={tuple(types)} "
            "sweeps several: leave it out (the default is the data's covariance) or select over one type"
        )
    return dict(bayesian_params)


def _warn_unfinished(table, top, max_iter: int) -> None:
    """One ConvergenceWarning naming the candidates that stopped at ``max_iter``, as each estimator
    fitted alone warns (not for ``max_iter=0``, which asks for the initialisation only)."""
    converged = table["converged"].astype(bool)
    if max_iter <= 0 or converged.all():
        return
    left = [candidate_name((*("bayesian",) * (row["kind"] == "bayesian"), row["n_components"], row["covariance_type"]))
            for _, row in table[~converged].iterrows()]
    best = " (the best among them)" if not bool(top["converged"]) else ""
    warnings.warn(f"{len(left)} candidate(s) did not converge within max_iter={max_iter} iterations: "
                  f"{', '.join(left)}{best}; their criteria compare unfinished fits (the table's converged column). "
                  "Increase max_iter or tol.", ConvergenceWarning, stacklevel=3)


def select_model(
    X, n_components=range(1, 11), covariance_types=("full", "diag"), criterion="bic", n_init=1,
    random_state=None, *, max_iter=100, tol=1e-3, reg_covar=1e-6, init_params="kmeans", sample_weight=None,
    cache="auto", progress=None, missing="raise", kinds=("gaussian",), bayesian_params=None, checkpoint=None,
    on_collapse="raise",
) -> SelectionResult:
    """Fit a mixture for every kind, K and covariance type in lockstep; pick by BIC or AIC.

    Parameters
    ----------
    X : array-like, pandas DataFrame, dask Array or dask DataFrame, shape (n_samples, n_features)
    n_components : int or iterable of int, default=range(1, 11)
    covariance_types : str or iterable of str, default=("full", "diag")
    criterion : {"bic", "aic"}, default="bic"
        Lower is better; ties go to the smaller model.
    n_init : int, default=1
        Restarts per candidate (the best lower bound is kept, as in ``GaussianMixture``
        and ``BayesianGaussianMixture``).
    random_state : int, RandomState instance or None
        Candidates with the same K share their initial k-means centres (of both kinds:
        a candidate starts where the estimator fitted alone with this seed starts).
    max_iter, tol, reg_covar, init_params :
        As in :class:`daskgmm.GaussianMixture`; the same for every candidate.
    sample_weight : array-like of shape (n_samples,), optional
        Frequency weights, as scikit-learn's estimators mean them: a weight of 2 counts a row twice.
        The criteria's ``n`` is their sum (the number of rows without weights), so rows duplicated
        and the same rows with weight 2 give the same BIC and AIC; a sum under 1 warns (BIC's
        penalty is then negative). The gaussian candidates are fitted as ``GaussianMixture.fit``
        fits them, the same for any scale of the weights (tiny ones are scaled up by a power of
        two in their M-steps: exact). The bayesian candidates see the scale, as
        ``BayesianGaussianMixture.fit`` does: the weights' sum is the sample size the priors are
        weighed against (weights summing to 1 leave a fit near its prior), and the default
        ``covariance_prior``, the data's covariance with ``ddof=1``, needs a sum above 1.
    cache : {"auto", "memory", "none"}
    progress : callable, optional
        ``progress(event, **info)`` with "init" and "iteration" events.
    missing : {"raise", "marginalize"}, default="raise"
        As in :class:`daskgmm.GaussianMixture`; under "marginalize" the criteria use
        the log-likelihood of the observed values (bayesian candidates too: of the Gaussian
        mixture of their expected weights and normalised covariances).
    kinds : str or iterable of {"gaussian", "bayesian"}, default=("gaussian",)
        "gaussian": a :class:`daskgmm.GaussianMixture` per (K, covariance type);
        "bayesian": also a :class:`daskgmm.BayesianGaussianMixture` per (K,
        covariance type), with the priors of ``bayesian_params``. All candidates of
        both kinds share every pass (one extra pass for the data covariance, the
        default covariance prior of full and tied bayesian candidates).
    bayesian_params : dict, optional
        Prior parameters of the bayesian candidates, by their
        ``BayesianGaussianMixture`` names (``weight_concentration_prior_type``,
        ``weight_concentration_prior``, ``mean_precision_prior``, ``mean_prior``,
        ``degrees_of_freedom_prior``, ``covariance_prior``); anything else is an error.
    checkpoint : daskgmm.io.modelfiles.Checkpoint, optional
        Save every candidate's restarts after every iteration, and resume from the last
        save (then no candidate is initialised). It must have been written by the same
        selection on the same data (the caller's fingerprint says so).
    on_collapse : {"raise", "reinit"}, default="raise"
        As in :class:`daskgmm.GaussianMixture`, for the gaussian candidates. A gaussian
        candidate left with a component on fewer rows than its covariance needs (the
        likelihood's singularity, held finite by ``reg_covar`` only; such a candidate can
        win on BIC) is named in a :class:`daskgmm.fitting.mixture.CollapsedComponentWarning`.

    Warns
    -----
    ConvergenceWarning
        One, naming the candidates that stopped at ``max_iter`` (as each estimator fitted
        alone warns; none for ``max_iter=0``).

    Returns
    -------
    SelectionResult

    Notes
    -----
    A bayesian candidate is compared on the same footing as a gaussian one: its
    ``log_likelihood`` is the mean log-likelihood of the Gaussian mixture with its
    fitted (plug-in) ``weights_``, ``means_`` and ``covariances_`` (what
    ``GaussianMixture.score`` gives for those parameters; ``BayesianGaussianMixture.score``
    itself uses the posterior's expected log-densities), and ``n_parameters`` counts the
    free parameters of its effective components only (weight above
    :data:`daskgmm.models.variational.EFFECTIVE_WEIGHT`, as ``n_effective_components_``). Its BIC
    and AIC are an approximation: they treat the variational fit as a point estimate
    with that many components. The ELBO (``lower_bound`` column) is not used across
    candidates: scikit-learn's lower bound drops prior constants that depend on K and
    on the covariance type, so the lower bounds of two candidates are not comparable.
    """
    import pandas as pd

    from daskgmm.bayesian import BayesianGaussianMixture
    from daskgmm.mixture import GaussianMixture
    from daskgmm.models.variational import effective_components

    given = [n_components] if np.isscalar(n_components) else list(n_components)
    if not given or not all(isinstance(k, numbers.Integral) and not isinstance(k, bool) and k >= 1
                            for k in given):
        raise ValueError(f"n_components must hold integers >= 1, got {n_components!r}")
    ks = sorted({int(k) for k in given})
    types = [covariance_types] if isinstance(covariance_types, str) else list(dict.fromkeys(covariance_types))
    bad = [t for t in types if t not in COVARIANCE_TYPES]
    if bad or not types:
        raise ValueError(f"covariance_types must be among {COVARIANCE_TYPES}, got {covariance_types!r}")
    if criterion not in ("bic", "aic"):
        raise ValueError(f"criterion must be 'bic' or 'aic', got {criterion!r}")
    kinds = _check_kinds(kinds)
    priors_given = _check_bayesian_params(bayesian_params, kinds, types)
    shared = dict(tol=tol, reg_covar=reg_covar, max_iter=max_iter, n_init=n_init, init_params=init_params,
                  random_state=random_state, cache=cache, missing=missing)
    # each candidate is validated as the estimator it becomes
    probe = {}
    if "gaussian" in kinds:
        probe.update({(k, t): GaussianMixture(k, covariance_type=t, on_collapse=on_collapse, **shared)
                      for k in ks for t in types})
    if "bayesian" in kinds:
        probe.update({("bayesian", k, t): BayesianGaussianMixture(n_components=k, covariance_type=t, **shared,
                                                                  **priors_given)
                      for k in ks for t in types})
    for est in probe.values():
        validate_params(est)
    try:
        data, scan, info = prepare_rows(X, sample_weight, "select_model", cache=cache, min_samples=2,
                                        missing=missing)
    except ValueError as exc:
        # the sentence says to remove or impute them: the candidates can also marginalise them (as BaseMixture says)
        if missing != "raise" or not str(exc).startswith("Input X contains NaN"):
            raise
        raise type(exc)(f"{exc} select_model marginalises them with missing='marginalize'.") from None
    n, d = data.n_rows, data.n_features
    check_n_samples(n, max(ks))
    check_drawable_rows(scan, "select_model", init_params, max(ks), feature_names=info["feature_names"])
    check_complete_rows(scan, "select_model", missing, "k", max(ks), info["feature_names"], init_params=init_params)
    warn_degenerate(scan, info["feature_names"], max(ks), weighted=sample_weight is not None)
    warn_far_rows(scan, data, info["feature_names"], far_rows_remain(probe.values()))
    fits = fit_candidates(data, scan, {c: est.get_params() for c, est in probe.items()},
                          restart_seeds(random_state, n_init), priors_given=priors_given, init_params=init_params,
                          max_iter=max_iter, checkpoint=checkpoint, progress=progress)
    rows, models = [], {}
    for c, fit in fits.items():
        k, t = c[-2:]
        est, bayesian = probe[c], c[0] == "bayesian"
        for name, value in fit.attributes.items():
            setattr(est, name, value)
        est.n_features_in_ = d
        if info["feature_names"] is not None:
            est.feature_names_in_ = info["feature_names"]
        k_eff = k
        if bayesian:
            k_eff = effective_components(est.weights_)  # as the estimator fitted alone counts them
            est.n_effective_components_ = k_eff
        # a bayesian candidate counts only its effective components (at least one)
        p = cov.n_parameters(t, max(k_eff, 1), d)
        # sample weights as frequencies (a weight of 2: the row twice): n is their sum, the number of rows without
        bic, aic = information_criteria(fit.log_likelihood, fit.weight, p)
        rows.append({"n_components": k, "covariance_type": t, "log_likelihood": fit.log_likelihood, "bic": bic,
                     "aic": aic, "n_parameters": p, "n_iter": fit.n_iter, "converged": fit.converged,
                     "kind": "bayesian" if bayesian else "gaussian", "effective_components": k_eff,
                     "lower_bound": fit.lower_bound if bayesian else np.nan})
        models[c] = est
    # the gaussian candidates' (a bayesian one's likelihood is not maximised); rows: the scan's weight counts
    # complete rows only under missing="marginalize"
    found = {f"K={c[0]} {c[1]}": collapsed_on_rows(est.weights_, est.covariances_, est.covariance_type, n,
                                                   fits[c].rows, reg_covar=0.0 if one_point(scan) else reg_covar)
             for c, est in models.items() if c[0] != "bayesian"}
    warn_collapsed(found, reg_covar, stacklevel=2, criteria=True, reseeded=on_collapse == "reinit")
    total = next(iter(fits.values())).weight
    if sample_weight is not None and total < 1.0:
        warnings.warn(f"select_model counts sample weights as frequencies (n = their sum, {total:g} here): under one "
                      "row, BIC's penalty n_parameters * log(n) is negative and AIC's outweighs any likelihood. Scale "
                      "the weights to the number of rows they stand for.", UserWarning, stacklevel=2)
    table = pd.DataFrame(rows)
    table = table.assign(_kind=table["kind"].map({"gaussian": 0, "bayesian": 1}))
    table = table.sort_values(["_kind", "covariance_type", "n_components"], kind="stable")
    table = table.drop(columns="_kind").reset_index(drop=True)
    ordered = table.sort_values([criterion, "n_parameters"], kind="stable")
    top = ordered.iloc[0]
    key = (int(top["n_components"]), top["covariance_type"])
    best = models[("bayesian", *key) if top["kind"] == "bayesian" else key]
    _warn_unfinished(table, top, max_iter)
    return SelectionResult(best_=best, table=table, criterion=criterion, models_=models, n_passes=data.passes)
