#if canImport(Glibc)
import Glibc
#endif
import BenchRecords
import CBackends
import ToolSupport

/// systemd's journal: each worker sends every record as one datagram of the native journal
/// protocol (what `sd_journal_sendv` sends: `MESSAGE=<record>`, `PRIORITY=6`,
/// `SYSLOG_IDENTIFIER=appendbench`, one `FIELD=value` line each) to a `systemd-journald` the run
/// starts for itself, and goes on: journald acknowledges nothing (fire and forget, as
/// `cla-async`). A worker waits only while journald's socket queue is full.
///
/// The daemon runs as root in a private mount namespace: a tmpfs on /run and on /var/log, its
/// runtime directory (`/run/systemd/journal`: sockets, the `flushed` flag that makes it write the
/// persistent journal at once) bound from `<dir>/.journald/run`, and its journal
/// (`/var/log/journal`) bound from `<dir>/journald/`, so `journalctl --directory <dir>/journald`
/// reads it (`--keep` leaves it). Rate limiting is off and storage persistent; `--fsync-every N`
/// sends every Nth record of each worker at priority `crit`, on which journald syncs its files.
///
/// Total Time ends when every record is in the journal: after the workers exit, the harness
/// sends an end marker on the same socket (one queue, read in order) and waits until it reads
/// the marker back with sd-journal (a reader kept open, following journald's growing files
/// through its inotify watches, polled every 200 us; and a fresh one every 100 ms, so that
/// nothing the open reader might miss can stall a run). The verifier then reads every record's MESSAGE from the
/// journal files (into `<dir>/journald.log`, one line each). Records are text (`.text`).
final class JournaldBackend: AppendBackend {
    static let key = "journald"
    static let category = "journald (fire and forget)"
    static let recordEncoding = RecordEncoding.text
    static let daemonPath = "/lib/systemd/systemd-journald"
    static let identifier = "appendbench"

    private let client: DaemonClient
    private let before = FixedBytes("MESSAGE=")
    private let afterInfo = FixedBytes("\nPRIORITY=6\nSYSLOG_IDENTIFIER=\(identifier)\n")
    private let afterCritical = FixedBytes("\nPRIORITY=2\nSYSLOG_IDENTIFIER=\(identifier)\n")
    private let criticalEvery: Int
    private var untilCritical: Int

    static func unsupportedReason(directory: String, config: BackendConfig) -> String? {
        if geteuid() != 0 { return "needs root: systemd-journald runs in a private mount namespace (unshare, mount) of the run" }
        if access(daemonPath, X_OK) != 0 { return "\(daemonPath) not found (apt-get install systemd)" }
        var error = [CChar](repeating: 0, count: 256)
        if cb_journal_available(&error, error.count) != 0 {
            return "reading the journal back needs libsystemd (apt-get install libsystemd0): \(cString(error))"
        }
        return DaemonPaths.datagramReason(recordSize: config.recordSize + 64)
    }

    static func stride(directory: String, config: BackendConfig) throws -> Int { config.recordSize + 1 }

    static func outputFiles(for path: String) -> [String] {
        [path, DaemonPaths.beside(path, "journald"), DaemonPaths.beside(path, ".journald")]
    }

    static func tableNote(config: BackendConfig) -> String? {
        "journald: workers send each record as one native-protocol datagram and do not wait for it to be stored "
            + "(journald acknowledges nothing); Total Time ends when the journal holds the last record"
            + (config.fsyncEvery > 0
                ? "; with --fsync-every \(config.fsyncEvery) every \(config.fsyncEvery)th record of each worker went at "
                    + "priority crit, on which journald syncs its files (nobody waits for it)." : ".")
    }

    static func prepareRun(config: inout BackendConfig, workers: Int) throws -> (any RunService)? {
        try JournaldRun.start(config: &config)
    }

    init(config: BackendConfig) throws {
        guard let socket = config.serviceAddress else {
            throw HarnessError("journald has no daemon to send to (its prepareRun was not called)")
        }
        client = try DaemonClient(socketPath: socket, daemon: "systemd-journald")
        criticalEvery = config.fsyncEvery
        untilCritical = config.fsyncEvery
    }

    @inline(__always)
    func append(_ record: UnsafeRawBufferPointer) throws {
        var after = afterInfo
        if criticalEvery > 0 {
            untilCritical -= 1
            if untilCritical == 0 {
                untilCritical = criticalEvery
                after = afterCritical
            }
        }
        try client.send(before.bytes, record, after.bytes)
    }

    func finish() throws {}
    func sync() throws {}

    func close() throws {
        try client.close()
    }
}

/// The run's systemd-journald and what the harness does with its journal.
enum JournaldRun {
    static func start(config: inout BackendConfig) throws -> LogDaemonRun {
        let scratch = DaemonPaths.beside(config.path, ".journald")
        let runtime = scratch + "/run", journal = DaemonPaths.beside(config.path, "journald")
        removeTree(scratch)
        removeTree(journal)
        try makeDirectories(runtime)
        try makeDirectories(journal)
        // journald writes the persistent journal at once only when the runtime directory holds
        // this flag (else it waits for `journalctl --flush`).
        let flag = try openFile(runtime + "/flushed", O_WRONLY | O_CREAT)
        close(flag)
        let expectedBytes = config.totalBytes
        let settings = """
            [Journal]
            Storage=persistent
            RateLimitIntervalSec=0
            RateLimitBurst=0
            SystemMaxUse=\(max(4 << 30, 8 * expectedBytes))
            SystemKeepFree=0
            MaxLevelStore=debug
            ReadKMsg=no
            ForwardToSyslog=no
            ForwardToKMsg=no
            ForwardToConsole=no
            ForwardToWall=no

            """
        let daemon = try LogDaemon(
            arguments: [JournaldBackend.daemonPath], output: scratch + "/daemon.log",
            mounts: [
                .tmpfs("/run"), .directory("/run/systemd"), .directory("/run/systemd/journal"),
                .directory("/run/systemd/journald.conf.d"),
                .file("/run/systemd/journald.conf.d/appendbench.conf", text: settings),
                .bind(runtime, on: "/run/systemd/journal"),
                .tmpfs("/var/log"), .directory("/var/log/journal"), .bind(journal, on: "/var/log/journal"),
            ])
        let socket = runtime + "/socket"
        do {
            try daemon.waitUntil("its socket and journal file existed") {
                access(socket, F_OK) == 0 && journalFileExists(journal)
            }
        } catch {
            daemon.stop()
            removeTree(scratch)
            throw error
        }
        config.serviceAddress = socket
        let path = config.path
        var reader: OpaquePointer?
        var freshCheckAt: UInt64 = 0
        let marker = "APPENDBENCH_END=\(getpid())-\(monotonicNanoseconds())"
        let expected = config.totalBytes / max(config.recordSize, 1)
        return LogDaemonRun(
            daemon: daemon, scratch: scratch,
            markEnd: {
                let client = try DaemonClient(socketPath: socket, daemon: "systemd-journald")
                try client.send("MESSAGE=appendbench: every record of the run was sent before this\n\(marker)\n"
                                + "SYSLOG_IDENTIFIER=appendbench-harness\n")
                try client.close()
                reader = try openJournal(journal, match: marker)
                freshCheckAt = monotonicNanoseconds() + 100_000_000
            },
            allStored: {
                var found = cb_journal_skip_new(reader)
                if found == 0 && monotonicNanoseconds() > freshCheckAt {
                    found = try count(in: journal, match: marker)
                    freshCheckAt = monotonicNanoseconds() + 100_000_000
                }
                if found < 0 { throw HarnessError("sd_journal_next(\(journal))", errno: Int32(-found)) }
                if found > 0 { cb_journal_close(reader); reader = nil }
                return found > 0
            },
            collect: {
                if let open = reader { cb_journal_close(open); reader = nil }
                try exportMessages(from: journal, to: path)
            },
            stored: {
                let records = (try? count(in: journal, match: "SYSLOG_IDENTIFIER=\(JournaldBackend.identifier)")).map(String.init) ?? "?"
                let ends = (try? count(in: journal, match: marker)).map(String.init) ?? "?"
                return "the journal holds \(records) of \(expected) records and \(ends) end marker(s)"
            })
    }

    /// Entries matching `match` in the journal files under `directory` now (a fresh reader), or
    /// a negative errno.
    private static func count(in directory: String, match: String) throws -> Int {
        let fresh = try openJournal(directory, match: match)
        defer { cb_journal_close(fresh) }
        return cb_journal_skip_new(fresh)
    }

    /// Whether journald has opened a journal file under `directory` (`<machine-id>/system.journal`).
    private static func journalFileExists(_ directory: String) -> Bool {
        guard let top = opendir(directory) else { return false }
        defer { closedir(top) }
        while let entry = readdir(top) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name.count == 32 && access("\(directory)/\(name)/system.journal", F_OK) == 0 { return true }
        }
        return false
    }

    private static func openJournal(_ directory: String, match: String) throws -> OpaquePointer {
        var error = [CChar](repeating: 0, count: 512)
        guard let journal = cb_journal_open(directory, match, &error, error.count) else {
            throw HarnessError(cString(error))
        }
        return journal
    }

    /// Writes the MESSAGE of every entry the workers sent, in journal order, one line each, to
    /// `path`: what `journalctl --directory <dir>/journald -o cat SYSLOG_IDENTIFIER=appendbench`
    /// prints.
    static func exportMessages(from directory: String, to path: String) throws {
        let journal = try openJournal(directory, match: "SYSLOG_IDENTIFIER=\(JournaldBackend.identifier)")
        defer { cb_journal_close(journal) }
        let fd = try openFile(path, O_WRONLY | O_CREAT | O_TRUNC)
        defer { close(fd) }
        var buffer: [UInt8] = []
        buffer.reserveCapacity(1 << 20)
        var data: UnsafeRawPointer?
        var length = 0
        while true {
            let r = cb_journal_next_field(journal, "MESSAGE", &data, &length)
            if r < 0 { throw HarnessError("sd_journal_get_data(\(directory), MESSAGE)", errno: -r) }
            if r == 0 { break }
            buffer.append(contentsOf: UnsafeRawBufferPointer(start: data, count: length))
            buffer.append(0x0A)
            if buffer.count >= 1 << 20 {
                try buffer.withUnsafeBytes { try writeAll(fd, $0, path) }
                buffer.removeAll(keepingCapacity: true)
            }
        }
        try buffer.withUnsafeBytes { try writeAll(fd, $0, path) }
    }
}
