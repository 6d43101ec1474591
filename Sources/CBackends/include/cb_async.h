#ifndef CB_ASYNC_H
#define CB_ASYNC_H

/*
 * What the asynchronous appends (cb_aio.h, cb_uring.h) return. Their contexts copy each record
 * into a buffer they own, so the caller may reuse its buffer as soon as a call returns. They
 * never touch the file descriptor beyond writing to it: the caller opens and closes it. After
 * any failure a context is only fit for its close function (its slots may still be in the
 * kernel's hands).
 */

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

#endif
