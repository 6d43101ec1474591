#if canImport(Glibc)
import Glibc
#endif
import CMMLogShims

/// Where a log's OFD locks live (see `MetadataLayout`, "Locks").
///
/// Format version 3 keeps them in a lock file beside the log, `.<name>.mmlog-lock`, which only
/// users who may write the log can open (its mode grants read only with write): an OFD read
/// lock needs only a descriptor open for reading, so locks in the metadata file, which every
/// reader opens, let any reader stall every writer (versions 1 and 2: a read lock on byte 2 hung
/// a root writer at its next growth). One lock file serves a path for ever: each header owns a
/// region of it (`lockRegion`, chosen at random when the header is made), so a rotated log and
/// its successor never share a byte; byte 0 (the creation lock) is the path's, taken only
/// while a header is being made; a data file's lock byte is keyed by its inode
/// (`dataLockBase`), so two metadata files never drive one data file.
struct Locks {
    /// The lock file (version 3), or the metadata file (the legacy locks of versions 1 and 2).
    let fd: Int32
    /// Added to every per-log byte.
    let region: Int
    let what: String

    /// Takes (wait: true), tries (wait: false) a lock of `type` on this log's `byte`.
    @discardableResult
    func take(_ byte: Int, _ type: Int32, wait: Bool, _ name: String) throws(MMLogError) -> Bool {
        try Sys.lockByte(fd, region + byte, type, wait: wait, "\(what) \(name)")
    }

    func release(_ byte: Int) {
        Sys.unlockByte(fd, region + byte)
    }

    /// Whether another open file description holds a lock on this log's `byte`.
    func held(_ byte: Int, _ name: String) throws(MMLogError) -> Bool {
        try Sys.lockHeld(fd, region + byte, "\(what) \(name)")
    }

    /// The lock byte of the data file with `identity` (shared by every attached handle).
    static func dataByte(_ identity: FileIdentity) -> Int {
        MetadataLayout.dataLockBase + Int(identity.inode & MetadataLayout.dataLockMask)
    }

    /// A fresh region: a random multiple of 2^16 from 2^20 to 2^46.
    static func newRegion() -> UInt64 {
        var random = mmlog_random64()
        if random == 0 { random = (Sys.monotonicNanoseconds() ^ UInt64(getpid())) &* 0x9E37_79B9_7F4A_7C15 }
        return (16 + random % ((1 << 30) - 16)) << 16
    }

    /// The mode of a new lock file: read and write for each class that may write the log
    /// (per `permissions`), nothing for the others: who can only read the log cannot open it.
    static func mode(for permissions: mode_t) -> mode_t {
        var mode: mode_t = 0o600
        if permissions & 0o020 != 0 { mode |= 0o060 }
        if permissions & 0o002 != 0 { mode |= 0o006 }
        return mode
    }

    /// Whether `name` may be a lock file's name in a header (a hostile header must not make
    /// a writer create or lock any other file of the directory).
    static func validName(_ name: String) -> Bool {
        name.hasPrefix(".") && name.hasSuffix(MetadataLayout.lockSuffix) && name.count > MetadataLayout.lockSuffix.count + 1
            && !name.contains("/") && name != "." && name != ".." && name.utf8.count <= MetadataLayout.lockNameCapacity
    }

    /// The lock file's name for a log whose data file is `dataName`: `.<dataName>.mmlog-lock`,
    /// hidden and outside the `<dataName>.*` names that rotation, logrotate and shippers match.
    package static func name(forData dataName: String) -> String {
        let name = "." + dataName + MetadataLayout.lockSuffix
        if name.utf8.count <= MetadataLayout.lockNameCapacity { return name }
        // A very long name: a shorter one, still unique to it.
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in dataName.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return "." + String(dataName.prefix(40)) + "-" + String(hash, radix: 16) + MetadataLayout.lockSuffix
    }


    /// Opens (creating) the lock file `name` in `directory` for writing.
    static func openFile(_ name: String, in directory: LogDirectory, permissions: mode_t) throws(MMLogError) -> Int32 {
        let fd = try directory.open(name, O_RDWR, create: mode(for: permissions), for: "MMLog")
        mmlog_fork_guard_add(fd)
        return fd
    }

    static func closeFile(_ fd: Int32) {
        mmlog_fork_guard_remove(fd)
        Sys.close(fd)
    }
}

extension MMLog {
    /// Every file of the log at `path`: the data file, its metadata (`<path>.mmlog`) and its
    /// lock file (`.<name>.mmlog-lock` beside it), for tools that remove a log.
    public static func files(ofLog path: String) -> [String] {
        [path, path + ".mmlog", LogDirectory.sibling(of: path, named: Locks.name(forData: LogDirectory.name(of: path)))]
    }
}

/// How a reader tells a live writer from a dead one (`mmlog stat`, a reader passing a writer
/// that died in flight): by its lock bytes when the reader can open the lock file (it may
/// write the log; or the log is version 1 or 2, whose locks are in the metadata file), else by
/// the process ids the slot and handle tables record. A reader who may only read the log
/// cannot open the lock file, and so cannot take a lock a writer waits for.
///
/// By process id, a writer is alive while a process with its pid exists (`kill(pid, 0)`): a
/// pid reused by another process only delays the verdict; a reader in another pid namespace
/// than the writers cannot use it and must be given the lock file (write access).
struct Liveness {
    let locks: Locks?

    func slotAlive(_ header: Metadata, _ i: Int) throws(MMLogError) -> Bool {
        if let locks { return try locks.held(MetadataLayout.slotLockBase + i, "slot \(i)") }
        return Sys.processAlive(header.slotOwner(i).pid)
    }

    func handleAlive(_ header: Metadata, _ i: Int) throws(MMLogError) -> Bool {
        if let locks { return try locks.held(MetadataLayout.handleLockBase + i, "handle \(i)") }
        let entry = header.handleEntry(i)
        return entry.load(fromByteOffset: 4, as: UInt32.self) != 0 && Sys.processAlive(entry.load(fromByteOffset: 0, as: Int32.self))
    }

    /// Whether any handle is attached.
    func attached(_ header: Metadata) throws(MMLogError) -> Bool {
        if let locks { return try locks.held(MetadataLayout.attachLockByte, "attach") }
        for i in 0..<MetadataLayout.handleCount where try handleAlive(header, i) { return true }
        return false
    }

    func close() {
        if let locks, locks.region != 0 { Sys.close(locks.fd) }  // region 0: the metadata's own descriptor
    }
}
