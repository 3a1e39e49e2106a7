#ifndef TOPNSIGMA_ALLOCATION_COUNTER_H
#define TOPNSIGMA_ALLOCATION_COUNTER_H
#include <stdint.h>
#include <stdbool.h>

/// Test support: counts heap allocations (malloc, calloc, realloc, posix_memalign,
/// aligned_alloc, memalign) made by every thread of the process, by interposing the allocator
/// and forwarding to glibc. Unavailable (returns false) under sanitizers, which own malloc.
bool topnsigma_allocation_counting_available(void);
uint64_t topnsigma_allocation_count(void);
#endif
