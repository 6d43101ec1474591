#if canImport(Glibc)
import Glibc
#endif
@testable import AppendBenchCore
import BenchRecords
import TestSupport
import XCTest

/// The text form of the records, which the log daemons' backends write.
final class TextRecordTests: XCTestCase {
    func testATextRecordIsPrintableAndNamesItsWorkerAndIndex() {
        let bytes = RecordFormat.record(worker: 3, index: 0x0102_0304_0506, size: 40, .text)
        XCTAssertEqual(String(decoding: bytes[0..<16], as: UTF8.self), "0003010203040506")
        XCTAssertTrue(bytes.allSatisfy { $0 > 0x20 && $0 < 0x7F }, "every byte printable, no NUL, no newline")
        let word = RecordFormat.splitmix64((3 << 32) | 0x0102_0304_0506)
        for k in 16..<40 {
            XCTAssertEqual(bytes[k], RecordFormat.base64Alphabet[Int((word >> (8 * UInt64(k % 8))) & 63)], "byte \(k)")
        }
        XCTAssertEqual(RecordFormat.record(worker: 1, index: 5, size: 15, .text), Array(repeating: 0x42, count: 15),
                       "under 16 bytes: the worker's letter, as in binary")
    }

    func testTextLinesVerifyAndEveryFaultIsFound() {
        func lines(_ size: Int) -> [UInt8] {
            var bytes: [UInt8] = []
            for i in 0..<10 { for w in 0..<2 { bytes += RecordFormat.record(worker: w, index: i, size: size, .text) + [0x0A] } }
            return bytes
        }
        func verify(_ bytes: [UInt8], _ size: Int) -> VerificationReport {
            bytes.withUnsafeBytes { Verifier.verify($0, Expectation(workers: 2, ops: 10, size: size, encoding: .text)) }
        }
        for size in [1, 15, 16, 17, 128] {
            let report = verify(lines(size), size)
            XCTAssertTrue(report.ok && report.wholeRecords == 20, "size \(size): \(report)")
        }
        var torn = lines(64)
        torn[3 * 65 + 40] = UInt8(ascii: "!")
        XCTAssertEqual(verify(torn, 64).torn, 1)
        var joined = lines(64)
        joined[65 + 64] = UInt8(ascii: "x")  // a newline lost: two lines run together
        XCTAssertFalse(verify(joined, 64).ok)
        XCTAssertEqual(verify(Array(lines(64).dropFirst(65)), 64).missing, 1)
    }
}

/// journald and syslog through the harness: daemons started and stopped per run, the records
/// read back from the journal and from syslog.log.
final class LogDaemonTests: XCTestCase {
    var scratch: ScratchDirectory!

    override func setUp() { scratch = ScratchDirectory("appendbench-daemons") }
    override func tearDown() { scratch.remove() }

    private func available(_ type: any AppendBackend.Type) throws {
        let config = BackendConfig(path: scratch.file("probe.log"), recordSize: 100)
        if let reason = type.unsupportedReason(directory: scratch.path, config: config) {
            throw XCTSkip("\(type.key): \(reason) (CI runs as root and installs systemd and syslog-ng-core)")
        }
    }

    func testBothVerifyAndKeepWhatAUserReadsWithoutLeavingADaemonOrAMount() throws {
        try available(JournaldBackend.self)
        try available(SyslogBackend.self)
        let mountsBefore = readText("/proc/self/mountinfo")
        var options = BenchmarkOptions()
        (options.procs, options.ops, options.size, options.runs) = (2, 1500, 100, 2)
        options.backends = [JournaldBackend.key, SyslogBackend.key]
        options.directory = scratch.path
        options.keep = true
        options.warmMemory = false
        let report = try Benchmark.run(options)
        for result in report.results {
            XCTAssertNil(result.unsupported, result.key)
            for run in result.runs {
                XCTAssertEqual(run.measurement.failures, [], result.key)
                XCTAssertEqual(run.verification?.wholeRecords, 3000, "\(result.key): \(String(describing: run.verification))")
                XCTAssertGreaterThan(run.measurement.serviceCPU.totalNanoseconds, 0, "\(result.key): the daemon's CPU counts")
            }
        }
        // --keep: syslog.log as syslog-ng wrote it, and a journal journalctl reads.
        XCTAssertEqual(fileSize(scratch.file("syslog.log")), 3000 * 101)
        let journal = TestSupport.run("/usr/bin/journalctl", ["--directory", scratch.file("journald"), "-o", "cat", "SYSLOG_IDENTIFIER=appendbench"])
        XCTAssertEqual(journal.status.code, 0, journal.stderr)
        XCTAssertEqual(journal.stdout.split(separator: "\n").count, 3000)
        XCTAssertEqual(journal.stdout, readText(scratch.file("journald.log")))
        // No daemon left (every child reaped), no scratch left, no mount added here.
        XCTAssertEqual(waitpid(-1, nil, WNOHANG), -1, "a child of the harness is still there")
        XCTAssertNil(fileSize(scratch.file(".journald")))
        XCTAssertNil(fileSize(scratch.file(".syslog-ng")))
        XCTAssertEqual(readText("/proc/self/mountinfo"), mountsBefore)
    }

    func testADaemonKilledMidRunFailsTheRunWithItsReason() throws {
        for type in [JournaldBackend.self, SyslogBackend.self] as [any AppendBackend.Type] {
            guard type.unsupportedReason(directory: scratch.path, config: BackendConfig(path: scratch.file("p"), recordSize: 64)) == nil
            else { continue }
            var config = BackendConfig(path: scratch.file("\(type.key).log"), recordSize: 64, totalBytes: 64 * 100)
            let service = try XCTUnwrap(try type.prepareRun(config: &config, workers: 1))
            let backend = try type.init(config: config)
            kill(service.processes[0], SIGKILL)
            var reaped: [pid_t: ProcessExit] = [:]
            if let (pid, exit) = try reapChild(service.processes[0], wait: true) { reaped[pid] = exit }
            let record = RecordFormat.record(worker: 0, index: 0, size: 64, .text)
            XCTAssertThrowsError(try record.withUnsafeBytes { try backend.append($0) }, "\(type.key): a send to a dead daemon") {
                XCTAssertTrue("\($0)".contains("Connection refused"), "\(type.key): \($0)")
            }
            try? backend.close()
            let outcome = service.finish(workersSucceeded: false, reaped: reaped)
            XCTAssertNil(outcome.finishedAt)
            XCTAssertTrue(outcome.failures.first?.contains("killed by signal 9 (Killed) during the run") == true, "\(type.key): \(outcome.failures)")
        }
    }
}
