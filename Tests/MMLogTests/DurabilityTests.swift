#if canImport(Glibc)
import Glibc
#endif
import BenchRecords
import MMLog
import TestSupport
import XCTest

/// sync() as a group commit: many threads and processes share device flushes; none returns
/// before a flush covered its records; a flusher that dies wedges no one.
final class DurabilityTests: XCTestCase {
    var scratch: ScratchDirectory!

    override func setUp() { scratch = ScratchDirectory("mmlog-durability") }
    override func tearDown() { scratch.remove() }

    func syncingWriter(_ path: String, worker: Int, ops: Int, extra: [String] = [], stdout: String = "/dev/null") -> Child {
        spawn(product("mmlog-writer"), ["--path", path, "--worker", "\(worker)", "--ops", "\(ops)", "--size", "64", "--text",
                                        "--sync-every", "1", "--check-syncs"] + extra, stdoutPath: stdout)
    }

    func testConcurrentSyncsShareFlushesAndNoneReturnsEarly() throws {
        let path = scratch.file("group.log")
        let ops = 300
        // Eight processes, and one of four threads: every append followed by sync(). Each
        // writer checks every sync() (the flush counters and the durable watermark) and exits
        // 5 if one returned before a flush that began after the call had ended.
        var children = (0..<8).map { syncingWriter(path, worker: $0, ops: ops) }
        children.append(syncingWriter(path, worker: 8, ops: ops, extra: ["--threads", "4"]))
        for child in children {
            let (status, stderr) = child.wait()
            XCTAssertTrue(status.succeeded, "\(status) \(stderr)")
        }
        let status = try MMLogReader(path: path).status()
        let syncs = (8 + 4) * ops
        print("\(syncs) sync() calls made \(status.flushes) device flushes")
        XCTAssertEqual(status.syncCalls, syncs)
        XCTAssertLessThan(status.flushes, syncs, "concurrent syncs shared flushes")
        XCTAssertGreaterThan(status.flushes, 0)
        XCTAssertEqual(status.durable, status.cursor, "after the last sync everything is durable")
        let check = TextLines.check(readBytes(path), size: 64)
        for w in 0..<12 { XCTAssertTrue(check.hasExactly(worker: w, count: ops), "worker \(w): \(check.problems(worker: w, count: ops)); \(check)") }
    }

    func testAFlusherKilledInsideAFlushWedgesNoOne() throws {
        let path = scratch.file("killed.log")
        let ops = 200
        // The victim pauses for a second inside every flush it makes; it is killed in one.
        let victimOut = scratch.file("victim.out")
        let victim = syncingWriter(path, worker: 0, ops: 100_000, extra: ["--flush-pause-ms", "1000"], stdout: victimOut)
        let deadline = nowNanoseconds(CLOCK_MONOTONIC) + 10_000_000_000
        while !readText(victimOut).contains("flushing") && nowNanoseconds(CLOCK_MONOTONIC) < deadline { usleep(5_000) }
        XCTAssertTrue(readText(victimOut).contains("flushing"), "the victim became the flusher")
        // Others sync while it holds the flush role, then it dies holding it.
        let others = Watched((1..<7).map { syncingWriter(path, worker: $0, ops: ops) })
        usleep(100_000)
        victim.kill()
        _ = victim.wait()
        let killedAt = nowNanoseconds(CLOCK_MONOTONIC)
        let statuses = others.waitAll()
        let took = Double(nowNanoseconds(CLOCK_MONOTONIC) - killedAt) / 1e9
        print("the others finished \(String(format: "%.2f", took)) s after the flusher was killed")
        for (i, status) in statuses.enumerated() { XCTAssertTrue(status.succeeded, "writer \(i + 1): \(status)") }
        XCTAssertLessThan(took, 20, "no one waited on the dead flusher")
        let check = TextLines.check(try MMLogReader(path: path).read(from: 0, maxBytes: 1 << 24).bytes, size: 64)
        for w in 1..<7 { XCTAssertTrue(check.hasExactly(worker: w, count: ops), "worker \(w): \(check.problems(worker: w, count: ops)); \(check)") }
    }

    func testSyncWithNothingNewReturnsWithoutAFlush() throws {
        let path = scratch.file("idle.log")
        let log = try MMLog(path: path)
        try log.append("one\n")
        try log.sync()
        let flushes = log.flushCount
        for _ in 0..<100 { try log.sync() }
        XCTAssertEqual(log.flushCount, flushes, "this thread's records were already durable: no more flushes")
        XCTAssertEqual(log.durableOffset, 4)
        try log.close()
    }

    /// Another program cut the data file (`: > app.log`) while the log was closed: recovery
    /// lowered the cursor but left the durable watermark above it, and three sync() calls
    /// after new appends made no flush at all.
    func testSyncFlushesAfterTheDataFileWasCutFromOutside() throws {
        let path = scratch.file("cut.log")
        var log = try MMLog(path: path)
        for i in 0..<100 { try log.append("before the cut \(i)\n") }
        try log.sync()
        try log.close()
        XCTAssertEqual(truncate(path, 0), 0)
        log = try MMLog(path: path)
        let flushesBefore = log.flushCount
        for round in 0..<3 {
            try log.append("after the cut \(round)\n")
            try log.sync()
        }
        XCTAssertEqual(log.flushCount - flushesBefore, 3, "sync() returned without flushing records made after the cut")
        XCTAssertLessThanOrEqual(log.durableOffset, log.endOffset)
        try log.close()
        XCTAssertEqual(readText(path), "after the cut 0\nafter the cut 1\nafter the cut 2\n")
    }

    /// A sync() whose flush covers a hole recorded since (a writer that died in flight) flushes
    /// the metadata too, so the hole is on the device before a durable watermark past it can
    /// be; a sync() with no new hole flushes the data file only (strace counts the calls).
    func testASyncPastANewHoleFlushesTheMetadataAndOnlyThen() throws {
        guard access("/usr/bin/strace", X_OK) == 0 else { throw XCTSkip("strace is not installed") }
        let path = scratch.file("holes.log")
        func metadataFlushes(_ arguments: [String]) -> Int {
            let trace = scratch.file("trace-\(arguments.joined().hashValue)")
            let run = TestSupport.run("/usr/bin/strace", ["-f", "-y", "-e", "trace=fdatasync,fsync", "-o", trace,
                                                          product("mmlog-writer"), "--path", path, "--text", "--size", "64"] + arguments)
            XCTAssertTrue(run.status.succeeded || arguments.contains("--abandon-after"), run.stderr)
            return readText(trace).split(separator: "\n").filter { $0.contains("sync(") && $0.contains("holes.log.mmlog>") }.count
        }
        XCTAssertEqual(metadataFlushes(["--worker", "0", "--ops", "20", "--sync-every", "10"]), 1, "once, at the log's creation")
        XCTAssertEqual(metadataFlushes(["--worker", "0", "--ops", "20", "--sync-every", "10", "--worker", "1"]), 0, "no hole, no metadata flush")
        _ = metadataFlushes(["--worker", "2", "--ops", "10", "--abandon-after", "5"])  // dies in flight
        XCTAssertEqual(metadataFlushes(["--worker", "3", "--ops", "20", "--sync-every", "10"]), 1,
                       "the dead writer's hole (recorded on open) reaches the device with the first flush past it")
        let (text, _) = try MMLogReader(path: path).read(from: 0)
        XCTAssertEqual(text.filter { $0 == 0 }.count, 0)
    }
}
