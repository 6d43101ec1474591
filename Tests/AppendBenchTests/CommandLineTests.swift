#if canImport(Glibc)
import Glibc
#endif
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
                         "Direct I/O (O_DIRECT)", "Linux AIO", "io_uring", "floor (prefaulted mmap, not a log)",
                         "null (harness overhead)"] {
            let row = lines.first { $0.hasPrefix("| \(category) |") }
            XCTAssertNotNil(row, "row for \(category) in\n\(result.stdout)")
            if let row, !row.contains("unsupported") && !row.contains("null") {
                XCTAssertTrue(row.hasSuffix("yes |") || row.contains("| yes,"), row)
            }
        }

        let rows = readText(csv).split(separator: "\n")
        XCTAssertTrue(rows[0].hasPrefix("date,backend,category,procs,ops,size,stride,"), String(rows[0]))
        for column in ["run", "total_ms", "per_call_us", "throughput_gbps", "verified", "setup_ms", "kernel", "filesystem", "p99_us"] {
            XCTAssertTrue(rows[0].split(separator: ",").contains(Substring(column)), "CSV column \(column)")
        }
        XCTAssertEqual(rows.count, 1 + 9, "header and one row per backend")

        let parsed = try JSONSerialization.jsonObject(with: Data(readBytes(json))) as? [String: Any]
        XCTAssertEqual(parsed?["ok"] as? Bool, true)
        XCTAssertEqual((parsed?["results"] as? [Any])?.count, 9)
        XCTAssertNil(fileSize(scratch.file("run/mmlog.log")), "outputs are removed without --keep")
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
        XCTAssertEqual(fileSize(dir + "/mmlog.log"), 2 * 1000 * 64)
        XCTAssertNotNil(fileSize(dir + "/mmlog.log.mmlog"))
        XCTAssertEqual(fileSize(dir + "/write.log"), 2 * 1000 * 64)
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
        for key in ["mmlog", "write", "fwrite", "floor"] {
            let series = rows.dropFirst().filter { $0.split(separator: ",")[1] == Substring(key) }
            XCTAssertFalse(series.isEmpty, "timeline rows for \(key)")
            let records = series.map { Int($0.split(separator: ",")[7]) ?? -1 }.reduce(0, +)
            XCTAssertEqual(records, 2 * 3000, "\(key): the intervals add up to every record")
        }
        XCTAssertTrue(readText(scratch.file("durable.csv")).contains(",1000,4,write,true,true,true,\(pageReportingNow),"),
                      "fsync_every, MMLog's knobs, warm_memory, page_reporting and steal_ms in the CSV")
    }

    func testMMLogKnobsReachTheLogAndTheReport() {
        let result = appendbench(["--procs", "2", "--ops", "3000", "--size", "700", "--backends", "mmlog",
                                  "--chunk-size", "\(2 << 20)", "--max-chunks", "2", "--prefault", "read", "--no-huge-pages",
                                  "--no-warm-memory", "--json", scratch.file("knobs.json"), "--csv", scratch.file("knobs.csv")])
        XCTAssertEqual(result.status.code, 0, result.stdout + result.stderr)
        XCTAssertTrue(result.stdout.contains("MMLog ran with --prefault read --no-huge-pages."), result.stdout)
        XCTAssertTrue(result.stdout.contains("Memory was not warmed before runs (--no-warm-memory)"), result.stdout)
        XCTAssertTrue(readText(scratch.file("knobs.csv")).contains(",0,2,read,false,true,false,\(pageReportingNow),"), readText(scratch.file("knobs.csv")))
        let json = readText(scratch.file("knobs.json"))
        XCTAssertTrue(json.contains("\"prefault\": \"read\"") && json.contains("\"warm_memory\": false"), json)
    }

    /// What the CSV's page_reporting column says of this machine when nothing holds it.
    var pageReportingNow: String {
        guard let order = Int(readText(pageReportingOrder).split(separator: "\n").first ?? "") else { return "absent" }
        let orders = readText("/proc/buddyinfo").split(separator: "\n").first.map { $0.split(separator: " ").count - 4 } ?? 11
        return order >= orders ? "off" : "on"
    }

    let pageReportingOrder = "/sys/module/page_reporting/parameters/page_reporting_order"

    func testHoldingPageReportingPutsTheOrderBack() throws {
        let before = readText(pageReportingOrder)
        let result = appendbench(["--procs", "1", "--ops", "2000", "--size", "512", "--backends", "mmlog,write", "--runs", "2",
                                  "--hold-page-reporting", "--csv", scratch.file("held.csv")])
        XCTAssertEqual(result.status.code, 0, result.stdout + result.stderr)
        XCTAssertEqual(readText(pageReportingOrder), before, "the order is put back")
        let fields = readText(scratch.file("held.csv")).split(separator: "\n").last?.split(separator: ",", omittingEmptySubsequences: false)
        let state = fields.map { String($0[$0.count - 2]) }  // page_reporting, then steal_ms
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
        var held = false
        for _ in 0..<1000 where !held {
            held = readText(pageReportingOrder) != before
            if !held { usleep(10_000) }
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
        let result = appendbench(["--procs", "4", "--ops", "100000000000", "--size", "1000000", "--backends", "write,null"])
        XCTAssertNotEqual(result.status.code, 0)
        XCTAssertTrue(result.stderr.contains("the output needs 400000000000000000 bytes"), result.stderr)
        XCTAssertTrue(result.stdout.isEmpty)
    }

    func filesystemIsTmpfs(_ path: String) -> Bool {
        readText("/proc/self/mounts").split(separator: "\n").contains { line in
            let fields = line.split(separator: " ")
            return fields.count > 2 && fields[1] == Substring(path) && fields[2] == "tmpfs"
        }
    }
}
