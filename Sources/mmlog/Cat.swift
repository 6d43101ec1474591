import ArgumentParser
import MMLog

struct Cat: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a log's committed bytes.",
        discussion: """
            Reads PATH and writes to standard output every committed byte: the records below the \
            committed watermark, in file order, with holes (the ranges of writers that died \
            copying, of appends that failed, of data a crash never wrote) skipped. Never prints \
            the zero-filled space allocated past the last record. Changes nothing: it opens both \
            files read-only and takes no lock, so it never delays a writer. Bytes are printed \
            exactly as they are (binary records too). A file without PATH.mmlog is printed whole.
            """)

    @Argument(help: "The log's data file.") var path: String

    func run() throws {
        let reader = try tool { () throws(MMLogError) in try MMLogReader(path: path) }
        reader.deadWriterProbeDelay = 0  // one look: a writer found dead now is not waited for
        let end = try tool { () throws(MMLogError) in try reader.committedOffset() }
        var offset = 0
        while offset < end {
            let (bytes, next) = try tool { () throws(MMLogError) in try reader.read(from: offset, upTo: end) }
            Output.write(bytes)
            if next == offset { break }
            offset = next
        }
    }
}
