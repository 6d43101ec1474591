#define _GNU_SOURCE
#include "cb_daemon.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cb_internal.h"

/* ---- Spawning ----------------------------------------------------------------------- */

/* In the child: reports "<what>: <strerror>" through the pipe and exits. */
static void child_fail(int report, const char *what, const char *path, int error) {
    char message[512];
    int length = snprintf(message, sizeof message, "%s(%s): %s", what, path ? path : "", strerror(error));
    if (length > 0) (void)!write(report, message, (size_t)length < sizeof message ? (size_t)length : sizeof message - 1);
    _exit(127);
}

static void child_write_file(int report, const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) child_fail(report, "open", path, errno);
    size_t length = strlen(text), done = 0;
    while (done < length) {
        ssize_t n = RETRY_ERRNO_EINTR(write(fd, text + done, length - done));
        if (n <= 0) child_fail(report, "write", path, n < 0 ? errno : EIO);
        done += (size_t)n;
    }
    if (close(fd) != 0) child_fail(report, "close", path, errno);
}

static void child_prepare_mounts(int report, const cb_mount_step *steps, int step_count) {
    if (unshare(CLONE_NEWNS) != 0) child_fail(report, "unshare", "CLONE_NEWNS", errno);
    /* Private below the root: no mount made here propagates to the parent's namespace. */
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) child_fail(report, "mount MS_PRIVATE", "/", errno);
    for (int k = 0; k < step_count; k++) {
        const cb_mount_step *step = &steps[k];
        switch (step->kind) {
        case CB_MOUNT_TMPFS:
            if (mount("tmpfs", step->path, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") != 0)
                child_fail(report, "mount tmpfs", step->path, errno);
            break;
        case CB_MOUNT_MKDIR:
            if (mkdir(step->path, 0755) != 0 && errno != EEXIST) child_fail(report, "mkdir", step->path, errno);
            break;
        case CB_MOUNT_BIND:
            if (mount(step->source, step->path, NULL, MS_BIND, NULL) != 0) child_fail(report, "mount --bind", step->path, errno);
            break;
        case CB_MOUNT_WRITE:
            child_write_file(report, step->path, step->source);
            break;
        }
    }
}

pid_t cb_spawn_daemon(char *const argv[], const char *output, const cb_mount_step *steps, int step_count,
                      char *error, size_t error_size) {
    int report[2];
    if (pipe2(report, O_CLOEXEC) != 0) {
        snprintf(error, error_size, "pipe2: %s", strerror(errno));
        return -1;
    }
    pid_t parent = getpid();
    pid_t child = fork();
    if (child < 0) {
        snprintf(error, error_size, "fork: %s", strerror(errno));
        close(report[0]);
        close(report[1]);
        return -1;
    }
    if (child == 0) {
        close(report[0]);
        if (prctl(PR_SET_PDEATHSIG, SIGTERM, 0, 0, 0) != 0) child_fail(report[1], "prctl", "PR_SET_PDEATHSIG", errno);
        if (getppid() != parent) _exit(127);
        /* The harness blocks or ignores nothing the daemon needs, but a forked child inherits
         * the mask: clear it so SIGTERM stops the daemon. */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        int in = open("/dev/null", O_RDONLY);
        int out = open(output, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (in < 0) child_fail(report[1], "open", "/dev/null", errno);
        if (out < 0) child_fail(report[1], "open", output, errno);
        if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0) child_fail(report[1], "dup2", output, errno);
        if (step_count > 0) child_prepare_mounts(report[1], steps, step_count);
        execv(argv[0], argv);
        child_fail(report[1], "execv", argv[0], errno);
    }
    close(report[1]);
    /* The pipe closes at exec (O_CLOEXEC) with nothing written, or carries the failure. */
    char message[512];
    ssize_t n = RETRY_ERRNO_EINTR(read(report[0], message, sizeof message - 1));
    close(report[0]);
    if (n > 0) {
        message[n] = 0;
        snprintf(error, error_size, "%s", message);
        int status;
        (void)RETRY_ERRNO_EINTR(waitpid(child, &status, 0));
        return -1;
    }
    return child;
}

/* ---- Reading a journal (libsystemd, loaded at run time) ----------------------------- */

typedef struct sd_journal sd_journal;

static struct {
    int (*open_directory)(sd_journal **, const char *, int);
    int (*add_match)(sd_journal *, const void *, size_t);
    int (*set_data_threshold)(sd_journal *, size_t);
    int (*process)(sd_journal *);
    int (*get_fd)(sd_journal *);
    int (*next)(sd_journal *);
    int (*get_data)(sd_journal *, const char *, const void **, size_t *);
    int (*wait)(sd_journal *, uint64_t);
    void (*close)(sd_journal *);
} sd;

struct cb_journal {
    sd_journal *journal;
};

int cb_journal_available(char *error, size_t error_size) {
    if (sd.close) return 0;
    void *library = dlopen("libsystemd.so.0", RTLD_NOW | RTLD_LOCAL);
    if (!library) {
        snprintf(error, error_size, "dlopen(libsystemd.so.0): %s", dlerror());
        return -1;
    }
    struct { void **slot; const char *name; } symbols[] = {
        { (void **)&sd.open_directory, "sd_journal_open_directory" },
        { (void **)&sd.add_match, "sd_journal_add_match" },
        { (void **)&sd.set_data_threshold, "sd_journal_set_data_threshold" },
        { (void **)&sd.process, "sd_journal_process" },
        { (void **)&sd.get_fd, "sd_journal_get_fd" },
        { (void **)&sd.next, "sd_journal_next" },
        { (void **)&sd.get_data, "sd_journal_get_data" },
        { (void **)&sd.wait, "sd_journal_wait" },
        { (void **)&sd.close, "sd_journal_close" },
    };
    for (size_t k = 0; k < sizeof symbols / sizeof symbols[0]; k++) {
        *symbols[k].slot = dlsym(library, symbols[k].name);
        if (!*symbols[k].slot) {
            snprintf(error, error_size, "dlsym(libsystemd.so.0, %s): %s", symbols[k].name, dlerror());
            sd.close = NULL;
            return -1;
        }
    }
    return 0;
}

cb_journal *cb_journal_open(const char *directory, const char *match, char *error, size_t error_size) {
    if (cb_journal_available(error, error_size) != 0) return NULL;
    cb_journal *journal = calloc(1, sizeof *journal);
    if (!journal) {
        snprintf(error, error_size, "calloc: %s", strerror(ENOMEM));
        return NULL;
    }
    int r = sd.open_directory(&journal->journal, directory, 0);
    if (r < 0) {
        snprintf(error, error_size, "sd_journal_open_directory(%s): %s", directory, strerror(-r));
        free(journal);
        return NULL;
    }
    if ((r = sd.add_match(journal->journal, match, 0)) < 0 || (r = sd.set_data_threshold(journal->journal, 0)) < 0) {
        snprintf(error, error_size, "sd_journal_add_match(%s): %s", match, strerror(-r));
        cb_journal_close(journal);
        return NULL;
    }
    /* The inotify watches: without them sd_journal_process sees no change, and the reader never
     * looks past the file sizes it found at open (journald grows its files as it writes). */
    if ((r = sd.get_fd(journal->journal)) < 0) {
        snprintf(error, error_size, "sd_journal_get_fd(%s): %s", directory, strerror(-r));
        cb_journal_close(journal);
        return NULL;
    }
    return journal;
}

long cb_journal_skip_new(cb_journal *journal) {
    int r = sd.process(journal->journal);  /* picks up grown and new files */
    if (r < 0) return r;
    long passed = 0;
    while ((r = sd.next(journal->journal)) > 0) passed++;
    return r < 0 ? r : passed;
}

int cb_journal_wait(cb_journal *journal, uint64_t timeout_usec) {
    int r = sd.wait(journal->journal, timeout_usec);
    return r < 0 ? r : 0;
}

int cb_journal_next_field(cb_journal *journal, const char *field, const void **data, size_t *length) {
    int r = sd.next(journal->journal);
    if (r <= 0) return r;
    const void *value;
    size_t size;
    r = sd.get_data(journal->journal, field, &value, &size);
    if (r < 0) return r;
    size_t prefix = strlen(field) + 1;  /* "FIELD=" */
    if (size < prefix) return -EBADMSG;
    *data = (const char *)value + prefix;
    *length = size - prefix;
    return 1;
}

void cb_journal_close(cb_journal *journal) {
    if (!journal) return;
    if (journal->journal) sd.close(journal->journal);
    free(journal);
}
