#ifndef CBACKENDS_H
#define CBACKENDS_H

/*
 * Thin C wrappers for the backends whose APIs Swift cannot call directly: statx with
 * STATX_DIOALIGN (newer than Swift's Glibc module), and libaio / liburing, whose hot
 * functions are static inline or macros.
 *
 * Conventions: int functions that can fail return 0 or a negative errno, and none relies on
 * errno; those that submit or reap writes return a cb_result instead. The aio and
 * uring contexts copy each record into a buffer they own, so the caller may reuse its
 * buffer as soon as a call returns. They never touch the file descriptor beyond writing
 * to it: the caller opens and closes it. After any failure a context is only fit for
 * its close function (its slots may still be in the kernel's hands).
 */

#include <stddef.h>
#include <stdint.h>

#include "cb_process.h"   /* process.c: prctl wrappers */

/* ---- Direct I/O alignment ---------------------------------------------------------- */

/// Reads the direct-I/O alignment of the open regular file `fd` with
/// statx(STATX_DIOALIGN) (Linux 6.1+): `*mem_align` for buffer addresses,
/// `*offset_align` for file offsets and lengths. Returns 0, with both set to 0 when the
/// kernel or filesystem does not report them; or -errno when statx fails.
int cb_dio_alignment(int fd, uint32_t *mem_align, uint32_t *offset_align);

/// madvise(MADV_POPULATE_WRITE): allocates and maps every page of a shared mapping for
/// writing now (Linux 5.14). Returns 0, or -1 with errno set.
int cb_populate_write(void *address, size_t length);

/// Maps `length` bytes (rounded up to 2 MiB) of anonymous memory in 2 MiB pages where it
/// can, writes every page, and unmaps it: the free memory the next allocations draw on is
/// then memory the hypervisor backs, as on bare metal. Returns 0, or -1 with errno set.
int cb_warm_memory(size_t length);

/// Writes `value` to the kernel parameter file `path` (a /sys or /proc file) and arranges for
/// `restore` to be written back by cb_release_parameter, at exit(), and on SIGINT, SIGTERM,
/// SIGHUP or SIGQUIT (then the signal is raised again); only by this process, not by
/// children forked later. One parameter at a time. Returns 0, or -1 with errno (EACCES when
/// not root, EINVAL when the kernel refuses the value). SIGKILL leaves `value` in place.
int cb_hold_parameter(const char *path, const char *value, const char *restore);

/// Writes back what cb_hold_parameter saved, if this process holds it. Idempotent.
void cb_release_parameter(void);

/// syncfs(2) (Swift's Glibc module omits it: it needs _GNU_SOURCE). Returns 0, or -1 with errno set.
int cb_syncfs(int fd);

/// O_DIRECT as this platform defines it (Swift's Glibc module omits it: it needs _GNU_SOURCE).
int cb_o_direct(void);

/* ---- Asynchronous appends: shared result ------------------------------------------- */

/// Where an asynchronous append failed.
typedef enum cb_step {
    CB_OK = 0,        ///< nothing failed
    CB_SUBMIT,        ///< handing the write to the kernel (io_submit, io_uring_submit)
    CB_WAIT,          ///< waiting for completions (io_getevents, io_uring_wait_cqe)
    CB_COMPLETION,    ///< a write completed with an error or short
} cb_step;

/// The outcome of a call that submits or reaps writes.
typedef struct cb_result {
    cb_step step;         ///< CB_OK on success, else where it failed
    int error;            ///< a positive errno; 0 on success and for a short write
    long long expected;   ///< CB_COMPLETION: bytes the failed write asked for
    long long written;    ///< CB_COMPLETION: bytes it reported (< expected when short)
} cb_result;

/* ---- Linux AIO (libaio) ------------------------------------------------------------ */

typedef struct cb_aio cb_aio;

/// Creates an AIO context with `depth` (>= 1) record buffers of `record_size` bytes and
/// io_setup(depth). Returns 0 and sets `*out`, or -errno (io_setup's -EAGAIN when
/// /proc/sys/fs/aio-max-nr is exhausted, -ENOSYS without AIO, -ENOMEM).
int cb_aio_open(unsigned depth, size_t record_size, cb_aio **out);

/// Copies `record` (`len` <= record_size bytes) into a free buffer and submits one
/// write of it to `fd` at offset `offset` (ignored by the kernel when `fd` is
/// O_APPEND). When `depth` writes are then in flight, waits for at least one to complete,
/// so at depth 1 the write has completed when this returns. Every reaped completion is
/// checked: its byte count must equal its length.
cb_result cb_aio_append(cb_aio *ctx, int fd, const void *record, size_t len, long long offset);

/// Waits for every write in flight and checks each. Returns the first failure.
cb_result cb_aio_drain(cb_aio *ctx);

/// io_destroy (which waits for writes still in flight), then frees everything, even on
/// failure. Returns 0 or io_destroy's -errno. NULL is allowed.
int cb_aio_close(cb_aio *ctx);

/* ---- io_uring (liburing) ----------------------------------------------------------- */

typedef struct cb_uring cb_uring;

/// Creates a ring of `depth` (>= 1) rounded up to a power of two entries, with `depth`
/// record buffers of `record_size` bytes. Returns 0 and sets `*out`, or -errno from
/// io_uring_queue_init (-ENOSYS without io_uring, -EPERM when
/// /proc/sys/kernel/io_uring_disabled or a seccomp filter forbids it, -ENOMEM).
int cb_uring_open(unsigned depth, size_t record_size, cb_uring **out);

/// As cb_aio_append, with io_uring_prep_write and io_uring_submit. When the submission
/// fills the window of `depth` writes, it is io_uring_submit_and_wait(1) instead, so the
/// wait for a completion costs no second system call; completions are then taken with
/// io_uring_wait_cqe / io_uring_peek_cqe.
cb_result cb_uring_append(cb_uring *ctx, int fd, const void *record, size_t len, long long offset);

/// Waits for every write in flight and checks each. Returns the first failure.
cb_result cb_uring_drain(cb_uring *ctx);

/// io_uring_queue_exit (the kernel finishes or cancels writes in flight), then frees
/// everything. NULL is allowed.
void cb_uring_close(cb_uring *ctx);

#endif
