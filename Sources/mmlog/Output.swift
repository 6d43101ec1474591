#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import MMLog

/// Writes bytes to standard output at once, with write(2): no buffering, so a pipe reader
/// (a log shipper) sees each line as soon as it is written. A closed pipe ends the program
/// quietly, as it does for cat and tail.
enum Output {
    static func write(_ bytes: UnsafeRawBufferPointer) {
        var done = 0
        while done < bytes.count {
            let n = Glibc.write(1, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EPIPE { exit(0) }
                printError("mmlog: write(standard output): \(String(cString: strerror(errno)))")
                exit(1)
            }
            done += n
        }
    }

    static func write(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { write($0) }
    }

    /// Writes `bytes` without their NUL bytes (which no text line holds; see `LineBuffer`).
    static func writeDroppingNULs(_ bytes: UnsafeRawBufferPointer) {
        forEachRunWithoutNULs(bytes) { write($0) }
    }

    static func print(_ text: String) {
        write(Array((text + "\n").utf8))
    }
}

/// A line to standard error with one write(2).
func printError(_ message: String) {
    let line = Array((message + "\n").utf8)
    _ = line.withUnsafeBytes { Glibc.write(2, $0.baseAddress, $0.count) }
}

/// An MMLogError as a command-line failure: the message names the file and operation.
struct ToolError: Error, CustomStringConvertible {
    var description: String
    init(_ error: MMLogError) {
        if error.kind == .notALog && error.errno == ENOENT {
            description = "\(error.operation.split(separator: "(").last.map { String($0.dropLast()) } ?? error.operation): no such file"
        } else {
            description = "\(error)"
        }
    }
    init(_ message: String) { description = message }
}

/// Runs `body`, turning an MMLogError into a ToolError (exit status 1, message on stderr).
func tool<T>(_ body: () throws(MMLogError) -> T) throws -> T {
    do {
        return try body()
    } catch {
        throw ToolError(error)
    }
}

/// Splits committed bytes into whole lines for a line-oriented command: keeps an unfinished
/// last line until its newline arrives, and drops NUL bytes (a text line never holds one;
/// the only NULs a reader returns are the zeros of a writer killed in the instant between
/// reserving its range and recording it, or of bytes a machine crash never wrote).
struct LineBuffer {
    private(set) var pending: [UInt8] = []

    /// Appends `bytes`; returns the whole lines they complete. Looks for a newline only in
    /// `bytes`, so a long unfinished line costs no search again at each call.
    mutating func add(_ bytes: UnsafeRawBufferPointer) -> [UInt8] {
        let searchFrom = pending.count
        forEachRunWithoutNULs(bytes) { pending.append(contentsOf: $0) }
        let lastNewline = pending.withUnsafeBytes { all -> Int? in
            var last: Int?
            var i = searchFrom
            while i < all.count, let found = memchr(all.baseAddress! + i, 0x0A, all.count - i) {
                i = all.baseAddress!.distance(to: UnsafeRawPointer(found)) + 1
                last = i - 1
            }
            return last
        }
        guard let lastNewline else { return [] }
        let lines = Array(pending[...lastNewline])
        pending.removeSubrange(...lastNewline)
        return lines
    }

    mutating func add(_ bytes: [UInt8]) -> [UInt8] {
        bytes.withUnsafeBytes { add($0) }
    }

    /// Whatever is left, e.g. a last line without a newline when a file is finished.
    mutating func flush() -> [UInt8] {
        defer { pending = [] }
        return pending
    }
}

/// Calls `body` with each run of `bytes` between NUL bytes (memchr finds them).
func forEachRunWithoutNULs(_ bytes: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) -> Void) {
    guard let base = bytes.baseAddress else { return }
    var start = 0
    while start < bytes.count {
        let nul = memchr(base + start, 0, bytes.count - start).map { base.distance(to: UnsafeRawPointer($0)) } ?? bytes.count
        if nul > start { body(UnsafeRawBufferPointer(start: base + start, count: nul - start)) }
        start = nul + 1
    }
}
