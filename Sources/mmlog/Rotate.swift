import ArgumentParser
import MMLog

struct Rotate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Rotate a log now, from outside its writers.",
        discussion: """
            Retires PATH's data file as PATH.<UTC time> (for example app.log.20261126T030405Z; \
            a second rotation in the same second gets -2, -3...), starts a new log at PATH, and \
            leaves the writers attached to the old one to move to the new one at their next \
            append: every record lands whole in exactly one file. The retired file is cut to its \
            records and its metadata removed once its last writer has moved on: it is then a \
            plain file. An empty log is not rotated.

            For cron, or logrotate's postrotate: when logrotate has already renamed PATH (to \
            PATH.1, say), this finishes the rotation: the metadata follows the data file's new \
            name and a new log starts at PATH. Use logrotate with nocopytruncate (copytruncate \
            would cut the file under the writers) and nocreate. --keep N removes the oldest \
            rotated files (by the naming above) beyond N.
            """)

    @Option(help: "Keep at most this many rotated files (by the PATH.<UTC time> naming); remove older ones.")
    var keep: Int?
    @Argument(help: "The log's data file.") var path: String

    func validate() throws {
        if let keep, keep < 0 { throw ValidationError("--keep takes a count, at least 0") }
    }

    func run() throws {
        let rotated = try tool { () throws(MMLogError) -> Bool in try MMLog.rotate(path: path, keepRotated: keep) }
        Output.print(rotated ? "\(path): rotated" : "\(path): nothing to rotate (the log is empty, or was just rotated)")
    }
}
