@testable import AppendBenchCore
import BenchRecords
import Foundation
import Histogram
import TestSupport
import ToolSupport
import XCTest

/// The table, CSV and JSON from a report built by hand: units, rows for every outcome.
final class ReportTests: XCTestCase {
    func run(totalMilliseconds: Double, records: Int = 400_000, size: Int = 128, failures: [String] = [],
             cpu: CPUTime = CPUTime(userNanoseconds: 60_000_000, systemNanoseconds: 140_000_000)) -> RunResult {
        var verification = VerificationReport()
        verification.wholeRecords = failures.isEmpty ? records : 0
        var measurement = Measurement(totalNanoseconds: UInt64(totalMilliseconds * 1e6), setupNanoseconds: 2_000_000,
                                      latency: nil, failures: failures)
        measurement.workerCPU = cpu
        return RunResult(run: 1, measurement: measurement, verification: failures.isEmpty ? verification : nil,
                         records: records, payloadBytes: records * size, deviceBytes: failures.isEmpty ? 2 * records * size : nil)
    }

    func report() -> BenchmarkReport {
        var options = BenchmarkOptions()
        options.backends = ["mmlog", "write", "direct", "aio"]
        func result(_ key: String, _ category: String, _ runs: [RunResult], unsupported: String? = nil) -> BackendResult {
            BackendResult(key: key, category: category, stride: 128, unsupported: unsupported, writesRecords: true,
                          preservesOrder: true, runs: runs)
        }
        return BenchmarkReport(
            options: options,
            facts: MachineFacts(kernel: "6.x", filesystem: "ext4", cores: 2,
                                device: BlockDevice(name: "vda", statPath: "/sys/dev/block/254:0/stat")),
            date: "2026-11-24T00:00:00Z",
            directory: "/tmp/x",
            results: [
                result("mmlog", "mmlog", [run(totalMilliseconds: 100)]),
                result("write", "O_APPEND with write()", [run(totalMilliseconds: 400)]),
                result("direct", "Direct I/O (O_DIRECT)", [], unsupported: "O_DIRECT not supported by this filesystem (open: Invalid argument)"),
                result("aio", "Linux AIO", [run(totalMilliseconds: 0, failures: ["worker 3 (pid 42): aio: record 17: io_submit(x): Bad address (errno 14)"])]),
            ])
    }

    func testUnitsAreDecimalGigabytesPerSecondAndTheArticlesTimePerCall() {
        let mmlog = run(totalMilliseconds: 100)
        XCTAssertEqual(mmlog.gigabytesPerSecond, 0.512, accuracy: 1e-9, "51.2 MB in 0.1 s")
        XCTAssertEqual(mmlog.microsecondsPerCall, 0.25, accuracy: 1e-9, "100 ms / 400,000 calls")
    }

    func testTheTableHasARowForEveryOutcome() {
        let table = report().table
        // CPU per call: 200 ms over 400,000 calls; Write Amp.: twice the payload reached the device.
        XCTAssertTrue(table.contains("| mmlog | 100 | 0.25 | 0.512 | 4.00x | 0.50 | 2.0 | 2.00 | yes |"), table)
        XCTAssertTrue(table.contains("| O_APPEND with write() | 400 | 1.00 | 0.128 | 1.00x | 0.50 | 2.0 | 2.00 | yes |"), table)
        XCTAssertTrue(table.contains("| Direct I/O (O_DIRECT) | unsupported: O_DIRECT not supported by this filesystem (open: Invalid argument) |"), table)
        XCTAssertTrue(table.contains("| Linux AIO | failed |"), table)
        XCTAssertTrue(table.contains("- aio: worker 3 (pid 42): aio: record 17: io_submit(x): Bad address (errno 14)"), table)
        XCTAssertTrue(table.contains("multiply ours by 7.451"), table)
        XCTAssertFalse(report().ok)
    }

    func csv(_ report: BenchmarkReport) -> CSVRows {
        CSVRows(([report.csvHeader] + report.csvRows).joined(separator: "\n") + "\n")
    }

    func testRunsTheHostSlowedAreNamed() {
        var report = report()
        XCTAssertFalse(report.table.contains("The hypervisor ran other work"), "no steal, no note")
        XCTAssertEqual(csv(report).rows[0]["steal_ms"], "", "steal_ms empty where not accounted")
        report.results[1].runs[0].measurement.stealNanoseconds = 30_000_000
        report.results[0].runs[0].measurement.stealNanoseconds = 0
        XCTAssertTrue(report.table.contains("The hypervisor ran other work on this VM's CPUs during 1 of 3 runs (steal time, "
                                            + "/proc/stat; at most 30 ms in a run of 400 ms;"), report.table)
        XCTAssertEqual(csv(report).rows[1]["steal_ms"], "30")
        XCTAssertEqual(csv(report).rows[0]["steal_ms"], "0")
        XCTAssertTrue(report.json.contains(#""steal_ms": 30"#), report.json)
    }

    func testCSVAndJSONCarryTheSameOutcomes() {
        let rows = report().csvRows
        XCTAssertEqual(rows.count, 4)
        XCTAssertTrue(rows[0].contains(",mmlog,mmlog,4,100000,128,128,"), rows[0])
        XCTAssertTrue(rows[0].contains(",100.000,0.2500,0.5120,4.000,"), rows[0])
        XCTAssertTrue(rows[2].contains(",unsupported,0,6.x,ext4,O_DIRECT not supported"), rows[2])
        XCTAssertTrue(rows[3].contains(",failed,0,"), rows[3])
        let json = report().json
        XCTAssertTrue(json.contains(#""unsupported": "O_DIRECT not supported"#), json)
        XCTAssertTrue(json.contains(#""failures": ["worker 3 (pid 42)"#), json)
        XCTAssertTrue(json.contains(#""ok": false"#), json)
    }

    /// The columns, by name and in order, that the scripts, plots and earlier CSV files read:
    /// a change here breaks every one of them.
    func testTheCSVColumnsAreTheOnesEveryCSVHas() {
        XCTAssertEqual(report().csvHeader.split(separator: ",").map(String.init), [
            "date", "backend", "category", "procs", "ops", "size", "stride", "batch", "depth", "chunk_size", "run", "runs",
            "total_ms", "per_call_us", "throughput_gbps", "speedup_vs_write", "setup_ms", "median_total_ms", "min_total_ms",
            "max_total_ms", "p50_us", "p90_us", "p99_us", "p999_us", "max_us", "verified", "records", "kernel", "filesystem",
            "error", "fsync_every", "max_chunks", "prefault", "huge_pages", "prefetch", "adaptive_pages", "warm_memory", "page_reporting",
            "steal_ms", "cpu_user_ms", "cpu_system_ms", "cpu_per_call_us", "service_cpu_ms", "rate", "achieved_rate", "device",
            "device_bytes", "write_amplification",
        ])
    }

    /// Every CSV column is in the JSON under the same name with the same value: both come from
    /// one list of fields.
    func testEveryCSVColumnIsInTheJSONWithTheSameValue() throws {
        let report = report()
        let table = csv(report)
        let parsed = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(report.json.utf8)) as? [String: Any])
        let backends = try XCTUnwrap(parsed["results"] as? [[String: Any]])
        XCTAssertEqual(table.header.count, Set(table.header).count, "no column twice")
        for row in table.rows {
            let backend = try XCTUnwrap(backends.first { $0["backend"] as? String == row["backend"] })
            let run = (backend["runs"] as? [[String: Any]])?.first { "\($0["run"] ?? "")" == row["run"] }
            for column in table.header {
                // (The invocation's "runs" count is at the top; a backend's "runs" is its list.)
                let value = run?[column] ?? parsed[column] ?? backend[column]
                let csvValue = row[column] ?? ""
                if run == nil && backend["unsupported"] != nil && value == nil { continue }  // no run: no run fields
                XCTAssertNotNil(value, "\(row["backend"]!): \(column) in the JSON")
                if let value, !(value is NSNull) {
                    if let number = value as? NSNumber, let expected = Double(csvValue) {
                        XCTAssertEqual(number.doubleValue, expected, accuracy: 1e-9, "\(row["backend"]!): \(column)")
                    } else if !(value is NSNumber) {
                        XCTAssertEqual("\(value)", csvValue, "\(row["backend"]!): \(column)")
                    }
                } else {
                    XCTAssertEqual(csvValue, "", "\(row["backend"]!): \(column) is null in the JSON")
                }
            }
        }
    }

    func testCPUAndDeviceColumns() {
        let rows = csv(report())
        let mmlog = rows.backend("mmlog")[0]
        XCTAssertEqual(mmlog["cpu_user_ms"], "60.000")
        XCTAssertEqual(mmlog["cpu_system_ms"], "140.000")
        XCTAssertEqual(mmlog["cpu_per_call_us"], "0.5000")
        XCTAssertEqual(mmlog["service_cpu_ms"], "0.000")
        XCTAssertEqual(mmlog["device"], "vda")
        XCTAssertEqual(mmlog["device_bytes"], "\(2 * 400_000 * 128)")
        XCTAssertEqual(mmlog["write_amplification"], "2.0000")
        let failed = rows.backend("aio")[0]
        XCTAssertEqual(failed["cpu_per_call_us"], "", "a failed run has no CPU figure")
        XCTAssertEqual(failed["write_amplification"], "")
        XCTAssertTrue(report().table.contains("Write Amp. is the bytes the device vda wrote during the run"), report().table)

        var noDevice = report()
        noDevice.facts.device = nil
        noDevice.facts.filesystem = "tmpfs"
        for index in noDevice.results.indices {
            for run in noDevice.results[index].runs.indices { noDevice.results[index].runs[run].deviceBytes = nil }
        }
        XCTAssertTrue(noDevice.table.contains("| mmlog | 100 | 0.25 | 0.512 | 4.00x | 0.50 | 2.0 | n/a | yes |"), noDevice.table)
        XCTAssertTrue(noDevice.table.contains("Write Amp. is n/a: tmpfs at /tmp/x has no block device"), noDevice.table)
        XCTAssertEqual(csv(noDevice).backend("mmlog")[0]["device"], "n/a")
        XCTAssertEqual(csv(noDevice).backend("mmlog")[0]["device_bytes"], "")
    }

    /// The service's CPU time is the run's too: CPU per call counts workers and collector.
    func testTheServiceCPUCountsInCPUPerCall() {
        var report = report()
        report.results[0].runs[0].measurement.serviceCPU = CPUTime(userNanoseconds: 100_000_000, systemNanoseconds: 100_000_000)
        let mmlog = csv(report).backend("mmlog")[0]
        XCTAssertEqual(mmlog["cpu_per_call_us"], "1.0000", "400 ms over 400,000 calls")
        XCTAssertEqual(mmlog["service_cpu_ms"], "200.000")
        XCTAssertEqual(mmlog["cpu_user_ms"], "160.000")
    }

    func testLatencyColumnsShowTheTail() {
        var report = report()
        report.options.latency = true
        var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
        // 10,000 calls: 9,989 of 1 us, 10 of 40 us, one of 7 ms (HdrHistogram keeps 3 digits:
        // 40,000 ns reads back as the top of its 32 ns bucket, 7,000,000 of its 4,096 ns one).
        _ = histogram.record(1_000, count: 9_989)
        _ = histogram.record(40_000, count: 10)
        _ = histogram.record(7_000_000)
        report.results[0].runs[0].measurement.latency = histogram
        XCTAssertTrue(report.table.contains("| p50 (μs) | p99 (μs) | p99.9 (μs) | max (μs) |"), report.table)
        XCTAssertTrue(report.table.contains("| mmlog | 100 | 0.25 | 0.512 | 4.00x | 0.50 | 1.00 | 1.00 | 40.03 | 7000 | 2.0 |"),
                      report.table)
        let mmlog = csv(report).backend("mmlog")[0]
        XCTAssertEqual(mmlog["p50_us"], "1.000")
        XCTAssertEqual(mmlog["p999_us"], "40.031")
        XCTAssertEqual(mmlog["max_us"], "7000.063")
    }

    func testTheRateAndEachWorkersAchievedRate() {
        var report = report()
        report.options.rate = 1000
        report.options.procs = 2
        report.results[0].runs[0].records = 2000
        report.results[0].runs[0].measurement.workerNanoseconds = [1_000_000_000, 1_250_000_000]
        XCTAssertEqual(report.results[0].runs[0].workerRates, [1000, 800])
        XCTAssertTrue(report.table.contains("| Rate (/s per worker) |"), report.table)
        XCTAssertTrue(report.table.contains("Each worker appended 1000 records per second on an absolute schedule"), report.table)
        let mmlog = csv(report).backend("mmlog")[0]
        XCTAssertEqual(mmlog["rate"], "1000")
        XCTAssertEqual(mmlog["achieved_rate"], "800.0", "the slowest worker")
        XCTAssertTrue(report.json.contains(#""worker_rates": [1000.0, 800.0]"#), report.json)
    }

    func testACSVFileWithOtherColumnsIsRefusedNotMixed() throws {
        let scratch = ScratchDirectory("appendbench-report")
        defer { scratch.remove() }
        let path = scratch.file("old.csv")
        writeBytes(path, Array("date,backend,category,total_ms\n2026-01-01,write,x,1.0\n".utf8))
        XCTAssertThrowsError(try report().appendCSV(to: path)) { error in
            XCTAssertTrue("\(error)".contains("holds CSV with other columns"), "\(error)")
        }
        XCTAssertEqual(readText(path), "date,backend,category,total_ms\n2026-01-01,write,x,1.0\n", "left as it was")
        let fresh = scratch.file("new.csv")
        try report().appendCSV(to: fresh)
        try report().appendCSV(to: fresh)
        XCTAssertEqual(CSVRows(readText(fresh)).rows.count, 8, "one header, then both reports' rows")
    }

    func testNumbersFormatWithFixedDecimals() {
        XCTAssertEqual(fixed(0.25, 2), "0.25")
        XCTAssertEqual(fixed(3.14159, 3), "3.142")
        XCTAssertEqual(fixed(1234.5, 0), "1235")
        XCTAssertEqual(fixed(0.0005, 3), "0.001")
        XCTAssertEqual(fixed(2.0, 1), "2.0")
    }
}
