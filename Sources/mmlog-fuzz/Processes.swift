// Child processes with a deadline: every entry point mmlog-fuzz exercises runs in one, so a
// trap is a signal it counts and a hang a timeout it kills, never the end of the run.
#if canImport(Glibc)
import Glibc
#endif
import ToolSupport

/// How a child ended, what it printed.
struct Ran {
    enum End: Equatable {
        case exited(Int32)
        case signaled(Int32)
        case timedOut
    }
    var end: End
    var stdout: [UInt8]
    var stderr: String

    var stdoutText: String { String(decoding: stdout, as: UTF8.self) }
}

/// The directory holding this executable (and the other products: mmlog, mmlog-writer).
let productsDirectory: String = {
    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    if n <= 0 { fail("readlink(/proc/self/exe): \(String(cString: strerror(errno)))") }
    let exe = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return String(exe[..<exe.lastIndex(of: "/")!])
}()

func product(_ name: String) -> String { productsDirectory + "/" + name }

/// Whether children print the Swift runtime's backtrace when they trap (slow: about a second
/// per crash; `--backtrace` turns it on to find the trapping line).
nonisolated(unsafe) var childBacktraces = false

private nonisolated(unsafe) var spawnCount = 0

/// Starts `executable` with `arguments`, its stdout and stderr in files under `scratch`.
func start(_ executable: String, _ arguments: [String], scratch: String) -> (pid: pid_t, out: String, err: String) {
    spawnCount += 1
    let out = "\(scratch)/child-\(spawnCount).out", err = "\(scratch)/child-\(spawnCount).err"
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    posix_spawn_file_actions_addopen(&actions, 2, err, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    // Its own process group, so a hang is killed with everything it started.
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP))
    posix_spawnattr_setpgroup(&attributes, 0)
    let argv = ([executable] + arguments).map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    var environment: [String] = []
    var index = 0
    while let entry = environ[index] {
        let text = String(cString: entry)
        if !text.hasPrefix("SWIFT_BACKTRACE=") { environment.append(text) }
        index += 1
    }
    environment.append(childBacktraces ? "SWIFT_BACKTRACE=enable=yes,interactive=no,color=no" : "SWIFT_BACKTRACE=enable=no")
    let envp = environment.map { strdup($0) } + [nil]
    defer { envp.forEach { free($0) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
    if rc != 0 { fail("posix_spawn(\(executable)): \(String(cString: strerror(rc)))") }
    return (pid, out, err)
}

/// Waits for `pid` until `deadline` (CLOCK_MONOTONIC ns); kills its process group then.
func finish(_ pid: pid_t, deadline: UInt64) -> Ran.End {
    var status: Int32 = 0
    var pause: UInt32 = 200
    while true {
        let got = waitpid(pid, &status, WNOHANG)
        if got == pid { break }
        if got < 0 && errno != EINTR { fail("waitpid(\(pid)): \(String(cString: strerror(errno)))") }
        if monotonicNanoseconds() >= deadline {
            kill(-pid, SIGKILL)
            _ = retryingInterrupts { Int(waitpid(pid, &status, 0)) }
            return .timedOut
        }
        usleep(pause)
        pause = min(pause * 2, 20_000)
    }
    if status & 0x7f != 0 { return .signaled(status & 0x7f) }
    return .exited((status >> 8) & 0xff)
}

/// Runs a command to its end or its timeout.
func runChild(_ executable: String, _ arguments: [String], scratch: String, timeoutSeconds: Double) -> Ran {
    let (pid, out, err) = start(executable, arguments, scratch: scratch)
    let end = finish(pid, deadline: monotonicNanoseconds() + UInt64(timeoutSeconds * 1e9))
    defer { unlink(out); unlink(err) }
    return Ran(end: end, stdout: readFile(out), stderr: String(decoding: readFile(err), as: UTF8.self))
}

func signalName(_ signal: Int32) -> String {
    switch signal {
    case SIGILL: return "SIGILL"
    case SIGTRAP: return "SIGTRAP"
    case SIGBUS: return "SIGBUS"
    case SIGSEGV: return "SIGSEGV"
    case SIGABRT: return "SIGABRT"
    case SIGFPE: return "SIGFPE"
    case SIGKILL: return "SIGKILL"
    default: return "signal \(signal)"
    }
}

/// The first line of a crash report that names a source file of the log (a Swift runtime
/// "Fatal error" line, or a backtrace frame), to group crashes by where they trap.
func trapLocation(_ stderr: String) -> String? {
    let lines = stderr.split(separator: "\n")
    for line in lines where line.contains("Sources/MMLog/") || line.contains("Sources/mmlog/") {
        guard let at = line.firstRange(of: " at /") else { continue }
        let location = line[at.upperBound...]
        let short = location.firstRange(of: "Sources/").map { String(location[$0.lowerBound...]) } ?? String(location)
        // "  2 [ra] [thunk] 0x000055f1 MMLogStatus.init(...) + 7856 in mmlog at /path:126:24"
        let afterAddress = line.firstRange(of: " 0x").map { line[$0.upperBound...].drop { $0 != " " }.dropFirst() } ?? line[...]
        let function = afterAddress.firstRange(of: " + ").map { String(afterAddress[..<$0.lowerBound]) } ?? ""
        return "\(short) (\(function.prefix(100)))"
    }
    for line in lines where line.contains("Fatal error") {
        return String(line.trimmingPrefix(while: { $0 == " " }))
    }
    return nil
}

extension Substring {
    func trimmingPrefix(while predicate: (Character) -> Bool) -> Substring {
        var s = self
        while let first = s.first, predicate(first) { s = s.dropFirst() }
        return s
    }
}
