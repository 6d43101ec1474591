#if canImport(Glibc)
import Glibc
#endif
import BenchRecords
import Dispatch
import MMLog
import TestSupport
import XCTest

/// What production does to a log after things go wrong: power loss, a long full-disk spell,
/// files renamed under writers, fork, close racing appends. Root-only parts skip without root.
final class FailureTests: XCTestCase {
    var scratch: ScratchDirectory!

    override func setUp() { scratch = ScratchDirectory("mmlog-failure") }
    override func tearDown() { scratch.remove() }

    func writer(_ path: String, _ arguments: [String], stdout: String = "/dev/null") -> Child {
        spawn(product("mmlog-writer"), ["--path", path] + arguments, stdoutPath: stdout)
    }

    /// Lines of `text` that start with `prefix`, without it.
    func reports(_ path: String, _ prefix: String) -> [String] {
        readText(path).split(separator: "\n").filter { $0.hasPrefix(prefix) }.map { String($0.dropFirst(prefix.count)) }
    }

    // MARK: Power loss

    /// ext4 on a loop device (its image on tmpfs); periodic writeback off, so only what was
    /// synced reaches the "device". Writers append and sync() every 50 records; the device is
    /// copied while they are stopped (the power fails); the copy is mounted and opened.
    func testPowerLossKeepsEverySyncedRecordAndTheLogOpensWithoutHelp() throws {
        if let why = Root.unavailable { throw XCTSkip(why) }
        let ram = try TemporaryMount(at: scratch.file("ram"), bytes: 400 << 20)
        defer { ram.remove() }
        let disk = try LoopFilesystem.create(image: ram.path + "/disk.img", megabytes: 128, mountPoint: scratch.file("disk"))
        var diskMounted = true
        defer { if diskMounted { disk.remove() } }
        let writeback = try Sysctl("vm.dirty_writeback_centisecs", "0")
        defer { writeback.restore() }

        let path = disk.mountPoint + "/app.log"
        let size = 100
        for w in 0..<2 {
            let (status, stderr) = writer(path, ["--worker", "\(w)", "--ops", "1280", "--size", "\(size)", "--text"]).wait()
            XCTAssertTrue(status.succeeded, stderr)
        }
        Glibc.sync()
        let outputs = (0..<4).map { scratch.file("writer-\($0).out") }
        let writers = (0..<4).map {
            writer(path, ["--worker", "\(2 + $0)", "--ops", "1000000", "--size", "\(size)", "--text", "--sync-every", "50",
                          "--report-syncs", "--rate", "20000"], stdout: outputs[$0])
        }
        usleep(1_500_000)
        for child in writers { child.kill(SIGSTOP) }
        usleep(100_000)
        // The power fails: the device holds what was written to it, nothing else.
        let image = ram.path + "/after.img"
        XCTAssertTrue(TestSupport.run("/bin/cp", [disk.image, image]).status.succeeded)
        let synced = outputs.map { reports($0, "synced ").compactMap { Int($0) }.last ?? 0 }
        for child in writers { child.kill(SIGKILL); _ = child.wait() }
        // Mounted on another loop device while the first is still attached (as after a reboot,
        // the header is not this page cache's).
        let after = try LoopFilesystem.mount(image: image, at: scratch.file("after"))
        defer { after.remove() }
        disk.remove()
        diskMounted = false

        let recovered = after.mountPoint + "/app.log"
        let bytesBefore = readBytes(recovered)
        let log = try MMLog(path: recovered)  // no operator action
        let report = try XCTUnwrap(log.recovery, "a stale header is recovered")
        print("synced per writer \(synced); recovery: \(report)")
        XCTAssertTrue(report.headerWasStale, "\(report)")
        for i in 0..<500 { try log.append("after the power loss \(i)\n") }
        try log.close()

        // Nothing that reached the disk was overwritten: the new records start at the resume point.
        let bytesAfter = readBytes(recovered)
        XCTAssertEqual(Array(bytesAfter.prefix(report.cursorAfter)), Array(bytesBefore.prefix(report.cursorAfter)))
        XCTAssertGreaterThanOrEqual(report.cursorAfter, bytesBefore.lastIndex(where: { $0 != 0 }).map { $0 + 1 } ?? 0,
                                    "appends resume past every byte that reached the disk")
        // Every record a returned sync() covered is there, whole, once; and what a reader shows
        // is text: no NUL byte, every line one whole record (before: zero pages written back
        // and the head of a torn record showed as NULs and as a line made of two records).
        let (text, _) = try MMLogReader(path: recovered).read(from: 0, maxBytes: 64 << 20)
        XCTAssertEqual(text.filter { $0 == 0 }.count, 0, "NUL bytes in what a reader shows after recovery")
        let lines = String(decoding: text, as: UTF8.self).split(separator: "\n")
        var seen: [Int: Set<Int>] = [:]
        var malformed: [Substring] = []
        for line in lines {
            if let (w, i) = TextLines.parse(line.utf8, size: size) {
                seen[w, default: []].insert(i)
            } else if !line.hasPrefix("after the power loss ") {
                malformed.append(line)  // a tail kept after a lost page would be here: none expected
            }
        }
        print("\(lines.count) lines read after recovery, \(malformed.count) not whole records")
        XCTAssertTrue(malformed.allSatisfy { !$0.contains("after the power loss") }, "a line made of two records: \(malformed.prefix(3))")
        XCTAssertLessThanOrEqual(malformed.count, 4, "\(malformed.prefix(4).map { $0.prefix(60) })")
        for w in 0..<2 { XCTAssertEqual(seen[w]?.count, 1280, "writer \(w), closed and synced before") }
        for (k, count) in synced.enumerated() {
            XCTAssertGreaterThan(count, 0, "writer \(2 + k) synced something")
            let missing = (0..<count).filter { !(seen[2 + k]?.contains($0) ?? false) }
            XCTAssertEqual(missing, [], "writer \(2 + k): records below its last returned sync() \(count) are missing")
        }
        // The new lines follow, each on a line of its own.
        XCTAssertEqual(lines.suffix(500).map(String.init), (0..<500).map { "after the power loss \($0)" })
    }

    /// The power fails soon after a log was created (a new one after each rotation): the
    /// records a sync() covered are on the device, but the metadata never was (sync() flushed
    /// only the data file, and writeback had not come yet). The log must still read as its
    /// lines: before, the header was lost, the file (allocated a chunk ahead) was taken as a
    /// plain file, and a reader showed its allocated zeros as NUL bytes.
    func testPowerLossBeforeTheMetadataWasWrittenBackKeepsSyncedLinesAndShowsNoNUL() throws {
        if let why = Root.unavailable { throw XCTSkip(why) }
        let ram = try TemporaryMount(at: scratch.file("ram"), bytes: 300 << 20)
        defer { ram.remove() }
        let disk = try LoopFilesystem.create(image: ram.path + "/disk.img", megabytes: 64, mountPoint: scratch.file("disk"))
        var diskMounted = true
        defer { if diskMounted { disk.remove() } }
        let writeback = try Sysctl("vm.dirty_writeback_centisecs", "0")
        defer { writeback.restore() }
        let path = disk.mountPoint + "/fresh.log"
        let output = scratch.file("writer.out")
        let writer = writer(path, ["--worker", "0", "--ops", "1000000", "--size", "100", "--text", "--sync-every", "10",
                                   "--report-syncs", "--rate", "2000"], stdout: output)
        usleep(800_000)
        writer.kill(SIGSTOP)
        usleep(100_000)
        let image = ram.path + "/after.img"
        XCTAssertTrue(TestSupport.run("/bin/cp", [disk.image, image]).status.succeeded)
        let synced = reports(output, "synced ").compactMap { Int($0) }.last ?? 0
        writer.kill(SIGKILL)
        _ = writer.wait()
        let after = try LoopFilesystem.mount(image: image, at: scratch.file("after"))
        defer { after.remove() }
        disk.remove()
        diskMounted = false

        let recovered = after.mountPoint + "/fresh.log"
        XCTAssertGreaterThan(synced, 0)
        let log = try MMLog(path: recovered)
        print("synced \(synced); recovery: \(log.recovery.map { "\($0)" } ?? "none")")
        try log.append("after the power loss\n")
        try log.close()
        let (text, _) = try MMLogReader(path: recovered).read(from: 0, maxBytes: 64 << 20)
        XCTAssertEqual(text.filter { $0 == 0 }.count, 0, "NUL bytes in what a reader shows")
        let check = TextLines.check(Array(text.dropLast(21)), size: 100)
        XCTAssertEqual(Array((check.perWorker[0] ?? []).prefix(synced)), Array(0..<synced), "\(check)")
        XCTAssertEqual(String(decoding: text.suffix(21), as: UTF8.self), "after the power loss\n")
    }

    /// Recovery from the data file (a restore, or a crash) of a text log: zeros and the head of
    /// a record whose rest was lost are holes, so a reader shows whole lines only; in a binary
    /// log (control bytes) zeros may be record bytes and stay. No root needed: a copy of the
    /// files is recovered as after a crash.
    func testRecoveryFromTheDataFileShowsATextLogAsWholeLinesOnly() throws {
        func recovered(_ name: String, _ tail: [UInt8]) throws -> [UInt8] {
            let original = scratch.file(name + "-original.log")
            let log = try MMLog(path: original)
            for i in 0..<10 { try log.append("line \(i)\n") }
            try log.close()
            let copy = scratch.file(name + ".log")
            writeBytes(copy, readBytes(original) + tail)
            writeBytes(copy + ".mmlog", readBytes(original + ".mmlog"))
            let reopened = try MMLog(path: copy)
            XCTAssertEqual(reopened.recovery?.headerWasStale, true)
            try reopened.append("after\n")
            try reopened.close()
            return try MMLogReader(path: copy).read(from: 0, maxBytes: 1 << 20).bytes
        }
        let lines = (0..<10).map { "line \($0)\n" }.joined()
        let text = try recovered("text", Array("line 10 half".utf8) + [UInt8](repeating: 0, count: 100) + Array("ne 11\nline 12\nline 13 ha".utf8))
        XCTAssertEqual(String(decoding: text, as: UTF8.self), lines + "ne 11\nline 12\nafter\n",
                       "the head of a torn record, the zeros and a last line without its newline are holes")
        let binary = try recovered("binary", [1, 2, 3] + [UInt8](repeating: 0, count: 5) + [4, 10])
        XCTAssertEqual(binary, Array(lines.utf8) + [1, 2, 3, 0, 0, 0, 0, 0, 4, 10] + Array("after\n".utf8),
                       "a binary log's zeros are kept")
    }

    // MARK: A full disk

    /// Two writers keep appending on a full tmpfs, dropping what fails (as MMLogHandler does),
    /// 20,000 failures each; then space is freed, and every append must succeed again, and the
    /// file must hold the records, not the failed reservations.
    func testALongFullDiskSpellDoesNotWedgeTheLog() throws {
        if let why = Root.unavailable { throw XCTSkip(why) }
        let ram = try TemporaryMount(at: scratch.file("small"), bytes: 8 << 20)
        defer { ram.remove() }
        // Leave about 1 MiB for the log.
        let filler = ram.path + "/filler"
        XCTAssertTrue(TestSupport.run("/bin/dd", ["if=/dev/zero", "of=\(filler)", "bs=1M", "count=7"]).status.succeeded)
        let path = ram.path + "/app.log"
        let resume = scratch.file("resume")
        let (size, ops, chunk) = (100, 40_000, 65536)
        let outputs = (0..<2).map { scratch.file("writer-\($0).out") }
        let writers = (0..<2).map {
            writer(path, ["--worker", "\($0)", "--ops", "\(ops)", "--size", "\(size)", "--text", "--chunk-size", "\(chunk)",
                          "--keep-going", "--pause-after-failures", "20000", "--resume-file", resume], stdout: outputs[$0])
        }
        let deadline = nowNanoseconds(CLOCK_MONOTONIC) + 60_000_000_000
        while outputs.contains(where: { !readText($0).contains("paused") }) && nowNanoseconds(CLOCK_MONOTONIC) < deadline {
            usleep(20_000)
        }
        XCTAssertTrue(outputs.allSatisfy { readText($0).contains("paused") }, "both writers reached 20,000 failures")
        unlink(filler)  // 7 MiB free again
        writeBytes(resume, [])
        for child in writers {
            let (status, stderr) = child.wait()
            XCTAssertTrue(status.succeeded, "\(status) \(stderr)")
        }
        var appended = 0
        for (w, output) in outputs.enumerated() {
            let summary = reports(output, "appended ").first ?? ""
            let numbers = summary.split(separator: " ").compactMap { Int($0) }
            XCTAssertEqual(numbers.count, 2, "writer \(w): \(readText(output))")
            XCTAssertEqual(numbers.last, 20_000, "writer \(w): no append failed after space came back: \(summary)")
            appended += numbers.first ?? 0
        }
        let total = appended * size
        let fileBytes = fileSize(path) ?? 0
        print("\(appended) records appended (\(total) bytes); the file is \(fileBytes) bytes")
        XCTAssertGreaterThanOrEqual(fileBytes, total)
        XCTAssertLessThanOrEqual(fileBytes, total + chunk, "at most one chunk of slack, not 40,000 failed reservations")
        let reader = try MMLogReader(path: path)
        let bytes = try reader.read(from: 0, maxBytes: 64 << 20).bytes
        let check = TextLines.check(bytes, size: size)
        let nuls = bytes.indices.filter { bytes[$0] == 0 }
        XCTAssertTrue(check.malformed.isEmpty && check.nulBytes == 0,
                      "\(check); NULs read at \(nuls.prefix(4))...; status: \(String(describing: try? reader.status()))")
        XCTAssertEqual(check.perWorker.values.reduce(0) { $0 + $1.count }, appended)
        for (w, indexes) in check.perWorker { XCTAssertEqual(indexes, indexes.sorted(), "writer \(w)'s lines in order") }
    }

    // MARK: Renamed files

    func testRenamingTheFilesUnderALiveWriterCostsNoRecordAndNoSIGBUS() throws {
        let path = scratch.file("app.log")
        let size = 60
        let live = writer(path, ["--worker", "0", "--ops", "6000", "--size", "\(size)", "--text", "--rate", "4000",
                                 "--chunk-size", "65536"])
        usleep(300_000)
        // Metadata first: an opener now finds no metadata beside a data file that a writer
        // drives through the renamed one, and must not create a second driver for it.
        XCTAssertEqual(rename(path + ".mmlog", scratch.file("app.log.1.mmlog")), 0)
        let (between, betweenError) = writer(path, ["--worker", "1", "--ops", "10", "--size", "\(size)", "--text"]).wait()
        XCTAssertEqual(between.code, 1, "refused: \(betweenError)")
        XCTAssertTrue(betweenError.contains("another metadata file"), betweenError)
        XCTAssertEqual(rename(path, scratch.file("app.log.1")), 0)
        // Both renamed: a new log starts at the path.
        let (fresh, freshError) = writer(path, ["--worker", "2", "--ops", "500", "--size", "\(size)", "--text"]).wait()
        XCTAssertTrue(fresh.succeeded, freshError)
        let (status, stderr) = live.wait()
        XCTAssertTrue(status.succeeded, "the live writer kept going and closed: \(status) \(stderr)")
        let old = TextLines.check(readBytes(scratch.file("app.log.1")), size: size)
        XCTAssertTrue(old.hasExactly(worker: 0, count: 6000) && old.perWorker.count == 1 && old.malformed.isEmpty && old.nulBytes == 0,
                      "the renamed log holds the live writer's records, trimmed: \(old)")
        let new = TextLines.check(readBytes(path), size: size)
        XCTAssertTrue(new.hasExactly(worker: 2, count: 500) && new.perWorker.count == 1, "\(new)")

        // Data first (as logrotate does): the metadata at the path belongs to the renamed data
        // file. That is a rotation: the opener retires the old log under the file's new name and
        // starts a new one at the path; the live writer moves there at its next append.
        let other = scratch.file("other.log")
        let second = writer(other, ["--worker", "0", "--ops", "3000", "--size", "\(size)", "--text", "--rate", "4000"])
        usleep(300_000)
        XCTAssertEqual(rename(other, scratch.file("other.log.1")), 0)
        let (opener, openerError) = writer(other, ["--worker", "1", "--ops", "10", "--size", "\(size)", "--text"]).wait()
        XCTAssertTrue(opener.succeeded, openerError)
        XCTAssertTrue(second.wait().status.succeeded)
        let both = TextLines.check(readBytes(scratch.file("other.log.1")).filter { $0 != 0 } + readBytes(other), size: size)
        XCTAssertTrue(both.hasExactly(worker: 0, count: 3000) && both.hasExactly(worker: 1, count: 10) && both.malformed.isEmpty,
                      "every record once, in the renamed file or the new one: \(both)")
        XCTAssertNil(fileSize(scratch.file("other.log.1.mmlog")), "the retired file was finished when its writer moved on")
    }

    // MARK: fork

    /// A process killed while it flushes, whose fork() child (which never touches the log)
    /// lives on: the child's copies of the descriptors kept the parent's OFD locks alive, and
    /// every other process's sync() hung (6 runs of 6).
    func testAForkChildOfAWriterKilledInSyncDoesNotWedgeSync() throws {
        let path = scratch.file("fork-sync.log")
        let output = scratch.file("flusher.out")
        let flusher = writer(path, ["--worker", "0", "--ops", "100", "--size", "40", "--text", "--sync-every", "1",
                                    "--flush-pause-ms", "60000", "--fork-sleeper"], stdout: output)
        let deadline = nowNanoseconds(CLOCK_MONOTONIC) + 10_000_000_000
        while !readText(output).contains("flushing") && nowNanoseconds(CLOCK_MONOTONIC) < deadline { usleep(5_000) }
        let sleeper = reports(output, "sleeper ").first.flatMap { pid_t($0) }
        defer { if let sleeper { kill(sleeper, SIGKILL); var raw: Int32 = 0; _ = waitpid(sleeper, &raw, WNOHANG) } }
        XCTAssertNotNil(sleeper, readText(output))
        XCTAssertTrue(readText(output).contains("flushing"), "the flusher never flushed: \(readText(output))")
        flusher.kill()
        _ = flusher.wait()

        let other = writer(path, ["--worker", "1", "--ops", "20", "--size", "40", "--text", "--sync-every", "1"])
        let watched = Watched([other])
        let limit = nowNanoseconds(CLOCK_MONOTONIC) + 10_000_000_000
        while !watched.poll() && nowNanoseconds(CLOCK_MONOTONIC) < limit { usleep(10_000) }
        if !watched.poll() { other.kill(); _ = watched.waitAll() }
        XCTAssertEqual(watched.statuses[0]?.code, 0, "another process's sync() hung behind the dead flusher's child: \(watched.stderrs[0] ?? "")")
    }

    func testAForkedChildNeitherAppendsNorTouchesTheParentsLocks() throws {
        let path = scratch.file("fork.log")
        let resume = scratch.file("resume")
        let output = scratch.file("parent.out")
        let parent = writer(path, ["--worker", "0", "--ops", "1000", "--size", "40", "--text", "--fork-test", "--resume-file", resume],
                            stdout: output)
        let deadline = nowNanoseconds(CLOCK_MONOTONIC) + 10_000_000_000
        while !readText(output).contains("forked") && nowNanoseconds(CLOCK_MONOTONIC) < deadline { usleep(10_000) }
        XCTAssertTrue(readText(output).contains("forked"))
        // The child refused the handle and let it go: the parent is still attached, so no one
        // else may trim, and the parent's handle still works.
        let other = try MMLog(path: path)
        XCTAssertFalse(try other.trim(), "the parent's attach lock survived the child's close")
        let status = try MMLogReader(path: path).status()
        XCTAssertTrue(status.handles.contains { $0.pid == Int(parent.pid) && $0.alive }, "\(status.handles)")
        try other.close()
        writeBytes(resume, [])
        let (exit, stderr) = parent.wait()
        XCTAssertTrue(exit.succeeded, "\(exit) \(stderr)")
        let check = TextLines.check(readBytes(path), size: 40)
        XCTAssertTrue(check.hasExactly(worker: 0, count: 2000) && check.malformed.isEmpty && check.nulBytes == 0, "\(check)")
    }

    // MARK: From reading the code

    func testCloseRacingAppendsLeavesNothingAfterTheLastRecord() throws {
        for round in 0..<20 {
            let path = scratch.file("race-\(round).log")
            let log = try MMLog(path: path, options: .init(chunkSize: 1 << 16))
            let succeeded = Counts(8)
            let group = DispatchGroup()
            for t in 0..<8 {
                DispatchQueue.global().async(group: group) {
                    var i = 0
                    while (try? log.append("t\(t) line \(i) " + String(repeating: "x", count: 20) + "\n")) != nil {
                        i += 1
                    }
                    succeeded.set(t, i)
                }
            }
            usleep(UInt32(1000 + round * 500))
            try log.close()
            group.wait()
            let expected = (0..<8).reduce(0) { total, t in
                total + (0..<succeeded.get(t)).reduce(0) { $0 + "t\(t) line \($1) ".utf8.count + 21 }
            }
            XCTAssertEqual(fileSize(path), expected, "round \(round): the file is exactly the appends that returned")
            let text = readBytes(path)
            XCTAssertFalse(text.contains(0), "round \(round): no zeros")
            let reopened = try MMLog(path: path)
            XCTAssertEqual(reopened.endOffset, expected, "round \(round): the next record goes right after the last")
            try reopened.close()
        }
    }

    /// A writer whose reservation straddles the allocated end on a full disk is delayed while
    /// another fails (and voids) more than 64 times: the void point that says how much of its
    /// reservation lies below the allocated end must still be known when it gets there, or
    /// that part is left as NUL bytes no hole records (seen in the full-disk spell test, 1 run
    /// in ~10: 8 NULs before a line).
    func testAWriterDelayedPastManyVoidsStillRecordsItsHole() throws {
        if let why = Root.unavailable { throw XCTSkip(why) }
        let ram = try TemporaryMount(at: scratch.file("voids"), bytes: 1 << 20)
        defer { ram.remove() }
        let path = ram.path + "/app.log"
        let options = MMLog.Options(chunkSize: 4096, maxChunks: 2, adaptivePages: false)
        let first = try MMLog(path: path, options: options)
        let filler = ram.path + "/filler"
        let fd = open(filler, O_WRONLY | O_CREAT, 0o644)
        var block = [UInt8](repeating: 0x66, count: 4096)
        while block.withUnsafeMutableBytes({ write(fd, $0.baseAddress, 4096) }) == 4096 {}
        close(fd)
        func line(_ worker: Int, _ index: Int) -> [UInt8] { TextLines.line(worker: worker, index: index, size: 100) }
        var index = 0
        while true {  // fill what the log has allocated, until an append meets the full disk
            do { try first.append(line(0, index)); index += 1 } catch { XCTAssertTrue(error.isNoSpace, "\(error)"); break }
        }
        final class Box: @unchecked Sendable { var failures = 0; var other: String? }
        let box = Box()
        let second = try MMLog(path: path, options: options)
        MMLog.testBeforeGrowHook = {
            MMLog.testBeforeGrowHook = nil
            // On another thread (its own slot): 70 appends that fail, each voiding.
            let done = DispatchSemaphore(value: 0)
            Thread {
                for i in 0..<70 {
                    do { try second.append(TextLines.line(worker: 1, index: i, size: 100)); box.other = "an append succeeded on a full disk" }
                    catch let error as MMLogError where error.isNoSpace { box.failures += 1 } catch { box.other = "\(error)" }
                }
                done.signal()
            }.start()
            done.wait()
        }
        defer { MMLog.testBeforeGrowHook = nil }
        XCTAssertThrowsError(try first.append(line(0, index)), "the disk is still full")  // straddles; waits for the 70
        XCTAssertEqual(box.failures, 70, "\(String(describing: box.other))")
        unlink(filler)
        for _ in 0..<20 { index += 1; try first.append(line(0, index)) }
        try second.close()
        try first.close()
        let reader = try MMLogReader(path: path)
        let bytes = try reader.read(from: 0, maxBytes: 4 << 20).bytes
        let check = TextLines.check(bytes, size: 100)
        XCTAssertTrue(check.malformed.isEmpty && check.nulBytes == 0, "\(check); holes \(String(describing: try? reader.holes()))")
        XCTAssertEqual(check.perWorker[0]?.count, index, "every appended line of the first writer: \(check)")
    }

    func testTrimsRacingGrowthOnAFullDiskNeverSIGBUS() throws {
        if let why = Root.unavailable { throw XCTSkip(why) }
        let ram = try TemporaryMount(at: scratch.file("tiny"), bytes: 1 << 20)
        defer { ram.remove() }
        let path = ram.path + "/trim.log"
        // Four threads append until the disk is full while a fifth trims in a loop: a trim that
        // extended the file sparsely and published it as allocated would make a store SIGBUS.
        let (status, _, stderr) = TestSupport.run(product("mmlog-writer"), [
            "--path", path, "--threads", "4", "--ops", "5000", "--size", "100", "--text", "--chunk-size", "4096",
            "--max-chunks", "2", "--keep-going", "--trim-thread"])
        XCTAssertNotEqual(status.signal, SIGBUS, stderr)
        XCTAssertTrue(status.succeeded, "\(status) \(stderr)")
        let reader = try MMLogReader(path: path)
        let (bytes, _) = try reader.read(from: 0, maxBytes: 4 << 20)
        let check = TextLines.check(bytes, size: 100)
        let nuls = bytes.indices.filter { bytes[$0] == 0 }
        XCTAssertTrue(check.malformed.isEmpty && check.nulBytes == 0,
                      "\(check); NULs read at \(nuls.prefix(3))...\(nuls.suffix(1)); status: \(String(describing: try? reader.status()))")
    }

    func testOutOfRangeOptionsAndRecordSizesAreRefused() throws {
        let path = scratch.file("limits.log")
        for (name, options) in [("maxChunks near 2^62", MMLog.Options(maxChunks: 1 << 62)),
                                ("maxChunks past 4096", MMLog.Options(maxChunks: 5000)),
                                ("chunk size 2^62", MMLog.Options(chunkSize: 1 << 62))] {
            XCTAssertThrowsError(try MMLog(path: path, options: options), name) { error in
                XCTAssertEqual((error as? MMLogError)?.kind, .invalidOptions, "\(name): \(error)")
            }
        }
        let log = try MMLog(path: path)
        try log.append("before\n")
        // A count large enough to reach the cursor's flag bits is refused before it touches them.
        let huge = UnsafeRawBufferPointer(start: UnsafeRawPointer(bitPattern: 0x1000), count: 1 << 40)
        XCTAssertThrowsError(try log.append(huge)) { error in
            XCTAssertEqual((error as? MMLogError)?.kind, .recordTooLarge, "\(error)")
        }
        try log.append("after\n")
        try log.close()
        XCTAssertEqual(readText(path), "before\nafter\n")
    }

    func testAFailedOpenLeaksNothing() throws {
        let path = scratch.file("refused.log")
        writeBytes(path, Array("data\n".utf8))
        writeBytes(path + ".mmlog", Array(String(repeating: "not a header\n", count: 400).utf8))
        for _ in 0..<200 { _ = try? MMLog(path: path) }  // warm up caches and lazy globals
        let before = heapInUse()
        for _ in 0..<5000 { _ = try? MMLog(path: path) }
        let grown = heapInUse() - before
        XCTAssertLessThan(grown, 64 * 1024, "5,000 refused opens grew the heap by \(grown) bytes")
        var fds = 0
        for fd in 0..<4096 where fcntl(Int32(fd), F_GETFD) != -1 { fds += 1 }
        XCTAssertLessThan(fds, 64, "descriptors left open: \(fds)")
    }

    /// Another process holds the grow lock (as if stopped inside a grow) while a thread of ours
    /// waits to grow; close() must wait for that thread without burning a CPU.
    func testCloseWaitsWithoutSpinningWhileAnotherProcessHoldsTheGrowLock() throws {
        let path = scratch.file("stopped.log")
        let log = try MMLog(path: path, options: .init(chunkSize: 4096, maxChunks: 2))
        // This descriptor is another open file description: its lock excludes the handle's.
        // The grow lock is a byte of the lock file, in the region the header names.
        let region = readBytes(path + ".mmlog").withUnsafeBytes { $0.load(fromByteOffset: MetadataLayout.lockRegionOffset, as: UInt64.self) }
        let fd = open(MMLog.files(ofLog: path)[2], O_RDWR)
        defer { close(fd) }
        let F_OFD_SETLK: Int32 = 37  // <fcntl.h>, not exported by Glibc's module
        var lock = flock(l_type: Int16(F_WRLCK), l_whence: Int16(SEEK_SET), l_start: off_t(region) + off_t(MetadataLayout.growLockByte), l_len: 1, l_pid: 0)
        XCTAssertEqual(fcntl(fd, F_OFD_SETLK, &lock), 0)
        let appended = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            for _ in 0..<100 { _ = try? log.append(String(repeating: "y", count: 1000)) }  // needs to grow: waits
            appended.signal()
        }
        usleep(200_000)
        let closed = DispatchSemaphore(value: 0)
        let cpu = Counts(1)
        DispatchQueue.global().async {
            var before = rusage(), after = rusage()
            let RUSAGE_THREAD: Int32 = 1  // <sys/resource.h>, not exported by Glibc's module
            getrusage(__rusage_who_t(RUSAGE_THREAD), &before)
            try? log.close()
            getrusage(__rusage_who_t(RUSAGE_THREAD), &after)
            func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
            cpu.set(0, Int((seconds(after.ru_utime) + seconds(after.ru_stime) - seconds(before.ru_utime) - seconds(before.ru_stime)) * 1e6))
            closed.signal()
        }
        XCTAssertEqual(closed.wait(timeout: .now() + 1), .timedOut, "close waits for the append in flight")
        lock.l_type = Int16(F_UNLCK)
        XCTAssertEqual(fcntl(fd, F_OFD_SETLK, &lock), 0)
        XCTAssertEqual(closed.wait(timeout: .now() + 10), .success)
        XCTAssertEqual(appended.wait(timeout: .now() + 10), .success)
        print("close() used \(cpu.get(0) / 1000) ms of CPU while waiting about a second")
        XCTAssertLessThan(cpu.get(0), 200_000, "close() spun while waiting (microseconds of CPU)")
    }
}

/// Per-thread counts that threads set and the test reads after joining them.
final class Counts: @unchecked Sendable {
    private var values: [Int]
    private var lock = pthread_mutex_t()
    init(_ count: Int) { values = Array(repeating: 0, count: count); pthread_mutex_init(&lock, nil) }
    func set(_ i: Int, _ value: Int) { pthread_mutex_lock(&lock); values[i] = value; pthread_mutex_unlock(&lock) }
    func get(_ i: Int) -> Int { pthread_mutex_lock(&lock); defer { pthread_mutex_unlock(&lock) }; return values[i] }
}
