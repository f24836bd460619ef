"""The procedure :func:`daskgmm.select_model` is thin over: every (kind, K, covariance type,
restart) candidate in the same passes.

Each candidate is one more model in the lockstep loop: the k-means|| seeding of every K, the
Lloyd passes, the EM (and variational) iterations and the final scoring pass serve all
candidates at once, so a sweep over ten K and two covariance types reads the data about as
often as a single fit. Gaussian and variational candidates share the same passes: both model
states ask a pass for the same mixture statistics.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import numpy as np

from daskgmm.em.init import mixture_init_stats
from daskgmm.em.loop import Run
from daskgmm.fitting import mixture as fitting
from daskgmm.fitting import variational as fitting_variational
from daskgmm.fitting.attributes import kept_shift
from daskgmm.kernels import MixtureRequest
from daskgmm.kernels import covariance as cov
from daskgmm.models.priors import PRIORS
from daskgmm.models.states import MixtureState


@dataclass
class CandidateFit:
    """One candidate's best restart, scored.

    Attributes
    ----------
    attributes : dict
        Its estimator's fitted attributes (priors included for a bayesian candidate; ``init_seconds_``,
        ``init_passes_`` and ``n_passes_`` those of the passes all candidates shared).
    log_likelihood : float
        Mean log-likelihood per unit of sample weight (per row without weights) of the Gaussian mixture
        with its plug-in parameters.
    n_iter : int
    converged : bool
    lower_bound : float
    weight : float
        The sum of the sample weights of the rows scored (the number of rows without weights).
    rows : ndarray of shape (K,) or None
        A gaussian candidate's rows per component on weighted data (:func:`fitting.component_rows`), for
        its collapse check; None without sample weights (its weights say them) and for a bayesian one.
    """

    attributes: dict
    log_likelihood: float
    n_iter: int
    converged: bool
    lower_bound: float
    weight: float
    rows: np.ndarray | None = None


def initial_states(data, scan, candidates: dict, priors: dict, seeds, init_params) -> list:
    """The starting state of every (candidate, seed), in the order of ``candidates`` then ``seeds``;
    the initial statistics of each (K, covariance type, seed) are computed once for both kinds.

    The passes take the weights as given (a variational posterior sees their scale: it is the sample
    size the prior is weighed against); a gaussian candidate's M-steps scale its statistics up as
    ``GaussianMixture.fit`` scales tiny weights (``ChunkedData.tiny_weight_factor``: a power of two, exact).
    """
    weight_scale = data.tiny_weight_factor()
    ks_types = list(dict.fromkeys(c[-2:] for c in candidates))
    init_keys = [(k, t, s) for k, t in ks_types for s in seeds]
    reinit = any(params.get("on_collapse") == "reinit" for params in candidates.values())
    stats = dict(zip(init_keys, mixture_init_stats(data, scan.centre, method=init_params, jobs=init_keys,
                                                   count_rows=reinit)))
    states = []
    for c, params in candidates.items():
        k, t = c[-2:]
        with _naming(c):
            if c[0] == "bayesian":
                vp = fitting_variational.VariationalParams.of(params)
                states += fitting_variational.variational_states_from_stats(
                    [stats[(k, t, s)] for s in seeds], [vp] * len(seeds), [priors[c]] * len(seeds), data.dtype)
            else:
                mp = fitting.MixtureParams.of(params)
                states += fitting.states_from_stats([stats[(k, t, s)] for s in seeds], scan, [mp] * len(seeds),
                                                    data.dtype, weight_scale=weight_scale)
    return states


def candidate_name(c) -> str:
    """A candidate's name in messages: "K=3 full", "bayesian K=3 full"."""
    return f"{'bayesian ' * (c[0] == 'bayesian')}K={c[-2]} {c[-1]}"


@contextlib.contextmanager
def _naming(c):
    """A candidate's failure (a collapsed component's ValueError, scikit-learn's sentence) says which one: a
    sweep over many K and covariance types failed without it."""
    try:
        yield
    except ValueError as exc:
        raise type(exc)(f"{exc} (select_model's candidate {candidate_name(c)})") from exc


def candidate_priors(data, scan, candidates: dict, priors_given: dict) -> dict:
    """The priors of every bayesian candidate (the default covariance prior of full and tied ones:
    one pass for all of them)."""
    bayesian = {c: p for c, p in candidates.items() if c[0] == "bayesian"}
    if not bayesian:
        return {}
    data_cov = None
    if priors_given.get("covariance_prior") is None and any(cov.of(c[-1]).dense for c in bayesian):
        data_cov = fitting_variational.data_covariance(data, scan)
    prior_args = {name: priors_given.get(name) for name in PRIORS}
    return {c: fitting_variational.variational_priors(data, scan, fitting_variational.VariationalParams.of(p),
                                                      data_cov=data_cov, **prior_args)
            for c, p in bayesian.items()}


def fit_candidates(data, scan, candidates: dict, seeds: list, *, priors_given: dict, init_params: str,
                   max_iter: int, checkpoint=None, progress=None) -> dict:
    """Fit every candidate from every seed in lockstep, keep each one's best restart and score it.

    Parameters
    ----------
    data : ChunkedData
    scan : ScanResult
    candidates : dict
        ``(n_components, covariance_type)`` (gaussian) or ``("bayesian", n_components,
        covariance_type)`` -> the candidate estimator's parameters (``get_params()``).
    seeds : list of int
        One per restart, the same for every candidate.
    priors_given : dict
        The bayesian candidates' prior parameters.
    checkpoint : daskgmm.io.modelfiles.Checkpoint, optional
        Save every run after every iteration; resume from its last save.
    progress : callable, optional
        ``progress(event, **info)``: "init" (``seconds``, ``resumed``, ``runs``, ``persisted``: whether
        the rows are kept in memory) and "iteration" events.

    Returns
    -------
    dict
        Candidate key -> :class:`CandidateFit`.
    """
    t_init = time.perf_counter()
    priors = candidate_priors(data, scan, candidates, priors_given)
    jobs = [(c, s) for c in candidates for s in seeds]  # (candidate key, seed) per run
    # a checkpoint from before the gaussian candidates' weight_scale: the scale their weights give, as at a start
    # (the dataclass's 1.0 is GaussianMixture.fit's, whose passes scale the weights themselves)
    absent = {"MixtureState": {"weight_scale": data.tiny_weight_factor()}}
    runs = checkpoint.load(n_runs=len(jobs), absent=absent) if checkpoint is not None else None
    resumed = runs is not None
    if not resumed:
        runs = [Run(st) for st in initial_states(data, scan, candidates, priors, seeds, init_params)]
        if checkpoint is not None:
            checkpoint.save(runs, extra={"rng": {"generator": fitting.RNG_NOTE, "restart_seeds": seeds}})
    init_seconds, init_passes = time.perf_counter() - t_init, data.passes
    if progress is not None:
        progress("init", seconds=init_seconds, resumed=resumed, runs=runs, persisted=data.persisted)
    try:
        fitting.run_lockstep(data, runs, centre=scan.centre, max_iter=max_iter, checkpoint=checkpoint,
                             progress=progress)
    except ValueError as exc:
        if getattr(exc, "run", None) is None:
            raise
        with _naming(jobs[exc.run][0]):
            raise
    # the best restart of each candidate (each kind's rule: the largest lower bound), then one
    # pass scores them all by the log-likelihood of their plug-in parameters
    by_candidate: dict = {}
    for (c, _), r in zip(jobs, runs):
        by_candidate.setdefault(c, []).append(r)
    best_of = {c: fitting.best_run(rs, max_iter) for c, rs in by_candidate.items()}  # GaussianMixture's rule
    specs = []
    for c in candidates:
        st = best_of[c][0].state
        if c[0] == "bayesian":  # the Gaussian mixture of its expected weights and normalised covariances
            st = MixtureState(st.weights, st.means, st.covariances, st.precisions_cholesky, st.covariance_type,
                              reg_covar=st.reg_covar, eps_dtype=st.eps_dtype, missing=st.missing)
        specs.append(st.spec(scan.centre))
    final = data.run([MixtureRequest(specs)], scan.centre)[0]
    gaussian = [c for c in candidates if c[0] != "bayesian"]
    counted = fitting.component_rows(data, [best_of[c][0].state for c in gaussian], scan.centre)
    rows_of = dict(zip(gaussian, counted)) if counted is not None else {}
    out = {}
    for c, st in zip(candidates, final):
        r, lower_bound = best_of[c]
        if c[0] == "bayesian":
            attributes = fitting_variational.variational_attributes(r, by_candidate[c], lower_bound, max_iter,
                                                                    data.dtype)
            attributes.update(fitting_variational.prior_attributes(priors[c], data.dtype))
        else:
            attributes = fitting.fitted_attributes(r, by_candidate[c], lower_bound, max_iter, data.dtype)
            # as GaussianMixture.fit: the fit is its first batch, so partial_fit continues the candidate
            attributes.update(n_batches_=1, n_rows_seen_=int(data.n_rows))
        # the passes every candidate shared (the final scoring pass included)
        attributes.update(init_seconds_=init_seconds, init_passes_=init_passes, n_passes_=data.passes,
                          _shift=kept_shift(scan))  # the predictions' shift where the passes' was robust
        out[c] = CandidateFit(attributes, st.loglik / st.weight, r.n_iter, r.converged, lower_bound, st.weight,
                              rows_of.get(c))
    return out
