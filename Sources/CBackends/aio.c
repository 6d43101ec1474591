/* Linux AIO appends through libaio (cb_aio.h). */
#define _GNU_SOURCE
#include "cb_aio.h"

#include <errno.h>
#include <libaio.h>
#include <stdlib.h>

#include "cb_internal.h"

struct cb_aio {
    io_context_t io;
    slots slots;
    struct iocb *iocbs;        /* one per slot */
    struct io_event *events;   /* room for every write in flight */
};

int cb_aio_open(unsigned depth, size_t record_size, cb_aio **out) {
    if (depth == 0) return -EINVAL;
    cb_aio *c = calloc(1, sizeof *c);
    if (!c) return -ENOMEM;
    int rc = slots_init(&c->slots, depth, record_size);
    c->iocbs = calloc(depth, sizeof *c->iocbs);
    c->events = calloc(depth, sizeof *c->events);
    if (rc == 0 && (!c->iocbs || !c->events)) rc = -ENOMEM;
    if (rc == 0) rc = io_setup((int)depth, &c->io);  /* libaio returns -errno */
    if (rc != 0) {
        c->io = 0;
        cb_aio_close(c);
        return rc;
    }
    *out = c;
    return 0;
}

/* Reaps at least `min` completions (and whatever else is ready); returns the first failure
 * after returning every reaped slot. */
static cb_result aio_reap(cb_aio *c, unsigned min) {
    slots *s = &c->slots;
    int n = RETRY_NEGATIVE_EINTR(io_getevents(c->io, min, s->in_flight, c->events, NULL));
    if (n < 0) return cb_failed(CB_WAIT, -n);
    cb_result first = cb_ok;
    for (int i = 0; i < n; i++) {
        unsigned slot = (unsigned)(c->events[i].obj - c->iocbs);
        /* res is unsigned long in libaio: a negative errno arrives as a huge value. */
        cb_result r = slots_complete(s, slot, (long long)(long)c->events[i].res);
        if (first.step == CB_OK) first = r;
    }
    return first;
}

cb_result cb_aio_append(cb_aio *c, int fd, const void *record, size_t len, long long offset) {
    slots *s = &c->slots;
    if (len > s->record_size) return cb_failed(CB_SUBMIT, EINVAL);
    unsigned slot = slots_fill(s, record, len);
    struct iocb *cb = &c->iocbs[slot];
    io_prep_pwrite(cb, fd, slots_buffer(s, slot), len, offset);
    struct iocb *list[1] = { cb };
    int n = RETRY_NEGATIVE_EINTR(io_submit(c->io, 1, list));
    if (n != 1) {
        s->free[s->free_count++] = slot;  /* io_submit took nothing: the slot is ours */
        return cb_failed(CB_SUBMIT, n < 0 ? -n : EAGAIN);
    }
    s->in_flight++;
    return s->in_flight == s->depth ? aio_reap(c, 1) : cb_ok;
}

cb_result cb_aio_drain(cb_aio *c) {
    while (c->slots.in_flight > 0) {
        cb_result r = aio_reap(c, c->slots.in_flight);
        if (r.step != CB_OK) return r;
    }
    return cb_ok;
}

int cb_aio_close(cb_aio *c) {
    if (!c) return 0;
    int rc = c->io ? io_destroy(c->io) : 0;
    slots_free(&c->slots);
    free(c->iocbs);
    free(c->events);
    free(c);
    return rc;
}
