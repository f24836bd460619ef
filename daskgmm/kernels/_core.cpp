// daskgmm's compiled core: the block work of a mixture or k-means pass, fused.
//
// One source, compiled at install once per ISA variant (setup.py): the vector width and the
// register tiles follow from the flags it is compiled with (AVX-512: 8 doubles in 32
// registers; AVX2 + FMA: 4 in 16; baseline SSE2 and aarch64 NEON: 2). The Python side
// (daskgmm/kernels/compiled.py) picks the best variant this CPU runs, checked by the
// baseline module's cpu_features(); a variant's own module is never imported on a CPU
// that lacks its instructions.
//
// mixture_block folds a block of rows into the statistics of one or more models: per
// sub-block of rows, it copies the rows centred and transposed into the feature buffer T
// (quadratic terms, x, 1: the order of daskgmm.kernels.features.build_features), takes
// the logits L = Theta T in register tiles, turns each model's logits into exact
// responsibilities (soft: exp(max(l - max, floor)) / sum, as
// daskgmm.kernels.responsibilities) or its arg-max (hard), and accumulates the moments
// R T^T (soft: register tiles over rows, summed per lane; hard: each row added to its
// component). Statistics are float64 whatever the data: float32 blocks compute in float32
// lanes and add each sub-block's moments into float64.
//
// Every buffer is checked (format, shape, contiguity, bounds) before a pointer is taken;
// a mismatch raises ValueError. The GIL is released while the block runs; scratch is per
// call, so threads never share it.

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#ifndef DASKGMM_VARIANT
#error "DASKGMM_VARIANT must name the variant (avx512, avx2, baseline, generic)"
#endif

#define DG_STR2(x) #x
#define DG_STR(x) DG_STR2(x)
#define DG_CAT2(a, b) a##b
#define DG_CAT(a, b) DG_CAT2(a, b)

// Bytes per vector and vector registers, from the flags this file is compiled with (or given, to
// run one variant's tiles on another CPU: -DDASKGMM_VBYTES=64 -DDASKGMM_NREGS=32 with -mavx2 runs the
// AVX-512 variant's logic in pairs of AVX2 registers).
#if defined(DASKGMM_VBYTES) && defined(DASKGMM_NREGS)
#define DG_VBYTES DASKGMM_VBYTES
#define DG_NREGS DASKGMM_NREGS
#elif defined(__AVX512F__)
#define DG_VBYTES 64
#define DG_NREGS 32
#elif defined(__AVX2__)
#define DG_VBYTES 32
#define DG_NREGS 16
#elif defined(__aarch64__)
#define DG_VBYTES 16
#define DG_NREGS 32
#else
#define DG_VBYTES 16
#define DG_NREGS 16
#endif

namespace {

template <class T> struct Lanes {
    static constexpr int W = DG_VBYTES / (int)sizeof(T);
    typedef T V __attribute__((vector_size(DG_VBYTES)));
    typedef T UV __attribute__((vector_size(DG_VBYTES), aligned(sizeof(T))));
};
template <class T> struct IntOf;
template <> struct IntOf<double> { typedef int64_t I; };
template <> struct IntOf<float> { typedef int32_t I; };
template <class T> struct IVec {
    typedef typename IntOf<T>::I I;
    typedef I V __attribute__((vector_size(DG_VBYTES)));
};

template <class T> static inline typename Lanes<T>::V load(const T* p) { return *(const typename Lanes<T>::UV*)p; }
template <class T> static inline void store(T* p, typename Lanes<T>::V v) { *(typename Lanes<T>::UV*)p = v; }
template <class T> static inline typename Lanes<T>::V splat(T s) { return (typename Lanes<T>::V){} + s; }
template <class V> static inline V vmax(V a, V b) { return a > b ? a : b; }

// Rows per tile of the logits and moments: RV vectors of W rows.
constexpr int RV = 2;
// Logit tile: KT components x RV row vectors of accumulators, plus the feature vectors and a broadcast.
constexpr int KT = DG_NREGS >= 32 ? 12 : 6;
// Moment tile: MK components x MF features, accumulated over rows (vectors of W rows).
constexpr int MK = DG_NREGS >= 32 ? 8 : 4;
constexpr int MF = 3;

// Floors of logit - row max before exp: daskgmm.kernels.responsibilities.EXP_FLOOR.
template <class T> struct Math;

template <> struct Math<double> {
    typedef Lanes<double>::V V;
    typedef IVec<double>::V I;
    static constexpr double FLOOR = -700.0;
    // exp(z), z in [FLOOR, 0]: z = n ln2 + r (Cody-Waite, ln2 in two parts), degree-13 Taylor in r,
    // 2^n into the exponent bits. Within a few ulp of NumPy's exp.
    static inline V exp(V z) {
        const V shifter = splat<double>(6755399441055744.0);  // 1.5 * 2^52: t - shifter rounds to an integer
        V t = z * 1.4426950408889634 + shifter;
        V n = t - shifter;
        V r = z - n * 0.693145751953125;
        r = r - n * 1.42860682030941723212e-6;
        V p = splat<double>(1.0 / 6227020800.0);
        p = p * r + 1.0 / 479001600.0;
        p = p * r + 1.0 / 39916800.0;
        p = p * r + 1.0 / 3628800.0;
        p = p * r + 1.0 / 362880.0;
        p = p * r + 1.0 / 40320.0;
        p = p * r + 1.0 / 5040.0;
        p = p * r + 1.0 / 720.0;
        p = p * r + 1.0 / 120.0;
        p = p * r + 1.0 / 24.0;
        p = p * r + 1.0 / 6.0;
        p = p * r + 0.5;
        p = p * r + 1.0;
        p = p * r + 1.0;
        I ni = (I)t - (I)shifter;  // n as an integer: the low bits of t
        I bits = (ni + 1023) << 52;
        return p * (V)bits;
    }
    // log(s) for s >= 1 (a softmax's sum: its largest term is exp(0) = 1): exponent bits, the
    // mantissa in [sqrt(1/2), sqrt(2)), and the atanh series of (m - 1) / (m + 1).
    static inline V log(V s) {
        I bits = (I)s;
        I e = (bits >> 52) - 1023;
        V m = (V)((bits & 0x000FFFFFFFFFFFFFLL) | 0x3FF0000000000000LL);
        auto big = m > 1.4142135623730951;
        m = big ? m * 0.5 : m;
        e = big ? e + 1 : e;
        V u = (m - 1.0) / (m + 1.0);
        V u2 = u * u;
        V p = splat<double>(1.0 / 23);
        for (int d = 21; d > 0; d -= 2) p = p * u2 + 1.0 / d;
        // e >= 0 here: as a double through the 2^52 bias, no int64 conversion instruction needed
        V ed = (V)(e + 0x4330000000000000LL) - 4503599627370496.0;
        return ed * 0.6931471805599453 + (u * 2.0) * p;
    }
};

template <> struct Math<float> {
    typedef Lanes<float>::V V;
    typedef IVec<float>::V I;
    static constexpr float FLOOR = -79.0f;
    // Cephes' expf: n = round(z log2 e), r = z - n ln2 (two parts), a degree-5 polynomial.
    static inline V exp(V z) {
        const V shifter = splat<float>(12582912.0f);  // 1.5 * 2^23
        V t = z * 1.44269504088896341f + shifter;
        V n = t - shifter;
        V r = z - n * 0.693359375f;
        r = r - n * -2.12194440e-4f;
        V p = splat<float>(1.9875691500e-4f);
        p = p * r + 1.3981999507e-3f;
        p = p * r + 8.3334519073e-3f;
        p = p * r + 4.1665795894e-2f;
        p = p * r + 1.6666665459e-1f;
        p = p * r + 5.0000001201e-1f;
        p = p * (r * r) + r + 1.0f;
        I ni = (I)t - (I)shifter;
        I bits = (ni + 127) << 23;
        return p * (V)bits;
    }
    static inline V log(V s) {
        I bits = (I)s;
        I e = (bits >> 23) - 127;
        V m = (V)((bits & 0x007FFFFF) | 0x3F800000);
        auto big = m > 1.41421356f;
        m = big ? m * 0.5f : m;
        e = big ? e + 1 : e;
        V u = (m - 1.0f) / (m + 1.0f);
        V u2 = u * u;
        V p = splat<float>(1.0f / 13);
        for (int d = 11; d > 0; d -= 2) p = p * u2 + 1.0f / d;
        V ed = (V)(e + 0x4B000000) - 8388608.0f;  // e >= 0: through the 2^23 bias
        return ed * 0.693147180559945f + (u * 2.0f) * p;
    }
};

inline int64_t quad_rows(int level, int64_t d) { return level == 2 ? d * (d + 1) / 2 : level == 1 ? d : 1; }

template <class T> struct Work {
    static constexpr int W = Lanes<T>::W;
    typedef typename Lanes<T>::V V;
    int64_t d, level, q, nf;  // features: q quadratic, d linear, 1 constant
    int64_t ld;               // row stride of the T and L buffers (rows of a sub-block, padded)
    int64_t nw, nm;           // logit rows (components of every model), models
    const T* theta;           // (nw, nf)
    const int64_t* bounds;    // (nm + 1)
    const int64_t* modes;     // (nm): bit 0 hard, bit 1 sum r log r
    T* tb;                    // (nf, ld) features of the sub-block
    T* lb;                    // (nw, ld) logits, then responsibilities
    T* wb;                    // (ld) weights, zero on the padding rows and rows with NaN
    unsigned char* skip;      // (ld) rows with NaN, left out
    int64_t incomplete;       // rows with NaN so far
    T* lanes;                 // (nw, nf, W) soft moments per lane, in the data's type
    double* lanes64;          // (nw, nf, W) float32 lanes flushed into float64 every FLUSH_ROWS rows
    double* S;                // (nw, nf) the caller's statistics
};

// Copy rows a..a+rows of x into the feature buffer, centred and transposed, and build the features.
template <class T>
void fill_features(Work<T>& k, const T* x, const T* centre, const double* w, int64_t a, int64_t rows, int64_t padded) {
    typedef typename Lanes<T>::V V;
    constexpr int W = Lanes<T>::W;
    const int64_t d = k.d, q = k.q, ld = k.ld;
    T* xs = k.tb + q * ld;  // rows q .. q + d - 1: the centred x
    int64_t incomplete = 0;
    for (int64_t i = 0; i < rows; i++) {
        const T* src = x + (a + i) * d;
        bool nan = false;
        for (int64_t j = 0; j < d; j++) {
            const T v = src[j];
            nan |= v != v;
            xs[j * ld + i] = v - centre[j];
        }
        k.wb[i] = w ? (T)w[a + i] : (T)1;
        k.skip[i] = nan;
        if (nan) {  // left out, as the NumPy path leaves rows with NaN out of models that do not marginalise
            for (int64_t j = 0; j < d; j++) xs[j * ld + i] = 0;
            k.wb[i] = 0;
            incomplete++;
        }
    }
    k.incomplete += incomplete;
    for (int64_t i = rows; i < padded; i++) {
        for (int64_t j = 0; j < d; j++) xs[j * ld + i] = 0;
        k.wb[i] = 0;
    }
    T* ones = k.tb + (q + d) * ld;
    for (int64_t i = 0; i < padded; i += W) store<T>(ones + i, splat<T>((T)1));
    if (k.level == 2) {
        int64_t off = 0;
        for (int64_t a0 = 0; a0 < d; a0++)
            for (int64_t b0 = a0; b0 < d; b0++, off++) {
                const T* xa = xs + a0 * ld;
                const T* xb = xs + b0 * ld;
                T* out = k.tb + off * ld;
                for (int64_t i = 0; i < padded; i += W) store<T>(out + i, load<T>(xa + i) * load<T>(xb + i));
            }
    } else if (k.level == 1) {
        for (int64_t j = 0; j < d; j++) {
            const T* xa = xs + j * ld;
            T* out = k.tb + j * ld;
            for (int64_t i = 0; i < padded; i += W) {
                V v = load<T>(xa + i);
                store<T>(out + i, v * v);
            }
        }
    } else {
        T* out = k.tb;
        for (int64_t i = 0; i < padded; i += W) {
            V s = load<T>(xs + i);
            s = s * s;
            for (int64_t j = 1; j < d; j++) {
                V v = load<T>(xs + j * ld + i);
                s = s + v * v;
            }
            store<T>(out + i, s);
        }
    }
}

// Logits of components c0 .. c0 + NK - 1 for every tile of RV * W rows: NK * RV sums in registers.
template <class T, int NK>
void logits_tile(const Work<T>& k, int64_t c0, int64_t padded) {
    typedef typename Lanes<T>::V V;
    constexpr int W = Lanes<T>::W;
    const int64_t nf = k.nf, ld = k.ld;
    const T* th = k.theta + c0 * nf;
    for (int64_t i = 0; i < padded; i += RV * W) {
        V acc[NK][RV];
        for (int c = 0; c < NK; c++)
            for (int r = 0; r < RV; r++) acc[c][r] = V{};
        const T* tp = k.tb + i;
        for (int64_t f = 0; f < nf; f++, tp += ld) {
            V t[RV];
            for (int r = 0; r < RV; r++) t[r] = load<T>(tp + r * W);
            for (int c = 0; c < NK; c++) {
                V b = splat<T>(th[c * nf + f]);
                for (int r = 0; r < RV; r++) acc[c][r] = b * t[r] + acc[c][r];
            }
        }
        for (int c = 0; c < NK; c++)
            for (int r = 0; r < RV; r++) store<T>(k.lb + (c0 + c) * ld + i + r * W, acc[c][r]);
    }
}

template <class T, int NK> struct LogitTiles {
    static void run(const Work<T>& k, int64_t c0, int64_t n, int64_t padded) {
        if (n == NK) {
            logits_tile<T, NK>(k, c0, padded);
        } else {
            LogitTiles<T, NK - 1>::run(k, c0, n, padded);
        }
    }
};
template <class T> struct LogitTiles<T, 0> {
    static void run(const Work<T>&, int64_t, int64_t, int64_t) {}
};

template <class T> void logits(const Work<T>& k, int64_t padded) {
    int64_t c = 0;
    for (; c + KT <= k.nw; c += KT) logits_tile<T, KT>(k, c, padded);
    if (c < k.nw) LogitTiles<T, KT - 1>::run(k, c, k.nw - c, padded);
}

// Soft responsibilities of model rows lo..hi in place (times the weight), log p(x) per row,
// and sum_k r_k log r_k per row when asked (from the clamped exponents: no log per term).
template <class T>
void softmax(const Work<T>& k, int64_t lo, int64_t hi, int64_t rows, int64_t padded, double* per_row,
             double* rlogr) {
    typedef typename Lanes<T>::V V;
    constexpr int W = Lanes<T>::W;
    const int64_t ld = k.ld;
    T* L = k.lb;
    const V floor = splat<T>(Math<T>::FLOOR);
    for (int64_t i = 0; i < padded; i += W) {
        V m = load<T>(L + lo * ld + i);
        for (int64_t c = lo + 1; c < hi; c++) m = vmax(m, load<T>(L + c * ld + i));
        V s = V{}, zs = V{};
        for (int64_t c = lo; c < hi; c++) {
            V z = vmax(load<T>(L + c * ld + i) - m, floor);
            V e = Math<T>::exp(z);
            if (rlogr) zs = e * z + zs;
            s = s + e;
            store<T>(L + c * ld + i, e);
        }
        V scale = load<T>(k.wb + i) / s;
        for (int64_t c = lo; c < hi; c++) store<T>(L + c * ld + i, load<T>(L + c * ld + i) * scale);
        V ls = Math<T>::log(s);
        V ll = m + ls;
        const int64_t n = rows - i < W ? rows - i : W;
        for (int64_t j = 0; j < n; j++) per_row[i + j] = k.skip[i + j] ? 0.0 : (double)ll[j];
        if (rlogr) {
            V v = zs / s - ls;  // sum_k r_k (z_k - log s)
            for (int64_t j = 0; j < n; j++) *rlogr += (double)k.wb[i + j] * (double)v[j];
        }
    }
}

// Arg-max of model rows lo..hi (ties to the first), its logit per row, and each row's
// features added to its component's statistics, times the weight.
template <class T>
void hard(const Work<T>& k, int64_t lo, int64_t hi, int64_t rows, double* per_row) {
    typedef typename Lanes<T>::V V;
    typedef typename IVec<T>::V I;
    constexpr int W = Lanes<T>::W;
    const int64_t ld = k.ld, nf = k.nf;
    const T* L = k.lb;
    for (int64_t i = 0; i < rows; i += W) {
        V m = load<T>(L + lo * ld + i);
        I best = I{};
        for (int64_t c = lo + 1; c < hi; c++) {
            V v = load<T>(L + c * ld + i);
            auto gt = v > m;
            best = gt ? (I{} + (typename IVec<T>::I)(c - lo)) : best;
            m = gt ? v : m;
        }
        const int64_t n = rows - i < W ? rows - i : W;
        for (int64_t j = 0; j < n; j++) {
            per_row[i + j] = k.skip[i + j] ? 0.0 : (double)m[j];
            const double wj = (double)k.wb[i + j];
            double* s = k.S + (lo + (int64_t)best[j]) * nf;
            const T* t = k.tb + i + j;
            for (int64_t f = 0; f < nf; f++) s[f] += wj * (double)t[f * ld];
        }
    }
}

// Soft moments of components c0 .. c0 + NK - 1 and features f0 .. f0 + NF - 1, summed over the
// sub-block per lane into k.lanes (float64).
template <class T, int NK, int NF>
void moments_tile(const Work<T>& k, int64_t c0, int64_t f0, int64_t padded) {
    typedef typename Lanes<T>::V V;
    constexpr int W = Lanes<T>::W;
    const int64_t ld = k.ld, nf = k.nf;
    V acc[NK][NF];
    for (int c = 0; c < NK; c++)
        for (int f = 0; f < NF; f++) acc[c][f] = V{};
    const T* tp[NF];
    for (int f = 0; f < NF; f++) tp[f] = k.tb + (f0 + f) * ld;
    const T* rp[NK];
    for (int c = 0; c < NK; c++) rp[c] = k.lb + (c0 + c) * ld;
    for (int64_t i = 0; i < padded; i += W) {
        V t[NF];
        for (int f = 0; f < NF; f++) t[f] = load<T>(tp[f] + i);
        for (int c = 0; c < NK; c++) {
            V r = load<T>(rp[c] + i);
            for (int f = 0; f < NF; f++) acc[c][f] = r * t[f] + acc[c][f];
        }
    }
    for (int c = 0; c < NK; c++)
        for (int f = 0; f < NF; f++) {
            T* out = k.lanes + ((c0 + c) * nf + f0 + f) * W;
            store<T>(out, load<T>(out) + acc[c][f]);
        }
}

template <class T, int NK> void moments_components(const Work<T>& k, int64_t c0, int64_t padded) {
    int64_t f = 0;
    for (; f + MF <= k.nf; f += MF) moments_tile<T, NK, MF>(k, c0, f, padded);
    for (; f < k.nf; f++) moments_tile<T, NK, 1>(k, c0, f, padded);
}

template <class T, int NK> struct MomentTiles {
    static void run(const Work<T>& k, int64_t c0, int64_t n, int64_t padded) {
        if (n == NK) {
            moments_components<T, NK>(k, c0, padded);
        } else {
            MomentTiles<T, NK - 1>::run(k, c0, n, padded);
        }
    }
};
template <class T> struct MomentTiles<T, 0> {
    static void run(const Work<T>&, int64_t, int64_t, int64_t) {}
};

template <class T> void moments(const Work<T>& k, int64_t lo, int64_t hi, int64_t padded) {
    int64_t c = lo;
    for (; c + MK <= hi; c += MK) moments_components<T, MK>(k, c, padded);
    if (c < hi) MomentTiles<T, MK - 1>::run(k, c, hi - c, padded);
}

// Rows of a buffer an odd number of cache lines apart: at a multiple of 4 KiB every row would
// fall in the same L1 sets (and loads would wait on stores to another row: 4K aliasing).
template <class T> int64_t row_stride(int64_t rows) {
    int64_t lines = ((int64_t)sizeof(T) * rows + 63) / 64;
    if (lines % 2 == 0) lines++;
    return lines * 64 / (int64_t)sizeof(T);
}

template <class T> int64_t default_sub_rows(int64_t nf) {
    // the sub-block's features stay in L2 (about 128 KiB of them), 64 to 512 rows
    constexpr int64_t tile = RV * Lanes<T>::W;
    int64_t rows = (128 * 1024) / (nf * (int64_t)sizeof(T));
    rows = rows < 64 ? 64 : rows > 512 ? 512 : rows;
    return rows / tile * tile;
}

// Returns the rows with NaN it left out, or -1 when memory ran out.
template <class T>
int64_t run_block(const T* x, int64_t n, int64_t d, const double* centre64, const double* w, const T* theta, int level,
              const int64_t* bounds, const int64_t* modes, int64_t nm, double* S, double* per_row, double* rlogr,
              int64_t sub_rows) {
    constexpr int W = Lanes<T>::W;
    // float32 lanes are added into float64 every this many rows: sums of at most 2048 / W terms
    constexpr int64_t FLUSH_ROWS = 2048;
    const bool narrow = sizeof(T) < sizeof(double);
    Work<T> k;
    k.d = d;
    k.level = level;
    k.q = quad_rows(level, d);
    k.nf = k.q + d + 1;
    k.nm = nm;
    k.nw = bounds[nm];
    k.theta = theta;
    k.bounds = bounds;
    k.modes = modes;
    k.S = S;
    const int64_t tile = RV * W;
    int64_t sub = sub_rows > 0 ? (sub_rows + tile - 1) / tile * tile : default_sub_rows<T>(k.nf);
    k.ld = row_stride<T>(sub);
    const size_t bytes_t = sizeof(T) * (size_t)(k.nf * k.ld);
    const size_t bytes_l = sizeof(T) * (size_t)((k.nw > 0 ? k.nw : 1) * k.ld);
    const size_t bytes_w = sizeof(T) * (size_t)k.ld;
    const size_t bytes_lanes = sizeof(T) * (size_t)(k.nw * k.nf * W + W);
    const size_t bytes_lanes64 = narrow ? sizeof(double) * (size_t)(k.nw * k.nf * W + W) : 0;
    const size_t bytes_c = sizeof(T) * (size_t)(d + 1);
    const size_t bytes_s = (size_t)k.ld;
    auto round64 = [](size_t b) { return (b + 63) / 64 * 64; };
    size_t total = round64(bytes_t) + round64(bytes_l) + round64(bytes_w) + round64(bytes_lanes) + round64(bytes_lanes64) + round64(bytes_c) +
                   round64(bytes_s);
    char* mem = (char*)std::aligned_alloc(64, round64(total));
    if (!mem) return -1;
    char* p = mem;
    k.tb = (T*)p;
    p += round64(bytes_t);
    k.lb = (T*)p;
    p += round64(bytes_l);
    k.wb = (T*)p;
    p += round64(bytes_w);
    k.lanes = (T*)p;
    p += round64(bytes_lanes);
    k.lanes64 = narrow ? (double*)p : (double*)k.lanes;
    p += round64(bytes_lanes64);
    T* centre = (T*)p;
    p += round64(bytes_c);
    k.skip = (unsigned char*)p;
    k.incomplete = 0;
    std::memset(k.lanes, 0, bytes_lanes);
    if (narrow) std::memset(k.lanes64, 0, bytes_lanes64);
    const int64_t nlanes = k.nw * k.nf * W;
    auto flush = [&]() {
        for (int64_t i = 0; i < nlanes; i++) {
            k.lanes64[i] += (double)k.lanes[i];
            k.lanes[i] = 0;
        }
    };
    int64_t unflushed = 0;
    for (int64_t j = 0; j < d; j++) centre[j] = (T)centre64[j];
    bool any_soft = false;
    for (int64_t m = 0; m < nm; m++) any_soft |= !(modes[m] & 1);
    for (int64_t a = 0; a < n; a += sub) {
        const int64_t rows = n - a < sub ? n - a : sub;
        const int64_t padded = (rows + tile - 1) / tile * tile;
        fill_features<T>(k, x, centre, w, a, rows, padded);
        logits<T>(k, padded);
        for (int64_t m = 0; m < nm; m++) {
            const int64_t lo = bounds[m], hi = bounds[m + 1];
            if (hi == lo) continue;
            if (modes[m] & 1) {
                hard<T>(k, lo, hi, rows, per_row + m * n + a);
            } else {
                softmax<T>(k, lo, hi, rows, padded, per_row + m * n + a, (modes[m] & 2) ? rlogr + m : nullptr);
                moments<T>(k, lo, hi, padded);
            }
        }
        unflushed += padded;
        if (narrow && any_soft && (unflushed >= FLUSH_ROWS || a + sub >= n)) {
            flush();
            unflushed = 0;
        }
    }
    if (any_soft) {
        for (int64_t m = 0; m < nm; m++) {
            if (modes[m] & 1) continue;
            for (int64_t c = bounds[m]; c < bounds[m + 1]; c++)
                for (int64_t f = 0; f < k.nf; f++) {
                    const double* l = k.lanes64 + (c * k.nf + f) * W;
                    double s = 0;
                    for (int j = 0; j < W; j++) s += l[j];
                    S[c * k.nf + f] += s;
                }
        }
    }
    std::free(mem);
    return k.incomplete;
}

// Logits of every row (rows with NaN get NaN), row-major into out (n, nw): predictions and scores.
template <class T>
int64_t run_logits(const T* x, int64_t n, int64_t d, const double* centre64, const T* theta, int level, int64_t nw,
                   T* out) {
    constexpr int W = Lanes<T>::W;
    Work<T> k;
    k.d = d;
    k.level = level;
    k.q = quad_rows(level, d);
    k.nf = k.q + d + 1;
    k.nm = 1;
    k.nw = nw;
    k.theta = theta;
    const int64_t tile = RV * W;
    const int64_t sub = default_sub_rows<T>(k.nf);
    k.ld = row_stride<T>(sub);
    auto round64 = [](size_t b) { return (b + 63) / 64 * 64; };
    const size_t bytes_t = round64(sizeof(T) * (size_t)(k.nf * k.ld));
    const size_t bytes_l = round64(sizeof(T) * (size_t)((nw > 0 ? nw : 1) * k.ld));
    const size_t bytes_w = round64(sizeof(T) * (size_t)k.ld);
    const size_t bytes_c = round64(sizeof(T) * (size_t)(d + 1));
    const size_t bytes_s = round64((size_t)k.ld);
    char* mem = (char*)std::aligned_alloc(64, bytes_t + bytes_l + bytes_w + bytes_c + bytes_s);
    if (!mem) return -1;
    k.tb = (T*)mem;
    k.lb = (T*)(mem + bytes_t);
    k.wb = (T*)(mem + bytes_t + bytes_l);
    T* centre = (T*)(mem + bytes_t + bytes_l + bytes_w);
    k.skip = (unsigned char*)(mem + bytes_t + bytes_l + bytes_w + bytes_c);
    k.incomplete = 0;
    for (int64_t j = 0; j < d; j++) centre[j] = (T)centre64[j];
    const T nan = (T)__builtin_nan("");
    for (int64_t a = 0; a < n; a += sub) {
        const int64_t rows = n - a < sub ? n - a : sub;
        const int64_t padded = (rows + tile - 1) / tile * tile;
        fill_features<T>(k, x, centre, nullptr, a, rows, padded);
        logits<T>(k, padded);
        for (int64_t i = 0; i < rows; i++) {
            T* o = out + (a + i) * nw;
            if (k.skip[i]) {
                for (int64_t c = 0; c < nw; c++) o[c] = nan;
            } else {
                for (int64_t c = 0; c < nw; c++) o[c] = k.lb[c * k.ld + i];
            }
        }
    }
    std::free(mem);
    return 0;
}

// ---------------------------------------------------------------- Python side: checked buffers

struct Buf {
    Py_buffer view;
    bool held = false;
    ~Buf() {
        if (held) PyBuffer_Release(&view);
    }
};

// The buffer's element code ('d', 'f', 'q'), or 0 for anything else (non-native byte order too).
char elem_code(const Py_buffer& v) {
    const char* f = v.format ? v.format : "B";
    if (*f == '@' || *f == '=' || *f == '<') {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        if (*f == '<') return 0;
#endif
        f++;
    }
    if (f[0] == 0 || f[1] != 0) return 0;
    char c = f[0];
    if (c == 'd' && v.itemsize == 8) return 'd';
    if (c == 'f' && v.itemsize == 4) return 'f';
    if ((c == 'q' || c == 'l') && v.itemsize == 8) return 'q';
    return 0;
}

const char* code_name(char c) { return c == 'd' ? "float64" : c == 'f' ? "float32" : "int64"; }

// Get a C-contiguous buffer of ``ndim`` dimensions and element type ``want`` ('d', 'f', 'q', or
// 'x' for float32 or float64), writable if asked; shapes checked by the caller.
bool get(PyObject* obj, Buf& b, const char* name, int ndim, char want, bool writable) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, &b.view, flags) != 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "%s must be a C-contiguous%s array, got %R", name,
                     writable ? " writable" : "", (PyObject*)Py_TYPE(obj));
        return false;
    }
    b.held = true;
    char c = elem_code(b.view);
    bool ok = want == 'x' ? (c == 'd' || c == 'f') : c == want;
    if (!ok) {
        PyErr_Format(PyExc_ValueError, "%s must be %s, got format %s", name,
                     want == 'x' ? "float32 or float64" : code_name(want), b.view.format ? b.view.format : "B");
        return false;
    }
    if (b.view.ndim != ndim) {
        PyErr_Format(PyExc_ValueError, "%s must be %d-D, got %d-D", name, ndim, b.view.ndim);
        return false;
    }
    return true;
}

bool shape_is(const Buf& b, const char* name, int64_t n0, int64_t n1 = -1) {
    const Py_ssize_t* s = b.view.shape;
    bool ok = s[0] == n0 && (b.view.ndim == 1 || s[1] == n1);
    if (!ok) {
        if (b.view.ndim == 1)
            PyErr_Format(PyExc_ValueError, "%s must have shape (%lld,), got (%lld,)", name, (long long)n0,
                         (long long)s[0]);
        else
            PyErr_Format(PyExc_ValueError, "%s must have shape (%lld, %lld), got (%lld, %lld)", name, (long long)n0,
                         (long long)n1, (long long)s[0], (long long)s[1]);
    }
    return ok;
}

// The rows x (n, D) float32/float64, their centre (D,) float64 and the feature level, checked.
bool get_rows(PyObject* ox, PyObject* oc, int level, Buf& x, Buf& c) {
    if (!get(ox, x, "x", 2, 'x', false)) return false;
    if (x.view.shape[1] < 1) {
        PyErr_SetString(PyExc_ValueError, "x must have at least one column");
        return false;
    }
    if (level < 0 || level > 2) {
        PyErr_Format(PyExc_ValueError, "level must be 0, 1 or 2, got %d", level);
        return false;
    }
    return get(oc, c, "centre", 1, 'd', false) && shape_is(c, "centre", x.view.shape[1]);
}

const char* mixture_block_doc =
    "mixture_block(x, centre, w, theta, level, bounds, modes, S, per_row, rlogr, sub_rows=0)\n"
    "--\n\n"
    "Fold a block of rows into the statistics of models with logits theta . T(x - centre).\n\n"
    "x (n, D) float32/float64; centre (D,) float64; w (n,) float64 or None; theta (W, P) of x's\n"
    "dtype, P the feature rows at level (0 spherical, 1 diag, 2 full); bounds (M + 1,) int64,\n"
    "model m owns logit rows bounds[m]:bounds[m+1]; modes (M,) int64, bit 0 hard assignment,\n"
    "bit 1 also sum w r log r (soft only). S (W, P) float64 += moments R T^T; per_row (M, n)\n"
    "float64 = log p(x) (soft) or the largest logit (hard); rlogr (M,) float64 += sum w r log r.\n"
    "Rows with NaN are left out (weight 0, per_row 0); returns how many there were.";

PyObject* mixture_block(PyObject*, PyObject* args, PyObject* kwargs) {
    static const char* kwlist[] = {"x", "centre", "w", "theta", "level", "bounds", "modes", "S",
                                   "per_row", "rlogr", "sub_rows", nullptr};
    PyObject *ox, *oc, *ow, *oth, *ob, *om, *oS, *op, *orl;
    int level;
    long long sub_rows = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOiOOOOO|L:mixture_block", (char**)kwlist, &ox, &oc, &ow, &oth,
                                     &level, &ob, &om, &oS, &op, &orl, &sub_rows))
        return nullptr;
    Buf x, c, w, th, b, m, S, pr, rl;
    if (!get_rows(ox, oc, level, x, c)) return nullptr;
    const char dt = elem_code(x.view);
    const int64_t n = x.view.shape[0], d = x.view.shape[1];
    const bool weighted = ow != Py_None;
    if (weighted && (!get(ow, w, "w", 1, 'd', false) || !shape_is(w, "w", n))) return nullptr;
    if (!get(ob, b, "bounds", 1, 'q', false)) return nullptr;
    const int64_t nm = b.view.shape[0] - 1;
    if (nm < 1) {
        PyErr_SetString(PyExc_ValueError, "bounds must hold at least two entries (one model)");
        return nullptr;
    }
    const int64_t* bounds = (const int64_t*)b.view.buf;
    if (bounds[0] != 0) {
        PyErr_SetString(PyExc_ValueError, "bounds must start at 0");
        return nullptr;
    }
    for (int64_t i = 0; i < nm; i++)
        if (bounds[i + 1] < bounds[i]) {
            PyErr_SetString(PyExc_ValueError, "bounds must not decrease");
            return nullptr;
        }
    const int64_t nw = bounds[nm];
    const int64_t nf = quad_rows(level, d) + d + 1;
    if (!get(oth, th, "theta", 2, dt, false) || !shape_is(th, "theta", nw, nf)) return nullptr;
    if (!get(om, m, "modes", 1, 'q', false) || !shape_is(m, "modes", nm)) return nullptr;
    const int64_t* modes = (const int64_t*)m.view.buf;
    for (int64_t i = 0; i < nm; i++)
        if (modes[i] < 0 || modes[i] > 2) {
            PyErr_Format(PyExc_ValueError, "modes[%lld] must be 0 (soft), 1 (hard) or 2 (soft with r log r), got %lld",
                         (long long)i, (long long)modes[i]);
            return nullptr;
        }
    if (!get(oS, S, "S", 2, 'd', true) || !shape_is(S, "S", nw, nf)) return nullptr;
    if (!get(op, pr, "per_row", 2, 'd', true) || !shape_is(pr, "per_row", nm, n)) return nullptr;
    if (!get(orl, rl, "rlogr", 1, 'd', true) || !shape_is(rl, "rlogr", nm)) return nullptr;
    int64_t rc;
    const double* wp = weighted ? (const double*)w.view.buf : nullptr;
    Py_BEGIN_ALLOW_THREADS
    if (dt == 'd')
        rc = run_block<double>((const double*)x.view.buf, n, d, (const double*)c.view.buf, wp,
                               (const double*)th.view.buf, level, bounds, modes, nm, (double*)S.view.buf,
                               (double*)pr.view.buf, (double*)rl.view.buf, sub_rows);
    else
        rc = run_block<float>((const float*)x.view.buf, n, d, (const double*)c.view.buf, wp,
                              (const float*)th.view.buf, level, bounds, modes, nm, (double*)S.view.buf,
                              (double*)pr.view.buf, (double*)rl.view.buf, sub_rows);
    Py_END_ALLOW_THREADS
    if (rc < 0) return PyErr_NoMemory();
    return PyLong_FromLongLong(rc);
}

const char* mixture_logits_doc =
    "mixture_logits(x, centre, theta, level, out)\n"
    "--\n\n"
    "Logits theta . T(x - centre) of every row into out (n, W), x's dtype; rows with NaN get NaN.";

PyObject* mixture_logits(PyObject*, PyObject* args, PyObject* kwargs) {
    static const char* kwlist[] = {"x", "centre", "theta", "level", "out", nullptr};
    PyObject *ox, *oc, *oth, *oo;
    int level;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOiO:mixture_logits", (char**)kwlist, &ox, &oc, &oth, &level,
                                     &oo))
        return nullptr;
    Buf x, c, th, out;
    if (!get_rows(ox, oc, level, x, c)) return nullptr;
    const char dt = elem_code(x.view);
    const int64_t n = x.view.shape[0], d = x.view.shape[1];
    const int64_t nf = quad_rows(level, d) + d + 1;
    if (!get(oth, th, "theta", 2, dt, false)) return nullptr;
    const int64_t nw = th.view.shape[0];
    if (nw < 1 || !shape_is(th, "theta", nw, nf)) {
        if (nw < 1) PyErr_SetString(PyExc_ValueError, "theta must have at least one row");
        return nullptr;
    }
    if (!get(oo, out, "out", 2, dt, true) || !shape_is(out, "out", n, nw)) return nullptr;
    int64_t rc;
    Py_BEGIN_ALLOW_THREADS
    if (dt == 'd')
        rc = run_logits<double>((const double*)x.view.buf, n, d, (const double*)c.view.buf,
                                (const double*)th.view.buf, level, nw, (double*)out.view.buf);
    else
        rc = run_logits<float>((const float*)x.view.buf, n, d, (const double*)c.view.buf, (const float*)th.view.buf,
                               level, nw, (float*)out.view.buf);
    Py_END_ALLOW_THREADS
    if (rc < 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

PyObject* cpu_features(PyObject*, PyObject*) {
    PyObject* out = PyDict_New();
    if (!out) return nullptr;
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    struct {
        const char* name;
        int on;
    } flags[] = {
        {"sse2", __builtin_cpu_supports("sse2")},         {"avx", __builtin_cpu_supports("avx")},
        {"avx2", __builtin_cpu_supports("avx2")},         {"fma", __builtin_cpu_supports("fma")},
        {"avx512f", __builtin_cpu_supports("avx512f")},   {"avx512dq", __builtin_cpu_supports("avx512dq")},
        {"avx512bw", __builtin_cpu_supports("avx512bw")}, {"avx512vl", __builtin_cpu_supports("avx512vl")},
    };
    for (auto& f : flags) {
        if (PyDict_SetItemString(out, f.name, f.on ? Py_True : Py_False) != 0) {
            Py_DECREF(out);
            return nullptr;
        }
    }
#endif
    return out;
}

PyMethodDef methods[] = {
    {"mixture_block", (PyCFunction)(void (*)(void))mixture_block, METH_VARARGS | METH_KEYWORDS, mixture_block_doc},
    {"mixture_logits", (PyCFunction)(void (*)(void))mixture_logits, METH_VARARGS | METH_KEYWORDS,
     mixture_logits_doc},
    {"cpu_features", cpu_features, METH_NOARGS,
     "The CPU's instruction-set features this build can tell (x86: from cpuid, with the OS's support)."},
    {nullptr, nullptr, 0, nullptr},
};

#define DG_MODNAME "_core_" DG_STR(DASKGMM_VARIANT)

PyModuleDef module = {PyModuleDef_HEAD_INIT, DG_MODNAME, "daskgmm's compiled core, one ISA variant.", -1, methods};

}  // namespace

PyMODINIT_FUNC DG_CAT(PyInit__core_, DASKGMM_VARIANT)(void) {
    PyObject* mod = PyModule_Create(&module);
    if (!mod) return nullptr;
    if (PyModule_AddStringConstant(mod, "variant", DG_STR(DASKGMM_VARIANT)) != 0 ||
        PyModule_AddIntConstant(mod, "vector_bytes", DG_VBYTES) != 0 ||
        PyModule_AddIntConstant(mod, "vector_registers", DG_NREGS) != 0 ||
#if defined(__VERSION__)
        PyModule_AddStringConstant(mod, "compiler", __VERSION__) != 0 ||
#else
        PyModule_AddStringConstant(mod, "compiler", "unknown") != 0 ||
#endif
        PyModule_AddStringConstant(mod, "flags", DG_STR(DASKGMM_FLAGS)) != 0) {
        Py_DECREF(mod);
        return nullptr;
    }
    return mod;
}
