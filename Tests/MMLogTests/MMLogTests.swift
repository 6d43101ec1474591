#if canImport(Glibc)
import Glibc
#endif
import Atomics
import BenchRecords
import Dispatch
import MMLog
import TestSupport
import XCTest

/// Single-process behaviour: boundaries, trim, reopen, existing files, errors.
final class MMLogTests: XCTestCase {
    var scratch: ScratchDirectory!
    let page = Int(sysconf(Int32(_SC_PAGESIZE)))

    override func setUp() { scratch = ScratchDirectory("mmlog-test") }
    override func tearDown() { scratch.remove() }

    /// Distinct bytes for record `n` of `size` bytes (so a misplaced byte shows).
    func record(_ n: Int, size: Int) -> [UInt8] {
        (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ n &* 7 &+ 1) }
    }

    func testRecordsAtChunkBoundariesLandExactly() throws {
        let chunk = page
        let sizes = [1, chunk - 1, chunk, chunk + 1, 3 * chunk, 1, 2 * chunk + 5, chunk - 1, 17]
        let path = scratch.file("bounds.log")
        let log = try MMLog(path: path, options: .init(chunkSize: chunk, maxChunks: 2))
        var expected: [UInt8] = []
        for (n, size) in sizes.enumerated() {
            let bytes = record(n, size: size)
            let offset = try log.append(bytes)
            XCTAssertEqual(offset, expected.count, "record \(n) of \(size) bytes")
            expected += bytes
        }
        XCTAssertEqual(log.endOffset, expected.count)
        try log.close()
        XCTAssertEqual(readBytes(path), expected)
    }

    func testEachBoundarySizeRepeated() throws {
        let chunk = page
        for size in [1, chunk - 1, chunk, chunk + 1, 3 * chunk] {
            let path = scratch.file("size-\(size).log")
            let log = try MMLog(path: path, options: .init(chunkSize: chunk, maxChunks: 2))
            var expected: [UInt8] = []
            for n in 0..<9 {
                let bytes = record(n, size: size)
                try log.append(bytes)
                expected += bytes
            }
            try log.close()
            XCTAssertEqual(fileSize(path), expected.count, "size \(size)")
            XCTAssertTrue(readBytes(path) == expected, "content for size \(size)")
        }
    }

    func testConvenienceAppendsAndEmptyRecord() throws {
        let path = scratch.file("text.log")
        let log = try MMLog(path: path)
        try log.append("hello ")
        try log.append(Array("world\n".utf8))
        XCTAssertEqual(try log.append([UInt8]()), 12, "an empty record appends nothing")
        try log.close()
        XCTAssertEqual(readText(path), "hello world\n")
    }

    func testTrimIsIdempotentAndAppendsContinueAfterIt() throws {
        let path = scratch.file("trim.log")
        let log = try MMLog(path: path, options: .init(chunkSize: page, maxChunks: 2))
        try log.append(record(0, size: 100))
        XCTAssertGreaterThan(fileSize(path)!, 100, "the file grows a chunk ahead")
        XCTAssertTrue(try log.trim())
        XCTAssertEqual(fileSize(path), 100)
        XCTAssertTrue(try log.trim())
        XCTAssertEqual(fileSize(path), 100)
        try log.append(record(1, size: 3 * page))
        XCTAssertTrue(try log.trim())
        XCTAssertTrue(try log.trim())
        XCTAssertEqual(fileSize(path), 100 + 3 * page)
        try log.close()
        XCTAssertEqual(readBytes(path), record(0, size: 100) + record(1, size: 3 * page))
    }

    func testTrimWaitsForTheLastHandle() throws {
        let path = scratch.file("shared.log")
        let a = try MMLog(path: path)
        let b = try MMLog(path: path)
        try a.append(record(0, size: 10))
        try b.append(record(1, size: 20))
        XCTAssertFalse(try a.trim(), "b is attached: trimming could pull pages from under it")
        XCTAssertGreaterThan(fileSize(path)!, 30)
        try b.close()
        XCTAssertGreaterThan(fileSize(path)!, 30, "b was not the last handle")
        XCTAssertTrue(try a.trim())
        XCTAssertEqual(fileSize(path), 30)
        try a.append(record(2, size: 5))
        try a.close()
        XCTAssertEqual(readBytes(path), record(0, size: 10) + record(1, size: 20) + record(2, size: 5))
    }

    func testClosingTheLastHandleTrimsWhicheverClosesLast() throws {
        for order in [[0, 1, 2], [2, 1, 0], [1, 0, 2]] {
            let path = scratch.file("close-\(order).log")
            let handles = try (0..<3).map { _ in try MMLog(path: path) }
            for (n, log) in handles.enumerated() { try log.append(record(n, size: 1000)) }
            for n in order { try handles[n].close() }
            XCTAssertEqual(fileSize(path), 3000, "close order \(order)")
        }
    }

    func testAClosedHandleStillReferencedHoldsNoLock() throws {
        let path = scratch.file("lingering.log")
        let first = try MMLog(path: path)
        try first.append("one\n")
        try first.close()  // `first` stays alive (and its header mapped) until the end of the test
        let second = try MMLog(path: path)
        try second.append("two\n")
        XCTAssertTrue(try second.trim(), "the closed handle no longer counts as attached")
        try second.close()
        XCTAssertEqual(readText(path), "one\ntwo\n")
        withExtendedLifetime(first) {}
    }

    func testReopenContinuesAfterTheLastRecord() throws {
        let path = scratch.file("reopen.log")
        var expected: [UInt8] = []
        for round in 0..<4 {
            let log = try MMLog(path: path, options: .init(chunkSize: page, maxChunks: 2))
            XCTAssertEqual(log.endOffset, expected.count)
            for n in 0..<3 {
                let bytes = record(round * 3 + n, size: 1500)
                try log.append(bytes)
                expected += bytes
            }
            try log.close()
        }
        XCTAssertEqual(readBytes(path), expected)
    }

    func testReopenAfterAWriterLeftWithoutClosing() throws {
        let path = scratch.file("unclosed.log")
        let writer = TestSupport.run(product("mmlog-writer"), ["--path", path, "--ops", "100", "--size", "64", "--no-close"])
        XCTAssertTrue(writer.status.succeeded, writer.stderr)
        XCTAssertGreaterThan(fileSize(path)!, 6400, "unclosed: still grown past the cursor")
        let log = try MMLog(path: path)
        XCTAssertEqual(log.endOffset, 6400)
        try log.append(RecordFormat.record(worker: 1, index: 0, size: 64))
        try log.close()
        var expectation = Expectation(workers: 2, ops: 100, size: 64)
        expectation.planned[1] = 1
        let report = try Verifier.verify(path: path, expectation)
        XCTAssertTrue(report.ok, report.description)
    }

    func testAnExistingDataFileIsNeverClobbered() throws {
        let path = scratch.file("existing.log")
        let old = Array("lines written by someone else\n".utf8)
        writeBytes(path, old)
        let log = try MMLog(path: path)
        XCTAssertEqual(log.endOffset, old.count)
        XCTAssertEqual(try log.append("ours\n"), old.count)
        try log.close()
        XCTAssertEqual(readBytes(path), old + Array("ours\n".utf8))
    }

    func testMappedChunksStayBounded() throws {
        let path = scratch.file("bounded.log")
        let log = try MMLog(path: path, options: .init(chunkSize: page, maxChunks: 4))
        for i in 0..<2000 {
            try log.append(RecordFormat.record(worker: 0, index: i, size: 1000))
            XCTAssertLessThanOrEqual(log.mappedChunks, 4)
        }
        try log.close()
        let report = try Verifier.verify(path: path, Expectation(workers: 1, ops: 2000, size: 1000))
        XCTAssertTrue(report.ok, report.description)
    }

    func testOpenPreparesTheChunkOfTheNextAppend() throws {
        let path = scratch.file("prepared.log")
        let log = try MMLog(path: path, options: .init(chunkSize: 4 * page, maxChunks: 2))
        XCTAssertEqual(log.mappedChunks, 1, "the first chunk is mapped before the first append")
        XCTAssertGreaterThanOrEqual(fileSize(path) ?? 0, 4 * page, "and allocated")
        try log.append(record(0, size: 100))
        try log.close()
        XCTAssertEqual(readBytes(path), record(0, size: 100), "the last close trims what open allocated")
        let empty = try MMLog(path: scratch.file("untouched.log"))
        try empty.close()
        XCTAssertEqual(fileSize(scratch.file("untouched.log")), 0, "a log opened and closed unused stays empty")
    }

    func testTrimsRacingAppendsAndThePrefetcherLoseNothing() throws {
        // Three threads append while a fourth trims over and over; small chunks keep the
        // prefetcher mapping chunks that a trim may cut from under it.
        let path = scratch.file("trim-race.log")
        let log = try MMLog(path: path, options: .init(chunkSize: 16 * page, maxChunks: 2, prefetch: true))
        let writers = 3, ops = 3000
        let finished = UnsafeAtomic<Int>.create(0), trims = UnsafeAtomic<Int>.create(0)
        defer { finished.destroy(); trims.destroy() }
        DispatchQueue.concurrentPerform(iterations: writers + 1) { t in
            if t == writers {
                while finished.load(ordering: .acquiring) < writers {
                    if (try? log.trim()) == true { trims.wrappingIncrement(ordering: .relaxed) }
                }
                return
            }
            for i in 0..<ops {
                try! log.append(RecordFormat.record(worker: t, index: i, size: 1000))
            }
            finished.wrappingIncrement(ordering: .releasing)
        }
        try log.close()
        XCTAssertGreaterThan(trims.load(ordering: .relaxed), 0)
        let report = try Verifier.verify(path: path, Expectation(workers: writers, ops: ops, size: 1000, checkOrder: true))
        XCTAssertTrue(report.ok, report.description)
        XCTAssertEqual(fileSize(path), writers * ops * 1000)
    }

    func testSyncWritesWithoutDisturbingTheRecords() throws {
        let path = scratch.file("sync.log")
        let log = try MMLog(path: path, options: .init(chunkSize: page, maxChunks: 2))
        var expected: [UInt8] = []
        for n in 0..<5 {
            let bytes = record(n, size: 3000)
            try log.append(bytes)
            expected += bytes
            try log.sync()
        }
        try log.close()
        XCTAssertEqual(readBytes(path), expected)
        XCTAssertThrowsError(try log.sync(), "sync after close is an error")
    }

    func testAppendAfterCloseThrowsClosed() throws {
        let log = try MMLog(path: scratch.file("closed.log"))
        try log.close()
        try log.close()  // idempotent
        XCTAssertThrowsError(try log.append("late")) { error in
            XCTAssertEqual((error as? MMLogError)?.kind, .closed)
        }
        XCTAssertThrowsError(try log.trim())
    }

    func testInvalidOptionsAreRejected() {
        for options in [MMLog.Options(chunkSize: 0), .init(chunkSize: page + 1), .init(chunkSize: 3 * page), .init(maxChunks: 1)] {
            XCTAssertThrowsError(try MMLog(path: scratch.file("bad.log"), options: options)) { error in
                XCTAssertEqual((error as? MMLogError)?.kind, .invalidOptions, "\(error)")
            }
        }
    }

    func testErrorsNameTheOperationAndErrno() {
        XCTAssertThrowsError(try MMLog(path: "/nonexistent-dir/x.log")) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("open(/nonexistent-dir, O_DIRECTORY)") && text.contains("/nonexistent-dir/x.log"), text)
            XCTAssertTrue(text.contains("No such file or directory (errno 2)"), text)
        }
    }

    func testBytesAppendedByAnotherProgramAreKeptAndAppendsResumeAfterThem() throws {
        let path = scratch.file("foreign-writer.log")
        // A writer leaves without closing (as a crash would): the file keeps its allocated
        // zeros, and the other program's bytes land after them.
        let left = TestSupport.run(product("mmlog-writer"), ["--path", path, "--ops", "1", "--size", "5", "--no-close"])
        XCTAssertTrue(left.status.succeeded, left.stderr)
        let fd = open(path, O_WRONLY | O_APPEND)
        _ = "theirs\n".withCString { write(fd, $0, 7) }
        close(fd)
        let allocated = fileSize(path)!
        let log = try MMLog(path: path)
        let report = try XCTUnwrap(log.recovery, "opening alone after foreign bytes recovers")
        XCTAssertTrue(report.description.contains("written by another program"), report.description)
        XCTAssertEqual(try log.append("more\n"), allocated, "appends resume after the foreign bytes")
        try log.close()
        let bytes = readBytes(path)
        XCTAssertEqual(Array(bytes.prefix(5)), Array("AAAAA".utf8))
        XCTAssertEqual(Array(bytes.suffix(12)), Array("theirs\nmore\n".utf8))
        let reader = try MMLogReader(path: path)
        let (text, _) = try reader.read(from: 0)
        XCTAssertEqual(String(decoding: text, as: UTF8.self), "AAAAAtheirs\nmore\n",
                       "the zeros between are a recorded hole the reader skips")
    }

    func testAMissingDataFileStartsANewLog() throws {
        let path = scratch.file("orphan.log")
        try MMLog(path: path).close()
        unlink(path)
        let alone = try MMLog(path: path)
        XCTAssertTrue(alone.recovery?.description.contains("data file was missing") ?? false, "\(String(describing: alone.recovery))")
        try alone.append("fresh\n")
        // Deleted under an attached handle: the next opener retires that log and starts a new
        // one; the attached handle moves to it at its next append.
        unlink(path)
        let next = try MMLog(path: path)
        try next.append("next\n")
        try alone.append("moved\n")
        try next.close()
        try alone.close()
        XCTAssertEqual(readText(path), "next\nmoved\n")
    }

    func testForeignMetadataIsRejectedAndTheDataKept() throws {
        typealias L = MetadataLayout
        let path = scratch.file("foreign.log")
        let log = try MMLog(path: path)
        try log.append("precious\n")
        try log.close()
        let header = readBytes(path + ".mmlog")
        func setting(_ offset: Int, _ value: UInt64, width: Int = 8) -> [UInt8] {
            var bytes = header
            for k in 0..<width { bytes[offset + k] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(k))) }
            return bytes
        }

        var refused: [(String, [UInt8], MMLogError.Kind)] = []
        var badMagic = header; badMagic[L.magicOffset] ^= 0xFF
        refused.append(("bad magic", badMagic, .corruptMetadata))
        refused.append(("a future version", setting(L.versionOffset, UInt64(L.version + 1), width: 4), .incompatibleMetadata))
        refused.append(("chunk size 0", setting(L.chunkSizeOffset, 0), .corruptMetadata))
        refused.append(("chunk size not a page multiple", setting(L.chunkSizeOffset, 4097), .corruptMetadata))
        refused.append(("cursor beyond reason", setting(L.cursorOffset, (1 << 48) - 1), .corruptMetadata))
        refused.append(("truncated", Array(header[0..<100]), .corruptMetadata))
        refused.append(("text", Array(String(repeating: "not a header\n", count: 400).utf8), .corruptMetadata))
        for (name, bytes, kind) in refused {
            writeBytes(path + ".mmlog", bytes)
            XCTAssertThrowsError(try MMLog(path: path), name) { error in
                XCTAssertEqual((error as? MMLogError)?.kind, kind, "\(name): \(error)")
                XCTAssertTrue("\(error)".contains(".mmlog"), "\(name): the error names the file: \(error)")
            }
            XCTAssertEqual(readText(path), "precious\n", "\(name): data untouched")
        }

        // Stale or damaged values that the data file can correct: recovered, not refused, and
        // never at the cost of a byte.
        let recovered: [(String, [UInt8])] = [
            ("cursor inside the records", setting(L.cursorOffset, 3)),
            ("allocated size past the file", setting(L.fileSizeOffset, 1 << 20)),
            ("cursor far past the end", setting(L.cursorOffset, 1 << 32)),
            ("another file's identity", setting(L.dataInodeOffset, 12345)),
        ]
        for (name, bytes) in recovered {
            writeBytes(path + ".mmlog", bytes)
            let reopened = try MMLog(path: path)
            XCTAssertNotNil(reopened.recovery, "\(name): the recovery says what it found")
            try reopened.append("more\n")
            try reopened.close()
            XCTAssertEqual(readText(path), "precious\nmore\n", "\(name): \(String(describing: reopened.recovery))")
            writeBytes(path, Array("precious\n".utf8))
        }
    }
}
