#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import MMLog

struct Tail: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a log's last lines, then follow it.",
        discussion: """
            Prints the last N committed lines of PATH. With -f, it then prints every new line \
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

    /// Prints the last `n` lines below the committed watermark (a final line without a
    /// newline stays in `lines` until it is finished); returns the offset to follow from.
    private func printLastLines(_ reader: MMLogReader, into lines: inout LineBuffer) throws -> Int {
        let end = try tool { () throws(MMLogError) in try reader.committedOffset() }
        guard n > 0 else { return end }
        var start = end
        var tail: [UInt8] = []
        while start > 0 && tail.lazy.filter({ $0 == 0x0A }).count <= n {
            let from = max(0, start - (1 << 16))
            var window: [UInt8] = []
            var position = from
            while position < start {
                let (bytes, next) = try tool { () throws(MMLogError) in try reader.read(from: position, upTo: start) }
                window += bytes
                if next == position { break }
                position = next
            }
            tail = window + tail
            start = from
        }
        // Keep the last n lines: the bytes after the (n+1)-th newline from the end, not
        // counting a newline that ends the text.
        var newlines = 0
        var cut = 0
        for i in stride(from: tail.count - 1, through: 0, by: -1) where tail[i] == 0x0A {
            if i == tail.count - 1 { continue }
            newlines += 1
            if newlines == n { cut = i + 1; break }
        }
        Output.write(lines.add(Array(tail[cut...])))
        return end
    }

    /// With -F: when the file being read is finished (retired and read to its end, or no
    /// writer attached and read to its end) and PATH is now another file, the reader of the
    /// file that came next: the oldest rotated file newer than this one (rotations may come
    /// faster than a reader), else the file at PATH.
    private func rotated(from reader: MMLogReader, at offset: Int) throws -> MMLogReader? {
        guard let identity = reader.fileIdentity else { return nil }
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        if UInt64(st.st_dev) == identity.device && UInt64(st.st_ino) == identity.inode { return nil }
        let finished: Bool
        if let retiredAt = reader.retiredAt {
            finished = try tool { () throws(MMLogError) in try reader.committedOffset() } >= retiredAt && offset >= retiredAt
        } else {
            finished = try !tool { () throws(MMLogError) in try reader.writersAttached() }
        }
        guard finished else { return nil }
        let sequence = Self.filesInOrder(path)
        let identities = sequence.map { name -> (UInt64, UInt64)? in
            var info = stat()
            return stat(name, &info) == 0 ? (UInt64(info.st_dev), UInt64(info.st_ino)) : nil
        }
        if let position = identities.firstIndex(where: { $0?.0 == identity.device && $0?.1 == identity.inode }),
           position + 1 < sequence.count {
            return try? MMLogReader(path: sequence[position + 1])
        }
        return try? MMLogReader(path: path)
    }

    /// The log's files oldest first: rotated ones by their names (PATH.<UTC time>[-N], or
    /// logrotate's PATH.N, highest first), then PATH.
    static func filesInOrder(_ path: String) -> [String] {
        let slash = path.lastIndex(of: "/")
        let directory = slash.map { String(path[..<$0]) } ?? "."
        let base = slash.map { String(path[path.index(after: $0)...]) } ?? path
        guard let dir = opendir(directory.isEmpty ? "/" : directory) else { return [path] }
        defer { closedir(dir) }
        var stamped: [(String, Int, String)] = [], numbered: [(Int, String)] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard name.hasPrefix(base + "."), !name.hasSuffix(".mmlog") else { continue }
            let full = (slash == nil ? "" : directory + "/") + name
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
