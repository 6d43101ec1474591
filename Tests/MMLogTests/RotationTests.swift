#if canImport(Glibc)
import Glibc
#endif
import BenchRecords
import MMLog
import TestSupport
import XCTest

/// Rotation across processes: by size, from outside (`mmlog rotate`, logrotate), with a
/// rotator killed in the middle; every record whole in exactly one file.
final class RotationTests: XCTestCase {
    var scratch: ScratchDirectory!

    override func setUp() { scratch = ScratchDirectory("mmlog-rotation") }
    override func tearDown() { scratch.remove() }

    func writer(_ path: String, worker: Int, ops: Int, size: Int, extra: [String] = [], stdout: String = "/dev/null") -> Child {
        spawn(product("mmlog-writer"), ["--path", path, "--worker", "\(worker)", "--ops", "\(ops)", "--size", "\(size)", "--text",
                                        "--chunk-size", "65536"] + extra, stdoutPath: stdout)
    }

    /// The data files of the log at `path`: rotated ones oldest first (by the naming rule, or
    /// by logrotate's `.N`, highest first), then the current one.
    func logFiles(_ path: String) -> [String] {
        let directory = String(path[..<path.lastIndex(of: "/")!])
        let base = String(path[path.index(after: path.lastIndex(of: "/")!)...])
        guard let dir = opendir(directory) else { return [] }
        defer { closedir(dir) }
        var stamped: [(String, Int, String)] = [], numbered: [(Int, String)] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard name.hasPrefix(base + "."), !name.hasSuffix(".mmlog") else { continue }
            let suffix = name.dropFirst(base.count + 1)
            if let n = Int(suffix) { numbered.append((n, directory + "/" + name)); continue }
            let parts = suffix.split(separator: "-")
            stamped.append((String(parts[0]), parts.count > 1 ? Int(parts[1]) ?? 1 : 1, directory + "/" + name))
        }
        let rotated = numbered.sorted { $0.0 > $1.0 }.map(\.1) + stamped.sorted { ($0.0, $0.1) < ($1.0, $1.1) }.map(\.2)
        return rotated + (fileSize(path) != nil ? [path] : [])
    }

    /// Every committed line of every file, in order, checked; plus each file's size. Files are
    /// read as `mmlog` reads them, holes skipped. With `writersKilled`, blank lines (spaces and a
    /// newline) are dropped: a killed writer's hole is filled so when its rotated file is
    /// finished (a plain file then), so only there may they appear. NUL bytes never may.
    func union(_ path: String, size: Int, writersKilled: Bool = false) throws -> (check: TextLines.Check, sizes: [String: Int]) {
        var bytes: [UInt8] = []
        var sizes: [String: Int] = [:]
        for file in logFiles(path) {
            sizes[file] = fileSize(file)
            let reader = try MMLogReader(path: file)
            reader.deadWriterProbeDelay = 0
            let read = try reader.read(from: 0, maxBytes: 64 << 20).bytes
            if writersKilled {
                for line in read.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).dropLast()
                where !(line.count > 0 && line.allSatisfy { $0 == UInt8(ascii: " ") }) {
                    bytes += line + [UInt8(ascii: "\n")]
                }
                if let last = read.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).last { bytes += last }
            } else {
                bytes += read
            }
        }
        return (TextLines.check(bytes, size: size), sizes)
    }

    func testSizeRotationUnderSixWritersPutsEveryRecordInExactlyOneFileWithinTheSize() throws {
        let path = scratch.file("app.log")
        let (size, ops, limit) = (137, 15_000, 700_000)
        let writers = Watched((0..<6).map { writer(path, worker: $0, ops: ops, size: size, extra: ["--rotate-at-bytes", "\(limit)"]) })
        for (w, status) in writers.waitAll().enumerated() { XCTAssertTrue(status.succeeded, "writer \(w): \(status)") }
        let (check, sizes) = try union(path, size: size)
        print("\(sizes.count) files: \(sizes.values.sorted())")
        XCTAssertTrue(check.malformed.isEmpty && check.nulBytes == 0, "\(check)")
        for w in 0..<6 { XCTAssertTrue(check.hasExactly(worker: w, count: ops), "worker \(w): \(check.problems(worker: w, count: ops)); \(check)") }
        XCTAssertGreaterThanOrEqual(sizes.count, 6 * ops * size / limit)
        for (file, bytes) in sizes { XCTAssertLessThanOrEqual(bytes, limit + size, "\(file): within the size plus one record") }
        XCTAssertEqual(logFiles(path).filter { fileSize($0 + ".mmlog") != nil }, [path], "rotated files are finished: no metadata left")
    }

    func testRotationsFromOutsideAndARotatorKilledMidwayLoseNothing() throws {
        let path = scratch.file("app.log")
        let (size, ops) = (90, 12_000)
        // The victim rotates every 3,000 records and pauses inside each rotation (retired, not
        // yet renamed); it is killed in one.
        let victimOut = scratch.file("victim.out")
        let victim = writer(path, worker: 0, ops: 1_000_000, size: size,
                            extra: ["--rate", "20000", "--rotate-every", "3000", "--rotate-pause-ms", "5000"], stdout: victimOut)
        let others = Watched((1..<6).map { writer(path, worker: $0, ops: ops, size: size, extra: ["--rate", "20000"]) })
        let deadline = nowNanoseconds(CLOCK_MONOTONIC) + 20_000_000_000
        while !readText(victimOut).contains("rotating") && nowNanoseconds(CLOCK_MONOTONIC) < deadline { usleep(2_000) }
        XCTAssertTrue(readText(victimOut).contains("rotating"))
        victim.kill()  // inside its rotation: the log is retired, its files not yet renamed
        _ = victim.wait()
        // Then rotations from outside, as cron would make them, while the others write.
        for _ in 0..<4 {
            usleep(60_000)
            let (status, _, stderr) = TestSupport.run(product("mmlog"), ["rotate", path])
            XCTAssertEqual(status.code, 0, stderr)
        }
        for (w, status) in others.waitAll().enumerated() { XCTAssertTrue(status.succeeded, "writer \(w + 1): \(status)") }
        let (check, sizes) = try union(path, size: size, writersKilled: true)
        print("\(sizes.count) files after 4 outside rotations and a killed rotator; \(check)")
        XCTAssertTrue(check.malformed.isEmpty && check.nulBytes == 0, "\(check)")
        XCTAssertTrue(check.hasPrefix(worker: 0, atMost: 1_000_000), "the killed writer: \(check)")
        for w in 1..<6 { XCTAssertTrue(check.hasExactly(worker: w, count: ops), "worker \(w): \(check.problems(worker: w, count: ops)); \(check)") }
        XCTAssertGreaterThanOrEqual(sizes.count, 5)
        XCTAssertEqual(logFiles(path).filter { fileSize($0 + ".mmlog") != nil }, [path],
                       "every rotated file was finished, the killed rotator's too")
    }

    /// logrotate renamed the data file; the next open (`mmlog rotate` in postrotate) finishes
    /// that rotation and says so, so that the tool does not rotate a second time the records
    /// writers appended to the new log in between (seen in CI: a stray PATH.<time> file).
    func testAnOpenThatFinishesLogrotatesRenameSaysSo() throws {
        let path = scratch.file("renamed.log")
        let writer = try MMLog(path: path)
        try writer.append("before\n")
        XCTAssertFalse(writer.openedAfterRotation)
        XCTAssertEqual(Glibc.rename(path, path + ".1"), 0)
        let opener = try MMLog(path: path)
        XCTAssertTrue(opener.openedAfterRotation, "it found the data file renamed and retired the log")
        try writer.append("after\n")  // moves to the new log
        let again = try MMLog(path: path)
        XCTAssertFalse(again.openedAfterRotation)
        for log in [writer, opener, again] { try log.close() }
        XCTAssertEqual(logFiles(path), [path + ".1", path])
        XCTAssertEqual(readText(path + ".1"), "before\n")
        XCTAssertEqual(readText(path), "after\n")
    }

    /// The same with a bare relative path (`app.log` in the working directory): the renamed
    /// file is found as `app.log.1`, not `./app.log.1`, which no rotated name may be.
    func testLogrotatesRenameIsAdoptedForABareRelativePath() throws {
        let previous = getcwd(nil, 0)!
        defer { chdir(previous); free(previous) }
        XCTAssertEqual(chdir(scratch.path), 0)
        let writer = try MMLog(path: "bare.log")
        try writer.append("before\n")
        XCTAssertEqual(Glibc.rename("bare.log", "bare.log.1"), 0)
        let opener = try MMLog(path: "bare.log")
        XCTAssertTrue(opener.openedAfterRotation)
        try writer.append("after\n")  // moves to the new log
        for log in [writer, opener] { try log.close() }
        XCTAssertEqual(readText("bare.log.1"), "before\n")
        XCTAssertEqual(readText("bare.log"), "after\n")
        XCTAssertNil(fileSize("bare.log.1.mmlog"), "the rotated file was finished")
    }

    /// The record that crosses the rotation size ends the file; a handle opened in the moment
    /// before its writer rotates must not allocate past it (its fast path would write there,
    /// and the rotation cut that record off: seen as a lost first record of a new writer).
    func testAHandleOpenedJustAfterTheCrossingRecordLosesNothing() throws {
        let path = scratch.file("crossing.log")
        let options = MMLog.Options(chunkSize: 65536, rotateAtBytes: 1000)
        let first = try MMLog(path: path, options: options)
        func line(_ worker: Int, _ index: Int) -> [UInt8] { TextLines.line(worker: worker, index: index, size: 137) }
        for i in 0..<7 { try first.append(line(0, i)) }  // 959 bytes: the 8th crosses 1000
        final class Box: @unchecked Sendable { var log: MMLog?; var error: Error? }
        let late = Box()
        MMLog.testCrossedHook = {
            MMLog.testCrossedHook = nil
            do {
                late.log = try MMLog(path: path, options: options)
                try late.log!.append(TextLines.line(worker: 1, index: 0, size: 137))
            } catch { late.error = error }
        }
        defer { MMLog.testCrossedHook = nil }
        try first.append(line(0, 7))
        XCTAssertNil(late.error)
        try first.append(line(0, 8))
        try late.log?.close()
        try first.close()
        let (check, sizes) = try union(path, size: 137)
        XCTAssertTrue(check.hasExactly(worker: 0, count: 9), "\(check.problems(worker: 0, count: 9)); \(check)")
        XCTAssertTrue(check.hasExactly(worker: 1, count: 1), "the late handle's record: \(check); \(sizes)")
        XCTAssertEqual(sizes[logFiles(path).first!], 1096, "the rotated file ends with the crossing record")
    }

    /// logrotate renames the data file between a rotation's retirement and its renames, and an
    /// opener meets the retired metadata (it holds the header's init lock and waits for the
    /// rotator). The rotator, finishing idle rotated files, found the same log under
    /// logrotate's name and waited for that init lock: each waited for the other, for ever.
    func testLogrotatesRenameDuringARotationBesideAnOpenerDeadlocksNoOne() throws {
        let path = scratch.file("renamed.log")
        let log = try MMLog(path: path)
        try log.append("first\n")
        final class Box: @unchecked Sendable { var opened: MMLog?; var error: Error? }
        let box = Box()
        let opening = DispatchSemaphore(value: 0), opened = DispatchSemaphore(value: 0)
        MMLog.testRotateHook = {
            MMLog.testRotateHook = nil
            rename(path, path + ".1")  // logrotate's rename, between the retirement and MMLog's
            Thread.detachNewThread {
                opening.signal()
                do { box.opened = try MMLog(path: path) } catch { box.error = error }
                opened.signal()
            }
            opening.wait()
            usleep(200_000)  // the opener now holds the init lock and waits for the rotate lock
        }
        defer { MMLog.testRotateHook = nil }
        let rotated = DispatchSemaphore(value: 0)
        Thread.detachNewThread { _ = try? log.rotate(); rotated.signal() }
        guard rotated.wait(timeout: .now() + 10) == .success, opened.wait(timeout: .now() + 10) == .success else {
            return XCTFail("the rotation and the opener never finished: a deadlock (their threads are left hanging)")
        }
        XCTAssertNil(box.error)
        try box.opened?.append("second\n")
        try box.opened?.close()
        try log.close()
        XCTAssertEqual(readText(path + ".1"), "first\n")
        XCTAssertEqual(readText(path), "second\n")
        XCTAssertNil(fileSize(path + ".1.mmlog"), "the rotated file was finished")
    }

    /// Rotated names sort in rotation order even when the clock steps back between two
    /// rotations (NTP, or a clock that had run a day ahead): `tail -F` goes from a finished file
    /// to the next by name, and `ls`, pruning and shippers sort by name (before, the later
    /// file sorted first, and `tail -F` skipped it).
    func testRotatedNamesKeepRotationOrderWhenTheClockStepsBack() throws {
        let path = scratch.file("clock.log")
        let log = try MMLog(path: path)
        func shift(_ seconds: UInt64) { Sys.clockShiftNanoseconds.store(seconds * 1_000_000_000, ordering: .relaxed) }
        defer { shift(0) }
        shift(86_400)  // a day ahead
        try log.append("first\n")
        XCTAssertTrue(try log.rotate())
        shift(0)  // stepped back
        try log.append("second\n")
        XCTAssertTrue(try log.rotate())
        try log.append("third\n")
        try log.close()
        XCTAssertEqual(logFiles(path).map { readText($0) }, ["first\n", "second\n", "third\n"], "\(logFiles(path))")
    }

    func testKeepRotatedRemovesTheOldestAndNamesSortByTime() throws {
        let path = scratch.file("keep.log")
        let log = try MMLog(path: path, options: .init(keepRotated: 3))
        for round in 0..<6 {
            try log.append("round \(round)\n")
            XCTAssertTrue(try log.rotate())
        }
        try log.append("current\n")
        try log.close()
        let files = logFiles(path)
        XCTAssertEqual(files.count, 4, "three rotated and the current one: \(files)")
        XCTAssertEqual(files.map { readText($0) }, ["round 3\n", "round 4\n", "round 5\n", "current\n"])
        XCTAssertEqual(files.dropLast(), files.dropLast().sorted { a, b in
            // ls order: the time stamp, then the -N of rotations in the same second.
            a.count == b.count ? a < b : a.count < b.count
        }.prefix(3))
        XCTAssertFalse(try MMLog(path: scratch.file("empty.log")).rotate(), "an empty log is not rotated")
    }

    func testTailFFollowsAcrossRotations() throws {
        let path = scratch.file("followed.log")
        let out = scratch.file("tail.out")
        try MMLog(path: path).close()  // the log exists; tail -F opens it, at its end (empty)
        let tail = spawn(product("mmlog"), ["tail", "-F", "-n", "0", path], stdoutPath: out)
        waitUntil(tail.pid, hasOpen: path)  // tail may start slowly on a busy machine
        let (size, ops) = (64, 6000)
        let writers = Watched((0..<4).map { writer(path, worker: $0, ops: ops, size: size, extra: ["--rotate-at-bytes", "200000", "--rate", "20000"]) })
        XCTAssertTrue(writers.waitAll().allSatisfy(\.succeeded))
        let deadline = nowNanoseconds(CLOCK_MONOTONIC) + 10_000_000_000
        var check = TextLines.check(readBytes(out), size: size)
        while check.perWorker.values.reduce(0, { $0 + $1.count }) < 4 * ops && nowNanoseconds(CLOCK_MONOTONIC) < deadline {
            usleep(50_000)
            check = TextLines.check(readBytes(out), size: size)
        }
        usleep(300_000)
        tail.kill(SIGTERM)
        _ = tail.wait()
        check = TextLines.check(readBytes(out), size: size)
        XCTAssertGreaterThan(logFiles(path).count, 4, "the log rotated several times")
        XCTAssertTrue(check.malformed.isEmpty && check.nulBytes == 0, "\(check)")
        for w in 0..<4 { XCTAssertTrue(check.hasExactly(worker: w, count: ops), "tail -F, worker \(w): \(check.problems(worker: w, count: ops)); \(check)") }
    }

    /// The README's logrotate configuration: logrotate renames the file, `mmlog rotate` in its
    /// postrotate finishes the rotation, while writers write.
    func testLogrotateWithMMLogRotateInPostrotate() throws {
        let logrotate = "/usr/sbin/logrotate"
        guard access(logrotate, X_OK) == 0 else { throw XCTSkip("logrotate is not installed (apt-get install logrotate)") }
        let path = scratch.file("service.log")
        let config = scratch.file("logrotate.conf")
        writeBytes(config, Array("""
            \(path) {
                rotate 10
                nocopytruncate
                nocreate
                nocompress
                missingok
                notifempty
                postrotate
                    \(product("mmlog")) rotate \(path)
                endscript
            }

            """.utf8))
        let (size, ops) = (80, 10_000)
        let writers = Watched((0..<4).map { writer(path, worker: $0, ops: ops, size: size, extra: ["--rate", "15000"]) })
        for _ in 0..<3 {
            usleep(150_000)
            let result = TestSupport.run(logrotate, ["-f", "-s", scratch.file("state"), config])
            XCTAssertEqual(result.status.code, 0, result.stderr + result.stdout)
        }
        for (w, status) in writers.waitAll().enumerated() { XCTAssertTrue(status.succeeded, "writer \(w): \(status)") }
        let files = logFiles(path)
        let (check, _) = try union(path, size: size)
        print("after 3 logrotate runs: \(files.map { $0.split(separator: "/").last! }); \(check)")
        XCTAssertTrue(files.contains(path + ".3"), "\(files)")
        XCTAssertTrue(check.malformed.isEmpty && check.nulBytes == 0, "\(check)")
        for w in 0..<4 { XCTAssertTrue(check.hasExactly(worker: w, count: ops), "worker \(w): \(check.problems(worker: w, count: ops)); \(check)") }
        XCTAssertEqual(files.filter { fileSize($0 + ".mmlog") != nil }, [path], "rotated files finished: metadata gone")
    }

    /// A rotated file is a plain file: the range of a writer that died in flight in it reads as
    /// a blank line (spaces and a newline), never as NUL bytes (2,844 NUL bytes in 25 rotated
    /// files of the nemesis runs, before).
    func testARotatedFileHoldsNoNULByteWhereAWriterDied() throws {
        let path = scratch.file("holes.log")
        let survivor = try MMLog(path: path)
        try survivor.append("before\n")
        XCTAssertTrue(writer(path, worker: 1, ops: 10, size: 32, extra: ["--abandon-after", "3"]).wait().status.succeeded)
        try survivor.append("after\n")
        XCTAssertTrue(try survivor.rotate())
        try survivor.close()
        let files = logFiles(path)
        XCTAssertEqual(files.count, 2, "\(files)")
        let rotated = readBytes(files[0])
        XCTAssertFalse(rotated.contains(0), "NUL bytes in the rotated file")
        let lines = String(decoding: rotated, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
        XCTAssertEqual(lines.first, "before")
        XCTAssertEqual(lines.dropLast().last, "after")
        XCTAssertEqual(lines.filter { !$0.isEmpty && $0.allSatisfy { $0 == " " } }.count, 1, "the dead writer's line is one blank line: \(lines)")
        XCTAssertEqual(TextLines.check(Array(rotated.dropFirst(7).dropLast(6)), size: 32).perWorker[1], [0, 1, 2])
    }

    /// Threads of one handle, some idle for a moment, across many size rotations: the thread
    /// that moves on detaches the retired file while another still points at it. The fence
    /// must never show that thread a cursor without its flags (it showed a zero page for a
    /// moment: the idle thread reserved at offset 0 of the retired file and wrote its record
    /// over committed ones, the nemesis's "record at the start of a file over 1-11 records").
    func testIdleThreadsOfAHandleNeverWriteIntoAFileItLeft() throws {
        let path = scratch.file("idle.log")
        let (size, threads, ops) = (64, 4, 2_000)
        let log = try MMLog(path: path, options: .init(chunkSize: 65536, rotateAtBytes: 4096))
        MMLog.testFenceHook = { usleep(1_000) }  // widens the moment a file is fenced off
        defer { MMLog.testFenceHook = nil }
        final class Failure: @unchecked Sendable { let lock = NSLock(); var error: Error? }
        let failure = Failure()
        DispatchQueue.concurrentPerform(iterations: threads) { t in
            var random = SystemRandomNumberGenerator()
            for i in 0..<ops {
                // Thread 0 appends without pause (it rotates and leaves files); the others pause
                // now and then, so that they are idle in a file when it is left.
                if t != 0 && Int.random(in: 0..<16, using: &random) == 0 { usleep(UInt32.random(in: 0..<5_000, using: &random)) }
                do { try log.append(TextLines.line(worker: t, index: i, size: size)) } catch {
                    failure.lock.lock(); failure.error = failure.error ?? error; failure.lock.unlock()
                    return
                }
            }
        }
        try log.close()
        XCTAssertNil(failure.error)
        let (check, sizes) = try union(path, size: size)
        print("\(sizes.count) files after \(threads * ops) appends of \(size) B rotating at 4096")
        XCTAssertTrue(check.malformed.isEmpty && check.nulBytes == 0, "\(check)")
        for t in 0..<threads { XCTAssertTrue(check.hasExactly(worker: t, count: ops), "thread \(t): \(check.problems(worker: t, count: ops))") }
    }
}
