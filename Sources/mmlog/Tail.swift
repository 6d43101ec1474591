#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import MMLog

struct Tail: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a log's last lines, then follow it.",
        discussion: """
            Prints the last N committed lines of PATH, found by reading backwards from the \
            committed end a block at a time, so it costs what it prints. With -f, it then prints every new line \
            once, as soon as it is committed, and goes on through the last writer's close (a \
            trimmed file is not read again); lines are written straight to standard output with \
            no buffering, so a program reading the pipe (a log shipper) gets each at once. Only \
            whole lines are printed while following. With -F it also waits for PATH to appear, \
            and when the log is rotated (PATH becomes a new file), it finishes the old file and \
            follows the new one from its start.

            Reads only committed bytes (see `mmlog cat`) and drops NUL bytes, which no text line \
            holds. Changes nothing and takes no lock. Follows by polling the log's shared header \
            with a short backoff (up to 20 ms); writers make no extra system call for it.
            """)

    @Option(name: [.short, .customLong("lines")], help: "How many lines to print first (0: none).")
    var n = 10
    @Flag(name: .short, help: "Follow the log as it grows.") var f = false
    @Flag(name: .customShort("F"), help: "Follow by name: wait for PATH to appear, and follow a rotation.")
    var followName = false
    @Argument(help: "The log's data file.") var path: String

    func validate() throws {
        if n < 0 { throw ValidationError("-n takes a count of lines, at least 0") }
    }

    func run() throws {
        signal(SIGPIPE, SIG_DFL)
        var (reader, appeared) = try open(waiting: followName)
        if !(f || followName) { reader.deadWriterProbeDelay = 0 }
        var lines = LineBuffer()
        // A file that appeared while we waited is followed from its start, as tail -F does.
        var offset = appeared ? 0 : try printLastLines(reader, into: &lines)
        guard f || followName else {
            Output.write(lines.flush())
            return
        }
        while true {
            let (bytes, next) = try tool { () throws(MMLogError) in try reader.read(from: offset) }
            if !bytes.isEmpty || next != offset {
                Output.write(lines.add(bytes))
                offset = next
                continue
            }
            if followName, let successor = try rotated(from: reader, at: offset) {
                Output.write(lines.flush())
                reader = successor
                offset = 0
                continue
            }
            if !reader.hasMetadata, let again = try? MMLogReader(path: reader.path), again.hasMetadata,
               let was = reader.fileIdentity, let now = again.fileIdentity, was == now {
                reader = again  // its metadata arrived (a rename in progress, a creation): it is a log
                continue
            }
            if !reader.hasMetadata, let size = try? tool({ () throws(MMLogError) in try reader.committedOffset() }), size < offset {
                offset = 0  // a plain file truncated under us: start again, as tail does
                continue
            }
            _ = try tool { () throws(MMLogError) in
                try reader.waitForCommit(beyond: offset, timeoutNanoseconds: followName ? 200_000_000 : nil)
            }
        }
    }

    /// Opens PATH; with `waiting`, polls until it exists, and says whether it had to wait.
    private func open(waiting: Bool) throws -> (MMLogReader, appeared: Bool) {
        var waited = false
        while true {
            do {
                return (try MMLogReader(path: path), waited)
            } catch where waiting && error.kind == .notALog && error.errno == ENOENT {
                waited = true
                usleep(100_000)
            } catch {
                throw ToolError(error)
            }
        }
    }

    /// Prints the last `n` lines below the committed watermark and returns the offset to
    /// follow from. Finds where they start by reading blocks backwards from the watermark,
    /// then prints forwards from there: it reads at most one block more than twice what it
    /// prints, and holds one block (when following, a last line without a newline stays in
    /// `lines` until it is finished).
    private func printLastLines(_ reader: MMLogReader, into lines: inout LineBuffer) throws -> Int {
        let end = try tool { () throws(MMLogError) in try reader.committedOffset() }
        guard n > 0 else { return end }
        let block = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.blockSize, alignment: 16)
        defer { block.deallocate() }
        let following = f || followName
        func emit(_ bytes: UnsafeRawBufferPointer) {
            if following { Output.write(lines.add(bytes)) } else { Output.writeDroppingNULs(bytes) }
        }
        var search = LastLinesSearch(lines: n)
        var blockEnd = end
        var printFrom = 0
        while blockEnd > 0 {
            let blockStart = max(0, blockEnd - Self.blockSize)
            let bytes = try Self.read(reader, blockStart..<blockEnd, into: block)
            if let cut = search.start(in: bytes) {
                emit(UnsafeRawBufferPointer(rebasing: bytes[cut...]))
                printFrom = blockEnd
                break
            }
            blockEnd = blockStart
        }
        while printFrom < end {
            let blockEnd = min(end, printFrom + Self.blockSize)
            emit(try Self.read(reader, printFrom..<blockEnd, into: block))
            printFrom = blockEnd
        }
        return end
    }

    /// How much `printLastLines` reads at a time: GNU tail's buffer is 8 KiB; 64 KiB makes a
    /// 32 MiB file 512 preads each way.
    static let blockSize = 1 << 16

    /// The committed bytes of `range` (holes skipped), read into `buffer`, which holds at
    /// least `range.count` bytes.
    private static func read(_ reader: MMLogReader, _ range: Range<Int>, into buffer: UnsafeMutableRawBufferPointer) throws -> UnsafeRawBufferPointer {
        var position = range.lowerBound, filled = 0
        while position < range.upperBound {
            let rest = UnsafeMutableRawBufferPointer(rebasing: buffer[filled...])
            let (count, next) = try tool { () throws(MMLogError) in try reader.read(from: position, upTo: range.upperBound, into: rest) }
            filled += count
            if next == position { break }
            position = next
        }
        return UnsafeRawBufferPointer(rebasing: buffer[..<filled])
    }

    /// With -F: when the file being read is finished (retired and read to its end, or no
    /// writer attached and read to its end) and PATH is now another file, the reader of the
    /// file that came next: the oldest rotated file newer than this one (rotations may come
    /// faster than a reader), else the file at PATH.
    private func rotated(from reader: MMLogReader, at offset: Int) throws -> MMLogReader? {
        guard let identity = reader.fileIdentity, let directory = try? LogDirectory(of: path) else { return nil }
        guard let atPath = directory.identity(of: LogDirectory.name(of: path)) else { return nil }
        if atPath.device == identity.device && atPath.inode == identity.inode { return nil }
        let finished: Bool
        if let retiredAt = reader.retiredAt {
            finished = try tool { () throws(MMLogError) in try reader.committedOffset() } >= retiredAt && offset >= retiredAt
        } else {
            finished = try !tool { () throws(MMLogError) in try reader.writersAttached() }
        }
        guard finished else { return nil }
        // The rotated file after this one, if there is one now; else PATH. Choosing PATH and
        // opening it are two steps: a rotation between them renamed the file at PATH away, and
        // the reader opened the one after it, skipping a whole file (the nemesis, with writers
        // rotating every 300 KB). So once PATH is open, look again for a rotated file after ours.
        func next() -> String? {
            let sequence = Self.filesInOrder(path, in: directory)
            let identities = sequence.map { directory.identity(of: LogDirectory.name(of: $0)) }
            guard let position = identities.firstIndex(where: { $0?.device == identity.device && $0?.inode == identity.inode }),
                  position + 1 < sequence.count - 1 else { return nil }
            return sequence[position + 1]
        }
        for _ in 0..<100 {
            if let rotated = next() { return Self.openAfterRename(rotated) }
            let opened = Self.openAfterRename(path)
            if next() == nil { return opened }
        }
        return Self.openAfterRename(path)
    }

    /// A reader of `file`. A rotation renames a data file, then its metadata: a reader that
    /// came in between would take a live file for a plain one and read it to its size, zeros
    /// and half-copied records included (torn and missed lines). So a file found without
    /// metadata is opened again until its metadata appears (for 100 ms; a finished rotated
    /// file, which has none, is plain).
    static func openAfterRename(_ file: String) -> MMLogReader? {
        var reader = try? MMLogReader(path: file)
        for _ in 0..<20 where reader.map({ !$0.hasMetadata }) ?? true {
            usleep(5_000)
            reader = (try? MMLogReader(path: file)) ?? reader
        }
        return reader
    }

    /// The log's files oldest first: rotated ones by their names (PATH.<UTC time>[-N], or
    /// logrotate's PATH.N, highest first), then PATH. Only files the log may have rotated
    /// (`Rotation.mayBeRotated`: owner, links, no future stamp): a look-alike name another
    /// user planted is never read as part of the log.
    static func filesInOrder(_ path: String, in directory: LogDirectory) -> [String] {
        let base = LogDirectory.name(of: path)
        var stamped: [(String, Int, String)] = [], numbered: [(Int, String)] = []
        for name in directory.names() {
            guard name.hasPrefix(base + "."), !name.hasSuffix(".mmlog"), Rotation.mayBeRotated(name, of: path, in: directory) else { continue }
            let full = LogDirectory.sibling(of: path, named: name)
            let suffix = name.dropFirst(base.count + 1)
            if let n = Int(suffix) {
                numbered.append((n, full))
            } else if suffix.count >= 16, suffix.dropFirst(15).first == "Z" {
                let parts = suffix.split(separator: "-")
                stamped.append((String(parts[0]), parts.count > 1 ? Int(parts[1]) ?? 1 : 1, full))
            }
        }
        return numbered.sorted { $0.0 > $1.0 }.map(\.1) + stamped.sorted { ($0.0, $0.1) < ($1.0, $1.1) }.map(\.2) + [path]
    }
}

/// Where the last `lines` lines of a text start, from its blocks read last to first. A line
/// ends after each newline; a newline that is the text's last byte (NUL bytes aside, which
/// are never printed) ends the last line rather than starting an empty one; a last line
/// without a newline is a line; a carriage return is an ordinary byte. Finds each newline
/// with memchr, so a block costs one pass, or two for the block where the lines start.
struct LastLinesSearch {
    let lines: Int
    /// Newlines counted in the blocks after the current one.
    private var newlinesAfter = 0
    /// Whether a byte other than NUL has been seen (the text's last byte is behind us).
    private var sawLastByte = false

    init(lines: Int) { self.lines = lines }

    /// Given the block before the ones seen so far, the index in it where the last `lines`
    /// lines start; nil when they start further back (or the block is the text's first and
    /// they are all of it: the caller prints from the start).
    mutating func start(in block: UnsafeRawBufferPointer) -> Int? {
        var limit = block.count
        if !sawLastByte {
            while limit > 0 && block[limit - 1] == 0 { limit -= 1 }
            guard limit > 0 else { return nil }
            sawLastByte = true
            if block[limit - 1] == 0x0A { limit -= 1 }
        }
        var found = 0
        var i = 0
        while let newline = Self.newline(in: block, from: i, before: limit) {
            found += 1
            i = newline + 1
        }
        let wanted = lines - newlinesAfter  // the wanted-th newline from the block's end
        if found < wanted {
            newlinesAfter += found
            return nil
        }
        var skip = found - wanted  // newlines before the one the lines start after
        i = 0
        while let newline = Self.newline(in: block, from: i, before: limit) {
            if skip == 0 { return newline + 1 }
            skip -= 1
            i = newline + 1
        }
        preconditionFailure("counted \(found) newlines, then found fewer")
    }

    private static func newline(in block: UnsafeRawBufferPointer, from i: Int, before limit: Int) -> Int? {
        guard i < limit, let base = block.baseAddress, let found = memchr(base + i, 0x0A, limit - i) else { return nil }
        return base.distance(to: UnsafeRawPointer(found))
    }
}
