// mmlog-handler-bench: the cost of one `logger.info` with two metadata values, through
// MMLogHandler in each format and through swift-log's StreamLogHandler writing to a file.
//
//   mmlog-handler-bench [--procs 1,4] [--ops 100000] [--runs 5] [--dir DIR]
//                       [--handlers text,logfmt,json,stream,raw]
//
// Each run forks `procs` workers. A worker opens its destination, logs 1000 lines to warm
// up, waits at a barrier, then times `ops` calls of
//     logger.info("request served", metadata: ["status": "200", "path": "/index.html"])
// and counts the heap allocations they made (CHandlerBenchShims wraps malloc). Handlers:
//   text, logfmt, json  MMLogHandler in that format, into one MMLog shared by the workers
//   stream              StreamLogHandler into a FILE* opened "a" (O_APPEND) by each worker,
//                       locked, written and flushed per line as its stdout stream does
//   raw                 MMLog.append of a fixed 120-byte line: the floor, no formatting
//   noop                a handler that reads the event's metadata and source and writes
//                       nothing: what the call costs before any handler formats a byte
// Runs are interleaved (run 1 of every handler, then run 2, ...). Per handler and process
// count the table gives the median run and the range: wall ns per call (from the first
// worker's start to the last worker's end, over procs x ops calls) and allocations per call.
// After each run the file must hold exactly procs x (ops + 1000) lines.
#if canImport(Glibc)
import Glibc
#endif
import CHandlerBenchShims
import Logging
import MMLog
import MMLogLogging

struct Arguments {
    var procs = [1, 4]
    var ops = 100_000
    var runs = 5
    var dir = ""
    var handlers = ["text", "logfmt", "json", "stream", "raw", "noop"]

    static func parse(_ argv: [String]) -> Arguments {
        var args = Arguments()
        var i = 1
        func value() -> String {
            i += 1
            guard i < argv.count else { fail("\(argv[i - 1]) needs a value") }
            return argv[i]
        }
        func number(_ text: String) -> Int {
            guard let n = Int(text), n > 0 else { fail("not a positive count: \(text)") }
            return n
        }
        while i < argv.count {
            switch argv[i] {
            case "--procs": args.procs = value().split(separator: ",").map { number(String($0)) }
            case "--ops": args.ops = number(value())
            case "--runs": args.runs = number(value())
            case "--dir": args.dir = value()
            case "--handlers":
                args.handlers = value().split(separator: ",").map(String.init)
                for handler in args.handlers where !["text", "logfmt", "json", "stream", "raw", "noop"].contains(handler) {
                    fail("unknown handler \(handler) (text, logfmt, json, stream, raw, noop)")
                }
            case "-h", "--help":
                print("usage: mmlog-handler-bench [--procs 1,4] [--ops 100000] [--runs 5] [--dir DIR] [--handlers text,logfmt,json,stream,raw,noop]")
                exit(0)
            default: fail("unknown argument \(argv[i])")
            }
            i += 1
        }
        return args
    }
}

func fail(_ message: String) -> Never {
    let line = "mmlog-handler-bench: \(message)\n"
    _ = line.utf8CString.withUnsafeBytes { write(2, $0.baseAddress, $0.count - 1) }
    exit(2)
}

func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// StreamLogHandler's stdout stream, pointed at a file: lock, fwrite, fflush, unlock per line.
struct FileStream: TextOutputStream, @unchecked Sendable {
    let file: UnsafeMutablePointer<FILE>

    func write(_ string: String) {
        var string = string
        string.withUTF8 { bytes in
            flockfile(file)
            fwrite(bytes.baseAddress, 1, bytes.count, file)
            fflush(file)
            funlockfile(file)
        }
    }
}

let warmUpLines = 1000

/// Reads what every handler reads (the metadata and the source) and writes nothing.
struct NoOpHandler: LogHandler {
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        noOpSink &+= (event.metadata?.count ?? 0) &+ event.source.utf8.count &+ event.message.description.utf8.count
    }
}

nonisolated(unsafe) var noOpSink = 0

/// What a worker reports through the results pipe (one write, under PIPE_BUF).
struct WorkerResult {
    var start: UInt64 = 0
    var end: UInt64 = 0
    var allocations: UInt64 = 0
    var failed: UInt64 = 0
}

/// Runs in the forked worker: never returns.
func worker(handler: String, path: String, ops: Int, ready: Int32, go: Int32, results: Int32) -> Never {
    var result = WorkerResult()
    var log: MMLog?
    var file: UnsafeMutablePointer<FILE>?
    let logger: Logger
    do {
        switch handler {
        case "noop":
            logger = Logger(label: "bench") { _ in NoOpHandler() }
        case "stream":
            guard let opened = fopen(path, "a") else { fail("fopen(\(path)): \(String(cString: strerror(errno)))") }
            file = opened
            logger = Logger(label: "bench") { label in StreamLogHandler(label: label, stream: FileStream(file: opened)) }
        default:
            let opened = try MMLog(path: path)
            log = opened
            let format = MMLogHandler.Format(rawValue: handler) ?? .text
            logger = Logger(label: "bench") { label in MMLogHandler(label: label, log: opened, format: format, logLevel: .info) }
        }
    } catch {
        fail("\(error)")
    }
    let text = Array("2026-11-24T17:01:32.123456Z info bench[4242] mmlog_handler_bench : path=/index.html status=200 request served".utf8)
    let line = text + [UInt8](repeating: UInt8(ascii: "."), count: max(0, 119 - text.count)) + [0x0A]
    func once() {
        if handler == "raw" {
            do { try log?.append(line) } catch { result.failed += 1 }
        } else {
            logger.info("request served", metadata: ["status": "200", "path": "/index.html"])
        }
    }
    for _ in 0..<warmUpLines { once() }
    var byte: UInt8 = 1
    _ = write(ready, &byte, 1)
    _ = read(go, &byte, 1)  // returns 0 when the parent closes the write end: everyone starts
    let allocationsBefore = handler_bench_allocations()
    result.start = monotonicNanoseconds()
    for _ in 0..<ops { once() }
    result.end = monotonicNanoseconds()
    result.allocations = handler_bench_allocations() - allocationsBefore
    do { try log?.close() } catch { result.failed += 1 }
    if let file { fclose(file) }
    _ = withUnsafeBytes(of: &result) { write(results, $0.baseAddress, $0.count) }
    exit(0)
}

/// Touches and releases `bytes` of anonymous memory in 2 MiB pages, as appendbench's
/// --warm-memory does, so that the run draws on memory the VM's host already backs.
func warmMemory(_ bytes: Int) {
    let size = (bytes + (2 << 20) - 1) & ~((2 << 20) - 1)
    guard let region = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), region != MAP_FAILED else { return }
    _ = madvise(region, size, MADV_HUGEPAGE)
    for offset in stride(from: 0, to: size, by: 4096) { region.storeBytes(of: 1, toByteOffset: offset, as: UInt8.self) }
    munmap(region, size)
}

struct Run {
    var nanosecondsPerCall: Double
    var allocationsPerCall: Double
}

func measure(handler: String, procs: Int, ops: Int, dir: String) -> Run {
    let path = "\(dir)/\(handler).log"
    unlink(path)
    unlink(path + ".mmlog")
    sync()
    warmMemory(2 * procs * (ops + warmUpLines) * 200 + (64 << 20))
    var readyPipe: [Int32] = [0, 0], goPipe: [Int32] = [0, 0], resultPipe: [Int32] = [0, 0]
    guard pipe(&readyPipe) == 0, pipe(&goPipe) == 0, pipe(&resultPipe) == 0 else { fail("pipe: \(String(cString: strerror(errno)))") }
    var pids: [pid_t] = []
    for _ in 0..<procs {
        let pid = fork()
        if pid == 0 {
            close(readyPipe[0]); close(goPipe[1]); close(resultPipe[0])
            worker(handler: handler, path: path, ops: ops, ready: readyPipe[1], go: goPipe[0], results: resultPipe[1])
        }
        guard pid > 0 else { fail("fork: \(String(cString: strerror(errno)))") }
        pids.append(pid)
    }
    close(readyPipe[1]); close(goPipe[0]); close(resultPipe[1])
    var byte: UInt8 = 0
    for _ in 0..<procs { guard read(readyPipe[0], &byte, 1) == 1 else { fail("a \(handler) worker died before the start") } }
    close(goPipe[1])
    var results: [WorkerResult] = []
    for _ in 0..<procs {
        var result = WorkerResult()
        let n = withUnsafeMutableBytes(of: &result) { read(resultPipe[0], $0.baseAddress, $0.count) }
        guard n == MemoryLayout<WorkerResult>.size else { fail("a \(handler) worker died without a result") }
        results.append(result)
    }
    for pid in pids {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        if status != 0 { fail("a \(handler) worker exited with status \(status)") }
    }
    close(readyPipe[0]); close(resultPipe[0])
    if results.contains(where: { $0.failed > 0 }) { fail("\(handler): appends failed") }
    let expected = handler == "noop" ? -1 : procs * (ops + warmUpLines)
    let lines = countLines(path)
    if lines != expected { fail("\(handler): \(lines) lines in \(path), expected \(expected)") }
    let wall = results.map(\.end).max()! - results.map(\.start).min()!
    let calls = Double(procs * ops)
    return Run(nanosecondsPerCall: Double(wall) / calls,
               allocationsPerCall: Double(results.map(\.allocations).reduce(0, +)) / calls)
}

func countLines(_ path: String) -> Int {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { return -1 }
    defer { close(fd) }
    var count = 0
    var buffer = [UInt8](repeating: 0, count: 1 << 20)
    while true {
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n <= 0 { break }
        for i in 0..<n where buffer[i] == 0x0A { count += 1 }
    }
    return count
}

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
}

func fixed(_ value: Double, _ decimals: Int) -> String {
    var scale = 1.0
    for _ in 0..<decimals { scale *= 10 }
    let rounded = (value * scale).rounded() / scale
    var text = "\(rounded)"
    if let dot = text.firstIndex(of: ".") {
        let have = text.distance(from: dot, to: text.endIndex) - 1
        if decimals == 0 { text = String(text[..<dot]) } else if have < decimals { text += String(repeating: "0", count: decimals - have) }
    }
    return text
}

let args = Arguments.parse(CommandLine.arguments)
var dir = args.dir
if dir.isEmpty {
    var template = Array("/tmp/mmlog-handler-bench-XXXXXX".utf8CString)
    guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else { fail("mkdtemp failed") }
    dir = String(cString: made)
}
var runs: [String: [Run]] = [:]
for run in 1...args.runs {
    for procs in args.procs {
        for handler in args.handlers {
            runs["\(handler) \(procs)", default: []].append(measure(handler: handler, procs: procs, ops: args.ops, dir: dir))
        }
    }
    let note = "run \(run) of \(args.runs) done\n"
    _ = note.utf8CString.withUnsafeBytes { write(2, $0.baseAddress, $0.count - 1) }
}
/// The filesystem type of `path`, by statfs magic number.
func filesystem(_ path: String) -> String {
    let magic = handler_bench_filesystem_magic(path)
    guard magic != -1 else { return "unknown" }
    switch UInt(bitPattern: magic) {
    case 0xEF53: return "ext4"
    case 0x58465342: return "xfs"
    case 0x9123683E: return "btrfs"
    case 0x01021994: return "tmpfs"
    case 0x2FC12FC1: return "zfs"
    default: return "0x" + String(UInt(bitPattern: magic), radix: 16)
    }
}

var names = utsname()
uname(&names)
let kernel = withUnsafeBytes(of: &names.release) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
var now = time(nil), parts = tm()
gmtime_r(&now, &parts)
var stamp = [CChar](repeating: 0, count: 32)
strftime(&stamp, stamp.count, "%Y-%m-%dT%H:%M:%SZ", &parts)
print("command: \(CommandLine.arguments.joined(separator: " "))")
print("date: \(String(cString: stamp)), kernel \(kernel), \(filesystem(dir)) (\(dir)), \(sysconf(Int32(_SC_NPROCESSORS_ONLN))) cores")
print("")
let labels = ["text": "MMLogHandler .text", "logfmt": "MMLogHandler .logfmt", "json": "MMLogHandler .json",
             "stream": "StreamLogHandler, FILE* O_APPEND", "raw": "MMLog.append, preformatted 120 B (floor)",
             "noop": "no-op handler (swift-log's own cost)"]
print("| handler | procs | ns/call, median (min-max) | allocations/call |")
print("|---|---|---|---|")
for procs in args.procs {
    for handler in args.handlers {
        let all = runs["\(handler) \(procs)"] ?? []
        let ns = all.map(\.nanosecondsPerCall), allocations = all.map(\.allocationsPerCall)
        print("| \(labels[handler] ?? handler) | \(procs) | \(fixed(median(ns), 0)) (\(fixed(ns.min() ?? 0, 0))-\(fixed(ns.max() ?? 0, 0))) | \(fixed(median(allocations), 2)) |")
    }
}
if args.dir.isEmpty {
    for handler in args.handlers {
        unlink("\(dir)/\(handler).log")
        unlink("\(dir)/\(handler).log.mmlog")
    }
    rmdir(dir)
}
