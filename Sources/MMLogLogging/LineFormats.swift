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
// In text and logfmt every value (and text's label, source and file) is bare or quoted as
// `appendLogfmtValue` decides, so none reads as more pairs; text's message, last, is bare
// unless it could read as a pair (`appendTextMessage`).
//
// An attached error adds the keys `error.message` (its description) and `error.type` (its
// fully qualified type), swift-log's names for them, ahead of the metadata.

extension MMLogHandler {
    /// Formats `event` (with `provided`, the metadata provider's values) as one line in
    /// `scratch.line`.
    func format(_ event: LogEvent, provided: Logger.Metadata?, into scratch: inout Scratch) {
        let error = event.error.map { error in (message: "\(error)", type: String(reflecting: type(of: error))) }
        let entries = mergeMetadata(base: metadata, provided: provided, explicit: event.metadata, into: &scratch)
        defer { _ = entries.deinitialize() }
        switch format {
        case .text: formatText(event, error: error, entries, into: &scratch.line, &scratch.seconds)
        case .logfmt: formatLogfmt(event, error: error, entries, into: &scratch.line, &scratch.seconds)
        case .json: formatJSON(event, error: error, entries, into: &scratch.line, &scratch.seconds)
        }
    }

    private func formatText(_ event: LogEvent, error: (message: String, type: String)?,
                            _ entries: UnsafeMutableBufferPointer<MetadataEntry>, into line: inout LineBuffer,
                            _ seconds: inout SecondCache) {
        line.appendTimestamp(&seconds)
        line.append(" ")
        line.appendRaw(event.level.rawValue)
        line.append(" ")
        line.appendLogfmtValue(label)
        line.append("[")
        line.appendDecimal(Int(currentProcessID()))
        line.append("] ")
        line.appendLogfmtValue(event.source)
        if sourceLocation {
            line.append(" ")
            line.appendLogfmtValue(event.file)
            line.append(":")
            line.appendDecimal(UInt64(event.line))
        }
        line.append(" :")
        if let error {
            line.append(" error.message=")
            line.appendLogfmtValue(error.message)
            line.append(" error.type=")
            line.appendLogfmtValue(error.type)
        }
        for i in entries.indices {
            line.appendPair(key: entries[i].key, entries[i].value)
        }
        line.append(" ")
        line.appendTextMessage(event.message.description)
        line.append("\n")
    }

    private func formatLogfmt(_ event: LogEvent, error: (message: String, type: String)?,
                              _ entries: UnsafeMutableBufferPointer<MetadataEntry>, into line: inout LineBuffer,
                            _ seconds: inout SecondCache) {
        line.append("ts=")
        line.appendTimestamp(&seconds)
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
        for i in entries.indices {
            line.appendPair(key: entries[i].key, entries[i].value)
        }
        line.append("\n")
    }

    private func formatJSON(_ event: LogEvent, error: (message: String, type: String)?,
                            _ entries: UnsafeMutableBufferPointer<MetadataEntry>, into line: inout LineBuffer,
                            _ seconds: inout SecondCache) {
        line.append("{\"ts\":\"")
        line.appendTimestamp(&seconds)
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
        for i in entries.indices {
            line.append(",")
            if withUTF8(of: entries[i].key, isReservedKey) { line.append("\"_") } else { line.append("\"") }
            line.appendEscaped(entries[i].key, quotes: true)
            line.append("\":")
            line.appendJSON(entries[i].value)
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

/// The metadata of one event, sorted by key, in the scratch's entry storage (initialized:
/// the caller deinitializes them): the handler's `metadata`, then the provider's values over
/// it, then the call site's over both (swift-log's order, the same as `StreamLogHandler`'s).
/// The storage is the thread's, so merging allocates nothing once it is big enough.
func mergeMetadata(base: Logger.Metadata, provided: Logger.Metadata?, explicit: Logger.Metadata?,
                   into scratch: inout Scratch) -> UnsafeMutableBufferPointer<MetadataEntry> {
    let provided = provided.flatMap { $0.isEmpty ? nil : $0 }
    let explicit = explicit.flatMap { $0.isEmpty ? nil : $0 }
    let bound = base.count + (provided?.count ?? 0) + (explicit?.count ?? 0)
    guard bound > 0 else { return UnsafeMutableBufferPointer(start: nil, count: 0) }
    guard let storage = scratch.entryStorage(bound) else {
        scratch.line.fail()
        return UnsafeMutableBufferPointer(start: nil, count: 0)
    }
    var count = 0
    if let explicit {
        for (key, value) in explicit {
            (storage + count).initialize(to: MetadataEntry(key: key, value: value))
            count += 1
        }
    }
    if let provided {
        for (key, value) in provided where explicit?[key] == nil {
            (storage + count).initialize(to: MetadataEntry(key: key, value: value))
            count += 1
        }
    }
    for (key, value) in base where explicit?[key] == nil && provided?[key] == nil {
        (storage + count).initialize(to: MetadataEntry(key: key, value: value))
        count += 1
    }
    let entries = UnsafeMutableBufferPointer(start: storage, count: count)
    sortByKey(entries)
    return entries
}

/// Insertion sort for the handful of entries an event carries (no temporary buffer); the
/// standard library's sort beyond that.
private func sortByKey(_ entries: UnsafeMutableBufferPointer<MetadataEntry>) {
    guard entries.count > 1 else { return }
    if entries.count > 32 {
        var entries = entries
        return entries.sort { $0.key < $1.key }
    }
    for i in 1..<entries.count {
        var j = i
        while j > 0 && entries[j].key < entries[j - 1].key {
            entries.swapAt(j, j - 1)
            j -= 1
        }
    }
}

/// Whether a key is one of the fields a line may carry (`ts`, `level`, `label`, `pid`,
/// `source`, `file`, `line`, `msg`, `error.message`, `error.type`), perhaps behind leading
/// underscores. Such a metadata key is written with one more leading underscore (`level` as
/// `_level`, `_level` as `__level`): a line's own fields are never shadowed, and no two keys
/// of a line are equal.
func isReservedKey(_ key: UnsafeBufferPointer<UInt8>) -> Bool {
    guard let p = key.baseAddress else { return false }
    var start = 0
    while start < key.count && p[start] == UInt8(ascii: "_") { start += 1 }
    let rest = p + start, count = key.count - start
    func equals(_ name: StaticString) -> Bool { memcmp(rest, name.utf8Start, count) == 0 }
    switch count {
    case 2: return equals("ts")
    case 3: return equals("pid") || equals("msg")
    case 4: return equals("file") || equals("line")
    case 5: return equals("level") || equals("label")
    case 6: return equals("source")
    case 10: return equals("error.type")
    case 13: return equals("error.message")
    default: return false
    }
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

    /// ` key=value` of a logfmt or text line, the value quoted when it must be (see
    /// `appendLogfmtValue`), so that no value reads as more pairs. Dictionaries are flattened
    /// into dotted keys (`http: [status: 200]` as `http.status=200`; an empty one as
    /// `key={}`); arrays are written as their JSON text, quoted.
    mutating func appendPair(key: String, _ value: Logger.MetadataValue) {
        switch value {
        case .string(let text):
            appendKey(key)
            appendLogfmtValue(text)
        case .stringConvertible(let convertible):
            appendKey(key)
            appendLogfmtValue(convertible.description)
        case .dictionary(let dictionary) where dictionary.isEmpty:
            appendKey(key)
            append("{}")
        case .dictionary(let dictionary):
            for (subkey, element) in dictionary.sorted(by: { $0.key < $1.key }) {
                appendPair(key: key + "." + subkey, element)
            }
        case .array:
            appendKey(key)
            var json = LineBuffer(base: nil, capacity: 0)
            defer { free(json.base) }
            json.appendJSON(value)
            json.bytes.withMemoryRebound(to: UInt8.self) { appendLogfmtValue($0) }
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
}
