#ifndef TOPNSIGMA_SHIMS_H
#define TOPNSIGMA_SHIMS_H
// Small C helpers the library cannot write in Swift. Header-only: each is a static inline
// function that the Swift compiler inlines like its own code.

// Names the calling thread (shown by top -H, debuggers and /proc/<pid>/task/<tid>/comm).
// prctl is variadic, which Swift cannot call; this wrapper is not.
#if defined(__linux__)
#include <sys/prctl.h>
static inline int topnsigma_name_current_thread(const char *name) {
    return prctl(PR_SET_NAME, (unsigned long)name, 0UL, 0UL, 0UL);
}
#else
static inline int topnsigma_name_current_thread(const char *name) {
    (void)name;
    return -1;
}
#endif

// The same into L2 and below, not L1 (prefetcht1 on x86): for data needed after the current
// L1-resident work, which it must not evict.
static inline void topnsigma_prefetch_l2(const void *p) {
    __builtin_prefetch(p, 0, 2);
}
// Into L1 (prefetcht0): the statistics loops' lines 8 KB ahead of their reads.
static inline void topnsigma_prefetch_l1(const void *p) {
    __builtin_prefetch(p, 0, 3);
}
// A futex word for the worker pool's idle workers (Linux): a worker reads the word, announces
// itself as a sleeper, rechecks for work and waits while the word is unchanged; the caller bumps
// the word and wakes every waiter. One syscall each side, and no mutex for the woken worker to
// contend for (a condition variable's woken waiter must retake its mutex, and glibc's broadcast
// waited ~60 µs on this project's VMs). The atomics are here because Swift's `Atomic` cannot
// live at a pointer.
#if defined(__linux__)
#include <linux/futex.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>
static inline uint32_t topnsigma_word_load(uint32_t *word) {
    return __atomic_load_n(word, __ATOMIC_SEQ_CST);
}
static inline void topnsigma_word_bump(uint32_t *word) {
    __atomic_fetch_add(word, 1, __ATOMIC_SEQ_CST);
}
// Waits while *word == expected (returns at once if it already differs; may return spuriously).
static inline void topnsigma_futex_wait(uint32_t *word, uint32_t expected) {
    syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, expected, (void *)0, (void *)0, 0);
}
static inline void topnsigma_futex_wake_all(uint32_t *word) {
    syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, 0x7fffffff, (void *)0, (void *)0, 0);
}
#endif

// AVX-512's scale and round instructions on a SIMD16<Float> (a 16-float ext_vector, which Swift
// imports as SIMD16<Float>), for builds compiled with -mavx512f: Swift has no spelling for
// vscalefps, and inlines these like its own code. `topnsigma_scalef16(p, k)` is p·2^floor(k)
// exactly rounded (underflowing to subnormals and 0, never wrapping); `topnsigma_round16` rounds
// to the nearest integer, ties to even.
typedef float topnsigma_float16x __attribute__((ext_vector_type(16)));
#if defined(__AVX512F__)
#include <immintrin.h>
static inline topnsigma_float16x topnsigma_scalef16(topnsigma_float16x p, topnsigma_float16x k) {
    return (topnsigma_float16x)_mm512_scalef_ps((__m512)p, (__m512)k);
}
static inline topnsigma_float16x topnsigma_round16(topnsigma_float16x x) {
    return (topnsigma_float16x)_mm512_roundscale_ps((__m512)x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
#else
// Other builds never call these (BuildTarget.hasAVX512 is false there); they exist so that the
// Swift that calls them type-checks in every build.
#include <math.h>
static inline topnsigma_float16x topnsigma_scalef16(topnsigma_float16x p, topnsigma_float16x k) {
    for (int i = 0; i < 16; i++) p[i] = ldexpf(p[i], (int)floorf(k[i]));
    return p;
}
static inline topnsigma_float16x topnsigma_round16(topnsigma_float16x x) {
    for (int i = 0; i < 16; i++) x[i] = rintf(x[i]);
    return x;
}
#endif

// Double-precision exp in 8 lanes (the library's SoftmaxWeights.exp), and the row moments built
// on it (WideExp).
// In C because Swift does not inline a function this long into its loop (each call then waits
// out the polynomial's latency alone); clang's vector extension is one AVX-512 register per
// vector in SIMD builds and four SSE2 registers in the default one.
//
// topnsigma_exp8(y) = exp(y) for y <= 0 (and a little above): relative error below 2e-15 for
// y >= -708 (y = k·ln 2 + r, ln 2 split in two so that k·ln 2 is exact, |r| <= ln 2 / 2, a
// degree-13 Taylor polynomial: truncation below 4e-18, a few ulps of rounding, one more per step
// where multiply-adds are not fused); 0 below -708, where exp is subnormal, and for -inf.
typedef double topnsigma_double8 __attribute__((ext_vector_type(8)));
typedef float topnsigma_float8 __attribute__((ext_vector_type(8)));
typedef long long topnsigma_long8 __attribute__((ext_vector_type(8)));
static inline topnsigma_double8 topnsigma_exp8(topnsigma_double8 y) {
    const topnsigma_double8 magic = 6755399441055744.0;
    topnsigma_double8 c = __builtin_elementwise_max(y, (topnsigma_double8)-708.0);
    // Adding 1.5·2^52 rounds to an integer k and leaves it in the low mantissa bits.
    topnsigma_double8 s = c * 1.4426950408889634 + magic;
    topnsigma_double8 k = s - magic;
    topnsigma_double8 r = c - k * 6.93147180369123816490e-01;
    r = r - k * 1.90821492927058770002e-10;
    topnsigma_double8 p = 1.0 / 6227020800.0;
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
    // p·2^k by adding k to p's exponent field: -1022 <= k <= 0, so the result is normal.
    topnsigma_long8 bits = ((topnsigma_long8)s - (topnsigma_long8)magic) << 52;
    return (topnsigma_double8)(((topnsigma_long8)p + bits) & (topnsigma_long8)(y >= -708.0));
}

// Over the allowed logits of p[0..<n] (every one when mask is NULL; mask bit i is logit i, p
// starting at a word boundary), with y = (x - maximum)·inverse and e = exp(y): out[0] = Σ e,
// out[1] = Σ e·y, out[2] = Σ e². Four vectors a step, so that four exp chains overlap; -inf
// and masked logits add nothing. The tail past a multiple of 32 uses libm's exp.
#include <math.h>
#include <stdint.h>
#include <string.h>
static inline void topnsigma_exp_moments(
    const float *p, long n, const uint32_t *mask, double maximum, double inverse, double *out) {
    topnsigma_double8 z = 0, w = 0, q = 0;
    const topnsigma_double8 negInf = -INFINITY;
    const topnsigma_long8 lanes = {0, 1, 2, 3, 4, 5, 6, 7};
    long i = 0;
    for (; i + 32 <= n; i += 32) {
        long long word = mask ? (long long)mask[i >> 5] : -1;
        if (word == 0) continue;
        topnsigma_double8 x[4], y[4], e[4];
        topnsigma_long8 valid[4];
        for (int j = 0; j < 4; j++) {
            topnsigma_float8 f;
            memcpy(&f, p + i + 8 * j, sizeof f);
            x[j] = __builtin_convertvector(f, topnsigma_double8);
            valid[j] = (topnsigma_long8)(x[j] > negInf) & -((((topnsigma_long8)word) >> (lanes + 8 * j)) & 1);
            y[j] = (topnsigma_double8)((topnsigma_long8)((x[j] - maximum) * inverse) & valid[j]);
        }
        for (int j = 0; j < 4; j++) e[j] = (topnsigma_double8)((topnsigma_long8)topnsigma_exp8(y[j]) & valid[j]);
        for (int j = 0; j < 4; j++) {
            z += e[j];
            w += e[j] * y[j];
            q += e[j] * e[j];
        }
    }
    double sz = 0, sw = 0, sq = 0;
    for (int l = 0; l < 8; l++) {
        sz += z[l];
        sw += w[l];
        sq += q[l];
    }
    for (; i < n; i++) {
        float x = p[i];
        if (mask && !((mask[i >> 5] >> (i & 31)) & 1)) continue;
        if (x == -INFINITY) continue;
        double yy = ((double)x - maximum) * inverse, ee = exp(yy);
        sz += ee;
        if (ee > 0) sw += ee * yy;
        sq += ee * ee;
    }
    out[0] = sz;
    out[1] = sw;
    out[2] = sq;
}


// For typical-p's route: out[k] += the mass Σ exp((x - maximum)/T) (scale = log2(e)/T) of the
// allowed logits of p[0..<n] (mask as above) whose distance |x - pivot| is at most radii[k], for
// the eight radii at once.
// A degree-5 polynomial for 2^f (relative error about 2e-7), lanes summed 1024 logits at a time
// into double: an estimate that only picks how wide to gather, never what is kept.
typedef float topnsigma_float16v __attribute__((ext_vector_type(16)));
typedef int topnsigma_int16v __attribute__((ext_vector_type(16)));
static inline topnsigma_float16v topnsigma_exp2_16(topnsigma_float16v t) {
    t = __builtin_elementwise_max(t, (topnsigma_float16v)-126.0f);
    const topnsigma_float16v magic = 12582912.0f;
    topnsigma_float16v rounded = t + magic;
    topnsigma_float16v f = t - (rounded - magic);
    topnsigma_float16v q = 1.3264727080050285e-3f;
    q = q * f + 9.67151286218389e-3f;
    q = q * f + 5.550733745645905e-2f;
    q = q * f + 2.40222420818432e-1f;
    q = q * f + 6.931469775965883e-1f;
    q = q * f + 1.0f;
    topnsigma_int16v k = (topnsigma_int16v)rounded - (topnsigma_int16v)magic;
    return (topnsigma_float16v)((topnsigma_int16v)q + (k << 23));
}
static inline void topnsigma_interval_masses(
    const float *p, long n, const uint32_t *mask, float maximum, float scale, float pivot, const float *radii,
    double *out) {
    topnsigma_float16v r[8];
    for (int k = 0; k < 8; k++) r[k] = radii[k];
    const topnsigma_int16v lanes = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    long i = 0;
    while (i < n) {
        long end = i + 1024 < n ? i + 1024 : n;
        topnsigma_float16v acc[8];
        for (int k = 0; k < 8; k++) acc[k] = 0;
        for (; i + 16 <= end; i += 16) {
            topnsigma_float16v x;
            memcpy(&x, p + i, sizeof x);
            topnsigma_float16v d = __builtin_elementwise_abs(x - pivot);
            // Most of a row lies beyond the widest radius: no exp for such a vector.
            topnsigma_int16v near = (topnsigma_int16v)(d <= r[7]);
            if (!__builtin_reduce_or(near)) continue;
            topnsigma_int16v allowed = (topnsigma_int16v)(x > -INFINITY) & near;
            if (mask) allowed &= -((topnsigma_int16v)(mask[i >> 5] >> (i & 31)) >> lanes & 1);
            topnsigma_float16v e = topnsigma_exp2_16((x - maximum) * scale);
            e = (topnsigma_float16v)((topnsigma_int16v)e & allowed);
            for (int k = 0; k < 8; k++) acc[k] += (topnsigma_float16v)((topnsigma_int16v)e & (topnsigma_int16v)(d <= r[k]));
        }
        for (int k = 0; k < 8; k++) {
            double sum = 0;
            for (int l = 0; l < 16; l++) sum += acc[k][l];
            out[k] += sum;
        }
        for (; i < end; i++) {
            float x = p[i];
            if (mask && !((mask[i >> 5] >> (i & 31)) & 1)) continue;
            if (!(x > -INFINITY)) continue;
            double e = exp2(((double)x - maximum) * scale);
            float d = fabsf(x - pivot);
            for (int k = 0; k < 8; k++)
                if (d <= radii[k]) out[k] += e;
        }
    }
}

// Appends the lanes of x where keep is set to out[h...] in order; returns the new count. With
// AVX-512 one compression and one 64-byte store (out needs room for h + 16).
static inline long topnsigma_split_append(float *out, long h, topnsigma_float16v x, topnsigma_int16v keep) {
#if defined(__AVX512F__)
    __mmask16 k = _mm512_test_epi32_mask((__m512i)keep, (__m512i)keep);
    _mm512_storeu_ps(out + h, _mm512_maskz_compress_ps(k, (__m512)x));
    return h + __builtin_popcount((unsigned)k);
#else
    for (int l = 0; l < 16; l++) {
        out[h] = x[l];
        h += keep[l] & 1;
    }
    return h;
#endif
}

// The dynamic temperature's moments at temperature 1 (WideExp.splitMass): Σ e, Σ e·y and Σ e²
// over the allowed logits of p[0..<n] (mask as above), y = x - maximum, e = exp(y), each logit
// taken in double precision or in Float by where it lies:
// - the head, x >= cut (the row's maximum less 16: e above about 1e-7 of the
//   maximum's), and the last n % 256 logits, are copied to head[] (room for n floats) and summed
//   by topnsigma_exp_moments (double: out[0..2] carry its error bound, WideExp.massError);
// - the tail below it by topnsigma_exp2_16 in Float lanes, 16 vectors of 4 accumulator sets
//   at a time, then added in double. out[3] and out[4] bound the
//   absolute error this adds to Σ e and Σ e·y.
// Error of a tail term: 2^t's polynomial is within 1.72e-7 relative (fused multiply-adds) or
// 1.93e-7 (unfused) of 2^f for every Float f in [-0.5, 0.5] (checked exhaustively; the scaling
// by 2^k is exact). t = fl(fl(x - m)·L), L = fl(log2 e) = log2 e·(1 - 0.224u), u = 2^-24: two
// roundings of at most u and L's 0.224u put t within 2.224u·|y|·log2 e of y·log2 e (plus u² terms),
// and 2^Δt within ln 2·|Δt|: e_f = e·(1 + δ), |δ| <= 2e-7 + 2.25u|y|. The product e·y adds 2u
// (y's rounding and its own), the Float sums of terms of one sign 5u (each lane a sum of 4, then
// two pairwise levels), the double sums below 1e-12. Hence
//   |ΔΣe|   <= 1.01·((2e-7 + 8u)·Σe_tail + 2.25u·|Σe·y|_tail)
//   |ΔΣe·y| <= 1.01·((2e-7 + 10u)·|Σe·y|_tail + 2.25u·Σe·y²_tail).
// A tail term with t < -126 is taken as 0 (true e < 1.2e-38 and e·|y| < 1e-36 for such y: below
// 1e-30 over any row, added to both bounds); y is clamped at -200 before the products, so that
// huge negative logits give 0, never 0·inf. Σ e² of the tail is in Float; no bound is claimed on
// it (the route does not use it).
static inline void topnsigma_split_moments(
    const float *p, long n, const uint32_t *mask, float maximum, float cut, float *head, double *out) {
    const topnsigma_float16v m = maximum, lower = cut, scale = 1.4426950408889634f;
    const topnsigma_int16v lanes = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    topnsigma_double8 z = 0, w = 0, q = 0, w2 = 0;
    long i = 0, h = 0;
    for (; i + 256 <= n; i += 256) {
        topnsigma_float16v az0 = 0, az1 = 0, az2 = 0, az3 = 0, aw0 = 0, aw1 = 0, aw2 = 0, aw3 = 0;
        topnsigma_float16v aq0 = 0, aq1 = 0, aq2 = 0, aq3 = 0, a20 = 0, a21 = 0, a22 = 0, a23 = 0;
        for (long at = i; at < i + 256; at += 64) {
#if defined(__AVX512F__)
// With AVX-512 the same arithmetic on the lanes the step keeps, by mask registers: a -inf logit
// fails both x >= cut and t >= -126, the masked lanes' products are never formed (no clamp of y
// needed), 2^k is applied by vscalefps (the integer route's value for every lane with t >= -126
// whose result is normal; below it, correctly rounded), and the head's lanes are compressed by
// the mask itself. The same sums as the generic step, 10-15% faster on Zen 5 (SmolLM2 rows).
#define TOPNSIGMA_SPLIT_STEP(J, AZ, AW, AQ, A2)                                                             \
    {                                                                                                        \
        long v = at + 16 * (J);                                                                              \
        __m512 x = _mm512_loadu_ps(p + v);                                                                   \
        __mmask16 allowed = mask ? (__mmask16)(mask[v >> 5] >> (v & 16)) : (__mmask16)0xFFFF;               \
        __mmask16 high = _mm512_mask_cmp_ps_mask(allowed, x, (__m512)lower, _CMP_GE_OQ);                     \
        _mm512_storeu_ps(head + h, _mm512_maskz_compress_ps(high, x));                                       \
        h += __builtin_popcount((unsigned)high);                                                             \
        __m512 y = _mm512_sub_ps(x, (__m512)m), t = _mm512_mul_ps(y, (__m512)scale);                         \
        __mmask16 low = _mm512_mask_cmp_ps_mask(allowed & ~high, t, _mm512_set1_ps(-126.0f), _CMP_GE_OQ);   \
        __m512 k = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);                  \
        __m512 f = _mm512_sub_ps(t, k);                                                                      \
        __m512 q = _mm512_fmadd_ps(_mm512_set1_ps(1.3264727080050285e-3f), f, _mm512_set1_ps(9.67151286218389e-3f)); \
        q = _mm512_fmadd_ps(q, f, _mm512_set1_ps(5.550733745645905e-2f));                                   \
        q = _mm512_fmadd_ps(q, f, _mm512_set1_ps(2.40222420818432e-1f));                                    \
        q = _mm512_fmadd_ps(q, f, _mm512_set1_ps(6.931469775965883e-1f));                                   \
        q = _mm512_fmadd_ps(q, f, _mm512_set1_ps(1.0f));                                                    \
        __m512 e = _mm512_maskz_scalef_ps(low, q, k);                                                        \
        __m512 ey = _mm512_maskz_mul_ps(low, e, y);                                                          \
        AZ = (topnsigma_float16v)_mm512_add_ps((__m512)AZ, e);                                               \
        AW = (topnsigma_float16v)_mm512_add_ps((__m512)AW, ey);                                              \
        AQ = (topnsigma_float16v)_mm512_fmadd_ps(e, e, (__m512)AQ);                                          \
        A2 = (topnsigma_float16v)_mm512_mask3_fmadd_ps(ey, y, (__m512)A2, low);                              \
    }
#else
#define TOPNSIGMA_SPLIT_STEP(J, AZ, AW, AQ, A2)                                                             \
    {                                                                                                        \
        long v = at + 16 * (J);                                                                              \
        topnsigma_float16v x;                                                                                \
        memcpy(&x, p + v, sizeof x);                                                                         \
        topnsigma_int16v allowed = (topnsigma_int16v)(x > -INFINITY);                                        \
        if (mask) allowed &= -((topnsigma_int16v)(mask[v >> 5] >> (v & 16)) >> lanes & 1);                  \
        topnsigma_int16v high = allowed & (topnsigma_int16v)(x >= lower);                                    \
        h = topnsigma_split_append(head, h, x, high);                                                        \
        topnsigma_float16v y = x - m, t = y * scale;                                                         \
        topnsigma_int16v low = allowed & ~high & (topnsigma_int16v)(t >= -126.0f);                           \
        topnsigma_float16v e = (topnsigma_float16v)((topnsigma_int16v)topnsigma_exp2_16(t) & low);           \
        y = __builtin_elementwise_max(y, (topnsigma_float16v)-200.0f);                                       \
        topnsigma_float16v ey = e * y;                                                                       \
        AZ += e;                                                                                             \
        AW += ey;                                                                                            \
        AQ += e * e;                                                                                         \
        A2 += ey * y;                                                                                        \
    }
#endif
            TOPNSIGMA_SPLIT_STEP(0, az0, aw0, aq0, a20)
            TOPNSIGMA_SPLIT_STEP(1, az1, aw1, aq1, a21)
            TOPNSIGMA_SPLIT_STEP(2, az2, aw2, aq2, a22)
            TOPNSIGMA_SPLIT_STEP(3, az3, aw3, aq3, a23)
#undef TOPNSIGMA_SPLIT_STEP
        }
        topnsigma_float16v sz = (az0 + az1) + (az2 + az3), sw = (aw0 + aw1) + (aw2 + aw3);
        topnsigma_float16v sq = (aq0 + aq1) + (aq2 + aq3), s2 = (a20 + a21) + (a22 + a23);
        z += __builtin_convertvector(sz.lo, topnsigma_double8) + __builtin_convertvector(sz.hi, topnsigma_double8);
        w += __builtin_convertvector(sw.lo, topnsigma_double8) + __builtin_convertvector(sw.hi, topnsigma_double8);
        q += __builtin_convertvector(sq.lo, topnsigma_double8) + __builtin_convertvector(sq.hi, topnsigma_double8);
        w2 += __builtin_convertvector(s2.lo, topnsigma_double8) + __builtin_convertvector(s2.hi, topnsigma_double8);
    }
    // The last logits past a multiple of 256 go to the head (in double).
    for (; i < n; i++) {
        if (mask && !((mask[i >> 5] >> (i & 31)) & 1)) continue;
        if (!(p[i] > -INFINITY)) continue;
        head[h++] = p[i];
    }
    double tz = 0, tw = 0, tq = 0, t2 = 0;
    for (int l = 0; l < 8; l++) {
        tz += z[l];
        tw += w[l];
        tq += q[l];
        t2 += w2[l];
    }
    double hm[3];
    topnsigma_exp_moments(head, h, NULL, (double)maximum, 1.0, hm);
    const double u = 5.9604644775390625e-8;
    out[0] = hm[0] + tz;
    out[1] = hm[1] + tw;
    out[2] = hm[2] + tq;
    out[3] = 1.01 * ((2e-7 + 8 * u) * tz + 2.25 * u * -tw) + 1e-30;
    out[4] = 1.01 * ((2e-7 + 10 * u) * -tw + 2.25 * u * t2) + 1e-30;
}

// Survivor compaction in AVX-512 builds (CandidateKernel.compact, TopKBound.compactGroups):
// every (id, logit) with p[i] >= threshold (and mask bit i set, when mask is not NULL) is written
// to out as an 8-byte {int32 id, float logit} pair, in id order (ids offset by base); each
// returns the count. A vector with hits is compressed without a branch per hit (two
// compressions, two interleaving permutes, one full 64-byte store per 8 hits); one without hits
// costs a compare and a branch in the whole-row compaction, where a store per vector whatever its
// hits measured 1.7 times slower on Zen 5 (overlapping unaligned stores; a branch per hit slower
// still where hits are dense); the group compaction stores every vector it reads (below). Every
// store lies within out[0 ..< i + 16] for the vector at i, so out needs room for n pairs only.
#if defined(__AVX512F__)
// One vector's hits (p[at ..< at + 16] >= t among lanes), compressed and stored whatever their
// count: two compressions, an interleaving permute and one 64-byte store (a second for more than 8
// hits). `always` stores even without a hit, where the caller expects hits too often for a
// branch to predict; otherwise a vector without hits costs a compare and a branch.
static inline long topnsigma_compact_vector_step(
    const float *p, long at, __m512 t, __mmask16 lanes, const uint32_t *mask, int32_t base, int32_t *o,
    long written, int always) {
    __m512 x = _mm512_loadu_ps(p + at);
    __mmask16 k = _mm512_mask_cmp_ps_mask(lanes, x, t, _CMP_GE_OQ);
    if (mask) k &= (__mmask16)(mask[at >> 5] >> (at & 16));
    if (!always && !k) return written;
    const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i low = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i high = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    int hits = __builtin_popcount((unsigned)k);
    __m512i ids = _mm512_add_epi32(_mm512_set1_epi32(base + (int32_t)at), iota);
    __m512i ci = _mm512_maskz_compress_epi32(k, ids);
    __m512i cx = _mm512_maskz_compress_epi32(k, _mm512_castps_si512(x));
    _mm512_storeu_si512((void *)(o + 2 * written), _mm512_permutex2var_epi32(ci, low, cx));
    if (hits > 8) _mm512_storeu_si512((void *)(o + 2 * written + 16), _mm512_permutex2var_epi32(ci, high, cx));
    return written + hits;
}

static inline long topnsigma_compact_vector(
    const float *p, long at, __m512 t, __mmask16 lanes, const uint32_t *mask, int32_t base, int32_t *o,
    long written) {
    return topnsigma_compact_vector_step(p, at, t, lanes, mask, base, o, written, 0);
}
#endif

// The scalar step of both, for the logits after the last whole vector (and other builds).
static inline long topnsigma_compact_scalar(
    const float *p, long from, long n, float threshold, const uint32_t *mask, int32_t base, int32_t *o,
    long written) {
    for (long i = from; i < n; i++) {
        if (mask && !((mask[i >> 5] >> (i & 31)) & 1)) continue;
        if (p[i] >= threshold) {
            o[2 * written] = base + (int32_t)i;
            memcpy(o + 2 * written + 1, p + i, sizeof(float));
            written++;
        }
    }
    return written;
}

// The whole of p[0..<n] (CandidateKernel.compact; mask's first bit is p[0]'s, p starting a word).
static inline long topnsigma_compact(
    const float *p, long n, float threshold, const uint32_t *mask, int32_t base, void *out) {
    int32_t *o = (int32_t *)out;
    long written = 0, i = 0;
#if defined(__AVX512F__)
    const __m512 t = _mm512_set1_ps(threshold);
    for (; i + 16 <= n; i += 16) written = topnsigma_compact_vector(p, i, t, 0xFFFF, mask, base, o, written);
#endif
    return topnsigma_compact_scalar(p, i, n, threshold, mask, base, o, written);
}

// Top-k's compaction of one chunk p[0..<n] from its group maxima (TopKBound.compactGroups), in
// the statistics loop's layout: for a whole 1024-logit block b, groups[64b + 16q + j] is the
// largest of p[1024b + 64r + 16q + j] over r = 0..<16 (the four accumulator sets' lanes); a
// partial last block's groups are its first 16 entries, lane j the largest of its logits i with
// i % 16 == j. Only the vectors of a block's quarters whose groups reach the threshold are read,
// each through its reaching lanes only, and each is stored without a branch on its hits: for top-k
// 1000 about a seventh of the groups reach the bound, so the hits fall in an unpredictable third
// of the vectors read. On Zen 5 a branch per vector (each misprediction waiting on its load) cost
// 14-17 us a V=49152 row against 5 us branch-free (a standalone copy over 128 real rows, each
// read just before), and `nsigma bench --checks` put top-k 1000 at 3.1-3.2 -> 2.5-2.6x the floor
// (B=64 V=128256 DRAM), 3.5 -> 2.9x (warm), 18 -> 8.4-9.4x (B=1, real V=49152 rows) and
// 13.4 -> 8.4-8.7x (B=1 V=128256); top-k 50 at B=1 4.8-4.9 -> 4.2-4.3x (V=49152).
#if defined(__AVX512F__)
static inline long topnsigma_compact_groups(
    const float *p, long n, float threshold, const float *groups, const uint32_t *mask, int32_t base, void *out) {
    const __m512 t = _mm512_set1_ps(threshold);
    int32_t *o = (int32_t *)out;
    long written = 0;
    long block = 0;
    for (; block + 1024 <= n; block += 1024) {
        const float *g = groups + block / 16;
        __mmask16 lanes[4];
        unsigned any = 0;
        for (int q = 0; q < 4; q++) {
            lanes[q] = _mm512_cmp_ps_mask(_mm512_loadu_ps(g + 16 * q), t, _CMP_GE_OQ);
            any |= lanes[q];
        }
        if (!any) continue;
        for (long r = 0; r < 1024; r += 64)
            for (int q = 0; q < 4; q++)
                if (lanes[q])
                    written = topnsigma_compact_vector_step(
                        p, block + r + 16 * q, t, lanes[q], mask, base, o, written, 1);
    }
    if (block < n && _mm512_cmp_ps_mask(_mm512_loadu_ps(groups + block / 16), t, _CMP_GE_OQ)) {
        long i = block;
        for (; i + 16 <= n; i += 16) written = topnsigma_compact_vector(p, i, t, 0xFFFF, mask, base, o, written);
        written = topnsigma_compact_scalar(p, i, n, threshold, mask, base, o, written);
    }
    return written;
}
#else
// Other builds never call it (they compact whole blocks in Swift); it exists so that the Swift
// that calls it type-checks in every build.
static inline long topnsigma_compact_groups(
    const float *p, long n, float threshold, const float *groups, const uint32_t *mask, int32_t base, void *out) {
    (void)groups;
    return topnsigma_compact_scalar(p, 0, n, threshold, mask, base, (int32_t *)out, 0);
}
#endif

#include <math.h>
// Top-k alone on float rows (AVX-512 builds): the maximum of every 16 consecutive logits, the
// "vector maxima" (TopKBound.maximumVectors, compactVectors). A group that reaches the row's
// bound is then one vector to compact, where the statistics loop's lane groups (16 logits 64
// apart) cost the 16 vectors of a quarter each.
#if defined(__AVX512F__)
// The lane-wise maximum of a and b's lanes picked by lo and hi (two halves of a permutation).
static inline __m512 topnsigma_pair_maxima(__m512 a, __m512 b, __m512i lo, __m512i hi) {
    return _mm512_max_ps(_mm512_permutex2var_ps(a, lo, b), _mm512_permutex2var_ps(a, hi, b));
}

// One chunk p[0..<n] (0 < n <= 4096) of a row without a bitmask: writes out[i] = the maximum of
// p[16i ..< min(16i + 16, n)] for every i below ceil(n / 16), -inf for the rest of out[0..<256],
// and blocks[b] = the maximum of the 1024-logit block b (+inf past the chunk's logits, as
// StatisticsKernel's block maxima); returns the chunk's maximum, with the Float lane sums of its
// logits (non-finite on a NaN or an infinity) summed in double into *sum. Sixteen vectors at a
// time: their 16 maxima by a transposing tree of 15 pairs of permutations (45 operations, about
// three per vector beside the load and the add).
static inline float topnsigma_maximum_vectors(const float *p, long n, float *out, float *blocks, double *sum) {
    const __m512i l1 = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);
    const __m512i h1 = _mm512_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    const __m512i l2 = _mm512_setr_epi32(0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27);
    const __m512i h2 = _mm512_setr_epi32(4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
    const __m512i l3 = _mm512_setr_epi32(0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29);
    const __m512i h3 = _mm512_setr_epi32(2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31);
    const __m512i l4 = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i h4 = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    const __m512 negInf = _mm512_set1_ps(-INFINITY);
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    __m512 chunk = negInf;
    long vectors = n / 16, i = 0;
    for (int b = 0; b < 4; b++) blocks[b] = INFINITY;
    for (long block = 0; block < 4 && i < vectors; block++) {
        __m512 m = negInf;
        long end = (block + 1) * 64 < vectors ? (block + 1) * 64 : vectors;
        for (; i + 16 <= end; i += 16) {
            const float *q = p + 16 * i;
            // 8 KB ahead into L1, as the statistics loops (StatisticsKernel.prefetchAhead).
            for (int k = 0; k < 16; k++) __builtin_prefetch(q + 2048 + 16 * k, 0, 3);
            __m512 t[8], u[4], w0, w1;
            for (int k = 0; k < 8; k++) {
                __m512 a = _mm512_loadu_ps(q + 32 * k), b = _mm512_loadu_ps(q + 32 * k + 16);
                s0 = _mm512_add_ps(s0, a);
                s1 = _mm512_add_ps(s1, b);
                t[k] = topnsigma_pair_maxima(a, b, l1, h1);
            }
            for (int k = 0; k < 4; k++) u[k] = topnsigma_pair_maxima(t[2 * k], t[2 * k + 1], l2, h2);
            w0 = topnsigma_pair_maxima(u[0], u[1], l3, h3);
            w1 = topnsigma_pair_maxima(u[2], u[3], l3, h3);
            __m512 maxima = topnsigma_pair_maxima(w0, w1, l4, h4);
            _mm512_storeu_ps(out + i, maxima);
            m = _mm512_max_ps(m, maxima);
        }
        for (; i < end; i++) {
            __m512 a = _mm512_loadu_ps(p + 16 * i);
            s0 = _mm512_add_ps(s0, a);
            float x = _mm512_reduce_max_ps(a);
            out[i] = x;
            m = _mm512_max_ps(m, _mm512_set1_ps(x));
        }
        blocks[block] = _mm512_reduce_max_ps(m);
        chunk = _mm512_max_ps(chunk, m);
    }
    float maximum = _mm512_reduce_max_ps(chunk);
    double total = 0;
    __m512 s = _mm512_add_ps(s0, s1);
    for (int k = 0; k < 16; k++) total += (double)s[k];
    if (n % 16) {
        // The chunk's last few logits (only a row's last chunk ends off a vector), in their own
        // entry and block.
        float x = -INFINITY;
        for (long k = 16 * vectors; k < n; k++) {
            total += (double)p[k];
            if (p[k] > x) x = p[k];
        }
        out[vectors] = x;
        // Its block holds whole vectors too (their maximum is set) unless it starts with them.
        long block = vectors / 64;
        if (vectors % 64 == 0 || x > blocks[block]) blocks[block] = x;
        if (x > maximum) maximum = x;
        vectors++;
    }
    for (long k = vectors; k < 256; k++) out[k] = -INFINITY;
    *sum = total;
    return maximum;
}

// Compacts the logits at or above threshold of a chunk p[0..<n] of a row without a bitmask into
// out (8-byte {int32 id, float logit} pairs, ids base + i), in id order, reading only the vectors
// whose maximum (vmax, topnsigma_maximum_vectors' out) reaches it; returns the count.
static inline long topnsigma_compact_vectors(
    const float *p, long n, float threshold, const float *vmax, int32_t base, void *out) {
    const __m512 t = _mm512_set1_ps(threshold);
    const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    int32_t *o = (int32_t *)out;
    long written = 0;
    long vectors = n / 16;
    // First the reaching vectors' indices, without a branch on them; then their loads, which
    // no mispredicted branch holds back, so that several are in flight at once.
    int32_t reaching[256 + 16];
    long count = 0;
    for (long g = 0; g < vectors; g += 16) {
        __mmask16 reach = _mm512_cmp_ps_mask(_mm512_loadu_ps(vmax + g), t, _CMP_GE_OQ);
        if (vectors - g < 16) reach &= (__mmask16)((1u << (vectors - g)) - 1);
        _mm512_storeu_si512(
            (void *)(reaching + count), _mm512_maskz_compress_epi32(reach, _mm512_add_epi32(iota, _mm512_set1_epi32((int)g))));
        count += __builtin_popcount((unsigned)reach);
    }
    for (long r = 0; r < count; r++)
        written = topnsigma_compact_vector_step(p, 16 * (long)reaching[r], t, 0xFFFF, 0, base, o, written, 1);
    if (n % 16 && vmax[vectors] >= threshold)
        written = topnsigma_compact_scalar(p, 16 * vectors, n, threshold, 0, base, o, written);
    return written;
}
#else
// Other builds never call these (BuildTarget.hasAVX512 is false there); they exist so that the
// Swift that calls them type-checks in every build.
static inline float topnsigma_maximum_vectors(const float *p, long n, float *out, float *blocks, double *sum) {
    (void)p, (void)n, (void)out, (void)blocks;
    *sum = 0;
    return 0;
}
static inline long topnsigma_compact_vectors(
    const float *p, long n, float threshold, const float *vmax, int32_t base, void *out) {
    (void)vmax;
    return topnsigma_compact_scalar(p, 0, n, threshold, 0, base, (int32_t *)out, 0);
}
#endif

// Moves the values of v[0..<n] that lie in [low, high) to the front, in order; returns how many
// (TopKBound.kthLargest). With AVX-512 one compression and one store per 16 values; a scalar
// loop otherwise.
static inline long topnsigma_select_range(float *v, long n, float low, float high) {
    long m = 0, i = 0;
#if defined(__AVX512F__)
    const __m512 lo = _mm512_set1_ps(low), hi = _mm512_set1_ps(high);
    for (; i + 16 <= n; i += 16) {
        __m512 x = _mm512_loadu_ps(v + i);
        __mmask16 k = _mm512_cmp_ps_mask(x, lo, _CMP_GE_OQ) & _mm512_cmp_ps_mask(x, hi, _CMP_LT_OQ);
        // m <= i: the store covers v[m ..< m + 16], values already read.
        _mm512_storeu_ps(v + m, _mm512_maskz_compress_ps(k, x));
        m += __builtin_popcount((unsigned)k);
    }
#endif
    for (; i < n; i++) {
        float x = v[i];
        v[m] = x;
        m += (x >= low) & (x < high);
    }
    return m;
}

// Keeps the 8-byte {int32 id, float logit} pairs of c[0..<n] whose logit is at least threshold,
// in order, at the front; returns how many (RowPipeline.filter). With AVX-512 one compression and
// one store per 8 pairs; a scalar loop, written without a branch per pair, otherwise.
static inline long topnsigma_filter_candidates(void *c, long n, float threshold) {
    int32_t *w = (int32_t *)c;
    long kept = 0, i = 0;
#if defined(__AVX512F__) && defined(__AVX512VL__)
    const __m256 t = _mm256_set1_ps(threshold);
    for (; i + 8 <= n; i += 8) {
        __m512i x = _mm512_loadu_si512((const void *)(w + 2 * i));
        __m256 logits = _mm256_castsi256_ps(_mm512_cvtepi64_epi32(_mm512_srli_epi64(x, 32)));
        __mmask8 k = _mm256_cmp_ps_mask(logits, t, _CMP_GE_OQ);
        // kept <= i: the store covers pairs already read.
        _mm512_storeu_si512((void *)(w + 2 * kept), _mm512_maskz_compress_epi64(k, x));
        kept += __builtin_popcount((unsigned)k);
    }
#endif
    for (; i < n; i++) {
        int32_t id = w[2 * i];
        float logit;
        memcpy(&logit, w + 2 * i + 1, sizeof logit);
        w[2 * kept] = id;
        memcpy(w + 2 * kept + 1, &logit, sizeof logit);
        kept += logit >= threshold;
    }
    return kept;
}

#endif
