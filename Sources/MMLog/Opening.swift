#if canImport(Glibc)
import Glibc
#endif
import Atomics
import CMMLogShims

extension LogFile {
    /// Why a log is being opened.
    enum OpenMode {
        /// To append: the usual open.
        case append
        /// `mmlog recover`: only when no other handle is attached.
        case recover
        /// To finish a retired (rotated) file whose last writer died: only when alone.
        case finishRetired
    }

    /// Opens (creating when needed) the log at `path` and attaches to it.
    ///
    /// Under the init lock (byte 0 of the metadata file, exclusive): create or check the
    /// header, open the data file, then attach: a shared lock on the data file's byte 0 and
    /// the metadata's attach byte. An opener that finds itself alone (it can take the attach
    /// byte exclusively) first makes the log consistent with its data file (`Recovery`).
    ///
    /// When the metadata at the path belongs to a log that is being rotated, or whose data
    /// file was renamed away (logrotate) or deleted, the opener finishes that rotation (see
    /// `Rotation.swift`) and opens again: it gets the new log at the path.
    static func open(path: String, options: MMLog.Options, mode: OpenMode = .append) throws(MMLogError) -> LogFile {
        for attempt in 0..<100 {
            if let file = try openOnce(path: path, options: options, mode: mode) {
                file.openedAfterRotation = attempt > 0
                return file
            }
        }
        throw MMLogError(kind: .dataFileInUse, operation: "MMLog(\(path))",
                         detail: "the log kept being rotated while it was opened (100 attempts)")
    }

    /// One attempt; nil when the log at the path was rotated meanwhile (open again).
    ///
    /// The steps: open the metadata (creating it when appending), make the header under the
    /// path's creation lock if it is new, convert a version 1 or 2 header when alone under its
    /// old locks, then under this header's init lock: check, attach, recover when alone.
    private static func openOnce(path: String, options: MMLog.Options, mode: OpenMode) throws(MMLogError) -> LogFile? {
        let page = Sys.pageSize
        let metadataPath = path + ".mmlog"
        let directory = try LogDirectory(of: path)
        let dataName = LogDirectory.name(of: path), metadataName = dataName + ".mmlog"
        let operation = "MMLog"
        if mode != .append && !directory.exists(metadataName) {
            // `mmlog recover` and the finishing of a retired file never create a log.
            throw MMLogError(kind: .notALog, operation: "MMLog(\(path))", errno: ENOENT, detail: "\(metadataPath): no such file")
        }
        // A data file MMLog may not use is refused before any metadata is made for it.
        if directory.exists(dataName) { try directory.requireExisting(dataName, for: operation) }
        let metaFD = try directory.open(metadataName, O_RDWR, create: mode == .append ? options.permissions : nil, for: operation)
        mmlog_fork_guard_add(metaFD)
        var dataFD: Int32 = -1
        var lockFD: Int32 = -1
        var mapped: (base: UnsafeMutableRawPointer, length: Int)?
        var finishAfterwards: String?
        do throws(MMLogError) {
            func refuse(_ kind: MMLogError.Kind, _ why: String) -> MMLogError {
                MMLogError(kind: kind, operation: "MMLog(\(path))", detail: "\(metadataPath): \(why)")
            }
            var created = false
            var adopted: RecoveryReport?
            var initHeld: Locks?
            // A new header (or one whose creator died before it was ready) is made under the
            // path's creation lock, in the lock file named after the data file; its creator
            // holds the header's init lock before it publishes it, so that no opener finds the
            // new log before its creator has attached.
            if !MetadataLayout.headerIsReady(metaFD) {
                guard mode == .append else { throw refuse(.notALog, "not a retired log") }
                lockFD = try Locks.openFile(Locks.name(forData: dataName), in: directory, permissions: options.permissions)
                let pathLocks = Locks(fd: lockFD, region: 0, what: "\(path + MetadataLayout.lockSuffix)")
                try pathLocks.take(MetadataLayout.creationLockByte, F_WRLCK, wait: true, "creation")
                defer { pathLocks.release(MetadataLayout.creationLockByte) }
                if !MetadataLayout.headerIsReady(metaFD) {
                    (dataFD, initHeld) = try create(metaFD, metadataPath, dataName: dataName, in: directory, options: options,
                                                    lockFD: lockFD, &mapped, adopted: &adopted)
                    created = true
                }
            }
            if mapped == nil {
                let metaSize = try Sys.size(metaFD, metadataPath)
                guard metaSize >= MetadataLayout.headerSize else {
                    throw refuse(.corruptMetadata, "it is \(metaSize) bytes; a header is at least \(MetadataLayout.headerSize)")
                }
                let length = metaSize >= MetadataLayout.metadataSize ? MetadataLayout.metadataSize : MetadataLayout.headerSize
                mapped = (try Sys.mapShared(metaFD, length, 0, metadataPath), length)
            }
            var meta = Metadata.bind(mapped!.base, length: mapped!.length)
            if let (kind, why) = meta.problem(pageSize: page, length: try Sys.size(metaFD, metadataPath)) {
                throw refuse(kind, why)
            }
            // Versions 1 and 2 kept their locks in the metadata file: convert, alone under them.
            var legacy: (version: UInt32, locks: Locks)?
            if meta.version != MetadataLayout.version {
                let version = meta.version
                let old = try convertLegacyHeader(&meta, metaFD, metadataPath, dataName: dataName, &mapped)
                legacy = (version, old)
            }
            defer { if let legacy { legacy.locks.release(MetadataLayout.initLockByte); legacy.locks.release(MetadataLayout.attachLockByte) } }
            if lockFD < 0 || meta.lockName != Locks.name(forData: dataName) {
                if lockFD >= 0 { Locks.closeFile(lockFD); lockFD = -1 }
                lockFD = try Locks.openFile(meta.lockName, in: directory, permissions: options.permissions)
            }
            let locks = Locks(fd: lockFD, region: Int(meta.lockRegion), what: "\(directory.describe(meta.lockName))")
            if initHeld == nil {
                // Finishing a retired file is a chore done in passing (a rotator holding its own
                // rotate lock does it): it never waits for an opener, which may hold this init
                // lock while it waits for that rotator (the same log, under logrotate's name).
                // The file is finished later, by its last writer or the next rotation.
                if try !locks.take(MetadataLayout.initLockByte, F_WRLCK, wait: mode != .finishRetired, "init") {
                    throw MMLogError(kind: .dataFileInUse, operation: "finish(\(path))", detail: "\(metadataPath) is being opened by another process")
                }
            }
            defer { locks.release(MetadataLayout.initLockByte) }

            if !created {
                if meta.cursor.load(ordering: .acquiring) & Cursor.retiredBit != 0 && mode != .finishRetired {
                    // A rotation retired this log: finish its renames (waiting for a live
                    // rotator), then open the new log at the path.
                    try Rotation.completeRenames(meta, metadataFD: metaFD, locks: locks, path: path, waitForRotator: true)
                    throw OpenAgain()
                }
                do throws(MMLogError) {
                    dataFD = try directory.open(dataName, O_RDWR, for: operation)
                    mmlog_fork_guard_add(dataFD)
                } catch where error.errno == ENOENT {
                    dataFD = -1
                }
                if mode == .finishRetired { try requireRetiredPair(meta, dataFD, path, metadataPath) }
            }

            // Attach. Alone: recover (or upgrade) before anything is appended on the header's word.
            let alone = try locks.take(MetadataLayout.attachLockByte, F_WRLCK, wait: false, "attach")
            if !alone && mode != .append {
                throw MMLogError(kind: .dataFileInUse, operation: "recover(\(path))",
                                 detail: "other processes are attached to \(metadataPath); recovery runs only with no writer attached (the next process to open the log alone runs it by itself)")
            }
            // Does the header describe the file at the path? If not, and the file it describes
            // was renamed beside it (logrotate), that is a rotation: retire the log under that
            // name and open anew. If it was deleted under writers, retire it too.
            if !created && legacy?.version != MetadataLayout.version1 && mode != .finishRetired {
                let recorded = FileIdentity(device: meta.dataDevice, inode: meta.dataInode)
                let atPath = dataFD >= 0 ? try Sys.identity(dataFD, path) : nil
                if atPath != recorded {
                    if let renamed = Rotation.findRenamed(recorded, besides: path) {
                        try Rotation.adopt(meta, metadataFD: metaFD, locks: locks, path: path, renamedTo: renamed)
                        if alone { finishAfterwards = renamed }
                        throw OpenAgain()
                    }
                    if !alone && Sys.bootID == meta.bootID {
                        // Its data file is gone while writers append to it: retire it so they
                        // move to a new log at the path, and take its metadata away.
                        try Rotation.adopt(meta, metadataFD: metaFD, locks: locks, path: path, renamedTo: nil)
                        throw OpenAgain()
                    }
                }
            }
            var report: RecoveryReport? = adopted
            if alone {
                if dataFD < 0 {
                    // The data file is gone (deleted, or its creation never reached the disk):
                    // nothing is left to keep, so start a new log on this metadata.
                    dataFD = try directory.open(dataName, O_RDWR, create: options.permissions, for: operation)
                    mmlog_fork_guard_add(dataFD)
                    try lockDataExclusively(dataFD, path, metadataPath, lockFD)
                    meta.initialize(pageSize: page, chunkSize: Int(meta.chunkSize), dataSize: 0,
                                    rotateAtBytes: options.rotateAtBytes ?? 0, lockRegion: meta.lockRegion, lockName: meta.lockName)
                    try recordIdentity(meta, dataFD, path)
                    meta.state.store(MetadataLayout.ready, ordering: .releasing)
                    report = RecoveryReport(path: path, found: ["the data file was missing: started a new, empty log"])
                } else {
                    if !created { try lockDataExclusively(dataFD, path, metadataPath, lockFD) }
                    if legacy?.version == MetadataLayout.version1 {
                        report = try Recovery.upgradeFromVersion1(meta, dataFD: dataFD, path: path, metadataPath: metadataPath)
                    } else if !created {
                        report = try Recovery.recoverAlone(meta, dataFD: dataFD, metadataFD: metaFD, path: path, metadataPath: metadataPath)
                    }
                }
                if let legacy, legacy.version == MetadataLayout.version2 {
                    var upgraded = report ?? RecoveryReport(path: path, found: [])
                    upgraded.found.insert("upgraded \(metadataPath) from format version 2 to \(MetadataLayout.version): its locks moved to \(meta.lockName), which only writers can open", at: 0)
                    report = upgraded
                }
                meta.clean.store(0, ordering: .relaxed)
                // Downgrade both locks to shared (never blocks).
                try lockData(dataFD, path, lockFD, F_RDLCK)
                try locks.take(MetadataLayout.attachLockByte, F_RDLCK, wait: true, "attach")
            } else {
                guard dataFD >= 0 else {
                    throw MMLogError(kind: .dataFileMissing, operation: "MMLog(\(path))",
                                     detail: "\(metadataPath) is attached by other processes but its data file \(path) does not exist")
                }
                let identity = try Sys.identity(dataFD, path)
                if identity.device != meta.dataDevice || identity.inode != meta.dataInode {
                    throw MMLogError(kind: .dataFileInUse, operation: "MMLog(\(path))",
                                     detail: "\(metadataPath) describes another data file (device \(meta.dataDevice), inode \(meta.dataInode)) that processes still append to; \(path) is inode \(identity.inode). Were the files renamed separately? Rotate with MMLog.rotate() or `mmlog rotate`")
                }
                try lockData(dataFD, path, lockFD, F_RDLCK)
                try locks.take(MetadataLayout.attachLockByte, F_RDLCK, wait: true, "attach")
                // If a trimmer held the attach byte and died, we are alone: it excluded everyone
                // else, and later openers wait on the init lock we hold.
                try Recovery.finishInterruptedTrim(meta, dataFD: dataFD, path: path)
            }
            if let rotateAtBytes = options.rotateAtBytes {
                _ = meta.rotateAtBytes.compareExchange(expected: 0, desired: UInt64(rotateAtBytes), ordering: .relaxed)
            }
            let entry = claimHandleEntry(meta, locks)
            return LogFile(path: path, metadataPath: metadataPath, dataFD: dataFD, metadataFD: metaFD, locks: locks, header: meta,
                           options: options, recovery: report, handleEntry: entry)
        } catch {
            if let mapped { Sys.unmap(mapped.base, mapped.length) }
            if dataFD >= 0 { mmlog_fork_guard_remove(dataFD); Sys.close(dataFD) }
            if lockFD >= 0 { Locks.closeFile(lockFD) }  // drops every lock taken above in it
            mmlog_fork_guard_remove(metaFD)
            Sys.close(metaFD)  // with the header unmapped, this drops any legacy lock taken above
            if error.isOpenAgain {
                if let finishAfterwards { Rotation.finishRetired(path: finishAfterwards, options: options) }
                return nil
            }
            throw error
        }
    }

    /// Makes a fresh header (the caller holds the path's creation lock): sizes the metadata
    /// (allocated, so a full disk is an error here, never a SIGBUS at the first store),
    /// opens (creating) the data file, locks it exclusively and records its identity.
    /// Returns the data file's descriptor and the new header's locks, whose init lock it holds
    /// (taken before the header is published: no one else can know its region before);
    /// `mapped` holds the whole metadata.
    private static func create(_ metaFD: Int32, _ metadataPath: String, dataName: String, in directory: LogDirectory,
                               options: MMLog.Options, lockFD: Int32,
                               _ mapped: inout (base: UnsafeMutableRawPointer, length: Int)?,
                               adopted: inout RecoveryReport?) throws(MMLogError) -> (Int32, Locks) {
        let path = directory.describe(dataName)
        var base: UnsafeMutableRawPointer?
        if try Sys.size(metaFD, metadataPath) >= MetadataLayout.headerSize {
            base = try Sys.mapShared(metaFD, MetadataLayout.headerSize, 0, metadataPath)
            mapped = (base!, MetadataLayout.headerSize)
            let header = Metadata.bind(base!, length: MetadataLayout.headerSize)
            // Zero state with a zero or valid magic is a creation that never finished (its
            // creator died holding the creation lock): create again. Anything else is not ours.
            let state = header.state.load(ordering: .acquiring)
            guard state == 0, header.magic == 0 || header.magic == MetadataLayout.magic else {
                throw MMLogError(kind: .corruptMetadata, operation: "MMLog(\(path))",
                                 detail: "\(metadataPath): not an MMLog header (state 0x\(String(state, radix: 16)))")
            }
        }
        let meta = try upgradeMapping(metaFD, metadataPath, &mapped).2
        let dataFD = try directory.open(dataName, O_RDWR, create: options.permissions, for: "MMLog")
        mmlog_fork_guard_add(dataFD)
        do throws(MMLogError) {
            // Fresh metadata may drive an existing data file only if nothing else does.
            try lockDataExclusively(dataFD, path, metadataPath, lockFD)
            let existing = try Sys.size(dataFD, path)
            meta.initialize(pageSize: Sys.pageSize, chunkSize: options.chunkSize, dataSize: existing,
                            rotateAtBytes: options.rotateAtBytes ?? 0, lockRegion: Locks.newRegion(), lockName: Locks.name(forData: dataName))
            if existing > 0 {
                // A data file without its metadata: a plain file adopted, or a log whose header
                // never reached the disk before a crash. The data decides, as after a crash:
                // appends resume after the last data (not after blocks allocated ahead), and in
                // a text log zeros and torn records are holes (they showed as NUL bytes).
                var report = RecoveryReport(path: path, found: [])
                try Recovery.recoverFromData(meta, dataFD: dataFD, path: path, metadataPath: metadataPath, report: &report)
                if !report.holesRecorded.isEmpty || Cursor.offset(meta.cursor.load(ordering: .relaxed)) != UInt64(existing) {
                    report.found.insert("\(metadataPath) was made anew for an existing data file of \(existing) bytes", at: 0)
                    adopted = report
                }
            }
            try recordIdentity(meta, dataFD, path)
            let locks = Locks(fd: lockFD, region: Int(meta.lockRegion), what: directory.describe(meta.lockName))
            try locks.take(MetadataLayout.initLockByte, F_WRLCK, wait: true, "init")
            meta.state.store(MetadataLayout.ready, ordering: .releasing)  // pairs with the acquiring loads of openers
            // The header reaches the disk before any record a sync() makes durable depends on
            // it (sync() flushes the data file only): once per log, at its creation.
            try Sys.fdatasync(metaFD, metadataPath)
            return (dataFD, locks)
        } catch {
            mmlog_fork_guard_remove(dataFD)
            Sys.close(dataFD)
            throw error
        }
    }

    /// Converts a version 1 or 2 header to version 3 in place: alone under its old locks (in
    /// the metadata file; an older MMLog still attached is refused), gives it a lock region and
    /// a lock file, and returns the old locks, held until the caller holds the new init lock.
    private static func convertLegacyHeader(_ meta: inout Metadata, _ metaFD: Int32, _ metadataPath: String, dataName: String,
                                            _ mapped: inout (base: UnsafeMutableRawPointer, length: Int)?) throws(MMLogError) -> Locks {
        let old = Locks(fd: metaFD, region: 0, what: metadataPath)
        try old.take(MetadataLayout.initLockByte, F_WRLCK, wait: true, "init")
        guard try old.take(MetadataLayout.attachLockByte, F_WRLCK, wait: false, "attach") else {
            old.release(MetadataLayout.initLockByte)
            throw MMLogError(kind: .incompatibleMetadata, operation: "MMLog(\(directory(of: metadataPath)))",
                             detail: "\(metadataPath): format version \(meta.version), in use by another process (an older MMLog); it is upgraded to version \(MetadataLayout.version) when opened with no other handle attached")
        }
        if meta.version == MetadataLayout.version1 {
            meta = try upgradeMapping(metaFD, metadataPath, &mapped).2
        } else if meta.version == MetadataLayout.version {
            return old  // converted by another opener in the meantime
        }
        meta.lockRegion = Locks.newRegion()
        meta.lockName = Locks.name(forData: dataName)
        // Version 1's table sizes (it had none) and the new version; the rest is version 2's.
        let base = meta.base
        base.storeBytes(of: UInt32(MetadataLayout.slotCount), toByteOffset: MetadataLayout.slotCountOffset, as: UInt32.self)
        base.storeBytes(of: UInt32(MetadataLayout.holeCapacity), toByteOffset: MetadataLayout.holeCapacityOffset, as: UInt32.self)
        base.storeBytes(of: UInt32(MetadataLayout.metadataSize), toByteOffset: MetadataLayout.metadataSizeOffset, as: UInt32.self)
        base.storeBytes(of: MetadataLayout.version, toByteOffset: MetadataLayout.versionOffset, as: UInt32.self)
        return old
    }

    private static func directory(of metadataPath: String) -> String { String(metadataPath.dropLast(6)) }

    /// A retired file is finished (cut to its retired end, holes zero-filled) only when its
    /// metadata is retired and records this very data file (device and inode, which the
    /// rotation recorded): a crafted metadata file beside a planted name must never make a
    /// rotation cut another file. (The name is not compared: logrotate may have shifted it.)
    private static func requireRetiredPair(_ meta: Metadata, _ dataFD: Int32, _ path: String, _ metadataPath: String) throws(MMLogError) {
        func refuse(_ why: String) -> MMLogError {
            MMLogError(kind: .notALog, operation: "finish(\(path))", detail: "\(metadataPath): \(why)")
        }
        guard meta.version != MetadataLayout.version1, meta.cursor.load(ordering: .acquiring) & Cursor.retiredBit != 0 else {
            throw refuse("not a retired log")
        }
        guard dataFD >= 0 else { throw refuse("its data file \(path) is gone") }
        let identity = try Sys.identity(dataFD, path)
        guard identity == FileIdentity(device: meta.dataDevice, inode: meta.dataInode) else {
            throw refuse("it records another data file (device \(meta.dataDevice), inode \(meta.dataInode)) than \(path) (inode \(identity.inode))")
        }
    }

    /// Takes the data file's lock byte (in the lock file, keyed by its inode) exclusively for a
    /// moment: fails when a handle opened through another metadata file (a renamed or copied
    /// one) is attached to this data file. The caller downgrades it to shared when attached.
    private static func lockDataExclusively(_ dataFD: Int32, _ path: String, _ metadataPath: String, _ lockFD: Int32) throws(MMLogError) {
        let byte = Locks.dataByte(try Sys.identity(dataFD, path))
        // A handle closing lets its attach lock go a moment before its data lock: an opener
        // that finds itself alone in that moment waits for it (about 40 ms) rather than refuse.
        var waited = 0
        try Sys.backOff(first: 100_000, cap: 10_000_000) { () throws(MMLogError) -> Bool in
            if try Sys.lockByte(lockFD, byte, F_WRLCK, wait: false, "\(path) data") { return false }
            waited += 1
            return waited < 10
        }
        if try !Sys.lockByte(lockFD, byte, F_WRLCK, wait: false, "\(path) data") {
            throw MMLogError(kind: .dataFileInUse, operation: "MMLog(\(path))",
                             detail: "\(path) is being appended to through another metadata file than \(metadataPath) (were the files renamed under running writers?); refusing to drive it from two")
        }
    }

    /// Takes the data file's lock byte shared (never blocks: only an opener alone, or a
    /// creator, ever holds it exclusively, and only for a moment).
    private static func lockData(_ dataFD: Int32, _ path: String, _ lockFD: Int32, _ type: Int32) throws(MMLogError) {
        _ = try Sys.lockByte(lockFD, Locks.dataByte(try Sys.identity(dataFD, path)), type, wait: true, "\(path) data")
    }

    /// Stores the data file's identity and this boot's id in the header (under the init lock,
    /// attached alone or creating).
    static func recordIdentity(_ meta: Metadata, _ dataFD: Int32, _ path: String) throws(MMLogError) {
        let identity = try Sys.identity(dataFD, path)
        meta.dataDevice = identity.device
        meta.dataInode = identity.inode
        meta.bootID = Sys.bootID
    }

    /// Replaces the mapping of a page-0-only header by one of the whole metadata file (grown
    /// to its full size). `mapped` follows every step, so a failure never unmaps twice.
    private static func upgradeMapping(_ metaFD: Int32, _ metadataPath: String,
                                       _ mapped: inout (base: UnsafeMutableRawPointer, length: Int)?)
        throws(MMLogError) -> (UnsafeMutableRawPointer, Int, Metadata) {
        if let old = mapped { Sys.unmap(old.base, old.length) }
        mapped = nil
        // Allocated, not only sized: on a full disk (a full tmpfs) a page of a sized file that
        // cannot be supplied kills the process with SIGBUS at its first store; this fails here.
        do throws(MMLogError) {
            try Sys.fallocate(metaFD, 0, MetadataLayout.metadataSize, metadataPath)
        } catch where error.errno == EOPNOTSUPP {
            try Sys.ftruncate(metaFD, MetadataLayout.metadataSize, metadataPath)
        }
        let full = try Sys.mapShared(metaFD, MetadataLayout.metadataSize, 0, metadataPath)
        mapped = (full, MetadataLayout.metadataSize)
        return (full, MetadataLayout.metadataSize, Metadata.bind(full, length: MetadataLayout.metadataSize))
    }

    /// Claims a free entry of the handle table for `mmlog stat` (pid, open time); nil when all
    /// 128 are taken (the handle works the same, unlisted).
    private static func claimHandleEntry(_ meta: Metadata, _ locks: Locks) -> Int? {
        for i in 0..<MetadataLayout.handleCount {
            guard (try? locks.take(MetadataLayout.handleLockBase + i, F_WRLCK, wait: false, "handle \(i)")) == true else {
                continue
            }
            let entry = meta.handleEntry(i)
            entry.storeBytes(of: Int32(getpid()), toByteOffset: 0, as: Int32.self)
            entry.storeBytes(of: UInt32(1), toByteOffset: 4, as: UInt32.self)
            entry.storeBytes(of: Sys.realtimeSeconds(), toByteOffset: 8, as: UInt64.self)
            return i
        }
        return nil
    }
}

/// Thrown inside `openOnce` when the log at the path turned out to be rotated: open again.
func OpenAgain() -> MMLogError {
    MMLogError(kind: .system, operation: MMLogError.openAgainMarker, errno: EAGAIN, detail: "the log was rotated: open again")
}

extension MMLogError {
    static let openAgainMarker = "MMLog: open again"
    var isOpenAgain: Bool { operation == Self.openAgainMarker }
}
