/* io_uring appends through liburing (cb_uring.h). */
#define _GNU_SOURCE
#include "cb_uring.h"

#include <errno.h>
#include <liburing.h>
#include <stdlib.h>

#include "cb_internal.h"

struct cb_uring {
    struct io_uring ring;
    int ring_ready;
    slots slots;
};

int cb_uring_open(unsigned depth, size_t record_size, cb_uring **out) {
    if (depth == 0 || depth > (1u << 31)) return -EINVAL;
    cb_uring *c = calloc(1, sizeof *c);
    if (!c) return -ENOMEM;
    unsigned entries = 1;
    while (entries < depth) entries <<= 1;
    int rc = slots_init(&c->slots, depth, record_size);
    if (rc == 0) rc = io_uring_queue_init(entries, &c->ring, 0);
    if (rc != 0) {
        cb_uring_close(c);
        return rc;
    }
    c->ring_ready = 1;
    *out = c;
    return 0;
}

static cb_result uring_complete(cb_uring *c, struct io_uring_cqe *cqe) {
    unsigned slot = (unsigned)io_uring_cqe_get_data64(cqe);
    long long res = cqe->res;
    io_uring_cqe_seen(&c->ring, cqe);
    return slots_complete(&c->slots, slot, res);
}

/* Waits for one completion when `wait`, then takes every ready one; returns the first
 * failure after returning every reaped slot. */
static cb_result uring_reap(cb_uring *c, int wait) {
    struct io_uring_cqe *cqe;
    cb_result first = cb_ok;
    if (wait) {
        int rc = RETRY_NEGATIVE_EINTR(io_uring_wait_cqe(&c->ring, &cqe));
        if (rc < 0) return cb_failed(CB_WAIT, -rc);
        first = uring_complete(c, cqe);
    }
    while (c->slots.in_flight > 0 && io_uring_peek_cqe(&c->ring, &cqe) == 0) {
        cb_result r = uring_complete(c, cqe);
        if (first.step == CB_OK) first = r;
    }
    return first;
}

cb_result cb_uring_append(cb_uring *c, int fd, const void *record, size_t len, long long offset) {
    slots *s = &c->slots;
    if (len > s->record_size) return cb_failed(CB_SUBMIT, EINVAL);
    /* At most `depth` (<= entries) writes are in flight, each submitted at once: an SQE is free. */
    struct io_uring_sqe *sqe = io_uring_get_sqe(&c->ring);
    if (!sqe) return cb_failed(CB_SUBMIT, EBUSY);
    unsigned slot = slots_fill(s, record, len);
    io_uring_prep_write(sqe, fd, slots_buffer(s, slot), (unsigned)len, (__u64)offset);
    io_uring_sqe_set_data64(sqe, slot);
    int fills = s->in_flight + 1 == s->depth;
    int n = fills ? io_uring_submit_and_wait(&c->ring, 1) : io_uring_submit(&c->ring);
    /* A wait interrupted after the submission still reports it submitted; retrying a bare
     * -EINTR from submit is safe because an unconsumed SQE is simply submitted again. */
    if (n == -EINTR) n = RETRY_NEGATIVE_EINTR(io_uring_submit(&c->ring));
    if (n != 1) {
        /* The SQE may still sit in the ring, so the slot is not reused: the context is done. */
        return cb_failed(CB_SUBMIT, n < 0 ? -n : EAGAIN);
    }
    s->in_flight++;
    return uring_reap(c, fills);
}

cb_result cb_uring_drain(cb_uring *c) {
    while (c->slots.in_flight > 0) {
        cb_result r = uring_reap(c, 1);
        if (r.step != CB_OK) return r;
    }
    return cb_ok;
}

void cb_uring_close(cb_uring *c) {
    if (!c) return;
    if (c->ring_ready) {
        /* The ring is torn down asynchronously: let writes still reading our buffers end
         * before the buffers are freed (best effort; the results no longer matter). */
        struct io_uring_cqe *cqe;
        while (c->slots.in_flight > 0 && RETRY_NEGATIVE_EINTR(io_uring_wait_cqe(&c->ring, &cqe)) == 0)
            uring_complete(c, cqe);
        io_uring_queue_exit(&c->ring);
    }
    slots_free(&c->slots);
    free(c);
}
