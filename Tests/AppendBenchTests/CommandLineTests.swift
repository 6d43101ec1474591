#if canImport(Glibc)
import Glibc
#endif
@testable import AppendBenchCore
import Foundation
import TestSupport
import XCTest

/// The `appendbench` executable as a user runs it: output, files, exit codes.
final class CommandLineTests: XCTestCase {
    var scratch: ScratchDirectory!

    override func setUp() { scratch = ScratchDirectory("appendbench-cli") }
    override func tearDown() { scratch.remove() }

    func appendbench(_ arguments: [String]) -> (status: ExitStatus, stdout: String, stderr: String) {
        TestSupport.run(product("appendbench"), arguments)
    }

    func testASmallRunOfEveryBackendVerifies() throws {
        let csv = scratch.file("out.csv"), json = scratch.file("out.json")
        let result = appendbench(["--procs", "3", "--ops", "400", "--size", "128", "--dir", scratch.file("run"),
                                  "--csv", csv, "--json", json])
        XCTAssertEqual(result.status.code, 0, result.stdout + result.stderr)
        let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        XCTAssertEqual(lines[0], "Running benchmarks with 3 processes, 400 operations per process, 128 bytes per operation")
        XCTAssertEqual(lines[1], "")
        XCTAssertTrue(lines[2].hasPrefix("| Category | Total Time (ms) | Time per Call (μs) | Throughput (GB/s) | vs write() |"), lines[2])
        for category in ["mmlog", "O_APPEND with write()", "writev() with O_APPEND", "FILE streams (fwrite)",
                         "Direct I/O (O_DIRECT)", "Linux AIO", "io_uring", "central log service (acknowledged)",
                         "central log service (fire and forget)", "journald (fire and forget)", "syslog (fire and forget)",
                         "floor (prefaulted mmap, not a log)", "null (harness overhead)"] {
            let row = lines.first { $0.hasPrefix("| \(category) |") }
            XCTAssertNotNil(row, "row for \(category) in\n\(result.stdout)")
            if let row, !row.contains("unsupported") && !row.contains("null") {
                XCTAssertTrue(row.hasSuffix("yes |") || row.contains("| yes,"), row)
            }
        }

        let rows = readText(csv).split(separator: "\n")
        XCTAssertTrue(rows[0].hasPrefix("date,backend,category,procs,ops,size,stride,"), String(rows[0]))
        for column in ["run", "total_ms", "per_call_us", "throughput_gbps", "verified", "setup_ms", "kernel", "filesystem", "p99_us",
                       "p999_us", "max_us", "cpu_user_ms", "cpu_system_ms", "cpu_per_call_us", "service_cpu_ms", "rate",
                       "achieved_rate", "device", "device_bytes", "write_amplification"] {
            XCTAssertTrue(rows[0].split(separator: ",").contains(Substring(column)), "CSV column \(column)")
        }
        XCTAssertEqual(rows.count, 1 + Backends.all.count, "header and one row per backend")

        let parsed = try JSONSerialization.jsonObject(with: Data(readBytes(json))) as? [String: Any]
        XCTAssertEqual(parsed?["ok"] as? Bool, true)
        let backends = parsed?["results"] as? [[String: Any]] ?? []
        XCTAssertEqual(backends.count, Backends.all.count)
        for file in MMLogBackend.outputFiles(for: Benchmark.outputPath(scratch.file("run"), MMLogBackend.key)) {
            XCTAssertNil(fileSize(file), "\(file): outputs are removed without --keep")
        }

        // CPU time: present and positive for every backend that ran, the same in CSV and JSON,
        // and user + system over the calls is the per-call figure.
        for row in CSVRows(readText(csv)).rows where row["verified"] != "unsupported" {
            let key = row["backend"] ?? "?"
            let user = Double(row["cpu_user_ms"] ?? "") ?? -1, system = Double(row["cpu_system_ms"] ?? "") ?? -1
            let perCall = Double(row["cpu_per_call_us"] ?? "") ?? -1
            XCTAssertGreaterThan(perCall, 0, "\(key): CPU per call")
            XCTAssertEqual(perCall, (user + system) * 1000 / (3 * 400), accuracy: 0.01, "\(key): (user + system) / calls")
            let service = Double(row["service_cpu_ms"] ?? "") ?? -1
            if ["cla", "cla-async", "journald", "syslog"].contains(key) {
                XCTAssertGreaterThan(service, 0, "\(key): the collector's or daemon's CPU time")
            } else {
                XCTAssertEqual(service, 0, "\(key) has no collector or daemon")
            }
            let run = (backends.first { $0["backend"] as? String == key }?["runs"] as? [[String: Any]])?.first
            XCTAssertEqual((run?["cpu_per_call_us"] as? NSNumber)?.doubleValue ?? -1, perCall, accuracy: 1e-9, "\(key) in the JSON")
            XCTAssertEqual((run?["cpu_user_ms"] as? NSNumber)?.doubleValue ?? -1, user, accuracy: 1e-9, "\(key) in the JSON")
        }
        XCTAssertTrue(result.stdout.contains("| CPU per Call (μs) |"), result.stdout)
        XCTAssertTrue(result.stdout.contains("| Write Amp. |"), result.stdout)
    }

    /// The central log service, acknowledged and fire and forget, at the record sizes of
    /// the article's tables: every record arrives, whole, in each worker's order.
    func testTheCentralLogServiceVerifiesAtOneByteAPageLessOneAndInBetween() {
        for size in ["1", "128", "4095"] {
            let csv = scratch.file("cla-\(size).csv")
            let result = appendbench(["--procs", "3", "--ops", "700", "--size", size, "--backends", "cla,cla-async,write",
                                      "--dir", scratch.file("cla-\(size)"), "--csv", csv])
            XCTAssertEqual(result.status.code, 0, result.stdout + result.stderr)
            for key in ["cla", "cla-async"] {
                let row = CSVRows(readText(csv)).backend(key).first
                XCTAssertEqual(row?["verified"], "yes", "\(key) at \(size) B: \(result.stdout)")
                XCTAssertEqual(row?["records"], "2100", "\(key) at \(size) B")
            }
            XCTAssertTrue(result.stdout.contains("| central log service (acknowledged) | "), result.stdout)
            XCTAssertTrue(result.stdout.contains("| central log service (fire and forget) | "), result.stdout)
        }
    }

    /// `--fsync-every 1` is the article's original service: append, fsync, answer.
    func testTheServiceWithAnFsyncPerRecordStillVerifies() {
        let result = appendbench(["--procs", "2", "--ops", "150", "--size", "128", "--backends", "cla,cla-async,write,mmlog",
                                  "--fsync-every", "1", "--dir", scratch.file("fsync")])
        XCTAssertEqual(result.status.code, 0, result.stdout + result.stderr)
        XCTAssertFalse(result.stdout.contains("FAILED"), result.stdout)
        XCTAssertTrue(result.stdout.contains("The central log service's collector instead ran fdatasync after every 1 records"),
                      result.stdout)
    }

    /// A collector killed mid-run fails its backend's row, named, and every other backend is
    /// still measured; the exit status says something failed.
    func testAKilledCollectorFailsItsBackendAndTheOthersAreMeasured() throws {
        // Paced at 1000 records a second, each service run lasts 3 s: long enough to find.
        let child = spawn(product("appendbench"), ["--procs", "2", "--ops", "3000", "--size", "128", "--rate", "1000",
                                                   "--backends", "cla,cla-async,write,null", "--dir", scratch.file("killed"),
                                                   "--csv", scratch.file("killed.csv")],
                          stdoutPath: scratch.file("killed.out"))
        var killed: [pid_t] = []
        for _ in 0..<2 {
            var collector: pid_t?
            for _ in 0..<3000 where collector == nil {
                collector = childProcesses(of: child.pid, named: "cla-collector").first { !killed.contains($0) }
                if collector == nil { usleep(10_000) }
            }
            let pid = try XCTUnwrap(collector, "found a collector of appendbench (pid \(child.pid))")
            usleep(300_000)  // mid-run
            XCTAssertEqual(kill(pid, SIGKILL), 0)
            killed.append(pid)
        }
        let (status, stderr) = child.wait()
        let stdout = readText(scratch.file("killed.out"))
        XCTAssertEqual(status.code, 1, stdout + stderr)
        XCTAssertTrue(stdout.contains("| central log service (acknowledged) | failed |"), stdout)
        XCTAssertTrue(stdout.contains("| central log service (fire and forget) | failed |"), stdout)
        XCTAssertTrue(stdout.contains("- cla: collector (pid \(killed[0])) killed by signal 9"), stdout)
        XCTAssertTrue(stdout.contains("- cla-async: collector (pid \(killed[1])) killed by signal 9"), stdout)
        let rows = CSVRows(readText(scratch.file("killed.csv")))
        XCTAssertEqual(rows.backend("cla").first?["verified"], "failed")
        XCTAssertEqual(rows.backend("cla-async").first?["verified"], "failed")
        XCTAssertEqual(rows.backend("write").first?["verified"], "yes", "the others are measured")
        XCTAssertEqual(rows.backend("null").first?["verified"], "n/a")
        XCTAssertFalse(rows.backend("write").first?["total_ms"]?.isEmpty ?? true)
    }

    /// Pids of the children of `parent` whose name (/proc/PID/comm) is `name`.
    func childProcesses(of parent: pid_t, named name: String) -> [pid_t] {
        guard let entries = opendir("/proc") else { return [] }
        defer { closedir(entries) }
        var found: [pid_t] = []
        while let entry = readdir(entries) {
            let file = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard let pid = pid_t(file) else { continue }
            // "pid (comm) state ppid ...": comm may hold spaces, so split after its last ')'.
            let stat = readText("/proc/\(file)/stat")
            guard let open = stat.firstIndex(of: "("), let close = stat.lastIndex(of: ")") else { continue }
            let comm = stat[stat.index(after: open)..<close]
            let rest = stat[stat.index(after: close)...].split(separator: " ")
            if comm == name, rest.count > 1, pid_t(rest[1]) == parent { found.append(pid) }
        }
        return found
    }

    /// --latency: p50 <= p99 <= p99.9 <= max, the same in the table's columns, CSV and JSON.
    func testLatencyColumnsShowTheTailConsistently() throws {
        let csv = scratch.file("latency.csv"), json = scratch.file("latency.json")
        let result = appendbench(["--procs", "2", "--ops", "3000", "--size", "128", "--backends", "write,cla,null", "--latency",
                                  "--dir", scratch.file("latency"), "--csv", csv, "--json", json])
        XCTAssertEqual(result.status.code, 0, result.stdout + result.stderr)
        XCTAssertTrue(result.stdout.contains("| p50 (μs) | p99 (μs) | p99.9 (μs) | max (μs) |"), result.stdout)
        let parsed = try JSONSerialization.jsonObject(with: Data(readBytes(json))) as? [String: Any]
        for row in CSVRows(readText(csv)).rows {
            let key = row["backend"] ?? "?"
            let values = ["p50_us", "p99_us", "p999_us", "max_us"].map { Double(row[$0] ?? "") ?? -1 }
            XCTAssertGreaterThan(values[0], 0, key)
            XCTAssertEqual(values, values.sorted(), "\(key): percentiles in order")
            let run = ((parsed?["results"] as? [[String: Any]])?.first { $0["backend"] as? String == key }?["runs"] as? [[String: Any]])?.first
            XCTAssertEqual((run?["p999_us"] as? NSNumber)?.doubleValue ?? -1, values[2], accuracy: 1e-9, key)
            XCTAssertEqual((run?["max_us"] as? NSNumber)?.doubleValue ?? -1, values[3], accuracy: 1e-9, key)
        }
    }

    /// --rate N: each worker appends N records a second. Judged from the run's own figures
    /// (each worker's records over its own time, from its slot), so a slow machine does not
    /// fail it, but a worker that does not pace (far above N) or drifts (below) does. A run
    /// the host stalled near its end can miss by more than 5%; then it is measured again,
    /// at most three times.
    func testRateKeepsEachWorkerWithinFivePercentOfTheAskedRate() throws {
        var attempts: [String] = []
        for attempt in 1...3 {
            let json = scratch.file("rate-\(attempt).json")
            let result = appendbench(["--procs", "2", "--ops", "400", "--size", "128", "--rate", "400", "--backends", "write,cla",
                                      "--dir", scratch.file("rate"), "--json", json])
            XCTAssertEqual(result.status.code, 0, result.stdout + result.stderr)
            let parsed = try JSONSerialization.jsonObject(with: Data(readBytes(json))) as? [String: Any]
            XCTAssertEqual(parsed?["rate"] as? Int, 400)
            var misses: [String] = []
            for backend in parsed?["results"] as? [[String: Any]] ?? [] {
                let run = (backend["runs"] as? [[String: Any]])?.first
                let rates = (run?["worker_rates"] as? [NSNumber])?.map(\.doubleValue) ?? []
                XCTAssertEqual(rates.count, 2, "\(backend["backend"] ?? "?"): a rate per worker")
                let total = (run?["total_ms"] as? NSNumber)?.doubleValue ?? 0
                // 400 records at 400 a second: the last is due at 997.5-998.75 ms.
                XCTAssertGreaterThan(total, 997, "\(backend["backend"] ?? "?"): paced, not as fast as it can")
                for rate in rates where abs(rate - 400) > 20 { misses.append("\(backend["backend"] ?? "?") \(rate)/s") }
            }
            if misses.isEmpty { return }
            attempts.append("attempt \(attempt): " + misses.joined(separator: ", "))
        }
        XCTFail("workers outside 380-420 records/s in every attempt: \(attempts.joined(separator: "; "))")
    }

    /// A paced worker sleeps between records: at 100 records a second for 1.5 s, the null
    /// backend's two workers use a small part of the 3 CPU-seconds that spinning would take.
    func testAPacedWorkerSleepsRatherThanSpins() {
        let csv = scratch.file("sleep.csv")
        let result = appendbench(["--procs", "2", "--ops", "150", "--size", "64", "--rate", "100", "--backends", "null",
                                  "--csv", csv])
        XCTAssertEqual(result.status.code, 0, result.stdout + result.stderr)
        let row = CSVRows(readText(csv)).backend("null").first
        let cpu = (Double(row?["cpu_user_ms"] ?? "") ?? .infinity) + (Double(row?["cpu_system_ms"] ?? "") ?? .infinity)
        XCTAssertGreaterThan(Double(row?["total_ms"] ?? "") ?? 0, 1480, "paced")
        XCTAssertLessThan(cpu, 300, "CPU ms over a 1.5 s paced run of two workers: \(row ?? [:])")
    }

    /// Device bytes: on a block device, at least the payload reaches it (syncfs after the run);
    /// on tmpfs there is no device, and the report says n/a.
    func testDeviceBytesOnABlockDeviceAndNotApplicableOnTmpfs() throws {
        let csv = scratch.file("device.csv")
        let result = appendbench(["--procs", "2", "--ops", "2000", "--size", "512", "--backends", "write,cla,null",
                                  "--dir", scratch.file("device"), "--csv", csv])
        XCTAssertEqual(result.status.code, 0, result.stdout + result.stderr)
        let rows = CSVRows(readText(csv))
        if let write = rows.backend("write").first, write["device"] != "n/a" {
            XCTAssertTrue(result.stdout.contains("Write Amp. is the bytes the device \(write["device"]!) wrote"), result.stdout)
            for key in ["write", "cla"] {
                let row = rows.backend(key).first
                XCTAssertGreaterThanOrEqual(Int(row?["device_bytes"] ?? "") ?? 0, 2 * 2000 * 512, "\(key): \(row ?? [:])")
                XCTAssertGreaterThanOrEqual(Double(row?["write_amplification"] ?? "") ?? 0, 1.0, key)
            }
            XCTAssertEqual(rows.backend("null").first?["write_amplification"], "", "null appends nothing")
        }

        guard filesystemIsTmpfs("/dev/shm") else { throw XCTSkip("/dev/shm is not tmpfs here") }
        let shm = ScratchDirectory("appendbench-device", parent: "/dev/shm")
        defer { shm.remove() }
        let tmpfsCSV = scratch.file("tmpfs.csv")
        let onTmpfs = appendbench(["--procs", "2", "--ops", "500", "--size", "128", "--backends", "write",
                                   "--dir", shm.file("run"), "--csv", tmpfsCSV])
        XCTAssertEqual(onTmpfs.status.code, 0, onTmpfs.stdout + onTmpfs.stderr)
        XCTAssertTrue(onTmpfs.stdout.contains("Write Amp. is n/a: tmpfs at "), onTmpfs.stdout)
        XCTAssertTrue(onTmpfs.stdout.contains("| n/a | yes |"), onTmpfs.stdout)
        let row = CSVRows(readText(tmpfsCSV)).backend("write").first
        XCTAssertEqual(row?["device"], "n/a")
        XCTAssertEqual(row?["device_bytes"], "")
        XCTAssertEqual(row?["write_amplification"], "")
    }

    func testOneByteAndNearlyAPageRecords() {
        for size in ["1", "4095"] {
            let result = appendbench(["--procs", "2", "--ops", "300", "--size", size, "--dir", scratch.file("s\(size)"),
                                      "--backends", "mmlog,write,writev,fwrite,direct,aio,uring"])
            XCTAssertEqual(result.status.code, 0, result.stdout + result.stderr)
            XCTAssertFalse(result.stdout.contains("FAILED"), result.stdout)
        }
    }

    func testRunsReportTheMedianAndKeepLeavesTheOutputs() {
        let dir = scratch.file("keep")
        let result = appendbench(["--procs", "2", "--ops", "1000", "--size", "64", "--backends", "mmlog,write",
                                  "--runs", "3", "--dir", dir, "--keep", "--latency", "--csv", scratch.file("runs.csv")])
        XCTAssertEqual(result.status.code, 0, result.stdout + result.stderr)
        XCTAssertTrue(result.stdout.contains("median of 3 runs"), result.stdout)
        XCTAssertTrue(result.stdout.contains("| p50 (μs) | p99 (μs) |"), result.stdout)
        let mmlog = Benchmark.outputPath(dir, MMLogBackend.key)
        XCTAssertEqual(fileSize(mmlog), 2 * 1000 * 64)
        for file in MMLogBackend.outputFiles(for: mmlog) { XCTAssertNotNil(fileSize(file), "\(file) is kept") }
        XCTAssertEqual(fileSize(Benchmark.outputPath(dir, WriteBackend.key)), 2 * 1000 * 64)
        XCTAssertEqual(readText(scratch.file("runs.csv")).split(separator: "\n").count, 1 + 2 * 3)
    }

    func testFsyncEveryAndATimelineAreRecordedAndStillVerified() {
        let timeline = scratch.file("timeline.csv")
        let result = appendbench(["--procs", "2", "--ops", "3000", "--size", "512", "--backends", "mmlog,write,fwrite,floor",
                                  "--fsync-every", "1000", "--timeline", "5", "--timeline-csv", timeline,
                                  "--dir", scratch.file("durable"), "--csv", scratch.file("durable.csv")])
        XCTAssertEqual(result.status.code, 0, result.stdout + result.stderr)
        XCTAssertTrue(result.stdout.contains("after every 1000 records"), result.stdout)
        XCTAssertTrue(result.stdout.contains("Dirty page limits: "), result.stdout)
        let rows = readText(timeline).split(separator: "\n")
        XCTAssertTrue(rows[0].hasPrefix("date,backend,procs,size,run,interval_ms,t_ms,records,bytes,cumulative_bytes,mb_per_s,"))
        let series = CSVRows(readText(timeline))
        for key in ["mmlog", "write", "fwrite", "floor"] {
            let intervals = series.backend(key)
            XCTAssertFalse(intervals.isEmpty, "timeline rows for \(key)")
            let records = intervals.map { Int($0["records"] ?? "") ?? -1 }.reduce(0, +)
            XCTAssertEqual(records, 2 * 3000, "\(key): the intervals add up to every record")
        }
        // fsync_every, MMLog's knobs, warm_memory, page_reporting and steal_ms in the CSV.
        let row = CSVRows(readText(scratch.file("durable.csv"))).backend("write").first ?? [:]
        XCTAssertEqual(row["fsync_every"], "1000", "\(row)")
        XCTAssertEqual([row["max_chunks"], row["prefault"], row["huge_pages"], row["prefetch"]], ["4", "write", "true", "true"], "\(row)")
        XCTAssertEqual(row["warm_memory"], "true")
        XCTAssertEqual(row["page_reporting"], pageReportingNow)
        XCTAssertNotNil(row["steal_ms"])
    }

    func testMMLogKnobsReachTheLogAndTheReport() {
        let result = appendbench(["--procs", "2", "--ops", "3000", "--size", "700", "--backends", "mmlog",
                                  "--chunk-size", "\(2 << 20)", "--max-chunks", "2", "--prefault", "read", "--no-huge-pages",
                                  "--no-warm-memory", "--json", scratch.file("knobs.json"), "--csv", scratch.file("knobs.csv")])
        XCTAssertEqual(result.status.code, 0, result.stdout + result.stderr)
        XCTAssertTrue(result.stdout.contains("MMLog ran with --prefault read --no-huge-pages."), result.stdout)
        XCTAssertTrue(result.stdout.contains("Memory was not warmed before runs (--no-warm-memory)"), result.stdout)
        let row = CSVRows(readText(scratch.file("knobs.csv"))).backend("mmlog").first ?? [:]
        XCTAssertEqual([row["chunk_size"], row["max_chunks"], row["prefault"], row["huge_pages"], row["prefetch"]],
                       ["\(2 << 20)", "2", "read", "false", "true"], "\(row)")
        XCTAssertEqual([row["fsync_every"], row["warm_memory"], row["page_reporting"]], ["0", "false", pageReportingNow], "\(row)")
        let json = readText(scratch.file("knobs.json"))
        XCTAssertTrue(json.contains("\"prefault\": \"read\"") && json.contains("\"warm_memory\": false"), json)
    }

    /// What the CSV's page_reporting column says of this machine when nothing holds it.
    var pageReportingNow: String { PageReporting.current.rawValue }

    let pageReportingOrder = PageReporting.parameter

    func testHoldingPageReportingPutsTheOrderBack() throws {
        let before = readText(pageReportingOrder)
        let result = appendbench(["--procs", "1", "--ops", "2000", "--size", "512", "--backends", "mmlog,write", "--runs", "2",
                                  "--hold-page-reporting", "--csv", scratch.file("held.csv")])
        XCTAssertEqual(result.status.code, 0, result.stdout + result.stderr)
        XCTAssertEqual(readText(pageReportingOrder), before, "the order is put back")
        let state = CSVRows(readText(scratch.file("held.csv"))).rows.last?["page_reporting"]
        switch pageReportingNow {
        case "absent":
            XCTAssertEqual(state, "absent")
        case "off":
            XCTAssertEqual(state, "off")
        default:
            if geteuid() == 0 {
                XCTAssertEqual(state, "held")
                XCTAssertTrue(result.stdout.contains("Free page reporting was held off during the runs"), result.stdout)
            } else {
                XCTAssertEqual(state, "on")
                XCTAssertTrue(result.stderr.contains("could not hold free page reporting off"), result.stderr)
            }
        }
    }

    func testAKilledHarnessPutsThePageReportingOrderBack() throws {
        guard pageReportingNow == "on", geteuid() == 0 else {
            throw XCTSkip("needs root and free page reporting (a VM with a balloon device)")
        }
        let before = readText(pageReportingOrder)
        let child = spawn(product("appendbench"), ["--procs", "1", "--ops", "200000", "--size", "512", "--backends", "write",
                                                   "--runs", "20", "--hold-page-reporting", "--dir", scratch.file("killed")])
        // Polled without sleeping, so the signal lands as close to the change as it can
        // (a supervisor that saw it): the order must come back even then.
        var held = false
        let deadline = DispatchTime.now().uptimeNanoseconds + 10_000_000_000
        while !held && DispatchTime.now().uptimeNanoseconds < deadline {
            held = readText(pageReportingOrder) != before
        }
        XCTAssertTrue(held, "the harness held reporting off")
        child.kill(SIGTERM)
        let (status, _) = child.wait()
        XCTAssertEqual(status.signal, SIGTERM, "\(status)")
        XCTAssertEqual(readText(pageReportingOrder), before, "SIGTERM puts the order back")
    }

    func testBadInputGetsAClearMessageAndAFailingStatus() {
        let file = scratch.file("plain-file")
        writeBytes(file, [1])
        let cases: [([String], String)] = [
            (["--procs", "0"], "--procs must be at least 1"),
            (["--ops=-5"], "--ops must be at least 1"),
            (["--procs=-2"], "--procs must be at least 1"),
            (["--size", "0"], "--size must be at least 1"),
            (["--runs", "0"], "--runs must be at least 1"),
            (["--fsync-every=-1"], "--fsync-every must be 0 (never) or more"),
            (["--rate=-5"], "--rate must be 0 (unlimited) or a number of records per second"),
            (["--backends", "mmlog,nope"], "unknown backend 'nope'"),
            (["--chunk-size", "5000"], "--chunk-size 5000 must be a power of two"),
            (["--size", "2000000000"], "--size 2000000000 is over 1 GiB"),
            (["--dir", file + "/sub"], "mkdir(\(file)/sub)"),
            (["--procs", "lots"], "lots"),
        ]
        for (arguments, message) in cases {
            let setsOps = arguments.contains { $0.hasPrefix("--ops") }
            let result = appendbench(setsOps ? arguments : arguments + ["--ops", "10"])
            XCTAssertNotEqual(result.status.code, 0, "\(arguments) should fail")
            XCTAssertTrue(result.stderr.contains(message), "\(arguments): stderr was: \(result.stderr)")
            XCTAssertTrue(result.stdout.isEmpty, "\(arguments): no table on bad input")
        }
    }

    func testHelpReadsLikeAManPage() {
        let result = appendbench(["--help"])
        XCTAssertEqual(result.status.code, 0)
        let help = result.stdout.split(whereSeparator: { $0 == " " || $0 == "\n" }).joined(separator: " ")
        for text in ["--procs", "--backends", "--latency", "start barrier", "mmlog (mmlog)", "Exit status"] {
            XCTAssertTrue(help.contains(text), "help mentions \(text)")
        }
    }

    func testAWorkerThatDiesIsNamedAndTheOtherRowsKept() throws {
        // A 512 kB file size limit: the workers' writes past it get SIGXFSZ mid-run.
        let command = "ulimit -f 1000; exec \(product("appendbench")) --procs 2 --ops 1000 --size 1000 "
            + "--backends write,mmlog,null --dir \(scratch.file("limited"))"
        let result = TestSupport.run("/bin/sh", ["-c", command])
        XCTAssertEqual(result.status.code, 1, result.stdout + result.stderr)
        XCTAssertTrue(result.stdout.contains("| O_APPEND with write() | failed |"), result.stdout)
        XCTAssertTrue(result.stdout.contains("| mmlog | failed |"), result.stdout)
        XCTAssertTrue(result.stdout.contains("| null (harness overhead) | "), "the other rows are kept: \(result.stdout)")
        XCTAssertTrue(result.stdout.contains("- write: worker "), result.stdout)
        XCTAssertTrue(result.stdout.contains("File size limit exceeded"), result.stdout)
    }

    func testAnOutputThatCannotFitIsRefusedBeforeRunning() {
        let leftBefore = temporaryOutputDirectories()
        let result = appendbench(["--procs", "4", "--ops", "100000000000", "--size", "1000000", "--backends", "write,null"])
        XCTAssertNotEqual(result.status.code, 0)
        XCTAssertTrue(result.stderr.contains("the output needs 400000000000000000 bytes"), result.stderr)
        XCTAssertTrue(result.stdout.isEmpty)
        XCTAssertEqual(temporaryOutputDirectories().subtracting(leftBefore), [], "the refused run left its directory behind")
    }

    /// The harness's own temporary output directories (`appendbench-XXXXXX` in $TMPDIR or /tmp).
    func temporaryOutputDirectories() -> Set<String> {
        let base = getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp"
        guard let dir = opendir(base) else { return [] }
        defer { closedir(dir) }
        var found: Set<String> = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name.hasPrefix("appendbench-"), name.count == "appendbench-".count + 6 { found.insert(name) }
        }
        return found
    }

    func filesystemIsTmpfs(_ path: String) -> Bool {
        readText("/proc/self/mounts").split(separator: "\n").contains { line in
            let fields = line.split(separator: " ")
            return fields.count > 2 && fields[1] == Substring(path) && fields[2] == "tmpfs"
        }
    }
}
