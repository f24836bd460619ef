"""The fit procedure of a Gaussian mixture, shared by the estimators, ``select_model`` and the command.

Everything here works on a prepared :class:`daskgmm.engine.passes.ChunkedData` and its first
scan; the estimators are thin over it (validation, attributes, verbose lines), as
dask-ml's estimators are over their module functions:

- :func:`check_initial_parameters` — ``weights_init``/``means_init``/``precisions_init``
  with scikit-learn's messages;
- :func:`initial_states` — the starting models of many jobs (restarts, candidates)
  from shared initialisation passes;
- :func:`run_lockstep` — the loop, with checkpoint and progress hooks;
- :func:`best_run` — the one rule that picks a restart (scikit-learn's, a tie up to rounding keeping the first);
- :func:`fit_mixture` — all of the above for one estimator, resumable;
- :func:`fitted_attributes` — scikit-learn's fitted attributes of a run;
- :func:`check_update_params`, :func:`check_n_samples`, :func:`check_warm_features`,
  :func:`check_continued_model` — the checks before a fit; :func:`online_initial_states` —
  a first ``partial_fit``'s starts.

Beside it: :mod:`daskgmm.fitting.report` (verbose lines), :mod:`daskgmm.fitting.predict`
(predictions, samples), :mod:`daskgmm.fitting.attributes` (attributes, model files).
"""

from __future__ import annotations

import time
import typing
import warnings
from dataclasses import dataclass, field

import numpy as np
from sklearn.utils import check_array, check_random_state

from daskgmm.em.init import mixture_init_stats, start_weight
from daskgmm.em.loop import Run, lockstep, run_specs
from daskgmm.kernels import covariance as cov
from daskgmm.models.states import FIXED_MEANS_REASON, OBJECTIVE_RTOL, MixtureState, first_best, reseed_collapsed


def restart_seeds(random_state, n: int) -> list[int]:
    """One 63-bit seed per restart, drawn from ``random_state`` (scikit-learn's rules) in restart order."""
    rs = check_random_state(random_state)
    return [int(rs.randint(0, np.iinfo(np.int64).max, dtype=np.int64)) for _ in range(n)]

#: What a checkpoint records of the random state: every draw is keyed by (seed, row).
RNG_NOTE = "SplitMix64 keyed by (seed, row)"


@dataclass(frozen=True)
class FitParams:
    """The hyper-parameters every mixture fit has (the estimator's, validated); each kind adds its own."""

    n_components: int
    covariance_type: str = "full"
    tol: float = 1e-3
    reg_covar: float = 1e-6
    max_iter: int = 100
    n_init: int = 1
    init_params: str = "kmeans"

    @classmethod
    def of(cls, params: dict) -> typing.Self:
        """From an estimator's ``get_params()`` (the other keys are ignored)."""
        from dataclasses import fields

        return cls(**{f.name: params[f.name] for f in fields(cls) if f.name in params})


@dataclass(frozen=True)
class MixtureParams(FitParams):
    """The hyper-parameters one Gaussian mixture fit needs."""

    assignment: str = "soft"
    update_params: str = "wmc"
    on_collapse: str = "raise"
    missing: str = "raise"

    def state_options(self, dtype) -> dict:
        """Keyword arguments of :class:`MixtureState` for data of ``dtype``."""
        return dict(reg_covar=float(self.reg_covar), tol=float(self.tol), eps_dtype=np.dtype(dtype),
                    assignment=self.assignment, update_params=self.update_params, on_collapse=self.on_collapse,
                    missing=self.missing)


# ---------------------------------------------------------------------------
# Checks before a fit, and initial parameters given by the user


def check_update_params(update_params) -> None:
    """``update_params`` must name some of weights (w), means (m) and covariances (c), once each."""
    up = update_params
    if not isinstance(up, str) or not up or set(up) - set("wmc") or len(set(up)) != len(up):
        raise ValueError(
            f"update_params must be a non-empty combination of 'w', 'm' and 'c' "
            f"(weights, means, covariances); got {up!r}"
        )


def check_n_samples(n_samples: int, n_components: int) -> None:
    """scikit-learn's error for fewer rows than components."""
    if n_samples < n_components:
        raise ValueError(
            f"Expected n_samples >= n_components but got n_components = {n_components}, n_samples = {n_samples}"
        )


def check_warm_features(name: str, fitted_features: int, n_features: int) -> None:
    """A warm-started fit must see as many features as the fitted model has."""
    if fitted_features != n_features:
        raise ValueError(
            f"X has {n_features} features, but the warm-started {name} was fitted "
            f"with {fitted_features} features."
        )


# The fitted estimator's attribute recording the covariance type it was fitted with: its arrays' shapes do not
# always say it (see check_continued_model); private, as scikit-learn's fitted attributes end in "_".
FITTED_TYPE = "_fitted_covariance_type"


def check_continued_model(name: str, means, covariances, precisions_cholesky, n_components: int,
                          covariance_type: str, how: str = "warm_start", fitted_type: str | None = None) -> None:
    """A fit that continues a fitted model (``warm_start``, a later ``partial_fit``) keeps its form: the
    parameters must still say its number of components and covariance type. After ``set_params`` changed
    them, the fitted arrays were read as the new form (a broadcasting error, or, as tied from full, a
    fit from garbage; with another ``n_components`` scikit-learn's fit keeps the old components
    silently, and ``bic`` counts the new number's parameters).

    Parameters
    ----------
    how : {"warm_start", "partial_fit", "fitted"}
        What continues the model, for the message; "fitted": predictions, samples and model files, which
        read the fitted arrays as the parameters' form (scikit-learn's fail in NumPy; full read as tied
        gave labels and a NaN bic with divide-by-zero warnings).
    fitted_type : str, optional
        The covariance type the model was fitted with, as its fit or model file recorded it
        (:data:`FITTED_TYPE`). Without it (an estimator pickled by a version that did not record it) the
        type is inferred from the arrays' shapes, which cannot tell tied from diag when K = D: a diag
        model whose precisions span twelve orders of magnitude looked triangular (tied), and at K = D = 1
        the shapes say nothing.
    """
    k, d = np.shape(means)
    fitted = fitted_type or cov.fitted_covariance_type(covariances, precisions_cholesky, k, d)
    if k == n_components and (fitted is None or fitted == covariance_type):
        return
    was = f"{k} component{'s' * (k != 1)}" + (f" and covariance_type={fitted!r}" if fitted else "")
    now = f"n_components={n_components} and covariance_type={covariance_type!r}"
    if how == "fitted":
        raise ValueError(f"{name} was fitted with {was}, but its parameters say {now}: set_params after fit does "
                         "not change the fitted model. Fit it again, or set them back.")
    who, remedy = ((f"{name}(warm_start=True)", "Set warm_start=False to fit a new model of that form.")
                   if how == "warm_start" else
                   (f"{name}.partial_fit", "Fit a new model of that form (fit, or partial_fit on a clone)."))
    raise ValueError(f"{who} continues the fitted model, which has {was}, but the parameters say {now}. {remedy}")


def check_shape(param, shape, name, detail: str = ""):
    """scikit-learn's error for a parameter of another shape, ``detail`` after its sentence."""
    if param.shape != shape:
        raise ValueError(f"The parameter '{name}' should have the shape of {shape}, but got {param.shape}{detail}")


def _as_param_array(value, name) -> np.ndarray:
    """scikit-learn's check of an initial parameter array (numeric, finite; any shape, checked next)."""
    return check_array(value, dtype=[np.float64, np.float32], ensure_2d=False, allow_nd=True, input_name=name)


def check_weights(weights, n_components) -> np.ndarray:
    """``weights_init`` checked as scikit-learn checks it; float64, shape (K,)."""
    w = _as_param_array(weights, "weights")
    check_shape(w, (n_components,), "weights")
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
    check_shape(m, (n_components, n_features), "means")
    return m.astype(np.float64, copy=False)


def check_precisions(precisions, covariance_type, n_components, n_features) -> np.ndarray:
    """``precisions_init`` checked as scikit-learn checks it; float64, the covariance type's shape."""
    p = _as_param_array(precisions, f"{covariance_type} precision")
    name = f"{covariance_type} precision"
    want = cov.covariance_shape(covariance_type, n_components, n_features)
    hint = ""
    other = [t for t in cov.COVARIANCE_TYPES if cov.covariance_shape(t, n_components, n_features) == p.shape]
    if p.shape != want and other:
        hint = f": {' or '.join(map(repr, other))} precisions have that shape, not {covariance_type!r} ones"
        if "full" in other:  # what read_spark_model gives unless told the type (Spark's covariances are full)
            hint += (f"; a Spark model's precisions read by read_spark_model(path) are full: pass it "
                     f"covariance_type={covariance_type!r} too")
    check_shape(p, want, name, hint)
    cov.of(covariance_type).check_precisions(p, name)
    return p.astype(np.float64, copy=False)


def n_free_parameters(covariance_type: str, n_components: int, n_features: int, update_params: str = "wmc", *,
                      weights_init=None, means_init=None, precisions_init=None) -> int:
    """The parameters a fit estimates, for BIC and AIC: scikit-learn's count, less each group
    (weights ``w``, means ``m``, covariances ``c``) held fixed (not in ``update_params``) at a value
    the user gave (its ``*_init``): the notes' means-only EM with given weights and variances
    estimates ``K·D`` numbers. A group fixed at what the initialisation estimated counts."""
    k, d = n_components, n_features
    sizes = {"w": k - 1, "m": k * d, "c": cov.of(covariance_type).n_covariance_parameters(k, d)}
    given = {"w": weights_init is not None, "m": means_init is not None, "c": precisions_init is not None}
    return int(sum(size for g, size in sizes.items() if g in update_params or not given[g]))


class CollapsedComponentWarning(UserWarning):
    """A fitted mixture has a component on fewer rows than its covariance needs, or on rows that are one
    point: the singularity of maximum likelihood for mixtures, its likelihood held finite by ``reg_covar``
    only."""


def component_rows(data, states: list, centre) -> list | None:
    """Each state's rows per component, ``Σ_i r_ik`` over the rows, their sample weights left out: shape (K,)
    each, the ``rows`` of :func:`collapsed_on_rows`. A collapse is about how many rows a covariance is
    estimated from, not about their weight: a component's share of the weight times the rows (the same for
    any scale of the weights) took one row of weight 1e6 among 1,000 of weight 1 for 999 rows, and 50 rows
    of weight 1e-6 for 5e-5 of a row. One pass, for weighted data only; None without sample weights (then
    the weights' shares are the rows')."""
    if data.sample_weight is None or not states:
        return None
    with data.unweighted():
        stats = run_specs(data, [s.spec(centre) for s in states], centre)
    # a t mixture's statistics: its responsibilities' sums apart from the moments (weighted by u)
    return [np.asarray(st.resp if hasattr(st, "resp") else st.n, np.float64) for st in stats]


def collapsed_on_rows(weights, covariances, covariance_type: str, n_rows: float,
                      rows=None, reg_covar: float = 0.0, points=None) -> list[tuple[int, float, bool]]:
    """``(component, rows, on_a_point)`` of every component of a fitted mixture on fewer rows (its weight
    times ``n_rows``, the rows fitted; or ``rows``, each component's rows, shape (K,), where the weights do
    not say them: sample weights (:func:`component_rows`), or weights held fixed) than its covariance needs
    (:func:`daskgmm.kernels.covariance.collapsed_components`; ``on_a_point`` False), or, given
    ``reg_covar``, on rows that are one point, its covariance ``reg_covar``'s
    (:func:`daskgmm.kernels.covariance.on_a_point`; True); none for ``tied``. A component
    that holds no rows (its weight scikit-learn's 10 eps of the weights' dtype: a dead one, whose
    likelihood grows nothing) is not one of them. ``points``, the components known to be on one point, replaces
    the covariance test where a model has its own (a t mixture's: its scales keep a share of their tails,
    :func:`daskgmm.fitting.studentt.t_on_a_point`)."""
    if not cov.of(covariance_type).per_component:
        return []
    weights = np.asarray(weights)
    eps = np.finfo(weights.dtype if weights.dtype.kind == "f" else np.float64).eps
    nk = weights.astype(np.float64) * n_rows if rows is None else np.asarray(rows, dtype=np.float64)
    # float32's 10 eps is 1.2e-6 of a row (unweighted): well under a thousandth of a row is no row
    dead = max(1e-9 * n_rows, 1e4 * eps)
    few = [int(j) for j in cov.collapsed_components(covariances, nk, covariance_type)]
    if points is None:
        points = cov.on_a_point(covariances, covariance_type, reg_covar)
    point = [int(j) for j in points if j not in few]
    return [(j, float(nk[j]), j in point) for j in sorted(few + point) if nk[j] > dead]


#: Components a collapse warning names one by one; it counts the rest.
_LISTED = 8


def _rows(n: float) -> str:
    """A component's rows as a message says them: 1.49 (responsibilities), 256, 1,024 (not 1.02e+03), and
    1.99996 rather than 2, which the rows a covariance needs are (D + 1, or 2), not fewer."""
    if n >= 1000:
        return f"{n:,.0f}"
    said = f"{n:.3g}"
    return f"{n:.6g}" if float(said) > n and float(said).is_integer() else said


def warn_collapsed(found: dict[str, list[tuple[int, float, bool]]], reg_covar: float, stacklevel: int = 2, *,
                   criteria: bool = False, update_params: str = "wmc", reinit: bool = True,
                   reseeded: bool = False) -> None:
    """The one :class:`CollapsedComponentWarning`: of a fit, or of ``select_model``'s candidates.

    Parameters
    ----------
    found : dict of str to list of (int, float, bool)
        Each model's :func:`collapsed_on_rows`, under the name the message gives it ("" for a fit's one
        model, "K=3 full" for a candidate).
    reg_covar : float
        What holds their likelihood finite.
    stacklevel : int
        Of the caller of the function that calls this one.
    criteria : bool
        Say that BIC and AIC reward such models (``select_model`` compares them so).
    update_params : str
        The groups the fit updates: the remedy named is ``on_collapse="reinit"``, unless the means are
        held fixed (then no re-seed cures it) or every such component is on one point (a re-seed, which
        goes to the worst-explained rows, is drawn back to it; the fit would not converge).
    reinit : bool
        The estimator takes ``on_collapse="reinit"`` (``StudentTMixture`` does not: fewer components is the
        remedy named).
    reseeded : bool
        The fit ran with ``on_collapse="reinit"`` already: its re-seeds did not cure these components (EM drew
        them back), so the remedy named is not the option in use.
    """
    def listed(got, on_point):
        these = [(j, n) for j, n, p in got if p == on_point]
        # at K = 256 every component could be named: the first few, and how many more, on how many rows
        said = ", ".join(f"component {j} on {_rows(n)} row(s)" for j, n in these[:_LISTED])
        if len(these) > _LISTED:
            rest = [n for _, n in these[_LISTED:]]
            said += f", and {len(rest)} more components, on {_rows(min(rest))} to {_rows(max(rest))} row(s) each"
        return said

    parts = []
    for name, got in found.items():
        few, point = listed(got, False), listed(got, True)
        said = [f"{few}: fewer rows than its covariance needs"] * bool(few) + [
            f"{point} that are one point (its covariance is reg_covar's)"] * bool(point)
        if said:
            parts.append(f"{name}: " * bool(name) + "; ".join(said))
    if parts:
        rewarded = ", which BIC and AIC reward" if criteria else ""
        if not reinit:
            remedy = "fit fewer components" + (", or set reg_covar to the spread such rows should have" if any(
                p for got in found.values() for _, _, p in got) else "")
        elif "m" not in update_params:
            remedy = f"{FIXED_MEANS_REASON}; update the means, or fit fewer components"
        else:
            kinds = {p for got in found.values() for _, _, p in got}
            if reseeded and False in kinds:  # naming the option in use would send the user round in a circle
                remedy = ('on_collapse="reinit" was in use and EM drew the component back: fit fewer components, or '
                          'let one hold that point (on_collapse="raise" with reg_covar > 0)')
            elif True not in kinds:
                remedy = 'on_collapse="reinit" re-seeds such components'
            elif False in kinds:
                remedy = 'on_collapse="reinit" re-seeds those on too few rows'
            else:  # a re-seed goes to the worst-explained rows, and EM takes it back to the point
                remedy = ('on_collapse="reinit" does not re-seed them (a re-seed is drawn back): fit fewer components, '
                          "or set reg_covar to the spread such rows should have")
        # (with reg_covar=0 nothing bounds it: such a component's few distinct rows keep it finite, for now)
        held = f"held finite by reg_covar={reg_covar:g} only" if reg_covar > 0 else "reg_covar=0 does not bound it"
        warnings.warn(f"{'; '.join(parts)}, the likelihood's singularity ({held}{rewarded}); {remedy}",
                      CollapsedComponentWarning, stacklevel=stacklevel + 1)


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
        data, scan.centre, method=methods.pop(), jobs=[(p.n_components, p.covariance_type, s) for p, s in jobs],
        count_rows=any(p.on_collapse == "reinit" for p, _ in jobs),
    )
    return states_from_stats(stats, scan, [p for p, _ in jobs], data.dtype, given)


def states_from_stats(stats, scan, params: list[MixtureParams], dtype, given: dict | None = None,
                      weight_scale: float = 1.0) -> list[MixtureState]:
    """Starting models from initial statistics (an M-step each), one per ``params``.

    ``given`` is as in :func:`initial_states`; ``scan`` gives the total weight. ``weight_scale``: the
    power of two the states' M-steps multiply the statistics by (:class:`MixtureState`), these too.
    """
    given = given or {"weights": None, "means": None, "precisions": None}
    states = []
    for p, st in zip(params, stats, strict=True):
        options = p.state_options(dtype)
        total = start_weight(scan, st, p.init_params) * weight_scale
        if weight_scale != 1.0:
            options["weight_scale"] = weight_scale
            st = st.scaled(weight_scale)
        nk, means, covs = cov.estimate_parameters(st, p.reg_covar, options["eps_dtype"])
        weights = nk / total if given["weights"] is None else given["weights"]
        means = means if given["means"] is None else given["means"]
        if given["precisions"] is None:
            events = ()
            if p.on_collapse == "reinit":  # rows, not weights (st.counts on weighted data: count_rows)
                weights, covs, events = _reseed_collapsed_start(weights, covs, st.n_rows, p.covariance_type,
                                                                "w" in p.update_params)
            states.append(MixtureState.from_covariances(weights, means, covs, p.covariance_type, events=events,
                                                        **options))
        else:
            states.append(_state_from_precisions(weights, means, given["precisions"], p.covariance_type, options))
    return states


def _reseed_collapsed_start(weights, covs, rows, covariance_type, share_weight=True):
    """``on_collapse="reinit"`` at the start: a component the initialisation left on too few rows
    (k-means gives an isolated point a cluster of its own) takes the healthy components' mean
    covariance and an equal share of weight, as :meth:`MixtureState.update` re-seeds one later.

    Returns ``(weights, covariances, events)``; unchanged when none collapsed or all did (the
    M-step's error then names them); the weights unchanged without ``share_weight`` (held fixed).
    """
    if not cov.of(covariance_type).per_component:
        return weights, covs, ()
    bad = cov.collapsed_components(covs, rows, covariance_type)
    good = np.setdiff1d(np.arange(len(rows)), bad)
    if not len(bad) or not len(good):
        return weights, covs, ()
    weights, covs = reseed_collapsed(weights, covs, bad, share_weight)
    events = tuple(f"component {int(k)} collapsed at the start; given the others' mean covariance" for k in bad)
    return weights, covs, events


def run_lockstep(data, runs: list[Run], *, centre, max_iter: int, checkpoint=None, progress=None,
                 on_iteration=None, propose=None) -> list[Run]:
    """:func:`daskgmm.em.loop.lockstep` with the hooks a fit offers.

    Parameters
    ----------
    checkpoint : daskgmm.io.modelfiles.Checkpoint, optional
        Saves every run after every iteration.
    progress : callable, optional
        ``progress("iteration", iteration=, runs=)`` after every iteration.
    on_iteration : callable, optional
        ``on_iteration(iteration, runs)`` (the estimators' verbose lines).
    propose : callable, optional
        As in :func:`daskgmm.em.loop.lockstep`.
    """
    return lockstep(data, runs, centre=centre, max_iter=max_iter,
                    callback=iteration_hook(checkpoint=checkpoint, progress=progress, on_iteration=on_iteration),
                    propose=propose)


def iteration_hook(*, checkpoint=None, progress=None, on_iteration=None):
    """The ``callback(iteration, runs)`` of :func:`daskgmm.em.loop.lockstep` that runs a fit's hooks after
    every iteration: saves the checkpoint, then ``on_iteration(iteration, runs)``, then
    ``progress("iteration", iteration=, runs=)``."""
    def after_iteration(iteration, runs):
        if checkpoint is not None:
            checkpoint.save(runs)
        if on_iteration is not None:
            on_iteration(iteration, runs)
        if progress is not None:
            progress("iteration", iteration=iteration, runs=runs)

    return after_iteration


def best_run(runs: list[Run], max_iter: int) -> tuple[Run, float]:
    """scikit-learn's choice among restarts, and the lower bound it reports.

    The first run with the largest lower bound, up to rounding
    (:func:`daskgmm.models.states.first_best`: restarts that reach the same optimum
    differ by rounding, which depends on the chunking and the BLAS kernel);
    with ``max_iter=0`` no run has one, and scikit-learn keeps the last
    initialisation, with ``-inf``.
    """
    if max_iter == 0:
        return runs[-1], -np.inf
    objectives = [r.objective for r in runs]
    if np.all(np.isfinite(objectives)):
        best = runs[first_best(objectives, maximize=True, atol=OBJECTIVE_RTOL)]
        return best, float(best.objective)
    best, best_lb = runs[0], -np.inf  # scikit-learn's loop, for its rule on -inf
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
             checkpoint=None, progress=None, on_iteration=None, propose=None) -> MixtureFit:
    """Fit any model kind: ``n_init`` restarts in lockstep, or continue a warm state.

    Parameters
    ----------
    data : ChunkedData
    make_states : callable
        ``make_states(seeds) -> list of states`` (see :mod:`daskgmm.models.states`), one per seed.
    centre : ndarray, shape (D,)
        The shift of every pass (the first scan's mean).
    n_init, max_iter : int
    random_state : int, RandomState or None
        Seeds the restarts (every later draw is keyed by seed and row).
    warm : tuple of (state, float), optional
        Start from this state and lower bound instead (``warm_start``).
    checkpoint : daskgmm.io.modelfiles.Checkpoint, optional
        Resume from its last save (then nothing is initialised) and save every iteration.
    progress : callable, optional
        ``progress(event, **info)`` with "init" (``seconds``, ``resumed``, ``runs``, ``persisted``:
        whether the rows are kept in memory, ``ChunkedData.persisted``) and "iteration" events.
    on_iteration : callable, optional
        ``on_iteration(iteration, runs)``.
    propose : callable, optional
        Another state to try beside each run's in every pass (:func:`daskgmm.em.loop.lockstep`).

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
        progress("init", seconds=init_seconds, resumed=resumed, runs=runs, persisted=data.persisted)
    run_lockstep(data, runs, centre=centre, max_iter=max_iter, checkpoint=checkpoint,
                 progress=progress, on_iteration=on_iteration, propose=propose)
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
        data, lambda seeds: initial_states(data, scan, [(params, s) for s in seeds], given), centre=scan.centre,
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
        FITTED_TYPE: st.covariance_type,
    }
    if st.covariances is not None:
        out["covariances_"] = st.covariances.astype(dtype)
    return out


def online_initial_states(data, scan, params: MixtureParams, random_state=None, given=None):
    """The ``n_init`` starting models of a first online step (of which the step keeps the one
    most likely on the batch), and the seconds their initialisation took.

    Returns
    -------
    states : list of MixtureState
    seconds : float
    """
    seeds = restart_seeds(random_state, params.n_init)
    t0 = time.perf_counter()
    states = initial_states(data, scan, [(params, s) for s in seeds], given)
    return states, time.perf_counter() - t0


def warm_state(weights, means, covariances, precisions_cholesky, params: MixtureParams, dtype) -> MixtureState:
    """A fitted model's parameters as the state a warm-started fit continues from."""
    return MixtureState(
        np.asarray(weights, np.float64), np.asarray(means, np.float64), np.asarray(covariances, np.float64),
        np.asarray(precisions_cholesky, np.float64), params.covariance_type, **params.state_options(dtype),
    )
