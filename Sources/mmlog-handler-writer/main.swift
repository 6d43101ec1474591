// mmlog-handler-writer: logs through swift-log and MMLogHandler into an MMLog, from one process.
//
// Used by the handler tests (Tests/MMLogTests/HandlerTests.swift), which start several at once:
//   mmlog-handler-writer --path P [--format text|logfmt|json] [--lines N] [--threads T]
//                        [--value-hex HEX]... [--source-location] [--levels LABEL,LABEL,...]
//                        [--after-close N]
//
// Default mode: thread t of the process logs lines i = 0..<N through `Logger(label: "writer")`:
//   logger.info(<value i>, metadata: ["t": t, "i": i, "v": <value i+1>,
//               "nested": ["d": <value i+2>, "a": [<value i>, "x"]], "level": "meta", "_msg": "meta"])
// where the values are the --value-hex arguments (hex UTF-8; default: one value, "message").
// --levels: for each label, logs one event at each level ("<label> <level>") through a
// handler that reads its level from the environment (LOG_LEVEL, LOG_LEVEL_<label>).
// --after-close: closes the log, then logs N errors into it (syncLevel .error): the handler
// must report the failure once on stderr and carry on.
// Exits 0 when done, 2 on bad arguments. MMLogHandler reports its own failures on stderr.
#if canImport(Glibc)
import Glibc
#endif
import Logging
import MMLog
import MMLogLogging

struct Arguments {
    var path = ""
    var format = MMLogHandler.Format.text
    var lines = 100
    var threads = 1
    var values: [String] = []
    var sourceLocation = false
    var levelLabels: [String] = []
    var afterClose = 0

    static func parse(_ argv: [String]) -> Arguments {
        var args = Arguments()
        var i = 1
        func value() -> String {
            i += 1
            guard i < argv.count else { fail("\(argv[i - 1]) needs a value") }
            return argv[i]
        }
        func number(_ text: String) -> Int {
            guard let n = Int(text), n >= 0 else { fail("not a count: \(text)") }
            return n
        }
        while i < argv.count {
            switch argv[i] {
            case "--path": args.path = value()
            case "--format":
                let text = value()
                guard let format = MMLogHandler.Format(rawValue: text) else { fail("--format takes text, logfmt or json, not \(text)") }
                args.format = format
            case "--lines": args.lines = number(value())
            case "--threads": args.threads = max(1, number(value()))
            case "--value-hex":
                let hex = value()
                guard let bytes = decodeHex(hex) else { fail("--value-hex takes hex digits, not \(hex)") }
                args.values.append(String(decoding: bytes, as: UTF8.self))
            case "--source-location": args.sourceLocation = true
            case "--levels": args.levelLabels = value().split(separator: ",").map(String.init)
            case "--after-close": args.afterClose = number(value())
            case "-h", "--help":
                print("usage: mmlog-handler-writer --path P [--format text|logfmt|json] [--lines N] [--threads T] [--value-hex HEX]... [--source-location] [--levels L1,L2] [--after-close N]")
                exit(0)
            default: fail("unknown argument \(argv[i])")
            }
            i += 1
        }
        if args.path.isEmpty { fail("--path is required") }
        if args.values.isEmpty { args.values = ["message"] }
        return args
    }
}

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

func fail(_ message: String) -> Never {
    let line = "mmlog-handler-writer: \(message)\n"
    _ = line.utf8CString.withUnsafeBytes { write(2, $0.baseAddress, $0.count - 1) }
    exit(2)
}

final class ThreadJob {
    let body: () -> Void
    init(_ body: @escaping () -> Void) { self.body = body }
}

/// Runs `body(t)` on `count` threads and waits for them all.
func onThreads(_ count: Int, _ body: @escaping (Int) -> Void) {
    var threads: [pthread_t] = []
    for t in 0..<count {
        let job = Unmanaged.passRetained(ThreadJob { body(t) }).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { raw in
            Unmanaged<ThreadJob>.fromOpaque(raw!).takeRetainedValue().body()
            return nil
        }, job)
        if rc != 0 { fail("pthread_create: \(String(cString: strerror(rc)))") }
        threads.append(thread)
    }
    for thread in threads { pthread_join(thread, nil) }
}

let args = Arguments.parse(CommandLine.arguments)
let log: MMLog
do {
    log = try MMLog(path: args.path, options: .init(chunkSize: 1 << 16))
} catch {
    fail("\(error)")
}

if args.afterClose > 0 {
    do { try log.close() } catch { fail("close: \(error)") }
    let logger = Logger(label: "closed") { label in MMLogHandler(label: label, log: log, format: args.format, syncLevel: .error) }
    for i in 0..<args.afterClose {
        logger.error("into a closed log \(i)")
    }
    exit(0)
} else if !args.levelLabels.isEmpty {
    for label in args.levelLabels {
        let logger = Logger(label: label) { label in MMLogHandler(label: label, log: log, format: args.format) }
        for level in Logger.Level.allCases {
            logger.log(level: level, "\(label) \(level)")
        }
    }
} else {
    LoggingSystem.bootstrap { label in
        MMLogHandler(label: label, log: log, format: args.format, logLevel: .info, sourceLocation: args.sourceLocation)
    }
    let values = args.values
    onThreads(args.threads) { t in
        let logger = Logger(label: "writer")
        for i in 0..<args.lines {
            logger.info("\(values[i % values.count])", metadata: [
                "t": "\(t)", "i": "\(i)", "v": "\(values[(i + 1) % values.count])",
                "nested": ["d": "\(values[(i + 2) % values.count])", "a": ["\(values[i % values.count])", "x"]],
                "level": "meta", "_msg": "meta",
            ])
        }
    }
}
do { try log.close() } catch { fail("close: \(error)") }
exit(0)
