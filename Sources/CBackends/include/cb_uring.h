#ifndef CB_URING_H
#define CB_URING_H

/* io_uring (liburing) appends, `depth` writes in flight (cb_async.h for the contract). */

#include <stddef.h>

#include "cb_async.h"

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
