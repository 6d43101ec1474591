#if canImport(Glibc)
import Glibc
#endif
import BenchRecords
import MMLog
import TestSupport
import XCTest

/// `mmlog append`: lines from standard input (a real pipe from a real process), one record each.
final class AppendCommandTests: XCTestCase {
    var scratch: ScratchDirectory!

    override func setUp() { scratch = ScratchDirectory("mmlog-append") }
    override func tearDown() { scratch.remove() }

    /// `cat input | mmlog append log`, for one input file.
    private func pipe(_ input: String, into log: String, _ options: [String] = []) -> Child {
        let command = (["/bin/cat", input, "|", product("mmlog"), "append"] + options + [log]).joined(separator: " ")
        return spawn("/bin/sh", ["-c", command])
    }

    func testFourConcurrentPipesGiveEveryLineOnceAndWhole() throws {
        let (pipes, lines) = (4, 20_000)
        let log = scratch.file("jobs.log")
        var inputs: [String] = []
        for w in 0..<pipes {
            // Lines of 24 to 120 bytes, so that reads from the pipe end mid-line; the last pipe's
            // last line has no newline.
            var bytes: [UInt8] = []
            for i in 0..<lines { bytes += TextLines.line(worker: w, index: i, size: 24 + (i * 7 + w) % 97) }
            if w == pipes - 1 { bytes.removeLast() }
            inputs.append(scratch.file("input-\(w)"))
            writeBytes(inputs[w], bytes)
        }
        let children = Watched(inputs.enumerated().map { w, input in pipe(input, into: log, w == 0 ? ["--sync"] : []) })
        let statuses = children.waitAll()
        XCTAssertTrue(statuses.allSatisfy(\.succeeded), "\(statuses)")

        let check = TextLines.check(readBytes(log), size: 0)
        XCTAssertTrue(check.malformed.isEmpty && check.nulBytes == 0, "\(check)")
        for w in 0..<pipes {
            XCTAssertTrue(check.hasExactly(worker: w, count: lines), check.problems(worker: w, count: lines))
        }
    }

    func testLongLinesAreSplitAndTheLastLineGetsANewline() throws {
        let log = scratch.file("split.log"), input = scratch.file("input")
        writeBytes(input, Array("short\n0123456789abcdefghijklm\nexactly 9\nlast".utf8))
        let (status, stderr) = pipe(input, into: log, ["--max-line", "10"]).wait()
        XCTAssertEqual(status.code, 0, stderr)
        XCTAssertEqual(String(decoding: readBytes(log), as: UTF8.self),
                       "short\n012345678\n9abcdefgh\nijklm\nexactly 9\nlast\n")
    }

    func testRefusesAMaxLineWithNoRoomForALineAndSaysHowLongLinesAreHandled() {
        let refused = TestSupport.run(product("mmlog"), ["append", "--max-line", "1", scratch.file("never.log")])
        XCTAssertEqual(refused.status.code, 64)
        XCTAssertTrue(refused.stderr.contains("--max-line"), refused.stderr)
        XCTAssertNil(fileSize(scratch.file("never.log")), "a refused command created the log")
        let help = TestSupport.run(product("mmlog"), ["append", "--help"])
        XCTAssertTrue(help.stdout.contains("is split, not"), help.stdout)
    }
}
