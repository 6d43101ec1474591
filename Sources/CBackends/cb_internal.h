#ifndef CB_INTERNAL_H
#define CB_INTERNAL_H

/*
 * Shared by the C files of this target, not exported: the one place interrupted calls are
 * retried, and the record slots and results of the asynchronous appends (aio.c, uring.c).
 * Everything here is static inline: the appends call it once per record.
 */

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cb_async.h"

/* Calls that return -errno (libaio, liburing), retried while a signal interrupts them. */
#define RETRY_NEGATIVE_EINTR(call) ({ __typeof__(call) r_; do { r_ = (call); } while (r_ == -EINTR); r_; })

/* Calls that return -1 and set errno (the C library), retried while a signal interrupts them. */
#define RETRY_ERRNO_EINTR(call) ({ __typeof__(call) r_; do { r_ = (call); } while (r_ == -1 && errno == EINTR); r_; })

/* ---- Results ------------------------------------------------------------------------ */

static const cb_result cb_ok = { CB_OK, 0, 0, 0 };

static inline cb_result cb_failed(cb_step step, int error) {
    return (cb_result){ step, error, 0, 0 };
}

/* A completion's result, `res` bytes written or -errno, checked against its length. */
static inline cb_result cb_checked(long long res, size_t len) {
    if (res == (long long)len) return cb_ok;
    return (cb_result){ CB_COMPLETION, res < 0 ? (int)-res : 0, (long long)len, res < 0 ? 0 : res };
}

/* ---- Slots: record buffers and the stack of free ones ------------------------------ */

/* Both contexts own `depth` record buffers; a slot is in the kernel's hands from submit
 * until its completion is reaped. */
typedef struct slots {
    unsigned depth;
    unsigned in_flight;
    unsigned free_count;
    size_t record_size;
    unsigned *free;          /* stack of free slot numbers */
    size_t *length;          /* length submitted from each slot */
    unsigned char *buffers;  /* depth * record_size bytes */
} slots;

static inline int slots_init(slots *s, unsigned depth, size_t record_size) {
    s->depth = depth;
    s->in_flight = 0;
    s->free_count = depth;
    s->record_size = record_size;
    s->free = calloc(depth, sizeof *s->free);
    s->length = calloc(depth, sizeof *s->length);
    s->buffers = malloc((size_t)depth * (record_size ? record_size : 1));
    if (!s->free || !s->length || !s->buffers) return -ENOMEM;
    for (unsigned i = 0; i < depth; i++) s->free[i] = depth - 1 - i;
    return 0;
}

static inline void slots_free(slots *s) {
    free(s->free);
    free(s->length);
    free(s->buffers);
}

/* Takes a free slot (the caller guarantees one) and copies the record into it. */
static inline unsigned slots_fill(slots *s, const void *record, size_t len) {
    unsigned slot = s->free[--s->free_count];
    memcpy(s->buffers + (size_t)slot * s->record_size, record, len);
    s->length[slot] = len;
    return slot;
}

static inline void *slots_buffer(slots *s, unsigned slot) {
    return s->buffers + (size_t)slot * s->record_size;
}

/* Returns a completed slot and checks its result. */
static inline cb_result slots_complete(slots *s, unsigned slot, long long res) {
    s->free[s->free_count++] = slot;
    s->in_flight--;
    return cb_checked(res, s->length[slot]);
}

#endif
