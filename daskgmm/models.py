"""Model states the EM loop advances: what each model asks of a pass, and its M-step.

Pure NumPy. The loop in :mod:`daskgmm.em` treats every state alike through four
methods: ``spec(centre)`` (what a pass must compute for it), ``update(stats)``
(the M-step), ``objective(stats)`` (the number recorded per iteration) and
``converged(new, change)``. A Gaussian mixture, its hard-assignment and
means-only variants, and k-means differ only here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from daskgmm.kernels import ModelSpec, SuffStats, kmeans_natural_params
from daskgmm.kernels import covariance as cov


def _f64(a):
    return None if a is None else np.asarray(a, dtype=np.float64)


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

    def __post_init__(self):
        # one memory layout for every parameter array: after an M-step precisions_cholesky
        # has transposed strides, a checkpoint reloads it C-contiguous, and the kernels give
        # other bits for the two layouts; normalised here, a resumed fit is bit-exact
        for name in ("weights", "means", "covariances", "precisions_cholesky"):
            value = getattr(self, name)
            if isinstance(value, np.ndarray) and not value.flags.c_contiguous:
                object.__setattr__(self, name, np.ascontiguousarray(value))

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    # -- construction -----------------------------------------------------
    @classmethod
    def from_covariances(cls, weights, means, covariances, covariance_type, **kw) -> MixtureState:
        eps_dtype = np.dtype(kw.get("eps_dtype", np.float64))
        prec_chol = cov.precisions_cholesky(
            covariances, covariance_type, reg_covar=kw.get("reg_covar"), float32=eps_dtype == np.float32
        )
        return cls(_f64(weights), _f64(means), _f64(covariances), prec_chol, covariance_type, **kw)

    # -- the loop's interface ---------------------------------------------
    def spec(self, centre, n_worst: int = 0) -> ModelSpec:
        args = (self.weights, self.means, self.precisions_cholesky, self.covariance_type, centre)
        nat = cov.natural_params(*args)
        precise = None
        if cov.precise_needed(self.means, self.precisions_cholesky, self.covariance_type, centre, self.eps_dtype):
            precise = cov.per_component(*args)
        if self.on_collapse == "reinit":
            n_worst = max(n_worst, self.n_components)
        marginal = None
        if self.missing == "marginalize":
            marginal = precise if precise is not None else cov.per_component(*args)
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
        nk, means, covs = cov.estimate_parameters(stats, self.reg_covar, self.eps_dtype)
        up = self.update_params
        weights = nk / nk.sum() if "w" in up else self.weights
        means = means if "m" in up else self.means
        events = ()
        if "c" not in up:
            return replace(self, weights=weights, means=means, events=events)
        bad = ()
        if self.on_collapse == "reinit" and self.covariance_type != "tied":
            bad = cov.collapsed_components(covs, stats.n, self.covariance_type)
        if len(bad):
            weights, means, covs, prec_chol, events = self._reinit(stats, bad, weights, means, covs)
        else:
            prec_chol = cov.precisions_cholesky(
                covs, self.covariance_type, reg_covar=self.reg_covar,
                float32=self.eps_dtype == np.float32,
            )
        return replace(
            self, weights=weights, means=means, covariances=covs,
            precisions_cholesky=prec_chol, events=events,
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
        # average covariance of the healthy ones and an equal share of weight.
        covs = covs.copy()
        means = means.copy()
        weights = weights.copy()
        avg_cov = covs[good].mean(axis=0)
        events = []
        for j, comp in enumerate(bad):
            if j < len(points):
                means[comp] = points[j]
            covs[comp] = avg_cov
            weights[comp] = 1.0 / k
            where = f"row {int(worst.rows[j])}" if j < len(points) else "its old mean"
            events.append(f"component {int(comp)} collapsed; re-seeded at {where}")
        weights = weights / weights.sum()
        prec_chol = cov.precisions_cholesky(covs, ct, reg_covar=self.reg_covar)
        return weights, means, covs, prec_chol, tuple(events)


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
        scikit-learn does (needs the pass to return the worst rows).
    """

    centers: np.ndarray
    tol: float = 0.0
    relocate_empty: bool = True
    events: tuple = ()
    shift: float = np.inf  # summed squared move of the centres in the update that made this state

    @property
    def n_components(self) -> int:
        return self.centers.shape[0]

    def spec(self, centre, n_worst: int = 0) -> ModelSpec:
        n_worst = max(n_worst, self.n_components if self.relocate_empty else 0)
        return ModelSpec(
            kmeans_natural_params(self.centers - centre), "spherical", "hard", n_worst=n_worst
        )

    objective_name = "inertia"

    def objective(self, stats: SuffStats) -> float:
        """Inertia: the weighted sum of squared distances to the nearest centre."""
        return -stats.loglik

    def converged(self, new: KMeansState, change: float) -> bool:
        shift = float(((new.centers - self.centers) ** 2).sum())
        return shift <= self.tol

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
            # values are -distance, ascending: the rows off their centres come first
            take = min(int(np.count_nonzero(worst.values < 0)), empty.size)
            pts, wts = worst.points[:take], worst.weights[:take]
            if hasattr(pts, "toarray"):  # sparse rows (daskgmm.kernels.sparse.SparseWorstRows): a few, dense now
                pts = pts.toarray()
            d2 = ((pts[:, None, :] - self.centers[None, :, :]) ** 2).sum(axis=2)
            old = d2.argmin(axis=1)  # the cluster each row was assigned to in this pass
            for c, p, w, o in zip(empty[:take], pts, wts, old):
                s1[o] -= (p - shift[o]) * w
                n[o] -= w
                s1[c] = (p - shift[c]) * w
                n[c] = w
            events = tuple(
                f"cluster {int(c)} was empty; moved to row {int(r)}" for c, r in zip(empty[:take], worst.rows[:take])
            )
        centers = self.centers.copy()
        full = n > 0
        centers[full] = shift[full] + s1[full] / n[full, None]
        return replace(self, centers=centers, events=events, shift=float(((centers - self.centers) ** 2).sum()))
