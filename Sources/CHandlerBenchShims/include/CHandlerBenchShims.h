#ifndef CHANDLER_BENCH_SHIMS_H
#define CHANDLER_BENCH_SHIMS_H

/// Heap allocations this process has made (calls to malloc, calloc, realloc, posix_memalign,
/// aligned_alloc and memalign). Linking this target replaces those functions, for the whole
/// process, by counting wrappers around glibc's own (`__libc_malloc` and friends); it is meant
/// for mmlog-handler-bench only.
unsigned long long handler_bench_allocations(void);

#endif
