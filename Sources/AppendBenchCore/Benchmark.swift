#if canImport(Glibc)
import Glibc
#endif
import BenchRecords
import Histogram
import MMLog
import ToolSupport

/// Everything one `appendbench` invocation measures.
public struct BenchmarkOptions: Sendable {
    public var procs = 4
    public var ops = 100_000
    public var size = 128
    public var backends: [String] = Backends.keys
    public var runs = 1
    /// Output directory; nil: a new temporary directory, removed afterwards.
    public var directory: String?
    public var keep = false
    public var batch = 1
    public var depth = 1
    /// What the `mmlog` backend opens its log with.
    public var mmlog = MMLog.Options()
    public var latency = false
    /// fdatasync (msync for mappings) after every this many records per worker; 0: never.
    public var fsyncEvery = 0
    /// Record throughput per interval of this many milliseconds; 0: no timeline.
    public var timelineMilliseconds = 0
    /// Before each run, touch and release twice as much memory as the run will write (`warmMemory`).
    public var warmMemory = true
    /// Hold the VM's free page reporting off for the invocation (root; `PageReporting`).
    public var holdPageReporting = false
    /// Records per second each worker appends, on an absolute schedule; 0: as fast as it can.
    public var rate = 0

    public init() {}

    func config(path: String) -> BackendConfig {
        BackendConfig(path: path, recordSize: size, batch: batch, depth: depth, mmlog: mmlog,
                      totalBytes: procs * ops * size, fsyncEvery: fsyncEvery)
    }
}

/// One backend, one run.
public struct RunResult: Sendable {
    public var run: Int
    public var measurement: Measurement
    /// nil when the run failed before verification, or the backend writes nothing.
    public var verification: VerificationReport?
    public var records: Int
    public var payloadBytes: Int
    /// Bytes the output's block device wrote between a `syncfs` before the run and one after
    /// (`BlockDevice`); nil where there is no block device.
    public var deviceBytes: Int?

    public init(run: Int, measurement: Measurement, verification: VerificationReport?, records: Int, payloadBytes: Int,
                deviceBytes: Int? = nil) {
        self.run = run
        self.measurement = measurement
        self.verification = verification
        self.records = records
        self.payloadBytes = payloadBytes
        self.deviceBytes = deviceBytes
    }

    public var failed: Bool { !measurement.failures.isEmpty || verification.map { !$0.ok } ?? false }
    public var totalMilliseconds: Double { Double(measurement.totalNanoseconds) / 1e6 }
    public var microsecondsPerCall: Double { Double(measurement.totalNanoseconds) / 1e3 / Double(records) }
    /// Payload bytes per second / 1e9 (decimal gigabytes; bytes per nanosecond).
    public var gigabytesPerSecond: Double { Double(payloadBytes) / Double(max(measurement.totalNanoseconds, 1)) }
    /// CPU time of every process of the run (workers and service), in microseconds per record.
    public var cpuMicrosecondsPerCall: Double { Double(measurement.cpu.totalNanoseconds) / 1e3 / Double(max(records, 1)) }
    /// Device bytes / payload bytes.
    public var writeAmplification: Double? {
        guard let deviceBytes, payloadBytes > 0 else { return nil }
        return Double(deviceBytes) / Double(payloadBytes)
    }
    /// Records per second each worker achieved: its records over its time from the start
    /// barrier until it closed its backend.
    public var workerRates: [Double] {
        let perWorker = Double(records) / Double(max(measurement.workerNanoseconds.count, 1))
        return measurement.workerNanoseconds.map { perWorker / (Double(max($0, 1)) / 1e9) }
    }
}

/// Every run of one backend.
public struct BackendResult: Sendable {
    public var key: String
    public var category: String
    public var stride: Int
    /// Why it could not run here, if it could not.
    public var unsupported: String?
    /// Whether the output holds records (false for `null`).
    public var writesRecords: Bool
    public var preservesOrder: Bool
    /// How its records are spelt (text for the services that take lines).
    public var encoding: RecordEncoding = .binary
    /// What the table says under it about this backend, if anything (`AppendBackend.tableNote`).
    public var note: String?
    public var runs: [RunResult] = []

    public var failed: Bool { runs.contains { $0.failed } }

    /// The run with the median total time (the lower middle one for an even count).
    public var median: RunResult? {
        guard !runs.isEmpty else { return nil }
        return runs.sorted { $0.measurement.totalNanoseconds < $1.measurement.totalNanoseconds }[(runs.count - 1) / 2]
    }

    public var fastest: RunResult? { runs.min { $0.measurement.totalNanoseconds < $1.measurement.totalNanoseconds } }
    public var slowest: RunResult? { runs.max { $0.measurement.totalNanoseconds < $1.measurement.totalNanoseconds } }
}

public struct BenchmarkReport: Sendable {
    public var options: BenchmarkOptions
    public var facts: MachineFacts
    public var date: String
    public var directory: String
    public var results: [BackendResult]
    /// Bytes of memory warmed once before the runs (`warmPoolBytes`); 0 when none were.
    public var warmedPoolBytes = 0

    /// True when every backend that ran completed and verified.
    public var ok: Bool { !results.contains { $0.failed } }
}

public enum Benchmark {
    /// Runs every requested backend `runs` times (interleaved, so noise hits all alike),
    /// verifying every byte of each output. `status` receives progress lines.
    public static func run(_ options: BenchmarkOptions, status: ((String) -> Void)? = nil) throws -> BenchmarkReport {
        let temporary = options.directory == nil
        let directory = try options.directory.map { dir -> String in try makeDirectories(dir); return dir }
            ?? makeTemporaryDirectory("appendbench")
        // Also when a check below refuses the run: a directory made for it goes with it.
        defer { if temporary && !options.keep { rmdir(directory) } }
        var facts = MachineFacts.probe(directory: directory)
        if options.holdPageReporting { facts.pageReporting = PageReporting.hold() }
        defer { if facts.pageReporting == .held { PageReporting.release() } }
        let started = utcTimestamp()
        var results: [BackendResult] = []
        for key in options.backends {
            guard let type = Backends.named(key) else { throw HarnessError("unknown backend '\(key)'") }
            results.append(describe(type, options, directory))
        }
        try checkSpace(results, options, directory)
        var pool = 0
        if options.warmMemory && (facts.pageReporting == .held || facts.pageReporting == .off) {
            let largest = results.filter { $0.unsupported == nil }.map { options.procs * options.ops * $0.stride }.max() ?? 0
            pool = warmPoolBytes(outputBytes: largest)
            status?("warming \(pool >> 20) MiB of memory before the runs (page reporting held)")
            warmMemory(bytes: pool)
        }

        let total = options.runs * results.filter { $0.unsupported == nil }.count
        var step = 0
        for run in 1...options.runs {
            for index in results.indices where results[index].unsupported == nil {
                step += 1
                let key = results[index].key
                let label = "[\(step)/\(total)] \(key)" + (options.runs > 1 ? " run \(run)/\(options.runs)" : "")
                let outcome = measureOnce(Backends.named(key)!, run: run, options, directory, stride: results[index].stride,
                                          device: facts.device, progress: status.map { report in { done in
                                              report("\(label): \(done)/\(options.procs * options.ops) records")
                                          } })
                results[index].runs.append(outcome)
                if options.keep && run == options.runs { continue }
                removeOutput(Backends.named(key)!, outputPath(directory, key))
            }
        }
        return BenchmarkReport(options: options, facts: facts, date: started, directory: directory, results: results,
                               warmedPoolBytes: pool)
    }

    public static func outputPath(_ directory: String, _ key: String) -> String { "\(directory)/\(key).log" }

    private static func describe(_ type: any AppendBackend.Type, _ options: BenchmarkOptions, _ directory: String) -> BackendResult {
        let config = options.config(path: outputPath(directory, type.key))
        var result = BackendResult(key: type.key, category: type.category, stride: options.size, unsupported: nil,
                                   writesRecords: type.writesRecords, preservesOrder: type.preservesOrder(config: config))
        result.encoding = type.recordEncoding
        result.note = type.tableNote(config: config)
        if let reason = type.unsupportedReason(directory: directory, config: config) {
            result.unsupported = reason
        } else {
            do { result.stride = try type.stride(directory: directory, config: config) } catch { result.unsupported = "\(error)" }
        }
        return result
    }

    private static func measureOnce<B: AppendBackend>(_ type: B.Type, run: Int, _ options: BenchmarkOptions, _ directory: String,
                                                      stride: Int, device: BlockDevice?, progress: ((Int) -> Void)?) -> RunResult {
        let path = outputPath(directory, type.key)
        removeOutput(type, path)
        settleFilesystem(directory)
        if options.warmMemory {
            warmMemory(bytes: warmMemoryBytes(outputBytes: options.procs * options.ops * stride))
        }
        let config = options.config(path: path)
        var plan = WorkerPool.Plan(procs: options.procs, ops: options.ops, config: config, latency: options.latency,
                                   scratchDirectory: directory, progress: progress)
        plan.syncEvery = options.fsyncEvery
        plan.timelineInterval = UInt64(options.timelineMilliseconds) * 1_000_000
        plan.rate = options.rate
        let deviceBefore = device?.bytesWritten()
        let measurement = WorkerPool.measure(type, plan)
        var deviceBytes: Int?
        if let device, let deviceBefore {
            settleFilesystem(directory)  // everything the run left dirty reaches the device
            deviceBytes = device.bytesWritten().map { Int($0 &- deviceBefore) }
        }
        var verification: VerificationReport?
        if measurement.failures.isEmpty && type.writesRecords {
            let expectation = Expectation(workers: options.procs, ops: options.ops, size: options.size, stride: stride,
                                          checkOrder: type.preservesOrder(config: config), encoding: type.recordEncoding)
            do {
                verification = try Verifier.verify(path: path, expectation)
            } catch {
                var report = VerificationReport()
                report.problems = ["\(error)"]
                verification = report
            }
        }
        let records = options.procs * options.ops
        return RunResult(run: run, measurement: measurement, verification: verification,
                         records: records, payloadBytes: records * options.size, deviceBytes: deviceBytes)
    }

    /// Refuses to start a run that cannot fit, rather than failing half way through it.
    private static func checkSpace(_ results: [BackendResult], _ options: BenchmarkOptions, _ directory: String) throws {
        let sizes = results.filter { $0.unsupported == nil && $0.writesRecords }.map { options.procs * options.ops * $0.stride }
        let needed = options.keep ? sizes.reduce(0, +) : (sizes.max() ?? 0)
        if let available = availableBytes(at: directory), needed > available {
            throw HarnessError("the output needs \(needed) bytes in \(directory) but only \(available) are free; "
                                 + "use fewer --ops or --procs, a smaller --size, or another --dir")
        }
    }

    private static func removeOutput(_ type: any AppendBackend.Type, _ path: String) {
        for file in type.outputFiles(for: path) { removeTree(file) }
    }
}
