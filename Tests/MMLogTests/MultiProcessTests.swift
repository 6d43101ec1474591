#if canImport(Glibc)
import Glibc
#endif
import BenchRecords
import TestSupport
import XCTest

/// Real writer processes (the `mmlog-writer` product) appending to one log at once; every
/// byte of the result is checked with the harness's verifier.
final class MultiProcessTests: XCTestCase {
    var scratch: ScratchDirectory!

    override func setUp() { scratch = ScratchDirectory("mmlog-mp") }
    override func tearDown() { scratch.remove() }

    /// Starts `processes` writers (worker ids 0..<processes*threads), waits, checks exits.
    func runWriters(path: String, processes: Int, threads: Int = 1, ops: Int, size: Int,
                    extra: [String] = [], startAt: UInt64? = nil, file: StaticString = #filePath, line: UInt = #line) {
        let children = (0..<processes).map { p in
            var args = ["--path", path, "--worker", "\(p * threads)", "--threads", "\(threads)",
                        "--ops", "\(ops)", "--size", "\(size)"] + extra
            if let startAt { args += ["--start-at", "\(startAt)"] }
            return spawn(product("mmlog-writer"), args)
        }
        for (p, child) in children.enumerated() {
            let (status, stderr) = child.wait()
            XCTAssertTrue(status.succeeded, "writer \(p): \(status) \(stderr)", file: file, line: line)
        }
    }

    func verify(_ path: String, workers: Int, ops: Int, size: Int, file: StaticString = #filePath, line: UInt = #line) throws {
        let report = try Verifier.verify(path: path, Expectation(workers: workers, ops: ops, size: size))
        XCTAssertTrue(report.ok, report.description, file: file, line: line)
        XCTAssertEqual(report.wholeRecords, workers * ops, file: file, line: line)
        XCTAssertEqual(fileSize(path), workers * ops * size, "closed by all: trimmed to the records", file: file, line: line)
    }

    func testFourProcessesAppendAHundredThousandRecordsEach() throws {
        let path = scratch.file("four.log")
        runWriters(path: path, processes: 4, ops: 100_000, size: 128)
        try verify(path, workers: 4, ops: 100_000, size: 128)
    }

    func testFourProcessesOfOneByteRecords() throws {
        let path = scratch.file("bytes.log")
        runWriters(path: path, processes: 4, ops: 100_000, size: 1)
        try verify(path, workers: 4, ops: 100_000, size: 1)
    }

    func testRecordsCrossingSmallChunksAndATinyRing() throws {
        // 1000-byte records in 4 KiB chunks: one in four crosses a boundary; two slots thrash.
        let path = scratch.file("crossing.log")
        runWriters(path: path, processes: 4, ops: 20_000, size: 1000, extra: ["--chunk-size", "4096", "--max-chunks", "2"])
        try verify(path, workers: 4, ops: 20_000, size: 1000)
    }

    func testRecordsLargerThanAChunkGoThroughPwrite() throws {
        let path = scratch.file("large.log")
        runWriters(path: path, processes: 4, ops: 1_000, size: 9_000, extra: ["--chunk-size", "4096", "--max-chunks", "2"])
        try verify(path, workers: 4, ops: 1_000, size: 9_000)
    }

    func testRecordsAroundThePwriteThreshold() throws {
        // Up to 32 KiB records are copied through the mappings (through two chunks when they
        // straddle one of these 64 KiB boundaries); from 32 KiB they are written with pwrite.
        for size in [20_000, 32_767, 32_768, 40_000] {
            let path = scratch.file("threshold-\(size).log")
            runWriters(path: path, processes: 4, ops: 300, size: size, extra: ["--chunk-size", "65536", "--max-chunks", "2"])
            try verify(path, workers: 4, ops: 300, size: size)
        }
    }

    func testEveryPrefaultModeWithAndWithoutHugePagesAndPrefetch() throws {
        // 2 MiB chunks (one huge folio each) and a two-slot ring, so chunks are mapped,
        // prefaulted and evicted again and again; 1000-byte records cross their boundaries.
        for prefault in ["write", "read", "none"] {
            for (huge, prefetch) in [(true, true), (false, true), (true, false)] {
                let path = scratch.file("prefault-\(prefault)-\(huge)-\(prefetch).log")
                runWriters(path: path, processes: 3, threads: 2, ops: 4_000, size: 1000,
                           extra: ["--chunk-size", "\(2 << 20)", "--max-chunks", "2", "--prefault", prefault]
                               + (huge ? [] : ["--no-huge-pages"]) + (prefetch ? [] : ["--no-prefetch"]))
                try verify(path, workers: 6, ops: 4_000, size: 1000)
            }
        }
    }

    func testEightThreadsInOneProcess() throws {
        let path = scratch.file("threads.log")
        runWriters(path: path, processes: 1, threads: 8, ops: 50_000, size: 128)
        try verify(path, workers: 8, ops: 50_000, size: 128)
    }

    func testThreadsAndProcessesTogetherOnSmallChunks() throws {
        let path = scratch.file("mixed.log")
        runWriters(path: path, processes: 3, threads: 3, ops: 10_000, size: 300, extra: ["--chunk-size", "4096", "--max-chunks", "2"])
        try verify(path, workers: 9, ops: 10_000, size: 300)
    }

    func testEightProcessesCreatingOneFreshLogAtOnce() throws {
        for round in 0..<15 {
            let path = scratch.file("create-\(round).log")
            let startAt = nowNanoseconds() + 60_000_000  // all open within the same moment
            runWriters(path: path, processes: 8, ops: 500, size: 64, startAt: startAt)
            try verify(path, workers: 8, ops: 500, size: 64)
        }
    }
}
