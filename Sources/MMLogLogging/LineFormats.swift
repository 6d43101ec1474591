#if canImport(Glibc)
import Glibc
#endif
import Logging

// The three line formats. Each event becomes exactly one line, written into a `LineBuffer`
// field by field (no String per field), ending in "\n". docs/logging.md shows each layout.
//
//   text:   <ts> <level> <label>[<pid>] <source>[ <file>:<line>] :[ <key>=<value>...] <message>
//   logfmt: ts=<ts> level=<level> label=<label> pid=<pid> source=<source>[ file=<file> line=<line>] msg=<message>[ <key>=<value>...]
//   json:   {"ts":"<ts>","level":"<level>","label":"<label>","pid":<pid>,"source":"<source>"[,"file":"<file>","line":<line>],"msg":"<message>"[,"<key>":<value>...]}
//
// An attached error adds the keys `error.message` (its description) and `error.type` (its
// fully qualified type), swift-log's names for them, ahead of the metadata.

extension MMLogHandler {
    /// Formats `event` (with `provided`, the metadata provider's values) as one line.
    func format(_ event: LogEvent, provided: Logger.Metadata?, into line: inout LineBuffer) {
        let error = event.error.map { error in (message: "\(error)", type: String(reflecting: type(of: error))) }
        withMergedMetadata(base: metadata, provided: provided, explicit: event.metadata) { entries in
            switch format {
            case .text: formatText(event, error: error, entries, into: &line)
            case .logfmt: formatLogfmt(event, error: error, entries, into: &line)
            case .json: formatJSON(event, error: error, entries, into: &line)
            }
        }
    }

    private func formatText(_ event: LogEvent, error: (message: String, type: String)?,
                            _ entries: UnsafeMutableBufferPointer<MetadataEntry>, into line: inout LineBuffer) {
        line.appendTimestamp()
        line.append(" ")
        line.appendRaw(event.level.rawValue)
        line.append(" ")
        line.appendEscaped(label, quotes: false)
        line.append("[")
        line.appendDecimal(Int(currentProcessID()))
        line.append("] ")
        line.appendEscaped(event.source, quotes: false)
        if sourceLocation {
            line.append(" ")
            line.appendEscaped(event.file, quotes: false)
            line.append(":")
            line.appendDecimal(UInt64(event.line))
        }
        line.append(" :")
        if let error {
            line.append(" error.message=")
            line.appendEscaped(error.message, quotes: false)
            line.append(" error.type=")
            line.appendEscaped(error.type, quotes: false)
        }
        for entry in entries {
            line.appendPair(key: entry.key, entry.value, quoted: false)
        }
        line.append(" ")
        line.appendEscaped(event.message.description, quotes: false)
        line.append("\n")
    }

    private func formatLogfmt(_ event: LogEvent, error: (message: String, type: String)?,
                              _ entries: UnsafeMutableBufferPointer<MetadataEntry>, into line: inout LineBuffer) {
        line.append("ts=")
        line.appendTimestamp()
        line.append(" level=")
        line.appendRaw(event.level.rawValue)
        line.append(" label=")
        line.appendLogfmtValue(label)
        line.append(" pid=")
        line.appendDecimal(Int(currentProcessID()))
        line.append(" source=")
        line.appendLogfmtValue(event.source)
        if sourceLocation {
            line.append(" file=")
            line.appendLogfmtValue(event.file)
            line.append(" line=")
            line.appendDecimal(UInt64(event.line))
        }
        line.append(" msg=")
        line.appendLogfmtValue(event.message.description)
        if let error {
            line.append(" error.message=")
            line.appendLogfmtValue(error.message)
            line.append(" error.type=")
            line.appendLogfmtValue(error.type)
        }
        for entry in entries {
            line.appendPair(key: entry.key, entry.value, quoted: true)
        }
        line.append("\n")
    }

    private func formatJSON(_ event: LogEvent, error: (message: String, type: String)?,
                            _ entries: UnsafeMutableBufferPointer<MetadataEntry>, into line: inout LineBuffer) {
        line.append("{\"ts\":\"")
        line.appendTimestamp()
        line.append("\",\"level\":\"")
        line.appendRaw(event.level.rawValue)
        line.append("\",\"label\":")
        line.appendJSONString(label)
        line.append(",\"pid\":")
        line.appendDecimal(Int(currentProcessID()))
        line.append(",\"source\":")
        line.appendJSONString(event.source)
        if sourceLocation {
            line.append(",\"file\":")
            line.appendJSONString(event.file)
            line.append(",\"line\":")
            line.appendDecimal(UInt64(event.line))
        }
        line.append(",\"msg\":")
        line.appendJSONString(event.message.description)
        if let error {
            line.append(",\"error.message\":")
            line.appendJSONString(error.message)
            line.append(",\"error.type\":")
            line.appendJSONString(error.type)
        }
        for entry in entries {
            line.append(",")
            if withUTF8(of: entry.key, isReservedKey) { line.append("\"_") } else { line.append("\"") }
            line.appendEscaped(entry.key, quotes: true)
            line.append("\":")
            line.appendJSON(entry.value)
        }
        line.append("}\n")
    }
}

// MARK: - Metadata

/// One metadata key and value after merging.
struct MetadataEntry {
    var key: String
    var value: Logger.MetadataValue
}

/// Calls `body` with the metadata of one event, sorted by key: the handler's `metadata`, then
/// the provider's values over it, then the call site's over both (swift-log's order: the same
/// as `StreamLogHandler`). Up to a kilobyte of entries (about a dozen) live on the stack, so the
/// merge allocates nothing.
func withMergedMetadata<R>(base: Logger.Metadata, provided: Logger.Metadata?, explicit: Logger.Metadata?,
                           _ body: (UnsafeMutableBufferPointer<MetadataEntry>) -> R) -> R {
    let provided = provided.flatMap { $0.isEmpty ? nil : $0 }
    let explicit = explicit.flatMap { $0.isEmpty ? nil : $0 }
    let bound = base.count + (provided?.count ?? 0) + (explicit?.count ?? 0)
    if bound == 0 { return body(UnsafeMutableBufferPointer(start: nil, count: 0)) }

    func forEachMerged(_ add: (String, Logger.MetadataValue) -> Void) {
        if let explicit {
            for (key, value) in explicit { add(key, value) }
        }
        if let provided {
            for (key, value) in provided where explicit?[key] == nil { add(key, value) }
        }
        for (key, value) in base where explicit?[key] == nil && provided?[key] == nil { add(key, value) }
    }

    if bound * MemoryLayout<MetadataEntry>.stride <= 1024 {
        return withUnsafeTemporaryAllocation(of: MetadataEntry.self, capacity: bound) { storage in
            var count = 0
            forEachMerged { key, value in
                (storage.baseAddress! + count).initialize(to: MetadataEntry(key: key, value: value))
                count += 1
            }
            let entries = UnsafeMutableBufferPointer(rebasing: storage[..<count])
            defer { _ = entries.deinitialize() }
            sortByKey(entries)
            return body(entries)
        }
    }
    var array: [MetadataEntry] = []
    array.reserveCapacity(bound)
    forEachMerged { key, value in array.append(MetadataEntry(key: key, value: value)) }
    array.sort { $0.key < $1.key }
    return array.withUnsafeMutableBufferPointer { body($0) }
}

/// Insertion sort: the handful of entries an event carries, without a temporary buffer.
private func sortByKey(_ entries: UnsafeMutableBufferPointer<MetadataEntry>) {
    guard entries.count > 1 else { return }
    for i in 1..<entries.count {
        var j = i
        while j > 0 && entries[j].key < entries[j - 1].key {
            entries.swapAt(j, j - 1)
            j -= 1
        }
    }
}

/// The fields every line may carry. A metadata key equal to one of these, or to one of these
/// with leading underscores, is written with one more leading underscore (`level` as
/// `_level`, `_level` as `__level`): a line's own fields are never shadowed, and no two keys
/// of a line are equal.
let reservedKeys: [StaticString] = ["ts", "level", "label", "pid", "source", "file", "line", "msg",
                                    "error.message", "error.type"]

func isReservedKey(_ key: UnsafeBufferPointer<UInt8>) -> Bool {
    var rest = key[...]
    while rest.first == UInt8(ascii: "_") { rest = rest.dropFirst() }
    guard rest.count >= 2, rest.count <= 13 else { return false }
    for reserved in reservedKeys where reserved.utf8CodeUnitCount == rest.count {
        if UnsafeBufferPointer(start: reserved.utf8Start, count: reserved.utf8CodeUnitCount).elementsEqual(rest) {
            return true
        }
    }
    return false
}

extension LineBuffer {
    mutating func appendJSONString(_ text: String) {
        append(UInt8(ascii: "\""))
        appendEscaped(text, quotes: true)
        append(UInt8(ascii: "\""))
    }

    /// A metadata value as JSON: strings (and `stringConvertible` values, by their
    /// `description`) as strings, arrays as arrays, dictionaries as objects with sorted keys.
    mutating func appendJSON(_ value: Logger.MetadataValue) {
        switch value {
        case .string(let text):
            appendJSONString(text)
        case .stringConvertible(let convertible):
            appendJSONString(convertible.description)
        case .array(let values):
            append(UInt8(ascii: "["))
            for (i, element) in values.enumerated() {
                if i > 0 { append(UInt8(ascii: ",")) }
                appendJSON(element)
            }
            append(UInt8(ascii: "]"))
        case .dictionary(let dictionary):
            append(UInt8(ascii: "{"))
            for (i, (key, element)) in dictionary.sorted(by: { $0.key < $1.key }).enumerated() {
                if i > 0 { append(UInt8(ascii: ",")) }
                appendJSONString(key)
                append(UInt8(ascii: ":"))
                appendJSON(element)
            }
            append(UInt8(ascii: "}"))
        }
    }

    /// ` key=value` of a logfmt line (`quoted`) or a text line (values escaped, never quoted).
    /// Dictionaries are flattened into dotted keys (`http: [status: 200]` as `http.status=200`;
    /// an empty one as `key={}`); arrays are written as their JSON text.
    mutating func appendPair(key: String, _ value: Logger.MetadataValue, quoted: Bool) {
        switch value {
        case .string(let text):
            appendKey(key)
            appendValue(text, quoted: quoted)
        case .stringConvertible(let convertible):
            appendKey(key)
            appendValue(convertible.description, quoted: quoted)
        case .dictionary(let dictionary) where dictionary.isEmpty:
            appendKey(key)
            append("{}")
        case .dictionary(let dictionary):
            for (subkey, element) in dictionary.sorted(by: { $0.key < $1.key }) {
                appendPair(key: key + "." + subkey, element, quoted: quoted)
            }
        case .array:
            appendKey(key)
            if quoted {
                var json = LineBuffer(base: nil, capacity: 0)
                defer { free(json.base) }
                json.appendJSON(value)
                json.bytes.withMemoryRebound(to: UInt8.self) { appendLogfmtValue($0) }
            } else {
                appendJSON(value)
            }
        }
    }

    private mutating func appendKey(_ key: String) {
        append(UInt8(ascii: " "))
        let start = count
        appendLogfmtKey(key)
        if let base, isReservedKey(UnsafeBufferPointer(start: base + start, count: count - start)) {
            insert(UInt8(ascii: "_"), at: start)
        }
        append(UInt8(ascii: "="))
    }

    private mutating func appendValue(_ text: String, quoted: Bool) {
        if quoted {
            appendLogfmtValue(text)
        } else {
            appendEscaped(text, quotes: false)
        }
    }
}
