#ifndef CB_MEMORY_H
#define CB_MEMORY_H

/* Faulting memory in ahead of a measurement (the harness's VirtualMemory.swift, floor). */

#include <stddef.h>

/// madvise(MADV_POPULATE_WRITE): allocates and maps every page of a shared mapping for
/// writing now (Linux 5.14). Returns 0, or -1 with errno set.
int cb_populate_write(void *address, size_t length);

/// Maps `length` bytes (rounded up to 2 MiB) of anonymous memory in 2 MiB pages where it
/// can, writes every page, and unmaps it: the free memory the next allocations draw on is
/// then memory the hypervisor backs, as on bare metal. Returns 0, or -1 with errno set.
int cb_warm_memory(size_t length);

#endif
