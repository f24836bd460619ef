"""LLVM vector IR for the fused EM block kernels, wrapped as numba intrinsics (see bench.py for the design).

Every loop over components and features is unrolled here, in Python, for K = D = 16; the IR only loops
over tiles of V rows. Vectors are ``<V x double>``; V = 8 is one AVX-512 zmm register.

E kernel ``e(x, ldx, th, R, ldr, LL, ntiles)``: x (D, ldx) block, transposed; th (K, F) flat;
    writes R (K, ldr) responsibilities and LL (rows) log-likelihoods.
M kernel ``m(x, ldx, R, ldr, Sv, ntiles)``: Sv (K, F, V) += per-lane partial sums of R @ T(x).T.
"""

import math

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

K = 16
D = 16
IU = np.triu_indices(D)
NQ = len(IU[0])  # 136 products x_i x_j, i <= j, row-major upper triangle
F = NQ + D + 1  # 153 features: products, x, 1
PAIRS = list(zip(IU[0].tolist(), IU[1].tolist(), strict=True))

DBL = ir.DoubleType()
I64 = ir.IntType(64)
I32 = ir.IntType(32)
DPTR = DBL.as_pointer()


class Vec:
    """``<V x double>`` operations on an ir.IRBuilder."""

    def __init__(self, builder, width):
        self.b = builder
        self.width = width
        self.vt = ir.VectorType(DBL, width)
        self.vi = ir.VectorType(I64, width)
        self.fma_f = self._declare('llvm.fma', 3)
        self.max_f = self._declare('llvm.maxnum', 2)
        self.floor_f = self._declare('llvm.floor', 1)
        self.zeros_i32 = ir.Constant(ir.VectorType(I32, width), [0] * width)

    def _declare(self, name, nargs):
        full = f'{name}.v{self.width}f64'
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
        return ir.Constant(self.vt, [float(c)] * self.width)

    def iconst(self, c):
        return ir.Constant(self.vi, [c] * self.width)

    def bcast(self, base, off):
        """Splat of one double from memory; the backend folds it into the FMA as a {1toV} operand."""
        s = self.b.load(self.b.gep(base, [off]), align=8)
        v = self.b.insert_element(ir.Constant(self.vt, ir.Undefined), s, ir.Constant(I32, 0))
        return self.b.shuffle_vector(v, ir.Constant(self.vt, ir.Undefined), self.zeros_i32)

    def fma(self, a, b, c):
        return self.b.call(self.fma_f, [a, b, c])

    def max(self, a, b):
        return self.b.call(self.max_f, [a, b])

    def exp(self, z):
        """exp(z) for z in [-708, 0]: Cody-Waite reduction, degree-13 Taylor, 2^n put in the exponent bits."""
        b = self.b
        n = b.call(self.floor_f, [self.fma(z, self.const(1.4426950408889634), self.const(0.5))])
        r = self.fma(n, self.const(-0.693145751953125), z)
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
        big = b.fcmp_ordered('>', m, self.const(math.sqrt(2.0)))
        m = b.select(big, b.fmul(m, self.const(0.5)), m)
        e = b.select(big, b.add(e, self.iconst(1)), e)
        u = b.fdiv(b.fsub(m, self.const(1.0)), b.fadd(m, self.const(1.0)))
        u2 = b.fmul(u, u)
        p = self.const(1.0 / 23)
        for d in range(21, 0, -2):
            p = self.fma(p, u2, self.const(1.0 / d))
        two_u_p = b.fmul(b.fmul(u, self.const(2.0)), p)
        return self.fma(b.sitofp(e, self.vt), self.const(math.log(2.0)), two_u_p)


def _loop(builder, n, body, name):
    """``for it in range(n): body(it)`` with n an i64 value."""
    fn = builder.function
    pre = builder.block
    hdr = fn.append_basic_block(name + '.hdr')
    bb = fn.append_basic_block(name + '.body')
    ex = fn.append_basic_block(name + '.exit')
    builder.branch(hdr)
    builder.position_at_end(hdr)
    it = builder.phi(I64)
    it.add_incoming(ir.Constant(I64, 0), pre)
    builder.cbranch(builder.icmp_signed('<', it, n), bb, ex)
    builder.position_at_end(bb)
    body(it)
    it.add_incoming(builder.add(it, ir.Constant(I64, 1)), builder.block)
    builder.branch(hdr)
    builder.position_at_end(ex)


def _tree(op, vs):
    while len(vs) > 1:
        vs = [op(vs[i], vs[i + 1]) for i in range(0, len(vs), 2)]
    return vs[0]


def build_e(module, width):
    name = f'ekern_v{width}'
    if name in module.globals:
        return module.globals[name]
    fnty = ir.FunctionType(ir.VoidType(), [DPTR, I64, DPTR, DPTR, I64, DPTR, I64])
    fn = ir.Function(module, fnty, name)
    fn.linkage = 'internal'
    # noinline: one copy per module. Inlined, LLVM copied the kernels once per combination of the driver's
    # stage flags (3x the code, 38 s to compile instead of 9 s), for no speed.
    fn.attributes.add('noinline')
    # No noalias on any argument: if th is known not to alias the stores, LICM hoists all K*F = 2448 theta
    # splats out of the tile loop and spills them, instead of leaving them as broadcast FMA operands.
    x, ldx, th, R, ldr, LL, ntiles = fn.args
    b = ir.IRBuilder(fn.append_basic_block('entry'))
    vec = Vec(b, width)

    def row_off(ld, i, col):
        return b.add(b.mul(ld, ir.Constant(I64, i)), col)

    def body(it):
        col = b.mul(it, ir.Constant(I64, width))
        xs = [vec.load(x, row_off(ldx, i, col)) for i in range(D)]
        logits = [vec.bcast(th, ir.Constant(I64, k * F + F - 1)) for k in range(K)]
        for f in range(F - 1):
            t = b.fmul(xs[PAIRS[f][0]], xs[PAIRS[f][1]]) if f < NQ else xs[f - NQ]
            for k in range(K):
                logits[k] = vec.fma(vec.bcast(th, ir.Constant(I64, k * F + f)), t, logits[k])
        m = _tree(vec.max, logits)
        # same clamp as the reference: exp(max(l - m, -700)) keeps exp() in range without a branch
        es = [vec.exp(vec.max(b.fsub(lk, m), vec.const(-700.0))) for lk in logits]
        s = _tree(b.fadd, es)
        inv = b.fdiv(vec.const(1.0), s)
        for k in range(K):
            vec.store(b.fmul(es[k], inv), R, row_off(ldr, k, col))
        vec.store(b.fadd(m, vec.log(s)), LL, col)

    _loop(b, ntiles, body, 'tile')
    b.ret_void()
    return fn


def m_groups(kg, fg):
    """Register tiles of the M step: (components, features) pairs, kg * fg accumulators each."""
    return [(range(k0, min(K, k0 + kg)), range(f0, min(F, f0 + fg)))
            for k0 in range(0, K, kg) for f0 in range(0, F, fg)]


def build_m(module, width, kg, fg):
    name = f'mkern_v{width}_{kg}x{fg}'
    if name in module.globals:
        return module.globals[name]
    fnty = ir.FunctionType(ir.VoidType(), [DPTR, I64, DPTR, I64, DPTR, I64])
    fn = ir.Function(module, fnty, name)
    fn.linkage = 'internal'
    fn.attributes.add('noinline')  # as in build_e
    for a in (0, 2, 4):
        fn.args[a].add_attribute('noalias')
    x, ldx, R, ldr, Sv, ntiles = fn.args
    b = ir.IRBuilder(fn.append_basic_block('entry'))
    vec = Vec(b, width)
    for gi, (ks, fs) in enumerate(m_groups(kg, fg)):
        acc = {}
        for k in ks:
            for f in fs:
                acc[k, f] = b.alloca(vec.vt)  # mem2reg turns these into registers (phis)
                b.store(vec.load(Sv, ir.Constant(I64, (k * F + f) * width)), acc[k, f])

        def body(it, ks=ks, fs=fs, acc=acc):
            col = b.mul(it, ir.Constant(I64, width))
            need = sorted({i for f in fs if f < NQ + D for i in (PAIRS[f] if f < NQ else (f - NQ,))})
            xs = {i: vec.load(x, b.add(b.mul(ldx, ir.Constant(I64, i)), col)) for i in need}
            # features recomputed from x: one multiply is cheaper than a load of a stored T
            ts = {f: b.fmul(xs[PAIRS[f][0]], xs[PAIRS[f][1]]) if f < NQ else xs[f - NQ] if f < NQ + D else None
                  for f in fs}
            for k in ks:
                r = vec.load(R, b.add(b.mul(ldr, ir.Constant(I64, k)), col))
                for f in fs:
                    a = b.load(acc[k, f])
                    b.store(b.fadd(a, r) if ts[f] is None else vec.fma(r, ts[f], a), acc[k, f])

        _loop(b, ntiles, body, f'g{gi}')
        for k in ks:
            for f in fs:
                vec.store(b.load(acc[k, f]), Sv, ir.Constant(I64, (k * F + f) * width))
    b.ret_void()
    return fn


def _data_ptr(context, builder, aryty, ary):
    return context.make_array(aryty)(context, builder, ary).data


def _call(context, builder, signature, args, fn, ptr_args):
    a = list(args)
    for i, ty in enumerate(signature.args):
        if i in ptr_args:
            a[i] = _data_ptr(context, builder, ty, a[i])
        else:
            a[i] = context.cast(builder, a[i], ty, types.int64)
    builder.call(fn, a)
    return context.get_dummy_value()


def make_e_intrinsic(width):
    """numba intrinsic ``e(x, ldx, th, R, ldr, LL, ntiles)``: arrays C-contiguous float64, ld* in elements."""

    @intrinsic
    def e_kernel(typingctx, x, ldx, th, R, ldr, LL, ntiles):
        def codegen(context, builder, signature, args):
            fn = build_e(builder.module, width)
            return _call(context, builder, signature, args, fn, (0, 2, 3, 5))

        return types.void(x, ldx, th, R, ldr, LL, ntiles), codegen

    return e_kernel


def make_m_intrinsic(width, kg, fg):
    """numba intrinsic ``m(x, ldx, R, ldr, Sv, ntiles)``: arrays C-contiguous float64, ld* in elements."""

    @intrinsic
    def m_kernel(typingctx, x, ldx, R, ldr, Sv, ntiles):
        def codegen(context, builder, signature, args):
            fn = build_m(builder.module, width, kg, fg)
            return _call(context, builder, signature, args, fn, (0, 2, 4))

        return types.void(x, ldx, R, ldr, Sv, ntiles), codegen

    return m_kernel
