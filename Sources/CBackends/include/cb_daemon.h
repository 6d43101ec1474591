#ifndef CB_DAEMON_H
#define CB_DAEMON_H

/*
 * Starting a log daemon for one run (journald, syslog-ng), optionally in a private mount
 * namespace of its own, and reading its journal back. Used by the `journald` and `syslog`
 * backends' run services.
 */

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/// One step of preparing a private mount namespace, done in order in the child before exec.
typedef enum cb_mount_kind {
    CB_MOUNT_TMPFS,   ///< mount a new tmpfs (mode 0755) on `path`
    CB_MOUNT_MKDIR,   ///< mkdir `path` (0755; an existing directory is fine)
    CB_MOUNT_BIND,    ///< bind-mount `source` (a path in the parent's view) on `path`
    CB_MOUNT_WRITE,   ///< create `path` (0644) holding the text `source`
} cb_mount_kind;

typedef struct cb_mount_step {
    cb_mount_kind kind;
    const char *path;
    const char *source;
} cb_mount_step;

/// Forks and execs `argv[0]` (an absolute path) with `argv`, stdin from /dev/null and stdout and
/// stderr appended to `output`. When `step_count` > 0 the child first enters a mount namespace of
/// its own (unshare(CLONE_NEWNS), every mount made private so nothing propagates back) and
/// performs `steps`: the namespace, and every mount in it, dies with the last process in it.
/// The child gets SIGTERM when the calling thread exits (PR_SET_PDEATHSIG), so a daemon never
/// outlives a harness that was killed. Returns the child's pid once exec has succeeded, or -1
/// with `error` (NUL-terminated, at most `error_size` bytes) naming the step and errno that
/// failed, in the child or here.
pid_t cb_spawn_daemon(char *const argv[], const char *output, const cb_mount_step *steps, int step_count,
                      char *error, size_t error_size);

/// A journal opened for reading through libsystemd's sd-journal, loaded with dlopen at run time
/// so that building the harness does not need libsystemd-dev.
typedef struct cb_journal cb_journal;

/// 0 when libsystemd.so.0 and the sd_journal functions used here load; else -1 with `error` set.
int cb_journal_available(char *error, size_t error_size);

/// sd_journal_open_directory(`directory`) with sd_journal_add_match(`match`, "FIELD=value"),
/// no data size threshold, and its inotify watches (sd_journal_get_fd), so that it follows the
/// files as journald grows and adds them. NULL with `error` set on failure.
cb_journal *cb_journal_open(const char *directory, const char *match, char *error, size_t error_size);

/// Moves past every matching entry the journal holds now (sd_journal_process, then
/// sd_journal_next until it returns 0); returns how many it passed, or a negative errno.
long cb_journal_skip_new(cb_journal *journal);

/// sd_journal_wait: until the journal changes or `timeout_usec` pass. 0 or a negative errno.
int cb_journal_wait(cb_journal *journal, uint64_t timeout_usec);

/// The next matching entry's value of `field` (without "FIELD="): 1 with `data` and `length`
/// set (valid until the next call), 0 at the end, or a negative errno.
int cb_journal_next_field(cb_journal *journal, const char *field, const void **data, size_t *length);

void cb_journal_close(cb_journal *journal);

#endif
