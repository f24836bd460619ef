"""The compiled block kernel of soft mixture passes: features, E step, softmax and M step fused.

NumPy + OpenBLAS spend most of a full-covariance pass writing and re-reading the feature
rows ``T`` and the logits between separate calls (``scripts/profile_kernel.py``). This
kernel keeps them in registers: per tile of 8 rows it computes each feature product
``T_f = x_a x_b`` once and feeds it to the logits of up to 16 components, takes the
clamped softmax in place, and accumulates the moments ``R Tᵀ`` in 8 by 3 register tiles,
over 256-row sub-blocks copied (centred, transposed) into an L1-sized buffer
(:mod:`daskgmm.kernels.compiled_ir` generates it). ``tests/test_compiled.py`` compares it
with the NumPy steps of :mod:`daskgmm.kernels.requests`, which stay the reference and the
path for everything this kernel does not take (float32, hard or random assignment, the
per-component precise path, incomplete rows, ``Σ r log r``).

Every feature is a product of two rows of the buffer: the centred ``x`` (rows ``0..D-1``),
a row of ones (``D``) and ``‖x‖²`` (``D + 1``), so one kernel serves every covariance
type, in the feature order of :func:`daskgmm.kernels.features.build_features`.

It is used on Linux x86-64 with AVX-512 (32 vector registers hold 16 logits and the row
vectors). The first use on a machine compiles it (llvmlite, in a subprocess, ~2 s) into an
object file in the cache directory, keyed by the generator's source and the CPU; every
process then maps that file (:mod:`daskgmm.kernels.elfload`), so no worker loads LLVM.
A pass asks for it (``chunk_pass(..., compiled=True)``) only when the data are large
enough (``daskgmm.engine.COMPILED_MIN_ROWS``), so a small fit never waits on the build;
a larger one waits for it once per machine.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import threading

import numpy as np

from daskgmm.kernels import responsibilities
from daskgmm.kernels.features import FULL_LEVEL, SPHERICAL_LEVEL, n_quad_rows
from daskgmm.kernels.scratch import scratch

#: Longest wait for the compiling subprocess.
COMPILE_TIMEOUT = 300
#: Doubles per vector (one zmm register); rows per sub-block (its rows of x, logits and
#: responsibilities stay in L1/L2); extra columns per buffer row (so that the rows of the
#: buffers do not share L1 sets). The generator (compiled_ir) imports these.
V, SUB_ROWS, PAD = 8, 256, 8
#: Rows per block of a pass whose requests all run this kernel (chunk_pass's blocks): the kernel
#: keeps its own scratch per sub-block, so a block bounds only the Python work around each call,
#: ~30 µs (a 131,072-row chunk, K = D = 16: 27.7 ms in blocks of 2,048 rows, 25.9 in 16,384).
BLOCK_ROWS = 16384
#: Components per logits tile, largest first (16 logits and the row vectors fill 32 registers).
LOGIT_TILES = (16, 8, 4, 2, 1)
#: The M step's register tile: components x features.
M_COMPONENTS, M_FEATURES = 8, 3
#: ``daskgmm_block``'s arguments, in order (``*`` pointers to float64, ``#`` to int64, else int64).
BLOCK_ARGS = ("*x", "n", "d", "*centre", "*w", "*th", "nfp", "#pa", "#pb", "#runs", "nruns", "#bounds", "nmodels",
              "*S", "nkt", "*per_row", "ldp", "*xb", "*lb", "*llb", "*wb", "ld")

_state = {"kernel": None, "thread": None, "error": None}
_lock = threading.Lock()


def feature_pairs(level: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Buffer rows ``(a_f, b_f)`` whose product is feature ``f``, padded to a multiple of 3 features.

    The order is that of ``build_features``: quadratic terms, ``x``, 1; the padding
    features are ``1 · 1`` and their moments are discarded.
    """
    one, sq = d, d + 1
    if level == FULL_LEVEL:
        quad = [(i, j) for i in range(d) for j in range(i, d)]
    elif level == SPHERICAL_LEVEL:
        quad = [(sq, one)]
    else:
        quad = [(i, i) for i in range(d)]
    assert len(quad) == n_quad_rows(level, d)
    pairs = quad + [(i, one) for i in range(d)] + [(one, one)]
    pairs += [(one, one)] * (-len(pairs) % M_FEATURES)
    pa, pb = np.array(pairs, dtype=np.int64).T
    return np.ascontiguousarray(pa), np.ascontiguousarray(pb)


def feature_runs(pa: np.ndarray, pb: np.ndarray, n_features: int) -> np.ndarray:
    """The first ``n_features`` pairs as runs ``(a, b, count, f0)``: features ``f0 + j`` are ``(a, b + j)``."""
    runs = []
    for f in range(n_features):
        a, b = int(pa[f]), int(pb[f])
        last = runs[-1] if runs else None
        if last and last[0] == a and last[1] + last[2] == b:
            last[2] += 1
        else:
            runs.append([a, b, 1, f])
    return np.ascontiguousarray(runs, dtype=np.int64).reshape(-1, 4)


def padded_rows(w: int) -> int:
    """Rows of the moments accumulator for ``w`` logits: a whole number of M tiles."""
    return -(-w // M_COMPONENTS) * M_COMPONENTS


def wanted() -> str | None:
    """Why this process cannot use the compiled kernel, or None if it can try.

    ``DASKGMM_KERNEL=numpy`` switches it off (every pass then uses the NumPy reference).
    """
    if os.environ.get("DASKGMM_KERNEL", "").lower() == "numpy":
        return "switched off by DASKGMM_KERNEL=numpy"
    if sys.platform != "linux" or platform.machine() != "x86_64":
        return "not Linux x86-64"
    flags = next((ln for ln in _cpu_identity() if ln.startswith("flags")), "")
    if "avx512f" not in flags.partition(":")[2].split():
        return "no AVX-512"
    return None


def _cpu_identity() -> list[str]:
    """The first CPU's ``model name`` and ``flags`` lines of /proc/cpuinfo (none if unreadable)."""
    try:
        first = pathlib.Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    except OSError:
        return []
    return [ln for ln in first.splitlines() if ln.startswith(("model name", "flags"))]


def cache_path() -> pathlib.Path:
    """Where this machine's object file lives: ``$DASKGMM_CACHE_DIR`` or ``~/.cache/daskgmm``.

    The name hashes the generator's source, the CPU model and flags, and the Python
    version, so a changed generator or a different machine compiles afresh.
    """
    root = os.environ.get("DASKGMM_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "daskgmm")
    cpu = "\n".join(_cpu_identity())
    key = hashlib.sha256(f"{source_key()}|{cpu}|{sys.version}".encode()).hexdigest()[:20]
    return pathlib.Path(root) / f"kernel-{key}.o"


def source_key() -> str:
    """What the compiled object depends on in this package: the generator and the modules whose
    constants it imports (this one, for the tile sizes; responsibilities, for the clamp), hashed."""
    here = pathlib.Path(__file__)
    h = hashlib.sha256()
    for path in (here.with_name("compiled_ir.py"), here, pathlib.Path(responsibilities.__file__)):
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def ready():
    """The compiled kernel (a :class:`Kernel`), or None if it cannot be had.

    The first call starts a daemon thread that compiles it, or loads it from the cache,
    and every call waits for that thread, at most ``COMPILE_TIMEOUT`` + 30 s (the
    subprocess's own bound, plus loading). A failure is remembered in ``error()`` and
    never retried in this process.
    """
    if _state["kernel"] is not None or _state["error"] is not None:
        return _state["kernel"]
    with _lock:
        if _state["thread"] is None:
            why = wanted()
            if why is not None:
                _state["error"] = why
                return None
            _state["thread"] = threading.Thread(target=_build, name="daskgmm-compile", daemon=True)
            _state["thread"].start()
    _state["thread"].join(COMPILE_TIMEOUT + 30)
    return _state["kernel"]


def error() -> str | None:
    """Why the compiled kernel is not in use in this process (None: in use, or not yet decided)."""
    return _state["error"]


def _build() -> None:
    try:
        from daskgmm.kernels.elfload import load_object

        path = cache_path()
        if not path.exists():
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                _compile_into(path)
            except OSError:  # no writable cache: this process builds its own copy
                path = pathlib.Path(tempfile.mkdtemp(prefix="daskgmm-")) / path.name
                _compile_into(path)
        _state["kernel"] = Kernel(load_object(path.read_bytes())["daskgmm_block"])
    except Exception as exc:
        _state["error"] = f"{type(exc).__name__}: {exc}"


def _compile_into(path: pathlib.Path) -> None:
    """Run the generator in a subprocess (LLVM never enters this process); bounded by COMPILE_TIMEOUT."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "kernel.o")
        proc = subprocess.run(
            [sys.executable, "-m", "daskgmm.kernels.compiled_ir", out],
            capture_output=True, text=True, timeout=COMPILE_TIMEOUT, check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"compiling the kernel failed: {proc.stderr.strip()[-2000:]}")
        tmp_path = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp_path.write_bytes(pathlib.Path(out).read_bytes())
        tmp_path.replace(path)  # atomic: another process sees the whole file or none


class Kernel:
    """The loaded ``daskgmm_block`` function (see :func:`daskgmm.kernels.compiled_ir.build_block`)."""

    def __init__(self, address: int):
        argtypes = [ctypes.c_void_p if a[0] in "*#" else ctypes.c_int64 for a in BLOCK_ARGS]
        self._fn = ctypes.CFUNCTYPE(None, *argtypes)(address)  # releases the GIL while it runs


class Fused:
    """One chunk's state for the compiled kernel: stacked parameters, feature table, moments.

    Parameters
    ----------
    kernel : Kernel
    theta : ndarray, shape (W, P)
        Natural parameters of all models, stacked, at the pass's level.
    bounds : ndarray, shape (M + 1,)
        Model ``m`` owns rows ``bounds[m]:bounds[m + 1]``.
    level, n_features : int
    centre : ndarray, shape (D,)
    """

    def __init__(self, kernel, theta, bounds, level, n_features, centre):
        self.kernel = kernel
        self.pa, self.pb = feature_pairs(level, n_features)
        w, p = theta.shape
        self.width, self.n_feature_rows = w, p
        self.theta = np.zeros((w, len(self.pa)))
        self.theta[:, :p] = theta
        self.runs = feature_runs(self.pa, self.pb, p)
        self.bounds = np.ascontiguousarray(bounds, dtype=np.int64)
        self.lanes = np.zeros((padded_rows(w), len(self.pa), V))
        self.centre = np.ascontiguousarray(centre, dtype=np.float64)
        self.d = n_features
        self._ones = np.ones(0)

    def moments(self) -> np.ndarray:
        """``Σ_rows R Tᵀ`` so far, shape (W, P), responsibilities weighted."""
        return self.lanes.sum(axis=2)[: self.width, : self.n_feature_rows]

    def update(self, x, w, per_row) -> None:
        """Fold rows ``x`` (n, D) float64 with weights ``w`` (n,) or None; ``per_row`` (M, n) gets log p(x)."""
        n = x.shape[0]
        x = np.ascontiguousarray(x, dtype=np.float64)
        if w is None:
            if self._ones.shape[0] < n:
                self._ones = np.ones(n)
            w = self._ones
        else:
            w = np.ascontiguousarray(w, dtype=np.float64)
        ld = SUB_ROWS + PAD
        d = self.d
        xb = scratch("fused-x", (d + 2, ld), np.float64)
        lb = scratch("fused-logits", (self.lanes.shape[0], ld), np.float64)
        llb = scratch("fused-loglik", (ld,), np.float64)
        wb = scratch("fused-weights", (ld,), np.float64)
        if not (per_row.flags.c_contiguous and per_row.shape == (len(self.bounds) - 1, n)):
            # the kernel writes per_row through a raw pointer
            raise ValueError(f"per_row must be C-contiguous of shape {(len(self.bounds) - 1, n)}, got {per_row.shape}")
        self.kernel._fn(
            x.ctypes.data, n, d, self.centre.ctypes.data, w.ctypes.data, self.theta.ctypes.data, len(self.pa),
            self.pa.ctypes.data, self.pb.ctypes.data, self.runs.ctypes.data, len(self.runs),
            self.bounds.ctypes.data, len(self.bounds) - 1,
            self.lanes.ctypes.data, self.lanes.shape[0] // M_COMPONENTS, per_row.ctypes.data, n,
            xb.ctypes.data, lb.ctypes.data, llb.ctypes.data, wb.ctypes.data, ld,
        )
