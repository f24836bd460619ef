"""Per-chunk sufficient statistics: the kernels of every pass over the data.

Pure NumPy; nothing here knows about Dask.

The central fact this module is built on: the log-density of a Gaussian
component, for any covariance type, and the (negated) squared distance of
k-means are *linear* in the feature vector of a row

    T(x) = [ quadratic terms of x,  x,  1 ]

where the quadratic terms are ``vech(x xᵀ)`` (the upper triangle, for full and
tied covariances), ``x²`` (diagonal) or ``‖x‖²`` (spherical and k-means). So for a
block of rows the E-step of every component of every model is one GEMM,
``L = Θ · T``, and the M-step statistics of every component of every model are
one more, ``S = R · Tᵀ``, where ``R`` holds the responsibilities. ``S`` contains
the responsibility sums, first moments and second moments at once. The rows are
shifted by one centre per fit (the data mean) before ``T`` is built, so the sums
stay small for data with a large offset; statistics are exact sums about that
shift and :mod:`daskgmm.covariance` turns them into parameters.

Layout: a block of ``nb`` rows is held transposed, features by rows
(``xT`` is ``(D, nb)``, ``T`` is ``(P, nb)``), so the quadratic terms are built
with contiguous vector products and the logits ``(K, nb)`` are reduced over
components with contiguous row operations.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from daskgmm._random import keyed_exponential, keyed_uniform

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")

# Feature levels: what quadratic terms T carries.
SPHERICAL_LEVEL = 0  # ‖x‖²            : 1 row
DIAG_LEVEL = 1  # x_j²                 : D rows
FULL_LEVEL = 2  # x_i x_j, i <= j      : D(D+1)/2 rows
NO_FEATURES = -1  # a pass that needs only the raw rows

_STATS_LEVEL = {"full": FULL_LEVEL, "tied": FULL_LEVEL, "diag": DIAG_LEVEL, "spherical": SPHERICAL_LEVEL}


_local = threading.local()


def scratch(name: str, shape: tuple, dtype) -> np.ndarray:
    """A per-thread buffer reused across blocks and chunks (contiguous, uninitialised).

    Blocks allocate nothing large: Dask worker processes run with
    ``MALLOC_TRIM_THRESHOLD_=65536`` (distributed's default), which turns every
    large temporary into a fresh ``mmap`` and its page faults; with two busy
    workers that doubled the time of a chunk.
    """
    pool = getattr(_local, "pool", None)
    if pool is None:
        pool = _local.pool = {}
        _local.slots = {}
    dtype = np.dtype(dtype)
    size = 1
    for n in shape:
        size *= int(n)
    key = (name, dtype.str)
    buf = pool.get(key)
    if buf is None or buf.size < size:
        slot = _local.slots.setdefault(key, len(_local.slots))
        buf = pool[key] = _staggered(max(size, 1), dtype, slot)
    return buf[:size].reshape(shape)


#: Distance, modulo 4 KiB, between the starts of two scratch buffers (a multiple
#: of the 64-byte cache line, odd in lines so that 64 buffers get 64 distinct offsets).
_SLOT_STRIDE = 9 * 64


def _staggered(size: int, dtype: np.dtype, slot: int) -> np.ndarray:
    """An uninitialised 1-D buffer whose start lies ``slot * 576`` bytes past a 4 KiB boundary.

    A block's per-row vectors are 16 KiB long (``BLOCK_VECTOR_BYTES``), so
    every row of every buffer starts at the same offset within a 4 KiB page
    as the buffer itself. Large allocations all start at the same offset
    (``mmap`` pages plus malloc's header), and a loop that reads one buffer
    while writing another at an address equal modulo 4 KiB stalls on every
    load (4K aliasing: the CPU takes the store for one to the same address).
    Copying a (16, 2048) block between two such buffers measured 97 µs
    instead of 10 µs. Giving each named buffer its own offset avoids it.
    """
    offset = (slot * _SLOT_STRIDE) % 4096
    raw = np.empty(size * dtype.itemsize + 4096, dtype=np.uint8)
    start = (offset - raw.ctypes.data) % 4096
    return raw[start : start + size * dtype.itemsize].view(dtype)


def argmax_rows(a: np.ndarray, best: np.ndarray, top: np.ndarray) -> None:
    """Arg-max and max over the components of logits ``a`` (M, K, n), into ``best`` and ``top`` (M, n).

    Component by component with contiguous vector operations over all M models
    at once: for K up to a few dozen this is several times faster than
    ``argmax(axis=1)``, which walks across rows. Ties go to the first
    component, as with ``argmax``.
    """
    top[...] = a[:, 0]
    best.fill(0)
    mask = scratch("argmax-mask", top.shape, bool)
    for k in range(1, a.shape[1]):
        np.greater(a[:, k], top, out=mask)
        best[mask] = k
        np.maximum(top, a[:, k], out=top)


#: Floor on ``logit - row max`` before ``exp``, per dtype: about 8 above the log of the
#: smallest normal number (-708.4 for float64, -87.3 for float32). Below it NumPy's
#: SIMD ``exp`` leaves its fast path (measured here: 0.7 ns per float64 element in
#: [-700, 0], 17-113 ns below -708, where results are subnormal). A clamped term
#: contributes exp(-700) ~ 1e-304 of its row's largest instead of less: no float sum
#: it enters can tell, and scikit-learn adds 10 eps to every responsibility sum.
EXP_FLOOR = {np.dtype(np.float64): -700.0, np.dtype(np.float32): -79.0}


def soft_responsibilities(lm: np.ndarray, top: np.ndarray, tot: np.ndarray) -> np.ndarray:
    """Turn logits ``lm`` (M, K, nb) of M models into responsibilities in place.

    Exact, as scikit-learn's ``exp(logit - logsumexp)``: every term is
    computed, none is dropped. ``logit - row max`` is clamped at
    :data:`EXP_FLOOR` first so that ``exp`` never takes its slow underflow
    path. Models that share K are done together: the same work in M times
    fewer NumPy calls.

    Parameters
    ----------
    lm : ndarray, shape (M, K, nb), C-contiguous
    top, tot : ndarray, shape (M, nb)
        Scratch of the same dtype; ``tot`` holds the result.

    Returns
    -------
    log_p : ndarray, shape (M, nb)
        ``log Σ_k exp(lm_k)`` per model and row (a view of ``tot``).
    """
    np.max(lm, axis=1, out=top)
    np.subtract(lm, top[:, None, :], out=lm)
    np.maximum(lm, EXP_FLOOR[lm.dtype], out=lm)
    np.exp(lm, out=lm)
    np.sum(lm, axis=1, out=tot)
    # one reciprocal per row, then a product: cheaper than K divisions per row
    inv = scratch("soft-inverse", tot.shape, tot.dtype)
    np.reciprocal(tot, out=inv)
    np.multiply(lm, inv[:, None, :], out=lm)
    np.log(tot, out=tot)
    tot += top  # log p(x) = max + log Σ exp(· - max)
    return tot


def stats_level(covariance_type: str) -> int:
    """Feature level needed for the second moments of ``covariance_type``."""
    try:
        return _STATS_LEVEL[covariance_type]
    except KeyError:
        raise ValueError(
            f"covariance_type must be one of {COVARIANCE_TYPES}, got {covariance_type!r}"
        ) from None


def n_quad_rows(level: int, n_features: int) -> int:
    """Number of quadratic feature rows at ``level``."""
    return (1, n_features, n_features * (n_features + 1) // 2)[level]


def n_feature_rows(level: int, n_features: int) -> int:
    """Total rows ``P`` of ``T`` at ``level``: quadratic terms, ``x``, and 1."""
    return n_quad_rows(level, n_features) + n_features + 1


def _diag_positions(n_features: int) -> np.ndarray:
    """Positions of the ``x_i²`` terms inside ``vech(x xᵀ)`` (row-major upper triangle)."""
    d = n_features
    return np.array([i * d - i * (i - 1) // 2 for i in range(d)], dtype=np.intp)


def build_features(xT: np.ndarray, level: int, out: np.ndarray) -> np.ndarray:
    """Fill ``out`` with the feature rows ``T`` of a centred, transposed block.

    Parameters
    ----------
    xT : ndarray, shape (D, nb)
        Centred rows, transposed and C-contiguous.
    level : {0, 1, 2}
        Which quadratic terms to build (spherical, diag, full).
    out : ndarray, shape (P, nb)
        Destination, same dtype as ``xT``; ``P = n_feature_rows(level, D)``.

    Returns
    -------
    out : ndarray, shape (P, nb)
    """
    d = xT.shape[0]
    q = n_quad_rows(level, d)
    if level == FULL_LEVEL:
        off = 0
        for i in range(d):
            np.multiply(xT[i], xT[i:], out=out[off : off + d - i])
            off += d - i
    elif level == DIAG_LEVEL:
        np.multiply(xT, xT, out=out[:d])
    else:
        np.einsum("ij,ij->j", xT, xT, out=out[0])
    out[q : q + d] = xT
    out[q + d] = 1.0
    return out


@dataclass(frozen=True)
class NaturalParams:
    """Per-component log-densities as quadratic forms of the centred row ``x``.

    ``logit_k(x) = quad_k(x) + lin[k] · x + const[k]`` with ``quad_k`` one of
    ``xᵀ A_k x`` (``quad`` of shape (K, D, D), symmetric), ``Σ_j a_kj x_j²``
    (shape (K, D)) or ``a_k ‖x‖²`` (shape (K,)).
    """

    quad: np.ndarray
    lin: np.ndarray
    const: np.ndarray

    @property
    def n_components(self) -> int:
        return self.lin.shape[0]

    @property
    def level(self) -> int:
        return {3: FULL_LEVEL, 2: DIAG_LEVEL, 1: SPHERICAL_LEVEL}[self.quad.ndim]

    def theta(self, level: int) -> np.ndarray:
        """Coefficient matrix ``Θ`` of shape (K, P) against features at ``level``."""
        if level < self.level:
            raise ValueError("features of a lower level cannot express these log-densities")
        k, d = self.lin.shape
        q = n_quad_rows(level, d)
        out = np.zeros((k, q + d + 1), dtype=np.float64)
        if self.quad.ndim == 3:
            iu0, iu1 = np.triu_indices(d)
            out[:, :q] = self.quad[:, iu0, iu1] * np.where(iu0 == iu1, 1.0, 2.0)
        elif self.quad.ndim == 2:
            if level == FULL_LEVEL:
                out[:, _diag_positions(d)] = self.quad
            else:
                out[:, :d] = self.quad
        else:
            if level == FULL_LEVEL:
                out[:, _diag_positions(d)] = self.quad[:, None]
            elif level == DIAG_LEVEL:
                out[:, :d] = self.quad[:, None]
            else:
                out[:, 0] = self.quad
        out[:, q : q + d] = self.lin
        # A weight of zero gives log 0 = -inf; keep it finite so that BLAS never
        # multiplies inf by a zero of its own padding.
        out[:, q + d] = np.maximum(self.const, -1e30)
        return out


def kmeans_natural_params(centres: np.ndarray) -> NaturalParams:
    """``-‖x - c_k‖²`` as natural parameters, for centred ``centres`` (K, D)."""
    c = np.asarray(centres, dtype=np.float64)
    return NaturalParams(
        quad=-np.ones(c.shape[0]), lin=2.0 * c, const=-np.einsum("kd,kd->k", c, c)
    )


# ---------------------------------------------------------------------------
# Sufficient statistics


def _frozen(a) -> np.ndarray:
    a = np.array(a, dtype=np.float64, copy=True)
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class WorstRows:
    """The rows a model explains worst (lowest per-row objective), for re-seeding.

    Attributes
    ----------
    values : ndarray, shape (m,)
        Per-row log-likelihood (soft) or best logit (hard), ascending.
    rows : ndarray of int64, shape (m,)
        Global row numbers (ties are broken by row number, so any chunking
        gives the same rows).
    points : ndarray, shape (m, D)
        The rows themselves, in data coordinates.
    weights : ndarray, shape (m,)
        Their sample weights (ones when the pass has none).
    """

    values: np.ndarray
    rows: np.ndarray
    points: np.ndarray
    weights: np.ndarray

    def merge(self, other: WorstRows, m: int) -> WorstRows:
        return WorstRows.smallest(
            np.concatenate([self.values, other.values]),
            np.concatenate([self.rows, other.rows]),
            np.concatenate([self.points, other.points]),
            np.concatenate([self.weights, other.weights]),
            m,
        )

    @staticmethod
    def smallest(values, rows, points, weights, m) -> WorstRows:
        """The ``m`` rows with smallest (value, row), in that order."""
        order = _smallest_order(values, rows, m)
        return WorstRows(values[order], rows[order], points[order], weights[order])


def _smallest_order(keys, rows, m):
    order = np.lexsort((rows, keys))
    return order[:m] if len(keys) > m else order


def _smallest(keys, rows, points, m):
    """The ``m`` entries with smallest (key, row), in that order."""
    order = _smallest_order(keys, rows, m)
    return keys[order], rows[order], points[order]


@dataclass(frozen=True)
class SuffStats:
    """Sufficient statistics of one model over some rows; merge is addition.

    All sums are float64 and weighted by ``sample_weight`` when one is given.
    Moments are about ``shift`` (one point shared by all chunks of a pass), so
    merging is plain addition: associative and commutative, safe in any tree.

    Attributes
    ----------
    n : ndarray, shape (K,)
        ``Σ_i w_i r_ik``.
    s1 : ndarray, shape (K, D)
        ``Σ_i w_i r_ik (x_i - shift)``.
    s2 : ndarray
        Second moments ``Σ_i w_i r_ik (x_i - shift)(x_i - shift)ᵀ`` in the shape of
        ``covariance_type``: full (K, D, D); tied (D, D), pooled over components;
        diag (K, D), the diagonal; spherical (K,), the trace.
    loglik : float
        ``Σ_i w_i log p(x_i)`` for soft assignment; for hard assignment
        ``Σ_i w_i max_k logit_k(x_i)`` (the classification log-likelihood, or
        minus the inertia for k-means).
    weight : float
        ``Σ_i w_i`` (the number of rows when unweighted).
    rows : int
        Number of rows.
    shift : ndarray, shape (D,) or (K, D)
        One centre for all components (the fast path), or each component's
        own mean (the precise path).
    covariance_type : str
    worst : WorstRows or None
        The rows with the lowest per-row objective, when requested.
    """

    n: np.ndarray
    s1: np.ndarray
    s2: np.ndarray
    loglik: float
    weight: float
    rows: int
    shift: np.ndarray
    covariance_type: str
    worst: WorstRows | None = field(default=None, compare=False)

    @classmethod
    def zero(cls, n_components: int, shift: np.ndarray, covariance_type: str) -> SuffStats:
        """The identity of :meth:`merge`."""
        k, d = n_components, np.shape(shift)[-1]
        s2_shape = {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}
        return cls(
            n=_frozen(np.zeros(k)),
            s1=_frozen(np.zeros((k, d))),
            s2=_frozen(np.zeros(s2_shape[covariance_type])),
            loglik=0.0,
            weight=0.0,
            rows=0,
            shift=_frozen(shift),
            covariance_type=covariance_type,
        )

    @property
    def n_components(self) -> int:
        return self.n.shape[0]

    def merge(self, other: SuffStats) -> SuffStats:
        """Sum of the statistics of two disjoint sets of rows."""
        if self.covariance_type != other.covariance_type or self.n.shape != other.n.shape:
            raise ValueError("cannot merge statistics of different models")
        if not np.array_equal(self.shift, other.shift):
            raise ValueError("cannot merge statistics taken about different shifts")
        worst = self.worst
        if worst is None:
            worst = other.worst
        elif other.worst is not None:
            worst = worst.merge(other.worst, max(len(worst.values), len(other.worst.values)))
        return SuffStats(
            n=_frozen(self.n + other.n),
            s1=_frozen(self.s1 + other.s1),
            s2=_frozen(self.s2 + other.s2),
            loglik=self.loglik + other.loglik,
            weight=self.weight + other.weight,
            rows=self.rows + other.rows,
            shift=self.shift,
            covariance_type=self.covariance_type,
            worst=worst,
        )


# ---------------------------------------------------------------------------
# Requests: what one pass computes. A pass runs a list of requests over every
# chunk; each request folds blocks into an accumulator, turns it into an
# immutable partial result per chunk, and merges partial results pairwise.


@dataclass
class Block:
    """One cache-sized block of a chunk, as the requests see it.

    Attributes
    ----------
    x : ndarray, shape (nb, D)
        The rows as stored (data coordinates).
    xT : ndarray, shape (D, nb) or None
        Rows minus the pass centre, transposed (None for a pass without centre).
    T : ndarray, shape (P, nb) or None
        Feature rows at ``level``.
    w : ndarray, shape (nb,) or None
        Sample weights (None: all ones).
    rows : ndarray of int64, shape (nb,)
        Global row numbers.
    """

    x: np.ndarray
    xT: np.ndarray | None
    T: np.ndarray | None
    level: int
    w: np.ndarray | None
    rows: np.ndarray

    @property
    def size(self) -> int:
        return self.x.shape[0]

    def weight_sum(self) -> float:
        return float(self.size) if self.w is None else float(self.w.sum(dtype=np.float64))

    def weighted_sum(self, values: np.ndarray) -> float:
        if self.w is None:
            return float(values.sum(dtype=np.float64))
        return float(np.dot(values.astype(np.float64, copy=False), self.w))


@dataclass(frozen=True)
class PerComponent:
    """Gaussian log-densities in scikit-learn's per-component form, for the precise path.

    ``logit_k(x) = const[k] - ‖U_kᵀ (x - m_k)‖² / 2`` with ``x`` and ``m`` centred.
    Each component's rows are differenced from its own mean before anything is
    squared, so no precision is lost however far the mean lies from the
    centre, and the statistics are taken about each component's mean (the
    per-component shift). Costs about twice the shared-feature path.

    Attributes
    ----------
    means : ndarray, shape (K, D)
        Component means minus the pass centre.
    factor : ndarray
        Precision Cholesky factors ``U``: (K, D, D) full, (D, D) tied, (K, D)
        diag, (K,) spherical.
    const : ndarray, shape (K,)
        ``log π_k + log det U_k - D/2 log 2π``.
    covariance_type : str
    """

    means: np.ndarray
    factor: np.ndarray
    const: np.ndarray
    covariance_type: str

    def whitened(self, xT: np.ndarray) -> np.ndarray:
        """``Y[k] = U_kᵀ (x - m_k)`` for a block, shape (K, D, nb), in a scratch buffer."""
        k, d = self.means.shape
        nb = xT.shape[1]
        dt = xT.dtype
        z = scratch("pc-diff", (k, d, nb), dt)
        np.subtract(xT[None, :, :], self.means.astype(dt)[:, :, None], out=z)
        ct = self.covariance_type
        if ct in ("full", "tied"):
            u = np.broadcast_to(self.factor, (k, d, d)) if ct == "tied" else self.factor
            y = scratch("pc-white", (k, d, nb), dt)
            np.matmul(np.ascontiguousarray(u.transpose(0, 2, 1)).astype(dt), z, out=y)
            return y, z
        u = self.factor if ct == "diag" else np.broadcast_to(self.factor[:, None], (k, d))
        return z * u.astype(dt)[:, :, None], z

    def logits(self, xT: np.ndarray, out: np.ndarray) -> tuple:
        """Write the (K, nb) logits of a centred, transposed block into ``out``; return the differences."""
        y, z = self.whitened(xT)
        np.einsum("kdn,kdn->kn", y, y, out=out)
        out *= -0.5
        out += self.const.astype(out.dtype)[:, None]
        return z


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
        ``daskgmm.covariance.precise_needed``), about each component's mean.
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
        diag = quad[:, _diag_positions(d)]
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
                n=_frozen(n),
                s1=_frozen(s1),
                s2=_frozen(s2),
                loglik=float(acc["loglik"][m]),
                weight=float(acc["weight"]),
                rows=int(acc["rows"]),
                shift=_frozen(shift),
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
class SampleResult:
    """Weighted sample without replacement, per hypothesis (see :class:`SampleRequest`).

    Attributes
    ----------
    potential : ndarray, shape (H,)
        ``Σ_i w_i d_h(x_i)`` for each hypothesis ``h``.
    keys, rows : ndarray, shape (H, m)
        Sort keys (ascending; ``inf`` marks a row that could not be drawn) and
        global row numbers of the drawn rows.
    points : ndarray, shape (H, m, D)
        The drawn rows, in data coordinates.
    """

    potential: np.ndarray
    keys: np.ndarray
    rows: np.ndarray
    points: np.ndarray


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
        kept = _smallest(*(np.concatenate(a) for a in zip(*parts)), self.n_samples)
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
            kk, rr, pp = _smallest(
                np.concatenate([a.keys[h], b.keys[h]]),
                np.concatenate([a.rows[h], b.rows[h]]),
                np.concatenate([a.points[h], b.points[h]]),
                m,
            )
            keys.append(kk)
            rows.append(rr)
            points.append(pp)
        return SampleResult(a.potential + b.potential, np.array(keys), np.array(rows), np.array(points))


@dataclass(frozen=True)
class ScanResult:
    """What one pass without a model learns of the data.

    Attributes
    ----------
    rows : int
    weight : float
        Sum of sample weights.
    mean, m2 : ndarray, shape (D,)
        Weighted mean and sum of weighted squared deviations (Chan et al.'s
        pairwise update, stable for any offset).
    nan, inf : ndarray of int64, shape (D,)
        Number of NaN and of ±inf values per column.
    bad_weights : int
        Sample weights that are negative or not finite.
    """

    rows: int
    weight: float
    mean: np.ndarray
    m2: np.ndarray
    nan: np.ndarray
    inf: np.ndarray
    bad_weights: int

    @property
    def variance(self) -> np.ndarray:
        return self.m2 / self.weight if self.weight > 0 else np.zeros_like(self.m2)


def _chan(wa, ma, m2a, wb, mb, m2b):
    w = wa + wb
    if w <= 0:
        return w, ma, m2a
    delta = mb - ma
    return w, ma + delta * (wb / w), m2a + m2b + delta**2 * (wa * wb / w)


class ScanRequest:
    """Row count, weighted mean and variance, and non-finite values per column."""

    level = NO_FEATURES

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
        w_, m_, m2_ = _chan(acc.weight, acc.mean, acc.m2, wb, mb, m2b)
        return ScanResult(acc.rows + blk.size, w_, m_, m2_, acc.nan + nan, acc.inf + inf, acc.bad_weights + bad)

    def finish(self, acc, n_features, centre) -> ScanResult:
        return acc

    @staticmethod
    def merge(a: ScanResult, b: ScanResult) -> ScanResult:
        w, m, m2 = _chan(a.weight, a.mean, a.m2, b.weight, b.mean, b.m2)
        return ScanResult(a.rows + b.rows, w, m, m2, a.nan + b.nan, a.inf + b.inf, a.bad_weights + b.bad_weights)


# ---------------------------------------------------------------------------
# The per-chunk entry point

#: Bytes of one per-row vector of a block (2048 float64 or 4096 float32 rows). With
#: two busy workers sharing the L3 cache this measured best (float64, K=16, full:
#: 0.52 s per pass at 2048 rows against 0.64 s at 8192; float32 best at 4096-8192;
#: diagonal 0.34 s against 0.43 s): a block's logits stay in L2.
BLOCK_VECTOR_BYTES = 16 << 10
#: Upper bound on the bytes of features plus logits of one block.
BLOCK_BYTES = 16 << 20


def block_rows_for(n_rows_features: int, itemsize: int, block_rows: int | None = None) -> int:
    """Rows per block: 16 KiB per-row vectors, fewer rows when ``n_rows_features`` rows would
    exceed ``BLOCK_BYTES``."""
    if block_rows:
        return int(block_rows)
    nb = min(BLOCK_VECTOR_BYTES // itemsize, BLOCK_BYTES // max(1, n_rows_features * itemsize))
    return int(max(512, nb))


def chunk_pass(x, requests, centre=None, *, sample_weight=None, row0=0, block_rows=None):
    """Run every request over one chunk of rows.

    Parameters
    ----------
    x : ndarray, shape (n, D)
        The chunk, float32 or float64.
    requests : list
        Request objects (:class:`MixtureRequest`, :class:`SampleRequest`,
        :class:`ScanRequest`).
    centre : ndarray, shape (D,) or None
        The pass's shift; required when any request needs features.
    sample_weight : ndarray, shape (n,) or None
    row0 : int
        Global row number of the chunk's first row.
    block_rows : int, optional
        Rows per block (default: sized for the cache).

    Returns
    -------
    list
        One partial result per request (merge them with :func:`merge_partials`).
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"a chunk must be 2-D, got shape {x.shape}")
    n, d = x.shape
    dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    level = max(r.level for r in requests)
    if level > NO_FEATURES and centre is None:
        raise ValueError("a pass that builds features needs a centre")
    centre64 = None if centre is None else np.asarray(centre, dtype=np.float64)
    accs = [r.start(d, dtype, level, centre64) for r in requests]
    if n:
        p = n_feature_rows(level, d) if level > NO_FEATURES else d
        width = sum(getattr(r, "width", 0) for r in requests)
        nb = block_rows_for(p + width, dtype.itemsize, block_rows)
        w_all = None if sample_weight is None else np.asarray(sample_weight).reshape(-1)
        if w_all is not None and len(w_all) != n:
            raise ValueError(f"sample_weight has {len(w_all)} rows, the chunk has {n}")
        if level > NO_FEATURES:
            c = centre64.astype(dtype)[:, None]
        for a in range(0, n, nb):
            b = min(n, a + nb)
            xb = x[a:b]
            if xb.dtype != dtype:
                xb = xb.astype(dtype)
            xT = T = None
            if level > NO_FEATURES:
                xT = scratch("xT", (d, b - a), dtype)
                np.subtract(xb.T, c, out=xT)
                T = build_features(xT, level, scratch("features", (p, b - a), dtype))
            blk = Block(
                x=xb,
                xT=xT,
                T=T,
                level=level,
                w=None if w_all is None else w_all[a:b],
                rows=np.arange(row0 + a, row0 + b, dtype=np.int64),
            )
            for i, r in enumerate(requests):
                res = r.update(accs[i], blk)
                if res is not None:
                    accs[i] = res
    return [r.finish(acc, d, centre64) for r, acc in zip(requests, accs)]


def merge_partials(requests, a: list, b: list) -> list:
    """Merge two chunks' partial results, request by request."""
    return [r.merge(pa, pb) for r, pa, pb in zip(requests, a, b, strict=True)]


def points_stats(points: np.ndarray, shift: np.ndarray, covariance_type: str) -> SuffStats:
    """Statistics of responsibilities that put one unit on each of ``points`` (K, D).

    This is scikit-learn's "k-means++" and "random_from_data" initialisation:
    component k is responsible for exactly the k-th chosen row. Each row is
    its own shift, so the moments about it are exactly zero (taken about a
    far centre, ``s2 - m mᵀ`` would cancel terms of size ``‖x - c‖²`` and leave
    rounding noise larger than ``reg_covar``). ``shift`` is unused and kept
    for the signature.
    """
    p = np.asarray(points, dtype=np.float64)
    k = p.shape[0]
    zero = SuffStats.zero(k, p, covariance_type)
    return SuffStats(
        n=_frozen(np.ones(k)), s1=zero.s1, s2=zero.s2, loglik=0.0, weight=float(k), rows=k,
        shift=_frozen(p), covariance_type=covariance_type,
    )


def component_logits(x: np.ndarray, params: NaturalParams, centre: np.ndarray, block_rows=None) -> np.ndarray:
    """Per-row logits ``logit_k(x_i)`` of a block of rows, shape (n, K), in the data dtype.

    Parameters
    ----------
    x : ndarray, shape (n, D)
    params : NaturalParams or PerComponent
        Log-densities about ``centre`` (per-component form when the model is
        badly conditioned for the shared features).
    centre : ndarray, shape (D,)
    """
    x = np.asarray(x)
    dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    n, d = x.shape
    if isinstance(params, PerComponent):
        out = np.empty((n, params.means.shape[0]), dtype=dtype)
        nb = block_rows_for(params.means.size, dtype.itemsize, block_rows)
        c = np.asarray(centre, dtype=np.float64).astype(dtype)[:, None]
        for a in range(0, n, nb):
            b = min(n, a + nb)
            xt = scratch("xT", (d, b - a), dtype)
            np.subtract(x[a:b].T.astype(dtype, copy=False), c, out=xt)
            lt = scratch("pc-logits", (params.means.shape[0], b - a), dtype)
            params.logits(xt, lt)
            out[a:b] = lt.T
        return out
    level = params.level
    theta = params.theta(level).astype(dtype)
    out = np.empty((n, theta.shape[0]), dtype=dtype)
    p = theta.shape[1]
    nb = block_rows_for(p + theta.shape[0], dtype.itemsize, block_rows)
    c = np.asarray(centre, dtype=np.float64).astype(dtype)[:, None]
    for a in range(0, n, nb):
        b = min(n, a + nb)
        xt = scratch("xT", (d, b - a), dtype)
        np.subtract(x[a:b].T.astype(dtype, copy=False), c, out=xt)
        out[a:b] = (theta @ build_features(xt, level, scratch("features", (p, b - a), dtype))).T
    return out
