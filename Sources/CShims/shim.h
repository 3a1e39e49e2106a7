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
#endif
