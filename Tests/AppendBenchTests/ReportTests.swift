@testable import AppendBenchCore
import BenchRecords
import XCTest

/// The table, CSV and JSON from a report built by hand: units, rows for every outcome.
final class ReportTests: XCTestCase {
    func run(totalMilliseconds: Double, records: Int = 400_000, size: Int = 128, failures: [String] = []) -> RunResult {
        var verification = VerificationReport()
        verification.wholeRecords = failures.isEmpty ? records : 0
        return RunResult(run: 1,
                         measurement: Measurement(totalNanoseconds: UInt64(totalMilliseconds * 1e6), setupNanoseconds: 2_000_000,
                                                  latency: nil, failures: failures),
                         verification: failures.isEmpty ? verification : nil, records: records, payloadBytes: records * size)
    }

    func report() -> BenchmarkReport {
        var options = BenchmarkOptions()
        options.backends = ["mmlog", "write", "direct", "aio"]
        func result(_ key: String, _ category: String, _ runs: [RunResult], unsupported: String? = nil) -> BackendResult {
            BackendResult(key: key, category: category, stride: 128, unsupported: unsupported, writesRecords: true,
                          preservesOrder: true, runs: runs)
        }
        return BenchmarkReport(
            options: options, facts: MachineFacts(kernel: "6.x", filesystem: "ext4", cores: 2), date: "2026-11-24T00:00:00Z",
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
        XCTAssertTrue(table.contains("| mmlog | 100 | 0.25 | 0.512 | 4.00x | 2.0 | yes |"), table)
        XCTAssertTrue(table.contains("| O_APPEND with write() | 400 | 1.00 | 0.128 | 1.00x | 2.0 | yes |"), table)
        XCTAssertTrue(table.contains("| Direct I/O (O_DIRECT) | unsupported: O_DIRECT not supported by this filesystem (open: Invalid argument) |"), table)
        XCTAssertTrue(table.contains("| Linux AIO | failed |"), table)
        XCTAssertTrue(table.contains("- aio: worker 3 (pid 42): aio: record 17: io_submit(x): Bad address (errno 14)"), table)
        XCTAssertTrue(table.contains("multiply ours by 7.451"), table)
        XCTAssertFalse(report().ok)
    }

    func testRunsTheHostSlowedAreNamed() {
        var report = report()
        XCTAssertFalse(report.table.contains("The hypervisor ran other work"), "no steal, no note")
        XCTAssertTrue(report.csvRows[0].hasSuffix(","), "steal_ms empty where not accounted: \(report.csvRows[0])")
        report.results[1].runs[0].measurement.stealNanoseconds = 30_000_000
        report.results[0].runs[0].measurement.stealNanoseconds = 0
        XCTAssertTrue(report.table.contains("The hypervisor ran other work on this VM's CPUs during 1 of 3 runs (steal time, "
                                            + "/proc/stat; at most 30 ms in a run of 400 ms;"), report.table)
        XCTAssertTrue(report.csvRows[1].hasSuffix(",30"), report.csvRows[1])
        XCTAssertTrue(report.csvRows[0].hasSuffix(",0"), report.csvRows[0])
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

    func testNumbersFormatWithFixedDecimals() {
        XCTAssertEqual(fixed(0.25, 2), "0.25")
        XCTAssertEqual(fixed(3.14159, 3), "3.142")
        XCTAssertEqual(fixed(1234.5, 0), "1235")
        XCTAssertEqual(fixed(0.0005, 3), "0.001")
        XCTAssertEqual(fixed(2.0, 1), "2.0")
    }
}
