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

// A software prefetch of the cache line at p into all cache levels (prefetcht0 on x86): a
// hint, never a fault, whatever p is.
static inline void topnsigma_prefetch(const void *p) {
    __builtin_prefetch(p, 0, 3);
}

// The same into L2 and below, not L1 (prefetcht1 on x86): for data needed after the current
// L1-resident work, which it must not evict.
static inline void topnsigma_prefetch_l2(const void *p) {
    __builtin_prefetch(p, 0, 2);
}
#endif
