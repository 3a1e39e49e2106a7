#ifndef TOPNSIGMA_BENCH_FEATURES_H
#define TOPNSIGMA_BENCH_FEATURES_H
// Whether the importing Swift module was compiled for 256-bit vectors (AVX): the clang importer
// evaluates the macro with that module's own -Xcc flags, as the library's CBuildFeatures does.
// The floor-read benchmark picks its accumulator count from it, as the library's ReadFloor does.
static inline int topnsigma_bench_build_avx(void) {
#ifdef __AVX__
    return 1;
#else
    return 0;
#endif
}
#endif
