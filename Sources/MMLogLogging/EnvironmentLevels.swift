#if canImport(Glibc)
import Glibc
#endif
import Logging

/// Log levels set in the environment, for handlers whose caller did not choose one.
///
/// - `LOG_LEVEL_<label>` sets the level of one label. `<label>` is matched exactly first, then
///   with every character other than an ASCII letter or digit read as `_` and letters compared
///   without case, so `LOG_LEVEL_http=debug` and `LOG_LEVEL_COM_EXAMPLE_DB=trace` apply to the
///   labels `http` and `com.example.db`.
/// - `LOG_LEVEL` sets the level of every other label.
/// - Values are swift-log's level names in any case (`trace`, `debug`, `info`, `notice`,
///   `warning`, `error`, `critical`), and `warn`. Another value is reported once on stderr and
///   ignored.
///
/// The environment is read once, when the first handler is made.
struct EnvironmentLevels: Sendable {
    var defaultLevel: Logger.Level?
    var exact: [String: Logger.Level] = [:]
    var normalized: [String: Logger.Level] = [:]
    /// `NAME=value` of every variable whose value is not a level.
    var rejected: [String] = []

    static let prefix = "LOG_LEVEL"

    init(_ variables: [(name: String, value: String)]) {
        for (name, value) in variables where name.hasPrefix(Self.prefix) {
            let rest = name.dropFirst(Self.prefix.count)
            guard rest.isEmpty || rest.first == "_" else { continue }
            guard let level = Self.level(named: value) else {
                rejected.append("\(name)=\(value)")
                continue
            }
            if rest.isEmpty {
                defaultLevel = level
            } else if rest.count > 1 {
                let label = String(rest.dropFirst())
                exact[label] = level
                normalized[Self.normalize(label)] = level
            }
        }
    }

    /// The level for `label`, if the environment sets one for it or for every label.
    func level(for label: String) -> Logger.Level? {
        if exact.isEmpty { return defaultLevel }
        return exact[label] ?? normalized[Self.normalize(label)] ?? defaultLevel
    }

    static func level(named text: String) -> Logger.Level? {
        let lowered = text.lowercased()
        return lowered == "warn" ? .warning : Logger.Level(rawValue: lowered)
    }

    static func normalize(_ label: String) -> String {
        String(decoding: label.utf8.map { byte -> UInt8 in
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"): byte - 0x20
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): byte
            default: UInt8(ascii: "_")
            }
        }, as: UTF8.self)
    }

    /// This process's environment, read once; invalid values are reported on stderr then.
    static let current: EnvironmentLevels = {
        var variables: [(name: String, value: String)] = []
        var entry: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = environ
        while let pointer = entry?.pointee {
            let text = String(cString: pointer)
            if text.hasPrefix(prefix), let equals = text.firstIndex(of: "=") {
                variables.append((String(text[..<equals]), String(text[text.index(after: equals)...])))
            }
            entry = entry?.successor()
        }
        let levels = EnvironmentLevels(variables)
        for rejected in levels.rejected {
            writeToStandardError("MMLogHandler: \(rejected) is not a log level (trace, debug, info, notice, warning, error, critical); ignored\n")
        }
        return levels
    }()
}

/// One write(2) to stderr, so that the report is not interleaved with other processes' output.
func writeToStandardError(_ message: String) {
    withUTF8(of: message) { bytes in _ = write(2, bytes.baseAddress, bytes.count) }
}
