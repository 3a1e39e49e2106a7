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
#endif
