#define _GNU_SOURCE
#include "CMMLogShims.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <stdint.h>
#include <sys/mman.h>

int mmlog_ofd_lock(int fd, off_t start, off_t len, short type, int wait) {
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = start;
    fl.l_len = len;
    fl.l_pid = 0; /* required for OFD locks */
    return fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl);
}

int mmlog_fallocate(int fd, off_t offset, off_t len) {
    return fallocate(fd, 0, offset, len);
}

int mmlog_populate(void *addr, size_t len, int for_writing) {
#if defined(MADV_POPULATE_WRITE) && defined(MADV_POPULATE_READ)
    return madvise(addr, len, for_writing ? MADV_POPULATE_WRITE : MADV_POPULATE_READ);
#else
    (void)addr; (void)len; (void)for_writing;
    errno = EINVAL;
    return -1;
#endif
}

void *mmlog_map_aligned(int fd, size_t len, off_t offset, size_t align, int huge) {
    void *p;
    if (align <= 4096) {
        p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, offset);
    } else {
        /* Reserve len + align of address space, then put the file at its aligned start. */
        char *reserved = mmap(NULL, len + align, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (reserved == MAP_FAILED) return MAP_FAILED;
        char *start = (char *)(((uintptr_t)reserved + align - 1) & ~(uintptr_t)(align - 1));
        p = mmap(start, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, offset);
        if (p == MAP_FAILED) {
            int saved = errno;
            munmap(reserved, len + align);
            errno = saved;
            return MAP_FAILED;
        }
        if (start > reserved) munmap(reserved, (size_t)(start - reserved));
        size_t tail = (size_t)((reserved + len + align) - (start + len));
        if (tail > 0) munmap(start + len, tail);
    }
#ifdef MADV_HUGEPAGE
    if (huge) (void)madvise(p, len, MADV_HUGEPAGE);
#endif
    return p;
}

int mmlog_errno(void) { return errno; }
