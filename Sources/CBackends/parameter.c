/* A kernel parameter held for the invocation (cb_parameter.h). */
#define _GNU_SOURCE
#include "cb_parameter.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cb_internal.h"

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
        (void)RETRY_ERRNO_EINTR(write(fd, held_restore, held_restore_length));
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
    static const int fatal[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT };
    /* The handlers are in place and the value to restore is recorded before the parameter
     * changes, and the fatal signals wait until both are: a SIGTERM that arrives the moment
     * after the write (a supervisor that saw the change) still puts the value back. */
    sigset_t blocked, previous_mask;
    sigemptyset(&blocked);
    for (size_t i = 0; i < sizeof fatal / sizeof fatal[0]; i++) sigaddset(&blocked, fatal[i]);
    sigprocmask(SIG_BLOCK, &blocked, &previous_mask);
    static int registered;
    if (!registered) {
        registered = 1;
        atexit(restore_held);
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
    int result = 0, saved = 0;
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        result = -1;
        saved = errno;
    } else {
        strcpy(held_path, path);
        strcpy(held_restore, restore);
        held_restore_length = strlen(restore);
        held_by = getpid();
        ssize_t n = RETRY_ERRNO_EINTR(write(fd, value, strlen(value)));
        saved = errno;
        close(fd);
        if (n < 0) {
            held_by = 0;   /* nothing changed: nothing to put back */
            result = -1;
        }
    }
    sigprocmask(SIG_SETMASK, &previous_mask, NULL);
    if (result != 0) errno = saved;
    return result;
}

void cb_release_parameter(void) {
    restore_held();
}
