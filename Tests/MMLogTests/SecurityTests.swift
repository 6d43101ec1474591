#if canImport(Glibc)
import Glibc
#endif
import MMLog
import TestSupport
import XCTest

/// The attacks of docs/design.md's threat model ("Security"), each played by uid 65534 (via
/// `setpriv`) beside a root writer, with the kernel's own protections (`fs.protected_symlinks`,
/// `fs.protected_regular`, `fs.protected_hardlinks`) turned off for the test, as in containers
/// and inside a service-owned directory: MMLog must give the same protection by itself.
/// The attacks need root and skip without it; the CLI's refusals run as anyone.
final class SecurityTests: XCTestCase {
    var scratch: ScratchDirectory!
    /// A root-only directory holding the file the attacker aims at.
    var vault: ScratchDirectory!
    var victim: String { vault.file("secret") }
    let victimBytes = Array("root's secret\n".utf8)
    var savedSysctls: [(String, String)] = []
    static let attacker: uid_t = 65534

    override func setUp() {
        scratch = ScratchDirectory("mmlog-security")
        vault = ScratchDirectory("mmlog-vault")
        writeBytes(victim, victimBytes)
    }

    override func tearDown() {
        for (name, value) in savedSysctls { writeSysctl(name, value) }
        savedSysctls = []
        scratch.remove()
        vault.remove()
    }

    // MARK: Helpers

    func requireRoot() throws {
        try XCTSkipUnless(geteuid() == 0, "the attacks need root (a root writer beside uid \(Self.attacker)); skipped")
        try XCTSkipUnless(access("/usr/bin/setpriv", X_OK) == 0, "setpriv (util-linux) is missing; skipped")
    }

    func writeSysctl(_ name: String, _ value: String) {
        let path = "/proc/sys/" + name.replacingOccurrences(of: ".", with: "/")
        writeBytes(path, Array((value + "\n").utf8))
    }

    /// Turns the kernel's link and regular-file protections off until tearDown.
    func kernelProtectionsOff() {
        for name in ["fs.protected_symlinks", "fs.protected_regular", "fs.protected_hardlinks"] {
            let path = "/proc/sys/" + name.replacingOccurrences(of: ".", with: "/")
            let value = readText(path).trimmingCharacters(in: .whitespacesAndNewlines)
            savedSysctls.append((name, value))
            writeSysctl(name, "0")
        }
    }

    /// Runs a shell command as the attacker.
    @discardableResult
    func asAttacker(_ command: String) -> Int32? {
        let result = TestSupport.run("/usr/bin/setpriv", ["--reuid=\(Self.attacker)", "--regid=\(Self.attacker)", "--clear-groups",
                                              "/bin/sh", "-c", command])
        XCTAssertEqual(result.status.code, 0, "as uid \(Self.attacker): \(command): \(result.stderr)")
        return result.status.code
    }

    /// The log directory, shared like /tmp (sticky, everyone writes).
    func stickyShared() { chmod(scratch.path, 0o1777) }

    /// The log directory, owned by a service user (the attacker) that a root daemon logs into.
    func ownedByAttacker() {
        chown(scratch.path, Self.attacker, Self.attacker)
        chmod(scratch.path, 0o755)
    }

    func assertVictimUntouched(_ file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(readBytes(victim), victimBytes, "the attacker's target was changed", file: file, line: line)
    }

    func assertRefused(_ body: () throws -> Void, _ what: String, kind: MMLogError.Kind = .unsafeFile,
                       file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try body(), what, file: file, line: line) { error in
            XCTAssertEqual((error as? MMLogError)?.kind, kind, "\(what): \(error)", file: file, line: line)
        }
    }

    /// Runs `mmlog` with a deadline: a tool that blocks (on a FIFO) is killed and reported.
    func mmlog(_ arguments: [String], seconds: Double = 5) -> (status: String?, stderr: String) {
        let child = spawn(product("mmlog"), arguments)
        let deadline = nowNanoseconds(CLOCK_MONOTONIC) + UInt64(seconds * 1e9)
        while nowNanoseconds(CLOCK_MONOTONIC) < deadline {
            var raw: Int32 = 0
            if waitpid(child.pid, &raw, WNOHANG) == child.pid {
                let status = raw & 0x7f == 0 ? "exit \((raw >> 8) & 0xff)" : "signal \(raw & 0x7f)"
                return (status, child.stderrText())
            }
            usleep(5_000)
        }
        child.kill()
        _ = child.wait()
        return (nil, "still running after \(seconds) s")
    }

    // MARK: 1. Symbolic links and hard links

    func testASymlinkPlantedAtTheLogOrItsMetadataIsNeverFollowed() throws {
        try requireRoot()
        kernelProtectionsOff()
        stickyShared()
        let path = scratch.file("app.log")
        asAttacker("ln -s '\(victim)' '\(path)'")
        assertRefused({ _ = try MMLog(path: path) }, "a symlink at the data file's name")
        assertVictimUntouched()
        XCTAssertNil(fileSize(path + ".mmlog"), "a refused open left metadata behind")

        unlink(path)
        asAttacker("ln -s '\(victim)' '\(path).mmlog'")
        assertRefused({ _ = try MMLog(path: path) }, "a symlink at the metadata's name")
        assertVictimUntouched()
        assertRefused({ _ = try MMLogReader(path: path + ".mmlog") }, "a reader of the symlink")
    }

    func testAHardLinkToAnotherFileIsRefused() throws {
        try requireRoot()
        kernelProtectionsOff()
        ownedByAttacker()
        let path = scratch.file("app.log")
        XCTAssertEqual(link(victim, path), 0, "link: \(errno)")
        assertRefused({ _ = try MMLog(path: path) }, "a hard link at the data file's name")
        assertVictimUntouched()
    }

    // MARK: 2. Files planted in a shared directory

    func testFilesAnotherUserPlantedInAStickyDirectoryAreRefused() throws {
        try requireRoot()
        kernelProtectionsOff()
        stickyShared()
        let path = scratch.file("app.log")
        asAttacker("umask 0; : > '\(path)'; : > '\(path).mmlog'")
        assertRefused({ _ = try MMLog(path: path) }, "planted data and metadata")
        unlink(path)
        assertRefused({ _ = try MMLog(path: path) }, "planted metadata alone")
        XCTAssertNil(fileSize(path), "a refused open created the data file")
        unlink(path + ".mmlog")
        asAttacker("umask 0; : > '\(path)'")
        assertRefused({ _ = try MMLog(path: path) }, "a planted data file alone")
        XCTAssertNil(fileSize(path + ".mmlog"), "a refused open left metadata behind")

        // Our own files in the same directory are fine.
        let own = scratch.file("own.log")
        let log = try MMLog(path: own)
        try log.append("ours\n")
        try log.close()
        XCTAssertEqual(readText(own), "ours\n")
    }

    func testAWorldWritableDirectoryWithoutTheStickyBitIsRefusedToWriters() throws {
        chmod(scratch.path, 0o777)
        assertRefused({ _ = try MMLog(path: self.scratch.file("app.log")) }, "an insecure directory")
    }

    // MARK: 3. A crafted retired sibling

    func testACraftedRetiredSiblingCannotMakeARotationCutAFile() throws {
        try requireRoot()
        kernelProtectionsOff()
        ownedByAttacker()
        let path = scratch.file("r.log")
        let log = try MMLog(path: path)
        for i in 0..<100 { try log.append("line \(i)\n") }
        try log.close()
        // The attacker copies the metadata, marks the copy retired at 0 and points a
        // look-alike name at the victim.
        var header = readBytes(path + ".mmlog")
        header.withUnsafeMutableBytes { raw in
            let cursor = raw.load(fromByteOffset: MetadataLayout.cursorOffset, as: UInt64.self)
            raw.storeBytes(of: cursor | Cursor.retiredBit, toByteOffset: MetadataLayout.cursorOffset, as: UInt64.self)
            raw.storeBytes(of: UInt64(0), toByteOffset: MetadataLayout.retiredAtOffset, as: UInt64.self)
        }
        writeBytes(scratch.file("r.log.evil.mmlog"), header)
        chown(scratch.file("r.log.evil.mmlog"), Self.attacker, Self.attacker)
        asAttacker("ln -s '\(victim)' '\(scratch.file("r.log.evil"))'")

        let result = TestSupport.run(product("mmlog"), ["rotate", path])
        XCTAssertEqual(result.status.code, 0, result.stderr)
        assertVictimUntouched()
    }

    // MARK: 4. Planted names and pruning

    func testPlantedRotationNamesDoNotSteerPruning() throws {
        try requireRoot()
        kernelProtectionsOff()
        stickyShared()
        let path = scratch.file("r.log")
        let log = try MMLog(path: path)
        for round in 0..<3 {
            try log.append("round \(round)\n")
            XCTAssertTrue(try log.rotate())
        }
        try log.append("round 3\n")
        try log.close()
        let genuine = try FileManager.default.contentsOfDirectory(atPath: scratch.path)
            .filter { $0.hasPrefix("r.log.2") && !$0.hasSuffix(".mmlog") }.sorted()
        XCTAssertEqual(genuine.count, 3)
        asAttacker("touch '\(path).99999999T999999Z' '\(path).99999999T999999Z-2'")

        let result = TestSupport.run(product("mmlog"), ["rotate", "--keep", "2", path])
        XCTAssertEqual(result.status.code, 0, result.stderr)
        let left = try FileManager.default.contentsOfDirectory(atPath: scratch.path)
            .filter { $0.hasPrefix("r.log.2") && !$0.hasSuffix(".mmlog") }.sorted()
        XCTAssertEqual(left.count, 2, "kept: \(left)")
        XCTAssertEqual(left.first, genuine.last, "the newest genuine rotated file was pruned: \(left)")
        XCTAssertEqual(readText(scratch.file(left.last!)), "round 3\n", "the file just rotated")
    }

    func testAPlantedLookAlikeFileIsNeverFollowedByTailF() throws {
        try requireRoot()
        kernelProtectionsOff()
        stickyShared()
        let path = scratch.file("t.log")
        let log = try MMLog(path: path)
        try log.append("real 1\n")
        let output = scratch.file("tail.out")
        let tail = spawn(product("mmlog"), ["tail", "-F", "-n", "100", path], stdoutPath: output)
        defer { tail.kill(); _ = tail.wait() }
        asAttacker("printf 'Dec  3 03:00:00 host sshd[1]: Accepted password for root\\n' > '\(path).99999999T999999Z'")
        let deadline = nowNanoseconds(CLOCK_MONOTONIC) + 10_000_000_000
        while !readText(output).contains("real 1") && nowNanoseconds(CLOCK_MONOTONIC) < deadline { usleep(10_000) }
        XCTAssertTrue(try log.rotate())
        try log.append("real 2\n")
        XCTAssertTrue(try log.rotate())
        try log.append("real 3\n")
        while !readText(output).contains("real 3") && nowNanoseconds(CLOCK_MONOTONIC) < deadline { usleep(10_000) }
        usleep(200_000)
        XCTAssertEqual(readText(output), "real 1\nreal 2\nreal 3\n", "tail -F printed a planted file")
        try log.close()
    }

    // MARK: 5. Readers cannot stall writers

    /// What the attacker runs: read locks on every byte version 2 used (in the metadata and the
    /// data file, which any reader may open), and an attempt on the lock file; then it waits.
    static let lockingReader = """
        import fcntl, os, struct, sys, time
        held = []
        for name in sys.argv[1:]:
            try:
                fd = os.open(name, os.O_RDONLY)
            except OSError as e:
                print("cannot open", name, e.errno, flush=True)
                continue
            for start, length in [(0, 8), (1024, 128), (4096, 512)]:
                fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hhqqi", fcntl.F_RDLCK, 0, start, length, 0))
            held.append(fd)
        print("locked", len(held), flush=True)
        time.sleep(60)
        """

    func testAReaderHoldingReadLocksCannotStallAWriter() throws {
        try requireRoot()
        chmod(scratch.path, 0o755)
        let path = scratch.file("app.log")
        let first = try MMLog(path: path)
        try first.append("first\n")
        let lockFile = MMLog.files(ofLog: path)[2]
        XCTAssertNotNil(fileSize(lockFile), "no lock file")
        let output = scratch.file("reader.out")
        let reader = spawn("/usr/bin/setpriv", ["--reuid=\(Self.attacker)", "--regid=\(Self.attacker)", "--clear-groups",
                                               "/usr/bin/python3", "-c", Self.lockingReader, path + ".mmlog", path, lockFile],
                           stdoutPath: output)
        defer { reader.kill(); _ = reader.wait() }
        let deadline = nowNanoseconds(CLOCK_MONOTONIC) + 10_000_000_000
        while !readText(output).contains("locked") && nowNanoseconds(CLOCK_MONOTONIC) < deadline { usleep(10_000) }
        XCTAssertTrue(readText(output).contains("locked 2"), "the reader: \(readText(output))")
        XCTAssertTrue(readText(output).contains("cannot open \(lockFile) 13"), "a reader opened the lock file: \(readText(output))")

        // A writer that grows the file, syncs, rotates, closes and opens again, beside it.
        let writer = spawn(product("mmlog-writer"), ["--path", path, "--worker", "1", "--ops", "40000", "--size", "128", "--text",
                                                     "--sync-every", "5000", "--rotate-every", "15000"])
        let watched = Watched([writer])
        while !watched.poll() && nowNanoseconds(CLOCK_MONOTONIC) < deadline + 20_000_000_000 { usleep(10_000) }
        if !watched.poll() { writer.kill(); _ = watched.waitAll() }
        XCTAssertEqual(watched.statuses[0]?.code, 0, "the writer was stalled by a reader's locks: \(watched.stderrs[0] ?? "")")
        try first.close()
    }

    /// A reader who may not open the lock file still passes a writer that died in flight,
    /// within a second (by the writer's process id).
    func testAReaderWithoutTheLockFilePassesADeadWriter() throws {
        try requireRoot()
        chmod(scratch.path, 0o755)
        let path = scratch.file("dead.log")
        let survivor = try MMLog(path: path)
        try survivor.append("before\n")
        let dead = spawn(product("mmlog-writer"), ["--path", path, "--worker", "1", "--ops", "10", "--size", "32", "--text",
                                                   "--abandon-after", "3"])
        XCTAssertTrue(dead.wait().status.succeeded)
        try survivor.append("after\n")
        let started = nowNanoseconds(CLOCK_MONOTONIC)
        let result = TestSupport.run("/usr/bin/setpriv", ["--reuid=\(Self.attacker)", "--regid=\(Self.attacker)", "--clear-groups",
                                                          product("mmlog"), "cat", path])
        let took = Double(nowNanoseconds(CLOCK_MONOTONIC) - started) / 1e9
        XCTAssertEqual(result.status.code, 0, result.stderr)
        XCTAssertTrue(result.stdout.hasSuffix("after\n"), "the reader did not pass the dead writer: \(result.stdout)")
        XCTAssertFalse(result.stdout.utf8.contains(0))
        XCTAssertLessThan(took, 1.0)
        print("an unprivileged reader passed a dead writer in \(String(format: "%.2f", took)) s")
        try survivor.close()
    }

    // MARK: 6. Hostile metadata

    /// Values a writer of the metadata can plant: each made writers, `mmlog recover`, `stat` or
    /// `cat` die with SIGILL (unchecked conversions), or `cat` print nothing. Each command must
    /// end with exit 0 or 1, never a signal, and a log that opens keeps its records.
    func testHostileHeaderValuesCrashNoToolAndNoWriter() throws {
        typealias L = MetadataLayout
        let slot0 = L.slotsOffset
        let cases: [(String, [(Int, UInt64)])] = [
            ("an in-flight slot 0 ending at 2^64-1", [(slot0 + Slot.stateOffset, Slot.inFlight | Slot.exact | 10),
                                                      (slot0 + Slot.endOffset, UInt64.max), (L.slotHighWaterOffset, 1)]),
            ("durable, flushes and syncs past 2^63", [(L.durableOffset, 1 << 63), (L.flushesOffset, UInt64.max),
                                                      (L.syncCallsOffset, 1 << 63)]),
            ("a handle opened at 2^64-1", [(L.handlesOffset + 8, UInt64.max), (L.handlesOffset, 1 | (1 << 32))]),
            ("a hole ending past 2^63", [(L.holesOffset, 3), (L.holesOffset + 8, (1 << 63) + 5), (L.holeCountOffset, 1)]),
            ("a hole from 0 to 2^64-1", [(L.holesOffset, 0), (L.holesOffset + 8, UInt64.max), (L.holeCountOffset, 1)]),
        ]
        for (name, fields) in cases {
            let path = scratch.file("hostile.log")
            for file in MMLog.files(ofLog: path) { unlink(file) }
            let log = try MMLog(path: path)
            for i in 0..<20 { try log.append("line \(i)\n") }
            try log.close()
            var header = readBytes(path + ".mmlog")
            header.withUnsafeMutableBytes { raw in
                for (offset, value) in fields { raw.storeBytes(of: value, toByteOffset: offset, as: UInt64.self) }
            }
            writeBytes(path + ".mmlog", header)
            for command in [["stat", path], ["stat", "--json", path], ["cat", path], ["tail", "-n", "3", path], ["recover", path]] {
                let (status, stderr) = mmlog(command)
                XCTAssertTrue(status == "exit 0" || status == "exit 1", "\(name): mmlog \(command.joined(separator: " ")): \(status ?? "hung"): \(stderr)")
            }
            let writer = TestSupport.run(product("mmlog-writer"), ["--path", path, "--worker", "1", "--ops", "10", "--size", "40", "--text"])
            XCTAssertNotNil(writer.status.code, "\(name): a writer died with signal \(writer.status.signal ?? 0)")
            if writer.status.code == 0 {
                XCTAssertTrue(readText(path).hasPrefix((0..<20).map { "line \($0)\n" }.joined()), "\(name): the records before")
            }
        }
    }

    // MARK: 7. The CLI on odd files

    func testTheToolRefusesFIFOsDirectoriesAndMissingLogsAtOnce() throws {
        let fifo = scratch.file("fifo.log")
        XCTAssertEqual(mkfifo(fifo, 0o644), 0)
        for command in [["cat", fifo], ["stat", fifo], ["tail", "-n", "1", fifo], ["recover", fifo], ["rotate", fifo]] {
            let (status, stderr) = mmlog(command)
            XCTAssertEqual(status, "exit 1", "mmlog \(command.joined(separator: " ")): \(stderr)")
            XCTAssertTrue(stderr.contains(fifo), "the error names the file: \(stderr)")
        }
        // A FIFO at the metadata's name beside a regular data file.
        let plain = scratch.file("plain.log")
        writeBytes(plain, Array("a line\n".utf8))
        XCTAssertEqual(mkfifo(plain + ".mmlog", 0o644), 0)
        for command in [["cat", plain], ["stat", plain], ["tail", "-n", "1", plain]] {
            let (status, stderr) = mmlog(command)
            XCTAssertEqual(status, "exit 1", "mmlog \(command.joined(separator: " ")) with a FIFO metadata: \(stderr)")
        }

        let directory = scratch.file("d")
        XCTAssertEqual(mkdir(directory, 0o755), 0)
        for command in [["stat", directory], ["recover", directory], ["rotate", directory], ["cat", directory]] {
            let (status, stderr) = mmlog(command)
            XCTAssertEqual(status, "exit 1", "mmlog \(command.joined(separator: " ")) on a directory: \(stderr)")
        }
        XCTAssertNil(fileSize(directory + ".mmlog"), "a refused rotate left d.mmlog behind")

        let missing = scratch.file("missing.log")
        let (status, stderr) = mmlog(["rotate", missing])
        XCTAssertEqual(status, "exit 1", "mmlog rotate of a missing log: \(stderr)")
        XCTAssertEqual(mmlog(["recover", missing]).status, "exit 0", "recover leaves a path with no log alone")
        XCTAssertNil(fileSize(missing), "mmlog created a log that did not exist")
        XCTAssertNil(fileSize(missing + ".mmlog"), "mmlog created metadata for a log that did not exist")
    }
}

extension Child {
    /// What the child wrote to stderr, once reaped elsewhere (the file is removed).
    func stderrText() -> String {
        let text = readText(stderrPath)
        unlink(stderrPath)
        return text
    }
}
