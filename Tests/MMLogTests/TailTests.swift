#if canImport(Glibc)
import Glibc
#endif
import BenchRecords
import Foundation
import MMLog
import TestSupport
import XCTest

/// `mmlog tail -n N`: the last N committed lines, found by reading backwards from the committed
/// end, for files of every shape; a huge line costs what it prints, not a scan per block; `-f`
/// goes on from where the last lines stopped.
final class TailTests: XCTestCase {
    var scratch: ScratchDirectory!

    override func setUp() { scratch = ScratchDirectory("mmlog-tail") }
    override func tearDown() { scratch.remove() }

    /// Runs `mmlog tail` to completion; returns its status, standard output (bytes), stderr,
    /// and how long it ran (spawn to exit).
    func tail(_ arguments: [String]) -> (status: ExitStatus, stdout: [UInt8], stderr: String, seconds: Double) {
        let out = scratch.file("tail-\(UUID().uuidString).out")
        defer { unlink(out) }
        let started = nowNanoseconds(CLOCK_MONOTONIC)
        let (status, stderr) = spawn(product("mmlog"), ["tail"] + arguments, stdoutPath: out).wait()
        let seconds = Double(nowNanoseconds(CLOCK_MONOTONIC) - started) / 1e9
        return (status, readBytes(out), stderr, seconds)
    }

    func assertTail(_ path: String, _ bytes: [UInt8], lines counts: [Int], _ what: String,
                    file: StaticString = #filePath, line: UInt = #line) {
        for n in counts {
            let result = tail(["-n", "\(n)", path])
            XCTAssertEqual(result.status.code, 0, "\(what), -n \(n): \(result.stderr)", file: file, line: line)
            let expected = lastLines(bytes, n)
            if result.stdout != expected {
                XCTFail("\(what), -n \(n): printed \(result.stdout.count) bytes \(preview(result.stdout)), expected \(expected.count) \(preview(expected))",
                        file: file, line: line)
            }
        }
    }

    func testTheLastLinesOfSmallFilesOfEveryShape() throws {
        let shapes: [(String, String)] = [
            ("empty", ""), ("final newline", "a\nb\nc\n"), ("no final newline", "a\nb\nc"), ("one line", "only"),
            ("one newline", "\n"), ("empty lines", "\n\n\n"), ("CRLF", "a\r\nb\r\nc\r\n"), ("lone CRs", "a\rb\rc\r"),
            ("NUL-free binary", "\u{1}\u{7F}\n\u{FF}\n"), ("empty line last", "a\nb\n\n"),
        ]
        for (name, text) in shapes {
            let path = scratch.file("\(name).txt")
            let bytes = Array(text.utf8)
            writeBytes(path, bytes)
            assertTail(path, bytes, lines: [1, 2, 4], name)
        }
        // The rules, spelled out once (lastLines encodes them for the other tests).
        writeBytes(scratch.file("s"), Array("a\nb\nc".utf8))
        XCTAssertEqual(tail(["-n", "2", scratch.file("s")]).stdout, Array("b\nc".utf8), "a last line without a newline counts")
        writeBytes(scratch.file("s"), Array("a\r\nb\r\nc\r\n".utf8))
        XCTAssertEqual(tail(["-n", "1", scratch.file("s")]).stdout, Array("c\r\n".utf8), "CR is an ordinary byte")
        writeBytes(scratch.file("s"), Array("a\nb\n".utf8))
        XCTAssertEqual(tail(["-n", "5", scratch.file("s")]).stdout, Array("a\nb\n".utf8), "more lines asked than there are: all")
        writeBytes(scratch.file("s"), [])
        XCTAssertEqual(tail(["-n", "3", scratch.file("s")]).stdout, [], "an empty file prints nothing")
    }

    /// A newline just before, at and just after 64 KiB and 128 KiB from the end; then lines of
    /// 0 to 200 KiB (among them 4, 64 and 128 KiB and a byte either side) in a seeded random
    /// order, in a plain file and in a live log (whose data file ends in allocated zeros past
    /// the watermark): lines straddle the boundaries of any block size up to 64 KiB.
    func testLinesStraddlingBlockBoundaries() throws {
        for distance in [(1 << 16) - 1, 1 << 16, (1 << 16) + 1, 1 << 17, (1 << 17) + 1] {
            // The newline ending the first line is `distance` bytes before the end.
            let bytes = Array(repeating: UInt8(ascii: "a"), count: 1000) + [0x0A] + Array(repeating: UInt8(ascii: "b"), count: distance - 2) + [0x0A]
            let path = scratch.file("boundary-\(distance).txt")
            writeBytes(path, bytes)
            assertTail(path, bytes, lines: [1, 2], "a newline \(distance) bytes from the end")
        }

        var random = SplitMix64(seed: 20)
        var lengths = [65535, 65536, 65537, 0, 1, 4095, 4096, 4097, 131071, 131072, 131073, 0, 0]
        for _ in 0..<40 { lengths.append(random.below(6000)) }
        for _ in 0..<6 { lengths.append(random.below(200 << 10)) }
        for i in stride(from: lengths.count - 1, to: 0, by: -1) { lengths.swapAt(i, random.below(i + 1)) }
        let records = lengths.enumerated().map { i, length in
            Array(repeating: UInt8(ascii: "a") + UInt8(i % 26), count: length) + [0x0A]
        }
        let bytes = records.flatMap { $0 }
        let counts = [1, 2, 3, 8, 34, records.count - 1, records.count, records.count + 1]

        let plain = scratch.file("plain.txt")
        writeBytes(plain, bytes)
        assertTail(plain, bytes, lines: counts, "plain file")
        writeBytes(plain, Array(bytes.dropLast()))
        assertTail(plain, Array(bytes.dropLast()), lines: [1, 2, 7], "plain file without its last newline")

        let path = scratch.file("live.log")
        let log = try MMLog(path: path, options: .init(chunkSize: 1 << 16))
        for record in records { try log.append(record) }
        XCTAssertGreaterThan(fileSize(path)!, bytes.count, "the data file ends in allocated zeros")
        assertTail(path, bytes, lines: counts, "live log")
        try log.append(Array("unfinished".utf8))
        assertTail(path, bytes + Array("unfinished".utf8), lines: [1, 2, 3], "live log with an unfinished last line")
        try log.close()
    }

    /// A writer that died holding a reserved line leaves a hole, which tail skips as cat does,
    /// here with a block boundary inside the hole (blocks are counted back from the end).
    func testAHoleLeftByADeadWriterIsSkipped() throws {
        let path = scratch.file("hole.log")
        let survivor = try MMLog(path: path, options: .init(chunkSize: 1 << 16))
        for i in 0..<3000 { try survivor.append("before \(i)\n") }
        let dead = spawn(product("mmlog-writer"), ["--path", path, "--worker", "1", "--ops", "10", "--size", "32", "--text",
                                                   "--abandon-after", "3"])
        XCTAssertTrue(dead.wait().status.succeeded)
        let holeEnd = survivor.endOffset
        // Lines after the hole up to 16 bytes short of 64 KiB, so that 64 KiB back from the end
        // (and every power of two below it from 4 KiB) falls 16 bytes into the 32-byte hole.
        var remaining = (1 << 16) - 16, afterCount = 0
        while remaining > 0 {
            let head = "after \(afterCount) "
            let length = remaining >= 400 ? 200 : remaining
            try survivor.append(head + String(repeating: "a", count: length - head.utf8.count - 1) + "\n")
            remaining -= length
            afterCount += 1
        }
        XCTAssertEqual(survivor.endOffset - holeEnd, (1 << 16) - 16)
        let cat = spawn(product("mmlog"), ["cat", path], stdoutPath: scratch.file("cat.out")).wait()
        XCTAssertTrue(cat.status.succeeded, cat.stderr)
        let committed = readBytes(scratch.file("cat.out"))
        XCTAssertFalse(committed.contains(0), "cat skipped the hole")
        let lineCount = committed.filter { $0 == 0x0A }.count
        XCTAssertEqual(lineCount, 3000 + 3 + afterCount)
        assertTail(path, committed, lines: [1, afterCount - 1, afterCount, afterCount + 1, afterCount + 3, afterCount + 4, lineCount, lineCount + 1],
                   "a live log with a hole")
        try survivor.close()
    }

    /// The last 10 lines of a 32 MiB file with no newline: GNU tail takes 0.04-0.1 s here; a
    /// tail that rescanned what it had read at every 64 KiB block took 7.3 s in a release build
    /// (273 s in a debug build), reading backwards in blocks 0.02-0.07 s (0.06-0.1 s in debug).
    /// The bound leaves a wide margin for a debug build on a busy machine.
    func testOneHugeLineCostsWhatItPrints() throws {
        let path = scratch.file("huge.txt")
        var bytes = [UInt8](unsafeUninitializedCapacity: 32 << 20) { buffer, count in
            memset(buffer.baseAddress!, Int32(UInt8(ascii: "x")), buffer.count)
            count = buffer.count
        }
        writeBytes(path, bytes)
        let whole = tail(["-n", "10", path])
        XCTAssertEqual(whole.status.code, 0, whole.stderr)
        XCTAssertTrue(same(whole.stdout, bytes), "printed \(whole.stdout.count) bytes of \(bytes.count)")
        XCTAssertLessThan(whole.seconds, 1.0, "tail -n 10 of one 32 MiB line")

        bytes[bytes.count - 5] = 0x0A
        writeBytes(path, bytes)
        XCTAssertEqual(tail(["-n", "1", path]).stdout, Array("xxxx".utf8))
        XCTAssertTrue(same(tail(["-n", "2", path]).stdout, bytes), "the line before the last is the rest of the file")
    }

    /// `-n 2 -f` prints the last whole line, holds the unfinished one until its newline comes,
    /// and then prints every new line once.
    func testFollowingGoesOnFromWhereTheLastLinesEnd() throws {
        let path = scratch.file("follow.log")
        let log = try MMLog(path: path, options: .init(chunkSize: 1 << 16))
        for line in ["a\n", "b\n", "c\n", "unfin"] { try log.append(line) }
        let out = scratch.file("follow.out")
        let follower = spawn(product("mmlog"), ["tail", "-n", "2", "-f", path], stdoutPath: out)
        defer {
            follower.kill(SIGTERM)
            _ = follower.wait()
        }
        XCTAssertTrue(waitFor(out, toHold: "c\n"), readText(out))
        usleep(100_000)
        XCTAssertEqual(readText(out), "c\n", "an unfinished line waits for its newline")
        try log.append("ished\n")
        try log.append("d\n")
        XCTAssertTrue(waitFor(out, toHold: "c\nunfinished\nd\n"), readText(out))
        try log.close()
    }

    func waitFor(_ path: String, toHold text: String, seconds: Double = 10) -> Bool {
        let deadline = nowNanoseconds(CLOCK_MONOTONIC) + UInt64(seconds * 1e9)
        while readText(path) != text {
            if nowNanoseconds(CLOCK_MONOTONIC) > deadline { return false }
            usleep(10_000)
        }
        return true
    }
}

/// The last `n` lines of `bytes`, as GNU tail prints them: a line ends after each newline, a
/// final newline ends the last line (it does not start an empty one), and a last line without
/// a newline is a line.
func lastLines(_ bytes: [UInt8], _ n: Int) -> [UInt8] {
    guard n > 0 else { return [] }
    var i = bytes.count - 1
    if i >= 0 && bytes[i] == 0x0A { i -= 1 }
    var newlines = 0
    while i >= 0 {
        if bytes[i] == 0x0A {
            newlines += 1
            if newlines == n { return Array(bytes[(i + 1)...]) }
        }
        i -= 1
    }
    return bytes
}

/// Byte equality by memcmp (a debug build compares 32 MiB arrays slowly element by element).
private func same(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    a.count == b.count && (a.isEmpty || a.withUnsafeBytes { x in b.withUnsafeBytes { y in memcmp(x.baseAddress!, y.baseAddress!, x.count) == 0 } })
}

private func preview(_ bytes: [UInt8]) -> String {
    let text = String(decoding: bytes.prefix(40), as: UTF8.self).debugDescription
    return bytes.count > 40 ? text + "..." : text
}
