#if canImport(Glibc)
import Glibc
#endif
import Atomics

/// What opening a log alone found and repaired (the recovery rule is in `Recovery`).
public struct RecoveryReport: Sendable, CustomStringConvertible {
    /// The data file.
    public var path: String
    /// One sentence per thing found and what was done about it; empty when the log was clean.
    public var found: [String]
    /// The cursor before and after (the offset the next record goes to).
    public var cursorBefore: Int = 0
    public var cursorAfter: Int = 0
    /// Ranges recorded as holes by this recovery (readers skip them).
    public var holesRecorded: [Range<Int>] = []
    /// Writers that had died in the middle of an append.
    public var deadWriters: Int = 0
    /// The header was not the live state of this data file (the machine crashed, or the files
    /// were copied), so the log was recovered from the data file itself.
    public var headerWasStale: Bool = false

    public init(path: String, found: [String]) {
        self.path = path
        self.found = found
    }

    /// Whether anything needed repair.
    public var repaired: Bool { !found.isEmpty }

    public var description: String {
        found.isEmpty ? "\(path): clean" : "\(path): " + found.joined(separator: "; ")
    }
}

/// Making a log consistent with its data file, when a handle attaches alone (no other handle
/// is attached, so every previous owner of every lock is gone).
///
/// The header is trusted as the live state of the data file only when it records this data
/// file's identity (device, inode) and this boot's id: then it is the page cache's view,
/// exactly as the processes that died left it, and recovery finishes what they left half
/// done. Otherwise (the machine crashed: the header on disk may be older or newer than the
/// data on disk; or the files were copied) the data file decides: appends resume at the end of
/// the last data that reached the disk, and ranges below it that never did are holes.
enum Recovery {
    /// A sealed cursor with us attached means a trimmer died mid-trim (a live one would hold
    /// the attach lock exclusively). Whether or not it truncated, everything below
    /// min(actual size, trimCursor) is allocated; the next append past it grows again.
    @discardableResult
    static func finishInterruptedTrim(_ meta: Metadata, dataFD: Int32, path: String) throws(MMLogError) -> Bool {
        let word = meta.cursor.load(ordering: .acquiring)
        guard word & Cursor.sealBit != 0 else { return false }
        let end = meta.trimCursor.load(ordering: .relaxed)
        let actual = UInt64(try Sys.size(dataFD, path))
        meta.fileSize.store(min(actual, end), ordering: .releasing)
        _ = meta.cursor.exchange(Cursor.make(offset: end, gen: Cursor.gen(word), flags: word & Cursor.retiredBit), ordering: .releasing)
        return true
    }

    /// Recovers a version 2 log whose opener is alone. Cheap when the log is clean.
    static func recoverAlone(_ meta: Metadata, dataFD: Int32, metadataFD: Int32, path: String, metadataPath: String) throws(MMLogError) -> RecoveryReport? {
        var report = RecoveryReport(path: path, found: [])
        let identity = try Sys.identity(dataFD, path)
        let sameFile = meta.dataDevice == identity.device && meta.dataInode == identity.inode
        let sameBoot = meta.bootID == Sys.bootID
        report.cursorBefore = Int(Cursor.offset(meta.cursor.load(ordering: .relaxed)))
        clearHandleTable(meta)
        if sameFile && sameBoot {
            try recoverLive(meta, dataFD: dataFD, path: path, report: &report)
        } else {
            report.headerWasStale = true
            report.found.append(sameFile
                ? "the header was written in an earlier boot while the log was open (the machine stopped without closing it): recovered from the data file"
                : "the header describes another file (device \(meta.dataDevice), inode \(meta.dataInode); this one is \(identity.device), \(identity.inode)): a copy or a restore; recovered from the data file")
            try recoverFromData(meta, dataFD: dataFD, path: path, metadataPath: metadataPath, report: &report)
            try LogFile.recordIdentity(meta, dataFD, path)
            meta.recoveries &+= 1
            // The new identity reaches the disk before any record appended on its word.
            try Sys.fsync(metadataFD, metadataPath)
        }
        report.cursorAfter = Int(Cursor.offset(meta.cursor.load(ordering: .relaxed)))
        lowerDurableToCursor(meta)
        if meta.dropImpossibleHoles() {
            report.found.append("the hole table held entries that cannot be holes (past the cursor or beyond reason): dropped")
        }
        if report.repaired && !report.headerWasStale { meta.recoveries &+= 1 }
        return report.repaired ? report : nil
    }

    /// Nothing above the cursor is durable: after the data file was cut from outside (`: >
    /// app.log`) or the header was restored, a durable watermark left above the new cursor
    /// made every sync() return at once, with no flush. Run alone (no flusher can be at work).
    static func lowerDurableToCursor(_ meta: Metadata) {
        let cursor = Cursor.offset(meta.cursor.load(ordering: .relaxed))
        if meta.durable.load(ordering: .relaxed) > cursor { meta.durable.store(cursor, ordering: .relaxed) }
    }

    /// Upgrades a version 1 header (already mapped at version 2's size) in place, then
    /// recovers it as a live one: version 1 kept no identity, and its trim protocol and field
    /// offsets are those of version 2.
    static func upgradeFromVersion1(_ meta: Metadata, dataFD: Int32, path: String, metadataPath: String) throws(MMLogError) -> RecoveryReport {
        let base = meta.base
        base.storeBytes(of: MetadataLayout.version, toByteOffset: MetadataLayout.versionOffset, as: UInt32.self)
        base.storeBytes(of: UInt32(MetadataLayout.slotCount), toByteOffset: MetadataLayout.slotCountOffset, as: UInt32.self)
        base.storeBytes(of: UInt32(MetadataLayout.holeCapacity), toByteOffset: MetadataLayout.holeCapacityOffset, as: UInt32.self)
        base.storeBytes(of: UInt32(MetadataLayout.metadataSize), toByteOffset: MetadataLayout.metadataSizeOffset, as: UInt32.self)
        try LogFile.recordIdentity(meta, dataFD, path)
        var report = RecoveryReport(path: path, found: ["upgraded \(metadataPath) from format version 1 to \(MetadataLayout.version)"])
        report.cursorBefore = Int(Cursor.offset(meta.cursor.load(ordering: .relaxed) & ~Cursor.sealBit))
        try recoverLive(meta, dataFD: dataFD, path: path, report: &report)
        report.cursorAfter = Int(Cursor.offset(meta.cursor.load(ordering: .relaxed)))
        return report
    }

    /// The header is the page cache's view: finish what dead processes left half done.
    private static func recoverLive(_ meta: Metadata, dataFD: Int32, path: String, report: inout RecoveryReport) throws(MMLogError) {
        if try finishInterruptedTrim(meta, dataFD: dataFD, path: path) {
            report.found.append("a trim was interrupted (its process died): finished it")
        }
        // Writers that died in flight (we are alone: every slot's owner is gone). Published
        // ranges first; then those that died before publishing theirs, found in the data.
        let inFlight = meta.activeSlots.filter { meta.slotState($0).load(ordering: .acquiring) & Slot.inFlight != 0 }
        for i in inFlight {
            if let hole = meta.deadHole(state: meta.slotState(i).load(ordering: .acquiring), end: meta.slotEnd(i).load(ordering: .relaxed)) {
                meta.recordHole(hole.lowerBound, hole.upperBound, dataFD: dataFD)
                report.holesRecorded.append(Int(clamping: hole.lowerBound)..<Int(clamping: hole.upperBound))
            }
        }
        let everything = meta.idleBound  // all of it is written or a hole: everyone is gone
        var unwrittenTail = UInt64.max
        for i in inFlight {
            let state = meta.slotState(i).load(ordering: .acquiring)
            report.deadWriters += 1
            var resume: UInt64 = 0
            if let hole = meta.unknownExtentHole(state: state, dataFD: dataFD, limit: everything, known: meta.recordedHoles(), resume: &resume) {
                meta.recordHole(hole.lowerBound, hole.upperBound, dataFD: dataFD)
                report.holesRecorded.append(Int(clamping: hole.lowerBound)..<Int(clamping: hole.upperBound))
            } else if state & Slot.exact == 0 && resume >= Cursor.offset(state) && resume < everything {
                unwrittenTail = min(unwrittenTail, resume)  // its zeros run to the end: see below
            }
            meta.slotState(i).store(meta.idleBound, ordering: .releasing)
        }
        // A writer that died before publishing the newest reservation left zeros up to the
        // cursor, which no later record bounds: with everyone gone, give them back (the next
        // record overwrites them) rather than leave NUL bytes in a text log.
        let word = meta.cursor.load(ordering: .relaxed)
        if unwrittenTail != .max && Cursor.offset(word) == everything && unwrittenTail < everything {
            report.found.append("\(everything - unwrittenTail) bytes at \(unwrittenTail), reserved by a writer that died before writing them, were given back")
            _ = meta.cursor.exchange(Cursor.make(offset: unwrittenTail, gen: Cursor.gen(word) &+ 1, flags: word & Cursor.retiredBit),
                                     ordering: .releasing)
        }
        if report.deadWriters > 0 {
            report.found.append("\(report.deadWriters) writer(s) died in the middle of an append; their ranges are recorded as holes")
        }
        let actual = UInt64(try Sys.size(dataFD, path))
        if meta.fileSize.load(ordering: .relaxed) > actual {
            report.found.append("the data file is \(actual) bytes but \(meta.fileSize.load(ordering: .relaxed)) were allocated: another program truncated it; appends resume at its end")
            meta.fileSize.store(actual, ordering: .releasing)
        }
        let size = meta.fileSize.load(ordering: .relaxed)
        if Cursor.offset(meta.cursor.load(ordering: .relaxed)) > size {
            report.found.append("reservations above the allocated size \(size) (writers that died waiting for the file to grow, or appends that failed) were given back")
            meta.voidReservations(above: size, dataFD: dataFD)
        }
        // Bytes past the cursor: appends never write there, so any that are not zero were
        // written by another program. Keep them; resume after them.
        let end = Cursor.offset(meta.cursor.load(ordering: .relaxed))
        if actual > end, let written = try nonZeroExtent(dataFD, path, from: end, to: actual) {
            report.found.append("\(written.upperBound - written.lowerBound) bytes at \(written.lowerBound) after the last record were written by another program: kept, appends resume after them")
            if written.lowerBound > end {
                meta.recordHole(end, written.lowerBound, dataFD: dataFD)
                report.holesRecorded.append(Int(end)..<Int(written.lowerBound))
            }
            meta.fileSize.store(max(size, written.upperBound), ordering: .releasing)
            let word = meta.cursor.load(ordering: .relaxed)
            _ = meta.cursor.exchange(Cursor.make(offset: written.upperBound, gen: Cursor.gen(word) &+ 1, flags: word & Cursor.retiredBit),
                                     ordering: .releasing)
        }
    }

    /// The header is not this data file's live state: the data file decides (see `Recovery`).
    static func recoverFromData(_ meta: Metadata, dataFD: Int32, path: String, metadataPath: String,
                                        report: inout RecoveryReport) throws(MMLogError) {
        let size = UInt64(try Sys.size(dataFD, path))
        let durable = min(meta.durable.load(ordering: .relaxed), size)
        // Every slot's reservation belongs to a process of the header's time: forget them.
        for i in meta.activeSlots { meta.slotState(i).store(0, ordering: .relaxed) }
        // Where the data that reached the disk ends, and the ranges below it that did not:
        // written extents are data to SEEK_DATA, fallocated but never written ones holes.
        var resume = size
        var unwritten: [Range<UInt64>] = []
        do throws(MMLogError) {
            var position = durable
            var lastDataEnd = durable
            while position < size, let dataStart = try Sys.seek(dataFD, Int(position), SEEK_DATA, path), UInt64(dataStart) < size {
                if UInt64(dataStart) > position { unwritten.append(position..<UInt64(dataStart)) }
                let holeStart = min(UInt64(try Sys.seek(dataFD, dataStart, SEEK_HOLE, path) ?? Int(size)), size)
                lastDataEnd = holeStart
                position = holeStart
            }
            resume = lastDataEnd
            unwritten = unwritten.filter { $0.upperBound <= resume }
        } catch where error.errno == EINVAL || error.errno == EOPNOTSUPP {
            resume = size  // no SEEK_DATA here: keep everything, resume at the end
            unwritten = []
        }
        // In a text log, a page that reached the disk as zeros (burst mode prefaults pages for
        // writing, so writeback can write one before its records are copied) or half a record
        // whose other half did not are damage too: without this, `cat` showed NUL bytes and a
        // line made of two records (the head of a torn one and the next).
        if let damage = try textDamage(dataFD, path, from: durable, to: resume) {
            unwritten = damage
        }
        // Holes the stale table recorded below the resume point stay; nothing above it is one.
        meta.recordClip(at: resume)
        for hole in unwritten {
            meta.recordHole(hole.lowerBound, hole.upperBound, dataFD: dataFD)
            report.holesRecorded.append(Int(clamping: hole.lowerBound)..<Int(clamping: hole.upperBound))
        }
        var allocated = size
        if size > resume {
            do throws(MMLogError) {
                try Sys.fallocate(dataFD, Int(resume), Int(size - resume), path)
            } catch {
                allocated = resume  // cannot vouch for those blocks: the next append grows again
            }
        }
        meta.fileSize.store(allocated, ordering: .releasing)
        let word = meta.cursor.load(ordering: .relaxed)
        _ = meta.cursor.exchange(Cursor.make(offset: resume, gen: Cursor.gen(word) &+ 1, flags: word & Cursor.retiredBit), ordering: .releasing)
        meta.durable.store(min(durable, resume), ordering: .releasing)
        meta.trimCursor.store(0, ordering: .relaxed)
        report.found.append("appends resume at \(resume), the end of the data that reached the disk (the file is \(size) bytes)"
                            + (unwritten.isEmpty ? "" : "; \(unwritten.count) range(s) below it that never reached the disk are recorded as holes"))
    }

    /// After a crash, the ranges of [from, to) (from the durable watermark, below which every
    /// record is whole, to the resume point) that hold no whole record of a text log: every
    /// run of NUL bytes (pages that reached the disk as zeros, or never did: unwritten extents
    /// read as zeros too), each widened back to the start of its line (the head of a record
    /// whose rest was lost), and a last line without its newline. Nil when the range is not
    /// text (a byte below 0x20 other than tab, CR, LF and NUL): records of a binary log may
    /// hold zeros, and only the unwritten extents are holes there. A line's tail after a
    /// lost page is kept (it cannot be told from a record that starts there): it reads as a
    /// short line of its own, never joined to another record. Lines are what a newline ends: in
    /// a range without one (records without newlines), only the zero runs themselves.
    static func textDamage(_ fd: Int32, _ path: String, from: UInt64, to: UInt64) throws(MMLogError) -> [Range<UInt64>]? {
        guard to > from else { return [] }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
        defer { buffer.deallocate() }
        var damage: [(line: UInt64, zeros: UInt64, end: UInt64)] = []
        var lineStart = from
        var sawNewline = false
        var runStart: (line: UInt64, zeros: UInt64)?  // the zero run we are in, and its line's start
        var position = from
        while position < to {
            let want = Int(min(UInt64(buffer.count), to - position))
            let n = try Sys.preadFully(fd, UnsafeMutableRawBufferPointer(rebasing: buffer[0..<want]), Int(position), path)
            if n == 0 { break }
            for k in 0..<n {
                let byte = buffer[k], offset = position + UInt64(k)
                if byte == 0 {
                    if runStart == nil { runStart = (lineStart, offset) }
                    continue
                }
                if let start = runStart {
                    damage.append((start.line, start.zeros, offset))
                    runStart = nil
                    lineStart = offset
                }
                if byte == UInt8(ascii: "\n") {
                    lineStart = offset + 1
                    sawNewline = true
                } else if byte < 0x20 && byte != UInt8(ascii: "\t") && byte != UInt8(ascii: "\r") {
                    return nil
                }
            }
            position += UInt64(n)
        }
        if let start = runStart {
            damage.append((start.line, start.zeros, to))
        } else if lineStart < to && sawNewline {
            damage.append((lineStart, lineStart, to))  // a last record without its newline: its tail was lost
        }
        return damage.map { (sawNewline ? $0.line : $0.zeros)..<$0.end }
    }

    /// Marks every handle entry free: an opener alone knows their handles are gone.
    private static func clearHandleTable(_ meta: Metadata) {
        for i in 0..<MetadataLayout.handleCount {
            meta.handleEntry(i).storeBytes(of: UInt32(0), toByteOffset: 4, as: UInt32.self)
        }
    }

    /// The first and last+1 non-zero byte in [from, to), or nil when all are zero.
    static func nonZeroExtent(_ fd: Int32, _ path: String, from: UInt64, to: UInt64) throws(MMLogError) -> Range<UInt64>? {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
        defer { buffer.deallocate() }
        var first: UInt64?, last: UInt64 = 0
        var position = from
        while position < to {
            let want = Int(min(UInt64(buffer.count), to - position))
            let n = try Sys.preadFully(fd, UnsafeMutableRawBufferPointer(rebasing: buffer[0..<want]), Int(position), path)
            if n == 0 { break }
            let bytes = UnsafeRawBufferPointer(rebasing: buffer[0..<n])
            if let i = bytes.firstIndex(where: { $0 != 0 }) {
                if first == nil { first = position + UInt64(i) }
                last = position + UInt64(bytes.lastIndex(where: { $0 != 0 })!) + 1
            }
            position += UInt64(n)
        }
        guard let first else { return nil }
        return first..<last
    }
}

extension MMLog {
    /// Runs the recovery an opener alone runs, explicitly, and reports what it found (for
    /// `mmlog recover`): refuses while any other handle is attached, since recovery then
    /// waits for the next opener alone. A clean log reports nothing found. A plain file
    /// without metadata is left as it is.
    public static func recover(path: String) throws(MMLogError) -> RecoveryReport {
        // Never creates a log: the data file must be there (a regular file), and without
        // metadata it is a plain file, left as it is.
        let directory = try LogDirectory(of: path)
        let name = LogDirectory.name(of: path)
        if directory.exists(name) { try directory.requireExisting(name, for: "recover") }
        if directory.exists(name + ".mmlog") { try directory.requireExisting(name + ".mmlog", for: "recover") }
        guard directory.exists(name) && directory.exists(name + ".mmlog") else {
            return RecoveryReport(path: path, found: [])
        }
        let log = try MMLog(path: path, options: Options(prefault: .none, hugePages: false, prefetch: false), mode: .recover)
        var report = log.recovery ?? RecoveryReport(path: path, found: [])
        let cursor = Int(Cursor.offset(log.current.cursor.load(ordering: .acquiring)))
        if report.found.isEmpty { report.cursorBefore = cursor; report.cursorAfter = cursor }
        try log.close()
        return report
    }
}
