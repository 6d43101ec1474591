// The library's entry points as child processes (`mmlog-fuzz --child open|reader --dir D`):
// the same shape as an `mmlog` command (committed bytes on stdout; exit 1 with the error on
// stderr), so every run is judged the same way.
#if canImport(Glibc)
import Glibc
#endif
import MMLog
import ToolSupport

/// Runs one entry point on the log at `path` and exits: 0 when it worked, 1 with
/// "kind<TAB>error" on stderr when it threw.
func runEntryPoint(_ name: String, path: String) -> Never {
    var step = name
    do throws(MMLogError) {
        switch name {
        case "open":
            step = "MMLog(path:)"
            let log = try MMLog(path: path)
            step = "append"
            _ = try log.append("appended after the corruption\n")
            step = "close"
            try log.close()
        case "reader":
            step = "MMLogReader(path:)"
            let reader = try MMLogReader(path: path)
            reader.deadWriterProbeDelay = 0  // one look, as `mmlog cat`: a dead writer is not waited for
            step = "committedOffset"
            let end = try reader.committedOffset()
            var offset = 0
            step = "read"
            while offset < end {
                let (bytes, next) = try reader.read(from: offset, upTo: end)
                writeAll(bytes, to: 1)
                if next == offset { break }
                offset = next
            }
            step = "holes"
            _ = try reader.holes()
            step = "status"
            _ = try reader.status()
            _ = reader.retiredAt
        default:
            fail("unknown --child \(name)")
        }
    } catch {
        writeStandardError("\(error.kind)\t\(step): \(error)\n")
        _exit(1)
    }
    _exit(0)
}

/// Writes every byte to `fd` (raw: a record may hold any byte).
func writeAll(_ bytes: [UInt8], to fd: Int32) {
    bytes.withUnsafeBytes { buffer in
        var done = 0
        while done < buffer.count {
            let n = retryingInterrupts { write(fd, buffer.baseAddress! + done, buffer.count - done) }
            if n <= 0 { return }
            done += n
        }
    }
}
