#ifndef CB_FILES_H
#define CB_FILES_H

/* File calls Swift's Glibc module lacks: they need _GNU_SOURCE or a newer statx. */

#include <stdint.h>

/// Reads the direct-I/O alignment of the open regular file `fd` with
/// statx(STATX_DIOALIGN) (Linux 6.1+): `*mem_align` for buffer addresses,
/// `*offset_align` for file offsets and lengths. Returns 0, with both set to 0 when the
/// kernel or filesystem does not report them; or -errno when statx fails.
int cb_dio_alignment(int fd, uint32_t *mem_align, uint32_t *offset_align);

/// O_DIRECT as this platform defines it.
int cb_o_direct(void);

/// syncfs(2). Returns 0, or -1 with errno set.
int cb_syncfs(int fd);

#endif
