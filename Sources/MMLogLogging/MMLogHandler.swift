#if canImport(Glibc)
import Glibc
#endif
import Logging
import MMLog
import Synchronization

/// A swift-log `LogHandler` that appends every event as one line to an `MMLog`, so that all
/// the processes of a server can log into one file without interleaving lines.
///
/// ```swift
/// let log = try MMLog(path: "/var/log/server.log")
/// LoggingSystem.bootstrap { label in MMLogHandler(label: label, log: log, format: .json) }
/// ```
///
/// Every line carries the time (RFC 3339, UTC, microseconds), the level, the label, the id of
/// the process that logged it, the event's `source` (by default its module), optionally the
/// file and line, the message, an attached error (`error.message`, `error.type`) and the
/// metadata, in one of three ``Format``s. Escaping keeps one event on one line in every
/// format; each line is formatted in a buffer the thread keeps and written by one
/// `MMLog.append`, so lines of different threads and processes never interleave.
///
/// When the caller gives no level, the environment's `LOG_LEVEL_<label>` or `LOG_LEVEL` sets
/// it (see docs/logging.md), else `.info`. Events at or above `syncLevel` are followed by
/// `MMLog.sync()`. A failed append or sync is reported once per process on stderr and the
/// event dropped: logging never crashes the program.
public struct MMLogHandler: LogHandler {
    /// How an event is written. Each format is one line per event, UTF-8, ending in `\n`.
    public enum Format: String, Sendable, CaseIterable {
        /// For people: `2026-11-24T17:01:32.123456Z info http[4242] App : status=200 request served`.
        /// Values are quoted as in logfmt when they must be, so none reads as another pair; the
        /// message is last and bare unless it could read as a pair.
        case text
        /// `ts=2026-11-24T17:01:32.123456Z level=info label=http pid=4242 source=App msg="request served" status=200`
        case logfmt
        /// `{"ts":"2026-11-24T17:01:32.123456Z","level":"info","label":"http","pid":4242,"source":"App","msg":"request served","status":"200"}`
        case json
    }

    public let label: String
    public let log: MMLog
    public let format: Format
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    /// Whether lines carry the file and line of the call (`#fileID` and `#line` by default).
    public var sourceLocation: Bool
    /// Events at or above this level are made durable before `log` returns: the handler calls
    /// `MMLog.sync()` after appending them. `nil` (the default): never.
    public var syncLevel: Logger.Level?

    /// - Parameters:
    ///   - label: The logger's label.
    ///   - log: Where the lines go. One `MMLog` per process, shared by all its handlers.
    ///   - format: `.text` (the default), `.logfmt` or `.json`.
    ///   - logLevel: The least severe level logged; `nil` reads `LOG_LEVEL_<label>`, then
    ///     `LOG_LEVEL`, from the environment, else `.info`.
    ///   - metadataProvider: Values added to every event (below the call site's, above the
    ///     handler's own `metadata`).
    ///   - sourceLocation: Also write the file and line of each call.
    ///   - syncLevel: `sync()` the log after every event at or above this level.
    public init(label: String, log: MMLog, format: Format = .text, logLevel: Logger.Level? = nil,
                metadataProvider: Logger.MetadataProvider? = nil, sourceLocation: Bool = false,
                syncLevel: Logger.Level? = nil) {
        self.label = label
        self.log = log
        self.format = format
        self.logLevel = logLevel ?? EnvironmentLevels.current.level(for: label) ?? .info
        self.metadataProvider = metadataProvider
        self.sourceLocation = sourceLocation
        self.syncLevel = syncLevel
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let provided = metadataProvider?.get()
        var scratch = Scratch.acquire()
        format(event, provided: provided, into: &scratch)
        let appended = append(scratch.line)
        scratch.release()
        guard appended, let syncLevel, event.level >= syncLevel else { return }
        do {
            try log.sync()
            Self.syncs.add(1, ordering: .relaxed)
        } catch {
            Self.report(.sync, "MMLogHandler: cannot sync \(log.path): \(error)")
        }
    }

    /// Appends one formatted line; false (reported) when it could not.
    private func append(_ line: LineBuffer) -> Bool {
        if line.failed {
            Self.report(.outOfMemory, "MMLogHandler: out of memory formatting a line for \(log.path); the event was dropped")
            return false
        }
        do {
            try log.append(line.bytes)
            return true
        } catch {
            Self.report(.append, "MMLogHandler: cannot append to \(log.path): \(error); the event was dropped")
            return false
        }
    }

    /// The entry point of swift-log before `LogEvent`; kept so that callers of it keep their
    /// `source`.
    @available(*, deprecated, renamed: "log(event:)")
    public func log(level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String,
                    file: String, function: String, line: UInt) {
        log(event: LogEvent(level: level, message: message, metadata: metadata, source: source, file: file,
                            function: function, line: line))
    }

    /// The oldest entry point, before `source`: the source is the module of `file`, which may be
    /// a `#fileID` (`Module/File.swift`) or a `#filePath` (`.../Module/File.swift`).
    @available(*, deprecated, renamed: "log(event:)")
    public func log(level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, file: String,
                    function: String, line: UInt) {
        log(event: LogEvent(level: level, message: message, metadata: metadata, source: Self.module(of: file),
                            file: file, function: function, line: line))
    }

    static func module(of file: String) -> String {
        let parts = file.split(separator: "/", omittingEmptySubsequences: false)
        switch parts.count {
        case 0, 1: return "n/a"
        case 2: return String(parts[0])
        default: return String(parts[parts.count - 2])
        }
    }

    // MARK: Failures

    enum Failure: Int, CaseIterable {
        case append, sync, outOfMemory
    }

    private static let reported = Atomic<Int>(0)
    /// Syncs made after events at or above `syncLevel`, in this process (for the tests).
    static let syncs = Atomic<Int>(0)

    /// Writes `message` to stderr the first time this kind of failure happens in this process.
    private static func report(_ failure: Failure, _ message: String) {
        let bit = 1 << failure.rawValue
        guard reported.bitwiseOr(bit, ordering: .relaxed).oldValue & bit == 0 else { return }
        writeToStandardError(message + "; further failures of this kind are not reported\n")
    }
}

// MARK: - Process id

/// This process's id, cached: `getpid` is a system call in glibc. A child made by `fork`
/// clears the cache (pthread_atfork), so a handler used after a fork writes the child's id.
func currentProcessID() -> pid_t {
    let cached = cachedProcessID.load(ordering: .relaxed)
    if cached != 0 { return cached }
    _ = forkHandlerInstalled
    let pid = getpid()
    cachedProcessID.store(pid, ordering: .relaxed)
    return pid
}

private let cachedProcessID = Atomic<pid_t>(0)

private let forkHandlerInstalled: Void = {
    pthread_atfork(nil, nil) { cachedProcessID.store(0, ordering: .relaxed) }
}()
