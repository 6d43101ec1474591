#if canImport(Glibc)
import Glibc
#endif
import Atomics

extension MMLog {
    /// Writes every appended byte that is in memory to the device, whichever process wrote it
    /// (stores through the mappings included): `fdatasync` of the data file.
    public func sync() throws(MMLogError) {
        try checkUsable("sync")
        let file = current
        try file.enterSlowPath("sync", closed: closedFlag)
        defer { file.leaveSlowPath() }
        try Sys.fdatasync(file.dataFD, file.path)
    }
}
