import ArgumentParser
import Foundation
import MMLog

struct Stat: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a log's shared state.",
        discussion: """
            Reads PATH.mmlog (read-only, no lock: it never delays a writer) and prints the format \
            version, chunk size, cursor (where the next record goes), committed watermark (every \
            byte below it is final), durable point (every byte below it is on the device), the \
            allocated and actual sizes of the data file, the attached handles with their pids, \
            each writer slot (live or dead, idle or in flight), the holes readers skip, and whether \
            the last close was clean. A slot or handle is "dead" when its process is gone; the \
            next process to open the log alone recovers it. With --json, one JSON object.
            """)

    @Flag(help: "Print one JSON object instead of text.") var json = false
    @Argument(help: "The log's data file.") var path: String

    func run() throws {
        let reader = try tool { () throws(MMLogError) in try MMLogReader(path: path) }
        reader.deadWriterProbeDelay = 0
        let status = try tool { () throws(MMLogError) in try reader.status() }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            Output.print(String(decoding: try encoder.encode(status), as: UTF8.self))
            return
        }
        Output.print(Self.text(status))
    }

    static func text(_ s: MMLogStatus) -> String {
        func row(_ name: String, _ value: String) -> String {
            name.padding(toLength: 18, withPad: " ", startingAt: 0) + value
        }
        var lines: [String] = []
        lines.append(row("data file", "\(s.path) (\(s.dataFileSize) bytes)"))
        if s.formatVersion == 0 {
            lines.append(row("metadata", "none: a plain file, read up to its size"))
            return lines.joined(separator: "\n")
        }
        lines.append(row("metadata", "\(s.metadataPath) (format version \(s.formatVersion))"))
        lines.append(row("chunk size", "\(s.chunkSize)"))
        lines.append(row("cursor", "\(s.cursor) (generation \(s.generation)\(s.sealed ? ", sealed by a trim" : ""))"))
        lines.append(row("committed", "\(s.committed)" + (s.committed < s.cursor ? " (\(s.cursor - s.committed) bytes reserved, not yet written)" : "")))
        lines.append(row("durable", "\(s.durable)"))
        lines.append(row("allocated", "\(s.allocated)"))
        if let retiredAt = s.retiredAt { lines.append(row("retired", "by a rotation, at \(retiredAt)")) }
        lines.append(row("attached", s.writersAttached ? "yes, \(s.handles.filter(\.alive).count) handle(s) listed" : "no"))
        lines.append(row("last close clean", s.writersAttached ? "- (attached)" : (s.lastCloseClean ? "yes" : "no: a writer ended without closing; the next opener recovers")))
        for handle in s.handles {
            let opened = Date(timeIntervalSince1970: TimeInterval(handle.openedAt))
            lines.append(row("  handle", "pid \(handle.pid), opened \(ISO8601DateFormatter().string(from: opened))\(handle.alive ? "" : ", DEAD")"))
        }
        lines.append(row("writers", "\(s.liveWriters) live, \(s.deadWriters) dead in flight, \(s.writers.count) slot(s) used"))
        for w in s.writers {
            let what: String
            switch w.state {
            case "idle": what = "idle, last append ended at \(w.offset)"
            case "in flight": what = "in flight [\(w.offset), \(w.end ?? w.offset))"
            default: what = "reserving (at or after \(w.offset))"
            }
            lines.append(row("  slot \(w.slot)", "pid \(w.pid) tid \(w.tid): \(what)\(w.alive ? "" : (w.state == "idle" ? " (process gone)" : ", DEAD"))"))
        }
        let holeBytes = s.holes.reduce(0) { $0.addingReportingOverflow(max(0, $1[1] - $1[0])).partialValue }
        lines.append(row("holes", "\(s.holes.count) (\(holeBytes) bytes)\(s.holesDropped > 0 ? ", \(s.holesDropped) not recorded (table full)" : "")"))
        for hole in s.holes.prefix(20) { lines.append(row("", "[\(hole[0]), \(hole[1]))")) }
        if s.holes.count > 20 { lines.append(row("", "... \(s.holes.count - 20) more (--json lists all)")) }
        lines.append(row("syncs", "\(s.syncCalls) call(s), \(s.flushes) device flush(es)"))
        lines.append(row("recoveries", "\(s.recoveries); rotations: \(s.rotations)"))
        lines.append(row("header", s.headerIsLive ? "live (records this data file and this boot)"
                                                  : "stale (another file or an earlier boot): the next opener alone recovers from the data file"))
        return lines.joined(separator: "\n")
    }
}
