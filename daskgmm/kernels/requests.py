"""The mixture request: E-step and M-step statistics of many models (every model kind) in one pass.

The scan and the keyed samples are in :mod:`daskgmm.kernels.scan`.

Pure NumPy; nothing here knows about Dask.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np

import daskgmm.kernels.covariance as cov
from daskgmm.kernels import bounds as bounds_store
from daskgmm.kernels import compiled
from daskgmm.kernels.features import FULL_LEVEL, NO_FEATURES, block_rows_for, n_feature_rows, n_quad_rows
from daskgmm.kernels.missing import completed_moments, marginal_logits
from daskgmm.kernels.params import NaturalParams, PerComponent
from daskgmm.kernels.protocol import Block, without_empty_rows
from daskgmm.kernels.random import keyed_uniform
from daskgmm.kernels.responsibilities import argmax_rows, soft_responsibilities
from daskgmm.kernels.results import SuffStats, WorstRows, frozen, smallest_positions
from daskgmm.kernels.scratch import scratch


@dataclass(frozen=True)
class ModelSpec:
    """What a pass needs to know of one model.

    Attributes
    ----------
    params : NaturalParams
        Log-densities (with log-weights folded into ``const``).
    covariance_type : str
        The shape of second moments to return.
    assignment : {"soft", "hard", "random"}
        Soft responsibilities, the arg-max (classification EM, k-means), or
        random responsibilities drawn from ``seed`` (the "random" initialisation).
    seed : int
        Stream key for ``assignment="random"``.
    n_worst : int
        How many worst-explained rows to return (0: none).
    precise : PerComponent or None
        When given, logits and statistics come from the per-component path
        (the model is badly conditioned for the shared features; see
        ``daskgmm.kernels.params.precise_needed``), about each component's mean.
    resp_log_resp : bool
        Also return ``Σ w r log r`` (:attr:`SuffStats.resp_log_resp`; soft
        assignment only). Off by default: it costs a log per responsibility.
    marginal : PerComponent or None
        When given, rows with missing values (NaN) are scored by the marginal
        density of their observed features and enter the statistics with the
        conditional expectations of the missing ones
        (:mod:`daskgmm.kernels.missing`). Without it such rows are left out of
        this model's statistics (the initialisation's k-means passes).
    bounds : str or None
        k-means only (``KMeans(algorithm="elkan")``): keep each row's label and a lower bound of
        its distance to the other centres between passes under this key
        (:mod:`daskgmm.kernels.bounds`), so that rows whose label cannot change skip the
        distances to the other centres. The same results as without; used when the model is the
        pass's only one and the compiled core runs it (ignored otherwise).
    count_rows : bool
        Also return each component's rows (:attr:`SuffStats.counts`: ``Σ r`` before the sample weights, over
        the rows of positive weight), which ``on_collapse="reinit"`` judges a collapse by on weighted rows;
        rows of weight 0 are then no worst rows either (a component re-seeded there would hold none).
    """

    params: NaturalParams
    covariance_type: str
    assignment: str = "soft"
    seed: int = 0
    n_worst: int = 0
    precise: PerComponent | None = None
    resp_log_resp: bool = False
    marginal: PerComponent | None = None
    bounds: str | None = None
    count_rows: bool = False

    @property
    def level(self) -> int:
        return max(self.params.level, cov.of(self.covariance_type).level)


class PreciseApart:
    """A request's models in two requests of their own: those in the shared-feature form and those that need the
    precise per-component one (a tight component far from the pass centre), which only NumPy runs.

    Models in lockstep (restarts, ``select_model``'s candidates, a t start's proposal) of which some are precise
    took the whole pass to NumPy: the others lost the compiled core's speed and the bits they have fitted alone.
    In parts, the shared ones go through the core, the precise ones through NumPy in the blocks their own pass
    takes (sized by NumPy's rule from their level and width), the core's blocks a whole number of those. Each
    model then has its bits alone: the precise ones always (but under an explicit ``block_rows``, which their
    own pass would take whole), the shared ones as any models in lockstep on the core (the same blocks up to 8
    models; more take smaller ones, :func:`daskgmm.kernels.compiled.block_rows`). Used where the core runs.
    """

    def __init__(self, specs, make):
        shared = [i for i, s in enumerate(specs) if s.precise is None]
        precise = [i for i, s in enumerate(specs) if s.precise is not None]
        self.parts = [(idx, make([specs[i] for i in idx])) for idx in (shared, precise)]

    @staticmethod
    def wanted(specs) -> bool:
        return 0 < sum(s.precise is not None for s in specs) < len(specs)

    def start(self, n_features, dtype, level, centre, kernel) -> dict:
        precise = self.parts[1][1]
        # the NumPy blocks the precise models take in a pass of their own (its level, not the pass's)
        p = n_feature_rows(precise.level, n_features) if precise.level > NO_FEATURES else n_features
        nb = block_rows_for(p + precise.width, np.dtype(dtype).itemsize)
        return {"parts": [(idx, req, req.start(n_features, dtype, level, centre, kernel)) for idx, req in self.parts],
                "numpy_rows": nb}

    @staticmethod
    def block_rows(acc) -> int | None:
        (_, req, part), _ = acc["parts"]
        rows, nb = req.block_rows(part), acc["numpy_rows"]
        # a multiple of the precise part's blocks, so that they are cut where they are alone
        return None if rows is None else max(nb, rows // nb * nb)

    @staticmethod
    def update(acc, blk: Block) -> None:
        (_, shared, a), (_, precise, b) = acc["parts"]
        shared.update(a, blk)
        nb = acc["numpy_rows"]
        for start in range(0, blk.size, nb):
            precise.update(b, blk if nb >= blk.size else blk.part(start, min(blk.size, start + nb)))

    @staticmethod
    def finish(acc, n_models, n_features, centre) -> list:
        out = [None] * n_models
        for idx, req, part in acc["parts"]:
            for i, stats in zip(idx, req.finish(part, n_features, centre), strict=True):
                out[i] = stats
        return out


class MixtureRequest:
    """E-step and M-step statistics of a list of models, in one GEMM pair per block."""

    def __init__(self, specs: list[ModelSpec]):
        if not specs:
            raise ValueError("a mixture request needs at least one model")
        self.specs = list(specs)
        self.level = max(s.level for s in self.specs)
        sizes = [s.params.n_components for s in self.specs]
        self._bounds = np.concatenate([[0], np.cumsum(sizes)])
        self._precise = [i for i, sp in enumerate(self.specs) if sp.precise is not None]
        # the models whose logits and moments come from the shared features (a precise model's come from its
        # rows' differences alone: the features' products would be overwritten and their moments never read)
        self._shared = [(a, b) for i, (a, b) in enumerate(pairwise(self._bounds)) if self.specs[i].precise is None]
        # consecutive models with the same assignment and K are done as one (M, K, nb) array
        self._groups = []
        for i, spec in enumerate(self.specs):
            g = self._groups[-1] if self._groups else None
            if g and spec.assignment == g[2] and sizes[i] == sizes[g[0]] and spec.assignment != "random":
                g[1] = i + 1
            else:
                self._groups.append([i, i + 1, spec.assignment])
        # what the compiled core takes (daskgmm.kernels.compiled); everything else is NumPy
        self._fusable = all(s.assignment in ("soft", "hard") and s.precise is None for s in self.specs)
        self._modes = np.array([
            compiled.HARD if s.assignment == "hard" else compiled.RESP_LOG_RESP if s.resp_log_resp else 0
            for s in self.specs
        ], dtype=np.int64)
        self._marginal = any(s.marginal is not None for s in self.specs)
        self._count = any(s.count_rows for s in self.specs)
        self._parts = PreciseApart(self.specs, MixtureRequest) if PreciseApart.wanted(self.specs) else None
        # k-means' bounds (one hard model at the spherical level, nothing marginalised, no rows counted)
        only = self.specs[0]
        self._bounds_key = (only.bounds if len(self.specs) == 1 and only.bounds is not None
                            and only.assignment == "hard" and only.level == 0 and only.marginal is None
                            and self._fusable and not self._count else None)

    @property
    def width(self) -> int:
        """Rows of the logits matrix per block."""
        return int(self._bounds[-1])

    def start(self, n_features, dtype, level, centre, kernel=None):
        if kernel is not None and self._parts is not None:
            return self._parts.start(n_features, dtype, level, centre, kernel)
        theta = np.vstack([s.params.theta(level, dtype) for s in self.specs])
        fused = None
        if kernel is not None and self._fusable:
            marginal = {i: s.marginal for i, s in enumerate(self.specs) if s.marginal is not None}
            fused = compiled.Fused(kernel, theta, self._bounds, self._modes, level, centre, marginal,
                                   counts=self._count)
        return {
            "fused": fused,
            "theta": theta,
            "level": level,
            "S": np.zeros((self.width, theta.shape[1])),
            "loglik": np.zeros(len(self.specs)),
            "rlogr": np.zeros(len(self.specs)),
            "incomplete": np.zeros(len(self.specs), dtype=np.int64),
            # Σ r per component before the weights (every model's, when any spec counts rows)
            "counts": np.zeros(self.width) if self._count else None,
            "weight": 0.0,
            "rows": 0,
            "worst": [None] * len(self.specs),
            "precise": {
                i: {"n": np.zeros(self.specs[i].params.n_components),
                    "s1": np.zeros((self.specs[i].params.n_components, n_features)),
                    "s2": None}
                for i in self._precise
            },
        }

    def block_rows(self, acc) -> int | None:
        # the compiled core keeps its own L2-sized scratch: blocks bound only the Python work
        # around each call
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
        if fused is None:
            self._update_numpy(acc, blk)
            return
        # the core leaves rows with NaN out of the models that do not marginalise, and runs the
        # marginal E-step for those that do (their per_row and statistics included)
        per_row = scratch("fused-per-row", (len(self.specs), blk.size), np.float64)
        if self._bounds_key is not None and blk.first_row is not None:
            left_out = self._update_bounded(fused, blk, per_row)
        else:
            left_out = fused.update(blk.x, blk.w, per_row)
        if left_out:
            for i, spec in enumerate(self.specs):
                if spec.marginal is not None:
                    acc["incomplete"][i] += left_out
        incomplete = None
        if left_out and any(s.n_worst for s in self.specs):
            incomplete = np.flatnonzero(np.isnan(blk.x).any(axis=1))  # a row with NaN re-seeds nothing
        for i in range(len(self.specs)):
            self._add_loglik(acc, i, per_row[i], blk, incomplete)
        acc["weight"] += blk.weight_sum()
        acc["rows"] += blk.size

    def _update_bounded(self, fused, blk: Block, per_row) -> int:
        """The fused update of one k-means model with its rows' bounds, taken from and given back to the
        process's store (:mod:`daskgmm.kernels.bounds`)."""
        key, first = self._bounds_key, blk.first_row
        coef = fused.kmeans_centres
        label, lower, shift = bounds_store.take(key, first, blk.size, coef)
        left_out, spared = fused.update(blk.x, blk.w, per_row, kmeans_bounds=(label, lower, shift))
        bounds_store.give(key, first, label, lower, coef, spared)
        return left_out

    def _update_numpy(self, acc, blk: Block) -> None:
        """The NumPy reference of :meth:`update`."""
        theta = acc["theta"]
        nb = blk.size
        dtype = theta.dtype
        L = scratch("logits", (theta.shape[0], nb), dtype)
        if self._shared:
            model_products(theta, blk.T, L, self._shared)
        diffs = {}
        for i in self._precise:
            a, b = self._bounds[i], self._bounds[i + 1]
            diffs[i] = self.specs[i].precise.logits(blk.xT, L[a:b]).copy()
        # rows with NaN: validation lets them through only for models that marginalise. A NaN
        # makes its row's sum NaN; a finite row's sum is a number or ±inf (NaN only if it
        # overflowed both ways, values near 1e308, which no fit survives anyway). One
        # reduction over the contiguous transposed block: 5 ms per 1M rows against 17 for
        # isnan(x).any(axis=1) over the row slices
        incomplete = np.flatnonzero(np.isnan(blk.xT.sum(axis=0)))
        completions = {}
        if incomplete.size:
            x_inc = blk.xT[:, incomplete].T
            for i, spec in enumerate(self.specs):
                a, b = self._bounds[i], self._bounds[i + 1]
                if spec.marginal is None:
                    L[a:b, incomplete] = 0.0  # left out below; keeps NaN out of the arithmetic
                    continue
                lg, completions[i] = marginal_logits(spec.marginal, x_inc, exact=spec.precise is not None)
                L[a:b, incomplete] = lg
                acc["incomplete"][i] += incomplete.size
        w = None if blk.w is None else blk.w.astype(dtype, copy=False)
        for first, end, assignment in self._groups:
            m = end - first
            a, b = self._bounds[first], self._bounds[end]
            lm = L[a:b].reshape(m, (b - a) // m, nb)
            top = scratch("top", (m, nb), dtype)
            if assignment == "soft":
                per_row = soft_responsibilities(lm, top, scratch("total", (m, nb), dtype))
                for j in range(m):
                    if self.specs[first + j].resp_log_resp:
                        acc["rlogr"][first + j] += blk.weighted_sum(_row_resp_log_resp(lm[j]))
            elif assignment == "hard":
                best = scratch("best", (m, nb), np.intp)
                argmax_rows(lm, best, top)
                per_row = top
                lm.fill(0.0)
                lm[np.arange(m)[:, None], best, np.arange(nb)[None, :]] = 1.0
            elif assignment == "random":
                k = lm.shape[1]
                idx = blk.rows[None, :] * k + np.arange(k)[:, None]
                u = keyed_uniform(self.specs[first].seed, idx.ravel()).reshape(k, nb)
                lm[0] = u / u.sum(axis=0)
                per_row = np.zeros((1, nb), dtype=dtype)
            else:
                raise ValueError(f"unknown assignment {assignment!r}")
            for j in range(m):
                if incomplete.size and first + j not in completions:
                    lm[j][:, incomplete] = 0.0
                    per_row[j][incomplete] = 0.0
            if acc["counts"] is not None:
                # the rows each component holds: the responsibilities before the weights, over the rows of
                # positive weight (a row of weight 0 holds nothing: a component on such rows only is empty)
                held = True if blk.w is None or blk.w.all() else blk.w > 0
                acc["counts"][a:b] += lm.sum(axis=2, dtype=np.float64, where=held).ravel()
            if w is not None:
                np.multiply(lm, w, out=lm)
            for j in range(m):
                self._add_loglik(acc, first + j, per_row[j], blk, incomplete)
        T = blk.T if self._shared else None
        resp_inc = {}
        if incomplete.size:
            # their statistics are the expected ones, added below; here they count as zero rows
            for i in completions:
                a, b = self._bounds[i], self._bounds[i + 1]
                resp_inc[i] = L[a:b, incomplete].astype(np.float64)
                L[a:b, incomplete] = 0.0
            if T is not None:
                keep = np.ones(T.shape[1], dtype=bool)
                keep[incomplete] = False
                T = np.where(keep, T, 0.0)  # one masked copy (a copy and then a scatter cost twice as much)
            for z in diffs.values():
                z[:, :, incomplete] = 0.0
        if self._shared:
            add_model_moments(acc["S"], T, L, self._shared)
        for i, z in diffs.items():
            r = L[self._bounds[i] : self._bounds[i + 1]]  # responsibilities (weighted)
            _precise_moments(acc["precise"][i], z, r, self.specs[i].covariance_type)
        for i, r in resp_inc.items():
            self._incomplete_moments(acc, i, completions[i], r)
        acc["weight"] += blk.weight_sum()
        acc["rows"] += nb

    def _add_loglik(self, acc, i, per_row, blk, incomplete=None) -> None:
        """Add model ``i``'s log-likelihoods of a block's rows (zero for rows left out) and its worst rows."""
        acc["loglik"][i] += blk.weighted_sum(per_row)
        spec = self.specs[i]
        if spec.n_worst:
            prev = acc["worst"][i]
            # once n_worst rows are kept, only a row at or below the last of them can enter: a comparison
            # per row instead of a partition of the block (15% of a k-means pass in the compiled core)
            below = None if prev is None or len(prev.values) < spec.n_worst else prev.values[-1]
            if below is not None and np.isnan(below):
                below = None
            # a row with NaN cannot re-seed a component, nor can one of weight 0 where rows are counted
            # (on_collapse="reinit": a component re-seeded there would hold no rows again)
            worst = _block_worst(per_row, blk, spec.n_worst, incomplete, below, positive=spec.count_rows)
            if worst is not None:
                acc["worst"][i] = worst if prev is None else prev.merge(worst, spec.n_worst)

    def _incomplete_moments(self, acc, i, completions, r) -> None:
        """Add the expected statistics of a block's incomplete rows for model ``i``."""
        add_completed(acc, i, self._bounds, self.specs[i], completions, r)

    def finish(self, acc, n_features, centre) -> list[SuffStats]:
        if "parts" in acc:
            return PreciseApart.finish(acc, len(self.specs), n_features, centre)
        S, d, lvl = acc["S"], n_features, acc["level"]
        q = n_quad_rows(lvl, d)
        counts = acc["counts"]
        if acc["fused"] is not None:
            S = S + acc["fused"].S
            acc["rlogr"] = acc["rlogr"] + acc["fused"].rlogr
            if counts is not None:
                counts = counts + acc["fused"].counts
        out = []
        for m, spec in enumerate(self.specs):
            block = S[self._bounds[m] : self._bounds[m + 1]]
            worst = acc["worst"][m]
            if spec.n_worst and worst is None:
                worst = WorstRows(np.zeros(0), np.zeros(0, np.int64), np.zeros((0, d)), np.zeros(0))
            if spec.precise is not None:
                pc = acc["precise"][m]
                k = spec.params.n_components
                s2 = pc["s2"] if pc["s2"] is not None else cov.zero_stats(k, centre, spec.covariance_type).s2
                n, s1, shift = pc["n"], pc["s1"], centre + spec.precise.means
            else:
                n, s1, shift = block[:, q + d], block[:, q : q + d], centre
                s2 = cov.second_moments_from_features(block[:, :q], lvl, d, spec.covariance_type)
            out.append(SuffStats(
                n=frozen(n),
                s1=frozen(s1),
                s2=frozen(s2),
                loglik=float(acc["loglik"][m]),
                weight=float(acc["weight"]),
                rows=int(acc["rows"]),
                shift=frozen(shift),
                covariance_type=spec.covariance_type,
                worst=worst,
                resp_log_resp=float(acc["rlogr"][m]),
                incomplete_rows=int(acc["incomplete"][m]),
                counts=frozen(counts[self._bounds[m] : self._bounds[m + 1]]) if spec.count_rows else None,
            ))
        return out

    @staticmethod
    def merge(a: list[SuffStats], b: list[SuffStats]) -> list[SuffStats]:
        return [x.merge(y) for x, y in zip(a, b, strict=True)]


def _row_resp_log_resp(r: np.ndarray) -> np.ndarray:
    """``Σ_k r_k log r_k`` per row of responsibilities ``r`` (K, nb), before sample weights.

    Responsibilities are at least ``exp(EXP_FLOOR) / K`` (normal numbers), so the
    floor at ``tiny`` only guards a K large enough to reach subnormals.
    """
    t = scratch("rlogr", r.shape, r.dtype)
    np.maximum(r, np.finfo(r.dtype).tiny, out=t)
    np.log(t, out=t)
    t *= r
    return t.sum(axis=0)


def _precise_moments(acc, z, r, covariance_type) -> None:
    """Add a block's moments about each component's own mean (the per-component shift).

    ``z`` (K, D, nb) holds ``x - m_k``; ``r`` (K, nb) the (weighted) responsibilities.
    """
    wz = z * r[:, None, :]
    acc["n"] += r.sum(axis=1, dtype=np.float64)
    acc["s1"] += wz.sum(axis=2, dtype=np.float64)
    s2 = cov.moments_about_means(wz, z, covariance_type)
    acc["s2"] = s2 if acc["s2"] is None else acc["s2"] + s2


#: Largest ``rows x features x width`` of a moments product done in one call: OpenBLAS (0.3.x,
#: SkylakeX and Haswell kernels) multiplies products up to 1e6 multiply-adds without packing
#: its operands, and packing is most of the cost of this skinny shape (scripts/gemm_floor.py)
SMALL_PRODUCT = 1_000_000


def add_moments(S: np.ndarray, T: np.ndarray, L: np.ndarray) -> None:
    """``S += L · Tᵀ``: the M-step moments (W, P) of a block's responsibilities L (W, nb) and features T (P, nb).

    As ``Sᵀ = T · Lᵀ`` (OpenBLAS runs this orientation of the skinny product faster), in
    slices of rows small enough for OpenBLAS's unpacked kernels, with the responsibilities
    copied row-major once: for K=16, F=153 the product took 110 against 145 ms per 1M
    rows in one call per block of 2048 (one thread). Products too wide for slices of 256
    rows, or narrow enough for half a block, are done in one call.
    """
    p, nb = T.shape
    w = L.shape[0]
    part = scratch("moments", (p, w), T.dtype)
    rows = SMALL_PRODUCT // (p * w) // 128 * 128
    if rows < 256 or 2 * rows > nb:
        np.matmul(T, L.T, out=part)
        S += part.T
        return
    lt = scratch("resp-rows", (nb, w), L.dtype)
    lt[...] = L.T
    for a in range(0, nb, rows):
        np.matmul(T[:, a : a + rows], lt[a : a + rows], out=part)
        S += part.T


def model_products(theta: np.ndarray, T: np.ndarray, out: np.ndarray, spans) -> None:
    """``out = theta · T``, a product per model (its rows ``a:b`` of ``theta`` (W, P), for each ``(a, b)`` of
    ``spans``; the other rows of ``out`` are left as they are).

    BLAS rounds a row of a taller product otherwise (its kernels' edge tiles): a model in lockstep
    (restarts, ``select_model``'s candidates, a proposal scored beside its run) would not have the bits
    of the same model fitted alone.
    """
    for a, b in spans:
        np.matmul(theta[a:b], T, out=out[a:b])


def add_model_moments(S: np.ndarray, T: np.ndarray, L: np.ndarray, spans) -> None:
    """:func:`add_moments` a model at a time (its rows ``a:b`` of ``S`` and ``L`` for each ``(a, b)`` of ``spans``),
    for the reason :func:`model_products` gives."""
    for a, b in spans:
        add_moments(S[a:b], T, L[a:b])


def add_completed(acc, i, bounds, spec, completions, resp, cond_resp=None) -> None:
    """Add the expected statistics of a block's rows with missing values (``completions``, see
    :func:`daskgmm.kernels.missing.completed_moments`; ``resp`` (K, n) their weights, ``cond_resp`` the
    conditional covariances' when not the same) to model ``i`` of a pass's accumulator ``acc``: its
    per-component statistics about its means, or its rows ``bounds[i]:bounds[i + 1]`` of ``acc["S"]``."""
    if spec.precise is not None:
        ct = spec.covariance_type
        n, s1, s2 = completed_moments(completions, resp, spec.precise.means, cov.of(ct).level, cond_resp=cond_resp)
        pc = acc["precise"][i]
        pc["n"] += n
        pc["s1"] += s1
        s2 = cov.pool_components(s2, ct)
        pc["s2"] = s2 if pc["s2"] is None else pc["s2"] + s2
        return
    level = acc["level"]
    d = completions[0].n_features
    n, s1, s2 = completed_moments(completions, resp, np.zeros(d), level, cond_resp=cond_resp)
    q = n_quad_rows(level, d)
    a, b = bounds[i], bounds[i + 1]
    S = acc["S"]
    if level == FULL_LEVEL:
        iu0, iu1 = np.triu_indices(d)
        S[a:b, :q] += s2[:, iu0, iu1]
    else:
        S[a:b, :q] += s2.reshape(b - a, q)
    S[a:b, q : q + d] += s1
    S[a:b, q + d] += n


def _block_worst(per_row: np.ndarray, blk: Block, m: int, incomplete=None, below=None,
                 positive: bool = False) -> WorstRows | None:
    """The block's ``m`` rows of smallest ``(per_row, row)``, rows with NaN excluded; only they are copied.

    ``below``: only rows with ``per_row <= below`` are candidates (None when there is none).
    ``positive``: rows of weight 0 are no candidates either.
    """
    if positive and blk.w is not None and not blk.w.all():
        zero = np.flatnonzero(~(blk.w > 0))
        incomplete = zero if incomplete is None or not incomplete.size else np.union1d(incomplete, zero)
    idx = None
    if below is not None:
        keep = per_row <= np.float64(below)
        if incomplete is not None and incomplete.size:
            keep[incomplete] = False
        idx = np.flatnonzero(keep)
        if idx.size == 0:
            return None
    elif incomplete is not None and incomplete.size:
        keep = np.ones(blk.size, dtype=bool)
        keep[incomplete] = False
        idx = np.flatnonzero(keep)  # a row with NaN cannot re-seed a component
    values = (per_row if idx is None else per_row[idx]).astype(np.float64, copy=False)
    rows = blk.rows if idx is None else blk.rows[idx]
    order = smallest_positions(values, rows, m)
    sel = order if idx is None else idx[order]
    weights = np.ones(len(sel)) if blk.w is None else np.asarray(blk.w[sel], dtype=np.float64)
    return WorstRows(values[order], rows[order], np.array(blk.x[sel], dtype=np.float64), weights)
