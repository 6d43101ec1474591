#ifndef CB_AIO_H
#define CB_AIO_H

/* Linux AIO (libaio) appends, `depth` writes in flight (cb_async.h for the contract). */

#include <stddef.h>

#include "cb_async.h"

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

#endif
