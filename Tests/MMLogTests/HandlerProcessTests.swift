import Foundation
import Logging
import MMLog
import MMLogLogging
import TestSupport
import XCTest

/// MMLogHandler from several real processes (`mmlog-handler-writer`) into one file per format:
/// every line parses, carries its process's id, and appears exactly once; levels come from
/// the environment of each process.
final class HandlerProcessTests: XCTestCase {
    let processes = 4, threads = 2, linesPerThread = 150

    func testLinesFromSeveralProcessesParseInEveryFormat() throws {
        let scratch = ScratchDirectory("mmlog-handler-procs")
        defer { scratch.remove() }
        let values = nastyStrings
        let valueArguments = values.flatMap { ["--value-hex", $0.utf8.map { String(format: "%02x", $0) }.joined()] }
        var children: [MMLogHandler.Format: [Child]] = [:]
        for format in MMLogHandler.Format.allCases {
            children[format] = (0..<processes).map { _ in
                spawn(product("mmlog-handler-writer"), ["--path", scratch.file("\(format).log"), "--format", "\(format)",
                                                       "--threads", "\(threads)", "--lines", "\(linesPerThread)"] + valueArguments)
            }
        }
        for format in MMLogHandler.Format.allCases {
            let pids = Set(children[format]!.map(\.pid))
            for child in children[format]! {
                let (status, stderr) = child.wait()
                XCTAssertTrue(status.succeeded, "\(format): \(status) \(stderr)")
            }
            let text = readText(scratch.file("\(format).log"))
            XCTAssertTrue(text.hasSuffix("\n"), "\(format): the file ends with a whole line")
            var seen = Set<String>()
            for line in text.split(separator: "\n", omittingEmptySubsequences: false).dropLast() {
                let line = String(line)
                XCTAssertFalse(line.unicodeScalars.contains(where: lineBreaking), "\(format): a raw line break: \(line)")
                do {
                    let event = try parse(line, format: format, values: values)
                    XCTAssertTrue(pids.contains(event.pid), "\(format): pid \(event.pid) is none of the writers': \(line)")
                    XCTAssertTrue(seen.insert("\(event.pid) \(event.thread) \(event.index)").inserted, "\(format): duplicate \(line)")
                } catch {
                    XCTFail("\(format): \(error)")
                }
            }
            XCTAssertEqual(seen.count, processes * threads * linesPerThread, "\(format): every event once, each on one line")
        }
    }

    struct Event {
        var pid: pid_t
        var thread: Int
        var index: Int
    }

    /// Parses one line of mmlog-handler-writer and checks every field against what it logged.
    func parse(_ line: String, format: MMLogHandler.Format, values: [String]) throws -> Event {
        func value(_ i: Int) -> String { values[i % values.count] }
        func check(_ condition: Bool, _ what: String) throws {
            if !condition { throw ParseError(description: "\(what): \(line)") }
        }
        switch format {
        case .json:
            let object = try parseJSONLine(line)
            guard let pid = object["pid"] as? Int, let t = Int(object["t"] as? String ?? ""), let i = Int(object["i"] as? String ?? "")
            else { throw ParseError(description: "no pid, t or i: \(line)") }
            try check(Set(object.keys) == ["ts", "level", "label", "pid", "source", "msg", "t", "i", "v", "nested", "_level", "__msg"], "keys")
            try check(object["level"] as? String == "info" && object["label"] as? String == "writer", "level and label")
            try check(object["source"] as? String == "mmlog_handler_writer", "source")
            try check(utf8(object["msg"]) == Array(value(i).utf8), "msg")
            try check(utf8(object["v"]) == Array(value(i + 1).utf8), "v")
            let nested = object["nested"] as? [String: Any]
            try check(utf8(nested?["d"]) == Array(value(i + 2).utf8), "nested.d")
            try check((nested?["a"] as? [String])?.map { Array($0.utf8) } == [Array(value(i).utf8), Array("x".utf8)], "nested.a")
            try check(object["_level"] as? String == "meta" && object["__msg"] as? String == "meta", "renamed keys")
            return Event(pid: pid_t(pid), thread: t, index: i)
        case .logfmt:
            let fields = try parseLogfmtLine(line)
            guard let pid = pid_t(fields["pid"] ?? ""), let t = Int(fields["t"] ?? ""), let i = Int(fields["i"] ?? "")
            else { throw ParseError(description: "no pid, t or i: \(line)") }
            try check(Set(fields.keys) == ["ts", "level", "label", "pid", "source", "msg", "t", "i", "v", "nested.d", "nested.a", "_level", "__msg"], "keys")
            try check(fields["level"] == "info" && fields["label"] == "writer" && fields["source"] == "mmlog_handler_writer", "fixed fields")
            try check(utf8(fields["msg"]) == Array(value(i).utf8), "msg")
            try check(utf8(fields["v"]) == Array(value(i + 1).utf8), "v")
            try check(utf8(fields["nested.d"]) == Array(value(i + 2).utf8), "nested.d")
            let array = try JSONSerialization.jsonObject(with: Data((fields["nested.a"] ?? "").utf8)) as? [String]
            try check(array?.map { Array($0.utf8) } == [Array(value(i).utf8), Array("x".utf8)], "nested.a")
            try check(fields["_level"] == "meta" && fields["__msg"] == "meta", "renamed keys")
            return Event(pid: pid, thread: t, index: i)
        case .text:
            // <ts> info writer[<pid>] mmlog_handler_writer : __msg=meta i=<i> _level=meta nested.a=<json> nested.d=<d> t=<t> v=<v> <msg>
            let text = try parseTextLine(line)
            guard let pid = pid_t(text.pid), let t = Int(text.fields["t"] ?? ""), let i = Int(text.fields["i"] ?? "")
            else { throw ParseError(description: "no pid, t or i: \(line)") }
            try check(Set(text.fields.keys) == ["__msg", "i", "_level", "nested.a", "nested.d", "t", "v"], "keys")
            try check(text.level == "info" && text.label == "writer" && text.source == "mmlog_handler_writer" && text.file == nil, "fixed fields")
            try check(utf8(text.message) == Array(value(i).utf8), "msg")
            try check(utf8(text.fields["v"]) == Array(value(i + 1).utf8), "v")
            try check(utf8(text.fields["nested.d"]) == Array(value(i + 2).utf8), "nested.d")
            let array = try JSONSerialization.jsonObject(with: Data((text.fields["nested.a"] ?? "").utf8)) as? [String]
            try check(array?.map { Array($0.utf8) } == [Array(value(i).utf8), Array("x".utf8)], "nested.a")
            try check(text.fields["_level"] == "meta" && text.fields["__msg"] == "meta", "renamed keys")
            return Event(pid: pid, thread: t, index: i)
        }
    }

    func testAFailedAppendIsReportedOncePerProcessAndTheProcessCarriesOn() throws {
        let scratch = ScratchDirectory("mmlog-handler-closed")
        defer { scratch.remove() }
        let path = scratch.file("closed.log")
        for format in MMLogHandler.Format.allCases {
            let (status, stdout, stderr) = TestSupport.run(product("mmlog-handler-writer"), ["--path", path, "--format", "\(format)", "--after-close", "5"])
            XCTAssertEqual(status.code, 0, "\(format): \(status) \(stderr)")
            XCTAssertEqual(stdout, "")
            let reports = stderr.split(separator: "\n")
            XCTAssertEqual(reports.count, 1, "\(format): one report for five failed appends: \(stderr)")
            XCTAssertTrue(reports.first?.hasPrefix("MMLogHandler: cannot append to \(path): ") == true, stderr)
            XCTAssertTrue(reports.first?.hasSuffix("; the event was dropped; further failures of this kind are not reported") == true, stderr)
            XCTAssertEqual(fileSize(path), 0, "\(format): nothing written")
        }
    }

    func testLevelsComeFromTheEnvironmentOfEachProcess() throws {
        let scratch = ScratchDirectory("mmlog-handler-env")
        defer { scratch.remove() }
        let labels = ["http", "com.example.db", "other", "bad"]
        func levels(_ environment: [String]) throws -> (levels: [String: [String]], stderr: String) {
            let path = scratch.file("levels-\(environment.count)-\(UUID().uuidString).log")
            let (status, stderr) = runWithEnvironment(product("mmlog-handler-writer"),
                                                      ["--path", path, "--format", "json", "--levels", labels.joined(separator: ",")],
                                                      environment: environment)
            XCTAssertEqual(status, 0, stderr)
            var result: [String: [String]] = [:]
            for line in readText(path).split(separator: "\n") {
                let object = try parseJSONLine(String(line))
                result[object["label"] as? String ?? "?", default: []].append(object["level"] as? String ?? "?")
            }
            return (result, stderr)
        }
        let from = { (level: Logger.Level) in Logger.Level.allCases.filter { $0 >= level }.map(\.rawValue) }

        let none = try levels([])
        XCTAssertEqual(none.levels, Dictionary(uniqueKeysWithValues: labels.map { ($0, from(.info)) }), "info without LOG_LEVEL")
        XCTAssertEqual(none.stderr, "")

        let set = try levels(["LOG_LEVEL=Warning", "LOG_LEVEL_http=debug", "LOG_LEVEL_COM_EXAMPLE_DB=trace", "LOG_LEVEL_bad=loud"])
        XCTAssertEqual(set.levels["http"], from(.debug))
        XCTAssertEqual(set.levels["com.example.db"], from(.trace))
        XCTAssertEqual(set.levels["other"], from(.warning))
        XCTAssertEqual(set.levels["bad"], from(.warning), "an invalid level is ignored")
        XCTAssertEqual(set.stderr, "MMLogHandler: LOG_LEVEL_bad=loud is not a log level (trace, debug, info, notice, warning, error, critical); ignored\n")

        // A level the caller sets wins over the environment (the default mode passes logLevel: .info).
        let path = scratch.file("explicit.log")
        let (status, stderr) = runWithEnvironment(product("mmlog-handler-writer"), ["--path", path, "--format", "logfmt", "--lines", "3"],
                                                  environment: ["LOG_LEVEL=critical", "LOG_LEVEL_writer=critical"])
        XCTAssertEqual(status, 0, stderr)
        XCTAssertEqual(readText(path).split(separator: "\n").count, 3)
    }
}

/// Runs `executable` with exactly `environment` (NAME=value strings); returns its exit code
/// (-1 when a signal ended it) and what it wrote to stderr.
func runWithEnvironment(_ executable: String, _ arguments: [String], environment: [String]) -> (status: Int32, stderr: String) {
    let stderrPath = "/tmp/mmlog-handler-test-stderr-\(getpid())-\(UUID().uuidString)"
    defer { unlink(stderrPath) }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 2, stderrPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    let argv = ([executable] + arguments).map { strdup($0) } + [nil]
    let envp = environment.map { strdup($0) } + [nil]
    defer { (argv + envp).forEach { free($0) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, executable, &actions, nil, argv, envp)
    guard rc == 0 else { return (-1, "posix_spawn(\(executable)): \(String(cString: strerror(rc)))") }
    var raw: Int32 = 0
    while waitpid(pid, &raw, 0) < 0 && errno == EINTR {}
    let status = raw & 0x7f == 0 ? (raw >> 8) & 0xff : -1
    return (status, readText(stderrPath))
}
