/* File calls Swift's Glibc module lacks (cb_files.h). */
#define _GNU_SOURCE
#include "cb_files.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int cb_dio_alignment(int fd, uint32_t *mem_align, uint32_t *offset_align) {
    struct statx stx;
    memset(&stx, 0, sizeof stx);
    *mem_align = 0;
    *offset_align = 0;
    if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) != 0) return -errno;
    if (stx.stx_mask & STATX_DIOALIGN) {
        *mem_align = stx.stx_dio_mem_align;
        *offset_align = stx.stx_dio_offset_align;
    }
    return 0;
}

int cb_o_direct(void) { return O_DIRECT; }

int cb_syncfs(int fd) {
    return syncfs(fd);
}
