#ifndef TOPNSIGMA_THREAD_NAME_H
#define TOPNSIGMA_THREAD_NAME_H
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
#endif
