"""The Student-t mixture request: E-step weights and M-step statistics of many t mixtures in one pass.

A multivariate t component with location ``μ``, scale ``Σ = (U Uᵀ)⁻¹`` and ``nu`` degrees of
freedom has the log-density

    log Γ((nu + D)/2) - log Γ(nu/2) - D/2 log(nu π) + log det U - (nu + D)/2 log(1 + δ²/nu),

where ``δ² = (x - μ)ᵀ U Uᵀ (x - μ)`` is linear in the same features ``T(x) = [quadratic terms,
x, 1]`` as a Gaussian log-density (:mod:`daskgmm.kernels.features`). So the Mahalanobis
distances of every component of every model come from one GEMM per block (``Θ·T``); the
t log-density, the responsibilities ``r`` and the weights ``u = (nu + D)/(nu + δ²)`` (the
E-step of the Gaussian scale mixture, McLachlan & Peel 2000, ch. 7) follow row by row; and
the M-step statistics are the moments with weights ``r·u`` (one more GEMM, ``(r·u) Tᵀ``),
``Σ r`` and ``Σ r (log u - u + 1)`` for the degrees of freedom. A model badly conditioned
for the shared features (tight components far from the centre) takes the per-component
path, as a Gaussian one does: ``δ²`` from ``Uᵀ (x - μ_k)`` and the moments about each
component's location.

The constants (``log Γ``) are computed by the caller (the model state, on the client), so
that the workers import no SciPy. The NumPy steps here are the reference; where the compiled
core runs the pass and no model needs the per-component path, :class:`StudentTRequest` hands
each block to it (:class:`daskgmm.kernels.compiled.FusedStudentT`). Nothing here knows about Dask.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np

import daskgmm.kernels.covariance as cov
from daskgmm.kernels import compiled
from daskgmm.kernels.features import n_quad_rows
from daskgmm.kernels.missing import marginal_distances
from daskgmm.kernels.params import NaturalParams, PerComponent
from daskgmm.kernels.protocol import Block, without_empty_rows
from daskgmm.kernels.requests import PreciseApart, add_completed, add_model_moments, model_products
from daskgmm.kernels.responsibilities import soft_responsibilities
from daskgmm.kernels.results import SuffStats, frozen
from daskgmm.kernels.scratch import scratch


def mahalanobis_params(means, prec_chol, covariance_type, centre) -> NaturalParams:
    """``δ²_k(x) = (x - μ_k)ᵀ P_k (x - μ_k)`` as quadratic forms of the centred row.

    Parameters
    ----------
    means : ndarray, shape (K, D)
    prec_chol : ndarray
        Cholesky factors ``U`` of the precisions (the inverse scales), in the shape of
        ``covariance_type``.
    covariance_type : str
    centre : ndarray, shape (D,)

    Returns
    -------
    NaturalParams
        ``quad = P_k`` (or its diagonal, or the spherical precision), ``lin = -2 P_k m_k``,
        ``const = m_kᵀ P_k m_k`` with ``m_k = μ_k - centre``.
    """
    m = np.asarray(means, dtype=np.float64) - np.asarray(centre, dtype=np.float64)
    prec, pm, mpm = cov.of(covariance_type).quadratic_parts(m, np.asarray(prec_chol, dtype=np.float64))
    return NaturalParams(quad=prec, lin=-2.0 * pm, const=mpm)


@dataclass(frozen=True)
class StudentTForm(PerComponent):
    """Weighted t log-densities in the per-component form (predictions; the precise path of a pass).

    ``logit_k(x) = const[k] - (nu_k + D)/2 · log1p(‖U_kᵀ (x - m_k)‖² / nu_k)``: rows are
    differenced from each location before anything is squared, so no precision is lost
    however far the component lies from the centre. Being a :class:`PerComponent`, it is
    taken wherever the per-component form is (``daskgmm.kernels.predict.component_logits``).

    Attributes
    ----------
    means, factor, covariance_type :
        As in :class:`PerComponent` (locations about the pass centre; precision Cholesky factors).
    const : ndarray, shape (K,)
        ``log π_k + log Γ((nu_k + D)/2) - log Γ(nu_k/2) - D/2 log(nu_k π) + log det U_k``.
    df : ndarray, shape (K,)
        Degrees of freedom ``nu_k``.
    """

    df: np.ndarray

    def squared_distances(self, xT: np.ndarray) -> tuple:
        """``δ²`` (K, nb), float64, of a centred, transposed block, and the differences ``x - m_k`` (K, D, nb)."""
        y, z = self.whitened(xT)
        return np.einsum("kdn,kdn->kn", y, y, dtype=np.float64), z

    def logits(self, xT: np.ndarray, out: np.ndarray):
        """Write the (K, nb) t logits of a centred, transposed block into ``out``; return the differences."""
        d2, z = self.squared_distances(xT)
        out[...] = t_logits(d2, self.df, self.const, xT.shape[0])
        return z


@dataclass(frozen=True)
class StudentTMarginal(PerComponent):
    """A t mixture's log-densities of rows with missing values: the t marginal of their observed features.

    The marginal of a multivariate t over ``d_o`` of its coordinates is a t with the same
    ``nu``, the observed block of the scale ``Σ_oo`` and ``d_o`` dimensions (Liu & Rubin 1995;
    Liu 1997), so a row's logit is

        ``const_by_observed[k, d_o] - ½ log det P_mm - (nu + d_o)/2 · log1p(δ_o / nu)``,

    with ``δ_o`` the observed part's Mahalanobis distance under ``Σ_oo`` and ``P_mm`` the
    missing block of the precision (:func:`daskgmm.kernels.missing.marginal_distances`). Given
    the component and the observed values, the scale weight ``u`` of the Gaussian scale
    mixture has ``E[u] = (nu + d_o)/(nu + δ_o)`` and
    ``E[log u] = log E[u] + ψ((nu + d_o)/2) - log((nu + d_o)/2)``; the missing values given
    ``u`` are Gaussian about the conditional mean ``x̂`` (which does not depend on ``u``) with
    covariance ``P_mm⁻¹ / u``, so ``E[u x] = E[u] x̂`` and ``E[u x xᵀ] = E[u] x̂ x̂ᵀ + P_mm⁻¹``.

    Attributes
    ----------
    means, factor, covariance_type :
        As in :class:`PerComponent` (locations about the pass centre; precision Cholesky factors).
    const : ndarray, shape (K,)
        The complete rows' constant (``const_by_observed[:, D]``).
    df : ndarray, shape (K,)
    const_by_observed : ndarray, shape (K, D + 1)
        ``log π_k + log Γ((nu_k + d)/2) - log Γ(nu_k/2) - d/2 log(nu_k π) + log det U_k`` for
        ``d`` observed features (column ``d``).
    df_terms : ndarray, shape (K, D + 1)
        ``[ψ(a_d) - log a_d] - [ψ(a_D) - log a_D]`` with ``a_d = (nu_k + d)/2``: what a row with
        ``d`` observed features adds to the degrees of freedom's statistic beyond a complete
        row's ``log u - u + 1`` (the client's digamma; workers import no SciPy).
    """

    df: np.ndarray
    const_by_observed: np.ndarray
    df_terms: np.ndarray

    def marginal_terms(self, x: np.ndarray, exact: bool = False):
        """Logits, ``E[u]``, the degrees of freedom's terms and the completions of rows with missing values.

        Parameters
        ----------
        x : ndarray, shape (n, D)
            Rows about the pass centre, NaN where missing; n > 0.
        exact : bool
            As in :func:`daskgmm.kernels.missing.marginal_logits`.

        Returns
        -------
        logits : ndarray, shape (K, n)
        u : ndarray, shape (K, n)
            ``(nu + d_o)/(nu + δ_o)``.
        h : ndarray, shape (K, n)
            ``log u - u + 1`` with ``d_o`` for ``D``, plus :attr:`df_terms` of the row's ``d_o``.
        completions : list
            For :func:`daskgmm.kernels.missing.completed_moments`.
        """
        x = np.asarray(x, dtype=np.float64)
        q, half, counts, comps = marginal_distances(self, x, exact)
        d_o = x.shape[1] - counts  # (n,)
        nu = np.asarray(self.df, np.float64)[:, None]
        lg = np.log1p(q / nu)
        nu_d = nu + d_o
        logits = self.const_by_observed[:, d_o] - half - 0.5 * nu_d * lg
        nu_q = nu + q
        u = nu_d / nu_q
        # log u - u + 1 formed term by term, as for complete rows (exact as u nears 1 and 0); log1p(d_o/nu)
        # and the digamma terms from a (K, D + 1) table
        h = (np.log1p(np.arange(x.shape[1] + 1) / nu) + self.df_terms)[:, d_o]
        h -= lg
        h -= (d_o - q) / nu_q
        return logits, u, h, comps

    def marginal_logits(self, x: np.ndarray, exact: bool = False) -> tuple[np.ndarray, list]:
        """``(logits, completions)`` of rows with missing values (as
        :func:`daskgmm.kernels.missing.marginal_logits` gives a Gaussian mixture's)."""
        logits, _, _, comps = self.marginal_terms(x, exact)
        return logits, comps


def t_logits(d2: np.ndarray, df: np.ndarray, const: np.ndarray, n_features: int) -> np.ndarray:
    """``const_k - (nu_k + D)/2 · log1p(δ²/nu_k)`` for squared distances ``d2`` (K, nb), float64."""
    nu = np.asarray(df, np.float64)[:, None]
    out = np.log1p(d2 / nu)
    out *= -0.5 * (nu + n_features)
    out += np.asarray(const, np.float64)[:, None]
    return out


@dataclass(frozen=True)
class StudentTSpec:
    """What a pass needs to know of one Student-t mixture.

    Attributes
    ----------
    maha : NaturalParams
        The squared Mahalanobis distances as quadratic forms (:func:`mahalanobis_params`).
    df : ndarray, shape (K,)
        Degrees of freedom.
    const : ndarray, shape (K,)
        ``log π_k`` plus the log normaliser of each component (see :class:`StudentTForm`).
    covariance_type : str
        The shape of second moments to return.
    precise : StudentTForm or None
        When given, distances and statistics come from the per-component path, about
        each component's location (see ``daskgmm.kernels.params.precise_needed``).
    marginal : StudentTMarginal or None
        When given, rows with missing values (NaN) are scored by the t marginal of their
        observed features and enter the statistics with their conditional expectations
        (``missing="marginalize"``); without it such rows are left out of this model.
    """

    maha: NaturalParams
    df: np.ndarray
    const: np.ndarray
    covariance_type: str
    precise: StudentTForm | None = None
    marginal: StudentTMarginal | None = None

    @property
    def level(self) -> int:
        return max(self.maha.level, cov.of(self.covariance_type).level)

    @property
    def n_components(self) -> int:
        return self.maha.n_components

    @property
    def request_class(self):
        """The request that serves specs of this kind (the loop groups specs by it)."""
        return StudentTRequest


@dataclass(frozen=True)
class StudentTStats:
    """Statistics of one t mixture over some rows; merge is addition.

    Attributes
    ----------
    moments : SuffStats
        The moments with weights ``w r u``: ``n = Σ w r u``, ``s1 = Σ w r u (x - shift)``, ``s2``
        in the shape of the covariance type; its ``loglik`` is ``Σ w log p(x)`` under the t
        mixture, ``weight`` and ``rows`` as for a Gaussian pass.
    resp : ndarray, shape (K,)
        ``Σ w r`` (the mixture weights' statistic).
    log_u : ndarray, shape (K,)
        ``Σ w r (log u - u + 1)``, for the degrees of freedom; ``+ 1`` keeps it exact as
        ``u`` nears 1 (large nu), where ``log u - u`` alone would cancel against ``Σ r``.
    """

    moments: SuffStats
    resp: np.ndarray
    log_u: np.ndarray

    @property
    def loglik(self) -> float:
        return self.moments.loglik

    @property
    def weight(self) -> float:
        return self.moments.weight

    @property
    def rows(self) -> int:
        return self.moments.rows

    @property
    def n_components(self) -> int:
        return self.resp.shape[0]

    def merge(self, other: StudentTStats) -> StudentTStats:
        """Sum of the statistics of two disjoint sets of rows."""
        return StudentTStats(self.moments.merge(other.moments), frozen(self.resp + other.resp),
                             frozen(self.log_u + other.log_u))


class StudentTRequest:
    """E-step weights and M-step statistics of a list of t mixtures: one GEMM for the distances, one for the moments."""

    level: int

    def __init__(self, specs: list[StudentTSpec]):
        if not specs:
            raise ValueError("a Student-t request needs at least one model")
        self.specs = list(specs)
        self.level = max(s.level for s in self.specs)
        self._bounds = np.concatenate([[0], np.cumsum([s.n_components for s in self.specs])]).astype(int)
        # rows with NaN reach a t pass only under missing="marginalize" (validation); only then is
        # each block searched for them
        self._marginal = any(s.marginal is not None for s in self.specs)
        # the compiled core takes the shared-feature form (a precise model's pass stays NumPy, as a
        # Gaussian one's)
        self._fusable = all(s.precise is None for s in self.specs)
        # the models whose distances and moments come from the shared features: a per-component model's come from
        # its rows' differences alone (a t start's fit with a tight component far from the centre), so the shared
        # features, their GEMM and their moments serve none of them (a third of such a pass at K = D = 16)
        self._shared = [(a, b) for i, (a, b) in enumerate(pairwise(self._bounds)) if self.specs[i].precise is None]
        self._parts = PreciseApart(self.specs, StudentTRequest) if PreciseApart.wanted(self.specs) else None

    @property
    def width(self) -> int:
        """Rows of the distances matrix per block."""
        return int(self._bounds[-1])

    def start(self, n_features, dtype, level, centre, kernel=None):
        if kernel is not None and self._parts is not None:
            return self._parts.start(n_features, dtype, level, centre, kernel)
        theta = np.vstack([s.maha.theta(level, dtype) for s in self.specs])
        w = self.width
        fused = None
        if kernel is not None and self._fusable:
            fused = self._fused(kernel, theta, n_features, level, centre)
        return {
            "fused": fused,
            "theta": theta,
            "level": level,
            "S": np.zeros((w, theta.shape[1])),
            "resp": np.zeros(w),
            "log_u": np.zeros(w),
            "loglik": np.zeros(len(self.specs)),
            "weight": 0.0,
            "rows": 0,
            "precise": {
                i: {"n": np.zeros(s.n_components), "s1": np.zeros((s.n_components, n_features)), "s2": None}
                for i, s in enumerate(self.specs) if s.precise is not None
            },
        }

    def _fused(self, kernel, theta, d, level, centre) -> compiled.FusedStudentT:
        """The compiled core's state: per model, the constants and the degrees of freedom's terms by
        number of observed features (column ``d``: complete rows, the same numbers as :meth:`update`'s)."""
        consts, hterms, marginal = [], [], {}
        for i, spec in enumerate(self.specs):
            nu = np.asarray(spec.df, np.float64)
            k = len(nu)
            if spec.marginal is not None:
                c = np.array(spec.marginal.const_by_observed, dtype=np.float64)
                h = np.log1p(np.arange(d + 1) / nu[:, None]) + spec.marginal.df_terms
                marginal[i] = spec.marginal
            else:  # only column d is read (rows with NaN are left out of this model)
                c, h = np.repeat(np.asarray(spec.const, np.float64)[:, None], d + 1, axis=1), np.zeros((k, d + 1))
            c[:, d] = spec.const
            h[:, d] = np.log1p(d / nu)
            consts.append(c)
            hterms.append(h)
        return compiled.FusedStudentT(kernel, theta, self._bounds, np.concatenate([s.df for s in self.specs]),
                                      np.vstack(consts), np.vstack(hterms), level, centre, marginal)

    def block_rows(self, acc) -> int | None:
        # the compiled core keeps its own L2-sized scratch; NumPy blocks are sized for the cache
        if "parts" in acc:
            return PreciseApart.block_rows(acc)
        return compiled.block_rows(len(self.specs)) if acc["fused"] is not None else None

    def update(self, acc, blk: Block) -> None:
        if "parts" in acc:
            PreciseApart.update(acc, blk)
            return
        if self._marginal:
            blk = without_empty_rows(blk)
        fused = acc["fused"]
        if fused is not None:
            per_row = scratch("t-fused-per-row", (len(self.specs), blk.size), np.float64)
            fused.update(blk.x, blk.w, per_row)
            for i in range(len(self.specs)):
                acc["loglik"][i] += blk.weighted_sum(per_row[i])
            acc["weight"] += blk.weight_sum()
            acc["rows"] += blk.size
            return
        self._update_numpy(acc, blk)

    def _update_numpy(self, acc, blk: Block) -> None:
        """The NumPy reference of :meth:`update`."""
        theta = acc["theta"]
        nb, d = blk.size, blk.x.shape[1]
        shared = bool(self._shared)
        T = blk.T if shared else None
        incomplete = np.zeros(0, dtype=np.intp)
        if self._marginal:
            # a NaN makes its row's sum NaN (one reduction over the transposed block, as the mixture request)
            incomplete = np.flatnonzero(np.isnan(blk.xT.sum(axis=0)))
            if incomplete.size and shared:
                # their moments are the expected ones, added apart: their feature columns (NaN) count as 0,
                # copied under a mask into zeros (a scatter of zeros into a copy cost 1.2 s per 1M rows at D=16)
                keep = np.ones(nb, dtype=bool)
                keep[incomplete] = False
                out = scratch("t-features", T.shape, T.dtype)
                out.fill(0.0)
                np.copyto(out, T, where=keep)
                T = out
            if incomplete.size:
                x_inc = blk.xT[:, incomplete].T.astype(np.float64)
        dist = scratch("t-distances", (theta.shape[0], nb), theta.dtype)
        if shared:
            model_products(theta, T, dist, self._shared)
        w = None if blk.w is None else np.asarray(blk.w, np.float64)
        top = scratch("t-top", (1, nb), np.float64)
        tot = scratch("t-total", (1, nb), np.float64)
        for i, spec in enumerate(self.specs):
            a, b = self._bounds[i], self._bounds[i + 1]
            shape = (b - a, nb)
            z = None
            if spec.precise is not None:
                d2, z = spec.precise.squared_distances(blk.xT)
                if incomplete.size:
                    d2[:, incomplete] = 0.0
                    z[:, :, incomplete] = 0.0
            else:
                d2 = scratch("t-d2", shape, np.float64)
                np.maximum(dist[a:b], 0.0, out=d2)  # the expanded square may round below 0 at the location
            nu = spec.df[:, None]
            # float64 from here; every step in place in scratch buffers (a temporary per step cost
            # about as much as the step)
            lg = scratch("t-log", shape, np.float64)
            np.divide(d2, nu, out=lg)
            np.log1p(lg, out=lg)  # log(1 + δ²/nu): in the log-density and in log u
            u = scratch("t-u", shape, np.float64)
            np.add(d2, nu, out=u)
            np.reciprocal(u, out=u)
            # log u - u + 1 = log1p(D/nu) - log1p(δ²/nu) - (D - δ²)/(nu + δ²): every term formed
            # directly, so it stays exact as u nears 1 (large nu) and for far rows (u near 0)
            h = scratch("t-h", shape, np.float64)
            np.subtract(d2, d, out=h)
            h *= u
            h -= lg
            h += np.log1p(d / spec.df)[:, None]
            u *= nu + d  # u = (nu + D)/(nu + δ²)
            lg *= -0.5 * (nu + d)
            lg += spec.const[:, None]
            comps = None
            if incomplete.size and spec.marginal is not None:
                lg[:, incomplete], u[:, incomplete], h[:, incomplete], comps = spec.marginal.marginal_terms(
                    x_inc, exact=spec.precise is not None)
            elif incomplete.size:
                lg[:, incomplete] = 0.0  # left out below
            r = lg[None]
            per_row = soft_responsibilities(r, top, tot)[0]
            r = r[0]
            if incomplete.size and comps is None:
                r[:, incomplete] = 0.0
                per_row[incomplete] = 0.0
            if w is not None:
                r *= w
            acc["loglik"][i] += blk.weighted_sum(per_row)
            acc["resp"][a:b] += r.sum(axis=1)
            acc["log_u"][a:b] += np.einsum("kn,kn->k", r, h)
            if comps is not None:
                r_inc = r[:, incomplete].copy()
                self._incomplete_moments(acc, i, comps, r_inc * u[:, incomplete], r_inc)
                r[:, incomplete] = 0.0
            r *= u  # the moments' weights w r u
            if z is None:
                dist[a:b] = r
                continue
            pc = acc["precise"][i]  # this model's moments are taken about its locations
            wz = np.multiply(z, r[:, None, :], out=scratch("t-wz", z.shape, np.result_type(z, r)))
            pc["n"] += r.sum(axis=1)
            pc["s1"] += wz.sum(axis=2, dtype=np.float64)
            s2 = cov.moments_about_means(wz, z, spec.covariance_type)
            pc["s2"] = s2 if pc["s2"] is None else pc["s2"] + s2
        if shared:
            add_model_moments(acc["S"], T, dist, self._shared)
        acc["weight"] += blk.weight_sum()
        acc["rows"] += nb

    def _incomplete_moments(self, acc, i, comps, ru, r) -> None:
        """Add the expected moments of a block's rows with missing values for model ``i``: ``Σ r u x̂``,
        ``Σ (r u x̂ x̂ᵀ + r Cov[x_m | x_o])`` (``ru``, ``r``: (K, n), sample weights included)."""
        add_completed(acc, i, self._bounds, self.specs[i], comps, ru, cond_resp=r)

    def finish(self, acc, n_features, centre) -> list[StudentTStats]:
        if "parts" in acc:
            return PreciseApart.finish(acc, len(self.specs), n_features, centre)
        S, d, lvl = acc["S"], n_features, acc["level"]
        resp, log_u = acc["resp"], acc["log_u"]
        if acc["fused"] is not None:
            S, resp, log_u = S + acc["fused"].S, resp + acc["fused"].resp, log_u + acc["fused"].log_u
        q = n_quad_rows(lvl, d)
        out = []
        for m, spec in enumerate(self.specs):
            a, b = self._bounds[m], self._bounds[m + 1]
            block = S[a:b]
            ct = spec.covariance_type
            if spec.precise is not None:
                pc = acc["precise"][m]
                s2 = pc["s2"] if pc["s2"] is not None else cov.zero_stats(b - a, centre, ct).s2
                n, s1, shift = pc["n"], pc["s1"], centre + spec.precise.means
            else:
                n, s1, shift = block[:, q + d], block[:, q : q + d], centre
                s2 = cov.second_moments_from_features(block[:, :q], lvl, d, ct)
            moments = SuffStats(
                n=frozen(n), s1=frozen(s1), s2=frozen(s2), loglik=float(acc["loglik"][m]),
                weight=float(acc["weight"]), rows=int(acc["rows"]), shift=frozen(shift), covariance_type=ct,
            )
            out.append(StudentTStats(moments, frozen(resp[a:b]), frozen(log_u[a:b])))
        return out

    @staticmethod
    def merge(a: list[StudentTStats], b: list[StudentTStats]) -> list[StudentTStats]:
        return [x.merge(y) for x, y in zip(a, b, strict=True)]


# ---------------------------------------------------------------------------
# The M-step's algebra


def scale_update(stats: StudentTStats, reg_covar: float, eps_dtype=np.float64):
    """Weights, locations and scales from merged statistics (the EM update of McLachlan & Peel, ch. 7).

    ``π_k = Σ r / N``, ``μ_k = Σ r u x / Σ r u``, ``Σ_k = Σ r u (x - μ_k)(x - μ_k)ᵀ / Σ r``
    (tied: pooled over components and divided by ``N``; diag: the diagonal; spherical:
    its mean), plus ``reg_covar`` on the diagonal. As scikit-learn's Gaussian M-step,
    ``10 eps`` of the data dtype is added to every sum of responsibilities.

    Returns
    -------
    weights : ndarray, shape (K,)
    means : ndarray, shape (K, D)
    scales : ndarray
        In the shape of the covariance type.
    """
    mom = stats.moments
    pad = 10 * np.finfo(eps_dtype).eps
    nr = stats.resp + pad
    n0 = mom.n
    m = mom.s1 / (n0 + pad)[:, None]  # location - shift
    means = mom.shift + m
    # Σ r u (x - μ)(x - μ)ᵀ about any shift (exact for a shift near the data)
    scales = cov.of(mom.covariance_type).covariances(mom.s2, mom.s1, n0, m, nr, reg_covar)
    return nr / nr.sum(), means, scales
