#if canImport(Glibc)
import Glibc
#endif
import BenchRecords
import Foundation
import MMLog
import TestSupport
import XCTest

/// Reading a log while it is written: the committed watermark, MMLogReader and `mmlog tail`,
/// beside real writer processes.
final class ReaderTests: XCTestCase {
    var scratch: ScratchDirectory!

    override func setUp() { scratch = ScratchDirectory("mmlog-reader") }
    override func tearDown() { scratch.remove() }

    func textWriter(_ path: String, worker: Int, ops: Int, size: Int, extra: [String] = []) -> Child {
        spawn(product("mmlog-writer"), ["--path", path, "--worker", "\(worker)", "--ops", "\(ops)", "--size", "\(size)", "--text"] + extra)
    }

    /// Follows `path` with an MMLogReader until `done()` and then until nothing more has come
    /// for 300 ms; returns every byte it read and when (CLOCK_MONOTONIC) the last came.
    func follow(_ path: String, until done: () -> Bool) throws -> (bytes: [UInt8], lastAt: UInt64) {
        let reader = try MMLogReader(path: path)
        var offset = 0
        var bytes: [UInt8] = []
        var lastAt: UInt64 = 0
        var quietSince: UInt64?
        while true {
            let (chunk, next) = try reader.read(from: offset, maxBytes: 64 << 20)
            offset = next
            if !chunk.isEmpty {
                bytes += chunk
                lastAt = nowNanoseconds(CLOCK_MONOTONIC)
                quietSince = nil
                continue
            }
            if done() {
                let now = nowNanoseconds(CLOCK_MONOTONIC)
                if let since = quietSince, now - since > 300_000_000 { return (bytes, lastAt) }
                quietSince = quietSince ?? now
            }
            _ = try reader.waitForCommit(beyond: offset, timeoutNanoseconds: 20_000_000)
        }
    }

    func testALiveReaderAndTailSeeEveryLineOnceBesideSixWriters() throws {
        let path = scratch.file("live.log")
        let (ops, size) = (20_000, 64)
        try MMLog(path: path, options: .init(chunkSize: 1 << 16)).close()  // exists, so tail -f can start first
        let tailOut = scratch.file("tail.out")
        let tail = spawn(product("mmlog"), ["tail", "-n", "0", "-f", path], stdoutPath: tailOut)
        waitUntil(tail.pid, hasOpen: path)  // tail may start slowly on a busy machine
        let writers = Watched((0..<6).map { textWriter(path, worker: $0, ops: ops, size: size, extra: ["--rate", "40000"]) })
        let bytes = try follow(path) { writers.poll() }.bytes
        XCTAssertTrue(writers.waitAll().allSatisfy(\.succeeded))
        let check = TextLines.check(bytes, size: size)
        XCTAssertEqual(check.nulBytes, 0, "\(check)")
        XCTAssertTrue(check.malformed.isEmpty, "\(check)")
        for w in 0..<6 { XCTAssertTrue(check.hasExactly(worker: w, count: ops), "reader, worker \(w): \(check.problems(worker: w, count: ops)); \(check)") }

        // tail -f prints every line once, and nothing again when the last writer's close trims.
        var tailCheck = TextLines.check(readBytes(tailOut), size: size)
        let deadline = nowNanoseconds(CLOCK_MONOTONIC) + 5_000_000_000
        while tailCheck.perWorker.values.reduce(0, { $0 + $1.count }) < 6 * ops && nowNanoseconds(CLOCK_MONOTONIC) < deadline {
            usleep(50_000)
            tailCheck = TextLines.check(readBytes(tailOut), size: size)
        }
        usleep(300_000)  // anything re-read after the trim would arrive now
        tail.kill(SIGTERM)
        _ = tail.wait()
        tailCheck = TextLines.check(readBytes(tailOut), size: size)
        XCTAssertEqual(tailCheck.nulBytes, 0, "\(tailCheck)")
        XCTAssertTrue(tailCheck.malformed.isEmpty, "\(tailCheck)")
        for w in 0..<6 { XCTAssertTrue(tailCheck.hasExactly(worker: w, count: ops), "tail -f, worker \(w): \(tailCheck.problems(worker: w, count: ops)); \(tailCheck)") }
        XCTAssertEqual(fileSize(path), 6 * ops * size, "the last close trimmed the file")
    }

    func testTheReaderPassesWritersKilledAtRandomAndKeepsEverySurvivorsLine() throws {
        let seed = getenv("MMLOG_SEED").flatMap { UInt64(String(cString: $0)) } ?? nowNanoseconds() % 1_000_000
        var random = SplitMix64(seed: seed)
        for round in 0..<3 {
            let path = scratch.file("kill-\(round).log")
            let (ops, size) = (15_000, 40 + random.below(200))
            try MMLog(path: path, options: .init(chunkSize: 1 << 16)).close()
            let writers = Watched((0..<6).map { textWriter(path, worker: $0, ops: ops, size: size,
                                                            extra: ["--chunk-size", "65536", "--rate", "30000"]) })
            let victims = Set([random.below(6), random.below(6)])
            for victim in victims {
                usleep(UInt32(50_000 + random.below(300_000)))
                writers.children[victim].kill()
            }
            let (bytes, lastLineAt) = try follow(path) { writers.poll() }
            let statuses = writers.statuses
            let lastExit = writers.lastExit
            let check = TextLines.check(bytes, size: size)
            let stall = lastLineAt > lastExit ? Double(lastLineAt - lastExit) / 1e6 : 0
            print("seed \(seed) round \(round): killed \(victims.sorted()); the reader had every line \(String(format: "%.1f", stall)) ms after the last writer ended; \(check)")
            XCTAssertEqual(check.nulBytes, 0, "seed \(seed) round \(round): \(check)")
            XCTAssertTrue(check.malformed.isEmpty, "seed \(seed) round \(round): \(check)")
            for w in 0..<6 {
                if victims.contains(w) {
                    XCTAssertTrue(check.hasPrefix(worker: w, atMost: ops), "seed \(seed) round \(round): killed worker \(w): \(check)")
                } else {
                    XCTAssertTrue(statuses[w]?.succeeded ?? false, "worker \(w) \(String(describing: statuses[w]))")
                    XCTAssertTrue(check.hasExactly(worker: w, count: ops), "seed \(seed) round \(round): worker \(w): \(check.problems(worker: w, count: ops)); \(check)")
                }
            }
            // It keeps up: the dead are passed (testAWriterDeadInFlight... bounds that at 100 ms),
            // so the reader is never left waiting for them.
            XCTAssertLessThan(stall, 1000, "seed \(seed) round \(round): the reader lagged behind the writers")
        }
    }

    func testAWriterDeadInFlightHoldsTheWatermarkUnder100Milliseconds() throws {
        try deadWriterIsPassedAndSkipped(published: true)
    }

    /// Killed in the instant between its fetch-add and publishing its range (seen once in CI
    /// among thousands of random kills): the range is found in the data, the first zero run
    /// past the slot's bound, and skipped all the same; recovery records it.
    func testAWriterDeadBeforePublishingItsRangeIsSkippedToo() throws {
        try deadWriterIsPassedAndSkipped(published: false)
    }

    /// The writer that died before publishing held the *newest* reservation: nothing after
    /// it bounds its zeros. `mmlog cat` showed its 50 NUL bytes, and after `mmlog recover`
    /// (which said they were recorded as holes) and a new append they were still there.
    func testAWriterDeadBeforePublishingTheNewestReservationShowsNoNULs() throws {
        let path = scratch.file("newest.log")
        let dead = textWriter(path, worker: 1, ops: 100, size: 50, extra: ["--abandon-after", "100", "--abandon-unpublished"])
        XCTAssertTrue(dead.wait().status.succeeded)
        let before = mmlog(["cat", path])
        XCTAssertEqual(before.status.code, 0, before.stderr)
        XCTAssertFalse(before.stdout.utf8.contains(0), "mmlog cat of the live log shows the dead writer's zeros")
        XCTAssertEqual(TextLines.check(Array(before.stdout.utf8), size: 50).perWorker[1], Array(0..<100))
        let recovered = mmlog(["recover", path])
        XCTAssertEqual(recovered.status.code, 0, recovered.stderr)
        let log = try MMLog(path: path)
        try log.append(TextLines.line(worker: 2, index: 0, size: 50))
        try log.close()
        let after = readBytes(path)
        XCTAssertFalse(after.contains(0), "NUL bytes left in the data file after recovery and an append")
        let check = TextLines.check(after, size: 50)
        XCTAssertEqual(check.perWorker[1], Array(0..<100))
        XCTAssertEqual(check.perWorker[2], [0])
    }

    /// A follower that came while the log was being created (its metadata empty) read it as a
    /// plain file for ever: to its size, the zeros allocated ahead included, so every record
    /// later written there was missed (the nemesis's skips to a chunk multiple).
    func testTailFStartedWhileTheLogIsCreatedMissesNothing() throws {
        let path = scratch.file("new.log")
        writeBytes(path, [])
        writeBytes(path + ".mmlog", [])  // a creator at work
        let output = scratch.file("tail.out")
        let tail = spawn(product("mmlog"), ["tail", "-F", "-n", "100000", path], stdoutPath: output)
        defer { tail.kill(); _ = tail.wait() }
        usleep(100_000)
        let log = try MMLog(path: path, options: .init(chunkSize: 65536))
        let lines = (0..<300).map { "line \($0) of the new log\n" }
        for line in lines {
            try log.append(line)
            usleep(2_000)
        }
        let deadline = nowNanoseconds(CLOCK_MONOTONIC) + 10_000_000_000
        while readText(output).split(separator: "\n").count < lines.count && nowNanoseconds(CLOCK_MONOTONIC) < deadline { usleep(20_000) }
        XCTAssertEqual(readText(output), lines.joined(), "tail -F missed or tore lines of a log created after it started")
        try log.close()
    }

    func deadWriterIsPassedAndSkipped(published: Bool) throws {
        let path = scratch.file("dead.log")
        let survivor = try MMLog(path: path)
        try survivor.append("before\n")
        // A writer reserves a line and dies before copying it.
        let dead = textWriter(path, worker: 1, ops: 10, size: 32, extra: ["--abandon-after", "3"] + (published ? [] : ["--abandon-unpublished"]))
        XCTAssertTrue(dead.wait().status.succeeded)
        let diedAt = nowNanoseconds(CLOCK_MONOTONIC)
        try survivor.append("after\n")
        let reader = try MMLogReader(path: path)
        XCTAssertTrue(try reader.waitForCommit(beyond: survivor.endOffset - 1, timeoutNanoseconds: 2_000_000_000))
        let waited = Double(nowNanoseconds(CLOCK_MONOTONIC) - diedAt) / 1e6
        print("the watermark passed the dead writer's reservation \(String(format: "%.1f", waited)) ms after it died")
        XCTAssertLessThan(waited, 100)
        let (bytes, _) = try reader.read(from: 0)
        let text = String(decoding: bytes, as: UTF8.self)
        XCTAssertTrue(text.hasPrefix("before\n"), text)
        XCTAssertTrue(text.hasSuffix("after\n"), text)
        XCTAssertFalse(bytes.contains(0), "the dead writer's reserved range is skipped, not read as zeros")
        XCTAssertEqual(try reader.holes().count, 1, "one hole: the dead writer's line")
        let middle = Array(bytes.dropFirst("before\n".utf8.count).dropLast("after\n".utf8.count))
        XCTAssertEqual(TextLines.check(middle, size: 32).perWorker[1], [0, 1, 2], "the dead writer's lines before it died")
        try survivor.close()
        // The next process alone recovers: the hole is recorded, and every tool skips it.
        let reopened = try MMLog(path: path)
        XCTAssertEqual(reopened.recovery?.holesRecorded.count, 1, "\(String(describing: reopened.recovery))")
        try reopened.close()
        let cat = TestSupport.run(product("mmlog"), ["cat", path])
        XCTAssertEqual(cat.status.code, 0, cat.stderr)
        XCTAssertFalse(cat.stdout.contains("\0"), "mmlog cat skips the hole")
        XCTAssertTrue(cat.stdout.hasPrefix("before\n") && cat.stdout.hasSuffix("after\n"), cat.stdout)
    }

    /// A checker in this process reads behind writers in four others as fast as it can: every
    /// byte below every watermark it computes must be final (text lines: no NUL, none torn).
    func testTheWatermarkNeverPassesAnUnwrittenByte() throws {
        let path = scratch.file("stress.log")
        try MMLog(path: path, options: .init(chunkSize: 1 << 16, maxChunks: 2)).close()
        // Sizes that take every path: the mapping, straddling chunks, pwrite of large records.
        let sizes = [24, 300, 5000, 40_000]
        let writers = sizes.enumerated().map { k, size in
            textWriter(path, worker: k * 4, ops: [20_000, 5000, 500, 100][k], size: size,
                       extra: ["--threads", "4", "--chunk-size", "65536", "--max-chunks", "2"])
        }
        let reader = try MMLogReader(path: path)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 << 20, alignment: 64)
        defer { buffer.deallocate() }
        var offset = 0, checks = 0, bytesChecked = 0
        var problems: [String] = []
        let watched = Watched(writers)
        while true {
            let running = !watched.poll()
            // The buffer is larger than the log: every read ends at the watermark.
            let (count, next) = try reader.read(from: offset, into: buffer)
            checks += 1
            if count > 0 {
                // Below the watermark every byte is final: no zero (records are copied front to
                // back, so a partial copy ends in zeros), and the watermark is at a record
                // boundary (the last byte read ends a line).
                if memchr(buffer.baseAddress!, 0, count) != nil { problems.append("a NUL byte below the watermark \(next)") }
                if buffer[count - 1] != 0x0A { problems.append("the watermark \(next) cut a line") }
                bytesChecked += count
            }
            offset = next
            if problems.count > 5 || (!running && count == 0) { break }
        }
        XCTAssertTrue(watched.waitAll().allSatisfy(\.succeeded))
        // Then the whole log, line by line.
        let check = TextLines.check(try reader.read(from: 0, maxBytes: 64 << 20).bytes, size: 0)
        let lines = check.perWorker.values.reduce(0) { $0 + $1.count }
        print("\(checks) watermark reads, \(bytesChecked) bytes checked as they were committed, \(lines) lines")
        XCTAssertEqual(problems, [])
        XCTAssertEqual(lines, 4 * (20_000 + 5000 + 500 + 100), "\(check)")
        XCTAssertTrue(check.malformed.isEmpty, "\(check)")
        XCTAssertGreaterThan(checks, 100, "the checker read while the writers wrote")
    }

    /// Trims (alone, between appends of the handle's own threads) seal the cursor; appends in
    /// that moment raise it and reserve nothing. A reader (or the flusher) must not take the
    /// raised cursor for committed bytes: it read past the cut (zeros, then lines out of step).
    func testAReaderFollowingTrimsNeverReadsPastTheCut() throws {
        let path = scratch.file("trimmed.log")
        let (size, ops) = (64, 2_000)
        let log = try MMLog(path: path, options: .init(chunkSize: 65536, prefault: .none, hugePages: false, prefetch: false))
        final class Flag: @unchecked Sendable { let lock = NSLock(); var done = 0; var error: Error? }
        let flag = Flag()
        MMLog.testTrimHook = { usleep(2_000) }  // widens the moment the cursor is sealed
        defer { MMLog.testTrimHook = nil }
        let workers = DispatchGroup()
        for t in 0..<2 {
            DispatchQueue.global().async(group: workers) {
                for i in 0..<ops {
                    do { try log.append(TextLines.line(worker: t, index: i, size: size)) } catch {
                        flag.lock.lock(); flag.error = error; flag.lock.unlock(); break
                    }
                }
                flag.lock.lock(); flag.done += 1; flag.lock.unlock()
            }
        }
        DispatchQueue.global().async(group: workers) {
            while true {
                flag.lock.lock(); let finished = flag.done == 2; flag.lock.unlock()
                if finished { break }
                _ = try? log.trim()
            }
        }
        let (bytes, _) = try follow(path) { flag.lock.lock(); defer { flag.lock.unlock() }; return flag.done == 2 }
        workers.wait()
        try log.close()
        XCTAssertNil(flag.error)
        let check = TextLines.check(bytes, size: size)
        XCTAssertTrue(check.malformed.isEmpty && check.nulBytes == 0, "\(check)")
        for t in 0..<2 { XCTAssertTrue(check.hasExactly(worker: t, count: ops), "\(check.problems(worker: t, count: ops))") }
    }

    /// A reader opened in the moment a rotation renames the data file and then its metadata
    /// (it opened the old data file, then found no metadata at the path) read the live, retired
    /// file as a plain file: its allocated zeros and half-copied records came out (the
    /// nemesis: `tail -F -n 5` started then printed a torn line and skipped a record).
    func testAReaderOpenedInTheMiddleOfARotationNeverReadsALiveLogAsPlain() throws {
        let path = scratch.file("renaming.log")
        let log = try MMLog(path: path, options: .init(chunkSize: 65536))
        for i in 0..<100 { try log.append("old \(i)\n") }
        MMLogReader.testBetweenOpensHook = {
            MMLogReader.testBetweenOpensHook = nil
            // A rotation's renames (data file, then metadata), no new log made yet.
            rename(path, path + ".1")
            rename(path + ".mmlog", path + ".1.mmlog")
        }
        defer { MMLogReader.testBetweenOpensHook = nil }
        // Nothing is at the path now: notALog (tail -F waits for the path to appear).
        let opened = Result { () throws(MMLogError) -> MMLogReader in try MMLogReader(path: path) }
        switch opened {
        case .success(let reader):
            let nuls = (try? reader.read(from: 0).bytes.filter { $0 == 0 }.count) ?? -1
            XCTFail("read the live log \(path).1 as a plain file at \(path): \(nuls) NUL bytes")
        case .failure(let error):
            XCTAssertEqual(error.kind, .notALog, "\(error)")
        }
        let next = try MMLog(path: path)
        try next.append("new\n")
        let reader = try MMLogReader(path: path)
        XCTAssertTrue(reader.hasMetadata)
        XCTAssertEqual(String(decoding: try reader.read(from: 0).bytes, as: UTF8.self), "new\n")
        try next.close()
        try log.close()
    }

    func testMoreThreadsThanSlotsStillAppendAndExitingThreadsGiveSlotsBack() throws {
        let path = scratch.file("crowd.log")
        // 600 threads in one process: more than the 511 slots; the rest take the overflow slot.
        let crowd = TestSupport.run(product("mmlog-writer"), ["--path", path, "--threads", "600", "--ops", "100", "--size", "32"])
        XCTAssertTrue(crowd.status.succeeded, crowd.stderr)
        let report = try Verifier.verify(path: path, Expectation(planned: Array(repeating: 100, count: 600), size: 32))
        XCTAssertTrue(report.ok, "\(report)")

        // Threads that exit give their slots back to the handle: ten rounds of ten threads use ten.
        let reuse = scratch.file("reuse.log")
        let log = try MMLog(path: reuse)
        for round in 0..<10 {
            DispatchQueue.concurrentPerform(iterations: 10) { t in
                try? log.append("round \(round) thread \(t)\n")
            }
        }
        let status = try MMLogReader(path: reuse).status()
        XCTAssertLessThanOrEqual(status.writers.count, 10 + 2, "slots in use: \(status.writers.map(\.slot))")
        try log.close()
        XCTAssertEqual(try MMLogReader(path: reuse).status().liveWriters, 0, "close released every slot")
    }

    func testReadsAClosedLogAPlainFileAndAnUpgradedVersion1Log() throws {
        let closed = scratch.file("closed.log")
        let log = try MMLog(path: closed)
        for i in 0..<100 { try log.append("line \(i)\n") }
        try log.close()
        XCTAssertEqual(String(decoding: try MMLogReader(path: closed).read(from: 0).bytes, as: UTF8.self),
                       (0..<100).map { "line \($0)\n" }.joined())

        let plain = scratch.file("plain.log")
        writeBytes(plain, Array("no metadata here\n".utf8))
        let reader = try MMLogReader(path: plain)
        XCTAssertFalse(reader.hasMetadata)
        XCTAssertEqual(String(decoding: try reader.read(from: 0).bytes, as: UTF8.self), "no metadata here\n")

        // A version 1 header (one page, no writer table), as the previous MMLog wrote it.
        let old = scratch.file("old.log")
        writeBytes(old, Array("from version one\n".utf8) + [UInt8](repeating: 0, count: 4079))
        var header = [UInt8](repeating: 0, count: 4096)
        func put(_ offset: Int, _ value: UInt64, _ width: Int) {
            for k in 0..<width { header[offset + k] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(k))) }
        }
        put(MetadataLayout.magicOffset, MetadataLayout.magic, 8)
        put(MetadataLayout.versionOffset, 1, 4)
        put(MetadataLayout.headerSizeOffset, 4096, 4)
        put(MetadataLayout.pageSizeOffset, UInt64(sysconf(Int32(_SC_PAGESIZE))), 4)
        put(MetadataLayout.chunkSizeOffset, 4096, 8)
        put(MetadataLayout.stateOffset, MetadataLayout.ready, 8)
        put(MetadataLayout.fileSizeOffset, 4096, 8)
        put(MetadataLayout.cursorOffset, 17, 8)
        writeBytes(old + ".mmlog", header)
        XCTAssertEqual(String(decoding: try MMLogReader(path: old).read(from: 0).bytes, as: UTF8.self), "from version one\n",
                       "a reader reads a version 1 log no one is attached to")
        let upgraded = try MMLog(path: old)
        XCTAssertTrue(upgraded.recovery?.description.contains("from format version 1") ?? false, "\(String(describing: upgraded.recovery))")
        try upgraded.append("from version two\n")
        try upgraded.close()
        XCTAssertEqual(readText(old), "from version one\nfrom version two\n")
        XCTAssertEqual(try MMLogReader(path: old).status().formatVersion, Int(MetadataLayout.version))
    }

    // MARK: The mmlog tool

    func mmlog(_ arguments: [String]) -> (status: ExitStatus, stdout: String, stderr: String) {
        TestSupport.run(product("mmlog"), arguments)
    }

    func testMMLogCatAndTailPrintCommittedLines() throws {
        let path = scratch.file("lines.log")
        let log = try MMLog(path: path)
        for i in 0..<100 { try log.append("line \(i)\n") }
        // Attached: the file ends in allocated zeros, which neither cat nor tail prints.
        XCTAssertGreaterThan(fileSize(path)!, 1000)
        let cat = mmlog(["cat", path])
        XCTAssertEqual(cat.status.code, 0, cat.stderr)
        XCTAssertEqual(cat.stdout, (0..<100).map { "line \($0)\n" }.joined())
        let tail = mmlog(["tail", "-n", "3", path])
        XCTAssertEqual(tail.stdout, "line 97\nline 98\nline 99\n")
        XCTAssertEqual(mmlog(["tail", path]).stdout, (90..<100).map { "line \($0)\n" }.joined(), "ten lines by default")
        XCTAssertEqual(mmlog(["tail", "-n", "0", path]).stdout, "")
        XCTAssertEqual(mmlog(["tail", "-n", "500", path]).stdout, cat.stdout)
        try log.close()
        let plain = scratch.file("plain.txt")
        writeBytes(plain, Array("a\nb\nc\n".utf8))
        XCTAssertEqual(mmlog(["tail", "-n", "2", plain]).stdout, "b\nc\n")
        XCTAssertEqual(mmlog(["cat", plain]).stdout, "a\nb\nc\n")
    }

    func testMMLogOnBadInputSaysWhatIsWrongAndExitsNonZero() throws {
        let missing = scratch.file("missing.log")
        for command in ["cat", "tail", "stat", "recover"] {
            let result = mmlog([command, missing])
            if command == "recover" {
                XCTAssertEqual(result.status.code, 0, "recover leaves a path with no metadata alone: \(result.stderr)")
                continue
            }
            XCTAssertEqual(result.status.code, 1, "\(command): \(result.stderr)")
            XCTAssertTrue(result.stderr.contains(missing) && result.stderr.contains("no such file"), "\(command): \(result.stderr)")
        }
        let junk = scratch.file("junk.log")
        writeBytes(junk, Array("data\n".utf8))
        writeBytes(junk + ".mmlog", Array(String(repeating: "not a header\n", count: 400).utf8))
        for command in ["cat", "tail", "stat"] {
            let result = mmlog([command, junk])
            XCTAssertEqual(result.status.code, 1, "\(command): \(result.stderr)")
            XCTAssertTrue(result.stderr.contains(junk + ".mmlog") && result.stderr.contains("not an MMLog header"), "\(command): \(result.stderr)")
        }
        let recover = mmlog(["recover", junk])
        XCTAssertEqual(recover.status.code, 1)
        XCTAssertTrue(recover.stderr.contains(".mmlog"), recover.stderr)
        for arguments in [["tail", "-n", "x", junk], ["cat"], ["stat", "--bogus", junk], ["frobnicate", junk], ["tail", "-n", "-3", junk]] {
            XCTAssertEqual(mmlog(arguments).status.code, 64, "\(arguments)")
        }
        if getuid() != 0 {
            let locked = scratch.file("locked.log")
            try MMLog(path: locked).close()
            chmod(locked, 0)
            let result = mmlog(["cat", locked])
            XCTAssertEqual(result.status.code, 1)
            XCTAssertTrue(result.stderr.contains("Permission denied"), result.stderr)
        }
        let help = mmlog(["tail", "--help"])
        XCTAssertEqual(help.status.code, 0)
        XCTAssertTrue(help.stdout.contains("committed") && help.stdout.contains("-F"), help.stdout)
    }

    func testMMLogStatMidWriteAndAfterACrashThenRecover() throws {
        let path = scratch.file("stat.log")
        let writer = textWriter(path, worker: 0, ops: 400, size: 40, extra: ["--rate", "200"])
        usleep(700_000)
        let live = mmlog(["stat", "--json", path])
        XCTAssertEqual(live.status.code, 0, live.stderr)
        let status = try JSONDecoder().decode(MMLogStatus.self, from: Data(live.stdout.utf8))
        XCTAssertTrue(status.writersAttached)
        XCTAssertTrue(status.handles.contains { $0.pid == Int(writer.pid) && $0.alive }, "\(status.handles)")
        XCTAssertTrue(status.writers.contains { $0.pid == Int(writer.pid) && $0.alive })
        XCTAssertGreaterThan(status.committed, 0)
        XCTAssertLessThanOrEqual(status.committed, status.cursor)
        XCTAssertFalse(status.lastCloseClean)
        XCTAssertTrue(mmlog(["stat", path]).stdout.contains("format version \(MetadataLayout.version)"))
        writer.kill()
        _ = writer.wait()

        // A crash mid-append: a writer reserves a line and dies.
        XCTAssertTrue(textWriter(path, worker: 1, ops: 10, size: 40, extra: ["--abandon-after", "5"]).wait().status.succeeded)
        let crashed = try JSONDecoder().decode(MMLogStatus.self, from: Data(mmlog(["stat", "--json", path]).stdout.utf8))
        XCTAssertFalse(crashed.writersAttached)
        XCTAssertEqual(crashed.deadWriters, 1, "\(crashed.writers)")
        XCTAssertFalse(crashed.lastCloseClean)
        XCTAssertEqual(crashed.holes.count, 1, "the dead writer's range, found by its free lock")
        XCTAssertTrue(mmlog(["stat", path]).stdout.contains("DEAD"))
        let catted = mmlog(["cat", path]).stdout
        XCTAssertFalse(catted.contains("\0"))
        XCTAssertTrue(catted.hasSuffix("w1 r4 " + String(repeating: "x", count: 33) + "\n"), String(catted.suffix(80)))

        let recover = mmlog(["recover", path])
        XCTAssertEqual(recover.status.code, 0, recover.stderr)
        XCTAssertTrue(recover.stdout.contains("died in the middle of an append"), recover.stdout)
        let after = try JSONDecoder().decode(MMLogStatus.self, from: Data(mmlog(["stat", "--json", path]).stdout.utf8))
        XCTAssertTrue(after.lastCloseClean)
        XCTAssertEqual(after.deadWriters, 0)
        XCTAssertEqual(after.holes.count, 1, "the hole is recorded")
        XCTAssertEqual(after.dataFileSize, after.cursor, "recover closes the log trimmed")
        XCTAssertTrue(mmlog(["recover", path]).stdout.contains("clean"))
    }
}
