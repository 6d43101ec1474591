#if canImport(Glibc)
import Glibc
#endif
import MMLog
import TestSupport
import XCTest

/// A log's life as a service lives it: written slowly for weeks, synced on errors, rotated,
/// reopened, read while written. Time comes through MMLog's one clock
/// (`Sys.clockShiftNanoseconds`), which these tests move ahead instead of waiting.
final class LongLifeTests: XCTestCase {
    var scratch: ScratchDirectory!

    override func setUp() { scratch = ScratchDirectory("mmlog-long-life") }
    override func tearDown() {
        Sys.clockShiftNanoseconds.store(0, ordering: .relaxed)
        scratch.remove()
    }

    func advanceClock(seconds: UInt64) {
        Sys.clockShiftNanoseconds.wrappingIncrement(by: seconds * 1_000_000_000, ordering: .relaxed)
    }

    /// More than 2^64 / chunkSize ns (2 h 27 min at 2 MiB) between two chunk maps of one
    /// handle: the fill-rate product overflowed and the process died with SIGILL.
    func testTwoAndAHalfHoursBetweenTwoChunksIsNoCrash() throws {
        let path = scratch.file("slow.log")
        let log = try MMLog(path: path)
        let line = Array(repeating: UInt8(ascii: "s"), count: 4095) + [UInt8(ascii: "\n")]
        for i in 0..<(3 * 512) {  // three 2 MiB chunks
            if i % 512 == 511 { advanceClock(seconds: 9_000) }
            try log.append(line)
        }
        try log.close()
        XCTAssertEqual(fileSize(path), 3 * 512 * 4096)
    }

    /// A service that logs a line a simulated minute for 30 days: a quiet night each day,
    /// `sync()` after every error line, rotation by size, a restart in the middle, and a
    /// reader that checks each day what is committed. Every line is then in exactly one
    /// file, whole, in order, and no file holds a NUL byte.
    func testThirtyDaysOfALineAMinute() throws {
        let path = scratch.file("service.log")
        let options = MMLog.Options(rotateAtBytes: 3 << 20)
        var log = try MMLog(path: path, options: options)
        var written = 0
        var syncs = 0
        for day in 0..<30 {
            for minute in 0..<(24 * 60) {
                advanceClock(seconds: 60)
                if minute >= 120 && minute < 300 { continue }  // 02:00-05:00: nothing to say
                let error = written % 97 == 0
                let text = "day \(day) minute \(minute) seq \(written) \(error ? "ERROR" : "info") "
                try log.append(text + String(repeating: "x", count: 400 - text.utf8.count - 1) + "\n")
                written += 1
                if error { try log.sync(); syncs += 1 }
            }
            if day == 15 {  // the service restarts
                try log.close()
                log = try MMLog(path: path, options: options)
            }
            let reader = try MMLogReader(path: path)
            let (bytes, _) = try reader.read(from: 0, maxBytes: 8 << 20)
            XCTAssertFalse(bytes.contains(0), "day \(day): a NUL byte below the watermark")
            XCTAssertTrue(bytes.isEmpty || bytes.last == UInt8(ascii: "\n"), "day \(day): a torn line at the watermark")
        }
        try log.close()

        let directory = scratch.path
        let names = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasPrefix("service.log") }
        XCTAssertFalse(names.contains { $0.hasSuffix(".mmlog") && $0 != "service.log.mmlog" }, "a rotated file kept its metadata: \(names)")
        let files = names.filter { !$0.hasSuffix(".mmlog") }.sorted { a, b in
            a == "service.log" ? false : b == "service.log" ? true : a < b
        }
        XCTAssertGreaterThanOrEqual(files.count, 5, "rotations by size: \(files)")
        var expected = 0
        for name in files {
            let data = try XCTUnwrap(FileManager.default.contents(atPath: directory + "/" + name))
            XCTAssertFalse(data.contains(0), "\(name) holds NUL bytes")
            for line in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).dropLast() {
                let fields = String(decoding: line, as: UTF8.self).split(separator: " ")
                XCTAssertEqual(line.count, 399)
                XCTAssertEqual(fields.count >= 6 ? Int(fields[5]) : nil, expected, "\(name): a line out of order or lost")
                expected += 1
            }
        }
        XCTAssertEqual(expected, written)
        print("30 simulated days: \(written) lines, \(syncs) syncs, \(files.count) files")
    }
}
