"""The fit procedure of the variational mixture (``BayesianGaussianMixture``): priors,
initial posteriors, the loop (:func:`daskgmm.fitting.mixture.fit_runs`) and fitted attributes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.utils import check_array

from daskgmm.em.init import mixture_init_stats
from daskgmm.em.loop import Run
from daskgmm.fitting.mixture import FitParams, MixtureFit, check_shape, fit_runs, fitted_attributes
from daskgmm.kernels import MixtureRequest
from daskgmm.kernels import covariance as cov
from daskgmm.models.variational import VariationalState

# ---------------------------------------------------------------------------
# The variational mixture (BayesianGaussianMixture)


@dataclass(frozen=True)
class VariationalParams(FitParams):
    """The hyper-parameters of one variational mixture fit besides the priors."""

    weight_concentration_prior_type: str = "dirichlet_process"
    missing: str = "raise"


def _frequencies(total: float, rows: int) -> float:
    """The sum of the sample weights, which the covariance with ``ddof=1`` divides by less 1 (weights as
    frequencies): refused unless above 1 (the covariance was negative or infinite, and the fit failed on a
    covariance "not positive definite", naming components) by more than the rounding of a sum of ``rows``
    weights.

    Weights normalised to sum to 1 (``w / w.sum()``) sum in floats to 1 within ``rows`` ulps, either side
    (the normalising sum and ours each round by up to ``(rows - 1) / 2`` ulps of 1, the quotients by half
    an ulp each), so twice that is taken as 1: a float sum of 1 + 2.2e-16 had made the prior 4.5e15 times
    the data's covariance, or not, by the order the chunks were summed in.
    """
    if not total > 1.0 + 2.0 * rows * np.finfo(np.float64).eps:
        shown = f"{float(total)!r}, 1 within the rounding of a sum of {rows} weights" if total > 1.0 else f"{total:g}"
        raise ValueError(
            "The default covariance_prior is the data's covariance with sample weights as frequencies "
            f"(divided by their sum minus 1), which needs sample weights summing to more than 1; they sum to "
            f"{shown}. The scale of the weights is the sample size the priors are weighed against: "
            "give covariance_prior, or weights on the scale of row counts.")
    return total


def column_variances(scan) -> np.ndarray:
    """Each column's (weighted) variance with ``ddof=1`` (D,), over its observed values under
    ``missing="marginalize"`` (the scan's ``column_weight``; every row's on complete data), weights as frequencies
    (:func:`_frequencies`: each column's must sum to more than 1)."""
    w = np.asarray(scan.column_weight, np.float64)
    _frequencies(float(w.min()), scan.rows)
    return scan.m2 / (w - 1.0)


def data_covariance(data, scan) -> np.ndarray:
    """The (weighted) covariance of the rows with ``ddof=1``, shape (D, D): one pass.

    As ``np.cov(X.T)`` for unweighted rows; sample weights count as frequencies
    (divided by ``Σ w - 1``). A one-component model with zero logits has every
    responsibility 1, so the mixture pass returns the scatter about the scan's mean. Under
    ``missing="marginalize"`` that pass sees the complete rows only: with at most D of them, the diagonal of
    :func:`column_variances` instead (no pass).
    """
    from daskgmm.kernels import ModelSpec, NaturalParams

    d = data.n_features
    if np.any(scan.nan) and 0 <= scan.complete <= d:
        # missing="marginalize" with at most D complete rows, whose covariance is singular (none: there is none):
        # the diagonal of each column's variance over its observed values, as the diagonal prior's. (The refusal
        # it replaces made rows with scattered gaps and no complete row unfit for the variational mixture.)
        return np.diag(column_variances(scan))
    nat = NaturalParams(np.zeros((1, d, d)), np.zeros((1, d)), np.zeros(1))
    st = data.run([MixtureRequest([ModelSpec(nat, "full")])], scan.centre)[0][0]
    n = _frequencies(st.n[0], scan.rows)
    s1 = st.s1[0]
    scatter = st.s2[0] - np.outer(s1, s1) / n  # about the exact mean (s1 is ~0, not 0)
    out = scatter / (n - 1.0)
    return 0.5 * (out + out.T)


def variational_priors(data, scan, params: VariationalParams, *, weight_concentration_prior=None,
                       mean_precision_prior=None, mean_prior=None, degrees_of_freedom_prior=None,
                       covariance_prior=None, data_cov=None) -> dict:
    """scikit-learn's ``*_prior_`` values: the given ones checked, the others from the data.

    Defaults: ``1 / n_components``; 1; the (weighted) mean; ``n_features``; the data
    covariance (full, tied; one pass), variances (diag) or their mean (spherical),
    all with ``ddof=1``.

    ``data_cov`` (shape (D, D)), when given, is :func:`data_covariance` of the same
    data already computed: many candidates (``select_model``) share its pass.

    Returns
    -------
    dict
        ``weight_concentration_prior``, ``mean_precision_prior``, ``mean_prior``
        (D,), ``degrees_of_freedom_prior``, ``covariance_prior`` (float64 arrays).
    """
    d, k, ct = data.n_features, params.n_components, params.covariance_type
    out = {
        "weight_concentration_prior": 1.0 / k if weight_concentration_prior is None
        else float(weight_concentration_prior),
        "mean_precision_prior": 1.0 if mean_precision_prior is None else float(mean_precision_prior),
    }
    if mean_prior is None:
        out["mean_prior"] = np.asarray(scan.mean, np.float64)
    else:
        m = check_array(mean_prior, dtype=[np.float64, np.float32], ensure_2d=False)
        check_shape(m, (d,), "means")
        out["mean_prior"] = m.astype(np.float64)
    if degrees_of_freedom_prior is None:
        out["degrees_of_freedom_prior"] = float(d)
    elif degrees_of_freedom_prior > d - 1.0:
        out["degrees_of_freedom_prior"] = float(degrees_of_freedom_prior)
    else:
        raise ValueError(
            f"The parameter 'degrees_of_freedom_prior' should be greater than {d - 1}, "
            f"but got {degrees_of_freedom_prior:.3f}."
        )
    t = cov.of(ct)
    if covariance_prior is None:
        if t.dense:
            out["covariance_prior"] = data_covariance(data, scan) if data_cov is None else data_cov
        else:
            out["covariance_prior"] = t.from_variances(column_variances(scan))
    elif t.component_shape(d) == ():
        # one positive number, as the float the parameter's constraint takes: an array of one value too (a list
        # was a TypeError from float(), a negative, zero or NaN array passed on to fail in the fit or not at all)
        c = check_array(np.reshape(covariance_prior, -1), dtype=[np.float64, np.float32], ensure_2d=False,
                        input_name="covariance_prior")
        if c.shape != (1,):
            raise ValueError(f"The parameter '{ct} covariance_prior' should be one number, but got shape "
                             f"{np.shape(covariance_prior)}")
        t.check_precisions(c, f"{ct} precision")
        out["covariance_prior"] = np.asarray(float(c[0]))
    else:
        c = check_array(covariance_prior, dtype=[np.float64, np.float32], ensure_2d=False)
        check_shape(c, t.component_shape(d), f"{ct} covariance_prior")
        t.check_precisions(c, f"{ct} precision")
        out["covariance_prior"] = c.astype(np.float64)
    return out


def _variational_options(params: VariationalParams, priors: dict, dtype) -> dict:
    return dict(covariance_type=params.covariance_type, prior_type=params.weight_concentration_prior_type,
                reg_covar=float(params.reg_covar), tol=float(params.tol), eps_dtype=np.dtype(dtype),
                missing=params.missing, **priors)


def variational_initial_states(data, scan, jobs: list[tuple[VariationalParams, int]], priors: dict) -> list:
    """Starting posteriors of many jobs (restarts): the posterior given each initial responsibilities.

    Parameters
    ----------
    data : ChunkedData
    scan : ScanResult
    jobs : list of (VariationalParams, seed)
        All must share ``init_params`` (and, here, the priors).
    priors : dict
        From :func:`variational_priors`.

    Returns
    -------
    list of VariationalState
    """
    methods = {p.init_params for p, _ in jobs}
    if len(methods) != 1:
        raise ValueError(f"jobs must share one init_params, got {sorted(methods)}")
    stats = mixture_init_stats(
        data, scan.centre, method=methods.pop(), jobs=[(p.n_components, p.covariance_type, s) for p, s in jobs],
    )
    return variational_states_from_stats(stats, [p for p, _ in jobs], [priors] * len(jobs), data.dtype)


def variational_states_from_stats(stats: list, params: list[VariationalParams], priors: list[dict],
                                  dtype) -> list:
    """Starting posteriors from the statistics of initial responsibilities, one per job.

    Parameters
    ----------
    stats : list of SuffStats
        From :func:`daskgmm.em.init.mixture_init_stats` (shared with other model kinds by
        ``select_model``).
    params : list of VariationalParams
    priors : list of dict
        From :func:`variational_priors`, one per job (they may differ: the default
        ``weight_concentration_prior`` is ``1 / n_components``).
    dtype : numpy dtype
        The data's.

    Returns
    -------
    list of VariationalState
    """
    return [VariationalState.from_stats(st, **_variational_options(p, pr, dtype))
            for st, p, pr in zip(stats, params, priors, strict=True)]


def fit_variational(data, scan, params: VariationalParams, priors: dict, *, random_state=None, warm=None,
                    checkpoint=None, progress=None, on_iteration=None) -> MixtureFit:
    """Fit one variational mixture (:func:`fit_runs` with :func:`variational_initial_states`)."""
    return fit_runs(
        data, lambda seeds: variational_initial_states(data, scan, [(params, s) for s in seeds], priors),
        centre=scan.centre, n_init=params.n_init, max_iter=params.max_iter, random_state=random_state,
        warm=warm, checkpoint=checkpoint, progress=progress, on_iteration=on_iteration,
    )


def variational_warm_state(attributes: dict, params: VariationalParams, priors: dict, dtype) -> VariationalState:
    """A fitted variational model's attributes as the state a warm-started fit continues from.

    ``attributes`` holds ``weight_concentration_`` (a pair for the Dirichlet process),
    ``mean_precision_``, ``means_``, ``degrees_of_freedom_``, ``covariances_``,
    ``precisions_cholesky_``.
    """
    wc = attributes["weight_concentration_"]
    wc = np.vstack(wc) if params.weight_concentration_prior_type == "dirichlet_process" else np.asarray(wc)
    return VariationalState(
        wc, attributes["mean_precision_"], attributes["means_"], np.asarray(attributes["degrees_of_freedom_"]),
        attributes["covariances_"], attributes["precisions_cholesky_"],
        **_variational_options(params, priors, dtype),
    )


def variational_attributes(best: Run, runs: list[Run], lower_bound: float, max_iter: int, dtype) -> dict:
    """scikit-learn's fitted attributes of a variational run (and daskgmm's history), in ``dtype``."""
    st = best.state
    wc = st.weight_concentration.astype(dtype)
    dof = st.degrees_of_freedom
    out = fitted_attributes(best, runs, lower_bound, max_iter, dtype)
    out.update({
        "weight_concentration_": (wc[0], wc[1]) if st.prior_type == "dirichlet_process" else wc,
        "mean_precision_": st.mean_precision.astype(dtype),
        "degrees_of_freedom_": float(dof) if dof.ndim == 0 else dof.astype(dtype),
    })
    return out


def prior_attributes(priors: dict, dtype) -> dict:
    """The fitted ``*_prior_`` attributes of :class:`BayesianGaussianMixture`, in ``dtype``.

    Parameters
    ----------
    priors : dict
        From :func:`variational_priors`.
    dtype : numpy dtype
        The data's.
    """
    c = priors["covariance_prior"]
    return {
        "weight_concentration_prior_": priors["weight_concentration_prior"],
        "mean_precision_prior_": priors["mean_precision_prior"],
        "mean_prior_": priors["mean_prior"].astype(dtype),
        "degrees_of_freedom_prior_": priors["degrees_of_freedom_prior"],
        "covariance_prior_": float(c) if c.ndim == 0 else c.astype(dtype),
    }
