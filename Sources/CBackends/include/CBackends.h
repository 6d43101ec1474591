#ifndef CBACKENDS_H
#define CBACKENDS_H

/*
 * The C the harness needs where Swift cannot reach: libaio and liburing (whose hot functions
 * are static inline or macros), statx with STATX_DIOALIGN and calls that need _GNU_SOURCE
 * (newer than, or hidden from, Swift's Glibc module), prctl (variadic), memory warming, and
 * a kernel parameter restored from signal handlers. One header per C file:
 *
 *   cb_aio.h       aio.c        Linux AIO appends (cb_async.h: the result aio and uring share)
 *   cb_daemon.h    daemon.c     a log daemon started in a private mount namespace; its journal read back
 *   cb_uring.h     uring.c      io_uring appends
 *   cb_files.h     files.c      statx's direct-I/O alignment, O_DIRECT, syncfs
 *   cb_memory.h    memory.c     warming memory, MADV_POPULATE_WRITE
 *   cb_parameter.h parameter.c  a /sys or /proc value held for the invocation
 *   cb_process.h   process.c    prctl
 *
 * Conventions: int functions that can fail return 0 or a negative errno and do not rely on
 * errno, unless their comment says "-1 with errno set"; those that submit or reap writes
 * return a cb_result instead. Interrupted calls are retried inside (cb_internal.h).
 */

#include "cb_aio.h"
#include "cb_async.h"
#include "cb_daemon.h"
#include "cb_files.h"
#include "cb_memory.h"
#include "cb_parameter.h"
#include "cb_process.h"
#include "cb_uring.h"

#endif
