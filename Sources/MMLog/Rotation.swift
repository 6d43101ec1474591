#if canImport(Glibc)
import Glibc
#endif
import Atomics

// Rotation: the current data file and its metadata are retired under a new name, a new log
// starts at the path, and every attached handle moves there at its next append.
//
// The protocol, under the rotate lock (an OFD lock byte of the retiring metadata, so a
// rotator that dies leaves it to the next process, which finishes the steps it finds undone):
// 1. Retire: store the retired name and `retiredAt`, then set the retired bit in the cursor
//    (an RMW). Every reservation made before it ends at or below `retiredAt` and is written in
//    this file; every fetch-add after it returns the bit, and its writer moves to the new log
//    and reserves there. So every record lands whole in exactly one file.
// 2. Rename the data file, then the metadata, to the retired name (each only if the path
//    still names it). An opener that meets the retired metadata at the path in between
//    waits for the rotate lock, finishes whatever is left, and opens the new log; one that
//    comes after the metadata moved creates the new log.
// 3. Remove the oldest rotated files beyond `keepRotated`, and finish rotated files whose
//    writers have all gone.
// A retired file is finished by the last handle to leave it (or by the next open, when that
// writer died): cut to `retiredAt`, its holes zero-filled, flushed, and its metadata removed:
// a rotated file is a plain file any tool reads.
//
// With a size (`rotateAtBytes`), the file is allocated no further than that size, so the
// appends that pass it take the grow path: the one record that straddles the size is
// allocated and written, and its end becomes `retiredAt`; a reservation that starts past it
// waits for that writer (or finds it dead) and rotates; it is then made again in the new log.
//
// Names: `<path>.<UTC yyyyMMddTHHmmssZ>`, with `-2`, `-3`... when a second rotation falls in
// the same second: `ls` sorts them oldest first, and shippers match `<path>.*`. When logrotate
// renamed the data file itself (then runs `mmlog rotate` as its postrotate), the metadata
// follows the data file's new name, found by its inode.

extension MMLog {
    /// Rotates the log now (see `Rotation.swift`): retires the data file as
    /// `<path>.<UTC time>`, starts a new log at `path`, and moves this handle there; every
    /// other attached handle moves at its next append. Returns false when it rotated nothing:
    /// the log was empty, or another rotation came first.
    @discardableResult
    public func rotate() throws(MMLogError) -> Bool {
        try checkUsable("rotate")
        let file = current
        try file.enterSlowPath("rotate", closed: closedFlag)
        let word = file.cursor.load(ordering: .acquiring)
        if word & Cursor.retiredBit == 0 && Cursor.offset(word) == 0 {
            file.leaveSlowPath()
            return false
        }
        let rotated: Bool
        do throws(MMLogError) {
            rotated = try file.rotate(retiredAt: nil, keep: options.keepRotated)
            file.leaveSlowPath()
        } catch {
            file.leaveSlowPath()
            throw error
        }
        _ = try moveOn(from: file)
        return rotated
    }

    /// Rotates the log at `path` from outside its writers (`mmlog rotate`, a logrotate
    /// postrotate): never creates a log. When logrotate renamed the data file already, opening
    /// finishes that rotation and this rotates nothing more (rotating again would only split
    /// off what writers appended to the new log in between). Returns whether it rotated.
    public static func rotate(path: String, keepRotated: Int? = nil) throws(MMLogError) -> Bool {
        let directory = try LogDirectory(of: path)
        let name = LogDirectory.name(of: path)
        if directory.exists(name) {
            try directory.requireExisting(name, for: "rotate")
        } else if !directory.exists(name + ".mmlog") {
            throw MMLogError(kind: .notALog, operation: "rotate(\(path))", errno: ENOENT, detail: "no such log")
        }
        let log = try MMLog(path: path, options: .init(prefault: .none, hugePages: false, prefetch: false, keepRotated: keepRotated))
        defer { try? log.close() }
        if log.openedAfterRotation { return true }
        return try log.rotate()
    }

    /// The file this thread appended to was retired: make sure its rotation is complete, then
    /// (once per handle) open the new log at the path and make it current. Returns false when
    /// `file` was not retired.
    @discardableResult
    func moveOn(from file: LogFile) throws(MMLogError) -> Bool {
        guard file.fenced.load(ordering: .acquiring) || file.cursor.load(ordering: .acquiring) & Cursor.retiredBit != 0 else {
            return false
        }
        try mover.withLock { (_: inout Void) throws(MMLogError) in
            guard files.current === file else { return }  // another thread moved already
            try checkUsable("append")
            _ = try file.rotate(retiredAt: nil, keep: options.keepRotated)  // finishes what a dead rotator left
            // A new log inherits the old one's chunk and rotation sizes, whoever creates it.
            var inherited = options
            inherited.chunkSize = file.chunkSize
            let size = file.header.rotateAtBytes.load(ordering: .relaxed)
            if size != 0 && size <= MetadataLayout.maxLogSize { inherited.rotateAtBytes = Int(size) }
            let successor = try LogFile.open(path: path, options: inherited)
            files.append(successor)
            successor.prepareNextChunk()
        }
        leaveRetiredFiles(waiting: false)
        return true
    }

    /// Detaches from retired files in which no thread of this handle has an append in flight
    /// (all of them when `waiting`: close).
    func leaveRetiredFiles(waiting: Bool) {
        let all = files.all()
        for file in all.dropLast() where !file.fenced.load(ordering: .acquiring) {
            if !waiting && !file.quiescent { continue }
            try? file.detach()
        }
    }
}

extension MMLog {
    /// For tests (package access): called by a rotator between retiring the log and renaming
    /// its files, so that a test can kill a process in the middle of a rotation.
    nonisolated(unsafe) package static var testRotateHook: (@Sendable () -> Void)?
}

extension LogFile {
    /// Retires this log (unless it is already) and completes the renames; see the top of this
    /// file. `boundary`: the retired end for a size rotation (nil: the cursor now). Returns
    /// whether this call retired it.
    func rotate(retiredAt boundary: UInt64?, keep: Int?) throws(MMLogError) -> Bool {
        try rotateLock.withLock { (_: inout Void) throws(MMLogError) -> Bool in
            try locks.take(MetadataLayout.rotateLockByte, F_WRLCK, wait: true, "rotate")
            defer { locks.release(MetadataLayout.rotateLockByte) }
            let retiredNow = Rotation.retire(header, as: Rotation.uniqueName(for: path), at: boundary)
            if retiredNow { MMLog.testRotateHook?() }
            try Rotation.completeRenames(header, metadataFD: metadataFD, locks: locks, path: path, waitForRotator: false)
            if retiredNow {
                if let keep { Rotation.prune(path, keep: keep, justRotated: header.retiredName) }
                Rotation.finishIdleRotatedFiles(besides: path, options: options, except: header.retiredName)
            }
            return retiredNow
        }
    }

    /// For a size rotation: where the retired file must end, or nil while the writer of the
    /// record that straddles `size` is still on its way (then wait and ask again). The caller
    /// does not hold the grow lock.
    func sizeBoundary(_ size: UInt64) -> UInt64? {
        let crossing = try? withGrowLock { () throws(MMLogError) -> UInt64 in header.validCrossingEnd }
        if let crossing, crossing != 0 { return crossing }
        let ours = ownedSlots
        for i in header.activeSlots {
            let state = header.slotState(i).load(ordering: .acquiring)
            guard state & Slot.inFlight != 0 else { continue }
            let alive = slotOwnerAlive(i, ours: ours)
            if state & Slot.exact != 0 {
                let start = Cursor.offset(state), end = header.slotEnd(i).load(ordering: .relaxed)
                if start < size && size < end { return alive ? nil : end }
            } else if alive && Cursor.offset(state) < size {
                return nil  // a writer between its fetch-add and publishing its range: a moment
            }
        }
        return size
    }

    /// Whether no thread of this handle has an append in flight in this file.
    var quiescent: Bool {
        !ownedSlots.contains { header.slotState($0).load(ordering: .acquiring) & Slot.inFlight != 0 }
    }
}

package enum Rotation {
    /// Step 1: stores the retired name and end, then sets the retired bit. Returns whether
    /// this call retired the log. The caller holds the rotate lock.
    /// `name`: the retired name (evaluated only when this call retires the log).
    static func retire(_ meta: Metadata, as name: @autoclosure () -> String, at boundary: UInt64?) -> Bool {
        var word = meta.cursor.load(ordering: .acquiring)
        guard word & Cursor.retiredBit == 0 else { return false }
        meta.retiredName = name()
        while true {
            meta.retiredAt.store(boundary ?? Cursor.offset(word), ordering: .releasing)
            let (done, seen) = meta.cursor.compareExchange(expected: word, desired: word | Cursor.retiredBit, ordering: .acquiringAndReleasing)
            if done { break }
            word = seen
        }
        meta.rotations.wrappingIncrement(ordering: .relaxed)
        return true
    }

    /// Step 2: renames the data file and then the metadata to the retired name, each only if
    /// the path still names it (so it can be run again after a rotator died). With
    /// `waitForRotator` (an opener) it first waits for a rotation in progress.
    static func completeRenames(_ meta: Metadata, metadataFD: Int32, locks: Locks, path: String, waitForRotator: Bool) throws(MMLogError) {
        let metadataPath = path + ".mmlog"
        if waitForRotator {
            try locks.take(MetadataLayout.rotateLockByte, F_WRLCK, wait: true, "rotate")
        }
        defer { if waitForRotator { locks.release(MetadataLayout.rotateLockByte) } }
        let data = FileIdentity(device: meta.dataDevice, inode: meta.dataInode)
        let ownMetadata = try Sys.identity(metadataFD, metadataPath)
        let name = meta.retiredName
        // The name a rotation chose is beside the log, `<path>.<something>`: anything else is
        // not a rotation's and must not make us move files.
        let base = LogDirectory.name(of: path)
        guard name.hasPrefix(path + "."), !name.dropFirst(path.count + 1).contains("/") else {
            throw MMLogError(kind: .corruptMetadata, operation: "MMLog(\(path))",
                             detail: "\(metadataPath): retired under the name \"\(name)\", which is not beside \(base)")
        }
        let directory = try LogDirectory(of: path)
        let retired = LogDirectory.name(of: name)
        var dataName: String?
        if directory.identity(of: base) == data {
            try directory.rename(base, retired)
            dataName = retired
        } else if directory.identity(of: retired) == data {
            dataName = retired
        } else {
            dataName = findRenamed(data, besides: path, in: directory)
        }
        guard directory.identity(of: base + ".mmlog") == ownMetadata else { return }
        if let dataName {
            try moveMetadata(from: base + ".mmlog", to: dataName + ".mmlog", besides: path, in: directory)
        } else {
            directory.remove(base + ".mmlog")  // its data file was deleted: nothing to pair it with
        }
    }

    /// Retires a log whose data file is no longer at its path: renamed to `renamedTo` (by
    /// logrotate, say), or deleted (nil). Its writers move to a new log at the path at their
    /// next append; the metadata follows the data file (or goes, with it).
    static func adopt(_ meta: Metadata, metadataFD: Int32, locks: Locks, path: String, renamedTo: String?) throws(MMLogError) {
        let metadataPath = path + ".mmlog"
        try locks.take(MetadataLayout.rotateLockByte, F_WRLCK, wait: true, "rotate")
        defer { locks.release(MetadataLayout.rotateLockByte) }
        _ = retire(meta, as: renamedTo ?? uniqueName(for: path), at: nil)
        let ownMetadata = try Sys.identity(metadataFD, metadataPath)
        let directory = try LogDirectory(of: path)
        let base = LogDirectory.name(of: path)
        guard directory.identity(of: base + ".mmlog") == ownMetadata else { return }
        if let renamedTo {
            try moveMetadata(from: base + ".mmlog", to: LogDirectory.name(of: renamedTo) + ".mmlog", besides: path, in: directory)
        } else {
            directory.remove(base + ".mmlog")
        }
    }

    /// Renames a metadata file (names in `directory`), first moving aside one already at the
    /// target (the metadata of an older rotated file that logrotate shifted without it): to
    /// beside its own data file, found by inode, or away when that is gone.
    private static func moveMetadata(from source: String, to target: String, besides path: String, in directory: LogDirectory) throws(MMLogError) {
        if directory.exists(target) {
            // Whose is it? Read its recorded data identity.
            if let owner = recordedData(ofMetadata: target, in: directory),
               let home = findRenamed(owner, besides: path, in: directory), home + ".mmlog" != target {
                try? directory.rename(target, home + ".mmlog")
            } else {
                directory.remove(target)
            }
        }
        try directory.rename(source, target)
    }

    /// The data identity a metadata file records, read with pread (no lock, no mapping).
    static func recordedData(ofMetadata name: String, in directory: LogDirectory) -> FileIdentity? {
        guard let fd = try? directory.open(name, O_RDONLY, for: "read") else { return nil }
        defer { Glibc.close(fd) }
        var words = [UInt64](repeating: 0, count: 2)
        let n = words.withUnsafeMutableBytes { Glibc.pread(fd, $0.baseAddress, 16, off_t(MetadataLayout.dataDeviceOffset)) }
        return n == 16 ? FileIdentity(device: words[0], inode: words[1]) : nil
    }

    /// The name (in `directory`) of the file with `identity` among the files named `<path>.*`.
    static func findRenamed(_ identity: FileIdentity, besides path: String, in directory: LogDirectory) -> String? {
        let base = LogDirectory.name(of: path)
        for name in directory.names() where name.hasPrefix(base + ".") && !name.hasSuffix(".mmlog") {
            if directory.identity(of: name) == identity { return name }
        }
        return nil
    }

    /// The path of the file with `identity` among the files named `<path>.*` beside `path`.
    static func findRenamed(_ identity: FileIdentity, besides path: String) -> String? {
        guard let directory = try? LogDirectory(of: path) else { return nil }
        return findRenamed(identity, besides: path, in: directory).map { LogDirectory.sibling(of: path, named: $0) }
    }

    /// The current path of the metadata file with `identity`: `<path>.mmlog` or one of
    /// `<path>.*.mmlog` (a retired log's, wherever renames put it).
    static func findMetadata(_ identity: FileIdentity, besides path: String) -> String? {
        guard let directory = try? LogDirectory(of: path) else { return nil }
        let base = LogDirectory.name(of: path)
        if directory.identity(of: base + ".mmlog") == identity { return path + ".mmlog" }
        for name in directory.names() where name.hasPrefix(base + ".") && name.hasSuffix(".mmlog") {
            if directory.identity(of: name) == identity { return LogDirectory.sibling(of: path, named: name) }
        }
        return nil
    }

    /// `<path>.<UTC time>`, or `<path>.<UTC time>-N` with N past every rotation already named
    /// in that second (so that names sort in rotation order even after old ones were pruned).
    /// Never a name that sorts before a rotated file already there: when the clock stepped
    /// back (NTP, or a clock that had run ahead), the newest rotated file's stamp is used, with
    /// the next N, so `ls`, pruning, shippers and `tail -F` (which goes from a finished file to
    /// the next by name) keep the rotation order. Files another user planted (`mayBeRotated`)
    /// do not count.
    static func uniqueName(for path: String) -> String {
        var stamp = Self.stamp(Sys.realtimeSeconds())
        let base = LogDirectory.name(of: path)
        let directory = try? LogDirectory(of: path)
        let names = directory?.names() ?? []
        if let directory {
            for name in names {
                guard let (seen, _) = rotationStamp(of: name, base: base), seen > stamp,
                      mayBeRotated(name, of: path, in: directory) else { continue }
                stamp = seen
            }
        }
        let prefix = base + "." + stamp
        var highest = 0
        for name in names where name.hasPrefix(prefix) {
            var rest = name.dropFirst(prefix.count)
            if rest.hasSuffix(".mmlog") { rest = rest.dropLast(6) }
            // A sequence number past a million is no rotation's (a planted name): ignored.
            if rest.isEmpty { highest = max(highest, 1) } else if rest.first == "-", let n = Int(rest.dropFirst()), n < 1_000_000 { highest = max(highest, n) }
        }
        return highest == 0 ? "\(path).\(stamp)" : "\(path).\(stamp)-\(highest + 1)"
    }

    /// `yyyyMMddTHHmmssZ` of a CLOCK_REALTIME time in seconds.
    static func stamp(_ seconds: UInt64) -> String {
        var time = time_t(clamping: seconds)
        var parts = tm()
        gmtime_r(&time, &parts)
        func two(_ n: Int32) -> String { n < 10 ? "0\(n)" : "\(n)" }
        return "\(parts.tm_year + 1900)\(two(parts.tm_mon + 1))\(two(parts.tm_mday))T\(two(parts.tm_hour))\(two(parts.tm_min))\(two(parts.tm_sec))Z"
    }

    /// The (stamp, sequence) of a rotated file's name `<base>.<yyyyMMddTHHmmssZ>[-N]`, or nil.
    static func rotationStamp(of name: String, base: String) -> (stamp: String, sequence: Int)? {
        guard name.hasPrefix(base + "."), !name.hasSuffix(".mmlog") else { return nil }
        let parts = name.dropFirst(base.count + 1).split(separator: "-", maxSplits: 1)
        guard let stamp = parts.first, stamp.count == 16, stamp.dropLast().allSatisfy({ $0.isNumber || $0 == "T" }), stamp.last == "Z"
        else { return nil }
        guard parts.count == 1 || Int(parts[1]).map({ $0 >= 2 }) == true else { return nil }
        return (String(stamp), parts.count == 2 ? Int(parts[1])! : 1)
    }

    /// The names of `path`'s rotated files, oldest first: named by the naming rule, stamped no
    /// later than `latest` (a file stamped in the future is not one this log rotated), and
    /// regular files with one link owned by us, the directory's owner or the owner of the
    /// log's data file: a file another user planted under a look-alike name is never one.
    package static func rotatedFiles(of path: String, in directory: LogDirectory, latest: String? = nil) -> [String] {
        let base = LogDirectory.name(of: path)
        let latestStamp = latest.flatMap { rotationStamp(of: LogDirectory.name(of: $0), base: base) }
        var found: [(stamp: String, sequence: Int, name: String)] = []
        for name in directory.names() {
            guard let (stamp, sequence) = rotationStamp(of: name, base: base) else { continue }
            if let latestStamp, (stamp, sequence) > latestStamp { continue }
            guard mayBeRotated(name, of: path, in: directory) else { continue }
            found.append((stamp, sequence, name))
        }
        return found.sorted { ($0.stamp, $0.sequence) < ($1.stamp, $1.sequence) }.map(\.name)
    }

    /// Whether the file `name` beside `path` may be one the log rotated (by MMLog or by
    /// logrotate), whatever its name says: a regular file with one link, owned by us, the
    /// directory's owner or the owner of the log's data file. What another user planted under
    /// a look-alike name is none of these. (The stamp proves nothing: a writer whose clock is
    /// a year ahead rotates to a name a year ahead, and a reader must still follow it.)
    package static func mayBeRotated(_ name: String, of path: String, in directory: LogDirectory) -> Bool {
        let base = LogDirectory.name(of: path)
        guard let st = directory.regularFile(name) else { return false }
        let logOwner = directory.regularFile(base)?.st_uid
        return st.st_uid == geteuid() || st.st_uid == directory.ownerUID || st.st_uid == logOwner
    }

    /// Removes the oldest rotated files beyond `keep` (and their metadata, if any), never
    /// `justRotated` and never a file stamped after it. A writer still finishing in one keeps
    /// writing to the unlinked file: nothing is cut under it.
    static func prune(_ path: String, keep: Int, justRotated: String) {
        guard let directory = try? LogDirectory(of: path) else { return }
        let justRotatedName = LogDirectory.name(of: justRotated)
        let rotated = rotatedFiles(of: path, in: directory, latest: justRotated).filter { $0 != justRotatedName }
        for old in rotated.dropLast(max(keep - 1, 0)) {
            directory.remove(old)
            directory.remove(old + ".mmlog")
        }
    }

    /// Finishes rotated files beside `path` that still have metadata and no writer attached
    /// (their last writer died before it could): see `finishRetired`.
    static func finishIdleRotatedFiles(besides path: String, options: MMLog.Options, except: String) {
        guard let directory = try? LogDirectory(of: path) else { return }
        let base = LogDirectory.name(of: path)
        for name in directory.names() where name.hasPrefix(base + ".") && name.hasSuffix(".mmlog") {
            let data = LogDirectory.sibling(of: path, named: String(name.dropLast(6)))
            if data == except || data == path { continue }
            finishRetired(path: data, options: options)
        }
    }

    /// Opens a retired file alone (if it can) and lets it go, which finishes it: cut to its
    /// retired end, holes zero-filled, flushed, metadata removed.
    static func finishRetired(path: String, options: MMLog.Options) {
        let quiet = MMLog.Options(chunkSize: options.chunkSize, maxChunks: 2, prefault: .none, hugePages: false,
                                  prefetch: false, adaptivePages: false)
        guard let file = try? LogFile.open(path: path, options: quiet, mode: .finishRetired) else { return }
        try? file.detach()
        file.release()
    }
}
