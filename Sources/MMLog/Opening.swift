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
        var mapped: (base: UnsafeMutableRawPointer, length: Int)?
        var finishAfterwards: String?
        do throws(MMLogError) {
            _ = try Sys.lockByte(metaFD, MetadataLayout.initLockByte, F_WRLCK, wait: true, "\(metadataPath) init")
            defer { Sys.unlockByte(metaFD, MetadataLayout.initLockByte) }

            func refuse(_ kind: MMLogError.Kind, _ why: String) -> MMLogError {
                MMLogError(kind: kind, operation: "MMLog(\(path))", detail: "\(metadataPath): \(why)")
            }
            var metaSize = try Sys.size(metaFD, metadataPath)
            if metaSize == 0 {
                try Sys.ftruncate(metaFD, MetadataLayout.metadataSize, metadataPath)
                metaSize = MetadataLayout.metadataSize
            } else if metaSize < MetadataLayout.headerSize {
                throw refuse(.corruptMetadata, "it is \(metaSize) bytes; a header is at least \(MetadataLayout.headerSize)")
            }
            var length = min(metaSize, MetadataLayout.metadataSize)
            if length < MetadataLayout.metadataSize { length = MetadataLayout.headerSize }
            var base = try Sys.mapShared(metaFD, length, 0, metadataPath)
            mapped = (base, length)
            var meta = Metadata.bind(base, length: length)
            var created = false

            let state = meta.state.load(ordering: .acquiring)  // pairs with the creator's releasing store
            if state != MetadataLayout.ready {
                // Zero state with a zero or valid magic is a creation that never finished (its
                // creator died holding the init lock): create again. Anything else is not ours.
                guard state == 0, meta.magic == 0 || meta.magic == MetadataLayout.magic else {
                    throw refuse(.corruptMetadata, "not an MMLog header (state 0x\(String(state, radix: 16)))")
                }
                guard mode != .finishRetired else { throw refuse(.notALog, "not a retired log") }
                if length < MetadataLayout.metadataSize {
                    (base, length, meta) = try upgradeMapping(metaFD, metadataPath, &mapped)
                }
                dataFD = try directory.open(dataName, O_RDWR, create: options.permissions, for: operation)
                mmlog_fork_guard_add(dataFD)
                // Fresh metadata may drive an existing data file only if nothing else does.
                try lockDataExclusively(dataFD, path, metadataPath)
                let existing = try Sys.size(dataFD, path)
                meta.initialize(pageSize: page, chunkSize: options.chunkSize, dataSize: existing,
                                rotateAtBytes: options.rotateAtBytes ?? 0)
                try recordIdentity(meta, dataFD, path)
                meta.state.store(MetadataLayout.ready, ordering: .releasing)  // pairs with the acquiring load above
                created = true
            } else {
                if let (kind, why) = meta.problem(pageSize: page, length: metaSize) {
                    throw refuse(kind, why)
                }
                if meta.version != MetadataLayout.version1 && meta.cursor.load(ordering: .acquiring) & Cursor.retiredBit != 0 {
                    guard mode == .finishRetired else {
                        // A rotation retired this log: finish its renames (waiting for a live
                        // rotator), then open the new log at the path.
                        try Rotation.completeRenames(meta, metadataFD: metaFD, path: path, waitForRotator: true)
                        throw OpenAgain()
                    }
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
            let alone = try Sys.lockByte(metaFD, MetadataLayout.attachLockByte, F_WRLCK, wait: false, "\(metadataPath) attach")
            if !alone && mode != .append {
                throw MMLogError(kind: .dataFileInUse, operation: "recover(\(path))",
                                 detail: "other processes are attached to \(metadataPath); recovery runs only with no writer attached (the next process to open the log alone runs it by itself)")
            }
            // Does the header describe the file at the path? If not, and the file it describes
            // was renamed beside it (logrotate), that is a rotation: retire the log under that
            // name and open anew. If it was deleted under writers, retire it too.
            if !created && meta.version != MetadataLayout.version1 && mode != .finishRetired {
                let recorded = FileIdentity(device: meta.dataDevice, inode: meta.dataInode)
                let atPath = dataFD >= 0 ? try Sys.identity(dataFD, path) : nil
                if atPath != recorded {
                    if let renamed = Rotation.findRenamed(recorded, besides: path) {
                        try Rotation.adopt(meta, metadataFD: metaFD, path: path, renamedTo: renamed)
                        if alone { finishAfterwards = renamed }
                        throw OpenAgain()
                    }
                    if !alone && Sys.bootID == meta.bootID {
                        // Its data file is gone while writers append to it: retire it so they
                        // move to a new log at the path, and take its metadata away.
                        try Rotation.adopt(meta, metadataFD: metaFD, path: path, renamedTo: nil)
                        throw OpenAgain()
                    }
                }
            }
            var report: RecoveryReport?
            if alone {
                if dataFD < 0 {
                    // The data file is gone (deleted, or its creation never reached the disk):
                    // nothing is left to keep, so start a new log on this metadata.
                    dataFD = try directory.open(dataName, O_RDWR, create: options.permissions, for: operation)
                    mmlog_fork_guard_add(dataFD)
                    try lockDataExclusively(dataFD, path, metadataPath)
                    if meta.version == MetadataLayout.version1 {
                        (base, length, meta) = try upgradeMapping(metaFD, metadataPath, &mapped)
                    }
                    meta.initialize(pageSize: page, chunkSize: Int(meta.chunkSize), dataSize: 0,
                                    rotateAtBytes: options.rotateAtBytes ?? 0)
                    try recordIdentity(meta, dataFD, path)
                    meta.state.store(MetadataLayout.ready, ordering: .releasing)
                    report = RecoveryReport(path: path, found: ["the data file was missing: started a new, empty log"])
                } else {
                    if !created { try lockDataExclusively(dataFD, path, metadataPath) }
                    if meta.version == MetadataLayout.version1 {
                        (base, length, meta) = try upgradeMapping(metaFD, metadataPath, &mapped)
                        report = try Recovery.upgradeFromVersion1(meta, dataFD: dataFD, path: path, metadataPath: metadataPath)
                    } else if !created {
                        report = try Recovery.recoverAlone(meta, dataFD: dataFD, metadataFD: metaFD, path: path, metadataPath: metadataPath)
                    }
                }
                meta.clean.store(0, ordering: .relaxed)
                // Downgrade both locks to shared (never blocks).
                _ = try Sys.lockByte(dataFD, MetadataLayout.dataLockByte, F_RDLCK, wait: true, "\(path) data")
                _ = try Sys.lockByte(metaFD, MetadataLayout.attachLockByte, F_RDLCK, wait: true, "\(metadataPath) attach")
            } else {
                if meta.version == MetadataLayout.version1 {
                    throw refuse(.incompatibleMetadata,
                                 "format version 1, in use by another process (an older MMLog); it is upgraded to version \(MetadataLayout.version) when opened with no other handle attached")
                }
                guard dataFD >= 0 else {
                    throw MMLogError(kind: .dataFileMissing, operation: "MMLog(\(path))",
                                     detail: "\(metadataPath) is attached by other processes but its data file \(path) does not exist")
                }
                let identity = try Sys.identity(dataFD, path)
                if identity.device != meta.dataDevice || identity.inode != meta.dataInode {
                    throw MMLogError(kind: .dataFileInUse, operation: "MMLog(\(path))",
                                     detail: "\(metadataPath) describes another data file (device \(meta.dataDevice), inode \(meta.dataInode)) that processes still append to; \(path) is inode \(identity.inode). Were the files renamed separately? Rotate with MMLog.rotate() or `mmlog rotate`")
                }
                _ = try Sys.lockByte(dataFD, MetadataLayout.dataLockByte, F_RDLCK, wait: true, "\(path) data")
                _ = try Sys.lockByte(metaFD, MetadataLayout.attachLockByte, F_RDLCK, wait: true, "\(metadataPath) attach")
                // If a trimmer held the attach byte and died, we are alone: it excluded everyone
                // else, and later openers wait on the init lock we hold.
                try Recovery.finishInterruptedTrim(meta, dataFD: dataFD, path: path)
            }
            if let rotateAtBytes = options.rotateAtBytes {
                _ = meta.rotateAtBytes.compareExchange(expected: 0, desired: UInt64(rotateAtBytes), ordering: .relaxed)
            }
            let entry = claimHandleEntry(meta, metaFD)
            return LogFile(path: path, metadataPath: metadataPath, dataFD: dataFD, metadataFD: metaFD, header: meta,
                           options: options, recovery: report, handleEntry: entry)
        } catch {
            if let mapped { Sys.unmap(mapped.base, mapped.length) }
            if dataFD >= 0 { mmlog_fork_guard_remove(dataFD); Sys.close(dataFD) }
            mmlog_fork_guard_remove(metaFD)
            Sys.close(metaFD)  // with the header unmapped, this drops any lock taken above
            if error.isOpenAgain {
                if let finishAfterwards { Rotation.finishRetired(path: finishAfterwards, options: options) }
                return nil
            }
            throw error
        }
    }

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

    /// Takes the data file's lock byte exclusively for a moment: fails when a handle opened
    /// through another metadata file (a renamed or copied one) is attached to this data file.
    /// The caller downgrades it to shared when attached.
    private static func lockDataExclusively(_ dataFD: Int32, _ path: String, _ metadataPath: String) throws(MMLogError) {
        if try !Sys.lockByte(dataFD, MetadataLayout.dataLockByte, F_WRLCK, wait: false, "\(path) data") {
            throw MMLogError(kind: .dataFileInUse, operation: "MMLog(\(path))",
                             detail: "\(path) is being appended to through another metadata file than \(metadataPath) (were the files renamed under running writers?); refusing to drive it from two")
        }
    }

    /// Stores the data file's identity and this boot's id in the header (under the init lock,
    /// attached alone or creating).
    static func recordIdentity(_ meta: Metadata, _ dataFD: Int32, _ path: String) throws(MMLogError) {
        let identity = try Sys.identity(dataFD, path)
        meta.dataDevice = identity.device
        meta.dataInode = identity.inode
        meta.bootID = Sys.bootID
    }

    /// Grows a version 1 metadata file to version 2's size and maps all of it.
    /// Replaces the mapping of a page-0-only header by one of the whole metadata file (grown
    /// to its full size). `mapped` follows every step, so a failure never unmaps twice.
    private static func upgradeMapping(_ metaFD: Int32, _ metadataPath: String,
                                       _ mapped: inout (base: UnsafeMutableRawPointer, length: Int)?)
        throws(MMLogError) -> (UnsafeMutableRawPointer, Int, Metadata) {
        if let old = mapped { Sys.unmap(old.base, old.length) }
        mapped = nil
        try Sys.ftruncate(metaFD, MetadataLayout.metadataSize, metadataPath)
        let full = try Sys.mapShared(metaFD, MetadataLayout.metadataSize, 0, metadataPath)
        mapped = (full, MetadataLayout.metadataSize)
        return (full, MetadataLayout.metadataSize, Metadata.bind(full, length: MetadataLayout.metadataSize))
    }

    /// Claims a free entry of the handle table for `mmlog stat` (pid, open time); nil when all
    /// 128 are taken (the handle works the same, unlisted).
    private static func claimHandleEntry(_ meta: Metadata, _ metaFD: Int32) -> Int? {
        for i in 0..<MetadataLayout.handleCount {
            guard (try? Sys.lockByte(metaFD, MetadataLayout.handleLockBase + i, F_WRLCK, wait: false, "handle")) == true else {
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
