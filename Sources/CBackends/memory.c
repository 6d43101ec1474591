/* Faulting memory in ahead of a measurement (cb_memory.h). */
#define _GNU_SOURCE
#include "cb_memory.h"

#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

int cb_populate_write(void *address, size_t length) {
    return madvise(address, length, MADV_POPULATE_WRITE);
}

int cb_warm_memory(size_t length) {
    const size_t huge = 2u << 20;
    length = (length + huge - 1) & ~(huge - 1);
    if (length == 0) return 0;
    char *base = mmap(NULL, length + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) return -1;
    char *start = (char *)(((uintptr_t)base + huge - 1) & ~(uintptr_t)(huge - 1));
    (void)madvise(start, length, MADV_HUGEPAGE);   /* best effort: 4 KiB pages warm too */
    if (madvise(start, length, MADV_POPULATE_WRITE) != 0) {
        long page = sysconf(_SC_PAGESIZE);
        for (size_t at = 0; at < length; at += (size_t)page) ((volatile char *)start)[at] = 1;
    }
    munmap(base, length + huge);
    return 0;
}
