#if canImport(Glibc)
import Glibc
#endif
import MMLog

/// MMLog's default options: the one source of the harness's MMLog defaults.
public let mmlogDefaults = MMLog.Options()

/// How MMLog prefaults a chunk it maps (`--prefault`).
public typealias MMLogPrefault = MMLog.Prefault

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
    /// MMLog chunk size in bytes.
    public var chunkSize: Int
    /// MMLog ring capacity in chunks.
    public var maxChunks: Int
    /// MMLog prefaulting of a fresh chunk.
    public var prefault: MMLogPrefault
    /// MMLog huge page advice on its chunk mappings.
    public var hugePages: Bool
    /// MMLog prefaults the next chunk on a helper thread.
    public var prefetch: Bool
    /// Bytes all workers of the run append together (procs x ops x record size); only the
    /// `floor` backend, which maps the whole output up front, needs it.
    public var totalBytes: Int

    public init(path: String, recordSize: Int, batch: Int = 1, depth: Int = 1,
                chunkSize: Int = mmlogDefaults.chunkSize, maxChunks: Int = mmlogDefaults.maxChunks,
                prefault: MMLogPrefault = mmlogDefaults.prefault, hugePages: Bool = mmlogDefaults.hugePages,
                prefetch: Bool = mmlogDefaults.prefetch, totalBytes: Int = 0) {
        self.prefetch = prefetch
        self.prefault = prefault
        self.hugePages = hugePages
        self.path = path
        self.recordSize = recordSize
        self.batch = batch
        self.depth = depth
        self.chunkSize = chunkSize
        self.maxChunks = maxChunks
        self.totalBytes = totalBytes
    }
}

/// A failure inside a backend: the operation, and errno where there is one.
public struct BackendError: Error, CustomStringConvertible, Sendable {
    public var operation: String
    public var errno: Int32?

    public init(_ operation: String, errno: Int32? = nil) {
        self.operation = operation
        self.errno = errno
    }

    /// The error of a failed C call, from the calling thread's errno.
    public static func system(_ operation: String) -> BackendError {
        BackendError(operation, errno: Glibc.errno)
    }

    public var description: String {
        guard let errno else { return operation }
        return "\(operation): \(String(cString: strerror(errno))) (errno \(errno))"
    }
}

/// One way of appending records to a file: the harness knows backends only through this.
///
/// Lifecycle, in each worker process: `init` opens the output (before the start barrier,
/// untimed), then `append` once per record, then `finish` (flush or reap what is
/// outstanding) and `close`, both timed. A failed or short write throws; it is never
/// counted as a success. Methods run on one thread.
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
        FloorBackend.self,
        NullBackend.self,
    ]

    public static var keys: [String] { all.map { $0.key } }

    public static func named(_ key: String) -> (any AppendBackend.Type)? {
        all.first { $0.key == key }
    }
}

/// Opens `path` for appending with extra `flags`; throws with the path and errno.
func openForAppend(_ path: String, extraFlags: Int32 = 0) throws -> Int32 {
    let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | extraFlags, 0o644)
    if fd < 0 { throw BackendError.system("open(\(path))") }
    return fd
}

/// fdatasync(fd), retried on EINTR; throws with the path and errno.
func syncData(_ fd: Int32, _ path: String) throws {
    if retryingInterrupts({ Int(fdatasync(fd)) }) != 0 { throw BackendError.system("fdatasync(\(path))") }
}

/// Closes `fd`, reporting failure (on some filesystems close reports deferred write errors).
func closeChecked(_ fd: Int32, _ path: String) throws {
    if Glibc.close(fd) != 0 && errno != EINTR { throw BackendError.system("close(\(path))") }
}

/// Calls `body` again while it fails with EINTR: the one place the backends retry an
/// interrupted system call. Returns the last result (negative, with errno set, on failure).
@inline(__always)
func retryingInterrupts(_ body: () -> Int) -> Int {
    while true {
        let result = body()
        if result >= 0 || errno != EINTR { return result }
    }
}
