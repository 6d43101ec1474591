#if canImport(Glibc)
import Glibc
#endif
import Histogram
import ToolSupport

/// The article's table, and the same data as CSV and JSON.
extension BenchmarkReport {
    /// The line the article's output starts with.
    public var headline: String {
        "Running benchmarks with \(options.procs) processes, \(options.ops) operations per process, \(options.size) bytes per operation"
    }

    private var writeBaseline: RunResult? {
        results.first { $0.key == "write" && !$0.failed }?.median
    }

    /// Speedup of `run` over write(O_APPEND): ratio of median throughputs.
    func speedup(_ run: RunResult) -> Double? {
        guard let base = writeBaseline else { return nil }
        return Double(base.measurement.totalNanoseconds) / Double(max(run.measurement.totalNanoseconds, 1))
    }

    /// The markdown table with its notes, as printed to stdout.
    public var table: String {
        let header = tableColumns(results.first ?? Self.noResult, nil).map(\.header)
        var lines = [headline, "", row(header), "|" + header.map { String(repeating: "-", count: max($0.count, 3)) }.joined(separator: "|") + "|"]
        var details: [String] = []
        for result in results {
            if let reason = result.unsupported {
                lines.append(row([result.category, "unsupported: \(reason)"] + Array(repeating: "", count: header.count - 2)))
                continue
            }
            guard let run = result.median else { continue }
            if !run.measurement.failures.isEmpty {
                lines.append(row([result.category, "failed"] + Array(repeating: "", count: header.count - 3) + ["FAILED"]))
                details += run.measurement.failures.map { "- \(result.key): \($0)" }
                continue
            }
            lines.append(row(tableColumns(result, run).map(\.cell)))
            for failed in result.runs where failed.failed {
                details += failed.measurement.failures.map { "- \(result.key) run \(failed.run): \($0)" }
                if let report = failed.verification, !report.ok {
                    details.append("- \(result.key) run \(failed.run): \(report)")
                }
            }
        }
        lines.append("")
        if !details.isEmpty { lines += ["Failures:"] + details + [""] }
        lines += notes
        return lines.joined(separator: "\n")
    }

    /// The table's columns as (header, cell) pairs, for the run shown of `result` (nil: the
    /// headers alone): the header row and every row come from this one list.
    private func tableColumns(_ result: BackendResult, _ run: RunResult?) -> [(header: String, cell: String)] {
        var columns = [(header: "Category", cell: result.category)]
        func add(_ header: String, _ cell: (RunResult) -> String) {
            columns.append((header, run.map(cell) ?? ""))
        }
        add("Total Time (ms)") { fixed($0.totalMilliseconds, $0.totalMilliseconds >= 100 ? 0 : 1) }
        add("Time per Call (μs)") { fixed($0.microsecondsPerCall, 2) }
        add("Throughput (GB/s)") { fixed($0.gigabytesPerSecond, 3) }
        add("vs write()") { speedup($0).map { fixed($0, 2) + "x" } ?? "n/a" }
        add("CPU per Call (μs)") { fixed($0.cpuMicrosecondsPerCall, 2) }
        if options.latency {
            for (header, percentile) in Self.latencyColumns {
                add(header) { latencyMicroseconds($0, percentile).map { fixed($0, $0 >= 1000 ? 0 : 2) } ?? "" }
            }
        }
        if options.rate > 0 { add("Rate (/s per worker)") { $0.workerRates.min().map { fixed($0, 0) } ?? "" } }
        add("Setup (ms)") { fixed(Double($0.measurement.setupNanoseconds) / 1e6, 1) }
        add("Write Amp.") { run in result.writesRecords ? run.writeAmplification.map { fixed($0, 2) } ?? "n/a" : "n/a" }
        add("Verified") { _ in verifiedCell(result) }
        return columns
    }

    private func verifiedCell(_ result: BackendResult) -> String {
        if !result.writesRecords { return "n/a (writes nothing)" }
        let bad = result.runs.filter { $0.failed }.count
        if bad > 0 { return "FAILED (\(bad) of \(result.runs.count) runs)" }
        var cell = "yes"
        if result.runs.count > 1 { cell += " (\(result.runs.count) runs)" }
        if result.encoding == .text { cell += ", as text lines" } else if result.stride != options.size { cell += ", padded to \(result.stride) B" }
        if !result.preservesOrder { cell += ", order not checked" }
        return cell
    }

    private var notes: [String] {
        var notes = [
            "Throughput is payload bytes / seconds / 1e9 (decimal GB/s). The article's column is Gibit/s: "
                + "multiply ours by 7.451 (8e9 / 2^30) to compare with it.",
            "Time per Call is Total Time / (processes x operations); Total Time runs from the start barrier until the last "
                + "worker has finished and closed (and a backend's run service has done its last work: the central log "
                + "service's collector appended the last record, journald or syslog-ng stored it). Setup (forking and opening) is not in it.",
        ]
        if options.runs > 1 {
            notes.append("Each row is the median of \(options.runs) runs by total time; min and max are in the CSV/JSON.")
        }
        if let padded = results.first(where: { $0.unsupported == nil && $0.encoding == .binary && $0.stride != options.size }) {
            notes.append("\(padded.category) pads each record to \(padded.stride) bytes (the filesystem's direct I/O alignment); "
                         + "its throughput counts payload bytes only.")
        }
        if options.backends.contains(MMLogBackend.key), let note = MMLogBackend.reportNote(options.mmlog) { notes.append(note) }
        if results.contains(where: { $0.unsupported == nil && $0.encoding == .text }) {
            notes.append("Rows verified \"as text lines\" wrote the text form of the records (RecordFormat: the same identity "
                         + "and body in printable ASCII, no NUL or newline), which their service ends with a newline; "
                         + "each line was checked as a record.")
        }
        notes += results.filter { $0.unsupported == nil }.compactMap(\.note)
        notes.append(options.warmMemory
            ? "Before each run the harness touched and released twice as much memory as the run writes (--warm-memory), so "
                + "every backend drew on memory the hypervisor already backed, as on bare metal."
            : "Memory was not warmed before runs (--no-warm-memory): in a VM that reports free memory to its host, "
                + "a run's time depends on how recently freed the memory it draws on is.")
        switch facts.pageReporting {
        case .held:
            notes.append("Free page reporting was held off during the runs (--hold-page-reporting; its order was put back "
                         + "afterwards)\(poolNote), so no run drew on memory the host had taken back.")
        case .on:
            notes.append("Free page reporting was on: this VM hands free memory to its host, and a reporting pass just before "
                         + "or during a run makes the fresh memory it allocates slow (2 MiB page-cache folios most: mmlog). "
                         + "--hold-page-reporting (as root) holds it off for an invocation.")
        case .off:
            notes.append("Free page reporting was off (page_reporting_order past the largest block)\(poolNote).")
        case .absent:
            break
        }
        if let stealNote { notes.append(stealNote) }
        notes.append("CPU per Call is the CPU time (user + system, wait4's rusage) the run's processes used from the start "
                     + "barrier's release until they exited, less what each had used before it (forking, opening, the "
                     + "barrier), over processes x operations; for a backend with a run service it includes the service's "
                     + "processes (the central log service's collector from when every worker had connected; journald and "
                     + "syslog-ng from when they were ready, read from /proc at the 100 Hz tick). User/system split per run "
                     + "in the CSV/JSON.")
        if options.latency {
            notes.append(options.rate > 0
                ? "Latency runs from each record's scheduled time, not from when the worker got to it: a stall counts "
                    + "for every record it delayed (coordinated omission corrected)."
                : "Latency is each call's own time (p50, p99, p99.9, max over every call of every worker).")
        }
        if options.rate > 0 {
            notes.append("Each worker appended \(options.rate) records per second on an absolute schedule (worker w offset by "
                         + "w/\(options.procs) of an interval), sleeping between records; Rate is the slowest worker's records "
                         + "over its time from the start barrier until it closed.")
        }
        if let device = facts.device {
            notes.append("Write Amp. is the bytes the device \(device.name) wrote during the run (its sectors-written counter, "
                         + "\(device.statPath), between a syncfs before the run and one after, outside Total Time) over "
                         + "the payload bytes; anything else writing to \(device.name) meanwhile counts too.")
        } else {
            notes.append("Write Amp. is n/a: \(facts.filesystem) at \(directory) has no block device to count writes on.")
        }
        if options.fsyncEvery > 0 {
            notes.append("Every worker made its records durable (fdatasync; msync for floor) after every \(options.fsyncEvery) records.")
            if results.contains(where: { $0.key.hasPrefix("cla") && $0.unsupported == nil }) {
                notes.append("The central log service's collector instead ran fdatasync after every \(options.fsyncEvery) records "
                             + "it appended (all workers' together), before answering (cla) or without being waited for (cla-async).")
            }
        }
        if options.timelineMilliseconds > 0 || options.fsyncEvery > 0 {
            notes.append("Dirty page limits: \(DirtyLimits.read().description).")
        }
        notes.append("Kernel \(facts.kernel), \(facts.filesystem) at \(directory), \(facts.cores) cores, \(date).")
        return notes
    }

    func stealMilliseconds(_ run: RunResult) -> String? {
        run.measurement.stealNanoseconds.map { fixed(Double($0) / 1e6, 0) }
    }

    /// Runs during which the hypervisor ran something else on this VM's CPUs.
    private var stealNote: String? {
        let runs = results.flatMap { $0.runs }
        let stolen = runs.compactMap { run in run.measurement.stealNanoseconds.flatMap { $0 > 0 ? (run, $0) : nil } }
        guard let (worst, steal) = stolen.max(by: { $0.1 < $1.1 }) else { return nil }
        return "The hypervisor ran other work on this VM's CPUs during \(stolen.count) of \(runs.count) runs (steal time, "
            + "/proc/stat; at most \(fixed(Double(steal) / 1e6, 0)) ms in a run of "
            + "\(fixed(worst.totalMilliseconds, 0)) ms; steal_ms per run in the CSV/JSON): those runs measure the host as well."
    }

    /// What `Benchmark` did besides the per-run warming when reporting was not running.
    private var poolNote: String {
        warmedPoolBytes > 0 ? " and \(warmedPoolBytes >> 20) MiB of memory were warmed once before the runs" : ""
    }

    private func row(_ cells: [String]) -> String {
        "| " + cells.joined(separator: " | ") + " |"
    }

    /// The percentiles the table shows with --latency, by column (100: the largest).
    static let latencyColumns = [("p50 (μs)", 50.0), ("p99 (μs)", 99.0), ("p99.9 (μs)", 99.9), ("max (μs)", 100.0)]

    /// The latency at `percentile` (100: the largest) in microseconds, when it was recorded.
    func latencyMicroseconds(_ run: RunResult, _ percentile: Double) -> Double? {
        guard let latency = run.measurement.latency, latency.totalCount > 0 else { return nil }
        let nanoseconds = percentile >= 100 ? latency.max : latency.valueAtPercentile(percentile)
        return Double(nanoseconds) / 1e3
    }
}

func jsonString(_ text: String) -> String {
    var out = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\t": out += "\\t"
        case "\r": out += "\\r"
        default:
            if scalar.value < 0x20 {
                out += "\\u00" + (scalar.value < 0x10 ? "0" : "") + String(scalar.value, radix: 16)
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
    }
    return out + "\""
}

/// A CSV field, quoted when it needs to be.
func csvField(_ text: String) -> String {
    guard text.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" }) else { return text }
    return "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\""
}

extension String {
    func replacingOccurrences(of target: String, with replacement: String) -> String {
        split(separator: target, omittingEmptySubsequences: false).joined(separator: replacement)
    }
}
