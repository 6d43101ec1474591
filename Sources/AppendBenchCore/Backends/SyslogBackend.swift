#if canImport(Glibc)
import Glibc
#endif
import BenchRecords
import ToolSupport

/// syslog: each worker sends every record as one RFC 3164 datagram, as glibc's syslog(3) sends
/// to /dev/log (`<14>Mmm dd hh:mm:ss appendbench[pid]: <record>`, facility user, priority
/// info), over a connected Unix datagram socket to a syslog-ng the run starts with a private
/// configuration, and goes on: syslog acknowledges nothing (fire and forget, as `cla-async`).
/// A worker waits only while the daemon's socket queue is full (`net.unix.max_dgram_qlen`
/// datagrams; syslog-ng stops reading while its file destination is behind: `flow-control`,
/// so nothing is dropped).
///
/// syslog-ng writes one line per message, `${MSG}\n`, to `<dir>/syslog.log` (the output; kept
/// with `--keep`); its configuration, socket and state live in `<dir>/.syslog-ng/`, removed
/// after the run. It needs no root. `--fsync-every N` sets the file destination's
/// `flush-lines(N)` and `fsync(yes)`: it writes at most N lines at a time and fsyncs after each
/// write. Total Time ends when `syslog.log` holds every line (its size is exact: records x
/// (size + 1)); the verifier then checks it line by line. Records are text (`.text`).
final class SyslogBackend: AppendBackend {
    static let key = "syslog"
    static let category = "syslog (fire and forget)"
    static let recordEncoding = RecordEncoding.text
    static let daemonPath = "/usr/sbin/syslog-ng"

    private let client: DaemonClient
    private let header = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 8)
    private var headerLength = 0
    private var headerSecond = -1
    private let tag: [UInt8]
    private let nothing = FixedBytes("")

    static func unsupportedReason(directory: String, config: BackendConfig) -> String? {
        if access(daemonPath, X_OK) != 0 { return "\(daemonPath) not found (apt-get install syslog-ng-core)" }
        return DaemonPaths.datagramReason(recordSize: config.recordSize + 64)
    }

    static func stride(directory: String, config: BackendConfig) throws -> Int { config.recordSize + 1 }

    static func outputFiles(for path: String) -> [String] { [path, DaemonPaths.beside(path, ".syslog-ng")] }

    static func tableNote(config: BackendConfig) -> String? {
        "syslog: workers send each record as one syslog(3) datagram to syslog-ng and do not wait for it to be written "
            + "(syslog acknowledges nothing); Total Time ends when syslog.log holds the last line"
            + (config.fsyncEvery > 0
                ? "; with --fsync-every \(config.fsyncEvery) syslog-ng wrote at most \(config.fsyncEvery) lines at a time "
                    + "and fsynced after each write (flush-lines, fsync(yes)), waited for by nobody." : ".")
    }

    static func prepareRun(config: inout BackendConfig, workers: Int) throws -> (any RunService)? {
        let scratch = DaemonPaths.beside(config.path, ".syslog-ng")
        removeTree(scratch)
        try makeDirectories(scratch)
        let socket = scratch + "/socket"
        let sync = config.fsyncEvery > 0 ? " flush-lines(\(config.fsyncEvery)) fsync(yes)" : " fsync(no)"
        let configuration = """
            @version: current
            # appendbench's private syslog-ng for one run of the syslog backend.
            options { stats-freq(0); log-msg-size(\(max(65536, config.recordSize + 1024))); use-dns(no); dns-cache(no);
                      keep-timestamp(yes); create-dirs(no); };
            source s_workers { unix-dgram("\(socket)" so-rcvbuf(8388608)); };
            destination d_log { file("\(config.path)" template("${MSG}\\n")\(sync)); };
            log { source(s_workers); destination(d_log); flags(flow-control); };

            """
        let configPath = scratch + "/syslog-ng.conf"
        let fd = try openFile(configPath, O_WRONLY | O_CREAT | O_TRUNC)
        defer { Glibc.close(fd) }
        try writeAll(fd, configuration, configPath)
        let daemon = try LogDaemon(
            arguments: [daemonPath, "-F", "--no-caps", "-f", configPath, "-p", scratch + "/pid", "-c", scratch + "/control",
                        "-R", scratch + "/persist"],
            output: scratch + "/daemon.log")
        do {
            try daemon.waitUntil("its socket existed") { access(socket, F_OK) == 0 }
        } catch {
            removeTree(scratch)
            throw error
        }
        config.serviceAddress = socket
        let path = config.path, expectedBytes = config.totalBytes + config.totalBytes / max(config.recordSize, 1)
        func size() -> Int {
            var st = stat()
            return stat(path, &st) == 0 ? Int(st.st_size) : 0
        }
        return LogDaemonRun(daemon: daemon, scratch: scratch, allStored: { size() >= expectedBytes },
                            stored: { "\(path) holds \(size()) of \(expectedBytes) bytes" })
    }

    init(config: BackendConfig) throws {
        guard let socket = config.serviceAddress else {
            throw HarnessError("syslog has no daemon to send to (its prepareRun was not called)")
        }
        client = try DaemonClient(socketPath: socket, daemon: "syslog-ng")
        tag = Array(" appendbench[\(getpid())]: ".utf8)
    }

    deinit { header.deallocate() }

    /// `<14>Mmm dd hh:mm:ss appendbench[pid]: `, as syslog(3) formats it (local time, the day
    /// padded with a space); made again only when the second changes.
    @inline(__always)
    private func currentHeader() -> UnsafeRawBufferPointer {
        var now = time(nil)
        if now != headerSecond {
            headerSecond = now
            var parts = tm()
            localtime_r(&now, &parts)
            var stamp = [CChar](repeating: 0, count: 32)
            let length = strftime(&stamp, stamp.count, "<14>%h %e %T", &parts)
            let bytes = stamp.prefix(length).map { UInt8(bitPattern: $0) } + tag
            bytes.withUnsafeBytes { header.copyMemory(from: $0) }
            headerLength = bytes.count
        }
        return UnsafeRawBufferPointer(rebasing: header[0..<headerLength])
    }

    @inline(__always)
    func append(_ record: UnsafeRawBufferPointer) throws {
        try client.send(currentHeader(), record, nothing.bytes)
    }

    func finish() throws {}
    func sync() throws {}

    func close() throws {
        try client.close()
    }
}
