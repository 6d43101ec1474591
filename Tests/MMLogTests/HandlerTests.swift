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
        for special in ["\n", "\"", "\\", "\u{7F}", "\u{0}", "\u{85}", "\u{2028}", "\u{2029}", "é", "=", " ", "😀",
                        "\u{202E}", "\u{AD}", "\u{E0001}"] {
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
                XCTAssertFalse(line.unicodeScalars.contains(where: isFormatScalar), "\(format): a raw format control: \(line)")
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
                    XCTAssertTrue(line.hasSuffix(" : v=\(referenceValue(sample)) \(referenceMessage(sample))"), line)
                    let text = try parseTextLine(line)
                    XCTAssertEqual(utf8(text.message), Array(sample.utf8), line)
                    XCTAssertEqual(utf8(text.fields["v"]), Array(sample.utf8), line)
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
                           " warning app[\(getpid())] MMLogTests : v=\(referenceValue(nasty)) \(referenceMessage(nasty))")
            XCTAssertFalse(line.unicodeScalars.contains { lineBreaking($0) }, line)
            let parsed = try parseTextLine(line)
            XCTAssertEqual(utf8(parsed.message), Array(nasty.utf8), line)
            XCTAssertEqual(parsed.fields.mapValues { Array($0.utf8) }, ["v": Array(nasty.utf8)], line)
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
        XCTAssertTrue(text[0].hasSuffix(" : path=\"/a b\" status=200 request served"), text[0])

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
        XCTAssertTrue(text.hasSuffix(#" : count=42 http.empty={} http.headers.accept=*/* http.status=200 tags="[\"a\",\"b c\",{\"x\":\"y\"}]" m"#), text)
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
        XCTAssertTrue(text.contains(#" : error.message="refused\nby peer" error.type="#), text)
        let parsed = try parseTextLine(text)
        XCTAssertEqual(parsed.fields, ["error.message": "refused\nby peer", "error.type": String(reflecting: Refused.self)], text)
        XCTAssertEqual(parsed.message, "connect failed")
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

    /// Each string given as the label, source, file, message, error, a metadata key and
    /// values (plain, in an array, in a dictionary) parses back, in each format, as exactly
    /// the fields logged: no value reads as another pair or ends a field early.
    func testForgedValuesParseBackAsExactlyThePairsIntended() throws {
        struct Forged: Error, CustomStringConvertible { let description: String }
        let errorType = String(reflecting: Forged.self)
        let forgeries = [
            #"k=v msg="forged" level=error"#, #"x" level="error"#, #"a\" b=c"#, "level=error", "v level=error", "=", "\"", "", " ",
            #"key="value with \"quotes\"""#, #"" : fake=1 message"#, "] x[1] y : z=1", "x[1]", "a:1", "\\\" y=z", "\u{202E}level=error",
        ]
        for format in MMLogHandler.Format.allCases {
            let written = try lines(format, sourceLocation: true) { _, handler in
                for forged in forgeries {
                    var labelled = MMLogHandler(label: forged, log: handler.log, format: format, logLevel: .trace, sourceLocation: true)
                    labelled.metadata = ["v": "\(forged)", "w": ["\(forged)"], "d": ["e": "\(forged)"], "\(forged)": "as key"]
                    labelled.log(event: LogEvent(level: .error, message: "\(forged)", error: Forged(description: forged), metadata: nil,
                                                 source: forged, file: forged, function: "f()", line: 7))
                }
            }
            XCTAssertEqual(written.count, forgeries.count, "\(format): one line per event")
            for (line, forged) in zip(written, forgeries) {
                let key = format == .json ? forged : referenceKey(forged)
                let renamedKey = isReservedLike(key) ? "_" + key : key
                switch format {
                case .json:
                    let object = try parseJSONLine(line)
                    XCTAssertEqual(Set(object.keys), ["ts", "level", "label", "pid", "source", "file", "line", "msg", "error.message",
                                                      "error.type", "v", "w", "d", renamedKey], line)
                    for field in ["label", "source", "file", "msg", "error.message", "v"] {
                        XCTAssertEqual(utf8(object[field]), Array(forged.utf8), "\(field): \(line)")
                    }
                    XCTAssertEqual(object["level"] as? String, "error", line)
                    XCTAssertEqual(object["line"] as? Int, 7, line)
                    XCTAssertEqual(object["error.type"] as? String, errorType, line)
                    XCTAssertEqual(object["w"] as? [String], [forged], line)
                    XCTAssertEqual(object["d"] as? [String: String], ["e": forged], line)
                    XCTAssertEqual(object[renamedKey] as? String, "as key", line)
                case .logfmt:
                    let fields = try parseLogfmtLine(line)
                    XCTAssertEqual(Set(fields.keys), ["ts", "level", "label", "pid", "source", "file", "line", "msg", "error.message",
                                                      "error.type", "v", "w", "d.e", renamedKey], line)
                    for field in ["label", "source", "file", "msg", "error.message", "v", "d.e"] {
                        XCTAssertEqual(utf8(fields[field]), Array(forged.utf8), "\(field): \(line)")
                    }
                    XCTAssertEqual(fields["level"], "error", line)
                    XCTAssertEqual(fields["line"], "7", line)
                    XCTAssertEqual(fields["error.type"], errorType, line)
                    XCTAssertEqual(try JSONSerialization.jsonObject(with: Data((fields["w"] ?? "").utf8)) as? [String], [forged], line)
                    XCTAssertEqual(fields[renamedKey], "as key", line)
                case .text:
                    let text = try parseTextLine(line)
                    XCTAssertEqual(text.level, "error", line)
                    XCTAssertEqual(text.pid, "\(getpid())", line)
                    XCTAssertEqual(utf8(text.label), Array(forged.utf8), "label: \(line)")
                    XCTAssertEqual(utf8(text.source), Array(forged.utf8), "source: \(line)")
                    XCTAssertEqual(utf8(text.file), Array(forged.utf8), "file: \(line)")
                    XCTAssertEqual(text.line, "7", line)
                    XCTAssertEqual(utf8(text.message), Array(forged.utf8), "message: \(line)")
                    XCTAssertEqual(Set(text.fields.keys), ["error.message", "error.type", "v", "w", "d.e", renamedKey], line)
                    for field in ["error.message", "v", "d.e"] {
                        XCTAssertEqual(utf8(text.fields[field]), Array(forged.utf8), "\(field): \(line)")
                    }
                    XCTAssertEqual(text.fields["error.type"], errorType, line)
                    XCTAssertEqual(try JSONSerialization.jsonObject(with: Data((text.fields["w"] ?? "").utf8)) as? [String], [forged], line)
                    XCTAssertEqual(text.fields[renamedKey], "as key", line)
                }
            }
        }
    }

    /// Bidi controls and other format characters (Cf) are escaped in the label, source, file,
    /// message, error, keys and values of every format: none is ever written raw.
    func testFormatControlsNeverAppearRaw() throws {
        struct Described: Error, CustomStringConvertible { let description: String }
        let controls: [Unicode.Scalar] = ["\u{202E}", "\u{202A}", "\u{200B}", "\u{200F}", "\u{2066}", "\u{2067}", "\u{2068}",
                                          "\u{2069}", "\u{FEFF}", "\u{AD}", "\u{61C}", "\u{180E}", "\u{FFF9}", "\u{E0001}", "\u{E007F}", "\u{1D173}"]
        for format in MMLogHandler.Format.allCases {
            let samples = controls.map { "a\($0)b \($0)" }
            let written = try lines(format, sourceLocation: true) { _, handler in
                for sample in samples {
                    var labelled = MMLogHandler(label: sample, log: handler.log, format: format, logLevel: .trace, sourceLocation: true)
                    labelled.metadata = ["v": "\(sample)", "\(sample)": "\(sample)", "w": ["\(sample)"]]
                    labelled.log(event: LogEvent(level: .info, message: "\(sample)", error: Described(description: sample), metadata: nil,
                                                 source: sample, file: sample, function: "f()", line: 1))
                }
            }
            XCTAssertEqual(written.count, samples.count, "\(format): one line per event")
            for ((line, sample), control) in zip(zip(written, samples), controls) {
                XCTAssertFalse(line.unicodeScalars.contains(where: isFormatScalar), "\(format): a raw format control: \(line.debugDescription)")
                XCTAssertTrue(line.contains(jsonEscape(control)), "\(format): \(jsonEscape(control)) in \(line)")
                let key = "a_b__"
                switch format {
                case .json:
                    let object = try parseJSONLine(line)
                    for field in ["label", "source", "file", "msg", "error.message", "v", sample] {
                        XCTAssertEqual(utf8(object[field]), Array(sample.utf8), "\(field): \(line)")
                    }
                case .logfmt:
                    let fields = try parseLogfmtLine(line)
                    for field in ["label", "source", "file", "msg", "error.message", "v", key] {
                        XCTAssertEqual(utf8(fields[field]), Array(sample.utf8), "\(field): \(line)")
                    }
                case .text:
                    let text = try parseTextLine(line)
                    XCTAssertEqual([text.label, text.source, text.file ?? "", text.message].map { Array($0.utf8) },
                                   Array(repeating: Array(sample.utf8), count: 4), line)
                    for field in ["error.message", "v", key] {
                        XCTAssertEqual(utf8(text.fields[field]), Array(sample.utf8), "\(field): \(line)")
                    }
                }
            }
        }
    }

    /// The handler's list of format controls is Unicode's (as the standard library knows it),
    /// and each starts with a byte the escaper stops at.
    func testFormatControlListIsUnicodes() {
        var mismatches: [String] = []
        for value in UInt32(0)...0x10FFFF {
            guard let scalar = Unicode.Scalar(value) else { continue }
            let isCf = scalar.properties.generalCategory == .format
            if isCf != isFormatControl(value) { mismatches.append(String(value, radix: 16)) }
            if isCf, !mayStartFormatControl(String(Character(scalar)).utf8.first!) {
                mismatches.append("lead byte of " + String(value, radix: 16))
            }
        }
        XCTAssertEqual(mismatches, [])
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
    "k=v msg=\"forged\" level=error", "bidi \u{2066}\u{2067}\u{2068}\u{2069} ZW[\u{200B}\u{200D}] SHY[\u{AD}] tag[\u{E0001}]",
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

/// Unicode's format controls (general category Cf): bidi controls, zero-width characters, tags.
func isFormatScalar(_ scalar: Unicode.Scalar) -> Bool {
    scalar.properties.generalCategory == .format
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
        case _ where lineBreaking(scalar) || isFormatScalar(scalar): out += jsonEscape(scalar)
        default: out.unicodeScalars.append(scalar)
        }
    }
    return out
}

/// `\uXXXX` in lower-case hex, or a surrogate pair above U+FFFF (JSON's escape).
func jsonEscape(_ scalar: Unicode.Scalar) -> String {
    String(Character(scalar)).utf16.map { unit in
        let hex = String(unit, radix: 16)
        return "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
    }.joined()
}

/// A logfmt or text value: bare when it is not empty and holds nothing that the escaping
/// changes and no space, `=` or `"`; otherwise quoted, with JSON's escapes.
func referenceValue(_ text: String) -> String {
    let bare = !text.isEmpty && referenceEscape(text, quotes: true) == text && !text.contains(" ") && !text.contains("=")
    return bare ? text : "\"" + referenceEscape(text, quotes: true) + "\""
}

/// A text line's message: quoted when it is empty, starts with `"` or has `=` in its first
/// word; otherwise escaped, with `"` left as it is.
func referenceMessage(_ text: String) -> String {
    let firstWord = text.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
    return text.isEmpty || text.hasPrefix("\"") || firstWord.contains("=") ? referenceValue(text) : referenceEscape(text, quotes: false)
}

/// A logfmt or text key: space, controls, `=`, `"`, DEL, C1 controls, U+2028, U+2029 and
/// format controls as `_`; an empty key as `_`.
func referenceKey(_ key: String) -> String {
    guard !key.isEmpty else { return "_" }
    var out = ""
    for scalar in key.unicodeScalars {
        let replaced = scalar.value <= 0x20 || scalar == "=" || scalar == "\"" || lineBreaking(scalar) || isFormatScalar(scalar)
        out.unicodeScalars.append(replaced ? "_" : scalar)
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
    var scanner = LineScanner(line)
    var fields: [String: String] = [:]
    while !scanner.atEnd {
        if scanner.i > 0 { try scanner.expect(" ") }
        let key = try scanner.key()
        guard fields[key] == nil else { throw scanner.fail("duplicate key \(key)") }
        fields[key] = try scanner.value()
    }
    return fields
}

/// A text line, read strictly by `parseTextLine`.
struct TextLine {
    var ts = "", level = "", label = "", pid = "", source = ""
    var file: String?, line: String?
    var fields: [String: String] = [:]
    var message = ""
}

/// A strict parser of the text format:
/// `<ts> <level> <label>[<pid>] <source>[ <file>:<line>] :[ <key>=<value>]... <message>`.
/// Label, source, file and values are logfmt values (bare or quoted); keys are logfmt keys;
/// the message is the rest of the line: quoted (then nothing may follow), or bare with JSON's
/// escapes but `"` as it is, and then its first word holds no `=` (it would be a pair).
func parseTextLine(_ line: String) throws -> TextLine {
    var scanner = LineScanner(line)
    var text = TextLine()
    text.ts = String(decoding: scanner.bare(until: " "), as: UTF8.self)
    try scanner.expect(" ")
    text.level = String(decoding: scanner.bare(until: " "), as: UTF8.self)
    try scanner.expect(" ")
    if scanner.peek == UInt8(ascii: "\"") {
        text.label = try scanner.value()
    } else {
        let token = scanner.bare(until: " ")
        guard let open = token.lastIndex(of: UInt8(ascii: "[")) else { throw scanner.fail("no [pid]") }
        scanner.i = open
        text.label = String(decoding: token[..<open], as: UTF8.self)
        guard !text.label.isEmpty else { throw scanner.fail("empty bare label") }
    }
    try scanner.expect("[")
    text.pid = String(decoding: scanner.bare(until: "]"), as: UTF8.self)
    try scanner.expect("]")
    try scanner.expect(" ")
    text.source = try scanner.value()
    try scanner.expect(" ")
    if !scanner.upcoming(": ") {
        if scanner.peek == UInt8(ascii: "\"") {
            text.file = try scanner.value()
            try scanner.expect(":")
            text.line = String(decoding: scanner.bare(until: " "), as: UTF8.self)
        } else {
            let token = scanner.bare(until: " ")
            guard let colon = token.lastIndex(of: UInt8(ascii: ":")) else { throw scanner.fail("no :line") }
            text.file = String(decoding: token[..<colon], as: UTF8.self)
            text.line = String(decoding: token[(colon + 1)...], as: UTF8.self)
        }
        try scanner.expect(" ")
    }
    try scanner.expect(":")
    try scanner.expect(" ")
    while scanner.upcomingKey() {
        let key = try scanner.key()
        guard text.fields[key] == nil else { throw scanner.fail("duplicate key \(key)") }
        text.fields[key] = try scanner.value()
        try scanner.expect(" ")
    }
    if scanner.peek == UInt8(ascii: "\"") {
        text.message = try scanner.value()
        guard scanner.atEnd else { throw scanner.fail("text after a quoted message") }
    } else {
        text.message = try scanner.escaped(quotes: false, until: nil)
        guard !text.message.isEmpty else { throw scanner.fail("an empty message must be quoted") }
    }
    return text
}

/// A cursor over the bytes of one line, for the strict parsers above.
struct LineScanner {
    let bytes: [UInt8]
    let line: String
    var i = 0

    init(_ line: String) {
        self.line = line
        bytes = Array(line.utf8)
    }

    var atEnd: Bool { i >= bytes.count }
    var peek: UInt8? { atEnd ? nil : bytes[i] }

    func fail(_ why: String) -> ParseError { ParseError(description: "\(why) at byte \(i): \(line)") }

    func upcoming(_ text: String) -> Bool { bytes[i...].starts(with: Array(text.utf8)) }

    /// Whether a `key=` starts here.
    func upcomingKey() -> Bool {
        var j = i
        while j < bytes.count, Self.isKeyByte(bytes[j]) { j += 1 }
        return j > i && j < bytes.count && bytes[j] == UInt8(ascii: "=")
    }

    static func isKeyByte(_ byte: UInt8) -> Bool {
        byte > 0x20 && byte != 0x7F && byte != UInt8(ascii: "=") && byte != UInt8(ascii: "\"")
    }

    mutating func expect(_ text: StaticString) throws {
        guard upcoming("\(text)") else { throw fail("expected \"\(text)\"") }
        i += text.utf8CodeUnitCount
    }

    /// A key and its `=`.
    mutating func key() throws -> String {
        let start = i
        while i < bytes.count, Self.isKeyByte(bytes[i]) { i += 1 }
        guard i > start, i < bytes.count, bytes[i] == UInt8(ascii: "=") else { throw fail("expected key=") }
        i += 1
        return String(decoding: bytes[start..<(i - 1)], as: UTF8.self)
    }

    /// A logfmt value: bare (one or more bytes other than space, controls, `=`, `"`, `\`) or quoted.
    mutating func value() throws -> String {
        if peek == UInt8(ascii: "\"") {
            i += 1
            let value = try escaped(quotes: true, until: UInt8(ascii: "\""))
            i += 1
            return value
        }
        let start = i
        while i < bytes.count, Self.isKeyByte(bytes[i]), bytes[i] != UInt8(ascii: "\\") { i += 1 }
        guard i > start else { throw fail("empty bare value") }
        return String(decoding: bytes[start..<i], as: UTF8.self)
    }

    /// Bytes up to (not including) `stop` or the end.
    mutating func bare(until stop: Unicode.Scalar) -> ArraySlice<UInt8> {
        let start = i
        while i < bytes.count, bytes[i] != UInt8(ascii: stop) { i += 1 }
        return bytes[start..<i]
    }

    /// Text with JSON's escapes up to `end` (which must come) or, without one, to the end of
    /// the line; `quotes`: a raw `"` is an error. Raw C0 controls are errors.
    mutating func escaped(quotes: Bool, until end: UInt8?) throws -> String {
        var value: [UInt8] = []
        var pendingHigh: UInt32?
        while true {
            guard i < bytes.count else {
                if end != nil { throw fail("unterminated quotes") }
                break
            }
            let byte = bytes[i]
            if byte == end { break }
            guard byte >= 0x20 else { throw fail("raw control character") }
            if byte == UInt8(ascii: "\"") && quotes { throw fail("raw quote") }
            if byte != UInt8(ascii: "\\") {
                guard pendingHigh == nil else { throw fail("lone high surrogate") }
                value.append(byte)
                i += 1
                continue
            }
            guard i + 1 < bytes.count else { throw fail("dangling backslash") }
            let escape = bytes[i + 1]
            i += 2
            if escape != UInt8(ascii: "u") && pendingHigh != nil { throw fail("lone high surrogate") }
            switch escape {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): value.append(escape)
            case UInt8(ascii: "n"): value.append(0x0A)
            case UInt8(ascii: "r"): value.append(0x0D)
            case UInt8(ascii: "t"): value.append(0x09)
            case UInt8(ascii: "b"): value.append(0x08)
            case UInt8(ascii: "f"): value.append(0x0C)
            case UInt8(ascii: "u"):
                guard i + 4 <= bytes.count, let unit = UInt32(String(decoding: bytes[i..<i + 4], as: UTF8.self), radix: 16)
                else { throw fail("bad \\u escape") }
                i += 4
                var code = unit
                if let high = pendingHigh {
                    guard (0xDC00...0xDFFF).contains(unit) else { throw fail("high surrogate without a low one") }
                    code = 0x10000 + (high - 0xD800) << 10 + (unit - 0xDC00)
                    pendingHigh = nil
                } else if (0xD800...0xDBFF).contains(unit) {
                    pendingHigh = unit
                    continue
                }
                guard let scalar = Unicode.Scalar(code) else { throw fail("bad \\u escape") }
                value.append(contentsOf: Array(String(Character(scalar)).utf8))
            default: throw fail("unknown escape")
            }
        }
        guard pendingHigh == nil else { throw fail("lone high surrogate") }
        let text = String(decoding: value, as: UTF8.self)
        return text
    }
}
