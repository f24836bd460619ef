"""The compiled core's Python side: which ISA variant this process runs, and the fused block call.

``daskgmm/kernels/_core.cpp`` is compiled at install (``setup.py``) once per variant: on x86-64
``avx512`` (AVX-512 F/DQ/BW/VL), ``avx512_256`` (the same instructions on 256-bit vectors with
32 registers), ``avx2`` (AVX2 + FMA) and ``baseline`` (SSE2); elsewhere ``generic``. At first use
this module asks the baseline (or generic) module for the CPU's features and imports the best
variant the CPU runs (:func:`preferred`): a variant's module is never imported on a CPU without
its instructions. Nothing is compiled, generated or loaded from a cache at run
time. Before a process uses a variant, :mod:`daskgmm.kernels.selfcheck` compares one small
pass through it with the NumPy reference (the user's compiler built it); one that differs is
passed over for the next variant down, or NumPy, with a :class:`KernelCheckWarning`.

``DASKGMM_KERNEL`` chooses: ``auto`` (default, the best variant), ``numpy`` (the NumPy
reference everywhere), or a variant's name (forced; a variant this CPU cannot run, or that was
not built, is an error, never a silent fallback).

The fused call does the block work of a mixture or k-means pass (features, logits,
responsibilities or arg-max, moments) for every covariance type, float32 and float64, soft
and hard assignment, sample weights, ``Σ r log r``, several models at once, and the rows with
missing values of the models that marginalise them (:func:`marginal_form`); the Student-t
mixtures' pass (:class:`FusedStudentT`) is the same with the t step between logits and
responsibilities.
:mod:`daskgmm.kernels.requests` uses it where it applies and keeps the NumPy steps as the
reference and the path for the rest (the per-component precise path, random assignment).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import platform
import threading
import warnings

import numpy as np

from daskgmm.kernels import covariance as cov

#: Variants built on x86-64, best first, and the CPU features each needs.
X86_VARIANTS = {
    "avx512": ("avx512f", "avx512dq", "avx512bw", "avx512vl", "avx2", "fma"),
    "avx512_256": ("avx512f", "avx512dq", "avx512bw", "avx512vl", "avx2", "fma"),
    "avx2": ("avx2", "fma"),
    "baseline": ("sse2",),
}
#: Rows per block of a pass whose requests all run the compiled core (chunk_pass's blocks): the
#: core keeps its own L2-sized scratch per sub-block, so a block bounds only the Python work
#: around each call (about 50 µs a call: blocks of 16,384 rows cost a k-means pass 5%) and the
#: per-row results handed back, 8 bytes per row and model (:func:`block_rows`).
BLOCK_ROWS = 65536
MIN_BLOCK_ROWS = 16384
PER_ROW_BYTES = 4 << 20


def block_rows(n_models: int) -> int:
    """Rows per block of a compiled pass of ``n_models`` models: :data:`BLOCK_ROWS`, fewer for
    many models (``select`` candidates in lockstep) so that their per-row results stay within
    :data:`PER_ROW_BYTES`, never below :data:`MIN_BLOCK_ROWS`."""
    return int(min(BLOCK_ROWS, max(MIN_BLOCK_ROWS, PER_ROW_BYTES // (8 * max(1, n_models)))))
#: Bits of ``modes``: hard assignment; also ``Σ w r log r``.
HARD, RESP_LOG_RESP = 1, 2

class KernelChoiceError(ValueError):
    """``DASKGMM_KERNEL`` names a variant that is unknown, not built, or not runnable on this CPU."""


class KernelCheckWarning(UserWarning):
    """A variant of the compiled core failed its known-answer check; a lower one (or NumPy) is used."""


_state: dict = {}
_lock = threading.Lock()


def _after_fork() -> None:
    # a child forked while another thread chose (and ran the check) inherits the lock held by a
    # thread it does not have: it would wait forever; it chooses again with a lock of its own
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
#: the known-answer check's verdict per variant module (None: passed), kept across :func:`reset`
_verdicts: dict = {}
#: the check itself: :func:`daskgmm.kernels.selfcheck.known_answer`, which runs the requests (above
#: this module) and registers itself when the package is imported, before any pass can ask here
_known_answer: list = []


def register_check(check) -> None:
    """Set the known-answer check run on a variant before it is used (``check(module) -> str | None``)."""
    _known_answer[:] = [check]


def _is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def variant_names() -> list[str]:
    """The variants built on this kind of machine, best first."""
    return list(X86_VARIANTS) if _is_x86() else ["generic"]


def runs(name: str, cpu: dict) -> bool:
    """Whether a CPU with features ``cpu`` runs variant ``name`` (any machine runs ``generic``)."""
    return name == "generic" or all(cpu.get(f) for f in X86_VARIANTS.get(name, ("?",)))


def preferred(built: list[str], cpu: dict) -> list[str]:
    """The built variants this CPU runs, in the order ``auto`` tries them.

    ``avx512_256`` comes first on AMD Zen 4 (``cpu["amd_zen4"]``), which runs a 512-bit operation
    as two 256-bit halves: there it was as fast as or faster than ``avx512`` in every pass but
    k-means with hundreds of clusters, and than ``avx2`` in every pass (``docs/performance.md``,
    *the first AVX-512 host*). Elsewhere it is tried after ``avx512``: on an Intel Xeon with AVX-512
    (twenty-third round) ``avx512`` was faster for full (231-251 against 253-265 ms per 1M rows),
    diag (71-77 against 77-80) and spherical (55-57 against 56-60) covariances, and slower only for k-means
    at K = 16 (23-24 against 22; float32 22 against 16).
    """
    order = [n for n in built if runs(n, cpu)]
    if cpu.get("amd_zen4") and "avx512_256" in order:
        order.remove("avx512_256")
        order.insert(0, "avx512_256")
    return order


def _import(variant: str):
    return importlib.import_module(f"daskgmm.kernels._core_{variant}")


def _asked() -> str:
    return os.environ.get("DASKGMM_KERNEL", "auto").strip().lower() or "auto"


def _detect() -> tuple[list[str], dict, str | None]:
    """The variants built (best first), the CPU's features, and why the probe module does not load (or None)."""
    built, cpu = [], {}
    for name in variant_names():
        try:
            _spec = importlib.util.find_spec(f"daskgmm.kernels._core_{name}")
        except (ImportError, ValueError):
            _spec = None
        if _spec is not None:
            built.append(name)
    probe = "baseline" if _is_x86() else "generic"
    if probe in built:
        try:
            cpu.update(_import(probe).cpu_features())
        except ImportError as exc:
            return built, cpu, f"the compiled core's {probe} module does not load ({exc})"
    return built, cpu, None


def _choose() -> dict:
    """Decide once per process: ``{"module", "variant", "reason", "built", "cpu"}``."""
    asked = _asked()
    names = variant_names()
    built, cpu, broken = _detect()
    out = {"module": None, "variant": "numpy", "reason": None, "built": built, "cpu": cpu, "asked": asked}
    if broken:
        out["reason"] = broken
        return out
    if asked == "numpy":
        out["reason"] = "switched off by DASKGMM_KERNEL=numpy"
        return out
    allowed = {"auto", "numpy", *names}
    if asked not in allowed:
        raise KernelChoiceError(f"DASKGMM_KERNEL must be one of {sorted(allowed)}, got {asked!r}")
    if not built:
        out["reason"] = "the compiled core was not built (no C++ compiler at install?)"
        return out

    if asked != "auto":
        if asked not in built:
            raise KernelChoiceError(f"DASKGMM_KERNEL={asked}: that variant of the compiled core was not built "
                               f"(built: {', '.join(built)})")
        if not runs(asked, cpu):
            missing = [f for f in X86_VARIANTS[asked] if not cpu.get(f)]
            can = ", ".join(n for n in built if runs(n, cpu)) or "none of the built variants"
            raise KernelChoiceError(f"DASKGMM_KERNEL={asked}: this CPU lacks {', '.join(missing)}; it can run {can}")
        pick = asked
    else:
        pick = next(iter(preferred(built, cpu)), None)
        if pick is None:
            out["reason"] = "this CPU runs none of the built variants"
            return out
    out["module"], out["variant"] = _import(pick), pick
    return out


def _checked(state: dict) -> dict:
    """Run the known-answer check (:mod:`daskgmm.kernels.selfcheck`) on the chosen variant; on a
    difference, the next variant down that passes (the choice ``auto``), else NumPy. A forced
    variant that fails is an error. Each module is checked once per process."""
    if state["module"] is None:
        return state

    def failure(module):
        if module not in _verdicts:
            try:
                _verdicts[module] = _known_answer[0](module)
            except Exception as exc:  # e.g. a module built from older sources than this Python code
                _verdicts[module] = f"the check raised {type(exc).__name__}: {exc}"
        return _verdicts[module]

    pick = state["variant"]
    why = failure(state["module"])
    if why is None:
        return state
    if state["asked"] != "auto":
        raise KernelChoiceError(f"DASKGMM_KERNEL={pick}: this build of the compiled core fails its known-answer "
                                f"check on this machine: {why}")
    failed = {pick: why}
    order = preferred(state["built"], state["cpu"])
    below = order[order.index(pick) + 1:]
    for name in below:
        module = _import(name)
        why = failure(module)
        if why is None:
            state["module"], state["variant"] = module, name
            break
        failed[name] = why
    else:
        state["module"], state["variant"] = None, "numpy"
    note = "; ".join(f"the {n} variant fails its known-answer check ({w})" for n, w in failed.items())
    state["failed"] = note
    if state["module"] is None:
        state["reason"] = note
    state["warning"] = (f"daskgmm's compiled core, as built on this machine, gives wrong answers: {note}. Passes "
                        f"use {kernel_name_of(state)}. Please report this with the output of `daskgmm show-config`.")
    return state


def _get() -> dict:
    if not _state:
        with _lock:
            if not _state:
                state = _checked(_choose())
                warning = state.pop("warning", None)
                # the choice is kept before the warning: under a filter that makes it an error, the
                # first use raises it, and show-config (which it asks for) still works
                _state.update(state)
                if warning:
                    warnings.warn(warning, KernelCheckWarning, stacklevel=3)
    return _state


def ready():
    """The compiled core's module for this CPU, or None (the NumPy path; :func:`error` says why)."""
    return _get()["module"]


def error() -> str | None:
    """Why passes use the NumPy path in this process, or None when the compiled core is in use."""
    return _get()["reason"]


def kernel_name_of(state: dict) -> str:
    return "numpy" if state["module"] is None else f"compiled-{state['variant']}"


def kernel_name() -> str:
    """``"compiled-<variant>"`` or ``"numpy"``: what a fit's metrics and verbose output report."""
    return kernel_name_of(_get())


def describe() -> str:
    """``"compiled-<variant>"``, or ``"numpy (<why>)"``; a variant below the best the CPU runs
    says which failed the known-answer check."""
    name = kernel_name()
    if name == "numpy":
        return f"numpy ({error()})"
    failed = _get().get("failed")
    return f"{name} ({failed})" if failed else name


def config() -> dict:
    """The build and this process's choice: what :func:`daskgmm.show_config` prints."""
    try:
        try:
            state = _get()
        except KernelCheckWarning:  # warnings as errors: the choice was kept, the warning raised once
            state = _get()
    except KernelChoiceError as exc:  # no choice, but what is built and what the CPU has are still facts
        built, cpu, _broken = _detect()
        return {"kernel": "none", "reason": str(exc), "DASKGMM_KERNEL": _asked(), "machine": platform.machine(),
                "variants_built": built, "cpu_features": {k: bool(v) for k, v in cpu.items()}}
    mod = state["module"]
    info = {
        "kernel": kernel_name(),
        "reason": state["reason"],
        "DASKGMM_KERNEL": state["asked"],
        "machine": platform.machine(),
        "variants_built": list(state["built"]),
        "known_answer": state.get("failed") or ("passed" if mod is not None else None),
        "cpu_features": {k: bool(v) for k, v in state["cpu"].items()},
    }
    first = mod
    if first is None and state["built"]:
        probe = "baseline" if _is_x86() else "generic"
        try:
            first = _import(probe)
        except ImportError:
            first = None
    if first is not None:
        info["compiler"] = first.compiler
    if mod is not None:
        info["flags"] = mod.flags
        info["vector_bytes"] = mod.vector_bytes
    return info


def reset() -> None:
    """Forget this process's choice (tests change ``DASKGMM_KERNEL`` and choose again)."""
    with _lock:
        _state.clear()


def load_variant(name: str):
    """The module of variant ``name`` if this CPU runs it (tests force each one), else None."""
    state = _get()
    if name not in state["built"]:
        return None
    if not runs(name, state["cpu"]):
        return None
    return _import(name)


def rows_for_core(x, dtype) -> np.ndarray:
    """``x`` (n, D) as the core reads it: in ``dtype``, rows or columns contiguous, aligned.

    A block cut from a chunk (rows of a column-major Parquet chunk, or of a C-ordered array) is
    passed as it lies, its items aligned or not (the core reads them at any byte: an array
    deserialised from a message's frame often starts at an odd one); anything else (another
    dtype, other strides) is copied in C order.
    """
    x = np.asarray(x)
    it = np.dtype(dtype).itemsize
    if x.ndim == 2 and x.dtype == dtype:
        n, d = x.shape
        s0 = x.strides[0] if n > 1 else d * it  # a dimension of length 1: its stride is never used
        s1 = x.strides[1] if d > 1 else it
        if s0 >= 0 and s1 >= 0 and s0 % it == 0 and s1 % it == 0 and it in (s0, s1):
            return x
    return np.ascontiguousarray(x, dtype=dtype)


class _BlockState:
    """What both block calls of the core keep for a chunk: the stacked parameters, their bounds,
    level and centre, the float64 moments ``S``, and the marginalising models' forms."""

    def __init__(self, kernel, theta, bounds, level, centre, marginal):
        self.kernel = kernel
        self.theta = np.ascontiguousarray(theta)
        self.bounds = np.ascontiguousarray(bounds, dtype=np.int64)
        self.level = int(level)
        self.centre = np.ascontiguousarray(centre, dtype=np.float64)
        self.S = np.zeros(self.theta.shape, dtype=np.float64)
        self.marginal = None  # the core's argument: one (means, factor) or None per model
        if marginal:
            self.marginal = [marginal_form(marginal[m]) if m in marginal else None
                             for m in range(len(self.bounds) - 1)]

    def _rows(self, x, w):
        """A block's rows in the parameters' dtype and its weights in float64, contiguous."""
        return rows_for_core(x, self.theta.dtype), None if w is None else np.ascontiguousarray(w, dtype=np.float64)


class Fused(_BlockState):
    """One chunk's state for the compiled core: stacked parameters, modes, float64 moments.

    Parameters
    ----------
    kernel : module
        A variant's module (:func:`ready`).
    theta : ndarray, shape (W, P)
        Natural parameters of all models, stacked, at the pass's level, in the pass's dtype.
    bounds : ndarray, shape (M + 1,)
        Model ``m`` owns logit rows ``bounds[m]:bounds[m + 1]``.
    modes : ndarray of int64, shape (M,)
        Per model: 0 soft, :data:`HARD`, or :data:`RESP_LOG_RESP` (soft, with ``Σ w r log r``).
    level : int
    centre : ndarray, shape (D,)
    marginal : dict, optional
        ``{m: PerComponent}`` for the models that marginalise missing values: their rows with
        NaN are scored by the density of their observed features and add the expected
        statistics of their completions (:func:`marginal_form`); other models leave them out.
    counts : bool, default=False
        Also sum each component's responsibilities before the sample weights into
        :attr:`counts` (W,) (the rows it holds); else :attr:`counts` is None.
    """

    def __init__(self, kernel, theta, bounds, modes, level, centre, marginal=None, counts=False):
        super().__init__(kernel, theta, bounds, level, centre, marginal)
        self.modes = np.ascontiguousarray(modes, dtype=np.int64)
        self.rlogr = np.zeros(len(self.modes), dtype=np.float64)
        self.counts = np.zeros(self.theta.shape[0], dtype=np.float64) if counts else None

    def update(self, x, w, per_row, kmeans_bounds=None):
        """Fold rows ``x`` (n, D) with weights ``w`` (n,) or None; ``per_row`` (M, n) float64 gets
        log p(x) (soft) or the largest logit (hard). Rows with NaN are left out (``per_row`` 0),
        except by the models that marginalise (their marginal log-density, and the expected
        statistics of the completed rows); returns how many rows had NaN.

        ``kmeans_bounds``: ``(label, lower, shift)`` for one k-means model, its rows' bounds
        (:mod:`daskgmm.kernels.bounds`): ``label`` (n,) int32 and ``lower`` (n,) float32 read (when
        ``shift``, (K,) float64, is given) and written; the same results, and the return is then
        (rows with NaN, rows spared)."""
        x, w = self._rows(x, w)
        return self.kernel.mixture_block(x, self.centre, w, self.theta, self.level, self.bounds, self.modes, self.S,
                                         per_row, self.rlogr, marginal=self.marginal, kmeans_bounds=kmeans_bounds,
                                         counts=self.counts)

    @functools.cached_property
    def kmeans_centres(self) -> np.ndarray:
        """The centres (K, D) float64 the core's k-means logits measure distances to: ``lin / (-2 quad)``
        of the parameters as the pass holds them (its dtype), which k-means' bounds refer to."""
        th = self.theta.astype(np.float64)
        return th[:, 1:-1] * (1.0 / (-2.0 * th[0, 0]))


class FusedStudentT(_BlockState):
    """One chunk's state for the compiled core's Student-t pass (``studentt_block``).

    Parameters
    ----------
    kernel : module
        A variant's module (:func:`ready`).
    theta : ndarray, shape (W, P)
        The squared Mahalanobis distances of all models as linear forms of the features, stacked,
        at the pass's level, in the pass's dtype.
    bounds : ndarray, shape (M + 1,)
    df : ndarray, shape (W,)
        Degrees of freedom.
    const, hterm : ndarray, shape (W, D + 1)
        Per number of observed features (column D: complete rows), the log-density's constant and
        ``log1p(d/nu) +`` the digamma terms of the degrees of freedom's statistic.
    level : int
    centre : ndarray, shape (D,)
    marginal : dict, optional
        ``{m: PerComponent}`` for the models that marginalise missing values (as :class:`Fused`).
    """

    def __init__(self, kernel, theta, bounds, df, const, hterm, level, centre, marginal=None):
        super().__init__(kernel, theta, bounds, level, centre, marginal)
        self.df = np.ascontiguousarray(df, dtype=np.float64)
        self.const = np.ascontiguousarray(const, dtype=np.float64)
        self.hterm = np.ascontiguousarray(hterm, dtype=np.float64)
        self.resp = np.zeros(self.theta.shape[0])
        self.log_u = np.zeros(self.theta.shape[0])

    def update(self, x, w, per_row) -> int:
        """Fold rows ``x`` (n, D) with weights ``w`` (n,) or None; ``per_row`` (M, n) float64 gets log p(x)
        (0 for a row with NaN of a model that does not marginalise); returns how many rows had NaN."""
        x, w = self._rows(x, w)
        return self.kernel.studentt_block(x, self.centre, w, self.theta, self.level, self.bounds, self.df,
                                          self.const, self.hterm, self.S, self.resp, self.log_u, per_row,
                                          marginal=self.marginal)


def marginal_form(pc) -> tuple[np.ndarray, np.ndarray]:
    """``(means, factor)`` of a :class:`~daskgmm.kernels.params.PerComponent` as the core's
    ``mixture_block(marginal=...)`` takes them: tied factors repeated per component (K, D, D),
    spherical ones per feature (K, D)."""
    means = np.ascontiguousarray(pc.means, dtype=np.float64)
    k, d = means.shape
    u = cov.of(pc.covariance_type).factors(np.asarray(pc.factor, dtype=np.float64), k, d)
    return means, np.ascontiguousarray(u)
