#if canImport(Glibc)
import Glibc
#endif
import BenchRecords
import MMLog

/// What every worker's backend is opened with.
public struct BackendConfig: Sendable {
    /// The output file (shared by all workers of a run).
    public var path: String
    /// Payload bytes per record.
    public var recordSize: Int
    /// Records gathered per call (writev) or per flush (fwrite). 1 = one call per record.
    public var batch: Int
    /// Records in flight (aio, uring). 1 = wait for each before the next.
    public var depth: Int
    /// What the `mmlog` backend opens its log with (`--chunk-size`, `--prefault`, ...).
    public var mmlog: MMLog.Options
    /// Bytes all workers of the run append together (procs x ops x record size); only the
    /// `floor` backend, which maps the whole output up front, needs it.
    public var totalBytes: Int
    /// `--fsync-every`, for a backend whose run service makes the records durable (the CLA's
    /// collector syncs every this many records it appends); 0: never. Workers get their
    /// `sync()` calls from the harness instead.
    public var fsyncEvery: Int
    /// Where the run's service listens, set by `prepareRun` for the workers forked after it
    /// (the CLA collector's socket name); nil when the backend has no service.
    public var serviceAddress: String?

    public init(path: String, recordSize: Int, batch: Int = 1, depth: Int = 1, mmlog: MMLog.Options = MMLog.Options(),
                totalBytes: Int = 0, fsyncEvery: Int = 0) {
        self.path = path
        self.recordSize = recordSize
        self.batch = batch
        self.depth = depth
        self.mmlog = mmlog
        self.totalBytes = totalBytes
        self.fsyncEvery = fsyncEvery
        self.serviceAddress = nil
    }
}

/// One way of appending records to a file: the harness knows backends only through this.
///
/// Lifecycle of a run: in the parent, `prepareRun` (optional; starts what the workers share,
/// such as a collector process). Then in each worker process: `init` opens the output (before
/// the start barrier, untimed), then `append` once per record, then `finish` (flush or reap
/// what is outstanding) and `close`, both timed. Then in the parent, after every worker has
/// exited, the run service's `finish` (optional; waits for its queue to drain). A failed or
/// short write throws; it is never counted as a success. Methods run on one thread.
public protocol AppendBackend: AnyObject, SendableMetatype {
    /// Registry key, as given to `--backends` (e.g. "write").
    static var key: String { get }
    /// The row name in the results table (e.g. "O_APPEND with write()").
    static var category: String { get }
    /// Why this backend cannot run for `config` in `directory`, or nil when it can.
    /// Called once in the parent before any worker starts; may create and remove probe files.
    static func unsupportedReason(directory: String, config: BackendConfig) -> String?
    /// Bytes each record occupies in the output: the record size, or more when padded.
    static func stride(directory: String, config: BackendConfig) throws -> Int
    /// Whether one worker's records land in the order it appended them (false when
    /// several writes are in flight at once and may complete out of order).
    static func preservesOrder(config: BackendConfig) -> Bool
    /// Whether the output holds the records afterwards (false only for `null`).
    static var writesRecords: Bool { get }
    /// Optional. How the workers spell their records: `.binary` (the default), or `.text` for a
    /// service that takes lines (no NUL, no newline; the output ends each with a newline, so
    /// `stride` is the record size + 1). See `RecordFormat`.
    static var recordEncoding: RecordEncoding { get }
    /// Optional. One sentence for the notes under the table when this backend ran (what its
    /// workers wait for, what `--fsync-every` does to it); nil by default.
    static func tableNote(config: BackendConfig) -> String?
    /// Optional. Every file a run with output `path` leaves behind: the output and whatever the
    /// backend keeps beside it (MMLog's metadata). The harness removes them before each run
    /// and after it (unless `--keep`). Default: `[path]`.
    static func outputFiles(for path: String) -> [String]
    /// Optional. Called in the parent once per run, before any worker forks (fio's engine
    /// `setup` hook): starts what every worker of the run shares (a process, a socket) and
    /// records in `config` how workers reach it; they are forked with the config as it is when
    /// this returns. Returns the run's service, which the harness finishes after the workers
    /// have exited (fio's `cleanup`), or nil: the default, nothing shared. Its time counts in
    /// Setup; a throw fails the run with the error.
    static func prepareRun(config: inout BackendConfig, workers: Int) throws -> (any RunService)?

    /// Opens the output for one worker.
    init(config: BackendConfig) throws
    /// Appends one record (`record.count == config.recordSize`). The buffer may be reused
    /// as soon as this returns: a backend that keeps writes in flight copies it.
    func append(_ record: UnsafeRawBufferPointer) throws
    /// Completes every outstanding append (flush buffers, reap completions).
    func finish() throws
    /// Makes every record appended so far durable: what finish does, then fdatasync (or
    /// msync for a mapping). Used by `--fsync-every`.
    func sync() throws
    /// Releases the output. Called once, after `finish` (or after a failure).
    func close() throws
}

extension AppendBackend {
    public static func unsupportedReason(directory: String, config: BackendConfig) -> String? { nil }
    public static func stride(directory: String, config: BackendConfig) throws -> Int { config.recordSize }
    public static func preservesOrder(config: BackendConfig) -> Bool { true }
    public static var writesRecords: Bool { true }
    public static var recordEncoding: RecordEncoding { .binary }
    public static func tableNote(config: BackendConfig) -> String? { nil }
    public static func outputFiles(for path: String) -> [String] { [path] }
    public static func prepareRun(config: inout BackendConfig, workers: Int) throws -> (any RunService)? { nil }
}

/// What a backend runs beside its workers for one run (the central log service's collector),
/// made by `AppendBackend.prepareRun`. The harness knows it only through this.
///
/// While the workers run, the harness reaps any child that exits; a child among `processes`
/// is handed back to `finish` rather than mistaken for a worker. A service must never let
/// the run pass for done while work it accepted is still queued: `finish` returns only when
/// its last work is done, and says when that was.
public protocol RunService: AnyObject {
    /// The child processes it started (the harness does not count them among the workers).
    var processes: [pid_t] { get }
    /// Called once, in the parent, after every worker has exited. When `workersSucceeded`,
    /// waits until the service has done all its work (and its processes have exited);
    /// otherwise stops it. Then releases everything `prepareRun` made. `reaped` holds the
    /// exits of its processes the harness reaped while waiting for the workers.
    func finish(workersSucceeded: Bool, reaped: [pid_t: ProcessExit]) -> RunServiceOutcome
}

/// What a run service did, for the run's measurement.
public struct RunServiceOutcome: Sendable {
    /// CLOCK_MONOTONIC when its last work was done (for the CLA: the last record appended and
    /// the file closed); Total Time ends no earlier. nil when it failed.
    public var finishedAt: UInt64?
    /// CPU its processes used after their own setup, counted with the workers' CPU time.
    public var cpu: CPUTime
    /// Why it failed, one line per problem; empty when it did its work.
    public var failures: [String]

    public init(finishedAt: UInt64?, cpu: CPUTime, failures: [String]) {
        self.finishedAt = finishedAt
        self.cpu = cpu
        self.failures = failures
    }
}

/// Every backend, in table order. Adding a backend is adding its file and one line here.
public enum Backends {
    public static let all: [any AppendBackend.Type] = [
        MMLogBackend.self,
        WriteBackend.self,
        WritevBackend.self,
        FwriteBackend.self,
        DirectBackend.self,
        AIOBackend.self,
        URingBackend.self,
        CLABackend.self,
        CLAAsyncBackend.self,
        JournaldBackend.self,
        SyslogBackend.self,
        FloorBackend.self,
        NullBackend.self,
    ]

    public static var keys: [String] { all.map { $0.key } }

    public static func named(_ key: String) -> (any AppendBackend.Type)? {
        all.first { $0.key == key }
    }
}
