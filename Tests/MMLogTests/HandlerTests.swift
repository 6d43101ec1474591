import Foundation
import Logging
import MMLog
@testable import MMLogLogging
import TestSupport
import XCTest

/// MMLogHandler in one process: the three formats read back with a JSON parser, a strict
/// logfmt parser and the text layout; escaping, metadata precedence, key collisions, errors,
/// every swift-log entry point, sync by level.
final class HandlerTests: XCTestCase {
    var scratch: ScratchDirectory!

    override func setUp() { scratch = ScratchDirectory("mmlog-handler") }
    override func tearDown() { scratch.remove() }

    /// Logs with `body` through a fresh log and handler; returns the file's lines.
    func lines(_ format: MMLogHandler.Format, sourceLocation: Bool = false,
               configure: (inout MMLogHandler) -> Void = { _ in },
               _ body: (Logger, MMLogHandler) throws -> Void) throws -> [String] {
        let path = scratch.file("\(format)-\(UUID().uuidString).log")
        let log = try MMLog(path: path, options: .init(chunkSize: 1 << 16))
        var handler = MMLogHandler(label: "app", log: log, format: format, logLevel: .trace, sourceLocation: sourceLocation)
        configure(&handler)
        try body(Logger(label: "app") { _ in handler }, handler)
        try log.close()
        let text = readText(path)
        XCTAssertTrue(text.isEmpty || text.hasSuffix("\n"), "every line ends in a newline")
        return text.split(separator: "\n", omittingEmptySubsequences: false).dropLast().map(String.init)
    }

    func testNastyStringsRoundTripThroughJSONAndLogfmtParsers() throws {
        let json = try lines(.json) { logger, _ in
            for (k, nasty) in nastyStrings.enumerated() {
                logger.notice("\(nasty)", metadata: ["k": "\(k)", "v": "\(nasty)", "\(nasty)": "as key",
                                                    "d": ["\(nasty)": ["\(nasty)"]]])
            }
        }
        XCTAssertEqual(json.count, nastyStrings.count, "one line per event")
        for (k, line) in json.enumerated() {
            XCTAssertFalse(line.unicodeScalars.contains(where: lineBreaking), "a raw line break: \(line)")
            let object = try parseJSONLine(line)
            let nasty = nastyStrings[k]
            XCTAssertEqual(utf8(object["msg"]), Array(nasty.utf8), line)
            XCTAssertEqual(utf8(object["v"]), Array(nasty.utf8), line)
            XCTAssertEqual(object["k"] as? String, "\(k)", line)
            let renamedKey = isReservedLike(nasty) ? "_" + nasty : nasty
            XCTAssertEqual(object[renamedKey] as? String, "as key", line)
            XCTAssertEqual(object["d"] as? [String: [String]], [nasty: [nasty]], line)
            XCTAssertEqual(object["level"] as? String, "notice")
        }

        let logfmt = try lines(.logfmt) { logger, _ in
            for (k, nasty) in nastyStrings.enumerated() {
                logger.notice("\(nasty)", metadata: ["k": "\(k)", "v": "\(nasty)", "d": ["e": "\(nasty)"], "a": ["\(nasty)"]])
            }
        }
        XCTAssertEqual(logfmt.count, nastyStrings.count, "one line per event")
        for (k, line) in logfmt.enumerated() {
            XCTAssertFalse(line.unicodeScalars.contains(where: lineBreaking), "a raw line break: \(line)")
            let fields = try parseLogfmtLine(line)
            let nasty = nastyStrings[k]
            XCTAssertEqual(utf8(fields["msg"]), Array(nasty.utf8), line)
            XCTAssertEqual(utf8(fields["v"]), Array(nasty.utf8), line)
            XCTAssertEqual(fields["d.e"], nasty, line)
            XCTAssertEqual(try JSONSerialization.jsonObject(with: Data((fields["a"] ?? "").utf8)) as? [String], [nasty], line)
            XCTAssertEqual(fields["k"], "\(k)")
        }
    }

    /// Escaping looks at 8 bytes at a time: a character to escape at every offset of strings
    /// from 1 to 20 bytes, in each format.
    func testEscapingAtEveryOffset() throws {
        var samples: [String] = []
        for special in ["\n", "\"", "\\", "\u{7F}", "\u{0}", "\u{85}", "\u{2028}", "\u{2029}", "é", "=", " ", "😀"] {
            for length in 0..<20 {
                for offset in 0...length {
                    samples.append(String(repeating: "a", count: offset) + special + String(repeating: "b", count: length - offset))
                }
            }
        }
        for format in MMLogHandler.Format.allCases {
            let written = try lines(format) { logger, _ in
                for sample in samples { logger.info("\(sample)", metadata: ["v": "\(sample)"]) }
            }
            XCTAssertEqual(written.count, samples.count, "\(format): one line per event")
            for (line, sample) in zip(written, samples) {
                XCTAssertFalse(line.unicodeScalars.contains(where: lineBreaking), "\(format): a raw line break: \(line)")
                switch format {
                case .json:
                    let object = try parseJSONLine(line)
                    XCTAssertEqual(utf8(object["msg"]), Array(sample.utf8), line)
                    XCTAssertEqual(utf8(object["v"]), Array(sample.utf8), line)
                case .logfmt:
                    let fields = try parseLogfmtLine(line)
                    XCTAssertEqual(utf8(fields["msg"]), Array(sample.utf8), line)
                    XCTAssertEqual(utf8(fields["v"]), Array(sample.utf8), line)
                case .text:
                    let escaped = referenceEscape(sample, quotes: false)
                    XCTAssertTrue(line.hasSuffix(" : v=\(escaped) \(escaped)"), line)
                }
            }
        }
    }

    func testTextLinesEscapeEverythingThatCouldBreakALine() throws {
        let text = try lines(.text) { logger, _ in
            for nasty in nastyStrings {
                logger.warning("\(nasty)", metadata: ["v": "\(nasty)"])
            }
        }
        XCTAssertEqual(text.count, nastyStrings.count, "one line per event")
        for (line, nasty) in zip(text, nastyStrings) {
            XCTAssertEqual(String(line.dropFirst(27)),
                           " warning app[\(getpid())] MMLogTests : v=\(referenceEscape(nasty, quotes: false)) \(referenceEscape(nasty, quotes: false))")
            XCTAssertFalse(line.unicodeScalars.contains { lineBreaking($0) }, line)
        }
    }

    func testLineLayoutOfEachFormat() throws {
        let pid = getpid()
        let text = try lines(.text, sourceLocation: true) { logger, _ in
            logger.info("request served", metadata: ["status": "200", "path": "/a b"])
        }
        XCTAssertEqual(text.count, 1)
        let ts = String(text[0].prefix(27))
        XCTAssertTrue(ts.range(of: #"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$"#, options: .regularExpression) != nil, ts)
        XCTAssertTrue(text[0].hasPrefix(ts + " info app[\(pid)] MMLogTests MMLogTests/HandlerTests.swift:"), text[0])
        XCTAssertTrue(text[0].hasSuffix(" : path=/a b status=200 request served"), text[0])

        let logfmt = try lines(.logfmt) { logger, _ in
            logger.info("request served", metadata: ["status": "200", "path": "/a b"])
        }
        XCTAssertTrue(logfmt[0].hasPrefix("ts="), logfmt[0])
        XCTAssertTrue(logfmt[0].hasSuffix(" level=info label=app pid=\(pid) source=MMLogTests msg=\"request served\" path=\"/a b\" status=200"),
                      logfmt[0])

        let json = try lines(.json) { logger, _ in
            logger.info("request served", metadata: ["status": "200", "path": "/a b"])
        }
        XCTAssertTrue(json[0].hasPrefix("{\"ts\":\""), json[0])
        XCTAssertTrue(json[0].hasSuffix(",\"level\":\"info\",\"label\":\"app\",\"pid\":\(pid),\"source\":\"MMLogTests\",\"msg\":\"request served\",\"path\":\"/a b\",\"status\":\"200\"}"),
                      json[0])
        XCTAssertEqual(try parseJSONLine(json[0])["ts"] as? String, String(json[0].dropFirst(7).prefix(27)))
        XCTAssertEqual(try parseLogfmtLine(logfmt[0])["ts"], String(logfmt[0].dropFirst(3).prefix(27)))
    }

    func testFileAndLineWhenAsked() throws {
        let json = try lines(.json, sourceLocation: true) { logger, _ in
            logger.info("here")
        }
        let object = try parseJSONLine(json[0])
        XCTAssertEqual(object["file"] as? String, "MMLogTests/HandlerTests.swift")
        XCTAssertNotNil(object["line"] as? Int)
        let logfmt = try lines(.logfmt, sourceLocation: true) { logger, _ in logger.info("here") }
        let fields = try parseLogfmtLine(logfmt[0])
        XCTAssertEqual(fields["file"], "MMLogTests/HandlerTests.swift")
        XCTAssertNotNil(Int(fields["line"] ?? ""))
        let without = try lines(.json) { logger, _ in logger.info("here") }
        XCTAssertNil(try parseJSONLine(without[0])["file"])
    }

    func testCallSiteMetadataOverProviderOverHandler() throws {
        let provider = Logger.MetadataProvider { ["k": "provider", "p": "provider", "both": "provider"] }
        let json = try lines(.json, configure: { handler in
            handler.metadataProvider = provider
            handler[metadataKey: "k"] = "handler"
            handler[metadataKey: "h"] = "handler"
            handler[metadataKey: "both"] = "handler"
        }) { logger, _ in
            logger.info("one", metadata: ["k": "call site", "c": "call site"])
            logger.info("two")
        }
        let one = try parseJSONLine(json[0]), two = try parseJSONLine(json[1])
        XCTAssertEqual(one["k"] as? String, "call site")
        XCTAssertEqual(one["c"] as? String, "call site")
        XCTAssertEqual(one["p"] as? String, "provider")
        XCTAssertEqual(one["h"] as? String, "handler")
        XCTAssertEqual(one["both"] as? String, "provider", "a provider's value is above the handler's")
        XCTAssertEqual(two["k"] as? String, "provider")
        XCTAssertEqual(two["h"] as? String, "handler")
        XCTAssertEqual(Set(one.keys), ["ts", "level", "label", "pid", "source", "msg", "k", "c", "p", "h", "both"])
    }

    func testMetadataNeverShadowsTheLinesOwnFields() throws {
        let metadata: Logger.Metadata = ["level": "a", "_level": "b", "__level": "c", "ts": "d", "msg": "e",
                                         "error.type": "f", "levels": "g", "pid": "h", "source": "i"]
        for format in [MMLogHandler.Format.json, .logfmt] {
            let line = try lines(format) { logger, _ in logger.error("boom", metadata: metadata) }[0]
            let fields: [String: String]
            if format == .json {
                fields = try parseJSONLine(line).compactMapValues { $0 as? String }
            } else {
                fields = try parseLogfmtLine(line)
            }
            XCTAssertEqual(fields["level"], "error", line)
            XCTAssertEqual(fields["msg"], "boom", line)
            XCTAssertEqual(fields["_level"], "a", line)
            XCTAssertEqual(fields["__level"], "b", line)
            XCTAssertEqual(fields["___level"], "c", line)
            XCTAssertEqual(fields["_ts"], "d", line)
            XCTAssertEqual(fields["_msg"], "e", line)
            XCTAssertEqual(fields["_error.type"], "f", line)
            XCTAssertEqual(fields["levels"], "g", line)
            XCTAssertEqual(fields["_source"], "i", line)
        }
        let text = try lines(.text) { logger, _ in logger.error("boom", metadata: ["level": "a", "ok": "b"]) }[0]
        XCTAssertTrue(text.hasSuffix(" : _level=a ok=b boom"), text)
    }

    func testLogfmtKeysStayKeys() throws {
        let line = try lines(.logfmt) { logger, _ in
            logger.info("m", metadata: ["a b=c\"d\ne\u{2028}f": "1", "": "2", " level": "3"])
        }[0]
        let fields = try parseLogfmtLine(line)
        XCTAssertEqual(fields["a_b_c_d_e_f"], "1", line)
        XCTAssertEqual(fields["_"], "2", line)
        XCTAssertEqual(fields["__level"], "3", "a key that becomes _level when made safe is renamed too: \(line)")
        XCTAssertEqual(fields["level"], "info")
    }

    func testNestedMetadataInEachFormat() throws {
        let metadata: Logger.Metadata = [
            "http": ["status": "200", "headers": ["accept": "*/*"], "empty": [:]],
            "tags": ["a", "b c", ["x": "y"]],
            "count": .stringConvertible(42),
        ]
        let json = try parseJSONLine(try lines(.json) { logger, _ in logger.info("m", metadata: metadata) }[0])
        XCTAssertEqual(json["count"] as? String, "42", "stringConvertible is its description, as a string")
        let http = json["http"] as? [String: Any]
        XCTAssertEqual(http?["status"] as? String, "200")
        XCTAssertEqual(http?["headers"] as? [String: String], ["accept": "*/*"])
        XCTAssertEqual((http?["empty"] as? [String: Any])?.count, 0)
        let tags = json["tags"] as? [Any]
        XCTAssertEqual(tags?.count, 3)
        XCTAssertEqual(tags?[1] as? String, "b c")
        XCTAssertEqual(tags?[2] as? [String: String], ["x": "y"])

        let logfmt = try lines(.logfmt) { logger, _ in logger.info("m", metadata: metadata) }[0]
        let fields = try parseLogfmtLine(logfmt)
        XCTAssertEqual(fields["http.status"], "200")
        XCTAssertEqual(fields["http.headers.accept"], "*/*")
        XCTAssertEqual(fields["http.empty"], "{}")
        XCTAssertEqual(fields["tags"], #"["a","b c",{"x":"y"}]"#)
        XCTAssertEqual(fields["count"], "42")

        let text = try lines(.text) { logger, _ in logger.info("m", metadata: metadata) }[0]
        XCTAssertTrue(text.hasSuffix(#" : count=42 http.empty={} http.headers.accept=*/* http.status=200 tags=["a","b c",{"x":"y"}] m"#), text)
    }

    func testAnAttachedErrorIsWritten() throws {
        struct Refused: Error, CustomStringConvertible {
            var description: String { "refused\nby peer" }
        }
        let json = try parseJSONLine(try lines(.json) { logger, _ in
            logger.error("connect failed", error: Refused(), metadata: ["error.message": "mine"])
        }[0])
        XCTAssertEqual(json["error.message"] as? String, "refused\nby peer")
        XCTAssertEqual(json["error.type"] as? String, String(reflecting: Refused.self))
        XCTAssertEqual(json["_error.message"] as? String, "mine")
        let text = try lines(.text) { logger, _ in logger.error("connect failed", error: Refused()) }[0]
        XCTAssertTrue(text.contains(" : error.message=refused\\nby peer error.type=\(String(reflecting: Refused.self)) connect failed"), text)
    }

    func testEveryEntryPointWritesOneLineWithItsSource() throws {
        let json = try lines(.json, sourceLocation: true) { _, handler in
            handler.log(event: LogEvent(level: .info, message: "event", metadata: ["m": "1"], source: "EventSource",
                                        file: "Mod/File.swift", function: "f()", line: 1))
            callDeprecatedEntryPoints(handler)
        }
        XCTAssertEqual(json.count, 4)
        let objects = try json.map(parseJSONLine)
        XCTAssertEqual(objects.map { $0["msg"] as? String }, ["event", "with source", "without source", "file path"])
        XCTAssertEqual(objects.map { $0["source"] as? String }, ["EventSource", "GivenSource", "Mod", "Module"])
        XCTAssertEqual(objects.map { $0["line"] as? Int }, [1, 2, 3, 4])
        XCTAssertEqual(objects[1]["m"] as? String, "2")
    }

    func testSyncAfterEventsAtOrAboveTheSyncLevel() throws {
        let before = MMLogHandler.syncs.load(ordering: .relaxed)
        let written = try lines(.text, configure: { $0.syncLevel = .error }) { logger, _ in
            logger.info("no sync")
            logger.warning("no sync")
            XCTAssertEqual(MMLogHandler.syncs.load(ordering: .relaxed), before)
            logger.error("sync")
            XCTAssertEqual(MMLogHandler.syncs.load(ordering: .relaxed), before + 1)
            logger.critical("sync")
            XCTAssertEqual(MMLogHandler.syncs.load(ordering: .relaxed), before + 2)
        }
        XCTAssertEqual(written.count, 4)
        _ = try lines(.text) { logger, _ in logger.critical("no sync level: no sync") }
        XCTAssertEqual(MMLogHandler.syncs.load(ordering: .relaxed), before + 2)
    }

    func testALongLineAndANestedLogCallStayWhole() throws {
        struct LogsWhenDescribed: CustomStringConvertible, Sendable {
            let logger: Logger
            var description: String {
                logger.info("inner", metadata: ["depth": "2"])
                return "described"
            }
        }
        let long = String(repeating: "x\n", count: 100_000)
        let json = try lines(.json) { logger, _ in
            logger.info("\(long)")
            logger.info("outer", metadata: ["value": .stringConvertible(LogsWhenDescribed(logger: logger))])
            logger.info("after")
        }
        let objects = try json.map(parseJSONLine)
        XCTAssertEqual(objects.map { $0["msg"] as? String }, [long, "inner", "outer", "after"])
        XCTAssertEqual(objects[2]["value"] as? String, "described")
    }

    func testCalendarArithmeticMatchesGmtime() {
        for seconds in [0, 86_399, 86_400, 951_782_400, 951_868_800, 4_107_542_400, 1_700_000_000, 253_402_300_799, -86_400, -2_208_988_800] {
            var t = time_t(seconds), parts = tm()
            gmtime_r(&t, &parts)
            let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
            let civil = civilDate(daysSinceEpoch: days)
            XCTAssertEqual([civil.year, civil.month, civil.day], [Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1, Int(parts.tm_mday)], "\(seconds)")
        }
    }

    func testEnvironmentLevelRules() {
        let levels = EnvironmentLevels([("LOG_LEVEL", "Warn"), ("LOG_LEVEL_http", "debug"), ("LOG_LEVEL_COM_EXAMPLE_DB", "TRACE"),
                                        ("LOG_LEVEL_bad", "loud"), ("LOG_LEVELS", "error"), ("LOG_LEVEL_", "error")])
        XCTAssertEqual(levels.level(for: "http"), .debug)
        XCTAssertEqual(levels.level(for: "HTTP"), .debug)
        XCTAssertEqual(levels.level(for: "com.example.db"), .trace)
        XCTAssertEqual(levels.level(for: "other"), .warning)
        XCTAssertEqual(levels.level(for: "bad"), .warning)
        XCTAssertEqual(levels.rejected, ["LOG_LEVEL_bad=loud"])
        XCTAssertNil(EnvironmentLevels([]).level(for: "x"))
    }
}

/// swift-log's two older entry points, which it marks deprecated; called through this protocol
/// so that testing them does not warn.
private protocol OlderEntryPoints {
    func log(level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String,
             file: String, function: String, line: UInt)
    func log(level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, file: String,
             function: String, line: UInt)
}

extension MMLogHandler: OlderEntryPoints {}

private func callDeprecatedEntryPoints(_ handler: some OlderEntryPoints) {
    handler.log(level: .info, message: "with source", metadata: ["m": "2"], source: "GivenSource",
                file: "Mod/File.swift", function: "f()", line: 2)
    handler.log(level: .info, message: "without source", metadata: nil, file: "Mod/File.swift", function: "f()", line: 3)
    handler.log(level: .info, message: "file path", metadata: nil, file: "/src/Sources/Module/File.swift", function: "f()", line: 4)
}

// MARK: - Shared by the handler tests

/// Strings that break naive log formats: line breaks of every kind, quotes, `=`, backslashes,
/// control characters, combining marks on syntax characters, emoji, astral and odd scalars.
let nastyStrings: [String] = [
    "plain", "", " ", "two\nlines", "cr\rlf\r\n", "tab\there", "LS[\u{2028}] PS[\u{2029}]", "NEL[\u{85}] C1[\u{80}\u{9F}]",
    "quote \" and 'single'", "a=b c=d", "=", "back\\slash \\n \\u2028 literal", "NUL[\u{0}] BEL[\u{7}] ESC[\u{1B}[31m] DEL[\u{7F}]",
    "emoji 👩‍👩‍👧 🇫🇷 astral \u{10FFFF} \u{1F600}", "combining \"\u{301} and \n\u{301} and \\\u{301}",
    " leading and trailing ", "BOM \u{FEFF} RTL \u{202E}x NBSP[\u{A0}] ideographic[\u{3000}]", "replacement \u{FFFD}",
    "key=\"value\" \\\" end", "{\"json\":[1,2]}", "level=error msg=forged", "} {\"level\":\"forged\"",
    "\u{1}\u{2}\u{3}\u{8}\u{C}\u{B}\u{1F}", "level", "_msg", "a\u{0}b",
]

/// Whether a key is a line's own field name, perhaps behind underscores (so it is renamed).
func isReservedLike(_ key: String) -> Bool {
    var rest = Substring(key)
    while rest.first == "_" { rest = rest.dropFirst() }
    return ["ts", "level", "label", "pid", "source", "file", "line", "msg", "error.message", "error.type"].contains(String(rest))
}

/// Scalars after which a reader splitting lines by Unicode's rules would start a new line.
func lineBreaking(_ scalar: Unicode.Scalar) -> Bool {
    scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value) || scalar.value == 0x2028 || scalar.value == 0x2029
}

/// The escaping docs/logging.md promises, written from the rules, scalar by scalar.
func referenceEscape(_ text: String, quotes: Bool) -> String {
    var out = ""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"" where quotes: out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case "\u{8}": out += "\\b"
        case "\u{C}": out += "\\f"
        case _ where lineBreaking(scalar):
            let hex = String(scalar.value, radix: 16)
            out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        default: out.unicodeScalars.append(scalar)
        }
    }
    return out
}

/// The UTF-8 of a parsed string value, so that comparisons are byte for byte (String's `==`
/// would call canonically equivalent strings equal).
func utf8(_ value: Any?) -> [UInt8]? {
    (value as? String).map { Array($0.utf8) }
}

struct ParseError: Error, CustomStringConvertible {
    let description: String
}

/// One line as a JSON object (Foundation's parser), or an error.
func parseJSONLine(_ line: String) throws -> [String: Any] {
    guard let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
        throw ParseError(description: "not a JSON object: \(line)")
    }
    return object
}

/// A strict logfmt parser: `key=value` pairs separated by one space; a key is one or more
/// bytes other than space, controls, `=` and `"`; a value is either bare (one or more bytes
/// other than space, controls, `=`, `"` and `\`) or quoted with JSON's escapes. Duplicate keys,
/// stray spaces, and anything else are errors.
func parseLogfmtLine(_ line: String) throws -> [String: String] {
    let bytes = Array(line.utf8)
    var fields: [String: String] = [:]
    var i = 0
    func fail(_ why: String) -> ParseError { ParseError(description: "\(why) at byte \(i): \(line)") }
    func isPlain(_ byte: UInt8) -> Bool { byte > 0x20 && byte != 0x7F && byte != UInt8(ascii: "=") && byte != UInt8(ascii: "\"") }
    while i < bytes.count {
        if i > 0 {
            guard bytes[i] == UInt8(ascii: " ") else { throw fail("expected a space") }
            i += 1
        }
        let keyStart = i
        while i < bytes.count, isPlain(bytes[i]) { i += 1 }
        guard i > keyStart, i < bytes.count, bytes[i] == UInt8(ascii: "=") else { throw fail("expected key=") }
        let key = String(decoding: bytes[keyStart..<i], as: UTF8.self)
        i += 1
        var value: [UInt8] = []
        if i < bytes.count, bytes[i] == UInt8(ascii: "\"") {
            i += 1
            while true {
                guard i < bytes.count else { throw fail("unterminated quotes") }
                let byte = bytes[i]
                if byte == UInt8(ascii: "\"") { i += 1; break }
                guard byte >= 0x20 else { throw fail("raw control character in quotes") }
                if byte != UInt8(ascii: "\\") {
                    value.append(byte)
                    i += 1
                    continue
                }
                guard i + 1 < bytes.count else { throw fail("dangling backslash") }
                let escape = bytes[i + 1]
                i += 2
                switch escape {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): value.append(escape)
                case UInt8(ascii: "n"): value.append(0x0A)
                case UInt8(ascii: "r"): value.append(0x0D)
                case UInt8(ascii: "t"): value.append(0x09)
                case UInt8(ascii: "b"): value.append(0x08)
                case UInt8(ascii: "f"): value.append(0x0C)
                case UInt8(ascii: "u"):
                    guard i + 4 <= bytes.count, let code = UInt32(String(decoding: bytes[i..<i + 4], as: UTF8.self), radix: 16),
                          let scalar = Unicode.Scalar(code)
                    else { throw fail("bad \\u escape") }
                    value.append(contentsOf: Array(String(Character(scalar)).utf8))
                    i += 4
                default: throw fail("unknown escape")
                }
            }
        } else {
            let valueStart = i
            while i < bytes.count, isPlain(bytes[i]), bytes[i] != UInt8(ascii: "\\") { i += 1 }
            guard i > valueStart else { throw fail("empty bare value") }
            value = Array(bytes[valueStart..<i])
        }
        guard fields[key] == nil else { throw fail("duplicate key \(key)") }
        fields[key] = String(decoding: value, as: UTF8.self)
    }
    return fields
}
