#if canImport(Glibc)
import Glibc
#endif
import ToolSupport

/// One value in a report row: CSV writes it as text, JSON as its type (`none`: empty / null).
enum FieldValue {
    /// Already formatted, with fixed decimals.
    case number(String)
    case text(String)
    case flag(Bool)
    case none

    static func number(_ value: Double?, _ decimals: Int) -> FieldValue {
        guard let value, value.isFinite else { return .none }
        return .number(fixed(value, decimals))
    }

    static func integer<T: BinaryInteger>(_ value: T?) -> FieldValue {
        value.map { .number("\($0)") } ?? .none
    }

    var csv: String {
        switch self {
        case .number(let text), .text(let text): return text
        case .flag(let value): return "\(value)"
        case .none: return ""
        }
    }

    var json: String {
        switch self {
        case .number(let text): return text
        case .text(let text): return jsonString(text)
        case .flag(let value): return "\(value)"
        case .none: return "null"
        }
    }
}

/// What a column describes, which decides where JSON puts it: the invocation (top level),
/// the backend (its object) or one run (its object in `runs`). CSV repeats all on every row.
enum FieldScope {
    case invocation, backend, run
}

/// A report column: its name in the CSV header and the JSON, and its value.
struct Field {
    var column: String
    var scope: FieldScope
    var value: FieldValue
}

/// The CSV and JSON forms of a report, both built from one list of fields per row (`fields`).
extension BenchmarkReport {
    /// Every column of one row, in CSV order, for `run` of `result` (nil: a backend that did
    /// not run). New columns go at the end, so older CSV readers keep their positions.
    func fields(_ result: BackendResult, _ run: RunResult?) -> [Field] {
        var fields: [Field] = []
        func add(_ column: String, _ scope: FieldScope, _ value: FieldValue) {
            fields.append(Field(column: column, scope: scope, value: value))
        }
        // A run that failed has no times, and its CPU and device figures cover part of it.
        let measured = run.flatMap { $0.measurement.failures.isEmpty ? $0 : nil }
        let latency = { (percentile: Double) in FieldValue.number(run.flatMap { self.latencyMicroseconds($0, percentile) }, 3) }
        let verified: String
        if result.unsupported != nil {
            verified = "unsupported"
        } else if let run {
            verified = !run.measurement.failures.isEmpty ? "failed" : !result.writesRecords ? "n/a"
                : run.verification?.ok == true ? "yes" : "no"
        } else {
            verified = ""
        }
        // MMLog's columns come from its backend: chunk_size where it always stood, the rest after fsync_every.
        let mmlog = MMLogBackend.reportColumns(options.mmlog)
        let error = result.unsupported ?? run.flatMap {
            $0.measurement.failures.first ?? ($0.verification?.ok == false ? "\($0.verification!)" : nil)
        } ?? ""

        add("date", .invocation, .text(date))
        add("backend", .backend, .text(result.key))
        add("category", .backend, .text(result.category))
        add("procs", .invocation, .integer(options.procs))
        add("ops", .invocation, .integer(options.ops))
        add("size", .invocation, .integer(options.size))
        add("stride", .backend, .integer(result.stride))
        add("batch", .invocation, .integer(options.batch))
        add("depth", .invocation, .integer(options.depth))
        for (column, value) in mmlog.prefix(1) { add(column, .invocation, value) }
        add("run", .run, .integer(run?.run ?? 0))
        add("runs", .invocation, .integer(options.runs))
        add("total_ms", .run, .number(measured?.totalMilliseconds, 3))
        add("per_call_us", .run, .number(measured?.microsecondsPerCall, 4))
        add("throughput_gbps", .run, .number(measured?.gigabytesPerSecond, 4))
        add("speedup_vs_write", .run, .number(measured.flatMap(speedup), 3))
        add("setup_ms", .run, .number(run.map { Double($0.measurement.setupNanoseconds) / 1e6 }, 3))
        add("median_total_ms", .backend, .number(result.median?.totalMilliseconds, 3))
        add("min_total_ms", .backend, .number(result.fastest?.totalMilliseconds, 3))
        add("max_total_ms", .backend, .number(result.slowest?.totalMilliseconds, 3))
        add("p50_us", .run, latency(50))
        add("p90_us", .run, latency(90))
        add("p99_us", .run, latency(99))
        add("p999_us", .run, latency(99.9))
        add("max_us", .run, latency(100))
        add("verified", .run, .text(verified))
        add("records", .run, .integer(run?.verification?.wholeRecords ?? 0))
        add("kernel", .invocation, .text(facts.kernel))
        add("filesystem", .invocation, .text(facts.filesystem))
        add("error", .run, .text(error))
        add("fsync_every", .invocation, .integer(options.fsyncEvery))
        for (column, value) in mmlog.dropFirst() { add(column, .invocation, value) }
        add("warm_memory", .invocation, .flag(options.warmMemory))
        add("page_reporting", .invocation, .text(facts.pageReporting.rawValue))
        add("steal_ms", .run, run.flatMap(stealMilliseconds).map { .number($0) } ?? .none)
        let cpu = measured?.measurement.cpu
        add("cpu_user_ms", .run, .number(cpu.map { Double($0.userNanoseconds) / 1e6 }, 3))
        add("cpu_system_ms", .run, .number(cpu.map { Double($0.systemNanoseconds) / 1e6 }, 3))
        add("cpu_per_call_us", .run, .number(measured?.cpuMicrosecondsPerCall, 4))
        add("service_cpu_ms", .run, .number(measured.map { Double($0.measurement.serviceCPU.totalNanoseconds) / 1e6 }, 3))
        add("rate", .invocation, .integer(options.rate))
        add("achieved_rate", .run, .number(options.rate > 0 ? measured?.workerRates.min() : nil, 1))
        add("device", .invocation, .text(facts.device?.name ?? "n/a"))
        add("device_bytes", .run, .integer(measured?.deviceBytes))
        add("write_amplification", .run, .number(result.writesRecords ? measured?.writeAmplification : nil, 4))
        return fields
    }

    // MARK: CSV

    /// The CSV header: every column of `fields`, in order.
    public var csvHeader: String {
        csvHeaderLine(fields(results.first ?? Self.noResult, nil))
    }

    /// One row per backend per run (unsupported backends: one row, run 0).
    public var csvRows: [String] {
        results.flatMap { result -> [String] in
            let runs: [RunResult?] = result.unsupported != nil || result.runs.isEmpty ? [nil] : result.runs
            return runs.map { run in csvLine(fields(result, run)) }
        }
    }

    /// Appends this report's rows to `path`, writing the header first when the file is new or
    /// empty; refuses a file whose header names other columns.
    public func appendCSV(to path: String) throws {
        try appendLines(csvRows, header: csvHeader, to: path)
    }

    /// Stands in for a backend when a report has none: its fields give the column names.
    static let noResult = BackendResult(key: "", category: "", stride: 0, writesRecords: true, preservesOrder: true)

    // MARK: Timeline

    /// One interval of one run's timeline (`--timeline`).
    struct TimelinePoint {
        var backend: String
        var run: Int
        /// 0-based: the interval ends at (index + 1) x the interval length.
        var index: Int
        var records: Int
        /// Payload bytes appended from the start to the end of this interval.
        var cumulativeBytes: Int
    }

    /// Every column of one timeline row, in CSV order, with the dirty limits in force (so a
    /// plot can mark where writeback throttling should start).
    func timelineFields(_ point: TimelinePoint, _ limits: DirtyLimits) -> [Field] {
        var fields: [Field] = []
        func add(_ column: String, _ value: FieldValue) {
            fields.append(Field(column: column, scope: .run, value: value))
        }
        let interval = Double(options.timelineMilliseconds)
        let bytes = point.records * options.size
        add("date", .text(date))
        add("backend", .text(point.backend))
        add("procs", .integer(options.procs))
        add("size", .integer(options.size))
        add("run", .integer(point.run))
        add("interval_ms", .number(interval, 0))
        add("t_ms", .number(Double(point.index + 1) * interval, 0))
        add("records", .integer(point.records))
        add("bytes", .integer(bytes))
        add("cumulative_bytes", .integer(point.cumulativeBytes))
        add("mb_per_s", .number(Double(bytes) / 1e6 / (interval / 1e3), 3))
        add("dirty_background_bytes", .integer(limits.backgroundThresholdBytes))
        add("dirty_throttle_bytes", .integer(limits.throttleBytes))
        add("kernel", .text(facts.kernel))
        add("filesystem", .text(facts.filesystem))
        return fields
    }

    /// Throughput per interval, one row per backend, run and interval (`timelineFields`).
    public func appendTimeline(to path: String) throws {
        let limits = DirtyLimits.read()
        var lines: [String] = []
        for result in results {
            for run in result.runs where run.measurement.failures.isEmpty {
                var cumulative = 0
                for (index, records) in run.measurement.timeline.enumerated() {
                    cumulative += records * options.size
                    let point = TimelinePoint(backend: result.key, run: run.run, index: index, records: records,
                                              cumulativeBytes: cumulative)
                    lines.append(csvLine(timelineFields(point, limits)))
                }
            }
        }
        let header = TimelinePoint(backend: "", run: 0, index: 0, records: 0, cumulativeBytes: 0)
        try appendLines(lines, header: csvHeaderLine(timelineFields(header, limits)), to: path)
    }

    // MARK: JSON

    /// The same fields as the CSV, nested: the invocation's at the top, each backend's in its
    /// object, each run's in the backend's `runs`.
    public var json: String {
        var backends: [String] = []
        for result in results {
            let row = fields(result, nil).filter { $0.scope == .backend }
            var object = row.map { ($0.column, $0.value.json) }
            if let reason = result.unsupported {
                object.append(("unsupported", jsonString(reason)))
            } else {
                object.append(("verified", result.writesRecords ? "\(!result.failed)" : "null"))
                object.append(("runs", "[" + result.runs.map { jsonRun(result, $0) }.joined(separator: ", ") + "]"))
            }
            backends.append(jsonObject(object))
        }
        var top = fields(results.first ?? Self.noResult, nil).filter { $0.scope == .invocation }.map { ($0.column, $0.value.json) }
        top += [("cores", "\(facts.cores)"), ("directory", jsonString(directory)),
                ("throughput_unit", jsonString("payload bytes / s / 1e9")),
                ("ok", "\(ok)"), ("results", "[\n" + backends.joined(separator: ",\n") + "\n]")]
        return jsonObject(top) + "\n"
    }

    private func jsonRun(_ result: BackendResult, _ run: RunResult) -> String {
        var object = fields(result, run).filter { $0.scope == .run }.map { ($0.column, $0.value.json) }
        if options.rate > 0 && run.measurement.failures.isEmpty {
            object.append(("worker_rates", "[" + run.workerRates.map { fixed($0, 1) }.joined(separator: ", ") + "]"))
        }
        if let verification = run.verification, !verification.ok {
            object.append(("verification", jsonString("\(verification)")))
        }
        if !run.measurement.failures.isEmpty {
            object.append(("failures", "[" + run.measurement.failures.map(jsonString).joined(separator: ", ") + "]"))
        }
        return jsonObject(object)
    }

    public func writeJSON(to path: String) throws {
        let fd = try openFile(path, O_WRONLY | O_CREAT | O_TRUNC)
        defer { close(fd) }
        try writeAll(fd, json, path)
    }
}

/// A CSV header: the columns of `fields`, in order.
private func csvHeaderLine(_ fields: [Field]) -> String {
    fields.map(\.column).joined(separator: ",")
}

/// A CSV row: the values of `fields`, in the same order as `csvHeaderLine`'s columns.
private func csvLine(_ fields: [Field]) -> String {
    fields.map { csvField($0.value.csv) }.joined(separator: ",")
}

/// Appends `lines` to the CSV file at `path`, writing `header` first when the file is new or
/// empty. A file that already starts with another header is refused: its rows would no longer
/// line up with their columns.
private func appendLines(_ lines: [String], header: String, to path: String) throws {
    let fd = try openFile(path, O_RDWR | O_CREAT | O_APPEND)
    defer { close(fd) }
    let size = try fileSize(fd, path)
    if size > 0 {
        let expected = Array((header + "\n").utf8)
        if try readAt(fd, count: expected.count, offset: 0, path) != expected {
            throw HarnessError("\(path) holds CSV with other columns (an older appendbench's?); "
                               + "write to a new file, or move that one aside")
        }
    }
    let text = (size == 0 ? [header] : []) + lines
    try writeAll(fd, text.joined(separator: "\n") + "\n", path)
}

private func jsonObject(_ fields: [(String, String)]) -> String {
    "{" + fields.map { "\(jsonString($0.0)): \($0.1)" }.joined(separator: ", ") + "}"
}
