// mmlog-handler-writer: logs through swift-log and MMLogHandler into an MMLog, from one process.
// Used by the handler tests (Tests/MMLogTests/HandlerProcessTests.swift), which start several
// at once. `mmlog-handler-writer --help` lists the options.
#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import Logging
import MMLog
import MMLogLogging
import ToolSupport

struct HandlerWriter: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mmlog-handler-writer",
        abstract: "Log through swift-log and MMLogHandler into an MMLog, from one process.",
        discussion: """
            Default mode: thread t of the process logs lines i = 0..<N through \
            Logger(label: "writer"): logger.info(<value i>, metadata: ["t": t, "i": i, \
            "v": <value i+1>, "nested": ["d": <value i+2>, "a": [<value i>, "x"]], \
            "level": "meta", "_msg": "meta"]), where the values are the --value-hex arguments \
            (default: one value, "message"). --levels: for each label, logs one event at each \
            level ("<label> <level>") through a handler that reads its level from the \
            environment (LOG_LEVEL, LOG_LEVEL_<label>). --after-close: closes the log, then logs \
            N errors into it (syncLevel .error): the handler must report the failure once on \
            stderr and carry on.

            Exits 0 when done, 2 when the log cannot be opened or closed or a thread cannot \
            start, 64 on bad arguments. MMLogHandler reports its own failures on stderr.
            """)

    @Option(help: "The log's data file.") var path: String
    @Option(help: "The line format: text, logfmt or json.") var format = MMLogHandler.Format.text
    @Option(help: "Lines per thread.") var lines = 100
    @Option(help: "Threads logging at once (0 counts as 1).") var threads = 1
    @Option(name: .customLong("value-hex"), help: ArgumentHelp("A message or metadata value, as hex UTF-8 (repeatable).", valueName: "hex"))
    var valueHex: [String] = []
    @Flag(help: "Add the file and line of each call.") var sourceLocation = false
    @Option(help: ArgumentHelp("Log one event at each level for each of these labels, at the environment's levels.", valueName: "label,label,..."))
    var levels: String?
    @Option(help: ArgumentHelp("Close the log, then log this many errors into it.", valueName: "N")) var afterClose = 0

    func validate() throws {
        for (name, value) in [("--lines", lines), ("--threads", threads), ("--after-close", afterClose)] where value < 0 {
            throw ValidationError("\(name) must not be negative (got \(value)).")
        }
        for hex in valueHex where decodeHex(hex) == nil {
            throw ValidationError("--value-hex takes hex digits, not \(hex).")
        }
    }

    func run() throws {
        let log: MMLog
        do {
            log = try MMLog(path: path, options: .init(chunkSize: 1 << 16))
        } catch {
            die("\(error)", status: 2)
        }
        if afterClose > 0 {
            do { try log.close() } catch { die("close: \(error)", status: 2) }
            let logger = Logger(label: "closed") { label in MMLogHandler(label: label, log: log, format: format, syncLevel: .error) }
            for i in 0..<afterClose {
                logger.error("into a closed log \(i)")
            }
            return
        }
        if let levels, !levels.isEmpty {
            for label in levels.split(separator: ",").map(String.init) {
                let logger = Logger(label: label) { label in MMLogHandler(label: label, log: log, format: format) }
                for level in Logger.Level.allCases {
                    logger.log(level: level, "\(label) \(level)")
                }
            }
        } else {
            logLines(log)
        }
        do { try log.close() } catch { die("close: \(error)", status: 2) }
    }

    /// The default mode: every thread logs `lines` events with the values in turn.
    func logLines(_ log: MMLog) {
        let format = format, sourceLocation = sourceLocation, lines = lines
        LoggingSystem.bootstrap { label in
            MMLogHandler(label: label, log: log, format: format, logLevel: .info, sourceLocation: sourceLocation)
        }
        let given = valueHex.map { String(decoding: decodeHex($0)!, as: UTF8.self) }
        let values = given.isEmpty ? ["message"] : given
        let failed = onThreads(max(1, threads)) { t in
            let logger = Logger(label: "writer")
            for i in 0..<lines {
                logger.info("\(values[i % values.count])", metadata: [
                    "t": "\(t)", "i": "\(i)", "v": "\(values[(i + 1) % values.count])",
                    "nested": ["d": "\(values[(i + 2) % values.count])", "a": ["\(values[i % values.count])", "x"]],
                    "level": "meta", "_msg": "meta",
                ])
            }
        }
        if failed != 0 { die("pthread_create: \(String(cString: strerror(failed)))", status: 2) }
    }
}

/// The bytes of a hex string ("6d65" -> [0x6d, 0x65]), or nil when it is not one.
func decodeHex(_ text: String) -> [UInt8]? {
    let digits = Array(text.utf8)
    guard digits.count % 2 == 0 else { return nil }
    var bytes: [UInt8] = []
    for i in stride(from: 0, to: digits.count, by: 2) {
        guard let byte = UInt8(String(decoding: digits[i...i + 1], as: UTF8.self), radix: 16) else { return nil }
        bytes.append(byte)
    }
    return bytes
}

extension MMLogHandler.Format: ExpressibleByArgument {}

HandlerWriter.main()
