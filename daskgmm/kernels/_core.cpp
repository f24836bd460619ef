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
// lanes and add each sub-block's moments into float64. Rows with NaN are left out of every
// model but those that marginalise missing values, which score them by the density of their
// observed features and add the expected statistics of their completions (see "rows with
// missing values" below).
//
// Every buffer is checked (format, shape, contiguity, bounds) before a pointer is taken;
// a mismatch raises ValueError. The GIL is released while the block runs; scratch is per
// call, so threads never share it.

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <utility>
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

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
#elif defined(__AVX512F__) && defined(DASKGMM_AVX512_256)
// the avx512_256 variant: AVX-512's 32 registers and instructions on 256-bit vectors, for CPUs that
// run a 512-bit operation as two 256-bit halves (AMD Zen 4), where the wider vectors only cost
#define DG_VBYTES 32
#define DG_NREGS 32
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

// x86 intrinsics where a step has no portable vector-extension form (a horizontal maximum): on
// the AVX2, AVX-512 and avx512_256 (as AVX2's: 256-bit vectors) variants, never when the tiles of
// another variant are emulated. (The
// portable loop over the lanes made the AVX-512 variant's k-means pass twice as slow as the
// AVX2 one's on an AVX-512 host, 8 and 16 lanes a row in a chain of compares.)
#if defined(__AVX2__) && defined(__FMA__) && DG_VBYTES == 32 && !defined(DASKGMM_VBYTES)
#define DG_AVX2_INTRINSICS 1
#else
#define DG_AVX2_INTRINSICS 0
#endif
#if defined(__AVX512F__) && DG_VBYTES == 64 && !defined(DASKGMM_VBYTES)
#define DG_AVX512_INTRINSICS 1
#else
#define DG_AVX512_INTRINSICS 0
#endif
// The 4 x 4 transposes of the rows into the feature buffer do not depend on the vector width:
// every build with AVX2 (the AVX2 and AVX-512 variants, and emulated tiles) uses them.
#if defined(__AVX2__)
#define DG_X86_TRANSPOSE 1
#include <immintrin.h>
#else
#define DG_X86_TRANSPOSE 0
#endif
// Keep a vector in a register: compilers otherwise fold its load into each use, which can make a
// tile wait on loads instead of multiply-adds.
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__)) && !defined(DASKGMM_VBYTES)
#if defined(__AVX512F__)
#define DG_IN_REGISTER(v) __asm__("" : "+v"(v))
#else
#define DG_IN_REGISTER(v) __asm__("" : "+x"(v))
#endif
#else
#define DG_IN_REGISTER(v) ((void)0)
#endif

namespace {

template <class T> struct Lanes {
    static constexpr int W = DG_VBYTES / (int)sizeof(T);
    typedef T V __attribute__((vector_size(DG_VBYTES)));
    // what load and store go through: unaligned, and may_alias (as the intrinsics' __m256d), since
    // a vector type does not alias its element type: without it GCC 12 at -O3 gave wrong marginal
    // logits for rows missing 4 values after an unrelated change (right with -fno-strict-aliasing)
    typedef T UV __attribute__((vector_size(DG_VBYTES), aligned(sizeof(T)), may_alias));
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
// Every lane s: written as an initializer of W copies, which compilers emit as one broadcast (from
// memory when s is loaded); V{} + s adds 0.0 first, and lane-by-lane stores build the vector in steps.
template <class V, class T, std::size_t... I> static inline V splat_of(T s, std::index_sequence<I...>) {
    return V{((void)I, s)...};
}
template <class T> static inline typename Lanes<T>::V splat(T s) {
    return splat_of<typename Lanes<T>::V>(s, std::make_index_sequence<Lanes<T>::W>{});
}
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
        // Estrin's scheme: pairs, then r^2, r^4, r^8 (a chain of 4 multiply-adds, not Horner's 13: a
        // softmax's exps then overlap instead of waiting on each other's latency)
        const V r2 = r * r, r4 = r2 * r2, r8 = r4 * r4;
        const V a0 = r + 1.0, a1 = r * (1.0 / 6.0) + 0.5, a2 = r * (1.0 / 120.0) + 1.0 / 24.0;
        const V a3 = r * (1.0 / 5040.0) + 1.0 / 720.0, a4 = r * (1.0 / 362880.0) + 1.0 / 40320.0;
        const V a5 = r * (1.0 / 39916800.0) + 1.0 / 3628800.0, a6 = r * (1.0 / 6227020800.0) + 1.0 / 479001600.0;
        const V b0 = a1 * r2 + a0, b1 = a3 * r2 + a2, b2 = a5 * r2 + a4;
        const V e0 = b1 * r4 + b0, e1 = a6 * r4 + b2;
        const V p = e1 * r8 + e0;
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
    T* wm;                    // (ld) weights, zero on the padding rows only (marginalising models)
    unsigned char* skip;      // (ld) rows with NaN, left out
    int64_t incomplete;       // rows with NaN so far
    int64_t* nan_rows;        // (ld) or null: the sub-block's rows with NaN, kept for marginalising models
    T* mb;                    // (d, ld) or null: 1 where a value is missing, else 0 (dense diagonal path)
    T* mb_buf;                // (d, ld) or null: mb's memory, when a model may use it
    int64_t n_nan;
    T* lanes;                 // (nw, nf, W) soft moments per lane, in the data's type
    double* lanes64;          // (nw, nf, W) float32 lanes flushed into float64 every FLUSH_ROWS rows
    double* S;                // (nw, nf) the caller's statistics
    const T* centre;          // (d) the pass centre, in the data's type
    const char* pf = nullptr;  // the next sub-block's rows, prefetched by the first logits tile (or null)
    const char* pf_end = nullptr;
    int64_t pf_step = 0;       // bytes per tile of rows
    // each component's rows (sum r before the weights), when the caller asks (else all null)
    double* cnt = nullptr;     // (nw) the caller's counts
    T* ub = nullptr;           // (ld) 1 on the rows wb weighs, 0 on padding, rows with NaN and rows of weight 0
    T* um = nullptr;           // (ld) 1 on the rows wm weighs (marginal_rows zeroes the ones it does itself)
    T* cl = nullptr;           // (nw, W) soft counts per lane, in the data's type
    double* cl64 = nullptr;    // (nw, W) float32 lanes flushed into float64 with the moments' (else cl)
};

// A block of rows in either layout, read where it lies: element (i, j) at p[i * rs + j * cs]. Rows
// contiguous (cs 1: C order, or a slice of columns of it) or columns contiguous (rs 1: Fortran order,
// as Parquet chunks are, or a slice of rows of it); any other layout is copied by the caller.
// Its items may lie at any byte (an array deserialised from a message's frame often does): every
// read of x goes through readx and loadx, aligned to 1.
template <class T> static inline T readx(const T* p) {
    T v;
    std::memcpy(&v, p, sizeof(T));
    return v;
}
template <class T> static inline typename Lanes<T>::V loadx(const T* p) {
    typedef T U __attribute__((vector_size(DG_VBYTES), aligned(1), may_alias));
    return *(const U*)p;
}
template <class T> struct Rows {
    const T* p;
    int64_t rs, cs;
    T at(int64_t i, int64_t j) const { return readx(p + i * rs + j * cs); }
    bool by_rows() const { return cs == 1; }
    // The byte range of rows a .. n - 1 of d columns, for prefetching (rows contiguous only).
    const char* from(int64_t a) const { return (const char*)(p + a * rs); }
    // Columns contiguous: rows a .. a + rows - 1 of each of the d columns asked of memory ahead of
    // their use (d streams a stride apart, which the hardware's prefetchers follow too late).
    void prefetch_columns(int64_t a, int64_t rows, int64_t d) const {
        for (int64_t j = 0; j < d; j++) {
            const char* c = (const char*)(p + a + j * cs);
            for (int64_t o = 0; o < rows * (int64_t)sizeof(T); o += 64) __builtin_prefetch(c + o);
        }
    }
};

// Rows x[0 .. rows) (d columns, stride rs) centred and transposed into xs (d rows, stride ld), in groups of 4
// rows by 4 x 4 register transposes (AVX2); a value that is NaN is copied as it is and flags its
// row in nan[]: the caller's pass by vectors makes it 0 and builds the indicators, so every model
// takes this copy (cleaning each such row here, one strided value at a time, kept the models that
// use the indicators off it). Returns the rows done (a multiple of 4): the caller does the rest.
// Without AVX2 0: the caller's loop does every row.
template <class T>
static inline int64_t centre_transposed(const T* x, int64_t rs, int64_t d, const T* centre, T* xs, int64_t ld,
                                        int64_t rows, unsigned char* nan) {
#if DG_X86_TRANSPOSE
    const int64_t done = rows / 4 * 4;
    for (int64_t i = 0; i < done; i += 4) {
        const T* r = x + i * rs;
        int any = 0;
        int64_t j = 0;
        if constexpr (sizeof(T) == 8) {
            __m256d bad = _mm256_setzero_pd();
            for (; j + 4 <= d; j += 4) {
                const __m256d c = _mm256_loadu_pd(centre + j);
                const __m256d r0 = _mm256_sub_pd(_mm256_loadu_pd(r + j), c);
                const __m256d r1 = _mm256_sub_pd(_mm256_loadu_pd(r + rs + j), c);
                const __m256d r2 = _mm256_sub_pd(_mm256_loadu_pd(r + 2 * rs + j), c);
                const __m256d r3 = _mm256_sub_pd(_mm256_loadu_pd(r + 3 * rs + j), c);
                const __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1);
                const __m256d t2 = _mm256_unpacklo_pd(r2, r3), t3 = _mm256_unpackhi_pd(r2, r3);
                const __m256d f0 = _mm256_permute2f128_pd(t0, t2, 0x20), f1 = _mm256_permute2f128_pd(t1, t3, 0x20);
                const __m256d f2 = _mm256_permute2f128_pd(t0, t2, 0x31), f3 = _mm256_permute2f128_pd(t1, t3, 0x31);
                bad = _mm256_or_pd(bad, _mm256_or_pd(_mm256_cmp_pd(f0, f1, _CMP_UNORD_Q), _mm256_cmp_pd(f2, f3, _CMP_UNORD_Q)));
                _mm256_storeu_pd(xs + j * ld + i, f0);
                _mm256_storeu_pd(xs + (j + 1) * ld + i, f1);
                _mm256_storeu_pd(xs + (j + 2) * ld + i, f2);
                _mm256_storeu_pd(xs + (j + 3) * ld + i, f3);
            }
            any = _mm256_movemask_pd(bad);
        } else {
            __m128 bad = _mm_setzero_ps();
            for (; j + 4 <= d; j += 4) {
                const __m128 c = _mm_loadu_ps(centre + j);
                __m128 r0 = _mm_sub_ps(_mm_loadu_ps(r + j), c), r1 = _mm_sub_ps(_mm_loadu_ps(r + rs + j), c);
                __m128 r2 = _mm_sub_ps(_mm_loadu_ps(r + 2 * rs + j), c), r3 = _mm_sub_ps(_mm_loadu_ps(r + 3 * rs + j), c);
                _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
                bad = _mm_or_ps(bad, _mm_or_ps(_mm_cmpunord_ps(r0, r1), _mm_cmpunord_ps(r2, r3)));
                _mm_storeu_ps(xs + j * ld + i, r0);
                _mm_storeu_ps(xs + (j + 1) * ld + i, r1);
                _mm_storeu_ps(xs + (j + 2) * ld + i, r2);
                _mm_storeu_ps(xs + (j + 3) * ld + i, r3);
            }
            any = _mm_movemask_ps(bad);
        }
        for (; j < d; j++)  // the columns past the last group of 4
            for (int l = 0; l < 4; l++) {
                const T t = readx(r + l * rs + j) - centre[j];
                any |= (t != t) << l;
                xs[j * ld + i + l] = t;
            }
        for (int l = 0; l < 4; l++) nan[i + l] = (any >> l) & 1;
    }
    return done;
#else
    (void)x, (void)rs, (void)d, (void)centre, (void)xs, (void)ld, (void)rows, (void)nan;
    return 0;
#endif
}

// Rows a .. a + rows - 1 of columns-contiguous x centred into the rows of er (stride dp): on x86, 4 x 4
// blocks by register transposes (4 rows of 4 columns at a time), else one value at a time.
template <class T>
static inline void centre_rows_from_columns(const Rows<T>& x, int64_t a, int64_t d, const T* centre, T* er,
                                            int64_t dp, int64_t rows) {
    int64_t done_rows = 0, done_cols = 0;
#if DG_X86_TRANSPOSE
    done_rows = rows / 4 * 4;
    done_cols = d / 4 * 4;
    for (int64_t j = 0; j < done_cols; j += 4) {
        const T* c0 = x.p + a + j * x.cs;
        const T* c1 = c0 + x.cs;
        const T* c2 = c1 + x.cs;
        const T* c3 = c2 + x.cs;
        for (int64_t i = 0; i < done_rows; i += 4) {
            T* r = er + i * dp + j;
            if constexpr (sizeof(T) == 8) {
                const __m256d v0 = _mm256_sub_pd(_mm256_loadu_pd(c0 + i), _mm256_set1_pd(centre[j]));
                const __m256d v1 = _mm256_sub_pd(_mm256_loadu_pd(c1 + i), _mm256_set1_pd(centre[j + 1]));
                const __m256d v2 = _mm256_sub_pd(_mm256_loadu_pd(c2 + i), _mm256_set1_pd(centre[j + 2]));
                const __m256d v3 = _mm256_sub_pd(_mm256_loadu_pd(c3 + i), _mm256_set1_pd(centre[j + 3]));
                const __m256d t0 = _mm256_unpacklo_pd(v0, v1), t1 = _mm256_unpackhi_pd(v0, v1);
                const __m256d t2 = _mm256_unpacklo_pd(v2, v3), t3 = _mm256_unpackhi_pd(v2, v3);
                _mm256_storeu_pd(r, _mm256_permute2f128_pd(t0, t2, 0x20));
                _mm256_storeu_pd(r + dp, _mm256_permute2f128_pd(t1, t3, 0x20));
                _mm256_storeu_pd(r + 2 * dp, _mm256_permute2f128_pd(t0, t2, 0x31));
                _mm256_storeu_pd(r + 3 * dp, _mm256_permute2f128_pd(t1, t3, 0x31));
            } else {
                __m128 v0 = _mm_sub_ps(_mm_loadu_ps(c0 + i), _mm_set1_ps(centre[j]));
                __m128 v1 = _mm_sub_ps(_mm_loadu_ps(c1 + i), _mm_set1_ps(centre[j + 1]));
                __m128 v2 = _mm_sub_ps(_mm_loadu_ps(c2 + i), _mm_set1_ps(centre[j + 2]));
                __m128 v3 = _mm_sub_ps(_mm_loadu_ps(c3 + i), _mm_set1_ps(centre[j + 3]));
                _MM_TRANSPOSE4_PS(v0, v1, v2, v3);
                _mm_storeu_ps(r, v0);
                _mm_storeu_ps(r + dp, v1);
                _mm_storeu_ps(r + 2 * dp, v2);
                _mm_storeu_ps(r + 3 * dp, v3);
            }
        }
    }
#endif
    for (int64_t j = 0; j < d; j++) {  // what the blocks of 4 x 4 left: the last rows, the last columns
        const T* col = x.p + a + j * x.cs;
        const T c = centre[j];
        for (int64_t i = j < done_cols ? done_rows : 0; i < rows; i++) er[i * dp + j] = readx(col + i) - c;
    }
}

// Rows a .. a + rows - 1 of columns-contiguous x centred into xs (d rows, stride ld): one column at a
// time by vectors, the same differences as a row at a time; nan[] flags the rows with NaN.
template <class T>
static inline void centre_columns(const Rows<T>& x, int64_t a, int64_t d, const T* centre, T* xs, int64_t ld,
                                  int64_t rows, unsigned char* nan) {
    typedef typename Lanes<T>::V V;
    constexpr int W = Lanes<T>::W;
    const int64_t whole = rows / W * W;
    for (int64_t j = 0; j < d; j++) {
        const T* col = x.p + a + j * x.cs;
        T* out = xs + j * ld;
        const V c = splat<T>(centre[j]);
        int64_t i = 0;
        for (; i < whole; i += W) store<T>(out + i, loadx<T>(col + i) - c);
        for (; i < rows; i++) out[i] = readx(col + i) - centre[j];
    }
    int64_t i = 0;
    for (; i < whole; i += W) {
        V bad = V{};
        for (int64_t j = 0; j < d; j++) {
            const V v = load<T>(xs + j * ld + i);
            bad = (v != v) ? splat<T>((T)1) : bad;
        }
        for (int l = 0; l < W; l++) nan[i + l] = bad[l] != 0;
    }
    for (; i < rows; i++) {
        bool any = false;
        for (int64_t j = 0; j < d; j++) any |= xs[j * ld + i] != xs[j * ld + i];
        nan[i] = any;
    }
}

// Copy rows a..a+rows of x into the feature buffer, centred and transposed, and build the features.
template <class T>
void fill_features(Work<T>& k, const Rows<T>& x, const T* centre, const double* w, int64_t a, int64_t rows,
                   int64_t padded) {
    typedef typename Lanes<T>::V V;
    constexpr int W = Lanes<T>::W;
    const int64_t d = k.d, q = k.q, ld = k.ld;
    T* xs = k.tb + q * ld;  // rows q .. q + d - 1: the centred x
    // The rows are transposed as they are (NaN and all: one strided store per value), then the
    // rows of the transpose with NaN are cleaned by vectors (0 where missing, and the indicators).
    int64_t incomplete = 0;
    int64_t fast = rows;
    if (x.by_rows())
        fast = centre_transposed<T>(x.p + a * x.rs, x.rs, d, centre, xs, ld, rows, k.skip);
    else
        centre_columns<T>(x, a, d, centre, xs, ld, rows, k.skip);
    for (int64_t i = 0; i < rows; i++) {
        bool nan = false;
        if (i < fast) {
            nan = k.skip[i];  // centred (and transposed) above
        } else {
            for (int64_t j = 0; j < d; j++) {
                const T t = x.at(a + i, j) - centre[j];
                nan |= t != t;  // (x finite: checked by the caller, or NaN)
                xs[j * ld + i] = t;
            }
        }
        k.wb[i] = w ? (T)w[a + i] : (T)1;
        if (k.wm) k.wm[i] = k.wb[i];
        k.skip[i] = nan;
        // left out (weight 0), as the NumPy path leaves rows with NaN out of models that do not
        // marginalise; the models that do take them from marginal_rows
        if (nan) {
            k.wb[i] = 0;
            if (k.nan_rows) k.nan_rows[incomplete] = i;
            incomplete++;
        }
    }
    k.n_nan = incomplete;
    k.incomplete += incomplete;
    for (int64_t i = rows; i < padded; i++) {
        for (int64_t j = 0; j < d; j++) xs[j * ld + i] = 0;
        k.wb[i] = 0;
        if (k.wm) k.wm[i] = 0;
    }
    // the counts' row masks in a loop of their own: in the one above, their stores (which may alias k's
    // fields) made a pass that counts nothing 4% slower (full covariances, 0.245 -> 0.255 s per 1M rows)
    if (k.ub) {
        T* const ub = k.ub;
        T* const um = k.um;
        const unsigned char* const skip = k.skip;
        for (int64_t i = 0; i < padded; i++) {
            // a row of weight 0 holds nothing, as if it were not there: a component on such rows only is empty
            const bool held = i < rows && (!w || w[a + i] > 0);
            ub[i] = held && !skip[i] ? (T)1 : (T)0;
            um[i] = held ? (T)1 : (T)0;
        }
    }
    // the missing-value indicators, for the diagonal models' tiles when a third or more of the rows
    // have NaN (else those rows one at a time; either way the same statistics)
    T* mb = k.mb = k.mb_buf && 3 * incomplete >= rows ? k.mb_buf : nullptr;
    if (incomplete) {
        const V zero = V{}, one = splat<T>((T)1);
        for (int64_t j = 0; j < d; j++)
            for (int64_t i = 0; i < padded; i += W) {
                const V v = load<T>(xs + j * ld + i);
                const auto nan = v != v;
                store<T>(xs + j * ld + i, nan ? zero : v);
                if (mb) store<T>(mb + j * ld + i, nan ? one : zero);
            }
    } else if (mb) {
        for (int64_t j = 0; j < d; j++) std::memset(mb + j * ld, 0, sizeof(T) * (size_t)padded);
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
    const char* pf = c0 == 0 ? k.pf : nullptr;
    for (int64_t i = 0; i < padded; i += RV * W) {
        if (pf) {  // the next rows come from memory while this sub-block computes
            for (int64_t o = 0; o < k.pf_step && pf + o < k.pf_end; o += 64) __builtin_prefetch(pf + o);
            pf += k.pf_step;
        }
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
// Rows with NaN are left out (k.wb), or with with_nan taken at their weight (k.wm): their
// logits are then a model's marginal ones. With k.cl, each component's r before the weight is
// added to its lanes too (the rows it holds; k.ub or k.um: the same rows, each weighing 1).
template <class T>
void softmax(const Work<T>& k, int64_t lo, int64_t hi, int64_t rows, int64_t padded, double* per_row,
             double* rlogr, bool with_nan = false) {
    const T* wb = with_nan ? k.wm : k.wb;
    const T* ub = with_nan ? k.um : k.ub;
    T* const cl = k.cl;  // in a local: a store to L may alias k's fields, which would be read again each row
    typedef typename Lanes<T>::V V;
    constexpr int W = Lanes<T>::W;
    const int64_t ld = k.ld;
    T* L = k.lb;
    const V floor = splat<T>(Math<T>::FLOOR);
    for (int64_t i = 0; i < padded; i += W) {
        V m = load<T>(L + lo * ld + i);
        for (int64_t c = lo + 1; c < hi; c++) m = vmax(m, load<T>(L + c * ld + i));
        V s = V{}, zs = V{}, s1 = V{}, zs1 = V{};
        int64_t c = lo;
        for (; c + 1 < hi; c += 2) {  // two components at a time: two exps in flight, two sums
            const V z = vmax(load<T>(L + c * ld + i) - m, floor);
            const V z1 = vmax(load<T>(L + (c + 1) * ld + i) - m, floor);
            const V e = Math<T>::exp(z), e1 = Math<T>::exp(z1);
            if (rlogr) {
                zs = e * z + zs;
                zs1 = e1 * z1 + zs1;
            }
            s = s + e;
            s1 = s1 + e1;
            store<T>(L + c * ld + i, e);
            store<T>(L + (c + 1) * ld + i, e1);
        }
        s = s + s1;
        zs = zs + zs1;
        for (; c < hi; c++) {
            const V z = vmax(load<T>(L + c * ld + i) - m, floor);
            const V e = Math<T>::exp(z);
            if (rlogr) zs = e * z + zs;
            s = s + e;
            store<T>(L + c * ld + i, e);
        }
        V scale = load<T>(wb + i) / s;
        if (cl) {
            const V once = load<T>(ub + i) / s;
            for (int64_t c = lo; c < hi; c++) {
                const V e = load<T>(L + c * ld + i);
                store<T>(L + c * ld + i, e * scale);
                store<T>(cl + c * W, e * once + load<T>(cl + c * W));
            }
        } else {
            for (int64_t c = lo; c < hi; c++) store<T>(L + c * ld + i, load<T>(L + c * ld + i) * scale);
        }
        V ls = Math<T>::log(s);
        V ll = m + ls;
        const int64_t n = rows - i < W ? rows - i : W;
        for (int64_t j = 0; j < n; j++) per_row[i + j] = k.skip[i + j] && !with_nan ? 0.0 : (double)ll[j];
        if (rlogr) {
            V v = zs / s - ls;  // sum_k r_k (z_k - log s)
            for (int64_t j = 0; j < n; j++) *rlogr += (double)wb[i + j] * (double)v[j];
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
            if (k.cnt && k.ub[i + j] != 0) k.cnt[lo + (int64_t)best[j]] += 1.0;  // NaN: marginal_rows'; weight 0: none
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

// The block passes' common set-up of k (run_block, run_tblock): the models and their features;
// returns the rows per sub-block (sub_rows rounded up to whole tiles, or the default), and sets
// the buffers' row stride for it.
template <class T>
int64_t work_setup(Work<T>& k, int64_t d, int level, int64_t nm, const int64_t* bounds, const T* theta,
                   const int64_t* modes, double* S, int64_t sub_rows) {
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
    const int64_t tile = RV * Lanes<T>::W;
    const int64_t sub = sub_rows > 0 ? (sub_rows + tile - 1) / tile * tile : default_sub_rows<T>(k.nf);
    k.ld = row_stride<T>(sub);
    return sub;
}

// The next sub-block's rows (from row a + rows of n, up to sub of them) asked of memory while this
// one computes: rows contiguous, spread over this sub-block's tiles of rows (padded of them, by the
// first logits tile); columns contiguous, asked for now.
template <class T>
void fetch_next(Work<T>& k, const Rows<T>& x, int64_t a, int64_t rows, int64_t n, int64_t sub, int64_t padded) {
    k.pf = nullptr;
    if (a + rows >= n) return;
    const int64_t next = n - a - rows < sub ? n - a - rows : sub;
    if (!x.by_rows()) {
        x.prefetch_columns(a + rows, next, k.d);
        return;
    }
    const int64_t ntiles = padded / (RV * Lanes<T>::W);
    k.pf = x.from(a + rows);
    k.pf_end = x.from(n);
    k.pf_step = ((int64_t)sizeof(T) * next * k.d + ntiles - 1) / ntiles;
}

// ---------------------------------------------------------------- hard spherical models (k-means)
//
// A pass whose models all assign hard at the spherical level (k-means, spherical classification
// EM) and marginalise nothing skips the feature buffer: the logits thq_k s + thl_k . e + thc_k of a
// row e = x - centre, s = |e|^2, are taken from a row-major centred copy of a few rows with the
// components in the lanes (a register tile of RT rows x G vectors of components, the row's value
// broadcast per feature), the arg-max (ties to the first) is found in the registers, and the row
// is added to its component's statistics [s, e, 1] in float64. Nothing is transposed and no
// logit is stored: K (D + 1) multiply-adds per row, as a GEMM, and no pass over its output (K D
// when every component has the same thq, as k-means: thq s is added to the best only).

// Vectors of components per group and accumulators per tile: at least 10 accumulators, so that
// the multiply-adds' latency (4-5 cycles, two per cycle) is covered, and room for a group's
// coefficients and one broadcast (16 registers: 2 x 6 and 2 + 1; 32 registers: 4 x 5 and 4 + 1).
// Six rows rather than five per tile of 16 registers: the arg-max and each group's set-up are
// shared by more rows.
constexpr int HG = DG_NREGS >= 32 ? 4 : 2;
constexpr int HACC = DG_NREGS >= 32 ? 20 : 12;
// Rows per sub-block: their centred copy stays in L1.
constexpr int64_t HROWS = 120;

// One model's coefficients, components in lanes, padded to whole vectors (padding: -inf, never chosen).
template <class T> struct HardModel {
    int64_t kv;       // vectors of components
    const T* lin;     // (d, kv * W)
    const T* quad;    // (kv * W)
    const T* cons;    // (kv * W)
    const T* ids;     // (kv * W) 0, 1, ...: each lane's component
    bool one_quad;    // every component's quad the same (k-means): added after the arg-max
    double* sum;      // (k, sp) this call's sums per component: [e, s, weight], rows of whole vectors
    int64_t sp;
    double* per_row;  // (n)
    // of the components (not the padding): the largest |cons|, |quad| and Euclidean norm of lin (inf
    // when any is not finite), which bound every partial sum of a row's logits (see hard_tiles)
    double cons_abs, quad_abs, lin_norm;
    double* cnt = nullptr;  // (k) each component's rows (unweighted), when the caller counts them (else null)
};

#if DG_AVX2_INTRINSICS || DG_AVX512_INTRINSICS
// The largest lane of v in every lane (by shuffles; AVX-512: reduced, then broadcast). lanes_best
// takes its maximum from here, so both give the same bits (a zero's sign included).
template <class T> static inline typename Lanes<T>::V lanes_max(typename Lanes<T>::V v) {
#if DG_AVX2_INTRINSICS
    if constexpr (sizeof(T) == 8) {
        __m256d m = _mm256_max_pd((__m256d)v, _mm256_permute2f128_pd((__m256d)v, (__m256d)v, 1));
        return (typename Lanes<T>::V)_mm256_max_pd(m, _mm256_permute_pd(m, 5));
    } else {
        __m256 m = _mm256_max_ps((__m256)v, _mm256_permute2f128_ps((__m256)v, (__m256)v, 1));
        m = _mm256_max_ps(m, _mm256_permute_ps(m, 0x4E));
        return (typename Lanes<T>::V)_mm256_max_ps(m, _mm256_permute_ps(m, 0xB1));
    }
#else
    if constexpr (sizeof(T) == 8) {
        return (typename Lanes<T>::V)_mm512_set1_pd(_mm512_reduce_max_pd((__m512d)v));
    } else {
        return (typename Lanes<T>::V)_mm512_set1_ps(_mm512_reduce_max_ps((__m512)v));
    }
#endif
}

// Bit l set where lane l of a equals lane l of b (ordered: never for NaN).
template <class T> static inline uint64_t lanes_equal(typename Lanes<T>::V a, typename Lanes<T>::V b) {
#if DG_AVX2_INTRINSICS
    if constexpr (sizeof(T) == 8) {
        return (uint64_t)(unsigned)_mm256_movemask_pd(_mm256_cmp_pd((__m256d)a, (__m256d)b, _CMP_EQ_OQ));
    } else {
        return (uint64_t)(unsigned)_mm256_movemask_ps(_mm256_cmp_ps((__m256)a, (__m256)b, _CMP_EQ_OQ));
    }
#else
    if constexpr (sizeof(T) == 8) {
        return (uint64_t)_mm512_cmp_pd_mask((__m512d)a, (__m512d)b, _CMP_EQ_OQ);
    } else {
        return (uint64_t)_mm512_cmp_ps_mask((__m512)a, (__m512)b, _CMP_EQ_OQ);
    }
#endif
}
#define DG_LANES_MAX 1
#else
#define DG_LANES_MAX 0
#endif

// A lane's component number as an index. No lane holds the maximum when every logit of the row is NaN
// (float32's squares overflowed: the objective then is NaN, which the caller reports); the reductions
// then give +inf, which must not become an index (a conversion out of range, then a write far from the sums).
template <class T> static inline int64_t lane_index(T v) { return v < (T)16777216 ? (int64_t)v : 0; }

// A row's best logit and its component (ties to the first) from the best per lane (bv) and the
// component it came from (bi, as a number of the data's type: exact below 2^24 components).
template <class T>
static inline void lanes_best(typename Lanes<T>::V bv, typename Lanes<T>::V bi, T& best, int64_t& at) {
    constexpr int W = Lanes<T>::W;
#if DG_AVX2_INTRINSICS
    // the maximum in every lane by shuffles, then the smallest component among the lanes equal to it
    if constexpr (sizeof(T) == 8) {
        const __m256d m = (__m256d)lanes_max<T>(bv);
        __m256d i = _mm256_blendv_pd(_mm256_set1_pd(__builtin_inf()), (__m256d)bi, _mm256_cmp_pd((__m256d)bv, m, _CMP_EQ_OQ));
        i = _mm256_min_pd(i, _mm256_permute2f128_pd(i, i, 1));
        i = _mm256_min_pd(i, _mm256_permute_pd(i, 5));
        best = _mm256_cvtsd_f64(m);
        at = lane_index<double>(_mm256_cvtsd_f64(i));
    } else {
        const __m256 m = (__m256)lanes_max<T>(bv);
        __m256 i = _mm256_blendv_ps(_mm256_set1_ps(__builtin_inff()), (__m256)bi, _mm256_cmp_ps((__m256)bv, m, _CMP_EQ_OQ));
        i = _mm256_min_ps(i, _mm256_permute2f128_ps(i, i, 1));
        i = _mm256_min_ps(i, _mm256_permute_ps(i, 0x4E));
        i = _mm256_min_ps(i, _mm256_permute_ps(i, 0xB1));
        best = _mm256_cvtss_f32(m);
        at = lane_index<float>(_mm256_cvtss_f32(i));
    }
    return;
#endif
#if DG_AVX512_INTRINSICS
    // the same: the maximum (exact, in any order), then the smallest component among its lanes
    if constexpr (sizeof(T) == 8) {
        const __m512d v = (__m512d)bv;
        const double b = _mm512_reduce_max_pd(v);
        const __mmask8 eq = _mm512_cmp_pd_mask(v, _mm512_set1_pd(b), _CMP_EQ_OQ);
        best = b;
        at = lane_index<double>(_mm512_mask_reduce_min_pd(eq, (__m512d)bi));
    } else {
        const __m512 v = (__m512)bv;
        const float b = _mm512_reduce_max_ps(v);
        const __mmask16 eq = _mm512_cmp_ps_mask(v, _mm512_set1_ps(b), _CMP_EQ_OQ);
        best = b;
        at = lane_index<float>(_mm512_mask_reduce_min_ps(eq, (__m512)bi));
    }
    return;
#endif
    T b = bv[0], i = bi[0];
    for (int l = 1; l < W; l++) {
        const bool take = bv[l] > b || (bv[l] == b && bi[l] < i);
        b = take ? bv[l] : b;
        i = take ? bi[l] : i;
    }
    best = b;
    at = lane_index<T>(i);
}

// A k-means row's largest logit with the shared quadratic term added (one expression, so that every
// path that computes it rounds it the same way).
template <class T> static inline T with_quad(T s, T quad, T best) { return s * quad + best; }

// Logits of the components in vectors g0 .. g0 + G - 1 for the RT rows at e (stride dp) with
// squared norms s, into acc.
template <class T, int G, int RT>
__attribute__((always_inline)) static inline void hard_logits(const HardModel<T>& hm, int64_t g0, const T* e, const T* s,
                                                              int64_t dp, int64_t d, typename Lanes<T>::V (&acc)[RT][G]) {
    typedef typename Lanes<T>::V V;
    constexpr int W = Lanes<T>::W;
    const int64_t kw = hm.kv * W;
    for (int v = 0; v < G; v++) {
        const V c = load<T>(hm.cons + (g0 + v) * W), q = load<T>(hm.quad + (g0 + v) * W);
        if (hm.one_quad) {
            for (int r = 0; r < RT; r++) acc[r][v] = c;
        } else {
            for (int r = 0; r < RT; r++) acc[r][v] = splat<T>(s[r]) * q + c;
        }
    }
    const T* th = hm.lin + g0 * W;
    for (int64_t j = 0; j < d; j++, th += kw) {
        V t[G];
        for (int v = 0; v < G; v++) {
            t[v] = load<T>(th + v * W);
            DG_IN_REGISTER(t[v]);  // loaded once per feature, not folded into every multiply-add
        }
        for (int r = 0; r < RT; r++) {
            const V b = splat<T>(e[r * dp + j]);
            for (int v = 0; v < G; v++) acc[r][v] = b * t[v] + acc[r][v];
        }
    }
}

// Logits of the components in vectors g0 .. g0 + G - 1 for the RT rows at e (stride dp) with
// squared norms s; each row's best per lane (bv, bi) replaced where this group's is strictly
// greater (so ties keep the earlier component).
// SEC: also each lane's second-best logit in b2 (every value seen, ties included), for k-means' bounds
// (see hard_bounded); the arg-max is computed the same way either way.
template <class T, int G, int RT, bool SEC = false>
static inline void hard_group(const HardModel<T>& hm, int64_t g0, const T* e, const T* s, int64_t dp, int64_t d,
                              typename Lanes<T>::V* bv, typename Lanes<T>::V* bi, typename Lanes<T>::V* b2 = nullptr) {
    typedef typename Lanes<T>::V V;
    constexpr int W = Lanes<T>::W;
    V acc[RT][G];
    hard_logits<T, G, RT>(hm, g0, e, s, dp, d, acc);
    V comp[G];  // the component of each lane
    for (int v = 0; v < G; v++) comp[v] = load<T>(hm.ids + (g0 + v) * W);
    if constexpr (SEC) {
        const V ninf = splat<T>(-(T)__builtin_inf());
        for (int r = 0; r < RT; r++) {
            V run = g0 == 0 ? ninf : bv[r], sec = g0 == 0 ? ninf : b2[r];
            for (int v = 0; v < G; v++) {
                const V lo = acc[r][v] < run ? acc[r][v] : run;
                sec = lo > sec ? lo : sec;
                run = acc[r][v] > run ? acc[r][v] : run;
            }
            b2[r] = sec;
        }
    }
    for (int r = 0; r < RT; r++) {
        V m = acc[r][0], at = comp[0];
        for (int v = 1; v < G; v++) {
            auto gt = acc[r][v] > m;
            m = gt ? acc[r][v] : m;
            at = gt ? comp[v] : at;
        }
        if (g0 == 0) {
            bv[r] = m;
            bi[r] = at;
        } else {
            auto gt = m > bv[r];
            bv[r] = gt ? m : bv[r];
            bi[r] = gt ? at : bi[r];
        }
    }
}

#if DG_LANES_MAX
// A model whose components are the G vectors of one group, on rows whose logits cannot be NaN: each
// of the RT rows' largest logit (best) and its component (label). No component is carried per lane:
// the logits are still in the registers, so the row's maximum (lanes_max of hard_group's per-lane
// maxima, as lanes_best takes it: the same bits) is compared with them, and the lowest set bit of
// the G masks is the first component equal to it, the one hard_group and lanes_best find (each
// lane's first maximum, then the smallest component among the lanes equal to the largest). Used for
// float32, where the arg-max had cost as much as the multiply-adds save over float64; in float64
// (more logits per row to compare, fewer rows a tile) it was slower than lanes_best.
template <class T, int G, int RT>
static inline void hard_group_labels(const HardModel<T>& hm, const T* e, const T* s, int64_t dp, int64_t d, T* best,
                                     int64_t* label) {
    typedef typename Lanes<T>::V V;
    constexpr int W = Lanes<T>::W;
    V acc[RT][G];
    hard_logits<T, G, RT>(hm, 0, e, s, dp, d, acc);
    for (int r = 0; r < RT; r++) {
        V m = acc[r][0];
        for (int v = 1; v < G; v++) m = acc[r][v] > m ? acc[r][v] : m;
        m = lanes_max<T>(m);
        uint64_t bits = 0;
        for (int v = 0; v < G; v++) bits |= lanes_equal<T>(acc[r][v], m) << (v * W);
        best[r] = m[0];
        label[r] = __builtin_ctzll(bits);  // never 0: no logit is NaN, so some lane equals the maximum
    }
}

#endif

template <class T, int RT, int G, bool SEC = false> struct HardGroups {
    static void run(const HardModel<T>& hm, int64_t g0, int64_t ng, const T* e, const T* s, int64_t dp, int64_t d,
                    typename Lanes<T>::V* bv, typename Lanes<T>::V* bi, typename Lanes<T>::V* b2 = nullptr) {
        if (ng == G) {
            hard_group<T, G, RT, SEC>(hm, g0, e, s, dp, d, bv, bi, b2);
        } else {
            HardGroups<T, RT, G - 1, SEC>::run(hm, g0, ng, e, s, dp, d, bv, bi, b2);
        }
    }
};
template <class T, int RT, bool SEC> struct HardGroups<T, RT, 0, SEC> {
    static void run(const HardModel<T>&, int64_t, int64_t, const T*, const T*, int64_t, int64_t,
                    typename Lanes<T>::V*, typename Lanes<T>::V*, typename Lanes<T>::V* = nullptr) {}
};

// W doubles from W values of type T at p, at any alignment.
template <class T> static inline typename Lanes<double>::V widen(const T* p) {
    typedef T E __attribute__((vector_size(Lanes<double>::W * sizeof(T))));
    E v;
    std::memcpy(&v, p, sizeof v);
    return __builtin_convertvector(v, typename Lanes<double>::V);
}

// Rows 0 .. rows - 1 of a sub-block added to their components' sums [w e (d), w s, w] (see hard_tiles) in
// row order, a row's whole vectors of doubles unrolled: NV of them (0: a loop over d's), then its last
// features and [w s, w] as one pair. At D = 16 a row's loop with its exit and tail, and two scalar
// read-modify-writes, cost as much as its four vectors.
template <class T, int NV>
static void add_labelled(const HardModel<T>& hm, const T* eb, const T* sb, const unsigned char* skip, const double* w,
                         const int64_t* label, int64_t a, int64_t rows, int64_t dp, int64_t d) {
    typedef typename Lanes<double>::V D;
    constexpr int WD = Lanes<double>::W;
    typedef double D2 __attribute__((vector_size(2 * sizeof(double))));
    double* const sum = hm.sum;
    const int64_t sp = hm.sp;
    const int64_t jv = NV > 0 ? NV * WD : d / WD * WD;
    for (int64_t row = 0; row < rows; row++) {
        if (skip[row]) continue;
        const double wj = w ? (double)(T)w[a + row] : 1.0;
        double* st = sum + label[row] * sp;
        const T* e = eb + row * dp;
        const D wv = splat<double>(wj);
        if constexpr (NV > 0) {
            for (int v = 0; v < NV; v++) store<double>(st + v * WD, load<double>(st + v * WD) + wv * widen<T>(e + v * WD));
        } else {
            for (int64_t j = 0; j < jv; j += WD) store<double>(st + j, load<double>(st + j) + wv * widen<T>(e + j));
        }
        for (int64_t j = jv; j < d; j++) st[j] += wj * (double)e[j];
        D2 sw;
        std::memcpy(&sw, st + d, sizeof sw);
        sw = D2{(double)sb[row], 1.0} * wj + sw;
        std::memcpy(st + d, &sw, sizeof sw);
    }
}

// add_labelled with a row's whole vectors of doubles unrolled for D up to 4 vectors (a loop over
// them, with its exit and the tail's, cost a third of the step at D = 16).
template <class T>
static void add_labelled_rows(const HardModel<T>& hm, const T* eb, const T* sb, const unsigned char* skip,
                              const double* w, const int64_t* label, int64_t a, int64_t rows, int64_t dp, int64_t d) {
    switch (d / Lanes<double>::W) {
        case 0: add_labelled<T, 0>(hm, eb, sb, skip, w, label, a, rows, dp, d); break;
        case 1: add_labelled<T, 1>(hm, eb, sb, skip, w, label, a, rows, dp, d); break;
        case 2: add_labelled<T, 2>(hm, eb, sb, skip, w, label, a, rows, dp, d); break;
        case 3: add_labelled<T, 3>(hm, eb, sb, skip, w, label, a, rows, dp, d); break;
        case 4: add_labelled<T, 4>(hm, eb, sb, skip, w, label, a, rows, dp, d); break;
        default: add_labelled<T, 0>(hm, eb, sb, skip, w, label, a, rows, dp, d); break;
    }
    if (hm.cnt)  // each component's rows, their weights left out (a loop of its own: k-means counts none)
        for (int64_t row = 0; row < rows; row++)
            if (!skip[row] && (!w || w[a + row] > 0)) hm.cnt[label[row]] += 1.0;  // a row of weight 0 holds none
}

#if DG_LANES_MAX
// hard_tiles for a float32 model whose components are two vectors, with the labels from masks
// (hard_group_labels), when no logit can be NaN; false (nothing done) otherwise. Two vectors only:
// with one (K <= 8 on 256-bit vectors), three or four the masks made the pass slower, for reasons
// not found (ms per million rows at D = 16, avx512_256: K = 8 11.3 -> 12.6, K = 16 13.7 -> 12.8,
// K = 24 15.3 -> 16.3, K = 32 17.4 -> 18.1; avx2: K = 8 11.4 -> 12.5, K = 16 14.7 -> 14.2). None can
// be NaN when none can overflow: with finite coefficients and rows, every partial sum of a row's
// logits is at most |cons| + |quad| s + |lin| |e| (Cauchy-Schwarz), |e|^2 = s up to rounding,
// whatever the order and rounding of the sums (margins: a quarter of the largest finite value, 1% on
// |e|). Not inlined: inside hard_tiles it changed the other paths' code (avx2, float32, K = 8: 6%
// slower).
template <class T, int RT>
__attribute__((noinline)) static bool hard_tiles_masks(const HardModel<T>& hm, const T* eb, const T* sb,
                                                       const unsigned char* skip, const double* w, int64_t a,
                                                       int64_t rows, int64_t dp, int64_t d, const char* pf,
                                                       const char* pf_end) {
    typedef typename Lanes<T>::V V;
    // the largest norm, a vector at a time (the norms past the last row are the tiles' zero padding)
    V mv = V{};
    for (int64_t r = 0; r < rows; r += Lanes<T>::W) mv = vmax(mv, load<T>(sb + r));
    T smax = 0;
    for (int l = 0; l < Lanes<T>::W; l++) smax = mv[l] > smax ? mv[l] : smax;
    const double bound = hm.cons_abs + hm.quad_abs * (double)smax + hm.lin_norm * std::sqrt((double)smax) * 1.01;
    if (!(bound < 0.25 * (double)std::numeric_limits<T>::max())) return false;
    const int64_t pf_step = (int64_t)sizeof(T) * d * RT;
    int64_t label[HROWS + 8];
    T best[HROWS + 8];
    for (int64_t i = 0; i < rows; i += RT) {
        if (pf) {
            for (int64_t o = 0; o < pf_step && pf + o < pf_end; o += 64) __builtin_prefetch(pf + o);
            pf += pf_step;
        }
        // rows past the end are the copy's zero padding: computed, never used
        hard_group_labels<T, 2, RT>(hm, eb + i * dp, sb + i, dp, d, best + i, label + i);
    }
    double* const per_row = hm.per_row + a;
    if (hm.one_quad) {
        const T quad = hm.quad[0];
        for (int64_t r = 0; r < rows; r++) per_row[r] = skip[r] ? 0.0 : (double)with_quad<T>(sb[r], quad, best[r]);
    } else {
        for (int64_t r = 0; r < rows; r++) per_row[r] = skip[r] ? 0.0 : (double)best[r];
    }
    add_labelled_rows<T>(hm, eb, sb, skip, w, label, a, rows, dp, d);
    return true;
}
#endif

// Rows 0 .. rows - 1 of the sub-block (centred copy eb, squared norms sb, NaN flags skip) into
// one model: arg-max, per_row, statistics (weights w from row a). pf: the rows of the next
// sub-block, prefetched a tile's worth at a time (or null), so that they come from memory while
// this one computes (fetched only when asked for, the copy waited on the memory).
template <class T, int RT>
void hard_tiles(const HardModel<T>& hm, const T* eb, const T* sb, const unsigned char* skip, const double* w,
                int64_t a, int64_t rows, int64_t dp, int64_t d, const char* pf, const char* pf_end) {
    typedef typename Lanes<T>::V V;
    const int64_t pf_step = (int64_t)sizeof(T) * d * RT;
    V bv[RT], bi[RT];
    int64_t label[HROWS + 8];
#if DG_LANES_MAX
    if constexpr (sizeof(T) == 4)
        if (hm.kv == 2 && hard_tiles_masks<T, RT>(hm, eb, sb, skip, w, a, rows, dp, d, pf, pf_end)) return;
#endif
    for (int64_t i = 0; i < rows; i += RT) {
        if (pf) {
            for (int64_t o = 0; o < pf_step && pf + o < pf_end; o += 64) __builtin_prefetch(pf + o);
            pf += pf_step;
        }
        // rows past the end are the copy's zero padding: computed, never used
        for (int64_t g0 = 0; g0 < hm.kv; g0 += HG) {
            const int64_t ng = hm.kv - g0 < HG ? hm.kv - g0 : HG;
            HardGroups<T, RT, HG>::run(hm, g0, ng, eb + i * dp, sb + i, dp, d, bv, bi);
        }
        const int64_t n = rows - i < RT ? rows - i : RT;
        for (int64_t r = 0; r < n; r++) {
            T best;
            lanes_best<T>(bv[r], bi[r], best, label[i + r]);
            if (hm.one_quad) best = with_quad<T>(sb[i + r], hm.quad[0], best);
            hm.per_row[a + i + r] = skip[i + r] ? 0.0 : (double)best;
        }
    }
    // the statistics once the sub-block's labels are known: each row's address is then a load away,
    // not at the end of the arg-max's chain
    add_labelled_rows<T>(hm, eb, sb, skip, w, label, a, rows, dp, d);
}

// Rows per tile for a model whose first group has g vectors (every group of a tile takes the same rows).
constexpr int hard_rt(int g) { return HACC / g > 8 ? 8 : HACC / g; }

template <class T>
void hard_model(const HardModel<T>& hm, const T* eb, const T* sb, const unsigned char* skip, const double* w,
                int64_t a, int64_t rows, int64_t dp, int64_t d, const char* pf, const char* pf_end) {
    const int64_t g = hm.kv < HG ? hm.kv : HG;
    if (g == 1) hard_tiles<T, hard_rt(1)>(hm, eb, sb, skip, w, a, rows, dp, d, pf, pf_end);
    else if (g == 2) hard_tiles<T, hard_rt(2)>(hm, eb, sb, skip, w, a, rows, dp, d, pf, pf_end);
    else if (g == 3) hard_tiles<T, hard_rt(3)>(hm, eb, sb, skip, w, a, rows, dp, d, pf, pf_end);
    else hard_tiles<T, hard_rt(4)>(hm, eb, sb, skip, w, a, rows, dp, d, pf, pf_end);
}

// ---------------------------------------------------------------- k-means' bounds (algorithm="elkan")
//
// Hamerly's bounds with an exact upper one. A k-means logit is f_k(e) = c_k + l_k . e, its shared
// quadratic term q s (q < 0, s = |e|^2) added after the arg-max. With r = -1 / q, m_k = r l_k / 2 and
// b_k = c_k + r |l_k|^2 / 4 (0 but for rounding), |e - m_k|^2 = s - r (f_k - b_k) exactly. Each row
// keeps its label a and a lower bound lo of its distance to every other m_j. When the m_j move, by
// shift[j], lo - max_{j != a} shift[j] bounds the new distances from below (triangle inequality);
// the row's logit of a is computed as the tiles compute it (the same bits: the inertia needs it
// anyway), which bounds |e - m_a| from above, and when the gap between the two squared distances
// exceeds what rounding can do to the computed logits, the tiles would choose a again, so they are
// not run. The statistics are then added in the same order from the same labels: the same bits
// as the pass without bounds, however many rows were spared.
struct KBounds {
    int32_t* label;       // (n) each row's component at the reference coefficients (-1: none)
    float* lower;         // (n) a lower bound of its distance to every other component's
    const double* shift;  // (k) how far each component's m_k moved since the reference; null: no reference
    int64_t spared = 0;   // rows whose tiles were not run
};

// What rounding can do (see above), from a model's coefficients: the computed logit of a row with
// squared norm s differs from f_k by at most gamma (cmax + lmax sqrt(s)) + eta (kb_err), and the computed
// s from |e|^2 by gamma s + eta; eta: products that underflow into T's subnormals round by up to half
// the smallest one each, an error no relative term covers.
struct KBoundsConsts {
    double gamma, eta, cmax, lmax, bmin, bmax, r;
    int64_t top = 0;      // the component that moved most
    double first = 0, second = 0;  // the largest shift, and the largest of the others
    bool valid = false;   // every component's quadratic term the same (k-means)
    bool single = false;  // one component: its rows' bounds are +inf
};

template <class T>
KBoundsConsts kbounds_consts(const HardModel<T>& hm, int64_t k, int64_t d, const double* shift) {
    KBoundsConsts c;
    c.valid = hm.one_quad && k > 0 && hm.quad[0] < 0;
    c.single = k == 1;
    c.r = c.valid ? -1.0 / (double)hm.quad[0] : 1.0;
    const int64_t kw = hm.kv * Lanes<T>::W;
    const double u = sizeof(T) == 8 ? 0x1p-53 : 0x1p-24;
    // d + 1 products and sums in T per logit (2 d + 2 roundings without fused multiply-adds), the
    // squared norm's d, and this double arithmetic: a generous factor
    c.gamma = (2.0 * (double)d + 8.0) * u * 1.25;
    c.eta = (2.0 * (double)d + 8.0) * (sizeof(T) == 8 ? 0x1p-1074 : 0x1p-149);
    c.cmax = c.lmax = 0.0;
    c.bmin = __builtin_inf();
    c.bmax = -__builtin_inf();
    for (int64_t j = 0; j < k; j++) {
        double l2 = 0.0;
        for (int64_t f = 0; f < d; f++) {
            const double v = (double)hm.lin[f * kw + j];
            l2 += v * v;
        }
        const double cj = (double)hm.cons[j];
        const double b = cj + 0.25 * c.r * l2;
        c.cmax = (cj < 0 ? -cj : cj) > c.cmax ? (cj < 0 ? -cj : cj) : c.cmax;
        c.lmax = l2 > c.lmax * c.lmax ? __builtin_sqrt(l2) : c.lmax;
        c.bmin = b < c.bmin ? b : c.bmin;
        c.bmax = b > c.bmax ? b : c.bmax;
    }
    // b_k's own rounding in double
    const double slack = 16.0 * 0x1p-53 * (c.cmax + c.r * c.lmax * c.lmax);
    c.bmin -= slack;
    c.bmax += slack;
    if (shift) {
        for (int64_t j = 0; j < k; j++)
            if (shift[j] > c.first) c.first = shift[j], c.top = j;
        for (int64_t j = 0; j < k; j++)
            if (j != c.top && shift[j] > c.second) c.second = shift[j];
    }
    return c;
}

// The largest float no larger than v >= 0 (or +inf): the nearest float, one step down where it lies above
// (beyond float's range the nearest is +inf, and among subnormals a step is no longer relative).
static inline float float_below(double v) {
    float f = (float)v;
    uint32_t b;
    std::memcpy(&b, &f, sizeof b);
    b -= (double)f > v;
    std::memcpy(&f, &b, sizeof f);
    return f;
}

// err(s) without a square root: lmax sqrt(s) <= (s + lmax^2) / 2.
static inline double kb_err(const KBoundsConsts& c, double s) {
    return c.gamma * (c.cmax + 0.5 * (s * (1.0 + c.gamma) + c.eta + c.lmax * c.lmax)) + c.eta;
}

// The lower bound of a row's distance to every component but its own, from its second-largest logit.
static inline float kb_lower(const KBoundsConsts& c, double s, double second) {
    if (c.single) return __builtin_inff();  // one component
    const double err = kb_err(c, s);
    const double lo2 = s * (1.0 - c.gamma) - c.eta - c.r * (second + err - c.bmin);
    // no bound unless finite: a second logit of -inf (or a norm of +inf) is an overflow, not a distance
    return lo2 > 0.0 && lo2 < __builtin_inf() ? float_below(__builtin_sqrt(lo2) * (1.0 - 1e-12)) : 0.0f;
}

// Logits of each row's own component computed as the tiles compute them (the same multiply-adds in
// the same order on the same lane: hard_group), for rows packed at e2 (stride dp) whose components
// lie in vector g: RT rows at a time share each feature's coefficients, as the tiles' rows do.
template <class T, int RT>
static void own_logits(const HardModel<T>& hm, const T* e2, int64_t dp, int64_t d, int64_t g, const int64_t* label,
                       int64_t nr, T* out) {
    typedef typename Lanes<T>::V V;
    constexpr int W = Lanes<T>::W;
    const int64_t kw = hm.kv * W;
    const T* lin = hm.lin + g * W;
    const V c0 = load<T>(hm.cons + g * W);
    int64_t i = 0;
    for (; i + RT <= nr; i += RT) {
        V acc[RT];
        for (int r = 0; r < RT; r++) acc[r] = c0;
        const T* e = e2 + i * dp;
        for (int64_t j = 0; j < d; j++) {
            V t = load<T>(lin + j * kw);
            DG_IN_REGISTER(t);
            for (int r = 0; r < RT; r++) acc[r] = splat<T>(e[r * dp + j]) * t + acc[r];
        }
        for (int r = 0; r < RT; r++) out[i + r] = acc[r][label[i + r] % W];
    }
    for (; i < nr; i++) {
        V acc = c0;
        const T* e = e2 + i * dp;
        for (int64_t j = 0; j < d; j++) acc = splat<T>(e[j]) * load<T>(lin + j * kw) + acc;
        out[i] = acc[label[i] % W];
    }
}

// Labels, largest and second-largest logits of rows 0 .. rows - 1 at eb (the tiles of hard_tiles).
template <class T, int RT>
static void hard_tiles_second(const HardModel<T>& hm, const T* eb, const T* sb, int64_t rows, int64_t dp, int64_t d,
                              int64_t* label, T* best, T* second) {
    typedef typename Lanes<T>::V V;
    constexpr int W = Lanes<T>::W;
    V bv[RT], bi[RT], b2[RT];
    for (int64_t i = 0; i < rows; i += RT) {
        for (int64_t g0 = 0; g0 < hm.kv; g0 += HG) {
            const int64_t ng = hm.kv - g0 < HG ? hm.kv - g0 : HG;
            HardGroups<T, RT, HG, true>::run(hm, g0, ng, eb + i * dp, sb + i, dp, d, bv, bi, b2);
        }
        const int64_t n = rows - i < RT ? rows - i : RT;
        for (int64_t r = 0; r < n; r++) {
            T b;
            lanes_best<T>(bv[r], bi[r], b, label[i + r]);
            // the largest of every lane's second and of the other lanes' best; the best again when two
            // lanes hold it (no branch per lane: which lanes is data)
            const auto eq = bv[r] == splat<T>(b);
            const V o = eq ? splat<T>(-(T)__builtin_inf()) : bv[r];
            const V m2 = o > b2[r] ? o : b2[r];
            T sec = m2[0];
            int ties = eq[0] != 0;
            for (int l = 1; l < W; l++) {
                sec = m2[l] > sec ? m2[l] : sec;
                ties += eq[l] != 0;
            }
            best[i + r] = b;
            second[i + r] = ties > 1 ? b : sec;
        }
    }
}

template <class T>
static void hard_second(const HardModel<T>& hm, const T* eb, const T* sb, int64_t rows, int64_t dp, int64_t d,
                        int64_t* label, T* best, T* second) {
    const int64_t g = hm.kv < HG ? hm.kv : HG;
    if (g == 1) hard_tiles_second<T, hard_rt(1)>(hm, eb, sb, rows, dp, d, label, best, second);
    else if (g == 2) hard_tiles_second<T, hard_rt(2)>(hm, eb, sb, rows, dp, d, label, best, second);
    else if (g == 3) hard_tiles_second<T, hard_rt(3)>(hm, eb, sb, rows, dp, d, label, best, second);
    else hard_tiles_second<T, hard_rt(4)>(hm, eb, sb, rows, dp, d, label, best, second);
}

// A row of the centred copy (dp: whole vectors) into the packed one.
template <class T> static inline void copy_row(T* dst, const T* src, int64_t dp) {
    for (int64_t j = 0; j < dp; j += Lanes<T>::W) store<T>(dst + j, load<T>(src + j));
}

// Scratch of hard_bounded, per sub-block.
template <class T> struct KScratch {
    T* eb2;  // ((HROWS + 8) x dp) the rows the tiles must see, packed
    T* sb2;
    T* best;
    T* second;
    T* own;
};

// One model's sub-block (as hard_tiles) with k-means' bounds kb from row a: the rows the bounds
// cannot settle go through the tiles (with their second-largest logits, for the new bounds).
template <class T>
void hard_bounded(const HardModel<T>& hm, int64_t k, const KBoundsConsts& c, KBounds& kb, KScratch<T>& ks,
                  const T* eb, const T* sb, const unsigned char* skip, const double* w, int64_t a, int64_t rows,
                  int64_t dp, int64_t d) {
    constexpr int W = Lanes<T>::W;
    int64_t label[HROWS + 8], order[HROWS + 8], own_label[HROWS + 8], todo[HROWS + 8];
    int64_t ntodo = 0, nown = 0;
    // the constants and pointers in locals: the stores below would otherwise make the compiler load
    // them again for every row
    const KBoundsConsts cc = c;
    float* const lower = kb.lower + a;
    int32_t* const klabel = kb.label + a;
    double* const per_row = hm.per_row + a;
    const T quad = hm.quad[0];
    // the rows with bounds, by their component's vector (a counting sort), packed: the own logits of a
    // vector's rows share its coefficients
    constexpr int64_t MAXV = 1024;  // vectors of components counted on the stack (K up to 4096 float64)
    int64_t start[MAXV + 1];
    const bool ref = kb.shift != nullptr && c.valid && hm.kv <= MAXV;
    auto bounded = [&](int64_t l) { return ref && l >= 0 && l < k; };
    for (int64_t g = 0; ref && g <= hm.kv; g++) start[g] = 0;
    for (int64_t i = 0; i < rows; i++) {
        label[i] = 0;
        if (skip[i]) continue;
        const int64_t l = klabel[i];
        if (bounded(l)) {
            start[l / W + 1]++;
            nown++;
        } else {
            todo[ntodo++] = i;
        }
    }
    if (nown) {
        for (int64_t g = 0; g < hm.kv; g++) start[g + 1] += start[g];
        int64_t fill[MAXV];
        for (int64_t g = 0; g < hm.kv; g++) fill[g] = start[g];
        for (int64_t i = 0; i < rows; i++) {
            const int64_t l = klabel[i];
            if (skip[i] || !bounded(l)) continue;
            const int64_t o = fill[l / W]++;
            order[o] = i;
            own_label[o] = l;
            copy_row<T>(ks.eb2 + o * dp, eb + i * dp, dp);
        }
        for (int64_t g = 0; g < hm.kv; g++)
            if (start[g + 1] > start[g])
                own_logits<T, 8>(hm, ks.eb2 + start[g] * dp, dp, d, g, own_label + start[g], start[g + 1] - start[g],
                                 ks.own + start[g]);
    }
    {
        int64_t spared = 0;
        for (int64_t o = 0; o < nown; o++) {
            const int64_t i = order[o], l = own_label[o];
            const double s = (double)sb[i], f = (double)ks.own[o];
            const double err = kb_err(cc, s);
            const double up2 = s * (1.0 + cc.gamma) + cc.eta - cc.r * (f - err - cc.bmax);  // >= |e - m_a|^2
            const double lo = (double)lower[i] * (1.0 - 1e-12) - (l == cc.top ? cc.second : cc.first);
            // up2 finite: an own logit that overflowed bounds nothing
            if (lo > 0.0 && up2 >= 0.0 && up2 < __builtin_inf() &&
                lo * lo * (1.0 - 1e-12) > up2 * (1.0 + 1e-12) + cc.r * (2.0 * err + cc.bmax - cc.bmin)) {
                label[i] = l;
                lower[i] = float_below(lo);
                per_row[i] = (double)with_quad<T>(sb[i], quad, ks.own[o]);
                spared++;
            } else {
                todo[ntodo++] = i;
            }
        }
        kb.spared += spared;
    }
    if (ntodo) {
        // the rows the tiles must see: the sub-block itself when it is all of them in order (no row had
        // bounds to test; rows that failed the test come after, in the test's order), else packed
        // (padding: zero rows, computed, never used)
        const bool all = ntodo == rows && nown == 0;
        if (!all) {
            for (int64_t t = 0; t < ntodo; t++) {
                copy_row<T>(ks.eb2 + t * dp, eb + todo[t] * dp, dp);
                ks.sb2[t] = sb[todo[t]];
            }
            for (int64_t t = ntodo; t < ntodo + 8; t++) {
                std::memset(ks.eb2 + t * dp, 0, sizeof(T) * (size_t)dp);
                ks.sb2[t] = 0;
            }
        }
        int64_t lab2[HROWS + 8];
        hard_second<T>(hm, all ? eb : ks.eb2, all ? sb : ks.sb2, ntodo, dp, d, lab2, ks.best, ks.second);
        const bool one_quad = hm.one_quad;
        for (int64_t t = 0; t < ntodo; t++) {
            const int64_t i = todo[t];
            label[i] = lab2[t];
            const T b = one_quad ? with_quad<T>(sb[i], quad, ks.best[t]) : ks.best[t];
            per_row[i] = (double)b;
            klabel[i] = (int32_t)lab2[t];
            lower[i] = cc.valid ? kb_lower(cc, (double)sb[i], (double)ks.second[t]) : 0.0f;
        }
    }
    for (int64_t i = 0; i < rows; i++)
        if (skip[i]) {
            per_row[i] = 0.0;
            klabel[i] = -1;
            lower[i] = 0.0f;
        }
    add_labelled_rows<T>(hm, eb, sb, skip, w, label, a, rows, dp, d);
}

#if DG_AVX2_INTRINSICS
// Lane l of 4 rows' vectors of 4 doubles, for each l: a 4 x 4 transpose.
static inline void lanes_of_rows(__m256d r[4]) {
    const __m256d t0 = _mm256_unpacklo_pd(r[0], r[1]), t1 = _mm256_unpackhi_pd(r[0], r[1]);
    const __m256d t2 = _mm256_unpacklo_pd(r[2], r[3]), t3 = _mm256_unpackhi_pd(r[2], r[3]);
    r[0] = _mm256_permute2f128_pd(t0, t2, 0x20);
    r[1] = _mm256_permute2f128_pd(t1, t3, 0x20);
    r[2] = _mm256_permute2f128_pd(t0, t2, 0x31);
    r[3] = _mm256_permute2f128_pd(t1, t3, 0x31);
}
// The same for 8 rows' vectors of 8 floats: an 8 x 8 transpose.
static inline void lanes_of_rows(__m256 r[8]) {
    const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
    r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
    r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}
#endif

// Rows base[0 .. rows) (stride step) less cen into eb (stride dp), each row's squared norm into sb and
// its NaN flag into skip (a NaN row's copy and norm 0); NV whole vectors a row (0: a loop over them).
// A row's norm: its vectors' squares summed lane by lane, then its tail, then the lanes in order. With
// AVX2 intrinsics, W rows at a time, their lanes added as vectors after a transpose: the same adds in
// the same order as one row at a time (the same bits), without a chain of scalar adds and a NaN test
// per row. Returns the rows with NaN. Not inlined: inside run_hard its counters and the tiles'
// registers got in each other's way (the k-means pass 20% slower, measured).
template <class T, int NV>
__attribute__((noinline)) static int64_t centre_norms_nv(const T* base, int64_t step, const T* cen, T* eb, T* sb, unsigned char* skip,
                               int64_t rows, int64_t d, int64_t dp) {
    typedef typename Lanes<T>::V V;
    constexpr int W = Lanes<T>::W;
    const int64_t jv = NV > 0 ? NV * W : d / W * W;
    int64_t incomplete = 0;
    // row i copied; its vectors' squares in acc, its tail's sum returned
    auto copy = [&](int64_t i, V& acc) -> T {
        const T* src = base + i * step;
        T* er = eb + i * dp;
        acc = V{};
        if constexpr (NV > 0) {
            for (int v = 0; v < NV; v++) {
                const V x = loadx<T>(src + v * W) - load<T>(cen + v * W);
                store<T>(er + v * W, x);
                acc = x * x + acc;
            }
        } else {
            for (int64_t j = 0; j < jv; j += W) {
                const V x = loadx<T>(src + j) - load<T>(cen + j);
                store<T>(er + j, x);
                acc = x * x + acc;
            }
        }
        T s = 0;
        for (int64_t j = jv; j < d; j++) {  // the tail of a row (its next vector may lie past the end of x)
            const T t = readx(src + j) - cen[j];
            eb[i * dp + j] = t;
            s = t * t + s;
        }
        return s;
    };
    auto clean = [&](int64_t i) {  // x finite (checked by the caller) or NaN: a NaN row is left out
        for (int64_t j = 0; j < d; j++) eb[i * dp + j] = 0;
    };
    int64_t i = 0;
#if DG_AVX2_INTRINSICS
    if constexpr (sizeof(T) == 8) {
        for (; i + 4 <= rows; i += 4) {
            V acc[4];
            T tail[4];
#pragma GCC unroll 4
            for (int r = 0; r < 4; r++) tail[r] = copy(i + r, acc[r]);
            __m256d l[4] = {(__m256d)acc[0], (__m256d)acc[1], (__m256d)acc[2], (__m256d)acc[3]};
            lanes_of_rows(l);
            __m256d s = jv == d ? _mm256_setzero_pd() : _mm256_set_pd(tail[3], tail[2], tail[1], tail[0]);
            for (int q = 0; q < 4; q++) s = _mm256_add_pd(s, l[q]);
            const __m256d bad = _mm256_cmp_pd(s, s, _CMP_UNORD_Q);
            const int m = _mm256_movemask_pd(bad);
            _mm256_storeu_pd(sb + i, _mm256_andnot_pd(bad, s));
            for (int r = 0; r < 4; r++) skip[i + r] = (m >> r) & 1;
            if (m) {
                incomplete += __builtin_popcount(m);
                for (int r = 0; r < 4; r++)
                    if ((m >> r) & 1) clean(i + r);
            }
        }
    } else {
        for (; i + 8 <= rows; i += 8) {
            V acc[8];
            T tail[8];
#pragma GCC unroll 8
            for (int r = 0; r < 8; r++) tail[r] = copy(i + r, acc[r]);
            __m256 l[8];
            for (int r = 0; r < 8; r++) l[r] = (__m256)acc[r];
            lanes_of_rows(l);
            __m256 s = jv == d ? _mm256_setzero_ps() : _mm256_set_ps(tail[7], tail[6], tail[5], tail[4], tail[3], tail[2], tail[1], tail[0]);
            for (int q = 0; q < 8; q++) s = _mm256_add_ps(s, l[q]);
            const __m256 bad = _mm256_cmp_ps(s, s, _CMP_UNORD_Q);
            const int m = _mm256_movemask_ps(bad);
            _mm256_storeu_ps(sb + i, _mm256_andnot_ps(bad, s));
            for (int r = 0; r < 8; r++) skip[i + r] = (m >> r) & 1;
            if (m) {
                incomplete += __builtin_popcount(m);
                for (int r = 0; r < 8; r++)
                    if ((m >> r) & 1) clean(i + r);
            }
        }
    }
#endif
    for (; i < rows; i++) {
        V acc;
        T s = copy(i, acc);
        for (int l = 0; l < W; l++) s += acc[l];
        const bool nan = s != s;
        skip[i] = nan;
        incomplete += nan;
        if (nan) {
            s = 0;
            clean(i);
        }
        sb[i] = s;
    }
    return incomplete;
}

template <class T>
static int64_t centre_norms(const T* base, int64_t step, const T* cen, T* eb, T* sb, unsigned char* skip, int64_t rows,
                            int64_t d, int64_t dp) {
    switch (d / Lanes<T>::W) {
        case 1: return centre_norms_nv<T, 1>(base, step, cen, eb, sb, skip, rows, d, dp);
        case 2: return centre_norms_nv<T, 2>(base, step, cen, eb, sb, skip, rows, d, dp);
        case 3: return centre_norms_nv<T, 3>(base, step, cen, eb, sb, skip, rows, d, dp);
        case 4: return centre_norms_nv<T, 4>(base, step, cen, eb, sb, skip, rows, d, dp);
        default: return centre_norms_nv<T, 0>(base, step, cen, eb, sb, skip, rows, d, dp);
    }
}

// The hard spherical pass (see above): models' statistics S (nw, d + 2) and per_row (nm, n), theta
// (nw, d + 2) at level 0. Returns the rows with NaN (left out of every model), or -1 when memory
// ran out.
template <class T>
int64_t run_hard(const Rows<T>& x, int64_t n, int64_t d, const double* centre64, const double* w, const T* theta,
                 const int64_t* bounds, int64_t nm, double* S, double* per_row, KBounds* kb = nullptr,
                 double* counts = nullptr) {
    typedef typename Lanes<T>::V V;
    constexpr int W = Lanes<T>::W;
    const int64_t nf = d + 2;
    const int64_t dp = (d + W - 1) / W * W;  // the centred copy's row stride, whole vectors
    auto round64 = [](size_t b) { return (b + 63) / 64 * 64; };
    int64_t coef = 0;
    for (int64_t m = 0; m < nm; m++) coef += (bounds[m + 1] - bounds[m] + W - 1) / W * W * (d + 3);
    const size_t bytes_coef = round64(sizeof(T) * (size_t)(coef + W));
    const size_t bytes_e = round64(sizeof(T) * (size_t)((HROWS + 8) * dp));
    const size_t bytes_s = round64(sizeof(T) * (size_t)(HROWS + 8));
    const size_t bytes_c = round64(sizeof(T) * (size_t)(2 * dp));  // the centre, and zeros
    const size_t bytes_skip = round64((size_t)(HROWS + 8));
    const size_t bytes_m = round64(sizeof(HardModel<T>) * (size_t)nm);
    constexpr int WD = Lanes<double>::W;
    const int64_t sp = (d + 2 + WD - 1) / WD * WD;
    const size_t bytes_sum = round64(sizeof(double) * (size_t)(bounds[nm] * sp));
    // k-means' bounds: the packed rows and their results (KScratch)
    const size_t bytes_kb = kb ? bytes_e + 4 * bytes_s : 0;
    char* mem = (char*)std::aligned_alloc(64, bytes_coef + bytes_e + bytes_s + bytes_c + bytes_skip + bytes_m + bytes_sum +
                                                  bytes_kb);
    if (!mem) return -1;
    KScratch<T> ks{};
    if (kb) {
        char* q = mem + bytes_coef + bytes_e + bytes_s + bytes_c + bytes_skip + bytes_m + bytes_sum;
        ks.eb2 = (T*)q;
        ks.sb2 = (T*)(q + bytes_e);
        ks.best = (T*)(q + bytes_e + bytes_s);
        ks.second = (T*)(q + bytes_e + 2 * bytes_s);
        ks.own = (T*)(q + bytes_e + 3 * bytes_s);
    }
    double* sums = (double*)(mem + bytes_coef + bytes_e + bytes_s + bytes_c + bytes_skip + bytes_m);
    std::memset(sums, 0, bytes_sum);
    T* cf = (T*)mem;
    T* eb = (T*)(mem + bytes_coef);
    T* sb = (T*)(mem + bytes_coef + bytes_e);
    T* centre = (T*)(mem + bytes_coef + bytes_e + bytes_s);
    unsigned char* skip = (unsigned char*)(mem + bytes_coef + bytes_e + bytes_s + bytes_c);
    HardModel<T>* hm = (HardModel<T>*)(mem + bytes_coef + bytes_e + bytes_s + bytes_c + bytes_skip);
    std::memset(eb, 0, bytes_e);
    std::memset(sb, 0, bytes_s);
    std::memset(skip, 0, bytes_skip);
    for (int64_t j = 0; j < dp; j++) centre[j] = j < d ? (T)centre64[j] : (T)0;
    T* zeros = centre + dp;
    for (int64_t j = 0; j < dp; j++) zeros[j] = 0;
    const T ninf = -(T)__builtin_inf();
    for (int64_t m = 0; m < nm; m++) {
        const int64_t lo = bounds[m], k = bounds[m + 1] - lo, kv = (k + W - 1) / W, kw = kv * W;
        T* lin = cf;
        T* quad = lin + d * kw;
        T* cons = quad + kw;
        T* ids = cons + kw;
        cf = ids + kw;
        for (int64_t c = 0; c < kw; c++) {
            const T* th = theta + (lo + (c < k ? c : 0)) * nf;
            for (int64_t j = 0; j < d; j++) lin[j * kw + c] = c < k ? th[1 + j] : (T)0;
            quad[c] = c < k ? th[0] : (T)0;
            cons[c] = c < k ? th[1 + d] : ninf;
            ids[c] = (T)c;
        }
        bool one_quad = true;
        for (int64_t c = 1; c < k; c++) one_quad &= quad[c] == quad[0];
        double cons_abs = 0, quad_abs = 0, lin_norm = 0;
        bool finite = true;
        for (int64_t c = 0; c < k; c++) {
            const T* th = theta + (lo + c) * nf;
            double l2 = 0;
            for (int64_t j = 0; j < d; j++) l2 += (double)th[1 + j] * (double)th[1 + j];
            const double ca = std::fabs((double)th[1 + d]), qa = std::fabs((double)th[0]), ln = std::sqrt(l2);
            finite &= std::isfinite(ca) && std::isfinite(qa) && std::isfinite(ln);
            cons_abs = ca > cons_abs ? ca : cons_abs;
            quad_abs = qa > quad_abs ? qa : quad_abs;
            lin_norm = ln > lin_norm ? ln : lin_norm;
        }
        if (!finite) cons_abs = quad_abs = lin_norm = __builtin_inf();
        hm[m] = HardModel<T>{kv,       lin,      quad,     cons,    ids,    one_quad, sums + lo * sp, sp, per_row + m * n,
                             cons_abs, quad_abs, lin_norm, counts ? counts + lo : nullptr};
    }
    KBoundsConsts kc;
    if (kb) kc = kbounds_consts<T>(hm[0], bounds[1], d, kb->shift);
    int64_t incomplete = 0;
    for (int64_t a = 0; a < n; a += HROWS) {
        const int64_t rows = n - a < HROWS ? n - a : HROWS;
        // columns contiguous: centred and transposed into the copy first, each row's norm taken from
        // it as a row's is from x below (the same bits from either layout)
        if (!x.by_rows()) {
            if (a + rows < n) x.prefetch_columns(a + rows, n - a - rows < HROWS ? n - a - rows : HROWS, d);
            centre_rows_from_columns<T>(x, a, d, centre, eb, dp, rows);
        }
        const T* base = x.by_rows() ? x.p + a * x.rs : eb;
        const int64_t step = x.by_rows() ? x.rs : dp;
        const T* cen = x.by_rows() ? centre : zeros;
        incomplete += centre_norms<T>(base, step, cen, eb, sb, skip, rows, d, dp);
        // the tiles' padding past the last row: zero from the start but for a short last sub-block,
        // whose next rows still hold the previous sub-block's
        for (int64_t i = rows; i < rows + 8 && i < HROWS; i++) {
            for (int64_t j = 0; j < dp; j++) eb[i * dp + j] = 0;
            sb[i] = 0;
        }
        // rows contiguous: the next sub-block is one range of bytes (columns: d streams the hardware follows)
        const char* pf = x.by_rows() && a + rows < n ? x.from(a + rows) : nullptr;
        const char* pf_end = x.from(n);
        if (kb) {  // one model (checked by the caller)
            if (pf)
                for (const char* o = pf; o < pf + (int64_t)sizeof(T) * d * HROWS && o < pf_end; o += 64) __builtin_prefetch(o);
            hard_bounded<T>(hm[0], bounds[1], kc, *kb, ks, eb, sb, skip, w, a, rows, dp, d);
            continue;
        }
        for (int64_t m = 0; m < nm; m++)
            if (bounds[m + 1] > bounds[m]) {
                hard_model<T>(hm[m], eb, sb, skip, w, a, rows, dp, d, pf, pf_end);
                pf = nullptr;  // the first model's tiles fetch the next rows
            }
    }
    // this call's sums into the caller's statistics [s, e, weight]
    for (int64_t c = 0; c < bounds[nm]; c++) {
        const double* sc = sums + c * sp;
        double* st = S + c * nf;
        st[0] += sc[d];
        for (int64_t j = 0; j < d; j++) st[1 + j] += sc[j];
        st[1 + d] += sc[d + 1];
    }
    std::free(mem);
    return incomplete;
}

// ---------------------------------------------------------------- rows with missing values
//
// A model that marginalises missing values (daskgmm.kernels.missing is the NumPy reference, and
// its docstring the algebra) takes its rows with NaN here, inside the block pass. Such a row is
// in the feature buffer as x0: centred, 0 where missing, so the logits tile has already computed
// each component's log-density at x0, l0 = c - (x0 - mu)^T P (x0 - mu) / 2. Write e = x0 - mu
// (e_m = -mu_m where missing), z = e with 0 where missing, b = (P z)_m, m the row's missing
// features and P the precision. Then z^T P z = e^T P e + 2 mu_m . b - mu_m^T P_mm mu_m, the
// observed part's Mahalanobis distance is z^T P z - b^T P_mm^-1 b, and its log-density is
//
//     l = l0 - log det P_mm / 2 + m log(2 pi) / 2 - mu_m . b + mu_m^T P_mm mu_m / 2 + y . b / 2,
//
// y = P_mm^-1 b, with E[x_m | x_o] = mu_m - y and Cov[x_m | x_o] = P_mm^-1. So a row costs
// O(m D) per component beyond the complete-data work (b, and the Cholesky factor of the m x m
// block P_mm), not O(D^2): neither the observed block's factor (D - m square) nor downdates of
// a cached one. The moments are T(x0) through the same register tiles as complete rows (with the
// row's responsibilities put in), plus the terms T(x_hat) - T(x0) + the conditional covariance,
// which involve a missing feature: O(m D) per component, in float64.
//
// Every row's missing pattern is the same for all its components, so the work is vectorised
// over components (float64 lanes), in groups of MG vectors whose sums stay in registers.

struct MarginalModel {
    int64_t k, kp, d;  // components (padded to kp, whole vectors), features
    bool full;         // full (or tied) precisions; else diagonal (or spherical)
    bool tied;         // full, and every component's precision the same (a tied model's)
    double* mu;        // (d, kp) means, about the pass centre
    double* pmu;       // full: (d, kp) P mu
    double* prec;      // full: (d, d, kp) P = U U^T; diagonal: (d, kp) u^2
    double* var;       // diagonal: (d, kp) 1 / u^2
    double* logu;      // diagonal: (d, kp) log u
    double* St;        // (nf, kp) the statistics this path adds, float64
    // At the full level, sum r x_hat_i x_j over the rows missing i (j observed: x0_j, 0 where
    // missing), for every (i, j): contiguous in j, so each row's terms are a plain run of
    // read-modify-writes (through the pair table into St they were indexed); folded into the
    // quadratic statistics at the end of the block.
    double* cross;     // (d, d, kp) or null
    // Full: what a row missing one or two features needs beyond its own (P x0)_m, per component:
    // P_mm^-1, its log det / 2, P_mm mu_m - (P mu)_m (b = (P x0)_m plus it) and the logit's constant
    // -log det P_mm / 2 + m log(2 pi) / 2 + mu_m^T P_mm mu_m / 2. Filled when a block first has such a
    // row (marginal_tables), so that rows with one or two NaN need no factor, division or log.
    double* t1;        // (d, T1, kp): feature i
    double* t2;        // (d (d - 1) / 2, T2, kp): features i < j, at pair_index(i, j, d); null when larger
                       // than PAIR_BYTES (such rows then take marginal_full)
    bool tabled;
    double rlogr;
    // Diagonal models at the diagonal or spherical level, soft assignment: a row with NaN differs
    // from x0 by terms linear in its missing-feature indicators, so its logits are l0 plus
    // add[j] summed over its missing features j, the tiles' softmax does the rest with every
    // row, and the moments are the tiles' ones plus, per missing feature, sum r (mu^2 + var)
    // and sum r mu: from acc[j] = sum over rows missing j of r.
    bool by_rows;
    double* add;       // (d, k) -log u + log(2 pi) / 2 + u^2 mu^2 / 2
    double* acc;       // (d, k)
    // When a third or more of a sub-block's rows have NaN, both are tiles over the sub-block's
    // rows with the missing-value indicators (Work::mb) instead of a loop over those rows.
};

// The tables' rows: t1 P_ii^-1, t2 P_mm^-1 (00, 01, 11); then the constant, (P_mm mu_m - (P mu)_m)_a and log det P_mm / 2.
constexpr int T1 = 4, T2 = 7;
constexpr int64_t PAIR_BYTES = 1 << 20;
inline bool pair_table(int64_t d, int64_t kp) { return (int64_t)sizeof(double) * T2 * (d * (d - 1) / 2) * kp <= PAIR_BYTES; }
inline int64_t pair_index(int64_t i, int64_t j, int64_t d) { return i * d - i * (i + 1) / 2 + (j - i - 1); }

// Rows missing up to LATER_M values go through the tiles' softmax (MarginalSet::later): their slot
// holds xc, xm (LATER_M kp) and the conditional covariance (LATER_M^2 kp).
constexpr int64_t LATER_M = 4, LATER_SLOT = LATER_M + LATER_M * LATER_M;

// One row's scratch (arrays (..., kp)) and its pattern.
struct MarginalRow {
    const double* xc;   // (d) the row centred, 0 where missing
    const int64_t* miss;
    int64_t nm;
    double *z, *b, *L, *X, *cc, *xm, *lg;  // xm: E[x_m | x_o] (nm, kp); lg: logits, l0 in, l out
    double* hl = nullptr;  // (kp) log det P_mm / 2 out (the full step's, for the t pass), or null
    double* qrx = nullptr;  // at the full level: where marginal_terms puts r x_hat_i, (nm, kp) (CrossQueue)
};

// Vectors of components per group: their sums stay in registers.
constexpr int MG = 4;

// log of a product of positive normal doubles, kept as a mantissa in [1, 2) and an exponent
struct LogProduct {
    typedef Lanes<double>::V V;
    typedef IVec<double>::V I;
    V mant;
    I expo;
    LogProduct() : mant(splat<double>(1.0)), expo(I{}) {}
    inline void mul(V a) {
        V p = mant * a;
        I bits = (I)p;
        expo += ((bits >> 52) & 0x7FF) - 1023;
        mant = (V)((bits & 0x000FFFFFFFFFFFFFLL) | 0x3FF0000000000000LL);
    }
    inline V log() const {
        V e = (V)(expo + 0x4338000000000000LL) - 6755399441055744.0;  // any sign, through the 1.5 * 2^52 bias
        return Math<double>::log(mant) + e * 0.6931471805599453;
    }
};

// NM: the row's missing count when known at compile time (the loops over it unrolled, the factors
// on the stack, clear of any aliasing with the parameters), else 0 (the row's scratch). TIED: every
// component has the same precision, so the factor of P_mm, its inverse and log det P_mm are the
// same for all: computed once per row (from the first component's lane), not once per component.
// The rest is done one vector of components at a time: b and the row's terms stay local.
template <int NV, int NM, bool TIED> void marginal_full(const MarginalModel& md, const MarginalRow& w, int64_t o) {
    typedef Lanes<double>::V V;
    constexpr int W = Lanes<double>::W;
    const int64_t d = md.d, kp = md.kp, nm = NM ? NM : w.nm;
    const int64_t* miss = w.miss;
    auto ld = [&](const double* base, int64_t i, int v) { return load<double>(base + i * kp + o + v * W); };
    auto st = [&](double* base, int64_t i, int v, V x) { store<double>(base + i * kp + o + v * W, x); };
    // b = (P e)_m, e = x0 - mu (-mu_m where missing), summed over the features in order with every
    // missing feature's sum in a register; P_mm^-1 (the conditional covariance) by a symmetric
    // sweep, log det P_mm from its pivots (no square roots); y = P_mm^-1 b. Whatever e_m is,
    // e^T P e - b^T y is the observed part's Mahalanobis distance and mu_m + e_m - y its
    // conditional mean: with e_m = -mu_m, E[x_m | x_o] = -y and the logit is
    // l0 - log det P_mm / 2 + m log(2 pi) / 2 + y . b / 2 (no P_mm mu_m).
    V Bs[NM ? NM : 1], Ts[NM ? NM : 1], Cs[NM ? NM * NM : 1];
    V* Bq = NM ? Bs : (V*)w.b;
    V* Tq = NM ? Ts : (V*)w.X;
    V* Cq = NM ? Cs : (V*)w.L + nm * nm;
    // the logs of the determinants last, side by side: each is a long chain of latencies
    LogProduct det[NV];
    auto factor = [&](int v, LogProduct& dt) {
        // P_mm^-1 by sweeping its pivots in turn (Goodnight's symmetric sweep on the upper triangle,
        // which then holds -P_mm^-1), log det P_mm from the pivots (the Schur complements, the D of
        // P_mm = L D L^T). Half the multiplies of L D L^T, L^-1 and X^T D^-1 X, and every loop
        // unrolled for a known nm (GCC left the triangular ones rolled: the pass took 5% longer).
        // Each pivot waits for the last one's division; running the vectors of components side by
        // side through it was no faster.
        auto at = [&](int64_t i, int64_t j) -> V& { return i < j ? Cq[i * nm + j] : Cq[j * nm + i]; };
        for (int64_t a = 0; a < nm; a++)
            for (int64_t c = a; c < nm; c++) Cq[a * nm + c] = ld(md.prec, miss[a] * d + miss[c], v);
        _Pragma("GCC unroll 8") for (int64_t e = 0; e < nm; e++) {
            const V piv = Cq[e * nm + e];
            dt.mul(piv);
            const V ip = 1.0 / piv;
            _Pragma("GCC unroll 8") for (int64_t i = 0; i < nm; i++) Tq[i] = at(i, e) * ip;  // the pivot's column over the pivot
            _Pragma("GCC unroll 8") for (int64_t i = 0; i < nm; i++) {
                if (i == e) continue;
                _Pragma("GCC unroll 8") for (int64_t j = i; j < nm; j++) {
                    if (j == e) continue;
                    Cq[i * nm + j] = Cq[i * nm + j] - Tq[i] * at(e, j);
                }
            }
            _Pragma("GCC unroll 8") for (int64_t i = 0; i < nm; i++)
                if (i != e) at(i, e) = Tq[i];
            Cq[e * nm + e] = -ip;
        }
        _Pragma("GCC unroll 8") for (int64_t p = 0; p < nm; p++)
            _Pragma("GCC unroll 8") for (int64_t q = p; q < nm; q++) {
                const V t = -Cq[p * nm + q];
                Cq[p * nm + q] = t;
                Cq[q * nm + p] = t;
            }
    };
    V logdet = V{};
    if (TIED) {
        // lane 0 is a real component (every group starts at one); the others may be padding
        LogProduct dt;
        factor(0, dt);
        for (int64_t p = 0; p < nm * nm; p++) Cq[p] = splat<double>(Cq[p][0]);
        logdet = splat<double>(dt.log()[0]);
    }
    // tied: b = (P x0)_m - (P mu)_m, the first term the same for every component and (P mu)
    // precomputed, so b costs O(m) per component instead of O(m D)
    double Xo[NM ? NM : 1];
    double* xo = NM ? Xo : w.z;
    if (TIED)
        for (int64_t a = 0; a < nm; a++) {
            const double* pr = md.prec + miss[a] * d * kp + o;
            double t = 0.0;
            for (int64_t j = 0; j < d; j++) t += pr[j * kp] * w.xc[j];
            xo[a] = t;
        }
    const double half_m_log2pi = 0.5 * 1.8378770664093453 * (double)nm;
    V part[NV];
    for (int v = 0; v < NV; v++) {
        if (TIED) {
            for (int64_t p = 0; p < nm; p++) Bq[p] = splat<double>(xo[p]) - ld(md.pmu, miss[p], v);
        } else {
            for (int64_t a = 0; a < nm; a++) Bq[a] = V{};
            for (int64_t j = 0; j < d; j++) {
                const V e = splat<double>(w.xc[j]) - ld(md.mu, j, v);  // -mu_j where missing
                for (int64_t a = 0; a < nm; a++) Bq[a] = ld(md.prec, miss[a] * d + j, v) * e + Bq[a];
            }
            factor(v, det[v]);
        }
        V yb = V{};
        for (int64_t p = 0; p < nm; p++) {
            V y = V{};
            for (int64_t q = 0; q < nm; q++) y = Cq[p * nm + q] * Bq[q] + y;
            st(w.xm, p, v, -y);
            yb = y * Bq[p] + yb;
        }
        part[v] = half_m_log2pi + 0.5 * yb;
        for (int64_t p = 0; p < nm; p++)
            for (int64_t q = p; q < nm; q++) st(w.cc, p * nm + q, v, Cq[p * nm + q]);
    }
    for (int v = 0; v < NV; v++) {
        const V half = 0.5 * (TIED ? logdet : det[v].log());
        st(w.lg, 0, v, ld(w.lg, 0, v) - half + part[v]);
        if (w.hl) st(w.hl, 0, v, half);
    }
}

// marginal_full for a row missing NM = 1 or 2 features, from the model's tables (marginal_tables): only b's
// (P x0)_m is the row's own, D NM multiply-adds per component, the features outer so that the NV NM sums
// are independent chains and each x0_j is broadcast once.
template <int NV, int NM, bool TIED> void marginal_small(const MarginalModel& md, const MarginalRow& w, int64_t o) {
    typedef Lanes<double>::V V;
    constexpr int W = Lanes<double>::W;
    constexpr int NT = NM == 1 ? T1 : T2, NC = NM == 1 ? 1 : 3;  // table rows, of them P_mm^-1's
    const int64_t d = md.d, kp = md.kp;
    const int64_t i0 = w.miss[0], i1 = NM == 2 ? w.miss[1] : 0;
    const double* tb = NM == 1 ? md.t1 + i0 * NT * kp : md.t2 + pair_index(i0, i1, d) * NT * kp;
    auto ld = [&](const double* base, int64_t i, int v) { return load<double>(base + i * kp + o + v * W); };
    auto st = [&](double* base, int64_t i, int v, V x) { store<double>(base + i * kp + o + v * W, x); };
    const double* r0 = md.prec + i0 * d * kp + o;
    const double* r1 = md.prec + i1 * d * kp + o;
    V px[NV][NM];
    if (TIED) {  // every component's P the same: lane 0's
        double s0 = 0.0, s1 = 0.0;
        for (int64_t j = 0; j < d; j++) {
            s0 += r0[j * kp] * w.xc[j];
            if (NM == 2) s1 += r1[j * kp] * w.xc[j];
        }
        for (int v = 0; v < NV; v++) {
            px[v][0] = splat<double>(s0);
            if (NM == 2) px[v][NM - 1] = splat<double>(s1);
        }
    } else {
        for (int v = 0; v < NV; v++)
            for (int a = 0; a < NM; a++) px[v][a] = V{};
        for (int64_t j = 0; j < d; j++) {
            const V xj = splat<double>(w.xc[j]);  // 0 where missing
            for (int v = 0; v < NV; v++) {
                px[v][0] = load<double>(r0 + j * kp + v * W) * xj + px[v][0];
                if (NM == 2) px[v][NM - 1] = load<double>(r1 + j * kp + v * W) * xj + px[v][NM - 1];
            }
        }
    }
    for (int v = 0; v < NV; v++) {
        const V b0 = px[v][0] + ld(tb, NC + 1, v);
        const V mu0 = ld(md.mu, i0, v);
        V lg = ld(w.lg, 0, v) + ld(tb, NC, v);
        if (NM == 1) {
            const V c00 = ld(tb, 0, v), y0 = c00 * b0;
            st(w.xm, 0, v, mu0 - y0);
            st(w.cc, 0, v, c00);
            lg = lg + b0 * (0.5 * y0 - mu0);
        } else {
            const V b1 = px[v][NM - 1] + ld(tb, NC + 2, v);
            const V mu1 = ld(md.mu, i1, v);
            const V c00 = ld(tb, 0, v), c01 = ld(tb, 1, v), c11 = ld(tb, 2, v);
            const V y0 = c00 * b0 + c01 * b1, y1 = c01 * b0 + c11 * b1;
            st(w.xm, 0, v, mu0 - y0);
            st(w.xm, 1, v, mu1 - y1);
            st(w.cc, 0, v, c00);
            st(w.cc, 1, v, c01);
            st(w.cc, 3, v, c11);
            lg = lg + (b0 * (0.5 * y0 - mu0) + b1 * (0.5 * y1 - mu1));
        }
        st(w.lg, 0, v, lg);
        if (w.hl) st(w.hl, 0, v, ld(tb, NT - 1, v));
    }
}

// Fill md's t1 and t2 (once per block call, when its first row with NaN comes).
inline void marginal_tables(MarginalModel& md) {
    if (md.tabled || !md.full) return;
    md.tabled = true;
    const int64_t d = md.d, kp = md.kp;
    const double half_log2pi = 0.5 * 1.8378770664093453;
    for (int64_t c = 0; c < kp; c++) {
        auto P = [&](int64_t i, int64_t j) { return md.prec[(i * d + j) * kp + c]; };
        auto mu = [&](int64_t i) { return md.mu[i * kp + c]; };
        auto pmu = [&](int64_t i) { return md.pmu[i * kp + c]; };
        for (int64_t i = 0; i < d; i++) {
            double* t = md.t1 + i * T1 * kp + c;
            const double p = P(i, i), hl = 0.5 * __builtin_log(p);
            t[0] = 1.0 / p;
            t[kp] = -hl + half_log2pi + 0.5 * p * (mu(i) * mu(i));
            t[2 * kp] = p * mu(i) - pmu(i);
            t[3 * kp] = hl;
        }
        for (int64_t i = 0; md.t2 && i < d; i++)
            for (int64_t j = i + 1; j < d; j++) {
                double* t = md.t2 + pair_index(i, j, d) * T2 * kp + c;
                // P_mm = L D L^T: D0 = a, L = b / a, D1 = c - L b (marginal_full's pivots)
                const double a = P(i, i), b = P(j, i), cc = P(j, j);
                const double id0 = 1.0 / a, l = b * id0, d1 = cc - l * b, id1 = 1.0 / d1;
                const double hl = 0.5 * __builtin_log(a * d1);
                const double pm0 = a * mu(i) + b * mu(j), pm1 = b * mu(i) + cc * mu(j);
                t[0] = l * l * id1 + id0;
                t[kp] = -l * id1;
                t[2 * kp] = id1;
                t[3 * kp] = -hl + 2.0 * half_log2pi + 0.5 * (mu(i) * pm0 + mu(j) * pm1);
                t[4 * kp] = pm0 - pmu(i);
                t[5 * kp] = pm1 - pmu(j);
                t[6 * kp] = hl;
            }
    }
}

template <int NV> void marginal_diag(const MarginalModel& md, const MarginalRow& w, int64_t o) {
    typedef Lanes<double>::V V;
    constexpr int W = Lanes<double>::W;
    const int64_t kp = md.kp;
    auto ld = [&](const double* base, int64_t i, int v) { return load<double>(base + i * kp + o + v * W); };
    auto st = [&](double* base, int64_t i, int v, V x) { store<double>(base + i * kp + o + v * W, x); };
    V lu[NV] = {}, pm[NV] = {};
    for (int64_t a = 0; a < w.nm; a++) {
        const int64_t m = w.miss[a];
        for (int v = 0; v < NV; v++) {
            const V mu = ld(md.mu, m, v);
            lu[v] = lu[v] + ld(md.logu, m, v);
            pm[v] = ld(md.prec, m, v) * (mu * mu) + pm[v];
            st(w.xm, a, v, mu);
            st(w.cc, a, v, ld(md.var, m, v));
        }
    }
    const double half_m_log2pi = 0.5 * 1.8378770664093453 * (double)w.nm;
    for (int v = 0; v < NV; v++) st(w.lg, 0, v, ld(w.lg, 0, v) - lu[v] + half_m_log2pi + 0.5 * pm[v]);
}

// r (T(x_hat) - T(x0) + the conditional covariance) into St, r the row's responsibilities
// (times its weight): the terms of the features that involve a missing feature.
template <int NV, int NM>
void marginal_terms(const MarginalModel& md, const MarginalRow& w, const double* r, int level, int64_t o) {
    typedef Lanes<double>::V V;
    constexpr int W = Lanes<double>::W;
    const int64_t d = md.d, kp = md.kp, nm = NM ? NM : w.nm, q = quad_rows(level, d);
    // the model's and the row's fields in locals: the stores (through a may_alias type) could
    // otherwise change them, and each was read again after every store to St
    double* const St = md.St;
    const bool full = md.full;
    const double* const xm = w.xm;
    const double* const cc = w.cc;
    double* const qrx = w.qrx;
    const int64_t* const miss = w.miss;
    auto ld = [&](const double* base, int64_t i, int v) { return load<double>(base + i * kp + o + v * W); };
    auto st = [&](double* base, int64_t i, int v, V x) { store<double>(base + i * kp + o + v * W, x); };
    auto cov = [&](int64_t a, int64_t c, int v) { return full ? ld(cc, a * nm + c, v) : (a == c ? ld(cc, a, v) : V{}); };
    V rv[NV];
    for (int v = 0; v < NV; v++) rv[v] = ld(r, 0, v);
    for (int64_t a = 0; a < nm; a++) {
        const int64_t i = miss[a];
        V rx[NV];
        for (int v = 0; v < NV; v++) {
            rx[v] = rv[v] * ld(xm, a, v);
            st(St, q + i, v, rx[v] + ld(St, q + i, v));
        }
        if (level == 2) {
            // (i, j) with j observed: x_hat_i x_j, into md.cross by cross_flush (w.qrx: the row's queue entries)
            for (int v = 0; v < NV; v++) st(qrx, a, v, rx[v]);
            for (int64_t c = a; c < nm; c++) {
                const int64_t j = miss[c];  // ascending: i <= j
                const int64_t pos = i * d - i * (i - 1) / 2 + (j - i);
                for (int v = 0; v < NV; v++)
                    st(St, pos, v, rx[v] * ld(xm, c, v) + (rv[v] * cov(a, c, v) + ld(St, pos, v)));
            }
        } else {
            const int64_t pos = level == 1 ? i : 0;
            for (int v = 0; v < NV; v++) st(St, pos, v, rx[v] * ld(xm, a, v) + (rv[v] * cov(a, a, v) + ld(St, pos, v)));
        }
    }
}

template <int NV> struct FullStep {
    static void run(int64_t o, const MarginalModel& md, const MarginalRow& w) {
        if (md.tied)
            step<true>(o, md, w);
        else
            step<false>(o, md, w);
    }
    template <bool TIED> static void step(int64_t o, const MarginalModel& md, const MarginalRow& w) {
        switch (w.nm) {
            case 1: marginal_small<NV, 1, TIED>(md, w, o); break;
            case 2:
                if (md.t2)
                    marginal_small<NV, 2, TIED>(md, w, o);
                else
                    marginal_full<NV, 2, TIED>(md, w, o);
                break;
            case 3: marginal_full<NV, 3, TIED>(md, w, o); break;
            case 4: marginal_full<NV, 4, TIED>(md, w, o); break;
            case 5: marginal_full<NV, 5, TIED>(md, w, o); break;
            case 6: marginal_full<NV, 6, TIED>(md, w, o); break;
            case 7: marginal_full<NV, 7, TIED>(md, w, o); break;
            case 8: marginal_full<NV, 8, TIED>(md, w, o); break;
            default: marginal_full<NV, 0, TIED>(md, w, o); break;
        }
    }
};
template <int NV> struct DiagStep {
    static void run(int64_t o, const MarginalModel& md, const MarginalRow& w) { marginal_diag<NV>(md, w, o); }
};
template <int NV> struct TermStep {
    static void run(int64_t o, const MarginalModel& md, const MarginalRow& w, const double* r, int level) {
        switch (w.nm) {
            case 1: marginal_terms<NV, 1>(md, w, r, level, o); break;
            case 2: marginal_terms<NV, 2>(md, w, r, level, o); break;
            case 3: marginal_terms<NV, 3>(md, w, r, level, o); break;
            case 4: marginal_terms<NV, 4>(md, w, r, level, o); break;
            case 5: marginal_terms<NV, 5>(md, w, r, level, o); break;
            case 6: marginal_terms<NV, 6>(md, w, r, level, o); break;
            case 7: marginal_terms<NV, 7>(md, w, r, level, o); break;
            case 8: marginal_terms<NV, 8>(md, w, r, level, o); break;
            default: marginal_terms<NV, 0>(md, w, r, level, o); break;
        }
    }
};

// F<NV>::run(o, args...) over the groups of MG vectors of components (the last one shorter)
template <template <int> class F, class... A> void over_groups(int64_t kp, A&&... args) {
    constexpr int W = Lanes<double>::W;
    const int64_t nv = kp / W;
    for (int64_t g = 0; g < nv; g += MG) {
        const int64_t left = nv - g, o = g * W;
        switch (left < MG ? left : MG) {
            case 1: F<1>::run(o, args...); break;
            case 2: F<2>::run(o, args...); break;
            case 3: F<3>::run(o, args...); break;
            default: F<MG>::run(o, args...); break;
        }
    }
}

// The parameters of a marginalising model in the lanes' layout, and its statistics; the padding
// components get mean 0 and precision 1 (finite, and left out of every sum).
struct MarginalSet {
    MarginalModel* models = nullptr;  // (nm), k == 0 for a model that does not marginalise
    char* mem = nullptr;
    MarginalRow row;
    double* rb = nullptr;       // (sub, kp max) responsibilities of the sub-block's rows with NaN
    double* lp = nullptr;       // (sub) their log p(x_o) (soft) or largest logit (hard)
    int64_t* nan_rows = nullptr;  // (sub) positions of the sub-block's rows with NaN
    int64_t n_nan = 0;
    // Soft full models, float64: a row missing up to LATER_M values leaves its marginal logits in the
    // logits buffer for the tiles' softmax (its weight in Work::wm), and its terms wait for the
    // responsibilities (marginal_terms_after) in a slot of keep: xc (d), xm, the covariance.
    double* keep = nullptr;       // (sub, d + LATER_SLOT kp max)
    int64_t* keep_miss = nullptr;  // (sub, LATER_M)
    unsigned char* later = nullptr;  // (sub) its missing count for such a row, else 0
    int64_t n_later = 0;
    // At the full level, each row's terms x_hat_i x_j (i missing, j observed: O(m D) per component)
    // wait in a queue (r x_hat_i, and the row's xc) until the sub-block's rows with NaN are done;
    // cross_flush then adds them feature by feature, a tile of md.cross[i] held in registers over
    // the rows missing i, instead of a load and a store of the whole of md.cross[i] per row (the
    // same multiply-adds in the same order for every element: the same bits).
    double* qrx = nullptr;     // (qcap, kp max)
    double* qxc = nullptr;     // (sub, d) the queued rows' xc, by their place t in the sub-block
    int64_t* qrow = nullptr;   // (qcap) t
    int64_t* qfeat = nullptr;  // (qcap) i
    int64_t* qord = nullptr;   // (qcap) the entries by feature, in queue order
    int64_t* qcnt = nullptr;   // (d + 1)
    int64_t nq = 0, qcap = 0;
    // float64 rows: the model's logits (then its responsibilities) of the whole sub-block as rows,
    // (padded, kp), 0 past its k components (logits_to_rows): a row's marginal step works on its
    // own run instead of a gather from and a scatter to k of the buffer's rows, read back as vectors
    double* lt = nullptr;  // (sub, kp max)
    int64_t lt_rows = 0;   // the sub-block's padded rows, or 0 when lt is not in use
    bool any = false;
    ~MarginalSet() { std::free(mem); }
};

// The queue's entries of feature i (ents, in queue order) into the JB x VB tile of md.cross[i] at
// features j0 .. and components o ..: r x_hat_i x_j summed in registers.
template <int JB, int VB>
void cross_tile(const MarginalSet& ms, const int64_t* ents, int64_t ne, double* cr, int64_t d, int64_t kp, int64_t j0,
                int64_t o) {
    typedef Lanes<double>::V V;
    constexpr int W = Lanes<double>::W;
    V acc[JB][VB];
    for (int jb = 0; jb < JB; jb++)
        for (int vb = 0; vb < VB; vb++) acc[jb][vb] = load<double>(cr + (j0 + jb) * kp + o + vb * W);
    for (int64_t e = 0; e < ne; e++) {
        const double* rx = ms.qrx + ents[e] * kp + o;
        const double* xc = ms.qxc + ms.qrow[ents[e]] * d + j0;
        V r[VB];
        for (int vb = 0; vb < VB; vb++) r[vb] = load<double>(rx + vb * W);
        for (int jb = 0; jb < JB; jb++) {
            const V xj = splat<double>(xc[jb]);
            for (int vb = 0; vb < VB; vb++) acc[jb][vb] = r[vb] * xj + acc[jb][vb];
        }
    }
    for (int jb = 0; jb < JB; jb++)
        for (int vb = 0; vb < VB; vb++) store<double>(cr + (j0 + jb) * kp + o + vb * W, acc[jb][vb]);
}

// Tiles of up to CJ features by CV vectors of components: 20 accumulators and operands in 32
// registers, 8 and 5 in 16.
constexpr int CJ = DG_NREGS >= 32 ? 4 : 2, CV = 4;
typedef void (*CrossTile)(const MarginalSet&, const int64_t*, int64_t, double*, int64_t, int64_t, int64_t, int64_t);
template <int JB> constexpr CrossTile cross_tiles[CV] = {cross_tile<JB, 1>, cross_tile<JB, 2>, cross_tile<JB, 3>,
                                                          cross_tile<JB, 4>};

// The queued terms into md.cross (see MarginalSet), the queue emptied.
inline void cross_flush(MarginalSet& ms, MarginalModel& md) {
    constexpr int W = Lanes<double>::W;
    const int64_t nq = ms.nq, d = md.d, kp = md.kp, nv = kp / W;
    if (!nq) return;
    int64_t* cnt = ms.qcnt;
    for (int64_t i = 0; i <= d; i++) cnt[i] = 0;
    for (int64_t e = 0; e < nq; e++) cnt[ms.qfeat[e] + 1]++;
    for (int64_t i = 0; i < d; i++) cnt[i + 1] += cnt[i];
    for (int64_t e = 0; e < nq; e++) ms.qord[cnt[ms.qfeat[e]]++] = e;  // then cnt[i]: where feature i's end
    static constexpr const CrossTile* by_j[CJ] = {cross_tiles<1>, cross_tiles<2>
#if DG_NREGS >= 32
                                                  , cross_tiles<3>, cross_tiles<4>
#endif
    };
    int64_t start = 0;
    for (int64_t i = 0; i < d; i++) {
        const int64_t ne = cnt[i] - start;
        double* cr = md.cross + i * d * kp;
        for (int64_t j0 = 0; ne && j0 < d; j0 += CJ)
            for (int64_t v0 = 0; v0 < nv; v0 += CV) {
                const int64_t jb = d - j0 < CJ ? d - j0 : CJ, vb = nv - v0 < CV ? nv - v0 : CV;
                by_j[jb - 1][vb - 1](ms, ms.qord + start, ne, cr, d, kp, j0, v0 * W);
            }
        start = cnt[i];
    }
    ms.nq = 0;
}

// Row t of the sub-block (w: its pattern and xc) into the queue, before its marginal_terms.
inline void cross_queue(MarginalSet& ms, MarginalModel& md, MarginalRow& w, int64_t t) {
    const int64_t d = md.d;
    if (ms.nq + w.nm > ms.qcap) cross_flush(ms, md);
    double* xc = ms.qxc + t * d;
    if (xc != w.xc) std::memcpy(xc, w.xc, sizeof(double) * (size_t)d);
    for (int64_t a = 0; a < w.nm; a++) {
        ms.qrow[ms.nq + a] = t;
        ms.qfeat[ms.nq + a] = w.miss[a];
    }
    w.qrx = ms.qrx + ms.nq * md.kp;
    ms.nq += w.nm;
}

#if DG_X86_TRANSPOSE
// A 4 x 4 block of doubles transposed: rows src, src + ls, ... (4 values each) to rows dst, dst + ld, ...
static inline void transpose4(const double* src, int64_t ls, double* dst, int64_t ld) {
    const __m256d r0 = _mm256_loadu_pd(src), r1 = _mm256_loadu_pd(src + ls);
    const __m256d r2 = _mm256_loadu_pd(src + 2 * ls), r3 = _mm256_loadu_pd(src + 3 * ls);
    const __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1);
    const __m256d t2 = _mm256_unpacklo_pd(r2, r3), t3 = _mm256_unpackhi_pd(r2, r3);
    _mm256_storeu_pd(dst, _mm256_permute2f128_pd(t0, t2, 0x20));
    _mm256_storeu_pd(dst + ld, _mm256_permute2f128_pd(t1, t3, 0x20));
    _mm256_storeu_pd(dst + 2 * ld, _mm256_permute2f128_pd(t0, t2, 0x31));
    _mm256_storeu_pd(dst + 3 * ld, _mm256_permute2f128_pd(t1, t3, 0x31));
}
#endif

// Components lo .. lo + kk of the logits buffer lb (rows of stride ld), columns 0 .. padded (a multiple
// of 4), into lt as rows (padded, kp), 0 past kk; and back (rows_to_logits, components < kk). Pure
// copies: the same bits either way, by 4 x 4 transposes where AVX2 is.
inline void logits_to_rows(const double* lb, int64_t ld, int64_t lo, int64_t kk, int64_t kp, int64_t padded, double* lt) {
    int64_t c0 = 0;
#if DG_X86_TRANSPOSE
    for (; c0 + 4 <= kk; c0 += 4)
        for (int64_t i = 0; i < padded; i += 4) transpose4(lb + (lo + c0) * ld + i, ld, lt + i * kp + c0, kp);
#endif
    for (; c0 < kp; c0++)
        for (int64_t i = 0; i < padded; i++) lt[i * kp + c0] = c0 < kk ? lb[(lo + c0) * ld + i] : 0.0;
}

inline void rows_to_logits(const double* lt, int64_t kk, int64_t kp, int64_t padded, double* lb, int64_t ld, int64_t lo) {
    int64_t c0 = 0;
#if DG_X86_TRANSPOSE
    for (; c0 + 4 <= kk; c0 += 4)
        for (int64_t i = 0; i < padded; i += 4) transpose4(lt + i * kp + c0, kp, lb + (lo + c0) * ld + i, ld);
#endif
    for (; c0 < kk; c0++)
        for (int64_t i = 0; i < padded; i++) lb[(lo + c0) * ld + i] = lt[i * kp + c0];
}

// Returns false when memory ran out.
bool marginal_setup(MarginalSet& ms, int64_t nm, const int64_t* bounds, const double* const* means,
                    const double* const* factor, const int* full, int64_t d, int64_t nf, int64_t sub, int level,
                    const int64_t* modes) {
    constexpr int W = Lanes<double>::W;
    auto round64 = [](size_t b) { return (b + 63) / 64 * 64; };
    size_t total = round64(sizeof(MarginalModel) * (size_t)nm);
    int64_t kmax = 0;
    for (int64_t m = 0; m < nm; m++) {
        if (!means[m]) continue;
        const int64_t kp = (bounds[m + 1] - bounds[m] + W - 1) / W * W;
        kmax = kp > kmax ? kp : kmax;
        // mu, prec (and var, logu, add, acc), St, at the full level cross, and full: pmu
        const int64_t pairs = full[m] && pair_table(d, kp) ? T2 * d * (d - 1) / 2 : 0;
        const int64_t per = d + (full[m] ? d * d + d + T1 * d + pairs : 5 * d) + nf + (level == 2 ? d * d : 0);
        total += round64(sizeof(double) * (size_t)(per * kp));
    }
    if (!kmax) return true;
    const size_t row_bytes = round64(sizeof(double) * (size_t)(kmax * (4 * d + 4 * d * d + 1)));
    // the cross queue: room for 4 missing values a row on average (a fuller queue is flushed early)
    const int64_t qcap = level == 2 ? 4 * sub + d : 0;
    const size_t queue_bytes = level == 2 ? round64(sizeof(double) * (size_t)(qcap * kmax)) +
                                                round64(sizeof(double) * (size_t)(sub * d)) +
                                                3 * round64(sizeof(int64_t) * (size_t)qcap) +
                                                round64(sizeof(int64_t) * (size_t)(d + 1))
                                          : 0;
    total += row_bytes + round64(sizeof(double) * (size_t)(sub * kmax)) + round64(sizeof(double) * (size_t)sub) +
             round64(sizeof(int64_t) * (size_t)sub) + round64(sizeof(double) * (size_t)d) +
             round64(sizeof(int64_t) * (size_t)d) + round64(sizeof(double) * (size_t)(sub * (d + LATER_SLOT * kmax))) +
             round64(sizeof(int64_t) * (size_t)(LATER_M * sub)) + round64((size_t)sub) + queue_bytes +
             round64(sizeof(double) * (size_t)(sub * kmax));
    char* p = (char*)std::aligned_alloc(64, total);
    if (!p) return false;
    std::memset(p, 0, total);
    ms.mem = p;
    ms.any = true;
    ms.models = (MarginalModel*)p;
    p += round64(sizeof(MarginalModel) * (size_t)nm);
    for (int64_t m = 0; m < nm; m++) {
        MarginalModel& md = ms.models[m];
        md.k = 0;
        if (!means[m]) continue;
        const int64_t k = bounds[m + 1] - bounds[m], kp = (k + W - 1) / W * W;
        md.k = k;
        md.kp = kp;
        md.d = d;
        md.full = full[m];
        // tied: the same factor for every component (compiled.marginal_form repeats a tied model's)
        md.tied = full[m];
        for (int64_t c = 1; md.tied && c < k; c++)
            md.tied = std::memcmp(factor[m] + c * d * d, factor[m], sizeof(double) * (size_t)(d * d)) == 0;
        md.rlogr = 0.0;
        double* q = (double*)p;
        md.mu = q;
        q += d * kp;
        md.prec = q;
        q += (full[m] ? d * d : d) * kp;
        md.var = full[m] ? nullptr : q;
        q += full[m] ? 0 : d * kp;
        md.logu = full[m] ? nullptr : q;
        q += full[m] ? 0 : d * kp;
        md.St = q;
        q += nf * kp;
        md.by_rows = !full[m] && level <= 1 && !(modes[m] & 1);
        md.add = full[m] ? nullptr : q;
        md.acc = full[m] ? nullptr : q + d * kp;
        q += full[m] ? 0 : 2 * d * kp;
        md.cross = level == 2 ? q : nullptr;
        q += level == 2 ? d * d * kp : 0;
        md.pmu = full[m] ? q : nullptr;
        q += full[m] ? d * kp : 0;
        md.t1 = full[m] ? q : nullptr;
        q += full[m] ? T1 * d * kp : 0;
        const int64_t pairs = full[m] && pair_table(d, kp) ? T2 * d * (d - 1) / 2 : 0;
        md.t2 = pairs ? q : nullptr;
        md.tabled = false;
        p += round64(sizeof(double) * (size_t)((d + (full[m] ? d * d + d + T1 * d + pairs : 5 * d) + nf +
                                                (level == 2 ? d * d : 0)) * kp));
        const double* mu = means[m];
        const double* u = factor[m];
        for (int64_t c = 0; c < kp; c++) {
            const bool real = c < k;
            for (int64_t j = 0; j < d; j++) md.mu[j * kp + c] = real ? mu[c * d + j] : 0.0;
            if (full[m]) {
                // P[i][l] = sum_j U[i][j] U[l][j], as numpy.einsum("kij,klj->kil")
                for (int64_t i = 0; i < d; i++)
                    for (int64_t l = 0; l < d; l++) {
                        double s = 0.0;
                        if (real) {
                            const double* ui = u + (c * d + i) * d;
                            const double* ul = u + (c * d + l) * d;
                            for (int64_t j = 0; j < d; j++) s += ui[j] * ul[j];
                        } else {
                            s = i == l ? 1.0 : 0.0;
                        }
                        md.prec[(i * d + l) * kp + c] = s;
                    }
                for (int64_t i = 0; i < d; i++) {  // P mu (the tied rows' b)
                    double s = 0.0;
                    for (int64_t l = 0; l < d; l++) s += md.prec[(i * d + l) * kp + c] * md.mu[l * kp + c];
                    md.pmu[i * kp + c] = s;
                }
            } else {
                for (int64_t j = 0; j < d; j++) {
                    const double uj = real ? u[c * d + j] : 1.0;
                    md.prec[j * kp + c] = uj * uj;
                    md.var[j * kp + c] = 1.0 / (uj * uj);
                    md.logu[j * kp + c] = __builtin_log(uj);
                    const double mu_j = md.mu[j * kp + c];
                    if (real) md.add[j * k + c] = -md.logu[j * kp + c] + 0.5 * 1.8378770664093453 +
                                                  0.5 * md.prec[j * kp + c] * (mu_j * mu_j);
                }
            }
        }
    }
    double* q = (double*)p;
    MarginalRow& w = ms.row;
    w.z = q;
    w.b = w.z + d * kmax;
    w.xm = w.b + d * kmax;
    w.L = w.xm + d * kmax;
    w.X = w.L + 2 * d * d * kmax;
    w.cc = w.X + d * d * kmax;
    w.lg = w.cc + d * d * kmax;
    p += row_bytes;
    ms.rb = (double*)p;
    p += round64(sizeof(double) * (size_t)(sub * kmax));
    ms.lp = (double*)p;
    p += round64(sizeof(double) * (size_t)sub);
    ms.nan_rows = (int64_t*)p;
    p += round64(sizeof(int64_t) * (size_t)sub);
    w.xc = (double*)p;
    p += round64(sizeof(double) * (size_t)d);
    w.miss = (int64_t*)p;
    p += round64(sizeof(int64_t) * (size_t)d);
    ms.keep = (double*)p;
    p += round64(sizeof(double) * (size_t)(sub * (d + LATER_SLOT * kmax)));
    ms.keep_miss = (int64_t*)p;
    p += round64(sizeof(int64_t) * (size_t)(LATER_M * sub));
    ms.later = (unsigned char*)p;
    p += round64((size_t)sub);
    ms.lt = (double*)p;
    p += round64(sizeof(double) * (size_t)(sub * kmax));
    if (qcap) {
        ms.qcap = qcap;
        ms.qrx = (double*)p;
        p += round64(sizeof(double) * (size_t)(qcap * kmax));
        ms.qxc = (double*)p;
        p += round64(sizeof(double) * (size_t)(sub * d));
        ms.qrow = (int64_t*)p;
        p += round64(sizeof(int64_t) * (size_t)qcap);
        ms.qfeat = (int64_t*)p;
        p += round64(sizeof(int64_t) * (size_t)qcap);
        ms.qord = (int64_t*)p;
        p += round64(sizeof(int64_t) * (size_t)qcap);
        ms.qcnt = (int64_t*)p;
    }
    return true;
}

// The lanes of a float64 vector that hold NaN, as bits (lane l at bit l).
static inline unsigned nan_bits(Lanes<double>::V v) {
#if DG_AVX2_INTRINSICS
    return (unsigned)_mm256_movemask_pd(_mm256_cmp_pd((__m256d)v, (__m256d)v, _CMP_UNORD_Q));
#elif DG_AVX512_INTRINSICS
    return (unsigned)_mm512_cmp_pd_mask((__m512d)v, (__m512d)v, _CMP_UNORD_Q);
#else
    const IVec<double>::V nan = (IVec<double>::V)(v != v);
    unsigned b = 0;
    for (int l = 0; l < Lanes<double>::W; l++) b |= (unsigned)(nan[l] != 0) << l;
    return b;
#endif
}

// The E-step of the sub-block's rows with NaN for model m (logits lo .. hi at x0 in k.lb): their
// responsibilities (times the weight) into ms.rb, log p(x_o) or the largest logit into ms.lp,
// and the statistics beyond r T(x0) (all of them for hard assignment) into the model's St.
// Row i of x for the marginal step: its missing features (miss, returns how many) and the values
// centred as fill_features centres them, 0 where missing (xc).
template <class T>
static inline int64_t marginal_row(const Rows<T>& x, int64_t i, int64_t d, const T* centre, int64_t* miss,
                                   double* xc) {
    int64_t nm = 0, j0 = 0;
    if constexpr (sizeof(T) == 8) {
        // float64 rows contiguous: by vectors, the missing features' list from the vector's NaN as
        // bits, without a branch (the same values as the loop below; a test per vector for any NaN,
        // taken at random at 20% missing, and the lanes read one by one, had cost more)
        if (x.by_rows()) {
            typedef Lanes<double>::V V;
            typedef IVec<double>::V I;
            constexpr int W = Lanes<double>::W;
            const double* row = (const double*)x.p + i * x.rs;
            const V zero = V{};
            for (; j0 + W <= d; j0 += W) {
                const V v = loadx<double>(row + j0);
                const I nan = (I)(v != v);
                store<double>(xc + j0, nan ? zero : v - load<double>((const double*)centre + j0));
                const unsigned bits = nan_bits(v);
                for (int l = 0; l < W; l++) {
                    miss[nm] = j0 + l;
                    nm += (bits >> l) & 1;
                }
            }
        }
    }
    for (int64_t j = j0; j < d; j++) {
        const T v = x.at(i, j);
        const bool nan = v != v;
        miss[nm] = j;
        nm += nan;
        const T cv = v - centre[j];
        xc[j] = nan ? 0.0 : (double)cv;
    }
    return nm;
}

template <class T>
void marginal_rows(const Work<T>& k, MarginalSet& ms, int64_t m, int64_t lo, const Rows<T>& x, const double* wts,
                   int64_t a0, bool hard, bool want_rlogr, int64_t padded) {
    typedef Lanes<double>::V V;
    constexpr int W = Lanes<double>::W;
    MarginalModel& md = ms.models[m];
    MarginalRow& w = ms.row;
    const int64_t d = k.d, kp = md.kp, kk = md.k, ld = k.ld;
    double* xc = (double*)w.xc;
    int64_t* miss = (int64_t*)w.miss;
    double* const xm0 = w.xm;
    double* const cc0 = w.cc;
    // rows missing up to LATER_M values through the tiles' softmax (float64 and soft only: the per-row
    // softmax below is float64 whatever the rows' type)
    const bool later = sizeof(T) == 8 && md.full && !hard;
    ms.n_later = 0;
    V pad = splat<double>(1.0);  // the last vector's real components
    for (int l = 0; l < W; l++)
        if (kp - W + l >= kk) pad[l] = 0.0;
    const V floor = splat<double>(Math<double>::FLOOR);
    marginal_tables(md);
    // float64: the logits as rows (MarginalSet::lt); each row's step works on its own run of them
    double* const lg0 = w.lg;
    // (with a third or more of the sub-block's rows incomplete: its transposes are over every row)
    ms.lt_rows = sizeof(T) == 8 && 3 * ms.n_nan >= padded ? padded : 0;
    if (ms.lt_rows) logits_to_rows((const double*)k.lb, ld, lo, kk, kp, padded, ms.lt);
    for (int64_t t = 0; t < ms.n_nan; t++) {
        const int64_t i = ms.nan_rows[t];
        ms.later[t] = 0;
        if (later) {
            double* slot = ms.keep + t * (d + LATER_SLOT * kp);
            w.xc = slot;
            w.nm = marginal_row<T>(x, a0 + i, d, k.centre, miss, slot);
            if (w.nm <= LATER_M) {
                w.xm = slot + d;
                w.cc = slot + d + LATER_M * kp;
                if (ms.lt_rows) {
                    w.lg = ms.lt + i * kp;  // back into the logits buffer after the loop
                } else {
                    for (int64_t c = 0; c < kp; c++) w.lg[c] = c < kk ? (double)k.lb[(lo + c) * ld + i] : 0.0;
                }
                over_groups<FullStep>(kp, md, w);
                if (!ms.lt_rows)
                    for (int64_t c = 0; c < kk; c++) k.lb[(lo + c) * ld + i] = (T)w.lg[c];
                for (int64_t a = 0; a < w.nm; a++) ms.keep_miss[LATER_M * t + a] = miss[a];
                ms.later[t] = (unsigned char)w.nm;
                ms.n_later++;
                w.xm = xm0;
                w.cc = cc0;
                continue;
            }
            k.wm[i] = 0;  // left out of the tiles' softmax: its responsibilities come from below
            if (k.um) k.um[i] = 0;
        } else {
            w.nm = marginal_row<T>(x, a0 + i, d, k.centre, miss, xc);
        }
        if (ms.lt_rows)
            w.lg = ms.lt + i * kp;
        else
            for (int64_t c = 0; c < kp; c++) w.lg[c] = c < kk ? (double)k.lb[(lo + c) * ld + i] : 0.0;
        if (md.full)
            over_groups<FullStep>(kp, md, w);
        else
            over_groups<DiagStep>(kp, md, w);
        const double* lg = w.lg;
        V vm = splat<double>(-1e308);
        for (int64_t v = 0; v < kp / W; v++) {
            V l = load<double>(lg + v * W);
            if ((v + 1) * W == kp) l = pad > 0.0 ? l : splat<double>(-1e308);  // the padding never wins
            vm = vmax(vm, l);
        }
        double top = vm[0];
        for (int l = 1; l < W; l++) top = vm[l] > top ? vm[l] : top;
        const double wt = wts ? wts[a0 + i] : 1.0;
        double* r = ms.rb + t * kp;
        if (hard) {
            // the first of the largest, as numpy.argmax; none equals a NaN top (NaN parameters), and an all -inf row's
            // top is the padding's: the first component then, as hard() gives, never a search past the components
            int64_t best = 0;
            while (best < kk && lg[best] != top) best++;
            if (best == kk) best = 0;
            ms.lp[t] = top;
            for (int64_t c = 0; c < kp; c++) r[c] = c == best ? wt : 0.0;
            if (k.cnt && wt > 0) k.cnt[lo + best] += 1.0;  // a row of weight 0 holds none
            // the row's own features: the tiles leave it out (weight 0)
            double* s = md.St + best;
            for (int64_t f = 0; f < k.nf; f++) s[f * kp] += wt * (double)k.tb[f * ld + i];
        } else {
            V s = V{}, zs = V{};
            for (int64_t v = 0; v < kp / W; v++) {
                const V zl = vmax(load<double>(lg + v * W) - top, floor);
                V e = Math<double>::exp(zl);
                if ((v + 1) * W == kp) e = e * pad;
                store<double>(r + v * W, e);
                s = s + e;
                zs = e * zl + zs;
            }
            double tot = 0.0, ztot = 0.0;
            for (int l = 0; l < W; l++) {
                tot += s[l];
                ztot += zs[l];
            }
            const double inv = 1.0 / tot;
            const double lt = __builtin_log(tot);  // tot >= 1: its largest term is exp(0)
            ms.lp[t] = top + lt;
            if (want_rlogr) md.rlogr += wt * (ztot * inv - lt);
            const V scale = splat<double>(inv);
            if (k.cnt && wt > 0)  // the row's responsibilities before its weight (the padding's are 0; weight 0: none)
                for (int64_t c = 0; c < kk; c++) k.cnt[lo + c] += r[c] * inv;
            for (int64_t v = 0; v < kp / W; v++) store<double>(r + v * W, (load<double>(r + v * W) * scale) * wt);
        }
        if (k.level == 2) cross_queue(ms, md, w, t);
        over_groups<TermStep>(kp, md, w, (const double*)r, (int)k.level);
    }
    w.xc = xc;
    w.lg = lg0;
    // the rows left for the tiles' softmax: their marginal logits back (every row: the others' are
    // the same bits, and the rows with NaN that did their own softmax have weight 0 in the tiles'
    // and get their responsibilities written over after it)
    if (ms.lt_rows && ms.n_later) rows_to_logits(ms.lt, kk, kp, padded, (double*)k.lb, ld, lo);
}

// After the tiles' softmax: the terms of the rows marginal_rows left for it (MarginalSet::later),
// from their responsibilities (times the weight) in the logits buffer.
template <class T> void marginal_terms_after(const Work<T>& k, MarginalSet& ms, int64_t m, int64_t lo) {
    MarginalModel& md = ms.models[m];
    MarginalRow& w = ms.row;
    const int64_t d = k.d, kp = md.kp, kk = md.k, ld = k.ld;
    const double* const xc0 = w.xc;
    double* const xm0 = w.xm;
    double* const cc0 = w.cc;
    const int64_t* const miss0 = w.miss;
    // float64: the responsibilities as rows, as marginal_rows took the logits
    if (ms.lt_rows) logits_to_rows((const double*)k.lb, ld, lo, kk, kp, ms.lt_rows, ms.lt);
    for (int64_t t = 0; t < ms.n_nan; t++) {
        if (!ms.later[t]) continue;
        const int64_t i = ms.nan_rows[t];
        double* slot = ms.keep + t * (d + LATER_SLOT * kp);
        w.xc = slot;
        w.xm = slot + d;
        w.cc = slot + d + LATER_M * kp;
        w.miss = ms.keep_miss + LATER_M * t;
        w.nm = ms.later[t];
        double* r = ms.lt_rows ? ms.lt + i * kp : ms.rb + t * kp;
        if (!ms.lt_rows)
            for (int64_t c = 0; c < kp; c++) r[c] = c < kk ? (double)k.lb[(lo + c) * ld + i] : 0.0;
        if (k.level == 2) cross_queue(ms, md, w, t);
        over_groups<TermStep>(kp, md, w, (const double*)r, (int)k.level);
    }
    w.xc = xc0;
    w.xm = xm0;
    w.cc = cc0;
    w.miss = miss0;
}

// The diagonal models' rows with NaN, by the tiles (MarginalModel::by_rows): their logits l0
// plus add[j] over their missing features j, before the softmax.
template <class T> void marginal_add(const Work<T>& k, const MarginalSet& ms, const MarginalModel& md, int64_t lo,
                                     const Rows<T>& x, int64_t a0) {
    const int64_t d = k.d, kk = md.k, ld = k.ld;
    for (int64_t t = 0; t < ms.n_nan; t++) {
        const int64_t i = ms.nan_rows[t];
        T* l = k.lb + lo * ld + i;
        for (int64_t j = 0; j < d; j++)
            if (x.at(a0 + i, j) != x.at(a0 + i, j)) {
                const double* add = md.add + j * kk;
                for (int64_t c = 0; c < kk; c++) l[c * ld] = (T)((double)l[c * ld] + add[c]);
            }
    }
}

// ... and after it, sum r over the rows missing each feature (md.acc).
template <class T> void marginal_acc(const Work<T>& k, const MarginalSet& ms, MarginalModel& md, int64_t lo,
                                     const Rows<T>& x, int64_t a0) {
    const int64_t d = k.d, kk = md.k, ld = k.ld;
    for (int64_t t = 0; t < ms.n_nan; t++) {
        const int64_t i = ms.nan_rows[t];
        const T* r = k.lb + lo * ld + i;
        for (int64_t j = 0; j < d; j++)
            if (x.at(a0 + i, j) != x.at(a0 + i, j)) {
                double* acc = md.acc + j * kk;
                for (int64_t c = 0; c < kk; c++) acc[c] += (double)r[c * ld];
            }
    }
}

// Dense forms of marginal_add and marginal_acc, over every row of the sub-block (the rows
// without NaN add 0): logits += add . M, acc += R M^T, M the missing-value indicators.
// Components c0 .. c0 + NC - 1 (a compile-time count: no test per component in the loops).
template <class T, int NC> void marginal_add_tile(const Work<T>& k, const MarginalModel& md, int64_t lo, int64_t padded,
                                                  int64_t c0) {
    typedef typename Lanes<T>::V V;
    constexpr int W = Lanes<T>::W;
    const int64_t d = k.d, kk = md.k, ld = k.ld;
    // NC components x 2 row vectors, the indicator vectors loaded once per feature
    for (int64_t i = 0; i < padded; i += 2 * W) {
        V s[NC][2];
        for (int c = 0; c < NC; c++)
            for (int h = 0; h < 2; h++) s[c][h] = load<T>(k.lb + (lo + c0 + c) * ld + i + h * W);
        for (int64_t j = 0; j < d; j++) {
            const V m0 = load<T>(k.mb + j * ld + i), m1 = load<T>(k.mb + j * ld + i + W);
            const double* add = md.add + j * kk + c0;
            for (int c = 0; c < NC; c++) {
                const V a = splat<T>((T)add[c]);
                s[c][0] = a * m0 + s[c][0];
                s[c][1] = a * m1 + s[c][1];
            }
        }
        for (int c = 0; c < NC; c++)
            for (int h = 0; h < 2; h++) store<T>(k.lb + (lo + c0 + c) * ld + i + h * W, s[c][h]);
    }
}

template <class T> void marginal_add_tiles(const Work<T>& k, const MarginalModel& md, int64_t lo, int64_t padded) {
    constexpr int CT = 4;
    for (int64_t c0 = 0; c0 < md.k; c0 += CT) {
        switch (md.k - c0 < CT ? md.k - c0 : CT) {
            case 1: marginal_add_tile<T, 1>(k, md, lo, padded, c0); break;
            case 2: marginal_add_tile<T, 2>(k, md, lo, padded, c0); break;
            case 3: marginal_add_tile<T, 3>(k, md, lo, padded, c0); break;
            default: marginal_add_tile<T, CT>(k, md, lo, padded, c0); break;
        }
    }
}

template <class T, int NC> void marginal_acc_tile(const Work<T>& k, MarginalModel& md, int64_t lo, int64_t padded,
                                                  int64_t c0) {
    typedef typename Lanes<T>::V V;
    constexpr int W = Lanes<T>::W;
    // NC components x JT indicator rows, summed over the rows per lane
    constexpr int JT = 2;
    const int64_t d = k.d, kk = md.k, ld = k.ld;
    for (int64_t j0 = 0; j0 < d; j0 += JT) {
        const int nj = d - j0 < JT ? (int)(d - j0) : JT;
        V s[NC][JT];
        for (int c = 0; c < NC; c++)
            for (int jj = 0; jj < JT; jj++) s[c][jj] = V{};
        const T* m1 = k.mb + (j0 + (nj > 1 ? 1 : 0)) * ld;  // an odd d's last row: its own twice, the
        for (int64_t i = 0; i < padded; i += W) {              // second sum left out below
            const V mv[JT] = {load<T>(k.mb + j0 * ld + i), load<T>(m1 + i)};
            for (int c = 0; c < NC; c++) {
                const V rv = load<T>(k.lb + (lo + c0 + c) * ld + i);
                for (int jj = 0; jj < JT; jj++) s[c][jj] = rv * mv[jj] + s[c][jj];
            }
        }
        for (int c = 0; c < NC; c++)
            for (int jj = 0; jj < nj; jj++) {
                double t = 0.0;
                for (int l = 0; l < W; l++) t += (double)s[c][jj][l];
                md.acc[(j0 + jj) * kk + c0 + c] += t;
            }
    }
}

template <class T> void marginal_acc_tiles(const Work<T>& k, MarginalModel& md, int64_t lo, int64_t padded) {
    constexpr int CT = 4;
    for (int64_t c0 = 0; c0 < md.k; c0 += CT) {
        switch (md.k - c0 < CT ? md.k - c0 : CT) {
            case 1: marginal_acc_tile<T, 1>(k, md, lo, padded, c0); break;
            case 2: marginal_acc_tile<T, 2>(k, md, lo, padded, c0); break;
            case 3: marginal_acc_tile<T, 3>(k, md, lo, padded, c0); break;
            default: marginal_acc_tile<T, CT>(k, md, lo, padded, c0); break;
        }
    }
}

// Returns the rows with NaN, or -1 when memory ran out. Model m marginalises missing values when
// mmeans[m] is not null (mfactor[m]: its precision factors, mfull[m]: their shape).
template <class T>
int64_t run_block(const Rows<T>& x, int64_t n, int64_t d, const double* centre64, const double* w, const T* theta, int level,
              const int64_t* bounds, const int64_t* modes, int64_t nm, double* S, double* per_row, double* rlogr,
              int64_t sub_rows, const double* const* mmeans, const double* const* mfactor, const int* mfull,
              KBounds* kb = nullptr, double* counts = nullptr) {
    if (level == 0 && !mmeans) {  // k-means and spherical classification EM: their own path
        bool all_hard = true;
        for (int64_t m = 0; m < nm; m++) all_hard &= (modes[m] & 1) != 0;
        if (all_hard) return run_hard<T>(x, n, d, centre64, w, theta, bounds, nm, S, per_row, kb, counts);
    }
    constexpr int W = Lanes<T>::W;
    // float32 lanes are added into float64 every this many rows: sums of at most 2048 / W terms
    constexpr int64_t FLUSH_ROWS = 2048;
    const bool narrow = sizeof(T) < sizeof(double);
    Work<T> k;
    const int64_t sub = work_setup<T>(k, d, level, nm, bounds, theta, modes, S, sub_rows);
    const int64_t tile = RV * W;
    const size_t bytes_t = sizeof(T) * (size_t)(k.nf * k.ld);
    const size_t bytes_l = sizeof(T) * (size_t)((k.nw > 0 ? k.nw : 1) * k.ld);
    const size_t bytes_w = sizeof(T) * (size_t)k.ld;
    const size_t bytes_lanes = sizeof(T) * (size_t)(k.nw * k.nf * W + W);
    const size_t bytes_lanes64 = narrow ? sizeof(double) * (size_t)(k.nw * k.nf * W + W) : 0;
    const size_t bytes_c = sizeof(T) * (size_t)(d + 1);
    const size_t bytes_s = (size_t)k.ld;
    // counts: the rows' masks ub and um, and the soft counts' lanes (float32: and their float64 ones)
    const size_t bytes_u = counts ? sizeof(T) * (size_t)k.ld : 0;
    const size_t bytes_cl = counts ? sizeof(T) * (size_t)(k.nw * W) : 0;
    const size_t bytes_cl64 = counts && narrow ? sizeof(double) * (size_t)(k.nw * W) : 0;
    auto round64 = [](size_t b) { return (b + 63) / 64 * 64; };
    size_t total = round64(bytes_t) + round64(bytes_l) + round64(bytes_w) + round64(bytes_lanes) + round64(bytes_lanes64) + round64(bytes_c) +
                   round64(bytes_s) + 2 * round64(bytes_u) + round64(bytes_cl) + round64(bytes_cl64);
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
    p += round64(bytes_s);
    if (counts) {
        k.cnt = counts;
        k.ub = (T*)p;
        p += round64(bytes_u);
        k.um = (T*)p;
        p += round64(bytes_u);
        k.cl = (T*)p;
        p += round64(bytes_cl);
        k.cl64 = narrow ? (double*)p : (double*)k.cl;
        std::memset(k.cl, 0, bytes_cl);
        if (narrow) std::memset(k.cl64, 0, bytes_cl64);
    }
    k.incomplete = 0;
    MarginalSet ms;
    if (mmeans && !marginal_setup(ms, nm, bounds, mmeans, mfactor, mfull, d, k.nf, sub, level, modes)) {
        std::free(mem);
        return -1;
    }
    k.nan_rows = ms.any ? ms.nan_rows : nullptr;
    k.wm = nullptr;
    k.mb = nullptr;
    T* mb = nullptr;  // the missing-value indicators, built for the sub-blocks that use them
    bool any_by_rows = false;
    for (int64_t m = 0; ms.any && m < nm; m++) any_by_rows |= ms.models[m].k && ms.models[m].by_rows;
    if (ms.any && !(k.wm = (T*)std::aligned_alloc(64, round64(bytes_w)))) {
        std::free(mem);
        return -1;
    }
    if (any_by_rows && !(mb = (T*)std::aligned_alloc(64, round64(sizeof(T) * (size_t)(d * k.ld))))) {
        std::free(k.wm);
        std::free(mem);
        return -1;
    }
    k.mb_buf = mb;
    std::memset(k.lanes, 0, bytes_lanes);
    if (narrow) std::memset(k.lanes64, 0, bytes_lanes64);
    const int64_t nlanes = k.nw * k.nf * W;
    auto flush = [&]() {
        for (int64_t i = 0; i < nlanes; i++) {
            k.lanes64[i] += (double)k.lanes[i];
            k.lanes[i] = 0;
        }
        for (int64_t i = 0; k.cl && i < k.nw * W; i++) {
            k.cl64[i] += (double)k.cl[i];
            k.cl[i] = 0;
        }
    };
    int64_t unflushed = 0;
    for (int64_t j = 0; j < d; j++) centre[j] = (T)centre64[j];
    k.centre = centre;
    bool any_soft = false;
    for (int64_t m = 0; m < nm; m++) any_soft |= !(modes[m] & 1);
    for (int64_t a = 0; a < n; a += sub) {
        const int64_t rows = n - a < sub ? n - a : sub;
        const int64_t padded = (rows + tile - 1) / tile * tile;
        fill_features<T>(k, x, centre, w, a, rows, padded);
        const bool tiles = k.mb != nullptr;
        fetch_next<T>(k, x, a, rows, n, sub, padded);
        logits<T>(k, padded);
        for (int64_t m = 0; m < nm; m++) {
            const int64_t lo = bounds[m], hi = bounds[m + 1];
            if (hi == lo) continue;
            const bool mine = ms.any && ms.models[m].k && k.n_nan;
            const bool by_rows = mine && ms.models[m].by_rows, marg = mine && !by_rows;
            ms.n_nan = k.n_nan;
            if (by_rows && tiles) marginal_add_tiles<T>(k, ms.models[m], lo, padded);
            else if (by_rows) marginal_add<T>(k, ms, ms.models[m], lo, x, a);
            ms.n_later = 0;
            if (marg) marginal_rows<T>(k, ms, m, lo, x, w, a, modes[m] & 1, modes[m] & 2, padded);
            const bool later = marg && ms.n_later;
            if (modes[m] & 1) {
                hard<T>(k, lo, hi, rows, per_row + m * n + a);
            } else {
                softmax<T>(k, lo, hi, rows, padded, per_row + m * n + a, (modes[m] & 2) ? rlogr + m : nullptr,
                           by_rows || later);
            }
            if (later) marginal_terms_after<T>(k, ms, m, lo);
            if (marg) cross_flush(ms, ms.models[m]);
            if (by_rows && tiles) marginal_acc_tiles<T>(k, ms.models[m], lo, padded);
            else if (by_rows) marginal_acc<T>(k, ms, ms.models[m], lo, x, a);
            if (marg) {  // the rows with NaN: their log-likelihoods, and (soft) responsibilities for the tiles
                const int64_t kp = ms.models[m].kp;
                for (int64_t t = 0; t < ms.n_nan; t++) {
                    const int64_t i = ms.nan_rows[t];
                    if (ms.later[t]) continue;  // the tiles' softmax's
                    per_row[m * n + a + i] = ms.lp[t];
                    if (!(modes[m] & 1))
                        for (int64_t c = lo; c < hi; c++) k.lb[c * k.ld + i] = (T)ms.rb[t * kp + c - lo];
                }
            }
            if (!(modes[m] & 1)) moments<T>(k, lo, hi, padded);
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
            for (int64_t c = bounds[m]; k.cl && c < bounds[m + 1]; c++) {
                double s = 0;
                for (int j = 0; j < W; j++) s += k.cl64[c * W + j];
                counts[c] += s;
            }
        }
    }
    for (int64_t m = 0; ms.any && m < nm; m++) {
        const MarginalModel& md = ms.models[m];
        if (!md.k) continue;
        for (int64_t c = 0; c < md.k; c++)
            for (int64_t f = 0; f < k.nf; f++) S[(bounds[m] + c) * k.nf + f] += md.St[f * md.kp + c];
        if (md.cross)  // x_hat_i x_j with i missing, j observed: feature (min, max); (i, i) holds 0
            for (int64_t c = 0; c < md.k; c++)
                for (int64_t i = 0; i < d; i++)
                    for (int64_t j = 0; j < d; j++) {
                        const int64_t lo = j < i ? j : i, hi = j < i ? i : j;
                        S[(bounds[m] + c) * k.nf + lo * d - lo * (lo - 1) / 2 + (hi - lo)] += md.cross[(i * d + j) * md.kp + c];
                    }
        rlogr[m] += md.rlogr;
        if (!md.by_rows) continue;
        // T(x_hat) - T(x0) + the conditional variance, of the rows missing feature j: mu^2 + var, mu
        for (int64_t c = 0; c < md.k; c++) {
            double* s = S + (bounds[m] + c) * k.nf;
            for (int64_t j = 0; j < d; j++) {
                const double r = md.acc[j * md.k + c], mu = md.mu[j * md.kp + c];
                s[level == 1 ? j : 0] += r * (mu * mu + md.var[j * md.kp + c]);
                s[k.q + j] += r * mu;
            }
        }
    }
    std::free(mb);
    std::free(k.wm);
    std::free(mem);
    return k.incomplete;
}

// Logits of every row (rows with NaN get NaN), row-major into out (n, nw): predictions and scores.
template <class T>
int64_t run_logits(const Rows<T>& x, int64_t n, int64_t d, const double* centre64, const T* theta, int level, int64_t nw,
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
    k.nan_rows = nullptr;
    k.mb = k.mb_buf = nullptr;
    k.wm = nullptr;
    for (int64_t j = 0; j < d; j++) centre[j] = (T)centre64[j];
    k.centre = centre;
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

// ---------------------------------------------------------------- Student-t mixtures
//
// A t mixture's pass (daskgmm.kernels.studentt is the NumPy reference and its docstring the algebra)
// is the Gaussian's with one step between the logits and the responsibilities: its theta holds the
// squared Mahalanobis distances d2 as linear forms of the features, so the logits tile gives d2, and
// per row and component (in float64 lanes, whatever the data's type)
//
//     logit = c - (nu + D)/2 log1p(d2/nu),   u = (nu + D)/(nu + d2),
//     h = log u - u + 1 = log1p(D/nu) - log1p(d2/nu) + (d2 - D)/(nu + d2)
//
// (h formed term by term: exact as u nears 1 and 0). The softmax turns the logits into r (times the
// weight); the pass adds sum r and sum r h per component, and the moments tiles take r u. A model that
// marginalises missing values scores a row with NaN by the t marginal of its observed features: the
// Gaussian's marginal step (marginal_full / marginal_diag) is run on -d2(x0)/2, which gives
// -q/2 - log det P_mm / 2 + m log(2 pi)/2 with q the observed part's distance; the full step hands
// out its log det P_mm / 2 (MarginalRow::hl; diagonal: the sum of log u), so q comes out, and the row's
// logit, u and h follow with d_o = D - m observed features in place of D (tables by d_o, from the
// caller: the constants and log1p(d_o/nu) + the digamma terms). Its completions enter with weight r u
// (E[u x] = E[u] x_hat), the conditional covariance with weight r (E[u x x^T] = E[u] x_hat x_hat^T +
// P_mm^-1): marginal_terms with r u and the covariance divided by u.

// W_double elements of a T buffer as doubles, and back (float32 rows: the t step is float64).
template <class T> static inline Lanes<double>::V load_f64(const T* p) {
    if constexpr (sizeof(T) == 8) {
        return load<double>((const double*)p);
    } else {
        typedef float F __attribute__((vector_size(Lanes<double>::W * sizeof(float)), aligned(sizeof(float)), may_alias));
        return __builtin_convertvector(*(const F*)p, Lanes<double>::V);
    }
}
template <class T> static inline void store_f64(T* p, Lanes<double>::V v) {
    if constexpr (sizeof(T) == 8) {
        store<double>((double*)p, v);
    } else {
        typedef float F __attribute__((vector_size(Lanes<double>::W * sizeof(float)), aligned(sizeof(float)), may_alias));
        *(F*)p = __builtin_convertvector(v, F);
    }
}

// log1p(y), y >= 0: log(s) of s = 1 + y (Math::log needs s >= 1), corrected by (y - (s - 1)) / s, the
// first-order term of what the rounding of 1 + y lost (a few ulp, as numpy.log1p, also for tiny y).
// inv_s: 1 / (1 + y) to a few ulp (the caller's nu / (nu + d2): no division here).
static inline Lanes<double>::V log1p_pos(Lanes<double>::V y, Lanes<double>::V inv_s) {
    const Lanes<double>::V s = y + 1.0;
    return Math<double>::log(s) + (y - (s - 1.0)) * inv_s;
}

// One t model's tables, transposed so that components are in the lanes: (d + 1, kp) by observed count.
struct TTables {
    int64_t kp;
    double* nu;    // (kp)
    double* cobs;  // (d + 1, kp) the constants by observed count (column d: complete rows)
    double* hobs;  // (d + 1, kp) log1p(d_o/nu) + the digamma terms
    double* resp;  // (kp) this call's sum r of its rows with NaN
    double* logu;  // (kp) ... sum r h
    // diagonal models, rows with NaN by the missing-value indicators (t_step_dense)
    double* pmu2;  // (d, kp) p mu^2 of each feature: what x0 (0 where missing) adds to d2 beyond q
    double* accr;  // (d, k) sum r over the rows missing each feature (the MarginalModel's acc: sum r u)
};

// The t step of components lo .. hi - 1 over the sub-block: d2 in k.lb becomes the logit, u goes to
// ub and h to hb (float64).
template <class T> void t_step(const Work<T>& k, int64_t lo, int64_t hi, int64_t padded, const double* df,
                               const double* cobs, const double* hobs, T* ub, double* hb) {
    typedef Lanes<double>::V V;
    constexpr int WD = Lanes<double>::W;
    const int64_t d = k.d, ld = k.ld;
    const double dd = (double)d;
    for (int64_t c = lo; c < hi; c++) {
        const double nu = df[c];
        const V vnu = splat<double>(nu), nud = splat<double>(nu + dd), a = splat<double>(-0.5 * (nu + dd));
        const V inu = splat<double>(1.0 / nu);
        const V cc = splat<double>(cobs[c * (d + 1) + d]), hh = splat<double>(hobs[c * (d + 1) + d]);
        T* l = k.lb + c * ld;
        T* u = ub + c * ld;
        double* h = hb + c * ld;
        for (int64_t i = 0; i < padded; i += WD) {
            const V d2 = vmax(load_f64<T>(l + i), V{});  // the expanded square may round below 0 at the location
            const V inv = 1.0 / (d2 + vnu);
            const V lg = log1p_pos(d2 * inu, vnu * inv);
            store_f64<T>(u + i, inv * nud);
            store<double>(h + i, ((d2 - dd) * inv - lg) + hh);
            store_f64<T>(l + i, lg * a + cc);
        }
    }
}

// The t step of a diagonal model that marginalises, over every row of the sub-block by its missing-value
// indicators k.mb (a third or more of the rows have NaN; as the Gaussian's marginal_add_tiles): per row
// and component, q = d2(x0) - sum_missing p mu^2, log det P_mm / 2 = sum_missing log u, and the t step
// with the row's d_o observed features (nobs; D for a complete row, for which this is t_step's).
template <class T> void t_step_dense(const Work<T>& k, int64_t lo, const TTables& tt, const MarginalModel& md,
                                     int64_t padded, const double* nobs, T* ub, double* hb) {
    typedef Lanes<double>::V V;
    constexpr int WD = Lanes<double>::W;
    const int64_t d = k.d, ld = k.ld, kp = tt.kp;
    for (int64_t c = 0; c < md.k; c++) {
        const V vnu = splat<double>(tt.nu[c]), inu = splat<double>(1.0 / tt.nu[c]);
        T* l = k.lb + (lo + c) * ld;
        T* u = ub + (lo + c) * ld;
        double* h = hb + (lo + c) * ld;
        for (int64_t i = 0; i < padded; i += WD) {
            V half = V{}, corr = V{};
            for (int64_t j = 0; j < d; j++) {
                const V mj = load_f64<T>(k.mb + j * ld + i);
                half = mj * md.logu[j * kp + c] + half;
                corr = mj * tt.pmu2[j * kp + c] + corr;
            }
            const V dov = load<double>(nobs + i);
            V cv, hv;
            for (int l0 = 0; l0 < WD; l0++) {
                const int64_t o = (int64_t)dov[l0];
                cv[l0] = tt.cobs[o * kp + c];
                hv[l0] = tt.hobs[o * kp + c];
            }
            const V q = vmax(load_f64<T>(l + i) - corr, V{});
            const V inq = 1.0 / (vnu + q);
            const V lg = log1p_pos(q * inu, vnu * inq);
            store_f64<T>(u + i, (vnu + dov) * inq);
            store<double>(h + i, (hv - lg) - (dov - q) * inq);
            store_f64<T>(l + i, (cv - half) - 0.5 * (vnu + dov) * lg);
        }
    }
}

// sum r and sum r h of components lo .. hi - 1 into resp and logu (float64), and r u into k.lb.
template <class T> void t_sums(const Work<T>& k, int64_t lo, int64_t hi, int64_t padded, const T* ub, const double* hb,
                               double* resp, double* logu) {
    typedef Lanes<double>::V V;
    constexpr int WD = Lanes<double>::W;
    const int64_t ld = k.ld;
    for (int64_t c = lo; c < hi; c++) {
        T* l = k.lb + c * ld;
        const T* u = ub + c * ld;
        const double* h = hb + c * ld;
        V sr = V{}, sh = V{};
        for (int64_t i = 0; i < padded; i += WD) {
            const V r = load_f64<T>(l + i);
            sr = sr + r;
            sh = r * load<double>(h + i) + sh;
        }
        double tr = 0.0, th = 0.0;
        for (int j = 0; j < WD; j++) {
            tr += sr[j];
            th += sh[j];
        }
        resp[c] += tr;
        logu[c] += th;
        // r u in the data's type, as the NumPy path's moments weights
        if constexpr (sizeof(T) == 8) {
            for (int64_t i = 0; i < padded; i += WD) store<double>((double*)l + i, load<double>((double*)l + i) * load<double>((const double*)u + i));
        } else {
            constexpr int W = Lanes<T>::W;
            for (int64_t i = 0; i < padded; i += W) store<T>(l + i, load<T>(l + i) * load<T>(u + i));
        }
    }
}

// The E-step of the sub-block's rows with NaN for t model m (d2(x0) in k.lb rows lo ..): per row, the
// marginal step, its logits, u and h, responsibilities (times the weight), sum r and sum r h into tt,
// r u into ms.rb, log p(x_o) into ms.lp, and the statistics beyond r u T(x0) into the model's St.
template <class T>
void t_marginal_rows(const Work<T>& k, MarginalSet& ms, int64_t m, int64_t lo, const Rows<T>& x, const double* wts,
                     int64_t a0, TTables& tt, double* hl, double* scratch) {
    typedef Lanes<double>::V V;
    constexpr int W = Lanes<double>::W;
    MarginalModel& md = ms.models[m];
    MarginalRow& w = ms.row;
    const int64_t d = k.d, kp = md.kp, kk = md.k, ld = k.ld;
    double* xc = (double*)w.xc;
    int64_t* miss = (int64_t*)w.miss;
    V pad = splat<double>(1.0);  // the last vector's real components
    for (int l = 0; l < W; l++)
        if (kp - W + l >= kk) pad[l] = 0.0;
    const V floor = splat<double>(Math<double>::FLOOR);
    double* u = scratch;           // (kp)
    double* lgt = scratch + kp;    // (kp)
    double* hv = scratch + 2 * kp;  // (kp)
    marginal_tables(md);
    for (int64_t t = 0; t < ms.n_nan; t++) {
        const int64_t i = ms.nan_rows[t];
        const int64_t nm = w.nm = marginal_row<T>(x, a0 + i, d, k.centre, miss, xc);
        // the Gaussian step's logit at 0 constant: -d2(x0)/2, then -q/2 - log det P_mm / 2 + nm log(2 pi)/2
        for (int64_t c = 0; c < kp; c++) w.lg[c] = c < kk ? -0.5 * (double)k.lb[(lo + c) * ld + i] : 0.0;
        if (md.full) {
            w.hl = hl;  // the step's own log det P_mm / 2 (tied: lane 0's in every lane)
            over_groups<FullStep>(kp, md, w);
            w.hl = nullptr;
        } else {
            over_groups<DiagStep>(kp, md, w);
            for (int64_t c = 0; c < kp; c++) {
                double s = 0.0;
                for (int64_t a = 0; a < nm; a++) s += md.logu[miss[a] * kp + c];
                hl[c] = s;
            }
        }
        const int64_t dob = d - nm;
        const double m_log2pi = 1.8378770664093453 * (double)nm;
        const double* cobs = tt.cobs + dob * kp;
        const double* hobs = tt.hobs + dob * kp;
        const V vdo = splat<double>((double)dob);
        V vm = splat<double>(-1e308);
        for (int64_t v = 0; v < kp / W; v++) {
            const V half = load<double>(hl + v * W);
            const V q = vmax(m_log2pi - 2.0 * (load<double>(w.lg + v * W) + half), V{});
            const V nu = load<double>(tt.nu + v * W);
            const V inq = 1.0 / (nu + q);
            const V lg = log1p_pos(q / nu, nu * inq);
            const V lt = (load<double>(cobs + v * W) - half) - 0.5 * (nu + vdo) * lg;
            store<double>(u + v * W, (nu + vdo) * inq);
            store<double>(hv + v * W, (load<double>(hobs + v * W) - lg) - (vdo - q) * inq);
            store<double>(lgt + v * W, lt);
            const V lm = (v + 1) * W == kp ? (pad > 0.0 ? lt : splat<double>(-1e308)) : lt;  // the padding never wins
            vm = vmax(vm, lm);
        }
        double top = vm[0];
        for (int l = 1; l < W; l++) top = vm[l] > top ? vm[l] : top;
        const double wt = wts ? wts[a0 + i] : 1.0;
        double* r = ms.rb + t * kp;
        V s = V{};
        for (int64_t v = 0; v < kp / W; v++) {
            V e = Math<double>::exp(vmax(load<double>(lgt + v * W) - top, floor));
            if ((v + 1) * W == kp) e = e * pad;
            store<double>(r + v * W, e);
            s = s + e;
        }
        double tot = 0.0;
        for (int l = 0; l < W; l++) tot += s[l];
        ms.lp[t] = top + __builtin_log(tot);  // tot >= 1: its largest term is exp(0)
        const V scale = splat<double>(wt / tot);
        for (int64_t v = 0; v < kp / W; v++) {
            const V rv = load<double>(r + v * W) * scale, uv = load<double>(u + v * W);
            store<double>(tt.resp + v * W, load<double>(tt.resp + v * W) + rv);
            store<double>(tt.logu + v * W, rv * load<double>(hv + v * W) + load<double>(tt.logu + v * W));
            store<double>(r + v * W, rv * uv);
            // the conditional covariance enters with weight r: over u here, times r u in marginal_terms
            const V iu = 1.0 / uv;
            const int64_t ncc = md.full ? nm * nm : nm;
            for (int64_t p = 0; p < ncc; p++) store<double>(w.cc + p * kp + v * W, load<double>(w.cc + p * kp + v * W) * iu);
        }
        if (k.level == 2) cross_queue(ms, md, w, t);
        over_groups<TermStep>(kp, md, w, (const double*)r, (int)k.level);
    }
}

// Returns the rows with NaN, or -1 when memory ran out. As run_block for soft t models: df (nw) degrees
// of freedom, cobs and hobs (nw, d + 1) the tables by observed count; resp, logu (nw) += sum r, sum r h.
template <class T>
int64_t run_tblock(const Rows<T>& x, int64_t n, int64_t d, const double* centre64, const double* w, const T* theta, int level,
                   const int64_t* bounds, int64_t nm, const double* df, const double* cobs, const double* hobs,
                   double* S, double* resp, double* logu, double* per_row, int64_t sub_rows,
                   const double* const* mmeans, const double* const* mfactor, const int* mfull) {
    constexpr int W = Lanes<T>::W;
    constexpr int WD = Lanes<double>::W;
    constexpr int64_t FLUSH_ROWS = 2048;  // as run_block's
    const bool narrow = sizeof(T) < sizeof(double);
    Work<T> k;
    const int64_t sub = work_setup<T>(k, d, level, nm, bounds, theta, nullptr, S, sub_rows);
    const int64_t tile = RV * W;
    auto round64 = [](size_t b) { return (b + 63) / 64 * 64; };
    const int64_t nw1 = k.nw > 0 ? k.nw : 1;
    const size_t bytes_t = round64(sizeof(T) * (size_t)(k.nf * k.ld));
    const size_t bytes_l = round64(sizeof(T) * (size_t)(nw1 * k.ld));
    const size_t bytes_w = round64(sizeof(T) * (size_t)k.ld);
    const size_t bytes_lanes = round64(sizeof(T) * (size_t)(k.nw * k.nf * W + W));
    const size_t bytes_lanes64 = narrow ? round64(sizeof(double) * (size_t)(k.nw * k.nf * W + W)) : 0;
    const size_t bytes_c = round64(sizeof(T) * (size_t)(d + 1));
    const size_t bytes_s = round64((size_t)k.ld);
    const size_t bytes_h = round64(sizeof(double) * (size_t)(nw1 * k.ld));  // h
    // per model: nu, resp, logu (kp) and the tables (d + 1, kp) twice; a row's scratch
    int64_t kmax = 0, per_models = 0;
    for (int64_t m = 0; m < nm; m++) {
        const int64_t kp = (bounds[m + 1] - bounds[m] + WD - 1) / WD * WD;
        kmax = kp > kmax ? kp : kmax;
        per_models += kp * (3 + 2 * (d + 1) + 2 * d);
    }
    const size_t bytes_tt = round64(sizeof(double) * (size_t)per_models) + round64(sizeof(TTables) * (size_t)nm);
    const size_t bytes_row = round64(sizeof(double) * (size_t)(4 * kmax + WD));
    const size_t total = bytes_t + 2 * bytes_l + 2 * bytes_w + bytes_lanes + bytes_lanes64 + bytes_c + bytes_s +
                         bytes_h + bytes_tt + bytes_row;
    char* mem = (char*)std::aligned_alloc(64, total);
    if (!mem) return -1;
    std::memset(mem, 0, total);
    char* p = mem;
    k.tb = (T*)p;
    p += bytes_t;
    k.lb = (T*)p;
    p += bytes_l;
    T* ub = (T*)p;
    p += bytes_l;
    k.wb = (T*)p;
    p += bytes_w;
    k.wm = (T*)p;  // unused by t_step (rows with NaN: their own path), but kept by fill_features
    p += bytes_w;
    k.lanes = (T*)p;
    p += bytes_lanes;
    k.lanes64 = narrow ? (double*)p : (double*)k.lanes;
    p += bytes_lanes64;
    T* centre = (T*)p;
    p += bytes_c;
    k.skip = (unsigned char*)p;
    p += bytes_s;
    double* hb = (double*)p;
    p += bytes_h;
    TTables* tts = (TTables*)p;
    double* tq = (double*)(p + round64(sizeof(TTables) * (size_t)nm));
    p += bytes_tt;
    double* row_scratch = (double*)p;
    double* hl = row_scratch + 3 * kmax;  // (kmax) a row's log det P_mm / 2
    for (int64_t m = 0; m < nm; m++) {
        const int64_t lo = bounds[m], kk = bounds[m + 1] - lo, kp = (kk + WD - 1) / WD * WD;
        TTables& tt = tts[m];
        tt.kp = kp;
        tt.nu = tq;
        tt.resp = tq + kp;
        tt.logu = tq + 2 * kp;
        tt.cobs = tq + 3 * kp;
        tt.hobs = tt.cobs + (d + 1) * kp;
        tt.pmu2 = tt.hobs + (d + 1) * kp;
        tt.accr = tt.pmu2 + d * kp;
        tq = tt.accr + d * kp;
        for (int64_t c = 0; c < kp; c++) {
            const bool real = c < kk;
            tt.nu[c] = real ? df[lo + c] : 1.0;  // the padding: finite, and left out of every sum
            for (int64_t j = 0; j <= d; j++) {
                tt.cobs[j * kp + c] = real ? cobs[(lo + c) * (d + 1) + j] : 0.0;
                tt.hobs[j * kp + c] = real ? hobs[(lo + c) * (d + 1) + j] : 0.0;
            }
        }
    }
    k.incomplete = 0;
    k.mb = k.mb_buf = nullptr;
    k.pf = nullptr;
    MarginalSet ms;
    if (mmeans) {
        // modes only choose the Gaussian diagonal models' by_rows path, which a t model never takes
        std::unique_ptr<int64_t[]> soft(new int64_t[nm]());
        if (!marginal_setup(ms, nm, bounds, mmeans, mfactor, mfull, d, k.nf, sub, level, soft.get())) {
            std::free(mem);
            return -1;
        }
        for (int64_t m = 0; ms.any && m < nm; m++) {
            MarginalModel& md = ms.models[m];
            md.by_rows = false;
            if (!md.k || md.full) continue;
            for (int64_t j = 0; j < d; j++)
                for (int64_t c = 0; c < md.kp; c++) {
                    const double mu = md.mu[j * md.kp + c];
                    tts[m].pmu2[j * md.kp + c] = md.prec[j * md.kp + c] * (mu * mu);
                }
        }
    }
    // the missing-value indicators, for the diagonal models' dense step (at level 2 every model is full)
    T* mb = nullptr;
    double* nobs = nullptr;
    if (ms.any && level <= 1) {
        mb = (T*)std::aligned_alloc(64, round64(sizeof(T) * (size_t)(d * k.ld)));
        nobs = (double*)std::aligned_alloc(64, round64(sizeof(double) * (size_t)k.ld));
        if (!mb || !nobs) {
            std::free(mb);
            std::free(nobs);
            std::free(mem);
            return -1;
        }
    }
    k.mb_buf = mb;
    k.nan_rows = ms.any ? ms.nan_rows : nullptr;
    const int64_t nlanes = k.nw * k.nf * W;
    auto flush = [&]() {
        for (int64_t i = 0; i < nlanes; i++) {
            k.lanes64[i] += (double)k.lanes[i];
            k.lanes[i] = 0;
        }
    };
    int64_t unflushed = 0;
    for (int64_t j = 0; j < d; j++) centre[j] = (T)centre64[j];
    k.centre = centre;
    for (int64_t a = 0; a < n; a += sub) {
        const int64_t rows = n - a < sub ? n - a : sub;
        const int64_t padded = (rows + tile - 1) / tile * tile;
        fill_features<T>(k, x, centre, w, a, rows, padded);
        fetch_next<T>(k, x, a, rows, n, sub, padded);
        logits<T>(k, padded);  // d2 of every component
        if (k.mb)  // observed features per row
            for (int64_t i = 0; i < padded; i += WD) {
                Lanes<double>::V s = splat<double>((double)d);
                for (int64_t j = 0; j < d; j++) s = s - load_f64<T>(k.mb + j * k.ld + i);
                store<double>(nobs + i, s);
            }
        for (int64_t m = 0; m < nm; m++) {
            const int64_t lo = bounds[m], hi = bounds[m + 1];
            if (hi == lo) continue;
            const bool mine = ms.any && ms.models[m].k && k.n_nan;
            const bool dense = mine && k.mb && !ms.models[m].full, marg = mine && !dense;
            ms.n_nan = k.n_nan;
            if (marg) {
                t_marginal_rows<T>(k, ms, m, lo, x, w, a, tts[m], hl, row_scratch);
                cross_flush(ms, ms.models[m]);
            }
            if (dense)
                t_step_dense<T>(k, lo, tts[m], ms.models[m], padded, nobs, ub, hb);
            else
                t_step<T>(k, lo, hi, padded, df, cobs, hobs, ub, hb);
            // rows with NaN: r = 0, but with the dense step their weight (k.wm) and marginal logits
            softmax<T>(k, lo, hi, rows, padded, per_row + m * n + a, nullptr, dense);
            if (dense) {  // sum r over the rows missing each feature, before r becomes r u
                MarginalModel& md = ms.models[m];
                double* ru = md.acc;
                md.acc = tts[m].accr;
                marginal_acc_tiles<T>(k, md, lo, padded);
                md.acc = ru;
            }
            t_sums<T>(k, lo, hi, padded, ub, hb, resp, logu);
            if (dense) marginal_acc_tiles<T>(k, ms.models[m], lo, padded);  // ... and sum r u
            if (marg) {  // the rows with NaN: their log-likelihoods, and r u for the tiles
                const int64_t kp = ms.models[m].kp;
                for (int64_t t = 0; t < ms.n_nan; t++) {
                    const int64_t i = ms.nan_rows[t];
                    per_row[m * n + a + i] = ms.lp[t];
                    for (int64_t c = lo; c < hi; c++) k.lb[c * k.ld + i] = (T)ms.rb[t * kp + c - lo];
                }
            }
            moments<T>(k, lo, hi, padded);
        }
        unflushed += padded;
        if (narrow && (unflushed >= FLUSH_ROWS || a + sub >= n)) {
            flush();
            unflushed = 0;
        }
    }
    for (int64_t c = 0; c < k.nw; c++)
        for (int64_t f = 0; f < k.nf; f++) {
            const double* l = k.lanes64 + (c * k.nf + f) * W;
            double s = 0;
            for (int j = 0; j < W; j++) s += l[j];
            S[c * k.nf + f] += s;
        }
    for (int64_t m = 0; m < nm; m++) {
        const int64_t lo = bounds[m];
        for (int64_t c = 0; c < bounds[m + 1] - lo; c++) {
            resp[lo + c] += tts[m].resp[c];
            logu[lo + c] += tts[m].logu[c];
        }
        if (!ms.any || !ms.models[m].k) continue;
        const MarginalModel& md = ms.models[m];
        for (int64_t c = 0; c < md.k; c++)
            for (int64_t f = 0; f < k.nf; f++) S[(lo + c) * k.nf + f] += md.St[f * md.kp + c];
        if (md.cross)  // as run_block's
            for (int64_t c = 0; c < md.k; c++)
                for (int64_t i = 0; i < d; i++)
                    for (int64_t j = 0; j < d; j++) {
                        const int64_t a0 = j < i ? j : i, b0 = j < i ? i : j;
                        S[(lo + c) * k.nf + a0 * d - a0 * (a0 - 1) / 2 + (b0 - a0)] += md.cross[(i * d + j) * md.kp + c];
                    }
        if (md.full) continue;
        // the dense step's rows: T(x_hat) - T(x0) + the conditional variance, per missing feature j: r u (mu^2, mu)
        // + r var
        for (int64_t c = 0; c < md.k; c++) {
            double* st = S + (lo + c) * k.nf;
            for (int64_t j = 0; j < d; j++) {
                const double ru = md.acc[j * md.k + c], r = tts[m].accr[j * md.k + c], mu = md.mu[j * md.kp + c];
                st[level == 1 ? j : 0] += ru * (mu * mu) + r * md.var[j * md.kp + c];
                st[k.q + j] += ru * mu;
            }
        }
    }
    std::free(mb);
    std::free(nobs);
    std::free(mem);
    return k.incomplete;
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
    if ((c == 'i' || c == 'l') && v.itemsize == 4) return 'i';
    return 0;
}

const char* code_name(char c) { return c == 'd' ? "float64" : c == 'f' ? "float32" : c == 'i' ? "int32" : "int64"; }

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

// The rows x (n, D) float32/float64 with rows or columns contiguous (their element strides rs, cs:
// Rows), their centre (D,) float64 and the feature level, checked.
bool get_rows(PyObject* ox, PyObject* oc, int level, Buf& x, Buf& c, int64_t& rs, int64_t& cs) {
    if (PyObject_GetBuffer(ox, &x.view, PyBUF_STRIDES | PyBUF_FORMAT) != 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "x must be an array with rows or columns contiguous, got %R",
                     (PyObject*)Py_TYPE(ox));
        return false;
    }
    x.held = true;
    const char code = elem_code(x.view);
    if (code != 'd' && code != 'f') {
        PyErr_Format(PyExc_ValueError, "x must be float32 or float64, got format %s", x.view.format ? x.view.format : "B");
        return false;
    }
    if (x.view.ndim != 2) {
        PyErr_Format(PyExc_ValueError, "x must be 2-D, got %d-D", x.view.ndim);
        return false;
    }
    if (x.view.shape[1] < 1) {
        PyErr_SetString(PyExc_ValueError, "x must have at least one column");
        return false;
    }
    // a stride of a dimension of length 1 is never used (NumPy may give it any value)
    const Py_ssize_t it = x.view.itemsize, n = x.view.shape[0], d = x.view.shape[1];
    const Py_ssize_t s0 = n > 1 ? x.view.strides[0] : d * it, s1 = d > 1 ? x.view.strides[1] : it;
    const bool whole = s0 >= 0 && s1 >= 0 && s0 % it == 0 && s1 % it == 0;
    if (!whole || (s1 != it && s0 != it)) {
        PyErr_Format(PyExc_ValueError,
                     "x must have rows or columns contiguous (C or Fortran order, or a slice of one), "
                     "got strides (%lld, %lld) for items of %lld bytes",
                     (long long)x.view.strides[0], (long long)x.view.strides[1], (long long)it);
        return false;
    }
    rs = s0 / it;
    cs = s1 / it;
    if (level < 0 || level > 2) {
        PyErr_Format(PyExc_ValueError, "level must be 0, 1 or 2, got %d", level);
        return false;
    }
    return get(oc, c, "centre", 1, 'd', false) && shape_is(c, "centre", x.view.shape[1]);
}

// Results below the smallest normal number are flushed to zero while a pass with soft assignment runs (MXCSR's
// FTZ, per thread; the caller's mode comes back on return). A responsibility near exp(FLOOR) times a small feature
// makes them (data of scale 0.01: the terms of every far component), and on Intel CPUs each one took a microcode
// assist of ~100 cycles: a full pass 3.7x slower at scale 0.01 than with the flush, float32 slower than float64
// (docs/performance.md, twenty-third round). Each term lost is below 2.2e-308 (float: 1.2e-38), far inside any
// sum's rounding. Hard passes (k-means, labels' statistics) and logits keep subnormal results: k-means on rows of
// scale 1e-158 (squared distances subnormal) found its clusters and must go on doing so (there every weight is
// a row's own, so no tiny responsibility makes them). Inputs are read as they are (no DAZ).
struct FlushSubnormals {
#if defined(__x86_64__) || defined(__i386__)
    const unsigned int saved = _mm_getcsr();
    explicit FlushSubnormals(bool on) {
        if (on) _mm_setcsr(saved | 0x8000u);
    }
    ~FlushSubnormals() { _mm_setcsr(saved); }
#else
    explicit FlushSubnormals(bool) {}
#endif
};

const char* mixture_block_doc =
    "mixture_block(x, centre, w, theta, level, bounds, modes, S, per_row, rlogr, sub_rows=0, marginal=None,\n"
    "              kmeans_bounds=None, counts=None)\n"
    "--\n\n"
    "Fold a block of rows into the statistics of models with logits theta . T(x - centre).\n\n"
    "x (n, D) float32/float64, rows or columns contiguous (read where it lies); centre (D,) float64;\n"
    "w (n,) float64 or None; theta (W, P) of x's dtype, P the feature rows at level (0 spherical,\n"
    "1 diag, 2 full); bounds (M + 1,) int64,\n"
    "model m owns logit rows bounds[m]:bounds[m+1]; modes (M,) int64, bit 0 hard assignment,\n"
    "bit 1 also sum w r log r (soft only). S (W, P) float64 += moments R T^T; per_row (M, n)\n"
    "float64 = log p(x) (soft) or the largest logit (hard); rlogr (M,) float64 += sum w r log r.\n"
    "Rows with NaN are left out (weight 0, per_row 0) of every model but those that marginalise\n"
    "missing values: marginal is None or a sequence of M entries, None or (means, factor) for\n"
    "model m: means (K, D) float64 about centre, factor float64 the precision Cholesky factors\n"
    "U (P = U U^T), (K, D, D) full (tied: repeated) or (K, D) diagonal (spherical: repeated).\n"
    "Such a model scores a row with NaN by the density of its observed features and adds the\n"
    "expected statistics of its completions (per_row: log p(x_o)). Returns the rows with NaN.\n\n"
    "kmeans_bounds: None, or (label, lower, shift) for one hard model at level 0 that marginalises\n"
    "nothing (k-means): label (n,) int32 and lower (n,) float32, each row's component and a lower bound\n"
    "of its distance to the others' coefficients, read (when shift is not None) and written; shift\n"
    "(K,) float64 or None: how far each component's coefficients moved since label and lower were\n"
    "written (None: they were not). The rows the bounds settle skip the arg-max's tiles; the results\n"
    "are those of the pass without bounds, bit for bit. Returns (rows with NaN, rows spared) then.\n\n"
    "counts: None, or (W,) float64 += each component's rows, sum r with the weights left out (hard: the\n"
    "rows it took), over the rows the statistics take (a row with NaN only by a model that marginalises)\n"
    "and of positive weight (a row of weight 0 holds nothing).";

// One model's (means, factor) for marginalising, checked: means (k, d), factor (k, d, d) or (k, d).
bool get_marginal(PyObject* entry, int64_t m, int64_t k, int64_t d, Buf& mb, Buf& fb, int& full) {
    char name[64];
    if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 2) {
        PyErr_Format(PyExc_ValueError, "marginal[%lld] must be None or a tuple (means, factor), got %R",
                     (long long)m, (PyObject*)Py_TYPE(entry));
        return false;
    }
    PyOS_snprintf(name, sizeof name, "marginal[%lld] means", (long long)m);
    if (!get(PyTuple_GET_ITEM(entry, 0), mb, name, 2, 'd', false) || !shape_is(mb, name, k, d)) return false;
    PyObject* of = PyTuple_GET_ITEM(entry, 1);
    PyOS_snprintf(name, sizeof name, "marginal[%lld] factor", (long long)m);
    // its rank says full or diagonal
    Py_buffer probe;
    int nd = 3;
    if (PyObject_GetBuffer(of, &probe, PyBUF_ND) == 0) {
        nd = probe.ndim;
        PyBuffer_Release(&probe);
    } else {
        PyErr_Clear();
    }
    if (nd != 2) nd = 3;
    if (!get(of, fb, name, nd, 'd', false)) return false;
    full = nd == 3;
    const Py_ssize_t* sh = fb.view.shape;
    if (full ? !(sh[0] == k && sh[1] == d && sh[2] == d) : !(sh[0] == k && sh[1] == d)) {
        if (full)
            PyErr_Format(PyExc_ValueError, "%s must have shape (%lld, %lld, %lld) or (%lld, %lld), got (%lld, %lld, %lld)",
                         name, (long long)k, (long long)d, (long long)d, (long long)k, (long long)d, (long long)sh[0],
                         (long long)sh[1], (long long)sh[2]);
        else
            PyErr_Format(PyExc_ValueError, "%s must have shape (%lld, %lld, %lld) or (%lld, %lld), got (%lld, %lld)",
                         name, (long long)k, (long long)d, (long long)d, (long long)k, (long long)d, (long long)sh[0],
                         (long long)sh[1]);
        return false;
    }
    return true;
}

// sub_rows: 0 the default, else rows per sub-block; more than the block's rows is the block (the
// scratch is sized by it, and a size near 2**63 would overflow its byte count).
bool check_sub_rows(long long& sub_rows, int64_t n) {
    if (sub_rows < 0) {
        PyErr_Format(PyExc_ValueError, "sub_rows must be >= 0 (0: the default), got %lld", sub_rows);
        return false;
    }
    if (sub_rows > n) sub_rows = n > 0 ? n : 1;
    return true;
}

// bounds (M + 1,) int64: starts at 0, never decreases, M >= 1.
bool get_bounds(PyObject* ob, Buf& b) {
    if (!get(ob, b, "bounds", 1, 'q', false)) return false;
    const int64_t nm = b.view.shape[0] - 1;
    if (nm < 1) {
        PyErr_SetString(PyExc_ValueError, "bounds must hold at least two entries (one model)");
        return false;
    }
    const int64_t* bounds = (const int64_t*)b.view.buf;
    if (bounds[0] != 0) {
        PyErr_SetString(PyExc_ValueError, "bounds must start at 0");
        return false;
    }
    for (int64_t i = 0; i < nm; i++)
        if (bounds[i + 1] < bounds[i]) {
            PyErr_SetString(PyExc_ValueError, "bounds must not decrease");
            return false;
        }
    return true;
}

// The marginal= argument: None, or M entries None or (means, factor), each checked (get_marginal);
// mmeans is null when no model with components marginalises.
struct MarginalArgs {
    std::unique_ptr<Buf[]> mbufs;
    std::unique_ptr<const double*[]> mmeans, mfactor;
    std::unique_ptr<int[]> mfull;
    bool parse(PyObject* omarg, int64_t nm, const int64_t* bounds, int64_t d) {
        if (omarg == Py_None) return true;
        PyObject* seq = PySequence_Fast(omarg, "marginal must be None or a sequence");
        if (!seq) {
            PyErr_Clear();
            PyErr_Format(PyExc_ValueError, "marginal must be None or a sequence of %lld entries, got %R",
                         (long long)nm, (PyObject*)Py_TYPE(omarg));
            return false;
        }
        std::unique_ptr<PyObject, void (*)(PyObject*)> hold(seq, [](PyObject* o) { Py_DECREF(o); });
        if (PySequence_Fast_GET_SIZE(seq) != nm) {
            PyErr_Format(PyExc_ValueError, "marginal must have %lld entries (one per model), got %lld", (long long)nm,
                         (long long)PySequence_Fast_GET_SIZE(seq));
            return false;
        }
        mbufs.reset(new Buf[2 * nm]);
        mmeans.reset(new const double*[nm]);
        mfactor.reset(new const double*[nm]);
        mfull.reset(new int[nm]);
        bool any = false;
        for (int64_t i = 0; i < nm; i++) {
            PyObject* e = PySequence_Fast_GET_ITEM(seq, i);
            mmeans[i] = mfactor[i] = nullptr;
            mfull[i] = 0;
            if (e == Py_None) continue;
            if (!get_marginal(e, i, bounds[i + 1] - bounds[i], d, mbufs[2 * i], mbufs[2 * i + 1], mfull[i]))
                return false;
            mmeans[i] = (const double*)mbufs[2 * i].view.buf;
            mfactor[i] = (const double*)mbufs[2 * i + 1].view.buf;
            any |= bounds[i + 1] > bounds[i];
        }
        if (!any) mmeans.reset();
        return true;
    }
};

// The arguments both block calls share, checked: the rows and centre, the weights, the models'
// bounds and their parameters theta (W, P) in the rows' dtype.
struct BlockArgs {
    Buf x, c, w, th, b;
    char dt = 0;
    int64_t n = 0, d = 0, nm = 0, nw = 0, nf = 0, rs = 0, cs = 0;
    const int64_t* bounds = nullptr;
    bool weighted = false;
};

bool get_block_args(PyObject* ox, PyObject* oc, PyObject* ow, PyObject* oth, PyObject* ob, int level,
                    long long& sub_rows, BlockArgs& a) {
    if (!get_rows(ox, oc, level, a.x, a.c, a.rs, a.cs)) return false;
    a.dt = elem_code(a.x.view);
    a.n = a.x.view.shape[0];
    a.d = a.x.view.shape[1];
    if (!check_sub_rows(sub_rows, a.n)) return false;
    a.weighted = ow != Py_None;
    if (a.weighted && (!get(ow, a.w, "w", 1, 'd', false) || !shape_is(a.w, "w", a.n))) return false;
    if (!get_bounds(ob, a.b)) return false;
    a.nm = a.b.view.shape[0] - 1;
    a.bounds = (const int64_t*)a.b.view.buf;
    a.nw = a.bounds[a.nm];
    a.nf = quad_rows(level, a.d) + a.d + 1;
    return get(oth, a.th, "theta", 2, a.dt, false) && shape_is(a.th, "theta", a.nw, a.nf);
}

PyObject* mixture_block(PyObject*, PyObject* args, PyObject* kwargs) {
    static const char* kwlist[] = {"x", "centre", "w", "theta", "level", "bounds", "modes", "S",
                                   "per_row", "rlogr", "sub_rows", "marginal", "kmeans_bounds", "counts", nullptr};
    PyObject *ox, *oc, *ow, *oth, *ob, *om, *oS, *op, *orl, *omarg = Py_None, *okb = Py_None, *ocn = Py_None;
    int level;
    long long sub_rows = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOiOOOOO|LOOO:mixture_block", (char**)kwlist, &ox, &oc, &ow,
                                     &oth, &level, &ob, &om, &oS, &op, &orl, &sub_rows, &omarg, &okb, &ocn))
        return nullptr;
    BlockArgs a;
    if (!get_block_args(ox, oc, ow, oth, ob, level, sub_rows, a)) return nullptr;
    Buf &x = a.x, &c = a.c, &w = a.w, &th = a.th;
    const char dt = a.dt;
    const int64_t n = a.n, d = a.d, nm = a.nm, nw = a.nw, nf = a.nf;
    const int64_t* bounds = a.bounds;
    const bool weighted = a.weighted;
    Buf m, S, pr, rl;
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
    Buf cn;  // each component's rows, when asked
    if (ocn != Py_None && (!get(ocn, cn, "counts", 1, 'd', true) || !shape_is(cn, "counts", nw))) return nullptr;
    double* counts = ocn != Py_None ? (double*)cn.view.buf : nullptr;
    MarginalArgs marg;  // the models that marginalise missing values
    if (!marg.parse(omarg, nm, bounds, d)) return nullptr;
    Buf kl, klo, ksh;
    KBounds kbv{};
    KBounds* kb = nullptr;
    if (okb != Py_None) {
        if (!PyTuple_Check(okb) || PyTuple_GET_SIZE(okb) != 3) {
            PyErr_Format(PyExc_ValueError, "kmeans_bounds must be None or a tuple (label, lower, shift), got %R",
                         (PyObject*)Py_TYPE(okb));
            return nullptr;
        }
        if (nm != 1 || level != 0 || !(modes[0] & 1) || omarg != Py_None || bounds[1] < 1) {
            PyErr_SetString(PyExc_ValueError, "kmeans_bounds needs one hard model with components at level 0 that "
                                              "marginalises nothing (k-means)");
            return nullptr;
        }
        if (!get(PyTuple_GET_ITEM(okb, 0), kl, "kmeans_bounds label", 1, 'i', true) ||
            !shape_is(kl, "kmeans_bounds label", n) ||
            !get(PyTuple_GET_ITEM(okb, 1), klo, "kmeans_bounds lower", 1, 'f', true) ||
            !shape_is(klo, "kmeans_bounds lower", n))
            return nullptr;
        kbv.label = (int32_t*)kl.view.buf;
        kbv.lower = (float*)klo.view.buf;
        PyObject* osh = PyTuple_GET_ITEM(okb, 2);
        if (osh != Py_None) {
            if (!get(osh, ksh, "kmeans_bounds shift", 1, 'd', false) || !shape_is(ksh, "kmeans_bounds shift", bounds[1]))
                return nullptr;
            kbv.shift = (const double*)ksh.view.buf;
        }
        kb = &kbv;
    }
    int64_t rc;
    const double* wp = weighted ? (const double*)w.view.buf : nullptr;
    const double* const* mm = marg.mmeans.get();
    const double* const* mf = marg.mfactor.get();
    const int* mfl = marg.mfull.get();
    bool soft = false;  // a model with soft assignment: its responsibilities can be tiny
    for (int64_t m = 0; m < nm; m++) soft |= (modes[m] & 1) == 0;
    Py_BEGIN_ALLOW_THREADS
    {
        const FlushSubnormals flush(soft);
        if (dt == 'd')
            rc = run_block<double>(Rows<double>{(const double*)x.view.buf, a.rs, a.cs}, n, d, (const double*)c.view.buf, wp,
                                   (const double*)th.view.buf, level, bounds, modes, nm, (double*)S.view.buf,
                                   (double*)pr.view.buf, (double*)rl.view.buf, sub_rows, mm, mf, mfl, kb, counts);
        else
            rc = run_block<float>(Rows<float>{(const float*)x.view.buf, a.rs, a.cs}, n, d, (const double*)c.view.buf, wp,
                                  (const float*)th.view.buf, level, bounds, modes, nm, (double*)S.view.buf,
                                  (double*)pr.view.buf, (double*)rl.view.buf, sub_rows, mm, mf, mfl, kb, counts);
    }
    Py_END_ALLOW_THREADS
    if (rc < 0) return PyErr_NoMemory();
    if (kb) return Py_BuildValue("LL", (long long)rc, (long long)kbv.spared);
    return PyLong_FromLongLong(rc);
}

const char* studentt_block_doc =
    "studentt_block(x, centre, w, theta, level, bounds, df, const, hterm, S, resp, log_u, per_row, sub_rows=0,\n"
    "               marginal=None)\n"
    "--\n\n"
    "Fold a block of rows into the statistics of Student-t mixtures (daskgmm.kernels.studentt).\n\n"
    "x, centre, w, level, bounds, sub_rows and marginal as mixture_block's; theta (W, P) of x's dtype:\n"
    "the squared Mahalanobis distances as linear forms of the features; df (W,) float64 > 0 the\n"
    "degrees of freedom; const and hterm (W, D + 1) float64, column d for rows with d observed\n"
    "features (column D: complete rows): the log-density's constant, and log1p(d/nu) plus the\n"
    "digamma terms of the degrees of freedom's statistic. S (W, P) float64 += moments with weights\n"
    "w r u; resp (W,) float64 += sum w r; log_u (W,) float64 += sum w r (log u - u + 1); per_row\n"
    "(M, n) float64 = log p(x) (0 for a row with NaN of a model that does not marginalise).\n"
    "Returns the rows with NaN.";

PyObject* studentt_block(PyObject*, PyObject* args, PyObject* kwargs) {
    static const char* kwlist[] = {"x", "centre", "w", "theta", "level", "bounds", "df", "const", "hterm", "S",
                                   "resp", "log_u", "per_row", "sub_rows", "marginal", nullptr};
    PyObject *ox, *oc, *ow, *oth, *ob, *odf, *oco, *oh, *oS, *ors, *olu, *op, *omarg = Py_None;
    int level;
    long long sub_rows = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOiOOOOOOOO|LO:studentt_block", (char**)kwlist, &ox, &oc, &ow,
                                     &oth, &level, &ob, &odf, &oco, &oh, &oS, &ors, &olu, &op, &sub_rows, &omarg))
        return nullptr;
    BlockArgs a;
    if (!get_block_args(ox, oc, ow, oth, ob, level, sub_rows, a)) return nullptr;
    Buf &x = a.x, &c = a.c, &w = a.w, &th = a.th;
    const char dt = a.dt;
    const int64_t n = a.n, d = a.d, nm = a.nm, nw = a.nw, nf = a.nf;
    const int64_t* bounds = a.bounds;
    const bool weighted = a.weighted;
    Buf df, co, hh, S, rs, lu, pr;
    if (!get(odf, df, "df", 1, 'd', false) || !shape_is(df, "df", nw)) return nullptr;
    const double* dfp = (const double*)df.view.buf;
    for (int64_t i = 0; i < nw; i++)
        if (!(dfp[i] > 0.0) || dfp[i] > 1.7976931348623157e308) {
            char* v = PyOS_double_to_string(dfp[i], 'r', 0, 0, nullptr);
            PyErr_Format(PyExc_ValueError, "df[%lld] must be positive and finite, got %s", (long long)i, v ? v : "?");
            PyMem_Free(v);
            return nullptr;
        }
    if (!get(oco, co, "const", 2, 'd', false) || !shape_is(co, "const", nw, d + 1)) return nullptr;
    if (!get(oh, hh, "hterm", 2, 'd', false) || !shape_is(hh, "hterm", nw, d + 1)) return nullptr;
    if (!get(oS, S, "S", 2, 'd', true) || !shape_is(S, "S", nw, nf)) return nullptr;
    if (!get(ors, rs, "resp", 1, 'd', true) || !shape_is(rs, "resp", nw)) return nullptr;
    if (!get(olu, lu, "log_u", 1, 'd', true) || !shape_is(lu, "log_u", nw)) return nullptr;
    if (!get(op, pr, "per_row", 2, 'd', true) || !shape_is(pr, "per_row", nm, n)) return nullptr;
    MarginalArgs marg;
    if (!marg.parse(omarg, nm, bounds, d)) return nullptr;
    int64_t rc;
    const double* wp = weighted ? (const double*)w.view.buf : nullptr;
    const double* const* mm = marg.mmeans.get();
    const double* const* mf = marg.mfactor.get();
    const int* mfl = marg.mfull.get();
    const double* cop = (const double*)co.view.buf;
    const double* hp = (const double*)hh.view.buf;
    Py_BEGIN_ALLOW_THREADS
    {
        const FlushSubnormals flush(true);
        if (dt == 'd')
            rc = run_tblock<double>(Rows<double>{(const double*)x.view.buf, a.rs, a.cs}, n, d, (const double*)c.view.buf, wp,
                                    (const double*)th.view.buf, level, bounds, nm, dfp, cop, hp, (double*)S.view.buf,
                                    (double*)rs.view.buf, (double*)lu.view.buf, (double*)pr.view.buf, sub_rows, mm, mf,
                                    mfl);
        else
            rc = run_tblock<float>(Rows<float>{(const float*)x.view.buf, a.rs, a.cs}, n, d, (const double*)c.view.buf, wp,
                                   (const float*)th.view.buf, level, bounds, nm, dfp, cop, hp, (double*)S.view.buf,
                                   (double*)rs.view.buf, (double*)lu.view.buf, (double*)pr.view.buf, sub_rows, mm, mf,
                                   mfl);
    }
    Py_END_ALLOW_THREADS
    if (rc < 0) return PyErr_NoMemory();
    return PyLong_FromLongLong(rc);
}

const char* mixture_logits_doc =
    "mixture_logits(x, centre, theta, level, out)\n"
    "--\n\n"
    "Logits theta . T(x - centre) of every row (x as mixture_block's) into out (n, W), x's dtype; rows\n"
    "with NaN get NaN.";

PyObject* mixture_logits(PyObject*, PyObject* args, PyObject* kwargs) {
    static const char* kwlist[] = {"x", "centre", "theta", "level", "out", nullptr};
    PyObject *ox, *oc, *oth, *oo;
    int level;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOiO:mixture_logits", (char**)kwlist, &ox, &oc, &oth, &level,
                                     &oo))
        return nullptr;
    Buf x, c, th, out;
    int64_t rs, cs;
    if (!get_rows(ox, oc, level, x, c, rs, cs)) return nullptr;
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
        rc = run_logits<double>(Rows<double>{(const double*)x.view.buf, rs, cs}, n, d, (const double*)c.view.buf,
                                (const double*)th.view.buf, level, nw, (double*)out.view.buf);
    else
        rc = run_logits<float>(Rows<float>{(const float*)x.view.buf, rs, cs}, n, d, (const double*)c.view.buf, (const float*)th.view.buf,
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
    // AMD family 19h with AVX-512 (Zen 4; Zen 3, the same family, has none): it runs a 512-bit
    // operation as two 256-bit halves, so daskgmm prefers its avx512_256 variant there
    unsigned a = 0, b = 0, c = 0, d = 0, zen4 = 0;
    if (__get_cpuid(0, &a, &b, &c, &d) && b == 0x68747541u && d == 0x69746e65u && c == 0x444d4163u &&
        __get_cpuid(1, &a, &b, &c, &d)) {
        const unsigned base = (a >> 8) & 0xf, ext = (a >> 20) & 0xff;
        zen4 = (base == 0xf ? base + ext : base) == 0x19 && __builtin_cpu_supports("avx512f");
    }
    if (PyDict_SetItemString(out, "amd_zen4", zen4 ? Py_True : Py_False) != 0) {
        Py_DECREF(out);
        return nullptr;
    }
#endif
    return out;
}

PyMethodDef methods[] = {
    {"mixture_block", (PyCFunction)(void (*)(void))mixture_block, METH_VARARGS | METH_KEYWORDS, mixture_block_doc},
    {"studentt_block", (PyCFunction)(void (*)(void))studentt_block, METH_VARARGS | METH_KEYWORDS, studentt_block_doc},
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
