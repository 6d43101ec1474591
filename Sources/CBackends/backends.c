#define _GNU_SOURCE
#include "CBackends.h"

#include <errno.h>
#include <fcntl.h>
#include <libaio.h>
#include <signal.h>
#include <liburing.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* The one place calls returning -errno are retried when a signal interrupts them. */
#define RETRY_EINTR(call) ({ __typeof__(call) r_; do { r_ = (call); } while (r_ == -EINTR); r_; })

static const cb_result ok = { CB_OK, 0, 0, 0 };

static cb_result failed(cb_step step, int error) {
    return (cb_result){ step, error, 0, 0 };
}

/* A completion's result, `res` bytes written or -errno, checked against its length. */
static cb_result checked(long long res, size_t len) {
    if (res == (long long)len) return ok;
    return (cb_result){ CB_COMPLETION, res < 0 ? (int)-res : 0, (long long)len, res < 0 ? 0 : res };
}

/* ---- Direct I/O alignment ---------------------------------------------------------- */

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

static int slots_init(slots *s, unsigned depth, size_t record_size) {
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

static void slots_free(slots *s) {
    free(s->free);
    free(s->length);
    free(s->buffers);
}

/* Takes a free slot (the caller guarantees one) and copies the record into it. */
static unsigned slots_fill(slots *s, const void *record, size_t len) {
    unsigned slot = s->free[--s->free_count];
    memcpy(s->buffers + (size_t)slot * s->record_size, record, len);
    s->length[slot] = len;
    return slot;
}

static void *slots_buffer(slots *s, unsigned slot) {
    return s->buffers + (size_t)slot * s->record_size;
}

/* Returns a completed slot and checks its result. */
static cb_result slots_complete(slots *s, unsigned slot, long long res) {
    s->free[s->free_count++] = slot;
    s->in_flight--;
    return checked(res, s->length[slot]);
}

/* ---- Linux AIO --------------------------------------------------------------------- */

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
    int n = RETRY_EINTR(io_getevents(c->io, min, s->in_flight, c->events, NULL));
    if (n < 0) return failed(CB_WAIT, -n);
    cb_result first = ok;
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
    if (len > s->record_size) return failed(CB_SUBMIT, EINVAL);
    unsigned slot = slots_fill(s, record, len);
    struct iocb *cb = &c->iocbs[slot];
    io_prep_pwrite(cb, fd, slots_buffer(s, slot), len, offset);
    struct iocb *list[1] = { cb };
    int n = RETRY_EINTR(io_submit(c->io, 1, list));
    if (n != 1) {
        s->free[s->free_count++] = slot;  /* io_submit took nothing: the slot is ours */
        return failed(CB_SUBMIT, n < 0 ? -n : EAGAIN);
    }
    s->in_flight++;
    return s->in_flight == s->depth ? aio_reap(c, 1) : ok;
}

cb_result cb_aio_drain(cb_aio *c) {
    while (c->slots.in_flight > 0) {
        cb_result r = aio_reap(c, c->slots.in_flight);
        if (r.step != CB_OK) return r;
    }
    return ok;
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

/* ---- io_uring ---------------------------------------------------------------------- */

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
    cb_result first = ok;
    if (wait) {
        int rc = RETRY_EINTR(io_uring_wait_cqe(&c->ring, &cqe));
        if (rc < 0) return failed(CB_WAIT, -rc);
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
    if (len > s->record_size) return failed(CB_SUBMIT, EINVAL);
    /* At most `depth` (<= entries) writes are in flight, each submitted at once: an SQE is free. */
    struct io_uring_sqe *sqe = io_uring_get_sqe(&c->ring);
    if (!sqe) return failed(CB_SUBMIT, EBUSY);
    unsigned slot = slots_fill(s, record, len);
    io_uring_prep_write(sqe, fd, slots_buffer(s, slot), (unsigned)len, (__u64)offset);
    io_uring_sqe_set_data64(sqe, slot);
    int fills = s->in_flight + 1 == s->depth;
    int n = fills ? io_uring_submit_and_wait(&c->ring, 1) : io_uring_submit(&c->ring);
    /* A wait interrupted after the submission still reports it submitted; retrying a bare
     * -EINTR from submit is safe because an unconsumed SQE is simply submitted again. */
    if (n == -EINTR) n = RETRY_EINTR(io_uring_submit(&c->ring));
    if (n != 1) {
        /* The SQE may still sit in the ring, so the slot is not reused: the context is done. */
        return failed(CB_SUBMIT, n < 0 ? -n : EAGAIN);
    }
    s->in_flight++;
    return uring_reap(c, fills);
}

cb_result cb_uring_drain(cb_uring *c) {
    while (c->slots.in_flight > 0) {
        cb_result r = uring_reap(c, 1);
        if (r.step != CB_OK) return r;
    }
    return ok;
}

void cb_uring_close(cb_uring *c) {
    if (!c) return;
    if (c->ring_ready) {
        /* The ring is torn down asynchronously: let writes still reading our buffers end
         * before the buffers are freed (best effort; the results no longer matter). */
        struct io_uring_cqe *cqe;
        while (c->slots.in_flight > 0 && RETRY_EINTR(io_uring_wait_cqe(&c->ring, &cqe)) == 0)
            uring_complete(c, cqe);
        io_uring_queue_exit(&c->ring);
    }
    slots_free(&c->slots);
    free(c);
}

int cb_syncfs(int fd) {
    return syncfs(fd);
}

int cb_warm_memory(size_t length) {
    const size_t huge = 2u << 20;
    length = (length + huge - 1) & ~(huge - 1);
    if (length == 0) return 0;
    char *base = mmap(NULL, length + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) return -1;
    char *start = (char *)(((uintptr_t)base + huge - 1) & ~(uintptr_t)(huge - 1));
    (void)madvise(start, length, MADV_HUGEPAGE);   /* best effort: 4 KiB pages warm too */
    if (madvise(start, length, MADV_POPULATE_WRITE) != 0) {
        long page = sysconf(_SC_PAGESIZE);
        for (size_t at = 0; at < length; at += (size_t)page) ((volatile char *)start)[at] = 1;
    }
    munmap(base, length + huge);
    return 0;
}

/* ---- A kernel parameter held for the invocation --------------------------------------- */

static char held_path[256];
static char held_restore[32];
static size_t held_restore_length;
static volatile sig_atomic_t held_by;   /* pid of the process that holds it; 0: nothing held */

/* Async-signal-safe: open, write and close only. Only the holder restores (forked workers
 * inherit the handlers and the atexit entry). */
static void restore_held(void) {
    if (held_by == 0 || held_by != getpid()) return;
    int fd = open(held_path, O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n;
        do { n = write(fd, held_restore, held_restore_length); } while (n < 0 && errno == EINTR);
        close(fd);
    }
    held_by = 0;
}

static void restore_then_die(int sig) {
    restore_held();
    signal(sig, SIG_DFL);
    raise(sig);
}

int cb_hold_parameter(const char *path, const char *value, const char *restore) {
    if (held_by != 0 || strlen(path) >= sizeof held_path || strlen(restore) >= sizeof held_restore) {
        errno = EINVAL;
        return -1;
    }
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n;
    do { n = write(fd, value, strlen(value)); } while (n < 0 && errno == EINTR);
    int saved = errno;
    close(fd);
    if (n < 0) { errno = saved; return -1; }
    strcpy(held_path, path);
    strcpy(held_restore, restore);
    held_restore_length = strlen(restore);
    held_by = getpid();
    static int registered;
    if (!registered) {
        registered = 1;
        atexit(restore_held);
        const int fatal[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT };
        for (size_t i = 0; i < sizeof fatal / sizeof fatal[0]; i++) {
            struct sigaction action = { 0 };
            action.sa_handler = restore_then_die;
            sigemptyset(&action.sa_mask);
            struct sigaction previous;
            /* Leave an ignored signal ignored (nohup). */
            if (sigaction(fatal[i], NULL, &previous) == 0 && previous.sa_handler == SIG_IGN) continue;
            sigaction(fatal[i], &action, NULL);
        }
    }
    return 0;
}

void cb_release_parameter(void) {
    restore_held();
}

int cb_populate_write(void *address, size_t length) {
    return madvise(address, length, MADV_POPULATE_WRITE);
}
