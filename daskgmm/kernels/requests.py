"""The requests a pass can serve: mixture statistics (every model kind), samples, the scan.

Pure NumPy; nothing here knows about Dask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from daskgmm.kernels.features import (
    DIAG_LEVEL,
    FULL_LEVEL,
    NO_FEATURES,
    SPHERICAL_LEVEL,
    diag_positions,
    n_quad_rows,
    stats_level,
)
from daskgmm.kernels.params import NaturalParams, PerComponent, kmeans_natural_params
from daskgmm.kernels.protocol import Block
from daskgmm.kernels.random import keyed_exponential, keyed_uniform
from daskgmm.kernels.responsibilities import argmax_rows, soft_responsibilities
from daskgmm.kernels.results import SampleResult, ScanResult, SuffStats, WorstRows, chan, frozen, smallest
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
        ``daskgmm.kernels.covariance.precise_needed``), about each component's mean.
    """

    params: NaturalParams
    covariance_type: str
    assignment: str = "soft"
    seed: int = 0
    n_worst: int = 0
    precise: PerComponent | None = None

    @property
    def level(self) -> int:
        return max(self.params.level, stats_level(self.covariance_type))


def _extract_s2(quad: np.ndarray, level: int, d: int, covariance_type: str) -> np.ndarray:
    """Second moments of one model from the quadratic columns of ``S``."""
    if level == FULL_LEVEL:
        if covariance_type in ("full", "tied"):
            iu0, iu1 = np.triu_indices(d)
            m = np.empty((quad.shape[0], d, d))
            m[:, iu0, iu1] = quad
            m[:, iu1, iu0] = quad
            return m if covariance_type == "full" else m.sum(axis=0)
        diag = quad[:, diag_positions(d)]
    elif level == DIAG_LEVEL:
        if covariance_type in ("full", "tied"):
            raise ValueError("diagonal features cannot give full second moments")
        diag = quad
    else:
        if covariance_type != "spherical":
            raise ValueError("spherical features give only spherical second moments")
        return quad[:, 0].copy()
    return diag if covariance_type == "diag" else diag.sum(axis=1)


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
        # consecutive models with the same assignment and K are done as one (M, K, nb) array
        self._groups = []
        for i, spec in enumerate(self.specs):
            g = self._groups[-1] if self._groups else None
            if g and spec.assignment == g[2] and sizes[i] == sizes[g[0]] and spec.assignment != "random":
                g[1] = i + 1
            else:
                self._groups.append([i, i + 1, spec.assignment])

    @property
    def width(self) -> int:
        """Rows of the logits matrix per block."""
        return int(self._bounds[-1])

    def start(self, n_features, dtype, level, centre):
        theta = np.vstack([s.params.theta(level) for s in self.specs]).astype(dtype)
        return {
            "theta": theta,
            "level": level,
            "S": np.zeros((self.width, theta.shape[1])),
            "loglik": np.zeros(len(self.specs)),
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

    def update(self, acc, blk: Block) -> None:
        theta = acc["theta"]
        nb = blk.size
        dtype = theta.dtype
        L = scratch("logits", (theta.shape[0], nb), dtype)
        np.matmul(theta, blk.T, out=L)
        diffs = {}
        for i in self._precise:
            a, b = self._bounds[i], self._bounds[i + 1]
            diffs[i] = self.specs[i].precise.logits(blk.xT, L[a:b]).copy()
        w = None if blk.w is None else blk.w.astype(dtype, copy=False)
        for first, end, assignment in self._groups:
            m = end - first
            a, b = self._bounds[first], self._bounds[end]
            lm = L[a:b].reshape(m, (b - a) // m, nb)
            top = scratch("top", (m, nb), dtype)
            if assignment == "soft":
                per_row = soft_responsibilities(lm, top, scratch("total", (m, nb), dtype))
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
            if w is not None:
                np.multiply(lm, w, out=lm)
            for j in range(m):
                i = first + j
                acc["loglik"][i] += blk.weighted_sum(per_row[j])
                spec = self.specs[i]
                if spec.n_worst:
                    worst = _block_worst(per_row[j], blk, spec.n_worst)
                    prev = acc["worst"][i]
                    acc["worst"][i] = worst if prev is None else prev.merge(worst, spec.n_worst)
        # Sᵀ = T · Rᵀ rather than S = R · Tᵀ: OpenBLAS runs this orientation of the
        # skinny product faster (measured 25 against 19 GFLOP/s for K=16, F=153, one thread)
        part = scratch("moments", acc["S"].shape[::-1], dtype)
        np.matmul(blk.T, L.T, out=part)
        acc["S"] += part.T
        for i, z in diffs.items():
            r = L[self._bounds[i] : self._bounds[i + 1]]  # responsibilities (weighted)
            _precise_moments(acc["precise"][i], z, r, self.specs[i].covariance_type)
        acc["weight"] += blk.weight_sum()
        acc["rows"] += nb

    def finish(self, acc, n_features, centre) -> list[SuffStats]:
        S, d, lvl = acc["S"], n_features, acc["level"]
        q = n_quad_rows(lvl, d)
        out = []
        for m, spec in enumerate(self.specs):
            block = S[self._bounds[m] : self._bounds[m + 1]]
            worst = acc["worst"][m]
            if spec.n_worst and worst is None:
                worst = WorstRows(np.zeros(0), np.zeros(0, np.int64), np.zeros((0, d)), np.zeros(0))
            if spec.precise is not None:
                pc = acc["precise"][m]
                k = spec.params.n_components
                s2 = pc["s2"] if pc["s2"] is not None else SuffStats.zero(k, centre, spec.covariance_type).s2
                n, s1, shift = pc["n"], pc["s1"], centre + spec.precise.means
            else:
                n, s1, shift = block[:, q + d], block[:, q : q + d], centre
                s2 = _extract_s2(block[:, :q], lvl, d, spec.covariance_type)
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
            ))
        return out

    @staticmethod
    def merge(a: list[SuffStats], b: list[SuffStats]) -> list[SuffStats]:
        return [x.merge(y) for x, y in zip(a, b, strict=True)]


def _precise_moments(acc, z, r, covariance_type) -> None:
    """Add a block's moments about each component's own mean (the per-component shift).

    ``z`` (K, D, nb) holds ``x - m_k``; ``r`` (K, nb) the (weighted) responsibilities.
    """
    wz = z * r[:, None, :]
    acc["n"] += r.sum(axis=1, dtype=np.float64)
    acc["s1"] += wz.sum(axis=2, dtype=np.float64)
    if covariance_type in ("full", "tied"):
        s2 = np.matmul(wz, z.transpose(0, 2, 1)).astype(np.float64)
        if covariance_type == "tied":
            s2 = s2.sum(axis=0)
    elif covariance_type == "diag":
        s2 = np.einsum("kdn,kdn->kd", wz, z).astype(np.float64)
    else:
        s2 = np.einsum("kdn,kdn->k", wz, z).astype(np.float64)
    acc["s2"] = s2 if acc["s2"] is None else acc["s2"] + s2


def _block_worst(per_row: np.ndarray, blk: Block, m: int) -> WorstRows:
    values = per_row.astype(np.float64)
    weights = np.ones(blk.size) if blk.w is None else np.asarray(blk.w, dtype=np.float64)
    return WorstRows.smallest(values, blk.rows, np.array(blk.x, dtype=np.float64), weights, m)


@dataclass(frozen=True)
class SampleRequest:
    """Draw rows with probability proportional to ``w_i · d(x_i)``, chunking-independent.

    ``d(x)`` is the squared distance from ``x`` to the nearest of ``centres``
    (or 1 when there are no centres: uniform sampling). With ``candidates``,
    there is one hypothesis per candidate ``c``: ``d_c(x) = min(d(x), ‖x - c‖²)``,
    the distance if ``c`` were added to the centres, and the pass returns the
    potential of every hypothesis and a sample for each (the greedy k-means++
    step, pipelined one centre ahead).

    Sampling without replacement uses exponential keys ``E_i / (w_i d(x_i))``
    (Efraimidis & Spirakis 2006) with ``E_i`` a function of ``(key, row)``
    only, and keeps the ``n_samples`` smallest: any chunking draws the same rows.
    With ``finite_only``, rows holding NaN or ±inf are never drawn.
    """

    centres: np.ndarray
    n_samples: int
    key: int
    candidates: np.ndarray | None = None
    finite_only: bool = False

    @property
    def width(self) -> int:
        return 0

    @property
    def level(self) -> int:
        """Uniform draws read the rows only; distances need ``‖x‖²`` and ``x``."""
        none = len(self.centres) == 0 and (self.candidates is None or len(self.candidates) == 0)
        return NO_FEATURES if none else SPHERICAL_LEVEL

    def start(self, n_features, dtype, level, centre):
        def theta(points):
            if points is None or len(points) == 0:
                return None
            p = np.asarray(points, dtype=np.float64) - centre
            return kmeans_natural_params(p).theta(level).astype(dtype)

        h = 1 if self.candidates is None else len(self.candidates)
        return {
            "theta_c": theta(self.centres),
            "theta_h": theta(self.candidates),
            "potential": np.zeros(h),
            "parts": [[] for _ in range(h)],
            "count": [0] * h,
            "cut": [np.inf] * h,
        }

    def update(self, acc, blk: Block) -> None:
        dist = None
        nb = blk.size
        if acc["theta_c"] is not None:
            theta = acc["theta_c"]
            prod = scratch("sample-logits", (theta.shape[0], nb), theta.dtype)
            np.matmul(theta, blk.T, out=prod)
            dist = np.max(prod, axis=0)
            np.negative(dist, out=dist)
            np.maximum(dist, 0.0, out=dist)  # rounding can make a centre's own distance negative
        if acc["theta_h"] is not None:
            hyp = np.maximum(-(acc["theta_h"] @ blk.T), 0.0)
            if dist is not None:
                np.minimum(hyp, dist, out=hyp)
        elif dist is not None:
            hyp = dist[None, :]
        else:
            hyp = np.ones((1, blk.size))
        w = np.ones(blk.size) if blk.w is None else blk.w.astype(np.float64)
        hyp = hyp.astype(np.float64, copy=False)
        acc["potential"] += hyp @ w
        e = keyed_exponential(self.key, blk.rows)
        x64 = np.asarray(blk.x, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            keys = e / (hyp * w)
        keys[~(keys >= 0)] = np.inf  # 0/0 and negative weights never get drawn
        if self.finite_only:
            keys[:, ~np.isfinite(x64).all(axis=1)] = np.inf
        m = self.n_samples
        for h in range(keys.shape[0]):
            kh = keys[h]
            # only rows at or below the current m-th smallest key can still be drawn
            idx = np.flatnonzero(kh <= acc["cut"][h])
            if idx.size > m:
                part = np.argpartition(kh[idx], m - 1)[:m]
                # ties at the cut must not depend on block boundaries
                idx = idx[kh[idx] <= kh[idx[part]].max()]
            if idx.size:
                acc["parts"][h].append((kh[idx], blk.rows[idx], x64[idx]))
                acc["count"][h] += idx.size
            # merge lazily: sorting the kept rows at every block cost seconds per pass
            if acc["count"][h] > 2 * m + 4096:
                self._compact(acc, h)

    def _compact(self, acc, h) -> None:
        parts = acc["parts"][h]
        if not parts:
            return
        kept = smallest(*(np.concatenate(a) for a in zip(*parts)), self.n_samples)
        acc["parts"][h] = [kept]
        acc["count"][h] = len(kept[0])
        if len(kept[0]) == self.n_samples:
            acc["cut"][h] = kept[0][-1]

    def finish(self, acc, n_features, centre) -> SampleResult:
        h = len(acc["parts"])
        m = self.n_samples
        keys = np.full((h, m), np.inf)
        rows = np.full((h, m), -1, dtype=np.int64)
        points = np.zeros((h, m, n_features))
        for i in range(h):
            self._compact(acc, i)
            if acc["parts"][i]:
                part = acc["parts"][i][0]
                n = len(part[0])
                keys[i, :n], rows[i, :n], points[i, :n] = part
        return SampleResult(acc["potential"].copy(), keys, rows, points)

    def merge(self, a: SampleResult, b: SampleResult) -> SampleResult:
        m = self.n_samples
        keys, rows, points = [], [], []
        for h in range(a.keys.shape[0]):
            kk, rr, pp = smallest(
                np.concatenate([a.keys[h], b.keys[h]]),
                np.concatenate([a.rows[h], b.rows[h]]),
                np.concatenate([a.points[h], b.points[h]]),
                m,
            )
            keys.append(kk)
            rows.append(rr)
            points.append(pp)
        return SampleResult(a.potential + b.potential, np.array(keys), np.array(rows), np.array(points))


class ScanRequest:
    """Row count, weighted mean and variance, and non-finite values per column."""

    level = NO_FEATURES
    width = 0

    def start(self, n_features, dtype, level, centre):
        z = np.zeros(n_features)
        return ScanResult(0, 0.0, z, z, np.zeros(n_features, np.int64), np.zeros(n_features, np.int64), 0)

    def update(self, acc: ScanResult, blk: Block) -> ScanResult:
        x = blk.x
        finite = np.isfinite(x)
        nan = np.isnan(x).sum(axis=0)
        inf = (~finite).sum(axis=0) - nan
        bad = 0
        w = None
        if blk.w is not None:
            w = blk.w.astype(np.float64)
            badw = ~(np.isfinite(w) & (w >= 0))
            bad = int(badw.sum())
            w = np.where(badw, 0.0, w)
        if finite.all():
            xo, wo = np.asarray(x, dtype=np.float64), w
        else:
            rows_ok = finite.all(axis=1)
            xo = np.asarray(x[rows_ok], dtype=np.float64)
            wo = None if w is None else w[rows_ok]
        wb = float(len(xo)) if wo is None else float(wo.sum())
        if wb > 0:
            mb = (xo.sum(axis=0) if wo is None else wo @ xo) / wb
            dev = (xo - mb) ** 2
            m2b = dev.sum(axis=0) if wo is None else wo @ dev
        else:
            mb = m2b = np.zeros(x.shape[1])
        w_, m_, m2_ = chan(acc.weight, acc.mean, acc.m2, wb, mb, m2b)
        return ScanResult(acc.rows + blk.size, w_, m_, m2_, acc.nan + nan, acc.inf + inf, acc.bad_weights + bad)

    def finish(self, acc, n_features, centre) -> ScanResult:
        return acc

    @staticmethod
    def merge(a: ScanResult, b: ScanResult) -> ScanResult:
        w, m, m2 = chan(a.weight, a.mean, a.m2, b.weight, b.mean, b.m2)
        return ScanResult(a.rows + b.rows, w, m, m2, a.nan + b.nan, a.inf + b.inf, a.bad_weights + b.bad_weights)
