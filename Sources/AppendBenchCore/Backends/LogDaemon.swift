#if canImport(Glibc)
import Glibc
#endif
import CBackends
import ToolSupport

/// A log daemon one run starts for its workers (systemd-journald for `journald`, syslog-ng for
/// `syslog`): a child of the harness, with its standard output and error in a file of the run's
/// scratch directory, optionally in a private mount namespace (`cb_spawn_daemon`). It gets
/// SIGTERM if the harness dies, so it never outlives a run; its namespace and every mount in it
/// die with it.
final class LogDaemon {
    /// One step of the daemon's private mount namespace (`cb_mount_step`).
    struct MountStep {
        var kind: cb_mount_kind
        var path: String
        var source: String = ""

        static func tmpfs(_ path: String) -> MountStep { MountStep(kind: CB_MOUNT_TMPFS, path: path) }
        static func directory(_ path: String) -> MountStep { MountStep(kind: CB_MOUNT_MKDIR, path: path) }
        static func bind(_ source: String, on path: String) -> MountStep { MountStep(kind: CB_MOUNT_BIND, path: path, source: source) }
        static func file(_ path: String, text: String) -> MountStep { MountStep(kind: CB_MOUNT_WRITE, path: path, source: text) }
    }

    let pid: pid_t
    /// The program's name, for messages ("systemd-journald").
    let name: String
    /// Where its standard output and error go.
    let outputPath: String
    private var exit: ProcessExit?

    /// Starts `arguments[0]` (an absolute path); returns once it has been exec'd.
    init(arguments: [String], output: String, mounts: [MountStep] = []) throws {
        name = String(arguments[0].split(separator: "/").last ?? "")
        outputPath = output
        var strings: [UnsafeMutablePointer<CChar>?] = []
        defer { strings.forEach { free($0) } }
        func keep(_ text: String) -> UnsafeMutablePointer<CChar>? {
            strings.append(strdup(text))
            return strings.last!
        }
        let argv = arguments.map(keep) + [nil]
        let steps = mounts.map { cb_mount_step(kind: $0.kind, path: keep($0.path), source: keep($0.source)) }
        var error = [CChar](repeating: 0, count: 512)
        let child = argv.withUnsafeBufferPointer { argv in
            steps.withUnsafeBufferPointer { steps in
                cb_spawn_daemon(argv.baseAddress, output, steps.baseAddress, Int32(steps.count), &error, error.count)
            }
        }
        if child < 0 {
            throw HarnessError("starting \(arguments.joined(separator: " ")): \(cString(error))")
        }
        pid = child
    }

    /// The CPU time it has used so far, or nil when it is gone. The total is the scheduler's
    /// runtime of its threads (/proc/PID/task/*/schedstat, in nanoseconds), or the clock-tick
    /// count of /proc/PID/stat (10 ms at 100 Hz; it also keeps the time of threads that have
    /// ended) when that is larger; the user/system split is the tick count's, as wait4's is.
    /// The corresponding C interface is proc_pid_stat(5).
    func cpu() -> CPUTime? {
        guard let bytes = readFileBytes("/proc/\(pid)/stat"), let close = bytes.lastIndex(of: UInt8(ascii: ")")) else { return nil }
        // After "pid (comm)": state is field 3, utime 14, stime 15.
        let fields = bytes[(close + 1)...].split(separator: UInt8(ascii: " "))
        guard fields.count > 12, let userTicks = UInt64(String(decoding: fields[11], as: UTF8.self)),
              let systemTicks = UInt64(String(decoding: fields[12], as: UTF8.self))
        else { return nil }
        let tick = 1_000_000_000 / UInt64(max(sysconf(Int32(_SC_CLK_TCK)), 1))
        let ticked = CPUTime(userNanoseconds: userTicks * tick, systemNanoseconds: systemTicks * tick)
        let runtime = threadRuntime()
        guard runtime > ticked.totalNanoseconds else { return ticked }
        let user = ticked.totalNanoseconds == 0
            ? runtime : UInt64(Double(runtime) * Double(ticked.userNanoseconds) / Double(ticked.totalNanoseconds))
        return CPUTime(userNanoseconds: user, systemNanoseconds: runtime - user)
    }

    /// Nanoseconds on CPU of its living threads (the first field of each /proc/PID/task/TID/schedstat).
    private func threadRuntime() -> UInt64 {
        guard let tasks = opendir("/proc/\(pid)/task") else { return 0 }
        defer { closedir(tasks) }
        var total: UInt64 = 0
        while let entry = readdir(tasks) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard name.first?.isNumber == true, let bytes = readFileBytes("/proc/\(pid)/task/\(name)/schedstat"),
                  let first = bytes.split(separator: UInt8(ascii: " ")).first,
                  let nanoseconds = UInt64(String(decoding: first, as: UTF8.self))
            else { continue }
            total += nanoseconds
        }
        return total
    }

    /// How it ended, once it has (reaped here or handed over by the harness), else nil.
    func exited(reaped: ProcessExit? = nil) -> ProcessExit? {
        if exit == nil, let reaped { exit = reaped }
        if exit == nil, let (_, status) = try? reapChild(pid, wait: false) { exit = status }
        return exit
    }

    /// Stops it: SIGTERM (journald and syslog-ng then close their files cleanly), and SIGKILL
    /// after `patience` seconds. Returns how it ended.
    @discardableResult
    func stop(patience: Double = 10) -> ProcessExit? {
        if let exit { return exit }
        kill(pid, SIGTERM)
        let deadline = monotonicNanoseconds() + UInt64(patience * 1e9)
        while exited() == nil && monotonicNanoseconds() < deadline { usleep(1000) }
        if exit == nil {
            kill(pid, SIGKILL)
            exit = (try? reapChild(pid, wait: true))?.exit
        }
        return exit
    }

    /// The last lines of its output, for a failure message ("" when it wrote nothing).
    func lastOutput(lines: Int = 3) -> String {
        guard let bytes = readFileBytes(outputPath) else { return "" }
        let text = String(decoding: bytes, as: UTF8.self).split(separator: "\n").suffix(lines).joined(separator: " | ")
        return text.isEmpty ? "" : " (its output: \(text))"
    }

    /// Waits until `ready` holds, for at most `seconds`; throws when the daemon exits first or
    /// the time runs out.
    func waitUntil(_ what: String, seconds: Double = 15, _ ready: () -> Bool) throws {
        let deadline = monotonicNanoseconds() + UInt64(seconds * 1e9)
        while !ready() {
            if let exit = exited() { throw HarnessError("\(name) \(exit) before \(what)\(lastOutput())") }
            if monotonicNanoseconds() > deadline {
                stop()
                throw HarnessError("\(name) did not get to \(what) in \(Int(seconds)) s\(lastOutput())")
            }
            usleep(2000)
        }
    }
}

/// The run service of a backend whose workers send to a log daemon: after the workers exit,
/// waits until the daemon has stored every record (`allStored`), counts the daemon's CPU time
/// from when it was ready until then, stops it, lets the backend collect its output for the
/// verifier (`collect`), and removes the run's scratch directory.
///
/// A daemon acknowledges nothing, so only the daemon's output can say when the run is done:
/// Total Time ends when it holds the last record, not when the workers have sent it. A daemon
/// that stores nothing and uses no CPU for `stallLimitNanoseconds` fails the run.
final class LogDaemonRun: RunService {
    static let stallLimitNanoseconds: UInt64 = 30_000_000_000

    let daemon: LogDaemon
    private let scratch: String
    private let readyCPU: CPUTime
    /// Called once after the workers exited, before waiting (journald: the end marker).
    private let markEnd: () throws -> Void
    /// Whether the daemon has stored every record; called every 200 us while waiting.
    private let allStored: () throws -> Bool
    /// Called after the daemon has stopped, when it stored every record.
    private let collect: () throws -> Void
    /// What the daemon has stored, in words, for the message of a run that stalled.
    private let stored: () -> String
    var processes: [pid_t] { [daemon.pid] }

    init(daemon: LogDaemon, scratch: String, markEnd: @escaping () throws -> Void = {},
         allStored: @escaping () throws -> Bool, collect: @escaping () throws -> Void = {},
         stored: @escaping () -> String) {
        self.daemon = daemon
        self.scratch = scratch
        self.markEnd = markEnd
        self.allStored = allStored
        self.collect = collect
        self.stored = stored
        readyCPU = daemon.cpu() ?? CPUTime()
    }

    func finish(workersSucceeded: Bool, reaped: [pid_t: ProcessExit]) -> RunServiceOutcome {
        defer { removeTree(scratch) }
        var failures: [String] = []
        var finishedAt: UInt64?
        var cpu = CPUTime()
        if let exit = daemon.exited(reaped: reaped[daemon.pid]) {
            failures.append("\(daemon.name) (pid \(daemon.pid)) \(exit) during the run\(daemon.lastOutput())")
        } else if workersSucceeded {
            do {
                try markEnd()
                (finishedAt, cpu) = try waitUntilStored()
            } catch {
                failures.append("\(daemon.name) (pid \(daemon.pid)): \(error)\(daemon.lastOutput())")
            }
        }
        if finishedAt == nil { cpu = (daemon.cpu() ?? readyCPU) - readyCPU }
        daemon.stop()
        if finishedAt != nil {
            do { try collect() } catch { failures.append("reading back what \(daemon.name) stored: \(error)") }
        }
        return RunServiceOutcome(finishedAt: failures.isEmpty ? finishedAt : nil, cpu: cpu, failures: failures)
    }

    /// When the daemon had stored every record, and its CPU time from ready until then.
    private func waitUntilStored() throws -> (UInt64, CPUTime) {
        var lastCPU = daemon.cpu()
        var nextCheck = monotonicNanoseconds() + 100_000_000
        var deadline = monotonicNanoseconds() + Self.stallLimitNanoseconds
        while true {
            if try allStored() {
                let at = monotonicNanoseconds()
                return (at, (daemon.cpu() ?? readyCPU) - readyCPU)
            }
            let now = monotonicNanoseconds()
            if now > nextCheck {
                if let exit = daemon.exited() { throw HarnessError("\(exit) before storing every record") }
                let cpu = daemon.cpu()
                if cpu != lastCPU {
                    lastCPU = cpu
                    deadline = now + Self.stallLimitNanoseconds
                } else if now > deadline {
                    throw HarnessError("stored nothing and used no CPU for \(Self.stallLimitNanoseconds / 1_000_000_000) s "
                                         + "after the last worker exited (\(stored())); the harness stopped it")
                }
                nextCheck = now + 100_000_000
            }
            usleep(200)
        }
    }
}

/// Where a daemon backend keeps things, beside the run's output.
enum DaemonPaths {
    /// `<directory of path>/<name>`.
    static func beside(_ path: String, _ name: String) -> String {
        let directory = path.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        return (directory.isEmpty ? "." : directory) + "/" + name
    }

    /// Why a `bytes`-byte datagram cannot be sent here, or nil when it can (the same limit as a
    /// SOCK_SEQPACKET message: the send buffer, net.core.wmem_default).
    static func datagramReason(recordSize bytes: Int) -> String? {
        if seqpacketCarries(bytes) { return nil }
        return "a \(bytes)-byte datagram does not fit a Unix socket's send buffer here ("
            + "\(seqpacketSendBufferBytes().map(String.init) ?? "unknown") bytes, net.core.wmem_default)"
    }
}

/// A worker's end of a log daemon's datagram socket, with the pieces of each message: what
/// goes before the record and after it, in memory of its own for the life of the worker.
final class DaemonClient {
    private let socket: Int32
    let name: String
    private let parts = UnsafeMutableBufferPointer<iovec>.allocate(capacity: 3)

    init(socketPath: String, daemon: String) throws {
        name = "\(daemon) at \(socketPath)"
        socket = try connectDatagram(socketPath)
    }

    deinit { parts.deallocate() }

    /// Sends `before`, the record and `after` as one datagram.
    @inline(__always)
    func send(_ before: UnsafeRawBufferPointer, _ record: UnsafeRawBufferPointer, _ after: UnsafeRawBufferPointer) throws {
        parts[0] = iovec(iov_base: UnsafeMutableRawPointer(mutating: before.baseAddress), iov_len: before.count)
        parts[1] = iovec(iov_base: UnsafeMutableRawPointer(mutating: record.baseAddress), iov_len: record.count)
        parts[2] = iovec(iov_base: UnsafeMutableRawPointer(mutating: after.baseAddress), iov_len: after.count)
        try sendDatagram(socket, parts, bytes: before.count + record.count + after.count, name)
    }

    /// Sends `message` as one datagram (not for the hot path).
    func send(_ message: String) throws {
        let bytes = Array(message.utf8)
        try bytes.withUnsafeBytes { whole in
            let empty = UnsafeRawBufferPointer(rebasing: whole[0..<0])
            try send(empty, whole, empty)
        }
    }

    func close() throws {
        try closeChecked(socket, name)
    }
}

/// Bytes that live as long as their owner, for the fixed parts of a message.
final class FixedBytes {
    let buffer: UnsafeMutableRawBufferPointer

    let count: Int

    init(_ text: String) {
        let bytes = Array(text.utf8)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes.count, 1), alignment: 8)
        bytes.withUnsafeBytes { buffer.copyMemory(from: $0) }
        self.buffer = buffer
        count = bytes.count
    }
    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: buffer[0..<count]) }

    deinit { buffer.deallocate() }
}

/// The NUL-terminated text a C function left in `buffer`.
func cString(_ buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
