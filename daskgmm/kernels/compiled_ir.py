"""LLVM vector IR of the compiled block kernel, and the numba driver that runs it over a block.

Run as ``python -m daskgmm.kernels.compiled_ir OUT`` by :mod:`daskgmm.kernels.compiled`, in a
subprocess, so that LLVM never enters a worker. The object's cache key hashes this file and
the modules whose constants it imports (:func:`daskgmm.kernels.compiled.source_key`): changing
any of them rebuilds.

Three kernels, each a loop over tiles of ``V`` rows of a sub-block held transposed in a
buffer ``xb`` (rows: centred ``x``, ones, ``‖x‖²``; ``ld`` doubles apart):

``logits_<kt>(xb, ld, th, ldth, runs, nruns, L, ldl, ntiles)``
    ``L[k] = Σ_f th[k, f] · xb[pa[f]] · xb[pb[f]]`` for ``kt`` components: each feature
    product once per tile, ``kt`` FMAs with ``th`` as broadcast operands, the ``kt``
    sums in registers across the feature loop. The features come in runs
    ``(a, b, count, f0)``: features ``f0 + j = xb[a] · xb[b + j]``, so ``x_a`` is loaded
    once per run (one run per row of the upper triangle).
``softmax(L, ldl, k, w, LL, ntiles)``
    In place ``L[j] ← w · exp(max(L[j] - m, EXP_FLOOR)) / s`` and ``LL = m + log s``
    (``m`` the row max, ``s`` the sum), as :func:`daskgmm.kernels.responsibilities.soft_responsibilities`.
``moments(xb, ld, R, ldr, pa, pb, nft, S, nkt, ntiles)``
    ``S[k, f, lane] += Σ_tiles R[k] · xb[pa[f]] · xb[pb[f]]`` in register tiles of
    ``M_COMPONENTS`` by ``M_FEATURES`` vectors; the lanes are summed by the caller.

``exp`` and ``log`` are vector polynomials: exp by Cody-Waite reduction and a degree-13
Taylor series on [-ln2/2, ln2/2], log by the atanh series of the mantissa; both within a
few ulp (tested against NumPy).
"""

from __future__ import annotations

import math
import pathlib
import sys

import numpy as np
from llvmlite import ir

from daskgmm.kernels.compiled import BLOCK_ARGS, LOGIT_TILES, M_COMPONENTS, M_FEATURES, SUB_ROWS, V
from daskgmm.kernels.responsibilities import EXP_FLOOR as RESPONSIBILITY_EXP_FLOOR

EXP_FLOOR = RESPONSIBILITY_EXP_FLOOR[np.dtype(np.float64)]

DBL = ir.DoubleType()
I64 = ir.IntType(64)
I32 = ir.IntType(32)
DPTR = DBL.as_pointer()
IPTR = I64.as_pointer()


class Vec:
    """``<V x double>`` operations on an ``ir.IRBuilder``."""

    def __init__(self, builder):
        self.b = builder
        self.vt = ir.VectorType(DBL, V)
        self.vi = ir.VectorType(I64, V)
        self.fma_f = self._declare("llvm.fma", 3)
        self.max_f = self._declare("llvm.maxnum", 2)
        self.floor_f = self._declare("llvm.floor", 1)
        self.zeros_i32 = ir.Constant(ir.VectorType(I32, V), [0] * V)

    def _declare(self, name, nargs):
        full = f"{name}.v{V}f64"
        module = self.b.module
        if full in module.globals:
            return module.globals[full]
        return ir.Function(module, ir.FunctionType(self.vt, [self.vt] * nargs), full)

    def ptr(self, base, off):
        return self.b.bitcast(self.b.gep(base, [off]), self.vt.as_pointer())

    def load(self, base, off):
        return self.b.load(self.ptr(base, off), align=8)

    def store(self, v, base, off):
        self.b.store(v, self.ptr(base, off), align=8)

    def const(self, c):
        return ir.Constant(self.vt, [float(c)] * V)

    def iconst(self, c):
        return ir.Constant(self.vi, [c] * V)

    def bcast(self, base, off):
        """Splat of one double from memory; the backend folds it into the FMA as a {1to8} operand."""
        s = self.b.load(self.b.gep(base, [off]), align=8)
        v = self.b.insert_element(ir.Constant(self.vt, ir.Undefined), s, ir.Constant(I32, 0))
        return self.b.shuffle_vector(v, ir.Constant(self.vt, ir.Undefined), self.zeros_i32)

    def fma(self, a, b, c):
        return self.b.call(self.fma_f, [a, b, c])

    def max(self, a, b):
        return self.b.call(self.max_f, [a, b])

    def exp(self, z):
        """exp(z) for z in [EXP_FLOOR, 0]: z = n ln2 + r, a Taylor series in r, 2^n put in the exponent bits."""
        b = self.b
        n = b.call(self.floor_f, [self.fma(z, self.const(1.4426950408889634), self.const(0.5))])
        r = self.fma(n, self.const(-0.693145751953125), z)  # ln2 in two parts: the first exact in n
        r = self.fma(n, self.const(-1.42860682030941723212e-6), r)
        p = self.const(1.0 / math.factorial(13))
        for i in range(12, -1, -1):
            p = self.fma(p, r, self.const(1.0 / math.factorial(i)))
        ni = b.shl(b.add(b.fptosi(n, self.vi), self.iconst(1023)), self.iconst(52))
        return b.fmul(p, b.bitcast(ni, self.vt))

    def log(self, s):
        """log(s) for positive normal s: exponent bits, mantissa in [sqrt(1/2), sqrt(2)), atanh series."""
        b = self.b
        bits = b.bitcast(s, self.vi)
        e = b.sub(b.ashr(bits, self.iconst(52)), self.iconst(1023))
        m = b.bitcast(b.or_(b.and_(bits, self.iconst(0x000FFFFFFFFFFFFF)), self.iconst(0x3FF0000000000000)), self.vt)
        big = b.fcmp_ordered(">", m, self.const(math.sqrt(2.0)))
        m = b.select(big, b.fmul(m, self.const(0.5)), m)
        e = b.select(big, b.add(e, self.iconst(1)), e)
        u = b.fdiv(b.fsub(m, self.const(1.0)), b.fadd(m, self.const(1.0)))
        u2 = b.fmul(u, u)
        p = self.const(1.0 / 23)
        for d in range(21, 0, -2):
            p = self.fma(p, u2, self.const(1.0 / d))
        return self.fma(b.sitofp(e, self.vt), self.const(math.log(2.0)), b.fmul(b.fmul(u, self.const(2.0)), p))


def _loop(builder, start, stop, body, name):
    """``for it in range(start, stop): body(it)``; values carried across iterations go through allocas."""
    pre = builder.block
    counter = []

    def cond():  # the header's first instruction: the counter's phi
        it = builder.phi(I64)
        it.add_incoming(start, pre)
        counter.append(it)
        return builder.icmp_signed("<", it, stop)

    def step():
        it = counter[0]
        body(it)
        it.add_incoming(builder.add(it, ir.Constant(I64, 1)), builder.block)

    _while(builder, cond, step, name)


def _i64(c):
    return ir.Constant(I64, c)


def _function(module, name, argtypes, noalias=()):
    if name in module.globals:
        return module.globals[name], None
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), argtypes), name)
    fn.linkage = "internal"
    # one copy per module: inlined into the driver, LLVM duplicated the kernels per call site
    fn.attributes.add("noinline")
    for a in noalias:
        fn.args[a].add_attribute("noalias")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    return fn, b


def build_logits(module, kt):
    # th is deliberately not noalias: with it LLVM may hoist the broadcasts out of the loops and spill them
    fn, b = _function(module, f"daskgmm_logits_{kt}", [DPTR, I64, DPTR, I64, IPTR, I64, DPTR, I64, I64])
    if b is None:
        return fn
    xb, ld, th, ldth, runs, nruns, L, ldl, ntiles = fn.args
    vec = Vec(b)
    acc = [b.alloca(vec.vt) for _ in range(kt)]  # mem2reg keeps them in registers

    def tile(it):
        col = b.mul(it, _i64(V))
        for a in acc:
            b.store(vec.const(0.0), a)

        def run(r):
            # features f0 + j = xb[ra] * xb[rb + j], j < count: x_a loaded once per run
            ra, rb, count, f0 = (b.load(b.gep(runs, [b.add(b.mul(r, _i64(4)), _i64(c))])) for c in range(4))
            xa = vec.load(xb, b.add(b.mul(ra, ld), col))

            def feature(j):
                t = b.fmul(xa, vec.load(xb, b.add(b.mul(b.add(rb, j), ld), col)))
                f = b.add(f0, j)
                for k in range(kt):
                    c = vec.bcast(th, b.add(b.mul(ldth, _i64(k)), f))
                    b.store(vec.fma(c, t, b.load(acc[k])), acc[k])

            _loop(b, _i64(0), count, feature, "f")

        _loop(b, _i64(0), nruns, run, "run")
        for k in range(kt):
            vec.store(b.load(acc[k]), L, b.add(b.mul(ldl, _i64(k)), col))

    _loop(b, _i64(0), ntiles, tile, "tile")
    b.ret_void()
    return fn


def build_softmax(module):
    fn, b = _function(module, "daskgmm_softmax", [DPTR, I64, I64, DPTR, DPTR, I64], noalias=(0, 3, 4))
    if b is None:
        return fn
    L, ldl, k, w, LL, ntiles = fn.args
    vec = Vec(b)
    top, tot = b.alloca(vec.vt), b.alloca(vec.vt)

    def tile(it):
        col = b.mul(it, _i64(V))

        def at(j):
            return b.add(b.mul(ldl, j), col)

        b.store(vec.load(L, col), top)
        _loop(b, _i64(1), k, lambda j: b.store(vec.max(b.load(top), vec.load(L, at(j))), top), "max")
        m = b.load(top)
        b.store(vec.const(0.0), tot)

        def expo(j):
            e = vec.exp(vec.max(b.fsub(vec.load(L, at(j)), m), vec.const(EXP_FLOOR)))
            vec.store(e, L, at(j))
            b.store(b.fadd(b.load(tot), e), tot)

        _loop(b, _i64(0), k, expo, "exp")
        s = b.load(tot)
        scale = b.fdiv(vec.load(w, col), s)
        _loop(b, _i64(0), k, lambda j: vec.store(b.fmul(vec.load(L, at(j)), scale), L, at(j)), "scale")
        vec.store(b.fadd(m, vec.log(s)), LL, col)

    _loop(b, _i64(0), ntiles, tile, "tile")
    b.ret_void()
    return fn


def build_moments(module):
    fn, b = _function(module, "daskgmm_moments", [DPTR, I64, DPTR, I64, IPTR, IPTR, I64, DPTR, I64, I64],
                      noalias=(0, 2, 7))
    if b is None:
        return fn
    xb, ld, R, ldr, pa, pb, nft, S, nkt, ntiles = fn.args
    vec = Vec(b)
    kc, fc = M_COMPONENTS, M_FEATURES
    acc = [[b.alloca(vec.vt) for _ in range(fc)] for _ in range(kc)]
    nf = b.mul(nft, _i64(fc))

    def component_tile(kt):
        def feature_tile(ft):
            f0 = b.mul(ft, _i64(fc))
            rows = []
            for j in range(fc):
                f = b.add(f0, _i64(j))
                rows.append((b.mul(b.load(b.gep(pa, [f])), ld), b.mul(b.load(b.gep(pb, [f])), ld)))

            def s_at(k, j):  # S is (W8, nf, V)
                return b.mul(b.add(b.mul(b.add(b.mul(kt, _i64(kc)), _i64(k)), nf), b.add(f0, _i64(j))), _i64(V))

            for k in range(kc):
                for j in range(fc):
                    b.store(vec.load(S, s_at(k, j)), acc[k][j])

            def tile(it):
                col = b.mul(it, _i64(V))
                ts = [b.fmul(vec.load(xb, b.add(ra, col)), vec.load(xb, b.add(rb, col))) for ra, rb in rows]
                for k in range(kc):
                    r = vec.load(R, b.add(b.mul(ldr, b.add(b.mul(kt, _i64(kc)), _i64(k))), col))
                    for j in range(fc):
                        b.store(vec.fma(r, ts[j], b.load(acc[k][j])), acc[k][j])

            _loop(b, _i64(0), ntiles, tile, "tile")
            for k in range(kc):
                for j in range(fc):
                    vec.store(b.load(acc[k][j]), S, s_at(k, j))

        _loop(b, _i64(0), nft, feature_tile, "ft")

    _loop(b, _i64(0), nkt, component_tile, "kt")
    b.ret_void()
    return fn


def _while(builder, cond, body, name):
    """``while cond(): body()``, both reading their state from allocas."""
    fn = builder.function
    hdr = fn.append_basic_block(name + ".hdr")
    bb = fn.append_basic_block(name + ".body")
    ex = fn.append_basic_block(name + ".exit")
    builder.branch(hdr)
    builder.position_at_end(hdr)
    builder.cbranch(cond(), bb, ex)
    builder.position_at_end(bb)
    body()
    builder.branch(hdr)
    builder.position_at_end(ex)


def build_block(module):
    """``daskgmm_block``: a block of rows, sub-block by sub-block (see :func:`daskgmm.kernels.compiled.run_pass`).

    x (n, d) row-major; w (n,); th (W, nfp); S (nkt * 8, nfp, V) lanes; per_row (nmodels, ldp);
    xb (d + 2, ld), lb (nkt * 8, ld), llb and wb (ld,) are scratch, ``ld >= SUB_ROWS``.
    """
    types_ = [DPTR if a[0] == "*" else IPTR if a[0] == "#" else I64 for a in BLOCK_ARGS]
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), types_), "daskgmm_block")
    for a, name in zip(fn.args, BLOCK_ARGS, strict=True):
        a.name = name.lstrip("*#")
    x, n, d, centre, w, th, nfp, pa, pb, runs, nruns, bounds, nmodels = fn.args[:13]
    S, nkt, per_row, ldp, xb, lb, llb, wb, ld = fn.args[13:]
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    logits = {kt: build_logits(module, kt) for kt in LOGIT_TILES}
    softmax, moments = build_softmax(module), build_moments(module)
    k0, sq = b.alloca(I64), b.alloca(DBL)
    zero, one = ir.Constant(DBL, 0.0), ir.Constant(DBL, 1.0)

    def at(base, i):
        return b.gep(base, [i])

    def fill(base, row, start, stop, value):
        _loop(b, start, stop, lambda i: b.store(value, at(base, b.add(b.mul(row, ld), i))), "fill")

    nw = b.load(at(bounds, nmodels))
    fill(xb, d, _i64(0), ld, one)  # the row of ones
    # the padding components of the M tiles have zero responsibilities
    _loop(b, nw, b.mul(nkt, _i64(M_COMPONENTS)), lambda k: fill(lb, k, _i64(0), ld, zero), "pad")
    nsub = b.sdiv(b.add(n, _i64(SUB_ROWS - 1)), _i64(SUB_ROWS))

    def sub_block(s):
        a = b.mul(s, _i64(SUB_ROWS))
        rest = b.sub(n, a)
        rows = b.select(b.icmp_signed("<", rest, _i64(SUB_ROWS)), rest, _i64(SUB_ROWS))
        ntiles = b.sdiv(b.add(rows, _i64(V - 1)), _i64(V))

        def copy_row(i):
            b.store(zero, sq)
            src = b.mul(b.add(a, i), d)

            def copy(j):
                v = b.fsub(b.load(at(x, b.add(src, j))), b.load(at(centre, j)))
                b.store(v, at(xb, b.add(b.mul(j, ld), i)))
                b.store(b.fadd(b.load(sq), b.fmul(v, v)), sq)

            _loop(b, _i64(0), d, copy, "copy")
            b.store(b.load(sq), at(xb, b.add(b.mul(b.add(d, _i64(1)), ld), i)))
            b.store(b.load(at(w, b.add(a, i))), at(wb, i))

        _loop(b, _i64(0), rows, copy_row, "rows")
        full = b.mul(ntiles, _i64(V))

        def zero_row(i):  # the last tile's missing rows: zero rows of weight zero
            _loop(b, _i64(0), d, lambda j: b.store(zero, at(xb, b.add(b.mul(j, ld), i))), "zero")
            b.store(zero, at(xb, b.add(b.mul(b.add(d, _i64(1)), ld), i)))
            b.store(zero, at(wb, i))

        _loop(b, rows, full, zero_row, "tail")
        b.store(_i64(0), k0)
        for kt, f in logits.items():
            def call(kt=kt, f=f):
                k = b.load(k0)
                b.call(f, [xb, ld, at(th, b.mul(k, nfp)), nfp, runs, nruns, at(lb, b.mul(k, ld)), ld, ntiles])
                b.store(b.add(k, _i64(kt)), k0)

            _while(b, lambda kt=kt: b.icmp_signed(">=", b.sub(nw, b.load(k0)), _i64(kt)), call, f"logits{kt}")

        def model(m):
            lo = b.load(at(bounds, m))
            hi = b.load(at(bounds, b.add(m, _i64(1))))
            b.call(softmax, [at(lb, b.mul(lo, ld)), ld, b.sub(hi, lo), wb, llb, ntiles])
            out = b.add(b.mul(m, ldp), a)
            _loop(b, _i64(0), rows, lambda i: b.store(b.load(at(llb, i)), at(per_row, b.add(out, i))), "ll")

        _loop(b, _i64(0), nmodels, model, "models")
        b.call(moments, [xb, ld, lb, ld, pa, pb, b.sdiv(nfp, _i64(M_FEATURES)), S, nkt, ntiles])

    _loop(b, _i64(0), nsub, sub_block, "sub")
    b.ret_void()
    return fn


def build_module() -> ir.Module:
    """The whole kernel: ``daskgmm_block`` and the internal kernels it calls."""
    module = ir.Module(name="daskgmm_kernel")
    build_block(module)
    return module


def compile_object(path: str) -> None:
    """Compile the kernel for this machine's CPU into an ELF object file at ``path`` (run in a subprocess).

    Optimised at O3 for the host CPU, position-independent (small code model): the relocations
    :mod:`daskgmm.kernels.elfload` applies; its only calls outside itself are to the C library
    (``memset``), which the loader reaches through trampolines.
    """
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    module = build_module()
    module.triple = llvm.get_process_triple()
    mod = llvm.parse_assembly(str(module))
    mod.verify()
    target = llvm.Target.from_triple(module.triple)
    tm = target.create_target_machine(cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten(),
                                      opt=3, reloc="pic", codemodel="small")
    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)
    # the caller gives a path in its own temporary directory and moves the file into the cache atomically
    pathlib.Path(path).write_bytes(tm.emit_object(mod))


if __name__ == "__main__":
    compile_object(sys.argv[1])
