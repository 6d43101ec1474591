#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import MMLog

struct Append: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Append the lines of standard input to a log, one record each.",
        discussion: """
            Reads standard input until its end and appends every line, with its newline, as one \
            record of PATH (created if missing), as logger and systemd-cat send each line of their \
            input to syslog and the journal:

                myjob 2>&1 | mmlog append /var/log/jobs.log

            Any number of mmlog append processes, and other MMLog writers, may append to one log at \
            once: every line lands whole and once, and one input's lines stay in their order. A \
            last line without a newline gets one.

            A line longer than --max-line bytes (its newline counted) is split, not refused, as \
            systemd-cat splits at journald's LineMax: each piece (one byte less than \
            --max-line) is appended as a record of its own with a newline added, and the rest of \
            the line follows. Nothing is dropped.

            --sync makes the lines durable: after appending the lines of each read from standard \
            input, and before reading more, it runs MMLog's sync() (fdatasync, shared with the \
            log's other writers). A line is then on the device before mmlog append takes in \
            anything after it; lines that arrive together share one flush. Without --sync the \
            lines are in the file (every reader sees them) and reach the device with the page \
            cache's writeback, as write(2)'s do.

            Prints nothing. Exit status 0 at the end of input, 1 when the log cannot be opened or \
            a line cannot be appended (the message names the file and the operation; lines before \
            it are in the log), 64 on bad arguments.
            """)

    @Flag(help: "Make the lines durable after each read from standard input, before reading more.")
    var sync = false
    @Option(name: .customLong("max-line"), help: ArgumentHelp(
        "Longest record, in bytes with its newline; a longer line is split into records of this size.", valueName: "BYTES"))
    var maxLine = 65536
    @Argument(help: "The log's data file.") var path: String

    static let largestMaxLine = 16 << 20

    func validate() throws {
        if maxLine < 2 || maxLine > Self.largestMaxLine {
            throw ValidationError("--max-line takes 2 to \(Self.largestMaxLine) bytes (a byte of the line and its newline)")
        }
    }

    func run() throws {
        let log = try tool { () throws(MMLogError) -> MMLog in try MMLog(path: path) }
        defer { try? log.close() }
        var splitter = LineSplitter(maxLine: maxLine)
        defer { splitter.deallocate() }
        let append = { (record: UnsafeRawBufferPointer) throws in
            _ = try tool { () throws(MMLogError) -> Int in try log.append(record) }
        }
        while try splitter.read(from: 0) {
            try splitter.appendLines(append)
            if sync { try tool { () throws(MMLogError) in try log.sync() } }
        }
        try splitter.appendRest(append)
        if sync { try tool { () throws(MMLogError) in try log.sync() } }
        try tool { () throws(MMLogError) in try log.close() }
    }
}

/// Standard input cut into records: whole lines of at most `maxLine` bytes (newline included),
/// longer lines in pieces of `maxLine - 1` bytes plus a newline, a last line given its newline.
/// One buffer; a line is appended straight from it unless it needs a newline added.
struct LineSplitter {
    let maxLine: Int
    private let buffer: UnsafeMutableRawBufferPointer
    /// A piece with a newline added.
    private let piece: UnsafeMutableRawBufferPointer
    /// Unconsumed input: buffer[start..<end].
    private var start = 0, end = 0

    init(maxLine: Int) {
        self.maxLine = maxLine
        buffer = .allocate(byteCount: max(2 * maxLine, 1 << 16), alignment: 16)
        piece = .allocate(byteCount: maxLine, alignment: 16)
    }

    func deallocate() {
        buffer.deallocate()
        piece.deallocate()
    }

    /// Reads what `fd` has (at least a byte, or its end); false at the end of input.
    /// The corresponding C function is `read`.
    mutating func read(from fd: Int32) throws -> Bool {
        if start > 0 {
            // Keep the partial line at the front: there is then room for more than a whole line.
            (buffer.baseAddress! + 0).copyMemory(from: buffer.baseAddress! + start, byteCount: end - start)
            end -= start
            start = 0
        }
        while true {
            let n = Glibc.read(fd, buffer.baseAddress! + end, buffer.count - end)
            if n > 0 {
                end += n
                return true
            }
            if n == 0 { return false }
            if errno != EINTR { throw ToolError("read(standard input): \(String(cString: strerror(errno)))") }
        }
    }

    /// Appends every whole line read so far, and the pieces of a line too long to wait for.
    mutating func appendLines(_ append: (UnsafeRawBufferPointer) throws -> Void) throws {
        while start < end {
            let rest = end - start
            let found = memchr(buffer.baseAddress! + start, 0x0A, rest)
            let length = found.map { $0 - (buffer.baseAddress! + start) + 1 } ?? rest
            if length <= maxLine && found != nil {
                try append(UnsafeRawBufferPointer(rebasing: buffer[start..<start + length]))
                start += length
            } else if length > maxLine || rest >= maxLine {
                try appendPiece(append)
            } else {
                return  // a partial line: wait for the rest of it
            }
        }
    }

    /// At the end of input: the last line, without a newline, gets one.
    mutating func appendRest(_ append: (UnsafeRawBufferPointer) throws -> Void) throws {
        try appendLines(append)
        while start < end { try appendPiece(append) }
    }

    /// Appends the first `maxLine - 1` bytes of the unconsumed input (fewer at its end) with a
    /// newline added.
    private mutating func appendPiece(_ append: (UnsafeRawBufferPointer) throws -> Void) throws {
        let length = min(maxLine - 1, end - start)
        piece.baseAddress!.copyMemory(from: buffer.baseAddress! + start, byteCount: length)
        piece[length] = 0x0A
        try append(UnsafeRawBufferPointer(rebasing: piece[0...length]))
        start += length
    }
}
