// mmlog-writer: appends appendbench-format records to an MMLog from one process.
//
// Used by the multi-process tests, and handy by hand:
//   mmlog-writer --path /tmp/x.log --worker 0 --ops 100000 --size 128 [--threads 8]
//                [--chunk-size 65536] [--max-chunks 4] [--prefault write|read|none] [--no-huge-pages] [--no-prefetch] [--start-at NS] [--no-close] [--swift-log]
// Thread t of the process writes as worker `worker + t`. With --swift-log it logs lines
// through MMLogHandler instead: `logger.info("record <i>", metadata: [worker, i])`. Exits 0 when every append
// succeeded, 1 with the error on stderr otherwise, 2 on bad arguments.
#if canImport(Glibc)
import Glibc
#endif
import BenchRecords
import Logging
import MMLog
import MMLogLogging

struct Arguments {
    var path = ""
    var worker = 0
    var ops = 1000
    var size = 128
    var threads = 1
    var chunkSize = MMLog.Options().chunkSize
    var maxChunks = MMLog.Options().maxChunks
    var prefault = MMLog.Options().prefault
    var hugePages = MMLog.Options().hugePages
    var prefetch = MMLog.Options().prefetch
    var startAt: UInt64 = 0
    var close = true
    var swiftLog = false

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
            case "--worker": args.worker = number(value())
            case "--ops": args.ops = number(value())
            case "--size": args.size = number(value())
            case "--threads": args.threads = max(1, number(value()))
            case "--chunk-size": args.chunkSize = number(value())
            case "--max-chunks": args.maxChunks = number(value())
            case "--prefault":
                let text = value()
                guard let mode = MMLog.Prefault(rawValue: text) else { fail("--prefault takes write, read or none, not \(text)") }
                args.prefault = mode
            case "--no-huge-pages": args.hugePages = false
            case "--no-prefetch": args.prefetch = false
            case "--start-at": args.startAt = UInt64(number(value()))
            case "--no-close": args.close = false
            case "--swift-log": args.swiftLog = true
            case "-h", "--help":
                print("usage: mmlog-writer --path P [--worker W] [--ops N] [--size S] [--threads T] [--chunk-size B] [--max-chunks M] [--prefault write|read|none] [--no-huge-pages] [--no-prefetch] [--start-at NS] [--no-close] [--swift-log]")
                exit(0)
            default: fail("unknown argument \(argv[i])")
            }
            i += 1
        }
        if args.path.isEmpty { fail("--path is required") }
        if args.size == 0 { fail("--size must be at least 1") }
        return args
    }
}

func fail(_ message: String) -> Never {
    printError("mmlog-writer: \(message)")
    exit(2)
}

/// Writes a line to stderr with one write(2).
func printError(_ message: String) {
    let line = message + "\n"
    _ = line.utf8CString.withUnsafeBytes { write(2, $0.baseAddress, $0.count - 1) }
}

func realtimeNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// Logs lines 0..<ops of `worker` through swift-log and MMLogHandler.
func logLines(worker: Int, ops: Int) {
    let logger = Logger(label: "worker.\(worker)")
    for i in 0..<ops {
        logger.info("record \(i)", metadata: ["worker": "\(worker)", "i": "\(i)"])
    }
}

/// Writes records 0..<ops of `worker`; returns the error text of the first failure.
func write(_ log: MMLog, worker: Int, ops: Int, size: Int) -> String? {
    let record = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 16)
    defer { record.deallocate() }
    for i in 0..<ops {
        RecordFormat.encode(worker: worker, index: i, into: record)
        do {
            try log.append(UnsafeRawBufferPointer(record))
        } catch {
            return "worker \(worker) record \(i): \(error)"
        }
    }
    return nil
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
            let job = Unmanaged<ThreadJob>.fromOpaque(raw!).takeRetainedValue()
            job.body()
            return nil
        }, job)
        if rc != 0 { fail("pthread_create: \(String(cString: strerror(rc)))") }
        threads.append(thread)
    }
    for thread in threads { pthread_join(thread, nil) }
}

final class Failures: @unchecked Sendable {
    private var lock = pthread_mutex_t()
    private(set) var messages: [String] = []
    init() { pthread_mutex_init(&lock, nil) }
    func add(_ message: String) {
        pthread_mutex_lock(&lock)
        messages.append(message)
        pthread_mutex_unlock(&lock)
    }
}

let args = Arguments.parse(CommandLine.arguments)
while args.startAt > 0 && realtimeNanoseconds() < args.startAt {}

let log: MMLog
do {
    log = try MMLog(path: args.path, options: .init(chunkSize: args.chunkSize, maxChunks: args.maxChunks,
                                                   prefault: args.prefault, hugePages: args.hugePages,
                                                   prefetch: args.prefetch))
} catch {
    printError("mmlog-writer: \(error)")
    exit(1)
}

let failures = Failures()
if args.swiftLog {
    LoggingSystem.bootstrap { label in MMLogHandler(label: label, log: log) }
    onThreads(args.threads) { t in logLines(worker: args.worker + t, ops: args.ops) }
} else if args.threads == 1 {
    if let failure = write(log, worker: args.worker, ops: args.ops, size: args.size) { failures.add(failure) }
} else {
    onThreads(args.threads) { t in
        if let failure = write(log, worker: args.worker + t, ops: args.ops, size: args.size) { failures.add(failure) }
    }
}
if args.close {
    do { try log.close() } catch { failures.add("close: \(error)") }
} else {
    exit(failures.messages.isEmpty ? 0 : 1)  // leave without closing, as a crash would
}
for message in failures.messages { printError("mmlog-writer: \(message)") }
exit(failures.messages.isEmpty ? 0 : 1)
