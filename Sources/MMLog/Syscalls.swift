#if canImport(Glibc)
import Glibc
#endif
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

enum Sys {
    static func open(_ path: String, _ flags: Int32, _ mode: mode_t = 0o644) throws(MMLogError) -> Int32 {
        try valueOrErrno("open(\(path))") { Glibc.open(path, flags | O_CLOEXEC, mode) }
    }

    static func close(_ fd: Int32) {
        _ = Glibc.close(fd)  // never retried: Linux releases the fd even on EINTR
    }

    static func size(_ fd: Int32, _ path: String) throws(MMLogError) -> Int {
        var st = stat()
        _ = try valueOrErrno("fstat(\(path))") { fstat(fd, &st) }
        return Int(st.st_size)
    }

    static func ftruncate(_ fd: Int32, _ length: Int, _ path: String) throws(MMLogError) {
        _ = try valueOrErrno("ftruncate(\(path), \(length))") { Glibc.ftruncate(fd, off_t(length)) }
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

    /// Maps `length` bytes of `fd` at `offset`, shared and writable. With `hugePages`, at an
    /// address aligned to 2 MiB (or to `length` when smaller) and advised MADV_HUGEPAGE, so
    /// the page cache can use 2 MiB folios mapped by single page table entries.
    static func mapShared(_ fd: Int32, _ length: Int, _ offset: Int, _ path: String,
                          hugePages: Bool = false) throws(MMLogError) -> UnsafeMutableRawPointer {
        let align = hugePages ? min(length, 2 << 20) : 0
        guard let p = mmlog_map_aligned(fd, length, off_t(offset), align, hugePages ? 1 : 0), p != MAP_FAILED else {
            throw MMLogError.system("mmap(\(path), \(length), \(offset))", mmlog_errno())
        }
        return p
    }

    static func unmap(_ address: UnsafeMutableRawPointer, _ length: Int) {
        _ = munmap(address, length)
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

    static var pageSize: Int { Int(sysconf(Int32(_SC_PAGESIZE))) }
}
