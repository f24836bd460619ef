#!/usr/bin/env python3
"""Fused full-covariance EM block kernel (numba + LLVM vector IR) against NumPy + OpenBLAS, one thread.

Evidence for the performance issue: the EM iteration target needs a compiled kernel that fuses the
features, the E step and the M step per block of rows; NumPy + OpenBLAS on the same blocks is ~4x slower.
This is a measurement, not product code.

Usage (numba is not a project dependency)::

    .venv/bin/pip install numba
    OPENBLAS_NUM_THREADS=1 .venv/bin/python scripts/fused_kernel/bench.py  # --help for the options

About 20 s with the defaults, ~9 s of it compiling. Nothing is cached: the generated code depends on
the options, which numba's cache key does not see.

What it measures
    K = 16 components, D = 16 features, float64; X (N, 16) row-major; theta (K, F) the natural parameters
    over the F = 153 features T(x) = (x_i x_j for i <= j, x, 1). Per row: logits L = theta T(x),
    responsibilities R = softmax(L), ll = logsumexp(L), and the moments S += R T(x)^T. It checks ll (every
    row) and S, which depend on all of L and R, against a NumPy reference (relative error max|diff| /
    max|ref|; it stops above 1e-11), then prints CPU time (time.process_time, min over --repeats interleaved
    runs) in ms per 1M rows, and GFLOP/s counting only the 2 K F flops per row of each product (E: theta T;
    M: R T^T; fused and numpy: both):
      T      the per-block copy of X into the transposed buffer
      E, M   that kernel alone, once per block, on the buffer of the last block
      fused  T + E + M block after block: the whole EM pass over the rows
      numpy  the same on 2048-row blocks: features, theta @ T (dgemm), exp, R @ T.T (dgemm); its blocks are
             transposed before the clock starts
    and square dgemm GFLOP/s as the machine's one-thread yardstick.

Design (ir_kernels.py generates the IR, every loop over components and features unrolled in Python, and
wraps it as numba @intrinsic functions called by an @njit driver)
    Blocks of --block-rows (256) are copied into a contiguous (16, 256 + --padding) buffer, transposed so that
    V = 8 rows of one feature are one zmm load. Reading the 16 feature rows straight from a transposed
    (16, N) array puts them 8 MB apart, on the same L1 sets: the M kernel thrashed (105-109 ms for the same
    8x3 tiles in the prototype) and the copy costs 14 ms. The padding keeps the rows of the buffer and of
    R off the same sets too.
    E kernel, per tile of V rows: the 16 x vectors and the 16 logit accumulators fill the 32 zmm registers;
    each of the 152 non-constant features is one multiply feeding 16 FMAs whose theta[k, f] operand is an
    embedded broadcast from memory (theta is 19.6 KB and stays in L1). Then max, exp(max(L - m, -700))
    (clamped like the reference, so no branch), sum, one division and log, as inline vector polynomials.
    theta is deliberately not marked noalias: with it LLVM hoisted all 2448 broadcasts out of the tile loop
    and spilled them to the stack.
    M kernel: S is accumulated per lane, Sv (K, F, V) summed at the end, in register tiles of
    --m-tile-components x --m-tile-features (8 x 3 = 24 zmm); each register tile sweeps the block's row
    tiles, loading R and recomputing x_i x_j (cheaper than a T stored by E: E 123 ms, M 93 ms that way).

Results, 2026-11-24, 2 vCPU Xeon (KVM, AVX-512; square dgemm 76-88 GFLOP/s one thread), N = 2^20, defaults
    errors: ll 4.3e-15, S 5.3e-14
    ms per 1M rows      T          E        M        fused      numpy
      prototype         13.5       75-78    71-74    162-171    633-682
      this script       13.7-14.3  64-78    70-73    163-170    593-641
    fused ~60 GFLOP/s against NumPy's ~15: ~4x (3.6-3.9x in this script's three runs)
    compile ~9 s (the prototype inlined the kernels: 13-16 s; from numba's cache, cache=True with fixed
    options, 0.28 s in a new process)
    --vector-width 4 (ymm): E 139 ms, M 114 ms, fused 263 ms; the prototype without the copy, M tiles 16x1
    168 ms, 4x6 108 ms, 8x2 85 ms
    An earlier naive attempt, scripts/numba_fused_estep.py (in git history; plain @njit loops, innermost
    over rows, L stored at every FMA: load/store bound), reached 3.3-3.4 GFLOP/s, ~1450 ms per 1M rows for
    the logits alone against NumPy's 280-300 ms for features + GEMM; this benchmark supersedes it.

Not done
    K and D are fixed at 16 (unrolled when the IR is generated); rows must be a multiple of --block-rows
    (no tail); no sample weights, no missing values, no lockstep models (several models in one pass over
    the rows); one thread; float64; the numbers need AVX-512 (32 vector registers; V = 4 is ymm, slower); not
    wired into daskgmm.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

try:
    import numba
    from numba import njit
except ImportError:
    sys.exit("numba is not installed: pip install numba")

import ir_kernels as ik
from ir_kernels import IU, NQ, D, F, K

NUMPY_BLOCK = 2048
MAX_RELERR = 1e-11


def make_data(n, seed=0):
    """Centred rows from 16 unit Gaussians, and theta of 16 full-covariance Gaussians at about their means."""
    rng = np.random.default_rng(seed)
    mus = rng.normal(scale=2.0, size=(K, D))
    x = mus[rng.integers(0, K, size=n)] + rng.normal(size=(n, D))
    x -= x.mean(0)
    theta = np.empty((K, F))
    for k in range(K):
        a = rng.normal(size=(D, D)) * 0.3
        sigma = a @ a.T + np.eye(D) * 0.7
        prec = np.linalg.inv(sigma)
        q = -0.5 * prec
        q = q + q.T - np.diag(np.diag(q))  # x_i x_j appears once for i < j: off-diagonal doubled
        theta[k, :NQ] = q[IU]
        theta[k, NQ:NQ + D] = prec @ mus[k]
        theta[k, -1] = -0.5 * mus[k] @ prec @ mus[k] - 0.5 * np.linalg.slogdet(sigma)[1] + np.log(1.0 / K)
    return np.ascontiguousarray(x), theta


def numpy_block(xT, theta, S):
    """NumPy E and M step of one transposed block xT (D, nb): returns ll, adds into S."""
    T = np.empty((F, xT.shape[1]))
    np.multiply(xT[IU[0]], xT[IU[1]], out=T[:NQ])
    T[NQ:NQ + D] = xT
    T[-1] = 1.0
    L = theta @ T
    m = L.max(0)
    E = np.exp(np.maximum(L - m, -700.0))
    s = E.sum(0)
    S += (E / s) @ T.T
    return m + np.log(s)


def numpy_reference(X, theta):
    S = np.zeros((K, F))
    ll = [numpy_block(np.ascontiguousarray(X[a:a + NUMPY_BLOCK].T), theta, S)
          for a in range(0, X.shape[0], NUMPY_BLOCK)]
    return np.concatenate(ll), S


def relerr(a, ref):
    return float(np.max(np.abs(a - ref)) / np.max(np.abs(ref)))


def make_driver(e_kernel, m_kernel, nb, ldb, width):
    """@njit pass over the rows; the flags pick the stages so that one compiled driver times each alone."""
    ntiles = nb // width

    @njit(boundscheck=False)
    def run(X, th, xb, R, LL, Sv, do_t, do_e, do_m):
        for a in range(0, X.shape[0], nb):
            if do_t:
                for i in range(nb):
                    for j in range(D):
                        xb[j, i] = X[a + i, j]
            if do_e:
                e_kernel(xb, ldb, th, R, ldb, LL[a:], ntiles)
            if do_m:
                m_kernel(xb, ldb, R, ldb, Sv, ntiles)

    return run


def cpu_min(fns, repeats):
    """Min CPU seconds of each function, the runs interleaved so that noise hits all of them alike."""
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, np.inf)
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.process_time()
            fn()
            best[name] = min(best[name], time.process_time() - t0)
    return best


def dgemm_gflops(n=2048, repeats=3):
    a = np.random.default_rng(1).random((n, n))
    c = np.empty_like(a)
    t = cpu_min({'dgemm': lambda: np.matmul(a, a, out=c)}, repeats)['dgemm']
    return 2 * n**3 / t / 1e9


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--vector-width', type=int, default=8, choices=(2, 4, 8), help='doubles per vector (8 = zmm)')
    p.add_argument('--block-rows', type=int, default=256, help='rows per block, a multiple of the vector width')
    p.add_argument('--m-tile-components', type=int, default=8, help='components per M register tile')
    p.add_argument('--m-tile-features', type=int, default=3, help='features per M register tile')
    p.add_argument('--padding', type=int, default=8, help='extra columns in each row of the block buffers')
    p.add_argument('--rows', type=int, default=1 << 20, help='rows of X, a multiple of the block rows')
    p.add_argument('--repeats', type=int, default=8, help='timed runs of each variant (the min is reported)')
    args = p.parse_args()
    if args.block_rows % args.vector_width:
        p.error('--block-rows must be a multiple of --vector-width')
    if args.rows % args.block_rows:
        p.error('--rows must be a multiple of --block-rows (no tail handling)')
    return args


def main():
    args = parse_args()
    threadpool_limits(1)
    width, nb = args.vector_width, args.block_rows
    ldb = nb + args.padding
    n = args.rows
    print(f'V={width} block rows={nb} M tile={args.m_tile_components}x{args.m_tile_features} '
          f'padding={args.padding} rows={n} (numba {numba.__version__}, NumPy {np.__version__})')

    X, theta = make_data(n)
    th = np.ascontiguousarray(theta).ravel()
    ll_ref, S_ref = numpy_reference(X, theta)

    m_kernel = ik.make_m_intrinsic(width, args.m_tile_components, args.m_tile_features)
    run = make_driver(ik.make_e_intrinsic(width), m_kernel, nb, ldb, width)
    xb = np.zeros((D, ldb))
    R = np.zeros((K, ldb))
    LL = np.zeros(n)
    Sv = np.zeros((K, F, width))

    t0 = time.perf_counter()
    run(X, th, xb, R, LL, Sv, True, True, True)
    print(f'compile + first pass: {time.perf_counter() - t0:.1f} s')
    asm = run.inspect_asm(run.signatures[0])
    print(f'driver asm: {asm.count(chr(10))} lines, {asm.count("vfmadd")} vfmadd, '
          f'{asm.count("zmm")} zmm / {asm.count("ymm")} ymm operands, {asm.count("(%rsp)")} stack references')

    errs = {'ll': relerr(LL, ll_ref), 'S': relerr(Sv.sum(-1), S_ref)}
    print('relative error vs NumPy: ' + '  '.join(f'{k} {v:.1e}' for k, v in errs.items()))
    if max(errs.values()) > MAX_RELERR:
        sys.exit(f'FAILED: relative error above {MAX_RELERR:g}')

    blocks = [np.ascontiguousarray(X[a:a + NUMPY_BLOCK].T) for a in range(0, n, NUMPY_BLOCK)]
    S_np = np.zeros((K, F))

    def stage(t, e, m):
        return lambda: run(X, th, xb, R, LL, Sv, t, e, m)

    def numpy_pass():
        for xT in blocks:
            numpy_block(xT, theta, S_np)

    fns = {'T': stage(True, False, False), 'E': stage(False, True, False), 'M': stage(False, False, True),
           'fused': stage(True, True, True), 'numpy': numpy_pass}
    best = cpu_min(fns, args.repeats)
    print(f'square dgemm 2048, one thread: {dgemm_gflops():.1f} GFLOP/s')
    gflop = 2 * K * F * n / 1e9  # one product
    products = {'T': 0, 'E': 1, 'M': 1, 'fused': 2, 'numpy': 2}
    print(f'{"":6s} {"ms/1M rows":>10s} {"GFLOP/s":>8s}   (CPU time, min of {args.repeats})')
    for name, t in best.items():
        rate = f'{products[name] * gflop / t:8.1f}' if products[name] else f'{"-":>8s}'
        print(f'{name:6s} {t * 1e9 / n:10.1f} {rate}')
    print(f'fused is {best["numpy"] / best["fused"]:.1f}x faster than numpy')


if __name__ == '__main__':
    main()
