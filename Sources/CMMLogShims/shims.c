#define _GNU_SOURCE
#include "CMMLogShims.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
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

int mmlog_populate_write(void *addr, size_t len) {
#ifdef MADV_POPULATE_WRITE
    return madvise(addr, len, MADV_POPULATE_WRITE);
#else
    errno = EINVAL;
    return -1;
#endif
}

int mmlog_errno(void) { return errno; }
