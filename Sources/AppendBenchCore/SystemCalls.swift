#if canImport(Glibc)
import Glibc
#endif
import CBackends
import ToolSupport

// The harness's system calls, in one place: each throws a `HarnessError` naming the
// operation, its arguments and errno, and interrupted calls are retried in one helper,
// ToolSupport's `retryingInterrupts` (which the package's tools share), never in loops of
// their own. (The C side has its one place too: CBackends/cb_internal.h.) Backends make the calls peculiar to them (io_submit, an O_DIRECT
// write, a mapping of the whole output) themselves, with the same error and the same helper.

// MARK: The error

/// A failure in the harness or in a backend: the operation that failed with its arguments,
/// and errno where a system call set one, e.g. `write(/dev/full, 64): No space left on device
/// (errno 28)`. Without errno it is a sentence saying what went wrong.
public struct HarnessError: Error, CustomStringConvertible, Sendable {
    public var operation: String
    public var errno: Int32?

    public init(_ operation: String, errno: Int32? = nil) {
        self.operation = operation
        self.errno = errno
    }

    /// The error of a failed C call, from the calling thread's errno.
    public static func system(_ operation: String) -> HarnessError {
        HarnessError(operation, errno: Glibc.errno)
    }

    public var description: String {
        guard let errno else { return operation }
        return "\(operation): \(String(cString: strerror(errno))) (errno \(errno))"
    }
}

// MARK: Files and directories

/// Opens `path` with `flags` (and O_CLOEXEC), creating it with `mode` when `flags` say so.
/// The corresponding C function is `open`.
func openFile(_ path: String, _ flags: Int32, mode: mode_t = 0o644) throws -> Int32 {
    let fd = Int32(retryingInterrupts { Int(open(path, flags | O_CLOEXEC, mode)) })
    if fd < 0 { throw HarnessError.system("open(\(path))") }
    return fd
}

/// Opens `path` for appending with extra `flags`; throws with the path and errno.
/// The corresponding C function is `open`.
func openForAppend(_ path: String, extraFlags: Int32 = 0) throws -> Int32 {
    try openFile(path, O_WRONLY | O_CREAT | O_APPEND | extraFlags)
}

/// Appends `bytes` with one `write`: a short write would leave a torn record another writer
/// lands after, so it is an error, not something to complete. The corresponding C function is `write`.
func appendOnce(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, _ path: String) throws {
    let n = retryingInterrupts { write(fd, bytes.baseAddress, bytes.count) }
    if n < 0 { throw HarnessError.system("write(\(path), \(bytes.count))") }
    if n != bytes.count { throw HarnessError("write(\(path), \(bytes.count)) wrote \(n) bytes") }
}

/// Writes all of `bytes`, continuing after a short write: for reports and scratch files,
/// never for records (`appendOnce`). The corresponding C function is `write`.
func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, _ path: String) throws {
    var done = 0
    while done < bytes.count {
        let n = retryingInterrupts { write(fd, bytes.baseAddress! + done, bytes.count - done) }
        if n <= 0 { throw HarnessError.system("write(\(path))") }
        done += n
    }
}

/// Writes all of `text`'s UTF-8 bytes. The corresponding C function is `write`.
func writeAll(_ fd: Int32, _ text: String, _ path: String) throws {
    var text = text
    try text.withUTF8 { try writeAll(fd, UnsafeRawBufferPointer($0), path) }
}

/// Up to `count` bytes of `fd` from `offset`. The corresponding C function is `pread`.
func readAt(_ fd: Int32, count: Int, offset: Int, _ path: String) throws -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: count)
    let n = bytes.withUnsafeMutableBytes { buffer in retryingInterrupts { pread(fd, buffer.baseAddress, count, off_t(offset)) } }
    if n < 0 { throw HarnessError.system("pread(\(path), \(count), \(offset))") }
    return Array(bytes[0..<n])
}

/// The size of the open file `fd`. The corresponding C function is `fstat`.
func fileSize(_ fd: Int32, _ path: String) throws -> Int {
    var st = stat()
    if fstat(fd, &st) != 0 { throw HarnessError.system("fstat(\(path))") }
    return Int(st.st_size)
}

/// fdatasync(fd); throws with the path and errno. The corresponding C function is `fdatasync`.
func syncData(_ fd: Int32, _ path: String) throws {
    if retryingInterrupts({ Int(fdatasync(fd)) }) != 0 { throw HarnessError.system("fdatasync(\(path))") }
}

/// Closes `fd`, reporting failure (on some filesystems close reports deferred write errors).
/// Not retried: after EINTR the descriptor is already closed on Linux.
func closeChecked(_ fd: Int32, _ path: String) throws {
    if Glibc.close(fd) != 0 && errno != EINTR { throw HarnessError.system("close(\(path))") }
}

/// Removes a file if it exists.
func removeFile(_ path: String) {
    _ = unlink(path)
}

/// Creates `path` and its missing parents; throws with the failing component and errno.
/// The corresponding C function is `mkdir`.
public func makeDirectories(_ path: String) throws {
    var current = path.hasPrefix("/") ? "" : "."
    for component in path.split(separator: "/") {
        current += "/" + component
        if mkdir(current, 0o755) != 0 && errno != EEXIST {
            throw HarnessError.system("mkdir(\(current))")
        }
    }
    var st = stat()
    if stat(path, &st) != 0 || st.st_mode & S_IFMT != S_IFDIR {
        throw HarnessError("\(path) is not a directory")
    }
}

/// A new, empty directory `<$TMPDIR or /tmp>/<prefix>-XXXXXX`. The corresponding C function is `mkdtemp`.
func makeTemporaryDirectory(_ prefix: String) throws -> String {
    let base = getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp"
    var template = Array("\(base)/\(prefix)-XXXXXX".utf8CString)
    let made = template.withUnsafeMutableBufferPointer { buffer -> String? in
        mkdtemp(buffer.baseAddress!).map { String(cString: $0) }
    }
    guard let made else { throw HarnessError.system("mkdtemp(\(base)/\(prefix)-XXXXXX)") }
    return made
}

/// Lets the filesystem holding `directory` finish what earlier runs left it (the journal
/// commit that frees and discards a deleted output's blocks, dirty pages of kept outputs):
/// `syncfs`. Run before each measurement so one run's cleanup is not timed in the next.
/// Best effort. The corresponding C function is `syncfs`.
func settleFilesystem(_ directory: String) {
    guard let fd = try? openFile(directory, O_RDONLY | O_DIRECTORY) else { return }
    _ = cb_syncfs(fd)
    close(fd)
}

/// The device (major, minor) holding `path`'s filesystem, from `stat`'s st_dev.
func deviceNumbers(of path: String, special: Bool = false) -> (major: UInt32, minor: UInt32)? {
    var st = stat()
    guard stat(path, &st) == 0 else { return nil }
    // `special`: the device a block special file (/dev/loop0) stands for, not the one it is on.
    let dev = special ? UInt64(st.st_rdev) : UInt64(st.st_dev)
    // glibc's gnu_dev_major / gnu_dev_minor, which Swift cannot import (they are macros).
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & ~UInt64(0xfff))
    let minor = (dev & 0xff) | ((dev >> 12) & ~UInt64(0xff))
    return (UInt32(truncatingIfNeeded: major), UInt32(truncatingIfNeeded: minor))
}

// MARK: Processes and their CPU time

/// User and system CPU time, as `getrusage` and `wait4` report it. The total is exact (the
/// scheduler's runtime); the split between user and system is sampled at the timer tick.
public struct CPUTime: Sendable, Equatable {
    public var userNanoseconds: UInt64 = 0
    public var systemNanoseconds: UInt64 = 0

    public init(userNanoseconds: UInt64 = 0, systemNanoseconds: UInt64 = 0) {
        self.userNanoseconds = userNanoseconds
        self.systemNanoseconds = systemNanoseconds
    }

    init(_ usage: rusage) {
        func nanoseconds(_ t: timeval) -> UInt64 { UInt64(max(t.tv_sec, 0)) * 1_000_000_000 + UInt64(max(t.tv_usec, 0)) * 1000 }
        self.init(userNanoseconds: nanoseconds(usage.ru_utime), systemNanoseconds: nanoseconds(usage.ru_stime))
    }

    public var totalNanoseconds: UInt64 { userNanoseconds + systemNanoseconds }

    public static func + (a: CPUTime, b: CPUTime) -> CPUTime {
        CPUTime(userNanoseconds: a.userNanoseconds + b.userNanoseconds, systemNanoseconds: a.systemNanoseconds + b.systemNanoseconds)
    }

    /// `a` less `b`, each part at least zero (the sampled split may move between two readings).
    public static func - (a: CPUTime, b: CPUTime) -> CPUTime {
        CPUTime(userNanoseconds: a.userNanoseconds &- min(b.userNanoseconds, a.userNanoseconds),
                systemNanoseconds: a.systemNanoseconds &- min(b.systemNanoseconds, a.systemNanoseconds))
    }

    /// CPU time this process (all its threads, living and ended) has used so far.
    /// The corresponding C function is `getrusage(RUSAGE_SELF)`.
    static func ofThisProcess() -> CPUTime {
        var usage = rusage()
        _ = getrusage(RUSAGE_SELF.rawValue, &usage)
        return CPUTime(usage)
    }

    /// Stored in two words of shared memory (a worker's or helper's slot).
    func store(to address: UnsafeMutableRawPointer) {
        address.storeBytes(of: userNanoseconds, as: UInt64.self)
        (address + 8).storeBytes(of: systemNanoseconds, as: UInt64.self)
    }

    static func load(from address: UnsafeRawPointer) -> CPUTime {
        CPUTime(userNanoseconds: address.load(as: UInt64.self), systemNanoseconds: (address + 8).load(as: UInt64.self))
    }
}

/// How a child process ended, with the CPU time it used in all (wait4's rusage).
public struct ProcessExit: Sendable, CustomStringConvertible {
    /// The raw wait status.
    public var status: Int32
    public var cpu: CPUTime

    public var signal: Int32? { status & 0x7f != 0 ? status & 0x7f : nil }
    public var code: Int32? { signal == nil ? (status >> 8) & 0xff : nil }
    public var succeeded: Bool { code == 0 }

    public var description: String {
        if let signal { return "killed by signal \(signal) (\(String(cString: strsignal(signal))))" }
        return "exited with status \(code ?? -1)"
    }
}

/// Reaps one child: `pid`, or any child for -1. Blocks unless `wait` is false; returns nil
/// when none of the children asked for has exited yet (only without waiting), and throws when
/// there is no such child (ECHILD). The corresponding C function is `wait4`.
func reapChild(_ pid: pid_t = -1, wait: Bool) throws -> (pid: pid_t, exit: ProcessExit)? {
    var status: Int32 = 0
    var usage = rusage()
    let reaped = retryingInterrupts { Int(wait4(pid, &status, wait ? 0 : WNOHANG, &usage)) }
    if reaped < 0 { throw HarnessError.system("wait4(\(pid))") }
    if reaped == 0 { return nil }
    return (pid_t(reaped), ProcessExit(status: status, cpu: CPUTime(usage)))
}

/// Names this process for `ps` and /proc/PID/comm (15 bytes kept). Best effort.
func setProcessName(_ name: String) {
    _ = cb_set_process_name(name)
}

// MARK: Unix sequenced-packet sockets

/// A Unix socket in the abstract namespace (Linux): a name, not a file, so nothing is left in
/// the output directory and no path length limit applies beyond 107 bytes. It vanishes with
/// the last descriptor of its listener.
struct AbstractSocketAddress {
    let name: String

    /// Calls `body` with the sockaddr_un for `name` (a leading NUL, then the name) and its length.
    func withSocketAddress<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(name.utf8.prefix(MemoryLayout.size(ofValue: address.sun_path) - 1))
        withUnsafeMutableBytes(of: &address.sun_path) { path in
            path[0] = 0
            for (i, byte) in bytes.enumerated() { path[i + 1] = byte }
        }
        let length = socklen_t(MemoryLayout<sockaddr_un>.offset(of: \sockaddr_un.sun_path)! + 1 + bytes.count)
        return withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, length) } }
    }
}

/// A SOCK_SEQPACKET socket: connection-oriented, reliable, in order, and every `send` arrives
/// as one message. The corresponding C function is `socket`.
func seqpacketSocket(nonBlocking: Bool = false, _ purpose: String) throws -> Int32 {
    let type = Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | (nonBlocking ? Int32(SOCK_NONBLOCK.rawValue) : 0)
    let fd = socket(AF_UNIX, type, 0)
    if fd < 0 { throw HarnessError.system("socket(AF_UNIX, SOCK_SEQPACKET) for \(purpose)") }
    return fd
}

/// A non-blocking listening socket bound to `address`, with room for `backlog` connections
/// not yet accepted. The corresponding C functions are `bind` and `listen`.
func listenSeqpacket(_ address: AbstractSocketAddress, backlog: Int) throws -> Int32 {
    let fd = try seqpacketSocket(nonBlocking: true, "@\(address.name)")
    let bound = address.withSocketAddress { bind(fd, $0, $1) }
    if bound != 0 {
        let error = HarnessError.system("bind(@\(address.name))")
        Glibc.close(fd)
        throw error
    }
    if listen(fd, Int32(min(max(backlog, 1), Int(Int32.max)))) != 0 {
        let error = HarnessError.system("listen(@\(address.name), \(backlog))")
        Glibc.close(fd)
        throw error
    }
    return fd
}

/// A blocking socket connected to `address`. The corresponding C function is `connect`.
func connectSeqpacket(_ address: AbstractSocketAddress) throws -> Int32 {
    let fd = try seqpacketSocket("@\(address.name)")
    let connected = retryingInterrupts { Int(address.withSocketAddress { connect(fd, $0, $1) }) }
    if connected != 0 {
        let error = HarnessError.system("connect(@\(address.name))")
        Glibc.close(fd)
        throw error
    }
    return fd
}

/// Accepts one connection on the non-blocking `listener`, or returns nil when none is waiting.
/// The accepted socket blocks, and has no close-on-exec flag (accept4, which sets it, needs
/// _GNU_SOURCE): only for a process that never forks or execs. The corresponding C function
/// is `accept`.
func acceptConnection(_ listener: Int32, _ name: String) throws -> Int32? {
    let fd = retryingInterrupts { Int(accept(listener, nil, nil)) }
    if fd >= 0 { return Int32(fd) }
    if errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNABORTED { return nil }
    throw HarnessError.system("accept(\(name))")
}

/// Sends `bytes` as one message; a peer that is gone is EPIPE, never SIGPIPE.
/// The corresponding C function is `send` with `MSG_NOSIGNAL`.
func sendMessage(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, _ name: String) throws {
    let n = retryingInterrupts { send(fd, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL)) }
    if n < 0 { throw HarnessError.system("send(\(name), \(bytes.count))") }
    if n != bytes.count { throw HarnessError("send(\(name), \(bytes.count)) sent \(n) bytes") }
}

/// What `receiveMessage` found.
enum Received: Equatable {
    /// A message of this many bytes (more than the buffer holds when it was truncated).
    case message(Int)
    /// The peer closed the connection (or reset it).
    case closed
    /// Nothing to read now (only without waiting).
    case empty
}

/// Receives one message into `buffer`. With `wait` false it does not block. A truncated
/// message reports its whole length (MSG_TRUNC), so the caller can refuse it.
/// The corresponding C function is `recv`.
func receiveMessage(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, wait: Bool, _ name: String) throws -> Received {
    let flags = Int32(MSG_TRUNC) | (wait ? 0 : Int32(MSG_DONTWAIT))
    let n = retryingInterrupts { recv(fd, buffer.baseAddress, buffer.count, flags) }
    if n > 0 { return .message(n) }
    // Records are never empty, so a zero-length read is the end of the connection.
    if n == 0 { return .closed }
    switch errno {
    case EAGAIN, EWOULDBLOCK: return .empty
    case ECONNRESET: return .closed
    default: throw HarnessError.system("recv(\(name))")
    }
}

/// The send buffer a fresh SOCK_SEQPACKET socket gets (net.core.wmem_default): the largest
/// message it can carry is a little less. The corresponding C function is `getsockopt(SO_SNDBUF)`.
func seqpacketSendBufferBytes() -> Int? {
    guard let fd = try? seqpacketSocket("a probe") else { return nil }
    defer { Glibc.close(fd) }
    var bytes: Int32 = 0
    var length = socklen_t(MemoryLayout<Int32>.size)
    return getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, &length) == 0 ? Int(bytes) : nil
}

/// Whether one message of `size` bytes fits a SOCK_SEQPACKET socket here: sends one over a
/// fresh socket pair (the kernel refuses a message larger than the send buffer with EMSGSIZE).
func seqpacketCarries(_ size: Int) -> Bool {
    guard let buffer = seqpacketSendBufferBytes(), size <= buffer else { return false }
    var pair: [Int32] = [-1, -1]
    guard socketpair(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0 else { return false }
    defer { Glibc.close(pair[0]); Glibc.close(pair[1]) }
    let message = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 16)
    defer { message.deallocate() }
    message.initializeMemory(as: UInt8.self, repeating: 0)
    return send(pair[0], message.baseAddress, size, Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) == size
}

// MARK: Unix datagram sockets

/// A blocking SOCK_DGRAM socket connected to the socket file at `path`, as syslog(3) connects
/// to /dev/log: each `send` is one message, and a full receive queue blocks the sender (Unix
/// datagrams are never dropped). The corresponding C functions are `socket` and `connect`.
func connectDatagram(_ path: String) throws -> Int32 {
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.utf8)
    guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
        throw HarnessError("connect(\(path)): a Unix socket path has at most \(MemoryLayout.size(ofValue: address.sun_path) - 1) bytes; use a shorter --dir")
    }
    withUnsafeMutableBytes(of: &address.sun_path) { for (i, byte) in bytes.enumerated() { $0[i] = byte } }
    let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    if fd < 0 { throw HarnessError.system("socket(AF_UNIX, SOCK_DGRAM) for \(path)") }
    let connected = retryingInterrupts {
        Int(withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        })
    }
    if connected != 0 {
        let error = HarnessError.system("connect(\(path))")
        Glibc.close(fd)
        throw error
    }
    return fd
}

/// Sends the pieces `parts` as one datagram on the connected `fd`; a receiver that is gone is
/// ECONNREFUSED, never SIGPIPE. The corresponding C function is `sendmsg` with `MSG_NOSIGNAL`.
@inline(__always)
func sendDatagram(_ fd: Int32, _ parts: UnsafeMutableBufferPointer<iovec>, bytes: Int, _ name: String) throws {
    var message = msghdr()
    message.msg_iov = parts.baseAddress
    message.msg_iovlen = parts.count
    let n = retryingInterrupts { sendmsg(fd, &message, Int32(MSG_NOSIGNAL)) }
    if n < 0 { throw HarnessError.system("sendmsg(\(name), \(bytes))") }
    if n != bytes { throw HarnessError("sendmsg(\(name), \(bytes)) sent \(n) bytes") }
}

/// Removes `path`: a file, or a directory and everything below it (symbolic links are
/// removed, never followed). Best effort, like `removeFile`.
func removeTree(_ path: String) {
    var st = stat()
    guard lstat(path, &st) == 0 else { return }
    guard st.st_mode & S_IFMT == S_IFDIR else {
        _ = unlink(path)
        return
    }
    if let directory = opendir(path) {
        var names: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name != "." && name != ".." { names.append(name) }
        }
        closedir(directory)
        for name in names { removeTree(path + "/" + name) }
    }
    _ = rmdir(path)
}
