#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// How a child process ended.
public struct ExitStatus: CustomStringConvertible, Equatable, Sendable {
    public var code: Int32?      // exit code, when it exited
    public var signal: Int32?    // terminating signal, when it was killed

    public var succeeded: Bool { code == 0 }
    public var description: String {
        if let code { return "exit \(code)" }
        return "signal \(signal ?? -1)"
    }
}

/// A child started with posix_spawn (safe from a multithreaded test runner, unlike fork).
public struct Child: Sendable {
    public let pid: pid_t
    public let stderrPath: String

    /// Waits for the child; returns its status and what it wrote to stderr.
    public func wait() -> (status: ExitStatus, stderr: String) {
        var raw: Int32 = 0
        while waitpid(pid, &raw, 0) < 0 && errno == EINTR {}
        let status: ExitStatus
        if raw & 0x7f == 0 {
            status = ExitStatus(code: (raw >> 8) & 0xff, signal: nil)
        } else {
            status = ExitStatus(code: nil, signal: raw & 0x7f)
        }
        let text = readText(stderrPath)
        unlink(stderrPath)
        return (status, text)
    }

    public func kill(_ signal: Int32 = SIGKILL) {
        _ = Glibc.kill(pid, signal)
    }
}

/// The directory holding the built products (the test bundle sits beside the executables).
public func productsDirectory() -> String {
    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    precondition(n > 0, "readlink(/proc/self/exe) failed")
    let exe = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return String(exe[..<exe.lastIndex(of: "/")!])
}

/// Path of a built executable product, e.g. `mmlog-writer`.
public func product(_ name: String) -> String {
    productsDirectory() + "/" + name
}

/// Starts `executable` with `arguments`; stdout goes to /dev/null, stderr is kept for `wait()`.
public func spawn(_ executable: String, _ arguments: [String], stdoutPath: String = "/dev/null") -> Child {
    let stderrPath = "/tmp/appendbench-test-stderr-\(getpid())-\(nextSpawnID())"
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, stdoutPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    posix_spawn_file_actions_addopen(&actions, 2, stderrPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    let argv = ([executable] + arguments).map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    // A child that crashes (a SIGBUS a test looks for) dies at once, without the Swift
    // runtime's backtracer, which can hang on a process whose other threads crash too.
    var environment: [String] = []
    var index = 0
    while let entry = environ[index] {
        environment.append(String(cString: entry))
        index += 1
    }
    if !environment.contains(where: { $0.hasPrefix("SWIFT_BACKTRACE=") }) { environment.append("SWIFT_BACKTRACE=enable=no") }
    let envp = environment.map { strdup($0) } + [nil]
    defer { envp.forEach { free($0) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, executable, &actions, nil, argv, envp)
    precondition(rc == 0, "posix_spawn(\(executable)): \(String(cString: strerror(rc)))")
    return Child(pid: pid, stderrPath: stderrPath)
}

/// Runs a command to completion; returns its status, stdout and stderr.
public func run(_ executable: String, _ arguments: [String]) -> (status: ExitStatus, stdout: String, stderr: String) {
    let stdoutPath = "/tmp/appendbench-test-stdout-\(getpid())-\(nextSpawnID())"
    let child = spawn(executable, arguments, stdoutPath: stdoutPath)
    let (status, stderr) = child.wait()
    let stdout = readText(stdoutPath)
    unlink(stdoutPath)
    return (status, stdout, stderr)
}

private let spawnCounter = Atomic<Int>(0)

private func nextSpawnID() -> Int {
    spawnCounter.add(1, ordering: .relaxed).newValue
}

/// The bytes of a file ([] when it does not exist).
public func readBytes(_ path: String) -> [UInt8] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    if fd < 0 { return [] }
    defer { close(fd) }
    var result: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n <= 0 { break }
        result.append(contentsOf: chunk[0..<n])
    }
    return result
}

public func readText(_ path: String) -> String {
    String(decoding: readBytes(path), as: UTF8.self)
}

/// Writes `bytes` to `path`, replacing it.
public func writeBytes(_ path: String, _ bytes: [UInt8]) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    precondition(fd >= 0, "open(\(path)) failed")
    defer { close(fd) }
    bytes.withUnsafeBytes { _ = write(fd, $0.baseAddress, $0.count) }
}

public func fileSize(_ path: String) -> Int? {
    var st = stat()
    return stat(path, &st) == 0 ? Int(st.st_size) : nil
}

/// A fresh directory under /tmp (or `parent`), removed by `remove()`.
public struct ScratchDirectory {
    public let path: String

    public init(_ name: String = "appendbench-test", parent: String = "/tmp") {
        var template = Array("\(parent)/\(name)-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { buffer -> String? in
            guard let dir = mkdtemp(buffer.baseAddress!) else { return nil }
            return String(cString: dir)
        }
        guard let made else { fatalError("mkdtemp(\(parent)/\(name)-XXXXXX) failed") }
        path = made
    }

    public func file(_ name: String) -> String { path + "/" + name }

    public func remove() {
        _ = run("/bin/rm", ["-rf", path])
    }
}

public func nowNanoseconds(_ clock: clockid_t = CLOCK_REALTIME) -> UInt64 {
    var ts = timespec()
    clock_gettime(clock, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// Children watched without blocking: `poll()` reaps those that have ended and keeps their
/// status, so a test can follow a log while its writers run.
public final class Watched {
    public let children: [Child]
    public private(set) var statuses: [Int: ExitStatus] = [:]
    /// What each reaped child wrote to stderr.
    public private(set) var stderrs: [Int: String] = [:]
    /// CLOCK_MONOTONIC time the last child was seen ended.
    public private(set) var lastExit: UInt64 = 0

    public init(_ children: [Child]) { self.children = children }

    /// Reaps what has ended; returns whether all have.
    @discardableResult
    public func poll() -> Bool {
        for (i, child) in children.enumerated() where statuses[i] == nil {
            var raw: Int32 = 0
            if waitpid(child.pid, &raw, WNOHANG) == child.pid {
                statuses[i] = raw & 0x7f == 0 ? ExitStatus(code: (raw >> 8) & 0xff, signal: nil) : ExitStatus(code: nil, signal: raw & 0x7f)
                stderrs[i] = readText(child.stderrPath)
                unlink(child.stderrPath)  // reaped here, so never through `Child.wait()`
                lastExit = nowNanoseconds(CLOCK_MONOTONIC)
            }
        }
        return statuses.count == children.count
    }

    /// Waits for every child; returns their statuses in order.
    public func waitAll() -> [ExitStatus] {
        while !poll() { usleep(10_000) }
        return children.indices.map { statuses[$0]! }
    }
}

/// The paths a process has open (from /proc/PID/fd).
public func openFiles(of pid: pid_t) -> [String] {
    guard let dir = opendir("/proc/\(pid)/fd") else { return [] }
    defer { closedir(dir) }
    var paths: [String] = []
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/\(pid)/fd/\(name)", &buffer, buffer.count - 1)
        if n > 0 { paths.append(String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)) }
    }
    return paths
}

/// Waits (up to `seconds`) until `pid` has `path` open: a follower is ready.
public func waitUntil(_ pid: pid_t, hasOpen path: String, seconds: Double = 10) {
    let deadline = nowNanoseconds(CLOCK_MONOTONIC) + UInt64(seconds * 1e9)
    while !openFiles(of: pid).contains(path) && nowNanoseconds(CLOCK_MONOTONIC) < deadline { usleep(10_000) }
}
