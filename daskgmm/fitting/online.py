"""Stepwise (online) EM: ``GaussianMixture.partial_fit`` and ``daskgmm update``.

The running statistics are blended with each batch's, ``s ← (1 - η_t) s + η_t s_batch``
(Cappé & Moulines 2009; Liang & Klein 2009), then the M-step; the same kernels, merge
and M-step as :mod:`daskgmm.fitting.mixture`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from daskgmm.engine.passes import tiny_weight_factor
from daskgmm.kernels import MixtureRequest, ScanRequest, SuffStats
from daskgmm.kernels import covariance as cov
from daskgmm.models.states import OBJECTIVE_RTOL, MixtureState, first_best
from daskgmm.validation.scan import check_scan

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
    s2 = cov.shift_second_moments(stats.s2, n, s1, delta, stats.covariance_type)
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
        Per unit weight; ``rows`` counts every row that entered; ``worst`` is the batch's. ``counts`` (when
        the batch has them: weighted rows, ``on_collapse="reinit"``) each component's share of the rows,
        blended as the rest (the running statistics' share of the weight where they have no counts), times
        ``rows``.
    """
    if not batch.weight > 0:
        raise ValueError("a batch with no positive weight has no statistics to blend")
    b = scale_stats(batch, 1.0 / batch.weight)
    if running is None or eta >= 1.0:
        if running is None and eta < 1.0:
            raise ValueError(f"the first batch needs eta = 1, got {eta}")
        rows = int(batch.rows) + (0 if running is None else int(running.rows))
        return replace(b, weight=1.0, rows=rows, counts=_blend_counts(None, batch, 1.0, rows))
    r = recentre(running, b.shift)
    if not np.isclose(r.weight, 1.0):
        r = scale_stats(r, 1.0 / r.weight)
    keep = 1.0 - eta
    rows = int(r.rows) + int(batch.rows)
    return SuffStats(
        n=_frozen(keep * r.n + eta * b.n), s1=_frozen(keep * r.s1 + eta * b.s1),
        s2=_frozen(keep * r.s2 + eta * b.s2), loglik=float(keep * r.loglik + eta * b.loglik), weight=1.0,
        rows=rows, shift=b.shift, covariance_type=b.covariance_type, worst=batch.worst,
        counts=_blend_counts(r, batch, eta, rows),
    )


def share_of_rows(stats: SuffStats) -> np.ndarray:
    """Each component's share of the rows behind running statistics, shape (K,): ``counts / rows`` where they
    were counted, else the share of the weight (``n / weight``)."""
    if stats.counts is not None and stats.rows > 0:
        return np.asarray(stats.counts, np.float64) / stats.rows
    return np.asarray(stats.n, np.float64) / stats.weight


def _blend_counts(running, batch, eta, rows):
    """``(1 - η) running + η batch`` of the components' shares of the rows, times ``rows`` (None when the batch's
    rows were not counted: its share of the weight is the rows', as the running statistics' is then)."""
    if batch.counts is None or not batch.rows:
        return None
    share = np.asarray(batch.counts, np.float64) / batch.rows
    if running is not None and eta < 1.0:
        share = (1.0 - eta) * share_of_rows(running) + eta * share
    return _frozen(share * rows)


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
    s2 = cov.second_moments_from_parameters(w, m, covs, state.reg_covar, ct)
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
                feature_names=None, name: str = "GaussianMixture", rows_seen: int = 0) -> OnlineStep:
    """One step of stepwise EM (Cappé & Moulines 2009; Liang & Klein 2009) on a batch: one pass.

    The pass computes every state's statistics of the batch under its current
    parameters (the E-step) and a scan that rejects non-finite values and weights; the
    state with the highest mean log-likelihood on the batch (the first of equals: several
    are given only on the first batch, one per restart) is stepped: its running statistics
    become ``s ← (1 - η_t) s + η_t s_batch / weight`` (:func:`blend`, about the batch's
    shift), ``η_t`` from :func:`step_size`, then the M-step on them, scaled to the rows they stand
    for, the batch's and ``rows_seen`` (so that collapse thresholds count rows as in ``fit``: scaled
    to a small batch alone, healthy components looked collapsed to ``on_collapse="reinit"``).

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
    rows_seen : int, default=0
        Rows the running statistics stand for before this batch (``n_rows_seen_``).

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
    specs = [s.spec(centre) for s in states]
    # on weighted rows, reinit's rows: each component's, the weights left out, from the same E-step (em.loop.one_pass's)
    if data.sample_weight is not None and any(s.counts_rows for s in states):
        specs = [replace(sp, count_rows=True) for sp in specs]
    scan, stats = data.run([ScanRequest(), MixtureRequest(specs)], centre)
    seconds = time.perf_counter() - t0
    missing = states[0].missing
    check_scan(scan, feature_names, name, missing=missing, initialise=False, dtype=data.dtype)
    if stats[0].weight <= 0:  # under missing="marginalize" the scan's weight counts complete rows only
        raise ValueError(
            "Sample weights must contain at least one non-zero number. "
            f"{name} got sample_weight with a sum of {stats[0].weight:g}."
        )
    objectives = [s.objective(st) for s, st in zip(states, stats)]
    chosen = first_best(objectives, maximize=True, atol=OBJECTIVE_RTOL)  # same model, other order: a tie
    state, batch = states[chosen], stats[chosen]
    eta = step_size(t, learning_decay, learning_offset)
    blended = blend(running, batch, eta)
    # the M-step sees the running statistics as the rows behind them: the batch's weight, and as much per row
    # for the rows seen before (and those rows as its rows: collapse thresholds count rows, whatever the weights).
    # Tiny weights times the power of two fit's rescale_weights takes (exact; 1 for a batch rescaled already):
    # the M-step's 10 eps added to each component's sum swamped sums near 1e-12, the step is the same for any scale
    behind = batch.weight * (1.0 + rows_seen / batch.rows) if batch.rows else batch.weight
    behind *= tiny_weight_factor(batch.weight, batch.rows)
    rows = int(batch.rows) + int(rows_seen)
    counts = None if blended.counts is None else _frozen(share_of_rows(blended) * rows)
    new = state.update(scale_stats(blended, behind, worst=batch.worst, rows=rows, counts=counts))
    return OnlineStep(new, blended, float(objectives[chosen]), eta, int(batch.rows), float(batch.weight), seconds,
                      chosen)


