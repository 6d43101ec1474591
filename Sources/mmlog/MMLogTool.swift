// mmlog: the operator's tool for MMLog logs, as mdb_stat is LMDB's and journalctl journald's.
#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import MMLog

@main
struct MMLogTool: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mmlog",
        abstract: "Read, follow, inspect, repair and append to MMLog logs.",
        discussion: """
            An MMLog log is a data file (plain bytes, the records in order) and, beside it, \
            PATH.mmlog, the shared state its writers coordinate through. While writers are attached \
            the data file ends in zero-filled space allocated ahead of the records, and a record \
            may be reserved but not yet copied; plain tools (cat, tail -F, log shippers) read those \
            zeros. The commands here read only committed bytes: everything below the log's committed \
            watermark, with the holes left by crashed writers skipped.

            Every command takes the data file's path. Exit status: 0 on success, 1 when the log \
            cannot be read or repaired (the message names the file and the operation), 64 on bad \
            arguments.
            """,
        subcommands: [Cat.self, Tail.self, Stat.self, Recover.self, Rotate.self, Append.self])
}
