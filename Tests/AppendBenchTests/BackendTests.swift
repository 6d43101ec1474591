#if canImport(Glibc)
import Glibc
#endif
@testable import AppendBenchCore
import BenchRecords
import MMLog
import TestSupport
import ToolSupport
import XCTest

/// Each backend in-process: runs verified byte for byte, and failed or short writes surfacing.
final class BackendTests: XCTestCase {
    var scratch: ScratchDirectory!

    override func setUp() { scratch = ScratchDirectory("appendbench-backends") }
    override func tearDown() { scratch.remove() }

    /// Appends `ops` records as worker 0 through a fresh `type` backend, then verifies the file;
    /// returns its path.
    @discardableResult
    func verifiedRun(_ type: any AppendBackend.Type, size: Int, ops: Int = 2000, batch: Int = 1, depth: Int = 1,
                     file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let label = "\(type.key) size \(size) batch \(batch) depth \(depth)"
        let path = scratch.file("\(type.key)-\(size)-\(batch)-\(depth).log")
        var config = BackendConfig(path: path, recordSize: size, batch: batch, depth: depth,
                                   mmlog: MMLog.Options(chunkSize: 1 << 16), totalBytes: ops * size)
        if let reason = type.unsupportedReason(directory: scratch.path, config: config) {
            throw XCTSkip("\(label): \(reason)")
        }
        let stride = try type.stride(directory: scratch.path, config: config)
        // As the harness does: the run's service first (the CLA's collector), one worker, then
        // the service's finish, which must account for every record before it says done.
        let service = try type.prepareRun(config: &config, workers: 1)
        let backend = try type.init(config: config)
        let record = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 16)
        defer { record.deallocate() }
        for i in 0..<ops {
            RecordFormat.encode(worker: 0, index: i, into: record, type.recordEncoding)
            try backend.append(UnsafeRawBufferPointer(record))
        }
        try backend.finish()
        try backend.close()
        if let service {
            let outcome = service.finish(workersSucceeded: true, reaped: [:])
            XCTAssertEqual(outcome.failures, [], label, file: file, line: line)
            XCTAssertNotNil(outcome.finishedAt, "\(label): the service says when it finished", file: file, line: line)
            XCTAssertGreaterThan(outcome.cpu.totalNanoseconds, 0, "\(label): the collector's CPU time", file: file, line: line)
        }
        guard type.writesRecords else {
            XCTAssertEqual(fileSize(path) ?? 0, 0, "\(label) wrote something", file: file, line: line)
            return path
        }
        let expectation = Expectation(workers: 1, ops: ops, size: size, stride: stride,
                                      checkOrder: type.preservesOrder(config: config), encoding: type.recordEncoding)
        let report = try Verifier.verify(path: path, expectation)
        XCTAssertTrue(report.ok, "\(label): \(report)", file: file, line: line)
        XCTAssertEqual(report.wholeRecords, ops, label, file: file, line: line)
        XCTAssertEqual(fileSize(path), ops * stride, label, file: file, line: line)
        return path
    }

    func testEveryBackendAtOneByteAPageLessOneAndInBetween() throws {
        for type in Backends.all {
            for size in [1, 128, 4095] { try skippingUnsupported { try verifiedRun(type, size: size) } }
        }
    }

    /// Runs `body`; a backend that cannot run here (journald without root) is noted, not a
    /// reason to skip the backends after it.
    private func skippingUnsupported(_ body: () throws -> Void) rethrows {
        do {
            try body()
        } catch let skip as XCTSkip {
            print("skipped: \(skip)")
        }
    }

    /// Between runs the harness removes the files `outputFiles` names, and only those: every
    /// file a backend leaves must be one of them (MMLog's metadata, floor's cursor).
    func testEveryFileABackendLeavesIsOneItNames() throws {
        for type in Backends.all {
            scratch.remove()
            scratch = ScratchDirectory("appendbench-files")
            guard type.unsupportedReason(directory: scratch.path, config: BackendConfig(path: scratch.file("p"), recordSize: 128)) == nil
            else { continue }
            let path = try verifiedRun(type, size: 128, ops: 100)
            let left = TestSupport.run("/bin/ls", ["-A", scratch.path]).stdout.split(separator: "\n").map { scratch.file(String($0)) }
            XCTAssertEqual(Set(left).subtracting(type.outputFiles(for: path)), [], "\(type.key) left files it does not name")
            XCTAssertTrue(type.outputFiles(for: path).contains(path), "\(type.key): the output is one of its files")
        }
    }

    /// Only the central log service and the log daemons (journald, syslog) have a run service;
    /// the others must not start one.
    func testOnlyTheServicesStartAProcessPerRun() throws {
        for type in Backends.all {
            var config = BackendConfig(path: scratch.file("\(type.key)-service.log"), recordSize: 64, totalBytes: 64)
            if type.unsupportedReason(directory: scratch.path, config: config) != nil { continue }
            let service = try type.prepareRun(config: &config, workers: 1)
            XCTAssertEqual(service != nil, ["cla", "cla-async", "journald", "syslog"].contains(type.key), type.key)
            if let service {
                XCTAssertEqual(service.processes.count, 1, "\(type.key): one collector or daemon")
                XCTAssertNotNil(config.serviceAddress, "\(type.key): the workers learn where it listens")
                // No worker ever connects: the harness's finish after failed workers stops it.
                let outcome = service.finish(workersSucceeded: false, reaped: [:])
                XCTAssertNil(outcome.finishedAt)
                XCTAssertEqual(outcome.failures, [], "\(type.key): stopped by the harness, not a failure of its own")
                XCTAssertEqual(kill(service.processes[0], 0), -1, "\(type.key): the collector is gone")
            }
        }
    }

    /// The collector appends, so its failures are the run's: a write to /dev/full (ENOSPC)
    /// and one cut short by a file size limit must come back from the service, named, and
    /// the acknowledged backend's worker must fail too (its answer never comes).
    func testACollectorThatCannotWriteFailsTheRun() throws {
        let previousHandler = signal(SIGXFSZ, SIG_IGN)  // inherited by the forked collector
        defer { signal(SIGXFSZ, previousHandler) }
        var saved = rlimit()
        getrlimit(Int32(RLIMIT_FSIZE.rawValue), &saved)
        defer { setrlimit(Int32(RLIMIT_FSIZE.rawValue), &saved) }
        for type in [CLABackend.self, CLAAsyncBackend.self] as [any AppendBackend.Type] {
            let full = try throughService(type, BackendConfig(path: "/dev/full", recordSize: 64, totalBytes: 64 * 5), ops: 5)
            XCTAssertTrue(full.serviceFailures.first?.contains("write(/dev/full, 64): No space left on device") == true,
                          "\(type.key): \(full.serviceFailures)")
            if type == CLABackend.self {  // (a fire-and-forget worker may or may not have sent everything first)
                XCTAssertTrue(full.workerError?.contains("the collector closed the connection before acknowledging") == true,
                              full.workerError ?? "no worker error")
            }

            var limit = saved
            limit.rlim_cur = 1000  // the 8th 128-byte record crosses it with 104 bytes
            XCTAssertEqual(setrlimit(Int32(RLIMIT_FSIZE.rawValue), &limit), 0)
            let path = scratch.file("\(type.key)-limited.log")
            let short = try throughService(type, BackendConfig(path: path, recordSize: 128, totalBytes: 128 * 20), ops: 20)
            setrlimit(Int32(RLIMIT_FSIZE.rawValue), &saved)
            XCTAssertTrue(short.serviceFailures.first?.contains("wrote 104 bytes") == true, "\(type.key): \(short.serviceFailures)")
            XCTAssertTrue(short.serviceFailures.first?.contains("after appending 7 of 20 records") == true,
                          "\(type.key): \(short.serviceFailures)")
        }
    }

    /// One worker in this process against `type`'s run service; the worker's first error and
    /// the service's failures.
    private func throughService(_ type: any AppendBackend.Type, _ config: BackendConfig, ops: Int) throws
        -> (workerError: String?, serviceFailures: [String]) {
        var config = config
        let service = try XCTUnwrap(try type.prepareRun(config: &config, workers: 1))
        let workerError = try firstError(type, config, ops: ops)
        let outcome = service.finish(workersSucceeded: workerError == nil, reaped: [:])
        if outcome.failures.isEmpty { XCTAssertNotNil(outcome.finishedAt) } else { XCTAssertNil(outcome.finishedAt) }
        return (workerError, outcome.failures)
    }

    func testBatchedWritevAndFwriteWriteTheRemainderAtFinish() throws {
        for type in [WritevBackend.self, FwriteBackend.self] as [any AppendBackend.Type] {
            for size in [1, 128, 4095] {
                try verifiedRun(type, size: size, ops: 2000, batch: 7)  // 2000 = 285 x 7 + 5
            }
        }
    }

    func testWritevRefusesABatchLargerThanOneCallTakes() {
        let config = BackendConfig(path: scratch.file("v.log"), recordSize: 8, batch: 1 << 20)
        XCTAssertNotNil(WritevBackend.unsupportedReason(directory: scratch.path, config: config))
        XCTAssertThrowsError(try WritevBackend(config: config))
    }

    func testAsyncBackendsWithOneAndEightWritesInFlight() throws {
        for type in [AIOBackend.self, URingBackend.self] as [any AppendBackend.Type] {
            XCTAssertTrue(type.preservesOrder(config: BackendConfig(path: "", recordSize: 1, depth: 1)))
            XCTAssertFalse(type.preservesOrder(config: BackendConfig(path: "", recordSize: 1, depth: 8)))
            for depth in [1, 8] {
                for size in [1, 128, 4095] { try verifiedRun(type, size: size, depth: depth) }
            }
        }
    }

    func testDirectPadsEachRecordToTheFilesystemAlignment() throws {
        for size in [1, 128, 4095] {
            let config = BackendConfig(path: scratch.file("d.log"), recordSize: size)
            if let reason = DirectBackend.unsupportedReason(directory: scratch.path, config: config) {
                throw XCTSkip(reason)
            }
            let stride = try DirectBackend.stride(directory: scratch.path, config: config)
            XCTAssertGreaterThanOrEqual(stride, size)
            XCTAssertEqual(stride % 512, 0, "stride \(stride) for \(size)-byte records")
            try verifiedRun(DirectBackend.self, size: size, ops: 300)  // the verifier checks the padding is zeros
        }
    }

    func testDirectProbesLeaveNoFilesBehind() throws {
        let config = BackendConfig(path: scratch.file("d.log"), recordSize: 100)
        _ = DirectBackend.unsupportedReason(directory: scratch.path, config: config)
        _ = try DirectBackend.stride(directory: scratch.path, config: config)
        XCTAssertEqual(TestSupport.run("/bin/ls", ["-A", scratch.path]).stdout, "")
    }

    /// tmpfs refused O_DIRECT until Linux 6.6 and accepts it since: the probe must agree with
    /// what an O_DIRECT open actually does there, and a refusal must say it is about O_DIRECT.
    func testDirectOnTmpfsIsReportedAsTheKernelBehaves() throws {
        guard filesystemType(of: "/dev/shm") == "tmpfs" else { throw XCTSkip("/dev/shm is not tmpfs here") }
        let shm = ScratchDirectory("appendbench-direct", parent: "/dev/shm")
        defer { shm.remove() }
        let config = BackendConfig(path: shm.file("d.log"), recordSize: 64)
        let reason = DirectBackend.unsupportedReason(directory: shm.path, config: config)
        if let reason {
            XCTAssertTrue(reason.contains("O_DIRECT not supported"), reason)
        } else {
            let backend = try DirectBackend(config: config)
            let record = RecordFormat.record(worker: 0, index: 0, size: 64)
            try record.withUnsafeBytes { try backend.append($0) }
            try backend.close()
            let stride = try DirectBackend.stride(directory: shm.path, config: config)
            XCTAssertEqual(fileSize(config.path), stride)
        }
        XCTAssertEqual(TestSupport.run("/bin/ls", ["-A", shm.path]).stdout, reason == nil ? "d.log\n" : "")
    }

    /// /dev/full fails every write with ENOSPC: the error must come out of the backend.
    func testAFailedWriteIsThrownNotSwallowed() throws {
        for type in [WriteBackend.self, WritevBackend.self, FwriteBackend.self, AIOBackend.self, URingBackend.self]
            as [any AppendBackend.Type] {
            for batch in type == WritevBackend.self || type == FwriteBackend.self ? [1, 7] : [1] {
                let label = "\(type.key) batch \(batch)"
                let error = try firstError(type, BackendConfig(path: "/dev/full", recordSize: 64, batch: batch), ops: 1)
                // Linux AIO takes only files with write_iter, which /dev/full lacks: io_submit
                // refuses it (EINVAL) before any write. Still an error, which is the point.
                let expected = type == AIOBackend.self ? "io_submit(/dev/full): Invalid argument" : "No space left on device"
                XCTAssertTrue(error?.contains(expected) == true, "\(label): \(error ?? "no error")")
            }
        }
    }

    /// A file size limit makes the write that crosses it short (and the next one fail with
    /// EFBIG): a torn record must be an error, never a counted success. The limit is
    /// process-wide; XCTest runs one test at a time, and it is restored before returning.
    func testAShortWriteIsThrownNotCounted() throws {
        let previousHandler = signal(SIGXFSZ, SIG_IGN)
        defer { signal(SIGXFSZ, previousHandler) }
        var saved = rlimit()
        getrlimit(Int32(RLIMIT_FSIZE.rawValue), &saved)
        var limit = saved
        limit.rlim_cur = 1000  // the 8th 128-byte record crosses it with 104 bytes
        XCTAssertEqual(setrlimit(Int32(RLIMIT_FSIZE.rawValue), &limit), 0)
        defer { setrlimit(Int32(RLIMIT_FSIZE.rawValue), &saved) }

        let cases: [(any AppendBackend.Type, batch: Int, depth: Int, expected: String)] = [
            (WriteBackend.self, 1, 1, "wrote 104 bytes"),
            (WritevBackend.self, 1, 1, "wrote 104 bytes"),
            (WritevBackend.self, 7, 1, "wrote 104 bytes"),  // of the second batch's 896
            (FwriteBackend.self, 1, 1, "File too large"),  // stdio writes the 104, then retries the rest
            (DirectBackend.self, 1, 1, "O_DIRECT"),
            (AIOBackend.self, 1, 1, "wrote 104 bytes"),
            (AIOBackend.self, 1, 8, "wrote 104 bytes"),
            (URingBackend.self, 1, 1, "wrote 104 bytes"),
            (URingBackend.self, 1, 8, "wrote 104 bytes"),
        ]
        for (type, batch, depth, expected) in cases {
            let path = scratch.file("\(type.key)-\(batch)-\(depth)-limited.log")
            let config = BackendConfig(path: path, recordSize: 128, batch: batch, depth: depth)
            if type.unsupportedReason(directory: scratch.path, config: config) != nil { continue }
            let error = try firstError(type, config, ops: 20)
            XCTAssertTrue(error?.contains(expected) == true, "\(type.key) batch \(batch) depth \(depth): \(error ?? "no error")")
        }
    }

    /// Appends `ops` records of `config.recordSize` bytes, then finishes and closes;
    /// returns the description of the first error, or nil when every call succeeded.
    private func firstError(_ type: any AppendBackend.Type, _ config: BackendConfig, ops: Int) throws -> String? {
        let backend = try type.init(config: config)
        let record = RecordFormat.record(worker: 0, index: 0, size: config.recordSize)
        var failure: String?
        do {
            for _ in 0..<ops { try record.withUnsafeBytes { try backend.append($0) } }
            try backend.finish()
        } catch {
            failure = "\(error)"
        }
        do { try backend.close() } catch { failure = failure ?? "\(error)" }
        return failure
    }
}
