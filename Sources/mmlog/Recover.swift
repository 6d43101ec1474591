import ArgumentParser
import Foundation
import MMLog

struct Recover: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Recover a log left unclean, and report what was found.",
        discussion: """
            Runs, explicitly, the recovery the next process to open PATH alone would run: \
            finishes a trim a dead process left half done, records the ranges of writers that \
            died mid-append as holes, gives back reservations above the allocated end, keeps \
            bytes another program appended, and, when PATH.mmlog is stale (the machine crashed, \
            or the files were copied), resumes after the last data that reached the disk, \
            recording ranges that never did as holes. It never overwrites or removes a record. \
            Then it closes the log cleanly (trimmed to its records). Refuses while any writer is \
            attached. A file without PATH.mmlog is left as it is. Prints what it found; --json \
            prints it as one JSON object.
            """)

    @Flag(help: "Print one JSON object instead of text.") var json = false
    @Argument(help: "The log's data file.") var path: String

    func run() throws {
        let report = try tool { () throws(MMLogError) in try MMLog.recover(path: path) }
        if json {
            let object: [String: Any] = [
                "path": report.path, "repaired": report.repaired, "found": report.found,
                "cursorBefore": report.cursorBefore, "cursorAfter": report.cursorAfter,
                "deadWriters": report.deadWriters, "headerWasStale": report.headerWasStale,
                "holesRecorded": report.holesRecorded.map { [$0.lowerBound, $0.upperBound] },
            ]
            let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
            Output.print(String(decoding: data, as: UTF8.self))
            return
        }
        if !report.repaired {
            Output.print("\(path): clean, nothing to recover (the next record goes to \(report.cursorAfter))")
            return
        }
        Output.print("\(path): recovered")
        for finding in report.found { Output.print("  - \(finding)") }
        Output.print("  cursor \(report.cursorBefore) -> \(report.cursorAfter)")
        if !report.holesRecorded.isEmpty {
            Output.print("  holes recorded: " + report.holesRecorded.map { "[\($0.lowerBound), \($0.upperBound))" }.joined(separator: " "))
        }
    }
}
