// clockshim: an LD_PRELOAD library that moves a process's clocks, so a test can make time
// jump forward for the processes under test (scripts/torture.sh does, mid-run).
//
//   CLOCKSHIM_FILE=path   a file of two native int64s, read at every call through a shared
//                         mapping: [0] nanoseconds added to CLOCK_MONOTONIC (and _RAW, _COARSE,
//                         BOOTTIME), [1] added to CLOCK_REALTIME (and _COARSE, TAI), time()
//                         and gettimeofday(). Another process rewrites it (pwrite) to jump.
//   CLOCKSHIM_OFFSET_NS=n a fixed offset for both clocks, added to the file's.
//
// clock_nanosleep with TIMER_ABSTIME takes the shifted clock's deadline, so it is shifted
// back: a sleep "until now + 10 ms" still lasts 10 ms. Relative sleeps and the kernel's own
// timeouts (futex, poll) are unaffected, as they are by a real clock jump.
//
// Build: cc -shared -fPIC -O2 -o clockshim.so clockshim.c   (glibc 2.34+: dlsym is in libc)
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

typedef int (*clock_gettime_fn)(clockid_t, struct timespec *);
typedef int (*clock_nanosleep_fn)(clockid_t, int, const struct timespec *, struct timespec *);

static clock_gettime_fn real_clock_gettime;
static clock_nanosleep_fn real_clock_nanosleep;
static const volatile int64_t *offsets;  // [monotonic, realtime], or NULL
static int64_t fixed_offset;

__attribute__((constructor)) static void clockshim_init(void) {
    real_clock_gettime = (clock_gettime_fn)dlsym(RTLD_NEXT, "clock_gettime");
    real_clock_nanosleep = (clock_nanosleep_fn)dlsym(RTLD_NEXT, "clock_nanosleep");
    const char *fixed = getenv("CLOCKSHIM_OFFSET_NS");
    if (fixed) fixed_offset = strtoll(fixed, NULL, 10);
    const char *path = getenv("CLOCKSHIM_FILE");
    if (!path) return;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    void *map = mmap(NULL, 2 * sizeof(int64_t), PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (map != MAP_FAILED) offsets = map;
}

static int is_monotonic(clockid_t clock) {
    return clock == CLOCK_MONOTONIC || clock == CLOCK_MONOTONIC_RAW ||
           clock == CLOCK_MONOTONIC_COARSE || clock == CLOCK_BOOTTIME;
}

static int is_realtime(clockid_t clock) {
    return clock == CLOCK_REALTIME || clock == CLOCK_REALTIME_COARSE || clock == CLOCK_TAI;
}

static int64_t offset_of(clockid_t clock) {
    int64_t shift = fixed_offset;
    if (offsets) {
        if (is_monotonic(clock)) shift += __atomic_load_n(&offsets[0], __ATOMIC_RELAXED);
        else if (is_realtime(clock)) shift += __atomic_load_n(&offsets[1], __ATOMIC_RELAXED);
    }
    return (is_monotonic(clock) || is_realtime(clock)) ? shift : 0;
}

static void add_nanoseconds(struct timespec *ts, int64_t ns) {
    int64_t total = (int64_t)ts->tv_nsec + ns % 1000000000;
    ts->tv_sec += ns / 1000000000 + total / 1000000000;
    total %= 1000000000;
    if (total < 0) { total += 1000000000; ts->tv_sec -= 1; }
    ts->tv_nsec = total;
}

int clock_gettime(clockid_t clock, struct timespec *ts) {
    if (!real_clock_gettime) real_clock_gettime = (clock_gettime_fn)dlsym(RTLD_NEXT, "clock_gettime");
    int rc = real_clock_gettime(clock, ts);
    if (rc == 0) add_nanoseconds(ts, offset_of(clock));
    return rc;
}

int clock_nanosleep(clockid_t clock, int flags, const struct timespec *request, struct timespec *remain) {
    if (!real_clock_nanosleep) real_clock_nanosleep = (clock_nanosleep_fn)dlsym(RTLD_NEXT, "clock_nanosleep");
    if (!(flags & TIMER_ABSTIME)) return real_clock_nanosleep(clock, flags, request, remain);
    struct timespec shifted = *request;
    add_nanoseconds(&shifted, -offset_of(clock));
    return real_clock_nanosleep(clock, flags, &shifted, remain);
}

int gettimeofday(struct timeval *restrict tv, void *restrict tz) {  // glibc declares tv nonnull
    struct timespec ts;
    (void)tz;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0) return -1;
    tv->tv_sec = ts.tv_sec;
    tv->tv_usec = ts.tv_nsec / 1000;
    return 0;
}

time_t time(time_t *out) {
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0) return (time_t)-1;
    if (out) *out = ts.tv_sec;
    return ts.tv_sec;
}
