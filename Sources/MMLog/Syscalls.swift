#if canImport(Glibc)
import Glibc
#endif
import Atomics
import CMMLogShims

// Every raw C call MMLog makes lives here. Each returns a value or throws an MMLogError
// naming the call and its arguments; EINTR is retried in one place.

/// Runs `body` until it stops failing with EINTR; returns its result or throws.
@inline(__always)
func valueOrErrno<T: FixedWidthInteger>(_ operation: @autoclosure () -> String, _ body: () -> T) throws(MMLogError) -> T {
    while true {
        let result = body()
        if result != -1 { return result }
        let code = mmlog_errno()
        if code == EINTR { continue }
        throw MMLogError.system(operation(), code)
    }
}

/// A file's identity and size, from fstat.
package struct FileIdentity: Equatable {
    package var device: UInt64
    package var inode: UInt64
    package init(device: UInt64, inode: UInt64) { self.device = device; self.inode = inode }
}

/// lseek's whence values for data and holes (Linux), which Glibc's module does not export.
let SEEK_DATA: Int32 = 3
let SEEK_HOLE: Int32 = 4

package enum Sys {
    static func open(_ path: String, _ flags: Int32, _ mode: mode_t = 0o644) throws(MMLogError) -> Int32 {
        try valueOrErrno("open(\(path))") { Glibc.open(path, flags | O_CLOEXEC, mode) }
    }

    static func close(_ fd: Int32) {
        _ = Glibc.close(fd)  // never retried: Linux releases the fd even on EINTR
    }

    static func stat(_ fd: Int32, _ path: String) throws(MMLogError) -> Glibc.stat {
        var st = Glibc.stat()
        _ = try valueOrErrno("fstat(\(path))") { fstat(fd, &st) }
        return st
    }

    static func size(_ fd: Int32, _ path: String) throws(MMLogError) -> Int {
        Int(try stat(fd, path).st_size)
    }

    static func identity(_ fd: Int32, _ path: String) throws(MMLogError) -> FileIdentity {
        let st = try stat(fd, path)
        return FileIdentity(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
    }

    /// The identity of the file at `path` now (following symlinks), or nil when there is none.
    static func identity(atPath path: String) -> FileIdentity? {
        var st = Glibc.stat()
        guard fstatat(AT_FDCWD, path, &st, 0) == 0 else { return nil }
        return FileIdentity(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
    }

    static func ftruncate(_ fd: Int32, _ length: Int, _ path: String) throws(MMLogError) {
        _ = try valueOrErrno("ftruncate(\(path), \(length))") { Glibc.ftruncate(fd, off_t(length)) }
    }

    static func fdatasync(_ fd: Int32, _ path: String) throws(MMLogError) {
        _ = try valueOrErrno("fdatasync(\(path))") { Glibc.fdatasync(fd) }
    }

    static func fsync(_ fd: Int32, _ path: String) throws(MMLogError) {
        _ = try valueOrErrno("fsync(\(path))") { Glibc.fsync(fd) }
    }

    /// Allocates [offset, offset+length) and extends the file. Throws with errno
    /// EOPNOTSUPP where the filesystem cannot allocate.
    static func fallocate(_ fd: Int32, _ offset: Int, _ length: Int, _ path: String) throws(MMLogError) {
        _ = try valueOrErrno("fallocate(\(path), \(offset), \(length))") {
            mmlog_fallocate(fd, off_t(offset), off_t(length))
        }
    }

    /// Writes all of `bytes` at `offset`, continuing after short writes.
    static func pwriteAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, _ offset: Int, _ path: String) throws(MMLogError) {
        var done = 0
        while done < bytes.count {
            let n = try valueOrErrno("pwrite(\(path), \(bytes.count - done), \(offset + done))") {
                Glibc.pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset + done))
            }
            if n == 0 {
                throw MMLogError.system("pwrite(\(path), \(bytes.count - done), \(offset + done)) wrote nothing", EIO)
            }
            done += n
        }
    }

    /// Reads up to `buffer.count` bytes at `offset`, continuing after short reads; returns how
    /// many (fewer only at the end of the file).
    static func preadFully(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer, _ offset: Int, _ path: String) throws(MMLogError) -> Int {
        var done = 0
        while done < buffer.count {
            let n = try valueOrErrno("pread(\(path), \(buffer.count - done), \(offset + done))") {
                Glibc.pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done))
            }
            if n == 0 { break }
            done += n
        }
        return done
    }

    /// lseek with SEEK_DATA or SEEK_HOLE: the next data or hole at or after `offset`, or nil
    /// past the end (ENXIO). Throws EINVAL where the filesystem has no such support.
    static func seek(_ fd: Int32, _ offset: Int, _ whence: Int32, _ path: String) throws(MMLogError) -> Int? {
        let result = Glibc.lseek(fd, off_t(offset), whence)
        if result >= 0 { return Int(result) }
        let code = mmlog_errno()
        if code == ENXIO { return nil }
        throw MMLogError.system("lseek(\(path), \(offset), \(whence == SEEK_DATA ? "SEEK_DATA" : "SEEK_HOLE"))", code)
    }

    /// Maps `length` bytes of `fd` at `offset`, shared, writable unless `writable` is false.
    /// With `hugePages`, at an address aligned to 2 MiB (or to `length` when smaller) and
    /// advised MADV_HUGEPAGE, so the page cache can use 2 MiB folios mapped by single page
    /// table entries.
    static func mapShared(_ fd: Int32, _ length: Int, _ offset: Int, _ path: String,
                          hugePages: Bool = false, writable: Bool = true) throws(MMLogError) -> UnsafeMutableRawPointer {
        let align = hugePages ? min(length, 2 << 20) : 0
        guard let p = mmlog_map_aligned(fd, length, off_t(offset), align, hugePages ? 1 : 0, writable ? 1 : 0),
              p != MAP_FAILED
        else {
            throw MMLogError.system("mmap(\(path), \(length), \(offset))", mmlog_errno())
        }
        return p
    }

    static func unmap(_ address: UnsafeMutableRawPointer, _ length: Int) {
        _ = mmlog_unmap(address, length)
    }

    /// Replaces a shared mapping with private zero pages at the same address (see
    /// `mmlog_fence_off`); falls back to leaving it mapped, which is only a leak.
    static func fenceOff(_ address: UnsafeMutableRawPointer, _ length: Int) {
        _ = mmlog_fence_off(address, length)
    }

    /// The magic number of the filesystem holding `fd` (`statfs.f_type`, e.g. 0x9123683E for
    /// btrfs), or nil when it cannot be read. The corresponding C function is `fstatfs`.
    static func filesystemMagic(_ fd: Int32) -> UInt64? {
        let magic = mmlog_filesystem_magic(fd)
        return magic == 0 ? nil : magic
    }

    /// Prefaults a fresh mapping; failure only costs the faults it would have saved.
    static func prefault(_ address: UnsafeMutableRawPointer, _ length: Int, _ how: MMLog.Prefault) {
        switch how {
        case .write: _ = mmlog_populate(address, length, 1)
        case .read: _ = mmlog_populate(address, length, 0)
        case .none: break
        }
    }

    /// Takes (wait: true), tries (wait: false) or releases an OFD lock on one byte of `fd`.
    /// Returns false only when `wait` is false and another description holds a conflicting lock.
    static func lockByte(_ fd: Int32, _ byte: Int, _ type: Int32, wait: Bool, _ what: String) throws(MMLogError) -> Bool {
        while true {
            if mmlog_ofd_lock(fd, off_t(byte), 1, Int16(type), wait ? 1 : 0) == 0 { return true }
            let code = mmlog_errno()
            if code == EINTR { continue }
            if !wait && (code == EAGAIN || code == EACCES) { return false }
            throw MMLogError.system("fcntl(F_OFD_SETLK\(wait ? "W" : ""), \(what))", code)
        }
    }

    /// Releases an OFD lock; a failure here (EBADF after close) changes nothing that matters.
    static func unlockByte(_ fd: Int32, _ byte: Int) {
        _ = mmlog_ofd_lock(fd, off_t(byte), 1, Int16(F_UNLCK), 0)
    }

    /// Whether another open file description holds any lock (shared or exclusive) on one byte
    /// of `fd`. Works on a read-only descriptor.
    static func lockHeld(_ fd: Int32, _ byte: Int, _ what: String) throws(MMLogError) -> Bool {
        let held = try valueOrErrno("fcntl(F_OFD_GETLK, \(what))") { mmlog_ofd_held(fd, off_t(byte), Int16(F_WRLCK)) }
        return held == 1
    }

    /// Whether a process with this pid exists (EPERM: it does, another user's).
    static func processAlive(_ pid: Int32) -> Bool {
        guard pid > 0 else { return false }
        return Glibc.kill(pid, 0) == 0 || mmlog_errno() == EPERM
    }

    /// A full memory barrier on every running thread of this process; false when the kernel
    /// has none (the caller then waits a scheduling period instead).
    static func processWideBarrier() -> Bool {
        mmlog_membarrier() == 0
    }

    /// Sleeps for `nanoseconds` (no spinning).
    static func sleep(nanoseconds: Int) {
        var request = timespec(tv_sec: nanoseconds / 1_000_000_000, tv_nsec: nanoseconds % 1_000_000_000)
        var remaining = timespec()
        while nanosleep(&request, &remaining) != 0 && mmlog_errno() == EINTR { request = remaining }
    }

    /// Sleeps while `waiting()` says so, from `first` ns per pause doubling up to `cap` (waits
    /// on other threads or processes without spinning a CPU).
    static func backOff(first: Int, cap: Int, while waiting: () throws(MMLogError) -> Bool) throws(MMLogError) {
        var pause = first
        while try waiting() {
            sleep(nanoseconds: pause)
            pause = min(pause * 2, cap)
        }
    }

    /// How far the tests moved MMLog's clock ahead (both clocks below): one place through
    /// which every time MMLog reads passes, so a test can run a month in a second.
    package static let clockShiftNanoseconds = UnsafeAtomic<UInt64>.create(0)

    static func monotonicNanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return (UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)) &+ clockShiftNanoseconds.load(ordering: .relaxed)
    }

    static func realtimeSeconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return UInt64(clamping: ts.tv_sec) &+ clockShiftNanoseconds.load(ordering: .relaxed) / 1_000_000_000
    }

    /// This boot's id (16 bytes from /proc/sys/kernel/random/boot_id), or zeros where unknown.
    static let bootID: [UInt8] = {
        let fd = Glibc.open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return [UInt8](repeating: 0, count: 16) }
        defer { Glibc.close(fd) }
        var text = [UInt8](repeating: 0, count: 64)
        let n = text.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        let hex = text.prefix(max(0, n)).filter { $0 != UInt8(ascii: "-") && $0 != UInt8(ascii: "\n") }
        func nibble(_ c: UInt8) -> UInt8 {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
            default: return 0
            }
        }
        guard hex.count >= 32 else { return [UInt8](repeating: 0, count: 16) }
        return (0..<16).map { nibble(hex[hex.startIndex + 2 * $0]) << 4 | nibble(hex[hex.startIndex + 2 * $0 + 1]) }
    }()

    static var pageSize: Int { Int(sysconf(Int32(_SC_PAGESIZE))) }
}
