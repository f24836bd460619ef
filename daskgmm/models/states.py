"""Model states the EM loop advances: what each model asks of a pass, and its M-step.

Pure NumPy. The loop in :mod:`daskgmm.em.loop` treats every state alike through four
methods: ``spec(centre)`` (what a pass must compute for it), ``update(stats)``
(the M-step), ``objective(stats)`` (the number recorded per iteration) and
``converged(new, change)``. A Gaussian mixture, its hard-assignment and
means-only variants, and k-means differ only here. K-medoids, whose pass is not the
mixtures' (:mod:`daskgmm.kernels.medoids`), gives ``request(centre)`` instead of ``spec``.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np

from daskgmm.kernels import ModelSpec, SuffStats, kmeans_natural_params
from daskgmm.kernels import covariance as cov
from daskgmm.kernels import params as forms
from daskgmm.kernels.medoids import Dissimilarity, DissimilarityError, MedoidRequest, MedoidStats


def _f64(a):
    return None if a is None else np.asarray(a, dtype=np.float64)


#: Why ``on_collapse="reinit"`` leaves a collapse alone when ``update_params`` holds the means fixed.
FIXED_MEANS_REASON = ('on_collapse="reinit" cannot cure it, as update_params holds the means fixed: a re-seed '
                      "cannot move a fixed mean, and the E-step puts the component back on the same rows")


def reinit_judges(on_collapse: str, covariance_type: str, update_params: str = "wmc") -> bool:
    """``on_collapse="reinit"`` looks for collapsed components after an M-step: per-component covariances
    updated with the means (with the means held fixed a re-seed gives a covariance only, and the next E-step
    puts the component back on the rows about its fixed mean: it cannot cure the collapse, and it was
    re-seeded at every iteration; the collapse is then the M-step's, its error or the fit's warning)."""
    return (on_collapse == "reinit" and cov.of(covariance_type).per_component and "m" in update_params
            and "c" in update_params)


@contextmanager
def _collapse_hint(on_collapse: str, covariance_type: str, update_params: str = "wmc"):
    """A collapse error of a Gaussian EM fit that could have re-seeded the component says how; one that
    ``on_collapse="reinit"`` could not re-seed (its mean held fixed) says why."""
    try:
        yield
    except ValueError as e:
        if not cov.of(covariance_type).per_component or "ill-defined" not in str(e):
            raise
        if on_collapse == "raise":
            raise ValueError(f'{e} on_collapse="reinit" re-seeds a collapsed component and goes on.') from None
        if "m" not in update_params:
            raise ValueError(f"{e} {FIXED_MEANS_REASON}.") from None
        # reinit got here only when no component was left to lend its covariance: at the start, every one
        raise ValueError(f'{e} on_collapse="reinit" gives a collapsed component the healthy ones\' mean '
                         "covariance, and none was healthy: increase reg_covar, or start from "
                         'init_params="kmeans" ("k-means++" and "random_from_data" put each component on one '
                         "row).") from None


@dataclass(frozen=True)
class MixtureState:
    """Parameters of one Gaussian mixture, and how to update them.

    Attributes
    ----------
    weights : ndarray, shape (K,)
    means : ndarray, shape (K, D)
    covariances : ndarray or None
        In the shape of ``covariance_type`` (None only when the model was
        initialised from precisions).
    precisions_cholesky : ndarray
    covariance_type : str
    reg_covar : float
    tol : float
        Convergence threshold on the change of the mean log-likelihood.
    eps_dtype : numpy dtype
        The data dtype (sets scikit-learn's ``10 * eps`` guard and error hints).
    assignment : {"soft", "hard"}
    update_params : str
        Which of weights (w), means (m), covariances (c) the M-step updates.
    on_collapse : {"raise", "reinit"}
        "reinit" re-seeds a collapsed component (see :func:`daskgmm.kernels.covariance.collapsed_components`)
        at a worst-explained row instead of failing.
    events : tuple of str
        What the last update did besides the M-step (e.g. a re-seeded component).
    missing : {"raise", "marginalize"}
        "marginalize": rows with NaN are scored by the marginal density of their
        observed features and enter the M-step with the conditional expectations
        of the missing ones (EM for incomplete data).
    rows : ndarray of shape (K,) or None
        Each component's rows behind the last update (``SuffStats.n_rows``), None before one: with
        the weights held fixed these, not the weights, say how many rows a component has.
    weight_scale : float
        A power of two the M-step multiplies the statistics by (exact): the fit is the same for any scale
        of the weights, but scikit-learn's ``10 eps`` added to each component's weight sum swamps tiny
        ones. For passes whose weights are not scaled already (``ChunkedData.rescale_weights``):
        ``select_model``'s gaussian candidates, whose passes serve variational ones, which see the scale.
    """

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray | None
    precisions_cholesky: np.ndarray
    covariance_type: str
    reg_covar: float = 1e-6
    tol: float = 1e-3
    eps_dtype: np.dtype = field(default=np.dtype(np.float64))
    assignment: str = "soft"
    update_params: str = "wmc"
    on_collapse: str = "raise"
    events: tuple = ()
    missing: str = "raise"
    rows: np.ndarray | None = None
    weight_scale: float = 1.0

    def __post_init__(self):
        # one memory layout for every parameter array: after an M-step precisions_cholesky
        # has transposed strides, a checkpoint reloads it C-contiguous, and the kernels give
        # other bits for the two layouts; normalised here, a resumed fit is bit-exact
        for name in ("weights", "means", "covariances", "precisions_cholesky", "rows"):
            value = getattr(self, name)
            if isinstance(value, np.ndarray) and not value.flags.c_contiguous:
                object.__setattr__(self, name, np.ascontiguousarray(value))

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def counts_rows(self) -> bool:
        """The M-step judges a collapse (``on_collapse="reinit"``, :meth:`update`): on weighted data the pass
        counts each component's rows for it (:attr:`SuffStats.counts`; :func:`daskgmm.em.loop.one_pass`), as
        the warning at the end of a fit does (:func:`daskgmm.fitting.mixture.component_rows`)."""
        return reinit_judges(self.on_collapse, self.covariance_type, self.update_params)

    # -- construction -----------------------------------------------------
    @classmethod
    def from_covariances(cls, weights, means, covariances, covariance_type, **kw) -> MixtureState:
        eps_dtype = np.dtype(kw.get("eps_dtype", np.float64))
        with _collapse_hint(kw.get("on_collapse", "raise"), covariance_type):
            prec_chol = cov.precisions_cholesky(
                covariances, covariance_type, reg_covar=kw.get("reg_covar"), float32=eps_dtype == np.float32
            )
        return cls(_f64(weights), _f64(means), _f64(covariances), prec_chol, covariance_type, **kw)

    # -- the loop's interface ---------------------------------------------
    def spec(self, centre, n_worst: int = 0) -> ModelSpec:
        args = (self.weights, self.means, self.precisions_cholesky, self.covariance_type, centre)
        nat = forms.natural_params(*args)
        precise = None
        if forms.precise_needed(self.means, self.precisions_cholesky, self.covariance_type, centre, self.eps_dtype):
            precise = forms.per_component(*args)
        if self.on_collapse == "reinit":
            n_worst = max(n_worst, self.n_components)
        marginal = None
        if self.missing == "marginalize":
            marginal = precise if precise is not None else forms.per_component(*args)
        return ModelSpec(nat, self.covariance_type, self.assignment, n_worst=n_worst, precise=precise,
                         marginal=marginal)

    #: what :meth:`objective` is, for progress lines
    objective_name = "loglik"

    def objective(self, stats: SuffStats) -> float:
        """Mean log-likelihood per sample (scikit-learn's lower bound)."""
        return stats.loglik / stats.weight if stats.weight > 0 else -np.inf

    def converged(self, new: MixtureState, change: float) -> bool:
        return abs(change) < self.tol

    def update(self, stats: SuffStats) -> MixtureState:
        """M-step. Raises ValueError naming collapsed components (``on_collapse="raise"``)."""
        if self.weight_scale != 1.0:
            stats = stats.scaled(self.weight_scale)
        nk, means, covs = cov.estimate_parameters(stats, self.reg_covar, self.eps_dtype)
        up = self.update_params
        weights = nk / nk.sum() if "w" in up else self.weights
        events = ()
        rows = np.array(stats.n_rows, dtype=np.float64)
        if "c" not in up:
            return replace(self, weights=weights, means=means if "m" in up else self.means, events=events, rows=rows)
        if "m" not in up:  # Σ's M-step for the fixed means is the scatter about them, not about the new ones
            covs = cov.covariances_about_fixed_means(covs, stats.n, nk, means - self.means, self.covariance_type)
            means = self.means
        bad = ()
        if self.counts_rows:
            # rows, not weights (stats.counts on weighted data)
            bad = cov.collapsed_components(covs, stats.n_rows, self.covariance_type)
        if len(bad):
            weights, means, covs, prec_chol, events = self._reinit(stats, bad, weights, means, covs)
        else:
            with _collapse_hint(self.on_collapse, self.covariance_type, up):
                prec_chol = cov.precisions_cholesky(
                    covs, self.covariance_type, reg_covar=self.reg_covar,
                    float32=self.eps_dtype == np.float32,
                )
        return replace(
            self, weights=weights, means=means, covariances=covs,
            precisions_cholesky=prec_chol, events=events, rows=rows,
        )

    def _reinit(self, stats: SuffStats, bad, weights, means, covs):
        """Re-seed collapsed components at the worst-explained rows."""
        k = self.n_components
        ct = self.covariance_type
        good = np.setdiff1d(np.arange(k), bad)
        if good.size == 0:
            raise ValueError(
                "every component collapsed; increase reg_covar or decrease n_components"
            )
        worst = stats.worst
        points = worst.points if worst is not None else np.zeros((0, means.shape[1]))
        # A collapsed component restarts at a poorly explained row, with the
        # average covariance of the healthy ones and an equal share of weight;
        # a mean or weight update_params holds fixed stays as it is.
        up = self.update_params
        weights, covs = reseed_collapsed(weights, covs, bad, "w" in up)
        means = means.copy()
        events = []
        for j, comp in enumerate(bad):
            moved = j < len(points) and "m" in up
            if moved:
                means[comp] = points[j]
            where = f"row {int(worst.rows[j])}" if moved else "its fixed mean" if "m" not in up else "its old mean"
            events.append(f"component {int(comp)} collapsed; re-seeded at {where}")
        prec_chol = cov.precisions_cholesky(covs, ct, reg_covar=self.reg_covar)
        return weights, means, covs, prec_chol, tuple(events)


def reseed_collapsed(weights, covariances, bad, share_weight: bool = True):
    """``(weights, covariances)`` with the collapsed components ``bad`` given the healthy ones' mean
    covariance and, with ``share_weight`` (the weights not held fixed), an equal share of weight
    (``1 / K``, then every weight renormalised): a re-seed's, at the start as in an iteration."""
    good = np.setdiff1d(np.arange(len(weights)), bad)
    covariances, weights = covariances.copy(), np.array(weights, dtype=np.float64)
    covariances[bad] = covariances[good].mean(axis=0)
    if share_weight:
        weights[bad] = 1.0 / len(weights)
    return weights / weights.sum(), covariances


@dataclass(frozen=True)
class KMeansState:
    """Centres of one k-means model (Lloyd's algorithm in the same loop).

    Attributes
    ----------
    centers : ndarray, shape (K, D)
    tol : float
        Absolute threshold on the summed squared centre shift (scikit-learn's
        ``tol`` times the mean feature variance).
    relocate_empty : bool
        Move empty clusters onto the rows farthest from their centres, as
        scikit-learn does (needs the pass to return the worst rows: the loop asks
        for them by a second pass with the same centres when a cluster comes back
        empty, :meth:`needs_worst`).
    bounds : str or None
        The key of the rows' bounds the passes keep (:attr:`daskgmm.kernels.ModelSpec.bounds`).
    precise : bool
        The passes take each row's distance to each centre from their difference (the per-component form,
        :func:`daskgmm.kernels.params.kmeans_precise`; NumPy, no bounds), where the scan found rows far from the
        others: their distance to their own centre by the expansion is its noise (about 1e24 at a fill value of
        1e20), which swamped the inertia the restarts are compared by, and the statistics are taken about each
        centre.
    """

    centers: np.ndarray
    tol: float = 0.0
    relocate_empty: bool = True
    bounds: str | None = None
    precise: bool = False
    events: tuple = ()
    shift: float = np.inf  # summed squared move of the centres in the update that made this state
    # precise: each centre's squared move that the update's rounding alone makes (None: not precise, or no update)
    noise: np.ndarray | None = None

    @property
    def n_components(self) -> int:
        return self.centers.shape[0]

    def spec(self, centre, n_worst: int = 0) -> ModelSpec:
        # no worst rows by default: keeping them costs every block of every pass (~4.5 ms of CPU per
        # 1M rows, 15% of the compiled k-means pass), and they serve only a pass that empties a cluster
        if self.precise:
            return ModelSpec(kmeans_natural_params(self.centers - centre), "spherical", "hard", n_worst=n_worst,
                             precise=forms.kmeans_precise(self.centers, centre))
        return ModelSpec(
            kmeans_natural_params(self.centers - centre), "spherical", "hard", n_worst=n_worst, bounds=self.bounds
        )

    def needs_worst(self, stats: SuffStats) -> int:
        """How many worst rows the pass that gave ``stats`` must return for :meth:`update` (0: none):
        the number of clusters when one is empty and relocation is on, and the pass returned none.
        The loop then asks a pass with the same centres for them (the same rows)."""
        if self.relocate_empty and stats.worst is None and bool(np.any(stats.n <= 0)):
            return self.n_components
        return 0

    objective_name = "inertia"

    def objective(self, stats: SuffStats) -> float:
        """Inertia: the weighted sum of squared distances to the nearest centre.

        Raises
        ------
        ValueError
            Not finite: of finite rows (validation refuses others), the squared distances overflowed the
            rows' floating-point type (float32's at values near 1e19, float64's near 1e154; each row would go
            to one cluster and the inertia read 0)."""
        if not np.isfinite(stats.loglik):
            # k-means' state serves KMeans and the k-means start of every mixture, on rows of either type
            raise ValueError(f"k-means: the inertia is not finite ({-stats.loglik}): the squared distances "
                             "overflow the rows' floating-point type (float32 holds squares up to 3.4e38, "
                             "reached by values near 1e19; float64 up to 1.8e308, near 1.3e154); fit float32 "
                             "rows as float64 (X.astype(np.float64)), or rescale the features")
        return -2.0 * stats.loglik if self.precise else -stats.loglik  # the per-component logits: -‖x - c‖² / 2

    def converged(self, new: KMeansState, change: float) -> bool:
        squares = (new.centers - self.centers) ** 2
        if float(squares.sum()) <= self.tol:
            return True
        # the per-component update (c + Σ (x - c) / n) has no exact fixed point: with the same rows, a centre moves
        # by an ulp or so each step, and tol=0 ran to max_iter; a step that moved every centre by its rounding only
        # is converged (scikit-learn's strict convergence: the labels did not change)
        return new.noise is not None and bool(np.all(squares.sum(axis=1) <= new.noise))

    def update(self, stats: SuffStats) -> KMeansState:
        """Lloyd's update; empty clusters move onto the rows farthest from their centres.

        As scikit-learn relocates them: the ``e`` empty clusters take the ``e``
        rows farthest from their (old) centres, one each, and every such row
        leaves the cluster it was assigned to, whose mean is taken without it.
        A row on its centre (distance exactly 0) is not taken: moving it cannot lower the
        inertia, only empty its cluster in turn (fewer distinct points than clusters).
        """
        n = stats.n.copy()
        s1 = stats.s1.copy()  # Σ w (x - shift), kept about the shift so that large offsets stay exact
        shift = np.broadcast_to(stats.shift, self.centers.shape)
        empty = np.flatnonzero(n <= 0)
        events = ()
        if empty.size and self.relocate_empty and stats.worst is not None:
            worst = stats.worst
            pts = worst.points
            if hasattr(pts, "toarray"):  # sparse rows (daskgmm.kernels.sparse.SparseWorstRows): a few, dense now
                pts = pts.toarray()
            # the pass found the candidates (its values are -distance by the expansion ‖x‖² - 2 x·c + ‖c‖²,
            # which leaves ~eps ‖x‖² on a row that sits on its centre); their distances are taken again
            # here as scikit-learn takes them, from the differences: farthest first, ties by row number
            d2 = ((pts[:, None, :] - self.centers[None, :, :]) ** 2).sum(axis=2)
            old = d2.argmin(axis=1)  # the cluster each row was assigned to in this pass
            far = d2[np.arange(len(old)), old]
            order = np.lexsort((worst.rows, -far))
            order = order[far[order] > 0][: empty.size]
            for c, j in zip(empty, order):
                p, w, o = pts[j], worst.weights[j], old[j]
                s1[o] -= (p - shift[o]) * w
                n[o] -= w
                s1[c] = (p - shift[c]) * w
                n[c] = w
            events = tuple(
                f"cluster {int(c)} was empty; moved to row {int(worst.rows[j])}" for c, j in zip(empty, order)
            )
        centers = self.centers.copy()
        full = n > 0
        centers[full] = shift[full] + s1[full] / n[full, None]
        noise = None
        if self.precise and not events and np.ndim(stats.s2) == 1:
            # rounding of a mean of differences: a few eps of the rows' spread about the centre and of its size
            spread = np.where(full, np.asarray(stats.s2, np.float64) / np.where(full, n, 1.0), 0.0)
            noise = (16 * np.finfo(np.float64).eps) ** 2 * (spread + (centers**2).sum(axis=1))
        return replace(self, centers=centers, events=events, shift=float(((centers - self.centers) ** 2).sum()),
                       noise=noise)


#: Objectives of runs (mean log-likelihood, inertia) closer than this to the best, relative to
#: its magnitude, are a tie when choosing among runs. Runs that reach the same solution (in
#: another order of components) differ only by rounding, and rounding depends on the chunking
#: and on the BLAS kernel; far above it (~1e-15), far below any difference that matters.
OBJECTIVE_RTOL = 1e-9


def first_best(objectives, *, maximize: bool, atol: float = 0.0) -> int:
    """Index of the first run whose objective is the best up to rounding.

    scikit-learn keeps the first of equal objectives; here runs within
    ``OBJECTIVE_RTOL · |best| + atol`` of the best count as equal, so that
    which of the runs that found the same solution is kept depends on the
    data and the seeds only, not on the chunking or the CPU's BLAS kernel.

    Parameters
    ----------
    objectives : sequence of float, length n_runs (at least one)
    maximize : bool
        True for a lower bound, False for an inertia.
    atol : float
        Absolute part of the tie (for objectives near zero on an absolute scale,
        such as a mean log-likelihood).

    Returns
    -------
    int
        With a non-finite objective among them, the plain rule: the first of the
        largest (``maximize``) or smallest, as ``numpy.argmax``/``argmin`` choose.
    """
    v = np.asarray(objectives, dtype=np.float64)
    v = v if maximize else -v
    if not np.all(np.isfinite(v)):
        return int(np.argmax(v))
    top = float(v.max())
    return int(np.flatnonzero(v >= top - (OBJECTIVE_RTOL * abs(top) + atol))[0])


#: Candidates per cluster a k-medoids pass weighs: the pool's rows of that cluster nearest its medoid.
MEDOID_CANDIDATES = 64


@dataclass(frozen=True)
class KMedoidsState:
    """Medoids of one k-medoids model (rows of the data), and the candidates its next pass weighs.

    The candidates of cluster k are rows of ``pool`` (the first scan's sample: the whole data
    when it is small) among those nearest to medoid k, at most ``n_candidates``, its medoid among
    them: the nearest to it for an alternate pass, spread over the cluster (below) for a swap pass,
    which is every pass of "pam". A pass sums, for every candidate, what it would cost
    (:class:`daskgmm.kernels.medoids.MedoidRequest`); the update takes, per cluster, the
    candidate of least cost ("alternate", Park & Jun's step), or the single swap of a medoid
    for a candidate that lowers the loss most ("pam", FasterPAM's gains).

    "alternate" ends with swap passes: once no medoid moves, a pass weighs FasterPAM's swap
    gains of every medoid against candidates spread over each cluster (half its nearest rows,
    half at even steps of distance rank beyond them) and makes the best improving swap, pass
    after pass; when a swap pass finds none after swaps, the alternate step runs again. It has
    converged when a swap pass that follows an alternate pass without a move finds no swap. The alternate
    step only moves a medoid inside its own cluster, so where clusters are not separated it
    stops where its start left the partition (on an 8-D normal cloud, cosine: 1.5% above
    FasterPAM's loss, from the start on 3,000 sampled rows); the swaps move the partition.

    Attributes
    ----------
    medoids : ndarray, shape (K, D)
    medoid_rows : ndarray of int64, shape (K,)
        Their global row numbers.
    pool, pool_rows : ndarray, shape (S, D) and (S,)
        The rows candidates are drawn from, and their global row numbers.
    pool_dist : ndarray, shape (S, K)
        Dissimilarities of the pool to the medoids (kept: only a changed medoid's column is recomputed).
    candidates, candidate_rows, cluster : ndarray, shape (m, D), (m,), (m,)
        The candidates of the next pass and the cluster each stands for.
    metric : str or callable
    metric_centre, metric_transform : ndarray or None
        See :class:`daskgmm.kernels.medoids.Dissimilarity`.
    method : {"alternate", "pam"}
    n_candidates : int
    changed : bool
        Whether the update that made this state moved a medoid or changed its phase (False: converged).
    phase : {"alternate", "swap"}
        The next pass's table under ``method="alternate"``: the alternate costs, or the swap gains.
    swapped : bool
        The swap passes since the last alternate pass made a swap (then, when they find no more,
        the alternate step runs again rather than the fit ending).
    events : tuple of str
    """

    medoids: np.ndarray
    medoid_rows: np.ndarray
    pool: np.ndarray
    pool_rows: np.ndarray
    pool_dist: np.ndarray
    candidates: np.ndarray
    candidate_rows: np.ndarray
    cluster: np.ndarray
    metric: object = "euclidean"
    metric_centre: np.ndarray | None = None
    metric_transform: np.ndarray | None = None
    method: str = "alternate"
    n_candidates: int = MEDOID_CANDIDATES
    changed: bool = True
    phase: str = "alternate"
    swapped: bool = False
    events: tuple = ()

    @property
    def n_components(self) -> int:
        return self.medoids.shape[0]

    @property
    def dissimilarity(self) -> Dissimilarity:
        return Dissimilarity(self.metric, self.metric_centre, self.metric_transform)

    @classmethod
    def start(cls, medoids, medoid_rows, pool, pool_rows, dissimilarity: Dissimilarity, *, method="alternate",
              n_candidates=MEDOID_CANDIDATES) -> KMedoidsState:
        """The state at ``medoids`` (rows ``medoid_rows``), with the candidates of its first pass."""
        medoids = np.asarray(medoids, np.float64)
        pool = np.asarray(pool, np.float64)
        dist = dissimilarity.pairwise(pool, medoids) if len(pool) else np.zeros((0, len(medoids)))
        return cls._with_candidates(
            medoids=medoids, medoid_rows=np.asarray(medoid_rows, np.int64), pool=pool,
            pool_rows=np.asarray(pool_rows, np.int64), pool_dist=dist, metric=dissimilarity.metric,
            metric_centre=dissimilarity.centre, metric_transform=dissimilarity.transform, method=method,
            n_candidates=int(n_candidates))

    @classmethod
    def _with_candidates(cls, **fields) -> KMedoidsState:
        """The state with the candidates its fields imply (the pool's rows nearest each medoid)."""
        medoids, rows, pool_rows, dist = fields["medoids"], fields["medoid_rows"], fields["pool_rows"], \
            fields["pool_dist"]
        k, n_cand = len(medoids), fields["n_candidates"]
        # swap passes (every pass of "pam") weigh rows across each cluster: from the nearest alone no swap
        # reaches rows the start left in another medoid's cluster, far from it (a small far cluster)
        spread = fields.get("phase", "alternate") == "swap" or fields["method"] == "pam"
        near = np.argmin(dist, axis=1) if len(dist) else np.zeros(0, np.int64)
        cand, cand_rows, cluster = [], [], []
        for j in range(k):
            mine = np.flatnonzero((near == j) & (pool_rows != rows[j]))
            # nearest first, ties by row number: the same candidates for any chunking
            order = mine[np.lexsort((pool_rows[mine], dist[mine, j]))]
            want = max(0, n_cand - 1)
            if spread and len(order) > want:
                # a swap may move a medoid anywhere in its cluster: half the nearest, half at even rank steps
                near_part = want // 2
                steps = np.linspace(near_part, len(order) - 1, want - near_part).round().astype(np.int64)
                order = order[np.concatenate([np.arange(near_part), np.unique(steps)])]
            else:
                order = order[:want]
            cand.append(np.vstack([medoids[j : j + 1], fields["pool"][order]]))
            cand_rows.append(np.concatenate([rows[j : j + 1], pool_rows[order]]))
            cluster.append(np.full(len(order) + 1, j, np.int64))
        return cls(**fields, candidates=np.vstack(cand), candidate_rows=np.concatenate(cand_rows),
                   cluster=np.concatenate(cluster))

    def request(self, centre) -> MedoidRequest:
        swap = self.method == "pam" or self.phase == "swap"
        mode = "swap" if swap and self.n_components > 1 else "alternate"
        return MedoidRequest(self.dissimilarity, self.medoids, self.candidates, self.cluster, mode)

    #: what :meth:`objective` is, for progress lines
    objective_name = "inertia"

    def objective(self, stats: MedoidStats) -> float:
        """The loss: the sum of every row's dissimilarity to its nearest medoid."""
        return float(stats.loss)

    def converged(self, new: KMedoidsState, change: float) -> bool:
        return not new.changed

    def update(self, stats: MedoidStats) -> KMedoidsState:
        """Per cluster the candidate of least cost ("alternate"), or the best improving swap ("pam", and
        "alternate"'s swap passes).

        A medoid moves only for a decrease of the loss beyond rounding, so equal costs keep it where it is.
        """
        k = self.n_components
        if any(a is not None and np.isnan(a).any() for a in (stats.loss, stats.cost, stats.removal, stats.plus,
                                                              stats.table)):
            raise DissimilarityError(f"metric {self.dissimilarity.name!r} gave NaN between a row of X and a medoid or "
                             f"a candidate (medoids: rows {', '.join(map(str, self.medoid_rows))}): a "
                             "dissimilarity must be a number for every pair of rows")
        medoids, rows = self.medoids.copy(), self.medoid_rows.copy()
        events = [f"cluster {j} is empty" for j in np.flatnonzero(stats.counts == 0)]
        tol = 1e-12 * max(abs(stats.loss), 1e-300)
        moved = []
        if stats.table is not None:  # pam: one swap, the one that lowers the loss most
            gains = stats.swap_gains()
            gains[:, np.isin(self.candidate_rows, rows)] = np.inf
            if gains.size and np.isfinite(gains).any():
                j, c = np.unravel_index(int(np.argmin(gains)), gains.shape)
                if gains[j, c] < -tol:
                    moved.append((int(j), int(c), float(gains[j, c])))
        else:  # alternate: every cluster to its candidate of least cost (its medoid is candidate 0 of its group)
            for j in range(k):
                idx = np.flatnonzero(self.cluster == j)
                if idx.size == 0 or stats.counts[j] == 0:
                    continue
                best = idx[int(np.argmin(stats.cost[idx]))]
                if stats.cost[best] < stats.cost[idx[0]] - tol:
                    moved.append((j, int(best), float(stats.cost[best] - stats.cost[idx[0]])))
        for j, c, delta in moved:
            events.append(f"medoid {j}: row {int(rows[j])} -> row {int(self.candidate_rows[c])} "
                          f"(loss {delta:+.6g})")
            medoids[j] = self.candidates[c]
            rows[j] = self.candidate_rows[c]
        dist = self.pool_dist
        if moved:
            dist = dist.copy()
            cols = sorted({j for j, _, _ in moved})
            if len(self.pool):
                dist[:, cols] = self.dissimilarity.pairwise(self.pool, medoids[cols])
        fields = {f: getattr(self, f) for f in ("pool", "pool_rows", "metric", "metric_centre", "metric_transform",
                                                 "method", "n_candidates")}
        changed, phase, swapped = bool(moved), "alternate", False
        if self.method == "alternate" and k > 1:
            if stats.table is None:  # an alternate pass: when it moved nothing, swap passes follow
                if not moved:
                    changed, phase = True, "swap"
                    events.append("no medoid moves: swap passes")
            elif moved:  # swap again
                phase, swapped = "swap", True
            elif self.swapped:  # no more swaps: the alternate step again, at the medoids the swaps left
                changed = True
        return KMedoidsState._with_candidates(medoids=medoids, medoid_rows=rows, pool_dist=dist, changed=changed,
                                              phase=phase, swapped=swapped, events=tuple(events), **fields)
