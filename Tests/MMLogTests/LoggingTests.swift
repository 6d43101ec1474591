import Logging
import MMLog
import MMLogLogging
import TestSupport
import XCTest

/// MMLogHandler from several processes into one file: every line whole and present.
final class LoggingTests: XCTestCase {
    func testProcessesLoggingThroughSwiftLogNeverInterleaveLines() throws {
        let scratch = ScratchDirectory("mmlog-logging")
        defer { scratch.remove() }
        let path = scratch.file("server.log")
        let processes = 4, threads = 2, lines = 5_000
        let children = (0..<processes).map { p in
            spawn(product("mmlog-writer"), ["--path", path, "--worker", "\(p * threads)", "--threads", "\(threads)",
                                           "--ops", "\(lines)", "--swift-log", "--chunk-size", "65536"])
        }
        let pids = Set(children.map(\.pid))
        for child in children {
            let (status, stderr) = child.wait()
            XCTAssertTrue(status.succeeded, "\(status) \(stderr)")
        }
        let text = readText(path)
        XCTAssertTrue(text.hasSuffix("\n"))
        var seen = Set<String>()
        for line in text.split(separator: "\n", omittingEmptySubsequences: false).dropLast() {
            // 2026-11-24T17:01:32.123456Z info worker.3[4242] mmlog_writer : i=17 worker=3 record 17
            let fields = line.split(separator: " ")
            guard fields.count == 9, fields[1] == "info", fields[3] == "mmlog_writer", fields[4] == ":", fields[0].hasSuffix("Z"),
                  fields[5].hasPrefix("i="), fields[6].hasPrefix("worker="), fields[7] == "record",
                  fields[2].hasPrefix("worker.\(fields[6].dropFirst(7))["), fields[5].dropFirst(2) == fields[8],
                  let pid = pid_t(fields[2].drop { $0 != "[" }.dropFirst().dropLast()), pids.contains(pid)
            else {
                XCTFail("torn or foreign line: \(line)")
                continue
            }
            XCTAssertTrue(seen.insert("\(fields[6]) \(fields[5])").inserted, "duplicate line: \(line)")
        }
        XCTAssertEqual(seen.count, processes * threads * lines, "every line present once")
    }

    func testAFailedAppendIsReportedNotFatal() throws {
        let scratch = ScratchDirectory("mmlog-logging")
        defer { scratch.remove() }
        let log = try MMLog(path: scratch.file("closed.log"))
        try log.close()
        let logger = Logger(label: "test") { label in MMLogHandler(label: label, log: log) }
        logger.error("into a closed log")
        XCTAssertEqual(fileSize(scratch.file("closed.log")), 0, "nothing written, and no crash")
    }

    func testOneEventIsOneLineEvenWithNewlines() throws {
        let scratch = ScratchDirectory("mmlog-logging")
        defer { scratch.remove() }
        let path = scratch.file("lines.log")
        let log = try MMLog(path: path)
        var logger = Logger(label: "app") { label in MMLogHandler(label: label, log: log) }
        logger[metadataKey: "request"] = "a\nb"
        logger.warning("two\nlines", metadata: ["n": "1"])
        try log.close()
        let text = readText(path)
        XCTAssertEqual(text.filter { $0 == "\n" }.count, 1, text)
        XCTAssertTrue(text.hasSuffix(" warning app[\(getpid())] MMLogTests : n=1 request=\"a\\nb\" two\\nlines\n"), text)
    }
}
