#if canImport(Glibc)
import Glibc
#endif
import BenchRecords
import MMLog
import TestSupport
import XCTest

/// Shipping a live log with an existing shipper: syslog-ng's program() source runs
/// `mmlog tail -F` and reads its standard output (the README's example).
final class PipelineTests: XCTestCase {
    var scratch: ScratchDirectory!

    override func setUp() { scratch = ScratchDirectory("mmlog-pipeline") }
    override func tearDown() { scratch.remove() }

    func testSyslogNGShipsEveryLineOnceAsItIsCommitted() throws {
        let syslogNG = "/usr/sbin/syslog-ng"
        guard access(syslogNG, X_OK) == 0 else {
            throw XCTSkip("syslog-ng is not installed (apt-get install syslog-ng-core; CI installs it)")
        }
        let log = scratch.file("app.log"), shipped = scratch.file("shipped.log")
        let config = scratch.file("syslog-ng.conf")
        writeBytes(config, Array("""
            @version: 3.35
            options { flush-lines(0); };
            source s_app { program("\(product("mmlog")) tail -F -n 0 \(log)" flags(no-parse)); };
            destination d_file { file("\(shipped)" template("${MSG}\\n")); };
            log { source(s_app); destination(d_file); };

            """.utf8))
        let daemon = spawn(syslogNG, ["-F", "-f", config, "--no-caps", "--persist-file=\(scratch.file("persist"))",
                                      "--pidfile=\(scratch.file("pid"))", "--control=\(scratch.file("control"))"])
        defer {
            daemon.kill(SIGTERM)
            _ = daemon.wait()
        }
        func shippedLines() -> [Substring] {
            String(decoding: readBytes(shipped), as: UTF8.self).split(separator: "\n")
        }
        func waitFor(_ condition: () -> Bool, seconds: Double) -> Bool {
            let deadline = nowNanoseconds(CLOCK_MONOTONIC) + UInt64(seconds * 1e9)
            while !condition() && nowNanoseconds(CLOCK_MONOTONIC) < deadline { usleep(20_000) }
            return condition()
        }

        // Four writers, while the shipper follows the file (it starts before the file exists).
        usleep(300_000)
        let (ops, size) = (3000, 60)
        let writers = Watched((0..<4).map {
            spawn(product("mmlog-writer"), ["--path", log, "--worker", "\($0)", "--ops", "\(ops)", "--size", "\(size)", "--text"])
        })
        XCTAssertTrue(writers.waitAll().allSatisfy(\.succeeded))
        XCTAssertTrue(waitFor({ shippedLines().count >= 4 * ops }, seconds: 20), "shipped \(shippedLines().count) lines")
        let check = TextLines.check(readBytes(shipped), size: size)
        XCTAssertTrue(check.malformed.isEmpty && check.nulBytes == 0, "\(check)")
        for w in 0..<4 { XCTAssertTrue(check.hasExactly(worker: w, count: ops), "worker \(w): \(check.problems(worker: w, count: ops)); \(check)") }

        // One more line, appended by a process that stays open: it is shipped at once, not
        // held in a buffer until more arrive.
        let writer = try MMLog(path: log)
        let appendedAt = nowNanoseconds(CLOCK_MONOTONIC)
        try writer.append("one line, alone\n")
        XCTAssertTrue(waitFor({ shippedLines().last == "one line, alone" }, seconds: 5), "the single line was not shipped")
        print("a single committed line reached syslog-ng's output in \((nowNanoseconds(CLOCK_MONOTONIC) - appendedAt) / 1_000_000) ms")
        try writer.close()
    }
}
