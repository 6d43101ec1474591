#ifndef CMMLOG_SHIMS_H
#define CMMLOG_SHIMS_H

#include <sys/types.h>

/// Open-file-description lock on the byte range [start, start+len) of fd.
/// type: F_RDLCK, F_WRLCK or F_UNLCK. wait != 0 blocks (F_OFD_SETLKW),
/// otherwise it fails with EAGAIN when another description holds a conflicting lock.
/// The kernel drops the lock when the last fd of the description closes, so a dead
/// process never leaves one behind. Returns 0, or -1 with errno set.
/// The corresponding C call is `fcntl(fd, F_OFD_SETLK[W], &flock)`.
int mmlog_ofd_lock(int fd, off_t start, off_t len, short type, int wait);

/// Allocates [offset, offset+len) and extends the file size (mode 0).
/// Returns 0, or -1 with errno set (EOPNOTSUPP where the filesystem cannot allocate).
/// The corresponding C call is `fallocate`.
int mmlog_fallocate(int fd, off_t offset, off_t len);

/// Prefaults the mapping (Linux 5.14): for writing (MADV_POPULATE_WRITE: pages allocated,
/// mapped writable and dirtied) or, with for_writing == 0, for reading (MADV_POPULATE_READ:
/// allocated and mapped, dirtied only when written). Returns 0, or -1 with errno set
/// (EINVAL on kernels without it).
int mmlog_populate(void *addr, size_t len, int for_writing);

/// Maps [offset, offset+len) of fd shared and read-write at an address aligned to `align`
/// (a power of two; 0 or a page: no alignment beyond the kernel's choice), so that the
/// kernel can map the page cache's large folios with huge page table entries. With
/// `huge` != 0 it also advises MADV_HUGEPAGE (failure ignored: it is only advice).
/// Returns the address, or MAP_FAILED with errno set.
void *mmlog_map_aligned(int fd, size_t len, off_t offset, size_t align, int huge);


/// errno of the calling thread.
int mmlog_errno(void);

#endif
