#ifndef CMMLOG_SHIMS_H
#define CMMLOG_SHIMS_H

#include <stdint.h>
#include <sys/types.h>

#pragma clang diagnostic ignored "-Wnullability-completeness"

/// Open-file-description lock on the byte range [start, start+len) of fd.
/// type: F_RDLCK, F_WRLCK or F_UNLCK. wait != 0 blocks (F_OFD_SETLKW),
/// otherwise it fails with EAGAIN when another description holds a conflicting lock.
/// The kernel drops the lock when the last fd of the description closes, so a dead
/// process never leaves one behind. Returns 0, or -1 with errno set.
/// The corresponding C call is `fcntl(fd, F_OFD_SETLK[W], &flock)`.
int mmlog_ofd_lock(int fd, off_t start, off_t len, short type, int wait);

/// Whether another open file description holds a lock conflicting with `type` on the byte
/// [start, start+1) of fd: 1 held, 0 free, -1 with errno set. Works on a read-only fd.
/// The corresponding C call is `fcntl(fd, F_OFD_GETLK, &flock)`.
int mmlog_ofd_held(int fd, off_t start, short type);

/// Allocates [offset, offset+len) and extends the file size (mode 0).
/// Returns 0, or -1 with errno set (EOPNOTSUPP where the filesystem cannot allocate).
/// The corresponding C call is `fallocate`.
int mmlog_fallocate(int fd, off_t offset, off_t len);

/// Prefaults the mapping (Linux 5.14): for writing (MADV_POPULATE_WRITE: pages allocated,
/// mapped writable and dirtied) or, with for_writing == 0, for reading (MADV_POPULATE_READ:
/// allocated and mapped, dirtied only when written). Returns 0, or -1 with errno set
/// (EINVAL on kernels without it).
int mmlog_populate(void *addr, size_t len, int for_writing);

/// The type (f_type, the filesystem's magic number) of the filesystem holding `fd`, from
/// fstatfs; 0 with errno set when fstatfs fails.
uint64_t mmlog_filesystem_magic(int fd);

/// Maps [offset, offset+len) of fd shared at an address aligned to `align` (a power of two;
/// 0 or a page: no alignment beyond the kernel's choice), read-write or, with writable == 0,
/// read-only, so that the kernel can map the page cache's large folios with huge page table
/// entries. With `huge` != 0 it also advises MADV_HUGEPAGE (failure ignored: it is advice).
/// Returns the address, or MAP_FAILED with errno set.
void *mmlog_map_aligned(int fd, size_t len, off_t offset, size_t align, int huge, int writable);

/// Replaces [addr, addr+len) with private anonymous zero pages in one step (MAP_FIXED), so
/// that a thread still holding pointers into a shared mapping can touch nothing shared.
/// Returns 0, or -1 with errno set.
int mmlog_fence_off(void *addr, size_t len);

/// The first step of fencing off a shared mapping still in use by other threads: private
/// anonymous memory of `len` bytes (elsewhere) holding a copy of the first `keep` bytes at
/// `addr`, to be prepared by the caller and then put in place by `mmlog_fence_replace`.
/// Returns the copy, or MAP_FAILED with errno set.
void *mmlog_fence_copy(void *_Nonnull addr, size_t len, size_t keep);

/// Moves `copy` (from `mmlog_fence_copy`) over [addr, addr+len) in one step (mremap
/// MREMAP_FIXED): a thread touching the range sees the shared mapping or the prepared copy,
/// never anything between (mapping zero pages first and copying into them showed a zero
/// cursor for a moment, and a stale thread reserved at offset 0). Returns 0, or -1 with errno.
int mmlog_fence_replace(void *_Nonnull addr, void *_Nonnull copy, size_t len);

/// A full memory barrier on every running thread of this process (membarrier
/// MEMBARRIER_CMD_PRIVATE_EXPEDITED, registered on first use; MEMBARRIER_CMD_GLOBAL where
/// the expedited command is missing). Lets a rare path pair with fast paths that use only a
/// compiler barrier. Returns 0, or -1 with errno set when no membarrier is available.
int mmlog_membarrier(void);

/// Registers this process for `mmlog_membarrier` (once). The kernel makes a multithreaded
/// process wait an RCU grace period to register (about 10 ms here), a single-threaded one
/// not: MMLog calls this at its first open, before it starts any thread of its own.
void mmlog_membarrier_prepare(void);

/// FUTEX_WAIT on a 32-bit word in shared memory, with a relative timeout in nanoseconds.
/// Returns 0 (woken, or the value differed: EAGAIN), or -1 with errno (ETIMEDOUT, EINTR).
int mmlog_futex_wait(uint32_t *word, uint32_t expected, int64_t timeout_ns);
/// FUTEX_WAKE of every waiter on a 32-bit word in shared memory. Returns how many woke.
int mmlog_futex_wake_all(uint32_t *word);

/// The calling thread's id (gettid).
int32_t mmlog_gettid(void);

/// errno of the calling thread.
int mmlog_errno(void);

/// What one thread needs to append through one handle without a lock: a copy of the
/// handle's hot pointers and its writer slot. One entry per thread (the last handle it
/// used); a handle finds it current when `owner` is the handle's id.
typedef struct mmlog_hot {
    uint64_t owner;          /* id of the handle this entry serves; 0: none */
    uint64_t *slot;          /* this thread's writer slot in the shared table (word 0: state, 1: end) */
    uint64_t *cursor;        /* the shared cursor */
    uint64_t *file_size;     /* the shared allocated size */
    uint64_t *ring_words;    /* the chunk ring's slot words (stride: ring_stride words) */
    void **ring_bases;       /* the chunk ring's mappings */
    uint64_t ring_mask;
    uint64_t ring_stride;
    uint64_t chunk_shift;
    uint64_t chunk_mask;
    uint64_t chunk_size;
    void *file;              /* the handle's log file object, unretained (slow path only) */
    uint64_t slot_index;
} mmlog_hot_t;

extern __thread mmlog_hot_t mmlog_hot_entry __attribute__((tls_model("initial-exec")));

/// The calling thread's entry.
static inline mmlog_hot_t *_Nonnull mmlog_hot(void) { return &mmlog_hot_entry; }

/// Stops the compiler from moving memory accesses across this point (no CPU fence): the
/// fast path's half of an asymmetric barrier whose other half is `mmlog_membarrier`.
static inline void mmlog_compiler_barrier(void) { __atomic_signal_fence(__ATOMIC_SEQ_CST); }

/// Copies `n` bytes: records of up to 16 bytes with two overlapping loads and stores inline
/// (no call, so the fast path keeps its values in registers), longer ones with memcpy.
__attribute__((always_inline)) static inline void mmlog_copy(void *_Nonnull dst, const void *_Nonnull src, size_t n) {
    if (n <= 16) {
        unsigned char *d = (unsigned char *)dst;
        const unsigned char *s = (const unsigned char *)src;
        if (n >= 8) {
            uint64_t a, b;
            __builtin_memcpy(&a, s, 8);
            __builtin_memcpy(&b, s + n - 8, 8);
            __builtin_memcpy(d, &a, 8);
            __builtin_memcpy(d + n - 8, &b, 8);
        } else if (n >= 4) {
            uint32_t a, b;
            __builtin_memcpy(&a, s, 4);
            __builtin_memcpy(&b, s + n - 4, 4);
            __builtin_memcpy(d, &a, 4);
            __builtin_memcpy(d + n - 4, &b, 4);
        } else if (n > 0) {
            d[0] = s[0];
            d[n / 2] = s[n / 2];
            d[n - 1] = s[n - 1];
        }
        return;
    }
    __builtin_memcpy(dst, src, n);
}

/// Registers (once) the fork handler that empties the forking thread's entry in the child,
/// so a handle inherited across fork() takes the slow path there and finds its pid changed.
void mmlog_register_atfork(void);

/// 8 random bytes from the kernel (getrandom); 0 when it has none to give.
uint64_t mmlog_random64(void);

/// Clears O_NONBLOCK on `fd` (MMLog opens its files with it so a FIFO cannot block the open).
int mmlog_clear_nonblock(int fd);

/// Descriptors whose open file descriptions carry MMLog's OFD locks. In a child after fork()
/// each is pointed at /dev/null (dup2, async-signal-safe): the child's copy must not keep the
/// parent's locks alive once the parent dies (a prefork worker or a helper sleeping before
/// exec would otherwise hold them for ever). The child cannot use the handle anyway.
void mmlog_fork_guard_add(int fd);
void mmlog_fork_guard_remove(int fd);
/// The same for shared mappings (a mapping holds its file's description too): registered by
/// `mmlog_map_aligned`, let go by `mmlog_unmap` and `mmlog_fence_off`; replaced by private
/// zero pages in the child.
void mmlog_fork_guard_map(void *_Nonnull addr, size_t len);
void mmlog_fork_guard_unmap(void *_Nonnull addr);
/// munmap, and forgets the mapping for the fork guard.
int mmlog_unmap(void *_Nonnull addr, size_t len);

#endif
