"""The fit procedure of a Gaussian mixture, shared by the estimators, ``select_model`` and the command.

Everything here works on a prepared :class:`daskgmm.engine.ChunkedData` and its first
scan; the estimators are thin over it (validation, attributes, verbose lines), as
dask-ml's estimators are over their module functions:

- :func:`check_initial_parameters` — ``weights_init``/``means_init``/``precisions_init``
  with scikit-learn's messages;
- :func:`initial_states` — the starting models of many jobs (restarts, candidates)
  from shared initialisation passes;
- :func:`run_lockstep` — the loop, with checkpoint and progress hooks;
- :func:`best_run` — the one rule that picks a restart (scikit-learn's);
- :func:`fit_mixture` — all of the above for one estimator, resumable;
- :func:`fitted_attributes` — scikit-learn's fitted attributes of a run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
from sklearn.utils import check_array

from daskgmm.em import Run, lockstep
from daskgmm.init import mixture_init_stats, restart_seeds
from daskgmm.kernels import MixtureRequest, ScanRequest, SuffStats
from daskgmm.kernels import covariance as cov
from daskgmm.models import MixtureState
from daskgmm.validation import check_scan
from daskgmm.variational import VariationalState

#: What a checkpoint records of the random state: every draw is keyed by (seed, row).
RNG_NOTE = "SplitMix64 keyed by (seed, row)"


@dataclass(frozen=True)
class MixtureParams:
    """The hyper-parameters one Gaussian mixture fit needs (the estimator's, validated)."""

    n_components: int
    covariance_type: str = "full"
    tol: float = 1e-3
    reg_covar: float = 1e-6
    max_iter: int = 100
    n_init: int = 1
    init_params: str = "kmeans"
    assignment: str = "soft"
    update_params: str = "wmc"
    on_collapse: str = "raise"
    missing: str = "raise"

    @classmethod
    def of(cls, params: dict) -> MixtureParams:
        """From an estimator's ``get_params()`` (the other keys are ignored)."""
        from dataclasses import fields

        return cls(**{f.name: params[f.name] for f in fields(cls) if f.name in params})

    def state_options(self, dtype) -> dict:
        """Keyword arguments of :class:`MixtureState` for data of ``dtype``."""
        return dict(reg_covar=float(self.reg_covar), tol=float(self.tol), eps_dtype=np.dtype(dtype),
                    assignment=self.assignment, update_params=self.update_params, on_collapse=self.on_collapse,
                    missing=self.missing)


# ---------------------------------------------------------------------------
# Initial parameters given by the user


def _check_shape(param, shape, name):
    if param.shape != shape:
        raise ValueError(f"The parameter '{name}' should have the shape of {shape}, but got {param.shape}")


def _as_param_array(value, name) -> np.ndarray:
    """scikit-learn's check of an initial parameter array (numeric, finite; any shape, checked next)."""
    return check_array(value, dtype=[np.float64, np.float32], ensure_2d=False, allow_nd=True, input_name=name)


def check_weights(weights, n_components) -> np.ndarray:
    """``weights_init`` checked as scikit-learn checks it; float64, shape (K,)."""
    w = _as_param_array(weights, "weights")
    _check_shape(w, (n_components,), "weights")
    if np.any(w < 0.0) or np.any(w > 1.0):
        raise ValueError(
            "The parameter 'weights' should be in the range [0, 1], but got max value "
            f"{w.min():.5f}, min value {w.max():.5f}"
        )
    atol = 1e-6 if w.dtype == np.float32 else 1e-8  # as scikit-learn: float32 sums round
    if not np.allclose(abs(1.0 - w.sum()), 0.0, atol=atol):
        raise ValueError(f"The parameter 'weights' should be normalized, but got sum(weights) = {w.sum():.5f}")
    return w.astype(np.float64, copy=False)


def check_means(means, n_components, n_features) -> np.ndarray:
    """``means_init`` checked as scikit-learn checks it; float64, shape (K, D)."""
    m = _as_param_array(means, "means")
    _check_shape(m, (n_components, n_features), "means")
    return m.astype(np.float64, copy=False)


def check_precisions(precisions, covariance_type, n_components, n_features) -> np.ndarray:
    """``precisions_init`` checked as scikit-learn checks it; float64, the covariance type's shape."""
    p = _as_param_array(precisions, f"{covariance_type} precision")
    _check_shape(p, cov.covariance_shape(covariance_type, n_components, n_features), f"{covariance_type} precision")
    if covariance_type in ("full", "tied"):
        for mat in p.reshape(-1, n_features, n_features):
            if not (np.allclose(mat, mat.T) and np.all(np.linalg.eigvalsh(mat) > 0.0)):
                raise ValueError(f"'{covariance_type} precision' should be symmetric, positive-definite")
    elif np.any(p <= 0.0):
        raise ValueError(f"'{covariance_type} precision' should be positive")
    return p.astype(np.float64, copy=False)


def check_initial_parameters(weights, means, precisions, params: MixtureParams, n_features) -> dict:
    """The given initial parameters (None where not given), checked."""
    k, ct = params.n_components, params.covariance_type
    return {
        "weights": None if weights is None else check_weights(weights, k),
        "means": None if means is None else check_means(means, k, n_features),
        "precisions": None if precisions is None else check_precisions(precisions, ct, k, n_features),
    }


# ---------------------------------------------------------------------------
# Initial states, the loop, the best restart


def _state_from_precisions(weights, means, precisions, covariance_type, options) -> MixtureState:
    return MixtureState(
        weights, means, cov.covariances_from_precisions(precisions, covariance_type),
        cov.precisions_cholesky_from_precisions(precisions, covariance_type), covariance_type, **options,
    )


def initial_states(data, scan, jobs: list[tuple[MixtureParams, int]], given: dict | None = None) -> list[MixtureState]:
    """Starting models of many jobs, from one set of initialisation passes.

    Parameters
    ----------
    data : ChunkedData
    scan : ScanResult
        The first scan of ``data`` (its mean is the shift of every pass).
    jobs : list of (MixtureParams, seed)
        One model each; all must share ``init_params``. Jobs with the same
        (n_components, seed) share their k-means centres.
    given : dict, optional
        From :func:`check_initial_parameters` (same for every job): what is
        given replaces what the initialisation estimates.

    Returns
    -------
    list of MixtureState
    """
    given = given or {"weights": None, "means": None, "precisions": None}
    methods = {p.init_params for p, _ in jobs}
    if len(methods) != 1:
        raise ValueError(f"jobs must share one init_params, got {sorted(methods)}")
    if all(v is not None for v in given.values()):
        return [
            _state_from_precisions(given["weights"], given["means"], given["precisions"], p.covariance_type,
                                   p.state_options(data.dtype))
            for p, _ in jobs
        ]
    stats = mixture_init_stats(
        data, scan.mean, method=methods.pop(), jobs=[(p.n_components, p.covariance_type, s) for p, s in jobs],
    )
    states = []
    for (p, _), st in zip(jobs, stats):
        options = p.state_options(data.dtype)
        nk, means, covs = cov.estimate_parameters(st, p.reg_covar, options["eps_dtype"])
        weights = nk / scan.weight if given["weights"] is None else given["weights"]
        means = means if given["means"] is None else given["means"]
        if given["precisions"] is None:
            states.append(MixtureState.from_covariances(weights, means, covs, p.covariance_type, **options))
        else:
            states.append(_state_from_precisions(weights, means, given["precisions"], p.covariance_type, options))
    return states


def run_lockstep(data, runs: list[Run], *, centre, max_iter: int, checkpoint=None, progress=None,
                 on_iteration=None) -> list[Run]:
    """:func:`daskgmm.em.lockstep` with the hooks a fit offers.

    Parameters
    ----------
    checkpoint : daskgmm.persist.Checkpoint, optional
        Saves every run after every iteration.
    progress : callable, optional
        ``progress("iteration", iteration=, runs=)`` after every iteration.
    on_iteration : callable, optional
        ``on_iteration(iteration, runs)`` (the estimators' verbose lines).
    """
    def after_iteration(iteration, runs):
        if checkpoint is not None:
            checkpoint.save(runs)
        if on_iteration is not None:
            on_iteration(iteration, runs)
        if progress is not None:
            progress("iteration", iteration=iteration, runs=runs)

    return lockstep(data, runs, centre=centre, max_iter=max_iter, callback=after_iteration)


def best_run(runs: list[Run], max_iter: int) -> tuple[Run, float]:
    """scikit-learn's choice among restarts, and the lower bound it reports.

    The first run with the largest lower bound; with ``max_iter=0`` no run has
    one, and scikit-learn keeps the last initialisation, with ``-inf``.
    """
    if max_iter == 0:
        return runs[-1], -np.inf
    best, best_lb = runs[0], -np.inf
    for r in runs:
        if r.objective > best_lb or best_lb == -np.inf:
            best, best_lb = r, r.objective
    return best, float(best_lb)


@dataclass
class MixtureFit:
    """What :func:`fit_mixture` did.

    Attributes
    ----------
    runs : list of Run
        Every restart (or the one warm-started run).
    best : Run
    lower_bound : float
    init_seconds : float
    init_passes, n_passes : int
        Passes over the data for the initialisation (the first scan included), and in all.
    resumed : bool
        The runs came from a checkpoint.
    """

    runs: list
    best: Run
    lower_bound: float
    init_seconds: float
    init_passes: int
    n_passes: int
    resumed: bool = False
    extra: dict = field(default_factory=dict)


def fit_runs(data, make_states, *, centre, n_init: int, max_iter: int, random_state=None, warm=None,
             checkpoint=None, progress=None, on_iteration=None) -> MixtureFit:
    """Fit any model kind: ``n_init`` restarts in lockstep, or continue a warm state.

    Parameters
    ----------
    data : ChunkedData
    make_states : callable
        ``make_states(seeds) -> list of states`` (see :mod:`daskgmm.models`), one per seed.
    centre : ndarray, shape (D,)
        The shift of every pass (the first scan's mean).
    n_init, max_iter : int
    random_state : int, RandomState or None
        Seeds the restarts (every later draw is keyed by seed and row).
    warm : tuple of (state, float), optional
        Start from this state and lower bound instead (``warm_start``).
    checkpoint : daskgmm.persist.Checkpoint, optional
        Resume from its last save (then nothing is initialised) and save every iteration.
    progress : callable, optional
        ``progress(event, **info)`` with "init" (``seconds``, ``resumed``, ``runs``)
        and "iteration" events.
    on_iteration : callable, optional
        ``on_iteration(iteration, runs)``.

    Returns
    -------
    MixtureFit
    """
    t0 = time.perf_counter()
    runs = checkpoint.load() if checkpoint is not None else None
    resumed = runs is not None
    if runs is None:
        seeds = None
        if warm is None:
            seeds = restart_seeds(random_state, n_init)
            runs = [Run(s) for s in make_states(seeds)]
        else:
            state, lower_bound = warm
            runs = [Run(state, objective=lower_bound)]
        if checkpoint is not None:
            # every later draw is keyed by (seed, row): the seeds are the whole random state
            checkpoint.save(runs, extra={"rng": {"generator": RNG_NOTE, "restart_seeds": seeds}})
    init_seconds = time.perf_counter() - t0
    init_passes = data.passes
    if progress is not None:
        progress("init", seconds=init_seconds, resumed=resumed, runs=runs)
    run_lockstep(data, runs, centre=centre, max_iter=max_iter, checkpoint=checkpoint,
                 progress=progress, on_iteration=on_iteration)
    best, lower_bound = best_run(runs, max_iter)
    return MixtureFit(runs, best, lower_bound, init_seconds, init_passes, data.passes, resumed)


def fit_mixture(data, scan, params: MixtureParams, *, random_state=None, given=None, warm=None,
                checkpoint=None, progress=None, on_iteration=None) -> MixtureFit:
    """Fit one Gaussian mixture (:func:`fit_runs` with :func:`initial_states`).

    Parameters
    ----------
    data, scan :
        The prepared input and its first scan.
    params : MixtureParams
    given : dict, optional
        Checked initial parameters (:func:`check_initial_parameters`).
    random_state, warm, checkpoint, progress, on_iteration :
        As in :func:`fit_runs`.

    Returns
    -------
    MixtureFit
    """
    return fit_runs(
        data, lambda seeds: initial_states(data, scan, [(params, s) for s in seeds], given), centre=scan.mean,
        n_init=params.n_init, max_iter=params.max_iter, random_state=random_state, warm=warm,
        checkpoint=checkpoint, progress=progress, on_iteration=on_iteration,
    )


def fitted_attributes(best: Run, runs: list[Run], lower_bound: float, max_iter: int, dtype) -> dict:
    """scikit-learn's fitted attributes of a Gaussian mixture run (and daskgmm's history), in ``dtype``."""
    st = best.state
    out = {
        "weights_": st.weights.astype(dtype),
        "means_": st.means.astype(dtype),
        "precisions_cholesky_": np.asarray(st.precisions_cholesky).astype(dtype),
        "precisions_": cov.precisions_from_cholesky(st.precisions_cholesky, st.covariance_type).astype(dtype),
        "converged_": bool(best.converged) if max_iter > 0 else False,
        "n_iter_": int(best.n_iter),
        "lower_bound_": float(lower_bound),
        "lower_bounds_": [float(v) for v in best.objectives],
        "history_": [
            {"iteration": h["iteration"], "lower_bound": h["objective"], "change": h["change"],
             "seconds": h["seconds"], "events": h["events"]}
            for h in best.history
        ],
        "restarts_": [
            {"lower_bound": float(r.objective), "n_iter": int(r.n_iter), "converged": bool(r.converged)}
            for r in runs
        ],
    }
    if st.covariances is not None:
        out["covariances_"] = st.covariances.astype(dtype)
    return out


def warm_state(weights, means, covariances, precisions_cholesky, params: MixtureParams, dtype) -> MixtureState:
    """A fitted model's parameters as the state a warm-started fit continues from."""
    return MixtureState(
        np.asarray(weights, np.float64), np.asarray(means, np.float64), np.asarray(covariances, np.float64),
        np.asarray(precisions_cholesky, np.float64), params.covariance_type, **params.state_options(dtype),
    )


# ---------------------------------------------------------------------------
# Stepwise (online) EM

#: Default step-size schedule eta_t = (t + learning_offset) ** -learning_decay (the defaults of
#: scikit-learn's LatentDirichletAllocation). A decay of 0.7 lies inside (0.5, 1], where
#: sum(eta_t) = inf and sum(eta_t ** 2) < inf (Cappé & Moulines 2009), and nearer 0.5 than 1
#: so that the statistics of early, poorly fitted batches are forgotten; an offset of 10 keeps
#: the second batch from overwriting the first (eta_1 = 11 ** -0.7 = 0.19).
LEARNING_DECAY, LEARNING_OFFSET = 0.7, 10.0


def step_size(t: int, learning_decay: float = LEARNING_DECAY, learning_offset: float = LEARNING_OFFSET) -> float:
    """The weight ``η_t`` of batch number ``t`` (0-based) in the running statistics.

    ``η_0 = 1`` (the first batch's statistics are the running ones); then
    ``η_t = (t + learning_offset) ** -learning_decay``.
    """
    if t <= 0:
        return 1.0
    return float((t + learning_offset) ** -learning_decay)


def recentre(stats: SuffStats, shift) -> SuffStats:
    """The same statistics taken about another ``shift`` (exact algebra, no data needed).

    With ``δ = old shift - new shift`` (per component), ``x - new = (x - old) + δ``, so
    ``s1' = s1 + n δ`` and ``s2' = s2 + s1 δᵀ + δ s1ᵀ + n δ δᵀ`` (diag: its diagonal;
    spherical: its trace; tied: summed over components).

    Parameters
    ----------
    stats : SuffStats
    shift : ndarray, shape (D,) or (K, D)

    Returns
    -------
    SuffStats
        About ``shift``; ``stats`` itself when the shift is the same.
    """
    shift = np.asarray(shift, np.float64)
    if np.array_equal(stats.shift, shift):
        return stats
    n, s1 = stats.n, stats.s1
    delta = np.broadcast_to(stats.shift, s1.shape) - np.broadcast_to(shift, s1.shape)
    ct = stats.covariance_type
    if ct in ("full", "tied"):
        cross = np.einsum("ki,kj->kij", s1, delta)
        add = cross + cross.transpose(0, 2, 1) + n[:, None, None] * np.einsum("ki,kj->kij", delta, delta)
        s2 = stats.s2 + (add if ct == "full" else add.sum(axis=0))
    elif ct == "diag":
        s2 = stats.s2 + 2.0 * s1 * delta + n[:, None] * delta**2
    else:
        s2 = stats.s2 + 2.0 * (s1 * delta).sum(axis=1) + n * (delta**2).sum(axis=1)
    return replace(stats, s1=_frozen(s1 + n[:, None] * delta), s2=_frozen(s2), shift=_frozen(shift))


def _frozen(a) -> np.ndarray:
    a = np.array(a, dtype=np.float64, copy=True)
    a.setflags(write=False)
    return a


def scale_stats(stats: SuffStats, factor: float, **changes) -> SuffStats:
    """``n``, ``s1``, ``s2``, ``loglik`` and ``weight`` times ``factor`` (other fields as ``changes`` say)."""
    return replace(
        stats, n=_frozen(stats.n * factor), s1=_frozen(stats.s1 * factor), s2=_frozen(stats.s2 * factor),
        loglik=float(stats.loglik * factor), weight=float(stats.weight * factor), **changes,
    )


def blend(running: SuffStats | None, batch: SuffStats, eta: float) -> SuffStats:
    """``(1 - η) running + η batch``, per unit weight, about the batch's shift.

    Parameters
    ----------
    running : SuffStats or None
        Running statistics per unit weight (``weight == 1``), about any shift;
        None before the first batch (then ``eta`` must be 1).
    batch : SuffStats
        A batch's merged statistics (any total weight > 0).
    eta : float
        Step size in (0, 1].

    Returns
    -------
    SuffStats
        Per unit weight; ``rows`` counts every row that entered; ``worst`` is the batch's.
    """
    if not batch.weight > 0:
        raise ValueError("a batch with no positive weight has no statistics to blend")
    b = scale_stats(batch, 1.0 / batch.weight)
    if running is None or eta >= 1.0:
        if running is None and eta < 1.0:
            raise ValueError(f"the first batch needs eta = 1, got {eta}")
        return replace(b, weight=1.0, rows=int(batch.rows) + (0 if running is None else int(running.rows)))
    r = recentre(running, b.shift)
    if not np.isclose(r.weight, 1.0):
        r = scale_stats(r, 1.0 / r.weight)
    keep = 1.0 - eta
    return SuffStats(
        n=_frozen(keep * r.n + eta * b.n), s1=_frozen(keep * r.s1 + eta * b.s1),
        s2=_frozen(keep * r.s2 + eta * b.s2), loglik=float(keep * r.loglik + eta * b.loglik), weight=1.0,
        rows=int(r.rows) + int(batch.rows), shift=b.shift, covariance_type=b.covariance_type, worst=batch.worst,
    )


def model_statistics(state: MixtureState, shift=None, loglik: float = 0.0, rows: int = 0) -> SuffStats:
    """Statistics per unit weight whose M-step gives back ``state`` (its expected statistics).

    ``n = w``, ``s1 = w (μ - c)``, ``s2 = w ((Σ - reg_covar I) + (μ - c)(μ - c)ᵀ)`` in the
    shape of the covariance type (tied: pooled, ``Σ w = 1``), about ``c = shift``
    (default: the weighted mean of the means). What ``partial_fit`` after ``fit``
    starts from: the fitted model stands for the statistics of the data it was fitted on.
    """
    w = np.asarray(state.weights, np.float64)
    w = w / w.sum()
    means = np.asarray(state.means, np.float64)
    ct = state.covariance_type
    covs = state.covariances
    if covs is None:
        covs = cov.covariances_from_precisions(cov.precisions_from_cholesky(state.precisions_cholesky, ct), ct)
    covs = np.asarray(covs, np.float64)
    shift = w @ means if shift is None else np.asarray(shift, np.float64)
    m = means - shift
    d = means.shape[1]
    eye = np.eye(d)
    reg = state.reg_covar
    if ct == "full":
        s2 = w[:, None, None] * (covs - reg * eye + np.einsum("ki,kj->kij", m, m))
    elif ct == "tied":
        s2 = covs - reg * eye + np.einsum("k,ki,kj->ij", w, m, m)
    elif ct == "diag":
        s2 = w[:, None] * (covs - reg + m**2)
    else:
        s2 = w * (d * (covs - reg) + (m**2).sum(axis=1))
    return SuffStats(n=_frozen(w), s1=_frozen(w[:, None] * m), s2=_frozen(s2), loglik=float(loglik), weight=1.0,
                     rows=int(rows), shift=_frozen(shift), covariance_type=ct)


@dataclass
class OnlineStep:
    """What :func:`online_step` did.

    Attributes
    ----------
    state : MixtureState
        The model after the step's M-step.
    stats : SuffStats
        The running statistics after blending (per unit weight).
    loglik : float
        Mean log-likelihood of the batch under the model before the step.
    eta : float
        The step size used.
    rows : int
    weight : float
        Rows and total sample weight of the batch.
    seconds : float
        Wall time of the pass.
    chosen : int
        Which of the given states was stepped (the best on the batch).
    """

    state: MixtureState
    stats: SuffStats
    loglik: float
    eta: float
    rows: int
    weight: float
    seconds: float
    chosen: int = 0


def online_step(data, states: list[MixtureState], running: SuffStats | None, t: int, *, centre,
                learning_decay: float = LEARNING_DECAY, learning_offset: float = LEARNING_OFFSET,
                feature_names=None, name: str = "GaussianMixture") -> OnlineStep:
    """One step of stepwise EM (Cappé & Moulines 2009; Liang & Klein 2009) on a batch: one pass.

    The pass computes every state's statistics of the batch under its current
    parameters (the E-step) and a scan that rejects non-finite values and weights; the
    state with the highest mean log-likelihood on the batch (the first of equals: several
    are given only on the first batch, one per restart) is stepped: its running statistics
    become ``s ← (1 - η_t) s + η_t s_batch / weight`` (:func:`blend`, about the batch's
    shift), ``η_t`` from :func:`step_size`, then the M-step on them, scaled back to the
    batch's weight (so that collapse thresholds count rows as in ``fit``).

    Parameters
    ----------
    data : ChunkedData
        The batch (its first scan not run).
    states : list of MixtureState
    running : SuffStats or None
        Running statistics per unit weight before the step (None before the first batch).
    t : int
        Batches seen before this one (0: the first, ``η = 1``).
    centre : ndarray, shape (D,)
        Shift of the pass.
    feature_names : ndarray of str, optional
        For the messages naming columns with non-finite values.

    Returns
    -------
    OnlineStep

    Raises
    ------
    ValueError
        The batch holds NaN (unless the states marginalise it) or infinite values or has no
        positive weight, or the
        M-step collapsed a component (``on_collapse="raise"``).
    """
    t0 = time.perf_counter()
    scan, stats = data.run([ScanRequest(), MixtureRequest([s.spec(centre) for s in states])], centre)
    seconds = time.perf_counter() - t0
    missing = states[0].missing
    check_scan(scan, feature_names, name, missing=missing, initialise=False)
    if stats[0].weight <= 0:  # under missing="marginalize" the scan's weight counts complete rows only
        raise ValueError(
            "Sample weights must contain at least one non-zero number. "
            f"{name} got sample_weight with a sum of {stats[0].weight:g}."
        )
    objectives = [s.objective(st) for s, st in zip(states, stats)]
    chosen = int(np.argmax(objectives))
    state, batch = states[chosen], stats[chosen]
    eta = step_size(t, learning_decay, learning_offset)
    blended = blend(running, batch, eta)
    # the M-step sees the running statistics as if they were this batch's rows
    new = state.update(scale_stats(blended, batch.weight, worst=batch.worst))
    return OnlineStep(new, blended, float(objectives[chosen]), eta, int(batch.rows), float(batch.weight), seconds,
                      chosen)


# ---------------------------------------------------------------------------
# The variational mixture (BayesianGaussianMixture)


@dataclass(frozen=True)
class VariationalParams:
    """The hyper-parameters of one variational mixture fit besides the priors (validated)."""

    n_components: int
    covariance_type: str = "full"
    tol: float = 1e-3
    reg_covar: float = 1e-6
    max_iter: int = 100
    n_init: int = 1
    init_params: str = "kmeans"
    weight_concentration_prior_type: str = "dirichlet_process"

    @classmethod
    def of(cls, params: dict) -> VariationalParams:
        """From an estimator's ``get_params()`` (the other keys are ignored)."""
        from dataclasses import fields

        return cls(**{f.name: params[f.name] for f in fields(cls) if f.name in params})


def data_covariance(data, scan) -> np.ndarray:
    """The (weighted) covariance of the rows with ``ddof=1``, shape (D, D): one pass.

    As ``np.cov(X.T)`` for unweighted rows; sample weights count as frequencies
    (divided by ``Σ w - 1``). A one-component model with zero logits has every
    responsibility 1, so the mixture pass returns the scatter about the scan's mean.
    """
    from daskgmm.kernels import MixtureRequest, ModelSpec, NaturalParams

    d = data.n_features
    nat = NaturalParams(np.zeros((1, d, d)), np.zeros((1, d)), np.zeros(1))
    st = data.run([MixtureRequest([ModelSpec(nat, "full")])], scan.mean)[0][0]
    n = st.n[0]
    s1 = st.s1[0]
    scatter = st.s2[0] - np.outer(s1, s1) / n  # about the exact mean (s1 is ~0, not 0)
    out = scatter / (n - 1.0)
    return 0.5 * (out + out.T)


def variational_priors(data, scan, params: VariationalParams, *, weight_concentration_prior=None,
                       mean_precision_prior=None, mean_prior=None, degrees_of_freedom_prior=None,
                       covariance_prior=None) -> dict:
    """scikit-learn's ``*_prior_`` values: the given ones checked, the others from the data.

    Defaults: ``1 / n_components``; 1; the (weighted) mean; ``n_features``; the data
    covariance (full, tied; one pass), variances (diag) or their mean (spherical),
    all with ``ddof=1``.

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
        _check_shape(m, (d,), "means")
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
    if covariance_prior is None:
        if ct in ("full", "tied"):
            out["covariance_prior"] = data_covariance(data, scan)
        else:
            var = scan.m2 / (scan.weight - 1.0)
            out["covariance_prior"] = var if ct == "diag" else np.asarray(var.mean())
    elif ct in ("full", "tied"):
        c = check_array(covariance_prior, dtype=[np.float64, np.float32], ensure_2d=False)
        _check_shape(c, (d, d), f"{ct} covariance_prior")
        if not (np.allclose(c, c.T) and np.all(np.linalg.eigvalsh(c) > 0.0)):
            raise ValueError(f"'{ct} precision' should be symmetric, positive-definite")
        out["covariance_prior"] = c.astype(np.float64)
    elif ct == "diag":
        c = check_array(covariance_prior, dtype=[np.float64, np.float32], ensure_2d=False)
        _check_shape(c, (d,), f"{ct} covariance_prior")
        if np.any(c <= 0.0):
            raise ValueError(f"'{ct} precision' should be positive")
        out["covariance_prior"] = c.astype(np.float64)
    else:
        out["covariance_prior"] = np.asarray(float(covariance_prior))
    return out


def _variational_options(params: VariationalParams, priors: dict, dtype) -> dict:
    return dict(covariance_type=params.covariance_type, prior_type=params.weight_concentration_prior_type,
                reg_covar=float(params.reg_covar), tol=float(params.tol), eps_dtype=np.dtype(dtype), **priors)


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
        data, scan.mean, method=methods.pop(), jobs=[(p.n_components, p.covariance_type, s) for p, s in jobs],
    )
    return [VariationalState.from_stats(st, **_variational_options(p, priors, data.dtype))
            for (p, _), st in zip(jobs, stats)]


def fit_variational(data, scan, params: VariationalParams, priors: dict, *, random_state=None, warm=None,
                    checkpoint=None, progress=None, on_iteration=None) -> MixtureFit:
    """Fit one variational mixture (:func:`fit_runs` with :func:`variational_initial_states`)."""
    return fit_runs(
        data, lambda seeds: variational_initial_states(data, scan, [(params, s) for s in seeds], priors),
        centre=scan.mean, n_init=params.n_init, max_iter=params.max_iter, random_state=random_state,
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
