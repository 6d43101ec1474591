#if canImport(Glibc)
import Glibc
#endif
import Histogram

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
        var header = ["Category", "Total Time (ms)", "Time per Call (μs)", "Throughput (GB/s)", "vs write()"]
        if options.latency { header += ["p50 (μs)", "p99 (μs)"] }
        header += ["Setup (ms)", "Verified"]
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
            var cells = [result.category, fixed(run.totalMilliseconds, run.totalMilliseconds >= 100 ? 0 : 1),
                         fixed(run.microsecondsPerCall, 2), fixed(run.gigabytesPerSecond, 3),
                         speedup(run).map { fixed($0, 2) + "x" } ?? "n/a"]
            if options.latency {
                cells += [run.measurement.latency.map { fixed(Double($0.valueAtPercentile(50)) / 1e3, 2) } ?? "",
                          run.measurement.latency.map { fixed(Double($0.valueAtPercentile(99)) / 1e3, 2) } ?? ""]
            }
            cells.append(fixed(Double(run.measurement.setupNanoseconds) / 1e6, 1))
            cells.append(verifiedCell(result))
            lines.append(row(cells))
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

    private func verifiedCell(_ result: BackendResult) -> String {
        if !result.writesRecords { return "n/a (writes nothing)" }
        let bad = result.runs.filter { $0.failed }.count
        if bad > 0 { return "FAILED (\(bad) of \(result.runs.count) runs)" }
        var cell = "yes"
        if result.runs.count > 1 { cell += " (\(result.runs.count) runs)" }
        if result.stride != options.size { cell += ", padded to \(result.stride) B" }
        if !result.preservesOrder { cell += ", order not checked" }
        return cell
    }

    private var notes: [String] {
        var notes = [
            "Throughput is payload bytes / seconds / 1e9 (decimal GB/s). The article's column is Gibit/s: "
                + "multiply ours by 7.451 (8e9 / 2^30) to compare with it.",
            "Time per Call is Total Time / (processes x operations); Total Time runs from the start barrier until the last "
                + "worker has finished and closed. Setup (forking and opening) is not in it.",
        ]
        if options.runs > 1 {
            notes.append("Each row is the median of \(options.runs) runs by total time; min and max are in the CSV/JSON.")
        }
        if let padded = results.first(where: { $0.unsupported == nil && $0.stride != options.size }) {
            notes.append("\(padded.category) pads each record to \(padded.stride) bytes (the filesystem's direct I/O alignment); "
                         + "its throughput counts payload bytes only.")
        }
        if options.backends.contains("mmlog") && (options.prefault != .write || !options.hugePages || !options.prefetch) {
            notes.append("MMLog ran with --prefault \(options.prefault.rawValue)\(options.hugePages ? "" : " --no-huge-pages")"
                         + "\(options.prefetch ? "" : " --no-prefetch").")
        }
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
        if options.fsyncEvery > 0 {
            notes.append("Every worker made its records durable (fdatasync; msync for floor) after every \(options.fsyncEvery) records.")
        }
        if options.timelineMilliseconds > 0 || options.fsyncEvery > 0 {
            notes.append("Dirty page limits: \(DirtyLimits.read().description).")
        }
        notes.append("Kernel \(facts.kernel), \(facts.filesystem) at \(directory), \(facts.cores) cores, \(date).")
        return notes
    }

    private func stealMilliseconds(_ run: RunResult) -> String? {
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

    // MARK: CSV

    public static let csvHeader = [
        "date", "backend", "category", "procs", "ops", "size", "stride", "batch", "depth", "chunk_size", "run", "runs",
        "total_ms", "per_call_us", "throughput_gbps", "speedup_vs_write", "setup_ms",
        "median_total_ms", "min_total_ms", "max_total_ms",
        "p50_us", "p90_us", "p99_us", "p999_us", "max_us",
        "verified", "records", "kernel", "filesystem", "error", "fsync_every", "max_chunks", "prefault", "huge_pages", "prefetch",
        "warm_memory", "page_reporting", "steal_ms",
    ].joined(separator: ",")

    /// One row per backend per run (unsupported backends: one row, run 0).
    public var csvRows: [String] {
        var rows: [String] = []
        for result in results {
            let common = [date, result.key, result.category, "\(options.procs)", "\(options.ops)", "\(options.size)",
                          "\(result.stride)", "\(options.batch)", "\(options.depth)", "\(options.chunkSize)"]
            if let reason = result.unsupported {
                rows.append(csvLine(common + ["0", "\(options.runs)"] + Array(repeating: "", count: 13)
                                    + ["unsupported", "0", facts.kernel, facts.filesystem, reason] + mmlogKnobs + [""]))
                continue
            }
            let stats = [result.median, result.fastest, result.slowest].map { $0.map { fixed($0.totalMilliseconds, 3) } ?? "" }
            for run in result.runs {
                let latency = run.measurement.latency
                let percentiles = [50.0, 90.0, 99.0, 99.9].map { p in latency.map { fixed(Double($0.valueAtPercentile(p)) / 1e3, 3) } ?? "" }
                    + [latency.map { fixed(Double($0.max) / 1e3, 3) } ?? ""]
                let failed = !run.measurement.failures.isEmpty
                let verified = failed ? "failed" : !result.writesRecords ? "n/a" : run.verification?.ok == true ? "yes" : "no"
                let error = run.measurement.failures.first ?? (run.verification?.ok == false ? "\(run.verification!)" : "")
                rows.append(csvLine(common + [
                    "\(run.run)", "\(options.runs)",
                    failed ? "" : fixed(run.totalMilliseconds, 3), failed ? "" : fixed(run.microsecondsPerCall, 4),
                    failed ? "" : fixed(run.gigabytesPerSecond, 4), failed ? "" : speedup(run).map { fixed($0, 3) } ?? "",
                    fixed(Double(run.measurement.setupNanoseconds) / 1e6, 3),
                ] + stats + percentiles + [verified, "\(run.verification?.wholeRecords ?? 0)", facts.kernel, facts.filesystem,
                                           error] + mmlogKnobs + [stealMilliseconds(run) ?? ""]))
            }
        }
        return rows
    }

    /// The CSV's last columns: fsync_every, the MMLog knobs, warm_memory and page_reporting.
    private var mmlogKnobs: [String] {
        ["\(options.fsyncEvery)", "\(options.maxChunks)", options.prefault.rawValue, "\(options.hugePages)", "\(options.prefetch)",
         "\(options.warmMemory)", facts.pageReporting.rawValue]
    }

    /// Appends this report's rows to `path`, writing the header first when the file is new or empty.
    public func appendCSV(to path: String) throws {
        try appendLines(csvRows, header: Self.csvHeader, to: path)
    }

    // MARK: Timeline

    /// Throughput per interval, one row per backend, run and interval, with the dirty limits
    /// in force (so a plot can mark where writeback throttling should start).
    public func appendTimeline(to path: String) throws {
        let limits = DirtyLimits.read()
        let interval = Double(options.timelineMilliseconds)
        var lines: [String] = []
        for result in results {
            for run in result.runs where run.measurement.failures.isEmpty {
                var cumulative = 0
                for (b, records) in run.measurement.timeline.enumerated() {
                    let bytes = records * options.size
                    cumulative += bytes
                    lines.append(csvLine([date, result.key, "\(options.procs)", "\(options.size)", "\(run.run)",
                                          fixed(interval, 0), fixed(Double(b + 1) * interval, 0), "\(records)", "\(bytes)",
                                          "\(cumulative)", fixed(Double(bytes) / 1e6 / (interval / 1e3), 3),
                                          "\(limits.backgroundThresholdBytes)", "\(limits.throttleBytes)",
                                          facts.kernel, facts.filesystem]))
                }
            }
        }
        try appendLines(lines, header: "date,backend,procs,size,run,interval_ms,t_ms,records,bytes,cumulative_bytes,"
                            + "mb_per_s,dirty_background_bytes,dirty_throttle_bytes,kernel,filesystem", to: path)
    }

    // MARK: JSON

    public var json: String {
        var backends: [String] = []
        for result in results {
            var fields = [("backend", jsonString(result.key)), ("category", jsonString(result.category)),
                          ("stride", "\(result.stride)")]
            if let reason = result.unsupported {
                fields.append(("unsupported", jsonString(reason)))
            } else {
                fields.append(("verified", result.writesRecords ? "\(!result.failed)" : "null"))
                fields.append(("median_total_ms", result.median.map { fixed($0.totalMilliseconds, 3) } ?? "null"))
                fields.append(("min_total_ms", result.fastest.map { fixed($0.totalMilliseconds, 3) } ?? "null"))
                fields.append(("max_total_ms", result.slowest.map { fixed($0.totalMilliseconds, 3) } ?? "null"))
                fields.append(("runs", "[" + result.runs.map(jsonRun).joined(separator: ", ") + "]"))
            }
            backends.append(jsonObject(fields))
        }
        return jsonObject([
            ("date", jsonString(date)), ("kernel", jsonString(facts.kernel)), ("filesystem", jsonString(facts.filesystem)),
            ("cores", "\(facts.cores)"), ("directory", jsonString(directory)),
            ("procs", "\(options.procs)"), ("ops", "\(options.ops)"), ("size", "\(options.size)"),
            ("batch", "\(options.batch)"), ("depth", "\(options.depth)"), ("chunk_size", "\(options.chunkSize)"),
            ("max_chunks", "\(options.maxChunks)"), ("prefault", jsonString(options.prefault.rawValue)),
            ("huge_pages", "\(options.hugePages)"), ("prefetch", "\(options.prefetch)"),
            ("warm_memory", "\(options.warmMemory)"), ("page_reporting", jsonString(facts.pageReporting.rawValue)),
            ("runs", "\(options.runs)"), ("throughput_unit", jsonString("payload bytes / s / 1e9")),
            ("ok", "\(ok)"), ("results", "[\n" + backends.joined(separator: ",\n") + "\n]"),
        ]) + "\n"
    }

    private func jsonRun(_ run: RunResult) -> String {
        var fields = [("run", "\(run.run)"), ("setup_ms", fixed(Double(run.measurement.setupNanoseconds) / 1e6, 3))]
        if let steal = stealMilliseconds(run) { fields.append(("steal_ms", steal)) }
        if run.measurement.failures.isEmpty {
            fields += [("total_ms", fixed(run.totalMilliseconds, 3)), ("per_call_us", fixed(run.microsecondsPerCall, 4)),
                       ("throughput_gbps", fixed(run.gigabytesPerSecond, 4)),
                       ("speedup_vs_write", speedup(run).map { fixed($0, 3) } ?? "null")]
        }
        if let latency = run.measurement.latency {
            fields += [50.0, 90.0, 99.0, 99.9].map { p in
                ("p\(p == 99.9 ? "999" : String(Int(p)))_us", fixed(Double(latency.valueAtPercentile(p)) / 1e3, 3))
            }
        }
        if let verification = run.verification {
            fields += [("verified", "\(verification.ok)"), ("records", "\(verification.wholeRecords)")]
            if !verification.ok { fields.append(("verification", jsonString("\(verification)"))) }
        }
        if !run.measurement.failures.isEmpty {
            fields.append(("failures", "[" + run.measurement.failures.map(jsonString).joined(separator: ", ") + "]"))
        }
        return jsonObject(fields)
    }

    public func writeJSON(to path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        if fd < 0 { throw BackendError.system("open(\(path))") }
        defer { close(fd) }
        try writeAll(fd, json, path)
    }
}

/// Appends `lines` to the CSV file at `path`, writing `header` first when the file is new or empty.
private func appendLines(_ lines: [String], header: String, to path: String) throws {
    let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
    if fd < 0 { throw BackendError.system("open(\(path))") }
    defer { close(fd) }
    var st = stat()
    if fstat(fd, &st) != 0 { throw BackendError.system("fstat(\(path))") }
    let text = (st.st_size == 0 ? [header] : []) + lines
    try writeAll(fd, text.joined(separator: "\n") + "\n", path)
}

private func writeAll(_ fd: Int32, _ text: String, _ path: String) throws {
    var text = text
    try text.withUTF8 { bytes in
        var done = 0
        while done < bytes.count {
            let n = write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { throw BackendError.system("write(\(path))") }
            done += n
        }
    }
}

private func jsonObject(_ fields: [(String, String)]) -> String {
    "{" + fields.map { "\(jsonString($0.0)): \($0.1)" }.joined(separator: ", ") + "}"
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

private func csvLine(_ fields: [String]) -> String {
    fields.map(csvField).joined(separator: ",")
}

/// `value` with exactly `decimals` digits after the point (no Foundation needed).
public func fixed(_ value: Double, _ decimals: Int) -> String {
    guard value.isFinite else { return "\(value)" }
    var scale = 1.0
    for _ in 0..<decimals { scale *= 10 }
    let scaled = (abs(value) * scale).rounded()
    let whole = scaled / scale
    let integer = UInt64(whole.rounded(.down))
    var text = (value < 0 && scaled > 0 ? "-" : "") + "\(integer)"
    if decimals > 0 {
        let fraction = UInt64(scaled - Double(integer) * scale)
        let digits = String(fraction)
        text += "." + String(repeating: "0", count: decimals - digits.count) + digits
    }
    return text
}

extension String {
    func replacingOccurrences(of target: String, with replacement: String) -> String {
        split(separator: target, omittingEmptySubsequences: false).joined(separator: replacement)
    }
}
