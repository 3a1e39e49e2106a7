#ifndef TOPNSIGMA_BUILD_FEATURES_H
#define TOPNSIGMA_BUILD_FEATURES_H
// The SIMD features the including Swift module was compiled for: the clang importer evaluates
// these macros with the module's own -Xcc flags (e.g. -mavx2 -mfma), the same flags that steer
// Swift's code generation for SIMD types.
static inline int topnsigma_build_sse4_2(void) {
#ifdef __SSE4_2__
    return 1;
#else
    return 0;
#endif
}
static inline int topnsigma_build_avx(void) {
#ifdef __AVX__
    return 1;
#else
    return 0;
#endif
}
static inline int topnsigma_build_avx2(void) {
#ifdef __AVX2__
    return 1;
#else
    return 0;
#endif
}
static inline int topnsigma_build_fma(void) {
#ifdef __FMA__
    return 1;
#else
    return 0;
#endif
}
static inline int topnsigma_build_avx512f(void) {
#ifdef __AVX512F__
    return 1;
#else
    return 0;
#endif
}
static inline int topnsigma_build_f16c(void) {
#ifdef __F16C__
    return 1;
#else
    return 0;
#endif
}
#endif
