"""The fit procedure of the Student-t mixture (``StudentTMixture``): initial states, the loop
(:func:`daskgmm.fitting.mixture.fit_runs`), fitted attributes, samples.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.special import logsumexp

from daskgmm.em.init import (
    SAMPLE_ROWS_PER_CLUSTER,
    kmeans_tolerance,
    label_spec,
    label_spread,
    mixture_init_stats,
    observed_rows,
    observed_sample,
    sample_kmeans,
    start_weight,
    warn_fewer_clusters,
)
from daskgmm.em.loop import Run, lockstep
from daskgmm.engine.cluster import blas_threads
from daskgmm.fitting.mixture import FitParams, MixtureFit, fit_runs, fitted_attributes
from daskgmm.kernels import MixtureRequest, chunk_pass
from daskgmm.kernels import covariance as cov
from daskgmm.kernels.missing import marginal_distances
from daskgmm.kernels.random import stream_key
from daskgmm.kernels.studentt import t_logits
from daskgmm.models.states import OBJECTIVE_RTOL, first_best
from daskgmm.models.studentt import StudentTState, observed_df, t_constants, t_form, t_marginal

#: k-means starts the "kmeans" initialisation tries per restart, each fitted on the scan's sample,
#: the one of highest t likelihood there kept (see :func:`studentt_initial_states`).
KMEANS_STARTS = 6
#: More starts after those, seeded with the farthest :data:`TRIMMED_FRACTION` of the sample's squared
#: distances capped (``sample_kmeans(trim=...)``): a tight clump of gross outliers is a cluster to
#: k-means, and k-means++ seeds one of its rows on nearly every start.
TRIMMED_STARTS = 2
TRIMMED_FRACTION = 0.1
#: Rows of the scan's sample those fits run on, and their EM iterations at most.
SAMPLE_FIT_ROWS = 8192
SAMPLE_FIT_ITER = 50
#: EM iterations at most that take the chosen fit on the sample to ``tol / 10``.
SAMPLE_POLISH_ITER = 300


@dataclass(frozen=True)
class StudentTParams(FitParams):
    """The hyper-parameters of one Student-t mixture fit."""

    df: float = 4.0
    fixed_df: bool = False
    missing: str = "raise"

    def state_options(self, dtype) -> dict:
        """Keyword arguments of :class:`StudentTState` for data of ``dtype``."""
        return dict(reg_covar=float(self.reg_covar), tol=float(self.tol), eps_dtype=np.dtype(dtype),
                    fixed_df=bool(self.fixed_df), missing=self.missing)


def n_parameters(covariance_type: str, n_components: int, n_features: int, fixed_df: bool) -> int:
    """Free parameters of a t mixture: a Gaussian mixture's, plus one degree of freedom per component
    unless they are fixed (as studenttmixture counts them for BIC/AIC)."""
    return cov.n_parameters(covariance_type, n_components, n_features) + (0 if fixed_df else n_components)


@blas_threads(1)
def studentt_initial_states(data, scan, jobs: list[tuple[StudentTParams, int]], *,
                            robust: bool = True) -> list[StudentTState]:
    """Starting models of many jobs (restarts) from one set of initialisation passes.

    The initialisation is ``GaussianMixture``'s (``init_params``: the statistics of k-means
    labels, chosen rows or random responsibilities, then a Gaussian M-step); its
    covariances are the starting scales and every component starts with ``df`` degrees
    of freedom. From chosen rows ("k-means++", "random_from_data") the statistics are those
    of the labels of the nearest chosen row (``GaussianMixture``'s first E-step from its
    start; the start itself, scales of ``reg_covar``, would drive the degrees of freedom to
    about 0.1 in the first update, where EM barely moves). "kmeans" (the default) is made
    robust to gross outliers unless ``robust`` is False: several k-means starts, the one the
    t likelihood prefers on the scan's sample, or on a draw of every row with an observed value under
    ``missing="marginalize"`` (:func:`sample_fitted_states`). Unless ``fixed_df``, every
    start's degrees of freedom are those of highest t likelihood on the sample given its other
    parameters (:func:`sample_df`), not ``df`` itself. The client's fits on the sample run BLAS on one thread, as
    its arithmetic in the loop does (:func:`daskgmm.em.loop.lockstep`).
    """
    methods = {p.init_params for p, _ in jobs}
    if len(methods) != 1:
        raise ValueError(f"jobs must share one init_params, got {sorted(methods)}")
    if robust and methods == {"kmeans"} and not data.sparse:
        return sample_fitted_states(data, scan, jobs)
    # chosen rows: scikit-learn's start from them has scales of reg_covar, which a Gaussian M-step
    # repairs at once but a t one only multiplies by about (nu + D)/D per iteration (u ~ 1/δ²), while
    # its first nu-update, from u ~ reg_covar, takes nu to about 0.1, where EM crawls; so the start is
    # one Gaussian E-step on: the labels of the nearest chosen row
    stats = mixture_init_stats(
        data, scan.centre, method=methods.pop(), jobs=[(p.n_components, p.covariance_type, s) for p, s in jobs],
        chosen_labels=True,
    )
    states = []
    for (p, _), st in zip(jobs, stats, strict=True):
        options = p.state_options(data.dtype)
        nk, means, covs = cov.estimate_parameters(st, p.reg_covar, options["eps_dtype"])
        states.append(StudentTState.from_covariances(nk / start_weight(scan, st, p.init_params, chosen_labels=True),
                                                     means, covs, p.covariance_type, p.df,
                                                     **options))
    if data.sparse:
        return states
    x, w = df_rows(data, scan.centre)
    return [sample_df(s, x, w, scan.centre) for s in states]


def sample_rows(data) -> tuple[np.ndarray, np.ndarray | None]:
    """The first :data:`SAMPLE_FIT_ROWS` rows of the scan's sample (float64), and their sample weights when the
    sample is the data (else None: the sample is drawn by weight)."""
    sample = data.sample()
    full = data.sample_complete and len(sample) <= SAMPLE_FIT_ROWS
    x = np.asarray(sample[:SAMPLE_FIT_ROWS], np.float64)
    w = np.asarray(data.sample_weights(), np.float64)[: len(x)] if full else None
    return x, w


def df_rows(data, centre) -> tuple[np.ndarray, np.ndarray | None]:
    """The rows ECME's degrees of freedom are taken on outside the robust start (the plain start's
    :func:`sample_df`, :func:`df_proposal`): :func:`sample_rows`, or with NaN (``missing="marginalize"``) the first
    :data:`SAMPLE_FIT_ROWS` rows of a draw of every row with an observed value, as the robust start's
    (:func:`_observed_sample_rows`; one pass), with their weights when they are every such row. The scan's sample
    holds complete rows only: where they were few, ECME on them took components to df 1e6 (one to five of 3,000
    rows, 8 features with 10% missing, rows of a t with 30: a fit 9-45 log-likelihood units below df=30 fixed)."""
    if data.sparse or not np.any(data.scan().nan):
        return sample_rows(data)
    return _fit_rows(*observed_rows(data, np.asarray(centre, np.float64), SAMPLE_FIT_ROWS + 1))


def _fit_rows(points, weights) -> tuple[np.ndarray, np.ndarray | None]:
    """The first :data:`SAMPLE_FIT_ROWS` rows of a draw in key order (the draw of that many), and their sample
    weights when the draw holds every row it could (fewer came than asked), else None (drawn by weight already)."""
    x = points[:SAMPLE_FIT_ROWS]
    return x, (np.asarray(weights[: len(x)], np.float64) if len(points) <= SAMPLE_FIT_ROWS else None)


def sample_df(state: StudentTState, x: np.ndarray, w, centre) -> StudentTState:
    """``state`` with the degrees of freedom the t likelihood of rows ``x`` asks for given its other parameters
    (:func:`daskgmm.models.studentt.observed_df`, ECME's step; unchanged with ``fixed_df`` or no rows).

    A start's ``df`` is only where EM's degrees of freedom begin, and EM's update moves a large one by a
    roughly constant amount per iteration, each gaining less than ``tol``: from ``df=1e5`` a fit on rows
    of a t with 3 degrees of freedom stopped at 99,400, where ``df=10`` found 2.7. The likelihood's own
    maximum given the start's locations and scales does not depend on ``df``.
    """
    if state.fixed_df or len(x) == 0:
        return state
    return replace(state, df=_sample_df_step(state, x, w, centre, gain=False)[0])


def _sample_df_step(state: StudentTState, x, w, centre, gain: bool = True) -> tuple[np.ndarray, float]:
    """ECME's degrees of freedom on rows ``x`` (weights ``w`` or None) given the state's other parameters, and
    (with ``gain``) how much they raise the rows' mean log-likelihood (0 when unchanged). Rows with NaN
    (``missing="marginalize"``) by their observed features' t marginal (:func:`_marginal_df_step`)."""
    if np.isnan(x).any():
        return _marginal_df_step(state, x, w, centre, gain)
    d2, resp, logits = _distances_and_responsibilities(state.weights, state.means, state.precisions_cholesky,
                                                       state.covariance_type, state.df, x, centre, logits=True)
    if w is not None:
        resp = resp * w[None, :]
    d = x.shape[1]
    df = observed_df(state.df, d2, resp, d)
    if not gain or np.array_equal(df, state.df):
        return df, 0.0
    const = t_constants(state.weights, state.precisions_cholesky, state.covariance_type, df, d)
    before, after = logsumexp(logits, axis=0), logsumexp(t_logits(d2, df, const, d), axis=0)
    diff = after - before
    return df, float(np.average(diff, weights=w))


def _marginal_df_step(state: StudentTState, x, w, centre, gain: bool) -> tuple[np.ndarray, float]:
    """:func:`_sample_df_step` on rows with missing values: each row's ``δ²`` and dimension are its observed
    features' (the t marginal, as the passes score it). The complete rows among a draw alone were few where most
    rows miss a value, and their ECME step unchecked: one complete row in 3,000 (8 features, 10% missing, rows of
    a t with 30 degrees of freedom) started a component at 1e6, which EM does not bring back (a fit 15 log-likelihood
    units below the fixed ``df=30``; 5 complete rows: every component, 45 units)."""
    logits, q, dims = _marginal_logits(state, state.df, x, centre)
    resp = np.exp(logits - logsumexp(logits, axis=0))
    if w is not None:
        resp = resp * w[None, :]
    df = observed_df(state.df, q, resp, dims)
    if not gain or np.array_equal(df, state.df):
        return df, 0.0
    diff = logsumexp(_marginal_logits(state, df, x, centre)[0], axis=0) - logsumexp(logits, axis=0)
    return df, float(np.average(diff, weights=w))


def _marginal_logits(state: StudentTState, df, x, centre):
    """The weighted t log-densities (K, n) of rows ``x`` (NaN where missing) by their observed features'
    marginal under ``state`` with degrees of freedom ``df``, their distances ``δ²`` (K, n) and observed
    dimensions (n,)."""
    marg = t_marginal(state.weights, state.means, state.precisions_cholesky, state.covariance_type, df, centre)
    q, half, counts, _ = marginal_distances(marg, np.asarray(x, np.float64) - np.asarray(centre, np.float64))
    dims = x.shape[1] - counts
    nu = np.asarray(marg.df, np.float64)[:, None]
    return marg.const_by_observed[:, dims] - half - 0.5 * (nu + dims) * np.log1p(q / nu), q, dims


def _distances_and_responsibilities(weights, means, prec_chol, covariance_type, df, x, centre, logits=False):
    """``δ²`` and the responsibilities of rows ``x`` (n, D) under a t mixture, each (K, n), float64 (and the
    weighted log-densities, with ``logits``)."""
    centre = np.asarray(centre, np.float64)
    form = t_form(weights, means, prec_chol, covariance_type, df, centre)
    d2 = form.squared_distances(np.ascontiguousarray((np.asarray(x, np.float64) - centre).T))[0]
    lg = t_logits(d2, form.df, form.const, x.shape[1])
    resp = np.exp(lg - logsumexp(lg, axis=0))
    return (d2, resp, lg) if logits else (d2, resp)


#: A t component on rows that are one point has a scale above ``reg_covar``'s by what its tails lend it: a far
#: row adds ``r u (x - μ)(x - μ)ᵀ`` with ``u (x - μ)ᵀ Σ⁻¹ (x - μ) < nu + D``, a share of the scale itself
#: (0.3-10% measured on pixels with 60% of the rows saturated), so the scale says only "candidate" below
#: ``1 + T_POINT_RTOL`` times ``reg_covar``, and the rows decide.
T_POINT_RTOL = 1.0


def t_on_a_point(weights, means, covariances, prec_chol, covariance_type, df, reg_covar, x, w,
                 centre) -> np.ndarray:
    """Components of a fitted t mixture on rows that are one point (a saturated patch of an image).

    ``GaussianMixture``'s test (:func:`daskgmm.kernels.covariance.on_a_point`: the covariance
    ``reg_covar``'s to a thousandth) misses them: a t component's scale keeps a share of its tails
    (:data:`T_POINT_RTOL`). So a component is on one point when its scale is within ``1 + T_POINT_RTOL``
    of ``reg_covar`` in every direction, and the rows ``x`` (the scan's sample) it holds (responsibility above one
    half) within its scale (``δ² <= D``) hold most of its responsibility there and scatter less than the
    Gaussian test allows, a thousandth of ``reg_covar`` (:data:`daskgmm.kernels.covariance.ON_POINT_RTOL`)
    in every direction.

    Parameters
    ----------
    weights, means, covariances, prec_chol, covariance_type, df :
        The fitted mixture (scales as ``covariances``).
    reg_covar : float
        0: none (as :func:`daskgmm.kernels.covariance.on_a_point`).
    x : ndarray, shape (n, D)
        Rows of the data (finite).
    w : ndarray, shape (n,), or None
        Their sample weights (None: ones).
    centre : ndarray, shape (D,)
        The centre the t form is taken about (the scan's mean: its rounding is the pass's).

    Returns
    -------
    ndarray of int, shape (m,)
    """
    candidates = cov.on_a_point(covariances, covariance_type, reg_covar, rtol=T_POINT_RTOL)
    if len(candidates) == 0 or len(x) == 0:
        return candidates
    x = np.asarray(x, np.float64)
    d2, resp = _distances_and_responsibilities(weights, means, prec_chol, covariance_type, df, x, centre)
    if w is not None:
        resp *= np.asarray(w, np.float64)
    out = []
    for k in candidates:
        # its core: rows within its scale (δ² <= D) that it holds; with nu near 0 it also holds rows around the
        # point a little way off (a share of its weight, few rows), which lend its scale the tails' share
        core = (resp[k] > 0.5 * (w if w is not None else 1.0)) & (d2[k] <= x.shape[1])
        held = np.sum(resp[k][core])
        if not held > 0.5 * np.sum(resp[k]):
            continue  # its rows in the sample are not mostly within its scale (or there are none)
        rows, ww = x[core], resp[k][core] / held
        diff = rows - ww @ rows
        scatter = (diff * ww[:, None]).T @ diff
        if np.linalg.eigvalsh(scatter)[-1] <= cov.ON_POINT_RTOL * reg_covar:
            out.append(int(k))
    return np.array(out, dtype=np.intp)


class _SampleRows:
    """The scan's sample (or its first rows) as data for :func:`daskgmm.em.loop.lockstep`: every pass in this
    process, one chunk."""

    def __init__(self, x, w):
        self.x, self.w, self.passes = x, w, 0

    def run(self, requests, centre=None):
        self.passes += 1
        return chunk_pass(self.x, requests, centre, sample_weight=self.w, compiled=True)


def sample_fitted_states(data, scan, jobs: list[tuple[StudentTParams, int]]) -> list[StudentTState]:
    """The "kmeans" start of a t mixture, chosen by the t likelihood on the scan's sample.

    k-means puts a centre among gross outliers as readily as in a cluster (they weigh in
    squared distance), merging two clusters to do so, and EM on t components keeps that
    start: on three clusters with 5% scattered outliers, 9 of 20 seeds ended so (the outliers'
    component broad, two clusters in one). So for each job, :data:`KMEANS_STARTS` k-means
    starts on the sample (:func:`daskgmm.em.init.sample_kmeans`, the job's seed first and then
    seeds derived from it), each turned into a t mixture as the "kmeans" init does (label
    moments, the degrees of freedom of :func:`sample_df` from ``df``) and fitted by EM on the sample's first
    :data:`SAMPLE_FIT_ROWS` rows (at most :data:`SAMPLE_FIT_ITER` iterations, in this process);
    the fit of highest mean t log-likelihood there is the job's start, after another :func:`sample_df`
    and more EM on the sample to ``tol / 10`` (at most :data:`SAMPLE_POLISH_ITER` iterations: EM's degrees-of-freedom
    update gains less than ``tol`` per iteration long before it is done). No pass over the data:
    the sample is the same rows for any chunking, and so is the start. A start whose sample
    fit fails (a scale not positive definite on the few rows) is passed over.

    Under ``missing="marginalize"`` with NaN in the data, the scan's sample (complete rows only) gives way to one
    pass's draw among every row with an observed value (:func:`_observed_sample_rows`): k-means takes its rows as
    the plain start does (missing values filled by their column's mean), the label moments and the t fits take them
    as they are (rows with NaN by their observed features' t marginal, as in the passes), the degrees of
    freedom's ECME steps (:func:`sample_df`) too. Complete data keep the scan's sample, and their bits.
    Wide rows with few complete ones need no plain start any more (it gave way to one under ``2 K D`` complete rows,
    whose t fits were singular): the plain start gave a component to 3% of gross outliers (20 features, 12% missing:
    adjusted Rand 0.71 on 5 of 6 seeds, 1.0 on 4 of those with this start).
    """
    centre = np.asarray(scan.centre, np.float64)
    missing = bool(np.any(scan.nan))
    if missing:
        x, w, kmeans_rows = _observed_sample_rows(data, centre, jobs)
    else:
        x, w = sample_rows(data)
    full = w is not None
    rows = _SampleRows(x, w)
    tol_scaled = kmeans_tolerance(scan.variance, 1e-4)
    states = []
    for p, seed in jobs:
        seeds = [int(seed)] + [stream_key(int(seed), 24 + t) % (2**63)
                               for t in range(1, KMEANS_STARTS + TRIMMED_STARTS)]
        plain, trimmed = seeds[:KMEANS_STARTS], seeds[KMEANS_STARTS:]
        drawn = kmeans_rows[p.n_components] if missing else None
        centers = sample_kmeans(data, centre, [p.n_components] * len(plain), plain, tol=tol_scaled, tries=1,
                                drawn=drawn)
        if trimmed:  # after the plain ones: a tie keeps the plain start
            centers += sample_kmeans(data, centre, [p.n_components] * len(trimmed), trimmed, tol=tol_scaled,
                                     tries=1, trim=TRIMMED_FRACTION, drawn=drawn)
        stats = rows.run([MixtureRequest([label_spec(c, centre, p.covariance_type, np.float64,
                                                     label_spread(data, c, (drawn[3], drawn[1])) if missing else None)
                                          for c in centers])], centre)[0]
        if full:  # the sample is the data: its labels say the distinct clusters, as the Gaussian start's do
            warn_fewer_clusters([(p.n_components, p.covariance_type, seed)], stats[:1])
        options = p.state_options(data.dtype)
        runs = []
        for st in stats:
            nk, means, covs = cov.estimate_parameters(st, p.reg_covar, options["eps_dtype"])
            try:
                start = StudentTState.from_covariances(nk / nk.sum(), means, covs, p.covariance_type, p.df,
                                                       **options)
                start = sample_df(start, x, w, centre)
                run = Run(start)
                lockstep(rows, [run], centre=centre, max_iter=SAMPLE_FIT_ITER)
            except (ValueError, np.linalg.LinAlgError):
                continue
            if np.isfinite(run.objective):
                runs.append(run)
        if not runs:  # every sample fit failed: the plain "kmeans" start, from passes over the data
            states.extend(studentt_initial_states(data, scan, [(p, seed)], robust=False))
            continue
        best = runs[first_best([r.objective for r in runs], maximize=True)]
        # EM's nu-update gains little per iteration as nu grows: in memory, take the chosen fit to a
        # tenth of tol, so that a start is not left short of the degrees of freedom the sample asks for
        run = Run(replace(sample_df(best.state, x, w, centre), tol=p.tol / 10))
        try:
            lockstep(rows, [run], centre=centre, max_iter=SAMPLE_POLISH_ITER)
            polished = run.state if np.isfinite(run.objective) and run.objective >= best.objective else best.state
        except (ValueError, np.linalg.LinAlgError):
            polished = best.state
        states.append(replace(polished, tol=p.tol, events=()))
    return states


def _observed_sample_rows(data, centre, jobs):
    """The rows of the robust start under ``missing="marginalize"``: the first :data:`SAMPLE_FIT_ROWS` rows of a draw
    among every row with an observed value (:func:`daskgmm.em.init.observed_rows`, NaN kept: the t fits score them
    by their observed features' marginal), their sample weights when they are every such row (else None), and, by
    number of components, the same draw's rows k-means takes, as the plain "kmeans" start takes them
    (:func:`daskgmm.em.init.observed_sample`). One pass.

    The scan's sample holds complete rows only, and a cluster with none (a column missing in all its rows: a sensor
    one kind of machine lacks) was not in it: the start missed that cluster (adjusted Rand 0.62-0.70 on 4 or 5 of 10
    seeds per covariance type, 4 blobs in 6 features; ``GaussianMixture``'s start, from every row, 0.99-1.0)."""
    size = {p.n_components: min(SAMPLE_ROWS_PER_CLUSTER * p.n_components, data.n_rows) for p, _ in jobs}
    # one row more than either takes: fewer came, and they are every such row
    points, weights = observed_rows(data, centre, max(SAMPLE_FIT_ROWS, *size.values()) + 1)
    kmeans_rows = observed_sample(data, centre, set(size.values()), drawn=(points, weights))
    return *_fit_rows(points, weights), {k: kmeans_rows[m] for k, m in size.items()}


def fit_studentt(data, scan, params: StudentTParams, *, random_state=None, warm=None, checkpoint=None,
                 progress=None, on_iteration=None) -> MixtureFit:
    """Fit one Student-t mixture (:func:`daskgmm.fitting.mixture.fit_runs` with :func:`studentt_initial_states`),
    every pass trying the degrees of freedom the rows ask for beside EM's (:func:`df_proposal`)."""
    propose = None if params.fixed_df or data.sparse else df_proposal(data, scan.centre)
    return fit_runs(
        data, lambda seeds: studentt_initial_states(data, scan, [(params, s) for s in seeds]), centre=scan.centre,
        n_init=params.n_init, max_iter=params.max_iter, random_state=random_state, warm=warm,
        checkpoint=checkpoint, progress=progress, on_iteration=on_iteration, propose=propose,
    )


def df_proposal(data, centre):
    """The loop's ``propose`` (:func:`daskgmm.em.loop.lockstep`) of a t mixture: the state with ECME's degrees of
    freedom on the scan's sample (:func:`sample_df`), when they raise the sample's mean log-likelihood by more
    than the state's ``tol``; else None.

    EM's update moves a large ``nu`` by a roughly constant amount per iteration, each gaining less than ``tol``
    (a warm start from ``df_ = 1e5`` on rows of a t with 3 degrees of freedom stopped at once, near 1e5). ECME's
    step needs every row's distance, which a pass does not keep, so it is taken on the sample; the pass then
    scores it on every row beside the run's state (the same E-step again, in the same pass, only while the
    sample says it gains), and the run goes on from the better: the log-likelihood still never decreases.
    """
    x, w = df_rows(data, centre)

    def propose(state):
        if state.fixed_df or len(x) == 0:
            return None
        df, gain = _sample_df_step(state, x, w, centre)
        # (a gain of rounding's size is no gain: the pass would not tell the two apart)
        return replace(state, df=df) if gain > max(state.tol, OBJECTIVE_RTOL) else None

    return propose


def studentt_warm_state(weights, means, scales, precisions_cholesky, df, params: StudentTParams,
                        dtype) -> StudentTState:
    """A fitted model's parameters as the state a warm-started fit continues from."""
    return StudentTState(weights, means, scales, precisions_cholesky, df, params.covariance_type,
                         **params.state_options(dtype))


def studentt_attributes(fit: MixtureFit, n_features: int, max_iter: int, dtype) -> dict:
    """Every attribute ``StudentTMixture.fit`` sets: ``GaussianMixture``'s (the scales as
    ``covariances_``) and ``df_``."""
    out = fitted_attributes(fit.best, fit.runs, fit.lower_bound, max_iter, dtype)
    out.update(df_=fit.best.state.df.astype(dtype), init_seconds_=fit.init_seconds,
               init_passes_=fit.init_passes, n_passes_=fit.n_passes, n_features_in_=n_features)
    return out


def check_df(df, n_components: int) -> np.ndarray:
    """Fitted degrees of freedom read from a model file: shape (K,), finite and positive."""
    a = np.asarray(df)
    if a.shape != (n_components,):
        raise ValueError(f"df_ has shape {a.shape}, expected ({n_components},)")
    if not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise ValueError("df_ holds values that are not finite and positive")
    return a
