// mmlog-handler-bench: the cost of one `logger.info` with two metadata values, through
// MMLogHandler in each format and through swift-log's StreamLogHandler writing to a file.
// `mmlog-handler-bench --help` lists the options.
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
import ArgumentParser
import CHandlerBenchShims
import Logging
import MMLog
import MMLogLogging
import ToolSupport

struct HandlerBench: ParsableCommand {
    static let handlers = ["text", "logfmt", "json", "stream", "raw", "noop"]

    static let configuration = CommandConfiguration(
        commandName: "mmlog-handler-bench",
        abstract: "ns and heap allocations per logger.info: MMLogHandler's formats against StreamLogHandler.",
        discussion: """
            Handlers: text, logfmt, json (MMLogHandler in that format, into one MMLog shared by \
            the workers); stream (StreamLogHandler into a FILE* opened "a" by each worker); raw \
            (MMLog.append of a fixed 120-byte line: the floor); noop (reads the event and writes \
            nothing: swift-log's own cost). Prints the command, date, kernel and filesystem, then \
            one row per handler and process count: the median run's ns per call (min-max) and \
            allocations per call. Exit status: 0 when every run counted its lines, 2 when one \
            failed, 64 on bad arguments.
            """)

    @Option(help: ArgumentHelp("Process counts, each measured in turn.", valueName: "n,n,..."))
    var procs = "1,4"
    @Option(help: "Calls each worker times, after 1000 to warm up.") var ops = 100_000
    @Option(help: "Runs of every handler and process count (interleaved).") var runs = 5
    @Option(help: ArgumentHelp("Directory for the logs. Default: a new one under /tmp, removed afterwards.", valueName: "path"))
    var dir: String?
    @Option(help: ArgumentHelp("Handlers to measure.", valueName: "text,logfmt,json,stream,raw,noop"))
    var handlers = HandlerBench.handlers.joined(separator: ",")

    var processCounts: [Int] { procs.split(separator: ",").compactMap { Int($0) } }
    var handlerNames: [String] { handlers.split(separator: ",").map(String.init) }

    func validate() throws {
        if processCounts.isEmpty || procs.split(separator: ",").contains(where: { (Int($0) ?? 0) < 1 }) {
            throw ValidationError("--procs takes positive counts separated by commas (got \(procs)).")
        }
        for (name, value) in [("--ops", ops), ("--runs", runs)] where value < 1 {
            throw ValidationError("\(name) must be at least 1 (got \(value)).")
        }
        for handler in handlerNames where !Self.handlers.contains(handler) {
            throw ValidationError("unknown handler \(handler) (\(Self.handlers.joined(separator: ", "))).")
        }
    }

    func run() throws {
        let directory: String
        if let dir {
            directory = dir
        } else {
            var template = Array("/tmp/mmlog-handler-bench-XXXXXX".utf8CString)
            guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
                fail("mkdtemp(/tmp/mmlog-handler-bench-XXXXXX): \(String(cString: strerror(errno)))")
            }
            directory = String(cString: made)
        }
        var measured: [String: [Run]] = [:]
        for run in 1...runs {
            for procs in processCounts {
                for handler in handlerNames {
                    measured["\(handler) \(procs)", default: []].append(measure(handler: handler, procs: procs, ops: ops, dir: directory))
                }
            }
            writeStandardError("run \(run) of \(runs) done\n")
        }
        for line in provenanceLines(directory: directory) + [""] { print(line) }
        print("| handler | procs | ns/call, median (min-max) | allocations/call |")
        print("|---|---|---|---|")
        for procs in processCounts {
            for handler in handlerNames {
                let all = measured["\(handler) \(procs)"] ?? []
                let ns = all.map(\.nanosecondsPerCall), allocations = all.map(\.allocationsPerCall)
                print("| \(Self.labels[handler] ?? handler) | \(procs) | \(fixed(median(ns), 0)) (\(fixed(ns.min() ?? 0, 0))-\(fixed(ns.max() ?? 0, 0))) "
                      + "| \(fixed(median(allocations), 2)) |")
            }
        }
        if dir == nil {
            for handler in handlerNames {
                unlink("\(directory)/\(handler).log")
                unlink("\(directory)/\(handler).log.mmlog")
            }
            rmdir(directory)
        }
    }

    static let labels = ["text": "MMLogHandler .text", "logfmt": "MMLogHandler .logfmt", "json": "MMLogHandler .json",
                         "stream": "StreamLogHandler, FILE* O_APPEND", "raw": "MMLog.append, preformatted 120 B (floor)",
                         "noop": "no-op handler (swift-log's own cost)"]
}

/// A failure while measuring: said on stderr, exit status 2.
func fail(_ message: String) -> Never {
    die(message, status: 2)
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
    for file in MMLog.files(ofLog: path).dropFirst() { unlink(file) }
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
        _ = retryingInterrupts { Int(waitpid(pid, &status, 0)) }
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
        let n = buffer.withUnsafeMutableBytes { chunk in retryingInterrupts { read(fd, chunk.baseAddress, chunk.count) } }
        if n <= 0 { break }
        for i in 0..<n where buffer[i] == 0x0A { count += 1 }
    }
    return count
}

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
}

HandlerBench.main()
