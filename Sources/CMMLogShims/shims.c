#define _GNU_SOURCE
#include "CMMLogShims.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <linux/membarrier.h>
#include <pthread.h>
#include <string.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

__thread mmlog_hot_t mmlog_hot_entry __attribute__((tls_model("initial-exec")));

int mmlog_ofd_lock(int fd, off_t start, off_t len, short type, int wait) {
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = start;
    fl.l_len = len;
    fl.l_pid = 0; /* required for OFD locks */
    return fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl);
}

int mmlog_ofd_held(int fd, off_t start, short type) {
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = start;
    fl.l_len = 1;
    fl.l_pid = 0;
    if (fcntl(fd, F_OFD_GETLK, &fl) != 0) return -1;
    return fl.l_type == F_UNLCK ? 0 : 1;
}

int mmlog_fallocate(int fd, off_t offset, off_t len) {
    return fallocate(fd, 0, offset, len);
}

int mmlog_populate(void *addr, size_t len, int for_writing) {
#if defined(MADV_POPULATE_WRITE) && defined(MADV_POPULATE_READ)
    return madvise(addr, len, for_writing ? MADV_POPULATE_WRITE : MADV_POPULATE_READ);
#else
    (void)addr; (void)len; (void)for_writing;
    errno = EINVAL;
    return -1;
#endif
}

uint64_t mmlog_filesystem_magic(int fd) {
    struct statfs st;
    int rc;
    do { rc = fstatfs(fd, &st); } while (rc == -1 && errno == EINTR);
    return rc == 0 ? (uint64_t)(unsigned long)st.f_type : 0;
}

void *mmlog_map_aligned(int fd, size_t len, off_t offset, size_t align, int huge, int writable) {
    int prot = writable ? PROT_READ | PROT_WRITE : PROT_READ;
    void *p;
    if (align <= 4096) {
        p = mmap(NULL, len, prot, MAP_SHARED, fd, offset);
        if (p == MAP_FAILED) return MAP_FAILED;
    } else {
        /* Reserve len + align of address space, then put the file at its aligned start. */
        char *reserved = mmap(NULL, len + align, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (reserved == MAP_FAILED) return MAP_FAILED;
        char *start = (char *)(((uintptr_t)reserved + align - 1) & ~(uintptr_t)(align - 1));
        p = mmap(start, len, prot, MAP_SHARED | MAP_FIXED, fd, offset);
        if (p == MAP_FAILED) {
            int saved = errno;
            munmap(reserved, len + align);
            errno = saved;
            return MAP_FAILED;
        }
        if (start > reserved) munmap(reserved, (size_t)(start - reserved));
        size_t tail = (size_t)((reserved + len + align) - (start + len));
        if (tail > 0) munmap(start + len, tail);
    }
#ifdef MADV_HUGEPAGE
    if (huge) (void)madvise(p, len, MADV_HUGEPAGE);
#endif
    mmlog_fork_guard_map(p, len);
    return p;
}

int mmlog_fence_off(void *addr, size_t len) {
    mmlog_fork_guard_unmap(addr);
    void *p = mmap(addr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? -1 : 0;
}

void *mmlog_fence_copy(void *addr, size_t len, size_t keep) {
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p != MAP_FAILED) memcpy(p, addr, keep < len ? keep : len);
    return p;
}

int mmlog_fence_replace(void *addr, void *copy, size_t len) {
    void *p = mremap(copy, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, addr);
    if (p == MAP_FAILED) return -1;
    /* After the move: a fork in between gives the child zero pages over a private copy, harmless. */
    mmlog_fork_guard_unmap(addr);
    return 0;
}

static int membarrier_mode; /* 0 unknown, 1 private expedited, 2 global, 3 none */
static pthread_once_t membarrier_once = PTHREAD_ONCE_INIT;

static void membarrier_setup(void) {
    long supported = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
    if (supported > 0 && (supported & MEMBARRIER_CMD_PRIVATE_EXPEDITED) &&
        syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0) {
        membarrier_mode = 1;
    } else if (supported > 0 && (supported & MEMBARRIER_CMD_GLOBAL)) {
        membarrier_mode = 2;
    } else {
        membarrier_mode = 3;
    }
}

void mmlog_membarrier_prepare(void) { pthread_once(&membarrier_once, membarrier_setup); }

int mmlog_membarrier(void) {
    pthread_once(&membarrier_once, membarrier_setup);
    switch (membarrier_mode) {
    case 1: return (int)syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0);
    case 2: return (int)syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0);
    default: errno = ENOSYS; return -1;
    }
}

int mmlog_futex_wait(uint32_t *word, uint32_t expected, int64_t timeout_ns) {
    struct timespec ts = { .tv_sec = timeout_ns / 1000000000, .tv_nsec = timeout_ns % 1000000000 };
    long rc = syscall(SYS_futex, word, FUTEX_WAIT, expected, &ts, NULL, 0);
    if (rc == -1 && errno == EAGAIN) return 0;
    return (int)rc;
}

int mmlog_futex_wake_all(uint32_t *word) {
    return (int)syscall(SYS_futex, word, FUTEX_WAKE, INT32_MAX, NULL, NULL, 0);
}

int32_t mmlog_gettid(void) { return (int32_t)syscall(SYS_gettid); }

int mmlog_errno(void) { return errno; }

uint64_t mmlog_random64(void) {
    uint64_t value = 0;
    if (getrandom(&value, sizeof value, GRND_NONBLOCK) != (ssize_t)sizeof value) return 0;
    return value;
}

int mmlog_clear_nonblock(int fd) {
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0) return -1;
    return fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
}

/* Lock-free: a slot holds fd + 1, 0 when free. Far more slots than one process opens logs. */
#define MMLOG_FORK_GUARD_SLOTS 1024
static int fork_guard[MMLOG_FORK_GUARD_SLOTS];

void mmlog_fork_guard_add(int fd) {
    for (int i = 0; i < MMLOG_FORK_GUARD_SLOTS; i++) {
        int expected = 0;
        if (__atomic_compare_exchange_n(&fork_guard[i], &expected, fd + 1, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) return;
    }
}

void mmlog_fork_guard_remove(int fd) {
    for (int i = 0; i < MMLOG_FORK_GUARD_SLOTS; i++) {
        int expected = fd + 1;
        if (__atomic_compare_exchange_n(&fork_guard[i], &expected, 0, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) return;
    }
}

/* Shared mappings of a log's files: each holds a reference to its open file description,
 * so a child's copy would keep the parent's OFD locks alive as its descriptors would. */
#define MMLOG_FORK_GUARD_MAPS 8192
static struct { uintptr_t addr; size_t len; } fork_guard_maps[MMLOG_FORK_GUARD_MAPS];

void mmlog_fork_guard_map(void *addr, size_t len) {
    for (int i = 0; i < MMLOG_FORK_GUARD_MAPS; i++) {
        uintptr_t expected = 0;
        if (__atomic_compare_exchange_n(&fork_guard_maps[i].addr, &expected, (uintptr_t)addr, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
            __atomic_store_n(&fork_guard_maps[i].len, len, __ATOMIC_SEQ_CST);
            return;
        }
    }
}

void mmlog_fork_guard_unmap(void *addr) {
    for (int i = 0; i < MMLOG_FORK_GUARD_MAPS; i++) {
        if (__atomic_load_n(&fork_guard_maps[i].addr, __ATOMIC_SEQ_CST) == (uintptr_t)addr) {
            __atomic_store_n(&fork_guard_maps[i].len, 0, __ATOMIC_SEQ_CST);
            __atomic_store_n(&fork_guard_maps[i].addr, 0, __ATOMIC_SEQ_CST);
            return;
        }
    }
}

int mmlog_unmap(void *addr, size_t len) {
    mmlog_fork_guard_unmap(addr);
    return munmap(addr, len);
}

static void clear_hot_in_child(void) {
    memset(&mmlog_hot_entry, 0, sizeof mmlog_hot_entry);
    /* Private zero pages in place of each shared mapping: the addresses stay reserved (the
     * child's copy of the handle may unmap them later), the files' descriptions are let go. */
    for (int i = 0; i < MMLOG_FORK_GUARD_MAPS; i++) {
        uintptr_t addr = __atomic_load_n(&fork_guard_maps[i].addr, __ATOMIC_SEQ_CST);
        size_t len = __atomic_load_n(&fork_guard_maps[i].len, __ATOMIC_SEQ_CST);
        if (addr == 0 || len == 0) continue;
        mmap((void *)addr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
    }
    int null = -1;
    for (int i = 0; i < MMLOG_FORK_GUARD_SLOTS; i++) {
        int fd = __atomic_load_n(&fork_guard[i], __ATOMIC_SEQ_CST) - 1;
        if (fd < 0) continue;
        if (null < 0) null = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (null >= 0) dup2(null, fd);  /* keeps the fd number, drops the shared description */
        /* no /dev/null (a bare chroot): left as it is, as before this guard existed */
    }
    if (null >= 0) close(null);
}
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static void atfork_setup(void) { pthread_atfork(NULL, NULL, clear_hot_in_child); }
void mmlog_register_atfork(void) { pthread_once(&atfork_once, atfork_setup); }
