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
/// LoggingSystem.bootstrap { label in MMLogHandler(label: label, log: log) }
/// ```
///
/// Line format (UTF-8, one append per line, so lines never interleave):
/// `2026-11-24T17:01:32.123456Z info my.label : key=value other=1 message text`
/// Newlines inside the message or metadata are escaped as `\n`, so one event is one line.
/// When an append fails (a full disk, a closed log) the handler writes one line to stderr,
/// once per process, and drops the event rather than crash the program.
public struct MMLogHandler: LogHandler {
    public let label: String
    public let log: MMLog
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?

    public init(label: String, log: MMLog, metadataProvider: Logger.MetadataProvider? = nil) {
        self.label = label
        self.log = log
        self.metadataProvider = metadataProvider
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var line = ""
        line.reserveCapacity(96 + event.message.description.utf8.count)
        appendTimestamp(to: &line)
        line += " \(event.level) \(label) :"
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        for (key, value) in merged.sorted(by: { $0.key < $1.key }) {
            line += " "
            appendEscaped(key, to: &line)
            line += "="
            appendEscaped("\(value)", to: &line)
        }
        line += " "
        appendEscaped(event.message.description, to: &line)
        line += "\n"
        do {
            try log.append(line)
        } catch {
            Self.reportOnce("MMLogHandler: cannot append to \(log.path): \(error); further failures are not reported\n")
        }
    }

    private static let reported = Atomic<Bool>(false)

    private static func reportOnce(_ message: String) {
        guard !reported.exchange(true, ordering: .relaxed) else { return }
        var message = message
        message.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
    }
}

/// `\n` and `\r` become two-character escapes so that an event stays on one line.
private func appendEscaped(_ text: String, to line: inout String) {
    guard text.utf8.contains(where: { $0 == 0x0A || $0 == 0x0D || $0 == 0x5C }) else {
        line += text
        return
    }
    for character in text {
        switch character {
        case "\n": line += "\\n"
        case "\r": line += "\\r"
        case "\r\n": line += "\\r\\n"
        case "\\": line += "\\\\"
        default: line.append(character)
        }
    }
}

/// RFC 3339 UTC time with microseconds, e.g. 2026-11-24T17:01:32.123456Z.
private func appendTimestamp(to line: inout String) {
    var now = timespec()
    clock_gettime(CLOCK_REALTIME, &now)
    var seconds = now.tv_sec
    var parts = tm()
    gmtime_r(&seconds, &parts)
    func pad(_ value: Int, _ width: Int) {
        let digits = String(value)
        line += String(repeating: "0", count: max(0, width - digits.count)) + digits
    }
    pad(Int(parts.tm_year) + 1900, 4); line += "-"
    pad(Int(parts.tm_mon) + 1, 2); line += "-"
    pad(Int(parts.tm_mday), 2); line += "T"
    pad(Int(parts.tm_hour), 2); line += ":"
    pad(Int(parts.tm_min), 2); line += ":"
    pad(Int(parts.tm_sec), 2); line += "."
    pad(Int(now.tv_nsec) / 1000, 6); line += "Z"
}
